# Every target bootstraps the venv itself (Python 3.13 via pyenv or PATH, else the newest
# >= 3.11) and reinstalls the requirements only when they changed. tools/ensure_venv.py does it
# under a file lock, so targets started at once (make run & make token) never race on it.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(abspath $(VENV))/bin/python
ENSURE_VENV = py=$$(tools/find-python) && "$$py" tools/ensure_venv.py $(VENV)

.PHONY: help venv dev-venv run wait test lint token guardian bench soak fuzz wrk chromium import export bench-import backfill clean

help:
	@echo "make run    serve the API on HOST:PORT (default 127.0.0.1:8000; embedded Postgres unless configured)"
	@echo "make wait   wait until the server started by make run answers on HOST:PORT (WAIT_SECONDS, default 120)"
	@echo "make token  print a dev access token for the embedded backend (USER_ID=<uuid> optional)"
	@echo "make test   run the test suite (real PostgreSQL, mocked Supabase/LLM HTTP)"
	@echo "make lint   ruff + mypy + the import graph check (no cycles, no upward imports)"
	@echo "make guardian GUARDIAN=<uuid> CHILD=<uuid> [REMOVE=1]  link a guardian to a child (LIST=1: all links)"
	@echo "make bench  print throughput/latency ratios and the log's search (wrk on loopback; ~6 minutes)"
	@echo "make soak   2 workers under load while PostgreSQL restarts; checks nothing is lost (~2 minutes)"
	@echo "make fuzz   a deeper schemathesis run of the API (make test runs a short one)"
	@echo "make chromium  install Debian's Chromium for the demo page's browser test (make test does)"
	@echo "make import SRC=<folder|zip> [USER_ID=<id>] [MAP=<csv>] [DRY_RUN=1]  old file memories in"
	@echo "make export DEST=<folder> [USER_ID=<uuid>]  every user's memory (or one) out, same layout"
	@echo "make bench-import  import 1,000 users x 500 episodes into a scratch database; episodes/s"
	@echo "make backfill  embed logged episodes that have no embedding yet (EMBEDDING_* settings)"
	@echo "make clean  remove .venv and the tool caches (not .data: the embedded database stays)"

venv:
	@$(ENSURE_VENV) backend/requirements.txt

dev-venv:
	@$(ENSURE_VENV) backend/requirements-dev.txt

run: venv
	cd backend && exec $(PY) main.py

# Polls GET /readyz where make run listens (HOST, PORT as the server reads them).
wait: venv
	@PYTHONPATH=backend $(PY) tools/wait_ready.py --timeout $${WAIT_SECONDS:-120}

test: dev-venv chromium
	$(PY) -m pytest

lint: dev-venv
	$(PY) -m ruff check backend bench tools
	$(PY) -m ruff format --check backend bench tools
	$(PY) -m mypy backend bench tools/check_imports.py tools/ensure_venv.py tools/wait_ready.py
	$(PY) tools/check_imports.py

token: venv
	@cd backend && $(PY) -m services.auth.dev_tokens $(if $(USER_ID),--user-id $(USER_ID))

# The operator links a guardian (parent) to a child; REMOVE=1 removes the link, LIST=1 lists.
guardian: $(RUNTIME_STAMP)
	@cd backend && $(PY) -m services.guardians.links $(if $(LIST),--list,--guardian "$(GUARDIAN)" --child "$(CHILD)") $(if $(REMOVE),--remove)

# The bench's load generator: wrk (C, one epoll thread), so the server keeps both cores.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  apt="apt-get"; [ "$$(id -u)" = 0 ] || apt="sudo -n apt-get"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk with apt-get"; \
	    $$apt install -y -q wrk >/dev/null 2>&1 || \
	      { $$apt update -q >/dev/null && $$apt install -y -q wrk >/dev/null; } || \
	      { echo "could not install wrk: install it (apt-get install wrk) and retry" >&2; exit 1; }; \
	  else echo "make bench needs wrk (apt-get install wrk, brew install wrk)" >&2; exit 1; fi; }

# The demo page's browser test drives Debian's Chromium (Playwright's own browser download is
# not used). Where it can not be installed, the test skips and says why; make test goes on.
chromium:
	@command -v chromium >/dev/null 2>&1 || [ -n "$$CHROMIUM_PATH" ] || { \
	  apt="apt-get"; [ "$$(id -u)" = 0 ] || apt="sudo -n apt-get"; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get (for the demo page's browser test)"; \
	    $$apt install -y -q chromium >/dev/null 2>&1 || \
	      { $$apt update -q >/dev/null 2>&1 && $$apt install -y -q chromium >/dev/null 2>&1; } || \
	      echo "warning: could not install chromium: the browser test will be skipped" >&2; \
	  else echo "warning: no apt-get: install Chromium (or set CHROMIUM_PATH) to run the browser test" >&2; fi; }

bench: dev-venv wrk
	PYTHONPATH=backend $(PY) -m bench.run

soak: dev-venv
	PYTHONPATH=backend $(PY) -m bench.soak

fuzz: dev-venv
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-300} $(PY) -m pytest -q backend/tests/test_fuzz_openapi.py

import: venv
	@test -n "$(SRC)" || { echo "usage: make import SRC=<folder|zip> [USER_ID=..] [MAP=..] [DRY_RUN=1]" >&2; exit 2; }
	cd backend && $(PY) -m services.migration.import_cli "$(abspath $(SRC))" \
	  $(if $(USER_ID),--user-id "$(USER_ID)") $(if $(MAP),--map "$(abspath $(MAP))") \
	  $(if $(filter-out 0,$(DRY_RUN)),--dry-run)

export: venv
	@test -n "$(DEST)" || { echo "usage: make export DEST=<folder> [USER_ID=<uuid>]" >&2; exit 2; }
	cd backend && $(PY) -m services.migration.export_cli "$(abspath $(DEST))" \
	  $(if $(USER_ID),--user-id "$(USER_ID)")

bench-import: dev-venv
	PYTHONPATH=backend $(PY) -m bench.import_bench

backfill: venv
	cd backend && $(PY) -m services.recall.backfill

clean:
	rm -rf $(VENV) $(VENV).lock .pytest_cache .mypy_cache .ruff_cache
