#!/usr/bin/env bash
# Client libraries, on a cluster of their own: psycopg 3 (from the set-up's virtual environment)
# calls memori with the parameter types Python sends (float8 for a float); a user's export moves
# to another database; the examples (examples/clients/: psycopg, SQLAlchemy, asyncpg,
# node-postgres) run as an app role; then the retrieval eval (bench/eval) runs there.
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

# A user's export, through a file, into another database (as a DBA moves a user); the
# functions are the DBA's only.
q $C py "CREATE ROLE py_app LOGIN" >/dev/null
q $C py "SELECT memori_grant('py_app', 'app')" >/dev/null
q $C py "\\copy (SELECT memori_export('py_user', include_embeddings => true)) TO '$ROOT/$C/py_user.jsonl'"
q $C postgres "CREATE DATABASE py2"
q $C py2 "CREATE EXTENSION memori CASCADE"
qf $C py2 -c "CREATE TEMP TABLE lines (line jsonb)" -c "\\copy lines FROM '$ROOT/$C/py_user.jsonl'" \
   -c "SELECT * FROM memori_import(ARRAY(SELECT line FROM lines))" >/dev/null
same() { q $C "$1" "SELECT md5(string_agg(concat_ws('|', memory_id, content, importance_score, embedding, created_at, content_tsv), '/' ORDER BY memory_id)) FROM memori_memories WHERE user_id = 'py_user'"; }
check "export, file, import into another database: the same memories, embeddings and all" "$(same py)" "$(same py2)"
check "the export names its user and format" "py_user 1" "$(head -n1 "$ROOT/$C/py_user.jsonl" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["user_id"], d["format"])')"
for f in "memori_export('py_user')" "memori_erase_user('py_user')" "memori_import(ARRAY['{}'::jsonb])"; do
  got=$("$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U py_app -d py -X -qAt -c "\\set VERBOSITY verbose" -c "SELECT * FROM $f" 2>&1 | awk '/^ERROR:/ {print $2; exit}' | tr -d ':' || true)
  check "an app role may not run $f" "42501" "$got"
done
check "the DBA erases the user in the second database" "5 0" \
  "$(q $C py2 "SELECT memories || ' ' || conversations FROM memori_erase_user('py_user')")"

# The client examples (examples/clients/), each as an app role naming its end user per
# transaction: psycopg 3, SQLAlchemy 2, asyncpg with pgvector's codec, node-postgres.
q $C postgres "CREATE DATABASE apps"
qf $C apps -c "CREATE EXTENSION memori CASCADE" -c "CREATE ROLE ex_app LOGIN" -c "SELECT memori_grant('ex_app', 'app')" >/dev/null
S=$(sock $C); P=$(port $C); PY=/var/lib/memori/venv/bin/python; EX="$HERE/examples/clients"
for run in "psycopg|$PY $EX/psycopg_app.py 'host=$S port=$P dbname=apps user=ex_app'" \
           "sqlalchemy|$PY $EX/sqlalchemy_app.py 'postgresql+psycopg://ex_app@/apps?host=$S&port=$P'" \
           "asyncpg|$PY $EX/asyncpg_app.py 'postgresql://ex_app@/apps?host=$S&port=$P'" \
           "node-postgres|node $EX/node/app.js $S $P apps ex_app"; do
  name=${run%%|*}
  out=$(eval "${run#*|}" 2>&1) || true
  printf "%s\n" "$out" | sed -n "1,5s/^/# /p"
  check_true "the $name example stores, searches and builds context as an app role" grep -q "^ok $name: stored " <<< "$out"
done
check "the examples' memories, one per end user, in the app's namespace" "4" \
  "$(q $C apps "SELECT count(DISTINCT user_id) FROM memori_memories WHERE user_id LIKE 'ex_app/customer-%'")"

# The retrieval eval (make eval) on this cluster: it runs, and hybrid, the default mode, is at
# least as good as the better of vector and text on identifier questions, and within noise of
# vector on paraphrases (hit@1; 0.05 is 3 of the 60 paraphrases, about one standard error of the paired difference), where the
# text ranking can only add a word shared with a wrong memory. LoCoMo is where hybrid must beat
# both (README "Retrieval quality").
out=$(cd "$HERE/bench/eval" && /var/lib/memori/venv/bin/python run.py --host "$(sock $C)" --port "$(port $C)" --db eval 2>&1) || true
echo "$out" | sed 's/^/# /'
hit() { awk -v m="$1" -v k="$2" '$1 == m && $2 == k {print $4}' <<< "$out"; }
check_true "eval: hybrid hit@1 >= vector and text on identifier questions ($(hit hybrid identifier) vs $(hit vector identifier), $(hit text identifier))" \
  awk -v h="$(hit hybrid identifier)" -v v="$(hit vector identifier)" -v t="$(hit text identifier)" 'BEGIN { exit !(h != "" && h + 0 >= v + 0 && h + 0 >= t + 0) }'
check_true "eval: hybrid hit@1 within 0.05 of vector on paraphrases ($(hit hybrid paraphrase) vs $(hit vector paraphrase))" \
  awk -v h="$(hit hybrid paraphrase)" -v v="$(hit vector paraphrase)" 'BEGIN { exit !(h != "" && h + 0.05 >= v + 0) }'
check "eval: every negative comes back empty in hybrid mode" "20/20" \
  "$(awk '$1 == "hybrid" && $2 == "negative" {print $5}' <<< "$out")"
finish
