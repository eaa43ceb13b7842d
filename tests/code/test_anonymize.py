"""The anonymizer: pseudonyms, keys, generalization, k-anonymity and l-diversity, skills, refusals."""

from __future__ import annotations

import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepdown_ml.cli import main
from stepdown_ml.core.config import PSEUDONYM_KEY_ENV
from stepdown_ml.core.features import skill_overlap
from stepdown_ml.core.schema import LABEL, RAW_IDENTIFYING_COLUMNS, TRANSITION_COLUMNS
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.tables import read_csv_text
from stepdown_ml.core.validation import validate_frame
from stepdown_ml.datasets.anonymize import (
    OUTPUT_COLUMNS,
    OWN_SKILL_FILLER,
    ROLE_SKILL_FILLER,
    SALARY_CHANGE,
    WeakKeyError,
    anonymize,
    anonymize_file,
    check_key,
    pseudonymize,
    raw_transitions,
)
from stepdown_ml.datasets.generalize import QUASI_IDENTIFIERS, qi_codes, true_values
from stepdown_ml.datasets.generate import CITIES, generate_raw
from tests.privacy import release_groups

KEY = b"test-key-for-the-anonymizer-0001"
KEY_TEXT = "Sup3r-s3cret-KEY-never-to-be-written-7c1f"


@lru_cache(maxsize=8)
def _raw(rows: int, seed: int) -> pd.DataFrame:
    return generate_raw(rows, seed)


def raw_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Generated raw records (a fresh copy: tests modify them)."""
    return _raw(rows, seed).copy()


def write_raw(frame: pd.DataFrame, path: Path) -> Path:
    """Write raw records as a user's export would be: plain CSV, empty cells for missing values.

    CRLF line ends, as spreadsheets write them: pandas then also quotes cells holding a
    bare CR, which with LF line ends it leaves unquoted (and every CSV reader splits there).
    """
    frame.to_csv(path, index=False, lineterminator="\r\n")
    return path


def uniform(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every record the same quasi-identifiers, so that none is suppressed."""
    frame["birth_date"] = "1980-03-01"
    frame["transition_date"] = "2015-06-01"
    frame["city"] = "Berlin"
    frame["current_industry"] = "software"
    return frame


def group_sizes(out: pd.DataFrame, report: dict) -> pd.Series:
    """Distinct persons per quasi-identifier group (the attacker's view of the release)."""
    return out.groupby(release_groups(out, report["generalization"]["levels"]))["candidate_id"].nunique()


def group_labels(out: pd.DataFrame, report: dict) -> pd.Series:
    """Distinct values of the label per quasi-identifier group."""
    groups = release_groups(out, report["generalization"]["levels"])
    return out.groupby(groups)["advanced_within_36m"].nunique()


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, key: str | None = KEY_TEXT) -> int:
    if key is None:
        monkeypatch.delenv(PSEUDONYM_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(PSEUDONYM_KEY_ENV, key)
    return main(["anonymize", *args])


# --- the key ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "   "])
def test_without_a_key_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str | None
) -> None:
    raw = write_raw(raw_frame(50), tmp_path / "raw.csv")
    out, report = tmp_path / "out.csv", tmp_path / "report.json"
    code = run_cli([str(raw), "--out", str(out), "--report", str(report)], monkeypatch, key=key)
    assert code == 2
    err = capsys.readouterr().err
    assert PSEUDONYM_KEY_ENV in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not report.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.csv"]  # no temporary leftovers


WEAK_KEYS = {
    "one letter": "a",
    "31 bytes": "x7Qp2Lm9Rt4Vw8Yz1Bc5Df3Gh6Jk0Ns",
    "repeated": "abcd" * 10,
    "one character": "z" * 64,
    "two characters": "ab" * 20 + "ba" * 4,
    "a word repeated": "password-password-password-12345",
    "a sequence": "abcdefghijklmnopqrstuvwxyz0123456789",
}


@pytest.mark.parametrize("case", WEAK_KEYS)
def test_a_weak_key_is_refused_with_one_line_and_no_output(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_raw(raw_frame(50), tmp_path / "raw.csv")
    out, report = tmp_path / "out.csv", tmp_path / "report.json"
    code = run_cli([str(raw), "--out", str(out), "--report", str(report)], monkeypatch, key=WEAK_KEYS[case])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert PSEUDONYM_KEY_ENV in err[0] and "secrets.token_hex(32)" in err[0]
    if len(WEAK_KEYS[case]) > 1:
        assert WEAK_KEYS[case] not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.csv"]
    with pytest.raises(WeakKeyError):
        anonymize(raw_frame(50), WEAK_KEYS[case].encode(), k=1)


def test_random_keys_are_accepted() -> None:
    import secrets

    for _ in range(2000):
        check_key(secrets.token_hex(16).encode())  # 32 hex characters: 128 random bits
        check_key(secrets.token_urlsafe(32).encode())
    check_key(KEY)


def test_the_key_is_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_raw(raw_frame(2000), tmp_path / "raw.csv")
    out, report = tmp_path / "out.csv", tmp_path / "report.json"
    assert run_cli([str(raw), "--out", str(out), "--report", str(report), "--k", "3"], monkeypatch) == 0
    captured = capsys.readouterr()
    for text in (out.read_text(), report.read_text(), captured.out, captured.err):
        assert KEY_TEXT not in text
        assert KEY_TEXT.lower() not in text.lower()


def test_same_key_same_pseudonyms_other_key_other_pseudonyms() -> None:
    raw = raw_frame(300)
    first, _ = anonymize(raw, KEY, k=1, l_diversity=1)
    shuffled = raw.sample(frac=1.0, random_state=1).reset_index(drop=True)
    again, _ = anonymize(shuffled, KEY, k=1, l_diversity=1)
    other, _ = anonymize(raw, b"another-key-entirely-5e1b93d07a4c-9f3e", k=1, l_diversity=1)
    assert set(first["candidate_id"]) == set(again["candidate_id"])
    assert set(first["candidate_id"]) == set(pseudonymize(raw["employee_id"].to_numpy(), KEY))
    assert not set(first["candidate_id"]) & set(other["candidate_id"])
    assert first["candidate_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    # One person's records keep one pseudonym; different persons get different ones.
    assert first["candidate_id"].nunique() == raw["employee_id"].nunique()


def test_output_order_does_not_follow_input_order() -> None:
    # A raw file sorted by name must not let row positions be linked back to a roster.
    raw = raw_frame(1000)
    by_name, _ = anonymize(raw.sort_values("full_name"), KEY, k=2)
    by_id, _ = anonymize(raw.sort_values("employee_id", ascending=False), KEY, k=2)
    pd.testing.assert_frame_equal(by_name, by_id)
    assert by_name["candidate_id"].is_monotonic_increasing


# --- nothing identifying in the output --------------------------------------------------

# Identifying values are built around a marker ("PII" plus a space or a symbol) that the
# output can never contain by itself: its cells are lowercase tokens, numbers, hex
# pseudonyms, age bands and region codes, with no spaces. Without the marker a generated
# name such as "a" or "data" would appear in the output by coincidence (inside "data" or a
# skill token) and the test would fail for the wrong reason. The bodies after the marker are
# arbitrary text: quotes, commas, newlines, formula characters, any script.
_MARKERS = ("PII ", "=PII ", "+PII|", '"PII,', "@PII\n", "-PII;")
_identifier = st.builds(
    lambda marker, body: marker + body,
    st.sampled_from(_MARKERS),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12),
)
_ROWS = 12


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(_identifier, min_size=_ROWS, max_size=_ROWS),
    emails=st.lists(_identifier, min_size=_ROWS, max_size=_ROWS),
    employers=st.lists(_identifier, min_size=_ROWS, max_size=_ROWS),
    targets=st.lists(_identifier, min_size=_ROWS, max_size=_ROWS),
    ids=st.lists(_identifier, min_size=_ROWS, max_size=_ROWS),
)
def test_no_identifying_value_reaches_the_output(
    names: list[str], emails: list[str], employers: list[str], targets: list[str], ids: list[str]
) -> None:
    raw = raw_frame(_ROWS, seed=5)
    raw["full_name"], raw["email"], raw["employee_id"] = names, emails, ids
    raw["current_employer"], raw["target_employer"] = employers, targets
    raw["current_title"] = [f"PII title {n}" for n in names]
    with tempfile.TemporaryDirectory() as folder:
        path = write_raw(raw, Path(folder) / "raw.csv")
        out, report_path = Path(folder) / "out.csv", Path(folder) / "report.json"
        # k=1 keeps every row, so the check is never vacuous.
        report = anonymize_file(path, out, k=1, l_diversity=1, report_path=report_path, key=KEY)
        assert report["rows_out"] == _ROWS
        written = out.read_text(encoding="utf-8") + report_path.read_text(encoding="utf-8")
    identifying = [*names, *emails, *employers, *targets, *ids, *raw["current_title"], *raw["city"]]
    for value in identifying:
        assert value not in written
        assert value.strip() not in written
    for date in (*raw["birth_date"], *raw["transition_date"]):
        assert date not in written


def test_personal_skills_never_reach_the_release() -> None:
    # A name or an employee number typed into a skills field, a rare tool: none of the
    # person's own tokens is released, only canonical tokens that reproduce the counts.
    raw = raw_frame(300)
    own = [f"ada_lovelace_{e.lower()}" for e in raw["employee_id"]]
    raw["current_skills"] = raw["current_skills"] + ";" + pd.Series(own) + ";zz_rare_tool"
    out, _ = anonymize(raw, KEY, k=1, l_diversity=1)
    assert len(out) == len(raw)
    text = out.to_csv(index=False)
    assert "ada_lovelace" not in text and "zz_rare_tool" not in text
    vocab = load_vocabulary()
    canonical = set(vocab.general) | {t for f in vocab.specialized.values() for t in f}
    for column, filler in (("current_skills", OWN_SKILL_FILLER), ("target_skills", ROLE_SKILL_FILLER)):
        tokens = set(";".join(out[column].fillna("")).split(";")) - {""}
        assert all(t in canonical or re.fullmatch(rf"{filler}_\d\d", t) for t in tokens), column
    # At level 0 (k=1) the counts the model uses are the raw ones.
    raw_overlap = skill_overlap(raw["current_skills"].fillna(""), raw["target_skills"].fillna(""), vocab)
    order = pd.Series(range(len(raw)), index=pseudonymize(raw["employee_id"].to_numpy(), KEY))
    rows = order[out["candidate_id"]].to_numpy()
    released = skill_overlap(out["current_skills"].fillna(""), out["target_skills"].fillna(""), vocab)
    for name in ("n_current", "n_target", "shared_general", "shared_specialized", "target_general"):
        assert (released[name] == raw_overlap[name][rows]).all(), name


# --- k-anonymity ------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "l_diversity"), [(2, 1), (5, 2), (10, 2)])
def test_k_anonymity_and_l_diversity_hold(k: int, l_diversity: int) -> None:
    out, report = anonymize(raw_frame(3000, seed=2), KEY, k=k, l_diversity=l_diversity)
    sizes = group_sizes(out, report)
    assert len(out) > 0
    assert sizes.min() >= k
    assert group_labels(out, report).min() >= l_diversity
    assert report["k_reached"] == sizes.min()
    assert report["l_reached"] == group_labels(out, report).min()
    assert report["groups"] == len(sizes)
    assert report["rows_suppressed"] <= report["max_suppression"] * report["rows_in"]
    assert sum(report["suppressed_because"].values()) == report["rows_suppressed"]


def test_k_counts_persons_not_records() -> None:
    # Five records of one person are one person: the group must not pass k=5.
    raw = uniform(raw_frame(5))
    raw["employee_id"] = "E1"
    out, report = anonymize(raw, KEY, k=5, l_diversity=1)
    assert out.empty
    assert report["rows_suppressed"] == 5
    assert report["suppressed_because"] == {"fewer_than_k_persons": 5, "fewer_than_l_labels": 0}
    assert report["k_reached"] is None


def test_a_group_of_one_label_is_suppressed() -> None:
    raw = uniform(raw_frame(40))
    raw["advanced_within_36m"] = 1
    raw["months_to_regain"] = 6
    out, report = anonymize(raw, KEY, k=5)
    assert out.empty
    assert report["suppressed_because"] == {"fewer_than_k_persons": 0, "fewer_than_l_labels": 40}
    kept, _ = anonymize(raw, KEY, k=5, l_diversity=1)
    assert len(kept) == 40


def _suppressed(raw_t: pd.DataFrame, levels: dict[str, int], k: int, l_diversity: int) -> int:
    """Rows in groups below k persons or l labels, counted with pandas."""
    skills = (raw_t["current_skills"].fillna(""), raw_t["target_skills"].fillna(""))
    values = true_values(raw_t, skill_overlap(*skills, load_vocabulary()))
    key = pd.Series(list(zip(*(qi_codes(values, n, levels[n]) for n in QUASI_IDENTIFIERS), strict=True)))
    frame = pd.DataFrame({"g": key, "p": raw_t["candidate_id"].to_numpy(), "y": raw_t[LABEL].to_numpy()})
    persons = frame.groupby("g")["p"].transform("nunique")
    labels = frame.groupby("g")["y"].transform("nunique")
    return int(((persons < k) | (labels < l_diversity)).sum())


@pytest.mark.parametrize("max_suppression", [0.0, 0.05, 0.2])
def test_the_search_stops_where_the_suppression_limit_binds(max_suppression: float) -> None:
    raw = raw_frame(3000, seed=4)
    _, report = anonymize(raw, KEY, k=5, max_suppression=max_suppression)
    levels = report["generalization"]["levels"]
    raw_t = raw_transitions(raw, KEY)
    assert _suppressed(raw_t, levels, 5, 2) == report["rows_suppressed"]
    assert report["rows_suppressed"] <= max_suppression * report["rows_in"]
    # Every one-step finer node would need more suppression than allowed.
    for name in QUASI_IDENTIFIERS:
        if levels[name] > 0:
            finer = levels | {name: levels[name] - 1}
            assert _suppressed(raw_t, finer, 5, 2) > max_suppression * report["rows_in"], name


@pytest.fixture(scope="module")
def twenty_thousand(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("anon20k")
    raw = raw_frame(20_000, seed=0)
    path = write_raw(raw, folder / "raw.csv")
    out, report = folder / "out.csv", folder / "report.json"
    with pytest.MonkeyPatch.context() as patch:
        assert run_cli([str(path), "--out", str(out), "--report", str(report)], patch) == 0
    return read_csv_text(out), json.loads(report.read_text()), raw


def test_twenty_thousand_rows(twenty_thousand: tuple[pd.DataFrame, dict, pd.DataFrame]) -> None:
    out, report, raw = twenty_thousand
    assert report["rows_in"] == len(raw) == 20_000
    assert report["rows_out"] == len(out)
    assert report["rows_out"] >= 0.7 * report["rows_in"]
    assert report["rows_in"] == report["rows_out"] + report["rows_suppressed"] + report["rows_rejected"]
    assert report["rows_rejected"] == sum(report["rejections"].values())
    eligible = report["rows_in"] - report["rows_rejected"]
    assert report["suppression_rate"] == pytest.approx(report["rows_suppressed"] / eligible, abs=1e-6)
    assert report["k"] == 5
    assert report["k_reached"] >= 5
    assert group_sizes(out, report).min() == report["k_reached"]
    assert group_labels(out, report).min() == report["l_reached"] == 2
    before, after = report["risk_before"], report["risk_after"]
    assert before["unique_share"] > 0.9 and before["highest_risk"] == 1.0  # exact values identify
    assert after["unique_share"] == 0.0 and after["highest_risk"] <= 1 / 5
    assert after["single_label_rows"] == 0
    assert set(RAW_IDENTIFYING_COLUMNS) <= set(report["dropped_columns"])


def test_output_follows_the_transition_layout(
    twenty_thousand: tuple[pd.DataFrame, dict, pd.DataFrame],
) -> None:
    out, _, _ = twenty_thousand
    assert list(out.columns) == [c.name for c in TRANSITION_COLUMNS] + [SALARY_CHANGE]
    assert tuple(out.columns) == OUTPUT_COLUMNS
    assert not set(RAW_IDENTIFYING_COLUMNS) & set(out.columns)
    checked = validate_frame(out, TRANSITION_COLUMNS, source="out.csv")
    assert not checked.bad.any(), checked.problems.head()
    assert out["current_level"].str.fullmatch(r"\d+").all()  # integers written as integers
    assert out[SALARY_CHANGE].str.fullmatch(r"-?\d*").all()  # empty when fully generalized


# --- generalization ---------------------------------------------------------------------


def test_unknown_cities_are_rejected_and_counted() -> None:
    raw = raw_frame(200)
    raw.loc[[3, 7, 11], "city"] = "Atlantis"
    raw.loc[20, "city"] = "  MEDELLÍN "  # case, accents and spaces do not matter
    out, report = anonymize(raw, KEY, k=1, l_diversity=1)
    assert report["rows_rejected"] == 3
    assert report["rejections"]["unknown_city"] == 3
    assert report["rows_out"] == 197
    assert report["rows_in"] == report["rows_out"] + report["rows_suppressed"] + report["rows_rejected"]
    assert "LATAM" in set(out["region"])


def test_region_follows_the_generator_cities() -> None:
    raw = raw_frame(400, seed=7)
    out, _ = anonymize(raw, KEY, k=1, l_diversity=1)
    region = {c: r for r, cities in CITIES.items() for c in cities}
    expected = raw.assign(
        region=raw["city"].map(region), cid=pseudonymize(raw["employee_id"].to_numpy(), KEY)
    )
    merged = out.merge(expected[["cid", "region"]], left_on="candidate_id", right_on="cid")
    assert (merged["region_x"] == merged["region_y"]).all()


def test_derived_columns() -> None:
    raw = uniform(raw_frame(6))
    raw["birth_date"] = ["2000-06-15", "2000-06-15", "2008-01-01", "1950-01-01", "1990-02-28", "1990-02-28"]
    raw["transition_date"] = [
        "2025-06-14",
        "2025-06-15",
        "2025-06-01",
        "2024-12-31",
        "2020-01-01",
        "2020-01-01",
    ]
    raw["current_employer"] = ["Blue Labs", "Blue Labs", "x", "Nova Works", "", "Nova Works"]
    raw["target_employer"] = [
        "  blue   LABS ",
        "Blue Labs International",
        "x",
        "Nova Works",
        "",
        "Atlas Group",
    ]
    raw["current_salary"] = [50_000, 80_000, 1, 64_000, 100_000, 33_333]
    raw["target_salary"] = [45_000, 80_400, 1, 96_000, 100_000, 30_000]
    out, report = anonymize(raw, KEY, k=1, l_diversity=1)
    assert report["rejections"]["age_under_18"] == 1  # the one born in 2008
    by_id = dict(zip(pseudonymize(raw["employee_id"].to_numpy(), KEY), range(6), strict=True))
    out = out.assign(row=out["candidate_id"].map(by_id)).set_index("row").sort_index()
    assert list(out.index) == [0, 1, 3, 4, 5]
    assert list(out["age_band"]) == ["18-24", "25-34", "65+", "25-34", "25-34"]
    assert list(out["same_employer"]) == [1, 0, 1, 0, 0]
    assert list(out[SALARY_CHANGE]) == [-10, 0, 50, 0, -10]
    assert list(out["transition_year"]) == [2025, 2025, 2024, 2020, 2020]
    assert list(out["region"]) == ["EU"] * 5


def test_extra_columns_are_dropped() -> None:
    raw = raw_frame(50)
    raw["phone"] = [f"+1 555 {i:04d} PII" for i in range(50)]
    raw["person_id"] = [f"PII-person-{i}" for i in range(50)]
    out, report = anonymize(raw, KEY, k=1, l_diversity=1)
    assert "phone" not in out.columns
    assert "person_id" not in out.columns
    assert "PII" not in out.to_csv(index=False)
    assert {"phone", "person_id"} <= set(report["dropped_columns"])


# --- bad input --------------------------------------------------------------------------


def _set(column: str, row: int, value: str):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row - 1, column] = value
        return frame

    return change


BAD_INPUTS = {
    "missing column": (lambda f: f.drop(columns=["birth_date"]), ["row 0", "birth_date"]),
    "bad date": (_set("birth_date", 3, "1980-02-30"), ["row 3", "column birth_date"]),
    "date in another format": (_set("transition_date", 4, "04/05/2019"), ["row 4", "column transition_date"]),
    "wrong type": (_set("current_level", 2, "senior"), ["row 2", "column current_level", "'senior'"]),
    "salary not a number": (_set("current_salary", 5, "lots"), ["row 5", "column current_salary"]),
    "negative salary": (_set("target_salary", 6, "-100"), ["row 6", "column target_salary"]),
    "empty employee id": (_set("employee_id", 7, "  "), ["row 7", "column employee_id"]),
    "birth after move": (_set("birth_date", 8, "2030-01-01"), ["row 8", "column birth_date"]),
    "bad skills": (_set("current_skills", 9, "Excel, SQL"), ["row 9", "column current_skills"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_file_row_and_column(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    change, expected = BAD_INPUTS[case]
    raw = write_raw(change(raw_frame(30)), tmp_path / "raw.csv")
    out, report = tmp_path / "out.csv", tmp_path / "report.json"
    assert run_cli([str(raw), "--out", str(out), "--report", str(report)], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(raw) in err
    for part in expected:
        assert part in err
    assert not out.exists()
    assert not report.exists()


def test_identifying_values_are_not_quoted_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_raw(_set("birth_date", 2, "PII-1980-99-99")(raw_frame(10)), tmp_path / "raw.csv")
    assert run_cli([str(raw), "--out", str(tmp_path / "out.csv")], monkeypatch) == 2
    assert "PII" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not utf-8", ["row 4", "column full_name", "UTF-8"]),
        ("empty file", ["empty"]),
        ("header only", ["no data rows"]),
        ("ragged row", ["row 2"]),
    ],
)
def test_unreadable_files(
    case: str,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "raw.csv"
    text = raw_frame(10).to_csv(index=False, lineterminator="\r\n")
    lines = text.splitlines(keepends=True)
    if case == "not utf-8":
        name = raw_frame(10)["full_name"].iloc[3]
        data = text.encode("utf-8").replace(name.encode(), name.encode() + b"\xe9\xff", 1)
    elif case == "empty file":
        data = b""
    elif case == "header only":
        data = lines[0].encode()
    else:
        data = (lines[0] + lines[1] + "a,b,c\n" + "".join(lines[3:])).encode()
    path.write_bytes(data)
    out = tmp_path / "out.csv"
    assert run_cli([str(path), "--out", str(out)], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(path) in err
    for part in expected:
        assert part in err
    assert not out.exists()


def test_refuses_to_overwrite_the_raw_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = write_raw(raw_frame(20), tmp_path / "raw.csv")
    before = raw.read_bytes()
    assert run_cli([str(raw), "--out", str(raw)], monkeypatch) == 2
    assert raw.read_bytes() == before


def test_rejects_a_bad_k() -> None:
    with pytest.raises(ValueError, match="k must be"):
        anonymize(raw_frame(10), KEY, k=0)
    with pytest.raises(ValueError, match="empty"):
        anonymize(raw_frame(10), b"", k=5)


def test_typed_frames_are_accepted() -> None:
    # The core takes frames as generated (ints, Int64 with missing values), not only text.
    raw = raw_frame(500)
    assert pd.api.types.is_integer_dtype(raw["current_salary"])
    typed, _ = anonymize(raw, KEY, k=3)
    text, _ = anonymize(raw.astype(str).replace({"<NA>": ""}), KEY, k=3)
    pd.testing.assert_frame_equal(typed, text)
    assert re.fullmatch(r"[0-9a-f]{32}", typed["candidate_id"].iloc[0])
    assert np.isin(typed["age_band"], ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]).all()


def test_a_file_too_small_for_k_is_refused_not_written_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """4 persons cannot reach k=5 however general the release: one line, exit 2, no file."""
    raw = write_raw(raw_frame(4), tmp_path / "raw.csv")
    assert (
        run_cli(
            [str(raw), "--out", str(tmp_path / "a.csv"), "--report", str(tmp_path / "r.json")], monkeypatch
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would be suppressed" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.csv"]


def test_the_output_and_the_report_are_replaced_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = write_raw(raw_frame(2_000), tmp_path / "raw.csv")
    (tmp_path / "a.csv").write_text("old output\n")
    (tmp_path / "r.json").write_text("{}\n")
    real = os.replace

    def fail_on_report(source: object, target: object) -> None:
        if str(target).endswith("r.json"):
            raise OSError(28, "No space left on device")
        real(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", fail_on_report)
    assert (
        run_cli(
            [str(raw), "--out", str(tmp_path / "a.csv"), "--report", str(tmp_path / "r.json")], monkeypatch
        )
        == 2
    )
    assert (tmp_path / "a.csv").read_text() == "old output\n"
    assert (tmp_path / "r.json").read_text() == "{}\n"
