"""The writer's fast chaining loop writes exactly the bytes the reference encoder does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from riskaudit import EventPriority, EventType, RiskEvent
from riskaudit.format import chain_batch, control_line, encode_event_body, event_line
from riskaudit.log import ZERO_HASH, line_hash

timestamps = st.integers(min_value=0, max_value=4_102_444_800 * 10**9)


@settings(deadline=None, max_examples=100)
@given(
    st.lists(st.tuples(timestamps, st.text(max_size=30), st.booleans()), min_size=1, max_size=40),
    st.integers(64, 4096),
)
def test_chain_batch_equals_the_reference_encoder(
    items: list[tuple[int, str, bool]], chunk_bytes: int
) -> None:
    """chain_batch output (in any chunking) is event_line/control_line joined with newlines."""
    queued: list[tuple[int, int, bytes | tuple[str, dict[str, Any]]]] = []
    for i, (ts, text, control) in enumerate(items, start=10):
        if control:
            queued.append((i, ts, ("start", {"pid": 1, "note": text})))
        else:
            ev = RiskEvent(
                EventType.ALERT, EventPriority.LOW, text, {"t": text}, event_id="e", timestamp_ns=ts
            )
            queued.append((i, ts, encode_event_body(ev)))
    prev, chunks = chain_batch(queued, ZERO_HASH, chunk_bytes)
    expected = []
    ref_prev = ZERO_HASH
    for seq, ts, body in queued:
        if isinstance(body, bytes):
            line = event_line(seq, ref_prev, ts, body)
        else:
            line = control_line(seq, ref_prev, body[0], body[1], ts)
        expected.append(line + b"\n")
        ref_prev = line_hash(line)
    assert b"".join(c for _, c in chunks) == b"".join(expected)
    assert prev == ref_prev
    assert chunks[-1][0] == queued[-1][0]
