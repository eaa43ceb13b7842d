"""The notebooks run top to bottom on small data (they hold no logic of their own)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # runs each notebook in a Jupyter kernel

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("STEPDOWN_NOTEBOOK_ROWS", "4000")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    if path.stem == "02_evaluate_model":
        assert {"roc.png", "calibration.png", "importance.png"} <= set(os.listdir(tmp_path / "plots"))


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} >= {"01_explore_synthetic_data", "02_evaluate_model"}
