//! Helpers for the #[pg_test]s.

use crate::providers::offthread::with_signals_blocked;
use crate::tests::mock_llm::{Brain, MockLlm};
use crate::tests::mock_openai::{Fault, MockServer};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// An error a statement raised: SQLSTATE, message, hint.
#[derive(Debug)]
pub struct SqlError {
    pub sqlstate: String,
    pub message: String,
    pub hint: Option<String>,
    pub detail: Option<String>,
}

/// Runs `sql` in a subtransaction (as a PL/pgSQL exception block does) and returns the error it
/// raised, or None. The surrounding test transaction stays usable either way.
pub fn try_sql(sql: &str) -> Option<SqlError> {
    // SAFETY: the subtransaction pattern PL/pgSQL uses; memory context and resource owner are
    // restored on both paths.
    unsafe {
        let cxt = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(cxt);
        let caught = PgTryBuilder::new(|| {
            Spi::run(sql).expect("SPI");
            None
        })
        .catch_others(|e| {
            let report = match e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
                CaughtError::RustPanic { ereport, .. } => ereport,
            };
            Some(SqlError {
                sqlstate: format!("{:?}", report.sql_error_code()),
                message: report.message().to_string(),
                hint: report.hint().map(str::to_string),
                detail: report.detail().map(str::to_string),
            })
        })
        .execute();
        if caught.is_some() {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        } else {
            pg_sys::ReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(cxt);
        pg_sys::CurrentResourceOwner = owner;
        caught
    }
}

/// The error `sql` must raise.
pub fn sql_error(sql: &str) -> SqlError {
    try_sql(sql).unwrap_or_else(|| panic!("expected an error from: {sql}"))
}

/// SQLSTATE names as pgrx prints them, for the codes memori uses.
pub fn state(code: &str) -> &'static str {
    match code {
        "22023" => "ERRCODE_INVALID_PARAMETER_VALUE",
        "22000" => "ERRCODE_DATA_EXCEPTION",
        "22004" => "ERRCODE_NULL_VALUE_NOT_ALLOWED",
        "28000" => "ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION",
        "08001" => "ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION",
        "08006" => "ERRCODE_CONNECTION_FAILURE",
        "53000" => "ERRCODE_INSUFFICIENT_RESOURCES",
        "58000" => "ERRCODE_SYSTEM_ERROR",
        "58P01" => "ERRCODE_UNDEFINED_FILE",
        "57014" => "ERRCODE_QUERY_CANCELED",
        "42501" => "ERRCODE_INSUFFICIENT_PRIVILEGE",
        "23503" => "ERRCODE_FOREIGN_KEY_VIOLATION",
        "23505" => "ERRCODE_UNIQUE_VIOLATION",
        "23514" => "ERRCODE_CHECK_VIOLATION",
        other => panic!("add {other} to support::state"),
    }
}

pub fn one<T: pgrx::IntoDatum + pgrx::FromDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql)
        .expect("query runs")
        .expect("query returns a value")
}

pub fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

// timeout.h: STARTUP_PACKET_TIMEOUT, DEADLOCK_TIMEOUT, LOCK_TIMEOUT, STATEMENT_TIMEOUT, ...
const STATEMENT_TIMEOUT: std::ffi::c_int = 3;
extern "C-unwind" {
    fn enable_timeout_after(id: std::ffi::c_int, delay_ms: std::ffi::c_int);
    fn disable_timeout(id: std::ffi::c_int, keep_indicator: bool);
}

/// Disarms the timer `arm_statement_timeout` armed (nothing if it fired already).
pub fn disarm_statement_timeout() {
    // SAFETY: cancels PostgreSQL's statement timer, as the executor does at statement end.
    unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
}

/// What statement_timeout does, armed now for `ms` milliseconds: the same timer and interrupt
/// (a SET inside a test would only apply to the next top-level statement).
pub fn arm_statement_timeout(ms: i32) {
    // SAFETY: arms PostgreSQL's statement timer, as the executor does at statement start.
    unsafe { enable_timeout_after(STATEMENT_TIMEOUT, ms) };
}

/// Asserts that a call that was stopped (by a timeout or a cancel) ended at most `ratio` times
/// `reference` after it started: `reference` is a duration measured or configured in the same
/// run (the timer armed, one unit of the work), never an absolute figure, so the bound moves
/// with the machine's speed (machines of one kind differ 2x and more).
pub fn assert_stopped_within(
    took: std::time::Duration,
    ratio: u32,
    reference: std::time::Duration,
    what: &str,
) {
    assert!(
        took <= reference * ratio,
        "{what}: took {took:?}, more than {ratio} x {reference:?}"
    );
}

pub fn count(sql_where: &str) -> i64 {
    one::<i64>(&format!(
        "SELECT count(*) FROM memori_memories WHERE {sql_where}"
    ))
}

pub fn first_column(sql: &str) -> Vec<String> {
    Spi::connect(|c| {
        c.select(sql, None, &[])
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap().unwrap())
            .collect()
    })
}

/// Called first by every test that runs `ANALYZE memori_memories`: takes ANALYZE's own lock on
/// the table (SHARE UPDATE EXCLUSIVE, kept to the test's end) before the test holds anything
/// else, so that such tests run one after the other. Side by side they could deadlock (a CI run
/// on PostgreSQL 15: one waiting for the other's ANALYZE lock, the other for the first's
/// transaction). Tests that only read and write rows are not held up.
pub fn analyzes() {
    run("LOCK TABLE memori_memories IN SHARE UPDATE EXCLUSIVE MODE");
}

/// `n` memories with random 384-d unit vectors, as if the local model made them. Each costs a
/// few milliseconds, most of it inserting into the HNSW index (dropping the index and building
/// it again after the INSERT would be ten times faster, but DROP INDEX's lock, held to the
/// test's end, could make two tests running side by side deadlock: one waiting for the table,
/// the other for a key of the embedding cache the first had written).
pub fn synthetic(user: &str, n: i32, tags: &str) {
    run(&format!(
        "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model, context_tags)
         SELECT '{user}', 'synthetic ' || g, 'long_term',
                (SELECT l2_normalize(array_agg(random() - 0.5)::real[]::vector) FROM generate_series(1, 384) WHERE g > 0),
                'local/all-MiniLM-L6-v2', '{tags}'
           FROM generate_series(1, {n}) g"
    ));
}

/// A loopback embeddings server of `width` dimensions (a pseudo-random unit vector per text,
/// `mock_openai::vector_for`), and the settings pointing memori at it (model `openai/mock`).
pub fn mock_embeddings(width: usize) -> MockServer {
    mock_embeddings_with(Fault::None, width)
}

/// `mock_embeddings`, the server injecting `fault`.
pub fn mock_embeddings_with(fault: Fault, width: usize) -> MockServer {
    let s = with_signals_blocked(|| MockServer::start(fault, width));
    run("SET LOCAL memori.embedding_provider = 'openai'");
    run(&format!("SET LOCAL memori.embedding_url = '{}'", s.url()));
    run("SET LOCAL memori.embedding_api_key = 'sk-test'");
    run("SET LOCAL memori.embedding_model = 'mock'");
    s
}

/// A loopback chat server answering with `brain`, and the settings pointing at it.
pub fn llm(api: &str, brain: Brain) -> MockLlm {
    let s = with_signals_blocked(|| MockLlm::start(brain));
    let url = if api == "anthropic" {
        s.anthropic_url()
    } else {
        s.openai_url()
    };
    run(&format!("SET LOCAL memori.llm_provider = '{api}'"));
    run(&format!("SET LOCAL memori.llm_url = '{url}'"));
    run("SET LOCAL memori.llm_model = 'mock-chat'");
    run("SET LOCAL memori.llm_api_key = 'sk-llm-test-secret'");
    run("SET LOCAL memori.llm_max_retries = 0");
    run("SET LOCAL memori.llm_timeout_ms = 5000");
    s
}

/// Everything memori holds for a user, as one text: what "nothing written" compares.
pub fn snapshot(user: &str) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT coalesce(string_agg(memory_id || content || memory_type || importance_score
                                    || coalesce(valid_to::text, '-') || updated_at, ',' ORDER BY id), '')
                || '/' || (SELECT count(*) FROM memori_messages WHERE user_id = $1)
           FROM memori_memories WHERE user_id = $1",
        &[user.into()],
    )
    .unwrap()
    .unwrap()
}

#[cfg(test)]
mod guards {
    /// `analyzes()` works only if every pg_test that runs ANALYZE on memori_memories calls it
    /// first: read from the tests' sources, so that a new such test cannot forget it (the markers
    /// are split here so that this file does not match itself).
    #[test]
    fn every_test_that_analyzes_takes_the_lock_first() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tests");
        let mut analyzing = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for test in text.split(concat!("#[pg", "_test]")).skip(1) {
                let Some(body) = test.split_once(") {\n").map(|(_, b)| b) else {
                    continue;
                };
                // The test's own body: up to the next item at the module's indentation.
                let body = body.split("\n    }\n").next().unwrap_or(body);
                if !body.contains(concat!("ANALYZE ", "memori_memories")) {
                    continue;
                }
                analyzing += 1;
                let first = body
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with("//"))
                    .unwrap_or("");
                assert!(
                    first.ends_with("analyzes();"),
                    "{}: a test runs ANALYZE memori_memories without calling analyzes() first: {}",
                    path.display(),
                    test.lines().find(|l| l.contains("fn ")).unwrap_or("")
                );
            }
        }
        assert!(analyzing >= 7, "{analyzing} tests found to analyze");
    }
}
