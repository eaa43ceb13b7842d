"""Generalization hierarchies and the search for the release (docs/PRIVACY.md).

The attacker knows, for the person they look for, every quasi-identifier of
:data:`QUASI_IDENTIFIERS`: what a colleague, a recruiter or a public profile gives away
(age, region, current industry and function, level, experience, when the move happened,
the salary change, and the person's own skills, measured as their overlap with the
target role's skills). Each quasi-identifier has a hierarchy: level 0 is the exact value,
each higher level merges values into wider bands, the last level merges everything.

:func:`search` picks one level per quasi-identifier (global recoding, as ARX does): the
node of least information loss at which every group of released rows holds at least ``k``
distinct persons and at least ``l`` distinct labels, after suppressing at most
``max_suppression`` of the rows (whole groups that fail). An attribute's loss at a level is
the share of its entropy that the bands hide; a node's loss is their mean weighted by
:data:`DEFAULT_WEIGHTS`. The search is a top-down beam search: start from the fully
generalized node, specialize one attribute by one level at a time, keep the ``beam_width``
feasible nodes of least loss at each depth, and return the least-loss feasible node seen.

Every released value is a *representative* that lies inside its band, so the same
hierarchy maps a true value and its released value to the same band: the attacker's view
of the release is exactly :func:`qi_codes` of the released rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stepdown_ml.core.schema import AGE_BANDS, FUNCTIONS, INDUSTRIES, REGIONS

# Families: the level above the exact function and industry.
FUNCTION_FAMILIES: dict[str, tuple[str, ...]] = {
    "technical": ("engineering", "data", "research"),
    "product": ("product", "design", "marketing"),
    "business": ("sales", "customer_support", "operations"),
    "corporate": ("finance", "hr", "legal"),
}
INDUSTRY_FAMILIES: dict[str, tuple[str, ...]] = {
    "knowledge": ("software", "media", "consulting", "education"),
    "health": ("biotech", "healthcare"),
    "industrial": ("manufacturing", "energy", "logistics", "retail"),
    "finance_public": ("finance", "public_sector"),
}
# Upper edges (exclusive) of the bands; level 0 is the exact value.
LEVEL_BANDS = ((3, 6, 8), (6,))  # 1-2, 3-5, 6-7, 8-10; then 1-5, 6-10 (6 = manager)
EXPERIENCE_BANDS = (tuple(float(x) for x in range(5, 50, 5)), (10.0, 25.0))  # 5-year; 0-9, 10-24, 25+
YEAR_WIDTHS = (1, 2, 5, 10, 20)
SALARY_WIDTHS = (1, 5, 10, 25)
OTHER_SKILL_WIDTHS = (1, 3, 6)
# Coverage bands (upper edges, inclusive) of shared / target-role skills; 0 is its own band.
COVERAGE_BANDS = ((1 / 3, 2 / 3, 1.0), (1.0,))
AGE_GROUPS = (0, 0, 1, 1, 2, 2)  # 18-34, 35-54, 55+
ALL_YEAR = 1950  # the released transition_year when the year is fully generalized

QUASI_IDENTIFIERS = (
    "age_band",
    "region",
    "current_industry",
    "current_function",
    "current_level",
    "years_experience",
    "transition_year",
    "salary_change_pct",
    "general_skill_overlap",
    "specialized_skill_overlap",
    "other_skills",
)
LEVEL_NAMES: dict[str, tuple[str, ...]] = {
    "age_band": ("contract band", "18-34, 35-54, 55+", "*"),
    "region": ("region", "*"),
    "current_industry": ("industry", "family", "*"),
    "current_function": ("function", "family", "*"),
    "current_level": ("level", "1-2, 3-5, 6-7, 8-10", "1-5, 6-10", "*"),
    "years_experience": ("0.1 year", "5-year band", "0-9, 10-24, 25+", "*"),
    "transition_year": tuple(f"{w}-year period" for w in YEAR_WIDTHS) + ("*",),
    "salary_change_pct": tuple(f"{w}-point band" for w in SALARY_WIDTHS) + ("*",),
    "general_skill_overlap": ("exact coverage", "coverage 0, ≤1/3, ≤2/3, ≤1", "coverage 0, >0", "*"),
    "specialized_skill_overlap": ("exact coverage", "coverage 0, ≤1/3, ≤2/3, ≤1", "coverage 0, >0", "*"),
    "other_skills": tuple(f"{w}-skill band" for w in OTHER_SKILL_WIDTHS) + ("*",),
}
TOP = {name: len(levels) - 1 for name, levels in LEVEL_NAMES.items()}
# How much each attribute's information counts in the loss (the others count 1). The
# release is for training the advancement model: the skill overlap it scores most on
# counts most; transition year and salary change, which it does not use, count least.
DEFAULT_WEIGHTS: dict[str, float] = {
    "specialized_skill_overlap": 4.0,
    "general_skill_overlap": 2.0,
    "other_skills": 2.0,
    "current_level": 2.0,
    "transition_year": 0.1,
    "salary_change_pct": 0.1,
}

_FUNCTION_FAMILY = np.array(
    [next(i for i, m in enumerate(FUNCTION_FAMILIES.values()) if f in m) for f in FUNCTIONS]
)
_INDUSTRY_FAMILY = np.array(
    [next(i for i, m in enumerate(INDUSTRY_FAMILIES.values()) if x in m) for x in INDUSTRIES]
)


@dataclass(frozen=True)
class TrueValues:
    """The quasi-identifiers of each record before generalization (plus what the
    representatives need: the target role's side of each pair)."""

    age_band: np.ndarray  # index into AGE_BANDS
    region: np.ndarray  # index into REGIONS
    current_industry: np.ndarray  # index into INDUSTRIES
    target_industry: np.ndarray
    current_function: np.ndarray  # index into FUNCTIONS
    target_function: np.ndarray
    current_level: np.ndarray  # 1-10
    levels_down: np.ndarray
    years_experience: np.ndarray  # float, 0.1 year
    transition_year: np.ndarray
    salary_change_pct: np.ndarray  # float (NaN when not known)
    shared_general: np.ndarray
    target_general: np.ndarray
    shared_specialized: np.ndarray
    target_specialized: np.ndarray
    other_skills: np.ndarray  # the person's skills outside the target role's list

    def __len__(self) -> int:
        return len(self.age_band)


def true_values(frame: pd.DataFrame, overlap: Mapping[str, np.ndarray]) -> TrueValues:
    """:class:`TrueValues` of transition-layout rows and their skill overlap
    (:func:`stepdown_ml.core.features.skill_overlap`)."""

    def codes(column: str, levels: tuple[str, ...]) -> np.ndarray:
        return pd.Categorical(frame[column], categories=levels).codes.astype(np.int64)

    current = frame["current_level"].to_numpy(dtype=np.int64)
    salary = (
        frame["salary_change_pct"] if "salary_change_pct" in frame else pd.Series(np.nan, index=frame.index)
    )
    shared_general = np.asarray(overlap["shared_general"], dtype=np.int64)
    shared_specialized = np.asarray(overlap["shared_specialized"], dtype=np.int64)
    return TrueValues(
        age_band=codes("age_band", AGE_BANDS),
        region=codes("region", REGIONS),
        current_industry=codes("current_industry", INDUSTRIES),
        target_industry=codes("target_industry", INDUSTRIES),
        current_function=codes("current_function", FUNCTIONS),
        target_function=codes("target_function", FUNCTIONS),
        current_level=current,
        levels_down=current - frame["target_level"].to_numpy(dtype=np.int64),
        years_experience=frame["years_experience"].to_numpy(dtype=np.float64),
        transition_year=frame["transition_year"].to_numpy(dtype=np.int64),
        salary_change_pct=pd.to_numeric(salary).to_numpy(dtype=np.float64, na_value=np.nan),
        shared_general=shared_general,
        target_general=np.asarray(overlap["target_general"], dtype=np.int64),
        shared_specialized=shared_specialized,
        target_specialized=np.asarray(overlap["target_specialized"], dtype=np.int64),
        other_skills=np.asarray(overlap["n_current"], dtype=np.int64) - shared_general - shared_specialized,
    )


def _band(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), values, side="right").astype(np.int64)


def _coverage_band(shared: np.ndarray, target: np.ndarray, level: int) -> np.ndarray:
    """Level 0: the exact (shared, role) counts; then 0 for no shared skill and the
    coverage band (1-based)."""
    if level == 0:
        return shared * 4096 + target
    if level > len(COVERAGE_BANDS):
        return np.zeros(len(shared), dtype=np.int64)
    coverage = np.divide(shared, target, out=np.zeros(len(shared)), where=target > 0)
    edges = np.asarray(COVERAGE_BANDS[level - 1])
    band = 1 + np.searchsorted(edges, coverage - 1e-9, side="left")
    return np.where(shared > 0, band, 0).astype(np.int64)


def _floor_width(values: np.ndarray, width: int) -> np.ndarray:
    return (np.floor_divide(values, width) * width).astype(np.int64)


def qi_codes(values: TrueValues, name: str, level: int) -> np.ndarray:
    """The group code of every record for quasi-identifier ``name`` at ``level``.

    Equal codes mean the attacker cannot tell the records apart on this attribute.
    """
    top = TOP[name]
    if level >= top:
        return np.zeros(len(values), dtype=np.int64)
    if name == "age_band":
        return values.age_band if level == 0 else np.asarray(AGE_GROUPS)[values.age_band]
    if name == "region":
        return values.region
    if name == "current_industry":
        return values.current_industry if level == 0 else _INDUSTRY_FAMILY[values.current_industry]
    if name == "current_function":
        return values.current_function if level == 0 else _FUNCTION_FAMILY[values.current_function]
    if name == "current_level":
        return values.current_level if level == 0 else _band(values.current_level, LEVEL_BANDS[level - 1])
    if name == "years_experience":
        tenths = np.rint(values.years_experience * 10).astype(np.int64)
        return tenths if level == 0 else _band(tenths / 10, EXPERIENCE_BANDS[level - 1])
    if name == "transition_year":
        return _floor_width(values.transition_year, YEAR_WIDTHS[level])
    if name == "salary_change_pct":
        salary = np.nan_to_num(values.salary_change_pct, nan=-1e6)
        return _floor_width(salary, SALARY_WIDTHS[level])
    if name == "general_skill_overlap":
        return _coverage_band(values.shared_general, values.target_general, level)
    if name == "specialized_skill_overlap":
        return _coverage_band(values.shared_specialized, values.target_specialized, level)
    if name == "other_skills":
        return _floor_width(values.other_skills, OTHER_SKILL_WIDTHS[level])
    raise KeyError(name)


def combine(columns: list[np.ndarray], n: int) -> np.ndarray:
    """One int64 code per distinct combination of the code columns (``n`` rows)."""
    key = np.zeros(n, dtype=np.int64)
    span = 1
    for column in columns:
        codes, uniques = pd.factorize(column, sort=False)
        cardinality = max(len(uniques), 1)
        if span * cardinality >= 2**62:
            key = pd.factorize(key)[0].astype(np.int64)
            span = int(key.max(initial=0)) + 1
        key = key * cardinality + codes
        span *= cardinality
    return key


@dataclass
class GroupCheck:
    """Per-record group statistics of one node."""

    persons: np.ndarray  # distinct persons in the record's group
    labels: np.ndarray  # distinct labels in the record's group
    groups: np.ndarray  # the group code


def check_groups(groups: np.ndarray, persons: np.ndarray, label: np.ndarray) -> GroupCheck:
    """Distinct persons and distinct labels of every record's group."""
    if len(groups) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return GroupCheck(empty, empty, empty)
    dense = pd.factorize(groups)[0].astype(np.int64)
    n_groups = int(dense.max()) + 1
    pairs = np.unique(dense * (int(persons.max()) + 1) + persons)
    per_group = np.bincount(pairs // (int(persons.max()) + 1), minlength=n_groups)
    label_pairs = np.unique(dense * 2 + label.astype(np.int64))
    labels = np.bincount(label_pairs // 2, minlength=n_groups)
    return GroupCheck(per_group[dense], labels[dense], dense)


def entropy(codes: np.ndarray) -> float:
    """Shannon entropy (bits) of the codes' distribution."""
    if len(codes) == 0:
        return 0.0
    counts = np.unique(codes, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@dataclass
class SearchResult:
    """The chosen node and how it was found."""

    levels: dict[str, int]
    keep: np.ndarray
    check: GroupCheck
    loss: float
    steps: list[dict[str, Any]]
    nodes_evaluated: int


def search(
    values: TrueValues,
    persons: np.ndarray,
    label: np.ndarray,
    k: int,
    l_diversity: int,
    max_suppression: float,
    weights: Mapping[str, float] | None = None,
    beam_width: int = 4,
) -> SearchResult:
    """Top-down beam search for the feasible node of least information loss (module doc)."""
    names = list(QUASI_IDENTIFIERS)
    weight = dict.fromkeys(names, 1.0) | dict(DEFAULT_WEIGHTS if weights is None else weights)
    total_weight = sum(weight.values()) or 1.0
    # Dense codes (0..m-1) once per level: combining them is then a multiply-add.
    codes = {
        n: [pd.factorize(qi_codes(values, n, level))[0].astype(np.int64) for level in range(TOP[n] + 1)]
        for n in names
    }
    base = {n: entropy(codes[n][0]) for n in names}
    lost = {n: [(1.0 - entropy(c) / base[n]) if base[n] > 0 else 0.0 for c in codes[n]] for n in names}
    limit = max_suppression * len(values)

    def loss(levels: Mapping[str, int]) -> float:
        return sum(weight[n] * lost[n][levels[n]] for n in names) / total_weight

    def evaluate(levels: Mapping[str, int]) -> tuple[np.ndarray, GroupCheck]:
        groups = combine([codes[n][levels[n]] for n in names if levels[n] < TOP[n]], len(values))
        check = check_groups(groups, persons, label)
        return (check.persons >= k) & (check.labels >= l_diversity), check

    start = tuple(TOP[n] for n in names)
    suppressed_at: dict[tuple[int, ...], int] = {}

    def suppressed(node: tuple[int, ...]) -> int:
        if node not in suppressed_at:
            suppressed_at[node] = int((~evaluate(dict(zip(names, node, strict=True)))[0]).sum())
        return suppressed_at[node]

    def node_loss(node: tuple[int, ...]) -> float:
        return loss(dict(zip(names, node, strict=True)))

    # Beam search: the beam_width nodes of least loss at each depth are specialized further.
    best = (node_loss(start), suppressed(start), start, list[dict[str, Any]]())
    beam = [best]
    exact = tuple(0 for _ in names)
    if suppressed(exact) <= limit:  # no loss at all: nothing to search
        beam, best = [], (0.0, suppressed(exact), exact, [])
    seen = {start}
    while beam:
        children = []
        for _, _, node, path in beam:
            for i, name in enumerate(names):
                if node[i] == 0:
                    continue
                child = (*node[:i], node[i] - 1, *node[i + 1 :])
                if child in seen:
                    continue
                seen.add(child)
                count = suppressed(child)
                if count > limit:
                    continue
                child_loss = node_loss(child)
                step = {
                    "specialized": name,
                    "level": child[i],
                    "loss": round(child_loss, 6),
                    "suppressed": count,
                }
                children.append((child_loss, count, child, [*path, step]))
        # Least loss, then least suppression, then the finer node (a tie in loss).
        children.sort(key=lambda c: (c[0], c[1], sum(c[2])))
        beam = children[:beam_width]
        if beam and (beam[0][0], beam[0][1], sum(beam[0][2])) < (best[0], best[1], sum(best[2])):
            best = beam[0]
    levels = dict(zip(names, best[2], strict=True))
    keep, check = evaluate(levels)
    return SearchResult(levels, keep, check, best[0], best[3], len(seen))


def risk(groups: np.ndarray, persons: np.ndarray, label: np.ndarray) -> dict[str, Any]:
    """Re-identification figures of records grouped by ``groups``."""
    if len(groups) == 0:
        return {"records": 0, "unique_share": 0.0, "smallest_group": None, "highest_risk": None,
                "single_label_rows": 0}  # fmt: skip
    check = check_groups(groups, persons, label)
    smallest = int(check.persons.min())
    return {
        "records": len(groups),
        "groups": int(check.groups.max()) + 1,
        # Records that no other person shares quasi-identifiers with.
        "unique_share": round(float((check.persons == 1).mean()), 6),
        "smallest_group": smallest,
        "highest_risk": round(1.0 / smallest, 6),
        "single_label_rows": int((check.labels < 2).sum()),
    }


def node_groups(values: TrueValues, levels: Mapping[str, int]) -> np.ndarray:
    """Group codes of the records at a node."""
    return combine(
        [qi_codes(values, n, levels[n]) for n in QUASI_IDENTIFIERS if levels[n] < TOP[n]], len(values)
    )


# --- representatives: the released values ---------------------------------------------


def _band_edges(edges: tuple[float, ...], low: float, high: float) -> list[tuple[float, float]]:
    bounds = [low, *edges, high]
    return list(itertools.pairwise(bounds))


def _pair(
    current: np.ndarray, target: np.ndarray, family: np.ndarray, members: list[tuple[int, ...]], level: int
) -> tuple[np.ndarray, np.ndarray]:
    """Representatives of a (current, target) pair of functions or industries.

    Each side becomes the first member of its family (the second member for the target
    when it differs from the current one within the family), so a change between the two
    stays a change and no change stays none, while only the families are released.
    """
    if level == 0:
        return current, target
    if level >= 2:
        fam_current = np.zeros_like(current)
        fam_target = np.zeros_like(target)
        members = [(0, 1)]  # one family: everything
    else:
        fam_current, fam_target = family[current], family[target]
    first = np.array([m[0] for m in members])
    second = np.array([m[1] for m in members])
    rep_current = first[fam_current]
    changed = current != target
    rep_target = np.where(
        fam_current == fam_target, np.where(changed, second[fam_target], first[fam_target]), first[fam_target]
    )
    return rep_current, rep_target


def _representative_count(band: np.ndarray, target: np.ndarray, level: int, fallback: float) -> np.ndarray:
    """A shared-skills count inside coverage ``band`` for a role with ``target`` skills."""
    if level >= TOP["general_skill_overlap"]:
        return np.minimum(np.rint(fallback * target), target).astype(np.int64)
    edges = (0.0, *COVERAGE_BANDS[level - 1])
    low = np.asarray(edges)[np.maximum(band - 1, 0)]
    high = np.asarray(edges)[np.minimum(band, len(edges) - 1)]
    # Counts c with low < c / target <= high: from floor(low * target) + 1 to floor(high * target).
    first = np.floor(low * target + 1e-9).astype(np.int64) + 1
    last = np.floor(high * target + 1e-9).astype(np.int64)
    middle = np.rint((low + high) / 2 * target).astype(np.int64)
    count = np.clip(middle, first, np.maximum(last, first))
    return np.where(band == 0, 0, np.minimum(count, target))


def representatives(values: TrueValues, levels: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The released value of every generalized column (each inside its record's band)."""
    out: dict[str, np.ndarray] = {}
    age = levels["age_band"]
    age_index = (
        values.age_band
        if age == 0
        else (2 * np.asarray(AGE_GROUPS)[values.age_band] if age == 1 else np.full(len(values), 2))
    )
    out["age_band"] = np.asarray(AGE_BANDS, dtype=object)[age_index]
    region = values.region if levels["region"] == 0 else np.zeros(len(values), dtype=np.int64)
    out["region"] = np.asarray(REGIONS, dtype=object)[region]

    industry_members = [tuple(INDUSTRIES.index(x) for x in m) for m in INDUSTRY_FAMILIES.values()]
    cur, tgt = _pair(values.current_industry, values.target_industry, _INDUSTRY_FAMILY, industry_members,
                     levels["current_industry"])  # fmt: skip
    out["current_industry"] = np.asarray(INDUSTRIES, dtype=object)[cur]
    out["target_industry"] = np.asarray(INDUSTRIES, dtype=object)[tgt]
    function_members = [tuple(FUNCTIONS.index(f) for f in m) for m in FUNCTION_FAMILIES.values()]
    cur, tgt = _pair(values.current_function, values.target_function, _FUNCTION_FAMILY, function_members,
                     levels["current_function"])  # fmt: skip
    out["current_function"] = np.asarray(FUNCTIONS, dtype=object)[cur]
    out["target_function"] = np.asarray(FUNCTIONS, dtype=object)[tgt]

    # Level: the band's middle, raised to 1 + levels_down so the target level stays >= 1;
    # levels_down is released exactly (the target level follows from it).
    level = levels["current_level"]
    if level == 0:
        current = values.current_level
    else:
        bands = (
            [(1, 10)]
            if level >= TOP["current_level"]
            else [(int(lo), int(hi) - 1) for lo, hi in _band_edges(LEVEL_BANDS[level - 1], 1, 11)]
        )
        code = (
            np.zeros(len(values), dtype=np.int64)
            if level >= TOP["current_level"]
            else _band(values.current_level, LEVEL_BANDS[level - 1])
        )
        middle = np.array([(lo + hi) // 2 for lo, hi in bands])[code]
        current = np.maximum(middle, 1 + values.levels_down)
    out["current_level"] = current
    out["target_level"] = current - values.levels_down

    years = levels["years_experience"]
    if years == 0:
        out["years_experience"] = values.years_experience
    elif years >= TOP["years_experience"]:
        out["years_experience"] = np.full(len(values), 15.0)
    else:
        spans = _band_edges(EXPERIENCE_BANDS[years - 1], 0.0, 50.0)
        middle = np.array([(lo + hi) / 2 for lo, hi in spans])
        out["years_experience"] = middle[
            _band(np.rint(values.years_experience * 10) / 10, EXPERIENCE_BANDS[years - 1])
        ]

    year = levels["transition_year"]
    out["transition_year"] = (
        np.full(len(values), ALL_YEAR) if year >= TOP["transition_year"]
        else _floor_width(values.transition_year, YEAR_WIDTHS[year])
    )  # fmt: skip
    salary = levels["salary_change_pct"]
    if salary >= TOP["salary_change_pct"]:
        out["salary_change_pct"] = np.full(len(values), np.nan)
    else:
        width = SALARY_WIDTHS[salary]
        out["salary_change_pct"] = _floor_width(values.salary_change_pct, width) + width // 2

    mean_general = _mean_coverage(values.shared_general, values.target_general)
    mean_specialized = _mean_coverage(values.shared_specialized, values.target_specialized)
    general = levels["general_skill_overlap"]
    out["shared_general"] = (
        values.shared_general if general == 0 else _representative_count(
            _coverage_band(values.shared_general, values.target_general, general), values.target_general,
            general, mean_general)
    )  # fmt: skip
    specialized = levels["specialized_skill_overlap"]
    out["shared_specialized"] = (
        values.shared_specialized if specialized == 0 else _representative_count(
            _coverage_band(values.shared_specialized, values.target_specialized, specialized),
            values.target_specialized, specialized, mean_specialized)
    )  # fmt: skip
    other = levels["other_skills"]
    if other >= TOP["other_skills"]:
        out["other_skills"] = np.full(
            len(values), int(np.rint(np.median(values.other_skills))) if len(values) else 0
        )
    else:
        width = OTHER_SKILL_WIDTHS[other]
        out["other_skills"] = _floor_width(values.other_skills, width) + (width - 1) // 2
    return out


def _mean_coverage(shared: np.ndarray, target: np.ndarray) -> float:
    """The mean coverage over all records: the fully generalized representative."""
    if len(shared) == 0:
        return 0.0
    return float(np.divide(shared, target, out=np.zeros(len(shared)), where=target > 0).mean())
