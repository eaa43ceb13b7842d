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

import functools
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepdown_ml.core.arrow import EMPTY_TEXT, strings, to_bool, to_codes, to_numpy
from stepdown_ml.core.parsing import is_pandas
from stepdown_ml.core.schema import AGE_BANDS, FUNCTIONS, INDUSTRIES, MOTIVES, REGIONS, SKILL_SEPARATOR
from stepdown_ml.core.skills import SkillVocabulary

if TYPE_CHECKING:
    import pandas as pd

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
# The features computed from the values (not one-hot), in their order in FEATURE_NAMES.
COMPUTED_FEATURES = MOVE_FEATURES + SKILL_FEATURES + PERSON_FEATURES
FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"motive_{m}" for m in MOTIVES)
    + COMPUTED_FEATURES
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

# The features derived from each contract column that training can hold out of the model
# (pipelines/train_params.yaml, fairness.protected): validated and audited, never read.
ATTRIBUTE_FEATURES: dict[str, tuple[str, ...]] = {
    "age_band": ("age_band_index",),
    "region": tuple(f"region_{r}" for r in REGIONS),
}

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
    # Holding or sharing more skills never lowers p_advance (without these, a model that does
    # not see age learned a dip in shared skills from noise: tests/model/test_behaviour.py).
    "n_current_skills": 1,
    "shared_skills": 1,
    "skill_jaccard": 1,
    "missing_target_skills": -1,
    "shared_general_skills": 1,
    "shared_specialized_skills": 1,
}

_WORD_BITS = 64


def arrow_text(column: Any) -> pa.Array:
    """A text column as one Arrow string array (zero-copy when it is Arrow-backed)."""
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        array = column
    elif is_pandas(column, "Series") and column.dtype != object:
        array = pa.array(column, from_pandas=True)
    else:
        array = pa.array(np.asarray(column, dtype=object), type=pa.string(), from_pandas=True)
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
        self.value_set = strings(self.tokens)
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


def _bitsets(rows: np.ndarray, positions: np.ndarray, index: _SkillIndex, n: int) -> np.ndarray:
    """(n, words) bitsets of the vocabulary tokens at ``positions`` (>= 0) of ``rows``."""
    known = positions >= 0
    rows, code = rows[known], positions[known]
    bits = np.zeros((n, index.words), dtype=np.uint64)
    bit = np.left_shift(np.uint64(1), (code % _WORD_BITS).astype(np.uint64))
    np.bitwise_or.at(bits.reshape(-1), rows * index.words + code // _WORD_BITS, bit)
    return bits


# Beyond this many unknown tokens in one row, duplicates are found by sorting instead.
_MAX_SHIFTS = 48


def _first_of_row(keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Whether each key is the first of its value; equal keys lie in one row, rows in order.

    Comparing each key with the few before it (at most the longest row) is linear and
    much cheaper than hashing or sorting every token; a hostile row of thousands of
    tokens falls back to a sort.
    """
    first = np.ones(len(keys), dtype=bool)
    longest = int(np.bincount(rows).max()) if len(rows) else 0
    if longest > _MAX_SHIFTS:
        order = np.argsort(keys, kind="stable")
        first[order[1:]] = keys[order[1:]] != keys[order[:-1]]
        return first
    for shift in range(1, longest):
        first[shift:] &= keys[shift:] != keys[:-shift]
    return first


def _unknown_counts(
    rows: tuple[np.ndarray, np.ndarray], keys: tuple[np.ndarray, np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct unknown tokens per row in current and target, and those they share."""
    (cur_rows, tgt_rows), (cur_keys, tgt_keys) = rows, keys
    cur_first, tgt_first = _first_of_row(cur_keys, cur_rows), _first_of_row(tgt_keys, tgt_rows)
    cur_rows, cur_keys = cur_rows[cur_first], cur_keys[cur_first]
    tgt_rows, tgt_keys = tgt_rows[tgt_first], tgt_keys[tgt_first]
    # One row's current tokens, then its target tokens (a stable merge of two sorted runs):
    # a shared token is a target key equal to a key shortly before it.
    both_rows = np.concatenate([cur_rows, tgt_rows])
    order = np.argsort(both_rows, kind="stable")
    merged_rows = both_rows[order]
    merged = np.concatenate([cur_keys, tgt_keys])[order]
    in_both = ~_first_of_row(merged, merged_rows) & (order >= len(cur_keys))
    return (
        np.bincount(cur_rows, minlength=n),
        np.bincount(tgt_rows, minlength=n),
        np.bincount(merged_rows[in_both], minlength=n),
    )


# Positions of a token in the skill index; an empty token (from a blank list) is no skill.
_UNKNOWN, _BLANK = -1, -2


def skill_overlap(
    current: Any,
    target: Any,
    vocab: SkillVocabulary | _SkillIndex,
    unknown: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per-row overlap between two columns of ``;``-separated skill lists.

    Tokens are deduplicated within a row. Tokens outside the vocabulary count as skills
    and match only themselves; they are neither general nor specialized.

    Every token of both columns is hashed once (one dictionary for the block); only the
    dictionary is looked up in the vocabulary. Vocabulary tokens become bitsets; the others
    (row, token) keys, deduplicated and matched by comparing neighbours within a row
    (:func:`_first_of_row`), so a block of unknown skills costs about what a block of known
    ones does.

    Returns:
        Arrays (one value per row): ``n_current``, ``n_target``, ``shared``,
        ``shared_general``, ``shared_specialized``, ``target_general``, ``target_specialized``.
        When ``unknown`` is given, it receives each row's count of distinct tokens outside
        the vocabulary under ``current`` and ``target`` (for the monitoring report).
    """
    index = vocab if isinstance(vocab, _SkillIndex) else _SkillIndex(vocab)
    current_lists, target_lists = _split_tokens(current), _split_tokens(target)
    n = len(current_lists)
    cur_rows = to_numpy(pc.list_parent_indices(current_lists))
    tgt_rows = to_numpy(pc.list_parent_indices(target_lists))
    encoded = pa.concat_arrays(
        [pc.list_flatten(current_lists), pc.list_flatten(target_lists)]
    ).dictionary_encode()
    codes = to_numpy(encoded.indices)
    dictionary = encoded.dictionary
    lookup = to_codes(pc.index_in(dictionary, value_set=index.value_set))
    lookup[to_bool(pc.equal(dictionary, EMPTY_TEXT))] = _BLANK
    positions = lookup[codes]
    split = len(cur_rows)
    cur_pos, tgt_pos = positions[:split], positions[split:]
    cur_bits = _bitsets(cur_rows, cur_pos, index, n)
    tgt_bits = _bitsets(tgt_rows, tgt_pos, index, n)
    both = cur_bits & tgt_bits
    count = np.bitwise_count
    general, specialized = index.general_mask, index.specialized_mask
    n_codes = max(len(dictionary), 1)
    cur_unknown, tgt_unknown = cur_pos == _UNKNOWN, tgt_pos == _UNKNOWN
    unknown_rows = (cur_rows[cur_unknown].astype(np.int64), tgt_rows[tgt_unknown].astype(np.int64))
    cur_only, tgt_only, shared_only = _unknown_counts(
        unknown_rows,
        (
            unknown_rows[0] * n_codes + codes[:split][cur_unknown],
            unknown_rows[1] * n_codes + codes[split:][tgt_unknown],
        ),
        n,
    )
    if unknown is not None:
        unknown.update(current=cur_only, target=tgt_only)
    return {
        "n_current": count(cur_bits).sum(axis=1) + cur_only,
        "n_target": count(tgt_bits).sum(axis=1) + tgt_only,
        "shared": count(both).sum(axis=1) + shared_only,
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


def _skill_features(
    n_current: Any,
    n_target: Any,
    shared: Any,
    shared_general: Any,
    shared_specialized: Any,
    target_general: Any,
    target_specialized: Any,
) -> tuple[Any, ...]:
    """The skill features (SKILL_FEATURES order) from overlap counts, arrays or scalars alike."""
    return (
        n_current,
        n_target,
        shared,
        _ratio(shared, n_target),
        _ratio(shared, n_current + n_target - shared),
        n_target - shared,
        shared_general,
        shared_specialized,
        _ratio(shared_general, target_general),
        _ratio(shared_specialized, target_specialized),
    )


def _record_overlap(current: str | None, target: str | None, index: _SkillIndex) -> tuple[int, ...]:
    """:func:`skill_overlap` of one validated record (no blanks, no empty tokens), in order."""
    cur = set(current.split(SKILL_SEPARATOR)) if current else set()
    tgt = set(target.split(SKILL_SEPARATOR)) if target else set()
    shared = cur & tgt
    general, specialized = index.general, index.specialized
    return (
        len(cur),
        len(tgt),
        len(shared),
        len(shared & general),
        len(shared & specialized),
        len(tgt & general),
        len(tgt & specialized),
    )


def _computed_features(
    get: Any, function_change: Any, industry_change: Any, avoidable: Any, age_band_index: Any, skills: Any
) -> tuple[Any, ...]:
    """COMPUTED_FEATURES, in order, from arrays (a block) or scalars (one record) alike."""
    current, target = get("current_level"), get("target_level")
    return (
        # MOVE_FEATURES
        current,
        target,
        current - target,
        function_change,
        industry_change,
        industry_change * (1 - function_change),
        get("same_employer"),
        get("promotion_path"),
        # SKILL_FEATURES
        *skills,
        # PERSON_FEATURES
        avoidable,
        get("years_experience"),
        get("performance_rating"),
        get("fit_score"),
        get("unemployment_rate"),
        get("months_unemployed"),
        age_band_index,
    )


def _one_hot(levels: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    return {level: tuple(float(i == j) for j in range(len(levels))) for i, level in enumerate(levels)}


_MOTIVE_HOT, _REGION_HOT = _one_hot(MOTIVES), _one_hot(REGIONS)
_FUNCTION_HOT, _INDUSTRY_HOT = _one_hot(FUNCTIONS), _one_hot(INDUSTRIES)
_PACK_ROW = struct.Struct(f"={N_FEATURES}f").pack_into  # native-order float32


@functools.cache
def _level_index(levels: tuple[str, ...]) -> dict[str, int]:
    return {level: i for i, level in enumerate(levels)}


_AGE_INDEX = _level_index(AGE_BANDS)
# The enum columns features read, the one-hot ones first (in FEATURE_NAMES' order).
_ONE_HOT = (
    ("motive", MOTIVES),
    ("region", REGIONS),
    ("target_function", FUNCTIONS),
    ("target_industry", INDUSTRIES),
)
_ENUM_COLUMNS = (
    *_ONE_HOT,
    ("current_function", FUNCTIONS),
    ("current_industry", INDUSTRIES),
    ("age_band", AGE_BANDS),
)
# _record_overlap's counts, in skill_overlap's order.
_N_OVERLAP_COUNTS = 7


def _assemble(
    n: int,
    codes: Callable[[str, tuple[str, ...]], np.ndarray],
    num: Callable[[str], np.ndarray],
    skills: tuple[Any, ...],
) -> np.ndarray:
    """A block's (n, N_FEATURES) float32 matrix, from its readers.

    ``codes(column, levels)`` gives an enum column's positions in ``levels``, ``num(name)``
    a numeric column as float64 (NaN where empty), ``skills`` the skill features.
    """
    # float64 results assigned into float32 round exactly as transform_record's cast.
    out = np.zeros((n, N_FEATURES), dtype=np.float32)
    rows = np.arange(n)
    enum_codes = {column: codes(column, levels) for column, levels in _ENUM_COLUMNS}
    for column, levels in _ONE_HOT:
        out[rows, _INDEX[f"{column}_{levels[0]}"] + enum_codes[column]] = 1.0
    avoidable = num("necessity_avoidable")
    computed = _computed_features(
        num,
        function_change=enum_codes["current_function"] != enum_codes["target_function"],
        industry_change=enum_codes["current_industry"] != enum_codes["target_industry"],
        avoidable=np.where(np.isnan(avoidable), 0.0, avoidable),  # empty: 0, as transform_record
        age_band_index=enum_codes["age_band"],
        skills=skills,
    )
    for position, data in enumerate(computed, start=_INDEX[COMPUTED_FEATURES[0]]):
        out[:, position] = data
    return out


class FeatureSpace:
    """Turns validated candidate values into the model's float32 feature matrix."""

    names = FEATURE_NAMES

    def __init__(self, vocab: SkillVocabulary) -> None:
        self.vocab = vocab
        self._index = _SkillIndex(vocab)

    def transform(
        self, values: Mapping[str, Any] | pd.DataFrame, unknown: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Features of every row of validated values, shape (n, N_FEATURES), float32.

        ``values`` is a validated frame or its columns by name
        (:meth:`stepdown_ml.core.schema.Validation.valid_columns`: the batch path).
        ``unknown``, when given, receives the out-of-vocabulary token counts of
        :func:`skill_overlap`.
        """

        def codes(column: str, levels: tuple[str, ...]) -> np.ndarray:
            array = values[column]
            if not isinstance(array, (pa.Array, pa.ChunkedArray)):
                array = pa.array(array, from_pandas=True)
            if isinstance(array, pa.ChunkedArray):
                array = array.combine_chunks()
            if pa.types.is_dictionary(array.type) and array.dictionary.to_pylist() == list(levels):
                # Validated enums arrive encoded on the contract's order: the codes are the indices.
                return to_codes(array.indices)
            found = pc.index_in(arrow_text(array), value_set=strings(levels))
            return to_codes(found)

        def num(name: str) -> np.ndarray:
            column = values[name]
            if isinstance(column, np.ndarray):
                return column.astype(np.float64, copy=False)
            return column.to_numpy(dtype=np.float64, na_value=np.nan)

        overlap = skill_overlap(values["current_skills"], values["target_skills"], self._index, unknown)
        return _assemble(len(values["motive"]), codes, num, _skill_features(**overlap))

    def transform_columns(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """Features of validated records given column by column, as Python values.

        ``columns`` is :func:`stepdown_ml.core.validation.validate_records`' answer (a
        service's batch of records). The numbers are :meth:`transform`'s and
        :meth:`transform_record`'s: :meth:`transform`'s arithmetic on the same values, the
        enums looked up in the contract's order, and the skill lists counted row by row
        as :meth:`transform_record` counts them (for a few hundred rows, cheaper than the
        fixed costs of the Arrow kernels).
        """
        n = len(columns["motive"])

        def codes(column: str, levels: tuple[str, ...]) -> np.ndarray:
            return np.fromiter(map(_level_index(levels).__getitem__, columns[column]), dtype=np.intp, count=n)

        def num(name: str) -> np.ndarray:
            return np.asarray(columns[name], dtype=np.float64)  # None (an empty nullable value) is NaN

        index = self._index
        pairs = zip(columns["current_skills"], columns["target_skills"], strict=True)
        counts = np.array([_record_overlap(c, t, index) for c, t in pairs], dtype=np.int64)
        return _assemble(n, codes, num, _skill_features(*counts.reshape(n, _N_OVERLAP_COUNTS).T))

    def transform_record(self, values: Mapping[str, Any], out: np.ndarray | None = None) -> np.ndarray:
        """Features of one validated record, shape (1, N_FEATURES), float32.

        Written into ``out`` (a C-contiguous float32 array of that shape) when given: the
        ``predict()`` hot path reuses one buffer per thread.
        """
        if out is None:
            out = np.empty((1, N_FEATURES), dtype=np.float32)
        avoidable = values.get("necessity_avoidable")
        # Python numbers (doubles) rounded to float32 by struct, the same IEEE rounding as
        # numpy's cast in transform.
        _PACK_ROW(
            out,  # type: ignore[arg-type]  # numpy's stubs: ndarray.__buffer__ only on Python >= 3.12
            0,
            *_MOTIVE_HOT[values["motive"]],
            *_computed_features(
                values.__getitem__,
                values["current_function"] != values["target_function"],
                values["current_industry"] != values["target_industry"],
                0.0 if avoidable is None else avoidable,
                _AGE_INDEX[values["age_band"]],
                _skill_features(
                    *_record_overlap(values.get("current_skills"), values.get("target_skills"), self._index)
                ),
            ),
            *_REGION_HOT[values["region"]],
            *_FUNCTION_HOT[values["target_function"]],
            *_INDUSTRY_HOT[values["target_industry"]],
        )
        return out
