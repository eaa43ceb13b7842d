"""Synthetic career-transition records whose structure follows docs/DOMAIN.md.

The label is drawn from a probit model with unobserved latent factors and label noise:

    y* = eta(x) + u + e,   u ~ N(0, LATENT_SD^2) (ambition, network: not in the data),
    e ~ N(0, 1),           y = [y* > 0], then flipped with probability LABEL_NOISE.

So the exact probability of the label given the observed columns is

    P(y = 1 | x) = LABEL_NOISE + (1 - 2 LABEL_NOISE) * Phi(eta(x) / sqrt(1 + LATENT_SD^2)),

which is written as ``true_probability``. ``eta`` is computed from the values exactly as
written (after rounding), so the probability is exact for the file, not for a hidden
unrounded copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import ndtr

from stepdown_ml.core.schema import (
    AGE_BANDS,
    FUNCTIONS,
    INDUSTRIES,
    MOTIVES,
    RAW_REPLACED_COLUMNS,
    REGIONS,
    TRUE_PROBABILITY,
)
from stepdown_ml.core.skills import SkillVocabulary, load_vocabulary

LATENT_SD = 0.8
LABEL_NOISE = 0.04
YEARS = (2008, 2024)
MOTIVE_SHARES = (0.30, 0.30, 0.20, 0.20)
MOTIVE_EFFECT = {
    "necessity": -0.30,
    "career_change": -0.05,
    "broaden_horizons": 0.05,
    "alternate_route": 0.25,
}
REGION_UNEMPLOYMENT = {"NA": 5.0, "EU": 7.0, "APAC": 4.5, "LATAM": 8.5, "MEA": 10.0}
MANAGER_LEVEL = 6
# Unemployment at or above this rate doubles the cost of a necessity move (Davis & von Wachter).
HIGH_UNEMPLOYMENT = 8.0


@dataclass(frozen=True)
class Effects:
    """Coefficients of ``eta`` (probit scale). Signs follow the facts in docs/DOMAIN.md."""

    intercept: float = -1.20
    avoidable_necessity: float = -0.40
    necessity_high_unemployment: float = -0.45
    unemployment_per_point: float = -0.015
    necessity_per_month_unemployed: float = -0.015
    specialized_coverage: float = 1.40
    general_coverage: float = 0.50
    per_level_down: float = -0.12
    per_level_down_squared: float = -0.08
    function_change: float = -0.30
    industry_only_change: float = 0.35
    manager_industry_change: float = -0.25
    same_employer: float = 0.30
    promotion_path: float = 0.30
    alternate_route_path_and_fit: float = 0.60
    fit_per_point: float = 0.18
    performance_per_point: float = 0.14
    late_career_per_year: float = -0.03


EFFECTS = Effects()


@dataclass(frozen=True)
class Shift:
    """A population other than the training one, for monitoring tests and demonstrations.

    Each field moves one thing and leaves the random draws of everything else as they
    are (the default ``Shift()`` changes nothing, and generates the same records):

    Attributes:
        motive_shares: the motive mix (MOTIVES order) instead of :data:`MOTIVE_SHARES`.
            Motives shape other columns too (how far career changers go down, whether
            they change function, months unemployed after a necessity move).
        region_shares: the region mix (REGIONS order). A region sets the base
            unemployment rate, so the labour market moves with it.
        unemployment_points: added to every unemployment rate (a recession); months
            unemployed after a necessity move grow with it.
        respelled_skills: share of the vocabulary's skills that another HR system spells
            differently (``python`` becomes ``python_hr2``) in both skill columns: those
            tokens fall outside the vocabulary (the outcomes are those of the same skills
            spelled as usual).
    """

    motive_shares: tuple[float, ...] = MOTIVE_SHARES
    region_shares: tuple[float, ...] = (0.3, 0.3, 0.2, 0.1, 0.1)
    unemployment_points: float = 0.0
    respelled_skills: float = 0.0


def _respell(skills: np.ndarray, vocab: SkillVocabulary, share: float, seed: int) -> np.ndarray:
    """Skill lists with a fixed ``share`` of the vocabulary's tokens spelled another way."""
    tokens = sorted(vocab.general_set | {t for f in FUNCTIONS for t in vocab.specialized[f]})
    chosen = np.random.default_rng([seed, 2]).random(len(tokens)) < share
    renamed = {t: f"{t}_hr2" for t, c in zip(tokens, chosen, strict=True) if c}
    return np.array(
        [";".join(renamed.get(t, t) for t in row.split(";")) if row else row for row in skills], dtype=object
    )


def _choose(rng: np.random.Generator, n: int, pool: int, k: np.ndarray) -> np.ndarray:
    """Boolean (n, pool) matrix with ``k[i]`` distinct True entries in row i."""
    order = np.argsort(rng.random((n, pool)), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(pool)[None, :], axis=1)
    return ranks < k[:, None]


def _join_tokens(tokens: np.ndarray, chosen: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """``;``-joined tokens of each row of the boolean matrix, plus an optional extra token."""
    rows, cols = np.nonzero(chosen)
    bounds = np.searchsorted(rows, np.arange(chosen.shape[0] + 1))
    picked = tokens[cols].tolist()
    out = np.empty(chosen.shape[0], dtype=object)
    for i in range(chosen.shape[0]):
        parts = picked[bounds[i] : bounds[i + 1]]
        if extra[i]:
            parts = [*parts, extra[i]]
        out[i] = ";".join(parts)
    return out


def _skill_matrices(
    rng: np.random.Generator,
    vocab: SkillVocabulary,
    motive: np.ndarray,
    current_function: np.ndarray,
    target_function: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Current and target skills as boolean matrices over the vocabulary, and the tokens."""
    n = len(motive)
    n_general = len(vocab.general)
    per_function = len(vocab.specialized[FUNCTIONS[0]])
    tokens = np.array(
        list(vocab.general) + [t for f in FUNCTIONS for t in vocab.specialized[f]], dtype=object
    )
    width = len(tokens)
    current = np.zeros((n, width), dtype=bool)
    target = np.zeros((n, width), dtype=bool)
    # How broad a person's general skill set is: a trait, so coverage varies between people.
    breadth = rng.integers(1, 8, n)
    current[:, :n_general] = _choose(rng, n, n_general, breadth)
    target[:, :n_general] = _choose(rng, n, n_general, rng.integers(2, 6, n))
    own = _choose(rng, n, per_function, rng.integers(3, 8, n))
    wanted = _choose(rng, n, per_function, rng.integers(3, 7, n))
    # Career changers have often prepared: some of the target function's specialized skills.
    prepared = _choose(rng, n, per_function, rng.binomial(5, 0.35, n))
    cols = np.arange(per_function)[None, :]
    current_base = n_general + current_function[:, None] * per_function
    target_base = n_general + target_function[:, None] * per_function
    rows = np.arange(n)[:, None]
    current[rows, current_base + cols] |= own
    target[rows, target_base + cols] |= wanted
    changing = (current_function != target_function) & (motive == MOTIVES.index("career_change"))
    current[rows[changing], target_base[changing] + cols] |= prepared[changing]
    return current, target, tokens


def _niche_tokens(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Occasional skills outside the vocabulary (tools, niche methods)."""
    pool = np.array([f"niche_tool_{i:03d}" for i in range(400)], dtype=object)
    # A long-tailed pool: a few niche tools are common, most are rare.
    weights = 1.0 / np.arange(1, len(pool) + 1) ** 1.1
    picks = pool[rng.choice(len(pool), n, p=weights / weights.sum())]
    return np.where(rng.random(n) < share, picks, "")


def linear_predictor(frame: pd.DataFrame, vocab: SkillVocabulary, effects: Effects = EFFECTS) -> np.ndarray:
    """``eta`` of the label model for transition rows (used for ``true_probability``)."""
    from stepdown_ml.core.features import skill_overlap  # the same overlap the model sees

    overlap = skill_overlap(frame["current_skills"], frame["target_skills"], vocab)
    target_general = np.maximum(overlap["target_general"], 1)
    target_specialized = np.maximum(overlap["target_specialized"], 1)
    general_coverage = overlap["shared_general"] / target_general
    specialized_coverage = overlap["shared_specialized"] / target_specialized
    motive = frame["motive"].to_numpy()
    necessity = motive == "necessity"
    avoidable = np.nan_to_num(frame["necessity_avoidable"].to_numpy(dtype=float))
    unemployment = frame["unemployment_rate"].to_numpy(dtype=float)
    months = frame["months_unemployed"].to_numpy(dtype=float)
    current_level = frame["current_level"].to_numpy(dtype=float)
    down = current_level - frame["target_level"].to_numpy(dtype=float)
    function_change = frame["current_function"].to_numpy() != frame["target_function"].to_numpy()
    industry_change = frame["current_industry"].to_numpy() != frame["target_industry"].to_numpy()
    e = effects
    eta = e.intercept + pd.Series(motive).map(MOTIVE_EFFECT).to_numpy(dtype=float)
    # Necessity hurts, more when avoidable, about twice as much when unemployment is high.
    high_unemployment = unemployment >= HIGH_UNEMPLOYMENT
    eta += necessity * (
        e.avoidable_necessity * avoidable
        + e.necessity_high_unemployment * high_unemployment
        + e.necessity_per_month_unemployed * months
    )
    eta += e.unemployment_per_point * (unemployment - 5.0)
    # Transferable skills help, concavely; specialized matches carry more than general ones.
    eta += e.specialized_coverage * _saturating(specialized_coverage)
    eta += e.general_coverage * _saturating(general_coverage)
    eta += e.per_level_down * down + e.per_level_down_squared * down**2
    # Occupation experience outweighs industry experience, except for managers.
    eta += e.function_change * function_change
    eta += e.industry_only_change * (industry_change & ~function_change)
    eta += e.manager_industry_change * (industry_change & (current_level >= MANAGER_LEVEL))
    eta += e.same_employer * frame["same_employer"].to_numpy(dtype=float)
    promotion_path = frame["promotion_path"].to_numpy(dtype=float)
    eta += e.promotion_path * promotion_path
    # "Another way to advance" works when there is a defined path and the person can succeed.
    fit = frame["fit_score"].to_numpy(dtype=float)
    eta += e.alternate_route_path_and_fit * (motive == "alternate_route") * promotion_path * (fit >= 4)
    eta += e.fit_per_point * (fit - 3)
    eta += e.performance_per_point * (frame["performance_rating"].to_numpy(dtype=float) - 3)
    years = frame["years_experience"].to_numpy(dtype=float)
    eta += e.late_career_per_year * np.maximum(years - 25.0, 0.0)
    return eta


def _saturating(coverage: np.ndarray) -> np.ndarray:
    """Diminishing returns: the first shared skills matter most (0 at 0, 1 at full coverage)."""
    return (1 - np.exp(-4 * coverage)) / (1 - np.exp(-4.0))


def probability_from_eta(eta: np.ndarray) -> np.ndarray:
    """Exact P(label = 1 | observed columns) given ``eta``."""
    return LABEL_NOISE + (1 - 2 * LABEL_NOISE) * ndtr(eta / np.sqrt(1 + LATENT_SD**2))


def generate_transitions(
    rows: int, seed: int, vocab: SkillVocabulary | None = None, shift: Shift | None = None
) -> pd.DataFrame:
    """Generate ``rows`` transition records (docs/CONTRACT.md Transition layout + ``true_probability``).

    Args:
        rows: number of records.
        seed: random seed; the same (rows, seed) always gives the same records.
        vocab: skills vocabulary (default: the project's).
        shift: another population (:class:`Shift`); default the training population.

    Returns:
        The records, one per row, columns in contract order.
    """
    if rows < 1:
        raise ValueError(f"rows must be a positive integer, got {rows}")
    vocab = vocab or load_vocabulary()
    rng = np.random.default_rng(seed)
    n = rows
    shift = shift or Shift()
    motive_idx = rng.choice(len(MOTIVES), n, p=shift.motive_shares)
    motive = np.array(MOTIVES, dtype=object)[motive_idx]
    necessity = motive_idx == MOTIVES.index("necessity")
    career_change = motive_idx == MOTIVES.index("career_change")
    broaden = motive_idx == MOTIVES.index("broaden_horizons")

    current_level = rng.choice(
        np.arange(1, 11), n, p=[0.04, 0.10, 0.14, 0.16, 0.15, 0.13, 0.1, 0.08, 0.06, 0.04]
    )
    max_down = np.minimum(current_level - 1, 4)
    # Career changers go further down; the other motives mostly one or two levels.
    wanted_down = np.where(career_change, rng.integers(1, 5, n), rng.integers(0, 3, n))
    down = np.minimum(wanted_down, max_down)
    target_level = current_level - down

    n_functions, n_industries = len(FUNCTIONS), len(INDUSTRIES)
    current_function = rng.integers(0, n_functions, n)
    other_function = (current_function + rng.integers(1, n_functions, n)) % n_functions
    keeps_function = np.where(career_change, rng.random(n) < 0.1, rng.random(n) < 0.75)
    target_function = np.where(keeps_function, current_function, other_function)
    current_industry = rng.integers(0, n_industries, n)
    other_industry = (current_industry + rng.integers(1, n_industries, n)) % n_industries
    target_industry = np.where(rng.random(n) < 0.55, current_industry, other_industry)

    same_employer = (rng.random(n) < np.where(broaden, 0.45, np.where(necessity, 0.08, 0.25))).astype(int)
    current_matrix, target_matrix, tokens = _skill_matrices(
        rng, vocab, motive_idx, current_function, target_function
    )
    current_skills = _join_tokens(tokens, current_matrix, _niche_tokens(rng, n, 0.15))
    target_skills = _join_tokens(tokens, target_matrix, _niche_tokens(rng, n, 0.10))

    years = np.clip(2.6 * current_level + rng.gamma(2.0, 2.0, n) - 2.0, 0, 50).round(1)
    age = np.clip(21 + years + rng.gamma(2.0, 1.5, n), 18, 75)
    age_band_idx = np.searchsorted(np.array([25, 35, 45, 55, 65]), age, side="right")
    performance = np.clip(np.round(rng.normal(3.4, 0.9, n)), 1, 5).astype(int)
    fit = np.clip(np.round(rng.normal(3.2, 1.0, n)), 1, 5).astype(int)
    promotion_path = (rng.random(n) < np.where(same_employer == 1, 0.6, 0.45)).astype(int)
    region_idx = rng.choice(len(REGIONS), n, p=shift.region_shares)
    year = rng.integers(YEARS[0], YEARS[1] + 1, n)
    downturn = np.isin(year, (2009, 2010, 2011, 2020)) * 2.5
    base_rate = np.array([REGION_UNEMPLOYMENT[r] for r in REGIONS])[region_idx]
    unemployment = np.clip(
        base_rate + downturn + shift.unemployment_points + rng.normal(0, 1.5, n), 0.5, 30
    ).round(1)
    months_unemployed = np.where(
        necessity,
        np.minimum(np.round(rng.exponential(4 + 0.5 * unemployment)), 120),
        np.where(rng.random(n) < 0.05, np.minimum(np.round(rng.exponential(3, n)), 120), 0),
    ).astype(int)
    avoidable = np.where(necessity, (rng.random(n) < 0.4).astype(float), np.nan)

    frame = pd.DataFrame(
        {
            "candidate_id": [f"c{seed:x}-{i:08d}" for i in range(n)],
            "motive": motive,
            "necessity_avoidable": pd.array(avoidable, dtype="Int64"),
            "current_level": current_level,
            "target_level": target_level,
            "current_function": np.array(FUNCTIONS, dtype=object)[current_function],
            "target_function": np.array(FUNCTIONS, dtype=object)[target_function],
            "current_industry": np.array(INDUSTRIES, dtype=object)[current_industry],
            "target_industry": np.array(INDUSTRIES, dtype=object)[target_industry],
            "same_employer": same_employer,
            "current_skills": current_skills,
            "target_skills": target_skills,
            "years_experience": years,
            "performance_rating": performance,
            "fit_score": fit,
            "promotion_path": promotion_path,
            "unemployment_rate": unemployment,
            "months_unemployed": months_unemployed,
            "age_band": np.array(AGE_BANDS, dtype=object)[age_band_idx],
            "region": np.array(REGIONS, dtype=object)[region_idx],
            "transition_year": year,
        }
    )
    eta = linear_predictor(frame, vocab)
    latent = rng.normal(0, LATENT_SD, n)
    noise = rng.normal(0, 1, n)
    advanced = (eta + latent + noise > 0) ^ (rng.random(n) < LABEL_NOISE)
    # Stronger moves pay off sooner.
    speed = np.clip(eta + latent, -2, 3)
    months = np.clip(np.round(36 * rng.beta(2.0, 2.0 + speed + 2.0, n)), 1, 36)
    frame["advanced_within_36m"] = advanced.astype(int)
    frame["months_to_regain"] = pd.array(np.where(advanced, months, np.nan), dtype="Int64")
    frame["true_probability"] = probability_from_eta(eta)
    if shift.respelled_skills:  # another spelling of the same skills: the outcomes stay as they were
        for column in ("current_skills", "target_skills"):
            frame[column] = _respell(frame[column].to_numpy(), vocab, shift.respelled_skills, seed)
    return frame


FIRST_NAMES = (
    "Ada",
    "Ben",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farah",
    "Gustavo",
    "Hana",
    "Ibrahim",
    "Julia",
    "Kenji",
    "Lena",
    "Mateo",
    "Nadia",
    "Omar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Amara",
    "Bjorn",
    "Carmen",
    "Deepak",
)
LAST_NAMES = (
    "Abara",
    "Becker",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Ueda",
    "Varga",
    "Wojcik",
    "Xu",
    "Yilmaz",
    "Zhou",
    "Andersson",
    "Bianchi",
)
CITIES = {
    "NA": ("Toronto", "Chicago", "Austin", "Seattle", "Montreal", "Denver", "Boston"),
    "EU": ("Berlin", "Lyon", "Milan", "Krakow", "Rotterdam", "Porto", "Gothenburg"),
    "APAC": ("Osaka", "Pune", "Brisbane", "Busan", "Cebu", "Penang", "Auckland"),
    "LATAM": ("Monterrey", "Cordoba", "Medellin", "Curitiba", "Valparaiso", "Arequipa"),
    "MEA": ("Nairobi", "Casablanca", "Dubai", "Lagos", "Durban", "Amman"),
}
EMPLOYER_WORDS = (
    ("Blue", "North", "Silver", "Bright", "Iron", "Green", "Summit", "Harbor", "Nova", "Atlas"),
    ("Works", "Labs", "Systems", "Partners", "Group", "Dynamics", "Holdings", "Solutions"),
)
LEVEL_TITLES = (
    "Junior",
    "Associate",
    "",
    "Senior",
    "Lead",
    "Manager,",
    "Senior Manager,",
    "Director,",
    "VP,",
    "Chief",
)
FUNCTION_TITLES = {
    "engineering": "Software Engineer",
    "data": "Data Scientist",
    "product": "Product Manager",
    "design": "Designer",
    "marketing": "Marketing Specialist",
    "sales": "Account Executive",
    "finance": "Financial Analyst",
    "hr": "HR Partner",
    "operations": "Operations Analyst",
    "legal": "Counsel",
    "customer_support": "Support Specialist",
    "research": "Researcher",
}
AGE_BAND_RANGES = {
    "18-24": (18, 24),
    "25-34": (25, 34),
    "35-44": (35, 44),
    "45-54": (45, 54),
    "55-64": (55, 64),
    "65+": (65, 72),
}


def _titles(levels: np.ndarray, functions: np.ndarray) -> np.ndarray:
    words = np.array(LEVEL_TITLES, dtype=object)[levels - 1]
    names = pd.Series(functions).map(FUNCTION_TITLES).to_numpy(dtype=object)
    return np.array([f"{w} {t}".strip() for w, t in zip(words, names, strict=True)], dtype=object)


def generate_raw(rows: int, seed: int, vocab: SkillVocabulary | None = None) -> pd.DataFrame:
    """Raw records (docs/CONTRACT.md): transitions with realistic but fake identifying columns.

    The identities are invented; they exist to exercise the anonymizer.
    """
    transitions = generate_transitions(rows, seed, vocab)
    rng = np.random.default_rng([seed, 1])
    n = len(transitions)
    first = np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), n)]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), n)]
    employee_number = rng.permutation(n) + 100_000
    full_name = first + " " + last
    email = [
        f"{f.lower()}.{s.lower()}{e % 1000}@example.org"
        for f, s, e in zip(first, last, employee_number, strict=True)
    ]
    year = transitions["transition_year"].to_numpy()
    day_of_year = rng.integers(0, 365, n)
    transition_date = pd.to_datetime(year.astype(str), format="%Y") + pd.to_timedelta(day_of_year, unit="D")
    bands = transitions["age_band"].to_numpy()
    low = np.array([AGE_BAND_RANGES[b][0] for b in bands])
    high = np.array([AGE_BAND_RANGES[b][1] for b in bands])
    age_days = (low + rng.random(n) * (high - low + 1)) * 365.25
    birth_date = transition_date - pd.to_timedelta(np.floor(age_days).astype(int) + 1, unit="D")
    regions = transitions["region"].to_numpy()
    city = np.array(
        [CITIES[r][i % len(CITIES[r])] for r, i in zip(regions, rng.integers(0, 60, n), strict=True)],
        dtype=object,
    )
    adjectives, nouns = EMPLOYER_WORDS
    employer_names = np.array([f"{a} {b}" for a in adjectives for b in nouns], dtype=object)
    current_employer = employer_names[rng.integers(0, len(employer_names), n)]
    other = employer_names[rng.integers(0, len(employer_names), n)]
    same = transitions["same_employer"].to_numpy() == 1
    # A different employer must really differ, or the anonymizer would derive an internal move.
    other = np.where(other == current_employer, other + " International", other)
    target_employer = np.where(same, current_employer, other)
    current_level = transitions["current_level"].to_numpy()
    target_level = transitions["target_level"].to_numpy()
    base = 30_000 * 1.18 ** (current_level - 1)
    current_salary = np.round(base * rng.lognormal(0, 0.15, n), -2)
    target_salary = np.round(
        current_salary * 1.18 ** (target_level - current_level) * rng.lognormal(0, 0.08, n), -2
    )
    raw = transitions.drop(columns=[*RAW_REPLACED_COLUMNS, TRUE_PROBABILITY])
    raw["employee_id"] = [f"E{e:07d}" for e in employee_number]
    raw["full_name"] = full_name
    raw["email"] = email
    raw["birth_date"] = birth_date.strftime("%Y-%m-%d")
    raw["city"] = city
    raw["current_employer"] = current_employer
    raw["target_employer"] = target_employer
    raw["current_title"] = _titles(current_level, transitions["current_function"].to_numpy())
    raw["target_title"] = _titles(target_level, transitions["target_function"].to_numpy())
    raw["transition_date"] = transition_date.strftime("%Y-%m-%d")
    raw["current_salary"] = current_salary.astype(int)
    raw["target_salary"] = target_salary.astype(int)
    return raw
