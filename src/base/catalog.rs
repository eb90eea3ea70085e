//! memori's objects in this database, found from the catalogs and never through the caller's
//! search_path: its schema, its tables (only those pg_depend says are memori's), and what the
//! database's memori SQL has. A database whose SQL is older than the library (ALTER EXTENSION
//! memori UPDATE not run yet) lacks newer tables and columns; the probes below let every caller
//! work with what is there.

use crate::base::errors::{Code, MemoriError, Result};
use crate::base::gucs;
use pgrx::prelude::*;

thread_local! {
    /// Counts the invalidations PostgreSQL sent this backend for relations, functions and
    /// schemas since `epoch` first ran: the answers below hold until the count changes.
    static EPOCH: std::cell::Cell<u64> = const { std::cell::Cell::new(1) };
    static WATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Called by PostgreSQL while it processes invalidations of a relation, a function or a schema
/// (or of all of them): only counts (never fails).
unsafe extern "C-unwind" fn catalog_changed(_: pg_sys::Datum, _: std::ffi::c_int, _: u32) {
    let _ = EPOCH.try_with(|e| e.set(e.get().wrapping_add(1)));
}

/// The catalog answers' epoch (0 outside a transaction: nothing is kept). What this module
/// finds (memori's schema and extension, which extension a relation or function belongs to) is
/// kept across transactions until PostgreSQL invalidates a relation, a function or a schema, in
/// this backend or another: dropping or creating the extension, moving it to another schema,
/// renaming its schema, replacing a function all do (as do ANALYZE and VACUUM of any table:
/// only a lookup again). A search asked once per transaction before, and with one search per
/// transaction that was 2% of a 100-memory user's vector search (`perf`). Not seen: ALTER
/// EXTENSION ADD or DROP of a member (no invalidation; for the extension's owner only), which
/// counts from the next invalidation or new session.
fn epoch() -> u64 {
    if gucs::local_xact() == 0 {
        return 0;
    }
    if !WATCHING.with(|w| w.get()) {
        // SAFETY: registers this backend's callbacks once; they only count. On the catalog
        // caches of pg_class, pg_proc and pg_namespace (64 such callbacks per backend; relation
        // cache callbacks are only 10). Marked as watching once all three are registered (with
        // no slot left, PostgreSQL ends the session).
        unsafe {
            for cache in [
                pg_sys::SysCacheIdentifier::RELOID,
                pg_sys::SysCacheIdentifier::PROCOID,
                pg_sys::SysCacheIdentifier::NAMESPACEOID,
            ] {
                pg_sys::CacheRegisterSyscacheCallback(
                    cache as _,
                    Some(catalog_changed),
                    pg_sys::Datum::from(0),
                );
            }
        }
        WATCHING.with(|w| w.set(true));
    }
    EPOCH.with(|e| e.get())
}

thread_local! {
    /// memori's schema, for one `epoch`: (epoch, extension, schema, quoted name).
    static SCHEMA: std::cell::RefCell<Option<(u64, pg_sys::Oid, pg_sys::Oid, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// memori's schema: its oid and quoted name. Found from pg_extension, never through the
/// search_path, so it also holds where the caller's search_path is in force (row-level security
/// policies). Looked up again only after an invalidation (`epoch`): a store or search asks for
/// it several times (tenancy, the cache, the writes).
pub fn schema() -> Result<(pg_sys::Oid, String)> {
    let now = epoch();
    let cached = SCHEMA.with(|s| s.borrow().clone());
    if let Some((e, _, nsp, name)) = &cached {
        if *e == now && now != 0 {
            return Ok((*nsp, name.clone()));
        }
    }
    let (ext, nsp) = extension_row().ok_or_else(|| {
        MemoriError::new(
            Code::ObjectNotInPrerequisiteState,
            "the memori extension is not installed in this database",
        )
    })?;
    // SAFETY: a syscache lookup of a namespace by oid (NULL when there is none).
    let raw = unsafe { pg_sys::get_namespace_name(nsp) };
    if raw.is_null() {
        return Err(MemoriError::new(
            Code::ObjectNotInPrerequisiteState,
            format!(
                "the schema of the memori extension (oid {}) does not exist",
                nsp.to_u32()
            ),
        ));
    }
    // SAFETY: an existing namespace's name, quoted as an identifier.
    let name = unsafe {
        std::ffi::CStr::from_ptr(pg_sys::quote_identifier(raw))
            .to_string_lossy()
            .into_owned()
    };
    SCHEMA.with(|s| *s.borrow_mut() = Some((now, ext, nsp, name.clone())));
    Ok((nsp, name))
}

/// memori's row of pg_extension, its oid and schema, read from one tuple with the catalog
/// snapshot (as `get_extension_oid` reads it): the answer agrees with the invalidations `epoch`
/// has counted. (A statement's MVCC snapshot can be older: under REPEATABLE READ, one taken
/// before another session created memori again in another schema gave the old schema with the
/// new oid, and when that schema had been dropped, a name read from nothing crashed the server;
/// `tests/system/upgrade.sh` runs that sequence.)
fn extension_row() -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: an index scan of pg_extension by name, as get_extension_oid() does it, under
    // AccessShareLock; the tuple is read before the scan ends.
    unsafe {
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(pg_sys::ExtensionRelationId, lock);
        let mut key = pg_sys::ScanKeyData::default();
        pg_sys::ScanKeyInit(
            &mut key,
            pg_sys::Anum_pg_extension_extname as pg_sys::AttrNumber,
            pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
            pg_sys::Oid::from(pg_sys::F_NAMEEQ),
            pg_sys::Datum::from(c"memori".as_ptr()),
        );
        let scan = pg_sys::systable_beginscan(
            rel,
            pg_sys::Oid::from(pg_sys::ExtensionNameIndexId),
            true,
            std::ptr::null_mut(),
            1,
            &mut key,
        );
        let tuple = pg_sys::systable_getnext(scan);
        let row = (!tuple.is_null()).then(|| {
            let form = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_extension;
            ((*form).oid, (*form).extnamespace)
        });
        pg_sys::systable_endscan(scan);
        pg_sys::table_close(rel, lock);
        row
    }
}

/// One of memori's tables: the relation of that name in memori's schema, only if it belongs
/// to the memori extension (pg_depend). A database not yet updated lacks the newer tables, and a
/// role with CREATE on memori's schema could put one of its own under such a name (with a
/// trigger that would then run as the owner): a relation that is not memori's is never used.
fn member_relation(name: &std::ffi::CStr) -> Result<Option<pg_sys::Oid>> {
    for fresh_look in [false, true] {
        let (nsp, _) = schema()?;
        let ext = SCHEMA.with(|s| s.borrow().as_ref().map(|c| c.1));
        // SAFETY: a catalog lookup of a relation by name in a given namespace.
        let rel = unsafe { pg_sys::get_relname_relid(name.as_ptr(), nsp) };
        if rel == pg_sys::InvalidOid {
            return Ok(None);
        }
        let owner_ext = extension_of(pg_sys::RelationRelationId, rel);
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

thread_local! {
    /// The extension of each object `extension_of` was asked about, for one `epoch`:
    /// (epoch, [((catalog, object), extension)]).
    #[allow(clippy::type_complexity)]
    static MEMBERS: std::cell::RefCell<(u64, Vec<((pg_sys::Oid, pg_sys::Oid), pg_sys::Oid)>)> =
        const { std::cell::RefCell::new((0, Vec::new())) };
}

/// The extension object `object` of catalog `class` (a relation, a function) belongs to
/// (pg_depend; InvalidOid for none), looked up again only after an invalidation (`epoch`): a
/// search asks about several of memori's tables and its term match, each time a scan of
/// pg_depend. By oid: an object dropped and made again is another.
fn extension_of(class: pg_sys::Oid, object: pg_sys::Oid) -> pg_sys::Oid {
    let key = (class, object);
    let now = epoch();
    let cached = MEMBERS.with(|m| {
        let m = m.borrow();
        (now != 0 && m.0 == now)
            .then(|| m.1.iter().find(|(k, _)| *k == key).map(|(_, e)| *e))
            .flatten()
    });
    if let Some(ext) = cached {
        return ext;
    }
    // SAFETY: a catalog lookup of the extension an existing object belongs to.
    let ext = unsafe { pg_sys::getExtensionOfObject(class, object) };
    if now != 0 {
        MEMBERS.with(|m| {
            let mut m = m.borrow_mut();
            if m.0 != now {
                *m = (now, Vec::new());
            }
            m.1.push((key, ext));
        });
    }
    ext
}

pub fn relation(name: &std::ffi::CStr) -> Result<pg_sys::Oid> {
    member_relation(name)?.ok_or_else(|| {
        MemoriError::new(
            Code::SystemError,
            format!(
                "table {} not found (or not memori's)",
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

/// Whether the HNSW index for embeddings of `dims` dimensions exists in memori's schema
/// (`idx_memori_mem_embedding_<dims>`: 384 and 1536 from the start, other widths from
/// `memori_create_index`): a relation of that name that is an index of memori_memories (not
/// some other relation a role made under that name). Syscache lookups.
pub fn has_vector_index(dims: usize) -> Result<bool> {
    let (nsp, _) = schema()?;
    let name = std::ffi::CString::new(format!("idx_memori_mem_embedding_{dims}"))
        .expect("a name of digits");
    // SAFETY: a catalog lookup of a relation by name in a given namespace.
    let index = unsafe { pg_sys::get_relname_relid(name.as_ptr(), nsp) };
    if index == pg_sys::InvalidOid {
        return Ok(false);
    }
    let table = relation(c"memori_memories")?;
    // SAFETY: catalog lookups of an existing relation's kind and, for an index, its table.
    Ok(unsafe {
        pg_sys::get_rel_relkind(index) == pg_sys::RELKIND_INDEX as std::ffi::c_char
            && pg_sys::IndexGetRelation(index, true) == table
    })
}

/// Whether memori's `table` has `column` (a database not yet updated lacks newer ones).
pub fn has_column(table: &std::ffi::CStr, column: &std::ffi::CStr) -> Result<bool> {
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

thread_local! {
    /// The transaction (local xact) in which memori_memories was last found distributed: a
    /// table once distributed stays so for the transaction, so that answer is kept (a search
    /// asks once per statement); "not distributed" is asked again, since memori_distribute()
    /// may run in the same transaction.
    static DISTRIBUTED_IN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether memori_memories is a Citus distributed table (memori_distribute() ran).
pub fn distributed() -> Result<bool> {
    let lxid = gucs::local_xact();
    if lxid != 0 && DISTRIBUTED_IN.with(|d| d.get()) == lxid {
        return Ok(true);
    }
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
    let distributed = crate::base::spi::read_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass)",
        &[rel.into()],
    )?
    .unwrap_or(false);
    if distributed {
        DISTRIBUTED_IN.with(|d| d.set(lxid));
    }
    Ok(distributed)
}

/// Whether the embedding cache is per user (user_id, 0.5.0): a database not yet updated
/// embeds without the cache until ALTER EXTENSION memori UPDATE.
pub fn has_user_cache() -> Result<bool> {
    has_column(c"memori_embedding_cache", c"user_id")
}

/// Whether memories have an event time (event_at, 0.5.0).
pub fn has_event_time() -> Result<bool> {
    has_column(c"memori_memories", c"event_at")
}

/// Whether memories carry the key of the near-duplicate check's sketches (dedup_scope, added
/// with dedup_sketch by 0.5.0): a database not yet updated compares a new memory with every row
/// of its scope whole.
pub fn has_dedup_scope() -> Result<bool> {
    has_column(c"memori_memories", c"dedup_scope")
}

/// Whether memories have a validity (valid_to, 0.4.0): without it, none is superseded.
pub fn has_validity() -> Result<bool> {
    has_column(c"memori_memories", c"valid_to")
}

/// Whether memori has `memori_term_mask(tsvector, tsvector)` (0.5.0), the per-memory term match
/// of a hybrid search over an exact scope: a database not yet updated searches by the two
/// rankings apart. Only the extension's own function counts (one another role could have put
/// in memori's schema before the update would otherwise run in memori's statements).
pub fn has_term_mask() -> Result<bool> {
    let (nsp, _) = schema()?;
    let ext = SCHEMA.with(|s| s.borrow().as_ref().map(|c| c.1));
    let args = [pg_sys::TSVECTOROID, pg_sys::TSVECTOROID];
    // SAFETY: a syscache lookup of a function by name, argument types and namespace (the
    // argument vector built in the current memory context).
    let f = unsafe {
        let types = pg_sys::buildoidvector(args.as_ptr(), args.len() as std::ffi::c_int);
        pg_sys::GetSysCacheOid(
            pg_sys::SysCacheIdentifier::PROCNAMEARGSNSP as _,
            pg_sys::Anum_pg_proc_oid as pg_sys::AttrNumber,
            pg_sys::Datum::from(c"memori_term_mask".as_ptr()),
            pg_sys::Datum::from(types),
            pg_sys::Datum::from(nsp),
            pg_sys::Datum::from(0),
        )
    };
    if f == pg_sys::InvalidOid {
        return Ok(false);
    }
    // Whose it is (a search asks every time: read from pg_depend once per `epoch`).
    let owner = extension_of(pg_sys::ProcedureRelationId, f);
    Ok(owner != pg_sys::InvalidOid && Some(owner) == ext)
}
