//! memori_export, memori_import and memori_erase_user.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{one, run, sql_error, state};
    use pgrx::prelude::*;

    /// Every column that an export keeps, of every memory and conversation of `user`, in
    /// memory_id order, hashed.
    fn fingerprint(user: &str) -> String {
        one::<String>(&format!(
            "SELECT md5(coalesce((SELECT string_agg(concat_ws('|', memory_id, conversation_id, content, memory_type,
                    importance_score, access_count, last_accessed_at, context_tags, related_entities, metadata,
                    expires_at, is_archived, created_at, updated_at, embedding_model, content_tsv), '/' ORDER BY memory_id)
               FROM memori_memories WHERE user_id = '{user}'), '') || '#' ||
               coalesce((SELECT string_agg(concat_ws('|', conversation_id, title, metadata, data_source_id, is_active,
                    created_at, updated_at, last_activity_at), '/' ORDER BY conversation_id)
               FROM memori_conversations WHERE user_id = '{user}'), ''))"
        ))
    }

    fn seed() {
        run("SET LOCAL memori.dedup_threshold = 1");
        run("SELECT memori_conversation_create('Q3 report', user_id => 'alice', metadata => '{\"team\": \"finance\"}') AS c");
        run("SELECT memori_store('User prefers JOINs over subqueries', 'rule', importance => 0.9, tags => '{sql}',
                                 metadata => '{\"source\": \"chat\", \"n\": null}', entities => '{joins}', user_id => 'alice',
                                 conversation_id => (SELECT conversation_id FROM memori_conversations WHERE user_id = 'alice'))");
        run("SELECT memori_relate('orders.customer_id', 'references', 'customers.id', user_id => 'alice')");
        run("SELECT memori_store('Alice works in Berlin', 'short_term', user_id => 'alice')");
        run("UPDATE memori_memories SET is_archived = true, access_count = 4, last_accessed_at = now() - interval '3 days'
              WHERE content = 'Alice works in Berlin'");
        run("SELECT memori_store('Bob is someone else', 'rule', user_id => 'bob')");
    }

    #[pg_test]
    fn history_and_chat_messages_travel_with_an_export() {
        run("SET LOCAL memori.dedup_threshold = 1");
        run("SELECT memori_conversation_create('chat', user_id => 'dana')");
        run("INSERT INTO memori_messages (conversation_id, user_id, role, content, model)
             SELECT conversation_id, 'dana', r, r || ' says hi', CASE WHEN r = 'assistant' THEN 'openai/m' END
               FROM memori_conversations, unnest(ARRAY['user', 'assistant']) r WHERE user_id = 'dana'");
        run("INSERT INTO memori_messages (user_id, role, content) VALUES ('dana', 'user', 'no conversation')");
        run("SELECT memori_store('Dana lives in Paris', 'long_term', user_id => 'dana')");
        run("SELECT memori_store('Dana lives in Berlin', 'long_term', user_id => 'dana')");
        run("UPDATE memori_memories SET valid_to = now() - interval '1 hour',
                    superseded_by = (SELECT memory_id FROM memori_memories WHERE content = 'Dana lives in Berlin')
              WHERE content = 'Dana lives in Paris'");
        let state = || {
            one::<String>(
                "SELECT (SELECT string_agg(concat_ws('|', conversation_id, role, content, model, created_at), '/' ORDER BY id)
                           FROM memori_messages WHERE user_id = 'dana') || '#' ||
                        (SELECT string_agg(concat_ws('|', memory_id, valid_to, superseded_by), '/' ORDER BY memory_id)
                           FROM memori_memories WHERE user_id = 'dana')",
            )
        };
        let before = state();
        run("CREATE TEMP TABLE export AS SELECT memori_export('dana') AS line");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM export WHERE line->>'kind' = 'message'"),
            3
        );
        run("SELECT memori_erase_user('dana')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_messages WHERE user_id = 'dana'"),
            0,
            "erase deletes messages, also those outside a conversation"
        );
        run("SELECT memori_import(ARRAY(SELECT line FROM export))");
        assert_eq!(state(), before);
        assert_eq!(
            one::<String>(
                "SELECT string_agg(content, ',') FROM memori_search('Where does Dana live?', user_id => 'dana')"
            ),
            "Dana lives in Berlin"
        );
    }

    #[pg_test]
    fn an_export_imports_back_identical_with_or_without_embeddings() {
        seed();
        let before = fingerprint("alice");
        let embeddings = one::<String>("SELECT md5(string_agg(embedding::text, '/' ORDER BY memory_id)) FROM memori_memories WHERE user_id = 'alice'");
        for with in [true, false] {
            run(&format!("CREATE TEMP TABLE export AS SELECT memori_export('alice', include_embeddings => {with}) AS line"));
            assert_eq!(
                one::<i64>("SELECT count(*) FROM export"),
                1 + 1 + 3,
                "header, conversation, memories"
            );
            assert_eq!(
                one::<String>("SELECT line->>'kind' FROM export LIMIT 1"),
                "memori_export"
            );
            assert_eq!(
                one::<i64>("SELECT count(*) FROM export WHERE line ? 'embedding'"),
                if with { 3 } else { 0 }
            );
            let erased = one::<String>(
                "SELECT memories || ' ' || conversations FROM memori_erase_user('alice')",
            );
            assert_eq!(erased, "3 1");
            let counts = one::<String>("SELECT conversations || ' ' || memories || ' ' || reembedded FROM memori_import(ARRAY(SELECT line FROM export))");
            // Kept embeddings are not computed again; without them, all three are.
            assert_eq!(counts, if with { "1 3 0" } else { "1 3 3" });
            assert_eq!(
                fingerprint("alice"),
                before,
                "every column back as it was (with embeddings: {with})"
            );
            assert_eq!(
                one::<String>("SELECT md5(string_agg(embedding::text, '/' ORDER BY memory_id)) FROM memori_memories WHERE user_id = 'alice'"),
                embeddings
            );
            run("DROP TABLE export");
        }
        // Bob was never touched; alice's memories are searchable again.
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'bob'"),
            1
        );
        assert_eq!(
            one::<String>(
                "SELECT content FROM memori_search('customer_id', k => 1, user_id => 'alice')"
            ),
            "orders.customer_id references customers.id"
        );
    }

    #[pg_test]
    fn an_import_under_another_name_or_model_and_its_refusals() {
        seed();
        run("CREATE TEMP TABLE export AS SELECT memori_export('alice', true) AS line");
        // Another model's embeddings are not kept: the memories are embedded again.
        run("UPDATE export SET line = jsonb_set(line, '{embedding_model}', '\"openai/other\"') WHERE line->>'kind' = 'memory'");
        // The same ids exist here: nothing is written.
        let e = sql_error(
            "SELECT * FROM memori_import(ARRAY(SELECT line FROM export), user_id => 'carol')",
        );
        assert_eq!(e.sqlstate, state("23505"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'carol'"),
            0
        );
        // Alice's conversation exists here: memories may not join it under another user's name.
        run("CREATE TEMP TABLE mems AS SELECT line - 'memory_id' AS line FROM export WHERE line->>'kind' = 'memory'");
        let e = sql_error(
            "SELECT * FROM memori_import(ARRAY(SELECT line FROM mems), user_id => 'mallory')",
        );
        assert_eq!(e.sqlstate, state("23503"));
        assert!(
            e.message.contains("belongs to another user"),
            "{}",
            e.message
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'mallory'"),
            0
        );
        // Under fresh ids, for another user.
        run("UPDATE export SET line = line - 'memory_id' - 'conversation_id'");
        let counts = one::<String>("SELECT conversations || ' ' || memories || ' ' || reembedded FROM memori_import(ARRAY(SELECT line FROM export), user_id => 'carol')");
        assert_eq!(counts, "1 3 3");
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'carol' AND embedding_model = 'local/all-MiniLM-L6-v2'"), 3);
        // A damaged export (the current model's label on a 2-number embedding) is embedded again.
        run("UPDATE export SET line = jsonb_set(jsonb_set(line, '{embedding_model}', '\"local/all-MiniLM-L6-v2\"'), '{embedding}', '[0.5, 0.5]')
              WHERE line->>'kind' = 'memory'");
        let counts = one::<String>("SELECT memories || ' ' || reembedded FROM memori_import(ARRAY(SELECT line FROM export), user_id => 'erin')");
        assert_eq!(counts, "3 3");
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'erin' AND embedding_dims = 384"), 3);
        // Bad input: clear errors, nothing written.
        let e = sql_error(
            "SELECT * FROM memori_import(ARRAY['{\"kind\": \"memory\"}'::jsonb], 'dave')",
        );
        assert_eq!(e.sqlstate, state("22023"));
        assert_eq!(
            e.message,
            "memori: cannot import: line 1: a memory without content"
        );
        let e = sql_error("SELECT * FROM memori_import(ARRAY['{\"kind\": \"memory\", \"content\": \"x\"}'::jsonb])");
        assert_eq!(e.sqlstate, state("22004"));
        let e = sql_error("SELECT * FROM memori_import(ARRAY['{\"kind\": \"memory\", \"content\": \"x\", \"memory_type\": \"bogus\"}'::jsonb], 'dave')");
        assert_eq!(e.sqlstate, state("23514"));
        let e = sql_error("SELECT * FROM memori_import(NULL)");
        assert_eq!(e.sqlstate, state("22004"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'dave'"),
            0
        );
    }

    #[pg_test]
    fn erasing_a_user_leaves_nothing_of_theirs() {
        seed();
        run("SET LOCAL memori.embedding_cache_ttl = 3600");
        // A text no other test embeds, and a question asked as alice (review G13: her questions'
        // embeddings were left behind).
        run("SELECT memori_store('Alice wrote this only for the erase test', 'rule', user_id => 'alice')");
        run("SELECT count(*) FROM memori_search('my HIV test came back positive', user_id => 'alice')");
        let cached = |cond: &str| {
            one::<i64>(&format!(
                "SELECT count(*) FROM memori_embedding_cache WHERE {cond}"
            ))
        };
        let question = "text_sha256 = sha256(convert_to('my HIV test came back positive', 'UTF8'))";
        let (alice, others) = (cached("user_id = 'alice'"), cached("user_id <> 'alice'"));
        assert!(alice >= 2, "{alice}");
        assert_eq!(cached(question), 1);
        assert_eq!(
            one::<String>("SELECT memories || ' ' || conversations || ' ' || cache_entries FROM memori_erase_user(' alice ')"),
            format!("4 1 {alice}")
        );
        assert_eq!(
            cached("user_id = 'alice'"),
            0,
            "none of alice's entries is left"
        );
        assert_eq!(cached(question), 0, "nor the embedding of her question");
        assert_eq!(cached("user_id <> 'alice'"), others, "other entries stay");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_memories WHERE user_id = 'alice'"),
            0
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_conversations WHERE user_id = 'alice'"),
            0
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_store_locks WHERE user_id = 'alice'"),
            0
        );
        assert_eq!(
            one::<String>(
                "SELECT memories || ' ' || conversations FROM memori_erase_user('alice')"
            ),
            "0 0"
        );
        assert_eq!(
            sql_error("SELECT memori_erase_user(NULL)").sqlstate,
            state("22004")
        );
        assert_eq!(
            sql_error("SELECT memori_erase_user('')").sqlstate,
            state("22023")
        );
    }
}
