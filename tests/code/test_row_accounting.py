"""Unit tests: every input row is scored or rejected, whatever the file holds (issue: nothing lost)."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from stepdown_ml.cli import main
from stepdown_ml.serving import batch


def score(model_dir, src, out) -> int:
    return main(["score", str(src), "--out", str(out), "--model-dir", str(model_dir)])


def outcome(out) -> tuple[pd.DataFrame, pd.DataFrame]:
    scores = pd.read_csv(out, dtype=str, keep_default_na=False)
    rejects = pd.read_csv(
        out.with_name(out.name.replace(".csv", ".rejects.csv")), dtype=str, keep_default_na=False
    )
    return scores, rejects


@pytest.mark.parametrize("rows", [1_000, 20_000])
def test_a_stray_quote_rejects_one_row_not_the_rest(tmp_path, candidates, served_model_dir, rows):
    frame = pd.concat([candidates] * (rows // len(candidates) + 1), ignore_index=True).head(rows)
    frame["candidate_id"] = [f"c{i}" for i in range(rows)]
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)  # minimal quoting, as pandas writes it
    lines = src.read_text().split("\n")
    lines[10] = '"' + lines[10]  # row 10
    src.write_text("\n".join(lines))
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert list(rejects["row"]) == ["10"]
    assert "quote" in rejects["reason"][0]
    assert len(scores) == rows - 1
    assert "c9" not in set(scores["candidate_id"]) and {"c8", "c10", f"c{rows - 1}"} <= set(
        scores["candidate_id"]
    )


def test_an_unterminated_quote_in_a_fully_quoted_file_swallows_nothing(
    tmp_path, candidates, served_model_dir
):
    src = tmp_path / "in.csv"
    candidates.head(12).to_csv(src, index=False, quoting=csv.QUOTE_ALL)
    lines = src.read_text().split("\n")
    lines[7] = lines[7].rstrip('"')  # row 7's last quote never closes
    src.write_text("\n".join(lines))
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert list(rejects["row"]) == ["7"]
    assert len(scores) == 11


def test_rows_over_a_megabyte_are_read(tmp_path, candidates, served_model_dir):
    frame = candidates.head(30).copy()
    frame["notes"] = ""
    frame.loc[3, "notes"] = "x" * 1_100_000  # an ignored extra column
    frame.loc[5, "current_skills"] = ";".join(f"skill_{i}" for i in range(170_000))  # ~1.7 MB
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert len(scores) == 30 and rejects.empty


def test_a_row_over_the_limit_is_rejected_alone(tmp_path, candidates, served_model_dir, monkeypatch):
    monkeypatch.setattr(batch, "MAX_ROW_BYTES", 1 << 20)
    frame = candidates.head(20).copy()
    frame["notes"] = ""
    frame.loc[4, "notes"] = "y" * (3 << 20)  # row 5, three times the limit
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert list(rejects["row"]) == ["5"] and "longer than" in rejects["reason"][0]
    assert len(scores) == 19


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path, candidates, served_model_dir):
    src = tmp_path / "in.csv"
    candidates.head(10).to_csv(src, index=False, encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    assert src.read_bytes().startswith(b"\xef\xbb\xbf")
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert len(scores) == 10 and rejects.empty


def test_rows_are_numbered_by_line_with_blank_lines_and_crlf(tmp_path, candidates, served_model_dir):
    src = tmp_path / "in.csv"
    candidates.head(6).to_csv(src, index=False, lineterminator="\r\n")
    lines = src.read_bytes().split(b"\r\n")
    lines.insert(3, b"")  # a blank row 3
    lines[5] = lines[5].replace(b",", b",\r", 1)  # a bare CR inside row 5
    src.write_bytes(b"\r\n".join(lines))
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert list(rejects["row"]) == ["5"]
    assert len(scores) == 5


def test_an_even_number_of_quotes_that_still_opens_a_field(tmp_path, candidates, served_model_dir):
    """`a"b,"c`: the second quote opens a field that would swallow the next line."""
    frame = candidates.head(8).copy()
    frame["notes"] = "plain"
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    lines = src.read_text().split("\n")
    lines[4] = lines[4].replace(",plain", ',a"b,"c', 1)  # row 4: two quotes, an extra field opened
    src.write_text("\n".join(lines))
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert list(rejects["row"]) == ["4"]
    assert len(scores) == 7
