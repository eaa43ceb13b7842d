"""MLflow: log a training run, register the model, move ``@champion`` only past the gates."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema

from stepdown_ml.core import config
from stepdown_ml.core.modeldir import REFERENCE_PROFILE_FILE
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, SCORES_SCHEMA
from stepdown_ml.core.skills import SkillVocabulary
from stepdown_ml.serving.registry import MODEL_DIR_ARTIFACT, download_model_dir
from stepdown_ml.training.fairness import fairness_checks
from stepdown_ml.training.train import TrainingResult, run_training

EXPERIMENT = "stepdown-ml"
# Drift reports of scored batches: one run per model version, one step per batch.
MONITORING_EXPERIMENT = "stepdown-ml-monitoring"


def signature() -> ModelSignature:
    """Input: the candidate columns; output: the scores layout.

    Input columns are typed ``Any``: MLflow's own type enforcement would refuse values the
    contract accepts (nullable integers, numbers given as text) before the project's
    validator could explain what is wrong. Every row still goes through that validator.
    """
    inputs = Schema([ColSpec(AnyType(), c.name, required=not c.nullable) for c in CANDIDATE_COLUMNS])
    mlflow_types = {pa.string(): "string", pa.float64(): "double"}
    outputs = Schema([ColSpec(mlflow_types[field.type], field.name) for field in SCORES_SCHEMA])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(values: pd.DataFrame, rows: int = 3) -> pd.DataFrame:
    """A few candidate rows, as plain JSON-friendly values."""
    example = values[[c.name for c in CANDIDATE_COLUMNS]].head(rows).astype(object)
    return example.where(example.notna(), None).reset_index(drop=True)


@dataclass
class GateOutcome:
    """Whether the new version became champion, and why."""

    version: str
    promoted: bool
    checks: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""

    def summary(self) -> str:
        failed = [name for name, check in self.checks.items() if not check["passed"]]
        if self.promoted:
            return f"registered {config.REGISTERED_MODEL_NAME} v{self.version} as @{config.CHAMPION_ALIAS}"
        return (
            f"registered {config.REGISTERED_MODEL_NAME} v{self.version}; @{config.CHAMPION_ALIAS} "
            f"not moved: failed {', '.join(failed)}"
        )


def quality_checks(
    report: dict[str, Any], champion_auc: float | None, gates: dict[str, float], protected: list[str]
) -> dict[str, dict[str, Any]]:
    """The champion gates on a training report: quality, then fairness
    (:func:`stepdown_ml.training.fairness.fairness_checks`).

    ``champion_auc`` is the current champion's AUC on the same test rows (None: no champion);
    ``protected``: the attributes no model input may derive from.
    """
    auc = report["test"]["roc_auc"]
    checks: dict[str, dict[str, Any]] = {}
    if "oracle_gap" in report:
        gap = report["oracle_gap"]["roc_auc"]
        checks["oracle_auc_gap"] = {
            "value": gap,
            "limit": gates["max_oracle_auc_gap"],
            "passed": gap <= gates["max_oracle_auc_gap"],
        }
    logistic = report["baselines"]["logistic_regression"]["roc_auc"]
    checks["beats_logistic_baseline"] = {"value": auc, "baseline": logistic, "passed": auc > logistic}
    if champion_auc is not None:
        checks["not_worse_than_champion"] = {
            "value": auc,
            "champion": champion_auc,
            "tolerance": gates["champion_auc_tolerance"],
            "passed": auc >= champion_auc - gates["champion_auc_tolerance"],
        }
    checks.update(fairness_checks(report["fairness"], gates["max_group_calibration_gap"], protected))
    return checks


def _champion_auc(client: MlflowClient, test: pd.DataFrame) -> float | None:
    from mlflow.exceptions import MlflowException

    from stepdown_ml.serving import Model
    from stepdown_ml.training.evaluate import evaluate_model

    try:
        client.get_model_version_by_alias(config.REGISTERED_MODEL_NAME, config.CHAMPION_ALIAS)
    except MlflowException:
        return None
    uri = f"models:/{config.REGISTERED_MODEL_NAME}@{config.CHAMPION_ALIAS}"
    return evaluate_model(Model(download_model_dir(uri)), test)["test"]["roc_auc"]


def _flat(prefix: str, payload: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(payload, dict):
        for key, value in payload.items():
            out.update(_flat(f"{prefix}.{key}" if prefix else str(key), value))
    elif (
        isinstance(payload, (int, float, np.floating))
        and not isinstance(payload, bool)
        and np.isfinite(payload)
    ):
        out[prefix] = float(payload)
    return out


def log_model(
    model_dir: Path | str, example: pd.DataFrame, registered_name: str | None = None
) -> mlflow.models.model.ModelInfo:
    """Log a model directory as the project's pyfunc (code, not a pickle) in the active run."""
    return mlflow.pyfunc.log_model(
        name="model", registered_model_name=registered_name, **_pyfunc_arguments(model_dir, example)
    )


def save_model(model_dir: Path | str, path: Path | str, example: pd.DataFrame) -> None:
    """Write the same pyfunc to a local folder (``mlflow models serve -m PATH`` serves it)."""
    mlflow.pyfunc.save_model(str(path), **_pyfunc_arguments(model_dir, example))


def _pyfunc_arguments(model_dir: Path | str, example: pd.DataFrame) -> dict[str, Any]:
    return {
        "python_model": str(Path(__file__).with_name("pyfunc.py")),
        "artifacts": {MODEL_DIR_ARTIFACT: str(model_dir)},
        "code_paths": [str(Path(__file__).parents[1])],  # the whole stepdown_ml package
        "signature": signature(),
        "input_example": example,
        "pip_requirements": _requirements(),
    }


def tracked_training(
    data_path: Path | str,
    model_dir: Path | str,
    params: dict[str, Any],
    vocab: SkillVocabulary,
    params_path: Path | str | None = None,
    plots_dir: Path | str | None = None,
) -> tuple[TrainingResult, GateOutcome]:
    """:func:`stepdown_ml.training.train.run_training` inside an MLflow run, then register and gate."""
    mlflow.set_tracking_uri(config.tracking_uri())
    # Under `mlflow run` the run exists; MLFLOW_EXPERIMENT_NAME/ID choose another experiment.
    if not {"MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"} & set(os.environ):
        mlflow.set_experiment(EXPERIMENT)
    model_dir = Path(model_dir)
    with mlflow.start_run() as run:
        plots = Path(plots_dir) if plots_dir else model_dir / "plots"
        result = run_training(data_path, model_dir, params, vocab, plots_dir=plots)
        manifest = result.manifest
        mlflow.log_params(_flat("", {"model": params["model"], "split": params["split"]}))
        # MLflow metric names allow letters, digits and _ - . / : and spaces ("65+" is a group).
        flat = _flat("", result.metrics)
        mlflow.log_metrics({re.sub(r"[^\w\-./: ]", "_", k.replace("]", "")): v for k, v in flat.items()})
        mlflow.set_tags(
            {
                "data_sha256": manifest["data_sha256"],
                "model_version": manifest["model_version"],
                **{f"version.{k}": v for k, v in manifest["library_versions"].items()},
            }
        )
        for png in result.plots:
            mlflow.log_artifact(str(png), artifact_path="plots")
        mlflow.log_artifact(str(model_dir / "MODEL_CARD.md"))
        mlflow.log_artifact(str(model_dir / "manifest.json"))
        mlflow.log_artifact(str(model_dir / REFERENCE_PROFILE_FILE))
        if params_path:
            mlflow.log_artifact(str(params_path))
        client = MlflowClient()
        champion_auc = _champion_auc(client, result.splits.test)
        info = log_model(model_dir, input_example(result.splits.test), config.REGISTERED_MODEL_NAME)
        version = str(info.registered_model_version)
        protected = params["fairness"]["protected"]
        checks = quality_checks(result.metrics, champion_auc, params["gates"], protected)
        promoted = all(check["passed"] for check in checks.values())
        if promoted:
            client.set_registered_model_alias(config.REGISTERED_MODEL_NAME, config.CHAMPION_ALIAS, version)
        mlflow.set_tag("champion", str(promoted).lower())
        mlflow.log_dict({"promoted": promoted, "checks": checks}, "gates.json")
    return result, GateOutcome(version=version, promoted=promoted, checks=checks, run_id=run.info.run_id)


def log_monitoring(report: dict[str, Any], report_path: Path | str | None = None) -> str:
    """Log a drift report's numbers as the next step of its model version's monitoring run.

    The run (experiment :data:`MONITORING_EXPERIMENT`, tagged with the model version) is
    created by the first report and resumed by the next ones, so every metric of successive
    batches is one MLflow chart over steps. When the registry holds that model version, the
    run is tagged with it and the metrics are linked to its logged model. Returns a line
    saying where it went.
    """
    from stepdown_ml.core.monitoring import report_metrics

    mlflow.set_tracking_uri(config.tracking_uri())
    experiment = mlflow.set_experiment(MONITORING_EXPERIMENT)
    client = MlflowClient()
    version = str(report["model_version"])
    found = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.model_version = '{version}' and tags.kind = 'monitoring'",
        max_results=1,
    )
    registered = _registered_version(client, version)
    tags = {"kind": "monitoring", "model_version": version}
    if registered is not None:
        tags |= {
            "registered_model": config.REGISTERED_MODEL_NAME,
            "registered_version": str(registered.version),
            "training_run_id": str(registered.run_id),
        }
    step = int(found[0].data.metrics.get("batch", -1)) + 1 if found else 0
    metrics = {re.sub(r"[^\w\-./: ]", "_", k): v for k, v in report_metrics(report).items()}
    metrics["batch"] = float(step)
    run_id = found[0].info.run_id if found else None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else f"monitoring {version}") as run:
        mlflow.set_tags(tags)
        model_id = getattr(registered, "model_id", None) if registered is not None else None
        mlflow.log_metrics(metrics, step=step, model_id=model_id)
        mlflow.log_dict(report, f"reports/batch-{step:05d}.json")
        if report_path is not None:
            mlflow.set_tag(f"report.{step:05d}", str(report_path))
    linked = f", model {config.REGISTERED_MODEL_NAME} v{registered.version}" if registered is not None else ""
    return (
        f"logged the drift report as batch {step} of MLflow run {run.info.run_id} (model {version}{linked})"
    )


def _registered_version(client: MlflowClient, version: str) -> Any:
    """The registered model version whose training run built model ``version`` (or None)."""
    from mlflow.exceptions import MlflowException

    try:
        candidates = client.search_model_versions(f"name='{config.REGISTERED_MODEL_NAME}'")
        for candidate in candidates:
            if (
                candidate.run_id
                and client.get_run(candidate.run_id).data.tags.get("model_version") == version
            ):
                return candidate
    except MlflowException:
        return None
    return None


def _requirements() -> list[str]:
    from stepdown_ml.core.modeldir import library_versions

    versions = library_versions()
    pins = [f"{name}=={versions[name]}" for name in ("onnxruntime", "numpy", "pandas", "mlflow")]
    return [*pins, "pyarrow", "scipy", "pyyaml", "protobuf<7"]
