"""The data contract (CONTRACT.md) in code, and the one validator every step uses.

Each column is a :class:`Column` spec. A spec parses a whole column at once
(:meth:`Column.parse_series`, for training and batch scoring) or a single value
(:meth:`Column.parse_value`, for ``predict()`` on one record); both give the same
value and the same reason for the same input, which the test suite checks.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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


class ContractError(ValueError):
    """A file-level contract violation (missing column, unreadable file, empty file)."""


def _is_empty(value: Any) -> bool:
    if value is None or value is pd.NA:
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

    def parse_series(self, raw: pd.Series | pa.Array) -> tuple[pd.Series, np.ndarray]:
        """Parse a whole column. Returns the parsed values and a boolean mask of bad rows.

        Text goes through pyarrow compute kernels (the batch hot path), numeric columns
        through numpy. Parsed values of bad rows are meaningless; empty cells of a
        nullable column parse to NaN (numbers) or null (strings). Strings come back as
        Arrow-backed series, numbers as float64.
        """
        column = _Cells.of(raw)
        kind = self.kind
        if kind in ("id", "enum", "skills"):
            text = column.text
            if kind == "id":
                ok = _to_bool(pc.less_equal(pc.utf8_length(text), MAX_ID_LENGTH))
            else:
                ok = self._text_ok(text)
                if not (ok | column.empty).all():
                    # Surrounding blanks are forgiven: only then is trimming worth its cost.
                    text = column.trimmed
                    ok = self._text_ok(text)
            ok = ok & column.is_text
            empty = column.empty
            if kind == "enum":
                # Dictionary-encoded on the contract's own order: features read the codes.
                text = pa.DictionaryArray.from_arrays(
                    pc.index_in(text, value_set=self._allowed_array).cast(pa.int8()), self._allowed_array
                )
            values = pd.Series(pd.arrays.ArrowExtensionArray(text), index=column.index, copy=False)
        else:
            number, empty = column.numbers(), column.empty
            ok = ~np.isnan(number)
            if kind in ("int", "binary"):
                ok &= np.floor(number) == number
            low, high = (0.0, 1.0) if kind == "binary" else (self.low, self.high)
            with np.errstate(invalid="ignore"):
                if low is not None:
                    ok &= number >= low
                if high is not None:
                    ok &= number <= high
            values = pd.Series(np.where(ok, number, np.nan), index=column.index, copy=False)
        bad = ~ok & ~empty if self.nullable else ~ok | empty
        return values, bad

    @functools.cached_property
    def _allowed_array(self) -> pa.Array:
        return pa.array(self.allowed, pa.string())

    def _text_ok(self, text: pa.Array) -> np.ndarray:
        if self.kind == "enum":
            return _to_bool(pc.is_in(text, value_set=self._allowed_array))
        return _to_bool(pc.match_substring_regex(text, SKILLS_PATTERN))


def _to_bool(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


class _Cells:
    """One input column, seen as text (pyarrow) and, on demand, as numbers (numpy).

    A column read from a file is text; a column of a typed frame is numeric; an object
    column may mix both, and then each cell is taken as it is, as
    :meth:`Column.parse_value` takes it.
    """

    def __init__(
        self,
        index: pd.Index,
        text: pa.Array,
        is_text: np.ndarray,
        numbers: np.ndarray | None,
        empty: np.ndarray | None = None,
    ) -> None:
        self.index = index
        self.text = text
        self.is_text = is_text
        self._numbers = numbers
        if empty is None:
            # Null, "" or blanks only (utf8_is_space is false for "").
            blank = pc.or_(pc.equal(text, ""), pc.utf8_is_space(text))
            empty = ~_to_bool(pc.is_valid(text)) | _to_bool(blank)
        self.empty = empty

    @functools.cached_property
    def trimmed(self) -> pa.Array:
        return pc.utf8_trim_whitespace(self.text)

    @classmethod
    def of(cls, raw: pd.Series | pa.Array) -> _Cells:
        if isinstance(raw, (pa.Array, pa.ChunkedArray)):
            raw = pd.Series(pd.arrays.ArrowExtensionArray(raw))
        dtype = raw.dtype
        n = len(raw)
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            numbers = raw.to_numpy(dtype=np.float64, na_value=np.nan).copy()
            numbers[~np.isfinite(numbers)] = np.nan
            empty = raw.isna().to_numpy(dtype=bool)
            return cls(raw.index, pa.nulls(n, pa.string()), np.zeros(n, dtype=bool), numbers, empty)
        if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
            text = pa.array(raw, type=pa.string(), from_pandas=True)
            return cls(raw.index, text, _to_bool(pc.is_valid(text)), None)
        # Mixed object column: the rare, slow path, cell by cell.
        cells = raw.to_numpy(dtype=object)
        is_text = np.fromiter((isinstance(v, str) for v in cells), dtype=bool, count=n)
        text = pa.array([v if isinstance(v, str) else None for v in cells], type=pa.string())
        numbers = np.array([_python_number(v) for v in cells], dtype=np.float64)
        empty = np.fromiter((_is_empty(v) for v in cells), dtype=bool, count=n)
        return cls(raw.index, text, is_text, numbers, empty)

    def numbers(self) -> np.ndarray:
        """float64 values, NaN where the cell is not a finite plain number."""
        if self._numbers is None and self.is_text.all():
            fast = self._cast_all()
            if fast is not None:
                return fast
        parsed = self._numbers.copy() if self._numbers is not None else np.full(len(self.is_text), np.nan)
        if self.is_text.any():
            looks_numeric = _to_bool(pc.match_substring_regex(self.text, NUMBER_PATTERN))
            cleaned = pc.replace_substring_regex(self.trimmed, r"^\+", "")
            cleaned = pc.if_else(pa.array(looks_numeric), cleaned, "0")
            cast = pc.cast(cleaned, pa.float64()).to_numpy(zero_copy_only=False)
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
        filled = pc.if_else(pa.array(self.empty), "0", self.text)
        try:
            parsed = pc.cast(filled, pa.float64()).to_numpy(zero_copy_only=False).copy()
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
    if isinstance(raw, (int, float, np.integer, np.floating)):
        number = float(raw)
    elif isinstance(raw, str):
        if not NUMBER_RE.fullmatch(raw):
            return None
        number = float(raw.strip())
    else:
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


@dataclass
class Validation:
    """Outcome of validating a frame.

    Attributes:
        values: parsed columns (contract columns typed; other columns passed through),
            all rows in input order; rows flagged in ``bad`` hold meaningless values.
        bad: boolean mask, one per input row, True where the row has any problem.
        problems: one row per problem, CONTRACT.md rejects layout (``row`` is 1-based).
    """

    values: pd.DataFrame
    bad: np.ndarray
    problems: pd.DataFrame = field(default_factory=lambda: empty_rejects())

    @property
    def valid(self) -> pd.DataFrame:
        """The valid rows only, typed."""
        return self.values.loc[~self.bad] if self.bad.any() else self.values


def empty_rejects() -> pd.DataFrame:
    """An empty frame in the rejects layout."""
    return pd.DataFrame(
        {
            "row": pd.Series(dtype="int64"),
            "candidate_id": pd.Series(dtype=object),
            "column": pd.Series(dtype=object),
            "reason": pd.Series(dtype=object),
        }
    )


def level_reason(current: int, target: int) -> str:
    """Reason for a target level above the current one."""
    return f"target_level must be <= current_level ({current}), got '{target}'"


NECESSITY_AVOIDABLE_REASON = (
    "necessity_avoidable is required (0 or 1) when motive is necessity, got an empty value"
)


def validate_frame(
    frame: pd.DataFrame,
    columns: Sequence[Column] = CANDIDATE_COLUMNS,
    first_row: int = 1,
    source: str = "input",
    row_numbers: np.ndarray | None = None,
) -> Validation:
    """Validate every row of ``frame`` against ``columns``.

    Args:
        frame: the rows, as read (strings) or already typed.
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
    require_columns(frame.columns, columns, source)
    if PERSON_ID.name in frame.columns and PERSON_ID not in columns:
        columns = (*columns, PERSON_ID)
    n = len(frame)
    parsed: dict[str, Any] = {}
    problem_rows: list[np.ndarray] = []
    problem_columns: list[str] = []
    problem_reasons: list[np.ndarray] = []
    bad = np.zeros(n, dtype=bool)

    def add(idx: np.ndarray, column: str, reasons: np.ndarray) -> None:
        bad[idx] = True
        problem_rows.append(idx)
        problem_columns.extend([column] * len(idx))
        problem_reasons.append(reasons)

    column_bad: dict[str, np.ndarray] = {}
    for column in columns:
        raw = frame[column.name]
        values, col_bad = column.parse_series(raw)
        # Text stays Arrow-backed: no Python string objects on the hot path.
        parsed[column.name] = values
        column_bad[column.name] = col_bad
        if col_bad.any():
            idx = np.flatnonzero(col_bad)
            add(idx, column.name, np.array([column.reason(v) for v in raw.iloc[idx]], dtype=object))
    if "current_level" in parsed and "target_level" in parsed:
        current, target = parsed["current_level"].to_numpy(), parsed["target_level"].to_numpy()
        with np.errstate(invalid="ignore"):
            idx = np.flatnonzero(target > current)
        reasons = [level_reason(int(current[i]), int(target[i])) for i in idx]
        add(idx, "target_level", np.array(reasons, dtype=object))
    if "motive" in parsed and "necessity_avoidable" in parsed:
        # A nullable number parses to NaN exactly where it is empty or bad.
        empty = np.isnan(parsed["necessity_avoidable"].to_numpy()) & ~column_bad["necessity_avoidable"]
        necessity = _to_bool(pc.equal(pa.array(parsed["motive"]), "necessity"))
        idx = np.flatnonzero(necessity & empty)
        add(idx, "necessity_avoidable", np.full(len(idx), NECESSITY_AVOIDABLE_REASON, dtype=object))
    extra = {name: frame[name] for name in frame.columns if name not in parsed}
    values = pd.DataFrame({**parsed, **extra}, index=frame.index, copy=False)
    if problem_rows:
        rows = np.concatenate(problem_rows)
        ids = (
            frame["candidate_id"].to_numpy(dtype=object)[rows]
            if "candidate_id" in frame
            else np.full(len(rows), "", dtype=object)
        )
        problems = pd.DataFrame(
            {
                "row": (
                    np.asarray(row_numbers, dtype="int64")[rows]
                    if row_numbers is not None
                    else rows.astype("int64") + first_row
                ),
                "candidate_id": pd.Series(ids, dtype=object).map(_id_text).to_numpy(),
                "column": problem_columns,
                "reason": np.concatenate(problem_reasons),
            }
        )
        problems = problems.sort_values("row", kind="stable").reset_index(drop=True)
    else:
        problems = empty_rejects()
    return Validation(values=values, bad=bad, problems=problems)


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
            elif raw.__class__ is str and raw.isascii() and raw.isdigit() and low <= int(raw) <= high:
                values[name] = int(raw)
            elif raw is None and nullable:
                values[name] = None
            else:
                others.append(name)
        plain_number = NUMBER_RE.fullmatch
        for name, low, high in self.numbers:
            raw = get(name)
            kind = raw.__class__
            if kind is float or kind is int or (kind is str and plain_number(raw)):
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
