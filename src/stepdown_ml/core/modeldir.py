"""The model directory: ``model.onnx``, ``manifest.json``, ``MODEL_CARD.md`` and the
skills vocabulary the features were built with. Everything serving needs, no pickle."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from stepdown_ml.core.skills import SkillVocabulary
from stepdown_ml.core.tables import atomic_path

ONNX_FILE = "model.onnx"
SERVING_ONNX_FILE = "serving.onnx"
# Names inside the ONNX graph (see stepdown_ml.training.export).
INPUT_NAME = "features"
PROBABILITIES = "probabilities"
LABEL_OUTPUT = "label"
CONTRIBUTIONS = "contributions"
MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
VOCABULARY_FILE = "skills_vocabulary.json"
LIBRARIES = ("stepdown_ml", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "mlflow")


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the model."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_json(payload: Any, path: Path) -> None:
    """Write JSON atomically (sorted keys, so the bytes are reproducible)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_model_dir(
    model_dir: Path | str,
    onnx_bytes: bytes,
    serving_bytes: bytes,
    manifest: dict[str, Any],
    vocab: SkillVocabulary,
    model_card: str,
) -> dict[str, Any]:
    """Write every file of a model directory; returns the completed manifest.

    The model version is derived from the two ONNX files' bytes, so the same model
    always has the same version.
    """
    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    serving_digest = hashlib.sha256(serving_bytes).hexdigest()
    version = hashlib.sha256((digest + serving_digest).encode()).hexdigest()[:12]
    manifest = {
        **manifest,
        "onnx_sha256": digest,
        "serving_onnx_sha256": serving_digest,
        "model_version": version,
    }
    with atomic_path(directory / ONNX_FILE) as tmp:
        tmp.write_bytes(onnx_bytes)
    with atomic_path(directory / SERVING_ONNX_FILE) as tmp:
        tmp.write_bytes(serving_bytes)
    write_json(vocab.to_dict(), directory / VOCABULARY_FILE)
    with atomic_path(directory / MODEL_CARD_FILE) as tmp:
        tmp.write_text(model_card.replace("{model_version}", manifest["model_version"]), encoding="utf-8")
    # The manifest goes last: a directory with a manifest is complete.
    write_json(manifest, directory / MANIFEST_FILE)
    return manifest


def read_manifest(model_dir: Path | str, verify: bool = True) -> dict[str, Any]:
    """Read ``manifest.json``; with ``verify``, check the ONNX file's hash against it."""
    directory = Path(model_dir)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelDirError(f"{directory}: not a model directory (no {MANIFEST_FILE})")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if verify:
        for name, key in ((ONNX_FILE, "onnx_sha256"), (SERVING_ONNX_FILE, "serving_onnx_sha256")):
            actual = sha256_file(directory / name)
            if actual != manifest[key]:
                raise ModelDirError(
                    f"{directory / name}: SHA-256 {actual[:12]}... does not match the manifest's "
                    f"{manifest[key][:12]}..."
                )
    return manifest
