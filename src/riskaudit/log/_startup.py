"""Start-up: find the chain head across the primary and the spool, repair, replay.

The head of the chain is the newest record across the primary file and the spool: a
previous run may have spooled records while the primary was down and stopped before
replaying them, or crashed in the middle of a replay. The order is:

1. open the primary (creating it and its directory if needed); if it cannot be opened
   for writing, open it read-only just to learn its head — a read-only volume must not
   stop the log, only send its records to the spool;
2. cut a torn tail aside (primary and spool files), never deleting bytes;
3. replay spool records newer than the primary's head into the primary, sync, and only
   then delete the spool files (a crash in between replays again, skipping what the
   primary already has: no loss, no duplicates);
4. the caller writes ``genesis`` (new stream), ``repair`` (if a tail was cut) and
   ``start`` through the normal destinations.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from riskaudit.errors import AuditFormatError, AuditStorageError
from riskaudit.log._codec import ZERO_HASH, line_hash, split_head
from riskaudit.log._destinations import AppendFile, Spool
from riskaudit.log._resume import Repair, cut_torn_tail, find_head
from riskaudit.storage._segments import last_line, list_segments, rotated_files, stream_of

logger = logging.getLogger("riskaudit")


@dataclass(slots=True)
class Opened:
    """What start-up found and opened."""

    primary: AppendFile
    spool: Spool | None
    primary_writable: bool
    primary_error: str | None
    last_seq: int
    last_hash: bytes
    stream: str
    repaired: Repair | None
    spool_last: int


def _read_only_head(path: Path) -> tuple[int, bytes, str | None]:
    """The head of a primary we cannot write (0 if it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0, ZERO_HASH, None
    try:
        head = find_head(fd)
    finally:
        os.close(fd)
    return head.last_seq, head.last_hash, head.stream


def _repair_spool(spool: Spool) -> tuple[int, bytes, str | None]:
    """Cut torn spool tails aside; the newest (seq, hash, stream) in the spool."""
    best: tuple[int, bytes, str | None] = (0, ZERO_HASH, None)
    for f in spool.files():
        try:
            fd = os.open(f.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            logger.error("cannot open spool file %s: %s", f.path, exc)
            continue
        try:
            try:
                head = find_head(fd)
            except AuditFormatError:
                logger.error("spool file %s holds no complete record; left in place", f.path)
                continue
            if head.torn:
                kept = cut_torn_tail(fd, f.path, head)
                logger.warning("spool file %s had a torn tail, kept in %s", f.path, kept.kept_at)
            if head.last_seq > best[0]:
                best = (head.last_seq, head.last_hash, head.stream or best[2])
        finally:
            os.close(fd)
    return best


def sibling_head(path: Path) -> tuple[int, bytes, str | None]:
    """The newest record among the log's rotated files (built-in segments and
    logrotate's ``.1``, ``.2.gz``): the chain continues from there when the active file
    is new or empty (a crash between a rotation's rename and the new file's first
    record, or logrotate's create mode while the writer was down)."""
    best: tuple[int, bytes, str | None] = (0, ZERO_HASH, None)
    segments = list_segments(path)
    # A sealed segment's name says where it ends: only the newest one is read.
    newest = [max(segments, key=lambda seg: seg.last_seq).path] if segments else []
    for seg_path in newest + rotated_files(path):
        try:
            line = last_line(seg_path)
        except (OSError, EOFError):
            continue
        head = split_head(line)
        if head is None or head[0] <= best[0]:
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        stream = rec.get("stream") if isinstance(rec, dict) else None
        if not isinstance(stream, str):
            stream = stream_of(seg_path)
        best = (head[0], line_hash(line), stream)
    return best


def open_log(path: Path, spool_dir: Path | None) -> Opened:
    """Open the primary and the spool and find the head (steps 1-3 above)."""
    primary = AppendFile(path)
    spool = Spool(spool_dir, path.name) if spool_dir is not None else None
    writable = True
    error: str | None = None
    repaired: Repair | None = None
    try:
        primary.open(create=True)
    except (OSError, AuditStorageError) as exc:
        writable = False
        error = str(exc)
        logger.error("audit log %s is not writable at start: %s", path, exc)
    if writable:
        head = primary.head()
        if head.torn:
            repaired = primary.repair(head)
            logger.warning(
                "audit log %s had a torn tail: %d bytes kept in %s",
                path,
                repaired.cut_bytes,
                repaired.kept_at,
            )
        p_seq, p_hash, stream = head.last_seq, head.last_hash, head.stream
    else:
        try:
            p_seq, p_hash, stream = _read_only_head(path)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM):
                raise AuditStorageError(f"cannot read audit log {path}: {exc}") from exc
            if spool is None:
                raise AuditStorageError(
                    f"cannot read or write audit log {path} ({exc}) and no spool is "
                    "configured: the chain head is unknown"
                ) from exc
            p_seq, p_hash, stream = 0, ZERO_HASH, None
    s_seq, s_hash, s_stream = _repair_spool(spool) if spool is not None else (0, ZERO_HASH, None)
    if p_seq == 0 or stream is None:
        r_seq, r_hash, r_stream = sibling_head(path)
        if p_seq == 0 and r_seq:
            logger.warning(
                "audit log %s is new or empty: continuing the chain of its rotated files "
                "from seq %d",
                path,
                r_seq,
            )
            p_seq, p_hash = r_seq, r_hash
        stream = stream or r_stream
    if s_seq > p_seq:
        last_seq, last_hash = s_seq, s_hash
    else:
        last_seq, last_hash = p_seq, p_hash
    return Opened(
        primary=primary,
        spool=spool,
        primary_writable=writable,
        primary_error=error,
        last_seq=last_seq,
        last_hash=last_hash,
        stream=stream or s_stream or str(uuid.uuid4()),
        repaired=repaired,
        spool_last=s_seq,
    )
