"""Synthetic sealed segments spanning years, built from the codec with chosen times.

Each segment is what built-in rotation leaves: records chained across segments, the
last one a signed checkpoint, the name carrying first/last seq and the UTC start, the
checkpoint also in the sidecar. Retention and backup tests run on these, so a
multi-year history exists without waiting years.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riskaudit import EventPriority, EventType, RiskEvent
from riskaudit.format import control_line, encode_event_body, event_line, segment_name
from riskaudit.integrity import load_signer
from riskaudit.log import ZERO_HASH, line_hash
from riskaudit.log._checkpoint import Checkpointer

DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Span:
    """One segment: when it starts, how many events, of which type."""

    start_ns: int
    events: int = 5
    event_type: EventType = EventType.PRE_TRADE_CHECK


def synthetic_stream(log_path: Path, key: Path | None, spans: list[Span]) -> tuple[str, list[Path]]:
    """Write sealed segments (and the sidecar) next to ``log_path``; return the stream
    id and the segment paths, oldest first."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = str(uuid.uuid4())
    cp = Checkpointer(
        stream=stream,
        signer=load_signer(key) if key is not None else None,
        sidecar=log_path.with_name(log_path.name + ".checkpoints"),
        interval=60,
        every_records=0,
    )
    seq, prev = 0, ZERO_HASH
    paths: list[Path] = []
    for n, span in enumerate(spans):
        ts = span.start_ns
        lines: list[bytes] = []
        first = seq + 1
        seq += 1
        opening: tuple[str, dict[str, Any]]
        if n == 0:
            opening = ("genesis", {"stream": stream, "format": "riskaudit/1", "host": "h"})
        else:
            opening = ("segment", {"stream": stream, "reason": "rotate", "previous": None})
        lines.append(control_line(seq, prev, opening[0], opening[1], ts))
        prev = line_hash(lines[-1])
        for i in range(span.events):
            ts += 10**9
            seq += 1
            event = RiskEvent(
                span.event_type,
                EventPriority.HIGH,
                "synthetic",
                {"segment": n, "i": i},
                {"user_id": "tester"},
                timestamp_ns=ts,
            )
            lines.append(event_line(seq, prev, ts, encode_event_body(event)))
            prev = line_hash(lines[-1])
        ts += 10**9
        seq += 1
        fields = cp.fields(seq - 1, prev, ts)
        lines.append(control_line(seq, prev, "checkpoint", fields, ts))
        prev = line_hash(lines[-1])
        cp.written_now(lines[-1], seq)
        path = log_path.with_name(segment_name(log_path, first, seq, span.start_ns))
        path.write_bytes(b"\n".join(lines) + b"\n")
        paths.append(path)
    cp.close()
    return stream, paths
