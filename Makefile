# The two commands of the README: `make run` and `make test`. Also `make lint`, `make bench`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: run test test-fast lint format bench browser-deps clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	@$(PY) -m pip install $(PIP_QUIET) -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c "import django, rest_framework, django_q" 
	@touch $@

venv: $(VENV)/.installed

# make run is for local use: DEBUG on, the server on 127.0.0.1:$(PORT) (PORT=8001 make run to move it).
run: export DEBUG ?= true
run: export PORT ?= 8000
# Links in the demo's mail (preference centre, List-Unsubscribe) point at the port the server listens on.
run: export PUBLIC_BASE_URL ?= http://127.0.0.1:$(PORT)
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py seed_demo
	@# `serve` runs the server and the qcluster in process groups of their own and stops both groups on
	@# Ctrl-C or SIGTERM (TERM, then KILL after a grace): no process of make run survives its stop.
	exec $(PY) manage.py serve --port $(PORT)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || true; \
	  else echo "chromium missing: browser tests will be skipped (apt-get install chromium)"; fi; }

test: $(VENV)/.installed browser-deps
	.ci/with-postgres $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.installed
	.ci/with-postgres $(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.installed
	.ci/with-postgres $(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
