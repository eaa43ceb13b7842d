"""Model tests: Platt calibration when validation ECE is above the limit."""

from __future__ import annotations

import numpy as np
import pytest

from stepdown_ml.core import config
from stepdown_ml.core.modeldir import read_manifest
from stepdown_ml.serving import Model
from stepdown_ml.training.train import IDENTITY_CALIBRATION, calibrate, load_params, run_training, uncalibrate

pytestmark = pytest.mark.slow  # trains models


@pytest.fixture(scope="module")
def forced(training_csv, vocab, tmp_path_factory):
    params = load_params(config.TRAIN_PARAMS_PATH)
    params["evaluation"]["max_ece"] = -1.0  # any ECE is "too high": calibration must run
    return run_training(training_csv, tmp_path_factory.mktemp("cal") / "m", params, vocab)


def test_calibration_runs_and_is_stored(forced):
    assert forced.metrics["calibrated"] is True
    assert forced.manifest["calibration"] != IDENTITY_CALIBRATION


def test_a_well_calibrated_model_is_left_alone():
    """The default model's validation ECE is under the limit: no calibration stored."""
    manifest = read_manifest(config.PACKAGED_MODEL_DIR)
    limit = manifest["params"]["evaluation"]["max_ece"]
    assert manifest["metrics"]["validation_ece_before_calibration"] <= limit
    assert manifest["calibration"] == IDENTITY_CALIBRATION


def test_served_probabilities_are_the_calibrated_ones(forced):
    """Serving applies the stored calibration to the model's log-odds."""
    rows = forced.splits.test.head(300)
    model = Model(forced.model_dir)
    p, _ = model.infer(model.features.transform(rows))
    raw = forced.pipeline.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(p, calibrate(raw, forced.manifest["calibration"]), atol=1e-5)
    one = model.score_record(rows.iloc[0].to_dict())["p_advance"]
    assert one == pytest.approx(p[0], abs=1e-12)


def test_uncalibrate_inverts_calibrate():
    calibration = {"slope": 1.3, "intercept": -0.2}
    for p in (0.1, 0.37, 0.8):
        assert calibrate(np.array([uncalibrate(p, calibration)]), calibration)[0] == pytest.approx(p)
