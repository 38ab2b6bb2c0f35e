"""Backups to a real S3 server with Object Lock (Ceph RGW): locks, refusals, legal holds."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from riskaudit import EventType
from riskaudit.archive import Backup, S3Target, add_hold, remove_hold
from riskaudit.errors import AuditBackupError
from riskaudit.format import holds_path
from riskaudit.integrity import generate
from riskaudit.settings import DAY, RetentionPolicy
from tests._segments import DAY_NS, Span, synthetic_stream
from tests.helpers import utc

# -- real S3 with Object Lock ---------------------------------------------------------


def test_s3_objects_are_locked_in_compliance_mode_until_end_plus_minimum(
    tmp_path: Path, s3_client: object
) -> None:
    """Backed-up versions cannot be deleted or have their retention shortened."""
    client: object = s3_client
    c = client  # boto3 client (untyped)
    c.create_bucket(Bucket="audit-lock", ObjectLockEnabledForBucket=True)  # type: ignore[attr-defined]
    private, _pub, _ = generate(tmp_path / "keys")
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    synthetic_stream(
        log_path,
        private,
        [Span(now - 3 * DAY_NS), Span(now - 2 * DAY_NS, event_type=EventType.KILL_SWITCH)],
    )
    policy = RetentionPolicy(minimum=5 * DAY, minimum_by_type={"KILL_SWITCH": 12 * DAY})
    backup = Backup(log_path, S3Target(c, "audit-lock", "prod"), policy)
    report = backup.run()
    assert not report.errors and len(report.copied) == 2 and report.checkpoints == 2
    keys = backup.target.keys("")
    seg_keys = [k for k in keys if "/segments/" in k]
    until = {}
    for key in seg_keys:
        head = c.head_object(Bucket="audit-lock", Key=f"prod/{key}")  # type: ignore[attr-defined]
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until[key] = head["ObjectLockRetainUntilDate"]
    plain, kill = sorted(seg_keys)
    assert until[kill] - until[plain] > dt.timedelta(days=6)  # the kill switch's longer minimum
    for key in seg_keys:
        versions = c.list_object_versions(Bucket="audit-lock", Prefix=f"prod/{key}")  # type: ignore[attr-defined]
        vid = versions["Versions"][0]["VersionId"]
        with pytest.raises(Exception, match=r"AccessDenied"):
            c.delete_object(Bucket="audit-lock", Key=f"prod/{key}", VersionId=vid)  # type: ignore[attr-defined]
        with pytest.raises(Exception, match=r"AccessDenied"):
            c.put_object_retention(  # type: ignore[attr-defined]
                Bucket="audit-lock",
                Key=f"prod/{key}",
                VersionId=vid,
                Retention={
                    "Mode": "COMPLIANCE",
                    "RetainUntilDate": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                },
            )
        with pytest.raises(AuditBackupError):
            backup.target.delete(key)
    problems, verified = backup.verify(tmp_path / "drill")
    assert problems == [] and verified is not None and verified.valid


def test_s3_bucket_without_object_lock_is_refused(tmp_path: Path, s3_client: object) -> None:
    """A bucket that cannot hold COMPLIANCE retention is refused with the fix named."""
    c = s3_client
    c.create_bucket(Bucket="audit-nolock")  # type: ignore[attr-defined]
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    synthetic_stream(log_path, None, [Span(time.time_ns() - DAY_NS)])
    report = Backup(log_path, S3Target(c, "audit-nolock", ""), RetentionPolicy()).run()
    assert report.errors and "Object Lock" in report.errors[0]


def test_a_segment_past_its_minimum_is_still_archived_and_locked(
    tmp_path: Path, s3_client: object
) -> None:
    """Backups switched on late: a segment whose end + minimum has passed is uploaded
    (S3 refuses a retain-until in the past) and locked LOCK_FLOOR from now; the
    checkpoints behind it are shipped too."""
    from riskaudit.archive import LOCK_FLOOR

    c: Any = s3_client
    c.create_bucket(Bucket="audit-late", ObjectLockEnabledForBucket=True)
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    private, _pub, _ = generate(tmp_path / "keys")
    synthetic_stream(log_path, private, [Span(now - 10 * DAY_NS), Span(now - DAY_NS // 2)])
    backup = Backup(log_path, S3Target(c, "audit-late", "p"), RetentionPolicy(minimum=2 * DAY))
    report = backup.run()
    assert not report.errors and len(report.copied) == 2 and report.checkpoints == 2
    old, recent = sorted(k for k in backup.target.keys("") if "/segments/" in k)
    floor = dt.datetime.fromtimestamp(time.time() + LOCK_FLOOR, dt.UTC)
    got = c.head_object(Bucket="audit-late", Key=f"p/{old}")["ObjectLockRetainUntilDate"]
    assert -5 < (got - floor).total_seconds() <= 1
    got = c.head_object(Bucket="audit-late", Key=f"p/{recent}")["ObjectLockRetainUntilDate"]
    assert got - floor > dt.timedelta(hours=12)  # end + minimum, beyond the floor


def test_s3_enforces_a_legal_hold_past_the_retain_until_date(
    tmp_path: Path, s3_client: object
) -> None:
    """The hold is mirrored as an Object Lock legal hold: once retain-until has passed,
    S3 itself still refuses to delete the held version; released, it may go."""
    from riskaudit.archive import LOCK_FLOOR

    c: Any = s3_client
    c.create_bucket(Bucket="audit-hold", ObjectLockEnabledForBucket=True)
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    synthetic_stream(log_path, None, [Span(now - 3 * DAY_NS), Span(now - DAY_NS)])
    add_hold(
        holds_path(log_path), "case-9", "regulator", utc(now - 4 * DAY_NS), utc(now - 2 * DAY_NS)
    )
    backup = Backup(log_path, S3Target(c, "audit-hold", "p"), RetentionPolicy(minimum=0))
    report = backup.run()
    assert not report.errors and len(report.holds_on) == 1
    (held,) = report.holds_on
    status = c.get_object_legal_hold(Bucket="audit-hold", Key=f"p/{held}")
    assert status["LegalHold"]["Status"] == "ON"
    time.sleep(LOCK_FLOOR + 1)  # retain-until (minimum 0: the floor) has passed
    (version,) = c.list_object_versions(Bucket="audit-hold", Prefix=f"p/{held}")["Versions"]
    with pytest.raises(Exception, match="AccessDenied"):
        c.delete_object(Bucket="audit-hold", Key=f"p/{held}", VersionId=version["VersionId"])
    remove_hold(holds_path(log_path), "case-9")
    assert backup.run().holds_off == [held]
    backup.target.delete(held)  # no hold, no retention left: it may go now
    assert c.list_object_versions(Bucket="audit-hold", Prefix=f"p/{held}").get("Versions") in (
        None,
        [],
    )
