"""What each install of stepdown_ml weighs: installed size and start-up time.

Sizes are the files of every distribution in the dependency closure of ``stepdown_ml``
with the given extras, as installed in this environment (the same versions pip would
install). Times are fresh interpreters, best of several: the first ``predict()`` of a
service, and the import of the training stack that the base install leaves out.

    python -m benchmarks.bench_install
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

INSTALLS = {"base": (), "mlflow": ("mlflow",), "train": ("train",), "train+spark": ("train", "spark")}


def closure(extras: tuple[str, ...]) -> set[str]:
    """Canonical names of the distributions ``stepdown_ml[extras]`` pulls in."""
    visited: set[tuple[str, str]] = set()
    todo = [("stepdown-ml", extra) for extra in ("", *extras)]
    while todo:
        name, extra = todo.pop()
        key = canonicalize_name(name)
        if (key, extra) in visited:
            continue
        visited.add((key, extra))
        for text in metadata.distribution(key).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                todo += [(requirement.name, e) for e in ("", *requirement.extras)]
    return {name for name, _ in visited}


def size_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        for file in metadata.distribution(name).files or ():
            located = file.locate()
            if located.is_file():
                total += located.stat().st_size
    return total / 1e6


def best_seconds(code: str, *args: str, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


# A service's start: import, load the packaged model, score one record.
FIRST_PREDICT = "import json, sys; from stepdown_ml import predict; predict(json.loads(sys.argv[1]))"


RECORD = {
    "candidate_id": "c-1",
    "motive": "career_change",
    "necessity_avoidable": None,
    "current_level": 6,
    "target_level": 4,
    "current_function": "finance",
    "target_function": "data",
    "current_industry": "software",
    "target_industry": "software",
    "same_employer": 0,
    "current_skills": "excel;sql;statistics",
    "target_skills": "sql;statistics;python",
    "years_experience": 12.5,
    "performance_rating": 4,
    "fit_score": 3,
    "promotion_path": 1,
    "unemployment_rate": 5.5,
    "months_unemployed": 0,
    "age_band": "35-44",
    "region": "EU",
}


def main() -> dict:
    sizes = {}
    for label, extras in INSTALLS.items():
        names = closure(extras)
        sizes[label] = {"distributions": len(names), "installed_mb": round(size_mb(names), 1)}
    times = {
        "python_start_s": round(best_seconds("pass"), 3),
        "first_predict_s": round(best_seconds(FIRST_PREDICT, json.dumps(RECORD)), 3),
        "import_training_stack_s": round(
            best_seconds("import sklearn.ensemble, skl2onnx, mlflow, stepdown_ml.training.train"), 3
        ),
    }
    report = {"sizes": sizes, "times": times}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
