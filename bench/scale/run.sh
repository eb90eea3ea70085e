#!/usr/bin/env bash
# memori side by side with the hand-written SQL a DBA would write instead (issue 23), at 302,000
# memories: 2,800 users with 100 memories each, one with 2,000 and one with 20,000; 384-d
# pseudo-random unit vectors; memory texts of ten words from a 60-word vocabulary, so the
# question's words are in about 15% of every user's memories. Prints figures, asserts nothing.
#
# One throw-away cluster (port 5488, socket under /tmp), loaded on both cores, then pinned to
# one (taskset -c 0) while pgbench and the loopback embeddings server (bench/mock_server.py)
# run on the other. memori embeds with the openai provider against that server (`dimensions`
# 384), so the question's embedding comes from its cache after the first search: the latencies
# exclude model time. pgbench: one search per transaction, one client; each round's figure is
# the mean latency of its transactions but the first (a fresh backend), the table shows the
# median of the rounds, which run interleaved (round 1 of every query, then round 2, ...).
#
# Measured for the users of 100, 2,000 and 20,000 memories:
# - memori_search in modes vector, text and hybrid (the default), as the DBA (user_id =>) and
#   as an app role under row-level security (SET LOCAL memori.user_id in each transaction);
#   vector mode through memori's HNSW path too (memori.exact_search_rows = 0), with its recall;
# - the hand-written vector query, exact (user index, every memory of the user compared) and
#   through the HNSW index at several hnsw.ef_search / hnsw.iterative_scan settings, each with
#   its recall@10 against the exact ranking (averaged over SCALE_QUESTIONS questions);
# - the hand-written full-text query scoped to the user (ts_rank, all terms and any term);
# - memori / the fastest hand-written vector query of at least memori's recall;
# - store: memori_store_batch of 100 texts and memori_store of one, with the loopback provider
#   and with the embeddings cached, against a plain INSERT of the same rows with precomputed
#   vectors, for a user of 100 memories and the user of 20,000 (after the searches);
# - memori's statements per search, by time (pg_stat_statements, before the stores).
#
# Settings: SCALE_ROUNDS (3), SCALE_SECONDS (2, per round and query), SCALE_SMALL_USERS (2800),
# SCALE_MID (2000), SCALE_BIG (20000), SCALE_QUESTIONS (20), SCALE_PORT (5488),
# SCALE_MOCK_PORT (18488), SCALE_HNSW ("40:off 40:relaxed_order 400:relaxed_order
# 1000:relaxed_order"), SCALE_OUT (/tmp/memori-scale-last: the raw figures,
# written as they come, and the table).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PG_MAJOR=${PG_MAJOR:-15}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PORT=${SCALE_PORT:-5488}
MOCK_PORT=${SCALE_MOCK_PORT:-18488}
ROUNDS=${SCALE_ROUNDS:-3}
SECS=${SCALE_SECONDS:-2}
SMALL_USERS=${SCALE_SMALL_USERS:-2800}
PER_SMALL=100
MID=${SCALE_MID:-2000}
BIG=${SCALE_BIG:-20000}
NQ=${SCALE_QUESTIONS:-20}
HNSW=${SCALE_HNSW:-"40:off 40:relaxed_order 400:relaxed_order 1000:relaxed_order"}
OUT=${SCALE_OUT:-/tmp/memori-scale-last}
QUESTION='what does the user prefer for orders.customer_id?'
LABEL='openai/text-embedding-3-small'
SMALL=u0007        # the measured users: 100, $MID and $BIG memories
STORE_SMALL=u0009  # stores go to a user of 100 and to the big one, after the searches
SERVER_CPU=0
CLIENT_CPU=$(( $(nproc) > 1 ? 1 : 0 ))

DIR=$(mktemp -d /tmp/memori-scale.XXXXXX)
chown postgres:postgres "$DIR"
as_pg() { sudo -u postgres -H "$@"; }
cleanup() {
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${MOCK_PID:-}" ] && kill "$MOCK_PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
now() { date +%s; }
T0=$(now)
say() { printf '[%4ds] %s\n' $(( $(now) - T0 )) "$*"; }

as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
cat >> "$DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$DIR'
shared_buffers = 4GB
maintenance_work_mem = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
synchronous_commit = off
shared_preload_libraries = 'pg_stat_statements,vector,memori'
# pg_stat_statements records nothing until a session turns compute_query_id on (the
# statement breakdown at the end): the timed runs pay nothing for it.
compute_query_id = off
pg_stat_statements.track = all
pg_stat_statements.track_planning = on
memori.maintenance_interval = 0
memori.embedding_provider = 'openai'
memori.embedding_url = 'http://127.0.0.1:$MOCK_PORT/v1'
memori.embedding_api_key = 'sk-bench'
memori.embedding_dimensions = 384
CONF
# synchronous_commit off: the stores' commits do not wait for the disk (the same for memori and
# the plain INSERT; this machine's fsync would otherwise dominate).
as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null
taskset -c "$CLIENT_CPU" python3 "$here/../mock_server.py" "$MOCK_PORT" & MOCK_PID=$!
psql() { "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
val() { "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -X -qAt -v ON_ERROR_STOP=1 -d bench "$@"; }
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$MOCK_PORT") 2>/dev/null && break; sleep 0.1; done
psql -d postgres -c "CREATE DATABASE bench"

TOTAL=$(( SMALL_USERS * PER_SMALL + MID + BIG ))
say "loading $TOTAL memories: $SMALL_USERS users x $PER_SMALL, one of $MID, one of $BIG (two sessions)"
psql -d bench -v small_users="$SMALL_USERS" -v per_small="$PER_SMALL" -v mid="$MID" -v big="$BIG" -f "$here/setup.sql" >/dev/null
psql -d bench -v label="$LABEL" -v slices=2 -v slice=0 -f "$here/load.sql" & l0=$!
psql -d bench -v label="$LABEL" -v slices=2 -v slice=1 -f "$here/load.sql" & l1=$!
wait $l0; wait $l1
say "loaded; building memori's indexes (HNSW with one parallel worker), VACUUM ANALYZE"
psql -d bench -f "$here/index.sql"
say "indexes built: $(val -c "SELECT count(*) || ' memories, table ' || pg_size_pretty(pg_table_size('memori_memories')) || ', indexes ' || pg_size_pretty(pg_indexes_size('memori_memories')) FROM memori_memories")"

# From here the server runs on one core, the clients and the loopback server on the other.
PM=$(head -n1 "$DIR/data/postmaster.pid")
for p in $PM $(pgrep -P "$PM"); do taskset -apc "$SERVER_CPU" "$p" >/dev/null; done
val -c "SELECT sum(pg_prewarm(c.oid))::bigint FROM pg_class c WHERE c.relname LIKE 'memori_memories%' OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'memori_memories'::regclass)" >/dev/null

# Store runs: transactions per round. All count for batches of 100 (a second or more each);
# a single store's first of each round is not counted (a fresh backend).
TB_SMALL=2; TB_BIG=1; TB_INS=2; TS_SMALL=15; TS_BIG=8
BATCHES=$(( ROUNDS * ( TB_SMALL * 2 + TB_INS + TB_BIG * 2 + TB_INS ) ))
SINGLES=$(( ROUNDS * ( (TS_SMALL + 1) * 3 + (TS_BIG + 1) * 3 ) ))
SETTINGS="{$(echo $HNSW | tr ' ' ',')}"
say "questions embedded, exact rankings, recall@10 of the HNSW settings and of memori's vector mode ($NQ questions per user)"
psql -d bench -v question="$QUESTION" -v label="$LABEL" -v users="{$SMALL,mid,big}" -v settings="$SETTINGS" \
     -v nq="$NQ" -v batches="$BATCHES" -v singles="$SINGLES" -f "$here/prepare.sql" >/dev/null
mkdir -p "$OUT"; rm -f "$OUT"/*.tsv "$OUT"/report.md
val -F $'\t' -c "SELECT label, user_id, recall, plan FROM bench_recall" > "$OUT/recall.tsv"
QVEC=$(val -c "SELECT vec::text FROM bench_questions WHERE n = 1")
# The question's full-text query, all terms and any term (. and _ read as spaces, as memori does).
AND_Q=$(val -c "SELECT plainto_tsquery('english', translate('$QUESTION', '._', '  '))::text")
OR_Q=$(val -c "SELECT replace(plainto_tsquery('english', translate('$QUESTION', '._', '  '))::text, ' & ', ' | ')")
sqlq() { printf "%s" "$1" | sed "s/'/''/g"; }  # as an SQL string's body

# The scripts. Every search returns its rows to the client, as an application's would.
S=$DIR/scripts; mkdir -p "$S"; chmod 755 "$DIR" "$S"
mem_dba() { echo "SELECT memory_id, content, similarity FROM memori_search('$QUESTION', k => 10$2, user_id => '$1');"; }
mem_app() { printf '%s\n' "BEGIN;" "SET LOCAL memori.user_id = '$1';" \
            "SELECT memory_id, content, similarity FROM memori_search('$QUESTION', k => 10$2);" "COMMIT;"; }
exact() { echo "SELECT memory_id, content, 1 - (embedding::vector(384) <=> '$QVEC'::vector(384)) AS similarity FROM memori_memories WHERE user_id = '$1' ORDER BY embedding::vector(384) <=> '$QVEC'::vector(384) LIMIT 10;"; }
hnsw() { echo "SELECT memory_id, content, 1 - (embedding::vector(384) <=> '$QVEC'::vector(384)) AS similarity FROM memori_memories WHERE user_id = '$1' AND embedding_dims = 384 ORDER BY embedding::vector(384) <=> '$QVEC'::vector(384) LIMIT 10;"; }
fts() { echo "SELECT memory_id, content, ts_rank(content_tsv, q) AS rank FROM memori_memories, CAST('$(sqlq "$2")' AS tsquery) q WHERE user_id = '$1' AND content_tsv @@ q ORDER BY rank DESC LIMIT 10;"; }

# Search runs: id|size|role|options (PGOPTIONS)|script file
RUNS=()
for size in small mid big; do
  case $size in small) u=$SMALL ;; mid) u=mid ;; big) u=big ;; esac
  for m in vector text hybrid; do
    arg=", mode => '$m'"; [ $m = hybrid ] && arg=""   # hybrid: the default mode
    mem_dba $u "$arg" > "$S/mem-$m-dba-$size.sql"; RUNS+=("memori $m dba|$size|postgres||$S/mem-$m-dba-$size.sql")
    mem_app $u "$arg" > "$S/mem-$m-app-$size.sql"; RUNS+=("memori $m app|$size|bench_app||$S/mem-$m-app-$size.sql")
  done
  # memori's own HNSW path (memori.exact_search_rows = 0: every user through the index).
  [ $size = small ] || RUNS+=("memori vector-hnsw dba|$size|postgres|-c memori.exact_search_rows=0|$S/mem-vector-dba-$size.sql")
  exact $u > "$S/exact-$size.sql"; RUNS+=("exact dba|$size|postgres||$S/exact-$size.sql")
  { echo "BEGIN;"; echo "SET LOCAL memori.user_id = '$u';"; exact $u; echo "COMMIT;"; } > "$S/exact-app-$size.sql"
  RUNS+=("exact app|$size|bench_app||$S/exact-app-$size.sql")
  hnsw $u > "$S/hnsw-$size.sql"
  for s in $HNSW; do
    RUNS+=("hnsw $s|$size|postgres|-c enable_sort=off -c hnsw.ef_search=${s%%:*} -c hnsw.iterative_scan=${s##*:}|$S/hnsw-$size.sql")
  done
  fts $u "$AND_Q" > "$S/fts-and-$size.sql"; RUNS+=("fts and|$size|postgres||$S/fts-and-$size.sql")
  fts $u "$OR_Q" > "$S/fts-or-$size.sql"; RUNS+=("fts or|$size|postgres||$S/fts-or-$size.sql")
done

mkdir -p "$OUT"; RES=$OUT/results.tsv; : > "$RES"   # kept as it grows: a run cut short leaves its figures
# pgbench once: ID SIZE ROLE OPTIONS FILE ROUND MODE (-T seconds or -t count) [SKIP: transactions
# not counted, 1 by default: a fresh backend's first]
bench() {
  local d=$DIR/pgb/$(echo "$1-$2-$6" | tr -c 'a-zA-Z0-9_.-' '_'); mkdir -p "$d"
  if ! (cd "$d" && PGOPTIONS="$4" taskset -c "$CLIENT_CPU" "$BIN/pgbench" -h "$DIR" -p "$PORT" -U "$3" -n -c 1 $7 -l -f "$5" bench > out 2>&1) \
     || grep -q 'aborted' "$d/out"; then
    echo "pgbench failed for $1 ($2):" >&2; tail -n 5 "$d/out" >&2; return 0
  fi
  # pgbench's log: the third field is the transaction's latency in microseconds.
  awk -v id="$1" -v size="$2" -v r="$6" -v skip="${8:-1}" 'NR > skip {s += $3; n++} END {if (n) printf "%s\t%s\t%s\t%.4f\t%d\n", id, size, r, s / n / 1000, n}' \
      "$d"/pgbench_log.* >> "$RES"
}

say "warming up: each search 3 times (buffers; the question's embedding is cached already)"
for run in "${RUNS[@]}"; do IFS='|' read -r id size role opts file <<< "$run"; bench "$id" "$size" "$role" "$opts" "$file" 0 "-t 3"; done
sed -i '/\t0\t/d' "$RES"
for r in $(seq "$ROUNDS"); do
  say "search round $r of $ROUNDS (${#RUNS[@]} queries, ${SECS} s each)"
  for run in "${RUNS[@]}"; do IFS='|' read -r id size role opts file <<< "$run"; bench "$id" "$size" "$role" "$opts" "$file" "$r" "-T $SECS"; done
done

# Where memori's time goes: each search 20 times more with pg_stat_statements recording every
# statement (memori's own, run through SPI, included), planning and execution apart.
say "statement breakdown (pg_stat_statements)"
BREAK=$OUT/breakdown.tsv; : > "$BREAK"
for size in small big; do
  case $size in small) u=$SMALL ;; big) u=big ;; esac
  for m in vector hybrid; do
    arg=", mode => '$m'"; [ $m = hybrid ] && arg=""
    # 20 searches, one statement each (a set-returning call in a loop would be one statement).
    for _ in $(seq 20); do echo "SELECT count(*) FROM memori_search('$QUESTION', k => 10$arg, user_id => '$u');"; done > "$DIR/b.sql"
    { echo "SET compute_query_id = on;"; echo "SELECT pg_stat_statements_reset();"; cat "$DIR/b.sql"; } | val >/dev/null
    val -F $'\t' -c "SELECT 'memori $m dba', '$size', calls / 20.0, round((total_plan_time / 20)::numeric, 3), round((total_exec_time / 20)::numeric, 3),
                            regexp_replace(query, '\s+', ' ', 'g')
                       FROM pg_stat_statements WHERE query NOT LIKE 'SET %' AND query NOT LIKE '%pg_stat_statements%'
                      ORDER BY total_plan_time + total_exec_time DESC LIMIT 8" >> "$BREAK"
  done
done

# Stores: each transaction takes the next unused texts (a sequence per run, over its own range
# of bench_texts), so nothing is ever a near-duplicate; the cached runs' texts are embedded into
# their user's cache beforehand.
batch=1; single=$(( BATCHES + 1 ))
SRUNS=()
store_run() {  # ID SIZE USER KIND(batch|single) PER_ROUND HOW(http|cached|insert)
  local skip=0; [ "$4" = single ] && skip=1
  local n=$(( ROUNDS * ($5 + skip) )) first seqname=s_$(echo "$1_$2" | tr -c 'a-z0-9' '_')
  if [ "$4" = batch ]; then first=$batch; batch=$(( batch + n )); else first=$single; single=$(( single + n )); fi
  val -c "CREATE SEQUENCE $seqname START $first" >/dev/null
  local pick="(SELECT nextval('$seqname'))"
  local f=$S/store-$seqname.sql
  case $4-$6 in
    batch-http|batch-cached) echo "SELECT count(*) FROM memori_store_batch(ARRAY(SELECT content FROM bench_texts WHERE batch = $pick ORDER BY n), memory_type => 'long_term', user_id => '$3');" ;;
    single-http|single-cached) echo "SELECT memori_store((SELECT content FROM bench_texts WHERE batch = $pick AND n = 1), memory_type => 'long_term', user_id => '$3');" ;;
    batch-insert) echo "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model, content_tsv) SELECT '$3', content, 'long_term', vec, '$LABEL', memori_text_document(content, 'english') FROM bench_texts WHERE batch = $pick;" ;;
    single-insert) echo "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model, content_tsv) SELECT '$3', content, 'long_term', vec, '$LABEL', memori_text_document(content, 'english') FROM bench_texts WHERE batch = $pick AND n = 1;" ;;
  esac > "$f"
  if [ "$6" = cached ]; then
    val -c "SET memori.user_id = '$3'" -c "SELECT count(*) FROM (SELECT memori_embed_batch(array_agg(content ORDER BY n)) FROM bench_texts WHERE batch BETWEEN $first AND $(( first + n - 1 )) GROUP BY batch) s" >/dev/null
  fi
  SRUNS+=("$1|$2|postgres|$(( $5 + skip ))|$f|$skip")
}
for size in small big; do
  case $size in small) u=$STORE_SMALL; tb=$TB_SMALL; ts=$TS_SMALL ;; big) u=big; tb=$TB_BIG; ts=$TS_BIG ;; esac
  store_run "store batch http" $size $u batch $tb http
  store_run "store batch cached" $size $u batch $tb cached
  store_run "store batch insert" $size $u batch $TB_INS insert
  store_run "store single http" $size $u single $ts http
  store_run "store single cached" $size $u single $ts cached
  store_run "store single insert" $size $u single $ts insert
done
for r in $(seq "$ROUNDS"); do
  say "store round $r of $ROUNDS"
  for run in "${SRUNS[@]}"; do IFS='|' read -r id size role t file skip <<< "$run"; bench "$id" "$size" "$role" "" "$file" "$r" "-t $t" "$skip"; done
done

say "done; raw figures in $OUT"
echo
python3 "$here/report.py" --results "$RES" --recall "$OUT/recall.tsv" --breakdown "$BREAK" \
  --sizes "small=$PER_SMALL,mid=$MID,big=$BIG" --users "small=$SMALL,mid=mid,big=big" --rounds "$ROUNDS" \
  --total "$TOTAL" --cores "$(nproc)" | tee "$OUT/report.md"
