"""Unit tests: a service's batch column by column equals it record by record.

``Model.score_records`` validates and featurizes a batch of well-formed records column by
column (``validate_records``, ``transform_columns``) and any other batch record by record
(``validate_record``, ``transform_record``). These tests hold the two to the same answers,
bit for bit, and the same problems, word for word, on generated and on broken records.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepdown_ml.core.features import FeatureSpace
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, SKILLS_RE
from stepdown_ml.core.validation import _skill_lists, validate_record, validate_records
from stepdown_ml.serving import model as serving
from stepdown_ml.serving.model import InvalidCandidateError

NAMES = [c.name for c in CANDIDATE_COLUMNS]


def json_records(frame: Any) -> list[dict[str, Any]]:
    """Records as a service reads them from JSON: str, int, float and None values."""
    return json.loads(frame[NAMES].to_json(orient="records"))


@pytest.fixture(scope="module")
def records(candidates) -> list[dict[str, Any]]:
    return json_records(candidates.head(400))


def answer(model: serving.Model, records: list[Any], columns: bool) -> tuple[str, Any]:
    """score_records' answer (or problems) on the column path or on the record path only."""
    saved = serving.COLUMNS_FROM
    serving.COLUMNS_FROM = 1 if columns else 10**9
    try:
        return "scores", model.score_records(records)
    except InvalidCandidateError as exc:
        return "problems", exc.problems
    finally:
        serving.COLUMNS_FROM = saved


def test_generated_records_take_the_column_path_with_the_record_paths_values(records):
    columns = validate_records(records)
    assert columns is not None
    for i, record in enumerate(records):
        values, problems = validate_record(record)
        assert problems == []
        assert {name: columns[name][i] for name in NAMES} == values  # 3 == 3.0: numbers alike


def test_column_path_equals_record_path_bit_for_bit(served_model, records):
    kind, by_columns = answer(served_model, records, columns=True)
    assert kind == "scores"
    assert by_columns == answer(served_model, records, columns=False)[1]
    p_columns = np.array([r["p_advance"] for r in by_columns])
    p_records = np.array([r["p_advance"] for r in answer(served_model, records, columns=False)[1]])
    assert p_columns.tobytes() == p_records.tobytes()
    assert list(by_columns[0]) == ["candidate_id", "p_advance", "recommendation", "reasons"] + [
        "model_version",
        "confidence",
    ]


def test_column_path_ranks_within_person_as_the_record_path(served_model, records):
    with_person = [{**r, "person_id": f"p{i % 7}"} for i, r in enumerate(records[:50])]
    assert validate_records(with_person) is not None
    kind, by_columns = answer(served_model, with_person, columns=True)
    assert kind == "scores" and all(list(r)[-1] == "rank" for r in by_columns)
    assert by_columns == answer(served_model, with_person, columns=False)[1]


def test_transform_columns_equals_transform_record_bit_for_bit(vocab, records):
    """Empty lists, unknown and repeated tokens: the skill counts are the record path's."""
    rng = random.Random(7)
    mixed = []
    for record in records:
        record = dict(record)
        roll = rng.random()
        if roll < 0.15:
            record["current_skills"] = None
        elif roll < 0.3:
            record["target_skills"] = None
        elif roll < 0.5:
            record["current_skills"] = f"zz_unknown;{record['current_skills'] or 'sql'};zz_unknown;qq1"
            record["target_skills"] = f"qq1;{record['target_skills'] or 'sql'};qq1;zz_other"
        mixed.append(record)
    columns = validate_records(mixed)
    assert columns is not None
    space = FeatureSpace(vocab)
    by_columns = space.transform_columns(columns)
    by_records = np.vstack([space.transform_record(validate_record(r)[0]) for r in mixed])
    assert by_columns.dtype == np.float32 and by_columns.tobytes() == by_records.tobytes()


# Values the record path refuses, or accepts only after a closer look (parse_value).
ODD_VALUES: dict[str, list[Any]] = {
    "candidate_id": ["", "   ", "x" * 65, "é-1", 7, None, "\udcff", " padded "],
    "motive": ["Necessity", " necessity ", "necessity", None, 1, ["necessity"]],
    "necessity_avoidable": [None, "", "1", 1.0, True, 2, -1, "yes"],
    "current_level": ["6", 6.0, 6.5, True, 0, 11, None, "", 10**40, "٣"],
    "target_level": [9, 10, "3", 3.0, None, -3],
    "current_function": ["Data", "data ", "unknown", None, {}],
    "same_employer": [True, False, 1.0, "1", 2, None],
    "current_skills": ["", " ", "sql;;python", ";sql", "sql;", "SQL", "sql python", "sql|python", "sql\n", 5],
    "target_skills": ["", None, "a|b", "é", "sql;python;sql", "sql;\udcff"],
    "years_experience": ["12.5", 12, 50, 50.0001, -0.0, float("nan"), float("inf"), True, None, 10**400],
    "performance_rating": [3.0, "3", 6, None],
    "unemployment_rate": [30, 30.5, "5.5", None, "", -1e-9],
    "months_unemployed": [0, 120, 121, "0", 1.5, None],
    "age_band": ["35-44 ", "35-44", "90+", None],
    "region": ["eu", "EU", None, 3],
}


def _broken(records: list[dict[str, Any]], rng: random.Random) -> list[Any]:
    batch: list[Any] = [dict(r) for r in rng.sample(records, rng.randint(1, 12))]
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(batch))
        roll = rng.random()
        if roll < 0.06:
            batch[i] = rng.choice([["not", "a", "record"], "text", OrderedDict(batch[i]), None])
        elif roll < 0.12 and isinstance(batch[i], dict):
            batch[i].pop(rng.choice(NAMES), None)
        elif roll < 0.2:
            for j, record in enumerate(batch):
                if isinstance(record, dict) and (j == i or rng.random() < 0.7):
                    record["person_id"] = rng.choice(["p1", "p2", "", None, 3])
        elif roll < 0.25 and isinstance(batch[i], dict):
            batch[i].update(motive="necessity", necessity_avoidable=rng.choice([None, "", 0, 1]))
        elif isinstance(batch[i], dict):
            column = rng.choice(list(ODD_VALUES))
            batch[i][column] = rng.choice(ODD_VALUES[column])
    return batch


def test_broken_batches_get_the_record_paths_answer_word_for_word(served_model, records):
    """Random damage: the same scores or the same problems, and the column path never
    accepts a batch in which the record path finds a problem."""
    rng = random.Random(2026)
    taken = 0
    for _ in range(600):
        batch = _broken(records, rng)
        expected = answer(served_model, batch, columns=False)
        assert answer(served_model, batch, columns=True) == expected, batch
        if validate_records(batch) is not None:
            taken += 1
            assert expected[0] == "scores", batch
    assert taken > 20  # some damage is harmless (3 == 3.0, an in-range number): still columns


@given(st.lists(st.text(alphabet="ab9_;|Z é\n", max_size=8), min_size=1, max_size=4))
def test_skill_lists_scan_agrees_with_the_pattern(texts):
    assert _skill_lists(texts) == all(SKILLS_RE.fullmatch(t) for t in texts)


def test_column_path_errors_are_the_record_paths(served_model, records):
    """A batch with a bad record is answered by the record path: every problem, by row."""
    batch = [dict(r) for r in records[:10]]
    batch[3]["fit_score"] = 9
    batch[7]["target_level"] = batch[7]["current_level"] + 1
    kind, problems = answer(served_model, batch, columns=True)
    assert kind == "problems"
    assert [(p["row"], p["column"]) for p in problems] == [(4, "fit_score"), (8, "target_level")]
    assert problems[0]["reason"] == "fit_score must be an integer 1-5, got '9'"
