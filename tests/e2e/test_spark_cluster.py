"""Spark scoring on a real cluster: a standalone master and two workers (separate JVMs), a
driver in its own process (the CLI, and the CLI under spark-submit), and a Spark Connect
session. Each run is compared row for row with the single-process scorer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepdown_ml import cli
from stepdown_ml.core import config
from stepdown_ml.core.schema import ContractError
from tests.e2e.parity import assert_output_same, assert_same, read_csv_dir, read_parquet_dir, single_process

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow
DEFAULT = config.DEFAULT_MODEL_DIR
BIN = Path(sys.executable).parent
# Small splits: the test files are read by several tasks on both workers, as a big file would be.
SPLIT_BYTES = "65536"


def _driver_env(cluster) -> dict[str, str]:
    return {
        **cluster.env,
        "STEPDOWN_SPARK_SPLIT_BYTES": SPLIT_BYTES,
        "PYSPARK_SUBMIT_ARGS": " ".join([*cluster.driver_conf(), "pyspark-shell"]),
    }


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("option", ["--master", "--remote"])
def test_cli_on_the_cluster(spark_cluster, messy_unranked_csv, tmp_path, option):
    """`stepdown-ml score --engine spark --master spark://…` (a driver JVM of its own) and
    `--remote sc://…` (a thin client of the Connect server), on a file without persons (scores
    written straight from the scoring pass, rejects from what it observed): CSV output equals
    the single process's."""
    local, local_rejects = single_process(messy_unranked_csv, tmp_path / "local.csv", DEFAULT)
    url = spark_cluster.master_url if option == "--master" else spark_cluster.connect_url
    out = tmp_path / "cluster"
    done = _run(
        [str(BIN / "stepdown-ml"), "score", str(messy_unranked_csv), "--engine", "spark",
         option, url, "--output-format", "csv", "--out", str(out)],
        _driver_env(spark_cluster),
    )  # fmt: skip
    assert "scored 1197 rows, rejected 5 (5 problems)" in done.stderr
    assert_same(read_csv_dir(out / "scores"), read_csv_dir(out / "rejects"), local, local_rejects)
    assert "'=cmd()" in set(local["candidate_id"])


def test_spark_submit_on_the_standalone_cluster(spark_cluster, messy_csv, tmp_path):
    """The CLI module as a spark-submit application, on a file with persons (ranked, through the
    cached pass); Parquet output equals the single process's."""
    local, local_rejects = single_process(messy_csv, tmp_path / "local.parquet", DEFAULT)
    out = tmp_path / "submitted"
    _run(
        [str(BIN / "spark-submit"), "--master", spark_cluster.master_url, *spark_cluster.driver_conf(),
         cli.__file__, "score", str(messy_csv), "--engine", "spark", "--out", str(out)],
        _driver_env(spark_cluster),
    )  # fmt: skip
    assert_same(read_parquet_dir(out / "scores"), read_csv_dir(out / "rejects"), local, local_rejects)
    assert "'=cmd()" in set(local["candidate_id"])  # neutralized in Parquet too, by both engines


@pytest.fixture(scope="module")
def connect(spark_cluster):
    """A Spark Connect session on the cluster's Connect server (the driver runs in the server)."""
    from stepdown_ml.serving.spark import spark_session

    session = spark_session(spark_cluster.connect_url)
    session.conf.set("spark.sql.files.maxPartitionBytes", SPLIT_BYTES)
    yield session
    session.stop()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_score_spark_through_spark_connect(connect, messy_csv, tmp_path, fmt):
    """score_spark on an sc:// session, CSV and Parquet outputs: the single process's values."""
    from stepdown_ml.serving.spark import score_spark, write_outputs

    local, local_rejects = single_process(messy_csv, tmp_path / f"local.{fmt}", DEFAULT)
    result = score_spark(connect, str(messy_csv), DEFAULT)
    assert (result.rows, result.scored, result.problems, result.rejected_rows) == (1202, 1197, 5, 5)
    write_outputs(result.scores, result.rejects, tmp_path / "connect", fmt=fmt)
    assert_output_same(tmp_path / "connect", fmt, local, local_rejects)


def test_one_pass_writer_through_spark_connect(connect, messy_unranked_csv, tmp_path, monkeypatch):
    """score_spark_to on an sc:// session: the tallies and rejects observed with the pass; with no
    room for problems in what the pass sends back (cap 0), the rejects of a second pass."""
    from stepdown_ml.serving import spark as engine

    local, local_rejects = single_process(messy_unranked_csv, tmp_path / "local.parquet", DEFAULT)
    for cap in (engine.REJECTS_PER_SPLIT, 0):
        monkeypatch.setattr(engine, "REJECTS_PER_SPLIT", cap)
        out = tmp_path / f"connect-{cap}"
        summary = engine.score_spark_to(connect, str(messy_unranked_csv), out, DEFAULT, "parquet")
        assert (summary.rows, summary.scored, summary.problems, summary.rejected_rows) == (1202, 1197, 5, 5)
        assert_output_same(out, "parquet", local, local_rejects)


def test_parquet_input_through_spark_connect(connect, candidates, tmp_path):
    """Parquet in: row numbers are positions in the file; bad values rejected as by the single process."""
    from stepdown_ml.serving.spark import score_spark, write_outputs

    frame = candidates.head(900).astype(str).replace({"<NA>": ""})
    frame.loc[3, "fit_score"] = "9"
    frame.loc[610, "region"] = "Mars"
    path = tmp_path / "candidates.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=100)
    local, local_rejects = single_process(path, tmp_path / "local.csv", DEFAULT)
    result = score_spark(connect, str(path), DEFAULT)
    write_outputs(result.scores, result.rejects, tmp_path / "connect", fmt="csv")
    remote_rejects = read_csv_dir(tmp_path / "connect" / "rejects")
    assert_same(read_csv_dir(tmp_path / "connect" / "scores"), remote_rejects, local, local_rejects)
    assert list(remote_rejects["row"]) == ["4", "611"]


def test_registered_model_through_spark_connect(connect, messy_csv, tmp_path, monkeypatch):
    """--model-uri models:/name@champion: resolved by the registry on the driver, its bytes shipped."""
    import mlflow
    from mlflow import MlflowClient

    from stepdown_ml.mlops.tracking import input_example, log_model
    from stepdown_ml.serving.spark import score_spark

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    experiment = mlflow.create_experiment("connect", artifact_location=str(tmp_path / "artifacts"))
    sample = pd.read_csv(messy_csv, dtype=str, keep_default_na=False, nrows=20)
    with mlflow.start_run(experiment_id=experiment):
        info = log_model(DEFAULT, input_example(sample), config.REGISTERED_MODEL_NAME)
    MlflowClient().set_registered_model_alias(
        config.REGISTERED_MODEL_NAME, config.CHAMPION_ALIAS, info.registered_model_version
    )
    uri = f"models:/{config.REGISTERED_MODEL_NAME}@{config.CHAMPION_ALIAS}"
    by_uri = score_spark(connect, str(messy_csv), uri).scores.orderBy("file", "row").toPandas()
    by_dir = score_spark(connect, str(messy_csv), DEFAULT).scores.orderBy("file", "row").toPandas()
    pd.testing.assert_frame_equal(by_uri, by_dir)


def test_missing_column_through_spark_connect(connect, candidates, tmp_path):
    from stepdown_ml.serving.spark import score_spark

    path = tmp_path / "no_region.csv"
    candidates.head(10).drop(columns=["region"]).to_csv(path, index=False)
    with pytest.raises(ContractError, match="missing required column"):
        score_spark(connect, str(path), DEFAULT)


def test_csv_files_of_one_run_share_a_header(connect, candidates, tmp_path):
    """Two files in one run: rows numbered per file; a second header is refused, naming its file."""
    from stepdown_ml.serving.spark import score_spark

    frame = candidates.head(40).astype(object)
    frame.loc[7, "fit_score"] = 9
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_csv(tmp_path / "b.csv", index=False)
    rejects = score_spark(connect, [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], DEFAULT).rejects
    assert sorted((Path(r["file"]).name, r["row"]) for r in rejects.collect()) == [("a.csv", 8), ("b.csv", 8)]
    frame[list(reversed(frame.columns))].to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ContractError, match=r"b\.csv: its header differs"):
        score_spark(connect, [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], DEFAULT)
