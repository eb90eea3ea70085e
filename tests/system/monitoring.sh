#!/usr/bin/env bash
# Monitoring: memori_stats() for the DBA and for a tenant, the counters in shared memory,
# structured log lines for provider failures, and Debian's prometheus-postgres-exporter on
# loopback with memori's queries file, scraped after some stores and searches.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
EXPORTER_PORT=9197
EXPORTER=
trap '[ -n "$EXPORTER" ] && kill $EXPORTER 2>/dev/null; cleanup' EXIT

C=monitoring
cluster_init $C 5491
q $C postgres "CREATE DATABASE mon"
qf $C mon <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
CREATE ROLE mon_alice LOGIN;
SELECT memori_grant('mon_alice', 'user');
SELECT memori_stats_reset();
SELECT memori_store('User prefers JOINs over subqueries', 'rule', user_id => 'mon_alice');
SELECT memori_store('The user prefers JOINs over subqueries', 'rule', user_id => 'mon_alice');
SELECT memori_store('Bob keeps invoices in the billing schema', 'long_term', user_id => 'mon_bob');
SELECT memori_store('Bob is leaving', 'short_term', expires_at => now() - interval '1 s', user_id => 'mon_bob');
SELECT count(*) FROM memori_search('How should SQL be written?', user_id => 'mon_alice');
SELECT count(*) FROM memori_search('invoices', user_id => 'mon_bob');
SELECT * FROM memori_maintain();
SQL
figure() { q $C mon "SELECT coalesce(sum(value), 0) FROM memori_stats() WHERE metric = '$1' $2"; }
check "counters run when preloaded" "1" "$(figure counters_available "")"
check "memories by type and state" "1 1" "$(figure memories "AND labels->>'type' = 'rule'") $(figure memories "AND labels->>'type' = 'long_term'")"
check "users and conversations" "2 0" "$(figure users "") $(figure conversations "")"
check "stores and merges since the reset" "3 1" "$(figure stores_total "") $(figure merges_total "")"
check "searches since the reset" "2" "$(figure searches_total "")"
check "local texts embedded (the searches' questions too) and cache hits" "t" \
  "$(q $C mon "SELECT (SELECT sum(value) FROM memori_stats() WHERE metric = 'embedding_texts_total') >= 5")"
check "a latency histogram: +Inf counts every call" "t" \
  "$(q $C mon "SELECT (SELECT value FROM memori_stats() WHERE metric = 'embedding_latency_seconds_bucket' AND labels @> '{\"provider\": \"local\", \"le\": \"+Inf\"}')
                   = (SELECT value FROM memori_stats() WHERE metric = 'embedding_calls_total' AND labels->>'provider' = 'local')")"
check "the maintenance pass and its expired row" "1 1" "$(figure maintenance_passes_total "") $(figure maintenance_rows_total "AND labels->>'step' = 'expired'")"
check "table and index sizes, the HNSW index among them" "t" \
  "$(q $C mon "SELECT bool_or(labels->>'relation' = 'idx_memori_mem_embedding_384') AND min(value) >= 0 FROM memori_stats() WHERE metric = 'relation_bytes'")"
tenant=$("$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U mon_alice -d mon -X -qAt \
  -c "SELECT string_agg(DISTINCT metric, ',' ORDER BY metric) || ' ' || (SELECT sum(value) FROM memori_stats() WHERE metric = 'memories') FROM memori_stats()")
check "a tenant sees its own figures only, no counters or sizes" "conversations,memories,memories_by_width,users 1" "$tenant"
check "a tenant may not reset the counters" "42501" \
  "$("$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U mon_alice -d mon -X -qAt -c '\set VERBOSITY verbose' -c "SELECT memori_stats_reset()" 2>&1 | awk '/^ERROR:/ {print $2; exit}' | tr -d ':' || true)"

# A provider failure: one key=value line in the server log, no secret in it.
log_start=$(stat -c %s "$(log_of $C)")
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d mon -X -qAt \
  -c "SET memori.embedding_provider = 'openai'" -c "SET memori.embedding_url = 'http://127.0.0.1:9/v1'" \
  -c "SET memori.embedding_api_key = 'sk-never-logged'" -c "SET memori.embedding_max_retries = 0" \
  -c "SELECT memori_embed('cannot be embedded')" >/dev/null 2>&1 || true
line=$(tail -c +"$((log_start + 1))" "$(log_of $C)" | grep 'memori: embedding failed' || true)
echo "# $line"
check_true "a provider failure is logged as key=value (provider, model, sqlstate, texts, duration)" \
  grep -qE 'memori: embedding failed provider=openai model=text-embedding-3-small sqlstate=08001 texts=1 duration_ms=[0-9]+' <<< "$line"
check_true "the log holds no key" bash -c "! tail -c +$((log_start + 1)) '$(log_of $C)' | grep -q sk-never-logged"
check "the failure is counted in its SQLSTATE class" "1" "$(figure embedding_errors_total "AND labels @> '{\"provider\": \"openai\", \"class\": \"08\"}'")"

# Prometheus: Debian's exporter with memori's queries file, on loopback, as the README's
# least-privileged role.
qf $C mon <<'SQL' >/dev/null
CREATE ROLE memori_monitor LOGIN BYPASSRLS IN ROLE pg_monitor;
GRANT SELECT ON memori_memories, memori_conversations, memori_messages, memori_embedding_cache TO memori_monitor;
GRANT EXECUTE ON FUNCTION memori_stats(), memori_counters() TO memori_monitor;
-- A monitoring role set up before 0.4.0 (no SELECT on memori_messages) keeps working.
CREATE ROLE memori_monitor_03 BYPASSRLS IN ROLE pg_monitor;
GRANT SELECT ON memori_memories, memori_conversations, memori_embedding_cache TO memori_monitor_03;
GRANT EXECUTE ON FUNCTION memori_stats(), memori_counters() TO memori_monitor_03;
SQL
check "a monitoring role without SELECT on memori_messages still gets memori_stats()" "t" \
  "$(q $C mon "SET ROLE memori_monitor_03; SELECT count(*) > 10 AND count(*) FILTER (WHERE metric = 'messages') = 0 FROM memori_stats()")"
DATA_SOURCE_NAME="host=$(sock $C) port=$(port $C) user=memori_monitor dbname=mon sslmode=disable" \
  /usr/bin/prometheus-postgres-exporter --web.listen-address=127.0.0.1:$EXPORTER_PORT \
  --extend.query-path="$HERE/monitoring/prometheus-queries.yaml" > "$ROOT/$C/exporter.log" 2>&1 & EXPORTER=$!
# Scraped until memori's metrics are in (the exporter may answer before it has connected).
metrics=""
for _ in $(seq 1 100); do
  metrics=$(/usr/bin/python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$EXPORTER_PORT/metrics', timeout=5).read().decode())" 2>/dev/null || true)
  grep -q '^memori_counters_available' <<< "$metrics" && break
  sleep 0.2
done
if grep -q '^memori' <<< "$metrics"; then
  grep -m 40 '^memori' <<< "$metrics" | sed 's/^/# /'
else
  sed 's/^/# exporter: /' "$ROOT/$C/exporter.log"
fi
# has REGEX: a line of the scrape matches.
has() { grep -qE "$1" <<< "$metrics"; }
check_true "scraped: live rules (memori_memories_value)" has '^memori_memories_value\{[^}]*state="live"[^}]*type="rule"[^}]*\} 1$'
check_true "scraped: searches and stores counted (memori_searches_total 2, memori_stores_total 3)" \
  bash -c "grep -qE '^memori_searches_total(\{[^}]*\})? 2$' <<< \"\$0\" && grep -qE '^memori_stores_total(\{[^}]*\})? 3$' <<< \"\$0\"" "$metrics"
check_true "scraped: local embedding calls and their latency histogram" \
  bash -c "grep -qE '^memori_embedding_calls_total\{[^}]*provider=\"local\"[^}]*\} [1-9]' <<< \"\$0\" && grep -qE '^memori_embedding_latency_seconds_bucket\{[^}]*le=\"\+Inf\"[^}]*provider=\"local\"' <<< \"\$0\"" "$metrics"
check_true "scraped: the openai failure in class 08" has '^memori_embedding_errors_total\{[^}]*class="08"[^}]*provider="openai"[^}]*\} 1$'
check_true "scraped: the HNSW index's size" has '^memori_relation_bytes\{[^}]*relation="idx_memori_mem_embedding_384"[^}]*\} [1-9]'
check_true "scraped: counters available" has '^memori_counters_available(\{[^}]*\})? 1$'
check_true "the exporter reported no error for memori's queries" bash -c "! grep -i 'error' '$ROOT/$C/exporter.log' | grep -qi memori"

finish
