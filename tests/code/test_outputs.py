"""Unit tests: where `stepdown-ml score` writes, and what a failed or stopped run leaves."""

from __future__ import annotations

import errno
import gzip
import os
import signal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepdown_ml.cli import EXIT_BAD_INPUT, EXIT_TERMINATED, main
from stepdown_ml.core.schema import ContractError
from stepdown_ml.core.tables import atomic_paths, write_csv
from stepdown_ml.serving import batch


@pytest.fixture
def src(tmp_path, candidates):
    path = tmp_path / "in.csv"
    write_csv(candidates.head(60), path)
    return path


def score(served_model_dir, *args) -> int:
    return main(["score", *map(str, args), "--model-dir", str(served_model_dir)])


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("stepdown-ml score: error: ")
    return err[0]


@pytest.mark.parametrize(
    "args",
    [
        ("--out", "s.csv", "--rejects", "s.csv"),
        ("--out", "s.csv", "--rejects", "./sub/../s.csv"),
    ],
)
def test_scores_and_rejects_may_not_be_one_file(tmp_path, src, served_model_dir, capsys, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert score(served_model_dir, src, *args) == EXIT_BAD_INPUT
    assert "same file" in one_error_line(capsys)
    assert listing(tmp_path) == ["in.csv", "sub"]


@pytest.mark.parametrize("role", ["--out", "--rejects"])
@pytest.mark.parametrize("through_link", [False, True])
def test_an_output_may_not_be_the_input(tmp_path, src, served_model_dir, capsys, role, through_link):
    before = src.read_bytes()
    target = src
    if through_link:
        target = tmp_path / "link.csv"
        target.symlink_to(src)
    args = ["--out", target] if role == "--out" else ["--out", tmp_path / "s.csv", "--rejects", target]
    assert score(served_model_dir, src, *args) == EXIT_BAD_INPUT
    assert "input file" in one_error_line(capsys)
    assert src.read_bytes() == before
    assert not (tmp_path / "s.csv").exists()


def test_default_rejects_paths_never_collide(tmp_path, src, served_model_dir):
    for year in ("2024", "2025"):
        assert score(served_model_dir, src, "--out", tmp_path / f"scores.{year}.csv") == 0
    assert (tmp_path / "scores.2024.rejects.csv").is_file()
    assert (tmp_path / "scores.2025.rejects.csv").is_file()
    assert not (tmp_path / "scores.rejects.csv").exists()
    # An output named like a rejects file gets a rejects file of its own.
    assert score(served_model_dir, src, "--out", tmp_path / "run.rejects.csv") == 0
    assert len(pd.read_csv(tmp_path / "run.rejects.csv")) == 60
    assert (tmp_path / "run.rejects.rejects.csv").is_file()


def test_the_extension_chooses_the_format(tmp_path, src, served_model_dir, capsys):
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv.gz") == 0
    with gzip.open(tmp_path / "s.csv.gz", "rt") as handle:
        assert len(pd.read_csv(handle)) == 60
    assert (tmp_path / "s.rejects.csv").is_file()
    assert score(served_model_dir, src, "--out", tmp_path / "S.PARQUET") == 0
    assert pq.read_table(tmp_path / "S.PARQUET").num_rows == 60
    capsys.readouterr()
    assert score(served_model_dir, src, "--out", tmp_path / "s.txt") == EXIT_BAD_INPUT
    assert "unknown output format" in one_error_line(capsys)
    assert not (tmp_path / "s.txt").exists()


def test_ranked_gzip_output(tmp_path, candidates, served_model_dir):
    frame = candidates.head(40).assign(person_id=[f"p{i % 7}" for i in range(40)])
    write_csv(frame, tmp_path / "in.csv")
    assert score(served_model_dir, tmp_path / "in.csv", "--out", tmp_path / "s.csv.gz") == 0
    with gzip.open(tmp_path / "s.csv.gz", "rt") as handle:
        scores = pd.read_csv(handle)
    assert sorted(scores.groupby(pd.Series(frame["person_id"]))["rank"].max()) == sorted(
        frame["person_id"].value_counts()
    )
    assert listing(tmp_path) == ["in.csv", "s.csv.gz", "s.rejects.csv"]


def test_outputs_follow_the_umask(tmp_path, src, served_model_dir):
    mask = os.umask(0)
    os.umask(mask)
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == 0
    for name in ("s.csv", "s.rejects.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_directory_as_output_is_one_line(tmp_path, src, served_model_dir, capsys):
    (tmp_path / "d.csv").mkdir()
    assert score(served_model_dir, src, "--out", tmp_path / "d.csv") == EXIT_BAD_INPUT
    assert "is a directory" in one_error_line(capsys)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, src, served_model_dir, capsys, monkeypatch):
    (tmp_path / "s.csv").write_text("old scores\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    assert "No space left on device" in one_error_line(capsys)
    assert listing(tmp_path) == ["in.csv", "s.csv"]
    assert (tmp_path / "s.csv").read_text() == "old scores\n"


@pytest.mark.parametrize("person_id", [False, True])
def test_sigterm_mid_run_cleans_up_like_ctrl_c(
    tmp_path, candidates, served_model_dir, monkeypatch, person_id
):
    frame = candidates.head(3000)
    if person_id:
        frame = frame.assign(person_id=[f"p{i % 50}" for i in range(len(frame))])
    write_csv(frame, tmp_path / "in.csv")
    real = batch.score_block
    calls = []

    def score_then_terminate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "score_block", score_then_terminate)
    monkeypatch.setattr(batch, "BLOCK_BYTES", 64 * 1024)
    code = main(
        [
            "score",
            str(tmp_path / "in.csv"),
            "--out",
            str(tmp_path / "s.csv"),
            "--model-dir",
            str(served_model_dir),
        ]
    )
    if len(calls) < 2:
        pytest.skip("the file was scored in one block")
    assert code == EXIT_TERMINATED
    assert listing(tmp_path) == ["in.csv"]


def test_truncated_gzip_is_one_line(tmp_path, src, served_model_dir, capsys):
    data = gzip.compress(src.read_bytes())
    (tmp_path / "in.csv.gz").write_bytes(data[: len(data) // 2])
    assert score(served_model_dir, tmp_path / "in.csv.gz", "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    one_error_line(capsys)
    assert listing(tmp_path) == ["in.csv", "in.csv.gz"]


def test_corrupt_parquet_is_one_line(tmp_path, src, served_model_dir, capsys):
    (tmp_path / "in.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    assert score(served_model_dir, tmp_path / "in.parquet", "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    one_error_line(capsys)
    assert listing(tmp_path) == ["in.csv", "in.parquet"]


def test_scores_and_rejects_are_replaced_together(tmp_path, src, served_model_dir, monkeypatch, capsys):
    """If the rejects cannot be renamed into place, the old scores come back: no mixed pair."""
    (tmp_path / "s.csv").write_text("old scores\n")
    (tmp_path / "s.rejects.csv").write_text("old rejects\n")
    real = os.replace

    def fail_on_rejects(source, target):
        if str(target).endswith("s.rejects.csv") and ".part" in str(source):
            raise OSError(errno.EIO, "Input/output error")
        return real(source, target)

    monkeypatch.setattr(os, "replace", fail_on_rejects)
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    one_error_line(capsys)
    assert (tmp_path / "s.csv").read_text() == "old scores\n"
    assert (tmp_path / "s.rejects.csv").read_text() == "old rejects\n"
    assert listing(tmp_path) == ["in.csv", "s.csv", "s.rejects.csv"]


def test_a_second_run_to_the_same_output_is_refused(tmp_path, src, served_model_dir, capsys):
    import fcntl

    with open(tmp_path / ".s.csv.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    assert "another run is writing" in one_error_line(capsys)
    assert not (tmp_path / "s.csv").exists()


def test_the_rejects_output_is_locked_too(tmp_path, src, served_model_dir, capsys):
    """A run writing s.rejects.csv as its scores must not run beside one writing it as rejects."""
    import fcntl

    with open(tmp_path / ".s.rejects.csv.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    assert "s.rejects.csv: another run is writing" in one_error_line(capsys)
    assert listing(tmp_path) == [".s.rejects.csv.lock", "in.csv"]  # the other run's lock only


def test_a_lock_file_removed_by_its_holder_is_not_a_lock(tmp_path, monkeypatch):
    """Run B opens the lock file; its holder A ends and removes it; run C creates and locks a new
    one; B's lock on the removed file must not count, or B and C would write the same output."""
    import fcntl

    from stepdown_ml.core import tables

    lock_path = tmp_path / ".s.csv.lock"
    lock_path.write_text("")
    real_flock, newer = fcntl.flock, []

    def holder_ends_and_another_run_locks(handle, operation):
        if not newer:
            lock_path.unlink()
            newer.append(open(lock_path, "a"))  # noqa: SIM115 - held until the test ends
            real_flock(newer[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        return real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", holder_ends_and_another_run_locks)
    try:
        with (
            pytest.raises(ContractError, match="another run is writing"),
            tables.atomic_paths(tmp_path / "s.csv"),
        ):
            pass
    finally:
        newer[0].close()
    assert not (tmp_path / "s.csv").exists()


def test_a_stop_while_the_lock_is_taken_leaves_no_lock_file(tmp_path, monkeypatch):
    """A Ctrl-C between creating the lock file and knowing it ours used to leave it behind."""
    import fcntl

    from stepdown_ml.core import stops

    real_flock = fcntl.flock

    def interrupted_flock(handle, operation):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # a Ctrl-C lands now
        return real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", interrupted_flock)
    with stops.handled(), pytest.raises(KeyboardInterrupt), atomic_paths(tmp_path / "s.csv"):
        pytest.fail("the block ran: the stop was not raised")
    assert listing(tmp_path) == []


def test_a_stop_while_taking_a_lock_that_fails_is_still_a_stop(tmp_path, monkeypatch):
    """A Ctrl-C held back while the lock is taken, when taking it then fails, is raised (the
    run is interrupted), not lost behind the error."""
    import fcntl

    from stepdown_ml.core import stops

    def interrupted_then_refused(handle, operation):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # a Ctrl-C lands now
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", interrupted_then_refused)
    with stops.handled(), pytest.raises(KeyboardInterrupt), atomic_paths(tmp_path / "s.csv"):
        pytest.fail("the block ran")
    assert stops.DEFERRED == [0]
    # The lock file was never locked, so it may be another run's: it stays.
    assert listing(tmp_path) == [".s.csv.lock"]


def test_leftovers_of_killed_runs_are_removed_and_nothing_else(tmp_path, src, served_model_dir):
    """What a SIGKILLed run leaves beside its outputs goes; any other file stays."""
    leftovers = [
        ".s.csv.0123abcd.part",
        ".s.csv.0123abcd.part.unranked",
        ".s.rejects.csv.4567cdef.part",
        ".s.csv.lock",
    ]
    kept = [".s.csv.0123abcd.part.bak", ".s.csv.notes", ".t.csv.0123abcd.part", ".s.csv.01234567.old"]
    for name in leftovers + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / ".s.csv.89abcdef.parts").mkdir()
    (tmp_path / ".s.csv.89abcdef.parts" / "000000.scores").write_text("x")
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == 0
    assert listing(tmp_path) == sorted([*kept, "in.csv", "s.csv", "s.rejects.csv"])


def test_a_failed_run_removes_the_folders_it_made(tmp_path, served_model_dir, capsys):
    (tmp_path / "empty.csv").write_bytes(b"")
    assert score(served_model_dir, tmp_path / "empty.csv", "--out", tmp_path / "a" / "b" / "s.csv") == 2
    one_error_line(capsys)
    assert listing(tmp_path) == ["empty.csv"]


def test_a_nul_byte_rejects_its_row(tmp_path, src, served_model_dir):
    lines = src.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b",", b"\x00,", 1)  # row 3's candidate_id ends in NUL
    src.write_bytes(b"\n".join(lines))
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == 0
    rejects = pd.read_csv(tmp_path / "s.rejects.csv", dtype=str, keep_default_na=False)
    assert list(rejects["row"]) == ["3"] and "NUL" in rejects["reason"][0]
    assert b"\x00" not in (tmp_path / "s.csv").read_bytes() + (tmp_path / "s.rejects.csv").read_bytes()


def test_an_output_of_another_kind_is_not_clobbered(tmp_path, src, served_model_dir, capsys):
    """A Parquet file under a .csv name (or the reverse) is someone's data: refused."""
    pq.write_table(pq.read_table(_as_parquet(src, tmp_path / "x.parquet")), tmp_path / "old.csv")
    before = (tmp_path / "old.csv").read_bytes()
    assert score(served_model_dir, src, "--out", tmp_path / "old.csv") == EXIT_BAD_INPUT
    assert "holds a parquet file" in one_error_line(capsys)
    assert (tmp_path / "old.csv").read_bytes() == before
    (tmp_path / "text.parquet").write_text("candidate_id\nc-1\n")
    assert score(served_model_dir, src, "--out", tmp_path / "text.parquet") == EXIT_BAD_INPUT
    assert "holds a csv file" in one_error_line(capsys)


def _as_parquet(src, path):
    pq.write_table(pa.Table.from_pandas(pd.read_csv(src, dtype=str, keep_default_na=False)), path)
    return path


def test_generate_refuses_a_name_it_would_not_write(tmp_path, capsys):
    assert main(["generate", "--rows", "5", "--out", str(tmp_path / "g.parquet")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown output format" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_parquet_file_with_names_that_are_not_utf8_is_one_line(tmp_path, src, served_model_dir, capsys):
    """Found by `make soak`: a damaged footer raised UnicodeDecodeError from pyarrow (exit 1)."""
    data = _as_parquet(src, tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "bad.parquet").write_bytes(data.replace(b"region", b"\xffegion"))
    assert score(served_model_dir, tmp_path / "bad.parquet", "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    assert "not a readable Parquet file" in one_error_line(capsys)
    assert not (tmp_path / "s.csv").exists()


def test_a_parquet_file_with_a_duplicated_column_is_one_line(tmp_path, src, served_model_dir, capsys):
    table = pq.read_table(_as_parquet(src, tmp_path / "ok.parquet"))
    pq.write_table(table.append_column("fit_score", table.column("fit_score")), tmp_path / "dup.parquet")
    assert score(served_model_dir, tmp_path / "dup.parquet", "--out", tmp_path / "s.csv") == EXIT_BAD_INPUT
    assert "fit_score" in one_error_line(capsys)
    assert not (tmp_path / "s.csv").exists()


def test_ctrl_c_turned_into_an_import_error_is_still_an_interruption(tmp_path, src, monkeypatch, capsys):
    """onnxruntime's import turns a Ctrl-C during it into ImportError('initialization failed')
    raised from the KeyboardInterrupt: the run says it was interrupted, in one line, exit 130."""
    from stepdown_ml import serving
    from stepdown_ml.cli import EXIT_INTERRUPTED

    def interrupted_import(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as stop:
            raise ImportError("initialization failed") from stop

    monkeypatch.setattr(serving, "load_model", interrupted_import)
    assert main(["score", str(src), "--out", str(tmp_path / "s.csv")]) == EXIT_INTERRUPTED
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["stepdown-ml score: interrupted; no output written"]
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("at", [1, 2])
def test_an_interrupt_as_a_temporary_output_is_created_leaves_nothing(tmp_path, monkeypatch, at):
    """Ctrl-C just after a temporary output file comes into existence: it is removed with the rest
    (mkstemp named it only once it existed, so the second one was left behind)."""
    from stepdown_ml.core import tables

    real_close, closed = os.close, []

    def close_then_interrupt(fd):
        real_close(fd)
        closed.append(fd)
        if len(closed) == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(tables.os, "close", close_then_interrupt)
    outputs = (tmp_path / "s.csv", tmp_path / "s.rejects.csv")
    with pytest.raises(KeyboardInterrupt), tables.atomic_paths(*outputs):
        pass
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    """`stepdown-ml` imports its modules (pyarrow, onnxruntime…) after the entry point starts."""
    import builtins

    from stepdown_ml import __main__ as entry

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "stepdown_ml.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert entry.run() == 130
    assert capsys.readouterr().err.splitlines() == ["stepdown-ml: interrupted; no output written"]


def test_a_stop_whose_exception_python_dropped_still_keeps_outputs_out(
    tmp_path, candidates, served_model_dir, monkeypatch, capsys
):
    """Python drops an exception raised in a weakref callback (importlib's module locks have
    them): a Ctrl-C handled there let a run finish and write its outputs with exit 0. The
    handler also notes the stop, and outputs are not put in place once one is noted."""
    import contextlib

    from stepdown_ml.cli import EXIT_INTERRUPTED

    write_csv(candidates.head(3000), tmp_path / "in.csv")
    real = batch._Outputs.finish

    def finish_after_a_dropped_interrupt(self):
        with contextlib.suppress(KeyboardInterrupt):  # as Python does in a weakref callback
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        return real(self)

    monkeypatch.setattr(batch._Outputs, "finish", finish_after_a_dropped_interrupt)
    args = ["score", str(tmp_path / "in.csv"), "--out", str(tmp_path / "s.csv")]
    assert main([*args, "--model-dir", str(served_model_dir)]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().splitlines() == [
        "stepdown-ml score: interrupted; no output written"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_python_m_exits_130_after_a_ctrl_c_raised_in_exec_code(tmp_path):
    """A Ctrl-C that lands in code run by exec() of a string (a dataclass's generated
    methods, while a module loads) and is handled: ``python -m stepdown_ml`` still exits 130,
    not by SIGINT, which CPython did at exit because it had noted the exception as unhandled."""
    import subprocess
    import sys
    import textwrap

    (tmp_path / "interrupted_in_exec.py").write_text(
        textwrap.dedent(
            """
            import runpy
            import stepdown_ml.cli as cli

            def parser_then_interrupted():
                exec("raise KeyboardInterrupt")

            cli.build_parser = parser_then_interrupted
            runpy.run_module("stepdown_ml", run_name="__main__", alter_sys=True)
            """
        )
    )
    command = [sys.executable, "-m", "interrupted_in_exec"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.stderr.splitlines() == ["stepdown-ml: interrupted; no output written"]
    assert done.returncode == 130


def test_a_sigterm_while_the_command_line_loads_is_one_line():
    """SIGTERM before the command line has loaded (its first tenths of a second) ended the
    process silently by the signal; it is one line and exit 143, as later on."""
    import subprocess
    import sys
    import textwrap

    program = textwrap.dedent(
        """
        import builtins, os, signal, sys
        from stepdown_ml import __main__ as entry

        real_import = builtins.__import__

        def terminated(name, *args, **kwargs):
            if name == "stepdown_ml.cli":
                os.kill(os.getpid(), signal.SIGTERM)
            return real_import(name, *args, **kwargs)

        builtins.__import__ = terminated
        sys.exit(entry.run())
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.stderr.splitlines() == ["stepdown-ml: terminated (SIGTERM); no output written"]
    assert done.returncode == 143


def test_a_stop_python_dropped_while_the_command_line_loads_stops_the_run(
    tmp_path, candidates, served_model_dir, monkeypatch, capsys
):
    """A Ctrl-C whose exception Python dropped (in importlib's weakref callback) while the
    command line's modules load: the run that follows stops before it writes anything."""
    import builtins
    import contextlib
    import sys

    from stepdown_ml import __main__ as entry

    write_csv(candidates.head(50), tmp_path / "in.csv")
    real_import = builtins.__import__

    def import_after_a_dropped_interrupt(name, *args, **kwargs):
        if name == "stepdown_ml.cli":
            with contextlib.suppress(KeyboardInterrupt):
                signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        return real_import(name, *args, **kwargs)

    argv = ["stepdown-ml", "score", str(tmp_path / "in.csv"), "--out", str(tmp_path / "s.csv")]
    monkeypatch.setattr(sys, "argv", [*argv, "--model-dir", str(served_model_dir)])
    monkeypatch.setattr(builtins, "__import__", import_after_a_dropped_interrupt)
    assert entry.run() == 130
    monkeypatch.undo()
    assert capsys.readouterr().err.splitlines() == ["stepdown-ml score: interrupted; no output written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_stop_while_the_handlers_are_put_back_leaves_them_all_back(
    tmp_path, src, served_model_dir, monkeypatch
):
    """A Ctrl-C that lands as the run puts the previous handlers back: every one is back, no stop
    stays noted, and the next run in the same process is not stopped by it."""
    from stepdown_ml.core import stops

    real_signal, fired = signal.signal, []

    def put_back_then_interrupted(signum, handler):
        previous = real_signal(signum, handler)
        if handler is signal.SIG_DFL and not fired:  # SIGTERM's default, put back first
            fired.append(signum)
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # ours still: notes and raises
        return previous

    monkeypatch.setattr(signal, "signal", put_back_then_interrupted)
    assert score(served_model_dir, src, "--out", tmp_path / "a.csv") == 0  # its work was done
    monkeypatch.undo()
    assert fired == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert stops.NOTED == []
    assert score(served_model_dir, src, "--out", tmp_path / "b.csv") == 0
    assert (tmp_path / "b.csv").exists()


def test_a_run_in_another_thread_neither_takes_nor_clears_the_main_threads_stop(
    tmp_path, src, served_model_dir
):
    """A service runs the command line in a thread while the main thread's run has a noted stop
    (its exception dropped): the thread's run goes on, and the main thread's still stops."""
    import threading

    from stepdown_ml.core import stops

    codes = []
    with stops.handled():
        stops.NOTED.append(KeyboardInterrupt())
        thread = threading.Thread(
            target=lambda: codes.append(score(served_model_dir, src, "--out", tmp_path / "svc.csv"))
        )
        thread.start()
        thread.join()
        with pytest.raises(KeyboardInterrupt), atomic_paths(tmp_path / "mine.csv") as (tmp,):
            tmp.write_text("mine")
    assert codes == [0]
    assert listing(tmp_path) == ["in.csv", "svc.csv", "svc.rejects.csv"]


def test_outputs_are_locked_in_one_order_whatever_their_roles(tmp_path, monkeypatch):
    """Runs naming the same files as scores and rejects the other way round must not each take
    one lock and be refused the other: both lock in the same order."""
    from stepdown_ml.core import tables

    real_lock, order = tables._lock, []

    def recorded(target):
        order.append(target.name)
        return real_lock(target)

    monkeypatch.setattr(tables, "_lock", recorded)
    for first, second in (("x.csv", "y.csv"), ("y.csv", "x.csv")):
        with atomic_paths(tmp_path / first, tmp_path / second):
            pass
    assert order == ["x.csv", "y.csv", "x.csv", "y.csv"]


def test_leftovers_that_cannot_be_listed_or_removed_do_not_stop_the_run(
    tmp_path, src, served_model_dir, monkeypatch
):
    """A drop-box folder (writable, not listable) or another user's file in a shared sticky
    folder: the clean-up is best effort, the run goes on."""
    from stepdown_ml.core import tables

    (tmp_path / ".s.csv.0123abcd.part").write_text("another user's")
    real_unlink = Path.unlink

    def not_permitted(path, missing_ok=False):
        if path.name == ".s.csv.0123abcd.part":
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", not_permitted)
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == 0
    monkeypatch.undo()
    assert ".s.csv.0123abcd.part" in listing(tmp_path)

    def not_listable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(tables.os, "scandir", not_listable)
    assert score(served_model_dir, src, "--out", tmp_path / "t.csv") == 0


@pytest.mark.parametrize("renamed", ["s.csv", "s.rejects.csv"])
def test_a_stop_as_an_output_is_renamed_puts_every_old_output_back(
    tmp_path, src, served_model_dir, monkeypatch, renamed
):
    """A Ctrl-C that lands as a rename returns (raised before the rename is recorded): the old
    pair is put back, never new scores beside old rejects."""
    from stepdown_ml.cli import EXIT_INTERRUPTED
    from stepdown_ml.core import tables

    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == 0
    before = {name: (tmp_path / name).stat().st_ino for name in ("s.csv", "s.rejects.csv")}
    write_csv(pd.read_csv(src).head(10), tmp_path / "ten.csv")
    real_replace, sent = os.replace, []

    def replace_then_interrupted(source, target):
        real_replace(source, target)
        if Path(target).name == renamed and not sent:
            sent.append(target)
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    monkeypatch.setattr(tables.os, "replace", replace_then_interrupted)
    assert score(served_model_dir, tmp_path / "ten.csv", "--out", tmp_path / "s.csv") == EXIT_INTERRUPTED
    monkeypatch.undo()
    assert sent
    assert {name: (tmp_path / name).stat().st_ino for name in before} == before
    assert listing(tmp_path) == ["in.csv", "s.csv", "s.rejects.csv", "ten.csv"]


def test_a_stop_held_back_while_a_rename_fails_is_still_a_stop(tmp_path, src, served_model_dir, monkeypatch):
    """Ctrl-C as the scores are renamed, then the rejects' rename fails: the old pair comes
    back and the run is interrupted (130), not failed with the I/O error (2)."""
    from stepdown_ml.cli import EXIT_INTERRUPTED
    from stepdown_ml.core import tables

    (tmp_path / "s.csv").write_text("old scores\n")
    (tmp_path / "s.rejects.csv").write_text("old rejects\n")
    real_replace = os.replace

    def interrupted_then_failing(source, target):
        if Path(target).name == "s.rejects.csv" and ".part" in str(source):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(source, target)
        if Path(target).name == "s.csv" and ".part" in str(source):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    monkeypatch.setattr(tables.os, "replace", interrupted_then_failing)
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == EXIT_INTERRUPTED
    monkeypatch.undo()
    assert (tmp_path / "s.csv").read_text() == "old scores\n"
    assert (tmp_path / "s.rejects.csv").read_text() == "old rejects\n"
    assert listing(tmp_path) == ["in.csv", "s.csv", "s.rejects.csv"]


def test_a_block_whose_end_never_ran_leaves_no_trace_on_the_next_run(tmp_path, src, served_model_dir):
    """A stop can land as a block ends, before it puts the handlers back (Python checks for
    signals on entering __exit__): the handlers stay ours and the stop stays noted. The next
    run is not stopped by it, and leaves Python's default handlers behind, not ours."""
    from stepdown_ml.core import stops

    stops.handled().__enter__()  # never ended
    stops.NOTED.append(KeyboardInterrupt())
    assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert stops.NOTED == []


def test_a_stop_from_the_callers_own_handler_while_ours_are_put_back_reaches_the_caller(monkeypatch):
    """The caller's SIGTERM handler raises as it is put back (its signal was pending): the
    caller gets its exception; every handler is back."""
    from stepdown_ml.core import stops

    class Shutdown(KeyboardInterrupt):
        pass

    def callers(signum, frame):
        raise Shutdown

    real_signal = signal.signal
    real_signal(signal.SIGTERM, callers)
    fired = []

    def put_back_then_signalled(signum, handler):
        previous = real_signal(signum, handler)
        if handler is callers and not fired:
            fired.append(signum)
            handler(signum, None)
        return previous

    try:
        with pytest.raises(Shutdown), stops.handled():
            monkeypatch.setattr(signal, "signal", put_back_then_signalled)
        monkeypatch.undo()
        assert fired == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is callers
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        real_signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_stop_as_a_lone_output_is_renamed_keeps_the_new_file(tmp_path, monkeypatch):
    """One output alone has nothing to be paired with: a stop that lands as it is renamed leaves
    it in place, complete, and stays noted for the rest of the run (it was deleted, old and new
    both gone)."""
    from stepdown_ml.core import stops, tables

    (tmp_path / "t.csv").write_text("old\n")
    real_replace = os.replace

    def replace_then_interrupted(source, target):
        real_replace(source, target)
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    with stops.handled():
        monkeypatch.setattr(tables.os, "replace", replace_then_interrupted)
        with atomic_paths(tmp_path / "t.csv") as (tmp,):
            tmp.write_text("new\n")
        monkeypatch.undo()
        with pytest.raises(KeyboardInterrupt):
            stops.raise_noted()  # the run's next write stops
    assert listing(tmp_path) == ["t.csv"]
    assert (tmp_path / "t.csv").read_text() == "new\n"


def test_a_run_in_another_thread_does_not_take_the_main_threads_stop_as_it_renames(tmp_path, monkeypatch):
    """A Ctrl-C noted for the main thread while a service thread renames its two outputs is
    not that thread's: its outputs go in place."""
    import threading

    from stepdown_ml.core import stops, tables

    real_replace, raised = os.replace, []

    def replace_while_the_main_thread_is_stopped(source, target):
        real_replace(source, target)
        stops.NOTED.append(KeyboardInterrupt())  # as the main thread's handler notes it

    def service() -> None:
        try:
            with atomic_paths(tmp_path / "s.csv", tmp_path / "s.rejects.csv") as temps:
                for tmp in temps:
                    tmp.write_text("new\n")
        except BaseException as exc:  # the test reports what the thread got
            raised.append(exc)

    monkeypatch.setattr(tables.os, "replace", replace_while_the_main_thread_is_stopped)
    try:
        thread = threading.Thread(target=service)
        thread.start()
        thread.join()
    finally:
        stops.NOTED.clear()
    assert raised == []
    assert [(tmp_path / n).read_text() for n in ("s.csv", "s.rejects.csv")] == ["new\n", "new\n"]


def test_a_second_stop_while_old_outputs_are_put_back_does_not_mix_the_pair(tmp_path, monkeypatch):
    """Ctrl-C as the rejects are renamed, then SIGTERM as the old rejects are put back: both old
    files are back all the same, and the first stop is raised."""
    from stepdown_ml.core import stops, tables

    for name in ("s.csv", "s.rejects.csv"):
        (tmp_path / name).write_text(f"old {name}\n")
    real_replace, sent = os.replace, []

    def replace_then_stopped(source, target):
        real_replace(source, target)
        if Path(target).name == "s.rejects.csv" and len(sent) < 2:
            signum = (signal.SIGINT, signal.SIGTERM)[len(sent)]
            sent.append(signum)
            signal.getsignal(signum)(signum, None)

    with pytest.raises(KeyboardInterrupt), stops.handled():
        monkeypatch.setattr(tables.os, "replace", replace_then_stopped)
        with atomic_paths(tmp_path / "s.csv", tmp_path / "s.rejects.csv") as temps:
            for tmp in temps:
                tmp.write_text("new\n")
    monkeypatch.undo()
    assert sent == [signal.SIGINT, signal.SIGTERM]
    assert listing(tmp_path) == ["s.csv", "s.rejects.csv"]
    assert [(tmp_path / n).read_text() for n in ("s.csv", "s.rejects.csv")] == [
        "old s.csv\n",
        "old s.rejects.csv\n",
    ]


def test_a_stop_while_our_handlers_are_set_puts_the_callers_back(
    tmp_path, src, served_model_dir, monkeypatch
):
    """SIGTERM as the run sets its handlers (ours for SIGTERM is set, SIGINT's not yet): the run
    stops with 143, the caller's handlers are back, and no stop stays noted."""
    from stepdown_ml.core import stops

    def callers(signum, frame):
        pass

    real_signal, fired = signal.signal, []
    real_signal(signal.SIGTERM, callers)

    def set_then_terminated(signum, handler):
        previous = real_signal(signum, handler)
        if handler is stops._terminate and not fired:
            fired.append(signum)
            handler(signum, None)
        return previous

    try:
        monkeypatch.setattr(signal, "signal", set_then_terminated)
        assert score(served_model_dir, src, "--out", tmp_path / "s.csv") == EXIT_TERMINATED
        monkeypatch.undo()
        assert fired == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is callers
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert stops.NOTED == []
    finally:
        real_signal(signal.SIGTERM, signal.SIG_DFL)
    assert listing(tmp_path) == ["in.csv"]


def test_a_ctrl_c_after_the_command_ended_keeps_its_exit_code(monkeypatch, capsys):
    """The entry point's handlers are put back after the command returned; a Ctrl-C that lands
    then (Python's own handler, back already) does not turn a finished run into "interrupted"."""
    from stepdown_ml import __main__ as entry
    from stepdown_ml import cli
    from stepdown_ml.core import stops

    real_exit = stops.handled.__exit__

    def exit_then_interrupted(self, *exc_info):
        real_exit(self, *exc_info)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "main", lambda handle_stops: 0)
    monkeypatch.setattr(stops.handled, "__exit__", exit_then_interrupted)
    assert entry.run() == 0
    assert capsys.readouterr().err == ""


_EXIT_NOW = """
import atexit, sys, threading, time
from stepdown_ml.__main__ import exit_now
atexit.register(lambda: sys.stderr.write("handler;"))
if sys.stdout is not None:
    print("buffered;", end="")
sys.stderr.write("said;")
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread;", end=""))).start()
exit_now(3)
"""


@pytest.mark.parametrize("case", ["plain", "thread", "stdout closed"])
def test_the_entry_point_exits_with_its_code_its_handlers_run_and_its_output_flushed(case):
    """`stepdown-ml` ends without tearing the interpreter down (exit_now): the code, the exit
    handlers and buffered output are kept; a Python thread still running is waited for; a
    process started with its stdout closed still exits with its code."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as usual
    command = [sys.executable, "-c", _EXIT_NOW, case]
    if case == "stdout closed":
        command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 3
    expected = {"plain": "buffered;", "thread": "buffered;thread;", "stdout closed": ""}
    assert done.stdout == expected[case]
    assert done.stderr == "said;handler;"


def test_the_entry_point_exits_normally_under_a_profiler(tmp_path):
    """`python -m cProfile -o FILE -m stepdown_ml ...` gets its profile written (the profiler
    writes it after the module returns: exit_now leaves the exit to Python there)."""
    import subprocess
    import sys

    profile = tmp_path / "p.out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(profile),
            "-m",
            "stepdown_ml",
            "generate",
            "--rows",
            "50",
        ]
        + ["--out", str(tmp_path / "g.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0
