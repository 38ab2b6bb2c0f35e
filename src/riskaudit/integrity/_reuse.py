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
"""

from __future__ import annotations

import orjson

#: Distinct event ids remembered; past this a warning says the check is incomplete.
LIMIT = 5_000_000
_ID = b'"event_id":"'
_PRINCIPAL = b',"principal":{"name":'


class ReusedIds:
    """Feed it event record lines in ``seq`` order; it names ids reused for other content."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._seen: dict[bytes, tuple[int, int]] = {}
        self._reused: list[tuple[str, int, int]] = []
        self._full = False

    def see(self, seq: int, line: bytes, start: int = 0) -> None:
        i = line.find(_ID, start)
        if i < 0:
            return
        i += len(_ID)
        j = line.find(b'"', i)
        while j > 0 and line[j - 1] == 0x5C:  # an escaped quote inside the id
            j = line.find(b'"', j + 1)
        if j < 0:
            return
        key = line[i:j]
        cut = line.rfind(_PRINCIPAL, j)
        content = hash(line[j:cut] if cut > 0 else line[j:])
        known = self._seen.get(key)
        if known is None:
            if len(self._seen) < self.limit:
                self._seen[key] = (seq, content)
            else:
                self._full = True
            return
        if known[0] != seq and known[1] != content:
            self._reused.append((_text(key), known[0], seq))

    def warnings(self) -> list[str]:
        out = [
            f"event_id {eid!r} reused with different content: seq {first} and seq {later} "
            "(past the service's dedupe window, or from a library caller)"
            for eid, first, later in self._reused
        ]
        if self._full:
            out.append(f"event id reuse checked for the first {self.limit:,} distinct ids only")
        return out


def _text(raw: bytes) -> str:
    try:
        value = orjson.loads(b'"' + raw + b'"')
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    return value if isinstance(value, str) else raw.decode("utf-8", "replace")
