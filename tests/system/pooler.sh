#!/usr/bin/env bash
# Through a real pooler: pgbouncer (Debian's package) in transaction mode on loopback, one
# memori_app role, 20 end users. Every transaction names its end user with
# set_config('memori.user_id', ..., true) and must see only that user's memories; and a plain
# SET left on a server connection by one client never lets the next client act for that user.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap 'stop_pooler; cleanup' EXIT

# Twice: on a cluster that preloads memori, and on one that does not (there the first memori
# call of a server connection loads the library in the middle of a session, and must not count
# a value an earlier client left with a plain SET).
pooled() {
C=$1 PGPORT=$2 PB_PORT=$3; shift 3
echo "# $C"
cluster_init $C $PGPORT "max_connections = 60" "$@"
q $C postgres "CREATE DATABASE app"
qf $C app <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
CREATE ROLE pool_app LOGIN;
SELECT memori_grant('pool_app', 'app', namespace => '');  -- end users without a prefix: the DBA stored 'customer-1'...
SET memori.dedup_threshold = 1;
SELECT count(*) FROM (
  SELECT memori_store_batch(ARRAY['customer-' || u || ' fact one about orders', 'customer-' || u || ' fact two about invoices',
                                  'customer-' || u || ' fact three about refunds'], 'long_term', user_id => 'customer-' || u)
    FROM generate_series(1, 20) u) s;
SQL

PB=$ROOT/$C/pgbouncer
mkdir -p "$PB" && chown postgres:postgres "$PB"
cat > "$PB/pgbouncer.ini" <<INI
[databases]
app = host=$(sock $C) port=$(port $C) dbname=app
; one server connection: consecutive clients surely share it
app_one = host=$(sock $C) port=$(port $C) dbname=app pool_size=1
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $PB/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
logfile = $PB/pgbouncer.log
pidfile = $PB/pgbouncer.pid
INI
echo '"pool_app" ""' > "$PB/userlist.txt"
chown postgres:postgres "$PB"/*
as_pg /usr/sbin/pgbouncer -d "$PB/pgbouncer.ini"
stop_pooler() { [ -f "$PB/pgbouncer.pid" ] && kill "$(cat "$PB/pgbouncer.pid")" 2>/dev/null || true; }
up() { "$BIN/psql" -h 127.0.0.1 -p $PB_PORT -U pool_app -d app -X -qAt -c "SELECT 1" >/dev/null 2>&1; }
check_true "pgbouncer is up (transaction mode, loopback)" wait_until 10 up
via() { "$BIN/psql" -h 127.0.0.1 -p $PB_PORT -U pool_app -X -qAt "$@" 2>&1; }

# 20 concurrent end users through 4 server connections: any row of another user aborts the
# client (a division by zero, evaluated only when the check fails), and pgbench then fails.
cat > "$PB/tenant.sql" <<'SQL'
\set u random(1, 20)
BEGIN;
SELECT set_config('memori.user_id', 'customer-' || :u, true);
SELECT CASE WHEN count(*) = 3 AND bool_and(user_id::text = 'customer-' || :u) THEN 0 ELSE 1 / (0 * random())::int END FROM memori_memories;
SELECT CASE WHEN bool_and(content LIKE 'customer-' || :u || ' %') THEN 0 ELSE 1 / (0 * random())::int END FROM memori_search('which facts do I have?', k => 3);
SELECT CASE WHEN replace(memori_context('orders, invoices and refunds'), 'customer-' || :u || ' ', '') NOT LIKE '%customer-%' THEN 0 ELSE 1 / (0 * random())::int END;
COMMIT;
SQL
chown postgres:postgres "$PB/tenant.sql"
out=$(as_pg "$BIN/pgbench" -h 127.0.0.1 -p $PB_PORT -U pool_app -n -M simple -c 20 -j 2 -T 15 -f "$PB/tenant.sql" app 2>&1) && rc=0 || rc=$?
echo "$out" | grep -E "^(number of transactions actually processed|number of failed|tps)" || true
check "20 end users through pgbouncer: every transaction saw only its own user's rows" "0" "$rc"
check "no client was aborted" "0" "$(echo "$out" | grep -c 'aborted' || true)"

# A plain SET from one client stays on the (only) server connection...
via -d app_one -c "SET memori.user_id = 'customer-1'" >/dev/null
check "the plain SET is still on the server connection (the leak a pooler makes)" "customer-1" \
  "$(via -d app_one -c "SHOW memori.user_id")"
# ...and the next client, which names nobody, gets nothing and a clear error.
check "the next client sees none of customer-1's rows" "0" "$(via -d app_one -c "SELECT count(*) FROM memori_memories")"
check "the next client's search is refused with 42501" \
  "ERROR:  42501: memori: role \"pool_app\" is an app role and did not name the end user in this transaction" \
  "$(via -d app_one -c "\\set VERBOSITY verbose" -c "SELECT count(*) FROM memori_search('fact')" | grep '^ERROR')"
check "the next client's store is refused with 42501" "42501" \
  "$(via -d app_one -c "\\set VERBOSITY verbose" -c "SELECT memori_store('planted for customer-1')" | awk '/^ERROR/ {print $2}' | tr -d ':')"
check "nothing was stored for customer-1" "3" "$(q $C app "SELECT count(*) FROM memori_memories WHERE user_id::text = 'customer-1'")"
check "a client that names its end user in the transaction works" "3" \
  "$(via -d app_one -c "BEGIN" -c "SET LOCAL memori.user_id = 'customer-2'" -c "SELECT count(*) FROM memori_search('fact', k => 5)" -c "COMMIT")"

stop_pooler
}

pooled pooler 5490 6499
pooled pooler_nopreload 5479 6498 "shared_preload_libraries = ''"

finish
