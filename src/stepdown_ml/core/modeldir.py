"""The model directory: ``model.onnx``, ``manifest.json``, ``MODEL_CARD.md`` and the
skills vocabulary the features were built with. Everything serving needs, no pickle.

A model directory is replaced as a whole: :func:`write_model_dir` writes a sibling
``.<name>.tmp-<random>`` directory, checks it against its manifest, then swaps it in with
two renames (the old one goes to ``.<name>.old-<random>`` and is deleted). A failure
leaves the old directory as it was; what a killed run leaves behind is cleaned up (or the
old directory put back) by the next write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from stepdown_ml.core import stops
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
# The training data's profile, which drift reports compare a batch with (core.monitoring);
# models written before it existed have none, and still score.
REFERENCE_PROFILE_FILE = "reference_profile.json"
REFERENCE_PROFILE_KEY = "reference_profile_sha256"
# Every file a model directory may hold (plots: where ``stepdown-ml train`` puts them by default).
MODEL_DIR_ENTRIES = frozenset(
    {
        ONNX_FILE,
        SERVING_ONNX_FILE,
        MANIFEST_FILE,
        MODEL_CARD_FILE,
        VOCABULARY_FILE,
        REFERENCE_PROFILE_FILE,
        "plots",
    }
)
LIBRARIES = ("stepdown_ml", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas", "mlflow")


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or does not match its manifest."""


class ProfileError(ModelDirError):
    """A model without a (usable) reference profile: it scores, but cannot report drift."""


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the model."""
    from importlib import metadata  # 12 ms to import: only training needs it

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
    before_swap: Callable[[Path], None] | None = None,
    reference_profile: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write every file of a model directory, replacing an old one as a whole; returns the
    completed manifest.

    The files go to a sibling temporary directory that must pass :func:`read_manifest`
    before two renames swap it in; on any failure it is removed and ``model_dir`` is left
    as it was. The model version is derived from the two ONNX files' bytes, so the same
    model always has the same version.

    Args:
        before_swap: called with the complete temporary directory before the swap (to add
            files such as plots, or to load it); an exception from it stops the swap.
        reference_profile: the training data's profile (JSON-ready), written to
            :data:`REFERENCE_PROFILE_FILE` and covered by the manifest's hashes.

    Raises:
        ModelDirError: ``model_dir`` is a file, or a directory that is not a model directory.
        OSError: writing or renaming failed (``model_dir`` is left as it was).
    """
    target = check_model_dir_target(model_dir)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    serving_digest = hashlib.sha256(serving_bytes).hexdigest()
    version = hashlib.sha256((digest + serving_digest).encode()).hexdigest()[:12]
    # A hash of a profile that is not written here (a manifest copied from elsewhere) must go.
    manifest = {k: v for k, v in manifest.items() if k != REFERENCE_PROFILE_KEY}
    manifest = {
        **manifest,
        "onnx_sha256": digest,
        "serving_onnx_sha256": serving_digest,
        "model_version": version,
    }
    with _staged(target) as directory:
        with atomic_path(directory / ONNX_FILE) as tmp:
            tmp.write_bytes(onnx_bytes)
        with atomic_path(directory / SERVING_ONNX_FILE) as tmp:
            tmp.write_bytes(serving_bytes)
        write_json(vocab.to_dict(), directory / VOCABULARY_FILE)
        if reference_profile is not None:
            write_json(reference_profile, directory / REFERENCE_PROFILE_FILE)
            manifest[REFERENCE_PROFILE_KEY] = sha256_file(directory / REFERENCE_PROFILE_FILE)
        with atomic_path(directory / MODEL_CARD_FILE) as tmp:
            tmp.write_text(model_card.replace("{model_version}", manifest["model_version"]), encoding="utf-8")
        # The manifest goes last: a directory with a manifest is complete.
        write_json(manifest, directory / MANIFEST_FILE)
        read_manifest(directory)
        if before_swap is not None:
            before_swap(directory)
    return manifest


def check_model_dir_target(model_dir: Path | str) -> Path:
    """Refuse a model directory path that :func:`write_model_dir` must not replace.

    It may be missing, an empty directory, or a model directory: nothing in it but the
    files of one (complete or not) and a ``plots`` folder of PNG files. Anything else may
    be someone's data, so it is never replaced. Returns the path to replace, links
    resolved (a link to a model directory keeps pointing at the new one).

    Raises:
        ModelDirError: the path is a file, or a directory holding anything else.
    """
    target = Path(os.path.realpath(model_dir))
    if not target.exists():
        return target
    if not target.is_dir():
        raise ModelDirError(f"{model_dir}: is a file, not a model directory; choose a directory path")
    for entry in sorted(os.listdir(target)):
        if not _model_dir_entry(target, entry):
            raise ModelDirError(
                f"{model_dir}: exists and is not a model directory ({entry!r} is not a model file); "
                "refusing to replace it: choose a new or empty directory"
            )
    return target


def _model_dir_entry(directory: Path, entry: str) -> bool:
    path = directory / entry
    if entry == "plots":
        return path.is_dir() and all(name.endswith(".png") for name in os.listdir(path))
    if entry in MODEL_DIR_ENTRIES:
        return path.is_file()
    # What an interrupted atomic_path left (".model.onnx.<random>.part", ".model.onnx.lock").
    return entry.endswith((".part", ".lock")) and any(
        entry.startswith(f".{name}.") for name in MODEL_DIR_ENTRIES
    )


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{secrets.token_hex(6)}"


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """Yield a new sibling directory of ``target``; on success swap it in for ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    staging, handle = _locked_staging(target)
    try:
        yield staging
        _fsync_dir(staging)
        stops.raise_noted()  # a stop whose exception Python dropped: the old directory stays
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(handle)


# How many new staging folders a write tries when another run's clean-up takes them.
_STAGING_TRIES = 5


def _locked_staging(target: Path) -> tuple[Path, int]:
    """A new staging folder beside ``target`` and an open handle holding its lock.

    The lock, held until this run ends (or dies), tells another run's clean-up
    (:func:`_recover`) the folder is in use. Between the folder's creation and its lock,
    such a clean-up may take it (it then holds the lock, or has removed the folder): this
    run then makes another one, rather than fail or write into a folder that is gone.
    """
    import fcntl  # POSIX only, like the renames of _swap; serving never needs it

    for _ in range(_STAGING_TRIES):
        staging = _sibling(target, "tmp")
        os.mkdir(staging, 0o777)  # mode as the umask allows, like any directory the user makes
        handle = os.open(staging, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(staging).st_ino == os.fstat(handle).st_ino:
                return staging, handle
        except (BlockingIOError, FileNotFoundError):  # taken by a clean-up meanwhile
            pass
        except BaseException:
            os.close(handle)
            raise
        os.close(handle)
    raise ModelDirError(f"{target}: could not hold a staging folder beside it; another write kept taking it")


def _swap(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return
    backup = _sibling(target, "old")
    os.rename(target, backup)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(backup, target)
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(backup, ignore_errors=True)


def _recover(target: Path) -> None:
    """Undo what a killed write left beside ``target``.

    A run killed between its two renames left no ``target`` but its backup: that backup
    (the newest one that matches its manifest, if any does) goes back into place. Other
    backups and temporary directories of runs that are no longer alive are removed.
    """
    import fcntl

    backups = sorted(
        target.parent.glob(glob_escape(f".{target.name}.old-") + "*"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not target.exists() and backups:
        restore = next((b for b in backups if _verifies(b)), backups[0])
        os.rename(restore, target)
        backups.remove(restore)
    for backup in backups:
        shutil.rmtree(backup, ignore_errors=True)
    for staging in target.parent.glob(glob_escape(f".{target.name}.tmp-") + "*"):
        try:
            handle = os.open(staging, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # another run is writing it
        else:
            shutil.rmtree(staging, ignore_errors=True)
        finally:
            os.close(handle)


def _verifies(model_dir: Path) -> bool:
    try:
        read_manifest(model_dir)
    except (ModelDirError, OSError, ValueError, KeyError):
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    """Make renames inside ``directory`` durable (where the file system supports it)."""
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def read_manifest(model_dir: Path | str, verify: bool = True) -> dict[str, Any]:
    """Read ``manifest.json``; with ``verify``, check the hashes of the files it covers
    (the ONNX files, and the reference profile when it has one)."""
    directory = Path(model_dir)
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ModelDirError(f"{directory}: not a model directory (no {MANIFEST_FILE})")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if verify:
        covered = [(ONNX_FILE, "onnx_sha256"), (SERVING_ONNX_FILE, "serving_onnx_sha256")]
        if REFERENCE_PROFILE_KEY in manifest:
            covered.append((REFERENCE_PROFILE_FILE, REFERENCE_PROFILE_KEY))
        for name, key in covered:
            if key == REFERENCE_PROFILE_KEY and not (directory / name).is_file():
                raise ModelDirError(f"{directory}: {name} is missing (the manifest lists it)")
            actual = sha256_file(directory / name)
            if actual != manifest[key]:
                raise ModelDirError(
                    f"{directory / name}: SHA-256 {actual[:12]}... does not match the manifest's "
                    f"{manifest[key][:12]}..."
                )
    return manifest
