"""A model directory is replaced as a whole: a fault at any step leaves the old one loadable.

No training: the "new" model is the committed default model with another doc string in
its ONNX graph (so another version) and another calibration (so other scores).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from stepdown_ml.cli import main
from stepdown_ml.core import config
from stepdown_ml.core import modeldir as md
from stepdown_ml.core.modeldir import MANIFEST_FILE, ModelDirError, write_model_dir
from stepdown_ml.core.schema import CANDIDATE_COLUMNS, names
from stepdown_ml.core.skills import load_vocabulary
from stepdown_ml.core.tables import write_csv
from stepdown_ml.datasets.generate import generate_transitions
from stepdown_ml.serving import Model, predict

DEFAULT = config.PACKAGED_MODEL_DIR
CANDIDATES = generate_transitions(300, seed=31)[names(CANDIDATE_COLUMNS)]


def scores(model_dir: Path) -> np.ndarray:
    return predict(CANDIDATES, model=Model(model_dir))["p_advance"].to_numpy()


OLD_SCORES = scores(DEFAULT)


def new_model_args() -> tuple[bytes, bytes, dict, object, str]:
    """write_model_dir's arguments for a model that differs from the default one."""
    graph = onnx.load(DEFAULT / md.ONNX_FILE)
    graph.doc_string = "another model"
    manifest = json.loads((DEFAULT / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["calibration"] = {"slope": 0.5, "intercept": 0.25}
    return (
        graph.SerializeToString(),
        (DEFAULT / md.SERVING_ONNX_FILE).read_bytes(),
        manifest,
        load_vocabulary(DEFAULT / md.VOCABULARY_FILE),
        (DEFAULT / md.MODEL_CARD_FILE).read_text(encoding="utf-8"),
    )


@pytest.fixture
def old(tmp_path) -> Path:
    """A copy of the committed model, with the plots an earlier run left in it."""
    target = tmp_path / "models" / "m"
    shutil.copytree(DEFAULT, target)
    (target / "plots").mkdir()
    (target / "plots" / "roc.png").write_bytes(b"old plot")
    return target


def assert_old_model_intact(target: Path) -> None:
    model = Model(target)
    assert model.version == Model(DEFAULT).version
    np.testing.assert_array_equal(scores(target), OLD_SCORES)
    assert leftovers(target) == []


def leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def fail_at(monkeypatch, name: str, calls: set[int]) -> None:
    """Make ``os.<name>`` raise ENOSPC at the given (1-based) calls."""
    real = getattr(os, name)
    count = [0]

    def faulty(*args, **kwargs):
        count[0] += 1
        if count[0] in calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, faulty)


def test_a_model_dir_is_replaced_as_a_whole(old):
    from stepdown_ml.core import tables

    mask = os.umask(0o027)
    tables._umask.cache_clear()  # read once per process: this test's umask is not the process's
    try:
        manifest = write_model_dir(old, *new_model_args())
    finally:
        os.umask(mask)
        tables._umask.cache_clear()
    assert Model(old).version == manifest["model_version"] != Model(DEFAULT).version
    assert not np.allclose(scores(old), OLD_SCORES)
    assert not (old / "plots").exists(), "nothing of the old directory is kept"
    assert leftovers(old) == []
    assert (old.stat().st_mode & 0o777) == 0o750, "the directory follows the umask"


def fail_the_manifest_write(monkeypatch) -> None:
    """A full disk when the manifest, the last file of a model directory, is written."""
    real = md.write_json

    def full_disk(payload, path):
        if Path(path).name == MANIFEST_FILE:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(payload, path)

    monkeypatch.setattr(md, "write_json", full_disk)


def test_a_full_disk_at_the_manifest_leaves_the_old_model(old, monkeypatch):
    fail_the_manifest_write(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write_model_dir(old, *new_model_args())
    assert_old_model_intact(old)


@pytest.mark.parametrize("call", [2, 3, 4, 5])
def test_a_failed_file_rename_leaves_the_old_model(old, monkeypatch, call):
    """The files are renamed into place with os.replace: fail once some are."""
    fail_at(monkeypatch, "replace", {call})
    with pytest.raises(OSError, match="No space left"):
        write_model_dir(old, *new_model_args())
    assert_old_model_intact(old)


@pytest.mark.parametrize("call", [1, 2])
def test_a_failure_at_either_directory_rename_leaves_the_old_model(old, monkeypatch, call):
    """Rename 1 moves the old directory aside, rename 2 moves the new one in (then the old comes back)."""
    fail_at(monkeypatch, "rename", {call})
    with pytest.raises(OSError, match="No space left"):
        write_model_dir(old, *new_model_args())
    assert_old_model_intact(old)


def test_a_failure_in_the_last_check_leaves_the_old_model(old):
    def refuse(staging: Path) -> None:
        assert Model(staging).version != Model(old).version
        raise RuntimeError("does not load")

    with pytest.raises(RuntimeError, match="does not load"):
        write_model_dir(old, *new_model_args(), before_swap=refuse)
    assert_old_model_intact(old)


def test_a_stop_whose_exception_python_dropped_leaves_the_old_model(old):
    """A Ctrl-C handled in a weakref callback (Python drops its exception) while a model is
    written: noted, it still keeps the new directory from replacing the old one."""
    import contextlib
    import signal

    from stepdown_ml.core import stops

    def dropped_interrupt(staging: Path) -> None:
        with contextlib.suppress(KeyboardInterrupt):  # as Python does in a weakref callback
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)

    with stops.handled(), pytest.raises(KeyboardInterrupt):
        write_model_dir(old, *new_model_args(), before_swap=dropped_interrupt)
    assert_old_model_intact(old)
    assert stops.NOTED == []  # forgotten once handled


def killed_between_the_renames(target: Path) -> None:
    """What SIGKILL between the two renames leaves: the old directory moved aside, the new one beside it."""
    os.rename(target, target.parent / f".{target.name}.old-0123abcd")
    shutil.copytree(DEFAULT, target.parent / f".{target.name}.tmp-4567ef01")
    (target.parent / f".{target.name}.tmp-4567ef01" / MANIFEST_FILE).unlink()


def test_the_next_write_puts_back_the_model_a_killed_run_moved_aside(old, monkeypatch):
    killed_between_the_renames(old)
    fail_the_manifest_write(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write_model_dir(old, *new_model_args())
    assert_old_model_intact(old)
    monkeypatch.undo()
    manifest = write_model_dir(old, *new_model_args())
    assert Model(old).version == manifest["model_version"]
    assert leftovers(old) == []


def test_leftovers_of_killed_runs_are_removed_but_not_a_running_ones(old):
    shutil.copytree(DEFAULT, old.parent / f".{old.name}.old-0123abcd")
    (old.parent / f".{old.name}.tmp-4567ef01").mkdir()
    (old.parent / f".{old.name}.tmp-4567ef01" / md.ONNX_FILE).write_bytes(b"partial")
    running = old.parent / f".{old.name}.tmp-89abcdef"
    running.mkdir()
    handle = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        manifest = write_model_dir(old, *new_model_args())
    finally:
        os.close(handle)
    assert Model(old).version == manifest["model_version"]
    assert leftovers(old) == [running.name]


def test_a_new_or_empty_directory_is_written(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "new" / "m"):
        manifest = write_model_dir(target, *new_model_args())
        assert Model(target).version == manifest["model_version"]
        assert leftovers(target) == []


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_path_that_is_not_a_model_directory_is_refused_and_kept(tmp_path, kind):
    target = tmp_path / "notes"
    if kind == "file":
        target.write_text("my notes\n")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("my notes\n")
        (target / MANIFEST_FILE).write_text("{}\n")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(ModelDirError, match="not a model directory"):
        write_model_dir(target, *new_model_args())
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_train_refuses_such_a_model_dir_in_one_line_before_training(tmp_path, capsys, kind):
    data = tmp_path / "train.csv"
    write_csv(generate_transitions(300, seed=5), data)
    target = tmp_path / "notes"
    if kind == "file":
        target.write_text("my notes\n")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("my notes\n")
    capsys.readouterr()
    code = main(["train", "--no-track", "--data", str(data), "--model-dir", str(target)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "not a model directory" in err[0], err
    if kind == "file":
        assert target.read_text() == "my notes\n"
    else:
        assert sorted(os.listdir(target)) == ["notes.txt"]


@pytest.mark.parametrize("taken", ["removed", "locked"])
def test_a_staging_folder_another_runs_clean_up_takes_before_its_lock_is_replaced(old, monkeypatch, taken):
    """Between a write's new staging folder and its lock, another run's clean-up may take
    the folder (remove it, or hold its lock to remove it): the write makes another one and
    succeeds, instead of failing or writing into a folder that is gone."""
    real = fcntl.flock
    locked: list[str] = []  # the staging folders a lock was asked for, in order

    def clean_up_first(handle, operation):
        fd = handle if isinstance(handle, int) else handle.fileno()
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name.removesuffix(" (deleted)")
        if name.startswith(f".{old.name}.tmp-"):
            locked.append(name)
            if len(locked) == 1:  # the first staging folder, taken by the other run's clean-up
                if taken == "removed":
                    shutil.rmtree(old.parent / name)
                else:
                    raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")
        return real(handle, operation)

    monkeypatch.setattr(fcntl, "flock", clean_up_first)
    manifest = write_model_dir(old, *new_model_args())
    monkeypatch.undo()
    assert len(set(locked)) == 2, locked  # a second folder, locked before it was written
    assert Model(old).version == manifest["model_version"]
    # The other run's clean-up, simulated here, would remove the folder whose lock it held.
    assert leftovers(old) == ([] if taken == "removed" else locked[:1])
