"""The durable destinations: the primary file and the spool directory.

Both receive the same chained bytes (the writer chains before it chooses where bytes
go, so the chain survives every fallback), and both are written the same way: append
at the known end, sync, and on any error truncate back to the last synced offset so a
half-written batch never stays behind a good one. If even the truncate fails, the torn
tail is found and cut aside the next time the file is opened.

Spool files are named ``<log name>.spool-<first seq, 20 digits>.jsonl`` so several logs
can share one spool directory and a directory listing sorts them in ``seq`` order.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from riskaudit.log._codec import split_head
from riskaudit.log._files import FILE_MODE, ensure_dir, fsync_dir, write_durably
from riskaudit.log._resume import ChainHead, Repair, cut_torn_tail, find_head

#: errno values that mean "this volume cannot take writes now", not a bug of ours.
STORAGE_ERRORS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT}
)


class AppendFile:
    """An append-only file we own: its descriptor, identity and durable length."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.offset = 0
        self.ident: tuple[int, int] | None = None

    @property
    def is_open(self) -> bool:
        return self.fd is not None

    def open(self, *, create: bool = True) -> bool:
        """Open for appending (creating it, and its directory, if asked); return
        whether it was created. Raises OSError."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        created = False
        if create:
            ensure_dir(self.path.parent)
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
                created = True
            except FileExistsError:
                fd = os.open(self.path, flags)
        else:
            fd = os.open(self.path, flags)
        self._adopt(fd)
        if created:
            fsync_dir(self.path.parent)
        return created

    def _adopt(self, fd: int) -> None:
        self.close()
        st = os.fstat(fd)
        self.fd = fd
        self.offset = st.st_size
        self.ident = (st.st_dev, st.st_ino)

    def head(self) -> ChainHead:
        assert self.fd is not None
        return find_head(self.fd)

    def repair(self, head: ChainHead) -> Repair:
        """Cut a torn tail aside (kept next to the file) and truncate to the head."""
        assert self.fd is not None
        repaired = cut_torn_tail(self.fd, self.path, head)
        self.offset = head.good_size
        return repaired

    def write(self, chunks: list[bytes]) -> None:
        """Append durably, or raise OSError with the file truncated back."""
        if self.fd is None:
            raise OSError(errno.EBADF, f"{self.path} is not open")
        try:
            write_durably(self.fd, chunks, self.offset)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.offset)
            raise
        self.offset += sum(len(c) for c in chunks)

    def reset(self) -> None:
        """Empty the file (after its content was saved or is held elsewhere)."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.fsync(self.fd)
        self.offset = 0

    def read_all(self) -> bytes:
        """Everything written so far, through the open descriptor (even if unlinked)."""
        return self.read_range(0, self.offset)

    def shrunk(self) -> int | None:
        """The file's size if it is smaller than what we wrote (``copytruncate`` or a
        cut), else None: the next append would land at its new end."""
        if self.fd is None:
            return None
        size = os.fstat(self.fd).st_size
        return size if size < self.offset else None

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` through the open descriptor."""
        assert self.fd is not None
        parts = []
        pos = start
        while pos < end:
            block = os.pread(self.fd, min(1 << 22, end - pos), pos)
            if not block:
                break
            parts.append(block)
            pos += len(block)
        return b"".join(parts)

    def first_record(self) -> tuple[int, bytes] | None:
        """(seq, line) of the file's first record, or None for an empty file."""
        if self.fd is None:
            return None
        line = os.pread(self.fd, 1 << 16, 0).split(b"\n", 1)[0]
        head = split_head(line)
        return None if head is None else (head[0], line)

    def identity(self) -> str:
        """``ok``, ``deleted`` (no links left) or ``replaced`` (the path names another
        file, or nothing: renamed away, as logrotate does)."""
        if self.fd is None:
            return "ok"
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            return "deleted"
        try:
            ps = os.stat(self.path)
        except FileNotFoundError:
            return "replaced"
        return "ok" if (ps.st_dev, ps.st_ino) == self.ident else "replaced"

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget(self) -> None:
        """In a forked child: close our copy of the descriptor."""
        self.close()


@dataclass(frozen=True, slots=True)
class SpoolFile:
    path: Path
    first_seq: int


class Spool:
    """The spool directory of one log (``RISK_AUDIT_SPOOL_DIR``), on another volume."""

    def __init__(self, directory: Path, log_name: str) -> None:
        self.directory = directory
        self.prefix = f"{log_name}.spool-"
        self.current: AppendFile | None = None

    def files(self) -> list[SpoolFile]:
        """This log's spool files in ``seq`` order (empty if the directory is missing)."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        out = []
        for name in names:
            if name.startswith(self.prefix) and name.endswith(".jsonl"):
                digits = name[len(self.prefix) : -len(".jsonl")]
                if digits.isdigit():
                    out.append(SpoolFile(self.directory / name, int(digits)))
        return out

    def write(self, chunks: list[bytes], first_seq: int) -> None:
        """Append durably to the current spool file (a new one per episode)."""
        if self.current is None:
            f = AppendFile(self.directory / f"{self.prefix}{first_seq:020d}.jsonl")
            f.open(create=True)
            self.current = f
        self.current.write(chunks)

    def end_episode(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def delete(self, files: list[SpoolFile]) -> None:
        """Remove replayed spool files (only after the primary has fsynced them)."""
        self.end_episode()
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.path)
        with contextlib.suppress(OSError):
            fsync_dir(self.directory)


def records_after(path: Path, after_seq: int) -> list[bytes]:
    """Complete record lines (with ``\\n``) of a file whose ``seq`` is above ``after_seq``.

    A torn last line (no newline) is not a record and is left out.
    """
    data = path.read_bytes()
    out = []
    for line in data.split(b"\n")[:-1]:  # the last piece is b"" or a torn line
        head = split_head(line)
        if head is not None and head[0] > after_seq:
            out.append(line + b"\n")
    return out


def head_of_file(path: Path) -> tuple[int, bytes] | None:
    """(seq, hash) of the last complete record of a file, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        head = find_head(fd)
    except Exception:
        return None
    finally:
        os.close(fd)
    return (head.last_seq, head.last_hash) if head.last_seq else None
