//! memori_store, memori_store_batch, memori_update, memori_forget: writes, refusals, near-duplicate
//! merging.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{count, first_column, mock_embeddings, synthetic};
    use crate::tests::support::{one, run, sql_error, state};
    use pgrx::datum::Uuid;
    use pgrx::prelude::*;

    fn store(sql: &str) -> Uuid {
        one::<Uuid>(sql)
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
            first_column(&format!(
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
        crate::tests::support::analyzes();
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
        // Above memori.exact_search_rows (and 1,000), the check asks the HNSW index first; here
        // other users' copies crowd the twin's neighbourhood, the index pass comes back short,
        // and every memory is compared: the twin is still found, and a different memory is
        // still not merged.
        run("SET LOCAL memori.exact_search_rows = 100");
        crate::base::spi::PLANS.with(|p| *p.borrow_mut() = Some(Vec::new()));
        let probed =
            store("SELECT memori_store('User prefers dark mode', 'rule', user_id => 'big')");
        assert_eq!(probed, first);
        let plans = crate::base::spi::PLANS
            .with(|p| p.borrow_mut().take())
            .unwrap_or_default();
        assert!(
            plans
                .iter()
                .any(|p| p.contains("Index Scan using idx_memori_mem_embedding_384")),
            "{plans:#?}"
        );
        let other = store(
            "SELECT memori_store('The orders table has a customer_id column', 'rule', user_id => 'big')",
        );
        assert!(other != first);
        assert_eq!(count("user_id = 'big'"), 5002);
        // A batch of that user: each memory through the index, the twin merged, the new one
        // after it found among the memories the batch wrote.
        let batch = first_column(
            "SELECT id::text FROM memori_store_batch(
                 ARRAY['User prefers dark mode', 'Invoices are due in 30 days',
                       'Invoices are due in 30 days'], 'rule', user_id => 'big')
                 WITH ORDINALITY AS b(id, n) ORDER BY n",
        );
        assert_eq!(batch[0], first.to_string());
        assert_eq!(batch[1], batch[2]);
        assert_eq!(count("user_id = 'big'"), 5003);
        // A scope of fewer memories than the index pass asks for (another type): every one
        // compared, the twin of that type found, the other type's never.
        let fact =
            store("SELECT memori_store('User prefers dark mode', 'long_term', user_id => 'big')");
        assert!(fact != first);
        let again = store(
            "SELECT memori_store('The user prefers dark mode', 'long_term', user_id => 'big')",
        );
        assert_eq!(again, fact);
        assert_eq!(count("user_id = 'big'"), 5004);
    }

    /// A large scope's check compares with the memories the HNSW index finds nearest, as far as
    /// they are live: the user's own expired copies, nearer than the twin, are passed over.
    #[pg_test]
    fn a_large_scope_compares_with_what_the_index_finds() {
        crate::tests::support::analyzes();
        synthetic("big", 1500, "{}");
        run("UPDATE memori_memories SET memory_type = 'rule' WHERE user_id = 'big'");
        let twin = store("SELECT memori_store('User prefers dark mode', 'rule', user_id => 'big')");
        run(
            "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model, expires_at)
             SELECT 'big', 'User prefers dark mode', 'rule',
                    (SELECT memori_embed('User prefers dark mode')), 'local/all-MiniLM-L6-v2',
                    now() - interval '1 day'
               FROM generate_series(1, 12) g",
        );
        run("ANALYZE memori_memories");
        let live = "user_id = 'big' AND (expires_at IS NULL OR expires_at > now())";
        let stored = |sql: &str| {
            crate::base::spi::PLANS.with(|p| *p.borrow_mut() = Some(Vec::new()));
            let id = store(sql);
            let plans = crate::base::spi::PLANS
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            let merge: Vec<String> = plans
                .iter()
                .filter(|p| p.starts_with("Update"))
                .cloned()
                .collect();
            (id, plans, merge)
        };
        // 1,501 memories of that type: at the default threshold (20,000), every one compared
        // (through the sketches).
        let (id, _, merge) =
            stored("SELECT memori_store('The user prefers dark mode', 'rule', user_id => 'big')");
        assert_eq!(id, twin);
        assert!(
            merge.len() == 1 && merge[0].contains("dedup_sketch"),
            "{merge:#?}"
        );
        // Above it: the 10 nearest live memories through the index, and only those compared.
        run("SET LOCAL memori.exact_search_rows = 100");
        let (id, plans, merge) =
            stored("SELECT memori_store('User prefers dark mode', 'rule', user_id => 'big')");
        assert_eq!(id, twin);
        assert!(
            plans
                .iter()
                .any(|p| p.contains("Index Scan using idx_memori_mem_embedding_384")),
            "{plans:#?}"
        );
        assert!(
            merge.len() == 1
                && !merge[0].contains("dedup_sketch")
                && merge[0].contains("memory_id = ANY"),
            "{merge:#?}"
        );
        assert_eq!(count(live), 1501);
        let hnsw = |plans: &[String]| {
            plans
                .iter()
                .any(|p| p.contains("idx_memori_mem_embedding_384"))
        };
        // A rare type of that user: the index pass looks for it among the user's other
        // memories, gives up, and every memory of the type is compared.
        let short =
            store("SELECT memori_store('User prefers dark mode', 'short_term', user_id => 'big')");
        assert!(short != twin);
        let (id, plans, merge) = stored(
            "SELECT memori_store('The user prefers dark mode', 'short_term', user_id => 'big')",
        );
        assert_eq!(id, short);
        assert!(
            hnsw(&plans) && merge.len() == 1 && merge[0].contains("dedup_sketch"),
            "{plans:#?}"
        );
        // The floor: a user of at most 1,000 memories is compared every one, whatever
        // memori.exact_search_rows says; no index pass.
        run("SET LOCAL memori.exact_search_rows = 0");
        synthetic("few", 30, "{}");
        let first =
            store("SELECT memori_store('User prefers dark mode', 'long_term', user_id => 'few')");
        let (id, plans, merge) = stored(
            "SELECT memori_store('The user prefers dark mode', 'long_term', user_id => 'few')",
        );
        assert_eq!(id, first);
        assert!(!hnsw(&plans) && merge.len() == 1, "{plans:#?}");
        // A conversation's memories: every one compared, at any size; no index pass.
        let conv = one::<Uuid>("SELECT memori_conversation_create('c', user_id => 'big')");
        run(&format!(
            "UPDATE memori_memories SET conversation_id = '{conv}' WHERE user_id = 'big' AND memory_type = 'rule'"
        ));
        let (id, plans, merge) = stored(&format!(
            "SELECT memori_store('User prefers dark mode', 'rule', '{conv}', user_id => 'big')"
        ));
        assert_eq!(id, twin);
        assert!(
            !hnsw(&plans) && merge.len() == 1 && merge[0].contains("dedup_sketch"),
            "{plans:#?}"
        );
    }

    /// A batch compares each memory with fewer memories than a single store does (a first pass
    /// finds what each can reach), and must decide as the same memories stored one by one
    /// would: generated earlier memories (of two types) and batches drawn from clusters of
    /// near-duplicates, chains among them (2 reaches 1 and 4, 1 does not reach 4), at several
    /// thresholds, one so low that the pass gives up and compares in full; ids, merges and
    /// rows compared memory for memory.
    #[pg_test]
    fn a_batch_merges_as_the_same_memories_stored_one_by_one() {
        let pool = [
            "User prefers dark mode",
            "The user prefers dark mode",
            "User prefers dark mode.",
            "The user likes dark mode",
            "User prefers light mode",
            "User prefers JOINs instead of subqueries",
            "The user prefers JOINs instead of subqueries",
            "User prefers JOINs rather than subqueries",
            "The orders table has a customer_id column",
            "The orders table has a column customer_id",
            "Revenue is reported in euros",
            "Invoices are due in 30 days",
        ];
        let mut seed = 0x5eed_u64;
        let mut next = |below: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % below
        };
        let ids = |sql: String| first_column(&sql);
        // Ids in order of first appearance, so the two users' outcomes compare.
        let canonical = |seen: &[String]| {
            let mut order: Vec<&String> = Vec::new();
            seen.iter()
                .map(|id| match order.iter().position(|o| *o == id) {
                    Some(p) => p,
                    None => {
                        order.push(id);
                        order.len() - 1
                    }
                })
                .collect::<Vec<_>>()
        };
        let mut merged = 0;
        for trial in 0..12 {
            let threshold = [0.95, 0.9, 0.97, 0.95, 0.0, 0.95][trial % 6];
            run(&format!("SET LOCAL memori.dedup_threshold = {threshold}"));
            run("DELETE FROM memori_memories WHERE user_id IN ('one_by_one', 'batched')");
            let mut before: Vec<(&str, &str)> = (0..next(4))
                .map(|_| (pool[next(pool.len())], ["rule", "long_term"][next(2)]))
                .collect();
            let size = if threshold == 0.0 { 30 } else { 2 + next(11) };
            let mut batch: Vec<&str> = (0..size).map(|_| pool[next(pool.len())]).collect();
            if trial % 2 == 0 && !before.is_empty() {
                // The batch holds the archived memory's text: it must merge into it.
                before[0].1 = "rule";
                batch.push(before[0].0);
            }
            let mut outcomes = Vec::new();
            for user in ["one_by_one", "batched"] {
                let mut seen: Vec<String> = before
                    .iter()
                    .map(|(text, kind)| {
                        one::<Uuid>(&format!(
                            "SELECT memori_store('{text}', '{kind}', user_id => '{user}')"
                        ))
                        .to_string()
                    })
                    .collect();
                // Earlier memories the check must see (archived: merging un-archives it) and
                // must not (expired), the same for both users.
                let first =
                    format!("(SELECT min(id) FROM memori_memories WHERE user_id = '{user}')");
                if trial % 2 == 0 {
                    run(&format!(
                        "UPDATE memori_memories SET is_archived = true WHERE id = {first}"
                    ));
                } else if trial % 3 == 1 {
                    run(&format!(
                        "UPDATE memori_memories SET expires_at = now() - interval '1 day' WHERE id = {first}"
                    ));
                }
                if user == "one_by_one" {
                    for text in &batch {
                        seen.extend(ids(format!(
                            "SELECT memori_store('{text}', 'rule', user_id => '{user}')::text"
                        )));
                    }
                } else {
                    let array = batch.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>();
                    seen.extend(ids(format!(
                        "SELECT id::text FROM memori_store_batch(ARRAY[{}], 'rule', user_id => '{user}') id",
                        array.join(", ")
                    )));
                }
                // The rows, by the canonical number of their id.
                let order = canonical(&seen);
                let rows = ids(format!(
                    "SELECT memory_id || '|' || content || '|' || memory_type || '|' || access_count
                            || '|' || is_archived || '|' || coalesce((expires_at < now())::text, '-')
                       FROM memori_memories WHERE user_id = '{user}' ORDER BY id"
                ));
                let mut rows: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        let (id, rest) = r.split_once('|').unwrap();
                        let n = seen.iter().position(|s| s == id).map(|p| order[p]);
                        format!("{n:?}|{rest}")
                    })
                    .collect();
                rows.sort();
                outcomes.push((order, rows));
            }
            assert_eq!(
                outcomes[0], outcomes[1],
                "trial {trial} (threshold {threshold}): before {before:?}, batch {batch:?}"
            );
            merged += outcomes[0].0.len() - outcomes[0].1.len();
        }
        assert!(merged > 20, "the trials merge ({merged} merges)");
    }

    #[pg_test]
    fn store_batch_keeps_order_and_batches_requests() {
        let s = mock_embeddings(16);
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

    /// The batch's first pass slices its vectors out of one array and casts them as the width's
    /// index does: halfvec above 2,000 dimensions. A repeated text merges, at 3,000 as at 16.
    #[pg_test]
    fn a_wide_batch_merges_its_repeated_texts() {
        let _s = mock_embeddings(3000);
        let first = store("SELECT memori_store('zero', 'rule')");
        // The batch's pass holds the batch in work_mem for its statement only.
        run("SET LOCAL work_mem = '64kB'");
        let ids = first_column(
            "SELECT id::text FROM memori_store_batch(ARRAY['one', 'two', 'one', 'zero', 'two'], 'rule') id",
        );
        assert_eq!(one::<String>("SELECT current_setting('work_mem')"), "64kB");
        assert_eq!(ids.len(), 5);
        assert!(ids[0] != ids[1] && ids[0] == ids[2] && ids[1] == ids[4]);
        assert_eq!(
            ids[3],
            first.to_string(),
            "merged into the memory stored before"
        );
        assert_eq!(count("embedding_dims = 3000"), 3);
    }

    /// The scans of memori_memories this transaction started so far (index and sequential; a
    /// plan combining two indexes counts two): what a store's comparisons cost, in units that do
    /// not depend on the machine's speed.
    fn scans() -> i64 {
        one::<i64>(
            "SELECT (seq_scan + idx_scan)::bigint FROM pg_stat_xact_user_tables
              WHERE relid = 'memori_memories'::regclass",
        )
    }

    /// When the batch's pass shows that no text reaches an earlier memory or an earlier text,
    /// each goes straight to the INSERT: the user's memories are read once for the whole batch
    /// (the pass), where storing the same texts one by one reads them once per text. Measured
    /// against that: the whole batch (the pass) starts no more scans than one full comparison,
    /// so a single text sent to the full comparison fails it.
    #[pg_test]
    fn a_batch_of_new_texts_reads_the_users_memories_once() {
        let _s = mock_embeddings(64);
        run("SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'earlier ' || g FROM generate_series(1, 20) g), 'rule')");
        let before = scans();
        run("SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'batched ' || g FROM generate_series(1, 30) g), 'rule')");
        let batched = scans() - before;
        let before = scans();
        for g in 1..=30 {
            run(&format!("SELECT memori_store('single {g}', 'rule')"));
        }
        let single = scans() - before;
        assert_eq!(count("true"), 80, "no text merged");
        assert!(single >= 30, "one read per single store ({single})");
        let per_comparison = single as f64 / 30.0;
        assert!(
            (batched as f64) <= per_comparison,
            "a batch of 30 started {batched} scans; one full comparison starts {per_comparison}"
        );
    }

    /// A batch with an event time whose last text repeats its first: the repeat is compared
    /// only with the memory the batch wrote for it (the narrowed comparison, whose statement
    /// carries the event time's parameter beside the ids) and merges into it; the other texts
    /// go straight to the INSERT. So the batch starts the pass's scans and that comparison's,
    /// fewer than three full comparisons (one per text).
    #[pg_test]
    fn a_dated_batch_merges_a_repeat_through_the_narrowed_comparison() {
        let _s = mock_embeddings(16);
        run("SELECT memori_store('earlier', 'rule')");
        let before = scans();
        let ids = first_column(
            "SELECT id::text FROM memori_store_batch(ARRAY['one', 'two', 'one'], 'rule',
                                                     event_at => '2024-05-01 10:00+00') id",
        );
        let batched = scans() - before;
        let before = scans();
        run("SELECT memori_store('single', 'rule')");
        let single = scans() - before;
        assert!(single >= 1, "a single store compares ({single})");
        assert!(
            batched < 3 * single,
            "the batch started {batched} scans; one full comparison starts {single}"
        );
        assert_eq!(ids.len(), 3);
        assert!(ids[0] == ids[2] && ids[0] != ids[1], "{ids:?}");
        assert_eq!(count("true"), 4);
        assert_eq!(
            count("event_at = '2024-05-01 10:00+00' AND content IN ('one', 'two')"),
            2
        );
        assert_eq!(
            count("event_at IS NULL AND content IN ('earlier', 'single')"),
            2
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
            first_column("SELECT content FROM memori_search('common table expressions')").len(),
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

    /// Pseudo-random vectors for the sketch's tests: `count` of `dims` coordinates, each the sum
    /// of three uniforms (roughly normal), from `seed`.
    fn vectors(seed: u64, count: usize, dims: usize) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        (0..count)
            .map(|_| {
                (0..dims)
                    .map(|_| (uniform() + uniform() + uniform()) as f32)
                    .collect()
            })
            .collect()
    }

    fn literal(v: &[f32]) -> String {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:e}")).collect();
        format!("'[{}]'", parts.join(","))
    }

    /// The near-duplicate check reads only the memories whose sketch does not rule them out:
    /// the inner product of the sketches as stored (halfvec) must bound the similarity (as the
    /// check computes it: halfvec past 2,000 dimensions) from above, within the margin's share
    /// for the halfvec rounding and half the rest, for every pair; at 64 dimensions or fewer it
    /// is the similarity, up to that rounding. Pairs of every kind: random; close
    /// (similarities from 0.6 to 0.9999); differing only past the 64th coordinate; alike only
    /// there; and long in the first 64 coordinates. And it must rule strangers out: no pair of
    /// unrelated 384-dimension vectors reaches a bound of 0.95.
    #[pg_test]
    fn the_dedup_sketch_bounds_the_similarity_from_above() {
        for (k, dims) in [3usize, 64, 65, 384, 1536, 2500].into_iter().enumerate() {
            let base = vectors(k as u64 + 1, 12, dims);
            let noise = vectors(k as u64 + 100, 12, dims);
            let mut set: Vec<Vec<f32>> = base.clone();
            for (i, (b, n)) in base.iter().zip(&noise).enumerate() {
                let eps = [0.01f32, 0.05, 0.1, 0.2, 0.4, 0.8][i % 6];
                // Close to b; differing only in the tail; alike only in the tail; head-heavy.
                set.push(b.iter().zip(n).map(|(x, y)| x + eps * y).collect());
                set.push(
                    b.iter()
                        .zip(n)
                        .enumerate()
                        .map(|(j, (x, y))| if j < 64 { *x } else { x + eps * y })
                        .collect(),
                );
                set.push(
                    b.iter()
                        .zip(n)
                        .enumerate()
                        .map(|(j, (x, y))| if j < 64 { *y } else { x + eps * y })
                        .collect(),
                );
                set.push(
                    b.iter()
                        .enumerate()
                        .map(|(j, x)| if j < 64 { x * 20.0 } else { *x })
                        .collect(),
                );
            }
            run("DROP TABLE IF EXISTS sketch_pairs");
            run("CREATE TEMP TABLE sketch_pairs (i int, v vector)");
            for (i, v) in set.iter().enumerate() {
                run(&format!(
                    "INSERT INTO sketch_pairs VALUES ({i}, {})",
                    literal(v)
                ));
            }
            let cast = crate::base::vector::indexed_cast(dims);
            // The largest excess of the similarity over the bound, and at 64 or fewer the
            // largest gap either way; the highest similarity compared (close pairs were).
            let (excess, gap, highest) = Spi::connect(|c| {
                let row = c
                    .select(
                        &format!(
                            "SELECT max(s - b), max(abs(s - b)), max(s)
                               FROM (SELECT 1 - (a.v::{cast} <=> o.v::{cast}) AS s,
                                            -(memori_dedup_sketch(a.v)::halfvec <#> memori_dedup_sketch(o.v)::halfvec) AS b
                                       FROM sketch_pairs a, sketch_pairs o WHERE a.i < o.i) p"
                        ),
                        None,
                        &[],
                    )?
                    .first();
                Ok::<_, pgrx::spi::Error>((
                    row.get::<f64>(1)?.unwrap(),
                    row.get::<f64>(2)?.unwrap(),
                    row.get::<f64>(3)?.unwrap(),
                ))
            })
            .unwrap();
            // Within the margin's share for the halfvec rounding (2^-10) and half the rest.
            let margin = crate::memories::sketch::margin(dims);
            let rounding = 2f64.powi(-10);
            assert!(
                excess < rounding + (margin - rounding) / 2.0,
                "{dims}: similarity over the bound by {excess}"
            );
            if dims <= 64 {
                assert!(
                    gap < rounding,
                    "{dims}: the bound is the similarity, off by {gap}"
                );
            }
            assert!(highest > 0.999, "{dims}: no close pair ({highest})");
        }
        run("DROP TABLE sketch_pairs");
        // The sketch, read from the vector's bytes in place, is pgvector's own arithmetic: its
        // l2_normalize's first h coordinates, then the rest's vector_norm (rounded up, never
        // down), h being the width the rule for reading sketches first assumes.
        for (k, dims) in [3usize, 64, 65, 384, 385, 768, 1536, 3072]
            .into_iter()
            .enumerate()
        {
            let h = crate::memories::sketch::head(dims).min(dims);
            let v = literal(&vectors(k as u64 + 500, 1, dims)[0]);
            let rest = if dims > h {
                format!("vector_norm(subvector(u, {h} + 1, {dims} - {h}))")
            } else {
                "0".into()
            };
            let (width, head_off, rest_off) = Spi::connect(|c| {
                let row = c
                    .select(
                        &format!(
                            "SELECT cardinality(s), (SELECT max(abs(x - y)) FROM unnest(s[1:{h}], subvector(u, 1, {h})::real[]) t(x, y)),
                                    s[{h} + 1] - {rest}
                               FROM (SELECT memori_dedup_sketch(v)::real[] AS s, l2_normalize(v) AS u
                                       FROM (SELECT {v}::vector AS v) i) o"
                        ),
                        None,
                        &[],
                    )?
                    .first();
                Ok::<_, pgrx::spi::Error>((
                    row.get::<i32>(1)?.unwrap(),
                    row.get::<f32>(2)?.unwrap(),
                    row.get::<f64>(3)?.unwrap(),
                ))
            })
            .unwrap();
            assert_eq!(width as usize, h + 1, "{dims} dimensions");
            assert!(head_off <= 1e-7, "{dims} dimensions: the head, {head_off}");
            assert!(
                (0.0..1e-6).contains(&rest_off),
                "{dims} dimensions: the rest, {rest_off}"
            );
        }
        // Every vector pgvector takes has a sketch: the widest, a zero vector, the largest and
        // smallest coordinates; and any user and type a key.
        for (v, width) in [
            ("array_fill(0.5::real, ARRAY[16000])::vector", 257),
            ("array_fill(0::real, ARRAY[384])::vector", 65),
            ("array_fill(3e38::real, ARRAY[1536])::vector", 257),
            ("array_fill(1e-45::real, ARRAY[1536])::vector", 257),
            ("'[5]'::vector", 2),
        ] {
            let got = one::<i32>(&format!("SELECT vector_dims(memori_dedup_sketch({v}))"));
            assert_eq!(got, width, "{v}");
        }
        assert_ne!(
            one::<i64>(
                "SELECT memori_dedup_scope(repeat('u', 1000000), repeat('t', 1000000), 384)"
            ),
            one::<i64>(
                "SELECT memori_dedup_scope(repeat('u', 1000000), repeat('t', 1000000), 385)"
            )
        );
        // Bytes that are not a vector's (through a cast a superuser made) are refused with
        // 22000, never read past their end.
        run("CREATE CAST (bytea AS vector) WITHOUT FUNCTION");
        for bytes in ["\\x0300000000", "\\x0000", "\\x01000000000080bf00"] {
            let e = sql_error(&format!(
                "SELECT memori_dedup_sketch('{bytes}'::bytea::vector)"
            ));
            assert_eq!(e.sqlstate, state("22000"), "{bytes}: {e:?}");
            assert!(e.message.contains("not a well-formed vector"), "{e:?}");
            assert!(
                e.hint
                    .as_deref()
                    .is_some_and(|h| h.contains("CALL memori_reembed()")),
                "{e:?}"
            );
        }
        run("DROP CAST (bytea AS vector)");
        // Strangers: 40 random unit vectors of 384 dimensions, every pair.
        run("SELECT setseed(0.23)");
        run("CREATE TEMP TABLE strangers AS SELECT g, (SELECT l2_normalize(array_agg(random() - 0.5)::real[]::vector) FROM generate_series(1, 384) WHERE g > 0) AS v FROM generate_series(1, 40) g");
        let reached = one::<i64>(&format!(
            "SELECT count(*) FROM strangers a, strangers b
              WHERE a.g < b.g AND -(memori_dedup_sketch(a.v)::halfvec <#> memori_dedup_sketch(b.v)::halfvec) >= 0.95 - {}",
            crate::memories::sketch::margin(384)
        ));
        assert_eq!(
            reached, 0,
            "pairs of strangers the sketch does not rule out"
        );
    }

    /// The near-duplicate check through the sketches, for a user of 1,000 memories (another
    /// has 6,000): a memory crafted at a similarity of 0.9505 to the new one is merged into at
    /// the default threshold of 0.95, and one at 0.9495 is not, whether the two differ past the
    /// 64th coordinate (the sketch's bound is loose there) or within the first 64 (where it is
    /// tight). The statement reads the user's memories from idx_memori_mem_dedup alone (an
    /// index-only scan), and of them only the crafted one is read whole.
    #[pg_test]
    fn a_near_duplicate_is_found_through_the_sketches() {
        crate::tests::support::analyzes();
        let text = "User prefers dark mode";
        let e = one::<Vec<f32>>(&format!("SELECT memori_embed('{text}')::real[]"));
        let dims = e.len();
        let unit = |v: Vec<f32>| {
            let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            v.into_iter()
                .map(|x| (x as f64 / n) as f32)
                .collect::<Vec<f32>>()
        };
        let e = unit(e);
        let mut outcome = Vec::new();
        synthetic("others", 6000, "{}");
        for (k, (similarity, head)) in [
            (0.9505f64, false),
            (0.9495, false),
            (0.9505, true),
            (0.9495, true),
        ]
        .into_iter()
        .enumerate()
        {
            // A unit direction orthogonal to e, in the tail only or the head only.
            let r = vectors(k as u64 + 7, 1, dims).remove(0);
            let r: Vec<f32> = r
                .iter()
                .enumerate()
                .map(|(j, x)| if (j < 64) == head { *x } else { 0.0 })
                .collect();
            let dot: f64 = r.iter().zip(&e).map(|(a, b)| *a as f64 * *b as f64).sum();
            let d = unit(
                r.iter()
                    .zip(&e)
                    .map(|(a, b)| (*a as f64 - dot * *b as f64) as f32)
                    .collect(),
            );
            let s = (1.0 - similarity * similarity).sqrt();
            let w: Vec<f32> = e
                .iter()
                .zip(&d)
                .map(|(a, b)| (similarity * *a as f64 + s * *b as f64) as f32)
                .collect();
            let user = format!("crafted{k}");
            synthetic(&user, 1000, "{}");
            run(&format!(
                "UPDATE memori_memories SET memory_type = 'rule' WHERE user_id = '{user}'"
            ));
            let crafted = one::<Uuid>(&format!(
                "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model)
                 VALUES ('{user}', 'crafted', 'rule', {}, 'local/all-MiniLM-L6-v2') RETURNING memory_id",
                literal(&w)
            ));
            assert!(
                (one::<f64>(&format!(
                    "SELECT 1 - (embedding::vector({dims}) <=> memori_embed('{text}')::vector({dims})) FROM memori_memories WHERE memory_id = '{crafted}'"
                )) - similarity)
                    .abs()
                    < 2e-5
            );
            // The planner's view after a vacuum (which cannot run in a test's transaction): the
            // pages all visible, so that an index-only scan reads no rows.
            run("ANALYZE memori_memories");
            run("UPDATE pg_class SET relallvisible = relpages WHERE oid = 'memori_memories'::regclass");
            crate::base::spi::PLANS.with(|p| *p.borrow_mut() = Some(Vec::new()));
            let id = store(&format!(
                "SELECT memori_store('{text}', 'rule', user_id => '{user}')"
            ));
            let plans = crate::base::spi::PLANS
                .with(|p| p.borrow_mut().take())
                .unwrap();
            let check: Vec<&String> = plans
                .iter()
                .filter(|p| p.contains("Update on memori_memories"))
                .collect();
            assert_eq!(check.len(), 1, "{plans:#?}");
            assert!(
                check[0].contains("Index Only Scan using idx_memori_mem_dedup"),
                "{}",
                check[0]
            );
            outcome.push(id == crafted);
            // The sketches rule out every memory but the crafted one (the 1,000 others are
            // random) and, when it was not merged into, the new one: the statement's
            // prefilter, run on its own with write()'s parameters.
            let prefilter = crate::memories::sketch::prefilter(dims).unwrap();
            let none = || Option::<String>::None.into();
            let mut args: Vec<pgrx::datum::DatumWithOid> = vec![
                user.as_str().into(),
                none(),
                "rule".into(),
                none(),
                e.clone().into(),
            ];
            args.extend((6..=12).map(|_| none()));
            args.push(0.95f64.into());
            let read = Spi::connect(|c| {
                c.select(
                    &format!(
                        "SELECT count(*) FROM memori_memories m
                          WHERE m.user_id OPERATOR(pg_catalog.=) $1::text {prefilter}"
                    ),
                    None,
                    &args,
                )?
                .first()
                .get::<i64>(1)
            })
            .unwrap();
            let expected = if id == crafted { 1 } else { 2 };
            assert_eq!(
                read,
                Some(expected),
                "{user}: memories the sketches did not rule out"
            );
            // The plan the store keeps is a generic one (the captured plan above is made for
            // the run's values): it too reads the sketches by an index-only scan.
            let types =
                "text, text, text, text, real[], text, text, text, text, text, text, text, float8";
            run(&format!(
                "PREPARE sketched({types}) AS SELECT count(*) FROM memori_memories m
                  WHERE m.user_id OPERATOR(pg_catalog.=) $1::text {prefilter}"
            ));
            run("SET LOCAL plan_cache_mode = force_generic_plan");
            let generic = first_column(&format!(
                "EXPLAIN (COSTS OFF) EXECUTE sketched('{user}', NULL, 'rule', NULL, {}::vector::real[], NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0.95)",
                literal(&e)
            ))
            .join("\n");
            run("RESET plan_cache_mode");
            run("DEALLOCATE sketched");
            assert!(
                generic.contains("Index Only Scan using idx_memori_mem_dedup")
                    && generic.contains("$1"),
                "{generic}"
            );
        }
        assert_eq!(outcome, [true, false, true, false]);
    }

    /// A memory whose similarity pgvector cannot give (a zero vector, written directly: memori
    /// refuses them since 0.5.0) is nobody's near-duplicate, through the sketches (0.95) or
    /// with every memory read whole (0.9): NaN is at least any threshold in SQL, and sorts
    /// first.
    #[pg_test]
    fn a_memory_without_a_similarity_is_nobody_s_near_duplicate() {
        let zero =
            store("SELECT memori_store('a memory made degenerate', 'rule', user_id => 'nan')");
        run(&format!(
            "UPDATE memori_memories SET embedding = array_fill(0::real, ARRAY[vector_dims(embedding)])::vector
              WHERE memory_id = '{zero}'"
        ));
        for threshold in ["0.95", "0.9"] {
            run(&format!("SET LOCAL memori.dedup_threshold = {threshold}"));
            let id =
                store("SELECT memori_store('a memory made degenerate', 'rule', user_id => 'nan')");
            assert_ne!(id, zero, "at {threshold}");
        }
        assert_eq!(count("user_id = 'nan'"), 2);
    }
}
