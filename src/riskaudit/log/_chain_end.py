"""A file's chain end: where its chain stops, and a torn tail cut aside before resuming.

A crash can leave the last line incomplete (no ``\\n``), or leave garbage after the last
good record: a file system that extended the file but lost some of the pages of a
multi-page write shows a run of NUL bytes *followed by complete lines*. So the head is
not "the last line that parses": the tail is validated record by record (``seq``,
``prev``, the hash of each line, the JSON of the last one) forward from a trusted point —
the newest checkpoint that the sidecar holds, found byte for byte in the file, or the
start of the file. The longest valid prefix is the chain head; everything from the
first invalid byte on is the tail (:func:`validate_tail`).

What start-up then does with that tail (cut it as torn, or keep the whole file as it is
because the tail covers records that were confirmed) is decided in ``_startup.py``.
A tail that is cut is first copied to ``<log>.torn-<UTC time>`` (durably, never
silently dropped), then the file is truncated back to the valid prefix, and the caller
writes a ``repair`` record naming the byte count and SHA-256 of what was cut.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from riskaudit.errors import AuditFormatError
from riskaudit.format import ZERO_HASH, atomic_write, line_hash, split_head, stream_in, torn_path

_BLOCK = 1 << 16


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a stream stands: the last good record and what (if anything) was cut."""

    last_seq: int
    last_hash: bytes
    good_size: int
    stream: str | None
    torn: bytes


@dataclass(frozen=True, slots=True)
class Repair:
    """A torn tail moved aside: the fields of the ``repair`` record."""

    cut_bytes: int
    cut_sha256: str
    kept_at: str


def parse_record(line: bytes) -> dict[str, object] | None:
    """The line as a format-v1 record (a JSON object with a v1 head), or None."""
    if split_head(line) is None:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def find_head(fd: int) -> ChainHead:
    """Scan backwards from the end of the open file for the last complete record."""
    size = os.fstat(fd).st_size
    if size == 0:
        return ChainHead(0, ZERO_HASH, 0, None, b"")
    end = size
    tail = b""
    while True:
        start = max(0, end - _BLOCK)
        tail = os.pread(fd, end - start, start) + tail
        end = start
        # Candidate record lines, newest first; only lines that end in "\n" qualify.
        cut = tail.rfind(b"\n") + 1 if not tail.endswith(b"\n") else len(tail)
        body_end = cut
        while body_end > 0:
            line_start = tail.rfind(b"\n", 0, body_end - 1) + 1
            if line_start == 0 and start > 0:
                break  # the line may begin before this block: read more
            line = tail[line_start : body_end - 1]
            record = parse_record(line)
            if record is not None:
                good = start + body_end
                torn = tail[body_end:]
                return ChainHead(
                    last_seq=int(record["seq"]),  # type: ignore[call-overload]
                    last_hash=line_hash(line),
                    good_size=good,
                    stream=_stream_of(fd, record),
                    torn=torn,
                )
            body_end = line_start
        if start == 0:
            raise AuditFormatError(
                "no complete riskaudit record found: this file is not a format-v1 log "
                "(refusing to cut it aside; move it away or point RISK_AUDIT_LOG_PATH "
                "elsewhere)"
            )


def _stream_of(fd: int, last: dict[str, object]) -> str | None:
    """The stream id: from the last record if it names it (start, segment, stop, ...),
    else from the first records of the file."""
    if last.get("kind") is not None and isinstance(last.get("stream"), str):
        return str(last["stream"])
    return stream_in(_advancing(fd))


def _advancing(fd: int) -> Iterator[bytes]:
    """The file's bytes from the start, in 1 MiB blocks, through the descriptor."""
    pos = 0
    while block := os.pread(fd, 1 << 20, pos):
        yield block
        pos += len(block)


def cut_torn_tail(fd: int, log_path: Path, head: ChainHead | Tail) -> Repair:
    """Keep the torn bytes in ``<log>.torn-<UTC>`` (fsynced, and its directory), then
    truncate the log to its valid prefix and fsync it."""
    kept = torn_path(log_path)
    atomic_write(kept, head.torn)
    os.ftruncate(fd, head.good_size)
    os.fsync(fd)
    return Repair(
        cut_bytes=len(head.torn),
        cut_sha256=hashlib.sha256(head.torn).hexdigest(),
        kept_at=kept.name,
    )


@dataclass(frozen=True, slots=True)
class Tail:
    """The longest valid prefix of a file (from a trusted point) and what follows it."""

    good_size: int
    last_seq: int  # 0 when the prefix holds no record
    last_hash: bytes
    first_seq: int | None  # the file's first record, None for an empty or garbage file
    stream: str | None
    torn: bytes  # every byte after the valid prefix
    anchored: bool  # validation started at the sidecar's checkpoint, found in the file

    @property
    def highest_seq_in_tail(self) -> int:
        """The highest ``seq`` that any line of the invalid tail claims (0 if none):
        a writer must never reuse it, even though the line is not trusted."""
        best = 0
        for line in self.torn.split(b"\n"):
            head = split_head(line.lstrip(b"\x00"))
            if head is not None and head[0] > best:
                best = head[0]
        return best


def _find_line(fd: int, size: int, line: bytes) -> int | None:
    """The offset just after ``line + \\n`` where it stands as a whole line, searched
    from the end of the file (the newest checkpoint is near the end)."""
    needle = line + b"\n"
    end = size
    overlap = len(needle)
    while end > 0:
        start = max(0, end - max(_BLOCK, 4 * overlap))
        block = os.pread(fd, min(end + overlap, size) - start, start)
        pos = block.rfind(needle)
        while pos >= 0:
            if start + pos == 0 or (pos > 0 and block[pos - 1 : pos] == b"\n"):
                return start + pos + len(needle)
            if pos == 0:  # the preceding byte is in the previous block
                if os.pread(fd, 1, start - 1) == b"\n":
                    return start + len(needle)
                break
            pos = block.rfind(needle, 0, pos)
        end = start
    return None


def validate_tail(
    fd: int, anchor: tuple[int, bytes] | None = None, *, limit_seq: int | None = None
) -> Tail:
    """Validate the file forward from a trusted point; the longest valid prefix.

    ``anchor`` is the sidecar's newest checkpoint, ``(seq, exact line)``: where that
    line stands in the file, validation starts right after it (what precedes it was
    sealed). Otherwise it starts at the first line, whose own ``prev`` cannot be
    checked here (it names the previous file's last record). Each following line must
    end in ``\\n``, carry the next ``seq`` and the previous line's hash as ``prev``; the
    last accepted line must also be a JSON object without NUL bytes (no successor
    vouches for it). ``limit_seq`` stops the prefix after that ``seq``.
    """
    size = os.fstat(fd).st_size
    first = _first_seq(fd)
    if size == 0:
        return Tail(0, 0, ZERO_HASH, None, None, b"", False)
    start, seq, prev, anchored = 0, 0, ZERO_HASH, False
    if anchor is not None:
        found = _find_line(fd, size, anchor[1])
        if found is not None:
            start, seq, prev, anchored = found, anchor[0], line_hash(anchor[1]), True
    good, last_line = start, anchor[1] if anchored and anchor is not None else None
    before: tuple[int, int, bytes, bytes | None] = (good, seq, prev, last_line)
    pos, carry, stop = start, b"", False
    sha = hashlib.sha256
    while not stop and pos < size:
        block = os.pread(fd, min(1 << 20, size - pos), pos)
        if not block:
            break
        data = carry + block
        base = pos - len(carry)
        pos += len(block)
        offset = 0
        while True:
            nl = data.find(b"\n", offset)
            if nl < 0:
                carry = data[offset:]
                break
            line = data[offset:nl]
            if seq == 0 and good == 0:  # the file's first line, no anchor
                head = split_head(line)
                ok = head is not None
                line_seq = head[0] if head is not None else 0
            else:
                line_seq = seq + 1
                ok = line.startswith(b'{"seq":%d,"prev":"%b"' % (line_seq, prev))
            if limit_seq is not None and line_seq > limit_seq:
                ok = False
            if not ok:
                stop = True
                break
            before = (good, seq, prev, last_line)
            seq = line_seq
            prev = sha(line).hexdigest().encode("ascii")
            good = base + nl + 1
            last_line = line
            offset = nl + 1
    if last_line is not None and good > start and not _is_record(last_line):
        good, seq, prev, last_line = before
    if good == 0:
        seq, prev = 0, ZERO_HASH
    torn = os.pread(fd, size - good, good) if size > good else b""
    stream: str | None = None
    if last_line is not None and seq:
        record = parse_record(last_line)
        stream = _stream_of(fd, record) if record is not None else None
    return Tail(good, seq, prev, first, stream, torn, anchored)


def _is_record(line: bytes) -> bool:
    return b"\x00" not in line and parse_record(line) is not None


def _first_seq(fd: int) -> int | None:
    head = split_head(os.pread(fd, 4096, 0).split(b"\n", 1)[0])
    return None if head is None else head[0]


def newest_checkpoint(sidecar: Path) -> tuple[int, bytes] | None:
    """``(seq, exact line)`` of the newest checkpoint the sidecar holds, or None.

    The sidecar is written only after the checkpoint record was durable in the log (the
    primary or the spool), so everything up to that ``seq`` was confirmed: start-up may
    never cut there, and a log that ends before it was truncated.
    """
    try:
        fd = os.open(sidecar, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, min(size, _BLOCK), max(0, size - _BLOCK))
    finally:
        os.close(fd)
    for line in reversed(data.split(b"\n")[:-1]):  # complete lines only, newest first
        record = parse_record(line)
        if record is not None and record.get("kind") == "checkpoint":
            head = split_head(line)
            assert head is not None
            return head[0], line
    return None
