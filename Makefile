# The two commands that work on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv installs into this venv (not one of its own), with every package's hash checked
# against uv.lock; --inexact keeps pip and uv themselves.
UV_SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --inexact --all-groups

.PHONY: install lock run test lint typecheck check bench clean

$(STAMP): pyproject.toml uv.lock requirements/uv.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/uv.txt
	$(UV_SYNC) --quiet
	touch $(STAMP)

lock: $(STAMP)  ## regenerate uv.lock after a change to pyproject.toml's dependencies
	$(BIN)/uv lock
	$(UV_SYNC) --quiet

run: $(STAMP)  ## the daemon on embedded defaults: SQLite, in-memory cache, offline provider
	$(BIN)/concierge run

test: $(STAMP)  ## the whole suite; needs PostgreSQL and Redis on 127.0.0.1
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/uv lock --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

install: $(STAMP)
