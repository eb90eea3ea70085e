//! Full-text search over memories: the words of a memory, plus its SQL identifiers kept whole.
//!
//! PostgreSQL's text parser reads `orders.customer_id` as the host name `orders.customer`, a
//! blank and `id`: neither `customer_id` nor `orders.customer_id` can then be found. memori's
//! document for a memory (`memori_text_document(content, config)`, SQL) is the words of the
//! content with `.` and `_` read as spaces (so `orders`, `customer` and `id` are words), plus
//! one token per identifier and per dotted suffix of it, joined without separators
//! (`orderscustomerid`, `customerid`): a question naming `customer_id` then matches a memory
//! about `orders.customer_id` on a rare, and so highly weighted, token. The question's terms come
//! from the same expression (`document_sql`, the function's body inlined), so both sides always
//! agree.

use pgrx::prelude::*;

/// memori_identifiers reads at most this much of its argument.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// At most this many trailing parts of one dotted run make tokens (`db.schema.table.column`
/// has 4): a run of a thousand parts costs what a run of eight does.
pub const MAX_RUN_PARTS: usize = 8;
/// Tokens longer than this (in bytes) are left out: PostgreSQL indexes no word over 2,047
/// bytes, and an identifier that long is no identifier.
pub const MAX_TOKEN_BYTES: usize = 255;

/// The identifier tokens of `text`: for every run of letters, digits, `_` and `.` that holds
/// an inner `_` or `.`, one token per dotted suffix of its last `MAX_RUN_PARTS` parts,
/// lowercased, without separators, at most `MAX_TOKEN_BYTES` long. Distinct, in order of first
/// appearance, space-separated.
///
/// Linear in the length of `text` by construction: each run yields at most `MAX_RUN_PARTS`
/// tokens of at most `MAX_TOKEN_BYTES`, and de-duplication is a hash set. `tick` is called
/// once per run (PostgreSQL's interrupt check, from SQL).
pub fn identifiers_with(text: &str, mut tick: impl FnMut()) -> String {
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = String::new();
    let is_part = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    for run in text.split(|c: char| !is_part(c)) {
        tick();
        let run = run.trim_matches(|c| c == '.' || c == '_');
        if !run.contains(['.', '_']) {
            continue;
        }
        // The last MAX_RUN_PARTS non-empty parts, found from the end without collecting all.
        let mut parts: Vec<&str> = run
            .rsplit('.')
            .filter(|p| !p.is_empty())
            .take(MAX_RUN_PARTS)
            .collect();
        parts.reverse();
        for i in 0..parts.len() {
            let suffix = &parts[i..];
            // A lone last part without `_` is an ordinary word, which the words already hold.
            if suffix.len() == 1 && !suffix[0].trim_matches('_').contains('_') {
                continue;
            }
            if suffix.iter().map(|p| p.len()).sum::<usize>() > 4 * MAX_TOKEN_BYTES {
                continue;
            }
            let token: String = suffix
                .concat()
                .chars()
                .filter(|c| *c != '_')
                .flat_map(char::to_lowercase)
                .collect();
            if token.is_empty() || token.len() > MAX_TOKEN_BYTES || seen.contains(&token) {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&token);
            seen.insert(token);
        }
    }
    out
}

/// `identifiers_with` without an interrupt check (tests).
#[cfg(test)]
pub fn identifiers(text: &str) -> String {
    identifiers_with(text, || {})
}

/// `lexeme` as a tsquery literal: quoted, with `'` doubled and `\` escaped.
pub fn tsquery_literal(lexeme: &str) -> String {
    let mut s = String::with_capacity(lexeme.len() + 2);
    s.push('\'');
    for c in lexeme.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// `memori_text_document(content, config)` as an expression of two SQL expressions, for memori's
/// own statements: the same body (sql/finalize.sql, unchanged since 0.3.0). The function has a
/// `SET search_path` clause, so PostgreSQL never inlines it and plans its body again in every
/// statement that calls it (0.2-0.3 ms of each search, of each stored memory). Only for
/// statements that run with memori's search_path pinned (memori_identifiers is resolved there);
/// a `#[pg_test]` checks that the two agree.
pub fn document_sql(content: &str, config: &str) -> String {
    format!(
        "(pg_catalog.to_tsvector({config}, pg_catalog.translate({content}, '._'::pg_catalog.text, '  '::pg_catalog.text))
          OPERATOR(pg_catalog.||)
          pg_catalog.to_tsvector('pg_catalog.simple'::pg_catalog.regconfig, memori_identifiers({content})))"
    )
}

/// The identifier tokens of a text (see `memori_text_document`).
#[pg_extern(immutable, parallel_safe, strict)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_identifiers(content: &str) -> String {
    // Any role may call it: at most the first MAX_INPUT_BYTES are read (a memory's content is
    // at most memori.max_content_bytes anyway).
    let mut end = content.len().min(MAX_INPUT_BYTES);
    while !content.is_char_boundary(end) {
        end -= 1;
    }
    identifiers_with(&content[..end], || {
        pgrx::check_for_interrupts!();
    })
}

/// A tsvector's lexemes, read in place from its body (the value after its varlena header, as
/// PostgreSQL stores it): an int32 count, one 4-byte `WordEntry` per lexeme (its length and its
/// offset in the string area), then the string area. The lexemes are distinct and sorted
/// bytewise, a prefix first (PostgreSQL's `tsCompareString`), so one is found by binary search.
pub struct Lexemes<'a> {
    entries: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Lexemes<'a> {
    /// None for a body too short for its own count.
    pub fn of(body: &'a [u8]) -> Option<Self> {
        let n = usize::try_from(i32::from_ne_bytes(body.get(..4)?.try_into().ok()?)).ok()?;
        let end = n.checked_mul(4)?.checked_add(4)?;
        Some(Lexemes {
            entries: body.get(4..end)?,
            strings: &body[end..],
        })
    }

    fn len(&self) -> usize {
        self.entries.len() / 4
    }

    /// Lexeme `i` (< len); None when its entry points outside the string area.
    fn get(&self, i: usize) -> Option<&'a [u8]> {
        let bytes = self.entries.get(4 * i..4 * i + 4)?;
        let (len, pos) = word_entry(bytes.try_into().ok()?);
        self.strings.get(pos..pos + len)
    }

    /// The first lexeme at `from` or after that is not below `lexeme` (len if none), and
    /// whether it is `lexeme`. None for a malformed body.
    fn seek(&self, from: usize, lexeme: &[u8]) -> Option<(usize, bool)> {
        let (mut lo, mut hi) = (from, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid)? < lexeme {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some((lo, lo < self.len() && self.get(lo)? == lexeme))
    }
}

/// A `WordEntry` (`haspos:1, len:11, pos:20`, bitfields of a uint32) as (len, pos), decoded as
/// the C compiler lays bitfields out: from the low bit on little-endian targets, from the high
/// bit on big-endian ones (a test holds it equal to bindgen's accessors, which read the
/// bitfields one bit at a time).
fn word_entry(bytes: [u8; 4]) -> (usize, usize) {
    let w = u32::from_ne_bytes(bytes);
    if cfg!(target_endian = "little") {
        (((w >> 1) & 0x7ff) as usize, (w >> 12) as usize)
    } else {
        (((w >> 20) & 0x7ff) as usize, (w & 0xf_ffff) as usize)
    }
}

/// Bit i set when lexeme i of `terms` (in its order, from 0; the first 64) is one of
/// `document`'s. None for a malformed document or terms. Both are sorted alike, so each term's
/// search starts where the previous one ended.
pub fn term_mask(document: &Lexemes, terms: &Lexemes) -> Option<i64> {
    let (mut mask, mut from) = (0u64, 0);
    for i in 0..terms.len().min(64) {
        let (at, found) = document.seek(from, terms.get(i)?)?;
        if found {
            mask |= 1 << i;
        }
        from = at;
    }
    Some(mask as i64)
}

/// `memori_term_mask(document tsvector, terms tsvector) RETURNS bigint` (declared in
/// sql/finalize.sql: pgrx has no tsvector type; both are read in place as bytes): which of the
/// lexemes of `terms` the document holds, bit i for the i-th in `terms`' order (`unnest`'s,
/// from 0; the first 64), as `document @@ lexeme::tsquery` would say: positions and weights
/// play no part. A hybrid search reads it for every memory in scope (`search::hybrid_exact`):
/// a binary search per term, nothing converted (and nothing copied for a document stored
/// inline, as a memory's is).
#[pg_extern(sql = false, immutable, strict, parallel_safe)]
fn memori_term_mask(document: &[u8], terms: &[u8]) -> i64 {
    Lexemes::of(document)
        .zip(Lexemes::of(terms))
        .and_then(|(d, t)| term_mask(&d, &t))
        .unwrap_or_else(|| {
            crate::base::errors::MemoriError::new(
                crate::base::errors::Code::DataException,
                "memori_term_mask: not a well-formed tsvector",
            )
            .hint("The value is damaged (PostgreSQL's own tsvectors are always well formed). For a memory, write its document again: UPDATE memori_memories SET content_tsv = memori_text_document(content, '<configuration>') WHERE ...")
            .raise()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_kept_whole_with_every_dotted_suffix() {
        assert_eq!(
            identifiers("orders.customer_id references customers.id"),
            "orderscustomerid customerid customersid"
        );
        assert_eq!(
            identifiers("use public.user_events, not v2.orders."),
            "publicuserevents userevents v2orders"
        );
        assert_eq!(identifiers("Plain words, 42P01 and 0.95"), "095");
        assert_eq!(identifiers("a._b_ c"), "ab");
        assert_eq!(identifiers(""), "");
        assert_eq!(identifiers("Total_Cents total_cents"), "totalcents");
    }

    #[test]
    fn long_runs_and_long_tokens_are_bounded() {
        // A run of many parts yields the suffixes of its last MAX_RUN_PARTS parts only.
        let run = (0..1000)
            .map(|i| format!("p{i}"))
            .collect::<Vec<_>>()
            .join(".");
        let tokens: Vec<String> = identifiers(&run).split(' ').map(String::from).collect();
        assert_eq!(tokens.len(), MAX_RUN_PARTS - 1);
        assert_eq!(tokens.last().unwrap(), "p998p999");
        assert_eq!(
            tokens[0],
            (992..1000).map(|i| format!("p{i}")).collect::<String>()
        );
        // No token is longer than MAX_TOKEN_BYTES.
        let long = format!("{}.b_c", "a".repeat(1000));
        assert_eq!(identifiers(&long), "bc");
        // The output stays linear in the input, whatever its shape.
        for input in [
            "a.".repeat(50_000),
            "x_1 ".repeat(50_000),
            "_.".repeat(50_000),
        ] {
            assert!(
                identifiers(&input).len() <= 8 * input.len(),
                "{}",
                &input[..8]
            );
        }
        let distinct: String = (0..50_000).map(|i| format!("x_{i} ")).collect();
        assert_eq!(identifiers(&distinct).split(' ').count(), 50_000);
    }

    /// A tsvector body as PostgreSQL lays it out: the lexemes sorted and distinct, each
    /// followed by `extra` bytes (standing in for positions) in the string area.
    fn body(lexemes: &[&str], extra: usize) -> Vec<u8> {
        let mut sorted: Vec<&[u8]> = lexemes.iter().map(|l| l.as_bytes()).collect();
        sorted.sort();
        sorted.dedup();
        let (mut entries, mut strings) = (Vec::new(), Vec::new());
        for l in &sorted {
            let mut e = pg_sys::WordEntry::default();
            e.set_haspos((extra > 0) as u32);
            e.set_len(l.len() as u32);
            e.set_pos(strings.len() as u32);
            // SAFETY: WordEntry is 4 bytes of bitfields.
            entries.extend_from_slice(&unsafe {
                std::mem::transmute::<pg_sys::WordEntry, [u8; 4]>(e)
            });
            strings.extend_from_slice(l);
            strings.extend(std::iter::repeat_n(7u8, extra));
        }
        let mut b = (sorted.len() as i32).to_ne_bytes().to_vec();
        b.extend(entries);
        b.extend(strings);
        b
    }

    #[test]
    fn word_entries_decode_as_bindgen_reads_the_bitfields() {
        for (haspos, len, pos) in [
            (0, 0, 0),
            (1, 1, 0),
            (0, 2047, 1),
            (1, 5, 1_048_575),
            (1, 1234, 54_321),
        ] {
            let mut e = pg_sys::WordEntry::default();
            e.set_haspos(haspos);
            e.set_len(len);
            e.set_pos(pos);
            // SAFETY: WordEntry is 4 bytes of bitfields.
            let bytes = unsafe { std::mem::transmute::<pg_sys::WordEntry, [u8; 4]>(e) };
            assert_eq!(word_entry(bytes), (len as usize, pos as usize));
        }
    }

    #[test]
    fn term_masks_say_which_terms_a_document_holds() {
        let words = [
            "a",
            "ab",
            "abc",
            "b",
            "customerid",
            "order",
            "z",
            "\u{e9}t\u{e9}",
        ];
        for extra in [0, 6] {
            let b = body(&words, extra);
            let d = Lexemes::of(&b).unwrap();
            for w in words {
                assert_eq!(d.seek(0, w.as_bytes()).map(|s| s.1), Some(true), "{w}");
            }
            for w in ["", "aa", "abcd", "c", "customer", "orders", "zz", "\u{e9}"] {
                assert_eq!(d.seek(0, w.as_bytes()).map(|s| s.1), Some(false), "{w}");
            }
            // Bits in the terms' own (sorted) order: a, order, x, z.
            let t = body(&["order", "x", "a", "z"], 2);
            assert_eq!(term_mask(&d, &Lexemes::of(&t).unwrap()), Some(0b1011));
        }
        // The 64th term is the sign bit; later ones set nothing.
        let names: Vec<String> = (0..70).map(|i| format!("t{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let t = body(&refs, 0);
        let t = Lexemes::of(&t).unwrap();
        for (doc, mask) in [
            (vec!["t63"], i64::MIN),
            (vec!["t64", "t69"], 0),
            (vec!["t00", "t63", "t65"], i64::MIN | 1),
        ] {
            let b = body(&doc, 0);
            assert_eq!(
                term_mask(&Lexemes::of(&b).unwrap(), &t),
                Some(mask),
                "{doc:?}"
            );
        }
        // An empty document holds nothing; empty terms ask nothing.
        let (empty, a) = (body(&[], 0), body(&["a"], 0));
        let (empty, a) = (Lexemes::of(&empty).unwrap(), Lexemes::of(&a).unwrap());
        assert_eq!(term_mask(&empty, &a), Some(0));
        assert_eq!(term_mask(&a, &empty), Some(0));
    }

    #[test]
    fn malformed_documents_are_refused_not_read_past() {
        let b = body(&["alpha", "beta"], 0);
        assert!(Lexemes::of(&b[..3]).is_none());
        assert!(Lexemes::of(&b[..8]).is_none()); // entries cut short
        assert!(Lexemes::of(&(-1i32).to_ne_bytes()).is_none());
        assert!(Lexemes::of(&i32::MAX.to_ne_bytes()).is_none());
        // The string area cut short: the lexemes that point past it are not read.
        let d = Lexemes::of(&b[..b.len() - 2]).unwrap();
        assert_eq!(d.seek(0, b"beta"), None);
    }

    #[test]
    fn tsquery_literals_escape_quotes_and_backslashes() {
        assert_eq!(tsquery_literal("o'neil"), "'o''neil'");
        assert_eq!(tsquery_literal("a\\b"), "'a\\\\b'");
    }
}
