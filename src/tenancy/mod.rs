//! Who the current memori user is, and whether the caller may act for them.
//!
//! Authority is per database: `memori_grant(role, kind)` records a role (or a group role) in
//! this database's `memori_roles` (README "Security"). These checks turn what row-level
//! security would silently filter into a clear error:
//! - a role granted as `user` acts only for itself (its role name);
//! - a role granted as `app` acts for the end user it names in `memori.user_id`, set in the
//!   current transaction, within its namespace: app `shop` naming `customer-1` acts for the
//!   memori user `shop/customer-1`, so two apps never reach each other's end users unless the DBA
//!   grants them one namespace, and no app acts for a role granted as `user`;
//! - superusers, roles with BYPASSRLS and the tables' owner act for anyone.

pub mod boundary;

pub use boundary::{as_owner_of, reading};

use crate::base::catalog::{has_column, relation, schema, table_exists};
use crate::base::errors::{Code, MemoriError, OrRaise, Result};
use crate::base::gucs;
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
    let kind = granted_kind()?;
    if let Some(Kind::App { namespace }) = &kind {
        // Only a value named in this transaction counts: with a connection pool, a plain SET
        // from an earlier transaction may belong to another client's end user.
        return match gucs::user_id_this_transaction() {
            None if setting.is_some() => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("role \"{me}\" is an app role and did not name the end user in this transaction"),
            )
            .detail("memori.user_id holds a value this transaction did not set: a plain SET from an earlier transaction (it lasts for the session, and a connection pool hands it to the next client), a role or database default, or one PostgreSQL put back.")
            .hint("At the start of each transaction: SET LOCAL memori.user_id = 'end-user-id'; or SELECT set_config('memori.user_id', 'end-user-id', true);")),
            None => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("role \"{me}\" is an app role and must name the end user in memori.user_id"),
            )
            .hint("At the start of each transaction: SET LOCAL memori.user_id = 'end-user-id'; or SELECT set_config('memori.user_id', 'end-user-id', true);")),
            Some(s) if s != user => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("role \"{me}\" acts for memori.user_id \"{s}\", not for \"{user}\""),
            )
            .hint("Set memori.user_id to the end user instead of passing user_id.")),
            Some(_) => end_user(namespace, &user),
        };
    }
    if kind.is_none() {
        return Err(MemoriError::new(
            Code::InsufficientPrivilege,
            format!("role \"{me}\" has no access to memori in database \"{}\"", database()),
        )
        .hint(format!("A DBA grants it in this database: SELECT memori_grant('{me}', 'user'); (or 'app' for an application serving many end users).")));
    }
    if user != me {
        return Err(MemoriError::new(
            Code::InsufficientPrivilege,
            format!("role \"{me}\" may act only for itself, not for \"{user}\""),
        )
        .hint("A role granted as user has its own memories; an application serving many end users is granted as app: SELECT memori_grant('role', 'app');"));
    }
    Ok(user)
}

pub fn validate(user: &str) -> Result<()> {
    if user.is_empty() {
        return Err(MemoriError::invalid("user_id must not be empty")
            .hint("Pass user_id => 'someone', set memori.user_id, or leave both unset to act as current_user."));
    }
    if user.len() > 255 {
        return Err(MemoriError::invalid(format!(
            "user_id is {} bytes long; at most 255 are allowed",
            user.len()
        )));
    }
    Ok(())
}

/// The current role's name (what a role granted as user acts as; memori_embed's cache owner).
pub fn current_user() -> String {
    // SAFETY: GetUserNameFromId returns a palloc'd, NUL-terminated name for a valid role oid.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false);
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Superuser, BYPASSRLS, or owner of memori's tables: row-level security does not bind them.
fn unrestricted() -> bool {
    // SAFETY: catalog lookups for the current role.
    unsafe {
        let me = pg_sys::GetUserId();
        if pg_sys::superuser() || pg_sys::has_bypassrls_privilege(me) {
            return true;
        }
    }
    match relation(c"memori_memories") {
        // SAFETY: an ownership check of an existing relation.
        Ok(rel) => unsafe { crate::base::compat::owns_relation(rel, pg_sys::GetUserId()) },
        Err(_) => false,
    }
}

fn database() -> String {
    // SAFETY: the name of this backend's database.
    unsafe {
        std::ffi::CStr::from_ptr(pg_sys::get_database_name(pg_sys::MyDatabaseId))
            .to_string_lossy()
            .into_owned()
    }
}

/// How a role was granted memori in this database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Acts only for itself.
    User,
    /// Acts for the end user it names in memori.user_id in each transaction, within its
    /// namespace (memori_roles.namespace; empty for apps granted before 0.5.0, which share the
    /// end users they name as in 0.4.0).
    App { namespace: String },
}

/// The memori user an app acts for when it names `end_user`: `<namespace>/<end_user>`, or
/// `end_user` itself in the empty (pre-0.5.0) namespace. Never a role granted as `user` (a
/// person's memories are that role's alone), whichever namespace.
pub fn end_user(namespace: &str, end_user: &str) -> Result<String> {
    let key = if namespace.is_empty() {
        // The empty namespace (apps granted before 0.5.0) names end users without a prefix:
        // never one in another app's namespace, nor any role's name (a person's, granted now,
        // revoked or not yet granted).
        if end_user.contains('/') || is_role(end_user) {
            return Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!(
                    "role \"{}\" is an app role in the empty namespace and may not act for \"{end_user}\"",
                    current_user()
                ),
            )
            .detail("Without a namespace, an app's end users may hold no \"/\" (another app's end users) and may not be named like a role (a person).")
            .hint("Grant the app a namespace of its own: SELECT memori_grant('app', 'app', namespace => 'app');"));
        }
        end_user.to_string()
    } else {
        format!("{namespace}/{end_user}")
    };
    validate(&key)?;
    if is_person(&key)? {
        return Err(MemoriError::new(
            Code::InsufficientPrivilege,
            format!(
                "role \"{}\" is an app role and may not act for \"{key}\", a role granted as user",
                current_user()
            ),
        )
        .detail("A person's memories are reached only by that role (and by the DBA).")
        .hint("Name the application's own end users in memori.user_id."));
    }
    Ok(key)
}

/// The join condition that ties a memori_roles row to the role it was granted to (0.5.0,
/// review G11): a role that later takes the name (the first was dropped or renamed) holds no
/// grant. Nothing in a database not yet updated.
fn granted_role_join() -> Result<&'static str> {
    Ok(if has_column(c"memori_roles", c"role_oid")? {
        " AND r.role_oid OPERATOR(pg_catalog.=) g.oid"
    } else {
        ""
    })
}

/// Whether a role of that name exists (cluster-wide).
fn is_role(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a catalog lookup by name; a missing role is InvalidOid.
    unsafe { pg_sys::get_role_oid(c.as_ptr(), true) != pg_sys::InvalidOid }
}

/// Whether `name` is a role that memori_roles grants as `user` (itself or through a group).
/// Cached for the transaction, per name.
fn is_person(name: &str) -> Result<bool> {
    let lxid = gucs::local_xact();
    if let Some(hit) = PERSON.with(|p| {
        p.borrow()
            .as_ref()
            .filter(|(x, n, _)| *x == lxid && lxid != 0 && n == name)
            .map(|(_, _, b)| *b)
    }) {
        return Ok(hit);
    }
    let (_, nsp) = schema()?;
    let same_role = granted_role_join()?;
    let person = as_owner_of(c"memori_roles", || {
        crate::base::spi::read_one_kept::<bool>(
            &format!(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_roles u, {nsp}.memori_roles r
                                  JOIN pg_catalog.pg_roles g ON g.rolname OPERATOR(pg_catalog.=) r.role_name{same_role}
                                 WHERE u.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.name
                                   AND r.kind OPERATOR(pg_catalog.=) 'user'::pg_catalog.text
                                   AND pg_catalog.pg_has_role(u.oid, g.oid, 'USAGE'::pg_catalog.text))"
            ),
            &[name.into()],
            crate::base::spi::Planning::Generic,
        )
    })?
    .unwrap_or(false);
    PERSON.with(|p| *p.borrow_mut() = Some((lxid, name.to_string(), person)));
    Ok(person)
}

thread_local! {
    /// The current role's grant, for one transaction: (local xact, role, kind).
    static GRANT: std::cell::RefCell<Option<(u32, pg_sys::Oid, Option<Kind>)>> =
        const { std::cell::RefCell::new(None) };
    /// Whether a name is a person's role, for one transaction: (local xact, name, answer).
    static PERSON: std::cell::RefCell<Option<(u32, String, bool)>> =
        const { std::cell::RefCell::new(None) };
}

/// Whether the current role has the privileges of `role` (is a member with INHERIT).
fn member_of(role: &std::ffi::CStr) -> bool {
    // SAFETY: catalog lookups by a static role name; a missing role is InvalidOid.
    unsafe {
        let oid = pg_sys::get_role_oid(role.as_ptr(), true);
        oid != pg_sys::InvalidOid && pg_sys::has_privs_of_role(pg_sys::GetUserId(), oid)
    }
}

/// How the current role (directly or through a group) was granted memori in this database
/// (memori_roles), if at all: `app` wins over `user`. Cached for the rest of the transaction.
/// In a database still at 0.1.0 (no memori_roles yet), 0.1.0's rule holds until it is
/// updated: membership in the memori_app or memori_user group.
pub fn granted_kind() -> Result<Option<Kind>> {
    let lxid = gucs::local_xact();
    // SAFETY: the current role's oid.
    let me = unsafe { pg_sys::GetUserId() };
    if let Some((x, r, kind)) = GRANT.with(|g| g.borrow().clone()) {
        if x == lxid && r == me && lxid != 0 {
            return Ok(kind);
        }
    }
    if !table_exists(c"memori_roles")? {
        return Ok(if member_of(c"memori_app") {
            Some(Kind::App {
                namespace: String::new(),
            })
        } else if member_of(c"memori_user") {
            Some(Kind::User)
        } else {
            None
        });
    }
    let (_, nsp) = schema()?;
    // A database not yet updated to 0.5.0 has no namespaces: its apps share the empty one.
    let namespace = if has_column(c"memori_roles", c"namespace")? {
        "r.namespace"
    } else {
        "NULL::pg_catalog.text"
    };
    let same_role = granted_role_join()?;
    let kind = as_owner_of(c"memori_roles", || {
        crate::base::spi::read_one_kept::<String>(
            &format!(
                "SELECT r.kind OPERATOR(pg_catalog.||) '/'::pg_catalog.text OPERATOR(pg_catalog.||) coalesce({namespace}, ''::pg_catalog.text)
                   FROM {nsp}.memori_roles r
                   JOIN pg_catalog.pg_roles g ON g.rolname OPERATOR(pg_catalog.=) r.role_name{same_role}
                  WHERE pg_catalog.pg_has_role($1::pg_catalog.oid, g.oid, 'USAGE'::pg_catalog.text)
                  ORDER BY r.kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text DESC, r.role_name
                  LIMIT 1"
            ),
            &[me.into()],
            crate::base::spi::Planning::Generic,
        )
    })?
    .map(|k| match k.split_once('/') {
        Some(("app", ns)) => Kind::App {
            namespace: ns.to_string(),
        },
        _ => Kind::User,
    });
    GRANT.with(|g| *g.borrow_mut() = Some((lxid, me, kind.clone())));
    Ok(kind)
}

/// The memori user the current role acts for in this database (see `resolve`), or NULL. The
/// row-level security policies use it, so plain SQL on the tables follows the same rules as
/// memori's functions.
#[pg_extern(stable, parallel_restricted)]
fn memori_acting_user() -> Option<String> {
    match granted_kind().or_raise() {
        Some(Kind::User) => Some(current_user()),
        // The same rule as the functions: an end user this transaction named, in the app's
        // namespace, never a person's role (then nothing is visible).
        Some(Kind::App { namespace }) => {
            gucs::user_id_this_transaction().and_then(|named| end_user(&namespace, &named).ok())
        }
        None => None,
    }
}
