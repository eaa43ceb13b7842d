"""This checkout against another git revision: predict() p50 and 1M-row batch scoring.

The 1M-row scoring runs twice: on generated candidates and on the same rows with every
skill token outside the vocabulary (``benchmarks.common.oov_candidates_csv``).

For changes that must not move the speed (a restructuring, say). The other revision is
checked out into a temporary worktree and imported through PYTHONPATH; both sides run the
same generated inputs, alternating, best of ROUNDS each, with files on tmpfs. Usage:
python -m benchmarks.bench_revisions REV [ROUNDS]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import compile_package
from benchmarks.common import candidates_csv, oov_candidates_csv, run_child
from stepdown_ml.core import config
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, names
from stepdown_ml.datasets.generate import generate_transitions

CALLS = 20_000
ROWS = 1_000_000
TMPFS = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())

# Times predict() on one record at a time with the committed default model of its tree.
_PREDICT = (
    "import json, sys, time\n"
    "from stepdown_ml import predict\n"
    "records = json.load(open(sys.argv[1]))\n"
    "for r in records[:500]: predict(r)\n"
    "times = []\n"
    "for r in records:\n"
    "    t = time.perf_counter_ns(); predict(r); times.append(time.perf_counter_ns() - t)\n"
    "times.sort(); print(times[len(times) // 2] / 1000)\n"
)


def predict_p50(src: Path, records: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", _PREDICT, str(records)], capture_output=True, text=True, env=env, check=True
    )
    return float(done.stdout.strip())


def score_seconds(src: Path, path: Path, out: Path) -> tuple[float, float]:
    os.environ["PYTHONPATH"] = str(src)
    try:
        return run_child([sys.executable, "-m", "stepdown_ml", "score", str(path), "--out", str(out)])
    finally:
        del os.environ["PYTHONPATH"]


def main(revision: str, rounds: int = 3) -> dict:
    work = Path(tempfile.mkdtemp(dir=TMPFS))
    other = work / "other"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(other), revision], check=True, capture_output=True
    )
    try:
        sides = {"this": config.PACKAGE_DIR.parent, revision: other / "src"}
        compile_package(other / "src")  # as installed, like this side (benchmarks/__init__.py)
        frame = generate_transitions(CALLS, 5)[names(CANDIDATE_COLUMNS)].astype(object)
        records = work / "records.json"
        records.write_text(json.dumps(frame.where(frame.notna(), None).to_dict("records")))
        data = work / "candidates.csv"
        shutil.copy(candidates_csv(ROWS), data)
        oov = work / "candidates_oov.csv"
        shutil.copy(oov_candidates_csv(ROWS), oov)
        p50: dict[str, list[float]] = {side: [] for side in sides}
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        oov_seconds: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(rounds):
            for side, src in sides.items():
                p50[side].append(predict_p50(src, records))
                seconds[side].append(score_seconds(src, data, work / "scores.csv")[0])
                oov_seconds[side].append(score_seconds(src, oov, work / "scores.csv")[0])
        report = {
            side: {
                "predict_p50_us_best": round(min(p50[side]), 2),
                "predict_p50_us_all": [round(v, 2) for v in p50[side]],
                "score_1m_seconds_best": round(min(seconds[side]), 2),
                "score_1m_seconds_all": [round(v, 2) for v in seconds[side]],
                "score_oov_1m_seconds_best": round(min(oov_seconds[side]), 2),
                "score_oov_1m_seconds_all": [round(v, 2) for v in oov_seconds[side]],
            }
            for side in sides
        }
        report["ratio_this_to_other"] = {
            "predict_p50": round(min(p50["this"]) / min(p50[revision]), 3),
            "score_1m": round(min(seconds["this"]) / min(seconds[revision]), 3),
            "score_oov_1m": round(min(oov_seconds["this"]) / min(oov_seconds[revision]), 3),
        }
        print(json.dumps(report, indent=2))
        return report
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(other)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
