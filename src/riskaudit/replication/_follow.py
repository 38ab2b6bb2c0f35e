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
_HEAD = 128  # enough bytes for a record's head: {"seq":N,"prev":"<64 hex>"


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


class _Buffer:
    """Complete lines read from a file and not yet forwarded: ``data[pos:end]``."""

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0
        self.end = 0

    @property
    def left(self) -> int:
        return self.end - self.pos

    def add(self, complete: bytes) -> None:
        if self.pos < self.end:
            self.data = self.data[self.pos : self.end] + complete
        else:
            self.data = complete
        self.pos, self.end = 0, len(self.data)


class _Reader(_Buffer):
    """An open closed file (plain or compressed) and its complete lines not yet used."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.fh = open_segment(path)
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
        self.add(data[: cut + 1])

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

    def _take(self, buf: _Buffer, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        """The next chunk from a buffer of complete lines, found with a few searches
        over the bytes (the line that starts ``seq`` N is ``\\n{"seq":N,``), counted
        with ``bytes.count`` and sliced once: no per-record Python work. Anything
        irregular (a hole in ``seq``, a line over the size limit) takes the line-by-line
        path."""
        data, pos, end = buf.data, buf.pos, buf.end
        if pos >= end:
            return None
        first = self._head(data[pos : pos + _HEAD])
        if first[0] > after_seq:
            start = pos
        else:
            i = data.find(b'\n{"seq":%d,"prev":"' % (after_seq + 1), pos, end)
            if i < 0:
                last = data.rfind(b"\n", pos, end - 1) + 1
                if self._head(data[last : last + _HEAD])[0] <= after_seq:
                    buf.pos = end  # everything here is already forwarded
                    return None
                return self._take_slow(buf, after_seq, after_hash)
            start = i + 1
            first = self._head(data[start : start + _HEAD])
        limit = min(end, start + self.max_bytes)
        j = data.find(b'\n{"seq":%d,"prev":"' % (first[0] + self.max_records), start, limit)
        if j >= 0:
            stop = j + 1
        elif limit == end:
            stop = end
        else:
            stop = data.rfind(b"\n", start, limit) + 1
        if stop <= start:
            return self._take_slow(buf, after_seq, after_hash)
        last_start = data.rfind(b"\n", start, stop - 1) + 1
        last_line = data[last_start : stop - 1]
        last_seq = self._head(last_line)[0]
        # Where the line that starts the next chunk was found, the lines before it are
        # taken as ``max_records`` consecutive records without counting them: a hole
        # inside (stdout-only records) would only overstate ``records``, a statistic;
        # the bytes and the seq range are exact and the collector names the hole.
        # A chunk cut by the end of the buffer or the size limit is counted.
        count = self.max_records if j >= 0 else data.count(b"\n", start, stop)
        if last_seq - first[0] != count - 1:
            return self._take_slow(buf, after_seq, after_hash)
        if after_hash is not None and first[0] == after_seq + 1 and first[1] != after_hash:
            raise ChainBreak(
                f"seq {first[0]} does not link to seq {after_seq} already forwarded: "
                "the local log was rewritten, or belongs to another stream"
            )
        buf.pos = stop
        return Chunk(first[0], last_seq, data[start:stop], line_hash(last_line), count)

    def _take_slow(self, buf: _Buffer, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        lines = buf.data[buf.pos : buf.end - 1].split(b"\n")
        chunk, used = self._collect(lines, after_seq, after_hash)
        buf.pos += sum(len(x) + 1 for x in lines[:used])
        return chunk

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
            if reader.left < 2 * self.max_bytes and not reader.eof:
                reader.fill()
                continue
            before = reader.pos
            chunk = self._take(reader, after_seq, after_hash)
            if chunk is not None:
                reader.seq_there = chunk.last_seq
                return chunk
            if reader.eof:
                return None
            reader.seq_there = after_seq
            if reader.pos == before and reader.left:
                reader.add(b"")  # keep what is left, read on
                reader.fill()

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
                if buf.left < 2 * self.max_bytes and buf.offset < st.st_size:
                    if self._synced != (st.st_ino, st.st_size):
                        # What we can see is now durable: never forward what a crash
                        # takes back.
                        os.fsync(fd)
                        self._synced = (st.st_ino, st.st_size)
                    # Read again from the first unused byte (the page cache makes it a
                    # copy): one buffer, no joining of old and new bytes.
                    start = buf.offset - buf.left
                    block = os.pread(fd, min(_READ, st.st_size - start), start)
                    cut = block.rfind(b"\n")
                    if cut + 1 > buf.left:
                        buf.data, buf.pos, buf.end = block, 0, cut + 1
                        buf.offset = start + cut + 1
                        continue
                before = buf.pos
                chunk = self._take(buf, after_seq, after_hash)
                if chunk is not None:
                    buf.seq_there = chunk.last_seq
                    return chunk
                if buf.offset >= st.st_size or buf.pos == before:
                    return None
        finally:
            os.close(fd)


class _ActiveBuffer(_Buffer):
    def __init__(self, ino: int, seq_there: int) -> None:
        super().__init__()
        self.ino = ino
        self.seq_there = seq_there
        self.offset = 0
