//! memori_store, memori_store_batch, memori_search, memori_update, memori_forget.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::embed::offthread::with_signals_blocked;
    use crate::tests::mock_openai::{Fault, MockServer};
    use crate::tests::support::{one, run, sql_error, state};
    use pgrx::datum::Uuid;
    use pgrx::prelude::*;

    fn store(sql: &str) -> Uuid {
        one::<Uuid>(sql)
    }

    fn count(sql_where: &str) -> i64 {
        one::<i64>(&format!(
            "SELECT count(*) FROM memori_memories WHERE {sql_where}"
        ))
    }

    fn search(sql: &str) -> Vec<String> {
        Spi::connect(|c| {
            c.select(sql, None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap())
                .collect()
        })
    }

    /// `n` memories with random 384-d unit vectors, as if the local model made them.
    fn synthetic(user: &str, n: i32, tags: &str) {
        run(&format!(
            "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model, context_tags)
             SELECT '{user}', 'synthetic ' || g, 'long_term',
                    (SELECT l2_normalize(array_agg(random() - 0.5)::real[]::vector) FROM generate_series(1, 384) WHERE g > 0),
                    'local/all-MiniLM-L6-v2', '{tags}'
               FROM generate_series(1, {n}) g"
        ));
    }

    #[pg_test]
    fn store_embeds_and_writes_one_row() {
        let conv = one::<Uuid>("SELECT memori_conversation_create('c')");
        run("UPDATE memori_conversations SET last_activity_at = now() - interval '1 day'");
        let id = Spi::get_one_with_args::<Uuid>(
            "SELECT memori_store('User prefers JOINs over subqueries', 'rule', $1, 0.8, '{sql,style}',
                                 '{\"source\": \"chat\"}', '{orders}')",
            &[conv.into()],
        )
        .unwrap()
        .unwrap();
        let row = Spi::get_three_with_args::<String, i32, bool>(
            "SELECT memory_type || '|' || importance_score || '|' || context_tags::text || '|' || related_entities::text
                    || '|' || metadata::text || '|' || embedding_model || '|' || user_id,
                    embedding_dims, expires_at IS NULL
               FROM memori_memories WHERE memory_id = $1",
            &[id.into()],
        )
        .unwrap();
        let me = one::<String>("SELECT current_user::text");
        assert_eq!(
            row.0.unwrap(),
            format!("rule|0.8|{{sql,style}}|{{orders}}|{{\"source\": \"chat\"}}|local/all-MiniLM-L6-v2|{me}")
        );
        assert_eq!(row.1, Some(384));
        assert_eq!(
            row.2,
            Some(true),
            "only short_term memories expire by default"
        );
        assert!(one::<bool>(
            "SELECT last_activity_at = now() FROM memori_conversations"
        ));
        // The stored vector is the model's embedding of the content.
        assert!(one::<bool>(
            "SELECT (embedding <=> memori_embed('User prefers JOINs over subqueries')) < 1e-5 FROM memori_memories"
        ));
    }

    #[pg_test]
    fn short_term_memories_expire_after_the_setting() {
        run("SET LOCAL memori.short_term_expiry_days = 3");
        store("SELECT memori_store('a passing remark')");
        assert!(one::<bool>(
            "SELECT expires_at = now() + interval '3 days' FROM memori_memories"
        ));
        store("SELECT memori_store('another remark', expires_at => now() + interval '1 hour')");
        assert_eq!(count("expires_at = now() + interval '1 hour'"), 1);
    }

    #[pg_test]
    fn refused_stores_write_nothing() {
        let conv = one::<Uuid>("SELECT memori_conversation_create('mine', 'alice')");
        let cases: Vec<(String, &str, &str)> = vec![
            ("SELECT memori_store(NULL)".into(), "22004", "memori: content must not be NULL"),
            ("SELECT memori_store('  ')".into(), "22023", "memori: content must not be empty"),
            ("SELECT memori_store('x', importance => 1.5)".into(), "22023", "memori: importance must be between 0 and 1, not 1.5"),
            ("SELECT memori_store('x', importance => -0.1)".into(), "22023", "memori: importance must be between 0 and 1, not -0.1"),
            ("SELECT memori_store('x', 'episodic')".into(), "22023", "memori: unknown memory_type \"episodic\""),
            ("SELECT memori_store('x', metadata => '[]')".into(), "22023", "memori: metadata must be a JSON object, not an array"),
            (
                "SELECT memori_store('x', conversation_id => '00000000-0000-0000-0000-000000000001')".into(),
                "23503",
                "memori: conversation 00000000-0000-0000-0000-000000000001 does not exist for user \"bob\"",
            ),
            (
                format!("SELECT memori_store('x', conversation_id => '{conv}')"),
                "23503",
                "does not exist for user \"bob\"",
            ),
        ];
        run("SET LOCAL memori.user_id = 'bob'");
        for (sql, code, msg) in cases {
            let e = sql_error(&sql);
            assert_eq!(e.sqlstate, state(code), "{sql}: {e:?}");
            assert!(e.message.contains(msg), "{sql}: {}", e.message);
        }
        run("SET LOCAL memori.local_model_path = '/nonexistent'");
        let e = sql_error("SELECT memori_store('an embedding failure')");
        assert_eq!(e.sqlstate, state("58P01"));
        let e = sql_error(&format!(
            "SELECT memori_store('x', conversation_id => '{conv}', user_id => 'alice')"
        ));
        assert_eq!(
            e.sqlstate,
            state("58P01"),
            "embedding fails after the checks"
        );
        assert_eq!(count("true"), 0);
        assert!(one::<bool>(
            "SELECT last_activity_at < now() + interval '1 s' FROM memori_conversations"
        ));
    }

    #[pg_test]
    fn near_duplicates_refresh_the_existing_memory() {
        let a = store("SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', importance => 0.6, tags => '{sql}')");
        let b = store(
            "SELECT memori_store('The user prefers JOINs instead of subqueries', 'rule', importance => 0.9,
                                 tags => '{style}', entities => '{orders}')",
        );
        assert_eq!(a, b);
        assert_eq!(count("true"), 1);
        assert_eq!(
            one::<String>("SELECT importance_score || '|' || context_tags::text || '|' || related_entities::text || '|' || access_count FROM memori_memories"),
            "0.9|{sql,style}|{orders}|1"
        );
        // Same text as another type, or for another user: new rows.
        let c =
            store("SELECT memori_store('User prefers JOINs instead of subqueries', 'long_term')");
        let d = store("SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', user_id => 'someone_else')");
        assert!(c != a && d != a && c != d);
        // A different memory is not a duplicate.
        store("SELECT memori_store('The orders table has a customer_id column', 'rule')");
        assert_eq!(count("true"), 4);
        // Threshold 1 turns it off.
        run("SET LOCAL memori.dedup_threshold = 1");
        let e = store("SELECT memori_store('User prefers JOINs instead of subqueries', 'rule')");
        assert!(e != a);
        assert_eq!(count("true"), 5);
    }

    #[pg_test]
    fn a_merge_takes_the_new_content_and_stays_in_its_conversation() {
        let a = one::<Uuid>("SELECT memori_conversation_create('A')");
        let b = one::<Uuid>("SELECT memori_conversation_create('B')");
        let m1 = store(&format!(
            "SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', '{a}')"
        ));
        let m2 = store(&format!(
            "SELECT memori_store('The user prefers JOINs instead of subqueries', 'rule', '{b}')"
        ));
        assert!(
            m1 != m2,
            "near-duplicates in different conversations stay apart"
        );
        assert_eq!(
            search(&format!(
                "SELECT content FROM memori_search('JOINs', conversation_id => '{b}')"
            )),
            vec!["The user prefers JOINs instead of subqueries"]
        );
        run(&format!(
            "DELETE FROM memori_conversations WHERE conversation_id = '{a}'"
        ));
        assert_eq!(count("true"), 1, "B's memory outlives conversation A");
        // In the same conversation: merged, and the newer wording wins (content, embedding and
        // full-text document together).
        let m3 = store(&format!(
            "SELECT memori_store('User prefers JOINs rather than subqueries', 'rule', '{b}')"
        ));
        assert_eq!(m3, m2);
        assert_eq!(
            one::<String>("SELECT content FROM memori_memories"),
            "User prefers JOINs rather than subqueries"
        );
        assert!(one::<bool>(
            "SELECT (embedding <=> memori_embed('User prefers JOINs rather than subqueries')) < 1e-5
                    AND content_tsv OPERATOR(pg_catalog.@@) 'rather'::tsquery FROM memori_memories"
        ));
        // Without a conversation: a new memory, not merged into B's.
        let m4 = store("SELECT memori_store('User prefers JOINs rather than subqueries', 'rule')");
        assert!(m4 != m2);
        assert_eq!(count("true"), 2);
    }

    #[pg_test]
    fn relationships_merge_only_on_the_identical_triple() {
        let r1 = store("SELECT memori_relate('orders.customer_id', 'references', 'customers.id')");
        let r2 = store("SELECT memori_relate('customers.id', 'references', 'orders.customer_id')");
        assert!(r1 != r2, "the reversed relation is another fact");
        let r3 = store("SELECT memori_relate('Orders.Customer_ID', ' references ', 'customers.id', importance => 0.9)");
        assert_eq!(r3, r1, "the same triple, whatever the case and spacing");
        assert_eq!(
            one::<String>(&format!(
                "SELECT content || '|' || (metadata->>'subject') || '|' || importance_score FROM memori_memories WHERE memory_id = '{r1}'"
            )),
            "Orders.Customer_ID references customers.id|Orders.Customer_ID|0.9",
            "content and triple agree"
        );
        assert_eq!(count("true"), 2);
    }

    #[pg_test]
    fn dedup_finds_the_twin_whatever_other_users_store() {
        // Other users' copies of the same sentence crowd its neighbourhood in the shared index,
        // and the user has thousands of other memories (review F10).
        run(
            "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model)
             SELECT 'other' || g, 'User prefers dark mode', 'rule',
                    (SELECT memori_embed('User prefers dark mode')), 'local/all-MiniLM-L6-v2'
               FROM generate_series(1, 2000) g",
        );
        synthetic("big", 5000, "{}");
        run("UPDATE memori_memories SET memory_type = 'rule' WHERE user_id = 'big'");
        let first =
            store("SELECT memori_store('User prefers dark mode', 'rule', user_id => 'big')");
        run("ANALYZE memori_memories");
        let again =
            store("SELECT memori_store('The user prefers dark mode', 'rule', user_id => 'big')");
        assert_eq!(first, again);
        assert_eq!(count("user_id = 'big'"), 5001);
    }

    #[pg_test]
    fn store_batch_keeps_order_and_batches_requests() {
        let s = with_signals_blocked(|| MockServer::start(Fault::None, 16));
        run("SET LOCAL memori.embedding_provider = 'openai'");
        run(&format!("SET LOCAL memori.embedding_url = '{}'", s.url()));
        run("SET LOCAL memori.embedding_api_key = 'sk-test'");
        run("SET LOCAL memori.embedding_model = 'mock'");
        run("SET LOCAL memori.embedding_cache_ttl = 0");
        run("SET LOCAL memori.embedding_batch_size = 2");
        let ids: Vec<(i64, Uuid)> = Spi::connect(|c| {
            c.select(
                "SELECT n, id FROM memori_store_batch(ARRAY['one', 'two', 'three', 'four', 'five'], 'entity', tags => '{t}')
                   WITH ORDINALITY AS s(id, n)",
                None,
                &[],
            )
            .unwrap()
            .map(|r| (r.get::<i64>(1).unwrap().unwrap(), r.get::<Uuid>(2).unwrap().unwrap()))
            .collect()
        });
        assert_eq!(ids.len(), 5);
        assert_eq!(s.requests(), 3, "ceil(5 / 2) requests");
        for (n, id) in ids {
            let content = Spi::get_one_with_args::<String>(
                "SELECT content || '|' || embedding_model || '|' || embedding_dims FROM memori_memories WHERE memory_id = $1",
                &[id.into()],
            )
            .unwrap()
            .unwrap();
            let want = ["one", "two", "three", "four", "five"][n as usize - 1];
            assert_eq!(content, format!("{want}|openai/mock|16"));
        }
        let e = sql_error("SELECT memori_store_batch(ARRAY['fine', NULL])");
        assert_eq!(e.message, "memori: contents[2] must not be NULL");
        let e = sql_error("SELECT memori_store_batch(ARRAY['fine', ''])");
        assert_eq!(e.message, "memori: contents[2] must not be empty");
        assert_eq!(count("true"), 5, "nothing more was written");
    }

    fn seed_memories() -> Uuid {
        let conv = one::<Uuid>("SELECT memori_conversation_create('Test Conversation')");
        run(&format!(
            "SELECT memori_store('User prefers using table aliases in SQL queries', 'rule', '{conv}', 0.8, '{{preference,sql}}');
             SELECT memori_store('The customers table has columns: id, name, email, created_at', 'entity', '{conv}', 0.7, '{{schema,table}}');
             SELECT memori_store('User prefers using JOINs instead of subqueries', 'rule', importance => 0.8, tags => '{{preference,sql}}');
             SELECT memori_store('The weather in Lisbon is sunny today', 'short_term', importance => 1.0);
             SELECT memori_store('User prefers JOINs over subqueries', 'rule', user_id => 'other_user');"
        ));
        conv
    }

    #[pg_test]
    fn search_finds_the_seeds_examples_for_this_user_only() {
        let conv = seed_memories();
        let hits = search(&format!(
            "SELECT content FROM memori_search('SQL query preferences', 5, '{conv}')"
        ));
        assert_eq!(
            hits,
            [
                "User prefers using table aliases in SQL queries",
                "The customers table has columns: id, name, email, created_at"
            ]
        );
        let hits = search(
            "SELECT content FROM memori_search('How does the user prefer SQL queries?', k => 2)",
        );
        assert_eq!(hits.len(), 2);
        assert!(
            hits.contains(&"User prefers using JOINs instead of subqueries".to_string()),
            "{hits:?}"
        );
        // The other user's memory never shows.
        let all = search("SELECT content FROM memori_search('JOINs over subqueries', k => 100)");
        assert_eq!(all.len(), 4);
        assert!(!all.contains(&"User prefers JOINs over subqueries".to_string()));
        let theirs = search("SELECT content FROM memori_search('JOINs', user_id => 'other_user')");
        assert_eq!(theirs, ["User prefers JOINs over subqueries"]);
    }

    #[pg_test]
    fn search_filters_by_type_tags_archive_expiry_and_similarity() {
        seed_memories();
        let q = |args: &str| {
            search(&format!(
                "SELECT content FROM memori_search('SQL preferences'{args})"
            ))
        };
        assert_eq!(
            q(", memory_types => '{entity}'"),
            ["The customers table has columns: id, name, email, created_at"]
        );
        assert_eq!(
            q(", tags => '{table,nothing}'"),
            ["The customers table has columns: id, name, email, created_at"]
        );
        assert_eq!(q(", tags => '{sql}'").len(), 2);
        run("UPDATE memori_memories SET is_archived = true WHERE content LIKE '%aliases%'");
        assert_eq!(q("").len(), 3);
        assert_eq!(q(", include_archived => true").len(), 4);
        run("UPDATE memori_memories SET expires_at = now() - interval '1 second' WHERE content LIKE '%Lisbon%'");
        assert_eq!(q("").len(), 2, "expired memories are never returned");
        let sims = search(
            "SELECT similarity::text FROM memori_search('SQL preferences', min_similarity => 0.3)",
        );
        assert!(!sims.is_empty());
        assert!(
            sims.iter().all(|s| s.parse::<f64>().unwrap() >= 0.3),
            "{sims:?}"
        );
        assert_eq!(q(", k => 1").len(), 1);
        let e = sql_error("SELECT * FROM memori_search('x', k => 0)");
        assert_eq!(e.message, "memori: k must be between 1 and 1000, not 0");
        let e = sql_error("SELECT * FROM memori_search('x', memory_types => '{bogus}')");
        assert_eq!(e.sqlstate, state("22023"));
        let e = sql_error("SELECT * FROM memori_search(NULL)");
        assert_eq!(e.message, "memori: query must not be NULL");
    }

    #[pg_test]
    fn relevance_comes_first_with_default_weights() {
        store("SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', importance => 0.0)");
        store("SELECT memori_store('The weather in Lisbon is sunny today', 'long_term', importance => 1.0)");
        run("UPDATE memori_memories SET updated_at = now() - interval '400 days' WHERE importance_score = 0");
        let hits =
            search("SELECT content FROM memori_search('Does the user like JOINs or subqueries?')");
        assert_eq!(hits[0], "User prefers JOINs instead of subqueries");
        // score is ordered, and blends: equal similarity, higher importance first.
        let scores = search("SELECT score::text FROM memori_search('anything at all')");
        let s: Vec<f64> = scores.iter().map(|x| x.parse().unwrap()).collect();
        assert!(s.windows(2).all(|w| w[0] >= w[1]), "{s:?}");
    }

    #[pg_test]
    fn search_counts_accesses_and_skips_that_when_read_only() {
        seed_memories();
        run("SELECT * FROM memori_search('SQL', k => 2)");
        assert_eq!(count("access_count = 1 AND last_accessed_at = now()"), 2);
        assert_eq!(count("access_count = 0 AND last_accessed_at IS NULL"), 3);
        run("SET LOCAL transaction_read_only = on");
        assert_eq!(
            search("SELECT content FROM memori_search('SQL', k => 2)").len(),
            2
        );
        assert_eq!(count("access_count = 1"), 2);
    }

    #[pg_test]
    fn search_with_a_selective_filter_still_returns_k_exact_results() {
        // One user with many memories, few tagged 'rare': whatever plan the planner picks
        // (HNSW with iterative scans, or the GIN index and an exact sort), k come back, and
        // they are the exact k nearest.
        synthetic("crowd", 3000, "{common}");
        synthetic("crowd", 25, "{rare}");
        run("ANALYZE memori_memories");
        run("SET LOCAL memori.user_id = 'crowd'");
        let got = search("SELECT content FROM memori_search('database tuning', k => 10, tags => '{rare}') ORDER BY content");
        let exact = search(
            "SELECT content FROM (SELECT content FROM memori_memories WHERE user_id = 'crowd' AND context_tags && '{rare}'
              ORDER BY embedding <=> memori_embed('database tuning') LIMIT 10) t ORDER BY content",
        );
        assert_eq!(got.len(), 10);
        assert_eq!(got, exact);
    }

    #[pg_test]
    fn many_users_each_get_their_own_k_nearest() {
        for u in 0..60 {
            synthetic(&format!("user{u}"), 50, "{}");
        }
        run("ANALYZE memori_memories");
        assert_eq!(count("true"), 3000);
        for u in [0, 17, 59] {
            run(&format!("SET LOCAL memori.user_id = 'user{u}'"));
            let got = search("SELECT content FROM memori_search('favourite SQL style', k => 10)");
            let exact = search(&format!(
                "SELECT content FROM memori_memories WHERE user_id = 'user{u}'
                  ORDER BY embedding <=> memori_embed('favourite SQL style') LIMIT 10"
            ));
            assert_eq!(got.len(), 10);
            let mut g = got.clone();
            let mut e = exact.clone();
            g.sort();
            e.sort();
            assert_eq!(g, e, "user{u} gets its exact 10 nearest");
        }
    }

    #[pg_test]
    fn a_scope_above_exact_search_rows_uses_the_hnsw_index() {
        synthetic("big", 8000, "{}");
        run("ANALYZE memori_memories");
        run("SET LOCAL memori.user_id = 'big'");
        // Below memori.exact_search_rows (20,000 by default): every memory compared.
        let q = crate::search::query(
            Some(10),
            None,
            None,
            None,
            None,
            None,
            None,
            Some("vector"),
            None,
        )
        .unwrap();
        let label = crate::embedding::Target::current().label();
        let (_, batch) = crate::embedding::embed_texts(None, &["query"]).unwrap();
        let (hits, path) = crate::search::vector_candidates(
            &q,
            crate::search::user_rows("big").unwrap(),
            &label,
            &batch.vectors[0],
            40,
        )
        .unwrap();
        assert_eq!((hits.len(), path), (40, crate::search::Path::Exact));
        run("SET LOCAL memori.exact_search_rows = 1000");
        let (hits, path) = crate::search::vector_candidates(
            &q,
            crate::search::user_rows("big").unwrap(),
            &label,
            &batch.vectors[0],
            40,
        )
        .unwrap();
        assert_eq!((hits.len(), path), (40, crate::search::Path::Index));
        let sql = crate::search::vector_sql(&q, 384, false);
        let args: Vec<pgrx::datum::DatumWithOid> = vec![
            "big".to_string().into(),
            None::<pgrx::datum::Uuid>.into(),
            None::<Vec<String>>.into(),
            None::<Vec<String>>.into(),
            None::<pgrx::datum::TimestampWithTimeZone>.into(),
            label.clone().into(),
            batch.vectors[0].clone().into(),
            40i64.into(),
        ];
        let plan = |sql: &str| {
            Spi::connect(|c| {
                c.select(&format!("EXPLAIN {sql}"), None, &args)
                    .unwrap()
                    .map(|r| r.get::<String>(1).unwrap().unwrap())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        };
        run("SET LOCAL hnsw.iterative_scan = relaxed_order");
        let p = plan(&sql);
        assert!(
            p.contains("Index Scan using idx_memori_mem_embedding_384"),
            "{p}"
        );
        let p = plan(&crate::search::vector_sql(&q, 384, true));
        assert!(!p.contains("idx_memori_mem_embedding_384"), "{p}");
        assert_eq!(
            search("SELECT content FROM memori_search('query')").len(),
            10
        );
    }

    #[pg_test]
    fn update_changes_and_reembeds() {
        let id = store("SELECT memori_store('User likes tabs', 'short_term')");
        assert!(one::<bool>(&format!(
            "SELECT memori_update('{id}', content => 'User prefers CTEs over nested subqueries', memory_type => 'long_term',
                                  importance => 0.9, tags => '{{sql}}', metadata => '{{\"v\": 2}}')"
        )));
        assert_eq!(
            one::<String>("SELECT content || '|' || memory_type || '|' || importance_score || '|' || context_tags::text || '|' || metadata::text || '|' || (expires_at IS NULL) FROM memori_memories"),
            "User prefers CTEs over nested subqueries|long_term|0.9|{sql}|{\"v\": 2}|true"
        );
        assert!(one::<bool>(
            "SELECT (embedding <=> memori_embed('User prefers CTEs over nested subqueries')) < 1e-5 FROM memori_memories"
        ));
        assert_eq!(
            search("SELECT content FROM memori_search('common table expressions')").len(),
            1
        );
        // Only the owner's memories; unknown ids give false.
        run("SET LOCAL memori.user_id = 'intruder'");
        assert!(!one::<bool>(&format!(
            "SELECT memori_update('{id}', importance => 0.1)"
        )));
        assert!(!one::<bool>(&format!("SELECT memori_forget('{id}')")));
        run("RESET memori.user_id");
        let e = sql_error(&format!("SELECT memori_update('{id}', importance => 7)"));
        assert_eq!(e.sqlstate, state("22023"));
        let e = sql_error(&format!("SELECT memori_update('{id}', content => '')"));
        assert_eq!(e.message, "memori: content must not be empty");
        assert!(one::<bool>(&format!("SELECT memori_forget('{id}')")));
        assert!(!one::<bool>(&format!("SELECT memori_forget('{id}')")));
        assert_eq!(count("true"), 0);
    }
}
