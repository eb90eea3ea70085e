//! The chat model client memori_extract and memori_chat use, in plain Rust (no PostgreSQL):
//! OpenAI-compatible `POST {url}/chat/completions` and Anthropic's `POST {url}/v1/messages`,
//! over the same HTTP machinery as the embeddings (`providers::http::Peer`: retries on 429/5xx with
//! Retry-After, one deadline, secrets masked). Runs on a worker thread (`providers::offthread`).

use crate::base::errors::{Code, MemoriError, Result};
use crate::providers::http::{agent, Peer};
use serde_json::{json, Value};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// The two API shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Openai,
    Anthropic,
}

impl Api {
    /// Every API (base::stats::CHAT_APIS counts each by name).
    pub const ALL: [Api; 2] = [Api::Openai, Api::Anthropic];

    pub fn name(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
        }
    }
    pub fn default_url(self) -> &'static str {
        match self {
            Api::Openai => "https://api.openai.com/v1",
            Api::Anthropic => "https://api.anthropic.com",
        }
    }
    pub fn default_model(self) -> &'static str {
        match self {
            Api::Openai => "gpt-4o-mini",
            Api::Anthropic => "claude-sonnet-4-5",
        }
    }
}

/// Anthropic's API version header memori speaks.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Largest chat reply read: an answer bounded by memori.llm_max_tokens is far smaller.
pub const MAX_REPLY_BYTES: u64 = 8 * 1024 * 1024;
/// The tool an Anthropic reply fills in when a JSON answer is asked for.
pub const TOOL_NAME: &str = "record_answer";

#[derive(Clone, Debug)]
pub struct ChatConfig {
    pub api: Api,
    /// Base URL (see `endpoint`).
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub max_retries: u32,
    pub max_tokens: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One call: a system prompt, the messages (oldest first, the last one the user's), and when
/// a JSON answer is wanted, its schema.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<(Role, String)>,
    pub schema: Option<Value>,
}

impl ChatConfig {
    pub fn endpoint(&self) -> String {
        let base = self.url.trim_end_matches('/');
        match self.api {
            Api::Openai => format!("{base}/chat/completions"),
            Api::Anthropic => format!("{base}/v1/messages"),
        }
    }

    pub fn peer(&self) -> Peer {
        Peer {
            what: format!("{} chat request", self.api.name()),
            endpoint: self.endpoint(),
            url: self.url.clone(),
            api_key: self.api_key.clone(),
            settings: "memori.llm",
            timeout: self.timeout,
            max_retries: self.max_retries,
        }
    }
}

/// Messages as both APIs accept them: the first from the user, roles alternating (consecutive
/// messages of one role are joined), none empty.
fn alternating(messages: &[(Role, String)]) -> Vec<(Role, String)> {
    let mut out: Vec<(Role, String)> = Vec::new();
    for (role, text) in messages {
        if text.trim().is_empty() || (out.is_empty() && *role == Role::Assistant) {
            continue;
        }
        match out.last_mut() {
            Some((r, t)) if r == role => {
                t.push_str("\n\n");
                t.push_str(text);
            }
            _ => out.push((*role, text.clone())),
        }
    }
    out
}

/// The request body for `cfg`'s API.
pub fn body(cfg: &ChatConfig, req: &ChatRequest) -> Value {
    let messages = alternating(&req.messages);
    match cfg.api {
        Api::Openai => {
            let mut all = vec![json!({"role": "system", "content": req.system})];
            all.extend(
                messages
                    .iter()
                    .map(|(r, t)| json!({"role": r.name(), "content": t})),
            );
            let mut b = json!({"model": cfg.model, "messages": all, "max_tokens": cfg.max_tokens});
            if let Some(schema) = &req.schema {
                b["temperature"] = json!(0);
                b["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {"name": TOOL_NAME, "schema": schema},
                });
            }
            b
        }
        Api::Anthropic => {
            let all: Vec<Value> = messages
                .iter()
                .map(|(r, t)| json!({"role": r.name(), "content": t}))
                .collect();
            let mut b = json!({"model": cfg.model, "max_tokens": cfg.max_tokens, "system": req.system, "messages": all});
            if let Some(schema) = &req.schema {
                b["temperature"] = json!(0);
                b["tools"] = json!([{
                    "name": TOOL_NAME,
                    "description": "Record the answer, as the schema says.",
                    "input_schema": schema,
                }]);
                b["tool_choice"] = json!({"type": "tool", "name": TOOL_NAME});
            }
            b
        }
    }
}

/// The answer in a 200 reply: the text (OpenAI's `choices[0].message.content`, Anthropic's
/// first text block), or with a schema, the JSON (Anthropic's tool_use input, else the text).
pub fn answer(peer: &Peer, api: Api, text: &str, structured: bool) -> Result<String> {
    let bad = |what: String| {
        peer.err(Code::DataException, what).hint(match api {
            Api::Openai => "The endpoint must answer like OpenAI's /chat/completions: {\"choices\": [{\"message\": {\"content\": \"...\"}}]}.",
            Api::Anthropic => "The endpoint must answer like Anthropic's /v1/messages: {\"content\": [{\"type\": \"text\", \"text\": \"...\"}]}.",
        })
    };
    let v: Value = serde_json::from_str(text).map_err(|e| {
        let start: String = text.chars().take(80).collect();
        bad(format!(
            "the reply is not chat JSON ({e}); it starts with {start:?}"
        ))
    })?;
    let cut = |why: &str| {
        peer.err(
            Code::DataException,
            format!("the answer was cut off ({why})"),
        )
        .hint("Raise memori.llm_max_tokens (superuser), or send less.")
    };
    let out = match api {
        Api::Openai => {
            let choice = v
                .pointer("/choices/0")
                .ok_or_else(|| bad("the reply has no choices".into()))?;
            if let Some(refusal) = choice.pointer("/message/refusal").and_then(Value::as_str) {
                return Err(bad(format!("the model refused: {}", short(refusal))));
            }
            let content = choice.pointer("/message/content").and_then(Value::as_str);
            if choice.get("finish_reason").and_then(Value::as_str) == Some("length") {
                return Err(cut("finish_reason length"));
            }
            content
                .map(str::to_string)
                .ok_or_else(|| bad("the reply's choices[0].message.content is not text".into()))?
        }
        Api::Anthropic => {
            let blocks = v
                .get("content")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("the reply has no content blocks".into()))?;
            if v.get("stop_reason").and_then(Value::as_str) == Some("max_tokens") {
                return Err(cut("stop_reason max_tokens"));
            }
            let tool = blocks.iter().find(|b| {
                b.get("type").and_then(Value::as_str) == Some("tool_use")
                    && b.get("name").and_then(Value::as_str) == Some(TOOL_NAME)
            });
            let text = blocks
                .iter()
                .find(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|b| b.get("text"))
                .and_then(Value::as_str);
            match (structured, tool, text) {
                (true, Some(t), _) => t.get("input").cloned().unwrap_or(Value::Null).to_string(),
                (_, _, Some(t)) => t.to_string(),
                _ => return Err(bad("the reply has no text block".into())),
            }
        }
    };
    if out.trim().is_empty() {
        return Err(bad("the answer is empty".into()));
    }
    Ok(out)
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

/// One chat call within `deadline`; returns the answer (see `answer`). `requests` counts the
/// HTTP requests sent, retries included.
pub fn complete(
    cfg: &ChatConfig,
    req: &ChatRequest,
    deadline: Instant,
    requests: &AtomicU64,
) -> Result<String> {
    let peer = cfg.peer();
    let mut headers: Vec<(&str, String)> = Vec::new();
    let key = cfg.api_key.as_deref().filter(|k| !k.is_empty());
    match cfg.api {
        Api::Openai => {
            if let Some(k) = key {
                headers.push(("Authorization", format!("Bearer {k}")));
            }
        }
        Api::Anthropic => {
            if let Some(k) = key {
                headers.push(("x-api-key", k.to_string()));
            }
            headers.push(("anthropic-version", ANTHROPIC_VERSION.to_string()));
        }
    }
    let text = peer.post_json(
        &agent(),
        &headers,
        &body(cfg, req),
        deadline,
        requests,
        MAX_REPLY_BYTES,
    )?;
    answer(&peer, cfg.api, &text, req.schema.is_some())
}

/// The error for a call whose worker thread ended without a result.
pub fn thread_failed() -> MemoriError {
    MemoriError::new(Code::SystemError, "the chat request's thread failed")
        .hint("See the server log; the server may be short of threads or memory.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chat_api_is_counted_under_its_own_name() {
        // An exhaustive match: a new API stops this compiling until it is named here, and then
        // belongs in ALL and CHAT_APIS too.
        for a in Api::ALL {
            match a {
                Api::Openai | Api::Anthropic => {}
            }
        }
        let names: Vec<&str> = Api::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names, crate::base::stats::CHAT_APIS.to_vec());
    }

    fn cfg(api: Api) -> ChatConfig {
        ChatConfig {
            api,
            url: "http://127.0.0.1:9/".into(),
            model: "m".into(),
            api_key: Some("sk-chat-secret".into()),
            timeout: Duration::from_secs(1),
            max_retries: 0,
            max_tokens: 100,
        }
    }

    #[test]
    fn endpoints_follow_each_api() {
        assert_eq!(
            cfg(Api::Openai).endpoint(),
            "http://127.0.0.1:9/chat/completions"
        );
        assert_eq!(
            cfg(Api::Anthropic).endpoint(),
            "http://127.0.0.1:9/v1/messages"
        );
    }

    #[test]
    fn bodies_carry_system_messages_and_schema() {
        let req = ChatRequest {
            system: "sys".into(),
            messages: vec![
                (Role::Assistant, "dropped: first must be the user's".into()),
                (Role::User, "a".into()),
                (Role::User, "b".into()),
                (Role::Assistant, "c".into()),
                (Role::User, "d".into()),
            ],
            schema: Some(json!({"type": "object"})),
        };
        let o = body(&cfg(Api::Openai), &req);
        assert_eq!(
            o["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            o["messages"][1],
            json!({"role": "user", "content": "a\n\nb"})
        );
        assert_eq!(o["messages"].as_array().unwrap().len(), 4);
        assert_eq!(o["response_format"]["type"], "json_schema");
        assert_eq!(o["max_tokens"], 100);
        let a = body(&cfg(Api::Anthropic), &req);
        assert_eq!(a["system"], "sys");
        assert_eq!(a["messages"].as_array().unwrap().len(), 3);
        assert_eq!(a["tool_choice"]["name"], TOOL_NAME);
        assert_eq!(a["tools"][0]["input_schema"], json!({"type": "object"}));
        let plain = ChatRequest {
            schema: None,
            ..req
        };
        assert!(body(&cfg(Api::Openai), &plain)
            .get("response_format")
            .is_none());
        assert!(body(&cfg(Api::Anthropic), &plain).get("tools").is_none());
    }

    #[test]
    fn answers_are_read_from_both_shapes() {
        let p = cfg(Api::Openai).peer();
        let o = r#"{"choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#;
        assert_eq!(answer(&p, Api::Openai, o, false).unwrap(), "hi");
        let a = r#"{"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn"}"#;
        assert_eq!(answer(&p, Api::Anthropic, a, false).unwrap(), "hello");
        let t =
            r#"{"content":[{"type":"tool_use","name":"record_answer","input":{"memories":[]}}]}"#;
        assert_eq!(
            answer(&p, Api::Anthropic, t, true).unwrap(),
            r#"{"memories":[]}"#
        );
    }

    #[test]
    fn bad_answers_are_data_exceptions_without_the_key() {
        let p = cfg(Api::Openai).peer();
        for (api, text) in [
            (Api::Openai, "<html>"),
            (Api::Openai, r#"{"choices":[]}"#),
            (Api::Openai, r#"{"choices":[{"message":{"content":null}}]}"#),
            (Api::Openai, r#"{"choices":[{"message":{"content":"  "}}]}"#),
            (
                Api::Openai,
                r#"{"choices":[{"message":{"content":"{\"a\":"},"finish_reason":"length"}]}"#,
            ),
            (Api::Anthropic, r#"{"content":[]}"#),
            (
                Api::Anthropic,
                r#"{"content":[{"type":"text","text":"x"}],"stop_reason":"max_tokens"}"#,
            ),
        ] {
            let e = answer(&p, api, text, false).unwrap_err();
            assert_eq!(e.code, Code::DataException, "{text}: {}", e.message);
            assert!(!e.to_string().contains("sk-chat-secret"));
        }
    }
}
