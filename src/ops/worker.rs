//! The maintenance background worker. With `shared_preload_libraries = 'memori'`, a launcher
//! wakes every `memori.maintenance_interval` seconds and, for each database that accepts
//! connections and is not a template, starts a short-lived worker that maintains that
//! database if it has the extension, logs one line, and exits.
//!
//! What keeps one database from stalling the others, and the cluster from waiting on a pass:
//! - The launcher never waits for a worker: it keeps up to `memori.maintenance_workers`
//!   running, and skips a database whose previous pass is still running.
//! - A pass runs every statement under `memori.maintenance_lock_timeout` and
//!   `memori.maintenance_statement_timeout`, handles at most `memori.maintenance_batch_size`
//!   rows per statement, commits after each, and skips rows another transaction holds.
//! - SIGTERM (pg_terminate_backend, DROP DATABASE ... WITH (FORCE), shutdown) ends a pass at
//!   once, even in a lock wait: the worker uses PostgreSQL's own `die` handler.
//! - A reload (SIGHUP) re-reads the settings and does not start a pass.

use crate::base::gucs;
use crate::memories::lifecycle::{Pass, Step};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Registers the launcher; called from _PG_init while shared_preload_libraries load.
pub fn register() {
    BackgroundWorkerBuilder::new("memori launcher")
        .set_type("memori launcher")
        .set_library("memori")
        .set_function("memori_launcher_main")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .enable_spi_access()
        .load();
}

/// (oid, name) of every database that accepts connections and is not a template, read from
/// pg_database directly (the launcher is connected to no database).
fn databases() -> Vec<(pg_sys::Oid, String)> {
    BackgroundWorker::transaction(|| {
        let mut out = Vec::new();
        // SAFETY: a catalog heap scan inside a transaction, as autovacuum's launcher does; the
        // tuple's struct is read through its header offset (GETSTRUCT).
        unsafe {
            let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as _);
            let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
            loop {
                let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tup.is_null() {
                    break;
                }
                let data = (*tup).t_data as *const u8;
                let form = data.add((*(*tup).t_data).t_hoff as usize)
                    as *const pg_sys::FormData_pg_database;
                if (*form).datallowconn && !(*form).datistemplate {
                    let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr())
                        .to_string_lossy()
                        .into_owned();
                    out.push(((*form).oid, name));
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
        }
        out
    })
}

fn start(oid: pg_sys::Oid, name: &str) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("memori maintenance {name}"))
        .set_type("memori maintenance")
        .set_library("memori")
        .set_function("memori_maintenance_main")
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_argument(Some(pg_sys::Datum::from(oid)))
        .enable_spi_access()
        // SAFETY: MyProcPid is this process's pid; the postmaster then wakes us when the
        // worker starts or stops.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

fn running(w: &DynamicBackgroundWorker) -> bool {
    matches!(w.pid(), Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted))
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn memori_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(None, None);
    log!(
        "memori: maintenance launcher started interval_s={} workers={}",
        gucs::maintenance_interval_s(),
        gucs::maintenance_workers()
    );
    let interval = || Duration::from_secs(gucs::maintenance_interval_s().max(0) as u64);
    let mut last_pass = Instant::now();
    // Databases of the current pass still to start, and the workers started (by database).
    let mut queue: VecDeque<(pg_sys::Oid, String)> = VecDeque::new();
    let mut workers: HashMap<pg_sys::Oid, DynamicBackgroundWorker> = HashMap::new();
    loop {
        let disabled = gucs::maintenance_interval_s() == 0;
        let wait = if !queue.is_empty() {
            Duration::from_millis(100)
        } else if disabled {
            Duration::from_secs(60)
        } else {
            (last_pass + interval()).saturating_duration_since(Instant::now())
        };
        if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(1)))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads postgresql.conf, as any backend does on SIGHUP. The schedule
            // stays: a reload starts no pass.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if gucs::maintenance_interval_s() == 0 {
            queue.clear();
            continue;
        }
        if queue.is_empty() && last_pass.elapsed() >= interval() {
            last_pass = Instant::now();
            queue.extend(databases());
        }
        workers.retain(|_, w| running(w));
        // A database whose previous pass still runs is skipped this time, without waiting for
        // a free slot.
        queue.retain(|(oid, name)| {
            let busy = workers.contains_key(oid);
            if busy {
                log!("memori: maintenance database={name} status=skipped reason=\"the previous pass is still running\"");
            }
            !busy
        });
        while workers.len() < gucs::maintenance_workers() {
            let Some((oid, name)) = queue.pop_front() else {
                break;
            };
            match start(oid, &name) {
                Some(w) => {
                    workers.insert(oid, w);
                }
                None => {
                    warning!("memori: maintenance database={name} status=skipped reason=\"could not start a worker (max_worker_processes?)\"");
                }
            }
        }
    }
    log!("memori: maintenance launcher stopped");
}

/// The five characters of an SQLSTATE (PostgreSQL packs them six bits each).
fn sqlstate(code: pgrx::PgSqlErrorCode) -> String {
    let mut packed = code as i32;
    (0..5)
        .map(|_| {
            let c = ((packed & 0x3F) as u8 + b'0') as char;
            packed >>= 6;
            c
        })
        .collect()
}

/// The error of a failed statement, for the log line: (SQLSTATE, message).
fn describe(e: &CaughtError) -> (String, String) {
    match e {
        CaughtError::PostgresError(r)
        | CaughtError::ErrorReport(r)
        | CaughtError::RustPanic { ereport: r, .. } => {
            (sqlstate(r.sql_error_code()), r.message().to_string())
        }
    }
}

/// Runs `f` in a transaction of its own; an ERROR aborts that transaction and is returned.
fn in_transaction<T>(
    f: impl FnOnce() -> T + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
) -> Result<T, (String, String)> {
    PgTryBuilder::new(|| Ok(BackgroundWorker::transaction(f)))
        .catch_others(|e| {
            // SAFETY: the failed transaction is rolled back, as PostgresMain does after an ERROR.
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(describe(&e))
        })
        .execute()
}

extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (tcop/postgres.c): sets ProcDiePending.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn memori_maintenance_main(arg: pg_sys::Datum) {
    // SAFETY: PostgreSQL's die handler for SIGTERM (as in regular backends): the pass ends at
    // the next CHECK_FOR_INTERRUPTS, which lock waits and every query loop run.
    unsafe {
        crate::base::compat::set_signal_handler(pg_sys::SIGTERM as i32, Some(postgres_die));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let oid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(oid), None);
    let started = Instant::now();
    // This database's name, and the extension's schema (None: no memori here). The pass's
    // statements resolve memori's tables through that schema, with pg_catalog first.
    let found = in_transaction(|| {
        Spi::connect(|c| {
            c.select(
                "SELECT pg_catalog.current_database()::pg_catalog.text,
                    (SELECT pg_catalog.quote_ident(n.nspname::pg_catalog.text) FROM pg_catalog.pg_extension e
                       JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
                      WHERE e.extname OPERATOR(pg_catalog.=) 'memori'::pg_catalog.name)",
                Some(1),
                &[],
            )?
            .first()
            .get_two::<String, String>()
        })
        .ok()
    });
    let Ok(Some((Some(db), Some(schema)))) = found else {
        return;
    };
    let set = in_transaction(|| {
        // A read-only SPI select: no transaction id is assigned for it.
        Spi::connect(|c| {
            c.select(
                "SELECT pg_catalog.set_config('search_path', $1, false),
                    pg_catalog.set_config('lock_timeout', $2, false),
                    pg_catalog.set_config('statement_timeout', $3, false),
                    pg_catalog.set_config('application_name', 'memori maintenance', false)",
                Some(1),
                &[
                    format!("pg_catalog, {schema}, pg_temp").into(),
                    gucs::maintenance_lock_timeout_ms().to_string().into(),
                    gucs::maintenance_statement_timeout_ms().to_string().into(),
                ],
            )
            .map(|_| ())
        })
        .is_ok()
    });
    if set != Ok(true) {
        warning!("memori: maintenance database={db} status=failed reason=\"could not apply the maintenance settings\"");
        return;
    }
    let limit = gucs::maintenance_batch_size();
    let mut pass = Pass::default();
    let mut batches = 0;
    let mut failed = false;
    for step in Step::ALL {
        loop {
            pgrx::check_for_interrupts!();
            match in_transaction(|| step.batch(limit)) {
                Ok(Ok(n)) => {
                    batches += 1;
                    step.add(&mut pass, n);
                    if n < limit {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    failed = true;
                    warning!(
                        "memori: maintenance database={db} status=failed step={} sqlstate={} error=\"{}\"",
                        step.name(),
                        e.code.sqlstate(),
                        e.message
                    );
                    break;
                }
                Err((code, message)) => {
                    failed = true;
                    warning!(
                        "memori: maintenance database={db} status=failed step={} sqlstate={code} error=\"{message}\"",
                        step.name()
                    );
                    break;
                }
            }
        }
    }
    crate::base::stats::maintenance([
        pass.promoted,
        pass.expired,
        pass.archived,
        pass.cache_purged,
    ]);
    log!(
        "memori: maintenance database={db} status={} expired={} archived={} promoted={} cache_purged={} batches={batches} duration_ms={}",
        if failed { "partial" } else { "ok" },
        pass.expired,
        pass.archived,
        pass.promoted,
        pass.cache_purged,
        started.elapsed().as_millis()
    );
}
