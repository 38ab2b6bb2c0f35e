"""Fallback order, replay and gaps, with write failures injected at the file boundary.

The real faults (full disks, read-only mounts, a non-root writer, kill -9) are in
tests/faults/; these tests drive the same code paths quickly and deterministically.
"""

from __future__ import annotations

import errno
import io
import os
import re
import time
from pathlib import Path

import pytest

from riskaudit import (
    AuditConfig,
    AuditDegradedError,
    AuditLog,
    EventPriority,
    EventType,
    RiskEvent,
    verify_paths,
)
from riskaudit.format import write_durably
from riskaudit.log import AppendFile
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.log._writer import Writer
from riskaudit.recovery import recover
from tests.helpers import event, records, stream_event_ids, stream_records, synced_clock


class Faults:
    """Make writes to files under chosen directories fail with a chosen errno."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.broken: dict[Path, int] = {}
        real = AppendFile.write

        def write(f: AppendFile, chunks: list[bytes]) -> None:
            for directory, err in self.broken.items():
                if directory in f.path.parents:
                    raise OSError(err, "injected")
            real(f, chunks)

        monkeypatch.setattr(AppendFile, "write", write)
        # Every write through the patched Python path, none in the core's turns.
        monkeypatch.setattr(Writer, "native_commit", False)

    def wait_until(self, log: AuditLog, destination: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while log.health().destination != destination:
            assert time.monotonic() < deadline, log.health()
            time.sleep(0.01)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Faults:
    return Faults(monkeypatch)


def cfg(tmp_path: Path, **kw: object) -> AuditConfig:
    base = AuditConfig(
        log_path=tmp_path / "primary" / "log.jsonl",
        spool_dir=tmp_path / "spool",
        flush_interval=0.001,
        retry_max=0.05,
    )
    return base.with_(**kw)


def ids_in(path: Path) -> list[str]:
    """Event ids in the log's directory, each record read once, in seq order."""
    return stream_event_ids(path.parent)


def test_primary_failure_goes_to_spool_and_replays(tmp_path: Path, faults: Faults) -> None:
    """ENOSPC on the primary: batches go to the spool (durable); the failed file is set
    aside untouched and the spool replayed into a new file in seq order, whose segment
    record names the old one and its trusted length; the spool files are removed."""
    config = cfg(tmp_path)
    assert config.spool_dir is not None
    produced = []
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(10):
            produced.append(event(i))
            log.append(produced[-1])
        log.flush()
        faults.broken[config.log_path.parent] = errno.ENOSPC
        for i in range(10, 30):
            produced.append(event(i))
            log.append(produced[-1])
        log.flush()  # durable in the spool: no error
        assert log.health().status == "degraded"
        assert list(config.spool_dir.glob("*.spool-*.jsonl"))
        del faults.broken[config.log_path.parent]
        faults.wait_until(log, "primary")
        for i in range(30, 40):
            produced.append(event(i))
            log.append(produced[-1])
    assert not list(config.spool_dir.glob("*.spool-*.jsonl"))
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings
    assert ids_in(config.log_path) == [e.event_id for e in produced]
    (aside,) = config.log_path.parent.glob("log.seg-*.jsonl")
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    assert segment["reason"] == "untrusted" and segment["previous"] == aside.name
    assert segment["previous_trusted_bytes"] == aside.stat().st_size


def test_stdout_when_spool_fails_too_then_gap_and_recover(tmp_path: Path, faults: Faults) -> None:
    """Primary and spool both failing: full records on stdout, flush raises naming them,
    a gap record marks the hole, and recover fills it so verify passes."""
    config = cfg(tmp_path)
    assert config.spool_dir is not None
    out = io.BytesIO()
    produced = []
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        log.append(event(0))
        log.flush()
        faults.broken[config.log_path.parent] = errno.EIO
        faults.broken[config.spool_dir] = errno.ENOSPC
        for i in range(1, 6):
            produced.append(event(i))
            log.append(produced[-1])
        with pytest.raises(AuditDegradedError) as info:
            log.flush()
        assert info.value.first_seq == 4 and info.value.last_seq == 8
        assert log.health().status == "failing"
        faults.broken.clear()
        faults.wait_until(log, "primary")
        log.append(event(6))
    report = verify_paths([config.log_path.parent])
    assert [(f.seq, f.kind) for f in report.findings] == [(4, "unrecovered")]
    lines = out.getvalue().splitlines()
    on_stdout = [int(line.split(b",")[0].split(b":")[1]) for line in lines]
    gap = next(r for r in records(config.log_path) if r.get("kind") == "gap")
    # One gap record names the whole stdout-only range, a gap record that failed too
    # (the spool probed fine but its write failed) included.
    assert (gap["first_seq"], gap["last_seq"]) == (4, on_stdout[-1])
    assert on_stdout == list(range(4, on_stdout[-1] + 1))
    assert all(line.startswith(b'AUDIT_EMERGENCY {"seq":') for line in lines)
    stdout_file = tmp_path / "stdout.log"
    stdout_file.write_bytes(out.getvalue())
    rep = recover([stdout_file], config.log_path, config, clock=synced_clock)
    last = on_stdout[-1]
    recovered = f"log.jsonl.recovered-4-{last}.jsonl"
    assert rep.filled == [(4, last, recovered)]
    assert rep.verify is not None
    assert rep.verify.valid, rep.verify.findings
    again = recover([stdout_file], config.log_path, config, clock=synced_clock)
    assert again.appended == 0 and again.filled == []
    assert again.verify is not None and again.verify.valid
    (aside,) = config.log_path.parent.glob("log.seg-*.jsonl")  # the failed file, untouched
    assert sorted(config.log_path.parent.iterdir()) == sorted(
        [
            config.log_path,
            aside,
            config.log_path.with_name("log.jsonl.lock"),
            config.log_path.with_name("log.jsonl.checkpoints"),
            config.log_path.with_name(recovered),
        ]
    )


def test_overflow_kill_switch_never_waits_others_go_unsequenced(tmp_path: Path) -> None:
    """Writer stalled, queue full: KILL_SWITCH appends return at once (the reserve);
    ordinary ones wait the append timeout, then go out as unsequenced lines that
    recover appends as recovered records."""
    config = AuditConfig(
        log_path=tmp_path / "log.jsonl",
        queue_size=8,
        reserve=2,
        backlog_limit=0,
        append_timeout=0.05,
    )
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        with log.stall_writer():
            for i in range(6):
                assert log.append(event(i)) is not None
            started = time.monotonic()
            assert log.append(event(99)) is None
            assert time.monotonic() - started >= 0.045
            for _ in range(2):
                started = time.monotonic()
                ks = RiskEvent(
                    EventType.KILL_SWITCH, EventPriority.CRITICAL, "t", {"action": "activate"}
                )
                assert log.append(ks) is not None
                assert time.monotonic() - started < 0.01
            started = time.monotonic()
            assert log.append(RiskEvent(EventType.KILL_SWITCH)) is None  # reserve full
            assert time.monotonic() - started < 0.01
        assert log.unsequenced == 2
    (tmp_path / "stdout.log").write_bytes(out.getvalue())
    rep = recover([tmp_path / "stdout.log"], config.log_path, config, clock=synced_clock)
    assert rep.found_unsequenced == 2 and rep.appended == 2
    assert rep.verify is not None and rep.verify.valid
    recovered = [r for r in records(config.log_path) if r.get("kind") == "recovered"]
    assert {r["event"]["data"].get("i") for r in recovered} == {99, None}
    assert (
        recover([tmp_path / "stdout.log"], config.log_path, config, clock=synced_clock).appended
        == 0
    )


def test_deleted_file_is_restored_from_the_open_handle(tmp_path: Path) -> None:
    """rm of the open log: the writer notices and copies it back, losing nothing."""
    config = cfg(tmp_path)
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(50):
            log.append(event(i))
        log.flush()
        config.log_path.unlink()
        deadline = time.monotonic() + 5
        while not config.log_path.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for i in range(50, 60):
            log.append(event(i))
        assert log.counters.rescued == 1
    assert verify_paths([config.log_path]).valid
    assert len([r for r in records(config.log_path) if "event_id" in r]) == 60


def test_renamed_file_is_reopened_and_the_chain_continues(tmp_path: Path) -> None:
    """mv of the open log (logrotate without a signal): the path is reopened and the
    chain continues across the two files."""
    config = cfg(tmp_path)
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(20):
            log.append(event(i))
        log.flush()
        config.log_path.rename(config.log_path.with_name("log.jsonl.1"))
        deadline = time.monotonic() + 5
        while not config.log_path.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for i in range(20, 30):
            log.append(event(i))
        assert log.counters.reopened == 1
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings
    assert len(report.files) == 2


def test_restart_replays_a_spool_left_behind(tmp_path: Path, faults: Faults) -> None:
    """A writer that stopped while spooling: the next one replays the spool first."""
    config = cfg(tmp_path, retry_max=60.0)
    assert config.spool_dir is not None
    with AuditLog(config, clock=synced_clock) as log:
        log.append(event(0))
        log.flush()
        faults.broken[config.log_path.parent] = errno.EROFS
        for i in range(1, 5):
            log.append(event(i))
        log.flush()
    faults.broken.clear()
    assert list(config.spool_dir.glob("*.spool-*"))
    with AuditLog(config, clock=synced_clock) as log:
        log.append(event(5))
    assert not list(config.spool_dir.glob("*.spool-*"))
    report = verify_paths([config.log_path])
    assert report.valid, report.findings
    kinds = [r.get("kind", "event") for r in records(config.log_path)]
    assert kinds == ["genesis", "start", "event", *["event"] * 4, "stop", "start", "event", "stop"]


def test_partial_write_whose_truncate_fails_is_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch half-written before ENOSPC, and the truncate back failing too: the torn
    bytes stay, the batch goes to the spool; when the primary is back, the file is set
    aside untouched (trusted up to its last synced byte), the spool replayed into a new
    file, and the chain verifies with every event once."""
    from riskaudit.log import _destinations

    config = cfg(tmp_path)
    real_write = write_durably
    broken = {"on": False}

    def half_then_enospc(fd: int, chunks: list[bytes], offset: int) -> None:
        if not broken["on"] or "/primary/" not in os.readlink(f"/proc/self/fd/{fd}"):
            real_write(fd, chunks, offset)
            return
        data = b"".join(chunks)
        os.pwrite(fd, data[: len(data) // 2 + 7], offset)
        raise OSError(errno.ENOSPC, "injected: disk full mid-batch")

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "injected: truncate failed")

    monkeypatch.setattr(_destinations, "write_durably", half_then_enospc)
    # Every write through the patched Python path, none in the core's turns.
    monkeypatch.setattr(Writer, "native_commit", False)
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(10):
            log.append(event(i))
        log.flush()
        broken["on"] = True
        with monkeypatch.context() as m:
            m.setattr(os, "ftruncate", no_truncate)
            for i in range(10, 20):
                log.append(event(i))
            log.flush()  # durable in the spool
            assert not config.log_path.read_bytes().endswith(b"\n")  # torn bytes stayed
        broken["on"] = False
        Faults.wait_until(Faults.__new__(Faults), log, "primary")
        log.append(event(20))
    segment = next(r for r in records(config.log_path) if r.get("kind") == "segment")
    aside = config.log_path.parent / segment["previous"]
    assert not aside.read_bytes().endswith(b"\n")  # kept untouched, torn bytes and all
    assert aside.stat().st_size > segment["previous_trusted_bytes"]
    report = verify_paths([config.log_path.parent])
    assert report.valid, report.findings
    assert any("not part of the stream" in w for w in report.warnings), report.warnings
    ids = [r["event_id"] for r in stream_records(config.log_path.parent) if "event_id" in r]
    assert len(ids) == len(set(ids)) == 21


def one_event_only_on_stdout(log: AuditLog, config: AuditConfig, faults: Faults) -> None:
    """One durable event, then one that reaches only stdout (primary and spool both
    failing; seq 4 after the opening records), then the primary back."""
    assert config.spool_dir is not None
    log.append(event(0))
    log.flush()
    faults.broken[config.log_path.parent] = errno.EIO
    faults.broken[config.spool_dir] = errno.EIO
    log.append(event(1))
    with pytest.raises(AuditDegradedError):
        log.flush()
    faults.broken.clear()
    faults.wait_until(log, "primary")


def test_recover_command_fills_the_gap_and_exits_0(tmp_path: Path, faults: Faults) -> None:
    """`riskaudit recover STDOUT --into LOG`: prints what it filled, verifies, exit 0;
    a missing source is a usage error (exit 2)."""
    from typer.testing import CliRunner

    from riskaudit.cli import app

    config = cfg(tmp_path)
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        one_event_only_on_stdout(log, config, faults)
    capture = tmp_path / "container.log"
    capture.write_bytes(out.getvalue())
    runner = CliRunner()
    assert runner.invoke(app, ["verify", str(config.log_path.parent)]).exit_code == 1
    result = runner.invoke(app, ["recover", str(capture), "--into", str(config.log_path)])
    assert result.exit_code == 0, result.output
    assert re.search(r"filled: seq 4-\d+ ", result.output), result.output
    assert "verify: VALID" in result.output
    missing = runner.invoke(
        app, ["recover", str(tmp_path / "nope"), "--into", str(config.log_path)]
    )
    assert missing.exit_code == 2


def test_recover_finds_the_gap_in_a_compressed_segment_from_a_compressed_capture(
    tmp_path: Path, faults: Faults
) -> None:
    """The gap record sits in a sealed segment compressed since, and the container's
    log was rotated and gzipped: recover reads both, fills the hole, and verifies."""
    import gzip

    from typer.testing import CliRunner

    from riskaudit.cli import app
    from riskaudit.format import compress, list_segments

    config = cfg(tmp_path)
    out = io.BytesIO()
    with AuditLog(config, emergency=EmergencyOutput(stream=out), clock=synced_clock) as log:
        one_event_only_on_stdout(log, config, faults)
        log.append(event(2))
        log.rotate()
        log.append(event(3))
        with pytest.raises(AuditDegradedError):  # seq 4 stays stdout-only for this process
            log.flush()
    for seg in list_segments(config.log_path):  # the failed file set aside, and the rotated one
        compress(seg, "gzip")
    capture = tmp_path / "container-json.log.1.gz"
    capture.write_bytes(gzip.compress(out.getvalue()))
    runner = CliRunner()
    assert runner.invoke(app, ["verify", str(config.log_path.parent)]).exit_code == 1
    result = runner.invoke(app, ["recover", str(capture), "--into", str(config.log_path)])
    assert result.exit_code == 0, result.output
    assert re.search(r"filled: seq 4-\d+ ", result.output), result.output
    assert "verify: VALID" in result.output
