"""The attacker's view of a release, for the privacy tests (docs/PRIVACY.md).

The attacker knows the published hierarchies and the chosen levels (they are in the
report), so they can put every released row and every person they know into a group.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from stepdown_ml.core.features import skill_overlap
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.datasets.generalize import QUASI_IDENTIFIERS, TrueValues, qi_codes, true_values


def values_of(frame: pd.DataFrame) -> TrueValues:
    """Quasi-identifier values of Transition-layout rows, text (as read) or typed."""
    typed = frame.copy()
    for column in ("current_level", "target_level", "transition_year"):
        typed[column] = pd.to_numeric(typed[column]).astype(np.int64)
    typed["years_experience"] = pd.to_numeric(typed["years_experience"])
    typed["salary_change_pct"] = pd.to_numeric(typed["salary_change_pct"].replace("", np.nan))
    overlap = skill_overlap(
        typed["current_skills"].fillna(""), typed["target_skills"].fillna(""), load_vocabulary()
    )
    return true_values(typed, overlap)


def qi_frame(values: TrueValues, levels: Mapping[str, int]) -> pd.DataFrame:
    """One column per quasi-identifier: its group code at the chosen level."""
    return pd.DataFrame({name: qi_codes(values, name, levels[name]) for name in QUASI_IDENTIFIERS})


def release_groups(out: pd.DataFrame, levels: Mapping[str, int]) -> np.ndarray:
    """The group number of every released row, as the attacker sees it."""
    frame = qi_frame(values_of(out), levels)
    return frame.groupby(list(QUASI_IDENTIFIERS), sort=False).ngroup().to_numpy()
