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

        return main()  # handles a Ctrl-C once it runs a command; not while it reads the arguments
    except KeyboardInterrupt:
        sys.stderr.write("stepdown-ml: interrupted; no output written\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(run())
