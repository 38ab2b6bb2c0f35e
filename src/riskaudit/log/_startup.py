"""Start-up: find the chain head across the primary and the spool, repair, replay.

The head of the chain is the newest *trusted* record across the primary file and the
spool: a previous run may have spooled records while the primary was down and stopped
before replaying them, or crashed in the middle of a replay or of a multi-page write.
The order is:

1. open the primary (creating it and its directory if needed); if it cannot be opened
   for writing, open it read-only just to learn its head — a read-only volume must not
   stop the log, only send its records to the spool;
2. validate each file's tail record by record from a trusted point (``_chain_end.py``) and
   decide what the invalid rest is:

   * a **torn tail** (a crash mid-write, after everything confirmed): copied aside,
     cut, and named by a ``repair`` record;
   * **untrusted**: the primary holds records at ``seq`` values the spool holds. The
     spool only ever receives a batch because the primary failed it, so the primary's
     copy is bytes whose write or sync failed (after a failed fsync Linux may report
     the next one as a success, "fsyncgate"): they are never trusted, whatever they
     read like. The file is kept untouched, sealed under a segment name that ends at
     its last trusted record, and the chain continues in a new file;
   * **corrupt**: the damage lies at or before the newest checkpoint that the sidecar
     holds (confirmed records), or the log ends before it. The file is kept untouched
     and sealed the same way, a new file starts, no ``seq`` is reused, and health and
     verify report it;

3. replay spool records newer than the primary's trusted head into the primary, sync,
   read them back, and only then delete the spool files (a crash in between replays
   again into a fresh segment: no loss, no duplicate in the chain);
4. the caller writes ``genesis`` (new stream), ``segment`` (a file was set aside),
   ``repair`` (a tail was cut) and ``start`` through the normal destinations.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from riskaudit.errors import AuditFormatError, AuditStorageError
from riskaudit.format import (
    ZERO_HASH,
    end_line,
    iter_bytes,
    line_hash,
    list_segments,
    parse_ts,
    rotated_files,
    split_head,
    stream_of,
)
from riskaudit.log._chain_end import (
    Repair,
    Tail,
    cut_torn_tail,
    newest_checkpoint,
    parse_record,
    validate_tail,
)
from riskaudit.log._destinations import (
    AppendFile,
    SetAside,
    Spool,
    SpoolFile,
    replay_lines,
    set_aside,
)

logger = logging.getLogger("riskaudit")

_BLOCK = 1 << 16
_V0_1 = re.compile(r"0\.1\.\d+")
# What a write cut short inside a record's head can leave: a prefix of
# `{"seq":<digits>,"prev":"<64 hex>"`, each part possibly cut (the file's first record,
# torn before its head was whole).
_HEAD_PREFIX = re.compile(
    rb'\{(?:"(?:s(?:e(?:q(?:"(?::(?:\d+(?:,(?:"(?:p(?:r(?:e(?:v(?:"(?::(?:"[0-9a-f]{0,64}'
    rb")?)?)?)?)?)?)?)?)?)?)?)?)?)?)?)?"
)


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
    #: The last trusted ``seq`` in the primary (spool records after it are replayed).
    primary_last: int = 0
    #: A file kept untouched and sealed aside (untrusted or corrupt), if any.
    aside: SetAside | None = None
    #: ``(first, last)`` seqs that a 0.1 writer's sidecar names beyond the log: they
    #: reached only stdout (0.1 copied every checkpoint there), named by a gap record.
    stdout_gap: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class _SpoolHead:
    first: int  # the lowest seq any spool file holds (0: no spool records)
    last: int
    last_hash: bytes
    stream: str | None


def _read_only_head(path: Path) -> tuple[int, bytes, str | None]:
    """The head of a primary we cannot write (0 if it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0, ZERO_HASH, None
    try:
        tail = validate_tail(fd)
    finally:
        os.close(fd)
    return tail.last_seq, tail.last_hash, tail.stream


def _spool_head(
    spool: Spool, *, repair: bool = False, exclude: frozenset[Path] | set[Path] = frozenset()
) -> _SpoolHead:
    """The range of records the spool files hold (their valid prefixes), in one pass.

    ``repair`` also cuts torn tails aside (a spool batch is confirmed only once synced,
    so an invalid tail there was never confirmed). A spool file that cannot be opened
    for writing (a read-only spool volume) is still read: its records count, only its
    torn tail stays."""
    first = 0
    best: tuple[int, bytes, str | None] = (0, ZERO_HASH, None)
    for f in spool.files():
        if f.path in exclude:
            continue
        writable = repair
        try:
            fd = os.open(f.path, (os.O_RDWR if repair else os.O_RDONLY) | os.O_CLOEXEC)
        except OSError as exc:
            if not repair:
                logger.error("cannot read spool file %s: %s", f.path, exc)
                continue
            logger.warning("spool file %s: %s; read as it is", f.path, exc)
            try:
                fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as again:
                logger.error("cannot read spool file %s: %s", f.path, again)
                continue
            writable = False
        try:
            tail = validate_tail(fd)
        except OSError as exc:
            os.close(fd)
            logger.error("spool file %s: %s", f.path, exc)
            continue
        try:
            if writable and tail.torn:
                kept = cut_torn_tail(fd, f.path, tail)
                logger.warning("spool file %s had a torn tail, kept in %s", f.path, kept.kept_at)
        except (OSError, AuditStorageError) as exc:  # its records still count
            logger.error("spool file %s: %s; left in place", f.path, exc)
        finally:
            os.close(fd)
        if tail.first_seq is not None and tail.last_seq:
            first = tail.first_seq if not first else min(first, tail.first_seq)
        if tail.last_seq > best[0]:
            best = (tail.last_seq, tail.last_hash, tail.stream or best[2])
    return _SpoolHead(first, best[0], best[1], best[2])


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
            line = end_line(seg_path)
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


def _ours(data: bytes) -> bool:
    """Whether bytes with no valid record are still a writer's torn output (NUL runs, or
    some line with a format-v1 head), not somebody else's file."""
    if not data.strip(b"\x00"):
        return True
    first = data.lstrip(b"\x00").split(b"\n", 1)[0].rstrip(b"\x00")
    if b"\n" not in data.lstrip(b"\x00") and _HEAD_PREFIX.fullmatch(first):
        return True  # the first record torn inside its head
    return any(
        split_head(line.lstrip(b"\x00")) is not None for line in data[: 1 << 16].split(b"\n")
    )


def _judge(tail: Tail, spool: _SpoolHead, anchor: tuple[int, bytes] | None) -> str | None:
    """What the primary's tail is: None (clean), ``torn``, ``untrusted`` or ``corrupt``
    (``spool``: its files that were not replayed before)."""
    if spool.first and (
        tail.last_seq >= spool.first or (tail.torn and tail.last_seq + 1 >= spool.first)
    ):
        return "untrusted"
    if (
        anchor is not None
        and tail.torn
        and tail.last_seq < anchor[0]
        and tail.first_seq is not None
        and tail.first_seq <= anchor[0]
    ):
        return "corrupt"
    return "torn" if tail.torn else None


def _lines_backwards(fd: int, end: int) -> Iterator[bytes]:
    """The file's lines before offset ``end``, newest first, read in blocks."""
    carry = b""
    while end > 0:
        start = max(0, end - _BLOCK)
        data = os.pread(fd, end - start, start) + carry
        end = start
        lines = data.split(b"\n")
        carry = lines.pop(0) if start else b""
        yield from reversed(lines)


def _log_lines(path: Path, fd: int, tail: Tail, lo: int, hi: int) -> dict[int, bytes]:
    """The log's trusted records with ``lo <= seq <= hi``: the active file's valid
    prefix, then its sealed segments (up to the record each name ends with) and files
    rotated by logrotate."""
    found: dict[int, bytes] = {}

    def take(line: bytes, limit: int) -> None:
        head = split_head(line)
        if head is not None and lo <= head[0] <= min(hi, limit):
            found.setdefault(head[0], line)

    for line in _lines_backwards(fd, tail.good_size):
        take(line, hi)
    others: list[tuple[Path, int]] = [
        (seg.path, seg.last_seq)
        for seg in list_segments(path)
        if seg.first_seq <= hi and seg.last_seq >= lo
    ]
    others += [(rotated, hi) for rotated in rotated_files(path)]
    for other, limit in others:
        if len(found) == hi - lo + 1:
            break
        try:
            carry = b""
            for block in iter_bytes(other):
                parts = (carry + block).split(b"\n")
                carry = parts.pop()
                for line in parts:
                    take(line, limit)
        except (OSError, EOFError, AuditFormatError):
            continue
    return found


def leftover_spool_files(path: Path, fd: int, tail: Tail, spool: Spool) -> list[SpoolFile]:
    """Spool files left behind after their replay reached the log (the unlink was lost
    in a crash, or refused by a read-only spool volume): every record they hold is in
    the log byte for byte, and the log goes on past them (in the active file, or they
    are in a sealed segment). Such a file says nothing about the primary; one that
    matches but ends where the active file ends could as well be a failed batch that
    landed whole, so it is not taken for a leftover."""
    out = []
    for f in spool.files():
        try:
            lines = [line[:-1] for line in replay_lines(f.path, 0)]
        except OSError:
            continue
        heads = [split_head(line) for line in lines]
        seqs = [h[0] for h in heads if h is not None]
        if not seqs or seqs[-1] >= tail.last_seq:
            continue  # the active file does not go on past it
        in_log = _log_lines(path, fd, tail, seqs[0], seqs[-1])
        if all(in_log.get(seq) == line for seq, line in zip(seqs, lines, strict=True)):
            out.append(f)
    return out


def _written_by_0_1(fd: int, path: Path) -> bool:
    """Whether the newest ``start`` record of the stream names a 0.1 writer (it copied
    every checkpoint to the sidecar, even one that reached only stdout): searched in the
    active file, then in the newest sealed segment (a file begun by rotation holds no
    ``start``). Only when a log ends before its sidecar, so reading far is rare."""

    def version_in(lines: Iterator[bytes]) -> str | None:
        for line in lines:
            if b'"kind":"start"' in line[:120]:
                record = parse_record(line)
                if record is not None and record.get("kind") == "start":
                    version = record.get("version")
                    return version if isinstance(version, str) else ""
        return None

    version = version_in(_lines_backwards(fd, os.fstat(fd).st_size))
    if version is None:
        for seg in sorted(list_segments(path), key=lambda s: s.last_seq, reverse=True)[:1]:
            try:
                with open(seg.path, "rb") as fh:  # plain: the newest is never compressed
                    version = version_in(_lines_backwards(fh.fileno(), seg.path.stat().st_size))
            except OSError:
                version = None
    return version is not None and _V0_1.fullmatch(version) is not None


def _ts_of(line: bytes) -> int | None:
    record = parse_record(line)
    try:
        return parse_ts(record["ts"]) if record is not None else None  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None


def _anchor_of_this_stream(fd: int, anchor: tuple[int, bytes]) -> bool:
    """Whether the sidecar's checkpoint belongs to the stream this file begins (the log
    may have been replaced, its sidecar kept). Checkpoints name their stream (0.2 on);
    for one that does not (0.1), a checkpoint older than the file's ``genesis`` is taken
    to be an earlier stream's."""
    first = os.pread(fd, 1 << 16, 0).split(b"\n", 1)[0]
    if b'"kind":"genesis"' not in first:
        return True
    genesis, checkpoint = parse_record(first), parse_record(anchor[1])
    if genesis is None or checkpoint is None:
        return True
    if isinstance(checkpoint.get("stream"), str):
        return checkpoint["stream"] == genesis.get("stream")
    began, sealed = _ts_of(first), _ts_of(anchor[1])
    return began is None or sealed is None or sealed >= began


def open_log(path: Path, spool_dir: Path | None, sidecar: Path | None = None) -> Opened:
    """Open the primary and the spool and find the head (steps 1-3 above)."""
    primary = AppendFile(path)
    spool = Spool(spool_dir, path.name) if spool_dir is not None else None
    spool_head = (
        _spool_head(spool, repair=True) if spool is not None else _SpoolHead(0, 0, ZERO_HASH, None)
    )
    anchor = newest_checkpoint(sidecar) if sidecar is not None else None
    writable = True
    stdout_gap: tuple[int, int] | None = None
    legacy = False
    error: str | None = None
    repaired: Repair | None = None
    aside: SetAside | None = None
    try:
        primary.open(create=True)
    except (OSError, AuditStorageError) as exc:
        writable = False
        error = str(exc)
        logger.error("audit log %s is not writable at start: %s", path, exc)
    floor = 0  # a seq no new record may take (the highest any damaged line claims)
    if writable:
        assert primary.fd is not None
        if anchor is not None and not _anchor_of_this_stream(primary.fd, anchor):
            logger.warning(
                "checkpoint sidecar %s: its newest checkpoint (seq %d) is older than the "
                "log's genesis: it belongs to an earlier stream and is not used",
                sidecar,
                anchor[0],
            )
            anchor = None
        tail = validate_tail(primary.fd, anchor)
        if tail.good_size == 0 and tail.torn and not _ours(tail.torn):
            primary.close()
            raise AuditFormatError(
                f"{path}: no complete riskaudit record found: this file is not a format-v1 "
                "log (refusing to cut it aside; move it away or point RISK_AUDIT_LOG_PATH "
                "elsewhere)"
            )
        leftover = (
            leftover_spool_files(path, primary.fd, tail, spool)
            if spool is not None and spool_head.first
            else []
        )
        if leftover:
            assert spool is not None
            for f in leftover:
                logger.warning(
                    "spool file %s was replayed before (every record in it is in the log, "
                    "byte for byte): removing it",
                    f.path,
                )
            for f, why in spool.delete(leftover):
                logger.error("cannot remove the replayed spool file %s: %s", f.path, why)
            spool_head = _spool_head(spool, exclude={f.path for f in leftover})
        if anchor is not None and 0 < spool_head.first <= anchor[0]:
            # A checkpoint of a batch that failed over to the spool: its copy in the
            # primary is among the untrusted bytes, not where validation starts.
            anchor = None
            tail = validate_tail(primary.fd, None)
        if (
            anchor is not None
            and not tail.anchored
            and anchor[0] > tail.last_seq
            and _written_by_0_1(primary.fd, path)
        ):
            legacy = True  # the sidecar may name checkpoints that reached only stdout
        verdict = _judge(tail, spool_head, None if legacy else anchor)
        if verdict == "untrusted":
            tail = validate_tail(primary.fd, anchor, limit_seq=spool_head.first - 1)
        if verdict in ("untrusted", "corrupt"):
            floor = tail.highest_seq_in_tail
            try:
                aside = set_aside(primary, tail, verdict)
            except OSError as exc:
                raise AuditStorageError(
                    f"audit log {path} holds {verdict} records and cannot be set aside: {exc}"
                ) from exc
            log = logger.error if verdict == "untrusted" else logger.critical
            log(
                "audit log %s: %s after seq %d (%d bytes); kept untouched as %s, the chain "
                "continues in a new file",
                path,
                "bytes whose write or sync failed"
                if verdict == "untrusted"
                else "damage before the newest checkpoint the sidecar holds",
                tail.last_seq,
                len(tail.torn),
                aside.name,
            )
            primary.open(create=True)
        elif verdict == "torn":
            repaired = primary.repair(tail)
            logger.warning(
                "audit log %s had a torn tail: %d bytes kept in %s",
                path,
                repaired.cut_bytes,
                repaired.kept_at,
            )
        p_seq, p_hash, stream = tail.last_seq, tail.last_hash, tail.stream
    else:
        try:
            p_seq, p_hash, stream = _read_only_head(path)
        except AuditFormatError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM):
                raise AuditStorageError(f"cannot read audit log {path}: {exc}") from exc
            if spool is None:
                raise AuditStorageError(
                    f"cannot read or write audit log {path} ({exc}) and no spool is "
                    "configured: the chain head is unknown"
                ) from exc
            p_seq, p_hash, stream = 0, ZERO_HASH, None
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
    primary_last = p_seq
    known = max(p_seq, spool_head.last)
    if anchor is not None and known == 0 and anchor[0] > 0:
        logger.critical(
            "audit log %s is gone (no file, no rotated files, no spool) but its sidecar %s "
            "names seq %d: starting a new stream; verify will report the old one missing",
            path,
            sidecar,
            anchor[0],
        )
        anchor = None
    heads = [(p_seq, p_hash), (spool_head.last, spool_head.last_hash)]
    if anchor is not None:
        heads.append((anchor[0], line_hash(anchor[1])))
    last_seq, last_hash = max(heads, key=lambda h: h[0])
    if anchor is not None and anchor[0] > known and legacy:
        logger.error(
            "audit log %s ends at seq %d; its sidecar %s, written by riskaudit 0.1, names "
            "seq %d: 0.1 copied checkpoints that reached only stdout there too, so seq "
            "%d-%d are taken to be on stdout (a gap record names them; recover them with "
            "`riskaudit recover`)",
            path,
            known,
            sidecar,
            anchor[0],
            known + 1,
            anchor[0],
        )
        stdout_gap = (known + 1, anchor[0])
    elif anchor is not None and anchor[0] > known and aside is None:
        # The log ends before the newest checkpoint the sidecar holds: confirmed
        # records are gone (a cut file, a lost volume). Keep what is left untouched and
        # continue after the checkpoint; never reuse its seqs.
        logger.critical(
            "audit log %s ends at seq %d, before seq %d that the checkpoint sidecar holds: "
            "it was truncated (confirmed records are missing); the chain continues after "
            "the checkpoint",
            path,
            p_seq,
            anchor[0],
        )
        aside = _set_aside_truncated(primary, anchor[0]) if writable else None
    last_seq = max(last_seq, floor)  # never reuse a seq that a damaged line claims
    return Opened(
        primary=primary,
        spool=spool,
        primary_writable=writable,
        primary_error=error,
        last_seq=last_seq,
        last_hash=last_hash,
        stream=stream or spool_head.stream or str(uuid.uuid4()),
        repaired=repaired,
        spool_last=spool_head.last,
        primary_last=primary_last,
        aside=aside,
        stdout_gap=stdout_gap,
    )


def _set_aside_truncated(primary: AppendFile, checkpoint_seq: int) -> SetAside:
    """Seal what is left of a truncated primary (if anything) and open a fresh file."""
    assert primary.fd is not None
    tail = validate_tail(primary.fd)
    if tail.last_seq == 0 and not tail.torn:
        return SetAside(None, 0, "truncated", 0, checkpoint_seq)
    try:
        aside = set_aside(primary, tail, "truncated", missing_from=checkpoint_seq)
    except OSError as exc:
        raise AuditStorageError(
            f"cannot set the truncated log {primary.path} aside: {exc}"
        ) from exc
    primary.open(create=True)
    return aside
