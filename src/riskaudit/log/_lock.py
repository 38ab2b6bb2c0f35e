"""One writer per log: an exclusive ``flock`` on ``<log>.lock`` holding the owner's pid.

``flock`` locks belong to an open file description, so a second open of the same lock
file conflicts even inside one process; ``fcntl.lockf`` would not (one process can take
it twice, and closing any other descriptor of the file drops it). The lock file is
never deleted: deleting it would let two writers lock two different inodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from riskaudit.errors import AuditLockedError, AuditStorageError
from riskaudit.format import FILE_MODE


class WriterLock:
    """The held lock; :meth:`release` drops it, :meth:`abandon` closes a fork's copy."""

    def __init__(self, path: Path, fallback_dir: Path | None = None) -> None:
        self.path = path
        fd = self._open(path, fallback_dir)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise AuditLockedError(str(path), holder) from None
        except OSError as exc:
            os.close(fd)
            raise AuditStorageError(f"cannot lock {path}: {exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is a courtesy for error messages; the flock is the lock
        self._fd: int | None = fd

    def _open(self, path: Path, fallback_dir: Path | None) -> int:
        """Open the lock file; on a read-only or unwritable volume, lock an existing
        file read-only (flock needs no write access) or fall back to the spool."""
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            first = exc
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass
        if fallback_dir is not None:
            alt = fallback_dir / path.name
            try:
                fd = os.open(alt, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            except OSError:
                pass
            else:
                self.path = alt
                return fd
        raise AuditStorageError(f"cannot open lock file {path}: {first}") from first

    def lost(self) -> bool:
        """True if the lock file we hold is no longer the one at its path (deleted or
        replaced): another writer could then lock the new file."""
        if self._fd is None:
            return True
        try:
            mine = os.fstat(self._fd)
            there = os.stat(self.path)
        except OSError:
            return True
        return (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def abandon(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking.

        Unlocking would drop the parent's lock too (the description is shared).
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
