"""Fairness: protected attributes held out of the model, an audit per group, and its gate.

The attributes listed under ``fairness.protected`` in ``pipelines/train_params.yaml`` are
validated and kept with every row (for this audit) but no tree may read them: the features
derived from them are held at 0 while the classifier learns, so it cannot split on them, and
:func:`attribute_inputs` lists what the fitted trees read, for the gate. ``fairness.audit``
lists the attributes the audit reports on, group by group, on the held-out test split
(fairlearn ``MetricFrame``):

- ``rows``; ``selection_rate``: the share recommended ``take_step_down``;
- ``true_positive_rate`` / ``false_positive_rate`` of ``take_step_down`` against the outcome;
- ``mean_p_advance`` against ``observed_rate``: their difference is ``calibration_gap``, and
  ``calibration_gap_se`` the standard error of the observed rate (the gate allows 1.96 of it);
- ``roc_auc`` within the group;
- ``recommendation_rates`` and ``impact_ratio`` of each recommendation: the group's rate over
  the highest group's rate, flagged below 0.8 (the four-fifths rule).

A group with fewer than ``min_group_rows`` rows, or fewer than ``min_group_outcomes`` of
either outcome, is reported with ``enough_rows: false`` and left out of the differences,
ratios, impact ratios and the gate: its numbers are too noisy to judge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import roc_auc_score

from stepdown_ml.core.features import ATTRIBUTE_FEATURES, FEATURE_NAMES
from stepdown_ml.core.recommend import RECOMMENDATION_NAMES, TAKE_STEP_DOWN
from stepdown_ml.core.schema import ContractError
from stepdown_ml.training.evaluate import _save

FOUR_FIFTHS = 0.8
Z95 = 1.96
# The per-group numbers compared across groups (differences and ratios).
COMPARED = (
    "selection_rate",
    "true_positive_rate",
    "false_positive_rate",
    "mean_p_advance",
    "observed_rate",
    "roc_auc",
)


def held_out_features(protected: list[str]) -> list[int]:
    """Positions in FEATURE_NAMES of the features derived from the protected attributes.

    Raises:
        ContractError: an attribute the features cannot hold out (not in ATTRIBUTE_FEATURES).
    """
    unknown = [a for a in protected if a not in ATTRIBUTE_FEATURES]
    if unknown:
        raise ContractError(
            f"fairness.protected: {', '.join(unknown)} cannot be held out of the model; "
            f"choose among {', '.join(ATTRIBUTE_FEATURES)}"
        )
    return [FEATURE_NAMES.index(f) for a in protected for f in ATTRIBUTE_FEATURES[a]]


def hold_out(x: np.ndarray, columns: list[int]) -> np.ndarray:
    """A copy of ``x`` with ``columns`` set to 0: a constant the trees cannot split on."""
    if not columns:
        return x
    out = x.copy()
    out[:, columns] = 0.0
    return out


def features_read(predictors: list[np.ndarray]) -> set[str]:
    """Names of the features any tree splits on (scikit-learn predictor node arrays)."""
    used: set[str] = set()
    for nodes in predictors:
        split = nodes[~nodes["is_leaf"].astype(bool)]
        used.update(FEATURE_NAMES[int(i)] for i in np.unique(split["feature_idx"]))
    return used


def attribute_inputs(predictors: list[np.ndarray]) -> dict[str, list[str]]:
    """Per attribute of ATTRIBUTE_FEATURES, the features derived from it that the model reads."""
    used = features_read(predictors)
    return {a: sorted(used.intersection(features)) for a, features in ATTRIBUTE_FEATURES.items()}


def _auc(y_true: Any, p: Any) -> float:
    y = np.asarray(y_true)
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def _mean(_: Any, values: Any) -> float:
    return float(np.mean(values))


def _observed(y_true: Any, _: Any) -> float:
    return float(np.mean(y_true))


def _rate_of(recommendation: str) -> Any:
    """A fairlearn metric: the share of rows given ``recommendation``."""

    def rate(_: Any, given: Any) -> float:
        return float(np.mean(np.asarray(given) == recommendation))

    return rate


def _number(value: Any) -> float | None:
    """JSON-friendly: NaN and infinities become None."""
    value = float(value)
    return value if np.isfinite(value) else None


def _attribute_audit(
    groups: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    recommendation: np.ndarray,
    min_rows: int,
    min_outcomes: int,
) -> dict[str, Any]:
    take = (recommendation == TAKE_STEP_DOWN).astype(int)

    def frames(rows: np.ndarray) -> tuple[MetricFrame, MetricFrame, MetricFrame]:
        decision = MetricFrame(
            metrics={
                "rows": count,
                "selection_rate": selection_rate,
                "true_positive_rate": true_positive_rate,
                "false_positive_rate": false_positive_rate,
            },
            y_true=y[rows],
            y_pred=take[rows],
            sensitive_features=groups[rows],
        )
        score = MetricFrame(
            metrics={"mean_p_advance": _mean, "observed_rate": _observed, "roc_auc": _auc},
            y_true=y[rows],
            y_pred=p[rows],
            sensitive_features=groups[rows],
        )
        rates = MetricFrame(
            metrics={name: _rate_of(name) for name in RECOMMENDATION_NAMES},
            y_true=y[rows],
            y_pred=recommendation[rows],
            sensitive_features=groups[rows],
        )
        return decision, score, rates

    everyone = np.ones(len(y), dtype=bool)
    decision, score, rates = frames(everyone)
    table = pd.concat([decision.by_group, score.by_group], axis=1)
    positives = pd.Series(y).groupby(groups).sum()
    enough = {
        str(g): bool(
            row["rows"] >= min_rows
            and positives[g] >= min_outcomes
            and row["rows"] - positives[g] >= min_outcomes
        )
        for g, row in table.iterrows()
    }
    judged = [g for g, ok in enough.items() if ok]
    best_rate = rates.by_group.loc[judged].max() if judged else None
    result: dict[str, Any] = {"groups": {}, "too_small": [g for g, ok in enough.items() if not ok]}
    flags = []
    for g, row in table.iterrows():
        name = str(g)
        entry: dict[str, Any] = {"rows": int(row["rows"]), "enough_rows": enough[name]}
        entry.update({k: _number(row[k]) for k in COMPARED})
        entry["calibration_gap"] = _number(row["mean_p_advance"] - row["observed_rate"])
        entry["recommendation_rates"] = {r: _number(rates.by_group.loc[g, r]) for r in RECOMMENDATION_NAMES}
        if enough[name] and best_rate is not None:
            entry["impact_ratio"] = {
                r: _number(rates.by_group.loc[g, r] / best_rate[r]) if best_rate[r] > 0 else None
                for r in RECOMMENDATION_NAMES
            }
            flags += [
                f"{name}: {r} {ratio:.2f}"
                for r, ratio in entry["impact_ratio"].items()
                if ratio is not None and ratio < FOUR_FIFTHS
            ]
        result["groups"][name] = entry
    result["four_fifths_flags"] = flags
    if len(judged) >= 2:
        rows = np.isin(groups, judged)
        decision, score, _ = frames(rows)
        for key, method in (("differences", "difference"), ("ratios", "ratio")):
            result[key] = {
                k: _number(v)
                for frame in (decision, score)
                for k, v in getattr(frame, method)().items()
                if k in COMPARED
            }
    # |gap| less its sampling noise (Z95 standard errors of the observed rate): what the gate
    # compares with its limit, so that a well-calibrated model is not refused for noise.
    beyond = {}
    for g in judged:
        entry = result["groups"][g]
        observed, rows = entry["observed_rate"], entry["rows"]
        entry["calibration_gap_se"] = float(np.sqrt(observed * (1 - observed) / rows))
        beyond[g] = abs(entry["calibration_gap"]) - Z95 * entry["calibration_gap_se"]
    if beyond:
        worst = max(beyond, key=beyond.__getitem__)
        result["max_calibration_gap"] = max(abs(result["groups"][g]["calibration_gap"]) for g in judged)
        result["max_calibration_gap_beyond_noise"] = beyond[worst]
        result["worst_calibrated_group"] = worst
    return result


def audit(
    frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    recommendation: np.ndarray,
    attributes: list[str],
    min_rows: int,
    min_outcomes: int,
) -> dict[str, dict[str, Any]]:
    """The audit of every attribute in ``attributes`` (columns of ``frame``), row-aligned with
    the outcomes ``y``, the probabilities ``p`` and the recommendations (strings)."""
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=np.float64)
    recommendation = np.asarray(recommendation, dtype=object)
    return {
        a: _attribute_audit(
            frame[a].astype(str).to_numpy(dtype=object), y, p, recommendation, min_rows, min_outcomes
        )
        for a in attributes
    }


def fairness_checks(
    fairness: dict[str, Any], max_gap: float, protected: list[str]
) -> dict[str, dict[str, Any]]:
    """The fairness gates: the model reads no feature derived from a ``protected`` attribute,
    and within every group with enough rows, mean ``p_advance`` is within ``max_gap`` of the
    observed rate, beyond sampling noise (|gap| less 1.96 standard errors of the observed
    rate: a group of 1,000 rows at a rate of 0.4 has 0.015 of it)."""
    read = {a: f for a, f in fairness["attribute_inputs"].items() if f and a in protected}
    checks: dict[str, dict[str, Any]] = {
        "no_protected_inputs": {"value": read, "passed": not read},
    }
    worst = {
        a: (audit["max_calibration_gap_beyond_noise"], audit["worst_calibrated_group"])
        for a, audit in fairness["attributes"].items()
        if "max_calibration_gap_beyond_noise" in audit
    }
    gap, where = max(((g, f"{a}={group}") for a, (g, group) in worst.items()), default=(0.0, ""))
    checks["group_calibration"] = {"value": gap, "group": where, "limit": max_gap, "passed": gap <= max_gap}
    return checks


def save_plot(fairness: dict[str, Any], out_dir: Path) -> Path:
    """fairness.png: per audited attribute, the take_step_down rate and mean p_advance
    against the observed rate, group by group (hatched: too few rows to judge)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attributes = fairness["attributes"]
    fig, axes = plt.subplots(len(attributes), 2, figsize=(10, 3.2 * len(attributes)), squeeze=False)
    for (left, right), (name, audit) in zip(axes, attributes.items(), strict=True):
        groups = list(audit["groups"])
        x = np.arange(len(groups))
        hatch = ["//" if not audit["groups"][g]["enough_rows"] else "" for g in groups]
        rates = [audit["groups"][g]["selection_rate"] or 0.0 for g in groups]
        left.bar(x, rates, hatch=hatch, color="tab:blue")
        left.set(xticks=x, xticklabels=groups, ylabel="take_step_down rate", title=f"{name}: selection rate")
        for key, shift, color in (
            ("mean_p_advance", -0.2, "tab:orange"),
            ("observed_rate", 0.2, "tab:green"),
        ):
            values = [audit["groups"][g][key] or 0.0 for g in groups]
            right.bar(x + shift, values, width=0.4, label=key, color=color, hatch=hatch)
        right.set(xticks=x, xticklabels=groups, title=f"{name}: calibration within the group")
        right.legend(fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _save(fig, out_dir / "fairness.png")
