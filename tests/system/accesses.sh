#!/usr/bin/env bash
# Memories read in read-only or REPEATABLE READ transactions are in use (review G6): with memori
# preloaded, their accesses are counted by the next maintenance pass, before it promotes or
# archives anything; a memory nobody reads is still archived, and without preloading the
# accesses are lost (as the README says).
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
finish
