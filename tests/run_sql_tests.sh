#!/usr/bin/env bash
# The SQL tests: pg_regress (expected output) against the local cluster (scripts/cluster.sh).
# Each test gets a fresh database; psql output must match tests/pg_regress/expected/*.out.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
PORT=${MEMORI_PGPORT:-5499}
SOCK=${MEMORI_PGSOCK:-/var/run/memori}
PGXS=$(/usr/lib/postgresql/$PG_MAJOR/bin/pg_config --pgxs)
REGRESS=$(dirname "$PGXS")/../test/regress/pg_regress
out=$(mktemp -d /tmp/memori-regress.XXXXXX)
chmod 755 "$out"
cp -r "$here/tests/pg_regress/sql" "$here/tests/pg_regress/expected" "$out/"
chown -R postgres:postgres "$out" 2>/dev/null || true
tests=$(cd "$here/tests/pg_regress/sql" && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | sort)
status=0
set +o pipefail
sudo -u postgres -H "$REGRESS" --host="$SOCK" --port="$PORT" --user=postgres \
  --bindir=/usr/lib/postgresql/$PG_MAJOR/bin --inputdir="$out" --outputdir="$out" \
  --dbname=memori_regression $tests 2>&1 | tee "$out/stdout.log" || status=$?
if [ $status -ne 0 ] && [ -f "$out/regression.diffs" ]; then
  cat "$out/regression.diffs"
fi
grep -q "tests passed" "$out/stdout.log" || status=1
passed=$(grep -cE '^(ok|test) .* ok ' "$out/stdout.log" || true)
failed=$(grep -cE 'FAILED|failed \(ignored\)' "$out/stdout.log" || true)
echo "sql: ${passed:-0} passed, ${failed:-0} failed"
exit $status
