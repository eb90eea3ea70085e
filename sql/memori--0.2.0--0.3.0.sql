-- memori 0.2.0 -> 0.3.0. Run by ALTER EXTENSION memori UPDATE; the result is identical to a
-- fresh install of 0.3.0 (tests/system/upgrade.sh compares the catalogs).
\echo Use "ALTER EXTENSION memori UPDATE TO '0.3.0'" to load this file. \quit

-- Full-text search over memories (memori_search's hybrid and text modes).
ALTER TABLE memori_memories ADD COLUMN content_tsv tsvector NOT NULL DEFAULT ''::tsvector;
COMMENT ON COLUMN memori_memories.content_tsv IS 'Full-text document of content (memori_text_document under memori.text_search_config), written by memori with the content; GIN-indexed.';

CREATE  FUNCTION "memori_identifiers"(
	"content" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_identifiers_wrapper';

-- Full-text document of a memory (see src/text.rs): the words, with `.` and `_` read as spaces,
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

GRANT EXECUTE ON FUNCTION memori_text_document(text, regconfig), memori_identifiers(text) TO PUBLIC;

-- Every stored memory gets its document (under memori.text_search_config, english unless set),
-- then the index is built once (without a pending list, as in a fresh install).
UPDATE memori_memories
   SET content_tsv = memori_text_document(content,
         coalesce(pg_catalog.current_setting('memori.text_search_config', true), 'english')::regconfig);
CREATE INDEX idx_memori_mem_content_tsv ON memori_memories USING gin (content_tsv) WITH (fastupdate = off);

-- A new embedding of the same memory (memori_reembed) no longer moves updated_at.
CREATE OR REPLACE FUNCTION memori_memories_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.content, NEW.memory_type, NEW.importance_score, NEW.context_tags, NEW.related_entities,
        NEW.metadata, NEW.expires_at, NEW.is_archived, NEW.conversation_id, NEW.user_id)
       IS DISTINCT FROM
       (OLD.content, OLD.memory_type, OLD.importance_score, OLD.context_tags, OLD.related_entities,
        OLD.metadata, OLD.expires_at, OLD.is_archived, OLD.conversation_id, OLD.user_id)
    THEN
        NEW.updated_at := pg_catalog.now();
    END IF;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION memori_memories_touch_updated_at() IS
    'memori: trigger function that sets updated_at to now() when a memory changes (not when a search only counts an access, nor when memori_reembed gives it a new model''s embedding).';

-- Numeric parameters are double precision (drivers send a float as float8), and memori_search
-- has mode and explain. The old signatures go; the library keeps their symbols for databases
-- not yet updated.
DROP FUNCTION memori_store(text, text, uuid, real, text[], jsonb, text[], timestamptz, text);
DROP FUNCTION memori_store_batch(text[], text, uuid, real, text[], jsonb, text);
DROP FUNCTION memori_search(text, integer, uuid, text[], text[], real, boolean, text);
DROP FUNCTION memori_update(uuid, text, text, real, text[], jsonb);
DROP FUNCTION memori_relate(text, text, text, uuid, real, text);

CREATE  FUNCTION "memori_relate"(
	"subject" TEXT, /* Option < & str > */
	"predicate" TEXT, /* Option < & str > */
	"object" TEXT, /* Option < & str > */
	"conversation_id" uuid DEFAULT NULL, /* Option < Uuid > */
	"importance" double precision DEFAULT 0.5, /* Option < f64 > */
	"user_id" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS uuid /* Uuid */
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'relate_entities_wrapper';

CREATE  FUNCTION "memori_search"(
	"query" TEXT, /* Option < & str > */
	"k" INT DEFAULT 10, /* Option < i32 > */
	"conversation_id" uuid DEFAULT NULL, /* Option < Uuid > */
	"memory_types" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"tags" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"min_similarity" double precision DEFAULT NULL, /* Option < f64 > */
	"include_archived" bool DEFAULT false, /* Option < bool > */
	"user_id" TEXT DEFAULT NULL, /* Option < & str > */
	"mode" TEXT DEFAULT NULL, /* Option < & str > */
	"explain" bool DEFAULT false /* Option < bool > */
) RETURNS TABLE (
	"memory_id" uuid,  /* Uuid */
	"content" TEXT,  /* String */
	"memory_type" TEXT,  /* String */
	"similarity" double precision,  /* Option < f64 > */
	"score" double precision,  /* f64 */
	"importance" real,  /* f32 */
	"context_tags" TEXT[],  /* Vec < String > */
	"metadata" jsonb,  /* JsonB */
	"conversation_id" uuid,  /* Option < Uuid > */
	"created_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"explain" jsonb  /* Option < JsonB > */
)
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'search_memories_wrapper';

CREATE  FUNCTION "memori_store"(
	"content" TEXT, /* Option < & str > */
	"memory_type" TEXT DEFAULT 'short_term', /* Option < & str > */
	"conversation_id" uuid DEFAULT NULL, /* Option < Uuid > */
	"importance" double precision DEFAULT 0.5, /* Option < f64 > */
	"tags" TEXT[] DEFAULT '{}', /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT '{}', /* Option < JsonB > */
	"entities" TEXT[] DEFAULT '{}', /* :: std :: option :: Option < Vec < Option < String > > > */
	"expires_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"user_id" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS uuid /* Uuid */
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'store_memory_wrapper';

CREATE  FUNCTION "memori_store_batch"(
	"contents" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"memory_type" TEXT DEFAULT 'short_term', /* Option < & str > */
	"conversation_id" uuid DEFAULT NULL, /* Option < Uuid > */
	"importance" double precision DEFAULT 0.5, /* Option < f64 > */
	"tags" TEXT[] DEFAULT '{}', /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT '{}', /* Option < JsonB > */
	"user_id" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS SETOF uuid /* Uuid */
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'store_memories_wrapper';

CREATE  FUNCTION "memori_update"(
	"memory_id" uuid, /* Option < Uuid > */
	"content" TEXT DEFAULT NULL, /* Option < & str > */
	"memory_type" TEXT DEFAULT NULL, /* Option < & str > */
	"importance" double precision DEFAULT NULL, /* Option < f64 > */
	"tags" TEXT[] DEFAULT NULL, /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT NULL /* Option < JsonB > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'update_memory_wrapper';

COMMENT ON FUNCTION memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text) IS
    'memori: stores a memory (embedded with the configured provider) for user_id (default: memori.user_id, else current_user) and returns its memory_id; a near-duplicate of the same user, type and conversation (similarity >= memori.dedup_threshold; for relationships, the same triple) is merged instead: it takes the new content and the id stays, with a NOTICE.';
COMMENT ON FUNCTION memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text) IS
    'memori: stores one memory per element of contents, embedded in batches, and returns their ids in input order (near-duplicates merged as memori_store does).';
COMMENT ON FUNCTION memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean) IS
    'memori: the k memories of one user most relevant to query (min(k, matching) rows, always), ordered by score (relevance blended with importance and recency). mode: hybrid (vector and full-text rankings fused by reciprocal rank fusion), vector or text; default memori.search_mode. explain => true fills the explain column. Counts an access for each row (best effort: not in read-only or REPEATABLE READ transactions, and not for rows another transaction holds).';
COMMENT ON FUNCTION memori_update(uuid, text, text, double precision, text[], jsonb) IS
    'memori: changes a memory of the current memori user (re-embedding it when the content changes); false when there is no such memory.';
COMMENT ON FUNCTION memori_relate(text, text, text, uuid, double precision, text) IS
    'memori: stores "subject predicate object" as a relationship memory (subject and object in related_entities) and returns its memory_id.';

-- A user's data as a whole: export, import, erase (the DBA's).
CREATE  FUNCTION "memori_import"(
	"lines" jsonb[], /* :: std :: option :: Option < Vec < Option < JsonB > > > */
	"user_id" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"conversations" bigint,  /* i64 */
	"memories" bigint,  /* i64 */
	"reembedded" bigint  /* i64 */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_import_wrapper';

-- One end user's data as a whole (README "Erasing and exporting a user"): the DBA's functions.
CREATE FUNCTION memori_export(user_id text, include_embeddings boolean DEFAULT false) RETURNS SETOF jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
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
    SELECT 2, m.id,
           pg_catalog.jsonb_build_object('kind', 'memory', 'memory_id', m.memory_id,
               'conversation_id', m.conversation_id, 'content', m.content, 'memory_type', m.memory_type,
               'importance', m.importance_score, 'access_count', m.access_count,
               'last_accessed_at', m.last_accessed_at, 'context_tags', m.context_tags,
               'related_entities', m.related_entities, 'metadata', m.metadata, 'expires_at', m.expires_at,
               'is_archived', m.is_archived, 'created_at', m.created_at, 'updated_at', m.updated_at,
               'embedding_model', m.embedding_model)
           OPERATOR(pg_catalog.||)
           CASE WHEN $2 AND m.embedding IS NOT NULL
                THEN pg_catalog.jsonb_build_object('embedding', m.embedding::text::jsonb)
                ELSE '{}'::jsonb END
      FROM @extschema@.memori_memories m
     WHERE m.user_id::text = $1::text) s
 ORDER BY s.part, s.id
$$;
COMMENT ON FUNCTION memori_export(text, boolean) IS
    'memori: one user''s memories and conversations as JSON lines (a header, then one object per conversation and per memory; embeddings when include_embeddings), for memori_import() here or in another database.';

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
    -- The cache holds no text, only SHA-256 digests: drop the entries of this user's texts.
    DELETE FROM @extschema@.memori_embedding_cache k
     WHERE k.text_sha256 OPERATOR(pg_catalog.=) ANY (
           ARRAY(SELECT pg_catalog.sha256(pg_catalog.convert_to(x.content, 'UTF8'))
                   FROM @extschema@.memori_memories x WHERE x.user_id::text = who));
    GET DIAGNOSTICS e = ROW_COUNT;
    DELETE FROM @extschema@.memori_memories x WHERE x.user_id::text = who;
    GET DIAGNOSTICS m = ROW_COUNT;
    DELETE FROM @extschema@.memori_conversations x WHERE x.user_id::text = who;
    GET DIAGNOSTICS c = ROW_COUNT;
    DELETE FROM @extschema@.memori_store_locks x WHERE x.user_id OPERATOR(pg_catalog.=) who;
    RETURN QUERY SELECT m, c, e;
END;
$$;
COMMENT ON FUNCTION memori_erase_user(text) IS
    'memori: deletes every memory and conversation of one user and the cached embeddings of their texts (a GDPR erasure) and returns the counts; backups and WAL keep what they hold until they expire.';
COMMENT ON FUNCTION memori_import(jsonb[], text) IS
    'memori: loads the rows memori_export() returned (default user: the one the export names), keeping ids, timestamps and counters; memories embedded by another model, or exported without embeddings, are embedded again. All or nothing.';


-- Monitoring: counters in shared memory (when preloaded) and memori_stats().
CREATE  FUNCTION "memori_counters"() RETURNS TABLE (
	"metric" TEXT,  /* String */
	"labels" jsonb,  /* pgrx :: datum :: JsonB */
	"value" double precision  /* f64 */
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_counters_wrapper';

CREATE  FUNCTION "memori_stats_reset"() RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_stats_reset_wrapper';

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
BEGIN
    -- What the caller may see of the tables: everything for the DBA, a tenant its own rows.
    RETURN QUERY
    SELECT 'memories'::text,
           pg_catalog.jsonb_build_object('type', m.memory_type::text, 'state',
               CASE WHEN m.expires_at IS NOT NULL AND m.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now() THEN 'expired'
                    WHEN m.is_archived THEN 'archived' ELSE 'live' END),
           count(*)::float8
      FROM @extschema@.memori_memories m GROUP BY 2;
    RETURN QUERY
    SELECT 'memories_by_width'::text, pg_catalog.jsonb_build_object('dims', m.embedding_dims, 'model', m.embedding_model),
           count(*)::float8
      FROM @extschema@.memori_memories m GROUP BY 2;
    RETURN QUERY SELECT 'users'::text, '{}'::jsonb, count(DISTINCT m.user_id)::float8 FROM @extschema@.memori_memories m;
    RETURN QUERY SELECT 'conversations'::text, '{}'::jsonb, count(*)::float8 FROM @extschema@.memori_conversations c;
    IF NOT dba THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT 'cache_entries'::text, '{}'::jsonb, count(*)::float8 FROM @extschema@.memori_embedding_cache k;
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
     WHERE c.relkind OPERATOR(pg_catalog.=) 'r'::"char"
    UNION ALL
    SELECT 'relation_bytes'::text, pg_catalog.jsonb_build_object('relation', i.relname::text, 'kind', 'index'),
           pg_catalog.pg_relation_size(i.oid)::float8
      FROM pg_catalog.pg_index x
      JOIN pg_catalog.pg_class i ON i.oid OPERATOR(pg_catalog.=) x.indexrelid
     WHERE x.indrelid OPERATOR(pg_catalog.=) ANY (ARRAY['@extschema@.memori_memories'::regclass::oid,
               '@extschema@.memori_conversations'::regclass::oid, '@extschema@.memori_embedding_cache'::regclass::oid]);
    RETURN QUERY SELECT 'counters_available'::text, '{}'::jsonb,
           CASE WHEN EXISTS (SELECT FROM @extschema@.memori_counters()) THEN 1::float8 ELSE 0::float8 END;
    RETURN QUERY SELECT k.metric, k.labels, k.value FROM @extschema@.memori_counters() k;
    -- Texts served from the cache, of all texts asked for.
    RETURN QUERY
    SELECT 'embedding_cache_hit_ratio'::text, '{}'::jsonb, h.value / (h.value + t.total)
      FROM (SELECT k.value FROM @extschema@.memori_counters() k
             WHERE k.metric OPERATOR(pg_catalog.=) 'embedding_cache_hits_total'::text) h,
           (SELECT sum(k.value) AS total FROM @extschema@.memori_counters() k
             WHERE k.metric OPERATOR(pg_catalog.=) 'embedding_texts_total'::text) t
     WHERE h.value + t.total > 0::float8;
END;
$$;
COMMENT ON FUNCTION memori_stats() IS
    'memori: figures as (metric, labels, value) rows: memories by type and state and by width, users, conversations (a tenant: its own); for the DBA also cache entries, table and index sizes and the counters since the server started (memori_counters; counters_available = 0 without preloading).';
COMMENT ON FUNCTION memori_counters() IS
    'memori: the server-wide counters (embedding calls, texts, errors by SQLSTATE class and latency per provider; cache hits; searches, stores, merges; maintenance passes and rows), kept in shared memory when memori is preloaded; no rows otherwise.';
COMMENT ON FUNCTION memori_stats_reset() IS
    'memori: sets the counters to 0 (false when memori is not preloaded).';

-- Changing the embedding model online.
-- Progress of memori_reembed(): one row per target model (owner-only; not user data, so left
-- out of dumps: a restored database resumes by running memori_reembed again).
CREATE TABLE memori_reembed_state (
    target_model text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    reembedded   bigint NOT NULL DEFAULT 0,
    CONSTRAINT memori_reembed_state_pkey PRIMARY KEY (target_model)
);
COMMENT ON TABLE memori_reembed_state IS
    'memori: progress of memori_reembed() per target model: when it started, when a batch last committed, how many memories it moved.';
COMMENT ON COLUMN memori_reembed_state.target_model IS 'The model memories are moved to (provider/model, as in memori_memories.embedding_model).';
COMMENT ON COLUMN memori_reembed_state.started_at IS 'When the first batch for this model committed.';
COMMENT ON COLUMN memori_reembed_state.updated_at IS 'When the last batch committed.';
COMMENT ON COLUMN memori_reembed_state.reembedded IS 'Memories moved so far.';

REVOKE ALL ON memori_reembed_state FROM PUBLIC;

CREATE  FUNCTION "memori_reembed_batch"(
	"batch_size" INT DEFAULT 500 /* Option < i32 > */
) RETURNS TABLE (
	"reembedded" bigint,  /* i64 */
	"remaining" bigint  /* i64 */
)
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_reembed_batch_wrapper';

CREATE  FUNCTION "memori_reembed_progress"() RETURNS TABLE (
	"target_model" TEXT,  /* String */
	"total" bigint,  /* i64 */
	"done" bigint,  /* i64 */
	"remaining" bigint,  /* i64 */
	"started_at" timestamp with time zone,  /* Option < pgrx :: datum :: TimestampWithTimeZone > */
	"last_batch_at" timestamp with time zone,  /* Option < pgrx :: datum :: TimestampWithTimeZone > */
	"rows_per_second" double precision  /* Option < f64 > */
)
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_reembed_progress_wrapper';

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


CREATE OR REPLACE FUNCTION memori_api() RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
SELECT ARRAY[
    '@extschema@.memori_conversation_create(text, text, jsonb, bigint)',
    '@extschema@.memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text)',
    '@extschema@.memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text)',
    '@extschema@.memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean)',
    '@extschema@.memori_update(uuid, text, text, double precision, text[], jsonb)',
    '@extschema@.memori_forget(uuid)',
    '@extschema@.memori_context(text, integer, uuid, integer, text)',
    '@extschema@.memori_relate(text, text, text, uuid, double precision, text)',
    '@extschema@.memori_entity(text, text)',
    '@extschema@.memori_embed(text)',
    '@extschema@.memori_embed_batch(text[])',
    '@extschema@.memori_embedding_stats()',
    '@extschema@.memori_stats()']::text[]
$$;

-- Nobody but the roles granted memori may run the new functions; those keep their access.
REVOKE EXECUTE ON ROUTINE
    memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text),
    memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text),
    memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean),
    memori_update(uuid, text, text, double precision, text[], jsonb),
    memori_relate(text, text, text, uuid, double precision, text),
    memori_import(jsonb[], text), memori_export(text, boolean), memori_erase_user(text),
    memori_counters(), memori_stats_reset(), memori_stats(),
    memori_reembed_batch(integer), memori_reembed_progress(), memori_reembed(integer)
    FROM PUBLIC;
DO $$
DECLARE
    r name;
    f text;
BEGIN
    FOR r IN SELECT g.role_name FROM @extschema@.memori_roles g
              WHERE EXISTS (SELECT FROM pg_catalog.pg_roles o WHERE o.rolname OPERATOR(pg_catalog.=) g.role_name)
    LOOP
        FOREACH f IN ARRAY @extschema@.memori_api() LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f, r);
        END LOOP;
    END LOOP;
END;
$$;
