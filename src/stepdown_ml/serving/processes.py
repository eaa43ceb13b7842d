"""Tasks run on forked worker processes, their results handed back in task order.

Batch scoring uses it to keep the Python parts of each block off a shared interpreter:
threads in one process serialize on the GIL, processes do not. Each worker is forked
from the parent (so it starts with the parent's imports, sharing their pages), runs a
setup function once (a worker loads its own ONNX session: none is shared across a fork),
then takes tasks one at a time over a pipe. The parent hands a task to each idle worker,
takes results as they come and passes them on strictly in task order.

A worker that dies (killed by a signal, the out-of-memory killer) is seen at once through
its process sentinel; the run then fails with :class:`WorkerError` and the other workers are
stopped. An exception raised by a task in a worker is raised again in the parent, in its
turn: after the results of every task before it. Workers ignore SIGINT (Ctrl-C reaches the
whole process group): the parent stops them.

No worker outlives its parent. SIGINT and SIGTERM are held back while the workers are
forked, so a stop that arrives meanwhile is handled once they exist (and stops them), not
lost in the fork's own hooks; each worker keeps only its own end of its pipe, and asks the
kernel to kill it when the parent dies (SIGKILL included), so an orphan never keeps the
output's lock or its memory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from stepdown_ml.core import stops

Task = TypeVar("Task")
Result = TypeVar("Result")
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# prctl(2): the signal a process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1
# How often the parent wakes up while waiting (for its progress line).
POLL_SECONDS = 0.5


class WorkerError(RuntimeError):
    """A worker process ended without finishing its task (a signal, the OOM killer, exit)."""


@dataclass
class _Failure:
    """An exception raised in a worker, carried back to the parent."""

    error: BaseException


def _signal_name(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act as they would have.

    A handler that raises while ``os.fork`` runs its hooks is ignored by Python, so a stop
    arriving then would be lost. Blocking the signals covers the children (forked with them
    blocked, they unblock once their own handlers are set); in the parent, another thread
    (Arrow's, ONNX Runtime's) could still take them, so the handlers note them meanwhile.
    Every handler swapped is put back, even if a stop lands while they are swapped.
    """
    held: list[int] = []
    swapped: dict[int, Any] = {}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        if threading.current_thread() is threading.main_thread():  # handlers run there only
            for signum in _STOP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous is not None:  # None: set outside Python, left alone
                    swapped[signum] = previous
                    signal.signal(signum, lambda number, _: held.append(number))
        yield
    finally:
        stop = stops.put_back(swapped)  # a stop raised by a handler already back cuts nothing short
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if stop is not None:
            raise stop
        for number in dict.fromkeys(held):
            signal.raise_signal(number)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when ``parent`` ends (Linux); exit if it already has."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the request was made
        os._exit(1)


def _worker_main(
    conn: Connection,
    setup: Callable[[], Any],
    work: Callable[[Any, Any], Any],
    parent: int,
    inherited: list[Connection],
) -> None:  # pragma: no cover - runs in the child process (covered by the end-to-end tests)
    # Forked with SIGINT and SIGTERM held back (OrderedPool): the parent's handlers go first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _die_with(parent)
    for other in inherited:  # the parent's ends: held here, they would hide its exit
        other.close()
    try:
        state = setup()
    except BaseException as exc:
        _tell(conn, _Failure(_picklable(exc)))
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        try:
            result = work(state, task)
        except BaseException as exc:
            # Said, then wait to be stopped: the parent raises it in its turn, in task order.
            result = _Failure(_picklable(exc))
        if not _tell(conn, result):
            return


def _tell(conn: Connection, message: Any) -> bool:
    """Send ``message`` to the parent; False when it no longer listens (it is stopping the workers)."""
    try:
        conn.send(message)
    except OSError:
        return False
    return True


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class OrderedPool(Generic[Task, Result]):
    """Forked workers that run ``work(setup(), task)``; results come back in task order.

    Args:
        workers: the number of worker processes.
        setup: run once in each worker after the fork; its value is passed to ``work``.
        work: run in a worker for each task; task and result cross a pipe (pickled).
        describe: says in words which task a worker was running (for :class:`WorkerError`).
    """

    def __init__(
        self,
        workers: int,
        setup: Callable[[], Any],
        work: Callable[[Any, Task], Result],
        describe: Callable[[Task], str] = str,
    ) -> None:
        self.describe = describe
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        try:
            with _stops_held():
                self._start(workers, setup, work)
        except BaseException:  # a stop held back while forking is raised here
            self.close(failed=True)
            raise

    def _start(self, workers: int, setup: Callable[[], Any], work: Callable[[Any, Task], Result]) -> None:
        context = multiprocessing.get_context("fork")
        for number in range(workers):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(theirs, setup, work, os.getpid(), [*self._conns, ours]),
                name=f"stepdown-ml worker {number + 1}",
                daemon=True,
            )
            self._conns.append(ours)
            try:
                process.start()
            finally:
                theirs.close()
            self._processes.append(process)

    def run(self, tasks: Iterator[Task], on_wait: Callable[[], None] = lambda: None) -> Iterator[Result]:
        """Run every task; yield the results in task order.

        Tasks are drawn from ``tasks`` only when a worker is free, so a lazy iterator keeps
        at most one task per worker in memory. ``on_wait`` is called at least every
        :data:`POLL_SECONDS` while the workers are busy.

        An exception raised by a task is raised here in its turn: after the results of
        every task before it, so the first failure in task order is the one reported, as a
        single process would report it. No task is started once one has failed.
        """
        idle = list(reversed(range(len(self._processes))))
        busy: dict[int, tuple[int, Task]] = {}
        finished: dict[int, Result | _Failure] = {}
        failed: set[int] = set()
        issued = handed = 0
        exhausted = False
        while True:
            while idle and not exhausted:
                task = next(tasks, None)
                if task is None:
                    exhausted = True
                    break
                worker = idle.pop()
                self._send(worker, task)
                busy[worker] = (issued, task)
                issued += 1
            if not busy:
                return
            watched = [p.sentinel for w, p in enumerate(self._processes) if w not in failed]
            ready = wait([self._conns[w] for w in busy] + watched, POLL_SECONDS)
            for worker in list(busy):
                if self._conns[worker] not in ready and self._processes[worker].sentinel not in ready:
                    continue
                index, task = busy.pop(worker)
                finished[index] = self._receive(worker, task)
                if isinstance(finished[index], _Failure):
                    exhausted = True
                    failed.add(worker)  # it may exit now (a failed setup does): that is no death
                else:
                    idle.append(worker)
            for worker, process in enumerate(self._processes):
                if worker not in busy and worker not in failed and process.sentinel in ready:
                    self._died(worker, None)
            while handed in finished:
                result = finished.pop(handed)
                if isinstance(result, _Failure):
                    raise result.error
                yield result
                handed += 1
            on_wait()

    def _send(self, worker: int, task: Task) -> None:
        try:
            self._conns[worker].send(task)
        except (BrokenPipeError, ConnectionResetError):
            self._died(worker, task)

    def _receive(self, worker: int, task: Task) -> Result | _Failure:
        conn = self._conns[worker]
        try:
            if not conn.poll():
                self._died(worker, task)
            message = conn.recv()
        except (EOFError, OSError):  # OSError: the worker died halfway through its message
            self._died(worker, task)
        return message

    def _died(self, worker: int, task: Task | None) -> Any:
        failure = self._last_word(worker)
        if failure is not None:  # the worker failed (its setup, say) and said why before it exited
            raise failure.error
        process = self._processes[worker]
        process.join(timeout=5)
        doing = f" while scoring {self.describe(task)}" if task is not None else ""
        raise WorkerError(
            f"worker process {worker + 1} of {len(self._processes)} (pid {process.pid}) "
            f"{_signal_name(process.exitcode)}{doing}"
        )

    def _last_word(self, worker: int) -> _Failure | None:
        """The failure a worker sent before it ended, if it is still waiting in the pipe."""
        conn = self._conns[worker]
        try:
            message = conn.recv() if conn.poll() else None
        except (EOFError, OSError):
            return None
        return message if isinstance(message, _Failure) else None

    def close(self, failed: bool = False) -> None:
        """Stop the workers: asked to finish when the run went well, by SIGTERM when it failed."""
        for conn in self._conns:
            if not failed:
                with contextlib.suppress(OSError):
                    conn.send(None)
            conn.close()
        for process in self._processes:
            if not failed:
                process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()

    def __enter__(self) -> OrderedPool[Task, Result]:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self.close(failed=kind is not None)
