"""predict() on one record vs scikit-learn's Pipeline.predict_proba on a one-row DataFrame.

Both sides score the same model trained in this run on the default training data, so the
ratio compares serving paths, not models. Usage: python benchmarks/bench_predict.py
"""

from __future__ import annotations

import json
import time

import numpy as np

from stepdown_ml.core import config
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.serving import Model, predict
from stepdown_ml.training.train import load_params, run_training

CALLS = 5_000


def percentiles(samples: list[float]) -> dict[str, float]:
    micro = np.array(samples) * 1e6
    return {"p50_us": float(np.percentile(micro, 50)), "p99_us": float(np.percentile(micro, 99))}


def timed(call, records: list) -> list[float]:
    out = []
    for record in records:
        start = time.perf_counter()
        call(record)
        out.append(time.perf_counter() - start)
    return out


def main() -> dict:
    data = config.GENERATED_DIR / "bench" / "train_60k.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    write_csv(generate_transitions(60_000, 2026), data)
    result = run_training(data, data.parent / "bench_model", load_params(), load_vocabulary())
    model = Model(result.model_dir)
    frame = generate_transitions(CALLS, 5)
    records = (
        frame.drop(columns=["transition_year", "advanced_within_36m", "months_to_regain", "true_probability"])
        .astype(object)
        .where(frame.notna(), None)
    )
    dicts = records.to_dict("records")
    rows = [records.iloc[[i]] for i in range(len(records))]
    for record in dicts[:200]:
        predict(record, model=model)
    onnx_times = timed(lambda r: predict(r, model=model), dicts)
    pipeline = result.pipeline
    sklearn_times = timed(lambda r: pipeline.predict_proba(r), rows[:1000])
    report = {
        "predict_one_record": percentiles(onnx_times),
        "sklearn_pipeline_one_row": percentiles(sklearn_times),
        "ensemble": result.manifest["ensemble"],
    }
    report["speedup_p50"] = (
        report["sklearn_pipeline_one_row"]["p50_us"] / report["predict_one_record"]["p50_us"]
    )
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
