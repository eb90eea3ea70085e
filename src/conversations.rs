//! Conversations: the seed's `memori_conversations`, which group related memories.

use crate::errors::{MemoriError, OrRaise, Result};
use crate::user;
use pgrx::datum::{JsonB, Uuid};
use pgrx::prelude::*;

/// Checks that a metadata argument is a JSON object (NULL counts as `{}`).
pub fn metadata_object(metadata: Option<JsonB>) -> Result<JsonB> {
    match metadata {
        None => Ok(JsonB(serde_json::json!({}))),
        Some(JsonB(v)) if v.is_object() => Ok(JsonB(v)),
        Some(JsonB(v)) => Err(MemoriError::invalid(format!(
            "memori: metadata must be a JSON object, not {}",
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
    metadata: default!(Option<JsonB>, "'{}'"),
    data_source_id: default!(Option<i64>, "NULL"),
) -> Uuid {
    crate::errors::prevent_if_read_only(c"memori_conversation_create()");
    let user = user::resolve(user_id).or_raise();
    let metadata = metadata_object(metadata).or_raise();
    crate::user::as_owner_of(c"memori_conversations", || {
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
        .map_err(crate::errors::spi)
    })
    .or_raise()
    .expect("INSERT ... RETURNING gives one row")
}
