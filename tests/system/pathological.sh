#!/usr/bin/env bash
# Pathological inputs as a tenant (tests/support/pathological.py): every call ends within a
# small multiple of an ordinary input's time, measured in the same run, or is refused with a
# clear SQLSTATE; the backend's peak memory stays bounded.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=pathological
cluster_init $C 5480
q $C postgres "CREATE DATABASE p"
qf $C p >/dev/null <<'SQL'
CREATE EXTENSION memori CASCADE;
CREATE ROLE path_tenant LOGIN;
SELECT memori_grant('path_tenant', 'user');
SQL
out=$(/var/lib/memori/venv/bin/python "$HERE/tests/support/pathological.py" "$(sock $C)" "$(port $C)" p path_tenant 2>&1) || true
echo "$out"
PASSED=$((PASSED + $(grep -c '^ok - ' <<< "$out" || true)))
FAILED=$((FAILED + $(grep -c '^FAILED - ' <<< "$out" || true)))
grep -q '^pathological: ' <<< "$out" || { echo "FAILED - pathological.py stopped early"; FAILED=$((FAILED + 1)); }
check "no backend crashed (server log)" "0" "$(grep -c 'terminated by signal\|PANIC' "$(log_of $C)" || true)"
finish
