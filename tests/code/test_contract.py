"""Unit tests: the contract validator, one case per rule, valid and invalid."""

from __future__ import annotations

import decimal
import re
from unittest import mock

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepdown_ml.core import parsing
from stepdown_ml.core.parsing import _skill_lists_ok, parse_series, parse_value
from stepdown_ml.core.schema import (
    CANDIDATE_COLUMNS,
    PERSON_ID,
    SKILLS_PATTERN,
    TRANSITION_COLUMNS,
    ContractError,
    candidate_column,
)
from stepdown_ml.core.validation import validate_frame, validate_record
from tests.conftest import candidate_record

# (column, valid value, invalid value, expected fragment of the reason)
RULES = [
    ("candidate_id", "abc-1", "x" * 65, "at most 64 characters"),
    ("candidate_id", "abc-1", "", "candidate_id is required"),
    ("motive", "alternate_route", "boredom", "one of necessity, career_change"),
    ("necessity_avoidable", "1", "2", "necessity_avoidable must be 0 or 1"),
    ("current_level", "10", "11", "current_level must be an integer 1-10, got '11'"),
    ("current_level", "7", "3.5", "an integer 1-10"),
    ("target_level", "1", "0", "target_level must be an integer 1-10"),
    ("current_function", "customer_support", "astronaut", "current_function must be one of"),
    ("target_function", "research", "Research", "target_function must be one of"),
    ("current_industry", "public_sector", "space", "current_industry must be one of"),
    ("target_industry", "logistics", "", "target_industry is required"),
    ("same_employer", "1", "yes", "same_employer must be 0 or 1"),
    ("current_skills", "", "SQL;python", "lowercase tokens"),
    ("target_skills", "a_1;b2", "a;;b", "lowercase tokens"),
    ("years_experience", "50", "50.5", "years_experience must be a number 0-50"),
    ("years_experience", "0", "-1", "a number 0-50"),
    ("performance_rating", "5", "6", "performance_rating must be an integer 1-5"),
    ("fit_score", "1", "9", "fit_score must be an integer 1-5, got '9'"),
    ("promotion_path", "0", "0.5", "promotion_path must be 0 or 1"),
    ("unemployment_rate", "30", "31", "unemployment_rate must be a number 0-30"),
    ("unemployment_rate", "4.2", "abc", "unemployment_rate must be a number"),
    ("months_unemployed", "120", "121", "months_unemployed must be a number 0-120"),
    ("age_band", "65+", "70-80", "age_band must be one of"),
    ("region", "LATAM", "Mars", "region must be one of"),
]


@pytest.mark.parametrize(("column", "good", "bad", "fragment"), RULES)
def test_each_rule_accepts_valid_and_rejects_invalid(column, good, bad, fragment):
    """Each contract rule: the valid value passes, the invalid one is named with its reason."""
    frame = pd.DataFrame(
        [candidate_record(**{column: good}), candidate_record(**{column: bad})], dtype=object
    )
    if column == "target_level":
        frame.loc[:, "current_level"] = "10"
    result = validate_frame(frame)
    assert list(result.bad) == [False, True]
    problems = result.problems
    assert list(problems["row"]) == [2]
    assert list(problems["column"]) == [column]
    assert fragment in problems["reason"].iloc[0]
    assert problems["candidate_id"].iloc[0] == frame["candidate_id"].iloc[1]


def test_target_level_above_current_level_is_rejected():
    frame = pd.DataFrame([candidate_record(current_level="4", target_level="5")], dtype=object)
    problems = validate_frame(frame).problems
    assert list(problems["column"]) == ["target_level"]
    assert "must be <= current_level (4), got '5'" in problems["reason"].iloc[0]


def test_equal_levels_are_allowed():
    frame = pd.DataFrame([candidate_record(current_level="4", target_level="4")], dtype=object)
    assert not validate_frame(frame).bad.any()


def test_necessity_needs_necessity_avoidable():
    ok = candidate_record(motive="necessity", necessity_avoidable="0")
    missing = candidate_record(motive="necessity", necessity_avoidable="")
    result = validate_frame(pd.DataFrame([ok, missing], dtype=object))
    assert list(result.bad) == [False, True]
    assert "required (0 or 1) when motive is necessity" in result.problems["reason"].iloc[0]


def test_necessity_avoidable_may_be_empty_for_other_motives():
    frame = pd.DataFrame([candidate_record(motive="broaden_horizons", necessity_avoidable="")], dtype=object)
    assert not validate_frame(frame).bad.any()


def test_missing_column_is_a_file_level_error():
    frame = pd.DataFrame([candidate_record()]).drop(columns=["fit_score"])
    with pytest.raises(ContractError, match="missing required column\\(s\\): fit_score"):
        validate_frame(frame, source="in.csv")


def test_extra_columns_pass_through():
    frame = pd.DataFrame([candidate_record(note="kept")], dtype=object)
    result = validate_frame(frame)
    assert result.values["note"].iloc[0] == "kept"


def test_several_problems_in_one_row_are_all_reported():
    frame = pd.DataFrame([candidate_record(fit_score="9", region="Mars")], dtype=object)
    assert sorted(validate_frame(frame).problems["column"]) == ["fit_score", "region"]


def test_row_numbers_start_at_first_row():
    frame = pd.DataFrame([candidate_record(), candidate_record(fit_score="0")], dtype=object)
    assert list(validate_frame(frame, first_row=101).problems["row"]) == [102]


def test_transition_columns_validate_the_label():
    good = {
        **candidate_record(),
        "transition_year": "2019",
        "advanced_within_36m": "1",
        "months_to_regain": "7",
    }
    bad = {**good, "advanced_within_36m": "2", "months_to_regain": ""}
    result = validate_frame(pd.DataFrame([good, bad], dtype=object), TRANSITION_COLUMNS)
    assert list(result.problems["column"]) == ["advanced_within_36m"]


def test_typed_frames_validate_like_text(candidates):
    """Generated (typed) frames pass; the same values as text pass too."""
    assert not validate_frame(candidates).bad.any()
    assert not validate_frame(candidates.astype(str).replace({"<NA>": ""})).bad.any()


def first(values):
    """The first parsed value of a column (Arrow text or numpy numbers) as Python."""
    return values[0].as_py() if isinstance(values, pa.Array) else values[0]


cell = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.sampled_from(
        ["", " ", "1", "0", "5", "10", "3.0", "-1", "1e1", "nan", "inf", "1_0", "necessity", "EU"]
    ),
    st.integers(-3, 60),
    # Every column's bounds and their neighbours, as ints, floats and text.
    st.sampled_from([-1, 0, 1, 2, 5, 6, 10, 11, 30, 31, 50, 51, 120, 121]).flatmap(
        lambda n: st.sampled_from([n, float(n), str(n), n + 0.5])
    ),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(column=st.sampled_from(CANDIDATE_COLUMNS), value=cell)
def test_record_and_frame_paths_agree(column, value):
    """parse_value (predict's path) and parse_series (batch path) agree on any input."""
    spec = candidate_column(column.name)
    one, reason = parse_value(spec, value)
    values, bad = parse_series(spec, pd.Series([value], dtype=object))
    assert bool(bad[0]) == (reason is not None)
    if reason is None and one is not None:
        assert first(values) == one


@settings(max_examples=60, deadline=None)
@given(fit=st.sampled_from(["1", "5", "0", "x", ""]), level=st.sampled_from(["3", "12", "2"]))
def test_validate_record_matches_validate_frame(fit, level):
    record = candidate_record(fit_score=fit, target_level=level, current_level="3")
    _, problems = validate_record(record)
    frame_problems = validate_frame(pd.DataFrame([record], dtype=object)).problems
    assert sorted(problems) == sorted(zip(frame_problems["column"], frame_problems["reason"], strict=True))


def assert_record_path_equals_parse_value(column, value) -> None:
    # Levels 10 -> 1: no value of one level column can break the cross-column rule.
    record = {**candidate_record(current_level=10, target_level=1, person_id="p-1"), column.name: value}
    values, problems = validate_record(record)
    one, reason = parse_value(column, value)
    assert [r for c, r in problems if c == column.name] == ([reason] if reason else []), value
    if reason is None:
        assert values[column.name] == one and type(values[column.name]) is type(one), value


@settings(max_examples=300, deadline=None)
@given(column=st.sampled_from((*CANDIDATE_COLUMNS, PERSON_ID)), value=cell)
def test_record_shortcuts_equal_parse_value(column, value):
    """validate_record's per-kind shortcuts give exactly parse_value's answer."""
    assert_record_path_equals_parse_value(column, value)


@pytest.mark.parametrize("column", (*CANDIDATE_COLUMNS, PERSON_ID), ids=lambda c: c.name)
def test_record_shortcuts_at_the_bounds(column):
    """The same, exhaustively at each column's bounds and just past them."""
    low, high = (0, 1) if column.kind == "binary" else (column.low or 0, column.high or 0)
    for number in (low - 1, low, low + 0.5, high, high + 1):
        for value in (number, float(number), str(number), f" {number} "):
            assert_record_path_equals_parse_value(column, value)
    huge = (10**400, "9" * 5000, decimal.Decimal("2.5"))
    for value in (None, "", " ", "x" * 65, "a;b", "a;;b", " a ", True, float("nan"), float("inf"), *huge):
        assert_record_path_equals_parse_value(column, value)


numberish = st.from_regex(r"[ \t+\-0-9.eE_xXnaifINFd]{0,7}", fullmatch=True)


@settings(max_examples=600, deadline=None)
@given(value=numberish, column=st.sampled_from(["years_experience", "fit_score", "same_employer"]))
def test_number_parsing_agrees_on_number_like_text(value, column):
    """Arrow's cast (batch) and the regex (record) accept exactly the same numbers."""
    spec = candidate_column(column)
    one, reason = parse_value(spec, value)
    for frame_values in ([value], [value, "1"]):  # alone, and beside a clean cell
        values, bad = parse_series(spec, pd.Series(frame_values, dtype="str"))
        assert bool(bad[0]) == (reason is not None), (value, reason)
        if reason is None and one is not None:
            assert first(values) == one


@settings(max_examples=300, deadline=None)
@given(
    cells=st.lists(st.text(alphabet="ab_9;; A\t-", max_size=8), min_size=1, max_size=6),
    cut=st.integers(0, 2),
    scan=st.sampled_from([1, 2, 3, 5, 8, 1 << 17]),
)
def test_skill_list_byte_scan_equals_the_pattern(cells, cut, scan):
    """The byte scan that accepts clean skill columns agrees with SKILLS_PATTERN cell by cell,
    however its pieces cut the column's bytes (a bad byte or a doubled ``;`` at a cut)."""
    text = pa.array(["x", *cells], pa.string()).slice(1 + cut)  # a slice: offsets not at 0
    expected = [re.fullmatch(SKILLS_PATTERN.strip("^$"), cell) is not None for cell in cells[cut:]]
    with mock.patch.object(parsing, "_SCAN_BYTES", scan):
        assert _skill_lists_ok(text).tolist() == expected


@pytest.mark.parametrize("scan", [1, 2, 3, 4, 7, 8])
def test_skill_list_byte_scan_finds_a_bad_byte_or_doubled_separator_at_every_cut(scan):
    """Clean lists but for one ``;`` first, last or doubled, or one byte outside
    ``[a-z0-9_;]``, at every position, with the scan's pieces as short as a byte: only that
    cell is refused."""
    cells = ["abc;de", "f;gh_9", "ijk;l;mn"]
    variants = []
    for i, cell in enumerate(cells):
        for at in range(len(cell) + 1):  # first and last byte too: ";abc", "abc;"
            variants.append((i, cell[:at] + ";" + cell[at:]))  # ";;" beside a ";", else still clean
            variants.append((i, cell[:at] + "A" + cell[at:]))
    with mock.patch.object(parsing, "_SCAN_BYTES", scan):
        for i, changed in variants:
            column = [*cells[:i], changed, *cells[i + 1 :]]
            expected = [re.fullmatch(SKILLS_PATTERN.strip("^$"), cell) is not None for cell in column]
            assert _skill_lists_ok(pa.array(["x", *column], pa.string()).slice(1)).tolist() == expected, (
                changed
            )


def test_typed_arrow_columns_validate_like_records():
    """Typed Arrow input (Parquet): NaN, nulls, huge ints, decimals and string_view cells get
    the record path's verdicts, and a bad row is a reject, not a crash."""
    good = {
        **candidate_record(current_level=10, target_level=1),
        "current_level": 10,
        "target_level": 1,
        "necessity_avoidable": None,
        "fit_score": 3,
        "months_unemployed": 0,
        "years_experience": decimal.Decimal("12.50"),
    }
    changes = [
        {"necessity_avoidable": float("nan")},  # empty, allowed for this motive
        {},
        {"months_unemployed": 2**60},  # beyond float64's exact integers: out of range
        {"fit_score": 9},
        {"years_experience": decimal.Decimal("60.25")},  # out of range
        {"motive": "necessity", "necessity_avoidable": float("nan")},  # required, empty
    ]
    records = [{**good, **change} for change in changes]
    types = {
        "candidate_id": pa.string_view(),
        "region": pa.string_view(),
        "necessity_avoidable": pa.float64(),  # not from_pandas: NaN stays NaN, None is null
        "current_level": pa.int64(),
        "target_level": pa.int64(),
        "months_unemployed": pa.int64(),
        "fit_score": pa.int64(),
        "years_experience": pa.decimal128(6, 2),
    }
    columns = {name: pa.array([r[name] for r in records], types.get(name, pa.string())) for name in good}
    checked = validate_frame(pa.table(columns))
    for i, record in enumerate(records, start=1):
        _, expected = validate_record(record)
        got = checked.problems[checked.problems["row"] == i]
        assert sorted(zip(got["column"], got["reason"], strict=True)) == sorted(expected), i
    assert checked.bad.tolist() == [False, False, True, True, True, True]
