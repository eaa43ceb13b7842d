"""Model URIs: a registered or logged MLflow model resolved to its local model directory.

This is the one place where serving touches MLflow, and it imports MLflow only when a
URI (``models:/name@alias``, ``runs:/…``) is asked for; a plain model directory never
loads it. Every caller (``predict()``, the CLI, ``stepdown-ml serve``, Spark) resolves
URIs here, so a missing store, model or alias reads the same everywhere: one
:class:`ModelURIError` line naming the URI and the tracking store that was asked. Reading
never creates anything: a SQLite or file store that does not exist is refused before
MLflow would create an empty one.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from stepdown_ml.core import config
from stepdown_ml.core.modeldir import ModelDirError

# The name under which the model directory is logged as an artifact of the pyfunc.
MODEL_DIR_ARTIFACT = "model_dir"
# Tracking / registry URIs without a scheme that are not paths.
_NAMED_STORES = frozenset({"databricks", "databricks-uc", "uc"})


class ModelURIError(ModelDirError):
    """A model URI that cannot be resolved: no store, no such model, version or alias."""


def is_model_uri(location: str) -> bool:
    """Whether ``location`` names an MLflow model rather than a local directory."""
    return "://" in location or location.startswith(("models:/", "runs:/"))


def local_model_dir(location: str | Path) -> Path:
    """A model directory as given, or the one inside the MLflow model a URI names."""
    text = str(location)
    return download_model_dir(text) if is_model_uri(text) else Path(text)


def store_path(tracking_uri: str) -> Path | None:
    """The local file behind a SQLite or file-store tracking URI (None for servers)."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(unquote(tracking_uri[len("sqlite:///") :].split("?", 1)[0]))
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and tracking_uri and tracking_uri not in _NAMED_STORES:
        return Path(tracking_uri)  # MLflow reads a bare path as a file store
    return None


def download_model_dir(uri: str) -> Path:
    """The local model directory inside a logged model, e.g. ``models:/name@champion``.

    Raises:
        ModelURIError: MLflow is not installed, the tracking store does not exist, or the
            store has no such model, version, alias or run; or the logged model is not a
            stepdown_ml model.
    """
    tracking = config.tracking_uri()
    where = f"{uri} (tracking URI {tracking})"
    local_store = store_path(tracking)
    if local_store is not None and not local_store.exists():
        raise ModelURIError(
            f"{where}: no MLflow store at {local_store.resolve()}; "
            "set MLFLOW_TRACKING_URI to the store that holds the model"
        )
    try:
        import mlflow
        import yaml
        from mlflow.exceptions import MlflowException
    except ImportError as exc:
        raise ModelURIError(
            f"{where}: model URIs need MLflow ({exc.name} is not installed): "
            "pip install 'stepdown_ml[mlflow]'"
        ) from exc
    registry = os.environ.get("MLFLOW_REGISTRY_URI")
    registry_store = store_path(registry) if registry else None
    if registry_store is not None and not registry_store.exists():
        raise ModelURIError(f"{where}: no MLflow registry store at {registry_store.resolve()}")

    mlflow.set_tracking_uri(tracking)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as exc:
        raise ModelURIError(f"{where}: {_first_line(exc.message)}") from exc
    except OSError as exc:
        raise ModelURIError(f"{where}: {_first_line(str(exc))}") from exc
    try:
        spec = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
        relative = spec["flavors"]["python_function"]["artifacts"][MODEL_DIR_ARTIFACT]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise ModelURIError(f"{where}: not a stepdown_ml model (no '{MODEL_DIR_ARTIFACT}' artifact)") from exc
    return local / relative


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else "unknown MLflow error"
