-- Runs last, once pgrx has created the Rust functions: their comments, then grants and RLS.
COMMENT ON FUNCTION memori_conversation_create(text, text, jsonb, bigint) IS
    'memori: creates a conversation for user_id (default: memori.user_id, else current_user) and returns its conversation_id.';
COMMENT ON FUNCTION memori_embed(text) IS
    'memori: the embedding of a text under the current settings (memori.embedding_provider); NULL gives NULL, empty text is an error.';
COMMENT ON FUNCTION memori_embed_batch(text[]) IS
    'memori: the embeddings of several texts, in input order, in batches of memori.embedding_batch_size; a NULL element gives a NULL vector.';
COMMENT ON FUNCTION memori_embedding_stats() IS
    'memori: this backend''s embedding counters: texts embedded, cache hits, HTTP requests sent, local model forward passes.';
COMMENT ON FUNCTION memori_store(text, text, uuid, real, text[], jsonb, text[], timestamptz, text) IS
    'memori: stores a memory (embedded with the configured provider) for user_id (default: memori.user_id, else current_user) and returns its memory_id; a near-duplicate of the same user and type refreshes the existing memory instead.';
COMMENT ON FUNCTION memori_store_batch(text[], text, uuid, real, text[], jsonb, text) IS
    'memori: stores one memory per element of contents, embedded in batches, and returns their ids in input order.';
COMMENT ON FUNCTION memori_search(text, integer, uuid, text[], text[], real, boolean, text) IS
    'memori: the k memories of one user most relevant to query (HNSW cosine search), ordered by score (similarity blended with importance and recency); counts an access for each (best effort: not in read-only or REPEATABLE READ transactions, and not for rows another transaction holds).';
COMMENT ON FUNCTION memori_update(uuid, text, text, real, text[], jsonb) IS
    'memori: changes a memory of the current memori user (re-embedding it when the content changes); false when there is no such memory.';
COMMENT ON FUNCTION memori_forget(uuid) IS
    'memori: deletes a memory of the current memori user; false when there is no such memory.';
COMMENT ON FUNCTION memori_maintain() IS
    'memori: one pass of housekeeping in this database: promotes, expires and archives memories and purges the embedding cache, memori.maintenance_batch_size rows per statement, skipping rows other transactions hold; returns the counts.';
COMMENT ON FUNCTION memori_context(text, integer, uuid, integer, text) IS
    'memori: a ready-to-paste block for a system prompt: the user''s rules, then relevant entity/relationship memories, then other relevant memories, within token_budget.';
COMMENT ON FUNCTION memori_relate(text, text, text, uuid, real, text) IS
    'memori: stores "subject predicate object" as a relationship memory (subject and object in related_entities) and returns its memory_id.';
COMMENT ON FUNCTION memori_end_user() IS
    'memori: the end user a memori_app role acts for in this transaction (memori.user_id, if set in this transaction), else NULL; the row-level security policies use it.';
COMMENT ON FUNCTION memori_entity(text, text) IS
    'memori: the entity and relationship memories of the current memori user that name an entity in related_entities.';

-- ---------------------------------------------------------------------------------------------
-- Tenancy and security (README "Security").
--
-- Two group roles, created if missing (roles belong to the cluster, so DROP EXTENSION leaves
-- them): memori_user, for a role per person, which sees and changes only rows whose user_id is
-- its own role name; memori_app, for a trusted application serving many end users, which acts
-- for the end user named by memori.user_id (SET LOCAL per transaction) and sees nothing while
-- that is unset. Row-level security enforces both, through memori's functions (which run as the
-- caller) and through plain SQL alike.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'memori_user') THEN
        CREATE ROLE memori_user NOLOGIN;
        COMMENT ON ROLE memori_user IS 'memori: members store, search, update and forget their own memories (user_id = their role name).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'memori_app') THEN
        CREATE ROLE memori_app NOLOGIN;
        COMMENT ON ROLE memori_app IS 'memori: trusted application roles; they act for the end user named by memori.user_id (SET LOCAL per transaction).';
    END IF;
END;
$$;

REVOKE ALL ON memori_memories, memori_conversations, memori_embedding_cache, memori_store_locks FROM PUBLIC;
REVOKE ALL ON SEQUENCE memori_memories_id_seq, memori_conversations_id_seq FROM PUBLIC;
-- Tenants read their own rows (row-level security) and write only through memori's functions,
-- which write as the tables' owner for the user they resolved: with no INSERT, UPDATE or
-- DELETE, a tenant can neither choose ids (and squat on the next ones) nor lock a table or
-- another tenant's rows (SELECT allows only ACCESS SHARE locks, which block no writer).
GRANT SELECT ON memori_memories, memori_conversations TO memori_user, memori_app;
-- The embedding cache is shared by everyone (sharing is what makes it a cache), so no tenant
-- may touch it: memori's functions read and write it as the table's owner, with fixed
-- statements, and never return a vector for a text the caller did not give.

-- memori's own functions only (not the rest of the schema's): PUBLIC may not run them.
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) p.oid
               AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::regclass::oid
               AND d.deptype OPERATOR(pg_catalog.=) 'e'::"char"
          JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
               AND e.extname OPERATOR(pg_catalog.=) 'memori'::name
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END;
$$;
GRANT EXECUTE ON FUNCTION
    memori_conversation_create(text, text, jsonb, bigint),
    memori_store(text, text, uuid, real, text[], jsonb, text[], timestamptz, text),
    memori_store_batch(text[], text, uuid, real, text[], jsonb, text),
    memori_search(text, integer, uuid, text[], text[], real, boolean, text),
    memori_update(uuid, text, text, real, text[], jsonb),
    memori_forget(uuid),
    memori_context(text, integer, uuid, integer, text),
    memori_relate(text, text, text, uuid, real, text),
    memori_entity(text, text),
    memori_embed(text),
    memori_embed_batch(text[]),
    memori_embedding_stats(),
    memori_end_user()
  TO memori_user, memori_app;
-- memori_maintain() and memori_create_index() stay with the owner (the DBA) and the worker.

ALTER TABLE memori_memories ENABLE ROW LEVEL SECURITY;
ALTER TABLE memori_conversations ENABLE ROW LEVEL SECURITY;
CREATE POLICY memori_user_own_rows ON memori_memories TO memori_user
    USING (user_id::text = CURRENT_USER::text) WITH CHECK (user_id::text = CURRENT_USER::text);
CREATE POLICY memori_app_end_user_rows ON memori_memories TO memori_app
    USING (user_id::text = memori_end_user()) WITH CHECK (user_id::text = memori_end_user());
CREATE POLICY memori_user_own_rows ON memori_conversations TO memori_user
    USING (user_id::text = CURRENT_USER::text) WITH CHECK (user_id::text = CURRENT_USER::text);
CREATE POLICY memori_app_end_user_rows ON memori_conversations TO memori_app
    USING (user_id::text = memori_end_user()) WITH CHECK (user_id::text = memori_end_user());
COMMENT ON POLICY memori_user_own_rows ON memori_memories IS 'memori: a memori_user member sees and changes only its own memories.';
COMMENT ON POLICY memori_app_end_user_rows ON memori_memories IS 'memori: a memori_app member sees and changes only the memories of the end user named in memori.user_id in this transaction.';
COMMENT ON POLICY memori_user_own_rows ON memori_conversations IS 'memori: a memori_user member sees and changes only its own conversations.';
COMMENT ON POLICY memori_app_end_user_rows ON memori_conversations IS 'memori: a memori_app member sees and changes only the conversations of the end user named in memori.user_id in this transaction.';
