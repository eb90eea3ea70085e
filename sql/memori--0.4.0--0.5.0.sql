-- memori 0.4.0 -> 0.5.0. Run by ALTER EXTENSION memori UPDATE; the result is identical to a
-- fresh install of 0.5.0 (tests/system/upgrade.sh compares the catalogs).

-- Whom an app acts for: each app role has a namespace, and its end user "u" is the memori
-- user "<namespace>/u". Apps granted before this update keep the empty namespace: they act
-- for end users without a prefix, shared among them, as in 0.4.0 (but never for a role
-- granted as user).
ALTER TABLE memori_roles ADD COLUMN namespace text;
UPDATE memori_roles SET namespace = '' WHERE kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text;
ALTER TABLE memori_roles
    ADD CONSTRAINT memori_roles_namespace_check
        CHECK ((kind = 'app') = (namespace IS NOT NULL) AND strpos(namespace, '/') = 0 AND octet_length(namespace) <= 63);
-- Grants hold for the role granted (review G11), not for another that takes its name later.
ALTER TABLE memori_roles ADD COLUMN role_oid oid;
UPDATE memori_roles r SET role_oid = g.oid FROM pg_catalog.pg_roles g WHERE g.rolname OPERATOR(pg_catalog.=) r.role_name;
-- A grant whose role no longer exists holds for no role (0 is no role's oid).
UPDATE memori_roles SET role_oid = 0 WHERE role_oid IS NULL;
ALTER TABLE memori_roles ALTER COLUMN role_oid SET NOT NULL;
COMMENT ON COLUMN memori_roles.role_oid IS 'The role granted (its oid): a grant holds only for that role, not for another that takes the name later (0: a role that no longer existed when 0.5.0 was installed).';
COMMENT ON COLUMN memori_roles.namespace IS 'For an app: the namespace of its end users (end user u is the memori user <namespace>/u; empty: u itself, for apps granted before 0.5.0). NULL for a user.';
DROP FUNCTION memori_grant(regrole, text);
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
REVOKE EXECUTE ON FUNCTION memori_grant(regrole, text, text, boolean) FROM PUBLIC;

-- Pure functions granted to PUBLIC pin their search path too.
ALTER FUNCTION memori_identifiers(text) SET search_path = pg_catalog, @extschema@, pg_temp;
-- Which of a question's terms a memory's document holds (src/base/text.rs): a hybrid search reads
-- it for every memory in scope. It runs no SQL and resolves no name, so it has no SET clause:
-- one would cost a save and restore of the configuration per memory read.
CREATE FUNCTION memori_term_mask(document tsvector, terms tsvector) RETURNS bigint
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'memori_term_mask_wrapper';
COMMENT ON FUNCTION memori_term_mask(tsvector, tsvector) IS
    'memori: which lexemes of terms the document holds: bit i for the i-th in terms (in unnest order, from 0; the first 64), as document @@ lexeme::tsquery says (positions and weights play no part).';
-- As a fresh install leaves it: revoked with every memori function, then granted.
REVOKE EXECUTE ON FUNCTION memori_term_mask(tsvector, tsvector) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION memori_term_mask(tsvector, tsvector) TO PUBLIC;

DO $$
DECLARE apps pg_catalog.text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(role_name), ', ' ORDER BY role_name) INTO apps
      FROM @extschema@.memori_roles WHERE kind OPERATOR(pg_catalog.=) 'app'::pg_catalog.text;
    IF apps IS NOT NULL THEN
        RAISE NOTICE 'memori 0.5.0: app roles granted before this update (%) keep acting for end users without a namespace, shared among them as in 0.4.0, but no longer for roles granted as user', apps
            USING HINT = 'To give an app its own end users, grant it again with memori_grant(role, ''app'', namespace => ''name''): its end user u is then the memori user name/u; move an end user''s rows with memori_export(user_id => ''u''), memori_erase_user(''u'') and memori_import(..., user_id => ''name/u'').';
    END IF;
END;
$$;

-- memori_entity resolves the acting user, which a parallel worker cannot: parallel restricted.
ALTER FUNCTION memori_entity(text, text) PARALLEL RESTRICTED;

-- memori_stats(): count(DISTINCT user_id) of a varchar column chose a public count(text) over
-- pg_catalog.count("any") (found by tests/system/capture.sh); every aggregate is qualified now.
CREATE OR REPLACE FUNCTION memori_stats() RETURNS TABLE(metric text, labels jsonb, value double precision)
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

-- A secret of this database's memori, which no tenant can read: it keys the advisory locks a
-- cache write takes, so pg_locks (which every role of the cluster reads) tells nothing about
-- the texts being embedded.
CREATE TABLE memori_secret (
    secret text NOT NULL
);
INSERT INTO memori_secret (secret)
     VALUES (pg_catalog.gen_random_uuid()::pg_catalog.text OPERATOR(pg_catalog.||) pg_catalog.gen_random_uuid()::pg_catalog.text);
COMMENT ON TABLE memori_secret IS
    'memori: a random secret of this database (made at install), which keys the embedding cache''s advisory locks; only the owner reads it.';
COMMENT ON COLUMN memori_secret.secret IS 'The secret.';

-- The embedding cache is per memori user (review G13): erasing a user erases the embeddings of
-- every text of theirs (questions and chat turns too), and no tenant is served from, or times,
-- another user's entries. The entries of 0.4.0 had no user: dropped
-- (it is a cache).
DELETE FROM memori_embedding_cache;
ALTER TABLE memori_embedding_cache ADD COLUMN user_id text NOT NULL;
ALTER TABLE memori_embedding_cache
    DROP CONSTRAINT memori_embedding_cache_pkey,
    ADD CONSTRAINT memori_embedding_cache_pkey PRIMARY KEY (user_id, provider, model, dims, text_sha256);
COMMENT ON COLUMN memori_embedding_cache.user_id IS 'The memori user whose text it is (memori_embed: the user the caller acts for, else the calling role); memori_erase_user deletes a user''s entries.';
COMMENT ON TABLE memori_embedding_cache IS
    'memori: cache of embeddings keyed by memori user, provider, model (with a digest of a non-default URL), width and SHA-256 of the text (no text is stored); entries live memori.embedding_cache_ttl seconds.';
CREATE OR REPLACE FUNCTION memori_erase_user(user_id text)
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

-- memori_revoke takes a renamed role's grant away too.
CREATE OR REPLACE FUNCTION memori_revoke(role regrole) RETURNS boolean
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

-- Time in memories: when what a memory says happened (event_at), beside when it was stored.
ALTER TABLE memori_memories ADD COLUMN event_at timestamptz;
COMMENT ON COLUMN memori_memories.event_at IS 'When what the memory says happened, if the caller said (for a conversation turn, its session''s date); NULL when unknown. created_at is when memori stored it. memori_search filters on it (event_from, event_to) and memori_context shows it.';
-- memori_store and memori_store_batch take event_at, memori_search an event window and returns
-- event_at: their 0.4.0 signatures go (the library keeps their symbols for databases not yet
-- updated), and the roles granted memori get the new ones.
DROP FUNCTION memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text);
DROP FUNCTION memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text);
DROP FUNCTION memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean, timestamptz);
CREATE  FUNCTION "memori_store"(
	"content" TEXT, /* Option < & str > */
	"memory_type" TEXT DEFAULT 'short_term', /* Option < & str > */
	"conversation_id" uuid DEFAULT NULL, /* Option < Uuid > */
	"importance" double precision DEFAULT 0.5, /* Option < f64 > */
	"tags" TEXT[] DEFAULT '{}', /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT '{}', /* Option < JsonbArg > */
	"entities" TEXT[] DEFAULT '{}', /* :: std :: option :: Option < Vec < Option < String > > > */
	"expires_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"user_id" TEXT DEFAULT NULL, /* Option < & str > */
	"event_at" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS uuid /* Uuid */
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_store_0_5_wrapper';
CREATE  FUNCTION "memori_store_batch"(
	"contents" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"memory_type" TEXT DEFAULT 'short_term', /* Option < & str > */
	"conversation_id" uuid DEFAULT NULL, /* Option < Uuid > */
	"importance" double precision DEFAULT 0.5, /* Option < f64 > */
	"tags" TEXT[] DEFAULT '{}', /* :: std :: option :: Option < Vec < Option < String > > > */
	"metadata" jsonb DEFAULT '{}', /* Option < JsonbArg > */
	"user_id" TEXT DEFAULT NULL, /* Option < & str > */
	"event_at" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS SETOF uuid /* Uuid */
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_store_batch_0_5_wrapper';
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
	"explain" bool DEFAULT false, /* Option < bool > */
	"as_of" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"event_from" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"event_to" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
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
	"explain" jsonb,  /* Option < JsonB > */
	"event_at" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
VOLATILE PARALLEL UNSAFE 
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'memori_search_0_5_wrapper';
COMMENT ON FUNCTION memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text, timestamptz) IS
    'memori: stores a memory (embedded with the configured provider) for user_id (default: memori.user_id, else current_user) and returns its memory_id; event_at says when what it says happened, if known. A near-duplicate of the same user, type and conversation (similarity >= memori.dedup_threshold; for relationships, the same triple) is merged instead: it takes the new content and the id stays, with a NOTICE.';
COMMENT ON FUNCTION memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text, timestamptz) IS
    'memori: stores one memory per element of contents, embedded in batches, and returns their ids in input order (near-duplicates merged as memori_store does); event_at applies to every one.';
COMMENT ON FUNCTION memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean, timestamptz, timestamptz, timestamptz) IS
    'memori: the k memories of one user most relevant to query (min(k, matching) rows, always), ordered by score (relevance blended with importance and recency). mode: hybrid (the similarity plus half the full-text score), vector or text; default memori.search_mode. explain => true fills the explain column. Only memories valid now (not superseded); as_of => a moment answers with the memories valid then (archiving ignored, no access counted). event_from/event_to keep the memories whose event time (event_at, else created_at) is in [event_from, event_to). Counts an access for each row (memori.access_counting; best effort).';
REVOKE EXECUTE ON FUNCTION memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text, timestamptz), memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text, timestamptz),
    memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean, timestamptz, timestamptz, timestamptz) FROM PUBLIC;
CREATE OR REPLACE FUNCTION memori_api() RETURNS text[]
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
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT g.oid::pg_catalog.regrole AS role FROM @extschema@.memori_roles x
               JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) x.role_oid
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.memori_store(text, text, uuid, double precision, text[], jsonb, text[], timestamptz, text, timestamptz), @extschema@.memori_store_batch(text[], text, uuid, double precision, text[], jsonb, text, timestamptz), @extschema@.memori_search(text, integer, uuid, text[], text[], double precision, boolean, text, text, boolean, timestamptz, timestamptz, timestamptz) TO %s', r.role);
    END LOOP;
END;
$$;
CREATE OR REPLACE FUNCTION memori_export(user_id text, include_embeddings boolean DEFAULT false) RETURNS SETOF jsonb
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
REVOKE EXECUTE ON FUNCTION memori_sync_grants(name[]) FROM PUBLIC;

-- memori_distribute also sends the grants to the workers (again after a worker is added).
CREATE OR REPLACE FUNCTION memori_distribute() RETURNS text
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

-- The near-duplicate check reads a sketch of each embedding from an index first (see
-- sql/schema.sql): a generated column, which rewrites the table once. Rows move to TOAST past
-- 4 kB, as on a fresh install (the rewrite applies it to the rows already there).
-- The near-duplicate check's prefilter (src/memories/sketch.rs): of a unit-length copy u of an
-- embedding of n dimensions, its first h coordinates (h = n/6 rounded up, at least 64 and at
-- most 256) and, as one more, the length of the rest. For two embeddings of one width, the
-- inner product of their sketches is at least their cosine similarity (Cauchy-Schwarz on the
-- coordinates past the h-th; equal when n <= h), so a memory whose sketch falls short of the
-- threshold cannot be a near-duplicate and its row is never read: the sketches are read from
-- idx_memori_mem_dedup alone. In Rust, reading the vector in place: it generates a column, so it
-- runs at every INSERT (a SQL function was planned at each call); it runs no SQL and resolves
-- no name, so it has no SET clause.
CREATE FUNCTION memori_dedup_sketch(embedding vector) RETURNS vector
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'memori_dedup_sketch_wrapper';
COMMENT ON FUNCTION memori_dedup_sketch(vector) IS
    'memori: the near-duplicate prefilter''s sketch of an embedding (memori_memories.dedup_sketch): its unit-length copy''s first n/6 coordinates (at least 64, at most 256) and the length of the rest; the inner product of two sketches of one width bounds the cosine similarity from above.';
-- The key of a user's memories of one type and width in idx_memori_mem_dedup: one bigint compared
-- per entry where two texts were (a third of the check's time went to comparing them).
CREATE FUNCTION memori_dedup_scope(user_id text, memory_type text, dims integer) RETURNS bigint
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'memori_dedup_scope_wrapper';
COMMENT ON FUNCTION memori_dedup_scope(text, text, integer) IS
    'memori: the near-duplicate check''s key of a user''s memories of one type and width (memori_memories.dedup_scope): a 64-bit FNV-1a hash of the three; the check also compares the user (in idx_memori_mem_dedup) and the type and width (on the rows it reads).';

-- As a fresh install leaves it: revoked with every memori function.
REVOKE EXECUTE ON FUNCTION memori_dedup_sketch(vector) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION memori_dedup_scope(text, text, integer) FROM PUBLIC;
ALTER TABLE memori_memories SET (toast_tuple_target = 4080);
ALTER TABLE memori_memories
    ADD COLUMN dedup_scope bigint GENERATED ALWAYS AS (memori_dedup_scope(user_id, memory_type, vector_dims(embedding))) STORED,
    ADD COLUMN dedup_sketch halfvec GENERATED ALWAYS AS (memori_dedup_sketch(embedding)::halfvec) STORED;
COMMENT ON COLUMN memori_memories.dedup_scope IS 'memori_dedup_scope(user_id, memory_type, vector_dims(embedding)) (generated): the key under which the near-duplicate check finds a user''s memories of one type and width in idx_memori_mem_dedup.';
COMMENT ON COLUMN memori_memories.dedup_sketch IS 'memori_dedup_sketch(embedding) as halfvec (generated): what the near-duplicate check reads first, from idx_memori_mem_dedup; a memory it rules out is never read whole.';
-- The near-duplicate check (src/memories/store.rs) reads one user's memories of one type and
-- width (their key, dedup_scope) from this index alone (an index-only scan): their ids and
-- sketches, and the user (a key shared by chance or by choice never makes another user's entries
-- pass; on Citus, the statement's route to the user's shard). The rest of what it filters on
-- (conversation, model, expiry, validity) is checked on the rows read whole: here it would cost
-- every entry its bytes, and an update of a memory's validity its HOT update.
CREATE INDEX idx_memori_mem_dedup ON memori_memories (dedup_scope) INCLUDE (id, dedup_sketch, user_id);
