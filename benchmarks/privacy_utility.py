"""What anonymization costs the model (docs/PRIVACY.md "Utility").

Generates raw records, holds out a fifth of the persons as a raw test set, anonymizes the
other four fifths with the anonymizer's defaults (or the options given), and trains the
model twice with the project's features and hyperparameters: on the release, and on the
same raw records without anonymization. Both are scored on the same raw test rows.

    python -m benchmarks.privacy_utility --rows 100000 --seed 3
    python -m benchmarks.privacy_utility --rows 100000 --seed 3 --k 5 10 20 --max-suppression 0.05 0.1
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

from stepdown_ml.core.features import FeatureSpace
from stepdown_ml.core.schema import LABEL
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.datasets.anonymize import (
    DEFAULT_L_DIVERSITY,
    DEFAULT_MAX_SUPPRESSION,
    anonymize,
    raw_transitions,
)
from stepdown_ml.datasets.generate import generate_raw
from stepdown_ml.training.train import fit, load_params, prepare


def _train_and_score(train: pd.DataFrame, test_x: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    vocab = load_vocabulary()
    values = prepare(train.drop(columns=["salary_change_pct"]), source="train")
    x = FeatureSpace(vocab).transform(values)
    model = fit(x, values[LABEL].to_numpy(), vocab, load_params()["model"])
    p = model.named_steps["classifier"].predict_proba(test_x)[:, 1]
    return {"auc": float(roc_auc_score(test_y, p)), "brier": float(brier_score_loss(test_y, p))}


def run(
    rows: int, seed: int, ks: list[int], suppressions: list[float], l_diversity: int
) -> list[dict[str, Any]]:
    """The frontier: one row per (k, max_suppression)."""
    key = secrets.token_hex(32).encode()
    raw = generate_raw(rows, seed)
    rng = np.random.default_rng(seed)
    test_mask = rng.random(len(raw)) < 0.2
    raw_train, raw_test = raw.loc[~test_mask], raw.loc[test_mask]
    vocab = load_vocabulary()
    test = prepare(raw_transitions(raw_test, key).drop(columns=["salary_change_pct"]), source="test")
    test_x, test_y = FeatureSpace(vocab).transform(test), test[LABEL].to_numpy()
    baseline = _train_and_score(raw_transitions(raw_train, key), test_x, test_y)
    out = []
    for k in ks:
        for suppression in suppressions:
            started = time.perf_counter()
            release, report = anonymize(
                raw_train, key, k, l_diversity=l_diversity, max_suppression=suppression, vocab=vocab
            )
            seconds = time.perf_counter() - started
            scores = _train_and_score(release, test_x, test_y)
            out.append(
                {
                    "rows": rows,
                    "seed": seed,
                    "train_rows": len(raw_train),
                    "test_rows": len(test),
                    "k": k,
                    "l_diversity": l_diversity,
                    "max_suppression": suppression,
                    "released_share": round(report["rows_out"] / report["rows_in"], 4),
                    "k_reached": report["k_reached"],
                    "l_reached": report["l_reached"],
                    "chosen": report["generalization"]["chosen"],
                    "risk_before": report["risk_before"],
                    "risk_after": report["risk_after"],
                    "suppressed_because": report["suppressed_because"],
                    "anonymize_seconds": round(seconds, 1),
                    "auc_raw": round(baseline["auc"], 4),
                    "auc_release": round(scores["auc"], 4),
                    "auc_loss": round(baseline["auc"] - scores["auc"], 4),
                    "brier_raw": round(baseline["brier"], 4),
                    "brier_release": round(scores["brier"], 4),
                    "brier_increase": round(scores["brier"] - baseline["brier"], 4),
                }
            )
            print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[5])
    parser.add_argument("--max-suppression", type=float, nargs="+", default=[DEFAULT_MAX_SUPPRESSION])
    parser.add_argument("--l-diversity", type=int, default=DEFAULT_L_DIVERSITY)
    args = parser.parse_args(argv)
    return run(args.rows, args.seed, args.k, args.max_suppression, args.l_diversity)


if __name__ == "__main__":
    main()
