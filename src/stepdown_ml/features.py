"""Featurization: motive, transferable skills, the shape of the move. One code path.

Training, batch scoring and ``predict()`` all call :class:`FeatureSpace`. A frame goes
through :meth:`FeatureSpace.transform` (vectorized: pyarrow for the skill lists, bitsets
for the vocabulary, numpy for the rest); a single validated record goes through
:meth:`FeatureSpace.transform_record` (plain Python sets, no DataFrame). Both produce the
same float32 numbers for the same row, which the test suite checks.

Every feature is cast to float32 here, before training, so that scikit-learn (float64
internally) and ONNX Runtime (float32) compare exactly the same values against the same
thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stepdown_ml.contract import AGE_BANDS, FUNCTIONS, INDUSTRIES, MOTIVES, REGIONS, SKILL_SEPARATOR
from stepdown_ml.skills import SkillVocabulary

SKILL_FEATURES = (
    "n_current_skills",
    "n_target_skills",
    "shared_skills",
    "transferable_skill_coverage",
    "skill_jaccard",
    "missing_target_skills",
    "shared_general_skills",
    "shared_specialized_skills",
    "general_skill_coverage",
    "specialized_skill_coverage",
)
MOVE_FEATURES = (
    "current_level",
    "target_level",
    "levels_down",
    "function_change",
    "industry_change",
    "industry_only_change",
    "same_employer",
    "promotion_path",
)
PERSON_FEATURES = (
    "necessity_avoidable",
    "years_experience",
    "performance_rating",
    "fit_score",
    "unemployment_rate",
    "months_unemployed",
    "age_band_index",
)
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"motive_{m}" for m in MOTIVES)
    + MOVE_FEATURES
    + SKILL_FEATURES
    + PERSON_FEATURES
    + tuple(f"region_{r}" for r in REGIONS)
    + tuple(f"target_function_{f}" for f in FUNCTIONS)
    + tuple(f"target_industry_{i}" for i in INDUSTRIES)
)
N_FEATURES = len(FEATURE_NAMES)
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}

# Feature groups: the units that reasons and permutation importance speak of.
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "motive": tuple(f"motive_{m}" for m in MOTIVES),
    "necessity_avoidable": ("necessity_avoidable",),
    "labour_market": ("unemployment_rate", "months_unemployed"),
    "step_depth": ("current_level", "target_level", "levels_down"),
    "transferable_skills": SKILL_FEATURES,
    "change_type": ("function_change", "industry_change", "industry_only_change")
    + tuple(f"target_function_{f}" for f in FUNCTIONS)
    + tuple(f"target_industry_{i}" for i in INDUSTRIES),
    "internal_move": ("same_employer",),
    "promotion_path": ("promotion_path",),
    "fit": ("fit_score",),
    "performance": ("performance_rating",),
    "experience": ("years_experience", "age_band_index"),
    "region": tuple(f"region_{r}" for r in REGIONS),
}
GROUP_NAMES = tuple(FEATURE_GROUPS)
FEATURE_GROUP_INDEX = np.array(
    [next(g for g, members in enumerate(FEATURE_GROUPS.values()) if n in members) for n in FEATURE_NAMES]
)

# Features whose direction the domain fixes: +1 never lowers p_advance, -1 never raises it.
MONOTONIC = {
    "transferable_skill_coverage": 1,
    "specialized_skill_coverage": 1,
    "general_skill_coverage": 1,
    "levels_down": -1,
    "performance_rating": 1,
    "fit_score": 1,
    "promotion_path": 1,
    "same_employer": 1,
    "necessity_avoidable": -1,
    "months_unemployed": -1,
}

_AGE_INDEX = {band: i for i, band in enumerate(AGE_BANDS)}
_WORD_BITS = 64


def arrow_text(column: Any) -> pa.Array:
    """A text column as one Arrow string array (zero-copy when it is Arrow-backed)."""
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        array = column
    elif isinstance(column, pd.Series) and not pd.api.types.is_object_dtype(column.dtype):
        array = pa.array(column, from_pandas=True)
    else:
        objects = pd.Series(column, dtype=object).to_numpy(dtype=object)
        array = pa.array(objects, type=pa.string(), from_pandas=True)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array.cast(pa.string()) if array.type != pa.string() else array


def _split_tokens(skills: Any) -> pa.ListArray:
    return pc.split_pattern(pc.utf8_trim_whitespace(arrow_text(skills)), SKILL_SEPARATOR)


class _SkillIndex:
    """Bit positions of the vocabulary's tokens: general tokens first, then specialized."""

    def __init__(self, vocab: SkillVocabulary) -> None:
        specialized = [t for f in FUNCTIONS for t in vocab.specialized[f]]
        self.tokens = list(vocab.general) + specialized
        self.n_general = len(vocab.general)
        self.general = vocab.general_set
        self.specialized = frozenset(specialized)
        self.value_set = pa.array(self.tokens, type=pa.string())
        self.words = (len(self.tokens) + _WORD_BITS - 1) // _WORD_BITS
        general_bits = np.zeros(self.words * _WORD_BITS, dtype=bool)
        general_bits[: self.n_general] = True
        specialized_bits = np.zeros_like(general_bits)
        specialized_bits[self.n_general : len(self.tokens)] = True
        self.general_mask = _pack(general_bits)
        self.specialized_mask = _pack(specialized_bits)


def _pack(bits: np.ndarray) -> np.ndarray:
    weights = np.left_shift(np.uint64(1), np.arange(_WORD_BITS, dtype=np.uint64))
    return (bits.reshape(-1, _WORD_BITS).astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _bitsets(lists: pa.ListArray, index: _SkillIndex, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known tokens as (n, words) bitsets; unknown tokens as (row, token) pairs."""
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    nonblank = _mask(pc.not_equal(flat, ""))
    found = pc.index_in(flat, value_set=index.value_set)
    known = _mask(pc.is_valid(found)) & nonblank
    rows = parents[known]
    code = found.filter(pa.array(known)).to_numpy()
    bits = np.zeros((n, index.words), dtype=np.uint64)
    if len(rows):
        # Parents ascend, so each row's tokens are one run: OR them together with reduceat.
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        words = code // _WORD_BITS
        bit = np.left_shift(np.uint64(1), (code % _WORD_BITS).astype(np.uint64))
        zero = np.uint64(0)
        for word in range(index.words):
            bits[rows[starts], word] = np.bitwise_or.reduceat(np.where(words == word, bit, zero), starts)
    unknown = ~known & nonblank
    unknown_tokens = flat.filter(pa.array(unknown)).to_numpy(zero_copy_only=False)
    return bits, parents[unknown], unknown_tokens


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _unique_pairs(rows: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    return np.unique(rows.astype(np.int64) * max(n_codes, 1) + codes)


def skill_overlap(current: Any, target: Any, vocab: SkillVocabulary | _SkillIndex) -> dict[str, np.ndarray]:
    """Per-row overlap between two columns of ``;``-separated skill lists.

    Tokens are deduplicated within a row. Tokens outside the vocabulary count as skills
    and match only themselves; they are neither general nor specialized.

    Returns:
        Arrays (one value per row): ``n_current``, ``n_target``, ``shared``,
        ``shared_general``, ``shared_specialized``, ``target_general``, ``target_specialized``.
    """
    index = vocab if isinstance(vocab, _SkillIndex) else _SkillIndex(vocab)
    current_lists, target_lists = _split_tokens(current), _split_tokens(target)
    n = len(current_lists)
    cur_bits, cur_rows, cur_unknown = _bitsets(current_lists, index, n)
    tgt_bits, tgt_rows, tgt_unknown = _bitsets(target_lists, index, n)
    both = cur_bits & tgt_bits
    count = np.bitwise_count
    general, specialized = index.general_mask, index.specialized_mask
    codes, _ = pd.factorize(np.concatenate([cur_unknown, tgt_unknown]))
    n_codes = int(codes.max()) + 1 if len(codes) else 1
    cur_keys = _unique_pairs(cur_rows, codes[: len(cur_unknown)], n_codes)
    tgt_keys = _unique_pairs(tgt_rows, codes[len(cur_unknown) :], n_codes)
    shared_keys = np.intersect1d(cur_keys, tgt_keys, assume_unique=True)
    return {
        "n_current": count(cur_bits).sum(axis=1) + np.bincount(cur_keys // n_codes, minlength=n),
        "n_target": count(tgt_bits).sum(axis=1) + np.bincount(tgt_keys // n_codes, minlength=n),
        "shared": count(both).sum(axis=1) + np.bincount(shared_keys // n_codes, minlength=n),
        "shared_general": count(both & general).sum(axis=1),
        "shared_specialized": count(both & specialized).sum(axis=1),
        "target_general": count(tgt_bits & general).sum(axis=1),
        "target_specialized": count(tgt_bits & specialized).sum(axis=1),
    }


def _ratio(numerator: Any, denominator: Any) -> Any:
    """numerator / denominator, 0 where the denominator is 0."""
    if isinstance(denominator, np.ndarray):
        out = np.zeros(denominator.shape, dtype=np.float64)
        np.divide(numerator, denominator, out=out, where=denominator > 0)
        return out
    return numerator / denominator if denominator > 0 else 0.0


def _skill_features(o: Mapping[str, Any]) -> dict[str, Any]:
    """The skill features from overlap counts (arrays or scalars alike)."""
    union = o["n_current"] + o["n_target"] - o["shared"]
    return {
        "n_current_skills": o["n_current"],
        "n_target_skills": o["n_target"],
        "shared_skills": o["shared"],
        "transferable_skill_coverage": _ratio(o["shared"], o["n_target"]),
        "skill_jaccard": _ratio(o["shared"], union),
        "missing_target_skills": o["n_target"] - o["shared"],
        "shared_general_skills": o["shared_general"],
        "shared_specialized_skills": o["shared_specialized"],
        "general_skill_coverage": _ratio(o["shared_general"], o["target_general"]),
        "specialized_skill_coverage": _ratio(o["shared_specialized"], o["target_specialized"]),
    }


def _record_overlap(current: str | None, target: str | None, index: _SkillIndex) -> dict[str, int]:
    cur = set((current or "").strip().split(SKILL_SEPARATOR)) - {""}
    tgt = set((target or "").strip().split(SKILL_SEPARATOR)) - {""}
    shared = cur & tgt
    return {
        "n_current": len(cur),
        "n_target": len(tgt),
        "shared": len(shared),
        "shared_general": len(shared & index.general),
        "shared_specialized": len(shared & index.specialized),
        "target_general": len(tgt & index.general),
        "target_specialized": len(tgt & index.specialized),
    }


def _move_and_person_features(
    get: Any, function_change: Any, industry_change: Any, avoidable: Any, age_band_index: Any, overlap: Any
) -> dict[str, Any]:
    """The non-categorical features, from arrays (a block) or scalars (one record) alike."""
    current, target = get("current_level"), get("target_level")
    return {
        "current_level": current,
        "target_level": target,
        "levels_down": current - target,
        "function_change": function_change,
        "industry_change": industry_change,
        "industry_only_change": industry_change * (1 - function_change),
        "same_employer": get("same_employer"),
        "promotion_path": get("promotion_path"),
        "necessity_avoidable": avoidable,
        "years_experience": get("years_experience"),
        "performance_rating": get("performance_rating"),
        "fit_score": get("fit_score"),
        "unemployment_rate": get("unemployment_rate"),
        "months_unemployed": get("months_unemployed"),
        "age_band_index": age_band_index,
        **_skill_features(overlap),
    }


class FeatureSpace:
    """Turns validated candidate values into the model's float32 feature matrix."""

    names = FEATURE_NAMES

    def __init__(self, vocab: SkillVocabulary) -> None:
        self.vocab = vocab
        self._index = _SkillIndex(vocab)

    def transform(self, values: pd.DataFrame) -> np.ndarray:
        """Features of every row of a validated frame, shape (n, N_FEATURES), float32."""
        n = len(values)
        # float64 results assigned into float32 round exactly as transform_record's cast.
        out = np.zeros((n, N_FEATURES), dtype=np.float32)
        rows = np.arange(n)

        def codes(column: str, levels: tuple[str, ...]) -> np.ndarray:
            array = pa.array(values[column], from_pandas=True)
            if isinstance(array, pa.ChunkedArray):
                array = array.combine_chunks()
            if pa.types.is_dictionary(array.type) and array.dictionary.to_pylist() == list(levels):
                # Validated enums arrive encoded on the contract's order: the codes are the indices.
                return array.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            found = pc.index_in(arrow_text(array), value_set=pa.array(levels, pa.string()))
            return found.fill_null(-1).to_numpy(zero_copy_only=False)

        def num(name: str) -> np.ndarray:
            return values[name].to_numpy(dtype=np.float64, na_value=np.nan)

        for prefix, column, levels in (
            ("motive", "motive", MOTIVES),
            ("region", "region", REGIONS),
            ("target_function", "target_function", FUNCTIONS),
            ("target_industry", "target_industry", INDUSTRIES),
        ):
            out[rows, _INDEX[f"{prefix}_{levels[0]}"] + codes(column, levels)] = 1.0
        computed = _move_and_person_features(
            num,
            function_change=codes("current_function", FUNCTIONS) != codes("target_function", FUNCTIONS),
            industry_change=codes("current_industry", INDUSTRIES) != codes("target_industry", INDUSTRIES),
            avoidable=np.nan_to_num(num("necessity_avoidable")),
            age_band_index=codes("age_band", AGE_BANDS),
            overlap=skill_overlap(values["current_skills"], values["target_skills"], self._index),
        )
        for name, data in computed.items():
            out[:, _INDEX[name]] = data
        return out

    def transform_record(self, values: Mapping[str, Any]) -> np.ndarray:
        """Features of one validated record, shape (1, N_FEATURES), float32."""
        row = [0.0] * N_FEATURES
        index = _INDEX
        row[index["motive_" + values["motive"]]] = 1.0
        row[index["region_" + values["region"]]] = 1.0
        row[index["target_function_" + values["target_function"]]] = 1.0
        row[index["target_industry_" + values["target_industry"]]] = 1.0
        avoidable = values.get("necessity_avoidable")
        computed = _move_and_person_features(
            values.__getitem__,
            function_change=values["current_function"] != values["target_function"],
            industry_change=values["current_industry"] != values["target_industry"],
            avoidable=0.0 if avoidable is None else avoidable,
            age_band_index=_AGE_INDEX[values["age_band"]],
            overlap=_record_overlap(values.get("current_skills"), values.get("target_skills"), self._index),
        )
        for name, value in computed.items():
            row[index[name]] = value
        # Python floats (doubles) rounded to float32 exactly as transform's assignment does.
        return np.array([row], dtype=np.float32)
