"""End to end: `mlflow run`, the champion gates, the registered pyfunc, `mlflow models serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from stepdown_ml import predict
from stepdown_ml.core import config
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.mlops.tracking import tracked_training
from stepdown_ml.training.train import load_params
from tests.conftest import ROOT, candidate_record

pytestmark = pytest.mark.slow
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A private SQLite tracking store and artifact folder for this module."""
    home = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "e2e"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("e2e", artifact_location=str(home / "artifacts"))
    mlflow.set_experiment("e2e")
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e-data") / "small.csv"
    # Large enough for the model to pass the oracle gate (a gap of at most 0.01 AUC).
    write_csv(generate_transitions(40_000, seed=55), path)
    return path


@pytest.fixture(scope="module")
def champion(tracking, small_csv, vocab, tmp_path_factory):
    """A model trained and registered in-process; it becomes @champion."""
    os.environ.pop("MLFLOW_RUN_ID", None)
    model_dir = tmp_path_factory.mktemp("champion") / "m"
    params = load_params(config.TRAIN_PARAMS_PATH)
    result, outcome = tracked_training(small_csv, model_dir, params, vocab)
    return result, outcome


def test_first_model_becomes_champion(champion):
    _, outcome = champion
    assert outcome.promoted, outcome.checks
    alias = MlflowClient().get_model_version_by_alias(config.REGISTERED_MODEL_NAME, config.CHAMPION_ALIAS)
    assert str(alias.version) == outcome.version


def test_a_deliberately_worse_model_does_not_become_champion(champion, small_csv, vocab, tmp_path):
    _, first = champion
    params = load_params(config.TRAIN_PARAMS_PATH)
    params["model"].update(max_iter=2, max_leaf_nodes=2, early_stopping=False)
    _, outcome = tracked_training(small_csv, tmp_path / "worse", params, vocab)
    assert not outcome.promoted
    assert not outcome.checks["beats_logistic_baseline"]["passed"]
    assert not outcome.checks["not_worse_than_champion"]["passed"]
    alias = MlflowClient().get_model_version_by_alias(config.REGISTERED_MODEL_NAME, config.CHAMPION_ALIAS)
    assert str(alias.version) == first.version


def test_run_logs_what_users_need(champion):
    """The champion's own run (by its id, whatever other tests ran before) holds what users need."""
    result, outcome = champion
    data = MlflowClient().get_run(outcome.run_id).data
    assert data.tags["data_sha256"] == result.manifest["data_sha256"]
    assert "test.roc_auc" in data.metrics and "oracle_gap.roc_auc" in data.metrics
    artifacts = {a.path for a in MlflowClient().list_artifacts(outcome.run_id)}
    assert {"MODEL_CARD.md", "manifest.json", "plots", "gates.json"} <= artifacts


def test_registered_pyfunc_returns_the_scores_layout(champion, candidates):
    result, _ = champion
    uri = f"models:/{config.REGISTERED_MODEL_NAME}@{config.CHAMPION_ALIAS}"
    pyfunc = mlflow.pyfunc.load_model(uri)
    rows = candidates.head(20)
    out = pyfunc.predict(rows)
    expected = predict(rows, model=result.model_dir)
    assert list(out.columns) == list(expected.columns)
    np.testing.assert_allclose(out["p_advance"], expected["p_advance"], atol=1e-12)
    assert list(out["recommendation"]) == list(expected["recommendation"])
    # predict() resolves the same URI itself.
    assert predict(rows.iloc[0].to_dict(), model=uri)["p_advance"] == pytest.approx(out["p_advance"][0])


def test_mlflow_run_train_entry_point(tracking, small_csv, tmp_path):
    model_dir = tmp_path / "from-mlflow-run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_RUN", "MLFLOW_EXPERIMENT"))}
    completed = subprocess.run(
        [
            MLFLOW,
            "run",
            str(ROOT),
            "-e",
            "train",
            "--env-manager",
            "local",
            "--experiment-name",
            "e2e",
            "-P",
            f"data={small_csv}",
            "-P",
            f"model_dir={model_dir}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (model_dir / "model.onnx").is_file() and (model_dir / "manifest.json").is_file()
    assert "registered stepdown-advancement" in completed.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_with_recommendations(champion, tmp_path):
    port = free_port()
    uri = f"models:/{config.REGISTERED_MODEL_NAME}@{config.CHAMPION_ALIAS}"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [MLFLOW, "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=dict(os.environ),
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
        records = [
            candidate_record(candidate_id="http-1"),
            candidate_record(candidate_id="http-2", fit_score="5"),
        ]
        frame = pd.DataFrame(records)
        for column in (
            "current_level",
            "target_level",
            "same_employer",
            "performance_rating",
            "fit_score",
            "promotion_path",
        ):
            frame[column] = frame[column].astype(int)
        for column in ("years_experience", "unemployment_rate", "months_unemployed"):
            frame[column] = frame[column].astype(float)
        frame["necessity_avoidable"] = np.nan
        body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        rows = payload["predictions"]
        assert [r["candidate_id"] for r in rows] == ["http-1", "http-2"]
        assert all(
            r["recommendation"] in {"take_step_down", "target_lateral", "aim_higher", "reconsider"}
            for r in rows
        )
        assert all(0 < r["p_advance"] < 1 and r["reasons"] for r in rows)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
