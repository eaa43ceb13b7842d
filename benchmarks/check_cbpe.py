"""How well the drift report's expected outcomes (CBPE) match the labels, over many batches.

One large generated file with labels is scored by the packaged default model through
``score_block``, then cut into BATCHES batches of ROWS rows; for each, the estimated ROC AUC,
its sampling error and interval (``core.monitoring.expected_outcomes``) are set against the
realized AUC. Prints the mean and spread of realized minus estimated, the mean sampling
error, and how often the realized AUC falls within the interval (and within 1.96 sampling
errors).

Usage: python -m benchmarks.check_cbpe [ROWS] [BATCHES]   (default 3000 80)
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow as pa

from stepdown_ml.core import config
from stepdown_ml.core.arrow import to_numpy
from stepdown_ml.core.monitoring import compare_with_labels
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, LABEL, names
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.serving import Model
from stepdown_ml.serving.batch import score_block


def main(rows: int = 3_000, batches: int = 80, seed: int = 777) -> dict:
    frame = generate_transitions(rows * batches, seed=seed)
    text = frame[names(CANDIDATE_COLUMNS)]
    table = pa.table(
        {c: pa.array(text[c].astype(str).where(text[c].notna(), "").tolist(), pa.string()) for c in text}
    )
    model = Model(config.DEFAULT_MODEL_DIR)
    block = score_block(model, table, np.arange(1, len(frame) + 1))
    p, labels = to_numpy(block.scores.column("p_advance")), frame[LABEL].to_numpy()
    differences, errors, inside, inside_196 = [], [], [], []
    for k in range(batches):
        part = slice(k * rows, (k + 1) * rows)
        result = compare_with_labels(p[part], labels[part])
        estimate = result["estimated"]
        difference = result["realized"]["roc_auc"] - estimate["estimated_roc_auc"]
        differences.append(difference)
        errors.append(estimate["sampling_error"])
        inside.append(result["roc_auc_within_interval"])
        inside_196.append(abs(difference) <= 1.96 * estimate["sampling_error"])
    summary = {
        "rows_per_batch": rows,
        "batches": batches,
        "mean_realized_minus_estimated": round(float(np.mean(differences)), 5),
        "sd_realized_minus_estimated": round(float(np.std(differences)), 5),
        "mean_sampling_error": round(float(np.mean(errors)), 5),
        "within_interval": round(float(np.mean(inside)), 4),
        "within_1.96_errors": round(float(np.mean(inside_196)), 4),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
