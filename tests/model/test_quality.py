"""Model tests: quality against the oracle, on the project's data and on data shaped independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdown_ml.core import config
from stepdown_ml.core.schema import AGE_BANDS, FUNCTIONS, INDUSTRIES, MOTIVES, REGIONS
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.training.train import load_params, run_training

pytestmark = pytest.mark.slow  # trains models on 60k rows

ROWS = 60_000


def independent_transitions(rows: int, seed: int) -> pd.DataFrame:
    """Contract-conforming data from a different world than the project's generator.

    Logistic (not probit) link, no latent factors, other marginals, other effects and
    interactions (e.g. a region effect, a years-of-experience hump, skills counted by
    Jaccard overlap), skills drawn from a vocabulary of its own. ``true_probability`` is exact.
    """
    rng = np.random.default_rng(seed)
    n = rows
    pool = np.array([f"skill_{i:02d}" for i in range(40)], dtype=object)

    def skill_lists(k_low: int, k_high: int, focus: np.ndarray) -> list[str]:
        out = []
        for center, k in zip(focus, rng.integers(k_low, k_high, n), strict=True):
            picks = (center + rng.integers(-6, 7, k)) % len(pool)
            out.append(";".join(sorted(set(pool[picks]))))
        return out

    motive = rng.choice(MOTIVES, n, p=[0.15, 0.35, 0.25, 0.25])
    current_level = rng.integers(2, 11, n)
    target_level = current_level - np.minimum(rng.integers(0, 4, n), current_level - 1)
    focus = rng.integers(0, 40, n)
    current_skills = skill_lists(2, 9, focus)
    target_skills = skill_lists(3, 8, (focus + rng.integers(-10, 11, n)) % 40)
    cur_sets = [set(s.split(";")) - {""} for s in current_skills]
    tgt_sets = [set(s.split(";")) - {""} for s in target_skills]
    jaccard = np.array([len(a & b) / max(len(a | b), 1) for a, b in zip(cur_sets, tgt_sets, strict=True)])
    years = np.round(rng.uniform(0, 40, n), 1)
    region = rng.choice(REGIONS, n)
    fit = rng.integers(1, 6, n)
    performance = rng.integers(1, 6, n)
    promotion = rng.integers(0, 2, n)
    same = rng.integers(0, 2, n)
    unemployment = np.round(rng.uniform(2, 15, n), 1)
    necessity = motive == "necessity"
    avoidable = np.where(necessity, rng.integers(0, 2, n).astype(float), np.nan)
    current_function = rng.choice(FUNCTIONS, n)
    target_function = np.where(rng.random(n) < 0.5, current_function, rng.choice(FUNCTIONS, n))
    current_industry = rng.choice(INDUSTRIES, n)
    target_industry = rng.choice(INDUSTRIES, n)
    eta = (
        -0.6
        + 2.2 * jaccard
        - 0.35 * (current_level - target_level)
        + 0.5 * (region == "APAC")
        - 0.4 * (region == "LATAM")
        + 0.6 * np.exp(-(((years - 15) / 8) ** 2))
        + 0.25 * (fit - 3) * (1 + promotion)
        + 0.15 * (performance - 3)
        + 0.4 * same
        - 0.9 * necessity * np.nan_to_num(avoidable)
        - 0.05 * (unemployment - 6) * necessity
        - 0.5 * (current_function != target_function)
    )
    p = 1 / (1 + np.exp(-eta))
    label = (rng.random(n) < p).astype(int)
    return pd.DataFrame(
        {
            "candidate_id": [f"ind-{i}" for i in range(n)],
            "motive": motive,
            "necessity_avoidable": pd.array(avoidable, dtype="Int64"),
            "current_level": current_level,
            "target_level": target_level,
            "current_function": current_function,
            "target_function": target_function,
            "current_industry": current_industry,
            "target_industry": target_industry,
            "same_employer": same,
            "current_skills": current_skills,
            "target_skills": target_skills,
            "years_experience": years,
            "performance_rating": performance,
            "fit_score": fit,
            "promotion_path": promotion,
            "unemployment_rate": unemployment,
            "months_unemployed": np.where(necessity, rng.integers(0, 24, n), 0),
            "age_band": rng.choice(AGE_BANDS, n),
            "region": region,
            "transition_year": rng.integers(2000, 2025, n),
            "advanced_within_36m": label,
            "months_to_regain": pd.array(np.where(label == 1, rng.integers(1, 37, n), np.nan), dtype="Int64"),
            "true_probability": p,
        }
    )


@pytest.mark.parametrize(
    "make",
    [lambda: generate_transitions(ROWS, seed=31), lambda: independent_transitions(ROWS, seed=32)],
    ids=["project-generator", "independent-shape"],
)
def test_within_001_of_the_oracle(make, tmp_path, vocab):
    """Trained on 60k rows: test AUC and Brier within 0.01 of the oracle's on the same rows."""
    data = tmp_path / "data.csv"
    write_csv(make(), data)
    result = run_training(data, tmp_path / "model", load_params(config.TRAIN_PARAMS_PATH), vocab)
    gap = result.metrics["oracle_gap"]
    assert gap["roc_auc"] <= 0.01, result.metrics
    assert gap["brier"] <= 0.01, result.metrics
    assert result.metrics["test"]["roc_auc"] > result.metrics["baselines"]["motive_rate"]["roc_auc"]
