"""The ``stepdown-ml`` command line. Thin: parse arguments, call the library, report.

Exit codes: 0 done; 2 unusable input, arguments or output location (one line on stderr
says what and where; no output file is written); 130 / 143 interrupted by SIGINT / SIGTERM
(temporary files removed, earlier outputs untouched); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from stepdown_ml.core import config
from stepdown_ml.core.modeldir import ModelDirError
from stepdown_ml.core.schema import ContractError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


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

    report = anonymize_file(args.raw, args.out, k=args.k, report_path=args.report)
    _say(
        f"anonymized {report['rows_in']} rows: {report['rows_out']} written to {args.out}, "
        f"{report['rows_suppressed']} suppressed, k={report['k_reached']}"
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
    from stepdown_ml.training.evaluate import evaluate_model
    from stepdown_ml.training.train import prepare

    values = prepare(read_csv_text(args.data), source=str(args.data))
    print_json(evaluate_model(load_model(args.model_uri or args.model_dir), values))
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    from stepdown_ml.serving import load_model
    from stepdown_ml.serving.batch import score_file, use_lean_memory_pool

    if args.engine == "spark":
        return _score_on_spark(args)
    use_lean_memory_pool()
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
    )
    _say(summary.line())
    return EXIT_OK


def _score_on_spark(args: argparse.Namespace) -> int:
    import time

    from stepdown_ml.serving.spark import score_spark, spark_session, write_outputs

    started = time.perf_counter()
    if args.remote and not args.remote.startswith("sc://"):
        raise ContractError(f"--remote {args.remote}: a Spark Connect URL starts with sc://")
    spark = spark_session(args.remote or args.master)
    result = score_spark(spark, [str(p) for p in args.input_paths], args.model_uri or args.model_dir)
    write_outputs(result.scores, result.rejects, args.out, fmt=args.output_format)
    result.unpersist()
    _say(
        f"{result.line()}, into {args.out}/scores and {args.out}/rejects, "
        f"{time.perf_counter() - started:.1f} s"
    )
    return EXIT_OK


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
    ev.add_argument("--model-dir", type=Path, default=config.DEFAULT_MODEL_DIR, help="model directory")
    ev.add_argument(
        "--model-uri", default=None, help="or an MLflow URI, e.g. models:/stepdown-advancement@champion"
    )
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
    score.add_argument("--model-dir", type=Path, default=config.DEFAULT_MODEL_DIR, help="model directory")
    score.add_argument("--model-uri", default=None, help="or an MLflow model URI")
    score.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=config.DEFAULT_CHUNK_ROWS,
        help="rows per block for Parquet input",
    )
    score.add_argument("--workers", type=_positive_int, default=2, help="blocks scored in parallel")
    score.set_defaults(func=cmd_score)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporary outputs are cleaned up as for Ctrl-C."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stepdown-ml``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Signal handlers can only be set from the main thread (a service may call main elsewhere).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return args.func(args)
    except (ContractError, ModelDirError, OSError, EOFError, zlib.error) as exc:
        # OSError: a missing or unreadable input, a read-only or full disk, a directory
        # where a file was expected, a corrupt gzip stream; EOFError: a truncated one.
        _say(f"stepdown-ml {args.command}: error: {_one_line(exc)}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _say(f"stepdown-ml {args.command}: interrupted; no output written")
        return EXIT_INTERRUPTED
    except Terminated:
        _say(f"stepdown-ml {args.command}: terminated (SIGTERM); no output written")
        return EXIT_TERMINATED
    except Exception as exc:
        arrow = sys.modules.get("pyarrow")
        if arrow is not None and isinstance(exc, arrow.ArrowException):
            # An input pyarrow cannot read (a corrupt Parquet file, a duplicated column, ...).
            _say(f"stepdown-ml {args.command}: error: {_one_line(exc)}")
            return EXIT_BAD_INPUT
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


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
