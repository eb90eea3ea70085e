-- memori quick start: the seed's Step 8 and Step 9, in plain SQL.
-- Run by `make demo` (psql -f examples/quickstart.sql) in the database memori_demo.
\set ON_ERROR_STOP on
\pset null '(null)'
\echo
\echo '== memori quick start =='

CREATE EXTENSION IF NOT EXISTS memori CASCADE;

-- Act for one end user of the application (an app role would SET LOCAL this per request).
SET memori.user_id = 'test_user';

\echo
\echo '-- Step 8: a conversation and two memories'
SELECT memori_conversation_create(title => 'Test Conversation') AS conv \gset
\echo 'conversation:' :conv

SELECT memori_store(
    content         => 'User prefers using table aliases in SQL queries',
    memory_type     => 'rule',
    conversation_id => :'conv',
    importance      => 0.8,
    tags            => '{preference,sql}') AS memory_1;

SELECT memori_store(
    content         => 'The customers table has columns: id, name, email, created_at',
    memory_type     => 'entity',
    conversation_id => :'conv',
    importance      => 0.7,
    tags            => '{schema,table}',
    entities        => '{customers}') AS memory_2;

\echo
\echo '-- Searching for ''SQL query preferences'' ...'
SELECT memory_type, round(similarity::numeric, 3) AS similarity, round(score::numeric, 3) AS score,
       left(content, 70) AS content
  FROM memori_search(query => 'SQL query preferences', conversation_id => :'conv', k => 5);

\echo
\echo '-- Step 9: store a rule, then ask in other words'
SELECT memori_store(
    content         => 'User prefers using JOINs instead of subqueries',
    memory_type     => 'rule',
    conversation_id => :'conv',
    importance      => 0.8,
    tags            => '{preference,sql}') AS memory_3;

-- Storing nearly the same thing again refreshes the existing memory (same id, merged tags).
SELECT memori_store(
    content         => 'The user prefers using JOINs instead of subqueries',
    memory_type     => 'rule',
    conversation_id => :'conv',
    importance      => 0.9,
    tags            => '{style}') AS memory_3_again;

SELECT memory_type, round(similarity::numeric, 3) AS similarity, round(score::numeric, 3) AS score,
       importance, context_tags, left(content, 60) AS content
  FROM memori_search(query => 'How does the user prefer SQL queries?', conversation_id => :'conv', k => 5);

\echo
\echo '-- Next steps of the quick-start, inside the database: relationships and prompt context'
SELECT memori_relate('orders.customer_id', 'references', 'customers.id', conversation_id => :'conv') AS relationship;
SELECT memori_store('Always answer in British English', 'rule', importance => 0.9) AS rule;
\echo
\echo 'memori_context(''Write a query listing customers and their orders''):'
\set QUIET on
\pset format unaligned
\pset tuples_only on
SELECT memori_context('Write a query listing customers and their orders');
\pset format aligned
\pset tuples_only off
\set QUIET off

\echo
\echo '-- What is stored. Each search counted an access; memori applies them in the background'
\echo '-- (the maintenance pass, memori.access_counting = deferred), run here at once:'
\o /dev/null
SELECT memori_maintain();
\o
SELECT memory_type, importance_score, access_count, context_tags, embedding_model, embedding_dims,
       expires_at IS NOT NULL AS expires, left(content, 50) AS content
  FROM memori_memories ORDER BY created_at;

\echo
\echo '-- The embedding behind it: all-MiniLM-L6-v2, in-process'
SELECT vector_dims(memori_embed('hello')) AS dims,
       round((1 - (memori_embed('SQL query preferences') <=> memori_embed('How does the user prefer SQL queries?')))::numeric, 3)
         AS cosine_similarity;

\echo
\echo 'memori works. Try: \\df memori_*   and   SELECT * FROM memori_search(''your question'');'
