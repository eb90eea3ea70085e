//! memori: long-term memory for LLM applications, inside PostgreSQL.
//!
//! The house, bottom to top (a module imports only from its own layer or those below it):
//! - `base`: the ground: errors, settings, what a memory is, text and vector helpers, counters,
//!   memori's objects in the catalogs, SPI helpers, PostgreSQL version differences;
//! - `tenancy`: who the acting memori user is, and the one privilege boundary (`as_owner_of`);
//! - `providers`: the embedding and chat models (plain Rust clients, plus thin database glue);
//! - `memories`: the memory core: store, search, context, graph, conversations, lifecycle,
//!   extraction and chat;
//! - `ops`: import, re-embedding, the background worker;
//! - `legacy`: the entry points of older SQL, kept for databases not yet updated.

// The SQL functions that return rows name every column in their Rust type (pgrx's
// TableIterator), which clippy counts as complex.
#![allow(clippy::type_complexity)]

use pgrx::prelude::*;

mod base;
mod legacy;
mod memories;
mod ops;
pub mod providers;
mod tenancy;

::pgrx::pg_module_magic!(name, version);

// The tables and indexes. Everything else refers to them at run time.
extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
// Comments, grants and row-level security, once the Rust functions exist.
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    base::gucs::init();
    // SAFETY: a plain read of a backend flag.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        base::stats::init();
        memories::accesses::init();
        ops::worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
