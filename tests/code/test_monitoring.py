"""Unit tests: the reference profile, partial profiles, the drift report and CBPE.

Batches are drawn by the generator (``datasets.generate.Shift`` moves one thing at a time)
and scored by the packaged default model through batch scoring's own ``score_block``.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from stepdown_ml.cli import EXIT_BAD_INPUT, EXIT_DRIFT, main
from stepdown_ml.core.arrow import to_numpy
from stepdown_ml.core.features import FEATURE_GROUPS
from stepdown_ml.core.modeldir import (
    MANIFEST_FILE,
    REFERENCE_PROFILE_FILE,
    REFERENCE_PROFILE_KEY,
    ModelDirError,
    ProfileError,
    read_manifest,
)
from stepdown_ml.core.monitoring import (
    MIN_ROWS,
    PSI_DRIFT,
    PartialProfile,
    ProfileSpec,
    compare_with_labels,
    drift_report,
    load_reference,
    psi,
    render_html,
    roc_auc,
)
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, LABEL, names
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import Shift, generate_transitions
from stepdown_ml.serving import Model
from stepdown_ml.serving.batch import score_block, score_file
from tests.code.test_score import assert_scored_without_pandas


def as_text(frame) -> pa.Table:
    """Candidate columns as text, as a CSV file reaches score_block."""
    frame = frame[names(CANDIDATE_COLUMNS)]
    return pa.table(
        {c: pa.array(frame[c].astype(str).where(frame[c].notna(), "").tolist(), pa.string()) for c in frame}
    )


@pytest.fixture(scope="module")
def reference(served_model):
    return load_reference(served_model.model_dir, served_model.manifest)


def scored(model, reference, frame):
    return score_block(model, as_text(frame), np.arange(1, len(frame) + 1), profile=reference.spec)


def report_of(model, reference, rows, seed, shift=None):
    frame = generate_transitions(rows, seed, shift=shift)
    return drift_report(reference, scored(model, reference, frame).profile)


def test_the_packaged_model_carries_a_hashed_reference_profile(served_model_dir):
    manifest = read_manifest(served_model_dir)
    assert REFERENCE_PROFILE_KEY in manifest
    profile = load_reference(served_model_dir)
    assert profile.counts.scored == manifest["metrics"]["fairness"]["rows"] * 70 // 15  # the training split
    assert profile.performance["test_roc_auc"] == manifest["metrics"]["test"]["roc_auc"]


def test_a_tampered_reference_profile_is_refused(tmp_path, served_model_dir):
    copy = tmp_path / "m"
    shutil.copytree(served_model_dir, copy)
    payload = json.loads((copy / REFERENCE_PROFILE_FILE).read_text())
    payload["counts"]["scored"] += 1
    (copy / REFERENCE_PROFILE_FILE).write_text(json.dumps(payload))
    with pytest.raises(ModelDirError, match=f"{REFERENCE_PROFILE_FILE}: SHA-256"):
        Model(copy)
    (copy / REFERENCE_PROFILE_FILE).unlink()
    with pytest.raises(ModelDirError, match="is missing"):
        Model(copy)


def without_profile(tmp_path, served_model_dir):
    """A model directory as written before reference profiles existed."""
    old = tmp_path / "old"
    shutil.copytree(served_model_dir, old)
    (old / REFERENCE_PROFILE_FILE).unlink()
    manifest = json.loads((old / MANIFEST_FILE).read_text())
    del manifest[REFERENCE_PROFILE_KEY]
    (old / MANIFEST_FILE).write_text(json.dumps(manifest))
    return old


def test_a_model_without_profile_scores_and_refuses_a_report_in_one_line(
    tmp_path, served_model_dir, candidates, capsys
):
    old = without_profile(tmp_path, served_model_dir)
    src = tmp_path / "in.csv"
    write_csv(candidates.head(50), src)
    with pytest.raises(ProfileError):
        load_reference(old)
    out = ["score", str(src), "--model-dir", str(old), "--out"]
    assert main([*out, str(tmp_path / "a.csv")]) == 0
    capsys.readouterr()
    assert main([*out, str(tmp_path / "b.csv"), "--report", str(tmp_path / "r.json")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no reference profile" in err
    assert not (tmp_path / "b.csv").exists() and not (tmp_path / "r.json").exists()


def test_partial_profiles_merge_to_the_profile_of_the_whole(served_model, reference):
    frame = generate_transitions(3_000, seed=5)
    whole = scored(served_model, reference, frame).profile
    parts = [scored(served_model, reference, frame.iloc[i : i + 700]).profile for i in range(0, 3_000, 700)]
    merged = reference.spec.new_partial()
    for part in parts:
        merged.merge(pickle.loads(pickle.dumps(PartialProfile.from_bytes(part.to_bytes(), reference.spec))))
    mine, theirs = merged.to_dict(), whole.to_dict()
    assert np.allclose(mine.pop("p_sums"), theirs.pop("p_sums"), rtol=1e-12)
    assert mine == theirs
    assert whole.scored == whole.rows == 3_000


def test_a_batch_drawn_like_the_training_data_flags_nothing(served_model, reference):
    report = report_of(served_model, reference, 20_000, seed=900)
    assert report["judged"] and not report["drifted"] and report["flagged"] == []
    assert max(f["psi"] for f in report["features"]) < PSI_DRIFT / 2
    assert report["p_advance"]["psi"] < PSI_DRIFT / 2 and report["recommendations"]["psi"] < PSI_DRIFT / 2
    assert not report["data_quality"]["drifted"] and not report["expected_outcomes"]["expected_worse"]


# What each shift moves in the generator, and so which feature groups must be flagged (and no
# other): a region sets the base unemployment rate, so a new region mix moves the labour market.
SHIFTS = {
    "recession": (Shift(unemployment_points=4.0), {"labour_market"}, {"unemployment_rate"}),
    "motive mix": (
        Shift(motive_shares=(0.30, 0.15, 0.10, 0.45)),
        {"motive"},
        {"motive_alternate_route"},
    ),
    "respelled skills": (
        Shift(respelled_skills=0.5),
        {"transferable_skills"},
        {"general_skill_coverage", "specialized_skill_coverage"},
    ),
    "region mix": (
        Shift(region_shares=(0.05, 0.05, 0.1, 0.4, 0.4)),
        {"region", "labour_market"},
        {"region_LATAM", "region_MEA", "unemployment_rate"},
    ),
}


@pytest.mark.parametrize("name", list(SHIFTS))
def test_a_shifted_batch_flags_exactly_what_moved(served_model, reference, name):
    shift, groups, must = SHIFTS[name]
    report = report_of(served_model, reference, 20_000, seed=901, shift=shift)
    flagged_groups = {g["group"] for g in report["groups"] if g["drifted"]}
    assert flagged_groups == groups
    drifted = {f["name"] for f in report["features"] if f["drifted"]}
    assert must <= drifted
    assert drifted <= {m for g in groups for m in FEATURE_GROUPS[g]}
    # Drifted features come first in the report, as on its page.
    assert [f["drifted"] for f in report["features"]][: len(drifted)] == [True] * len(drifted)
    assert report["data_quality"]["drifted"] == (name == "respelled skills")
    if name == "respelled skills":
        assert report["data_quality"]["known_token_share_drop"] > 0.3
        assert "known_skill_tokens" in report["flagged"]


def test_too_few_rows_are_reported_but_not_judged(served_model, reference):
    report = report_of(served_model, reference, MIN_ROWS - 1, seed=3, shift=Shift(unemployment_points=8))
    assert not report["judged"] and not report["drifted"]
    assert next(f for f in report["features"] if f["name"] == "unemployment_rate")["psi"] > PSI_DRIFT


def test_estimated_auc_falls_within_its_interval_of_the_realized_auc(served_model):
    """CBPE on 10 generated batches: the realized AUC is within the interval in >= 9; the
    interval is narrow enough to mean something, and labels the model cannot rank fall out."""
    inside, outside = [], []
    for seed in range(10):
        frame = generate_transitions(3_000, seed=1_000 + seed)
        block = score_block(served_model, as_text(frame), np.arange(1, 3_001))
        p, labels = to_numpy(block.scores.column("p_advance")), frame[LABEL].to_numpy()
        result = compare_with_labels(p, labels)
        inside.append(result["roc_auc_within_interval"])
        low, high = result["estimated"]["interval"]
        assert high - low < 0.06
        assert abs(result["estimated"]["expected_positive_rate"] - labels.mean()) < 0.03
        shuffled = np.random.default_rng(seed).permutation(labels)
        outside.append(not compare_with_labels(p, shuffled)["roc_auc_within_interval"])
    assert sum(inside) >= 9, inside
    assert all(outside)


def test_roc_auc_and_psi_are_the_usual_ones():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.4
    scores = np.round(rng.random(500) + y * 0.3, 2)  # ties included
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert psi([10, 20, 70], [10, 20, 70]) == 0
    assert psi([50, 50], [25, 75]) == pytest.approx(0.25 * np.log(0.75 / 0.5) + 0.25 * np.log(0.5 / 0.25))


def test_score_file_reports_what_its_blocks_counted(tmp_path, served_model, reference):
    """Many blocks on two threads, a reject among them: the report of the merged blocks is
    the report of the whole input, counted at once."""
    frame = generate_transitions(3_000, seed=8, shift=Shift(unemployment_points=4.0))
    table = as_text(frame)
    bad = table.column("fit_score").to_pylist()
    bad[10] = "9"
    table = table.set_column(table.schema.get_field_index("fit_score"), "fit_score", pa.array(bad))
    pq.write_table(table, tmp_path / "in.parquet")
    report = tmp_path / "r.json"
    summary = score_file(
        tmp_path / "in.parquet", tmp_path / "s.csv", model=served_model, chunk_rows=400, report=report
    )
    written = json.loads((tmp_path / "r.json").read_text())
    assert written == json.loads(json.dumps(summary.report))
    whole = score_block(served_model, table, np.arange(1, 3_001), profile=reference.spec)
    at_once = drift_report(reference, whole.profile, str(tmp_path / "in.parquet"))
    assert json.dumps(written["features"]) == json.dumps(at_once["features"])
    assert written["rows"] == {"read": 3_000, "scored": 2_999, "rejected": 1}
    assert written["data_quality"]["problems_by_column"] == {"fit_score": 1}
    assert written["flagged"] == ["unemployment_rate"]
    page = (tmp_path / "r.html").read_text()
    assert page.index("unemployment_rate") < page.index("years_experience")
    assert "http" not in page


def test_cli_drift_line_and_exit_code(tmp_path, served_model_dir, capsys):
    src = tmp_path / "in.csv"
    shifted = generate_transitions(2_000, seed=4, shift=Shift(unemployment_points=4.0))
    write_csv(shifted[names(CANDIDATE_COLUMNS)], src)
    args = ["score", str(src), "--out", str(tmp_path / "s.csv"), "--model-dir", str(served_model_dir)]
    report = tmp_path / "r.json"
    assert main([*args, "--report", str(report)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"drift: 1 flagged (unemployment_rate); report in {report}"
    assert main([*args, "--report", str(report), "--fail-on-drift"]) == EXIT_DRIFT
    assert (tmp_path / "s.csv").exists() and report.exists() and (tmp_path / "r.html").exists()
    capsys.readouterr()
    assert main([*args, "--fail-on-drift"]) == EXIT_BAD_INPUT
    assert main([*args, "--report", str(tmp_path / "r.txt")]) == EXIT_BAD_INPUT


def test_a_clean_file_with_a_report_never_loads_pandas(tmp_path, candidates, served_model_dir):
    assert_scored_without_pandas(tmp_path, candidates, served_model_dir, "--report", str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["rows"]["scored"] == 200


def test_the_page_reads_without_a_network(served_model, reference):
    report = report_of(served_model, reference, 1_000, seed=2)
    page = render_html(report)
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page


def test_evaluate_prints_realized_quality_next_to_the_estimate(tmp_path, served_model_dir, capsys):
    data = tmp_path / "labelled.csv"
    write_csv(generate_transitions(3_000, seed=12), data)
    assert main(["evaluate", "--data", str(data), "--model-dir", str(served_model_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    monitoring = result["monitoring"]
    assert monitoring["realized"]["roc_auc"] == pytest.approx(result["test"]["roc_auc"], abs=1e-9)
    assert monitoring["realized"]["rows"] == 3_000
    low, high = monitoring["estimated"]["interval"]
    assert low < monitoring["estimated"]["estimated_roc_auc"] < high
    assert monitoring["roc_auc_within_interval"] == (low <= monitoring["realized"]["roc_auc"] <= high)
    assert (
        monitoring["reference"]["test_roc_auc"]
        == read_manifest(served_model_dir)["metrics"]["test"]["roc_auc"]
    )


@pytest.mark.parametrize("on_grid", [True, False])
def test_fast_bin_counts_are_the_bins_of_searchsorted(reference, on_grid):
    """The lookup table and 0/1 sums count exactly as np.searchsorted on the edges would,
    fractional and far out-of-range values included; edges off the grid fall back to it."""
    from stepdown_ml.core.features import COMPUTED_FEATURES, FEATURE_NAMES

    edges = list(reference.spec.edges)
    if not on_grid:
        edges = [e + 1e-3 if len(e) > 1 else e for e in edges]
    spec = ProfileSpec(edges=edges, p_cuts=reference.spec.p_cuts)
    rng = np.random.default_rng(1)
    features = rng.choice([0.0, 1.0], size=(4_000, len(FEATURE_NAMES))).astype(np.float32)
    for name, cut in zip(COMPUTED_FEATURES, edges, strict=True):
        if not (len(cut) == 1 and cut[0] == 0.5):  # 0/1 features stay 0/1, as features make them
            values = rng.choice(np.r_[cut, cut + 0.25, cut - 1e-3, -5.0, 1e6, 0.5, 2.5], 4_000)
            features[:, FEATURE_NAMES.index(name)] = values.astype(np.float32)
    partial = spec.new_partial()
    partial.update(features, np.full(4_000, 0.5), np.zeros(4_000, dtype=np.int64))
    expected = [
        np.bincount(
            np.searchsorted(cut, features[:, FEATURE_NAMES.index(name)], side="right"), minlength=len(cut) + 1
        )
        for name, cut in zip(COMPUTED_FEATURES, edges, strict=True)
    ]
    assert spec.plan.binary
    assert len(spec.plan.lookup_columns if on_grid else spec.plan.search) > len(edges) // 2
    assert len(spec.plan.lookup_columns) + len(spec.plan.search) + len(spec.plan.binary) == len(edges)
    assert partial.numeric.tolist() == np.concatenate(expected).tolist()
