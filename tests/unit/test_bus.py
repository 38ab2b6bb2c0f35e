"""RiskEventBus: audit before handlers, write-ahead, isolation, breaker, SLOs."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from riskaudit import (
    AuditConfig,
    AuditLog,
    EventPriority,
    EventType,
    RiskEvent,
    RiskEventBus,
)
from tests.helpers import event, records, synced_clock


def breach(priority: EventPriority = EventPriority.CRITICAL) -> RiskEvent:
    return RiskEvent(EventType.LIMIT_BREACH, priority, "eng", {"limit": "max_position"})


def test_audit_hand_off_happens_before_any_handler(audit_log: AuditLog) -> None:
    """When a handler runs, the event already has its seq in the audit queue."""
    bus = RiskEventBus(audit_log)
    seen: list[int] = []
    bus.subscribe(EventType.LIMIT_BREACH, lambda e: seen.append(audit_log.last_seq))
    seq = bus.publish(breach())
    assert seen == [seq]


def test_durable_publish_runs_handlers_after_fsync(audit_log: AuditLog) -> None:
    """With durable=True the handler sees the record already fsynced."""
    bus = RiskEventBus(audit_log)
    seen: list[tuple[int, int]] = []
    bus.subscribe(EventType.LIMIT_BREACH, lambda e: seen.append((audit_log.durable_seq, 0)))
    seq = bus.publish(breach(), durable=True)
    assert seq is not None
    assert seen[0][0] >= seq


def test_durable_publish_async(audit_log: AuditLog) -> None:
    """publish_async(durable=True) awaits the fsync, then awaits async handlers."""
    bus = RiskEventBus(audit_log)
    seen: list[int] = []

    async def handler(event: RiskEvent) -> None:
        await asyncio.sleep(0)
        seen.append(audit_log.durable_seq)

    async def main() -> int | None:
        bus.subscribe(EventType.LIMIT_BREACH, handler)
        return await bus.publish_async(breach(), durable=True)

    seq = asyncio.run(main())
    assert seq is not None
    assert seen and seen[0] >= seq


def test_sync_publish_runs_an_async_handler_without_a_loop(audit_log: AuditLog) -> None:
    """A coroutine handler subscribed outside any loop still runs on sync publish."""
    bus = RiskEventBus(audit_log)
    seen: list[str] = []

    async def handler(event: RiskEvent) -> None:
        seen.append(event.event_id)

    bus.subscribe(EventType.LIMIT_BREACH, handler)
    ev = breach()
    bus.publish(ev)
    assert seen == [ev.event_id]


def test_publish_from_a_thread_schedules_on_the_subscribers_loop(audit_log: AuditLog) -> None:
    """A coroutine handler runs on the loop it was subscribed from, even when a
    worker thread publishes."""
    bus = RiskEventBus(audit_log)
    done = asyncio.Event()
    loops: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def handler(event: RiskEvent) -> None:
            loops.append(asyncio.get_running_loop())
            done.set()

        bus.subscribe(EventType.LIMIT_BREACH, handler)
        t = threading.Thread(target=bus.publish, args=(breach(),))
        t.start()
        await asyncio.wait_for(done.wait(), 5)
        t.join()
        assert loops == [loop]

    asyncio.run(main())


def test_handler_exception_is_isolated_and_counted(audit_log: AuditLog) -> None:
    """One failing handler does not stop the others or the publisher."""
    bus = RiskEventBus(audit_log)
    seen: list[str] = []

    def bad(event: RiskEvent) -> None:
        raise RuntimeError("boom")

    bus.subscribe(EventType.LIMIT_BREACH, bad)
    bus.subscribe(EventType.LIMIT_BREACH, lambda e: seen.append("ok"))
    bus.publish(breach())
    assert seen == ["ok"] and bus.handler_failures == 1


def test_circuit_breaker_opens_after_n_failures_and_resets(audit_log: AuditLog) -> None:
    """N consecutive failures skip the type's handlers (events still audited) until reset."""
    bus = RiskEventBus(audit_log, failure_threshold=3)
    calls: list[int] = []

    def bad(event: RiskEvent) -> None:
        calls.append(1)
        raise ValueError("bad")

    bus.subscribe(EventType.LIMIT_BREACH, bad)
    for _ in range(5):
        bus.publish(breach())
    assert len(calls) == 3 and bus.circuit_open(EventType.LIMIT_BREACH)
    assert bus.skipped_by_breaker == 2
    audit_log.flush()
    assert sum(1 for r in records(audit_log.path) if r.get("event_type") == "LIMIT_BREACH") == 5
    bus.reset_circuit(EventType.LIMIT_BREACH)
    bus.publish(breach())
    assert len(calls) == 4


def test_priority_filter_and_unsubscribe(audit_log: AuditLog) -> None:
    """A handler sees only its priorities, and nothing after unsubscribing."""
    bus = RiskEventBus(audit_log)
    seen: list[EventPriority] = []
    sub = bus.subscribe(
        EventType.LIMIT_BREACH,
        lambda e: seen.append(e.priority),
        priorities=[EventPriority.CRITICAL],
    )
    bus.publish(breach(EventPriority.LOW))
    bus.publish(breach(EventPriority.CRITICAL))
    sub.unsubscribe()
    bus.publish(breach(EventPriority.CRITICAL))
    assert seen == [EventPriority.CRITICAL]


def test_latency_is_tracked_per_priority_against_its_slo(audit_log: AuditLog) -> None:
    """Latency samples and SLO violations are counted per priority."""
    bus = RiskEventBus(audit_log, slo_seconds={EventPriority.CRITICAL: 1e-9})
    for _ in range(10):
        bus.publish(breach(EventPriority.CRITICAL))
    bus.publish(breach(EventPriority.LOW))
    stats = bus.latency()
    assert stats["CRITICAL"].count == 10 and stats["CRITICAL"].violations == 10
    assert stats["CRITICAL"].p99_us >= stats["CRITICAL"].p50_us > 0
    assert stats["LOW"].count == 1 and stats["LOW"].violations == 0
    assert stats["HIGH"].slo_us == pytest.approx(150)


def test_bus_builds_its_log_from_the_config(tmp_path: Path) -> None:
    """Without an injected log, the bus opens one from the config and closes it."""
    cfg = AuditConfig(log_path=tmp_path / "bus.jsonl")
    with RiskEventBus(config=cfg, clock=synced_clock) as bus:
        bus.publish(breach())
    assert [r.get("kind") for r in records(tmp_path / "bus.jsonl")][-1] == "stop"


def test_the_original_pattern_a_bus_holding_a_sink_works(tmp_path: Path) -> None:
    """The original design's bus held a sink: RiskEventBus(JsonAuditSink(path)) publishes
    through it (audit first, then handlers), durable waits included."""
    from riskaudit import JsonAuditSink

    seen: list[RiskEvent] = []
    with JsonAuditSink(tmp_path / "log.jsonl", clock=synced_clock) as sink:
        bus = RiskEventBus(sink)
        bus.subscribe(EventType.PRE_TRADE_CHECK, seen.append)
        seq = bus.publish(event(1), durable=True)
        assert seq is not None and len(seen) == 1
    assert any(b'"i":1' in line for line in (tmp_path / "log.jsonl").read_bytes().splitlines())


def test_a_bus_given_something_else_says_what_to_pass() -> None:
    """Anything that is not an audit log gets a TypeError naming what the bus takes."""
    with pytest.raises(TypeError, match="AuditSinkProtocol"):
        RiskEventBus("logs/risk_audit.jsonl")  # type: ignore[arg-type]
