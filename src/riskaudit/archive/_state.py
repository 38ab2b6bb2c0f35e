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
from collections.abc import Callable, Mapping
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


@dataclass(frozen=True, slots=True)
class BackupState:
    """The state a run reads at its start and saves (atomically) as it goes.

    Frozen, like its entries: a run moves on by replacing it (``dataclasses.replace``)
    and saving the new one, so a reader never holds a state that changes under it.
    Recording an archived segment copies the ``archived`` mapping: a first run over N
    segments copies O(N²) entries (about 10⁷ for ten years of daily segments, well
    under a second), small beside reading every segment back."""

    stream: str | None = None
    #: Local files by name.
    seen: Mapping[str, SeenFile] = field(default_factory=dict)
    #: Archived segments by their name without a compression suffix.
    archived: Mapping[str, ArchivedSegment] = field(default_factory=dict)
    #: Bytes of the checkpoint sidecar already shipped.
    checkpoints_offset: int = 0
    #: Object Lock legal holds riskaudit set on the archive (keys, sorted).
    legal_holds: tuple[str, ...] = ()
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
        # Field by field, entry by entry: a damaged one is forgotten (the next run reads
        # that file or object again), the rest is kept — above all the legal holds
        # riskaudit set, which it alone may release.
        return cls(
            stream=_field(path, raw, "stream", str, None),
            seen=_entries(path, raw.get("sources"), SeenFile.from_json),
            archived=_entries(path, raw.get("objects"), ArchivedSegment.from_json),
            checkpoints_offset=_field(path, raw, "checkpoints_offset", int, 0),
            legal_holds=_field(path, raw, "legal_holds", _keys, ()),
            last_success_ns=_field(path, raw, "last_success_ns", int, None),
            last_error=_field(path, raw, "last_error", str, None),
            failures=_field(path, raw, "failures", int, 0),
        )

    def save(self, path: Path) -> None:
        data = {
            "stream": self.stream,
            "sources": {k: v.to_json() for k, v in self.seen.items()},
            "objects": {k: v.to_json() for k, v in self.archived.items()},
            "checkpoints_offset": self.checkpoints_offset,
            "legal_holds": list(self.legal_holds),
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


def _field(
    path: Path, raw: dict[str, Any], name: str, convert: Callable[[Any], T], default: T
) -> T:
    """``raw[name]`` converted; the default when it is absent, empty or damaged."""
    value = raw.get(name)
    if not value:
        return default
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        logger.error("backup state %s: %r unreadable (%r), forgotten", path, name, exc)
        return default


def _keys(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"a list was expected, not {type(value).__name__}")
    return tuple(str(k) for k in value)
