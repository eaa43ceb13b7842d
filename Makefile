# The README's commands are these targets. Each creates .venv and installs the project
# from its own files first, so they work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `mlflow run --env-manager local` runs entry points with the `python` on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup run test lint format default-model benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,spark]"
	touch $(STAMP)

setup: $(STAMP)

# Main job on the embedded defaults: generate -> train -> evaluate -> register in MLflow
# (SQLite store ./mlflow.db unless MLFLOW_TRACKING_URI is set).
run: setup
	$(BIN)/mlflow run . -e main --env-manager local

test: setup
	$(BIN)/ruff check src tests pipelines benchmarks
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests pipelines benchmarks
	$(BIN)/ruff format --check src tests pipelines benchmarks

format: setup
	$(BIN)/ruff format src tests pipelines benchmarks

# Rebuild the committed default model (models/default) from generated data.
default-model: setup
	$(BIN)/stepdown-ml generate --rows 60000 --seed 2026 --out data/generated/default_training.csv
	$(BIN)/stepdown-ml train --no-track --data data/generated/default_training.csv --model-dir models/default

benchmark: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache mlruns mlflow.db data/generated data/interim
