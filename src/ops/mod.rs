//! Operations: what a DBA runs on memori as a whole, above the memory core.
//!
//! - `userdata`: memori_import (memori_export and memori_erase_user are SQL, sql/finalize.sql);
//! - `reembed`: re-embedding every memory after a model change (memori_reembed);
//! - `worker`: the background worker that runs memori_maintain() and counts deferred accesses.
//!
//! The counters and memori_stats' Rust half live in `base::stats`, because every layer bumps them.

pub mod reembed;
pub mod userdata;
pub mod worker;
