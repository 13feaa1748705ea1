# The README's two commands: `make demo` and `make test`. Each creates .venv if missing and
# installs what it needs, so both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo demo-data fixtures test lint typecheck pytest bench clean browser containers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
# The demo writes Azure ML specs too, so it needs the azure extra (not pyspark).
$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[azure]"
	touch $@

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e ".[azure,spark,dev]"
	touch $@ $(VENV)/.demo

demo: $(VENV)/.demo
	$(BIN)/lifecycle demo

# The demo's shipped Designer/AutoML sample artifacts (lifecycle/cli/demo-data/), rebuilt
# with the test suite's origin builders.
demo-data: $(VENV)/.all
	$(BIN)/python tests/support/make_demo_data.py

# Real Designer and AutoML artifacts made by Microsoft's own packages (tests/fixtures/real/):
# builds the pinned environments once (cached by recipe hash under
# ~/.cache/mlflow-lifecycle/fixture-envs, ~1.3 GB and 1-3 min each), then the fixtures.
fixtures: $(VENV)/.all
	$(BIN)/python -m tests.support.real.build

lint: $(VENV)/.all
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(VENV)/.all
	$(BIN)/mypy

pytest: $(VENV)/.all
	@command -v java >/dev/null 2>&1 || echo "NOTE: no 'java' on PATH: the Spark tests need Java 17 (apt-get install openjdk-17-jre-headless)"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The monitoring report's render test uses headless Chromium (Debian package); without it
# that test checks the report's structure only.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq >/dev/null 2>&1 \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } \
	  || echo "NOTE: chromium is not installed: the report render test checks structure only"

# The packaging test builds and runs an image: buildah and podman (runc for sandboxes whose
# cgroups crun refuses) and debootstrap for a base image made here (no image registry).
containers:
	@{ command -v podman >/dev/null 2>&1 && command -v buildah >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
	  && command -v debootstrap >/dev/null 2>&1; } || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq >/dev/null 2>&1 \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc debootstrap >/dev/null 2>&1; } \
	  || echo "NOTE: buildah/podman/debootstrap are not installed: the image test is skipped (it says why)"

test: lint typecheck browser containers pytest

# Benchmarks against MLflow's own tools, side by side (minutes; not part of `make test`).
EXPORT_IMPORT_VENV ?= /tmp/mlflow-export-import-venv
bench: $(VENV)/.all
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m bench.bench_serve
	$(BIN)/python -m bench.bench_v2
	$(BIN)/python -m bench.bench_image
	[ -x $(EXPORT_IMPORT_VENV)/bin/copy-model-version ] || { $(PYTHON) -m venv $(EXPORT_IMPORT_VENV) \
	  && $(EXPORT_IMPORT_VENV)/bin/pip install --quiet mlflow-export-import-v2; }
	$(BIN)/python -m bench.bench_promote --mb 50 --export-import-bin $(EXPORT_IMPORT_VENV)/bin
	$(BIN)/python -m bench.bench_batch --rows 1000000 5000000 --models logreg rf
	$(BIN)/python -m bench.bench_budget --rows 5000000 10000000 --models logreg rf

clean:
	rm -rf $(VENV) .lifecycle .pytest_cache .mypy_cache .ruff_cache
