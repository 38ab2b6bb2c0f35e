"""Following a local log from a cursor: complete, synced records, across rotations.

The forwarder is another process (or thread) than the writer, so it cannot see the
writer's durable watermark. It makes its own guarantee instead: before reading new
bytes of the active file it calls ``fsync`` on its own descriptor of that file, which
makes everything visible durable — so nothing leaves the host that a crash could
still take back, and a restarted writer can never re-use a ``seq`` already forwarded.
Only complete lines (ending in ``\\n``) are read.

Files are taken in ``seq`` order: sealed segments (plain or compressed), files rotated
by logrotate, then the active file. A file whose records are all at or below the
cursor is skipped by name (segments) or by a cached (first, last) read once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from riskaudit.errors import AuditFormatError
from riskaudit.log._codec import line_hash, split_head
from riskaudit.storage._segments import (
    last_line,
    list_segments,
    open_segment,
    rotated_files,
)

_READ = 4 << 20


@dataclass(slots=True)
class Chunk:
    """Consecutive records, as their exact lines (each ending in ``\\n``)."""

    first_seq: int
    last_seq: int
    data: bytes
    last_hash: bytes
    records: int


class ChainBreak(AuditFormatError):
    """The next local record does not link to the last one forwarded."""


@dataclass(slots=True)
class _Span:
    first: int
    last: int


class LogFollower:
    """Reads records after a cursor, in chunks of at most ``max_records``/``max_bytes``."""

    def __init__(self, log_path: Path, *, max_records: int, max_bytes: int) -> None:
        self.log_path = log_path
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._spans: dict[tuple[str, int, int], _Span | None] = {}
        # The active file: where the last read stopped (inode, offset, seq there).
        self._active: tuple[int, int, int] | None = None

    # -- which file holds seq N ----------------------------------------------------------

    def _span(self, path: Path) -> _Span | None:
        """(first, last) seq of a closed file, read once and cached by size and mtime."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = (path.name, st.st_size, st.st_mtime_ns)
        if key not in self._spans:
            try:
                with open_segment(path) as fh:
                    first = split_head(fh.readline(1 << 16).rstrip(b"\n"))
                last = split_head(last_line(path))
            except (OSError, EOFError):
                first = last = None
            self._spans[key] = (
                _Span(first[0], last[0]) if first is not None and last is not None else None
            )
        return self._spans[key]

    def _closed_files(self) -> list[tuple[Path, _Span]]:
        out: list[tuple[Path, _Span]] = []
        for seg in list_segments(self.log_path):
            out.append((seg.path, _Span(seg.first_seq, seg.last_seq)))
        for path in rotated_files(self.log_path):
            span = self._span(path)
            if span is not None:
                out.append((path, span))
        return sorted(out, key=lambda x: (x[1].first, x[1].last))

    # -- reading ---------------------------------------------------------------------------

    def next_chunk(self, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        """The records right after ``after_seq``, or None when there are none yet.

        Raises ChainBreak when the next record does not link to ``after_hash``."""
        for path, span in self._closed_files():
            if span.last <= after_seq:
                continue
            chunk = self._read_closed(path, after_seq, after_hash)
            if chunk is not None:
                return chunk
        return self._read_active(after_seq, after_hash)

    def _collect(
        self, lines: list[bytes], after_seq: int, after_hash: bytes | None
    ) -> tuple[Chunk | None, int]:
        """Take consecutive records after ``after_seq`` from complete lines; return the
        chunk and how many of the given lines were consumed (records at or below the
        cursor included)."""
        out: list[bytes] = []
        size = 0
        first = last = 0
        prev_hash = after_hash
        used = 0
        for line in lines:
            head = split_head(line)
            if head is None:
                raise AuditFormatError(f"{self.log_path}: a line that is not a record")
            seq, prev = head
            if seq <= after_seq and not out:
                used += 1
                continue
            expected = (last or after_seq) + 1
            if seq != expected and out:
                break  # a hole (records that reached only stdout): a chunk of its own next
            if not out and prev_hash is not None and seq == after_seq + 1 and prev != prev_hash:
                raise ChainBreak(
                    f"seq {seq} does not link to seq {after_seq} already forwarded: "
                    "the local log was rewritten, or belongs to another stream"
                )
            if out and (len(out) >= self.max_records or size + len(line) + 1 > self.max_bytes):
                break
            out.append(line + b"\n")
            size += len(line) + 1
            first = first or seq
            last = seq
            prev_hash = line_hash(line)
            used += 1
        if not out:
            return None, used
        assert prev_hash is not None
        return Chunk(first, last, b"".join(out), prev_hash, len(out)), used

    def _read_closed(self, path: Path, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        carry = b""
        with open_segment(path) as fh:
            while block := fh.read(_READ):
                data = carry + block
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                carry = data[cut + 1 :]
                lines = data[:cut].split(b"\n")
                chunk, _used = self._collect(lines, after_seq, after_hash)
                if chunk is not None:
                    # Fill up to the chunk limits from what follows in the same file.
                    return self._extend(fh, chunk, lines, carry, after_seq, after_hash)
        return None

    def _extend(
        self,
        fh: object,
        chunk: Chunk,
        lines: list[bytes],
        carry: bytes,
        after_seq: int,
        after_hash: bytes | None,
    ) -> Chunk:
        """The first block had fewer records than a chunk may hold: read on."""
        while chunk.records < self.max_records and len(chunk.data) < self.max_bytes:
            block = fh.read(_READ)  # type: ignore[attr-defined]
            if not block:
                break
            data = carry + block
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            carry = data[cut + 1 :]
            lines = lines + data[:cut].split(b"\n")
            chunk, _used = self._collect(lines, after_seq, after_hash)  # type: ignore[assignment]
        return chunk

    def _read_active(self, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        try:
            fd = os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            os.fsync(fd)  # what we can see is now durable: never forward what a crash takes back
            start = 0
            if self._active is not None:
                ino, offset, seq_there = self._active
                if ino == st.st_ino and offset <= st.st_size and seq_there <= after_seq:
                    start = offset
            while start < st.st_size:
                want = min(st.st_size - start, self.max_bytes + (1 << 16))
                data = os.pread(fd, want, start)
                cut = data.rfind(b"\n")
                if cut < 0:
                    return None  # one incomplete line: the writer is still writing it
                lines = data[:cut].split(b"\n")
                chunk, used = self._collect(lines, after_seq, after_hash)
                start += sum(len(x) + 1 for x in lines[:used])
                if chunk is not None:
                    self._active = (st.st_ino, start, chunk.last_seq)
                    return chunk
                self._active = (st.st_ino, start, after_seq)
                if not used:
                    return None
            return None
        finally:
            os.close(fd)
