#!/usr/bin/env bash
# Crash: kill -9 of a backend while memori_store_batch writes thousands of memories. The
# postmaster restarts the cluster through crash recovery; afterwards no row of the batch is
# visible, the memories stored before are intact, and search and store work again.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=crash
cluster_init $C 5483
q $C postgres "CREATE DATABASE crashdb"
qf $C crashdb <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
SET memori.dedup_threshold = 1;
SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'kept fact ' || g FROM generate_series(1, 20) g),
                                        'long_term', user_id => 'crash_user');
SELECT memori_store('User prefers JOINs over subqueries', 'rule', user_id => 'crash_user');
SQL
before=$(q $C crashdb "SELECT count(*) || ' ' || md5(string_agg(m::text, '|' ORDER BY id)) FROM memori_memories m")
base_pages=$(q $C crashdb "SELECT pg_relation_size('memori_memories') / 8192")

# The batch: 3,000 texts, dedup off so every one is an INSERT.
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d crashdb -X -qAt -c "
  SET memori.dedup_threshold = 1; SET application_name = 'crash_batch';
  SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'crash text number ' || g FROM generate_series(1, 3000) g),
                                          'long_term', user_id => 'crash_user')" > "$ROOT/$C/batch.out" 2>&1 &
batch=$!

# Kill it in the middle of writing: once its uncommitted rows have grown the table by 200 pages.
writing() {
  [ "$(q $C crashdb "SELECT pg_relation_size('memori_memories') / 8192 - $base_pages >= 200")" = t ]
}
if wait_until 120 writing; then
  pid=$(q $C crashdb "SELECT pid FROM pg_stat_activity WHERE application_name = 'crash_batch'")
  inflight=$(q $C crashdb "SELECT pg_relation_size('memori_memories') / 8192 - $base_pages")
  kill -9 "$pid"
  ok "killed the backend (pid $pid) mid-batch, $inflight pages of uncommitted rows written"
else
  fail "the batch never reached its writing phase"
fi
wait "$batch" 2>/dev/null || true

recovered() { q $C crashdb "SELECT 1" >/dev/null 2>&1; }
check_true "the cluster is back after crash recovery" wait_until 60 recovered
check_true "the server log shows the crash and the recovery" \
  grep -q "terminated by signal 9: Killed" "$(log_of $C)"
check "no row of the killed batch is visible" "0" \
  "$(q $C crashdb "SELECT count(*) FROM memori_memories WHERE content LIKE 'crash text number %'")"
check "the memories stored before are intact" "$before" \
  "$(q $C crashdb "SELECT count(*) || ' ' || md5(string_agg(m::text, '|' ORDER BY id)) FROM memori_memories m WHERE content NOT LIKE 'crash text number %'")"
check "search works after recovery" "User prefers JOINs over subqueries" \
  "$(q $C crashdb "SELECT content FROM memori_search('How should SQL be written?', k => 1, user_id => 'crash_user')")"
check "a new batch is stored after recovery" "25" \
  "$(q $C crashdb "SET memori.dedup_threshold = 1;
                   SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'after the crash ' || g FROM generate_series(1, 25) g),
                                                           'long_term', user_id => 'crash_user')")"
check "the HNSW index is valid and used after recovery" "t" \
  "$(q $C crashdb "SET enable_seqscan = off; SET enable_indexscan = on;
                   SELECT count(*) = 25 FROM (SELECT id FROM memori_memories WHERE embedding_dims = 384 AND content LIKE 'after the crash %'
                     ORDER BY embedding::vector(384) <=> (SELECT embedding::vector(384) FROM memori_memories WHERE content = 'after the crash 1')
                     LIMIT 25) s")"

finish
