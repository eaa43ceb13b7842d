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

import contextlib
import csv
import gzip
import itertools
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from stepdown_ml.core import config
from stepdown_ml.core.arrow import EMPTY_TEXT, cell_edges, from_numpy, scalar, strings, text_bytes, to_numpy
from stepdown_ml.core.features import arrow_text
from stepdown_ml.core.monitoring import (
    PartialProfile,
    ProfileSpec,
    drift_report,
    load_reference,
    profile_block,
    report_outputs,
    write_report,
)
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
from stepdown_ml.core.tables import (
    FORMULA_PATTERN,
    FORMULA_PREFIXES,
    atomic_paths,
    check_paths,
    output_format,
    stem_of,
    temporary_name,
)
from stepdown_ml.core.validation import rejects_table, sort_rejects, validate_frame
from stepdown_ml.serving import Model
from stepdown_ml.serving.processes import OrderedPool, WorkerError  # noqa: F401 - re-exported for callers

if TYPE_CHECKING:
    import pyarrow.parquet as pq

# The CSV parser holds about 40 bytes of buffers per byte of its block (one buffer per
# column), while validation, features and inference cost less per row in larger blocks.
# So files are read in pieces of whole lines, each parsed in small blocks, and several
# pieces are scored together as a block.
READ_BYTES = 1 << 21
PARSE_BYTES = 1 << 19
BLOCK_BYTES = 1 << 22
# Multi-process runs: a worker's task is a byte range of about this size (a fraction of the
# file, so that the workers finish together), or this many decompressed bytes of gzip.
TASKS_PER_WORKER = 4
MIN_TASK_BYTES = 4 << 20
MAX_TASK_BYTES = 64 << 20
GZIP_TASK_BYTES = 16 << 20
# One problem row that never became a record: (row number, candidate_id if readable, reason).
Malformed = tuple[int, str, str]
# Blocks of an input, ending with the number of lines read as the generator's return value.
Blocks = Generator[tuple[pa.RecordBatch, np.ndarray, list[Malformed]], None, int]
# The longest row read; a longer one is rejected (and skipped), not the file.
MAX_ROW_BYTES = 16 << 20
_NEWLINE, _RETURN, _QUOTE_BYTE = ord("\n"), ord("\r"), ord('"')
_BOM = b"\xef\xbb\xbf"
_QUOTE = scalar("'")


class RowsError(ContractError):
    """A file that cannot be read from a known row on: rows ``first`` to ``last`` (or on).

    A worker numbers rows from 1 within its task; the parent shifts the error to the rows
    of the file (:meth:`shifted`) before it reaches the user.
    """

    def __init__(self, source: str, first: int, last: int | None, what: str) -> None:
        self.source, self.first, self.last, self.what = source, first, last, what
        rows = f"rows from {first}" if last is None else f"rows {first}-{last}"
        super().__init__(f"{source}: {rows}: {what}")

    def shifted(self, lines: int) -> RowsError:
        """The same error with its rows ``lines`` further into the file."""
        last = None if self.last is None else self.last + lines
        return RowsError(self.source, self.first + lines, last, self.what)

    def __reduce__(self) -> tuple[Any, ...]:  # crosses the pipe from a worker whole
        return RowsError, (self.source, self.first, self.last, self.what)


@dataclass
class ScoreSummary:
    """What a scoring run did."""

    rows: int
    scored: int
    rejected_rows: int
    problems: int
    seconds: float
    processes: int = 1
    worker_peak_mb: float | None = None
    # The drift report (core.monitoring.drift_report) when score_file was asked for one.
    report: dict[str, Any] | None = None

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else float("inf")
        where = ""
        if self.processes > 1 and self.worker_peak_mb is not None:
            where = f", {self.processes} worker processes (peak {self.worker_peak_mb:,.0f} MB each at most)"
        return (
            f"scored {self.scored} rows, rejected {self.rejected_rows} "
            f"({self.problems} problems), {self.seconds:.1f} s ({rate:,.0f} rows/s){where}"
        )


class InputFile:
    """Blocks of an input file as Arrow record batches, with their 1-based row numbers.

    The file can also be cut into tasks for worker processes (:meth:`tasks`), each read
    on its own (:meth:`task_blocks`) with rows numbered from 1 within the task.
    """

    # A damaged Parquet file can fail anywhere: in its footer, its schema (names that are
    # not UTF-8 raise UnicodeDecodeError, a ValueError) or any page.
    _UNREADABLE = (pa.ArrowException, OSError, ValueError)

    def __init__(self, path: Path, chunk_rows: int) -> None:
        self.path = path
        self.chunk_rows = chunk_rows
        self.size = path.stat().st_size
        suffixes = path.suffixes
        self.kind = suffixes[-1].lstrip(".") if suffixes and suffixes[-1] in (".parquet", ".gz") else "csv"
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

    def read_header(self) -> list[str]:
        """The column names, checked against the contract (a clear error if unusable).

        Read once; later calls return the same names.
        """
        if self.header:
            return self.header
        if self.size == 0:
            raise ContractError(f"{self.path}: the file is empty (expected a header row)")
        if self.kind == "parquet":
            header = self._parquet().schema_arrow.names
        else:
            header = self._read_header(gzip=self.kind == "gz")
        require_columns(header, CANDIDATE_COLUMNS, str(self.path))
        self.header = header
        return header

    def blocks(self) -> Iterator[tuple[pa.RecordBatch, np.ndarray, list[Malformed]]]:
        """Yield ``(frame, row_numbers, field_count_problems)`` for each block."""
        self.read_header()
        if self.kind == "parquet":
            yield from self.parquet_blocks()
        else:
            self._raw = pa.OSFile(str(self.path), "rb")
            try:
                stream = pa.CompressedInputStream(self._raw, "gzip") if self.kind == "gz" else self._raw
                yield from csv_blocks(stream, self.header, str(self.path))
            finally:
                self._raw.close()
        self.finished = True

    def _parquet(self) -> pq.ParquetFile:
        import pyarrow.parquet as pq  # 8 ms to import: Parquet files only

        try:
            return pq.ParquetFile(self.path)
        except self._UNREADABLE as exc:
            raise ContractError(f"{self.path}: not a readable Parquet file: {_first_line(exc)}") from None

    def parquet_blocks(self, row_groups: Sequence[int] | None = None) -> Blocks:
        """The blocks of a Parquet file (of ``row_groups`` only); returns the row count."""
        first = 1
        batches = self._parquet().iter_batches(batch_size=self.chunk_rows, row_groups=row_groups)
        while True:
            try:
                batch = next(batches, None)
            except self._UNREADABLE as exc:
                raise RowsError(str(self.path), first, None, f"not readable: {_first_line(exc)}") from None
            if batch is None:
                return first - 1
            yield batch, np.arange(first, first + len(batch)), []
            first += len(batch)

    def tasks(self, workers: int, task_bytes: int | None = None) -> Iterator[Task] | None:
        """The file cut into tasks for ``workers`` processes; None when it cannot be cut.

        CSV: byte ranges of whole lines (each worker reads its own). Parquet: runs of row
        groups (None for a single row group). gzip cannot be split: the tasks carry pieces
        of whole lines that this process decompresses, while the workers parse and score.
        """
        self.read_header()
        if self.kind == "parquet":
            groups = self._parquet().num_row_groups
            if groups < 2:
                return None
            runs = np.array_split(np.arange(groups), min(groups, workers * TASKS_PER_WORKER))
            return iter([Task(i, int(run[0]), int(run[-1]) + 1) for i, run in enumerate(runs)])
        if self.kind == "gz":
            # Decompressed ahead on a thread (zlib releases the GIL), so a worker that
            # becomes idle finds its next task ready.
            return _read_ahead(self._shipped_tasks(task_bytes or GZIP_TASK_BYTES), workers)
        share = self.size // (workers * TASKS_PER_WORKER)
        size = task_bytes or min(MAX_TASK_BYTES, max(MIN_TASK_BYTES, share))
        if self.size < 2 * size:
            return None
        return iter([Task(i, start, end) for i, (start, end) in enumerate(self._ranges(size))])

    def _ranges(self, size: int) -> list[tuple[int, int]]:
        """Byte ranges of about ``size`` bytes, each ending just after a newline."""
        cuts = [0]
        with open(self.path, "rb") as handle:
            position = size
            while position < self.size:
                handle.seek(position)
                while True:
                    data = handle.read(1 << 16)
                    end = data.find(b"\n")
                    if end >= 0 or not data:
                        position = position + end + 1 if end >= 0 else self.size
                        break
                    position += len(data)
                if position >= self.size:
                    break
                cuts.append(position)
                position += size
        cuts.append(self.size)
        return list(itertools.pairwise(cuts))

    def _shipped_tasks(self, size: int) -> Generator[Task, None, None]:
        self._raw = pa.OSFile(str(self.path), "rb")
        try:
            lines = Lines(pa.CompressedInputStream(self._raw, "gzip"), READ_BYTES)
            if lines.header() is None:
                return
            pieces: list[tuple[int, bytes]] = []
            taken = index = 0
            for piece in lines:
                pieces.append(piece)
                taken += len(piece[1])
                if taken >= size:
                    yield Task(index, pieces=pieces)
                    pieces, taken, index = [], 0, index + 1
            if pieces:
                yield Task(index, pieces=pieces)
        finally:
            self._raw.close()
            self.finished = True

    def describe(self, task: Task) -> str:
        """Which part of the file ``task`` is, in words (for an error that names it)."""
        if task.pieces is not None:
            return f"part {task.index + 1} of {self.path} (decompressed lines)"
        if self.kind == "parquet":
            return f"row groups {task.start}-{task.end - 1} of {self.path}"
        return f"bytes {task.start:,}-{task.end:,} of {self.path}"

    def task_blocks(self, task: Task) -> Blocks:
        """The blocks of one task, rows numbered from 1 within it; returns its line count."""
        if task.pieces is not None:
            return (yield from line_blocks(task.pieces, self.header, str(self.path)))
        if self.kind == "parquet":
            return (yield from self.parquet_blocks(range(task.start, task.end)))
        with open(self.path, "rb") as handle:
            handle.seek(task.start)
            lines = Lines(_Range(handle, task.end - task.start), READ_BYTES)
            if task.start == 0 and lines.header() is None:
                return 0
            return (yield from line_blocks(lines, self.header, str(self.path)))

    def _read_header(self, gzip: bool) -> list[str]:
        import gzip as gz

        opener = gz.open if gzip else open
        try:
            with opener(self.path, "rb") as handle:
                raw = handle.readline(MAX_ROW_BYTES)
            # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first name.
            line = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ContractError(f"{self.path}: the header: not UTF-8 text") from None
        except (OSError, EOFError) as exc:
            raise ContractError(f"{self.path}: cannot read: {exc}") from None
        if not line.strip():
            raise ContractError(f"{self.path}: the file is empty (expected a header row)")
        try:
            header = next(csv.reader([line]))
        except csv.Error as exc:  # a bare carriage return in the header, say
            raise ContractError(f"{self.path}: the header is not a CSV row ({exc})") from None
        if len(set(header)) != len(header):
            raise ContractError(f"{self.path}: the header names a column twice")
        return header


def _read_ahead(items: Generator[Task, None, None], depth: int) -> Iterator[Task]:
    """``items``, produced on a thread up to ``depth`` ahead of the consumer.

    An exception in ``items`` is raised again in the consumer; a consumer that stops
    early stops the thread (and closes ``items``).
    """
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item: object) -> bool:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ready.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        with contextlib.closing(items):
            try:
                for item in items:
                    if not offer(item):
                        return
                offer(done)
            except BaseException as exc:
                offer(exc)

    thread = threading.Thread(target=produce, name="stepdown-ml read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class Task:
    """One worker's share of a file: a byte range, a run of row groups, or shipped lines."""

    index: int
    start: int = 0
    end: int = 0
    pieces: list[tuple[int, bytes]] | None = field(default=None, repr=False)


class _Range:
    """``length`` bytes of an open file from its current position, as a readable stream."""

    def __init__(self, handle: Any, length: int) -> None:
        self.handle = handle
        self.left = length

    def read(self, size: int) -> bytes:
        data = self.handle.read(min(size, self.left))
        self.left -= len(data)
        return data


def csv_blocks(stream: Any, header: list[str], source: str, block_bytes: int | None = None) -> Blocks:
    """Parse CSV text (header line included) block by block, one record per line.

    Every physical line after the header is one row, numbered from 1 (blank lines are
    numbered but hold no record). Yields ``(record batch of text, row numbers, malformed
    rows)`` per block of about ``block_bytes`` (default :data:`BLOCK_BYTES`): each
    non-blank line is in exactly one of the two. A malformed row (a quote that does not
    close on its line, a wrong field count, a row over :data:`MAX_ROW_BYTES`) becomes
    ``(row number, candidate_id, reason)`` and reading goes on after it, so a stray quote
    can never swallow the rows that follow. Used by the CLI on files and by the Spark
    engine on the lines of a partition.

    Returns:
        The number of lines read after the header (the generator's return value).

    Raises:
        ContractError: the text is not UTF-8 (naming the row), or the parser and the line
            count disagree (no row is ever dropped silently); naming ``source``.
    """
    block_bytes = block_bytes or BLOCK_BYTES
    lines = Lines(stream, min(READ_BYTES, block_bytes))
    if lines.header() is None:
        return 0  # the header alone, without a final newline: no rows
    return (yield from line_blocks(lines, header, source, block_bytes))


def line_blocks(
    pieces: Iterable[tuple[int, bytes]], header: list[str], source: str, block_bytes: int | None = None
) -> Blocks:
    """:func:`csv_blocks` of text without its header line, given as pieces of whole lines.

    ``pieces`` are ``(lines skipped as too long just before, whole lines)``, as
    :class:`Lines` cuts them; rows are numbered from 1. Returns the number of lines.
    """
    block_bytes = block_bytes or BLOCK_BYTES
    parser = _LineParser(header, source)
    pending: list[tuple[list[pa.RecordBatch], np.ndarray, list[Malformed]]] = []
    size = accounted = 0
    next_row = 1
    for too_long, piece in pieces:
        # Lines over the limit were skipped just before this piece.
        malformed = [(next_row + i, "", _too_long()) for i in range(too_long)]
        next_row += too_long
        batches, numbers, found, blank, count = parser.parse(next_row, piece)
        next_row += count
        malformed.extend(found)
        accounted += len(numbers) + len(malformed) + blank
        pending.append((batches, numbers, sorted(malformed)))
        size += len(piece)
        if size >= block_bytes:
            yield _joined(pending, parser.empty)
            pending, size = [], 0
    if pending:
        yield _joined(pending, parser.empty)
    if accounted != next_row - 1:  # the invariant: every line scored, rejected or blank
        raise ContractError(f"{source}: read {next_row - 1} rows but accounted for {accounted}")
    return next_row - 1


class Lines:
    """A byte stream cut into pieces of whole lines; lines over the size limit skipped."""

    def __init__(self, stream: Any, read_bytes: int) -> None:
        self.stream = stream
        self.read_bytes = read_bytes
        self.carry = b""

    def _read(self) -> bytes:
        return bytes(self.stream.read(self.read_bytes))

    def header(self) -> bytes | None:
        """Consume the header line; None when the text has no line after it."""
        data = self._read()
        if data.startswith(_BOM):
            data = data[len(_BOM) :]
        while True:
            end = data.find(b"\n")
            if end >= 0:
                self.carry = data[end + 1 :]
                return data[:end]
            more = self._read()
            if not more:
                return None
            data += more

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """``(lines skipped as too long just before, whole lines)`` per piece."""
        eof = False
        too_long = 0
        while not eof:
            more = self._read()
            eof = not more
            cut = more.rfind(b"\n") + 1
            if cut:  # the usual case: the lines up to this read's last newline, in one copy
                whole = not self.carry and cut == len(more)
                piece = more if whole else b"".join((self.carry, memoryview(more)[:cut]))
                self.carry = more[cut:]
                yield too_long, piece
                too_long = 0
                continue
            data = self.carry + more
            cut = data.rfind(b"\n") + 1  # the carry left by header() may hold whole lines
            while not cut and not eof and len(data) <= MAX_ROW_BYTES:
                more = self._read()  # a line longer than one read
                eof = not more
                data += more
                cut = data.rfind(b"\n") + 1
            if not cut and len(data) > MAX_ROW_BYTES:
                too_long += 1
                self._skip_line()
                continue
            if eof:
                cut = len(data)
            piece, self.carry = data[:cut], data[cut:]
            if piece or too_long:
                yield too_long, piece
                too_long = 0
        if too_long:  # the text ended with an over-long line (no newline after it)
            yield too_long, b""

    def _skip_line(self) -> None:
        """Drop the rest of an over-long line; what follows its newline is kept."""
        self.carry = b""
        while True:
            data = self._read()
            if not data:
                return
            end = data.find(b"\n")
            if end >= 0:
                self.carry = data[end + 1 :]
                return


_UNCLOSED = "not a valid CSV row: a quote that does not close on its line"
# What _LineParser._read makes of text: record batches, and (line index, field count) of the
# lines with the wrong field count.
_Read = tuple[list[pa.RecordBatch], list[tuple[int, int]]]


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _too_long() -> str:
    return f"row longer than {MAX_ROW_BYTES / 2**20:g} MB: not read"


class _PieceLines:
    """The lines of one piece: which are kept for the parser, and the rows rejected so far."""

    def __init__(
        self, piece: bytes, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray, keep: np.ndarray
    ):
        self.piece, self.starts, self.ends, self.rows, self.keep = piece, starts, ends, rows, keep
        self.malformed: list[Malformed] = []

    def text(self, line: int) -> bytes:
        return self.piece[self.starts[line] : self.ends[line]]

    def reject(self, line: int, reason: str, candidate_id: str) -> None:
        self.keep[line] = False
        self.malformed.append((int(self.rows[line]), candidate_id, reason))

    def kept_text(self) -> bytes:
        if self.keep.all():
            return self.piece
        kept = zip(self.starts[self.keep], self.ends[self.keep], strict=True)
        return b"\n".join(self.piece[a:b] for a, b in kept)


class _LineParser:
    """Whole lines of CSV to an Arrow batch of text, one record per line, every line accounted."""

    def __init__(self, header: list[str], source: str) -> None:
        self.header = header
        self.source = source
        self.id_index = header.index("candidate_id") if "candidate_id" in header else None
        self.empty = pa.record_batch([strings([]) for _ in header], names=header)
        # A record of empty fields; the first one quoted, so that even one column is a record.
        self.end_mark = b'""' + b"," * (len(header) - 1) + b"\n"
        # check_utf8=False: parse() hands the parser only lines it has found to be UTF-8
        # (a field of such a line is UTF-8 too: delimiters and quotes are ASCII bytes).
        self.convert = pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            check_utf8=False,
        )

    def parse(
        self, first_row: int, piece: bytes
    ) -> tuple[list[pa.RecordBatch], np.ndarray, list[Malformed], int, int]:
        """The records of ``piece``, their row numbers, its malformed rows, blank lines, all lines.

        Lines that cannot be one record on their own are taken out first and rejected: text
        that is not UTF-8, a bare carriage return, and a quote that does not close on its
        line. The fast test for the last is an odd number of quotes. Should the parser still
        see a different number of records than lines (an even number of quotes can open a
        field, as in ``a"b,"c``), each line with a quote whose quoted field runs on past its
        end is rejected (:meth:`_runs_on`), and the piece parsed again; then, should they
        still disagree, the lines pyarrow does not read as one record each are found by
        halving (:meth:`_not_one_record`). If they still disagree, the file fails: no row is
        ever lost. A line's fate depends on that line alone, never on its neighbours or on
        where a piece ends.
        """
        if not piece:
            return [], np.zeros(0, dtype=np.int64), [], 0, 0
        data = np.frombuffer(piece, dtype=np.uint8)
        ends = np.flatnonzero(data == _NEWLINE)
        if not piece.endswith(b"\n"):
            ends = np.append(ends, len(piece))
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        rows = np.arange(first_row, first_row + len(ends), dtype=np.int64)
        # A line is blank when it holds nothing but carriage returns (pyarrow reads none there).
        length = ends - starts
        blank = length == 0
        if b"\r" in piece:
            returns_per_line = np.bincount(
                np.searchsorted(ends, np.flatnonzero(data == _RETURN)), minlength=len(ends)
            )
            blank |= returns_per_line == length
        lines = _PieceLines(piece, starts, ends, rows, ~blank)
        for line in np.flatnonzero(length > MAX_ROW_BYTES).tolist():
            lines.reject(line, _too_long(), "")
        if not piece.isascii() and not _is_utf8(piece):
            for line in np.flatnonzero(lines.keep).tolist():
                try:
                    lines.text(line).decode("utf-8")
                except UnicodeDecodeError as exc:
                    why = f"not UTF-8 text (byte {exc.start + 1} of the row; re-save the file as UTF-8)"
                    lines.reject(line, why, self._id_of(lines.text(line)))
        if b"\x00" in piece:
            # NUL is no text, and it throws pyarrow's block splitter off the line ends.
            for line in np.unique(np.searchsorted(ends, np.flatnonzero(data == 0))).tolist():
                if lines.keep[line]:
                    lines.reject(line, "not text: the row holds a NUL byte", self._id_of(lines.text(line)))
        suspects = np.zeros(0, dtype=np.int64)
        if b"\r" in piece:
            returns = np.flatnonzero(data == _RETURN)
            followed = np.minimum(returns + 1, len(data) - 1)
            # A CR before the newline, or at the very end, ends its line; any other splits it.
            bare = returns[(data[followed] != _NEWLINE) & (returns + 1 < len(data))]
            suspects = np.searchsorted(ends, bare)
        quoted = data == _QUOTE_BYTE
        # Quotes per line, mod 256 (uint8 wraps): the parity is all the fast test needs.
        parity = np.add.reduceat(quoted.view(np.uint8), starts, dtype=np.uint8) & 1
        candidates = np.flatnonzero(parity)
        if len(suspects):  # in line order (a line found twice is checked once: see _check)
            candidates = np.sort(np.concatenate((suspects, candidates)))
        self._check(lines, candidates)
        result = self._records(lines)
        if result is None:  # a quoted field left open at a line's end: csv finds which, line by line
            for line in np.flatnonzero(np.add.reduceat(quoted, starts, dtype=np.int64)).tolist():
                if lines.keep[line] and self._runs_on(lines.text(line)):
                    self._reject_quote(lines, line)
            result = self._records(lines)
        if result is None:  # what is left: the lines pyarrow itself does not read as one record
            kept = np.flatnonzero(lines.keep)
            for index in self._not_one_record([lines.text(line) for line in kept.tolist()]):
                self._reject_quote(lines, int(kept[index]))
            result = self._records(lines)
        if result is None:
            raise RowsError(
                self.source, int(rows[0]), int(rows[-1]), "the CSV parser and the line count disagree"
            )
        batches, numbers = result
        return batches, numbers, lines.malformed, int(blank.sum()), len(ends)

    def _check(self, lines: _PieceLines, candidates: np.ndarray) -> None:
        """Reject each of ``candidates`` that Python's csv does not read as one record."""
        for line in candidates.tolist():
            if lines.keep[line]:
                problem = self._quote_problem(lines.text(line))
                if problem is not None:
                    lines.reject(line, problem, self._id_of(lines.text(line)))

    def _records(self, lines: _PieceLines) -> tuple[list[pa.RecordBatch], np.ndarray] | None:
        """The kept lines parsed, and their row numbers; None if records and lines disagree."""
        text = lines.kept_text()
        kept_rows = lines.rows[lines.keep]
        kept_lengths = (lines.ends - lines.starts)[lines.keep]
        read = self._read(text, int(kept_lengths.max()) if len(kept_lengths) else 0)
        if read is None or not self._one_record_per_line(read, len(kept_rows)):
            return None  # a quoted field ran on past its line (into the next, or the end mark)
        batches, bad = read
        good = np.ones(len(kept_rows), dtype=bool)
        wrong_count: list[Malformed] = []
        text_lines = text.split(b"\n") if bad else []
        for index, count in bad:
            if not 0 <= index < len(kept_rows):
                return None
            good[index] = False
            wrong = f"expected {len(self.header)} fields, got {count}"
            wrong_count.append((int(kept_rows[index]), self._id_of(text_lines[index]), wrong))
        numbers = kept_rows[good]
        lines.malformed.extend(wrong_count)
        return batches, numbers

    def _read(self, text: bytes, longest: int) -> _Read | None:
        """The lines as record batches, and ``(line index, field count)`` of lines that do not fit.

        The text is read with an end mark after it, a record of empty fields: pyarrow takes
        a quoted field left open by the last line to end with the text, and the mark makes
        that last line run on like any other (the caller then sees one record too few). The
        mark's record is not returned. None when the parser fails outright.
        """
        bad: list[tuple[int, int]] = []

        def on_invalid(row: Any) -> str:
            bad.append((row.number - 1, row.actual_columns))
            return "skip"

        if not text:
            return [], bad
        marked = text + (b"" if text.endswith(b"\n") else b"\n") + self.end_mark
        try:
            reader = pacsv.open_csv(
                pa.py_buffer(marked),
                read_options=pacsv.ReadOptions(
                    column_names=self.header, block_size=max(PARSE_BYTES, longest + 2), use_threads=False
                ),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
                convert_options=self.convert,
            )
            batches = [batch for batch in reader if batch.num_rows]
        except pa.ArrowInvalid:
            return None
        if not batches or (bad and bad[-1][0] >= text.count(b"\n") + (not text.endswith(b"\n"))):
            return None  # the mark did not come out as a record of its own
        batches[-1] = batches[-1].slice(0, batches[-1].num_rows - 1)
        return batches, bad

    @staticmethod
    def _one_record_per_line(read: _Read, lines: int) -> bool:
        """Whether :meth:`_read` made ``lines`` records, kept or of the wrong field count."""
        batches, bad = read
        return sum(batch.num_rows for batch in batches) + len(bad) == lines

    def _reject_quote(self, lines: _PieceLines, line: int) -> None:
        text = lines.text(line)
        lines.reject(line, self._quote_problem(text) or _UNCLOSED, self._id_of(text))

    @staticmethod
    def _runs_on(line: bytes) -> bool:
        """Whether a quoted field opened on ``line`` is still open at its end.

        Python's csv, read leniently, follows a quoted field into the next line as pyarrow
        does: then the line and the two after it are fewer than three records. (The tests
        compare this with pyarrow, line by line, on random hostile text.)
        """
        try:
            return sum(1 for _ in csv.reader([line.decode("utf-8", errors="replace"), "\n", "end"])) != 3
        except csv.Error:  # a NUL, say: no record of its own either
            return True

    def _not_one_record(self, texts: list[bytes]) -> list[int]:
        """Indices of the lines that pyarrow does not read as one record each, by halving."""
        found: list[int] = []
        todo = [(0, len(texts))]
        while todo:
            low, high = todo.pop()
            read = self._read(b"\n".join(texts[low:high]), max(map(len, texts[low:high]), default=0))
            if read is not None and self._one_record_per_line(read, high - low):
                continue
            if high - low == 1:
                found.append(low)
            else:
                middle = (low + high) // 2
                todo.extend([(middle, high), (low, middle)])
        return sorted(found)

    @staticmethod
    def _quote_problem(line: bytes) -> str | None:
        try:
            fields = list(csv.reader([line.decode("utf-8", errors="replace")], strict=True))
        except csv.Error as exc:
            return f"not a valid CSV row ({exc}): a quote that does not close on its line"
        if len(fields) != 1:
            return "not a valid CSV row: a quoted field spans lines"
        return None

    def _id_of(self, line: bytes) -> str:
        if self.id_index is None:
            return ""
        # As shown in the rejects file: undecodable bytes and NUL as U+FFFD.
        text = line.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        try:
            fields = next(csv.reader([text]), [])
        except csv.Error:
            fields = text.split(",")
        return fields[self.id_index] if self.id_index < len(fields) else ""


def _joined(
    pieces: list[tuple[list[pa.RecordBatch], np.ndarray, list[Malformed]]], empty: pa.RecordBatch
) -> tuple[pa.RecordBatch, np.ndarray, list[Malformed]]:
    """Consecutive pieces of a file as one block (one copy into compact buffers, in order)."""
    batches = [batch for parsed, _, _ in pieces for batch in parsed]
    if not batches:
        batch = empty
    elif len(batches) == 1:
        batch = batches[0]
    else:
        batch = pa.concat_batches(batches)
    return (
        batch,
        np.concatenate([numbers for _, numbers, _ in pieces]),
        [row for _, _, taken in pieces for row in taken],
    )


@dataclass
class Block:
    """A scored block: scores of its valid rows (input order), its rejects, their persons."""

    scores: pa.Table
    rows: np.ndarray
    rejects: pa.Table
    persons: pa.Array | None
    # Counts for the drift report (core.monitoring), when score_block was given a profile spec.
    profile: PartialProfile | None = None


def score_block(
    model: Model,
    frame: Frame,
    row_numbers: np.ndarray,
    malformed: Sequence[Malformed] = (),
    profile: ProfileSpec | None = None,
) -> Block:
    """Score one block of an input file: the unit of work of every batch engine.

    Args:
        model: the loaded model.
        frame: the block's well-formed rows, as read (an Arrow batch of text, or a
            pandas frame).
        row_numbers: 1-based file row number of each row of ``frame``.
        malformed: ``(row number, candidate_id, reason)`` of rows in this block that never
            became records (see :func:`csv_blocks`); they become row-level rejects.
        profile: the bins of the model's reference profile: the block is also counted on
            them (``Block.profile``), from the features scoring builds anyway.

    Returns:
        The scores without ``rank`` (ranking needs the whole file) and their row numbers,
        every problem (rejects layout, sorted by row), and the ``person_id`` of each
        scored row when the input has one.
    """
    checked = validate_frame(frame, CANDIDATE_COLUMNS, row_numbers=row_numbers)
    valid = checked.valid_columns()
    unknown: dict[str, np.ndarray] | None = None if profile is None else {}
    features = model.features.transform(valid, unknown)
    scores = model.score_features_arrow(features, arrow_text(valid["candidate_id"]))
    rejects = checked.rejects
    if malformed:
        problem_rows, ids, reasons = zip(*malformed, strict=True)
        extra = rejects_table(problem_rows, ids, [""] * len(problem_rows), reasons)
        rejects = sort_rejects(pa.concat_tables([rejects, extra]))
    persons = None
    if PERSON_ID.name in valid:
        persons = arrow_text(valid[PERSON_ID.name])
    rows = np.asarray(row_numbers, dtype=np.int64)[~checked.bad]
    partial = None
    if profile is not None:
        read = len(row_numbers) + len(malformed)
        avoidable = valid["necessity_avoidable"]
        partial = profile_block(profile, features, scores, unknown, avoidable, rejects, read)
    return Block(scores=scores, rows=rows, rejects=rejects, persons=persons, profile=partial)


# The first bytes of FORMULA_PREFIXES (each one ASCII character).
_FORMULA_BYTE = np.zeros(256, dtype=bool)
_FORMULA_BYTE[[ord(prefix) for prefix in FORMULA_PREFIXES]] = True


def _neutralize_column(values: pa.Array) -> pa.Array:
    if values.type == pa.string() and not values.null_count:
        # The usual case, no cell at risk, seen by the cells' first bytes.
        _, first, _ = cell_edges(*text_bytes(values))
        if not _FORMULA_BYTE[first].any():
            return values
    risky = pc.match_substring_regex(values, FORMULA_PATTERN)
    return pc.if_else(risky, pc.binary_join_element_wise(_QUOTE, values, EMPTY_TEXT), values)


class _Writer:
    """A CSV (plain or gzip), Parquet or Arrow IPC writer on a temporary path.

    ``header=False`` leaves out the CSV header line (the parts of a multi-process run,
    appended after the header their parent wrote). The caller renames the file into place.
    """

    def __init__(self, path: Path, schema: pa.Schema, fmt: str = "csv", header: bool = True) -> None:
        self.fmt = fmt
        self.header = header
        self.path = path
        self.schema = schema
        self._writer: Any = None
        self._stream: Any = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(self.path, self.schema)
            elif self.fmt == "ipc":
                self._writer = pa.ipc.new_file(str(self.path), self.schema)
            else:
                target: Any = self.path
                if self.fmt == "csv.gz":
                    target = self._stream = pa.CompressedOutputStream(str(self.path), "gzip")
                options = pacsv.WriteOptions(include_header=self.header)
                self._writer = pacsv.CSVWriter(target, self.schema, write_options=options)
        self._writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        if self._writer is None:
            self.write(pa.Table.from_batches([], schema=self.schema))
        self._writer.close()
        if self._stream is not None:
            self._stream.close()


def part_format(fmt: str) -> str:
    """How a worker writes its part of scores that end up in ``fmt``.

    CSV text (plain or one gzip member; gzip members concatenate into one valid stream) is
    appended byte for byte; Parquet is encoded once, by the parent, from Arrow IPC parts.
    """
    return "ipc" if fmt == "parquet" else fmt


class _PartAppender:
    """Scores parts appended in order to one output file (see :func:`part_format`)."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.writer: _Writer | None = None
        self.file: Any = None
        if fmt == "parquet":
            self.writer = _Writer(path, SCORES_SCHEMA, fmt)
        else:
            sink = pa.BufferOutputStream()
            pacsv.CSVWriter(sink, SCORES_SCHEMA).close()  # the header line alone
            header = sink.getvalue().to_pybytes()
            self.file = open(path, "wb")  # noqa: SIM115 - closed by close()
            self.file.write(gzip.compress(header, mtime=0) if fmt == "csv.gz" else header)
            self.file.flush()

    def append(self, part: Path) -> None:
        if self.writer is not None:
            with pa.memory_map(str(part)) as source:
                self.writer.write(pa.ipc.open_file(source).read_all())
            return
        with open(part, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            sent = 0
            while sent < size:  # in the kernel: no copy through Python
                sent += os.sendfile(self.file.fileno(), source.fileno(), sent, size - sent)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            self.file.close()


@dataclass
class _Tally:
    """What a run, or one worker's task, took in from its scored blocks.

    :meth:`take` writes a block's scores and rejects (neutralized) and counts it: the one
    place both engines do so; :meth:`add` folds in a worker's tally.
    """

    rows: int = 0
    scored: int = 0
    problems: int = 0
    rejected_rows: int = 0
    # person_id and p_advance of every score, when the input is ranked.
    person_ids: list[pa.Array] = field(default_factory=list)
    p_values: list[np.ndarray] = field(default_factory=list)
    # The drift report's counts (None when no report is asked for).
    profile: PartialProfile | None = None

    def take(self, rows: int, block: Block, scores: _Writer, rejects: _Writer, ranking: bool) -> None:
        """Write ``block`` (``rows`` lines of input) and count it."""
        scores.write(_scores_table(block.scores))
        if block.rejects.num_rows:
            rejects.write(_rejects_table(block.rejects))
            self.rejected_rows += rejected_rows(block.rejects)
        if ranking:
            assert block.persons is not None, "a ranked input's blocks carry person_id"
            self.person_ids.append(block.persons)
            self.p_values.append(to_numpy(block.scores.column("p_advance")))
        self._count(rows, block.scores.num_rows, block.rejects.num_rows, block.profile)

    def add(self, other: _Tally) -> None:
        """Fold in the tally of the next part of the input."""
        self.person_ids.extend(other.person_ids)
        self.p_values.extend(other.p_values)
        self.rejected_rows += other.rejected_rows
        self._count(other.rows, other.scored, other.problems, other.profile)

    def _count(self, rows: int, scored: int, problems: int, profile: PartialProfile | None) -> None:
        self.rows += rows
        self.scored += scored
        self.problems += problems
        if self.profile is not None and profile is not None:
            self.profile.merge(profile)


@dataclass
class Part:
    """What a worker made of one task: its line count, its tally and the files it wrote."""

    lines: int
    tally: _Tally
    scores: Path
    rejects: Path | None
    peak_rss_mb: float


class _Outputs:
    """Where a run's scores and rejects go, block by block or part by part, in input order.

    Scores to be ranked (``ranking``: the input's header has ``person_id``, whichever
    engine runs and whether or not any row comes) are written unranked first, beside the
    output; :meth:`finish` ranks them over the whole file and writes the output.
    """

    def __init__(
        self,
        scores_tmp: Path,
        rejects_tmp: Path,
        fmt: str,
        rejects_fmt: str,
        ranking: bool,
        spec: ProfileSpec | None = None,
    ) -> None:
        self.scores_tmp = scores_tmp
        self.fmt = fmt
        self.unranked = scores_tmp.with_name(scores_tmp.name + ".unranked")
        # Scores to be ranked are written once unranked, then copied with their rank.
        self.unranked_fmt = "parquet" if fmt == "parquet" else "csv"
        self.rejects = _Writer(rejects_tmp, REJECTS_SCHEMA, rejects_fmt)
        self.scores: _Writer | _PartAppender | None = None
        self.ranking = ranking
        self.tally = _Tally(profile=spec.new_partial() if spec is not None else None)
        self.lines = 0  # lines of the input in the parts appended so far

    def target(self) -> tuple[Path, str]:
        """The file (and format) the scores are written to before ranking, if any."""
        return (self.unranked, self.unranked_fmt) if self.ranking else (self.scores_tmp, self.fmt)

    def add_block(self, rows: int, block: Block) -> None:
        """One scored block of the in-process engine (``rows`` lines of input)."""
        if self.scores is None:
            path, fmt = self.target()
            self.scores = _Writer(path, SCORES_SCHEMA, fmt)
        assert isinstance(self.scores, _Writer)
        self.tally.take(rows, block, self.scores, self.rejects, self.ranking)

    def add_part(self, part: Part) -> None:
        """One worker's part (files already in their final layout; rows numbered from 1)."""
        if self.scores is None:
            self.scores = _PartAppender(*self.target())
        assert isinstance(self.scores, _PartAppender)
        self.scores.append(part.scores)
        part.scores.unlink()
        if part.rejects is not None:
            with pa.memory_map(str(part.rejects)) as source:
                rejects = pa.ipc.open_file(source).read_all()
            shifted = pc.add(rejects.column("row"), pa.scalar(self.lines, pa.int64()))
            self.rejects.write(rejects.set_column(0, "row", shifted))
            part.rejects.unlink()
        self.lines += part.lines
        self.tally.add(part.tally)

    def finish(self) -> None:
        """Close the files; rank the scores over the whole file when the input has persons."""
        if self.scores is None:  # no block came (a file of no rows): the same layout
            path, fmt = self.target()
            self.scores = _Writer(path, SCORES_SCHEMA, fmt)
        self.scores.close()
        self.rejects.close()
        if self.ranking:
            tally = self.tally
            if tally.person_ids:
                ranks = rank_within(pa.concat_arrays(tally.person_ids), np.concatenate(tally.p_values))
            else:  # nothing scored (a file of no rows, every row rejected)
                ranks = np.zeros(0, dtype=np.int64)
            _add_ranks(self.unranked, self.scores_tmp, ranks, self.unranked_fmt, self.fmt)


def rejected_rows(rejects: pa.Table) -> int:
    """How many rows a block's rejects name (one row can have several problems)."""
    return len(np.unique(to_numpy(rejects.column("row")))) if rejects.num_rows else 0


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


def score_file(
    input_path: Path | str,
    out_path: Path | str,
    rejects_path: Path | str | None = None,
    model: Model | None = None,
    chunk_rows: int = config.DEFAULT_CHUNK_ROWS,
    workers: int = 1,
    progress: bool | None = None,
    task_bytes: int | None = None,
    report: Path | str | None = None,
) -> ScoreSummary:
    """Score every row of ``input_path`` into ``out_path``; rejects beside it.

    Args:
        input_path: candidates as CSV, ``.csv.gz`` or ``.parquet``.
        out_path: scores (CSV, or Parquet when the name ends in ``.parquet``).
        rejects_path: rejects CSV (default: ``<out stem>.rejects.csv`` beside ``out_path``).
        model: a loaded model (default: the committed default model).
        chunk_rows: rows per Parquet block (CSV blocks are ~4 MB).
        workers: processes that score in parallel (1: this process alone). A file too
            small to cut into tasks, or a Parquet file of one row group, is scored in
            this process (on ``workers`` threads sharing one ONNX session).
        progress: show a progress line (default: when stderr is a terminal).
        task_bytes: the size of one worker's task (default: a quarter of each worker's
            share of the file, from 4 to 64 MB; 16 MB of decompressed text for gzip).
        report: a drift and data-quality report (``.json``, with a page beside it named
            ``.html``), counted in the same pass against the model's reference profile.

    Raises:
        ContractError: the file is unusable (missing, empty, not UTF-8, not CSV, a
            required column missing); nothing is written.
        WorkerError: a worker process was killed; nothing is written.
        ProfileError: a report is asked for, and the model has no reference profile.
    """
    started = time.perf_counter()
    source = Path(input_path)
    if not source.is_file():
        raise ContractError(f"{source}: no such file")
    out = Path(out_path)
    fmt = output_format(out)
    rejects_out = Path(rejects_path) if rejects_path else out.with_name(stem_of(out) + ".rejects.csv")
    rejects_fmt = output_format(rejects_out, allowed=("csv", "csv.gz"))
    report_paths = report_outputs(report)
    check_paths(
        {"input": source},
        {
            "--out": out,
            "--rejects": rejects_out,
            **dict(zip(("--report", "its page"), report_paths, strict=False)),
        },
    )
    model = model or Model(config.DEFAULT_MODEL_DIR)
    reference = load_reference(model.model_dir, model.manifest) if report_paths else None
    spec = reference.spec if reference is not None else None
    reader = InputFile(source, chunk_rows)
    ranking = PERSON_ID.name in reader.read_header()
    tasks = reader.tasks(workers, task_bytes) if workers > 1 else None
    show = sys.stderr.isatty() if progress is None else progress
    peak = None
    drift = None
    with (
        atomic_paths(out, rejects_out, *report_paths) as (scores_tmp, rejects_tmp, *report_tmps),
        contextlib.ExitStack() as cleanup,
    ):
        outputs = _Outputs(scores_tmp, rejects_tmp, fmt, rejects_fmt, ranking, spec)
        cleanup.callback(outputs.unranked.unlink, missing_ok=True)  # also when a run fails
        if tasks is None:
            bar = _Progress(reader.size, reader.position, show)
            _score_here(model, reader, outputs, workers, bar, spec)
        else:
            parts = temporary_name(out, "parts")  # its workers' part files
            parts.mkdir(mode=0o700)
            cleanup.callback(shutil.rmtree, parts, ignore_errors=True)
            peak = _score_in_processes(model, reader, tasks, outputs, workers, parts, show, spec)
        outputs.finish()
        if reference is not None and outputs.tally.profile is not None:
            drift = drift_report(reference, outputs.tally.profile, str(source))
            write_report(drift, *report_tmps)
    tally = outputs.tally
    return ScoreSummary(
        rows=tally.rows,
        scored=tally.scored,
        rejected_rows=tally.rejected_rows,
        problems=tally.problems,
        seconds=time.perf_counter() - started,
        processes=1 if tasks is None else workers,
        worker_peak_mb=peak,
        report=drift,
    )


def _score_here(
    model: Model,
    reader: InputFile,
    outputs: _Outputs,
    threads: int,
    bar: _Progress,
    spec: ProfileSpec | None = None,
) -> None:
    """The in-process engine: blocks scored on ``threads`` threads, written in input order."""

    def work(frame: Frame, numbers: np.ndarray, skipped: list[Malformed]) -> tuple:
        # One shared session: onnxruntime runs it from several threads, each call on its
        # caller's thread (one intra-op thread), without a second copy of the model.
        return len(numbers) + len(skipped), score_block(model, frame, numbers, skipped, spec)

    def drain(block: Future) -> None:
        outputs.add_block(*block.result())
        bar.update(outputs.tally.rows)

    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:
        try:
            for frame, numbers, skipped in reader.blocks():
                pending.append(pool.submit(work, frame, numbers, skipped))
                while len(pending) > threads:
                    drain(pending.popleft())
            while pending:
                drain(pending.popleft())
        finally:
            for block in pending:
                block.cancel()
    bar.update(outputs.tally.rows, force=True)
    bar.close()


@dataclass(frozen=True)
class _Job:
    """What every task of a multi-process run shares (inherited by the forked workers)."""

    model_dir: Path
    reader: InputFile
    parts: Path
    part_fmt: str
    ranking: bool
    # Rows and bytes (or rows, for Parquet) done so far, for the progress line.
    done: Any
    # The reference profile's bins, when a drift report is asked for.
    spec: ProfileSpec | None = None


def _score_in_processes(
    model: Model,
    reader: InputFile,
    tasks: Iterator[Task],
    outputs: _Outputs,
    workers: int,
    parts: Path,
    show: bool,
    spec: ProfileSpec | None = None,
) -> float:
    """The multi-process engine; returns the largest peak RSS of a worker, in MB."""
    import multiprocessing

    _, target_fmt = outputs.target()
    done = multiprocessing.get_context("fork").Array("q", 2)
    job = _Job(model.model_dir, reader, parts, part_format(target_fmt), outputs.ranking, done, spec)
    parquet = reader.kind == "parquet"
    total = reader._parquet().metadata.num_rows if parquet else reader.size
    # gzip: the parent decompresses, so its own position in the file is the progress.
    position = reader.position if reader.kind == "gz" else (lambda: done[1])
    bar = _Progress(total, position, show)
    peak = 0.0
    work = partial(_score_task, job)
    with OrderedPool(workers, lambda: Model(job.model_dir), work, reader.describe) as pool:
        try:
            for part in pool.run(tasks, on_wait=lambda: bar.update(done[0])):
                outputs.add_part(part)
                peak = max(peak, part.peak_rss_mb)
                bar.update(done[0])
        except RowsError as exc:  # raised in its turn: every part before its task is in
            raise exc.shifted(outputs.lines) from None
    bar.update(outputs.tally.rows, force=True)
    bar.close()
    return peak


def _add_progress(done: Any, rows: int, units: int) -> None:
    with done.get_lock():
        done[0] += rows
        done[1] += units


def _score_task(job: _Job, model: Model, task: Task) -> Part:
    """Score one task in a worker: its scores and rejects into part files, rows from 1."""
    import resource

    stem = job.parts / f"{task.index:06d}"
    scores = _Writer(stem.with_suffix(".scores"), SCORES_SCHEMA, job.part_fmt, header=False)
    rejects = _Writer(stem.with_suffix(".rejects"), REJECTS_SCHEMA, "ipc")  # opened on first write
    tally = _Tally(profile=job.spec.new_partial() if job.spec is not None else None)
    progressed = 0
    blocks = job.reader.task_blocks(task)
    while True:
        try:
            frame, numbers, malformed = next(blocks)
        except StopIteration as stop:
            lines = stop.value
            break
        count = len(numbers) + len(malformed)
        block = score_block(model, frame, numbers, malformed, job.spec)
        tally.take(count, block, scores, rejects, job.ranking)
        # Progress: rows, and bytes of the file (rows of a Parquet file); the parsed
        # text stands in for the bytes read until the task's end puts the count right.
        step = len(frame) if job.reader.kind == "parquet" else frame.nbytes
        progressed += step
        _add_progress(job.done, count, step)
    scores.close()
    if tally.problems:
        rejects.close()  # opened by its first write: a task without problems has no rejects part
    # gzip: shipped lines have no byte range (the parent's position is the progress there).
    size = lines if job.reader.kind == "parquet" else task.end - task.start
    _add_progress(job.done, 0, max(size - progressed, 0))
    return Part(
        lines=lines,
        tally=tally,
        scores=scores.path,
        rejects=rejects.path if tally.problems else None,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def _add_ranks(unranked: Path, out: Path, ranks: np.ndarray, unranked_fmt: str, fmt: str) -> None:
    """Second pass: copy the scores adding the ``rank`` column."""
    schema = SCORES_SCHEMA.append(pa.field(RANK_COLUMN, RANK_TYPE))
    writer = _Writer(out, schema, fmt)
    offset = 0
    if unranked_fmt == "parquet":
        import pyarrow.parquet as pq

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
