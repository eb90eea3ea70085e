//! The #[pg_test]s, one file per concept. pgrx runs them in the schema `tests`, so each file
//! wraps its tests in `#[pg_schema] mod tests`.

#[path = "../../tests/support/mock_llm.rs"]
pub mod mock_llm;
#[path = "../../tests/support/mock_openai.rs"]
pub mod mock_openai;
mod support;

// One file per module tested, named after it; `robustness` holds what cuts across them
// (timeouts, read-only transactions, threads, arithmetic at the edges).
mod chat;
mod context;
mod conversations;
mod embedding;
mod extract;
mod graph;
mod lifecycle;
mod robustness;
mod schema;
mod search;
mod store;
mod userdata;
