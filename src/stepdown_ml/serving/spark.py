"""Scale-out scoring on Apache Spark, through the same code as ``stepdown-ml score``.

Each partition is scored by :func:`stepdown_ml.serving.batch.score_block` (validation,
features, the ONNX model, recommendations, reasons) inside ``mapInArrow`` (Arrow batches
both ways, no pandas conversion by Spark); CSV text is
parsed by the same :func:`stepdown_ml.serving.batch.csv_blocks` as the CLI, so a malformed line
is rejected with the same row number and reason. The model directory travels to the
executors with ``SparkContext.addFile`` and each executor process builds its ONNX
session once. Ranking by ``person_id`` runs as a Spark window over the whole input, so
one person's rows may sit in any partitions.

Row numbers: for CSV, a row's number is its line number in its file, minus the header
(as in the CLI); for Parquet, its position in its file. Lines are numbered from
``monotonically_increasing_id`` and per-partition offsets (the file is read twice: once
to count, once to score).
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from stepdown_ml.core.modeldir import read_manifest
from stepdown_ml.core.schema import (
    CANDIDATE_COLUMNS,
    PERSON_ID,
    RANK_COLUMN,
    SCORES_COLUMNS,
    SCORES_SCHEMA,
    ContractError,
)
from stepdown_ml.core.tables import FORMULA_PATTERN
from stepdown_ml.serving import Model
from stepdown_ml.serving.batch import csv_blocks, score_block

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# One row per input row: a score (kind "score", the scores layout) or a reject.
_ARROW_OUTPUT = pa.schema(
    [
        ("kind", pa.string()),
        ("file", pa.string()),
        ("row", pa.int64()),
        *SCORES_SCHEMA,
        ("column", pa.string()),
        ("reason", pa.string()),
        ("person_id", pa.string()),
    ]
)
_SPARK_TYPES = {pa.string(): "string", pa.int64(): "long", pa.float64(): "double"}
OUTPUT_SCHEMA = ", ".join(f"{field.name} {_SPARK_TYPES[field.type]}" for field in _ARROW_OUTPUT)
_PARTITION_BITS = 33  # monotonically_increasing_id: partition index << 33 | row in partition
_MODELS: dict[str, Model] = {}


def spark_session(master: str | None = None, app_name: str = "stepdown-ml") -> SparkSession:
    """A SparkSession (``local[*]`` unless ``master`` or spark-submit says otherwise).

    Executors use this interpreter unless ``PYSPARK_PYTHON`` says otherwise: the
    system Python lacks the project's packages.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    elif not SparkConf().contains("spark.master"):  # spark-submit sets it; plain python does not
        builder = builder.master("local[*]")
    return (
        builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Smaller splits than the 128 MB default: more tasks than cores, so none idles at the end.
        .config("spark.sql.files.maxPartitionBytes", os.environ.get("STEPDOWN_SPARK_SPLIT_BYTES", "32m"))
        .getOrCreate()
    )


def _executor_model(name: str) -> Model:
    """The model shipped with addFile, loaded once per executor Python process."""
    if name not in _MODELS:
        from pyspark import SparkFiles

        _MODELS[name] = Model(SparkFiles.get(name))
    return _MODELS[name]


def _numbered(frame: DataFrame) -> tuple[DataFrame, dict[tuple[str, int], int], list[tuple[str, int, int]]]:
    """Number the rows of a file source.

    Adds ``_file``, ``_pid`` and ``_within``; returns the offset that turns ``_within``
    into the 0-based line index within the file for each (file, partition), and the
    (file, partition, _within) of each file's first line.
    """
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    mask = (1 << _PARTITION_BITS) - 1
    frame = (
        frame.withColumn("_file", F.col("_metadata.file_path"))
        .withColumn("_mid", F.monotonically_increasing_id())
        .withColumn("_pid", F.shiftrightunsigned("_mid", _PARTITION_BITS).cast("int"))
        .withColumn("_within", F.col("_mid").bitwiseAND(F.lit(mask)))
        .drop("_mid")
    )
    counts = frame.groupBy("_file", "_pid").agg(F.count("*").alias("n"), F.min("_within").alias("first"))
    offsets: dict[tuple[str, int], int] = {}
    first_lines: list[tuple[str, int, int]] = []
    next_line: dict[str, int] = {}
    # A file's splits are read by partitions in increasing order.
    for row in sorted(counts.collect(), key=lambda r: (r["_file"], r["_pid"])):
        file, pid = row["_file"], row["_pid"]
        start = next_line.get(file, 0)
        if start == 0:
            first_lines.append((file, pid, row["first"]))
        offsets[(file, pid)] = start - row["first"]
        next_line[file] = start + row["n"]
    return frame, offsets, first_lines


def _header_fields(line: str) -> list[str]:
    return next(csv.reader([line]))


def _runs(*keys: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive keys, in order."""
    if len(keys[0]) == 0:
        return iter(())
    changes = np.zeros(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        changes |= key[1:] != key[:-1]
    return itertools.pairwise(np.flatnonzero(np.r_[True, changes, True]).tolist())


def _line_index(batch: pd.DataFrame, offsets: dict[tuple[str, int], int]) -> np.ndarray:
    """0-based line index within its file of every row of a batch (vectorized per run)."""
    files = batch["_file"].to_numpy()
    pids = batch["_pid"].to_numpy()
    lines = batch["_within"].to_numpy(dtype=np.int64).copy()
    # A batch comes from one partition and holds few (file, partition) runs.
    for start, stop in _runs(files, pids):
        lines[start:stop] += offsets[(files[start], int(pids[start]))]
    return lines


def _output(block: Any, file: str) -> pa.RecordBatch:
    """One Arrow batch of scores and rejects in OUTPUT_SCHEMA (no pandas round trip)."""
    scores, rejects = block.scores, block.rejects
    n_scores, n_rejects = scores.num_rows, rejects.num_rows

    def stack(top: pa.Array | pa.ChunkedArray | None, bottom: pa.Array | None, kind: pa.DataType) -> pa.Array:
        top = pa.nulls(n_scores, kind) if top is None else top
        bottom = pa.nulls(n_rejects, kind) if bottom is None else bottom
        if isinstance(top, pa.ChunkedArray):
            top = top.combine_chunks()
        return pa.concat_arrays([top.cast(kind), bottom.cast(kind)])

    persons = block.persons
    arrays = [
        pa.array(["score"] * n_scores + ["reject"] * n_rejects, pa.string()),
        pa.array([file] * (n_scores + n_rejects), pa.string()),
        stack(pa.array(block.rows, pa.int64()), rejects.column("row").combine_chunks(), pa.int64()),
        stack(scores.column("candidate_id"), rejects.column("candidate_id").combine_chunks(), pa.string()),
        *(stack(scores.column(field.name), None, field.type) for field in list(SCORES_SCHEMA)[1:]),
        stack(None, rejects.column("column").combine_chunks(), pa.string()),
        stack(None, rejects.column("reason").combine_chunks(), pa.string()),
        stack(persons, None, pa.string()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=_ARROW_OUTPUT)


def _score_csv_lines(model_name: str, headers: dict[str, tuple[str, list[str]]], offsets: dict) -> Any:
    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = _executor_model(model_name)
        for record_batch in batches:
            batch = record_batch.to_pandas()
            lines = _line_index(batch, offsets)
            files = batch["_file"].to_numpy()
            # Runs of one file within this batch, in order.
            for start, stop in _runs(files):
                file = files[start]
                run_lines = lines[start:stop]
                keep = run_lines > 0  # line 0 is the header
                if not keep.any():
                    continue
                header_line, header = headers[file]
                text = "\n".join([header_line, *batch["value"].to_numpy()[start:stop][keep]]) + "\n"
                numbers_in_file = run_lines[keep]
                for frame, numbers, malformed in csv_blocks(
                    pa.BufferReader(text.encode("utf-8")), header, file
                ):
                    rows = numbers_in_file[numbers - 1] if len(numbers) else numbers
                    bad = [(int(numbers_in_file[n - 1]), cid, why) for n, cid, why in malformed]
                    block = score_block(model, frame, rows, bad)
                    yield _output(block, file)

    return score_partition


def _score_columns(model_name: str, offsets: dict) -> Any:
    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = _executor_model(model_name)
        for record_batch in batches:
            batch = record_batch.to_pandas()
            rows = _line_index(batch, offsets) + 1
            files = batch["_file"].to_numpy()
            for start, stop in _runs(files):
                frame = (
                    batch.iloc[start:stop].drop(columns=["_file", "_pid", "_within"]).reset_index(drop=True)
                )
                frame = frame.astype(object).where(frame.notna(), "")
                yield _output(score_block(model, frame, rows[start:stop]), files[start])

    return score_partition


def score_spark(
    spark: SparkSession, input_path: str | list[str], model_dir: Path | str
) -> tuple[DataFrame, DataFrame]:
    """Score candidate files (CSV or Parquet, files or folders) on Spark.

    Args:
        spark: the session.
        input_path: file(s) or folder(s); ``.parquet`` inputs are read as Parquet.
        model_dir: a model directory (shipped to the executors).

    Returns:
        ``(scores, rejects)``: the docs/CONTRACT.md layouts (``rank`` when the input has
        ``person_id``), plus ``file`` and ``row`` columns that locate every row. Not
        neutralized for spreadsheets: :func:`write_outputs` does that when writing CSV.

    Raises:
        ContractError: a required column is missing from the input.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    paths = [input_path] if isinstance(input_path, str | Path) else list(input_path)
    paths = [str(p) for p in paths]
    model_dir = Path(model_dir).resolve()
    read_manifest(model_dir)  # fail on the driver, not in every task
    spark.sparkContext.addFile(str(model_dir), recursive=True)
    name = model_dir.name
    if all(p.rstrip("/").endswith(".parquet") for p in paths):
        raw = spark.read.parquet(*paths)
        columns = raw.columns
        _require(columns, paths)
        numbered, offsets, _ = _numbered(raw)
        numbered = numbered.select(
            *[F.col(c).cast("string").alias(c) for c in columns], "_file", "_pid", "_within"
        )
        out = numbered.mapInArrow(_score_columns(name, offsets), OUTPUT_SCHEMA)
    else:
        numbered, offsets, first_lines = _numbered(spark.read.text(paths))
        is_header = F.lit(False)
        for file, pid, within in first_lines:
            is_header = is_header | (
                (F.col("_file") == file) & (F.col("_pid") == pid) & (F.col("_within") == within)
            )
        headers = {
            r["_file"]: r["value"] for r in numbered.where(is_header).select("_file", "value").collect()
        }
        if not headers:
            raise ContractError(f"{paths[0]}: the file is empty (expected a header row)")
        headers = {file: (line, _header_fields(line)) for file, line in headers.items()}
        for file, (_, fields) in headers.items():
            _require(fields, [file])
        columns = next(iter(headers.values()))[1]
        numbered = numbered.select("value", "_file", "_pid", "_within")
        out = numbered.mapInArrow(_score_csv_lines(name, headers, offsets), OUTPUT_SCHEMA)
    out = out.persist()
    scores = out.where(F.col("kind") == "score").select("file", "row", *SCORES_COLUMNS, "person_id")
    if PERSON_ID.name in columns:
        by_person = Window.partitionBy("person_id").orderBy(F.desc("p_advance"), "file", "row")
        scores = scores.withColumn(RANK_COLUMN, F.row_number().over(by_person).cast("long"))
    scores = scores.drop("person_id")
    rejects = out.where(F.col("kind") == "reject").select("file", "row", "candidate_id", "column", "reason")
    return scores, rejects


def _require(columns: Any, paths: list[str]) -> None:
    missing = [c.name for c in CANDIDATE_COLUMNS if c.name not in set(columns)]
    if missing:
        raise ContractError(f"{paths[0]}: missing required column(s): {', '.join(missing)}")


def _neutralized(column: str) -> Any:
    from pyspark.sql import functions as F  # noqa: N812 (Spark's idiom)

    return F.when(F.col(column).rlike(FORMULA_PATTERN), F.concat(F.lit("'"), F.col(column))).otherwise(
        F.col(column)
    )


def write_outputs(scores: DataFrame, rejects: DataFrame, out_dir: Path | str, fmt: str = "parquet") -> None:
    """Write ``scores/`` (Parquet or CSV partitions, input order) and ``rejects/`` (CSV).

    Formula-like text is neutralized in CSV output. Spark's output committer makes each
    folder appear only when its job succeeded.
    """
    out = str(out_dir).rstrip("/")
    # mapInArrow keeps each partition's order and partitions follow the files, so only the
    # ranking window (a shuffle) calls for a sort to restore input order.
    ordered = scores.orderBy("file", "row") if RANK_COLUMN in scores.columns else scores
    if fmt == "csv":
        ordered = ordered.withColumn("candidate_id", _neutralized("candidate_id"))
        ordered.drop("file", "row").write.option("header", True).csv(f"{out}/scores")
    else:
        ordered.drop("file", "row").write.parquet(f"{out}/scores")
    safe = rejects.orderBy("file", "row")
    for column in ("candidate_id", "column", "reason"):
        safe = safe.withColumn(column, _neutralized(column))
    safe.drop("file").write.option("header", True).csv(f"{out}/rejects")
