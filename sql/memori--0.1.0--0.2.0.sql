-- memori 0.1.0 -> 0.2.0. Run by ALTER EXTENSION memori UPDATE; the result is identical to a
-- fresh install of 0.2.0 (tests/system/upgrade.sh compares the catalogs).
\echo Use "ALTER EXTENSION memori UPDATE TO '0.2.0'" to load this file. \quit

-- pgvector 0.8.0 or later: memori's searches use its iterative index scans (hnsw.iterative_scan).
DO $$
DECLARE
    v text := (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'vector');
BEGIN
    IF pg_catalog.string_to_array(pg_catalog.split_part(v, '-', 1), '.')::int[]
       OPERATOR(pg_catalog.<) ARRAY[0, 8, 0] THEN
        RAISE EXCEPTION 'memori needs pgvector 0.8.0 or later, and the vector extension here is version %', v
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Install pgvector 0.8.0 or later, run ALTER EXTENSION vector UPDATE, then update memori.';
    END IF;
END;
$$;

-- Backups: from now on pg_dump holds every memory and conversation (0.1.0 dumps held none).
SELECT pg_catalog.pg_extension_config_dump('memori_conversations', '');
SELECT pg_catalog.pg_extension_config_dump('memori_memories', '');
SELECT pg_catalog.pg_extension_config_dump('memori_conversations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('memori_memories_id_seq', '');

-- NULL elements in tags and entities are refused from now on; drop any stored before.
UPDATE memori_memories SET context_tags = pg_catalog.array_remove(context_tags, NULL)
 WHERE pg_catalog.array_position(context_tags, NULL) IS NOT NULL;
UPDATE memori_memories SET related_entities = pg_catalog.array_remove(related_entities, NULL)
 WHERE pg_catalog.array_position(related_entities, NULL) IS NOT NULL;
-- Checks whose operators are exactly typed (or qualified): they resolve to PostgreSQL's own
-- whatever a role has created on the search path before this update runs.
ALTER TABLE memori_conversations
    DROP CONSTRAINT memori_conversations_user_id_check,
    ADD CONSTRAINT memori_conversations_user_id_check CHECK (user_id::text <> ''::text);
ALTER TABLE memori_memories
    DROP CONSTRAINT memori_memories_memory_type_check,
    DROP CONSTRAINT memori_memories_importance_score_check,
    DROP CONSTRAINT memori_memories_content_check,
    DROP CONSTRAINT memori_memories_user_id_check,
    ADD CONSTRAINT memori_memories_memory_type_check
        CHECK (memory_type::text = ANY (ARRAY['short_term', 'long_term', 'rule', 'entity', 'relationship']::text[])),
    ADD CONSTRAINT memori_memories_importance_score_check
        CHECK (importance_score >= 0::real AND importance_score <= 1::real),
    ADD CONSTRAINT memori_memories_content_check CHECK (pg_catalog.btrim(content) <> ''::text),
    ADD CONSTRAINT memori_memories_user_id_check CHECK (user_id::text <> ''::text),
    ADD CONSTRAINT memori_memories_context_tags_check
        CHECK (pg_catalog.array_position(context_tags, NULL::text) IS NULL),
    ADD CONSTRAINT memori_memories_related_entities_check
        CHECK (pg_catalog.array_position(related_entities, NULL::text) IS NULL);

COMMENT ON FUNCTION memori_search(text, integer, uuid, text[], text[], real, boolean, text) IS
    'memori: the k memories of one user most relevant to query (HNSW cosine search), ordered by score (similarity blended with importance and recency); counts an access for each (best effort: not in read-only or REPEATABLE READ transactions, and not for rows another transaction holds).';
COMMENT ON FUNCTION memori_maintain() IS
    'memori: one pass of housekeeping in this database: promotes, expires and archives memories and purges the embedding cache, memori.maintenance_batch_size rows per statement, skipping rows other transactions hold; returns the counts.';

-- Tenants lose every privilege on the shared embedding cache: memori reaches it as the owner.
REVOKE ALL ON memori_embedding_cache FROM memori_user, memori_app;

-- memori_app roles act only for an end user named in the current transaction: the policies
-- read memori.user_id through memori_end_user(), which ignores a value left by an earlier
-- transaction (a plain SET that a connection pool would hand to the next client).
CREATE  FUNCTION "memori_end_user"() RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_end_user_wrapper';
COMMENT ON FUNCTION memori_end_user() IS
    'memori: the end user a memori_app role acts for in this transaction (memori.user_id, if set in this transaction), else NULL; the row-level security policies use it.';
REVOKE EXECUTE ON FUNCTION memori_end_user() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION memori_end_user() TO memori_user, memori_app;
ALTER POLICY memori_app_end_user_rows ON memori_memories
    USING (user_id::text = memori_end_user()) WITH CHECK (user_id::text = memori_end_user());
ALTER POLICY memori_app_end_user_rows ON memori_conversations
    USING (user_id::text = memori_end_user()) WITH CHECK (user_id::text = memori_end_user());
COMMENT ON POLICY memori_app_end_user_rows ON memori_memories IS 'memori: a memori_app member sees and changes only the memories of the end user named in memori.user_id in this transaction.';
COMMENT ON POLICY memori_app_end_user_rows ON memori_conversations IS 'memori: a memori_app member sees and changes only the conversations of the end user named in memori.user_id in this transaction.';

-- Tenants write only through memori's functions, which write as the owner: no INSERT, UPDATE
-- or DELETE and no sequences, so no id squatting and no table or row locks on others.
REVOKE INSERT, UPDATE, DELETE ON memori_memories, memori_conversations FROM memori_user, memori_app;
REVOKE USAGE ON SEQUENCE memori_memories_id_seq, memori_conversations_id_seq FROM memori_user, memori_app;

-- Serialises near-duplicate checks per user and memory type (memori_store): a store locks its
-- row until commit. memori writes it as the owner; tenants cannot read or lock it, so no tenant
-- can make another wait (an advisory lock's key could be taken by anyone). Unlogged: it holds no
-- data, only lock targets, and rows come back on demand.
CREATE UNLOGGED TABLE memori_store_locks (
    user_id     text NOT NULL,
    memory_type text NOT NULL,
    CONSTRAINT memori_store_locks_pkey PRIMARY KEY (user_id, memory_type)
);
COMMENT ON TABLE memori_store_locks IS
    'memori: one row per user and memory type, locked while a store checks for near-duplicates (tenants have no access).';
COMMENT ON COLUMN memori_store_locks.user_id IS 'The memori user.';
COMMENT ON COLUMN memori_store_locks.memory_type IS 'The memory type.';
REVOKE ALL ON memori_store_locks FROM PUBLIC;
