# The README's commands are these targets. Each creates .venv and installs the project
# from its own files first, so they work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYCANON_VERSION := 1.3.6
# `mlflow run --env-manager local` runs entry points with the `python` on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup run serve serve-mlflow test test-fast soak lint typecheck java format default-model benchmark loadtest clean

CODE := src tests pipelines benchmarks

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,spark]"
	# pycanon checks the anonymizer in the tests only. --no-deps: it pins exact numpy, pandas,
	# scipy and typing_extensions versions; its anonymity module needs only numpy and pandas.
	$(BIN)/python -m pip install --quiet --no-deps "pycanon==$(PYCANON_VERSION)"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project with its dev and Spark extras

# Main job on the embedded defaults: generate -> train -> evaluate -> register in MLflow
# (SQLite store ./mlflow.db unless MLFLOW_TRACKING_URI is set).
run: setup  ## the main job on the embedded defaults (mlflow run . -e main)
	$(BIN)/mlflow run . -e main --env-manager local

# The HTTP service on the packaged default model (loopback; SERVE_ARGS="--port 9000 --workers 4").
SERVE_ARGS ?=
serve: setup  ## the HTTP scoring service on 127.0.0.1:8080 (POST /predict, GET /health)
	$(BIN)/stepdown-ml serve $(SERVE_ARGS)

# MLflow's own server for the registered champion (after `make run`). PATH holds .venv/bin
# (exported above): `mlflow models serve` starts `uvicorn` from PATH.
serve-mlflow: setup  ## mlflow models serve of models:/stepdown-advancement@champion on 127.0.0.1:5001
	$(BIN)/mlflow models serve -m models:/stepdown-advancement@champion --env-manager local -h 127.0.0.1 -p 5001

test: lint typecheck java  ## what CI runs: lint, layering, types, then the whole suite
	$(BIN)/pytest

# The Spark tests (local[2], a standalone cluster, Spark Connect) need a Java 17+ runtime.
java:  ## check that a Java 17+ runtime is on PATH (the Spark tests need one)
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	[ "$${v:-0}" -ge 17 ] || { echo "make test needs Java 17+ on PATH for the Spark tests: apt-get install openjdk-17-jre-headless"; exit 1; }

test-fast: setup  ## the unit layer in under a minute: no training, no Spark, no servers
	$(BIN)/pytest -m "not slow" -q

# The fuzz and fault suite at length: a fresh seed each run (printed; rerun one with
# STEPDOWN_FUZZ_SEED=N), SIGKILL at random moments included.
SOAK_CASES ?= 2000
soak: setup  ## the fuzz and fault suite at length (SOAK_CASES hostile files, faults, SIGKILLs)
	STEPDOWN_FUZZ_SEED=$${STEPDOWN_FUZZ_SEED:-$$(date +%s)} STEPDOWN_FUZZ_CASES=$(SOAK_CASES) \
	STEPDOWN_FAULT_CASES=40 STEPDOWN_KILL_CASES=20 $(BIN)/pytest tests/fuzz -q -s -p no:randomly

lint: setup  ## ruff (lint and format check) and the layering contracts (import-linter)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/lint-imports

typecheck: setup  ## mypy on src/
	$(BIN)/mypy

format: setup  ## reformat the code
	$(BIN)/ruff format $(CODE)

# Rebuild the committed default model (src/stepdown_ml/resources/default_model, shipped in the wheel) from generated data.
default-model: setup  ## rebuild the committed default model
	$(BIN)/stepdown-ml generate --rows 60000 --seed 2026 --out data/generated/default_training.csv
	$(BIN)/stepdown-ml train --no-track --data data/generated/default_training.csv --model-dir src/stepdown_ml/resources/default_model

benchmark: setup  ## speed measurements (docs/BENCHMARKS.md)
	$(BIN)/python -m benchmarks.run_all

loadtest: setup  ## HTTP load test: stepdown-ml serve vs mlflow models serve (docs/BENCHMARKS.md)
	$(BIN)/python -m benchmarks.loadtest

clean:  ## remove the environment and generated files
	rm -rf $(VENV) .pytest_cache .ruff_cache mlruns mlflow.db data/generated data/interim
