#!/usr/bin/env bash
# Name capture, generated from memori's own SQL (review G1): tests/support/sql_names.py collects
# every type, function, operator and relation name that memori's SQL uses (the SQL in src/'s
# string literals, sql/schema.sql, sql/finalize.sql, the upgrade scripts, and, once installed,
# its functions' bodies, policies, CHECK constraints, index expressions and declared types), so
# a new statement is covered without editing this test. For every name it plants a trap that
# warns "captured: ..." and makes the attacker superuser if it ever runs as one:
# - in pg_temp, per session (temporary objects exist only in the session that made them): a
#   domain named like each type (checked by a trap) and a view named like each relation;
# - in public (CREATE granted to the attackers, as PostgreSQL 13/14 did for PUBLIC): overloads
#   of every function name (the catalog's signatures, one argument at a time narrowed or
#   widened, concrete versions of polymorphic ones, aggregates too), operators for every pair
#   of the collected types (exact copies of pg_catalog's included), domains for free names.
# Then, as a role with no memori grant, a tenant and an app (each in its own session with its
# own pg_temp traps), it calls every function memori_api() returns (defaults left out, then
# every argument given), reads each of memori's tables and calls memori_acting_user(); as the
# superuser it calls every memori function and procedure, runs memori_maintain(), waits for a
# worker pass, and runs CREATE EXTENSION and ALTER EXTENSION UPDATE (from 0.1.0) after planting,
# each followed by every function of the version just made. It passes when no trap ran (psql
# output and server log) and pg_roles/pg_auth_members are the same before and after each phase.
# A positive control (G1's statement as it was, owner-run with the caller's search_path) must
# be caught, so the traps are known to work. Each phase's evidence, with the server log's
# CONTEXT lines (the statement that resolved the planted name), is kept in work/captured-*.txt.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
MOCK_PORT=18097
MOCK=
trap '[ -n "$MOCK" ] && kill $MOCK 2>/dev/null; cleanup' EXIT
NAMES="python3 $HERE/tests/support/sql_names.py"

C=capture
cluster_init $C 5497 "memori.maintenance_interval = 1" \
  "memori.llm_provider = 'openai'" "memori.llm_url = 'http://127.0.0.1:$MOCK_PORT/v1'" \
  "memori.llm_model = 'mock-sql'" "memori.llm_api_key = 'sk-capture-test'"
LOG=$(log_of $C)
W=$ROOT/$C/work
mkdir -p "$W" && chmod 755 "$W"
python3 "$HERE/tests/support/mock_chat.py" $MOCK_PORT >/dev/null 2>&1 & MOCK=$!
wait_until 10 bash -c "echo > /dev/tcp/127.0.0.1/$MOCK_PORT" 2>/dev/null || true

as() { local role=$1 db=$2; shift 2; "$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U "$role" -d "$db" -X -qAt "$@" 2>&1; }
# The cluster's roles and memberships (everything a trap could change), read in postgres where
# nothing is planted, and qualified all the same.
snapshot() {
  q $C postgres "SELECT pg_catalog.string_agg(pg_catalog.concat_ws(':', r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb,
                        r.rolbypassrls, r.rolreplication, r.rolcanlogin), ' ' ORDER BY r.rolname) FROM pg_catalog.pg_roles r;
                 SELECT pg_catalog.string_agg(pg_catalog.concat_ws(':', m.roleid, m.member, m.grantor, m.admin_option), ' '
                        ORDER BY m.roleid, m.member) FROM pg_catalog.pg_auth_members m"
}
ATTACKERS="cap_nogrant cap_tenant cap_app"
# Puts the attackers back as they were made, so a later phase is judged on its own.
restore() {
  local r
  for r in $ATTACKERS; do q $C postgres "ALTER ROLE $r NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS NOREPLICATION LOGIN" >/dev/null; done
}
# captured_in PHASE OUT_FILE LOG_FROM: the traps that ran (psql output and the server log since
# line LOG_FROM, with the log's context lines: the statement that resolved the planted name).
captured_in() {
  local phase=$1 out=$2 from=$3
  {
    grep -h 'WARNING:  captured:' "$out" 2>/dev/null | sed 's/^.*captured:/captured:/' | sort | uniq -c || true
    tail -n +"$from" "$LOG" | awk '/WARNING:  captured:/ {keep = 1; print; next}
                                   keep && (/^\t/ || / (CONTEXT|STATEMENT|DETAIL|HINT|QUERY): /) {print; next}
                                   {keep = 0}'
  } > "$W/captured-$phase.txt"
  grep -q 'captured:' "$W/captured-$phase.txt"
}
# judge PHASE DESCRIPTION OUT_FILE LOG_FROM ROLES_BEFORE: one line for the traps, one for the roles.
judge() {
  local phase=$1 what=$2 out=$3 from=$4 before=$5 after
  after=$(snapshot)
  if captured_in "$phase" "$out" "$from"; then
    fail "$what: a planted name was resolved ($(grep -m3 'captured:' "$W/captured-$phase.txt" | sed 's/^ *//' | tr '\n' ';' | cut -c1-400)) [see $W/captured-$phase.txt]"
  else
    ok "$what: no trap ran"
  fi
  if [ "$before" = "$after" ]; then
    ok "$what: pg_roles and pg_auth_members unchanged"
  else
    fail "$what: roles changed: $(diff <(tr ' ' '\n' <<<"$before") <(tr ' ' '\n' <<<"$after") | grep '^[<>]' | tr '\n' ' ')"
    restore
  fi
}
logline() { echo $(($(wc -l < "$LOG") + 1)); }
# planted_ok WHAT OUT MIN: the "planted N of M" line shows at least MIN planted, and 90% of them.
planted_ok() {
  local what=$1 out=$2 min=$3 line n m
  line=$(grep -m1 '^planted [0-9]* of [0-9]*$' "$out" || true)
  n=$(awk '{print $2}' <<<"$line"); m=$(awk '{print $4}' <<<"$line")
  echo "# $what: ${line:-nothing planted}"
  check_true "$what: at least $min traps planted, and 90% of those tried" \
    test -n "$line" -a "${n:-0}" -ge "$min" -a "$((${n:-0} * 10))" -ge "$((${m:-1} * 9))"
}

# --- set-up: memori, the three roles, a memory and a conversation for each user --------------
q $C postgres "CREATE DATABASE app"
qf $C app >/dev/null <<'SQL'
CREATE EXTENSION memori CASCADE;
CREATE ROLE cap_nogrant LOGIN;                   -- no memori grant at all: CONNECT and TEMP only
CREATE ROLE cap_tenant LOGIN;
SELECT memori_grant('cap_tenant', 'user');
CREATE ROLE cap_app LOGIN;
SELECT memori_grant('cap_app', 'app');
CREATE ROLE cap_canary LOGIN;                    -- the positive control's
GRANT CREATE ON SCHEMA public TO cap_nogrant, cap_tenant, cap_app;   -- PostgreSQL 13/14's default
INSERT INTO memori_memories (user_id, content, memory_type, expires_at)
  VALUES ('someone', 'an expired note', 'short_term', now() - interval '1 minute');   -- for maintenance
SQL
# A memory and a conversation of the user each role acts for, made by that role (before any
# trap exists): their ids are the sample uuids of its calls. The memory shares the sample
# question's terms ('How is SQL written?') and tag ('sql'), so that a search's text ranking
# (term matches, document frequencies, scores) runs over a row and meets the traps.
own() { # own ROLE [END_USER]: "memory_id conversation_id"
  local set=""
  [ -n "${2:-}" ] && set="SET LOCAL memori.user_id = '$2';"
  as "$1" app -v ON_ERROR_STOP=1 -c "BEGIN; $set SELECT memori_store('$1 prefers CTEs in the SQL it has written', 'rule', tags => ARRAY['sql']) || ' ' || memori_conversation_create('$1'); COMMIT;" | grep -E '^[0-9a-f-]{36} [0-9a-f-]{36}$'
}
read -r MEM_TENANT CONV_TENANT <<<"$(own cap_tenant)"
read -r MEM_CUSTOMER CONV_CUSTOMER <<<"$(own cap_app customer-1)"
read -r MEM_DBA CONV_DBA <<<"$(own postgres dba-user)"
check_true "the tenant, the app (for customer-1) and the superuser (for dba-user) each have a memory and a conversation" \
  test -n "$MEM_TENANT" -a -n "$CONV_TENANT" -a -n "$MEM_CUSTOMER" -a -n "$CONV_CUSTOMER" -a -n "$MEM_DBA" -a -n "$CONV_DBA"

# --- the names ----------------------------------------------------------------------------------
catalog() { $NAMES catalog-sql | qf $C "$1" -f - > "$W/catalog-$1.json"; }
catalog app
names_line=$($NAMES names "$HERE" "$W/catalog-app.json" "$W/names.json")
echo "# $names_line"
count_of() { python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))[sys.argv[2]]))" "$W/names.json" "$1"; }
check_true "the collector found at least 5 types, 40 functions, 5 operators and 5 relations ($names_line)" \
  test "$(count_of types)" -ge 5 -a "$(count_of functions)" -ge 40 -a "$(count_of operators)" -ge 5 -a "$(count_of relations)" -ge 5
check_true "the collected types include text and oid (the names G1's statement resolved)" \
  python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['types']; sys.exit(not {'text','oid'} <= set(t))" "$W/names.json"

check_true "memori_api() names at least 10 functions to call" \
  python3 -c "import json,sys; sys.exit(len(json.load(open(sys.argv[1]))['api']) < 10)" "$W/catalog-app.json"

# --- public traps in app ---------------------------------------------------------------------
$NAMES plant public "$W/names.json" "$W/catalog-app.json" cap_nogrant > "$W/plant-public-app.sql"
as cap_nogrant app -f "$W/plant-public-app.sql" > "$W/plant-public-app.out"
planted_ok "public traps in app" "$W/plant-public-app.out" 1000

# --- a positive control: the traps do catch an owner-run statement without a pinned path -------
# G1's statement as it was (granted_kind() in src/tenancy/mod.rs before the fix), run as the superuser
# with the caller's search_path (a SECURITY DEFINER function without SET search_path), must run
# the pg_temp domains planted for `oid` and `text` and make the caller superuser; otherwise the
# traps prove nothing. Its own role; its log lines are left out of the final count.
CANARY_FROM=$(logline)
q $C app "CREATE FUNCTION public.cap_canary() RETURNS pg_catalog.text LANGUAGE plpgsql SECURITY DEFINER AS \$c\$
          DECLARE k pg_catalog.text;
          BEGIN
            EXECUTE 'SELECT r.kind FROM public.memori_roles r
                       JOIN pg_catalog.pg_roles g ON g.rolname OPERATOR(pg_catalog.=) r.role_name
                      WHERE pg_catalog.pg_has_role(\$1::oid, g.oid, ''USAGE''::text)
                      ORDER BY r.kind OPERATOR(pg_catalog.=) ''app''::text DESC
                      LIMIT 1' INTO k USING (SELECT u.oid FROM pg_catalog.pg_roles u WHERE u.rolname OPERATOR(pg_catalog.=) session_user);
            RETURN k;
          END \$c\$;
          GRANT EXECUTE ON FUNCTION public.cap_canary() TO cap_canary" >/dev/null
{ $NAMES plant temp "$W/names.json" "$W/catalog-app.json" cap_canary; echo "SELECT public.cap_canary();"; } > "$W/canary.sql"
as cap_canary app -f "$W/canary.sql" > "$W/canary.out" || true
check "positive control: G1's statement run as the owner with the caller's path runs a pg_temp trap, which escalates" \
  "captured: domain pg_temp.oid or text ran as postgres|t" \
  "$(grep -m1 -oE 'captured: domain pg_temp.(oid|text) ran as [a-z_]*' "$W/canary.out" | sed -E 's/pg_temp.(oid|text)/pg_temp.oid or text/' || true)|$(q $C postgres "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'cap_canary'")"
q $C app "DROP FUNCTION public.cap_canary()"
q $C postgres "ALTER ROLE cap_canary NOSUPERUSER"
CANARY_TO=$(logline)

# --- three roles, each in a session of its own with its own pg_temp traps ----------------------
session() { # session ROLE MEMORY CONVERSATION [wrap]
  local role=$1 script=$W/session-$1.sql calls=$W/calls-$1.sql
  $NAMES calls "$W/catalog-app.json" --memory "$2" --conversation "$3" > "$calls"
  if [ "${4:-}" = app ]; then  # an app names its end user in each transaction
    sed -i "s/^/BEGIN; SET LOCAL memori.user_id = 'customer-1'; /; s/\$/ COMMIT;/" "$calls"
  fi
  { $NAMES plant temp "$W/names.json" "$W/catalog-app.json" "$role"; cat "$calls"; } > "$script"
  local before from
  before=$(snapshot); from=$(logline)
  as "$role" app -f "$script" > "$W/session-$role.out" || true
  echo "# $role: $(wc -l < "$calls") statements, $(grep -c 'ERROR:' "$W/session-$role.out" || true) errors"
  planted_ok "$role: pg_temp traps" "$W/session-$role.out" 20
  judge "$role" "$role (calls every memori_api() function, reads each table, memori_acting_user())" "$W/session-$role.out" "$from" "$before"
}
session cap_nogrant "$MEM_TENANT" "$CONV_TENANT"
session cap_tenant "$MEM_TENANT" "$CONV_TENANT"
session cap_app "$MEM_CUSTOMER" "$CONV_CUSTOMER" app

# --- the superuser: every memori function (the DBA's too), memori_maintain(), a worker pass ----
# The DBA runs memori's functions in a session where the attackers' public overloads are
# visible too (memori_stats() for monitoring, memori_export(), memori_erase_user(), ...).
$NAMES calls "$W/catalog-app.json" --memory "$MEM_DBA" --conversation "$CONV_DBA" --every-function > "$W/calls-postgres.sql"
before=$(snapshot); from=$(logline)
{ echo "SET memori.user_id = 'dba-user';"; cat "$W/calls-postgres.sql"; } | as postgres app -f - > "$W/session-postgres.out" || true
echo "# postgres: $(wc -l < "$W/calls-postgres.sql") statements, $(grep -c 'ERROR:' "$W/session-postgres.out" || true) errors"
judge postgres "superuser (calls every memori function and procedure)" "$W/session-postgres.out" "$from" "$before"

before=$(snapshot); from=$(logline)
as postgres app -c "SELECT pg_catalog.count(*) FROM public.memori_maintain()" > "$W/maintain.out" || true
judge maintain "superuser: memori_maintain()" "$W/maintain.out" "$from" "$before"

before=$(snapshot); from=$(logline)
passes_after() { tail -n +"$from" "$LOG" | grep -q 'memori: maintenance database=app status='; }
check_true "the maintenance worker passed over app" wait_until 10 passes_after
tail -n +"$from" "$LOG" | grep 'memori: maintenance database=app' > "$W/worker.out" || true
judge worker "the maintenance worker's pass" "$W/worker.out" "$from" "$before"
check_true "the worker's pass succeeded" grep -q 'database=app status=ok' "$W/worker.out"

# --- CREATE EXTENSION and ALTER EXTENSION UPDATE after planting --------------------------------
# memori's own function names are left out here: an overload planted before memori creates the
# function would only make CREATE/ALTER EXTENSION fail (denial, not capture).
fresh_db() { # fresh_db DB [memori version]: vector (and memori VERSION), CREATE for the attacker, traps.
  q $C postgres "CREATE DATABASE $1"
  q $C "$1" "CREATE EXTENSION vector" >/dev/null
  if [ -n "${2:-}" ]; then q $C "$1" "CREATE EXTENSION memori VERSION '$2'" >/dev/null; fi
  q $C "$1" "GRANT CREATE ON SCHEMA public TO cap_nogrant"
  catalog "$1"
  $NAMES plant public "$W/names.json" "$W/catalog-$1.json" cap_nogrant --without-memori > "$W/plant-public-$1.sql"
  as cap_nogrant "$1" -f "$W/plant-public-$1.sql" > "$W/plant-public-$1.out"
  planted_ok "public traps in $1" "$W/plant-public-$1.out" 1000
}
# dba_calls DB: as the superuser, every memori function and procedure of the version DB now has
# (what the script just created or replaced), each name qualified.
dba_calls() {
  catalog "$1"
  { echo "SET memori.user_id = 'dba-user';"; $NAMES calls "$W/catalog-$1.json" --every-function; } | as postgres "$1" -f -
}
fresh_db fresh
before=$(snapshot); from=$(logline)
{ as postgres fresh -c "CREATE EXTENSION memori"; dba_calls fresh; } > "$W/create.out" || true
judge create "superuser: CREATE EXTENSION memori (then every memori function)" "$W/create.out" "$from" "$before"
check "CREATE EXTENSION memori after planting: installed" "1" "$(q $C fresh "SELECT pg_catalog.count(*) FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'memori'")"

fresh_db old 0.1.0
before=$(snapshot); from=$(logline)
{ as postgres old -c "ALTER EXTENSION memori UPDATE"; dba_calls old; } > "$W/update.out" || true
judge update "superuser: ALTER EXTENSION memori UPDATE from 0.1.0 (then every memori function)" "$W/update.out" "$from" "$before"
check "ALTER EXTENSION memori UPDATE after planting: at the default version" \
  "$(q $C app "SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'memori'")" \
  "$(q $C old "SELECT extversion FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'memori'")"

check "no trap ran anywhere but in the positive control (server log, at the end)" "0" \
  "$(awk -v a="$CANARY_FROM" -v b="$CANARY_TO" '(NR < a || NR >= b) && /WARNING:  captured:/' "$LOG" | wc -l)"

finish
