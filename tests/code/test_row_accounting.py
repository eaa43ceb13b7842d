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


def test_an_over_long_last_row_without_a_newline_is_rejected_not_lost(
    tmp_path, candidates, served_model_dir, monkeypatch
):
    """The reader skipped such a row and ended without saying so: it was neither scored nor
    rejected (the row count agreed, as the row was never counted)."""
    monkeypatch.setattr(batch, "MAX_ROW_BYTES", 1 << 20)
    frame = candidates.head(8).copy()
    frame["notes"] = ""
    frame.loc[7, "notes"] = "z" * (3 << 20)  # the last row, three times the limit
    src = tmp_path / "in.csv"
    src.write_bytes(frame.to_csv(index=False).encode().removesuffix(b"\n"))
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert list(rejects["row"]) == ["8"] and "longer than" in rejects["reason"][0]
    assert len(scores) == 7


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


def _fates(parser: batch._LineParser, piece: bytes, first: int = 1) -> dict[int, str]:
    """Each line's fate in a piece: 'scored', or 'rejected' (reasons aside)."""
    _, numbers, malformed, _, _ = parser.parse(first, piece)
    fates = dict.fromkeys(numbers.tolist(), "scored")
    fates.update({row: "rejected" for row, _, _ in malformed})
    return fates


@pytest.mark.parametrize("seed", range(4))
def test_a_lines_fate_depends_on_that_line_alone(seed):
    """Hostile lines (quotes, bare carriage returns, short rows) in random pieces: each line is
    scored or rejected as it is when it is a piece of its own, wherever a piece or a worker's
    byte range ends. Before, a quoted field left open by a piece's last line was read to the
    end of the text and scored, and a neighbour's failure made its lines' checks stricter."""
    import random

    parser = batch._LineParser(["candidate_id", "a", "b"], "test")
    alphabet = [b'"', b",", b"x", b"\r", b" ", b'""', b"y"]
    pick = random.Random(seed)
    for _ in range(400):
        lines = [b"".join(pick.choice(alphabet) for _ in range(pick.randint(0, 8))) for _ in range(5)]
        piece = b"\n".join(lines) + b"\n"
        alone: dict[int, str] = {}
        for number, line in enumerate(lines, start=1):
            alone.update(_fates(parser, line + b"\n", number))
        assert _fates(parser, piece) == alone, piece


def test_an_unclosed_quote_on_the_last_line_is_rejected_as_on_any_other(
    tmp_path, candidates, served_model_dir
):
    """`b0"3,…,"EU`: an even number of quotes, the last field opened and never closed."""
    src = tmp_path / "in.csv"
    candidates.head(4).to_csv(src, index=False)
    lines = src.read_text().rstrip("\n").split("\n")
    bad = 'b0"3,' + lines[3].split(",", 1)[1] + ',"EU'
    for where, text in {"middle": [*lines[:3], bad, lines[4]], "last": [*lines[:4], bad]}.items():
        src.write_text("\n".join(text) + "\n")
        assert score(served_model_dir, src, tmp_path / f"{where}.csv") == 0
        _, rejects = outcome(tmp_path / f"{where}.csv")
        assert list(rejects["row"]) == [str(text.index(bad))], where
        assert "quote" in rejects["reason"][0]


def test_a_line_of_carriage_returns_alone_is_blank(tmp_path, candidates, served_model_dir):
    """`\\r\\r` reads as no record to the parser: a blank line, numbered, not a failed file."""
    src = tmp_path / "in.csv"
    candidates.head(6).to_csv(src, index=False)
    lines = src.read_bytes().split(b"\n")
    lines.insert(3, b"\r\r")
    src.write_bytes(b"\n".join(lines))
    assert score(served_model_dir, src, tmp_path / "s.csv") == 0
    scores, rejects = outcome(tmp_path / "s.csv")
    assert len(scores) == 6 and rejects.empty


def test_a_header_with_a_bare_carriage_return_is_one_clear_line(tmp_path, served_model_dir, capsys):
    src = tmp_path / "in.csv"
    src.write_bytes(b"candidate_id\rmotive\n1,2\n")
    assert score(served_model_dir, src, tmp_path / "s.csv") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the header is not a CSV row" in err[0]


def test_the_csv_check_of_a_line_agrees_with_pyarrow_line_by_line():
    """`_runs_on` (Python's csv, read leniently) decides which lines are taken out when a piece's
    records and lines disagree; pyarrow decides in every other piece. They must agree, or a
    line's fate would depend on its neighbours."""
    import random

    parser = batch._LineParser(["candidate_id", "a", "b"], "test")
    alphabet = ['"', ",", "x", " ", '""', ",", '",', ',"', "\\", "\t", "é"]
    pick = random.Random(7)
    checked = 0
    while checked < 1500:
        line = "".join(pick.choice(alphabet) for _ in range(pick.randint(1, 10)))
        line += "\r" if pick.random() < 0.2 else ""
        data = line.encode()
        if not data.strip(b"\r"):
            continue  # a blank line: never parsed
        assert parser._runs_on(data) == (parser._not_one_record([data]) == [0]), data
        checked += 1


def test_many_lines_with_a_quote_left_open_are_found_line_by_line_not_by_halving(monkeypatch):
    """`a"b,"c,…`: an even number of quotes, the second field never closed, on every line."""
    parser = batch._LineParser(["candidate_id", "a", "b"], "test")

    def no_halving(texts):
        raise AssertionError("halving is the last resort, one pyarrow call per step")

    monkeypatch.setattr(parser, "_not_one_record", no_halving)
    piece = b'a"b,"c,x\n' * 2000 + b"ok,1,2\n"
    _, numbers, malformed, _, count = parser.parse(1, piece)
    assert list(numbers) == [2001] and len(malformed) == 2000 and count == 2001


def test_one_column_is_read_as_one_record_per_line():
    parser = batch._LineParser(["a"], "test")
    batches, numbers, malformed, _, _ = parser.parse(1, b"x\ny\n")
    assert list(numbers) == [1, 2] and not malformed
    assert [v for b in batches for v in b.column(0).to_pylist()] == ["x", "y"]


@pytest.mark.parametrize("seed", range(8))
def test_the_reader_cuts_text_into_whole_lines_and_skips_only_overlong_ones(seed, monkeypatch):
    """Lines: every piece but the last ends with a newline, and the pieces, with the lines
    skipped before each, are the text after the header line by line. A line is skipped only
    when it is over the limit (the parser rejects the others over it), and always when it
    is longer than the limit and two reads together (it could not be held). Reads of one
    byte up to more than the text; lines shorter and longer than one read; with and without
    a final newline."""
    import io
    import random

    rng = random.Random(seed)
    limit = 300
    monkeypatch.setattr(batch, "MAX_ROW_BYTES", limit)
    sizes = [0, 1, 5, 40, 120, limit, limit + 1, 2 * limit, 5 * limit]
    rows = [b"x" * rng.choice(sizes) + str(i).encode() for i in range(200)]
    text = b"header\n" + b"\n".join(rows) + (b"\n" if seed % 2 else b"")
    skipped = passed_on = 0  # lines over the limit, each way
    for read_bytes in (1, 7, 64, 257, 4096, len(text) + 10):
        reader = batch.Lines(io.BytesIO(text), read_bytes)
        assert reader.header() == b"header"
        pieces = list(reader)
        assert all(piece.endswith(b"\n") for _, piece in pieces[:-1])
        seen: list[bytes | None] = []
        for too_long, piece in pieces:
            seen.extend([None] * too_long)
            if piece:  # the last may be empty: only the skipped lines before the end
                seen.extend(piece.removesuffix(b"\n").split(b"\n"))
        assert len(seen) == len(rows)
        for row, got in zip(rows, seen, strict=True):
            assert got == row or (got is None and len(row) > limit)
            assert got is None or len(row) <= limit + 2 * read_bytes
            skipped += got is None
            passed_on += got is not None and len(row) > limit
    assert skipped and passed_on
