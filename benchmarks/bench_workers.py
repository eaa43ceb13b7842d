"""Batch scoring against the number of worker processes, beside the pyarrow floor.

For each file (the generator's candidates and the same rows with out-of-vocabulary skills),
in the same run, alternating, best of ``BENCH_ROUNDS`` (default 3):

- the floor: a new Python process that reads the file with pyarrow's multi-threaded CSV
  reader and writes one column of it (interpreter start-up included, as for the scorer), run
  twice in a row each round;
- ``python -m stepdown_ml score FILE --out OUT --workers W`` for each W;
- the scorer's start-up: the same command on the file's first 1,000 rows.

Peak memory is measured in one more run of each command: the largest sum over the whole
process tree (the scorer and its workers) of the proportional set size (PSS: shared pages
split between the processes that share them; RSS where the kernel has no PSS), sampled
every 20 ms.

Usage: python -m benchmarks.bench_workers ROWS [WORKERS ...]   (default 1000000; 1 2)
Environment: BENCH_ROUNDS, STEPDOWN_BENCH_DIR (where the input files are built; use tmpfs),
BENCH_FILES=gen,oov.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import chosen_files

FLOOR = (
    "import sys, pyarrow as pa, pyarrow.csv as pacsv\n"
    "table = pacsv.read_csv(sys.argv[1], convert_options=pacsv.ConvertOptions("
    "column_types={'region': pa.string()}))\n"
    "pacsv.write_csv(pa.table({'candidate_id': table.column('candidate_id')}), sys.argv[2])\n"
)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(c) for c in handle.read().split())
    except OSError:
        pass
    return found


def _tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
    return pids


def _field_kb(path: str, name: str) -> int | None:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory_kb(pid: int) -> int:
    """The process's PSS (RSS where the kernel keeps no PSS), in kB; 0 once it is gone."""
    pss = _field_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
    return pss if pss is not None else _field_kb(f"/proc/{pid}/status", "VmRSS:") or 0


def run(command: list[str], sample: bool = False) -> tuple[float, float]:
    """Wall seconds of ``command``, and (with ``sample``) the tree's peak memory in MB."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.wait(0.02):
            peak = max(peak, sum(_memory_kb(pid) for pid in _tree(process.pid)))

    watcher = threading.Thread(target=watch, daemon=True)
    if sample:
        watcher.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    if sample:
        watcher.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed: {stderr.decode()[-2000:]}")
    return seconds, peak / 1024


def main(rows: int, workers: list[int]) -> list[dict]:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    cores = len(os.sched_getaffinity(0))
    results = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        out = Path(tmp)
        for name, path in chosen_files(rows).items():
            floor_cmd = [sys.executable, "-c", FLOOR, str(path), str(out / "floor.csv")]

            def score_cmd(w: int, path: Path = path) -> list[str]:
                base = [sys.executable, "-m", "stepdown_ml", "score", str(path), "--out", str(out / "s.csv")]
                return [*base, "--workers", str(w)]

            # The scorer's fixed cost: start-up, imports and model on the file's first 1,000 rows.
            small = out / f"{name}_1000.csv"
            with open(path, "rb") as source, open(small, "wb") as head:
                head.writelines(itertools.islice(source, 1001))
            floors: list[float] = []
            startups: list[float] = []
            times: dict[int, list[float]] = {w: [] for w in workers}
            for _ in range(rounds):
                startups.append(run(score_cmd(max(workers), small))[0])
                # Twice in a row: on a virtual machine, the first process after another that
                # freed its memory can wait on the host for fresh pages (1 GB here), which
                # the second does not: the best of both is the floor.
                floors.extend(run(floor_cmd)[0] for _ in range(2))
                for w in workers:
                    times[w].append(run(score_cmd(w))[0])
            floor_peak = run(floor_cmd, sample=True)[1]
            floor = min(floors)
            for w in workers:
                best = min(times[w])
                peak = run(score_cmd(w), sample=True)[1]
                results.append(
                    {
                        "file": name,
                        "rows": rows,
                        "file_mb": round(path.stat().st_size / 2**20),
                        "cores": cores,
                        "workers": w,
                        "seconds_best": round(best, 2),
                        "seconds_all": [round(t, 2) for t in times[w]],
                        "rows_per_second": round(rows / best),
                        "peak_memory_mb": round(peak),
                        "floor_seconds_best": round(floor, 2),
                        "floor_seconds_all": [round(f, 2) for f in floors],
                        "floor_peak_memory_mb": round(floor_peak),
                        "ratio_to_floor": round(best / floor, 2),
                        "startup_seconds_best": round(min(startups), 2),
                    }
                )
                print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:]]
    main(arguments[0] if arguments else 1_000_000, arguments[1:] or [1, 2])
