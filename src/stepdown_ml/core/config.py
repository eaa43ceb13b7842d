"""Paths and defaults. Every other module takes its locations from here.

What the package needs to run (the default model, the skills vocabulary, the default
training parameters) ships inside it as package data under ``stepdown_ml/resources`` and
is found beside this module's file, so an installed wheel works on its own.
Working folders (generated data, trained models) are relative to the project checkout
when running from one, and to the current directory otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


# Where this package's own files are, as imported (not through symbolic links: an install
# may link each module from elsewhere, and the resources are beside the links).
_IMPORTED_FROM = Path(__file__).absolute().parents[1]


def _resource(name: str) -> Path:
    """A file or folder under ``stepdown_ml/resources`` as a filesystem path.

    Wheels install as plain folders. An import from a zip archive has no folder there, and
    the model loader (ONNX Runtime reads files by name) could not use one: it is refused.
    (``importlib.resources`` would say the same, in 8 ms of imports at every start.)
    """
    if not _IMPORTED_FROM.is_dir():
        raise RuntimeError(f"stepdown_ml resources must be installed as files, not in {_IMPORTED_FROM}")
    return _IMPORTED_FROM / "resources" / name


def _work_dir() -> Path:
    """The project checkout when this package runs from one (src layout), else the cwd."""
    checkout = PACKAGE_DIR.parents[1]
    if (checkout / "pyproject.toml").is_file() and PACKAGE_DIR.parent.name == "src":
        return checkout
    return Path.cwd()


WORK_DIR = _work_dir()
DATA_DIR = WORK_DIR / "data"
GENERATED_DIR = DATA_DIR / "generated"
MODELS_DIR = WORK_DIR / "models"

# Shipped with the package. A trained model directory carries its own vocabulary copy,
# so serving reads the model's, never this one.
SKILLS_VOCABULARY_PATH = _resource("skills_vocabulary.json")
TRAIN_PARAMS_PATH = _resource("train_params.yaml")
PACKAGED_MODEL_DIR = _resource("default_model")
DEFAULT_MODEL_DIR = Path(os.environ.get("STEPDOWN_MODEL_DIR") or PACKAGED_MODEL_DIR)

REGISTERED_MODEL_NAME = "stepdown-advancement"
CHAMPION_ALIAS = "champion"
PSEUDONYM_KEY_ENV = "STEPDOWN_PSEUDONYM_KEY"

DEFAULT_K_ANONYMITY = 5
# Anonymizer defaults (docs/PRIVACY.md): distinct labels per group, share of records suppressed.
DEFAULT_L_DIVERSITY = 2
DEFAULT_MAX_SUPPRESSION = 0.05
DEFAULT_CHUNK_ROWS = 65_536

# `stepdown-ml serve`: the largest request body and batch (413 above either).
SERVE_MAX_BODY_BYTES = 8 << 20
SERVE_MAX_BATCH = 10_000
# ... and how long a request's body may take to arrive (408 past it).
SERVE_BODY_SECONDS = 30


def tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or the embedded SQLite store in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
