"""End to end: `score --workers 2` killed or stopped mid-run fails cleanly, leaving nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from stepdown_ml.core.tables import write_csv

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory, candidates) -> Path:
    source = tmp_path_factory.mktemp("workers") / "in.csv"
    write_csv(pd.concat([candidates] * 60, ignore_index=True), source)  # 360k rows: seconds to score
    return source


def _start_and_hit(big_csv: Path, out: Path, model_dir: Path, hit) -> tuple[int, str, list[int]]:
    command = [sys.executable, "-m", "stepdown_ml", "score", str(big_csv), "--out", str(out)]
    run = subprocess.Popen(
        [*command, "--workers", "2", "--model-dir", str(model_dir)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(_children(run.pid)) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.02)
        workers = _children(run.pid)
        assert len(workers) == 2, "the workers did not start"
        time.sleep(0.3)  # the workers are scoring
        assert run.poll() is None, "the run ended before it could be stopped: use a larger file"
        hit(run.pid, workers)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    return run.returncode, stderr, workers


@pytest.mark.parametrize(
    ("hit", "code", "words"),
    [
        (lambda parent, workers: os.kill(workers[1], signal.SIGKILL), 1, "killed by SIGKILL"),
        (lambda parent, workers: os.kill(parent, signal.SIGTERM), 128 + signal.SIGTERM, "terminated"),
        (lambda parent, workers: os.kill(parent, signal.SIGINT), 128 + signal.SIGINT, "interrupted"),
    ],
    ids=["worker-sigkill", "sigterm", "sigint"],
)
def test_a_stopped_run_has_one_line_no_output_and_no_worker_left(
    big_csv, tmp_path, served_model_dir, hit, code, words
):
    out = tmp_path / "out" / "scores.csv"
    returncode, stderr, workers = _start_and_hit(big_csv, out, served_model_dir, hit)
    assert returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert words in lines[0] and "no output written" in lines[0]
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no output, no temporary file
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # no worker outlived the run


def _ended(pid: int) -> bool:
    """Gone, or a zombie (ended; a container's init may never reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def test_workers_end_with_a_killed_parent_and_free_the_output(big_csv, tmp_path, served_model_dir):
    """SIGKILL to the parent (no handler runs): the kernel ends the workers with it, so none keeps
    scoring or holds the output's lock, and the next run to the same output succeeds and
    removes the temporary files and part folder that the killed run left."""
    out = tmp_path / "out" / "scores.csv"
    returncode, _, workers = _start_and_hit(
        big_csv, out, served_model_dir, lambda parent, workers: os.kill(parent, signal.SIGKILL)
    )
    assert returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.parent.iterdir())
    assert any(name.endswith(".parts") for name in left), left  # the killed run's part folder
    assert sum(name.endswith(".part") for name in left) == 2, left  # its scores and rejects
    deadline = time.monotonic() + 5
    while not all(_ended(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_ended(pid) for pid in workers), "a worker outlived its killed parent"
    small = tmp_path / "small.csv"
    with open(big_csv, "rb") as source, open(small, "wb") as head:
        head.writelines(line for _, line in zip(range(101), source, strict=False))
    done = subprocess.run(
        [sys.executable, "-m", "stepdown_ml", "score", str(small), "--out", str(out), "--workers", "2",
         "--model-dir", str(served_model_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.csv", "scores.rejects.csv"]
