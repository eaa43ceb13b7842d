"""The data contract in code: every layout the project reads and writes (docs/CONTRACT.md).

The layouts come first (candidate, transition, raw record, scores, rejects), then the
helpers that read them. Parsing a value or a column against a :class:`Column` lives in
:mod:`stepdown_ml.core.parsing`, and validating a record or a frame in
:mod:`stepdown_ml.core.validation`.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

MOTIVES = ("necessity", "career_change", "broaden_horizons", "alternate_route")
FUNCTIONS = (
    "engineering",
    "data",
    "product",
    "design",
    "marketing",
    "sales",
    "finance",
    "hr",
    "operations",
    "legal",
    "customer_support",
    "research",
)
INDUSTRIES = (
    "software",
    "biotech",
    "finance",
    "healthcare",
    "retail",
    "manufacturing",
    "energy",
    "education",
    "public_sector",
    "media",
    "logistics",
    "consulting",
)
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
REGIONS = ("NA", "EU", "APAC", "LATAM", "MEA")
RECOMMENDATIONS = ("take_step_down", "target_lateral", "aim_higher", "reconsider")

SKILL_TOKEN = re.compile(r"[a-z0-9_]+")
SKILLS_PATTERN = r"^[a-z0-9_]+(;[a-z0-9_]+)*$"
SKILLS_RE = re.compile(r"[a-z0-9_]+(?:;[a-z0-9_]+)*")
# A plain decimal number; the same pattern decides for one value and for a column.
NUMBER_PATTERN = r"^[ \t\r\n]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t\r\n]*$"
NUMBER_RE = re.compile(NUMBER_PATTERN)
SKILL_SEPARATOR = ";"
MAX_ID_LENGTH = 64


@dataclass(frozen=True)
class Column:
    """One column of a layout: its name, kind, domain and meaning.

    Kinds: ``id`` (non-empty string up to 64 chars), ``enum`` (one of ``allowed``),
    ``int`` / ``number`` (within ``low``..``high``), ``binary`` (0/1) and ``skills``
    (``;``-separated lowercase tokens, may be empty).
    """

    name: str
    kind: str
    description: str
    allowed: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    nullable: bool = False

    def rule(self) -> str:
        """The rule as a phrase used in rejection reasons and docs."""
        if self.kind == "id":
            return f"a non-empty string of at most {MAX_ID_LENGTH} characters"
        if self.kind == "enum":
            return "one of " + ", ".join(self.allowed)
        if self.kind == "binary":
            return "0 or 1"
        if self.kind == "skills":
            return "';'-separated lowercase tokens [a-z0-9_]+"
        noun = "an integer" if self.kind == "int" else "a number"
        return f"{noun} {_fmt(self.low)}-{_fmt(self.high)}"

    def reason(self, raw: Any) -> str:
        """The rejection sentence for ``raw``."""
        if is_empty(raw):
            return f"{self.name} is required ({self.rule()}), got an empty value"
        return f"{self.name} must be {self.rule()}, got '{_show(raw)}'"


CANDIDATE_COLUMNS: tuple[Column, ...] = (
    Column("candidate_id", "id", "opaque id, echoed in every output row"),
    Column("motive", "enum", "why the person considers the move", allowed=MOTIVES),
    Column(
        "necessity_avoidable",
        "binary",
        "was the necessity avoidable; required when motive is necessity",
        nullable=True,
    ),
    Column("current_level", "int", "career level now (1 entry, 6 manager, 10 executive)", low=1, high=10),
    Column("target_level", "int", "level of the role considered, <= current_level", low=1, high=10),
    Column("current_function", "enum", "profession now", allowed=FUNCTIONS),
    Column("target_function", "enum", "profession of the target role", allowed=FUNCTIONS),
    Column("current_industry", "enum", "industry now", allowed=INDUSTRIES),
    Column("target_industry", "enum", "industry of the target role", allowed=INDUSTRIES),
    Column("same_employer", "binary", "internal move (another department)"),
    Column("current_skills", "skills", "the person's skills", nullable=True),
    Column("target_skills", "skills", "skills the target role requires", nullable=True),
    Column("years_experience", "number", "years of work experience", low=0, high=50),
    Column("performance_rating", "int", "last review", low=1, high=5),
    Column("fit_score", "int", "assessed fit with the target role and team", low=1, high=5),
    Column("promotion_path", "binary", "the target role has a defined path upward"),
    Column("unemployment_rate", "number", "regional rate at decision time, percent", low=0, high=30),
    Column("months_unemployed", "number", "0 when employed", low=0, high=120),
    Column("age_band", "enum", "age band", allowed=AGE_BANDS),
    Column("region", "enum", "world region", allowed=REGIONS),
)
PERSON_ID = Column(
    "person_id",
    "id",
    "optional: groups several target roles of one person; scores are ranked within it",
)
OUTCOME_COLUMNS: tuple[Column, ...] = (
    Column("transition_year", "int", "year of the move", low=1950, high=2100),
    Column(
        "advanced_within_36m",
        "binary",
        "the label: reached a level >= current_level within 36 months of the move",
    ),
    Column(
        "months_to_regain",
        "number",
        "months until that happened; empty when it did not within the record's horizon",
        low=0,
        high=600,
        nullable=True,
    ),
)
TRANSITION_COLUMNS: tuple[Column, ...] = CANDIDATE_COLUMNS + OUTCOME_COLUMNS
TRUE_PROBABILITY = "true_probability"
LABEL = "advanced_within_36m"

RAW_IDENTIFYING_COLUMNS = (
    "employee_id",
    "full_name",
    "email",
    "birth_date",
    "city",
    "current_employer",
    "target_employer",
    "current_title",
    "target_title",
    "transition_date",
    "current_salary",
    "target_salary",
)
RAW_REPLACED_COLUMNS = ("candidate_id", "age_band", "region", "transition_year", "same_employer")

# What batch scoring, predict() and the MLflow pyfunc write, with each column's Arrow type.
SCORES_SCHEMA = pa.schema(
    [
        ("candidate_id", pa.string()),
        ("p_advance", pa.float64()),
        ("recommendation", pa.string()),
        ("reasons", pa.string()),
        ("model_version", pa.string()),
        # How close p_advance is to the threshold (core.recommend.confidence): close_call rows
        # want a human look.
        ("confidence", pa.string()),
    ]
)
SCORES_COLUMNS: tuple[str, ...] = tuple(SCORES_SCHEMA.names)
# Added after SCORES_COLUMNS when the input has person_id: 1 = that person's best option.
RANK_COLUMN = "rank"
RANK_TYPE = pa.int64()
REJECTS_SCHEMA = pa.schema(
    [("row", pa.int64()), ("candidate_id", pa.string()), ("column", pa.string()), ("reason", pa.string())]
)
REJECTS_COLUMNS: tuple[str, ...] = tuple(REJECTS_SCHEMA.names)


class ContractError(ValueError):
    """A file-level contract violation (missing column, unreadable file, empty file)."""


_CANDIDATE_BY_NAME = {c.name: c for c in CANDIDATE_COLUMNS}


def names(columns: Iterable[Column]) -> list[str]:
    """The names of ``columns``, in order."""
    return [c.name for c in columns]


def missing_columns(header: Iterable[str], columns: Sequence[Column]) -> list[str]:
    """Required columns absent from ``header``."""
    present = set(header)
    return [c.name for c in columns if c.name not in present]


def require_columns(header: Iterable[str], columns: Sequence[Column], source: str) -> None:
    """Raise :class:`ContractError` naming ``source`` if ``header`` lacks required columns."""
    missing = missing_columns(header, columns)
    if missing:
        raise ContractError(f"{source}: missing required column(s): {', '.join(missing)}")


def candidate_column(name: str) -> Column:
    """The candidate column spec called ``name``."""
    return _CANDIDATE_BY_NAME[name]


def is_empty(value: Any) -> bool:
    """None, pandas' NA, NaN, or text that is empty or blank: what the contract calls empty."""
    if value is None:
        return True
    pandas = sys.modules.get("pandas")
    if pandas is not None and value is pandas.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _show(value: Any) -> str:
    # A number as it reads, whatever its type: numpy scalars (from pandas' nullable columns)
    # and Decimals show as 9 and -1.50, not np.int64(9) and Decimal('-1.50'). Anything else
    # that is not text as its repr (None, a list, bytes).
    if isinstance(value, str):
        text = value
    elif isinstance(value, (numbers.Number, np.generic)):
        text = str(value)
    else:
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fmt(bound: float | None) -> str:
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else str(bound)
