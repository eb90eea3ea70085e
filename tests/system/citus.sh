#!/usr/bin/env bash
# memori on Citus (README "Scaling out"): a coordinator and two workers on loopback, each with
# citus and memori preloaded; memori_distribute() shards memories, conversations and messages
# by user_id, co-located. The same API then works through the coordinator: store, batch,
# search (a router query to the user's worker, through that shard's HNSW index), context,
# update, forget, extract-free lifecycle (memori_maintain), as_of; tenancy holds for an app role.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if [ ! -f "$("$BIN/pg_config" --pkglibdir)/citus.so" ]; then
  # Only on a machine without Citus's vendored source (scripts/citus.sh build-if-available).
  echo "# skipped: Citus is not installed and its source was not found (see scripts/citus.sh)"
  finish
  exit 0
fi
MOCK_PORT=18096
trap 'kill $MOCK 2>/dev/null || true; cleanup' EXIT
python3 "$HERE/tests/support/mock_chat.py" $MOCK_PORT & MOCK=$!

tcp="listen_addresses = '127.0.0.1'"
# The workers log every statement: the test reads what the coordinator sent them.
cluster_init citus_w1 5495 "$tcp" "shared_preload_libraries = 'citus,memori'" "log_statement = 'all'"
cluster_init citus_w2 5496 "$tcp" "shared_preload_libraries = 'citus,memori'" "log_statement = 'all'"
cluster_init citus_c 5494 "$tcp" "shared_preload_libraries = 'citus,memori'"
C=citus_c
for n in citus_w1 citus_w2 citus_c; do
  q $n postgres "CREATE DATABASE m"
  qf $n m -c "SET client_min_messages = warning" -c "CREATE EXTENSION citus" -c "CREATE EXTENSION memori CASCADE" >/dev/null
done
qf $C m -c "SELECT citus_set_coordinator_host('127.0.0.1', 5494)" \
        -c "SELECT citus_add_node('127.0.0.1', 5495)" -c "SELECT citus_add_node('127.0.0.1', 5496)" >/dev/null

# Rows stored before distributing move to the workers.
q $C m "SELECT memori_store('stored before distribution', 'rule', user_id => 'early')" >/dev/null
check "memori_distribute() shards the three tables" "distributed by user_id: memori_conversations, memori_memories, memori_messages" \
  "$(q $C m "SELECT memori_distribute()" 2>/dev/null)"
check "memori_distribute() again: nothing to do" "memori is distributed already" "$(q $C m "SELECT memori_distribute()")"
check "co-located, hash-distributed by user_id" "3 1 h" \
  "$(q $C m "SELECT count(*) || ' ' || count(DISTINCT colocationid) || ' ' || min(partmethod) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'memori_%'")"
check "the earlier row is on a worker, and found" "stored before distribution" \
  "$(q $C m "SELECT content FROM memori_search('stored before', k => 1, user_id => 'early')")"

# 40 users, 6 memories each, through the coordinator.
qf $C m >/dev/null <<'SQL'
SELECT count(*) FROM generate_series(1, 40) u,
  LATERAL memori_store_batch(ARRAY['u' || u || ' prefers JOINs over subqueries', 'u' || u || ' works on the churn report',
                                   'u' || u || ' uses PostgreSQL 15', 'the orders table of u' || u || ' has customer_id',
                                   'u' || u || ' lives in city ' || u, 'u' || u || ' likes short answers'],
                             'long_term', user_id => 'user' || u);
SQL
check "240 memories stored through the coordinator" "240 40" "$(q $C m "SELECT count(*) || ' ' || count(DISTINCT user_id) FROM memori_memories WHERE user_id LIKE 'user%'")"
check "both workers hold users" "2" \
  "$(q $C m "SELECT count(DISTINCT n.nodeport) FROM (SELECT DISTINCT get_shard_id_for_distribution_column('memori_memories', user_id) AS sid FROM memori_memories) x JOIN pg_dist_placement p ON p.shardid = x.sid JOIN pg_dist_node n ON n.groupid = p.groupid")"
check "a search returns k rows, all of that user" "5 true" \
  "$(q $C m "SELECT count(*) || ' ' || bool_and(content ~ '\\mu7\\M') FROM memori_search('How does the user write SQL?', k => 5, user_id => 'user7')")"
check "the best match is that user's rule" "u7 prefers JOINs over subqueries" \
  "$(q $C m "SELECT content FROM memori_search('Which SQL style does the user like?', k => 1, mode => 'vector', user_id => 'user7')")"
check "context through the coordinator" "1" \
  "$(q $C m "SELECT (memori_context('churn report', user_id => 'user9') LIKE '%u9 works on the churn report%')::int")"
check "as_of through the coordinator" "6" "$(q $C m "SELECT count(*) FROM memori_search('anything', k => 10, user_id => 'user3', as_of => now())")"

# A user's search is a router query to one worker, through that shard's HNSW index; SET LOCAL
# settings reach the worker (citus.propagate_set_commands = local).
v=$(q $C m "SELECT memori_embed('Which SQL style does the user like?')::text")
plan=$(qf $C m -c "SET citus.propagate_set_commands = 'local'" -c "BEGIN" -c "SET LOCAL enable_seqscan = off" \
  -c "SET LOCAL hnsw.iterative_scan = relaxed_order" \
  -c "EXPLAIN (COSTS OFF) SELECT m.id FROM memori_memories m WHERE m.user_id OPERATOR(pg_catalog.=) 'user7'::text AND m.embedding_dims = 384 ORDER BY m.embedding::vector(384) <=> '$v'::vector(384) LIMIT 10" -c "COMMIT")
check_true "EXPLAIN: one task (router)" grep -q "Task Count: 1" <<<"$plan"
check_true "EXPLAIN: the shard's HNSW index" grep -qE "Index Scan using idx_memori_mem_embedding_384_[0-9]+" <<<"$plan"

# memori's own index pass: its hnsw settings reach the worker with the query.
q $C m "SET memori.exact_search_rows = 0; SET memori.hnsw_ef_search = 123; SELECT count(*) FROM memori_search('Which SQL style?', k => 3, mode => 'vector', user_id => 'user7')" >/dev/null
check_true "memori_search's hnsw.ef_search and iterative scan reach the worker" \
  bash -c "cat '$(log_of citus_w1)' '$(log_of citus_w2)' | grep -qiE \"hnsw\\.ef_search( TO | = )'?123\" &&
           cat '$(log_of citus_w1)' '$(log_of citus_w2)' | grep -qiE \"hnsw\\.iterative_scan( TO | = )'?relaxed_order\""

# Writes through the coordinator, as the user.
id=$(q $C m "SELECT memory_id FROM memori_memories WHERE user_id = 'user5' AND content LIKE '%short answers'")
check "update (re-embedded, same id)" "t|u5 likes long answers" \
  "$(q $C m "SET memori.user_id = 'user5'; SELECT memori_update('$id', content => 'u5 likes long answers')" | tr '\n' '|')$(q $C m "SELECT content FROM memori_memories WHERE user_id = 'user5' AND memory_id = '$id'")"
check "forget by another user: false" "f" "$(q $C m "SET memori.user_id = 'user6'; SELECT memori_forget('$id')")"
check "forget by the user" "t" "$(q $C m "SET memori.user_id = 'user5'; SELECT memori_forget('$id')")"
conv=$(q $C m "SELECT memori_conversation_create('chat', user_id => 'user8')")
check "a memory joins its user's conversation" "1" \
  "$(q $C m "SELECT count(*) FROM memori_store_batch(ARRAY['in a conversation'], conversation_id => '$conv', user_id => 'user8')")"
err=$(q $C m "SELECT memori_store('x', conversation_id => '$conv', user_id => 'user9')" 2>&1 || true)
check_true "another user's conversation is refused" grep -q "does not exist for user \"user9\"" <<<"$err"
check "deleting the conversation deletes its memories (co-located foreign key)" "0" \
  "$(q $C m "DELETE FROM memori_conversations WHERE conversation_id = '$conv'; SELECT count(*) FROM memori_memories WHERE content = 'in a conversation'")"
q $C m "UPDATE memori_memories SET expires_at = now() - interval '1 minute' WHERE user_id IN ('user1', 'user2')" >/dev/null
check "memori_maintain over every shard" "12" "$(q $C m "SELECT expired FROM memori_maintain()")"
check "the merge of a near-duplicate stays on the user's shard" "1" \
  "$(q $C m "SET client_min_messages = warning; SELECT memori_store('u4 prefers JOINs over subqueries!', 'long_term', user_id => 'user4'); SELECT count(*) FROM memori_memories WHERE user_id = 'user4' AND content LIKE 'u4 prefers JOINs%'" | tail -n1)"

# Chat and extraction through the coordinator (a chat model on loopback).
qf $C m -c "ALTER SYSTEM SET memori.llm_provider = 'openai'" -c "ALTER SYSTEM SET memori.llm_url = 'http://127.0.0.1:$MOCK_PORT/v1'" \
        -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
q $C m "SELECT memori_store('The user lives in Paris.', 'long_term', user_id => 'user20')" >/dev/null
check "chat with extraction: the reply, both turns, the rule" "Noted. (turns seen: 1)|2|1" \
  "$(q $C m "SELECT memori_chat('Always use table aliases.', NULL, NULL, true, 'user20')")|$(q $C m "SELECT count(*) FROM memori_messages WHERE user_id = 'user20'")|$(q $C m "SELECT count(*) FROM memori_memories WHERE user_id = 'user20' AND memory_type = 'rule'")"
check "extraction supersedes on the user's shard" "supersede|The user lives in Paris." \
  "$(q $C m "SELECT action FROM memori_extract('I moved to Berlin.', user_id => 'user20')")|$(q $C m "SELECT content FROM memori_memories WHERE user_id = 'user20' AND valid_to IS NOT NULL")"

# Tenancy: an app role acts for the end user it names; it never sees another user's rows.
qf $C m -c "CREATE ROLE citus_app LOGIN" -c "SELECT memori_grant('citus_app', 'app', namespace => '')" >/dev/null
for n in citus_w1 citus_w2; do q $n m "SELECT 1" >/dev/null; done
as_app() { "$BIN/psql" -h "$(sock $C)" -p 5494 -U citus_app -d m -X -qAt -v ON_ERROR_STOP=1 -c "$1" 2>&1; }
check "the app's search returns only the named user's memories" "6 6" \
  "$(as_app "BEGIN; SET LOCAL memori.user_id = 'user11'; SELECT count(*) || ' ' || count(*) FILTER (WHERE content ~ '\\mu11\\M') FROM memori_search('anything', k => 10); COMMIT;")"
err=$(as_app "SELECT count(*) FROM memori_search('anything')" || true)
check_true "the app without a named user is refused" grep -q "memori.user_id" <<<"$err"
# Chat and extraction in the end user's conversation, as the app (review G5: the conversation
# check read as the caller, and a tenant's own reads on Citus see nothing).
check "the app chats in its end user's new conversation" "Noted. (turns seen: 1)" \
  "$(as_app "BEGIN; SET LOCAL memori.user_id = 'user13'; SELECT memori_chat('Hello there.', memori_conversation_create('c13')); COMMIT;")"
check "the app extracts in its end user's new conversation" "add" \
  "$(as_app "BEGIN; SET LOCAL memori.user_id = 'user13'; SELECT action FROM memori_extract('Always use CTEs.', memori_conversation_create('d13')); COMMIT;")"
check "both turns and the rule are the end user's, in their conversations" "2 1" \
  "$(q $C m "SELECT (SELECT count(*) FROM memori_messages WHERE user_id = 'user13' AND conversation_id IS NOT NULL) || ' ' ||
                    (SELECT count(*) FROM memori_memories WHERE user_id = 'user13' AND content = 'Always use CTEs.' AND conversation_id IS NOT NULL)")"
# Direct reads: the policies run on the workers, which know the grants (memori_grant sends them,
# each worker recording its own oid of the role). An app's end user reaches them with its
# SET LOCAL when Citus propagates it (citus.propagate_set_commands = 'local'), each SET a
# statement of its own (Citus forwards a SET's whole query string).
check "the workers record the app's grant, each with its own oid of the role" "citus_app app  true|citus_app app  true" \
  "$(for n in citus_w1 citus_w2; do q $n m "SELECT r.role_name || ' ' || r.kind || ' ' || r.namespace || ' ' || (r.role_oid = g.oid) FROM memori_roles r JOIN pg_roles g ON g.rolname = r.role_name WHERE r.role_name = 'citus_app'"; done | paste -sd'|')"
app_reads() {
  "$BIN/psql" -h "$(sock $C)" -p 5494 -U citus_app -d m -X -qAt -v ON_ERROR_STOP=1 -c "BEGIN" \
    -c "SET LOCAL citus.propagate_set_commands = 'local'" -c "SET LOCAL memori.user_id = '$1'" -c "$2" -c "COMMIT" 2>&1
}
check "a tenant's direct SELECT shows its own rows, on every table" "6 6 1 2" \
  "$(app_reads user12 "SELECT (SELECT count(*) FROM memori_memories) || ' ' || (SELECT count(*) FROM memori_memories WHERE content ~ '\\mu12\\M')") $(app_reads user13 "SELECT (SELECT count(*) FROM memori_conversations WHERE title = 'c13') || ' ' || (SELECT count(*) FROM memori_messages)")"
check "without the SET reaching the workers, the tenant's SELECT shows nothing (never another user's)" "0" \
  "$(as_app "BEGIN; SET LOCAL memori.user_id = 'user12'; SELECT count(*) FROM memori_memories; COMMIT;")"
check "without a named end user, the tenant's SELECT shows nothing" "0" "$(as_app "SELECT count(*) FROM memori_memories")"

# Every function of memori_api() through the coordinator, as an app granted a namespace (its
# end user u is the memori user citus_ns/u) and as a person's role.
qf $C m -c "CREATE ROLE citus_ns_app LOGIN" -c "CREATE ROLE citus_person LOGIN" \
        -c "SELECT memori_grant('citus_ns_app', 'app', namespace => 'citus_ns')" -c "SELECT memori_grant('citus_person')" >/dev/null
as_role() { local r=$1; shift; "$BIN/psql" -h "$(sock $C)" -p 5494 -U "$r" -d m -X -qAt -v ON_ERROR_STOP=1 -c "$1" 2>&1; }
tx() { as_role citus_ns_app "BEGIN; SET LOCAL memori.user_id = 'eu1'; $1; COMMIT;"; }
tx "SELECT memori_store('eu1 prefers window functions', 'rule')" >/dev/null
tx "SELECT count(*) FROM memori_store_batch(ARRAY['eu1 works on the invoices table', 'eu1 deploys on Fridays'])" >/dev/null
eid=$(tx "SELECT memory_id FROM memori_search('deploys', k => 1, mode => 'text')" | tail -n1)
check "app: store, batch and search (its end user's three memories)" "3 3" \
  "$(tx "SELECT count(*) || ' ' || count(*) FILTER (WHERE content LIKE 'eu1 %') FROM memori_search('anything', k => 10)" | tail -n1)"
check "app: update" "t" "$(tx "SELECT memori_update('$eid', content => 'eu1 deploys on Mondays')" | tail -n1)"
check "app: context" "1" "$(tx "SELECT (memori_context('window functions') LIKE '%eu1 prefers window functions%')::int" | tail -n1)"
check "app: relate and entity" "eu1 uses invoices" \
  "$(tx "SELECT memori_relate('eu1', 'uses', 'invoices')" >/dev/null; tx "SELECT content FROM memori_entity('invoices')" | tail -n1)"
check "app: embed and embed_batch" "384 2" \
  "$(tx "SELECT vector_dims(memori_embed('x')) || ' ' || cardinality(memori_embed_batch(ARRAY['a', 'b']))" | tail -n1)"
check "app: embedding_stats" "t" "$(tx "SELECT texts >= 0 FROM memori_embedding_stats()" | tail -n1)"
# memori_stats reads as the caller, like a direct SELECT: the end user must reach the workers.
check "app: stats (its own memories only, its SET LOCAL propagated)" "4" \
  "$("$BIN/psql" -h "$(sock $C)" -p 5494 -U citus_ns_app -d m -X -qAt -v ON_ERROR_STOP=1 -c "BEGIN" \
       -c "SET LOCAL citus.propagate_set_commands = 'local'" -c "SET LOCAL memori.user_id = 'eu1'" \
       -c "SELECT sum(value) FROM memori_stats() WHERE metric = 'memories'" -c "COMMIT" 2>&1)"
check "app: forget" "t" "$(tx "SELECT memori_forget('$eid')" | tail -n1)"
check "app: the rows are its end user's, in its namespace" "citus_ns/eu1 3" \
  "$(q $C m "SELECT user_id || ' ' || count(*) FROM memori_memories WHERE user_id LIKE 'citus_ns/%' GROUP BY user_id")"
# (Each in a transaction of its own: in the transaction where memori's functions wrote a user's
# rows, as the tables' owner, Citus refuses the tenant's own reads of those shards.)
as_role citus_person "SELECT memori_store('the person likes tea')" >/dev/null
check "person: store, search and a direct SELECT of its own rows" "1|1" \
  "$(as_role citus_person "SELECT count(*) FROM memori_search('tea', k => 5)")|$(as_role citus_person "SELECT count(*) FROM memori_memories")"
check "revoke reaches the workers" "t 0|0" \
  "$(q $C m "SELECT memori_revoke('citus_person')") $(for n in citus_w1 citus_w2; do q $n m "SELECT count(*) FROM memori_roles WHERE role_name = 'citus_person'"; done | paste -sd'|')"

# The DBA's functions on distributed tables.
check "stats: each distributed table's bytes, summed over its shards" "3 3 true" \
  "$(q $C m "SELECT count(*) FILTER (WHERE labels->>'kind' = 'table') || ' ' || count(*) FILTER (WHERE labels->>'kind' = 'indexes') || ' ' || bool_and(value > 0 OR labels->>'relation' <> 'memori_memories') FROM memori_stats() WHERE metric = 'relation_bytes' AND labels ? 'distributed'")"
check "export: the header, every memory and both chat turns of a user" "1 $(q $C m "SELECT count(*) FROM memori_memories WHERE user_id = 'user20'") 2" \
  "$(q $C m "SELECT count(*) FILTER (WHERE l->>'kind' = 'memori_export') || ' ' || count(*) FILTER (WHERE l->>'kind' = 'memory') || ' ' || count(*) FILTER (WHERE l->>'kind' = 'message') FROM memori_export('user20') l")"
check "import into another user (new ids), then erase" "6|6|6" \
  "$(q $C m "SELECT memories FROM memori_import(ARRAY(SELECT l - 'memory_id' FROM memori_export('user7', true) l), user_id => 'copy7')")|$(q $C m "SELECT count(*) FROM memori_memories WHERE user_id = 'copy7'")|$(q $C m "SELECT memories FROM memori_erase_user('copy7')")"
q $C m "UPDATE memori_memories SET embedding_model = 'earlier/model' WHERE user_id IN ('user30', 'user31', 'user32')" >/dev/null
qf $C m -c "SET client_min_messages = warning" -c "CALL memori_reembed(5)" >/dev/null
check "re-embedding: every memory moved, a few users at a time, each on its worker" "0 18" \
  "$(q $C m "SELECT remaining || ' ' || (SELECT count(*) FROM memori_memories WHERE user_id IN ('user30', 'user31', 'user32') AND embedding_model = 'local/all-MiniLM-L6-v2') FROM memori_reembed_progress()")"

# Backup and restore of a distributed memori (README "Scaling out"): memori_export of every user
# into a fresh database on the same nodes, distributed, then memori_import: the same rows.
for n in citus_w1 citus_w2 citus_c; do
  q $n postgres "CREATE DATABASE m2"
  qf $n m2 -c "SET client_min_messages = warning" -c "CREATE EXTENSION citus" -c "CREATE EXTENSION memori CASCADE" >/dev/null
done
qf $C m2 -c "SELECT citus_set_coordinator_host('127.0.0.1', 5494)" -c "SELECT citus_add_node('127.0.0.1', 5495)" \
         -c "SELECT citus_add_node('127.0.0.1', 5496)" -c "SET client_min_messages = warning" -c "SELECT memori_distribute()" >/dev/null
dump=$ROOT/citus_export
rm -rf "$dump" && mkdir -p "$dump"
q $C m "SELECT user_id FROM memori_memories UNION SELECT user_id FROM memori_conversations UNION SELECT user_id FROM memori_messages ORDER BY 1" > "$dump/users"
i=0
while read -r u; do
  i=$((i + 1))
  echo "COPY (SELECT memori_export(:'u', true)) TO STDOUT" | qf $C m -v u="$u" > "$dump/$i.jsonl"
  qf $C m2 -v u="$u" >/dev/null <<SQL
CREATE TEMP TABLE l (n bigserial, line jsonb);
\copy l (line) FROM '$dump/$i.jsonl'
SELECT memori_import(ARRAY(SELECT line FROM l ORDER BY n));
SQL
done < "$dump/users"
same() {
  q $C "$1" "SELECT count(*) || ' ' || md5(string_agg(concat_ws(',', user_id, memory_id, content, memory_type, importance_score, access_count,
               created_at, updated_at, valid_to, event_at, embedding::text, context_tags, metadata), '|' ORDER BY memory_id))
             FROM memori_memories"
  q $C "$1" "SELECT count(*) || ' ' || md5(string_agg(concat_ws(',', user_id, conversation_id, title, created_at), '|' ORDER BY conversation_id)) FROM memori_conversations"
  q $C "$1" "SELECT count(*) || ' ' || md5(string_agg(concat_ws(',', user_id, conversation_id, role, content, created_at), '|' ORDER BY created_at, content)) FROM memori_messages"
}
check "restored from per-user exports: every memory, conversation and message, byte for byte" "$(same m | paste -sd' ')" "$(same m2 | paste -sd' ')"
check "the restored database searches the same" \
  "$(q $C m "SELECT string_agg(content, '|') FROM memori_search('How does the user write SQL?', k => 3, user_id => 'user7')")" \
  "$(q $C m2 "SELECT string_agg(content, '|') FROM memori_search('How does the user write SQL?', k => 3, user_id => 'user7')")"

finish
