"""Scale-out scoring on Apache Spark, through the same code as ``stepdown-ml score``.

Each partition is scored by :func:`stepdown_ml.serving.batch.score_block` (validation,
features, the ONNX model, recommendations, reasons) inside ``mapInArrow`` (Arrow batches
both ways, no pandas conversion by Spark); CSV text is parsed by the same
:func:`stepdown_ml.serving.batch.csv_blocks` as the CLI, so a malformed line is rejected
with the same row number and reason.

Works the same on ``local[*]``, a standalone (or YARN, Kubernetes) cluster and a Spark
Connect (``sc://``) session: only DataFrame operations are used, never ``sparkContext``.
The model directory's bytes travel inside the scoring function (the serving model is a
few hundred KB); each executor Python process writes them once to a private folder and
loads them through :class:`stepdown_ml.serving.Model`, which checks them against the
manifest's hashes. No path that exists only on the driver is ever read on an executor.

The input is read once. Row numbers: for CSV, a row's number is its line number in its
file, minus the header (as in the CLI); for Parquet, its position in its file
(``_metadata.row_index``). A CSV split knows where it starts (``_metadata.file_block_start``)
but not how many lines come before it, so every task also reports the line count of each
of its splits; those few rows turn split-relative line numbers into file row numbers
(a broadcast join), after the scoring pass, from the cached result.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepdown_ml.core.modeldir import MANIFEST_FILE, MODEL_DIR_ENTRIES, read_manifest
from stepdown_ml.core.monitoring import PartialProfile, ProfileSpec, ReferenceProfile
from stepdown_ml.core.schema import (
    CANDIDATE_COLUMNS,
    PERSON_ID,
    RANK_COLUMN,
    SCORES_COLUMNS,
    SCORES_SCHEMA,
    ContractError,
)
from stepdown_ml.serving import Model

# The single-process scorer's own neutralization, so that both engines write the same values.
from stepdown_ml.serving.batch import _rejects_table as rejects_as_written
from stepdown_ml.serving.batch import _scores_table as scores_as_written
from stepdown_ml.serving.batch import csv_blocks, score_block

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# One row per input row (a score, kind "score", or a problem, kind "reject"), plus one row
# per split read (kind "split": its file's name, line count and tallies; for CSV its first
# line). Rows carry a 64-bit key of their file instead of its name (narrower to cache).
# ``start`` is the split's byte offset in its file; ``line`` a row's line within its split
# (CSV) or its number in its file (Parquet).
_ARROW_OUTPUT = pa.schema(
    [
        ("kind", pa.string()),
        ("file_key", pa.int64()),
        ("start", pa.int64()),
        ("line", pa.int64()),
        *SCORES_SCHEMA,
        ("column", pa.string()),
        ("reason", pa.string()),
        ("person_id", pa.string()),
        ("file", pa.string()),
        ("lines", pa.int64()),
        ("scored", pa.int64()),
        ("problems", pa.int64()),
        ("rejected", pa.int64()),
        # On split rows, when a drift report is asked for: the task's partial profile.
        ("profile", pa.binary()),
    ]
)
_SPARK_TYPES = {pa.string(): "string", pa.int64(): "long", pa.float64(): "double", pa.binary(): "binary"}
OUTPUT_SCHEMA = ", ".join(f"{field.name} {_SPARK_TYPES[field.type]}" for field in _ARROW_OUTPUT)
_BOM = "\ufeff"
_NEWLINE = pa.scalar(b"\n", pa.binary())
_NOTHING = pa.scalar(b"", pa.binary())
_MODELS: dict[str, Model] = {}


def is_remote(master: str | None) -> bool:
    """Whether ``master`` names a Spark Connect server (``sc://host:port``)."""
    return bool(master) and str(master).startswith("sc://")


def spark_session(master: str | None = None, app_name: str = "stepdown-ml") -> SparkSession:
    """A SparkSession: ``local[*]``, a cluster (``spark://…``, ``yarn``, ``k8s://…``) or Spark Connect (``sc://…``).

    Without ``master``, spark-submit's choice (or ``SPARK_REMOTE``) holds, else ``local[*]``.
    Executors use this interpreter unless ``PYSPARK_PYTHON`` says otherwise (the system
    Python lacks the project's packages); a Spark Connect server uses its own setting.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if is_remote(master) or (not master and os.environ.get("SPARK_REMOTE")):
        builder = builder.remote(master or os.environ["SPARK_REMOTE"])
    else:
        from pyspark import SparkConf

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.appName(app_name)
        if master:
            builder = builder.master(master)
        elif not SparkConf().contains("spark.master"):  # spark-submit sets it; plain python does not
            builder = builder.master("local[*]")
    session = builder.getOrCreate()
    for key, value in _session_settings().items():
        session.conf.set(key, value)
    return session


def _session_settings() -> dict[str, str]:
    """Runtime SQL settings (valid in a classic and a Spark Connect session alike)."""
    return {
        # Smaller splits than the 128 MB default: more tasks than cores, so none idles at the end.
        "spark.sql.files.maxPartitionBytes": os.environ.get("STEPDOWN_SPARK_SPLIT_BYTES", "32m"),
        # Larger Arrow batches than the default 10,000 rows: the scorer's own blocks are ~12k rows
        # of CSV, and validation, features and inference cost less per row in larger blocks.
        "spark.sql.execution.arrow.maxRecordsPerBatch": os.environ.get("STEPDOWN_SPARK_BATCH_ROWS", "20000"),
    }


@dataclass(frozen=True)
class ShippedModel:
    """A model directory as bytes, to travel with the job: ``{file name: bytes}`` and its digest."""

    files: dict[str, bytes]
    digest: str

    @classmethod
    def from_dir(cls, model_dir: Path | str) -> ShippedModel:
        """Read and verify a model directory on the driver (fails there, not in every task)."""
        directory = Path(model_dir)
        read_manifest(directory)
        files = {
            entry.name: entry.read_bytes()
            for entry in sorted(directory.iterdir())
            if entry.is_file() and entry.name in MODEL_DIR_ENTRIES
        }
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return cls(files=files, digest=digest.hexdigest())

    def load(self) -> Model:
        """The model in this process: written once to a private folder, checked, then loaded."""
        if self.digest not in _MODELS:
            _MODELS[self.digest] = Model(self._materialize())
        return _MODELS[self.digest]

    def _materialize(self) -> Path:
        """A folder holding the shipped files (the manifest last, so a half-written one never verifies)."""
        base = Path(tempfile.gettempdir()) / f"stepdown-model-{os.getuid()}"
        base.mkdir(mode=0o700, exist_ok=True)
        target = base / self.digest[:32]
        if target.is_dir():
            with contextlib.suppress(ValueError, OSError, KeyError):
                read_manifest(target)  # the hashes, as Model checks them again
                if all((target / n).read_bytes() == d for n, d in self.files.items()):
                    return target
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
        for name in sorted(self.files, key=lambda n: n == MANIFEST_FILE):
            (staging / name).write_bytes(self.files[name])
        with contextlib.suppress(OSError):  # another worker process got there first
            if target.exists():
                import shutil

                shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            return target
        return staging


def _runs(*keys: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive keys, in order."""
    if len(keys[0]) == 0:
        return iter(())
    changes = np.zeros(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        changes |= key[1:] != key[:-1]
    return itertools.pairwise(np.flatnonzero(np.r_[True, changes, True]).tolist())


@dataclass
class _Split:
    """What one task saw of one split of one file."""

    file: str
    start: int
    key: int = 0
    lines: int = 0
    scored: int = 0
    problems: int = 0
    rejected: int = 0
    first_line: str | None = None
    profile: PartialProfile | None = None  # what this task counted of the split (drift report)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(self.file.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        self.key = int.from_bytes(digest, "little", signed=True)


def _constant(value: Any, n: int, kind: pa.DataType) -> pa.Array:
    return pa.array([value], kind).take(pa.array(np.zeros(n, dtype=np.int64)))


def _output(block: Any, split: _Split, rows: np.ndarray) -> pa.RecordBatch:
    """One Arrow batch of scores and rejects in the output layout (no pandas round trip).

    Formula-like text is neutralized here, by the single-process scorer's own functions."""
    scores, rejects = scores_as_written(block.scores), rejects_as_written(block.rejects)
    n_scores, n_rejects = scores.num_rows, rejects.num_rows
    n = n_scores + n_rejects

    def stack(top: Any, bottom: Any, kind: pa.DataType) -> pa.Array:
        top = pa.nulls(n_scores, kind) if top is None else top
        bottom = pa.nulls(n_rejects, kind) if bottom is None else bottom
        if isinstance(top, pa.ChunkedArray):
            top = top.combine_chunks()
        if isinstance(bottom, pa.ChunkedArray):
            bottom = bottom.combine_chunks()
        return pa.concat_arrays([top.cast(kind), bottom.cast(kind)])

    split.scored += n_scores
    split.problems += n_rejects
    split.rejected += len(np.unique(rejects.column("row").to_numpy())) if n_rejects else 0
    arrays = [
        stack(
            _constant("score", n_scores, pa.string()),
            _constant("reject", n_rejects, pa.string()),
            pa.string(),
        ),
        _constant(split.key, n, pa.int64()),
        _constant(split.start, n, pa.int64()),
        stack(pa.array(rows, pa.int64()), rejects.column("row"), pa.int64()),
        stack(scores.column("candidate_id"), rejects.column("candidate_id"), pa.string()),
        *(stack(scores.column(field.name), None, field.type) for field in list(SCORES_SCHEMA)[1:]),
        stack(None, rejects.column("column"), pa.string()),
        stack(None, rejects.column("reason"), pa.string()),
        stack(block.persons, None, pa.string()),
        pa.nulls(n, pa.string()),
        *(pa.nulls(n, pa.int64()) for _ in range(4)),
        pa.nulls(n, pa.binary()),
    ]
    if block.profile is not None:
        split.profile = block.profile if split.profile is None else split.profile.merge(block.profile)
    return pa.RecordBatch.from_arrays(arrays, schema=_ARROW_OUTPUT)


def _split_rows(splits: list[_Split]) -> pa.RecordBatch:
    """One ``split`` row per split: its line count, tallies and (CSV) first line."""
    n = len(splits)
    columns: dict[str, pa.Array] = {
        "kind": _constant("split", n, pa.string()),
        "file": pa.array([s.file for s in splits], pa.string()),
        "file_key": pa.array([s.key for s in splits], pa.int64()),
        "start": pa.array([s.start for s in splits], pa.int64()),
        "reason": pa.array([s.first_line for s in splits], pa.string()),
        **{
            k: pa.array([getattr(s, k) for s in splits], pa.int64())
            for k in ("lines", "scored", "problems", "rejected")
        },
        "profile": pa.array([s.profile.to_bytes() if s.profile else None for s in splits], pa.binary()),
    }
    arrays = [columns.get(f.name, pa.nulls(n, f.type)) for f in _ARROW_OUTPUT]
    return pa.RecordBatch.from_arrays(arrays, schema=_ARROW_OUTPUT)


def _joined_lines(values: pa.Array) -> bytes:
    """The lines of a text column as one buffer, each ended by a newline (no Python loop)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    binary = values.cast(pa.large_binary() if pa.types.is_large_string(values.type) else pa.binary())
    ended = pc.binary_join_element_wise(binary, _NOTHING, _NEWLINE)
    offsets = np.frombuffer(
        ended.buffers()[1], dtype=np.int64 if pa.types.is_large_binary(ended.type) else np.int32
    )
    first, last = int(offsets[ended.offset]), int(offsets[ended.offset + len(ended)])
    return ended.buffers()[2].to_pybytes()[first:last]


def _score_csv_lines(
    model: ShippedModel, header_line: str, run_id: str, spec: ProfileSpec | None = None
) -> Any:
    header = _header_fields(header_line)

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _ = run_id  # in the closure: no two runs have the same plan, so none reads another's cache
        scorer = model.load()
        splits: dict[tuple[str, int], _Split] = {}
        for record_batch in batches:
            files = record_batch.column("_file").to_numpy(zero_copy_only=False)
            starts = record_batch.column("_start").to_numpy()
            values = record_batch.column("value")
            for begin, end in _runs(files, starts):
                key = (str(files[begin]), int(starts[begin]))
                split = splits.setdefault(key, _Split(*key))
                run = values.slice(begin, end - begin)
                first = split.lines  # line of the split at the run's first value
                split.lines += len(run)
                if key[1] == 0 and first == 0:  # the file's header line
                    split.first_line = run[0].as_py()
                    run, first = run.slice(1), 1
                if len(run) == 0:
                    continue
                text = header_line.encode("utf-8") + b"\n" + _joined_lines(run)
                for frame, numbers, malformed in csv_blocks(pa.BufferReader(text), header, key[0]):
                    # numbers count the given lines from 1; lines of the split count from 0.
                    bad = [(first + n - 1, cid, why) for n, cid, why in malformed]
                    block = score_block(scorer, frame, first + numbers - 1, bad, spec)
                    yield _output(block, split, block.rows)
        if splits:
            yield _split_rows(list(splits.values()))

    return score_partition


def _score_columns(
    model: ShippedModel, columns: list[str], run_id: str, spec: ProfileSpec | None = None
) -> Any:
    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _ = run_id  # in the closure: no two runs have the same plan, so none reads another's cache
        scorer = model.load()
        splits: dict[tuple[str, int], _Split] = {}
        for record_batch in batches:
            files = record_batch.column("_file").to_numpy(zero_copy_only=False)
            starts = record_batch.column("_start").to_numpy()
            rows = record_batch.column("_row").to_numpy() + 1
            for begin, end in _runs(files, starts):
                key = (str(files[begin]), int(starts[begin]))
                split = splits.setdefault(key, _Split(*key))
                split.lines += end - begin
                part = record_batch.slice(begin, end - begin).select(columns)
                frame = pa.RecordBatch.from_arrays(
                    [_plain(part.column(i)) for i in range(part.num_columns)], names=columns
                )
                block = score_block(scorer, frame, rows[begin:end], profile=spec)
                yield _output(block, split, block.rows)
        if splits:
            yield _split_rows(list(splits.values()))

    return score_partition


def _plain(array: pa.Array) -> pa.Array:
    """Spark's large text arrays as the plain ones the single-process scorer reads from Parquet."""
    if pa.types.is_large_string(array.type):
        return array.cast(pa.string())
    if pa.types.is_large_binary(array.type):
        return array.cast(pa.binary())
    return array


def _header_fields(line: str) -> list[str]:
    return next(csv.reader([line.removeprefix(_BOM)]))


@dataclass
class SparkScores:
    """What :func:`score_spark` returns: the two tables and the tallies of the scoring pass."""

    scores: DataFrame
    rejects: DataFrame
    rows: int
    scored: int
    problems: int
    rejected_rows: int
    cached: DataFrame
    # The tasks' partial profiles, merged (when score_spark was given a reference profile).
    profile: PartialProfile | None = None

    def __iter__(self) -> Iterator[Any]:  # ``scores, rejects = score_spark(...)``
        return iter((self.scores, self.rejects))

    def unpersist(self) -> None:
        """Release the cached scoring pass (the tables cannot be read after)."""
        self.cached.unpersist()

    def line(self) -> str:
        return f"scored {self.scored} rows, rejected {self.rejected_rows} ({self.problems} problems)"


def score_spark(
    spark: SparkSession,
    input_path: str | Path | list[str],
    model: Path | str | None = None,
    reference: ReferenceProfile | None = None,
) -> SparkScores:
    """Score candidate files (CSV or Parquet, files or folders) on Spark, reading them once.

    Args:
        spark: the session: classic (local or a cluster) or Spark Connect.
        input_path: file(s) or folder(s); ``.parquet`` inputs are read as Parquet. The
            CSV files of one run share one header (the first file's).
        model: a model directory or a ``models:/…`` URI (resolved on the driver); default
            the packaged default model. Its bytes travel with the job.
        reference: the model's reference profile: each task also counts its rows on its
            bins, and the partial profiles are merged on the driver (``profile``).

    Returns:
        :class:`SparkScores`, which unpacks as ``(scores, rejects)``: the docs/CONTRACT.md
        layouts (``rank`` when the input has ``person_id``), plus ``file`` and ``row``
        columns that locate every row, and the tallies of the pass. Formula-like text is
        neutralized, as the single-process scorer writes it in every format.

    Raises:
        ContractError: a required column is missing, the input is empty, or two CSV files
            of one run have different headers.
    """
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    paths = [input_path] if isinstance(input_path, str | Path) else list(input_path)
    paths = [str(p) for p in paths]
    shipped = ShippedModel.from_dir(_model_dir(model))
    run_id = uuid.uuid4().hex
    spec = reference.spec if reference is not None else None
    meta = [F.col("_metadata.file_path").alias("_file")]
    if all(p.rstrip("/").endswith(".parquet") for p in paths):
        raw = spark.read.parquet(*paths)
        columns = raw.columns
        _require(columns, paths)
        numbered = raw.select(
            *columns,
            *meta,
            F.col("_metadata.file_block_start").alias("_start"),
            F.col("_metadata.row_index").alias("_row"),
        )
        out = numbered.mapInArrow(_score_columns(shipped, columns, run_id, spec), OUTPUT_SCHEMA)
        header_line = None
    else:
        text = spark.read.option("lineSep", "\n").text(paths)
        numbered = text.select("value", *meta, F.col("_metadata.file_block_start").alias("_start"))
        first = numbered.where(F.col("_start") == 0).limit(1).collect()  # one split's first line
        if not first:
            raise ContractError(f"{paths[0]}: the file is empty (expected a header row)")
        header_line = first[0]["value"].removeprefix(_BOM).rstrip("\r")
        columns = _header_fields(header_line)
        _require(columns, [first[0]["_file"]])
        out = numbered.mapInArrow(_score_csv_lines(shipped, header_line, run_id, spec), OUTPUT_SCHEMA)
    out = out.persist()  # released by SparkScores.unpersist (the CLI calls it)
    splits = (
        out.where(F.col("kind") == "split")
        .select("file", "file_key", "start", "reason", "lines", "scored", "problems", "rejected", "profile")
        .collect()
    )  # the one pass over the input: scores and rejects stay cached
    first_file = None if header_line is None else first[0]["_file"]
    offsets = _offsets(splits, header_line, first_file)
    # line in split -> row in file (CSV; Parquet lines are rows already), key -> file name
    table = spark.createDataFrame(offsets, "file_key long, start long, offset long, file string")
    rows = (
        out.where(F.col("kind") != "split")
        .drop("file")
        .join(F.broadcast(table), ["file_key", "start"])
        .withColumn("row", F.col("line") + F.col("offset"))
    )
    scores = rows.where(F.col("kind") == "score").select("file", "row", *SCORES_COLUMNS, "person_id")
    if PERSON_ID.name in columns:
        from pyspark.sql import Window

        by_person = Window.partitionBy("person_id").orderBy(F.desc("p_advance"), "file", "row")
        scores = scores.withColumn(RANK_COLUMN, F.row_number().over(by_person).cast("long"))
    scores = scores.drop("person_id")
    rejects = rows.where(F.col("kind") == "reject").select("file", "row", "candidate_id", "column", "reason")
    total = {k: sum(int(s[k] or 0) for s in splits) for k in ("lines", "scored", "problems", "rejected")}
    headers = sum(1 for s in splits if header_line is not None and s["start"] == 0)
    return SparkScores(
        scores=scores,
        rejects=rejects,
        rows=total["lines"] - headers,
        scored=total["scored"],
        problems=total["problems"],
        rejected_rows=total["rejected"],
        cached=out,
        profile=None if spec is None else merged_profile(spec, splits),
    )


def merged_profile(spec: ProfileSpec, splits: list[Any]) -> PartialProfile:
    """The partial profiles the tasks sent with their split rows, added up."""
    merged = spec.new_partial()
    for split in splits:
        if split["profile"] is not None:
            merged.merge(PartialProfile.from_bytes(bytes(split["profile"]), spec))
    return merged


def _model_dir(model: Path | str | None) -> Path:
    """A model directory, or a ``models:/`` URI resolved through the registry (on the driver)."""
    from stepdown_ml.core import config
    from stepdown_ml.serving.registry import local_model_dir

    return local_model_dir(config.DEFAULT_MODEL_DIR if model is None else model)


def _offsets(
    splits: list[Any], header_line: str | None, first_file: str | None
) -> list[tuple[int, int, int, str]]:
    """``(file key, split start, lines of the file before the split, file)``; checks CSV headers.

    Parquet rows are numbered in their file already: their offsets are 0.
    """
    by_file: dict[str, list[Any]] = {}
    for split in splits:
        by_file.setdefault(split["file"], []).append(split)
    offsets = []
    for file, parts in by_file.items():
        before = 0
        for split in sorted(parts, key=lambda s: s["start"]):
            if header_line is not None and split["start"] == 0:
                seen = (split["reason"] or "").removeprefix(_BOM).rstrip("\r")
                if seen != header_line:
                    raise ContractError(
                        f"{file}: its header differs from the one of {first_file}: score files with "
                        "different headers in separate runs"
                    )
            offsets.append((int(split["file_key"]), int(split["start"]), before, file))
            if header_line is not None:
                before += int(split["lines"])
    return offsets


def _require(columns: Any, paths: list[str]) -> None:
    missing = [c.name for c in CANDIDATE_COLUMNS if c.name not in set(columns)]
    if missing:
        raise ContractError(f"{paths[0]}: missing required column(s): {', '.join(missing)}")


def write_outputs(scores: DataFrame, rejects: DataFrame, out_dir: Path | str, fmt: str = "parquet") -> None:
    """Write ``scores/`` (Parquet or CSV partitions, input order) and ``rejects/`` (CSV).

    The tables of :func:`score_spark` are neutralized already, in every format, as the
    single-process scorer's are: a Parquet file is often opened in, or converted for, a
    spreadsheet, and so both formats and both engines hold the same values. Spark's output
    committer makes each folder appear only when its job succeeded.
    """
    out = str(out_dir).rstrip("/")
    # mapInArrow keeps each partition's order and a file's splits follow each other, so only
    # the ranking window (a shuffle) calls for a sort to restore input order.
    ordered = scores.orderBy("file", "row") if RANK_COLUMN in scores.columns else scores
    ordered = ordered.drop("file", "row")
    if fmt == "csv":
        ordered.write.option("header", True).csv(f"{out}/scores")
    else:
        ordered.write.parquet(f"{out}/scores")
    rejects.orderBy("file", "row").drop("file").write.option("header", True).csv(f"{out}/rejects")
