"""The ``stepdown-ml`` command line. Thin: parse arguments, call the library, report.

Exit codes: 0 done; 2 unusable input, arguments or output location (one line on stderr
says what and where; no output file is written); 3 scored, but ``score --fail-on-drift``
found drift (every output is written; the drift report says what moved); 130 / 143
interrupted by SIGINT / SIGTERM (temporary files removed, earlier outputs untouched);
1 anything unexpected, among them a scoring worker process that was killed (one line names
it; no output file is written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stepdown_ml.core import config, stops
from stepdown_ml.core.modeldir import ModelDirError
from stepdown_ml.core.schema import ContractError
from stepdown_ml.core.stops import EXIT_INTERRUPTED as EXIT_INTERRUPTED  # exit codes, for callers
from stepdown_ml.core.stops import EXIT_TERMINATED as EXIT_TERMINATED
from stepdown_ml.core.stops import Terminated

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DRIFT = 3
# What the [train] extra adds (pyproject.toml); the base install serves only.
_TRAINING_MODULES = frozenset(
    {"sklearn", "scipy", "skl2onnx", "onnx", "mlflow", "matplotlib", "yaml", "fairlearn"}
)


def _int_at_least(minimum: int, label: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {label} integer, got '{text}'")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share from 0 to 1, got '{text}'")
    return value


_non_negative_int = _int_at_least(0, "non-negative")


def cmd_generate(args: argparse.Namespace) -> int:
    from stepdown_ml.core.tables import check_paths, output_format, write_csv
    from stepdown_ml.datasets.generate import generate_raw, generate_transitions

    output_format(args.out, allowed=("csv",))
    check_paths({}, {"--out": args.out})
    raw = args.raw or args.kind == "raw"
    make = generate_raw if raw else generate_transitions
    frame = make(args.rows, args.seed)
    write_csv(frame, args.out)
    _say(f"wrote {len(frame)} {'raw' if raw else 'transition'} rows to {args.out}")
    return EXIT_OK


def cmd_anonymize(args: argparse.Namespace) -> int:
    from stepdown_ml.datasets.anonymize import anonymize_file

    report = anonymize_file(
        args.raw,
        args.out,
        k=args.k,
        report_path=args.report,
        l_diversity=args.l_diversity,
        max_suppression=args.max_suppression,
    )
    _say(
        f"anonymized {report['rows_in']} rows: {report['rows_out']} written to {args.out}, "
        f"{report['rows_suppressed']} suppressed, k={report['k_reached']}, l={report['l_reached']}"
    )
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from stepdown_ml.core.skills import load_vocabulary
    from stepdown_ml.training.train import load_params, run_training

    params = load_params(args.params)
    vocab = load_vocabulary(args.vocabulary)
    if args.no_track:
        result = run_training(args.data, args.model_dir, params, vocab, plots_dir=args.plots_dir)
        outcome = None
    else:
        from stepdown_ml.mlops.tracking import tracked_training

        result, outcome = tracked_training(
            args.data, args.model_dir, params, vocab, params_path=args.params, plots_dir=args.plots_dir
        )
    test = result.metrics["test"]
    gap = result.metrics.get("oracle_gap")
    _say(
        f"trained {result.manifest['model_version']} ({result.manifest['ensemble']['trees']} trees) "
        f"into {args.model_dir}: test AUC {test['roc_auc']:.4f}, Brier {test['brier']:.4f}"
        + (f", oracle gap AUC {gap['roc_auc']:.4f} Brier {gap['brier']:.4f}" if gap else "")
    )
    if outcome is not None:
        _say(outcome.summary())
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stepdown_ml.core.tables import read_csv_text
    from stepdown_ml.serving import load_model
    from stepdown_ml.training.evaluate import estimated_against_realized, evaluate_model
    from stepdown_ml.training.train import prepare

    model = load_model(args.model_uri or args.model_dir)
    frame = read_csv_text(args.data)
    values = prepare(frame, source=str(args.data))
    report = evaluate_model(model, values)
    report["monitoring"] = estimated_against_realized(model, frame, values)
    print_json(report)
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    from stepdown_ml.serving import load_model
    from stepdown_ml.serving.batch import score_file
    from stepdown_ml.serving.memory import tune_for_batch

    if args.report is None and (args.fail_on_drift or args.track):
        raise ContractError("--fail-on-drift and --track need --report PATH.json")
    if args.engine == "spark":
        return _score_on_spark(args)
    tune_for_batch()
    model = load_model(args.model_uri or args.model_dir)
    if len(args.input_paths) != 1:
        raise ContractError("the local engine scores one file at a time (use --engine spark for several)")
    summary = score_file(
        args.input_paths[0],
        args.out,
        args.rejects,
        model=model,
        chunk_rows=args.chunk_rows,
        workers=args.workers,
        report=args.report,
    )
    _say(summary.line())
    return _drift_outcome(args, summary.report)


def _drift_outcome(args: argparse.Namespace, report: dict | None) -> int:
    """After scoring: the drift line, the MLflow monitoring run, the exit code."""
    if report is None:
        return EXIT_OK
    from stepdown_ml.core.monitoring import summary_line

    if args.track:
        from stepdown_ml.mlops.tracking import log_monitoring

        _say(log_monitoring(report, args.report))
    if report["drifted"]:
        _say(summary_line(report, args.report))
        if args.fail_on_drift:
            return EXIT_DRIFT
    return EXIT_OK


def _score_on_spark(args: argparse.Namespace) -> int:
    import time

    from stepdown_ml.serving.spark import score_spark_to, spark_session

    started = time.perf_counter()
    if args.remote and not args.remote.startswith("sc://"):
        raise ContractError(f"--remote {args.remote}: a Spark Connect URL starts with sc://")
    reference = _reference_for(args)
    spark = spark_session(args.remote or args.master)
    paths = [str(p) for p in args.input_paths]
    result = score_spark_to(
        spark, paths, args.out, args.model_uri or args.model_dir, args.output_format, reference=reference
    )
    report = None
    if reference is not None and result.profile is not None:
        from stepdown_ml.core.monitoring import drift_report, write_report_files

        report = drift_report(reference, result.profile, ", ".join(paths))
        write_report_files(report, args.report)
    _say(
        f"{result.line()}, into {args.out}/scores and {args.out}/rejects, "
        f"{time.perf_counter() - started:.1f} s"
    )
    return _drift_outcome(args, report)


def _reference_for(args: argparse.Namespace) -> Any:
    """The model's reference profile when ``--report`` asks for one (checked before any work)."""
    if args.report is None:
        return None
    from stepdown_ml.core.monitoring import load_reference, report_outputs
    from stepdown_ml.core.tables import check_paths
    from stepdown_ml.serving.registry import local_model_dir

    check_paths({}, dict(zip(("--report", "its page"), report_outputs(args.report), strict=True)))
    return load_reference(local_model_dir(args.model_uri or args.model_dir))


def cmd_serve(args: argparse.Namespace) -> int:
    from stepdown_ml.serving.http import ServeSettings, serve
    from stepdown_ml.serving.model import Model
    from stepdown_ml.serving.registry import local_model_dir

    # Resolved and checked once here, so a bad location is one line and exit 2 before any
    # worker starts; the workers load the verified local directory.
    model_dir = local_model_dir(args.model_uri or args.model_dir)
    model = Model(model_dir)
    _say(f"serving model {model.version} from {model_dir}")
    settings = ServeSettings(
        str(model_dir),
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        body_seconds=args.body_seconds,
    )
    # uvicorn finishes the requests in flight, then re-raises the signal it caught: a stop
    # on request is a clean exit.
    with contextlib.suppress(KeyboardInterrupt, Terminated):
        serve(settings, args.host, args.port, args.workers, graceful_seconds=args.graceful_seconds)
    return EXIT_OK


def _usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="stepdown-ml",
        description="Does taking a lower position lead back up? Generate, anonymize, train, score.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write synthetic transition (or raw) records")
    gen.add_argument("--rows", type=_positive_int, default=20_000, help="number of records")
    gen.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    gen.add_argument("--out", type=Path, default=config.GENERATED_DIR / "transitions.csv", help="output CSV")
    gen.add_argument("--raw", action="store_true", help="raw records with fake identities")
    gen.add_argument(
        "--kind",
        choices=("transitions", "raw"),
        default="transitions",
        help="same as --raw when 'raw' (for MLproject's typed parameters)",
    )
    gen.set_defaults(func=cmd_generate)

    anon = sub.add_parser(
        "anonymize",
        help=f"anonymize raw records (secret key from ${config.PSEUDONYM_KEY_ENV})",
    )
    anon.add_argument("raw", type=Path, help="raw records CSV")
    anon.add_argument("--out", type=Path, required=True, help="anonymized transitions CSV")
    anon.add_argument("--k", type=_positive_int, default=config.DEFAULT_K_ANONYMITY, help="k-anonymity")
    anon.add_argument(
        "--l-diversity",
        type=_positive_int,
        choices=(1, 2),
        default=config.DEFAULT_L_DIVERSITY,
        help="distinct values of advanced_within_36m per group (1 = off)",
    )
    anon.add_argument(
        "--max-suppression",
        type=_share,
        default=config.DEFAULT_MAX_SUPPRESSION,
        help="share of records that may be suppressed (0-1)",
    )
    anon.add_argument("--report", type=Path, default=None, help="JSON report of what was done")
    anon.set_defaults(func=cmd_anonymize)

    train = sub.add_parser("train", help="train, evaluate and export a model directory (tracked in MLflow)")
    train.add_argument(
        "--data", type=Path, default=config.GENERATED_DIR / "transitions.csv", help="transitions CSV"
    )
    train.add_argument(
        "--model-dir", type=Path, default=config.MODELS_DIR / "latest", help="output directory"
    )
    train.add_argument("--params", type=Path, default=config.TRAIN_PARAMS_PATH, help="hyperparameters YAML")
    train.add_argument(
        "--vocabulary", type=Path, default=config.SKILLS_VOCABULARY_PATH, help="skills vocabulary JSON"
    )
    train.add_argument("--plots-dir", type=Path, default=None, help="where to write PNG plots")
    train.add_argument("--no-track", action="store_true", help="do not log to MLflow or register")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="print a model's metrics on labelled data as JSON")
    ev.add_argument("--data", type=Path, required=True, help="transitions CSV")
    _model_arguments(ev)
    ev.set_defaults(func=cmd_evaluate)

    score = sub.add_parser("score", help="batch-score a candidates file (CSV, .csv.gz or .parquet)")
    score.add_argument(
        "input_paths",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="candidates file (with --engine spark: files or folders)",
    )
    score.add_argument(
        "--out",
        type=Path,
        required=True,
        help="scores file (.csv or .parquet); with --engine spark, an output folder",
    )
    score.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: one streaming process; spark: the same scoring on a Spark cluster",
    )
    score.add_argument(
        "--master",
        default=None,
        help="Spark master URL: local[N], spark://host:port, yarn, k8s://… or sc://host:port "
        "(default: spark-submit's, else local[*])",
    )
    score.add_argument(
        "--remote", default=None, help="a Spark Connect server, sc://host:port (as pyspark --remote)"
    )
    score.add_argument(
        "--output-format",
        choices=("parquet", "csv"),
        default="parquet",
        help="with --engine spark: format of the score partitions",
    )
    score.add_argument(
        "--rejects", type=Path, default=None, help="rejects CSV (default: <out>.rejects.csv beside --out)"
    )
    _model_arguments(score)
    score.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=config.DEFAULT_CHUNK_ROWS,
        help="rows per block for Parquet input",
    )
    score.add_argument(
        "--workers",
        type=_positive_int,
        default=_usable_cores(),
        help="worker processes, each scoring its own part of the file (default: the usable cores)",
    )
    score.add_argument(
        "--report",
        type=Path,
        default=None,
        help="drift and data-quality report (JSON; an HTML page beside it), counted in the same pass",
    )
    score.add_argument(
        "--fail-on-drift",
        action="store_true",
        help=f"with --report: exit {EXIT_DRIFT} when something drifted (outputs are still written)",
    )
    score.add_argument(
        "--track",
        action="store_true",
        help="with --report: log its numbers to MLflow, in the monitoring run of the model version",
    )
    score.set_defaults(func=cmd_score)

    srv = sub.add_parser("serve", help="the HTTP scoring service (POST /predict, GET /health, /metadata)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    srv.add_argument("--port", type=_non_negative_int, default=8080, help="port (0: any free port)")
    srv.add_argument(
        "--workers",
        type=_positive_int,
        default=_usable_cores(),
        help="worker processes (default: the usable cores)",
    )
    _model_arguments(srv)
    srv.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=config.SERVE_MAX_BODY_BYTES,
        help="largest request body (413 above)",
    )
    srv.add_argument(
        "--max-batch",
        type=_positive_int,
        default=config.SERVE_MAX_BATCH,
        help="most records in one request (413 above)",
    )
    srv.add_argument(
        "--body-seconds",
        type=_positive_int,
        default=config.SERVE_BODY_SECONDS,
        help="how long a request's body may take to arrive (408 past it)",
    )
    srv.add_argument(
        "--graceful-seconds",
        type=_positive_int,
        default=30,
        help="on SIGTERM, how long requests in flight may take to finish",
    )
    srv.set_defaults(func=cmd_serve)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir", type=Path, default=config.DEFAULT_MODEL_DIR, help="model directory (default: packaged)"
    )
    parser.add_argument(
        "--model-uri", default=None, help="or an MLflow URI, e.g. models:/stepdown-advancement@champion"
    )


def main(argv: Sequence[str] | None = None, *, handle_stops: bool = True) -> int:
    """Run one command; returns the exit code.

    ``handle_stops=False``: the caller already holds :class:`stepdown_ml.core.stops.handled`
    (the ``stepdown-ml`` entry point, whose block began before this module loaded).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with stops.handled() if handle_stops else contextlib.nullcontext():
            stops.raise_noted()  # a stop Python dropped while the command line loaded
            return args.func(args)
    except (ContractError, ModelDirError, OSError, EOFError, zlib.error) as exc:
        # OSError: a missing or unreadable input, a read-only or full disk, a directory
        # where a file was expected, a corrupt gzip stream; EOFError: a truncated one.
        _say(f"stepdown-ml {args.command}: error: {_one_line(exc)}")
        return EXIT_BAD_INPUT
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in _TRAINING_MODULES:
            raise
        _say(
            f"stepdown-ml {args.command}: error: needs {exc.name}, which the base install leaves out: "
            "pip install 'stepdown_ml[train]'"
        )
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Terminated) as exc:
        return stops.report(f"stepdown-ml {args.command}", exc)
    except Exception as exc:
        stop = stops.behind(exc)
        if stop is not None:  # an import that turned Ctrl-C into an error of its own (onnxruntime's)
            return stops.report(f"stepdown-ml {args.command}", stop)
        processes = sys.modules.get("stepdown_ml.serving.processes")
        if processes is not None and isinstance(exc, processes.WorkerError):
            _say(f"stepdown-ml {args.command}: error: {_one_line(exc)}; no output written")
            return EXIT_FAILED
        spark = sys.modules.get("stepdown_ml.serving.spark")
        if spark is not None and isinstance(exc, spark.SparkSessionError):
            _say(f"stepdown-ml {args.command}: error: {_one_line(exc)}")
            return EXIT_BAD_INPUT
        arrow = sys.modules.get("pyarrow")
        if arrow is not None and isinstance(exc, arrow.ArrowException):
            # An input pyarrow cannot read (a corrupt Parquet file, a duplicated column, ...).
            _say(f"stepdown-ml {args.command}: error: {_one_line(exc)}")
            return EXIT_BAD_INPUT
        raise


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text or type(exc).__name__


def print_json(payload: object) -> None:
    """Print ``payload`` as indented JSON on stdout."""
    json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
