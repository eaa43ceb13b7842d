"""Generator speed (1M rows, CSV included) and training time (100k and 1M rows).

Usage: python benchmarks/bench_generate_train.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks.common import cli, run_child


def main() -> dict:
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (1_000_000, 100_000):
            out = Path(tmp) / f"t{rows}.csv"
            seconds, peak = run_child(
                [cli(), "generate", "--rows", str(rows), "--seed", "1", "--out", str(out)]
            )
            report[f"generate_{rows}"] = {"seconds": round(seconds, 2), "peak_rss_mb": round(peak)}
        for rows in (100_000, 1_000_000):
            data = Path(tmp) / f"t{rows}.csv"
            seconds, peak = run_child(
                [
                    cli(),
                    "train",
                    "--no-track",
                    "--data",
                    str(data),
                    "--model-dir",
                    str(Path(tmp) / f"m{rows}"),
                ]
            )
            manifest = json.loads((Path(tmp) / f"m{rows}" / "manifest.json").read_text())
            report[f"train_{rows}"] = {
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(peak),
                "ensemble": manifest["ensemble"],
                "test_auc": round(manifest["metrics"]["test"]["roc_auc"], 4),
                "oracle_gap_auc": round(manifest["metrics"]["oracle_gap"]["roc_auc"], 4),
                "oracle_gap_brier": round(manifest["metrics"]["oracle_gap"]["brier"], 4),
            }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
