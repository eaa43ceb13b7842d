"""Unit tests: ONNX export of a real trained model, parity with scikit-learn."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from stepdown_ml.core.features import GROUP_NAMES, N_FEATURES, FeatureSpace
from stepdown_ml.core.modeldir import ONNX_FILE, SERVING_ONNX_FILE, read_manifest, sha256_file
from stepdown_ml.core.schema import LABEL
from stepdown_ml.core.validation import validate_frame
from stepdown_ml.training import export
from tests.code.test_default_model import assert_card_names_only_its_own_files
from tests.conftest import candidate_record

pytestmark = pytest.mark.slow  # exports the model trained for this session


@pytest.fixture(scope="module")
def classifier(trained) -> HistGradientBoostingClassifier:
    return trained.pipeline.named_steps["classifier"]


@pytest.fixture(scope="module")
def onnx_model(classifier) -> onnx.ModelProto:
    # Converting a real model also guards against the skl2onnx + protobuf 7 breakage.
    return export.to_onnx(classifier)


def edge_cases(vocab) -> np.ndarray:
    records = [
        candidate_record(motive="broaden_horizons", necessity_avoidable=""),
        candidate_record(
            motive="necessity", necessity_avoidable="1", unemployment_rate="30", months_unemployed="120"
        ),
        candidate_record(current_level="10", target_level="1", years_experience="50", fit_score="1"),
        candidate_record(current_level="1", target_level="1", years_experience="0", performance_rating="5"),
        candidate_record(current_skills="unseen_a;unseen_b", target_skills="unseen_b;never_seen_c"),
        candidate_record(current_skills="", target_skills=""),
        candidate_record(unemployment_rate="0", age_band="65+", region="MEA"),
    ]
    values = validate_frame(pd.DataFrame(records, dtype=object)).values
    return FeatureSpace(vocab).transform(values)


def test_checker_passes_with_full_check(onnx_model):
    onnx.checker.check_model(onnx_model, full_check=True)
    opsets = {o.domain: o.version for o in onnx_model.opset_import}
    assert opsets[""] == export.ONNX_OPSET and opsets["ai.onnx.ml"] == export.ONNX_ML_OPSET


def test_parity_on_test_split_and_edge_cases(trained, classifier, onnx_model, vocab):
    """Every probability within 1e-5 of scikit-learn, no label flips at the threshold."""
    features = trained.pipeline.named_steps["features"].transform(trained.splits.test)
    x = np.vstack([features, edge_cases(vocab)])
    report = export.check_parity(onnx_model, classifier, x, trained.manifest["threshold"])
    assert report["rows"] == len(x)
    assert report["max_abs_diff_classifier"] <= 1e-5
    assert report["max_abs_diff_contributions"] <= 1e-5
    assert report["label_flips"] == 0


def test_serving_graph_is_the_contributions_ensemble_alone(onnx_model):
    lean = export.serving_graph(onnx_model)
    assert [n.name for n in lean.graph.node] == ["group_contributions"]
    assert [o.name for o in lean.graph.output] == [export.CONTRIBUTIONS]


def test_contributions_sum_to_the_log_odds(classifier, onnx_model, trained):
    x = trained.pipeline.named_steps["features"].transform(trained.splits.test.head(300))
    out = export.onnx_outputs(onnx_model, x)
    assert out[export.CONTRIBUTIONS].shape == (300, len(GROUP_NAMES))
    log_odds = classifier.decision_function(x)
    rebuilt = export.contribution_bias(onnx_model) + out[export.CONTRIBUTIONS].sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(rebuilt, log_odds, atol=1e-4)


def test_parity_check_catches_a_different_model(classifier, onnx_model, trained):
    """The parity check can fail: a model trained differently disagrees."""
    x = trained.pipeline.named_steps["features"].transform(trained.splits.test.head(300))
    other = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(
        trained.pipeline.named_steps["features"].transform(trained.splits.train.head(2000)),
        trained.splits.train.head(2000)[LABEL],
    )
    with pytest.raises(export.ExportParityError):
        export.check_parity(onnx_model, other, x, 0.5)


def test_native_categorical_splits_are_refused():
    rng = np.random.default_rng(0)
    x = np.c_[rng.integers(0, 3, 300), rng.random((300, N_FEATURES - 1))].astype(np.float32)
    y = (x[:, 0] == 1).astype(int)
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(x, y)
    with pytest.raises(ValueError, match="one-hot"):
        export.to_onnx(model)


def test_model_dir_manifest_matches_files(model_dir):
    manifest = read_manifest(model_dir)
    assert manifest["onnx_sha256"] == sha256_file(model_dir / ONNX_FILE)
    assert manifest["serving_onnx_sha256"] == sha256_file(model_dir / SERVING_ONNX_FILE)
    assert len(manifest["model_version"]) == 12
    assert manifest["features"] and manifest["threshold"] > 0
    assert {"scikit-learn", "onnxruntime", "skl2onnx"} <= set(manifest["library_versions"])


def test_trained_model_card_names_only_files_that_ship_with_it(model_dir):
    assert_card_names_only_its_own_files(model_dir)
