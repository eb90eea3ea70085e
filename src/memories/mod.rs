//! The memory core: storing and searching memories, and what is built on them.
//!
//! - `store`: memori_store, memori_store_batch, memori_update, memori_forget; `sketch`: what
//!   its near-duplicate check reads first;
//! - `search`: memori_search (vector, text, hybrid ranking) and its access counting (`accesses`);
//! - `context`: memori_context, the prompt block; `graph`: memori_relate, memori_entity;
//! - `conversations`: memori_conversation_create and the conversation checks;
//! - `lifecycle`: memori_maintain (expiry, decay, archiving, merging);
//! - `decisions` (plain Rust: the chat model's answer, checked), `extract` (memori_extract) and
//!   `chat` (memori_chat), which call the chat model.
//!
//! Modules here take what a memory is from `base::memory`, the acting user and the privilege
//! boundary from `tenancy`, and vectors from `providers::embedding`.

pub mod accesses;
pub mod chat;
pub mod context;
pub mod conversations;
pub mod decisions;
pub mod extract;
pub mod graph;
pub mod lifecycle;
pub mod search;
pub mod sketch;
pub mod store;
