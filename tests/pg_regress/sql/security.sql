-- Tenancy: two people (granted as user) and one application (granted as app), each in
-- its own session, try each other's memories by every route; PUBLIC gets nothing; a hostile built-in shadow changes nothing.
SET client_min_messages = warning;
DROP ROLE IF EXISTS memori_t_alice, memori_t_bob, memori_t_app, memori_t_nobody;
RESET client_min_messages;
CREATE EXTENSION memori CASCADE;
CREATE ROLE memori_t_alice LOGIN;
SELECT memori_grant('memori_t_alice', 'user');
CREATE ROLE memori_t_bob LOGIN;
SELECT memori_grant('memori_t_bob', 'user');
CREATE ROLE memori_t_app LOGIN;
SELECT memori_grant('memori_t_app', 'app');
CREATE ROLE memori_t_nobody LOGIN;
GRANT USAGE ON SCHEMA public TO memori_t_nobody;

-- Alice stores a memory and a conversation.
\c - memori_t_alice
SELECT memori_conversation_create('alice chat') AS alice_conv \gset
SELECT memori_store('Alice likes window functions', 'rule', :'alice_conv') AS alice_mem \gset
SELECT content, user_id FROM memori_memories;
\c - postgres

-- Bob sees only his own, whatever he tries.
\c - memori_t_bob
SELECT memori_store('Bob likes common table expressions', 'rule') IS NOT NULL AS stored;
SELECT content FROM memori_memories;
SELECT content FROM memori_search('window functions');
SELECT content FROM memori_search('window functions', user_id => 'memori_t_alice');
SET memori.user_id = 'memori_t_alice';
SELECT content FROM memori_search('window functions');
SELECT memori_store('forged through the setting');
RESET memori.user_id;
SELECT memori_update(:'alice_mem', importance => 0.1) AS updated;
SELECT memori_forget(:'alice_mem') AS forgotten;
UPDATE memori_memories SET importance_score = 0 WHERE memory_id = :'alice_mem';
DELETE FROM memori_memories WHERE memory_id = :'alice_mem';
INSERT INTO memori_memories (user_id, content, memory_type) VALUES ('memori_t_alice', 'forged', 'rule');
SELECT set_config('memori_test.alice_conv', :'alice_conv', false) IS NOT NULL AS noted;
DO $$
BEGIN
    PERFORM memori_store('into her conversation', conversation_id => current_setting('memori_test.alice_conv')::uuid);
EXCEPTION WHEN foreign_key_violation THEN
    RAISE NOTICE 'refused (%): %', SQLSTATE, regexp_replace(SQLERRM, '[0-9a-f-]{36}', '<id>');
END;
$$;
SELECT count(*) AS conversations_seen FROM memori_conversations;
SELECT memori_context('window functions', user_id => 'memori_t_alice');
SELECT * FROM memori_entity('x', user_id => 'memori_t_alice');
SELECT * FROM memori_maintain();
\c - postgres

-- The application acts for the end user in memori.user_id, and for nobody while it is unset.
\c - memori_t_app
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT memori_store('no end user named');
BEGIN;
SET LOCAL memori.user_id = 'end-user-1';
SELECT memori_store('End user 1 likes pivot tables', 'rule') IS NOT NULL AS stored;
SELECT content FROM memori_search('pivot tables');
COMMIT;
BEGIN;
SET LOCAL memori.user_id = 'end-user-2';
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT content FROM memori_search('pivot tables');
SELECT memori_store('for another end user', user_id => 'end-user-1');
ROLLBACK;
\c - postgres

-- A role in neither group gets nothing.
\c - memori_t_nobody
SELECT memori_store('x');
SELECT count(*) FROM memori_memories;
\c - postgres

-- Everything is where it should be.
SELECT user_id, content FROM memori_memories ORDER BY user_id;

-- A hostile now() in public does not change memori (its functions put pg_catalog first).
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2999-01-01'::timestamptz $$;
\c - memori_t_alice
SELECT memori_store('a memory that expires in an hour', expires_at => pg_catalog.now() + interval '1 hour') IS NOT NULL AS stored;
SELECT content FROM memori_search('a memory that expires', k => 1);
\c - postgres
DROP FUNCTION public.now();

DROP EXTENSION memori;
DROP EXTENSION vector;
DROP OWNED BY memori_t_nobody;
DROP ROLE memori_t_alice, memori_t_bob, memori_t_app, memori_t_nobody;
