-- memori benchmark queries (run by bench/run.sh). Prints figures as NOTICEs.
\set QUIET on
SET client_min_messages = notice;
CREATE EXTENSION memori CASCADE;
SET memori.embedding_cache_ttl = 0;

-- Warm up: load the model once (first use in a backend).
SELECT memori_embed('warm up') IS NOT NULL AS warmed;

DO $$
DECLARE t0 timestamptz; n int := 300; s float8;
BEGIN
    t0 := clock_timestamp();
    PERFORM memori_embed('short text number ' || g || ' about SQL') FROM generate_series(1, n) g;
    s := extract(epoch FROM clock_timestamp() - t0);
    RAISE NOTICE 'local model, single short texts: % texts/s (% ms each)', round(n / s), round((1000 * s / n)::numeric, 2);
    t0 := clock_timestamp();
    PERFORM memori_embed_batch(ARRAY(SELECT 'batched text ' || b || '-' || g || ' about SQL' FROM generate_series(1, 32) g))
       FROM generate_series(1, 10) b;
    s := extract(epoch FROM clock_timestamp() - t0);
    RAISE NOTICE 'local model, batches of 32: % texts/s', round(320 / s);
END $$;

-- The embedding cache: a hit costs one indexed lookup instead of a model run.
SET memori.embedding_cache_ttl = 3600;
SELECT memori_embed('cached text') IS NOT NULL AS cached;
DO $$
DECLARE t0 timestamptz; n int := 2000; s float8;
BEGIN
    t0 := clock_timestamp();
    PERFORM memori_embed('cached text') FROM generate_series(1, n);
    s := extract(epoch FROM clock_timestamp() - t0);
    RAISE NOTICE 'cache hit: % us per call', round((1e6 * s / n)::numeric, 1);
END $$;
SET memori.embedding_cache_ttl = 0;

-- The openai provider against a loopback server that answers at once (1536 floats).
SET memori.embedding_provider = 'openai';
SELECT set_config('memori.embedding_url', :'mock', false) IS NOT NULL AS url_set;
SET memori.embedding_api_key = 'sk-bench';
DO $$
DECLARE t0 timestamptz; n int := 300; s float8;
BEGIN
    t0 := clock_timestamp();
    PERFORM memori_embed('http text ' || g) FROM generate_series(1, n) g;
    s := extract(epoch FROM clock_timestamp() - t0);
    RAISE NOTICE 'openai provider, loopback round trip per call: % ms', round((1000 * s / n)::numeric, 2);
END $$;
RESET memori.embedding_provider;
RESET memori.embedding_url;
RESET memori.embedding_api_key;
-- Search and store: bench/scale (302,000 memories, side by side with hand-written SQL).
