#!/usr/bin/env bash
# Hostile tenants (issue: tenant isolation). Each route below is tried as a tenant role and must
# fail, while honest tenants keep working:
# - the shared embedding cache: no tenant may read, write, purge or lock it;
# - a tenant's many embeddings in one connection never fail (the old opportunistic purge);
# - operator and function capture: overloads planted in public (where tenants may CREATE, as on
#   PostgreSQL 13/14) for every operator and function shape memori's SQL uses are never run, by
#   memori's functions as tenant, app or superuser, by the maintenance worker, by
#   CREATE EXTENSION or by ALTER EXTENSION UPDATE;
# - oversized input is refused before any work (54000).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=security
cluster_init $C 5489 "memori.maintenance_interval = 1"
LOG=$(log_of $C)
q $C postgres "CREATE DATABASE app"
qf $C app <<'SQL' >/dev/null
CREATE EXTENSION memori CASCADE;
CREATE ROLE sec_alice LOGIN;
SELECT memori_grant('sec_alice', 'user');
CREATE ROLE sec_mallory LOGIN;
SELECT memori_grant('sec_mallory', 'user');
CREATE ROLE sec_app LOGIN;
SELECT memori_grant('sec_app', 'app');
CREATE ROLE sec_attacker LOGIN;
GRANT CREATE ON SCHEMA public TO sec_attacker;   -- PostgreSQL 13/14's default for PUBLIC
SQL
as() { local role=$1 db=$2; shift 2; "$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U "$role" -d "$db" -X -qAt "$@" 2>&1; }
# sqlstate ROLE DB SQL: the SQLSTATE the statement fails with, or "ok".
sqlstate() {
  as "$1" "$2" -v VERBOSITY=verbose -c "\\set VERBOSITY verbose" -c "$3" | awk '/^ERROR:/ {print $2; found=1; exit} END {if (!found) print "ok"}' | tr -d ':'
}

# --- the embedding cache ----------------------------------------------------------------------
check "an honest tenant embeds 70 new texts in one connection" "70" \
  "$(as sec_alice app -c "SELECT count(memori_embed('alice text number ' || g)) FROM generate_series(1, 70) g")"
for stmt in "SELECT count(*) FROM memori_embedding_cache" \
            "INSERT INTO memori_embedding_cache VALUES ('local', 'all-MiniLM-L6-v2', 384, '\\x00', array_fill(0.1, ARRAY[384])::vector, 'infinity')" \
            "UPDATE memori_embedding_cache SET created_at = 'infinity'" \
            "DELETE FROM memori_embedding_cache" \
            "BEGIN; LOCK TABLE memori_embedding_cache IN ACCESS EXCLUSIVE MODE; COMMIT"; do
  check "a tenant cannot: ${stmt:0:60}" "42501" "$(sqlstate sec_mallory app "$stmt")"
done
check "a tenant's embedding of a cached text is the same vector" "t" \
  "$(as sec_mallory app -c "SELECT memori_embed('alice text number 7') = (SELECT memori_embed('alice text number 7'))")"

# --- squatting and locks: tenants read their rows and write only through memori's functions ---
as sec_alice app -c "SELECT memori_store('alice owns this fact', 'rule')" >/dev/null
for stmt in "INSERT INTO memori_memories (id, user_id, content, memory_type) VALUES (1000000, 'sec_mallory', 'squat', 'rule')" \
            "UPDATE memori_memories SET id = id + 1000000" \
            "DELETE FROM memori_memories" \
            "INSERT INTO memori_conversations (id, user_id) VALUES (1000000, 'sec_mallory')" \
            "SELECT nextval('memori_memories_id_seq')" \
            "SELECT id FROM memori_memories FOR UPDATE" \
            "BEGIN; LOCK TABLE memori_memories IN ACCESS EXCLUSIVE MODE; COMMIT" \
            "BEGIN; LOCK TABLE memori_conversations IN SHARE MODE; COMMIT" \
            "SELECT * FROM memori_store_locks"; do
  check "a tenant cannot: ${stmt:0:60}" "42501" "$(sqlstate sec_mallory app "$stmt")"
done
check "a tenant still reads its own rows, and only those" "1 0" \
  "$(as sec_alice app -c "SELECT (SELECT count(*) FROM memori_memories WHERE content = 'alice owns this fact') || ' ' ||
                                (SELECT count(*) FROM memori_memories WHERE user_id::text <> current_user::text)")"
# The strongest lock a tenant can hold (ACCESS SHARE, by reading in an open transaction) makes
# nobody's store, update or forget wait.
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U sec_mallory -d app -X -q -c "BEGIN; LOCK TABLE memori_memories, memori_conversations IN ACCESS SHARE MODE; SELECT pg_sleep(8); COMMIT;" >/dev/null 2>&1 &
sleep 0.5
check "with a tenant's ACCESS SHARE lock held, another tenant stores, updates and forgets (lock_timeout 1s)" "t t t" \
  "$(as sec_alice app -c "SET lock_timeout = '1s'" -c "SELECT memori_store('stored during the lock', 'rule') IS NOT NULL" \
       -c "SELECT memori_update((SELECT memory_id FROM memori_memories WHERE content = 'stored during the lock'), importance => 0.9)" \
       -c "SELECT memori_forget((SELECT memory_id FROM memori_memories WHERE content = 'stored during the lock'))" | tr '\n' ' ' | sed 's/ $//')"

# --- authority is per database: a grant in app gives nothing in app2 ----------------------------
q $C postgres "CREATE DATABASE app2"
q $C app2 "CREATE EXTENSION memori CASCADE" >/dev/null
q $C app2 "SELECT memori_store('app2: customer-1 card ends 4242', 'rule', user_id => 'customer-1')" >/dev/null
for stmt in "BEGIN; SELECT set_config('memori.user_id', 'customer-1', true); SELECT count(*) FROM memori_memories; COMMIT" \
            "BEGIN; SELECT set_config('memori.user_id', 'customer-1', true); SELECT count(*) FROM memori_search('card'); COMMIT" \
            "SELECT memori_store('planted in app2', 'rule')"; do
  check "an app granted in app cannot, in app2: ${stmt:0:70}" "42501" "$(sqlstate sec_app app2 "$stmt")"
done
q $C app2 "CREATE ROLE sec_app2_user LOGIN; SELECT memori_grant('sec_app2_user', 'user')" >/dev/null
check "a role granted in app2 has no access in app" "42501" "$(sqlstate sec_app2_user app "SELECT count(*) FROM memori_search('card')")"
check "memori_revoke() takes access away" "t 42501" \
  "$(q $C app2 "SELECT memori_revoke('sec_app2_user')") $(sqlstate sec_app2_user app2 "SELECT count(*) FROM memori_search('card')")"

# --- the API key and the URL -------------------------------------------------------------------
for stmt in "ALTER DATABASE app SET memori.embedding_api_key = 'sk-live-123'" \
            "ALTER ROLE sec_app SET memori.embedding_api_key = 'sk-live-123'" \
            "ALTER ROLE sec_app IN DATABASE app SET memori.embedding_api_key = 'sk-live-123'" \
            "CREATE FUNCTION public.leaky() RETURNS int LANGUAGE sql SET memori.embedding_api_key = 'sk-live-123' AS 'SELECT 1'"; do
  check "the key cannot be set where every role reads it: ${stmt:0:45}..." "22023" "$(sqlstate postgres app "$stmt")"
done
check "no key landed in pg_db_role_setting or pg_proc" "0" \
  "$(q $C app "SELECT (SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%sk-live%')
                    + (SELECT count(*) FROM pg_proc WHERE array_to_string(proconfig, ',') LIKE '%sk-live%')")"
q $C app "ALTER SYSTEM SET memori.embedding_api_key = 'sk-live-123'" >/dev/null
q $C app "ALTER SYSTEM SET memori.embedding_url = 'http://memori:url-pw-42@127.0.0.1:9/v1?token=tok-77'" >/dev/null
q $C app "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
for stmt in "SHOW memori.embedding_api_key" "SELECT current_setting('memori.embedding_api_key')" \
            "SHOW memori.embedding_url" "SELECT current_setting('memori.embedding_url')"; do
  check "a tenant cannot read: $stmt" "42501" "$(sqlstate sec_mallory app "$stmt")"
done
check "pg_settings shows a tenant neither the key nor the URL" "0" \
  "$(as sec_mallory app -c "SELECT count(*) FROM pg_settings WHERE setting LIKE '%sk-live%' OR setting LIKE '%url-pw%'")"
msg=$(as postgres app -c "SET memori.embedding_provider = 'openai'" -c "SET memori.embedding_cache_ttl = 0" -c "SELECT memori_embed('x')" || true)
check_true "an error about the endpoint shows neither its credentials nor its query string" \
  bash -c '[[ "$1" == *"08001"* || "$1" == *"ERROR"* ]] && [[ "$1" != *url-pw-42* && "$1" != *tok-77* && "$1" != *sk-live* ]]' _ "$msg"
q $C app "ALTER SYSTEM RESET memori.embedding_api_key" >/dev/null
q $C app "ALTER SYSTEM RESET memori.embedding_url" >/dev/null
q $C app "SELECT pg_reload_conf()" >/dev/null

# URLs holding credentials or a query string are refused where every role reads them (G7).
for stmt in "ALTER DATABASE app SET memori.llm_url = 'https://gw.example/v1?api-key=SECRET'" \
            "ALTER ROLE sec_app SET memori.embedding_url = 'https://user:pw@gw.example/v1'"; do
  check "a URL with secrets cannot be set where every role reads it: ${stmt:0:45}..." "22023" "$(sqlstate postgres app "$stmt")"
done
check "a plain URL still can be, per database" "ok" "$(sqlstate postgres app "ALTER DATABASE app SET memori.llm_url = 'http://127.0.0.1:9/v1'")"
q $C app "ALTER DATABASE app RESET memori.llm_url" >/dev/null

# A tenant chooses neither a call's size nor its retries and timeouts (G8).
check "token_budget over memori.max_token_budget is refused (54000)" "54000" \
  "$(sqlstate sec_alice app "SELECT memori_context('orders', token_budget => 2000000000)")"
for s in "memori.llm_timeout_ms = 600000" "memori.llm_max_retries = 10" "memori.max_token_budget = 1000000"; do
  check "a tenant cannot SET $s" "42501" "$(sqlstate sec_alice app "SET $s")"
done

# The embedding cache's advisory locks (pg_locks is readable by every role) do not tell which
# text someone is embedding: a guess of the text and the user does not give the key.
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U sec_alice -d app -X -q \
  -c "BEGIN; SET LOCAL memori.embedding_cache_ttl = 3600; SELECT memori_store('my card PIN is 7305', 'rule'); SELECT pg_sleep(4); COMMIT;" >/dev/null 2>&1 &
held() { [ "$(as sec_mallory app -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1835363695")" != 0 ]; }
check_true "a cache write holds its advisory lock while the store's transaction runs" wait_until 5 held
check "pg_locks does not confirm a guessed text" "0" \
  "$(as sec_mallory app -c "SELECT count(*) FROM pg_locks l, (VALUES ('sec_alice/'), ('')) u(p)
                            WHERE l.locktype = 'advisory' AND l.classid = 1835363695
                              AND l.objid::int8 IN ((pg_catalog.hashtext(u.p || encode(sha256(convert_to('my card PIN is 7305', 'UTF8')), 'hex'))::int8 & 4294967295),
                                                    (pg_catalog.hashtext(encode(sha256(convert_to('my card PIN is 7305', 'UTF8')), 'hex'))::int8 & 4294967295))")"
wait

# --- input bounds ------------------------------------------------------------------------------
big="repeat('lorem ipsum dolor sit amet ', 4000)"   # 108 kB
for call in "memori_store($big)" "memori_search($big)" "memori_embed($big)" "memori_store_batch(ARRAY['ok', $big])" "memori_context($big)"; do
  check "oversized input is refused: ${call:0:22}..." "54000" "$(sqlstate sec_alice app "SELECT $call")"
done

# --- capture -----------------------------------------------------------------------------------
# Overloads for every operator and function shape memori's SQL uses (and near misses), each
# raising "captured". Planted in app (after CREATE EXTENSION), in fresh (before it) and in old
# (before ALTER EXTENSION UPDATE).
plant() {
  as sec_attacker "$1" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DO $plant$
DECLARE
  ops text[][] := ARRAY[
    ['=', 'varchar', 'text'], ['=', 'text', 'varchar'], ['=', 'varchar', 'varchar'],
    ['<>', 'varchar', 'varchar'], ['<>', 'varchar', 'text'], ['=', 'name', 'text'],
    ['-', 'integer', 'double precision'], ['+', 'integer', 'double precision'],
    ['*', 'integer', 'double precision'], ['*', 'double precision', 'real'],
    ['-', 'double precision', 'real'], ['>=', 'real', 'integer'], ['<=', 'real', 'integer'],
    ['>=', 'double precision', 'real'], ['&&', 'text[]', 'text[]'], ['@>', 'text[]', 'text[]'],
    ['||', 'text[]', 'text[]'], ['=', 'bigint', 'integer'], ['>=', 'integer', 'bigint'],
    ['=', 'uuid', 'text'], ['=', 'oid', 'oid'], ['=', 'text', 'text'], ['||', 'text', 'text'],
    ['=', 'text[]', 'text[]'], ['=', 'jsonb', 'jsonb'], ['<=', 'timestamptz', 'timestamptz']];
  fns text[] := ARRAY['unnest(text[])', 'unnest(bytea[], text[])', 'array_position(text[], text)',
    'power(numeric, double precision)', 'power(double precision, double precision)',
    'quote_ident(name)', 'quote_ident(text)', 'exp(double precision)', 'ln(double precision)',
    'date_part(text, timestamp with time zone)', 'hashtextextended(text, bigint)',
    'hashtext(text)', 'now()', 'btrim(varchar)', 'btrim(text)', 'jsonb_typeof(jsonb)',
    'encode(bytea, text)', 'array_remove(text[], text)', 'make_interval(integer)'];
  i int;
  f text;
BEGIN
  FOR i IN 1 .. array_length(ops, 1) LOOP
    f := format('public.captured_%s', i);
    EXECUTE format('CREATE FUNCTION %s(%s, %s) RETURNS boolean LANGUAGE plpgsql AS %L',
                   f, ops[i][2], ops[i][3],
                   format('BEGIN RAISE EXCEPTION ''captured: operator %s(%s, %s) ran as %%'', current_user; END', ops[i][1], ops[i][2], ops[i][3]));
    EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %s)', ops[i][1], ops[i][2], ops[i][3], f);
  END LOOP;
  FOREACH f IN ARRAY fns LOOP
    EXECUTE format('CREATE FUNCTION public.%s RETURNS %s LANGUAGE plpgsql AS %L', f,
                   CASE WHEN f LIKE 'unnest%' THEN 'SETOF text' WHEN f LIKE 'now%' THEN 'timestamptz'
                        WHEN f LIKE 'make_interval%' THEN 'interval' ELSE 'text' END,
                   format('BEGIN RAISE EXCEPTION ''captured: function %s ran as %%'', current_user; END', f));
  END LOOP;
END
$plant$;
SQL
}
plant app
conv=$(as sec_app app -c "BEGIN; SELECT set_config('memori.user_id', 'customer-1', true); SELECT memori_conversation_create('chat'); COMMIT;" | grep -E '^[0-9a-f-]{36}$')
calls=("memori_store('User prefers JOINs over subqueries', 'rule', tags => ARRAY['sql'], entities => ARRAY['joins'])"
       "memori_store('User prefers JOINs over subqueries!', 'rule', tags => ARRAY['style'])"
       "memori_store_batch(ARRAY['the orders table is partitioned', 'invoices live in billing'], 'short_term')"
       "memori_relate('orders.customer_id', 'references', 'customers.id')"
       "count(*) FROM memori_search('How should SQL be written?', memory_types => ARRAY['rule'], tags => ARRAY['sql', 'style'])"
       "memori_context('orders')"
       "count(*) FROM memori_search('How should SQL be written?', as_of => '2100-01-01')"
       "count(*) FROM memori_entity('customers.id')"
       "memori_update((SELECT memory_id FROM memori_memories ORDER BY created_at LIMIT 1), content => 'User prefers CTEs', memory_type => 'short_term', tags => ARRAY['x'])"
       "memori_forget((SELECT memory_id FROM memori_memories ORDER BY created_at DESC LIMIT 1))")
for role in sec_alice sec_app postgres; do
  for call in "${calls[@]}"; do
    out=$(as "$role" app -c "BEGIN" -c "SELECT set_config('memori.user_id', CASE WHEN current_user::text OPERATOR(pg_catalog.=) 'sec_app'::text THEN 'customer-1' ELSE '' END, true)" -c "SELECT $call" -c "COMMIT")
    if grep -q "captured\|ERROR" <<< "$out"; then fail "$role: $call: $(grep -m1 'ERROR' <<< "$out")"; else ok "$role: ${call:0:50}... runs no planted code"; fi
  done
done
out=$(as postgres app -c "SELECT * FROM memori_maintain()")
if grep -q "captured\|ERROR" <<< "$out"; then fail "memori_maintain(): $out"; else ok "memori_maintain() runs no planted code"; fi
since=$(wc -l < "$LOG")
passes_after() { tail -n +"$since" "$LOG" | grep -q 'memori: maintenance database=app status=ok'; }
check_true "the maintenance worker's pass runs no planted code" wait_until 5 passes_after
check "no planted code ran anywhere (server log)" "0" "$(grep -c 'captured:' "$LOG" || true)"

# Planted before CREATE EXTENSION and before ALTER EXTENSION UPDATE: the checks memori's
# scripts create do not bind to the planted overloads.
q $C postgres "CREATE DATABASE fresh"
q $C fresh "CREATE EXTENSION vector; GRANT CREATE ON SCHEMA public TO sec_attacker"
plant fresh
q $C fresh "CREATE EXTENSION memori" >/dev/null
check "CREATE EXTENSION after planting: stores and searches run no planted code" "1" \
  "$(q $C fresh "SELECT memori_store('a fact', 'rule', tags => ARRAY['t'], user_id => 'u1') IS NOT NULL;
                 SELECT count(*) FROM memori_search('fact', user_id => 'u1')" 2>&1 | tail -n1)"
q $C postgres "CREATE DATABASE old"
q $C old "CREATE EXTENSION vector; CREATE EXTENSION memori VERSION '0.1.0'; GRANT CREATE ON SCHEMA public TO sec_attacker"
plant old
q $C old "ALTER EXTENSION memori UPDATE" >/dev/null
check "ALTER EXTENSION UPDATE after planting: stores and searches run no planted code" "1" \
  "$(q $C old "SELECT memori_store('a fact', 'rule', tags => ARRAY['t'], user_id => 'u1') IS NOT NULL;
               SELECT count(*) FROM memori_search('fact', user_id => 'u1')" 2>&1 | tail -n1)"
# A database not yet updated (0.1.0, the library of this version): tables its schema lacks,
# planted in public by a tenant with a trigger, are never taken for memori's (review R2).
q $C postgres "CREATE DATABASE old01"
q $C old01 "CREATE EXTENSION vector; CREATE EXTENSION memori VERSION '0.1.0'; GRANT CREATE ON SCHEMA public TO sec_attacker; GRANT memori_user TO sec_attacker" >/dev/null
as sec_attacker old01 -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE FUNCTION public.trap() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  RAISE WARNING 'captured: a planted trigger ran as %', current_user;
  BEGIN EXECUTE 'ALTER ROLE sec_attacker SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
  RETURN NEW;
END $f$;
CREATE TABLE public.memori_store_locks (user_id text, memory_type text, PRIMARY KEY (user_id, memory_type));
CREATE TRIGGER trap BEFORE INSERT OR UPDATE ON public.memori_store_locks FOR EACH ROW EXECUTE FUNCTION public.trap();
CREATE TABLE public.memori_roles (role_name name PRIMARY KEY, kind text, granted_at timestamptz, namespace text);
INSERT INTO public.memori_roles VALUES ('sec_attacker', 'app', now(), '');
SQL
as sec_attacker old01 -c "SELECT memori_store('stored before the update', 'rule') IS NOT NULL" >/dev/null
as sec_attacker old01 -c "BEGIN" -c "SET LOCAL memori.user_id = 'victim'" -c "SELECT memori_store('as someone else', 'rule')" -c "COMMIT" >/dev/null
check "planted tables in a database not yet updated: no trigger ran, no role gained anything" "false 0 1" \
  "$(q $C old01 "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = 'sec_attacker') || ' ' ||
                        (SELECT count(*) FROM memori_memories WHERE user_id = 'victim') || ' ' ||
                        (SELECT count(*) FROM memori_memories WHERE user_id = 'sec_attacker')")"
check "no planted code ran anywhere (server log, at the end)" "0" "$(grep -c 'captured:' "$LOG" || true)"

finish
