"""Scale-out: Spark scoring equals the single-process scorer; the pyfunc works through spark_udf."""

from __future__ import annotations

import os
import sys

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepdown_ml.cli import main
from stepdown_ml.core import config
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, ContractError
from stepdown_ml.mlops.tracking import input_example, log_model
from tests.e2e.parity import assert_output_same, read_csv_dir, single_process

pyspark = pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow
DEFAULT = config.PACKAGED_MODEL_DIR


@pytest.fixture(scope="module")
def spark():
    from stepdown_ml.serving.spark import spark_session

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        spark_session("local[2]")
        .builder.config("spark.ui.enabled", "false")
        # Small splits: the test file is read by several partitions, as a big file would be.
        .config("spark.sql.files.maxPartitionBytes", "65536")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_equals_the_single_process_scorer(spark, messy_csv, tmp_path):
    """Scores, ranks and rejects: the same rows in the same order, the same values."""
    assert (
        main(["score", str(messy_csv), "--out", str(tmp_path / "local.csv"), "--model-dir", str(DEFAULT)])
        == 0
    )
    local = pd.read_csv(tmp_path / "local.csv", dtype=str, keep_default_na=False)
    local_rejects = pd.read_csv(tmp_path / "local.rejects.csv", dtype=str, keep_default_na=False)

    from stepdown_ml.serving.spark import score_spark, write_outputs

    scores, rejects = score_spark(spark, str(messy_csv), DEFAULT)
    assert scores.rdd.getNumPartitions() >= 1
    write_outputs(scores, rejects, tmp_path / "spark", fmt="csv")
    remote = read_csv_dir(tmp_path / "spark" / "scores")
    remote_rejects = read_csv_dir(tmp_path / "spark" / "rejects")

    assert list(remote.columns) == list(local.columns)
    assert list(remote["candidate_id"]) == list(local["candidate_id"])
    assert "'=cmd()" in set(remote["candidate_id"])
    np.testing.assert_allclose(
        remote["p_advance"].astype(float), local["p_advance"].astype(float), atol=1e-12
    )
    for column in ("recommendation", "reasons", "model_version", "rank"):
        assert list(remote[column]) == list(local[column]), column
    assert remote_rejects.to_dict("records") == local_rejects.to_dict("records")
    assert {"expected 21 fields, got 3", "expected 21 fields, got 1"} <= set(remote_rejects["reason"])


@pytest.mark.parametrize(("fmt", "cap"), [("csv", None), ("parquet", None), ("csv", 0)])
def test_one_pass_writer_equals_the_single_process_scorer(
    spark, messy_unranked_csv, tmp_path, monkeypatch, fmt, cap
):
    """score_spark_to (the CLI's path): scores written straight from the scoring pass, rejects
    from what that pass observed; with no room for problems (cap 0), from a second pass."""
    from stepdown_ml.serving import spark as engine

    passes = []
    scored = engine._Scan.scored
    monkeypatch.setattr(
        engine._Scan, "scored", lambda scan, *a, **k: passes.append(a) or scored(scan, *a, **k)
    )
    if cap is not None:
        monkeypatch.setattr(engine, "REJECTS_PER_SPLIT", cap)
    local, local_rejects = single_process(messy_unranked_csv, tmp_path / f"local.{fmt}", DEFAULT)
    summary = engine.score_spark_to(spark, str(messy_unranked_csv), tmp_path / "spark", DEFAULT, fmt)
    assert summary.line() == "scored 1197 rows, rejected 5 (5 problems)" and summary.rows == 1202
    assert len(passes) == (1 if cap is None else 2)
    assert_output_same(tmp_path / "spark", fmt, local, local_rejects)
    assert "rank" not in local.columns and "'=cmd()" in set(local["candidate_id"])


def test_one_pass_writer_refuses_a_second_header(spark, candidates, tmp_path):
    """The header is checked in the task that reads it: the scores job fails, nothing is committed."""
    from stepdown_ml.serving.spark import score_spark_to

    frame = candidates.head(40)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame[list(reversed(frame.columns))].to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ContractError, match=r"b\.csv: its header differs from the one of .*a\.csv"):
        score_spark_to(spark, [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], tmp_path / "out", DEFAULT)
    assert not (tmp_path / "out" / "scores" / "_SUCCESS").exists()
    assert not (tmp_path / "out" / "rejects").exists()


def test_spark_reads_parquet(spark, candidates, tmp_path):
    frame = candidates.head(300).astype(str).replace({"<NA>": ""})
    path = tmp_path / "candidates.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    from stepdown_ml.serving.spark import score_spark

    scores, rejects = score_spark(spark, str(path), DEFAULT)
    got = scores.orderBy("row").toPandas()
    expected = main(["score", str(path), "--out", str(tmp_path / "l.csv"), "--model-dir", str(DEFAULT)])
    assert expected == 0 and rejects.count() == 0
    local = pd.read_csv(tmp_path / "l.csv", dtype=str, keep_default_na=False)
    assert list(got["candidate_id"]) == list(local["candidate_id"])
    np.testing.assert_allclose(got["p_advance"], local["p_advance"].astype(float), atol=1e-12)


def test_cli_spark_engine_writes_partitions(messy_csv, tmp_path):
    out = tmp_path / "cli-out"
    code = main(
        [
            "score",
            str(messy_csv),
            "--engine",
            "spark",
            "--master",
            "local[2]",
            "--out",
            str(out),
            "--model-dir",
            str(DEFAULT),
        ]
    )
    assert code == 0
    table = pq.read_table(out / "scores")
    assert table.num_rows == 1200 - 3 and "rank" in table.column_names
    assert (out / "scores" / "_SUCCESS").exists() and (out / "rejects" / "_SUCCESS").exists()


def test_spark_udf_on_the_logged_pyfunc(spark, candidates, tmp_path, monkeypatch):
    """mlflow.pyfunc.spark_udf on the registered model gives the same p_advance as predict()."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    experiment = mlflow.create_experiment("spark-udf", artifact_location=str(tmp_path / "artifacts"))
    rows = candidates.head(50)
    with mlflow.start_run(experiment_id=experiment):
        info = log_model(DEFAULT, input_example(rows), config.REGISTERED_MODEL_NAME)
    registered = f"models:/{config.REGISTERED_MODEL_NAME}/{info.registered_model_version}"
    frame = spark.createDataFrame(rows.astype(str).replace({"<NA>": ""}))
    from pyspark.sql import functions as F  # noqa: N812

    udf = mlflow.pyfunc.spark_udf(
        spark,
        registered,
        result_type="candidate_id string, p_advance double, recommendation string, reasons string, "
        "model_version string",
        env_manager="local",
    )
    names = [c.name for c in CANDIDATE_COLUMNS]
    out = frame.select(udf(F.struct(*names)).alias("s")).select("s.*").toPandas()
    from stepdown_ml import predict

    expected = predict(rows, model=DEFAULT)
    assert list(out["candidate_id"]) == list(expected["candidate_id"])
    np.testing.assert_allclose(out["p_advance"], expected["p_advance"], atol=1e-12)


def test_python_workers_fork_from_the_daemon_that_imported_the_scorer(spark):
    """Every Python worker is forked by stepdown-ml's daemon, after it imported the scoring
    code and made the batch allocator settings, with the installed pyspark ahead of its zips
    (no source compiled per worker); the executors' JIT compiles only what stays hot."""

    def report(batches):  # nested: pickled by value, so unpickling it imports nothing of ours
        import sys as worker_sys

        imported = "stepdown_ml.serving.spark" in worker_sys.modules
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
            parent = handle.read().replace(b"\0", b" ").decode()
        pyspark_file = worker_sys.modules["pyspark"].__file__
        for _ in batches:
            pass
        pool = pa.default_memory_pool().backend_name
        import gc as worker_gc

        frozen = worker_gc.get_freeze_count()
        yield pa.RecordBatch.from_pydict(
            {
                "parent": [parent],
                "imported": [imported],
                "pyspark": [pyspark_file],
                "pool": [pool],
                "frozen": [frozen],
            }
        )

    schema = "parent string, imported boolean, pyspark string, pool string, frozen long"
    rows = spark.range(4, numPartitions=2).mapInArrow(report, schema)
    from stepdown_ml.serving.spark import JIT_OPTIONS

    assert JIT_OPTIONS in spark.sparkContext.getConf().get("spark.executor.extraJavaOptions")
    for row in rows.collect():
        assert "-m stepdown_ml.serving.spark_daemon" in row["parent"]
        assert row["imported"]
        assert ".zip" not in row["pyspark"]
        assert row["pool"] == "jemalloc"  # the daemon's allocator settings (serving.memory) reached it
        assert row["frozen"] > 10_000  # the daemon froze what it imported before forking
