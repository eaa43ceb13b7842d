"""Where the batch scorer's time goes: each stage of score_block, one thread, per 1M rows.

Usage: python -m benchmarks.bench_stages [ROWS]   (default 1000000)

Environment: BENCH_FILES=gen,oov (the generator's file, and the same rows with skills outside
the vocabulary), BENCH_ROUNDS (best of; default 2), STEPDOWN_BENCH_DIR (where the files are
built; use tmpfs). Stages are timed in CPU seconds of this thread, with the CLI's allocator
settings (serving.memory). The file is read as two worker processes read it (byte ranges of
whole lines, checked, then parsed as text); "onnx" is the ONNX Runtime call alone, and
"rules_reasons" the rest of the scoring call (probability, recommendation, reasons).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv

from benchmarks.common import chosen_files
from stepdown_ml.core import config
from stepdown_ml.core.config import DEFAULT_CHUNK_ROWS
from stepdown_ml.core.features import arrow_text
from stepdown_ml.core.schema import CANDIDATE_COLUMNS
from stepdown_ml.core.validation import validate_frame
from stepdown_ml.serving import Model
from stepdown_ml.serving.batch import SCORES_SCHEMA, InputFile, _scores_table
from stepdown_ml.serving.memory import tune_for_batch

# "onnx" is the ONNX Runtime call alone (its share of score_features_arrow); "rules_reasons" the
# rest of that call: probabilities, recommendation rules, reasons and the Arrow table.
STAGES = ("read", "validate", "features", "onnx", "rules_reasons", "write")


class _TimedSession:
    """The model's ONNX session, with the thread CPU time its ``run`` calls take added up."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.seconds = 0.0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.thread_time() - start


def stages(model: Model, path: Path) -> dict[str, float]:
    """CPU seconds of each stage over the whole file."""
    reader = InputFile(path, DEFAULT_CHUNK_ROWS)
    tasks = reader.tasks(2)
    assert tasks is not None, f"{path}: too small to cut into tasks"
    # The worker processes' reader: byte ranges of whole lines, checked and parsed as text.
    blocks = itertools.chain.from_iterable(reader.task_blocks(task) for task in tasks)
    seconds = dict.fromkeys(STAGES, 0.0)
    timed = _TimedSession(model.session)
    model.session = timed  # type: ignore[assignment]
    out = pacsv.CSVWriter(str(config.GENERATED_DIR / "bench" / "stages_out.csv"), SCORES_SCHEMA)
    mark = time.thread_time()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.thread_time()
        seconds[stage] += now - mark
        mark = now

    for batch, numbers, _ in blocks:
        lap("read")
        valid = validate_frame(batch, CANDIDATE_COLUMNS, row_numbers=numbers).valid_columns()
        lap("validate")
        features = model.features.transform(valid)
        lap("features")
        onnx_before = timed.seconds
        table = model.score_features_arrow(features, arrow_text(valid["candidate_id"]))
        lap("rules_reasons")
        seconds["onnx"] += timed.seconds - onnx_before
        seconds["rules_reasons"] -= timed.seconds - onnx_before
        out.write_table(_scores_table(table))
        lap("write")
    out.close()
    model.session = timed.session
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
