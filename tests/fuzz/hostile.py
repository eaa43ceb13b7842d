"""A generator of hostile candidate files: CSV, gzip and Parquet, broken in the ways real files are.

Each case starts from valid candidates and applies a few random mutations: stray and
unbalanced quotes, bytes that are not UTF-8, NUL and carriage returns, byte-order marks,
blank and duplicated lines, cells of megabytes, formula-like and out-of-range values,
truncated files and truncated gzip streams, Parquet files with odd types or duplicated
columns. The same seed gives the same case.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HOSTILE_VALUES = ['"', '""', "=cmd()", "1e400", "nan", "-0", " 3 ", "\x00", "é", "🙂", "9" * 40, ""]


@dataclass
class Case:
    name: str
    suffix: str  # .csv, .csv.gz or .parquet
    data: bytes
    # Records the scorer must account for (scored + rejected rows); None when a file-level
    # failure (exit 2, no output) is the only right answer.
    records: int | None


def csv_case(rng: random.Random, frame: pd.DataFrame, index: int) -> Case:
    rows = frame.sample(rng.randint(1, 40), random_state=rng.randint(0, 2**31)).astype(object)
    for _ in range(rng.randint(0, 3)):
        rows.iat[rng.randrange(len(rows)), rng.randrange(rows.shape[1])] = rng.choice(HOSTILE_VALUES)
    quoting = rng.choice([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])
    text = rows.to_csv(index=False, quoting=quoting, lineterminator=rng.choice(["\n", "\r\n"]))
    data = text.encode("utf-8")
    applied = []
    for _ in range(rng.randint(0, 4)):
        mutation = rng.choice(MUTATIONS)
        data = mutation(rng, data)
        applied.append(mutation.__name__)
    if rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
        applied.append("bom")
    return Case(f"csv-{index}-{'+'.join(applied) or 'clean'}", ".csv", data, count_records(data))


def count_records(data: bytes) -> int | None:
    """Non-blank lines after the header: what the scorer must account for."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return None
    return sum(1 for line in lines[1:] if line not in (b"", b"\r"))


def _position(rng: random.Random, data: bytes) -> int:
    header_end = data.find(b"\n") + 1
    return rng.randint(header_end, len(data)) if header_end else len(data)


def stray_quote(rng: random.Random, data: bytes) -> bytes:
    at = _position(rng, data)
    return data[:at] + b'"' + data[at:]


def delete_byte(rng: random.Random, data: bytes) -> bytes:
    at = _position(rng, data)
    return data[:at] + data[at + 1 :]


def insert_byte(rng: random.Random, data: bytes) -> bytes:
    at = _position(rng, data)
    return data[:at] + rng.choice([b"\x00", b"\xff", b"\xc3", b"\r", b",", b";", b"\t"]) + data[at:]


def blank_line(rng: random.Random, data: bytes) -> bytes:
    at = data.find(b"\n", _position(rng, data))
    return data if at < 0 else data[: at + 1] + rng.choice([b"\n", b"\r\n"]) + data[at + 1 :]


def duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines = data.split(b"\n")
    if len(lines) > 2:
        i = rng.randrange(1, len(lines) - 1)
        lines.insert(i, lines[i])
    return b"\n".join(lines)


def huge_cell(rng: random.Random, data: bytes) -> bytes:
    at = data.find(b",", _position(rng, data))
    return data if at < 0 else data[:at] + b"x" * rng.choice([70_000, 1_200_000]) + data[at:]


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: _position(rng, data)]


def short_row(rng: random.Random, data: bytes) -> bytes:
    at = data.find(b"\n", _position(rng, data))
    return data if at < 0 else data[: at + 1] + b"only,three,fields\n" + data[at + 1 :]


MUTATIONS = [
    stray_quote,
    delete_byte,
    insert_byte,
    blank_line,
    duplicate_line,
    huge_cell,
    truncate,
    short_row,
]


def gzip_case(rng: random.Random, frame: pd.DataFrame, index: int) -> Case:
    inner = csv_case(rng, frame, index)
    data = gzip.compress(inner.data)
    if rng.random() < 0.3:
        return Case(f"gz-{index}-truncated", ".csv.gz", data[: rng.randint(0, len(data) - 1)], None)
    return Case(f"gz-{index}-{inner.name}", ".csv.gz", data, inner.records)


def parquet_case(rng: random.Random, frame: pd.DataFrame, index: int) -> Case:
    rows = frame.sample(rng.randint(1, 40), random_state=rng.randint(0, 2**31)).reset_index(drop=True)
    kind = rng.choice(["typed", "text", "duplicate-column", "corrupt", "odd-values"])
    if kind == "corrupt":
        buffer = io.BytesIO()
        rows.to_parquet(buffer)
        data = bytearray(buffer.getvalue())
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        # Flipped bytes may land where the reader does not look: then every row must count.
        return Case(f"parquet-{index}-corrupt", ".parquet", bytes(data), len(rows))
    if kind == "text":
        rows = rows.astype(str)
    if kind == "odd-values":
        rows = rows.astype(object)
        for _ in range(rng.randint(1, 5)):
            rows.iat[rng.randrange(len(rows)), rng.randrange(rows.shape[1])] = rng.choice(HOSTILE_VALUES)
        rows = rows.astype(str)
    table = pa.Table.from_pandas(rows, preserve_index=False)
    if kind == "duplicate-column":
        table = table.append_column(table.schema.names[rng.randrange(table.num_columns)], table.column(0))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return Case(f"parquet-{index}-{kind}", ".parquet", buffer.getvalue(), len(rows))


def cases(seed: int, count: int, frame: pd.DataFrame) -> list[Case]:
    """``count`` hostile files: seven in ten CSV, two gzip, one Parquet."""
    rng = random.Random(seed)
    makers = [csv_case] * 7 + [gzip_case] * 2 + [parquet_case]
    return [makers[i % len(makers)](rng, frame, i) for i in range(count)]
