#!/usr/bin/env bash
# Changing the embedding model online: 3,000 memories embedded by the local model move to an
# OpenAI-compatible model on loopback (tests/support/random_embeddings.py, a slow one), with
# CALL memori_reembed(). Cancelled half-way, then resumed: progress is visible while it runs,
# searches work throughout and only ever rank memories of the configured model, nothing else
# about a memory changes, and no old embedding is left at the end.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
MOCK_PORT=18094
trap 'kill $MOCK 2>/dev/null || true; cleanup' EXIT
python3 "$HERE/tests/support/random_embeddings.py" $MOCK_PORT 0.05 & MOCK=$!

C=reembed
cluster_init $C 5492 "memori.embedding_api_key = 'sk-test-reembed'"
q $C postgres "CREATE DATABASE r"
qf $C r <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
SET memori.dedup_threshold = 1;
SELECT count(*) FROM generate_series(0, 2) b,
  LATERAL memori_store_batch(ARRAY(SELECT 'memory ' || (b * 1000 + g) || ' about table t' || g FROM generate_series(1, 1000) g),
                             'long_term', user_id => 'u' || b);
SQL
before=$(q $C r "SELECT md5(string_agg(concat_ws('|', memory_id, content, updated_at, created_at, metadata, content_tsv), '/' ORDER BY id)) FROM memori_memories")
check "3,000 memories of the local model" "3000 local/all-MiniLM-L6-v2" "$(q $C r "SELECT count(*) || ' ' || min(embedding_model) FROM memori_memories")"

# The DBA configures the new model (for the database), then moves the memories.
qf $C r -c "ALTER DATABASE r SET memori.embedding_provider = 'openai'" \
        -c "ALTER DATABASE r SET memori.embedding_url = 'http://127.0.0.1:$MOCK_PORT/v1'" \
        -c "ALTER DATABASE r SET memori.embedding_model = 'random-384'" >/dev/null
LABEL=openai/random-384
progress() { q $C r "SELECT done || ' ' || total FROM memori_reembed_progress()"; }
check "progress before: 0 of 3000 on $LABEL" "0 3000" "$(progress)"

# Moves in batches of 100 (about 0.05 s each); cancelled once at least 500 are done.
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d r -X -qAt -c "CALL memori_reembed(batch_size => 100)" \
  > "$ROOT/$C/first.log" 2>&1 & CALLER=$!
done_now=0
for _ in $(seq 1 200); do
  done_now=$(q $C r "SELECT done FROM memori_reembed_progress()")
  [ "$done_now" -ge 500 ] && break
  sleep 0.1
done
# While it runs: a search embeds its question with the new model and ranks only memories of it.
during=$(q $C r "SELECT count(*) || ' ' || count(*) FILTER (WHERE m.embedding_model = '$LABEL')
                   FROM memori_search('memory 7 about table t7', k => 20, mode => 'vector', user_id => 'u0') s
                   JOIN memori_memories m USING (memory_id)")
q $C r "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'CALL memori_reembed%'" >/dev/null
wait $CALLER || true
check_true "the CALL was cancelled half-way" grep -q "canceling statement due to user request" "$ROOT/$C/first.log"
mid=$(q $C r "SELECT done FROM memori_reembed_progress()")
echo "# cancelled at $mid of 3000; a search during the move: $during (rows, of the new model)"
check_true "half-way: some moved, some not ($mid)" test "$mid" -ge 500 -a "$mid" -lt 3000
check_true "a search during the move returns rows, all of the new model ($during)" \
  awk -v r="$during" 'BEGIN { split(r, a, " "); exit !(a[1] > 0 && a[1] == a[2]) }'
check "progress shows a start time and a rate" "true true" \
  "$(q $C r "SELECT (started_at IS NOT NULL) || ' ' || (rows_per_second > 0) FROM memori_reembed_progress()")"

# Resumed: goes on from there and ends.
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d r -X -qAt -c "CALL memori_reembed(batch_size => 250)" > "$ROOT/$C/second.log" 2>&1
check "resumed: all 3000 on $LABEL, none left" "3000 3000 0" "$(q $C r "SELECT done || ' ' || total || ' ' || remaining FROM memori_reembed_progress()")"
check "no old embedding is left" "0" "$(q $C r "SELECT count(*) FROM memori_memories WHERE embedding_model IS DISTINCT FROM '$LABEL'")"
check "every memory is as it was, but for its embedding (updated_at included; searches count accesses)" "$before" \
  "$(q $C r "SELECT md5(string_agg(concat_ws('|', memory_id, content, updated_at, created_at, metadata, content_tsv), '/' ORDER BY id)) FROM memori_memories")"
check "the resumed run moved what was left" "$((3000 - mid))" \
  "$(q $C r "SELECT reembedded FROM memori_reembed_state WHERE target_model = '$LABEL'" | awk -v m="$mid" '{print $1 - m}')"
check "a search finds by the new model" "memory 7 about table t7" \
  "$(q $C r "SELECT content FROM memori_search('memory 7 about table t7', k => 1, mode => 'vector', user_id => 'u0')")"
check "a CALL with nothing left to move ends at once" "0" \
  "$("$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d r -X -qAt -c "CALL memori_reembed()" 2>&1 | grep -c 'to go' | awk '{print $1 - 1}')"
check "inside a transaction block CALL is refused (it must commit)" "2D000" \
  "$("$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d r -X -qAt -c '\set VERBOSITY verbose' -c "BEGIN" -c "CALL memori_reembed()" 2>&1 | awk '/^ERROR:/ {print $2; exit}' | tr -d ':' || true)"

finish
