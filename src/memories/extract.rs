//! memori_extract(): memories from a conversation turn, decided by the configured chat model
//! in exactly one call and applied by memori in the caller's transaction (the seed's "entity
//! extraction, relationship mapping, rule engine" step).

use crate::base::catalog;
use crate::base::errors::{Code, MemoriError, OrRaise, Result};
use crate::base::gucs;
use crate::base::spi::{prevent_if_read_only, spi};
use crate::base::vector::{indexed_cast, query_vector};
use crate::memories::conversations::{self, check_conversation};
use crate::memories::decisions::{self, Action, Decision, Known};
use crate::memories::search::{self, Query};
use crate::memories::store::{self, Change, Common, Written};
use crate::providers::chat::{call, chat_config};
use crate::providers::embedding::{embed_texts, Target};
use crate::providers::llm::{ChatRequest, Role};
use crate::tenancy::{self, as_owner_of};
use pgrx::datum::{JsonB, Uuid};
use pgrx::prelude::*;

/// A current memory of `user` named by its full memory_id (a model may quote one).
fn lookup(user: &str, id: &str) -> Option<Known> {
    let looks_like_uuid = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if !looks_like_uuid {
        return None;
    }
    let live = crate::base::memory::live(
        "",
        crate::base::memory::At::Now,
        catalog::has_validity().ok()?,
        crate::base::memory::Archived::Included,
    );
    Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT memory_id::pg_catalog.text, memory_type::pg_catalog.text, content FROM memori_memories
                  WHERE memory_id = $1::text::pg_catalog.uuid AND user_id OPERATOR(pg_catalog.=) $2::pg_catalog.text
                    AND {live}"
            ),
            None,
            &[id.into(), user.into()],
        )?;
        let mut out = None;
        for r in rows {
            out = Some(Known {
                short: id.to_string(),
                memory_id: r.get::<String>(1)?.unwrap_or_default(),
                memory_type: r.get::<String>(2)?.unwrap_or_default(),
                content: r.get::<String>(3)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .ok()
    .flatten()
}

/// One row of memori_extract's result: action, memory_id, memory_type, content.
pub type Applied = (String, Option<Uuid>, String, String);

/// Extracts memories from `turn` for `user`: one chat call, every decision checked, then all
/// applied (in the caller's transaction: an error anywhere leaves nothing written).
pub fn extract(user: &str, turn: &str, conversation_id: Option<Uuid>) -> Result<Vec<Applied>> {
    crate::base::memory::check_size(turn, "turn")?;
    check_conversation(conversation_id, user)?;
    let decided = decide(user, turn)?;
    decided.apply(user, conversation_id)
}

/// What the model decided for a turn, checked, not yet written.
pub struct Decided {
    known: Vec<Known>,
    decisions: Vec<Decision>,
}

impl Decided {
    /// Writes the decisions (see `apply`).
    pub fn apply(self, user: &str, conversation_id: Option<Uuid>) -> Result<Vec<Applied>> {
        apply(user, conversation_id, &self.known, self.decisions)
    }
}

/// The chat call of an extraction and the check of its answer, with no write and no lock
/// taken: memori_chat makes both of its calls before it writes anything (review G10).
/// The caller has checked the turn's size and the conversation (memori_chat does so once for
/// its message, before its chat call).
pub fn decide(user: &str, turn: &str) -> Result<Decided> {
    let cfg = chat_config()?;
    let k = gucs::extract_context_memories();
    let mut known: Vec<Known> = if k > 0 {
        let found = search::find(
            &Query {
                user: user.to_string(),
                k,
                conversation_id: None,
                memory_types: None,
                tags: None,
                min_similarity: None,
                include_archived: false,
                mode: gucs::search_mode(),
                as_of: None,
                event_from: None,
                event_to: None,
            },
            turn,
        )?;
        found
            .found
            .into_iter()
            .enumerate()
            .map(|(i, f)| Known {
                short: format!("m{}", i + 1),
                memory_id: f.memory_id.to_string(),
                memory_type: f.memory_type,
                content: f.content,
            })
            .collect()
    } else {
        Vec::new()
    };
    let prompt = gucs::extract_prompt().unwrap_or_else(|| decisions::PROMPT.to_string());
    let req = ChatRequest {
        system: prompt,
        messages: vec![(Role::User, decisions::user_message(&known, turn))],
        schema: Some(decisions::schema()),
    };
    let answer = call(&cfg, &req)?;
    let decided = decisions::parse(&answer, &mut known, |id| {
        tenancy::reading(|| Ok(lookup(user, id))).ok().flatten()
    })
    .map_err(|e| {
        let start: String = answer.chars().take(300).collect();
        MemoriError::new(
            Code::DataException,
            format!("the chat model's extraction answer cannot be used: {e}"),
        )
        .detail(format!("The answer began: {start:?}"))
        .hint("Nothing was written. Try again, use a model that follows JSON instructions, or adjust memori.extract_prompt.")
    })?;
    Ok(Decided {
        known,
        decisions: decided,
    })
}

fn uuid_of(known: &Known) -> Result<Uuid> {
    let parsed = uuid_bytes(&known.memory_id).ok_or_else(|| {
        MemoriError::new(
            Code::SystemError,
            format!("bad memory_id {}", known.memory_id),
        )
    })?;
    Ok(Uuid::from_bytes(parsed))
}

fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Cosine similarity of `vector` with a memory's embedding, when embedded by `target`'s model.
fn similarity_to(
    user: &str,
    memory_id: Uuid,
    target: &Target,
    vector: &[f32],
) -> Result<Option<f64>> {
    let dims = vector.len();
    let (cast, q) = (indexed_cast(dims), query_vector(2, dims));
    crate::base::spi::read_one::<f64>(
        &format!(
            "SELECT 1::pg_catalog.float8 - (m.embedding::{cast} <=> {q}) FROM memori_memories m
              WHERE m.user_id OPERATOR(pg_catalog.=) $4::pg_catalog.text AND m.memory_id = $1
                AND m.embedding_model = $3::pg_catalog.text AND m.embedding_dims = {dims}"
        ),
        &[
            memory_id.into(),
            vector.to_vec().into(),
            target.label().into(),
            user.into(),
        ],
    )
}

/// Embeds every content to write in one call, then applies the decisions in order.
fn apply(
    user: &str,
    conversation_id: Option<Uuid>,
    known: &[Known],
    decided: Vec<Decision>,
) -> Result<Vec<Applied>> {
    let texts: Vec<&str> = decided
        .iter()
        .filter(|d| d.action != Action::None)
        .map(|d| d.content.as_str())
        .collect();
    let embedded = if texts.is_empty() {
        None
    } else {
        Some(embed_texts(Some(user), &texts)?)
    };
    let mut vectors = embedded
        .as_ref()
        .map(|(_, b)| b.vectors.clone())
        .unwrap_or_default()
        .into_iter();
    let threshold = gucs::supersede_min_similarity();
    as_owner_of(c"memori_memories", || {
        // Every lock of the turn up front, in the order memori_store takes them (conversation,
        // store locks by type, then memory rows by id), whatever order the model wrote its
        // decisions in: two extractions, or an extraction and a store, of one user cannot
        // deadlock (review G12).
        if let Some(c) = conversation_id {
            conversations::touch_conversation(c, user)?;
        }
        let mut types: Vec<&str> = decided
            .iter()
            .filter(|d| d.action != Action::None)
            .map(|d| d.memory_type.as_str())
            .collect();
        types.sort_unstable();
        types.dedup();
        for t in types {
            store::lock_for_dedup(user, t)?;
        }
        let targets: Vec<Uuid> = decided
            .iter()
            .filter(|d| d.action != Action::None)
            .filter_map(|d| d.target.map(|t| uuid_of(&known[t])))
            .collect::<Result<_>>()?;
        if !targets.is_empty() {
            spi_run(
                "SELECT m.id FROM memori_memories m
                  WHERE m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND m.memory_id OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.uuid[])
                  ORDER BY m.id FOR UPDATE",
                &[user.into(), targets.into()],
            )?;
        }
        let mut out: Vec<Applied> = Vec::new();
        for d in decided {
            let target_id = d.target.map(|t| uuid_of(&known[t])).transpose()?;
            if d.action == Action::None {
                out.push(("none".into(), target_id, d.memory_type, d.content));
                continue;
            }
            let (model, _) = embedded.as_ref().expect("embedded when writing");
            let vector = vectors.next().expect("one vector per written decision");
            let mut action = d.action;
            // An update or a supersession must be about the same thing as the memory it
            // replaces: a turn saying "m1 is outdated, set it to ..." cannot rewrite an
            // unrelated memory (an operator's rule, say).
            if matches!(action, Action::Supersede | Action::Update) {
                let old = target_id.expect("update and supersede have a target");
                let similar = similarity_to(user, old, model, &vector)?;
                if threshold > -1.0 && similar.is_none_or(|s| s < threshold) {
                    crate::base::stats::extract_decision("refused");
                    let verb = if action == Action::Update {
                        "updated"
                    } else {
                        "superseded"
                    };
                    pgrx::notice!(
                        "memori: the model {verb} memory {old} with an unrelated fact (similarity {}, below memori.supersede_min_similarity {threshold}); it is added instead and {old} stays as it was",
                        similar.map_or("unknown".to_string(), |s| format!("{s:.3}"))
                    );
                    action = Action::Add;
                }
            }
            match action {
                Action::Update => {
                    let id = target_id.expect("update has a target");
                    let changed = store::update_row(
                        user,
                        id,
                        Change {
                            content: Some(&d.content),
                            embedded: Some((model.label(), vector)),
                            memory_type: Some(&d.memory_type),
                            importance: d.importance.map(|i| i as f32),
                            tags: None,
                            metadata: None,
                        },
                    )?;
                    if !changed {
                        return Err(gone(id));
                    }
                    out.push(("update".into(), Some(id), d.memory_type, d.content));
                }
                Action::Add | Action::Supersede => {
                    if action == Action::Supersede {
                        let old = target_id.expect("supersede has a target");
                        let ended = crate::base::spi::opt_one::<bool>(
                            "UPDATE memori_memories SET valid_to = now()
                              WHERE memory_id = $1 AND user_id OPERATOR(pg_catalog.=) $2::pg_catalog.text AND valid_to IS NULL
                              RETURNING true",
                            &[old.into(), user.into()],
                        )?;
                        if ended.is_none() {
                            return Err(gone(old));
                        }
                    }
                    let (id, written) = add(user, conversation_id, model, &d, vector)?;
                    if let (Action::Supersede, Some(old)) = (action, target_id) {
                        spi_run(
                            "UPDATE memori_memories SET superseded_by = $2
                              WHERE memory_id = $1 AND user_id OPERATOR(pg_catalog.=) $3::pg_catalog.text",
                            &[old.into(), id.into(), user.into()],
                        )?;
                    }
                    let shown = match (action, written) {
                        (Action::Supersede, _) => "supersede",
                        (_, Written::Merged(_)) => "update",
                        _ => "add",
                    };
                    out.push((shown.into(), Some(id), d.memory_type, d.content));
                }
                Action::None => unreachable!("handled above"),
            }
        }
        for (action, ..) in &out {
            crate::base::stats::extract_decision(action);
        }
        Ok(out)
    })
}

fn gone(id: Uuid) -> MemoriError {
    MemoriError::new(
        Code::ObjectNotInPrerequisiteState,
        format!("memory {id} changed while the model was deciding (deleted or superseded)"),
    )
    .hint("Nothing was written; run memori_extract again.")
}

fn spi_run(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<()> {
    Spi::run_with_args(sql, args).map_err(spi)
}

/// Writes one decided memory (near-duplicates merged as memori_store does).
fn add(
    user: &str,
    conversation_id: Option<Uuid>,
    model: &Target,
    d: &Decision,
    vector: Vec<f32>,
) -> Result<(Uuid, Written)> {
    let mut metadata = serde_json::json!({"source": "memori_extract"});
    let mut entities: Vec<String> = Vec::new();
    if let Some([s, p, o]) = &d.triple {
        metadata["subject"] = s.clone().into();
        metadata["predicate"] = p.clone().into();
        metadata["object"] = o.clone().into();
        entities = vec![s.clone(), o.clone()];
        entities.dedup();
    }
    let c = Common {
        user: user.to_string(),
        memory_type: d.memory_type.clone(),
        importance: d.importance.unwrap_or(0.5) as f32,
        tags: Vec::new(),
        metadata: JsonB(metadata),
        event_at: None,
    };
    let mut written = store::store_embedded(
        &c,
        model,
        &[&d.content],
        &[vector],
        conversation_id,
        &entities,
        None,
    )?;
    Ok(written.remove(0))
}

/// Memories from one conversation turn: the configured chat model (memori.llm_provider)
/// decides in one call what to add, update or supersede among the user's most relevant
/// memories; memori checks every decision and applies them all, or none. One row per decision.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_extract(
    content: Option<&str>,
    conversation_id: default!(Option<Uuid>, "NULL"),
    user_id: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(action, String),
        name!(memory_id, Option<Uuid>),
        name!(memory_type, Option<String>),
        name!(content, Option<String>),
    ),
> {
    prevent_if_read_only(c"memori_extract()");
    crate::base::memory::required_text(content, "content").or_raise();
    let user = tenancy::resolve(user_id).or_raise();
    let rows = extract(&user, content.unwrap(), conversation_id).or_raise();
    // A "none" about no memory has neither type nor content: NULL, not ''.
    TableIterator::new(rows.into_iter().map(|(a, id, t, c)| {
        (
            a,
            id,
            (!t.is_empty()).then_some(t),
            (!c.is_empty()).then_some(c),
        )
    }))
}
