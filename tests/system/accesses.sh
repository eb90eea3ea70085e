#!/usr/bin/env bash
# Memories read in read-only or REPEATABLE READ transactions are in use (review G6): with memori
# preloaded, their accesses are counted by the next maintenance pass, before it promotes or
# archives anything; a memory nobody reads is still archived, and without preloading the
# accesses are lost (as the README says). Ordinary searches too by default
# (memori.access_counting = deferred: no UPDATE in the search), or at once with immediate.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=accesses
cluster_init $C 5478
q $C postgres "CREATE DATABASE a"
q $C a "CREATE EXTENSION memori CASCADE" >/dev/null
qf $C a >/dev/null <<'SQL'
SELECT memori_store('User prefers dark mode in every editor', 'long_term', user_id => 'reader');
SELECT memori_store('User prefers light mode in every editor', 'long_term', user_id => 'idle');
SELECT memori_store('Current task: migrate the invoices table', 'short_term', user_id => 'reader');
UPDATE memori_memories SET updated_at = now() - interval '40 days' WHERE memory_type = 'long_term';
SQL
for i in 1 2 3; do
  q $C a "BEGIN READ ONLY; SELECT count(*) FROM memori_search('which mode does the user prefer in editors?', k => 1, user_id => 'reader', mode => 'text'); COMMIT" >/dev/null
  q $C a "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM memori_search('migrate the invoices table', k => 1, user_id => 'reader', mode => 'text'); COMMIT" >/dev/null
done
check "nothing was counted in the read-only and REPEATABLE READ transactions themselves" "0" \
  "$(q $C a "SELECT sum(access_count) FROM memori_memories")"
check "the pass counts them first: the memory in use is not archived, the unused one is; the task read 3 times is promoted" \
  "1 1" "$(q $C a "SELECT archived || ' ' || promoted FROM memori_maintain()")"
check "what was archived and what was promoted" "idle t|reader long_term 3|reader long_term 3" \
  "$(q $C a "SELECT string_agg(user_id || ' ' || CASE WHEN is_archived THEN 't' ELSE memory_type::text || ' ' || access_count END, '|' ORDER BY user_id, content) FROM memori_memories")"
check "the next pass counts nothing twice" "3 3" \
  "$(q $C a "SELECT count(*) FROM memori_maintain(); SELECT string_agg(access_count::text, ' ') FROM memori_memories WHERE user_id = 'reader'" | tail -n1)"

# Read-write searches: deferred by default (the search leaves no dead row version), immediate
# when asked.
q $C a "SELECT pg_stat_force_next_flush()" >/dev/null
before=$(q $C a "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'memori_memories'")
q $C a "SELECT count(*) FROM memori_search('which mode does the user prefer in editors?', k => 1, user_id => 'reader', mode => 'text')" >/dev/null
q $C a "SELECT pg_stat_force_next_flush()" >/dev/null
check "a read-write search writes nothing by default" "$before 3" \
  "$(q $C a "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'memori_memories'; SELECT access_count FROM memori_memories WHERE content LIKE '%dark mode%'" | paste -sd' ')"
check "the next pass counts it" "4" \
  "$(q $C a "SELECT count(*) FROM memori_maintain(); SELECT access_count FROM memori_memories WHERE content LIKE '%dark mode%'" | tail -n1)"
check "memori.access_counting = immediate counts in the search's transaction" "5" \
  "$(q $C a "SET memori.access_counting = immediate; SELECT count(*) FROM memori_search('which mode does the user prefer in editors?', k => 1, user_id => 'reader', mode => 'text'); SELECT access_count FROM memori_memories WHERE content LIKE '%dark mode%'" | tail -n1)"
finish
