#!/usr/bin/env bash
# Whether Cargo resolves the same features for memori's library build as for its test build
# (which adds the dev-dependencies): `cargo pgrx test` builds the tests, then the library it
# installs, and every dependency whose features differ is compiled twice (with everything that
# depends on it: about 8 minutes on a fresh 2-core machine). Cargo.toml turns the test build's
# features on in every build; this says which crates still differ, and fails if any does.
#
#   scripts/features.sh [FEATURES]    (default "pg15 pg_test", as make test builds)
set -euo pipefail
cd "$(dirname "$0")/.."
features=${1:-pg15 pg_test}
resolve() {
  cargo tree --features "$features" --no-default-features -e "$1" -f '{p} [{f}]' --prefix none |
    sed 's/ (\*)$//' | sort -u
}
lib=$(resolve normal,build)
tests=$(resolve normal,build,dev)
differ=$(comm -23 <(echo "$lib") <(echo "$tests"))
if [ -n "$differ" ]; then
  echo "$0: these dependencies get other features in the test build (add them to Cargo.toml with the test build's features):" >&2
  while read -r name version _; do
    echo "  library: $(grep -F "$name $version " <<<"$lib" | cut -d' ' -f3- | paste -sd' ')" \
         " tests: $(grep -F "$name $version " <<<"$tests" | cut -d' ' -f3- | paste -sd' ') ($name $version)" >&2
  done <<<"$differ"
  exit 1
fi
echo "features: the library and test builds resolve the same features ($features)"
