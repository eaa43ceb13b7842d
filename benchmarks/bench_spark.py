"""Spark on a 2-core standalone cluster vs the single-process scorer, same file, same run.

A standalone master and one worker with 2 cores (separate JVMs, 127.0.0.1) are started
once; then, alternating, ``stepdown-ml score`` (the single process) and ``stepdown-ml score
--engine spark --master spark://…`` (a new driver and executor each time, Parquet output)
on the same file, and the Spark CLI on a 1,000-row file: its wall time is the fixed
start-up cost (JVM driver, executor, Python workers, job planning), reported separately.

Usage: python -m benchmarks.bench_spark [ROWS ...]   (default 1000000 5000000)
Environment: BENCH_ROUNDS (default 3), BENCH_EXECUTOR_MEMORY (default 3g), BENCH_SPARK_CONF
(more ``key=value`` settings for the Spark runs, separated by spaces).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.common import candidates_csv, cli, run_child
from stepdown_ml.core import config
from tests.e2e.spark_cluster import start_cluster

CORES = 2
TINY = 1_000


def _spark(master: str, path: Path, out: Path) -> float:
    seconds, _ = run_child(
        [cli(), "score", str(path), "--engine", "spark", "--master", master, "--out", str(out),
         "--model-dir", str(config.DEFAULT_MODEL_DIR)]
    )  # fmt: skip
    return seconds


def _local(path: Path, out: Path) -> float:
    seconds, _ = run_child(
        [cli(), "score", str(path), "--out", str(out), "--model-dir", str(config.DEFAULT_MODEL_DIR)]
    )
    return seconds


def main(sizes: list[int]) -> list[dict]:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    memory = os.environ.get("BENCH_EXECUTOR_MEMORY", "3g")
    results = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        work = Path(tmp)
        cluster = start_cluster(work / "cluster", workers=1, cores=CORES, memory="6g", connect=False)
        try:
            os.environ.update(cluster.env)
            extra = "".join(
                f" --conf {setting}" for setting in os.environ.get("BENCH_SPARK_CONF", "").split()
            )
            os.environ["PYSPARK_SUBMIT_ARGS"] = (
                f"--conf spark.executor.memory={memory} --conf spark.ui.enabled=false{extra} pyspark-shell"
            )
            tiny = candidates_csv(TINY)
            for rows in sizes:
                path = candidates_csv(rows)
                local_s, spark_s, fixed_s = [], [], []
                for i in range(rounds):
                    local_s.append(_local(path, work / f"local{rows}_{i}.csv"))
                    spark_s.append(_spark(cluster.master_url, path, work / f"spark{rows}_{i}"))
                    fixed_s.append(_spark(cluster.master_url, tiny, work / f"tiny{rows}_{i}"))
                    print(
                        json.dumps(
                            {"rows": rows, "local": local_s[-1], "spark": spark_s[-1], "fixed": fixed_s[-1]}
                        ),
                        flush=True,
                    )
                local, spark, fixed = min(local_s), min(spark_s), min(fixed_s)
                local_per_core = rows / local / CORES
                spark_per_core = rows / spark / CORES
                results.append(
                    {
                        "rows": rows,
                        "rounds": {"single_process": local_s, "spark": spark_s, "spark_1000_rows": fixed_s},
                        "single_process_seconds": round(local, 2),
                        "single_process_rows_per_second_per_core": round(local_per_core),
                        "spark_seconds": round(spark, 2),
                        "spark_rows_per_second_per_core": round(spark_per_core),
                        "spark_fixed_startup_seconds": round(fixed, 2),
                        "spark_rows_per_second_per_core_after_startup": round(rows / (spark - fixed) / CORES),
                        "per_core_ratio": round(spark_per_core / local_per_core, 3),
                        "per_core_ratio_after_startup": round(
                            rows / (spark - fixed) / CORES / local_per_core, 3
                        ),
                    }
                )
                print(json.dumps(results[-1]), flush=True)
        finally:
            cluster.stop()
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 5_000_000])
