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

import orjson

from riskaudit.errors import AuditConfigError, AuditFormatError
from riskaudit.log._codec import format_ts, parse_utc
from riskaudit.log._files import atomic_write


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


def holds_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".holds.json")


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
