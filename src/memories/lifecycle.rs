//! The memory lifecycle: promotion (short_term → long_term), expiry, archival, and the cache
//! purge, in one pass: memori_maintain(). The background worker (`worker`) runs the same steps
//! on a timer, committing after each batch.
//!
//! ```text
//!   short_term ──(accessed memori.promote_after_accesses times)──> long_term
//!       │                                                            │
//!       └─(expires_at passed)─> expired: deleted                    └─(not accessed for
//!                               (archived if memori.keep_expired)       memori.archive_threshold_days)
//!                                                                       ─> archived (rules never)
//! ```
//!
//! Every step works in batches of at most memori.maintenance_batch_size rows and skips rows
//! that another transaction has locked (`FOR UPDATE SKIP LOCKED`): a tenant holding a row never
//! makes maintenance wait, and the row is handled by a later pass.

use crate::base::errors::{OrRaise, Result};
use crate::base::gucs;
use crate::base::memory::{self, MemoryType};
use crate::base::spi::spi;
use pgrx::prelude::*;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pass {
    pub expired: i64,
    pub archived: i64,
    pub promoted: i64,
    pub cache_purged: i64,
}

/// One kind of housekeeping, done a batch at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Counts accesses deferred from read-only transactions (`accesses`).
    Accesses,
    Promote,
    Expire,
    Archive,
    PurgeCache,
}

impl Step {
    /// In the order a pass runs them: deferred accesses counted first, then promotion, so a
    /// memory accessed often enough is kept rather than expired.
    pub const ALL: [Step; 5] = [
        Step::Accesses,
        Step::Promote,
        Step::Expire,
        Step::Archive,
        Step::PurgeCache,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Accesses => "accesses",
            Step::Promote => "promote",
            Step::Expire => "expire",
            Step::Archive => "archive",
            Step::PurgeCache => "purge_cache",
        }
    }

    /// On tables Citus distributes: the whole step in one statement over every shard (Citus
    /// cannot take `LIMIT ... FOR UPDATE SKIP LOCKED` across shards), waiting on rows other
    /// transactions hold at most memori.maintenance_lock_timeout. None for the cache, which
    /// stays on the coordinator.
    fn distributed_sql(self) -> Option<(String, Vec<pgrx::datum::DatumWithOid<'static>>)> {
        let long_term = MemoryType::LongTerm.as_str();
        let not_expired = memory::live("", memory::At::Now, false, memory::Archived::Included);
        let (promotes, archivable) = (
            MemoryType::sql_array(MemoryType::promotes),
            MemoryType::sql_array(MemoryType::archivable),
        );
        match self {
            Step::Promote => Some((
                format!("UPDATE memori_memories SET memory_type = '{long_term}', expires_at = NULL, updated_at = now()
                  WHERE memory_type::pg_catalog.text = ANY ({promotes}) AND access_count >= $1
                    AND {not_expired}
                 RETURNING 1"),
                vec![gucs::promote_after_accesses().into()],
            )),
            Step::Expire if gucs::keep_expired() => Some((
                "UPDATE memori_memories SET is_archived = true, updated_at = now()
                  WHERE expires_at <= now() AND NOT is_archived RETURNING 1".to_string(),
                vec![],
            )),
            Step::Expire => Some((
                "DELETE FROM memori_memories WHERE expires_at <= now() RETURNING 1".to_string(),
                vec![],
            )),
            Step::Archive => Some((
                format!("UPDATE memori_memories SET is_archived = true, updated_at = now()
                  WHERE NOT is_archived AND memory_type::pg_catalog.text = ANY ({archivable})
                    AND coalesce(last_accessed_at, updated_at) < now() - make_interval(days => $1)
                 RETURNING 1"),
                vec![gucs::archive_threshold_days().into()],
            )),
            Step::PurgeCache | Step::Accesses => None,
        }
    }

    /// Handles at most `limit` rows (all of them on distributed tables); returns how many it
    /// handled.
    pub fn batch(self, limit: i64) -> Result<i64> {
        if self == Step::Accesses {
            // Once per pass (0 ends the step's loop), whatever it counted.
            count_deferred_accesses()?;
            return Ok(0);
        }
        if let Some((sql, args)) = self
            .distributed_sql()
            .filter(|_| crate::base::catalog::distributed().unwrap_or(false))
        {
            return Spi::connect_mut(|c| c.update(&sql, None, &args).map(|t| t.len() as i64))
                .map_err(spi);
        }
        let long_term = MemoryType::LongTerm.as_str();
        let not_expired = memory::live("", memory::At::Now, false, memory::Archived::Included);
        let (promotes, archivable) = (
            MemoryType::sql_array(MemoryType::promotes),
            MemoryType::sql_array(MemoryType::archivable),
        );
        let (sql, args): (String, Vec<pgrx::datum::DatumWithOid>) = match self {
            Step::Promote => (
                format!("WITH c AS (SELECT id, user_id FROM memori_memories
                             WHERE memory_type::pg_catalog.text = ANY ({promotes}) AND access_count >= $1
                               AND {not_expired}
                             LIMIT $2 FOR UPDATE SKIP LOCKED),
                      p AS (UPDATE memori_memories m SET memory_type = '{long_term}', expires_at = NULL, updated_at = now()
                              FROM c WHERE m.user_id OPERATOR(pg_catalog.=) c.user_id AND m.id = c.id RETURNING 1)
                 SELECT pg_catalog.count(*) FROM p"),
                vec![gucs::promote_after_accesses().into(), limit.into()],
            ),
            Step::Expire if gucs::keep_expired() => (
                "WITH c AS (SELECT id, user_id FROM memori_memories WHERE expires_at <= now() AND NOT is_archived
                             LIMIT $1 FOR UPDATE SKIP LOCKED),
                      e AS (UPDATE memori_memories m SET is_archived = true, updated_at = now() FROM c WHERE m.user_id OPERATOR(pg_catalog.=) c.user_id AND m.id = c.id RETURNING 1)
                 SELECT pg_catalog.count(*) FROM e".to_string(),
                vec![limit.into()],
            ),
            Step::Expire => (
                "WITH c AS (SELECT id, user_id FROM memori_memories WHERE expires_at <= now()
                             LIMIT $1 FOR UPDATE SKIP LOCKED),
                      e AS (DELETE FROM memori_memories m USING c WHERE m.user_id OPERATOR(pg_catalog.=) c.user_id AND m.id = c.id RETURNING 1)
                 SELECT pg_catalog.count(*) FROM e".to_string(),
                vec![limit.into()],
            ),
            Step::Archive => (
                format!("WITH c AS (SELECT id, user_id FROM memori_memories
                             WHERE NOT is_archived AND memory_type::pg_catalog.text = ANY ({archivable})
                               AND coalesce(last_accessed_at, updated_at) < now() - make_interval(days => $1)
                             LIMIT $2 FOR UPDATE SKIP LOCKED),
                      a AS (UPDATE memori_memories m SET is_archived = true, updated_at = now() FROM c WHERE m.user_id OPERATOR(pg_catalog.=) c.user_id AND m.id = c.id RETURNING 1)
                 SELECT pg_catalog.count(*) FROM a"),
                vec![gucs::archive_threshold_days().into(), limit.into()],
            ),
            Step::Accesses => unreachable!("counted above"),
            Step::PurgeCache => (
                "WITH c AS (SELECT ctid FROM memori_embedding_cache
                             WHERE created_at <= now() - make_interval(secs => $1)
                             LIMIT $2 FOR UPDATE SKIP LOCKED),
                      d AS (DELETE FROM memori_embedding_cache e USING c WHERE e.ctid = c.ctid RETURNING 1)
                 SELECT pg_catalog.count(*) FROM d".to_string(),
                vec![(gucs::embedding_cache_ttl().max(0) as f64).into(), limit.into()],
            ),
        };
        Spi::get_one_with_args::<i64>(&sql, &args)
            .map(|n| n.unwrap_or(0))
            .map_err(spi)
    }

    pub fn add(self, pass: &mut Pass, n: i64) {
        match self {
            Step::Promote => pass.promoted += n,
            Step::Expire => pass.expired += n,
            Step::Archive => pass.archived += n,
            Step::PurgeCache => pass.cache_purged += n,
            Step::Accesses => {}
        }
    }
}

/// Counts the accesses made where they could not be counted (read-only or REPEATABLE READ
/// transactions: `accesses`), before promotion, expiry and archival look at the counts. All of
/// them at once (the ring holds at most `accesses::SLOTS`). Not on Citus-distributed tables.
fn count_deferred_accesses() -> Result<i64> {
    if crate::base::catalog::distributed().unwrap_or(false) {
        return Ok(0);
    }
    let taken = crate::memories::accesses::take();
    if taken.is_empty() {
        return Ok(0);
    }
    // By row id alone (the ring holds no user): ids come from one identity, unique in the
    // table, though the key is (user_id, id). Rows another transaction holds are skipped, not
    // waited for, and their accesses go back to the ring for the next pass.
    let (ids, counts): (Vec<i64>, Vec<i64>) = taken.into_iter().unzip();
    let counted: Vec<i64> = Spi::connect_mut(|c| {
        c.update(
            "WITH a AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[])) AS a(id, n)),
                  free AS (SELECT m.id, m.user_id FROM memori_memories m JOIN a ON a.id = m.id FOR UPDATE OF m SKIP LOCKED)
             UPDATE memori_memories m
                SET access_count = m.access_count + a.n::pg_catalog.int4, last_accessed_at = now()
               FROM free JOIN a ON a.id = free.id
              WHERE m.user_id OPERATOR(pg_catalog.=) free.user_id AND m.id = free.id
             RETURNING m.id",
            None,
            &[ids.clone().into(), counts.clone().into()],
        )?
        .map(|r| r.get::<i64>(1).map(|v| v.unwrap_or_default()))
        .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi)?;
    let counted: std::collections::HashSet<i64> = counted.into_iter().collect();
    let skipped: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !counted.contains(id))
        .collect();
    if !skipped.is_empty() {
        // Those that still exist were held by another transaction (a memory deleted since
        // has nothing to count).
        let held = Spi::get_one_with_args::<Vec<i64>>(
            "SELECT pg_catalog.array_agg(m.id) FROM memori_memories m WHERE m.id = ANY ($1::pg_catalog.int8[])",
            &[skipped.into()],
        )
        .map_err(spi)?
        .unwrap_or_default();
        let held: std::collections::HashSet<i64> = held.into_iter().collect();
        for (id, n) in ids.iter().zip(&counts) {
            if held.contains(id) {
                crate::memories::accesses::defer(&vec![*id; *n as usize]);
            }
        }
    }
    Ok(counted.len() as i64)
}

/// One pass of housekeeping over every memory in the current database, in the caller's
/// transaction (batch after batch, answering cancel between them).
pub fn maintain() -> Result<Pass> {
    let limit = gucs::maintenance_batch_size();
    let mut pass = Pass::default();
    for step in Step::ALL {
        loop {
            pgrx::check_for_interrupts!();
            let n = step.batch(limit)?;
            step.add(&mut pass, n);
            if n < limit {
                break;
            }
        }
    }
    Ok(pass)
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
    crate::base::spi::prevent_if_read_only(c"memori_maintain()");
    let p = maintain().or_raise();
    crate::base::stats::maintenance([p.promoted, p.expired, p.archived, p.cache_purged]);
    TableIterator::once((p.expired, p.archived, p.promoted, p.cache_purged))
}
