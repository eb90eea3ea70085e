//! The #[pg_test]s, one file per concept. pgrx runs them in the schema `tests`, so each file
//! wraps its tests in `#[pg_schema] mod tests`.

#[path = "../../tests/support/mock_llm.rs"]
pub mod mock_llm;
#[path = "../../tests/support/mock_openai.rs"]
pub mod mock_openai;
mod support;

mod embedding;
mod lifecycle;
mod llm;
mod memories;
mod robustness;
mod schema;
mod userdata;
