"""The default model's form: trees that combine features against an additive model.

Trains the real pipeline (``run_training``) on four generated data sets of 60k rows (seeds
2026, 1, 2, 3) in each form, and judges every model on the same 200,000 independent rows
(seed 77), whose true probabilities the generator knows:

- quality: the oracle's AUC less the model's, the model's Brier score less the oracle's,
  the mean absolute distance of ``p_advance`` from the true probability;
- reasons: agreement of the served contributions' top groups with exact path-dependent
  TreeSHAP (the ``shap`` package, a dev dependency) on 20,000 of the rows;
- cost: onnxruntime on the served graph, one thread, per row, in blocks of 11,488 rows
  (the batch scorer's), best of 5; and the training run's wall time.

Forms: ``interactions`` is the default before the additive model (learning rate 0.2, 15
leaves, depth 5, reasons from leaves refined two levels deeper); ``additive`` is
``src/stepdown_ml/resources/train_params.yaml`` as it is.

Usage: python -m benchmarks.bench_model_form [--seeds 2026 1 2 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.metrics import brier_score_loss, roc_auc_score

from benchmarks.bench_reasons import agreement
from benchmarks.common import INTERACTING_MODEL
from stepdown_ml.core import config
from stepdown_ml.core.features import FeatureSpace
from stepdown_ml.core.modeldir import CONTRIBUTIONS, INPUT_NAME, SERVING_ONNX_FILE
from stepdown_ml.core.schema import LABEL
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.training import attribution
from stepdown_ml.training.train import load_params, run_training

FORMS: dict[str, dict[str, Any]] = {
    "interactions": INTERACTING_MODEL,
    "additive": {},
}
BLOCK = 11_488


def _served(model_dir: Path, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The served contributions of ``x`` and the best per-row time of 5 passes (µs)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model_dir / SERVING_ONNX_FILE), options, providers=["CPUExecutionProvider"]
    )
    blocks = [x[i : i + BLOCK] for i in range(0, len(x), BLOCK)]
    out = np.concatenate([session.run([CONTRIBUTIONS], {INPUT_NAME: b})[0] for b in blocks])
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for block in blocks:
            session.run([CONTRIBUTIONS], {INPUT_NAME: block})
        best = min(best, time.perf_counter() - start)
    return out, best / len(x) * 1e6


def main(seeds: list[int]) -> dict[str, Any]:
    import shap

    vocab = load_vocabulary()
    space = FeatureSpace(vocab)
    base = load_params()
    work = config.GENERATED_DIR / "bench"
    work.mkdir(parents=True, exist_ok=True)
    judged = generate_transitions(200_000, 77)
    x = space.transform(judged)
    y = judged[LABEL].to_numpy(dtype=int)
    truth = judged["true_probability"].to_numpy()
    oracle_auc, oracle_brier = roc_auc_score(y, truth), brier_score_loss(y, truth)
    found: dict[str, list[dict[str, Any]]] = {form: [] for form in FORMS}
    for seed in seeds:
        data = work / f"form_train_{seed}.csv"
        write_csv(generate_transitions(60_000, seed), data)
        for form, changes in FORMS.items():
            params = copy.deepcopy(base)
            params["model"].update(changes)
            with tempfile.TemporaryDirectory(dir=work) as tmp:
                start = time.perf_counter()
                result = run_training(data, Path(tmp) / "model", params, vocab)
                train_s = time.perf_counter() - start
                served, us = _served(result.model_dir, x)
            classifier = result.pipeline.named_steps["classifier"]
            p = classifier.predict_proba(x)[:, 1]
            sample = slice(0, 20_000)
            explainer = shap.TreeExplainer(classifier, feature_perturbation="tree_path_dependent")
            exact = attribution.by_group(np.asarray(explainer.shap_values(x[sample])))
            row = {
                "form": form,
                "seed": seed,
                "trees": result.manifest["ensemble"]["trees"],
                "contributions": result.manifest["contributions"],
                "auc_gap": oracle_auc - roc_auc_score(y, p),
                "brier_gap": brier_score_loss(y, p) - oracle_brier,
                "mean_abs_from_truth": float(np.abs(p - truth).mean()),
                **{f"reasons_{k}": v for k, v in agreement(served[sample], exact).items()},
                "onnx_us_per_row": us,
                "train_s": train_s,
            }
            found[form].append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for form, rows in found.items():
        summary[form] = {
            key: round(float(np.mean([r[key] for r in rows])), 4)
            for key in rows[0]
            if isinstance(rows[0][key], float)
        } | {"auc_gap_max": round(max(r["auc_gap"] for r in rows), 4), "trees": [r["trees"] for r in rows]}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[2026, 1, 2, 3])
    main(parser.parse_args().seeds)
