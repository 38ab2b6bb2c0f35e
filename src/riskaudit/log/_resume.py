"""Start-up: find where the chain ends, and cut a torn tail aside before resuming.

A crash can leave the last line incomplete (no ``\\n``), or leave garbage after the last
good record (a file system that extended the file but not its data shows NUL bytes).
The head of the chain is the last line that ends in ``\\n`` and parses as a record.
Whatever follows it is copied to ``<log>.torn-<UTC time>`` (durably, never silently
dropped), the file is truncated back to the good prefix, and the caller writes a
``repair`` record naming the byte count and SHA-256 of what was cut.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from riskaudit.errors import AuditFormatError
from riskaudit.log._codec import ZERO_HASH, line_hash, split_head
from riskaudit.log._files import atomic_write, utc_stamp
from riskaudit.storage._segments import stream_in

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


def _parse_record(line: bytes) -> dict[str, object] | None:
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
            record = _parse_record(line)
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


def cut_torn_tail(fd: int, log_path: Path, head: ChainHead) -> Repair:
    """Keep the torn bytes in ``<log>.torn-<UTC>``, then truncate the log to its head."""
    kept = log_path.with_name(f"{log_path.name}.torn-{utc_stamp()}")
    atomic_write(kept, head.torn)
    os.ftruncate(fd, head.good_size)
    os.fsync(fd)
    return Repair(
        cut_bytes=len(head.torn),
        cut_sha256=hashlib.sha256(head.torn).hexdigest(),
        kept_at=kept.name,
    )
