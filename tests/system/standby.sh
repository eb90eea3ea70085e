#!/usr/bin/env bash
# Hot standby: a real streaming replica on loopback (pg_basebackup -R). memori_search and
# memori_context work on it with the local model, as superuser and as a tenant role; every
# writing function fails with PostgreSQL's read-only error (25006) before any embedding work.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

P=primary
S=standby
cluster_init $P 5484
q $P postgres "CREATE DATABASE app"
qf $P app <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
CREATE ROLE standby_alice LOGIN;
SELECT memori_grant('standby_alice', 'user');
SELECT memori_store('User prefers JOINs over subqueries', 'rule', user_id => 'standby_alice');
SELECT memori_store('The orders table is partitioned by month', 'long_term', user_id => 'standby_alice');
SELECT memori_relate('orders.customer_id', 'references', 'customers.id', user_id => 'standby_alice');
SELECT memori_conversation_create('chat', user_id => 'standby_alice');
SQL
rm -rf "${ROOT:?}/$S" && mkdir -p "$ROOT/$S" && chown postgres:postgres "$ROOT/$S"
as_pg "$BIN/pg_basebackup" -h "$(sock $P)" -p "$(port $P)" -U postgres -D "$ROOT/$S/data" -R -X stream --checkpoint=fast
cat >> "$ROOT/$S/data/postgresql.conf" <<CONF
port = 5485
unix_socket_directories = '$ROOT/$S'
CONF
CLUSTERS+=("$ROOT/$S/data")
cluster_start $S
check "the standby is in recovery" "t" "$(q $S app "SELECT pg_is_in_recovery()")"
q $P app "SELECT memori_store('Stored on the primary after the base backup', 'long_term', user_id => 'standby_alice')" >/dev/null
replayed() { [ "$(q $S app "SELECT count(*) FROM memori_memories WHERE content LIKE 'Stored on the primary%'")" = 1 ]; }
check_true "the standby replays a store made on the primary" wait_until 30 replayed

check "search on the standby" "User prefers JOINs over subqueries" \
  "$(q $S app "SELECT content FROM memori_search('How should SQL be written?', k => 1, user_id => 'standby_alice')")"
check "search on the standby as a tenant role" "The orders table is partitioned by month" \
  "$(q $S app "SET ROLE standby_alice; SELECT content FROM memori_search('how is the orders table split up?', k => 1)")"
check "context on the standby" "t" \
  "$(q $S app "SET ROLE standby_alice; SELECT memori_context('orders') LIKE '## Rules%User prefers JOINs over subqueries%'")"

check "entity lookup on the standby" "orders.customer_id references customers.id" \
  "$(q $S app "SET ROLE standby_alice; SELECT content FROM memori_entity('customers.id')")"
check "embedding on the standby (local model, no cache)" "384" \
  "$(q $S app "SET ROLE standby_alice; SELECT vector_dims(memori_embed('a text never embedded before'))")"

# Each writing function: 25006, and no text was embedded (nothing else was attempted: for
# memori_extract and memori_chat, no chat model either, though none is configured here).
conv=$(q $P app "SELECT conversation_id FROM memori_conversations LIMIT 1")
mem=$(q $P app "SELECT memory_id FROM memori_memories LIMIT 1")
for call in "memori_store('a new fact', 'rule')" \
            "memori_store_batch(ARRAY['one', 'two'])" \
            "memori_update('$mem', content => 'changed')" \
            "memori_forget('$mem')" \
            "memori_relate('a', 'b', 'c')" \
            "memori_conversation_create('new chat')" \
            "memori_extract('I moved to Berlin.')" \
            "memori_chat('hello')" \
            "memori_maintain()"; do
  got=$("$BIN/psql" -h "$(sock $S)" -p "$(port $S)" -U postgres -d app -X -qAt 2>&1 <<SQL
SET memori.user_id = 'standby_alice';
SELECT $call;
\echo sqlstate=:LAST_ERROR_SQLSTATE
SELECT 'texts=' || texts FROM memori_embedding_stats();
SQL
)
  check "on the standby, ${call%%(*} fails with 25006 before embedding" "sqlstate=25006 texts=0" \
    "$(echo "$got" | grep -oE '^(sqlstate|texts)=.*' | tr '\n' ' ' | sed 's/ $//')"
done
check "the standby's memories are unchanged" "4" "$(q $S app "SELECT count(*) FROM memori_memories")"

finish
