"""Spark's Python daemon for stepdown-ml: which zips it moves behind the installed pyspark."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stepdown_ml.serving import spark_daemon


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
