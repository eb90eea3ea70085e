-- The seed's Text2SQL assistant, in SQL: a conversation, chat turns, rules extracted from what
-- the user says, facts that change over time, and a later question whose context carries them.
--
-- Needs a chat model. A superuser points memori at one (any OpenAI-compatible server, or Claude):
--   ALTER SYSTEM SET memori.llm_provider = 'openai';          -- or 'anthropic'
--   ALTER SYSTEM SET memori.llm_url = 'http://127.0.0.1:11434/v1';
--   ALTER SYSTEM SET memori.llm_model = 'llama3.1';
--   ALTER SYSTEM SET memori.llm_api_key = '...';               -- if the provider needs one
--   SELECT pg_reload_conf();
-- Run as a superuser (it starts by erasing the example's user):
--   psql -v ON_ERROR_STOP=1 -f examples/text2sql.sql
\set QUIET on
\pset footer off
SELECT count(*) AS erased FROM memori_erase_user('analyst');

\echo '== A conversation for the analyst, and what the application knows about the schema'
SELECT memori_conversation_create('Sales questions', user_id => 'analyst') AS conv \gset
SELECT memori_store('The orders table has one row per order: id, customer_id, total, created_at.',
                    'entity', :'conv', user_id => 'analyst') IS NOT NULL AS stored;
SELECT memori_store('The user lives in Paris.', 'long_term', user_id => 'analyst') IS NOT NULL AS stored;

\echo '== A chat turn: the user states a rule; memori_chat answers and extracts memories from it'
-- Positional, because extract is an SQL keyword (named: "extract" => true).
SELECT memori_chat('Always use table aliases in the SQL you write for me.', :'conv', NULL, true, 'analyst') AS reply;

\echo '== A fact changes: the old one is kept, closed, and no longer answers'
SELECT action, memory_type, content
  FROM memori_extract('I moved to Berlin last month.', :'conv', user_id => 'analyst');
SELECT content, valid_to IS NOT NULL AS superseded
  FROM memori_memories WHERE user_id = 'analyst' AND memory_type = 'long_term' ORDER BY id;
SELECT content AS lives_now FROM memori_search('Where does the user live?', k => 1, user_id => 'analyst');
SELECT valid_to - interval '1 millisecond' AS before_the_move
  FROM memori_memories WHERE user_id = 'analyst' AND superseded_by IS NOT NULL \gset
SELECT content AS lived_before_the_move
  FROM memori_search('Where does the user live?', k => 1, user_id => 'analyst', as_of => :'before_the_move');

\echo '== A later question: its context carries the rule and the schema knowledge'
SELECT memori_context('Show the total of each order with the customer name', user_id => 'analyst');
SELECT memori_chat('Show the total of each order with the customer name', :'conv', user_id => 'analyst') AS reply;

\echo '== The conversation as stored'
SELECT role, content FROM memori_messages WHERE conversation_id = :'conv' ORDER BY id;
