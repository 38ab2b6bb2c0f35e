"""The events the fault workers produce: a deterministic id each (the suites count by
id) and payloads of varying size, so batches straddle pages and sectors."""

from __future__ import annotations

from riskaudit import EventPriority, EventType, RiskEvent


def numbered_event(source: str, event_id: str, i: int, pad: str) -> RiskEvent:
    """Event number ``i`` of a run, padded with ``pad``."""
    return RiskEvent(
        EventType.PRE_TRADE_CHECK,
        EventPriority.HIGH,
        source,
        {"i": i, "pad": pad},
        event_id=event_id,
    )
