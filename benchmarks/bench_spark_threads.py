"""Where a Spark CLI run's CPU goes on a 2-core standalone cluster: per process and JVM thread.

Starts a master and one 2-core worker (as ``bench_spark``), then runs ``stepdown-ml score
--engine spark`` on the 1,000-row file and on FILE, each as a new application, and reads
``/proc`` every 0.2 s while it runs: the CPU seconds of the driver JVM, of the executor JVM
by thread kind (task threads, JIT compilers, GC, the rest), and of the Python processes
(the CLI and the executor's Python daemon and workers). Extra ``key=value`` arguments are
passed to the runs as ``--conf`` (quote values with spaces).

Usage: python -m benchmarks.bench_spark_threads FILE [key=value ...]
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_spark_stages import _processes, descendants, thread_times
from benchmarks.common import candidates_csv, cli
from stepdown_ml.core import config
from tests.e2e.spark_cluster import start_cluster


def _role(command: str) -> str:
    if "CoarseGrainedExecutorBackend" in command:
        return "executor"
    if "SparkSubmit" in command:
        return "driver"
    return "python" if "python" in command.split(" ")[0] else "other"


def _sample(seen: dict[tuple[int, str], float], table: dict, before: set[int]) -> None:
    """The CPU seconds so far of every process this run started (JVMs thread by thread)."""
    for pid in descendants(table) - before:
        command = table[pid][2]
        role = _role(command)
        if role != "executor":
            seen[(pid, role)] = table[pid][1]
            continue
        for thread, kind, seconds in thread_times(pid):
            seen[(thread, f"executor_{kind}")] = seconds


def _run(master: str, path: Path, out: Path) -> dict:
    before = set(descendants(_processes()))
    started = time.perf_counter()
    log = out.with_suffix(".log")
    with log.open("w") as errors:
        process = subprocess.Popen(
            [cli(), "score", str(path), "--engine", "spark", "--master", master, "--out", str(out),
             "--model-dir", str(config.DEFAULT_MODEL_DIR)],
            stdout=subprocess.DEVNULL, stderr=errors,
        )  # fmt: skip
        seen: dict[tuple[int, str], float] = {}
        while process.poll() is None:
            _sample(seen, _processes(), before)
            time.sleep(0.2)
    if process.returncode != 0:
        raise RuntimeError(f"{path}: {log.read_text()[-2000:]}")
    totals: dict[str, float] = {}
    for (_, role), seconds in seen.items():
        totals[role] = round(totals.get(role, 0.0) + seconds, 1)
    return {"seconds": round(time.perf_counter() - started, 1), "cpu_seconds": totals}


def main(path: str, settings: list[str]) -> dict:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        work = Path(tmp)
        cluster = start_cluster(work / "cluster", workers=1, cores=2, memory="6g", connect=False)
        try:
            os.environ.update(cluster.env)
            conf = " ".join(f"--conf {shlex.quote(s)}" for s in settings)
            os.environ["PYSPARK_SUBMIT_ARGS"] = (
                f"--conf spark.executor.memory=3g --conf spark.ui.enabled=false {conf} pyspark-shell"
            )
            report = {
                "file": path,
                "settings": settings,
                "spark_1000_rows": _run(cluster.master_url, candidates_csv(1_000), work / "tiny"),
                "spark": _run(cluster.master_url, Path(path), work / "big"),
            }
        finally:
            cluster.stop()
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if len(sys.argv) < 2 or not re.search(r"\.(csv|parquet)$", sys.argv[1]):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
