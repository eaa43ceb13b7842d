"""Reasons close to exact Shapley values: path-dependent TreeSHAP, folded into the leaves.

Exact TreeSHAP (path-dependent, Lundberg et al. 2020) of a tree gives feature ``i`` of row
``x`` the Shapley value of the game ``v(S) = E[f(x) | x_S]``, where the expectation follows
``x`` at splits on features in ``S`` and the training counts elsewhere. For one leaf ``l``
whose path reads the features ``U`` (each once, conditions on one feature merged):

    v_l(S) = value_l * prod_{j in S} o_j(x) * prod_{j in U \\ S} z_j

``o_j(x)`` is 1 when ``x`` meets every condition on ``j`` along the path, ``z_j`` the share
of the training rows that the path's splits on ``j`` keep. The tree's Shapley values are the
sum over its leaves, and they depend on ``x`` only through the bits ``o(x)`` of every leaf:
:func:`leaf_tables` lists each leaf's values for all ``2 ** |U|`` bit patterns, so
:func:`tree_shap` is a lookup per leaf (exact, checked against the ``shap`` package in the
tests and the benchmark).

For trees that combine features, serving runs one traversal of each tree, which reaches
one leaf, not the bits of the others. :func:`served_tree` therefore stores, at each leaf,
the mean exact TreeSHAP value (per reason group) of the training rows that reach it, after
splitting the leaf a few levels further on the tree's other conditions (the bits that
matter most for those rows). Within a
leaf the Shapley values of every row sum to ``value_l - E[f]``, so the means do too:
``bias + sum`` still equals the model's log-odds exactly, and the extra levels cost a few
comparisons per tree (docs/BENCHMARKS.md, "Reasons against exact TreeSHAP").

The default model is additive (``interaction_cst: no_interactions``): each tree reads one
feature, which is then the tree's only Shapley player. Its exact values need no refinement:
:func:`additive_steps` writes the whole ensemble as step functions of the features, and the
served contributions are the exact TreeSHAP values (docs/BENCHMARKS.md, "An additive model").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from math import factorial
from typing import Any

import numpy as np

from stepdown_ml.core.features import FEATURE_GROUP_INDEX, GROUP_NAMES


def threshold32(threshold: float) -> np.float32:
    """The largest float32 at or below a tree's float64 threshold.

    scikit-learn sends ``x`` left when ``x <= threshold`` in float64. For a float32 ``x``
    that is ``x <= threshold32(threshold)`` exactly; the nearest float32 (what skl2onnx
    writes) can lie above the threshold and send that one value the wrong way.
    """
    exact = np.float64(threshold)  # a plain float would be compared in float32
    with np.errstate(over="ignore"):  # past float32's range: inf, then its largest finite value
        t = np.float32(exact)
        return t if t <= exact else np.nextafter(t, np.float32(-np.inf))


@dataclass
class Leaf:
    """One leaf's path: its features, their conditions, and its Shapley table."""

    node: int
    value: float
    features: np.ndarray  # (m,) feature indices read on the path, each once
    # Per path split: (position in ``features``, float32 threshold, goes left, missing goes left).
    splits: list[tuple[int, np.float32, bool, bool]]
    # (2 ** m, m): the Shapley value of features[k] for the bit pattern p (bit k: o_k).
    table: np.ndarray


def _walk(nodes: np.ndarray) -> Iterator[tuple[int, list[tuple[int, int, bool]]]]:
    """Every leaf with its path: (parent node, child node, went left) from the root."""
    stack: list[tuple[int, list[tuple[int, int, bool]]]] = [(0, [])]
    while stack:
        i, path = stack.pop()
        node = nodes[i]
        if node["is_leaf"]:
            yield i, path
            continue
        stack.append((int(node["right"]), [*path, (i, int(node["right"]), False)]))
        stack.append((int(node["left"]), [*path, (i, int(node["left"]), True)]))


def _shapley_table(value: float, zero: np.ndarray) -> np.ndarray:
    """(2 ** m, m) Shapley values of the leaf game for every pattern of the bits o."""
    m = len(zero)
    # w[s]: the Shapley weight of a coalition of s of the other m - 1 players.
    weights = np.array([factorial(s) * factorial(m - s - 1) / factorial(m) for s in range(m)])
    patterns = (np.arange(2**m)[:, None] >> np.arange(m)) & 1  # (P, m) bits o
    table = np.zeros((2**m, m), dtype=np.float64)
    for k in range(m):
        # Coefficients of prod_{j != k} (z_j + o_j t): entry s sums the coalitions of size s.
        poly = np.zeros((2**m, m), dtype=np.float64)
        poly[:, 0] = 1.0
        for j in range(m):
            if j == k:
                continue
            shifted = np.zeros_like(poly)
            shifted[:, 1:] = poly[:, :-1]
            poly = poly * zero[j] + shifted * patterns[:, j : j + 1]
        table[:, k] = value * (patterns[:, k] - zero[k]) * (poly @ weights)
    return table


def leaf_tables(nodes: np.ndarray) -> list[Leaf]:
    """The leaves of one tree (scikit-learn predictor nodes) with their Shapley tables."""
    leaves = []
    for leaf, path in _walk(nodes):
        features: list[int] = []
        zero: list[float] = []
        splits = []
        for parent, child, left in path:
            feature = int(nodes[parent]["feature_idx"])
            if feature not in features:
                features.append(feature)
                zero.append(1.0)
            k = features.index(feature)
            zero[k] *= float(nodes[child]["count"]) / float(nodes[parent]["count"])
            threshold = threshold32(nodes[parent]["num_threshold"])
            splits.append((k, threshold, left, bool(nodes[parent]["missing_go_to_left"])))
        leaves.append(
            Leaf(
                node=leaf,
                value=float(nodes[leaf]["value"]),
                features=np.array(features, dtype=np.int64),
                splits=splits,
                table=_shapley_table(float(nodes[leaf]["value"]), np.array(zero)),
            )
        )
    return leaves


def _patterns(leaf: Leaf, x: np.ndarray) -> np.ndarray:
    """Each row's bit pattern o(x) for this leaf's path (float32 comparisons, as ONNX)."""
    meets = np.ones((len(x), len(leaf.features)), dtype=bool)
    for k, threshold, left, missing_left in leaf.splits:
        column = x[:, leaf.features[k]]
        below = column <= threshold
        goes_left = np.where(np.isnan(column), missing_left, below)
        meets[:, k] &= goes_left if left else ~goes_left
    return (meets.astype(np.int64) << np.arange(len(leaf.features))).sum(axis=1)


def tree_shap(leaves: list[Leaf], x: np.ndarray, n_features: int) -> np.ndarray:
    """Exact path-dependent TreeSHAP of one tree for float32 rows ``x``: (rows, features)."""
    out = np.zeros((len(x), n_features), dtype=np.float64)
    for leaf in leaves:
        if len(leaf.features) == 0:
            continue
        values = leaf.table[_patterns(leaf, x)]
        out[:, leaf.features] += values
    return out


def ensemble_shap(predictors: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Exact TreeSHAP of a whole ensemble (list of node arrays): (rows, features), log-odds."""
    out = np.zeros((len(x), x.shape[1]), dtype=np.float64)
    for nodes in predictors:
        out += tree_shap(leaf_tables(nodes), x, x.shape[1])
    return out


def by_group(per_feature: np.ndarray) -> np.ndarray:
    """Feature attributions summed per reason group: (rows, groups)."""
    out = np.zeros((len(per_feature), len(GROUP_NAMES)), dtype=np.float64)
    for group in range(len(GROUP_NAMES)):
        out[:, group] = per_feature[:, np.equal(FEATURE_GROUP_INDEX, group)].sum(axis=1)
    return out


@dataclass
class Node:
    """A node of a served attribution tree: a split (feature >= 0) or a leaf (weights)."""

    feature: int = -1
    threshold: float = 0.0  # a float32 value
    missing_left: bool = False
    left: int = -1
    right: int = -1
    weights: np.ndarray | None = None


def _goes_left(x: np.ndarray, feature: int, threshold: float, missing_left: bool) -> np.ndarray:
    column = x[:, feature]
    return np.where(np.isnan(column), missing_left, column <= threshold)


def _sparse(weights: np.ndarray, min_weight: float) -> np.ndarray:
    """``weights`` with those below ``min_weight`` in size moved onto the largest one: the
    same sum, fewer weights for onnxruntime to add up at the leaf."""
    small = np.abs(weights) < min_weight
    if not small.any() or small.all():
        return weights
    out = np.where(small, 0.0, weights)
    out[np.argmax(np.abs(out))] += weights[small].sum()
    return out


def served_tree(
    nodes: np.ndarray,
    saabas: np.ndarray,
    x: np.ndarray | None,
    depth: int,
    min_rows: int,
    min_weight: float = 0.0,
) -> list[Node]:
    """One tree of the served attribution ensemble.

    Without reference rows ``x``: the tree as it is, with the path (Saabas) attribution
    ``saabas`` (nodes, groups) at its leaves. With them: each leaf holds the mean exact
    TreeSHAP values (per group) of the rows of ``x`` that reach it, and is split further, up
    to ``depth`` levels, on the tree's own other conditions (the bits its TreeSHAP values
    depend on), chosen greedily to fit those values; a new leaf keeps at least ``min_rows``
    rows. Group values smaller than ``min_weight`` (log-odds) are folded into the leaf's
    largest one (:func:`_sparse`). A leaf no row reaches keeps the path attribution. Node
    i < len(nodes) keeps its index; new nodes are appended.
    """
    out = [
        Node(weights=saabas[i].copy())
        if n["is_leaf"]
        else Node(
            int(n["feature_idx"]),
            float(threshold32(n["num_threshold"])),
            bool(n["missing_go_to_left"]),
            int(n["left"]),
            int(n["right"]),
        )
        for i, n in enumerate(nodes)
    ]
    if x is None:
        return out
    leaves = leaf_tables(nodes)
    per_group = by_group(tree_shap(leaves, x, x.shape[1]))
    conditions = sorted(
        {
            (int(n["feature_idx"]), float(threshold32(n["num_threshold"])), bool(n["missing_go_to_left"]))
            for n in nodes
            if not n["is_leaf"]
        }
    )

    def grow(index: int, rows: np.ndarray, levels: int) -> None:
        values = per_group[rows]
        out[index].weights = _sparse(values.mean(axis=0), min_weight)
        if levels == 0 or len(rows) < 2 * min_rows:
            return
        total = values.sum(axis=0)
        best, best_gain, best_mask = None, 1e-12, None
        base = (total @ total) / len(rows)
        for condition in conditions:
            mask = _goes_left(x[rows], *condition)
            n_left = int(mask.sum())
            if n_left < min_rows or len(rows) - n_left < min_rows:
                continue
            left = values[mask].sum(axis=0)
            right = total - left
            gain = (left @ left) / n_left + (right @ right) / (len(rows) - n_left) - base
            if gain > best_gain:
                best, best_gain, best_mask = condition, gain, mask
        if best is None or best_mask is None:
            return
        feature, threshold, missing_left = best
        left_index, right_index = len(out), len(out) + 1
        out.extend([Node(), Node()])
        out[index] = Node(feature, threshold, missing_left, left_index, right_index)
        grow(left_index, rows[best_mask], levels - 1)
        grow(right_index, rows[~best_mask], levels - 1)

    for leaf in leaves:
        here = np.flatnonzero(_patterns(leaf, x) == (1 << len(leaf.features)) - 1)
        if len(leaf.features) and len(here):
            grow(leaf.node, here, depth)
    return out


@dataclass
class Steps:
    """An additive ensemble (every tree reads one feature) as step functions of its features.

    A row's contribution of group ``g`` is ``base[g]`` plus ``weights[g, k]`` for every ``k``
    with ``x[features[k]] <= thresholds[k]`` (float32 comparisons, as ONNX; a NaN is never
    ``<=``). These are the exact Shapley values: in a tree that reads one feature, that
    feature is the only player, so its TreeSHAP value is the tree's output less the tree's
    expectation. ``base`` holds each curve's value at NaN; a threshold of +inf carries the
    difference between that and the curve's highest value, so any number gets it.

    Weights and base come in two parts, ``[0]`` and ``[1]``: each feature's curve rounded to
    ``quanta[0]``, and what that leaves rounded to the much finer ``quanta[1]``. Each part's
    values, added in any order and any subset, stay exact in float32, so onnxruntime's
    matrix product gives the same bits whatever order it adds them in, for a batch of any
    size; the two exact sums are then added once. A row's value is within ``quanta[1] / 2``
    per feature of the exact one, before that last float32 rounding.
    """

    features: np.ndarray  # (K,) int64
    thresholds: np.ndarray  # (K,) float32
    weights: np.ndarray  # (2, groups, K) float32
    base: np.ndarray  # (2, groups) float32
    bias: float  # the baseline log-odds plus every tree's expectation
    quanta: tuple[float, float]


def _tree_value(nodes: np.ndarray, x: np.float32) -> float:
    """The output of one tree (scikit-learn predictor nodes) at one value of its feature."""
    i = 0
    while not nodes[i]["is_leaf"]:
        node = nodes[i]
        left = (
            bool(node["missing_go_to_left"]) if np.isnan(x) else bool(x <= threshold32(node["num_threshold"]))
        )
        i = int(node["left"] if left else node["right"])
    return float(nodes[i]["value"])


def _expectation(nodes: np.ndarray) -> float:
    """The training-count-weighted mean of a tree's leaves (TreeSHAP's empty coalition)."""
    leaves = nodes[nodes["is_leaf"].astype(bool)]
    return float((leaves["count"] * leaves["value"]).sum() / leaves["count"].sum())


def _curves(
    predictors: list[np.ndarray],
) -> tuple[dict[int, dict[np.float32, float]], dict[int, float], dict[int, float], float] | None:
    """Each feature's curve summed over its trees, less their expectations: the value below
    every threshold, the change at each threshold, the value at NaN less the lowest; and the
    sum of the expectations. None if a tree reads two or more features."""
    lowest: dict[int, float] = {}
    changes: dict[int, dict[np.float32, float]] = {}
    at_nan: dict[int, float] = {}
    expectations = 0.0
    for nodes in predictors:
        split = nodes[~nodes["is_leaf"].astype(bool)]
        if len(np.unique(split["feature_idx"])) > 1:
            return None
        expected = _expectation(nodes)
        expectations += expected
        if len(split) == 0:
            continue
        feature = int(split["feature_idx"][0])
        thresholds = sorted({threshold32(t) for t in split["num_threshold"]})
        values = [_tree_value(nodes, t) for t in thresholds] + [_tree_value(nodes, np.float32(np.inf))]
        lowest[feature] = lowest.get(feature, 0.0) + values[0] - expected
        steps = changes.setdefault(feature, {})
        for threshold, below, above in zip(thresholds, values, values[1:], strict=False):
            steps[threshold] = steps.get(threshold, 0.0) + above - below
        at_nan[feature] = at_nan.get(feature, 0.0) + _tree_value(nodes, np.float32(np.nan)) - values[0]
    return changes, lowest, at_nan, expectations


def _quantum(reach: np.ndarray) -> float:
    """The power of two that keeps sums of values reaching ``reach`` (per group) exact in
    float32: 2 ** 23 quanta at most, as rounding adds up to a quantum per value."""
    top = float(reach.max())
    return float(2.0 ** (np.ceil(np.log2(top)) - 23)) if top > 0 else 1.0


def _reach(curves: dict[int, tuple[np.ndarray, float]]) -> np.ndarray:
    """Per group, the most a sum of the curves' values can reach, in any order."""
    reach = np.zeros(len(GROUP_NAMES))
    for f, (points, nan) in curves.items():
        reach[FEATURE_GROUP_INDEX[f]] += abs(nan) + abs(points[-1] - nan) + np.abs(np.diff(points)).sum()
    return reach


def _rounded(
    curves: dict[int, tuple[np.ndarray, float]], quantum: float
) -> dict[int, tuple[np.ndarray, float]]:
    """Each curve's points and value at NaN, rounded to whole quanta."""

    def to_quanta(values: Any) -> Any:
        # + 0.0 turns a -0.0 into 0.0, so no sum depends on the sign of a zero.
        return np.round(values / quantum) * quantum + 0.0

    return {f: (to_quanta(points), float(to_quanta(nan))) for f, (points, nan) in curves.items()}


def additive_steps(predictors: list[np.ndarray], baseline: float) -> Steps | None:
    """The step form of an ensemble whose trees each read at most one feature (None if one
    reads two or more): exact Shapley values per group, see :class:`Steps`.

    Each feature's curve is written from the top: its value at NaN, plus (for any number)
    the way from there to its highest value, less each change between thresholds at or
    above ``x``. The curve's points are rounded (not its changes one by one), so a row's
    value for each feature is one rounded point.
    """
    found = _curves(predictors)
    if found is None:
        return None
    changes, lowest, at_nan, expectations = found
    groups = len(GROUP_NAMES)
    # Each feature's points, exact: below every threshold, past each one; and its value at NaN.
    exact = {
        f: (np.cumsum([lowest[f], *(changes[f][t] for t in sorted(changes[f]))]), lowest[f] + at_nan[f])
        for f in lowest
    }
    coarse_quantum = _quantum(_reach(exact))
    coarse = _rounded(exact, coarse_quantum)
    rest = {f: (exact[f][0] - coarse[f][0], exact[f][1] - coarse[f][1]) for f in exact}
    fine_quantum = _quantum(_reach(rest))
    fine = _rounded(rest, fine_quantum)

    base = np.zeros((2, groups))
    step_features: list[int] = []
    step_thresholds: list[np.float32] = []
    step_weights: list[tuple[float, float]] = []
    step_groups: list[int] = []
    for f in sorted(exact):
        group = FEATURE_GROUP_INDEX[f]
        (coarse_at, coarse_nan), (fine_at, fine_nan) = coarse[f], fine[f]
        base[:, group] += (coarse_nan, fine_nan)
        # Any number: from NaN's value to the top; at or below a threshold: back down a step.
        thresholds = [np.float32(np.inf), *sorted(changes[f])]
        coarse_weights = [coarse_at[-1] - coarse_nan, *(coarse_at[:-1] - coarse_at[1:])]
        fine_weights = [fine_at[-1] - fine_nan, *(fine_at[:-1] - fine_at[1:])]
        for threshold, pair in zip(thresholds, zip(coarse_weights, fine_weights, strict=True), strict=True):
            if pair != (0.0, 0.0):
                step_features.append(f)
                step_thresholds.append(threshold)
                step_weights.append(pair)
                step_groups.append(group)
    weights = np.zeros((2, groups, len(step_weights)), dtype=np.float32)
    weights[:, step_groups, np.arange(len(step_weights))] = np.array(
        step_weights, dtype=np.float64
    ).T.reshape(2, -1)
    return Steps(
        features=np.array(step_features, dtype=np.int64),
        thresholds=np.array(step_thresholds, dtype=np.float32),
        weights=weights,
        base=base.astype(np.float32),
        bias=baseline + expectations,
        quanta=(coarse_quantum, fine_quantum),
    )


def step_contributions(steps: Steps, x: np.ndarray) -> np.ndarray:
    """:class:`Steps` evaluated in NumPy, as the ONNX graph does: each part's exact sum
    (float64 holds it), in float32, then the two parts added in float32. (rows, groups)."""
    below = (x[:, steps.features] <= steps.thresholds).astype(np.float64)
    parts = [
        (steps.base[i].astype(np.float64) + below @ steps.weights[i].T.astype(np.float64)).astype(np.float32)
        for i in (0, 1)
    ]
    return parts[0] + parts[1]
