"""Exact TreeSHAP of a hand-built tree against Shapley values by enumeration."""

from __future__ import annotations

from itertools import combinations
from math import factorial

import numpy as np
import pytest
from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

from stepdown_ml.training import attribution


def _tree() -> np.ndarray:
    """x0 <= 0.5 ? (x1 <= 0.5 ? 1.0 : (x0 <= 0.2 ? 5.0 : 3.0)) : -2.0, with training counts."""
    rows = [
        # value, count, feature, threshold, left, right, is_leaf
        (0.0, 100, 0, 0.5, 1, 2, 0),
        (0.0, 60, 1, 0.5, 3, 4, 0),
        (-2.0, 40, 0, 0.0, 0, 0, 1),
        (1.0, 20, 0, 0.0, 0, 0, 1),
        (0.0, 40, 0, 0.2, 5, 6, 0),
        (5.0, 10, 0, 0.0, 0, 0, 1),
        (3.0, 30, 0, 0.0, 0, 0, 1),
    ]
    nodes = np.zeros(len(rows), dtype=PREDICTOR_RECORD_DTYPE)
    for i, (value, count, feature, threshold, left, right, leaf) in enumerate(rows):
        nodes[i]["value"], nodes[i]["count"] = value, count
        nodes[i]["feature_idx"], nodes[i]["num_threshold"] = feature, threshold
        nodes[i]["left"], nodes[i]["right"], nodes[i]["is_leaf"] = left, right, leaf
    return nodes


def _expected(nodes: np.ndarray, x: np.ndarray, known: set[int], i: int = 0) -> float:
    """E[f(x) | x_known], following x at known features and the training counts elsewhere
    (a float32 x against the largest float32 at or below each threshold, as the ONNX graph
    compares them: the same answer as scikit-learn's float64 comparison)."""
    node = nodes[i]
    if node["is_leaf"]:
        return float(node["value"])
    left, right = int(node["left"]), int(node["right"])
    if int(node["feature_idx"]) in known:
        return _expected(
            nodes,
            x,
            known,
            left if x[node["feature_idx"]] <= attribution.threshold32(node["num_threshold"]) else right,
        )
    n_left, n_right = float(nodes[left]["count"]), float(nodes[right]["count"])
    return (n_left * _expected(nodes, x, known, left) + n_right * _expected(nodes, x, known, right)) / (
        n_left + n_right
    )


def _shapley(nodes: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            for subset in combinations(others, size):
                known = set(subset)
                out[i] += weight * (_expected(nodes, x, known | {i}) - _expected(nodes, x, known))
    return out


@pytest.mark.parametrize("x", [(0.1, 0.1), (0.1, 0.9), (0.3, 0.9), (0.9, 0.9), (0.5, 0.5), (0.2, 0.6)])
def test_tree_shap_equals_shapley_values_by_enumeration(x):
    nodes = _tree()
    row = np.array([x], dtype=np.float32)
    ours = attribution.tree_shap(attribution.leaf_tables(nodes), row, 2)[0]
    np.testing.assert_allclose(ours, _shapley(nodes, row[0], 2), atol=1e-12)
    # Efficiency: the values add up to f(x) - E[f].
    assert ours.sum() == pytest.approx(_expected(nodes, row[0], {0, 1}) - _expected(nodes, row[0], set()))


def test_folding_small_weights_keeps_the_sum():
    weights = np.array([0.2, -0.001, 0.002, -0.3, 0.0005])
    folded = attribution._sparse(weights, 0.003)
    assert folded.sum() == pytest.approx(weights.sum())
    assert list(np.flatnonzero(folded)) == [0, 3]
    assert folded[0] == 0.2 and folded[3] == pytest.approx(-0.3 + 0.0015)


def _additive(seed: int, interactions: str | None = "no_interactions"):
    """A small classifier on random features, some NaN, with or without interactions."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from stepdown_ml.core.features import N_FEATURES

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3_000, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    y = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 3]) * np.nan_to_num(x[:, 5]) + rng.normal(size=len(x)) > 0
    model = HistGradientBoostingClassifier(
        max_iter=40, max_leaf_nodes=6, interaction_cst=interactions, random_state=seed
    ).fit(x, y.astype(int))
    return model, [p[0].nodes for p in model._predictors], float(model._baseline_prediction.ravel()[0])


def _rows(seed: int) -> np.ndarray:
    from stepdown_ml.core.features import N_FEATURES

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:5] = np.inf
    x[5:10] = -np.inf
    return x


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_additive_steps_are_the_exact_shapley_values_and_sum_to_the_log_odds(seed):
    model, predictors, baseline = _additive(seed)
    steps = attribution.additive_steps(predictors, baseline)
    assert steps is not None and np.isinf(steps.thresholds).any()  # NaN differs from the top somewhere
    x = _rows(seed + 10)
    served = attribution.step_contributions(steps, x).astype(np.float64)
    exact = attribution.by_group(attribution.ensemble_shap(predictors, x))
    # Exact but for the float32 result (and the fine quantum, far below it).
    np.testing.assert_allclose(served, exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(steps.bias + served.sum(axis=1), model.decision_function(x), rtol=0, atol=1e-5)


def test_a_steep_model_still_matches_scikit_learn():
    """A high learning rate, no L2 and leaves of two rows: curves reaching hundreds of log-odds,
    where rounding them to one float32 quantum alone (about 3e-5) broke the export's parity."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from stepdown_ml.core.features import N_FEATURES
    from stepdown_ml.training import export

    rng = np.random.default_rng(8)
    x = rng.normal(size=(3_000, N_FEATURES)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    logit = np.nan_to_num(x[:, 0], nan=1.0) + 2 * np.nan_to_num(x[:, 3]) - np.nan_to_num(x[:, 7]) ** 2
    y = (logit + rng.normal(size=len(x)) > 0).astype(int)
    model = HistGradientBoostingClassifier(
        interaction_cst="no_interactions",
        learning_rate=1.0,
        max_iter=80,
        max_leaf_nodes=31,
        max_depth=3,
        l2_regularization=0.0,
        min_samples_leaf=2,
        random_state=8,
    ).fit(x, y)
    held_out = rng.normal(size=(2_000, N_FEATURES)).astype(np.float32)
    full = export.to_onnx(model)
    report = export.check_parity(full, model, held_out, 0.5)
    assert report["max_abs_diff_contributions"] <= 1e-6
    served = export.onnx_outputs(export.serving_graph(full), held_out)[export.CONTRIBUTIONS]
    log_odds = export.contribution_bias(full) + served.sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(log_odds, model.decision_function(held_out), rtol=1e-6, atol=1e-5)


def test_a_threshold_whose_nearest_float32_lies_above_it_sends_values_as_scikit_learn_does():
    """Two adjacent float32 values in the training data: the split between them is their
    float64 midpoint, whose nearest float32 is the upper value. That value goes right."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from stepdown_ml.core.features import N_FEATURES
    from stepdown_ml.training import export

    rng = np.random.default_rng(0)
    low, high = np.float32(1 + 2**-23), np.float32(1 + 2**-22)
    x = rng.normal(size=(2_000, N_FEATURES)).astype(np.float32)
    x[:, 0] = np.where(rng.random(len(x)) < 0.5, low, high)
    y = ((x[:, 0] == high) ^ (rng.random(len(x)) < 0.2)).astype(int)
    model = HistGradientBoostingClassifier(
        interaction_cst="no_interactions", max_iter=5, max_leaf_nodes=2, random_state=0
    ).fit(x, y)
    threshold = model._predictors[0][0].nodes[0]["num_threshold"]
    assert np.float32(threshold) == high > threshold  # the case: the nearest float32 is above
    rows = np.zeros((2, N_FEATURES), dtype=np.float32)
    rows[:, 0] = (low, high)
    full = export.to_onnx(model)
    served = export.onnx_outputs(export.serving_graph(full), rows)[export.CONTRIBUTIONS]
    log_odds = export.contribution_bias(full) + served.sum(axis=1, dtype=np.float64)
    np.testing.assert_allclose(log_odds, model.decision_function(rows), rtol=0, atol=1e-6)
    # skl2onnx's classifier in model.onnx too, so the export's parity check holds on them.
    classifier = export.onnx_outputs(full, rows)["probabilities"][:, 1]
    np.testing.assert_allclose(classifier, model.predict_proba(rows)[:, 1], rtol=0, atol=1e-6)
    export.check_parity(full, model, rows, 0.5)
    assert attribution.threshold32(threshold) == low
    assert attribution.threshold32(float(threshold)) == low  # a plain float as well


def test_threshold32_at_the_edges_of_float32():
    for value in (0.0, -0.0, 1.5, -2.75, 2.0**-149, -(2.0**-149), np.inf, -np.inf):
        assert attribution.threshold32(value) == np.float32(value)
    assert attribution.threshold32(1e39) == np.finfo(np.float32).max
    assert attribution.threshold32(-1e39) == -np.inf
    assert attribution.threshold32(0.1) == np.nextafter(np.float32(0.1), np.float32(0))  # 0.1f is above 0.1
    assert np.float64(attribution.threshold32(0.2)) < 0.2 < np.float64(np.float32(0.2))


def test_a_tree_that_reads_two_features_has_no_step_form():
    _, predictors, baseline = _additive(4, interactions=None)
    assert any(len(np.unique(p[p["is_leaf"] == 0]["feature_idx"])) > 1 for p in predictors)
    assert attribution.additive_steps(predictors, baseline) is None


def test_step_weights_add_up_exactly_in_float32_in_any_order():
    """Every partial sum of a group's values in either part is a float32 without rounding,
    so onnxruntime's matrix product gives the same bits whatever order it adds them in."""
    _, predictors, baseline = _additive(5)
    steps = attribution.additive_steps(predictors, baseline)
    assert steps is not None and steps.quanta[1] < steps.quanta[0] * 2**-10
    rng = np.random.default_rng(0)
    for part, quantum in enumerate(steps.quanta):
        for group in range(steps.weights.shape[1]):
            values = np.concatenate([steps.weights[part, group], steps.base[part, group : group + 1]])
            values = values[values != 0]
            assert np.all(np.round(values.astype(np.float64) / quantum) * quantum == values)
            for _ in range(20):
                chosen = values[rng.permutation(len(values))][: rng.integers(0, len(values) + 1)]
                total = np.float32(0)
                for value in chosen:
                    total = np.float32(total + value)
                assert total == np.float32(chosen.astype(np.float64).sum())


def test_the_onnx_step_graph_gives_the_exact_sums_in_any_batch():
    """onnxruntime's contributions are the exact sums of the steps (bit for bit), for NaN and
    infinite features too, and a row gets the same bits alone as in batches of any size."""
    from stepdown_ml.core.modeldir import CONTRIBUTIONS
    from stepdown_ml.training import export

    model, predictors, baseline = _additive(6)
    steps = attribution.additive_steps(predictors, baseline)
    assert steps is not None
    full = export.to_onnx(model)
    assert export.contributions_form(full) == {"form": "additive steps", "steps": len(steps.features)}
    lean = export.serving_graph(full)
    x = _rows(7)
    exact = attribution.step_contributions(steps, x)
    assert np.array_equal(export.onnx_outputs(lean, x)[CONTRIBUTIONS], exact)
    for size in (1, 7, 64):
        parts = [
            export.onnx_outputs(lean, x[i : min(i + size, 128)])[CONTRIBUTIONS] for i in range(0, 128, size)
        ]
        assert np.array_equal(np.concatenate(parts), exact[:128])
