"""Shared helpers of the benchmark scripts: cached input files and child-process measurement."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from stepdown_ml.core import config
from stepdown_ml.core.schema import CANDIDATE_COLUMNS
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions

# Large files belong on tmpfs: STEPDOWN_BENCH_DIR=/dev/shm/bench, say.
BENCH_DIR = Path(os.environ.get("STEPDOWN_BENCH_DIR") or config.GENERATED_DIR / "bench")
CHUNK = 1_000_000
# The default model's parameters before it became additive (trees that combine features,
# reasons from refined leaves): what bench_reasons and bench_learning_rate measured.
INTERACTING_MODEL = {"interaction_cst": None, "learning_rate": 0.2, "max_leaf_nodes": 15}


def _write_chunk(rows: int, start: int, seed: int, part: Path) -> Path:
    frame = generate_transitions(rows, seed)
    frame["candidate_id"] = [f"b{start + j:09d}" for j in range(len(frame))]
    write_csv(frame[[c.name for c in CANDIDATE_COLUMNS]], part)
    return part


def candidates_csv(rows: int, seed: int = 99) -> Path:
    """A candidate file of ``rows`` generated rows (built once, then reused).

    Built in chunks of a million rows (chunk ``i`` from seed ``seed + i``), on all cores.
    """
    path = BENCH_DIR / f"candidates_{rows}.csv"
    if not path.exists():
        from concurrent.futures import ProcessPoolExecutor

        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        starts = list(range(0, rows, CHUNK))
        with ProcessPoolExecutor(max_workers=min(len(starts), len(os.sched_getaffinity(0)))) as pool:
            parts = list(
                pool.map(
                    _write_chunk,
                    [min(CHUNK, rows - start) for start in starts],
                    starts,
                    [seed + i for i in range(len(starts))],
                    [BENCH_DIR / f".part_{rows}_{i}.csv" for i in range(len(starts))],
                )
            )
        with open(path, "wb") as out:
            for i, part in enumerate(parts):
                with open(part, "rb") as handle:
                    if i:
                        handle.readline()  # header once
                    out.write(handle.read())
                part.unlink()
    return path


def oov_candidates_csv(rows: int, seed: int = 99) -> Path:
    """:func:`candidates_csv` with every skill token replaced by one outside the vocabulary.

    Like records from another HR system: ``data_07;sale_02;…`` (the token's first four
    letters and one of 100 suffixes), the same number of tokens per row.
    """
    path = BENCH_DIR / f"candidates_oov_{rows}.csv"
    if not path.exists():
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(
            candidates_csv(rows, seed),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in ("current_skills", "target_skills")}
            ),
        )
        for name in ("current_skills", "target_skills"):
            lists = pc.split_pattern(table[name].combine_chunks().fill_null(""), ";")
            flat = pc.list_flatten(lists)
            suffix = pc.cast(pa.array(np.arange(len(flat)) * 7 % 100), pa.string())
            renamed = pc.binary_join_element_wise(
                pc.utf8_slice_codeunits(flat, 0, 4), pc.utf8_lpad(suffix, 2, "0"), "_"
            )
            renamed = pc.if_else(pc.equal(flat, ""), flat, renamed)
            joined = pc.binary_join(pa.ListArray.from_arrays(lists.offsets, renamed), ";")
            table = table.set_column(table.schema.get_field_index(name), name, joined)
        pacsv.write_csv(table, path)
    return path


def chosen_files(rows: int) -> dict[str, Path]:
    """The input files ``BENCH_FILES`` names (default ``gen,oov``), built if missing: ``gen``
    the generator's candidates, ``oov`` the same rows with skills outside the vocabulary."""
    builders = {"gen": candidates_csv, "oov": oov_candidates_csv}
    return {name: builders[name](rows) for name in os.environ.get("BENCH_FILES", "gen,oov").split(",")}


# A fork of a large process starts with that process's pages, and Linux keeps the
# high-water mark across exec: so the measured command is started by a small launcher.
_LAUNCHER = (
    "import os, sys, time\n"
    "start = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), time.perf_counter() - start, usage.ru_maxrss)\n"
)


def run_child(args: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB of that process alone)."""
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *args], capture_output=True, text=True, env=dict(os.environ)
    )
    code, seconds, max_rss_kb = done.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{args} failed: {done.stderr[-2000:]}")
    return float(seconds), int(max_rss_kb) / 1024


def cli() -> str:
    return str(Path(sys.executable).with_name("stepdown-ml"))
