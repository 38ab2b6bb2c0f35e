"""Backups to a directory: verified copies, the state file, legal holds, resuming (the
same code S3 runs through; tests/real/test_backup.py has the real S3 server)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from riskaudit import AuditConfig, AuditLog, verify_paths
from riskaudit.archive import Backup, DirectoryTarget, add_hold, remove_hold
from riskaudit.errors import AuditBackupError
from riskaudit.format import holds_path, parse_segment_name
from riskaudit.integrity import generate, load_public_key
from riskaudit.ops import Housekeeper
from riskaudit.settings import BackupSettings, RetentionPolicy
from tests._segments import DAY_NS, Span, synthetic_stream
from tests.helpers import event, synced_clock, utc


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[Path]]:
    private, _public, _ = generate(tmp_path / "keys")
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    _stream, paths = synthetic_stream(
        log_path, private, [Span(now - d * DAY_NS) for d in (30, 20, 10)]
    )
    return log_path, paths


def test_directory_backup_is_verified_idempotent_and_restorable(
    history: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """Every segment and checkpoint copied and read back; a second run copies nothing;
    a restore verifies; a tampered archive copy is named by `verify`."""
    log_path, paths = history
    target = DirectoryTarget(tmp_path / "archive")
    backup = Backup(log_path, target, RetentionPolicy())
    first = backup.run()
    assert not first.errors
    assert sorted(first.copied) == sorted(p.name for p in paths)
    assert first.checkpoints == 3
    again = Backup(log_path, target, RetentionPolicy()).run()
    assert again.copied == [] and again.skipped == 3 and again.checkpoints == 0
    problems, report = backup.verify(tmp_path / "drill")
    assert problems == [] and report is not None and report.valid
    restored = tmp_path / "restored"
    files = backup.restore(restored, only=[paths[1].name])
    alone = verify_paths([str(f) for f in files if f.name.endswith(".jsonl")])
    # Consistent, but without the key nothing proves its head: unanchored; with it, valid.
    assert alone.status == "unanchored" and not alone.findings, alone.findings
    public = load_public_key(tmp_path / "keys" / "signing-key.pub.pem")
    signed = verify_paths([str(f) for f in files if f.name.endswith(".jsonl")], keys=[public])
    assert signed.valid, (signed.findings, signed.unanchored)
    victim = next(p for p in (tmp_path / "archive").rglob("*.jsonl"))
    os.chmod(victim, 0o644)
    victim.write_bytes(victim.read_bytes() + b"\n")
    problems, _ = backup.verify(tmp_path / "drill2")
    assert problems and "does not match" in problems[0]


def test_the_backup_state_file_keeps_its_json_and_survives_damage(
    history: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """``<log>.backup.json`` written by a run loads back into the same typed, frozen state
    (spans by name, not position) and is saved with the keys earlier releases wrote; a
    damaged file costs one run that reads everything back, nothing more."""
    import orjson

    from riskaudit.archive import BackupState
    from riskaudit.format import backup_state_path

    log_path, paths = history
    target = DirectoryTarget(tmp_path / "archive")
    Backup(log_path, target, RetentionPolicy()).run()
    state_file = backup_state_path(log_path)
    raw = orjson.loads(state_file.read_bytes())
    assert set(raw) == {
        "stream", "sources", "objects", "checkpoints_offset", "legal_holds",
        "last_success_ns", "last_error", "failures",
    }  # fmt: skip
    state = BackupState.load(state_file)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.failures = 1  # type: ignore[misc]
    seen = state.seen[paths[0].name]
    assert seen.sealed and seen.span is not None
    assert list(seen.span) == raw["sources"][paths[0].name]["span"]
    assert seen.span.first_seq < seen.span.last_seq and seen.span.start_ns <= seen.span.end_ns
    state.save(tmp_path / "again.json")
    assert orjson.loads((tmp_path / "again.json").read_bytes()) == raw
    for damage in (b"{not json", b'{"sources": {"x": {"sig": 3}}}', b"[]"):
        state_file.write_bytes(damage)
        assert BackupState.load(state_file) == BackupState()
        report = Backup(log_path, target, RetentionPolicy()).run()
        assert not report.errors and report.copied == [] and report.skipped == len(paths)
    # One damaged entry is forgotten alone: the legal holds riskaudit set are kept.
    raw["sources"][paths[0].name] = {"sig": "nonsense"}
    raw["legal_holds"] = ["stream/segments/held.jsonl"]
    state_file.write_bytes(orjson.dumps(raw))
    kept = BackupState.load(state_file)
    assert paths[0].name not in kept.seen and len(kept.seen) == len(raw["sources"]) - 1
    assert kept.legal_holds == ("stream/segments/held.jsonl",) and kept.archived == state.archived


def test_legal_holds_are_mirrored_onto_the_archive(
    history: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    """A hold covering the middle segment puts a legal hold on its archived copy only
    (which the target then refuses to delete); released, the next run lifts it; a legal
    hold riskaudit did not set is left alone."""
    log_path, paths = history
    target = DirectoryTarget(tmp_path / "archive")
    now = time.time_ns()
    add_hold(
        holds_path(log_path), "case-7", "subpoena", utc(now - 21 * DAY_NS), utc(now - 19 * DAY_NS)
    )
    first = Backup(log_path, target, RetentionPolicy(minimum=0)).run()
    assert not first.errors
    (held,) = first.holds_on
    assert held.endswith(paths[1].name) and first.holds_off == []
    flags = {k: target.head(k).legal_hold for k in target.keys("") if "/segments/" in k}  # type: ignore[union-attr]
    assert [k for k, on in flags.items() if on] == [held]
    assert Backup(log_path, target, RetentionPolicy()).state.legal_holds == (held,)  # kept
    with pytest.raises(AuditBackupError, match="legal hold"):
        target.delete(held)
    other = next(k for k in flags if k != held)
    target.set_legal_hold(other, True)  # an operator's own hold on the bucket
    assert Backup(log_path, target, RetentionPolicy(minimum=0)).run().holds_on == []
    remove_hold(holds_path(log_path), "case-7")
    released = Backup(log_path, target, RetentionPolicy(minimum=0)).run()
    assert released.holds_off == [held] and released.holds_on == []
    assert not target.head(held).legal_hold  # type: ignore[union-attr]
    assert target.head(other).legal_hold  # type: ignore[union-attr]


def test_interrupted_backup_resumes_where_it_stopped(
    history: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target failing half-way: the run reports it, and the next run copies the rest."""
    log_path, paths = history
    target = DirectoryTarget(tmp_path / "archive")
    real_put = target.put
    calls = []

    def flaky(key: str, source: Path | bytes, info: object) -> None:
        calls.append(key)
        if len(calls) == 2:
            raise AuditBackupError("network down")
        real_put(key, source, info)  # type: ignore[arg-type]

    monkeypatch.setattr(target, "put", flaky)
    backup = Backup(log_path, target, RetentionPolicy())
    report = backup.run()
    assert report.errors == ["network down"] and len(report.copied) == 2
    assert backup.failures == 1
    monkeypatch.setattr(target, "put", real_put)
    report = Backup(log_path, target, RetentionPolicy()).run()
    assert report.copied == [paths[1].name] and not report.errors


def test_logrotate_files_are_archived_under_their_sealed_name(
    log_path: Path, tmp_path: Path
) -> None:
    """`risk_audit.jsonl.1` is stored as its canonical seg- name, so renumbering by
    logrotate never makes a second copy."""
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock) as log:
        log.append(event(1))
        log.flush(5)
        os.rename(log_path, log_path.with_name("risk_audit.jsonl.1"))
        log.reopen()
        log.append(event(2))
        log.flush(5)
        time.sleep(0.2)
        report = Backup(log_path, DirectoryTarget(tmp_path / "a"), RetentionPolicy()).run()
    assert len(report.copied) == 1 and parse_segment_name(report.copied[0]) is not None
    os.rename(log_path.with_name("risk_audit.jsonl.1"), log_path.with_name("risk_audit.jsonl.2"))
    again = Backup(log_path, DirectoryTarget(tmp_path / "a"), RetentionPolicy()).run()
    assert again.copied == [] and again.skipped == 1


def test_each_checkpoint_leaves_the_host_within_seconds(log_path: Path, tmp_path: Path) -> None:
    """The service's schedule ships a new checkpoint in seconds, not at the hourly run."""
    archive = tmp_path / "archive"
    cfg = AuditConfig(
        log_path=log_path,
        checkpoint_interval=0.5,
        backup=BackupSettings(enabled=True, target=str(archive), interval=3600),
        retention_interval=0,
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        keeper = Housekeeper(log, cfg)
        keeper.start()
        try:
            log.append(event(1))
            deadline = time.monotonic() + 8
            shipped: list[Path] = []
            while time.monotonic() < deadline and len(shipped) < 4:
                time.sleep(0.1)
                shipped = list(archive.rglob("checkpoints/*.json"))
        finally:
            keeper.stop()
    assert len(shipped) >= 4
    assert keeper.last_backup_ns is not None


def test_the_next_step_restore_prints_passes_on_a_good_archive(tmp_path: Path) -> None:
    """`backup restore --out DIR` (everything) then the printed `riskaudit verify DIR`
    with the key: VALID. The sidecar once also held the active file's checkpoints,
    which the archive does not hold yet, and verify said `truncated`."""
    import subprocess

    from riskaudit.settings import Rotation
    from tests.conftest import RISKAUDIT

    private, public, _ = generate(tmp_path / "keys")
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    cfg = AuditConfig(
        log_path=log_path,
        signing_key_file=private,
        checkpoint_records=10,
        rotation=Rotation(max_bytes=6_000),
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        for i in range(80):
            log.append(event(i))
            if i % 10 == 9:
                log.flush()
    env = {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_LOG_PATH": str(log_path),
        "RISK_AUDIT_BACKUP_TARGET": str(tmp_path / "archive"),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RISKAUDIT, *args], env=env, capture_output=True, text=True, check=False
        )

    assert cli("backup", "run").returncode == 0
    out = tmp_path / "restored"
    restore = cli("backup", "restore", "--out", str(out))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "left out of the sidecar" in restore.stdout
    checked = cli("verify", str(out), "--public-key", str(public))
    assert checked.returncode == 0, checked.stdout + checked.stderr
