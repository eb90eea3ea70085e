#!/usr/bin/env bash
# Backups: pg_dump (custom and plain formats) restored into a new database keeps every memory
# and conversation with all columns, and the restored database works: the HNSW indexes exist,
# searches find the restored memories, new stores do not collide with restored ids, tenants
# still see only their own rows. The embedding cache is left out (it is derivable).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=backup
cluster_init $C 5481
q $C postgres "CREATE DATABASE src"
qf $C src <<'SQL'
CREATE EXTENSION memori CASCADE;
SET memori.dedup_threshold = 1;
CREATE ROLE backup_alice LOGIN;
SELECT memori_grant('backup_alice', 'user');
CREATE ROLE backup_bob LOGIN;
SELECT memori_grant('backup_bob', 'user');
SELECT memori_conversation_create('Sales questions', user_id => 'backup_alice') AS conv \gset
SELECT memori_store('User prefers JOINs over subqueries', 'rule', importance => 0.9,
                    tags => ARRAY['sql','style'], metadata => '{"source": "chat"}',
                    entities => ARRAY['joins'], conversation_id => :'conv', user_id => 'backup_alice');
SELECT memori_relate('orders.customer_id', 'references', 'customers.id', user_id => 'backup_alice');
SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'alice note number ' || g || ' about table t' || (g % 17)
                                                FROM generate_series(1, 300) g),
                                        'long_term', user_id => 'backup_alice');
SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'bob fact ' || g FROM generate_series(1, 50) g),
                                        'short_term', user_id => 'backup_bob');
UPDATE memori_memories SET is_archived = true, access_count = 7, last_accessed_at = now() - interval '3 days'
 WHERE content = 'alice note number 5 about table t5';
SQL

want=$(fingerprint $C src)
check "the source database holds what was stored" "352 memories" "$(echo "$want" | cut -d' ' -f1-2)"
dump=$ROOT/$C/src.dump
as_pg "$BIN/pg_dump" -h "$(sock $C)" -p "$(port $C)" -U postgres -Fc -f "$dump" src
plain=$ROOT/$C/src.sql
as_pg "$BIN/pg_dump" -h "$(sock $C)" -p "$(port $C)" -U postgres -Fp -f "$plain" src

restored_works() {
  local db=$1 how=$2
  check "$how: every memory and conversation, every column" "$want" "$(fingerprint $C "$db")"
  check "$how: the HNSW indexes exist and are valid" "2" \
    "$(q $C "$db" "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
                  WHERE a.amname = 'hnsw' AND i.indrelid = 'memori_memories'::regclass AND i.indisvalid")"
  check "$how: the embedding cache is left out" "0" "$(q $C "$db" "SELECT count(*) FROM memori_embedding_cache")"
  check "$how: a search finds a restored memory" "User prefers JOINs over subqueries" \
    "$(q $C "$db" "SELECT content FROM memori_search('How should SQL be written?', k => 1, user_id => 'backup_alice')")"
  local mem conv
  mem=$(q $C "$db" "SELECT memori_store('a memory stored after the restore', 'rule', user_id => 'backup_bob')")
  check "$how: a new store gets an id after every restored one" "t" \
    "$(q $C "$db" "SELECT id > (SELECT max(id) FROM memori_memories WHERE memory_id <> '$mem') FROM memori_memories WHERE memory_id = '$mem'")"
  conv=$(q $C "$db" "SELECT memori_conversation_create('after', user_id => 'backup_bob')")
  check "$how: a new conversation gets an id after every restored one" "t" \
    "$(q $C "$db" "SELECT id > (SELECT max(id) FROM memori_conversations WHERE conversation_id <> '$conv') FROM memori_conversations WHERE conversation_id = '$conv'")"
  check "$how: row-level security holds for a tenant role" "1 0" \
    "$(q $C "$db" "SET ROLE backup_bob; SELECT (SELECT count(*) FROM memori_memories WHERE content = 'a memory stored after the restore') || ' ' ||
                         (SELECT count(*) FROM memori_memories WHERE user_id <> 'backup_bob')")"
}

q $C postgres "CREATE DATABASE restored_custom"
as_pg "$BIN/pg_restore" -h "$(sock $C)" -p "$(port $C)" -U postgres --exit-on-error -d restored_custom "$dump"
restored_works restored_custom "pg_dump -Fc | pg_restore"

q $C postgres "CREATE DATABASE restored_plain"
qf $C restored_plain -f "$plain" >/dev/null
restored_works restored_plain "pg_dump -Fp | psql"

finish
