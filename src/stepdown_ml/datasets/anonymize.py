"""Turn raw career records into anonymized transition records (docs/DOMAIN.md "Privacy").

What happens to a raw record (docs/CONTRACT.md "Raw record"):

* ``employee_id`` becomes ``candidate_id``, a keyed pseudonym: HMAC-SHA256 under a secret
  key taken from ``$STEPDOWN_PSEUDONYM_KEY``, hex, truncated to 32 characters. The same key
  gives the same pseudonym for the same person in every run (records of one person can be
  linked across deliveries); without the key the pseudonym cannot be recomputed or reversed.
  The key is never written to any output, report or message.
* Direct identifiers (name, email, employers, titles, exact dates, salaries, city) are
  dropped, and so is every column the contract does not name: an unknown extra column
  cannot be shown to be harmless.
* Quasi-identifiers are derived: age at the transition date → ``age_band``; city →
  ``region`` (via :data:`CITY_REGIONS`; a record whose city is not in the table is
  rejected and counted, not guessed); transition date → ``transition_year``; salaries →
  ``salary_change_pct`` (an extra column); employers → ``same_employer``.
* k-anonymity (distinct persons) and distinct ℓ-diversity of ``advanced_within_36m`` are
  enforced over every quasi-identifier an acquaintance or a public profile can know
  (:data:`stepdown_ml.datasets.generalize.QUASI_IDENTIFIERS`, the person's skills
  included), by the least-loss generalization that suppresses at most ``max_suppression``
  of the records (:func:`stepdown_ml.datasets.generalize.search`); the groups that still
  fail are suppressed and counted by reason. Released values are representatives inside
  their bands; the steps of the move (levels down, function change, industry change) are
  kept exact.
* The personal skill list is never released: both skill columns are rewritten as canonical
  lists that reproduce the generalized overlap counts the model uses (shared general and
  specialized skills, the person's other skills, the role's counts).
* The pseudonym key must be long and random (:func:`check_key`): a guessable key lets
  anyone reverse pseudonyms of short employee ids by trying them.
* Output rows are ordered by pseudonym, not by input order: a raw file sorted by name or
  employee number would otherwise let row position be linked back to a roster.

Input that breaks the contract (missing column, bad date, wrong type, not UTF-8) stops the
run with one line naming the file, the row and the column of the first problem; nothing is
written. Values of identifying columns are never quoted in those messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stepdown_ml.core.config import (
    DEFAULT_K_ANONYMITY,
    DEFAULT_L_DIVERSITY,
    DEFAULT_MAX_SUPPRESSION,
    PSEUDONYM_KEY_ENV,
)
from stepdown_ml.core.features import skill_overlap
from stepdown_ml.core.schema import (
    AGE_BANDS,
    FUNCTIONS,
    LABEL,
    RAW_REPLACED_COLUMNS,
    REGIONS,
    SKILL_SEPARATOR,
    TRANSITION_COLUMNS,
    Column,
    ContractError,
    names,
)
from stepdown_ml.core.skills import SkillVocabulary, load_vocabulary
from stepdown_ml.core.tables import atomic_paths, check_paths, output_format, read_csv_text, write_csv_to
from stepdown_ml.core.validation import validate_frame
from stepdown_ml.datasets.generalize import (
    FUNCTION_FAMILIES,
    INDUSTRY_FAMILIES,
    LEVEL_NAMES,
    QUASI_IDENTIFIERS,
    node_groups,
    representatives,
    risk,
    search,
    true_values,
)
from stepdown_ml.datasets.generate import CITIES as GENERATOR_CITIES

PSEUDONYM_HEX_CHARS = 32
# Domain separation: the same key used for another purpose never yields these values.
PSEUDONYM_CONTEXT = b"stepdown_ml/candidate_id/v1\x00"
SALARY_CHANGE = "salary_change_pct"
# Fillers standing for skills outside the target role's list (person) or the vocabulary (role).
OWN_SKILL_FILLER = "own_skill"
ROLE_SKILL_FILLER = "role_skill"
MIN_KEY_BYTES = 32
# Byte-frequency estimate: random 32-character hex keys score 88-128 bits.
MIN_KEY_BITS = 80
_PATTERN_RUN = 8
# Lower edges of AGE_BANDS after the first; ages under 18 have no band.
_AGE_EDGES = np.array([25, 35, 45, 55, 65])
MIN_AGE, MAX_AGE = 18, 120

OUTPUT_COLUMNS = (*names(TRANSITION_COLUMNS), SALARY_CHANGE)
# The raw layout's non-identifying columns, checked by the contract's own specs.
RAW_SPECS: tuple[Column, ...] = tuple(c for c in TRANSITION_COLUMNS if c.name not in RAW_REPLACED_COLUMNS)
# Identifying columns the anonymizer reads. full_name, email and the titles are only ever
# dropped, so a raw file without them is accepted.
REQUIRED_IDENTIFYING = (
    "employee_id",
    "birth_date",
    "city",
    "current_employer",
    "target_employer",
    "transition_date",
    "current_salary",
    "target_salary",
)

# Why a valid record can still not be anonymized; counted in the report.
REJECT_UNKNOWN_CITY = "unknown_city"
REJECT_UNDER_18 = "age_under_18"

# City → region. A convenience table, not an authority: it holds the generator's cities and
# large cities whose region is unambiguous. Names shared by cities in different regions
# (Valencia, San Jose, Kingston, Birmingham, Cambridge, Waterloo, ...) are left out, so
# such records are rejected rather than placed in a wrong region; "Cordoba" follows the
# generator (Argentina). EU means Europe (UK, Switzerland, Norway included); Mexico, Central
# America and the Caribbean are LATAM.
CITY_REGIONS: dict[str, str] = {
    **{city: region for region, cities in GENERATOR_CITIES.items() for city in cities},
    **dict.fromkeys(
        (
            "New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Philadelphia",
            "San Antonio", "San Diego", "Dallas", "Austin", "Jacksonville", "Fort Worth",
            "Columbus", "Charlotte", "Indianapolis", "San Francisco", "Seattle", "Denver",
            "Washington", "Boston", "Nashville", "Detroit", "Portland", "Las Vegas", "Atlanta",
            "Miami", "Minneapolis", "Pittsburgh", "Salt Lake City", "Raleigh", "Baltimore",
            "Milwaukee", "Kansas City", "St. Louis", "Saint Louis", "Tampa", "Orlando",
            "Sacramento", "Cleveland", "Cincinnati", "New Orleans", "Oakland", "Palo Alto",
            "Mountain View", "Sunnyvale", "Redmond", "Honolulu", "Anchorage", "Toronto",
            "Montreal", "Vancouver", "Calgary", "Edmonton", "Ottawa", "Winnipeg", "Quebec City",
            "Halifax", "Mississauga",
        ),
        "NA",
    ),
    **dict.fromkeys(
        (
            "London", "Manchester", "Edinburgh", "Glasgow", "Leeds", "Bristol", "Dublin", "Cork",
            "Paris", "Lyon", "Marseille", "Toulouse", "Nice", "Lille", "Bordeaux", "Nantes",
            "Berlin", "Munich", "Hamburg", "Frankfurt", "Cologne", "Stuttgart", "Dusseldorf",
            "Leipzig", "Dresden", "Amsterdam", "Rotterdam", "The Hague", "Utrecht", "Eindhoven",
            "Brussels", "Antwerp", "Ghent", "Luxembourg", "Zurich", "Geneva", "Basel",
            "Lausanne", "Bern", "Vienna", "Graz", "Madrid", "Barcelona", "Seville", "Bilbao",
            "Malaga", "Lisbon", "Porto", "Rome", "Milan", "Turin", "Naples", "Florence",
            "Bologna", "Venice", "Athens", "Thessaloniki", "Stockholm", "Gothenburg", "Malmo",
            "Oslo", "Bergen", "Copenhagen", "Aarhus", "Helsinki", "Tampere", "Reykjavik",
            "Warsaw", "Krakow", "Wroclaw", "Gdansk", "Poznan", "Prague", "Brno", "Bratislava",
            "Budapest", "Bucharest", "Cluj-Napoca", "Sofia", "Belgrade", "Zagreb", "Ljubljana",
            "Tallinn", "Riga", "Vilnius", "Kyiv", "Lviv",
        ),
        "EU",
    ),
    **dict.fromkeys(
        (
            "Tokyo", "Osaka", "Kyoto", "Yokohama", "Nagoya", "Fukuoka", "Sapporo", "Seoul",
            "Busan", "Incheon", "Beijing", "Shanghai", "Shenzhen", "Guangzhou", "Hangzhou",
            "Chengdu", "Wuhan", "Nanjing", "Hong Kong", "Taipei", "Singapore", "Kuala Lumpur",
            "Penang", "Bangkok", "Jakarta", "Surabaya", "Manila", "Cebu", "Ho Chi Minh City",
            "Hanoi", "Mumbai", "Delhi", "New Delhi", "Bangalore", "Bengaluru", "Hyderabad",
            "Chennai", "Pune", "Kolkata", "Ahmedabad", "Gurgaon", "Gurugram", "Noida",
            "Karachi", "Lahore", "Islamabad", "Dhaka", "Colombo", "Kathmandu", "Sydney",
            "Melbourne", "Brisbane", "Perth", "Adelaide", "Canberra", "Auckland", "Wellington",
            "Christchurch",
        ),
        "APAC",
    ),
    **dict.fromkeys(
        (
            "Mexico City", "Monterrey", "Guadalajara", "Puebla", "Tijuana", "Queretaro",
            "Bogota", "Medellin", "Cali", "Barranquilla", "Lima", "Arequipa", "Santiago",
            "Valparaiso", "Buenos Aires", "Cordoba", "Rosario", "Mendoza", "Montevideo",
            "Asuncion", "La Paz", "Quito", "Guayaquil", "Caracas", "Sao Paulo",
            "Rio de Janeiro", "Brasilia", "Belo Horizonte", "Curitiba", "Porto Alegre",
            "Recife", "Salvador", "Fortaleza", "Santo Domingo", "Havana", "Guatemala City",
            "San Salvador", "Tegucigalpa", "Managua",
        ),
        "LATAM",
    ),
    **dict.fromkeys(
        (
            "Dubai", "Abu Dhabi", "Doha", "Riyadh", "Jeddah", "Kuwait City", "Manama", "Muscat",
            "Amman", "Beirut", "Tel Aviv", "Jerusalem", "Haifa", "Cairo", "Alexandria",
            "Casablanca", "Rabat", "Tunis", "Algiers", "Lagos", "Abuja", "Accra", "Nairobi",
            "Mombasa", "Addis Ababa", "Kampala", "Kigali", "Dar es Salaam", "Johannesburg",
            "Cape Town", "Durban", "Pretoria", "Dakar", "Luanda",
        ),
        "MEA",
    ),
}  # fmt: skip


class MissingKeyError(ContractError):
    """The pseudonym key is not set; nothing can be anonymized."""


class WeakKeyError(MissingKeyError):
    """The pseudonym key is too short or too regular to stay secret."""


def read_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonym key from ``$STEPDOWN_PSEUDONYM_KEY``.

    Args:
        environ: the environment to read (default: ``os.environ``).

    Returns:
        The key as bytes (the variable's original bytes on POSIX).

    Raises:
        MissingKeyError: when the variable is unset, empty or only whitespace.
        WeakKeyError: when the key is short or guessable (:func:`check_key`).
    """
    value = (os.environ if environ is None else environ).get(PSEUDONYM_KEY_ENV, "")
    if not value.strip():
        raise MissingKeyError(
            f"the pseudonym key is not set: export {PSEUDONYM_KEY_ENV} with a long random secret "
            "(keep it out of the data and the repository; the same key gives the same pseudonyms)"
        )
    return check_key(os.fsencode(value))


def pseudonymize(ids: Sequence[str] | np.ndarray | pd.Series, key: bytes) -> np.ndarray:
    """Keyed pseudonyms of ``ids``: hex HMAC-SHA256, first 32 characters.

    Args:
        ids: identifiers, already stripped.
        key: the secret key (non-empty).

    Returns:
        An object array of pseudonyms, one per id.
    """
    if not key:
        raise MissingKeyError("the pseudonym key is empty")
    base = hmac.new(key, PSEUDONYM_CONTEXT, hashlib.sha256)
    values = pd.unique(np.asarray(ids, dtype=object))
    table: dict[str, str] = {}
    for value in values:
        mac = base.copy()  # copying the keyed state is cheaper than re-keying per id
        mac.update(str(value).encode("utf-8"))
        table[value] = mac.hexdigest()[:PSEUDONYM_HEX_CHARS]
    return pd.Series(np.asarray(ids, dtype=object)).map(table).to_numpy(dtype=object)


def normalize_city(name: str) -> str:
    """City lookup key: accents removed, case folded, whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split())


def _city_lookup(city_regions: Mapping[str, str]) -> dict[str, str]:
    bad = sorted({r for r in city_regions.values() if r not in REGIONS})
    if bad:
        raise ValueError(f"city table: unknown region(s) {', '.join(bad)}; allowed: {', '.join(REGIONS)}")
    return {normalize_city(c): r for c, r in city_regions.items()}


_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_DATE_LENGTH = 10
_DASHES = (4, 7)


def _text(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Stripped text of a column and a mask of cells that are neither text nor a number."""
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        # The common case (a file read as text): one vectorized strip, missing → "".
        text = pd.Series(series.to_numpy(dtype=object), dtype=object).fillna("").str.strip()
        return text.to_numpy(dtype=object), np.zeros(len(series), dtype=bool)
    values = series.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    not_text = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, str):
            out[i] = v.strip()
        elif v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            out[i] = ""
        elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
            out[i] = str(v)
        else:
            out[i] = ""
            not_text[i] = True
    return out, not_text


def _dates(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dates ``YYYY-MM-DD`` as integers ``YYYYMMDD`` and a mask of invalid cells."""
    n = len(text)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    wide = np.asarray(text, dtype=str)
    shaped = np.char.str_len(wide) == _DATE_LENGTH
    # Code points of the first ten characters, one row per cell.
    chars = np.asarray(wide, dtype=f"<U{_DATE_LENGTH}").view(np.uint32).reshape(n, _DATE_LENGTH)
    digit = (chars >= ord("0")) & (chars <= ord("9"))
    digit_positions = [i for i in range(_DATE_LENGTH) if i not in _DASHES]
    shaped &= digit[:, digit_positions].all(axis=1)
    shaped &= (chars[:, list(_DASHES)] == ord("-")).all(axis=1)
    value = np.where(digit, chars.astype(np.int64) - ord("0"), 0)

    def number(first: int, last: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        for i in range(first, last):
            out = out * 10 + value[:, i]
        return out

    year, month, day = number(0, 4), number(5, 7), number(8, 10)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    days = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    ok = shaped & month_ok & (day >= 1) & (day <= days) & (year >= 1)
    return np.where(ok, year * 10_000 + month * 100 + day, 0), ~ok


def _positive_numbers(text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    number = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").astype("float64").to_numpy()
    ok = np.isfinite(number) & (number > 0)
    return np.where(ok, number, np.nan), ~ok


def _first_problem(
    header: Sequence[str], problems: list[tuple[np.ndarray, str, np.ndarray | str]]
) -> tuple[int, str, str, int, int] | None:
    """The first problem (lowest row, then leftmost column) and the totals.

    ``problems`` holds ``(row_indices, column, reasons)``; reasons is one string for all rows
    or an array aligned with the indices.
    """
    position = {name: i for i, name in enumerate(header)}
    best: tuple[int, int, str, str] | None = None
    total = 0
    rows: set[int] = set()
    for idx, column, reasons in problems:
        if len(idx) == 0:
            continue
        total += len(idx)
        rows.update(idx.tolist())
        first = int(idx.min())
        reason = reasons if isinstance(reasons, str) else str(reasons[int(np.argmin(idx))])
        candidate = (first, position.get(column, len(position)), column, reason)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    if best is None:
        return None
    return best[0], best[2], best[3], total, len(rows)


def _check_raw(raw: pd.DataFrame, source: str) -> dict[str, Any]:
    """Validate a raw frame; return the parsed columns the anonymizer needs.

    Raises:
        ContractError: naming the source, row and column of the first problem.
    """
    if len(raw.columns) != len(set(raw.columns)):
        raise ContractError(f"{source}: row 0 (header): a column is named twice")
    missing = [c.name for c in RAW_SPECS if c.name not in raw.columns]
    missing += [c for c in REQUIRED_IDENTIFYING if c not in raw.columns]
    if missing:
        raise ContractError(f"{source}: row 0 (header): missing required column(s): {', '.join(missing)}")
    if len(raw) == 0:
        raise ContractError(f"{source}: no data rows (only a header); nothing to anonymize")
    # Only the contract columns: validate_frame would also check a person_id column, which
    # the anonymizer drops anyway. An empty candidate_id column is added because
    # validate_frame reads one when it reports problems (and must not see the employee id).
    subset = raw[[c.name for c in RAW_SPECS]].reset_index(drop=True)
    for name in subset.columns:
        # Text held as objects → the string dtype: same values, validate_frame is ~3x faster.
        if subset[name].dtype == object and pd.api.types.infer_dtype(subset[name], skipna=True) == "string":
            subset[name] = subset[name].astype("str")
    subset["candidate_id"] = ""
    checked = validate_frame(subset, RAW_SPECS, source=source)
    problems: list[tuple[np.ndarray, str, np.ndarray | str]] = []
    if len(checked.problems):
        rows = checked.problems["row"].to_numpy() - 1
        for column, part in checked.problems.groupby("column", sort=False):
            problems.append((rows[part.index.to_numpy()], str(column), part["reason"].to_numpy()))
    parsed: dict[str, Any] = {"values": checked.values}
    # Identifying values are never quoted in messages: errors end up in logs.
    for name in REQUIRED_IDENTIFYING:
        text, not_text = _text(raw[name])
        parsed[name] = text
        if not_text.any():
            problems.append((np.flatnonzero(not_text), name, f"{name} must be text (value not shown)"))
    empty_id = parsed["employee_id"] == ""
    problems.append((np.flatnonzero(empty_id), "employee_id", "employee_id is required, got an empty value"))
    for name in ("birth_date", "transition_date"):
        ymd, bad = _dates(parsed[name])
        parsed[name] = ymd
        problems.append(
            (np.flatnonzero(bad), name, f"{name} must be a valid date YYYY-MM-DD (value not shown)")
        )
    year = parsed["transition_date"] // 10_000
    year_spec = next(c for c in TRANSITION_COLUMNS if c.name == "transition_year")
    low, high = int(year_spec.low or 1), int(year_spec.high or 9999)
    out_of_range = (parsed["transition_date"] > 0) & ((year < low) | (year > high))
    problems.append(
        (
            np.flatnonzero(out_of_range),
            "transition_date",
            f"transition_date must fall in the years {low}-{high} (value not shown)",
        )
    )
    both = (parsed["birth_date"] > 0) & (parsed["transition_date"] > 0)
    age = (parsed["transition_date"] - parsed["birth_date"]) // 10_000
    implausible = both & ((parsed["birth_date"] > parsed["transition_date"]) | (age > MAX_AGE))
    problems.append(
        (
            np.flatnonzero(implausible),
            "birth_date",
            f"birth_date must be before transition_date and give an age of at most {MAX_AGE} "
            "(value not shown)",
        )
    )
    parsed["age"] = age
    for name in ("current_salary", "target_salary"):
        number, bad = _positive_numbers(parsed[name])
        parsed[name] = number
        problems.append((np.flatnonzero(bad), name, f"{name} must be a positive number (value not shown)"))
    first = _first_problem(list(raw.columns), problems)
    if first is not None:
        row, column, reason, total, n_rows = first
        more = f" ({total - 1} more problem(s) in {n_rows} row(s))" if total > 1 else ""
        raise ContractError(f"{source}: row {row + 1}, column {column}: {reason}{more}")
    return parsed


def _employer_key(text: np.ndarray) -> np.ndarray:
    return pd.Series(text, dtype=object).map(lambda s: " ".join(s.casefold().split())).to_numpy(dtype=object)


def _counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted) and how often each occurs.

    A sort instead of ``np.unique``, whose hash-based path in numpy 2.4 is ~100x slower
    on a few million integers.
    """
    ordered = np.sort(values)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, int)
    return ordered[starts], np.diff(np.r_[starts, len(ordered)])


def check_key(key: bytes) -> bytes:
    """Refuse a pseudonym key that could be guessed: the pseudonyms of short employee ids
    would then be reversed by trying every id.

    A key must hold at least :data:`MIN_KEY_BYTES` bytes and at least :data:`MIN_KEY_BITS`
    bits by the byte-frequency (Shannon) estimate, and hold no 8-byte stretch twice and no
    8-byte run of one step (``abcdefgh``, ``11111111``).

    Raises:
        WeakKeyError: naming the rule the key breaks (never the key).
    """
    if not key:
        raise MissingKeyError(f"the pseudonym key is empty: set {PSEUDONYM_KEY_ENV}")
    how = "generate one with: python -c 'import secrets; print(secrets.token_hex(32))' (docs/PRIVACY.md)"
    if len(key) < MIN_KEY_BYTES:
        raise WeakKeyError(
            f"the pseudonym key in {PSEUDONYM_KEY_ENV} is too short ({len(key)} bytes, at least "
            f"{MIN_KEY_BYTES} needed): {how}"
        )
    data = np.frombuffer(key, dtype=np.uint8)
    counts = np.bincount(data, minlength=256)
    p = counts[counts > 0] / len(key)
    bits = float(-(p * np.log2(p)).sum()) * len(key)
    run = _PATTERN_RUN
    # A stretch that occurs twice ("password-password"), or a run of one step ("abcdefgh",
    # "11111111"): a person chose it, and people choose alike.
    repeated = any(key[i : i + run] in key[i + 1 :] for i in range(len(key) - run))
    steps = np.diff(data.astype(np.int16))
    stepped = any(len(set(steps[i : i + run - 1].tolist())) == 1 for i in range(len(steps) - run + 2))
    repeated = repeated or stepped
    if bits < MIN_KEY_BITS or repeated:
        raise WeakKeyError(
            f"the pseudonym key in {PSEUDONYM_KEY_ENV} has too little entropy (a repeated or "
            f"patterned value; at least {MIN_KEY_BITS} bits needed): {how}"
        )
    return key


def _canonical_lists(
    shared_general: np.ndarray,
    shared_specialized: np.ndarray,
    other: np.ndarray,
    target_general: np.ndarray,
    target_specialized: np.ndarray,
    target_other: np.ndarray,
    vocab: SkillVocabulary,
) -> tuple[np.ndarray, np.ndarray]:
    """Skill lists made of canonical tokens that reproduce the released overlap counts.

    The person's list holds the first ``shared_general`` general tokens of the vocabulary,
    the first ``shared_specialized`` specialized ones and ``other`` tokens of their own; the
    role's list the first ``target_general`` and ``target_specialized`` and ``target_other``
    tokens of its own. The features (counts, coverage, Jaccard, general vs specialized)
    come out as the released counts; no token says anything about the person.
    """
    general = list(vocab.general)
    specialized = [t for f in FUNCTIONS for t in vocab.specialized[f]]

    def lists(a: np.ndarray, b: np.ndarray, c: np.ndarray, filler: str) -> np.ndarray:
        cache: dict[tuple[int, int, int], str] = {}
        out = np.empty(len(a), dtype=object)
        for i, triple in enumerate(
            zip(*(np.asarray(x, dtype=np.int64).tolist() for x in (a, b, c)), strict=True)
        ):
            text = cache.get(triple)
            if text is None:
                g, s, o = triple
                tokens = general[:g] + specialized[:s] + [f"{filler}_{j + 1:02d}" for j in range(o)]
                text = cache[triple] = SKILL_SEPARATOR.join(tokens)
            out[i] = text
        return out

    current = lists(shared_general, shared_specialized, other, OWN_SKILL_FILLER)
    target = lists(target_general, target_specialized, target_other, ROLE_SKILL_FILLER)
    return current, target


SUPPRESS_K = "fewer_than_k_persons"
SUPPRESS_L = "fewer_than_l_labels"


def _derive(
    raw: pd.DataFrame, key: bytes, city_regions: Mapping[str, str] | None, source: str
) -> tuple[pd.DataFrame, int, np.ndarray, dict[str, int]]:
    """Check the raw records and derive the Transition layout (not yet generalized).

    Returns:
        ``(eligible, rows_in, rejected_mask, rejections)``: the rows that can be
        anonymized, with exact values and the raw skill lists.
    """
    lookup = _city_lookup(CITY_REGIONS if city_regions is None else city_regions)
    parsed = _check_raw(raw, source)
    values: pd.DataFrame = parsed["values"]
    n_in = len(values)

    cities = pd.Series(parsed["city"], dtype=object)
    unique_cities = pd.unique(cities)
    region_of = {c: lookup.get(normalize_city(c)) for c in unique_cities}
    region = cities.map(region_of).to_numpy(dtype=object)
    unknown_city = pd.isna(region)
    under_18 = parsed["age"] < MIN_AGE
    rejected = unknown_city | under_18
    rejections = {
        REJECT_UNKNOWN_CITY: int(unknown_city.sum()),
        # A record can have both problems; it is counted once, under the city.
        REJECT_UNDER_18: int((under_18 & ~unknown_city).sum()),
    }

    current_salary, target_salary = parsed["current_salary"], parsed["target_salary"]
    with np.errstate(invalid="ignore"):
        # Clipped only so that absurd ratios cannot overflow the integer column.
        salary_change = np.clip(np.rint(100.0 * (target_salary - current_salary) / current_salary), -100, 1e9)
    employer_now = _employer_key(parsed["current_employer"])
    employer_next = _employer_key(parsed["target_employer"])
    # Only a named employer can be the same employer; an unemployed person has none.
    same_employer = ((employer_now == employer_next) & (employer_now != "")).astype(np.int64)
    age_band = np.array(AGE_BANDS, dtype=object)[np.searchsorted(_AGE_EDGES, parsed["age"], side="right")]

    out = pd.DataFrame(
        {
            "candidate_id": pseudonymize(parsed["employee_id"], key),
            "age_band": age_band,
            "region": region,
            "same_employer": same_employer,
            "transition_year": parsed["transition_date"] // 10_000,
            SALARY_CHANGE: salary_change,
        }
    )
    for column in RAW_SPECS:
        out[column.name] = values[column.name].to_numpy()
    return out.loc[~rejected].reset_index(drop=True), n_in, rejected, rejections


def raw_transitions(raw: pd.DataFrame, key: bytes, source: str = "input") -> pd.DataFrame:
    """The raw records in the Transition layout, pseudonymized but not generalized.

    For measuring what anonymization costs (docs/PRIVACY.md "Utility"); never a release.
    """
    check_key(key)
    return _typed(_derive(raw, key, None, source)[0])[list(OUTPUT_COLUMNS)]


def anonymize(
    raw: pd.DataFrame,
    key: bytes,
    k: int = DEFAULT_K_ANONYMITY,
    *,
    l_diversity: int = DEFAULT_L_DIVERSITY,
    max_suppression: float = DEFAULT_MAX_SUPPRESSION,
    city_regions: Mapping[str, str] | None = None,
    vocab: SkillVocabulary | None = None,
    weights: Mapping[str, float] | None = None,
    source: str = "input",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Anonymize raw records (no I/O).

    Args:
        raw: raw records (docs/CONTRACT.md "Raw record"), as read (text) or typed.
        key: the secret pseudonym key; never stored in the result or the report.
        k: the minimum number of distinct persons per quasi-identifier group.
        l_diversity: the minimum number of distinct labels (``advanced_within_36m``) per
            group (distinct ℓ-diversity); 1 turns it off.
        max_suppression: the share of eligible records that may be suppressed at the
            chosen generalization (docs/PRIVACY.md).
        city_regions: city → region table (default :data:`CITY_REGIONS`).
        vocab: the skills vocabulary (default: the project's).
        weights: per quasi-identifier weight of its information loss (default
            :data:`stepdown_ml.datasets.generalize.DEFAULT_WEIGHTS`; unnamed ones weigh 1).
        source: the input's name, used in error messages.

    Returns:
        ``(transitions, report)``: the anonymized rows in the Transition layout plus
        ``salary_change_pct``, ordered by ``candidate_id``; and a JSON-ready report.

    Raises:
        ContractError: a missing column, or a row that breaks the raw contract (the first
            problem is named by row and column).
        MissingKeyError: ``key`` is empty; WeakKeyError: it is short or guessable.
        ValueError: ``k``, ``l_diversity`` or ``max_suppression`` out of range.
    """
    check_key(key)
    for name, value in (("k", k), ("l_diversity", l_diversity)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if l_diversity > 2:
        raise ValueError(f"l_diversity must be 1 or 2: the label has two values, got {l_diversity!r}")
    if not 0.0 <= max_suppression <= 1.0:
        raise ValueError(f"max_suppression must be within 0-1, got {max_suppression!r}")
    vocab = load_vocabulary() if vocab is None else vocab
    eligible, n_in, rejected, rejections = _derive(raw, key, city_regions, source)
    persons = pd.factorize(eligible["candidate_id"])[0].astype(np.int64)
    label = eligible[LABEL].to_numpy(dtype=np.int64)
    overlap = skill_overlap(
        eligible["current_skills"].fillna("").to_numpy(dtype=object),
        eligible["target_skills"].fillna("").to_numpy(dtype=object),
        vocab,
    )
    truth = true_values(eligible, overlap)
    found = search(truth, persons, label, int(k), int(l_diversity), max_suppression, weights)
    keep = found.keep
    released = representatives(truth, found.levels)
    kept = eligible.loc[keep].reset_index(drop=True)
    for name in ("age_band", "region", "current_industry", "target_industry", "current_function",
                 "target_function", "current_level", "target_level", "years_experience", "transition_year",
                 SALARY_CHANGE):  # fmt: skip
        kept[name] = released[name][keep]
    target_other = overlap["n_target"] - overlap["target_general"] - overlap["target_specialized"]
    kept["current_skills"], kept["target_skills"] = _canonical_lists(
        released["shared_general"][keep],
        released["shared_specialized"][keep],
        released["other_skills"][keep],
        overlap["target_general"][keep],
        overlap["target_specialized"][keep],
        target_other[keep],
        vocab,
    )
    kept = _typed(kept)
    # Order by pseudonym (then year): input order could follow names or employee numbers.
    kept = kept.sort_values(["candidate_id", "transition_year"], kind="stable").reset_index(drop=True)
    kept = kept[list(OUTPUT_COLUMNS)]

    n_out, n_rejected = len(kept), int(rejected.sum())
    n_suppressed = n_in - n_rejected - n_out
    n_eligible = n_in - n_rejected
    check = found.check
    small = ~keep & (check.persons < k)
    before = risk(node_groups(truth, dict.fromkeys(QUASI_IDENTIFIERS, 0)), persons, label)
    after_groups = node_groups(truth, found.levels)[keep]
    after = risk(after_groups, persons[keep], label[keep])
    report: dict[str, Any] = {
        "k": int(k),
        "l_diversity": int(l_diversity),
        "rows_in": n_in,
        "rows_out": n_out,
        "rows_suppressed": n_suppressed,
        "suppressed_because": {SUPPRESS_K: int(small.sum()), SUPPRESS_L: int((~keep & ~small).sum())},
        "rows_rejected": n_rejected,
        "rejections": rejections,
        # Suppression is measured against the records that could be anonymized at all.
        "suppression_rate": round(n_suppressed / n_eligible, 6) if n_eligible else 0.0,
        "max_suppression": max_suppression,
        "survival_rate": round(n_out / n_in, 6) if n_in else 0.0,
        "k_reached": after["smallest_group"],
        "l_reached": int(check.labels[keep].min()) if n_out else None,
        "groups": after.get("groups", 0),
        "quasi_identifiers": list(QUASI_IDENTIFIERS),
        "group_size_counts": "distinct persons (candidate_id) per quasi-identifier group",
        "risk_before": before,
        "risk_after": after,
        "generalization": {
            "levels": {n: found.levels[n] for n in QUASI_IDENTIFIERS},
            "chosen": {n: LEVEL_NAMES[n][found.levels[n]] for n in QUASI_IDENTIFIERS},
            "hierarchies": {n: list(LEVEL_NAMES[n]) for n in QUASI_IDENTIFIERS},
            "information_loss": round(found.loss, 6),
            "search": found.steps,
            "nodes_evaluated": found.nodes_evaluated,
            "function_families": {f: list(m) for f, m in FUNCTION_FAMILIES.items()},
            "industry_families": {f: list(m) for f, m in INDUSTRY_FAMILIES.items()},
            "released_values": "a representative inside each band (docs/PRIVACY.md); "
            "levels_down, function_change and industry_change are kept exact",
            "age_band": "age in whole years at transition_date",
            "region": "city mapped through the city table; unknown cities rejected",
            "salary": f"{SALARY_CHANGE} = round(100 * (target - current) / current); empty at level *",
            "same_employer": "current_employer == target_employer, case and whitespace ignored",
        },
        "skills": {
            "released_as": "canonical lists reproducing the generalized overlap counts",
            "person_fillers": f"{OWN_SKILL_FILLER}_NN",
            "role_fillers": f"{ROLE_SKILL_FILLER}_NN",
        },
        "pseudonym": {
            "column": "candidate_id",
            "method": "HMAC-SHA256 of employee_id",
            "hex_chars": PSEUDONYM_HEX_CHARS,
            "key_from": PSEUDONYM_KEY_ENV,
            "min_key_bytes": MIN_KEY_BYTES,
        },
        # Every input column whose values do not reach the output (a raw candidate_id too).
        "dropped_columns": sorted(c for c in raw.columns if c not in {s.name for s in RAW_SPECS}),
    }
    _check_output(kept)
    return kept, report


_INT_KINDS = ("int", "binary")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Give the output columns the types the contract names (integers written as integers)."""
    out = frame.copy()
    for column in TRANSITION_COLUMNS:
        data = out[column.name]
        if column.kind in _INT_KINDS:
            number = pd.to_numeric(data).astype("float64")
            out[column.name] = (
                number.astype("Float64").astype("Int64") if column.nullable else number.astype("int64")
            )
        elif column.kind == "number":
            out[column.name] = pd.to_numeric(data).astype("float64")
        else:
            # The string dtype (missing stays missing) also takes validate_frame's fast path.
            out[column.name] = data.astype(object).where(data.notna(), None).astype("str")
    out[SALARY_CHANGE] = pd.to_numeric(out[SALARY_CHANGE]).astype("Float64").astype("Int64")
    return out


def _check_output(frame: pd.DataFrame) -> None:
    """Defensive: the output must follow the Transition layout, or nothing is written."""
    checked = validate_frame(frame, TRANSITION_COLUMNS, source="anonymized output")
    if checked.bad.any():
        first = checked.problems.iloc[0]
        raise RuntimeError(
            f"anonymized output breaks the contract: column {first['column']}: {first['reason']}"
        )


def _locate_non_utf8(path: Path) -> str | None:
    """``row N, column C`` of the first cell that is not UTF-8, or None if the file is UTF-8."""
    import csv  # only on the error path
    import io

    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    for number, row in enumerate(reader):
        if number == 0:
            header = row
        for i, cell in enumerate(row):
            if any("\udc80" <= ch <= "\udcff" for ch in cell):
                if number == 0:
                    return "row 0 (header)"
                column = header[i] if i < len(header) else f"#{i + 1}"
                return f"row {number}, column {column}"
    return None


def anonymize_file(
    raw_path: Path | str,
    out_path: Path | str,
    k: int = DEFAULT_K_ANONYMITY,
    report_path: Path | str | None = None,
    *,
    key: bytes | None = None,
    l_diversity: int = DEFAULT_L_DIVERSITY,
    max_suppression: float = DEFAULT_MAX_SUPPRESSION,
) -> dict[str, Any]:
    """Anonymize a raw CSV file into a transitions CSV, with an optional JSON report.

    Args:
        raw_path: the raw records CSV.
        out_path: where the anonymized transitions go (written atomically).
        k: k-anonymity level (distinct persons per quasi-identifier group).
        report_path: where the JSON report goes (written atomically), if wanted.
        key: the pseudonym key; default ``$STEPDOWN_PSEUDONYM_KEY``.
        l_diversity, max_suppression: see :func:`anonymize`.

    Returns:
        The report (rows_in, rows_out, rows_suppressed, rows_rejected, k_reached, ...).

    Raises:
        MissingKeyError: no key; checked before the input is read.
        ContractError: unreadable or invalid input, named by file, row and column.
    """
    key = read_key() if key is None else check_key(key)
    source, target = Path(raw_path), Path(out_path)
    report_target = None if report_path is None else Path(report_path)
    output_format(target, allowed=("csv",))
    check_paths({"raw input": source}, {"--out": target, "--report": report_target})
    try:
        raw = read_csv_text(source)
    except ContractError as exc:
        where = _locate_non_utf8(source) if source.is_file() and "UTF-8" in str(exc) else None
        if where is None:
            raise
        raise ContractError(f"{source}: {where}: not UTF-8 text (re-save the file as UTF-8)") from None
    frame, report = anonymize(
        raw, key, k, l_diversity=l_diversity, max_suppression=max_suppression, source=str(source)
    )
    if report["rows_out"] == 0 and report["rows_in"] > report["rows_rejected"]:
        raise ContractError(
            f"{source}: every one of the {report['rows_in'] - report['rows_rejected']} valid records "
            f"would be suppressed to reach k={k} and l={l_diversity}: too few persons, or only one "
            f"value of {LABEL} ({report['suppressed_because'][SUPPRESS_K]} in groups under k, "
            f"{report['suppressed_because'][SUPPRESS_L]} in groups of one label; anonymize more "
            "records together, or choose a smaller --k or --l-diversity)"
        )
    # Both files are complete in temporary files, then renamed into place together.
    outputs = (target,) if report_target is None else (target, report_target)
    with atomic_paths(*outputs) as temps:
        write_csv_to(frame, temps[0])  # already a temporary file, renamed with the report
        if report_target is not None:
            temps[1].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report
