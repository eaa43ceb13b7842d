"""The ``stepdown-ml`` command line. Thin: parse arguments, call the library, report.

Exit codes: 0 done; 2 unusable input or arguments (one line on stderr says what and
where; no output file is written); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from stepdown_ml import config
from stepdown_ml.contract import ContractError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got '{text}'")
    return value


def cmd_generate(args: argparse.Namespace) -> int:
    from stepdown_ml.generate import generate_raw, generate_transitions
    from stepdown_ml.tables import write_csv

    make = generate_raw if args.raw else generate_transitions
    frame = make(args.rows, args.seed)
    write_csv(frame, args.out)
    _say(f"wrote {len(frame)} {'raw' if args.raw else 'transition'} rows to {args.out}")
    return EXIT_OK


def cmd_anonymize(args: argparse.Namespace) -> int:
    from stepdown_ml.anonymize import anonymize_file

    report = anonymize_file(args.raw, args.out, k=args.k, report_path=args.report)
    _say(
        f"anonymized {report['rows_in']} rows: {report['rows_out']} written to {args.out}, "
        f"{report['rows_suppressed']} suppressed, k={report['k_reached']}"
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
    gen.add_argument(
        "--out", type=Path, default=config.GENERATED_DIR / "transitions.csv", help="output CSV"
    )
    gen.add_argument("--raw", action="store_true", help="raw records with fake identities")
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

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stepdown-ml``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ContractError, FileNotFoundError, ValueError) as exc:
        _say(f"stepdown-ml {args.command}: error: {exc}")
        return EXIT_BAD_INPUT


def print_json(payload: object) -> None:
    """Print ``payload`` as indented JSON on stdout."""
    json.dump(payload, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
