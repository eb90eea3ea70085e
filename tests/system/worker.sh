#!/usr/bin/env bash
# The maintenance worker under locks and signals (memori preloaded, passes every second):
# - a pass blocked by a tenant's lock in one database does not stop maintenance in others;
# - lock_timeout and statement_timeout bound a pass (memori.maintenance_lock_timeout, ...);
# - pg_terminate_backend, SIGTERM and DROP DATABASE ... WITH (FORCE) end a blocked pass within
#   a second, and so does a fast shutdown;
# - a reload (SIGHUP) does not start an extra pass; template databases are skipped;
# - large deletes run in bounded batches and skip rows a tenant has locked.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
trap cleanup EXIT

C=worker
cluster_init $C 5486 "memori.maintenance_interval = 1" "memori.maintenance_lock_timeout = 200" \
  "memori.maintenance_batch_size = 50"
LOG=$(log_of $C)
for db in busy other tmpl plain; do q $C postgres "CREATE DATABASE $db"; done
for db in busy other tmpl; do q $C $db "CREATE EXTENSION memori CASCADE"; done
expire() { # expire DB N [SECONDS]: N memories that expire SECONDS from now (default: expired)
  q $C "$1" "INSERT INTO memori_memories (user_id, content, memory_type, expires_at)
             SELECT 'w', 'expired ' || g, 'short_term', now() + make_interval(secs => ${3:--60}) FROM generate_series(1, $2) g"
}
expired_left() { q $C "$1" "SELECT count(*) FROM memori_memories WHERE expires_at <= now()"; }
gone() { [ "$(expired_left "$1")" = 0 ]; }
passes() { grep -c "memori: maintenance database=$1 " "$LOG" || true; }

# Templates are skipped.
q $C postgres "ALTER DATABASE tmpl IS_TEMPLATE true"
expire tmpl 1

# Bounded batches, and rows a tenant holds are skipped rather than waited for: 500 memories
# expire in 3 s, and a tenant holds one of them for 7 s.
expire other 500 3
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d other -X -q -c "
  BEGIN; SELECT 1 FROM memori_memories WHERE content = 'expired 7' FOR UPDATE; SELECT pg_sleep(7); COMMIT;" >/dev/null &
one_left() { [ "$(expired_left other)" = 1 ]; }
check_true "expired rows are deleted while a tenant holds one of them" wait_until 8 one_left
check_true "the pass logged its batches" grep -qE "memori: maintenance database=other status=ok expired=499 .*batches=1[0-9] " "$LOG"
check_true "the held row goes once it is released" wait_until 8 gone other
check "a template database is not visited" "1" "$(expired_left tmpl)"
check "a database without memori is not reported" "0" "$(passes plain)"

# A tenant holds an ACCESS EXCLUSIVE lock in "busy": the pass there stops at lock_timeout, with a
# warning, and "other" is still maintained.
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d busy -X -q -c "
  BEGIN; LOCK TABLE memori_memories IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);" >/dev/null 2>&1 &
locker=$!
timed_out() { grep -q 'memori: maintenance database=busy status=failed .*sqlstate=55P03' "$LOG"; }
check_true "a blocked pass ends at memori.maintenance_lock_timeout with a warning" wait_until 5 timed_out
expire other 3
check_true "another database is maintained meanwhile" wait_until 5 gone other

# With no lock timeout in "busy" (a per-database setting), its pass waits: the others go on,
# and every way of stopping that pass works within a second.
q $C postgres "ALTER DATABASE busy SET memori.maintenance_lock_timeout = 0"
blocked_pid() { q $C postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'memori maintenance' AND datname = 'busy' AND wait_event_type = 'Lock'"; }
has_blocked() { [ -n "$(blocked_pid)" ]; }
check_true "a pass waits on the tenant's lock" wait_until 5 has_blocked
expire other 3
check_true "another database is maintained while one pass waits" wait_until 5 gone other
ended() { ! q $C postgres "SELECT 1 FROM pg_stat_activity WHERE pid = $1" | grep -q 1; }
pid=$(blocked_pid); t0=$(ms)
q $C postgres "SELECT pg_terminate_backend($pid)" >/dev/null
if wait_until 1 ended "$pid"; then ok "pg_terminate_backend ends a waiting pass ($(( $(ms) - t0 )) ms)"; else fail "pg_terminate_backend left the pass waiting"; fi
check_true "the next pass waits again" wait_until 5 has_blocked
pid=$(blocked_pid); t0=$(ms)
kill -TERM "$pid"
if wait_until 1 ended "$pid"; then ok "SIGTERM ends a waiting pass ($(( $(ms) - t0 )) ms)"; else fail "SIGTERM left the pass waiting"; fi
check_true "the next pass waits again" wait_until 5 has_blocked
t0=$(ms)
if q $C postgres "DROP DATABASE busy WITH (FORCE)"; then
  took=$(( $(ms) - t0 ))
  if [ "$took" -lt 1000 ]; then ok "DROP DATABASE ... WITH (FORCE) ends a waiting pass ($took ms)"; else fail "DROP DATABASE took $took ms"; fi
else
  fail "DROP DATABASE ... WITH (FORCE) failed while a pass waited"
  q $C postgres "SELECT pid, backend_type, datname, state, wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity"
  [ -n "${MEMORI_DEBUG:-}" ] && sleep 600
fi
wait "$locker" 2>/dev/null || true
check "the launcher is still there" "1" "$(q $C postgres "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'memori launcher'")"

# A reload does not start a pass: with a long interval, reloads leave the count alone.
q $C postgres "ALTER SYSTEM SET memori.maintenance_interval = 3600" && q $C postgres "SELECT pg_reload_conf()" >/dev/null
sleep 2
n=$(passes other)
for _ in 1 2 3; do q $C postgres "SELECT pg_reload_conf()" >/dev/null; sleep 0.5; done
sleep 1
check "reloads do not start passes" "$n" "$(passes other)"

# A fast shutdown does not wait for a blocked pass.
q $C postgres "ALTER SYSTEM SET memori.maintenance_interval = 1" && q $C postgres "SELECT pg_reload_conf()" >/dev/null
q $C postgres "ALTER DATABASE other SET memori.maintenance_lock_timeout = 0"
"$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d other -X -q -c "
  BEGIN; LOCK TABLE memori_memories IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);" >/dev/null 2>&1 &
waiting_other() { [ -n "$(q $C postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'memori maintenance' AND datname = 'other' AND wait_event_type = 'Lock'")" ]; }
check_true "a pass waits in another database" wait_until 5 waiting_other
t0=$(ms)
cluster_stop $C fast
took=$(( $(ms) - t0 ))
if [ "$took" -lt 2000 ]; then ok "a fast shutdown does not wait for the pass ($took ms)"; else fail "the fast shutdown took $took ms"; fi

finish
