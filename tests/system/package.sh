#!/usr/bin/env bash
# The Debian package (`make package`, scripts/package.sh), installed with dpkg on a server where
# memori was never built, then upgraded under a running cluster:
#   - the package's fields, files, owners and modes; META.json's version is Cargo.toml's;
#   - apt-get install of the two .deb files, simulated against this machine's package database;
#   - a server root (/var/lib/memori/pkgtest/root) with a copy of PostgreSQL 15 and no memori
#     nor pgvector file, and a dpkg database of its own that has postgresql-15 and the C
#     libraries (their entries copied from this machine's): `dpkg --root` refuses memori without
#     pgvector 0.8, then installs the pgvector package and memori's;
#   - a cluster of that root's binaries (port 5470, memori preloaded): CREATE EXTENSION memori
#     CASCADE, memories stored with the previous package, the new package installed while the
#     cluster runs (the postmaster survives, new sessions work), a restart, ALTER EXTENSION
#     UPDATE: every memory kept; then the SQL tests (tests/run_sql_tests.sh, its second cluster
#     on port 5471) against the installed package; then `dpkg -r` removes every file.
# The previous package is this build's library with the 0.4.0 SQL (scripts/package.sh
# --as-version 0.4.0): no memori .deb was built before this one. The build is a dev build
# (PROFILE=dev), compressed fast, to keep the test short; `make package` builds optimised.
# The system's PostgreSQL is not touched: nothing is installed under /usr.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

W=/var/lib/memori/pkgtest
R=$W/root
RBIN=$R/usr/lib/postgresql/15/bin
PORT=5470
PORT2=5471
export MEMORI_PG_BIN=$RBIN MEMORI_PGDATA=$W/pg15 MEMORI_PGPORT=$PORT MEMORI_PGSOCK=$W/sock \
       MEMORI_PGPORT_NOPRELOAD=$PORT2 MEMORI_PGDATA_NOPRELOAD=$W/pg15-nopreload PG_MAJOR=15

stop_all() {
  local d
  for d in "$W/pg15" "$W/pg15-nopreload"; do
    if [ -f "$d/postmaster.pid" ] && [ -x "$RBIN/pg_ctl" ]; then
      as_pg "$RBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
    fi
  done
}
pkg_cleanup() {
  stop_all
  if [ "$FAILED" = 0 ] && [ -z "${MEMORI_KEEP_CLUSTERS:-}" ]; then rm -rf "$W"; fi
}
trap pkg_cleanup EXIT
stop_all
rm -rf "$W"
mkdir -p "$W/debs/old" "$W/debs/new" "$W/sock"
chown postgres:postgres "$W/sock"

pq() { "$RBIN/psql" -h "$W/sock" -p $PORT -U postgres -d "$1" -X -qAt -v ON_ERROR_STOP=1 -c "$2"; }
pqf() { local d=$1; shift; "$RBIN/psql" -h "$W/sock" -p $PORT -U postgres -d "$d" -X -qAt -v ON_ERROR_STOP=1 "$@"; }

current=$(sed -n 's/^version = "\(.*\)"/\1/p' "$HERE/Cargo.toml" | head -n1)
previous=$(cd "$HERE/sql/released" && ls memori--*.sql | sed 's/^memori--\(.*\)\.sql$/\1/' | sort -V | tail -n1)

# --- build ------------------------------------------------------------------------------------
# MEMORI_PACKAGE_STAGE=DIR: package a build already staged there (`make package` leaves its
# optimised one in target/package/stage-15) instead of a dev build made here.
t0=$SECONDS
stage=${MEMORI_PACKAGE_STAGE:-}
if [ -z "$stage" ]; then
  stage=$HERE/target/package/test-stage-15
  rm -rf "$stage"
  (cd "$HERE" && PATH=$HOME/.cargo/bin:$PATH cargo pgrx package --pg-config /usr/lib/postgresql/15/bin/pg_config \
     --out-dir "$stage" --debug >"$W/build.log" 2>&1) || { cat "$W/build.log"; fail "cargo pgrx package"; finish; exit 1; }
fi
export PKG_COMPRESS="-Zgzip -z1"
PKG_REVISION=1 env -u MEMORI_PG_BIN bash "$HERE/scripts/package.sh" --stage "$stage" --out "$W/debs/old" --as-version "$previous" --no-pgvector
env -u MEMORI_PG_BIN bash "$HERE/scripts/package.sh" --stage "$stage" --out "$W/debs/new"
echo "# built in $((SECONDS - t0)) s"
old=$W/debs/old/postgresql-15-memori_$previous-1_amd64.deb
new=$W/debs/new/postgresql-15-memori_$current-1_amd64.deb
vec=$(ls "$W"/debs/new/postgresql-15-pgvector_*_amd64.deb)
check_true "the packages are built: $(basename "$old"), $(basename "$new"), $(basename "$vec")" test -f "$old" -a -f "$new" -a -f "$vec"

# --- the package as a DBA reads it -----------------------------------------------------------
field() { dpkg-deb -f "$1" "$2"; }
check "Package, Version, Architecture, Section" "postgresql-15-memori $current-1 amd64 database" \
  "$(field "$new" Package) $(field "$new" Version) $(field "$new" Architecture) $(field "$new" Section)"
check "the Maintainer is META.json's" \
  "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["maintainer"][0])' "$HERE/META.json")" "$(field "$new" Maintainer)"
check_true "a Description" test -n "$(field "$new" Description)"
check_true "depends on postgresql-15 and postgresql-15-pgvector (>= 0.8.0): $(field "$new" Depends)" \
  grep -qE '^postgresql-15, postgresql-15-pgvector \(>= 0\.8\.0\), libc6' <<< "$(field "$new" Depends)"
listing=$(dpkg-deb -c "$new")
check "every file root:root, 0644 (directories 0755)" "" \
  "$(awk '$2 != "root/root" || ($1 != "-rw-r--r--" && $1 != "drwxr-xr-x")' <<< "$listing")"
files=$(awk '$1 ~ /^-/ {print $6}' <<< "$listing" | sed 's|^\./||' | sort)
want="usr/lib/postgresql/15/lib/memori.so
usr/share/postgresql/15/extension/memori.control
usr/share/postgresql/15/extension/memori--$current.sql
usr/share/postgresql/15/extension/memori--$previous--$current.sql
usr/share/postgresql/15/extension/memori/all-MiniLM-L6-v2/model.safetensors
usr/share/postgresql/15/extension/memori/all-MiniLM-L6-v2/tokenizer.json
usr/share/postgresql/15/extension/memori/all-MiniLM-L6-v2/config.json
usr/share/doc/postgresql-15-memori/README.md.gz
usr/share/doc/postgresql-15-memori/copyright
usr/share/doc/postgresql-15-memori/changelog.gz
usr/share/doc/postgresql-15-memori/changelog.Debian.gz"
for f in "$HERE"/sql/released/memori--*.sql; do want+=$'\n'"usr/share/postgresql/15/extension/$(basename "$f")"; done
check "the library, control and SQL files (current and released), the model, the docs" "" \
  "$(comm -23 <(sort <<< "$want") <(echo "$files"))"
check "nothing outside /usr/lib/postgresql/15 and /usr/share/{postgresql/15,doc,lintian}" "" \
  "$(grep -vE '^usr/(lib/postgresql/15/lib|share/postgresql/15/extension|share/doc/postgresql-15-memori)/|^usr/share/lintian/overrides/postgresql-15-memori$' <<< "$files" || true)"
check "memori.so is stripped" "" "$(dpkg-deb --fsys-tarfile "$new" | tar -xOf - ./usr/lib/postgresql/15/lib/memori.so | file - | grep -o 'with debug_info' || true)"
check "the old package is $previous, without the current scripts" "$previous-1 0" \
  "$(field "$old" Version) $(dpkg-deb -c "$old" | grep -c "memori--$current.sql" || true)"
meta=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["version"], m["provides"]["memori"]["version"], m["prereqs"]["runtime"]["requires"]["vector"])' "$HERE/META.json")
check "META.json: version and provides are Cargo.toml's ($current), vector 0.8.0" "$current $current 0.8.0" "$meta"

# apt on this machine (simulated, nothing is installed): it takes pgvector's package with memori's,
# and refuses memori's alone (this machine's pgvector is built from source, unknown to dpkg).
out=$(apt-get install --simulate -q "$vec" "$new" 2>&1 || true)
check_true "apt-get install ./pgvector.deb ./memori.deb resolves (simulated)" \
  grep -q "^Conf postgresql-15-memori ($current-1 " <<< "$out"
if ! dpkg-query -W -f='${Status}' postgresql-15-pgvector 2>/dev/null | grep -q "install ok installed"; then
  out=$(apt-get install --simulate -q "$new" 2>&1 || true)
  check_true "apt-get install ./memori.deb alone names the missing pgvector (simulated)" \
    grep -q "Depends: postgresql-15-pgvector (>= 0.8.0)" <<< "$out"
fi

# --- a server where memori was never built ----------------------------------------------------
mkdir -p "$R"
tar -C / --exclude='memori*' --exclude='.memori*' --exclude='vector*' --exclude='bitcode/vector*' \
  -cf - usr/lib/postgresql/15 usr/share/postgresql/15 | tar -C "$R" -xf -
check "the server root has no memori nor pgvector file" "" "$(find "$R" \( -name 'memori*' -o -name 'vector*' \) | head -n3)"
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/lib/dpkg/triggers"
: > "$R/var/lib/dpkg/available"
# The installed packages memori and pgvector depend on, as this machine has them.
# Their files are this machine's, not the root's: their file lists there are empty.
for p in postgresql-15 libc6 libgcc-s1; do
  dpkg-query -s "$p"; echo
  : > "$R/var/lib/dpkg/info/$(dpkg-query -W -f='${binary:Package}' "$p").list"
done > "$R/var/lib/dpkg/status"
rdpkg() { dpkg --root="$R" "$@"; }

out=$(rdpkg -i "$old" 2>&1 || true)
check_true "dpkg refuses memori without pgvector: it names postgresql-15-pgvector (>= 0.8.0)" \
  grep -q "depends on postgresql-15-pgvector (>= 0.8.0)" <<< "$out"
rdpkg -i "$vec" "$old" >/dev/null
check "installed: memori $previous and pgvector" "ii $previous-1 ii $(field "$vec" Version)" \
  "$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${db:Status-Abbrev}${Version} ' postgresql-15-pgvector postgresql-15-memori | sed 's/  */ /g; s/ $//')"

# --- the previous package: memories stored -----------------------------------------------------
bash "$HERE/scripts/cluster.sh" start >/dev/null
pm=$(head -n1 "$W/pg15/postmaster.pid")
check_true "the postmaster loaded the package's memori.so (from $R)" grep -q "$R/usr/lib/postgresql/15/lib/memori.so" "/proc/$pm/maps"
pq postgres "CREATE DATABASE app"
pq app "CREATE EXTENSION memori CASCADE"
check "CREATE EXTENSION memori CASCADE: memori $previous, vector 0.8.0" "$previous 0.8.0" \
  "$(pq app "SELECT string_agg(extversion, ' ' ORDER BY extname <> 'memori') FROM pg_extension WHERE extname IN ('memori', 'vector')")"
pqf app >/dev/null <<'SQL'
SELECT memori_conversation_create('before the package upgrade') AS conv \gset
SELECT memori_store('User prefers JOINs over subqueries', 'rule', importance => 0.9, tags => ARRAY['sql'],
                    metadata => '{"k": 1}', entities => ARRAY['joins'], conversation_id => :'conv');
SELECT memori_relate('orders.customer_id', 'references', 'customers.id');
SET memori.dedup_threshold = 1;
SELECT count(*) FROM memori_store_batch(ARRAY(SELECT 'note ' || g || ' on table t' || g FROM generate_series(1, 50) g), 'long_term');
SQL
# Every column the previous version had, of every row (as tests/system/upgrade.sh).
kept() {
  pq app "SELECT (SELECT count(*) FROM memori_memories) || ' memories ' ||
                 (SELECT md5(string_agg((to_jsonb(m) - 'content_tsv' - 'valid_to' - 'superseded_by' - 'event_at' - 'dedup_scope' - 'dedup_sketch')::text, '|' ORDER BY id)) FROM memori_memories m) || ' ' ||
                 (SELECT count(*) FROM memori_conversations) || ' conversations ' ||
                 (SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM memori_conversations c)"
}
before=$(kept)
check_true "memories stored with $previous: $before" grep -q '^52 memories ' <<< "$before"

# --- the new package, installed while the cluster runs -------------------------------------------
rdpkg -i "$new" >/dev/null
check "upgraded: memori $current-1" "ii $current-1" \
  "$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${db:Status-Abbrev}${Version}' postgresql-15-memori | sed 's/  */ /g')"
check "the postmaster survives the library's replacement" "$pm" "$(head -n1 "$W/pg15/postmaster.pid")"
check "a new session works before the restart" "User prefers JOINs over subqueries" \
  "$(pq app "SELECT content FROM memori_search('How should SQL be written?', k => 1)")"
bash "$HERE/scripts/cluster.sh" restart >/dev/null
check_true "no backend crashed" test -z "$(grep -E 'terminated by signal|was terminated' "$W/pg15/server.log" || true)"
pq app "ALTER EXTENSION memori UPDATE"
check "ALTER EXTENSION memori UPDATE: $previous -> $current" "$current" "$(pq app "SELECT extversion FROM pg_extension WHERE extname = 'memori'")"
check "every memory is kept" "$before" "$(kept)"
check "search works after the upgrade" "User prefers JOINs over subqueries" \
  "$(pq app "SELECT content FROM memori_search('How should SQL be written?', k => 1)")"
check "store works after the upgrade" "t" "$(pq app "SELECT memori_store('stored after the package upgrade', 'rule') IS NOT NULL")"
pq postgres "CREATE DATABASE fresh"
pq fresh "CREATE EXTENSION memori CASCADE"
check "a fresh CREATE EXTENSION is $current" "$current" "$(pq fresh "SELECT extversion FROM pg_extension WHERE extname = 'memori'")"

# --- the SQL tests against the installed package -------------------------------------------------
if sql=$(bash "$HERE/tests/run_sql_tests.sh" 2>&1); then rc=0; else rc=$?; fi
echo "$sql" | grep -E '^(sql:|not ok|test .* FAILED|FAILED)' || true
check "the SQL tests pass on the installed package ($(echo "$sql" | grep '^sql:' | tail -n1))" 0 "$rc"
[ "$rc" = 0 ] || echo "$sql" | tail -n 40

# --- removal ---------------------------------------------------------------------------------------
bash "$HERE/scripts/cluster.sh" stop
rdpkg -r postgresql-15-memori >/dev/null
check "dpkg -r removes every file of memori" "" "$(find "$R" -name 'memori*' | head -n3)"

finish
