//! Accesses that could not be counted where they happened (review G6): a search or context in a
//! read-only or REPEATABLE READ/SERIALIZABLE transaction cannot update the rows it returned, so
//! their memories looked unused, and maintenance archived (or, short_term ones, deleted) what
//! users read every day. When memori is preloaded, such accesses go to a ring in shared memory
//! instead, and the next maintenance pass of that database counts them before it promotes,
//! expires or archives anything. Bounded: SLOTS entries for the cluster, the oldest dropped
//! when it is full; a hot standby has no writer, so accesses made there are not counted
//! (README "Querying").

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::*};

/// Entries the ring holds (12 bytes each, about 3 MB of shared memory).
pub const SLOTS: usize = 262_144;

#[repr(C)]
struct Ring {
    /// A spinlock: held for a few stores or loads, never across anything that can fail.
    busy: AtomicBool,
    next: u64,
    db: [u32; SLOTS],
    /// The memory's row id plus one; 0 for an empty or taken slot.
    id: [i64; SLOTS],
}

/// The ring in shared memory, set in the postmaster (every backend it forks inherits it).
static RING: AtomicPtr<Ring> = AtomicPtr::new(std::ptr::null_mut());
static mut PREV_REQUEST: Option<unsafe extern "C-unwind" fn()> = None;
static mut PREV_STARTUP: Option<unsafe extern "C-unwind" fn()> = None;

/// From _PG_init while shared_preload_libraries loads memori.
pub fn init() {
    // SAFETY: hook chaining in _PG_init of the postmaster, as PostgreSQL's own modules do.
    unsafe {
        PREV_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(request);
        PREV_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(startup);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn request() {
    // SAFETY: called by PostgreSQL while shared memory is being sized.
    unsafe {
        if let Some(prev) = PREV_REQUEST {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Ring>());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup() {
    // SAFETY: called by PostgreSQL once shared memory exists; the struct is zeroed in place (a
    // valid empty ring), never built on the stack.
    unsafe {
        if let Some(prev) = PREV_STARTUP {
            prev();
        }
        let lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let size = std::mem::size_of::<Ring>();
        let ring = pg_sys::ShmemInitStruct(c"memori_deferred_accesses".as_ptr(), size, &mut found)
            .cast::<Ring>();
        if !found {
            std::ptr::write_bytes(ring.cast::<u8>(), 0, size);
        }
        RING.store(ring, Release);
        pg_sys::LWLockRelease(lock);
    }
}

/// Runs `f` on the ring, holding its spinlock; None when memori is not preloaded.
fn with_ring<T>(f: impl FnOnce(&mut Ring) -> T) -> Option<T> {
    let ring = RING.load(Acquire);
    if ring.is_null() {
        return None;
    }
    // SAFETY: the ring lives as long as the cluster; the spinlock gives one process at a time
    // access to the rest of it, and `f` neither fails nor calls PostgreSQL.
    unsafe {
        let busy = &(*ring).busy;
        while busy
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        let out = f(&mut *ring);
        busy.store(false, Release);
        Some(out)
    }
}

fn database() -> u32 {
    // SAFETY: this backend's database.
    u32::from(unsafe { pg_sys::MyDatabaseId })
}

/// Remembers accesses to the memories `ids` (row ids) of this database, for the next
/// maintenance pass. False when memori is not preloaded (nothing remembered).
pub fn defer(ids: &[i64]) -> bool {
    let db = database();
    with_ring(|ring| {
        for &id in ids {
            let slot = (ring.next % SLOTS as u64) as usize;
            ring.next = ring.next.wrapping_add(1);
            ring.db[slot] = db;
            ring.id[slot] = id + 1;
        }
    })
    .is_some()
}

/// Takes the accesses remembered for this database out of the ring: (row id, how many).
pub fn take() -> Vec<(i64, i64)> {
    let db = database();
    let mut counts: std::collections::HashMap<i64, i64> = std::collections::HashMap::new();
    with_ring(|ring| {
        for slot in 0..SLOTS {
            if ring.id[slot] != 0 && ring.db[slot] == db {
                *counts.entry(ring.id[slot] - 1).or_default() += 1;
                ring.id[slot] = 0;
            }
        }
    });
    let mut out: Vec<(i64, i64)> = counts.into_iter().collect();
    out.sort_unstable();
    out
}
