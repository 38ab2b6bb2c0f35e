"""Sealed segments: the files built-in rotation leaves behind, and how to read them.

A sealed segment is a closed piece of one stream. Its last record is the checkpoint that
sealed it, and its name says what it holds, so that a directory listing sorts segments
in ``seq`` order and retention and backups can decide without opening them::

    <log stem>.seg-<first seq, 20 digits>-<last seq, 20 digits>-<UTC start>.jsonl[.gz|.zst]

for example ``risk_audit.seg-00000000000000000001-00000000000000120000-20261126T000000Z.jsonl``
(``<log stem>`` is the log's file name without ``.jsonl``; the UTC start is the ``ts``
of the segment's first record, to the second). Compression (when a segment leaves the
hot tier) keeps the name and adds ``.gz`` or ``.zst``; the bytes inside do not change,
so every hash and checkpoint still holds. The names are built and parsed in ``_names``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

from riskaudit.errors import AuditConfigError, AuditFormatError
from riskaudit.format._codec import parse_ts, split_head
from riskaudit.format._files import fsync_dir
from riskaudit.format._names import (
    SUFFIXES,
    is_rotated_name,
    match_segment_name,
    parse_segment_name,
    segment_name,
    temp_path,
    uncompressed_name,
)

_READ = 8 << 20


def seal_as_segment(path: Path, first: int, last: int, start_ns: int) -> Path:
    """Rename a finished file to its sealed segment name next to it, fsync the directory
    (the rename is what makes it a segment) and make it read-only; the new path."""
    target = path.with_name(segment_name(path, first, last, start_ns))
    os.rename(path, target)
    fsync_dir(target.parent)
    with contextlib.suppress(OSError):
        os.chmod(target, 0o440)
    return target


@dataclass(frozen=True, slots=True)
class Segment:
    """One sealed segment on disk."""

    path: Path
    first_seq: int
    last_seq: int
    start_ns: int
    compression: str | None  # None, "gzip" or "zstd"

    @property
    def key(self) -> str:
        """The name without a compression suffix: what the segment is, however stored."""
        return uncompressed_name(self.path.name)


def parse_segment(log_path: Path, path: Path) -> Segment | None:
    """The sealed segment at ``path`` if its name is one of this log's segments."""
    named = match_segment_name(log_path, path.name)
    if named is None:
        return None
    first, last, start_ns, compression = named
    return Segment(
        path=path, first_seq=first, last_seq=last, start_ns=start_ns, compression=compression
    )


def list_segments(log_path: Path) -> list[Segment]:
    """The log's sealed segments, in ``seq`` order (a plain and a compressed copy of
    the same segment, left by an interrupted compression, are both listed)."""
    try:
        names = os.listdir(log_path.parent)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        seg = parse_segment(log_path, log_path.parent / name)
        if seg is not None:
            out.append(seg)
    return sorted(out, key=lambda s: (s.first_seq, s.compression or ""))


def rotated_files(log_path: Path) -> list[Path]:
    """``risk_audit.jsonl.1``, ``risk_audit.jsonl.2.gz``, ``risk_audit.jsonl-20261126``."""
    return [
        log_path.parent / name
        for name in os.listdir(log_path.parent)
        if is_rotated_name(log_path, name)
    ]


def open_segment(path: Path) -> IO[bytes]:
    """Read a segment (or any log file), decompressing ``.gz`` and ``.zst``."""
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.name.endswith(".zst"):
        zstd = _zstandard()
        fh = open(path, "rb")  # noqa: SIM115 (the reader owns it and closes it)
        raw = zstd.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        return io.BufferedReader(raw, buffer_size=1 << 20)
    return open(path, "rb")


def _zstandard() -> Any:
    try:
        import zstandard  # noqa: PLC0415 (optional: only for RISK_AUDIT_COMPRESSION=zstd)
    except ImportError as exc:
        raise AuditConfigError(
            "RISK_AUDIT_COMPRESSION",
            "zstd needs the zstandard package: pip install 'riskaudit[zstd]'",
        ) from exc
    return zstandard


def iter_bytes(path: Path) -> Iterator[bytes]:
    """The segment's record bytes (decompressed), in blocks."""
    with open_segment(path) as fh:
        while block := fh.read(_READ):
            yield block


def sha256_stream(blocks: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for block in blocks:
        h.update(block)
    return h.hexdigest()


def content_sha256(path: Path) -> str:
    """SHA-256 of the records (the uncompressed bytes): a segment's identity however
    it is stored."""
    return sha256_stream(iter_bytes(path))


def file_sha256(path: Path) -> str:
    """SHA-256 of the file's bytes as stored."""
    with open(path, "rb") as fh:
        return sha256_stream(iter(lambda: fh.read(_READ), b""))


#: How far into a file to look for the record that names its stream.
STREAM_SCAN = 64 << 20


def stream_in(blocks: Iterable[bytes], limit: int = STREAM_SCAN) -> str | None:
    """The stream id named by the first record that names one (``genesis``, ``start``,
    ``segment``, ``truncated``), among the complete lines of the first ``limit`` bytes.

    Every file of a stream begins with such a record, or, after a copytruncate, with
    the rewritten records and then a ``truncated`` record."""
    seen = 0
    carry = b""
    for block in blocks:
        data = carry + block
        complete = data.rfind(b"\n") + 1
        at = data.find(b'"stream":"', 0, complete)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            try:
                record = orjson.loads(data[start:end])
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict) and isinstance(record.get("stream"), str):
                return str(record["stream"])
            at = data.find(b'"stream":"', end, complete)
        carry = data[complete:]
        seen += len(block)
        if seen >= limit:
            break
    return None


def stream_of(path: Path) -> str | None:
    """The stream a log file (plain or compressed) belongs to, or None."""
    try:
        return stream_in(iter_bytes(path))
    except (OSError, EOFError):
        return None


def log_stream(log_path: Path) -> str | None:
    """The stream id, from the active file or the newest segment that names it."""
    for path in [log_path] + [s.path for s in reversed(list_segments(log_path))]:
        if path.exists() and path.stat().st_size and (stream := stream_of(path)):
            return stream
    return None


def last_line(path: Path) -> bytes:
    """The last complete line of a segment (plain: read from the end)."""
    if not path.name.endswith((".gz", ".zst")):
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            want = min(size, 1 << 16)
            fh.seek(size - want)
            tail = fh.read(want)
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        return lines[-1]
    carry = b""
    for piece in iter_bytes(path):
        data = carry + piece
        cut = data.rstrip(b"\n").rfind(b"\n")
        carry = data[cut + 1 :] if cut >= 0 else data
    return carry.rstrip(b"\n")


def end_line(path: Path) -> bytes:
    """The line a file ends with as far as readers go: for a sealed segment the record
    its name ends at (a file set aside after a failed write holds untrusted bytes after
    it, never read as records), for any other file its last complete line. A segment
    that does not hold the record its name ends at gives its last complete line."""
    named = parse_segment_name(path.name)
    if named is None:
        return last_line(path)
    want = named[1]
    if path.name.endswith((".gz", ".zst")):
        found, carry = None, b""
        for piece in iter_bytes(path):
            lines = (carry + piece).split(b"\n")
            carry = lines.pop()
            for line in lines:
                head = split_head(line)
                if head is not None and head[0] == want:
                    found = line
        return found if found is not None else last_line(path)
    with open(path, "rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        data = b""
        while end > 0:
            start = max(0, end - (1 << 16))
            fh.seek(start)
            data = fh.read(end - start) + data
            end = start
            lines = data.split(b"\n")
            complete = lines if start == 0 else lines[1:]  # the first may be cut
            for line in reversed(complete):
                head = split_head(line)
                if head is not None and head[0] <= want:
                    return line if head[0] == want else last_line(path)
            data = lines[0] if start else b""
    return last_line(path)


def segment_end_ns(seg: Segment) -> int:
    """The ``ts`` of the segment's last record (its sealing checkpoint)."""
    line = end_line(seg.path)
    try:
        return parse_ts(orjson.loads(line)["ts"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise AuditFormatError(f"{seg.path.name}: its last line has no readable ts") from exc


def event_types(path: Path, names: list[str]) -> set[str]:
    """Which of these event types occur in the segment (a byte search, no parsing)."""
    wanted = {n: b'"event_type":"%b"' % n.encode() for n in names}
    found: set[str] = set()
    carry = b""
    for block in iter_bytes(path):
        data = carry + block
        for name, needle in wanted.items():
            if name not in found and needle in data:
                found.add(name)
        if len(found) == len(wanted):
            break
        carry = data[-256:]
    return found


def compress(seg: Segment, method: str) -> Segment:
    """Write the compressed copy (temp file, fsync, rename, fsync the directory), check
    it decompresses to the same bytes, then remove the plain file."""
    if seg.compression is not None:
        return seg
    suffix = SUFFIXES[method]
    target = seg.path.with_name(seg.path.name + suffix)
    tmp = temp_path(seg.path, suffix)  # the suffix says how to read it
    plain_sha = hashlib.sha256()
    with open(seg.path, "rb") as src, open(tmp, "wb") as raw:
        if method == "gzip":
            out: Any = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        else:
            out = _zstandard().ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        with out:
            while block := src.read(_READ):
                plain_sha.update(block)
                out.write(block)
        raw.flush()
        os.fsync(raw.fileno())
    try:
        if content_sha256(tmp) != plain_sha.hexdigest():
            raise AuditFormatError(f"compressed copy of {seg.path.name} does not read back")
        os.chmod(tmp, 0o440)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(seg.path.parent)
    os.unlink(seg.path)
    fsync_dir(seg.path.parent)
    return Segment(target, seg.first_seq, seg.last_seq, seg.start_ns, method)
