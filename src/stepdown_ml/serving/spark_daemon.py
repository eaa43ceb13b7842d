"""Spark's Python daemon for stepdown-ml: the scoring code imported once, before workers fork.

Spark starts one Python daemon per executor (``python -m <spark.python.daemon.module>``),
which forks a worker for each concurrent task. PySpark's own daemon imports nothing before
forking, so every worker imports PySpark's worker (from ``pyspark.zip``: compiled from
source each time, no bytecode cache in a zip), then, when it unpickles the first scoring
function, NumPy, Arrow, ONNX Runtime and this package: about a CPU-second per worker
(docs/BENCHMARKS.md, "Spark": a measured run spent more of its Python CPU there than in
validation). :func:`spark_session` names this module as the daemon; it

- puts the installed ``pyspark`` package ahead of ``pyspark.zip`` and the py4j zip when
  both come from the same installation (the same files, with cached bytecode); a zip from
  another Spark installation (a cluster's own ``SPARK_HOME``) keeps its place, since it
  must match that cluster's JVM;
- imports PySpark's worker and the scoring stack;
- makes the batch run's allocator settings (:mod:`stepdown_ml.serving.memory`: a block's
  freed memory is kept for the next block), which the workers inherit;
- freezes the objects it holds (``gc.freeze``): PySpark's daemon runs ``gc.collect()`` in a
  reused worker after every task, which then scans only what the task made, not every
  object imported before the fork (a py-spy profile of 1M rows on ``local[2]``: 119 samples
  in that collection before, 1 after; on the 2-core standalone cluster, where it cost
  little, no measurable change);
- then runs PySpark's daemon unchanged.

Forking after NumPy, Arrow and ONNX Runtime are imported (their idle pools exist in the
daemon only; a forked child starts its own) is what ``stepdown-ml score --workers N``
does too (:mod:`stepdown_ml.serving.processes`).
"""

from __future__ import annotations

import gc
import importlib
import os
import sys


def _shipped_zips(path: list[str], package_dir: str) -> list[str]:
    """The entries of ``path`` that are zips shipped inside ``package_dir`` (``pyspark/python/lib``)."""
    inside = os.path.join(package_dir, "python", "lib") + os.sep
    return [p for p in path if p.endswith(".zip") and os.path.abspath(p).startswith(inside)]


def _prefer_installed_pyspark() -> None:
    """Move the zips of the installed pyspark after it on ``sys.path`` (see the module docstring).

    Their importers also leave ``sys.path_importer_cache``: PySpark's worker calls
    ``importlib.invalidate_caches()`` when it adds the task's files to the path, and a zip
    importer answers that by reading its whole archive directory again.
    """
    for entry in sys.path:
        if entry.endswith(".zip"):
            continue
        package = os.path.abspath(os.path.join(entry or os.curdir, "pyspark"))
        if os.path.isfile(os.path.join(package, "__init__.py")):
            shipped = _shipped_zips(sys.path, package)
            sys.path[:] = [p for p in sys.path if p not in shipped] + shipped
            for zip_path in shipped:
                sys.path_importer_cache.pop(zip_path, None)
            return


# Imported before the first fork: what every worker runs, and what every scoring function needs.
PRELOADED = ("pyspark.worker", "stepdown_ml.serving.spark")


def main() -> None:
    _prefer_installed_pyspark()
    for module in PRELOADED:
        importlib.import_module(module)
    from stepdown_ml.serving.memory import tune_for_batch

    tune_for_batch()
    import pyspark.daemon

    gc.freeze()

    pyspark.daemon.manager()


if __name__ == "__main__":
    main()
