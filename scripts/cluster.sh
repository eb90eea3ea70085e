#!/usr/bin/env bash
# Makes sure a local PostgreSQL cluster for memori runs (used by `make demo` and the SQL tests).
# Idempotent: creates the cluster once, starts it if it is stopped.
#   scripts/cluster.sh start | stop | psql [args...]
set -euo pipefail

# shellcheck source=scripts/pg.sh
. "$(dirname "$0")/pg.sh"
BIN=$PG_BIN
DATA=${MEMORI_PGDATA:-/var/lib/memori/pg$PG_MAJOR}
PORT=${MEMORI_PGPORT:-$PG_PORT}
SOCK=${MEMORI_PGSOCK:-/var/run/memori}
as_pg() { if [ "$(id -u)" = 0 ]; then sudo -u postgres -H "$@"; else "$@"; fi; }

start() {
  mkdir -p "$DATA" "$SOCK"
  chown postgres:postgres "$DATA" "$SOCK" 2>/dev/null || true
  chmod 700 "$DATA"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    echo "==> initdb $DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$SOCK'
CONF
  fi
  # The port asked for (a cluster made earlier with another keeps its data, not its port).
  if [ "$(grep -E '^port = ' "$DATA/postgresql.conf" | tail -n1)" != "port = $PORT" ]; then
    echo "port = $PORT" >> "$DATA/postgresql.conf"
    stop
  fi
  # memori's maintenance worker needs the library preloaded (older clusters lack the line).
  # MEMORI_PRELOAD=0 makes a cluster without it (the SQL tests need one of each).
  if [ "${MEMORI_PRELOAD:-1}" = 1 ] && ! grep -q "^shared_preload_libraries = 'memori'" "$DATA/postgresql.conf"; then
    echo "shared_preload_libraries = 'memori'" >> "$DATA/postgresql.conf"
    stop
  fi
  # A preloaded library is the one the postmaster loaded: restart after `make install`.
  local so; so=$("$BIN/pg_config" --pkglibdir)/memori.so
  if [ -f "$DATA/postmaster.pid" ] && [ -f "$so" ] && [ "$so" -nt "$DATA/postmaster.pid" ]; then
    echo "==> memori.so changed: restarting PostgreSQL"
    stop
  fi
  if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    echo "==> starting PostgreSQL $PG_MAJOR on port $PORT (socket $SOCK)"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
  fi
}

stop() {
  if [ -f "$DATA/PG_VERSION" ]; then as_pg "$BIN/pg_ctl" -D "$DATA" -m fast stop >/dev/null 2>&1 || true; fi
}

restart() { stop; start; }

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  psql) shift; exec "$BIN/psql" -h "$SOCK" -p "$PORT" -U postgres "$@" ;;
  *) echo "usage: $0 start|stop|restart|psql [args]" >&2; exit 2 ;;
esac
