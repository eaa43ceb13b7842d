"""Data tests: expectations on the generated data (docs/DOMAIN.md's stylized facts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from stepdown_ml.cli import main
from stepdown_ml.core.features import FeatureSpace
from stepdown_ml.core.schema import TRANSITION_COLUMNS
from stepdown_ml.core.validation import validate_frame
from stepdown_ml.datasets.generate import generate_raw, generate_transitions

ROWS = 40_000


@pytest.fixture(scope="module")
def data(vocab) -> pd.DataFrame:
    frame = generate_transitions(ROWS, seed=7)
    features = pd.DataFrame(FeatureSpace(vocab).transform(frame), columns=FeatureSpace.names)
    frame["coverage"] = features["transferable_skill_coverage"].to_numpy()
    frame["levels_down"] = frame["current_level"] - frame["target_level"]
    return frame


def rate(frame: pd.DataFrame) -> float:
    return float(frame["advanced_within_36m"].mean())


def clearly_lower(low: pd.DataFrame, high: pd.DataFrame, z: float = 3.0) -> bool:
    """The positive rate of ``low`` is below that of ``high`` by more than z standard errors."""
    p1, p2 = rate(low), rate(high)
    se = np.sqrt(p1 * (1 - p1) / len(low) + p2 * (1 - p2) / len(high))
    return (p2 - p1) > z * se


def test_same_arguments_give_identical_bytes(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["generate", "--rows", "500", "--seed", "3", "--out", str(a)]) == 0
    assert main(["generate", "--rows", "500", "--seed", "3", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.csv"
    main(["generate", "--rows", "500", "--seed", "4", "--out", str(c)])
    assert a.read_bytes() != c.read_bytes()


def test_generated_rows_follow_the_contract(data):
    assert not validate_frame(data, TRANSITION_COLUMNS).bad.any()


def test_oracle_auc_and_positive_rate_in_range(data):
    assert 0.25 <= rate(data) <= 0.55
    oracle = roc_auc_score(data["advanced_within_36m"], data["true_probability"])
    assert 0.70 <= oracle <= 0.90


def test_true_probability_is_calibrated(data):
    """Labels are drawn from true_probability: observed rates match it per decile."""
    bins = pd.qcut(data["true_probability"], 10)
    grouped = data.groupby(bins, observed=True)
    gap = (grouped["advanced_within_36m"].mean() - grouped["true_probability"].mean()).abs()
    assert gap.max() < 0.03


def test_motives_have_their_own_base_rates(data):
    rates = data.groupby("motive")["advanced_within_36m"].mean()
    assert rates["alternate_route"] > rates["necessity"]
    assert rates.max() - rates.min() > 0.1


def test_necessity_hurts_more_when_avoidable(data):
    necessity = data[data["motive"] == "necessity"]
    assert clearly_lower(
        necessity[necessity["necessity_avoidable"] == 1], necessity[necessity["necessity_avoidable"] == 0]
    )


def test_necessity_hurts_more_when_unemployment_is_high(data):
    necessity = data[data["motive"] == "necessity"]
    assert clearly_lower(
        necessity[necessity["unemployment_rate"] >= 9], necessity[necessity["unemployment_rate"] < 6]
    )


def test_skill_coverage_helps_with_diminishing_returns(data):
    bands = pd.cut(data["coverage"], [-0.01, 0.2, 0.4, 0.6, 0.8, 1.0])
    by_band = data.groupby(bands, observed=True)["true_probability"].mean().to_numpy()
    steps = np.diff(by_band)
    assert (steps > 0).all()
    assert steps[0] > steps[-1]  # the first shared skills matter most
    assert clearly_lower(data[data["coverage"] < 0.3], data[data["coverage"] > 0.6])


def test_deeper_steps_are_harder_to_climb_back_from(data):
    same_motive = data[data["motive"] == "career_change"]
    assert clearly_lower(
        same_motive[same_motive["levels_down"] >= 3], same_motive[same_motive["levels_down"] == 1]
    )


def test_industry_only_changes_are_easy(data):
    keeps_function = data["current_function"] == data["target_function"]
    changes_industry = data["current_industry"] != data["target_industry"]
    industry_only = data[keeps_function & changes_industry & (data["current_level"] < 6)]
    function_change = data[~keeps_function & (data["current_level"] < 6)]
    assert clearly_lower(function_change, industry_only)


def test_internal_moves_and_promotion_paths_help(data):
    assert clearly_lower(data[data["same_employer"] == 0], data[data["same_employer"] == 1])
    assert clearly_lower(data[data["promotion_path"] == 0], data[data["promotion_path"] == 1])


def test_fit_and_performance_help(data):
    assert clearly_lower(data[data["fit_score"] <= 2], data[data["fit_score"] >= 4])
    assert clearly_lower(data[data["performance_rating"] <= 2], data[data["performance_rating"] >= 4])


def test_raw_records_carry_identities_not_transition_ids():
    raw = generate_raw(200, seed=1)
    assert {"employee_id", "full_name", "email", "birth_date", "city"} <= set(raw.columns)
    assert not {"candidate_id", "age_band", "region", "transition_year", "true_probability"} & set(
        raw.columns
    )
    assert raw["employee_id"].is_unique


@pytest.mark.parametrize("args", [["--rows", "0"], ["--rows", "x"], ["--seed", "-1"]])
def test_bad_generator_arguments_fail_cleanly(args, tmp_path, capsys):
    out = tmp_path / "g.csv"
    with pytest.raises(SystemExit) as exc:
        main(["generate", *args, "--out", str(out)])
    assert exc.value.code == 2
    assert not out.exists()
