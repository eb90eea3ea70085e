#!/usr/bin/env bash
# Client libraries: psycopg 3 (from the set-up's virtual environment) calls memori with the
# parameter types Python sends (float8 for a float), on a cluster of its own; then the retrieval
# eval (bench/eval, psycopg too) runs there.
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

# The retrieval eval (make eval) on this cluster: it runs, and hybrid, the default mode, is at
# least as good as vector on both kinds of question (hit@1).
out=$(cd "$HERE/bench/eval" && /var/lib/memori/venv/bin/python run.py --host "$(sock $C)" --port "$(port $C)" --db eval 2>&1) || true
echo "$out" | sed 's/^/# /'
hit() { awk -v m="$1" -v k="$2" '$1 == m && $2 == k {print $4}' <<< "$out"; }
check_true "eval: hybrid hit@1 >= vector on identifier questions ($(hit hybrid identifier) vs $(hit vector identifier))" \
  awk -v h="$(hit hybrid identifier)" -v v="$(hit vector identifier)" 'BEGIN { exit !(h != "" && h + 0 >= v + 0) }'
check_true "eval: hybrid hit@1 >= vector on paraphrases ($(hit hybrid paraphrase) vs $(hit vector paraphrase))" \
  awk -v h="$(hit hybrid paraphrase)" -v v="$(hit vector paraphrase)" 'BEGIN { exit !(h != "" && h + 0 >= v + 0) }'
check "eval: every negative comes back empty in hybrid mode" "20/20" \
  "$(awk '$1 == "hybrid" && $2 == "negative" {print $5}' <<< "$out")"
finish
