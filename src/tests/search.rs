//! memori_search: the seed's examples, filters, ranking, access counting, exact and HNSW paths,
//! many users.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{count, first_column, synthetic};
    use crate::tests::support::{one, run, sql_error, state, try_sql};
    use pgrx::datum::Uuid;
    use pgrx::prelude::*;

    fn store(sql: &str) -> Uuid {
        one::<Uuid>(sql)
    }

    /// Seven memories of `user` about joins, orders and other things, in one batch.
    fn store_joins_and_orders(user: &str) {
        run(&format!(
            "SELECT memori_store_batch(ARRAY['User prefers JOINs over subqueries',
                 'orders.customer_id references customers.id', 'The weekly report runs on Monday',
                 'Invoices are stored in cents', 'Use explicit JOIN syntax in reports',
                 'customer_id is indexed on orders', 'Lisbon is sunny in June'],
                 'long_term', user_id => '{user}')"
        ));
    }

    /// A vector-mode search of k for `user` (None: the caller's memori user), no filters.
    fn vector_query(k: i32, user: Option<&str>) -> crate::memories::search::Query {
        crate::memories::search::query(
            Some(k),
            None,
            None,
            None,
            None,
            None,
            user,
            Some("vector"),
            None,
            (None, None),
        )
        .unwrap()
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

    /// memori's statements inline memori_text_document's body (`text::document_sql`, so that it
    /// is planned once): stored documents and a question's terms are what the SQL function
    /// gives, for identifiers, dotted runs, quotes, non-ASCII words and empty text, under two
    /// configurations; and memori_store, memori_store_batch and memori_update write exactly it.
    #[pg_test]
    fn the_inlined_text_document_is_memori_text_document() {
        let texts = vec![
            Some("What does orders.customer_id reference?".to_string()),
            Some("db.schema.t_a.col_b and a.b.c.d.e.f.g.h.i.j".to_string()),
            Some("Ünïcode wörds, snake_case_name and 'quoted' \\ \"text\"".to_string()),
            Some(String::new()),
            Some("the a of".to_string()),
        ];
        for config in ["english", "simple"] {
            let sql = format!(
                "SELECT bool_and({} = memori_text_document(t, $1::regconfig)) FROM unnest($2::text[]) t",
                crate::base::text::document_sql("t", "$1::text::regconfig")
            );
            let same = Spi::get_one_with_args::<bool>(&sql, &[config.into(), texts.clone().into()])
                .unwrap()
                .unwrap();
            assert!(same, "{config}");
        }
        let id = one::<Uuid>(
            "SELECT memori_store('Orders.customer_id references customers.id', 'rule')",
        );
        run(&format!(
            "SELECT memori_update('{id}', content => 'invoices.total_cents is in cents')"
        ));
        run("SELECT memori_store_batch(ARRAY['a.b_c one', 'two x_y.z'], 'long_term')");
        assert_eq!(
            count("content_tsv IS DISTINCT FROM memori_text_document(content, 'english')"),
            0
        );
        assert_eq!(count("true"), 3);
    }
    #[pg_test]
    fn search_finds_the_seeds_examples_for_this_user_only() {
        let conv = seed_memories();
        let hits = first_column(&format!(
            "SELECT content FROM memori_search('SQL query preferences', 5, '{conv}')"
        ));
        assert_eq!(
            hits,
            [
                "User prefers using table aliases in SQL queries",
                "The customers table has columns: id, name, email, created_at"
            ]
        );
        let hits = first_column(
            "SELECT content FROM memori_search('How does the user prefer SQL queries?', k => 2)",
        );
        assert_eq!(hits.len(), 2);
        assert!(
            hits.contains(&"User prefers using JOINs instead of subqueries".to_string()),
            "{hits:?}"
        );
        // The other user's memory never shows.
        let all =
            first_column("SELECT content FROM memori_search('JOINs over subqueries', k => 100)");
        assert_eq!(all.len(), 4);
        assert!(!all.contains(&"User prefers JOINs over subqueries".to_string()));
        let theirs =
            first_column("SELECT content FROM memori_search('JOINs', user_id => 'other_user')");
        assert_eq!(theirs, ["User prefers JOINs over subqueries"]);
    }

    #[pg_test]
    fn search_filters_by_type_tags_archive_expiry_and_similarity() {
        seed_memories();
        let q = |args: &str| {
            first_column(&format!(
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
        let sims = first_column(
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
        let hits = first_column(
            "SELECT content FROM memori_search('Does the user like JOINs or subqueries?')",
        );
        assert_eq!(hits[0], "User prefers JOINs instead of subqueries");
        // score is ordered, and blends: equal similarity, higher importance first.
        let scores = first_column("SELECT score::text FROM memori_search('anything at all')");
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
            first_column("SELECT content FROM memori_search('SQL', k => 2)").len(),
            2
        );
        assert_eq!(count("access_count = 1"), 2);
    }

    #[pg_test]
    fn search_with_a_selective_filter_still_returns_k_exact_results() {
        crate::tests::support::analyzes();
        // One user with many memories, few tagged 'rare': whatever plan the planner picks
        // (HNSW with iterative scans, or the GIN index and an exact sort), k come back, and
        // they are the exact k nearest.
        synthetic("crowd", 3000, "{common}");
        synthetic("crowd", 25, "{rare}");
        run("ANALYZE memori_memories");
        run("SET LOCAL memori.user_id = 'crowd'");
        let got = first_column("SELECT content FROM memori_search('database tuning', k => 10, tags => '{rare}') ORDER BY content");
        let exact = first_column("SELECT content FROM (SELECT content FROM memori_memories WHERE user_id = 'crowd' AND context_tags && '{rare}'
              ORDER BY embedding <=> memori_embed('database tuning') LIMIT 10) t ORDER BY content",
        );
        assert_eq!(got.len(), 10);
        assert_eq!(got, exact);
    }

    #[pg_test]
    fn many_users_each_get_their_own_k_nearest() {
        crate::tests::support::analyzes();
        for u in 0..60 {
            synthetic(&format!("user{u}"), 50, "{}");
        }
        run("ANALYZE memori_memories");
        assert_eq!(count("true"), 3000);
        for u in [0, 17, 59] {
            run(&format!("SET LOCAL memori.user_id = 'user{u}'"));
            let got =
                first_column("SELECT content FROM memori_search('favourite SQL style', k => 10)");
            let exact = first_column(&format!(
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
        crate::tests::support::analyzes();
        // 3,000: above the 1,000 set below, under the default (each costs a few ms to insert).
        synthetic("big", 3000, "{}");
        run("ANALYZE memori_memories");
        run("SET LOCAL memori.user_id = 'big'");
        // Below memori.exact_search_rows (20,000 by default): every memory compared.
        let q = vector_query(10, None);
        let label = crate::providers::embedding::Target::current().label();
        let (_, batch) = crate::providers::embedding::embed_texts(None, &["query"]).unwrap();
        let (hits, path) = crate::memories::search::vector_candidates(
            &q,
            crate::memories::search::user_rows("big", crate::memories::search::MAX_COUNTED)
                .unwrap(),
            &label,
            &batch.vectors[0],
            40,
        )
        .unwrap();
        assert_eq!(
            (hits.len(), path),
            (40, crate::memories::search::Path::Exact)
        );
        run("SET LOCAL memori.exact_search_rows = 1000");
        let (hits, path) = crate::memories::search::vector_candidates(
            &q,
            crate::memories::search::user_rows("big", crate::memories::search::MAX_COUNTED)
                .unwrap(),
            &label,
            &batch.vectors[0],
            40,
        )
        .unwrap();
        assert_eq!(
            (hits.len(), path),
            (40, crate::memories::search::Path::Index)
        );
        let sql = crate::memories::search::vector_sql(&q, 384, false).unwrap();
        // The scope's arguments, then the model's label, the query vector, the limit, the
        // recency weight and half-life.
        let mut args = crate::memories::search::scope_args(&q);
        args.push(label.clone().into());
        args.push(batch.vectors[0].clone().into());
        args.push(40i64.into());
        args.push(0.1f64.into());
        args.push(30f64.into());
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
        let p = plan(&crate::memories::search::vector_sql(&q, 384, true).unwrap());
        assert!(!p.contains("idx_memori_mem_embedding_384"), "{p}");
        assert_eq!(
            first_column("SELECT content FROM memori_search('query')").len(),
            10
        );
        // Vector mode counts the user only one past the threshold (a count bounded whatever the
        // user's size), and takes the path the whole count would choose, on either side of it.
        use crate::memories::search::{user_rows, MAX_COUNTED};
        assert_eq!(
            (
                user_rows("big", 1001).unwrap(),
                user_rows("big", MAX_COUNTED).unwrap()
            ),
            (1001, 3000)
        );
        let path = || {
            first_column(
                "SELECT DISTINCT explain->>'vector_path'
                   FROM memori_search('query', mode => 'vector', explain => true)",
            )
        };
        assert_eq!(path(), ["index"]);
        run("SET LOCAL memori.exact_search_rows = 2999");
        assert_eq!(path(), ["index"]);
        run("SET LOCAL memori.exact_search_rows = 3000");
        assert_eq!(path(), ["exact"]);
    }

    /// Hybrid mode over a scope searched exactly reads the scope once and takes both candidate
    /// lists from that read (`hybrid_exact`); it returns what ranking its two candidate lists
    /// apart returns (`find_apart`: `vector_candidates`, exact, `text_candidates` over
    /// `text_terms` with the same model, `rank`): the same memories, read whole, in the same
    /// order, with the same ranks in each list, similarities, text scores and scores, to the last bit (with the
    /// question's terms summed in the order they are named instead of a tsvector's, text scores
    /// differ by one unit in the last place and this fails). So does vector mode
    /// (`vector_exact` against `vector_candidates` and `rank`). Over pools of 40 and 1000,
    /// k from 1 to 40, with and without min_similarity, and with importance and recency
    /// weights that reorder the candidates. Memories outside the scope are there to be left
    /// out: another user's, another model's, an archived one, another type, and memories
    /// without any of the question's words. Two documents written by hand match as `@@`
    /// matches them: one with weights, one stripped of its positions.
    #[pg_test]
    fn hybrid_over_an_exact_scope_is_both_rankings_apart() {
        run("SELECT setseed(0.23)");
        use crate::memories::search::{
            find_apart, hybrid_exact, query, user_rows, vector_exact, Found, MAX_COUNTED,
        };
        // Texts of 3 to 10 words from a 12-word vocabulary (with an identifier), so that many
        // share words and scores tie; documents as memori writes them. Ids given, so that the
        // data is the same whatever other tests took from the sequence.
        let insert = |first: i64, user: &str, n: i32, model: &str, kind: &str| {
            run(&format!(
                "INSERT INTO memori_memories (id, user_id, content, memory_type, embedding, embedding_model)
                 SELECT {first} + g, '{user}', (SELECT string_agg((ARRAY['orders.customer_id', 'prefers', 'joins',
                                         'weather', 'lisbon', 'invoices', 'cents', 'report', 'weekly',
                                         'alias', 'tables', 'sunny'])[1 + (g * 7 + i * i * 3 + i * g) % 12], ' ')
                                     FROM generate_series(1, 3 + g % 8) i),
                        '{kind}',
                        (SELECT l2_normalize(array_agg(random() - 0.5)::real[]::vector)
                           FROM generate_series(1, 384) WHERE g > 0),
                        '{model}'
                   FROM generate_series(1, {n}) g"
            ));
        };
        insert(9_000_000, "h", 150, "local/all-MiniLM-L6-v2", "long_term");
        insert(9_001_000, "h", 20, "local/all-MiniLM-L6-v2", "short_term");
        insert(9_002_000, "h", 20, "openai/other", "long_term");
        insert(
            9_003_000,
            "other",
            50,
            "local/all-MiniLM-L6-v2",
            "long_term",
        );
        run("INSERT INTO memori_memories (id, user_id, content, memory_type, embedding, embedding_model)
             SELECT 9004000 + g, 'h', 'nothing in common ' || g, 'long_term',
                    (SELECT l2_normalize(array_agg(random() - 0.5)::real[]::vector) FROM generate_series(1, 384) WHERE g > 0),
                    'local/all-MiniLM-L6-v2'
               FROM generate_series(1, 30) g");
        run("UPDATE memori_memories SET content_tsv = memori_text_document(content, 'english')");
        run("UPDATE memori_memories SET is_archived = true WHERE user_id = 'h' AND id % 17 = 0");
        run(
            "UPDATE memori_memories SET content_tsv = setweight(content_tsv, 'A')
              WHERE user_id = 'h' AND id % 17 = 3",
        );
        run("UPDATE memori_memories SET content_tsv = strip(content_tsv)
              WHERE user_id = 'h' AND id % 17 = 5");
        assert!(
            count("content_tsv OPERATOR(pg_catalog.@@) 'prefer'::tsquery AND user_id = 'h'") > 20
        );
        let label = "local/all-MiniLM-L6-v2";
        let vector: Vec<f32> = Spi::get_one::<Vec<f32>>(
            "SELECT array_agg(random() - 0.5)::real[] FROM generate_series(1, 384)",
        )
        .unwrap()
        .unwrap();
        // Importance and age that reorder the candidates when weighted.
        run(
            "UPDATE memori_memories SET importance_score = (id * 7 % 11) / 10.0,
                    updated_at = now() - (id * 13 % 29) * interval '1 day'",
        );
        let question = "Which tables does the user prefer for orders.customer_id reports?";
        // To the last bit: the statements compute as the ranking code does, in the same order.
        let round = |x: f64| x.to_bits();
        let key = |f: &[Found]| {
            f.iter()
                .map(|f| {
                    let r = &f.ranked;
                    (
                        (r.id, f.memory_id, f.content.clone()),
                        (r.vector_rank, r.text_rank),
                        (
                            round(r.similarity.unwrap()),
                            r.text_score.map(round),
                            round(r.score),
                        ),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut text_only = 0;
        for (types, k, limit, min, weights) in [
            (None, 10, 1000, None, "0, 0"),
            (None, 10, 40, None, "0, 0"),
            (None, 40, 40, None, "0.3, 0.4"),
            (None, 1, 40, None, "0.5, 0.5"),
            (Some("long_term"), 10, 40, Some(0.05), "0.2, 0.1"),
            (None, 25, 40, Some(-0.02), "0, 0.6"),
            // Weights small enough that the similarities (about 0.05 apart: random vectors)
            // still count.
            (None, 10, 40, None, "0.02, 0.01"),
            (None, 5, 1000, Some(0.0), "0.03, 0.02"),
        ] {
            let (wi, wr) = weights.split_once(", ").unwrap();
            run(&format!("SET memori.importance_weight = {wi}"));
            run(&format!("SET memori.recency_weight = {wr}"));
            for mode in ["hybrid", "vector"] {
                let q = query(
                    Some(k),
                    None,
                    types.map(|t: &str| vec![Some(t.to_string())]),
                    None,
                    min,
                    None,
                    Some("h"),
                    Some(mode),
                    None,
                    (None, None),
                )
                .unwrap();
                let n = user_rows("h", MAX_COUNTED).unwrap();
                let got = if mode == "hybrid" {
                    hybrid_exact(&q, n, label, &vector, question, limit).unwrap()
                } else {
                    vector_exact(&q, n, label, &vector, limit).unwrap()
                };
                let apart = find_apart(&q, n, Some((label, &vector)), question, limit)
                    .unwrap()
                    .found;
                let case =
                    format!("{mode} {types:?} k {k} pool {limit} min {min:?} weights {weights}");
                assert_eq!(got.len(), apart.len(), "{case}");
                assert!(!got.is_empty() && got.len() <= k as usize, "{case}");
                assert_eq!(key(&got), key(&apart), "{case}");
                text_only += got
                    .iter()
                    .filter(|f| f.ranked.vector_rank.is_none())
                    .count();
            }
        }
        // The text list brought in memories the nearest did not.
        assert!(text_only > 0);

        // Vector mode at its edges:
        let vector_mode = |k: i32, min: Option<f64>| {
            let q = query(
                Some(k),
                None,
                None,
                None,
                min,
                None,
                Some("h"),
                Some("vector"),
                None,
                (None, None),
            )
            .unwrap();
            let n = user_rows("h", MAX_COUNTED).unwrap();
            let got = vector_exact(&q, n, label, &vector, 40).unwrap();
            let apart = find_apart(&q, n, Some((label, &vector)), question, 40)
                .unwrap()
                .found;
            assert_eq!(key(&got), key(&apart), "k {k} min {min:?}");
            got
        };
        run("RESET memori.importance_weight");
        run("RESET memori.recency_weight");
        // - min_similarity equal to a similarity found: that memory is kept (>=);
        let fifth = vector_mode(10, None)[4].ranked.similarity.unwrap();
        let got = vector_mode(10, Some(fifth));
        assert!(got.iter().any(|f| f.ranked.similarity == Some(fifth)));
        // - ties: three copies of the nearest memory (embedding, importance, age), the same
        //   score: the id decides at the cut of k = 2.
        let nearest = vector_mode(1, None)[0].ranked.id;
        run(&format!(
            "INSERT INTO memori_memories (id, user_id, content, memory_type, embedding, embedding_model,
                                          importance_score, content_tsv)
             SELECT 9005000 + g, 'h', m.content, m.memory_type, m.embedding, m.embedding_model,
                    m.importance_score, m.content_tsv
               FROM generate_series(1, 3) g, memori_memories m WHERE m.user_id = 'h' AND m.id = {nearest}"
        ));
        run(&format!(
            "UPDATE memori_memories SET updated_at = (SELECT updated_at FROM memori_memories
                                                       WHERE user_id = 'h' AND id = {nearest})
              WHERE user_id = 'h' AND id > 9005000"
        ));
        let got = vector_mode(2, None);
        assert_eq!(got[0].ranked.score, got[1].ranked.score);
        assert_eq!((got[0].ranked.id, got[1].ranked.id), (nearest, 9_005_001));
        // - a recency weight so small that its product with the smallest recency (exp(-700),
        //   a memory 80 years old) rounds to 0: in SQL an underflow error (22003), unless the
        //   weight counts as 0 (`gucs::score_weights`).
        run("UPDATE memori_memories SET updated_at = '1900-01-01' WHERE user_id = 'h'");
        run("SET memori.recency_weight = 1e-20");
        vector_mode(10, None);
        run("RESET memori.recency_weight");
    }

    /// memori_term_mask says what membership in the document's lexemes says, bit by bit, over
    /// generated documents and term sets: words of 1 to 40 bytes (prefixes of one another,
    /// non-ASCII, quotes and backslashes), documents with positions, weights, none stripped,
    /// empty, short (1-byte header), long and compressed; term sets of 0 to 80 lexemes (bits past 64 set
    /// nothing). Documents stored in a table too, so that they are read as stored.
    #[pg_test]
    fn term_masks_agree_with_the_documents_lexemes() {
        run("SELECT setseed(0.61)");
        run("CREATE TEMP TABLE words AS
             SELECT w FROM pg_catalog.unnest(ARRAY['a', 'ab', 'abc', 'abd', 'b', 'order', 'orders',
                      'customerid', 'orderscustomerid', 'caf\u{e9}', '\u{e9}t\u{e9}', 'o''neil', 'back\\slash',
                      'zz', repeat('x', 40), repeat('x', 39), '\u{1f600}', 'id', 'user', 'prefer']) AS w
             UNION ALL SELECT 'w' || g FROM generate_series(1, 80) g");
        // 300 documents, each of 0 to 25 random words, in four forms.
        run("CREATE TEMP TABLE docs (id int, doc tsvector)");
        run("INSERT INTO docs
             SELECT g, CASE g % 4 WHEN 0 THEN d WHEN 1 THEN setweight(d, 'B')
                               WHEN 2 THEN strip(d) ELSE d || setweight(d, 'A') END
               FROM (SELECT g, coalesce(array_to_tsvector(ARRAY(
                        SELECT DISTINCT w FROM (SELECT w FROM words ORDER BY random()
                                                LIMIT (g * 7) % 26) x)), ''::tsvector)
                            || (SELECT to_tsvector('simple', coalesce(string_agg(w, ' '), ''))
                                  FROM (SELECT w FROM words ORDER BY random() LIMIT g % 3) y) AS d
                       FROM generate_series(1, 300) g) s");
        // One document over 2 kB, stored compressed: every word, and 100 long lexemes.
        run("INSERT INTO docs
             SELECT 0, array_to_tsvector(ARRAY(SELECT w FROM words
                                               UNION SELECT repeat('x', 200) || g FROM generate_series(1, 100) g))");
        assert!(one::<bool>(
            "SELECT pg_column_compression(doc) IS NOT NULL FROM docs WHERE id = 0"
        ));
        // 40 term sets of 0 to 80 lexemes.
        run("CREATE TEMP TABLE term_sets AS
             SELECT g AS id, coalesce(array_to_tsvector(ARRAY(
                      SELECT DISTINCT w FROM (SELECT w FROM words ORDER BY random() LIMIT (g * 13) % 81) x)),
                      ''::tsvector) AS terms
               FROM generate_series(1, 40) g");
        assert!(one::<i64>("SELECT count(*) FROM term_sets WHERE length(terms) > 64") > 0);
        assert!(one::<i64>("SELECT count(*) FROM docs WHERE length(doc) = 0") > 0);
        let differ = one::<i64>(
            "SELECT count(*) FROM docs d, term_sets t
              WHERE memori_term_mask(d.doc, t.terms) IS DISTINCT FROM
                    (SELECT coalesce(sum(1::int8 << (u.i - 1)::int4), 0)
                       FROM unnest(t.terms) WITH ORDINALITY AS u(lexeme, positions, weights, i)
                      WHERE u.i <= 64 AND u.lexeme = ANY (tsvector_to_array(d.doc)))",
        );
        assert_eq!(differ, 0);
        // Nothing matched is not everything matched: the test would see a constant.
        assert!(
            one::<i64>(
                "SELECT count(DISTINCT memori_term_mask(d.doc, t.terms)) FROM docs d, term_sets t"
            ) > 100
        );
        // NULL in, NULL out (strict); a document compared with itself holds all its lexemes.
        assert_eq!(
            Spi::get_one::<i64>("SELECT memori_term_mask(NULL, 'a'::tsvector)").unwrap(),
            None
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM docs WHERE length(doc) BETWEEN 1 AND 62
                          AND memori_term_mask(doc, doc) <> (1::int8 << length(doc)) - 1"
            ),
            0
        );
    }

    /// A search runs a small user's statements with generic plans without changing the
    /// caller's plan_cache_mode: through memori_search, and statement by statement (where no
    /// function's SET clause would put it back).
    #[pg_test]
    fn generic_plans_are_the_searchs_own_setting() {
        crate::tests::support::synthetic("gp", 30, "{}");
        run("SET LOCAL plan_cache_mode = force_custom_plan");
        let unchanged = |what: &str| {
            assert_eq!(
                one::<String>("SELECT current_setting('plan_cache_mode')"),
                "force_custom_plan",
                "{what}"
            )
        };
        for mode in ["vector", "hybrid", "text"] {
            run(&format!(
                "SELECT count(*) FROM memori_search('synthetic', k => 5, user_id => 'gp', mode => '{mode}')"
            ));
            unchanged(mode);
        }
        assert_eq!(
            crate::memories::search::user_rows("gp", crate::memories::search::MAX_COUNTED).unwrap(),
            30
        );
        unchanged("user_rows");
        assert!(!crate::memories::search::text_terms("synthetic memories")
            .unwrap()
            .is_empty());
        unchanged("text_terms");
    }

    /// A small user's generic plan reads its rows through the user index and is not compiled
    /// (JIT), whatever the caller set: the settings of `Planning::Generic` are those the plan
    /// is made with. The control: the same generic plan with the caller's settings (index and
    /// bitmap scans off, JIT for any cost) scans the whole table.
    #[pg_test]
    fn generic_plans_stay_on_the_user_index() {
        crate::tests::support::analyzes();
        crate::tests::support::synthetic("whale", 1000, "{}");
        crate::tests::support::synthetic("minnow", 20, "{}");
        run("ANALYZE memori_memories");
        let plan = || {
            run(
                "PREPARE scope(text) AS SELECT count(*) FROM memori_memories m
                  WHERE m.user_id = $1 AND NOT m.is_archived AND m.embedding_dims = 384",
            );
            let p = first_column("EXPLAIN (COSTS OFF) EXECUTE scope('minnow')").join("\n");
            run("DEALLOCATE scope");
            p
        };
        run("SET LOCAL plan_cache_mode = force_generic_plan");
        run("SET LOCAL enable_indexscan = off");
        run("SET LOCAL enable_bitmapscan = off");
        run("SET LOCAL jit_above_cost = 0");
        let control = plan();
        assert!(control.contains("Seq Scan on memori_memories"), "{control}");
        let (generic, jit) =
            crate::base::spi::planned(Some(crate::base::spi::Planning::Generic), || {
                (plan(), one::<String>("SELECT current_setting('jit')"))
            });
        assert!(generic.contains("idx_memori_mem_user"), "{generic}");
        assert!(
            !generic.contains("Seq Scan on memori_memories"),
            "{generic}"
        );
        assert_eq!(jit, "off");
        assert_eq!(
            one::<String>("SELECT current_setting('enable_indexscan')"),
            "off"
        );
    }

    /// Under row-level security (an app role acting for a user), a search over a scope searched
    /// exactly reads the user's rows through the user index, then its k best whole where it
    /// found them (a TID scan: `=` on tid is leakproof, so the policy lets it through), and a
    /// row that has moved since by key (the primary key, user and id: `=` on int8 is leakproof
    /// too), every statement under the policy, and no plan reads the whole table. The rows are
    /// those the DBA finds. (The test's table has many users of a few memories: with
    /// `m.id = ANY (...)`, the generic plan of the read by key read the user's rows through the
    /// user index.)
    #[pg_test]
    fn under_row_level_security_the_best_rows_are_read_by_position_or_key() {
        crate::tests::support::analyzes();
        run("CREATE ROLE memori_test_app");
        run("SELECT memori_grant('memori_test_app', 'app')");
        store_joins_and_orders("memori_test_app/tid");
        synthetic("crowd", 500, "{}");
        run("ANALYZE memori_memories");
        let ids: Vec<i64> = first_column(
            "SELECT id::text FROM memori_memories WHERE user_id = 'memori_test_app/tid' ORDER BY id",
        )
        .iter()
        .map(|i| i.parse().unwrap())
        .collect();
        // The DBA names the memori user; the app its end user, in its namespace (its name).
        let search = |mode: &str, user: &str| {
            one::<String>(&format!(
                "SELECT string_agg(content, '|' ORDER BY score DESC, content)
                   FROM memori_search('How does the user like joins on orders?', k => 3, mode => '{mode}'{user})"
            ))
        };
        let modes = ["vector", "hybrid"];
        let dba: Vec<String> = modes
            .iter()
            .map(|m| search(m, ", user_id => 'memori_test_app/tid'"))
            .collect();
        run("SET LOCAL ROLE memori_test_app");
        run("SET LOCAL memori.user_id = 'tid'");
        crate::base::spi::PLANS.with(|p| *p.borrow_mut() = Some(Vec::new()));
        let app: Vec<String> = modes.iter().map(|m| search(m, "")).collect();
        // The read by key of rows that moved, as the app.
        let q = vector_query(3, None);
        let by_key = crate::memories::search::fetch(&q, &ids, None).unwrap();
        let plans = crate::base::spi::PLANS
            .with(|p| p.borrow_mut().take())
            .unwrap();
        run("RESET ROLE");
        assert_eq!(app, dba);
        assert!(dba.iter().all(|r| r.split('|').count() == 3), "{dba:?}");
        assert_eq!(by_key.len(), ids.len());
        let memories: Vec<&String> = plans
            .iter()
            .filter(|p| p.contains("on memori_memories m"))
            .collect();
        // Per search: the scan of the scope (its model's rows, through the user index) and the
        // read of its k best (by position); and the count of the user's memories. Then the read
        // by key.
        let scans = memories
            .iter()
            .filter(|p| p.contains("embedding_dims = 384") && p.contains("idx_memori_mem_user"));
        assert_eq!(scans.count(), modes.len(), "{plans:#?}");
        let at = memories
            .iter()
            .filter(|p| p.contains("Tid Scan on memori_memories m") && p.contains("ctid = ANY"));
        assert_eq!(at.count(), modes.len(), "{plans:#?}");
        // Through the primary key, one id at a time (a generic plan: through a bitmap of it).
        let by_key = memories.iter().filter(|p| {
            (p.contains("Scan on memori_memories_pkey")
                || p.contains("Scan using memori_memories_pkey"))
                && p.contains("(id = k.id)")
                && !p.contains("idx_memori_mem_user")
        });
        assert_eq!(by_key.count(), 1, "{plans:#?}");
        for p in &memories {
            assert!(
                p.contains("memori_acting_user()"),
                "not under the policy: {p}"
            );
        }
        for p in &plans {
            assert!(!p.contains("Seq Scan on memori_memories"), "{p}");
        }
    }

    /// The read of the best rows whole (`search::fetch`, a statement after the one that ranked
    /// them) keeps to the search's scope: a memory archived, superseded, of another type or
    /// another user's since it was found is left out, not returned against the search's filters.
    #[pg_test]
    fn the_best_rows_are_read_within_the_scope() {
        use crate::memories::search::{fetch, query};
        store_joins_and_orders("fs");
        store_joins_and_orders("fs-other");
        let ids = |user: &str| -> Vec<i64> {
            let list = one::<String>(&format!(
                "SELECT string_agg(id::text, ',' ORDER BY id) FROM memori_memories WHERE user_id = '{user}'"
            ));
            list.split(',').map(|i| i.parse().unwrap()).collect()
        };
        let (mine, others) = (ids("fs"), ids("fs-other"));
        assert_eq!(mine.len(), 7);
        let q = |types: Option<&str>| {
            query(
                Some(10),
                None,
                types.map(|t| vec![Some(t.to_string())]),
                None,
                None,
                None,
                Some("fs"),
                Some("hybrid"),
                None,
                (None, None),
            )
            .unwrap()
        };
        let all: Vec<i64> = mine.iter().chain(&others).copied().collect();
        let read = |q: &crate::memories::search::Query| {
            let mut got: Vec<i64> = fetch(q, &all, None)
                .unwrap()
                .iter()
                .map(|f| f.ranked.id)
                .collect();
            got.sort();
            got
        };
        assert_eq!(read(&q(None)), mine);
        run(&format!(
            "UPDATE memori_memories SET is_archived = true WHERE id = {}",
            mine[0]
        ));
        run(&format!(
            "UPDATE memori_memories SET valid_to = now() WHERE id = {}",
            mine[1]
        ));
        run(&format!(
            "UPDATE memori_memories SET memory_type = 'rule' WHERE id = {}",
            mine[2]
        ));
        assert_eq!(read(&q(None)), mine[2..].to_vec());
        assert_eq!(read(&q(Some("long_term"))), mine[3..].to_vec());
    }

    /// The best rows are read again where the scan found them (`search::fetch_at`, by row
    /// position, as `spi::select_fixed` reads it); a row updated since (moved), a position now
    /// holding another row, or a row since out of the scope gives nothing there, and
    /// `read_ranked` reads those by key: every row ranked comes back once, in the ranking's
    /// order, never another in its place, whether all, some or none have moved.
    #[pg_test]
    fn the_best_rows_are_read_where_the_scan_found_them_or_by_key() {
        use crate::base::spi::{select_fixed, tid_bits, Planning};
        use crate::memories::search::{fetch_at, read_ranked, Found, Ranked};
        // Other rows first, so that the user's are past block 0.
        synthetic("fa-before", 400, "{}");
        store_joins_and_orders("fa");
        let q = vector_query(10, Some("fa"));
        // Each memory's id and position: read as the scan reads it, and checked against pgrx's
        // own reading of the tid.
        let located = || -> Vec<(i64, u64)> {
            let sql = "SELECT id, ctid FROM memori_memories WHERE user_id = 'fa' ORDER BY id";
            let fixed = select_fixed(sql, &[], Planning::Generic, |r| {
                (r[0].int8().unwrap(), r[1].tid().unwrap())
            })
            .unwrap();
            let by_pgrx: Vec<(i64, u64)> = Spi::connect(|c| {
                c.select(sql, None, &[])
                    .unwrap()
                    .map(|r| {
                        let tid = r.get::<pg_sys::ItemPointerData>(2).unwrap().unwrap();
                        (r.get::<i64>(1).unwrap().unwrap(), tid_bits(tid))
                    })
                    .collect()
            });
            assert_eq!(fixed, by_pgrx);
            fixed
        };
        let ids = |found: Vec<Found>| {
            let mut v: Vec<i64> = found.iter().map(|f| f.ranked.id).collect();
            v.sort();
            v
        };
        let ranked = |at: &[(i64, u64)]| -> Vec<i64> {
            let candidates: Vec<Ranked> = at
                .iter()
                .enumerate()
                .map(|(n, (id, loc))| Ranked {
                    id: *id,
                    vector_rank: Some(n + 1),
                    text_rank: None,
                    similarity: Some(0.9 - n as f64 / 10.0),
                    text_score: None,
                    importance: 0.5,
                    recency: 0.0,
                    relevance: 0.0,
                    score: 0.0,
                    loc: Some(*loc),
                })
                .collect();
            read_ranked(&q, candidates)
                .unwrap()
                .iter()
                .map(|f| f.ranked.id)
                .collect()
        };
        let before = located();
        let all: Vec<i64> = before.iter().map(|(id, _)| *id).collect();
        assert_eq!(all.len(), 7);
        assert!(before.iter().all(|(_, loc)| loc >> 32 > 0), "{before:?}");
        assert_eq!(ids(fetch_at(&q, &before).unwrap()), all);
        assert_eq!(ranked(&before), all);
        // A position holding another row than the one ranked: nothing.
        assert!(fetch_at(&q, &[(before[0].0, before[1].1)])
            .unwrap()
            .is_empty());
        // Some rows updated since: those by key, the others where they were.
        run(&format!(
            "UPDATE memori_memories SET importance_score = 0.9 WHERE id IN ({}, {}, {})",
            all[1], all[4], all[6]
        ));
        let after = located();
        let moved: Vec<bool> = before.iter().zip(&after).map(|(b, a)| b.1 != a.1).collect();
        assert_eq!(moved, [false, true, false, false, true, false, true]);
        assert_eq!(
            ids(fetch_at(&q, &before).unwrap()),
            vec![all[0], all[2], all[3], all[5]]
        );
        crate::base::spi::PLANS.with(|p| *p.borrow_mut() = Some(Vec::new()));
        assert_eq!(ranked(&before), all);
        let plans = crate::base::spi::PLANS
            .with(|p| p.borrow_mut().take())
            .unwrap();
        assert_eq!(
            plans.len(),
            2,
            "by position, then the three moved by key: {plans:#?}"
        );
        assert!(
            plans[0].contains("Tid Scan") && plans[1].contains("memori_memories_pkey"),
            "{plans:#?}"
        );
        // Every row updated: all by key.
        run("UPDATE memori_memories SET importance_score = 0.8 WHERE user_id = 'fa'");
        assert!(fetch_at(&q, &after).unwrap().is_empty());
        assert_eq!(ranked(&after), all);
        // Where it is now, but out of the scope (archived): not read there, nor by key.
        run(&format!(
            "UPDATE memori_memories SET is_archived = true WHERE id = {}",
            all[2]
        ));
        let now = located();
        let kept: Vec<i64> = all.iter().copied().filter(|id| *id != all[2]).collect();
        assert_eq!(ids(fetch_at(&q, &now).unwrap()), kept);
        assert_eq!(ranked(&now), kept);
    }

    /// A hybrid search calls only the extension's own memori_term_mask: one that another role
    /// put in memori's schema (as before ALTER EXTENSION UPDATE, when the update has not made it
    /// yet) never runs, and the search gives the same rows by the two rankings apart.
    #[pg_test]
    fn hybrid_runs_only_the_extensions_own_term_match() {
        store_joins_and_orders("tm");
        let search = "SELECT string_agg(content, '|' ORDER BY score DESC, content)
                        FROM memori_search('How does the user like joins on orders.customer_id?',
                                           k => 5, user_id => 'tm')";
        assert!(crate::base::catalog::has_term_mask().unwrap());
        let before = one::<String>(search);
        run("ALTER EXTENSION memori DROP FUNCTION memori_term_mask(tsvector, tsvector)");
        run("DROP FUNCTION memori_term_mask(tsvector, tsvector)");
        run(
            "CREATE FUNCTION memori_term_mask(document tsvector, terms tsvector) RETURNS bigint
             LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'planted memori_term_mask ran'; END $$",
        );
        assert!(!crate::base::catalog::has_term_mask().unwrap());
        assert_eq!(one::<String>(search), before);
    }

    #[pg_test]
    fn event_time_is_stored_filtered_returned_and_shown_in_context() {
        run("SET LOCAL TimeZone = 'UTC'");
        run(
            "SELECT memori_store('Caroline went to the LGBTQ support group', 'long_term',
                                 event_at => '2023-05-07 13:56+00', user_id => 'ev')",
        );
        run("SELECT memori_store_batch(ARRAY['Melanie painted a sunrise over the lake',
                                             'Melanie ran a charity race for mental health'],
                                       'long_term', user_id => 'ev', event_at => '2023-05-25 18:00+00')");
        run("SELECT memori_store('Caroline is researching adoption agencies', 'long_term', user_id => 'ev')");
        assert_eq!(
            count("user_id = 'ev' AND event_at IS NOT NULL"),
            3,
            "event_at as given, for one and for a batch"
        );
        // The window is on event_at, or created_at (now) without one.
        let in_may = first_column(
            "SELECT content FROM memori_search('what did they do?', k => 10, user_id => 'ev',
                    event_from => '2023-05-01', event_to => '2023-05-20') ORDER BY content",
        );
        assert_eq!(in_may, vec!["Caroline went to the LGBTQ support group"]);
        let late_may = first_column(
            "SELECT content FROM memori_search('what did they do?', k => 10, user_id => 'ev',
                    event_from => '2023-05-20', event_to => '2023-06-01') ORDER BY content",
        );
        assert_eq!(late_may.len(), 2);
        let from_now = first_column(
            "SELECT content FROM memori_search('what did they do?', k => 10, user_id => 'ev',
                    event_from => now() - interval '1 minute')",
        );
        assert_eq!(from_now, vec!["Caroline is researching adoption agencies"]);
        assert_eq!(
            one::<String>(
                "SELECT event_at::text FROM memori_search('support group', k => 1, user_id => 'ev')"
            ),
            "2023-05-07 13:56:00+00"
        );
        // memori_context dates the memories that have an event time.
        let context = one::<String>(
            "SELECT memori_context('When did Caroline go to the support group?', user_id => 'ev')",
        );
        assert!(
            context.contains("(2023-05-07) Caroline went to the LGBTQ support group"),
            "{context}"
        );
        assert!(!context.contains(") Caroline is researching"), "{context}");
        let e = sql_error(
            "SELECT * FROM memori_search('x', user_id => 'ev', event_from => '2024-01-01', event_to => '2023-01-01')",
        );
        assert_eq!(e.sqlstate, state("22023"));
        assert_eq!(
            e.message,
            "memori: event_from must be earlier than event_to"
        );
    }

    #[pg_test]
    fn a_search_stopped_inside_its_statements_leaves_the_next_ones_working() {
        // Statements a search runs every time go through plans kept per backend: one stopped
        // by statement_timeout in the middle must leave them usable (and nothing half-kept).
        synthetic("kept", 10000, "{}");
        let search = "SELECT count(*) FROM memori_search('synthetic', k => 10, user_id => 'kept', mode => 'vector')";
        // The question's embedding is then in the cache: what follows is memori's statements.
        assert_eq!(one::<i64>(search), 10);
        let mut stopped = 0;
        for _ in 0..3 {
            crate::tests::support::arm_statement_timeout(1);
            let e = try_sql(search);
            crate::tests::support::disarm_statement_timeout();
            if let Some(e) = e {
                assert_eq!(e.sqlstate, state("57014"), "{}", e.message);
                stopped += 1;
            }
            assert_eq!(one::<i64>(search), 10);
        }
        assert!(
            stopped > 0,
            "an exact scan of 10,000 memories outlasts 1 ms"
        );
    }
}
