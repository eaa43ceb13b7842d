"""Unit tests: featurization. The single-record path equals the batch path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepdown_ml.core.features import FEATURE_NAMES, FeatureSpace, _record_overlap, _SkillIndex, skill_overlap
from stepdown_ml.core.validation import validate_frame, validate_record
from tests.conftest import candidate_record

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def features_of(record: dict, vocab) -> np.ndarray:
    values = validate_frame(pd.DataFrame([record], dtype=object)).values
    return FeatureSpace(vocab).transform(values)[0]


def test_batch_rows_equal_single_records(candidates, vocab):
    """Every generated row: transform_record == the row of transform."""
    space = FeatureSpace(vocab)
    batch = space.transform(validate_frame(candidates.head(500)).values)
    for i, record in enumerate(candidates.head(500).to_dict("records")):
        values, problems = validate_record(record)
        assert not problems
        np.testing.assert_array_equal(space.transform_record(values)[0], batch[i])


def test_features_are_float32_row_by_row(candidates, vocab):
    """float32, laid out row by row: what onnxruntime reads without a copy of its own."""
    features = FeatureSpace(vocab).transform(candidates.head(10))
    assert features.dtype == np.float32
    assert features.flags.c_contiguous and features.strides == (4 * features.shape[1], 4)


def test_skill_overlap_counts(vocab):
    row = features_of(
        candidate_record(
            current_skills="sql;python;niche_x;sql", target_skills="sql;python;statistics;niche_x"
        ),
        vocab,
    )
    assert row[COL["n_current_skills"]] == 3  # duplicates count once
    assert row[COL["n_target_skills"]] == 4
    assert row[COL["shared_skills"]] == 3  # unknown tokens match themselves
    assert row[COL["transferable_skill_coverage"]] == pytest.approx(0.75)
    assert row[COL["skill_jaccard"]] == pytest.approx(0.75)
    assert row[COL["missing_target_skills"]] == 1
    assert row[COL["shared_general_skills"]] == 1  # sql
    assert row[COL["shared_specialized_skills"]] == 1  # python


def test_empty_skill_lists_give_zero_coverage(vocab):
    row = features_of(candidate_record(current_skills="", target_skills=""), vocab)
    assert row[COL["n_target_skills"]] == 0
    assert row[COL["transferable_skill_coverage"]] == 0


def test_move_shape_features(vocab):
    row = features_of(
        candidate_record(
            current_level="7",
            target_level="4",
            current_function="finance",
            target_function="finance",
            current_industry="software",
            target_industry="biotech",
        ),
        vocab,
    )
    assert row[COL["levels_down"]] == 3
    assert row[COL["function_change"]] == 0
    assert row[COL["industry_change"]] == 1
    assert row[COL["industry_only_change"]] == 1


def test_motive_is_one_hot(vocab):
    row = features_of(candidate_record(motive="alternate_route"), vocab)
    motives = [
        row[COL[f"motive_{m}"]] for m in ("necessity", "career_change", "broaden_horizons", "alternate_route")
    ]
    assert motives == [0, 0, 0, 1]


def test_empty_necessity_avoidable_is_zero(vocab):
    assert features_of(candidate_record(necessity_avoidable=""), vocab)[COL["necessity_avoidable"]] == 0
    record = candidate_record(motive="necessity", necessity_avoidable="1")
    assert features_of(record, vocab)[COL["necessity_avoidable"]] == 1


tokens = st.sampled_from(["sql", "python", "excel", "statistics", "niche_a", "niche_b", "recruiting", "lean"])
skill_lists = st.lists(tokens, max_size=6).map(";".join)


@settings(max_examples=200, deadline=None)
@given(current=skill_lists, target=skill_lists)
def test_vectorized_overlap_matches_sets(current, target, vocab):
    """skill_overlap (one split, a dictionary, a stable sort) equals plain set arithmetic."""
    counts = skill_overlap(pd.Series([current, "sql"]), pd.Series([target, ""]), vocab)
    cur = set(current.split(";")) - {""}
    tgt = set(target.split(";")) - {""}
    assert counts["n_current"][0] == len(cur)
    assert counts["n_target"][0] == len(tgt)
    assert counts["shared"][0] == len(cur & tgt)
    assert counts["shared_general"][0] == len(cur & tgt & set(vocab.general))
    assert (counts["n_current"][1], counts["n_target"][1], counts["shared"][1]) == (1, 0, 0)


@pytest.mark.parametrize("longest", [6, 200])
def test_batch_skill_overlap_equals_the_record_path_on_mixed_tokens(vocab, longest):
    """Known, unknown and repeated tokens, in any mix: the block path counts as one record does."""
    rng = np.random.default_rng(longest)
    known = sorted(vocab.general)[:6] + [
        t for f in sorted(vocab.specialized) for t in vocab.specialized[f][:2]
    ]
    pool = known + [f"unseen_{i}" for i in range(12)]

    def skills() -> str:
        return ";".join(rng.choice(pool, size=rng.integers(0, longest + 1)))

    rows = [(skills(), skills()) for _ in range(300)]
    index = _SkillIndex(vocab)
    batch = skill_overlap([c for c, _ in rows], [t for _, t in rows], index)
    expected = np.array([_record_overlap(c or None, t or None, index) for c, t in rows])
    for position, name in enumerate(batch):
        np.testing.assert_array_equal(batch[name], expected[:, position], err_msg=name)
    assert expected[:, 2].sum() > 0 and (expected[:, 0] < [len(c.split(";")) for c, _ in rows]).any()


def _record_counts(rows: list[tuple[str, str]], index: _SkillIndex) -> np.ndarray:
    return np.array([_record_overlap(c or None, t or None, index) for c, t in rows]).reshape(len(rows), -1)


@pytest.mark.parametrize(
    ("rare", "distinct"),
    [(20_000, (16_385, 32_768)), (45_000, (32_769, 65_536)), (1_000_000, (65_537, 10**6))],
)
def test_batch_skill_overlap_sorts_keys_of_32_bits_and_wider(vocab, rare, distinct):
    """Each token occurrence is sorted as one key of (row, kind, skill, list) bits. 10,000 rows
    (14 bits), 4 kinds (2), the skills and 1 bit for the list: with 16,385 to 32,768 distinct
    skills (15 bits) the keys take all 32 bits of an unsigned int, the top one included;
    with more (16 bits and up: 33 in all) they are sorted as int64. Keys cut or signed at
    32 bits would mix rows and skills.
    """
    rng = np.random.default_rng(3)
    known = sorted(vocab.general)
    rows = []
    for _ in range(10_000):
        current = [f"rare_{i}" for i in rng.integers(0, rare, 6)] + list(rng.choice(known, 2))
        target = current[:: int(rng.integers(1, 4))] + [f"rare_{i}" for i in rng.integers(0, rare, 3)]
        rows.append((";".join(current), ";".join(target)))
    index = _SkillIndex(vocab)
    batch = skill_overlap([c for c, _ in rows], [t for _, t in rows], index)
    low, high = distinct
    assert low <= len({t for c, t in rows for t in (c + ";" + t).split(";")}) <= high
    expected = _record_counts(rows, index)
    for position, name in enumerate(batch):
        np.testing.assert_array_equal(batch[name], expected[:, position], err_msg=name)


def test_batch_skill_overlap_of_more_rows_than_int16_holds(vocab):
    """40,000 rows in one call: row numbers past 32,767 keep their own counts."""
    known = sorted(vocab.general)
    rows = [
        (f"own_{i};{known[i % 7]};shared_{i}", f"shared_{i};{known[i % 5]};other_{i % 3}")
        for i in range(40_000)
    ]
    index = _SkillIndex(vocab)
    batch = skill_overlap([c for c, _ in rows], [t for _, t in rows], index)
    expected = _record_counts(rows, index)
    for position, name in enumerate(batch):
        np.testing.assert_array_equal(batch[name], expected[:, position], err_msg=name)


def test_batch_skill_overlap_cuts_unvalidated_text_at_every_separator(vocab):
    """Tokens are cut at each separator byte and at each cell's end: empty tokens (no
    skill), separators first, last or doubled, text outside ASCII and a block that is a
    slice of a longer column count as the record path counts the same lists cleaned."""
    rows = [
        (";sql;;python;", "python;"),
        ("café;naïve;sql", "naïve;café;;"),
        (";", ";;"),
        ("", ""),
        ("日本語;sql", "sql;日本語;excel"),
        ("sql", "sql;sql;SQL"),
    ]
    index = _SkillIndex(vocab)
    current = pa.array(["x;y"] + [c for c, _ in rows])[1:]  # offset 1 into its buffers
    target = pa.array(["y"] + [t for _, t in rows])[1:]
    batch = skill_overlap(current, target, index)
    # The record path takes validated lists only; here an empty token is no skill.
    cleaned = [tuple(";".join(sorted(set(x.split(";")) - {""})) for x in row) for row in rows]
    expected = _record_counts(cleaned, index)
    for position, name in enumerate(batch):
        np.testing.assert_array_equal(batch[name], expected[:, position], err_msg=name)
    assert batch["n_current"].tolist() == [2, 3, 0, 0, 2, 1]
    assert batch["shared"].tolist() == [1, 2, 0, 0, 2, 1]


def test_batch_skill_overlap_of_lists_holding_control_characters(vocab):
    """Unvalidated text may hold control characters inside a list: they are part of a token."""
    rows = [("sql;\x1f;lean", "a;\x1f;python"), ("a;\x1f0;excel", "excel"), ("", "b;\x1f;c")]
    index = _SkillIndex(vocab)
    unknown: dict[str, np.ndarray] = {}
    batch = skill_overlap([c for c, _ in rows], [t for _, t in rows], index, unknown)
    expected = _record_counts(rows, index)
    for position, name in enumerate(batch):
        np.testing.assert_array_equal(batch[name], expected[:, position], err_msg=name)
    assert unknown["current"].tolist() == [1, 2, 0] and unknown["target"].tolist() == [2, 0, 3]


@pytest.mark.parametrize("blank", [" ", "\t", "\x1f", "\u3000", "\u00a0"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_batch_skill_overlap_trims_blanks_around_any_list(vocab, blank, where):
    """A list with blanks around it (unvalidated text; validation trims them the same way)
    counts as the list trimmed, whichever cell of the block it is and whichever end."""
    index = _SkillIndex(vocab)
    clean = [("sql;python", "python;lean"), ("excel", "excel;sql")] * 3
    padded = list(clean)
    at = 0 if where == "first" else len(clean) - 1
    padded[at] = (blank + clean[at][0], clean[at][1] + blank)
    batch = skill_overlap([c for c, _ in padded], [t for _, t in padded], index)
    expected = _record_counts(clean, index)
    for position, name in enumerate(batch):
        np.testing.assert_array_equal(batch[name], expected[:, position], err_msg=name)
