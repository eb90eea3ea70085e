//! memori: long-term memory for LLM applications, inside PostgreSQL.
//!
//! The SQL surface lives in the modules below, one per concept; the embedding providers
//! (`embed`) are plain Rust that unit-tests without a database.

// The SQL functions that return rows name every column in their Rust type (pgrx's
// TableIterator), which clippy counts as complex.
#![allow(clippy::type_complexity)]

use pgrx::prelude::*;

mod accesses;
mod chat;
mod compat;
mod context;
mod conversations;
mod decisions;
pub mod embed;
mod embedding;
mod errors;
mod extract;
mod graph;
mod gucs;
mod lifecycle;
mod llm;
mod memories;
mod memory;
mod reembed;
mod search;
mod stats;
mod text;
mod user;
mod userdata;
mod vector;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The tables and indexes. Everything else refers to them at run time.
extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
// Comments, grants and row-level security, once the Rust functions exist.
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // SAFETY: a plain read of a backend flag.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        stats::init();
        accesses::init();
        worker::register();
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
