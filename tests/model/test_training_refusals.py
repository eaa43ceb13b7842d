"""Training refuses data it cannot learn from, in one line, and leaves no model directory.

The refusals come before any model is fitted, so those tests are fast; the test that
trains on duplicated rows is marked slow.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from stepdown_ml.cli import main
from stepdown_ml.core.modeldir import MANIFEST_FILE
from stepdown_ml.core.schema import LABEL
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.training.train import (
    DUPLICATE_KEY,
    MIN_CLASS_ROWS,
    MIN_TRAINING_ROWS,
    load_params,
    prepare,
    split,
)


def train(tmp_path, capsys, frame: pd.DataFrame) -> tuple[int, list[str]]:
    data = tmp_path / "train.csv"
    write_csv(frame, data)
    capsys.readouterr()
    code = main(["train", "--no-track", "--data", str(data), "--model-dir", str(tmp_path / "m")])
    return code, capsys.readouterr().err.strip().splitlines()


def assert_refused(tmp_path, capsys, frame: pd.DataFrame, *words: str) -> None:
    code, err = train(tmp_path, capsys, frame)
    assert code == 2, err
    assert len(err) == 1, err
    assert all(word in err[0] for word in words), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"], "no model directory"


def with_outcome_count(frame: pd.DataFrame, outcome: int, count: int) -> pd.DataFrame:
    """``frame`` with all but ``count`` rows of ``outcome`` flipped to the other outcome."""
    frame = frame.copy()
    rows = frame.index[frame[LABEL].astype(int) == outcome]
    frame.loc[rows[count:], LABEL] = 1 - outcome
    return frame


@pytest.mark.parametrize("rows", [5, 100, MIN_TRAINING_ROWS - 1])
def test_too_few_rows_are_refused(tmp_path, capsys, rows):
    frame = generate_transitions(rows, seed=11)
    frame.loc[frame.index[:2], LABEL] = [0, 1]  # both outcomes: only the row count is wrong
    assert_refused(tmp_path, capsys, frame, f"{rows} distinct valid rows", f"at least {MIN_TRAINING_ROWS}")


@pytest.mark.parametrize(("outcome", "count"), [(1, 1), (1, 2), (1, MIN_CLASS_ROWS - 1), (0, 2)])
def test_too_few_rows_of_either_outcome_are_refused(tmp_path, capsys, outcome, count):
    frame = with_outcome_count(generate_transitions(1_000, seed=12), outcome, count)
    assert_refused(tmp_path, capsys, frame, f"{count} distinct rows with {LABEL} = {outcome}", "add rows")


def test_thousands_of_copies_of_two_rows_are_refused(tmp_path, capsys):
    two = with_outcome_count(with_outcome_count(generate_transitions(2, seed=13), 1, 1), 0, 1)
    assert sorted(two[LABEL].astype(int)) == [0, 1]
    frame = pd.concat([two] * 2_500, ignore_index=True)
    assert_refused(tmp_path, capsys, frame, "2 distinct valid rows (5000 rows with copies)")


@pytest.mark.parametrize("value", ["7.5", "abc", "1.01", "", "nan"])
def test_an_invalid_true_probability_is_refused_with_its_row(tmp_path, capsys, value):
    frame = generate_transitions(400, seed=14).astype({"true_probability": str})
    frame.loc[frame.index[36], "true_probability"] = value
    assert_refused(tmp_path, capsys, frame, "row 37, column true_probability", repr(value))


def copies_in_more_than_one_part(splits) -> int:
    keys = [set(map(tuple, part[list(DUPLICATE_KEY)].astype(str).to_numpy())) for part in splits]
    return len((keys[0] & keys[1]) | (keys[0] & keys[2]) | (keys[1] & keys[2]))


def test_the_split_keeps_copies_together_and_is_unchanged_without_copies():
    params = load_params()["split"]
    values = prepare(generate_transitions(1_000, seed=15).astype(str))
    plain = split(values, params)
    tripled = prepare(pd.concat([values.astype(str)] * 3, ignore_index=True).sample(frac=1, random_state=1))
    parts = split(tripled, params)
    parts_list = (parts.train, parts.validation, parts.test)
    assert sum(len(p) for p in parts_list) == len(tripled)
    assert copies_in_more_than_one_part(parts_list) == 0
    # Without copies: the plain stratified split of the rows, in the same order.
    held_out = params["validation"] + params["test"]
    train, rest = train_test_split(
        values, test_size=held_out, stratify=values[LABEL], random_state=params["random_state"]
    )
    validation, test = train_test_split(
        rest, test_size=params["test"] / held_out, stratify=rest[LABEL], random_state=params["random_state"]
    )
    for ours, theirs in zip(
        (plain.train, plain.validation, plain.test), (train, validation, test), strict=True
    ):
        assert list(ours.index) == list(theirs.index)


@pytest.mark.slow  # trains two models on 4k and 12k rows
def test_duplicated_rows_do_not_leak_across_the_split(tmp_path, capsys):
    base = generate_transitions(4_000, seed=16)
    # Appended copies: the split draws the same rows as for the plain file, copies follow.
    tripled = pd.concat([base] * 3, ignore_index=True)
    aucs = []
    for name, frame in (("plain", base), ("tripled", tripled)):
        data = tmp_path / f"{name}.csv"
        write_csv(frame, data)
        capsys.readouterr()
        code = main(["train", "--no-track", "--data", str(data), "--model-dir", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 0, err
        assert ("8000 row(s) repeat another row" in err) == (name == "tripled"), err
        manifest = json.loads((tmp_path / name / MANIFEST_FILE).read_text(encoding="utf-8"))
        aucs.append(manifest["metrics"]["test"]["roc_auc"])
    assert abs(aucs[1] - aucs[0]) <= 0.03, aucs
    assert np.isfinite(aucs).all()
