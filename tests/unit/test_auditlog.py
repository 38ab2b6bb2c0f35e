"""AuditLog: hand-off, durability, restart and repair, the lock, fork, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from riskaudit import (
    AuditClosedError,
    AuditConfig,
    AuditEncodingError,
    AuditFlushTimeoutError,
    AuditForkedError,
    AuditFormatError,
    AuditLockedError,
    AuditLog,
    AuditQueueFullError,
    EventPriority,
    EventType,
    RiskEvent,
    verify_paths,
)
from riskaudit.log import Timings
from tests.helpers import event, records, synced_clock


def kinds(path: Path) -> list[str]:
    return [r.get("kind", "event") for r in records(path)]


def test_new_log_starts_with_genesis_then_start(config: AuditConfig) -> None:
    """A new stream begins with genesis (stream uuid, format) and a start record."""
    with AuditLog(config, clock=synced_clock) as log:
        seq = log.append(event())
    recs = records(config.log_path)
    assert seq == 3
    assert [r.get("kind") for r in recs] == ["genesis", "start", None, "stop"]
    genesis = recs[0]
    assert genesis["prev"] == "0" * 64 and genesis["format"] == "riskaudit/1"
    assert str(__import__("uuid").UUID(genesis["stream"])) == genesis["stream"]
    assert recs[1]["pid"] == os.getpid() and recs[1]["stream"] == genesis["stream"]
    assert verify_paths([config.log_path]).valid


def test_event_record_fields_and_key_order(audit_log: AuditLog) -> None:
    """Event records carry seq, prev, ts, then the event's fields by name."""
    ev = RiskEvent(EventType.LIMIT_BREACH, EventPriority.CRITICAL, "eng", {"x": 1}, {"m": 2})
    audit_log.append(ev)
    audit_log.flush()
    rec = records(audit_log.path)[-1]
    assert list(rec) == [
        "seq",
        "prev",
        "ts",
        "event_id",
        "event_type",
        "priority",
        "source",
        "data",
        "metadata",
        "timestamp_ns",
    ]
    assert rec["event_type"] == "LIMIT_BREACH" and rec["priority"] == "CRITICAL"
    assert rec["event_id"] == ev.event_id and rec["timestamp_ns"] == ev.timestamp_ns
    assert len(rec["ts"]) == 30 and rec["ts"].endswith("Z")


def test_flush_makes_everything_appended_durable(audit_log: AuditLog) -> None:
    """After flush() returns, the durable watermark covers every appended seq."""
    last: int | None = 0
    for i in range(1000):
        last = audit_log.append(event(i))
    assert last is not None
    audit_log.flush(timeout=10)
    assert audit_log.durable_seq >= last
    assert len(records(audit_log.path)) == last


def test_append_snapshots_the_event(audit_log: AuditLog) -> None:
    """Mutating an event's data after append does not change what was recorded."""
    ev = event(1)
    audit_log.append(ev)
    ev.data["i"] = 999
    audit_log.flush()
    assert records(audit_log.path)[-1]["data"]["i"] == 1


def test_restart_resumes_the_chain(config: AuditConfig) -> None:
    """Reopening continues seq and prev, with a start after the previous stop."""
    with AuditLog(config, clock=synced_clock) as log:
        for i in range(5):
            log.append(event(i))
    with AuditLog(config, clock=synced_clock) as log:
        assert log.last_seq == 10  # genesis, start, 5 events, stop, checkpoint, start
        log.append(event(99))
    assert kinds(config.log_path) == [
        "genesis",
        "start",
        *["event"] * 5,
        "stop",
        "start",
        "event",
        "stop",
    ]
    report = verify_paths([config.log_path])
    assert report.valid and report.last_seq == 13  # ..., event, stop, checkpoint


def test_restart_after_crash_has_start_without_stop(config: AuditConfig) -> None:
    """A writer killed without close leaves no stop; the next start shows the crash."""
    code = (
        "import os,sys; from riskaudit import *; from pathlib import Path\n"
        f"log = AuditLog(AuditConfig(log_path=Path({str(config.log_path)!r})))\n"
        "for i in range(50): log.append(RiskEvent(EventType.HEARTBEAT))\n"
        "log.flush(); os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with AuditLog(config, clock=synced_clock):
        pass
    ks = kinds(config.log_path)
    assert ks[-3:] == ["event", "start", "stop"] and "stop" not in ks[:-1]
    assert verify_paths([config.log_path]).valid


def _write_then_tear(config: AuditConfig, tear: int) -> tuple[bytes, bytes]:
    """Write a log whose last event is multi-byte text, drop the stop record after it,
    then cut ``tear`` bytes off that event's line."""
    with AuditLog(config, clock=synced_clock) as log:
        log.append(event(1))
        log.append(event(2, note="€uro ünïcödé 東京" * 3))
        log.flush()
    # A crash mid-write: the sealed close never happened, so no sidecar either.
    config.log_path.with_name(config.log_path.name + ".checkpoints").unlink()
    lines = config.log_path.read_bytes().splitlines(keepends=True)
    # Drop the stop and checkpoint records, then cut into the last event line.
    last = max(i for i, line in enumerate(lines) if b'"event_id"' in line)
    good = b"".join(lines[:last])
    torn = lines[last][: len(lines[last]) - tear]
    config.log_path.write_bytes(good + torn)
    return good, torn


@pytest.mark.parametrize("tear", [1, 7, 40])
def test_torn_tail_is_kept_aside_and_repaired(config: AuditConfig, tear: int) -> None:
    """A torn last line is copied to .torn-*, cut, and named by a repair record."""
    good, torn = _write_then_tear(config, tear)
    with AuditLog(config, clock=synced_clock) as log:
        assert log.repaired is not None
    kept = list(config.log_path.parent.glob("risk_audit.jsonl.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == torn
    recs = records(config.log_path)
    assert config.log_path.read_bytes().startswith(good)
    repair = next(r for r in recs if r.get("kind") == "repair")
    assert repair["cut_bytes"] == len(torn)
    assert repair["cut_sha256"] == hashlib.sha256(torn).hexdigest()
    assert repair["kept_at"] == kept[0].name
    assert verify_paths([config.log_path]).valid


def test_torn_tail_inside_a_multibyte_character(config: AuditConfig) -> None:
    """A cut in the middle of a UTF-8 character is repaired like any torn line."""
    with AuditLog(config, clock=synced_clock) as log:
        log.append(event(1, note="東京東京東京"))
    config.log_path.with_name(config.log_path.name + ".checkpoints").unlink()
    lines = config.log_path.read_bytes().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if b'"event_id"' in line)
    cut_at = lines[last].index("東".encode()) + 1  # inside the 3-byte character
    config.log_path.write_bytes(b"".join(lines[:last]) + lines[last][:cut_at])
    with AuditLog(config, clock=synced_clock) as log:
        assert log.repaired is not None and log.repaired.cut_bytes == cut_at
    assert verify_paths([config.log_path]).valid


def test_garbage_after_the_last_record_is_cut(config: AuditConfig) -> None:
    """NUL bytes (a crash on some file systems) after the last newline are cut aside."""
    with AuditLog(config, clock=synced_clock) as log:
        log.append(event(1))
    with open(config.log_path, "ab") as fh:
        fh.write(b"\0" * 100 + b"\n")
    with AuditLog(config, clock=synced_clock) as log:
        assert log.repaired is not None and log.repaired.cut_bytes == 101
    assert verify_paths([config.log_path]).valid


def test_file_that_is_not_a_log_is_refused_untouched(config: AuditConfig) -> None:
    """Opening a file with no riskaudit record fails clearly and changes nothing."""
    config.log_path.parent.mkdir(parents=True)
    config.log_path.write_bytes(b"hello world\nnot a log\n")
    with pytest.raises(AuditFormatError, match="not a format-v1 log"):
        AuditLog(config, clock=synced_clock)
    assert config.log_path.read_bytes() == b"hello world\nnot a log\n"


@pytest.mark.parametrize("torn", [b"{", b'{"se', b'{"seq":1', b'{"seq":1,"prev":"00ab'])
def test_a_first_record_torn_inside_its_head_is_cut_aside(config: AuditConfig, torn: bytes) -> None:
    """A new file whose first write was cut inside the record's head (a failed write,
    its truncate failing too) is the writer's own torn output, not a foreign file:
    start-up copies it aside and cuts it, and the log opens (seen once in the failing
    system calls suite)."""
    config.log_path.parent.mkdir(parents=True)
    config.log_path.write_bytes(torn)
    with AuditLog(config, clock=synced_clock) as log:
        assert log.repaired is not None and log.repaired.cut_bytes == len(torn)
        log.append(event())
    assert verify_paths([config.log_path]).valid
    assert [p.read_bytes() for p in config.log_path.parent.glob("*.torn-*")] == [torn]


def test_second_writer_in_the_same_process_is_refused(audit_log: AuditLog) -> None:
    """A second AuditLog on the same path gets AuditLockedError naming our pid."""
    with pytest.raises(AuditLockedError) as info:
        AuditLog(audit_log.config, clock=synced_clock)
    assert info.value.pid == os.getpid()
    assert str(os.getpid()) in str(info.value)


def test_second_writer_in_another_process_is_refused(config: AuditConfig) -> None:
    """A writer in another process holds the lock: we get its pid in the error."""
    code = (
        "import sys,time; from riskaudit import *; from pathlib import Path\n"
        f"log = AuditLog(AuditConfig(log_path=Path({str(config.log_path)!r})))\n"
        "print('ready', flush=True); sys.stdin.readline(); log.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(AuditLockedError) as info:
            AuditLog(config, clock=synced_clock)
        assert info.value.pid == proc.pid
    finally:
        proc.communicate("\n", timeout=10)
    with AuditLog(config, clock=synced_clock):  # released on close
        pass


def test_lock_is_released_on_close(config: AuditConfig) -> None:
    """Close releases the lock so the next writer can open."""
    AuditLog(config, clock=synced_clock).close()
    AuditLog(config, clock=synced_clock).close()
    assert verify_paths([config.log_path]).valid


def test_close_is_idempotent_and_append_after_close_fails(config: AuditConfig) -> None:
    """close() twice is fine; append after close raises AuditClosedError."""
    log = AuditLog(config, clock=synced_clock)
    log.close()
    log.close()
    with pytest.raises(AuditClosedError):
        log.append(event())
    log.flush()  # nothing outstanding: returns


def _child_of(log: AuditLog, tmp_path: Path, *, flush: bool = False) -> int:
    """In a forked child: 0 when the parent's log refuses (append, and flush if asked)
    with AuditForkedError and a log of the child's own works; else what went wrong."""
    try:
        try:
            log.append(event())
            return 1
        except AuditForkedError:
            pass
        if flush:
            try:
                log.flush(timeout=1)
                return 1
            except AuditForkedError:
                pass
        try:
            with AuditLog(path=tmp_path / "child.jsonl", clock=synced_clock) as own:
                own.append(event())
        except Exception:
            return 3
        return 0
    except BaseException:
        return 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_cannot_use_the_parents_log(audit_log: AuditLog, tmp_path: Path) -> None:
    """After fork, append in the child raises AuditForkedError; its own log works."""
    pid = os.fork()
    if pid == 0:
        os._exit(_child_of(audit_log, tmp_path))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    audit_log.append(event())  # the parent is unaffected
    audit_log.flush()
    assert verify_paths([tmp_path / "child.jsonl"]).valid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_while_the_core_commits_gives_the_child_a_clear_error(tmp_path: Path) -> None:
    """Forked while a producer thread appends flat out (the writer inside the core's
    commit turns, its locks possibly held): the child gets AuditForkedError from append
    and flush without hanging and can open its own log; the parent goes on, and its log
    verifies with every event once. (The producer logs nothing: CPython leaves a
    stream's lock held in the child if another thread was writing to it at the fork.)"""
    log = AuditLog(
        AuditConfig(log_path=tmp_path / "parent.jsonl", schema_policy="off"), clock=synced_clock
    )
    stop = threading.Event()
    appended: list[int] = []

    def produce() -> None:
        i = 0
        while not stop.is_set():
            log.append(event(i))
            i += 1
        appended.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.2)
    pid = os.fork()
    if pid == 0:  # only this thread exists here
        os._exit(_child_of(log, tmp_path, flush=True))
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    time.sleep(0.1)
    stop.set()
    producer.join()
    log.close()
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert verify_paths([tmp_path / "child.jsonl"]).valid
    assert verify_paths([tmp_path / "parent.jsonl"]).valid
    assert sum(1 for r in records(tmp_path / "parent.jsonl") if "event_id" in r) == appended[0]


def test_full_queue_fail_closed_blocks_then_raises(log_path: Path) -> None:
    """With fail_closed and the writer stalled, append waits the timeout, then raises."""
    cfg = AuditConfig(
        log_path=log_path, queue_size=8, reserve=0, append_timeout=0.05, fail_closed=True
    )
    with AuditLog(cfg, clock=synced_clock) as log, log.stall_writer():
        time.sleep(0.05)
        for i in range(8):
            log.append(event(i))
        started = time.monotonic()
        with pytest.raises(AuditQueueFullError, match="queue full"):
            log.append(event(99))
        waited = time.monotonic() - started
        assert 0.04 <= waited < 1.0
    recs = records(log_path)
    assert [r["data"]["i"] for r in recs if "data" in r] == list(range(8))
    assert verify_paths([log_path]).valid


def test_flush_timeout_raises(log_path: Path) -> None:
    """flush(timeout) raises AuditFlushTimeoutError while the writer cannot finish."""
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log, log.stall_writer():
        time.sleep(0.05)
        log.append(event())
        with pytest.raises(AuditFlushTimeoutError) as info:
            log.flush(timeout=0.1)
        assert info.value.target_seq == log.last_seq


def test_unserialisable_data_is_refused_at_append(audit_log: AuditLog) -> None:
    """A value JSON cannot hold raises AuditEncodingError naming the field; no seq spent."""
    before = audit_log.append(event(1))
    assert before is not None
    with pytest.raises(AuditEncodingError, match="'data'"):
        audit_log.append(event(2, obj=object()))
    with pytest.raises(AuditEncodingError, match="'metadata'"):
        # A non-str key, on purpose: what the type forbids must be refused at run time.
        audit_log.append(RiskEvent(EventType.ALERT, metadata={1: "int key"}))  # type: ignore[dict-item]
    with pytest.raises(AuditEncodingError, match="event_type must be an EventType"):
        audit_log.append(RiskEvent("ALERT"))  # type: ignore[arg-type]
    after = audit_log.append(event(3))
    assert after == before + 1
    audit_log.close()
    assert verify_paths([audit_log.path]).valid


def test_documented_conversions(audit_log: AuditLog) -> None:
    """Decimal is written as its exact string, a set as a list."""
    audit_log.append(event(1, price=Decimal("5012.25"), tags={"a"}))
    audit_log.flush()
    data = records(audit_log.path)[-1]["data"]
    assert data["price"] == "5012.25" and data["tags"] == ["a"]


def test_no_newline_inside_a_record(audit_log: AuditLog) -> None:
    """Newlines in event text are escaped: one record, one line."""
    audit_log.append(event(1, note="line one\nline two\r\n"))
    audit_log.close()
    raw = audit_log.path.read_bytes()
    assert raw.count(b"\n") == len(records(audit_log.path, checkpoints=True))
    assert records(audit_log.path)[-2]["data"]["note"] == "line one\nline two\r\n"


def test_four_producer_threads_lose_and_duplicate_nothing(log_path: Path) -> None:
    """4 threads x 50,000 events: seq gapless, chain valid, every event_id exactly once."""
    cfg = AuditConfig(log_path=log_path)
    ids: list[list[str]] = [[] for _ in range(4)]
    with AuditLog(cfg, clock=synced_clock) as log:

        def produce(n: int) -> None:
            for i in range(50_000):
                ev = event(i, thread=n)
                ids[n].append(ev.event_id)
                log.append(ev)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    report = verify_paths([log_path])
    assert report.valid, report.findings[:5]
    seen = [orjson.loads(line).get("event_id") for line in log_path.read_bytes().splitlines()]
    written = [i for i in seen if i is not None]
    expected = [i for chunk in ids for i in chunk]
    assert len(written) == len(expected) == 200_000
    assert sorted(written) == sorted(expected)
    checkpoints = sum(
        1 for r in records(log_path, checkpoints=True) if r.get("kind") == "checkpoint"
    )
    assert checkpoints >= 1  # every 100,000 records, and at close
    assert report.records == 200_000 + 3 + checkpoints  # + genesis, start, stop


def test_directory_is_created_with_restrictive_modes(tmp_path: Path) -> None:
    """Missing directories are created 0750 and the log file 0640."""
    path = tmp_path / "a" / "b" / "log.jsonl"
    with AuditLog(path=path, clock=synced_clock):
        pass
    assert (path.parent.stat().st_mode & 0o777) == 0o750
    assert (path.stat().st_mode & 0o777) == 0o640


def test_backpressure_past_the_backlog_limit_never_raises(log_path: Path) -> None:
    """Past the backlog limit an append waits (bounded) for the writer; nothing raises,
    and a kill-switch event is not made to wait."""
    cfg = AuditConfig(
        log_path=log_path, queue_size=1000, reserve=10, backlog_limit=4, append_timeout=0.02
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        with log.stall_writer():
            time.sleep(0.05)
            started = time.monotonic()
            for i in range(10):
                log.append(event(i))
            assert time.monotonic() - started >= 6 * 0.02 * 0.9
            assert log.throttled >= 6
            started = time.monotonic()
            log.append(RiskEvent(EventType.KILL_SWITCH, EventPriority.CRITICAL))
            assert time.monotonic() - started < 0.01
        log.flush(timeout=10)
    assert verify_paths([log_path]).valid
    assert sum(1 for r in records(log_path) if "event_id" in r) == 11


def test_fallback_to_write_and_fsync(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pwritev2(RWF_DSYNC) is refused (EINVAL), batches use write + fsync instead."""
    import errno

    from riskaudit.format import _files

    calls: list[int] = []

    def refuse(*args: object) -> int:
        calls.append(1)
        raise OSError(errno.EINVAL, "not supported here")

    monkeypatch.setattr(_files, "native_write_durably", refuse)
    monkeypatch.setattr(_files, "_DSYNC", 4)
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted_fsync)  # the os module _files syncs with
    with AuditLog(path=log_path, clock=synced_clock) as log:
        for i in range(100):
            log.append(event(i))
        log.flush()
    assert calls == [1] and fsyncs
    assert _files._DSYNC is None
    assert verify_paths([log_path]).valid


def test_close_does_not_wait_out_the_flush_window(log_path: Path) -> None:
    """close() returns promptly even with a long group-commit window."""
    with AuditLog(AuditConfig(log_path=log_path, flush_interval=2.0), clock=synced_clock) as log:
        log.append(event())
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert records(log_path)[-1]["kind"] == "stop"


def test_a_lone_event_is_durable_at_once_with_the_default_window(log_path: Path) -> None:
    """With flush interval 0, one event into an idle log is synced within milliseconds,
    not after the writer's idle timeout."""
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        time.sleep(0.6)  # the writer is idle, waiting
        seq = log.append(event())
        started = time.monotonic()
        while log.durable_seq < seq:  # type: ignore[operator]
            time.sleep(0.001)
        assert time.monotonic() - started < 0.1


def test_a_control_record_that_cannot_be_encoded_fails_in_the_caller(audit_log: AuditLog) -> None:
    """An access record with a value JSON cannot hold raises at the caller; the writer
    thread lives on and later events are written."""
    with pytest.raises(AuditEncodingError, match="access record"):
        audit_log.append_control("access", {"after": 2**64})
    seq = audit_log.append(event())
    audit_log.flush(timeout=5)
    assert audit_log.durable_seq >= seq  # type: ignore[operator]
    assert audit_log.health().status != "failing"


def test_check_raises_what_append_would_and_writes_nothing(tmp_path: Path) -> None:
    """`AuditLog.check` refuses an event nested deeper than a record can encode with the
    field at fault, writes nothing, and passes an event that append accepts."""
    value: dict[str, object] = {"leaf": 1}
    for _ in range(299):
        value = {"k": value}
    log = AuditLog(AuditConfig(log_path=tmp_path / "a.jsonl"), clock=synced_clock)
    try:
        template = event(1)
        deep = RiskEvent(template.event_type, template.priority, template.source, value)
        with pytest.raises(AuditEncodingError) as caught:
            log.check(deep)
        assert caught.value.field == "data"
        with pytest.raises(AuditEncodingError):
            log.append(deep)
        log.check(event(2))
        before = log.last_seq
        log.flush()
        assert log.last_seq == before
    finally:
        log.close()


def test_the_writers_periodic_checks_run_in_a_section_producers_step_aside_for(
    config: AuditConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's periodic checks (identity, clock, volume, time-based checkpoint and
    rotation), a rotation and a checkpoint by record count run inside a marked
    section, closed after each: a producer holding the GIL steps aside for them
    instead of for a switch interval per system call (closing, with no producers
    left, needs none)."""
    from riskaudit._native import begin_section, end_section
    from riskaudit.log import _writer

    open_sections: list[int] = []
    seen: dict[str, list[bool]] = {"_periodic": [], "switch_file": [], "checkpoint": []}
    real_begin, real_end = begin_section, end_section

    def begin() -> int:
        token = real_begin()
        open_sections.append(token)
        return token

    def end(token: int) -> None:
        open_sections.remove(token)
        real_end(token)

    def watched(name: str) -> None:
        real = getattr(_writer.Writer, name)

        def call(self: _writer.Writer, *args: object, **kwargs: object) -> object:
            seen[name].append(bool(open_sections))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(_writer.Writer, name, call)

    monkeypatch.setattr(_writer, "begin_section", begin)
    monkeypatch.setattr(_writer, "end_section", end)
    for name in seen:
        watched(name)
    cfg = dataclasses.replace(config, checkpoint_records=50)
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(120):
            log.append(event(i))
        log.flush()
        log.rotate()
        deadline = time.monotonic() + 5
        while len(seen["_periodic"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not open_sections
        before_close = {name: list(calls) for name, calls in seen.items()}
    assert len(before_close["_periodic"]) >= 2 and all(before_close["_periodic"])
    assert before_close["switch_file"] and all(before_close["switch_file"])
    assert before_close["checkpoint"] and all(before_close["checkpoint"])


def test_counters_are_a_frozen_snapshot_the_caller_cannot_change(config: AuditConfig) -> None:
    """``counters`` is taken anew at each read: an earlier snapshot keeps its figures
    while the writer goes on, and neither it nor its failures map can be changed."""
    log = AuditLog(config, clock=synced_clock)
    before = log.counters
    log.append(event(1))
    log.close()  # the writer's tally is complete once it has stopped
    after = log.counters
    assert before.primary_records < after.primary_records
    assert after.primary_records == config.log_path.read_bytes().count(b"\n")
    assert after.batches > before.batches
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.batches = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        after.failures_by["primary"] = 1  # type: ignore[index]
    assert log.counters == after


def test_timings_are_taken_once_each(config: AuditConfig) -> None:
    """``take_timings`` hands over every sample since the last call (one append call in
    1,024 is timed; one write and sync per batch) and keeps none."""
    log = AuditLog(config, clock=synced_clock)
    for i in range(2048):
        log.append(event(i))
    log.close()  # every batch's samples are recorded once the writer has stopped
    first = log.take_timings()
    assert len(first.append) == 2 and all(s > 0 for s in first.append)
    assert first.sync and first.durable
    assert all(s >= 0 for s in first.sync + first.durable)
    assert log.take_timings() == Timings(append=(), durable=(), sync=())


def test_takers_at_once_share_the_samples_each_taken_once() -> None:
    """Scrapes draining one deque at once neither fail nor take a sample twice (with
    thread switches forced every microsecond, the old check-then-pop failed in about
    one trial in five with IndexError)."""
    from collections import deque

    from riskaudit.log._counters import take

    def drain(samples: deque[float], taken: list[tuple[float, ...]]) -> None:
        taken.append(take(samples))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            samples: deque[float] = deque(float(i) for i in range(2000))
            taken: list[tuple[float, ...]] = []
            takers = [threading.Thread(target=drain, args=(samples, taken)) for _ in range(4)]
            for t in takers:
                t.start()
            for t in takers:
                t.join()
            assert len(taken) == 4  # a taker that raised appended nothing
            assert sorted(x for part in taken for x in part) == [float(i) for i in range(2000)]
    finally:
        sys.setswitchinterval(old)
