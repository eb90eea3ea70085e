//! The few ways memori runs SQL through SPI: an SPI failure as a memori error, one value of a
//! read-only statement (without assigning a transaction id, so it works on a standby), and the
//! read-only guard every writing function calls first.

use crate::base::errors::{Code, MemoriError, Result};

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
