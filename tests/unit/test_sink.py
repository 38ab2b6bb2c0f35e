"""JsonAuditSink keeps the original design's surface and never raises into trading code."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import orjson
import pytest

from riskaudit import EnhancedJsonAuditSink, JsonAuditSink, verify_paths
from tests.helpers import event, records, synced_clock


def test_path_from_argument_and_initialized_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_settings: None
) -> None:
    """The argument wins; INFO says 'Audit log file initialized: <absolute path>'."""
    caplog.set_level(logging.INFO)
    path = tmp_path / "seed.jsonl"
    with JsonAuditSink(path, clock=synced_clock) as sink:
        assert sink.write(event()) == 3
        assert sink.flush() is True
    assert f"Audit log file initialized: {path.resolve()}" in caplog.text
    assert verify_paths([path]).valid


def test_path_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_settings: None
) -> None:
    """Without an argument the sink uses RISK_AUDIT_LOG_PATH."""
    monkeypatch.setenv("RISK_AUDIT_LOG_PATH", str(tmp_path / "env.jsonl"))
    with JsonAuditSink(clock=synced_clock) as sink:
        sink.write(event())
    assert len(records(tmp_path / "env.jsonl")) == 4


def test_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_settings: None) -> None:
    """With nothing set the log is logs/risk_audit.jsonl under the working directory."""
    monkeypatch.chdir(tmp_path)
    with EnhancedJsonAuditSink(clock=synced_clock) as sink:
        assert sink.log_path == tmp_path / "logs" / "risk_audit.jsonl"
    assert os.path.exists(tmp_path / "logs" / "risk_audit.jsonl")


def test_write_never_raises_and_keeps_the_event_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A write that cannot be recorded prints a full AUDIT_EMERGENCY line instead."""
    sink = JsonAuditSink(tmp_path / "x.jsonl", clock=synced_clock)
    sink.close()
    ev = event(7)
    assert sink.write(ev) is None
    out = capsys.readouterr().out.strip()
    assert out.startswith("AUDIT_EMERGENCY ")
    payload = orjson.loads(out.removeprefix("AUDIT_EMERGENCY "))
    assert payload["kind"] == "unsequenced" and payload["event"]["event_id"] == ev.event_id
    assert payload["event"]["data"] == {"i": 7}
    assert "falling back to stdout" in caplog.text


def test_flush_returns_false_instead_of_raising(tmp_path: Path) -> None:
    """flush() reports False (and logs why) when records are not durable in time."""
    with JsonAuditSink(tmp_path / "y.jsonl", clock=synced_clock) as sink, sink.log.stall_writer():
        sink.write(event())
        assert sink.flush(timeout=0.05) is False


def test_a_log_that_cannot_be_opened_does_not_break_trading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The log's volume unusable at start-up (here its directory cannot be made): the
    sink does not raise — it starts failing, prints complete AUDIT_EMERGENCY lines,
    logs `falling back to stdout`, retries, and writes to the log once it can."""
    from riskaudit import RiskEventBus

    blocker = tmp_path / "vol"
    blocker.write_text("not a directory")
    path = blocker / "logs" / "risk_audit.jsonl"
    sink = JsonAuditSink(path, clock=synced_clock)
    try:
        assert sink.health().status == "failing" and sink.unavailable
        assert sink.write(event(1)) is None
        assert sink.flush(timeout=0.1) is False
        bus = RiskEventBus(sink)
        assert bus.publish(event(2)) is None
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 2 and all(line.startswith("AUDIT_EMERGENCY ") for line in out)
        assert "falling back to stdout" in caplog.text
        blocker.unlink()  # the volume is back
        deadline = time.monotonic() + 10
        while sink.unavailable is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sink.write(event(3)) is not None and sink.flush()
    finally:
        sink.close()
    assert any(r.get("data") == {"i": 3} for r in records(path))


def test_a_lock_held_by_another_process_keeps_the_sink_degraded_naming_the_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process owns `<log>.lock`: the sink never writes the primary, stays
    failing on stdout, and names the holder's pid."""
    import subprocess
    import sys

    path = tmp_path / "logs" / "log.jsonl"
    code = (
        "from riskaudit import AuditLog, AuditConfig; import sys, time; "
        f"log = AuditLog(AuditConfig(log_path={str(path)!r})); print('ready', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        before = path.read_bytes()
        with JsonAuditSink(path, clock=synced_clock) as sink:
            assert sink.health().status == "failing"
            assert sink.unavailable is not None and str(holder.pid) in sink.unavailable
            assert sink.write(event(1)) is None
        assert path.read_bytes() == before  # the primary was never written
        assert capsys.readouterr().out.startswith("AUDIT_EMERGENCY ")
    finally:
        holder.kill()
        holder.wait()
