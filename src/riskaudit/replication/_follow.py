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
from riskaudit.format import line_hash, list_segments, open_segment, rotated_files, split_head
from riskaudit.integrity import first_seq, last_seq

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
    """Complete lines read from a file and not yet forwarded: ``data[pos:end]``, and
    the ``seq`` the last chunk taken from it ended at."""

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0
        self.end = 0
        self.seq_there: int | None = None

    @property
    def left(self) -> int:
        return self.end - self.pos

    def fill(self) -> bool:
        """Read on; False when there is nothing more to read now."""
        raise NotImplementedError


class _Reader(_Buffer):
    """An open closed file (plain or compressed) and its complete lines not yet used."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.fh = open_segment(path)
        self.carry = b""
        self.eof = False

    def fill(self) -> bool:
        block = b"" if self.eof else self.fh.read(_READ)
        if not block:
            if not self.eof:
                self.eof = True
                self.fh.close()
            return False
        data = self.carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            self.carry = data
            return True
        self.carry = data[cut + 1 :]
        kept = self.data[self.pos : self.end] if self.pos < self.end else b""
        self.data = kept + data[: cut + 1]
        self.pos, self.end = 0, len(self.data)
        return True

    def close(self) -> None:
        self.fh.close()


class _ActiveBuffer(_Buffer):
    """The growing file, read through a descriptor opened per call (``fd``, ``size``):
    blocks are read again from the first unused byte (the page cache makes it a copy),
    so old and new bytes are never joined; the file is fsynced before new bytes are
    read, so what is forwarded is durable and a crash cannot take it back."""

    def __init__(self, ino: int, seq_there: int) -> None:
        super().__init__()
        self.ino = ino
        self.seq_there = seq_there
        self.offset = 0  # file offset just after ``data[:end]``
        self.fd = -1
        self.size = 0
        self.synced = -1

    def fill(self) -> bool:
        if self.offset >= self.size:
            return False
        if self.synced != self.size:
            os.fsync(self.fd)
            self.synced = self.size
        start = self.offset - self.left
        block = os.pread(self.fd, min(_READ, self.size - start), start)
        cut = block.rfind(b"\n")
        if cut + 1 <= self.left:
            return False  # only a line the writer is still writing
        self.data, self.pos, self.end = block, 0, cut + 1
        self.offset = start + cut + 1
        return True


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
        self._listing: tuple[tuple[int, int | None], list[tuple[Path, _Span]]] | None = None

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
                first, last = first_seq(path), last_seq(path)
            except (OSError, EOFError):
                first, last = None, 0
            self._spans[key] = _Span(first, last) if first is not None and last else None
        return self._spans[key]

    def _closed_files(self) -> list[tuple[Path, _Span]]:
        """The closed files in seq order, listed again only when the directory or the
        file at the log's path changed (every rotation changes both), not per chunk."""
        try:
            key = (
                self.log_path.parent.stat().st_mtime_ns,
                self.log_path.stat().st_ino if self.log_path.exists() else None,
            )
        except FileNotFoundError:
            key = None
        if key is not None and self._listing is not None and self._listing[0] == key:
            return self._listing[1]
        out: list[tuple[Path, _Span]] = []
        for seg in list_segments(self.log_path):
            out.append((seg.path, _Span(seg.first_seq, seg.last_seq)))
        for path in rotated_files(self.log_path):
            span = self._span(path)
            if span is not None:
                out.append((path, span))
        out.sort(key=lambda x: (x[1].first, x[1].last))
        self._listing = (key, out) if key is not None else None
        return out

    # -- reading ---------------------------------------------------------------------------

    def next_chunk(self, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        """The records right after ``after_seq``, or None when there are none yet.

        Raises ChainBreak when the next record does not link to ``after_hash``."""
        for path, span in self._closed_files():
            if span.last <= after_seq:
                continue
            try:
                chunk = self._read_closed(path, after_seq, after_hash)
            except FileNotFoundError:  # renamed since listed (logrotate compressing .1)
                self._listing = None
                return self.next_chunk(after_seq, after_hash)
            if chunk is not None:
                return chunk
        return self._read_active(after_seq, after_hash)

    def _collect(
        self, lines: list[bytes], after_seq: int, after_hash: bytes | None
    ) -> tuple[Chunk | None, int]:
        """The slow path, record by record (a hole in ``seq``, a line over the size
        limit): consecutive records after ``after_seq`` from complete lines; the chunk
        and how many lines were consumed (those at or below the cursor included)."""
        out: list[bytes] = []
        size = 0
        first: tuple[int, bytes] | None = None
        last = after_seq
        used = 0
        for line in lines:
            seq = self._head(line)[0]
            if seq <= after_seq and not out:
                used += 1
                continue
            if out and (
                seq != last + 1
                or len(out) >= self.max_records
                or size + len(line) + 1 > self.max_bytes
            ):
                break
            if first is None:
                first = self._head(line)
                self._check_link(first, after_seq, after_hash)
            out.append(line)
            size += len(line) + 1
            last = seq
            used += 1
        if first is None:
            return None, used
        data = b"\n".join(out) + b"\n"
        return Chunk(first[0], last, data, line_hash(out[-1]), len(out)), used

    @staticmethod
    def _check_link(first: tuple[int, bytes], after_seq: int, after_hash: bytes | None) -> None:
        if after_hash is not None and first[0] == after_seq + 1 and first[1] != after_hash:
            raise ChainBreak(
                f"seq {first[0]} does not link to seq {after_seq} already forwarded: "
                "the local log was rewritten, or belongs to another stream"
            )

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
        self._check_link(first, after_seq, after_hash)
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

    def _read_closed(self, path: Path, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        """Read on from where the last chunk of this file ended (the reader stays open),
        or open the file anew when asked for another place."""
        reader = self._reader
        if reader is None or reader.path != path or reader.seq_there != after_seq:
            if reader is not None:
                reader.close()
            reader = self._reader = _Reader(path)
        return self._next_from(reader, after_seq, after_hash)

    def _read_active(self, after_seq: int, after_hash: bytes | None) -> Chunk | None:
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
                or buf.offset > st.st_size
            ):
                buf = self._active = _ActiveBuffer(st.st_ino, after_seq)
            buf.fd, buf.size = fd, st.st_size
            return self._next_from(buf, after_seq, after_hash)
        finally:
            os.close(fd)

    def _next_from(self, buf: _Buffer, after_seq: int, after_hash: bytes | None) -> Chunk | None:
        """The next chunk from a buffer, reading on while it holds less than two
        chunks' worth or everything in it is already forwarded."""
        while True:
            if buf.left < 2 * self.max_bytes and buf.fill():
                continue
            before = buf.pos
            chunk = self._take(buf, after_seq, after_hash)
            if chunk is not None:
                buf.seq_there = chunk.last_seq
                return chunk
            buf.seq_there = after_seq
            if buf.pos == before and not buf.fill():
                return None
