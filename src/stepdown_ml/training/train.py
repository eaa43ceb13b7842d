"""Training: split, fit the gradient-boosted classifier, choose the decision threshold."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from stepdown_ml.core import config
from stepdown_ml.core.features import FEATURE_GROUPS, FEATURE_NAMES, MONOTONIC, FeatureSpace
from stepdown_ml.core.recommend import TAKE_STEP_DOWN
from stepdown_ml.core.schema import (
    CANDIDATE_COLUMNS,
    LABEL,
    TRANSITION_COLUMNS,
    TRUE_PROBABILITY,
    ContractError,
)
from stepdown_ml.core.skills import SkillVocabulary
from stepdown_ml.core.validation import validate_frame

# The least a training file must hold, counted in distinct rows (copies of a row count once).
# 200 rows leave 30 each to validation and test at the default 70/15/15 split; 20 of each
# outcome leave at least 3 of each in both held-out parts, which the threshold, the
# calibration and the test AUC need.
MIN_TRAINING_ROWS = 200
MIN_CLASS_ROWS = 20
# Rows equal in these columns are copies for the model: the features' inputs and the label.
DUPLICATE_KEY = tuple(c.name for c in CANDIDATE_COLUMNS if c.name != "candidate_id") + (LABEL,)


def load_params(path: Path | str = config.TRAIN_PARAMS_PATH) -> dict[str, Any]:
    """Read the training parameters YAML (model, split, evaluation, gates)."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


class CandidateFeatures(TransformerMixin, BaseEstimator):
    """scikit-learn face of :class:`FeatureSpace` (stateless: nothing is learned)."""

    def __init__(self, vocab: SkillVocabulary) -> None:
        self.vocab = vocab

    def fit(self, frame: pd.DataFrame, y: Any = None) -> CandidateFeatures:
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return FeatureSpace(self.vocab).transform(frame)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array(FEATURE_NAMES, dtype=object)


def build_pipeline(vocab: SkillVocabulary, model_params: dict[str, Any]) -> Pipeline:
    """Features → HistGradientBoostingClassifier, monotone where the domain gives a direction.

    ``categorical_features`` stays off: categories arrive one-hot encoded, because
    skl2onnx does not convert native categorical splits correctly.
    """
    monotonic = [MONOTONIC.get(name, 0) for name in FEATURE_NAMES]
    classifier = HistGradientBoostingClassifier(
        categorical_features=None, monotonic_cst=monotonic, **model_params
    )
    return Pipeline([("features", CandidateFeatures(vocab)), ("classifier", classifier)])


@dataclass
class Splits:
    """Train / validation / test parts of a validated transition frame."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def prepare(frame: pd.DataFrame, source: str = "training data") -> pd.DataFrame:
    """Validate transition rows; refuse the data set if any row breaks the contract."""
    validation = validate_frame(frame, TRANSITION_COLUMNS, source=source)
    if len(validation.problems):
        first = validation.problems.iloc[0]
        raise ContractError(
            f"{source}: {len(validation.problems)} problem(s) in {int(validation.bad.sum())} row(s); "
            f"first: row {first['row']}, column {first['column']}: {first['reason']}"
        )
    if len(frame) == 0:
        raise ContractError(f"{source}: no rows")
    values = validation.values
    labels = values[LABEL].astype(int)
    if labels.nunique() < 2:
        raise ContractError(f"{source}: {LABEL} has a single value; both outcomes are needed")
    values[LABEL] = labels
    if TRUE_PROBABILITY in values:
        check_true_probability(values[TRUE_PROBABILITY], source)
    return values


def check_true_probability(column: pd.Series, source: str) -> None:
    """Refuse a ``true_probability`` column unless every row holds a number in [0, 1]."""
    truth = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~((truth >= 0) & (truth <= 1)))
    if len(bad):
        raise ContractError(
            f"{source}: row {bad[0] + 1}, column {TRUE_PROBABILITY}: {str(column.iloc[bad[0]])!r} is not a "
            f"number in [0, 1] ({len(bad)} row(s) in all); fix the column or remove it"
        )


def duplicate_groups(values: pd.DataFrame) -> np.ndarray:
    """Group number of every row, counted in order of first appearance: copies share one.

    Copies are rows equal in :data:`DUPLICATE_KEY` (every feature input and the label).
    """
    return values.groupby(list(DUPLICATE_KEY), sort=False, dropna=False).ngroup().to_numpy()


def check_learnable(values: pd.DataFrame, groups: np.ndarray, source: str) -> None:
    """Refuse data too small to split and learn from (see :data:`MIN_TRAINING_ROWS`)."""
    first = np.unique(groups, return_index=True)[1]
    copies = "" if len(first) == len(values) else f" ({len(values)} rows with copies)"
    if len(first) < MIN_TRAINING_ROWS:
        raise ContractError(
            f"{source}: {len(first)} distinct valid rows{copies}; training needs at least "
            f"{MIN_TRAINING_ROWS}: add rows"
        )
    labels = values[LABEL].to_numpy()[first]
    for outcome in (1, 0):
        count = int((labels == outcome).sum())
        if count < MIN_CLASS_ROWS:
            raise ContractError(
                f"{source}: {count} distinct rows with {LABEL} = {outcome}; training needs at least "
                f"{MIN_CLASS_ROWS} of each outcome: add rows with {LABEL} = {outcome}"
            )


def split(values: pd.DataFrame, params: dict[str, Any], groups: np.ndarray | None = None) -> Splits:
    """Stratified split into train, validation and test that keeps copies together.

    The split is drawn over the first row of each group of copies (:func:`duplicate_groups`)
    and every copy follows it, so no copy of a training row is measured as unseen. Without
    copies it is the plain stratified split of the rows.
    """
    if groups is None:
        groups = duplicate_groups(values)
    labels = values[LABEL].to_numpy()
    first = np.unique(groups, return_index=True)[1]
    held_out = params["validation"] + params["test"]
    train, rest = train_test_split(
        first, test_size=held_out, stratify=labels[first], random_state=params["random_state"]
    )
    validation, test = train_test_split(
        rest,
        test_size=params["test"] / held_out,
        stratify=labels[rest],
        random_state=params["random_state"],
    )
    train, validation, test = (values.iloc[_members(part, groups)] for part in (train, validation, test))
    return Splits(train=train, validation=validation, test=test)


def _members(firsts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Positions of every row in the groups of ``firsts``, group after group in their order."""
    rank = np.full(int(groups.max()) + 1, len(firsts))
    rank[groups[firsts]] = np.arange(len(firsts))
    of_row = rank[groups]
    rows = np.flatnonzero(of_row < len(firsts))
    return rows[np.argsort(of_row[rows], kind="stable")]


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    vocab: SkillVocabulary,
    model_params: dict[str, Any],
    sample_weight: np.ndarray | None = None,
) -> Pipeline:
    """Fit the pipeline on features already computed for the training part.

    The feature step learns nothing, so only the classifier is fitted: the training rows
    are featurized once, for the fit and for the baselines alike.
    """
    pipeline = build_pipeline(vocab, model_params)
    pipeline.named_steps["classifier"].fit(x_train, y_train, sample_weight=sample_weight)
    return pipeline


def collapse_copies(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions of one row per group of copies in ``frame``, and each group's size as its
    weight (None when there are no copies).

    The classifier is fitted on these: copies of a row would otherwise fall on both sides
    of its early-stopping split and let it overfit.
    """
    _, first, counts = np.unique(duplicate_groups(frame), return_index=True, return_counts=True)
    if len(first) == len(frame):
        return np.arange(len(frame)), None
    return first, counts.astype(np.float64)


IDENTITY_CALIBRATION = {"slope": 1.0, "intercept": 0.0}


def platt_calibration(y_true: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Platt scaling on validation data: p' = logistic(slope * logit(p) + intercept).

    A map of the log-odds, so serving applies it to bias + contributions, and the
    reasons (shares of the log-odds) keep their order.
    """
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(logit, y_true)
    return {"slope": float(fitted.coef_[0, 0]), "intercept": float(fitted.intercept_[0])}


def calibrate(p: np.ndarray, calibration: dict[str, float]) -> np.ndarray:
    """Apply a calibration from :func:`platt_calibration` (identity: unchanged)."""
    if calibration == IDENTITY_CALIBRATION:
        return p
    clipped = np.clip(p, 1e-12, 1 - 1e-12)
    logit = np.log(clipped / (1 - clipped))
    return 1.0 / (1.0 + np.exp(-(calibration["slope"] * logit + calibration["intercept"])))


def uncalibrate(p: float, calibration: dict[str, float]) -> float:
    """The raw probability that :func:`calibrate` maps to ``p``."""
    if calibration == IDENTITY_CALIBRATION:
        return p
    logit = np.log(p / (1 - p))
    return float(1.0 / (1.0 + np.exp(-(logit - calibration["intercept"]) / calibration["slope"])))


def choose_threshold(y_true: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximizes F1 of ``take_step_down`` on validation data."""
    precision, recall, thresholds = precision_recall_curve(y_true, p)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    best = int(np.argmax(f1[:-1]))
    # float32 so that ONNX's float32 probabilities compare exactly as scikit-learn's.
    return float(np.float32(thresholds[best]))


@dataclass
class TrainingResult:
    """What a training run produced and measured."""

    model_dir: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    pipeline: Pipeline
    splits: Splits
    plots: list[Path]


# The model card's account of the reasons, by how the export computes them.
REASONS_LINES = {
    "additive steps": (
        "Every tree reads one feature (an additive model: a sum of one curve per feature), so "
        "each reason group's contribution is its exact Shapley value (TreeSHAP): the group's "
        "curves at the candidate's values less their average over the training data. Serving "
        "evaluates them as {steps} steps, with no tree walked."
    ),
    "refined trees": (
        "Trees combine features, so the contributions are exact TreeSHAP values averaged "
        "within leaves refined {refine_depth} levels deeper on the training rows "
        "({leaves} served leaves): close to the exact values, not equal to them."
    ),
}

MODEL_CARD = """# Model card: stepdown-advancement {model_version}

**What it predicts.** `p_advance`: the probability that taking the target role (a step down
or a lateral move) leads back to at least the former level within 36 months.

**Model.** scikit-learn HistGradientBoostingClassifier ({trees} trees, {leaves} leaves, depth
<= {max_depth}), monotone in skill coverage (up), levels down (down), fit, performance,
promotion path and internal move (up); exported to ONNX ({onnx_path}: probabilities and
per-group contributions) and served by onnxruntime from serving.onnx (the contributions alone).

**Reasons.** {reasons_line}

**Data.** {rows} rows (SHA-256 of the data file `{data_sha}`), split
{train_rows}/{validation_rows}/{test_rows} (train/validation/test, stratified).

**Test metrics.** ROC AUC {auc:.4f}, Brier {brier:.4f}, ECE {ece:.4f}.
{oracle_line}
Baselines on the same split: logistic regression AUC {logit_auc:.4f}; motive-only rate
AUC {motive_auc:.4f}.

**Decision threshold.** {threshold:.4f} (maximizes F1 of `take_step_down` on validation data).

**Limits.** Trained on synthetic (or anonymized) records: it carries the assumptions of the
synthetic generator (`stepdown_ml.datasets.generate`), not observed outcomes. It ranks options
and explains them; it does not decide for a person. Do not use it to screen people out of jobs.

{fairness_section}
**Files.** {files}: the complete export, the graph that serving runs, the manifest with
every file's SHA-256, the skills vocabulary the features were built with, and the training
data's profile that drift reports compare scored batches with.
"""


def fairness_section(audit: dict[str, Any]) -> str:
    """The model card's Fairness section, for a reader who is not a data scientist."""
    protected = ", ".join(f"`{a}`" for a in audit["protected"]) or "none"
    read = [f for a in audit["protected"] for f in audit["attribute_inputs"][a]]
    lines = [
        "## Fairness",
        "",
        f"**Protected attributes kept out of the model:** {protected}. They are checked and kept "
        "with each record for this audit, but the model does not read them"
        + (
            f" (yet this model reads {', '.join(read)}: it must not be promoted)."
            if read
            else ": changing only one of them changes nothing in a prediction, and no reason mentions them."
        ),
        "",
        f"**What was measured, on which data.** On the {audit['rows']} held-out test records (never "
        "used to train or tune the model), group by group: how often the model recommends "
        "`take_step_down` (selection rate), how often it does so for people who did advance (true "
        "positive rate) and who did not (false positive rate), the mean predicted `p_advance` against "
        "the share who actually advanced (calibration within the group), and how well it ranks people "
        "within the group (AUC). The impact ratio of a recommendation is a group's rate over the "
        "highest group's rate; below 0.8 it is flagged, as the four-fifths rule does. Groups with "
        f"fewer than {audit['min_group_rows']} records, or fewer than {audit['min_group_outcomes']} "
        "of either outcome, are too small to judge and are marked so.",
        "",
    ]
    for name, result in audit["attributes"].items():
        lines += [
            f"**By {name}.**",
            "",
            "| group | records | take_step_down rate | impact ratio | true pos. rate | false pos. rate "
            "| mean p_advance | observed rate | AUC |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]

        def cell(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        for group, row in result["groups"].items():
            impact = row.get("impact_ratio", {}).get(TAKE_STEP_DOWN)
            lines.append(
                f"| {group} | {row['rows']}{'' if row['enough_rows'] else ' (too few to judge)'} "
                f"| {cell(row['selection_rate'])} | {cell(impact)} | {cell(row['true_positive_rate'])} "
                f"| {cell(row['false_positive_rate'])} | {cell(row['mean_p_advance'])} "
                f"| {cell(row['observed_rate'])} | {cell(row['roc_auc'])} |"
            )
        gap = result.get("max_calibration_gap")
        flags = result["four_fifths_flags"]
        lines += [
            "",
            (
                f"Largest calibration gap: {gap:.3f}; beyond sampling noise, the worst group is "
                f"{result['worst_calibrated_group']} "
                f"({result['max_calibration_gap_beyond_noise']:+.3f}; above 0 means it is off by more "
                "than noise explains). "
                if gap is not None
                else "No group is large enough to judge calibration. "
            )
            + (
                "Impact ratios below 0.8: " + "; ".join(flags) + "."
                if flags
                else "No impact ratio is below 0.8."
            ),
            "",
        ]
    lines += [
        "**What it means.** Equal calibration means that a given `p_advance` means the same chance in "
        "every group. Different selection rates can still follow from different situations (levels, "
        "skills, motives) in the data; they are reported so that a person can look at them, and a "
        "flagged impact ratio calls for that look before the model is used. The data is synthetic "
        "unless stated otherwise, so these figures describe the generator's population.",
        "",
        "**What the model must not be used for.** Deciding on hiring, promotion or dismissal without a "
        "human decision; screening people out of jobs; ranking people against each other (it ranks one "
        "person's options); or any use where age or region would be a reason for a decision.",
        "",
    ]
    return "\n".join(lines)


def run_training(
    data_path: Path | str,
    model_dir: Path | str,
    params: dict[str, Any],
    vocab: SkillVocabulary,
    plots_dir: Path | str | None = None,
) -> TrainingResult:
    """Validate, split, fit, evaluate, export to ONNX, check parity, write the model dir.

    The model directory is replaced as a whole, and only by one that loads for serving
    (:func:`stepdown_ml.core.modeldir.write_model_dir`); plots asked for in its ``plots``
    folder are written with it. Copies of a row stay in one part of the split (a warning
    on stderr says how many there are).

    Raises:
        ContractError: the data breaks the contract, or is too small to learn from.
        ModelDirError: ``model_dir`` is a file or a directory that is not a model directory.
        ExportParityError: ONNX and scikit-learn disagree beyond tolerance.
    """
    from stepdown_ml.core.modeldir import (
        MANIFEST_FILE,
        ONNX_FILE,
        REFERENCE_PROFILE_FILE,
        SERVING_ONNX_FILE,
        VOCABULARY_FILE,
        check_model_dir_target,
        library_versions,
        sha256_file,
        write_model_dir,
    )
    from stepdown_ml.core.monitoring import build_reference
    from stepdown_ml.core.recommend import recommend, recommend_codes
    from stepdown_ml.core.tables import read_csv_text
    from stepdown_ml.training import evaluate, export, fairness

    data_path, model_dir = Path(data_path), Path(model_dir)
    check_model_dir_target(model_dir)
    plots_inside = _plots_inside(model_dir, plots_dir)
    values = prepare(read_csv_text(data_path), source=str(data_path))
    groups = duplicate_groups(values)
    check_learnable(values, groups, str(data_path))
    copies = len(values) - (int(groups.max()) + 1)
    if copies:
        print(
            f"warning: {data_path}: {copies} row(s) repeat another row's features and label; "
            "each row and its copies are kept in one part of the train/validation/test split",
            file=sys.stderr,
        )
    splits = split(values, params["split"], groups)
    space = FeatureSpace(vocab)
    unknown_tokens: dict[str, np.ndarray] = {}  # for the reference profile
    x_train = space.transform(splits.train, unknown_tokens)
    x_val, x_test = (space.transform(s) for s in (splits.validation, splits.test))
    y_train, y_val, y_test = (
        s[LABEL].to_numpy(dtype=int) for s in (splits.train, splits.validation, splits.test)
    )
    # Protected attributes: held at a constant while the classifier learns, so no tree reads them.
    held_out = fairness.held_out_features(params["fairness"]["protected"])
    x_fit = fairness.hold_out(x_train, held_out)
    distinct, weight = collapse_copies(splits.train)
    pipeline = fit(x_fit[distinct], y_train[distinct], vocab, params["model"], weight)
    classifier: HistGradientBoostingClassifier = pipeline.named_steps["classifier"]
    size = export.ensemble_size(classifier)
    if size["leaves"] == size["trees"]:
        raise ContractError(
            f"{data_path}: the model found nothing to learn from {len(distinct)} training rows "
            "(every tree is a single leaf): add rows whose features differ"
        )
    bins = params["evaluation"]["calibration_bins"]
    raw_val = classifier.predict_proba(x_val)[:, 1]
    calibration = IDENTITY_CALIBRATION
    raw_ece = evaluate.expected_calibration_error(y_val, raw_val, bins)
    if raw_ece > params["evaluation"]["max_ece"]:
        calibration = platt_calibration(y_val, raw_val)
    p_val = calibrate(raw_val, calibration)
    p_test = calibrate(classifier.predict_proba(x_test)[:, 1], calibration)
    threshold = choose_threshold(y_val, p_val)
    test_metrics = evaluate.metrics(y_test, p_test, bins)
    p_train = calibrate(classifier.predict_proba(x_fit)[:, 1], calibration)
    reference = build_reference(
        x_train,
        p_train,
        recommend_codes(x_train, p_train, threshold),
        unknown_tokens,
        splits.train["necessity_avoidable"].to_numpy(dtype=np.float64, na_value=np.nan),
        y_train,
        p_test,
        test_metrics,
    )
    report: dict[str, Any] = {
        "test": test_metrics,
        "validation": evaluate.metrics(y_val, p_val, bins),
        "per_motive": evaluate.per_motive(splits.test, p_test),
        "calibrated": calibration != IDENTITY_CALIBRATION,
        "validation_ece_before_calibration": raw_ece,
    }
    p_logit = evaluate.logistic_baseline(x_fit, y_train, fairness.hold_out(x_test, held_out))
    p_motive = evaluate.motive_rate_baseline(splits.train, splits.test)
    report["baselines"] = {
        "logistic_regression": evaluate.metrics(y_test, p_logit, bins),
        "motive_rate": evaluate.metrics(y_test, p_motive, bins),
    }
    oracle = evaluate.oracle(splits.test, bins)
    if oracle is not None:
        report["oracle"] = oracle
        report["oracle_gap"] = {
            "roc_auc": oracle["roc_auc"] - test_metrics["roc_auc"],
            "brier": test_metrics["brier"] - oracle["brier"],
        }
    importance = evaluate.group_permutation_importance(
        lambda x: classifier.predict_proba(x)[:, 1],
        x_test,
        y_test,
        params["evaluation"]["permutation_repeats"],
    )
    report["group_importance"] = importance
    report["fairness"] = {
        "data": "test split",
        "rows": len(y_test),
        "protected": list(params["fairness"]["protected"]),
        "attribute_inputs": fairness.attribute_inputs([p[0].nodes for p in classifier._predictors]),
        "min_group_rows": params["fairness"]["min_group_rows"],
        "min_group_outcomes": params["fairness"]["min_group_outcomes"],
        "attributes": fairness.audit(
            splits.test,
            y_test,
            p_test,
            recommend(x_test, p_test, threshold),
            params["fairness"]["audit"],
            params["fairness"]["min_group_rows"],
            params["fairness"]["min_group_outcomes"],
        ),
    }
    plots: list[Path] = []

    def draw_plots(out_dir: Path) -> list[Path]:
        return [
            *evaluate.save_plots(
                y_test,
                {"model": p_test, "logistic": p_logit, "motive rate": p_motive}
                | ({"oracle": splits.test["true_probability"].astype(float).to_numpy()} if oracle else {}),
                importance,
                out_dir,
                bins,
            ),
            fairness.save_plot(report["fairness"], out_dir),
        ]

    if plots_dir is not None and plots_inside is None:
        plots = draw_plots(Path(plots_dir))

    def finish_model_dir(staging: Path) -> None:
        """In the new model directory, before it replaces the old one."""
        from stepdown_ml.serving import Model

        if plots_dir is not None and plots_inside is not None:
            drawn = draw_plots(staging / plots_inside)
            plots.extend(Path(plots_dir) / path.name for path in drawn)
        # Only a directory that serving loads replaces the old one.
        Model(staging)

    onnx_model = export.to_onnx(
        classifier,
        reference=x_fit,
        refine_depth=params["attribution"]["refine_depth"],
        min_rows=params["attribution"]["min_rows"],
        min_weight=params["attribution"]["min_weight"],
    )
    # Parity is about the export: compare raw probabilities at the raw-scale threshold.
    parity = export.check_parity(onnx_model, classifier, x_test, uncalibrate(threshold, calibration))
    report["onnx_parity"] = parity
    bias = export.contribution_bias(onnx_model)
    contributions = export.contributions_form(onnx_model)
    manifest: dict[str, Any] = {
        "model_name": config.REGISTERED_MODEL_NAME,
        "features": list(FEATURE_NAMES),
        "feature_groups": {g: list(m) for g, m in FEATURE_GROUPS.items()},
        "opsets": {"": export.ONNX_OPSET, "ai.onnx.ml": export.ONNX_ML_OPSET},
        "input": export.INPUT_NAME,
        "threshold": threshold,
        "contribution_bias": bias,
        "calibration": calibration,
        "metrics": report,
        "ensemble": size,
        "contributions": contributions,
        "data_sha256": sha256_file(data_path),
        "data_rows": len(values),
        "params": params,
        "library_versions": library_versions(),
    }
    card = MODEL_CARD.format(
        model_version="{model_version}",
        onnx_path=ONNX_FILE,
        rows=len(values),
        files=", ".join(
            f"`{name}`"
            for name in (ONNX_FILE, SERVING_ONNX_FILE, MANIFEST_FILE, VOCABULARY_FILE, REFERENCE_PROFILE_FILE)
        ),
        data_sha=manifest["data_sha256"][:16],
        train_rows=len(splits.train),
        validation_rows=len(splits.validation),
        test_rows=len(splits.test),
        auc=test_metrics["roc_auc"],
        brier=test_metrics["brier"],
        ece=test_metrics["ece"],
        oracle_line=(
            f"Oracle (the generator's true probabilities) on the same rows: AUC {oracle['roc_auc']:.4f}, "
            f"Brier {oracle['brier']:.4f}; gap AUC {report['oracle_gap']['roc_auc']:.4f}, "
            f"Brier {report['oracle_gap']['brier']:.4f}.\n"
            if oracle
            else ""
        ),
        logit_auc=report["baselines"]["logistic_regression"]["roc_auc"],
        motive_auc=report["baselines"]["motive_rate"]["roc_auc"],
        threshold=threshold,
        reasons_line=REASONS_LINES[contributions["form"]].format(**contributions, **params["attribution"]),
        fairness_section=fairness_section(report["fairness"]),
        **size,
    )
    manifest = write_model_dir(
        model_dir,
        onnx_model.SerializeToString(),
        export.serving_graph(onnx_model).SerializeToString(),
        manifest,
        vocab,
        card,
        before_swap=finish_model_dir,
        reference_profile=reference.to_dict(),
    )
    return TrainingResult(
        model_dir=model_dir, manifest=manifest, metrics=report, pipeline=pipeline, splits=splits, plots=plots
    )


def _plots_inside(model_dir: Path, plots_dir: Path | str | None) -> str | None:
    """``"plots"`` when the plots go to the model directory's ``plots`` folder, else None.

    Raises:
        ContractError: ``plots_dir`` is elsewhere inside the model directory (the directory
            is replaced as a whole, and holds nothing but model files and ``plots``).
    """
    if plots_dir is None:
        return None
    plots, model = (Path(os.path.realpath(p)) for p in (plots_dir, model_dir))
    if not plots.is_relative_to(model):
        return None
    if plots != model / "plots":
        raise ContractError(
            f"{plots_dir}: plots inside the model directory go to {Path(model_dir) / 'plots'}; "
            "choose that or a directory outside it"
        )
    return "plots"
