"""Monitoring: the reference profile, streaming partial profiles, drift and expected outcomes.

Training writes a :class:`ReferenceProfile` into the model directory: fixed bins for every
model feature (a bin per value for features with few values, deciles of the training data
otherwise; category counts for the one-hot families), a fine histogram of ``p_advance``,
the recommendation mix, the share of skill tokens outside the vocabulary, missing optional
values, and the test split's metrics. Scoring counts each block into a
:class:`PartialProfile` on those same bins, from the feature matrix it has built anyway
(a lookup table and ``np.bincount``, no second read); partial profiles add up
(:meth:`PartialProfile.merge`) whichever engine, thread, process or Spark task counted
them. :func:`drift_report` compares the sum with the reference (PSI, a binned
Kolmogorov–Smirnov distance, documented thresholds: docs/MONITORING.md), and
:func:`expected_outcomes` estimates the advancement rate and the ROC AUC of the batch
from the calibrated ``p_advance`` alone (confidence-based performance estimation, CBPE).

Pure numpy and pyarrow: the runtime (batch, Spark) imports this module.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stepdown_ml.core.arrow import strings, to_numpy
from stepdown_ml.core.features import COMPUTED_FEATURES, FEATURE_GROUPS, FEATURE_NAMES
from stepdown_ml.core.modeldir import (
    REFERENCE_PROFILE_FILE,
    REFERENCE_PROFILE_KEY,
    ModelDirError,
    ProfileError,
    read_manifest,
    sha256_file,
)
from stepdown_ml.core.schema import FUNCTIONS, INDUSTRIES, MOTIVES, RECOMMENDATIONS, REGIONS, ContractError
from stepdown_ml.core.tables import atomic_paths

PROFILE_FORMAT = 1
# A feature (or p_advance, or the recommendation mix) has drifted when its PSI against the
# reference reaches this (the usual reading: < 0.1 stable, 0.1-0.2 moderate, >= 0.2 shifted).
PSI_DRIFT = 0.2
PSI_MODERATE = 0.1
# Empty bins count as this share, so that PSI stays finite.
PSI_FLOOR = 1e-4
# Below this many scored rows nothing is flagged (the statistics are still reported).
MIN_ROWS = 500
# The skill tokens known to the vocabulary: flagged when their share falls by this much.
KNOWN_TOKEN_DROP = 0.10
# The batch is expected to rank worse when its estimated AUC is this far below the test split's.
AUC_DROP = 0.02
# Features with at most this many distinct training values get one bin per value.
MAX_VALUE_BINS = 24
QUANTILE_BINS = 10
# Decile edges are rounded to multiples of 1 / EDGE_GRID (a power of two: scaling by it is
# exact), so that one lookup table bins them (_BinPlan).
EDGE_GRID = 64
# p_advance is counted on a fine grid (CBPE needs it); its PSI uses deciles snapped to it.
P_GRID = 1000
# The interval of the estimated AUC: this many sampling errors either side (as NannyML's CBPE).
INTERVAL_ERRORS = 3.0
SIMULATIONS = 400
CATEGORIES: dict[str, tuple[str, ...]] = {
    "motive": MOTIVES,
    "region": REGIONS,
    "target_function": FUNCTIONS,
    "target_industry": INDUSTRIES,
}
OPTIONAL_COLUMNS = ("necessity_avoidable", "current_skills", "target_skills")
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
_NUMERIC = np.array([_INDEX[name] for name in COMPUTED_FEATURES])
_FAMILY_SLICES = {
    family: (_INDEX[f"{family}_{levels[0]}"], _INDEX[f"{family}_{levels[0]}"] + len(levels))
    for family, levels in CATEGORIES.items()
}
_GROUP_OF = {name: group for group, members in FEATURE_GROUPS.items() for name in members}
_N_CURRENT, _N_TARGET = _INDEX["n_current_skills"], _INDEX["n_target_skills"]


@dataclass
class ProfileSpec:
    """The fixed bins of a reference profile: what a partial profile counts into."""

    edges: list[np.ndarray]  # per COMPUTED_FEATURES entry: bin edges (side="right")
    p_cuts: np.ndarray  # fine-grid indices where the p_advance PSI bins start (after the first)

    @property
    def numeric_sizes(self) -> list[int]:
        return [len(e) + 1 for e in self.edges]

    @functools.cached_property
    def plan(self) -> _BinPlan:
        """How to count a block on these bins fast (the same bins as ``np.searchsorted``)."""
        return _BinPlan(self.edges)

    def new_partial(self) -> PartialProfile:
        """An empty partial profile on these bins."""
        return PartialProfile(
            numeric=np.zeros(sum(self.numeric_sizes), dtype=np.int64),
            categories=np.zeros(sum(len(v) for v in CATEGORIES.values()), dtype=np.int64),
            p_counts=np.zeros(P_GRID, dtype=np.int64),
            p_sums=np.zeros(P_GRID, dtype=np.float64),
            recommendations=np.zeros(len(RECOMMENDATIONS), dtype=np.int64),
            tokens=np.zeros(4, dtype=np.int64),
            missing=np.zeros(len(OPTIONAL_COLUMNS), dtype=np.int64),
            spec=self,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric_edges": {
                name: e.tolist() for name, e in zip(COMPUTED_FEATURES, self.edges, strict=True)
            },
            "p_advance_cuts": self.p_cuts.tolist(),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ProfileSpec:
        edges = payload["numeric_edges"]
        if set(edges) != set(COMPUTED_FEATURES):
            raise ProfileError("the reference profile was built for other features than this code computes")
        return cls(
            edges=[np.asarray(edges[name], dtype=np.float64) for name in COMPUTED_FEATURES],
            p_cuts=np.asarray(payload["p_advance_cuts"], dtype=np.int64),
        )


class _BinPlan:
    """Counts of a feature matrix on a spec's numeric bins, in a few vectorized passes.

    A bin of a feature is the number of its edges at or below the value (``np.searchsorted``,
    ``side="right"``); two ways give exactly that:

    - 0/1 features (the one edge 0.5): the ones are the column's sum;
    - features whose edges are multiples of 1 / :data:`EDGE_GRID` (all that
      :func:`build_spec` makes): ``x >= e`` is ``floor(G x) >= G e`` with ``G e`` an
      integer, so one lookup table on ``floor(G x)``, clipped to each feature's range of
      edges, bins every value (fractional and far out-of-range values included) of all
      these features at once.

    Edges off the grid (a profile from elsewhere) fall back to ``np.searchsorted``.
    """

    def __init__(self, edges: list[np.ndarray]) -> None:
        self.binary: list[tuple[int, int]] = []  # (feature column, its first bin)
        self.search: list[tuple[int, np.ndarray, int]] = []  # (column, edges, first bin)
        lookup_columns, low, high, bases, tables = [], [], [], [], []
        start = table_size = 0
        for column, cut in zip(_NUMERIC, edges, strict=True):
            scaled = cut * EDGE_GRID
            if len(cut) == 1 and cut[0] == 0.5:
                self.binary.append((int(column), start))
            elif len(cut) and np.array_equal(scaled, np.round(scaled)) and scaled[-1] - scaled[0] <= 1 << 15:
                first, last = int(scaled[0]) - 1, int(scaled[-1])
                lookup_columns.append(int(column))
                low.append(first)
                high.append(last)
                bases.append(table_size - first)
                tables.append(start + np.searchsorted(scaled, np.arange(first, last + 1), side="right"))
                table_size += last - first + 1
            else:
                self.search.append((int(column), cut, start))
            start += len(cut) + 1
        self.lookup_columns = np.array(lookup_columns, dtype=np.int64)
        self.low = np.array(low, dtype=np.float32)
        self.high = np.array(high, dtype=np.float32)
        self.bases = np.array(bases, dtype=np.int64)
        self.table = np.concatenate(tables) if tables else np.zeros(0, dtype=np.int64)

    def counts(self, features: np.ndarray, sums: np.ndarray, size: int) -> np.ndarray:
        """The bin counts of ``features`` (all numeric features, concatenated)."""
        n = len(features)
        counts = np.zeros(size, dtype=np.int64)
        for column, at in self.binary:
            ones = int(sums[column])
            counts[at] += n - ones
            counts[at + 1] += ones
        if len(self.lookup_columns):
            scaled = features[:, self.lookup_columns]
            scaled *= EDGE_GRID
            np.floor(scaled, out=scaled)
            np.clip(scaled, self.low, self.high, out=scaled)
            keys = scaled.astype(np.int64)
            keys += self.bases
            counts += np.bincount(self.table[keys.ravel()], minlength=size)
        for column, cut, at in self.search:
            bins = np.searchsorted(cut, features[:, column], side="right")
            counts[at : at + len(cut) + 1] += np.bincount(bins, minlength=len(cut) + 1)
        return counts


def build_spec(features: np.ndarray, p_advance: np.ndarray) -> ProfileSpec:
    """Bins from the training data: a bin per value where there are few, else deciles
    (rounded to a multiple of 1 / :data:`EDGE_GRID`)."""
    edges = []
    for column in _NUMERIC:
        values = features[:, column].astype(np.float64)
        distinct = np.unique(values)
        if len(distinct) <= MAX_VALUE_BINS:
            cut = (distinct[1:] + distinct[:-1]) / 2
        else:
            deciles = np.quantile(values, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1])
            cut = np.unique(np.round(deciles * EDGE_GRID) / EDGE_GRID)  # on the grid: see _BinPlan
        edges.append(cut)
    grid = np.unique(np.round(np.quantile(p_advance, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1]) * P_GRID))
    cuts = grid[(grid > 0) & (grid < P_GRID)].astype(np.int64)
    return ProfileSpec(edges=edges, p_cuts=cuts)


@dataclass
class PartialProfile:
    """Counts of one part of a batch on a :class:`ProfileSpec`'s bins; partials add up.

    Small (a few thousand numbers), picklable, and serializable to bytes
    (:meth:`to_bytes`) for worker processes and Spark tasks.
    """

    numeric: np.ndarray
    categories: np.ndarray
    p_counts: np.ndarray
    p_sums: np.ndarray
    recommendations: np.ndarray
    tokens: np.ndarray  # known current, unknown current, known target, unknown target
    missing: np.ndarray  # empty cells of OPTIONAL_COLUMNS among scored rows
    spec: ProfileSpec | None = None
    rows: int = 0  # rows read (scored + rejected)
    scored: int = 0
    rejected: int = 0
    problems: dict[str, int] = field(default_factory=dict)  # per rejects column ("" = the row)

    def update(
        self,
        features: np.ndarray,
        p_advance: np.ndarray,
        recommendations: np.ndarray,
        unknown: dict[str, np.ndarray] | None = None,
        avoidable: np.ndarray | None = None,
        rejects: pa.Table | None = None,
        rows: int | None = None,
    ) -> None:
        """Count one block: its scored rows' features and scores, its rejects.

        Args:
            features: the scored rows' feature matrix (as scoring built it).
            p_advance: their calibrated probabilities.
            recommendations: their recommendation codes (positions in RECOMMENDATIONS).
            unknown: per-row counts of out-of-vocabulary tokens (``current``, ``target``),
                from :meth:`stepdown_ml.core.features.FeatureSpace.transform`.
            avoidable: the scored rows' ``necessity_avoidable`` values (NaN when empty).
            rejects: the block's rejects (rejects layout).
            rows: rows read in the block (default: the scored rows).
        """
        if self.spec is None:
            raise ProfileError("a partial profile read without its spec cannot count rows")
        n = len(features)
        sums = features.sum(axis=0, dtype=np.float64) if n else np.zeros(features.shape[1])
        if n:
            self.numeric += self.spec.plan.counts(features, sums, len(self.numeric))
        offset = 0
        for start, stop in _FAMILY_SLICES.values():  # one-hot columns: their sums are the counts
            self.categories[offset : offset + stop - start] += sums[start:stop].astype(np.int64)
            offset += stop - start
        p = np.asarray(p_advance, dtype=np.float64)
        fine = np.minimum((p * P_GRID).astype(np.int64), P_GRID - 1)
        self.p_counts += np.bincount(fine, minlength=P_GRID)
        self.p_sums += np.bincount(fine, weights=p, minlength=P_GRID)
        self.recommendations += np.bincount(
            np.asarray(recommendations, dtype=np.int64), minlength=len(RECOMMENDATIONS)
        )
        if unknown is not None and n:
            unknown_current, unknown_target = int(unknown["current"].sum()), int(unknown["target"].sum())
            self.tokens += (
                int(sums[_N_CURRENT]) - unknown_current,
                unknown_current,
                int(sums[_N_TARGET]) - unknown_target,
                unknown_target,
            )
        if avoidable is not None:
            self.missing[0] += int(np.isnan(avoidable).sum())
        self.missing[1] += int((features[:, _N_CURRENT] == 0).sum())
        self.missing[2] += int((features[:, _N_TARGET] == 0).sum())
        self.scored += n
        self.rows += n if rows is None else rows
        if rejects is not None and rejects.num_rows:
            self.rejected += len(pc.unique(rejects.column("row")))
            counts = pc.value_counts(rejects.column("column")).to_pylist()
            for item in counts:
                key = item["values"]
                self.problems[key] = self.problems.get(key, 0) + int(item["counts"])

    def merge(self, other: PartialProfile) -> PartialProfile:
        """Add ``other``'s counts into this profile (returns self)."""
        for name in ("numeric", "categories", "p_counts", "p_sums", "recommendations", "tokens", "missing"):
            mine = getattr(self, name)
            mine += getattr(other, name)
        self.rows += other.rows
        self.scored += other.scored
        self.rejected += other.rejected
        for key, count in other.problems.items():
            self.problems[key] = self.problems.get(key, 0) + count
        return self

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-friendly lists (exact: integers and float64 sums)."""
        return {
            "numeric": self.numeric.tolist(),
            "categories": self.categories.tolist(),
            "p_counts": self.p_counts.tolist(),
            "p_sums": self.p_sums.tolist(),
            "recommendations": self.recommendations.tolist(),
            "tokens": self.tokens.tolist(),
            "missing": self.missing.tolist(),
            "rows": self.rows,
            "scored": self.scored,
            "rejected": self.rejected,
            "problems": dict(sorted(self.problems.items())),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any], spec: ProfileSpec | None = None) -> PartialProfile:
        arrays = {
            name: np.asarray(payload[name], dtype=np.float64 if name == "p_sums" else np.int64)
            for name in (
                "numeric",
                "categories",
                "p_counts",
                "p_sums",
                "recommendations",
                "tokens",
                "missing",
            )
        }
        return cls(
            **arrays,
            spec=spec,
            rows=int(payload["rows"]),
            scored=int(payload["scored"]),
            rejected=int(payload["rejected"]),
            problems={str(k): int(v) for k, v in payload["problems"].items()},
        )

    def to_bytes(self) -> bytes:
        """Compact bytes (numpy's .npz, no pickle) for a Spark task or a worker process."""
        buffer = io.BytesIO()
        payload = self.to_dict()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in payload.items() if isinstance(v, list)}
        meta = json.dumps({k: v for k, v in payload.items() if not isinstance(v, list)})
        arrays["meta"] = np.frombuffer(meta.encode(), dtype=np.uint8)
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, spec: ProfileSpec | None = None) -> PartialProfile:
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            payload: dict[str, Any] = json.loads(loaded["meta"].tobytes().decode())
            payload.update({k: loaded[k] for k in loaded.files if k != "meta"})
        return cls.from_dict(payload, spec)


@dataclass
class ReferenceProfile:
    """The training data's profile: bins, counts on them, and the test split's metrics."""

    spec: ProfileSpec
    counts: PartialProfile
    performance: dict[str, float]
    model_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "features": list(FEATURE_NAMES),
            "bins": self.spec.to_dict(),
            "counts": self.counts.to_dict(),
            "performance": self.performance,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any], model_version: str = "") -> ReferenceProfile:
        if payload.get("format") != PROFILE_FORMAT or payload.get("features") != list(FEATURE_NAMES):
            raise ProfileError("the reference profile was built for other features than this code computes")
        spec = ProfileSpec.from_dict(payload["bins"])
        return cls(
            spec=spec,
            counts=PartialProfile.from_dict(payload["counts"], spec),
            performance=payload["performance"],
            model_version=model_version,
        )


def build_reference(
    features: np.ndarray,
    p_advance: np.ndarray,
    recommendations: np.ndarray,
    unknown: dict[str, np.ndarray],
    avoidable: np.ndarray,
    labels: np.ndarray,
    test_p_advance: np.ndarray,
    test_metrics: dict[str, float],
) -> ReferenceProfile:
    """The reference profile of the training split, with the test split's performance.

    Args:
        features, p_advance, recommendations, unknown, avoidable: the training rows, as
            :meth:`PartialProfile.update` takes them.
        labels: the training rows' outcomes (their positive rate).
        test_p_advance: the test split's calibrated probabilities (its CBPE estimate).
        test_metrics: the test split's realized metrics (``roc_auc``, ``positive_rate``).
    """
    spec = build_spec(features, p_advance)
    counts = spec.new_partial()
    counts.update(features, p_advance, recommendations, unknown, avoidable)
    estimate = expected_outcomes(*p_histogram(test_p_advance))
    performance = {
        "training_positive_rate": float(np.mean(labels)),
        "test_roc_auc": float(test_metrics["roc_auc"]),
        "test_positive_rate": float(test_metrics["positive_rate"]),
        "test_estimated_roc_auc": estimate["estimated_roc_auc"],
        "test_expected_positive_rate": estimate["expected_positive_rate"],
        "test_rows": len(test_p_advance),
    }
    return ReferenceProfile(spec=spec, counts=counts, performance=performance)


def load_reference(model_dir: Path | str, manifest: dict[str, Any] | None = None) -> ReferenceProfile:
    """The reference profile of a model directory, checked against the manifest's hash.

    Raises:
        ProfileError: the model has no reference profile (trained before they existed),
            or one this code cannot read.
        ModelDirError: the file does not match the manifest.
    """
    directory = Path(model_dir)
    manifest = manifest if manifest is not None else read_manifest(directory)
    expected = manifest.get(REFERENCE_PROFILE_KEY)
    path = directory / REFERENCE_PROFILE_FILE
    if not expected or not path.is_file():
        raise ProfileError(
            f"model {manifest.get('model_version', directory)} has no reference profile "
            f"({REFERENCE_PROFILE_FILE}): retrain it with this version of stepdown_ml to get drift reports"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise ModelDirError(
            f"{path}: SHA-256 {actual[:12]}... does not match the manifest's {expected[:12]}..."
        )
    return ReferenceProfile.from_dict(
        json.loads(path.read_text(encoding="utf-8")), manifest.get("model_version", "")
    )


def profile_block(
    spec: ProfileSpec,
    features: np.ndarray,
    scores: pa.Table,
    unknown: dict[str, np.ndarray] | None,
    avoidable: np.ndarray | None,
    rejects: pa.Table | None,
    rows: int,
) -> PartialProfile:
    """The partial profile of one scored block (scores layout, as batch scoring built it)."""
    partial = spec.new_partial()
    recommendation = scores.column("recommendation").combine_chunks()
    codes = to_numpy(recommendation.indices) if pa.types.is_dictionary(recommendation.type) else None
    if codes is None:  # plain text: look the names up
        codes = to_numpy(pc.index_in(recommendation, value_set=strings(RECOMMENDATIONS)))
    partial.update(
        features,
        to_numpy(scores.column("p_advance")),
        codes,
        unknown,
        None if avoidable is None else np.asarray(avoidable, dtype=np.float64),
        rejects,
        rows,
    )
    return partial


def p_histogram(p_advance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts and sums of ``p_advance`` on the fine grid (what partial profiles hold)."""
    p = np.asarray(p_advance, dtype=np.float64)
    fine = np.minimum((p * P_GRID).astype(np.int64), P_GRID - 1)
    return np.bincount(fine, minlength=P_GRID), np.bincount(fine, weights=p, minlength=P_GRID)


def _auc_from_bins(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """ROC AUC from per-bin positives and negatives (bins in rising p; ties count half).

    Works on the last axis, so many simulated draws at once.
    """
    below = np.cumsum(negatives, axis=-1) - negatives
    wins = (positives * (below + 0.5 * negatives)).sum(axis=-1)
    pairs = positives.sum(axis=-1) * negatives.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)


def expected_outcomes(counts: np.ndarray, sums: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """CBPE: the advancement rate and ROC AUC a calibrated model expects, without labels.

    If ``p_advance`` is calibrated, each row advances with probability ``p_advance``: the
    expected positives of a bin are the sum of its probabilities, and the AUC of those
    expected counts estimates the batch's AUC. Its sampling error is the standard deviation
    of the AUC over labels drawn that way (binomial per bin, :data:`SIMULATIONS` draws, a
    fixed seed so that reports are reproducible); the interval is the estimate plus or minus
    :data:`INTERVAL_ERRORS` sampling errors, NannyML's convention for CBPE.
    """
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    n = counts.sum()
    empty = {"rows": int(n), "expected_positive_rate": None, "estimated_roc_auc": None}
    if n == 0:
        return {**empty, "sampling_error": None, "interval": None}
    estimate = float(_auc_from_bins(sums, counts - sums))
    if not np.isfinite(estimate):
        return {
            **empty,
            "expected_positive_rate": float(sums.sum() / n),
            "sampling_error": None,
            "interval": None,
        }
    filled = counts > 0
    share = np.clip(sums[filled] / counts[filled], 0, 1)
    rng = np.random.default_rng(seed)
    positives = rng.binomial(counts[filled].astype(np.int64), share, (SIMULATIONS, int(filled.sum())))
    draws = _auc_from_bins(positives.astype(np.float64), counts[filled] - positives)
    error = float(np.std(draws[np.isfinite(draws)])) if np.isfinite(draws).any() else 0.0
    return {
        "rows": int(n),
        "expected_positive_rate": float(sums.sum() / n),
        "estimated_roc_auc": estimate,
        "sampling_error": error,
        "interval": [
            max(estimate - INTERVAL_ERRORS * error, 0.0),
            min(estimate + INTERVAL_ERRORS * error, 1.0),
        ],
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC from ranks (ties count half); NaN with a single outcome."""
    y = np.asarray(labels).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranked = np.asarray(scores)[order]
    ranks = np.empty(len(ranked), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    stops = np.r_[starts[1:], len(ranked)]
    ranks[order] = np.repeat((starts + stops + 1) / 2, stops - starts)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two count vectors on the same bins (empty bins floored)."""
    ref, cur = (np.maximum(_shares(np.asarray(c, dtype=np.float64)), PSI_FLOOR) for c in (reference, current))
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_binned(reference: np.ndarray, current: np.ndarray) -> float:
    """The Kolmogorov–Smirnov distance of two count vectors, at the bin edges."""
    return float(
        np.max(
            np.abs(
                np.cumsum(_shares(np.asarray(reference, float)))
                - np.cumsum(_shares(np.asarray(current, float)))
            )
        )
    )


def _bin_labels(cut: np.ndarray) -> list[str]:
    if len(cut) == 0:
        return ["all"]
    shown = [f"{c:.4g}" for c in cut]
    return [
        f"< {shown[0]}",
        *(f"{a} – {b}" for a, b in itertools.pairwise(shown)),
        f">= {shown[-1]}",
    ]


def _entry(name: str, labels: list[str], ref: np.ndarray, cur: np.ndarray, judged: bool) -> dict[str, Any]:
    value = psi(ref, cur)
    return {
        "name": name,
        "psi": round(value, 6),
        "ks": round(ks_binned(ref, cur), 6),
        "drifted": judged and value >= PSI_DRIFT,
        "moderate": judged and PSI_MODERATE <= value < PSI_DRIFT,
        "bins": labels,
        "reference": [round(float(s), 6) for s in _shares(np.asarray(ref, float))],
        "current": [round(float(s), 6) for s in _shares(np.asarray(cur, float))],
    }


def drift_report(reference: ReferenceProfile, current: PartialProfile, source: str = "") -> dict[str, Any]:
    """Compare a batch's merged profile with the reference: the report as a dict (JSON-ready)."""
    spec, ref = reference.spec, reference.counts
    judged = current.scored >= MIN_ROWS
    features: dict[str, dict[str, Any]] = {}
    offset = 0
    for name, cut, size in zip(COMPUTED_FEATURES, spec.edges, spec.numeric_sizes, strict=True):
        window = slice(offset, offset + size)
        features[name] = _entry(name, _bin_labels(cut), ref.numeric[window], current.numeric[window], judged)
        offset += size
    families: dict[str, dict[str, Any]] = {}
    offset = 0
    for family, levels in CATEGORIES.items():
        window = slice(offset, offset + len(levels))
        ref_counts, cur_counts = ref.categories[window], current.categories[window]
        families[family] = _entry(family, list(levels), ref_counts, cur_counts, judged)
        for i, level in enumerate(levels):  # each one-hot feature: this level or another
            ref_pair = np.array([ref_counts.sum() - ref_counts[i], ref_counts[i]])
            cur_pair = np.array([cur_counts.sum() - cur_counts[i], cur_counts[i]])
            features[f"{family}_{level}"] = _entry(
                f"{family}_{level}", ["other", level], ref_pair, cur_pair, judged
            )
        offset += len(levels)
    for name, entry in features.items():
        entry["group"] = _GROUP_OF[name]
    groups = []
    for group, members in FEATURE_GROUPS.items():
        # A one-hot family is judged as one categorical column; other features one by one.
        units = [families[f] for f in CATEGORIES if any(m.startswith(f + "_") for m in members)]
        units += [features[m] for m in members if not any(m.startswith(f + "_") for f in CATEGORIES)]
        worst = max(units, key=lambda u: u["psi"])
        groups.append(
            {
                "group": group,
                "psi": worst["psi"],
                "worst": worst["name"],
                "drifted": any(u["drifted"] for u in units),
                "drifted_features": sorted(m for m in members if features[m]["drifted"]),
            }
        )
    grid = np.r_[0, spec.p_cuts, P_GRID]
    p_labels = [f"{a / P_GRID:.3f} – {b / P_GRID:.3f}" for a, b in itertools.pairwise(grid)]
    p_entry = _entry(
        "p_advance",
        p_labels,
        np.add.reduceat(ref.p_counts, grid[:-1]),
        np.add.reduceat(current.p_counts, grid[:-1]),
        judged,
    )
    p_entry["mean"] = float(current.p_sums.sum() / current.scored) if current.scored else None
    p_entry["reference_mean"] = float(ref.p_sums.sum() / ref.scored) if ref.scored else None
    recommendations = _entry(
        "recommendation", list(RECOMMENDATIONS), ref.recommendations, current.recommendations, judged
    )
    quality = _data_quality(ref, current, judged)
    outcomes = expected_outcomes(current.p_counts, current.p_sums)
    performance = reference.performance
    outcomes["reference"] = performance
    estimated = outcomes["estimated_roc_auc"]
    outcomes["expected_worse"] = bool(
        judged and estimated is not None and estimated < performance["test_estimated_roc_auc"] - AUC_DROP
    )
    drifted_features = [f for f in features.values() if f["drifted"]]
    drifted_features.sort(key=lambda f: -f["psi"])
    flagged = [f["name"] for f in drifted_features]
    flagged += [e["name"] for e in (p_entry, recommendations) if e["drifted"]]
    if quality["drifted"]:
        flagged.append("known_skill_tokens")
    if outcomes["expected_worse"]:
        flagged.append("estimated_roc_auc")
    ordered = sorted(features.values(), key=lambda f: (not f["drifted"], -f["psi"]))
    return {
        "format": PROFILE_FORMAT,
        "input": source,
        "model_version": reference.model_version,
        "rows": {"read": current.rows, "scored": current.scored, "rejected": current.rejected},
        "judged": judged,
        "thresholds": {
            "psi_drift": PSI_DRIFT,
            "psi_moderate": PSI_MODERATE,
            "min_rows": MIN_ROWS,
            "known_token_share_drop": KNOWN_TOKEN_DROP,
            "estimated_auc_drop": AUC_DROP,
        },
        "drifted": bool(flagged),
        "flagged": flagged,
        "groups": sorted(groups, key=lambda g: (not g["drifted"], -g["psi"])),
        "features": ordered,
        "categories": list(families.values()),
        "p_advance": p_entry,
        "recommendations": recommendations,
        "data_quality": quality,
        "expected_outcomes": outcomes,
    }


def _data_quality(ref: PartialProfile, current: PartialProfile, judged: bool) -> dict[str, Any]:
    def unknown_share(counts: np.ndarray, at: int) -> float | None:
        total = counts[at] + counts[at + 1]
        return float(counts[at + 1] / total) if total else None

    def known_share(counts: np.ndarray) -> float | None:
        total = counts.sum()
        return float((counts[0] + counts[2]) / total) if total else None

    ref_known, cur_known = known_share(ref.tokens), known_share(current.tokens)
    drop = None if ref_known is None or cur_known is None else ref_known - cur_known
    rows = max(current.rows, 1)
    return {
        "reject_rate": current.rejected / rows,
        "problems_by_column": {k or "(row)": v for k, v in sorted(current.problems.items())},
        "problem_rate_by_column": {k or "(row)": v / rows for k, v in sorted(current.problems.items())},
        "unknown_token_share": {
            "current_skills": unknown_share(current.tokens, 0),
            "target_skills": unknown_share(current.tokens, 2),
            "reference_current_skills": unknown_share(ref.tokens, 0),
            "reference_target_skills": unknown_share(ref.tokens, 2),
        },
        "known_token_share": cur_known,
        "reference_known_token_share": ref_known,
        "known_token_share_drop": drop,
        "missing": {
            name: {
                "current": current.missing[i] / max(current.scored, 1),
                "reference": ref.missing[i] / max(ref.scored, 1),
            }
            for i, name in enumerate(OPTIONAL_COLUMNS)
        },
        "drifted": bool(judged and drop is not None and drop > KNOWN_TOKEN_DROP),
    }


def summary_line(report: dict[str, Any], path: Path | str | None = None) -> str:
    """One line for stderr: what drifted (or that nothing did)."""
    where = f"; report in {path}" if path else ""
    if not report["judged"]:
        return f"drift: not judged, {report['rows']['scored']} scored rows (fewer than {MIN_ROWS}){where}"
    if not report["drifted"]:
        return f"drift: none against the training data{where}"
    flagged = report["flagged"]
    shown = ", ".join(flagged[:6]) + (f" and {len(flagged) - 6} more" if len(flagged) > 6 else "")
    return f"drift: {len(flagged)} flagged ({shown}){where}"


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat metric names (for MLflow)."""
    metrics: dict[str, float] = {
        "rows.read": report["rows"]["read"],
        "rows.scored": report["rows"]["scored"],
        "rows.rejected": report["rows"]["rejected"],
        "drifted": float(report["drifted"]),
        "flagged": float(len(report["flagged"])),
        "psi.p_advance": report["p_advance"]["psi"],
        "psi.recommendation": report["recommendations"]["psi"],
        "reject_rate": report["data_quality"]["reject_rate"],
    }
    metrics.update({f"psi.feature.{f['name']}": f["psi"] for f in report["features"]})
    metrics.update({f"psi.group.{g['group']}": g["psi"] for g in report["groups"]})
    quality = report["data_quality"]
    if quality["known_token_share"] is not None:
        metrics["known_token_share"] = quality["known_token_share"]
    outcomes = report["expected_outcomes"]
    for key in ("expected_positive_rate", "estimated_roc_auc"):
        if outcomes[key] is not None:
            metrics[key] = outcomes[key]
    if outcomes["interval"]:
        metrics["estimated_roc_auc.low"], metrics["estimated_roc_auc.high"] = outcomes["interval"]
    return {k: float(v) for k, v in metrics.items()}


def compare_with_labels(p_advance: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """What the report would have estimated for these rows, and what the labels realize."""
    estimate = expected_outcomes(*p_histogram(p_advance))
    realized = roc_auc(labels, p_advance)
    interval = estimate["interval"]
    return {
        "estimated": estimate,
        "realized": {"roc_auc": realized, "positive_rate": float(np.mean(labels)), "rows": len(labels)},
        "roc_auc_within_interval": bool(interval and interval[0] <= realized <= interval[1]),
    }


def report_outputs(report: Path | str | None) -> tuple[Path, ...]:
    """The report's JSON path and its page beside it (``.html``); none when not asked for.

    Raises:
        ContractError: the path does not end in ``.json``.
    """
    if report is None:
        return ()
    path = Path(report)
    if path.suffix.lower() != ".json":
        raise ContractError(f"--report {report}: name a .json file (its HTML page goes beside it)")
    return path, path.with_suffix(".html")


def write_report(report: dict[str, Any], json_path: Path, html_path: Path) -> None:
    """Write the report as JSON and as a page (to the temporary paths of an atomic write)."""
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")


def write_report_files(report: dict[str, Any], path: Path | str) -> None:
    """Write the report and its page atomically (both or neither)."""
    with atomic_paths(*report_outputs(path)) as (json_tmp, html_tmp):
        write_report(report, json_tmp, html_tmp)


def render_html(report: dict[str, Any]) -> str:
    """A page a person can read: the verdict, then per-feature bars of reference vs current."""
    import html  # only a report's page needs it

    e = html.escape

    def bars(entry: dict[str, Any]) -> str:
        rows = []
        for label, ref, cur in zip(entry["bins"], entry["reference"], entry["current"], strict=True):
            rows.append(
                f"<tr><td>{e(str(label))}</td><td><div class=r style='width:{ref * 300:.1f}px'></div>"
                f"<div class=c style='width:{cur * 300:.1f}px'></div></td>"
                f"<td>{ref:.3f}</td><td>{cur:.3f}</td></tr>"
            )
        state = "drifted" if entry["drifted"] else ("moderate" if entry["moderate"] else "stable")
        return (
            f"<section class={state}><h3>{e(entry['name'])} <small>PSI {entry['psi']:.3f} · KS "
            f"{entry['ks']:.3f} · {state}</small></h3><table><tr><th>bin</th><th>reference / current</th>"
            f"<th>ref.</th><th>cur.</th></tr>{''.join(rows)}</table></section>"
        )

    outcomes = report["expected_outcomes"]
    performance = outcomes["reference"]
    interval = outcomes["interval"]
    quality = report["data_quality"]
    verdict = summary_line(report)
    parts = [
        "<!doctype html><html><head><meta charset=utf-8><title>stepdown-ml drift report</title><style>",
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}",
        "td,th{padding:2px 8px;text-align:left;font-size:13px}.r,.c{height:7px;margin:1px 0}",
        ".r{background:#8aa}.c{background:#d62}.drifted h3{color:#b00}.moderate h3{color:#a60}",
        "</style></head><body>",
        f"<h1>Drift report</h1><p><b>{e(verdict)}</b></p>",
        f"<p>Input {e(str(report['input']))}, model {e(str(report['model_version']))}: "
        f"{report['rows']['read']} rows read, {report['rows']['scored']} scored, "
        f"{report['rows']['rejected']} rejected. Bars: grey the training data, orange this batch. "
        f"A feature has drifted at PSI ≥ {PSI_DRIFT}.</p>",
        "<h2>Expected outcomes (no labels needed)</h2><table>",
        "<tr><th></th><th>this batch (estimated)</th><th>test split</th></tr>",
        f"<tr><td>advancement rate</td><td>{_num(outcomes['expected_positive_rate'])}</td>"
        f"<td>{_num(performance['test_positive_rate'])}</td></tr>",
        f"<tr><td>ROC AUC</td><td>{_num(outcomes['estimated_roc_auc'])}"
        + (f" ({interval[0]:.3f} – {interval[1]:.3f})" if interval else "")
        + f"</td><td>{_num(performance['test_roc_auc'])} (estimated "
        f"{_num(performance['test_estimated_roc_auc'])})</td></tr></table>",
        "<h2>Data quality</h2><table>",
        f"<tr><td>reject rate</td><td>{quality['reject_rate']:.4f}</td></tr>",
        f"<tr><td>skill tokens known to the vocabulary</td><td>{_num(quality['known_token_share'])}"
        f" (training {_num(quality['reference_known_token_share'])})</td></tr>",
        *(
            f"<tr><td>problems in {e(name)}</td><td>{count}</td></tr>"
            for name, count in quality["problems_by_column"].items()
        ),
        *(
            f"<tr><td>{e(name)} empty</td><td>{v['current']:.3f} (training {v['reference']:.3f})</td></tr>"
            for name, v in quality["missing"].items()
        ),
        "</table><h2>Feature groups</h2><table><tr><th>group</th><th>PSI</th><th>drifted</th></tr>",
        *(
            f"<tr><td>{e(g['group'])}</td><td>{g['psi']:.3f}</td>"
            f"<td>{'yes' if g['drifted'] else ''}</td></tr>"
            for g in report["groups"]
        ),
        "</table><h2>p_advance and recommendations</h2>",
        bars(report["p_advance"]),
        bars(report["recommendations"]),
        "<h2>Categories</h2>",
        *(bars(c) for c in sorted(report["categories"], key=lambda c: -c["psi"])),
        "<h2>Features, drifted first</h2>",
        *(bars(f) for f in report["features"]),
        "</body></html>",
    ]
    return "\n".join(parts)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
