"""Unit tests: recommendation rules, reason codes and ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepdown_ml.core.features import FEATURE_NAMES, GROUP_NAMES, FeatureSpace
from stepdown_ml.core.recommend import (
    NO_DOMINANT_FACTOR,
    rank_within,
    reason_array,
    reasons,
    reasons_one,
    recommend,
    recommend_one,
)
from stepdown_ml.core.validation import validate_frame
from tests.conftest import candidate_record


def recommendation(vocab, p=0.5, threshold=0.4, **changes) -> str:
    values = validate_frame(pd.DataFrame([candidate_record(**changes)], dtype=object)).values
    return recommend(FeatureSpace(vocab).transform(values), np.array([p]), threshold)[0]


def test_industry_only_change_is_advised_lateral(vocab):
    assert (
        recommendation(
            vocab,
            current_function="finance",
            target_function="finance",
            current_industry="software",
            target_industry="biotech",
            current_skills="excel",
            target_skills="sql;python;statistics",
        )
        == "target_lateral"
    )


def test_strong_skills_are_advised_lateral(vocab):
    assert (
        recommendation(
            vocab,
            current_skills="sql;python;statistics",
            target_skills="sql;python;statistics",
            current_function="data",
            target_function="data",
        )
        == "target_lateral"
    )


def test_career_change_with_transferable_skills_aims_higher(vocab):
    assert (
        recommendation(
            vocab,
            current_level="6",
            target_level="3",
            current_function="finance",
            target_function="data",
            current_skills="sql;statistics;excel",
            target_skills="sql;statistics;python;spark",
        )
        == "aim_higher"
    )


@pytest.mark.parametrize(("p", "expected"), [(0.41, "take_step_down"), (0.39, "reconsider")])
def test_otherwise_the_threshold_decides(vocab, p, expected):
    assert (
        recommendation(vocab, p=p, current_skills="excel", target_skills="sql;python;statistics") == expected
    )


def test_no_lateral_advice_without_a_step_down(vocab):
    assert (
        recommendation(
            vocab,
            p=0.2,
            target_level="6",
            current_industry="software",
            target_industry="biotech",
            current_function="data",
            target_function="data",
            current_skills="excel",
            target_skills="sql;python",
        )
        == "reconsider"
    )


def test_reasons_name_the_strongest_groups_with_their_direction():
    contributions = np.zeros((1, len(GROUP_NAMES)), dtype=np.float32)
    contributions[0, GROUP_NAMES.index("transferable_skills")] = -0.9
    contributions[0, GROUP_NAMES.index("promotion_path")] = 0.4
    contributions[0, GROUP_NAMES.index("fit")] = 0.01  # too small to name
    assert reasons(contributions)[0] == "low_skill_coverage;defined_promotion_path"
    assert reasons(np.zeros((1, len(GROUP_NAMES)), dtype=np.float32))[0] == NO_DOMINANT_FACTOR


def test_scalar_twins_equal_the_batch_functions(candidates, vocab):
    rng = np.random.default_rng(0)
    contributions = (rng.normal(0, 0.3, (2000, len(GROUP_NAMES)))).astype(np.float32)
    contributions[:50] = np.round(contributions[:50], 1)  # ties
    batch = reasons(contributions)
    assert [reasons_one(row) for row in contributions.tolist()] == list(batch)
    features = FeatureSpace(vocab).transform(candidates)
    p = rng.random(len(features))
    expected = recommend(features, p, 0.4)
    assert [recommend_one(f, q, 0.4) for f, q in zip(features.tolist(), p, strict=True)] == list(expected)
    assert len(FEATURE_NAMES) == features.shape[1]


def test_rank_within_person_ties_keep_input_order():
    ranks = rank_within(pd.Series(["a", "b", "a", "a"]), np.array([0.2, 0.9, 0.5, 0.5]))
    assert list(ranks) == [3, 1, 1, 2]
    assert list(rank_within(pd.Series([7, 8, 7, 7]), np.array([0.2, 0.9, 0.5, 0.5]))) == [3, 1, 1, 2]


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from([0.1, 0.5, 0.9])), max_size=30))
def test_rank_within_equals_its_definition(rows):
    """Rank = 1 + the person's rows with a higher p_advance, or an equal one earlier in the input."""
    persons = [person for person, _ in rows]
    p = np.array([q for _, q in rows])
    expected = [
        1
        + sum(
            1 for j, (other, q) in enumerate(rows) if other == person and (q > p[i] or (q == p[i] and j < i))
        )
        for i, person in enumerate(persons)
    ]
    for given_ids in (persons, np.array(persons, dtype=object), pa.array(persons)):
        assert rank_within(given_ids, p).tolist() == expected


weights = st.sampled_from([0.0, -0.0, 0.03, -0.05, 0.05, 0.0500001, 0.2, -0.2, 0.7, -1.5])


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(weights, min_size=len(GROUP_NAMES), max_size=len(GROUP_NAMES)), min_size=1))
def test_batch_reasons_equal_record_reasons_with_ties_and_thresholds(rows):
    """The batch sort key and reasons_one agree on order, ties, signs and the weight cut-off."""
    contributions = np.array(rows, dtype=np.float32)
    expected = [reasons_one(row) for row in contributions.tolist()]
    assert list(reasons(contributions)) == expected
    # The batch scorer's form: Arrow text, dictionary-encoded.
    assert reason_array(contributions).to_pylist() == expected


def test_confidence_band_is_the_same_for_a_batch_and_one_row():
    from stepdown_ml.core.recommend import confidence, confidence_one

    threshold = 0.32446
    p = np.concatenate(
        [np.linspace(0, 1, 1001), threshold + np.array([-0.15, -0.05, 0.0, 0.05, 0.15, 0.0499, -0.1501])]
    )
    batch = confidence(p, threshold)
    assert list(batch) == [confidence_one(float(v), threshold) for v in p]
    margin = np.abs(p - threshold)
    assert (batch[margin < 0.05] == "close_call").all()
    assert (batch[(margin >= 0.05) & (margin < 0.15)] == "moderate").all()
    assert (batch[margin >= 0.15] == "clear").all()


def test_served_scores_carry_the_confidence_band(served_model, candidates):
    scores, _ = served_model.score_frame(candidates.head(500))
    margin = (scores["p_advance"] - served_model.threshold).abs()
    assert set(scores["confidence"]) <= {"close_call", "moderate", "clear"}
    assert ((scores["confidence"] == "close_call") == (margin < 0.05)).all()
    one = served_model.score_record(candidates.head(1).astype(object).iloc[0].to_dict())
    assert one["confidence"] == scores["confidence"].iloc[0]
