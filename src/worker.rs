//! The maintenance background worker. With `shared_preload_libraries = 'memori'`, a launcher
//! wakes every `memori.maintenance_interval` seconds, lists the databases that accept
//! connections, and for each starts a short-lived worker that runs `memori_maintain()` there if
//! the database has the extension, logs one line with the counts, and exits. A database dropped
//! meanwhile only makes its worker fail to connect; the launcher goes on. SIGTERM stops the
//! launcher between two steps.

use crate::gucs;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::time::Duration;

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

/// (oid, name) of every database that accepts connections, read from pg_database directly
/// (the launcher is connected to no database).
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
                if (*form).datallowconn {
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

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn memori_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(None, None);
    log!(
        "memori: maintenance launcher started (memori.maintenance_interval = {} s)",
        gucs::maintenance_interval_s()
    );
    loop {
        let interval = gucs::maintenance_interval_s();
        // Disabled (0): look at the setting again every minute.
        let wait = Duration::from_secs(if interval > 0 { interval as u64 } else { 60 });
        if !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads postgresql.conf, as any backend does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if gucs::maintenance_interval_s() == 0 {
            continue;
        }
        for (oid, name) in databases() {
            if BackgroundWorker::sigterm_received() {
                break;
            }
            let started = BackgroundWorkerBuilder::new(&format!("memori maintenance {name}"))
                .set_type("memori maintenance")
                .set_library("memori")
                .set_function("memori_maintenance_main")
                .set_start_time(BgWorkerStartTime::RecoveryFinished)
                .set_argument(Some(pg_sys::Datum::from(oid)))
                .enable_spi_access()
                // SAFETY: MyProcPid is this process's pid.
                .set_notify_pid(unsafe { pg_sys::MyProcPid })
                .load_dynamic();
            match started {
                Ok(worker) => {
                    let _ = worker.wait_for_shutdown();
                }
                Err(_) => warning!("memori: could not start a maintenance worker for database \"{name}\" (max_worker_processes?)"),
            }
        }
    }
    log!("memori: maintenance launcher stopped");
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn memori_maintenance_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let oid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(oid), None);
    BackgroundWorker::transaction(|| {
        let schema = Spi::get_one::<String>(
            "SELECT quote_ident(n.nspname) FROM pg_catalog.pg_extension e
               JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'memori'",
        );
        let Ok(Some(schema)) = schema else { return };
        // memori_maintain() pins its own search_path; calling it keeps one code path.
        let sql = format!(
            "SELECT expired, archived, promoted, cache_purged FROM {schema}.memori_maintain()"
        );
        let pass = Spi::connect(|c| {
            let row = c.select(&sql, None, &[])?.first();
            Ok::<_, pgrx::spi::Error>((
                row.get::<i64>(1)?,
                row.get::<i64>(2)?,
                row.get::<i64>(3)?,
                row.get::<i64>(4)?,
            ))
        });
        // SAFETY: the database name of this backend.
        let db =
            unsafe { std::ffi::CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId)) }
                .to_string_lossy()
                .into_owned();
        match pass {
            Ok((e, a, p, c)) => log!(
                "memori: maintenance of database \"{db}\": expired {}, archived {}, promoted {}, cache entries purged {}",
                e.unwrap_or(0),
                a.unwrap_or(0),
                p.unwrap_or(0),
                c.unwrap_or(0)
            ),
            Err(e) => warning!("memori: maintenance of database \"{db}\" failed: {e}"),
        }
    });
}
