# Shared by the system tests (tests/system/*.sh): throw-away PostgreSQL clusters on loopback
# sockets, psql helpers, and ok/fail bookkeeping. Sourced, not run.
#
# Each test script starts the clusters it needs with `cluster_init NAME PORT [conf lines...]`,
# which preloads memori; `cleanup` (an EXIT trap) stops them all and removes their data.

PG_MAJOR=${PG_MAJOR:-15}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
ROOT=${MEMORI_SYSTEM_DIR:-/var/lib/memori/system}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PASSED=0
FAILED=0
CLUSTERS=()

as_pg() { if [ "$(id -u)" = 0 ]; then sudo -u postgres -H "$@"; else "$@"; fi; }

# cluster_init NAME PORT [extra postgresql.conf lines...]: a new, started, preloaded cluster.
cluster_init() {
  local name=$1 port=$2; shift 2
  local dir=$ROOT/$name
  mkdir -p "$ROOT" && chown postgres:postgres "$ROOT"
  if [ -f "$dir/data/postmaster.pid" ]; then as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir" && mkdir -p "$dir" && chown postgres:postgres "$dir"
  as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  {
    echo "listen_addresses = ''"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "shared_preload_libraries = 'memori'"
    echo "fsync = off"
    echo "log_line_prefix = '%m [%p] %b '"
    for line in "$@"; do echo "$line"; done
  } >> "$dir/data/postgresql.conf"
  CLUSTERS+=("$dir/data")
  cluster_start "$name"
}

cluster_start() { as_pg "$BIN/pg_ctl" -D "$ROOT/$1/data" -l "$ROOT/$1/server.log" -w start >/dev/null; }
cluster_stop() { as_pg "$BIN/pg_ctl" -D "$ROOT/$1/data" -m "${2:-fast}" -w stop >/dev/null; }
sock() { echo "$ROOT/$1"; }
port() { awk -F' = ' '$1 == "port" {p = $2} END {print p}' "$ROOT/$1/data/postgresql.conf"; }
log_of() { echo "$ROOT/$1/server.log"; }

# q CLUSTER DB SQL: one value (tuples only, unaligned); errors stop nothing, they print.
q() { "$BIN/psql" -h "$(sock "$1")" -p "$(port "$1")" -U postgres -d "$2" -X -qAt -v ON_ERROR_STOP=1 -c "$3"; }
# qf CLUSTER DB [psql args...]: psql with ON_ERROR_STOP.
qf() { local c=$1 d=$2; shift 2; "$BIN/psql" -h "$(sock "$c")" -p "$(port "$c")" -U postgres -d "$d" -X -qAt -v ON_ERROR_STOP=1 "$@"; }

# fingerprint CLUSTER DB: every column of every memory and conversation, in id order, as counts
# and hashes (embeddings, timestamps, tags, metadata included).
fingerprint() {
  q "$1" "$2" "SELECT (SELECT count(*) FROM memori_memories) || ' memories ' ||
                      (SELECT md5(string_agg(m::text, '|' ORDER BY id)) FROM memori_memories m) || ' ' ||
                      (SELECT count(*) FROM memori_conversations) || ' conversations ' ||
                      (SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM memori_conversations c)"
}

ok() { PASSED=$((PASSED + 1)); echo "ok - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAILED - $*"; }
# check DESCRIPTION EXPECTED ACTUAL
check() { if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: expected [$2], got [$3]"; fi; }
# check_true DESCRIPTION COMMAND...: the command's success.
check_true() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }

# wait_until SECONDS COMMAND...: polls every 0.1 s; fails (returns 1) at the deadline.
wait_until() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.1
  done
}

# ms: a monotonic clock in milliseconds.
ms() { echo $(($(date +%s%N) / 1000000)); }

cleanup() {
  local d
  for d in "${CLUSTERS[@]}"; do
    as_pg "$BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  jobs -p | xargs -r kill 2>/dev/null || true
  if [ "$FAILED" = 0 ] && [ -z "${MEMORI_KEEP_CLUSTERS:-}" ]; then
    for d in "${CLUSTERS[@]}"; do rm -rf "$(dirname "$d")"; done
  fi
}

# finish: the closing line that counts, and the exit status.
finish() {
  echo "$(basename "$0" .sh): $PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ]
}
