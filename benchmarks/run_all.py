"""Run every benchmark (the numbers recorded in docs/BENCHMARKS.md). `make benchmark`.

Writes one JSON object, keyed by benchmark, to docs/benchmark_results.json.
"""

from __future__ import annotations

import json

from benchmarks import (
    bench_generate_train,
    bench_install,
    bench_predict,
    bench_score,
    bench_spark,
    bench_workers,
    loadtest,
)
from stepdown_ml.core import config
from stepdown_ml.core.tables import atomic_path

RESULTS = config.WORK_DIR / "docs" / "benchmark_results.json"


def main() -> None:
    results = {
        "generate_train": bench_generate_train.main(),
        "predict": bench_predict.main(),
        "score": bench_score.main([1_000_000, 5_000_000]),
        "workers": bench_workers.main(1_000_000, [1, 2]),
        "spark": bench_spark.main([1_000_000, 5_000_000]),
        "http": loadtest.main([]),
        "install": bench_install.main(),
    }
    with atomic_path(RESULTS) as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
