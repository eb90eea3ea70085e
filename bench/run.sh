#!/usr/bin/env bash
# memori benchmarks: prints figures, asserts nothing. `make bench` (after `make install`).
# Runs a throw-away cluster pinned to one core (taskset -c 0, RAYON_NUM_THREADS=1) so the
# figures are per core, plus a loopback OpenAI-compatible server for the HTTP provider.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
DIR=$(mktemp -d /tmp/memori-bench.XXXXXX)
PORT=${BENCH_PORT:-5498}
MOCK_PORT=${BENCH_MOCK_PORT:-18089}
chown postgres:postgres "$DIR"
as_pg() { sudo -u postgres -H env RAYON_NUM_THREADS=1 "$@"; }
cleanup() {
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
cat >> "$DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$DIR'
shared_buffers = 1GB
maintenance_work_mem = 1GB
CONF
as_pg taskset -c 0 "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null
python3 "$here/bench/mock_server.py" "$MOCK_PORT" & MOCK_PID=$!
sleep 0.5
psql() { "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -X -q "$@"; }
psql -d postgres -c "CREATE DATABASE bench"
psql -d bench -v ON_ERROR_STOP=1 -v mock="http://127.0.0.1:$MOCK_PORT/v1" -f "$here/bench/bench.sql"
# Searches, one transaction each (the query's embedding is cached, so this is the search itself):
# each mode for a small and a large user, and the large one through the HNSW index too.
search() {  # USER MODE SETTINGS LABEL
  { echo "$3"; echo "SELECT count(*) FROM memori_search('what does the user prefer for orders.customer_id?', k => 10, user_id => '$1', mode => '$2');"; } > "$DIR/search.sql"
  lat=$("$BIN/pgbench" -h "$DIR" -p "$PORT" -U postgres -n -c 1 -t 300 -f "$DIR/search.sql" bench 2>/dev/null \
        | awk '/latency average/ {print $4}')
  echo "search, k=10, $4, mode $2: $lat ms per search (pgbench, one transaction each)"
}
for mode in vector hybrid text; do
  search user7 $mode "" "a user with 100 of 40000 memories (exact)"
  search big $mode "" "a user with 20000 of 40000 memories (exact)"
  search big $mode "SET memori.exact_search_rows = 0;" "a user with 20000 of 40000 memories (HNSW, ef_search 1000)"
done
search big vector "SET memori.exact_search_rows = 0; SET memori.hnsw_ef_search = 200;" "a user with 20000 of 40000 memories (HNSW, ef_search 200)"
# As a tenant: an app role naming the end user in each transaction, under row-level security.
psql -d bench -c "CREATE ROLE bench_app LOGIN" -c "SELECT memori_grant('bench_app', 'app', namespace => '')" >/dev/null
for user in user7 big; do
  printf '%s\n' "BEGIN;" "SET LOCAL memori.user_id = '$user';" \
    "SELECT count(*) FROM memori_search('what does the user prefer for orders.customer_id?', k => 10);" "COMMIT;" > "$DIR/search.sql"
  lat=$("$BIN/pgbench" -h "$DIR" -p "$PORT" -U bench_app -n -c 1 -t 300 -f "$DIR/search.sql" bench 2>/dev/null \
        | awk '/latency average/ {print $4}')
  echo "search as an app role (RLS), k=10, default settings (hybrid), user $user: $lat ms per search"
done
