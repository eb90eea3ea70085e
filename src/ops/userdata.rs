//! One end user's data as a whole: `memori_export` (JSON lines), `memori_import` (into this or
//! another database, re-embedding when the model differs) and `memori_erase_user` (a GDPR
//! erasure). The DBA's functions: memori_grant() does not give them to tenants.
//!
//! The export format, one jsonb value per row, in this order:
//! - `{"kind": "memori_export", "format": 1, "user_id": ..., "exported_at": ..., "version": ...}`
//! - one `{"kind": "conversation", ...}` per conversation, its columns by name;
//! - one `{"kind": "memory", ...}` per memory, its columns by name (`importance` for
//!   importance_score), `embedding` (an array of numbers) only when asked for;
//! - one `{"kind": "message", ...}` per chat message (memori_chat), oldest first.

use crate::base::errors::{Code, MemoriError, OrRaise, Result};
use crate::base::gucs;
use crate::base::spi::{prevent_if_read_only, spi};
use crate::providers::embedding::{embed_texts, Target};
use crate::tenancy::as_owner_of;
use pgrx::datum::JsonB;
use pgrx::prelude::*;

/// The ids the lines carry under `key` (a line without one gets a new id).
fn ids_of<'a>(lines: impl IntoIterator<Item = &'a serde_json::Value>, key: &str) -> Vec<String> {
    lines
        .into_iter()
        .filter_map(|l| l.get(key).and_then(|v| v.as_str()).map(str::to_string))
        .collect()
}

fn required_user(user_id: Option<&str>) -> Result<String> {
    match user_id.map(str::trim) {
        Some(u) if !u.is_empty() => Ok(u.to_string()),
        Some(_) => Err(MemoriError::invalid("user_id must not be empty")),
        None => Err(MemoriError::new(
            Code::NullValueNotAllowed,
            "user_id must not be NULL",
        )),
    }
}

/// Which memory records keep their exported embedding: those embedded by `label` (the current
/// model) that carry a usable one: numbers only, not all zero, of a length pgvector can compare
/// (`comparable_length`), of the model's width (`dims`, when known). The others are embedded again, so a damaged export can never store a vector that
/// searches would misread.
pub fn keeps_embedding(record: &serde_json::Value, label: &str, dims: usize) -> bool {
    if record.get("embedding_model").and_then(|m| m.as_str()) != Some(label) {
        return false;
    }
    let Some(values) = record.get("embedding").and_then(|e| e.as_array()) else {
        return false;
    };
    let numbers: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
    numbers.len() == values.len()
        && !numbers.is_empty()
        && numbers.len() <= crate::base::vector::MAX_DIMS
        && (dims == 0 || numbers.len() == dims)
        && numbers
            .iter()
            .all(|x| x.is_finite() && x.abs() <= f32::MAX as f64)
        && numbers.iter().any(|x| *x != 0.0)
        && crate::providers::comparable_length(
            &numbers.iter().map(|x| *x as f32).collect::<Vec<_>>(),
        )
}

/// Sorts import records by kind, refusing anything else.
pub fn split(
    lines: &[serde_json::Value],
) -> std::result::Result<
    (
        Option<String>,
        Vec<serde_json::Value>,
        Vec<serde_json::Value>,
        Vec<serde_json::Value>,
    ),
    String,
> {
    let (mut user, mut conversations, mut memories, mut messages) =
        (None, Vec::new(), Vec::new(), Vec::new());
    for (n, line) in lines.iter().enumerate() {
        match line.get("kind").and_then(|k| k.as_str()) {
            Some("memori_export") => {
                if line.get("format").and_then(|f| f.as_i64()) != Some(1) {
                    return Err(format!(
                        "line {}: export format {} is not 1",
                        n + 1,
                        line.get("format").unwrap_or(&serde_json::Value::Null)
                    ));
                }
                user = line
                    .get("user_id")
                    .and_then(|u| u.as_str())
                    .map(String::from);
            }
            Some("conversation") => conversations.push(line.clone()),
            Some("memory") => {
                if !line.get("content").is_some_and(|c| c.is_string()) {
                    return Err(format!("line {}: a memory without content", n + 1));
                }
                memories.push(line.clone())
            }
            Some("message") => {
                let role = line.get("role").and_then(|r| r.as_str());
                if !matches!(role, Some("user" | "assistant"))
                    || !line.get("content").is_some_and(|c| c.is_string())
                {
                    return Err(format!(
                        "line {}: a message needs role user or assistant and content",
                        n + 1
                    ));
                }
                messages.push(line.clone())
            }
            _ => {
                return Err(format!(
                    "line {}: not a memori export record (no known \"kind\")",
                    n + 1
                ))
            }
        }
    }
    Ok((user, conversations, memories, messages))
}

/// Loads an export (the rows memori_export() returned) for `user_id` (default: the user named in
/// the export). Keeps ids, timestamps, counters and metadata; memories embedded by another
/// model than the current one, or exported without embeddings, are embedded again. All or
/// nothing: an id that exists already, a bad value or a failed embedding writes nothing.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_import(
    lines: Option<Vec<Option<JsonB>>>,
    user_id: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(conversations, i64),
        name!(memories, i64),
        name!(reembedded, i64),
    ),
> {
    prevent_if_read_only(c"memori_import()");
    let lines: Vec<serde_json::Value> = lines
        .ok_or_else(|| MemoriError::new(Code::NullValueNotAllowed, "lines must not be NULL"))
        .or_raise()
        .into_iter()
        .flatten()
        .map(|j| j.0)
        .collect();
    let (exported_user, conversations, memories, messages) = split(&lines)
        .map_err(|e| MemoriError::invalid(format!("cannot import: {e}")))
        .or_raise();
    let user = required_user(user_id.or(exported_user.as_deref()))
        .map_err(|e| e.hint("Name the user: memori_import(lines, user_id => '...'), or import a whole export (its first line names the user)."))
        .or_raise();
    let target = Target::current();
    let label = target.label();
    let todo: Vec<&str> = memories
        .iter()
        .filter(|m| !keeps_embedding(m, &label, target.dims))
        .map(|m| {
            m.get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let fresh = if todo.is_empty() {
        Vec::new()
    } else {
        embed_texts(None, &todo).or_raise().1.vectors
    };
    let mut fresh = fresh.into_iter();
    // Each memory's embedding as pgvector text: the exported one, or the new one.
    let vectors: Vec<String> = memories
        .iter()
        .map(|m| {
            if keeps_embedding(m, &label, target.dims) {
                m["embedding"].to_string()
            } else {
                let v = fresh.next().expect("one embedding per re-embedded memory");
                format!(
                    "[{}]",
                    v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")
                )
            }
        })
        .collect();
    let with_text = crate::base::catalog::has_text_search().or_raise();
    let tsv = if with_text {
        crate::base::text::document_sql(
            "(r OPERATOR(pg_catalog.->>) 'content'::pg_catalog.text)",
            "$5::pg_catalog.text::pg_catalog.regconfig",
        )
    } else {
        "''::pg_catalog.tsvector".to_string()
    };
    // Facts over time and chat messages (0.4.0): a database not yet updated has neither.
    let with_validity = crate::base::catalog::has_validity().or_raise();
    let (validity_cols, validity_vals) = if with_validity {
        (
            ", valid_to, superseded_by",
            ",
                      (r OPERATOR(pg_catalog.->>) 'valid_to'::pg_catalog.text)::pg_catalog.timestamptz,
                      (r OPERATOR(pg_catalog.->>) 'superseded_by'::pg_catalog.text)::pg_catalog.uuid",
        )
    } else {
        ("", "")
    };
    // Event time (0.5.0): likewise.
    let (event_col, event_val) = if crate::base::catalog::has_event_time().or_raise() {
        (
            ", event_at",
            ",
                      (r OPERATOR(pg_catalog.->>) 'event_at'::pg_catalog.text)::pg_catalog.timestamptz",
        )
    } else {
        ("", "")
    };
    let validity_cols = format!("{validity_cols}{event_col}");
    let validity_vals = format!("{validity_vals}{event_val}");
    let counts = as_owner_of(c"memori_memories", || {
        // Ids are unique per user in the tables (so that they can be distributed by user); an
        // import keeps them unique across users too: an id that exists here already, for any
        // user, refuses the import.
        // Each table probed by its id index with the ids as one array (on Citus, a query over
        // every shard, which a correlated subquery per line could not be).
        let taken = crate::base::spi::read_one::<String>(
            "SELECT coalesce(
                 (SELECT 'conversation '::pg_catalog.text OPERATOR(pg_catalog.||) c.conversation_id::pg_catalog.text
                    FROM memori_conversations c
                   WHERE c.conversation_id = ANY ($1::pg_catalog.text[]::pg_catalog.uuid[]) LIMIT 1),
                 (SELECT 'memory '::pg_catalog.text OPERATOR(pg_catalog.||) m.memory_id::pg_catalog.text
                    FROM memori_memories m
                   WHERE m.memory_id = ANY ($2::pg_catalog.text[]::pg_catalog.uuid[]) LIMIT 1))",
            &[
                ids_of(&conversations, "conversation_id").into(),
                ids_of(&memories, "memory_id").into(),
            ],
        )?;
        if let Some(what) = taken {
            return Err(MemoriError::new(
                Code::UniqueViolation,
                format!("cannot import: {what} exists already in this database"),
            )
            .hint("Import into another database, erase the user first, or drop the ids from the lines to get new ones."));
        }
        let conversations_in = Spi::get_one_with_args::<i64>(
            "WITH ins AS (
               INSERT INTO memori_conversations (conversation_id, user_id, data_source_id, title, metadata,
                                                 is_active, created_at, updated_at, last_activity_at)
               SELECT coalesce((r OPERATOR(pg_catalog.->>) 'conversation_id'::pg_catalog.text)::pg_catalog.uuid, gen_random_uuid()), $2::pg_catalog.text,
                      (r OPERATOR(pg_catalog.->>) 'data_source_id'::pg_catalog.text)::bigint,
                      r OPERATOR(pg_catalog.->>) 'title'::pg_catalog.text,
                      coalesce(r OPERATOR(pg_catalog.->) 'metadata'::pg_catalog.text, '{}'::pg_catalog.jsonb),
                      coalesce((r OPERATOR(pg_catalog.->>) 'is_active'::pg_catalog.text)::boolean, true),
                      coalesce((r OPERATOR(pg_catalog.->>) 'created_at'::pg_catalog.text)::pg_catalog.timestamptz, now()),
                      coalesce((r OPERATOR(pg_catalog.->>) 'updated_at'::pg_catalog.text)::pg_catalog.timestamptz, now()),
                      coalesce((r OPERATOR(pg_catalog.->>) 'last_activity_at'::pg_catalog.text)::pg_catalog.timestamptz, now())
                 FROM pg_catalog.unnest($1::pg_catalog.jsonb[]) AS r
               RETURNING 1)
             SELECT count(*) FROM ins",
            &[
                conversations.iter().map(|c| JsonB(c.clone())).collect::<Vec<_>>().into(),
                user.clone().into(),
            ],
        )
        .map_err(spi)?
        .unwrap_or(0);
        // A memory or message may only join a conversation of the same user (memori_store
        // checks the same): an export naming another user's conversation is refused.
        let foreign = crate::base::spi::read_one::<String>(
            "SELECT c.conversation_id::pg_catalog.text FROM memori_conversations c
              WHERE c.conversation_id = ANY ($1::pg_catalog.text[]::pg_catalog.uuid[])
                AND c.user_id::pg_catalog.text <> $2::pg_catalog.text
              LIMIT 1",
            &[
                ids_of(memories.iter().chain(&messages), "conversation_id").into(),
                user.clone().into(),
            ],
        )?;
        if let Some(conversation) = foreign {
            return Err(MemoriError::new(
                Code::ForeignKeyViolation,
                format!("cannot import: conversation {conversation} belongs to another user than \"{user}\""),
            )
            .hint("Import the conversation with the memories, or drop conversation_id from the lines."));
        }
        let text_array = |key: &str| {
            format!(
                "coalesce(ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r OPERATOR(pg_catalog.->) '{key}'::pg_catalog.text)), '{{}}'::pg_catalog.text[])"
            )
        };
        let memories_in = Spi::get_one_with_args::<i64>(
            &format!(
                "WITH ins AS (
               INSERT INTO memori_memories (memory_id, conversation_id, user_id, content, memory_type,
                                            embedding, embedding_model, importance_score, access_count,
                                            last_accessed_at, context_tags, related_entities, metadata,
                                            expires_at, is_archived, created_at, updated_at, content_tsv{validity_cols})
               SELECT coalesce((r OPERATOR(pg_catalog.->>) 'memory_id'::pg_catalog.text)::pg_catalog.uuid, gen_random_uuid()),
                      (r OPERATOR(pg_catalog.->>) 'conversation_id'::pg_catalog.text)::pg_catalog.uuid, $2::pg_catalog.text,
                      r OPERATOR(pg_catalog.->>) 'content'::pg_catalog.text,
                      coalesce(r OPERATOR(pg_catalog.->>) 'memory_type'::pg_catalog.text, 'long_term'::pg_catalog.text),
                      v::vector, $4::pg_catalog.text,
                      coalesce((r OPERATOR(pg_catalog.->>) 'importance'::pg_catalog.text)::real, 0.5::real),
                      coalesce((r OPERATOR(pg_catalog.->>) 'access_count'::pg_catalog.text)::integer, 0),
                      (r OPERATOR(pg_catalog.->>) 'last_accessed_at'::pg_catalog.text)::pg_catalog.timestamptz,
                      {tags}, {entities},
                      coalesce(r OPERATOR(pg_catalog.->) 'metadata'::pg_catalog.text, '{{}}'::pg_catalog.jsonb),
                      (r OPERATOR(pg_catalog.->>) 'expires_at'::pg_catalog.text)::pg_catalog.timestamptz,
                      coalesce((r OPERATOR(pg_catalog.->>) 'is_archived'::pg_catalog.text)::boolean, false),
                      coalesce((r OPERATOR(pg_catalog.->>) 'created_at'::pg_catalog.text)::pg_catalog.timestamptz, now()),
                      coalesce((r OPERATOR(pg_catalog.->>) 'updated_at'::pg_catalog.text)::pg_catalog.timestamptz, now()),
                      {tsv}{validity_vals}
                 FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.jsonb[]), pg_catalog.unnest($3::pg_catalog.text[])) AS x(r, v)
               RETURNING 1)
             SELECT count(*) FROM ins",
                tags = text_array("context_tags"),
                entities = text_array("related_entities"),
            ),
            &[
                memories.iter().map(|m| JsonB(m.clone())).collect::<Vec<_>>().into(),
                user.clone().into(),
                vectors.into(),
                label.clone().into(),
                gucs::text_search_config().into(),
            ],
        )
        .map_err(spi)?
        .unwrap_or(0);
        if with_validity && !messages.is_empty() {
            Spi::run_with_args(
                "INSERT INTO memori_messages (conversation_id, user_id, role, content, model, created_at)
                 SELECT (r OPERATOR(pg_catalog.->>) 'conversation_id'::pg_catalog.text)::pg_catalog.uuid, $2::pg_catalog.text,
                        r OPERATOR(pg_catalog.->>) 'role'::pg_catalog.text, r OPERATOR(pg_catalog.->>) 'content'::pg_catalog.text,
                        r OPERATOR(pg_catalog.->>) 'model'::pg_catalog.text,
                        coalesce((r OPERATOR(pg_catalog.->>) 'created_at'::pg_catalog.text)::pg_catalog.timestamptz, now())
                   FROM pg_catalog.unnest($1::pg_catalog.jsonb[]) WITH ORDINALITY AS u(r, n)
                  ORDER BY u.n",
                &[
                    messages.iter().map(|m| JsonB(m.clone())).collect::<Vec<_>>().into(),
                    user.clone().into(),
                ],
            )
            .map_err(spi)?;
        }
        Ok((conversations_in, memories_in))
    })
    .or_raise();
    TableIterator::once((counts.0, counts.1, todo.len() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_are_sorted_by_kind_and_strangers_refused() {
        let lines = vec![
            json!({"kind": "memori_export", "format": 1, "user_id": "alice"}),
            json!({"kind": "conversation", "conversation_id": "x"}),
            json!({"kind": "memory", "content": "a"}),
            json!({"kind": "memory", "content": "b"}),
        ];
        let (user, c, m, _) = split(&lines).unwrap();
        assert_eq!((user.as_deref(), c.len(), m.len()), (Some("alice"), 1, 2));
        let (_, _, _, x) =
            split(&[json!({"kind": "message", "role": "user", "content": "hi"})]).unwrap();
        assert_eq!(x.len(), 1);
        assert!(
            split(&[json!({"kind": "message", "role": "system", "content": "hi"})])
                .unwrap_err()
                .contains("role user or assistant")
        );
        assert!(split(&[json!({"kind": "memori_export", "format": 2})])
            .unwrap_err()
            .contains("format 2"));
        assert!(split(&[json!({"content": "a"})])
            .unwrap_err()
            .starts_with("line 1: not a memori export"));
        assert!(split(&[json!({"kind": "memory"})])
            .unwrap_err()
            .contains("without content"));
    }

    #[test]
    fn an_embedding_is_kept_only_from_the_current_model_and_only_if_usable() {
        let local = "local/all-MiniLM-L6-v2";
        let m = json!({"embedding_model": local, "embedding": [0.1, 0.2]});
        assert!(keeps_embedding(&m, local, 2));
        assert!(keeps_embedding(&m, local, 0), "width unknown before asking");
        assert!(!keeps_embedding(&m, local, 384), "wrong width");
        assert!(!keeps_embedding(&m, "openai/text-embedding-3-small", 2));
        assert!(!keeps_embedding(
            &json!({"embedding_model": local}),
            local,
            2
        ));
        assert!(!keeps_embedding(
            &json!({"embedding_model": local, "embedding": [0.0, 0.0]}),
            local,
            2
        ));
        assert!(!keeps_embedding(
            &json!({"embedding_model": local, "embedding": [0.1, "x"]}),
            local,
            2
        ));
        assert!(!keeps_embedding(
            &json!({"embedding_model": local, "embedding": [1e-23, 1e-23]}),
            local,
            2
        ));
        assert!(!keeps_embedding(
            &json!({"embedding_model": local, "embedding": [1e300, 0.1]}),
            local,
            2
        ));
        assert!(!keeps_embedding(
            &json!({"embedding_model": local, "embedding": []}),
            local,
            0
        ));
    }
}
