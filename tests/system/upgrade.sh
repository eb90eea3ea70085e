#!/usr/bin/env bash
# Upgrades: for every released version (sql/released/memori--V.sql, frozen as shipped), create
# that version, store memories with it, run ALTER EXTENSION memori UPDATE, and check that
#   (a) nothing is lost (every column of every row),
#   (b) the schema is identical to a fresh install of the new version (tests/system/catalog.sql),
#   (c) the functions work afterwards.
# Keep this test for every release: a release without a tested upgrade script is not done.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

# Released versions are frozen: their scripts and the released upgrade scripts never change
# (a change goes into a new memori--A--B.sql).
check "released SQL and upgrade scripts are as released (sql/released/SHA256SUMS)" "" \
  "$(cd "$HERE" && sha256sum -c sql/released/SHA256SUMS 2>&1 | grep -v ': OK$' || true)"

C=upgrade
cluster_init $C 5482
# Every column the old version had, of every row: columns added since are left out (they are
# checked on their own below).
kept() {
  q "$1" "$2" "SELECT (SELECT count(*) FROM memori_memories) || ' memories ' ||
                      (SELECT md5(string_agg((to_jsonb(m) - 'content_tsv' - 'valid_to' - 'superseded_by' - 'event_at' - 'dedup_scope' - 'dedup_sketch')::text, '|' ORDER BY id)) FROM memori_memories m) || ' ' ||
                      (SELECT count(*) FROM memori_conversations) || ' conversations ' ||
                      (SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM memori_conversations c)"
}
current=$(sed -n "s/^version = \"\(.*\)\"/\1/p" "$HERE/Cargo.toml" | head -n1)

q $C postgres "CREATE DATABASE fresh"
q $C fresh "CREATE EXTENSION memori CASCADE"
check "a fresh install is version $current" "$current" "$(q $C fresh "SELECT extversion FROM pg_extension WHERE extname = 'memori'")"
qf $C fresh -f "$HERE/tests/system/catalog.sql" > "$ROOT/$C/fresh.catalog"


for script in "$HERE"/sql/released/memori--*.sql; do
  old=$(basename "$script" .sql); old=${old#memori--}
  db="from_${old//./_}"
  q $C postgres "CREATE DATABASE $db"
  q $C "$db" "CREATE EXTENSION memori VERSION '$old' CASCADE"
  # Stored with the new library against the old version's SQL (what happens between
  # `make install` and ALTER EXTENSION UPDATE): by the DBA, and by a tenant as 0.1.0 granted it.
  qf $C "$db" <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'upgrade_alice') THEN
    CREATE ROLE upgrade_alice LOGIN IN ROLE memori_user;
  END IF;
  -- From 0.2.0 on, access is granted per database.
  IF pg_catalog.to_regprocedure('memori_grant(regrole, text)') IS NOT NULL THEN
    PERFORM memori_grant('upgrade_alice', 'user');
  END IF;
END $$;
SELECT memori_conversation_create('before the upgrade', user_id => 'upgrade_alice') AS conv \gset
SELECT memori_store('User prefers JOINs over subqueries', 'rule', importance => 0.9, tags => ARRAY['sql'],
                    metadata => '{"k": 1}', entities => ARRAY['joins'], conversation_id => :'conv',
                    user_id => 'upgrade_alice');
SELECT memori_relate('orders.customer_id', 'references', 'customers.id', user_id => 'upgrade_alice');
SET ROLE upgrade_alice;
SELECT memori_store('Alice stored this herself before the upgrade', 'long_term');
RESET ROLE;
SET memori.dedup_threshold = 1;
SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'note ' || g || ' on table t' || g FROM generate_series(1, 100) g),
                                        'long_term', user_id => 'upgrade_alice');
UPDATE memori_memories SET is_archived = true WHERE content = 'note 7 on table t7';
SQL
  # Searches and context with the new library against the old SQL (legacy entry points).
  check "$old with the new library: search works before the update" "User prefers JOINs over subqueries" \
    "$(q $C "$db" "SELECT content FROM memori_search('How should SQL be written?', k => 1, user_id => 'upgrade_alice')")"
  check "$old with the new library: context works before the update" "t" \
    "$(q $C "$db" "SELECT position('JOINs' IN memori_context('How should SQL be written?', user_id => 'upgrade_alice')) > 0")"
  check "$old with the new library: update works before the update" "t" \
    "$(q $C "$db" "SET memori.user_id = 'upgrade_alice'; SELECT memori_update(memory_id, importance => 0.7) FROM memori_memories WHERE content = 'note 9 on table t9'")"
  before=$(kept $C "$db")
  q $C "$db" "ALTER EXTENSION memori UPDATE"
  check "$old -> $current: the version moves on" "$current" "$(q $C "$db" "SELECT extversion FROM pg_extension WHERE extname = 'memori'")"
  check "$old -> $current: nothing is lost" "$before" "$(kept $C "$db")"
  check "$old -> $current: every memory has its full-text document" "0" \
    "$(q $C "$db" "SELECT count(*) FROM memori_memories WHERE content_tsv = ''::tsvector")"
  check "$old -> $current: every memory holds now (none superseded), no chat messages" "0 0" \
    "$(q $C "$db" "SELECT (SELECT count(*) FROM memori_memories WHERE valid_to IS NOT NULL OR superseded_by IS NOT NULL) || ' ' || (SELECT count(*) FROM memori_messages)")"
  check "$old -> $current: as_of finds an old memory after the update" "orders.customer_id references customers.id" \
    "$(q $C "$db" "SELECT content FROM memori_search('customer_id', k => 1, mode => 'text', user_id => 'upgrade_alice', as_of => now())")"
  check "$old -> $current: an old memory is found by its identifier" "orders.customer_id references customers.id" \
    "$(q $C "$db" "SELECT content FROM memori_search('customer_id', k => 1, mode => 'text', user_id => 'upgrade_alice')")"
  qf $C "$db" -f "$HERE/tests/system/catalog.sql" > "$ROOT/$C/$db.catalog"
  if diff -u "$ROOT/$C/fresh.catalog" "$ROOT/$C/$db.catalog" > "$ROOT/$C/$db.diff"; then
    ok "$old -> $current: the schema is identical to a fresh install ($(wc -l < "$ROOT/$C/fresh.catalog") catalog lines)"
  else
    fail "$old -> $current: the schema differs from a fresh install"
    cat "$ROOT/$C/$db.diff"
  fi
  check "$old -> $current: search works" "User prefers JOINs over subqueries" \
    "$(q $C "$db" "SELECT content FROM memori_search('How should SQL be written?', k => 1, user_id => 'upgrade_alice')")"
  check "$old -> $current: store works" "t" \
    "$(q $C "$db" "SELECT memori_store('stored after the upgrade', 'rule', user_id => 'upgrade_alice') IS NOT NULL")"
  check "$old -> $current: context works" "t" \
    "$(q $C "$db" "SELECT position('stored after the upgrade' IN memori_context('what was stored?', user_id => 'upgrade_alice')) > 0")"
  check "$old -> $current: maintain works" "1" "$(q $C "$db" "SELECT count(*) FROM memori_maintain()")"
  check "$old -> $current: no memory has an event time yet" "0" \
    "$(q $C "$db" "SELECT count(*) FROM memori_memories WHERE event_at IS NOT NULL")"
  check "$old -> $current: a tenant sees its own memories" "104" \
    "$(q $C "$db" "SET ROLE upgrade_alice; SELECT count(*) FROM memori_memories")"
  check "$old -> $current: a granted role runs the functions whose signatures changed" "t 2023-05-08" \
    "$(q $C "$db" "SET ROLE upgrade_alice; SELECT memori_store('met Bob at the fair', 'long_term', event_at => '2023-05-08 12:00+00') IS NOT NULL; SELECT event_at::date FROM memori_search('Bob fair', k => 1, event_from => '2023-05-01')" | paste -sd' ')"
done

# One session through the extension's life, as a pooled connection lives: what memori keeps of
# the catalogs (its schema, which tables and functions are its own) holds across transactions
# until PostgreSQL invalidates it, so another session dropping memori and creating it in another
# schema (with pgvector, which it must share a schema with) must not leave this one on the old
# names. (Renaming memori's schema is another matter: its functions' pinned search_path names
# the schema as it was at CREATE EXTENSION, as for any extension whose functions pin theirs.)
q $C postgres "CREATE DATABASE lives"
q $C lives "CREATE EXTENSION memori CASCADE"
other="$BIN/psql -h $(sock $C) -p $(port $C) -U postgres -d lives -X -qAt -v ON_ERROR_STOP=1"
got=$(qf $C lives 2>&1 <<SQL
SELECT memori_store('User prefers JOINs over subqueries', 'rule', user_id => 'lives') IS NOT NULL;
SELECT content FROM memori_search('How should SQL be written?', k => 1, user_id => 'lives');
\! $other -c "SET client_min_messages = warning" -c "DROP EXTENSION memori" -c "DROP EXTENSION vector" -c "CREATE SCHEMA elsewhere" -c "CREATE EXTENSION memori SCHEMA elsewhere CASCADE"
SELECT elsewhere.memori_store('Invoices are stored in cents', 'rule', user_id => 'lives') IS NOT NULL;
SELECT content FROM elsewhere.memori_search('How are amounts kept?', k => 1, user_id => 'lives');
SELECT elsewhere.memori_store('Reports run on Monday', 'rule', user_id => 'lives') IS NOT NULL;
SELECT string_agg(content, '|' ORDER BY content) FROM elsewhere.memori_search('When do reports run?', k => 2, mode => 'hybrid', user_id => 'lives');
SQL
) || true
check "one session: memori dropped by another, created in another schema: seen at once" \
  "t|User prefers JOINs over subqueries|t|Invoices are stored in cents|t|Invoices are stored in cents|Reports run on Monday" \
  "$(paste -sd'|' <<< "$got")"

# The same under REPEATABLE READ: a transaction whose snapshot predates another session's
# DROP EXTENSION, DROP SCHEMA and CREATE EXTENSION in a new schema. memori reads its schema with
# the catalog snapshot (the new one), never the transaction's (the old one: the dropped schema,
# whose name memori then read from nothing and crashed the server). After COMMIT the session
# searches the new schema's memories.
q $C postgres "CREATE DATABASE rr"
q $C rr "SET client_min_messages = warning; CREATE SCHEMA olds; CREATE EXTENSION memori SCHEMA olds CASCADE; CREATE TABLE t ()"
other="$BIN/psql -h $(sock $C) -p $(port $C) -U postgres -d rr -X -qAt -v ON_ERROR_STOP=1"
got=$("$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d rr -X -qAt 2>&1 <<SQL
SELECT olds.memori_store('User prefers JOINs over subqueries', 'rule', user_id => 'rr') IS NOT NULL;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM t;
\! $other -c "SET client_min_messages = warning" -c "DROP EXTENSION memori" -c "DROP EXTENSION vector" -c "DROP SCHEMA olds" -c "CREATE SCHEMA news" -c "CREATE EXTENSION memori SCHEMA news CASCADE" -c "SELECT news.memori_store('Invoices are stored in cents', 'rule', user_id => 'rr') IS NULL"
SELECT count(*) FROM news.memori_search('How are amounts kept?', k => 1, user_id => 'rr');
COMMIT;
SELECT 'after: ' || content FROM news.memori_search('How are amounts kept?', k => 1, user_id => 'rr');
SQL
) || true
check "REPEATABLE READ through another's DROP and CREATE EXTENSION in a new schema: no crash, then the new memories" \
  "after: Invoices are stored in cents" "$(tail -n1 <<< "$got")"
check_true "... and the server did not restart" bash -c "! grep -q 'terminated by signal' '$(log_of $C)'"

# A pgvector older than 0.8.0 (faked in the catalog) is refused with a clear error.
q $C postgres "CREATE DATABASE old_vector"
q $C old_vector "CREATE EXTENSION vector; UPDATE pg_extension SET extversion = '0.7.4' WHERE extname = 'vector'"
got=$("$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d old_vector -X -qAt 2>&1 <<'SQL'
\set VERBOSITY verbose
CREATE EXTENSION memori;
SQL
)
check_true "CREATE EXTENSION refuses pgvector 0.7.4 (0A000, naming both versions)" \
  grep -q "ERROR:  0A000: memori needs pgvector 0.8.0 or later, and the vector extension here is version 0.7.4" <<< "$got"

finish
