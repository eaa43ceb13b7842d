"""Spark on a 2-core standalone cluster vs the single-process scorer, same file, same run.

A standalone master and one worker with 2 cores (separate JVMs, 127.0.0.1) are started
once; then, alternating, ``stepdown-ml score`` (the single process) and ``stepdown-ml score
--engine spark --master spark://…`` (a new driver and executor each time, Parquet output)
on the same file, and the Spark CLI on a 1,000-row file: its wall time is the fixed
start-up cost (JVM driver, executor, Python workers, job planning), reported separately.
Then a Spark Connect server is started on the same cluster (a long-lived application, as a
shared cluster runs one) and the same CLI runs through it (``--master sc://…``): its first
run warms it up, then, alternating, the single process again, the file through the server
and the 1,000-row file through it (``warm_connect_server``).

Usage: python -m benchmarks.bench_spark [ROWS ...]   (default 1000000 5000000)
Environment: BENCH_ROUNDS (default 3), BENCH_EXECUTOR_MEMORY (default 3g), BENCH_SPARK_CONF
(more ``key=value`` settings for the Spark runs, separated by spaces).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.bench_spark_stages import _processes, descendants
from benchmarks.common import candidates_csv, cli, run_child
from stepdown_ml.core import config
from tests.e2e.spark_cluster import start_cluster, start_connect

CORES = 2
TINY = 1_000


class CpuMeter:
    """CPU seconds used by this process's descendants during a run (all of them: the CLI, the
    driver JVM, the executor JVM and its Python workers), read from ``/proc`` every 0.2 s.

    Robust to other load on the machine, unlike wall time: the figure to compare when the
    machine is shared."""

    def __init__(self) -> None:
        self.base = self._snapshot()
        self.last = dict(self.base)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    @staticmethod
    def _snapshot() -> dict[int, float]:
        table = _processes()
        return {pid: table[pid][1] for pid in descendants(table)}

    def _poll(self) -> None:
        while not self.done.wait(0.2):
            self.last.update(self._snapshot())

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        self.last.update(self._snapshot())
        return round(sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items()), 1)


def _measured(run, *args) -> tuple[float, float]:
    meter = CpuMeter()
    seconds = run(*args)
    return seconds, meter.stop()


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


def _alternate(
    master: str, rows: int, tiny: Path, rounds: int, work: Path, tag: str
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Rounds of, in turn: the single process, Spark on ``rows`` rows, Spark on the 1,000-row
    file; their wall and CPU seconds by run."""
    path = candidates_csv(rows)
    times: dict[str, list[float]] = {"single_process": [], "spark": [], "spark_1000_rows": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    for i in range(rounds):
        for name, run, args in (
            ("single_process", _local, (path, work / f"{tag}local{rows}_{i}.csv")),
            ("spark", _spark, (master, path, work / f"{tag}spark{rows}_{i}")),
            ("spark_1000_rows", _spark, (master, tiny, work / f"{tag}tiny{rows}_{i}")),
        ):
            seconds, cpu_seconds = _measured(run, *args)
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
        print(
            json.dumps({"rows": rows, "round": {k: v[-1] for k, v in times.items()}, "cpu": cpu}), flush=True
        )
    return times, cpu


def _figures(rows: int, times: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict:
    """Best of each run, and the per-core rates and ratios, the start-up run's time in and out."""
    local, spark, fixed = min(times["single_process"]), min(times["spark"]), min(times["spark_1000_rows"])
    local_per_core = rows / local / CORES
    spark_per_core = rows / spark / CORES
    return {
        "rows": rows,
        "rounds": times,
        "single_process_seconds": round(local, 2),
        "single_process_rows_per_second_per_core": round(local_per_core),
        "spark_seconds": round(spark, 2),
        "spark_rows_per_second_per_core": round(spark_per_core),
        "spark_fixed_startup_seconds": round(fixed, 2),
        "spark_rows_per_second_per_core_after_startup": round(rows / (spark - fixed) / CORES),
        "per_core_ratio": round(spark_per_core / local_per_core, 3),
        "per_core_ratio_after_startup": round(rows / (spark - fixed) / CORES / local_per_core, 3),
        "cpu_seconds": cpu,
        # rows per CPU-second, Spark against the single process (best runs), the start-up
        # run's CPU taken out: the per-core ratio when cores are not the limit
        "cpu_ratio_after_startup": round(
            min(cpu["single_process"]) / (min(cpu["spark"]) - min(cpu["spark_1000_rows"])), 3
        ),
    }


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
                results.append(_figures(rows, *_alternate(cluster.master_url, rows, tiny, rounds, work, "")))
                print(json.dumps(results[-1]), flush=True)
            _warm_server(cluster, memory, results, tiny, rounds, work)
        finally:
            cluster.stop()
    return results


def _warm_server(cluster, memory: str, results: list[dict], tiny: Path, rounds: int, work: Path) -> None:
    """The same scoring through a Spark Connect server on the same cluster, started once: a
    long-lived application whose executors, Python workers and JIT are warm after the first
    run. Its start (a one-off) is not timed; the first run of each file warms it up and is
    reported apart; then the rounds of :func:`_alternate` through it (its 1,000-row run is a
    client's start-up against a warm server)."""
    port = int(cluster.connect_url.rsplit(":", 1)[1])
    conf = ["--conf", f"spark.executor.memory={memory}", "--conf", "spark.ui.enabled=false"]
    start_connect(cluster, port, conf)
    for result in results:
        rows = result["rows"]
        first = _measured(_spark, cluster.connect_url, candidates_csv(rows), work / f"warmup{rows}")[0]
        warm = _figures(rows, *_alternate(cluster.connect_url, rows, tiny, rounds, work, "warm"))
        result["warm_connect_server"] = {"first_run_seconds": round(first, 2), **warm}
        print(json.dumps({"rows": rows, "warm_connect_server": result["warm_connect_server"]}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 5_000_000])
