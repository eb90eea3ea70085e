//! The privilege boundary: the one place memori runs SQL with more privilege than its caller
//! (`as_owner_of`), and the rule for reads of user data (`reading`).

use crate::base::catalog::{distributed, relation, schema};
use crate::base::errors::{Code, MemoriError, Result};
use crate::base::gucs;
use pgrx::prelude::*;

/// Reads of user data: as the caller, under row-level security, on a single server; as the
/// tables' owner once they are distributed with Citus, whose workers evaluate the policies
/// without the acting user (they would show nothing). memori's reads are fixed statements that
/// filter by the user memori resolved, either way.
pub fn reading<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    if distributed()? {
        as_owner_of(c"memori_memories", f)
    } else {
        f()
    }
}

/// Runs `f` as the owner of memori's table `relation` (in memori's schema), in a
/// security-restricted operation: the way PostgreSQL runs its own internal
/// queries (foreign-key checks, REFRESH MATERIALIZED VIEW). Tenants hold no write privileges on
/// memori's tables and none at all on the cache: memori writes with its own fixed statements,
/// for the user `resolve` checked, and every statement names that user. The caller's identity
/// comes back when `f` returns, and also when an error unwinds (transaction abort restores it
/// too).
///
/// THE PRIVILEGE BOUNDARY. Rule: every statement memori runs with more privilege than its
/// caller runs inside `as_owner_of`, and nowhere else (grep `SetUserIdAndSecContext`: this is
/// its only caller). For the duration of `f`, `search_path` is pinned to
/// `pg_catalog, <memori's schema>, pg_temp` in a GUC nest level of its own, so no name in an
/// owner-run statement (type, function, operator, relation) can resolve to an object a caller
/// planted in `pg_temp` or in a schema of its search path; names are qualified as well
/// (`pg_catalog.` / `OPERATOR(pg_catalog.=)`), and `tests/system/capture.sh` plants a trap for
/// every name memori's SQL uses.
pub fn as_owner_of<T>(relation: &std::ffi::CStr, f: impl FnOnce() -> Result<T>) -> Result<T> {
    struct Restore {
        user: pg_sys::Oid,
        context: std::ffi::c_int,
        nest: std::ffi::c_int,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: closes the GUC nest level opened below (restoring the caller's search_path)
            // and puts back the identity saved below. While an ERROR unwinds, the (sub)transaction
            // abort that follows closes the nest level instead, as for a function's SET clause.
            unsafe {
                if !std::thread::panicking() {
                    pg_sys::AtEOXact_GUC(true, self.nest);
                }
                pg_sys::SetUserIdAndSecContext(self.user, self.context);
            }
        }
    }
    let rel = self::relation(relation)?;
    let (_, nsp) = schema()?;
    let path = std::ffi::CString::new(format!("pg_catalog, {nsp}, pg_temp"))
        .map_err(|_| MemoriError::new(Code::SystemError, "schema name holds NUL"))?;
    // SAFETY: a catalog read of the relation's owner, then the identity switch PostgreSQL's own
    // internal queries use, then the pinned search_path in a nest level that Restore closes.
    let _restore = unsafe {
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as _,
            pg_sys::Datum::from(rel),
        );
        if tuple.is_null() {
            return Err(MemoriError::new(Code::SystemError, "cache lookup failed"));
        }
        let form = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_class;
        let owner = (*form).relowner;
        pg_sys::ReleaseSysCache(tuple);
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        let nest = pg_sys::NewGUCNestLevel();
        let restore = Restore {
            user,
            context,
            nest,
        };
        if !gucs::set_in_nest_level(c"search_path", &path) {
            // Never run as the owner with the caller's path.
            pg_sys::AtEOXact_GUC(false, nest);
            std::mem::forget(restore);
            return Err(MemoriError::new(
                Code::SystemError,
                "could not pin search_path for an owner-run statement",
            ));
        }
        pg_sys::SetUserIdAndSecContext(
            owner,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as std::ffi::c_int
                | pg_sys::SECURITY_RESTRICTED_OPERATION as std::ffi::c_int,
        );
        restore
    };
    f()
}
