#!/usr/bin/env bash
# The system tests: each script starts the real PostgreSQL clusters it needs (preloaded memori,
# a streaming standby, pgbench clients) and prints ok/FAILED lines. `tests/system/run.sh [NAME...]`
# runs the named ones (default: all) and closes with one "N passed, N failed" line.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(backup upgrade crash standby worker accesses blocking security capture pathological pooler retrieval clients monitoring reembed chat citus reinstall package soak)
passed=0
failed=0
for t in "${tests[@]}"; do
  echo "== system test: $t"
  out=$(mktemp)
  bash "$here/$t.sh" 2>&1 | tee "$out"
  p=$(grep -c '^ok - ' "$out" || true)
  f=$(grep -c '^FAILED - ' "$out" || true)
  # A script that died before its closing line counts as a failure.
  grep -qE "^$t: [0-9]+ passed, [0-9]+ failed$" "$out" || { echo "FAILED - $t.sh stopped early"; f=$((f + 1)); }
  passed=$((passed + p)); failed=$((failed + f))
  rm -f "$out"
done
echo "system: $passed passed, $failed failed"
[ "$failed" = 0 ]
