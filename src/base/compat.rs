//! What differs between PostgreSQL versions, in one place: everything here reads PostgreSQL's
//! internals whose shape a major version may change.

use pgrx::pg_sys;

thread_local! {
    /// memori.user_id's GUC record, found once per backend (it lives as long as the backend).
    static USER_ID_GUC: std::cell::Cell<*mut pg_sys::config_generic> =
        const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// The GUC record of the setting `name` (PostgreSQL 15: the sorted array of all settings).
#[cfg(feature = "pg15")]
unsafe fn find_guc(name: &std::ffi::CStr) -> *mut pg_sys::config_generic {
    let vars = pg_sys::get_guc_variables();
    let n = pg_sys::GetNumConfigOptions();
    if vars.is_null() {
        return std::ptr::null_mut();
    }
    for i in 0..n as usize {
        let g = *vars.add(i);
        if !g.is_null() && std::ffi::CStr::from_ptr((*g).name) == name {
            return g;
        }
    }
    std::ptr::null_mut()
}

/// The GUC record of the setting `name` (PostgreSQL 16 and later: a hash table, searched by the
/// exported find_option; no placeholder is made and no error raised for an unknown name).
#[cfg(not(feature = "pg15"))]
unsafe fn find_guc(name: &std::ffi::CStr) -> *mut pg_sys::config_generic {
    pg_sys::find_option(name.as_ptr(), false, true, pgrx::PgLogLevel::ERROR as i32)
}

/// This backend's local transaction id, from its PGPROC (PostgreSQL 15: `lxid`).
///
/// # Safety
/// MyProc must be set (a backend past its start-up).
#[cfg(feature = "pg15")]
pub unsafe fn my_local_xid() -> u32 {
    (*pg_sys::MyProc).lxid
}

/// This backend's local transaction id, from its PGPROC (PostgreSQL 17 and later: `vxid.lxid`).
///
/// # Safety
/// MyProc must be set (a backend past its start-up).
#[cfg(not(feature = "pg15"))]
pub unsafe fn my_local_xid() -> u32 {
    (*pg_sys::MyProc).vxid.lxid
}

/// Whether `role` owns the relation `rel` (PostgreSQL 15: pg_class_ownercheck).
///
/// # Safety
/// A catalog lookup: call inside a transaction.
#[cfg(feature = "pg15")]
pub unsafe fn owns_relation(rel: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    pg_sys::pg_class_ownercheck(rel, role)
}

/// Whether `role` owns the relation `rel` (PostgreSQL 16 and later: object_ownercheck).
///
/// # Safety
/// A catalog lookup: call inside a transaction.
#[cfg(not(feature = "pg15"))]
pub unsafe fn owns_relation(rel: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    pg_sys::object_ownercheck(pg_sys::RelationRelationId, rel, role)
}

/// Sets the handler of signal `signo` in this backend (PostgreSQL 17 and earlier: pqsignal,
/// which returns the old handler, unused here).
///
/// # Safety
/// `handler` must be safe to run as a signal handler of a PostgreSQL backend.
#[cfg(not(feature = "pg18"))]
pub unsafe fn set_signal_handler(signo: i32, handler: pg_sys::pqsigfunc) {
    pg_sys::pqsignal(signo, handler);
}

/// Sets the handler of signal `signo` in this backend (PostgreSQL 18 and later: pqsignal is a
/// macro for the backend's pqsignal_be, which returns nothing).
///
/// # Safety
/// `handler` must be safe to run as a signal handler of a PostgreSQL backend.
#[cfg(feature = "pg18")]
pub unsafe fn set_signal_handler(signo: i32, handler: pg_sys::pqsigfunc) {
    pg_sys::pqsignal_be(signo, handler);
}

/// Whether the current value of memori.user_id was named by a SET or SET LOCAL of the current
/// transaction, from the setting's GUC stack (see `gucs::user_id_this_transaction`): the top
/// entry exists only while a transaction (or one of its savepoints or function calls) holds a
/// change, records how the value was set, and is popped when PostgreSQL puts an older value
/// back.
pub fn user_id_named_in_transaction() -> bool {
    // SAFETY: reads of this backend's GUC records, which only this thread changes.
    unsafe {
        let mut g = USER_ID_GUC.with(|c| c.get());
        if g.is_null() {
            g = find_guc(c"memori.user_id");
            if g.is_null() {
                return false;
            }
            USER_ID_GUC.with(|c| c.set(g));
        }
        let stack = (*g).stack;
        !stack.is_null()
            && (*stack).state != pg_sys::GucStackState::GUC_SAVE
            && (*g).source == pg_sys::GucSource::PGC_S_SESSION
    }
}
