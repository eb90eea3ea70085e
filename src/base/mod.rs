//! The ground: what every other part of memori stands on, and nothing here imports from above
//! `base`. Errors and their SQLSTATEs, the settings, what a memory is (types, sections, the live
//! condition, field checks), text, URL and vector helpers, the shared-memory counters, memori's
//! objects in the catalogs, SPI helpers, and what differs between PostgreSQL versions.

pub mod catalog;
pub mod compat;
pub mod errors;
pub mod gucs;
pub mod memory;
pub mod spi;
pub mod stats;
pub mod text;
pub mod url;
pub mod vector;
