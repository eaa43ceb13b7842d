"""The fairness gate refuses a model trained on deliberately biased data."""

from __future__ import annotations

import numpy as np
import pytest

from stepdown_ml.core import config
from stepdown_ml.core.schema import LABEL
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.mlops.tracking import quality_checks
from stepdown_ml.training.train import load_params, run_training

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def biased_csv(tmp_path_factory):
    """Generated rows where 80 % of the advancements of people aged 35 to 44 are erased: an
    outcome that depends on age, which the generator never does.

    Years of experience stand in for age in part (the generator derives age from them), so a
    model blind to age still learns some of the bias; the rest shows as miscalibration within
    the age bands, well beyond sampling noise.
    """
    frame = generate_transitions(20_000, seed=303)
    rng = np.random.default_rng(303)
    band = (frame["age_band"] == "35-44").to_numpy()
    erased = band & (frame[LABEL].to_numpy() == 1) & (rng.random(len(frame)) < 0.8)
    frame.loc[erased, LABEL] = 0
    path = tmp_path_factory.mktemp("biased") / "biased.csv"
    write_csv(frame.drop(columns=["true_probability"]), path)
    return path


def test_a_model_blind_to_age_on_age_biased_data_is_refused(biased_csv, tmp_path, vocab):
    params = load_params(config.TRAIN_PARAMS_PATH)
    result = run_training(biased_csv, tmp_path / "m", params, vocab)
    checks = quality_checks(result.metrics, None, params["gates"], params["fairness"]["protected"])
    assert checks["no_protected_inputs"]["passed"]
    assert not checks["group_calibration"]["passed"]
    assert checks["group_calibration"]["value"] > params["gates"]["max_group_calibration_gap"]
    assert checks["group_calibration"]["group"].startswith("age_band=")
    assert "Largest calibration gap" in (tmp_path / "m" / "MODEL_CARD.md").read_text()


def test_a_model_that_reads_age_is_refused(biased_csv, tmp_path, vocab):
    params = load_params(config.TRAIN_PARAMS_PATH)
    params["fairness"]["protected"] = []  # age allowed in: the model learns the bias
    result = run_training(biased_csv, tmp_path / "m", params, vocab)
    assert result.metrics["fairness"]["attribute_inputs"]["age_band"] == ["age_band_index"]
    checks = quality_checks(result.metrics, None, load_params()["gates"], ["age_band"])
    assert not checks["no_protected_inputs"]["passed"]
