-- Runs last, once pgrx has created the Rust functions: their comments, then grants and RLS.
COMMENT ON FUNCTION memori_conversation_create(text, text, jsonb, bigint) IS
    'memori: creates a conversation for user_id (default: memori.user_id, else current_user) and returns its conversation_id.';
COMMENT ON FUNCTION memori_embed(text) IS
    'memori: the embedding of a text under the current settings (memori.embedding_provider); NULL gives NULL, empty text is an error.';
COMMENT ON FUNCTION memori_embed_batch(text[]) IS
    'memori: the embeddings of several texts, in input order, in batches of memori.embedding_batch_size; a NULL element gives a NULL vector.';
COMMENT ON FUNCTION memori_embedding_stats() IS
    'memori: this backend''s embedding counters: texts embedded, cache hits, HTTP requests sent, local model forward passes.';
COMMENT ON FUNCTION memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text, timestamptz) IS
    'memori: stores a memory (embedded with the configured provider) for user_id (default: memori.user_id, else current_user) and returns its memory_id; event_at says when what it says happened, if known. A near-duplicate of the same user, type and conversation (similarity >= memori.dedup_threshold; for relationships, the same triple) is merged instead: it takes the new content and the id stays, with a NOTICE.';
COMMENT ON FUNCTION memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text, timestamptz) IS
    'memori: stores one memory per element of contents, embedded in batches, and returns their ids in input order (near-duplicates merged as memori_store does); event_at applies to every one.';
COMMENT ON FUNCTION memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean, timestamptz, timestamptz, timestamptz) IS
    'memori: the k memories of one user most relevant to query (min(k, matching) rows, always), ordered by score (relevance blended with importance and recency). mode: hybrid (the similarity plus half the full-text score), vector or text; default memori.search_mode. explain => true fills the explain column. Only memories valid now (not superseded); as_of => a moment answers with the memories valid then (archiving ignored, no access counted). event_from/event_to keep the memories whose event time (event_at, else created_at) is in [event_from, event_to). Counts an access for each row (memori.access_counting; best effort).';
COMMENT ON FUNCTION memori_extract(text, uuid, text) IS
    'memori: memories from one conversation turn: the chat model (memori.llm_provider) sees the turn and the user''s most relevant memories and decides, in one call, what to add, update or supersede; memori checks every decision and applies them all or none. One row per decision (action, memory_id, memory_type, content).';
COMMENT ON FUNCTION memori_chat(text, uuid, integer, boolean, text) IS
    'memori: the chat model''s reply to a message, with the user''s memories (memori_context) in its system prompt and the conversation''s latest turns (memori.chat_history_messages, within token_budget); stores both turns in memori_messages and, with extract (default memori.chat_extract), runs memori_extract on the message.';
COMMENT ON FUNCTION memori_update(uuid, text, text, double precision, text[], jsonb) IS
    'memori: changes a memory of the current memori user (re-embedding it when the content changes); false when there is no such memory.';
COMMENT ON FUNCTION memori_forget(uuid) IS
    'memori: deletes a memory of the current memori user; false when there is no such memory.';
COMMENT ON FUNCTION memori_maintain() IS
    'memori: one pass of housekeeping in this database: promotes, expires and archives memories and purges the embedding cache, memori.maintenance_batch_size rows per statement, skipping rows other transactions hold; returns the counts.';
COMMENT ON FUNCTION memori_context(text, integer, uuid, integer, text) IS
    'memori: a ready-to-paste block for a system prompt: the user''s rules, then relevant entity/relationship memories, then other relevant memories, within token_budget.';
COMMENT ON FUNCTION memori_relate(text, text, text, uuid, double precision, text) IS
    'memori: stores "subject predicate object" as a relationship memory (subject and object in related_entities) and returns its memory_id.';
COMMENT ON FUNCTION memori_acting_user() IS
    'memori: the memori user the current role acts for in this database: its own name for a role granted as user, the end user named in memori.user_id in this transaction for a role granted as app, else NULL. The row-level security policies use it.';
COMMENT ON FUNCTION memori_entity(text, text) IS
    'memori: the entity and relationship memories of the current memori user that name an entity in related_entities.';

-- Full-text document of a memory (see src/base/text.rs): the words, with `.` and `_` read as spaces,
-- under the given configuration, plus the identifier tokens under the simple configuration.
-- Immutable for a given configuration; memori writes it into content_tsv and runs every query
-- through it too.
CREATE FUNCTION memori_text_document(content text, config regconfig) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
SELECT pg_catalog.to_tsvector(config, pg_catalog.translate(content, '._', '  '))
       OPERATOR(pg_catalog.||)
       pg_catalog.to_tsvector('pg_catalog.simple'::regconfig, @extschema@.memori_identifiers(content))
$$;
COMMENT ON FUNCTION memori_text_document(text, regconfig) IS
    'memori: the full-text document of a text: its words (with . and _ read as spaces) under config, plus each SQL identifier and dotted suffix kept whole (orders.customer_id gives orderscustomerid and customerid).';
COMMENT ON FUNCTION memori_identifiers(text) IS
    'memori: the identifier tokens of a text, for memori_text_document: one per identifier holding . or _ and per dotted suffix, lowercased, without separators.';

-- Which of a question's terms a memory's document holds (src/base/text.rs): a hybrid search reads
-- it for every memory in scope. It runs no SQL and resolves no name, so it has no SET clause:
-- one would cost a save and restore of the configuration per memory read.
CREATE FUNCTION memori_term_mask(document tsvector, terms tsvector) RETURNS bigint
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'memori_term_mask_wrapper';
COMMENT ON FUNCTION memori_term_mask(tsvector, tsvector) IS
    'memori: which lexemes of terms the document holds: bit i for the i-th in terms (in unnest order, from 0; the first 64), as document @@ lexeme::tsquery says (positions and weights play no part).';

-- One end user's data as a whole (README "Erasing and exporting a user"): the DBA's functions.
CREATE FUNCTION memori_export(user_id text, include_embeddings boolean DEFAULT false) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
-- PL/pgSQL, not SQL: on Citus, a SQL function's parameters cannot reach a distributed plan.
RETURN QUERY
SELECT s.line FROM (
    SELECT 0 AS part, 0::bigint AS id,
           pg_catalog.jsonb_build_object('kind', 'memori_export', 'format', 1, 'user_id', $1,
               'exported_at', pg_catalog.now(),
               'version', (SELECT e.extversion FROM pg_catalog.pg_extension e
                            WHERE e.extname OPERATOR(pg_catalog.=) 'memori'::name)) AS line
    UNION ALL
    SELECT 1, c.id,
           pg_catalog.jsonb_build_object('kind', 'conversation', 'conversation_id', c.conversation_id,
               'title', c.title, 'metadata', c.metadata, 'data_source_id', c.data_source_id,
               'is_active', c.is_active, 'created_at', c.created_at, 'updated_at', c.updated_at,
               'last_activity_at', c.last_activity_at)
      FROM @extschema@.memori_conversations c
     WHERE c.user_id::text = $1::text
    UNION ALL
    SELECT 3, x.id,
           pg_catalog.jsonb_build_object('kind', 'message', 'conversation_id', x.conversation_id,
               'role', x.role, 'content', x.content, 'model', x.model, 'created_at', x.created_at)
      FROM @extschema@.memori_messages x
     WHERE x.user_id::text = $1::text
    UNION ALL
    SELECT 2, m.id,
           pg_catalog.jsonb_build_object('kind', 'memory', 'memory_id', m.memory_id,
               'conversation_id', m.conversation_id, 'content', m.content, 'memory_type', m.memory_type,
               'importance', m.importance_score, 'access_count', m.access_count,
               'last_accessed_at', m.last_accessed_at, 'context_tags', m.context_tags,
               'related_entities', m.related_entities, 'metadata', m.metadata, 'expires_at', m.expires_at,
               'is_archived', m.is_archived, 'created_at', m.created_at, 'updated_at', m.updated_at,
               'embedding_model', m.embedding_model, 'valid_to', m.valid_to, 'superseded_by', m.superseded_by,
               'event_at', m.event_at)
           OPERATOR(pg_catalog.||)
           CASE WHEN $2 AND m.embedding IS NOT NULL
                THEN pg_catalog.jsonb_build_object('embedding', m.embedding::text::jsonb)
                ELSE '{}'::jsonb END
      FROM @extschema@.memori_memories m
     WHERE m.user_id::text = $1::text) s
 ORDER BY s.part, s.id;
END;
$$;
COMMENT ON FUNCTION memori_export(text, boolean) IS
    'memori: one user''s conversations, memories and chat messages as JSON lines (a header, then one object per conversation, memory and message; embeddings when include_embeddings), for memori_import() here or in another database.';

CREATE FUNCTION memori_erase_user(user_id text)
RETURNS TABLE(memories bigint, conversations bigint, cache_entries bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    who text := pg_catalog.btrim(memori_erase_user.user_id);
    m bigint;
    c bigint;
    e bigint;
BEGIN
    IF who IS NULL THEN
        RAISE EXCEPTION 'memori: user_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF who OPERATOR(pg_catalog.=) ''::text THEN
        RAISE EXCEPTION 'memori: user_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Every cache entry of this user: contents, earlier contents, questions and chat turns.
    DELETE FROM @extschema@.memori_embedding_cache k WHERE k.user_id OPERATOR(pg_catalog.=) who;
    GET DIAGNOSTICS e = ROW_COUNT;
    DELETE FROM @extschema@.memori_memories x WHERE x.user_id::text = who;
    GET DIAGNOSTICS m = ROW_COUNT;
    DELETE FROM @extschema@.memori_messages x WHERE x.user_id::text = who;
    DELETE FROM @extschema@.memori_conversations x WHERE x.user_id::text = who;
    GET DIAGNOSTICS c = ROW_COUNT;
    DELETE FROM @extschema@.memori_store_locks x WHERE x.user_id OPERATOR(pg_catalog.=) who;
    RETURN QUERY SELECT m, c, e;
END;
$$;
COMMENT ON FUNCTION memori_erase_user(text) IS
    'memori: deletes every memory, conversation and chat message of one user and the cached embeddings of their texts (a GDPR erasure) and returns the counts of memories, conversations and cache entries; backups and WAL keep what they hold until they expire.';
COMMENT ON FUNCTION memori_import(jsonb[], text) IS
    'memori: loads the rows memori_export() returned (default user: the one the export names), keeping ids, timestamps and counters; memories embedded by another model, or exported without embeddings, are embedded again. All or nothing.';

-- Monitoring (README "Monitoring"): what memori holds and, for the DBA, what it has done.
CREATE FUNCTION memori_stats() RETURNS TABLE(metric text, labels jsonb, value double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    dba boolean := EXISTS (SELECT FROM pg_catalog.pg_roles r
                            WHERE r.rolname OPERATOR(pg_catalog.=) current_user
                              AND (r.rolsuper OR r.rolbypassrls))
                   OR pg_catalog.pg_has_role('pg_monitor', 'MEMBER');
    -- memori's tables that Citus distributes (their shards hold the bytes).
    dist pg_catalog.oid[] := '{}';
BEGIN
    -- What the caller may see of the tables: everything for the DBA, a tenant its own rows.
    RETURN QUERY
    SELECT 'memories'::text,
           pg_catalog.jsonb_build_object('type', m.memory_type::text, 'state',
               CASE WHEN m.expires_at IS NOT NULL AND m.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN 'expired'
                    WHEN m.valid_to IS NOT NULL THEN 'superseded'
                    WHEN m.is_archived THEN 'archived' ELSE 'live' END),
           pg_catalog.count(*)::float8
      FROM @extschema@.memori_memories m GROUP BY 2;
    RETURN QUERY
    SELECT 'memories_by_width'::text, pg_catalog.jsonb_build_object('dims', m.embedding_dims, 'model', m.embedding_model),
           pg_catalog.count(*)::float8
      FROM @extschema@.memori_memories m GROUP BY 2;
    RETURN QUERY SELECT 'users'::text, '{}'::jsonb, pg_catalog.count(DISTINCT m.user_id)::float8 FROM @extschema@.memori_memories m;
    RETURN QUERY SELECT 'conversations'::text, '{}'::jsonb, pg_catalog.count(*)::float8 FROM @extschema@.memori_conversations c;
    -- A monitoring role granted before 0.4.0 may not read messages: it still gets the rest.
    IF pg_catalog.has_table_privilege('@extschema@.memori_messages', 'SELECT') THEN
        RETURN QUERY SELECT 'messages'::text, pg_catalog.jsonb_build_object('role', x.role), pg_catalog.count(*)::float8
          FROM @extschema@.memori_messages x GROUP BY 2;
    END IF;
    IF NOT dba THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'cache_entries'::text, '{}'::jsonb, pg_catalog.count(*)::float8 FROM @extschema@.memori_embedding_cache k;
    IF EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus'::name) THEN
        SELECT pg_catalog.array_agg(p.logicalrelid::pg_catalog.oid) INTO dist FROM pg_catalog.pg_dist_partition p
         WHERE p.logicalrelid OPERATOR(pg_catalog.=) ANY (ARRAY['@extschema@.memori_memories'::regclass,
                   '@extschema@.memori_conversations'::regclass, '@extschema@.memori_messages'::regclass]);
        dist := coalesce(dist, '{}');
        -- A distributed table's bytes are its shards': the table (main fork) and its indexes
        -- together, over every worker (Citus sizes no single index of a distributed table).
        RETURN QUERY
        SELECT 'relation_bytes'::text, pg_catalog.jsonb_build_object('relation', c.relname::text, 'kind', 'table', 'distributed', true),
               pg_catalog.citus_relation_size(c.oid)::float8
          FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) ANY (dist)
        UNION ALL
        SELECT 'relation_bytes'::text, pg_catalog.jsonb_build_object('relation', c.relname::text, 'kind', 'indexes', 'distributed', true),
               (pg_catalog.citus_total_relation_size(c.oid) OPERATOR(pg_catalog.-) pg_catalog.citus_table_size(c.oid))::float8
          FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) ANY (dist);
    END IF;
    RETURN QUERY
    SELECT 'relation_bytes'::text, pg_catalog.jsonb_build_object('relation', c.relname::text, 'kind',
               CASE c.relkind WHEN 'i'::"char" THEN 'index' ELSE 'table' END),
           pg_catalog.pg_relation_size(c.oid)::float8
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) c.oid
           AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::regclass::oid
           AND d.deptype OPERATOR(pg_catalog.=) 'e'::"char"
      JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
           AND e.extname OPERATOR(pg_catalog.=) 'memori'::name
     WHERE c.relkind OPERATOR(pg_catalog.=) 'r'::"char" AND c.oid OPERATOR(pg_catalog.<>) ALL (dist)
    UNION ALL
    SELECT 'relation_bytes'::text, pg_catalog.jsonb_build_object('relation', i.relname::text, 'kind', 'index'),
           pg_catalog.pg_relation_size(i.oid)::float8
      FROM pg_catalog.pg_index x
      JOIN pg_catalog.pg_class i ON i.oid OPERATOR(pg_catalog.=) x.indexrelid
     WHERE x.indrelid OPERATOR(pg_catalog.=) ANY (ARRAY['@extschema@.memori_memories'::regclass::oid,
               '@extschema@.memori_conversations'::regclass::oid, '@extschema@.memori_embedding_cache'::regclass::oid,
               '@extschema@.memori_messages'::regclass::oid])
       AND x.indrelid OPERATOR(pg_catalog.<>) ALL (dist);
    RETURN QUERY SELECT 'counters_available'::text, '{}'::jsonb,
           CASE WHEN EXISTS (SELECT FROM @extschema@.memori_counters()) THEN 1::float8 ELSE 0::float8 END;
    RETURN QUERY SELECT k.metric, k.labels, k.value FROM @extschema@.memori_counters() k;
    -- Texts served from the cache, of all texts asked for.
    RETURN QUERY
    SELECT 'embedding_cache_hit_ratio'::text, '{}'::jsonb, h.value / (h.value + t.total)
      FROM (SELECT k.value FROM @extschema@.memori_counters() k
             WHERE k.metric OPERATOR(pg_catalog.=) 'embedding_cache_hits_total'::text) h,
           (SELECT pg_catalog.sum(k.value) AS total FROM @extschema@.memori_counters() k
             WHERE k.metric OPERATOR(pg_catalog.=) 'embedding_texts_total'::text) t
     WHERE h.value + t.total > 0::float8;
END;
$$;
COMMENT ON FUNCTION memori_stats() IS
    'memori: figures as (metric, labels, value) rows: memories by type and state (live, archived, expired, superseded) and by width, users, conversations, messages by role (a tenant: its own); for the DBA also cache entries, table and index sizes and the counters since the server started (memori_counters; counters_available = 0 without preloading).';
COMMENT ON FUNCTION memori_counters() IS
    'memori: the server-wide counters (embedding calls, texts, errors by SQLSTATE class and latency per provider; cache hits; searches, stores, merges; maintenance passes and rows; chat calls, errors and latency; extraction decisions), kept in shared memory when memori is preloaded; no rows otherwise.';
COMMENT ON FUNCTION memori_stats_reset() IS
    'memori: sets the counters to 0 (false when memori is not preloaded).';

-- Changing the embedding model online (README "Changing the embedding model"). A procedure, so
-- it commits after each batch; no SET clause (a procedure with one cannot commit), so every
-- name is qualified.
CREATE PROCEDURE memori_reembed(batch_size integer DEFAULT 500)
LANGUAGE plpgsql
AS $$
DECLARE
    moved bigint;
    remaining bigint;
BEGIN
    LOOP
        SELECT b.reembedded, b.remaining INTO moved, remaining
          FROM @extschema@.memori_reembed_batch(batch_size) b;
        COMMIT;
        RAISE NOTICE 'memori: re-embedded % memories, % to go', moved, remaining;
        EXIT WHEN moved OPERATOR(pg_catalog.=) 0::bigint OR remaining OPERATOR(pg_catalog.=) 0::bigint;
    END LOOP;
END;
$$;
COMMENT ON PROCEDURE memori_reembed(integer) IS
    'memori: moves every memory to the configured embedding model, batch_size at a time, committing after each batch (CALL it outside a transaction block; after a cancel or crash, CALL it again to go on). Searches see the memories moved so far.';
COMMENT ON FUNCTION memori_reembed_batch(integer) IS
    'memori: one batch of memori_reembed(): re-embeds up to batch_size memories not yet embedded by the configured model (skipping rows other transactions hold); returns how many it moved and how many remain.';
COMMENT ON FUNCTION memori_reembed_progress() IS
    'memori: how far the move to the configured embedding model has come: total, done, remaining, when it started, when the last batch committed, rows per second.';

-- On a Citus coordinator, each worker keeps its own copy of the grants: the policies on the
-- shards call memori_acting_user() there, which reads the worker's memori_roles. Each worker
-- records its own oid of the role (roles are propagated by name; oids differ between nodes).
CREATE FUNCTION memori_sync_grants(role_names name[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    granted pg_catalog.jsonb;
    cmd pg_catalog.text;
    r record;
    n integer := 0;
BEGIN
    -- Three statements: Citus's objects are looked up only once Citus is known to be there.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus'::name) THEN
        RETURN 0;
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RETURN 0;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                    WHERE p.logicalrelid OPERATOR(pg_catalog.=) '@extschema@.memori_memories'::regclass) THEN
        RETURN 0;
    END IF;
    -- The grants of live roles (all of them, or those named), as the coordinator has them.
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('role_name', x.role_name, 'kind', x.kind, 'namespace', x.namespace)), '[]'::pg_catalog.jsonb)
      INTO granted
      FROM @extschema@.memori_roles x
      JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) x.role_oid AND g.rolname OPERATOR(pg_catalog.=) x.role_name
     WHERE role_names IS NULL OR x.role_name OPERATOR(pg_catalog.=) ANY (role_names);
    cmd := pg_catalog.format(
        'WITH w AS (SELECT * FROM pg_catalog.jsonb_to_recordset(%2$L::pg_catalog.jsonb) AS w(role_name pg_catalog.name, kind pg_catalog.text, namespace pg_catalog.text)),
              d AS (DELETE FROM %1$s.memori_roles r WHERE (%3$L::pg_catalog.name[] IS NULL OR r.role_name OPERATOR(pg_catalog.=) ANY (%3$L::pg_catalog.name[]))
                       AND NOT EXISTS (SELECT 1 FROM w WHERE w.role_name OPERATOR(pg_catalog.=) r.role_name) RETURNING 1),
              i AS (INSERT INTO %1$s.memori_roles AS r (role_name, kind, namespace, role_oid)
                    SELECT w.role_name, w.kind, w.namespace, g.oid FROM w JOIN pg_catalog.pg_roles g ON g.rolname OPERATOR(pg_catalog.=) w.role_name
                    ON CONFLICT ON CONSTRAINT memori_roles_pkey
                    DO UPDATE SET kind = EXCLUDED.kind, namespace = EXCLUDED.namespace, role_oid = EXCLUDED.role_oid, granted_at = pg_catalog.now()
                    RETURNING 1)
         SELECT (SELECT pg_catalog.count(*) FROM i)::pg_catalog.text',
        '@extschema@', granted, role_names);
    -- Each worker commits on a connection of its own (not in the caller's transaction): a
    -- worker that could not take the grants keeps what it had, which fails closed (a tenant's
    -- direct reads there show nothing); a warning says so, and this function, run again after
    -- the caller's commit, repairs it.
    FOR r IN SELECT * FROM pg_catalog.run_command_on_workers(cmd) LOOP
        IF NOT r.success THEN
            RAISE WARNING 'memori: the grants could not be sent to worker %:%: %', r.nodename, r.nodeport, r.result
                USING HINT = 'Once the worker is back, SELECT memori_sync_grants(); on the coordinator.';
        ELSIF r.result OPERATOR(pg_catalog.<>) pg_catalog.jsonb_array_length(granted)::pg_catalog.text THEN
            RAISE WARNING 'memori: worker %:% lacks a granted role (% of % found there)', r.nodename, r.nodeport, r.result, pg_catalog.jsonb_array_length(granted)
                USING HINT = 'A role created in this same transaction reaches the workers only at commit: after it, SELECT memori_sync_grants(); on the coordinator.';
        ELSE
            n := n OPERATOR(pg_catalog.+) 1;
        END IF;
    END LOOP;
    RETURN n;
END;
$$;
COMMENT ON FUNCTION memori_sync_grants(name[]) IS
    'memori: on a Citus coordinator with memori distributed, sends memori_roles (all grants, or those of the roles named) to every worker, where each records its own oid of the role, so that the policies on the shards know the granted roles; returns how many workers took them (0 elsewhere), warning of the others. memori_grant, memori_revoke and memori_distribute call it; run it after ALTER EXTENSION memori UPDATE on every node, or after a warning. Not transactional: each worker commits on its own. The DBA''s.';

-- Scale-out (README "Scaling out"): on a Citus coordinator, distributes memori's user data by
-- user_id, co-located, so that each user's memories, conversations and messages live on one
-- worker and a user's queries go to that worker alone. The cache, settings and registries stay
-- on the coordinator.
CREATE FUNCTION memori_distribute() RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    t text;
    done text[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'citus'::name) THEN
        RAISE EXCEPTION 'memori: Citus is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'On the coordinator: CREATE EXTENSION citus; add the workers (citus_add_node), each with memori installed, then SELECT memori_distribute();';
    END IF;
    FOREACH t IN ARRAY ARRAY['memori_conversations', 'memori_memories', 'memori_messages'] LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_dist_partition p
                    WHERE p.logicalrelid OPERATOR(pg_catalog.=) pg_catalog.format('@extschema@.%I', t)::regclass) THEN
            CONTINUE;
        END IF;
        IF t OPERATOR(pg_catalog.=) 'memori_conversations'::text THEN
            PERFORM pg_catalog.create_distributed_table(pg_catalog.format('@extschema@.%I', t)::regclass, 'user_id');
        ELSE
            PERFORM pg_catalog.create_distributed_table(pg_catalog.format('@extschema@.%I', t)::regclass, 'user_id',
                                             colocate_with => '@extschema@.memori_conversations');
        END IF;
        done := done OPERATOR(pg_catalog.||) t;
    END LOOP;
    -- The coordinator's own copy of rows that existed before: the shards hold them now (once all
    -- three are distributed, as their foreign keys want).
    FOREACH t IN ARRAY done LOOP
        PERFORM pg_catalog.truncate_local_data_after_distributing_table(pg_catalog.format('@extschema@.%I', t)::regclass);
    END LOOP;
    -- Tenants' direct reads: the policies on the shards read the workers' memori_roles.
    PERFORM @extschema@.memori_sync_grants();
    RETURN CASE WHEN pg_catalog.cardinality(done) OPERATOR(pg_catalog.=) 0 THEN 'memori is distributed already'
                ELSE 'distributed by user_id: ' OPERATOR(pg_catalog.||) pg_catalog.array_to_string(done, ', ') END;
END;
$$;
COMMENT ON FUNCTION memori_distribute() IS
    'memori: on a Citus coordinator, distributes memori_conversations, memori_memories and memori_messages by user_id, co-located (each user on one worker); idempotent. The DBA''s.';

-- ---------------------------------------------------------------------------------------------
-- Tenancy and security (README "Security").
--
-- Authority is per database: a DBA grants a role access in this database with
-- memori_grant(role, 'user') (a person: acts only for itself) or memori_grant(role, 'app') (an
-- application: acts for the end user it names in memori.user_id in each transaction). The grant
-- is recorded in memori_roles and gives the role SELECT on its own rows (row-level security)
-- and EXECUTE on memori's functions, in this database only: roles are cluster-wide, but these
-- privileges and the registry are not. Group roles may be granted; their members inherit.
CREATE TABLE memori_roles (
    role_name  name NOT NULL,
    kind       text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    namespace  text,
    role_oid   oid NOT NULL,
    CONSTRAINT memori_roles_pkey PRIMARY KEY (role_name),
    CONSTRAINT memori_roles_kind_check CHECK (kind = ANY (ARRAY['user', 'app']::text[])),
    CONSTRAINT memori_roles_namespace_check
        CHECK ((kind = 'app') = (namespace IS NOT NULL) AND strpos(namespace, '/') = 0 AND octet_length(namespace) <= 63)
);
SELECT pg_catalog.pg_extension_config_dump('memori_roles', '');
COMMENT ON TABLE memori_roles IS
    'memori: the roles that may use memori in this database (memori_grant, memori_revoke), and how: user (acts for itself) or app (acts for the end user it names).';
COMMENT ON COLUMN memori_roles.role_name IS 'The role (or group role) granted.';
COMMENT ON COLUMN memori_roles.kind IS 'user: acts only for itself (user_id = its role name); app: acts for the end user named in memori.user_id in each transaction.';
COMMENT ON COLUMN memori_roles.granted_at IS 'When it was granted.';
COMMENT ON COLUMN memori_roles.role_oid IS 'The role granted (its oid): a grant holds only for that role, not for another that takes the name later (0: a role that no longer existed when 0.5.0 was installed).';
COMMENT ON COLUMN memori_roles.namespace IS 'For an app: the namespace of its end users (end user u is the memori user <namespace>/u; empty: u itself, for apps granted before 0.5.0). NULL for a user.';

-- Grants a role access to memori in this database.
CREATE FUNCTION memori_grant(role regrole, kind text DEFAULT 'user', namespace text DEFAULT NULL, adopt boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    f text;
    rname pg_catalog.name;
    ns pg_catalog.text;
BEGIN
    IF kind IS NULL OR kind OPERATOR(pg_catalog.<>) ALL (ARRAY['user', 'app']::pg_catalog.text[]) THEN
        RAISE EXCEPTION 'memori: kind must be user or app, not %', coalesce(kind, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'user: a person''s role, which acts only for itself; app: an application role, which names its end user in memori.user_id in each transaction.';
    END IF;
    IF role IS NULL OR role OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN
        RAISE EXCEPTION 'memori: a role is needed' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT r.rolname INTO rname FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) role;
    IF kind OPERATOR(pg_catalog.=) 'user'::pg_catalog.text AND namespace IS NOT NULL THEN
        RAISE EXCEPTION 'memori: a role granted as user has no namespace: it acts only for itself'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A person's memori user is its role name: with a "/", it would be an app's end user.
    IF kind OPERATOR(pg_catalog.=) 'user'::pg_catalog.text AND pg_catalog.strpos(rname, '/') OPERATOR(pg_catalog.<>) 0 THEN
        RAISE EXCEPTION 'memori: role "%" cannot be granted as user: its name holds "/", which names app end users (<namespace>/<end user>)', rname
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text THEN
        -- Its own namespace unless the DBA names one (a grant again keeps the one it had).
        ns := coalesce(namespace,
                  (SELECT r.namespace FROM @extschema@.memori_roles r
                    WHERE r.role_name OPERATOR(pg_catalog.=) rname AND r.kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text),
                  rname::pg_catalog.text);
        IF pg_catalog.strpos(ns, '/') OPERATOR(pg_catalog.<>) 0 OR pg_catalog.octet_length(ns) OPERATOR(pg_catalog.>) 63 THEN
            RAISE EXCEPTION 'memori: namespace "%" is not one name of at most 63 bytes without "/"', ns
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An app''s end user "u" is the memori user "<namespace>/u"; apps granted one namespace share their end users.';
        END IF;
    END IF;
    -- Memories this grant would reach that this very role was not granted before (a role
    -- dropped or renamed and its name taken again, an app's end users, an end user named like
    -- the role, a restore into another cluster, where role oids differ) are not handed to it
    -- unless the DBA says so (adopt): decided from the data, not from the registry.
    IF NOT adopt AND kind OPERATOR(pg_catalog.=) 'user'::pg_catalog.text
       AND EXISTS (SELECT 1 FROM @extschema@.memori_memories m WHERE m.user_id::pg_catalog.text OPERATOR(pg_catalog.=) rname::pg_catalog.text)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.memori_roles r
                        WHERE r.role_name OPERATOR(pg_catalog.=) rname AND r.kind OPERATOR(pg_catalog.=) 'user'::pg_catalog.text
                          AND r.role_oid OPERATOR(pg_catalog.=) role::pg_catalog.oid) THEN
        RAISE EXCEPTION 'memori: the memori user "%" holds memories this role was not granted', rname
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'They were stored for another role of that name (dropped or renamed since, or in the cluster this database was restored from), or for an app''s end user of that name.',
                  HINT = pg_catalog.format('Erase them first (SELECT memori_erase_user(%L)), or give them to this role: SELECT memori_grant(%L, ''user'', adopt => true);', rname, rname);
    END IF;
    IF NOT adopt AND kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text AND ns OPERATOR(pg_catalog.<>) ''::pg_catalog.text
       AND EXISTS (SELECT 1 FROM @extschema@.memori_memories m
                    WHERE pg_catalog.starts_with(m.user_id::pg_catalog.text, ns OPERATOR(pg_catalog.||) '/'::pg_catalog.text))
       AND NOT EXISTS (SELECT 1 FROM @extschema@.memori_roles r JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) r.role_oid
                        WHERE r.kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text AND r.namespace OPERATOR(pg_catalog.=) ns) THEN
        RAISE EXCEPTION 'memori: namespace "%" holds end users of an app that is no longer granted', ns
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'The role granted it before was dropped or renamed since (or this database was restored from another cluster).',
                  HINT = pg_catalog.format('Give this role those end users on purpose: SELECT memori_grant(%L, ''app'', namespace => %L, adopt => true);', rname, ns);
    END IF;
    INSERT INTO @extschema@.memori_roles (role_name, kind, namespace, role_oid) VALUES (rname, kind, ns, role)
        ON CONFLICT ON CONSTRAINT memori_roles_pkey
        DO UPDATE SET kind = EXCLUDED.kind, namespace = EXCLUDED.namespace, role_oid = EXCLUDED.role_oid,
                      granted_at = pg_catalog.now();
    EXECUTE pg_catalog.format('GRANT SELECT ON @extschema@.memori_memories, @extschema@.memori_conversations, @extschema@.memori_messages TO %s', role);
    FOREACH f IN ARRAY @extschema@.memori_api() LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', f, role);
    END LOOP;
    PERFORM @extschema@.memori_sync_grants(ARRAY[rname]);
END;
$$;
COMMENT ON FUNCTION memori_grant(regrole, text, text, boolean) IS
    'memori: gives a role access to memori in this database, as a user (acts for itself) or an app (acts for the end users it names in each transaction, as <namespace>/<end user>; namespace defaults to the role''s name, and apps granted one namespace share their end users); records it in memori_roles. Memories another role left under the name (or namespace) are handed over only with adopt => true.';

-- Takes a role's access away in this database.
CREATE FUNCTION memori_revoke(role regrole) RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    f text;
    had boolean;
    gone pg_catalog.name[];
BEGIN
    -- By the role (a renamed role's grant too) and by its current name.
    WITH d AS (
        DELETE FROM @extschema@.memori_roles
         WHERE role_oid OPERATOR(pg_catalog.=) role::pg_catalog.oid
            OR role_name OPERATOR(pg_catalog.=) (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) role)
        RETURNING role_name)
    SELECT pg_catalog.array_agg(d.role_name) INTO gone FROM d;
    had := gone IS NOT NULL;
    IF had THEN
        PERFORM @extschema@.memori_sync_grants(gone);
    END IF;
    EXECUTE pg_catalog.format('REVOKE SELECT ON @extschema@.memori_memories, @extschema@.memori_conversations, @extschema@.memori_messages FROM %s', role);
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
    '@extschema@.memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text, timestamptz)',
    '@extschema@.memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text, timestamptz)',
    '@extschema@.memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean, timestamptz, timestamptz, timestamptz)',
    '@extschema@.memori_update(uuid, text, text, double precision, text[], jsonb)',
    '@extschema@.memori_forget(uuid)',
    '@extschema@.memori_context(text, integer, uuid, integer, text)',
    '@extschema@.memori_relate(text, text, text, uuid, double precision, text)',
    '@extschema@.memori_entity(text, text)',
    '@extschema@.memori_embed(text)',
    '@extschema@.memori_embed_batch(text[])',
    '@extschema@.memori_embedding_stats()',
    '@extschema@.memori_stats()',
    '@extschema@.memori_extract(text, uuid, text)',
    '@extschema@.memori_chat(text, uuid, integer, boolean, text)']::text[]
$$;
COMMENT ON FUNCTION memori_api() IS
    'memori: the functions memori_grant() lets a role run (all but memori_maintain, memori_create_index, memori_grant and memori_revoke, which stay with the DBA).';

REVOKE ALL ON memori_memories, memori_conversations, memori_embedding_cache, memori_store_locks, memori_roles,
    memori_reembed_state, memori_messages FROM PUBLIC;
REVOKE ALL ON SEQUENCE memori_memories_id_seq, memori_conversations_id_seq, memori_messages_id_seq FROM PUBLIC;
-- Granted roles read their own rows (row-level security) and write only through memori's
-- functions, which write as the tables' owner for the user they resolved: with no INSERT,
-- UPDATE or DELETE, a tenant can neither choose ids (and squat on the next ones) nor lock a
-- table or another tenant's rows (SELECT allows only ACCESS SHARE locks, which block no
-- writer). The embedding cache is shared by everyone (sharing is what makes it a cache), so no
-- tenant may touch it: memori's functions read and write it as the table's owner, with fixed
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
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON ROUTINE %s FROM PUBLIC', f);
    END LOOP;
END;
$$;
-- The policies call memori_acting_user() for every role that reads the tables (on Citus, on the
-- workers too); it reveals nothing (NULL for a role without a grant), so anyone may run it. It
-- pins its path by construction: every statement it runs goes through tenancy::as_owner_of, which
-- pins search_path, and its one lookup as the caller is fully qualified (it has no SET clause:
-- the policies call it per row). The pure functions of their arguments pin theirs with a SET
-- clause (searches run them as the caller).
GRANT EXECUTE ON FUNCTION memori_acting_user() TO PUBLIC;
GRANT EXECUTE ON FUNCTION memori_text_document(text, regconfig), memori_identifiers(text),
    memori_term_mask(tsvector, tsvector) TO PUBLIC;

-- Row-level security: a granted role sees only the rows of the user it acts for.
ALTER TABLE memori_memories ENABLE ROW LEVEL SECURITY;
ALTER TABLE memori_conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE memori_messages ENABLE ROW LEVEL SECURITY;
CREATE POLICY memori_acting_user_rows ON memori_memories
    USING (user_id::text = memori_acting_user()) WITH CHECK (user_id::text = memori_acting_user());
CREATE POLICY memori_acting_user_rows ON memori_conversations
    USING (user_id::text = memori_acting_user()) WITH CHECK (user_id::text = memori_acting_user());
COMMENT ON POLICY memori_acting_user_rows ON memori_memories IS 'memori: a granted role sees only the memories of the memori user it acts for (memori_acting_user()).';
COMMENT ON POLICY memori_acting_user_rows ON memori_conversations IS 'memori: a granted role sees only the conversations of the memori user it acts for (memori_acting_user()).';
CREATE POLICY memori_acting_user_rows ON memori_messages
    USING (user_id::text = memori_acting_user()) WITH CHECK (user_id::text = memori_acting_user());
COMMENT ON POLICY memori_acting_user_rows ON memori_messages IS 'memori: a granted role sees only the chat messages of the memori user it acts for (memori_acting_user()).';
