//! The `openai` provider: any OpenAI-compatible `POST {url}/embeddings` endpoint, over ureq.
//!
//! Plain Rust: runs on a worker thread (see `offthread`), never touches PostgreSQL.

use super::{mask, normalize_width, Batch};
use crate::errors::{Code, MemoriError, Result};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// OpenAI accepts at most 2048 inputs in one request.
pub const MAX_INPUTS_PER_REQUEST: usize = 2048;
/// Largest reply body read (2048 inputs x 3072 floats as JSON text is about 150 MB).
const MAX_REPLY_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Base URL; requests go to `{url}/embeddings`.
    pub url: String,
    pub model: String,
    /// Sent as `dimensions` when set.
    pub dimensions: Option<usize>,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub max_retries: u32,
    pub batch_size: usize,
}

impl HttpConfig {
    pub fn endpoint(&self) -> String {
        format!("{}/embeddings", self.url.trim_end_matches('/'))
    }

    /// The width the reply must have, when it can be known before asking.
    pub fn expected_width(&self) -> Option<usize> {
        self.dimensions.or(match self.model.as_str() {
            "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
            "text-embedding-3-large" => Some(3072),
            _ => None,
        })
    }

    /// The endpoint as messages show it: without credentials (`user:password@`) or a query
    /// string (`?api-key=...`), which some gateways put in the URL.
    pub fn shown_endpoint(&self) -> String {
        shown_url(&self.endpoint())
    }

    /// `text` with every secret of the configuration masked: the key, and the URL's
    /// credentials and query string (an HTTP library's error may quote the URL).
    fn redact(&self, text: &str) -> String {
        without_url_secrets(&mask(text, self.api_key.as_deref()), &self.url)
    }

    fn err(&self, code: Code, what: impl AsRef<str>) -> MemoriError {
        MemoriError::new(
            code,
            format!(
                "memori: openai embedding request to {} failed: {}",
                self.shown_endpoint(),
                self.redact(what.as_ref())
            ),
        )
    }
}

/// The secret parts of a URL: its credentials (`user:password` before `@`) and its query
/// string.
fn url_secrets(url: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if !userinfo.is_empty() {
            out.push(userinfo);
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split('#').next().unwrap_or("");
        if !query.is_empty() {
            out.push(query);
        }
    }
    out
}

/// `text` with `url`'s secrets masked.
fn without_url_secrets(text: &str, url: &str) -> String {
    url_secrets(url)
        .into_iter()
        .fold(text.to_string(), |out, secret| out.replace(secret, "****"))
}

/// A URL without its secrets, for messages.
pub fn shown_url(url: &str) -> String {
    without_url_secrets(url, url)
}

#[derive(Deserialize)]
struct Reply {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

/// Embeds `texts`, `batch_size` (at most 2048) to a request, within `deadline`.
/// `requests` counts the HTTP requests sent, retries included.
pub fn embed(
    cfg: &HttpConfig,
    texts: &[String],
    deadline: Instant,
    requests: &AtomicU64,
) -> Result<Batch> {
    let key = cfg.api_key.as_deref().filter(|k| !k.is_empty()).ok_or_else(|| {
        MemoriError::new(
            Code::InvalidAuthorization,
            format!("memori: no API key for the openai embedding provider ({})", cfg.shown_endpoint()),
        )
        .hint(
            "A superuser sets memori.embedding_api_key in postgresql.conf or with ALTER SYSTEM SET memori.embedding_api_key = '...'; \
             SELECT pg_reload_conf(); (never with ALTER DATABASE/ROLE ... SET, which every role can read), or the server's environment has MEMORI_EMBEDDING_API_KEY or OPENAI_API_KEY.",
        )
    })?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("memori (PostgreSQL extension)")
        .build()
        .into();
    let chunk = cfg.batch_size.clamp(1, MAX_INPUTS_PER_REQUEST);
    let mut out = Vec::with_capacity(texts.len());
    let mut width = cfg.expected_width();
    for part in texts.chunks(chunk) {
        let vectors = request(cfg, &agent, key, part, width, deadline, requests)?;
        width = Some(vectors.width);
        out.extend(vectors.vectors);
    }
    Ok(Batch {
        width: width.unwrap_or(0),
        vectors: out,
    })
}

fn request(
    cfg: &HttpConfig,
    agent: &ureq::Agent,
    key: &str,
    inputs: &[String],
    width: Option<usize>,
    deadline: Instant,
    requests: &AtomicU64,
) -> Result<Batch> {
    let mut body =
        serde_json::json!({ "model": cfg.model, "input": inputs, "encoding_format": "float" });
    if let Some(d) = cfg.dimensions {
        body["dimensions"] = d.into();
    }
    let mut attempt = 0u32;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(cfg));
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let sent = agent
            .post(cfg.endpoint())
            .config()
            .timeout_global(Some(remaining))
            .build()
            .header("Authorization", format!("Bearer {key}"))
            .send_json(&body);
        let mut resp = match sent {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return Err(timed_out(cfg)),
            Err(e) => return Err(transport(cfg, e)),
        };
        let status = resp.status().as_u16();
        if status == 200 {
            let text = match resp
                .body_mut()
                .with_config()
                .limit(MAX_REPLY_BYTES)
                .read_to_string()
            {
                Ok(t) => t,
                Err(ureq::Error::Timeout(_)) => return Err(timed_out(cfg)),
                Err(e) => return Err(transport(cfg, e)),
            };
            return parse(cfg, &text, inputs.len(), width);
        }
        let retry_after = retry_after(resp.headers());
        let reply = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let retryable = status == 429 || (500..600).contains(&status);
        if retryable && attempt < cfg.max_retries {
            let wait = retry_after.unwrap_or_else(|| backoff(attempt));
            if Instant::now() + wait < deadline {
                std::thread::sleep(wait);
                attempt += 1;
                continue;
            }
        }
        return Err(status_error(cfg, status, &reply, attempt));
    }
}

/// Exponential backoff when the server gives no Retry-After: 0.5 s, 1 s, 2 s, ... at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(4)))
}

/// `Retry-After` in seconds (or `retry-after-ms`), capped at one minute.
fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let secs = if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        ms / 1000.0
    } else {
        get("retry-after")?.parse::<f64>().ok()?
    };
    // Whatever the server says (inf, 1e30, negative): a duration between 0 and 60 s, no panic.
    if secs.is_nan() {
        return None;
    }
    Some(Duration::from_secs_f64(secs.clamp(0.0, 60.0)))
}

pub fn timed_out(cfg: &HttpConfig) -> MemoriError {
    cfg.err(
        Code::ConnectionFailure,
        format!(
            "no answer within memori.embedding_timeout_ms ({} ms)",
            cfg.timeout.as_millis()
        ),
    )
    .hint("Check that the endpoint is up, or raise memori.embedding_timeout_ms.")
}

fn transport(cfg: &HttpConfig, e: ureq::Error) -> MemoriError {
    let (code, what) = match &e {
        ureq::Error::HostNotFound => (Code::ConnectionUnavailable, "host not found".to_string()),
        ureq::Error::ConnectionFailed => {
            (Code::ConnectionUnavailable, "connection failed".to_string())
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            Code::ConnectionUnavailable,
            "connection refused".to_string(),
        ),
        ureq::Error::Io(io) => (Code::ConnectionUnavailable, format!("I/O error: {io}")),
        ureq::Error::BadUri(u) => (Code::InvalidParameterValue, format!("bad URL: {u}")),
        ureq::Error::BodyExceedsLimit(n) => {
            (Code::DataException, format!("reply larger than {n} bytes"))
        }
        other => (Code::ConnectionUnavailable, other.to_string()),
    };
    let hint = if code == Code::InvalidParameterValue {
        "memori.embedding_url must be a base URL such as https://api.openai.com/v1 or http://127.0.0.1:11434/v1."
    } else {
        "Check memori.embedding_url and that the endpoint is reachable from the database server."
    };
    cfg.err(code, what).hint(hint)
}

/// The provider's own error message, from an OpenAI-style `{"error": {"message": ...}}` body.
fn provider_message(reply: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(reply).ok()?;
    let m = v
        .pointer("/error/message")
        .or_else(|| v.get("error"))
        .or_else(|| v.get("message"))?;
    let s = m
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| m.to_string());
    Some(s.chars().take(300).collect())
}

fn status_error(cfg: &HttpConfig, status: u16, reply: &str, retries: u32) -> MemoriError {
    let (code, hint) = match status {
        401 | 403 => (
            Code::InvalidAuthorization,
            "The provider refused the API key: a superuser checks memori.embedding_api_key.".to_string(),
        ),
        429 => (
            Code::InsufficientResources,
            "The provider's rate limit: retry later, lower memori.embedding_batch_size, or raise memori.embedding_max_retries.".to_string(),
        ),
        300..=399 => (
            Code::InvalidParameterValue,
            "memori does not follow redirects: set memori.embedding_url to the final address.".to_string(),
        ),
        500..=599 => (
            Code::SystemError,
            "The provider failed: retry later or raise memori.embedding_max_retries.".to_string(),
        ),
        _ => (
            Code::InvalidParameterValue,
            "Check memori.embedding_model and memori.embedding_dimensions against what the provider serves.".to_string(),
        ),
    };
    let mut what = format!("HTTP {status}");
    if let Some(m) = provider_message(reply) {
        what.push_str(": ");
        what.push_str(&m);
    }
    let mut err = cfg.err(code, what).hint(hint);
    if retries > 0 {
        err = err.detail(format!("Gave up after {retries} retries."));
    }
    err
}

fn parse(cfg: &HttpConfig, text: &str, inputs: usize, width: Option<usize>) -> Result<Batch> {
    let bad = |what: String| {
        cfg.err(Code::DataException, what)
            .hint("The endpoint must answer like OpenAI's /embeddings: {\"data\": [{\"embedding\": [...], \"index\": 0}, ...]}.")
    };
    let reply: Reply = serde_json::from_str(text).map_err(|e| {
        let start: String = text.chars().take(80).collect();
        bad(format!(
            "the reply is not embeddings JSON ({e}); it starts with {start:?}"
        ))
    })?;
    if reply.data.len() != inputs {
        return Err(bad(format!(
            "{} vectors came back for {inputs} inputs",
            reply.data.len()
        )));
    }
    let mut items = reply.data;
    if items.iter().all(|i| i.index.is_some()) {
        items.sort_by_key(|i| i.index);
        if items.iter().enumerate().any(|(n, i)| i.index != Some(n)) {
            return Err(bad(
                "the reply's indexes do not cover every input once".into()
            ));
        }
    }
    let vectors: Vec<Vec<f32>> = items.into_iter().map(|i| i.embedding).collect();
    let width = normalize_width(&vectors, width).map_err(|w| bad(w))?;
    Ok(Batch { width, vectors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_url_credentials_or_query() {
        assert_eq!(
            shown_url("https://bob:s3cret@gw.example/v1/embeddings?api-key=k123"),
            "https://****@gw.example/v1/embeddings?****"
        );
        assert_eq!(shown_url("http://127.0.0.1:9/v1"), "http://127.0.0.1:9/v1");
        let mut c = cfg();
        c.url = "http://alice:pw-42@127.0.0.1:9/v1?token=t-99".into();
        let e = c.err(
            Code::ConnectionUnavailable,
            "could not reach http://alice:pw-42@127.0.0.1:9/v1?token=t-99",
        );
        assert!(
            !e.message.contains("pw-42") && !e.message.contains("t-99"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("alice"), "{}", e.message);
    }

    #[test]
    fn retry_after_never_panics_and_stays_within_a_minute() {
        let wait = |name: &'static str, v: &'static str| {
            let mut h = ureq::http::HeaderMap::new();
            h.insert(name, ureq::http::HeaderValue::from_static(v));
            retry_after(&h)
        };
        let minute = Some(Duration::from_secs(60));
        assert_eq!(wait("retry-after", "inf"), minute);
        assert_eq!(wait("retry-after", "1e30"), minute);
        assert_eq!(wait("retry-after-ms", "1e300"), minute);
        assert_eq!(wait("retry-after", "-5"), Some(Duration::ZERO));
        assert_eq!(wait("retry-after", "NaN"), None);
        assert_eq!(wait("retry-after", "soon"), None);
        assert_eq!(wait("retry-after", "2"), Some(Duration::from_secs(2)));
        assert_eq!(
            wait("retry-after-ms", "250"),
            Some(Duration::from_millis(250))
        );
    }

    fn cfg() -> HttpConfig {
        HttpConfig {
            url: "http://127.0.0.1:9/v1/".into(),
            model: "m".into(),
            dimensions: None,
            api_key: Some("sk-secret-123".into()),
            timeout: Duration::from_secs(1),
            max_retries: 0,
            batch_size: 10,
        }
    }

    #[test]
    fn endpoint_joins_the_base_url() {
        assert_eq!(cfg().endpoint(), "http://127.0.0.1:9/v1/embeddings");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(10), Duration::from_millis(8000));
    }

    #[test]
    fn parse_orders_by_index_and_checks_count_and_width() {
        let c = cfg();
        let b = parse(
            &c,
            r#"{"data":[{"embedding":[0,1],"index":1},{"embedding":[1,0],"index":0}]}"#,
            2,
            None,
        )
        .unwrap();
        assert_eq!(b.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(b.width, 2);
        let e = parse(&c, r#"{"data":[{"embedding":[0,1]}]}"#, 2, None).unwrap_err();
        assert!(
            e.message.contains("1 vectors came back for 2 inputs"),
            "{}",
            e.message
        );
        let e = parse(&c, r#"{"data":[{"embedding":[0,1]}]}"#, 1, Some(3)).unwrap_err();
        assert!(e.message.contains("2 dimensions"), "{}", e.message);
        let e = parse(&c, "<html>", 1, None).unwrap_err();
        assert_eq!(e.code, Code::DataException);
        assert!(e.message.contains("not embeddings JSON"), "{}", e.message);
    }

    #[test]
    fn errors_mask_the_key() {
        let c = cfg();
        let e = status_error(
            &c,
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret-123"}}"#,
            0,
        );
        assert_eq!(e.code, Code::InvalidAuthorization);
        assert!(!e.to_string().contains("sk-secret-123"), "{e}");
        assert!(e.message.contains("HTTP 401"), "{}", e.message);
    }
}
