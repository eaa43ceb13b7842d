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
from stepdown_ml.training.train import fit, load_params
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


@pytest.fixture(scope="module")
def interacting(trained, vocab) -> HistGradientBoostingClassifier:
    """The session's model trained again with trees that combine features."""
    params = {**load_params()["model"], "interaction_cst": None, "max_iter": 30}
    x = trained.pipeline.named_steps["features"].transform(trained.splits.train)
    return fit(x, trained.splits.train[LABEL].to_numpy(dtype=int), vocab, params).named_steps["classifier"]


@pytest.fixture(scope="module")
def interacting_onnx(trained, interacting) -> onnx.ModelProto:
    x = trained.pipeline.named_steps["features"].transform(trained.splits.train.head(5_000))
    return export.to_onnx(interacting, reference=x, refine_depth=2)


@pytest.fixture(scope="module", params=["additive", "interacting"])
def exported(request, classifier, onnx_model, interacting, interacting_onnx):
    """Each form of the export with its classifier: additive steps (the default), refined trees."""
    if request.param == "additive":
        return classifier, onnx_model
    return interacting, interacting_onnx


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


def test_parity_on_test_split_and_edge_cases(trained, exported, vocab):
    """Every probability within 1e-5 of scikit-learn, no label flips at the threshold."""
    classifier, onnx_model = exported
    features = trained.pipeline.named_steps["features"].transform(trained.splits.test)
    x = np.vstack([features, edge_cases(vocab)])
    report = export.check_parity(onnx_model, classifier, x, trained.manifest["threshold"])
    assert report["rows"] == len(x)
    assert report["max_abs_diff_classifier"] <= 1e-5
    assert report["max_abs_diff_contributions"] <= 1e-5
    assert report["label_flips"] == 0


def test_serving_graph_of_an_interacting_model_is_the_contributions_ensemble_alone(interacting_onnx):
    lean = export.serving_graph(interacting_onnx)
    assert [n.name for n in lean.graph.node] == ["group_contributions"]
    assert [o.name for o in lean.graph.output] == [export.CONTRIBUTIONS]
    assert export.contributions_form(interacting_onnx)["form"] == "refined trees"


def test_serving_graph_of_the_additive_model_walks_no_tree(onnx_model, classifier):
    assert all(
        len(np.unique(p[0].nodes[p[0].nodes["is_leaf"] == 0]["feature_idx"])) <= 1
        for p in classifier._predictors
    )
    form = export.contributions_form(onnx_model)
    assert form["form"] == "additive steps" and form["steps"] > 0
    lean = export.serving_graph(onnx_model)
    ops = [n.op_type for n in lean.graph.node]
    assert "MatMul" in ops and not any(op.startswith("TreeEnsemble") for op in ops)
    assert [o.name for o in lean.graph.output] == [export.CONTRIBUTIONS]
    used = {name for n in lean.graph.node for name in n.input}
    assert {t.name for t in lean.graph.initializer} <= used
    # The full export keeps skl2onnx's classifier beside the steps.
    assert any(n.op_type == "TreeEnsembleClassifier" for n in onnx_model.graph.node)


def test_contributions_sum_to_the_log_odds(exported, trained):
    classifier, onnx_model = exported
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
