"""Unit tests: the ordered pool of forked worker processes behind `score --workers N`."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from stepdown_ml.core.schema import ContractError
from stepdown_ml.serving.processes import OrderedPool, WorkerError


def _setup() -> int:
    return os.getpid()


def _square_slowly(pid: int, task: int) -> tuple[int, int, int]:
    time.sleep(random.random() / 100)  # finish out of order
    return task, task * task, pid


def _fail_on_seven(pid: int, task: int) -> int:
    if task == 7:
        raise ContractError("row 7: broken")
    return task


def _die_on_five(pid: int, task: int) -> int:
    if task == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return task


def test_results_come_back_in_task_order_from_every_worker():
    with OrderedPool(3, _setup, _square_slowly) as pool:
        results = list(pool.run(iter(range(40))))
    assert [r[0] for r in results] == list(range(40))
    assert [r[1] for r in results] == [i * i for i in range(40)]
    workers = {r[2] for r in results}
    assert len(workers) > 1  # more than one process did the work
    assert os.getpid() not in workers


def test_an_exception_in_a_task_is_raised_in_the_parent():
    with pytest.raises(ContractError, match="row 7: broken"), OrderedPool(2, _setup, _fail_on_seven) as pool:
        list(pool.run(iter(range(20))))


def test_a_killed_worker_fails_the_run_naming_the_signal_and_the_task():
    pool = OrderedPool(2, _setup, _die_on_five, describe=lambda task: f"task {task}")
    processes = list(pool._processes)
    with pytest.raises(WorkerError, match=r"killed by SIGKILL while scoring task 5"), pool:
        list(pool.run(iter(range(20))))
    assert not any(p.is_alive() for p in processes)  # the others were stopped too


class _StopError(Exception):
    pass


_SIGNAL_AT_FORK: list[bool] = []


def _signal_at_fork() -> None:  # registered once; acts only while a test arms it
    if _SIGNAL_AT_FORK:
        _SIGNAL_AT_FORK.clear()
        os.kill(os.getpid(), signal.SIGTERM)


os.register_at_fork(after_in_parent=_signal_at_fork)


def _raise_stop(*_: object) -> None:
    raise _StopError


def test_a_stop_during_a_fork_is_handled_once_the_workers_exist_and_stops_them(monkeypatch):
    """A handler that raises inside the fork's own hooks is ignored by Python: held back until
    the workers exist, SIGTERM reaches the caller, and the workers started so far are stopped."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    children_before = set(_children())
    try:
        _SIGNAL_AT_FORK.append(True)
        with pytest.raises(_StopError):
            OrderedPool(3, _setup, _square_slowly)
    finally:
        _SIGNAL_AT_FORK.clear()
        signal.signal(signal.SIGTERM, previous)
    assert set(_children()) <= children_before, "a worker outlived the stopped pool"


def _children() -> list[int]:
    me = os.getpid()
    path = f"/proc/{me}/task/{me}/children"
    with open(path) as handle:
        return [int(pid) for pid in handle.read().split()]


def test_a_setup_failure_is_reported_as_itself_whichever_worker_the_parent_reaches_first():
    """Workers that failed in setup exit; the parent, sending them tasks, reports their error,
    not 'exited with code 0'."""
    for _ in range(3):
        with (
            pytest.raises(ContractError, match="no model here"),
            OrderedPool(8, _no_model, _square_slowly) as pool,
        ):
            list(pool.run(iter(range(40))))


def _no_model() -> int:
    raise ContractError("no model here")


def _fail_slowly_on_three_quickly_on_six(pid: int, task: int) -> int:
    if task == 3:
        time.sleep(0.3)
        raise ContractError("task 3")
    if task == 6:
        raise ContractError("task 6")
    return task


def test_the_first_failure_in_task_order_is_raised_after_the_results_before_it():
    """Task 6 fails first in time; task 3, before it in order, is the one reported (as one process
    would), and only after the results of tasks 0-2 were handed out."""
    handed = []
    with (
        OrderedPool(3, _setup, _fail_slowly_on_three_quickly_on_six) as pool,
        pytest.raises(ContractError, match="task 3"),
    ):
        for result in pool.run(iter(range(20))):
            handed.append(result)
    assert handed == [0, 1, 2]


def _first_worker_only(token: str) -> None:
    try:
        os.close(os.open(token, os.O_CREAT | os.O_EXCL))  # the first worker to get here succeeds
    except FileExistsError:
        raise ContractError("no model in this worker") from None


def _slowly(state: None, task: int) -> int:
    time.sleep(0.5)
    return task


def test_a_setup_failure_while_another_worker_is_busy_is_reported_as_itself(tmp_path):
    """The failed worker exits after saying why; its exit is no death to report once its failure
    is in (the run said 'exited with code 0')."""
    from functools import partial

    with (
        pytest.raises(ContractError, match="no model in this worker"),
        OrderedPool(2, partial(_first_worker_only, str(tmp_path / "token")), _slowly) as pool,
    ):
        list(pool.run(iter(range(4))))


def test_every_handler_comes_back_when_a_stop_lands_while_they_are_put_back(monkeypatch):
    """SIGINT during the restore of the handlers swapped while forking: KeyboardInterrupt, and
    SIGTERM's own handler is back too (it was left noting signals, so later ones were lost)."""
    real_signal = signal.signal
    restored: list[int] = []

    def signal_then_interrupt(signum, handler):
        previous = real_signal(signum, handler)
        if getattr(handler, "__name__", "") != "<lambda>":  # a handler put back
            restored.append(signum)
            if len(restored) == 1:
                os.kill(os.getpid(), signal.SIGINT)
        return previous

    before = signal.getsignal(signal.SIGTERM)
    sentinel = real_signal(signal.SIGTERM, _raise_stop)
    try:
        monkeypatch.setattr(signal, "signal", signal_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            OrderedPool(1, _setup, _square_slowly).close()
        monkeypatch.undo()
        assert signal.getsignal(signal.SIGTERM) is _raise_stop
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        real_signal(signal.SIGTERM, before if before is not None else sentinel)
