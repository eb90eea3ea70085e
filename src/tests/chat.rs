//! memori_chat against a loopback server speaking both chat APIs (tests/support/mock_llm.rs):
//! both turns stored, context and history in the request, two calls with extraction, all or
//! nothing. Embeddings come from the local model.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::mock_llm::Answer;
    use crate::tests::support::{llm, snapshot};
    use crate::tests::support::{one, sql_error, state};
    use pgrx::datum::Uuid;
    use pgrx::prelude::*;
    use std::sync::Arc;

    fn store(content: &str, memory_type: &str, user: &str) -> Uuid {
        Spi::get_one_with_args::<Uuid>(
            "SELECT memori_store($1, $2, user_id => $3)",
            &[content.into(), memory_type.into(), user.into()],
        )
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn chat_stores_both_turns_with_context_and_history() {
        let conv = one::<Uuid>("SELECT memori_conversation_create('Text2SQL', user_id => 'ch-a')");
        store("Always use table aliases.", "rule", "ch-a");
        store(
            "The orders table has a customer_id column.",
            "entity",
            "ch-a",
        );
        let s = llm(
            "openai",
            Arc::new(|n, body| {
                Answer::Text(format!(
                    "reply {n} to {}",
                    body["messages"].as_array().unwrap().last().unwrap()["content"]
                        .as_str()
                        .unwrap()
                ))
            }),
        );
        let ask = |m: &str| {
            Spi::get_one_with_args::<String>(
                "SELECT memori_chat($1, $2, user_id => 'ch-a')",
                &[m.into(), conv.into()],
            )
            .unwrap()
            .unwrap()
        };
        assert_eq!(ask("Show all orders"), "reply 1 to Show all orders");
        let body = s.last_body();
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("Always use table aliases."), "{system}");
        assert!(system.contains("customer_id"), "{system}");
        assert_eq!(ask("Only this year's"), "reply 2 to Only this year's");
        // The second call carries the first turn.
        let body = s.last_body();
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(body["messages"][2]["content"], "reply 1 to Show all orders");
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(role || ':' || content || ':' || coalesce(model, '-'), ' | ' ORDER BY id)
                   FROM memori_messages WHERE conversation_id = '{conv}'"
            )),
            "user:Show all orders:- | assistant:reply 1 to Show all orders:openai/mock-chat | \
             user:Only this year's:- | assistant:reply 2 to Only this year's:openai/mock-chat"
        );
        assert!(one::<bool>(&format!(
            "SELECT last_activity_at = now() FROM memori_conversations WHERE conversation_id = '{conv}'"
        )));
        // Another user's conversation is refused before any call.
        let e = sql_error(&format!(
            "SELECT memori_chat('hi', '{conv}', user_id => 'ch-other')"
        ));
        assert_eq!(e.sqlstate, state("23503"));
        assert_eq!(s.requests(), 2);
    }

    #[pg_test]
    fn chat_with_extract_makes_two_calls_and_writes_all_or_nothing() {
        let s = llm(
            "anthropic",
            Arc::new(|_, body| {
                if body.get("tools").is_some() {
                    Answer::Text(r#"{"memories": [{"action": "add", "type": "rule", "content": "Always use table aliases."}]}"#.into())
                } else {
                    Answer::Text("SELECT o.id FROM orders o;".into())
                }
            }),
        );
        let reply = one::<String>(
            // extract is an SQL keyword: named notation needs the quotes.
            "SELECT memori_chat('Always use table aliases. List order ids.', \"extract\" => true, user_id => 'ch-b')",
        );
        assert_eq!(reply, "SELECT o.id FROM orders o;");
        assert_eq!(s.requests(), 2);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'ch-b' AND memory_type = 'rule'"),
            1
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_messages WHERE user_id = 'ch-b' AND conversation_id IS NULL"),
            2
        );
        // The extraction fails: the chat's turns are not stored either.
        let _bad = llm(
            "openai",
            Arc::new(|_, body| {
                if body.get("response_format").is_some() {
                    Answer::Text("not json".into())
                } else {
                    Answer::Text("ok".into())
                }
            }),
        );
        let before = snapshot("ch-b");
        let e = sql_error("SELECT memori_chat('More.', NULL, NULL, true, 'ch-b')");
        assert_eq!(e.sqlstate, state("22000"));
        assert_eq!(snapshot("ch-b"), before);
    }
}
