# memori: the two commands are `make demo` and `make test` (see README).
# Both run the idempotent set-up first: on a fresh Debian 12 machine, as root, they install
# everything memori needs; a second run skips what is done.

PG_MAJOR   ?= 15
# Debian 12 packages PostgreSQL 15; another major (PG_MAJOR=17 or 18) is installed by
# scripts/setup.sh under a prefix of its own (step_pgserver).
ifeq ($(PG_MAJOR),15)
PG_CONFIG  ?= /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config
else
PG_CONFIG  ?= /var/lib/memori/pg$(PG_MAJOR)-server/bin/pg_config
endif
export PG_MAJOR
PGRX_PG    := pg$(PG_MAJOR)
# The postgres-owned data directory `cargo pgrx test` uses (initdb refuses to run as root).
TEST_PGDATA ?= /var/lib/memori/pgrx-test-$(PG_MAJOR)
# `make install PROFILE=release` for the release profile (thin LTO, no debug information); the
# default dev profile already optimises memori's code (opt-level 2) and every dependency (model
# inference) at opt-level 3.
PROFILE    ?= dev
# Where `make install` stages the build before installing it (tests/system/reinstall.sh uses it).
STAGE      := $(CURDIR)/target/install-stage

export PATH := $(HOME)/.cargo/bin:$(PATH)

# ring (ureq's TLS) runs its build script again, and ring, rustls and ureq are compiled again,
# whenever these variables differ from its last build. `cargo pgrx test` builds the library it
# installs from the test binary, where Cargo has set them to memori's: set to the same values
# here, every cargo command of make test sees them alike (six rebuilds of about 30 s saved).
# A version is MAJOR.MINOR.PATCH[-PRE][+BUILD], as Cargo splits it (BUILD is in no variable).
MEMORI_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -1)
MEMORI_CORE    := $(shell echo '$(MEMORI_VERSION)' | sed 's/[-+].*//')
export CARGO_MANIFEST_DIR := $(CURDIR)
export CARGO_PKG_NAME := memori
export CARGO_PKG_VERSION_MAJOR := $(word 1,$(subst ., ,$(MEMORI_CORE)))
export CARGO_PKG_VERSION_MINOR := $(word 2,$(subst ., ,$(MEMORI_CORE)))
export CARGO_PKG_VERSION_PATCH := $(word 3,$(subst ., ,$(MEMORI_CORE)))
export CARGO_PKG_VERSION_PRE := $(shell echo '$(MEMORI_VERSION)' | sed -n 's/^[^-+]*-\([^+]*\).*/\1/p')

.PHONY: all setup install package demo test test-pg17 test-pg18 test-rust test-sql test-system soak bench eval cluster stop clean citus citus-build citus-stop citus-demo bench-citus

all: install

setup:
	bash scripts/setup.sh

# The build is staged (`cargo pgrx package`: the files under their real paths), then
# scripts/install.sh puts each file in place by a rename, never by writing over the old one:
# running backends keep the memori.so they mapped, new ones load the new build whole.
install: setup
	rm -rf $(STAGE)
	cargo pgrx package --pg-config $(PG_CONFIG) --out-dir $(STAGE) $(if $(filter release,$(PROFILE)),,--debug)
	# Released versions' scripts, frozen as shipped: CREATE EXTENSION memori VERSION '0.1.0'
	# works, and the upgrade test starts from them.
	cp sql/released/memori--*.sql $(STAGE)$$($(PG_CONFIG) --sharedir)/extension/
	bash scripts/install.sh $(STAGE)

# Debian packages (README "Installation"), into target/package/: postgresql-NN-memori_V-1_amd64.deb
# and postgresql-NN-pgvector (pgvector 0.8 from Debian's source) for each major of PACKAGE_MAJORS
# whose pg_config is here (17 and 18: where scripts/setup.sh installed them; a major without one
# is skipped with a message). Files in Debian's layout, whatever prefix the build server has.
# Optimised (release profile) unless PROFILE is given on the command line (PROFILE=dev: faster).
PACKAGE_MAJORS  ?= 15 17 18
PACKAGE_PROFILE := $(if $(filter command line environment,$(origin PROFILE)),$(PROFILE),release)
package: setup
	for v in $(PACKAGE_MAJORS); do \
	  PG_MAJOR=$$v PROFILE=$(PACKAGE_PROFILE) bash scripts/package.sh || exit 1; \
	done

cluster: install
	bash scripts/cluster.sh start

# The demo database is made anew each time, so it always has the memori just installed.
demo: cluster
	bash scripts/cluster.sh psql -d postgres -qc "DROP DATABASE IF EXISTS memori_demo WITH (FORCE)"
	bash scripts/cluster.sh psql -d postgres -qc "CREATE DATABASE memori_demo"
	bash scripts/cluster.sh psql -d memori_demo -X -v ON_ERROR_STOP=1 -f examples/quickstart.sql

# Every test: pure-Rust and #[pg_test] tests in a pgrx-managed instance (a private copy of
# PostgreSQL, /var/lib/memori/pgrx-pg$(PG_MAJOR), made by scripts/setup.sh: `cargo pgrx test` writes its
# build over the installed one in place, which would crash every running cluster), the SQL tests
# (pg_regress expected output) against the local cluster, then the system tests (backup and
# restore, upgrade, crash, hot standby, the worker under locks, blocking, memori.so reinstalled
# under load, a 60 s soak), each on clusters of its own.
test: setup test-rust test-sql test-system test-pg17 test-pg18

# PostgreSQL 17 and 18 (README "PostgreSQL versions"): the #[pg_test]s and SQL tests of each, on
# a server the set-up installs under a prefix of its own (the system tests run on 15 only).
test-pg17:
	$(MAKE) PG_MAJOR=17 PG_CONFIG=/var/lib/memori/pg17-server/bin/pg_config setup test-rust test-sql

test-pg18:
	$(MAKE) PG_MAJOR=18 PG_CONFIG=/var/lib/memori/pg18-server/bin/pg_config setup test-rust test-sql

test-rust: setup
	mkdir -p $(TEST_PGDATA) && chown postgres:postgres $(TEST_PGDATA)
	cargo pgrx test $(PGRX_PG) --runas postgres --pgdata $(TEST_PGDATA)/data

test-sql: cluster
	bash tests/run_sql_tests.sh

test-system: install
	bash scripts/citus.sh build-if-available
	bash tests/system/run.sh

# pgbench soak alone (SOAK_SECONDS=60 SOAK_CLIENTS=8 by default): prints the summary.
soak: install
	bash tests/system/run.sh soak

# A Citus coordinator and two workers on loopback (ports 5601-5603), Citus built from the
# vendored source (README "Scaling out"); `make citus-demo` distributes memori there and runs
# the quick start through the coordinator.
citus-build: setup
	bash scripts/citus.sh build

citus: install citus-build
	bash scripts/citus.sh start

citus-demo: citus
	bash scripts/citus.sh psql -X -qAt -c "SELECT memori_distribute()"
	bash scripts/citus.sh psql -X -v ON_ERROR_STOP=1 -f examples/quickstart.sql

# 200,000 memories over 2,000 users: search throughput and latency with one worker, then two.
bench-citus: install citus-build
	bash bench/citus.sh

citus-stop:
	bash scripts/citus.sh stop

# The embedding figures (bench/run.sh: local model, cache, HTTP round trip), then search and store
# side by side with the hand-written SQL a DBA would write instead, at 302,000 memories
# (bench/scale/run.sh, about 11 minutes: prints the table of the README's Performance section).
bench: cluster
	bash bench/run.sh
	bash bench/scale/run.sh

# Retrieval quality (bench/eval): hit@1, MRR and recall@5 per search mode on a labelled set,
# with the default local model, in a throw-away database on the local cluster. Then LoCoMo
# (bench/locomo): recall@5/10 and hit@5/10 per mode and category against BM25, store and search
# speed; read from $MEMORI_LOCOMO or ../shared/data/locomo-dev/ (skipped where absent).
eval: cluster
	cd bench/eval && /var/lib/memori/venv/bin/python run.py
	/var/lib/memori/venv/bin/python bench/locomo/run.py

stop:
	bash scripts/cluster.sh stop

clean:
	cargo clean
