"""The chain of custody: "replicated" means fsynced by the collector, not acknowledged by
the broker; a hole the broker left is asked for and re-sent from the host's log; retention
keeps what the collector has not confirmed. Unit level (a board in memory, messages by
hand); tests/real/test_replication_repair.py does the same against a real cluster."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from riskaudit import AuditConfig, AuditLog
from riskaudit.archive import plan
from riskaudit.format import Segment, split_head
from riskaudit.replication import (
    Collector,
    Forwarder,
    MemoryBoard,
    RepairRequest,
    Watermark,
)
from riskaudit.replication import _collect as collect_module
from riskaudit.settings import DAY, ReplicationSettings, RetentionPolicy
from tests.helpers import event, synced_clock


class Msg:
    """A JetStream message as the collector sees it."""

    def __init__(self, data: bytes) -> None:
        first = split_head(data.split(b"\n", 1)[0])
        assert first is not None
        self.headers = {"Riskaudit-Kind": "records", "Riskaudit-First-Seq": str(first[0])}
        self.data = data
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


class Published(list[tuple[bytes, dict[str, str]]]):
    """A publish that keeps what it was given, acknowledged at once."""

    async def __call__(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        self.append((data, headers))


def written_log(log_path: Path, n: int) -> list[bytes]:
    with AuditLog(AuditConfig(log_path=log_path, checkpoint_interval=0), clock=synced_clock) as log:
        for i in range(n):
            log.append(event(i))
    return [x + b"\n" for x in log_path.read_bytes().split(b"\n")[:-1]]


def test_forwarder_counts_replicated_only_from_the_collectors_watermark(
    log_path: Path,
) -> None:
    """Acknowledged by the broker is not replicated: the forwarder's replicated seq,
    its end-to-end lags and the cursor file follow the board's watermark alone."""
    lines = written_log(log_path, 40)
    board = MemoryBoard()
    publish = Published()

    async def main() -> Forwarder:
        fwd = Forwarder(log_path, ReplicationSettings(chunk_records=10), publish, board=board)
        while await fwd.step():
            pass
        assert fwd.cursor is not None and fwd.cursor.seq == len(lines)
        assert fwd.replicated_seq == 0 and fwd.replication_lag() == len(lines)
        assert fwd.replication_lag_seconds() > 0
        await board.confirm(fwd.cursor.stream, Watermark(20, None, time.time()))
        await fwd.look_at_board(fwd.cursor, force=True)
        assert fwd.replicated_seq == 20 and fwd.replication_lag() == len(lines) - 20
        fwd.cursor.save(fwd.cursor_file)
        return fwd

    fwd = asyncio.run(main())
    again = Forwarder(log_path, ReplicationSettings(), publish)
    again._ensure_cursor()
    assert again.replicated_seq == 20  # kept in <log>.forward.json, for retention too
    assert fwd.lag() == 0  # the broker has everything: a different question


def test_forwarder_serves_a_repair_request_from_the_log(log_path: Path) -> None:
    """A repair request is answered once, with exactly the records the local log holds
    for the range, under message ids the broker's duplicate window will not drop."""
    lines = written_log(log_path, 30)
    board = MemoryBoard()
    sent = Published()

    async def main() -> None:
        fwd = Forwarder(log_path, ReplicationSettings(chunk_records=8), sent, board=board)
        while await fwd.step():
            pass
        assert fwd.cursor is not None
        before = len(sent)
        await board.ask(fwd.cursor.stream, RepairRequest(11, 14, 7, time.time()))
        await fwd.look_at_board(fwd.cursor, force=True)
        repaired = sent[before:]
        assert repaired and all(h["Nats-Msg-Id"].endswith(":repair-7") for _d, h in repaired)
        data = b"".join(d for d, _h in repaired)
        assert data.startswith(lines[10]) and lines[13] in data
        await fwd.look_at_board(fwd.cursor, force=True)  # the same request: served once
        assert len(sent) == before + len(repaired) and fwd.stats.repairs == 1

    asyncio.run(main())


def test_collector_asks_for_a_hole_and_publishes_only_a_complete_watermark(
    log_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk ahead of a missing one waits; past REPAIR_AFTER the collector asks the
    host for the hole, its watermark stays below it, and once the records come back
    the central copy is byte-equal and the watermark moves to the end."""
    lines = written_log(log_path, 30)
    board = MemoryBoard()
    collector = Collector(tmp_path / "central", ReplicationSettings(), js=None, board=board)
    central = collect_module.CentralLog(tmp_path / "central" / "s", "s", collector.stats)
    monkeypatch.setattr(collect_module, "REPAIR_AFTER", 0.0)

    async def main() -> None:
        await collector._handle(central, [Msg(b"".join(lines[:10]))])
        assert board.marks["s"].seq == 10
        ahead = Msg(b"".join(lines[20:]))
        await collector._handle(central, [ahead])
        want = board.requests["s"]
        assert (want.first, want.last) == (11, 20) and not ahead.acked
        assert board.marks["s"].seq == 10
        await collector._handle(central, [Msg(b"".join(lines[10:20]))])
        assert ahead.acked and board.marks["s"].seq == len(lines)

    asyncio.run(main())
    central.close()
    assert (tmp_path / "central" / "s" / "audit.jsonl").read_bytes() == b"".join(lines)
    assert collector.stats.gaps == [] and collector.stats.repairs_asked == 1


def _segment(tmp_path: Path, last_seq: int) -> Segment:
    path = tmp_path / f"log.seg-{last_seq}.jsonl"
    path.write_bytes(b"")
    return Segment(path, last_seq - 9, last_seq, 0, "gzip")


def test_retention_keeps_what_the_collector_has_not_fsynced(tmp_path: Path) -> None:
    """Past the minimum, a segment beyond the watermark is kept (by default) or deleted
    with a reason that says so; before it, an archived one is not removed locally."""
    seg = _segment(tmp_path, 100)
    facts = {seg.key: (0, set[str]())}
    old = int(3000 * DAY * 1e9)
    policy = RetentionPolicy()
    kept = plan([seg], policy, [], now_ns=old, facts=facts, replicated_through=50)[0]
    assert kept.action == "keep" and "fsynced only through seq 50" in kept.reason
    done = plan([seg], policy, [], now_ns=old, facts=facts, replicated_through=100)[0]
    assert done.action == "delete"
    eager = RetentionPolicy(wait_for_replication=False)
    gone = plan([seg], eager, [], now_ns=old, facts=facts, replicated_through=50)[0]
    assert gone.action == "delete" and "WAIT_FOR_REPLICATION=0" in gone.reason
    cold = int(800 * DAY * 1e9)
    archived = {seg.key: object()}
    stay = plan(
        [seg], policy, [], now_ns=cold, facts=facts, archived_keys=archived, replicated_through=50
    )[0]
    assert stay.action == "keep"
    assert (
        plan([seg], policy, [], now_ns=cold, facts=facts, archived_keys=archived)[0].action
        == "remove-local"
    )


def test_ready_status_and_page_follow_the_watermark(log_path: Path) -> None:
    """With a forwarder attached, /v1/status and the status page show what is fsynced
    centrally beside what the broker has, and /ready turns 503 when the oldest record
    not yet replicated is older than RISK_AUDIT_READY_MAX_REPLICATION_LAG."""
    from fastapi.testclient import TestClient

    from riskaudit.ops import Service, create_app

    written_log(log_path, 10)
    config = AuditConfig(log_path=log_path, ready_max_replication_lag=30.0)

    publish = Published()

    with AuditLog(config, clock=synced_clock) as log:
        fwd = Forwarder(log_path, ReplicationSettings(), publish, board=MemoryBoard())
        while asyncio.run(fwd.step()):
            pass
        service = Service(log, config)
        service.forwarder = fwd
        with TestClient(create_app(service)) as client:
            st = client.get("/v1/status").json()["replication"]
            assert st["replicated_seq"] == 0 and st["broker_acked_seq"] >= 10
            assert client.get("/ready").status_code == 200
            assert "fsynced centrally (seq)" in client.get("/").text
            fwd._unconfirmed.clear()
            assert fwd.cursor is not None
            fwd.cursor.replicated_at = time.time() - 100
            fwd.cursor.replicated_seq = 1
            late = client.get("/ready")
            assert late.status_code == 503
            assert any("READY_MAX_REPLICATION_LAG" in r for r in late.json()["reasons"])


def test_a_called_gap_holds_the_watermark_across_restarts(
    log_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap called after no repair came keeps the watermark below it, also for a new
    collector on the same directory; a recovered segment that fills it lets it move."""
    lines = written_log(log_path, 30)
    board = MemoryBoard()
    monkeypatch.setattr(collect_module, "REPAIR_GIVE_UP", 0.0)
    directory = tmp_path / "central" / "s"

    async def feed(central: collect_module.CentralLog, collector: Collector, data: bytes) -> None:
        await collector._handle(central, [Msg(data)])

    collector = Collector(tmp_path / "central", ReplicationSettings(), js=None, board=board)
    central = collect_module.CentralLog(directory, "s", collector.stats)
    asyncio.run(feed(central, collector, b"".join(lines[:10])))
    asyncio.run(feed(central, collector, b"".join(lines[20:])))
    assert collector.stats.gaps == [("s", 11, 20)] and board.marks["s"].seq == 10
    central.close()
    again = Collector(tmp_path / "central", ReplicationSettings(), js=None, board=MemoryBoard())
    reopened = collect_module.CentralLog(directory, "s", again.stats)
    assert reopened.complete_through()[0] == 10  # not 32: the hole is remembered
    reopened.add_recovered("x.recovered-11-20.jsonl", b"".join(lines[10:20]))
    assert reopened.complete_through()[0] == len(lines)
    reopened.close()


def test_the_forwarder_refuses_a_watermark_that_is_not_its_own(log_path: Path) -> None:
    """A watermark past what this host sent, or naming another record's hash, is refused
    (counted, logged); the true one is taken."""
    written_log(log_path, 20)
    board = MemoryBoard()

    publish = Published()

    async def main() -> None:
        fwd = Forwarder(log_path, ReplicationSettings(chunk_records=5), publish, board=board)
        while await fwd.step():
            pass
        assert fwd.cursor is not None
        stream = fwd.cursor.stream
        await board.confirm(stream, Watermark(10**6, None, time.time()))
        await fwd.look_at_board(fwd.cursor, force=True)
        assert fwd.replicated_seq == 0 and "past what this host sent" in str(fwd.stats.last_error)
        await board.confirm(stream, Watermark(10, "ab" * 32, time.time()))
        await fwd.look_at_board(fwd.cursor, force=True)
        assert fwd.replicated_seq == 0 and "hash" in str(fwd.stats.last_error)
        true_hash = fwd._hash_of(10)
        await board.confirm(stream, Watermark(10, true_hash, time.time()))
        await fwd.look_at_board(fwd.cursor, force=True)
        assert fwd.replicated_seq == 10

    asyncio.run(main())


def test_a_repair_for_records_not_on_the_host_sends_nothing(log_path: Path) -> None:
    """Asked for a range the local log does not hold, the forwarder sends nothing
    (not the next records it has) and says so."""
    written_log(log_path, 10)
    board = MemoryBoard()
    sent = Published()

    async def main() -> None:
        fwd = Forwarder(log_path, ReplicationSettings(), sent, board=board)
        while await fwd.step():
            pass
        assert fwd.cursor is not None
        before = len(sent)
        await board.ask(fwd.cursor.stream, RepairRequest(500, 600, 1, time.time()))
        await fwd.look_at_board(fwd.cursor, force=True)
        assert len(sent) == before

    asyncio.run(main())


def test_without_a_board_nothing_is_replicated_and_the_lag_shows_it(log_path: Path) -> None:
    """No watermark can be read: everything counts as not replicated and its age grows,
    so the alert and /ready see it (it was 0 s)."""
    written_log(log_path, 10)

    publish = Published()

    fwd = Forwarder(log_path, ReplicationSettings(), publish)
    while asyncio.run(fwd.step()):
        pass
    assert fwd.replication_lag() > 0
    assert fwd.replication_lag_seconds(time.time_ns() + 60 * 10**9) >= 60


def test_retention_keeps_everything_when_the_cursor_cannot_be_read(log_path: Path) -> None:
    """An unreadable forward cursor means nothing is confirmed, not "not replicated"."""
    from riskaudit.archive import replicated_through
    from riskaudit.format import forward_cursor_path

    log_path.parent.mkdir(parents=True)
    assert replicated_through(log_path) is None
    forward_cursor_path(log_path).write_bytes(b"{not json")
    assert replicated_through(log_path) == 0
