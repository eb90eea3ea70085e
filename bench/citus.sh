#!/usr/bin/env bash
# make bench-citus: memori distributed with Citus, search throughput with one worker and then two
# (after adding one and rebalancing), from the same coordinator. 200,000 memories over 2,000
# users (100 each); their 384-d vectors are drawn from a pool of 4,000 pseudo-random unit
# vectors (embedding 200,000 texts with the local model would take longer than the benchmark).
# Searches run through memori_search in vector mode for a random user, the query's embedding
# cached; pgbench clients on the coordinator. Prints tps and p50/p95 latency per setup.
#
# BENCH_USERS (2000), BENCH_PER_USER (100), BENCH_SECONDS (20), BENCH_CLIENTS (4).
set -euo pipefail
export MEMORI_SYSTEM_DIR=${MEMORI_BENCH_DIR:-/var/lib/memori/bench-citus}
. "$(dirname "$0")/../tests/system/lib.sh"
trap cleanup EXIT
USERS=${BENCH_USERS:-2000}
PER_USER=${BENCH_PER_USER:-100}
SECONDS_RUN=${BENCH_SECONDS:-20}
CLIENTS=${BENCH_CLIENTS:-4}

tcp="listen_addresses = '127.0.0.1'"
conf=("$tcp" "shared_preload_libraries = 'citus,memori'" "max_connections = 200" "shared_buffers = 512MB")
cluster_init bc_w1 5612 "${conf[@]}"
cluster_init bc_w2 5613 "${conf[@]}"
cluster_init bc_c 5611 "${conf[@]}"
C=bc_c
for n in bc_w1 bc_w2 bc_c; do
  q $n postgres "CREATE DATABASE m"
  qf $n m -c "SET client_min_messages = warning" -c "CREATE EXTENSION citus" -c "CREATE EXTENSION memori CASCADE" >/dev/null
done
qf $C m -c "SELECT citus_set_coordinator_host('127.0.0.1', 5611)" -c "SELECT citus_add_node('127.0.0.1', 5612)" \
        -c "SET client_min_messages = warning" -c "SELECT memori_distribute()" >/dev/null

echo "== loading $((USERS * PER_USER)) memories over $USERS users (one worker)"
t0=$(ms)
qf $C m >/dev/null <<SQL
CREATE TEMP TABLE pool AS
  SELECT n, (SELECT l2_normalize(array_agg(random() - 0.5)::real[]::vector) FROM generate_series(1, 384) WHERE n >= 0) AS v
    FROM generate_series(0, 3999) n;
INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model)
SELECT 'bu' || u, 'bench memory ' || j || ' of user ' || u, 'long_term', p.v, 'local/all-MiniLM-L6-v2'
  FROM generate_series(1, $USERS) u, generate_series(1, $PER_USER) j, pool p
 WHERE p.n = (u * 13 + j * 7) % 4000;
SQL
echo "loaded in $(( ($(ms) - t0) / 1000 )) s: $(q $C m "SELECT count(*) FROM memori_memories") memories"
q $C m "SELECT count(*) FROM memori_search('bench query', k => 10, mode => 'vector', user_id => 'bu1')" >/dev/null

cat > "$ROOT/search.sql" <<SQL
\set u random(1, $USERS)
SELECT count(*) FROM memori_search('bench query', k => 10, mode => 'vector', user_id => 'bu' || :u);
SQL

run() {
  local label=$1 dir=$ROOT/log-$1
  rm -rf "$dir" && mkdir -p "$dir" && chown postgres:postgres "$dir"
  (cd "$dir" && as_pg "$BIN/pgbench" -h "$(sock $C)" -p 5611 -U postgres -n -f "$ROOT/search.sql" \
     -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_RUN" -l m > "$dir/summary.txt" 2>&1)
  local tps; tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$dir/summary.txt" | head -n1)
  # pgbench's per-transaction log: the third field is the latency in microseconds.
  cat "$dir"/pgbench_log.* | awk '{print $3}' | sort -n > "$dir/lat.txt"
  local n p50 p95
  n=$(wc -l < "$dir/lat.txt")
  p50=$(sed -n "$(( (n * 50 + 99) / 100 ))p" "$dir/lat.txt")
  p95=$(sed -n "$(( (n * 95 + 99) / 100 ))p" "$dir/lat.txt")
  printf '%-28s %8.1f tps   p50 %6.2f ms   p95 %6.2f ms   (%d searches, %d clients, %d s)\n' \
    "$label" "$tps" "$(awk "BEGIN {print $p50 / 1000}")" "$(awk "BEGIN {print $p95 / 1000}")" "$n" "$CLIENTS" "$SECONDS_RUN"
}

echo "== memori_search through the coordinator"
one=$(run "one worker")
echo "$one"
t0=$(ms)
qf $C m -c "SELECT citus_add_node('127.0.0.1', 5613)" -c "SET client_min_messages = warning" -c "SELECT citus_rebalance_start(shard_transfer_mode => 'block_writes')" -c "SELECT citus_rebalance_wait()" >/dev/null
echo "(second worker added and shards rebalanced in $(( ($(ms) - t0) / 1000 )) s: $(q $C m "SELECT string_agg(nodeport || ':' || n, ' ') FROM (SELECT nodeport, count(*) n FROM pg_dist_placement p JOIN pg_dist_node d USING (groupid) JOIN pg_dist_shard s USING (shardid) WHERE s.logicalrelid = 'memori_memories'::regclass GROUP BY 1 ORDER BY 1) x") shards per worker)"
two=$(run "two workers")
echo "$two"
echo "machine: $(nproc) cores; coordinator, workers and pgbench share them"
