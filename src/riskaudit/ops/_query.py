"""``GET /v1/events``: records by time, ``seq``, type, source and priority, paginated.

It reads the stream's files as they are — the active log, rotated and compressed
segments, recovered segments — in ``seq`` order, skipping by the fixed ``seq`` head
without parsing until a record can match. The cursor is the last ``seq`` returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from riskaudit.format import parse_ts, split_head
from riskaudit.integrity import expand, line_chunks, order


@dataclass(frozen=True, slots=True)
class Query:
    since_ns: int | None = None
    until_ns: int | None = None
    seq_from: int | None = None
    seq_to: int | None = None
    types: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    priorities: frozenset[str] = frozenset()
    after: int = 0
    limit: int = 100
    include_control: bool = False

    def matches(self, rec: dict[str, Any]) -> bool:
        if "kind" in rec and not self.include_control:
            return False
        if self.types and rec.get("event_type") not in self.types:
            return False
        if self.sources and rec.get("source") not in self.sources:
            return False
        if self.priorities and rec.get("priority") not in self.priorities:
            return False
        if self.since_ns is not None or self.until_ns is not None:
            try:
                ts = parse_ts(str(rec.get("ts")))
            except ValueError:
                return False
            if self.since_ns is not None and ts < self.since_ns:
                return False
            if self.until_ns is not None and ts >= self.until_ns:
                return False
        return True


def run_query(directory: str, q: Query) -> tuple[list[dict[str, Any]], int | None]:
    """(records, next cursor or None) for a log directory."""
    low = max(q.after, (q.seq_from or 1) - 1)
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for src in order(expand([directory])):
        for lines, complete in line_chunks(src.path):
            if not complete:
                continue
            for line in lines:
                head = split_head(line)
                if head is None:
                    continue
                seq = head[0]
                if seq <= low or (q.seq_to is not None and seq > q.seq_to) or seq in seen:
                    continue
                rec = orjson.loads(line)
                if not q.matches(rec):
                    continue
                seen.add(seq)
                out.append(rec)
    out.sort(key=lambda r: int(r["seq"]))
    if len(out) > q.limit:
        page = out[: q.limit]
        return page, int(page[-1]["seq"])
    return out, None
