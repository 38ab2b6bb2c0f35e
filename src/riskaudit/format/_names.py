"""Every file name of a log directory, built and recognised in this one place.

For a log ``<dir>/<name>`` (``risk_audit.jsonl``; ``<stem>`` is the name without
``.jsonl``), the directory holds:

* ``<stem>.seg-<first>-<last>-<UTC start>.jsonl[.gz|.zst]``: sealed segments (``<first>``
  and ``<last>`` are ``seq`` values in 20 digits, the start ``20261126T000000Z``);
* ``<name>.1``, ``<name>.2.gz``, ``<name>-20261126``: files rotated by logrotate;
* ``<name>.recovered-<first>-<last>.jsonl[.gz]``: records ``riskaudit recover`` put back;
* ``<name>.checkpoints``: the checkpoint sidecar;
* ``<name>.lock``: the writer's lock (``flock``, holding the writer's pid);
* ``<name>.holds.json``, ``<name>.backup.json``, ``<name>.forward.json``: legal holds, the
  backup state and the forwarder's cursor;
* ``<file>.torn-<UTC>``: bytes cut from the torn tail of the log or of its sidecar;
* ``<name>.untrusted-<UTC>``: a file set aside before it held a trusted record;
* ``<stem>.truncated-<UTC>.jsonl``: what a copytruncate left that the writer did not hold;
* ``.<file>.tmp…``: the temporary file of a write not yet renamed into place.

A spool directory holds ``<name>.spool-<first seq, 20 digits>.jsonl``; a central
directory of ``riskaudit collect`` holds ``audit.jsonl`` with the files above,
``audit.jsonl.holes.json`` and the mark ``.collector.lock``. ``<UTC>`` is
``20261126T093000.123456789Z`` (:func:`utc_stamp`), so these names sort in time order.
"""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

#: The suffix of a log file, a sealed segment, a recovered segment, a spool file.
LOG_SUFFIX = ".jsonl"
#: Compression methods and their file suffixes.
SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}
SEGMENT_INFIX = ".seg-"
RECOVERED_INFIX = ".recovered-"
SPOOL_INFIX = ".spool-"
TORN_INFIX = ".torn-"
UNTRUSTED_INFIX = ".untrusted-"
TRUNCATED_INFIX = ".truncated-"
TEMP_INFIX = ".tmp"
SIDECAR_SUFFIX = ".checkpoints"
LOCK_SUFFIX = ".lock"
HOLDS_SUFFIX = ".holds.json"
BACKUP_STATE_SUFFIX = ".backup.json"
FORWARD_CURSOR_SUFFIX = ".forward.json"

#: Held by ``riskaudit collect`` in each central stream directory; its presence tells a
#: writer that the directory holds another host's records, byte for byte, and is not
#: to be appended to.
CENTRAL_MARK = ".collector.lock"
#: The central copy of a stream, in its directory of ``riskaudit collect --out``.
CENTRAL_NAME = "audit" + LOG_SUFFIX
#: The ranges the central copy lacks (gaps called, records that broke the chain), kept
#: across restarts: the watermark must never pass them.
HOLES_NAME = CENTRAL_NAME + ".holes.json"

#: Globs for the logs and the sidecars of a directory.
LOG_GLOB = "*" + LOG_SUFFIX
SIDECAR_GLOB = "*" + SIDECAR_SUFFIX

_x = re.escape
_SEGMENT_STAMP = "%Y%m%dT%H%M%SZ"
_COMPRESSED = "(" + "|".join(_x(s) for s in SUFFIXES.values()) + ")"  # (\.gz|\.zst)
#: ``.seg-<first>-<last>-<start>.jsonl``, anywhere in a name.
_SEGMENT = _x(SEGMENT_INFIX) + r"(\d{20})-(\d{20})-(\d{8}T\d{6}Z)" + _x(LOG_SUFFIX)
_ANY_SEGMENT = re.compile(_SEGMENT)
#: Named like a log file: ``*.jsonl``, rotated (``.1``, ``-20261126``), compressed.
_LOG_NAME = re.compile(_x(LOG_SUFFIX) + r"(\.\d+|-\d{8,})?" + _COMPRESSED + "?$")
#: Never one of a stream's files when a directory is scanned.
_NOT_IN_STREAM = re.compile(
    "|".join(
        (
            _x(LOCK_SUFFIX) + "$",
            _x(TORN_INFIX),
            _x(UNTRUSTED_INFIX),
            _x(SIDECAR_SUFFIX) + "$",
            _x(TEMP_INFIX),
            r"^\.",
        )
    )
)
#: Files that sit next to a log but hold no records of it, and what they are.
_NOT_RECORDS = (
    (re.compile(_x(LOCK_SUFFIX) + "$"), "the writer's lock file"),
    (re.compile(_x(HOLDS_SUFFIX) + "$"), "legal holds"),
    (re.compile(_x(BACKUP_STATE_SUFFIX) + "$"), "the backup state"),
    (re.compile(_x(SIDECAR_SUFFIX + TORN_INFIX)), "bytes cut from the checkpoint sidecar"),
    (re.compile(_x(UNTRUSTED_INFIX)), "a file set aside before it held a trusted record"),
    (re.compile(r"(^\.|" + _x(TEMP_INFIX) + ")"), "a temporary file"),
)
_TORN = re.compile(_x(TORN_INFIX))
_SIDECAR = re.compile(_x(SIDECAR_SUFFIX) + "$")
#: Closed pieces of a stream, never its growing end: sealed segments, rotated files.
_CLOSED = re.compile(
    _x(SEGMENT_INFIX)
    + r"\d{20}-\d{20}-|"
    + _x(LOG_SUFFIX)
    + r"\.\d+"
    + _COMPRESSED
    + "?$|"
    + _x(LOG_SUFFIX)
    + r"-\d{8,}"
)
#: ``.recovered-<first>-<last>.jsonl``, plain or gzip-compressed.
_RECOVERED = re.compile(
    _x(RECOVERED_INFIX) + r"(\d+)-(\d+)" + _x(LOG_SUFFIX) + "(?:" + _x(SUFFIXES["gzip"]) + ")?$"
)


def utc_stamp() -> str:
    """Now, for file names: ``20261126T093000.123456789Z`` (sorts in time order)."""
    ns = time.time_ns()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def uncompressed_name(name: str) -> str:
    """``x.jsonl`` for ``x.jsonl``, ``x.jsonl.gz`` and ``x.jsonl.zst``."""
    for suffix in SUFFIXES.values():
        name = name.removesuffix(suffix)
    return name


def log_stem(log_path: Path) -> str:
    """``risk_audit`` for ``risk_audit.jsonl``."""
    name = log_path.name
    return name[: -len(LOG_SUFFIX)] if name.endswith(LOG_SUFFIX) else name


# -- sealed segments and rotated files ---------------------------------------------------


def segment_name(log_path: Path, first: int, last: int, start_ns: int) -> str:
    """The sealed segment's file name (in the log's directory)."""
    stamp = time.strftime(_SEGMENT_STAMP, time.gmtime(start_ns // 1_000_000_000))
    return f"{log_stem(log_path)}{SEGMENT_INFIX}{first:020d}-{last:020d}-{stamp}{LOG_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int, int] | None:
    """(first, last, start_ns) from any sealed segment name."""
    m = _ANY_SEGMENT.search(name)
    if m is None:
        return None
    start = calendar.timegm(time.strptime(m.group(3), _SEGMENT_STAMP)) * 1_000_000_000
    return int(m.group(1)), int(m.group(2)), start


def match_segment_name(log_path: Path, name: str) -> tuple[int, int, int, str | None] | None:
    """(first, last, start_ns, compression) when ``name`` is one of this log's sealed
    segments; compression is None, ``"gzip"`` or ``"zstd"``."""
    m = re.match(_x(log_stem(log_path)) + _SEGMENT + _COMPRESSED + "?$", name)
    if m is None:
        return None
    start = time.strptime(m.group(3), _SEGMENT_STAMP)
    compression = {s: method for method, s in SUFFIXES.items()}.get(m.group(4) or "")
    return int(m.group(1)), int(m.group(2)), calendar.timegm(start) * 1_000_000_000, compression


def is_rotated_name(log_path: Path, name: str) -> bool:
    """Whether ``name`` is the log rotated by logrotate: ``risk_audit.jsonl.1``,
    ``risk_audit.jsonl.2.gz``, ``risk_audit.jsonl-20261126``."""
    prefix = log_path.name
    if not name.startswith(prefix) or name == prefix:
        return False
    rest = uncompressed_name(name[len(prefix) :])
    return (rest.startswith(".") and rest[1:].isdigit()) or (
        rest.startswith("-") and rest[1:].isdigit()
    )


def is_closed_name(name: str) -> bool:
    """Whether ``name`` is a closed piece of a stream, never its growing end: a sealed
    segment or a rotated file."""
    return _CLOSED.search(name) is not None


# -- files next to a log -----------------------------------------------------------------


def lock_path_for(log_path: Path) -> Path:
    """``<log>.lock`` next to the log."""
    return log_path.with_name(log_path.name + LOCK_SUFFIX)


def sidecar_path(log_path: Path) -> Path:
    """``<log>.checkpoints``: the checkpoint sidecar next to the log."""
    return log_path.with_name(log_path.name + SIDECAR_SUFFIX)


def sidecar_log_stem(sidecar: Path) -> str:
    """The stem of the log a sidecar belongs to: ``risk_audit`` for
    ``risk_audit.jsonl.checkpoints``."""
    return log_stem(Path(sidecar.name.removesuffix(SIDECAR_SUFFIX)))


def holds_path(log_path: Path) -> Path:
    """``<log>.holds.json``: the legal holds."""
    return log_path.with_name(log_path.name + HOLDS_SUFFIX)


def backup_state_path(log_path: Path) -> Path:
    """``<log>.backup.json``: what the backup copied."""
    return log_path.with_name(log_path.name + BACKUP_STATE_SUFFIX)


def forward_cursor_path(log_path: Path) -> Path:
    """``<log>.forward.json``: the forwarder's cursor, with the collector's watermark
    that retention reads."""
    return log_path.with_name(log_path.name + FORWARD_CURSOR_SUFFIX)


def torn_path(path: Path) -> Path:
    """``<file>.torn-<UTC now>``: where bytes cut from the file's torn tail are kept."""
    return path.with_name(f"{path.name}{TORN_INFIX}{utc_stamp()}")


def untrusted_path(path: Path) -> Path:
    """``<file>.untrusted-<UTC now>``: a file set aside before it held a trusted record
    (not a segment)."""
    return path.with_name(f"{path.name}{UNTRUSTED_INFIX}{utc_stamp()}")


def truncated_path(log_path: Path) -> Path:
    """``<stem>.truncated-<UTC now>.jsonl``: what a copytruncate left in the log that the
    writer did not hold."""
    return log_path.with_name(f"{log_stem(log_path)}{TRUNCATED_INFIX}{utc_stamp()}{LOG_SUFFIX}")


def temp_path(path: Path, tag: str = "") -> Path:
    """``.<file>.tmp<tag>``: the temporary file of a write that is renamed to ``path``
    (hidden, and never read as records)."""
    return path.with_name(f".{path.name}{TEMP_INFIX}{tag}")


# -- recovered segments ------------------------------------------------------------------


def recovered_path(log_path: Path, first: int, last: int) -> Path:
    """``<log>.recovered-<first>-<last>.jsonl``: records put back into the hole a ``gap``
    record names."""
    return log_path.with_name(f"{log_path.name}{RECOVERED_INFIX}{first}-{last}{LOG_SUFFIX}")


def recovered_range(name: str) -> tuple[int, int] | None:
    """(first, last) from a recovered segment's name (plain or ``.gz``), else None."""
    m = _RECOVERED.search(name)
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def recovered_glob(log_path: Path, *, compressed: bool = False) -> str:
    """The glob for the log's recovered segments, ``<log>.recovered-*.jsonl``; with
    ``compressed``, compressed ones too (check each name with :func:`recovered_range`)."""
    return f"{log_path.name}{RECOVERED_INFIX}*" + ("" if compressed else LOG_SUFFIX)


# -- the spool ---------------------------------------------------------------------------


def spool_file_name(log_name: str, first_seq: int) -> str:
    """``<log>.spool-<first seq, 20 digits>.jsonl``: a spool file of the log named
    ``log_name`` (sorts in ``seq`` order)."""
    return f"{log_name}{SPOOL_INFIX}{first_seq:020d}{LOG_SUFFIX}"


#: The glob for the spool files of every log in a spool directory.
SPOOL_GLOB = "*" + SPOOL_INFIX + "*" + LOG_SUFFIX


def spool_file_seq(log_name: str, name: str) -> int | None:
    """The first ``seq`` a spool file of this log is named for, or None for any other
    name."""
    prefix = log_name + SPOOL_INFIX
    if name.startswith(prefix) and name.endswith(LOG_SUFFIX):
        digits = name[len(prefix) : -len(LOG_SUFFIX)]
        if digits.isdigit():
            return int(digits)
    return None


# -- what a name says to a reader --------------------------------------------------------


def is_log_name(name: str) -> bool:
    """Named like a log file: ``*.jsonl``, rotated or sealed, plain or compressed."""
    return _LOG_NAME.search(name) is not None


def is_stream_file_name(name: str) -> bool:
    """Whether a directory's file of this name is one of its streams' files (lock files,
    torn tails, set-aside untrusted files, sidecars and temporary files are not)."""
    return is_log_name(name) and _NOT_IN_STREAM.search(name) is None


def not_records(name: str) -> str | None:
    """What a file of this name holds when it sits next to a log but holds no records
    of it (its lock, holds, backup state, ...), or None."""
    return next((why for rx, why in _NOT_RECORDS if rx.search(name)), None)


def is_torn_name(name: str) -> bool:
    """Bytes cut from a torn tail (``.torn-``), not records."""
    return _TORN.search(name) is not None


def is_sidecar_name(name: str) -> bool:
    """A checkpoint sidecar (``*.checkpoints``)."""
    return _SIDECAR.search(name) is not None
