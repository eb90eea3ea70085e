//! memori_search: the seed's `retrieve_relevant_memories`, as one SQL function.
//!
//! Candidates come from the per-width HNSW index (or, for a small scope, the user index and an
//! exact sort: the planner chooses), with pgvector's iterative index scans switched on for this
//! query only, so a filter that keeps few rows still yields k of them. Candidates are re-ranked
//! by score (similarity blended with importance and recency), and each returned memory's access
//! is counted in one UPDATE unless the transaction is read-only.

use crate::embedding::{embed_texts, Target};
use crate::errors::{spi, MemoriError, OrRaise, Result};
use crate::gucs;
use crate::memories::check_type;
use crate::user;
use crate::vector::indexed_cast;
use pgrx::datum::{JsonB, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;

/// Largest k a search takes.
pub const MAX_K: i32 = 1000;

pub struct Query {
    pub user: String,
    pub k: i32,
    pub conversation_id: Option<Uuid>,
    pub memory_types: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub min_similarity: Option<f64>,
    pub include_archived: bool,
}

/// How many nearest candidates are re-ranked by score for k results.
pub fn pool(k: i32) -> i32 {
    (k * 4).clamp(40, 4 * MAX_K)
}

/// The SQL a search runs, for embeddings of `dims` dimensions made by `model`. Parameters:
/// $1 user, $2 query vector (real[]), $3 model label, $4 conversation, $5 types, $6 tags,
/// $7 min similarity, $8 k, $9 importance weight, $10 recency weight, $11 half-life (days).
pub fn sql(q: &Query, dims: usize) -> String {
    let cast = indexed_cast(dims);
    let mut filters = vec![
        "m.user_id::text = $1::text".to_string(),
        "m.embedding_model = $3::text".to_string(),
        format!("m.embedding_dims = {dims}"),
        "(m.expires_at IS NULL OR m.expires_at > now())".to_string(),
    ];
    if q.conversation_id.is_some() {
        filters.push("m.conversation_id = $4".into());
    }
    if q.memory_types.is_some() {
        filters.push("m.memory_type::text = ANY ($5::text[])".into());
    }
    if q.tags.is_some() {
        filters.push("m.context_tags OPERATOR(pg_catalog.&&) $6::text[]".into());
    }
    if !q.include_archived {
        filters.push("NOT m.is_archived".into());
    }
    let pool = pool(q.k);
    format!(
        "WITH candidates AS MATERIALIZED (
            SELECT m.id, m.memory_id, m.content, m.memory_type::text AS memory_type,
                   m.importance_score, m.context_tags, m.metadata, m.conversation_id, m.created_at,
                   1::float8 - (m.embedding::{cast} <=> $2::real[]::{cast}) AS similarity,
                   -- 0.5 ^ (age / half-life), as exp(), clamped: never an underflow error,
                   -- whatever the age (also for timestamps at -infinity).
                   CASE WHEN $10::float8 > 0
                        THEN pg_catalog.exp(least(0::float8, greatest(-700::float8,
                               (pg_catalog.date_part('epoch'::text, m.updated_at)
                                - pg_catalog.date_part('epoch'::text, now()))
                               * pg_catalog.ln(2::float8) / (86400::float8 * $11::float8))))
                        ELSE 0::float8 END AS recency
              FROM memori_memories m
             WHERE {filters}
             ORDER BY m.embedding::{cast} <=> $2::real[]::{cast}
             LIMIT {pool})
         SELECT id, memory_id, content, memory_type, similarity,
                similarity * (1::float8 - $9::float8 - $10::float8) + $9::float8 * importance_score::float8
                  + $10::float8 * recency AS score,
                importance_score, context_tags, metadata, conversation_id, created_at
           FROM candidates
          WHERE $7::float8 IS NULL OR similarity >= $7
          ORDER BY score DESC, similarity DESC, id
          LIMIT $8",
        filters = filters.join("\n               AND ")
    )
}

pub fn args(q: &Query, target: &Target, vector: &[f32]) -> Vec<pgrx::datum::DatumWithOid<'static>> {
    let (wi, wr) = gucs::score_weights();
    vec![
        q.user.clone().into(),
        vector.to_vec().into(),
        target.label().into(),
        q.conversation_id.into(),
        q.memory_types.clone().into(),
        q.tags.clone().into(),
        q.min_similarity.into(),
        (q.k as i64).into(),
        wi.into(),
        wr.into(),
        gucs::recency_half_life_days().into(),
    ]
}

pub type Row = (
    Uuid,
    String,
    String,
    f64,
    f64,
    f32,
    Vec<String>,
    JsonB,
    Option<Uuid>,
    TimestampWithTimeZone,
);

/// Sets a setting for the rest of the current GUC nest level (as a function's SET clause does).
fn set_for_query(name: &std::ffi::CStr, value: &str) {
    let value = std::ffi::CString::new(value).expect("no NUL in a number");
    // SAFETY: set_config_option with GUC_ACTION_SAVE inside a nest level opened by the caller;
    // AtEOXact_GUC restores the previous value when that level closes.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
}

/// Runs a search: embed the query, find and rank. Returns (id, row) pairs; the caller counts
/// the accesses it uses (`track_access`).
pub fn find(q: &Query, query_text: &str) -> Result<Vec<(i64, Row)>> {
    let (target, batch) = embed_texts(&[query_text])?;
    let dims = batch.width;
    let sql = sql(q, dims);
    let args = args(q, &target, &batch.vectors[0]);
    // SAFETY: opens a GUC nest level that is closed below (or by transaction abort on error).
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    set_for_query(c"hnsw.iterative_scan", "relaxed_order");
    set_for_query(c"hnsw.ef_search", &pool(q.k).clamp(40, 1000).to_string());
    let rows: Result<Vec<(i64, Row)>> = Spi::connect(|client| {
        let mut out = Vec::new();
        for r in client.select(&sql, None, &args)? {
            out.push((
                r.get::<i64>(1)?.unwrap_or_default(),
                (
                    r.get::<Uuid>(2)?.expect("memory_id is NOT NULL"),
                    r.get::<String>(3)?.unwrap_or_default(),
                    r.get::<String>(4)?.unwrap_or_default(),
                    r.get::<f64>(5)?.unwrap_or_default(),
                    r.get::<f64>(6)?.unwrap_or_default(),
                    r.get::<f32>(7)?.unwrap_or_default(),
                    crate::graph::without_nulls(r.get::<Vec<Option<String>>>(8)?),
                    r.get::<JsonB>(9)?.unwrap_or(JsonB(serde_json::json!({}))),
                    r.get::<Uuid>(10)?,
                    r.get::<TimestampWithTimeZone>(11)?
                        .expect("created_at is NOT NULL"),
                ),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(spi);
    // SAFETY: closes the nest level opened above, restoring hnsw.* settings.
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    rows
}

/// Counts one access for each memory, in one statement; a short_term memory reaching
/// memori.promote_after_accesses becomes long_term and loses its expiry. Best effort, so a read
/// never waits or fails because of it: rows another transaction holds are skipped, and nothing
/// is counted in a read-only transaction, on a hot standby, or under REPEATABLE READ or
/// SERIALIZABLE (where a row changed by a concurrent search would raise 40001).
pub fn track_access(ids: &[i64]) -> Result<()> {
    // SAFETY: plain reads of backend state.
    let skip = unsafe {
        pg_sys::XactReadOnly
            || pg_sys::RecoveryInProgress()
            || pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32
    };
    if ids.is_empty() || skip {
        return Ok(());
    }
    crate::user::as_owner_of(c"memori_memories", || {
        Spi::run_with_args(
        "WITH free AS (SELECT id FROM memori_memories WHERE id = ANY($1) FOR UPDATE SKIP LOCKED)
         UPDATE memori_memories m SET access_count = access_count + 1, last_accessed_at = now(),
                memory_type = CASE WHEN memory_type::text = 'short_term'::text AND access_count + 1 >= $2
                                   THEN 'long_term' ELSE memory_type END,
                expires_at = CASE WHEN memory_type::text = 'short_term'::text AND access_count + 1 >= $2
                                  THEN NULL ELSE expires_at END
           FROM free WHERE m.id = free.id",
        &[ids.to_vec().into(), gucs::promote_after_accesses().into()],
    )
    .map_err(spi)
    })
}

fn clean_list(v: Option<Vec<Option<String>>>) -> Option<Vec<String>> {
    v.map(|v| {
        v.into_iter()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

pub fn query(
    k: Option<i32>,
    conversation_id: Option<Uuid>,
    memory_types: Option<Vec<Option<String>>>,
    tags: Option<Vec<Option<String>>>,
    min_similarity: Option<f32>,
    include_archived: Option<bool>,
    user_id: Option<&str>,
) -> Result<Query> {
    let k = k.unwrap_or(10);
    if !(1..=MAX_K).contains(&k) {
        return Err(MemoriError::invalid(format!(
            "memori: k must be between 1 and {MAX_K}, not {k}"
        )));
    }
    let memory_types = clean_list(memory_types);
    for t in memory_types.iter().flatten() {
        check_type(t)?;
    }
    if let Some(m) = min_similarity {
        if !(-1.0..=1.0).contains(&m) {
            return Err(MemoriError::invalid(format!(
                "memori: min_similarity must be between -1 and 1, not {m}"
            )));
        }
    }
    Ok(Query {
        user: user::resolve(user_id)?,
        k,
        conversation_id,
        memory_types,
        tags: clean_list(tags),
        min_similarity: min_similarity.map(|m| m as f64),
        include_archived: include_archived.unwrap_or(false),
    })
}

/// The current memori user's memories most relevant to `query`, best first.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_search(
    query: Option<&str>,
    k: default!(Option<i32>, "10"),
    conversation_id: default!(Option<Uuid>, "NULL"),
    memory_types: default!(Option<Vec<Option<String>>>, "NULL"),
    tags: default!(Option<Vec<Option<String>>>, "NULL"),
    min_similarity: default!(Option<f32>, "NULL"),
    include_archived: default!(Option<bool>, "false"),
    user_id: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(memory_id, Uuid),
        name!(content, String),
        name!(memory_type, String),
        name!(similarity, f64),
        name!(score, f64),
        name!(importance, f32),
        name!(context_tags, Vec<String>),
        name!(metadata, JsonB),
        name!(conversation_id, Option<Uuid>),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    crate::memories::check_content(query, "query").or_raise();
    let q = self::query(
        k,
        conversation_id,
        memory_types,
        tags,
        min_similarity,
        include_archived,
        user_id,
    )
    .or_raise();
    let rows = find(&q, query.unwrap()).or_raise();
    track_access(&rows.iter().map(|r| r.0).collect::<Vec<_>>()).or_raise();
    TableIterator::new(rows.into_iter().map(|r| r.1))
}
