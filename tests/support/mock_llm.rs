//! A real HTTP server on loopback that speaks both chat APIs memori calls: OpenAI-compatible
//! `POST /v1/chat/completions` and Anthropic's `POST /v1/messages`. A test gives it a "brain":
//! a function from the request number and JSON body to an answer, which the server wraps in the
//! shape of the API that was called (for Anthropic with tools, a tool_use block).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub enum Answer {
    /// What the model says (the JSON text for an extraction).
    Text(String),
    /// An HTTP error, with a Retry-After header when given.
    Status(u16, String, Option<String>),
    /// Read the request, never answer.
    Hang,
    /// A 200 whose body is this, as it is.
    Raw(String),
}

pub type Brain = Arc<dyn Fn(usize, &serde_json::Value) -> Answer + Send + Sync>;

pub struct MockLlm {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// Each request: its path, headers (lowercased names) and JSON body.
    pub seen: Arc<Mutex<Vec<(String, Vec<(String, String)>, serde_json::Value)>>>,
}

impl MockLlm {
    pub fn start(brain: Brain) -> MockLlm {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let server = MockLlm {
            port,
            requests: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let (requests, seen) = (server.requests.clone(), server.seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (brain, requests, seen) = (brain.clone(), requests.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &brain, &requests, &seen);
                });
            }
        });
        server
    }

    /// memori.llm_url for memori.llm_provider = openai.
    pub fn openai_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// memori.llm_url for memori.llm_provider = anthropic.
    pub fn anthropic_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn last_body(&self) -> serde_json::Value {
        self.seen
            .lock()
            .unwrap()
            .last()
            .expect("a request")
            .2
            .clone()
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        let seen = self.seen.lock().unwrap();
        let (_, headers, _) = seen.last()?;
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

/// A brain that always says `text`.
pub fn saying(text: &str) -> Brain {
    let text = text.to_string();
    Arc::new(move |_, _| Answer::Text(text.clone()))
}

fn handle(
    stream: TcpStream,
    brain: &Brain,
    requests: &AtomicUsize,
    seen: &Mutex<Vec<(String, Vec<(String, String)>, serde_json::Value)>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut length = 0usize;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        let name = name.to_ascii_lowercase();
        if name == "content-length" {
            length = value.trim().parse().unwrap_or(0);
        }
        headers.push((name, value.trim().to_string()));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
    seen.lock()
        .unwrap()
        .push((path.clone(), headers, json.clone()));
    let anthropic = path.ends_with("/v1/messages");
    let (status, extra, reply) = match brain(n, &json) {
        Answer::Hang => {
            std::thread::sleep(Duration::from_secs(120));
            return Ok(());
        }
        Answer::Raw(r) => (200, String::new(), r),
        Answer::Status(s, b, retry) => (
            s,
            retry
                .map(|r| format!("Retry-After: {r}\r\n"))
                .unwrap_or_default(),
            b,
        ),
        Answer::Text(t) if anthropic => {
            let block = match (json.get("tools"), serde_json::from_str::<serde_json::Value>(&t)) {
                (Some(_), Ok(input)) => {
                    serde_json::json!({"type": "tool_use", "id": "toolu_1", "name": "record_answer", "input": input})
                }
                _ => serde_json::json!({"type": "text", "text": t}),
            };
            (
                200,
                String::new(),
                serde_json::json!({"id": "msg_1", "type": "message", "role": "assistant",
                    "content": [block], "stop_reason": "end_turn"})
                .to_string(),
            )
        }
        Answer::Text(t) => (
            200,
            String::new(),
            serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}]})
            .to_string(),
        ),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    out.flush()
}
