"""A service's 100-record batch, stage by stage: record by record against column by column.

What ``POST /predict`` does with a JSON array, in-process (no HTTP): orjson in,
validation, features, one ONNX call, recommendations / reasons / confidence / the answer's
dicts, orjson out. The record path (``validate_record`` + ``transform_record`` per record,
what ``Model.score_records`` did for every batch before issue 11's follow-up, and still does
for a batch it cannot take column by column) against the column path (``validate_records``
+ ``transform_columns``). The same 2,000 generated records in batches of 100 as
``benchmarks.loadtest``; CPU time (``time.process_time``), so that other processes on a
shared machine cost less; best of ``--repeat`` runs, per batch.

Also: the batch path's ``validate_frame`` + ``transform`` on the same records as an Arrow
table (the alternative the column path was chosen over), the answer's dicts built with a dict
display against ``dict(zip(...))``, and both paths by batch size (where the column path starts
to pay).

    python -m benchmarks.bench_service_batch [--repeat 15] [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from benchmarks.loadtest import _records
from stepdown_ml.core import config
from stepdown_ml.core.features import N_FEATURES
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, SCORES_COLUMNS
from stepdown_ml.core.validation import validate_frame, validate_record, validate_records
from stepdown_ml.serving import model as serving


def _best_ms(step: Callable[[Any], Any], inputs: list[Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for item in inputs:
            step(item)
        best = min(best, (time.process_time() - started) / len(inputs))
    return round(best * 1000, 4)


def _record_features(model: serving.Model, records: list[dict[str, Any]]) -> np.ndarray:
    out = np.empty((len(records), N_FEATURES), dtype=np.float32)
    for row, record in enumerate(records):
        model.features.transform_record(validate_record(record)[0], out=out[row : row + 1])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    model = serving.Model(config.PACKAGED_MODEL_DIR)
    records = _records(2_000)
    bodies = [orjson.dumps(records[i : i + args.batch]) for i in range(0, len(records), args.batch)]
    batches = [orjson.loads(body) for body in bodies]
    columns = [validate_records(batch) for batch in batches]
    assert all(c is not None for c in columns), "generated records take the column path"
    features = [model.features.transform_columns(c) for c in columns]
    scored = [model.score_records(batch) for batch in batches]
    saved = serving.COLUMNS_FROM

    def whole(path: str) -> Callable[[bytes], bytes]:
        def run(body: bytes) -> bytes:
            serving.COLUMNS_FROM = 10**9 if path == "records" else saved
            return orjson.dumps(model.score_records(orjson.loads(body)))

        return run

    try:
        stages = {
            "orjson_in": _best_ms(orjson.loads, bodies, args.repeat),
            "validation_records": _best_ms(lambda b: [validate_record(r) for r in b], batches, args.repeat),
            "validation_columns": _best_ms(validate_records, batches, args.repeat),
            "validation_and_features_records": _best_ms(
                lambda b: _record_features(model, b), batches, args.repeat
            ),
            "validation_and_features_columns": _best_ms(
                lambda b: model.features.transform_columns(validate_records(b)), batches, args.repeat
            ),
            "onnx_and_probability": _best_ms(model.infer, features, args.repeat),
            "orjson_out": _best_ms(orjson.dumps, scored, args.repeat),
        }
        # Alternated, so that a change in the machine's load hits both paths alike.
        totals: dict[str, float] = {"records": float("inf"), "columns": float("inf")}
        for _ in range(3):
            for path in totals:
                totals[path] = min(totals[path], _best_ms(whole(path), bodies, max(1, args.repeat // 3)))
    finally:
        serving.COLUMNS_FROM = saved
    tables = [pa.table({c.name: [r[c.name] for r in b] for c in CANDIDATE_COLUMNS}) for b in batches]
    checked = [validate_frame(t).valid_columns() for t in tables]
    stages["validation_frame_path"] = _best_ms(validate_frame, tables, args.repeat)
    stages["features_frame_path"] = _best_ms(model.features.transform, checked, args.repeat)
    rows = [[tuple(r.values()) for r in answer] for answer in scored]
    names = list(SCORES_COLUMNS)
    stages["answer_dicts_zip"] = _best_ms(
        lambda a: [dict(zip(names, r, strict=True)) for r in a], rows, args.repeat
    )
    stages["answer_dicts_display"] = _best_ms(
        lambda a: [
            {
                "candidate_id": i,
                "p_advance": p,
                "recommendation": c,
                "reasons": w,
                "model_version": v,
                "confidence": k,
            }
            for i, p, c, w, v, k in a
        ],
        rows,
        args.repeat,
    )
    by_size: dict[int, dict[str, float]] = {}
    try:
        for size in (2, 4, 8, 12, 16, 32, 64):
            small = [records[i : i + size] for i in range(0, len(records), size)][:100]
            by_size[size] = {}
            for path, threshold in (("records", 10**9), ("columns", 1)):
                serving.COLUMNS_FROM = threshold
                by_size[size][path] = _best_ms(model.score_records, small, max(3, args.repeat // 3))
    finally:
        serving.COLUMNS_FROM = saved
    stages["features_records"] = round(
        stages["validation_and_features_records"] - stages["validation_records"], 4
    )
    stages["features_columns"] = round(
        stages["validation_and_features_columns"] - stages["validation_columns"], 4
    )
    report = {
        "batch": args.batch,
        "ms_per_batch": stages,
        "json_in_to_json_out_ms": totals,
        "speedup": round(totals["records"] / totals["columns"], 2),
        "score_records_ms_by_batch_size": by_size,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
