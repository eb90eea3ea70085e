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

-- Authority is per database (0.1.0's cluster-wide memori_user and memori_app roles authorised
-- a role in every database of the cluster). Tenants now read their own rows and write only
-- through memori's functions, which write as the owner: no INSERT, UPDATE, DELETE or sequence
-- privileges (no id squatting, no locks on other tenants).
DROP POLICY memori_user_own_rows ON memori_memories;
DROP POLICY memori_app_end_user_rows ON memori_memories;
DROP POLICY memori_user_own_rows ON memori_conversations;
DROP POLICY memori_app_end_user_rows ON memori_conversations;
REVOKE ALL ON memori_memories, memori_conversations FROM memori_user, memori_app;
REVOKE ALL ON SEQUENCE memori_memories_id_seq, memori_conversations_id_seq FROM memori_user, memori_app;
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
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM memori_user, memori_app', f);
    END LOOP;
END;
$$;

CREATE  FUNCTION "memori_acting_user"() RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_acting_user_wrapper';
COMMENT ON FUNCTION memori_acting_user() IS
    'memori: the memori user the current role acts for in this database: its own name for a role granted as user, the end user named in memori.user_id in this transaction for a role granted as app, else NULL. The row-level security policies use it.';

CREATE TABLE memori_roles (
    role_name  name NOT NULL,
    kind       text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memori_roles_pkey PRIMARY KEY (role_name),
    CONSTRAINT memori_roles_kind_check CHECK (kind = ANY (ARRAY['user', 'app']::text[]))
);
SELECT pg_catalog.pg_extension_config_dump('memori_roles', '');
COMMENT ON TABLE memori_roles IS
    'memori: the roles that may use memori in this database (memori_grant, memori_revoke), and how: user (acts for itself) or app (acts for the end user it names).';
COMMENT ON COLUMN memori_roles.role_name IS 'The role (or group role) granted.';
COMMENT ON COLUMN memori_roles.kind IS 'user: acts only for itself (user_id = its role name); app: acts for the end user named in memori.user_id in each transaction.';
COMMENT ON COLUMN memori_roles.granted_at IS 'When it was granted.';

-- Grants a role access to memori in this database.
CREATE FUNCTION memori_grant(role regrole, kind text DEFAULT 'user') RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    f text;
BEGIN
    IF kind IS NULL OR kind OPERATOR(pg_catalog.<>) ALL (ARRAY['user', 'app']::text[]) THEN
        RAISE EXCEPTION 'memori: kind must be user or app, not %', coalesce(kind, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'user: a person''s role, which acts only for itself; app: an application role, which names its end user in memori.user_id in each transaction.';
    END IF;
    IF role IS NULL OR role OPERATOR(pg_catalog.=) 0::oid THEN
        RAISE EXCEPTION 'memori: a role is needed' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO @extschema@.memori_roles (role_name, kind)
        SELECT r.rolname, kind FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) role
        ON CONFLICT ON CONSTRAINT memori_roles_pkey DO UPDATE SET kind = EXCLUDED.kind, granted_at = now();
    EXECUTE pg_catalog.format('GRANT SELECT ON @extschema@.memori_memories, @extschema@.memori_conversations TO %s', role);
    FOREACH f IN ARRAY @extschema@.memori_api() LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', f, role);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION memori_grant(regrole, text) IS
    'memori: gives a role access to memori in this database, as a user (acts for itself) or an app (acts for the end user it names in each transaction); records it in memori_roles.';

-- Takes a role's access away in this database.
CREATE FUNCTION memori_revoke(role regrole) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    f text;
    had boolean;
BEGIN
    DELETE FROM @extschema@.memori_roles
     WHERE role_name OPERATOR(pg_catalog.=) (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) role);
    had := FOUND;
    EXECUTE pg_catalog.format('REVOKE SELECT ON @extschema@.memori_memories, @extschema@.memori_conversations FROM %s', role);
    FOREACH f IN ARRAY @extschema@.memori_api() LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %s', f, role);
    END LOOP;
    RETURN had;
END;
$$;
COMMENT ON FUNCTION memori_revoke(regrole) IS
    'memori: takes a role''s access to memori away in this database; false when it had none.';

-- The functions a granted role may run (everything but the DBA's).
CREATE FUNCTION memori_api() RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
SELECT ARRAY[
    '@extschema@.memori_conversation_create(text, text, jsonb, bigint)',
    '@extschema@.memori_store(text, text, uuid, real, text[], jsonb, text[], timestamptz, text)',
    '@extschema@.memori_store_batch(text[], text, uuid, real, text[], jsonb, text)',
    '@extschema@.memori_search(text, integer, uuid, text[], text[], real, boolean, text)',
    '@extschema@.memori_update(uuid, text, text, real, text[], jsonb)',
    '@extschema@.memori_forget(uuid)',
    '@extschema@.memori_context(text, integer, uuid, integer, text)',
    '@extschema@.memori_relate(text, text, text, uuid, real, text)',
    '@extschema@.memori_entity(text, text)',
    '@extschema@.memori_embed(text)',
    '@extschema@.memori_embed_batch(text[])',
    '@extschema@.memori_embedding_stats()']::text[]
$$;
COMMENT ON FUNCTION memori_api() IS
    'memori: the functions memori_grant() lets a role run (all but memori_maintain, memori_create_index, memori_grant and memori_revoke, which stay with the DBA).';

REVOKE ALL ON memori_roles FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION memori_acting_user(), memori_grant(regrole, text), memori_revoke(regrole), memori_api() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION memori_acting_user() TO PUBLIC;

CREATE POLICY memori_acting_user_rows ON memori_memories
    USING (user_id::text = memori_acting_user()) WITH CHECK (user_id::text = memori_acting_user());
CREATE POLICY memori_acting_user_rows ON memori_conversations
    USING (user_id::text = memori_acting_user()) WITH CHECK (user_id::text = memori_acting_user());
COMMENT ON POLICY memori_acting_user_rows ON memori_memories IS 'memori: a granted role sees only the memories of the memori user it acts for (memori_acting_user()).';
COMMENT ON POLICY memori_acting_user_rows ON memori_conversations IS 'memori: a granted role sees only the conversations of the memori user it acts for (memori_acting_user()).';

-- Who had access under 0.1.0 keeps it in this database: the two group roles are granted here
-- as before. They are cluster-wide, so their members may be meant for other databases only:
-- review them, and grant roles per database instead (see README "Security").
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'memori_user'::name) THEN
        PERFORM memori_grant('memori_user'::regrole, 'user');
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'memori_app'::name) THEN
        PERFORM memori_grant('memori_app'::regrole, 'app');
    END IF;
    RAISE NOTICE 'memori 0.2.0: access is now granted per database with memori_grant(); the cluster-wide roles memori_user and memori_app keep their access in database %', pg_catalog.current_database()
        USING HINT = 'Grant the roles that need memori here (SELECT memori_grant(''role'', ''user'' or ''app'')), then SELECT memori_revoke(''memori_user''), memori_revoke(''memori_app'').';
END;
$$;
