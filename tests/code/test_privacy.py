"""Independent checks of the release (docs/PRIVACY.md): pycanon's k and l, and a linkage
attack by someone who knows every quasi-identifier of the persons they look for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from pycanon import anonymity

from stepdown_ml.core.features import skill_overlap
from stepdown_ml.core.schema import AGE_BANDS, FUNCTIONS, INDUSTRIES, LABEL, REGIONS
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.datasets.anonymize import anonymize, pseudonymize, raw_transitions
from stepdown_ml.datasets.generalize import (
    QUASI_IDENTIFIERS,
    TOP,
    TrueValues,
    qi_codes,
    representatives,
    true_values,
)
from stepdown_ml.datasets.generate import CITIES, generate_raw
from tests.privacy import qi_frame, values_of

KEY = b"privacy-test-key-3c9a1f0e7b5d2486af"
ROWS, SEED = 8_000, 3


@pytest.fixture(scope="module")
def release() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    raw = generate_raw(ROWS, SEED)
    out, report = anonymize(raw, KEY)  # the defaults: k=5, l=2
    # As written to and read from a file: text.
    out = out.astype(str).replace({"<NA>": "", "nan": ""})
    return raw, out, report


def attacker_table(raw: pd.DataFrame) -> TrueValues:
    """What the attacker knows of each person, derived here from the raw records with
    pandas (not with the anonymizer's own code)."""
    born, moved = pd.to_datetime(raw["birth_date"]), pd.to_datetime(raw["transition_date"])
    before_birthday = (moved.dt.month < born.dt.month) | (
        (moved.dt.month == born.dt.month) & (moved.dt.day < born.dt.day)
    )
    age = moved.dt.year - born.dt.year - before_birthday.astype(int)
    band = pd.cut(age, [0, 24, 34, 44, 54, 64, 200], labels=list(AGE_BANDS)).astype(str)
    region = raw["city"].map({city: r for r, cities in CITIES.items() for city in cities})
    salary = (100 * (raw["target_salary"] - raw["current_salary"]) / raw["current_salary"]).round()
    frame = raw.assign(age_band=band, region=region, transition_year=moved.dt.year, salary_change_pct=salary)
    overlap = skill_overlap(
        raw["current_skills"].fillna(""), raw["target_skills"].fillna(""), load_vocabulary()
    )
    return true_values(frame, overlap)


def test_one_record_per_person() -> None:
    # pycanon counts records; the anonymizer counts persons. They agree only if each person
    # has one record, which the generator gives.
    raw = generate_raw(ROWS, SEED)
    assert raw["employee_id"].is_unique


def test_pycanon_confirms_k_and_l(release: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    _, out, report = release
    levels = report["generalization"]["levels"]
    frame = qi_frame(values_of(out), levels).assign(label=out[LABEL].to_numpy())
    qi = list(QUASI_IDENTIFIERS)
    k = anonymity.k_anonymity(frame, qi)
    l_div = anonymity.l_diversity(frame, qi, ["label"])
    assert k >= 5 and l_div >= 2
    assert k == report["k_reached"] and l_div == report["l_reached"]
    assert len(out) >= 0.7 * ROWS


def test_pycanon_sees_the_risk_without_generalization() -> None:
    # The check can fail: on the exact values of the same records k is 1.
    raw = generate_raw(2_000, SEED)
    exact = raw_transitions(raw, KEY)
    frame = qi_frame(values_of(exact), dict.fromkeys(QUASI_IDENTIFIERS, 0))
    assert anonymity.k_anonymity(frame, list(QUASI_IDENTIFIERS)) == 1


def _matches(attacker: pd.DataFrame, released: pd.DataFrame, ids: pd.Series) -> pd.Series:
    """For each attacker row, how many distinct released persons share its groups."""
    qi = list(QUASI_IDENTIFIERS)
    persons = released.assign(cid=ids.to_numpy()).groupby(qi)["cid"].nunique().rename("n").reset_index()
    joined = attacker.merge(persons, on=qi, how="left")
    return joined["n"].fillna(0).astype(int)


def test_linkage_finds_no_group_smaller_than_k(release: tuple[pd.DataFrame, pd.DataFrame, dict]) -> None:
    raw, out, report = release
    levels = report["generalization"]["levels"]
    attacker = qi_frame(attacker_table(raw), levels)
    released = qi_frame(values_of(out), levels)
    matches = _matches(attacker, released, out["candidate_id"])
    cid = pd.Series(pseudonymize(raw["employee_id"].to_numpy(), KEY))
    in_release = cid.isin(set(out["candidate_id"])).to_numpy()
    assert in_release.sum() == len(out)
    # Every released person is hidden among at least k; the others match nobody or >= k.
    assert matches[in_release].min() >= 5
    assert ((matches == 0) | (matches >= 5)).all()
    # And the person's own row is among the candidates: each released value lies in the
    # band of the true one.
    own = released.set_index(out["candidate_id"].to_numpy())
    mine = attacker[in_release].set_index(cid[in_release].to_numpy()).loc[own.index]
    pd.testing.assert_frame_equal(mine, own, check_dtype=False)


def test_linkage_finds_most_people_in_an_exact_release() -> None:
    # The same attack on a release without generalization pins almost everyone down.
    raw = generate_raw(2_000, SEED)
    exact = raw_transitions(raw, KEY)
    zero = dict.fromkeys(QUASI_IDENTIFIERS, 0)
    matches = _matches(
        qi_frame(attacker_table(raw), zero), qi_frame(values_of(exact), zero), exact["candidate_id"]
    )
    assert (matches == 1).mean() > 0.95


@pytest.mark.parametrize("depth", range(6))
def test_every_released_value_lies_in_its_band(depth: int) -> None:
    # At every level of every hierarchy, the representative falls in the true value's group,
    # and the steps of the move (levels down, function and industry change) stay exact.
    exact = raw_transitions(generate_raw(3_000, 11), KEY)
    truth = values_of(exact)
    levels = {name: min(depth, TOP[name]) for name in QUASI_IDENTIFIERS}
    rep = representatives(truth, levels)
    released = dataclasses.replace(
        truth,
        age_band=pd.Categorical(rep["age_band"], categories=AGE_BANDS).codes.astype(np.int64),
        region=pd.Categorical(rep["region"], categories=REGIONS).codes.astype(np.int64),
        current_industry=pd.Categorical(rep["current_industry"], categories=INDUSTRIES).codes.astype(
            np.int64
        ),
        current_function=pd.Categorical(rep["current_function"], categories=FUNCTIONS).codes.astype(np.int64),
        current_level=rep["current_level"],
        years_experience=rep["years_experience"],
        transition_year=rep["transition_year"],
        salary_change_pct=rep["salary_change_pct"],
        shared_general=rep["shared_general"],
        shared_specialized=rep["shared_specialized"],
        other_skills=rep["other_skills"],
    )
    for name in QUASI_IDENTIFIERS:
        np.testing.assert_array_equal(
            qi_codes(released, name, levels[name]), qi_codes(truth, name, levels[name]), name
        )
    assert ((rep["target_level"] >= 1) & (rep["target_level"] <= rep["current_level"])).all()
    np.testing.assert_array_equal(rep["current_level"] - rep["target_level"], truth.levels_down)
    for side in ("function", "industry"):
        changed = exact[f"current_{side}"].to_numpy() != exact[f"target_{side}"].to_numpy()
        np.testing.assert_array_equal(rep[f"current_{side}"] != rep[f"target_{side}"], changed)
    assert (rep["shared_general"] <= truth.target_general).all()
    assert (rep["shared_specialized"] <= truth.target_specialized).all()
