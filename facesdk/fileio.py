"""Atomic file writes and inter-process file locks.

Atomic write: a temp file in the same folder, fsync, rename over the target, then fsync of the
folder so the rename itself is durable (POSIX ``rename(2)`` is atomic; the folder fsync makes the
new directory entry survive a power loss, see the Linux ``fsync(2)`` manual: "Calling fsync() does
not necessarily ensure that the entry in the directory containing the file has also reached disk.
For that an explicit fsync() on a file descriptor for the directory is also needed.").
A crash or a full disk leaves either the old file or the new one, never a torn file. This is the one
implementation in facesdk (galleries, model downloads and conversions, benchmark reports and caches, the
MAX7800x database files all write through it); :func:`atomic_path` hands out the temp *path* for writers
that need a file name, and runs an optional ``verify`` (e.g. a sha256 check) before the rename.

File lock: an advisory whole-file lock on ``<target>.lock`` (``flock(2)`` on POSIX, ``msvcrt.locking``
on Windows); the kernel drops it when the holder dies, so a killed process never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_writer",
    "commit_temp",
    "file_lock",
    "fsync_dir",
    "publish_new",
    "stale_temps",
    "temp_beside",
]

#: ``verify(tmp_path)`` runs on the finished temp file before it replaces the target; raising aborts.
Verify = Callable[[Path], None]


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder so a rename inside it is durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """The last step of an atomic write, for writers that manage their own temp file (e.g. a video
    encoder writing ``tmp`` beside ``path``): fsync it, rename it over ``path``, fsync the folder."""
    t, p = Path(tmp), Path(path)
    _fsync_file(t)
    os.replace(t, p)
    fsync_dir(p.parent)
    return p


def publish_new(tmp: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Like :func:`commit_temp`, but never replaces an existing ``path``: the finished temp file is
    hard-linked to ``path`` (``link(2)`` fails if the name exists), so writers in several processes
    that pick names such as ``chunk-000042`` cannot overwrite each other. Returns False when ``path``
    already exists (pick another name); ``tmp`` stays for the caller to remove."""
    t, p = Path(tmp), Path(path)
    _fsync_file(t)
    try:
        os.link(t, p)
    except FileExistsError:
        return False
    fsync_dir(p.parent)
    return True


@contextlib.contextmanager
def temp_beside(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh temp file in ``path``'s folder, removed when the block ends (whatever happened)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=p.name + ".", suffix=suffix, dir=p.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike, *, suffix: str = ".tmp", verify: Verify | None = None
) -> Iterator[Path]:
    """Context manager yielding a temp *path* beside ``path`` that replaces it only on success.

    For writers that need a file name (``np.savez``, ``onnx.save``, a conversion recipe).
    ``verify`` runs on the written, fsynced file first. On any error the temp file is removed
    and ``path`` is left as it was.
    """
    with temp_beside(path, suffix=suffix) as tmp:
        yield tmp
        if verify is not None:
            verify(tmp)
        commit_temp(tmp, path)


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike, *, suffix: str = ".tmp", verify: Verify | None = None
) -> Iterator[BinaryIO]:
    """Context manager yielding a binary file that replaces ``path`` only on success."""
    with atomic_path(path, suffix=suffix, verify=verify) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def stale_temps(path: str | os.PathLike) -> list[Path]:
    """Temp files :func:`atomic_writer` may have left for ``path`` (a writer killed mid-write).

    Only call while holding :func:`file_lock` on ``path``: then no live writer owns them.
    """
    p = Path(path)
    if not p.parent.is_dir():
        return []
    return sorted(q for q in p.parent.glob(p.name + ".*.tmp") if q.is_file())


class LockTimeout(TimeoutError):
    """:func:`file_lock` could not take the lock in time."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = 30.0, poll: float = 0.01) -> Iterator[Path]:
    """Hold an exclusive inter-process lock on ``<path>.lock`` (raises :class:`LockTimeout`)."""
    p = Path(path)
    lp = p.with_name(p.name + ".lock")
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max(float(timeout), 0.0)
    try:
        while True:
            try:
                _lock(fd)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{lp} is locked by another process") from None
                time.sleep(poll)
        try:
            yield lp
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
