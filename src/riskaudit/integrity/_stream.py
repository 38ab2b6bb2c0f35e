"""Which files make up a stream, and how to read them (plain or gzip).

Given a directory, a stream is its log segments: the active ``*.jsonl``, files rotated
by logrotate (``*.jsonl.1``, ``*.jsonl.2.gz``, ``*.jsonl-20261126``), sealed segments
(``*.seg-*.jsonl``, plain, ``.gz`` or ``.zst``) and recovered segments. Lock files,
torn tails (``.torn-*``), the checkpoint sidecar and sub-directories such as the spool
are not segments and are skipped unless named.
Files are ordered by the ``seq`` of their first record, so names do not matter.

A sealed segment's name says where it ends (``.seg-<first>-<last>-``), and it is read
only up to that record. A primary whose write or sync failed is set aside under such a
name ending at its last trusted record (docs/format.md, "Untrusted files"): the bytes
after it — nothing, part or all of a failed batch, which went on to the spool or stdout —
are never records.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from riskaudit.errors import AuditFormatError
from riskaudit.format import (
    end_line,
    is_log_name,
    is_sidecar_name,
    is_stream_file_name,
    is_torn_name,
    not_records,
    open_segment,
    parse_segment_name,
    split_head,
)

_READ = 8 << 20


@dataclass(frozen=True, slots=True)
class Source:
    """One file of a stream, with the ``seq`` of its first record (None if unknown)."""

    path: Path
    first_seq: int | None


def open_binary(path: Path) -> IO[bytes]:
    """Open a segment for reading, decompressing ``.gz`` and ``.zst`` transparently."""
    return open_segment(path)


@dataclass(slots=True)
class FileSet:
    """What the arguments name: the stream's files, sidecars named among them, and the
    files skipped (each with why), so that a glob, the directory and any ordering of
    the same names give the same verdict."""

    segments: list[Path]
    sidecars: list[Path]
    skipped: list[str]


def name_files(paths: list[str], *, torn: bool = False) -> FileSet:
    """Classify the files the arguments name: files as given, globs expanded,
    directories scanned (a directory yields only its log segments). A named checkpoint
    sidecar is read as checkpoints; lock, holds, backup-state and temporary files are
    skipped with a note; a ``.torn-*`` file (bytes cut from a torn tail, not records) is
    read only when ``torn`` is asked for.

    Raises AuditFormatError when an argument names nothing.
    """
    found: list[Path] = []
    skipped: list[str] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            segs = sorted(q for q in p.iterdir() if q.is_file() and is_stream_file_name(q.name))
            if not segs and len(paths) == 1:
                raise AuditFormatError(f"{arg}: no log segments in this directory")
            if not segs:  # a sub-directory among the files a glob names (the spool)
                skipped.append(f"{p.name}/: a directory without log segments; skipped")
            found.extend(segs)
        elif p.exists():
            found.append(p)
        else:
            matches = sorted(glob.glob(arg))
            if not matches:
                raise AuditFormatError(f"{arg}: no such file")
            found.extend(Path(m) for m in matches if os.path.isfile(m))
    out = FileSet([], [], skipped)
    seen: set[Path] = set()
    for f in found:
        real = f.resolve()
        if real in seen:
            continue
        seen.add(real)
        name = f.name
        if is_sidecar_name(name):
            out.sidecars.append(real)
            continue
        what = not_records(name)
        if what is None and is_torn_name(name) and not torn:
            what = "bytes cut from a torn tail, not records (read them with --torn)"
        if what is None and not is_torn_name(name) and not is_log_name(name):
            what = "not named like a log file (*.jsonl, rotated or sealed)"
        if what is not None:
            out.skipped.append(f"{name}: not a segment ({what}); skipped")
            continue
        out.segments.append(real)
    return out


def expand(paths: list[str]) -> list[Path]:
    """The stream's files that the arguments name (see :func:`name_files`).

    Raises AuditFormatError when an argument names nothing.
    """
    return name_files(paths).segments


def first_seq(path: Path) -> int | None:
    """The ``seq`` of the file's first line, read without reading the whole file."""
    with open_binary(path) as fh:
        head = split_head(fh.readline(4096).rstrip(b"\n"))
    return None if head is None else head[0]


def order(paths: list[Path]) -> list[Source]:
    """Sources sorted by first ``seq`` (unreadable heads last, in name order).

    Files that start at the same ``seq`` (a copytruncate copy and the rewritten file)
    go shorter first, so the longer one's overlap ends exactly at the chain head."""
    sources = [Source(p, first_seq(p)) for p in paths]
    firsts = [s.first_seq for s in sources if s.first_seq is not None]
    tied = {f for f in firsts if firsts.count(f) > 1}
    ends = {s.path: last_seq(s.path) for s in sources if s.first_seq in tied}
    return sorted(
        sources,
        key=lambda s: (s.first_seq is None, s.first_seq or 0, ends.get(s.path, 0), str(s.path)),
    )


def last_seq(path: Path) -> int:
    """The ``seq`` of the file's last complete record (0 if none)."""
    head = split_head(end_line(path))
    return 0 if head is None else head[0]


def line_chunks(
    path: Path, past_end: Callable[[int], None] | None = None
) -> Iterator[tuple[list[bytes], bool]]:
    """Lists of complete lines (without ``\\n``), read in large blocks.

    The flag is False only on the final list when the file does not end in ``\\n``
    (its last line is then torn). A sealed segment stops at the record its name ends
    with; ``past_end`` is told how many bytes followed it (never yielded).
    """
    for data, begin, end, complete in block_chunks(path, past_end):
        yield (data[begin : end - 1].split(b"\n") if complete else [data]), complete


def _end_of_segment(lines: list[bytes], end_seq: int) -> int | None:
    """How many of these lines a segment ending at ``end_seq`` holds, once the lines
    reach it (None: not yet, or the file does not match its name)."""
    for i in range(len(lines) - 1, -1, -1):  # the newest line with a v1 head
        head = split_head(lines[i])
        if head is None:
            continue
        if head[0] < end_seq:
            return None
        break
    else:
        return None
    for j in range(i, -1, -1):
        head = split_head(lines[j])
        if head is not None and head[0] <= end_seq:
            return j + 1 if head[0] == end_seq else None
    return None


def block_chunks(
    path: Path, past_end: Callable[[int], None] | None = None
) -> Iterator[tuple[bytes, int, int, bool]]:
    """:func:`line_chunks` for the native scan: ``(block, begin, end, complete)`` where
    ``block[begin:end]`` is whole lines, each ending in ``\n``, with no bytes object per
    line and no copy of a block as read (a line across two reads comes as a small block
    of its own). The same file, the same lines, the same stop at a sealed segment's
    end; the final item has the flag False when the file does not end in ``\n``
    (``block`` is then the torn last line alone).
    """
    named = parse_segment_name(path.name)
    end_seq = None if named is None else named[1]
    with open_binary(path) as fh:
        read = _Counted(fh)
        for data, begin, end, at in _whole_lines(read):
            if end < 0:
                yield data, 0, len(data), False
                return
            if end_seq is not None:
                start = max(begin, data.rfind(b"\n", begin, end - 1) + 1)
                last = split_head(data[start : end - 1])
                if last is None or last[0] >= end_seq:
                    lines = data[begin : end - 1].split(b"\n")
                    keep = _end_of_segment(lines, end_seq)
                    if keep is not None:
                        kept = sum(len(x) + 1 for x in lines[:keep])
                        while read():
                            pass
                        if keep:
                            yield data, begin, begin + kept, True
                        extra = read.total - at - kept
                        if past_end is not None and extra:
                            past_end(extra)
                        return
            yield data, begin, end, True


class _Counted:
    """``fh.read(_READ)``, counting the bytes read."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.total = 0

    def __call__(self) -> bytes:
        block = self._fh.read(_READ)
        self.total += len(block)
        return block


def _whole_lines(read: _Counted) -> Iterator[tuple[bytes, int, int, int]]:
    """``(data, begin, end, at)``: ``data[begin:end]`` is whole lines, found at offset
    ``at`` of the file; ``end`` is -1 for a last line without ``\n`` (``data``)."""
    carry = b""
    pos = 0  # the file offset of the block read next
    while block := read():
        begin = 0
        if carry:
            nl = block.find(b"\n")
            if nl < 0:
                carry += block
                pos += len(block)
                continue
            across = carry + block[: nl + 1]
            yield across, 0, len(across), pos - len(carry)
            begin = nl + 1
        cut = block.rfind(b"\n") + 1
        if cut > begin:
            yield block, begin, cut, pos + begin
        carry = block[max(cut, begin) :]
        pos += len(block)
    if carry:
        yield carry, 0, -1, pos - len(carry)
