# Every target bootstraps .venv itself (Python 3.13 via pyenv or PATH, else the newest >= 3.11)
# and reinstalls the requirements only when they changed.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
PY := $(CURDIR)/$(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: help run test lint token guardian bench soak fuzz wrk clean

help:
	@echo "make run    serve the API on HOST:PORT (default 127.0.0.1:8000; embedded Postgres unless configured)"
	@echo "make test   run the test suite (real PostgreSQL, mocked Supabase/LLM HTTP)"
	@echo "make lint   ruff + mypy + the import graph check (no cycles, no upward imports)"
	@echo "make token  print a dev access token for the embedded backend (USER_ID=<uuid> optional)"
	@echo "make guardian GUARDIAN=<uuid> CHILD=<uuid> [REMOVE=1]  link a guardian to a child (LIST=1: all links)"
	@echo "make bench  print throughput/latency ratios (wrk on loopback; ~2 minutes)"
	@echo "make soak   2 workers under load while PostgreSQL restarts; checks nothing is lost (~2 minutes)"
	@echo "make fuzz   a deeper schemathesis run of the API (make test runs a short one)"

$(PY):
	@py=$$(tools/find-python) && echo "creating $(VENV) with $$py" && "$$py" -m venv $(VENV)
	@$(PIP) install --upgrade pip

$(RUNTIME_STAMP): backend/requirements.txt | $(PY)
	$(PIP) install -r backend/requirements.txt
	@touch $@

$(DEV_STAMP): backend/requirements.txt backend/requirements-dev.txt | $(PY)
	$(PIP) install -r backend/requirements-dev.txt
	@touch $@ $(RUNTIME_STAMP)

run: $(RUNTIME_STAMP)
	cd backend && exec $(PY) main.py

test: $(DEV_STAMP)
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(PY) -m ruff check backend bench tools
	$(PY) -m ruff format --check backend bench tools
	$(PY) -m mypy backend bench tools/check_imports.py
	$(PY) tools/check_imports.py

token: $(RUNTIME_STAMP)
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

bench: $(DEV_STAMP) wrk
	PYTHONPATH=backend $(PY) -m bench.run

soak: $(DEV_STAMP)
	PYTHONPATH=backend $(PY) -m bench.soak

fuzz: $(DEV_STAMP)
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-300} $(PY) -m pytest -q backend/tests/test_fuzz_openapi.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
