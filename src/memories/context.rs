//! memori_context(): a ready-to-paste block of memories for an LLM's system prompt.
//!
//! Sections, in order: the user's rules (always, most important first); entity and
//! relationship memories relevant to the query; other relevant memories. Relevant means at or
//! above memori.min_similarity, at most k of them (default memori.max_context_memories). Each
//! line carries its type and a short id. The block fits token_budget (about 4 characters a
//! token): whole items are cut, lowest score first, rules last.

use crate::base::catalog;
use crate::base::errors::{MemoriError, OrRaise, Result};
use crate::base::gucs;
use crate::base::memory::{self, Archived, At, MemoryType, Section};
use crate::base::spi::spi;
use crate::memories::search::{self, Query};
use crate::tenancy;
use pgrx::datum::Uuid;
use pgrx::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: i64,
    pub memory_id: String,
    pub memory_type: String,
    pub content: String,
    /// When what it says happened (its event_at, as a date in the session's time zone), if
    /// known: what a "when" question needs.
    pub event: Option<String>,
    /// What decides which items are cut first (lowest first).
    pub rank: f64,
}

impl Item {
    pub fn line(&self) -> String {
        let content: String = self
            .content
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let event = self
            .event
            .as_deref()
            .map_or(String::new(), |d| format!("({d}) "));
        format!(
            "- [{} {}] {event}{}",
            self.memory_type,
            &self.memory_id[..8.min(self.memory_id.len())],
            content
        )
    }
}

/// Conservative token estimate: one token for every 4 characters, rounded up (what `fit`
/// computes incrementally).
#[cfg(test)]
pub fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// The section an item goes in (by its memory type), as an index into `Section::ALL`.
fn section(item: &Item) -> Option<usize> {
    let s = MemoryType::parse(&item.memory_type).ok()?.context_section();
    Section::ALL.iter().position(|x| *x == s)
}

/// Lays out the items by section, in the order given.
pub fn render(items: &[Item]) -> String {
    let mut out: Vec<String> = Vec::new();
    for (n, s) in Section::ALL.iter().enumerate() {
        let lines: Vec<String> = items
            .iter()
            .filter(|i| section(i) == Some(n))
            .map(Item::line)
            .collect();
        if !lines.is_empty() {
            out.push(s.title().to_string());
            out.extend(lines);
        }
    }
    out.join("\n")
}

/// Drops whole items, lowest rank first, until the block fits `budget` tokens. Linear in the
/// size of the block: each line's length is counted once, and the block's length is kept up to
/// date as items go (the same figure `tokens(&render(..))` gives).
pub fn fit(items: Vec<Item>, budget: usize) -> Vec<Item> {
    let lens: Vec<usize> = items.iter().map(|i| i.line().chars().count()).collect();
    let mut in_section = [0usize; Section::ALL.len()];
    // Characters of the block, and its lines (titles included): render() joins lines with \n.
    let (mut chars, mut lines) = (0usize, 0usize);
    for (item, len) in items.iter().zip(&lens) {
        if let Some(s) = section(item) {
            if in_section[s] == 0 {
                chars += Section::ALL[s].title().chars().count();
                lines += 1;
            }
            in_section[s] += 1;
            chars += len;
            lines += 1;
        }
    }
    let size = |chars: usize, lines: usize| (chars + lines.saturating_sub(1)).div_ceil(4);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[a].rank.total_cmp(&items[b].rank));
    let mut keep = vec![true; items.len()];
    for n in order {
        if size(chars, lines) <= budget {
            break;
        }
        keep[n] = false;
        if let Some(s) = section(&items[n]) {
            chars -= lens[n];
            lines -= 1;
            in_section[s] -= 1;
            if in_section[s] == 0 {
                chars -= Section::ALL[s].title().chars().count();
                lines -= 1;
            }
        }
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(i, k)| k.then_some(i))
        .collect()
}

fn rules(user: &str) -> Result<Vec<Item>> {
    let live = memory::live("", At::Now, catalog::has_validity()?, Archived::Excluded);
    let rule = MemoryType::Rule.as_str();
    Spi::connect(|c| {
        c.select(
            &format!("SELECT id, memory_id::pg_catalog.text, content, importance_score FROM memori_memories
              WHERE user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND memory_type::pg_catalog.text = '{rule}'::pg_catalog.text
                AND {live}
              ORDER BY importance_score DESC, updated_at DESC, id
              LIMIT 1000"),
            None,
            &[user.into()],
        )?
        .map(|r| {
            Ok(Item {
                id: r.get::<i64>(1)?.unwrap_or_default(),
                memory_id: r.get::<String>(2)?.unwrap_or_default(),
                memory_type: rule.into(),
                content: r.get::<String>(3)?.unwrap_or_default(),
                // A rule holds whenever: no event date.
                event: None,
                // Rules go last, least important first.
                rank: 10.0 + r.get::<f32>(4)?.unwrap_or_default() as f64,
            })
        })
        .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi)
}

/// The user's rules and the memories most relevant to `query`, within `budget`, as a block for
/// a system prompt (accesses counted by `Assembled::counted`).
pub fn assemble(
    query: Option<&str>,
    k: i32,
    conversation_id: Option<Uuid>,
    budget: usize,
    user: String,
) -> Result<Assembled> {
    let mut items = tenancy::reading(|| rules(&user))?;
    let who = user.clone();
    if let Some(q) = query.filter(|q| !q.trim().is_empty()) {
        if k > 0 {
            let found = search::find(
                &Query {
                    user,
                    k,
                    conversation_id,
                    memory_types: Some(
                        MemoryType::ALL
                            .into_iter()
                            .filter(|t| t.in_relevant_search())
                            .map(|t| t.as_str().to_string())
                            .collect(),
                    ),
                    tags: None,
                    min_similarity: Some(gucs::min_similarity()),
                    include_archived: false,
                    mode: gucs::search_mode(),
                    as_of: None,
                    event_from: None,
                    event_to: None,
                },
                q,
            )?;
            items.extend(found.found.into_iter().map(|f| Item {
                id: f.ranked.id,
                memory_id: f.memory_id.to_string(),
                content: f.content,
                memory_type: f.memory_type,
                event: f.event_at.map(event_date),
                rank: f.ranked.score,
            }));
        }
    }
    let items = fit(items, budget);
    Ok(Assembled {
        user: who,
        text: render(&items),
        ids: items.iter().map(|i| i.id).collect(),
    })
}

/// An event time as a date (YYYY-MM-DD) in the session's time zone.
pub fn event_date(t: pgrx::datum::TimestampWithTimeZone) -> String {
    if t.is_infinity() {
        return "infinity".into();
    }
    if t.is_neg_infinity() {
        return "-infinity".into();
    }
    format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

/// A context block, its accesses not yet counted.
pub struct Assembled {
    user: String,
    pub text: String,
    ids: Vec<i64>,
}

impl Assembled {
    /// Counts an access for each memory the block holds (row locks until commit: memori_chat
    /// counts after its chat calls, review G10) and returns the block.
    pub fn counted(self) -> Result<String> {
        search::track_access(&self.user, &self.ids)?;
        Ok(self.text)
    }
}

/// A token budget as given (NULL: 2000), at least 1 and at most memori.max_token_budget, the
/// superuser's bound on what one context (and one chat call, which sends a context and as much
/// history again) may carry.
pub fn budget(token_budget: Option<i32>) -> Result<usize> {
    let budget = token_budget.unwrap_or(2000);
    if budget < 1 {
        return Err(MemoriError::invalid(format!(
            "token_budget must be at least 1, not {budget}"
        )));
    }
    let max = crate::base::gucs::max_token_budget();
    if budget as usize > max {
        return Err(MemoriError::new(
            crate::base::errors::Code::ProgramLimitExceeded,
            format!("token_budget {budget} is over memori.max_token_budget ({max})"),
        )
        .hint("Ask for less, or have a superuser raise memori.max_token_budget."));
    }
    Ok(budget as usize)
}

/// A ready-to-paste block of the current memori user's memories for a system prompt.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_context(
    query: Option<&str>,
    k: default!(Option<i32>, "NULL"),
    conversation_id: default!(Option<Uuid>, "NULL"),
    token_budget: default!(Option<i32>, "2000"),
    user_id: default!(Option<&str>, "NULL"),
) -> String {
    let k = k.unwrap_or_else(gucs::max_context_memories);
    if !(0..=search::MAX_K).contains(&k) {
        MemoriError::invalid(format!(
            "k must be between 0 and {}, not {k}",
            search::MAX_K
        ))
        .raise();
    }
    let budget = budget(token_budget).or_raise();
    let user = tenancy::resolve(user_id).or_raise();
    assemble(query, k, conversation_id, budget, user)
        .and_then(Assembled::counted)
        .or_raise()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, t: &str, content: &str, rank: f64) -> Item {
        Item {
            id,
            memory_id: format!("{id:08}-0000"),
            memory_type: t.into(),
            content: content.into(),
            event: None,
            rank,
        }
    }

    #[test]
    fn a_line_shows_the_event_date_when_known() {
        let mut i = item(7, "long_term", "Caroline went to the  support group", 1.0);
        assert_eq!(
            i.line(),
            "- [long_term 00000007] Caroline went to the support group"
        );
        i.event = Some("2023-05-07".into());
        assert_eq!(
            i.line(),
            "- [long_term 00000007] (2023-05-07) Caroline went to the support group"
        );
    }

    #[test]
    fn sections_come_in_order_and_lines_carry_type_and_short_id() {
        let items = vec![
            item(3, "long_term", "likes   tabs\nnot spaces", 0.5),
            item(1, "rule", "use JOINs", 10.8),
            item(2, "entity", "customers(id, name)", 0.6),
        ];
        assert_eq!(
            render(&items),
            "## Rules\n- [rule 00000001] use JOINs\n## Entities and relationships\n- [entity 00000002] customers(id, name)\n## Relevant memories\n- [long_term 00000003] likes tabs not spaces"
        );
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn fit_cuts_whole_items_lowest_rank_first_and_rules_last() {
        let items = vec![
            item(1, "rule", "a rule that must stay", 10.5),
            item(2, "long_term", "a fairly relevant memory", 0.6),
            item(3, "long_term", "the least relevant memory", 0.2),
        ];
        let all = tokens(&render(&items));
        let kept = fit(items.clone(), all - 1);
        assert_eq!(kept.iter().map(|i| i.id).collect::<Vec<_>>(), [1, 2]);
        let kept = fit(items.clone(), tokens(&render(&items[..1])));
        assert_eq!(kept.iter().map(|i| i.id).collect::<Vec<_>>(), [1]);
        assert!(fit(items, 1).is_empty());
    }

    #[test]
    fn fit_measures_the_block_as_render_does() {
        let types = ["rule", "entity", "relationship", "short_term", "long_term"];
        let items: Vec<Item> = (0..60)
            .map(|n| {
                let content = "wörd ".repeat(1 + (n * 7) % 23);
                item(
                    n as i64,
                    types[n % 5],
                    &content,
                    ((n * 37) % 60) as f64 / 10.0,
                )
            })
            .collect();
        for budget in [1, 5, 50, 200, 400, 800, 5000] {
            let kept = fit(items.clone(), budget);
            assert!(kept.is_empty() || tokens(&render(&kept)) <= budget);
            // Each item cut was needed: putting back the best one cut overflows the budget.
            if let Some(best_cut) = items
                .iter()
                .filter(|i| !kept.iter().any(|k| k.id == i.id))
                .max_by(|a, b| a.rank.total_cmp(&b.rank))
            {
                let mut more = kept.clone();
                more.push(best_cut.clone());
                more.sort_by_key(|i| i.id);
                assert!(tokens(&render(&more)) > budget, "budget {budget}");
            }
        }
    }

    #[test]
    fn tokens_are_estimated_conservatively() {
        assert_eq!(tokens(""), 0);
        assert_eq!(tokens("abcd"), 1);
        assert_eq!(tokens("abcde"), 2);
        assert_eq!(tokens("ééé"), 1);
    }
}
