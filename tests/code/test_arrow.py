"""Unit tests: the pandas-free Arrow helpers build exactly what pyarrow's own conversions do."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from stepdown_ml.core.arrow import from_numpy, scalar, strings, to_bool, to_codes, to_numpy


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=20))
def test_strings_equal_pyarrow(values):
    built = strings(values)
    built.validate(full=True)
    assert built.equals(pa.array(values, pa.string()))


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=False, width=64), max_size=40),
    flags=st.lists(st.booleans(), min_size=40, max_size=40),
    start=st.integers(0, 5),
)
def test_numpy_round_trips_equal_pyarrow(values, flags, start):
    for array in (np.array(values, dtype=np.float64), np.array(flags[: len(values)], dtype=bool)):
        built = from_numpy(array)
        built.validate(full=True)
        assert built.equals(pa.array(array))
        sliced = built.slice(start)  # offsets not at 0
        np.testing.assert_array_equal(to_numpy(sliced), array[start:])


def test_nulls_become_false_nan_and_minus_one():
    assert to_bool(pa.array([True, None, False, True]).slice(1)).tolist() == [False, False, True]
    np.testing.assert_array_equal(to_numpy(pa.array([1.5, None])), [1.5, np.nan])
    assert to_codes(pa.array([2, None, 0], pa.int8())).tolist() == [2, -1, 0]


def test_scalars_compare_like_python_values():
    text = strings(["", "x", "necessity"])
    assert pc.equal(text, scalar("")).to_pylist() == [True, False, False]
    assert pc.less_equal(pc.utf8_length(text), scalar(1)).to_pylist() == [True, True, False]
