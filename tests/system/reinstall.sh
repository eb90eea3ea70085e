#!/usr/bin/env bash
# Reinstalling memori under load (issue 19: `make test` after `make demo` killed the demo cluster
# with SIGILL: a test build was written over the memori.so its processes had mapped).
# scripts/install.sh, which `make install` uses, puts each file in place by a rename. Here it
# installs two different builds of memori.so in turn, several times, while pgbench clients call
# memori: some on long-lived connections (memori_store and memori_search: the model's code), some
# connecting anew for every call (so backends start, and load memori, all the time).
#   (a) memori preloaded, as in the demo cluster: every backend runs the build the postmaster
#       mapped, a backend started after the installs too (a preloaded library is loaded once, by
#       the postmaster); after a restart a new session maps the installed file.
#   (b) not preloaded: each backend loads memori.so itself: a session opened before the installs
#       keeps the build it mapped and still works; one opened after them maps the installed file.
# Passes when no backend died (no "terminated by signal" in the server log, the same postmaster
# throughout), no pgbench client aborted and no transaction failed, and each session maps the
# file expected (the inode in /proc/PID/maps against `stat -c %i` of the installed memori.so).
#
# It runs on a private copy of the PostgreSQL installation laid out as under / (install.sh's
# DESTROOT), so the system's memori is left alone. The two builds: the one `make install` staged
# (target/install-stage) and the #[pg_test] build `make test-rust` installed into its copy of
# PostgreSQL (built here, into target/reinstall-alt, when that is older than the sources).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

C=reinstall
DURATION=${REINSTALL_SECONDS:-10}
INSTALLS=${REINSTALL_COUNT:-4}
STAGE=$HERE/target/install-stage
PGT=$ROOT/$C-pg
trap 'cleanup; if [ "$FAILED" = 0 ] && [ -z "${MEMORI_KEEP_CLUSTERS:-}" ]; then rm -rf "$PGT"; fi' EXIT

libdir=$("$BIN/pg_config" --pkglibdir)
sharedir=$("$BIN/pg_config" --sharedir)
if [ ! -f "$STAGE$libdir/memori.so" ]; then
  echo "no staged build in $STAGE: run make install first" >&2
  exit 1
fi

# The second build: the #[pg_test] one, as fresh as the sources (make test-rust's, else one
# built here).
fresh() { [ -f "$1" ] && [ -z "$(cd "$HERE" && find src Cargo.toml Cargo.lock -newer "$1" -print -quit)" ]; }
alt=/var/lib/memori/pgrx-pg$PG_MAJOR/lib/postgresql/$PG_MAJOR/lib/memori.so
if ! fresh "$alt"; then
  out=$HERE/target/reinstall-alt
  alt=$out$libdir/memori.so
  if ! fresh "$alt"; then
    echo "building the #[pg_test] build of memori into $out"
    rm -rf "$out"
    (cd "$HERE" && PATH=$HOME/.cargo/bin:$PATH cargo pgrx package --debug --features pg_test \
       --pg-config "$BIN/pg_config" --out-dir "$out" >"$out.log" 2>&1) ||
      { tail -20 "$out.log"; echo "the #[pg_test] build failed" >&2; exit 1; }
  fi
fi

# The private PostgreSQL: the system's files without memori's; the model is the system's.
rm -rf "$PGT" && mkdir -p "$PGT"
tar -C / --exclude='memori*' --exclude='.memori*' -cf - "$(dirname "${libdir#/}")" "${sharedir#/}" | tar -C "$PGT" -xf -
ln -s "$sharedir/extension/memori" "$PGT$sharedir/extension/memori"
BIN=$PGT$BIN
SO=$PGT$libdir/memori.so
# Two stages of memori.so alone: a (make install's build) and b (the #[pg_test] build).
for s in a b; do mkdir -p "$PGT/stage-$s$libdir"; done
cp "$STAGE$libdir/memori.so" "$PGT/stage-a$libdir/"
cp "$alt" "$PGT/stage-b$libdir/"
if cmp -s "$PGT/stage-a$libdir/memori.so" "$PGT/stage-b$libdir/memori.so"; then
  echo "the two builds of memori.so are the same file" >&2
  exit 1
fi
bash "$HERE/scripts/install.sh" "$STAGE" "$PGT" >/dev/null
check "the private PostgreSQL loads extensions from its own directory" "$PGT$libdir" "$("$BIN/pg_config" --pkglibdir)"

cluster_init $C 5498 "max_connections = 40"
q $C postgres "CREATE DATABASE re"
qf $C re >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION memori CASCADE;
SELECT count(*) FROM (SELECT memori_store('seed fact ' || g || ' about table t' || (g % 7), 'long_term')
                        FROM generate_series(1, 20) g) s;
SQL

dir=$ROOT/$C/scripts
mkdir -p "$dir"
cat > "$dir/store.sql" <<'SQL'
\set n random(1, 1000)
SELECT memori_store('fact ' || :n || ' about table t' || (:n % 7), 'short_term');
SQL
cat > "$dir/search.sql" <<'SQL'
\set n random(1, 1000)
SELECT count(*) FROM memori_search('which table holds fact ' || :n, k => 3);
SQL
cat > "$dir/connect.sql" <<'SQL'
\set n random(1, 1000)
SELECT memori_identifiers('SELECT * FROM orders_' || :n || ' JOIN users USING (id)');
SQL
chown -R postgres:postgres "$dir"

# The inode of the memori.so the backend of this session has mapped (memori loaded first).
LOADED="SELECT memori_identifiers('x') IS NOT NULL"
MAPPED="SELECT coalesce(string_agg(DISTINCT (regexp_match(l, '^\S+ \S+ \S+ \S+ (\d+) '))[1], ','), 'none')
          FROM regexp_split_to_table(pg_read_file('/proc/' || pg_backend_pid() || '/maps'), E'\n') l
         WHERE l ~ '/memori\.so'"
new_session_inode() { qf $C re -c "$LOADED" -c "$MAPPED" | tail -1; }
postmaster_pid() { head -1 "$ROOT/$C/data/postmaster.pid"; }
alive() { if kill -0 "$1" 2>/dev/null; then echo alive; else echo gone; fi; }
so_inode() { stat -c %i "$SO"; }
# A backend that died: the postmaster's report of it, and the restart of all the others.
CRASH="terminated by signal|server process \(PID [0-9]+\) exited with exit code|terminating any other active server processes"
no_crash() {
  local n; n=$(grep -cE "$CRASH" "$(log_of $C)" || true)
  check "($1) no backend died" "0" "$n"
  [ "$n" = 0 ] || grep -E "$CRASH" "$(log_of $C)" | head -5
}

# A session kept open across the installs (a coprocess), with memori loaded.
open_old() {
  coproc OLD { "$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U postgres -d re -X -qAt 2>&1; }
  old_ask "$LOADED" >/dev/null
}
old_ask() {
  local line="(the session is gone)"
  if [ -n "${OLD[1]:-}" ] && { echo "$1;" >&"${OLD[1]}"; } 2>/dev/null; then
    read -r -t 30 line <&"${OLD[0]}" || line="(no answer)"
  fi
  echo "$line"
}
close_old() {
  if [ -n "${OLD[1]:-}" ]; then { echo '\q' >&"${OLD[1]}"; } 2>/dev/null || true; fi
  wait "${OLD_PID:-}" 2>/dev/null || true
}

# load PHASE: pgbench (3 clients on their connections, 2 connecting per call) for DURATION
# seconds while INSTALLS installs alternate the two builds; the installed inodes in $installed.
load() {
  local phase=$1 i s out=$ROOT/$C/pgbench-$1
  as_pg "$BIN/pgbench" -h "$(sock $C)" -p "$(port $C)" -U postgres -n -c 3 -j 1 -T "$DURATION" \
    -f "$dir/store.sql@1" -f "$dir/search.sql@2" re >"$out.long" 2>&1 &
  local long=$!
  as_pg "$BIN/pgbench" -h "$(sock $C)" -p "$(port $C)" -U postgres -n -C -c 2 -j 1 -T "$DURATION" \
    -f "$dir/connect.sql" re >"$out.connect" 2>&1 &
  local connect=$!
  installed=""
  local t0; t0=$(ms)
  for ((i = 1; i <= INSTALLS; i++)); do
    # evenly spread over the run
    sleep "$(awk -v t=$((t0 + i * DURATION * 1000 / (INSTALLS + 1) - $(ms))) 'BEGIN {print (t > 0 ? t / 1000 : 0)}')"
    if ((i % 2)); then s=b; else s=a; fi
    bash "$HERE/scripts/install.sh" "$PGT/stage-$s" "$PGT" >/dev/null
    installed="$installed $(so_inode)"
  done
  local rc_long=0 rc_connect=0
  wait "$long" || rc_long=$?
  wait "$connect" || rc_connect=$?
  echo "($phase) installed memori.so $INSTALLS times (inodes$installed) under load:" \
    "$(awk '/^number of transactions actually processed/ {print $NF}' "$out.long") calls on long-lived connections," \
    "$(awk '/^number of transactions actually processed/ {print $NF}' "$out.connect") on new ones"
  check "($phase) the pgbench clients on long-lived connections finished, none aborted" "0" "$rc_long"
  check "($phase) the pgbench clients connecting per call finished, none aborted" "0" "$rc_connect"
  check "($phase) no transaction failed" "0 0" \
    "$(awk '/^number of failed transactions/ {printf "%s%s", sep, $5; sep=" "}' "$out.long" "$out.connect")"
  if grep -qE "ERROR|FATAL|aborted" "$out.long" "$out.connect"; then
    fail "($phase) pgbench reported errors:"; grep -hE "ERROR|FATAL|aborted" "$out.long" "$out.connect" | sort | uniq -c | head
  fi
  check "($phase) each install replaced the file (a new inode each time)" "$INSTALLS" \
    "$(echo $installed | tr ' ' '\n' | uniq | wc -l)"
}

# (a) Preloaded.
pm=$(postmaster_pid)
first=$(so_inode)
check "(a) the postmaster maps the installed memori.so" "$first" \
  "$(awk '/\/memori\.so/ {print $5; exit}' "/proc/$pm/maps")"
open_old
load a
no_crash a
check "(a) the postmaster is the same, and alive" "$pm alive" "$(postmaster_pid) $(alive "$pm")"
check "(a) the session opened before the installs still calls memori" "t" "$(old_ask "$LOADED")"
check "(a) that session maps the first build" "$first" "$(old_ask "$MAPPED")"
check "(a) the installed memori.so is no longer the file the postmaster mapped" "t" \
  "$([ "$(so_inode)" != "$first" ] && echo t)"
check "(a) a new session maps the postmaster's build (preloaded libraries are loaded once)" "$first" \
  "$(new_session_inode)"
close_old
cluster_stop $C
cluster_start $C
check "(a) after a restart a new session maps the installed file" "$(so_inode)" "$(new_session_inode)"

# (b) Not preloaded: each backend loads memori.so when it first calls memori.
sed -i "/^shared_preload_libraries = 'memori'/d" "$ROOT/$C/data/postgresql.conf"
cluster_stop $C
cluster_start $C
check "(b) memori is not preloaded" "" "$(q $C re "SHOW shared_preload_libraries")"
pm=$(postmaster_pid)
first=$(so_inode)
open_old
check "(b) a session maps the installed memori.so once it calls memori" "$first" "$(old_ask "$MAPPED")"
load b
no_crash b
check "(b) the postmaster is the same, and alive" "$pm alive" "$(postmaster_pid) $(alive "$pm")"
check "(b) the session opened before the installs still calls memori" "t" "$(old_ask "$LOADED")"
check "(b) that session still maps the build it loaded" "$first" "$(old_ask "$MAPPED")"
check "(b) a new session maps the installed file" "$(so_inode)" "$(new_session_inode)"
close_old

finish
