"""The data contract (CONTRACT.md) in code, and the one validator every step uses.

Each column is a :class:`Column` spec. A spec parses a whole column at once
(:meth:`Column.parse_series`, for training and batch scoring) or a single value
(:meth:`Column.parse_value`, for ``predict()`` on one record); both give the same
value and the same reason for the same input, which the test suite checks.
"""

from __future__ import annotations

import decimal
import functools
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepdown_ml.arrow import EMPTY_TEXT, from_numpy, scalar, strings, to_bool, to_numpy

if TYPE_CHECKING:
    import pandas as pd

MOTIVES = ("necessity", "career_change", "broaden_horizons", "alternate_route")
FUNCTIONS = (
    "engineering",
    "data",
    "product",
    "design",
    "marketing",
    "sales",
    "finance",
    "hr",
    "operations",
    "legal",
    "customer_support",
    "research",
)
INDUSTRIES = (
    "software",
    "biotech",
    "finance",
    "healthcare",
    "retail",
    "manufacturing",
    "energy",
    "education",
    "public_sector",
    "media",
    "logistics",
    "consulting",
)
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
REGIONS = ("NA", "EU", "APAC", "LATAM", "MEA")
RECOMMENDATIONS = ("take_step_down", "target_lateral", "aim_higher", "reconsider")

SKILL_TOKEN = re.compile(r"[a-z0-9_]+")
SKILLS_PATTERN = r"^[a-z0-9_]+(;[a-z0-9_]+)*$"
SKILLS_RE = re.compile(r"[a-z0-9_]+(?:;[a-z0-9_]+)*")
# A plain decimal number; the same pattern decides for one value and for a column.
NUMBER_PATTERN = r"^[ \t\r\n]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\r\n]*$"
NUMBER_RE = re.compile(NUMBER_PATTERN)
SKILL_SEPARATOR = ";"
MAX_ID_LENGTH = 64

# A parsed column: numbers as a float64 numpy array, text as an Arrow array.
ArrayLike = np.ndarray | pa.Array
# What validate_frame reads: a pandas frame, or Arrow (a record batch or table).
Frame = Any


def is_pandas(value: Any, kind: str = "DataFrame") -> bool:
    """``isinstance(value, pandas.<kind>)`` without importing pandas.

    Batch scoring and ``predict()`` on one record never need pandas, and loading it
    costs a fifth of a second (see :mod:`stepdown_ml.arrow`). The check looks at the
    value's classes, so it also holds while another thread is importing pandas.
    """
    return any(c.__name__ == kind and c.__module__.partition(".")[0] == "pandas" for c in type(value).__mro__)


# Arguments of compute functions, made once (see stepdown_ml.arrow.scalar).
_ZERO, _NECESSITY = scalar("0"), scalar("necessity")
_MAX_ID_LENGTH = scalar(MAX_ID_LENGTH)


class ContractError(ValueError):
    """A file-level contract violation (missing column, unreadable file, empty file)."""


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    pandas = sys.modules.get("pandas")
    if pandas is not None and value is pandas.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Column:
    """One column of a layout: its name, kind, domain and meaning.

    Kinds: ``id`` (non-empty string up to 64 chars), ``enum`` (one of ``allowed``),
    ``int`` / ``number`` (within ``low``..``high``), ``binary`` (0/1) and ``skills``
    (``;``-separated lowercase tokens, may be empty).
    """

    name: str
    kind: str
    description: str
    allowed: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    nullable: bool = False

    def rule(self) -> str:
        """The rule as a phrase used in rejection reasons and docs."""
        if self.kind == "id":
            return f"a non-empty string of at most {MAX_ID_LENGTH} characters"
        if self.kind == "enum":
            return "one of " + ", ".join(self.allowed)
        if self.kind == "binary":
            return "0 or 1"
        if self.kind == "skills":
            return "';'-separated lowercase tokens [a-z0-9_]+"
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} {_fmt(self.low)}-{_fmt(self.high)}"

    def reason(self, raw: Any) -> str:
        """The rejection sentence for ``raw``."""
        if _is_empty(raw):
            return f"{self.name} is required ({self.rule()}), got an empty value"
        return f"{self.name} must be {self.rule()}, got '{_show(raw)}'"

    def parse_value(self, raw: Any) -> tuple[Any, str | None]:
        """Parse one value. Returns ``(value, None)`` or ``(None, reason)``."""
        if _is_empty(raw):
            if self.nullable:
                return None, None
            return None, self.reason(raw)
        kind = self.kind
        if kind in ("id", "enum", "skills"):
            if not isinstance(raw, str):
                return None, self.reason(raw)
            # Ids are echoed exactly as given; enums and skills forgive surrounding blanks.
            text = raw if kind == "id" else raw.strip()
            if kind == "id":
                ok = len(text) <= MAX_ID_LENGTH
            elif kind == "enum":
                ok = text in self.allowed
            else:
                ok = all(SKILL_TOKEN.fullmatch(t) for t in text.split(SKILL_SEPARATOR))
            return (text, None) if ok else (None, self.reason(raw))
        number = _to_number(raw)
        if number is None:
            return None, self.reason(raw)
        if kind in ("int", "binary") and number != math.floor(number):
            return None, self.reason(raw)
        low, high = (0.0, 1.0) if kind == "binary" else (self.low, self.high)
        if (low is not None and number < low) or (high is not None and number > high):
            return None, self.reason(raw)
        return (int(number) if kind in ("int", "binary") else number), None

    def parse_series(self, raw: pd.Series | pa.Array | pa.ChunkedArray) -> tuple[ArrayLike, np.ndarray]:
        """Parse a whole column. Returns the parsed values and a boolean mask of bad rows.

        Text goes through pyarrow compute kernels (the batch hot path), numeric columns
        through numpy. Parsed values of bad rows are meaningless; empty cells of a
        nullable column parse to NaN (numbers) or null (strings). Text comes back as an
        Arrow array (enums dictionary-encoded on the contract's order), numbers as a
        float64 numpy array.
        """
        column = _Cells.of(raw)
        kind = self.kind
        if kind in ("id", "enum", "skills"):
            text = column.text
            if kind == "id":
                ok = to_bool(pc.less_equal(pc.utf8_length(text), _MAX_ID_LENGTH))
            else:
                ok, codes = self._text_ok(text)
                if not ok.all() and not (ok | column.empty).all():
                    # Surrounding blanks are forgiven: only then is trimming worth its cost.
                    text = column.trimmed
                    ok, codes = self._text_ok(text)
            ok = ok & column.is_text
            if kind == "enum":
                # Dictionary-encoded on the contract's own order: features read the codes.
                text = pa.DictionaryArray.from_arrays(codes.cast(pa.int8()), self._allowed_array)
            values: ArrayLike = text
        else:
            number = column.numbers()
            ok = ~np.isnan(number)
            if kind in ("int", "binary"):
                ok &= np.floor(number) == number
            low, high = (0.0, 1.0) if kind == "binary" else (self.low, self.high)
            with np.errstate(invalid="ignore"):
                if low is not None:
                    ok &= number >= low
                if high is not None:
                    ok &= number <= high
            values = np.where(ok, number, np.nan)
        if kind != "id" and ok.all():
            # Every cell parsed, so none is empty (an id may be blank, so it is checked).
            return values, np.zeros(len(ok), dtype=bool)
        empty = column.empty
        bad = ~ok & ~empty if self.nullable else ~ok | empty
        return values, bad

    @functools.cached_property
    def _allowed_array(self) -> pa.Array:
        return strings(self.allowed)

    def _text_ok(self, text: pa.Array) -> tuple[np.ndarray, pa.Array | None]:
        """Which cells are well-formed, and for an enum the index of each in ``allowed``."""
        if self.kind == "enum":
            codes = pc.index_in(text, value_set=self._allowed_array)
            return to_bool(codes.is_valid()), codes
        return _skill_lists_ok(text), None


# Bytes a well-formed skill list consists of: [a-z0-9_] and the ";" separator.
_SEMICOLON = ord(SKILL_SEPARATOR)


def _skill_lists_ok(text: pa.Array) -> np.ndarray:
    """Per cell: does it match ``SKILLS_PATTERN``?

    A scan of the column's bytes decides when the whole column is plain token lists
    (only ``[a-z0-9_;]``, no ``;`` first, last or doubled); a cell then matches exactly
    when it is not empty. Otherwise the regular expression decides, cell by cell.
    """
    n = len(text)
    data = text.buffers()[2] if n and text.null_count == 0 else None
    if data is not None:
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + n + 1]
        start = int(offsets[0])
        chars = np.frombuffer(data, dtype=np.uint8)[start : int(offsets[-1])]
        allowed = np.less(chars - np.uint8(ord("a")), 26)
        allowed |= np.less(chars - np.uint8(ord("0")), 10)
        allowed |= chars == ord("_")
        separator = chars == _SEMICOLON
        allowed |= separator
        filled = offsets[1:] > offsets[:-1]
        if (
            allowed.all()
            and not (separator[1:] & separator[:-1]).any()
            and not separator[offsets[:-1][filled] - start].any()
            and not separator[offsets[1:][filled] - 1 - start].any()
        ):
            return filled
    return to_bool(pc.match_substring_regex(text, SKILLS_PATTERN))


class _Cells:
    """One input column, seen as text (pyarrow) and, on demand, as numbers (numpy).

    A column read from a file is text; a column of a typed frame is numeric; an object
    column may mix both, and then each cell is taken as it is, as
    :meth:`Column.parse_value` takes it.
    """

    def __init__(
        self,
        text: pa.Array,
        is_text: np.ndarray,
        numbers: np.ndarray | None,
        empty: np.ndarray | None = None,
    ) -> None:
        self.text = text
        self.is_text = is_text
        self._numbers = numbers
        # Computed when first asked (often they are not needed). Plain attributes, not
        # cached_property: on Python 3.11 that takes one lock shared by every instance,
        # which would serialize the scoring threads.
        self._empty = empty
        self._trimmed: pa.Array | None = None

    @property
    def empty(self) -> np.ndarray:
        """Null, "" or blanks only."""
        if self._empty is None:
            # utf8_is_space is false for "".
            empty = to_bool(pc.or_(pc.equal(self.text, EMPTY_TEXT), pc.utf8_is_space(self.text)))
            if self.text.null_count:
                empty |= ~self.is_text
            self._empty = empty
        return self._empty

    @property
    def trimmed(self) -> pa.Array:
        if self._trimmed is None:
            self._trimmed = pc.utf8_trim_whitespace(self.text)
        return self._trimmed

    @classmethod
    def of(cls, raw: pd.Series | pa.Array | pa.ChunkedArray) -> _Cells:
        if isinstance(raw, (pa.Array, pa.ChunkedArray)):
            cells = cls._of_arrow(raw)
            if cells is not None:
                return cells
        import pandas as pd  # only for pandas input, or an Arrow type without a fast path

        if isinstance(raw, (pa.Array, pa.ChunkedArray)):
            raw = pd.Series(pd.arrays.ArrowExtensionArray(raw))
        dtype = raw.dtype
        n = len(raw)
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            numbers = raw.to_numpy(dtype=np.float64, na_value=np.nan).copy()
            numbers[~np.isfinite(numbers)] = np.nan
            empty = raw.isna().to_numpy(dtype=bool)
            return cls(pa.nulls(n, pa.string()), np.zeros(n, dtype=bool), numbers, empty)
        if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
            text = pa.array(raw, type=pa.string(), from_pandas=True)
            return cls(text, to_bool(pc.is_valid(text)), None)
        # Mixed object column: the rare, slow path, cell by cell.
        cells = raw.to_numpy(dtype=object)
        is_text = np.fromiter((isinstance(v, str) for v in cells), dtype=bool, count=n)
        text = pa.array([v if isinstance(v, str) else None for v in cells], type=pa.string())
        numbers = np.array([_python_number(v) for v in cells], dtype=np.float64)
        empty = np.fromiter((_is_empty(v) for v in cells), dtype=bool, count=n)
        return cls(text, is_text, numbers, empty)

    @classmethod
    def _of_arrow(cls, raw: pa.Array | pa.ChunkedArray) -> _Cells | None:
        """An Arrow column of text or numbers, without pandas; None for other types."""
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        kind = raw.type
        if pa.types.is_dictionary(kind):
            raw = raw.dictionary_decode()
            kind = raw.type
        if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            raw, kind = raw.cast(pa.string()), pa.string()
        n = len(raw)
        if pa.types.is_string(kind):
            is_text = np.ones(n, dtype=bool) if raw.null_count == 0 else to_bool(pc.is_valid(raw))
            return cls(raw, is_text, None)
        no_text = pa.nulls(n, pa.string())
        if pa.types.is_null(kind):
            return cls(no_text, np.zeros(n, dtype=bool), np.full(n, np.nan), np.ones(n, dtype=bool))
        if any(test(kind) for test in (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)) or (
            pa.types.is_decimal(kind)
        ):
            # safe=False: an int64 beyond 2**53 rounds (and is then out of range) instead of
            # raising; a decimal becomes the nearest double, as float() makes it.
            numbers = to_numpy(pc.cast(raw, pa.float64(), safe=False)).copy()
            empty = np.isnan(numbers)  # null or NaN: what parse_value calls empty
            numbers[~np.isfinite(numbers)] = np.nan
            return cls(no_text, np.zeros(n, dtype=bool), numbers, empty)
        return None

    def numbers(self) -> np.ndarray:
        """float64 values, NaN where the cell is not a finite plain number."""
        if self._numbers is None and self.is_text.all():
            fast = self._cast_all()
            if fast is not None:
                return fast
        parsed = self._numbers.copy() if self._numbers is not None else np.full(len(self.is_text), np.nan)
        if self.is_text.any():
            looks_numeric = to_bool(pc.match_substring_regex(self.text, NUMBER_PATTERN))
            cleaned = pc.replace_substring_regex(self.trimmed, r"^\+", "")
            cleaned = pc.if_else(from_numpy(looks_numeric), cleaned, _ZERO)
            cast = to_numpy(pc.cast(cleaned, pa.float64()))
            parsed = np.where(self.is_text, np.where(looks_numeric, cast, np.nan), parsed)
        parsed[~np.isfinite(parsed)] = np.nan
        return parsed

    def _cast_all(self) -> np.ndarray | None:
        """The common case, a column of plain numbers: one cast, no regular expressions.

        Returns None when Arrow refuses any cell (the regex path then decides cell by
        cell). What Arrow's cast accepts beyond ``NUMBER_PATTERN`` (nan, inf) is not
        finite and is refused below, so both paths accept the same cells; the tests
        check it on random text.
        """
        try:
            # Arrow refuses "" and blanks, so a column that casts has no empty cell.
            parsed = to_numpy(pc.cast(self.text, pa.float64())).copy()
            self._empty = np.zeros(len(parsed), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            filled = pc.if_else(from_numpy(self.empty), _ZERO, self.text)
            try:
                parsed = to_numpy(pc.cast(filled, pa.float64())).copy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        parsed[self.empty | ~np.isfinite(parsed)] = np.nan
        return parsed


def _python_number(value: Any) -> float:
    number = _to_number(value) if not isinstance(value, str) else None
    return np.nan if number is None else number


def _fmt(bound: float | None) -> str:
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _to_number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return float(raw)
    try:
        if isinstance(raw, (int, float, np.integer, np.floating, decimal.Decimal)):
            number = float(raw)
        elif isinstance(raw, str):
            if not NUMBER_RE.fullmatch(raw):
                return None
            number = float(raw.strip())
        else:
            return None
    except OverflowError:  # an int too large for a double
        return None
    return number if math.isfinite(number) else None


CANDIDATE_COLUMNS: tuple[Column, ...] = (
    Column("candidate_id", "id", "opaque id, echoed in every output row"),
    Column("motive", "enum", "why the person considers the move", allowed=MOTIVES),
    Column(
        "necessity_avoidable",
        "binary",
        "was the necessity avoidable; required when motive is necessity",
        nullable=True,
    ),
    Column("current_level", "int", "career level now (1 entry, 6 manager, 10 executive)", low=1, high=10),
    Column("target_level", "int", "level of the role considered, <= current_level", low=1, high=10),
    Column("current_function", "enum", "profession now", allowed=FUNCTIONS),
    Column("target_function", "enum", "profession of the target role", allowed=FUNCTIONS),
    Column("current_industry", "enum", "industry now", allowed=INDUSTRIES),
    Column("target_industry", "enum", "industry of the target role", allowed=INDUSTRIES),
    Column("same_employer", "binary", "internal move (another department)"),
    Column("current_skills", "skills", "the person's skills", nullable=True),
    Column("target_skills", "skills", "skills the target role requires", nullable=True),
    Column("years_experience", "number", "years of work experience", low=0, high=50),
    Column("performance_rating", "int", "last review", low=1, high=5),
    Column("fit_score", "int", "assessed fit with the target role and team", low=1, high=5),
    Column("promotion_path", "binary", "the target role has a defined path upward"),
    Column("unemployment_rate", "number", "regional rate at decision time, percent", low=0, high=30),
    Column("months_unemployed", "number", "0 when employed", low=0, high=120),
    Column("age_band", "enum", "age band", allowed=AGE_BANDS),
    Column("region", "enum", "world region", allowed=REGIONS),
)
PERSON_ID = Column(
    "person_id",
    "id",
    "optional: groups several target roles of one person; scores are ranked within it",
)
OUTCOME_COLUMNS: tuple[Column, ...] = (
    Column("transition_year", "int", "year of the move", low=1950, high=2100),
    Column(
        "advanced_within_36m",
        "binary",
        "the label: reached a level >= current_level within 36 months of the move",
    ),
    Column(
        "months_to_regain",
        "number",
        "months until that happened; empty when it did not within the record's horizon",
        low=0,
        high=600,
        nullable=True,
    ),
)
TRANSITION_COLUMNS: tuple[Column, ...] = CANDIDATE_COLUMNS + OUTCOME_COLUMNS
TRUE_PROBABILITY = "true_probability"
LABEL = "advanced_within_36m"

RAW_IDENTIFYING_COLUMNS = (
    "employee_id",
    "full_name",
    "email",
    "birth_date",
    "city",
    "current_employer",
    "target_employer",
    "current_title",
    "target_title",
    "transition_date",
    "current_salary",
    "target_salary",
)
RAW_REPLACED_COLUMNS = ("candidate_id", "age_band", "region", "transition_year", "same_employer")
SCORES_COLUMNS = ("candidate_id", "p_advance", "recommendation", "reasons", "model_version")
RANK_COLUMN = "rank"
REJECTS_COLUMNS = ("row", "candidate_id", "column", "reason")

_CANDIDATE_BY_NAME = {c.name: c for c in CANDIDATE_COLUMNS}


def names(columns: Iterable[Column]) -> list[str]:
    """The names of ``columns``, in order."""
    return [c.name for c in columns]


def missing_columns(header: Iterable[str], columns: Sequence[Column]) -> list[str]:
    """Required columns absent from ``header``."""
    present = set(header)
    return [c.name for c in columns if c.name not in present]


def require_columns(header: Iterable[str], columns: Sequence[Column], source: str) -> None:
    """Raise :class:`ContractError` naming ``source`` if ``header`` lacks required columns."""
    missing = missing_columns(header, columns)
    if missing:
        raise ContractError(f"{source}: missing required column(s): {', '.join(missing)}")


REJECTS_SCHEMA = pa.schema(
    [("row", pa.int64()), ("candidate_id", pa.string()), ("column", pa.string()), ("reason", pa.string())]
)
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
        rejects: one row per problem, CONTRACT.md rejects layout (``row`` is 1-based),
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


def column_of(frame: Frame, name: str) -> pd.Series | pa.Array:
    """One column of a pandas or Arrow frame (Arrow chunks combined)."""
    if is_pandas(frame):
        return frame[name]
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
        ContractError: when a required column is missing.
    """
    names = column_names(frame)
    require_columns(names, columns, source)
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
        values, col_bad = column.parse_series(raw)
        # Text stays Arrow-backed: no Python string objects on the hot path.
        parsed[column.name] = values
        column_bad[column.name] = col_bad
        if col_bad.any():
            idx = np.flatnonzero(col_bad)
            add(idx, column.name, np.array([column.reason(v) for v in _cells_at(raw, idx)], dtype=object))
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
    return "" if _is_empty(value) else str(value)


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
    if values.get("motive") == "necessity" and _is_empty(record.get("necessity_avoidable")):
        problems.append(("necessity_avoidable", NECESSITY_AVOIDABLE_REASON))
    return values, problems


_MISSING = object()


class _RecordValidator:
    """One layout's per-value checks, prepared once and grouped by kind.

    Each group accepts the common well-formed values with a shortcut that only ever
    accepts what :meth:`Column.parse_value` accepts, with the same parsed value; every
    other value (and every missing column) goes to ``parse_value`` itself, which also
    words the reason. This is the ``predict()`` hot path: no call per value.
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = {c.name: c for c in columns}
        self.position = {c.name: i for i, c in enumerate(columns)}

        def bounds(c: Column) -> tuple[float, float]:
            return (0, 1) if c.kind == "binary" else (c.low, c.high)

        self.enums = tuple((c.name, frozenset(c.allowed)) for c in columns if c.kind == "enum")
        self.ints = tuple((c.name, *bounds(c), c.nullable) for c in columns if c.kind in ("int", "binary"))
        self.numbers = tuple((c.name, *bounds(c)) for c in columns if c.kind == "number")
        self.ids = tuple(c.name for c in columns if c.kind == "id")
        self.skills = tuple((c.name, c.nullable) for c in columns if c.kind == "skills")

    def __call__(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        values: dict[str, Any] = {}
        others: list[str] = []
        get = record.get
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
            if raw.__class__ is str and 0 < len(raw) <= MAX_ID_LENGTH and raw.strip():
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
                value, reason = spec.parse_value(raw)
                if reason is not None:
                    problems.append((name, reason))
                values[name] = value
        return values, problems


_CANDIDATE_RECORDS = (_RecordValidator(CANDIDATE_COLUMNS), _RecordValidator((*CANDIDATE_COLUMNS, PERSON_ID)))


def candidate_column(name: str) -> Column:
    """The candidate column spec called ``name``."""
    return _CANDIDATE_BY_NAME[name]
