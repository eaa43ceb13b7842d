"""Reasons against exact TreeSHAP: agreement per reason group against cost, per method.

One classifier with interactions, trained as ``make default-model`` trained it before the
default became additive (``benchmarks.common.INTERACTING_MODEL``; 60k generated rows, seed 2026);
20,000 independent generated rows (seed 77). Exact path-dependent TreeSHAP comes from the
``shap`` package (a dev dependency), summed per reason group. Methods: the path attribution
(Saabas, the served method before issue 13) and exact TreeSHAP averaged in leaves refined
0 to 4 levels deeper (``pipelines/train_params.yaml``, ``attribution.refine_depth``).

Cost: onnxruntime on the serving graph (one thread), per row in a 20,000-row batch (best of
5) and per single-row call (median of 3,000), against exact TreeSHAP per row.

With ``--serving DEPTH[:MIN_WEIGHT] ...``: the same classifier served with the path
attribution and with each TreeSHAP variant, each as a model directory: ``predict()`` p50 over 5,000
records (wall and thread CPU time) and ``stepdown-ml score`` on 500,000 rows (CSV out on
tmpfs; wall and CPU seconds), the sides alternated, best of 5.

Usage: python -m benchmarks.bench_reasons [--out results.json] [--serving DEPTH[:MIN_WEIGHT] ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from benchmarks.common import INTERACTING_MODEL
from stepdown_ml.core import config
from stepdown_ml.core.features import FeatureSpace
from stepdown_ml.core.modeldir import CONTRIBUTIONS, INPUT_NAME
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.training import attribution, export
from stepdown_ml.training.fairness import held_out_features, hold_out
from stepdown_ml.training.train import load_params, run_training

ROWS = 20_000
# (refine_depth, min_weight) of each TreeSHAP variant.
VARIANTS = ((0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0), (2, 0.003), (3, 0.003), (3, 0.01), (4, 0.01))


def _export(classifier: Any, rows: Any, depth: int, weight: float, params: dict) -> Any:
    """The ONNX export of ``classifier`` with one attribution setting."""
    from stepdown_ml.training import export

    return export.to_onnx(
        classifier,
        reference=rows,
        refine_depth=depth,
        min_rows=params["attribution"]["min_rows"],
        min_weight=weight,
    )


def _name(depth: int, min_weight: float) -> str:
    return f"treeshap_depth_{depth}" + (f"_min_weight_{min_weight:g}" if min_weight else "")


def agreement(served: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    """Top group, top-three overlap (shared groups / 3), same top-three set, sign of the top."""
    top_served = np.argsort(-np.abs(served), axis=1, kind="stable")[:, :3]
    top_exact = np.argsort(-np.abs(exact), axis=1, kind="stable")[:, :3]
    shared = [len(set(a) & set(b)) for a, b in zip(top_served, top_exact, strict=True)]
    rows = np.arange(len(served))
    top = top_served[:, 0]
    return {
        "top1": float((top == top_exact[:, 0]).mean()),
        "top3_overlap": float(np.mean(shared) / 3),
        "top3_same_set": float(np.mean(np.array(shared) == 3)),
        "top_sign": float((np.sign(served[rows, top]) == np.sign(exact[rows, top])).mean()),
    }


def onnx_cost(graph: bytes, x: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    (out,) = session.run([CONTRIBUTIONS], {INPUT_NAME: x})
    batch = []
    for _ in range(5):
        start = time.perf_counter()
        session.run([CONTRIBUTIONS], {INPUT_NAME: x})
        batch.append(time.perf_counter() - start)
    single = []
    for i in range(3_000):
        row = x[i : i + 1]
        start = time.perf_counter()
        session.run([CONTRIBUTIONS], {INPUT_NAME: row})
        single.append(time.perf_counter() - start)
    return out, {
        "batch_us_per_row": min(batch) / len(x) * 1e6,
        "single_row_p50_us": float(np.median(single) * 1e6),
        "graph_bytes": len(graph),
    }


def _trained() -> tuple:
    work = config.GENERATED_DIR / "bench"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "train_60k.csv"
    write_csv(generate_transitions(60_000, 2026), data)
    params = load_params()
    params["model"].update(INTERACTING_MODEL)  # refinement is for trees that combine features
    vocab = load_vocabulary()
    result = run_training(data, work / "reasons_model", params, vocab)
    space = FeatureSpace(vocab)
    protected = held_out_features(params["fairness"]["protected"])
    return params, vocab, result, space, hold_out(space.transform(result.splits.train), protected)


ROUNDS = 5


def _timed(call, records: list, clock) -> list[float]:
    out = []
    for record in records:
        start = clock()
        call(record)
        out.append(clock() - start)
    return out


def _child_seconds(args: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system, all threads) seconds of a command: CPU time moves less
    than wall time when other processes share the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def serving(variants: list[tuple[int, float]], out: Path | None) -> dict:
    """predict() p50 and batch scoring: the same classifier, path attribution vs refined."""
    from benchmarks.common import candidates_csv, cli
    from stepdown_ml.core.modeldir import write_model_dir
    from stepdown_ml.serving import Model, predict

    params, vocab, result, _, reference = _trained()
    classifier = result.pipeline.named_steps["classifier"]
    card = (result.model_dir / "MODEL_CARD.md").read_text()
    dirs = {}
    served = [("saabas", None, 0, 0.0)] + [(_name(d, w), reference, d, w) for d, w in variants]
    for name, rows, depth, weight in served:
        full = _export(classifier, rows, depth, weight, params)
        dirs[name] = Path("/dev/shm") / f"stepdown_bench_{name}"
        manifest = {
            k: v for k, v in result.manifest.items() if k not in ("onnx_sha256", "serving_onnx_sha256")
        }
        graphs = full.SerializeToString(), export.serving_graph(full).SerializeToString()
        write_model_dir(dirs[name], *graphs, manifest, vocab, card)
    frame = generate_transitions(5_000, 5)
    labels = ["transition_year", "advanced_within_36m", "months_to_regain", "true_probability"]
    records = frame.drop(columns=labels)
    dicts = records.astype(object).where(records.notna(), None).to_dict("records")
    models = {name: Model(d) for name, d in dirs.items()}
    csv = candidates_csv(500_000)
    measured: dict[str, dict[str, list[float]]] = {name: {} for name in dirs}
    for _ in range(ROUNDS):
        for name, model in models.items():
            for record in dicts[:200]:
                predict(record, model=model)
            for clock, key in (
                (time.perf_counter, "predict_p50_us"),
                (time.thread_time, "predict_p50_cpu_us"),
            ):
                measured[name].setdefault(key, []).append(
                    float(np.median(_timed(lambda r, m=model: predict(r, model=m), dicts, clock))) * 1e6
                )
            args = [cli(), "score", str(csv), "--out", "/dev/shm/stepdown_bench_scores.csv"]
            wall, cpu = _child_seconds([*args, "--model-dir", str(dirs[name])])
            measured[name].setdefault("score_500k_rows_s", []).append(wall)
            measured[name].setdefault("score_500k_rows_cpu_s", []).append(cpu)
    report: dict = {name: {k: min(v) for k, v in m.items()} for name, m in measured.items()}
    report["all_rounds"] = measured
    for depth, weight in variants:
        saabas, refined = report["saabas"], report[_name(depth, weight)]
        for key in ("predict_p50_us", "predict_p50_cpu_us", "score_500k_rows_s", "score_500k_rows_cpu_s"):
            refined[f"ratio_{key}"] = refined[key] / saabas[key]
    print(json.dumps(report, indent=2))
    if out:
        out.write_text(json.dumps(report, indent=2))
    return report


def main(out: Path | None) -> dict:
    import shap

    params, _, result, space, reference = _trained()
    classifier = result.pipeline.named_steps["classifier"]
    x = space.transform(generate_transitions(ROWS, 77))

    explainer = shap.TreeExplainer(classifier, feature_perturbation="tree_path_dependent")
    start = time.perf_counter()
    exact = attribution.by_group(np.asarray(explainer.shap_values(x)))
    shap_us = (time.perf_counter() - start) / ROWS * 1e6

    methods: dict[str, dict] = {}
    variants = [("saabas", None, 0, 0.0)] + [(_name(d, w), reference, d, w) for d, w in VARIANTS]
    for name, rows, depth, weight in variants:
        start = time.perf_counter()
        full = _export(classifier, rows, depth, weight, params)
        build_s = time.perf_counter() - start
        served, cost = onnx_cost(export.serving_graph(full).SerializeToString(), x)
        methods[name] = {**agreement(served, exact), **cost, "export_s": build_s}
        print(name, json.dumps(methods[name]))
    report = {
        "rows": ROWS,
        "ensemble": result.manifest["ensemble"],
        "exact_treeshap_shap_package_us_per_row": shap_us,
        "methods": methods,
    }
    print(json.dumps(report, indent=2))
    if out:
        out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serving", nargs="+", default=None, metavar="DEPTH[:MIN_WEIGHT]")
    args = parser.parse_args()
    if args.serving is None:
        main(args.out)
    else:
        pairs = [(spec + ":0").split(":")[:2] for spec in args.serving]
        serving([(int(d), float(w)) for d, w in pairs], args.out)
