"""The durable destinations: the primary file and the spool directory.

Both receive the same chained bytes (the writer chains before it chooses where bytes
go, so the chain survives every fallback), and both are written the same way: append
at the end, sync, and only then count the bytes as written (``offset``: the last
offset a successful sync covered — the file's *trusted length*).

A write or sync error *poisons* the file: it is never appended to again. After a failed
fsync Linux may mark the dirty pages clean and report the next fsync as a success
("fsyncgate"), and a failed write may have left nothing, part or all of its bytes, so
nothing past the trusted length can be believed, however it reads. The writer sets a
poisoned primary aside (:func:`set_aside`: renamed, untouched, under a sealed segment
name that ends at its last trusted record) and continues in a new file.

Spool files are named ``<log name>.spool-<first seq, 20 digits>.jsonl`` so several logs
can share one spool directory and a directory listing sorts them in ``seq`` order.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from riskaudit.errors import AuditStorageError
from riskaudit.format import (
    FILE_MODE,
    atomic_write,
    ensure_dir,
    fsync_dir,
    line_hash,
    segment_name,
    split_head,
    spool_file_name,
    spool_file_seq,
    ts_ns_of,
    untrusted_path,
    write_durably,
)
from riskaudit.log._chain_end import ChainHead, Repair, Tail, cut_torn_tail, find_head


class Identity(StrEnum):
    """The open file against its path."""

    OK = "ok"
    DELETED = "deleted"  # no links left: the writer copies it back from its handle
    REPLACED = "replaced"  # the path names another file, or nothing (renamed away)


class AppendFile:
    """An append-only file we own: its descriptor, identity and durable length."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.offset = 0
        self.ident: tuple[int, int] | None = None
        #: Why the file may no longer be appended to (a write or sync failed), or None.
        self.poisoned: str | None = None

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
        self.poisoned = None

    def head(self) -> ChainHead:
        assert self.fd is not None
        return find_head(self.fd)

    def repair(self, head: ChainHead | Tail) -> Repair:
        """Cut a torn tail aside (kept next to the file) and truncate to the head."""
        assert self.fd is not None
        repaired = cut_torn_tail(self.fd, self.path, head)
        self.offset = head.good_size
        return repaired

    @property
    def writable(self) -> bool:
        """Open and not poisoned: a write may be tried."""
        return self.fd is not None and self.poisoned is None

    def write(self, chunks: list[bytes]) -> None:
        """Append durably, or raise OSError and poison the file (never written again)."""
        if self.fd is None:
            raise OSError(errno.EBADF, f"{self.path} is not open")
        if self.poisoned is not None:
            raise OSError(errno.EIO, f"{self.path}: an earlier write failed ({self.poisoned})")
        try:
            write_durably(self.fd, chunks, self.offset)
        except OSError as exc:
            self.poison(str(exc))
            raise
        self.offset += sum(len(c) for c in chunks)

    def poison(self, reason: str) -> None:
        """Never append to this file again; trust it only up to ``offset``. Cutting the
        failed bytes off is tidier for readers, but nothing relies on it succeeding."""
        self.poisoned = reason
        if self.fd is not None:
            with contextlib.suppress(OSError):
                if os.fstat(self.fd).st_size > self.offset:
                    os.ftruncate(self.fd, self.offset)

    def reset(self) -> None:
        """Empty the file (after its content was saved or is held elsewhere)."""
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, 0)
            os.fsync(self.fd)
        except OSError as exc:
            self.poison(str(exc))
            raise
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

    def identity(self) -> Identity:
        """Is the open file still the one the path names?"""
        if self.fd is None:
            return Identity.OK
        st = os.fstat(self.fd)
        if st.st_nlink == 0:
            return Identity.DELETED
        try:
            ps = os.stat(self.path)
        except FileNotFoundError:
            return Identity.REPLACED
        return Identity.OK if (ps.st_dev, ps.st_ino) == self.ident else Identity.REPLACED

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
        self.log_name = log_name
        self.current: AppendFile | None = None

    def path_for(self, first_seq: int) -> Path:
        """The spool file that begins at ``first_seq``."""
        return self.directory / spool_file_name(self.log_name, first_seq)

    def files(self) -> list[SpoolFile]:
        """This log's spool files in ``seq`` order (empty if the directory is missing)."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        out = []
        for name in names:
            seq = spool_file_seq(self.log_name, name)
            if seq is not None:
                out.append(SpoolFile(self.directory / name, seq))
        return out

    def write(self, chunks: list[bytes], first_seq: int) -> None:
        """Append durably to the current spool file (a new one per episode)."""
        if self.current is None:
            f = AppendFile(self.path_for(first_seq))
            f.open(create=True)
            self.current = f
        self.current.write(chunks)

    def end_episode(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def delete(self, files: list[SpoolFile]) -> list[tuple[SpoolFile, OSError]]:
        """Remove replayed spool files (only after the primary has synced them and they
        read back the same); the files that could not be removed, and why.

        A file left behind is harmless — every record in it is in the primary, and
        start-up compares such a leftover with the primary byte for byte — so a failed
        unlink (a read-only or failing spool volume) must not stop the writer."""
        self.end_episode()
        left: list[tuple[SpoolFile, OSError]] = []
        for f in files:
            try:
                os.unlink(f.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                left.append((f, exc))
        with contextlib.suppress(OSError):
            fsync_dir(self.directory)
        return left


@dataclass(frozen=True, slots=True)
class SetAside:
    """A primary file kept untouched and sealed out of the active path."""

    name: str | None  # its new name in the log's directory (None: nothing to keep)
    trusted_bytes: int  # how much of it is trusted: the rest is never read as records
    reason: str  # "untrusted" (a write or sync failed), "corrupt" or "truncated"
    last_seq: int  # its last trusted record (0: none)
    missing_from: int | None = None  # truncated: the checkpoint the log no longer reaches


def set_aside(file: AppendFile, tail: Tail | None, reason: str, **extra: int) -> SetAside:
    """Move a file that must not be appended to out of the active path, untouched.

    With trusted records it becomes a sealed segment whose name ends at its last trusted
    record (``<stem>.seg-<first>-<last trusted>-<start>.jsonl``): every reader stops
    there, so bytes past the trusted length are never read as records. A file with no
    trusted record is kept as ``<log>.untrusted-<UTC>``, which is not a segment.

    The file is found where it is now, not where it was opened: renamed away meanwhile
    (logrotate), it is renamed from its new name; deleted meanwhile, its trusted bytes
    — confirmed records — are copied out of the open descriptor, the only copy left.
    The descriptor is closed; the caller opens the path anew. Raises OSError.
    """
    assert file.fd is not None
    if tail is None:  # in the writer: trusted up to the last successful sync
        first = file.first_record()
        tail = Tail(
            good_size=file.offset,
            last_seq=_last_seq_within(file),
            last_hash=b"",
            first_seq=first[0] if first is not None else None,
            stream=None,
            torn=b"",
            anchored=False,
        )
    path = file.path
    if tail.last_seq and tail.first_seq is not None:
        first_line = os.pread(file.fd, 1 << 16, 0).split(b"\n", 1)[0]
        target = path.with_name(
            segment_name(path, tail.first_seq, tail.last_seq, ts_ns_of(first_line))
        )
    else:
        target = untrusted_path(path)
    source = _where_now(file)
    if source is not None:
        os.rename(source, target)
        fsync_dir(target.parent)
        if source.parent != target.parent:
            with contextlib.suppress(OSError):
                fsync_dir(source.parent)
    elif tail.good_size:
        try:
            ensure_dir(target.parent)  # deleted with its directory: made again
            atomic_write(target, file.read_range(0, tail.good_size))
        except AuditStorageError as exc:
            raise OSError(errno.EIO, str(exc)) from exc
    else:
        file.close()  # deleted, and nothing in it was trusted: nothing to keep
        return SetAside(None, 0, reason, 0, extra.get("missing_from"))
    if tail.last_seq:
        with contextlib.suppress(OSError):
            os.chmod(target, 0o440)
    file.close()
    return SetAside(
        name=target.name,
        trusted_bytes=tail.good_size,
        reason=reason,
        last_seq=tail.last_seq,
        missing_from=extra.get("missing_from"),
    )


def _where_now(file: AppendFile) -> Path | None:
    """The open file's path now (None if it was deleted): its own path, or wherever
    it was renamed to, as the kernel names the descriptor."""
    if file.identity() is Identity.OK:
        return file.path
    assert file.fd is not None
    if os.fstat(file.fd).st_nlink == 0:
        return None
    try:
        now = Path(os.readlink(f"/proc/self/fd/{file.fd}"))
        st = os.stat(now)
    except OSError:
        return None
    # The name must still be this file (not another one mounted over it).
    return now if (st.st_dev, st.st_ino) == file.ident else None


def _last_seq_within(file: AppendFile) -> int:
    """The ``seq`` of the last record inside the trusted length (0 if none)."""
    if file.offset == 0:
        return 0
    data = file.read_range(max(0, file.offset - (1 << 16)), file.offset)
    head = split_head(data[:-1].rsplit(b"\n", 1)[-1])
    return head[0] if head is not None else 0


def replay_lines(path: Path, after_seq: int) -> list[bytes]:
    """The spool file's records after ``after_seq``, as one linked run (with ``\\n``).

    Only a run in which each record carries the next ``seq`` and the previous line's
    hash is taken; it stops at the first line that breaks it (what a failed spool write
    left behind: its batch went on to stdout and a ``gap`` record names it).
    """
    data = path.read_bytes()
    out: list[bytes] = []
    prev: bytes | None = None
    seq = 0
    for line in data.split(b"\n")[:-1]:  # the last piece is b"" or a torn line
        head = split_head(line)
        if head is None:
            if out:
                break
            continue
        if not out:
            if head[0] <= after_seq:
                continue
        elif head != (seq + 1, prev):
            break
        seq, prev = head[0], line_hash(line)
        out.append(line + b"\n")
    return out
