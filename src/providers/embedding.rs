//! The embedding service inside PostgreSQL: picks the provider the settings name, consults the
//! embedding cache, runs the local model or the HTTP call (off the backend's thread, answering
//! cancel requests), and exposes `memori_embed()` and `memori_embed_batch()`.

use crate::base::errors::{Code, MemoriError, OrRaise, Result};
use crate::base::gucs::{self, Provider};
use crate::base::vector::{self, Vector};
use crate::providers::http::{self, HttpConfig};
use crate::providers::local::{self, LocalModel};
use crate::providers::{offthread, Batch};
use crate::tenancy::as_owner_of;
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What computes vectors under the current settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub provider: Provider,
    /// Model name (cache key).
    pub model: String,
    /// Requested width, 0 when the model's own width is not known before asking (cache key).
    pub dims: usize,
    /// Which copy of the model: a digest of a non-default memori.embedding_url or
    /// memori.local_model_path, empty for the defaults (review G9).
    pub variant: String,
}

/// The first 8 hex digits of `text`'s SHA-256: names a URL or a path without showing it.
fn digest(text: &str) -> String {
    sha256(text)[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Target {
    pub fn current() -> Target {
        match gucs::embedding_provider() {
            Provider::Local => Target {
                provider: Provider::Local,
                model: local::MODEL_NAME.into(),
                dims: local::WIDTH,
                variant: gucs::local_model_path()
                    .map(|p| digest(&p))
                    .unwrap_or_default(),
            },
            Provider::Openai => {
                let model = gucs::embedding_model();
                let dims = gucs::embedding_dimensions()
                    .or_else(|| http_config_for(&model).expected_width())
                    .unwrap_or(0);
                let url = gucs::embedding_url();
                Target {
                    provider: Provider::Openai,
                    model,
                    dims,
                    variant: if url == gucs::DEFAULT_EMBEDDING_URL {
                        String::new()
                    } else {
                        digest(&url)
                    },
                }
            }
        }
    }

    /// What `memori_memories.embedding_model` records: `provider/model`, and for a local model
    /// loaded from another path, `#` and the path's digest (another model's vectors under
    /// the same name must not be compared with these). The width is recorded beside it
    /// (`embedding_dims`), and searches, dedup and memori_reembed compare both. A remote
    /// endpoint is named by its model: the label keeps what earlier versions wrote, and the
    /// cache, which must never serve one server's vectors for another's, adds the URL's digest.
    pub fn label(&self) -> String {
        match (self.provider, self.variant.is_empty()) {
            (Provider::Local, false) => {
                format!("{}/{}#{}", self.provider.name(), self.model, self.variant)
            }
            _ => format!("{}/{}", self.provider.name(), self.model),
        }
    }

    /// The model as the cache keys it: the model's name, and the variant when there is one.
    pub fn cache_model(&self) -> String {
        if self.variant.is_empty() {
            self.model.clone()
        } else {
            format!("{}#{}", self.model, self.variant)
        }
    }
}

fn http_config_for(model: &str) -> HttpConfig {
    let url = gucs::embedding_url();
    HttpConfig {
        api_key: gucs::embedding_api_key(&url),
        url,
        model: model.to_string(),
        dimensions: gucs::embedding_dimensions(),
        timeout: Duration::from_millis(gucs::embedding_timeout_ms()),
        max_retries: gucs::embedding_max_retries(),
        batch_size: gucs::embedding_batch_size(),
    }
}

// Per-backend counters, shown by memori_embedding_stats().
thread_local! {
    static STATS: RefCell<Stats> = RefCell::new(Stats::default());
    static MODEL: RefCell<Option<Rc<LocalModel>>> = const { RefCell::new(None) };
}

#[derive(Default, Clone, Copy)]
struct Stats {
    texts: i64,
    cache_hits: i64,
    http_requests: i64,
    model_passes: i64,
}

fn bump(f: impl FnOnce(&mut Stats)) {
    STATS.with(|s| f(&mut s.borrow_mut()));
}

pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// At most this many texts in one call of memori_store_batch or memori_embed_batch: a call's
/// work and memory follow its size, and larger loads go in several calls (or memori_import).
pub const MAX_BATCH_TEXTS: usize = 10_000;

/// Refuses a batch over `MAX_BATCH_TEXTS` texts (54000) before any work.
pub fn check_batch(n: usize, function: &str) -> Result<()> {
    if n > MAX_BATCH_TEXTS {
        return Err(MemoriError::new(
            Code::ProgramLimitExceeded,
            format!("{function} takes at most {MAX_BATCH_TEXTS} texts, not {n}"),
        )
        .hint("Split the texts into several calls."));
    }
    Ok(())
}

/// Embeds `texts` (none empty) with the current settings, in order. The cache is the
/// `user`'s own (None: no cache), so erasing a user erases every embedding of their texts,
/// questions and chat turns included (review G13), and no tenant learns from the cache what
/// another embedded.
pub fn embed_texts(user: Option<&str>, texts: &[&str]) -> Result<(Target, Batch)> {
    let max = gucs::max_content_bytes();
    for (n, t) in texts.iter().enumerate() {
        let which = || {
            if texts.len() > 1 {
                format!(" (element {})", n + 1)
            } else {
                String::new()
            }
        };
        if t.len() > max {
            return Err(MemoriError::new(
                Code::ProgramLimitExceeded,
                format!(
                    "a text of {} bytes{} is longer than memori.max_content_bytes ({max})",
                    t.len(),
                    which()
                ),
            )
            .hint("Store shorter memories (a fact, a rule, a summary), or ask the DBA to raise memori.max_content_bytes."));
        }
        if t.trim().is_empty() {
            return Err(
                MemoriError::invalid(format!("cannot embed empty text{}", which()))
                    .hint("Give some text to embed; NULL gives NULL."),
            );
        }
    }
    let target = Target::current();
    let ttl = gucs::embedding_cache_ttl();
    // An unlogged table cannot be read during recovery (hot standby): skip the cache there.
    // SAFETY: plain reads of backend state.
    let in_recovery = unsafe { pg_sys::RecoveryInProgress() };
    let read_only = in_recovery || unsafe { pg_sys::XactReadOnly };
    let cache_user = if ttl > 0 && !in_recovery && crate::base::catalog::has_user_cache()? {
        user
    } else {
        None
    };
    let use_cache = cache_user.is_some();

    let hashes: Vec<[u8; 32]> = texts.iter().map(|t| sha256(t)).collect();
    let mut known: HashMap<[u8; 32], Vec<f32>> = if use_cache {
        cache_get(cache_user.unwrap_or_default(), &target, &hashes, ttl)?
    } else {
        HashMap::new()
    };
    let hits = hashes.iter().filter(|h| known.contains_key(*h)).count();

    // Each distinct text not in the cache, once.
    let mut todo: Vec<&str> = Vec::new();
    let mut todo_hashes: Vec<[u8; 32]> = Vec::new();
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    for (t, h) in texts.iter().zip(&hashes) {
        if !known.contains_key(h) && seen.insert(*h) {
            todo.push(t);
            todo_hashes.push(*h);
        }
    }
    let mut width = if target.dims > 0 {
        Some(target.dims)
    } else {
        None
    };
    crate::base::stats::cache_hits(hits);
    if !todo.is_empty() {
        let started = std::time::Instant::now();
        let batch = compute(&target, &todo);
        let failed = batch.as_ref().err().map(|e| e.code.sqlstate());
        crate::base::stats::embedding_call(
            target.provider.name(),
            todo.len(),
            started.elapsed(),
            failed,
        );
        if let Some(state) = failed {
            // One line per failed provider call in the server log, key=value, never a secret.
            pgrx::log!(
                "memori: embedding failed provider={} model={} sqlstate={state} texts={} duration_ms={}",
                target.provider.name(),
                target.model,
                todo.len(),
                started.elapsed().as_millis()
            );
        }
        let batch = batch?;
        // Whatever the provider: no NaN, no infinity, no zero vector is ever stored or cached.
        crate::providers::normalize_width(&batch.vectors, Some(batch.width)).map_err(|e| {
            MemoriError::new(
                Code::DataException,
                format!("the embedding provider returned an unusable vector: {e}"),
            )
        })?;
        width = Some(batch.width);
        if use_cache && !read_only {
            cache_put(
                cache_user.unwrap_or_default(),
                &target,
                &todo_hashes,
                &batch.vectors,
            )?;
        }
        for (h, v) in todo_hashes.into_iter().zip(batch.vectors) {
            known.insert(h, v);
        }
    }
    bump(|s| {
        s.texts += texts.len() as i64;
        s.cache_hits += hits as i64;
    });
    let vectors: Vec<Vec<f32>> = hashes.iter().map(|h| known[h].clone()).collect();
    let width = width.or_else(|| vectors.first().map(Vec::len)).unwrap_or(0);
    if let Some(bad) = vectors.iter().position(|v| v.len() != width) {
        return Err(MemoriError::new(
            Code::DataException,
            format!(
                "embeddings of different widths for one call ({} and {width})",
                vectors[bad].len()
            ),
        )
        .hint(
            "The model's width changed: clear the cache with DELETE FROM memori_embedding_cache.",
        ));
    }
    if width > vector::MAX_DIMS {
        return Err(MemoriError::new(
            Code::DataException,
            format!(
                "the embeddings have {width} dimensions; pgvector stores at most {}",
                vector::MAX_DIMS
            ),
        )
        .hint("Ask for fewer with memori.embedding_dimensions."));
    }
    Ok((target, Batch { width, vectors }))
}

fn compute(target: &Target, texts: &[&str]) -> Result<Batch> {
    match target.provider {
        Provider::Local => compute_local(texts),
        Provider::Openai => compute_http(&target.model, texts),
    }
}

/// Texts in one local forward pass at most: bounds a backend's transient memory (attention
/// is texts x 12 heads x tokens^2 floats) whatever memori.embedding_batch_size says.
pub const LOCAL_PASS_MAX: usize = 32;

fn compute_local(texts: &[&str]) -> Result<Batch> {
    let model = local_model()?;
    let per_pass = gucs::embedding_batch_size().clamp(1, LOCAL_PASS_MAX);
    // Similar lengths share a pass, so little padding is computed; results go back in order.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    // Long texts go a few to a pass, so cancel and statement_timeout are answered within about
    // a second (see local::PASS_TOKENS).
    let lens: Vec<usize> = order.iter().map(|&i| texts[i].len()).collect();
    let mut start = 0;
    for n in local::passes(&lens, per_pass) {
        let chunk = &order[start..start + n];
        start += n;
        pgrx::check_for_interrupts!();
        let part: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let batch = model.embed(&part)?;
        bump(|s| s.model_passes += 1);
        for (&i, v) in chunk.iter().zip(batch.vectors) {
            vectors[i] = v;
        }
    }
    Ok(Batch {
        width: local::WIDTH,
        vectors,
    })
}

fn sharedir() -> PathBuf {
    let mut buf = [0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is the backend's NUL-terminated executable path; get_share_path writes
    // at most MAXPGPATH bytes into buf.
    unsafe {
        pg_sys::get_share_path(
            std::ptr::addr_of!(pg_sys::my_exec_path) as *const _,
            buf.as_mut_ptr(),
        );
        PathBuf::from(
            std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned(),
        )
    }
}

pub fn local_model_dir() -> PathBuf {
    gucs::local_model_path()
        .map(PathBuf::from)
        .unwrap_or_else(|| local::default_dir(&sharedir()))
}

/// The local model, loaded once per backend on first use (never in the postmaster).
fn local_model() -> Result<Rc<LocalModel>> {
    let dir = local_model_dir();
    if let Some(m) = MODEL.with(|m| m.borrow().clone()) {
        if m.dir() == dir {
            return Ok(m);
        }
    }
    start_worker_threads();
    let model = Rc::new(LocalModel::load(&dir)?);
    MODEL.with(|m| *m.borrow_mut() = Some(model.clone()));
    Ok(model)
}

/// Starts the thread pool the model's matrix code and tokenizer use, with signals blocked.
fn start_worker_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        offthread::with_signals_blocked(|| {
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(gucs::local_threads())
                .thread_name(|i| format!("memori-model-{i}"))
                .build_global();
        })
    });
}

fn compute_http(model: &str, texts: &[&str]) -> Result<Batch> {
    let cfg = http_config_for(model);
    let deadline = Instant::now() + cfg.timeout;
    let owned: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    let requests = Arc::new(AtomicU64::new(0));
    let (cfg2, counter) = (cfg.clone(), requests.clone());
    let outcome = offthread::run(
        move || http::embed(&cfg2, &owned, deadline, &counter),
        deadline + Duration::from_millis(250),
        || {
            pgrx::check_for_interrupts!();
        },
    );
    bump(|s| s.http_requests += requests.load(Ordering::Relaxed) as i64);
    match outcome {
        Ok(r) => r,
        Err(offthread::NoResult::Deadline) => Err(cfg.peer().timed_out()),
        Err(offthread::NoResult::ThreadFailed) => Err(MemoriError::new(
            Code::SystemError,
            "the embedding request's thread failed",
        )
        .hint("See the server log; the server may be short of threads or memory.")),
    }
}

fn cache_get(
    user: &str,
    target: &Target,
    hashes: &[[u8; 32]],
    ttl: i32,
) -> Result<HashMap<[u8; 32], Vec<f32>>> {
    let keys: Vec<Vec<u8>> = hashes.iter().map(|h| h.to_vec()).collect();
    // Tenants hold no privileges on the cache: memori reads it as the table's owner, with this
    // fixed statement only (every operator exactly typed, so none resolves outside pg_catalog).
    as_owner_of(c"memori_embedding_cache", || {
        Spi::connect(|client| {
            // Every search asks: through a plan kept per backend.
            let rows = crate::base::spi::select_kept(
                client,
                "SELECT text_sha256, embedding::real[] FROM memori_embedding_cache
              WHERE user_id OPERATOR(pg_catalog.=) $6::pg_catalog.text
                AND provider = $1 AND model = $2 AND dims = $3 AND text_sha256 = ANY($4)
                AND created_at > now() - make_interval(secs => $5)",
                &[
                    target.provider.name().into(),
                    target.cache_model().into(),
                    (target.dims as i32).into(),
                    keys.into(),
                    (ttl as f64).into(),
                    user.into(),
                ],
                crate::base::spi::Planning::Generic,
            )?;
            let mut out = HashMap::new();
            for row in rows {
                let h: Option<Vec<u8>> = row.get(1)?;
                let v: Option<Vec<f32>> = row.get(2)?;
                if let (Some(h), Some(v)) = (h, v) {
                    if let Ok(k) = <[u8; 32]>::try_from(h.as_slice()) {
                        out.insert(k, v);
                    }
                }
            }
            Ok(out)
        })
        .map_err(crate::base::spi::spi)
    })
}

/// Writes computed vectors to the cache, best effort and without ever waiting: a key that
/// another transaction is writing at the same time (its transaction-scoped advisory lock is
/// taken) is left to that transaction, so no caller blocks on another's uncommitted cache row
/// and two callers never deadlock over keys. Runs as the cache's owner, like `cache_get`; the
/// entry's created_at is the server's now(). Expired entries are purged by memori_maintain().
fn cache_put(user: &str, target: &Target, hashes: &[[u8; 32]], vectors: &[Vec<f32>]) -> Result<()> {
    let keys: Vec<Vec<u8>> = hashes.iter().map(|h| h.to_vec()).collect();
    let lits: Vec<String> = vectors.iter().map(|v| vector::literal(v)).collect();
    as_owner_of(c"memori_embedding_cache", || {
        Spi::run_with_args(
        "INSERT INTO memori_embedding_cache (user_id, provider, model, dims, text_sha256, embedding)
         SELECT $6::pg_catalog.text, $1, $2, $3, h, v::vector FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.bytea[]), pg_catalog.unnest($5::pg_catalog.text[])) AS u(h, v)
          WHERE pg_catalog.pg_try_advisory_xact_lock(1835363695, pg_catalog.hashtext(pg_catalog.encode(pg_catalog.sha256(
                    pg_catalog.convert_to(coalesce((SELECT s.secret FROM memori_secret s LIMIT 1), ''::pg_catalog.text)
                                          OPERATOR(pg_catalog.||) $6::pg_catalog.text, 'UTF8'::pg_catalog.name) OPERATOR(pg_catalog.||) h),
                    'hex'::pg_catalog.text)))
         ON CONFLICT ON CONSTRAINT memori_embedding_cache_pkey
         DO UPDATE SET embedding = EXCLUDED.embedding, created_at = now()",
        &[
            target.provider.name().into(),
            target.cache_model().into(),
            (target.dims as i32).into(),
            keys.into(),
            lits.into(),
            user.into(),
        ],
    )
    .map_err(crate::base::spi::spi)
    })
}

/// Whose cache memori_embed uses: the memori user the caller acts for (an app's named end user,
/// so that erasing that user erases these entries too), else the calling role.
fn cache_owner() -> String {
    crate::tenancy::resolve(None).unwrap_or_else(|_| crate::tenancy::current_user())
}

/// The embedding of `content` under the current settings (NULL gives NULL; empty text is an error).
#[pg_extern(volatile, strict, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_embed(content: &str) -> Vector {
    let (_, mut batch) = embed_texts(Some(&cache_owner()), &[content]).or_raise();
    Vector(batch.vectors.pop().expect("one vector per text"))
}

/// The embeddings of `contents`, in the same order (a NULL element gives a NULL vector).
#[pg_extern(volatile, strict, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_embed_batch(contents: Array<&str>) -> Vec<Option<Vector>> {
    check_batch(contents.len(), "memori_embed_batch").or_raise();
    let items: Vec<Option<&str>> = contents.iter().collect();
    let present: Vec<&str> = items.iter().flatten().copied().collect();
    let (_, batch) = embed_texts(Some(&cache_owner()), &present).or_raise();
    let mut vectors = batch.vectors.into_iter();
    items
        .iter()
        .map(|t| t.map(|_| Vector(vectors.next().expect("one vector per text"))))
        .collect()
}

/// This backend's embedding counters since it started.
#[pg_extern(volatile, parallel_safe)]
fn memori_embedding_stats() -> TableIterator<
    'static,
    (
        name!(texts, i64),
        name!(cache_hits, i64),
        name!(http_requests, i64),
        name!(model_passes, i64),
    ),
> {
    let s = STATS.with(|s| *s.borrow());
    TableIterator::once((s.texts, s.cache_hits, s.http_requests, s.model_passes))
}
