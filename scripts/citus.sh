#!/usr/bin/env bash
# A local Citus cluster for memori's scale-out work: builds and installs Citus 13.2.2 from the
# vendored source (Citus is not packaged for Debian 12), then starts a coordinator and two
# workers on loopback, each preloading citus and memori, with a database `memori` in which both
# extensions exist and the workers are registered. Idempotent: a second run skips what is done.
#
#   scripts/citus.sh build | build-if-available | start | stop | status | psql [NODE] [psql args...]
#
# NODE is coordinator (default), worker1 or worker2. CITUS_TARBALL names the source tarball
# (default: the shared vendor copy next to this checkout, ../shared/vendor/citus/).
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$BIN/pg_config
HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${MEMORI_CITUS_DIR:-/var/lib/memori/citus}
CITUS_VERSION=13.2.2
CITUS_SHA256=318b0ff649a85227e45e84faa99078b9dbe9b354ab1092dc0e07de92d2b9028e
NODES=(coordinator worker1 worker2)
declare -A PORTS=([coordinator]=5601 [worker1]=5602 [worker2]=5603)
as_pg() { if [ "$(id -u)" = 0 ]; then sudo -u postgres -H "$@"; else "$@"; fi; }

tarball() {
  local t
  for t in "${CITUS_TARBALL:-}" "$HERE/../shared/vendor/citus/citus-$CITUS_VERSION.tar.gz"; do
    [ -n "$t" ] && [ -f "$t" ] && { echo "$t"; return; }
  done
  return 1
}

installed() {
  [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] &&
    grep -q "^default_version = '13.2-1'" "$("$PG_CONFIG" --sharedir)/extension/citus.control" 2>/dev/null
}

build() {
  if installed; then echo "==> citus $CITUS_VERSION already installed"; return; fi
  if ! tarball >/dev/null; then
    echo "citus: no source tarball citus-$CITUS_VERSION.tar.gz (set CITUS_TARBALL)" >&2
    # `make test` goes on without Citus on a machine without its source; the Citus system
    # test then says it was skipped. `make citus` stops here.
    [ "${1:-}" = if-available ] && return 0
    exit 1
  fi
  local missing=() p
  for p in libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Citus's build dependencies: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  local src; src=$(tarball)
  echo "$CITUS_SHA256  $src" | sha256sum -c --quiet - || { echo "citus: $src does not match its SHA-256" >&2; exit 1; }
  local work=/var/lib/memori/citus-src
  rm -rf "$work" && mkdir -p "$work"
  tar xzf "$src" -C "$work"
  echo "==> building Citus $CITUS_VERSION (a few minutes)"
  (cd "$work/citus-$CITUS_VERSION" && ./configure PG_CONFIG="$PG_CONFIG" >"$work/configure.log" 2>&1 &&
     make -j"$(nproc)" >"$work/make.log" 2>&1 && make install >"$work/install.log" 2>&1) ||
    { echo "citus: the build failed; see $work/*.log" >&2; exit 1; }
}

data() { echo "$ROOT/$1/data"; }
port() { echo "${PORTS[$1]}"; }
q() { local n=$1; shift; "$BIN/psql" -h "$ROOT" -p "$(port "$n")" -U postgres -X -qAt -v ON_ERROR_STOP=1 "$@"; }

start() {
  installed || { echo "citus: not installed; run scripts/citus.sh build (make citus)" >&2; exit 1; }
  mkdir -p "$ROOT" && chown postgres:postgres "$ROOT"
  local n so; so=$("$PG_CONFIG" --pkglibdir)/memori.so
  for n in "${NODES[@]}"; do
    if [ ! -f "$(data "$n")/PG_VERSION" ]; then
      mkdir -p "$ROOT/$n" && chown postgres:postgres "$ROOT/$n"
      as_pg "$BIN/initdb" -D "$(data "$n")" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >> "$(data "$n")/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $(port "$n")
unix_socket_directories = '$ROOT'
shared_preload_libraries = 'citus,memori'
max_connections = 200
CONF
    fi
    # A preloaded library is the one the postmaster loaded: restart after `make install`.
    if [ -f "$(data "$n")/postmaster.pid" ] && [ "$so" -nt "$(data "$n")/postmaster.pid" ]; then
      as_pg "$BIN/pg_ctl" -D "$(data "$n")" -m fast -w stop >/dev/null
    fi
    if ! as_pg "$BIN/pg_ctl" -D "$(data "$n")" status >/dev/null 2>&1; then
      echo "==> starting $n on 127.0.0.1:$(port "$n")"
      as_pg "$BIN/pg_ctl" -D "$(data "$n")" -l "$ROOT/$n/server.log" -w start >/dev/null
    fi
    if [ "$(q "$n" -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'memori'")" = 0 ]; then
      q "$n" -d postgres -c "CREATE DATABASE memori"
    fi
    # Each node has both extensions before the workers are registered (Citus then refuses DDL
    # on the workers), so this runs once per node.
    if [ "$(q "$n" -d memori -c "SELECT count(*) FROM pg_extension WHERE extname IN ('citus', 'memori')")" != 2 ]; then
      q "$n" -d memori -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS citus" \
        -c "CREATE EXTENSION IF NOT EXISTS memori CASCADE"
    fi
  done
  q coordinator -d memori -c "SELECT citus_set_coordinator_host('127.0.0.1', $(port coordinator))" >/dev/null
  for n in worker1 worker2; do
    if [ "$(q coordinator -d memori -c "SELECT count(*) FROM pg_dist_node WHERE nodeport = $(port "$n")")" = 0 ]; then
      q coordinator -d memori -c "SELECT citus_add_node('127.0.0.1', $(port "$n"))" >/dev/null
    fi
  done
  status
}

stop() {
  local n
  for n in "${NODES[@]}"; do
    [ -f "$(data "$n")/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$(data "$n")" -m fast -w stop >/dev/null 2>&1 || true
  done
}

status() {
  q coordinator -d memori -c "SELECT 'citus ' || (SELECT extversion FROM pg_extension WHERE extname = 'citus')
                                    || ', memori ' || (SELECT extversion FROM pg_extension WHERE extname = 'memori')
                                    || ', workers: ' || string_agg(nodename || ':' || nodeport, ' ' ORDER BY nodeport)
                               FROM pg_dist_node WHERE noderole = 'primary' AND groupid <> 0"
}

case "${1:-start}" in
  build) build ;;
  build-if-available) build if-available ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  psql) shift; node=coordinator
        if [ $# -gt 0 ] && [ -n "${PORTS[$1]:-}" ]; then node=$1; shift; fi
        exec "$BIN/psql" -h "$ROOT" -p "$(port "$node")" -U postgres -d memori "$@" ;;
  *) echo "usage: $0 build|start|stop|status|psql [NODE] [args]" >&2; exit 2 ;;
esac
