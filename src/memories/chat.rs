//! memori_chat(): the seed's "Claude API client with context injection", in SQL. The system
//! prompt carries the user's memories (memori_context), the request carries the
//! conversation's latest turns, and both turns are stored in memori_messages.

use crate::base::errors::{OrRaise, Result};
use crate::base::gucs;
use crate::base::spi::{prevent_if_read_only, spi};
use crate::memories::context;
use crate::memories::conversations::{self, check_conversation};
use crate::memories::extract;
use crate::providers::chat::{call, chat_config};
use crate::providers::llm::{ChatRequest, Role};
use crate::tenancy::{self, as_owner_of};
use pgrx::datum::Uuid;
use pgrx::prelude::*;

/// What memori_chat's system prompt says before the memories (memori.chat_system_prompt
/// overrides it).
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant with long-term memory. Below is what you remember about the user: follow their rules, and use the other memories when they help. Do not mention the memory itself unless asked.";

/// The latest `n` messages of the user's conversation (or of their turns outside any),
/// oldest first.
fn history(user: &str, conversation_id: Option<Uuid>, n: i64) -> Result<Vec<(Role, String)>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let which = if conversation_id.is_some() {
        "conversation_id = $2::pg_catalog.uuid"
    } else {
        "conversation_id IS NULL"
    };
    Spi::connect(|c| {
        c.select(
            &format!(
                "SELECT role, content FROM (
                    SELECT id, role, content FROM memori_messages
                     WHERE user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND {which}
                     ORDER BY id DESC LIMIT $3) s
                  ORDER BY id"
            ),
            None,
            &[user.into(), conversation_id.into(), n.into()],
        )?
        .map(|r| {
            let role = match r.get::<String>(1)?.as_deref() {
                Some("assistant") => Role::Assistant,
                _ => Role::User,
            };
            Ok((role, r.get::<String>(2)?.unwrap_or_default()))
        })
        .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi)
}

/// The latest messages whose text fits `budget` tokens (about 4 characters a token, as
/// memori_context counts), oldest dropped first; whole messages only.
pub fn within_budget(messages: Vec<(Role, String)>, budget: usize) -> Vec<(Role, String)> {
    let mut left = budget.saturating_mul(4);
    let mut kept: Vec<(Role, String)> = Vec::new();
    for (role, text) in messages.into_iter().rev() {
        let n = text.chars().count();
        if n > left {
            break;
        }
        left -= n;
        kept.push((role, text));
    }
    kept.reverse();
    kept
}

/// Stores the user's message and the reply; moves the conversation's last activity on.
fn store_turns(
    user: &str,
    conversation_id: Option<Uuid>,
    message: &str,
    reply: &str,
    model: &str,
) -> Result<()> {
    as_owner_of(c"memori_messages", || {
        if let Some(c) = conversation_id {
            conversations::touch_conversation(c, user)?;
        }
        Spi::run_with_args(
            "INSERT INTO memori_messages (conversation_id, user_id, role, content, model)
             VALUES ($1, $2, 'user', $3, NULL), ($1, $2, 'assistant', $4, $5)",
            &[
                conversation_id.into(),
                user.into(),
                message.into(),
                reply.into(),
                model.into(),
            ],
        )
        .map_err(spi)
    })
}

pub fn chat(
    user: &str,
    message: &str,
    conversation_id: Option<Uuid>,
    budget: usize,
    extract: bool,
) -> Result<String> {
    crate::base::memory::check_size(message, "message")?;
    check_conversation(conversation_id, user)?;
    let cfg = chat_config()?;
    let context = context::assemble(
        Some(message),
        gucs::max_context_memories(),
        None,
        budget,
        user.to_string(),
    )?;
    let mut system = gucs::chat_system_prompt().unwrap_or_else(|| SYSTEM_PROMPT.to_string());
    if !context.text.trim().is_empty() {
        system.push_str("\n\n# What you remember about the user\n\n");
        system.push_str(&context.text);
    }
    let mut messages = within_budget(
        tenancy::reading(|| history(user, conversation_id, gucs::chat_history_messages()))?,
        budget,
    );
    messages.push((Role::User, message.to_string()));
    let reply = call(
        &cfg,
        &ChatRequest {
            system,
            messages,
            schema: None,
        },
    )?;
    // Both chat calls before any write: no row lock is held while a model answers (review
    // G10). Then the turns, the extracted memories and the accesses, in one go.
    let decided = if extract {
        Some(extract::decide(user, message)?)
    } else {
        None
    };
    store_turns(
        user,
        conversation_id,
        message,
        &reply,
        &format!("{}/{}", cfg.api.name(), cfg.model),
    )?;
    if let Some(d) = decided {
        d.apply(user, conversation_id)?;
    }
    context.counted()?;
    Ok(reply)
}

/// The chat model's reply to `message`, with the user's memories in its system prompt and the
/// conversation's latest turns before it; both turns are stored in memori_messages, and with
/// `extract` (default memori.chat_extract) memories are extracted from the message.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_chat(
    message: Option<&str>,
    conversation_id: default!(Option<Uuid>, "NULL"),
    token_budget: default!(Option<i32>, "NULL"),
    extract: default!(Option<bool>, "NULL"),
    user_id: default!(Option<&str>, "NULL"),
) -> String {
    prevent_if_read_only(c"memori_chat()");
    crate::base::memory::required_text(message, "message").or_raise();
    let budget = context::budget(token_budget).or_raise();
    let user = tenancy::resolve(user_id).or_raise();
    chat(
        &user,
        message.unwrap(),
        conversation_id,
        budget,
        extract.unwrap_or_else(gucs::chat_extract),
    )
    .or_raise()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_latest_whole_messages_within_the_budget() {
        let m = |r, t: &str| (r, t.to_string());
        let all = vec![
            m(Role::User, "aaaaaaaa"),
            m(Role::Assistant, "bbbb"),
            m(Role::User, "cccc"),
        ];
        assert_eq!(within_budget(all.clone(), 100), all);
        assert_eq!(within_budget(all.clone(), 2), all[1..].to_vec());
        assert_eq!(within_budget(all.clone(), 1), all[2..].to_vec());
        assert!(within_budget(all, 0).is_empty());
    }
}
