//! The models memori calls: embedding providers and chat models.
//!
//! Plain Rust, unit-tested without a database:
//! - `http`: the OpenAI-compatible embeddings client, and the remote-call machinery every
//!   provider shares (one agent, retries on 429/5xx with Retry-After, one deadline, secrets
//!   masked: `Peer`);
//! - `llm`: the chat-model client (OpenAI-compatible and Anthropic) over the same machinery;
//! - `local`: the built-in all-MiniLM-L6-v2 model (candle);
//! - `offthread`: runs a call off the backend's thread while the backend answers interrupts.
//!
//! The database glue, thin: `embedding` (settings to provider, the per-user cache, counters,
//! memori_embed) and `chat` (settings to chat model, one call with its counters and log line).

pub mod chat;
pub mod embedding;
pub mod http;
pub mod llm;
pub mod local;
pub mod offthread;

/// Vectors of one width, in the order of their inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub width: usize,
    pub vectors: Vec<Vec<f32>>,
}

/// Replaces every occurrence of the API key in `text` (a provider may echo it back).
pub fn mask(text: &str, key: Option<&str>) -> String {
    match key {
        Some(k) if k.len() >= 4 && text.contains(k) => text.replace(k, "****"),
        _ => text.to_string(),
    }
}

/// Checks that every vector has the same, expected width and no NaN or infinity.
pub fn normalize_width(vectors: &[Vec<f32>], expected: Option<usize>) -> Result<usize, String> {
    let width = expected
        .or_else(|| vectors.first().map(Vec::len))
        .unwrap_or(0);
    for (n, v) in vectors.iter().enumerate() {
        if v.len() != width {
            return Err(format!(
                "vector {} has {} dimensions where {} were expected",
                n + 1,
                v.len(),
                width
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(format!("vector {} holds NaN or infinity", n + 1));
        }
        // A zero vector has no direction: its cosine with anything is NaN, which would rank
        // first and pass every threshold.
        if v.iter().all(|x| *x == 0.0) {
            return Err(format!("vector {} is all zeros", n + 1));
        }
        if !comparable_length(v) {
            return Err(format!(
                "vector {} is too short or too long to compare (its length must be between 1e-15 and 1e15)",
                n + 1
            ));
        }
    }
    if width == 0 && !vectors.is_empty() {
        return Err("the vectors are empty".into());
    }
    Ok(width)
}

/// Whether pgvector can compare `v`: its squared length, summed in float4 as pgvector sums it,
/// between 1e-30 and 1e30. Outside, the sum underflows or overflows, and a cosine with it comes
/// out as NaN or as 1 whatever the direction (NaN passes every threshold), where the
/// near-duplicate check's sketch of its unit-length copy says otherwise. Real embeddings have a
/// length near 1.
pub fn comparable_length(v: &[f32]) -> bool {
    let squared: f32 = v.iter().map(|x| x * x).sum();
    (1e-30..=1e30).contains(&squared)
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two vectors of the same width.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += (*x as f64) * (*y as f64);
        na += (*x as f64) * (*x as f64);
        nb += (*y as f64) * (*y as f64);
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_hides_the_key() {
        assert_eq!(
            mask("bad key sk-abc123 given", Some("sk-abc123")),
            "bad key **** given"
        );
        assert_eq!(mask("nothing here", Some("sk-abc123")), "nothing here");
        assert_eq!(mask("x", None), "x");
    }

    #[test]
    fn widths_are_checked() {
        assert_eq!(
            normalize_width(&[vec![1.0, 2.0], vec![3.0, 4.0]], None),
            Ok(2)
        );
        assert!(normalize_width(&[vec![1.0, 2.0], vec![3.0]], None).is_err());
        assert!(normalize_width(&[vec![1.0, 2.0]], Some(3)).is_err());
        assert!(normalize_width(&[vec![f32::NAN]], None).is_err());
        for bad in [
            vec![1e-16f32; 4],
            vec![1e-23; 384],
            vec![1e16, 1.0],
            vec![3e19; 2],
        ] {
            let e = normalize_width(&[bad.clone(), bad], None).unwrap_err();
            assert!(e.contains("vector 1 is too short or too long"), "{e}");
        }
        for fine in [vec![1e-14f32; 4], vec![0.05; 384], vec![1e14, 1.0]] {
            assert!(normalize_width(&[fine], None).is_ok());
        }
        assert!(normalize_width(&[vec![1.0, 0.0], vec![0.0, 0.0]], None)
            .unwrap_err()
            .contains("vector 2 is all zeros"));
    }

    #[test]
    fn cosine_and_normalize() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
    }
}
