"""Event ids used again for other content: what the service's dedupe window cannot see.

Within ``RISK_AUDIT_DEDUPE_WINDOW`` the service answers a changed re-post with 409 and a
``conflict`` record. Past it (the deduplicator lives in memory), or from a library
caller, the same ``event_id`` can be written twice with different content — a changed
story, which is exactly what an auditor wants to see. It is not tampering (the chain is
intact), so verify and export report it as a warning, naming both ``seq`` values.

Content is the record's bytes after ``"event_id"``, less the ``principal`` the service
adds (a retry is another request, from another request id); the same record copied
into two files (rotation, recovery) has the same ``seq`` and is not a reuse. Python's
``hash`` of those bytes is kept per id, not the bytes, so the memory is bounded by the
number of distinct ids (and capped: past ``LIMIT`` ids the check says it stopped).

Its price in the pure-Python scan, measured on this project's 2-core machine on 200,000
records: verify at ~290k records/s with it, ~420k without (about 1 µs a record: finding
the id, hashing the rest, one dict update). The native scan runs the same check in the
core (``NativeReusedIds``: the same search, an xxh3 digest of the same bytes); this
class is its readable reference, used by ``verify --engine=python``.
"""

from __future__ import annotations

import orjson

from riskaudit import _native

#: Distinct event ids remembered; past this a warning says the check is incomplete.
LIMIT = 2_000_000
_ID = b'"event_id":"'
_TS_SPAN = len(b',"ts":"2026-12-03T08:00:00.000000000Z",')
_PRINCIPAL = b',"principal":{"name":'


class ReusedIds:
    """Feed it event record lines in ``seq`` order; it names ids reused for other content."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._seen: dict[bytes, tuple[int, int]] = {}
        self._reused: list[tuple[str, int, int]] = []
        self._full = False

    def see(self, seq: int, line: bytes, start: int = 0) -> None:
        # The writer puts ``"event_id"`` right after ``ts`` (30 characters): look there
        # first, search only for a line written otherwise.
        i = start + _TS_SPAN
        if not line.startswith(_ID, i):
            i = line.find(_ID, start)
            if i < 0:
                return
        i += len(_ID)
        j = line.find(b'"', i)
        while j > 0 and line[j - 1] == 0x5C:  # an escaped quote inside the id
            j = line.find(b'"', j + 1)
        if j < 0:
            return
        # Without a principal the line ends with timestamp_ns's digits and one brace.
        cut = line.rfind(_PRINCIPAL, j) if line.endswith(b"}}") else -1
        content = hash(line[j:cut] if cut > 0 else line[j:])
        known = self._seen.setdefault(line[i:j], (seq, content))
        if known[1] != content and known[0] != seq:
            self._reused.append((_text(line[i:j]), known[0], seq))
        elif len(self._seen) > self.limit:
            self._seen.popitem()  # the newest goes; the check says it stopped short
            self._full = True

    def warnings(self) -> list[str]:
        return _warnings(self._reused, self._full, self.limit)


class NativeReusedIds:
    """The same check, kept by the core (which feeds it during its scan)."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.core = _native.ReusedIds(limit)
        # A seq beyond the core's 64 bits (a forged line) is kept here instead.
        self.beyond = ReusedIds(limit)

    def see(self, seq: int, line: bytes, start: int = 0) -> None:
        if 0 <= seq < 1 << 63:
            self.core.see(seq, line, start)
        else:
            self.beyond.see(seq, line, start)

    def warnings(self) -> list[str]:
        found = [(_text(raw), first, later) for raw, first, later in self.core.reused()]
        found += self.beyond._reused
        return _warnings(found, self.core.full or self.beyond._full, self.core.limit)


def _warnings(reused: list[tuple[str, int, int]], full: bool, limit: int) -> list[str]:
    out = [
        f"event_id {eid!r} reused with different content: seq {first} and seq {later} "
        "(past the service's dedupe window, or from a library caller)"
        for eid, first, later in reused
    ]
    if full:
        out.append(f"event id reuse checked for the first {limit:,} distinct ids only")
    return out


def _text(raw: bytes) -> str:
    try:
        value = orjson.loads(b'"' + raw + b'"')
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    return value if isinstance(value, str) else raw.decode("utf-8", "replace")
