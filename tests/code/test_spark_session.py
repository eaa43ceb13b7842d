"""What a classic Spark session of stepdown-ml is given: its Python daemon (which zips it moves
behind the installed pyspark), and the settings it leaves to spark-submit and the site."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from stepdown_ml.serving import spark_daemon
from stepdown_ml.serving.spark import (
    _CLASSIC_SETTINGS,
    CONNECT_MARK,
    SparkSessionError,
    _forget_stopped_connect,
    _given_settings,
)


def _installation(root: Path) -> tuple[Path, list[str]]:
    """A pip-installed pyspark under ``root``: the package, and the zips it ships in python/lib."""
    package = root / "site-packages" / "pyspark"
    (package / "python" / "lib").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    zips = [str(package / "python" / "lib" / name) for name in ("pyspark.zip", "py4j-0.10.9.9-src.zip")]
    for name in zips:
        Path(name).write_bytes(b"")
    return package, zips


def test_the_zips_of_the_installed_pyspark_go_last_and_leave_the_importer_cache(tmp_path, monkeypatch):
    package, zips = _installation(tmp_path)
    site = str(package.parent)
    path = [*zips, "/opt/app", site]
    monkeypatch.setattr(sys, "path", list(path))
    monkeypatch.setattr(sys, "path_importer_cache", {p: object() for p in path})

    spark_daemon._prefer_installed_pyspark()

    assert sys.path == ["/opt/app", site, *zips]
    assert not set(zips) & set(sys.path_importer_cache)
    assert {"/opt/app", site} <= set(sys.path_importer_cache)


def test_a_zip_of_another_spark_installation_keeps_its_place(tmp_path, monkeypatch):
    """A cluster's own SPARK_HOME must match its JVM: its pyspark.zip stays first."""
    package, _ = _installation(tmp_path / "venv")
    cluster_zip = str(tmp_path / "opt" / "spark" / "python" / "lib" / "pyspark.zip")
    path = [cluster_zip, str(package.parent)]
    monkeypatch.setattr(sys, "path", list(path))

    spark_daemon._prefer_installed_pyspark()

    assert sys.path == path


@pytest.mark.parametrize("entry", ["", "."])
def test_without_an_installed_pyspark_nothing_moves(tmp_path, monkeypatch, entry):
    monkeypatch.chdir(tmp_path)
    path = [str(tmp_path / "pyspark.zip"), entry]
    monkeypatch.setattr(sys, "path", list(path))

    spark_daemon._prefer_installed_pyspark()

    assert sys.path == path


class _Conf:
    def __init__(self, pairs: dict[str, str]) -> None:
        self.pairs = pairs

    def getAll(self) -> list[tuple[str, str]]:  # noqa: N802 (SparkConf's name)
        return list(self.pairs.items())


def test_settings_given_elsewhere_are_left_alone(tmp_path, monkeypatch):
    """spark-submit's, PYSPARK_SUBMIT_ARGS' and spark-defaults.conf's own values win."""
    (tmp_path / "spark-defaults.conf").write_text(
        "# site defaults\nspark.executor.extraJavaOptions  -XX:+UseG1GC\nspark.eventLog.enabled=true\n"
    )
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    monkeypatch.setenv(
        "PYSPARK_SUBMIT_ARGS",
        "--conf 'spark.driver.extraJavaOptions=-Xss4m -Dx=1' --conf spark.ui.enabled=false pyspark-shell",
    )
    given = _given_settings(_Conf({"spark.python.daemon.module": "site.daemon"}))
    assert set(_CLASSIC_SETTINGS) <= given
    assert {"spark.eventLog.enabled", "spark.ui.enabled"} <= given
    assert "# site defaults" not in given


def test_nothing_given_leaves_every_setting_to_the_session(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))  # no spark-defaults.conf there
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    assert not set(_CLASSIC_SETTINGS) & _given_settings(_Conf({}))


def test_the_site_defaults_are_read_from_spark_home_without_a_conf_dir(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "spark-defaults.conf").write_text("spark.driver.extraJavaOptions -Xss4m\n")
    monkeypatch.delenv("SPARK_CONF_DIR", raising=False)
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS", raising=False)
    monkeypatch.setenv("SPARK_HOME", str(tmp_path))
    assert _given_settings(_Conf({})) & set(_CLASSIC_SETTINGS) == {"spark.driver.extraJavaOptions"}


def test_the_mark_of_a_stopped_connect_session_is_forgotten(monkeypatch):
    """PySpark keeps SPARK_CONNECT_MODE_ENABLED after an sc:// session stops; left there, every
    later session would be built as a Connect one (CONNECT_URL_NOT_SET)."""
    pytest.importorskip("pyspark.sql.connect.session")
    monkeypatch.setenv(CONNECT_MARK, "1")
    monkeypatch.delenv("SPARK_REMOTE", raising=False)

    _forget_stopped_connect()

    assert CONNECT_MARK not in os.environ


def test_a_live_connect_session_keeps_its_mark_and_says_so(monkeypatch):
    connect = pytest.importorskip("pyspark.sql.connect.session")
    monkeypatch.setenv(CONNECT_MARK, "1")
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    live = type("Live", (), {"is_stopped": False})()
    monkeypatch.setattr(connect.SparkSession, "_default_session", live)

    with pytest.raises(SparkSessionError, match="Spark Connect session is open in this process"):
        _forget_stopped_connect()
    assert os.environ[CONNECT_MARK] == "1"


def test_a_remote_named_by_the_environment_keeps_its_mark(monkeypatch):
    """`pyspark --remote` sets SPARK_REMOTE with the mark: that process is a Connect one."""
    monkeypatch.setenv(CONNECT_MARK, "1")
    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:15002")

    _forget_stopped_connect()

    assert os.environ[CONNECT_MARK] == "1"


def test_a_master_named_while_spark_remote_is_set_is_refused_in_one_line(monkeypatch, capsys):
    """PySpark builds a Connect session whenever SPARK_REMOTE is set, whatever master is named:
    the CLI says so instead of scoring somewhere else."""
    pytest.importorskip("pyspark")
    from stepdown_ml.cli import EXIT_BAD_INPUT, main

    monkeypatch.setenv("SPARK_REMOTE", "sc://127.0.0.1:15002")
    code = main(["score", "in.csv", "--engine", "spark", "--master", "local[1]", "--out", "out"])

    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "stepdown-ml score: error: SPARK_REMOTE is set (sc://127.0.0.1:15002): PySpark would open a "
        "Spark Connect session there, not on local[1]; unset SPARK_REMOTE to use local[1]"
    ]
