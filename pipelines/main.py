"""`mlflow run . -e main`: generate -> train -> evaluate -> register.

Thin on purpose: every step is a library call; this file only chains them inside the
MLflow run that `mlflow run` opened.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow

from stepdown_ml.cli import print_json
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.mlops.tracking import tracked_training
from stepdown_ml.serving import Model
from stepdown_ml.training.evaluate import evaluate_model
from stepdown_ml.training.train import load_params, prepare

FRESH_ROWS = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--data", type=Path, default=Path("data/generated/transitions.csv"))
    parser.add_argument("--model-dir", type=Path, default=Path("models/latest"))
    parser.add_argument("--params", type=Path, default=Path("src/stepdown_ml/resources/train_params.yaml"))
    args = parser.parse_args()

    write_csv(generate_transitions(args.rows, args.seed), args.data)
    params = load_params(args.params)
    result, outcome = tracked_training(
        args.data, args.model_dir, params, load_vocabulary(), params_path=args.params
    )
    # A fresh sample the model never saw, from another seed: the figure users can expect.
    fresh = prepare(generate_transitions(FRESH_ROWS, args.seed + 1), source="fresh sample")
    fresh_report = evaluate_model(Model(args.model_dir), fresh)
    with mlflow.start_run(run_id=mlflow.last_active_run().info.run_id):
        mlflow.log_metrics({f"fresh.{k}": v for k, v in fresh_report["test"].items()})
    print_json(
        {
            "model_version": result.manifest["model_version"],
            "ensemble": result.manifest["ensemble"],
            "test": result.metrics["test"],
            "oracle_gap": result.metrics.get("oracle_gap"),
            "fresh_sample": fresh_report["test"],
            "registered_version": outcome.version,
            "champion": outcome.promoted,
            "gates": outcome.checks,
        }
    )
    print(outcome.summary())


if __name__ == "__main__":
    main()
