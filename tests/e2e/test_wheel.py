"""End to end: the built wheel, installed into fresh virtualenvs, works on its own.

Offline: the wheel is built without build isolation, and each virtualenv sees the
dependencies already installed in this environment through a folder of links (never this
checkout, never the editable install), so pip resolves the wheel's declared requirements
against them without an index. The serving-only virtualenv hides the [train] packages
(scikit-learn, SciPy, skl2onnx, ONNX, MLflow, matplotlib) to prove the base install serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from stepdown_ml import predict
from stepdown_ml.core import config
from tests.conftest import ROOT, candidate_record

pytestmark = pytest.mark.slow
TRAINING_DISTRIBUTIONS = {
    "scikit-learn",
    "scipy",
    "skl2onnx",
    "onnx",
    "mlflow",
    "mlflow-skinny",
    "mlflow-tracing",
    "matplotlib",
    "fairlearn",
}


def _top_level(dist: metadata.Distribution) -> set[str]:
    return {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}


def _dependency_links(folder: Path, hidden: set[str]) -> Path:
    """A folder of links to this environment's installed packages, except ``hidden`` ones."""
    site = Path(sysconfig.get_paths()["purelib"])
    excluded: set[str] = set()
    for dist in metadata.distributions(path=[str(site)]):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in hidden or name == "stepdown-ml":
            excluded |= _top_level(dist)
    folder.mkdir()
    for entry in site.iterdir():
        if entry.name in excluded or entry.suffix == ".pth" or entry.name.startswith("__editable__"):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def _venv(root: Path, name: str, wheel: Path, extras: str, hidden: set[str]) -> Path:
    venv = root / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    links = _dependency_links(root / f"{name}-deps", hidden)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Appended after the virtualenv's own site-packages: the installed wheel comes first.
    (Path(purelib) / "dependencies.pth").write_text(f"{links}\n")
    completed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", f"{wheel}{extras}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (built,) = dist.glob("stepdown_ml-*.whl")
    return built


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("work")


def _run(venv: Path, work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command of ``venv`` in ``work``, with nothing of this checkout on the paths."""
    env = {
        k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "STEPDOWN_MODEL_DIR", "VIRTUAL_ENV"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


PREDICT = """
import json, sys, stepdown_ml
from stepdown_ml import predict
from stepdown_ml.core import config
from stepdown_ml.core.modeldir import read_manifest
read_manifest(config.PACKAGED_MODEL_DIR, verify=True)
print(json.dumps({"file": stepdown_ml.__file__, "model": str(config.PACKAGED_MODEL_DIR),
                  "answer": predict(json.loads(sys.argv[1]))}))
"""


def test_the_wheel_carries_the_model_vocabulary_and_params(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "model.onnx",
        "serving.onnx",
        "manifest.json",
        "MODEL_CARD.md",
        "skills_vocabulary.json",
        "reference_profile.json",
    ):
        assert f"stepdown_ml/resources/default_model/{name}" in names
    assert "stepdown_ml/resources/skills_vocabulary.json" in names
    assert "stepdown_ml/resources/train_params.yaml" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "pipelines/")) for n in names)


def test_serving_install_predicts_scores_and_serves_without_the_training_packages(wheel, work, tmp_path):
    venv = _venv(tmp_path, "serving", wheel, "", TRAINING_DISTRIBUTIONS)
    record = candidate_record(candidate_id="wheel-1")
    done = _run(venv, work, "python", "-c", PREDICT, json.dumps(record))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["file"].startswith(str(venv)) and answer["model"].startswith(str(venv))
    assert answer["answer"] == predict(record)

    hidden = _run(venv, work, "python", "-c", "import sklearn")
    assert hidden.returncode != 0 and "No module named 'sklearn'" in hidden.stderr

    candidates = pd.DataFrame(
        [candidate_record(candidate_id=f"w{i}", fit_score=str(1 + i % 5)) for i in range(50)]
    )
    candidates.to_csv(work / "candidates.csv", index=False)
    scored = _run(venv, work, "stepdown-ml", "score", "candidates.csv", "--out", "scores.csv")
    assert scored.returncode == 0, scored.stderr
    scores = pd.read_csv(work / "scores.csv")
    assert len(scores) == 50 and set(scores["model_version"]) == {predict(record)["model_version"]}

    refused = _run(venv, work, "stepdown-ml", "train", "--no-track", "--data", "candidates.csv")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "stepdown-ml train: error: needs sklearn, which the base install leaves out: "
        "pip install 'stepdown_ml[train]'"
    ]


def test_training_install_generates_trains_and_scores(wheel, work, tmp_path):
    venv = _venv(tmp_path, "training", wheel, "[train]", set())
    # Without --out, generated data goes under the current directory (no checkout here).
    generated = _run(venv, work, "stepdown-ml", "generate", "--rows", "3000", "--seed", "5")
    assert generated.returncode == 0, generated.stderr
    assert (work / "data" / "generated" / "transitions.csv").is_file()
    trained = _run(venv, work, "stepdown-ml", "train", "--no-track", "--model-dir", "m")
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((work / "m" / "manifest.json").read_text())
    assert manifest["params"] == json.loads(json.dumps(_packaged_params()))
    data = "data/generated/transitions.csv"
    scored = _run(venv, work, "stepdown-ml", "score", data, "--out", "s.parquet", "--model-dir", "m")
    assert scored.returncode == 0, scored.stderr
    assert len(pd.read_parquet(work / "s.parquet")) == 3000


def _packaged_params():
    import yaml

    return yaml.safe_load(config.TRAIN_PARAMS_PATH.read_text())
