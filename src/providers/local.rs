//! The `local` provider: all-MiniLM-L6-v2 in-process, in pure Rust (candle).
//!
//! Sentence-transformers' recipe: WordPiece tokens (at most 256), BERT, mean pooling over the
//! real tokens (padding masked out), then L2 normalisation. 384 dimensions.
//! The model's tokenizer.json pads every input to 128 tokens; padding is reset here to the
//! longest input of a batch and masked in the pooling, so it never changes a vector.

use super::{l2_normalize, Batch};
use crate::base::errors::{Code, MemoriError, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
pub const WIDTH: usize = 384;
/// sentence-transformers' max_seq_length for this model.
pub const MAX_TOKENS: usize = 256;
pub const FILES: [&str; 3] = ["model.safetensors", "tokenizer.json", "config.json"];

pub struct LocalModel {
    bert: BertModel,
    tokenizer: Tokenizer,
    dir: PathBuf,
}

fn model_error(dir: &Path, what: impl std::fmt::Display) -> MemoriError {
    MemoriError::new(
        Code::SystemError,
        format!(
            "cannot load the local embedding model from {}: {what}",
            dir.display()
        ),
    )
}

/// Bytes of a text the local model tokenizes at most: 64 bytes for each of the MAX_TOKENS
/// tokens it reads. WordPiece tokens of real text average 4 to 6 characters (a word longer
/// than 100 characters is one [UNK] token), so the cut never changes a realistic result.
pub const MAX_INPUT_BYTES: usize = MAX_TOKENS * 64;

/// Tokens one forward pass holds at most (texts x the longest text's tokens, as padded). The
/// backend answers cancel and statement_timeout between passes, so this bounds how long they
/// wait: about 0.7 s on one core.
pub const PASS_TOKENS: usize = 1024;

/// A generous estimate of a text's tokens from its length in bytes (WordPiece tokens of real
/// text hold 3 bytes or more), within what the model reads.
pub fn estimated_tokens(bytes: usize) -> usize {
    (bytes.min(MAX_INPUT_BYTES) / 3 + 2).min(MAX_TOKENS)
}

/// Splits texts, given by their lengths in bytes in ascending order, into consecutive passes of
/// at most `max_texts` texts and PASS_TOKENS estimated tokens (padded to the pass's longest).
/// Returns the number of texts in each pass.
pub fn passes(sorted_bytes: &[usize], max_texts: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut n = 0;
    for &b in sorted_bytes {
        // Ascending lengths: the text being added is the pass's longest.
        if n > 0 && (n == max_texts || (n + 1) * estimated_tokens(b) > PASS_TOKENS) {
            out.push(n);
            n = 0;
        }
        n += 1;
    }
    if n > 0 {
        out.push(n);
    }
    out
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl LocalModel {
    /// Loads the model from `dir`, which holds model.safetensors, tokenizer.json and config.json.
    pub fn load(dir: &Path) -> Result<Self> {
        if let Some(missing) = FILES.iter().find(|f| !dir.join(f).is_file()) {
            return Err(MemoriError::new(
                Code::UndefinedFile,
                format!(
                    "the local embedding model is not installed: {} is missing",
                    dir.join(missing).display()
                ),
            )
            .hint(
                "Install it with `make install` (or `scripts/setup.sh model`) from the memori source tree, \
                 or have a superuser point memori.local_model_path at a directory holding model.safetensors, \
                 tokenizer.json and config.json of all-MiniLM-L6-v2.",
            ));
        }
        let config: Config = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| model_error(dir, e))
            .and_then(|s| serde_json::from_str(&s).map_err(|e| model_error(dir, e)))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| model_error(dir, e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| model_error(dir, e))?;
        // SAFETY: the file is memory-mapped read-only; memori's set-up installs it and nothing
        // rewrites it while a backend runs.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(|e| model_error(dir, e))?;
        let bert = BertModel::load(vb, &config).map_err(|e| model_error(dir, e))?;
        Ok(LocalModel {
            bert,
            tokenizer,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Embeds `texts` in one forward pass. Callers chunk large batches.
    pub fn embed(&self, texts: &[&str]) -> Result<Batch> {
        if texts.is_empty() {
            return Ok(Batch {
                width: WIDTH,
                vectors: vec![],
            });
        }
        let fail = |e: &dyn std::fmt::Display| {
            MemoriError::new(
                Code::SystemError,
                format!("the local embedding model failed: {e}"),
            )
        };
        // The model reads MAX_TOKENS tokens at most: tokenize only a prefix that surely holds
        // them, so a long text costs no more time or memory than a short one.
        let texts: Vec<&str> = texts.iter().map(|t| prefix(t, MAX_INPUT_BYTES)).collect();
        let enc = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| fail(&e))?;
        let n = enc.len();
        let len = enc[0].get_ids().len();
        let ids: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_ids().iter().copied())
            .collect();
        let mask: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().iter().copied())
            .collect();
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let dev = Device::Cpu;
            let ids = Tensor::from_vec(ids, (n, len), &dev)?;
            let type_ids = ids.zeros_like()?;
            let mask = Tensor::from_vec(mask, (n, len), &dev)?;
            let hidden = self.bert.forward(&ids, &type_ids, Some(&mask))?;
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)?.to_vec2::<f32>()
        };
        let mut vectors = run().map_err(|e| fail(&e))?;
        vectors.iter_mut().for_each(|v| l2_normalize(v));
        Ok(Batch {
            width: WIDTH,
            vectors,
        })
    }
}

/// Where the set-up installs the model: `$sharedir/extension/memori/all-MiniLM-L6-v2`.
pub fn default_dir(sharedir: &Path) -> PathBuf {
    sharedir.join("extension").join("memori").join(MODEL_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_hold_many_short_texts_and_few_long_ones() {
        // Short texts: 32 to a pass, as before.
        assert_eq!(passes(&[20; 70], 32), vec![32, 32, 6]);
        // Texts of 256 tokens: 4 to a pass (4 x 256 = 1024 tokens).
        assert_eq!(passes(&[16_000; 10], 32), vec![4, 4, 2]);
        // Mixed, ascending: the long tail gets passes of its own.
        let mut mixed = vec![30; 5];
        mixed.extend([3000; 3]);
        assert_eq!(passes(&mixed, 32), vec![5, 3]);
        assert_eq!(passes(&[], 32), Vec::<usize>::new());
        assert!(passes(&[1_000_000; 3], 32).iter().all(|&n| n >= 1));
    }

    #[test]
    fn the_prefix_ends_on_a_character_boundary() {
        assert_eq!(prefix("short", 100), "short");
        assert_eq!(prefix("abcdef", 3), "abc");
        // "é" is two bytes: a cut in its middle steps back before it.
        assert_eq!(prefix("aé", 2), "a");
        assert_eq!(prefix("日本語", 7), "日本");
        let long = "word ".repeat(100_000);
        assert_eq!(prefix(&long, MAX_INPUT_BYTES).len(), MAX_INPUT_BYTES);
    }

    #[test]
    fn a_missing_model_says_how_to_install_it() {
        let err = LocalModel::load(Path::new("/nonexistent/memori-model"))
            .err()
            .expect("fails");
        assert_eq!(err.code, Code::UndefinedFile);
        assert!(
            err.message
                .contains("/nonexistent/memori-model/model.safetensors is missing"),
            "{}",
            err.message
        );
        assert!(err.hint.unwrap().contains("memori.local_model_path"));
    }
}
