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
    (thresholds compared in float32, as the ONNX graph compares them)."""
    node = nodes[i]
    if node["is_leaf"]:
        return float(node["value"])
    left, right = int(node["left"]), int(node["right"])
    if int(node["feature_idx"]) in known:
        return _expected(
            nodes, x, known, left if x[node["feature_idx"]] <= np.float32(node["num_threshold"]) else right
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
