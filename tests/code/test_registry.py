"""Unit tests: model URIs resolve the same way everywhere, with one-line errors and no side effects."""

from __future__ import annotations

import pytest

from stepdown_ml import cli, predict
from stepdown_ml.core.modeldir import ModelDirError
from stepdown_ml.serving.registry import ModelURIError, local_model_dir, store_path
from tests.conftest import candidate_record

CHAMPION = "models:/stepdown-advancement@champion"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder outside the project, with no tracking URI set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    (tmp_path / "in.csv").write_text("candidate_id\nc1\n")
    return tmp_path


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["score", "in.csv", "--out", "s.csv", "--model-uri", CHAMPION],
        ["evaluate", "--data", "in.csv", "--model-uri", CHAMPION],
        ["serve", "--port", "0", "--model-uri", CHAMPION],
    ],
)
def test_a_missing_store_is_one_line_exit_2_and_creates_nothing(elsewhere, capsys, argv):
    assert cli.main(argv) == 2
    line = _one_error_line(capsys)
    assert "tracking URI sqlite:///mlflow.db" in line and "no MLflow store" in line
    assert sorted(p.name for p in elsewhere.iterdir()) == ["in.csv"]


def test_predict_raises_the_same_error(elsewhere):
    with pytest.raises(ModelURIError, match="no MLflow store") as caught:
        predict(candidate_record(), model=CHAMPION)
    assert isinstance(caught.value, ModelDirError)
    assert not (elsewhere / "mlflow.db").exists()


def test_a_file_store_that_does_not_exist_is_refused(elsewhere, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{elsewhere / 'mlruns'}")
    with pytest.raises(ModelURIError, match="no MLflow store"):
        local_model_dir("runs:/0123/model")
    assert not (elsewhere / "mlruns").exists()


def test_store_paths():
    assert str(store_path("sqlite:///mlflow.db")) == "mlflow.db"
    assert str(store_path("sqlite:////abs/m.db")) == "/abs/m.db"
    assert str(store_path("file:///tmp/mlruns")) == "/tmp/mlruns"
    assert str(store_path("./mlruns")) == "mlruns"
    assert store_path("http://127.0.0.1:5000") is None
    assert store_path("databricks") is None


def test_a_directory_is_not_a_uri(tmp_path):
    assert local_model_dir(tmp_path) == tmp_path


@pytest.mark.slow
def test_unknown_model_alias_and_run_are_one_line_naming_the_store(elsewhere, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{elsewhere / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    MlflowClient(uri).create_registered_model("stepdown-advancement")
    capsys.readouterr()  # MLflow's own messages while creating the store
    for model_uri, says in (
        (CHAMPION, "alias champion not found"),
        ("models:/no-such-model@champion", "no-such-model"),
        ("models:/stepdown-advancement/7", "not found"),
        ("runs:/0123456789abcdef/model", "0123456789abcdef"),
    ):
        assert cli.main(["score", "in.csv", "--out", "s.csv", "--model-uri", model_uri]) == 2
        line = _one_error_line(capsys)
        assert model_uri in line and f"tracking URI {uri}" in line, line
        assert says.lower() in line.lower(), line
    assert not (elsewhere / "s.csv").exists() and not (elsewhere / "mlflow.db").exists()
