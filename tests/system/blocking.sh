#!/usr/bin/env bash
# Reads never wait for another transaction: not for its uncommitted embedding-cache writes, not
# for the rows its searches counted accesses on, not for a conversation it is storing into
# while the model runs; and a search never fails with 40001 under REPEATABLE READ. Each case
# holds the other transaction open through dblink, and runs the read with lock_timeout = 1s.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=blocking
cluster_init $C 5487
q $C postgres "CREATE DATABASE app"
qf $C app <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
CREATE EXTENSION dblink;
CREATE ROLE block_alice LOGIN;
SELECT memori_grant('block_alice', 'user');
CREATE ROLE block_mallory LOGIN;
SELECT memori_grant('block_mallory', 'user');
SELECT memori_store('Alice keeps her account balance in the ledger table', 'long_term', user_id => 'block_alice');
SELECT memori_store('Alice prefers JOINs over subqueries', 'rule', user_id => 'block_alice');
SELECT memori_conversation_create('shared chat', user_id => 'block_alice');
SQL
conn="host=$(sock $C) port=$(port $C) dbname=app"

# run SQL in a session with dblink connection "other" open as ROLE; prints the last value or the
# SQLSTATE of the first error.
run() {
  local role=$1 sql=$2
  "$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d app -X -qAt 2>/dev/null <<SQL | tail -n1
SELECT dblink_connect('other', '$conn user=$role');
\\set ON_ERROR_STOP 1
$sql
SQL
}

check "a search does not wait for another tenant's uncommitted cache write" "1" "$(run block_mallory "
SELECT dblink_exec('other', 'BEGIN');
SELECT * FROM dblink('other', \$\$SELECT vector_dims(memori_embed('Where is my account balance kept?'))\$\$) AS t(n int);
SET ROLE block_alice; SET lock_timeout = '1s';
SELECT count(*) FROM memori_search('Where is my account balance kept?', k => 1);")"

check "a search does not wait for another search's access counting" "2" "$(run block_alice "
SELECT dblink_exec('other', 'BEGIN');
SELECT * FROM dblink('other', \$\$SELECT count(*) FROM memori_search('account balance', k => 2)\$\$) AS t(n bigint);
SET ROLE block_alice; SET lock_timeout = '1s';
SELECT count(*) FROM memori_search('account balance', k => 2);")"

check "a search under REPEATABLE READ does not fail with 40001" "2" "$(run block_alice "
SET ROLE block_alice;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM memori_memories;
SELECT * FROM dblink('other', \$\$SELECT count(*) FROM memori_search('account balance', k => 2)\$\$) AS t(n bigint);
SELECT count(*) FROM memori_search('account balance', k => 2);
COMMIT;
SELECT count(*) FROM memori_search('account balance', k => 2);")"

conv=$(q $C app "SELECT conversation_id FROM memori_conversations")
check "a store into a conversation does not wait for another store's embedding" "t" "$(run block_alice "
SELECT dblink_exec('other', 'BEGIN');
SELECT * FROM dblink('other', \$\$SELECT memori_embed('warm up the model')::text <> ''\$\$) AS t(b bool);
SELECT dblink_send_query('other', \$\$SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'batch text ' || g FROM generate_series(1, 400) g), conversation_id => '$conv')\$\$);
SELECT pg_sleep(0.3);
SET ROLE block_alice; SET lock_timeout = '1s';
SELECT memori_store('stored while a batch embeds', conversation_id => '$conv') IS NOT NULL;")"

finish
