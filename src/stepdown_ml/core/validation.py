"""Validation: every row of a frame, or one record, checked against a layout.

Each problem becomes a row of the rejects layout (row number, candidate id, column,
reason). Training, batch scoring, Spark and ``predict()`` all validate here.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepdown_ml.core.arrow import from_numpy, scalar, strings, to_bool, to_numpy
from stepdown_ml.core.parsing import (
    Frame,
    is_pandas,
    is_unicode,
    parse_series,
    parse_value,
    printable,
    reason_for,
    shown_int,
)
from stepdown_ml.core.schema import (
    CANDIDATE_COLUMNS,
    MAX_ID_LENGTH,
    NUMBER_RE,
    PERSON_ID,
    REJECTS_SCHEMA,
    SKILLS_RE,
    Column,
    ContractError,
    is_empty,
    require_columns,
)

if TYPE_CHECKING:
    import pandas as pd

_NECESSITY = scalar("necessity")

NO_REJECTS = pa.Table.from_arrays(
    [from_numpy(np.zeros(0, dtype=np.int64)), strings([]), strings([]), strings([])], schema=REJECTS_SCHEMA
)


@dataclass
class Validation:
    """Outcome of validating a frame.

    Attributes:
        columns: parsed columns by name (contract columns typed: numbers as float64
            numpy arrays, text as Arrow arrays; other columns passed through), all rows
            in input order; rows flagged in ``bad`` hold meaningless values.
        bad: boolean mask, one per input row, True where the row has any problem.
        rejects: one row per problem, docs/CONTRACT.md rejects layout (``row`` is 1-based),
            sorted by row, as an Arrow table (:attr:`problems` is the same as a DataFrame).
        index: the input frame's index (a pandas input), for :attr:`values`.
    """

    columns: dict[str, Any]
    bad: np.ndarray
    rejects: pa.Table
    index: Any = None

    @functools.cached_property
    def problems(self) -> pd.DataFrame:
        """:attr:`rejects` as a DataFrame (``candidate_id``, ``column``, ``reason`` as str)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "row": self.rejects.column("row").to_numpy(),
                **{
                    name: pd.Series(self.rejects.column(name).to_pylist(), dtype=object)
                    for name in REJECTS_SCHEMA.names[1:]
                },
            }
        )

    @functools.cached_property
    def values(self) -> pd.DataFrame:
        """:attr:`columns` as a DataFrame (text Arrow-backed, no Python strings)."""
        import pandas as pd

        index = self.index if self.index is not None else pd.RangeIndex(len(self.bad))
        return pd.DataFrame(
            {name: _series(data, index) for name, data in self.columns.items()}, index=index, copy=False
        )

    @property
    def valid(self) -> pd.DataFrame:
        """The valid rows only, typed, as a DataFrame."""
        return self.values.loc[~self.bad] if self.bad.any() else self.values

    def valid_columns(self) -> dict[str, Any]:
        """:attr:`columns` of the valid rows only (the batch path: no DataFrame)."""
        if not self.bad.any():
            return self.columns
        keep = ~self.bad
        arrow_keep = from_numpy(keep)
        return {
            name: data.filter(arrow_keep) if isinstance(data, (pa.Array, pa.ChunkedArray)) else data[keep]
            for name, data in self.columns.items()
        }


def _series(data: Any, index: pd.Index) -> pd.Series:
    import pandas as pd

    if isinstance(data, pd.Series):
        return data
    if isinstance(data, (pa.Array, pa.ChunkedArray)):
        data = pd.arrays.ArrowExtensionArray(data)
    return pd.Series(data, index=index, copy=False)


def column_names(frame: Frame) -> list[str]:
    """The column names of a pandas or Arrow frame."""
    return list(frame.columns) if is_pandas(frame) else list(frame.schema.names)


def repeated_columns(names: Sequence[str], columns: Sequence[Column]) -> list[str]:
    """The names of ``columns`` (and ``person_id``) that ``names`` holds more than once.

    Such a column has no single value per row, so it is refused (``validate_frame``
    raises ContractError, ``predict()`` InvalidCandidateError); other columns, which
    nothing reads, may repeat.
    """
    if len(set(names)) == len(names):
        return []
    wanted = {c.name for c in columns} | {PERSON_ID.name}
    return sorted({name for name in names if name in wanted and names.count(name) > 1})


def column_of(frame: Frame, name: str) -> pd.Series | pa.Array:
    """One column of a pandas or Arrow frame (Arrow chunks combined)."""
    if is_pandas(frame):
        series = frame[name]  # a frame, for a name given twice
        arrow_type = getattr(getattr(series, "dtype", None), "pyarrow_dtype", None)
        if arrow_type is None or not pa.types.is_string_view(arrow_type):
            return series
        data = pa.array(series)  # pandas cannot take rows of string_view data: read it as Arrow
    else:
        data = frame.column(name)
    data = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    # take and filter have no string_view kernels: views are read as plain strings.
    return data.cast(pa.string()) if pa.types.is_string_view(data.type) else data


def _cells_at(data: pd.Series | pa.Array, rows: np.ndarray) -> list[Any]:
    if is_pandas(data, "Series"):
        return list(data.iloc[rows])
    return data.take(from_numpy(np.asarray(rows, dtype=np.int64))).to_pylist()


def rejects_table(rows: Any, candidate_ids: Any, columns: Any, reasons: Any) -> pa.Table:
    """Problems as an Arrow table in the rejects layout, stably sorted by row."""
    table = pa.Table.from_arrays(
        [
            from_numpy(np.asarray(rows, dtype=np.int64)),
            strings(candidate_ids),
            strings(columns),
            strings(reasons),
        ],
        schema=REJECTS_SCHEMA,
    )
    return sort_rejects(table)


def sort_rejects(table: pa.Table) -> pa.Table:
    """Rejects stably sorted by row (several problems of one row keep their order)."""
    order = np.argsort(to_numpy(table.column("row")), kind="stable")
    return table if np.all(order[1:] > order[:-1]) else table.take(from_numpy(order))


def level_reason(current: int, target: int) -> str:
    """Reason for a target level above the current one."""
    return f"target_level must be <= current_level ({current}), got '{target}'"


NECESSITY_AVOIDABLE_REASON = (
    "necessity_avoidable is required (0 or 1) when motive is necessity, got an empty value"
)


def validate_frame(
    frame: Frame,
    columns: Sequence[Column] = CANDIDATE_COLUMNS,
    first_row: int = 1,
    source: str = "input",
    row_numbers: np.ndarray | None = None,
) -> Validation:
    """Validate every row of ``frame`` against ``columns``.

    Args:
        frame: the rows, as read (strings) or already typed; a pandas frame, or an
            Arrow record batch or table (the batch scorer's path, no pandas).
        columns: the layout to check (candidate or transition columns).
        first_row: 1-based row number of the frame's first row in its file.
        source: name of the input, used in file-level errors.
        row_numbers: the 1-based row number of every row, when they are not consecutive
            (overrides ``first_row``).

    Returns:
        A :class:`Validation` with typed values, the bad-row mask and every problem.

    Raises:
        ContractError: when a required column is missing, or given more than once.
    """
    names = column_names(frame)
    require_columns(names, columns, source)
    repeated = repeated_columns(names, columns)
    if repeated:
        raise ContractError(f"{source}: column(s) given more than once: {', '.join(repeated)}")
    if PERSON_ID.name in names and PERSON_ID not in columns:
        columns = (*columns, PERSON_ID)
    n = len(frame)
    parsed: dict[str, Any] = {}
    problem_rows: list[np.ndarray] = []
    problem_columns: list[str] = []
    problem_reasons: list[np.ndarray] = []
    bad = np.zeros(n, dtype=bool)

    def add(idx: np.ndarray, column: str, reasons: np.ndarray) -> None:
        if not len(idx):
            return
        bad[idx] = True
        problem_rows.append(idx)
        problem_columns.extend([column] * len(idx))
        problem_reasons.append(reasons)

    column_bad: dict[str, np.ndarray] = {}
    for column in columns:
        raw = column_of(frame, column.name)
        values, col_bad = parse_series(column, raw)
        # Text stays Arrow-backed: no Python string objects on the hot path.
        parsed[column.name] = values
        column_bad[column.name] = col_bad
        if col_bad.any():
            idx = np.flatnonzero(col_bad)
            reasons = [reason_for(column, v) for v in _cells_at(raw, idx)]
            add(idx, column.name, np.array(reasons, dtype=object))
    if "current_level" in parsed and "target_level" in parsed:
        current, target = parsed["current_level"], parsed["target_level"]
        with np.errstate(invalid="ignore"):
            idx = np.flatnonzero(target > current)
        reasons = [level_reason(int(current[i]), int(target[i])) for i in idx]
        add(idx, "target_level", np.array(reasons, dtype=object))
    if "motive" in parsed and "necessity_avoidable" in parsed:
        # A nullable number parses to NaN exactly where it is empty or bad.
        empty = np.isnan(parsed["necessity_avoidable"]) & ~column_bad["necessity_avoidable"]
        necessity = to_bool(pc.equal(parsed["motive"], _NECESSITY))
        idx = np.flatnonzero(necessity & empty)
        add(idx, "necessity_avoidable", np.full(len(idx), NECESSITY_AVOIDABLE_REASON, dtype=object))
    extra = {name: column_of(frame, name) for name in names if name not in parsed}
    if problem_columns:
        rows = np.concatenate(problem_rows)
        has_ids = "candidate_id" in names
        ids = _cells_at(column_of(frame, "candidate_id"), rows) if has_ids else [""] * len(rows)
        rejects = rejects_table(
            np.asarray(row_numbers, dtype="int64")[rows] if row_numbers is not None else rows + first_row,
            [_id_text(i) for i in ids],
            problem_columns,
            np.concatenate(problem_reasons),
        )
    else:
        rejects = NO_REJECTS
    index = frame.index if is_pandas(frame) else None
    return Validation(columns={**parsed, **extra}, bad=bad, rejects=rejects, index=index)


def _id_text(value: Any) -> str:
    """A rejected row's candidate id as text (any value: a huge int, a lone surrogate)."""
    if is_empty(value):
        return ""
    return printable(shown_int(value) if isinstance(value, int) else str(value))


def validate_record(
    record: Mapping[str, Any], columns: Sequence[Column] = CANDIDATE_COLUMNS
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Validate one record (the ``predict()`` fast path).

    Returns:
        ``(values, problems)``: the parsed values and a list of ``(column, reason)`` in
        column order; the values are only meaningful when ``problems`` is empty.
    """
    with_person = PERSON_ID.name in record
    if columns is CANDIDATE_COLUMNS:
        check = _CANDIDATE_RECORDS[with_person]
    else:
        check = _RecordValidator((*columns, PERSON_ID) if with_person else tuple(columns))
    values, problems = check(record)
    current, target = values.get("current_level"), values.get("target_level")
    if current is not None and target is not None and target > current:
        problems.append(("target_level", level_reason(current, target)))
    if values.get("motive") == "necessity" and is_empty(record.get("necessity_avoidable")):
        problems.append(("necessity_avoidable", NECESSITY_AVOIDABLE_REASON))
    return values, problems


def validate_records(records: Sequence[Any]) -> dict[str, Sequence[Any]] | None:
    """Validate a batch of candidate records column by column (a service's batch).

    Returns:
        The values of every record by column name (``person_id`` included when any
        record has it), as :func:`validate_record` would parse them (numbers as given,
        ints or floats), when every value of every record is well-formed in the common
        way :func:`validate_record` accepts without a closer look; otherwise ``None``,
        and the caller validates record by record, which finds and words every problem.
        So this never refuses a record differently: it only decides sooner.
    """
    if set(map(type, records)) != {dict}:
        return None
    with_person = any(map(dict.__contains__, records, itertools.repeat(PERSON_ID.name)))
    return _CANDIDATE_RECORDS[with_person].columns_of(records)


_MISSING = object()


class _RecordValidator:
    """One layout's per-value checks, prepared once and grouped by kind.

    Each group accepts the common well-formed values with a shortcut that only ever
    accepts what :func:`~stepdown_ml.core.parsing.parse_value` accepts, with the same parsed value; every
    other value (and every missing column) goes to ``parse_value`` itself, which also
    words the reason. This is the ``predict()`` hot path: no call per value.
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = {c.name: c for c in columns}
        self.position = {c.name: i for i, c in enumerate(columns)}

        def bounds(c: Column) -> tuple[float, float]:
            if c.kind == "binary":
                return (0, 1)
            # The shortcuts compare against both bounds (finite ones also reject infinities).
            assert c.low is not None and c.high is not None, f"{c.name}: {c.kind} column without bounds"
            return (c.low, c.high)

        self.enums = tuple((c.name, frozenset(c.allowed)) for c in columns if c.kind == "enum")
        self.ints = tuple((c.name, *bounds(c), c.nullable) for c in columns if c.kind in ("int", "binary"))
        self.numbers = tuple((c.name, *bounds(c)) for c in columns if c.kind == "number")
        self.ids = tuple(c.name for c in columns if c.kind == "id")
        self.skills = tuple((c.name, c.nullable) for c in columns if c.kind == "skills")

    def __call__(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        values: dict[str, Any] = {}
        others: list[str] = []
        get = record.get
        raw: Any  # any value a caller put in the record (None when missing); checked by class below
        for name, allowed in self.enums:
            raw = get(name)
            if raw.__class__ is str and raw in allowed:
                values[name] = raw
            else:
                others.append(name)
        for name, low, high, nullable in self.ints:
            raw = get(name)
            if raw.__class__ is int and low <= raw <= high:
                values[name] = raw
            elif (
                raw.__class__ is str
                and len(raw) < 20
                and raw.isascii()
                and raw.isdigit()
                and low <= int(raw) <= high
            ):
                values[name] = int(raw)
            elif raw is None and nullable:
                values[name] = None
            else:
                others.append(name)
        plain_number = NUMBER_RE.fullmatch
        for name, low, high in self.numbers:
            raw = get(name)
            kind = raw.__class__
            if kind is float or (kind is int and low <= raw <= high) or (kind is str and plain_number(raw)):
                value = float(raw)
                if low <= value <= high:  # False for NaN and for out-of-range infinities
                    values[name] = value
                    continue
            others.append(name)
        for name in self.ids:
            raw = get(name)
            if (
                raw.__class__ is str
                and 0 < len(raw) <= MAX_ID_LENGTH
                and raw.strip()
                and (raw.isascii() or is_unicode(raw))
            ):
                values[name] = raw
            else:
                others.append(name)
        skill_list = SKILLS_RE.fullmatch
        for name, nullable in self.skills:
            raw = get(name)
            if raw.__class__ is str and skill_list(raw):
                values[name] = raw
            elif raw is None and nullable:
                values[name] = None
            else:
                others.append(name)
        problems: list[tuple[str, str]] = []
        if others:
            for name in sorted(others, key=self.position.__getitem__):
                spec = self.columns[name]
                raw = get(name, _MISSING)
                if raw is _MISSING:
                    if not spec.nullable:
                        problems.append((name, f"{name} is missing"))
                        continue
                    raw = None
                value, reason = parse_value(spec, raw)
                if reason is not None:
                    problems.append((name, reason))
                values[name] = value
        return values, problems

    def columns_of(self, records: Sequence[dict[str, Any]]) -> dict[str, Sequence[Any]] | None:
        """:func:`validate_records` for this layout: whole columns through __call__'s shortcuts.

        Each check accepts a column only when __call__'s shortcut would accept each of its
        values, with the same value; anything else is ``None``.
        """
        names = tuple(self.columns)
        try:
            rows = list(map(operator.itemgetter(*names), records))
        except KeyError:  # a column left out: None, as __call__ reads it
            rows = [tuple(map(record.get, names)) for record in records]
        values: dict[str, Sequence[Any]] = dict(zip(names, zip(*rows, strict=True), strict=True))
        for name, allowed in self.enums:
            if set(map(type, values[name])) != {str} or not allowed.issuperset(values[name]):
                return None
        for name, low, high, nullable in self.ints:
            present = _present(values[name], int, nullable)
            if present is None or (present and not low <= min(present) <= max(present) <= high):
                return None
        for name, low, high in self.numbers:
            column = values[name]
            kinds = set(map(type, column))
            if kinds == {int}:  # exact bounds on the ints, as __call__ compares them
                if not low <= min(column) <= max(column) <= high:
                    return None
            elif not (
                kinds <= {int, float}
                and low <= min(column)
                and max(column) <= high
                and sum(column) == sum(column)  # no NaN (which min and max may miss)
            ):
                return None
        for name in self.ids:
            column = values[name]
            if (
                set(map(type, column)) != {str}
                or max(map(len, column)) > MAX_ID_LENGTH
                or not all(map(str.strip, column))  # not blank, so not empty either
                or not all(map(str.isascii, column))  # other text: is_unicode, record by record
            ):
                return None
        for name, nullable in self.skills:
            present = _present(values[name], str, nullable)
            if present is None or (present and not _skill_lists(present)):
                return None
        if "target_level" in values and not all(
            map(operator.le, values["target_level"], values["current_level"])
        ):
            return None
        if (
            "motive" in values
            and None in values["necessity_avoidable"]
            and any(
                motive == "necessity" and avoidable is None
                for motive, avoidable in zip(values["motive"], values["necessity_avoidable"], strict=True)
            )
        ):
            return None
        return values


# The bytes a skill list consists of (SKILLS_RE: lowercase tokens and ";" between them).
_SKILL_LIST_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_;"


def _skill_lists(column: Sequence[str]) -> bool:
    """Whether every text of ``column`` matches SKILLS_RE, by a few scans of them all.

    Joined by ";", the texts all match exactly when the joined text does: a text fails
    only by being empty, holding another character, or by a ";" that starts, ends or
    doubles a token, and each shows in the joined text. Several times cheaper than the
    expression text by text.
    """
    data = ";".join(column).encode("utf-8", "surrogatepass")  # other text: bytes >= 0x80
    return (
        not data.translate(None, _SKILL_LIST_BYTES)
        and data[:1] not in (b"", b";")
        and data[-1:] != b";"
        and b";;" not in data
    )


def _present(column: Sequence[Any], kind: type, nullable: bool) -> Sequence[Any] | None:
    """The values of ``column`` that are not None, when all are exactly of class ``kind``
    (None allowed only when ``nullable``); otherwise ``None``."""
    kinds = set(map(type, column))
    if kinds == {kind}:
        return column
    if nullable and kinds <= {kind, type(None)}:
        return [value for value in column if value is not None]
    return None


_CANDIDATE_RECORDS = (_RecordValidator(CANDIDATE_COLUMNS), _RecordValidator((*CANDIDATE_COLUMNS, PERSON_ID)))
