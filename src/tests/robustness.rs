//! Robustness: no error or panic from odd data or settings, and bounded resources.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{
        arm_statement_timeout, assert_stopped_within, one, run, sql_error,
    };
    use pgrx::prelude::*;

    #[pg_test]
    fn recency_never_underflows_whatever_the_age() {
        run("SELECT memori_store('old fact about invoices', 'long_term')");
        run("SELECT memori_store('ancient fact about invoices', 'long_term')");
        run("SELECT memori_store('timeless fact about invoices', 'long_term')");
        run("UPDATE memori_memories SET updated_at = now() - interval '30 days' WHERE content LIKE 'old%'");
        run("UPDATE memori_memories SET updated_at = '1900-01-01' WHERE content LIKE 'ancient%'");
        run("UPDATE memori_memories SET updated_at = '-infinity' WHERE content LIKE 'timeless%'");
        // 0.01 days is the smallest half-life: 30 days are 3,000 half-lives.
        run("SET LOCAL memori.recency_half_life_days = 0.01");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_search('invoices')"),
            3
        );
        assert!(one::<bool>(
            "SELECT memori_context('invoices', k => 3) IS NOT NULL"
        ));
        // The recency term is 0 for all three, so the score is the rest of the blend.
        assert!(one::<bool>(
            "SELECT bool_and(abs(score - (similarity * 0.8 + 0.15 * importance)) < 1e-6) FROM memori_search('invoices', mode => 'vector')"
        ));
        // Hybrid: the same, with the weighted text score.
        assert!(one::<bool>(
            "SELECT bool_and(abs(score - ((similarity + 0.5 * (explain->>'text_score')::float8) * 0.8 + 0.15 * importance)) < 1e-6)
               FROM memori_search('invoices', explain => true)"
        ));
        run("SET LOCAL memori.recency_weight = 0");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_search('invoices')"),
            3
        );
    }

    #[pg_test]
    fn null_tags_and_entities_are_refused_by_the_table() {
        run("SELECT memori_store('has tags', 'rule', tags => ARRAY['a'])");
        for col in ["context_tags", "related_entities"] {
            let e = sql_error(&format!(
                "UPDATE memori_memories SET {col} = ARRAY['x', NULL]"
            ));
            assert_eq!(e.sqlstate, "ERRCODE_CHECK_VIOLATION", "{col}: {e:?}");
        }
        // NULL elements given to the functions are dropped, not stored.
        run("SELECT memori_store('tagged with a null', 'rule', tags => ARRAY['b', NULL], entities => ARRAY[NULL, 'e'])");
        assert_eq!(
            one::<String>("SELECT context_tags::text || related_entities::text FROM memori_memories WHERE content = 'tagged with a null'"),
            "{b}{e}"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_search('tagged', tags => ARRAY['b', NULL])"),
            1
        );
    }

    #[pg_test]
    fn writing_functions_refuse_a_read_only_transaction_before_embedding() {
        let conv = one::<pgrx::datum::Uuid>("SELECT memori_conversation_create('c')");
        let mem = one::<pgrx::datum::Uuid>("SELECT memori_store('a fact to keep', 'rule')");
        let texts = || one::<i64>("SELECT texts FROM memori_embedding_stats()");
        run("SET TRANSACTION READ ONLY");
        let before = texts();
        for call in [
            "memori_store('a brand new fact')".to_string(),
            "memori_store_batch(ARRAY['one', 'two'])".into(),
            format!("memori_update('{mem}', content => 'changed')"),
            format!("memori_forget('{mem}')"),
            "memori_relate('a', 'b', 'c')".into(),
            format!("memori_store('into a conversation', conversation_id => '{conv}')"),
            "memori_conversation_create('new')".into(),
            "memori_maintain()".into(),
        ] {
            let e = sql_error(&format!("SELECT {call}"));
            assert_eq!(
                e.sqlstate, "ERRCODE_READ_ONLY_SQL_TRANSACTION",
                "{call}: {e:?}"
            );
            assert!(
                e.message.contains("read-only transaction"),
                "{call}: {}",
                e.message
            );
        }
        assert_eq!(texts(), before, "nothing was embedded");
        // Reads work: no access counting, no cache write.
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_search('fact')"), 1);
    }

    #[pg_test]
    fn statement_timeout_stops_a_huge_batch_early() {
        // Over memori's batch size: refused before any work.
        let e = sql_error(
            "SELECT cardinality(memori_embed_batch(ARRAY(SELECT 'text number ' || g FROM generate_series(1, 200000) g)))",
        );
        assert_eq!(e.sqlstate, "ERRCODE_PROGRAM_LIMIT_EXCEEDED", "{e:?}");
        // 10,000 distinct texts (the most a call takes): finding the distinct ones, the cache
        // lookup and the model's chunks all answer the timeout (the distinct-text search was
        // quadratic and deaf to it).
        let started = std::time::Instant::now();
        arm_statement_timeout(1000);
        let e = sql_error(
            "SELECT cardinality(memori_embed_batch(ARRAY(SELECT 'text number ' || g FROM generate_series(1, 10000) g)))",
        );
        assert_eq!(e.sqlstate, "ERRCODE_QUERY_CANCELED", "{e:?}");
        // Embedding 10,000 texts takes minutes; the timer was armed at 1 s.
        assert_stopped_within(
            started.elapsed(),
            10,
            std::time::Duration::from_millis(1000),
            "a huge batch",
        );
    }

    #[pg_test]
    fn statement_timeout_stops_long_local_embeddings_within_a_second() {
        // 64 texts of about 15 kB (256 tokens each for the model): 16 passes of 4. One pass is
        // timed first, on this machine, in this run: the call must stop within the timer plus
        // about one pass (here: the timer plus three passes, far from the sixteen of the whole).
        run("SET LOCAL memori.embedding_cache_ttl = 0");
        let started = std::time::Instant::now();
        run("SELECT cardinality(memori_embed_batch(ARRAY(SELECT repeat('pass' || g || ' ', 2500) FROM generate_series(1, 4) g)))");
        let pass = started.elapsed();
        let armed = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        arm_statement_timeout(300);
        let e = sql_error(
            "SELECT cardinality(memori_embed_batch(ARRAY(SELECT repeat('word' || g || ' ', 2500) FROM generate_series(1, 64) g)))",
        );
        assert_eq!(e.sqlstate, "ERRCODE_QUERY_CANCELED", "{e:?}");
        let took = started.elapsed().saturating_sub(armed);
        assert_stopped_within(took, 3, pass, "past the timer, in model passes");
    }

    #[pg_test]
    fn the_local_model_uses_the_threads_the_setting_allows() {
        run("SELECT memori_embed('warm up the model')");
        // Threads of this backend that the model's pool started (memori.local_threads = 1).
        let pool = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("memori-model"))
            .count();
        assert_eq!(pool, 1);
        assert_eq!(one::<String>("SHOW memori.local_threads"), "1");
    }
}
