"""Small durable-file helpers, the one place where ``OSError`` becomes AuditStorageError.

The recipe is litestream's and etcd's: write to a temporary file, fsync it, rename it
into place, fsync the directory. A file is not durable until the directory entry that
names it is.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from riskaudit._native import write_durably as native_write_durably
from riskaudit.errors import AuditStorageError
from riskaudit.format._names import temp_path

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


_DSYNC: int | None = getattr(os, "RWF_DSYNC", None)
_IOV_MAX = 512


def dsync_works() -> bool:
    """Whether ``RWF_DSYNC`` is still believed to work here (the core's turns ask)."""
    return _DSYNC is not None


def write_durably(fd: int, chunks: list[bytes], offset: int) -> None:
    """Write ``chunks`` at ``offset`` (the end of the file) and make them durable.

    One ``pwritev2(..., RWF_DSYNC)`` does the write and the data sync in a single
    system call, so the writer thread gives up the GIL once per batch instead of twice. Where
    the kernel or file system refuses the flag, or on a short write, it falls back to
    ``write`` + ``fsync``.
    """
    global _DSYNC
    if _DSYNC is not None and len(chunks) <= _IOV_MAX:
        try:
            # The core's pwritev2: the same call through the C library, but the writer
            # takes the GIL back without waiting out a producer's switch interval.
            written = native_write_durably(fd, chunks, offset, True)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            _DSYNC = None
        else:
            total = sum(len(c) for c in chunks)
            if written == total:
                return
            write_all(fd, b"".join(chunks)[written:])
            os.fsync(fd)
            return
    for chunk in chunks:
        write_all(fd, chunk)
    os.fsync(fd)


def atomic_write(
    path: Path, data: bytes, *, mode: int | None = None, owner: os.stat_result | None = None
) -> None:
    """Create ``path`` with exactly ``data``, durably, or leave nothing behind; with
    ``mode`` and ``owner`` (a file's stat), the new file has them before it is renamed."""
    tmp = temp_path(path, f"-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            if owner is not None and (owner.st_uid, owner.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, owner.st_uid, owner.st_gid)
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


def file_signature(path: Path) -> tuple[int, int, int, int] | None:
    """What tells that a small file changed without reading it: inode (a rename over it
    changes it), size, and modification and change times; None when it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
