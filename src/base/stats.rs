//! Counters since the server started, in shared memory when memori is preloaded
//! (shared_preload_libraries): embedding calls, texts, errors and latency per provider,
//! searches, stores, merges and maintenance passes. `memori_stats()` (SQL, finalize.sql) shows
//! them with the catalog figures; without preloading the counters are reported unavailable.

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Upper bounds of the embedding latency histogram, in milliseconds (and +Inf).
pub const LATENCY_BOUNDS_MS: [u64; 11] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];
/// SQLSTATE classes of embedding errors that are counted apart; the rest count as "other".
pub const ERROR_CLASSES: [&str; 7] = ["08", "22", "28", "53", "54", "58", "other"];
/// Embedding providers, by `gucs::Provider::name` (a test ties the two).
pub const PROVIDERS: [&str; 2] = ["local", "openai"];
/// Chat model APIs (memori_extract, memori_chat), by `providers::llm::Api::name` (a test there
/// ties the two).
pub const CHAT_APIS: [&str; 2] = ["openai", "anthropic"];
/// What extraction did, per decision; "refused" is a supersede memori turned into an add
/// (memori.supersede_min_similarity).
pub const EXTRACT_ACTIONS: [&str; 5] = ["add", "update", "supersede", "none", "refused"];

#[derive(Default)]
pub struct Counters {
    /// Per provider: provider calls, texts computed, failed calls, latency histogram (one more
    /// bucket for +Inf), total latency in microseconds.
    calls: [AtomicU64; PROVIDERS.len()],
    texts: [AtomicU64; PROVIDERS.len()],
    cache_hits: AtomicU64,
    errors: [[AtomicU64; 7]; PROVIDERS.len()],
    latency: [[AtomicU64; 12]; PROVIDERS.len()],
    latency_us: [AtomicU64; PROVIDERS.len()],
    searches: AtomicU64,
    stores: AtomicU64,
    merges: AtomicU64,
    maintenance_passes: AtomicU64,
    maintenance_rows: [AtomicU64; 4],
    /// Per chat API: calls, failed calls by SQLSTATE class, total latency in microseconds.
    chat_calls: [AtomicU64; CHAT_APIS.len()],
    chat_errors: [[AtomicU64; 7]; CHAT_APIS.len()],
    chat_latency_us: [AtomicU64; CHAT_APIS.len()],
    /// Extraction decisions applied, by EXTRACT_ACTIONS.
    extract_decisions: [AtomicU64; 5],
    /// When the counters were last reset (PostgreSQL timestamptz), 0 for never.
    reset_at: AtomicI64,
}

// SAFETY: only atomics, no pointers: valid in shared memory as it is.
unsafe impl PGRXSharedMemory for Counters {}

// SAFETY: one name, used by memori alone.
static COUNTERS: PgAtomic<Counters> = unsafe { PgAtomic::new(c"memori_counters") };
/// Set in the postmaster when memori is preloaded; every backend it forks inherits it.
static AVAILABLE: AtomicBool = AtomicBool::new(false);

/// From _PG_init while shared_preload_libraries loads memori.
#[allow(unexpected_cfgs)] // pg_shmem_init! tests pgrx's version features in this crate
pub fn init() {
    pg_shmem_init!(COUNTERS);
    AVAILABLE.store(true, Relaxed);
}

pub fn available() -> bool {
    AVAILABLE.load(Relaxed)
}

fn with(f: impl FnOnce(&Counters)) {
    if available() {
        f(COUNTERS.get())
    }
}

/// A provider's row in the counters; None for a name PROVIDERS lacks (the tests tie them, so
/// none is counted under another's name).
fn provider_index(provider: &str) -> Option<usize> {
    PROVIDERS.iter().position(|p| *p == provider)
}

/// The histogram bucket of a latency: the first bound it does not exceed, else +Inf.
pub fn bucket(ms: u64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&b| ms <= b)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// The counted class of a SQLSTATE.
pub fn error_class(sqlstate: &str) -> usize {
    ERROR_CLASSES
        .iter()
        .position(|c| sqlstate.starts_with(c))
        .unwrap_or(ERROR_CLASSES.len() - 1)
}

/// One call to an embedding provider: how many texts, how long, and its SQLSTATE if it failed.
pub fn embedding_call(
    provider: &str,
    texts: usize,
    elapsed: std::time::Duration,
    failed: Option<&str>,
) {
    let Some(p) = provider_index(provider) else {
        return;
    };
    with(|c| {
        c.calls[p].fetch_add(1, Relaxed);
        let us = elapsed.as_micros() as u64;
        c.latency_us[p].fetch_add(us, Relaxed);
        c.latency[p][bucket(us.div_ceil(1000))].fetch_add(1, Relaxed);
        match failed {
            None => {
                c.texts[p].fetch_add(texts as u64, Relaxed);
            }
            Some(state) => {
                c.errors[p][error_class(state)].fetch_add(1, Relaxed);
            }
        }
    })
}

/// One chat model call: which API, how long, and its SQLSTATE if it failed.
pub fn chat_call(api: &str, elapsed: std::time::Duration, failed: Option<&str>) {
    let Some(p) = CHAT_APIS.iter().position(|a| *a == api) else {
        return;
    };
    with(|c| {
        c.chat_calls[p].fetch_add(1, Relaxed);
        c.chat_latency_us[p].fetch_add(elapsed.as_micros() as u64, Relaxed);
        if let Some(state) = failed {
            c.chat_errors[p][error_class(state)].fetch_add(1, Relaxed);
        }
    })
}

/// One extraction decision applied (an action of EXTRACT_ACTIONS).
pub fn extract_decision(action: &str) {
    with(|c| {
        if let Some(i) = EXTRACT_ACTIONS.iter().position(|a| *a == action) {
            c.extract_decisions[i].fetch_add(1, Relaxed);
        }
    })
}

pub fn cache_hits(n: usize) {
    with(|c| {
        c.cache_hits.fetch_add(n as u64, Relaxed);
    })
}

pub fn search() {
    with(|c| {
        c.searches.fetch_add(1, Relaxed);
    })
}

pub fn stored(inserted: usize, merged: usize) {
    with(|c| {
        c.stores.fetch_add(inserted as u64, Relaxed);
        c.merges.fetch_add(merged as u64, Relaxed);
    })
}

/// One maintenance pass (the worker's or memori_maintain()'s): promoted, expired, archived,
/// purged cache entries.
pub fn maintenance(rows: [i64; 4]) {
    with(|c| {
        c.maintenance_passes.fetch_add(1, Relaxed);
        for (slot, n) in c.maintenance_rows.iter().zip(rows) {
            slot.fetch_add(n.max(0) as u64, Relaxed);
        }
    })
}

/// The counters as (metric, labels, value) rows; nothing when memori is not preloaded.
pub fn rows() -> Vec<(String, serde_json::Value, f64)> {
    use serde_json::json;
    let mut out = Vec::new();
    with(|c| {
        let v = |a: &AtomicU64| a.load(Relaxed) as f64;
        for (p, name) in PROVIDERS.iter().enumerate() {
            out.push((
                "embedding_calls_total".into(),
                json!({"provider": name}),
                v(&c.calls[p]),
            ));
            out.push((
                "embedding_texts_total".into(),
                json!({"provider": name}),
                v(&c.texts[p]),
            ));
            out.push((
                "embedding_latency_seconds_sum".into(),
                json!({"provider": name}),
                v(&c.latency_us[p]) / 1e6,
            ));
            let mut cumulative = 0.0;
            for (b, slot) in c.latency[p].iter().enumerate() {
                cumulative += v(slot);
                let le = LATENCY_BOUNDS_MS
                    .get(b)
                    .map_or("+Inf".to_string(), |ms| format!("{}", *ms as f64 / 1000.0));
                out.push((
                    "embedding_latency_seconds_bucket".into(),
                    json!({"provider": name, "le": le}),
                    cumulative,
                ));
            }
            for (e, class) in ERROR_CLASSES.iter().enumerate() {
                out.push((
                    "embedding_errors_total".into(),
                    json!({"provider": name, "class": class}),
                    v(&c.errors[p][e]),
                ));
            }
        }
        for (p, name) in CHAT_APIS.iter().enumerate() {
            out.push((
                "chat_calls_total".into(),
                json!({"provider": name}),
                v(&c.chat_calls[p]),
            ));
            out.push((
                "chat_latency_seconds_sum".into(),
                json!({"provider": name}),
                v(&c.chat_latency_us[p]) / 1e6,
            ));
            for (e, class) in ERROR_CLASSES.iter().enumerate() {
                out.push((
                    "chat_errors_total".into(),
                    json!({"provider": name, "class": class}),
                    v(&c.chat_errors[p][e]),
                ));
            }
        }
        for (action, slot) in EXTRACT_ACTIONS.iter().zip(&c.extract_decisions) {
            out.push((
                "extract_decisions_total".into(),
                json!({"action": action}),
                v(slot),
            ));
        }
        out.push((
            "embedding_cache_hits_total".into(),
            json!({}),
            v(&c.cache_hits),
        ));
        out.push(("searches_total".into(), json!({}), v(&c.searches)));
        out.push(("stores_total".into(), json!({}), v(&c.stores)));
        out.push(("merges_total".into(), json!({}), v(&c.merges)));
        out.push((
            "maintenance_passes_total".into(),
            json!({}),
            v(&c.maintenance_passes),
        ));
        for (step, slot) in ["promoted", "expired", "archived", "cache_purged"]
            .iter()
            .zip(&c.maintenance_rows)
        {
            out.push((
                "maintenance_rows_total".into(),
                json!({"step": step}),
                v(slot),
            ));
        }
        let reset = c.reset_at.load(Relaxed);
        if reset != 0 {
            // PostgreSQL's epoch is 2000-01-01, in microseconds.
            let unix = (reset as f64) / 1e6 + 946_684_800.0;
            out.push(("stats_reset_time_seconds".into(), json!({}), unix));
        }
    });
    out
}

/// The counters (shared, server-wide) as rows of memori_stats().
#[pg_extern(volatile, parallel_safe)]
fn memori_counters() -> TableIterator<
    'static,
    (
        name!(metric, String),
        name!(labels, pgrx::datum::JsonB),
        name!(value, f64),
    ),
> {
    TableIterator::new(
        rows()
            .into_iter()
            .map(|(m, l, v)| (m, pgrx::datum::JsonB(l), v)),
    )
}

/// Sets every counter to 0. Returns false when memori is not preloaded (nothing to reset).
#[pg_extern(volatile, parallel_unsafe)]
fn memori_stats_reset() -> bool {
    if !available() {
        return false;
    }
    let c = COUNTERS.get();
    let zero = |a: &AtomicU64| a.store(0, Relaxed);
    c.calls
        .iter()
        .chain(&c.texts)
        .chain(&c.latency_us)
        .chain(&c.chat_calls)
        .chain(&c.chat_latency_us)
        .chain(&c.extract_decisions)
        .for_each(zero);
    c.errors.iter().flatten().for_each(zero);
    c.chat_errors.iter().flatten().for_each(zero);
    c.latency.iter().flatten().for_each(zero);
    c.maintenance_rows.iter().for_each(zero);
    [
        &c.cache_hits,
        &c.searches,
        &c.stores,
        &c.merges,
        &c.maintenance_passes,
    ]
    .into_iter()
    .for_each(zero);
    // SAFETY: the transaction's start time, a plain read.
    c.reset_at.store(
        unsafe { pg_sys::GetCurrentTransactionStartTimestamp() },
        Relaxed,
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_is_counted_under_its_own_name() {
        use crate::base::gucs::Provider;
        // An exhaustive match: a new provider stops this compiling until it is named here, and then
        // belongs in ALL and PROVIDERS too.
        for p in Provider::ALL {
            match p {
                Provider::Local | Provider::Openai => {}
            }
        }
        let names: Vec<&str> = Provider::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names, PROVIDERS.to_vec());
        assert_eq!(provider_index("local"), Some(0));
        assert_eq!(provider_index("a provider memori lacks"), None);
    }

    #[test]
    fn latencies_fall_into_the_first_bucket_they_fit() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(5000), 10);
        assert_eq!(bucket(5001), 11);
    }

    #[test]
    fn errors_count_by_sqlstate_class() {
        assert_eq!(ERROR_CLASSES[error_class("08006")], "08");
        assert_eq!(ERROR_CLASSES[error_class("58P01")], "58");
        assert_eq!(ERROR_CLASSES[error_class("57014")], "other");
    }
}
