//! The entry points of older SQL: memori 0.1.0 to 0.3.0 declared these functions with other
//! signatures, and a database keeps its SQL until ALTER EXTENSION memori UPDATE runs. Its SQL
//! names each function's C symbol, `<rust name>_wrapper`, so the symbols below are frozen by the
//! released scripts in sql/released/: each keeps the Rust name that symbol needs and forwards to
//! today's function. None is in this version's SQL (`sql = false`).
//!
//! Which Rust function implements which SQL function (the released SQL names these symbols too,
//! which is why today's functions cannot take the SQL names back):
//!
//! | SQL function | today's Rust function | older symbols, here |
//! |---|---|---|
//! | memori_search | `memories::search::memori_search_0_5` (0.5.0) | `search_memories_as_of` (0.4.0), `search_memories` (0.3.0), `memori_search` (0.1.0, 0.2.0) |
//! | memori_store | `memories::store::memori_store_0_5` (0.5.0) | `store_memory` (0.3.0, 0.4.0), `memori_store` (0.1.0, 0.2.0) |
//! | memori_store_batch | `memories::store::memori_store_batch_0_5` (0.5.0) | `store_memories` (0.3.0, 0.4.0), `memori_store_batch` (0.1.0, 0.2.0) |
//! | memori_update | `memories::store::update_memory` (0.3.0) | `memori_update` (0.1.0, 0.2.0) |
//! | memori_relate | `memories::graph::relate_entities` (0.3.0) | `memori_relate` (0.1.0, 0.2.0) |
//!
//! Every other SQL function's Rust name is its SQL name. The probes that let the current
//! functions work on older tables are in `base::catalog`.

use crate::base::errors::OrRaise;
use crate::base::memory;
use crate::memories::conversations::JsonbArg;
use crate::memories::graph::relate_entities;
use crate::memories::search::{self, memori_search_0_5};
use crate::memories::store::{memori_store_0_5, memori_store_batch_0_5, update_memory};
use pgrx::datum::{JsonB, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;

// memori_search

/// memori 0.4.0's memori_search (no event window; no event_at column).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn search_memories_as_of(
    query: Option<&str>,
    k: Option<i32>,
    conversation_id: Option<Uuid>,
    memory_types: Option<Vec<Option<String>>>,
    tags: Option<Vec<Option<String>>>,
    min_similarity: Option<f64>,
    include_archived: Option<bool>,
    user_id: Option<&str>,
    mode: Option<&str>,
    explain: Option<bool>,
    as_of: Option<TimestampWithTimeZone>,
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
    ),
> {
    let rows = memori_search_0_5(
        query,
        k,
        conversation_id,
        memory_types,
        tags,
        min_similarity,
        include_archived,
        user_id,
        mode,
        explain,
        as_of,
        None,
        None,
    );
    TableIterator::new(
        rows.map(|(a, b, c, d, e, f, g, h, i, j, k, _)| (a, b, c, d, e, f, g, h, i, j, k)),
    )
}

/// memori 0.3.0's memori_search (no as_of).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn search_memories(
    query: Option<&str>,
    k: Option<i32>,
    conversation_id: Option<Uuid>,
    memory_types: Option<Vec<Option<String>>>,
    tags: Option<Vec<Option<String>>>,
    min_similarity: Option<f64>,
    include_archived: Option<bool>,
    user_id: Option<&str>,
    mode: Option<&str>,
    explain: Option<bool>,
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
    ),
> {
    search_memories_as_of(
        query,
        k,
        conversation_id,
        memory_types,
        tags,
        min_similarity,
        include_archived,
        user_id,
        mode,
        explain,
        None,
    )
}

/// memori 0.1.0 and 0.2.0's memori_search(..., min_similarity real, ...): vector mode, the
/// columns those versions return.
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn memori_search(
    query: Option<&str>,
    k: Option<i32>,
    conversation_id: Option<Uuid>,
    memory_types: Option<Vec<Option<String>>>,
    tags: Option<Vec<Option<String>>>,
    min_similarity: Option<f32>,
    include_archived: Option<bool>,
    user_id: Option<&str>,
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
    memory::required_text(query, "query").or_raise();
    let q = search::query(
        k,
        conversation_id,
        memory_types,
        tags,
        min_similarity.map(f64::from),
        include_archived,
        user_id,
        Some("vector"),
        None,
        (None, None),
    )
    .or_raise();
    let out = search::find(&q, query.unwrap()).or_raise();
    search::track_access(
        &q.user,
        &out.found.iter().map(|f| f.ranked.id).collect::<Vec<_>>(),
    )
    .or_raise();
    TableIterator::new(out.found.into_iter().map(|f| {
        (
            f.memory_id,
            f.content,
            f.memory_type,
            f.ranked.similarity.unwrap_or_default(),
            f.ranked.score,
            f.importance,
            f.tags,
            f.metadata,
            f.conversation_id,
            f.created_at,
        )
    }))
}

// memori_store, memori_store_batch, memori_update: 0.1.0 and 0.2.0 took importance as real.

#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn memori_store(
    content: Option<&str>,
    memory_type: Option<&str>,
    conversation_id: Option<Uuid>,
    importance: Option<f32>,
    tags: Option<Vec<Option<String>>>,
    metadata: Option<JsonbArg>,
    entities: Option<Vec<Option<String>>>,
    expires_at: Option<TimestampWithTimeZone>,
    user_id: Option<&str>,
) -> Uuid {
    store_memory(
        content,
        memory_type,
        conversation_id,
        importance.map(f64::from),
        tags,
        metadata,
        entities,
        expires_at,
        user_id,
    )
}

/// memori 0.3.0 and 0.4.0's memori_store (no event_at).
#[allow(clippy::too_many_arguments)]
#[pg_extern(sql = false)]
fn store_memory(
    content: Option<&str>,
    memory_type: Option<&str>,
    conversation_id: Option<Uuid>,
    importance: Option<f64>,
    tags: Option<Vec<Option<String>>>,
    metadata: Option<JsonbArg>,
    entities: Option<Vec<Option<String>>>,
    expires_at: Option<TimestampWithTimeZone>,
    user_id: Option<&str>,
) -> Uuid {
    memori_store_0_5(
        content,
        memory_type,
        conversation_id,
        importance,
        tags,
        metadata,
        entities,
        expires_at,
        user_id,
        None,
    )
}

#[pg_extern(sql = false)]
fn memori_store_batch(
    contents: Option<Vec<Option<String>>>,
    memory_type: Option<&str>,
    conversation_id: Option<Uuid>,
    importance: Option<f32>,
    tags: Option<Vec<Option<String>>>,
    metadata: Option<JsonbArg>,
    user_id: Option<&str>,
) -> SetOfIterator<'static, Uuid> {
    store_memories(
        contents,
        memory_type,
        conversation_id,
        importance.map(f64::from),
        tags,
        metadata,
        user_id,
    )
}

/// memori 0.3.0 and 0.4.0's memori_store_batch (no event_at).
#[pg_extern(sql = false)]
fn store_memories(
    contents: Option<Vec<Option<String>>>,
    memory_type: Option<&str>,
    conversation_id: Option<Uuid>,
    importance: Option<f64>,
    tags: Option<Vec<Option<String>>>,
    metadata: Option<JsonbArg>,
    user_id: Option<&str>,
) -> SetOfIterator<'static, Uuid> {
    memori_store_batch_0_5(
        contents,
        memory_type,
        conversation_id,
        importance,
        tags,
        metadata,
        user_id,
        None,
    )
}

#[pg_extern(sql = false)]
fn memori_update(
    memory_id: Option<Uuid>,
    content: Option<&str>,
    memory_type: Option<&str>,
    importance: Option<f32>,
    tags: Option<Vec<Option<String>>>,
    metadata: Option<JsonbArg>,
) -> bool {
    update_memory(
        memory_id,
        content,
        memory_type,
        importance.map(f64::from),
        tags,
        metadata,
    )
}

// memori_relate

/// memori 0.1.0 and 0.2.0's memori_relate(..., importance real, ...), for a database not yet
/// updated to this library's version. Not in this version's SQL.
#[pg_extern(sql = false)]
fn memori_relate(
    subject: Option<&str>,
    predicate: Option<&str>,
    object: Option<&str>,
    conversation_id: Option<Uuid>,
    importance: Option<f32>,
    user_id: Option<&str>,
) -> Uuid {
    relate_entities(
        subject,
        predicate,
        object,
        conversation_id,
        importance.map(f64::from),
        user_id,
    )
}
