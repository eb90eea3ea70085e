#!/usr/bin/env bash
# Builds the Debian packages of memori for one PostgreSQL major ($PG_MAJOR, as scripts/pg.sh
# picks its pg_config), into target/package/ (or --out DIR):
#
#   postgresql-NN-memori_V-R_amd64.deb    memori.so, memori.control, memori--*.sql (the current
#                                          version's, the upgrade scripts, and the released
#                                          versions' frozen scripts), the local model files, the
#                                          README, the changelogs and the copyright file
#   postgresql-NN-pgvector_P_amd64.deb     pgvector 0.8 built from Debian trixie's source package
#                                          (the one scripts/setup.sh builds), for servers whose
#                                          distribution has no pgvector 0.8 for NN (Debian 12 has
#                                          no pgvector package); --no-pgvector skips it
#
# The files go where Debian's and the PGDG's PostgreSQL look for them (/usr/lib/postgresql/NN/lib,
# /usr/share/postgresql/NN/extension), whatever prefix the server it was built against has (17
# lives under /var/lib/memori here): each file of the build is mapped from that pg_config's
# directories to Debian's. V is Cargo.toml's version (memori.control's default_version is made
# from it), R the Debian revision ($PKG_REVISION, default 1). Files are root:root, 0644 (0755 for
# directories), memori.so stripped of its debug information; timestamps are the last commit's.
# PKG_COMPRESS: dpkg-deb's compression options (default -Zxz; the test uses a fast one).
#
#   scripts/package.sh [--stage DIR] [--out DIR] [--no-pgvector] [--as-version OLD]
#
# --stage DIR: a build already staged by `cargo pgrx package --out-dir DIR` for this pg_config
#   (default: built here, optimised unless PROFILE=dev).
# --as-version OLD (tests only, tests/system/package.sh): a package of an earlier release: its
#   default_version is OLD, it has no script of a later version, its version is OLD-R. The
#   library is still this build's (which runs every released version's SQL): it stands in for
#   the previous package, which was never built as a .deb.
# A major whose pg_config is absent (PostgreSQL 18 before scripts/setup.sh installed it), or
# that Cargo.toml has no feature for, is skipped with a message, and the script succeeds.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/pg.sh
. "$here/scripts/pg.sh"
# Not exported further: PGXS reads PROFILE as compiler flags (pgvector's build).
profile=${PROFILE:-release}
unset PROFILE
REVISION=${PKG_REVISION:-1}
export PATH=$HOME/.cargo/bin:$PATH

stage="" out=$here/target/package pgvector=1 as_version=""
while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-pgvector) pgvector=0; shift ;;
    --as-version) as_version=$2; shift 2 ;;
    *) echo "usage: $0 [--stage DIR] [--out DIR] [--no-pgvector] [--as-version OLD]" >&2; exit 2 ;;
  esac
done

if [ ! -x "$PG_CONFIG" ]; then
  echo "PostgreSQL $PG_MAJOR: no $PG_CONFIG, so no package for it (PG_MAJOR=$PG_MAJOR scripts/setup.sh installs it)"
  exit 0
fi
# Cargo.toml declares a feature for each major memori is built for.
if ! grep -q "^pg$PG_MAJOR = " "$here/Cargo.toml"; then
  echo "PostgreSQL $PG_MAJOR: Cargo.toml has no pg$PG_MAJOR feature yet, so no package for it"
  exit 0
fi
got_major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
[ "$got_major" = "$PG_MAJOR" ] || { echo "$PG_CONFIG is PostgreSQL $got_major, not $PG_MAJOR" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n1)
pkg_version=${as_version:-$version}-$REVISION
# The maintainer is META.json's (one place for it).
maintainer=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["maintainer"][0])' "$here/META.json")
# Reproducible: every date and timestamp is the last commit's.
# The last commit's time; outside a git checkout (a source tarball), Cargo.toml's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || stat -c %Y "$here/Cargo.toml")}
changelog_date=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
first_year=$(git -C "$here" log --format=%ad --date=format:%Y 2>/dev/null | tail -n1 || true)
last_year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
first_year=${first_year:-$last_year}
years=$first_year; [ "$last_year" = "$first_year" ] || years=$first_year-$last_year
mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Where the build's pg_config puts things, and where Debian's PostgreSQL NN has them.
src_lib=$("$PG_CONFIG" --pkglibdir)
src_share=$("$PG_CONFIG" --sharedir)
src_inc=$("$PG_CONFIG" --includedir-server)
deb_lib=/usr/lib/postgresql/$PG_MAJOR/lib
deb_share=/usr/share/postgresql/$PG_MAJOR
deb_inc=/usr/include/postgresql/$PG_MAJOR/server

# map STAGE ROOT: every file under STAGE, moved from the build's directories to Debian's under
# ROOT; a file elsewhere stops the build (it would not be found by Debian's PostgreSQL).
map() {
  local stage_dir=$1 root=$2 f rel dest
  while IFS= read -r -d '' f; do
    rel=${f#"$stage_dir"}
    case $rel in
      "$src_lib"/*) dest=$deb_lib/${rel#"$src_lib"/} ;;
      "$src_share"/*) dest=$deb_share/${rel#"$src_share"/} ;;
      "$src_inc"/*) dest=$deb_inc/${rel#"$src_inc"/} ;;
      *) echo "$0: $rel is outside $src_lib, $src_share and $src_inc" >&2; exit 1 ;;
    esac
    install -D -m 0644 "$f" "$root$dest"
  done < <(find "$stage_dir" -type f -print0)
}

# shlibs LIBRARY...: the Depends the libraries' dynamic links need (libc6 (>= ...), ...).
shlibs() {
  local d=$work/shlibs
  mkdir -p "$d/debian"
  printf 'Source: x\n\nPackage: x\nArchitecture: any\n' > "$d/debian/control"
  (cd "$d" && dpkg-shlibdeps -O "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}

# depends BASE LIBRARY: BASE, then what LIBRARY's dynamic links need (the control's Depends).
depends() {
  local libdeps
  # -e does not reach into a command substitution: a failed dpkg-shlibdeps must stop the build,
  # not make a package without its libraries' dependencies.
  libdeps=$(shlibs "$2") || return 1
  echo "$1${libdeps:+, $libdeps}"
}

# finish ROOT PACKAGE: DEBIAN/md5sums, ownership-free permissions, Installed-Size, the .deb.
finish() {
  local root=$1 name=$2
  find "$root" -type d -exec chmod 0755 {} +
  find "$root" -type f ! -path "$root/DEBIAN/*" -exec chmod 0644 {} +
  (cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  local deb=$out/${name}_$(sed -n 's/^Version: //p' "$root/DEBIAN/control")_amd64.deb
  # shellcheck disable=SC2086
  dpkg-deb --root-owner-group ${PKG_COMPRESS:--Zxz} --build "$root" "$deb" >/dev/null
  echo "built $deb ($(du -h "$deb" | cut -f1))"
}

# gz FILE DEST: FILE compressed as Debian's documentation is (no name, no time stamp).
gz() { mkdir -p "$(dirname "$2")"; gzip -9n < "$1" > "$2"; }

# --- memori ---------------------------------------------------------------------------------
if [ -z "$stage" ]; then
  stage=$out/stage-$PG_MAJOR
  rm -rf "$stage"
  echo "building memori for PostgreSQL $PG_MAJOR ($profile profile)"
  (cd "$here" && cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$stage" \
    $([ "$profile" = release ] || echo --debug))
fi
stage=$(cd "$stage" && pwd)
name=postgresql-$PG_MAJOR-memori
root=$work/$name
map "$stage" "$root"
ext=$root$deb_share/extension
[ -f "$root$deb_lib/memori.so" ] && [ -f "$ext/memori.control" ] || { echo "$0: $stage holds no build of memori" >&2; exit 1; }
grep -qx "default_version = '$version'" "$ext/memori.control" ||
  { echo "$0: memori.control's default_version is not Cargo.toml's $version" >&2; exit 1; }

# The released versions' scripts, frozen as shipped (CREATE EXTENSION memori VERSION '0.4.0').
(cd "$here" && sha256sum --check --quiet sql/released/SHA256SUMS)
install -m 0644 "$here"/sql/released/memori--*.sql "$ext/"

if [ -n "$as_version" ]; then
  [ -f "$ext/memori--$as_version.sql" ] || { echo "$0: no released script of $as_version" >&2; exit 1; }
  for f in "$ext"/memori--*.sql; do
    v=$(basename "$f" .sql); v=${v##*--}
    if dpkg --compare-versions "$v" gt "$as_version"; then rm -f "$f"; fi
  done
  sed -i "s/^default_version = .*/default_version = '$as_version'/" "$ext/memori.control"
fi

# The local model (all-MiniLM-L6-v2), as scripts/setup.sh installed it for the build's server,
# checked against the SHA-256 sums pinned there.
model_src=$src_share/extension/memori/all-MiniLM-L6-v2
model_sums=$(grep -oE '[0-9a-f]{64}  (model\.safetensors|tokenizer\.json|config\.json)' "$here/scripts/setup.sh")
[ "$(echo "$model_sums" | wc -l)" = 3 ] || { echo "$0: the model's pinned sums are not in scripts/setup.sh" >&2; exit 1; }
if ! (cd "$model_src" 2>/dev/null && echo "$model_sums" | sha256sum --check --quiet --status); then
  echo "$0: the model files in $model_src are missing or differ from their pinned sums (PG_MAJOR=$PG_MAJOR scripts/setup.sh model)" >&2
  exit 1
fi
for f in model.safetensors tokenizer.json config.json; do
  install -D -m 0644 "$model_src/$f" "$ext/memori/all-MiniLM-L6-v2/$f"
done

# Debug information stripped as Debian strips shared libraries (the dynamic symbols stay).
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root$deb_lib/memori.so"

doc=$root/usr/share/doc/$name
gz "$here/README.md" "$doc/README.md.gz"
gz "$here/CHANGELOG.md" "$doc/changelog.gz"
cat > "$work/changelog.Debian" <<EOF
memori ($pkg_version) unstable; urgency=medium

  * memori ${as_version:-$version} for PostgreSQL $PG_MAJOR, built by \`make package\` (see
    changelog.gz for what changed).

 -- $maintainer  $changelog_date
EOF
gz "$work/changelog.Debian" "$doc/changelog.Debian.gz"
cat > "$doc/copyright" <<EOF
memori: long-term memory for LLM applications, inside PostgreSQL.
Packaged by $maintainer.

memori

  Copyright (c) $years the memori authors
  License: PostgreSQL

  Permission to use, copy, modify, and distribute this software and its documentation for any
  purpose, without fee, and without a written agreement is hereby granted, provided that the
  above copyright notice and this paragraph and the following two paragraphs appear in all
  copies.

  IN NO EVENT SHALL THE AUTHORS BE LIABLE TO ANY PARTY FOR DIRECT, INDIRECT, SPECIAL,
  INCIDENTAL, OR CONSEQUENTIAL DAMAGES, INCLUDING LOST PROFITS, ARISING OUT OF THE USE OF THIS
  SOFTWARE AND ITS DOCUMENTATION, EVEN IF THE AUTHORS HAVE BEEN ADVISED OF THE POSSIBILITY OF
  SUCH DAMAGE.

  THE AUTHORS SPECIFICALLY DISCLAIM ANY WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED
  WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE. THE SOFTWARE PROVIDED
  HEREUNDER IS ON AN "AS IS" BASIS, AND THE AUTHORS HAVE NO OBLIGATIONS TO PROVIDE MAINTENANCE,
  SUPPORT, UPDATES, ENHANCEMENTS, OR MODIFICATIONS.

memori.so also holds, linked statically, the Rust crates listed in memori's Cargo.lock (pgrx,
candle, tokenizers, serde, ureq and their dependencies), each under the MIT or the Apache 2.0
license (/usr/share/common-licenses/Apache-2.0).

usr/share/postgresql/$PG_MAJOR/extension/memori/all-MiniLM-L6-v2/*

  The all-MiniLM-L6-v2 sentence-embedding model (weights, tokenizer, configuration)
  Copyright: the sentence-transformers authors
  License: Apache 2.0 (/usr/share/common-licenses/Apache-2.0)
EOF

# Not an upload to Debian: no bug to close.
mkdir -p "$root/usr/share/lintian/overrides"
echo "$name: initial-upload-closes-no-bugs" > "$root/usr/share/lintian/overrides/$name"

mkdir -p "$root/DEBIAN"
deps=$(depends "postgresql-$PG_MAJOR, postgresql-$PG_MAJOR-pgvector (>= 0.8.0)" "$root$deb_lib/memori.so")
cat > "$root/DEBIAN/control" <<EOF
Package: $name
Source: memori
Version: $pkg_version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $deps
Section: database
Priority: optional
Description: long-term memory for LLM applications, inside PostgreSQL $PG_MAJOR
 memori is a PostgreSQL extension: applications store memories (facts, rules,
 preferences, conversations) with SQL and recall them by meaning, ranked by
 similarity, recency and importance. Embeddings are computed inside the
 database by a built-in all-MiniLM-L6-v2 model (included, no network needed) or
 by an OpenAI-compatible endpoint, and searched through pgvector's HNSW index.
 .
 This package holds the extension for PostgreSQL $PG_MAJOR: load it with
 CREATE EXTENSION memori CASCADE. It needs pgvector 0.8.0 or later.
EOF
finish "$root" "$name"

# --- pgvector ---------------------------------------------------------------------------------
[ "$pgvector" = 1 ] || exit 0
# Debian's pgvector 0.8.0 does not build against PostgreSQL 18 (vacuum_delay_point changed), nor
# does anything with 18's PGXS and Debian 12's gcc 12: memori's package for 18 depends on a
# postgresql-18-pgvector from the distribution the server comes from (README "Installation").
if [ "$PG_MAJOR" -ge 18 ]; then
  echo "PostgreSQL $PG_MAJOR: no pgvector package built here (Debian's 0.8.0 source does not build for it)"
  exit 0
fi
srcdir=$(find "$here/target/setup/pgvector" -maxdepth 1 -mindepth 1 -type d -name 'pgvector-*' 2>/dev/null | head -n1 || true)
if [ -z "$srcdir" ]; then
  bash "$here/scripts/setup.sh" pgvector_source
  srcdir=$(find "$here/target/setup/pgvector" -maxdepth 1 -mindepth 1 -type d -name 'pgvector-*' | head -n1)
fi
dsc_version=$(dpkg-parsechangelog -l "$srcdir/debian/changelog" -S Version)
# "~": Debian's own build of the same version sorts above this one and replaces it.
vversion=$dsc_version~memori$REVISION
vname=postgresql-$PG_MAJOR-pgvector
echo "building pgvector $dsc_version for PostgreSQL $PG_MAJOR"
# Built in a directory of a fixed name: the paths in its bitcode files are the same every time.
vsrc=$here/target/package/pgvector-build-$PG_MAJOR
rm -rf "$vsrc"
cp -a "$srcdir" "$vsrc"
# OPTFLAGS="": no -march=native, the package runs on any amd64 (as Debian builds it);
# enable_rpath=no: no RUNPATH to the build server's prefix (Debian's PostgreSQL has none).
vmake() { make -C "$vsrc" PG_CONFIG="$PG_CONFIG" OPTFLAGS="" enable_rpath=no "$@"; }
if ! { vmake clean && vmake && vmake DESTDIR="$work/pgvector-stage" install; } > "$work/pgvector.log" 2>&1; then
  cat "$work/pgvector.log" >&2
  echo "$0: pgvector's build failed" >&2
  exit 1
fi
vroot=$work/$vname
map "$work/pgvector-stage" "$vroot"
rm -rf "$vsrc"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$vroot$deb_lib/vector.so"
vdoc=$vroot/usr/share/doc/$vname
install -D -m 0644 "$srcdir/debian/copyright" "$vdoc/copyright"
gz "$srcdir/CHANGELOG.md" "$vdoc/changelog.gz"
{ cat <<EOF
pgvector ($vversion) unstable; urgency=medium

  * Debian's pgvector $dsc_version built for PostgreSQL $PG_MAJOR by memori's
    \`make package\`: memori needs pgvector 0.8.0 or later.

 -- $maintainer  $changelog_date

EOF
  cat "$srcdir/debian/changelog"; } > "$work/vchangelog"
gz "$work/vchangelog" "$vdoc/changelog.Debian.gz"
mkdir -p "$vroot/DEBIAN"
vdeps=$(depends "postgresql-$PG_MAJOR" "$vroot$deb_lib/vector.so")
cat > "$vroot/DEBIAN/control" <<EOF
Package: $vname
Source: pgvector
Version: $vversion
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$vroot" | cut -f1)
Depends: $vdeps
Section: database
Priority: optional
Description: open-source vector similarity search for PostgreSQL $PG_MAJOR
 pgvector stores vectors in PostgreSQL and searches them by exact and
 approximate nearest neighbour (HNSW, IVFFlat), with L2, inner product, cosine,
 L1, Hamming and Jaccard distances.
 .
 Debian's pgvector $dsc_version, rebuilt for PostgreSQL $PG_MAJOR for servers
 whose distribution has no pgvector 0.8 (memori needs 0.8.0 or later).
EOF
finish "$vroot" "$vname"
