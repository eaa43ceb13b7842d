"""Unit tests: predict() for services."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from stepdown_ml import InvalidCandidateError, predict
from stepdown_ml.core.recommend import REASON_CODES
from stepdown_ml.core.schema import RECOMMENDATIONS, SCORES_COLUMNS
from stepdown_ml.training.train import calibrate
from tests.conftest import candidate_record

CODES = {c for pair in REASON_CODES.values() for c in pair} | {"no_dominant_factor"}


@pytest.mark.slow
def test_record_equals_batch_equals_scikit_learn(model, trained, candidates):
    """predict(record) == predict(frame) row == scikit-learn's pipeline, within 1e-5."""
    rows = candidates.head(300)
    batch = predict(rows, model=model)
    singles = [predict(r, model=model) for r in rows.to_dict("records")]
    # scikit-learn's pipeline, with the Platt calibration training chose (if any) applied.
    sklearn = calibrate(trained.pipeline.predict_proba(rows)[:, 1], trained.manifest["calibration"])
    np.testing.assert_allclose(batch["p_advance"], [s["p_advance"] for s in singles], atol=1e-12)
    np.testing.assert_allclose(batch["p_advance"], sklearn, atol=1e-5)
    assert list(batch["recommendation"]) == [s["recommendation"] for s in singles]
    assert list(batch["reasons"]) == [s["reasons"] for s in singles]


def test_a_frame_pandas_read_in_chunks_scores_as_one_read_whole(served_model, candidates, tmp_path):
    """pandas 3 keeps text columns as Arrow data, in several chunks when read from a larger
    file or concatenated: predict() scores such a frame as the same frame in one chunk."""
    path = tmp_path / "candidates.csv"
    candidates.head(300).to_csv(path, index=False)
    whole = pd.read_csv(path, dtype=str, keep_default_na=False)
    chunked = pd.concat([whole.iloc[:100], whole.iloc[100:]], ignore_index=True)
    arrow = pa.array(chunked["current_skills"])  # as the validation sees the column
    assert isinstance(arrow, pa.ChunkedArray) and arrow.num_chunks > 1
    pd.testing.assert_frame_equal(predict(chunked, model=served_model), predict(whole, model=served_model))
    assert predict(whole, model=served_model)["candidate_id"].tolist() == whole["candidate_id"].tolist()


def _problems(records, model):
    with pytest.raises(InvalidCandidateError) as caught:
        predict(records, model=model)
    return caught.value.problems


def test_typed_pandas_frames_score_and_refuse_as_text_does(served_model, candidates, tmp_path):
    """pandas' nullable numbers (convert_dtypes) and Arrow string_view columns: the same
    scores, and the same rejects with the same reasons (9, not np.int64(9)), as text."""
    path = tmp_path / "candidates.csv"
    candidates.head(40).to_csv(path, index=False)
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    text.loc[3, "fit_score"] = "9"
    typed = pd.read_csv(path, keep_default_na=False)
    typed.loc[3, "fit_score"] = 9
    views = text.astype(pd.ArrowDtype(pa.string_view()))
    expected = _problems(text, served_model)
    reason = "fit_score must be an integer 1-5, got '9'"
    assert expected == [{"row": 4, "column": "fit_score", "reason": reason}]
    for frame in (typed, typed.convert_dtypes(), views):
        assert _problems(frame, served_model) == expected
    valid = text.drop(index=3).reset_index(drop=True)
    scores = predict(valid, model=served_model)
    for frame in (typed.drop(index=3).reset_index(drop=True).convert_dtypes(), valid.astype(views.dtypes)):
        pd.testing.assert_frame_equal(predict(frame, model=served_model), scores)
    record = valid.iloc[0].to_dict()
    one = _problems({**record, "fit_score": 9}, served_model)
    assert _problems({**record, "fit_score": np.int64(9)}, served_model) == one


def test_output_layout(served_model, candidates):
    out = predict(candidates.head(50), model=served_model)
    assert list(out.columns) == list(SCORES_COLUMNS)
    assert list(out["candidate_id"]) == list(candidates.head(50)["candidate_id"])
    assert out["p_advance"].between(0, 1).all()
    assert set(out["recommendation"]) <= set(RECOMMENDATIONS)
    assert all(set(r.split(";")) <= CODES for r in out["reasons"])
    assert (out["model_version"] == served_model.version).all()


def test_default_model_is_used_without_arguments():
    result = predict(candidate_record())
    assert set(result) == set(SCORES_COLUMNS)


def test_iterable_of_dicts_is_accepted(served_model):
    out = predict(
        iter([candidate_record(candidate_id="a"), candidate_record(candidate_id="b")]), model=served_model
    )
    assert list(out["candidate_id"]) == ["a", "b"]


def test_ranking_by_person(served_model):
    records = [
        candidate_record(candidate_id="p1-weak", person_id="p1", fit_score="1", promotion_path="0"),
        candidate_record(candidate_id="p1-strong", person_id="p1", fit_score="5", promotion_path="1"),
        candidate_record(candidate_id="p2-only", person_id="p2"),
    ]
    out = predict(records, model=served_model).set_index("candidate_id")
    assert out.loc["p1-strong", "rank"] == 1 and out.loc["p1-weak", "rank"] == 2
    assert out.loc["p2-only", "rank"] == 1


def test_invalid_record_raises_one_exception_with_every_problem(served_model):
    with pytest.raises(InvalidCandidateError) as exc:
        predict(candidate_record(fit_score="9", region="Mars"), model=served_model)
    assert sorted(p["column"] for p in exc.value.problems) == ["fit_score", "region"]
    assert "fit_score must be an integer 1-5, got '9'" in str(exc.value)


def test_invalid_rows_in_a_batch_are_named_by_row(served_model):
    with pytest.raises(InvalidCandidateError) as exc:
        predict([candidate_record(), candidate_record(current_level="x")], model=served_model)
    assert exc.value.problems == [
        {"row": 2, "column": "current_level", "reason": "current_level must be an integer 1-10, got 'x'"}
    ]


@pytest.mark.parametrize("bad", [{}, {"motive": "career_change"}, []])
def test_missing_fields_raise_invalid_candidate_not_library_errors(served_model, bad):
    with pytest.raises(InvalidCandidateError):
        predict(bad, model=served_model)


def test_thread_pool_gives_serial_results(served_model, candidates):
    records = candidates.head(200).to_dict("records")
    serial = [predict(r, model=served_model)["p_advance"] for r in records]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda r: predict(r, model=served_model)["p_advance"], records))
    assert parallel == serial


def test_serving_imports_neither_mlflow_nor_sklearn():
    """One record needs neither MLflow, scikit-learn nor pandas (pandas alone costs ~0.2 s)."""
    code = (
        "import json, sys, stepdown_ml\n"
        f"stepdown_ml.predict(json.loads({json.dumps(json.dumps(candidate_record()))}))\n"
        "heavy = {'mlflow', 'sklearn', 'scipy', 'onnx', 'pandas'}\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & heavy)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_score_records_equals_the_frame_path_with_ranks(served_model, candidates):
    """The service's batch path gives predict(records)'s values, ranks included."""
    records = candidates.head(200).astype(object).where(candidates.head(200).notna(), None).to_dict("records")
    for i, record in enumerate(records):
        record["person_id"] = f"p{i % 13}"
    expected = predict(records, model=served_model)
    got = served_model.score_records(records)
    assert [list(r) for r in got] == [list(expected.columns)] * len(records)
    assert [tuple(r.values()) for r in got] == list(expected.itertuples(index=False, name=None))


def test_score_records_lists_every_problem_with_its_row(served_model):
    """Every problem, row by row; once one record names a person, the others must too."""
    records = [
        candidate_record(),
        candidate_record(current_level="0"),
        "not a record",
        candidate_record(motive="necessity", fit_score="9"),
        candidate_record(person_id="p1"),
    ]
    with pytest.raises(InvalidCandidateError) as caught:
        served_model.score_records(records)
    assert [(p["row"], p["column"]) for p in caught.value.problems] == [
        (1, "person_id"),
        (2, "current_level"),
        (2, "person_id"),
        (3, ""),
        (4, "fit_score"),
        (4, "necessity_avoidable"),
        (4, "person_id"),
    ]


def test_a_batch_larger_than_one_session_call_scores_as_its_parts(served_model, candidates, monkeypatch):
    """Model.infer runs onnxruntime on slices of SESSION_ROWS rows: the same bits, every row once."""
    from stepdown_ml.serving import model as model_module

    features = served_model.features.transform(candidates.head(100))
    whole_p, whole_c = served_model.infer(features)
    monkeypatch.setattr(model_module, "SESSION_ROWS", 7)
    p, contributions = served_model.infer(features)
    assert len(p) == 100 and contributions.shape == whole_c.shape
    assert np.array_equal(p, whole_p) and np.array_equal(contributions, whole_c)
    singles = np.concatenate([served_model.infer(features[i : i + 1])[0] for i in range(100)])
    assert np.array_equal(singles, whole_p)
