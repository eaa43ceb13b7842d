"""Reading and writing the project's CSV files: clear errors in, atomic and safe out."""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from stepdown_ml.core import stops
from stepdown_ml.core.schema import ContractError

if TYPE_CHECKING:
    import pandas as pd

# A spreadsheet reads a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
# The same set as a regular expression, for Arrow and Spark kernels.
FORMULA_PATTERN = "^[" + "".join(FORMULA_PREFIXES).replace("-", "\\-") + "]"


# Output formats, chosen by the end of the file name (any case).
OUTPUT_FORMATS = {".csv.gz": "csv.gz", ".csv": "csv", ".parquet": "parquet"}


def output_format(path: Path | str, allowed: tuple[str, ...] = ("csv", "csv.gz", "parquet")) -> str:
    """The format a file name asks for (``csv``, ``csv.gz`` or ``parquet``).

    Raises:
        ContractError: the name ends in none of the allowed extensions.
    """
    name = Path(path).name.lower()
    for suffix, fmt in OUTPUT_FORMATS.items():
        if name.endswith(suffix) and fmt in allowed:
            return fmt
    wanted = ", ".join(s for s, f in OUTPUT_FORMATS.items() if f in allowed)
    raise ContractError(f"{path}: unknown output format (the name must end in {wanted})")


def _kind_of_name(path: Path) -> str | None:
    name = path.name.lower()
    return next((fmt for suffix, fmt in OUTPUT_FORMATS.items() if name.endswith(suffix)), None)


def _kind_of_file(path: Path) -> str | None:
    """What an existing file holds, by its first bytes: ``parquet``, ``csv.gz`` or ``csv``."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PAR1":
        return "parquet"
    return "csv.gz" if head.startswith(b"\x1f\x8b") else "csv"


def stem_of(path: Path | str) -> str:
    """The file name without its format extension: ``scores.2024`` for ``scores.2024.csv.gz``."""
    name = Path(path).name
    for suffix in OUTPUT_FORMATS:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_paths(inputs: dict[str, Path | str | None], outputs: dict[str, Path | str | None]) -> None:
    """Refuse outputs that would destroy an input or each other, before anything is read.

    Paths are compared after resolving links. An output may not be an input, another output,
    an existing directory or other non-file, or an existing file of another kind than its
    name says (a Parquet or gzip file under a ``.csv`` name, say).

    Args:
        inputs: role -> path (e.g. ``{"input": ...}``); None entries are skipped.
        outputs: role -> path (e.g. ``{"--out": ..., "--rejects": ...}``).

    Raises:
        ContractError: naming the two roles that collide.
    """
    resolved_in = {role: Path(p).resolve() for role, p in inputs.items() if p is not None}
    seen: dict[Path, str] = {}
    for role, path in outputs.items():
        if path is None:
            continue
        target = Path(path).resolve()
        if target.is_dir():
            raise ContractError(f"{path}: {role} is a directory, not a file")
        if target.exists() and not target.is_file():
            raise ContractError(f"{path}: {role} exists and is not a regular file")
        held, named = _kind_of_file(target), _kind_of_name(target)
        if held is not None and named is not None and held != named:
            raise ContractError(f"{path}: {role} holds a {held} file; refusing to replace it with {named}")
        for in_role, source in resolved_in.items():
            if target == source:
                raise ContractError(f"{path}: {role} is the {in_role} file; refusing to overwrite it")
        if target in seen:
            raise ContractError(f"{path}: {role} is the same file as {seen[target]}")
        seen[target] = role


def neutralize(value: object) -> object:
    """Prefix a formula-like string with ``'`` so spreadsheets show it as text."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def neutralize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (and column names) cannot act as formulas."""
    import pandas as pd

    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            text = column.astype(object)
            risky = text.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES))
            if risky.any():
                out[name] = text.where(~risky.to_numpy(dtype=bool), "'" + text.astype(str))
    out.columns = [neutralize(c) for c in out.columns]
    return out


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was, so a
    reader never sees a partial file. Folders created for it are removed again.
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: Path | str) -> Iterator[tuple[Path, ...]]:
    """Temporary paths for outputs that belong together, renamed into place together.

    While the block runs, a lock beside each output refuses a second run to any of them
    (:class:`ContractError`); holding them, the run first removes what runs killed while
    writing them left behind (:func:`temporary_name`). On success every temporary file is
    synced and renamed over its target; if one rename fails, the targets already replaced
    get their old files back, so one run's files are never paired with another's. On any
    error the temporary files, and the folders created for them, are removed.
    """
    targets = [Path(p) for p in paths]
    created = _make_parents(targets)
    temps: list[Path] = []
    try:
        _umask()
        with contextlib.ExitStack() as locks:
            # Always in the same order: two runs naming the same outputs in two roles must not
            # each take one lock and be refused the other.
            for target in sorted(targets, key=lambda t: str(t.resolve())):
                locks.enter_context(_lock(target))
            _remove_leftovers(targets)
            for target in targets:
                _new_temp(target, temps)
            yield tuple(temps)
            for tmp in temps:
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                # mkstemp creates 0600; the output gets what a plain open() would give it.
                os.chmod(tmp, 0o666 & ~_umask())
            stops.raise_noted()  # a stop whose exception Python dropped: nothing goes in place
            _replace_together(temps, targets)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise


def _new_temp(target: Path, temps: list[Path]) -> None:
    """Create an empty temporary file beside ``target``, named in ``temps`` before it exists.

    (``tempfile.mkstemp`` names the file only once it exists: a Ctrl-C in between left it
    behind.)
    """
    while True:
        temps.append(temporary_name(target, "part"))
        try:
            os.close(os.open(temps[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            temps.pop()  # another file's name: never ours to remove
            continue
        return


def temporary_name(target: Path, kind: str) -> Path:
    """A new name beside ``target`` for a temporary of the run writing it: ``.<name>.<8 hex>.<kind>``.

    Created only while the run holds ``target``'s lock (:func:`atomic_paths`), so a later
    run holding that lock knows that such names left beside ``target`` belong to a run that
    died (SIGKILL, the OOM killer, a lost node) and removes them, files and folders: all
    but the ``old`` kind, a backup that may hold the only copy of an earlier output.
    """
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.{kind}")


def _remove_leftovers(targets: list[Path]) -> None:
    """Remove the temporaries of ``targets`` (:func:`temporary_name`) that dead runs left.

    One listing per folder. Best effort: in a folder this run may not list (a drop box) or
    files it may not remove (another user's, in a shared sticky folder), what it cannot
    remove stays.
    """
    leftovers: list[Path] = []
    for folder in dict.fromkeys(target.parent for target in targets):
        names = "|".join(re.escape(t.name) for t in targets if t.parent == folder)
        ours = re.compile(rf"\.(?:{names})\.[0-9a-f]{{8}}\.(?:part|parts|part\.unranked)")
        try:
            with os.scandir(folder) as entries:
                leftovers += [Path(entry.path) for entry in entries if ours.fullmatch(entry.name)]
        except OSError:
            continue
    for leftover in leftovers:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


def _make_parents(targets: list[Path]) -> list[Path]:
    """Create the missing parent folders; return them, deepest first."""
    created: list[Path] = []
    for target in targets:
        missing = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir(exist_ok=True)
            created.append(folder)
    return created[::-1]


def _replace_together(temps: list[Path], targets: list[Path]) -> None:
    """Rename each temporary file over its target; on a failure, put back what was there.

    Stops are held back meanwhile (:data:`stops.DEFERRED`): a Ctrl-C cannot cut the renames
    or the putting back short. One that lands meanwhile has the old outputs put back and is
    raised then (in place of the error, should a rename also fail); one output alone has
    nothing to be paired with, so it stays, complete, and the stop stays noted for the rest
    of the run.
    """
    main = threading.current_thread() is threading.main_thread()
    noted = len(stops.NOTED)
    done: list[tuple[Path, Path | None]] = []
    pending: Path | None = None
    if main:
        stops.DEFERRED[0] += 1
    try:
        try:
            for tmp, target in zip(temps, targets, strict=True):
                backup = None
                if len(targets) > 1 and target.exists():
                    backup = pending = temporary_name(target, "old")
                    os.link(target, backup)
                os.replace(tmp, target)
                done.append((target, backup))
                pending = None
            stop = stops.noted_since(noted)
            if len(targets) > 1 and stop is not None:
                raise stop  # landed while they were renamed: the old ones go back
        except BaseException as exc:
            for target, backup in reversed(done):
                if backup is None:
                    target.unlink(missing_ok=True)  # it was not there before this run
                else:
                    os.replace(backup, target)
            stop = stops.noted_since(noted)
            if stop is not None and stops.behind(exc) is None:
                raise stop from exc  # a stop held back meanwhile comes first
            raise
        finally:
            for leftover in [backup for _, backup in done] + [pending]:
                if leftover is not None:
                    leftover.unlink(missing_ok=True)  # a link to the old file, or nothing
    finally:
        if main:
            stops.DEFERRED[0] -= 1


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    """Hold the lock file beside ``target`` (removed again when the block ends).

    A run that opened the file just before its holder removed it would lock a file no
    longer there, beside a third run that locks the new one: the lock counts only if the
    name still leads to the locked file. Stops are held back (:data:`stops.DEFERRED`) from
    creating the file until it is known to be ours, so a Ctrl-C then leaves no lock file
    behind; it is raised once the file is ours to remove.
    """
    import fcntl

    lock_path = target.with_name(f".{target.name}.lock")
    main = threading.current_thread() is threading.main_thread()  # where stops are handled
    noted = len(stops.NOTED)
    while True:
        busy = ours = False
        failed: BaseException | None = None
        if main:
            stops.DEFERRED[0] += 1
        try:
            handle = open(lock_path, "a")  # noqa: SIM115 - closed below, once the stops are back
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                ours = _same_file(lock_path, handle.fileno())
            except BlockingIOError:
                busy = True
            except BaseException:
                handle.close()
                raise
        except BaseException as exc:  # the folder refuses it, say
            failed = exc
        finally:
            if main:
                stops.DEFERRED[0] -= 1
        if failed is not None:
            stop = stops.noted_since(noted)
            if stop is not None:
                raise stop from failed  # the stop comes first, as anywhere else
            raise failed
        try:  # entered before any call: a stop raised from here on finds the file removed
            stop = stops.noted_since(noted)
            if stop is not None:
                raise stop  # landed while the lock was taken
            if busy:
                raise ContractError(f"{target}: another run is writing this output now")
            if not ours:
                continue  # removed by the run that held it: lock the file there now
            yield
        finally:
            if ours:  # never a file another run may hold now
                lock_path.unlink(missing_ok=True)
            handle.close()
        return


def _same_file(path: Path, fd: int) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


@functools.cache
def _umask() -> int:
    # Read once: os.umask can only be read by setting it, which is not thread-safe later on.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    import pandas as pd

    columns = {}
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.api.extensions.ExtensionDtype) and not (
            pd.api.types.is_string_dtype(column.dtype)
        ):
            # pandas-stubs leave None out of na_value's type; pandas accepts any scalar.
            objects = column.to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
            columns[name] = pa.array(objects, from_pandas=True)
        else:
            columns[name] = pa.array(column.to_numpy(), from_pandas=True)
    return pa.table(columns)


def write_csv(frame: pd.DataFrame, path: Path | str) -> None:
    """Write ``frame`` as CSV atomically, formula-like cells neutralized."""
    with atomic_path(path) as tmp:
        write_csv_to(frame, tmp)


def write_csv_to(frame: pd.DataFrame, path: Path | str) -> None:
    """Write ``frame`` as CSV, formula-like cells neutralized, straight to ``path``.

    For a temporary path that the caller renames into place (:func:`atomic_paths`).
    """
    pacsv.write_csv(_arrow_table(neutralize_frame(frame)), path, pacsv.WriteOptions(quoting_style="needed"))


def read_csv_text(path: Path | str) -> pd.DataFrame:
    """Read a whole CSV file with every cell as text (empty cells as ``""``).

    Raises:
        ContractError: one line naming the file (and row) when the file is missing,
            empty, not UTF-8 or not a consistent CSV.
    """
    source = Path(path)
    if not source.is_file():
        raise ContractError(f"{source}: no such file")
    if source.stat().st_size == 0:
        raise ContractError(f"{source}: the file is empty (expected a CSV header row)")
    check_utf8(source)
    with open(source, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ContractError(f"{source}: the file is empty (expected a CSV header row)") from None
        except csv.Error as exc:
            raise ContractError(f"{source}: row 0 (header): not a valid CSV row: {exc}") from None
        rows = []
        try:
            for number, row in enumerate(reader, start=1):
                if len(row) != len(header):
                    raise ContractError(
                        f"{source}: row {number}: expected {len(header)} fields, got {len(row)}"
                    )
                rows.append(row)
        except csv.Error as exc:
            raise ContractError(f"{source}: row {reader.line_num - 1}: not valid CSV: {exc}") from None
    if len(set(header)) != len(header):
        raise ContractError(f"{source}: the header names a column twice")
    import pandas as pd

    data = np.array(rows, dtype=object).reshape(len(rows), len(header))
    return pd.DataFrame(data, columns=header, dtype=object)


def check_utf8(source: Path) -> None:
    """Raise :class:`ContractError` naming the row of the first byte that is not UTF-8."""
    with open(source, "rb") as handle:
        for line_number, line in enumerate(handle):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ContractError(
                    f"{source}: row {line_number}: not UTF-8 text "
                    f"(byte 0x{line[exc.start]:02x} at position {exc.start})"
                ) from None
