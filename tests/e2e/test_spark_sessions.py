"""One process, one kind of Spark session after another: Spark Connect on the test cluster, then
a classic session on a master (a notebook or a service that scores both ways). Each scores the
same file, as the single process does."""

from __future__ import annotations

import os
import sys

import pytest

from stepdown_ml.core import config
from tests.e2e.parity import assert_output_same, single_process

pytest.importorskip("pyspark")
pytestmark = pytest.mark.slow
DEFAULT = config.DEFAULT_MODEL_DIR


def test_a_classic_session_after_a_stopped_connect_session(spark_cluster, messy_csv, tmp_path, monkeypatch):
    """PySpark keeps its Connect mark after an sc:// session stops; spark_session() forgets it,
    so the next session on a master is a classic one, not CONNECT_URL_NOT_SET."""
    from stepdown_ml.serving.spark import CONNECT_MARK, score_spark, spark_session, write_outputs

    local, local_rejects = single_process(messy_csv, tmp_path / "local.csv", DEFAULT)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    for kind, master in (("connect", spark_cluster.connect_url), ("classic", "local[1]")):
        session = spark_session(master)
        try:
            assert (CONNECT_MARK in os.environ) == (kind == "connect")
            assert type(session).__module__.startswith("pyspark.sql.connect") == (kind == "connect")
            result = score_spark(session, str(messy_csv), DEFAULT)
            write_outputs(result.scores, result.rejects, tmp_path / kind, fmt="csv")
        finally:
            session.stop()
        assert_output_same(tmp_path / kind, "csv", local, local_rejects)
