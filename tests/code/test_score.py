"""Unit tests: streaming batch scoring (the `stepdown-ml score` command)."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepdown_ml.cli import main
from stepdown_ml.core.schema import REJECTS_COLUMNS, SCORES_COLUMNS
from stepdown_ml.core.tables import write_csv
from stepdown_ml.serving import Model, predict
from stepdown_ml.serving import batch as score_module
from tests.conftest import candidate_record


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def run_score(model_dir, src, out, *extra) -> int:
    return main(["score", str(src), "--out", str(out), "--model-dir", str(model_dir), *extra])


def test_every_row_is_scored_or_rejected(tmp_path, candidates, served_model_dir, served_model):
    frame = candidates.head(400).astype(object).copy()
    frame.loc[10, "fit_score"] = 9
    frame.loc[20, "motive"] = "boredom"
    frame.loc[20, "region"] = "Mars"
    frame.loc[30, "target_level"] = 10
    src = tmp_path / "in.csv"
    write_csv(frame, src)
    assert run_score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = read(tmp_path / "s.csv"), read(tmp_path / "s.rejects.csv")
    assert list(scores.columns) == list(SCORES_COLUMNS)
    assert list(rejects.columns) == list(REJECTS_COLUMNS)
    assert len(scores) == 397
    assert sorted(set(rejects["row"].astype(int))) == [11, 21, 31]
    assert set(rejects["column"]) == {"fit_score", "motive", "region", "target_level"}
    kept = frame.drop(index=[10, 20, 30])
    assert list(scores["candidate_id"]) == list(kept["candidate_id"])  # input order
    expected = predict(kept.reset_index(drop=True), model=served_model)
    np.testing.assert_allclose(scores["p_advance"].astype(float), expected["p_advance"], atol=1e-12)


def test_wrong_field_count_is_a_row_level_reject(tmp_path, candidates, served_model_dir):
    src = tmp_path / "in.csv"
    write_csv(candidates.head(5), src)
    lines = src.read_text().splitlines()
    lines.insert(3, '"short-row",1,2')
    src.write_text("\n".join(lines) + "\n")
    assert run_score(served_model_dir, src, tmp_path / "s.csv") == 0
    rejects = read(tmp_path / "s.rejects.csv")
    assert rejects.to_dict("records") == [
        {"row": "3", "candidate_id": "short-row", "column": "", "reason": "expected 20 fields, got 3"}
    ]
    assert len(read(tmp_path / "s.csv")) == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"candidate_id,motive\nx,necessity\n", "missing required column(s): necessity_avoidable"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "not UTF-8"),
        (b'{"json": true}\n', "missing required column"),
    ],
    ids=["empty", "missing-column", "not-utf8", "not-csv"],
)
def test_broken_files_fail_with_one_line_and_no_output(tmp_path, served_model_dir, capsys, content, message):
    src = tmp_path / "in.csv"
    src.write_bytes(content)
    out = tmp_path / "s.csv"
    assert run_score(served_model_dir, src, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(src) in err[0]
    assert not out.exists() and not (tmp_path / "s.rejects.csv").exists()
    assert not list(tmp_path.glob(".*part"))


def test_a_row_that_is_not_utf8_is_rejected_by_its_number(tmp_path, candidates, served_model_dir):
    src = tmp_path / "in.csv"
    write_csv(candidates.head(300), src)
    lines = src.read_bytes().split(b"\n")
    lines[150] = lines[150].replace(b",", b",\xff", 1)  # row 150 (line 151 counts the header)
    lines[1] = b"\xfe" + lines[1]  # row 1, the first data row
    src.write_bytes(b"\n".join(lines))
    assert run_score(served_model_dir, src, tmp_path / "s.csv") == 0
    rejects = read(tmp_path / "s.rejects.csv")
    assert list(rejects["row"]) == ["1", "150"]
    assert all(r.startswith("not UTF-8 text") for r in rejects["reason"])
    assert len(read(tmp_path / "s.csv")) == 298


def test_a_header_that_is_not_utf8_fails_the_file(tmp_path, candidates, served_model_dir, capsys):
    src = tmp_path / "in.csv"
    write_csv(candidates.head(5), src)
    src.write_bytes(b"\xff" + src.read_bytes())
    assert run_score(served_model_dir, src, tmp_path / "s.csv") == 2
    assert "header: not UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


FORMULAS = [
    ("=1+1", "'=1+1"),
    ("+1", "'+1"),
    ("-cmd", "'-cmd"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("plain", "plain"),
    ("a=b", "a=b"),
]


@pytest.mark.parametrize(("given", "written"), FORMULAS)
def test_formula_cells_are_neutralized_in_scores_and_rejects(tmp_path, served_model_dir, given, written):
    src = tmp_path / "in.csv"
    rows = [candidate_record(candidate_id=given), candidate_record(candidate_id=given, fit_score="9")]
    write_csv(pd.DataFrame(rows), src)
    src.write_text(src.read_text().replace("'" + given, given))  # undo the writer's own guard
    assert run_score(served_model_dir, src, tmp_path / "s.csv") == 0
    assert read(tmp_path / "s.csv")["candidate_id"].tolist() == [written]
    assert read(tmp_path / "s.rejects.csv")["candidate_id"].tolist() == [written]


def test_failure_mid_write_leaves_no_partial_file(tmp_path, candidates, served_model_dir, monkeypatch):
    src = tmp_path / "in.csv"
    write_csv(candidates.head(300), src)
    out = tmp_path / "s.csv"
    out.write_text("previous results\n")
    monkeypatch.setattr(score_module, "BLOCK_BYTES", 4096)
    calls = {"n": 0}
    original = score_module._scores_table

    def failing(scores):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (injected)")
        return original(scores)

    monkeypatch.setattr(score_module, "_scores_table", failing)
    with pytest.raises(OSError, match="injected"):
        score_module.score_file(src, out, model=Model(served_model_dir))
    assert out.read_text() == "previous results\n"
    assert not (tmp_path / "s.rejects.csv").exists()
    assert not list(tmp_path.glob(".*part*"))


def test_ranking_across_chunks(tmp_path, candidates, served_model_dir, served_model, monkeypatch):
    """One person's options spread over many blocks are ranked over the whole file."""
    monkeypatch.setattr(score_module, "BLOCK_BYTES", 4096)
    frame = candidates.head(240).copy()
    frame["person_id"] = [f"p{i % 7}" for i in range(len(frame))]
    src = tmp_path / "in.csv"
    write_csv(frame, src)
    summary = score_module.score_file(src, tmp_path / "s.csv", model=served_model)
    assert summary.scored == 240
    scores = read(tmp_path / "s.csv")
    expected = predict(frame, model=served_model)
    assert scores["rank"].astype(int).tolist() == expected["rank"].tolist()
    assert sorted(scores[frame["person_id"].to_numpy() == "p3"]["rank"].astype(int)) == list(range(1, 35))


def test_gzip_and_parquet_inputs(tmp_path, candidates, served_model_dir):
    frame = candidates.head(100)
    csv_path = tmp_path / "in.csv"
    write_csv(frame, csv_path)
    gz_path = tmp_path / "in.csv.gz"
    gz_path.write_bytes(gzip.compress(csv_path.read_bytes()))
    pq_path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(frame.astype(str).replace({"<NA>": ""})), pq_path)
    outputs = []
    for i, path in enumerate((csv_path, gz_path, pq_path)):
        out = tmp_path / f"s{i}.csv"
        assert run_score(served_model_dir, path, out, "--chunk-rows", "17") == 0
        outputs.append(read(out))
    pd.testing.assert_frame_equal(outputs[0], outputs[1])
    pd.testing.assert_frame_equal(outputs[0], outputs[2])


def test_parquet_output(tmp_path, candidates, served_model_dir):
    src = tmp_path / "in.csv"
    write_csv(candidates.head(50), src)
    assert run_score(served_model_dir, src, tmp_path / "s.parquet") == 0
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column_names == list(SCORES_COLUMNS) and table.num_rows == 50


def test_progress_line_on_a_terminal_and_quiet_otherwise(tmp_path, candidates, served_model, capsys):
    src = tmp_path / "in.csv"
    write_csv(candidates.head(100), src)
    score_module.score_file(src, tmp_path / "a.csv", model=served_model, progress=True)
    shown = capsys.readouterr().err
    assert "100 rows" in shown and "rows/s" in shown and "100.0%" in shown and "ETA" in shown
    score_module.score_file(src, tmp_path / "b.csv", model=served_model)  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


def test_scoring_a_clean_file_never_loads_pandas(tmp_path, candidates, served_model_dir):
    """The batch path stays in Arrow: pandas (~0.2 s to load, ~50 MB) is not imported."""
    assert_scored_without_pandas(tmp_path, candidates, served_model_dir)


def assert_scored_without_pandas(tmp_path, candidates, model_dir, *extra: str) -> None:
    """``stepdown-ml score`` (with ``extra`` arguments) on a clean file, in a fresh process
    that never imports pandas."""
    src = tmp_path / "in.csv"
    write_csv(candidates.head(200), src)
    code = (
        "import sys\n"
        "from stepdown_ml.cli import main\n"
        f"assert main(['score', {str(src)!r}, '--out', {str(tmp_path / 's.csv')!r}, "
        f"'--model-dir', {str(model_dir)!r}, *{list(extra)!r}]) == 0\n"
        "assert 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert len(read(tmp_path / "s.csv")) == 200


def test_a_header_without_rows_or_final_newline_scores_nothing(tmp_path, served_model_dir):
    src = tmp_path / "in.csv"
    src.write_text(",".join(candidate_record()))  # no newline after the header
    assert run_score(served_model_dir, src, tmp_path / "s.csv") == 0
    assert read(tmp_path / "s.csv").empty and list(read(tmp_path / "s.csv").columns) == list(SCORES_COLUMNS)


def test_a_row_python_csv_cannot_split_is_still_a_reject():
    header = list(candidate_record())
    text = ",".join(header) + "\n" + '"' + "a" * 200_000 + "\n"
    [(batch, numbers, malformed)] = list(score_module.csv_blocks(pa.BufferReader(text.encode()), header, "t"))
    assert batch.num_rows == 0 and len(numbers) == 0
    assert [row for row, _, _ in malformed] == [1]
    assert malformed[0][2].startswith("not a valid CSV row")
