"""Parsing against the contract: one value (``predict()`` on a record) or a whole column
(training and batch scoring), with the same value and the same reason for the same input.

Text columns go through pyarrow compute kernels and numeric ones through numpy; the
test suite checks :func:`parse_value` and :func:`parse_series` against each other.

Rules both apply to any value a caller may pass (tests/code/test_predict_contract.py):

* Numbers are ``int``, ``float``, numpy integers and floats, ``Decimal`` and plain decimal
  text (``NUMBER_PATTERN``), finite; anything else (complex, bytes, containers, ...) is not.
* Booleans (``bool``, ``numpy.bool_``, a boolean column) are not numbers: an ``int`` or
  ``number`` column rejects them; a ``binary`` column takes ``True``/``False`` as 1/0.
* An integer of any size is a number: beyond float64's range it is out of range, and its
  reason shows its leading digits (however many digits ``str()`` may print).
* Text must be valid Unicode: a string with a lone surrogate is rejected in every column
  (Arrow, and every output, hold UTF-8), and reasons show such characters escaped.
"""

from __future__ import annotations

import decimal
import functools
import math
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepdown_ml.core.arrow import (
    EMPTY_TEXT,
    cell_edges,
    from_numpy,
    scalar,
    strings,
    text_bytes,
    to_bool,
    to_numpy,
)
from stepdown_ml.core.schema import (
    MAX_ID_LENGTH,
    NUMBER_PATTERN,
    NUMBER_RE,
    SKILL_SEPARATOR,
    SKILL_TOKEN,
    SKILLS_PATTERN,
    Column,
    is_empty,
)

if TYPE_CHECKING:
    import pandas as pd

# A parsed column: numbers as a float64 numpy array, text as an Arrow array.
ArrayLike: TypeAlias = np.ndarray | pa.Array
# What validate_frame reads: a pandas frame, or Arrow (a record batch or table).
Frame = Any


def is_pandas(value: Any, kind: str = "DataFrame") -> bool:
    """``isinstance(value, pandas.<kind>)`` without importing pandas.

    Batch scoring and ``predict()`` on one record never need pandas, and loading it
    costs a fifth of a second (see :mod:`stepdown_ml.core.arrow`). The check looks at the
    value's classes, so it also holds while another thread is importing pandas.
    """
    return any(c.__name__ == kind and c.__module__.partition(".")[0] == "pandas" for c in type(value).__mro__)


# Arguments of compute functions, made once (see stepdown_ml.core.arrow.scalar).
_ZERO = scalar("0")
_MAX_ID_LENGTH = scalar(MAX_ID_LENGTH)


def parse_value(column: Column, raw: Any) -> tuple[Any, str | None]:
    """Parse one value. Returns ``(value, None)`` or ``(None, reason)``."""
    if is_empty(raw):
        if column.nullable:
            return None, None
        return None, reason_for(column, raw)
    kind = column.kind
    if kind in ("id", "enum", "skills"):
        if not isinstance(raw, str):
            return None, reason_for(column, raw)
        # Ids are echoed exactly as given; enums and skills forgive surrounding blanks.
        text = raw if kind == "id" else raw.strip()
        if kind == "id":
            ok = len(text) <= MAX_ID_LENGTH and is_unicode(text)
        elif kind == "enum":
            ok = text in column.allowed
        else:
            ok = all(SKILL_TOKEN.fullmatch(t) for t in text.split(SKILL_SEPARATOR))
        return (text, None) if ok else (None, reason_for(column, raw))
    if kind != "binary" and isinstance(raw, (bool, np.bool_)):
        return None, reason_for(column, raw)  # booleans are 0/1 only in binary columns
    number = _to_number(raw)
    if number is None:
        return None, reason_for(column, raw)
    if kind in ("int", "binary") and number != math.floor(number):
        return None, reason_for(column, raw)
    low, high = (0.0, 1.0) if kind == "binary" else (column.low, column.high)
    if (low is not None and number < low) or (high is not None and number > high):
        return None, reason_for(column, raw)
    return (int(number) if kind in ("int", "binary") else number), None


def reason_for(column: Column, raw: Any) -> str:
    """``column.reason(raw)`` for any value, as text every output can hold.

    An int with more digits than ``str()`` prints (``sys.set_int_max_str_digits``) is
    shown by its leading digits, as ``Column.reason`` shows any long value; lone
    surrogates are escaped (``\\udc00``). Both paths word their reasons here.
    """
    try:
        text = column.reason(raw)
    except ValueError:
        if not isinstance(raw, int):
            raise
        text = column.reason(_leading_digits(raw))
    return printable(text)


def printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so that it encodes to UTF-8."""
    if text.isascii() or is_unicode(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_unicode(text: str) -> bool:
    """Does ``text`` encode to UTF-8 (no lone surrogates)?"""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_int(number: int) -> str:
    """``str(number)`` for an int of any size; the leading digits and "..." beyond the limit."""
    try:
        return str(number)
    except ValueError:
        return _leading_digits(number)


def _leading_digits(number: int) -> str:
    """What ``Column.reason`` shows of a long int (its first 37 characters and "..."),
    without ``str()`` of the whole number."""
    magnitude = abs(number)
    # Keep about 40 digits: bit_length * log10(2) estimates the digit count from below.
    drop = max(0, int(magnitude.bit_length() * 0.30102999566398120) - 41)
    text = ("-" if number < 0 else "") + str(magnitude // 10**drop)
    return text[:37] + "..."


def parse_series(column: Column, raw: pd.Series | pa.Array | pa.ChunkedArray) -> tuple[ArrayLike, np.ndarray]:
    """Parse a whole column. Returns the parsed values and a boolean mask of bad rows.

    Text goes through pyarrow compute kernels (the batch hot path), numeric columns
    through numpy. Parsed values of bad rows are meaningless; empty cells of a
    nullable column parse to NaN (numbers) or to null, "" or blanks (strings; parse_value
    gives None for all of them, and features read them alike). Text comes back as an
    Arrow array (enums dictionary-encoded on the contract's order), numbers as a
    float64 numpy array.
    """
    cells = _Cells.of(raw)
    kind = column.kind
    values: ArrayLike
    if kind in ("id", "enum", "skills"):
        text = cells.text
        codes: pa.Array | None = None
        if kind == "id":
            ok = to_bool(pc.less_equal(pc.utf8_length(text), _MAX_ID_LENGTH))
        else:
            ok, codes = _text_ok(column, text)
            if not ok.all() and not (ok | cells.empty).all():
                # Surrounding blanks are forgiven: only then is trimming worth its cost.
                text = cells.trimmed
                ok, codes = _text_ok(column, text)
        ok = ok & cells.is_text
        if kind == "enum" and codes is not None:
            # Dictionary-encoded on the contract's own order: features read the codes.
            text = pa.DictionaryArray.from_arrays(codes.cast(pa.int8()), _allowed_array(column.allowed))
        values = text
    else:
        number = cells.numbers(column.nullable)
        ok = ~np.isnan(number)
        if kind != "binary" and cells.booleans is not None:
            ok &= ~cells.booleans  # booleans are 0/1 only in binary columns
        if kind in ("int", "binary"):
            ok &= np.floor(number) == number
        low, high = (0.0, 1.0) if kind == "binary" else (column.low, column.high)
        with np.errstate(invalid="ignore"):
            if low is not None:
                ok &= number >= low
            if high is not None:
                ok &= number <= high
        values = np.where(ok, number, np.nan)
    if kind != "id" and ok.all():
        # Every cell parsed, so none is empty (an id may be blank, so it is checked).
        return values, np.zeros(len(ok), dtype=bool)
    empty = cells.empty
    bad = ~ok & ~empty if column.nullable else ~ok | empty
    return values, bad


@functools.cache
def _allowed_array(allowed: tuple[str, ...]) -> pa.Array:
    return strings(allowed)


def _text_ok(column: Column, text: pa.Array) -> tuple[np.ndarray, pa.Array | None]:
    """Which cells are well-formed, and for an enum the index of each in ``allowed``."""
    if column.kind == "enum":
        codes = pc.index_in(text, value_set=_allowed_array(column.allowed))
        return to_bool(codes.is_valid()), codes
    return _skill_lists_ok(text), None


# Bytes a well-formed skill list consists of: [a-z0-9_] and the ";" separator.
_SEMICOLON = ord(SKILL_SEPARATOR)
# A column's bytes are scanned this many at a time: the scan's few passes then run over
# buffers that stay in the core's cache (twice as fast as passes over a whole block's text).
_SCAN_BYTES = 1 << 17


def _plain_token_bytes(chars: np.ndarray) -> bool:
    """Are all of these bytes in ``[a-z0-9_;]``, with no two ``;`` side by side?"""
    size = len(chars)
    if not size:
        return True
    step = min(size, _SCAN_BYTES)
    shifted = np.empty(step + 1, dtype=np.uint8)
    allowed = np.empty(step + 1, dtype=np.bool_)
    found = np.empty(step + 1, dtype=np.bool_)
    for at in range(0, size, step):
        piece = chars[at : at + step + 1]  # one byte more: a pair of separators across the cut
        k = len(piece)
        ok, hit, tmp = allowed[:k], found[:k], shifted[:k]
        np.less(np.subtract(piece, np.uint8(ord("a")), out=tmp), 26, out=ok)
        ok |= np.less(np.subtract(piece, np.uint8(ord("0")), out=tmp), 10, out=hit)
        ok |= np.equal(piece, ord("_"), out=hit)
        ok |= np.equal(piece, _SEMICOLON, out=hit)
        if not ok.all() or np.logical_and(hit[1:], hit[:-1], out=ok[1:]).any():
            return False
    return True


def _skill_lists_ok(text: pa.Array) -> np.ndarray:
    """Per cell: does it match ``SKILLS_PATTERN``?

    A scan of the column's bytes decides when the whole column is plain token lists
    (only ``[a-z0-9_;]``, no ``;`` first, last or doubled); a cell then matches exactly
    when it is not empty. Otherwise the regular expression decides, cell by cell.
    """
    if len(text) and not text.null_count:
        offsets, chars = text_bytes(text)
        filled, first, last = cell_edges(offsets, chars)
        if _plain_token_bytes(chars) and not (first == _SEMICOLON).any() and not (last == _SEMICOLON).any():
            return filled
    return to_bool(pc.match_substring_regex(text, SKILLS_PATTERN))


class _Cells:
    """One input column, seen as text (pyarrow) and, on demand, as numbers (numpy).

    A column read from a file is text; a column of a typed frame is numeric; an object
    column may mix both, and then each cell is taken as it is, as
    :func:`parse_value` takes it. ``booleans`` marks the cells that are booleans (None:
    there are none), which only binary columns accept.
    """

    def __init__(
        self,
        text: pa.Array,
        is_text: np.ndarray,
        numbers: np.ndarray | None,
        empty: np.ndarray | None = None,
        booleans: np.ndarray | None = None,
    ) -> None:
        self.text = text
        self.is_text = is_text
        self._numbers = numbers
        self.booleans = booleans
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
        boolean = pd.api.types.is_bool_dtype(dtype)
        # Complex numbers are not numbers: such a column goes cell by cell (and is rejected).
        if boolean or (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)):
            numbers = raw.to_numpy(dtype=np.float64, na_value=np.nan).copy()
            numbers[~np.isfinite(numbers)] = np.nan
            empty = raw.isna().to_numpy(dtype=bool)
            booleans = ~empty if boolean else None
            return cls(pa.nulls(n, pa.string()), np.zeros(n, dtype=bool), numbers, empty, booleans)
        if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
            try:
                text = pa.array(raw, type=pa.string(), from_pandas=True)
            except UnicodeEncodeError:  # a lone surrogate: cell by cell below
                pass
            else:
                # pandas' "str" columns are Arrow data, in chunks once read from a larger
                # file or concatenated: they come back chunked.
                if isinstance(text, pa.ChunkedArray):
                    text = text.combine_chunks()
                return cls(text, to_bool(pc.is_valid(text)), None)
        # Object column: each cell taken as parse_value takes it (.values: no copy).
        object_dtype = pd.api.types.is_object_dtype(dtype)
        objects = np.asarray(raw.values) if object_dtype else raw.to_numpy(dtype=object)
        only_text = pd.api.types.infer_dtype(objects, skipna=False) == "string"  # the quick check
        classes = set() if only_text else set(map(type, objects))
        if classes <= _TEXT_CLASSES:
            # Text and None (records of strings): the text path, as for a file.
            try:
                text = pa.array(objects, type=pa.string())
            except UnicodeEncodeError:  # a lone surrogate: cell by cell below
                pass
            else:
                return cls(text, to_bool(pc.is_valid(text)), None)
        elif classes <= _NUMBER_CLASSES:
            # Python ints, floats and None (records of numbers): one conversion, as
            # float() makes it; None becomes NaN, and NaN is empty.
            try:
                numbers = objects.astype(np.float64)
            except OverflowError:  # an int beyond float64: cell by cell below
                pass
            else:
                empty = np.isnan(numbers)
                numbers[~np.isfinite(numbers)] = np.nan
                return cls(pa.nulls(n, pa.string()), np.zeros(n, dtype=bool), numbers, empty)
        # Text that is not valid Unicode is no text (parse_value rejects it too).
        texts = [v if isinstance(v, str) and (v.isascii() or is_unicode(v)) else None for v in objects]
        is_text = np.fromiter((v is not None for v in texts), dtype=bool, count=n)
        text = pa.array(texts, type=pa.string())
        numbers = np.array([_python_number(v) for v in objects], dtype=np.float64)
        empty = np.fromiter((is_empty(v) for v in objects), dtype=bool, count=n)
        booleans = np.fromiter((isinstance(v, (bool, np.bool_)) for v in objects), dtype=bool, count=n)
        return cls(text, is_text, numbers, empty, booleans if booleans.any() else None)

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
            booleans = ~empty if pa.types.is_boolean(kind) else None
            return cls(no_text, np.zeros(n, dtype=bool), numbers, empty, booleans)
        return None

    def numbers(self, nullable: bool = False) -> np.ndarray:
        """float64 values, NaN where the cell is not a finite plain number.

        ``nullable``: empty cells are expected (they are looked for before casting).
        """
        if self._numbers is None and self.is_text.all():
            fast = self._cast_all(nullable)
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

    def _cast_all(self, nullable: bool) -> np.ndarray | None:
        """The common case, a column of plain numbers: one cast, no regular expressions.

        Returns None when Arrow refuses any cell (the regex path then decides cell by
        cell). What Arrow's cast accepts beyond ``NUMBER_PATTERN`` (nan, inf) is not
        finite and is refused below, so both paths accept the same cells; the tests
        check it on random text.

        Empty cells are filled before the cast when the column is ``nullable`` and has
        some: a cast that fails costs Arrow an error message for every cell it refuses
        (a block of mostly empty cells took 25 times a cast that succeeds).
        """
        parsed = None
        if not (nullable and self.empty.any()):
            try:
                parsed = to_numpy(pc.cast(self.text, pa.float64())).copy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
            else:  # Arrow refuses "" and blanks, so a column that casts has no empty cell
                self._empty = np.zeros(len(parsed), dtype=bool)
        if parsed is None:
            filled = pc.if_else(from_numpy(self.empty), _ZERO, self.text)
            try:
                parsed = to_numpy(pc.cast(filled, pa.float64())).copy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        parsed[self.empty | ~np.isfinite(parsed)] = np.nan
        return parsed


# Object columns of only these classes take a vectorized path (bool is not int here).
_TEXT_CLASSES = frozenset({str, type(None)})
_NUMBER_CLASSES = frozenset({int, float, type(None)})


def _python_number(value: Any) -> float:
    number = _to_number(value) if not isinstance(value, str) else None
    return np.nan if number is None else number


def _to_number(raw: Any) -> float | None:
    if isinstance(raw, (bool, np.bool_)):
        return float(raw)  # binary columns only: parse_value and parse_series check the kind
    try:
        if isinstance(raw, (int, float, np.integer, np.floating, decimal.Decimal)):
            number = float(raw)
        elif isinstance(raw, str):
            if not NUMBER_RE.fullmatch(raw):
                return None
            number = float(raw.strip())
        else:
            return None
    except (OverflowError, ValueError):  # an int too large for a double; Decimal('sNaN')
        return None
    return number if math.isfinite(number) else None
