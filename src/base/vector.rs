//! pgvector's `vector` as a Rust value, so functions can return `vector` and `vector[]`.
//!
//! The datum is built in pgvector's own layout (varlena header, int16 dim, int16 unused,
//! float4 values), the layout pgvector's `vector_in` produces.

use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::IntoDatum;

/// pgvector's limit on dimensions.
pub const MAX_DIMS: usize = 16_000;

#[derive(Clone, Debug, PartialEq)]
pub struct Vector(pub Vec<f32>);

impl IntoDatum for Vector {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let dim = self.0.len();
        assert!(
            dim <= MAX_DIMS,
            "embedding widths are checked before they reach a datum"
        );
        let size = 8 + 4 * dim;
        // SAFETY: palloc0 returns `size` zeroed bytes in the current memory context; we write the
        // 4-byte varlena header, the int16 dimension count and `dim` float4 values inside them.
        unsafe {
            let ptr = pg_sys::palloc0(size) as *mut u8;
            // SET_VARSIZE for a 4-byte header (little- or big-endian as PostgreSQL does it).
            #[cfg(target_endian = "little")]
            std::ptr::write(ptr as *mut u32, (size as u32) << 2);
            #[cfg(target_endian = "big")]
            std::ptr::write(ptr as *mut u32, (size as u32) & 0x3FFF_FFFF);
            std::ptr::write(ptr.add(4) as *mut i16, dim as i16);
            std::ptr::copy_nonoverlapping(self.0.as_ptr(), ptr.add(8) as *mut f32, dim);
            Some(pg_sys::Datum::from(ptr))
        }
    }

    fn type_oid() -> pg_sys::Oid {
        // memori's functions pin search_path to the extension's schema, where vector lives.
        // SAFETY: a catalog lookup by a static, NUL-terminated name.
        unsafe { pg_sys::TypenameGetTypid(c"vector".as_ptr()) }
    }
}

unsafe impl BoxRet for Vector {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a freshly built vector datum, returned as the function's result.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

unsafe impl SqlTranslatable for Vector {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Vector);
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("vector"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("vector")));
}

/// The text form pgvector reads: `[1,2,3]`.
pub fn literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 12 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

/// The typed cast the per-width HNSW indexes are built on (see `memori_create_index`):
/// `vector(d)` up to 2000 dimensions, `halfvec(d)` above.
pub fn indexed_cast(dims: usize) -> String {
    if dims <= 2000 {
        format!("vector({dims})")
    } else {
        format!("halfvec({dims})")
    }
}

/// A query vector given as parameter `$param` (real[]) in the indexed cast of its width, as an
/// InitPlan: `(SELECT $n::real[]::vector(d))` is cast once per statement. A bare
/// `$n::real[]::vector(d)` is cast again for every row compared (a kept plan turns generic,
/// and a generic plan cannot fold a parameter's cast): an array deconstructed per memory.
pub fn query_vector(param: usize, dims: usize) -> String {
    let cast = indexed_cast(dims);
    format!("(SELECT ${param}::real[]::{cast})")
}
