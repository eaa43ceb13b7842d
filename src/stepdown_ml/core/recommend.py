"""Recommendation rules, reasons and ranking: the one place where they are defined.

Rules, in order (docs/DOMAIN.md; documented for users in docs/RECOMMENDATIONS.md):

1. ``target_lateral``: the move goes down at least one level, and either it changes
   industry but not function (the seed: "target a lateral position, not a lower one"),
   or the person already covers at least ``LATERAL_COVERAGE`` of the target's skills
   (the skills would carry them in at the same level);
2. ``aim_higher``: a change of function that goes down ``AIM_HIGHER_MIN_LEVELS`` or more
   levels while the person covers at least ``AIM_HIGHER_COVERAGE`` of the target's skills
   (the transferable skills justify a smaller step down);
3. otherwise ``take_step_down`` when ``p_advance >= threshold`` (chosen on validation data,
   stored in the model's manifest), else ``reconsider``.

All functions take the feature matrix, so a single record and a batch go through the
same code.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from stepdown_ml.core.arrow import from_numpy, strings, to_codes, utf8_strings
from stepdown_ml.core.features import FEATURE_NAMES, GROUP_NAMES
from stepdown_ml.core.schema import RECOMMENDATIONS

LATERAL_COVERAGE = 0.8
AIM_HIGHER_COVERAGE = 0.5
AIM_HIGHER_MIN_LEVELS = 2
MAX_REASONS = 3
# Contributions smaller than this (log-odds) are not worth naming.
MIN_REASON_WEIGHT = 0.05

# Per feature group: the code when it lowers p_advance, and when it raises it.
REASON_CODES: dict[str, tuple[str, str]] = {
    "motive": ("motive_rarely_pays_off", "motive_often_pays_off"),
    "necessity_avoidable": ("avoidable_necessity", "unavoidable_necessity"),
    "labour_market": ("weak_labour_market", "favourable_labour_market"),
    "step_depth": ("deep_step_down", "shallow_step_down"),
    "transferable_skills": ("low_skill_coverage", "strong_transferable_skills"),
    "change_type": ("profession_change", "experience_carries_over"),
    "internal_move": ("external_move", "internal_move"),
    "promotion_path": ("no_promotion_path", "defined_promotion_path"),
    "fit": ("weak_fit", "strong_fit"),
    "performance": ("weak_performance", "strong_performance"),
    "experience": ("experience_weighs_less", "experience_helps"),
    "region": ("regional_headwinds", "regional_tailwinds"),
}
NO_DOMINANT_FACTOR = "no_dominant_factor"
# Group g's code is at 2g when it lowers p_advance, 2g + 1 when it raises it.
_CODES = tuple(REASON_CODES[g][s] for g in GROUP_NAMES for s in (0, 1))
# Every code a ``reasons`` value can hold.
REASON_CODE_NAMES: tuple[str, ...] = (*_CODES, NO_DOMINANT_FACTOR)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
RECOMMENDATION_NAMES = np.array(RECOMMENDATIONS, dtype=object)
TAKE_STEP_DOWN, TARGET_LATERAL, AIM_HIGHER, RECONSIDER = RECOMMENDATIONS
# Their codes: positions in RECOMMENDATIONS.
_TAKE, _LATERAL, _HIGHER, _RECONSIDER = range(len(RECOMMENDATIONS))


def recommend(features: np.ndarray, p_advance: np.ndarray, threshold: float) -> np.ndarray:
    """The recommendation of each row (object array of strings)."""
    return RECOMMENDATION_NAMES[recommend_codes(features, p_advance, threshold)]


def recommend_codes(features: np.ndarray, p_advance: np.ndarray, threshold: float) -> np.ndarray:
    """The recommendation of each row as an index into :data:`RECOMMENDATION_NAMES`."""
    down = features[:, _COL["levels_down"]]
    function_change = features[:, _COL["function_change"]] > 0
    industry_only = features[:, _COL["industry_only_change"]] > 0
    coverage = features[:, _COL["transferable_skill_coverage"]]
    lateral = (down >= 1) & (industry_only | (coverage >= LATERAL_COVERAGE))
    higher = function_change & (down >= AIM_HIGHER_MIN_LEVELS) & (coverage >= AIM_HIGHER_COVERAGE)
    codes = np.where(p_advance >= threshold, _TAKE, _RECONSIDER)
    return np.where(lateral, _LATERAL, np.where(higher, _HIGHER, codes)).astype(np.int8)


# Confidence bands: |p_advance - threshold| below CLOSE_CALL_MARGIN is a close call (a human
# should look before acting on it), at least CLEAR_MARGIN is clear, in between moderate.
CLOSE_CALL_MARGIN = 0.05
CLEAR_MARGIN = 0.15
CONFIDENCE_NAMES = np.array(["close_call", "moderate", "clear"], dtype=object)
_MARGINS = np.array([CLOSE_CALL_MARGIN, CLEAR_MARGIN])


def confidence_codes(p_advance: np.ndarray, threshold: float) -> np.ndarray:
    """Each row's confidence band as an index into :data:`CONFIDENCE_NAMES`."""
    margin = np.abs(np.asarray(p_advance, dtype=np.float64) - threshold)
    return np.searchsorted(_MARGINS, margin, side="right").astype(np.int8)


def confidence(p_advance: np.ndarray, threshold: float) -> np.ndarray:
    """Each row's confidence band (object array of strings)."""
    return CONFIDENCE_NAMES[confidence_codes(p_advance, threshold)]


def confidence_one(p_advance: float, threshold: float) -> str:
    """:func:`confidence` for one row, in plain Python (the ``predict()`` hot path)."""
    margin = abs(p_advance - threshold)
    return "close_call" if margin < CLOSE_CALL_MARGIN else "moderate" if margin < CLEAR_MARGIN else "clear"


def recommend_one(features: Sequence[float], p_advance: float, threshold: float) -> str:
    """:func:`recommend` for one row, in plain Python (the ``predict()`` hot path)."""
    down = features[_COL["levels_down"]]
    coverage = features[_COL["transferable_skill_coverage"]]
    if down >= 1 and (features[_COL["industry_only_change"]] > 0 or coverage >= LATERAL_COVERAGE):
        return TARGET_LATERAL
    changes_function = features[_COL["function_change"]] > 0
    if changes_function and down >= AIM_HIGHER_MIN_LEVELS and coverage >= AIM_HIGHER_COVERAGE:
        return AIM_HIGHER
    return TAKE_STEP_DOWN if p_advance >= threshold else RECONSIDER


def reasons_one(contributions: Sequence[float]) -> str:
    """:func:`reasons` for one row, in plain Python (the ``predict()`` hot path)."""
    # Same order as the batch path: strongest first, ties by group order (a stable sort;
    # reverse=True keeps ties in their original order).
    weights = list(map(abs, contributions))
    names = []
    for g in sorted(range(len(weights)), key=weights.__getitem__, reverse=True)[:MAX_REASONS]:
        if weights[g] < MIN_REASON_WEIGHT:
            break  # strongest first: the rest are weaker still
        names.append(_CODES[g * 2 + (contributions[g] > 0)])
    return ";".join(names) if names else NO_DOMINANT_FACTOR


def reasons(contributions: np.ndarray) -> np.ndarray:
    """The top factors behind each row's score, ``;``-separated codes, strongest first.

    ``contributions`` is (rows, groups) in log-odds: each reason group's share of the score
    (its exact Shapley values for the additive default model; docs/RECOMMENDATIONS.md).
    """
    index, texts = reason_codes(contributions)
    return texts[index]


def reason_codes(contributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`reasons` as ``(index, texts)``: row i's reasons are ``texts[index[i]]``.

    ``texts`` holds each distinct text of these rows once.
    """
    index, keys = _distinct(reason_keys(contributions))
    return index, np.array([_reason_text(key) for key in keys.tolist()], dtype=object)


def reason_array(contributions: np.ndarray) -> pa.DictionaryArray:
    """:func:`reasons` as Arrow text, dictionary-encoded (the batch scorer's column)."""
    index, keys = _distinct(reason_keys(contributions))
    dictionary = utf8_strings([_reason_bytes(key) for key in keys.tolist()])
    return pa.DictionaryArray.from_arrays(from_numpy(index.astype(np.int32)), dictionary)


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(index, distinct)``: the distinct keys, ascending, and each key's position among them."""
    seen = np.zeros(_N_KEYS, dtype=bool)
    seen[keys] = True
    distinct = np.flatnonzero(seen)
    position = np.zeros(_N_KEYS, dtype=np.intp)
    position[distinct] = np.arange(len(distinct))
    return position[keys], distinct


def reason_keys(contributions: np.ndarray) -> np.ndarray:
    """Each row's reasons as one integer (digits of :data:`_BASE`, strongest first).

    Contributions are compared as float32, the ONNX output's type (and reasons_one's
    values, which come from that output).
    """
    groups = contributions.shape[1]
    if groups != len(GROUP_NAMES):
        raise ValueError(f"expected contributions of {len(GROUP_NAMES)} groups, got {groups}")
    # Group by group (one contiguous row each), over all rows at once.
    by_group = np.ascontiguousarray(np.asarray(contributions, dtype=np.float32).T)
    n = by_group.shape[1]
    # One sortable integer per (row, group): |contribution| (the bits of a non-negative
    # float32 order as its value), then the group (earlier first on ties), then the sign.
    # The largest keys pick the strongest groups in exactly reasons_one's order: each
    # group's key is inserted into every row's top keys, largest first (keys are distinct).
    top = np.full((MAX_REASONS, n), -1, dtype=np.int64)
    key, larger = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for group, values in enumerate(by_group):
        np.left_shift(np.abs(values).view(np.int32), 5, out=key, dtype=np.int64)
        key |= (groups - 1 - group) << 1
        key |= values > 0
        for kept in top:
            np.maximum(kept, key, out=larger)
            np.minimum(kept, key, out=key)  # what goes on down the list
            kept[...] = larger
    group_of = groups - 1 - ((top >> 1) & 15)
    # Each code shifted by one; 0 marks "nothing to name".
    code = np.where((top >> 5) >= _MIN_WEIGHT_BITS, group_of * 2 + (top & 1) + 1, 0)
    return (code * (_BASE ** np.arange(MAX_REASONS))[:, None]).sum(axis=0)


# MIN_REASON_WEIGHT as float32 bits: what a float32 weight is compared with.
_MIN_WEIGHT_BITS = int(np.array([MIN_REASON_WEIGHT], dtype=np.float32).view(np.int32)[0])
assert len(GROUP_NAMES) <= 16, "four bits hold the group in reason_keys' sort key"
assert len(GROUP_NAMES) >= MAX_REASONS
# A key holds MAX_REASONS digits of this base, strongest first: 0 for none, else a code + 1.
_BASE = len(_CODES) + 1
_N_KEYS = _BASE**MAX_REASONS


@functools.cache  # at most _N_KEYS keys; blocks repeat them
def _reason_text(key: int) -> str:
    names = []
    for _ in range(MAX_REASONS):
        key, code = divmod(key, _BASE)
        if code:
            names.append(_CODES[code - 1])
    return ";".join(names) if names else NO_DOMINANT_FACTOR


@functools.cache
def _reason_bytes(key: int) -> bytes:
    return _reason_text(key).encode()


def rank_within(person_ids: Any, p_advance: np.ndarray) -> np.ndarray:
    """1-based rank of each row within its person by ``p_advance`` (ties: input order).

    ``person_ids`` is any sequence of ids (Arrow array, numpy array, pandas Series).
    """
    if isinstance(person_ids, pa.ChunkedArray):
        person_ids = person_ids.combine_chunks()
    if not isinstance(person_ids, pa.Array):
        ids = np.asarray(person_ids, dtype=object).tolist()
        person_ids = strings([i if i is None or isinstance(i, str) else str(i) for i in ids])
    group = to_codes(person_ids.dictionary_encode().indices)
    n = len(group)
    # By person, then p_advance descending, then input position (lexsort: last key first).
    order = np.lexsort((np.arange(n), -np.asarray(p_advance, dtype=np.float64), group))
    sorted_group = group[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_group[1:] != sorted_group[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n) - group_start + 1
    return ranks
