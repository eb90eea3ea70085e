#!/usr/bin/env bash
# memori benchmarks: prints figures, asserts nothing. `make bench` (after `make install`).
# The embedding figures: the local model, the cache, the HTTP provider's round trip. Runs a
# throw-away cluster pinned to one core (taskset -c 0, RAYON_NUM_THREADS=1) so the figures are
# per core, plus a loopback OpenAI-compatible server for the HTTP provider.
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
# Search and store, side by side with the hand-written SQL a DBA would write instead, at
# 302,000 memories: bench/scale/run.sh (make bench runs it next).
