"""predict() on one record and on many keep one contract: for any value a caller puts in a
candidate column, the record path (validate_record) and the batch path (validate_frame)
accept and reject the same values, parse them to the same value and word the same reason.

The rules the hostile values below exercise:

* ``bool`` and ``numpy.bool_`` are not numbers: int and number columns reject them (typed
  boolean columns too); binary columns (0/1) take ``True``/``False`` as 1/0.
* complex numbers, bytes, containers and text that is not valid Unicode (lone surrogates)
  are rejected wherever they appear; a rejected value is shown in the reason with the
  surrogates escaped, so the reason is always valid text.
* integers of any size are rejected when out of range, never an error, whatever their size.
* a contract column given twice is refused: ``InvalidCandidateError`` from ``predict()``,
  ``ContractError`` from ``validate_frame``, both naming the column.
"""

from __future__ import annotations

import decimal
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepdown_ml import InvalidCandidateError, predict
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, PERSON_ID, Column, ContractError
from stepdown_ml.core.validation import validate_frame, validate_record
from tests.conftest import candidate_record

# Levels 10 -> 1: no value drawn for one level column can break the cross-column rule.
BASE = candidate_record(current_level="10", target_level="1")
# The same candidate with typed values, so a batch mixes text and numbers in a column.
TYPED = {
    **BASE,
    "candidate_id": "c-typed",
    "necessity_avoidable": None,
    "current_level": 10,
    "target_level": 1,
    "same_employer": 0,
    "years_experience": 12.5,
    "performance_rating": 4,
    "fit_score": 3,
    "promotion_path": 1,
    "unemployment_rate": 5.5,
    "months_unemployed": 0,
}

SMALL_NUMBERS = (-1, -0.0, 0, 0.5, 1, 2, 3, 4.2, 5, 6, 10, 11, 12.5, 30, 31, 50, 50.5, 120, 121)
HUGE_INTS = (10**400, -(10**400), 10**5000, 2**63, -(2**63) - 1, 2**64, 2**53 + 1, -(2**53) - 1)
INT_TYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
FLOAT_TYPES = ((np.float16, 16), (np.float32, 32), (np.float64, 64), (np.longdouble, 64))
SPECIAL_TEXT = (
    "",
    " ",
    "\t\n",
    "\u00a0",
    "1_0",
    " +3 ",
    "+1",
    "-0",
    "-0.0",
    "3e0",
    "3.0",
    "1e400",
    "-1e400",
    "\u0663",  # ARABIC-INDIC DIGIT THREE
    "\uff13",  # FULLWIDTH DIGIT THREE
    "\u00b2",
    "0x1",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "1.",
    ".5",
    "True",
    "None",
    "\x00",
    "3\x00",
    "\x003",
    "\ud800",
    "3\udc00",
    "c-\udfff",
    " EU ",
    "EU\x00",
    "necessity",
    "sql;python",
    "a;;b",
    "x" * 64,
    "x" * 65,
    "9" * 5000,
    "x" * 100_000,
)
DECIMALS = tuple(
    decimal.Decimal(t)
    for t in ("NaN", "-NaN", "sNaN", "1e400", "-1e400", "Infinity", "-0", "0", "3", "3.000", "12.5", "1e-400")
)
OTHERS = (
    None,
    pd.NA,
    np.nan,
    pd.NaT,
    b"",
    b"1",
    bytearray(b"3"),
    [],
    [3],
    {},
    {"a": 1},
    (3,),
    frozenset({3}),
)


def _numpy_ints() -> st.SearchStrategy:
    def of(kind: type) -> st.SearchStrategy:
        info = np.iinfo(kind)
        low, high = int(info.min), int(info.max)
        return st.one_of(st.integers(max(low, -2), min(high, 125)), st.integers(low, high)).map(kind)

    return st.sampled_from(INT_TYPES).flatmap(of)


def _numpy_floats() -> st.SearchStrategy:
    def of(kind_width: tuple[type, int]) -> st.SearchStrategy:
        kind, width = kind_width
        return st.one_of(st.sampled_from(SMALL_NUMBERS), st.floats(width=width)).map(kind)  # type: ignore[call-overload]

    return st.sampled_from(FLOAT_TYPES).flatmap(of)


HOSTILE = st.one_of(
    st.integers(-2, 125),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.sampled_from(SMALL_NUMBERS).map(float),
    st.floats(),
    st.sampled_from((math.nan, math.inf, -math.inf, -0.0, 5e-324)),
    st.booleans(),
    st.booleans().map(np.bool_),
    _numpy_ints(),
    _numpy_floats(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from(DECIMALS),
    st.complex_numbers(max_magnitude=200),
    st.sampled_from((3 + 0j, complex(1, 1), complex("nan"), np.complex64(3), np.complex128(1))),
    st.binary(max_size=4),
    st.text(max_size=12),
    st.from_regex(r"[ \t+\-0-9.eE_]{0,8}", fullmatch=True),
    st.text(alphabet="0123456789\u0663\uff13.+-eE _", max_size=6),
    st.sampled_from(SMALL_NUMBERS).map(str),
    st.sampled_from(SPECIAL_TEXT),
    st.sampled_from(OTHERS),
)


def _column_values(column: Column) -> st.SearchStrategy:
    """Values near what the column accepts, so that many draws are valid."""
    if column.kind == "enum":
        return st.sampled_from(column.allowed).flatmap(lambda v: st.sampled_from((v, f" {v} ", v.upper())))
    if column.kind == "skills":
        return st.one_of(
            st.sampled_from(("", "sql", "sql;python", "excel;statistics", " sql ", "a_1;b2")),
            st.from_regex(r"[a-z_;A ]{0,8}", fullmatch=True),
        )
    if column.kind == "id":
        return st.one_of(st.text(max_size=70), st.sampled_from(("p-1", "x" * 64, "x" * 65)))
    low, high = (0, 1) if column.kind == "binary" else (int(column.low or 0), int(column.high or 0))
    near = st.sampled_from(sorted({low - 1, low, low + 1, (low + high) // 2, high, high + 1}))
    return near.flatmap(
        lambda n: st.sampled_from(
            (n, float(n), str(n), f" {n} ", f"{n}.0", n + 0.5, np.int64(n), np.float32(n))
        )
    )


COLUMNS = (*CANDIDATE_COLUMNS, PERSON_ID)
column_and_value = st.sampled_from(COLUMNS).flatmap(
    lambda c: st.tuples(st.just(c), st.one_of(_column_values(c), HOSTILE))
)


def object_frame(records: list[dict]) -> pd.DataFrame:
    """The records as an object frame that holds every value exactly as given."""
    columns = {}
    for name in records[0]:
        cells = np.empty(len(records), dtype=object)
        for i, record in enumerate(records):
            cells[i] = record[name]
        columns[name] = pd.Series(cells, dtype=object)
    frame = pd.DataFrame(columns)
    assert all(dtype == np.dtype(object) for dtype in frame.dtypes)
    return frame


def frame_value(values, i: int):
    """Row ``i`` of a parsed column (Arrow text or float64 numbers) as Python, None if empty."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values[i].as_py()
    value = float(values[i])
    return None if math.isnan(value) else value


def same_parsed(one, batch) -> bool:
    if one is None and isinstance(batch, str):
        # An empty cell of a nullable text column: None for a record; null, "" or blanks
        # in a frame (features read all of them as no skills).
        return batch.strip() == ""
    if one is None or batch is None or isinstance(one, str):
        return one == batch
    # Numbers: the same value, and in a number column the same sign (-0.0 stays -0.0);
    # an int column parses to an int for a record, so its zero has no sign.
    same_sign = isinstance(one, int) or math.copysign(1.0, one) == math.copysign(1.0, batch)
    return bool(one == batch and same_sign)


def with_value(column: Column, value) -> tuple[dict, dict]:
    """(the record with ``value`` in ``column``, a valid record for the other rows)."""
    valid = {**BASE, "person_id": "p-1"} if column is PERSON_ID else BASE
    return {**valid, column.name: value}, valid


def check_frame_agrees(record: dict, rows: list[dict], at: int) -> None:
    """validate_frame on ``rows`` (``record`` at index ``at``) agrees with validate_record."""
    values, problems = validate_record(record)
    checked = validate_frame(object_frame(rows))
    got = checked.problems[checked.problems["row"] == at + 1]
    assert sorted(zip(got["column"], got["reason"], strict=True)) == sorted(problems)
    assert checked.bad.tolist() == [i == at and bool(problems) for i in range(len(rows))]
    wrong = {c for c, _ in problems}
    for column in COLUMNS:
        if column.name in record and column.name not in wrong:
            parsed = frame_value(checked.columns[column.name], at)
            assert same_parsed(values[column.name], parsed), (column.name, values[column.name], parsed)


def outcome(records) -> tuple[str, object]:
    try:
        return "scored", predict(records)
    except InvalidCandidateError as exc:
        return "invalid", exc.problems


@pytest.mark.slow  # ~7 s of generated examples: `make test` runs it, `make test-fast` does not
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=column_and_value)
def test_record_and_frame_validation_agree_on_hostile_values(drawn):
    """validate_record's problems and parsed values equal validate_frame's, for the value
    alone in an object frame and mixed with valid rows (text and typed)."""
    column, value = drawn
    record, valid = with_value(column, value)
    check_frame_agrees(record, [record], 0)
    typed = {**TYPED, "person_id": "p-2"} if column is PERSON_ID else TYPED
    check_frame_agrees(record, [valid, record, typed], 1)


@pytest.mark.slow  # ~4 s: 200 hostile records through predict() one and many
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=column_and_value)
def test_predict_one_and_many_agree_on_hostile_values(drawn):
    """predict(record) and predict([record, valid]) both score it the same or both reject it
    with the same column and reason."""
    column, value = drawn
    record, valid = with_value(column, value)
    typed = {**TYPED, "person_id": "p-2"} if column is PERSON_ID else TYPED
    one_kind, one = outcome(record)
    for rows, at in (([record, valid], 0), ([typed, record], 1)):
        many_kind, many = outcome(rows)
        assert many_kind == one_kind, (rows, one, many)
        if one_kind == "scored":
            assert isinstance(one, dict) and isinstance(many, pd.DataFrame)
            assert many["p_advance"].iloc[at] == one["p_advance"]
            for key in ("candidate_id", "recommendation", "reasons"):
                assert many[key].iloc[at] == one[key]
        else:
            assert isinstance(one, list) and isinstance(many, list)
            assert many == [{"row": at + 1, **p} for p in one]


# Regression tests, one per defect found by the red team.


def predict_problems(records) -> list[dict]:
    with pytest.raises(InvalidCandidateError) as exc:
        predict(records)
    return exc.value.problems


@pytest.mark.parametrize(
    "huge",
    [10**400, -(10**400), 10**5000, 2**63, 2**64],
    ids=["10**400", "-10**400", "10**5000", "2**63", "2**64"],
)
@pytest.mark.parametrize("column", ["years_experience", "fit_score", "same_employer", "candidate_id"])
def test_huge_ints_are_rejected_with_a_reason_in_a_batch(column, huge):
    record = {**BASE, column: huge}
    (single,) = predict_problems(record)
    assert single["column"] == column and "got '" in single["reason"]
    assert predict_problems([record, TYPED]) == [{"row": 1, **single}]
    assert predict_problems(object_frame([TYPED, record])) == [{"row": 2, **single}]


def test_huge_int_reason_shows_its_leading_digits():
    (problem,) = predict_problems({**BASE, "years_experience": 10**5000})
    assert problem["reason"] == f"years_experience must be a number 0-50, got '1{'0' * 36}...'"


@pytest.mark.parametrize("where", ["pandas", "list"])
def test_a_contract_column_given_twice_is_named(where):
    frame = pd.DataFrame([BASE, BASE])
    doubled = pd.concat([frame, frame[["fit_score"]]], axis=1)
    if where == "pandas":
        with pytest.raises(ContractError, match="fit_score"):
            validate_frame(doubled)
    else:
        assert predict_problems(doubled) == [
            {"column": "fit_score", "reason": "fit_score is given more than once"}
        ]


def test_an_extra_column_given_twice_is_still_ignored_by_predict():
    frame = pd.DataFrame([candidate_record(note="a")])
    out = predict(pd.concat([frame, frame[["note"]]], axis=1))
    assert len(out) == 1


@pytest.mark.parametrize(
    "value",
    [np.True_, np.False_, 3 + 0j, np.complex128(3), complex(1, 0)],
    ids=["np.True_", "np.False_", "3+0j", "np.complex128", "1+0j"],
)
@pytest.mark.parametrize("column", ["fit_score", "years_experience", "current_level"])
def test_numpy_bools_and_complex_are_rejected_in_a_batch(column, value):
    record = {**BASE, column: value}
    (single,) = predict_problems(record)
    assert single["column"] == column
    # Alone (pandas infers a bool or complex column), beside text and beside typed rows.
    assert predict_problems([record, record]) == [{"row": 1, **single}, {"row": 2, **single}]
    assert predict_problems([TYPED, record]) == [{"row": 2, **single}]
    frame = pd.DataFrame([record, record])
    assert len(predict_problems(frame)) == 2


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_], ids=repr)
@pytest.mark.parametrize("column", ["current_level", "fit_score", "performance_rating", "years_experience"])
def test_booleans_are_not_numbers(column, value):
    record = {**BASE, column: value}
    kind = "a number 0-50" if column == "years_experience" else None
    (single,) = predict_problems(record)
    assert single["column"] == column
    if value is True:
        rule = kind or ("an integer 1-10" if column == "current_level" else "an integer 1-5")
        assert single["reason"] == f"{column} must be {rule}, got 'True'"
    assert predict_problems([record, BASE]) == [{"row": 1, **single}]


@pytest.mark.parametrize("column", ["current_level", "fit_score", "years_experience"])
def test_typed_boolean_columns_are_not_numbers(column):
    """A pandas bool column and an Arrow boolean column follow the single-value rule."""
    frame = pd.DataFrame([BASE, BASE]).astype({column: object})
    frame[column] = pd.Series([True, False], dtype=bool)
    checked = validate_frame(frame)
    assert checked.bad.tolist() == [True, True]
    reasons = checked.problems["reason"].tolist()
    assert reasons[0].endswith("got 'True'") and reasons[1].endswith("got 'False'")
    assert reasons[0] == validate_record({**BASE, column: True})[1][0][1]
    table = pa.table({**{k: pa.array([v, v]) for k, v in BASE.items()}, column: pa.array([True, None])})
    arrow = validate_frame(table)
    assert arrow.bad.tolist() == [True, True]
    assert arrow.problems["reason"].tolist()[0] == reasons[0]


@pytest.mark.parametrize("column", ["same_employer", "promotion_path", "necessity_avoidable"])
@pytest.mark.parametrize(
    ("value", "number"),
    [(True, "1"), (False, "0"), (np.True_, "1"), (np.False_, "0")],
    ids=["True", "False", "np.True_", "np.False_"],
)
def test_binary_columns_take_booleans_as_0_and_1(column, value, number):
    record = {**BASE, "motive": "necessity", "necessity_avoidable": "0", column: value}
    expected = predict({**record, column: number})["p_advance"]
    assert predict(record)["p_advance"] == expected
    assert predict([record, BASE])["p_advance"].iloc[0] == expected
    frame = pd.DataFrame([record, record])
    frame[column] = pd.Series([bool(value)] * 2, dtype=bool)
    assert (predict(frame)["p_advance"] == expected).all()
    table = pa.table(
        {**{k: pa.array([v]) for k, v in record.items() if k != column}, column: pa.array([bool(value)])}
    )
    assert validate_frame(table).columns[column].tolist() == [float(number)]


@pytest.mark.parametrize("column", ["candidate_id", "person_id", "motive", "years_experience", "fit_score"])
def test_text_that_is_not_unicode_is_rejected_in_both_paths(column):
    record = {**BASE, "person_id": "p-1", column: "c-\ud800"}
    (single,) = predict_problems(record)
    assert single["column"] == column and "\\ud800" in single["reason"]
    single["reason"].encode("utf-8")  # printable: escaped, no lone surrogate
    assert predict_problems([record, {**BASE, "person_id": "p-1"}]) == [{"row": 1, **single}]
    assert predict_problems(object_frame([record])) == [{"row": 1, **single}]


@pytest.mark.parametrize(
    "value", [decimal.Decimal("sNaN"), decimal.Decimal("NaN"), decimal.Decimal("1e400")], ids=str
)
def test_decimal_nan_and_overflow_are_rejected_in_both_paths(value):
    record = {**BASE, "years_experience": value}
    (single,) = predict_problems(record)
    assert single["column"] == "years_experience"
    assert predict_problems([record, BASE]) == [{"row": 1, **single}]


def test_rejected_ids_and_reasons_are_storable_text():
    """A rejected row's candidate id and reason go into an Arrow rejects table."""
    frame = object_frame(
        [{**BASE, "candidate_id": 10**5000}, {**BASE, "candidate_id": "c-\udc00", "fit_score": "9"}]
    )
    problems = validate_frame(frame).problems
    assert problems["candidate_id"].tolist()[0].endswith("...")
    assert problems["candidate_id"].tolist()[1] == "c-\\udc00"


def _problems_of(records):
    with pytest.raises(InvalidCandidateError) as caught:
        predict(records)
    return caught.value.problems


@pytest.mark.parametrize("many", [1, 2, 20])  # 20: the service's column-by-column path
def test_records_in_a_list_are_validated_one_by_one_as_one_record_is(many):
    """A key a record leaves out is an empty value of that record, in a list as alone (even
    when no record of the list has it); a required one missing is a problem of each row
    that lacks it; an item that is not a mapping is a problem of its row."""
    optional = {k: v for k, v in BASE.items() if k not in ("current_skills", "target_skills")}
    alone = predict(optional)
    listed = predict([optional] * many)
    assert listed["p_advance"].tolist() == [alone["p_advance"]] * many
    assert listed["reasons"].tolist() == [alone["reasons"]] * many
    no_motive = {k: v for k, v in BASE.items() if k != "motive"}
    assert _problems_of([no_motive] * many) == [
        {"row": row, "column": "motive", "reason": "motive is missing"} for row in range(1, many + 1)
    ]
    assert _problems_of([BASE] * (many - 1) + [5]) == [
        {"row": many, "column": "", "reason": "a record must be an object"}
    ]


def test_rows_of_a_frame_given_as_series_score_as_the_frame():
    """predict([row for _, row in frame.iterrows()]): a row (a Series) is a record."""
    frame = pd.DataFrame([BASE, {**BASE, "candidate_id": "other", "fit_score": "2"}])
    rows = [row for _, row in frame.iterrows()]
    pd.testing.assert_frame_equal(predict(rows), predict(frame))
