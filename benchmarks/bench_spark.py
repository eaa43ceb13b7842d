"""Spark `local[2]` vs the single-process scorer on the same files, measured in the same run.

Usage: python -m benchmarks.bench_spark [ROWS ...]   (default 1000000 5000000)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import candidates_csv, cli, run_child
from stepdown_ml.core import config

CORES = 2


def main(sizes: list[int]) -> list[dict]:
    results = []
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            path = candidates_csv(rows)
            local_s, _ = run_child(
                [
                    cli(),
                    "score",
                    str(path),
                    "--out",
                    str(Path(tmp) / f"local{rows}.csv"),
                    "--model-dir",
                    str(config.DEFAULT_MODEL_DIR),
                ]
            )
            spark_s, _ = run_child(
                [
                    cli(),
                    "score",
                    str(path),
                    "--engine",
                    "spark",
                    "--master",
                    f"local[{CORES}]",
                    "--out",
                    str(Path(tmp) / f"spark{rows}"),
                    "--model-dir",
                    str(config.DEFAULT_MODEL_DIR),
                ]
            )
            results.append(
                {
                    "rows": rows,
                    "single_process_seconds": round(local_s, 2),
                    "single_process_rows_per_second": round(rows / local_s),
                    "spark_local2_seconds": round(spark_s, 2),
                    "spark_rows_per_second": round(rows / spark_s),
                    "spark_rows_per_second_per_core": round(rows / spark_s / CORES),
                    "spark_overhead_ratio": round(spark_s / local_s, 2),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 5_000_000])
