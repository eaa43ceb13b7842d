"""The Python half of the Spark engine, without Spark: what a task sends back, and how a task's
error reaches the driver. (Spark itself runs in tests/e2e, marked slow.)"""

from __future__ import annotations

import pyarrow as pa
import pytest

from stepdown_ml.core import config
from stepdown_ml.core.schema import ContractError
from stepdown_ml.core.tables import write_csv
from stepdown_ml.serving import spark as engine

FILE = "file:/data/candidates.csv"


@pytest.fixture(scope="module")
def lines(candidates, tmp_path_factory) -> list[str]:
    """A file's lines as Spark's text source gives them: header, 40 rows, 3 of them bad."""
    frame = candidates.head(40).astype(object).copy()
    frame.loc[3, "fit_score"] = 9
    frame.loc[17, "region"] = "Mars"
    path = tmp_path_factory.mktemp("task") / "candidates.csv"
    write_csv(frame, path)
    text = path.read_text().splitlines()
    text.insert(30, "just one field")
    return text


def _task(lines: list[str], reject_cap: int | None, located: bool) -> pa.Table:
    """Run one task's function on one split (batches of 16 lines, as Spark would hand them)."""
    shipped = engine.ShippedModel.from_dir(config.PACKAGED_MODEL_DIR)
    function = engine._score_csv_lines(shipped, lines[0], FILE, "run", reject_cap, located)
    batches = [
        pa.RecordBatch.from_pydict(
            {
                "value": lines[i : i + 16],
                "_file": [FILE] * len(lines[i : i + 16]),
                "_start": [0] * len(lines[i : i + 16]),
            }
        )
        for i in range(0, len(lines), 16)
    ]
    return pa.Table.from_batches(list(function(iter(batches))))


def _of_kind(table: pa.Table, kind: int) -> list[dict]:
    return [row for row in table.to_pylist() if row["kind"] == kind]


def test_a_task_sends_scores_rejects_and_the_count_of_its_split(lines):
    table = _task(lines, reject_cap=None, located=True)
    scores, rejects = _of_kind(table, engine.SCORE), _of_kind(table, engine.REJECT)
    (split,) = _of_kind(table, engine.SPLIT)
    assert split["side"]["lines"] == 42 and split["side"]["file"] == FILE
    assert (split["side"]["scored"], split["side"]["problems"], split["side"]["rejected"]) == (38, 3, 3)
    assert len(scores) == 38 and len(rejects) == 3
    # lines of the split (the header is line 0); the malformed line is the 31st line
    assert sorted(r["at"]["line"] for r in rejects) == [4, 18, 30]
    assert {r["side"]["column"] for r in rejects} == {"fit_score", "region", ""}
    assert [s["at"]["line"] for s in scores][:4] == [1, 2, 3, 5]
    assert all(s["side"] is None for s in scores)


def test_unlocated_scores_carry_only_the_scores_layout_and_rejects_stop_at_the_cap(lines):
    table = _task(lines, reject_cap=1, located=False)
    scores, rejects = _of_kind(table, engine.SCORE), _of_kind(table, engine.REJECT)
    (split,) = _of_kind(table, engine.SPLIT)
    assert len(scores) == 38 and all(s["at"] is None and s["person_id"] is None for s in scores)
    assert len(rejects) == 1 and rejects[0]["at"]["line"] == 4
    assert split["side"]["problems"] == 3  # all counted: the driver sees that one came back of three


def test_a_second_header_fails_the_task(lines):
    other = [",".join(reversed(lines[0].split(","))), *lines[1:]]
    shipped = engine.ShippedModel.from_dir(config.PACKAGED_MODEL_DIR)
    function = engine._score_csv_lines(shipped, lines[0], "file:/data/a.csv", "run", None, False)
    batch = pa.RecordBatch.from_pydict(
        {"value": other, "_file": [FILE] * len(other), "_start": [0] * len(other)}
    )
    with pytest.raises(
        ContractError, match=r"candidates\.csv: its header differs from the one of file:/data/a\.csv"
    ):
        list(function(iter([batch])))


def test_a_contract_error_in_a_task_is_one_here():
    trace = (
        "An exception was thrown from the Python worker.\nTraceback (most recent call last):\n"
        '  File "worker.py", line 1\nstepdown_ml.core.schema.ContractError: b.csv: its header differs\n'
        "\tat org.apache.spark.api.python.BasePythonRunner"
    )
    with pytest.raises(ContractError, match=r"^b\.csv: its header differs$"), engine._task_errors():
        raise RuntimeError(trace)
    with pytest.raises(RuntimeError, match="executor lost"), engine._task_errors():
        raise RuntimeError("executor lost")


def test_a_line_too_long_for_the_reader_is_rejected_as_the_cli_rejects_it(lines, monkeypatch):
    """A task's lines go to the CLI's parser as one piece; a line over the limit is rejected
    there, with the row and the words of the CLI's reader."""
    from stepdown_ml.serving import batch

    monkeypatch.setattr(batch, "MAX_ROW_BYTES", 4096)
    long = [*lines[:11], "x" * 5000, *lines[11:]]  # the 11th line of the split, after the header
    table = _task(long, reject_cap=None, located=True)
    scores, rejects = _of_kind(table, engine.SCORE), _of_kind(table, engine.REJECT)
    assert len(scores) == 38
    too_long = [r for r in rejects if r["side"]["reason"] == batch._too_long()]
    assert [r["at"]["line"] for r in too_long] == [11]
    assert sorted(r["at"]["line"] for r in rejects) == [4, 11, 19, 31]
