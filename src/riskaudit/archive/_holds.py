"""Legal holds: a named instruction that no copy of some records may be deleted.

A hold covers a time range (``since``/``until``, either open) or everything. While any
hold covers a segment, retention deletes no copy of it anywhere; compression (which
keeps every byte) still happens. Holds live in ``<log>.holds.json``, written atomically,
so they survive restarts and travel with the log directory.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from riskaudit.errors import AuditConfigError, AuditFormatError
from riskaudit.format import atomic_write, file_signature, format_ts, parse_utc


@dataclass(frozen=True, slots=True)
class Hold:
    name: str
    reason: str
    since: str | None  # RFC 3339 UTC, or None for "from the beginning"
    until: str | None  # RFC 3339 UTC, or None for "until released"
    created: str
    by: str

    def covers(self, start_ns: int, end_ns: int) -> bool:
        """Whether the hold overlaps records written between these times."""
        lo = parse_utc(self.since) if self.since else None
        hi = parse_utc(self.until) if self.until else None
        return (hi is None or start_ns <= hi) and (lo is None or end_ns >= lo)


def load_holds(path: Path) -> list[Hold]:
    """The holds on file (none if the file does not exist)."""
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except orjson.JSONDecodeError as exc:
        raise AuditFormatError(f"{path}: not a holds file ({exc})") from exc
    try:
        return [Hold(**h) for h in raw["holds"]]
    except (KeyError, TypeError) as exc:
        raise AuditFormatError(f"{path}: not a holds file ({exc})") from exc


def _save(path: Path, holds: list[Hold]) -> None:
    data = {"holds": [asdict(h) for h in holds]}
    atomic_write(path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def add_hold(
    path: Path, name: str, reason: str, since: str | None = None, until: str | None = None
) -> Hold:
    """Place a hold (names are unique). Raises AuditConfigError on a bad time or name."""
    holds = load_holds(path)
    if any(h.name == name for h in holds):
        raise AuditConfigError("hold", f"a hold named {name!r} exists already")
    for label, value in (("--since", since), ("--until", until)):
        if value is not None:
            try:
                parse_utc(value)
            except ValueError as exc:
                raise AuditConfigError(label, str(exc)) from exc
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    hold = Hold(name, reason, since, until, format_ts(time.time_ns()), user)
    _save(path, [*holds, hold])
    return hold


def remove_hold(path: Path, name: str) -> Hold:
    holds = load_holds(path)
    keep = [h for h in holds if h.name != name]
    if len(keep) == len(holds):
        raise AuditConfigError("hold", f"no hold named {name!r}")
    _save(path, keep)
    return next(h for h in holds if h.name == name)


class HoldsWatch:
    """The holds file as last seen, so each change can be chained as a ``holds`` record
    (a hold placed or lifted is evidence: what was kept from deletion, and when)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature = file_signature(path)
        self._holds = self._read()

    def _read(self) -> list[Hold] | str:
        try:
            return load_holds(self.path)
        except AuditFormatError as exc:
            return str(exc)

    def snapshot(self) -> dict[str, Any]:
        """Every hold in force, as a change from nothing."""
        return _holds_change([], self._holds)

    def poll(self) -> dict[str, Any] | None:
        """The change since the last look, or None (one ``stat`` when nothing changed)."""
        signature = file_signature(self.path)
        if signature == self._signature:
            return None
        self._signature = signature
        old, self._holds = self._holds, self._read()
        if old == self._holds:
            return None
        return _holds_change(old if isinstance(old, list) else [], self._holds)


def holds_record(old: list[Hold], new: list[Hold]) -> dict[str, Any]:
    """The fields of a ``holds`` record for a change the CLI made itself."""
    return _holds_change(old, new)


def _holds_change(old: list[Hold], new: list[Hold] | str) -> dict[str, Any]:
    if isinstance(new, str):
        return {"added": [], "removed": [], "holds": None, "error": new}
    before = {h.name for h in old}
    after = {h.name for h in new}
    return {
        "added": sorted(after - before),
        "removed": sorted(before - after),
        "holds": [asdict(h) for h in new],
        "error": None,
    }
