//! memori_search: the seed's `retrieve_relevant_memories`, as one SQL function.
//!
//! Two rankings, fused:
//! - vector: the memories nearest to the query's embedding. A user with up to
//!   memori.exact_search_rows memories is searched exactly (every memory compared); a larger
//!   one through the per-width HNSW index with pgvector's iterative scan, and when that pass
//!   comes back short (its scan limit reached, e.g. other users' rows crowd the neighbourhood)
//!   an exact pass replaces it. Either way min(k, matching) rows come back.
//! - text: full-text search over `content_tsv` (see `text`), scored BM25-style within the scope.
//!
//! Over a scope searched exactly, one read of the scope gives both rankings, and only the k
//! best rows are then read whole (`vector_exact`, `hybrid_exact`); over a larger one, the two
//! rankings run apart (`find_apart`). Either way `rank` ranks.
//!
//! Hybrid mode adds the weighted text score to the similarity (see `relevance`); the fused
//! relevance is blended with importance and recency into the score. Each returned memory's
//! access is counted in one UPDATE unless the transaction is read-only.

use crate::base::catalog;
use crate::base::errors::{MemoriError, OrRaise, Result};
use crate::base::gucs::{self, AccessCounting, SearchMode};
use crate::base::memory::{self, MemoryType};
use crate::base::spi::{select_kept, spi, Planning};
use crate::base::vector::{indexed_cast, query_vector};
use crate::providers::embedding::embed_texts;
use crate::tenancy;
use pgrx::datum::{JsonB, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;

/// Largest k a search takes.
pub const MAX_K: i32 = 1000;

#[derive(Clone)]
pub struct Query {
    pub user: String,
    pub k: i32,
    pub conversation_id: Option<Uuid>,
    pub memory_types: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub min_similarity: Option<f64>,
    pub include_archived: bool,
    pub mode: SearchMode,
    /// Answer as of this moment: memories stored by then and not yet superseded or expired
    /// then. None: the memories valid now.
    pub as_of: Option<TimestampWithTimeZone>,
    /// Only memories whose event time (event_at, or created_at without one) is within
    /// [event_from, event_to).
    pub event_from: Option<TimestampWithTimeZone>,
    pub event_to: Option<TimestampWithTimeZone>,
}

/// How many nearest candidates are re-ranked by score for k results.
pub fn pool(k: i32) -> i32 {
    (k * 4).clamp(40, 4 * MAX_K)
}

/// Text mode's reciprocal rank constant: a text rank r counts (K+1)/(K+r), so first counts 1.
pub const RRF_K: f64 = 60.0;

/// Hybrid mode's weight of the text score: relevance = similarity + TEXT_WEIGHT x text score
/// (a convex combination of the two raw scores, 2/3 and 1/3, on the similarity's scale).
pub const TEXT_WEIGHT: f64 = 0.5;

/// Where the vector candidates came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Every memory in scope compared with the query (the scope is small).
    Exact,
    /// The HNSW index, iterative scan.
    Index,
    /// The index pass came back short, so an exact pass replaced it.
    IndexThenExact,
    /// No vector ranking (text mode).
    None,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Exact => "exact",
            Path::Index => "index",
            Path::IndexThenExact => "index+exact",
            Path::None => "none",
        }
    }
}

/// The filters every candidate query shares: $1 user, $2 conversation, $3 types, $4 tags, $6
/// and $7 the event time's bounds (the event time, or the time stored without one), $5
/// as_of. Superseded memories (valid_to) are left out, or as of a moment those superseded by
/// then; a database not yet updated to 0.4.0 has no valid_to.
fn scope_filters(q: &Query) -> String {
    let at = match q.as_of {
        Some(_) => memory::At::Moment("$5::pg_catalog.timestamptz"),
        None => memory::At::Now,
    };
    // Archiving is about today's use, not about what held then: as_of ignores it.
    let archived = if q.include_archived || q.as_of.is_some() {
        memory::Archived::Included
    } else {
        memory::Archived::Excluded
    };
    let mut filters = vec![
        "m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text".to_string(),
        memory::live("m.", at, catalog::has_validity().unwrap_or(false), archived),
    ];
    if q.conversation_id.is_some() {
        filters.push("m.conversation_id = $2::pg_catalog.uuid".into());
    }
    if q.memory_types.is_some() {
        filters.push("m.memory_type::pg_catalog.text = ANY ($3::pg_catalog.text[])".into());
    }
    if q.tags.is_some() {
        filters.push("m.context_tags OPERATOR(pg_catalog.&&) $4::pg_catalog.text[]".into());
    }
    if q.event_from.is_some() {
        filters.push("coalesce(m.event_at, m.created_at) >= $6::pg_catalog.timestamptz".into());
    }
    if q.event_to.is_some() {
        filters.push("coalesce(m.event_at, m.created_at) < $7::pg_catalog.timestamptz".into());
    }
    filters.join("\n               AND ")
}

pub fn scope_args(q: &Query) -> Vec<pgrx::datum::DatumWithOid<'static>> {
    vec![
        q.user.clone().into(),
        q.conversation_id.into(),
        q.memory_types.clone().into(),
        q.tags.clone().into(),
        q.as_of.into(),
        q.event_from.into(),
        q.event_to.into(),
    ]
}

/// The SQL of the vector candidates for embeddings of `dims` dimensions, whole rows (the
/// columns `found_of` reads): $8 model label, $9 query vector (real[]), $10 limit, $11 and $12
/// the recency weight and half-life. `exact` orders by an expression no index provides, so every
/// row in scope is compared; otherwise the planner may take the HNSW index (iterative scan).
pub fn vector_sql(q: &Query, dims: usize, exact: bool) -> Result<String> {
    let (cast, q_vector) = (indexed_cast(dims), query_vector(9, dims));
    let order = if exact {
        "similarity DESC, m.id".to_string()
    } else {
        format!("m.embedding::{cast} <=> {q_vector}")
    };
    // The ranking reads only the embeddings; the `limit` rows it keeps are then read whole
    // where it found them, in the same statement.
    let (loc, join) = read_back("c")?;
    Ok(format!(
        "SELECT {columns}
           FROM (SELECT m.id, {loc}, 1::pg_catalog.float8 - (m.embedding::{cast} <=> {q_vector}) AS similarity
                   FROM memori_memories m
                  WHERE {filters}
                    AND m.embedding_model = $8::pg_catalog.text AND m.embedding_dims = {dims}
                  ORDER BY {order}
                  LIMIT $10) c
           JOIN memori_memories m ON {join}",
        columns = row_columns("c.similarity", Some((11, 12)))?,
        filters = scope_filters(q)
    ))
}

/// How a statement reads again, whole, the rows its ranking kept (in relation `c`, of user
/// $1): the column to keep (`m.ctid AS loc`) and the join condition. By row position, a TID
/// scan: in the same statement and snapshot, the version the ranking read (a primary key
/// lookup per row cost about 10% of a 100-memory user's vector statement: 0.19 against 0.17 ms
/// with pgbench, the statement alone). `ctid = ...` is leakproof, so row-level security lets
/// it through to the TID scan (`make bench` under RLS: no search reads a user's rows twice).
/// On Citus, by key: a shard's row positions mean nothing to the coordinator's plan.
fn read_back(c: &str) -> Result<(&'static str, String)> {
    Ok(if catalog::distributed()? {
        (
            "m.id AS loc",
            format!("m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND m.id OPERATOR(pg_catalog.=) {c}.loc"),
        )
    } else {
        (
            "m.ctid AS loc",
            format!("m.ctid OPERATOR(pg_catalog.=) {c}.loc AND m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text"),
        )
    })
}

/// The columns a search reads of each memory, in `found_of`'s order: `similarity` the SQL of its
/// similarity to the query; `recency` the parameters of the recency weight and half-life
/// (days), `$wr` and `$half_life`, or none for rows already ranked (recency 0).
fn row_columns(similarity: &str, recency: Option<(usize, usize)>) -> Result<String> {
    // A database not yet updated to 0.5.0 has no event_at.
    let event_at = if catalog::has_event_time()? {
        "m.event_at"
    } else {
        "NULL::pg_catalog.timestamptz"
    };
    Ok(format!(
        "m.id, m.memory_id, m.content, m.memory_type::pg_catalog.text, {similarity} AS similarity,
                m.importance_score, m.context_tags, m.metadata, m.conversation_id, m.created_at,
                {recency} AS recency,
                {event_at} AS event_at",
        recency = recency.map_or("0::pg_catalog.float8".to_string(), |(wr, half_life)| {
            recency_sql("m.updated_at", wr, half_life)
        })
    ))
}

/// The SQL of a memory's recency, 0.5 ^ (age / half-life), from `updated_at` (the SQL of its
/// last update), `$wr` the recency weight (0: no recency, 0) and `$half_life` (days). Its twin
/// in Rust is `recency`.
fn recency_sql(updated_at: &str, wr: usize, half_life: usize) -> String {
    // As exp(), clamped: never an underflow error, whatever the age (also for timestamps at
    // -infinity).
    format!(
        "CASE WHEN ${wr}::pg_catalog.float8 > 0::pg_catalog.float8
                     THEN pg_catalog.exp(least(0::pg_catalog.float8, greatest(-700::pg_catalog.float8,
                            (pg_catalog.date_part('epoch'::pg_catalog.text, {updated_at})
                             - pg_catalog.date_part('epoch'::pg_catalog.text, now()))
                            * pg_catalog.ln(2::pg_catalog.float8) / (86400::pg_catalog.float8 * ${half_life}::pg_catalog.float8))))
                     ELSE 0::pg_catalog.float8 END"
    )
}

/// `date_part('epoch', ts)` of a timestamptz (microseconds since 2000-01-01), computed as
/// PostgreSQL computes it: seconds since 1970 as a float8, infinite for an infinite timestamp.
fn epoch_seconds(ts: i64) -> f64 {
    // SetEpochTimestamp(): 1970-01-01 in microseconds since 2000-01-01.
    const EPOCH: i64 = -946_684_800_000_000;
    match ts {
        i64::MAX => f64::INFINITY,
        i64::MIN => f64::NEG_INFINITY,
        // PostgreSQL's two cases, the second against an overflow of the subtraction.
        _ if ts < i64::MAX + EPOCH => (ts - EPOCH) as f64 / 1_000_000.0,
        _ => (ts as f64 - EPOCH as f64) / 1_000_000.0,
    }
}

/// A memory's recency as `recency_sql` computes it, the same operations in the same order (so
/// the same value to the last bit): `updated_at` and `now` timestamptz values (`Fixed`),
/// `weight` the recency weight (0: no recency, 0), `half_life` in days. Computed here for a
/// scope read whole: in SQL, for each row of the scan, it took 0.05 ms of a 100-memory user's
/// 0.34 ms scan (pgbench, the statement alone), mostly `date_part`'s.
pub fn recency(updated_at: i64, now: i64, weight: f64, half_life: f64) -> f64 {
    if weight.is_nan() || weight <= 0.0 {
        return 0.0;
    }
    let x = (epoch_seconds(updated_at) - epoch_seconds(now)) * std::f64::consts::LN_2
        / (86400.0 * half_life);
    // greatest(-700, x), then least(0, ...), with float8's order (NaN above all).
    let x = if float8_cmp(x, -700.0).is_lt() {
        -700.0
    } else {
        x
    };
    let x = if float8_cmp(x, 0.0).is_gt() { 0.0 } else { x };
    x.exp()
}

/// A memory as `row_columns` reads it, unranked.
fn found_of(r: pgrx::spi::SpiHeapTupleData) -> std::result::Result<Found, pgrx::spi::Error> {
    let id = r.get::<i64>(1)?.unwrap_or_default();
    let importance = r.get::<f32>(6)?.unwrap_or_default();
    Ok(Found {
        ranked: Ranked {
            id,
            vector_rank: None,
            text_rank: None,
            similarity: r.get::<f64>(5)?,
            text_score: None,
            importance: importance as f64,
            recency: r.get::<f64>(11)?.unwrap_or_default(),
            relevance: 0.0,
            score: 0.0,
            loc: None,
        },
        memory_id: r.get::<Uuid>(2)?.expect("memory_id is NOT NULL"),
        content: r.get::<String>(3)?.unwrap_or_default(),
        memory_type: r.get::<String>(4)?.unwrap_or_default(),
        importance,
        tags: crate::memories::graph::without_nulls(r.get::<Vec<Option<String>>>(7)?),
        metadata: r.get::<JsonB>(8)?.unwrap_or(JsonB(serde_json::json!({}))),
        conversation_id: r.get::<Uuid>(9)?,
        created_at: r
            .get::<TimestampWithTimeZone>(10)?
            .expect("created_at is NOT NULL"),
        event_at: r.get::<TimestampWithTimeZone>(12)?,
    })
}

/// The rows `sql` returns (`row_columns`), in its order.
fn rows_of(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
    planning: Planning,
) -> Result<Vec<Found>> {
    Spi::connect(|client| {
        select_kept(client, sql, args, planning)?
            .map(found_of)
            .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi)
}

/// The (id, score) pairs `sql` returns, in its order.
fn id_scores(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
    planning: Planning,
) -> Result<Vec<(i64, f64)>> {
    Spi::connect(|client| {
        select_kept(client, sql, args, planning)?
            .map(|r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    r.get::<f64>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi)
}

/// The arguments of a statement ranking the scope by a query vector (`vector_sql`,
/// `hybrid_exact`): the scope's ($1-$7), then $8 the model's label, $9 the query vector, $10 the
/// limit, $11 and $12 the recency weight and half-life.
fn vector_args(
    q: &Query,
    label: &str,
    vector: &[f32],
    limit: i32,
) -> Vec<pgrx::datum::DatumWithOid<'static>> {
    let (_, wr) = gucs::score_weights();
    let mut a = scope_args(q);
    a.push(label.to_string().into());
    a.push(vector.to_vec().into());
    a.push((limit as i64).into());
    a.push(wr.into());
    a.push(gucs::recency_half_life_days().into());
    a
}

/// Sets a setting for the rest of the current GUC nest level (as a function's SET clause does).
fn set_for_query(name: &std::ffi::CStr, value: &str) {
    let value = std::ffi::CString::new(value).expect("no NUL in a number");
    gucs::set_in_nest_level(name, &value);
}

/// Up to this many memories, a user's search statements run their generic plans (see
/// `Planning::Generic`): planning costs about as much as running there (28% of a 100-memory
/// user's hybrid search, with `perf`), and reading the user's rows through the user index is
/// right whatever the table holds. Above, each run is planned for the user's size (a user
/// holding most of the table is read faster by a sequential scan).
pub const GENERIC_PLAN_ROWS: i64 = 5_000;

fn planning_for(user_rows: i64) -> Planning {
    if user_rows <= GENERIC_PLAN_ROWS {
        Planning::Generic
    } else {
        Planning::ByValues
    }
}

/// The furthest a count of a user's memories goes (`user_rows`).
pub const MAX_COUNTED: i64 = 1_000_000;

/// How many memories the user has, counted up to `most` (an index-only count of the user index:
/// about 1 ms for 20,000), so its cost is bounded by `most` whatever the user's size. It chooses
/// the vector path and, counted up to MAX_COUNTED, is the N of the text score's inverse document
/// frequencies.
pub fn user_rows(user: &str, most: i64) -> Result<i64> {
    Ok(crate::base::spi::read_one_kept::<i64>(
        "SELECT pg_catalog.count(*) FROM (SELECT 1 FROM memori_memories m WHERE m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text LIMIT $2) s",
        &[user.into(), most.into()],
        Planning::Generic,
    )?
    .unwrap_or(0))
}

/// The memories `find` counts of a user before it searches: vector mode only chooses its path
/// with the count (exact up to memori.exact_search_rows, the plan kind below that), so it counts
/// one past the threshold, a bounded index-only scan; text and hybrid modes need the whole count,
/// the N of the text score.
fn rows_to_count(mode: SearchMode) -> i64 {
    match mode {
        SearchMode::Vector => gucs::exact_search_rows().saturating_add(1).min(MAX_COUNTED),
        _ => MAX_COUNTED,
    }
}

/// A search's index pass reads at most this many index entries (hnsw.max_scan_tuples).
pub const SCAN_TUPLES: u32 = 20_000;

/// Runs `f` (a statement ordered by distance to a vector) with the settings of memori's HNSW
/// pass, restored afterwards: an iterative scan in relaxed order (other users' rows do not
/// hide the user's), hnsw.ef_search `ef`, at most `max_scan` index entries (a search's
/// SCAN_TUPLES; the near-duplicate probe's fewer), and sorting off, so that the order comes
/// from the HNSW index and from nothing else (the user index and a sort would be an exact scan
/// under another name, and memori's explain says "index").
pub(crate) fn in_index_pass<T>(ef: i32, max_scan: u32, f: impl FnOnce() -> Result<T>) -> Result<T> {
    // SAFETY: opens a GUC nest level that is closed below (or by transaction abort on error).
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    set_for_query(c"hnsw.iterative_scan", "relaxed_order");
    set_for_query(c"hnsw.ef_search", &ef.to_string());
    // Pinned: a caller's own limit cannot make the index pass give up earlier or later than
    // memori asks (a short pass is completed exactly anyway, which only costs time).
    set_for_query(c"hnsw.max_scan_tuples", &max_scan.to_string());
    set_for_query(c"enable_sort", "off");
    // A plan that must sort anyway (no index for the width) costs 10^10 with sorting off, which
    // would make PostgreSQL compile it (JIT, about 200 ms).
    set_for_query(c"jit", "off");
    // Distributed with Citus: the index pass runs on the user's worker, so the hnsw settings
    // go there as SET LOCAL statements, which Citus sends along (propagate_set_commands). On
    // the coordinator they end with the nest level; on the worker, with the transaction, so
    // only settings that change nothing else are sent (not enable_sort nor jit: the worker
    // plans the pass by its costs).
    let propagated = if catalog::distributed().unwrap_or(false) {
        // Saved in the nest level first, so that the SET LOCAL below ends with it instead of
        // lasting to the end of the caller's transaction.
        set_for_query(c"citus.propagate_set_commands", "none");
        Spi::run(&format!(
            "SET LOCAL citus.propagate_set_commands = 'local';
             SET LOCAL hnsw.iterative_scan = 'relaxed_order';
             SET LOCAL hnsw.ef_search = {ef};
             SET LOCAL hnsw.max_scan_tuples = {max_scan}"
        ))
        .map_err(spi)
    } else {
        Ok(())
    };
    let out = propagated.and_then(|_| f());
    // SAFETY: closes the nest level opened above, restoring the settings.
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    out
}

/// The `limit` memories in scope nearest to `vector`, nearest first, read whole (one statement:
/// the candidates are read once): exact for a small scope; the HNSW index otherwise, completed by
/// an exact pass when it comes back with fewer than `limit` rows (pgvector's iterative scan stops
/// at hnsw.max_scan_tuples, for instance when other users' rows crowd the query's
/// neighbourhood).
pub fn vector_candidates(
    q: &Query,
    user_rows: i64,
    label: &str,
    vector: &[f32],
    limit: i32,
) -> Result<(Vec<Found>, Path)> {
    let dims = vector.len();
    let args = || vector_args(q, label, vector, limit);
    let (mut found, path) = if user_rows <= gucs::exact_search_rows() {
        (
            rows_of(
                &vector_sql(q, dims, true)?,
                &args(),
                planning_for(user_rows),
            )?,
            Path::Exact,
        )
    } else {
        let ef = gucs::hnsw_ef_search().max(limit).min(1000);
        let sql = vector_sql(q, dims, false)?;
        // Planned at each run, under the pass's settings.
        let found = in_index_pass(ef, SCAN_TUPLES, || {
            rows_of(&sql, &args(), Planning::ByValues)
        })?;
        if (found.len() as i32) < limit {
            let exact = rows_of(&vector_sql(q, dims, true)?, &args(), Planning::ByValues)?;
            (exact, Path::IndexThenExact)
        } else {
            (found, Path::Index)
        }
    };
    // Nearest first (the join returns rows in no particular order; an iterative scan in
    // relaxed order returns them slightly out of order).
    let similarity = |f: &Found| f.ranked.similarity.unwrap_or(-2.0);
    found.sort_by(|a, b| {
        similarity(b)
            .total_cmp(&similarity(a))
            .then(a.ranked.id.cmp(&b.ranked.id))
    });
    Ok((found, path))
}

/// A vector search over a scope searched exactly: the k best of its `limit` nearest memories,
/// ranked (`rank`), each with its rank among them. What `vector_candidates` and `rank` give
/// (the pg_test `hybrid_over_an_exact_scope_is_both_rankings_apart`), from one read of the
/// scope's embeddings (`scan_scope`), then only the k best read whole (`read_ranked`).
pub fn vector_exact(
    q: &Query,
    user_rows: i64,
    label: &str,
    vector: &[f32],
    limit: i32,
) -> Result<Vec<Found>> {
    let (rows, _) = scan_scope(q, user_rows, label, vector, None, limit)?;
    let candidates = scope_candidates(&rows, 0, 0.0, limit as usize);
    read_ranked(q, candidates)
}

/// At most this many terms of a question are searched for (the first ones it names): each
/// costs an index scan, and a question is a few dozen words. A 60 kB question of distinct words
/// took 28 s with all of them.
pub const MAX_QUERY_TERMS: i64 = 64;
// memori_term_mask has one bit per term.
const _: () = assert!(MAX_QUERY_TERMS <= 64);

/// The query's full-text terms, as tsquery literals (memori_text_document of the query): its
/// first `MAX_QUERY_TERMS` distinct ones (in the order the question names them), in a
/// tsvector's order, bytewise by lexeme: `text_candidates` sums their weights in this order,
/// as `scope_candidates` sums them in the order of `hybrid_exact`'s tsvector.
pub fn text_terms(query: &str) -> Result<Vec<String>> {
    let lexemes = crate::base::spi::read_one_kept::<Vec<Option<String>>>(
        &lexemes_sql(1, 2, 3),
        &[
            query.into(),
            gucs::text_search_config().into(),
            MAX_QUERY_TERMS.into(),
        ],
        Planning::Generic,
    )?
    .unwrap_or_default();
    let mut lexemes: Vec<String> = lexemes.into_iter().flatten().collect();
    // tsvector orders its lexemes as memcmp, the shorter first on a common prefix: as Rust
    // orders the bytes of a String.
    lexemes.sort_unstable();
    Ok(lexemes
        .iter()
        .map(|l| crate::base::text::tsquery_literal(l))
        .collect())
}

/// The SQL of the question's terms (one text[] value): the first `$limit` distinct lexemes of
/// the question `$query`'s document (text search configuration `$config`), in the order the
/// question names them.
fn lexemes_sql(query: usize, config: usize, limit: usize) -> String {
    let document = crate::base::text::document_sql(
        &format!("${query}::pg_catalog.text"),
        &format!("${config}::pg_catalog.text::pg_catalog.regconfig"),
    );
    format!(
        "SELECT pg_catalog.array_agg(s.lexeme ORDER BY s.first, s.lexeme)
           FROM (SELECT u.lexeme, u.positions[1] AS first
                   FROM pg_catalog.unnest({document}) AS u
                  ORDER BY u.positions[1] NULLS LAST, u.lexeme
                  LIMIT ${limit}) s"
    )
}

/// The SQL of a term's inverse document frequency, BM25's ln(1 + (N - n + 0.5) / (n + 0.5)):
/// `n` the SQL of its matches in scope (NULL for none), `$big_n` the user's memories (at least
/// n). Its twin in Rust is `idf`.
fn idf_sql(n: &str, big_n: usize) -> String {
    let n = format!("coalesce({n}, 0::pg_catalog.float8)");
    format!(
        "pg_catalog.ln(1::pg_catalog.float8 + (greatest(${big_n}::pg_catalog.float8, {n}) - {n} + 0.5::pg_catalog.float8)
                                            / ({n} + 0.5::pg_catalog.float8))"
    )
}

/// The SQL of the bit `memori_term_mask` sets for the `i`-th term (from 1, `WITH ORDINALITY` of
/// the terms' tsvector).
fn term_bit(i: &str) -> String {
    format!("(1::pg_catalog.int8 OPERATOR(pg_catalog.<<) ({i} OPERATOR(pg_catalog.-) 1)::pg_catalog.int4)")
}

/// The SQL of the text score of a set of terms (`mask`, bits as `term_bit`; over relation `idf`
/// of the terms' `i` and weight `w`): the weights of its terms over those of all terms, each
/// sum in the terms' order. `scope_candidates` computes the same (with `idf`), the same
/// operations in the same order, so the same terms give the same score to the last bit.
fn set_score_sql(mask: &str) -> String {
    let bit = term_bit("idf.i");
    format!(
        "((SELECT pg_catalog.sum(idf.w ORDER BY idf.i) FROM idf
            WHERE {mask} OPERATOR(pg_catalog.&) {bit} OPERATOR(pg_catalog.<>) 0)
          / (SELECT pg_catalog.sum(idf.w ORDER BY idf.i) FROM idf))"
    )
}

/// The `limit` memories in scope best matching the query's terms, best first, with a BM25-style
/// score in (0, 1]: the inverse document frequencies of the query terms a memory holds, over
/// those of all the query's terms (N: the user's memories, `user_rows`; a term's frequency: its
/// matches in scope). Memories are short, so term frequency and length are left out.
/// Identifier tokens are rare, so they weigh most; a memory sharing one common word with a
/// long question scores low. `same_model` keeps only memories embedded like the query (hybrid
/// mode: label and width). Weights are summed in the order of `terms` (`text_terms` gives them
/// in `hybrid_exact`'s), so that the same terms give the same score to the last bit.
pub fn text_candidates(
    q: &Query,
    user_rows: i64,
    terms: &[String],
    limit: i32,
    same_model: Option<(&str, usize)>,
) -> Result<Vec<(i64, f64)>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    // One bit per term (`text_terms` gives at most these).
    let terms = &terms[..terms.len().min(MAX_QUERY_TERMS as usize)];
    let mut filters = scope_filters(q);
    // $8 terms, $9 limit, $10 N, $11 the model's label.
    let mut args = scope_args(q);
    args.push(terms.to_vec().into());
    args.push((limit as i64).into());
    args.push((user_rows as f64).into());
    if let Some((label, dims)) = same_model {
        filters.push_str(&format!(
            "\n               AND m.embedding_model = $11::pg_catalog.text AND m.embedding_dims = {dims}"
        ));
        args.push(label.to_string().into());
    }
    // A user within memori.exact_search_rows: the user's rows first (the user index), then each
    // term on them, so the cost follows the user's size. A larger user: each term through the
    // GIN index, then the user's filter. (Term by term through the GIN index, a 100-memory
    // user's search followed how many memories of all users hold the question's words: 61 ms
    // at 300,000 memories.)
    let hits = if user_rows <= gucs::exact_search_rows() {
        format!(
            "scope AS MATERIALIZED (SELECT m.id, m.content_tsv FROM memori_memories m WHERE {filters}),
              hits AS MATERIALIZED (
                SELECT s.id, terms.t::pg_catalog.text AS t
                  FROM terms JOIN scope s ON s.content_tsv OPERATOR(pg_catalog.@@) terms.t)"
        )
    } else {
        format!(
            "hits AS MATERIALIZED (
                SELECT m.id, terms.t::pg_catalog.text AS t
                  FROM terms JOIN memori_memories m ON m.content_tsv OPERATOR(pg_catalog.@@) terms.t
                 WHERE {filters})"
        )
    };
    let sql = format!(
        "WITH terms AS (SELECT u.t::pg_catalog.tsquery AS t, pg_catalog.min(u.i) AS i
                          FROM pg_catalog.unnest($8::pg_catalog.text[]) WITH ORDINALITY AS u(t, i)
                         GROUP BY 1),
              {hits},
              idf AS (SELECT terms.t::pg_catalog.text AS t, terms.i, {idf} AS w
                        FROM terms
                        LEFT JOIN (SELECT h.t, pg_catalog.count(*)::pg_catalog.float8 AS n FROM hits h GROUP BY h.t) d
                               ON d.t OPERATOR(pg_catalog.=) terms.t::pg_catalog.text),
              -- Each memory's terms as bits (bit_or: exact in any order, and hashed, where an
              -- ordered sum per memory sorted every memory's few rows apart).
              masks AS MATERIALIZED (
                SELECT h.id, pg_catalog.bit_or({bit}) AS mask
                  FROM hits h JOIN idf ON idf.t OPERATOR(pg_catalog.=) h.t
                 GROUP BY h.id),
              -- A set's score, its terms' weights summed in one order, as scope_candidates'.
              scores AS MATERIALIZED (
                SELECT k.mask, {score} AS score FROM (SELECT DISTINCT k.mask FROM masks k) k)
         SELECT k.id, s.score
           FROM masks k JOIN scores s ON s.mask OPERATOR(pg_catalog.=) k.mask
          ORDER BY s.score DESC, k.id
          LIMIT $9",
        idf = idf_sql("d.n", 10),
        bit = term_bit("idf.i"),
        score = set_score_sql("k.mask")
    );
    id_scores(&sql, &args, planning_for(user_rows))
}

/// A hybrid search over a scope searched exactly, from one read of the scope: its k best
/// memories, ranked (`rank`), each with its ranks in the two candidate lists. The lists are the
/// ones `vector_candidates` (exact) and `text_candidates` with `same_model` give: the `limit`
/// nearest memories and the `limit` best text matches (the pg_test
/// `hybrid_over_an_exact_scope_is_both_rankings_apart` holds the result equal to ranking them
/// apart, `find_apart`, to the last bit). Two statements: the scope read once, each memory with
/// its similarity and the question's terms it holds (`scan_scope`), both lists taken from those
/// (`scope_candidates`), then only the k best read whole (`read_ranked`).
///
/// (Before, one statement ranked in SQL: the same read, then the terms' weights, both lists,
/// their fusion and the score as CTEs, hash joins and window functions. For the 100-memory
/// user at 302,000 memories, that statement took 0.38 ms of the search's 0.64
/// (pg_stat_statements), where the scan alone returns its 100 rows in about 0.1 ms.)
pub fn hybrid_exact(
    q: &Query,
    user_rows: i64,
    label: &str,
    vector: &[f32],
    query_text: &str,
    limit: i32,
) -> Result<Vec<Found>> {
    let (rows, terms) = scan_scope(q, user_rows, label, vector, Some(query_text), limit)?;
    let candidates = scope_candidates(&rows, terms, user_rows as f64, limit as usize);
    read_ranked(q, candidates)
}

/// The most memories a hybrid search reads whole into memory (`hybrid_exact`: about 150 bytes
/// each, with SPI's copy of the row); a larger scope searched exactly (memori.exact_search_rows
/// raised past it) has its rankings apart, through statements that spill to disk.
pub const MAX_SCANNED: i64 = 100_000;

/// A memory of a scope searched exactly, as `scan_scope` reads it: what ranks it, not its row.
#[derive(Clone, Debug, PartialEq)]
pub struct Scanned {
    pub id: i64,
    pub similarity: f64,
    /// The question's terms it holds, bit i-1 for the i-th term in the order of the terms'
    /// tsvector (`memori_term_mask`); 0 for none.
    pub mask: u64,
    pub importance: f64,
    pub recency: f64,
    /// Where the scan read it (`Fixed::Tid`), to read it again whole; none on Citus.
    pub loc: Option<u64>,
}

/// Reads the memories in scope embedded like the query (model `label`, `vector`'s width), each
/// with its similarity to `vector`, importance and recency (`recency`, as `row_columns` computes
/// it in SQL) and,
/// with `question`, the question's terms it holds; also how many terms the question has
/// (`text_terms`' terms, as a tsvector). Without a question, only the `limit` nearest. Each with
/// its row position, to read the best again whole (`read_ranked`), except on Citus, where a
/// shard's row positions mean nothing to the coordinator.
fn scan_scope(
    q: &Query,
    user_rows: i64,
    label: &str,
    vector: &[f32],
    question: Option<&str>,
    limit: i32,
) -> Result<(Vec<Scanned>, usize)> {
    let dims = vector.len();
    let (cast, q_vector) = (indexed_cast(dims), query_vector(9, dims));
    let mut args = vector_args(q, label, vector, limit);
    // $1-$12 as `vector_args`; with a question, $13 the question, $14 the text search
    // configuration, $15 MAX_QUERY_TERMS.
    let (with, mask, terms, order) = match question {
        Some(question) => {
            args.push(question.to_string().into());
            args.push(gucs::text_search_config().into());
            args.push(MAX_QUERY_TERMS.into());
            (
                format!(
                    "WITH lexemes AS ({lexemes}),
                          terms AS (SELECT pg_catalog.array_to_tsvector(l.array_agg) AS v FROM lexemes l)\n",
                    lexemes = lexemes_sql(13, 14, 15)
                ),
                // Qualified: the function `catalog::has_term_mask` found, whatever the path.
                format!(
                    "coalesce({nsp}.memori_term_mask(m.content_tsv, (SELECT t.v FROM terms t)), 0::pg_catalog.int8)",
                    nsp = catalog::schema()?.1
                ),
                "coalesce((SELECT pg_catalog.length(t.v) FROM terms t), 0)",
                "",
            )
        }
        None => (
            String::new(),
            "0::pg_catalog.int8".to_string(),
            "0",
            "\n          ORDER BY similarity DESC, m.id\n          LIMIT $10",
        ),
    };
    let loc = if catalog::distributed()? {
        "NULL::pg_catalog.tid"
    } else {
        "m.ctid"
    };
    let sql = format!(
        "{with}SELECT m.id, 1::pg_catalog.float8 - (m.embedding::{cast} <=> {q_vector}) AS similarity,
                {mask} AS mask, m.importance_score, m.updated_at,
                {terms}::pg_catalog.int4 AS terms, {loc} AS loc
           FROM memori_memories m
          WHERE {filters}
            AND m.embedding_model OPERATOR(pg_catalog.=) $8::pg_catalog.text
            AND m.embedding_dims OPERATOR(pg_catalog.=) {dims}{order}",
        filters = scope_filters(q)
    );
    let (_, weight) = gucs::score_weights();
    let half_life = gucs::recency_half_life_days();
    // SAFETY: a plain read of the current transaction's start timestamp (now()).
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    let mut terms = 0;
    let rows = crate::base::spi::select_fixed(&sql, &args, planning_for(user_rows), |r| {
        terms = r[5].int4().unwrap_or(0).max(0) as usize;
        Scanned {
            id: r[0].int8().unwrap_or_default(),
            similarity: r[1].float8().unwrap_or(f64::NAN),
            mask: r[2].int8().unwrap_or(0) as u64,
            importance: r[3].float4().unwrap_or_default() as f64,
            recency: r[4]
                .timestamptz()
                .map_or(0.0, |t| recency(t, now, weight, half_life)),
            loc: r[6].tid(),
        }
    })?;
    Ok((rows, terms))
}

/// BM25's inverse document frequency of a term, ln(1 + (N - n + 0.5) / (n + 0.5)): `n` its
/// matches in scope, `big_n` the user's memories (at least n). The same operations in the same
/// order as `idf_sql`, so the same value to the last bit.
pub fn idf(n: f64, big_n: f64) -> f64 {
    (1.0 + (big_n.max(n) - n + 0.5) / (n + 0.5)).ln()
}

/// PostgreSQL's order of float8 values: NaN equal to itself and above every number.
fn float8_cmp(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.partial_cmp(&b).expect("neither is NaN"),
    }
}

/// Keeps the first `limit` of `v` in the order `cmp` (a total order), in that order, without
/// sorting the rest (a 20,000-memory scope, for 40 candidates).
fn best_first<T>(v: &mut Vec<T>, limit: usize, mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) {
    if limit == 0 {
        v.clear();
        return;
    }
    if v.len() > limit {
        v.select_nth_unstable_by(limit - 1, &mut cmp);
        v.truncate(limit);
    }
    v.sort_unstable_by(cmp);
}

/// The candidates of a scope searched exactly (`rows`: all of it, or with `terms` 0 at least
/// its `limit` nearest): its `limit` nearest memories (by similarity, then id) with their
/// vector ranks, and with `terms` (the question's, one bit each in `Scanned::mask`) its `limit`
/// best text matches with their text ranks and scores. A text score is `text_candidates`' (a
/// set of terms' inverse document frequencies over those of all the question's terms, N
/// `big_n`, a term's frequency its matches among `rows`), each sum taken in the terms' order as
/// its SQL takes it. Unranked (`rank` ranks them), in no particular order.
pub fn scope_candidates(rows: &[Scanned], terms: usize, big_n: f64, limit: usize) -> Vec<Ranked> {
    let mut by_id: std::collections::HashMap<i64, Ranked> = std::collections::HashMap::new();
    let entry = |r: &Scanned| -> Ranked {
        Ranked {
            id: r.id,
            vector_rank: None,
            text_rank: None,
            similarity: Some(r.similarity),
            text_score: None,
            importance: r.importance,
            recency: r.recency,
            relevance: 0.0,
            score: 0.0,
            loc: r.loc,
        }
    };
    let mut nearest: Vec<&Scanned> = rows.iter().collect();
    best_first(&mut nearest, limit, |a, b| {
        float8_cmp(b.similarity, a.similarity).then(a.id.cmp(&b.id))
    });
    for (n, r) in nearest.into_iter().enumerate() {
        let mut c = entry(r);
        c.vector_rank = Some(n + 1);
        by_id.insert(r.id, c);
    }
    let terms = terms.min(64);
    if terms > 0 {
        let bit = |i: usize| 1u64 << i;
        // Each term's matches, in one pass over the rows.
        let mut matches = vec![0u64; terms];
        for r in rows.iter().filter(|r| r.mask != 0) {
            for (i, n) in matches.iter_mut().enumerate() {
                *n += u64::from(r.mask & bit(i) != 0);
            }
        }
        let weights: Vec<f64> = matches.iter().map(|n| idf(*n as f64, big_n)).collect();
        let total = weights.iter().fold(0.0, |s, w| s + w);
        // Each set of terms scored once: the memories holding the same terms score the same.
        let mut scores: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
        let mut matched: Vec<(&Scanned, f64)> = rows
            .iter()
            .filter(|r| r.mask != 0)
            .map(|r| {
                let score = *scores.entry(r.mask).or_insert_with(|| {
                    let held = (0..terms)
                        .filter(|i| r.mask & bit(*i) != 0)
                        .fold(0.0, |s, i| s + weights[i]);
                    held / total
                });
                (r, score)
            })
            .collect();
        best_first(&mut matched, limit, |(a, sa), (b, sb)| {
            float8_cmp(*sb, *sa).then(a.id.cmp(&b.id))
        });
        for (n, (r, score)) in matched.into_iter().enumerate() {
            let c = by_id.entry(r.id).or_insert_with(|| entry(r));
            c.text_rank = Some(n + 1);
            c.text_score = Some(score);
        }
    }
    by_id.into_values().collect()
}

/// The k best of `candidates` (`rank`), read whole, best first: where the scan read them
/// (`fetch_at`), and those not found there by key (`fetch`). A memory deleted or moved out of the
/// scope since it was ranked is left out.
pub(crate) fn read_ranked(q: &Query, candidates: Vec<Ranked>) -> Result<Vec<Found>> {
    let best = rank(
        q.mode,
        candidates,
        gucs::score_weights(),
        q.min_similarity,
        q.k as usize,
    );
    let at: Vec<(i64, u64)> = best
        .iter()
        .filter_map(|r| r.loc.map(|l| (r.id, l)))
        .collect();
    // The rows only: their ranking (similarity included) is `best`'s.
    let mut rows: std::collections::HashMap<i64, Found> = fetch_at(q, &at)?
        .into_iter()
        .map(|f| (f.ranked.id, f))
        .collect();
    // A row updated since the scan has moved (or, deleted, is gone): by key.
    let moved: Vec<i64> = best
        .iter()
        .map(|r| r.id)
        .filter(|id| !rows.contains_key(id))
        .collect();
    for f in fetch(q, &moved, None)? {
        rows.insert(f.ranked.id, f);
    }
    Ok(best
        .into_iter()
        .filter_map(|r| {
            rows.remove(&r.id).map(|mut f| {
                f.ranked = r;
                f
            })
        })
        .collect())
}

/// One candidate, with what ranks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub id: i64,
    pub vector_rank: Option<usize>,
    pub text_rank: Option<usize>,
    pub similarity: Option<f64>,
    pub text_score: Option<f64>,
    pub importance: f64,
    pub recency: f64,
    pub relevance: f64,
    pub score: f64,
    /// Where a scan of the exact scope read it (`Scanned::loc`), to read it again whole.
    pub loc: Option<u64>,
}

/// Relevance by mode:
/// - vector: the cosine similarity;
/// - text: the reciprocal rank of the text ranking, (K+1)/(K+rank), in (0, 1];
/// - hybrid: the cosine similarity plus TEXT_WEIGHT times the text score (the share of the
///   query's term weight the memory holds, in (0, 1]; 0 without a text match). Both are
///   absolute scores: a memory's relevance depends neither on the other candidates nor on the
///   pool depth, and without any text match hybrid orders as vector does.
///
/// bench/fusion/study.py (`report`) compared it with the coverage^3 rank bonus it replaces,
/// reciprocal rank fusion (k 60, pools 40-100) and min-max / z-score normalised combinations:
/// on LoCoMo it beats text mode (recall@10 0.707 against 0.664) and BM25, flat for weights
/// 0.4-0.8, whatever the pool; on bench/eval it keeps identifier hit@1 (0.969) but loses two
/// paraphrases of 60 to vector mode (hit@1 0.583 against 0.617), as every fusion measured did.
pub fn relevance(mode: SearchMode, r: &Ranked) -> f64 {
    match mode {
        SearchMode::Vector => r.similarity.unwrap_or(-1.0),
        SearchMode::Text => r
            .text_rank
            .map_or(0.0, |n| (RRF_K + 1.0) / (RRF_K + n as f64)),
        SearchMode::Hybrid => {
            r.similarity.unwrap_or(-1.0) + TEXT_WEIGHT * r.text_score.unwrap_or(0.0).clamp(0.0, 1.0)
        }
    }
}

/// Scores, filters by min_similarity and orders the candidates; keeps the best k.
/// score = relevance * (1 - wi - wr) + wi * importance + wr * recency. Every search ranks here,
/// whatever its path.
pub fn rank(
    mode: SearchMode,
    mut cands: Vec<Ranked>,
    (wi, wr): (f64, f64),
    min_similarity: Option<f64>,
    k: usize,
) -> Vec<Ranked> {
    if let Some(min) = min_similarity {
        cands.retain(|c| c.similarity.is_some_and(|s| s >= min));
    }
    for c in cands.iter_mut() {
        c.relevance = relevance(mode, c);
        c.score = c.relevance * (1.0 - wi - wr) + wi * c.importance + wr * c.recency;
    }
    cands.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(
                b.similarity
                    .unwrap_or(-2.0)
                    .total_cmp(&a.similarity.unwrap_or(-2.0)),
            )
            .then(a.id.cmp(&b.id))
    });
    cands.truncate(k);
    cands
}

/// A found memory: its row and how it ranked.
pub struct Found {
    pub ranked: Ranked,
    pub memory_id: Uuid,
    pub content: String,
    pub memory_type: String,
    pub importance: f32,
    pub tags: Vec<String>,
    pub metadata: JsonB,
    pub conversation_id: Option<Uuid>,
    pub created_at: TimestampWithTimeZone,
    pub event_at: Option<TimestampWithTimeZone>,
}

/// The result of a search: memories best first, and the path the vector ranking took.
pub struct Outcome {
    pub found: Vec<Found>,
    pub path: Path,
}

/// Reads whole the rows of `ids` still in the search's scope: similarity to `vector` (for rows
/// embedded like it), importance, recency. A second statement after the one that found them: in
/// a transaction that has written (SPI then takes a snapshot per statement, under READ
/// COMMITTED), a row deleted or moved out of the scope since (archived, superseded, expired,
/// another type, tags or conversation) is left out, and a row changed within it comes back as
/// it is now. (In a read-only transaction every statement of the search shares the caller's
/// snapshot.)
pub(crate) fn fetch(
    q: &Query,
    ids: &[i64],
    embedded: Option<(&str, &[f32])>,
) -> Result<Vec<Found>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let similarity = match embedded {
        Some((_, v)) => {
            let dims = v.len();
            let (cast, q_vector) = (indexed_cast(dims), query_vector(10, dims));
            format!(
                "CASE WHEN m.embedding_model = $9::pg_catalog.text AND m.embedding_dims = {dims}
                      THEN 1::pg_catalog.float8 - (m.embedding::{cast} <=> {q_vector}) END"
            )
        }
        None => "NULL::pg_catalog.float8".to_string(),
    };
    let (label, vector) = embedded.map_or((None, None), |(l, v)| {
        (Some(l.to_string()), Some(v.to_vec()))
    });
    let (_, wr) = gucs::score_weights();
    // Each row by its key, whatever the statistics say of an average user (one generic plan:
    // `m.id = ANY (...)` beside the user's condition could be read through the user index, every
    // row of the user for a few ids). LIMIT 1: the lookup stays a subquery of its own.
    // $1-$7 the scope (`scope_filters`), $8 the ids, $9 the model's label, $10 the query vector,
    // $11 and $12 the recency weight and half-life.
    let sql = format!(
        "SELECT r.*
           FROM pg_catalog.unnest($8::pg_catalog.int8[]) AS k(id)
          CROSS JOIN LATERAL (
                SELECT {columns}
                  FROM memori_memories m
                 WHERE {filters}
                   AND m.id OPERATOR(pg_catalog.=) k.id
                 LIMIT 1) r",
        columns = row_columns(&similarity, Some((11, 12)))?,
        filters = scope_filters(q)
    );
    let mut args = scope_args(q);
    args.push(ids.to_vec().into());
    args.push(label.into());
    args.push(vector.into());
    args.push(wr.into());
    args.push(gucs::recency_half_life_days().into());
    rows_of(&sql, &args, Planning::Generic)
}

/// Reads whole the rows of `at` (id, row position as `Scanned::loc`) still in the search's scope
/// and still where the scan read them, without their similarity nor recency (ranked already).
/// Each by its position, a TID scan: a row updated since (see `fetch` for when this statement's
/// snapshot is newer than the scan's) has another position, its old version no longer visible,
/// and one deleted has none; `read_ranked` reads those by key. About 0.02 ms less than 10
/// lookups by key (pgbench, a 100-memory user's vector search, the statement alone); `ctid = ...`
/// is leakproof, so under row-level security as well.
pub(crate) fn fetch_at(q: &Query, at: &[(i64, u64)]) -> Result<Vec<Found>> {
    if at.is_empty() {
        return Ok(Vec::new());
    }
    // $1-$7 the scope (`scope_filters`), $8 the positions, $9 the ids: the row at a position is
    // the one ranked (a position freed and reused holds another row).
    let sql = format!(
        "SELECT {columns}
           FROM memori_memories m
          WHERE m.ctid OPERATOR(pg_catalog.=) ANY ($8::pg_catalog.tid[])
            AND m.id OPERATOR(pg_catalog.=) ANY ($9::pg_catalog.int8[])
            AND {filters}",
        columns = row_columns("NULL::pg_catalog.float8", None)?,
        filters = scope_filters(q)
    );
    let mut args = scope_args(q);
    args.push(
        at.iter()
            .map(|(_, l)| crate::base::spi::tid_of(*l))
            .collect::<Vec<_>>()
            .into(),
    );
    args.push(at.iter().map(|(id, _)| *id).collect::<Vec<_>>().into());
    rows_of(&sql, &args, Planning::Generic)
}

/// Runs a search: embed the query (unless text mode), gather vector and text candidates, read
/// them, rank. The caller counts the accesses it uses (`track_access`).
pub fn find(q: &Query, query_text: &str) -> Result<Outcome> {
    tenancy::reading(|| find_as_reader(q, query_text))
}

fn find_as_reader(q: &Query, query_text: &str) -> Result<Outcome> {
    crate::base::stats::search();
    let limit = pool(q.k);
    // A database not yet updated to 0.3.0 has no full-text index: embeddings only.
    let mode = if q.mode != SearchMode::Vector && !catalog::has_text_search()? {
        SearchMode::Vector
    } else {
        q.mode
    };
    let q = &Query { mode, ..q.clone() };
    let embedded = if q.mode == SearchMode::Text {
        None
    } else {
        let (target, mut batch) = embed_texts(Some(&q.user), &[query_text])?;
        Some((target.label(), batch.vectors.remove(0)))
    };
    let n = user_rows(&q.user, rows_to_count(q.mode))?;
    // A scope searched exactly: vector mode; hybrid, both rankings from one read of the scope,
    // which comes back whole (held in memory, and on Citus sent from the user's worker), so only
    // up to MAX_SCANNED memories and not on Citus; otherwise, and in a database not yet updated
    // to 0.5.0 (no term match of its own), the rankings apart.
    if let Some((label, v)) = &embedded {
        if n <= gucs::exact_search_rows() {
            let found = match q.mode {
                SearchMode::Vector => Some(vector_exact(q, n, label, v, limit)?),
                SearchMode::Hybrid
                    if n <= MAX_SCANNED
                        && !catalog::distributed()?
                        && catalog::has_term_mask()? =>
                {
                    Some(hybrid_exact(q, n, label, v, query_text, limit)?)
                }
                _ => None,
            };
            if let Some(found) = found {
                return Ok(Outcome {
                    found,
                    path: Path::Exact,
                });
            }
        }
    }
    let embedded = embedded.as_ref().map(|(l, v)| (l.as_str(), v.as_slice()));
    find_apart(q, n, embedded, query_text, limit)
}

/// A search with its rankings apart: the `limit` vector candidates of the query's embedding
/// (`embedded`: its model's label and vector; none in text mode), the `limit` text candidates
/// (not in vector mode), the rows of the text candidates the vector pass did not read, ranked.
/// `n`: the user's memories (`user_rows`; in vector mode, counted only to one past
/// memori.exact_search_rows, `rows_to_count`).
pub fn find_apart(
    q: &Query,
    n: i64,
    embedded: Option<(&str, &[f32])>,
    query_text: &str,
    limit: i32,
) -> Result<Outcome> {
    let (vector_hits, path) = match embedded {
        Some((label, v)) => vector_candidates(q, n, label, v, limit)?,
        None => (Vec::new(), Path::None),
    };
    let text_hits = if q.mode == SearchMode::Vector {
        Vec::new()
    } else {
        let terms = text_terms(query_text)?;
        let same_model = embedded.map(|(l, v)| (l, v.len()));
        text_candidates(q, n, &terms, limit, same_model)?
    };
    let vector_ids: Vec<i64> = vector_hits.iter().map(|f| f.ranked.id).collect();
    let mut rows: std::collections::HashMap<i64, Found> =
        vector_hits.into_iter().map(|f| (f.ranked.id, f)).collect();
    // Only the text candidates the vector pass did not read already.
    let missing: Vec<i64> = text_hits
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !rows.contains_key(id))
        .collect();
    for f in fetch(q, &missing, embedded)? {
        rows.insert(f.ranked.id, f);
    }
    for (n, id) in vector_ids.iter().enumerate() {
        if let Some(f) = rows.get_mut(id) {
            f.ranked.vector_rank = Some(n + 1);
        }
    }
    for (n, (id, score)) in text_hits.iter().enumerate() {
        if let Some(f) = rows.get_mut(id) {
            f.ranked.text_rank = Some(n + 1);
            f.ranked.text_score = Some(*score);
        }
    }
    Ok(Outcome {
        found: ranked(q, rows.into_values().collect()),
        path,
    })
}

/// The candidates ranked (`rank`): the best k, best first.
fn ranked(q: &Query, found: Vec<Found>) -> Vec<Found> {
    let order = rank(
        q.mode,
        found.iter().map(|f| f.ranked.clone()).collect(),
        gucs::score_weights(),
        q.min_similarity,
        q.k as usize,
    );
    let mut rows: std::collections::HashMap<i64, Found> =
        found.into_iter().map(|f| (f.ranked.id, f)).collect();
    order
        .into_iter()
        .filter_map(|r| {
            rows.remove(&r.id).map(|mut f| {
                f.ranked = r;
                f
            })
        })
        .collect()
}

/// Why a row ranked where it did (memori_search's explain column).
pub fn explain(mode: SearchMode, path: Path, r: &Ranked) -> JsonB {
    JsonB(serde_json::json!({
        "mode": mode.name(),
        "vector_path": path.name(),
        "vector_rank": r.vector_rank,
        "text_rank": r.text_rank,
        "similarity": r.similarity,
        "text_score": r.text_score,
        "relevance": r.relevance,
        "importance": (r.importance * 1e6).round() / 1e6,
        "recency": r.recency,
        "score": r.score,
    }))
}

/// Counts one access for each memory; a short_term memory reaching
/// memori.promote_after_accesses becomes long_term and loses its expiry. By default
/// (memori.access_counting = deferred, memori preloaded) the accesses go to shared memory and
/// the next maintenance pass counts them; otherwise one statement here. Best effort, so a read
/// never waits or fails because of it: rows another transaction holds are skipped, and nothing
/// is written in a read-only transaction, on a hot standby, or under REPEATABLE READ or
/// SERIALIZABLE (where a row changed by a concurrent search would raise 40001).
pub fn track_access(user: &str, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // SAFETY: plain reads of backend state.
    let (recovery, cannot_write) = unsafe {
        let recovery = pg_sys::RecoveryInProgress();
        (
            recovery,
            recovery
                || pg_sys::XactReadOnly
                || pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32,
        )
    };
    if cannot_write {
        // Read-only or REPEATABLE READ on the primary: counted by the next maintenance pass
        // (when preloaded), so memories read that way are not archived as unused (G6).
        if !recovery {
            crate::memories::accesses::defer(ids);
        }
        return Ok(());
    }
    // By default, off the search's path too (no UPDATE, no dead tuples per search): the next
    // maintenance pass counts them in one statement. Not on Citus, whose passes do not drain.
    if gucs::access_counting() == AccessCounting::Deferred
        && !catalog::distributed().unwrap_or(false)
        && crate::memories::accesses::defer(ids)
    {
        return Ok(());
    }
    let promotes = MemoryType::sql_array(MemoryType::promotes);
    let long_term = MemoryType::LongTerm.as_str();
    crate::tenancy::as_owner_of(c"memori_memories", || {
        Spi::run_with_args(
        // The CTE joins on user_id too: Citus then runs the whole statement on the user's shard.
        &format!("WITH free AS (SELECT id, user_id FROM memori_memories
                        WHERE user_id OPERATOR(pg_catalog.=) $3::pg_catalog.text AND id = ANY($1) FOR UPDATE SKIP LOCKED)
         UPDATE memori_memories m SET access_count = access_count + 1, last_accessed_at = now(),
                memory_type = CASE WHEN memory_type::pg_catalog.text = ANY ({promotes}) AND access_count + 1 >= $2
                                   THEN '{long_term}' ELSE memory_type END,
                expires_at = CASE WHEN memory_type::pg_catalog.text = ANY ({promotes}) AND access_count + 1 >= $2
                                  THEN NULL ELSE expires_at END,
                updated_at = CASE WHEN memory_type::pg_catalog.text = ANY ({promotes}) AND access_count + 1 >= $2
                                  THEN $4::pg_catalog.timestamptz ELSE updated_at END
           FROM free WHERE m.user_id OPERATOR(pg_catalog.=) free.user_id AND m.user_id OPERATOR(pg_catalog.=) $3::pg_catalog.text AND m.id = free.id"),
        &[
            ids.to_vec().into(),
            gucs::promote_after_accesses().into(),
            user.into(),
            crate::memories::store::now()?.into(),
        ],
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

#[allow(clippy::too_many_arguments)]
pub fn query(
    k: Option<i32>,
    conversation_id: Option<Uuid>,
    memory_types: Option<Vec<Option<String>>>,
    tags: Option<Vec<Option<String>>>,
    min_similarity: Option<f64>,
    include_archived: Option<bool>,
    user_id: Option<&str>,
    mode: Option<&str>,
    as_of: Option<TimestampWithTimeZone>,
    (event_from, event_to): (Option<TimestampWithTimeZone>, Option<TimestampWithTimeZone>),
) -> Result<Query> {
    let k = k.unwrap_or(10);
    if !(1..=MAX_K).contains(&k) {
        return Err(MemoriError::invalid(format!(
            "k must be between 1 and {MAX_K}, not {k}"
        )));
    }
    let memory_types = clean_list(memory_types);
    for t in memory_types.iter().flatten() {
        MemoryType::parse(t)?;
    }
    if let Some(m) = min_similarity {
        if !(-1.0..=1.0).contains(&m) {
            return Err(MemoriError::invalid(format!(
                "min_similarity must be between -1 and 1, not {m}"
            )));
        }
    }
    let mode = match mode {
        None => gucs::search_mode(),
        Some(m) => SearchMode::parse(m).ok_or_else(|| {
            MemoriError::invalid(format!("unknown search mode \"{m}\""))
                .hint("mode is one of hybrid, vector, text.")
        })?,
    };
    if let (Some(from), Some(to)) = (event_from, event_to) {
        if from >= to {
            return Err(
                MemoriError::invalid("event_from must be earlier than event_to").hint(
                    "The event window is [event_from, event_to); leave either NULL for no bound.",
                ),
            );
        }
    }
    if mode == SearchMode::Text && min_similarity.is_some() {
        return Err(MemoriError::invalid(
            "min_similarity needs embeddings, and mode \"text\" does not embed the query",
        )
        .hint(
            "Use mode => 'hybrid' or 'vector' with min_similarity, or leave min_similarity NULL.",
        ));
    }
    Ok(Query {
        user: tenancy::resolve(user_id)?,
        k,
        conversation_id,
        memory_types,
        tags: clean_list(tags),
        min_similarity,
        include_archived: include_archived.unwrap_or(false),
        mode,
        as_of,
        event_from,
        event_to,
    })
}

/// The current memori user's memories most relevant to `query`, best first: those valid now,
/// or with `as_of`, those valid at that moment; with `event_from`/`event_to`, only those whose
/// event time (or, without one, the time stored) is within [event_from, event_to). (The Rust
/// name carries the version: the released SQL names older symbols, see `legacy`.)
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "memori_search", volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
pub(crate) fn memori_search_0_5(
    query: Option<&str>,
    k: default!(Option<i32>, "10"),
    conversation_id: default!(Option<Uuid>, "NULL"),
    memory_types: default!(Option<Vec<Option<String>>>, "NULL"),
    tags: default!(Option<Vec<Option<String>>>, "NULL"),
    min_similarity: default!(Option<f64>, "NULL"),
    include_archived: default!(Option<bool>, "false"),
    user_id: default!(Option<&str>, "NULL"),
    mode: default!(Option<&str>, "NULL"),
    explain: default!(Option<bool>, "false"),
    as_of: default!(Option<TimestampWithTimeZone>, "NULL"),
    event_from: default!(Option<TimestampWithTimeZone>, "NULL"),
    event_to: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(memory_id, Uuid),
        name!(content, String),
        name!(memory_type, String),
        name!(similarity, Option<f64>),
        name!(score, f64),
        name!(importance, f32),
        name!(context_tags, Vec<String>),
        name!(metadata, JsonB),
        name!(conversation_id, Option<Uuid>),
        name!(created_at, TimestampWithTimeZone),
        name!(explain, Option<JsonB>),
        name!(event_at, Option<TimestampWithTimeZone>),
    ),
> {
    memory::required_text(query, "query").or_raise();
    let q = self::query(
        k,
        conversation_id,
        memory_types,
        tags,
        min_similarity,
        include_archived,
        user_id,
        mode,
        as_of,
        (event_from, event_to),
    )
    .or_raise();
    let out = find(&q, query.unwrap()).or_raise();
    // A look into the past is not a use of today's memories: no access is counted.
    if as_of.is_none() {
        track_access(
            &q.user,
            &out.found.iter().map(|f| f.ranked.id).collect::<Vec<_>>(),
        )
        .or_raise();
    }
    let (mode, path, explain) = (q.mode, out.path, explain.unwrap_or(false));
    TableIterator::new(out.found.into_iter().map(move |f| {
        let why = explain.then(|| self::explain(mode, path, &f.ranked));
        (
            f.memory_id,
            f.content,
            f.memory_type,
            f.ranked.similarity,
            f.ranked.score,
            f.importance,
            f.tags,
            f.metadata,
            f.conversation_id,
            f.created_at,
            why,
            f.event_at,
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: i64, v: Option<usize>, t: Option<usize>, sim: f64) -> Ranked {
        Ranked {
            id,
            vector_rank: v,
            text_rank: t,
            similarity: Some(sim),
            text_score: t.map(|_| 1.0),
            importance: 0.5,
            recency: 1.0,
            relevance: 0.0,
            score: 0.0,
            loc: None,
        }
    }

    #[test]
    fn hybrid_adds_the_weighted_text_score_to_the_similarity() {
        let both = cand(1, Some(1), Some(1), 0.6);
        assert!((relevance(SearchMode::Hybrid, &both) - 1.1).abs() < 1e-12);
        let vector_only = cand(2, Some(1), None, 0.6);
        assert!((relevance(SearchMode::Hybrid, &vector_only) - 0.6).abs() < 1e-12);
        // A third of the query matched counts a sixth: it passes a memory 0.05 nearer, not one
        // 0.2 nearer.
        let mut weak = cand(5, Some(3), Some(1), 0.55);
        weak.text_score = Some(1.0 / 3.0);
        assert!(relevance(SearchMode::Hybrid, &weak) > relevance(SearchMode::Hybrid, &vector_only));
        weak.similarity = Some(0.4);
        assert!(relevance(SearchMode::Hybrid, &weak) < relevance(SearchMode::Hybrid, &vector_only));
        // The text rank does not count, only the score.
        assert_eq!(
            relevance(SearchMode::Hybrid, &cand(6, None, Some(10), 0.6)),
            relevance(SearchMode::Hybrid, &cand(7, None, Some(1), 0.6))
        );
        assert_eq!(relevance(SearchMode::Vector, &both), 0.6);
        assert!((relevance(SearchMode::Text, &cand(4, None, Some(1), 0.1)) - 1.0).abs() < 1e-12);
    }

    fn scanned(id: i64, similarity: f64, mask: u64) -> Scanned {
        Scanned {
            id,
            similarity,
            mask,
            importance: 0.5,
            recency: 0.0,
            loc: Some(id as u64 * 3),
        }
    }

    #[test]
    fn best_first_keeps_what_a_full_sort_keeps() {
        // Pseudo-random values with many ties, every limit from 0 past the length.
        let mut x: u64 = 7;
        for len in [0usize, 1, 2, 5, 40, 41, 300] {
            let v: Vec<(u64, usize)> = (0..len)
                .map(|i| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 7, i)
                })
                .collect();
            for limit in [0, 1, 3, 40, len, len + 3] {
                let mut sorted = v.clone();
                sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                sorted.truncate(limit);
                let mut got = v.clone();
                best_first(&mut got, limit, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                assert_eq!(got, sorted, "len {len} limit {limit}");
            }
        }
    }

    #[test]
    fn recency_halves_each_half_life_and_is_bounded() {
        let day = 86_400_000_000i64;
        let now = 900 * day;
        assert_eq!(recency(now, now, 0.05, 30.0), 1.0);
        assert!((recency(now - 30 * day, now, 0.05, 30.0) - 0.5).abs() < 1e-12);
        assert!((recency(now - 60 * day, now, 0.05, 30.0) - 0.25).abs() < 1e-12);
        // No weight, no recency; a time after now counts as now; the oldest is exp(-700).
        assert_eq!(recency(now - 30 * day, now, 0.0, 30.0), 0.0);
        assert_eq!(recency(now + day, now, 0.05, 30.0), 1.0);
        assert_eq!(recency(i64::MIN, now, 0.05, 30.0), (-700.0f64).exp());
        assert_eq!(recency(i64::MAX, now, 0.05, 30.0), 1.0);
        // date_part('epoch', ...): 2000-01-01 is 946684800 s after 1970.
        assert_eq!(epoch_seconds(0), 946_684_800.0);
        assert_eq!(epoch_seconds(i64::MAX), f64::INFINITY);
    }

    #[test]
    fn idf_is_bm25s_and_rarer_terms_weigh_more() {
        assert_eq!(idf(0.0, 100.0), (1.0f64 + 100.5 / 0.5).ln());
        assert_eq!(idf(10.0, 100.0), (1.0f64 + 90.5 / 10.5).ln());
        assert!(idf(1.0, 100.0) > idf(2.0, 100.0));
        // n above N (N counted up to a limit): as if n = N, never negative.
        assert_eq!(idf(150.0, 100.0), idf(150.0, 150.0));
        assert!(idf(150.0, 100.0) > 0.0);
    }

    #[test]
    fn scope_candidates_are_the_nearest_and_the_best_text_matches() {
        // Terms: bit 0 in three memories, bit 1 in two, bit 2 in none; N = 10.
        let rows = vec![
            scanned(1, 0.9, 0),
            scanned(2, 0.8, 0b01),
            scanned(3, 0.8, 0b10),
            scanned(4, 0.1, 0b11),
            scanned(5, 0.2, 0b01),
            scanned(6, f64::NAN, 0),
        ];
        let by_id = |c: Vec<Ranked>| {
            let mut c = c;
            c.sort_by_key(|r| r.id);
            c
        };
        let got = by_id(scope_candidates(&rows, 3, 10.0, 3));
        let (w0, w1, w2) = (idf(3.0, 10.0), idf(2.0, 10.0), idf(0.0, 10.0));
        let total = 0.0 + w0 + w1 + w2;
        // Nearest: NaN first (PostgreSQL's order of float8), then 1, then 2 before 3 (a tie,
        // the lower id first).
        let vector: Vec<(i64, Option<usize>)> = got.iter().map(|r| (r.id, r.vector_rank)).collect();
        assert!(vector.contains(&(6, Some(1))) && vector.contains(&(1, Some(2))));
        assert!(vector.contains(&(2, Some(3))));
        assert!(got.iter().all(|r| r.id != 3 || r.vector_rank.is_none()));
        // Best text: 4 holds the two weighed terms, then 3 (the rarer term) before 2 and 5.
        let text = |id: i64| {
            got.iter()
                .find(|r| r.id == id)
                .map(|r| (r.text_rank, r.text_score))
        };
        assert_eq!(text(4), Some((Some(1), Some((0.0 + w0 + w1) / total))));
        assert_eq!(text(3), Some((Some(2), Some((0.0 + w1) / total))));
        assert_eq!(text(2), Some((Some(3), Some((0.0 + w0) / total))));
        // 5 scores as 2 does, and the cut of 3 leaves it out; 1 and 6 hold no term.
        assert_eq!(text(5), None);
        assert_eq!(text(1), Some((None, None)));
        assert_eq!(got.len(), 5);
        // Each keeps where the scan read it.
        assert!(got.iter().all(|r| r.loc == Some(r.id as u64 * 3)));
        // Without terms (vector mode): only the nearest, no text.
        let got = scope_candidates(&rows, 0, 10.0, 2);
        assert_eq!(got.len(), 2);
        assert!(got
            .iter()
            .all(|r| r.text_rank.is_none() && r.text_score.is_none()));
        // The 64th term's bit (the sign bit of the int8 mask).
        let got = scope_candidates(&[scanned(7, 0.5, 1 << 63)], 64, 1.0, 5);
        assert_eq!(got[0].text_rank, Some(1));
        assert_eq!(got[0].text_score.map(|s| s > 0.0), Some(true));
    }

    #[test]
    fn rank_filters_by_similarity_orders_by_score_and_keeps_k() {
        let mut low = cand(1, Some(3), Some(1), 0.2);
        low.similarity = Some(0.2);
        let mut no_sim = cand(2, None, Some(2), 0.0);
        no_sim.similarity = None;
        let out = rank(
            SearchMode::Hybrid,
            vec![
                low,
                no_sim,
                cand(3, Some(1), None, 0.8),
                cand(4, Some(2), Some(3), 0.7),
            ],
            (0.15, 0.05),
            Some(0.3),
            10,
        );
        assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![4, 3]);
        let out = rank(
            SearchMode::Vector,
            vec![
                cand(1, Some(2), None, 0.5),
                cand(2, Some(1), None, 0.6),
                cand(3, Some(3), None, 0.4),
            ],
            (0.0, 0.0),
            None,
            2,
        );
        assert_eq!(out.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(out[0].score, 0.6);
    }
}
