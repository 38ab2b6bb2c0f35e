"""Logs written by riskaudit 0.1.0 (tests/data/legacy-0.1.0) still open, resume and verify.

They were made by that release's own code: a signed, checkpointed log with a built-in
rotation and a torn tail it repaired (a ``repair`` record, the ``.torn-`` file kept),
and a log with a ``gap`` record whose stdout-only records are in the captured stdout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.integrity import load_public_key
from riskaudit.recovery import recover
from tests.conftest import VECTORS
from tests.helpers import ROOT, event, records, stream_event_ids, synced_clock

LEGACY = ROOT / "tests" / "data" / "legacy-0.1.0"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    copy = tmp_path / "legacy"
    shutil.copytree(LEGACY, copy)
    for p in copy.rglob("*"):
        p.chmod(0o640 if p.is_file() else 0o750)
    return copy


def test_checkpointed_log_verifies_with_its_key_then_resumes(legacy: Path) -> None:
    """The signed 0.1.0 log verifies as it is (signatures, seal, repair); a writer of
    today resumes it without setting anything aside, and it still verifies."""
    d = legacy / "checkpointed"
    key = load_public_key(VECTORS / "test-signing-key.pub.pem")
    before = verify_paths([d], keys=[key])
    assert before.valid, before.findings
    assert any(r.get("kind") == "repair" for r in records(d / "risk_audit.jsonl"))
    cfg = AuditConfig(log_path=d / "risk_audit.jsonl", flush_interval=0.001, host="h")
    with AuditLog(cfg, clock=synced_clock) as log:
        health = log.health()
        assert not health.untrusted and not health.corrupt, health
        log.append(event(1))
        log.flush()
    after = verify_paths([d])
    assert after.valid, after.findings
    assert not list(d.glob("*.untrusted-*"))
    assert len(stream_event_ids(d)) == 81


def test_gap_log_recovers_and_resumes(legacy: Path) -> None:
    """The 0.1.0 log with a gap record: unrecovered until its stdout is recovered, then
    valid; resuming it adds to the chain and it stays valid."""
    d = legacy / "gap" / "primary"
    assert [f.kind for f in verify_paths([d]).findings] == ["unrecovered"]
    cfg = AuditConfig(log_path=d / "risk_audit.jsonl", flush_interval=0.001, host="h")
    rep = recover([legacy / "gap" / "stdout.log"], cfg.log_path, cfg, clock=synced_clock)
    assert not rep.missing and rep.verify is not None and rep.verify.valid
    with AuditLog(cfg, clock=synced_clock) as log:
        assert not log.health().corrupt
        log.append(event(2))
    final = verify_paths([d])
    assert final.valid, final.findings
    assert len(stream_event_ids(d)) == 21
