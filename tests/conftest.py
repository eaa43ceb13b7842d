"""Shared fixtures, all in one place: generated data, the committed model, one trained model.

Layers: ``make test-fast`` runs every test not marked ``slow`` (no training, no Spark, no
subprocess servers); tests that train a model, start Spark or run servers and CLIs as
processes are marked ``slow`` (a test that asks for the trained model without the
marker is refused at collection, so the fast layer stays fast).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import settings

from stepdown_ml.core import config
from stepdown_ml.core.schema import CANDIDATE_COLUMNS
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.serving import Model
from stepdown_ml.training.train import load_params, run_training

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# CI runs the property tests with a fixed seed, so a run is reproducible; locally they
# explore new examples each time.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# Subprocesses (CLI, mlflow run) must use this interpreter's environment.
os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def vocab():
    return load_vocabulary()


@pytest.fixture(scope="session")
def transitions() -> pd.DataFrame:
    return generate_transitions(6_000, seed=101)


@pytest.fixture(scope="session")
def candidates(transitions) -> pd.DataFrame:
    return transitions[[c.name for c in CANDIDATE_COLUMNS]].reset_index(drop=True)


@pytest.fixture(scope="session")
def training_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.csv"
    write_csv(generate_transitions(20_000, seed=202), path)
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory, training_csv, vocab):
    """A model trained by the real pipeline on 20k generated rows (no MLflow)."""
    model_dir = tmp_path_factory.mktemp("model") / "m"
    return run_training(training_csv, model_dir, load_params(config.TRAIN_PARAMS_PATH), vocab)


@pytest.fixture(scope="session")
def model_dir(trained) -> Path:
    return trained.model_dir


@pytest.fixture(scope="session")
def model(model_dir) -> Model:
    """The model trained for this session, loaded for serving."""
    return Model(model_dir)


@pytest.fixture(scope="session")
def served_model_dir() -> Path:
    """The committed default model: what ``predict()`` serves out of the box."""
    return config.PACKAGED_MODEL_DIR


@pytest.fixture(scope="session")
def served_model(served_model_dir) -> Model:
    return Model(served_model_dir)


# Fixtures that train a model: only slow tests may use them.
TRAINING_FIXTURES = {"trained", "model_dir", "model", "training_csv"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        uses = TRAINING_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(f"{item.nodeid} trains a model ({', '.join(sorted(uses))}): mark it slow")


def candidate_record(**changes) -> dict:
    """A valid candidate as a dict of text values, with ``changes`` applied."""
    record = {
        "candidate_id": "c-1",
        "motive": "career_change",
        "necessity_avoidable": "",
        "current_level": "6",
        "target_level": "4",
        "current_function": "finance",
        "target_function": "data",
        "current_industry": "software",
        "target_industry": "software",
        "same_employer": "0",
        "current_skills": "excel;sql;financial_modeling;statistics",
        "target_skills": "sql;statistics;machine_learning;python;communication",
        "years_experience": "12.5",
        "performance_rating": "4",
        "fit_score": "3",
        "promotion_path": "1",
        "unemployment_rate": "5.5",
        "months_unemployed": "0",
        "age_band": "35-44",
        "region": "EU",
    }
    record.update(changes)
    return record
