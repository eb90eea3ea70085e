#!/usr/bin/env bash
# Client libraries: psycopg 3 (from the set-up's virtual environment) calls memori with the
# parameter types Python sends (float8 for a float), on a cluster of its own.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=clients
cluster_init $C 5485
q $C postgres "CREATE DATABASE py"
q $C py "CREATE EXTENSION memori CASCADE"
out=$(/var/lib/memori/venv/bin/python "$HERE/tests/clients/psycopg_numbers.py" "$(sock $C)" "$(port $C)" py 2>&1) || true
echo "$out"
PASSED=$((PASSED + $(grep -c '^ok - ' <<< "$out" || true)))
FAILED=$((FAILED + $(grep -c '^FAILED - ' <<< "$out" || true)))
grep -q '^ok - a merge raises a NOTICE' <<< "$out" || { echo "FAILED - psycopg_numbers.py stopped early"; FAILED=$((FAILED + 1)); }
finish
