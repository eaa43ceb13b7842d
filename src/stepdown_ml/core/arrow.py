"""Arrow arrays from numpy arrays and Python strings, built from their buffers.

``pyarrow.array`` imports pandas (to check whether its input is a pandas object) the
first time it is given anything but an Arrow array, and loading pandas costs a batch
scoring run about 0.2 s at start and 0.1 s at exit. Batch scoring and ``predict()``
never need pandas, so their hot paths build arrays here instead: the same arrays
``pyarrow.array`` would return for these inputs (checked by the tests).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa


def from_numpy(values: np.ndarray) -> pa.Array:
    """A one-dimensional numeric or boolean numpy array as an Arrow array (no nulls).

    The Arrow array shares the numpy array's memory (no copy): do not write to it after.
    """
    values = np.ascontiguousarray(values)
    if values.ndim != 1 or not values.dtype.isnative:
        raise ValueError(f"expected a one-dimensional native-order array, got {values.dtype} {values.shape}")
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def strings(values: Iterable[str | None]) -> pa.StringArray:
    """Python strings (``None`` for null) as an Arrow string array."""
    items = list(values)
    nulls = np.fromiter((item is None for item in items), dtype=np.bool_, count=len(items))
    return utf8_strings([b"" if item is None else item.encode("utf-8") for item in items], nulls)


def utf8_strings(encoded: list[bytes], nulls: np.ndarray | None = None) -> pa.StringArray:
    """UTF-8 bytes as an Arrow string array (``nulls``: which of them are null)."""
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
    validity = None
    null_count = 0
    if nulls is not None and nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
        null_count = int(nulls.sum())
    return pa.StringArray.from_buffers(
        len(encoded), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)), validity, null_count
    )


def scalar(value: str | int | float) -> pa.Scalar:
    """A Python string or number as an Arrow scalar (``pyarrow.scalar`` imports pandas too).

    Compute functions turn a plain Python argument into a scalar that way, so the hot
    paths pass these instead.
    """
    if isinstance(value, str):
        return strings([value])[0]
    return from_numpy(np.array([value]))[0]


EMPTY_TEXT = scalar("")
_FALSE = scalar(False)
_MINUS_ONE = scalar(-1)


def to_bool(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, nulls as False."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count:
        array = array.fill_null(_FALSE)
    if not len(array):
        return np.zeros(0, dtype=np.bool_)
    # Unpacked here: BooleanArray.to_numpy goes through pyarrow's pandas bridge.
    bits = np.unpackbits(np.frombuffer(array.buffers()[1], dtype=np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].view(np.bool_)


def to_codes(array: pa.Array) -> np.ndarray:
    """Integer codes (dictionary indices, ``index_in`` results) as numpy, nulls as -1."""
    if array.null_count:
        array = array.cast(pa.int64()).fill_null(_MINUS_ONE)
    return to_numpy(array)


_NUMPY_TYPES = {
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.uint8(): np.uint8,
    pa.uint32(): np.uint32,
    pa.uint64(): np.uint64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}
_NAN = scalar(float("nan"))


def to_numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric (or boolean) Arrow array as numpy; nulls of a float64 array as NaN.

    Without nulls the result is a view of the Arrow memory (copy it before writing to
    it); never through pyarrow's pandas bridge.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_boolean(array.type):
        return to_bool(array)
    if array.null_count:
        if array.type != pa.float64():
            raise ValueError(f"nulls in a {array.type} array have no numpy value")
        array = array.fill_null(_NAN)
    dtype = _NUMPY_TYPES[array.type]
    if not len(array):
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset : array.offset + len(array)]


def text_bytes(text: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (counted from its first cell) and the bytes of its cells.

    Both are views of the Arrow memory (no copy): cell ``i`` is
    ``chars[offsets[i]:offsets[i + 1]]``. Null cells are empty here.
    """
    n = len(text)
    if not n:
        return np.zeros(1, dtype=np.int32), np.zeros(0, dtype=np.uint8)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset : text.offset + n + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = text.buffers()[2]
    chars = np.frombuffer(data, dtype=np.uint8)[start:end] if data is not None else np.zeros(0, np.uint8)
    return offsets - start, chars


def cell_edges(offsets: np.ndarray, chars: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of :func:`text_bytes`' cells: which are not empty, and the first and the last byte of
    each of those."""
    filled = offsets[1:] > offsets[:-1]
    return filled, chars[offsets[:-1][filled]], chars[offsets[1:][filled] - 1]
