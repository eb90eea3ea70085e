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

use crate::errors::{Code, MemoriError, OrRaise, Result};
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
    let kind = granted_kind()?;
    if let Some(Kind::App { namespace }) = &kind {
        // Only a value named in this transaction counts: with a connection pool, a plain SET
        // from an earlier transaction may belong to another client's end user.
        return match gucs::user_id_this_transaction() {
            None if setting.is_some() => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("memori: role \"{me}\" is an app role and did not name the end user in this transaction"),
            )
            .detail("memori.user_id holds a value this transaction did not set: a plain SET from an earlier transaction (it lasts for the session, and a connection pool hands it to the next client), a role or database default, or one PostgreSQL put back.")
            .hint("At the start of each transaction: SET LOCAL memori.user_id = 'end-user-id'; or SELECT set_config('memori.user_id', 'end-user-id', true);")),
            None => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("memori: role \"{me}\" is an app role and must name the end user in memori.user_id"),
            )
            .hint("At the start of each transaction: SET LOCAL memori.user_id = 'end-user-id'; or SELECT set_config('memori.user_id', 'end-user-id', true);")),
            Some(s) if s != user => Err(MemoriError::new(
                Code::InsufficientPrivilege,
                format!("memori: role \"{me}\" acts for memori.user_id \"{s}\", not for \"{user}\""),
            )
            .hint("Set memori.user_id to the end user instead of passing user_id.")),
            Some(_) => end_user(namespace, &user),
        };
    }
    if kind.is_none() {
        return Err(MemoriError::new(
            Code::InsufficientPrivilege,
            format!("memori: role \"{me}\" has no access to memori in database \"{}\"", database()),
        )
        .hint(format!("A DBA grants it in this database: SELECT memori_grant('{me}', 'user'); (or 'app' for an application serving many end users).")));
    }
    if user != me {
        return Err(MemoriError::new(
            Code::InsufficientPrivilege,
            format!("memori: role \"{me}\" may act only for itself, not for \"{user}\""),
        )
        .hint("A role granted as user has its own memories; an application serving many end users is granted as app: SELECT memori_grant('role', 'app');"));
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
        Ok(rel) => unsafe { owns(rel, pg_sys::GetUserId()) },
        Err(_) => false,
    }
}

/// PostgreSQL 15 (the version built here); 16 and later name it object_ownercheck.
unsafe fn owns(rel: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    pg_sys::pg_class_ownercheck(rel, role)
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
                    "memori: role \"{}\" is an app role in the empty namespace and may not act for \"{end_user}\"",
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
                "memori: role \"{}\" is an app role and may not act for \"{key}\", a role granted as user",
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
        crate::errors::read_one::<bool>(
            &format!(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_roles u, {nsp}.memori_roles r
                                  JOIN pg_catalog.pg_roles g ON g.rolname OPERATOR(pg_catalog.=) r.role_name{same_role}
                                 WHERE u.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.name
                                   AND r.kind OPERATOR(pg_catalog.=) 'user'::pg_catalog.text
                                   AND pg_catalog.pg_has_role(u.oid, g.oid, 'USAGE'::pg_catalog.text))"
            ),
            &[name.into()],
        )
    })?
    .unwrap_or(false);
    PERSON.with(|p| *p.borrow_mut() = Some((lxid, name.to_string(), person)));
    Ok(person)
}

thread_local! {
    /// memori's schema, for one transaction: (local xact, extension, schema, quoted name).
    static SCHEMA: std::cell::RefCell<Option<(u32, pg_sys::Oid, pg_sys::Oid, String)>> =
        const { std::cell::RefCell::new(None) };
    /// The current role's grant, for one transaction: (local xact, role, kind).
    static GRANT: std::cell::RefCell<Option<(u32, pg_sys::Oid, Option<Kind>)>> =
        const { std::cell::RefCell::new(None) };
    /// Whether a name is a person's role, for one transaction: (local xact, name, answer).
    static PERSON: std::cell::RefCell<Option<(u32, String, bool)>> =
        const { std::cell::RefCell::new(None) };
}

/// memori's schema: its oid and quoted name. Found from pg_extension, never through the
/// search_path, so it also holds where the caller's search_path is in force (row-level security
/// policies). Looked up at most once per transaction: a store or search asks for it several
/// times (tenancy, the cache, the writes).
fn schema() -> Result<(pg_sys::Oid, String)> {
    let lxid = gucs::local_xact();
    let cached = SCHEMA.with(|s| s.borrow().clone());
    if let Some((x, _, nsp, name)) = &cached {
        if *x == lxid && lxid != 0 {
            return Ok((*nsp, name.clone()));
        }
    }
    // SAFETY: a catalog lookup by a static name.
    let ext = unsafe { pg_sys::get_extension_oid(c"memori".as_ptr(), true) };
    let (nsp, name) = match cached {
        Some((_, e, nsp, name)) if e == ext => (nsp, name),
        _ => {
            let nsp = crate::errors::read_one::<pg_sys::Oid>(
                "SELECT extnamespace FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'memori'::pg_catalog.name",
                &[],
            )?
            .ok_or_else(|| {
                MemoriError::new(
                    Code::ObjectNotInPrerequisiteState,
                    "memori: the memori extension is not installed in this database",
                )
            })?;
            // SAFETY: the name of an existing namespace, quoted as an identifier.
            let name = unsafe {
                let raw = pg_sys::get_namespace_name(nsp);
                std::ffi::CStr::from_ptr(pg_sys::quote_identifier(raw))
                    .to_string_lossy()
                    .into_owned()
            };
            (nsp, name)
        }
    };
    SCHEMA.with(|s| *s.borrow_mut() = Some((lxid, ext, nsp, name.clone())));
    Ok((nsp, name))
}

/// One of memori's tables: the relation of that name in memori's schema, only if it belongs
/// to the memori extension (pg_depend). A database not yet updated lacks the newer tables, and a
/// role with CREATE on memori's schema could put one of its own under such a name (with a
/// trigger that would then run as the owner): a relation that is not memori's is never used.
fn member_relation(name: &std::ffi::CStr) -> Result<Option<pg_sys::Oid>> {
    for fresh_look in [false, true] {
        let (nsp, _) = schema()?;
        let ext = SCHEMA.with(|s| s.borrow().as_ref().map(|c| c.1));
        // SAFETY: catalog lookups of a relation by name in a given namespace, and of the
        // extension it belongs to.
        let (rel, owner_ext) = unsafe {
            let rel = pg_sys::get_relname_relid(name.as_ptr(), nsp);
            if rel == pg_sys::InvalidOid {
                return Ok(None);
            }
            (
                rel,
                pg_sys::getExtensionOfObject(pg_sys::RelationRelationId, rel),
            )
        };
        if owner_ext == pg_sys::InvalidOid {
            return Ok(None);
        }
        if Some(owner_ext) == ext {
            return Ok(Some(rel));
        }
        // Another extension's oid: memori was dropped and created again in this transaction
        // (the cached one is gone). Look it up anew, once.
        if !fresh_look {
            SCHEMA.with(|s| *s.borrow_mut() = None);
        }
    }
    Ok(None)
}

fn relation(name: &std::ffi::CStr) -> Result<pg_sys::Oid> {
    member_relation(name)?.ok_or_else(|| {
        MemoriError::new(
            Code::SystemError,
            format!(
                "memori: table {} not found (or not memori's)",
                name.to_string_lossy()
            ),
        )
        .hint(
            "This database's memori may be older than its library: ALTER EXTENSION memori UPDATE;",
        )
    })
}

/// Whether one of memori's tables exists: a database still at memori 0.1.0 (the library is
/// installed, ALTER EXTENSION memori UPDATE has not run yet) lacks the newer ones.
pub fn table_exists(name: &std::ffi::CStr) -> Result<bool> {
    Ok(member_relation(name)?.is_some())
}

/// Whether memori's `table` has `column` (a database not yet updated lacks newer ones).
fn has_column(table: &std::ffi::CStr, column: &std::ffi::CStr) -> Result<bool> {
    Ok(match member_relation(table)? {
        // SAFETY: a catalog lookup of a column of an existing relation.
        Some(rel) => unsafe {
            pg_sys::get_attnum(rel, column.as_ptr()) != pg_sys::InvalidAttrNumber as i16
        },
        None => false,
    })
}

/// Whether memori_memories has full-text search (content_tsv): a database not yet updated to
/// 0.3.0 lacks it, and then searches rank by embeddings only and writes leave it out.
pub fn has_text_search() -> Result<bool> {
    has_column(c"memori_memories", c"content_tsv")
}

/// Whether memori_memories is a Citus distributed table (memori_distribute() ran).
pub fn distributed() -> Result<bool> {
    let (nsp, _) = schema()?;
    // SAFETY: catalog lookups by name; a missing relation is InvalidOid.
    let (dist, rel) = unsafe {
        (
            pg_sys::get_relname_relid(
                c"pg_dist_partition".as_ptr(),
                pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE),
            ),
            pg_sys::get_relname_relid(c"memori_memories".as_ptr(), nsp),
        )
    };
    if dist == pg_sys::InvalidOid || rel == pg_sys::InvalidOid {
        return Ok(false);
    }
    Ok(crate::errors::read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass)",
        &[rel.into()],
    )?
    .unwrap_or(false))
}

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

/// Whether the embedding cache is per user (user_id, 0.5.0): a database not yet updated
/// embeds without the cache until ALTER EXTENSION memori UPDATE.
pub fn has_user_cache() -> Result<bool> {
    has_column(c"memori_embedding_cache", c"user_id")
}

/// Whether memories have a validity (valid_to, 0.4.0): without it, none is superseded.
pub fn has_validity() -> Result<bool> {
    has_column(c"memori_memories", c"valid_to")
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
        crate::errors::read_one::<String>(
            &format!(
                "SELECT r.kind OPERATOR(pg_catalog.||) '/'::pg_catalog.text OPERATOR(pg_catalog.||) coalesce({namespace}, ''::pg_catalog.text)
                   FROM {nsp}.memori_roles r
                   JOIN pg_catalog.pg_roles g ON g.rolname OPERATOR(pg_catalog.=) r.role_name{same_role}
                  WHERE pg_catalog.pg_has_role($1::pg_catalog.oid, g.oid, 'USAGE'::pg_catalog.text)
                  ORDER BY r.kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text DESC, r.role_name
                  LIMIT 1"
            ),
            &[me.into()],
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
        .map_err(|_| MemoriError::new(Code::SystemError, "memori: schema name holds NUL"))?;
    // SAFETY: a catalog read of the relation's owner, then the identity switch PostgreSQL's own
    // internal queries use, then the pinned search_path in a nest level that Restore closes.
    let _restore = unsafe {
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
                "memori: could not pin search_path for an owner-run statement",
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
