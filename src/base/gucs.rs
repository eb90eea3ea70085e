//! Every `memori.*` setting, declared in one place with typed getters.
//!
//! Settings that steer outbound calls or hold secrets (`embedding_provider`, `embedding_url`,
//! `embedding_model`, `embedding_dimensions`, `embedding_api_key`, `local_model_path`) are
//! `SUSET`: only a superuser (postgresql.conf, `ALTER SYSTEM`, `ALTER DATABASE/ROLE ... SET`
//! run by a superuser) can set them. PostgreSQL ignores, with a warning, a placeholder value
//! that an ordinary role set before the library was loaded.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_guard;
use pgrx::{pg_sys, PostgresGucEnum};
use std::ffi::CString;

/// Which embedding provider computes vectors.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Provider {
    /// all-MiniLM-L6-v2 in-process (the default: no key, no network).
    #[name = c"local"]
    Local,
    /// An OpenAI-compatible `/embeddings` endpoint over HTTP.
    #[name = c"openai"]
    Openai,
}

impl Provider {
    /// Every provider (base::stats::PROVIDERS counts each by name).
    pub const ALL: [Provider; 2] = [Provider::Local, Provider::Openai];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Openai => "openai",
        }
    }
}

/// How memori_search ranks: both rankings fused (the default), embeddings only, or words only.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum SearchMode {
    /// Vector and full-text rankings fused: the similarity plus the weighted text score.
    #[name = c"hybrid"]
    Hybrid,
    /// Cosine similarity of the embeddings only.
    #[name = c"vector"]
    Vector,
    /// Full-text search only (no embedding of the query).
    #[name = c"text"]
    Text,
}

impl SearchMode {
    pub fn name(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Vector => "vector",
            SearchMode::Text => "text",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hybrid" => Some(SearchMode::Hybrid),
            "vector" => Some(SearchMode::Vector),
            "text" => Some(SearchMode::Text),
            _ => None,
        }
    }
}

/// When memori_search counts an access to each memory it returns.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum AccessCounting {
    /// Remembered in shared memory and counted by the next maintenance pass (batched, off the
    /// search's path); at once where memori is not preloaded or the tables are distributed.
    #[name = c"deferred"]
    Deferred,
    /// In the search's own transaction, one UPDATE per search.
    #[name = c"immediate"]
    Immediate,
}

/// Which chat model API memori_extract and memori_chat call.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum LlmProvider {
    /// None configured: memori_extract and memori_chat say which settings to set.
    #[name = c"none"]
    None,
    /// An OpenAI-compatible `POST {url}/chat/completions` (OpenAI, Ollama, vLLM, LM Studio).
    #[name = c"openai"]
    Openai,
    /// Anthropic's `POST {url}/v1/messages` (Claude).
    #[name = c"anthropic"]
    Anthropic,
}

pub const DEFAULT_EMBEDDING_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_OPENAI_MODEL: &str = "text-embedding-3-small";

static USER_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static SHORT_TERM_EXPIRY_DAYS: GucSetting<i32> = GucSetting::<i32>::new(7);
static ARCHIVE_THRESHOLD_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
static MAX_CONTEXT_MEMORIES: GucSetting<i32> = GucSetting::<i32>::new(10);
static MAX_TOKEN_BUDGET: GucSetting<i32> = GucSetting::<i32>::new(16_000);
static MIN_SIMILARITY: GucSetting<f64> = GucSetting::<f64>::new(0.30);
static EMBEDDING_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(100);
static EMBEDDING_CACHE_TTL: GucSetting<i32> = GucSetting::<i32>::new(3600);
static EMBEDDING_PROVIDER: GucSetting<Provider> = GucSetting::<Provider>::new(Provider::Local);
static EMBEDDING_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static EMBEDDING_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static EMBEDDING_DIMENSIONS: GucSetting<i32> = GucSetting::<i32>::new(0);
static EMBEDDING_API_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static EMBEDDING_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
static EMBEDDING_MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);
static DEDUP_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.95);
static IMPORTANCE_WEIGHT: GucSetting<f64> = GucSetting::<f64>::new(0.15);
static RECENCY_WEIGHT: GucSetting<f64> = GucSetting::<f64>::new(0.05);
static RECENCY_HALF_LIFE_DAYS: GucSetting<f64> = GucSetting::<f64>::new(30.0);
static PROMOTE_AFTER_ACCESSES: GucSetting<i32> = GucSetting::<i32>::new(3);
static KEEP_EXPIRED: GucSetting<bool> = GucSetting::<bool>::new(false);
static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(3600);
static LOCAL_MODEL_PATH: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LOCAL_THREADS: GucSetting<i32> = GucSetting::<i32>::new(1);
static MAX_CONTENT_BYTES: GucSetting<i32> = GucSetting::<i32>::new(65_536);
static MAINTENANCE_LOCK_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(1000);
static MAINTENANCE_STATEMENT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(300_000);
static MAINTENANCE_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1000);
static MAINTENANCE_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
static SEARCH_MODE: GucSetting<SearchMode> = GucSetting::<SearchMode>::new(SearchMode::Hybrid);
static ACCESS_COUNTING: GucSetting<AccessCounting> =
    GucSetting::<AccessCounting>::new(AccessCounting::Deferred);
static TEXT_SEARCH_CONFIG: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"english"));
static EXACT_SEARCH_ROWS: GucSetting<i32> = GucSetting::<i32>::new(20_000);
static HNSW_EF_SEARCH: GucSetting<i32> = GucSetting::<i32>::new(1000);
static LLM_PROVIDER: GucSetting<LlmProvider> = GucSetting::<LlmProvider>::new(LlmProvider::None);
static LLM_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LLM_MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LLM_API_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LLM_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
static LLM_MAX_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(1024);
static LLM_MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(3);
static EXTRACT_PROMPT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static EXTRACT_CONTEXT_MEMORIES: GucSetting<i32> = GucSetting::<i32>::new(20);
static SUPERSEDE_MIN_SIMILARITY: GucSetting<f64> = GucSetting::<f64>::new(0.6);
static CHAT_SYSTEM_PROMPT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static CHAT_HISTORY_MESSAGES: GucSetting<i32> = GucSetting::<i32>::new(20);
static CHAT_EXTRACT: GucSetting<bool> = GucSetting::<bool>::new(false);

pub fn init() {
    GucRegistry::define_string_guc(
            c"memori.user_id",
            c"The memori user that functions act for when no user_id argument is given.",
            c"Empty means current_user. Roles granted as app (memori_grant(role, 'app')) set it in each transaction (SET LOCAL, or set_config(..., true)); a value from an earlier transaction is refused.",
            &USER_ID,
            GucContext::Userset,
            GucFlags::default(),
        );
    GucRegistry::define_int_guc(
        c"memori.short_term_expiry_days",
        c"Days after which a short_term memory expires, unless stored with expires_at.",
        c"The seed's MEMORY_SHORT_TERM_EXPIRY_DAYS.",
        &SHORT_TERM_EXPIRY_DAYS,
        1,
        36_500,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.archive_threshold_days",
        c"Days without access after which maintenance archives a memory (rules are never archived).",
        c"The seed's MEMORY_ARCHIVE_THRESHOLD_DAYS.",
        &ARCHIVE_THRESHOLD_DAYS,
        1,
        36_500,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.max_token_budget",
        c"Largest token_budget memori_context and memori_chat accept (54000 beyond).",
        c"Bounds one prompt's size and cost: a chat call sends at most the context and as much history again, plus the message. Superuser only.",
        &MAX_TOKEN_BUDGET,
        100,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.max_context_memories",
        c"How many memories, beyond the rules, prompt context holds at most.",
        c"The seed's MEMORY_MAX_CONTEXT_MEMORIES.",
        &MAX_CONTEXT_MEMORIES,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"memori.min_similarity",
        c"Cosine similarity a memory needs to enter prompt context.",
        c"The seed's MEMORY_MIN_SIMILARITY_THRESHOLD (0.70 there, tuned for ada-002). The default suits all-MiniLM-L6-v2; see the README for other models.",
        &MIN_SIMILARITY,
        -1.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.embedding_batch_size",
        c"How many texts go into one embedding request or one local forward pass.",
        c"The seed's EMBEDDING_BATCH_SIZE. OpenAI accepts at most 2048 inputs per request.",
        &EMBEDDING_BATCH_SIZE,
        1,
        2048,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.embedding_cache_ttl",
        c"Seconds an embedding stays in the embedding cache; 0 disables the cache.",
        c"The seed's EMBEDDING_CACHE_TTL.",
        &EMBEDDING_CACHE_TTL,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_enum_guc(
        c"memori.embedding_provider",
        c"Which provider computes embeddings: local (built-in all-MiniLM-L6-v2) or openai (any OpenAI-compatible endpoint).",
        c"Superuser only.",
        &EMBEDDING_PROVIDER,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook reads its arguments and sets the check error strings; no panic.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"memori.embedding_url",
            c"Base URL of the OpenAI-compatible API; requests go to {url}/embeddings.",
            c"Empty means https://api.openai.com/v1. Superuser only, and hidden from other roles (it may hold credentials); messages never show its credentials or query string.",
            &EMBEDDING_URL,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            Some(url_check),
            None,
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"memori.embedding_model",
        c"Embedding model name sent to the openai provider.",
        c"Empty means text-embedding-3-small. The local provider always uses all-MiniLM-L6-v2. Superuser only.",
        &EMBEDDING_MODEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.embedding_dimensions",
        c"Embedding width to ask the openai provider for; 0 means the model's own width.",
        c"Sent as the dimensions field when not 0. Superuser only.",
        &EMBEDDING_DIMENSIONS,
        0,
        16_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook reads its arguments and sets the check error strings; no panic.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"memori.embedding_api_key",
            c"API key for the openai provider (sent as a Bearer token).",
            c"Superuser only, and hidden from other roles. Set it in postgresql.conf, with ALTER SYSTEM, or with SET; ALTER DATABASE/ROLE ... SET is refused. Empty means the server's MEMORI_EMBEDDING_API_KEY environment variable, else OPENAI_API_KEY when the URL is OpenAI's own API.",
            &EMBEDDING_API_KEY,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            Some(api_key_check),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"memori.embedding_timeout_ms",
        c"Longest an embedding call may take, retries included.",
        c"A hung endpoint never holds a backend longer than this.",
        &EMBEDDING_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"memori.embedding_max_retries",
        c"How many times a 429 or 5xx answer is retried, with backoff that honours Retry-After.",
        c"",
        &EMBEDDING_MAX_RETRIES,
        0,
        10,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"memori.local_model_path",
        c"Directory with the local model's model.safetensors, tokenizer.json and config.json.",
        c"Empty means $sharedir/extension/memori/all-MiniLM-L6-v2, where the set-up installs it. Superuser only.",
        &LOCAL_MODEL_PATH,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"memori.dedup_threshold",
        c"Cosine similarity at which storing a memory refreshes an existing one of the same user and type instead of adding a row.",
        c"1 or more turns de-duplication off.",
        &DEDUP_THRESHOLD,
        0.0,
        2.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"memori.importance_weight",
        c"Weight of importance in a search result's score.",
        c"score = similarity * (1 - importance_weight - recency_weight) + importance_weight * importance + recency_weight * recency. The two weights add up to at most 1; a weight below 1e-9 counts as 0.",
        &IMPORTANCE_WEIGHT,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"memori.recency_weight",
        c"Weight of recency in a search result's score.",
        c"recency = 0.5 ^ (days since the memory was stored or last changed / memori.recency_half_life_days).",
        &RECENCY_WEIGHT,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"memori.recency_half_life_days",
        c"Days after which a memory's recency counts half in its score.",
        c"",
        &RECENCY_HALF_LIFE_DAYS,
        0.01,
        36_500.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"memori.access_counting",
        c"When memori_search counts an access to the memories it returns: deferred (by the next maintenance pass) or immediate (in the search's transaction).",
        c"deferred needs memori in shared_preload_libraries and falls back to immediate without it or on Citus. Accesses wait in a ring of 262,144 for the whole cluster; under heavier read traffic between two passes the oldest are dropped.",
        &ACCESS_COUNTING,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.promote_after_accesses",
        c"Accesses after which a short_term memory becomes long_term and loses its expiry.",
        c"",
        &PROMOTE_AFTER_ACCESSES,
        1,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"memori.keep_expired",
        c"Whether memori_maintain() archives expired memories instead of deleting them.",
        c"Expired memories are never returned by search or context either way.",
        &KEEP_EXPIRED,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.maintenance_interval",
        c"How often the background worker runs memori_maintain() in each database with memori; 0 disables it.",
        c"Needs shared_preload_libraries = 'memori'.",
        &MAINTENANCE_INTERVAL,
        0,
        i32::MAX / 1000,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"memori.max_content_bytes",
        c"Longest text, in bytes, that memori stores, searches for or embeds.",
        c"Longer input is refused (SQLSTATE 54000) before any work. The local model reads the first 256 tokens of a text; OpenAI's models at most 8,192. Superuser only.",
        &MAX_CONTENT_BYTES,
        1,
        1 << 30,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.local_threads",
        c"Threads the local model may use in each backend that embeds.",
        c"Read when a backend first loads the model. Each such backend keeps this many threads; the backends together share the server's cores.",
        &LOCAL_THREADS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.maintenance_lock_timeout",
        c"lock_timeout of each statement of a maintenance pass; 0 waits without limit.",
        c"A pass that cannot get a lock in time stops in that database with a warning and the next pass tries again. Can be set per database.",
        &MAINTENANCE_LOCK_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"memori.maintenance_statement_timeout",
        c"statement_timeout of each statement of a maintenance pass; 0 means none.",
        c"Each statement handles at most memori.maintenance_batch_size rows. Can be set per database.",
        &MAINTENANCE_STATEMENT_TIMEOUT,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"memori.maintenance_batch_size",
        c"Rows a maintenance statement promotes, expires, archives or purges at most; the worker commits after each.",
        c"Rows locked by other transactions are skipped and left for the next pass.",
        &MAINTENANCE_BATCH_SIZE,
        1,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.maintenance_workers",
        c"How many databases the maintenance launcher maintains at once.",
        c"Each takes one of max_worker_processes while it runs. A database whose previous pass still runs is skipped.",
        &MAINTENANCE_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"memori.search_mode",
        c"How memori_search and memori_context rank: hybrid (vector and full-text rankings fused), vector or text.",
        c"memori_search(mode => ...) overrides it for one call. See README \"Querying\".",
        &SEARCH_MODE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"memori.text_search_config",
        c"Text search configuration of memori's full-text index (e.g. english, simple).",
        c"Applies to memories written from then on and to queries; re-index older memories as the README says. Superuser only.",
        &TEXT_SEARCH_CONFIG,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.exact_search_rows",
        c"Up to this many memories of a user, a search compares the query with every one of them (exact); above, it uses the HNSW index. A store's near-duplicate check likewise, above at least 1,000 (README: Near-duplicates).",
        c"0 always uses the index when the planner picks it. An index pass that comes back short is completed by an exact one.",
        &EXACT_SEARCH_ROWS,
        0,
        100_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.hnsw_ef_search",
        c"hnsw.ef_search for memori's index searches (at least 4 x k, at most 1000).",
        c"Larger finds more of the true nearest neighbours, more slowly: on pseudo-random 384-d vectors, a 10,000-memory scope had recall@10 0.94 at 1000 and 0.52 at 200 (README \"Performance\").",
        &HNSW_EF_SEARCH,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    init_llm();
    reserve_prefix();
}

/// The chat model's settings (memori_extract, memori_chat): who may steer outbound calls and
/// hold the key is the superuser; what a call asks for is each session's.
fn init_llm() {
    GucRegistry::define_enum_guc(
        c"memori.llm_provider",
        c"Which chat model API memori_extract and memori_chat call: none, openai (any OpenAI-compatible /chat/completions) or anthropic (/v1/messages).",
        c"Superuser only.",
        &LLM_PROVIDER,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook reads its arguments and sets the check error strings; no panic.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"memori.llm_url",
            c"Base URL of the chat API: requests go to {url}/chat/completions (openai) or {url}/v1/messages (anthropic).",
            c"Empty means https://api.openai.com/v1 or https://api.anthropic.com. Superuser only, and hidden from other roles; messages never show its credentials or query string.",
            &LLM_URL,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY,
            Some(url_check),
            None,
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"memori.llm_model",
        c"Chat model name sent to the provider.",
        c"Empty means gpt-4o-mini (openai) or claude-sonnet-4-5 (anthropic). Superuser only.",
        &LLM_MODEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: the check hook reads its arguments and sets the check error strings; no panic.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"memori.llm_api_key",
            c"API key for the chat provider (Bearer token for openai, x-api-key for anthropic).",
            c"Superuser only, and hidden from other roles. Set it in postgresql.conf, with ALTER SYSTEM, or with SET; ALTER DATABASE/ROLE ... SET is refused. Empty means the server's MEMORI_LLM_API_KEY, else OPENAI_API_KEY or ANTHROPIC_API_KEY when the URL is that vendor's own API; none at all is sent without a key (local servers need none).",
            &LLM_API_KEY,
            GucContext::Suset,
            GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
            Some(llm_api_key_check),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"memori.llm_timeout_ms",
        c"Longest a chat call may take, retries included.",
        c"Cancel and statement_timeout are answered within a second meanwhile. Superuser only (a tenant's calls spend the shared key).",
        &LLM_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"memori.llm_max_tokens",
        c"Most tokens a chat call may answer with (max_tokens).",
        c"Bounds what each call costs. Superuser only.",
        &LLM_MAX_TOKENS,
        16,
        200_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.llm_max_retries",
        c"How many times a 429 or 5xx answer of the chat provider is retried, with backoff that honours Retry-After.",
        c"",
        &LLM_MAX_RETRIES,
        0,
        10,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"memori.extract_prompt",
        c"System prompt of memori_extract; empty means the one memori ships (README \"Extracting memories\").",
        c"The reply must still be memori's JSON: memori validates every decision.",
        &EXTRACT_PROMPT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.extract_context_memories",
        c"How many of the user's existing memories, most relevant first, memori_extract shows the model.",
        c"The model sees them under short ids; it may also name any current memory of the same user by its full memory_id (never another user's), and an update or supersession needs memori.supersede_min_similarity with the memory it replaces.",
        &EXTRACT_CONTEXT_MEMORIES,
        0,
        200,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"memori.supersede_min_similarity",
        c"Cosine similarity the new fact needs with the memory a model says it updates or supersedes; below, it is added and the old memory stays as it was.",
        c"Keeps unrelated facts from invalidating one another. The default suits all-MiniLM-L6-v2 (README \"Facts over time\"); -1 trusts the model.",
        &SUPERSEDE_MIN_SIMILARITY,
        -1.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"memori.chat_system_prompt",
        c"What memori_chat's system prompt says before the user's memories; empty means memori's.",
        c"",
        &CHAT_SYSTEM_PROMPT,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memori.chat_history_messages",
        c"How many of the conversation's latest messages memori_chat sends with a new one.",
        c"",
        &CHAT_HISTORY_MESSAGES,
        0,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"memori.chat_extract",
        c"Whether memori_chat also runs memori_extract on the user's message when its extract argument is NULL.",
        c"",
        &CHAT_EXTRACT,
        GucContext::Userset,
        GucFlags::default(),
    );
}

fn reserve_prefix() {
    // SAFETY: called from _PG_init with a static, NUL-terminated name (PostgreSQL 15+).
    unsafe { pg_sys::MarkGUCPrefixReserved(c"memori".as_ptr()) }
}

fn string(setting: &GucSetting<Option<CString>>) -> Option<String> {
    setting
        .get()
        .map(|s| s.to_string_lossy().trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn user_id() -> Option<String> {
    string(&USER_ID)
}

#[pg_guard]
unsafe extern "C-unwind" fn api_key_check(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    key_check(newval, source, c"memori.embedding_api_key may not be set with ALTER DATABASE, ALTER ROLE or a function's SET clause: every role can read those settings",
        c"Set it in postgresql.conf or with ALTER SYSTEM SET memori.embedding_api_key = '...'; SELECT pg_reload_conf(); or put it in the server's environment (MEMORI_EMBEDDING_API_KEY).")
}

#[pg_guard]
unsafe extern "C-unwind" fn llm_api_key_check(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    key_check(newval, source, c"memori.llm_api_key may not be set with ALTER DATABASE, ALTER ROLE or a function's SET clause: every role can read those settings",
        c"Set it in postgresql.conf or with ALTER SYSTEM SET memori.llm_api_key = '...'; SELECT pg_reload_conf(); or put it in the server's environment (MEMORI_LLM_API_KEY).")
}

/// Refuses a URL holding credentials or a query string (where keys hide) from ALTER
/// DATABASE/ROLE ... SET and function SET clauses, which every role can read; a plain URL is
/// fine there.
#[pg_guard]
unsafe extern "C-unwind" fn url_check(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    if newval.is_null() || (*newval).is_null() {
        return true;
    }
    let url = std::ffi::CStr::from_ptr(*newval).to_string_lossy();
    if crate::base::url::shown(&url) == url {
        return true;
    }
    key_check(newval, source, c"a memori URL holding credentials or a query string may not be set with ALTER DATABASE, ALTER ROLE or a function's SET clause: every role can read those settings",
        c"Set it in postgresql.conf or with ALTER SYSTEM SET ... ; SELECT pg_reload_conf(); or put the key in the API key setting instead of the URL.")
}

/// Refuses a key from ALTER DATABASE/ROLE ... SET (and CREATE FUNCTION ... SET): those land in
/// pg_db_role_setting and pg_proc, which every role can read, and a backend that has not loaded
/// memori would show the value to anyone through SHOW.
unsafe fn key_check(
    newval: *mut *mut std::ffi::c_char,
    source: pg_sys::GucSource::Type,
    message: &std::ffi::CStr,
    hint: &std::ffi::CStr,
) -> bool {
    use pg_sys::GucSource::*;
    let empty = newval.is_null() || (*newval).is_null() || *(*newval) == 0;
    if empty
        || !matches!(
            source,
            PGC_S_TEST | PGC_S_DATABASE | PGC_S_USER | PGC_S_DATABASE_USER
        )
    {
        return true;
    }
    pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
    pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
    false
}

/// Sets a setting for the rest of the current GUC nest level (as a function's SET clause
/// does): the caller opened the level (NewGUCNestLevel) and closes it (AtEOXact_GUC), which
/// puts the previous value back. False when PostgreSQL refused the value.
pub fn set_in_nest_level(name: &std::ffi::CStr, value: &std::ffi::CStr) -> bool {
    // SAFETY: set_config_option with GUC_ACTION_SAVE inside a nest level opened by the caller.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        ) != 0
    }
}

/// Whether setting `name` has `value` now, as GetConfigOption gives it (false for an unknown
/// setting): for bool and enum settings, named as PostgreSQL names them (`on`, `off`,
/// `force_generic_plan`); a value spelt otherwise (`true`, units) never compares equal, so it is
/// only set again.
pub fn is_set_to(name: &std::ffi::CStr, value: &std::ffi::CStr) -> bool {
    // SAFETY: reads a setting's current value by name; the string is PostgreSQL's, read at once.
    unsafe {
        let now = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        !now.is_null() && std::ffi::CStr::from_ptr(now) == value
    }
}

/// This backend's current local transaction id (0 outside a running transaction).
pub fn local_xact() -> u32 {
    // SAFETY: plain reads of this backend's PGPROC and transaction state.
    unsafe {
        if pg_sys::MyProc.is_null() || !pg_sys::IsTransactionState() {
            0
        } else {
            crate::base::compat::my_local_xid()
        }
    }
}

/// memori.user_id, if this transaction named it: SET LOCAL, set_config(..., true), or a SET
/// inside it. Decided from PostgreSQL's own record of what the transaction did, the setting's
/// GUC stack, never from when a value was last assigned:
/// - a SET or SET LOCAL in this transaction leaves an entry on the stack (state SET, LOCAL or
///   SET_LOCAL) until the transaction ends, with the value as source `session`; a savepoint
///   rolled back restores the value named before it, and its entry stays;
/// - a value PostgreSQL restores or re-applies is never named: one left by an earlier
///   transaction (the stack is empty between transactions, and a pooler hands the value on),
///   one re-applied when the library is loaded, one put back when a function's SET clause
///   returns (that entry is popped), one in force inside such a function (state SAVE), and
///   one RESET brings back (its source is not `session`).
pub fn user_id_this_transaction() -> Option<String> {
    if local_xact() == 0 || !crate::base::compat::user_id_named_in_transaction() {
        return None;
    }
    user_id()
}
pub fn short_term_expiry_days() -> i32 {
    SHORT_TERM_EXPIRY_DAYS.get()
}
pub fn archive_threshold_days() -> i32 {
    ARCHIVE_THRESHOLD_DAYS.get()
}
pub fn max_token_budget() -> usize {
    MAX_TOKEN_BUDGET.get() as usize
}
pub fn max_context_memories() -> i32 {
    MAX_CONTEXT_MEMORIES.get()
}
pub fn min_similarity() -> f64 {
    MIN_SIMILARITY.get()
}
pub fn embedding_batch_size() -> usize {
    EMBEDDING_BATCH_SIZE.get() as usize
}
pub fn embedding_cache_ttl() -> i32 {
    EMBEDDING_CACHE_TTL.get()
}
pub fn embedding_provider() -> Provider {
    EMBEDDING_PROVIDER.get()
}
pub fn embedding_url() -> String {
    string(&EMBEDDING_URL).unwrap_or_else(|| DEFAULT_EMBEDDING_URL.to_string())
}
pub fn embedding_model() -> String {
    string(&EMBEDDING_MODEL).unwrap_or_else(|| DEFAULT_OPENAI_MODEL.to_string())
}
pub fn embedding_dimensions() -> Option<usize> {
    match EMBEDDING_DIMENSIONS.get() {
        0 => None,
        n => Some(n as usize),
    }
}
/// The API key: the setting, else the server's environment. Never log or print it.
/// The embedding key: memori.embedding_api_key, else MEMORI_EMBEDDING_API_KEY, else
/// OPENAI_API_KEY when the URL is OpenAI's API (see `llm_api_key`).
pub fn embedding_api_key(url: &str) -> Option<String> {
    string(&EMBEDDING_API_KEY)
        .or_else(|| env_key("MEMORI_EMBEDDING_API_KEY"))
        .or_else(|| {
            env_key("OPENAI_API_KEY").filter(|_| crate::base::url::host(url) == "api.openai.com")
        })
}
pub fn embedding_timeout_ms() -> u64 {
    EMBEDDING_TIMEOUT_MS.get() as u64
}
pub fn embedding_max_retries() -> u32 {
    EMBEDDING_MAX_RETRIES.get() as u32
}
pub fn dedup_threshold() -> f64 {
    DEDUP_THRESHOLD.get()
}
/// (importance weight, recency weight), scaled down together if they add up to more than 1.
pub fn score_weights() -> (f64, f64) {
    // A weight below MIN_SCORE_WEIGHT counts as 0, as the settings' descriptions say (it kept a
    // product that rounds to 0 from being an underflow error, 22003, while searches scored in
    // SQL).
    let floor = |w: f64| if w < MIN_SCORE_WEIGHT { 0.0 } else { w };
    let (i, r) = (floor(IMPORTANCE_WEIGHT.get()), floor(RECENCY_WEIGHT.get()));
    if i + r > 1.0 {
        (i / (i + r), r / (i + r))
    } else {
        (i, r)
    }
}

/// The smallest importance or recency weight that counts (see `score_weights`).
pub const MIN_SCORE_WEIGHT: f64 = 1e-9;
pub fn recency_half_life_days() -> f64 {
    RECENCY_HALF_LIFE_DAYS.get()
}
pub fn access_counting() -> AccessCounting {
    ACCESS_COUNTING.get()
}
pub fn promote_after_accesses() -> i32 {
    PROMOTE_AFTER_ACCESSES.get()
}
pub fn keep_expired() -> bool {
    KEEP_EXPIRED.get()
}
pub fn maintenance_interval_s() -> i32 {
    MAINTENANCE_INTERVAL.get()
}
pub fn max_content_bytes() -> usize {
    MAX_CONTENT_BYTES.get() as usize
}
pub fn local_threads() -> usize {
    LOCAL_THREADS.get() as usize
}
pub fn maintenance_lock_timeout_ms() -> i32 {
    MAINTENANCE_LOCK_TIMEOUT.get()
}
pub fn maintenance_statement_timeout_ms() -> i32 {
    MAINTENANCE_STATEMENT_TIMEOUT.get()
}
pub fn maintenance_batch_size() -> i64 {
    MAINTENANCE_BATCH_SIZE.get() as i64
}
pub fn maintenance_workers() -> usize {
    MAINTENANCE_WORKERS.get() as usize
}
pub fn local_model_path() -> Option<String> {
    string(&LOCAL_MODEL_PATH)
}
pub fn search_mode() -> SearchMode {
    SEARCH_MODE.get()
}
pub fn text_search_config() -> String {
    string(&TEXT_SEARCH_CONFIG).unwrap_or_else(|| "english".to_string())
}
pub fn exact_search_rows() -> i64 {
    EXACT_SEARCH_ROWS.get() as i64
}
pub fn hnsw_ef_search() -> i32 {
    HNSW_EF_SEARCH.get()
}
pub fn llm_provider() -> LlmProvider {
    LLM_PROVIDER.get()
}
pub fn llm_url() -> Option<String> {
    string(&LLM_URL)
}
pub fn llm_model() -> Option<String> {
    string(&LLM_MODEL)
}
/// The chat provider's key: the setting, else the server's environment. Never log or print it.
/// The chat key: memori.llm_api_key, else the server's MEMORI_LLM_API_KEY, else the vendor's
/// own variable (OPENAI_API_KEY, ANTHROPIC_API_KEY) but only when the URL is that vendor's API:
/// a vendor's key never goes to a server the superuser pointed memori at for something else.
pub fn llm_api_key(provider: LlmProvider, url: &str) -> Option<String> {
    let (vendor, host) = match provider {
        LlmProvider::Anthropic => ("ANTHROPIC_API_KEY", "api.anthropic.com"),
        _ => ("OPENAI_API_KEY", "api.openai.com"),
    };
    string(&LLM_API_KEY)
        .or_else(|| env_key("MEMORI_LLM_API_KEY"))
        .or_else(|| env_key(vendor).filter(|_| crate::base::url::host(url) == host))
}
fn env_key(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|k| !k.trim().is_empty())
}
pub fn llm_timeout_ms() -> u64 {
    LLM_TIMEOUT_MS.get() as u64
}
pub fn llm_max_tokens() -> u32 {
    LLM_MAX_TOKENS.get() as u32
}
pub fn llm_max_retries() -> u32 {
    LLM_MAX_RETRIES.get() as u32
}
pub fn extract_prompt() -> Option<String> {
    string(&EXTRACT_PROMPT)
}
pub fn extract_context_memories() -> i32 {
    EXTRACT_CONTEXT_MEMORIES.get()
}
pub fn supersede_min_similarity() -> f64 {
    SUPERSEDE_MIN_SIMILARITY.get()
}
pub fn chat_system_prompt() -> Option<String> {
    string(&CHAT_SYSTEM_PROMPT)
}
pub fn chat_history_messages() -> i64 {
    CHAT_HISTORY_MESSAGES.get() as i64
}
pub fn chat_extract() -> bool {
    CHAT_EXTRACT.get()
}
