"""Model URIs: a registered or logged MLflow model resolved to its local model directory.

This is the one place where serving touches MLflow, and it imports MLflow only when a
URI (``models:/name@alias``, ``runs:/…``) is asked for; a plain model directory never
loads it.
"""

from __future__ import annotations

from pathlib import Path

from stepdown_ml.core import config

# The name under which the model directory is logged as an artifact of the pyfunc.
MODEL_DIR_ARTIFACT = "model_dir"


def is_model_uri(location: str) -> bool:
    """Whether ``location`` names an MLflow model rather than a local directory."""
    return "://" in location or location.startswith("models:/")


def download_model_dir(uri: str) -> Path:
    """The local model directory inside a logged model, e.g. ``models:/name@champion``."""
    import mlflow
    import yaml

    mlflow.set_tracking_uri(config.tracking_uri())
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    spec = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
    relative = spec["flavors"]["python_function"]["artifacts"][MODEL_DIR_ARTIFACT]["path"]
    return local / relative
