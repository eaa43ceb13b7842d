"""Evaluation: discrimination, calibration, per-motive results, oracle gap, baselines, plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stepdown_ml.core.features import FEATURE_GROUP_INDEX, GROUP_NAMES
from stepdown_ml.core.schema import LABEL, MOTIVES, TRUE_PROBABILITY


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Mean |observed rate - mean predicted| over equal-width bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    observed = np.bincount(which, weights=y_true, minlength=bins)
    predicted = np.bincount(which, weights=p, minlength=bins)
    filled = counts > 0
    gap = np.abs(observed[filled] - predicted[filled]) / counts[filled]
    return float(np.sum(gap * counts[filled]) / len(p))


def metrics(y_true: np.ndarray, p: np.ndarray, bins: int = 15) -> dict[str, float]:
    """ROC AUC, PR AUC, Brier, log loss, ECE and the positive rate."""
    y = np.asarray(y_true, dtype=int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(y, p, bins),
        "positive_rate": float(y.mean()),
        "rows": len(y),
    }


def per_motive(frame: pd.DataFrame, p: np.ndarray) -> dict[str, dict[str, float]]:
    """:func:`metrics` for each motive present."""
    motives = frame["motive"].to_numpy()
    y = frame[LABEL].to_numpy(dtype=int)
    return {m: metrics(y[motives == m], p[motives == m]) for m in MOTIVES if (motives == m).sum() > 1}


def oracle(frame: pd.DataFrame, bins: int = 15) -> dict[str, float] | None:
    """Metrics of the generator's true probabilities (the best any model can do), if known."""
    if TRUE_PROBABILITY not in frame:
        return None
    truth = pd.to_numeric(frame[TRUE_PROBABILITY], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(truth).any():
        return None
    return metrics(frame[LABEL].to_numpy(dtype=int), truth, bins)


def logistic_baseline(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Probabilities of a standardized logistic regression on the same features."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    model.fit(x_train, y_train)
    return model.predict_proba(x_test)[:, 1]


def motive_rate_baseline(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Each test row's motive's positive rate in the training data."""
    rates = train.groupby("motive")[LABEL].mean()
    fallback = float(train[LABEL].mean())
    return test["motive"].map(rates).fillna(fallback).to_numpy(dtype=np.float64)


def group_permutation_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Mean drop in ROC AUC when a feature group's columns are shuffled together."""
    rng = np.random.default_rng(seed)
    base = roc_auc_score(y, predict(x))
    drops = {}
    for g, name in enumerate(GROUP_NAMES):
        cols = np.flatnonzero(g == FEATURE_GROUP_INDEX)
        scores = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, cols] = x[rng.permutation(len(x))][:, cols]
            scores.append(roc_auc_score(y, predict(shuffled)))
        drops[name] = float(base - np.mean(scores))
    return dict(sorted(drops.items(), key=lambda kv: -kv[1]))


def save_plots(
    y: np.ndarray,
    curves: dict[str, np.ndarray],
    importance: dict[str, float],
    out_dir: Path,
    bins: int = 15,
) -> list[Path]:
    """ROC curves, calibration curve and group importance as PNG files in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(fig, out_dir / "roc.png"))
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in curves.items():
        observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", markersize=3, label=name)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="predicted p_advance", ylabel="observed rate", title="Calibration")
    ax.legend(loc="upper left", fontsize=8)
    paths.append(_save(fig, out_dir / "calibration.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="drop in ROC AUC when shuffled", title="Permutation importance by feature group")
    paths.append(_save(fig, out_dir / "importance.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def evaluate_model(model: Any, values: pd.DataFrame, bins: int = 15) -> dict[str, Any]:
    """Metrics of a served model (:class:`stepdown_ml.serving.Model`) on validated transitions.

    Uses the ONNX model exactly as serving does, so these are the numbers users get.
    """
    p, _ = model.infer(model.features.transform(values))
    y = values[LABEL].to_numpy(dtype=int)
    report: dict[str, Any] = {
        "model_version": model.version,
        "test": metrics(y, p, bins),
        "per_motive": per_motive(values, p),
    }
    reference = oracle(values, bins)
    if reference is not None:
        report["oracle"] = reference
        report["oracle_gap"] = {
            "roc_auc": reference["roc_auc"] - report["test"]["roc_auc"],
            "brier": report["test"]["brier"] - reference["brier"],
        }
    return report


def estimated_against_realized(model: Any, frame: pd.DataFrame, values: pd.DataFrame) -> dict[str, Any]:
    """Realized quality next to what a drift report estimates for the same rows.

    The rows go through batch scoring's own :func:`stepdown_ml.serving.batch.score_block`
    (the same validation and features as ``stepdown-ml score``); the estimate is the
    report's (:func:`stepdown_ml.core.monitoring.expected_outcomes`, from ``p_advance``
    alone), the realized values come from the labels in ``values``.
    """
    from stepdown_ml.core.arrow import to_numpy
    from stepdown_ml.core.modeldir import ProfileError
    from stepdown_ml.core.monitoring import compare_with_labels, load_reference
    from stepdown_ml.serving.batch import score_block

    block = score_block(model, frame, np.arange(1, len(frame) + 1))
    labels = values[LABEL].to_numpy(dtype=int)[block.rows - 1]
    result = compare_with_labels(to_numpy(block.scores.column("p_advance")), labels)
    try:
        result["reference"] = load_reference(model.model_dir, model.manifest).performance
    except ProfileError:
        result["reference"] = None  # a model trained before reference profiles
    return result
