"""Unit tests: `score --workers N` (worker processes) equals the single process, row for row."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepdown_ml.core.schema import ContractError
from stepdown_ml.core.tables import write_csv
from stepdown_ml.serving.batch import score_file

# Small tasks: the test files are cut into many ranges, as a large file would be.
TASK_BYTES = 16 << 10


@pytest.fixture(scope="module")
def messy_lines(candidates) -> list[bytes]:
    """Candidates with persons, bad values, malformed and hostile lines, as CSV lines."""
    frame = candidates.head(1500).astype(object).copy()
    frame["person_id"] = [f"p{i % 17}" for i in range(len(frame))]
    frame.loc[5, "fit_score"] = 9
    frame.loc[700, "region"] = "Mars"
    frame.loc[1300, "target_level"] = 10
    frame.loc[11, "candidate_id"] = "=cmd()"
    text = frame.to_csv(index=False, lineterminator="\n").encode()
    lines = text.split(b"\n")[:-1]
    lines.insert(400, b'"short-row",1,2')
    lines.insert(600, b"")  # a blank line: numbered, holds no record
    lines.insert(800, b'"unclosed,' + lines[800])
    lines.insert(1000, b"\xff\xfe not utf-8," + lines[1000])
    lines.insert(1200, b"just one field")
    return lines


def _write(lines: list[bytes], path: Path, bom: bool = False, final_newline: bool = True) -> Path:
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def _outputs(out: Path) -> tuple[bytes, bytes]:
    rejects = out.with_name(out.name.split(".")[0] + ".rejects.csv")
    if out.suffix == ".parquet":
        scores = pq.read_table(out).to_pandas().to_csv(index=False).encode()
    elif out.suffix == ".gz":
        scores = gzip.decompress(out.read_bytes())
    else:
        scores = out.read_bytes()
    return scores, rejects.read_bytes()


def _both(source: Path, tmp_path: Path, out_name: str, served_model, **options) -> None:
    one = score_file(source, tmp_path / "one" / out_name, model=served_model, workers=1, **options)
    many = score_file(
        source, tmp_path / "many" / out_name, model=served_model, workers=2, task_bytes=TASK_BYTES, **options
    )
    assert many.processes == 2  # the file was cut into tasks
    assert (many.rows, many.scored, many.rejected_rows, many.problems) == (
        one.rows,
        one.scored,
        one.rejected_rows,
        one.problems,
    )
    assert _outputs(tmp_path / "many" / out_name) == _outputs(tmp_path / "one" / out_name)
    assert not [p.name for p in (tmp_path / "many").iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize("out_name", ["s.csv", "s.csv.gz", "s.parquet"])
def test_workers_equal_the_single_process_on_a_messy_file(messy_lines, tmp_path, served_model, out_name):
    source = _write(messy_lines, tmp_path / "in.csv", bom=True, final_newline=False)
    _both(source, tmp_path, out_name, served_model)
    rejects = pd.read_csv(tmp_path / "many" / "s.rejects.csv", dtype=str, keep_default_na=False)
    # Row numbers count every line after the header, as the single process does.
    assert {400, 800, 1000, 1200} <= set(rejects["row"].astype(int))
    scores = pq.read_table(tmp_path / "many" / out_name) if out_name.endswith("parquet") else None
    if scores is not None:
        assert scores.column("rank").null_count == 0  # ranked across the whole file


def test_workers_without_person_ids(candidates, tmp_path, served_model):
    source = tmp_path / "in.csv"
    write_csv(candidates.head(800), source)
    _both(source, tmp_path, "s.csv", served_model)


def test_gzip_input_is_decompressed_once_and_scored_by_the_workers(messy_lines, tmp_path, served_model):
    plain = _write(messy_lines, tmp_path / "plain.csv")
    source = tmp_path / "in.csv.gz"
    source.write_bytes(gzip.compress(plain.read_bytes()))
    _both(source, tmp_path, "s.csv", served_model)


def test_parquet_input_is_split_by_row_group(candidates, tmp_path, served_model):
    source = tmp_path / "in.parquet"
    frame = candidates.head(1000).copy()
    frame["person_id"] = [f"p{i % 7}" for i in range(len(frame))]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), source, row_group_size=128)
    _both(source, tmp_path, "s.csv", served_model, chunk_rows=50)


def test_a_file_that_cannot_be_cut_is_scored_in_this_process(candidates, tmp_path, served_model):
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(candidates.head(100), preserve_index=False), source)
    summary = score_file(source, tmp_path / "s.csv", model=served_model, workers=2)
    assert summary.processes == 1
    assert summary.scored == 100


def test_a_corrupt_gzip_file_fails_with_workers_and_leaves_no_output(messy_lines, tmp_path, served_model):
    data = gzip.compress(b"\n".join(messy_lines) + b"\n")
    source = tmp_path / "in.csv.gz"
    source.write_bytes(data[: len(data) // 2] + b"\x00" * 64 + data[len(data) // 2 :])
    with pytest.raises((OSError, EOFError, ContractError)):
        score_file(source, tmp_path / "out" / "s.csv", model=served_model, workers=2, task_bytes=TASK_BYTES)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_drift_report_of_workers_equals_the_single_process_report(messy_lines, tmp_path, served_model):
    source = _write(messy_lines, tmp_path / "in.csv")
    one = score_file(
        source, tmp_path / "one" / "s.csv", model=served_model, workers=1, report=tmp_path / "one.json"
    )
    many = score_file(
        source,
        tmp_path / "many" / "s.csv",
        model=served_model,
        workers=2,
        task_bytes=TASK_BYTES,
        report=tmp_path / "many.json",
    )
    assert many.processes == 2
    assert one.report is not None and many.report is not None
    assert one.report["rows"]["read"] == 1500 + 5 - 1  # every line after the header but the blank one
    assert many.report == one.report


@pytest.mark.parametrize("out_name", ["s.csv", "s.parquet"])
def test_a_ranked_file_of_no_rows_has_the_same_outputs_either_way(
    candidates, tmp_path, served_model, out_name
):
    """Parquet with person_id, two row groups, no rows: the workers gave an error ('Must pass at
    least one array'); both engines now write the ranked layout with no rows."""
    source = tmp_path / "in.parquet"
    frame = candidates.head(0).copy()
    frame["person_id"] = pd.Series([], dtype=str)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(source, table.schema) as writer:
        writer.write_table(table)
        writer.write_table(table)
    _both(source, tmp_path, out_name, served_model)
    scores, _ = _outputs(tmp_path / "many" / out_name)
    assert scores.decode().splitlines()[0].rstrip('"').endswith("rank")


def test_an_unreadable_row_group_is_reported_at_its_rows_in_the_file(candidates, tmp_path, served_model):
    """A worker numbers rows within its task; the error names the file's rows, as --workers 1 does,
    and is the first failure in file order."""
    source = tmp_path / "in.parquet"
    table = pa.Table.from_pandas(candidates.head(2000), preserve_index=False)
    pq.write_table(table, source, row_group_size=100, compression="none")
    column = pq.ParquetFile(source).metadata.row_group(13).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(source.read_bytes())
    data[start : start + 64] = b"\xff" * 64  # the page header of rows 1301-1400
    source.write_bytes(bytes(data))
    messages = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}" / "s.csv"
        with pytest.raises(ContractError) as failed:
            score_file(source, out, model=served_model, workers=workers, chunk_rows=100)
        messages.append(str(failed.value))
        assert not out.parent.exists() or not any(out.parent.iterdir())
    assert messages[0] == messages[1]
    assert ": rows from 1301: not readable" in messages[0]
