#!/usr/bin/env bash
# Installs a staged build of memori (`cargo pgrx package --out-dir STAGE`, which lays the files
# out under their real paths: STAGE/usr/lib/postgresql/15/lib/memori.so, ...) into DESTROOT
# (default /), each file atomically: copied to a new file in its destination directory, flushed
# to disk, then renamed over the old one. Used by `make install` and tests/system/reinstall.sh.
#
# Why: a backend that has memori.so mapped (every backend of a cluster that preloads it) runs
# the code in that file. Writing a new build over it in place (`cp`, which `cargo pgrx install
# --sudo` and so `cargo pgrx test --runas` use) changes the code under the running processes:
# they die with SIGILL or SIGSEGV. Deleting it and copying anew (`cargo pgrx install`) leaves a
# moment in which a backend loading memori finds no file or half a file. A rename does neither:
# running backends keep the old file (its inode lives on while mapped), a backend that loads
# memori afterwards gets the new one, whole.
#
# Order: shared libraries first, then SQL scripts, the control file last (a session that sees
# the new default_version finds its script). A file whose content is already in place is left
# alone (a cluster that preloads memori is then not restarted by scripts/cluster.sh for nothing).
#   scripts/install.sh STAGE [DESTROOT]
set -euo pipefail

[ $# -ge 1 ] && [ -d "$1" ] || { echo "usage: $0 STAGE [DESTROOT]" >&2; exit 2; }
stage=$(cd "$1" && pwd)
root=${2:-}
root=${root%/}

tmp=""
trap '[ -z "$tmp" ] || rm -f "$tmp"' EXIT

# put SRC DEST: DEST replaced by a copy of SRC (same permission bits) in one rename.
put() {
  local src=$1 dest=$2 dir
  dir=$(dirname "$dest")
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    echo "unchanged $dest"
    return
  fi
  mkdir -p "$dir"
  tmp="$dir/.$(basename "$dest").new.$$"
  install -m "$(stat -c %a "$src")" "$src" "$tmp"
  sync "$tmp"
  mv -fT "$tmp" "$dest"
  tmp=""
  sync "$dir"
  echo "installed $dest"
}

# files PREDICATE...: the staged files that match, NUL-separated, in name order.
files() { find "$stage" -type f "$@" -print0 | sort -z; }

count=0
while IFS= read -r -d '' f; do put "$f" "$root${f#"$stage"}"; count=$((count + 1)); done \
  < <(files -name '*.so'; files ! -name '*.so' ! -name '*.control'; files -name '*.control')
[ "$count" -gt 0 ] || { echo "$0: no files under $stage" >&2; exit 1; }
