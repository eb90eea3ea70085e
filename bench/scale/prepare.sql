-- bench/scale: after loading. The questions (their embeddings from the loopback provider),
-- the exact top 10 of each for each measured user, recall@10 of the hand-written HNSW queries
-- and of memori's vector mode against it, the app role, and the texts the store runs write.
-- psql variables: question, label, users (text[] literal), settings (text[] literal of
-- ef_search:iterative_scan), nq (questions per user for recall), batches (of 100), singles.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
-- For this session's DO blocks: the HNSW settings; the question's full-text query with all its
-- terms and with any (read as memori reads text: . and _ as spaces).
SELECT set_config('bench.settings', :'settings', false) IS NOT NULL
   AND set_config('bench.and_query', plainto_tsquery('english', translate(:'question', '._', '  '))::text, false) IS NOT NULL
   AND set_config('bench.or_query', replace(plainto_tsquery('english', translate(:'question', '._', '  '))::text, ' & ', ' | '), false) IS NOT NULL
       AS settings_set;

CREATE ROLE bench_app LOGIN;
SELECT memori_grant('bench_app', 'app', namespace => '');

-- Question 1 is the one every timed search asks; recall is averaged over all nq.
CREATE TABLE bench_questions AS
SELECT n, CASE WHEN n = 1 THEN :'question' ELSE :'question' || ' (variant ' || n || ')' END AS text
  FROM generate_series(1, :nq) n;
ALTER TABLE bench_questions ADD COLUMN vec vector(384);
UPDATE bench_questions SET vec = memori_embed(text)::vector(384);

-- The exact ranking: every memory of the user compared (no index gives this order).
CREATE TABLE bench_exact AS
SELECT u.user_id, q.n,
       ARRAY(SELECT m.memory_id FROM memori_memories m WHERE m.user_id = u.user_id
              ORDER BY m.embedding::vector(384) <=> q.vec, m.id LIMIT 10) AS ids
  FROM unnest(:'users'::text[]) u(user_id), bench_questions q;

CREATE TABLE bench_recall (label text, user_id text, recall float8, plan text);

-- One query for (user, vector), planned afresh with the values (as pgbench's simple protocol).
CREATE FUNCTION bench_run(sql text, u text, v vector) RETURNS SETOF uuid LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE sql USING u, v;
END $$;

-- The plan's scan and sort nodes, in one line.
CREATE FUNCTION bench_plan(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE line text; plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || sql LOOP
        IF line ~ '(Scan|Sort|Limit)' AND line !~ '(Key|Cond|Filter|Method):' THEN
            plan := plan || CASE WHEN plan = '' THEN '' ELSE ' > ' END
                    || btrim(regexp_replace(line, '^[ >-]*', ''));
        END IF;
    END LOOP;
    RETURN plan;
END $$;

-- recall@10 of the hand-written HNSW query: the partial index's predicate and expression,
-- enable_sort off so that the planner takes the index where the user index and a sort would
-- cost less.
DO $$
DECLARE s text; u text; r float8;
        sql text := 'SELECT m.memory_id FROM memori_memories m WHERE m.user_id = $1 AND m.embedding_dims = 384
                      ORDER BY m.embedding::vector(384) <=> $2 LIMIT 10';
BEGIN
    PERFORM set_config('enable_sort', 'off', true);
    FOREACH s IN ARRAY current_setting('bench.settings')::text[] LOOP
        PERFORM set_config('hnsw.ef_search', split_part(s, ':', 1), true);
        PERFORM set_config('hnsw.iterative_scan', split_part(s, ':', 2), true);
        FOR u IN SELECT DISTINCT user_id FROM bench_exact LOOP
            SELECT avg((SELECT count(*) FROM bench_run(sql, x.user_id, q.vec) g WHERE g = ANY (x.ids))::float8 / 10)
              INTO r
              FROM bench_questions q JOIN bench_exact x ON x.n = q.n AND x.user_id = u;
            INSERT INTO bench_recall
            VALUES ('hnsw ' || s, u, r,
                    bench_plan(replace(replace(sql, '$1', quote_literal(u)), '$2',
                               quote_literal((SELECT vec::text FROM bench_questions WHERE n = 1)) || '::vector(384)')));
        END LOOP;
    END LOOP;
END $$;

-- The exact query's plan (no embedding_dims predicate: the HNSW index cannot serve it).
INSERT INTO bench_recall
SELECT 'exact', u, 1,
       bench_plan(format('SELECT m.memory_id FROM memori_memories m WHERE m.user_id = %L ORDER BY m.embedding::vector(384) <=> %L::vector(384) LIMIT 10',
                         u, (SELECT vec::text FROM bench_questions WHERE n = 1)))
  FROM (SELECT DISTINCT user_id AS u FROM bench_exact) s;

-- recall@10 of memori_search's vector mode (as the DBA), the same questions.
INSERT INTO bench_recall
SELECT 'memori vector', x.user_id,
       avg((SELECT count(*) FROM memori_search(q.text, k => 10, mode => 'vector', user_id => x.user_id) s
             WHERE s.memory_id = ANY (x.ids))::float8 / 10), NULL
  FROM bench_questions q JOIN bench_exact x ON x.n = q.n
 GROUP BY x.user_id;

-- The same through memori's HNSW path (memori.exact_search_rows = 0), users above 100.
SET memori.exact_search_rows = 0;
INSERT INTO bench_recall
SELECT 'memori vector-hnsw', x.user_id,
       avg((SELECT count(*) FROM memori_search(q.text, k => 10, mode => 'vector', user_id => x.user_id) s
             WHERE s.memory_id = ANY (x.ids))::float8 / 10), NULL
  FROM bench_questions q JOIN bench_exact x ON x.n = q.n
 WHERE x.user_id IN ('mid', 'big')
 GROUP BY x.user_id;
RESET memori.exact_search_rows;

-- The hand-written full-text queries' plans.
INSERT INTO bench_recall
SELECT 'fts ' || f, u, NULL,
       bench_plan(format('SELECT m.memory_id FROM memori_memories m, %s q WHERE m.user_id = %L AND m.content_tsv @@ q ORDER BY ts_rank(m.content_tsv, q) DESC LIMIT 10',
                         format('CAST(%L AS tsquery)', current_setting('bench.' || f || '_query')), u))
  FROM (SELECT DISTINCT user_id AS u FROM bench_exact) s, unnest('{and,or}'::text[]) f;

-- Texts for the store runs, never stored before: batches of 100 and single texts, each with
-- its precomputed embedding (the plain INSERT's); every run takes the next unused ones.
CREATE TABLE bench_texts AS
SELECT b AS batch, n, bench_content(1000000 + b * 100 + n) || ' (note ' || b || '-' || n || ')' AS content
  FROM generate_series(1, :batches + :singles) b, generate_series(1, 100) n
 WHERE b <= :batches OR n = 1;
ALTER TABLE bench_texts ADD COLUMN vec vector, ADD PRIMARY KEY (batch, n);
UPDATE bench_texts t SET vec = e.v
  FROM (SELECT x.batch, v.n, v.v
          FROM (SELECT batch, array_agg(n ORDER BY n) AS ns, memori_embed_batch(array_agg(content ORDER BY n)) AS vs
                  FROM bench_texts GROUP BY batch) x,
               unnest(x.ns, x.vs) AS v(n, v)) e
 WHERE t.batch = e.batch AND t.n = e.n;
VACUUM ANALYZE bench_texts, bench_questions;
SELECT count(*) AS texts, count(vec) AS embedded FROM bench_texts;
