"""Scale-out scoring on Apache Spark, through the same code as ``stepdown-ml score``.

Each partition is scored by :func:`stepdown_ml.serving.batch.score_block` (validation,
features, the ONNX model, recommendations, reasons) inside ``mapInArrow`` (Arrow batches
both ways, no pandas conversion by Spark); CSV lines are parsed by the same
:func:`stepdown_ml.serving.batch.line_blocks` as the CLI (a task's lines joined into one
piece, the header already read), so a malformed line is rejected with the same row number
and reason.

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
of its splits; those few rows turn split-relative line numbers into file row numbers.
:func:`score_spark_to` (the CLI) writes the scores straight from the scoring pass, which
needs no row number, and numbers the rejects on the driver from what that pass observed;
:func:`score_spark` caches the pass and numbers every row from it (a broadcast join).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from stepdown_ml.serving.batch import line_blocks, rejected_rows, score_block

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# One row per input row (a score, kind SCORE, or a problem, kind REJECT), plus one row per
# split read (kind SPLIT: its file's name, line count and tallies). A score row is the
# scores layout and, when ranking needs it, ``person_id`` and its location; everything else
# sits in two structs, null where unused (a null struct costs Spark one bit per row).
# ``at``: a 64-bit key of the file (narrower than its name), the split's byte offset in its
# file, and the row's line within its split (CSV) or its number in its file (Parquet).
_AT = pa.struct([("file_key", pa.int64()), ("start", pa.int64()), ("line", pa.int64())])
_SIDE = pa.struct(
    [
        ("column", pa.string()),
        ("reason", pa.string()),
        ("file", pa.string()),
        ("lines", pa.int64()),
        ("scored", pa.int64()),
        ("problems", pa.int64()),
        ("rejected", pa.int64()),
        # On split rows, when a drift report is asked for: the task's partial profile.
        ("profile", pa.binary()),
    ]
)
_ARROW_OUTPUT = pa.schema(
    [("kind", pa.int8()), *SCORES_SCHEMA, ("person_id", pa.string()), ("at", _AT), ("side", _SIDE)]
)
_SPARK_TYPES = {
    pa.string(): "string",
    pa.int64(): "long",
    pa.float64(): "double",
    pa.int8(): "byte",
    pa.binary(): "binary",
}
SCORE, REJECT, SPLIT = 0, 1, 2  # the kinds of output row


def _spark_type(kind: pa.DataType) -> str:
    if pa.types.is_struct(kind):
        return "struct<" + ",".join(f"{f.name}:{_spark_type(f.type)}" for f in kind) + ">"
    return _SPARK_TYPES[kind]


OUTPUT_SCHEMA = ", ".join(f"{field.name} {_spark_type(field.type)}" for field in _ARROW_OUTPUT)
_BOM = "\ufeff"
_NEWLINE = pa.scalar(b"\n", pa.binary())
_NOTHING = pa.scalar(b"", pa.binary())
_MODELS: dict[str, Model] = {}


# Settings of the classic sessions that spark_session starts, unless spark-submit (or the
# site's spark-defaults.conf) gave its own (docs/SCALING.md, docs/BENCHMARKS.md "Spark"):
# - Spark's Python daemon: ours imports the scoring code once per executor, before its
#   workers fork (stepdown_ml.serving.spark_daemon);
# - the JVMs compile only what stays hot (compile thresholds x10): an application's
#   executors live for one run, and at 5M rows their JIT compilers took 10.7-17.2 CPU-seconds
#   of the two cores, against 4.3-5.6 with this, while the task threads did the same work.
DAEMON_SETTING = "spark.python.daemon.module"
JIT_OPTIONS = "-XX:CompileThresholdScaling=10"
_CLASSIC_SETTINGS = {
    DAEMON_SETTING: "stepdown_ml.serving.spark_daemon",
    "spark.driver.extraJavaOptions": JIT_OPTIONS,
    "spark.executor.extraJavaOptions": JIT_OPTIONS,
}


def is_remote(master: str | None) -> bool:
    """Whether ``master`` names a Spark Connect server (``sc://host:port``)."""
    return bool(master) and str(master).startswith("sc://")


def spark_session(master: str | None = None, app_name: str = "stepdown-ml") -> SparkSession:
    """A SparkSession: ``local[*]``, a cluster (``spark://…``, ``yarn``, ``k8s://…``) or Spark Connect (``sc://…``).

    Without ``master``, spark-submit's choice (or ``SPARK_REMOTE``) holds, else ``local[*]``.
    Executors use this interpreter unless ``PYSPARK_PYTHON`` says otherwise (the system
    Python lacks the project's packages); a Spark Connect server uses its own setting.

    Raises:
        SparkSessionError: a master is named while ``SPARK_REMOTE`` is set (PySpark would
            connect there instead), or while a Spark Connect session is still open here.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    if is_remote(master) or (not master and os.environ.get("SPARK_REMOTE")):
        builder = builder.remote(master or os.environ["SPARK_REMOTE"])
    else:
        from pyspark import SparkConf

        if master and os.environ.get("SPARK_REMOTE"):
            raise SparkSessionError(
                f"SPARK_REMOTE is set ({os.environ['SPARK_REMOTE']}): PySpark would open a Spark "
                f"Connect session there, not on {master}; unset SPARK_REMOTE to use {master}"
            )
        _forget_stopped_connect()
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.appName(app_name)
        given = _given_settings(SparkConf())
        for key, value in _CLASSIC_SETTINGS.items():
            if key not in given:
                builder = builder.config(key, value)
        if master:
            builder = builder.master(master)
        elif not SparkConf().contains("spark.master"):  # spark-submit sets it; plain python does not
            builder = builder.master("local[*]")
    session = builder.getOrCreate()
    for key, value in _session_settings().items():
        session.conf.set(key, value)
    return session


class SparkSessionError(RuntimeError):
    """A Spark session cannot start as asked, given the process's Spark Connect settings."""


# PySpark marks a process that opened a Spark Connect session with this variable, and keeps
# the mark after the session is stopped (it clears it only for a local Connect server).
CONNECT_MARK = "SPARK_CONNECT_MODE_ENABLED"


def _forget_stopped_connect() -> None:
    """Let a classic session start in a process whose Spark Connect session was stopped.

    While the mark stays, PySpark builds every later session as a Connect one, and fails
    for want of a URL (``CONNECT_URL_NOT_SET``): scoring through ``sc://`` and then on a
    cluster from the same process (a notebook, a service) would need a new process. A live
    Connect session keeps the mark: PySpark cannot run both kinds in one process.
    """
    if CONNECT_MARK not in os.environ or os.environ.get("SPARK_REMOTE"):
        return
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    if ConnectSession.getActiveSession() is not None or ConnectSession._get_default_session() is not None:
        raise SparkSessionError(
            "a Spark Connect session is open in this process: stop it (session.stop()) "
            "before starting a session on a master"
        )
    del os.environ[CONNECT_MARK]


def _given_settings(conf: Any) -> set[str]:
    """Settings already given: to this process (spark-submit), in ``PYSPARK_SUBMIT_ARGS``, or in
    the ``spark-defaults.conf`` that the JVM's launcher will read."""
    import pyspark

    given = {key for key, _ in conf.getAll()}
    given.update(re.findall(r"--conf[ =]['\"]?([\w.]+)=", os.environ.get("PYSPARK_SUBMIT_ARGS", "")))
    # The launcher's own lookup: SPARK_CONF_DIR, else SPARK_HOME/conf (a pip install's home is
    # the pyspark package).
    home = os.environ.get("SPARK_HOME") or str(Path(pyspark.__file__).parent)
    conf_dir = Path(os.environ.get("SPARK_CONF_DIR") or Path(home) / "conf")
    with contextlib.suppress(OSError):
        for line in (conf_dir / "spark-defaults.conf").read_text().splitlines():
            key = re.split(r"[\s=]", line.strip(), maxsplit=1)[0]
            if key and not key.startswith("#"):
                given.add(key)
    return given


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


def _runs(*keys: pa.Array) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive keys, in order (compared in Arrow, not Python)."""
    n = len(keys[0])
    if n == 0:
        return iter(())
    changes = np.zeros(n - 1, dtype=bool)
    for key in keys:
        changes |= pc.not_equal(key.slice(1), key.slice(0, n - 1)).to_numpy(zero_copy_only=False)
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
    profile: PartialProfile | None = None  # what this task counted of the split (drift report)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(self.file.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        self.key = int.from_bytes(digest, "little", signed=True)


def _constant(value: Any, n: int, kind: pa.DataType) -> pa.Array:
    return pa.array([value], kind).take(pa.array(np.zeros(n, dtype=np.int64)))


def _output(
    block: Any, split: _Split, rows: np.ndarray, reject_cap: int | None, located: bool
) -> pa.RecordBatch:
    """One Arrow batch of scores and rejects in the output layout (no pandas round trip).

    Formula-like text is neutralized here, by the single-process scorer's own functions.
    Score rows carry ``person_id`` and their location only when ``located`` (ranking and
    row numbers need them; the scores layout does not). With ``reject_cap``, at most that
    many problems of the split leave the task (the split's tallies still count them all,
    so the driver knows when the rejects it holds are incomplete)."""
    scores, rejects = scores_as_written(block.scores), rejects_as_written(block.rejects)
    split.rejected += rejected_rows(rejects)
    if reject_cap is not None:
        rejects = rejects.slice(0, max(0, reject_cap - split.problems))
    split.scored += scores.num_rows
    split.problems += block.rejects.num_rows
    if block.profile is not None:
        split.profile = block.profile if split.profile is None else split.profile.merge(block.profile)
    n_scores, n_rejects = scores.num_rows, rejects.num_rows

    def stack(top: Any, bottom: Any, kind: pa.DataType) -> pa.Array:
        top = pa.nulls(n_scores, kind) if top is None else top
        bottom = pa.nulls(n_rejects, kind) if bottom is None else bottom
        if isinstance(top, pa.ChunkedArray):
            top = top.combine_chunks()
        if isinstance(bottom, pa.ChunkedArray):
            bottom = bottom.combine_chunks()
        return pa.concat_arrays([top.cast(kind), bottom.cast(kind)])

    def at(count: int, lines: Any) -> pa.Array:
        keys = (_constant(split.key, count, pa.int64()), _constant(split.start, count, pa.int64()))
        return pa.StructArray.from_arrays([*keys, pa.array(lines, pa.int64())], fields=list(_AT))

    problems = pa.StructArray.from_arrays(
        [
            rejects.column("column").combine_chunks().cast(pa.string()),
            rejects.column("reason").combine_chunks().cast(pa.string()),
            *(pa.nulls(n_rejects, f.type) for f in list(_SIDE)[2:]),
        ],
        fields=list(_SIDE),
    )
    arrays = [
        stack(_constant(SCORE, n_scores, pa.int8()), _constant(REJECT, n_rejects, pa.int8()), pa.int8()),
        stack(scores.column("candidate_id"), rejects.column("candidate_id"), pa.string()),
        *(stack(scores.column(field.name), None, field.type) for field in list(SCORES_SCHEMA)[1:]),
        stack(block.persons if located else None, None, pa.string()),
        stack(at(n_scores, rows) if located else None, at(n_rejects, rejects.column("row")), _AT),
        stack(None, problems, _SIDE),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=_ARROW_OUTPUT)


def _split_rows(splits: list[_Split]) -> pa.RecordBatch:
    """One ``split`` row per split: its file's name, line count and tallies."""
    n = len(splits)
    side = pa.StructArray.from_arrays(
        [
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.string()),
            pa.array([s.file for s in splits], pa.string()),
            *(pa.array([getattr(s, f.name) for s in splits], pa.int64()) for f in list(_SIDE)[3:-1]),
            pa.array([s.profile.to_bytes() if s.profile else None for s in splits], pa.binary()),
        ],
        fields=list(_SIDE),
    )
    at = pa.StructArray.from_arrays(
        [
            pa.array([s.key for s in splits], pa.int64()),
            pa.array([s.start for s in splits], pa.int64()),
            pa.nulls(n, pa.int64()),
        ],
        fields=list(_AT),
    )
    arrays = [pa.nulls(n, f.type) for f in _ARROW_OUTPUT]
    arrays[0], arrays[-2], arrays[-1] = _constant(SPLIT, n, pa.int8()), at, side
    return pa.RecordBatch.from_arrays(arrays, schema=_ARROW_OUTPUT)


def _joined_lines(values: pa.Array) -> bytes:
    """The lines of a text column as one buffer, each ended by a newline (no Python loop)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    # (A batch's text is far below 2 GB; the join has no kernel for large binary.)
    ended = pc.binary_join_element_wise(values.cast(pa.binary()), _NOTHING, _NEWLINE)
    offsets = np.frombuffer(ended.buffers()[1], dtype=np.int32)
    first, last = int(offsets[ended.offset]), int(offsets[ended.offset + len(ended)])
    return ended.buffers()[2].slice(first, last - first).to_pybytes()


@dataclass(frozen=True)
class _Scan:
    """The input as Spark reads it, before scoring: what a scoring pass is built from."""

    numbered: DataFrame
    columns: list[str]
    header_line: str | None  # CSV: the first file's header (every file must have it)
    first_file: str | None
    model: ShippedModel
    spec: ProfileSpec | None = None  # the reference profile's bins, when a drift report is asked for

    def scored(self, reject_cap: int | None = None, located: bool = True) -> DataFrame:
        """A new scoring pass (its own run id: no two passes share a plan, or a cache).

        ``located``: score rows carry their location and ``person_id`` (see :func:`_output`)."""
        run_id = uuid.uuid4().hex
        if self.header_line is None:
            function = _score_columns(self.model, self.columns, run_id, reject_cap, located, self.spec)
        else:
            header, first_file = self.header_line, str(self.first_file)
            function = _score_csv_lines(
                self.model, header, first_file, run_id, reject_cap, located, self.spec
            )
        return self.numbered.mapInArrow(function, OUTPUT_SCHEMA)

    def flat(self) -> DataFrame:
        """A scoring pass with the structs' fields as columns."""
        return self.scored().select(*_flat_columns())


def _flat_columns(scores: bool = True) -> list[Any]:
    """The output's columns, the structs' fields as columns (without ``scores``: no score columns)."""
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    nested = [
        F.col(f"{name}.{f.name}").alias(f.name) for name, kind in (("at", _AT), ("side", _SIDE)) for f in kind
    ]
    top = ("kind", *SCORES_COLUMNS, "person_id") if scores else ("kind", "candidate_id")
    return [F.col(c) for c in top] + nested


def _score_csv_lines(
    model: ShippedModel,
    header_line: str,
    first_file: str,
    run_id: str,
    reject_cap: int | None,
    located: bool,
    spec: ProfileSpec | None = None,
) -> Any:
    header = _header_fields(header_line)

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _ = run_id  # in the closure: no two runs have the same plan, so none reads another's cache
        scorer = model.load()
        splits: dict[tuple[str, int], _Split] = {}
        for record_batch in batches:
            files, starts = record_batch.column("_file"), record_batch.column("_start")
            values = record_batch.column("value")
            for begin, end in _runs(files, starts):
                key = (files[begin].as_py(), starts[begin].as_py())
                split = splits.setdefault(key, _Split(*key))
                run = values.slice(begin, end - begin)
                first = split.lines  # line of the split at the run's first value
                split.lines += len(run)
                if key[1] == 0 and first == 0:  # the file's header line
                    _check_header(run[0].as_py(), header_line, key[0], first_file)
                    run, first = run.slice(1), 1
                if len(run) == 0:
                    continue
                for frame, numbers, malformed in line_blocks([(0, _joined_lines(run))], header, key[0]):
                    # numbers count the given lines from 1; lines of the split count from 0.
                    bad = [(first + n - 1, cid, why) for n, cid, why in malformed]
                    block = score_block(scorer, frame, first + numbers - 1, bad, spec)
                    yield _output(block, split, block.rows, reject_cap, located)
        if splits:
            yield _split_rows(list(splits.values()))

    return score_partition


def _check_header(line: str | None, header_line: str, file: str, first_file: str) -> None:
    """Every CSV file of a run has the first file's header (checked in the task that reads it)."""
    if (line or "").removeprefix(_BOM).rstrip("\r") != header_line:
        raise ContractError(
            f"{file}: its header differs from the one of {first_file}: score files with "
            "different headers in separate runs"
        )


def _score_columns(
    model: ShippedModel,
    columns: list[str],
    run_id: str,
    reject_cap: int | None,
    located: bool,
    spec: ProfileSpec | None = None,
) -> Any:
    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _ = run_id  # in the closure: no two runs have the same plan, so none reads another's cache
        scorer = model.load()
        splits: dict[tuple[str, int], _Split] = {}
        for record_batch in batches:
            files, starts = record_batch.column("_file"), record_batch.column("_start")
            rows = record_batch.column("_row").to_numpy() + 1
            for begin, end in _runs(files, starts):
                key = (files[begin].as_py(), starts[begin].as_py())
                split = splits.setdefault(key, _Split(*key))
                split.lines += end - begin
                part = record_batch.slice(begin, end - begin).select(columns)
                frame = pa.RecordBatch.from_arrays(
                    [_plain(part.column(i)) for i in range(part.num_columns)], names=columns
                )
                block = score_block(scorer, frame, rows[begin:end], profile=spec)
                yield _output(block, split, block.rows, reject_cap, located)
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
class SparkSummary:
    """The tallies of a scoring pass."""

    rows: int
    scored: int
    problems: int
    rejected_rows: int
    # The tasks' partial profiles, merged (when a reference profile was given).
    profile: PartialProfile | None = field(default=None, kw_only=True)

    @classmethod
    def of(cls, splits: list[Any], csv_input: bool, spec: ProfileSpec | None = None) -> SparkSummary:
        total = {k: sum(int(s[k] or 0) for s in splits) for k in ("lines", "scored", "problems", "rejected")}
        headers = sum(1 for s in splits if csv_input and s["start"] == 0)
        profile = None if spec is None else merged_profile(spec, splits)
        return cls(
            total["lines"] - headers, total["scored"], total["problems"], total["rejected"], profile=profile
        )

    def line(self) -> str:
        return f"scored {self.scored} rows, rejected {self.rejected_rows} ({self.problems} problems)"


@dataclass
class SparkScores(SparkSummary):
    """What :func:`score_spark` returns: the two tables and the tallies of the scoring pass."""

    scores: DataFrame
    rejects: DataFrame
    cached: DataFrame

    def __iter__(self) -> Iterator[Any]:  # ``scores, rejects = score_spark(...)``
        return iter((self.scores, self.rejects))

    def unpersist(self) -> None:
        """Release the cached scoring pass (the tables cannot be read after)."""
        self.cached.unpersist()


def _paths(input_path: str | Path | list[str]) -> list[str]:
    paths = [input_path] if isinstance(input_path, str | Path) else list(input_path)
    return [str(p) for p in paths]


def _scan(
    spark: SparkSession, paths: list[str], model: Path | str | None, reference: ReferenceProfile | None = None
) -> _Scan:
    """Plan the read of the input (CSV lines or Parquet columns, each row located); reads one line.

    Raises:
        ContractError: a required column is missing, or the input is empty.
    """
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    shipped = ShippedModel.from_dir(_model_dir(model))
    spec = reference.spec if reference is not None else None
    meta = [F.col("_metadata.file_path").alias("_file"), F.col("_metadata.file_block_start").alias("_start")]
    if all(p.rstrip("/").endswith(".parquet") for p in paths):
        raw = spark.read.parquet(*paths)
        _require(raw.columns, paths)
        numbered = raw.select(*raw.columns, *meta, F.col("_metadata.row_index").alias("_row"))
        return _Scan(numbered, raw.columns, None, None, shipped, spec)
    text = spark.read.option("lineSep", "\n").text(paths)
    numbered = text.select("value", *meta)
    first = numbered.where(F.col("_start") == 0).limit(1).collect()  # one split's first line
    if not first:
        raise ContractError(f"{paths[0]}: the file is empty (expected a header row)")
    header_line = first[0]["value"].removeprefix(_BOM).rstrip("\r")
    columns = _header_fields(header_line)
    _require(columns, [first[0]["_file"]])
    return _Scan(numbered, columns, header_line, first[0]["_file"], shipped, spec)


@contextlib.contextmanager
def _task_errors() -> Iterator[None]:
    """A ContractError raised in a Spark task (a bad header, text that is not UTF-8) as one, here."""
    try:
        yield
    except ContractError:
        raise
    except Exception as exc:
        found = re.search(r"ContractError: ([^\n]+)", str(exc))
        if found is None:
            raise
        raise ContractError(found.group(1).strip()) from None


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
        neutralized, as the single-process scorer writes it in every format. The scoring
        pass is cached until :meth:`SparkScores.unpersist`; to write the outputs, and
        nothing else, :func:`score_spark_to` is faster (no cache).

    Raises:
        ContractError: a required column is missing, the input is empty, or two CSV files
            of one run have different headers.
    """
    return _score_cached(spark, _scan(spark, _paths(input_path), model, reference))


def _score_cached(spark: SparkSession, scan: _Scan) -> SparkScores:
    """:func:`score_spark` on a planned read: the pass cached, every row numbered from it."""
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    out = scan.flat().persist()  # released by SparkScores.unpersist (the CLI calls it)
    with _task_errors():  # the one pass over the input: scores and rejects stay cached
        splits = out.where(F.col("kind") == SPLIT).select(*_SPLIT_FIELDS).collect()
    offsets = spark.createDataFrame(_offsets(splits, scan.header_line), _OFFSETS_SCHEMA)
    rows = _located(out.where(F.col("kind") != SPLIT).drop("file"), offsets)
    scores = rows.where(F.col("kind") == SCORE).select("file", "row", *SCORES_COLUMNS, "person_id")
    if PERSON_ID.name in scan.columns:
        from pyspark.sql import Window

        by_person = Window.partitionBy("person_id").orderBy(F.desc("p_advance"), "file", "row")
        scores = scores.withColumn(RANK_COLUMN, F.row_number().over(by_person).cast("long"))
    summary = SparkSummary.of(splits, scan.header_line is not None, scan.spec)
    return SparkScores(
        **vars(summary),
        scores=scores.drop("person_id"),
        rejects=rows.where(F.col("kind") == REJECT).select(*REJECTS_FIELDS),
        cached=out,
    )


_SPLIT_FIELDS = ("file", "file_key", "start", "lines", "scored", "problems", "rejected", "profile")
_OFFSETS_SCHEMA = "file_key long, start long, offset long, file string"
REJECTS_FIELDS = ("file", "row", "candidate_id", "column", "reason")
# Problems per split that travel to the driver with the scoring pass (score_spark_to): past
# that, the rejects come from a second pass (a file that is mostly bad is no hot path).
REJECTS_PER_SPLIT = 5_000


def _located(rows: DataFrame, offsets: DataFrame) -> DataFrame:
    """Rows with their ``file`` and ``row``: line in split + lines before the split (a broadcast join)."""
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    located = rows.join(F.broadcast(offsets), ["file_key", "start"])
    return located.withColumn("row", F.col("line") + F.col("offset"))


def score_spark_to(
    spark: SparkSession,
    input_path: str | Path | list[str],
    out_dir: Path | str,
    model: Path | str | None = None,
    fmt: str = "parquet",
    reference: ReferenceProfile | None = None,
) -> SparkSummary:
    """Score candidate files on Spark and write ``OUT/scores/`` and ``OUT/rejects/``, in one pass, no cache.

    The same outputs as :func:`score_spark` then :func:`write_outputs`, for less: the scores
    are written straight from the scoring pass (the scores layout needs no row number), while
    the split tallies and the rejects come back to the driver with that pass (``observe``),
    where row numbers are put on the rejects. A split with more than
    :data:`REJECTS_PER_SPLIT` problems sends only that many; then the rejects come from a
    second pass. With ``person_id`` in the input, ranking is a window over all the scores,
    which needs their row numbers: that run goes through :func:`score_spark`'s cached pass.
    With ``reference``, the tasks also count their rows on its bins; the summary's
    ``profile`` holds the merged counts (they travel with the split tallies).

    Raises:
        ContractError: as :func:`score_spark`.
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    scan = _scan(spark, _paths(input_path), model, reference)
    if PERSON_ID.name in scan.columns:
        result = _score_cached(spark, scan)
        write_outputs(result.scores, result.rejects, out_dir, fmt)
        result.unpersist()
        totals = (result.rows, result.scored, result.problems, result.rejected_rows)
        return SparkSummary(*totals, profile=result.profile)
    out = str(out_dir).rstrip("/")
    observation = Observation(f"stepdown_{uuid.uuid4().hex}")
    side = F.when(F.col("kind") != SCORE, F.struct(*_flat_columns(scores=False)))
    passed = scan.scored(REJECTS_PER_SPLIT, located=False).observe(
        observation, F.collect_list(side).alias("side")
    )
    with _task_errors():
        _write_scores(passed.where(F.col("kind") == SCORE).select(*SCORES_COLUMNS), out, fmt)
    observed = observation.get["side"]
    splits = [r for r in observed if r["kind"] == SPLIT]
    offsets = _offsets(splits, scan.header_line)
    summary = SparkSummary.of(splits, scan.header_line is not None, scan.spec)
    problems = [r for r in observed if r["kind"] == REJECT]
    if len(problems) == summary.problems:
        where = {(key, start): (offset, file) for key, start, offset, file in offsets}
        located = []
        for r in problems:
            offset, file = where[(r["file_key"], r["start"])]
            located.append((file, r["line"] + offset, r["candidate_id"], r["column"], r["reason"]))
        rejects = spark.createDataFrame(located, _REJECTS_SCHEMA)
    else:  # a split with too many problems to send: the rejects of a second pass
        table = spark.createDataFrame(offsets, _OFFSETS_SCHEMA)
        second = scan.flat().where(F.col("kind") == REJECT).drop("file")
        rejects = _located(second, table).select(*REJECTS_FIELDS)
    _write_rejects(rejects, out)
    return summary


_REJECTS_SCHEMA = "file string, row long, candidate_id string, column string, reason string"


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


def _offsets(splits: list[Any], header_line: str | None) -> list[tuple[int, int, int, str]]:
    """``(file key, split start, lines of the file before the split, file)``.

    Parquet rows are numbered in their file already: their offsets are 0.
    """
    by_file: dict[str, list[Any]] = {}
    for split in splits:
        by_file.setdefault(split["file"], []).append(split)
    offsets = []
    for file, parts in by_file.items():
        before = 0
        for split in sorted(parts, key=lambda s: s["start"]):
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
    _write_scores(ordered.drop("file", "row"), out, fmt)
    _write_rejects(rejects, out)


def _write_scores(scores: DataFrame, out: str, fmt: str) -> None:
    if fmt == "csv":
        scores.write.option("header", True).csv(f"{out}/scores")
    else:
        # Ids and probabilities are (nearly) all distinct: a dictionary of them is work for nothing.
        plain = {f"parquet.enable.dictionary#{c}": "false" for c in ("candidate_id", "p_advance")}
        # Min/max statistics stay (as pyarrow writes them for the single process); the size
        # statistics (per-page byte counts and level histograms) are work no reader here uses.
        plain["parquet.size.statistics.enabled"] = "false"
        scores.write.options(**plain).parquet(f"{out}/scores")


def _write_rejects(rejects: DataFrame, out: str) -> None:
    rejects.orderBy("file", "row").drop("file").write.option("header", True).csv(f"{out}/rejects")
