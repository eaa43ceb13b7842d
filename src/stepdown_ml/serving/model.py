"""Serving: ``predict()`` for services and the batch scoring core, on ONNX Runtime.

Nothing here imports scikit-learn or MLflow (unless an MLflow model URI is asked for),
and nothing loads a pickle: the served artifact is ``model.onnx`` plus its manifest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import onnxruntime as ort
import pyarrow as pa

from stepdown_ml.core import config
from stepdown_ml.core.arrow import from_numpy, strings
from stepdown_ml.core.features import GROUP_NAMES, N_FEATURES, FeatureSpace, arrow_text
from stepdown_ml.core.modeldir import (
    CONTRIBUTIONS,
    INPUT_NAME,
    SERVING_ONNX_FILE,
    VOCABULARY_FILE,
    read_manifest,
)
from stepdown_ml.core.parsing import is_pandas
from stepdown_ml.core.recommend import (
    CONFIDENCE_NAMES,
    RECOMMENDATION_NAMES,
    confidence,
    confidence_codes,
    confidence_one,
    rank_within,
    reason_array,
    reason_codes,
    reasons,
    reasons_one,
    recommend,
    recommend_codes,
    recommend_one,
)
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, PERSON_ID, RANK_COLUMN, SCORES_COLUMNS
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.validation import repeated_columns, validate_frame, validate_record, validate_records
from stepdown_ml.serving.registry import local_model_dir

if TYPE_CHECKING:
    import pandas as pd


class InvalidCandidateError(ValueError):
    """The input breaks the data contract.

    Attributes:
        problems: every problem found, as dicts with ``column`` and ``reason`` (and
            ``row``, 1-based, when several records were given).
    """

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        shown = "; ".join((f"row {p['row']}: " if "row" in p else "") + p["reason"] for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"invalid candidate: {shown}{more}")


# Batches of at least this many records try the column-by-column path (below it, the fixed
# costs of its numpy calls outweigh what it saves; docs/BENCHMARKS.md).
COLUMNS_FROM = 16
# onnxruntime runs at most this many rows at a time. An additive model's graph holds a
# float per row and step (189 steps in the default model) in between: 1,024 rows keep them
# in the core's cache (0.23 µs per row, against 0.36 for the batch scorer's 11,488 rows at
# once), and a call on a million rows would need gigabytes (docs/BENCHMARKS.md, "The
# additive model: at 4× the floor").
SESSION_ROWS = 1_024


class Model:
    """A loaded model directory: ONNX session, features, threshold and version.

    Args:
        model_dir: directory written by ``stepdown-ml train``.
        threads: ONNX Runtime intra-op threads (1 suits single records and workers).
    """

    def __init__(self, model_dir: Path | str, threads: int = 1) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.version: str = self.manifest["model_version"]
        self.threshold = float(self.manifest["threshold"])
        self.bias = float(self.manifest["contribution_bias"])
        calibration = self.manifest.get("calibration") or {"slope": 1.0, "intercept": 0.0}
        self.slope = float(calibration["slope"])
        self.intercept = float(calibration["intercept"])
        self.features = FeatureSpace(load_vocabulary(self.model_dir / VOCABULARY_FILE))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Batches vary in size; an arena would keep the largest one's buffers for good.
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(
            str(self.model_dir / SERVING_ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self._outputs = [CONTRIBUTIONS]
        self._record_buffers = threading.local()

    def infer(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``p_advance`` and per-group contributions for a float32 feature matrix.

        The probability is the logistic of the bias plus the contributions, which equals
        the classifier's own probability output (checked at export and in the tests).
        """
        if len(features) == 0:
            return np.zeros(0), np.zeros((0, len(GROUP_NAMES)), dtype=np.float32)
        parts = [
            self.session.run(self._outputs, {INPUT_NAME: features[start : start + SESSION_ROWS]})[0]
            for start in range(0, len(features), SESSION_ROWS)
        ]
        contributions = parts[0] if len(parts) == 1 else np.concatenate(parts)
        # Added in group order, as score_record does, so both give the same bits.
        log_odds = np.full(len(contributions), self.bias)
        for group in range(contributions.shape[1]):
            log_odds += contributions[:, group]
        # Platt calibration when training found it needed (identity: the same bits).
        log_odds = self.slope * log_odds + self.intercept
        return 1.0 / (1.0 + np.exp(-log_odds)), contributions

    def score_features(self, features: np.ndarray, candidate_ids: Any) -> pd.DataFrame:
        """The scores layout (without rank) for already validated, featurized rows."""
        import pandas as pd

        return pd.DataFrame(self._score_columns(features, candidate_ids))

    def _score_columns(self, features: np.ndarray, candidate_ids: Any) -> dict[str, Any]:
        """The scores layout's columns (without rank), by name, in order."""
        p, contributions = self.infer(features)
        return {
            "candidate_id": candidate_ids,
            "p_advance": p,
            "recommendation": recommend(features, p, self.threshold),
            "reasons": reasons(contributions),
            "model_version": self.version,
            "confidence": confidence(p, self.threshold),
        }

    def score_features_arrow(self, features: np.ndarray, candidate_ids: pa.Array) -> pa.Table:
        """:meth:`score_features` as an Arrow table with dictionary-encoded text columns.

        Same numbers and codes; no Python string per row, which is what batch scoring
        writes out.
        """
        p, contributions = self.infer(features)
        return pa.Table.from_arrays(
            [
                candidate_ids,
                from_numpy(p),
                pa.DictionaryArray.from_arrays(
                    from_numpy(recommend_codes(features, p, self.threshold)), strings(RECOMMENDATION_NAMES)
                ),
                reason_array(contributions),
                pa.DictionaryArray.from_arrays(
                    from_numpy(np.zeros(len(p), dtype=np.int8)), strings([self.version])
                ),
                pa.DictionaryArray.from_arrays(
                    from_numpy(confidence_codes(p, self.threshold)), strings(CONFIDENCE_NAMES)
                ),
            ],
            names=list(SCORES_COLUMNS),
        )

    def score_frame(
        self,
        frame: pd.DataFrame,
        first_row: int = 1,
        row_numbers: np.ndarray | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Validate and score a frame: ``(scores of valid rows in input order, rejects)``.

        With a ``person_id`` column, ``rank`` is added (within this frame).
        Row numbers in the rejects start at ``first_row`` unless ``row_numbers`` are given.
        """
        checked = validate_frame(frame, CANDIDATE_COLUMNS, first_row=first_row, row_numbers=row_numbers)
        valid = checked.valid_columns()
        ids = arrow_text(valid["candidate_id"]).to_numpy(zero_copy_only=False)
        scores = self.score_features(self.features.transform(valid), ids)
        if PERSON_ID.name in valid:
            scores[RANK_COLUMN] = rank_within(valid[PERSON_ID.name], scores["p_advance"].to_numpy())
        return scores, checked.problems

    def score_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Score one record (the fast path: no DataFrame, no allocation in ONNX Runtime)."""
        values, problems = validate_record(record)
        if problems:
            raise InvalidCandidateError([{"column": c, "reason": r} for c, r in problems])
        return self._score_values(values)

    def _score_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Score one validated record (``validate_record``'s values)."""
        binding, features, feature_row, contribution_row = self._bound_buffers()
        self.features.transform_record(values, out=features)
        self.session.run_with_iobinding(binding)
        row = contribution_row.tolist()
        log_odds = sum(row, self.bias)  # bias first, then group order: infer()'s additions
        # numpy's exp, as infer() uses: math.exp differs from it in the last bit for ~5 % of
        # inputs, and one record must score the same bits as in a batch.
        p_advance = float(1.0 / (1.0 + np.exp(-(self.slope * log_odds + self.intercept))))
        result = {
            "candidate_id": values["candidate_id"],
            "p_advance": p_advance,
            "recommendation": recommend_one(feature_row, p_advance, self.threshold),
            "reasons": reasons_one(row),
            "model_version": self.version,
            "confidence": confidence_one(p_advance, self.threshold),
        }
        if values.get(PERSON_ID.name) is not None:
            result[RANK_COLUMN] = 1
        return result

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Score several records as dicts in input order: a service's batch.

        No DataFrame: for the batches a service gets that is many times cheaper than
        :func:`predict`'s frame path. A batch whose values are all well-formed in the
        common way is validated and featurized column by column
        (:func:`~stepdown_ml.core.validation.validate_records`,
        :meth:`~stepdown_ml.core.features.FeatureSpace.transform_columns`); any other
        batch record by record (:func:`validate_record`, which words every problem, and
        ``transform_record``). Both give the same features, bit for bit, and the batch is
        then scored at once, as :meth:`score_features` scores a frame (the record/batch
        parity tests hold the paths to 1e-12). With ``person_id`` in any record, every
        row gets ``rank`` within its person, as :meth:`score_frame` ranks.

        Raises:
            InvalidCandidateError: listing every problem of every record, with its 1-based
                ``row``.
        """
        ids: Sequence[str]
        person_ids: Sequence[Any] | None
        columns = validate_records(records) if len(records) >= COLUMNS_FROM else None
        if columns is None:
            features, ids, person_ids = self._featurize_records(records)
        else:
            features = self.features.transform_columns(columns)
            ids, person_ids = columns["candidate_id"], columns.get(PERSON_ID.name)
        p, contributions = self.infer(features)
        reason_index, reason_texts = reason_codes(contributions)
        rows = zip(
            ids,
            p.tolist(),
            RECOMMENDATION_NAMES[recommend_codes(features, p, self.threshold)].tolist(),
            reason_texts[reason_index].tolist(),
            CONFIDENCE_NAMES[confidence_codes(p, self.threshold)].tolist(),
            strict=True,
        )
        version = self.version
        # The scores layout (SCORES_COLUMNS, then rank), spelled out: a dict display is
        # several times cheaper than dict(zip(names, row)) (tests compare the keys).
        answer = [
            {
                "candidate_id": i,
                "p_advance": q,
                "recommendation": r,
                "reasons": why,
                "model_version": version,
                "confidence": c,
            }
            for i, q, r, why, c in rows
        ]
        if person_ids is not None:
            for row, rank in zip(answer, rank_within(person_ids, p).tolist(), strict=True):
                row[RANK_COLUMN] = rank
        return answer

    def _featurize_records(
        self, records: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, list[str], list[Any] | None]:
        """Features, ids and person ids (None without ``person_id``), record by record.

        Raises:
            InvalidCandidateError: every problem of every record, with its ``row``.
        """
        features = np.empty((len(records), N_FEATURES), dtype=np.float32)
        ids: list[str] = []
        person_ids: list[Any] = []
        problems: list[dict[str, Any]] = []
        # As in a file: once any record names a person, every record must.
        with_person = any(isinstance(r, Mapping) and PERSON_ID.name in r for r in records)
        for row, record in enumerate(records, start=1):
            if not isinstance(record, Mapping):
                problems.append({"row": row, "column": "", "reason": "a record must be an object"})
                continue
            values, found = validate_record(record)
            if with_person and PERSON_ID.name not in record:
                found = [*found, (PERSON_ID.name, PERSON_ID.reason(None))]
            if found:
                problems.extend({"row": row, "column": c, "reason": r} for c, r in found)
            elif not problems:  # past the first bad record, only look for more problems
                self.features.transform_record(values, out=features[row - 1 : row])
                ids.append(values["candidate_id"])
                person_ids.append(values.get(PERSON_ID.name))
        if problems:
            raise InvalidCandidateError(problems)
        if not ids:
            raise InvalidCandidateError([{"column": "", "reason": "no records given"}])
        return features, ids, person_ids if with_person else None

    def _bound_buffers(self) -> tuple[ort.IOBinding, np.ndarray, memoryview[float], memoryview[float]]:
        """This thread's one-row input and output buffers, bound to the session once.

        ONNX Runtime reads the input and writes the output in place (CPU memory bound by
        address is not copied), which saves building feeds and outputs on every call.
        Returns the binding, the (1, N_FEATURES) input array, and flat float views of the
        input and output (indexing them gives Python floats).
        """
        local = self._record_buffers
        try:
            return local.bound
        except AttributeError:
            features = np.zeros((1, N_FEATURES), dtype=np.float32)
            contributions = np.zeros((1, len(GROUP_NAMES)), dtype=np.float32)
            binding = self.session.io_binding()
            for bind, name, array in (
                (binding.bind_input, INPUT_NAME, features),
                (binding.bind_output, CONTRIBUTIONS, contributions),
            ):
                bind(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
            local.bound = (binding, features, _flat(features), _flat(contributions))
            return local.bound


def _flat(array: np.ndarray) -> memoryview[float]:
    # numpy's stubs declare ndarray.__buffer__ (the buffer protocol) only on Python >= 3.12.
    return memoryview(array).cast("B").cast("f")  # type: ignore[arg-type]


_LOADED: dict[str, Model] = {}
_LOCK = threading.Lock()


def load_model(model: Model | Path | str | None = None) -> Model:
    """The :class:`Model` for a directory or ``models:/`` URI, loaded once per process."""
    if isinstance(model, Model):
        return model
    key = str(model or config.DEFAULT_MODEL_DIR)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = Model(local_model_dir(key))
        return _LOADED[key]


@overload
def predict(records: Mapping[str, Any], model: Model | Path | str | None = None) -> dict[str, Any]: ...
@overload
def predict(
    records: Iterable[Mapping[str, Any]] | pd.DataFrame, model: Model | Path | str | None = None
) -> pd.DataFrame: ...


def predict(records: Any, model: Model | Path | str | None = None) -> Any:
    """Score candidates: the probability that the step down leads back up, and advice.

    Args:
        records: one candidate (a mapping, docs/CONTRACT.md candidate columns) or many:
            an iterable of mappings, each validated as one record is (a key left out is
            an empty value), or a DataFrame, validated as a file is (every column must be
            there). Read a CSV for it with ``pd.read_csv(path, keep_default_na=False)``,
            or pandas takes the region ``NA`` for a missing value.
        model: a model directory, a ``models:/name@alias`` URI, or a loaded
            :class:`Model`; default: the committed default model.

    Returns:
        For one record, a dict; for many, a DataFrame in input order. Keys/columns:
        ``candidate_id``, ``p_advance``, ``recommendation``, ``reasons``,
        ``model_version``, ``confidence`` (``close_call``, ``moderate`` or ``clear``: how
        close ``p_advance`` is to the threshold), and ``rank`` (1 = best option of that person) when
        ``person_id`` is given.

    Raises:
        InvalidCandidateError: when any record breaks the contract; it lists every
            (row, column, reason).
    """
    loaded = load_model(model)
    if records.__class__ is dict or isinstance(records, Mapping):
        return loaded.score_record(records)
    import pandas as pd  # many records: the answer is a DataFrame

    if not is_pandas(records):
        # Records are validated one by one, as one record is and as the service's batches
        # are: a key a record leaves out is an empty value of that record, and an item that
        # is not a mapping is a problem of its row (a frame's row, a Series, is a mapping).
        rows = [r.to_dict() if is_pandas(r, "Series") else r for r in records]
        answer = loaded.score_records(rows)
        ranked = RANK_COLUMN in answer[0]  # score_records refuses an empty batch
        return pd.DataFrame(answer, columns=[*SCORES_COLUMNS, *([RANK_COLUMN] if ranked else [])])
    frame = records
    if frame.empty:
        raise InvalidCandidateError([{"column": "", "reason": "no records given"}])
    missing = [c.name for c in CANDIDATE_COLUMNS if c.name not in frame.columns]
    if missing:
        raise InvalidCandidateError([{"column": name, "reason": f"{name} is missing"} for name in missing])
    repeated = repeated_columns(list(frame.columns), CANDIDATE_COLUMNS)
    if repeated:
        raise InvalidCandidateError(
            [{"column": name, "reason": f"{name} is given more than once"} for name in repeated]
        )
    scores, problems = loaded.score_frame(frame.reset_index(drop=True))
    if len(problems):
        rejects: Iterable[Any] = problems.itertuples(index=False)  # namedtuples of the rejects layout
        raise InvalidCandidateError(
            [{"row": int(r.row), "column": r.column, "reason": r.reason} for r in rejects]
        )
    columns = [*SCORES_COLUMNS, *([RANK_COLUMN] if RANK_COLUMN in scores else [])]
    return scores[columns]
