"""Where a Spark run's CPU goes: the JVM against the Python workers, per phase (local[2]).

Scores FILE in this process on ``local[2]`` and reads the CPU time of the JVM and of the
Python workers (``/proc``) after the session starts and after the outputs are written: by
default through ``score_spark_to`` (the CLI's path: one pass, scores written from it), with
``cached`` through ``score_spark`` then ``write_outputs`` (a mark after the cached scoring
pass too). Comparing two sizes separates the fixed costs (JVM start, JIT, Python worker
start) from the per-row ones.

Usage: python -m benchmarks.bench_spark_stages FILE [parquet|csv] [cached]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

from stepdown_ml.core import config
from stepdown_ml.serving.spark import score_spark, score_spark_to, spark_session, write_outputs

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


def descendants(table: dict[int, tuple[int, float, str]]) -> set[int]:
    """The processes of ``table`` that descend from this one."""
    mine, grew = {os.getpid()}, True
    while grew:
        grew = False
        for pid, (parent, _, _) in table.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                grew = True
    return {pid for pid in mine - {os.getpid()} if pid in table}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process's descendants: the JVM, and the Python workers."""
    table = _processes()
    jvm = python = 0.0
    for pid in descendants(table):
        _, seconds, command = table[pid]
        program = command.split(" ")[0]
        if program.endswith("java"):
            jvm += seconds
        elif "python" in program:
            python += seconds
    return {"jvm": round(jvm, 1), "python_workers": round(python, 1)}


def jvm_threads() -> dict[str, float]:
    """CPU seconds of the JVM's threads, grouped by kind (task threads, JIT compilers, GC, the rest)."""
    groups: dict[str, float] = {}
    table = _processes()
    for pid in descendants(table):
        if not table[pid][2].split(" ")[0].endswith("java"):
            continue
        for _, kind, seconds in thread_times(pid):
            groups[kind] = round(groups.get(kind, 0.0) + seconds, 1)
    return groups


def thread_times(pid: int) -> list[tuple[int, str, float]]:
    """``(thread id, kind, CPU seconds)`` of each thread of a JVM (kinds: tasks, jit, gc, other)."""
    found = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        kind = next((k for k, p in _THREAD_KINDS if p in name), "other")
        found.append((int(thread), kind, (int(fields[11]) + int(fields[12])) / HZ))
    return found


_THREAD_KINDS = [("tasks", "Executor task"), ("jit", "Compiler"), ("gc", "GC"), ("gc", "G1")]


def main(path: str, fmt: str = "parquet", path_kind: str = "one-pass") -> dict:
    spark = spark_session("local[2]")
    marks = {"session": cpu_seconds()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        if path_kind == "cached":
            result = score_spark(spark, path, config.DEFAULT_MODEL_DIR)
            marks["scored"] = {**cpu_seconds(), "wall": round(time.perf_counter() - started, 1)}
            write_outputs(result.scores, result.rejects, f"{out}/o", fmt=fmt)
            rows = result.rows
        else:
            rows = score_spark_to(spark, path, f"{out}/o", config.DEFAULT_MODEL_DIR, fmt).rows
    marks["written"] = {**cpu_seconds(), "wall": round(time.perf_counter() - started, 1)}
    marks["jvm_threads"] = jvm_threads()
    spark.stop()
    report = {"file": path, "path": path_kind, "rows": rows, **marks}
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main(*sys.argv[1:4])
