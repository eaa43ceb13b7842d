"""Paths and defaults. Every other module takes its locations from here."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJ_ROOT = PACKAGE_DIR.parents[1]
DATA_DIR = PROJ_ROOT / "data"
GENERATED_DIR = DATA_DIR / "generated"
MODELS_DIR = PROJ_ROOT / "models"
PIPELINES_DIR = PROJ_ROOT / "pipelines"

# Training reads the vocabulary from data/; a trained model directory carries its own
# copy, so serving never depends on the checkout.
SKILLS_VOCABULARY_PATH = DATA_DIR / "skills_vocabulary.json"
DEFAULT_MODEL_DIR = Path(os.environ.get("STEPDOWN_MODEL_DIR") or MODELS_DIR / "default")
TRAIN_PARAMS_PATH = PIPELINES_DIR / "train_params.yaml"

REGISTERED_MODEL_NAME = "stepdown-advancement"
CHAMPION_ALIAS = "champion"
PSEUDONYM_KEY_ENV = "STEPDOWN_PSEUDONYM_KEY"

DEFAULT_K_ANONYMITY = 5
# Anonymizer defaults (docs/PRIVACY.md): distinct labels per group, share of records suppressed.
DEFAULT_L_DIVERSITY = 2
DEFAULT_MAX_SUPPRESSION = 0.05
DEFAULT_CHUNK_ROWS = 65_536


def tracking_uri() -> str:
    """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or the embedded SQLite store in the cwd."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
