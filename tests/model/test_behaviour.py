"""Model tests: behaviour the domain expects (directional, invariance, minimum function)."""

from __future__ import annotations

import itertools

import pytest

from stepdown_ml.serving import Model
from tests.conftest import candidate_record

pytestmark = pytest.mark.slow  # on the model trained for this session


# Served p_advance adds float32 group contributions; two rows the classifier scores alike
# can differ by float32 rounding (about 1e-8) when they reach different refined leaves of
# the attribution (stepdown_ml.training.attribution), so "never lower" allows that much.
ROUNDING = 1e-6


def p(model: Model, **changes) -> float:
    return model.score_record(candidate_record(**changes))["p_advance"]


@pytest.mark.parametrize(
    "base",
    [
        {},
        {"motive": "necessity", "necessity_avoidable": "1"},
        {"motive": "alternate_route", "current_function": "data", "target_function": "data"},
    ],
)
def test_more_transferable_skills_never_lower_p_advance(model, base):
    """Directional: covering more of the target's skills does not lower p_advance."""
    target = "sql;statistics;machine_learning;python;communication"
    steps = [
        "excel",
        "excel;sql",
        "excel;sql;statistics",
        "excel;sql;statistics;python",
        "sql;statistics;machine_learning;python;communication",
    ]
    scores = [p(model, **base, current_skills=s, target_skills=target) for s in steps]
    assert all(b >= a - ROUNDING for a, b in itertools.pairwise(scores))


@pytest.mark.parametrize("motive", ["career_change", "broaden_horizons", "alternate_route"])
def test_better_fit_never_lowers_p_advance(model, motive):
    """Directional: a better fit score does not lower p_advance."""
    scores = [p(model, motive=motive, fit_score=str(f)) for f in range(1, 6)]
    assert all(b >= a - ROUNDING for a, b in itertools.pairwise(scores))


def test_promotion_path_never_lowers_p_advance(model):
    """Directional: a defined promotion path does not lower p_advance."""
    for motive in ("career_change", "alternate_route", "broaden_horizons"):
        assert (
            p(model, motive=motive, promotion_path="1")
            >= p(model, motive=motive, promotion_path="0") - ROUNDING
        )


def test_deeper_step_down_never_raises_p_advance(model):
    """Directional: going further down does not raise p_advance."""
    scores = [p(model, current_level="8", target_level=str(t)) for t in (8, 7, 6, 5, 4)]
    assert all(b <= a + ROUNDING for a, b in itertools.pairwise(scores))


def test_candidate_id_never_changes_the_score(model):
    """Invariance: the id is echoed, never used."""
    assert p(model, candidate_id="a") == p(model, candidate_id="zzz-999")


def test_avoidable_necessity_scores_lower(model):
    """Minimum functionality: the model learned the avoidable-necessity penalty."""
    avoidable = p(model, motive="necessity", necessity_avoidable="1")
    unavoidable = p(model, motive="necessity", necessity_avoidable="0")
    assert avoidable < unavoidable


def test_strong_case_beats_weak_case(model):
    """Minimum functionality: an internal, well-fitting, skill-matched move beats the opposite."""
    strong = p(
        model,
        motive="alternate_route",
        same_employer="1",
        promotion_path="1",
        fit_score="5",
        performance_rating="5",
        current_function="data",
        target_function="data",
        current_skills="sql;python;statistics",
        target_skills="sql;python;statistics",
        target_level="5",
    )
    weak = p(
        model,
        motive="necessity",
        necessity_avoidable="1",
        unemployment_rate="14",
        fit_score="1",
        performance_rating="1",
        current_skills="excel",
        target_skills="python;spark;etl",
        target_level="2",
    )
    assert strong > weak + 0.3
