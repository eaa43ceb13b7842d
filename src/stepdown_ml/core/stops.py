"""Stops: Ctrl-C (SIGINT) and SIGTERM, as the command line handles them.

Within :func:`handled`, either signal raises its stop in the main thread
(``KeyboardInterrupt``, or :class:`Terminated`), so that temporary outputs are removed on
the way out, and also notes it here. Python drops an exception that a handler raises
inside a weakref callback or ``__del__`` (importlib's module locks have such callbacks);
a noted stop still keeps outputs from being put in place (:func:`raise_noted`, called by
every atomic write before its rename).

Imports nothing heavy: the ``stepdown-ml`` entry point sets the handlers before it loads
the rest of the package.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporary outputs are cleaned up as for Ctrl-C."""


# The stops of the current run whose handlers ran, in order (a run in the main thread: only
# it gets them).
NOTED: list[BaseException] = []
_open = [0]  # handled() blocks open in the main thread


def _interrupt(signum: int, frame: object) -> None:
    _stop(KeyboardInterrupt())


def _terminate(signum: int, frame: object) -> None:
    _stop(Terminated())


def _stop(stop: BaseException) -> None:
    NOTED.append(stop)  # should Python drop the exception, outputs stay out of place
    raise stop


def raise_noted() -> None:
    """Raise the last stop noted in this run, if any (one whose exception Python dropped).

    Only in the main thread: a run in another thread (a service's) is not what a Ctrl-C stops.
    """
    if NOTED and threading.current_thread() is threading.main_thread():
        raise NOTED[-1]


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise their stop.

    In the main thread only: signal handlers can be set nowhere else, and elsewhere the block
    changes nothing. The outermost block starts and ends with no stop noted. Afterwards the
    previous handlers are back, all of them even if a stop lands while they are put back;
    such a late stop is dropped when the block had ended normally (its work is done).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _open[0]:
        NOTED.clear()  # an earlier run's, never raised
    _open[0] += 1
    previous: dict[int, Any] = {}
    try:
        for signum, handler in ((signal.SIGTERM, _terminate), (signal.SIGINT, _interrupt)):
            previous[signum] = signal.getsignal(signum)  # recorded first: restored whatever lands next
            signal.signal(signum, handler)
        yield
    finally:
        for number, before in previous.items():
            while before is not None:  # None: set outside Python, left alone
                try:
                    signal.signal(number, before)
                    break
                except (KeyboardInterrupt, Terminated):
                    continue  # a stop raised by a handler already put back: set this one still
        _open[0] -= 1
        if not _open[0]:
            NOTED.clear()


def behind(exc: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM an exception was raised from, if any (onnxruntime's import turns
    a Ctrl-C into an ``ImportError`` of its own)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (KeyboardInterrupt, Terminated)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def report(who: str, stop: BaseException) -> int:
    """Say in one line on stderr that ``who`` was stopped; return the exit code."""
    if isinstance(stop, Terminated):
        sys.stderr.write(f"{who}: terminated (SIGTERM); no output written\n")
        return EXIT_TERMINATED
    sys.stderr.write(f"{who}: interrupted; no output written\n")
    return EXIT_INTERRUPTED
