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

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that temporary outputs are cleaned up as for Ctrl-C."""


# The stops of the current run whose handlers ran, in order.
NOTED: list[BaseException] = []


def _interrupt(signum: int, frame: object) -> None:
    _stop(KeyboardInterrupt())


def _terminate(signum: int, frame: object) -> None:
    _stop(Terminated())


def _stop(stop: BaseException) -> None:
    NOTED.append(stop)  # should Python drop the exception, outputs stay out of place
    raise stop


def raise_noted() -> None:
    """Raise the last stop noted in this run, if any (one whose exception Python dropped)."""
    if NOTED:
        raise NOTED[-1]


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise their stop (in the main thread only: signal
    handlers can be set nowhere else). Afterwards the previous handlers are back and the
    noted stops are forgotten: they have been handled."""
    in_main = threading.current_thread() is threading.main_thread()
    handlers = {signal.SIGTERM: _terminate, signal.SIGINT: _interrupt} if in_main else {}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: set outside Python
                signal.signal(signum, handler)
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
