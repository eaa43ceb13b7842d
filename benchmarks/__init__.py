"""Benchmarks of stepdown_ml (``python -m benchmarks.NAME``; results in docs/BENCHMARKS.md).

They measure the package as it is deployed: a wheel installed by pip carries its modules'
bytecode (pip compiles them on install), so the checkout's package is compiled here before
any command is timed. Without it, an environment that sets ``PYTHONDONTWRITEBYTECODE`` (this
project's development machine does) would compile every module of the package again in each
scorer process: 0.03–0.05 s of start-up (measured) that no installed copy pays.
"""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_package(src: Path | None = None) -> None:
    """Write the bytecode of the ``stepdown_ml`` package under ``src`` (default: the one imported)."""
    if src is None:
        import stepdown_ml

        package = Path(stepdown_ml.__file__).parent
    else:
        package = src / "stepdown_ml"
    if not compileall.compile_dir(str(package), quiet=1):
        raise RuntimeError(f"{package}: some modules do not compile")


compile_package()
