"""Streaming batch scoring of candidate files (CSV, gzipped CSV, Parquet).

The input is read in blocks, so memory stays flat as files grow. Each block is validated,
featurized and scored by the same :class:`stepdown_ml.serving.Model` as ``predict()``;
blocks are scored on a small thread pool (pyarrow, numpy and onnxruntime release the GIL)
and written in input order. Every input row ends in the scores or in the rejects. Both
files are written to temporary files and renamed only when the whole input succeeded.

With ``person_id`` in the input, options are ranked per person over the whole file:
the scores go to a temporary file first, ranks are computed from the compact
(person, p_advance) columns, and a second pass adds them.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from stepdown_ml.core import config
from stepdown_ml.core.arrow import EMPTY_TEXT, from_numpy, scalar, strings, to_numpy
from stepdown_ml.core.features import arrow_text
from stepdown_ml.core.parsing import Frame
from stepdown_ml.core.recommend import rank_within
from stepdown_ml.core.schema import (
    CANDIDATE_COLUMNS,
    PERSON_ID,
    RANK_COLUMN,
    RANK_TYPE,
    REJECTS_SCHEMA,
    SCORES_COLUMNS,
    SCORES_SCHEMA,
    ContractError,
    require_columns,
)
from stepdown_ml.core.tables import FORMULA_PATTERN, atomic_path, check_paths, output_format, stem_of
from stepdown_ml.core.validation import column_names, rejects_table, sort_rejects, validate_frame
from stepdown_ml.serving import Model

# The CSV reader holds about 40 bytes of buffers per byte of its block (one buffer per
# column), while validation, features and inference cost less per row in larger blocks.
# So files are read in small pieces, and several pieces are scored together as a block.
READ_BYTES = 1 << 19
BLOCK_BYTES = 1 << 22
_QUOTE = scalar("'")


@dataclass
class ScoreSummary:
    """What a scoring run did."""

    rows: int
    scored: int
    rejected_rows: int
    problems: int
    seconds: float

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"scored {self.scored} rows, rejected {self.rejected_rows} "
            f"({self.problems} problems), {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )


class _Input:
    """Blocks of an input file as Arrow record batches, with their 1-based row numbers."""

    def __init__(self, path: Path, chunk_rows: int) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self.size = path.stat().st_size
        self._raw: Any = None
        self.header: list[str] = []
        self.finished = False

    def position(self) -> int:
        """Bytes of the file consumed so far (for the ETA)."""
        if self.finished:
            return self.size
        try:
            return self._raw.tell() if self._raw is not None else 0
        except (OSError, ValueError):
            return 0

    def blocks(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]]:
        """Yield ``(frame, row_numbers, field_count_problems)`` for each block."""
        if self.size == 0:
            raise ContractError(f"{self.path}: the file is empty (expected a header row)")
        suffixes = self.path.suffixes
        if suffixes and suffixes[-1] == ".parquet":
            yield from self._parquet_blocks()
        else:
            yield from self._csv_blocks(gzip=bool(suffixes) and suffixes[-1] == ".gz")
        self.finished = True

    def _parquet_blocks(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]]:
        try:
            parquet = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ContractError(f"{self.path}: not a Parquet file: {exc}") from None
        self.header = parquet.schema_arrow.names
        require_columns(self.header, CANDIDATE_COLUMNS, str(self.path))
        first = 1
        for batch in parquet.iter_batches(batch_size=self.chunk_rows):
            yield batch, np.arange(first, first + len(batch)), []
            first += len(batch)

    def _csv_blocks(self, gzip: bool) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]]:
        header = self._read_header(gzip)
        require_columns(header, CANDIDATE_COLUMNS, str(self.path))
        self._raw = pa.OSFile(str(self.path), "rb")
        try:
            stream = pa.CompressedInputStream(self._raw, "gzip") if gzip else self._raw
            yield from csv_blocks(stream, header, str(self.path))
        finally:
            self._raw.close()

    def _read_header(self, gzip: bool) -> list[str]:
        import gzip as gz

        opener = gz.open if gzip else open
        try:
            with opener(self.path, "rt", encoding="utf-8", newline="") as handle:
                line = handle.readline()
        except UnicodeDecodeError:
            raise ContractError(f"{self.path}: row 0 (header): not UTF-8 text") from None
        except (OSError, EOFError) as exc:
            raise ContractError(f"{self.path}: cannot read: {exc}") from None
        if not line.strip():
            raise ContractError(f"{self.path}: the file is empty (expected a header row)")
        header = next(csv.reader([line]))
        if len(set(header)) != len(header):
            raise ContractError(f"{self.path}: the header names a column twice")
        self.header = header
        return header


def csv_blocks(
    stream: Any, header: list[str], source: str, block_bytes: int | None = None
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]]:
    """Parse CSV text (header line included) block by block.

    Yields ``(record batch of text, 1-based row numbers, malformed rows)`` per block of
    about ``block_bytes`` (default :data:`BLOCK_BYTES`), where a malformed row is
    ``(row number, raw text)`` of a line with the wrong field count. Every data row is in
    exactly one of the two. Used by the CLI on files and by the Spark engine on the lines
    of a partition.

    Raises:
        ContractError: the text is not UTF-8 or not CSV, naming ``source``.
    """
    malformed: list[tuple[int, str]] = []

    def on_invalid(row: Any) -> str:
        # Physical line numbers count the header as line 1.
        malformed.append((row.number - 1, row.text))
        return "skip"

    block_bytes = block_bytes or BLOCK_BYTES
    read_bytes = min(READ_BYTES, block_bytes)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=read_bytes, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return  # the header alone, without a final newline: no rows
        raise ContractError(f"{source}: {_arrow_reason(exc)}") from None
    next_row = 1
    pieces: list[tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]] = []
    try:
        for batch in reader:
            numbers, taken = _number_rows(next_row, batch.num_rows, malformed)
            if len(numbers):
                next_row = int(numbers[-1]) + 1
            pieces.append((batch, numbers, taken))
            if len(pieces) * read_bytes >= block_bytes:
                yield _joined(pieces)
                pieces = []
        if pieces:
            yield _joined(pieces)
    except pa.ArrowInvalid as exc:
        raise ContractError(f"{source}: {_arrow_reason(exc)}") from None
    if malformed:  # bad rows after the last good one
        empty = pa.record_batch([strings([]) for _ in header], names=header)
        yield empty, np.arange(0), sorted(malformed)


def _joined(
    pieces: list[tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]],
) -> tuple[pa.RecordBatch, np.ndarray, list[tuple[int, str]]]:
    """Consecutive pieces of a file as one block (compact buffers, in order)."""
    if len(pieces) == 1:
        return pieces[0]
    return (
        pa.concat_batches([batch for batch, _, _ in pieces]),
        np.concatenate([numbers for _, numbers, _ in pieces]),
        [row for _, _, taken in pieces for row in taken],
    )


def _number_rows(
    first: int, count: int, malformed: list[tuple[int, str]]
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Row numbers of a block's good rows, skipping (and taking out) the malformed rows."""
    malformed.sort()
    skipped_rows = [m[0] for m in malformed]
    numbers: list[int] = []
    taken: list[tuple[int, str]] = []
    row = first
    while len(numbers) < count:
        i = bisect.bisect_left(skipped_rows, row)
        if i < len(skipped_rows) and skipped_rows[i] == row:
            taken.append(malformed[i])
        else:
            numbers.append(row)
        row += 1
    for item in taken:
        malformed.remove(item)
    return np.asarray(numbers, dtype=np.int64), taken


def _arrow_reason(exc: Exception) -> str:
    text = str(exc)
    if "UTF8" in text or "UTF-8" in text:
        return f"not UTF-8 text ({text.splitlines()[0]})"
    return f"not a readable CSV file ({text.splitlines()[0]})"


def _field_count_rejects(skipped: list[tuple[int, str]], header: list[str], expected: int) -> pa.Table:
    id_index = header.index("candidate_id") if "candidate_id" in header else None
    rows, ids, reasons = [], [], []
    for number, text in skipped:
        rows.append(number)
        try:
            fields = next(csv.reader([text]), [])
        except csv.Error as exc:  # e.g. a quote that never closes
            ids.append("")
            reasons.append(f"not a valid CSV row ({exc})")
            continue
        ids.append(fields[id_index] if id_index is not None and id_index < len(fields) else "")
        reasons.append(f"expected {expected} fields, got {len(fields)}")
    return rejects_table(rows, ids, [""] * len(rows), reasons)


@dataclass
class Block:
    """A scored block: scores of its valid rows (input order), its rejects, their persons."""

    scores: pa.Table
    rows: np.ndarray
    rejects: pa.Table
    persons: pa.Array | None


def score_block(
    model: Model,
    frame: Frame,
    row_numbers: np.ndarray,
    malformed: Sequence[tuple[int, str]] = (),
    header: list[str] | None = None,
) -> Block:
    """Score one block of an input file: the unit of work of every batch engine.

    Args:
        model: the loaded model.
        frame: the block's well-formed rows, as read (an Arrow batch of text, or a
            pandas frame).
        row_numbers: 1-based file row number of each row of ``frame``.
        malformed: ``(row number, raw text)`` of rows in this block that could not be
            split into the header's fields; they become row-level rejects.
        header: the file's header (to find ``candidate_id`` in a malformed row).

    Returns:
        The scores without ``rank`` (ranking needs the whole file) and their row numbers,
        every problem (rejects layout, sorted by row), and the ``person_id`` of each
        scored row when the input has one.
    """
    checked = validate_frame(frame, CANDIDATE_COLUMNS, row_numbers=row_numbers)
    valid = checked.valid_columns()
    scores = model.score_features_arrow(model.features.transform(valid), arrow_text(valid["candidate_id"]))
    rejects = checked.rejects
    if malformed:
        header = header if header is not None else column_names(frame)
        extra = _field_count_rejects(list(malformed), header, len(header))
        rejects = sort_rejects(pa.concat_tables([rejects, extra]))
    persons = None
    if PERSON_ID.name in valid:
        persons = arrow_text(valid[PERSON_ID.name])
    rows = np.asarray(row_numbers, dtype=np.int64)[~checked.bad]
    return Block(scores=scores, rows=rows, rejects=rejects, persons=persons)


def _neutralize_column(values: pa.Array) -> pa.Array:
    risky = pc.match_substring_regex(values, FORMULA_PATTERN)
    return pc.if_else(risky, pc.binary_join_element_wise(_QUOTE, values, EMPTY_TEXT), values)


class _Writer:
    """A CSV (plain or gzip) or Parquet writer on a temporary path (atomic rename by the caller)."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str = "csv") -> None:
        self.parquet = fmt == "parquet"
        self.gzip = fmt == "csv.gz"
        self.path = path
        self.schema = schema
        self._writer: Any = None
        self._stream: Any = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.parquet:
                self._writer = pq.ParquetWriter(self.path, self.schema)
            elif self.gzip:
                self._stream = pa.CompressedOutputStream(str(self.path), "gzip")
                self._writer = pacsv.CSVWriter(self._stream, self.schema)
            else:
                self._writer = pacsv.CSVWriter(self.path, self.schema)
        self._writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        if self._writer is None:
            self.write(pa.Table.from_batches([], schema=self.schema))
        self._writer.close()
        if self._stream is not None:
            self._stream.close()


def _scores_table(scores: pa.Table) -> pa.Table:
    """The scores as written: formula-like ids neutralized, text columns plain strings."""
    table = scores.select(list(SCORES_COLUMNS)).cast(SCORES_SCHEMA)
    return table.set_column(0, "candidate_id", _neutralize_column(table.column(0).combine_chunks()))


def _rejects_table(rejects: pa.Table) -> pa.Table:
    """The rejects as written: formula-like text neutralized."""
    for i, name in enumerate(REJECTS_SCHEMA.names[1:], start=1):
        rejects = rejects.set_column(i, name, _neutralize_column(rejects.column(name).combine_chunks()))
    return rejects


class _Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, total_bytes: int, position: Callable[[], int], enabled: bool) -> None:
        self.total = max(total_bytes, 1)
        self.position = position
        self.enabled = enabled
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, rows: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < 0.5):
            return
        self.last = now
        elapsed = now - self.start
        done = min(self.position() / self.total, 1.0)
        eta = elapsed * (1 - done) / done if done > 0 else float("nan")
        rate = rows / elapsed if elapsed > 0 else 0.0
        sys.stderr.write(f"\r{rows:,} rows  {rate:,.0f} rows/s  {done:6.1%}  ETA {eta:5.0f} s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def use_lean_memory_pool() -> str:
    """Make jemalloc pyarrow's default memory pool, where this build of pyarrow has it.

    Measured here on 1M rows (in-process scoring): jemalloc 2.33 s and 201 MB peak RSS,
    the default mimalloc pool 2.61 s and 282 MB (it keeps freed pages of the many
    short-lived block buffers), the system allocator 2.56 s and 262 MB. A process-wide
    setting, so the CLI makes it, not the library. Returns the pool's backend name.
    """
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    return pa.default_memory_pool().backend_name


def score_file(
    input_path: Path | str,
    out_path: Path | str,
    rejects_path: Path | str | None = None,
    model: Model | None = None,
    chunk_rows: int = config.DEFAULT_CHUNK_ROWS,
    workers: int = 2,
    progress: bool | None = None,
) -> ScoreSummary:
    """Score every row of ``input_path`` into ``out_path``; rejects beside it.

    Args:
        input_path: candidates as CSV, ``.csv.gz`` or ``.parquet``.
        out_path: scores (CSV, or Parquet when the name ends in ``.parquet``).
        rejects_path: rejects CSV (default: ``<out stem>.rejects.csv`` beside ``out_path``).
        model: a loaded model (default: the committed default model).
        chunk_rows: rows per Parquet block (CSV blocks are ~4 MB).
        workers: blocks scored in parallel (sharing one single-threaded ONNX session).
        progress: show a progress line (default: when stderr is a terminal).

    Raises:
        ContractError: the file is unusable (missing, empty, not UTF-8, not CSV, a
            required column missing); nothing is written.
    """
    started = time.perf_counter()
    source = Path(input_path)
    if not source.is_file():
        raise ContractError(f"{source}: no such file")
    out = Path(out_path)
    fmt = output_format(out)
    rejects_out = Path(rejects_path) if rejects_path else out.with_name(stem_of(out) + ".rejects.csv")
    rejects_fmt = output_format(rejects_out, allowed=("csv", "csv.gz"))
    # Scores to be ranked are written once unranked, then copied with their rank.
    unranked_fmt = "parquet" if fmt == "parquet" else "csv"
    check_paths({"input": source}, {"--out": out, "--rejects": rejects_out})
    model = model or Model(config.DEFAULT_MODEL_DIR)
    reader = _Input(source, chunk_rows)
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(reader.size, reader.position, show)
    totals = {"rows": 0, "scored": 0, "problems": 0}
    rejected_rows: set[int] = set()
    person_ids: list[pa.Array] = []
    p_values: list[np.ndarray] = []

    def work(frame: Frame, numbers: np.ndarray, skipped: list[tuple[int, str]]) -> tuple:
        # One shared session: onnxruntime runs it from several threads, each call on its
        # caller's thread (one intra-op thread), without a second copy of the model.
        block = score_block(model, frame, numbers, skipped, reader.header)
        return len(numbers) + len(skipped), block.scores, block.rejects, block.persons

    ranked = None
    with (
        atomic_path(rejects_out) as rejects_tmp,
        atomic_path(out) as scores_tmp,
        contextlib.ExitStack() as cleanup,
    ):
        unranked_path = scores_tmp.with_name(scores_tmp.name + ".unranked")
        cleanup.callback(unranked_path.unlink, missing_ok=True)  # also when a run fails
        ranking = None
        scores_writer = None
        rejects_writer = _Writer(rejects_tmp, REJECTS_SCHEMA, rejects_fmt)
        pending: deque[Future] = deque()

        def drain(block: Future) -> None:
            nonlocal scores_writer, ranking
            rows, scores, rejects, persons = block.result()
            if ranking is None:
                ranking = persons is not None
            if scores_writer is None:
                if ranking:
                    scores_writer = _Writer(unranked_path, SCORES_SCHEMA, unranked_fmt)
                else:
                    scores_writer = _Writer(scores_tmp, SCORES_SCHEMA, fmt)
            scores_writer.write(_scores_table(scores))
            if rejects.num_rows:
                rejects_writer.write(_rejects_table(rejects))
                rejected_rows.update(rejects.column("row").to_pylist())
            if ranking:
                person_ids.append(persons)
                p_values.append(to_numpy(scores.column("p_advance")))
            totals["rows"] += rows
            totals["scored"] += scores.num_rows
            totals["problems"] += rejects.num_rows
            bar.update(totals["rows"])

        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            try:
                for frame, numbers, skipped in reader.blocks():
                    pending.append(pool.submit(work, frame, numbers, skipped))
                    while len(pending) > workers:
                        drain(pending.popleft())
                while pending:
                    drain(pending.popleft())
            finally:
                for block in pending:
                    block.cancel()
        if scores_writer is None:
            scores_writer = _Writer(scores_tmp, SCORES_SCHEMA, fmt)
        scores_writer.close()
        rejects_writer.close()
        if ranking:
            ranked = rank_within(pa.concat_arrays(person_ids), np.concatenate(p_values))
            _add_ranks(unranked_path, scores_tmp, ranked, unranked_fmt, fmt)
    bar.update(totals["rows"], force=True)
    bar.close()
    return ScoreSummary(
        rows=totals["rows"],
        scored=totals["scored"],
        rejected_rows=len(rejected_rows),
        problems=totals["problems"],
        seconds=time.perf_counter() - started,
    )


def _add_ranks(unranked: Path, out: Path, ranks: np.ndarray, unranked_fmt: str, fmt: str) -> None:
    """Second pass: copy the scores adding the ``rank`` column."""
    schema = SCORES_SCHEMA.append(pa.field(RANK_COLUMN, RANK_TYPE))
    writer = _Writer(out, schema, fmt)
    offset = 0
    if unranked_fmt == "parquet":
        batches = pq.ParquetFile(unranked).iter_batches()
    else:
        batches = pacsv.open_csv(
            unranked,
            convert_options=pacsv.ConvertOptions(
                column_types=dict(zip(SCORES_SCHEMA.names, SCORES_SCHEMA.types, strict=True)),
                strings_can_be_null=False,
            ),
        )
    for batch in batches:
        table = pa.Table.from_batches([batch])
        table = table.append_column(RANK_COLUMN, from_numpy(ranks[offset : offset + len(table)]))
        offset += len(table)
        writer.write(table)
    writer.close()
