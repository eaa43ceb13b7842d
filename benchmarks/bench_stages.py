"""Where the batch scorer's time goes: each stage of score_block, one thread, per 1M rows.

Usage: python -m benchmarks.bench_stages [ROWS]   (default 1000000)

Environment: BENCH_FILES=gen,oov (the generator's file, and the same rows with skills outside
the vocabulary), BENCH_ROUNDS (best of; default 2), STEPDOWN_BENCH_DIR (where the files are
built; use tmpfs). Stages are timed in CPU seconds of this thread, with the CLI's allocator
settings (serving.memory).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.common import chosen_files
from stepdown_ml.core import config
from stepdown_ml.core.features import arrow_text
from stepdown_ml.core.schema import CANDIDATE_COLUMNS
from stepdown_ml.core.validation import validate_frame
from stepdown_ml.serving import Model
from stepdown_ml.serving.batch import BLOCK_BYTES, SCORES_SCHEMA, _scores_table
from stepdown_ml.serving.memory import tune_for_batch

STAGES = ("read", "validate", "features", "infer_rules_reasons", "write")


def stages(model: Model, path: Path) -> dict[str, float]:
    """CPU seconds of each stage over the whole file."""
    names = [c.name for c in CANDIDATE_COLUMNS]
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )
    seconds = dict.fromkeys(STAGES, 0.0)
    out = pacsv.CSVWriter(str(config.GENERATED_DIR / "bench" / "stages_out.csv"), SCORES_SCHEMA)
    mark = time.thread_time()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.thread_time()
        seconds[stage] += now - mark
        mark = now

    for batch in reader:
        lap("read")
        valid = validate_frame(batch).valid_columns()
        lap("validate")
        features = model.features.transform(valid)
        lap("features")
        table = model.score_features_arrow(features, arrow_text(valid["candidate_id"]))
        lap("infer_rules_reasons")
        out.write_table(_scores_table(table))
        lap("write")
    out.close()
    return seconds


def main(rows: int) -> list[dict]:
    tune_for_batch()
    model = Model(config.DEFAULT_MODEL_DIR)
    (config.GENERATED_DIR / "bench").mkdir(parents=True, exist_ok=True)
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    results = []
    for name, path in chosen_files(rows).items():
        runs = [stages(model, path) for _ in range(rounds)]
        scale = 1_000_000 / rows
        best = {stage: min(run[stage] for run in runs) * scale for stage in STAGES}
        per_stage = {f"{k}_cpu_seconds_per_1M": round(v, 2) for k, v in best.items()}
        total = round(sum(best.values()), 2)
        result = {"file": name, "rows": rows, **per_stage, "total_cpu_seconds_per_1M": total}
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
