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

    #[test]
    fn tsquery_literals_escape_quotes_and_backslashes() {
        assert_eq!(tsquery_literal("o'neil"), "'o''neil'");
        assert_eq!(tsquery_literal("a\\b"), "'a\\\\b'");
    }
}
