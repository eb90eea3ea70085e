//! Who the current memori user is.

use crate::errors::{MemoriError, Result};
use crate::gucs;
use pgrx::prelude::*;

/// The memori user a call acts for: the `user_id` argument when given, else the
/// `memori.user_id` setting, else `current_user`.
pub fn resolve(explicit: Option<&str>) -> Result<String> {
    let user = match explicit {
        Some(u) => u.trim().to_string(),
        None => match gucs::user_id() {
            Some(u) => u,
            None => current_user(),
        },
    };
    validate(&user)?;
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
        let oid = pg_sys::GetUserId();
        let name = pg_sys::GetUserNameFromId(oid, false);
        std::ffi::CStr::from_ptr(name)
            .to_string_lossy()
            .into_owned()
    }
}
