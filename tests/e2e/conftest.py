"""Fixtures of the Spark tests: a mixed good/bad input, the single-process reference, a real cluster."""

from __future__ import annotations

import shutil

import pytest

from stepdown_ml.core.tables import write_csv


@pytest.fixture(scope="session")
def messy_csv(tmp_path_factory, candidates):
    """Candidates with bad values, malformed lines, formula-like ids and persons across partitions."""
    return _messy(tmp_path_factory.mktemp("spark-in") / "candidates.csv", candidates, persons=True)


@pytest.fixture(scope="session")
def messy_unranked_csv(tmp_path_factory, candidates):
    """The same without ``person_id``: nothing to rank, so the Spark engine writes scores in one pass."""
    return _messy(tmp_path_factory.mktemp("spark-in") / "unranked.csv", candidates, persons=False)


def _messy(path, candidates, persons: bool):
    frame = candidates.head(1200).astype(object).copy()
    if persons:
        frame["person_id"] = [f"p{i % 13}" for i in range(len(frame))]
    frame.loc[5, "fit_score"] = 9
    frame.loc[700, "region"] = "Mars"
    frame.loc[900, "target_level"] = 10
    frame.loc[11, "candidate_id"] = "=cmd()"
    write_csv(frame, path)
    lines = path.read_text().splitlines()
    lines.insert(400, '"short-row",1,2')
    lines.insert(1000, "just one field")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A standalone master, two workers and a Spark Connect server (separate JVMs, 127.0.0.1),
    shared by the session's tests and stopped at its end, also when a test fails."""
    if shutil.which("java") is None:
        pytest.fail("the Spark cluster tests need Java 17+ on PATH (apt-get install openjdk-17-jre-headless)")
    from tests.e2e.spark_cluster import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
