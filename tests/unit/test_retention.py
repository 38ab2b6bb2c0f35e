"""Retention on a synthetic multi-year history: tiers, the minimum, legal holds, and
never deleting a local copy without a verified archive copy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from riskaudit import AuditConfig, AuditLog, EventType, verify_paths
from riskaudit.archive import (
    Backup,
    Decision,
    DirectoryTarget,
    add_hold,
    load_holds,
    plan,
    remove_hold,
)
from riskaudit.archive import _backup as backup_module
from riskaudit.format import holds_path, list_segments
from riskaudit.integrity import generate, load_public_key
from riskaudit.ops import run_retention
from riskaudit.settings import DAY, BackupSettings, RetentionPolicy
from tests._segments import DAY_NS, Span, synthetic_stream
from tests.helpers import synced_clock

AGES_DAYS = [2200, 1100, 400, 200, 100, 10]  # oldest first: 6 y, 3 y, 400 d, ...

# The log's path, the public key's path and the sealed segments, oldest first.
History = tuple[Path, Path, list[Path]]


@pytest.fixture(autouse=True)
def no_lock_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests archive years-old segments and apply retention at once, as if years
    had passed since: the short lock a late archive copy gets (LOCK_FLOOR, tested
    against the real S3 server in test_backup.py) would still be running."""
    monkeypatch.setattr(backup_module, "LOCK_FLOOR", 0.0)


@pytest.fixture
def history(tmp_path: Path) -> History:
    """Six sealed segments whose ends lie 6 years to 10 days in the past."""
    private, public, _ = generate(tmp_path / "keys")
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    spans = [Span(now - age * DAY_NS) for age in AGES_DAYS]
    _stream, paths = synthetic_stream(log_path, private, spans)
    return log_path, public, paths


def actions(decisions: list[Decision]) -> list[str]:
    return [d.action for d in decisions]


def test_plan_without_archive_keeps_the_last_copy_until_the_minimum(history: History) -> None:
    """No archive: compress after 90 days, delete only past 5 years, nothing else."""
    log_path, _pub, _ = history
    decisions = plan(list_segments(log_path), RetentionPolicy(), [])
    assert [d.tier for d in decisions] == ["expired", "cold", "cold", "warm", "warm", "hot"]
    assert actions(decisions) == ["delete", "compress", "compress", "compress", "compress", "keep"]
    assert "last copy" in decisions[1].reason


def test_plan_with_a_verified_archive_moves_cold_segments_off_the_host(
    history: History, tmp_path: Path
) -> None:
    """Archived segments past the warm tier leave the host; younger ones stay."""
    log_path, _pub, _ = history
    backup = Backup(log_path, DirectoryTarget(tmp_path / "archive"), RetentionPolicy())
    assert not backup.run().errors
    decisions = plan(
        list_segments(log_path),
        RetentionPolicy(),
        [],
        archived_keys=backup.archived(),
    )
    assert actions(decisions) == [
        "delete",
        "remove-local",
        "remove-local",
        "compress",
        "compress",
        "keep",
    ]


def test_per_type_minimum_and_legal_hold_refuse_deletion(tmp_path: Path) -> None:
    """A kill-switch segment kept 7 years, and a held one kept at all, past 5 years."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    synthetic_stream(
        log_path,
        None,
        [
            Span(now - 2200 * DAY_NS),
            Span(now - 2100 * DAY_NS, event_type=EventType.KILL_SWITCH),
            Span(now - 2000 * DAY_NS),
        ],
    )
    policy = RetentionPolicy(minimum_by_type={"KILL_SWITCH": 2557 * DAY})
    segs = list_segments(log_path)
    assert actions(plan(segs, policy, [])) == ["delete", "compress", "delete"]
    holds_file = holds_path(log_path)
    since = time.strftime("%Y-%m-%d", time.gmtime((now - 2050 * DAY_NS) / 1e9))
    add_hold(holds_file, "CASE-42", "regulator inquiry", since=since)
    decisions = plan(segs, policy, load_holds(holds_file))
    assert actions(decisions) == ["delete", "compress", "compress"]
    assert decisions[2].held_by == ["CASE-42"] and "legal hold" in decisions[2].reason
    remove_hold(holds_file, "CASE-42")
    assert actions(plan(segs, policy, load_holds(holds_file)))[2] == "delete"


def test_apply_records_every_action_and_the_rest_still_verifies(
    history: History, tmp_path: Path
) -> None:
    """Apply with an archive: each action is a `retention` record in the log, the oldest
    segments are gone locally, and what remains verifies, anchored by the sidecar."""
    log_path, public, paths = history
    archive = tmp_path / "archive"
    cfg = AuditConfig(
        log_path=log_path,
        backup=BackupSettings(enabled=True, target=str(archive)),
        signing_key_file=tmp_path / "keys" / "signing-key.pem",
    )
    backup = Backup(log_path, DirectoryTarget(archive), cfg.retention)
    assert not backup.run().errors
    with AuditLog(cfg, clock=synced_clock) as log:
        result = run_retention(cfg, log, backup=backup)
    done = {d["action"] for d in result.done}
    assert done == {"delete", "expire-archive", "remove-local", "compress"}
    assert not any("error" in d for d in result.done)
    assert not paths[0].exists() and not paths[1].exists() and not paths[2].exists()
    assert list(archive.rglob("*.seg-*")), "archived copies stay"
    recs = [orjson.loads(x) for x in log_path.read_bytes().splitlines()]
    kinds = [r["action"] for r in recs if r.get("kind") == "retention"]
    assert sorted(kinds) == sorted(d["action"] for d in result.done)
    report = verify_paths([log_path.parent], keys=[load_public_key(public)])
    assert report.valid, report.findings
    assert any("anchored by checkpoint" in w for w in report.warnings)


def test_no_local_removal_without_a_verified_archive_copy(history: History, tmp_path: Path) -> None:
    """An archived copy that no longer matches its SHA-256 blocks the local removal."""
    log_path, _pub, paths = history
    archive = tmp_path / "archive"
    cfg = AuditConfig(log_path=log_path, backup=BackupSettings(enabled=True, target=str(archive)))
    backup = Backup(log_path, DirectoryTarget(archive), cfg.retention)
    backup.run()
    victim = next(p for p in archive.rglob("*.jsonl") if paths[1].name in p.name)
    os.chmod(victim, 0o644)
    victim.write_bytes(victim.read_bytes().replace(b"synthetic", b"SYNTHETIC"))
    with AuditLog(cfg, clock=synced_clock) as log:
        result = run_retention(cfg, log, backup=backup)
    failed = [d for d in result.done if "error" in d]
    assert [d["segment"] for d in failed] == [paths[1].name]
    assert paths[1].exists()


def test_archive_copies_expire_only_past_their_date_and_never_under_hold(
    history: History, tmp_path: Path
) -> None:
    """The 6-year-old segment goes everywhere once released from its hold; the 3-year-old
    archived copy (retained until 5 years) stays."""
    log_path, _pub, paths = history
    archive = tmp_path / "archive"
    cfg = AuditConfig(log_path=log_path, backup=BackupSettings(enabled=True, target=str(archive)))
    backup = Backup(log_path, DirectoryTarget(archive), cfg.retention)
    backup.run()
    add_hold(holds_path(log_path), "LITIGATION-7", "pending case")
    with AuditLog(cfg, clock=synced_clock) as log:
        held = run_retention(cfg, log, backup=backup)
        assert {d["action"] for d in held.done} == {"compress"}  # a hold blocks every deletion
        local = {s.key for s in list_segments(log_path)}
        assert paths[0].name in local and paths[1].name in local  # compressed, not gone
        remove_hold(holds_path(log_path), "LITIGATION-7")
        released = run_retention(cfg, log, backup=backup)
    assert {d["action"] for d in released.done} == {"delete", "expire-archive", "remove-local"}
    left = {p.name for p in archive.rglob("*.jsonl")}
    assert paths[0].name not in left and paths[1].name in left
