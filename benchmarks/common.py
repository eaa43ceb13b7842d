"""Shared helpers of the benchmark scripts: cached input files and child-process measurement."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from stepdown_ml import config
from stepdown_ml.contract import CANDIDATE_COLUMNS
from stepdown_ml.generate import generate_transitions
from stepdown_ml.tables import write_csv

BENCH_DIR = config.GENERATED_DIR / "bench"
CHUNK = 1_000_000


def candidates_csv(rows: int, seed: int = 99) -> Path:
    """A candidate file of ``rows`` generated rows (built once, then reused)."""
    path = BENCH_DIR / f"candidates_{rows}.csv"
    if not path.exists():
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        parts = []
        for i, start in enumerate(range(0, rows, CHUNK)):
            part = BENCH_DIR / f".part_{rows}_{i}.csv"
            frame = generate_transitions(min(CHUNK, rows - start), seed + i)
            frame["candidate_id"] = [f"b{start + j:09d}" for j in range(len(frame))]
            write_csv(frame[[c.name for c in CANDIDATE_COLUMNS]], part)
            parts.append(part)
        with open(path, "wb") as out:
            for i, part in enumerate(parts):
                with open(part, "rb") as handle:
                    if i:
                        handle.readline()  # header once
                    out.write(handle.read())
                part.unlink()
    return path


def run_child(args: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB of that process)."""
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{args} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def cli() -> str:
    return str(Path(sys.executable).with_name("stepdown-ml"))
