//! Conversations: the seed's `memori_conversations`, which group related memories.

use crate::base::errors::{Code, MemoriError, OrRaise, Result};
use crate::base::spi::opt_one;
use crate::tenancy;
use pgrx::datum::{JsonB, Uuid};
use pgrx::prelude::*;

/// A `jsonb` argument, read without panicking: pgrx's `JsonB` turns a value serde cannot read
/// (nested deeper than 128 levels) into an internal error (XX000); this keeps the reason, and
/// `metadata_object` makes it a clear one.
pub struct JsonbArg(std::result::Result<serde_json::Value, String>);

impl JsonbArg {
    /// A value memori builds itself.
    pub fn new(v: serde_json::Value) -> Self {
        JsonbArg(Ok(v))
    }
}

impl pgrx::FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // Bounded before it is printed and parsed (a small compressed datum may be a large
        // text): at most memori.max_content_bytes, like a memory's content.
        // SAFETY: the argument's datum, a jsonb varlena (maybe toasted or compressed).
        let size = unsafe { pg_sys::toast_raw_datum_size(datum) };
        let max = crate::base::gucs::max_content_bytes();
        if size > max {
            return Some(JsonbArg(Err(format!(
                "it is {size} bytes, over memori.max_content_bytes ({max})"
            ))));
        }
        // SAFETY: a jsonb datum (the argument's SQL type), printed by PostgreSQL's jsonb_out.
        let text = unsafe {
            let varlena = datum.cast_mut_ptr::<pg_sys::varlena>();
            let detoasted = pg_sys::pg_detoast_datum_packed(varlena);
            let cstr = pgrx::direct_function_call_as_datum(
                pg_sys::jsonb_out,
                &[Some(pg_sys::Datum::from(detoasted))],
            )?
            .cast_mut_ptr::<std::ffi::c_char>();
            std::ffi::CStr::from_ptr(cstr)
                .to_string_lossy()
                .into_owned()
        };
        Some(JsonbArg(
            serde_json::from_str(&text).map_err(|e| e.to_string()),
        ))
    }
}

// SAFETY: read as pgrx reads its own argument types, from the datum.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the argument is a jsonb datum.
        unsafe {
            arg.unbox_arg_using_from_datum()
                .unwrap_or_else(|| panic!("argument {index} must not be null"))
        }
    }
    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: the argument is a jsonb datum.
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

// SAFETY: the SQL type is jsonb, which FromDatum above reads.
unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for JsonbArg {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(JsonbArg);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: std::result::Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: std::result::Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Err(pgrx::pgrx_sql_entity_graph::metadata::ReturnsError::Datum);
}

/// Checks that a metadata argument is a JSON object (NULL counts as `{}`).
pub fn metadata_object(metadata: Option<JsonbArg>) -> Result<JsonB> {
    match metadata.map(|m| m.0) {
        None => Ok(JsonB(serde_json::json!({}))),
        Some(Err(e)) => Err(MemoriError::new(
            crate::base::errors::Code::ProgramLimitExceeded,
            format!("metadata cannot be read: {e}"),
        )
        .hint("Metadata is a JSON object of at most memori.max_content_bytes, nested at most 127 levels deep, with numbers a float8 can hold.")),
        Some(Ok(v)) if v.is_object() => Ok(JsonB(v)),
        Some(Ok(v)) => Err(MemoriError::invalid(format!(
            "metadata must be a JSON object, not {}",
            json_kind(&v)
        ))
        .hint("Pass metadata => '{\"key\": \"value\"}'.")),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Creates a conversation for the current memori user (or `user_id`) and returns its id.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_conversation_create(
    title: default!(Option<&str>, "NULL"),
    user_id: default!(Option<&str>, "NULL"),
    metadata: default!(Option<JsonbArg>, "'{}'"),
    data_source_id: default!(Option<i64>, "NULL"),
) -> Uuid {
    crate::base::spi::prevent_if_read_only(c"memori_conversation_create()");
    let user = tenancy::resolve(user_id).or_raise();
    let metadata = metadata_object(metadata).or_raise();
    crate::tenancy::as_owner_of(c"memori_conversations", || {
        Spi::get_one_with_args::<Uuid>(
            "INSERT INTO memori_conversations (user_id, title, metadata, data_source_id)
         VALUES ($1, $2, $3, $4) RETURNING conversation_id",
            &[
                user.into(),
                title.into(),
                metadata.into(),
                data_source_id.into(),
            ],
        )
        .map_err(crate::base::spi::spi)
    })
    .or_raise()
    .expect("INSERT ... RETURNING gives one row")
}

/// Checks that a conversation exists and belongs to `user` (without locking it).
pub fn check_conversation(conversation_id: Option<Uuid>, user: &str) -> Result<()> {
    let Some(c) = conversation_id else {
        return Ok(());
    };
    // Through `reading`, as every read of user data: on Citus a tenant's own reads see nothing.
    let found = crate::tenancy::reading(|| {
        crate::base::spi::read_one::<bool>(
            "SELECT true FROM memori_conversations WHERE conversation_id OPERATOR(pg_catalog.=) $1::pg_catalog.uuid AND user_id OPERATOR(pg_catalog.=) $2::pg_catalog.text",
            &[c.into(), user.into()],
        )
    })?;
    match found {
        Some(_) => Ok(()),
        None => Err(MemoriError::new(
            Code::ForeignKeyViolation,
            format!("conversation {c} does not exist for user \"{user}\""),
        )
        .hint("Create it with memori_conversation_create(), or leave conversation_id NULL.")),
    }
}

/// Checks that `conversation_id` exists and belongs to `user`; moves its last activity on.
pub fn touch_conversation(conversation_id: Uuid, user: &str) -> Result<()> {
    let owner = opt_one::<String>(
        "UPDATE memori_conversations SET last_activity_at = now(), updated_at = now()
          WHERE conversation_id = $1 AND user_id OPERATOR(pg_catalog.=) $2::pg_catalog.text RETURNING user_id::pg_catalog.text",
        &[conversation_id.into(), user.into()],
    )?;
    match owner {
        Some(_) => Ok(()),
        None => Err(MemoriError::new(
            Code::ForeignKeyViolation,
            format!("conversation {conversation_id} does not exist for user \"{user}\""),
        )
        .hint("Create it with memori_conversation_create(), or store the memory without conversation_id.")),
    }
}
