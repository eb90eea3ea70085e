//! Who the current memori user is, and whether the caller may act for them.
//!
//! Row-level security is what enforces tenancy (README "Security"); these checks turn what RLS
//! would silently filter into a clear error:
//! - a `memori_user` member acts only for itself (its role name);
//! - a `memori_app` member acts for the end user named by `memori.user_id`, and must set it;
//! - superusers, roles with BYPASSRLS and the tables' owner act for anyone.

use crate::errors::{Code, MemoriError, Result};
use crate::gucs;
use pgrx::prelude::*;

/// The memori user a call acts for: the `user_id` argument when given, else the
/// `memori.user_id` setting, else `current_user`.
pub fn resolve(explicit: Option<&str>) -> Result<String> {
    let setting = gucs::user_id();
    let me = current_user();
    let user = match explicit.map(str::trim) {
        Some(u) => u.to_string(),
        None => setting.clone().unwrap_or_else(|| me.clone()),
    };
    validate(&user)?;
    if unrestricted() {
        return Ok(user);
    }
    if member_of(c"memori_app") {
        // Only a value named in this transaction counts: with a connection pool, a plain SET
        // from an earlier transaction may belong to another client's end user.
        return match gucs::user_id_this_transaction() {
            None if setting.is_some() => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("memori: role \"{me}\" is a memori_app member and did not name the end user in this transaction"),
            )
            .detail("memori.user_id was set in an earlier transaction (a plain SET lasts for the session, and a connection pool hands it to the next client).")
            .hint("At the start of each transaction: SET LOCAL memori.user_id = 'end-user-id'; or SELECT set_config('memori.user_id', 'end-user-id', true);")),
            None => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("memori: role \"{me}\" is a memori_app member and must name the end user in memori.user_id"),
            )
            .hint("At the start of each transaction: SET LOCAL memori.user_id = 'end-user-id'; or SELECT set_config('memori.user_id', 'end-user-id', true);")),
            Some(s) if s != user => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("memori: role \"{me}\" acts for memori.user_id \"{s}\", not for \"{user}\""),
            )
            .hint("Set memori.user_id to the end user instead of passing user_id.")),
            Some(_) => Ok(user),
        };
    }
    if member_of(c"memori_user") && user != me {
        return Err(MemoriError::new(
            Code::InsufficientPrivilege,
            format!("memori: role \"{me}\" may act only for itself, not for \"{user}\""),
        )
        .hint("A memori_user member's memories are its own; an application serving many end users is a memori_app member."));
    }
    Ok(user)
}

pub fn validate(user: &str) -> Result<()> {
    if user.is_empty() {
        return Err(MemoriError::invalid("memori: user_id must not be empty")
            .hint("Pass user_id => 'someone', set memori.user_id, or leave both unset to act as current_user."));
    }
    if user.len() > 255 {
        return Err(MemoriError::invalid(format!(
            "memori: user_id is {} bytes long; at most 255 are allowed",
            user.len()
        )));
    }
    Ok(())
}

fn current_user() -> String {
    // SAFETY: GetUserNameFromId returns a palloc'd, NUL-terminated name for a valid role oid.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false);
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Superuser, BYPASSRLS, or owner of memori_memories: row-level security does not bind them.
fn unrestricted() -> bool {
    // SAFETY: catalog lookups for the current role.
    unsafe {
        let me = pg_sys::GetUserId();
        if pg_sys::superuser() || pg_sys::has_bypassrls_privilege(me) {
            return true;
        }
        let rel = pg_sys::RelnameGetRelid(c"memori_memories".as_ptr());
        rel != pg_sys::InvalidOid && owns(rel, me)
    }
}

/// PostgreSQL 15 (the version built here); 16 and later name it object_ownercheck.
unsafe fn owns(rel: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    pg_sys::pg_class_ownercheck(rel, role)
}

/// Whether the current role has the privileges of `role` (is a member with INHERIT).
fn member_of(role: &std::ffi::CStr) -> bool {
    // SAFETY: catalog lookups by a static role name; a missing role is InvalidOid.
    unsafe {
        let oid = pg_sys::get_role_oid(role.as_ptr(), true);
        oid != pg_sys::InvalidOid && pg_sys::has_privs_of_role(pg_sys::GetUserId(), oid)
    }
}

/// Runs `f` as the owner of memori's table `relation` (resolved through the pinned
/// search_path), in a security-restricted operation: the way PostgreSQL runs its own internal
/// queries (foreign-key checks, REFRESH MATERIALIZED VIEW). Tenants hold no write privileges on
/// memori's tables and none at all on the cache: memori writes with its own fixed statements,
/// for the user `resolve` checked, and every statement names that user. The caller's identity
/// comes back when `f` returns, and also when an error unwinds (transaction abort restores it
/// too).
pub fn as_owner_of<T>(relation: &std::ffi::CStr, f: impl FnOnce() -> Result<T>) -> Result<T> {
    struct Restore(pg_sys::Oid, std::ffi::c_int);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: puts back the identity saved below.
            unsafe { pg_sys::SetUserIdAndSecContext(self.0, self.1) };
        }
    }
    // SAFETY: a relation lookup through the function's pinned search_path, a catalog read of
    // its owner, then the identity switch PostgreSQL's own internal queries use.
    let _restore = unsafe {
        let rel = pg_sys::RelnameGetRelid(relation.as_ptr());
        if rel == pg_sys::InvalidOid {
            return Err(MemoriError::new(
                Code::SystemError,
                format!("memori: table {} not found", relation.to_string_lossy()),
            ));
        }
        let tuple = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as _,
            pg_sys::Datum::from(rel),
        );
        if tuple.is_null() {
            return Err(MemoriError::new(
                Code::SystemError,
                "memori: cache lookup failed",
            ));
        }
        let form = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_class;
        let owner = (*form).relowner;
        pg_sys::ReleaseSysCache(tuple);
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as std::ffi::c_int
                | pg_sys::SECURITY_RESTRICTED_OPERATION as std::ffi::c_int,
        );
        Restore(user, context)
    };
    f()
}

/// The end user a memori_app role acts for in this transaction: memori.user_id when it was set
/// in this transaction, else NULL. The row-level security policies for memori_app use it, so
/// plain SQL on the tables follows the same rule as memori's functions.
#[pg_extern(stable, parallel_restricted)]
fn memori_end_user() -> Option<String> {
    gucs::user_id_this_transaction()
}
