"""The repository itself: self-contained documents, valid recorded results."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import ROOT


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.stdout.splitlines()


def test_no_file_links_outside_the_repository():
    """No tracked file points into the shared folder beside the checkout."""
    outside = []
    for name in tracked_files():
        path = ROOT / name
        if path.suffix in {".onnx", ".png"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if re.search(r"\.\./shared", text):
            outside.append(name)
    assert outside == []


def test_every_document_cited_by_name_exists():
    """DOMAIN.md, CONTRACT.md and the other documents that code or docs cite are in docs/."""
    cited = set()
    for name in tracked_files():
        if name.endswith((".py", ".md", ".ipynb", ".toml", ".yaml")):
            text = (ROOT / name).read_text(encoding="utf-8", errors="ignore")
            cited.update(re.findall(r"\b([A-Z][A-Z_]+\.md)\b", text))
    assert cited >= {"DOMAIN.md", "CONTRACT.md"}
    names = {name.rsplit("/", 1)[-1] for name in tracked_files()}
    missing = [doc for doc in cited if doc not in names]
    assert missing == []


def test_markdown_links_resolve():
    """Every relative link in the repository's Markdown points at a file of the repository."""
    broken = []
    for name in tracked_files():
        if not name.endswith(".md"):
            continue
        path = ROOT / name
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.exists() or ROOT.resolve() not in resolved.parents:
                broken.append(f"{name}: {target}")
    assert broken == []


def test_benchmark_results_are_one_json_object():
    results = json.loads((ROOT / "docs" / "benchmark_results.json").read_text(encoding="utf-8"))
    assert {"generate_train", "predict", "score", "spark"} <= set(results)
