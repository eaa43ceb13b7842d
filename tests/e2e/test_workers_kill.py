"""End to end: a scoring worker process killed mid-run fails the run cleanly."""

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


def test_a_killed_worker_fails_the_run_with_one_line_and_no_output(candidates, tmp_path, served_model_dir):
    source = tmp_path / "in.csv"
    write_csv(pd.concat([candidates] * 60, ignore_index=True), source)  # 360k rows: a few seconds
    out = tmp_path / "out" / "scores.csv"
    command = [sys.executable, "-m", "stepdown_ml", "score", str(source), "--out", str(out)]
    run = subprocess.Popen(
        [*command, "--workers", "2", "--model-dir", str(served_model_dir)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_children(run.pid)) < 2 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.02)
        workers = _children(run.pid)
        assert len(workers) == 2, "the workers did not start"
        time.sleep(0.3)  # the workers are scoring
        assert run.poll() is None, "the run ended before a worker could be killed: use a larger file"
        os.kill(workers[1], signal.SIGKILL)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for words in ("worker process", "killed by SIGKILL", "no output written"):
        assert words in lines[0]
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no output, no temporary file
    assert not Path(f"/proc/{workers[0]}").exists()  # the other worker did not outlive the run
