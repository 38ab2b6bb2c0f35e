"""Small durable-file helpers, the one place where ``OSError`` becomes AuditStorageError.

The recipe is litestream's and etcd's: write to a temporary file, fsync it, rename it
into place, fsync the directory. A file is not durable until the directory entry that
names it is.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from riskaudit.errors import AuditStorageError

FILE_MODE = 0o640
DIR_MODE = 0o750


def fsync_dir(directory: Path) -> None:
    """Make a created, renamed or removed directory entry durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(directory: Path) -> None:
    """Create the directory (mode 0750) and its parents, fsyncing each new entry."""
    missing: list[Path] = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(new, DIR_MODE)
            fsync_dir(new.parent)
    except OSError as exc:
        raise AuditStorageError(f"cannot create log directory {directory}: {exc}") from exc


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (short writes happen on full disks)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: Path, data: bytes) -> None:
    """Create ``path`` with exactly ``data``, durably, or leave nothing behind."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise AuditStorageError(f"cannot write {path}: {exc}") from exc
