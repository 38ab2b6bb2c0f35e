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
from dataclasses import dataclass, field
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


class _Reader:
    """An open closed file (plain or compressed) and its complete lines not yet used."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open_segment(path)
        self.lines: list[bytes] = []
        self.carry = b""
        self.eof = False
        self.seq_there: int | None = None

    def fill(self) -> None:
        block = self.fh.read(_READ)
        if not block:
            self.eof = True
            self.fh.close()
            return
        data = self.carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            self.carry = data
            return
        self.carry = data[cut + 1 :]
        self.lines.extend(data[:cut].split(b"\n"))

    def close(self) -> None:
        self.fh.close()


class LogFollower:
    """Reads records after a cursor, in chunks of at most ``max_records``/``max_bytes``."""

    def __init__(self, log_path: Path, *, max_records: int, max_bytes: int) -> None:
        self.log_path = log_path
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._spans: dict[tuple[str, int, int], _Span | None] = {}
        # The active file: read up to ``offset``, lines not yet forwarded.
        self._active: _ActiveBuffer | None = None
        self._reader: _Reader | None = None
        self._synced: tuple[int, int] | None = None

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
        cursor included).

        The work is per chunk, not per record: within a file ``seq`` rises by one per
        line, so the first and last heads of a slice tell whether it is consecutive;
        only a slice that is not (a hole left by stdout-only records) is walked."""
        if not lines:
            return None, 0
        start = self._start_index(lines, after_seq)
        if start >= len(lines):
            return None, len(lines)
        stop = min(len(lines), start + self.max_records)
        if sum(map(len, lines[start:stop])) + (stop - start) > self.max_bytes:
            size = 0
            for i in range(start, stop):  # the slow way, only for a chunk over the limit
                size += len(lines[i]) + 1
                if size > self.max_bytes and i > start:
                    stop = i
                    break
        first = self._head(lines[start])
        last = self._head(lines[stop - 1])
        if last[0] - first[0] != stop - 1 - start:
            stop = self._consecutive_end(lines, start, stop)
            last = self._head(lines[stop - 1])
        if after_hash is not None and first[0] == after_seq + 1 and first[1] != after_hash:
            raise ChainBreak(
                f"seq {first[0]} does not link to seq {after_seq} already forwarded: "
                "the local log was rewritten, or belongs to another stream"
            )
        taken = lines[start:stop]
        data = b"\n".join(taken) + b"\n"
        return Chunk(first[0], last[0], data, line_hash(taken[-1]), len(taken)), stop

    def _head(self, line: bytes) -> tuple[int, bytes]:
        head = split_head(line)
        if head is None:
            raise AuditFormatError(f"{self.log_path}: a line that is not a record")
        return head

    def _start_index(self, lines: list[bytes], after_seq: int) -> int:
        """Index of the first line with seq > after_seq (arithmetic, then a walk)."""
        first = self._head(lines[0])[0]
        if first > after_seq:
            return 0
        guess = after_seq + 1 - first
        if guess >= len(lines):
            if self._head(lines[-1])[0] <= after_seq:
                return len(lines)
        elif self._head(lines[guess])[0] == after_seq + 1 and (
            guess == 0 or self._head(lines[guess - 1])[0] == after_seq
        ):
            return guess
        for i, line in enumerate(lines):
            if self._head(line)[0] > after_seq:
                return i
        return len(lines)

    def _consecutive_end(self, lines: list[bytes], start: int, stop: int) -> int:
        seq = self._head(lines[start])[0]
        for i in range(start + 1, stop):
            seq += 1
            if self._head(lines[i])[0] != seq:
                return i
        return stop

    def _read_closed(self, path: Path, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        """Read on from where the last chunk of this file ended (the reader stays open),
        or open the file anew when asked for another place."""
        reader = self._reader
        if reader is None or reader.path != path or reader.seq_there != after_seq:
            if reader is not None:
                reader.close()
            reader = self._reader = _Reader(path)
        while True:
            if len(reader.lines) < self.max_records and not reader.eof:
                reader.fill()
                continue
            chunk, used = self._collect(reader.lines, after_seq, after_hash)
            del reader.lines[:used]
            if chunk is not None:
                reader.seq_there = chunk.last_seq
                return chunk
            if reader.eof:
                return None
            reader.seq_there = after_seq

    def _read_active(self, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        """The growing file: read in large blocks (pread from where the last block
        ended), keep the complete lines not yet used, sync before reading new bytes."""
        try:
            fd = os.open(self.log_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            buf = self._active
            if (
                buf is None
                or buf.ino != st.st_ino
                or buf.seq_there != after_seq
                or (buf.offset > st.st_size)
            ):
                buf = self._active = _ActiveBuffer(st.st_ino, after_seq)
            while True:
                if len(buf.lines) < self.max_records and buf.offset < st.st_size:
                    if self._synced != (st.st_ino, st.st_size):
                        # What we can see is now durable: never forward what a crash
                        # takes back.
                        os.fsync(fd)
                        self._synced = (st.st_ino, st.st_size)
                    block = os.pread(fd, min(_READ, st.st_size - buf.offset), buf.offset)
                    cut = block.rfind(b"\n")
                    if cut >= 0:
                        buf.lines.extend(block[:cut].split(b"\n"))
                        buf.offset += cut + 1
                        continue
                    if len(block) == st.st_size - buf.offset:
                        pass  # one incomplete line: the writer is still writing it
                chunk, used = self._collect(buf.lines, after_seq, after_hash)
                del buf.lines[:used]
                if chunk is not None:
                    buf.seq_there = chunk.last_seq
                    return chunk
                if buf.offset >= st.st_size or not used:
                    return None
        finally:
            os.close(fd)


@dataclass(slots=True)
class _ActiveBuffer:
    ino: int
    seq_there: int
    offset: int = 0
    lines: list[bytes] = field(default_factory=list)
