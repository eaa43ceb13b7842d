"""``python -m stepdown_ml`` and the ``stepdown-ml`` command: the command line.

:func:`run` imports the command line itself, so that a Ctrl-C while its modules load and
it reads its arguments (the first few tenths of a second) is one line and exit 130, as it
is later on, not a traceback.
"""

import sys

EXIT_INTERRUPTED = 130


def run() -> int:
    """Entry point of ``stepdown-ml``; returns the exit code."""
    try:
        from stepdown_ml.cli import main

        code = main()  # handles a Ctrl-C once it runs a command; not while it reads the arguments
    except KeyboardInterrupt:
        sys.stderr.write("stepdown-ml: interrupted; no output written\n")
        code = EXIT_INTERRUPTED
    _forget_handled_interrupts()
    return code


def _forget_handled_interrupts() -> None:
    """Every Ctrl-C has been handled: have CPython forget one it thinks was not.

    CPython notes a KeyboardInterrupt that escapes code run by ``exec()`` or ``eval()`` of a
    string (dataclasses and namedtuples build their methods that way while modules load),
    even when a caller handles it. Run as ``python -m stepdown_ml``, the interpreter then
    ends itself by SIGINT at exit instead of with the exit code (1 Ctrl-C in ~30 here).
    Each such call clears the note before it runs, so an empty one clears it.
    """
    exec("")


if __name__ == "__main__":
    sys.exit(run())
