"""Fairness: the audit against a hand computation, the gate, and protected-attribute invariance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdown_ml.core import config
from stepdown_ml.core.features import ATTRIBUTE_FEATURES, FEATURE_NAMES
from stepdown_ml.core.modeldir import read_manifest
from stepdown_ml.core.recommend import REASON_CODES
from stepdown_ml.core.schema import AGE_BANDS, ContractError
from stepdown_ml.training.fairness import audit, fairness_checks, held_out_features, hold_out
from stepdown_ml.training.train import load_params

from ..conftest import candidate_record

TAKE, LATERAL, HIGHER, RECONSIDER = "take_step_down", "target_lateral", "aim_higher", "reconsider"


@pytest.fixture(scope="module")
def small():
    """Groups A (6 rows) and B (4 rows) are judged; C (2 rows) is too small."""
    frame = pd.DataFrame({"region": ["A"] * 6 + ["B"] * 4 + ["C"] * 2})
    y = [1, 1, 0, 0, 1, 0] + [1, 0, 0, 1] + [1, 0]
    p = [0.9, 0.6, 0.4, 0.2, 0.7, 0.5] + [0.8, 0.3, 0.6, 0.4] + [0.5, 0.5]
    given = [TAKE, TAKE, RECONSIDER, RECONSIDER, LATERAL, TAKE]
    given += [TAKE, RECONSIDER, TAKE, HIGHER] + [TAKE, TAKE]
    return audit(frame, np.array(y), np.array(p), np.array(given, dtype=object), ["region"], 3, 1)["region"]


def test_audit_per_group_equals_a_hand_computation(small):
    a, b, c = (small["groups"][g] for g in "ABC")
    assert (a["rows"], b["rows"], c["rows"]) == (6, 4, 2)
    assert (a["enough_rows"], b["enough_rows"], c["enough_rows"]) == (True, True, False)
    assert small["too_small"] == ["C"]
    # A: take on rows 0, 1, 5; positives 0, 1, 4; negatives 2, 3, 5.
    assert a["selection_rate"] == pytest.approx(3 / 6)
    assert a["true_positive_rate"] == pytest.approx(2 / 3)
    assert a["false_positive_rate"] == pytest.approx(1 / 3)
    assert a["mean_p_advance"] == pytest.approx(3.3 / 6)
    assert a["observed_rate"] == pytest.approx(0.5)
    assert a["calibration_gap"] == pytest.approx(0.05)
    assert a["roc_auc"] == pytest.approx(1.0)  # every positive above every negative
    # B: take on rows 0, 2; positives 0, 3; AUC: 3 of the 4 (positive, negative) pairs in order.
    assert b["selection_rate"] == pytest.approx(0.5)
    assert b["true_positive_rate"] == pytest.approx(0.5)
    assert b["false_positive_rate"] == pytest.approx(0.5)
    assert b["mean_p_advance"] == pytest.approx(2.1 / 4)
    assert b["calibration_gap"] == pytest.approx(0.025)
    assert b["roc_auc"] == pytest.approx(0.75)
    rates_a = {TAKE: 0.5, RECONSIDER: 2 / 6, LATERAL: 1 / 6, HIGHER: 0.0}
    assert a["recommendation_rates"] == pytest.approx(rates_a)
    rates_b = {TAKE: 0.5, RECONSIDER: 0.25, LATERAL: 0.0, HIGHER: 0.25}
    assert b["recommendation_rates"] == pytest.approx(rates_b)


def test_impact_ratios_differences_and_flags_use_only_the_judged_groups(small):
    a, b, c = (small["groups"][g] for g in "ABC")
    assert a["impact_ratio"] == pytest.approx({TAKE: 1.0, RECONSIDER: 1.0, LATERAL: 1.0, HIGHER: 0.0})
    assert b["impact_ratio"] == pytest.approx({TAKE: 1.0, RECONSIDER: 0.75, LATERAL: 0.0, HIGHER: 1.0})
    assert "impact_ratio" not in c
    assert sorted(small["four_fifths_flags"]) == [
        "A: aim_higher 0.00",
        "B: reconsider 0.75",
        "B: target_lateral 0.00",
    ]
    differences, ratios = small["differences"], small["ratios"]
    assert differences["selection_rate"] == pytest.approx(0.0)
    assert differences["true_positive_rate"] == pytest.approx(1 / 6)
    assert differences["false_positive_rate"] == pytest.approx(1 / 6)
    assert differences["mean_p_advance"] == pytest.approx(0.025)
    assert differences["roc_auc"] == pytest.approx(0.25)
    assert ratios["true_positive_rate"] == pytest.approx(0.75)
    assert ratios["roc_auc"] == pytest.approx(0.75)
    # C's gap (0.0) is not judged; A's is the largest of the judged groups.
    assert small["max_calibration_gap"] == pytest.approx(0.05)
    # Beyond noise: |gap| - 1.96 * sqrt(rate * (1 - rate) / rows), rate 0.5 in both groups.
    assert a["calibration_gap_se"] == pytest.approx(np.sqrt(0.25 / 6))
    assert b["calibration_gap_se"] == pytest.approx(np.sqrt(0.25 / 4))
    beyond_a, beyond_b = 0.05 - 1.96 * np.sqrt(0.25 / 6), 0.025 - 1.96 * np.sqrt(0.25 / 4)
    assert small["max_calibration_gap_beyond_noise"] == pytest.approx(max(beyond_a, beyond_b))
    assert small["worst_calibrated_group"] == "A"
    assert "calibration_gap_se" not in c


def _report(gap: float, reads_age: bool) -> dict:
    return {
        "attribute_inputs": {"age_band": ["age_band_index"] if reads_age else [], "region": ["region_EU"]},
        "attributes": {
            "age_band": {"max_calibration_gap_beyond_noise": gap, "worst_calibrated_group": "55-64"}
        },
    }


@pytest.mark.parametrize(
    ("gap", "reads_age", "failed"),
    [
        (0.01, False, []),
        (0.031, False, ["group_calibration"]),
        (0.01, True, ["no_protected_inputs"]),
        (0.05, True, ["no_protected_inputs", "group_calibration"]),
    ],
)
def test_fairness_gate(gap, reads_age, failed):
    checks = fairness_checks(_report(gap, reads_age), 0.03, ["age_band"])
    assert [name for name, check in checks.items() if not check["passed"]] == failed


def test_region_is_audited_but_not_protected_by_default():
    params = load_params(config.TRAIN_PARAMS_PATH)["fairness"]
    assert params["protected"] == ["age_band"]
    assert {"age_band", "region"} <= set(params["audit"])
    # A model reading region passes: region is not listed as protected.
    assert fairness_checks(_report(0.0, False), 0.03, ["age_band"])["no_protected_inputs"]["passed"]


def test_held_out_features_are_constant_and_unknown_attributes_are_refused():
    columns = held_out_features(["age_band"])
    assert [FEATURE_NAMES[c] for c in columns] == list(ATTRIBUTE_FEATURES["age_band"])
    x = np.arange(2 * len(FEATURE_NAMES), dtype=np.float32).reshape(2, -1)
    held = hold_out(x, columns)
    assert (held[:, columns] == 0).all()
    assert np.array_equal(np.delete(held, columns, axis=1), np.delete(x, columns, axis=1))
    with pytest.raises(ContractError, match=r"fairness\.protected: motive cannot be held out"):
        held_out_features(["motive"])


def test_default_model_holds_the_audit_and_reads_no_protected_attribute():
    manifest = read_manifest(config.PACKAGED_MODEL_DIR)
    fairness = manifest["metrics"]["fairness"]
    assert fairness["protected"] == ["age_band"]
    assert fairness["attribute_inputs"]["age_band"] == []
    assert set(fairness["attributes"]) == {"age_band", "region"}
    assert fairness["attributes"]["age_band"]["max_calibration_gap"] <= 0.03
    card = (config.PACKAGED_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert "## Fairness" in card and "must not be used for" in card
    words = {word for pair in REASON_CODES.values() for code in pair for word in code.split("_")}
    assert not words & {"age", "career", "late", "old", "older", "young", "younger"}


def test_changing_only_the_age_band_changes_nothing_in_the_default_model(served_model, candidates):
    """Every age band, on 6,000 generated candidates, batch and predict() alike: the same bits."""
    baseline, _ = served_model.score_frame(candidates)
    for band in AGE_BANDS:
        scores, problems = served_model.score_frame(candidates.assign(age_band=band))
        assert problems.empty
        pd.testing.assert_frame_equal(scores, baseline)
    for i in range(0, 6000, 300):
        record = {k: (None if pd.isna(v) else v) for k, v in candidates.iloc[i].to_dict().items()}
        answers = [served_model.score_record(record | {"age_band": band}) for band in AGE_BANDS]
        assert all(answer == answers[0] for answer in answers)
    one = candidate_record()
    assert len({str(served_model.score_record(one | {"age_band": band})) for band in AGE_BANDS}) == 1
