//! The memory lifecycle: promotion (short_term → long_term), expiry, archival, and the cache
//! purge, in one pass: memori_maintain(). The background worker (`worker`) runs it on a timer.
//!
//! ```text
//!   short_term ──(accessed memori.promote_after_accesses times)──> long_term
//!       │                                                            │
//!       └─(expires_at passed)─> expired: deleted                    └─(not accessed for
//!                               (archived if memori.keep_expired)       memori.archive_threshold_days)
//!                                                                       ─> archived (rules never)
//! ```

use crate::embedding::purge_cache;
use crate::errors::{spi, OrRaise, Result};
use crate::gucs;
use pgrx::prelude::*;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pass {
    pub expired: i64,
    pub archived: i64,
    pub promoted: i64,
    pub cache_purged: i64,
}

fn count(sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<i64> {
    Spi::get_one_with_args::<i64>(sql, args)
        .map(|n| n.unwrap_or(0))
        .map_err(spi)
}

/// One pass of housekeeping over every memory in the current database.
pub fn maintain() -> Result<Pass> {
    let promoted = count(
        "WITH p AS (UPDATE memori_memories SET memory_type = 'long_term', expires_at = NULL
                     WHERE memory_type = 'short_term' AND access_count >= $1
                       AND (expires_at IS NULL OR expires_at > now())
                    RETURNING 1)
         SELECT count(*) FROM p",
        &[gucs::promote_after_accesses().into()],
    )?;
    let expired = if gucs::keep_expired() {
        count(
            "WITH e AS (UPDATE memori_memories SET is_archived = true
                         WHERE expires_at <= now() AND NOT is_archived RETURNING 1)
             SELECT count(*) FROM e",
            &[],
        )?
    } else {
        count("WITH e AS (DELETE FROM memori_memories WHERE expires_at <= now() RETURNING 1) SELECT count(*) FROM e", &[])?
    };
    let archived = count(
        "WITH a AS (UPDATE memori_memories SET is_archived = true
                     WHERE NOT is_archived AND memory_type <> 'rule'
                       AND coalesce(last_accessed_at, updated_at) < now() - make_interval(days => $1)
                    RETURNING 1)
         SELECT count(*) FROM a",
        &[gucs::archive_threshold_days().into()],
    )?;
    let cache_purged = purge_cache(gucs::embedding_cache_ttl())?;
    Ok(Pass {
        expired,
        archived,
        promoted,
        cache_purged,
    })
}

/// One pass of housekeeping for the current database: promotes short_term memories accessed
/// often enough, expires those past expires_at, archives memories left unused, and purges the
/// embedding cache.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_maintain() -> TableIterator<
    'static,
    (
        name!(expired, i64),
        name!(archived, i64),
        name!(promoted, i64),
        name!(cache_purged, i64),
    ),
> {
    let p = maintain().or_raise();
    TableIterator::once((p.expired, p.archived, p.promoted, p.cache_purged))
}
