//! What a memory is: its types and what each means, when a memory is live, and the checks of
//! its fields. The ground layer: no SPI here, and every module takes its type rules, its live
//! condition and its field checks from this one (a new memory type is this file, the schema's
//! CHECK, an upgrade script, a test and the docs; every `match` below says what else it means).

use crate::base::errors::{Code, MemoriError, Result};
use crate::base::gucs;

/// The kinds of memory (the seed's memory types; `memori_memories.memory_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemoryType {
    /// Working context: expires after memori.short_term_expiry_days unless promoted.
    ShortTerm,
    /// Lasting facts and preferences.
    LongTerm,
    /// Instructions always put in prompt context.
    Rule,
    /// A fact about one thing (a table, a column, a metric).
    Entity,
    /// A triple: subject, predicate, object.
    Relationship,
}

impl MemoryType {
    /// Every type, in the order the schema's CHECK lists them.
    pub const ALL: [MemoryType; 5] = [
        MemoryType::ShortTerm,
        MemoryType::LongTerm,
        MemoryType::Rule,
        MemoryType::Entity,
        MemoryType::Relationship,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemoryType::ShortTerm => "short_term",
            MemoryType::LongTerm => "long_term",
            MemoryType::Rule => "rule",
            MemoryType::Entity => "entity",
            MemoryType::Relationship => "relationship",
        }
    }

    /// Every type's name, for SQL arrays, JSON schemas and messages.
    pub fn names() -> [&'static str; 5] {
        Self::ALL.map(MemoryType::as_str)
    }

    /// The type named `name` (exactly), else 22023 listing the types.
    pub fn parse(name: &str) -> Result<MemoryType> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| {
                MemoriError::invalid(format!("unknown memory_type \"{name}\"")).hint(format!(
                    "memory_type is one of {}.",
                    Self::names().join(", ")
                ))
            })
    }

    /// Expires by default (memori.short_term_expiry_days after it is stored).
    pub fn expires_by_default(self) -> bool {
        matches!(self, MemoryType::ShortTerm)
    }

    /// Becomes long_term after memori.promote_after_accesses accesses.
    pub fn promotes(self) -> bool {
        matches!(self, MemoryType::ShortTerm)
    }

    /// Archived by maintenance when unused for memori.archive_threshold_days.
    pub fn archivable(self) -> bool {
        !matches!(self, MemoryType::Rule)
    }

    /// Found by prompt context's relevance search (rules are always in context, apart).
    pub fn in_relevant_search(self) -> bool {
        !matches!(self, MemoryType::Rule)
    }

    /// The section of prompt context it is shown in.
    pub fn context_section(self) -> Section {
        match self {
            MemoryType::Rule => Section::Rules,
            MemoryType::Entity | MemoryType::Relationship => Section::Entities,
            MemoryType::ShortTerm | MemoryType::LongTerm => Section::Relevant,
        }
    }

    /// The types for which `keep` holds, as a SQL text[] literal of quoted names.
    pub fn sql_array(keep: impl Fn(MemoryType) -> bool) -> String {
        let names: Vec<String> = Self::ALL
            .into_iter()
            .filter(|t| keep(*t))
            .map(|t| format!("'{}'", t.as_str()))
            .collect();
        format!("ARRAY[{}]::pg_catalog.text[]", names.join(", "))
    }
}

/// The sections of prompt context, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Rules,
    Entities,
    Relevant,
}

impl Section {
    pub const ALL: [Section; 3] = [Section::Rules, Section::Entities, Section::Relevant];

    pub fn title(self) -> &'static str {
        match self {
            Section::Rules => "## Rules",
            Section::Entities => "## Entities and relationships",
            Section::Relevant => "## Relevant memories",
        }
    }
}

/// The moment a live condition is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At<'a> {
    /// The statement's now().
    Now,
    /// A moment given as a SQL expression (a parameter such as `$5::pg_catalog.timestamptz`):
    /// what was stored by then and still held then.
    Moment(&'a str),
}

/// Whether archived memories count as live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archived {
    Excluded,
    Included,
}

/// The condition "the memory is live": not expired at `at`, still valid then (`validity`: the
/// database has valid_to, 0.4.0 on; a database not yet updated has no validity), stored by then
/// (for a past moment), and not archived unless `archived` says so. `alias` is "" or "m.".
pub fn live(alias: &str, at: At, validity: bool, archived: Archived) -> String {
    let mut parts = Vec::new();
    match at {
        At::Now => {
            parts.push(format!(
                "({alias}expires_at IS NULL OR {alias}expires_at > now())"
            ));
            if validity {
                parts.push(format!("{alias}valid_to IS NULL"));
            }
        }
        At::Moment(when) => {
            parts.push(format!(
                "({alias}expires_at IS NULL OR {alias}expires_at > {when})"
            ));
            parts.push(format!("{alias}created_at <= {when}"));
            if validity {
                parts.push(format!(
                    "({alias}valid_to IS NULL OR {alias}valid_to > {when})"
                ));
            }
        }
    }
    if archived == Archived::Excluded {
        parts.push(format!("NOT {alias}is_archived"));
    }
    parts.join(" AND ")
}

/// An importance, checked: between 0 and 1.
pub fn importance(importance: f64) -> Result<f32> {
    if (0.0..=1.0).contains(&importance) {
        Ok(importance as f32)
    } else {
        Err(MemoriError::invalid(format!(
            "importance must be between 0 and 1, not {importance}"
        )))
    }
}

/// A text that must be given and not blank (`which` names it in the message).
pub fn required_text<'a>(text: Option<&'a str>, which: &str) -> Result<&'a str> {
    match text {
        None => Err(MemoriError::new(
            Code::NullValueNotAllowed,
            format!("{which} must not be NULL"),
        )),
        Some(t) if t.trim().is_empty() => {
            Err(MemoriError::invalid(format!("{which} must not be empty")))
        }
        Some(t) => Ok(t),
    }
}

/// Refuses a text longer than memori.max_content_bytes (54000) before any work on it.
pub fn check_size(text: &str, which: &str) -> Result<()> {
    let max = gucs::max_content_bytes();
    if text.len() > max {
        return Err(MemoriError::new(
            Code::ProgramLimitExceeded,
            format!(
                "a {which} of {} bytes is longer than memori.max_content_bytes ({max})",
                text.len()
            ),
        )
        .hint("Send shorter text, or ask the DBA to raise memori.max_content_bytes."));
    }
    Ok(())
}

/// At most this many tags, and this many entities, on one memory.
pub const MAX_LABELS: usize = 100;
/// At most this many bytes in one tag or entity.
pub const MAX_LABEL_BYTES: usize = 256;

/// Tags or entities (`which`): trimmed, empty ones dropped, distinct in order of first
/// appearance (a hash set: linear in the count), at most `MAX_LABELS` of at most
/// `MAX_LABEL_BYTES` each (54000 otherwise, before any other work).
pub fn labels(which: &str, v: Option<Vec<Option<String>>>) -> Result<Vec<String>> {
    let given = v.unwrap_or_default();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for s in given.into_iter().flatten() {
        let s = s.trim();
        if s.len() > MAX_LABEL_BYTES {
            return Err(MemoriError::new(
                Code::ProgramLimitExceeded,
                format!(
                    "one of the {which} is {} bytes long; at most {MAX_LABEL_BYTES} are allowed",
                    s.len()
                ),
            ));
        }
        if !s.is_empty() && seen.insert(s.to_string()) {
            out.push(s.to_string());
            if out.len() > MAX_LABELS {
                return Err(MemoriError::new(
                    Code::ProgramLimitExceeded,
                    format!("more than {MAX_LABELS} distinct {which} on one memory"),
                )
                .hint(
                    "Keep tags and entities to a few labels per memory; put the rest in metadata.",
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_by_name_and_only_so() {
        for t in MemoryType::ALL {
            assert_eq!(MemoryType::parse(t.as_str()).unwrap(), t);
        }
        let e = MemoryType::parse("Rule").unwrap_err();
        assert!(e.message.contains("\"Rule\""), "{}", e.message);
        assert_eq!(
            MemoryType::sql_array(MemoryType::archivable),
            "ARRAY['short_term', 'long_term', 'entity', 'relationship']::pg_catalog.text[]"
        );
    }

    #[test]
    fn the_live_condition_says_each_part_once() {
        assert_eq!(
            live("m.", At::Now, true, Archived::Excluded),
            "(m.expires_at IS NULL OR m.expires_at > now()) AND m.valid_to IS NULL AND NOT m.is_archived"
        );
        assert_eq!(
            live("", At::Now, false, Archived::Included),
            "(expires_at IS NULL OR expires_at > now())"
        );
        assert_eq!(
            live("m.", At::Moment("$5"), true, Archived::Included),
            "(m.expires_at IS NULL OR m.expires_at > $5) AND m.created_at <= $5 AND (m.valid_to IS NULL OR m.valid_to > $5)"
        );
    }

    #[test]
    fn field_checks_return_what_they_checked() {
        assert_eq!(importance(0.25).unwrap(), 0.25);
        assert!(importance(1.5).is_err());
        assert_eq!(required_text(Some(" x "), "content").unwrap(), " x ");
        assert!(required_text(Some("  "), "content").is_err());
        assert!(required_text(None, "content").is_err());
        assert_eq!(
            labels(
                "tags",
                Some(vec![
                    Some(" a ".into()),
                    None,
                    Some("a".into()),
                    Some("b".into())
                ])
            )
            .unwrap(),
            ["a", "b"]
        );
    }
}
