//! Storing, updating and forgetting memories: the seed's `MemoryManager.store_memory`, inside
//! the database. A memory is embedded with the configured provider and written in the same
//! statement; a near-duplicate of the same user and type refreshes the existing memory instead.

use crate::base::catalog;
use crate::base::errors::{Code, MemoriError, OrRaise, Result};
use crate::base::gucs;
use crate::base::memory::{self, MemoryType};
use crate::base::spi::{opt_one, prevent_if_read_only, spi, Planning};
use crate::base::vector::{indexed_cast, query_vector};
use crate::memories::conversations::{metadata_object, touch_conversation, JsonbArg};
use crate::memories::sketch;
use crate::providers::embedding::{embed_texts, Target};
use crate::tenancy::{self, as_owner_of};
use pgrx::datum::{JsonB, TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;

/// The transaction's now(), as a parameter: Citus refuses now() inside CASE and COALESCE of a
/// distributed write, so memori's writes take it as a value.
/// It is the transaction's start time, read from the backend (no query).
pub fn now() -> Result<TimestampWithTimeZone> {
    // SAFETY: a plain read of the current transaction's start timestamp, which is what now()
    // returns; a timestamptz datum is that int64 by value.
    unsafe {
        let ts = pg_sys::GetCurrentTransactionStartTimestamp();
        <TimestampWithTimeZone as pgrx::FromDatum>::from_datum(pg_sys::Datum::from(ts), false)
    }
    .ok_or_else(|| MemoriError::new(Code::SystemError, "no transaction timestamp"))
}

/// When a new memory of `memory_type` expires by default: short_term memories after
/// memori.short_term_expiry_days, the others never.
pub fn default_expiry(memory_type: &str) -> Result<Option<TimestampWithTimeZone>> {
    if !MemoryType::parse(memory_type).is_ok_and(MemoryType::expires_by_default) {
        return Ok(None);
    }
    crate::base::spi::read_one::<TimestampWithTimeZone>(
        "SELECT now() + make_interval(days => $1)",
        &[gucs::short_term_expiry_days().into()],
    )
}

/// One memory to write, with its embedding already computed.
pub struct NewMemory<'a> {
    pub user: &'a str,
    pub content: &'a str,
    pub memory_type: &'a str,
    pub conversation_id: Option<Uuid>,
    pub importance: f32,
    pub tags: &'a [String],
    pub entities: &'a [String],
    pub metadata: &'a JsonB,
    /// Given by the caller; None gives a short_term memory the default expiry.
    pub expires_at: Option<TimestampWithTimeZone>,
    /// When what it says happened, if the caller said.
    pub event_at: Option<TimestampWithTimeZone>,
    pub embedding: &'a [f32],
}

/// Serialises near-duplicate checks for one user and memory type until commit: two sessions
/// storing near-duplicates at once would both miss the other's uncommitted row; this way the
/// second sees the first and refreshes it. The lock is a row of memori_store_locks, which no
/// tenant can read or lock (an advisory lock's key could be taken by anyone to block this
/// user's stores). A database still at 0.1.0 has no such table until it is updated: 0.1.0's
/// advisory lock then. Runs as the owner, once per store call.
pub fn lock_for_dedup(user: &str, memory_type: &str) -> Result<()> {
    if !crate::base::catalog::table_exists(c"memori_store_locks")? {
        return Spi::run_with_args(
            "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1::pg_catalog.text || '/'::pg_catalog.text || $2::pg_catalog.text, 7237954148::bigint))",
            &[user.into(), memory_type.into()],
        )
        .map_err(spi);
    }
    Spi::run_with_args(
        "INSERT INTO memori_store_locks (user_id, memory_type) VALUES ($1::pg_catalog.text, $2::pg_catalog.text)
         ON CONFLICT (user_id, memory_type) DO NOTHING",
        &[user.into(), memory_type.into()],
    )
    .map_err(spi)?;
    // An UPDATE, not SELECT ... FOR UPDATE: under REPEATABLE READ or SERIALIZABLE, a store
    // whose snapshot predates another store's commit then fails with 40001 (retry it) instead
    // of missing that store's row and inserting a twin.
    Spi::run_with_args(
        "UPDATE memori_store_locks SET user_id = user_id
          WHERE user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND memory_type OPERATOR(pg_catalog.=) $2::pg_catalog.text",
        &[user.into(), memory_type.into()],
    )
    .map_err(spi)
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Written {
    Inserted,
    /// Merged into a near-duplicate (its similarity; 1 for a relationship's identical triple).
    Merged(f64),
}

/// The relationship triple a memory's metadata carries (memori_relate writes one), trimmed.
fn triple(metadata: &JsonB) -> Option<[String; 3]> {
    let get = |k: &str| {
        metadata
            .0
            .get(k)?
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Some([get("subject")?, get("predicate")?, get("object")?])
}

/// The SQL of a memory's full-text document from parameters `$content` and `$config` (the text
/// search configuration).
fn document_sql(content: usize, config: usize) -> String {
    crate::base::text::document_sql(
        &format!("${content}::pg_catalog.text"),
        &format!("${config}::pg_catalog.text::pg_catalog.regconfig"),
    )
}

/// Which memories a write compares its memory with, looking for a near-duplicate.
pub enum Scope {
    /// Every memory of the user, type and conversation (the definition).
    All,
    /// For a large scope (`dedup_by_index`): the memories of that scope nearest to the
    /// embedding through the HNSW index (`nearest_by_index`); every memory (`All`) when the
    /// index pass comes back short.
    ByIndex,
    /// Only these (memory_ids): a batch's pass showed that no other one reaches the threshold.
    /// Empty: none can, and the memory is inserted.
    Among(Vec<Uuid>),
}

/// For a batch of embeddings of one width, what can each reach at memori.dedup_threshold, found
/// in one statement instead of one comparison with every memory of the user per element:
/// `old[i]`, whether some memory stored before the call (same user, type, conversation, model,
/// live) is within reach of element i, and `earlier[i]`, the earlier elements within its reach.
/// Element i then compares only with the memories that elements in `earlier[i]` wrote, unless
/// `old[i]` sends it through the full comparison: a memory the batch wrote holds the embedding
/// of the element that wrote it last, and one it did not write is taken as this pass read it.
/// Other stores of this user and type wait for the batch (the caller holds `lock_for_dedup`,
/// taken before the pass); writers that take no such lock (memori_update, the maintenance
/// pass's promotion, memori_import, memori_reembed) may change a memory while the batch runs,
/// and the batch then decides as if they had committed after it (one store at a time saw what
/// had committed before each of its statements). The pass is a superset test (a hair below the
/// threshold); the write's own comparison decides. None for a single memory, a relationship
/// (compared by triple), mixed widths, a batch of more than `REACH_MAX_FLOATS` floats (its
/// vectors go to the pass as one array: memory, and PostgreSQL's array size limit), or a batch
/// whose elements reach more than `REACH_PER_ELEMENT` others each on average (a threshold set
/// very low): each is then compared in full, and the pass's answer stays bounded.
pub struct Reach {
    pub old: Vec<bool>,
    pub earlier: Vec<Vec<usize>>,
}

const REACH_PER_ELEMENT: usize = 8;
/// 16 MB of float4: 10,000 texts of 384 dimensions, 2,730 of 1,536.
const REACH_MAX_FLOATS: usize = 1 << 22;

fn merge_reach(
    target: &Target,
    c: &Common,
    conversation_id: Option<Uuid>,
    vectors: &[Vec<f32>],
) -> Result<Option<Reach>> {
    let n = vectors.len();
    let dims = vectors.first().map_or(0, Vec::len);
    if n < 2
        || dims == 0
        || c.memory_type == MemoryType::Relationship.as_str()
        || n.saturating_mul(dims) > REACH_MAX_FLOATS
        || vectors.iter().any(|v| v.len() != dims)
    {
        return Ok(None);
    }
    let live = memory::live(
        "m.",
        memory::At::Now,
        catalog::has_validity()?,
        memory::Archived::Included,
    );
    let cast = indexed_cast(dims);
    // The elements as one flat real[], sliced back into vectors of the width; the memories'
    // side computed as write() computes it (same casts, same expression), so a pair that
    // reaches the threshold there reaches it here. The memories are read once, each compared
    // with the batch's elements (a lateral subquery the planner cannot flatten): joined the
    // other way round, the user's memories were kept in a tuplestore (on disk past work_mem:
    // 30 MB for 20,000 of 384 dimensions) and read again for every element, most of the pass's
    // time.
    //
    // With sketches (0.5.0, at widths where they rule unrelated memories out: `sketch::prunes`),
    // the pass first reads the memories' sketches from idx_memori_mem_dedup alone and compares
    // each with the elements' (see sketch::prefilter); then only the memories some element's
    // sketch does not rule out are read whole, each once, and compared with those elements.
    let (sketched, reach, ords, among) = if sketch::prunes(dims, gucs::dedup_threshold())
        && catalog::has_dedup_scope()?
    {
        let margin = sketch::margin(dims);
        let scope = sketch::in_scope("m", "$3", "$4", dims)?;
        let element = sketch::sketch_expr(&format!(
            "(($1::pg_catalog.float4[])[(i - 1) * {dims} + 1 : i * {dims}])::vector"
        ))?;
        (
            format!(
                ", q1 AS MATERIALIZED (
                   SELECT i AS ord, {element} AS s
                     FROM pg_catalog.generate_series(1, $2::pg_catalog.int4) i),
                 p AS MATERIALIZED (
                   SELECT m.id, pg_catalog.array_agg(r.ord) AS ords
                     FROM (SELECT m.id, m.dedup_sketch FROM memori_memories m
                            WHERE {scope} OFFSET 0) m
                    CROSS JOIN LATERAL (SELECT q1.ord FROM q1
                                         WHERE (m.dedup_sketch <#> q1.s) <= {margin}::pg_catalog.float8 - $7::pg_catalog.float8
                                        OFFSET 0) r
                    GROUP BY m.id)"
            ),
            " JOIN p ON p.id = m.id",
            ", p.ords",
            "q.ord OPERATOR(pg_catalog.=) ANY (m.ords) AND",
        )
    } else {
        (String::new(), "", "", "")
    };
    let sql = format!(
        "WITH q AS MATERIALIZED (
           SELECT i AS ord, (($1::pg_catalog.float4[])[(i - 1) * {dims} + 1 : i * {dims}])::{cast} AS v
             FROM pg_catalog.generate_series(1, $2::pg_catalog.int4) i){sketched}
         SELECT r.ord, 0 FROM (SELECT m.embedding::{cast} AS e{ords} FROM memori_memories m{reach}
                 WHERE m.user_id OPERATOR(pg_catalog.=) $3::pg_catalog.text
                   AND m.memory_type::pg_catalog.text = $4::pg_catalog.text
                   AND m.conversation_id IS NOT DISTINCT FROM $5::pg_catalog.uuid
                   AND m.embedding_model = $6::pg_catalog.text AND m.embedding_dims = {dims}
                   AND {live} OFFSET 0) m
          CROSS JOIN LATERAL (SELECT q.ord FROM q
                               WHERE {among} 1::pg_catalog.float8 - (m.e <=> q.v) >= $7::pg_catalog.float8
                              OFFSET 0) r
          GROUP BY r.ord
         UNION ALL
         SELECT a.ord, b.ord FROM q a, q b
          WHERE b.ord < a.ord AND 1::pg_catalog.float8 - (a.v <=> b.v) >= $7::pg_catalog.float8
         LIMIT $8::pg_catalog.int8"
    );
    let most = n * REACH_PER_ELEMENT;
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let args: Vec<pgrx::datum::DatumWithOid> = vec![
        flat.into(),
        (n as i32).into(),
        c.user.as_str().into(),
        c.memory_type.as_str().into(),
        conversation_id.into(),
        target.label().into(),
        (gucs::dedup_threshold() - 1e-6).into(),
        (most as i64 + 1).into(),
    ];
    // The batch is read again for every memory of the user and every element: work_mem for this
    // statement holds it (past work_mem it went to a temporary file, read back each time: 2,700
    // texts of 384 dimensions against 500 memories, 2.75 s at 4 MB, 1.33 s in memory). At most
    // twice REACH_MAX_FLOATS' bytes (the tuples' memory rounds up to a power of two).
    let batch_kb = n * (dims * 4 + 64) * 2 / 1024 + 1024;
    // SAFETY: a GUC nest level closed below, or by the abort of an ERROR.
    let nest = unsafe { pgrx::pg_sys::NewGUCNestLevel() };
    // SAFETY: a read of the backend's current setting.
    if batch_kb > usize::try_from(unsafe { pgrx::pg_sys::work_mem }).unwrap_or(0) {
        if let Ok(v) = std::ffi::CString::new(batch_kb.to_string()) {
            gucs::set_in_nest_level(c"work_mem", &v);
        }
    }
    let pairs = Spi::connect(|client| {
        crate::base::spi::select_kept(client, &sql, &args, crate::base::spi::Planning::ByValues)?
            .map(|r| {
                Ok((
                    r.get::<i32>(1)?.unwrap_or_default(),
                    r.get::<i32>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
    });
    // SAFETY: closes the nest level opened above.
    unsafe { pgrx::pg_sys::AtEOXact_GUC(true, nest) };
    let pairs = pairs.map_err(spi)?;
    if pairs.len() > most {
        return Ok(None);
    }
    let mut reach = Reach {
        old: vec![false; n],
        earlier: vec![Vec::new(); n],
    };
    for (i, j) in pairs {
        let Some(i) = usize::try_from(i).ok().and_then(|i| i.checked_sub(1)) else {
            continue;
        };
        if i >= n {
            continue;
        }
        match usize::try_from(j).ok().and_then(|j| j.checked_sub(1)) {
            None => reach.old[i] = true,
            Some(j) if j < i => reach.earlier[i].push(j),
            Some(_) => {}
        }
    }
    Ok(Some(reach))
}

/// The memories an index pass reads nearest to a write's embedding: so many, in its scope.
const PROBED: usize = 10;
/// hnsw.ef_search of that pass: 4 × PROBED, as a search asks 4 × k (pgvector's default, 40). A
/// near-duplicate sits much nearer than the rest, where a search's 1000 (for the 40th nearest)
/// cost 55 ms a store for a user of 200,000 (`make bench`, random vectors) against 1.5.
const PROBE_EF: i32 = 4 * PROBED as i32;
/// hnsw.max_scan_tuples of that pass: where the scope's memories are not among the nearest
/// entries of the index (other users', or the user's of other types, crowd the neighbourhood),
/// the pass gives up after this many and the check compares with every memory of the scope.
const PROBE_SCAN: u32 = 1_000;

/// Up to PROBED memories of `m`'s scope (user, type, conversation, model, width, live) nearest
/// to its embedding, through the width's HNSW index: memori's index pass, with a search's
/// settings (`search::in_index_pass`: iterative scan in relaxed order) but hnsw.ef_search
/// PROBE_EF and at most PROBE_SCAN index entries. Its cost is bounded whatever the user's size,
/// where comparing with every memory of the scope (even through the sketches) grows with it:
/// 340 ms a store for a user of 200,000 memories in `make bench`. None when there is no index
/// for the width, or when the pass returns fewer (the scope is smaller, or the pass gave up):
/// then the caller compares with every memory.
fn nearest_by_index(target: &Target, m: &NewMemory, live: &str) -> Result<Option<Vec<Uuid>>> {
    let dims = m.embedding.len();
    if dims == 0 || !catalog::has_vector_index(dims)? {
        return Ok(None);
    }
    let (cast, q_vector) = (indexed_cast(dims), query_vector(5, dims));
    let sql = format!(
        "SELECT m.memory_id FROM memori_memories m
          WHERE m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text
            AND m.memory_type::pg_catalog.text = $2::pg_catalog.text
            AND m.conversation_id IS NOT DISTINCT FROM $3::pg_catalog.uuid
            AND m.embedding_model = $4::pg_catalog.text AND m.embedding_dims = {dims}
            AND {live}
          ORDER BY m.embedding::{cast} <=> {q_vector}
          LIMIT {PROBED}"
    );
    let args: Vec<pgrx::datum::DatumWithOid> = vec![
        m.user.into(),
        m.memory_type.into(),
        m.conversation_id.into(),
        target.label().into(),
        m.embedding.to_vec().into(),
    ];
    let ids = crate::memories::search::in_index_pass(PROBE_EF, PROBE_SCAN, || {
        Spi::connect(|client| {
            crate::base::spi::select_kept(client, &sql, &args, Planning::ByValues)?
                .map(|r| r.get::<Uuid>(1))
                .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
        })
        .map_err(spi)
    })?;
    let ids: Vec<Uuid> = ids.into_iter().flatten().collect();
    Ok((ids.len() == PROBED).then_some(ids))
}

/// Up to this many memories of a user, a near-duplicate check compares with every one of its
/// scope even where memori.exact_search_rows is set lower (0: a search always through the
/// index): it then reads at most this many sketches.
const EXACT_DEDUP_AT_LEAST: i64 = 1_000;

/// Whether the near-duplicate checks of a store of `vectors` (one width) go through the HNSW
/// index (`Scope::ByIndex`): for a user with more than memori.exact_search_rows memories (and
/// EXACT_DEDUP_AT_LEAST), counted from the user index only to one past the limit (about 1 ms;
/// counting the check's own scope, the user's memories of that type and width, took 90 ms for a
/// user of 200,000: PostgreSQL read them through the user index, not the sketches' one). A
/// scope of few memories in such a user (a rare type) gives up its index pass early
/// (PROBE_SCAN) and is compared whole. Not for a conversation's memories (the pass would look
/// for a conversation's few among the user's many, and its batch keeps its first statement),
/// relationships (compared by triple), mixed widths, nor on Citus (the pass's settings travel
/// to the worker once per memory and last there to the end of the transaction).
fn dedup_by_index(c: &Common, conversation_id: Option<Uuid>, vectors: &[Vec<f32>]) -> Result<bool> {
    use crate::memories::search::{user_rows, MAX_COUNTED};
    let dims = vectors.first().map_or(0, Vec::len);
    if dims == 0
        || conversation_id.is_some()
        || c.memory_type == MemoryType::Relationship.as_str()
        || vectors.iter().any(|v| v.len() != dims)
        || catalog::distributed()?
    {
        return Ok(false);
    }
    let most = gucs::exact_search_rows().max(EXACT_DEDUP_AT_LEAST);
    Ok(user_rows(&c.user, most.saturating_add(1).min(MAX_COUNTED))? > most)
}

/// Writes one memory, or merges it into a near-duplicate; returns the id and what happened.
/// A near-duplicate is a memory of the same user, type and conversation (or both without
/// one), embedded by the same model, not expired, whose similarity is at least
/// memori.dedup_threshold, found by comparing with every such memory (exact: other users'
/// rows never hide it), or, where that scope is large (`dedup_by_index`), with those the HNSW
/// index finds nearest (`Scope::ByIndex`). Relationships are near-duplicates only with the
/// identical triple (subject, predicate, object, ignoring case), or without triples the
/// identical content:
/// "A references B" and "B references A" embed alike and mean different things. A merge keeps
/// the id and takes the new content, embedding, and the larger importance; tags, entities and
/// metadata are united. The caller holds `lock_for_dedup` for that user and type (store_texts
/// does). `scope` narrows the comparison when a batch's pass (`merge_reach`) has shown that
/// no other memory can reach the threshold.
fn write(target: &Target, m: &NewMemory, with_text: bool, scope: Scope) -> Result<(Uuid, Written)> {
    // Superseded memories are history: a new fact never merges into one.
    let live = memory::live(
        "m.",
        memory::At::Now,
        catalog::has_validity()?,
        memory::Archived::Included,
    );
    let dims = m.embedding.len();
    let (cast, q_vector) = (indexed_cast(dims), query_vector(5, dims));
    let config = gucs::text_search_config();
    // A database not updated to 0.3.0 has no full-text document.
    let set_tsv = if with_text {
        format!("content_tsv = {},", document_sql(2, 14))
    } else {
        String::new()
    };
    let threshold = gucs::dedup_threshold();
    // Set only where it applies (`dedup_by_index`: no relationship, a threshold below 1).
    let scope = match scope {
        Scope::ByIndex => match nearest_by_index(target, m, &live)? {
            Some(ids) => Scope::Among(ids),
            None => Scope::All,
        },
        s => s,
    };
    // Which memories the near-duplicate check reads: none when the batch's pass showed that
    // none can reach the threshold (straight to the INSERT).
    let among = match &scope {
        Scope::All | Scope::ByIndex => Some(""),
        Scope::Among(ids) if ids.is_empty() => None,
        Scope::Among(_) => {
            Some("AND m.memory_id OPERATOR(pg_catalog.=) ANY ($17::pg_catalog.uuid[])")
        }
    };
    if let Some(among) = among.filter(|_| threshold < 1.0) {
        // The plan, where it does not depend on the user's size: through the sketches' index,
        // or the batch's few memories by id. PostgreSQL planned these anew at every run (a
        // generic plan's estimates never look cheaper): 0.6 ms of a store's 15.
        let mut planning = matches!(scope, Scope::Among(_)).then_some(Planning::Generic);
        let nearest = if m.memory_type == MemoryType::Relationship.as_str() {
            format!("SELECT id, 1::pg_catalog.float8 AS similarity FROM memori_memories m
              WHERE m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND m.memory_type::pg_catalog.text = $3::pg_catalog.text
                AND m.conversation_id IS NOT DISTINCT FROM $4::pg_catalog.uuid
                AND {live}
                AND CASE WHEN $15::pg_catalog.text[] IS NOT NULL
                         THEN ARRAY[pg_catalog.lower(pg_catalog.btrim(m.metadata OPERATOR(pg_catalog.->>) 'subject'::pg_catalog.text)),
                                    pg_catalog.lower(pg_catalog.btrim(m.metadata OPERATOR(pg_catalog.->>) 'predicate'::pg_catalog.text)),
                                    pg_catalog.lower(pg_catalog.btrim(m.metadata OPERATOR(pg_catalog.->>) 'object'::pg_catalog.text))]
                              OPERATOR(pg_catalog.=) $15::pg_catalog.text[]
                         ELSE pg_catalog.lower(pg_catalog.btrim(m.content)) = pg_catalog.lower(pg_catalog.btrim($2::pg_catalog.text))
                              AND NOT m.metadata OPERATOR(pg_catalog.?&) ARRAY['subject', 'predicate', 'object']::pg_catalog.text[] END
              ORDER BY m.id LIMIT 1"
            )
        } else {
            // Every memory of the scope, unless its sketch rules it out (a bound on the
            // similarity, read from idx_memori_mem_dedup alone: see sketch::prefilter); the
            // rows left are read whole and compared. A similarity pgvector cannot give (NaN:
            // a zero vector, or one too short, stored before 0.5.0 refused them) is none: NaN
            // is at least any threshold in SQL and sorts first, so such a row was merged into.
            let prefilter = match scope {
                Scope::All if sketch::prunes(dims, threshold) && catalog::has_dedup_scope()? => {
                    planning = Some(Planning::Generic);
                    sketch::prefilter(dims)?
                }
                _ => String::new(),
            };
            format!(
                "SELECT id, NULLIF(1::pg_catalog.float8 - (m.embedding::{cast} <=> {q_vector}), 'NaN'::pg_catalog.float8) AS similarity
                   FROM memori_memories m
                  WHERE m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND m.memory_type::pg_catalog.text = $3::pg_catalog.text
                    AND m.conversation_id IS NOT DISTINCT FROM $4::pg_catalog.uuid
                    AND m.embedding_model = $6::pg_catalog.text AND m.embedding_dims = {dims}
                    AND {live} {among} {prefilter}
                  ORDER BY similarity DESC NULLS LAST, m.id
                  LIMIT 1"
            )
        };
        // Only when given: a database not yet updated has no event_at, and no caller there
        // can give one.
        let set_event = if m.event_at.is_some() {
            "event_at = $16::pg_catalog.timestamptz,"
        } else {
            ""
        };
        let sql = format!(
            "WITH nearest AS ({nearest})
             UPDATE memori_memories m
                SET content = $2::pg_catalog.text,
                    embedding = $5::real[]::vector,
                    embedding_model = $6::pg_catalog.text,
                    {set_tsv}
                    context_tags = ARRAY(SELECT DISTINCT pg_catalog.unnest(m.context_tags OPERATOR(pg_catalog.||) $8::pg_catalog.text[]) ORDER BY 1),
                    related_entities = ARRAY(SELECT DISTINCT pg_catalog.unnest(m.related_entities OPERATOR(pg_catalog.||) $9::pg_catalog.text[]) ORDER BY 1),
                    importance_score = greatest(m.importance_score, $7::real),
                    metadata = m.metadata OPERATOR(pg_catalog.||) $10::pg_catalog.jsonb,
                    access_count = m.access_count + 1,
                    last_accessed_at = now(),
                    is_archived = false,
                    updated_at = now(),
                    {set_event}
                    expires_at = CASE WHEN m.expires_at IS NULL THEN NULL
                                      ELSE greatest(m.expires_at, coalesce($11::pg_catalog.timestamptz, $12::pg_catalog.timestamptz)) END
               FROM nearest
              WHERE m.user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND m.id = nearest.id
                AND nearest.similarity >= $13::pg_catalog.float8
          RETURNING m.memory_id, nearest.similarity"
        );
        let triple = if m.memory_type == MemoryType::Relationship.as_str() {
            triple(m.metadata).map(|t| t.map(|s| s.to_lowercase()).to_vec())
        } else {
            None
        };
        let args: Vec<pgrx::datum::DatumWithOid> = vec![
            m.user.into(),
            m.content.into(),
            m.memory_type.into(),
            m.conversation_id.into(),
            m.embedding.to_vec().into(),
            target.label().into(),
            m.importance.into(),
            m.tags.to_vec().into(),
            m.entities.to_vec().into(),
            JsonB(m.metadata.0.clone()).into(),
            m.expires_at.into(),
            default_expiry(m.memory_type)?.into(),
            threshold.into(),
            config.clone().into(),
            triple.into(),
        ];
        let mut args = args;
        // $16 is always given when $17 is: a NULL event_at that the statement does not read.
        if m.event_at.is_some() || matches!(scope, Scope::Among(_)) {
            args.push(m.event_at.into());
        }
        if let Scope::Among(ids) = scope {
            args.push(ids.into());
        }
        // Kept plans: a batch runs this and the INSERT once per memory.
        let merged = Spi::connect_mut(|client| {
            let rows = crate::base::spi::write_kept(client, &sql, &args, planning)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            Ok(row
                .get::<Uuid>(1)?
                .map(|id| (id, row.get::<f64>(2).ok().flatten())))
        })
        .map_err(spi)?;
        if let Some((id, similarity)) = merged {
            return Ok((id, Written::Merged(similarity.unwrap_or(1.0))));
        }
    }
    let (tsv_col, tsv_val) = if with_text {
        (", content_tsv", format!(", {}", document_sql(3, 13)))
    } else {
        ("", String::new())
    };
    let mut args: Vec<pgrx::datum::DatumWithOid> = vec![
        m.conversation_id.into(),
        m.user.into(),
        m.content.into(),
        m.memory_type.into(),
        m.embedding.to_vec().into(),
        target.label().into(),
        m.importance.into(),
        m.tags.to_vec().into(),
        m.entities.to_vec().into(),
        JsonB(m.metadata.0.clone()).into(),
        m.expires_at.into(),
        default_expiry(m.memory_type)?.into(),
    ];
    if with_text {
        args.push(config.into());
    }
    let (event_col, event_val) = if m.event_at.is_some() {
        args.push(m.event_at.into());
        (
            ", event_at",
            format!(", ${}::pg_catalog.timestamptz", args.len()),
        )
    } else {
        ("", String::new())
    };
    let sql = format!(
            "INSERT INTO memori_memories (conversation_id, user_id, content, memory_type, embedding,
                                      embedding_model, importance_score, context_tags,
                                      related_entities, metadata, expires_at{tsv_col}{event_col})
         VALUES ($1, $2, $3, $4, $5::real[]::vector, $6, $7::real, $8, $9, $10,
                 coalesce($11::pg_catalog.timestamptz, $12::pg_catalog.timestamptz){tsv_val}{event_val})
         RETURNING memory_id"
        );
    Spi::connect_mut(|client| {
        let rows = crate::base::spi::write_kept(client, &sql, &args, None)?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get::<Uuid>(1)
    })
    .map_err(spi)?
    .map(|id| (id, Written::Inserted))
    .ok_or_else(|| MemoriError::new(Code::SystemError, "INSERT returned no row"))
}

pub struct Common {
    pub user: String,
    pub memory_type: String,
    pub importance: f32,
    pub tags: Vec<String>,
    pub metadata: JsonB,
    /// When what the memories say happened (memori_store's event_at), if the caller said.
    pub event_at: Option<TimestampWithTimeZone>,
}

pub fn common(
    memory_type: Option<&str>,
    importance: Option<f64>,
    tags: Option<Vec<Option<String>>>,
    metadata: Option<JsonbArg>,
    user_id: Option<&str>,
) -> Result<Common> {
    let user = tenancy::resolve(user_id)?;
    let memory_type = MemoryType::parse(memory_type.unwrap_or("short_term").trim())?;
    let importance = memory::importance(importance.unwrap_or(0.5))?;
    let metadata = metadata_object(metadata)?;
    Ok(Common {
        user,
        memory_type: memory_type.as_str().to_string(),
        importance,
        tags: memory::labels("tags", tags)?,
        metadata,
        event_at: None,
    })
}

/// Stores a memory for the current memori user (or `user_id`) and returns its memory_id.
/// `event_at`: when what it says happened, if known. (The Rust name carries the version: the
/// released SQL names older symbols, see `legacy`.)
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "memori_store", volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
pub(crate) fn memori_store_0_5(
    content: Option<&str>,
    memory_type: default!(Option<&str>, "'short_term'"),
    conversation_id: default!(Option<Uuid>, "NULL"),
    importance: default!(Option<f64>, "0.5"),
    tags: default!(Option<Vec<Option<String>>>, "'{}'"),
    metadata: default!(Option<JsonbArg>, "'{}'"),
    entities: default!(Option<Vec<Option<String>>>, "'{}'"),
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    user_id: default!(Option<&str>, "NULL"),
    event_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> Uuid {
    prevent_if_read_only(c"memori_store()");
    let content = memory::required_text(content, "content").or_raise();
    let mut c = common(memory_type, importance, tags, metadata, user_id).or_raise();
    c.event_at = event_at;
    let entities = memory::labels("entities", entities).or_raise();
    store_texts(&c, &[content], conversation_id, &entities, expires_at)
        .or_raise()
        .remove(0)
}

/// Embeds `texts` in batches and writes (or merges) one memory per text, in order. A merge is
/// reported with one NOTICE per call, naming the memories that took the new content.
pub fn store_texts(
    c: &Common,
    texts: &[&str],
    conversation_id: Option<Uuid>,
    entities: &[String],
    expires_at: Option<TimestampWithTimeZone>,
) -> Result<Vec<Uuid>> {
    let (target, batch) = embed_texts(Some(&c.user), texts)?;
    let written = store_embedded(
        c,
        &target,
        texts,
        &batch.vectors,
        conversation_id,
        entities,
        expires_at,
    )?;
    Ok(written.into_iter().map(|(id, _)| id).collect())
}

/// Writes (or merges) one memory per text with its embedding, in order, as the tables' owner.
#[allow(clippy::too_many_arguments)]
pub fn store_embedded(
    c: &Common,
    target: &Target,
    texts: &[&str],
    vectors: &[Vec<f32>],
    conversation_id: Option<Uuid>,
    entities: &[String],
    expires_at: Option<TimestampWithTimeZone>,
) -> Result<Vec<(Uuid, Written)>> {
    let with_text = catalog::has_text_search()?;
    // Tenants hold no write privileges: memori writes as the tables' owner, always for the
    // user resolved above. The conversation row is locked only now, after the (slow)
    // embedding: other stores into it wait for this transaction's writes, never for its model.
    let written = as_owner_of(c"memori_memories", || {
        if let Some(conversation) = conversation_id {
            touch_conversation(conversation, &c.user)?;
        }
        // A user above memori.exact_search_rows: each memory's check goes through the index,
        // and the batch's pass (which reads every memory of the scope) does not run.
        let (reach, by_index) = if gucs::dedup_threshold() < 1.0 {
            lock_for_dedup(&c.user, &c.memory_type)?;
            if dedup_by_index(c, conversation_id, vectors)? {
                (None, true)
            } else {
                (merge_reach(target, c, conversation_id, vectors)?, false)
            }
        } else {
            (None, false)
        };
        // The memory each element wrote (inserted or merged into), for the later ones.
        let mut wrote: Vec<Uuid> = Vec::with_capacity(texts.len());
        texts
            .iter()
            .zip(vectors)
            .enumerate()
            .map(|(i, (text, embedding))| {
                let scope = match &reach {
                    Some(r) if !r.old[i] => {
                        let mut ids: Vec<Uuid> = r.earlier[i].iter().map(|&j| wrote[j]).collect();
                        ids.sort_unstable_by_key(|u| *u.as_bytes());
                        ids.dedup();
                        Scope::Among(ids)
                    }
                    _ if by_index => Scope::ByIndex,
                    _ => Scope::All,
                };
                let done = write(
                    target,
                    &NewMemory {
                        user: &c.user,
                        content: text,
                        memory_type: &c.memory_type,
                        conversation_id,
                        importance: c.importance,
                        tags: &c.tags,
                        entities,
                        metadata: &c.metadata,
                        expires_at,
                        event_at: c.event_at,
                        embedding,
                    },
                    with_text,
                    scope,
                )?;
                wrote.push(done.0);
                Ok(done)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let merged: Vec<String> = written
        .iter()
        .filter_map(|(id, w)| match w {
            Written::Merged(s) => Some(format!("{id} (similarity {s:.3})")),
            Written::Inserted => None,
        })
        .collect();
    crate::base::stats::stored(written.len() - merged.len(), merged.len());
    if !merged.is_empty() {
        // At most 10 named: a batch of thousands must not make a message of thousands of ids.
        let more = match merged.len().saturating_sub(10) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        pgrx::notice!(
            "memori: {} of {} memories merged into near-duplicates, which took the new content: {}{more}",
            merged.len(),
            texts.len(),
            merged[..merged.len().min(10)].join(", ")
        );
    }
    Ok(written)
}

/// Stores several memories (one per element of `contents`), embedded in batches; returns their
/// ids in input order. Nothing is written if any element is refused. `event_at` applies to
/// every one (a conversation session's memories share its date).
#[allow(clippy::too_many_arguments)]
#[pg_extern(name = "memori_store_batch", volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
pub(crate) fn memori_store_batch_0_5(
    contents: Option<Vec<Option<String>>>,
    memory_type: default!(Option<&str>, "'short_term'"),
    conversation_id: default!(Option<Uuid>, "NULL"),
    importance: default!(Option<f64>, "0.5"),
    tags: default!(Option<Vec<Option<String>>>, "'{}'"),
    metadata: default!(Option<JsonbArg>, "'{}'"),
    user_id: default!(Option<&str>, "NULL"),
    event_at: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> SetOfIterator<'static, Uuid> {
    prevent_if_read_only(c"memori_store_batch()");
    let contents = contents
        .ok_or_else(|| MemoriError::new(Code::NullValueNotAllowed, "contents must not be NULL"))
        .or_raise();
    crate::providers::embedding::check_batch(contents.len(), "memori_store_batch").or_raise();
    let texts: Vec<&str> = contents
        .iter()
        .enumerate()
        .map(|(n, c)| memory::required_text(c.as_deref(), &format!("contents[{}]", n + 1)))
        .collect::<Result<_>>()
        .or_raise();
    let mut c = common(memory_type, importance, tags, metadata, user_id).or_raise();
    c.event_at = event_at;
    SetOfIterator::new(store_texts(&c, &texts, conversation_id, &[], None).or_raise())
}

/// Changes a memory of the current memori user; re-embeds it when the content changes.
/// Returns false when no such memory exists for this user.
#[pg_extern(name = "memori_update", volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
pub(crate) fn update_memory(
    memory_id: Option<Uuid>,
    content: default!(Option<&str>, "NULL"),
    memory_type: default!(Option<&str>, "NULL"),
    importance: default!(Option<f64>, "NULL"),
    tags: default!(Option<Vec<Option<String>>>, "NULL"),
    metadata: default!(Option<JsonbArg>, "NULL"),
) -> bool {
    prevent_if_read_only(c"memori_update()");
    let Some(memory_id) = memory_id else {
        return false;
    };
    let user = tenancy::resolve(None).or_raise();
    let content = content
        .map(|c| memory::required_text(Some(c), "content"))
        .transpose()
        .or_raise();
    let memory_type = memory_type
        .map(|t| MemoryType::parse(t).map(MemoryType::as_str))
        .transpose()
        .or_raise();
    let importance = importance.map(memory::importance).transpose().or_raise();
    let metadata = metadata.map(|m| metadata_object(Some(m)).or_raise());
    let tags = tags.map(|t| memory::labels("tags", Some(t)).or_raise());
    let embedded = match content {
        Some(c) => {
            let (target, mut batch) = embed_texts(Some(&user), &[c]).or_raise();
            Some((target.label(), batch.vectors.pop().unwrap()))
        }
        None => None,
    };
    let change = Change {
        content,
        embedded,
        memory_type,
        importance,
        tags,
        metadata,
    };
    as_owner_of(c"memori_memories", || update_row(&user, memory_id, change)).or_raise()
}

/// What an update changes (None: unchanged).
pub struct Change<'a> {
    pub content: Option<&'a str>,
    /// The new content's embedding and its model's label.
    pub embedded: Option<(String, Vec<f32>)>,
    pub memory_type: Option<&'a str>,
    pub importance: Option<f32>,
    pub tags: Option<Vec<String>>,
    pub metadata: Option<JsonB>,
}

/// Applies `change` to a memory of `user`; false when there is none. The caller runs it as
/// the tables' owner. A memory that becomes short_term gets the default expiry; one that
/// stops being short_term loses it.
pub fn update_row(user: &str, memory_id: Uuid, change: Change) -> Result<bool> {
    let (label, embedding) = match change.embedded {
        Some((l, v)) => (Some(l), Some(v)),
        None => (None, None),
    };
    // Written only with new content (no CASE around it: Citus refuses the text search
    // configuration's lookup inside one).
    let set_tsv = if change.content.is_some() && catalog::has_text_search()? {
        format!(
            "content_tsv = {},",
            crate::base::text::document_sql(
                "$3::pg_catalog.text",
                "$11::pg_catalog.text::pg_catalog.regconfig"
            )
        )
    } else {
        String::new()
    };
    Ok(opt_one::<bool>(
        &format!(
            "UPDATE memori_memories SET
            content = coalesce($3, content),
            {set_tsv}
            embedding = coalesce($4::real[]::vector, embedding),
            embedding_model = coalesce($5, embedding_model),
            memory_type = coalesce($6, memory_type),
            importance_score = coalesce($7::real, importance_score),
            context_tags = coalesce($8, context_tags),
            metadata = coalesce($9, metadata),
            expires_at = CASE
                WHEN $6 IS NULL OR $6::pg_catalog.text = memory_type::pg_catalog.text THEN expires_at
                WHEN $6::pg_catalog.text = 'short_term'::pg_catalog.text THEN $10::pg_catalog.timestamptz
                WHEN memory_type::pg_catalog.text = 'short_term'::pg_catalog.text THEN NULL
                ELSE expires_at END,
            -- Moves only when something changes (a new embedding alone is no change). The
            -- columns are NOT NULL, so plain equality, with pg_catalog's operators.
            updated_at = CASE
                WHEN coalesce($3::pg_catalog.text, content) OPERATOR(pg_catalog.=) content
                     AND coalesce($6::pg_catalog.text, memory_type::pg_catalog.text) OPERATOR(pg_catalog.=) memory_type::pg_catalog.text
                     AND coalesce($7::real, importance_score) OPERATOR(pg_catalog.=) importance_score
                     AND coalesce($8::pg_catalog.text[], context_tags) OPERATOR(pg_catalog.=) context_tags
                     AND coalesce($9::pg_catalog.jsonb, metadata) OPERATOR(pg_catalog.=) metadata
                THEN updated_at ELSE $12::pg_catalog.timestamptz END
          WHERE memory_id = $1 AND user_id OPERATOR(pg_catalog.=) $2::pg_catalog.text
          RETURNING true"
        ),
        &[
            memory_id.into(),
            user.into(),
            change.content.into(),
            embedding.into(),
            label.into(),
            change.memory_type.into(),
            change.importance.into(),
            change.tags.into(),
            change.metadata.into(),
            default_expiry(MemoryType::ShortTerm.as_str())?.into(),
            gucs::text_search_config().into(),
            now()?.into(),
        ],
    )?
    .unwrap_or(false))
}

/// Deletes a memory of the current memori user. Returns false when there was none.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_forget(memory_id: Option<Uuid>) -> bool {
    prevent_if_read_only(c"memori_forget()");
    let Some(memory_id) = memory_id else {
        return false;
    };
    let user = tenancy::resolve(None).or_raise();
    as_owner_of(c"memori_memories", || {
        opt_one::<bool>(
            "DELETE FROM memori_memories WHERE memory_id = $1 AND user_id OPERATOR(pg_catalog.=) $2::pg_catalog.text RETURNING true",
            &[memory_id.into(), user.into()],
        )
    })
    .or_raise()
    .unwrap_or(false)
}
