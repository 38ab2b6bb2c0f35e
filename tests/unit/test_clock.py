"""Clock evidence: the kernel's view in start, a clock record on change and before checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from riskaudit import AuditConfig, AuditLog, EventPriority, EventType, RiskEvent
from riskaudit.clock import ClockState, read_clock
from tests.helpers import records

GOOD = ClockState(True, 0.0002, 0.00001, "TIME_OK")
UNSYNCED = ClockState(False, 16.0, 16.0, "TIME_ERROR")


def clock_records(path: Path) -> list[dict[str, object]]:
    return [r for r in records(path) if r.get("kind") == "clock"]


def test_the_real_kernel_clock_can_be_read() -> None:
    """adjtimex answers on Linux: a state name and errors in seconds."""
    state = read_clock()
    assert state.state.startswith("TIME_") or state.state.startswith("unknown")
    if state.max_error_s is not None:
        assert state.max_error_s >= 0


def test_clock_state_is_in_start_and_chained_before_the_checkpoint_that_covers_it(
    tmp_path: Path,
) -> None:
    """start carries the clock's synchronisation and errors; a changed reading goes into
    the chain as a clock record right before the next checkpoint (which covers it), and
    no checkpoint carries a field its signature does not cover."""
    readings = iter([GOOD] + [ClockState(True, 0.0005, 0.0001, "TIME_OK")] * 100)
    cfg = AuditConfig(log_path=tmp_path / "c.jsonl", checkpoint_records=1)
    with AuditLog(cfg, clock=lambda: next(readings)) as log:
        log._monitor.check_clock()
        log.append(RiskEvent(EventType.PRE_TRADE_CHECK, EventPriority.HIGH, "t", {}))
    recs = records(cfg.log_path, checkpoints=True)
    start = next(r for r in recs if r.get("kind") == "start")
    assert start["clock"]["synchronised"] is True and start["clock"]["max_error_s"] == 0.0002
    assert all("clock" not in r for r in recs if r.get("kind") == "checkpoint")
    clock = [i for i, r in enumerate(recs) if r.get("kind") == "clock"]
    assert len(clock) == 1 and recs[clock[0]]["max_error_s"] == 0.0005
    assert recs[clock[0] + 1]["kind"] == "checkpoint"


def test_unsynchronised_clock_writes_a_warning_record_and_only_warns(tmp_path: Path) -> None:
    """An unsynchronised clock: a clock record at start and a health warning, but the
    clock is not a reason for degraded health by default."""
    cfg = AuditConfig(log_path=tmp_path / "c.jsonl")
    with AuditLog(cfg, clock=lambda: UNSYNCED) as log:
        health = log.health()
        assert health.warnings == ("clock: unsynchronised",)
        assert not any("clock" in r for r in health.reasons)
    clock = clock_records(cfg.log_path)
    assert len(clock) == 1 and clock[0]["problem"] == "unsynchronised"


def test_clock_required_makes_health_degraded(tmp_path: Path) -> None:
    """RISK_AUDIT_CLOCK_REQUIRED=1 turns the clock warning into degraded health."""
    cfg = AuditConfig(log_path=tmp_path / "c.jsonl", clock_required=True)
    with AuditLog(cfg, clock=lambda: UNSYNCED) as log:
        health = log.health()
        assert health.status == "degraded" and "clock: unsynchronised" in health.reasons


def test_a_clock_record_on_each_change_not_each_event(tmp_path: Path) -> None:
    """The clock goes bad then good again: exactly two clock records, however many events."""
    from riskaudit.log import _monitor

    states = {"now": GOOD}
    cfg = AuditConfig(log_path=tmp_path / "c.jsonl", clock_max_error=0.001)
    old_every = _monitor.CLOCK_EVERY
    _monitor.CLOCK_EVERY = 0.1
    try:
        with AuditLog(cfg, clock=lambda: states["now"]) as log:
            time.sleep(0.7)
            states["now"] = ClockState(True, 0.5, 0.1, "TIME_OK")  # error too large
            time.sleep(0.7)
            states["now"] = GOOD
            time.sleep(0.7)
            assert log.health().warnings == ()
    finally:
        _monitor.CLOCK_EVERY = old_every
    clock = clock_records(cfg.log_path)
    assert [c["problem"] for c in clock] == ["maximum error 0.5s exceeds 0.001s", "ok"]


def test_the_sink_the_bus_and_recover_pass_their_clock_reader_to_the_log(
    tmp_path: Path,
) -> None:
    """Logs the library opens itself take the ``clock=`` seam too: the reader given to
    the sink, the bus and ``recover`` is the one their log reads (an unsynchronised one
    leaves its clock record; a synchronised one none)."""
    from riskaudit import JsonAuditSink, RiskEventBus
    from riskaudit.format import EMERGENCY_PREFIX, encode_event_body, unsequenced_line
    from riskaudit.recovery import recover

    for reader, expected in ((lambda: UNSYNCED, 1), (lambda: GOOD, 0)):
        base = tmp_path / str(expected)
        with JsonAuditSink(base / "sink.jsonl", clock=reader):
            pass
        cfg = AuditConfig(log_path=base / "bus.jsonl")
        with RiskEventBus(config=cfg, clock=reader):
            pass
        capture = base / "stdout.log"
        ev = RiskEvent(EventType.HEARTBEAT, EventPriority.LOW, "t", {})
        line = unsequenced_line("test", time.time_ns(), body=encode_event_body(ev))
        capture.write_bytes(EMERGENCY_PREFIX.encode() + line + b"\n")
        assert recover([capture], base / "again.jsonl", clock=reader).appended == 1
        for name in ("sink", "bus", "again"):
            assert len(clock_records(base / f"{name}.jsonl")) == expected, (name, expected)
    own = AuditConfig(log_path=tmp_path / "own.jsonl")
    with (
        AuditLog(own, clock=lambda: GOOD) as log,
        pytest.raises(TypeError, match="pass clock= to the AuditLog"),
    ):
        RiskEventBus(log, clock=lambda: GOOD)  # the log has its reader already


def test_status_reports_the_clock_as_a_typed_reading_with_its_problem(tmp_path: Path) -> None:
    """``LogStatus.clock`` is the reader's state and the problem found in it; its JSON
    keeps the keys the status page reads."""
    from riskaudit.log._status import ClockStatus

    cfg = AuditConfig(log_path=tmp_path / "c.jsonl")
    with AuditLog(cfg, clock=lambda: UNSYNCED) as log:
        status = log.status()
    assert status.clock == ClockStatus(False, 16.0, 16.0, "TIME_ERROR", "unsynchronised")
    assert status.to_dict()["clock"] == {
        "synchronised": False,
        "max_error_s": 16.0,
        "est_error_s": 16.0,
        "state": "TIME_ERROR",
        "problem": "unsynchronised",
    }
