"""Atomic file writes: a reader, or a crash, sees the old file or the complete new one.

Every file embedcam writes goes through these helpers: a temporary file in the destination
folder, flushed and fsynced, then ``os.replace``. The parent folder is created when missing.

Temporary files are named ``.<name>.<pid>.<random>.tmp`` and staging folders
``.embedcam-stage.<pid>.<random>.tmp`` after the process that writes them. A process killed
mid-write (``SIGKILL``, a power cut) leaves them behind; the next write into the same folder
removes those whose writer is no longer running (or that are more than a day old, against a
recycled process id), and never a live writer's.

[`atomic_outputs`][embedcam.atomic.atomic_outputs] makes the files of one run all-or-nothing: inside
it, every atomic write into the folder goes to a staging folder, and the files are moved into place
together at the end - on any error (a full disk, ``Ctrl-C``) the staging folder is removed and the
folder keeps its old outputs, complete.

A failed write (an ``OSError`` of the file system: a full disk, no permission) raises
[`DataError`][embedcam.errors.DataError] naming the file and the folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from embedcam.errors import DataError

__all__ = [
    "atomic_outputs",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temporaries",
    "staged_path",
    "temporary_folder",
]

#: Prefix of a staging folder of `atomic_outputs` (inside the output folder).
STAGE_PREFIX = ".embedcam-stage."

#: A temporary file or staging folder older than this is stale even if its pid is running.
STALE_SECONDS = 24 * 3600.0

# ".<name>.<pid>.<random>.tmp": mkstemp/mkdtemp's random part is [a-z0-9_]{8}
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<rand>[a-z0-9_]{6,})\.tmp$")
# the names before the pid was part of them: ".<name>.<random>.tmp", stale after a day
_OLD_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<rand>[a-z0-9_]{8})\.tmp$")

_swept: set[str] = set()


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (another user's process counts as alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove this module's temporary files and staging folders that no writer uses any more.

    Only names of this module's pattern (``.<name>.<pid>.<random>.tmp``) are considered; one is
    removed when process ``pid`` is not running, or when it is older than
    `STALE_SECONDS` (as is one of the older pattern without a pid,
    ``.<name>.<random>.tmp``). A missing or unreadable folder is left alone.

    Args:
        folder: The folder to clean.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None and _OLD_TEMP.match(entry.name) is None:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        alive = m is None or _pid_alive(int(m.group("pid")))
        if alive and age < STALE_SECONDS:
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _sweep_once(folder: Path) -> None:
    key = os.path.abspath(folder)
    if key not in _swept:
        _swept.add(key)
        remove_stale_temporaries(folder)


def _write_error(path: Path, err: OSError) -> DataError:
    what = os.strerror(err.errno) if err.errno else str(err)
    hint = {
        errno.ENOSPC: "free some space there or pick another output folder",
        errno.EDQUOT: "free some space there or pick another output folder",
        errno.EACCES: "check the folder's permissions or pick another output folder",
        errno.EPERM: "check the folder's permissions or pick another output folder",
        errno.EROFS: "pick an output folder on a writable disk",
        errno.ENOTDIR: "a file stands where a folder is needed; pick another output folder",
        errno.EEXIST: "a file stands where a folder is needed; pick another output folder",
    }.get(err.errno or 0, "check the output folder")
    return DataError(
        f"cannot write {str(path)!r} in the folder {str(path.parent)!r}: {what}; {hint}"
    )


# -- all-or-nothing outputs -------------------------------------------------------------------


@dataclass
class _Transaction:
    folder: Path
    stage: Path
    exclude: tuple[Path, ...]
    last: tuple[str, ...]
    files: list[Path] = field(default_factory=list)

    def covers(self, path: Path) -> bool:
        if not path.is_relative_to(self.folder) or path == self.folder:
            return False
        return not any(path.is_relative_to(e) for e in self.exclude)


_ACTIVE: contextvars.ContextVar[tuple[_Transaction, ...]] = contextvars.ContextVar(
    "embedcam_atomic_outputs", default=()
)


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))


def _covering(path: Path) -> _Transaction | None:
    for tx in reversed(_ACTIVE.get()):
        if tx.covers(path):
            return tx
    return None


def _target(path: Path) -> tuple[Path, _Transaction | None]:
    """Where a write of ``path`` goes: its staging copy inside an open transaction, or itself."""
    absolute = _absolute(path)
    tx = _covering(absolute)
    if tx is None:
        return path, None
    return tx.stage / absolute.relative_to(tx.folder), tx


def staged_path(path: str | os.PathLike[str]) -> Path:
    """The file to read for ``path``: its staged copy while `atomic_outputs` holds one.

    Inside [`atomic_outputs`][embedcam.atomic.atomic_outputs], a file written earlier in the same
    run is not in place yet; readers of the run's own outputs (the report embedding a figure) read
    it through this.

    Args:
        path: The file's final path.

    Returns:
        The staged copy when one exists, else ``path``.
    """
    target, tx = _target(Path(path))
    if tx is not None and target.exists():
        return target
    return Path(path)


@contextlib.contextmanager
def atomic_outputs(
    folder: str | os.PathLike[str],
    *,
    exclude: Sequence[str] = (),
    last: Sequence[str] = ("results.json",),
) -> Iterator[Path]:
    """Write the outputs of one run into ``folder`` all-or-nothing.

    Inside the ``with`` block every [`atomic_write`][embedcam.atomic.atomic_write] of a path in
    ``folder`` (outside the ``exclude`` sub-folders) goes to a staging folder
    ``folder/.embedcam-stage.<pid>.*.tmp``; when the block ends without an error the staged files
    are moved into place (names in ``last`` after the others, so ``results.json`` marks a complete
    run), then the staging folder is removed. On any error, ``KeyboardInterrupt`` included, the
    staging folder is removed and the old outputs stay as they were. Nested blocks over a folder
    already covered join the outer block. Folders get the usual permissions of a new folder.

    Args:
        folder: The output folder (created when missing).
        exclude: Sub-folders of ``folder`` written directly (e.g. resumable records).
        last: File names (relative to ``folder``) moved into place last.

    Yields:
        The staging folder (files written there directly are committed too).

    Raises:
        DataError: If the folder cannot be created or written (the message names it).
    """
    root = _absolute(folder)
    outer = _covering(root / "_")
    if outer is not None:
        yield outer.stage / root.relative_to(outer.folder)
        return
    try:
        if root.exists() and not root.is_dir():
            raise DataError(
                f"the output folder {str(root)!r} is a file; pass a folder for the outputs"
            )
        root.mkdir(parents=True, exist_ok=True)
        _sweep_once(root)
        stage = Path(
            tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}.", suffix=".tmp", dir=root)
        )
    except OSError as err:
        raise _write_error(root / STAGE_PREFIX, err) from err
    tx = _Transaction(
        root,
        stage,
        tuple(root / e for e in exclude) + (stage,),
        tuple(last),
    )
    token = _ACTIVE.set((*_ACTIVE.get(), tx))
    try:
        try:
            yield stage
        finally:
            _ACTIVE.reset(token)
        _commit(tx)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _commit(tx: _Transaction) -> None:
    files = sorted(p for p in tx.stage.rglob("*") if p.is_file() or p.is_symlink())
    rel = [p.relative_to(tx.stage) for p in files]
    order = sorted(range(len(rel)), key=lambda i: (rel[i].as_posix() in tx.last, i))
    for i in order:
        dest = tx.folder / rel[i]
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not dest.is_symlink():
                raise IsADirectoryError(errno.EISDIR, f"{dest} is a folder")
            os.replace(files[i], dest)
        except OSError as err:
            raise _write_error(dest, err) from err


def temporary_folder(parent: str | os.PathLike[str], name: str) -> Path:
    """Create an empty folder ``parent/.<name>.<pid>.<random>.tmp`` to build an output in.

    The name follows this module's pattern, so a folder left behind by a killed process is
    removed by [`remove_stale_temporaries`][embedcam.atomic.remove_stale_temporaries] (which runs on
    ``parent`` first).

    Args:
        parent: The folder to create it in (the output's own parent, so that a final
            ``os.replace`` stays on one file system).
        name: The output's name, for readability of the temporary name.

    Returns:
        The new folder.

    Raises:
        DataError: If ``parent`` cannot be written (the message names it).
    """
    root = _absolute(parent)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _sweep_once(root)
        return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=root))
    except OSError as err:
        raise _write_error(root / f".{name}", err) from err


# -- single files ------------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file in ``path``'s folder, then rename it to ``path``.

    The file gets the usual permissions of a new file (``0o666`` less the umask), not
    ``mkstemp``'s 0600; on any error the temporary file is removed and ``path`` is untouched.
    Inside [`atomic_outputs`][embedcam.atomic.atomic_outputs] the file is staged and moved into
    place with the run's other outputs.

    Raises:
        DataError: If the file cannot be written (a full disk, no permission; the message names
            the file and the folder).
    """
    final = Path(path)
    path, _ = _target(final)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_once(path.parent)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        if err.errno is None:  # raised by the caller's ``write``, not by the file system
            raise
        raise _write_error(final, err) from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""

    def write(fh: BinaryIO) -> None:
        fh.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically, streamed to the temporary file."""
    import torch

    atomic_write(path, lambda fh: torch.save(obj, fh))
