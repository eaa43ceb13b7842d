"""ONNX export: the classifier through skl2onnx, plus exact per-group contributions.

``model.onnx``, the complete export, takes one float32 tensor ``features`` (the output of
:class:`stepdown_ml.core.features.FeatureSpace`) and returns:

- ``probabilities`` (n, 2) and ``label`` (n,): skl2onnx's conversion of the
  HistGradientBoostingClassifier, ZipMap off;
- ``contributions`` (n, groups): for each feature group, its share of the raw score
  (log-odds). An additive model's are its exact path-dependent TreeSHAP values; a trained
  model with interactions stores exact TreeSHAP values averaged within refined leaves
  (:mod:`stepdown_ml.training.attribution`); without reference rows, such a model gets the
  path decomposition of each tree (Saabas): walking from the root to the leaf, each split
  moves the expected value from the parent's to the child's, and the move is credited to
  the split feature's group. Node expectations are the training-count-weighted means of
  the leaves below, so for every row ``bias + contributions.sum() == log-odds`` exactly
  (up to float32 rounding), with either attribution.

``serving.onnx`` (:func:`serving_graph`) keeps only the contributions: one evaluation
gives both the probability and its reasons, so reasons are as cheap as scoring itself. The
contributions take one of two forms:

- **an additive model** (every tree reads one feature, the default): the exact Shapley
  values as step functions (:func:`stepdown_ml.training.attribution.additive_steps`), a few
  array operations for a whole batch: gather each step's feature, compare with its
  threshold, and one matrix product with the steps' group weights. No tree is walked.
- **a model with interactions**: a second tree ensemble, mirroring skl2onnx's node layout,
  with the refined leaves above.

Thresholds, in both parts of the graph, are the largest float32 at or below scikit-learn's
float64 ones (:func:`stepdown_ml.training.attribution.threshold32`), so a float32 feature goes
the way it goes in scikit-learn. (skl2onnx writes the nearest float32; its classifier's
thresholds are rewritten after the conversion.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.ensemble import HistGradientBoostingClassifier

from stepdown_ml.core.features import FEATURE_GROUP_INDEX, GROUP_NAMES, N_FEATURES
from stepdown_ml.core.modeldir import CONTRIBUTIONS, INPUT_NAME, PROBABILITIES
from stepdown_ml.core.modeldir import LABEL_OUTPUT as LABEL
from stepdown_ml.training import attribution

ONNX_OPSET = 17
ONNX_ML_OPSET = 3


def _node_expectations(nodes: np.ndarray) -> np.ndarray:
    """Count-weighted mean leaf value below every node."""
    expected = np.zeros(len(nodes), dtype=np.float64)
    # Children always have larger indices than their parent in sklearn's predictor arrays.
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        if node["is_leaf"]:
            expected[i] = node["value"]
        else:
            left, right = node["left"], node["right"]
            n_left, n_right = nodes[left]["count"], nodes[right]["count"]
            expected[i] = (n_left * expected[left] + n_right * expected[right]) / (n_left + n_right)
    return expected


def tree_contributions(model: HistGradientBoostingClassifier) -> tuple[list[np.ndarray], float]:
    """Per tree, a (nodes, groups) matrix of path contributions at each leaf, and the bias.

    The bias is the baseline log-odds plus every tree's root expectation.
    """
    bias = float(np.ravel(model._baseline_prediction)[0])
    per_tree = []
    for predictors in model._predictors:
        nodes = predictors[0].nodes
        expected = _node_expectations(nodes)
        bias += float(expected[0])
        at_node = np.zeros((len(nodes), len(GROUP_NAMES)), dtype=np.float64)
        for i, node in enumerate(nodes):
            if node["is_leaf"]:
                continue
            group = FEATURE_GROUP_INDEX[node["feature_idx"]]
            for child in (node["left"], node["right"]):
                at_node[child] = at_node[i]
                at_node[child, group] += expected[child] - expected[i]
        per_tree.append(at_node)
    return per_tree, bias


def _contribution_node(
    model: HistGradientBoostingClassifier,
    reference: np.ndarray | None,
    depth: int,
    min_rows: int,
    min_weight: float,
) -> tuple[onnx.NodeProto, float]:
    per_tree, bias = tree_contributions(model)
    attrs: dict[str, Any] = {  # TreeEnsembleRegressor attributes (lists), passed to make_node as **kwargs
        key: []
        for key in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_modes",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    for tree_id, (predictors, saabas) in enumerate(zip(model._predictors, per_tree, strict=True)):
        tree = attribution.served_tree(predictors[0].nodes, saabas, reference, depth, min_rows, min_weight)
        for i, node in enumerate(tree):
            leaf = node.feature < 0
            attrs["nodes_treeids"].append(tree_id)
            attrs["nodes_nodeids"].append(i)
            attrs["nodes_featureids"].append(0 if leaf else node.feature)
            # A float32 threshold at or below scikit-learn's (attribution.threshold32).
            attrs["nodes_values"].append(0.0 if leaf else float(node.threshold))
            attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(0 if leaf else node.left)
            attrs["nodes_falsenodeids"].append(0 if leaf else node.right)
            attrs["nodes_missing_value_tracks_true"].append(0 if leaf else int(node.missing_left))
            if leaf:
                assert node.weights is not None
                for group, weight in enumerate(node.weights):
                    if weight != 0.0:
                        attrs["target_treeids"].append(tree_id)
                        attrs["target_nodeids"].append(i)
                        attrs["target_ids"].append(group)
                        attrs["target_weights"].append(float(weight))
    node = helper.make_node(
        "TreeEnsembleRegressor",
        [INPUT_NAME],
        [CONTRIBUTIONS],
        domain="ai.onnx.ml",
        name="group_contributions",
        n_targets=len(GROUP_NAMES),
        aggregate_function="SUM",
        post_transform="NONE",
        **attrs,
    )
    return node, bias


def to_onnx(
    model: HistGradientBoostingClassifier,
    model_name: str = "stepdown-advancement",
    reference: np.ndarray | None = None,
    refine_depth: int = 0,
    min_rows: int = 20,
    min_weight: float = 0.0,
) -> onnx.ModelProto:
    """Convert the fitted classifier to the served ONNX graph (see module docstring).

    With ``reference`` rows (the training features), the contributions are exact TreeSHAP
    values averaged in leaves refined ``refine_depth`` levels deeper, values under
    ``min_weight`` folded into each leaf's largest
    (:func:`stepdown_ml.training.attribution.served_tree`); without, the path attribution.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
        # skl2onnx silently mis-converts native categorical splits.
        raise ValueError("categorical_features must be off: one-hot encode upstream")
    onnx_model = convert_sklearn(
        model,
        name=model_name,
        initial_types=[(INPUT_NAME, FloatTensorType([None, N_FEATURES]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET},
    )
    _thresholds_at_or_below(onnx_model, model)
    outputs = {o.name: o for o in onnx_model.graph.output}
    # skl2onnx names the outputs after the classifier's label/probabilities variables.
    rename = {"output_label": LABEL, "output_probability": PROBABILITIES}
    for node in onnx_model.graph.node:
        node.output[:] = [rename.get(o, o) for o in node.output]
    for name, out in outputs.items():
        out.name = rename.get(name, name)
    # skl2onnx picks the lowest opsets that suffice; pin both so every export is the same.
    for opset in onnx_model.opset_import:
        opset.version = {"": ONNX_OPSET, "ai.onnx.ml": ONNX_ML_OPSET}.get(opset.domain, opset.version)
    steps = attribution.additive_steps(
        [p[0].nodes for p in model._predictors], float(np.ravel(model._baseline_prediction)[0])
    )
    if steps is not None:
        nodes, initializers, bias = _step_nodes(steps)
        onnx_model.graph.node.extend(nodes)
        onnx_model.graph.initializer.extend(initializers)
    else:
        node, bias = _contribution_node(model, reference, refine_depth, min_rows, min_weight)
        onnx_model.graph.node.append(node)
    onnx_model.graph.output.append(
        helper.make_tensor_value_info(CONTRIBUTIONS, TensorProto.FLOAT, [None, len(GROUP_NAMES)])
    )
    meta = onnx_model.metadata_props.add()
    meta.key, meta.value = "contribution_bias", repr(bias)
    meta = onnx_model.metadata_props.add()
    meta.key, meta.value = "contribution_groups", ",".join(GROUP_NAMES)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def _thresholds_at_or_below(onnx_model: onnx.ModelProto, model: HistGradientBoostingClassifier) -> None:
    """Rewrite skl2onnx's classifier thresholds as the largest float32 at or below each of
    scikit-learn's (:func:`stepdown_ml.training.attribution.threshold32`).

    skl2onnx writes the nearest float32, which can lie above the threshold: the one float32
    value equal to it then goes left where scikit-learn sends it right. With one-decimal
    inputs that is an everyday value (an unemployment rate of 2.15 against the split
    between 2.1 and 2.2, say). Its nodes keep scikit-learn's node numbers, checked here.
    """
    node = next(n for n in onnx_model.graph.node if n.op_type == "TreeEnsembleClassifier")
    attrs = {a.name: a for a in node.attribute}
    trees = [p[0].nodes for p in model._predictors]
    values = list(attrs["nodes_values"].floats)
    layout = zip(
        attrs["nodes_treeids"].ints, attrs["nodes_nodeids"].ints, attrs["nodes_modes"].strings, strict=True
    )
    for k, (tree, index, mode) in enumerate(layout):
        if mode == b"LEAF":
            continue
        threshold = trees[tree][index]["num_threshold"]
        if np.float32(values[k]) != np.float32(threshold):
            raise ValueError(
                f"skl2onnx's node {tree}/{index} is not scikit-learn's: cannot set its threshold"
            )
        values[k] = float(attribution.threshold32(threshold))
    del attrs["nodes_values"].floats[:]
    attrs["nodes_values"].floats.extend(values)


def _step_nodes(steps: attribution.Steps) -> tuple[list[onnx.NodeProto], list[TensorProto], float]:
    """The contributions of an additive model as ONNX operators, with their constants.

    Rows run along the last axis (the features transposed once), so gathering a step's
    feature copies one contiguous row of the batch.
    """

    def name(part: str) -> str:
        return f"{CONTRIBUTIONS}_{part}"

    groups = steps.weights.shape[1]
    constants = {
        "step_features": steps.features,
        "step_thresholds": steps.thresholds.reshape(-1, 1),
        "step_weights": steps.weights.reshape(2 * groups, -1),  # the coarse part's groups, then the fine
        "base": steps.base.reshape(2 * groups, 1),
        "parts": np.array([2, groups, -1], dtype=np.int64),
        "first_axis": np.array([0], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Transpose", [INPUT_NAME], [name("by_feature")], perm=[1, 0]),
        helper.make_node("Gather", [name("by_feature"), name("step_features")], [name("stepped")], axis=0),
        # A NaN is never <= anything: it takes no weight but the base (attribution.Steps).
        helper.make_node("LessOrEqual", [name("stepped"), name("step_thresholds")], [name("below")]),
        helper.make_node("Cast", [name("below")], [name("below_float")], to=TensorProto.FLOAT),
        # Each part's sums are exact in float32, in any order; then the two parts are added.
        helper.make_node("MatMul", [name("step_weights"), name("below_float")], [name("weighed")]),
        helper.make_node("Add", [name("weighed"), name("base")], [name("by_part")]),
        helper.make_node("Reshape", [name("by_part"), name("parts")], [name("in_parts")]),
        helper.make_node("ReduceSum", [name("in_parts"), name("first_axis")], [name("by_group")], keepdims=0),
        helper.make_node("Transpose", [name("by_group")], [CONTRIBUTIONS], perm=[1, 0]),
    ]
    initializers = [numpy_helper.from_array(value, name(key)) for key, value in constants.items()]
    return nodes, initializers, steps.bias


def serving_graph(full: onnx.ModelProto) -> onnx.ModelProto:
    """The lean graph that serving runs: the contributions alone (the operators they are
    computed from, and their constants).

    onnxruntime evaluates every node of a graph whatever outputs are asked for, so the
    full export (classifier + contributions) costs both per row. Serving
    needs only the contributions: ``p_advance`` is the logistic of the bias plus their
    sum, equal to the classifier's probability (checked by :func:`check_parity`).
    """
    lean = onnx.ModelProto()
    lean.CopyFrom(full)
    graph = lean.graph
    needed, keep = {CONTRIBUTIONS}, []
    for node in reversed(graph.node):  # the nodes the contributions are computed from
        if needed.intersection(node.output):
            keep.append(node)
            needed.update(node.input)
    keep.reverse()
    outputs = [o for o in graph.output if o.name == CONTRIBUTIONS]
    constants = [t for t in graph.initializer if t.name in needed]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(constants)
    del graph.output[:]
    graph.output.extend(outputs)
    onnx.checker.check_model(lean, full_check=True)
    return lean


def contributions_form(onnx_model: onnx.ModelProto) -> dict[str, Any]:
    """How the export computes the contributions: ``additive steps`` (with their number) or
    ``refined trees`` (with their leaves)."""
    for node in onnx_model.graph.node:
        if node.output[0] == CONTRIBUTIONS and node.op_type == "TreeEnsembleRegressor":
            ints = {a.name: a.ints for a in node.attribute}
            leaves = set(zip(ints["target_treeids"], ints["target_nodeids"], strict=True))
            return {"form": "refined trees", "leaves": len(leaves)}
    features = next(t for t in onnx_model.graph.initializer if t.name == f"{CONTRIBUTIONS}_step_features")
    return {"form": "additive steps", "steps": int(features.dims[0])}


def ensemble_size(model: HistGradientBoostingClassifier) -> dict[str, int]:
    """Number of trees, total leaves, and the deepest leaf."""
    leaves = [int(p[0].nodes["is_leaf"].sum()) for p in model._predictors]
    depth = max(int(p[0].nodes["depth"].max()) for p in model._predictors)
    return {"trees": len(leaves), "leaves": int(sum(leaves)), "max_depth": depth}


PARITY_TOLERANCE = 1e-5


class ExportParityError(RuntimeError):
    """The ONNX graph and scikit-learn disagree beyond tolerance."""


def onnx_outputs(onnx_model: onnx.ModelProto, features: np.ndarray) -> dict[str, np.ndarray]:
    """Run every output of the graph on ``features`` (a fresh onnxruntime session)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: features}), strict=True))


def contribution_bias(onnx_model: onnx.ModelProto) -> float:
    """The bias stored with the contributions output."""
    return float({m.key: m.value for m in onnx_model.metadata_props}["contribution_bias"])


def check_parity(
    onnx_model: onnx.ModelProto,
    model: HistGradientBoostingClassifier,
    features: np.ndarray,
    threshold: float,
) -> dict[str, float | int]:
    """Compare ONNX with scikit-learn on ``features``; raise :class:`ExportParityError` if off.

    Checks the classifier output and the probability rebuilt from the contributions of
    the lean serving graph (what serving uses): both within ``PARITY_TOLERANCE`` of
    scikit-learn, and no row on a different side of ``threshold``.
    """
    expected = model.predict_proba(features)[:, 1]
    out = onnx_outputs(onnx_model, features)
    from_classifier = out[PROBABILITIES][:, 1].astype(np.float64)
    served = onnx_outputs(serving_graph(onnx_model), features)[CONTRIBUTIONS]
    log_odds = contribution_bias(onnx_model) + served.sum(axis=1, dtype=np.float64)
    from_contributions = 1.0 / (1.0 + np.exp(-log_odds))
    report = {
        "rows": len(features),
        "max_abs_diff_classifier": float(np.max(np.abs(from_classifier - expected))),
        "max_abs_diff_contributions": float(np.max(np.abs(from_contributions - expected))),
        "label_flips": int(np.sum((from_contributions >= threshold) != (expected >= threshold))),
    }
    if (
        report["max_abs_diff_classifier"] > PARITY_TOLERANCE
        or report["max_abs_diff_contributions"] > PARITY_TOLERANCE
        or report["label_flips"]
    ):
        raise ExportParityError(f"ONNX and scikit-learn disagree: {report}")
    return report
