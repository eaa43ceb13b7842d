"""Stops: Ctrl-C (SIGINT) and SIGTERM, as the command line handles them.

Within a :class:`handled` block, either signal raises its stop in the main thread
(``KeyboardInterrupt``, or :class:`Terminated`), so that temporary outputs are removed on
the way out, and also notes it here. Python drops an exception that a handler raises
inside a weakref callback or ``__del__`` (importlib's module locks have such callbacks);
a noted stop still keeps outputs from being put in place (:func:`raise_noted`, called by
every atomic write before its rename).

Imports nothing heavy: the ``stepdown-ml`` entry point sets the handlers before it loads
the rest of the package.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporary outputs are cleaned up as for Ctrl-C."""


# The stops of the current run whose handlers ran, in order (a run in the main thread: only
# it gets them).
NOTED: list[BaseException] = []


def _interrupt(signum: int, frame: object) -> None:
    _stop(KeyboardInterrupt())


def _terminate(signum: int, frame: object) -> None:
    _stop(Terminated())


def _stop(stop: BaseException) -> None:
    NOTED.append(stop)  # should Python drop the exception, outputs stay out of place
    if not DEFERRED[0]:
        raise stop


# While above 0, our handlers note a stop but do not raise it: around a few steps of the main
# thread that must not be cut short (the renames that put outputs in place, putting handlers
# back), whose code then decides what a stop noted meanwhile means. Raised and lowered
# inline, never through a call: Python may run a handler on entering any function.
DEFERRED = [0]


# (signal, our handler, Python's default)
_HANDLERS = (
    (signal.SIGTERM, _terminate, signal.SIG_DFL),
    (signal.SIGINT, _interrupt, signal.default_int_handler),
)


def noted_since(count: int) -> BaseException | None:
    """The last stop noted after the first ``count`` (a ``len(NOTED)`` taken earlier), if any.

    Only in the main thread: a run in another thread (a service's) is not what a Ctrl-C stops.
    """
    if len(NOTED) > count and threading.current_thread() is threading.main_thread():
        return NOTED[-1]
    return None


def raise_noted() -> None:
    """Raise the last stop noted in this run, if any (one whose exception Python dropped)."""
    stop = noted_since(0)
    if stop is not None:
        raise stop


class handled:  # noqa: N801 - used as a function: ``with handled():``
    """Within the block, SIGINT and SIGTERM raise their stop (a context manager).

    In the main thread only: signal handlers can be set nowhere else, and elsewhere the block
    changes nothing. A block starts with no stop noted, and does not nest (its start forgets
    the stops noted before it). Afterwards the previous handlers are back and the notes are
    forgotten. While they are put back, a stop of ours is noted, not raised (the block's
    work is done), then forgotten; an exception raised by a handler of the caller's, once
    it is back, is raised when all are back. The same holds if a stop lands while ours are
    being set: what was replaced is put back before the stop is raised.

    A stop can land as the block ends, before the handlers are put back; they then stay
    ours. The next block takes them for the defaults they replaced, so it leaves the
    defaults behind, not ours. (A class, not a generator: an unfinished generator would put
    back stale handlers whenever it is collected.)
    """

    def __enter__(self) -> None:
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        NOTED.clear()  # an earlier block's, never raised
        try:
            for signum, ours, default in _HANDLERS:
                before = signal.getsignal(signum)
                # Recorded first, so that whatever lands next is put back. Ours: a block that
                # could not finish, which replaced the default.
                self._previous[signum] = default if before is ours else before
                signal.signal(signum, ours)
        except BaseException:
            self._put_back()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        theirs = self._put_back()
        if theirs is not None:
            raise theirs

    def _put_back(self) -> BaseException | None:
        """Put every replaced handler back; return the first exception a handler of the
        caller's raised meanwhile."""
        DEFERRED[0] += 1
        try:
            theirs = put_back(self._previous)
            del NOTED[:]  # not a call: no handler runs first (and ours are all gone now)
        finally:
            DEFERRED[0] -= 1
        return theirs


def put_back(previous: dict[int, Any]) -> BaseException | None:
    """Set each signal's handler back to ``previous``, all of them whatever lands meanwhile.

    A handler put back may run at once (its signal was pending) and raise: the rest are set
    still, and the first such exception is returned for the caller to raise. None handlers
    (set outside Python) are left alone.
    """
    raised: BaseException | None = None
    for signum, before in previous.items():
        while before is not None:
            try:
                signal.signal(signum, before)
                break
            except BaseException as exc:  # raised by a handler already back: set this one still
                raised = raised or exc
    return raised


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
