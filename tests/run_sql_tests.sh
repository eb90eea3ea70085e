#!/usr/bin/env bash
# The SQL tests: pg_regress (expected output in tests/pg_regress/expected/*.out). Each test gets
# a fresh database. Most run against the local cluster (scripts/cluster.sh), which preloads
# memori; settings.sql needs a cluster that does not (it tests what happens before the library
# loads), so a second one is started for it. Which tests run where: the two schedules in
# tests/pg_regress/. `SQL_TESTS="acting security" make test-sql` runs only those (where each
# schedule lists them). expected/NAME_1.out and NAME_2.out are pg_regress's alternative outputs
# of NAME (it takes the one that matches): settings_1 for PostgreSQL 16 and later, whose error for
# SHOW of a setting the role may not read differs; install_2 for 18 and later, whose error raised
# by an extension's script adds the statement and the script's file name and line to its context
# (so a change of memori--VERSION.sql above that statement changes install_2's line number).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/pg.sh
. "$here/scripts/pg.sh"
PGXS=$("$PG_CONFIG" --pgxs)
REGRESS=$(dirname "$PGXS")/../test/regress/pg_regress
out=$(mktemp -d /tmp/memori-regress.XXXXXX)
chmod 755 "$out"
cp -r "$here/tests/pg_regress/sql" "$here/tests/pg_regress/expected" "$out/"
chown -R postgres:postgres "$out" 2>/dev/null || true
passed=0
failed=0

# suite NAME PORT SOCKET: runs tests/pg_regress/NAME_schedule, or the tests of it SQL_TESTS names.
suite() {
  local name=$1 port=$2 sock=$3
  local schedule="$here/tests/pg_regress/${name}_schedule" selected=()
  if [ -n "${SQL_TESTS:-}" ]; then
    for t in $SQL_TESTS; do grep -qx "test: $t" "$schedule" && selected+=("$t"); done
    [ ${#selected[@]} -gt 0 ] || return 0
    set -- "${selected[@]}"
  else
    set -- --schedule="$schedule"
  fi
  local dir="$out/$name"
  mkdir -p "$dir" && cp -r "$out/sql" "$out/expected" "$dir/" && chown -R postgres:postgres "$dir"
  sudo -u postgres -H "$REGRESS" --host="$sock" --port="$port" --user=postgres \
    --bindir="$PG_BIN" --inputdir="$dir" --outputdir="$dir" \
    --dbname=memori_regression "$@" 2>&1 | tee "$dir/stdout.log" || true
  [ -s "$dir/regression.diffs" ] && cat "$dir/regression.diffs"
  # pg_regress 15 prints "test NAME ... ok", 16 and later TAP lines ("ok 1 - NAME").
  passed=$((passed + $(grep -cE '^(ok [0-9]+ |test .* ok )' "$dir/stdout.log" || true)))
  failed=$((failed + $(grep -cE '^(not ok [0-9]+ |test .* FAILED)' "$dir/stdout.log" || true)))
  grep -q "tests passed" "$dir/stdout.log" || failed=$((failed > 0 ? failed : 1))
}

main_log=${MEMORI_PGDATA:-/var/lib/memori/pg$PG_MAJOR}/server.log
log_start=$(stat -c %s "$main_log" 2>/dev/null || echo 0)
suite preloaded "${MEMORI_PGPORT:-$PG_PORT}" "${MEMORI_PGSOCK:-/var/run/memori}"

# The worker logs one line per pass and database (looked for in what this run logged).
if [ -n "${SQL_TESTS:-}" ] && ! [[ " $SQL_TESTS " == *" worker "* ]]; then
  :
elif tail -c +"$((log_start + 1))" "$main_log" | grep -q 'memori: maintenance database=memori_regression status=ok expired=1 '; then
  echo "ok: the maintenance worker logged its pass"; passed=$((passed + 1))
else
  echo "FAILED: no maintenance log line in $main_log"; failed=$((failed + 1))
fi

# MEMORI_PGPORT_NOPRELOAD, MEMORI_PGDATA_NOPRELOAD: that cluster's port and data directory
# (its socket is the first one's, MEMORI_PGSOCK).
nopreload_port=${MEMORI_PGPORT_NOPRELOAD:-$PG_PORT_NOPRELOAD}
export MEMORI_PGDATA=${MEMORI_PGDATA_NOPRELOAD:-/var/lib/memori/pg$PG_MAJOR-nopreload} MEMORI_PGPORT=$nopreload_port MEMORI_PRELOAD=0
bash "$here/scripts/cluster.sh" start
suite not_preloaded "$nopreload_port" "${MEMORI_PGSOCK:-/var/run/memori}"
bash "$here/scripts/cluster.sh" stop

echo "sql: $passed passed, $failed failed"
[ "$failed" = 0 ]
