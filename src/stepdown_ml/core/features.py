"""Featurization: motive, transferable skills, the shape of the move. One code path.

Training, batch scoring and ``predict()`` all call :class:`FeatureSpace`. A frame goes
through :meth:`FeatureSpace.transform` (vectorized: the skill lists cut in numpy and coded
by pyarrow, the vocabulary looked up once per distinct token, numpy for the rest); a single
validated record goes through :meth:`FeatureSpace.transform_record` (plain Python sets, no
DataFrame). Both produce the same float32 numbers for the same row, which the test suite
checks.

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

from stepdown_ml.core.arrow import EMPTY_TEXT, cell_edges, strings, text_bytes, to_bool, to_codes, to_numpy
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


class _SkillIndex:
    """The vocabulary's tokens (general first, then specialized), as sets and as Arrow."""

    def __init__(self, vocab: SkillVocabulary) -> None:
        specialized = [t for f in FUNCTIONS for t in vocab.specialized[f]]
        self.tokens = list(vocab.general) + specialized
        self.n_general = len(vocab.general)
        self.general = vocab.general_set
        self.specialized = frozenset(specialized)
        self.skills = strings(self.tokens)


# What a distinct skill of a row is: outside the vocabulary, general or specialized; or no
# skill at all (the empty token before a separator that opens or doubles, in unvalidated text).
_OTHER, _GENERAL, _SPECIALIZED, _NONE = 0, 1, 2, 3
# Counted per row and kind, in the current list, in the target list and in both.
_KINDS = 4


def _cells(skills: Any) -> pa.Array:
    """Skill lists as Arrow text, trimmed, a missing list as a blank one.

    Validated lists are trimmed already: the text is trimmed (a copy) only when a cell
    starts or ends with a byte a plain list never does (blanks, and anything else
    outside ``[a-z0-9_;]``).
    """
    text = arrow_text(skills)
    if text.null_count:
        text = text.fill_null(EMPTY_TEXT)
    _, first, last = cell_edges(*text_bytes(text))
    if _PLAIN_BYTE[first].all() and _PLAIN_BYTE[last].all():
        return text
    return pc.utf8_trim_whitespace(text)


_SEPARATOR_BYTE = ord(SKILL_SEPARATOR)
# The bytes of a plain skill list (SKILLS_PATTERN's tokens and the separator).
_PLAIN_BYTE = np.zeros(256, dtype=bool)
_PLAIN_BYTE[list(b"abcdefghijklmnopqrstuvwxyz0123456789_" + SKILL_SEPARATOR.encode())] = True


def _tokens(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Every token of text, and each token's row (the text's own bytes: no copy).

    A token runs up to and including the separator that ends it, or to the end of its
    cell (the last one: ``"sql;python"`` holds ``"sql;"`` and ``"python"``). The two
    forms of one skill are made one by :func:`_skill_codes`. A blank cell holds none.
    """
    offsets, chars = text_bytes(text)
    cut = chars == _SEPARATOR_BYTE
    cut[offsets[1:][offsets[1:] > offsets[:-1]] - 1] = True  # each filled cell's last byte
    ends = np.flatnonzero(cut) + 1
    cuts = np.empty(len(ends) + 1, dtype=np.int32)
    cuts[0] = 0
    cuts[1:] = ends
    tokens = pa.Array.from_buffers(pa.string(), len(ends), [None, pa.py_buffer(cuts), pa.py_buffer(chars)])
    per_row = np.diff(np.searchsorted(ends, offsets, side="right"))
    n = len(text)
    return tokens, np.repeat(np.arange(n, dtype=np.int64 if n >> 31 else np.int32), per_row)


def _skill_codes(
    current: pa.Array, target: pa.Array
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], np.ndarray, pa.Array]:
    """Each list's tokens as (rows, codes), the skill of each code, and the skills.

    Both columns' tokens are coded in one dictionary. A skill's token with its separator
    and without (``"sql;"``, ``"sql"``) are two codes of one skill: the dictionary is
    small, so it is trimmed and coded once more, and ``skill[code]`` is a code's skill (an
    index into ``skills``; the empty skill is a separator without a token before it).
    """
    (current_tokens, current_rows), (target_tokens, target_rows) = _tokens(current), _tokens(target)
    # One dictionary for both (combined: Arrow leaves out the chunks without tokens).
    encoded = pa.chunked_array([current_tokens, target_tokens], type=pa.string()).dictionary_encode()
    encoded = encoded.combine_chunks()
    codes = to_numpy(encoded.indices)
    skills = pc.utf8_rtrim(encoded.dictionary, characters=SKILL_SEPARATOR).dictionary_encode()
    split = len(current_rows)
    return (
        (current_rows, codes[:split]),
        (target_rows, codes[split:]),
        to_numpy(skills.indices),
        skills.dictionary,
    )


def skill_overlap(
    current: Any,
    target: Any,
    vocab: SkillVocabulary | _SkillIndex,
    unknown: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per-row overlap between two columns of ``;``-separated skill lists.

    Tokens are deduplicated within a row. Tokens outside the vocabulary count as skills
    and match only themselves; they are neither general nor specialized.

    One pass treats every token alike, known to the vocabulary or not, so a block costs
    the same whatever its share of unknown skills. Both lists are cut into tokens where
    they lie (no copy), every token gets its code in one dictionary of the block (only
    the dictionary is looked up in the vocabulary), and a sort of (row, kind, skill, list)
    keys lines up each row's occurrences of a skill, current before target. Equal
    neighbours are then repeats within a list, or a skill the row's two lists share.

    Returns:
        Arrays (one value per row): ``n_current``, ``n_target``, ``shared``,
        ``shared_general``, ``shared_specialized``, ``target_general``, ``target_specialized``.
        When ``unknown`` is given, it receives each row's count of distinct tokens outside
        the vocabulary under ``current`` and ``target`` (for the monitoring report).
    """
    index = vocab if isinstance(vocab, _SkillIndex) else _SkillIndex(vocab)
    cur, tgt = _cells(current), _cells(target)
    n = len(cur)
    # Distinct skills of each row by kind: (row, kind, list) with list 0 current and 1 target,
    # and (row, kind) for the skills both lists hold.
    in_list = np.zeros((n, _KINDS, 2), dtype=np.intp)
    in_both = np.zeros((n, _KINDS), dtype=np.intp)
    if n:
        current_codes, target_codes, skill, skills = _skill_codes(cur, tgt)
        found = to_codes(pc.index_in(skills, value_set=index.skills))
        kinds = np.where(found < 0, _OTHER, np.where(found < index.n_general, _GENERAL, _SPECIALIZED))
        kinds[to_bool(pc.equal(skills, EMPTY_TEXT))] = _NONE
        skill_bits = int(len(skills) - 1).bit_length()
        # (row, kind, skill, list) as one integer, 32 bits wide when it fits (numpy sorts those
        # fastest). Sorted, a row's occurrences of a skill are neighbours, current first.
        kind_bits = (_KINDS - 1).bit_length()
        wide = int(n - 1).bit_length() + kind_bits + skill_bits + 1 > 32
        key_type: type[np.integer[Any]] = np.int64 if wide else np.uint32
        # (kind, skill, list 0) of each token code.
        tagged = ((((kinds << skill_bits) | np.arange(len(skills))) << 1)[skill]).astype(key_type)
        split = len(current_codes[0])
        keys = np.empty(split + len(target_codes[0]), dtype=key_type)
        row_shift = key_type(kind_bits + skill_bits + 1)
        for part, (rows, codes) in ((keys[:split], current_codes), (keys[split:], target_codes)):
            np.left_shift(rows.astype(key_type), row_shift, out=part)
            part |= tagged[codes]
        keys[split:] |= key_type(1)  # the target list
        keys.sort()  # each row's tokens by kind, skill, list
        first = np.ones(len(keys), dtype=bool)
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        distinct = keys[first]
        pair = distinct >> 1  # (row, kind, skill)
        shared = np.flatnonzero(pair[1:] == pair[:-1]) + 1  # the target's copy of a shared skill
        row_kind = distinct >> (skill_bits + 1)
        slots = ((row_kind << 1) | (distinct & 1)).astype(np.intp)
        in_list = np.bincount(slots, minlength=n * _KINDS * 2).reshape(n, _KINDS, 2)
        in_both = np.bincount(row_kind[shared].astype(np.intp), minlength=n * _KINDS).reshape(n, _KINDS)
    if unknown is not None:
        unknown.update(current=in_list[:, _OTHER, 0], target=in_list[:, _OTHER, 1])
    skills = in_list[:, _OTHER] + in_list[:, _GENERAL] + in_list[:, _SPECIALIZED]  # (row, list)
    return {
        "n_current": skills[:, 0],
        "n_target": skills[:, 1],
        "shared": in_both[:, _OTHER] + in_both[:, _GENERAL] + in_both[:, _SPECIALIZED],
        "shared_general": in_both[:, _GENERAL],
        "shared_specialized": in_both[:, _SPECIALIZED],
        "target_general": in_list[:, _GENERAL, 1],
        "target_specialized": in_list[:, _SPECIALIZED, 1],
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
    # float64 results assigned into float32 round exactly as transform_record's cast. Filled
    # column by column (each one contiguous), then laid out row by row for onnxruntime in
    # one copy: half the time of writing the columns into the row-major matrix.
    out = np.zeros((n, N_FEATURES), dtype=np.float32, order="F")
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
    return np.ascontiguousarray(out)


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
