"""Row-for-row comparison of a Spark engine's output with the single-process scorer's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from stepdown_ml.cli import main
from stepdown_ml.core.tables import stem_of


def read_csv_dir(folder: Path) -> pd.DataFrame:
    """The part files of a Spark CSV output folder, in order, as text."""
    parts = sorted(Path(folder).glob("part-*.csv"))
    return pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in parts], ignore_index=True)


def read_parquet_dir(folder: Path) -> pd.DataFrame:
    """The part files of a Spark Parquet output folder, in order."""
    parts = sorted(Path(folder).glob("part-*.parquet"))
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


def single_process(source: Path, out: Path, model: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores (CSV or Parquet, by ``out``'s name) and rejects of ``stepdown-ml score``."""
    assert main(["score", str(source), "--out", str(out), "--model-dir", str(model)]) == 0
    scores = read_parquet_dir_or_file(out)
    rejects = pd.read_csv(out.with_name(stem_of(out) + ".rejects.csv"), dtype=str, keep_default_na=False)
    return scores, rejects


def read_parquet_dir_or_file(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pandas()
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def assert_same(
    spark_scores: pd.DataFrame, spark_rejects: pd.DataFrame, local: pd.DataFrame, local_rejects
) -> None:
    """Same rows in the same order: scores, recommendations, reasons, ranks; same rejects."""
    assert list(spark_scores.columns) == list(local.columns)
    assert len(spark_scores) == len(local)
    assert list(spark_scores["candidate_id"]) == list(local["candidate_id"])
    np.testing.assert_allclose(
        spark_scores["p_advance"].astype(float), local["p_advance"].astype(float), rtol=0, atol=1e-12
    )
    for column in spark_scores.columns.drop(["candidate_id", "p_advance"]):
        assert [str(v) for v in spark_scores[column]] == [str(v) for v in local[column]], column
    assert spark_rejects.to_dict("records") == local_rejects.to_dict("records")


def assert_output_same(out: Path, fmt: str, local: pd.DataFrame, local_rejects: pd.DataFrame) -> None:
    """:func:`assert_same` on a Spark output folder: ``out/scores`` (CSV or Parquet) and ``out/rejects``."""
    read = read_csv_dir if fmt == "csv" else read_parquet_dir
    assert_same(read(Path(out) / "scores"), read_csv_dir(Path(out) / "rejects"), local, local_rejects)
