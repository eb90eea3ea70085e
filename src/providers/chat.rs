//! The chat model as memori's SQL functions call it (memori_extract, memori_chat): the model
//! the settings name, and one call off the backend's thread with its counters and log line.
//! The HTTP client itself is `llm`, plain Rust.

use crate::base::errors::{Code, MemoriError, Result};
use crate::base::gucs::{self, LlmProvider};
use crate::providers::llm::{self, Api, ChatConfig, ChatRequest};
use crate::providers::offthread;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The chat model the settings name, or an error saying which settings to set.
pub fn chat_config() -> Result<ChatConfig> {
    let provider = gucs::llm_provider();
    let api = match provider {
        LlmProvider::None => {
            return Err(MemoriError::new(
                Code::ObjectNotInPrerequisiteState,
                "no chat model is configured (memori.llm_provider is none)",
            )
            .hint(
                "A superuser sets memori.llm_provider (openai or anthropic), memori.llm_url, memori.llm_model and, if the provider needs one, memori.llm_api_key: \
                 ALTER SYSTEM SET memori.llm_provider = 'openai'; ALTER SYSTEM SET memori.llm_url = 'http://127.0.0.1:11434/v1'; SELECT pg_reload_conf();",
            ))
        }
        LlmProvider::Openai => Api::Openai,
        LlmProvider::Anthropic => Api::Anthropic,
    };
    let url = gucs::llm_url().unwrap_or_else(|| api.default_url().to_string());
    Ok(ChatConfig {
        api,
        api_key: gucs::llm_api_key(provider, &url),
        url,
        model: gucs::llm_model().unwrap_or_else(|| api.default_model().to_string()),
        timeout: Duration::from_millis(gucs::llm_timeout_ms()),
        max_retries: gucs::llm_max_retries(),
        max_tokens: gucs::llm_max_tokens(),
    })
}

/// One chat call, off the backend's thread: cancel and statement_timeout are answered
/// meanwhile, and memori.llm_timeout_ms bounds it. A failure logs one line (never a secret).
pub fn call(cfg: &ChatConfig, req: &ChatRequest) -> Result<String> {
    let deadline = Instant::now() + cfg.timeout;
    let started = Instant::now();
    let requests = Arc::new(AtomicU64::new(0));
    let (cfg2, req2, counter) = (cfg.clone(), req.clone(), requests.clone());
    let outcome = offthread::run(
        move || llm::complete(&cfg2, &req2, deadline, &counter),
        deadline + Duration::from_millis(250),
        || {
            pgrx::check_for_interrupts!();
        },
    );
    let result = match outcome {
        Ok(r) => r,
        Err(offthread::NoResult::Deadline) => Err(cfg.peer().timed_out()),
        Err(offthread::NoResult::ThreadFailed) => Err(llm::thread_failed()),
    };
    crate::base::stats::chat_call(
        cfg.api.name(),
        started.elapsed(),
        result.as_ref().err().map(|e| e.code.sqlstate()),
    );
    if let Err(e) = &result {
        pgrx::log!(
            "memori: chat failed provider={} model={} sqlstate={} duration_ms={}",
            cfg.api.name(),
            cfg.model,
            e.code.sqlstate(),
            started.elapsed().as_millis()
        );
    }
    result
}
