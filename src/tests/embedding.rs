//! memori_embed() and memori_embed_batch(): the local model against an independent reference,
//! and the openai provider against a real HTTP server on loopback that injects faults.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::providers::cosine;
    use crate::providers::offthread::with_signals_blocked;
    use crate::tests::support::{
        arm_statement_timeout, assert_stopped_within, mock_embeddings_with, one, run, sql_error,
        state, try_sql,
    };
    use pgrx::prelude::*;
    use std::time::{Duration, Instant};

    use crate::tests::mock_openai::{self, Fault, MockServer};

    const REFERENCE: &str = include_str!("../../tests/reference/minilm.json");

    fn embed(text: &str) -> Vec<f32> {
        Spi::get_one_with_args::<Vec<f32>>("SELECT memori_embed($1)::real[]", &[text.into()])
            .unwrap()
            .unwrap()
    }

    fn stats() -> (i64, i64, i64, i64) {
        Spi::connect(|c| {
            let r = c
                .select("SELECT texts, cache_hits, http_requests, model_passes FROM memori_embedding_stats()", None, &[])
                .unwrap()
                .first();
            Ok::<_, pgrx::spi::Error>((
                r.get::<i64>(1)?.unwrap(),
                r.get::<i64>(2)?.unwrap(),
                r.get::<i64>(3)?.unwrap(),
                r.get::<i64>(4)?.unwrap(),
            ))
        })
        .unwrap()
    }

    fn server(fault: Fault, width: usize) -> MockServer {
        let s = mock_embeddings_with(fault, width);
        // A key the error tests look for in messages (it must never be there).
        run("SET LOCAL memori.embedding_api_key = 'sk-test-secret-key'");
        run("SET LOCAL memori.embedding_model = 'mock-embed'");
        run("SET LOCAL memori.embedding_cache_ttl = 0");
        run("SET LOCAL memori.embedding_max_retries = 3");
        s
    }

    // ---- local provider -------------------------------------------------------------------------

    #[pg_test]
    fn local_vectors_match_the_numpy_reference() {
        let reference: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
        let texts = reference["texts"].as_array().unwrap();
        let vectors = reference["vectors"].as_array().unwrap();
        for (t, v) in texts.iter().zip(vectors) {
            let want: Vec<f32> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let got = embed(t.as_str().unwrap());
            assert_eq!(got.len(), 384);
            let c = cosine(&got, &want);
            assert!(c > 0.999, "{t}: cosine {c} to the reference");
            let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
        }
        // The reference's own similarities come out the same through pgvector's <=>.
        let sim = Spi::get_one_with_args::<f64>(
            "SELECT 1 - (memori_embed($1) <=> memori_embed($2))",
            &[
                texts[0].as_str().unwrap().into(),
                texts[1].as_str().unwrap().into(),
            ],
        )
        .unwrap()
        .unwrap();
        let want = reference["cosine"][0][1].as_f64().unwrap();
        assert!((sim - want).abs() < 1e-3, "{sim} vs {want}");
    }

    #[pg_test]
    fn the_same_text_twice_has_cosine_one() {
        run("SET LOCAL memori.embedding_cache_ttl = 0");
        let c =
            one::<f64>("SELECT 1 - (memori_embed('hello world') <=> memori_embed('hello world'))");
        assert!((c - 1.0).abs() < 1e-6, "{c}");
    }

    #[pg_test]
    fn a_batch_equals_single_embeddings_in_input_order() {
        run("SET LOCAL memori.embedding_cache_ttl = 0");
        // Different lengths: the batch pads them, the pooling must mask the padding.
        let texts = [
            "short",
            "a considerably longer sentence about SQL joins and customers tables",
            "mid length text",
        ];
        for (i, t) in texts.iter().enumerate() {
            let b = Spi::get_one_with_args::<Vec<f32>>(
                "SELECT (memori_embed_batch($1))[$2]::real[]",
                &[texts.to_vec().into(), (i as i32 + 1).into()],
            )
            .unwrap()
            .unwrap();
            let c = cosine(&embed(t), &b);
            assert!(c > 0.9999, "{t}: {c}");
        }
    }

    #[pg_test]
    fn null_gives_null_and_empty_text_is_an_error() {
        assert!(Spi::get_one::<bool>("SELECT memori_embed(NULL) IS NULL")
            .unwrap()
            .unwrap());
        let e = sql_error("SELECT memori_embed('   ')");
        assert_eq!(e.sqlstate, state("22023"));
        assert_eq!(e.message, "memori: cannot embed empty text");
        let e = sql_error("SELECT memori_embed_batch(ARRAY['ok', ''])");
        assert_eq!(e.message, "memori: cannot embed empty text (element 2)");
        assert_eq!(
            one::<String>("SELECT array_to_string(array_agg(v IS NULL ORDER BY n), ',') FROM unnest(memori_embed_batch(ARRAY['a', NULL, 'b'])) WITH ORDINALITY u(v, n)"),
            "f,t,f"
        );
        assert_eq!(
            one::<i64>("SELECT coalesce(cardinality(memori_embed_batch('{}'::text[])), 0)::bigint"),
            0
        );
    }

    #[pg_test]
    fn local_batches_run_one_forward_pass_per_chunk() {
        run("SET LOCAL memori.embedding_cache_ttl = 0");
        run("SET LOCAL memori.embedding_batch_size = 16");
        let before = stats().3;
        run("SELECT memori_embed_batch(array_agg('text number ' || g)) FROM generate_series(1, 40) g");
        assert_eq!(stats().3 - before, 3, "ceil(40 / 16) passes");
        run("SET LOCAL memori.embedding_batch_size = 100");
        let before = stats().3;
        run("SELECT memori_embed_batch(array_agg('text number ' || g)) FROM generate_series(1, 64) g");
        assert_eq!(stats().3 - before, 2, "a pass holds at most 32 texts");
    }

    #[pg_test]
    fn a_missing_local_model_says_how_to_install_it() {
        run("SET LOCAL memori.local_model_path = '/nonexistent/model'");
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(e.sqlstate, state("58P01"));
        assert!(
            e.message
                .contains("/nonexistent/model/model.safetensors is missing"),
            "{}",
            e.message
        );
        assert!(e.hint.unwrap().contains("make install"));
    }

    #[pg_test]
    fn the_cache_saves_model_runs_and_expires() {
        run("SET LOCAL memori.embedding_cache_ttl = 3600");
        let before = stats();
        let a = embed("cache me please");
        let b = embed("cache me please");
        let after = stats();
        assert_eq!(
            after.3 - before.3,
            1,
            "one model pass for the same text twice"
        );
        assert_eq!(after.1 - before.1, 1, "one cache hit");
        assert_eq!(a, b);
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_embedding_cache WHERE model = 'all-MiniLM-L6-v2' AND dims = 384"), 1);
        // No text in the cache: only its SHA-256.
        assert!(one::<bool>(
            "SELECT text_sha256 = sha256('cache me please'::bytea) FROM memori_embedding_cache"
        ));
        run("UPDATE memori_embedding_cache SET created_at = now() - interval '2 hours'");
        let before = stats().3;
        embed("cache me please");
        assert_eq!(stats().3 - before, 1, "an expired entry is recomputed");
    }

    // ---- openai provider over loopback ------------------------------------------------------------

    #[pg_test]
    fn openai_embeds_and_sends_model_dimensions_and_key() {
        let s = server(Fault::None, 12);
        run("SET LOCAL memori.embedding_dimensions = 8");
        let v = embed("hello");
        assert_eq!(v.len(), 8);
        assert_eq!(s.requests(), 1);
        assert_eq!(
            s.last_auth.lock().unwrap().as_deref(),
            Some("Bearer sk-test-secret-key")
        );
        let body = s.last_body.lock().unwrap().clone().unwrap();
        assert_eq!(body["model"], "mock-embed");
        assert_eq!(body["dimensions"], 8);
        assert_eq!(body["input"][0], "hello");
        let want = mock_openai::vector_for("hello", 8);
        assert!(cosine(&v, &want) > 0.99999);
    }

    #[pg_test]
    fn openai_batches_make_ceil_n_over_batch_size_requests() {
        let s = server(Fault::None, 4);
        run("SET LOCAL memori.embedding_batch_size = 100");
        let n = one::<i32>("SELECT cardinality(memori_embed_batch(array_agg('t' || g))) FROM generate_series(1, 250) g");
        assert_eq!(n, 250);
        assert_eq!(s.requests(), 3);
        let s = server(Fault::None, 4);
        run("SET LOCAL memori.embedding_batch_size = 2048");
        run("SELECT memori_embed_batch(array_agg('t' || g)) FROM generate_series(1, 5000) g");
        assert_eq!(s.requests(), 3, "ceil(5000 / 2048)");
        assert!(s.max_inputs.load(std::sync::atomic::Ordering::SeqCst) <= 2048);
        // Order is kept across requests.
        let s2 = server(Fault::None, 4);
        run("SET LOCAL memori.embedding_batch_size = 3");
        let got = Spi::get_one::<Vec<f32>>("SELECT (memori_embed_batch(array_agg('t' || g ORDER BY g)))[7]::real[] FROM generate_series(1, 10) g")
            .unwrap()
            .unwrap();
        assert!(cosine(&got, &mock_openai::vector_for("t7", 4)) > 0.99999);
        assert_eq!(s2.requests(), 4);
    }

    /// Review G9: after memori.embedding_dimensions changes, memori_reembed moves every memory
    /// to the new width (it said "0 to go" while searches no longer saw them), and searches
    /// find them again.
    #[pg_test]
    fn a_width_change_is_reembedded_and_found_again() {
        let _s = server(Fault::None, 8);
        run("SET LOCAL memori.embedding_dimensions = 8");
        run("SELECT memori_store('User prefers dark mode', 'long_term', user_id => 'w-u1')");
        run("SELECT memori_store('User writes SQL in lowercase', 'long_term', user_id => 'w-u1')");
        let found = || {
            one::<i64>("SELECT count(*) FROM memori_search('User prefers dark mode', user_id => 'w-u1', mode => 'vector')")
        };
        assert_eq!(found(), 2);
        run("SET LOCAL memori.embedding_dimensions = 4");
        assert_eq!(found(), 0, "the old width is not compared with the new one");
        assert_eq!(
            one::<i64>("SELECT remaining FROM memori_reembed_progress()"),
            one::<i64>("SELECT count(*) FROM memori_memories")
        );
        run("SELECT * FROM memori_reembed_batch(1000)");
        assert_eq!(
            one::<i64>("SELECT remaining FROM memori_reembed_progress()"),
            0
        );
        assert_eq!(found(), 2);
        assert_eq!(
            one::<String>("SELECT string_agg(DISTINCT embedding_dims::text, ',') FROM memori_memories WHERE user_id = 'w-u1'"),
            "4"
        );
    }

    #[pg_test]
    fn openai_a_hung_endpoint_times_out() {
        let s = server(Fault::Hang, 4);
        run("SET LOCAL memori.embedding_timeout_ms = 500");
        let t = Instant::now();
        let e = sql_error("SELECT memori_embed('x')");
        let took = t.elapsed();
        assert_eq!(e.sqlstate, state("08006"), "{e:?}");
        assert!(
            e.message.contains(&format!("{}/embeddings", s.url())),
            "{}",
            e.message
        );
        assert!(e.message.contains("500 ms"), "{}", e.message);
        // Ends about when the configured 500 ms run out (the endpoint never answers).
        assert_stopped_within(took, 3, Duration::from_millis(500), "a hung endpoint");
    }

    #[pg_test]
    fn openai_statement_timeout_cancels_a_waiting_call() {
        let _s = server(Fault::Hang, 4);
        run("SET LOCAL memori.embedding_timeout_ms = 60000");
        let t = Instant::now();
        // What statement_timeout does: the same timer and interrupt.
        arm_statement_timeout(300);
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(e.sqlstate, state("57014"));
        assert_eq!(e.message, "canceling statement due to statement timeout");
        // The call would otherwise have waited for the endpoint's 60 s.
        assert_stopped_within(
            t.elapsed(),
            20,
            Duration::from_millis(300),
            "statement_timeout",
        );
        // The backend is still usable.
        assert_eq!(one::<i32>("SELECT 1"), 1);
    }

    #[pg_test]
    fn openai_cancel_request_ends_a_waiting_call() {
        let _s = server(Fault::Hang, 4);
        run("SET LOCAL memori.embedding_timeout_ms = 60000");
        let pid = unsafe { pg_sys::MyProcPid };
        // What pg_cancel_backend() does: SIGINT to the backend, here 300 ms into the call.
        with_signals_blocked(|| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                unsafe { libc::kill(pid, libc::SIGINT) };
            })
        });
        let t = Instant::now();
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(e.message, "canceling statement due to user request");
        // The call would otherwise have waited for the endpoint's 60 s.
        assert_stopped_within(
            t.elapsed(),
            20,
            Duration::from_millis(300),
            "a cancel request",
        );
    }

    fn status(status: u16, times: usize, retry_after: Option<&str>) -> Fault {
        Fault::Status {
            status,
            body: r#"{"error": {"message": "mock says no (auth was {auth})"}}"#.into(),
            retry_after: retry_after.map(str::to_string),
            times,
        }
    }

    #[pg_test]
    fn openai_429_and_5xx_are_retried_with_retry_after() {
        let s = server(status(429, 2, Some("0.1")), 4);
        let t = Instant::now();
        assert_eq!(embed("x").len(), 4);
        assert_eq!(s.requests(), 3);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "waited Retry-After twice"
        );
        let s = server(status(503, 1, None), 4);
        assert_eq!(embed("x").len(), 4);
        assert_eq!(s.requests(), 2);
    }

    #[pg_test]
    fn openai_retries_stop_at_max_retries() {
        let s = server(status(429, 100, Some("0")), 4);
        run("SET LOCAL memori.embedding_max_retries = 2");
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(s.requests(), 3, "one try and two retries");
        assert_eq!(e.sqlstate, state("53000"));
        assert!(e.message.contains("HTTP 429"), "{}", e.message);
        assert_eq!(e.detail.as_deref(), Some("Gave up after 2 retries."));
        let s = server(status(500, 100, Some("0")), 4);
        run("SET LOCAL memori.embedding_max_retries = 1");
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(s.requests(), 2);
        assert_eq!(e.sqlstate, state("58000"));
    }

    #[pg_test]
    fn openai_retries_never_pass_the_timeout() {
        let s = server(status(429, 100, Some("5")), 4);
        run("SET LOCAL memori.embedding_timeout_ms = 1000");
        let t = Instant::now();
        let e = sql_error("SELECT memori_embed('x')");
        // Retry-After (5 s) is past the deadline (1 s): no wait at all, not even to the deadline.
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "waited {took:?} for a retry past the deadline"
        );
        assert_eq!(s.requests(), 1);
        assert_eq!(e.sqlstate, state("53000"));
    }

    #[pg_test]
    fn openai_other_4xx_are_not_retried() {
        let s = server(status(400, 100, None), 4);
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(s.requests(), 1);
        assert_eq!(e.sqlstate, state("22023"));
        assert!(
            e.message.contains("HTTP 400: mock says no"),
            "{}",
            e.message
        );
        assert!(e.hint.is_some());
    }

    #[pg_test]
    fn openai_401_names_the_url_and_masks_the_key() {
        let s = server(status(401, 100, None), 4);
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(s.requests(), 1);
        assert_eq!(e.sqlstate, state("28000"));
        assert!(
            e.message.contains("openai") && e.message.contains(&s.url()),
            "{}",
            e.message
        );
        assert!(e.message.contains("HTTP 401"), "{}", e.message);
        let all = format!("{e:?}");
        assert!(!all.contains("sk-test-secret-key"), "{all}");
        assert!(all.contains("****"), "the echoed key is masked: {all}");
    }

    #[pg_test]
    fn openai_redirects_are_not_followed() {
        let s = server(status(307, 100, None), 4);
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(s.requests(), 1);
        assert!(e.message.contains("HTTP 307"), "{}", e.message);
        assert!(e.hint.unwrap().contains("does not follow redirects"));
    }

    #[pg_test]
    fn openai_bad_replies_are_clear_errors() {
        let _s = server(Fault::NotJson, 4);
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(e.sqlstate, state("22000"));
        assert!(e.message.contains("not embeddings JSON"), "{}", e.message);
        let _s = server(Fault::Fewer, 4);
        let e = sql_error("SELECT memori_embed_batch(ARRAY['a', 'b', 'c'])");
        assert!(
            e.message.contains("2 vectors came back for 3 inputs"),
            "{}",
            e.message
        );
        let _s = server(Fault::Width(7), 4);
        run("SET LOCAL memori.embedding_dimensions = 8");
        let e = sql_error("SELECT memori_embed('x')");
        assert!(
            e.message.contains("7 dimensions where 8 were expected"),
            "{}",
            e.message
        );
        assert_eq!(one::<i32>("SELECT 1"), 1, "the backend stays usable");
    }

    #[pg_test]
    fn zero_vectors_from_a_provider_are_refused_and_not_cached() {
        let s = server(Fault::Zero, 4);
        run("SET LOCAL memori.embedding_cache_ttl = 3600");
        let e = sql_error("SELECT memori_embed('a text the provider cannot embed')");
        assert_eq!(e.sqlstate, state("22000"));
        assert!(e.message.contains("is all zeros"), "{}", e.message);
        let e = sql_error("SELECT memori_store('a text the provider cannot embed')");
        assert_eq!(e.sqlstate, state("22000"));
        assert_eq!(s.requests(), 2, "nothing was cached");
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_memories"), 0);
    }

    #[pg_test]
    fn openai_connection_refused() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let _s = server(Fault::None, 4);
        run(&format!(
            "SET LOCAL memori.embedding_url = 'http://127.0.0.1:{port}/v1'"
        ));
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(e.sqlstate, state("08001"), "{e:?}");
        assert!(
            e.message
                .contains(&format!("127.0.0.1:{port}/v1/embeddings")),
            "{}",
            e.message
        );
    }

    #[pg_test]
    fn openai_without_a_key_falls_back_to_the_environment() {
        let s = server(Fault::None, 4);
        run("SET LOCAL memori.embedding_api_key = ''");
        std::env::remove_var("MEMORI_EMBEDDING_API_KEY");
        std::env::remove_var("OPENAI_API_KEY");
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(e.sqlstate, state("28000"));
        assert!(e.message.contains("no API key"), "{}", e.message);
        assert!(e.hint.unwrap().contains("memori.embedding_api_key"));
        assert_eq!(s.requests(), 0);
        // Review G7: OpenAI's own variable is for OpenAI's API only, never sent to another
        // server (this one is on loopback).
        std::env::set_var("OPENAI_API_KEY", "sk-from-env");
        let e = sql_error("SELECT memori_embed('x')");
        assert_eq!(e.sqlstate, state("28000"));
        assert_eq!(
            s.requests(),
            0,
            "OPENAI_API_KEY was not sent to another host"
        );
        std::env::set_var("MEMORI_EMBEDDING_API_KEY", "sk-memori-env");
        embed("y");
        assert_eq!(
            s.last_auth.lock().unwrap().as_deref(),
            Some("Bearer sk-memori-env")
        );
        std::env::remove_var("MEMORI_EMBEDDING_API_KEY");
        std::env::remove_var("OPENAI_API_KEY");
    }

    #[pg_test]
    fn openai_cache_hit_makes_no_request() {
        let s = server(Fault::None, 4);
        run("SET LOCAL memori.embedding_cache_ttl = 3600");
        let a = embed("same text");
        let b = embed("same text");
        assert_eq!(a, b);
        assert_eq!(s.requests(), 1);
        // A batch with a repeat and a cached text asks only for what is new, once.
        run("SELECT memori_embed_batch(ARRAY['same text', 'new', 'new'])");
        assert_eq!(s.requests(), 2);
        assert_eq!(
            s.last_body.lock().unwrap().clone().unwrap()["input"],
            serde_json::json!(["new"])
        );
        // ttl 0 disables it.
        run("SET LOCAL memori.embedding_cache_ttl = 0");
        embed("same text");
        assert_eq!(s.requests(), 3);
    }

    #[pg_test]
    fn ordinary_roles_cannot_steer_or_read_the_provider_settings() {
        run("CREATE ROLE memori_test_plain LOGIN");
        run("SET LOCAL memori.embedding_api_key = 'sk-hidden'");
        run("SET LOCAL ROLE memori_test_plain");
        for setting in [
            "embedding_provider = 'openai'",
            "embedding_url = 'http://10.0.0.1/v1'",
            "embedding_api_key = 'x'",
            "embedding_model = 'x'",
            "embedding_dimensions = 8",
            "local_model_path = '/tmp'",
        ] {
            let e = sql_error(&format!("SET memori.{setting}"));
            assert_eq!(e.sqlstate, state("42501"), "{setting}: {e:?}");
        }
        let e = sql_error("SHOW memori.embedding_api_key");
        assert_eq!(e.sqlstate, state("42501"));
        assert!(try_sql("SELECT current_setting('memori.embedding_api_key')").is_some());
        assert_eq!(
            one::<i64>("SELECT count(*) FROM pg_settings WHERE name = 'memori.embedding_api_key'"),
            0
        );
        // Ordinary settings stay settable.
        assert!(try_sql("SET memori.embedding_batch_size = 10").is_none());
    }
}
