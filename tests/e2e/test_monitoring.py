"""Monitoring end to end: the profile a training run writes, Spark against the single process,
and the MLflow monitoring run (a temporary SQLite store)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from stepdown_ml.cli import main
from stepdown_ml.core import config
from stepdown_ml.core.modeldir import (
    REFERENCE_PROFILE_FILE,
    REFERENCE_PROFILE_KEY,
    read_manifest,
    sha256_file,
)
from stepdown_ml.core.monitoring import drift_report, load_reference
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, names
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import Shift, generate_transitions

pytestmark = pytest.mark.slow
DEFAULT = config.PACKAGED_MODEL_DIR


def test_training_writes_the_reference_profile_under_the_manifest_hash(trained):
    manifest = read_manifest(trained.model_dir)
    assert manifest[REFERENCE_PROFILE_KEY] == sha256_file(trained.model_dir / REFERENCE_PROFILE_FILE)
    profile = load_reference(trained.model_dir)
    assert profile.counts.scored == len(trained.splits.train)
    assert profile.counts.recommendations.sum() == len(trained.splits.train)
    assert profile.performance["test_roc_auc"] == trained.metrics["test"]["roc_auc"]
    assert (
        abs(
            profile.performance["training_positive_rate"] - trained.splits.train["advanced_within_36m"].mean()
        )
        < 1e-12
    )


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    from stepdown_ml.serving.spark import spark_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        spark_session("local[2]")
        .builder.config("spark.ui.enabled", "false")
        .config("spark.sql.files.maxPartitionBytes", "65536")  # several tasks, several partial profiles
        .getOrCreate()
    )
    yield session
    session.stop()


def _numbers(report: dict) -> dict:
    """The report without what differs by engine (its input name) or by summation order."""
    kept = {k: v for k, v in report.items() if k not in ("input", "expected_outcomes")}
    outcomes = report["expected_outcomes"]
    kept["expected"] = [
        round(outcomes[k], 9) for k in ("expected_positive_rate", "estimated_roc_auc", "sampling_error")
    ]
    kept["p_advance"] = {k: v for k, v in report["p_advance"].items() if "mean" not in k}
    return kept


def test_spark_and_the_single_process_report_the_same(spark, messy_csv, tmp_path):
    from stepdown_ml.serving.spark import score_spark

    args = ["score", str(messy_csv), "--model-dir", str(DEFAULT)]
    assert main([*args, "--out", str(tmp_path / "s.csv"), "--report", str(tmp_path / "local.json")]) == 0
    local = json.loads((tmp_path / "local.json").read_text())
    result = score_spark(spark, str(messy_csv), DEFAULT, reference=load_reference(DEFAULT))
    try:
        assert result.profile is not None
        remote = json.loads(json.dumps(drift_report(load_reference(DEFAULT), result.profile, str(messy_csv))))
    finally:
        result.unpersist()
    assert local["rows"] == remote["rows"] == {"read": 1202, "scored": 1197, "rejected": 5}
    assert _numbers(local) == _numbers(remote)
    assert local["data_quality"]["problems_by_column"] == {
        "(row)": 2,
        "fit_score": 1,
        "region": 1,
        "target_level": 1,
    }


@pytest.mark.parametrize("ranked", [True, False], ids=["cached-pass", "one-pass"])
def test_cli_spark_engine_writes_the_single_process_report(messy_csv, messy_unranked_csv, tmp_path, ranked):
    """Both Spark writers (the cached pass for ranking, the one pass otherwise) count as the CLI does."""
    source = messy_csv if ranked else messy_unranked_csv
    report = tmp_path / "r.json"
    code = main(
        ["score", str(source), "--engine", "spark", "--master", "local[2]", "--out", str(tmp_path / "o")]
        + ["--model-dir", str(DEFAULT), "--report", str(report)]
    )
    assert code == 0
    remote = json.loads(report.read_text())
    assert remote["rows"]["scored"] == 1197 and (tmp_path / "r.html").exists()
    args = ["score", str(source), "--model-dir", str(DEFAULT), "--out", str(tmp_path / "s.csv")]
    assert main([*args, "--report", str(tmp_path / "local.json")]) == 0
    assert _numbers(json.loads((tmp_path / "local.json").read_text())) == _numbers(remote)


def test_drift_over_batches_is_one_mlflow_run(tmp_path, monkeypatch, capsys):
    """Each --track report is the next step of the model version's monitoring run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from stepdown_ml.mlops.tracking import MONITORING_EXPERIMENT, input_example, log_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    version = read_manifest(DEFAULT)["model_version"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("training")  # not an experiment id another test left active
    with mlflow.start_run() as training:  # the packaged model, registered as training registers it
        mlflow.set_tag("model_version", version)
        example = input_example(generate_transitions(5, seed=1))
        info = log_model(DEFAULT, example, config.REGISTERED_MODEL_NAME)
    for step, points in enumerate((0.0, 4.0)):
        src = tmp_path / f"batch{step}.csv"
        frame = generate_transitions(2_000, seed=50 + step, shift=Shift(unemployment_points=points))
        write_csv(frame[names(CANDIDATE_COLUMNS)], src)
        out = ["--out", str(tmp_path / f"s{step}.csv"), "--report", str(tmp_path / f"r{step}.json")]
        assert main(["score", str(src), "--model-dir", str(DEFAULT), *out, "--track"]) == 0
        assert f"as batch {step} of MLflow run" in capsys.readouterr().err
    client = MlflowClient()
    experiment = client.get_experiment_by_name(MONITORING_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["model_version"] == version
    assert run.data.tags["registered_version"] == str(info.registered_model_version)
    assert run.data.tags["training_run_id"] == training.info.run_id
    history = client.get_metric_history(run.info.run_id, "psi.feature.unemployment_rate")
    assert [m.step for m in history] == [0, 1]
    assert history[0].value < 0.2 <= history[1].value
    assert np.isclose(
        client.get_metric_history(run.info.run_id, "psi.feature.unemployment_rate")[1].value,
        json.loads((tmp_path / "r1.json").read_text())["features"][0]["psi"],
    )
