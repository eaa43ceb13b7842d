"""Where a Spark run's CPU goes: the JVM against the Python workers, per phase (local[2]).

Scores FILE in this process on ``local[2]`` and reads the CPU time of the JVM and of the
Python workers (``/proc``) after the session starts, after the scoring pass (read, score,
cache) and after the outputs are written. Comparing two sizes separates the fixed costs
(JVM start, JIT, Python worker start) from the per-row ones.

Usage: python -m benchmarks.bench_spark_stages FILE [parquet|csv]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from stepdown_ml.core import config
from stepdown_ml.serving.spark import score_spark, spark_session, write_outputs

HZ = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float, str]]:
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat, open(f"/proc/{name}/cmdline") as cmdline:
                fields = stat.read().rsplit(")", 1)[1].split()
                command = cmdline.read().replace("\0", " ")
        except OSError:
            continue
        found[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / HZ, command)
    return found


def cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process's descendants: the JVM, and the Python workers."""
    table = _processes()
    mine = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, (parent, _, _) in table.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                grew = True
    jvm = python = 0.0
    for pid in mine - {os.getpid()}:
        if pid not in table:
            continue
        _, seconds, command = table[pid]
        program = command.split(" ")[0]
        if program.endswith("java"):
            jvm += seconds
        elif "python" in program:
            python += seconds
    return {"jvm": round(jvm, 1), "python_workers": round(python, 1)}


def main(path: str, fmt: str = "parquet") -> dict:
    spark = spark_session("local[2]")
    marks = {"session": cpu_seconds()}
    started = time.perf_counter()
    result = score_spark(spark, path, config.DEFAULT_MODEL_DIR)
    marks["scored"] = {**cpu_seconds(), "wall": round(time.perf_counter() - started, 1)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        write_outputs(result.scores, result.rejects, f"{out}/o", fmt=fmt)
    marks["written"] = {**cpu_seconds(), "wall": round(time.perf_counter() - started, 1)}
    spark.stop()
    report = {"file": path, "rows": result.rows, **marks}
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main(*sys.argv[1:3])
