//! Accesses that could not be counted where they happened (review G6): a search or context in a
//! read-only or REPEATABLE READ/SERIALIZABLE transaction cannot update the rows it returned, so
//! their memories looked unused, and maintenance archived (or, short_term ones, deleted) what
//! users read every day. When memori is preloaded, such accesses go to a ring in shared memory
//! instead, and the next maintenance pass of that database counts them before it promotes,
//! expires or archives anything. A full ring drops its oldest entries (bounded memory: SLOTS
//! entries); a hot standby has no writer, so accesses made there are not counted (README).

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::SeqCst};

/// Entries the ring holds: about 0.8 MB of shared memory.
pub const SLOTS: usize = 65_536;

pub struct Ring {
    next: AtomicU64,
    db: [AtomicU32; SLOTS],
    /// The memory's row id plus one; 0 for an empty or taken slot.
    id: [AtomicI64; SLOTS],
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            next: AtomicU64::new(0),
            db: std::array::from_fn(|_| AtomicU32::new(0)),
            id: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }
}

// SAFETY: only atomics, no pointers: valid in shared memory as it is.
unsafe impl PGRXSharedMemory for Ring {}

// SAFETY: one name, used by memori alone.
static RING: PgAtomic<Ring> = unsafe { PgAtomic::new(c"memori_deferred_accesses") };

/// From _PG_init while shared_preload_libraries loads memori.
#[allow(unexpected_cfgs)] // pg_shmem_init! tests pgrx's version features in this crate
pub fn init() {
    pg_shmem_init!(RING);
}

fn database() -> u32 {
    // SAFETY: this backend's database.
    u32::from(unsafe { pg_sys::MyDatabaseId })
}

/// Remembers accesses to the memories `ids` (row ids) of this database, for the next
/// maintenance pass. False when memori is not preloaded (nothing remembered).
pub fn defer(ids: &[i64]) -> bool {
    if !crate::stats::available() {
        return false;
    }
    let ring = RING.get();
    let db = database();
    for &id in ids {
        let slot = (ring.next.fetch_add(1, SeqCst) % SLOTS as u64) as usize;
        // Empty first, so a reader never pairs this id with another slot's database.
        ring.id[slot].store(0, SeqCst);
        ring.db[slot].store(db, SeqCst);
        ring.id[slot].store(id + 1, SeqCst);
    }
    true
}

/// Takes the accesses remembered for this database out of the ring: (row id, how many).
pub fn take() -> Vec<(i64, i64)> {
    if !crate::stats::available() {
        return Vec::new();
    }
    let ring = RING.get();
    let db = database();
    let mut counts: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    for slot in 0..SLOTS {
        let id = ring.id[slot].load(SeqCst);
        if id == 0 || ring.db[slot].load(SeqCst) != db {
            continue;
        }
        if ring.id[slot]
            .compare_exchange(id, 0, SeqCst, SeqCst)
            .is_ok()
        {
            *counts.entry(id - 1).or_default() += 1;
        }
    }
    let mut out: Vec<(i64, i64)> = counts.into_iter().collect();
    out.sort_unstable();
    out
}
