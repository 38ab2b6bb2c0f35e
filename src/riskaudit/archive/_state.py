"""What a backup remembers between runs: ``<log>.backup.json``.

The file lets a run look only at what is new: which local files were seen (and whether
they were sealed, with their span), which segments are archived and verified, how much
of the checkpoint sidecar is shipped, which Object Lock legal holds riskaudit set, and
how the last run went. It is only a cache of facts the archive itself holds: a lost or
unreadable file costs one run that reads everything back (copies are idempotent), so
an unreadable one is logged and started afresh. The JSON keys are kept as they were
when the state was a plain dict, so files written by earlier releases load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import orjson

from riskaudit.format import atomic_write

logger = logging.getLogger("riskaudit.backup")
T = TypeVar("T")


class Span(NamedTuple):
    """The records a sealed file holds, and when they were accepted."""

    first_seq: int
    last_seq: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class SeenFile:
    """A local file as the last run found it; ``size_mtime`` tells whether it changed."""

    size_mtime: tuple[int, int]
    sealed: bool
    span: Span | None = None
    name: str | None = None  # its canonical sealed name, when sealed

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SeenFile:
        span = raw.get("span")
        size, mtime = raw["sig"]
        return cls(
            (int(size), int(mtime)),
            bool(raw["sealed"]),
            Span(*(int(v) for v in span)) if span else None,
            raw.get("name"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sig": list(self.size_mtime),
            "sealed": self.sealed,
            "span": list(self.span) if self.span else None,
            "name": self.name,
        }


@dataclass(frozen=True, slots=True)
class ArchivedSegment:
    """A segment copied and read back: its object, its digests, its lock."""

    key: str
    sha256: str
    content_sha256: str
    retain_until: str | None
    verified_ns: int

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ArchivedSegment:
        return cls(
            str(raw["key"]),
            str(raw["sha256"]),
            str(raw["content_sha256"]),
            raw.get("retain_until"),
            int(raw.get("verified_ns", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "sha256": self.sha256,
            "content_sha256": self.content_sha256,
            "retain_until": self.retain_until,
            "verified_ns": self.verified_ns,
        }


@dataclass(slots=True)
class BackupState:
    """The state a run reads at its start and saves (atomically) as it goes."""

    stream: str | None = None
    #: Local files by name.
    seen: dict[str, SeenFile] = field(default_factory=dict)
    #: Archived segments by their name without a compression suffix.
    archived: dict[str, ArchivedSegment] = field(default_factory=dict)
    #: Bytes of the checkpoint sidecar already shipped.
    checkpoints_offset: int = 0
    #: Object Lock legal holds riskaudit set on the archive (keys).
    legal_holds: list[str] = field(default_factory=list)
    last_success_ns: int | None = None
    last_error: str | None = None
    failures: int = 0

    @classmethod
    def load(cls, path: Path) -> BackupState:
        try:
            raw = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, orjson.JSONDecodeError) as exc:
            logger.error("backup state %s unreadable (%s): starting afresh", path, exc)
            return cls()
        if not isinstance(raw, dict):
            logger.error("backup state %s is not an object: starting afresh", path)
            return cls()
        state = cls()
        # Part by part, entry by entry: a damaged entry is forgotten (the next run reads
        # that file or object again), the rest is kept — above all the legal holds
        # riskaudit set, which it alone may release.
        for part, read in _PARTS.items():
            try:
                read(state, raw.get(part))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                logger.error("backup state %s: %r unreadable (%r), forgotten", path, part, exc)
        state.seen = _entries(path, raw.get("sources"), SeenFile.from_json)
        state.archived = _entries(path, raw.get("objects"), ArchivedSegment.from_json)
        return state

    def save(self, path: Path) -> None:
        data = {
            "stream": self.stream,
            "sources": {k: v.to_json() for k, v in self.seen.items()},
            "objects": {k: v.to_json() for k, v in self.archived.items()},
            "checkpoints_offset": self.checkpoints_offset,
            "legal_holds": self.legal_holds,
            "last_success_ns": self.last_success_ns,
            "last_error": self.last_error,
            "failures": self.failures,
        }
        atomic_write(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _entries(path: Path, table: Any, parse: Callable[[Any], T]) -> dict[str, T]:
    out: dict[str, T] = {}
    for name, entry in table.items() if isinstance(table, dict) else ():
        try:
            out[str(name)] = parse(entry)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            logger.error("backup state %s: entry %r unreadable (%r), forgotten", path, name, exc)
    return out


def _optional_int(value: Any) -> int | None:
    return int(value) if value else None


def _read_stream(state: BackupState, value: Any) -> None:
    state.stream = str(value) if value else None


def _read_offset(state: BackupState, value: Any) -> None:
    state.checkpoints_offset = int(value or 0)


def _read_holds(state: BackupState, value: Any) -> None:
    state.legal_holds = [str(k) for k in value or []]


def _read_success(state: BackupState, value: Any) -> None:
    state.last_success_ns = _optional_int(value)


def _read_error(state: BackupState, value: Any) -> None:
    state.last_error = None if value is None else str(value)


def _read_failures(state: BackupState, value: Any) -> None:
    state.failures = int(value or 0)


_PARTS: dict[str, Callable[[BackupState, Any], None]] = {
    "stream": _read_stream,
    "checkpoints_offset": _read_offset,
    "legal_holds": _read_holds,
    "last_success_ns": _read_success,
    "last_error": _read_error,
    "failures": _read_failures,
}
