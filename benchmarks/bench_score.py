"""Batch scoring end to end (the CLI as a user runs it) vs the pyarrow floor.

Floor: the time pyarrow.csv takes merely to read the same file and write a one-column CSV
of the same length, measured in the same run. Usage:
python benchmarks/bench_score.py [ROWS ...]   (default 1000000 5000000)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.common import candidates_csv, cli, run_child
from stepdown_ml.core import config


def floor_seconds(path: Path, out: Path) -> float:
    start = time.perf_counter()
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"region": pa.string()}))
    pacsv.write_csv(pa.table({"candidate_id": table.column("candidate_id")}), out)
    return time.perf_counter() - start


REPEATS = 3


def main(sizes: list[int]) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            path = candidates_csv(rows)
            # Alternate the two, best of REPEATS each: both see the same page cache and load.
            floors, runs = [], []
            for _ in range(REPEATS):
                floors.append(floor_seconds(path, Path(tmp) / "floor.csv"))
                runs.append(
                    run_child(
                        [
                            cli(),
                            "score",
                            str(path),
                            "--out",
                            str(Path(tmp) / "scores.csv"),
                            "--model-dir",
                            str(config.DEFAULT_MODEL_DIR),
                        ]
                    )
                )
            seconds = min(r[0] for r in runs)
            floor = min(floors)
            results.append(
                {
                    "rows": rows,
                    "file_mb": round(path.stat().st_size / 2**20),
                    "score_seconds_best_of_3": round(seconds, 2),
                    "score_seconds_all": [round(r[0], 2) for r in runs],
                    "rows_per_second": round(rows / seconds),
                    "peak_rss_mb": round(max(r[1] for r in runs)),
                    "floor_seconds_best_of_3": round(floor, 2),
                    "floor_seconds_all": [round(f, 2) for f in floors],
                    "ratio_to_floor": round(seconds / floor, 2),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 5_000_000])
