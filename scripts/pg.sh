# Which PostgreSQL the scripts use, for PG_MAJOR (default 15); sourced, not run. Debian 12
# packages 15; another major (17, 18) is installed by scripts/setup.sh under a prefix of its own.
PG_MAJOR=${PG_MAJOR:-15}
PG_PREFIX=/var/lib/memori/pg$PG_MAJOR-server
debian_pg() { [ "$PG_MAJOR" = 15 ]; }
# MEMORI_PG_BIN: another installation of the same major (tests/system/package.sh: a server
# root the Debian package was installed into).
if [ -n "${MEMORI_PG_BIN:-}" ]; then
  PG_BIN=$MEMORI_PG_BIN
elif debian_pg; then
  PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
else
  PG_BIN=$PG_PREFIX/bin
fi
PG_CONFIG=$PG_BIN/pg_config
# The local clusters' ports (scripts/cluster.sh, tests/run_sql_tests.sh): 15's as they always
# were; another major's its own, so that both can run at once.
if debian_pg; then
  PG_PORT=5499 PG_PORT_NOPRELOAD=5497
else
  PG_PORT=$((5400 + PG_MAJOR)) PG_PORT_NOPRELOAD=$((5420 + PG_MAJOR))
fi
