//! Full-text search over memories: the words of a memory, plus its SQL identifiers kept whole.
//!
//! PostgreSQL's text parser reads `orders.customer_id` as the host name `orders.customer`, a
//! blank and `id`: neither `customer_id` nor `orders.customer_id` can then be found. memori's
//! document for a memory (`memori_text_document(content, config)`, SQL) is the words of the
//! content with `.` and `_` read as spaces (so `orders`, `customer` and `id` are words), plus
//! one token per identifier and per dotted suffix of it, joined without separators
//! (`orderscustomerid`, `customerid`): a question naming `customer_id` then matches a memory
//! about `orders.customer_id` on a rare, and so highly weighted, token. The query goes through
//! the same function, so both sides always agree.

use pgrx::prelude::*;

/// The identifier tokens of `text`: for every run of letters, digits, `_` and `.` that holds
/// an inner `_` or `.`, one token per dotted suffix, lowercased, without separators. Distinct,
/// in order of first appearance, space-separated.
pub fn identifiers(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let is_part = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    for run in text.split(|c: char| !is_part(c)) {
        let run = run.trim_matches(|c| c == '.' || c == '_');
        if !run.contains(['.', '_']) {
            continue;
        }
        let parts: Vec<&str> = run.split('.').filter(|p| !p.is_empty()).collect();
        for i in 0..parts.len() {
            let suffix = &parts[i..];
            // A lone last part without `_` is an ordinary word, which the words already hold.
            if suffix.len() == 1 && !suffix[0].trim_matches('_').contains('_') {
                continue;
            }
            let token: String = suffix
                .concat()
                .chars()
                .filter(|c| *c != '_')
                .flat_map(char::to_lowercase)
                .collect();
            if !token.is_empty() && !out.contains(&token) {
                out.push(token);
            }
        }
    }
    out.join(" ")
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

/// The identifier tokens of a text (see `memori_text_document`).
#[pg_extern(immutable, parallel_safe, strict)]
fn memori_identifiers(content: &str) -> String {
    identifiers(content)
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
    fn tsquery_literals_escape_quotes_and_backslashes() {
        assert_eq!(tsquery_literal("o'neil"), "'o''neil'");
        assert_eq!(tsquery_literal("a\\b"), "'a\\\\b'");
    }
}
