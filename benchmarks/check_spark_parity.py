"""A large file scored on a standalone cluster equals the single-process result, row for row.

Starts a standalone master and two workers (as the tests do), makes a mixed file of ROWS
generated candidates (with ``person_id``, so ranks too, bad values and malformed lines),
scores it with ``stepdown-ml score`` and with ``stepdown-ml score --engine spark --master
spark://…`` in CSV and in Parquet, and compares scores, recommendations, reasons, ranks and
rejects row for row.

With ``--no-persons`` the file has no ``person_id`` (nothing to rank): the Spark engine then
writes the scores straight from its scoring pass, and the rejects from what that pass observed.

Usage: python -m benchmarks.check_spark_parity [ROWS] [--no-persons]   (default 200000)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import candidates_csv, cli
from tests.e2e.parity import assert_same, read_csv_dir, read_parquet_dir, single_process
from tests.e2e.spark_cluster import start_cluster


def mixed_file(rows: int, path: Path, persons: bool = True) -> int:
    """``rows`` candidates (with persons), some bad values and malformed lines; returns the bad lines."""
    source = candidates_csv(rows)
    bad = 0
    with open(source, encoding="utf-8") as lines, open(path, "w", encoding="utf-8") as out:
        out.write(next(lines).rstrip("\n") + (",person_id\n" if persons else "\n"))
        for i, line in enumerate(lines):
            if i % 9973 == 5:
                out.write('"broken,1,2\n')  # a quote that does not close: a malformed row
                bad += 1
            fields = line.rstrip("\n").split(",")
            if i % 7919 == 3:
                fields[1] = "curiosity"  # not a motive
                bad += 1
            if i % 6007 == 11:
                fields[0] = "=HYPERLINK()"  # formula-like: neutralized in every output
            out.write(",".join(fields) + (f",p{i % 50021}\n" if persons else "\n"))
    return bad


def main(rows: int, persons: bool = True) -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        work = Path(tmp)
        path = work / "mixed.csv"
        bad = mixed_file(rows, path, persons)
        cluster = start_cluster(work / "cluster", connect=False)
        try:
            for fmt in ("csv", "parquet"):
                local, local_rejects = single_process(path, work / f"local.{fmt}", cli_model())
                out = work / f"spark-{fmt}"
                done = subprocess.run(
                    [cli(), "score", str(path), "--engine", "spark", "--master", cluster.master_url,
                     "--output-format", fmt, "--out", str(out)],
                    capture_output=True, text=True, env=cluster.env,
                )  # fmt: skip
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-3000:])
                read = read_csv_dir if fmt == "csv" else read_parquet_dir
                spark_scores, spark_rejects = read(out / "scores"), read_csv_dir(out / "rejects")
                assert_same(spark_scores, spark_rejects, local, local_rejects)
                print(
                    f"{fmt}: {len(local):,} scores and {len(local_rejects):,} rejects ({bad} bad lines "
                    f"planted) equal row for row; {summary(done.stderr)}",
                    flush=True,
                )
        finally:
            cluster.stop()


def summary(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("scored ")), "")


def cli_model() -> Path:
    from stepdown_ml.core import config

    return Path(config.DEFAULT_MODEL_DIR)


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    main(int(numbers[0]) if numbers else 200_000, persons="--no-persons" not in sys.argv)
