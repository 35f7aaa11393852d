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

run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py seed_demo
	@echo "Starting the task cluster (qcluster) and the server on http://127.0.0.1:8000 (Ctrl-C stops both)"
	@# Stop both on Ctrl-C or SIGTERM: a short grace, then KILL (the qcluster can hang while stopping;
	@# the database is the record and every task is idempotent, so nothing is lost).
	@trap 'trap - EXIT INT TERM; kill $$cluster $$server 2>/dev/null; sleep 5; pkill -9 -P $$cluster 2>/dev/null; kill -9 $$cluster $$server 2>/dev/null' EXIT INT TERM; \
	  $(PY) manage.py qcluster & cluster=$$!; \
	  $(PY) manage.py runserver 127.0.0.1:8000 --noreload & server=$$!; \
	  wait

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
