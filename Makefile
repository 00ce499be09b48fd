# Cancel Desk: `make run` serves the app with demo data, `make test` runs the suite.
# Both set themselves up on a fresh machine: only Python 3.11 is needed.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# python3.11 if there is one, else python3 when that is 3.11.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || \
	(python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && command -v python3))

.PHONY: run test install lint clean help bench

help:
	@echo "make run      serve on http://127.0.0.1:$${PORT:-5000} (embedded SQLite + Redis, demo data)"
	@echo "make test     run the test suite (PYTEST_ARGS='-k cli' to pass arguments)"
	@echo "make install  create .venv and install the app with its test dependencies"
	@echo "make lint     ruff (pyflakes, pycodestyle, bugbear, isort) and the import layers (import-linter)"
	@echo "make bench    benchmark (python -m bench): bulk/single cancels, CPU per cancel, list + search,"
	@echo "             worker memory against job size (DATABASE_URL, REDIS_URL, BENCH_*; see bench/run.py)"
	@echo "make clean    delete the local database, embedded Redis files and caches"

$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then echo "Python 3.11 is required (python3.11 or python3 -> 3.11)" >&2; exit 1; fi
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml package-lock.json | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# Chart.js for the dashboard, vendored from npm (never committed, never a CDN). Without npm
	@# the dashboard shows its tables only.
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund && mkdir -p static/vendor \
		&& cp node_modules/chart.js/dist/chart.umd.js static/vendor/chart.umd.js \
		|| echo "warning: npm ci failed; the dashboard will show tables without charts" >&2; \
	else echo "npm not found: the dashboard will show tables without charts"; fi
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/flask --app app serve

# PYTHONNODEBUGRANGES: Python 3.11's tracebacks parse source with `ast` to draw their ^^^ marks,
# and 3.11 keeps the ast module's recursion counter per interpreter, not per thread
# (CPython gh-106905). A traceback logged by the live server's thread while pytest formats a
# failure in the main thread then fails with "SystemError: AST constructor recursion depth
# mismatch", which aborts the whole run (INTERNALERROR). Without column ranges no traceback
# parses anything.
test: $(STAMP)
	PYTHONNODEBUGRANGES=1 $(BIN)/pytest $(PYTEST_ARGS)

# The harness is bench/ (`python -m bench` from here), a tool outside the installed packages.
bench: $(STAMP)
	$(BIN)/python -m bench

# ruff also reports a file that does not parse, so no separate byte-compile step is needed.
# The import-linter contracts are in pyproject.toml; --no-cache leaves no cache folder behind.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache --no-logo

clean:
	rm -rf instance/ .pytest_cache test-artifacts
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
