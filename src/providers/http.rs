//! The `openai` provider: any OpenAI-compatible `POST {url}/embeddings` endpoint, over ureq.
//!
//! Plain Rust: runs on a worker thread (see `offthread`), never touches PostgreSQL.

use super::{mask, normalize_width, Batch};
use crate::base::errors::{Code, MemoriError, Result};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// OpenAI accepts at most 2048 inputs in one request.
pub const MAX_INPUTS_PER_REQUEST: usize = 2048;
/// Largest embedding reply read for one input: 4,096 floats as JSON text (about 24 bytes each).
/// A request for n inputs reads at most n times this, plus `REPLY_OVERHEAD_BYTES`: a few MB for
/// a batch of 100, never what a misbehaving endpoint chooses to send.
pub const MAX_REPLY_BYTES_PER_INPUT: u64 = 4096 * 24;
/// What a reply may carry besides the vectors (field names, usage, ...).
pub const REPLY_OVERHEAD_BYTES: u64 = 1024 * 1024;

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

    /// The peer the requests go to, as messages name it.
    pub fn peer(&self) -> Peer {
        Peer {
            what: "openai embedding request".into(),
            endpoint: self.endpoint(),
            url: self.url.clone(),
            api_key: self.api_key.clone(),
            settings: "memori.embedding",
            timeout: self.timeout,
            max_retries: self.max_retries,
        }
    }
}

/// An HTTP endpoint memori posts JSON to (embeddings or chat), with what its messages need:
/// the secrets to mask and the settings prefix its hints name.
#[derive(Clone, Debug)]
pub struct Peer {
    /// What messages call a request: "openai embedding request", "anthropic chat request".
    pub what: String,
    /// The full URL requests go to.
    pub endpoint: String,
    /// The configured base URL (its credentials and query string are secrets).
    pub url: String,
    pub api_key: Option<String>,
    /// The settings hints name: "memori.embedding" or "memori.llm".
    pub settings: &'static str,
    pub timeout: Duration,
    pub max_retries: u32,
}

impl Peer {
    /// The endpoint as messages show it: without credentials (`user:password@`) or a query
    /// string (`?api-key=...`), which some gateways put in the URL.
    pub fn shown_endpoint(&self) -> String {
        crate::base::url::shown(&self.endpoint)
    }

    /// `text` with every secret of the configuration masked: the key, and the URL's
    /// credentials and query string (an HTTP library's error may quote the URL).
    pub fn redact(&self, text: &str) -> String {
        crate::base::url::without_secrets(&mask(text, self.api_key.as_deref()), &self.url)
    }

    pub fn err(&self, code: Code, what: impl AsRef<str>) -> MemoriError {
        MemoriError::new(
            code,
            format!(
                "{} to {} failed: {}",
                self.what,
                self.shown_endpoint(),
                self.redact(what.as_ref())
            ),
        )
    }

    /// The API key, or an error saying how a superuser sets one.
    pub fn key(&self, env: &[&str]) -> Result<&str> {
        self.api_key.as_deref().filter(|k| !k.is_empty()).ok_or_else(|| {
            let s = self.settings;
            MemoriError::new(
                Code::InvalidAuthorization,
                format!("no API key for the {} provider ({})", self.what.trim_end_matches(" request"), self.shown_endpoint()),
            )
            .hint(format!(
                "A superuser sets {s}_api_key in postgresql.conf or with ALTER SYSTEM SET {s}_api_key = '...'; \
                 SELECT pg_reload_conf(); (never with ALTER DATABASE/ROLE ... SET, which every role can read), or the server's environment has {}.",
                env.join(" or ")
            ))
        })
    }

    /// POSTs `body` with `headers` and returns the 200 reply's text, within `deadline`: 429
    /// and 5xx are retried up to max_retries times, waiting as Retry-After says (else
    /// exponential backoff) while the deadline allows. `requests` counts the requests sent. A
    /// reply longer than `reply_limit` bytes is refused (58000) without being read further.
    pub fn post_json(
        &self,
        agent: &ureq::Agent,
        headers: &[(&str, String)],
        body: &serde_json::Value,
        deadline: Instant,
        requests: &AtomicU64,
        reply_limit: u64,
    ) -> Result<String> {
        let mut attempt = 0u32;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timed_out());
            }
            requests.fetch_add(1, Ordering::Relaxed);
            let mut req = agent
                .post(&self.endpoint)
                .config()
                .timeout_global(Some(remaining))
                .build();
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            let mut resp = match req.send_json(body) {
                Ok(r) => r,
                Err(ureq::Error::Timeout(_)) => return Err(self.timed_out()),
                Err(e) => return Err(self.transport(e)),
            };
            let status = resp.status().as_u16();
            if status == 200 {
                return match resp
                    .body_mut()
                    .with_config()
                    .limit(reply_limit)
                    .read_to_string()
                {
                    Ok(t) => Ok(t),
                    Err(ureq::Error::BodyExceedsLimit(_)) => Err(MemoriError::new(
                        Code::SystemError,
                        format!(
                            "the {} to {} got a reply of more than {reply_limit} bytes",
                            self.what,
                            self.shown_endpoint()
                        ),
                    )
                    .detail("memori reads at most what the request can need, and stopped there.")),
                    Err(ureq::Error::Timeout(_)) => Err(self.timed_out()),
                    Err(e) => Err(self.transport(e)),
                };
            }
            let retry_after = retry_after(resp.headers());
            let reply = resp
                .body_mut()
                .with_config()
                .limit(64 * 1024)
                .read_to_string()
                .unwrap_or_default();
            let retryable = status == 429 || (500..600).contains(&status);
            if retryable && attempt < self.max_retries {
                let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                if Instant::now() + wait < deadline {
                    std::thread::sleep(wait);
                    attempt += 1;
                    continue;
                }
            }
            return Err(self.status_error(status, &reply, attempt));
        }
    }

    pub fn timed_out(&self) -> MemoriError {
        let s = self.settings;
        self.err(
            Code::ConnectionFailure,
            format!(
                "no answer within {s}_timeout_ms ({} ms)",
                self.timeout.as_millis()
            ),
        )
        .hint(format!(
            "Check that the endpoint is up, or raise {s}_timeout_ms."
        ))
    }

    fn transport(&self, e: ureq::Error) -> MemoriError {
        let (code, what) = match &e {
            ureq::Error::HostNotFound => {
                (Code::ConnectionUnavailable, "host not found".to_string())
            }
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
        let s = self.settings;
        let hint = if code == Code::InvalidParameterValue {
            format!("{s}_url must be a base URL such as http://127.0.0.1:11434/v1.")
        } else {
            format!("Check {s}_url and that the endpoint is reachable from the database server.")
        };
        self.err(code, what).hint(hint)
    }

    pub fn status_error(&self, status: u16, reply: &str, retries: u32) -> MemoriError {
        let s = self.settings;
        let (code, hint) = match status {
            401 | 403 => (
                Code::InvalidAuthorization,
                format!("The provider refused the API key: a superuser checks {s}_api_key."),
            ),
            429 => (
                Code::InsufficientResources,
                format!("The provider's rate limit: retry later, or raise {s}_max_retries."),
            ),
            300..=399 => (
                Code::InvalidParameterValue,
                format!("memori does not follow redirects: set {s}_url to the final address."),
            ),
            500..=599 => (
                Code::SystemError,
                format!("The provider failed: retry later or raise {s}_max_retries."),
            ),
            _ => (
                Code::InvalidParameterValue,
                format!("Check {s}_model (and the other {s}_* settings) against what the provider serves."),
            ),
        };
        let mut what = format!("HTTP {status}");
        if let Some(m) = provider_message(reply) {
            what.push_str(": ");
            what.push_str(&m);
        }
        let mut err = self.err(code, what).hint(hint);
        if retries > 0 {
            err = err.detail(format!("Gave up after {retries} retries."));
        }
        err
    }
}

/// A ureq agent for memori's calls: HTTP errors are answers, no redirects are followed.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("memori (PostgreSQL extension)")
        .build()
        .into()
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
    let peer = cfg.peer();
    let key = peer.key(&[
        "MEMORI_EMBEDDING_API_KEY",
        "OPENAI_API_KEY (for OpenAI's own API)",
    ])?;
    let agent = agent();
    let chunk = cfg.batch_size.clamp(1, MAX_INPUTS_PER_REQUEST);
    let mut out = Vec::with_capacity(texts.len());
    let mut width = cfg.expected_width();
    for part in texts.chunks(chunk) {
        let vectors = request(cfg, &peer, &agent, key, part, width, deadline, requests)?;
        width = Some(vectors.width);
        out.extend(vectors.vectors);
    }
    Ok(Batch {
        width: width.unwrap_or(0),
        vectors: out,
    })
}

#[allow(clippy::too_many_arguments)]
fn request(
    cfg: &HttpConfig,
    peer: &Peer,
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
    let headers = [("Authorization", format!("Bearer {key}"))];
    let limit = inputs.len() as u64 * MAX_REPLY_BYTES_PER_INPUT + REPLY_OVERHEAD_BYTES;
    let text = peer.post_json(agent, &headers, &body, deadline, requests, limit)?;
    parse(peer, &text, inputs.len(), width)
}

/// Exponential backoff when the server gives no Retry-After: 0.5 s, 1 s, 2 s, ... at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(4)))
}

/// `Retry-After` in seconds (or `retry-after-ms`), capped at one minute.
pub fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
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

/// The provider's own error message, from an OpenAI-style `{"error": {"message": ...}}` body.
pub fn provider_message(reply: &str) -> Option<String> {
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

fn parse(peer: &Peer, text: &str, inputs: usize, width: Option<usize>) -> Result<Batch> {
    let bad = |what: String| {
        peer.err(Code::DataException, what)
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
    let width = normalize_width(&vectors, width).map_err(bad)?;
    Ok(Batch { width, vectors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_show_url_credentials_or_query() {
        assert_eq!(
            crate::base::url::shown("https://bob:s3cret@gw.example/v1/embeddings?api-key=k123"),
            "https://****@gw.example/v1/embeddings?****"
        );
        assert_eq!(
            crate::base::url::shown("http://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1"
        );
        let mut c = cfg();
        c.url = "http://alice:pw-42@127.0.0.1:9/v1?token=t-99".into();
        let e = c.peer().err(
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
        let c = cfg().peer();
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
        let e = cfg().peer().status_error(
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret-123"}}"#,
            0,
        );
        assert_eq!(e.code, Code::InvalidAuthorization);
        assert!(!e.to_string().contains("sk-secret-123"), "{e}");
        assert!(e.message.contains("HTTP 401"), "{}", e.message);
    }
}
