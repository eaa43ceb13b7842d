"""Learning rate vs ensemble size, oracle gap and ONNX Runtime cost per row.

Trains the default pipeline on several generated data sets (60k rows each) at a few
learning rates and reports, per rate: trees, the mean and worst oracle AUC gap, the mean
Brier gap, and the served graph's single-thread cost per row. It is how the
learning rate of the model with interactions (``benchmarks.common.INTERACTING_MODEL``, the
default before the additive model) was chosen; the additive model's came from
``benchmarks.bench_model_form``.
Usage: python -m benchmarks.bench_learning_rate
"""

from __future__ import annotations

import json
import time

import numpy as np
import onnxruntime as ort
from sklearn.metrics import brier_score_loss, roc_auc_score

from benchmarks.common import INTERACTING_MODEL
from stepdown_ml.core.features import FeatureSpace
from stepdown_ml.core.modeldir import INPUT_NAME
from stepdown_ml.core.schema import LABEL
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.training.export import ensemble_size, serving_graph, to_onnx
from stepdown_ml.training.train import fit, load_params, prepare, split

RATES = (0.15, 0.2, 0.25, 0.3)
SEEDS = (1, 2, 3, 4)
ROWS = 60_000


def ort_us_per_row(classifier, features: np.ndarray) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        serving_graph(to_onnx(classifier)).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    start = time.perf_counter()
    for i in range(0, len(features), 5_000):
        session.run(None, {INPUT_NAME: features[i : i + 5_000]})
    return (time.perf_counter() - start) / len(features) * 1e6


def main() -> None:
    vocab = load_vocabulary()
    space = FeatureSpace(vocab)
    params = load_params()
    params["model"].update({k: v for k, v in INTERACTING_MODEL.items() if k != "learning_rate"})
    found: dict[float, list[dict[str, float]]] = {rate: [] for rate in RATES}
    for seed in SEEDS:
        parts = split(prepare(generate_transitions(ROWS, seed)), params["split"])
        x_train, x_test = space.transform(parts.train), space.transform(parts.test)
        y_train, y_test = parts.train[LABEL].to_numpy(), parts.test[LABEL].to_numpy()
        truth = parts.test["true_probability"].to_numpy()
        oracle_auc, oracle_brier = roc_auc_score(y_test, truth), brier_score_loss(y_test, truth)
        repeated = np.tile(x_test, (10, 1))
        for rate in RATES:
            classifier = fit(x_train, y_train, vocab, {**params["model"], "learning_rate": rate}).named_steps[
                "classifier"
            ]
            p = classifier.predict_proba(x_test)[:, 1]
            found[rate].append(
                {
                    "trees": ensemble_size(classifier)["trees"],
                    "auc_gap": oracle_auc - roc_auc_score(y_test, p),
                    "brier_gap": brier_score_loss(y_test, p) - oracle_brier,
                    "ort_us_per_row": ort_us_per_row(classifier, repeated),
                }
            )
    for rate, runs in found.items():
        column = {key: np.array([r[key] for r in runs]) for key in runs[0]}
        print(
            json.dumps(
                {
                    "learning_rate": rate,
                    "trees": column["trees"].astype(int).tolist(),
                    "auc_gap_mean": round(float(column["auc_gap"].mean()), 4),
                    "auc_gap_max": round(float(column["auc_gap"].max()), 4),
                    "brier_gap_mean": round(float(column["brier_gap"].mean()), 4),
                    "ort_us_per_row_mean": round(float(column["ort_us_per_row"].mean()), 3),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
