"""The committed default model: complete, consistent with its manifest, reproducible."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from stepdown_ml.core import config
from stepdown_ml.core.modeldir import (
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    ONNX_FILE,
    SERVING_ONNX_FILE,
    ModelDirError,
    library_versions,
    read_manifest,
    sha256_file,
)
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, names
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.serving import Model, predict
from stepdown_ml.training.train import load_params, run_training

DEFAULT = config.PACKAGED_MODEL_DIR


def test_manifest_hash_matches_the_onnx_file():
    manifest = read_manifest(DEFAULT)
    assert manifest["onnx_sha256"] == sha256_file(DEFAULT / ONNX_FILE)
    assert manifest["serving_onnx_sha256"] == sha256_file(DEFAULT / SERVING_ONNX_FILE)
    assert (DEFAULT / "MODEL_CARD.md").read_text().startswith("# Model card")


@pytest.mark.parametrize("tampered", [ONNX_FILE, SERVING_ONNX_FILE])
def test_a_tampered_model_is_refused(tmp_path, tampered):
    for name in (ONNX_FILE, SERVING_ONNX_FILE, MANIFEST_FILE, "skills_vocabulary.json"):
        (tmp_path / name).write_bytes((DEFAULT / name).read_bytes())
    (tmp_path / tampered).write_bytes((DEFAULT / tampered).read_bytes() + b"\0")
    with pytest.raises(ModelDirError, match="does not match the manifest"):
        Model(tmp_path)


def test_default_model_meets_the_quality_gates():
    metrics = read_manifest(DEFAULT)["metrics"]
    assert metrics["oracle_gap"]["roc_auc"] <= 0.01
    assert metrics["test"]["roc_auc"] > metrics["baselines"]["logistic_regression"]["roc_auc"]
    assert metrics["onnx_parity"]["label_flips"] == 0


@pytest.mark.slow
def test_make_default_model_reproduces_the_committed_model(tmp_path, vocab):
    """`make default-model` (60k rows, seed 2026) rebuilds the committed model.

    With the library versions that built it: the same ONNX bytes. With others (a newer
    scikit-learn may bin or split differently): the same test AUC within 0.005 and the
    same p_advance within 0.01 on average on 2,000 fresh candidates.
    """
    manifest = json.loads((DEFAULT / MANIFEST_FILE).read_text())
    data = tmp_path / "default_training.csv"
    write_csv(generate_transitions(60_000, 2026), data)
    result = run_training(data, tmp_path / "m", load_params(config.TRAIN_PARAMS_PATH), vocab)
    same_libraries = manifest["library_versions"] == {
        **library_versions(),
        "stepdown_ml": manifest["library_versions"]["stepdown_ml"],
    }
    if same_libraries:
        assert result.manifest["onnx_sha256"] == manifest["onnx_sha256"]
    assert abs(result.metrics["test"]["roc_auc"] - manifest["metrics"]["test"]["roc_auc"]) <= 0.005
    fresh = generate_transitions(2_000, seed=77)[names(CANDIDATE_COLUMNS)]
    committed = predict(fresh, model=Model(DEFAULT))["p_advance"].to_numpy()
    rebuilt = predict(fresh, model=Model(result.model_dir))["p_advance"].to_numpy()
    assert np.abs(committed - rebuilt).mean() <= 0.01


def test_model_card_names_only_files_that_ship_with_it():
    """Every file name in the committed model card is a file of the model directory."""
    assert_card_names_only_its_own_files(DEFAULT)


def assert_card_names_only_its_own_files(model_dir) -> None:
    card = (model_dir / MODEL_CARD_FILE).read_text(encoding="utf-8")
    named = set(re.findall(r"[\w./-]+\.(?:onnx|json|md|csv|gz|parquet|yaml|py|txt)\b", card))
    assert named, "the card names its files"
    assert all("/" not in name and (model_dir / name).is_file() for name in named), named
