//! A real HTTP server on loopback that speaks OpenAI's `/embeddings`, for memori's tests.
//! Each test starts its own on a free port; it can answer normally or inject one fault.
//! Vectors are deterministic per text, so a repeated text gives the same vector.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer every request normally.
    None,
    /// Answer `status` with `body` (and `Retry-After` if given) the first `times` requests,
    /// then normally.
    Status {
        status: u16,
        body: String,
        retry_after: Option<String>,
        times: usize,
    },
    /// Accept, read the request, and never answer.
    Hang,
    /// Answer 200 with a body that is not JSON.
    NotJson,
    /// Answer one vector fewer than asked.
    Fewer,
    /// Answer vectors of this width whatever was asked.
    Width(usize),
    /// Answer all-zero vectors of the asked width.
    Zero,
}

pub struct MockServer {
    pub port: u16,
    /// Requests received.
    pub requests: Arc<AtomicUsize>,
    /// Largest number of inputs in one request.
    pub max_inputs: Arc<AtomicUsize>,
    /// The Authorization header of the last request.
    pub last_auth: Arc<Mutex<Option<String>>>,
    /// The last request's JSON body.
    pub last_body: Arc<Mutex<Option<serde_json::Value>>>,
}

impl MockServer {
    pub fn start(fault: Fault, width: usize) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let server = MockServer {
            port,
            requests: Arc::new(AtomicUsize::new(0)),
            max_inputs: Arc::new(AtomicUsize::new(0)),
            last_auth: Arc::new(Mutex::new(None)),
            last_body: Arc::new(Mutex::new(None)),
        };
        let shared = (
            server.requests.clone(),
            server.max_inputs.clone(),
            server.last_auth.clone(),
            server.last_body.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let fault = fault.clone();
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = handle(
                        stream, &fault, width, &shared.0, &shared.1, &shared.2, &shared.3,
                    );
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A deterministic unit vector for `text`.
pub fn vector_for(text: &str, width: usize) -> Vec<f32> {
    let mut h: u64 = 1469598103934665603;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(1099511628211);
    }
    let mut v: Vec<f32> = (0..width)
        .map(|i| {
            h = h
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407 + i as u64);
            ((h >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

#[allow(clippy::too_many_arguments)]
fn handle(
    stream: TcpStream,
    fault: &Fault,
    width: usize,
    requests: &AtomicUsize,
    max_inputs: &AtomicUsize,
    last_auth: &Mutex<Option<String>>,
    last_body: &Mutex<Option<serde_json::Value>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut length = 0usize;
    let mut auth = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => auth = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
    *last_auth.lock().unwrap() = auth.clone();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    *last_body.lock().unwrap() = Some(json.clone());
    let inputs: Vec<String> = json["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    max_inputs.fetch_max(inputs.len(), Ordering::SeqCst);
    let asked = json["dimensions"]
        .as_u64()
        .map(|d| d as usize)
        .unwrap_or(width);

    let ok = |w: usize, count: usize| {
        let data: Vec<serde_json::Value> = inputs
            .iter()
            .take(count)
            .enumerate()
            .map(|(i, t)| serde_json::json!({"object": "embedding", "index": i, "embedding": vector_for(t, w)}))
            .collect();
        serde_json::json!({"object": "list", "data": data, "model": json["model"]}).to_string()
    };
    let (status, extra, reply) = match fault {
        Fault::None => (200, String::new(), ok(asked, inputs.len())),
        Fault::Status {
            status,
            body,
            retry_after,
            times,
        } if n <= *times => {
            let extra = match (status, retry_after) {
                (_, Some(r)) => format!("Retry-After: {r}\r\n"),
                (300..=399, None) => "Location: http://127.0.0.1:9/elsewhere\r\n".to_string(),
                _ => String::new(),
            };
            // Echo the key, as some providers do, to prove memori masks it.
            let body = body.replace("{auth}", auth.as_deref().unwrap_or(""));
            (*status, extra, body)
        }
        Fault::Status { .. } => (200, String::new(), ok(asked, inputs.len())),
        Fault::Hang => {
            std::thread::sleep(Duration::from_secs(120));
            return Ok(());
        }
        Fault::NotJson => (
            200,
            String::new(),
            "<html>upstream error</html>".to_string(),
        ),
        Fault::Fewer => (
            200,
            String::new(),
            ok(asked, inputs.len().saturating_sub(1)),
        ),
        Fault::Width(w) => (200, String::new(), ok(*w, inputs.len())),
        Fault::Zero => {
            let data: Vec<serde_json::Value> = (0..inputs.len())
                .map(|i| serde_json::json!({"object": "embedding", "index": i, "embedding": vec![0.0f32; asked]}))
                .collect();
            (
                200,
                String::new(),
                serde_json::json!({"object": "list", "data": data}).to_string(),
            )
        }
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{reply}",
        reply.len()
    )?;
    out.flush()
}
