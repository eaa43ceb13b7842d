"""The cost of the drift report: ``stepdown-ml score`` with and without ``--report``.

Two measurements on the same 1M-row candidate file (copied to tmpfs, outputs there too):

1. the CLI as a user runs it, the two commands alternating, best of REPEATS each: wall
   time, CPU time (user + system, less sensitive to other load on a shared machine) and
   peak RSS of the scoring process;
2. in-process on one thread: every block of the file parsed once into memory, then
   ``score_block`` over all of them without and with the profile spec, alternating, best of
   REPEATS: the report's own cost, without reading or writing.

Usage: python -m benchmarks.bench_monitoring [ROWS] [REPEATS]   (default 1000000 5)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from benchmarks.common import candidates_csv, cli
from stepdown_ml.core import config
from stepdown_ml.core.monitoring import load_reference
from stepdown_ml.serving import Model
from stepdown_ml.serving.batch import csv_blocks, score_block

TMPFS = Path("/dev/shm")
# Starts the command from a small process (a fork of this one would inherit its pages) and
# reports its exit code, wall seconds, CPU seconds and peak RSS (KB).
_LAUNCHER = (
    "import os, sys, time\n"
    "start = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), time.perf_counter() - start,\n"
    "      usage.ru_utime + usage.ru_stime, usage.ru_maxrss)\n"
)


def run(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of one command."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args], capture_output=True, text=True, env=dict(os.environ)
    )
    code, wall, cpu, rss = done.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{args} failed: {done.stderr[-2000:]}")
    return float(wall), float(cpu), int(rss) / 1024


def cli_runs(source: Path, work: Path, repeats: int) -> dict:
    command = [cli(), "score", str(source), "--out", str(work / "scores.csv")]
    command += ["--model-dir", str(config.DEFAULT_MODEL_DIR)]
    plain, reported = [], []
    for _ in range(repeats):
        plain.append(run(command))
        reported.append(run([*command, "--report", str(work / "report.json")]))
    flags = json.loads((work / "report.json").read_text())["flagged"]

    def best(runs: list[tuple[float, float, float]], i: int) -> float:
        return min(r[i] for r in runs)

    return {
        "wall_all": [round(r[0], 2) for r in plain],
        "wall_with_report_all": [round(r[0], 2) for r in reported],
        "wall_best": round(best(plain, 0), 2),
        "wall_with_report_best": round(best(reported, 0), 2),
        "wall_slower_percent": round(100 * (best(reported, 0) / best(plain, 0) - 1), 1),
        "cpu_best": round(best(plain, 1), 2),
        "cpu_with_report_best": round(best(reported, 1), 2),
        "cpu_more_percent": round(100 * (best(reported, 1) / best(plain, 1) - 1), 1),
        "peak_rss_mb": round(max(r[2] for r in plain)),
        "peak_rss_with_report_mb": round(max(r[2] for r in reported)),
        "report_flags": flags,
    }


def in_process(source: Path, repeats: int) -> dict:
    model = Model(config.DEFAULT_MODEL_DIR)
    spec = load_reference(model.model_dir, model.manifest).spec
    with open(source, encoding="utf-8") as handle:
        header = next(csv.reader([handle.readline()]))
    blocks = list(csv_blocks(pa.OSFile(str(source)), header, str(source)))
    timings: dict[str, list[float]] = {"plain": [], "with_profile": []}
    for _ in range(repeats):
        for name, profile in (("plain", None), ("with_profile", spec)):
            start = time.process_time()
            for frame, numbers, malformed in blocks:
                score_block(model, frame, numbers, malformed, profile)
            timings[name].append(time.process_time() - start)
    plain, profiled = min(timings["plain"]), min(timings["with_profile"])
    return {
        "blocks": len(blocks),
        "score_block_cpu_all": [round(t, 2) for t in timings["plain"]],
        "score_block_with_profile_cpu_all": [round(t, 2) for t in timings["with_profile"]],
        "profile_cpu_seconds": round(profiled - plain, 3),
        "profile_cpu_percent": round(100 * (profiled / plain - 1), 1),
    }


def main(rows: int = 1_000_000, repeats: int = 5) -> dict:
    base = TMPFS if TMPFS.is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp)
        source = work / "candidates.csv"
        shutil.copyfile(candidates_csv(rows), source)
        result = {"rows": rows, "tmpfs": base is not None, "load_before": os.getloadavg()[0]}
        result["cli"] = cli_runs(source, work, repeats)
        print(json.dumps(result["cli"]), flush=True)
        result["in_process_one_thread"] = in_process(source, repeats)
        result["load_after"] = os.getloadavg()[0]
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
