#!/usr/bin/env bash
# Soak: pgbench with SOAK_CLIENTS clients (default 8) for SOAK_SECONDS (default 60) through one
# memori_app role acting for 50 end users, a mix of store, store_batch, search, context,
# update and forget, while the DBA runs memori_maintain() every second and the worker runs its
# own passes. Passes when no transaction failed (pgbench counts errors, deadlocks, 40001), and
# the tables are consistent afterwards. `make soak` runs it alone and prints the summary.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

CLIENTS=${SOAK_CLIENTS:-8}
DURATION=${SOAK_SECONDS:-60}
C=soak
cluster_init $C 5488 "max_connections = 50" "memori.maintenance_interval = 5" "deadlock_timeout = 100ms"
q $C postgres "CREATE DATABASE soak"
qf $C soak <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
CREATE ROLE soak_app LOGIN;
SELECT memori_grant('soak_app', 'app', namespace => '');  -- end users without a prefix: the DBA stored 'user1'...
-- Every user starts with 20 memories and a conversation.
SELECT count(*) FROM (
  SELECT memori_store_batch(ARRAY(SELECT 'seed fact ' || g || ' of user ' || u || ' about table t' || (g % 13)
                                    FROM generate_series(1, 20) g), 'long_term', user_id => 'user' || u)
    FROM generate_series(1, 50) u) s;
SELECT count(*) FROM (SELECT memori_conversation_create('chat', user_id => 'user' || u) FROM generate_series(1, 50) u) s;
SQL

dir=$ROOT/$C/scripts
mkdir -p "$dir"
# Every transaction names its end user with set_config(..., true), as a pooled app does.
head=$(cat <<'SQL'
\set u random(1, 50)
\set n random(1, 400)
BEGIN;
SELECT set_config('memori.user_id', 'user' || :u, true);
SQL
)
cat > "$dir/store.sql" <<SQL
$head
SELECT memori_store('fact ' || :n || ' about table t' || (:n % 13), 'short_term', importance => 0.6,
                    conversation_id => (SELECT conversation_id FROM memori_conversations LIMIT 1));
COMMIT;
SQL
cat > "$dir/batch.sql" <<SQL
$head
SELECT count(*) FROM memori_store_batch(ARRAY['batch ' || :n || ' one', 'batch ' || :n || ' two', 'batch ' || :n || ' three'], 'long_term');
COMMIT;
SQL
cat > "$dir/search.sql" <<SQL
$head
SELECT count(*) FROM memori_search('which table holds fact ' || :n, k => 5);
COMMIT;
SQL
cat > "$dir/context.sql" <<SQL
$head
SELECT length(memori_context('tell me about table t' || (:n % 13)));
COMMIT;
SQL
cat > "$dir/update.sql" <<SQL
$head
SELECT memori_update((SELECT memory_id FROM memori_memories ORDER BY id DESC LIMIT 1 OFFSET (:n % 20)),
                     importance => 0.7, tags => ARRAY['soak']);
COMMIT;
SQL
cat > "$dir/forget.sql" <<SQL
$head
SELECT memori_forget((SELECT memory_id FROM memori_memories WHERE content LIKE 'batch %' ORDER BY id LIMIT 1 OFFSET (:n % 5)));
COMMIT;
SQL
chown -R postgres:postgres "$dir"

# The DBA's maintenance, every second, beside the clients.
(
  end=$((SECONDS + DURATION))
  while [ "$SECONDS" -lt "$end" ]; do
    q $C soak "SELECT count(*) FROM memori_maintain()" >/dev/null 2>>"$ROOT/$C/maintain.err" || echo failed >> "$ROOT/$C/maintain.err"
    sleep 1
  done
) &
maint=$!

out=$ROOT/$C/pgbench.out
set +e
as_pg "$BIN/pgbench" -h "$(sock $C)" -p "$(port $C)" -U soak_app -n -c "$CLIENTS" -j 2 -T "$DURATION" -P 10 \
  -f "$dir/store.sql@4" -f "$dir/batch.sql@1" -f "$dir/search.sql@8" -f "$dir/context.sql@3" \
  -f "$dir/update.sql@1" -f "$dir/forget.sql@1" --failures-detailed soak > "$out" 2>&1
rc=$?
set -e
wait "$maint" || true
echo "---- pgbench summary ----"
grep -E "^(number of clients|duration|number of transactions actually processed|number of failed|latency average|tps|SQL script [0-9]|  - [0-9]+ transactions|  - number of failed)" "$out" || true
check "pgbench finished without an aborted client" "0" "$rc"
check "no transaction failed (errors, deadlocks, serialization)" "0" \
  "$(awk -F'[: (]+' '/^number of failed transactions/ {print $5}' "$out")"
if grep -qE "ERROR|aborted" "$out"; then fail "pgbench reported errors:"; grep -E "ERROR|aborted" "$out" | sort | uniq -c | head; else ok "pgbench reported no error"; fi
check "memori_maintain() never failed beside the clients" "" "$(cat "$ROOT/$C/maintain.err" 2>/dev/null)"
check "no deadlock was detected" "0" "$(grep -c 'deadlock detected' "$(log_of $C)" || true)"

# Consistency afterwards.
check "every memory belongs to an end user that exists" "0" \
  "$(q $C soak "SELECT count(*) FROM memori_memories WHERE user_id !~ '^user([1-9]|[1-4][0-9]|50)$'")"
check "every memory's conversation belongs to the same user" "0" \
  "$(q $C soak "SELECT count(*) FROM memori_memories m JOIN memori_conversations c USING (conversation_id) WHERE c.user_id <> m.user_id")"
check "every memory has an embedding of the local model" "0" \
  "$(q $C soak "SELECT count(*) FROM memori_memories WHERE embedding_dims IS DISTINCT FROM 384 OR embedding_model <> 'local/all-MiniLM-L6-v2'")"
check "access counts and last-access times agree" "0" \
  "$(q $C soak "SELECT count(*) FROM memori_memories WHERE (access_count > 0) <> (last_accessed_at IS NOT NULL)")"
check "every short_term memory has an expiry" "0" \
  "$(q $C soak "SELECT count(*) FROM memori_memories WHERE memory_type = 'short_term' AND expires_at IS NULL")"
# The btree indexes agree with the table after the concurrent writes (an index scan and a
# sequential scan count the same rows).
check "the indexes agree with the table" "t" "$(q $C soak "
  SET enable_seqscan = off; SET enable_bitmapscan = off;
  CREATE TEMP TABLE by_index AS SELECT count(*) AS n FROM memori_memories WHERE user_id::text >= ''::text;
  RESET enable_seqscan; RESET enable_bitmapscan; SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off;
  SELECT (SELECT n FROM by_index) = (SELECT count(*) FROM memori_memories WHERE user_id::text >= ''::text)")"
# HNSW is approximate, and the soak's texts are near-duplicates (many identical across users):
# how many of 100 memories the index finds by their own embedding is printed, not asserted.
echo "HNSW self-lookup: $(q $C soak "
  SET enable_seqscan = off; SET hnsw.ef_search = 200;
  SELECT count(*) FROM (SELECT embedding::vector(384) AS e FROM memori_memories ORDER BY md5(memory_id::text) LIMIT 100) probe
   WHERE (SELECT embedding::vector(384) <=> probe.e FROM memori_memories WHERE embedding_dims = 384
           ORDER BY embedding::vector(384) <=> probe.e LIMIT 1) < 1e-6") of 100 found"
echo "memories: $(q $C soak "SELECT count(*) FROM memori_memories"), of which short_term: $(q $C soak "SELECT count(*) FROM memori_memories WHERE memory_type = 'short_term'")"

finish
