"""How fast could any scorer of this model be here? A skeleton scorer beside the floor.

The skeleton does only the work no scorer of the served model can skip, with the scorer's
own layout: a new Python process (``python -c``: interpreter start-up and imports
included) forks ``W`` workers, and each loads the model (:class:`stepdown_ml.serving.Model`;
the scorer loads it in its main process too). Each worker reads its own byte range of
whole lines with pyarrow's CSV reader (all columns, types inferred as the floor infers
them, one thread per worker), runs the model's ONNX call and logistic
(:meth:`~stepdown_ml.serving.Model.infer`) on its rows' features in blocks of
``config.DEFAULT_CHUNK_ROWS`` and writes ``candidate_id`` and ``p_advance`` to its own CSV
part. Once timed, the parts are checked against the scorer's output: the same rows, the
same ``p_advance``.

It skips validation, features (each row's features are computed before the timing and
read back from a memory-mapped ``.npy`` on tmpfs), the recommendation rules, the reasons,
four of the six output columns and the merge of the parts. So its time is a lower bound
for ``stepdown-ml score --workers W`` on the same file, and its ratio to the floor is the
best ratio any scorer of this model could reach on this machine with ``W`` processes.

A third side asks the other question: how fast would the scorer be with a model that
costs next to nothing? It is the scorer itself (``stepdown_ml.cli.main``, every stage,
every output column, the merge), with each ONNX session's ``run`` replaced by one small
matrix product (the features times a fixed random float32 matrix, one column per reason
group: about 0.014 us a row). Its probabilities and reasons are not the model's, so only its
time is used: the ratio any model could reach with the scorer's other stages as they are.
Its reasons take fewer distinct texts than the model's (about 190 against 1,970 in a block
of 65,536 rows) and are a little shorter, so its output is about 4 % smaller: slightly
optimistic, by an estimated 0.01 s on 1M rows (from its cheaper reason step and smaller output).

For each file, alternating, best of ``BENCH_ROUNDS`` (default 3): the floor
(:data:`benchmarks.bench_workers.FLOOR`, twice in a row as there, so its best is taken from
twice as many runs), the skeleton, ``python -m stepdown_ml score FILE --workers W`` and the
scorer with the free model.
Meant for files of many rows: each worker needs lines of its own.

Usage: python -m benchmarks.bench_bound [ROWS] [WORKERS]   (default 1000000 2)
Environment: BENCH_ROUNDS, STEPDOWN_BENCH_DIR (use tmpfs), BENCH_FILES=gen,oov.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.bench_workers import FLOOR, run
from benchmarks.common import chosen_files

# argv: file, features.npy, output folder, workers, then per worker: start byte, end byte, first row.
SKELETON = """
import multiprocessing, sys
import numpy as np, pyarrow as pa, pyarrow.csv as pacsv
from stepdown_ml.core import config
from stepdown_ml.serving import Model
path, features_path, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ranges = [tuple(int(v) for v in sys.argv[5 + 3 * i : 8 + 3 * i]) for i in range(workers)]
with open(path, "rb") as handle:
    names = handle.readline().decode().strip().replace('"', "").split(",")

def work(i):
    start, end, first = ranges[i]
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    table = pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
        convert_options=pacsv.ConvertOptions(column_types={"region": pa.string()}),
    )
    local = Model(config.DEFAULT_MODEL_DIR)  # each worker loads its own session, as the scorer's do
    features = np.load(features_path, mmap_mode="r")
    chunks, rows = [], len(table)
    for at in range(0, rows, config.DEFAULT_CHUNK_ROWS):
        block = np.ascontiguousarray(features[first + at : first + min(rows, at + config.DEFAULT_CHUNK_ROWS)])
        chunks.append(local.infer(block)[0])
    p = np.concatenate(chunks)
    scores = pa.table({"candidate_id": table.column("candidate_id"), "p_advance": p})
    pacsv.write_csv(scores, f"{out}/part_{i}.csv")

processes = [multiprocessing.get_context("fork").Process(target=work, args=(i,)) for i in range(workers)]
for process in processes:
    process.start()
for process in processes:
    process.join()
    if process.exitcode:
        sys.exit(f"worker failed: {process.exitcode}")
"""

# argv: the arguments of `stepdown-ml`. The scorer with every ONNX session's run (in the main
# process and in the forked workers, which inherit the patch) replaced by features @ W.
FREE_MODEL = """
import os, sys
os.environ["OPENBLAS_NUM_THREADS"] = "1"  # one thread per worker for the product, as ONNX Runtime's
import numpy as np
from stepdown_ml.cli import main
from stepdown_ml.core.features import GROUP_NAMES, N_FEATURES
from stepdown_ml.serving import model

class FreeSession:
    weights = np.random.default_rng(0).normal(0.0, 0.05, (N_FEATURES, len(GROUP_NAMES))).astype(np.float32)

    def run(self, outputs, feeds):
        (features,) = feeds.values()
        return [features @ self.weights]

loaded = model.Model.__init__

def free_init(self, *args, **kwargs):
    loaded(self, *args, **kwargs)  # the real session is still loaded, as the scorer loads it
    self.session = FreeSession()

model.Model.__init__ = free_init
sys.exit(main(sys.argv[1:]))
"""


def _prepare(path: Path, workers: int, tmp: Path) -> tuple[Path, list[str]]:
    """Untimed: every row's served features (.npy) and the workers' byte ranges of whole lines."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from stepdown_ml.core import config
    from stepdown_ml.core.schema import CANDIDATE_COLUMNS
    from stepdown_ml.core.validation import validate_frame
    from stepdown_ml.serving import Model

    model = Model(config.DEFAULT_MODEL_DIR)
    text = {c.name: pa.string() for c in CANDIDATE_COLUMNS}
    reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(column_types=text))
    blocks = []
    for batch in reader:
        checked = validate_frame(batch, CANDIDATE_COLUMNS)
        assert not checked.bad.any(), f"{path}: the bound needs a file of valid rows"
        blocks.append(model.features.transform(checked.valid_columns()))
    features_path = tmp / f"{path.stem}_features.npy"
    np.save(features_path, np.concatenate(blocks))
    size = path.stat().st_size
    arguments: list[str] = []
    with open(path, "rb") as handle:
        handle.readline()
        start, first = handle.tell(), 0
        for i in range(workers):
            if i == workers - 1:
                end = size
            else:
                handle.seek(max(start, size * (i + 1) // workers))
                handle.readline()  # to the next line's start
                end = handle.tell()
            handle.seek(start)
            lines = handle.read(end - start).count(b"\n")
            arguments += [str(start), str(end), str(first)]
            start, first = end, first + lines
    return features_path, arguments


def _check(tmp: Path, workers: int) -> None:
    """The skeleton wrote every row the scorer did, with the same ``p_advance`` bit for bit."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = pacsv.ConvertOptions(include_columns=["candidate_id", "p_advance"])
    parts = pa.concat_tables(
        pacsv.read_csv(tmp / f"part_{i}.csv", convert_options=columns) for i in range(workers)
    )
    scores = pacsv.read_csv(tmp / "s.csv", convert_options=columns)
    assert parts.equals(scores), "the skeleton's rows or probabilities differ from the scorer's"


def _check_free(tmp: Path) -> None:
    """The free-model run scored the rows the scorer did, and not with the model (the patch
    reached the workers: its probabilities are not the model's)."""
    import pyarrow.csv as pacsv

    columns = pacsv.ConvertOptions(include_columns=["candidate_id", "p_advance"])
    free = pacsv.read_csv(tmp / "free.csv", convert_options=columns)
    scores = pacsv.read_csv(tmp / "s.csv", convert_options=columns)
    assert free["candidate_id"].equals(scores["candidate_id"]), "the free-model run scored other rows"
    same = np.equal(free["p_advance"].to_numpy(), scores["p_advance"].to_numpy()).mean()
    assert same < 0.01, f"{same:.1%} of the free model's probabilities are the model's: the patch missed"


def main(rows: int, workers: int) -> list[dict]:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    results = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as name:
        tmp = Path(name)
        for label, path in chosen_files(rows).items():
            features_path, ranges = _prepare(path, workers, tmp)
            floor_cmd = [sys.executable, "-c", FLOOR, str(path), str(tmp / "floor.csv")]
            skeleton_cmd = [
                sys.executable,
                "-c",
                SKELETON,
                str(path),
                str(features_path),
                str(tmp),
                str(workers),
                *ranges,
            ]
            scoring = ["score", str(path), "--workers", str(workers), "--out"]  # both sides', then the output
            score_cmd = [sys.executable, "-m", "stepdown_ml", *scoring, str(tmp / "s.csv")]
            free_cmd = [sys.executable, "-c", FREE_MODEL, *scoring, str(tmp / "free.csv")]
            floors: list[float] = []
            skeletons: list[float] = []
            scorers: list[float] = []
            frees: list[float] = []
            for _ in range(rounds):
                floors.extend(run(floor_cmd)[0] for _ in range(2))
                skeletons.append(run(skeleton_cmd)[0])
                scorers.append(run(score_cmd)[0])
                frees.append(run(free_cmd)[0])
            _check(tmp, workers)
            _check_free(tmp)
            floor, skeleton, scorer, free = min(floors), min(skeletons), min(scorers), min(frees)
            results.append(
                {
                    "file": label,
                    "rows": rows,
                    "workers": workers,
                    "floor_seconds_best": round(floor, 2),
                    "skeleton_seconds_best": round(skeleton, 2),
                    "scorer_seconds_best": round(scorer, 2),
                    "skeleton_ratio_to_floor": round(skeleton / floor, 2),
                    "scorer_ratio_to_floor": round(scorer / floor, 2),
                    "free_model_seconds_best": round(free, 2),
                    "free_model_ratio_to_floor": round(free / floor, 2),
                    "floor_seconds_all": [round(t, 2) for t in floors],
                    "skeleton_seconds_all": [round(t, 2) for t in skeletons],
                    "scorer_seconds_all": [round(t, 2) for t in scorers],
                    "free_model_seconds_all": [round(t, 2) for t in frees],
                }
            )
            print(json.dumps(results[-1]), flush=True)
            features_path.unlink()
    return results


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:]]
    main(arguments[0] if arguments else 1_000_000, arguments[1] if len(arguments) > 1 else 2)
