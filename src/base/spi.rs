//! The few ways memori runs SQL through SPI: an SPI failure as a memori error, one value of a
//! read-only statement (without assigning a transaction id, so it works on a standby), plans
//! kept per backend for the statements a search runs every time, and the read-only guard every
//! writing function calls first.

use crate::base::errors::{Code, MemoriError, Result};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

/// Plans kept at most: a search's statements differ by its filters and the embedding's width,
/// so a backend sees a few dozen texts at most; past this the cache starts over.
const MAX_KEPT_PLANS: usize = 128;

thread_local! {
    /// Plans kept for the life of the backend, by statement text and argument types.
    static KEPT: RefCell<HashMap<String, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Puts a kept plan back after its run, also while an ERROR unwinds (the plan stays valid: the
/// abort releases what the failed run held). Nothing is freed while unwinding: the cache starts
/// over at the next successful run instead, so repeated errors neither leak plans nor call into
/// PostgreSQL in the middle of an abort.
struct Borrowed {
    key: String,
    plan: Option<OwnedPreparedStatement>,
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        let Some(plan) = self.plan.take() else { return };
        let unwinding = std::thread::panicking();
        KEPT.with(|k| {
            let Ok(mut k) = k.try_borrow_mut() else {
                // Not reachable (the map is never borrowed across a run); never panic here.
                std::mem::forget(plan);
                return;
            };
            if k.len() >= MAX_KEPT_PLANS && !unwinding {
                k.clear();
            }
            // While unwinding the map may pass its bound by this one key (at most once per key).
            if let Some(old) = k.insert(std::mem::take(&mut self.key), plan) {
                // A re-entrant run of the same statement kept its own plan meanwhile.
                if unwinding {
                    std::mem::forget(old);
                }
            }
        });
    }
}

/// How a kept statement is planned when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planning {
    /// One generic plan, made at the first run and reused: for statements whose best plan does
    /// not depend on their arguments' values (a row by its key, the rows of a user known to be
    /// small, the near-duplicate check through the sketches' index). PostgreSQL would
    /// otherwise plan them again at every run, since a generic plan's estimates (an average
    /// user) never look cheaper than a plan for the values: with `perf`, 28% of a 100-memory
    /// user's hybrid search was planning. The plan is made with the
    /// settings that keep it on the indexes whatever the table's statistics say of an average
    /// user (sequential scans off, index, bitmap and TID scans and sorting on, no JIT), not with
    /// the caller's or an HNSW pass's. Other settings (join methods, `work_mem`, cost constants)
    /// are those of the session whose search made the plan, kept with it for the backend's life
    /// (a pooled backend's next sessions run it too): they change its speed, never its rows.
    Generic,
    /// A plan for the arguments' values and the settings of each run: for statements whose plan
    /// should follow them (a large user, the HNSW pass, a large user's terms through the GIN
    /// index).
    ByValues,
}

/// The settings of a run (see `Planning`).
fn plan_settings(planning: Planning) -> &'static [(&'static CStr, &'static CStr)] {
    match planning {
        Planning::Generic => &[
            (c"plan_cache_mode", c"force_generic_plan"),
            (c"enable_seqscan", c"off"),
            (c"enable_indexscan", c"on"),
            (c"enable_bitmapscan", c"on"),
            // The best rows are read again by position (`search::fetch_at`, `read_back`).
            (c"enable_tidscan", c"on"),
            (c"enable_sort", c"on"),
            (c"jit", c"off"),
        ],
        Planning::ByValues => &[(c"plan_cache_mode", c"force_custom_plan")],
    }
}

/// Runs a read-only statement through a plan kept for the life of the backend, planned once
/// (PostgreSQL's plan cache plans it anew when a table, the search_path or the role it was
/// planned for changes, as for any prepared statement). For statements memori runs on every
/// search, whose text is fixed up to a few internal variants; user values are always arguments.
pub fn select_kept<'conn>(
    client: &SpiClient<'conn>,
    sql: &str,
    args: &[DatumWithOid],
    planning: Planning,
) -> SpiResult<SpiTupleTable<'conn>> {
    let (key, oids) = plan_key(sql, args, false);
    let borrowed = lend(key, || Ok(client.prepare(sql, &oids)?.keep()))?;
    let plan = borrowed.plan.as_ref().expect("set by lend");
    planned(Some(planning), || {
        #[cfg(feature = "pg_test")]
        capture_plan(sql, args);
        client.select(plan, None, args)
    })
}

/// A value of a column of one of the by-value types `select_fixed` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fixed {
    Int4(i32),
    Int8(i64),
    Float4(f32),
    Float8(f64),
    /// A timestamptz: microseconds since 2000-01-01 UTC (i64::MIN and MAX: -infinity and
    /// infinity).
    Timestamptz(i64),
    /// A row position (tid): its block number in the high 32 bits, its offset in the low 16.
    Tid(u64),
    Null,
}

impl Fixed {
    pub fn int4(self) -> Option<i32> {
        match self {
            Fixed::Int4(v) => Some(v),
            _ => None,
        }
    }
    pub fn int8(self) -> Option<i64> {
        match self {
            Fixed::Int8(v) => Some(v),
            _ => None,
        }
    }
    pub fn float4(self) -> Option<f32> {
        match self {
            Fixed::Float4(v) => Some(v),
            _ => None,
        }
    }
    pub fn float8(self) -> Option<f64> {
        match self {
            Fixed::Float8(v) => Some(v),
            _ => None,
        }
    }
    pub fn timestamptz(self) -> Option<i64> {
        match self {
            Fixed::Timestamptz(v) => Some(v),
            _ => None,
        }
    }
    pub fn tid(self) -> Option<u64> {
        match self {
            Fixed::Tid(v) => Some(v),
            _ => None,
        }
    }
}

/// A row position as `Fixed::Tid` holds it.
pub fn tid_bits(tid: pg_sys::ItemPointerData) -> u64 {
    pgrx::itemptr::item_pointer_to_u64(tid)
}

/// The row position `tid_bits` gave.
pub fn tid_of(bits: u64) -> pg_sys::ItemPointerData {
    let mut tid = pg_sys::ItemPointerData::default();
    pgrx::itemptr::u64_to_item_pointer(bits, &mut tid);
    tid
}

/// Every row a read-only statement returns (run as `select_kept` runs it), each built by `row`
/// from its values. For many rows of columns of by-value types only (int4, int8, float4,
/// float8, timestamptz; checked once, any other type is an error) and row positions (tid, a
/// fixed 6 bytes, copied): each row is deformed once
/// and its values read as they are, where pgrx's row iterator allocates a row of entries and
/// checks each value's type (for the 20,000 rows of a hybrid search over an exact scope, 12% of
/// the search with `perf`).
pub fn select_fixed<T>(
    sql: &str,
    args: &[DatumWithOid],
    planning: Planning,
    mut row: impl FnMut(&[Fixed]) -> T,
) -> Result<Vec<T>> {
    pgrx::Spi::connect(|client| {
        let n = select_kept(client, sql, args, planning).map_err(spi)?.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: SPI_tuptable is the result of the statement just run (nothing ran since, in
        // this connection or another), with SPI_processed = n rows in `vals`. Each tuple is
        // deformed into arrays of the descriptor's width, and only values of by-value types,
        // checked against the descriptor first, are read, and tids: the only pointer followed
        // is a non-null tid's, to the 6 bytes of the value in the deformed tuple.
        unsafe {
            let tt = pg_sys::SPI_tuptable;
            if tt.is_null() || (*tt).tupdesc.is_null() || (*tt).numvals as usize != n {
                return Err(MemoriError::new(Code::SystemError, "no result to read"));
            }
            let desc = (*tt).tupdesc;
            let natts = (*desc).natts as usize;
            let kinds: Vec<pg_sys::Oid> = (1..=natts)
                .map(|i| pg_sys::SPI_gettypeid(desc, i as _))
                .collect();
            let fixed = [
                pg_sys::INT4OID,
                pg_sys::INT8OID,
                pg_sys::FLOAT4OID,
                pg_sys::FLOAT8OID,
                pg_sys::TIMESTAMPTZOID,
            ];
            let read = |t: pg_sys::Oid| {
                (fixed.contains(&t) && pg_sys::get_typbyval(t))
                    || (t == pg_sys::TIDOID && pg_sys::get_typlen(t) == 6)
            };
            if let Some(t) = kinds.iter().find(|t| !read(**t)) {
                return Err(MemoriError::new(
                    Code::SystemError,
                    format!("column of type {t:?} is not read by value"),
                ));
            }
            let tuples = std::slice::from_raw_parts((*tt).vals, n);
            let mut values = vec![pg_sys::Datum::from(0); natts];
            let mut nulls = vec![false; natts];
            let mut columns = Vec::with_capacity(natts);
            let mut out = Vec::with_capacity(n);
            for &tuple in tuples {
                pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
                columns.clear();
                for ((v, null), kind) in values.iter().zip(&nulls).zip(&kinds) {
                    let bits = v.value() as u64;
                    columns.push(match *kind {
                        _ if *null => Fixed::Null,
                        pg_sys::INT4OID => Fixed::Int4(bits as u32 as i32),
                        pg_sys::INT8OID => Fixed::Int8(bits as i64),
                        pg_sys::FLOAT4OID => Fixed::Float4(f32::from_bits(bits as u32)),
                        pg_sys::TIMESTAMPTZOID => Fixed::Timestamptz(bits as i64),
                        // A pointer to the 6 bytes of an ItemPointerData in the tuple.
                        pg_sys::TIDOID => Fixed::Tid(tid_bits(std::ptr::read_unaligned(
                            v.cast_mut_ptr::<pg_sys::ItemPointerData>(),
                        ))),
                        _ => Fixed::Float8(f64::from_bits(bits)),
                    });
                }
                out.push(row(&columns));
            }
            Ok(out)
        }
    })
}

/// The plan kept for `key`, or the one `prepare` makes, lent for one run.
fn lend(
    key: String,
    prepare: impl FnOnce() -> SpiResult<OwnedPreparedStatement>,
) -> SpiResult<Borrowed> {
    let plan = match KEPT.with(|k| k.borrow_mut().remove(&key)) {
        Some(p) => p,
        None => prepare()?,
    };
    Ok(Borrowed {
        key,
        plan: Some(plan),
    })
}

/// Runs `run` with `planning`'s settings (None: the caller's), those not already in force set
/// in a GUC nest level closed after it. Citus plans a distributed statement for its values only
/// (a generic plan cannot route `user_id = $1` to a shard): there, PostgreSQL's own choice, as
/// for any statement.
pub(crate) fn planned<T>(planning: Option<Planning>, run: impl FnOnce() -> T) -> T {
    let planning = planning.filter(|_| !crate::base::catalog::distributed().unwrap_or(true));
    // Only the settings not already in force (most are the defaults), and a nest level only
    // for those: in PostgreSQL 15 closing one visits every setting. With `perf`, setting and
    // restoring settings was 2.4% of a 100-memory user's vector search, mostly here (four
    // statements, seven settings each).
    let change: Vec<_> = planning
        .map(plan_settings)
        .unwrap_or_default()
        .iter()
        .filter(|(name, value)| !crate::base::gucs::is_set_to(name, value))
        .collect();
    let nest = (!change.is_empty()).then(|| {
        // SAFETY: opens a GUC nest level, closed below (or by the abort of an ERROR, as for a
        // function's SET clause). The plan cache reads the settings when the run gets its plan.
        let nest = unsafe { pg_sys::NewGUCNestLevel() };
        for (name, value) in change {
            crate::base::gucs::set_in_nest_level(name, value);
        }
        nest
    });
    let out = run();
    if let Some(nest) = nest {
        // SAFETY: closes the nest level opened above.
        unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    }
    out
}

#[cfg(feature = "pg_test")]
thread_local! {
    /// Tests only: while set, the plan of each statement `select_kept` or `write_kept` runs
    /// (`EXPLAIN (COSTS OFF) EXECUTE` of the statement prepared with its arguments' types, with
    /// its arguments, under the run's settings and role: a generic plan shows as such, with
    /// parameters, as the kept plan runs it; an owner-run statement, where PREPARE is refused,
    /// as `EXPLAIN (COSTS OFF)` of the statement for its arguments' values).
    pub static PLANS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

#[cfg(feature = "pg_test")]
fn capture_plan(sql: &str, args: &[DatumWithOid]) {
    if PLANS.with(|p| p.borrow().is_none()) {
        return;
    }
    let explained = |t: SpiTupleTable| {
        t.filter_map(|r| r.get::<String>(1).ok().flatten())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // SAFETY: reads the current security context.
    let plan = if unsafe { pg_sys::InSecurityRestrictedOperation() } {
        // An owner-run statement (`as_owner_of`), where PREPARE is refused: the plan for these
        // values.
        pgrx::Spi::connect(|c| {
            c.select(&format!("EXPLAIN (COSTS OFF) {sql}"), None, args)
                .map(explained)
        })
    } else {
        // EXECUTE's arguments cannot be the outer statement's parameters: literals, each cast
        // to its type.
        // SAFETY: each argument's type name and text, by its type's output function.
        let (types, values): (Vec<String>, Vec<String>) = args
            .iter()
            .map(|a| unsafe {
                let ty = std::ffi::CStr::from_ptr(pg_sys::format_type_be(a.oid()))
                    .to_string_lossy()
                    .into_owned();
                let value = match a.datum() {
                    None => format!("NULL::{ty}"),
                    Some(d) => {
                        let (mut out, mut varlena) = (pg_sys::InvalidOid, false);
                        pg_sys::getTypeOutputInfo(a.oid(), &mut out, &mut varlena);
                        let text = pg_sys::OidOutputFunctionCall(out, d.sans_lifetime());
                        let literal = std::ffi::CStr::from_ptr(pg_sys::quote_literal_cstr(text));
                        format!("{}::{ty}", literal.to_string_lossy())
                    }
                };
                (ty, value)
            })
            .unzip();
        let list = |v: Vec<String>| {
            if v.is_empty() {
                String::new()
            } else {
                format!("({})", v.join(", "))
            }
        };
        let (types, values) = (list(types), list(values));
        pgrx::Spi::connect_mut(|c| {
            c.update(
                &format!("PREPARE memori_capture {types} AS {sql}"),
                None,
                &[],
            )?;
            let plan = c
                .select(
                    &format!("EXPLAIN (COSTS OFF) EXECUTE memori_capture {values}"),
                    None,
                    &[],
                )
                .map(explained);
            c.update("DEALLOCATE memori_capture", None, &[])?;
            plan
        })
    }
    .unwrap_or_else(|e| format!("EXPLAIN failed: {e}"));
    PLANS.with(|p| {
        if let Some(v) = p.borrow_mut().as_mut() {
            v.push(plan);
        }
    });
}

/// `select_kept` for a statement that writes (the store path's INSERT and merge UPDATE), with
/// `planning`'s settings, or PostgreSQL's own choice (None: custom plans until a generic one
/// looks as cheap).
pub fn write_kept<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &str,
    args: &[DatumWithOid],
    planning: Option<Planning>,
) -> SpiResult<SpiTupleTable<'conn>> {
    let (key, oids) = plan_key(sql, args, true);
    let borrowed = lend(key, || Ok(client.prepare_mut(sql, &oids)?.keep()))?;
    let plan = borrowed.plan.as_ref().expect("set by lend");
    planned(planning, || {
        #[cfg(feature = "pg_test")]
        capture_plan(sql, args);
        client.update(plan, None, args)
    })
}

/// A kept plan's key: whether it writes, its argument types and its text.
fn plan_key(sql: &str, args: &[DatumWithOid], writes: bool) -> (String, Vec<PgOid>) {
    let oids: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    let key = format!(
        "{}{:?}\n{sql}",
        if writes { "w" } else { "r" },
        args.iter().map(|a| a.oid().to_u32()).collect::<Vec<_>>()
    );
    (key, oids)
}

/// Wraps an SPI failure (already a PostgreSQL error in most cases) as a memori error.
pub fn spi(e: pgrx::spi::SpiError) -> MemoriError {
    MemoriError::new(Code::SystemError, format!("internal query failed: {e}"))
}

/// The first column of the first row of a read-only query, or None when it returns no row or
/// NULL. Unlike pgrx's `Spi::get_one`, it does not mark the transaction as writing (which would
/// assign a transaction id, and fails on a hot standby).
pub fn read_one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>> {
    pgrx::Spi::connect(|client| {
        let rows = client.select(sql, Some(1), args)?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get_one::<T>()
        }
    })
    .map_err(spi)
}

/// `read_one` through a plan kept per backend (see `select_kept`), for statements every search
/// runs.
pub fn read_one_kept<T: pgrx::FromDatum + pgrx::IntoDatum>(
    sql: &str,
    args: &[DatumWithOid],
    planning: Planning,
) -> Result<Option<T>> {
    pgrx::Spi::connect(|client| {
        let rows = select_kept(client, sql, args, planning)?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get_one::<T>()
        }
    })
    .map_err(spi)
}

/// The first column of the first row of `sql`, or None when it returns no row.
pub fn opt_one<T: pgrx::FromDatum + pgrx::IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>> {
    match pgrx::Spi::get_one_with_args::<T>(sql, args) {
        Err(pgrx::spi::SpiError::InvalidPosition) => Ok(None),
        other => other.map_err(spi),
    }
}

/// Refuses a writing function in a read-only transaction or on a hot standby, with
/// PostgreSQL's own error (25006), before any work (no embedding is computed).
pub fn prevent_if_read_only(function: &std::ffi::CStr) {
    // SAFETY: raises an ERROR (through pgrx's guarded FFI boundary) or returns.
    unsafe { pgrx::pg_sys::PreventCommandIfReadOnly(function.as_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_position_comes_back_as_it_was_read() {
        // Block numbers past 16 bits (a table past 512 MB), the largest block and offset.
        for (block, offset) in [(0u32, 1u16), (1, 7), (70_000, 3), (0xFFFF_FFFE, 0x7FFF)] {
            let mut tid = pg_sys::ItemPointerData::default();
            pgrx::itemptr::item_pointer_set_all(&mut tid, block, offset);
            let bits = tid_bits(tid);
            assert_eq!(bits, (u64::from(block) << 32) | u64::from(offset));
            assert_eq!(
                pgrx::itemptr::item_pointer_get_both(tid_of(bits)),
                (block, offset)
            );
        }
    }
}
