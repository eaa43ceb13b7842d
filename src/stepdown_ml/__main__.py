"""``python -m stepdown_ml`` and the ``stepdown-ml`` command: the command line.

:func:`run` sets the stop handlers (:mod:`stepdown_ml.core.stops`) before it imports the
command line, so that a Ctrl-C or SIGTERM while its modules load and it reads its
arguments (the first few tenths of a second) is one line and exit 130 or 143, as it is
later on, not a traceback or a silent death.

:func:`main` (the process's entry) then ends the process without tearing the interpreter
down: once the command is done, its outputs closed and the exit handlers run, freeing every
module's objects one by one only costs time (0.05 s of a batch run's 2).
"""

import sys


def run() -> int:
    """Entry point of ``stepdown-ml``; returns the exit code."""
    code = None
    try:
        from stepdown_ml.core import stops  # small: sets nothing until handled() runs

        with stops.handled():
            from stepdown_ml.cli import main

            code = main(handle_stops=False)  # reports the stops of the command it runs
    except KeyboardInterrupt as stop:  # the first import included
        code = _report(stop) if code is None else code  # after the command ended: its code stands
    except BaseException as exc:
        loaded = sys.modules.get("stepdown_ml.core.stops")
        if loaded is None or not isinstance(exc, loaded.Terminated):
            raise
        code = _report(exc) if code is None else code
    _forget_handled_interrupts()
    return code


def _report(stop: BaseException) -> int:
    from stepdown_ml.core import stops

    return stops.report("stepdown-ml", stop)


def _forget_handled_interrupts() -> None:
    """Every Ctrl-C has been handled: have CPython forget one it thinks was not.

    CPython notes a KeyboardInterrupt that escapes code run by ``exec()`` or ``eval()`` of a
    string (dataclasses and namedtuples build their methods that way while modules load),
    even when a caller handles it. Run as ``python -m stepdown_ml``, the interpreter then
    ends itself by SIGINT at exit instead of with the exit code (1 Ctrl-C in ~30 here).
    Each such call clears the note before it runs, so an empty one clears it.
    """
    exec("")


def main() -> None:
    """The process's entry: :func:`run`, then exit with its code (see :func:`exit_now`)."""
    exit_now(run())


def exit_now(code: int) -> None:
    """End the process with ``code``: exit handlers run, the interpreter is not torn down.

    What a normal exit does that matters is done here: the exit handlers (``atexit``:
    logging, multiprocessing, temporary files) run, and the standard streams are flushed.
    The exit is the normal one when another Python thread still runs (Python would wait
    for it), when a stream cannot be flushed, and under a tracer, a profiler or ``python
    -i`` (``python -m cProfile -m stepdown_ml ...`` writes its profile after this returns).
    """
    import atexit
    import os
    import threading

    if threading.active_count() > 1 or sys.gettrace() or sys.getprofile() or sys.flags.interactive:
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the process was started with that stream closed
                stream.flush()
    except (OSError, ValueError):  # a closed pipe, a closed stream: Python reports it
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    main()
