"""Where the batch scorer's time goes: each stage of score_block, one thread, per 1M rows.

Usage: python -m benchmarks.bench_stages [ROWS]   (default 1000000)
"""

from __future__ import annotations

import json
import sys
import time

import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.common import candidates_csv
from stepdown_ml.core import config
from stepdown_ml.core.features import arrow_text
from stepdown_ml.core.schema import CANDIDATE_COLUMNS
from stepdown_ml.core.validation import validate_frame
from stepdown_ml.serving import Model
from stepdown_ml.serving.batch import BLOCK_BYTES, SCORES_SCHEMA, _scores_table


def main(rows: int) -> None:
    model = Model(config.DEFAULT_MODEL_DIR)
    names = [c.name for c in CANDIDATE_COLUMNS]
    reader = pacsv.open_csv(
        candidates_csv(rows),
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
        convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )
    seconds = dict.fromkeys(("read", "validate", "features", "infer_rules_reasons", "write"), 0.0)
    out = pacsv.CSVWriter(str(config.GENERATED_DIR / "bench" / "stages_out.csv"), SCORES_SCHEMA)
    mark = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal mark
        now = time.perf_counter()
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
    scale = 1_000_000 / rows
    print(json.dumps({f"{k}_seconds_per_1M": round(v * scale, 2) for k, v in seconds.items()}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
