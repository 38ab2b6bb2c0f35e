"""S3 backups configured only by the environment and driven through the real CLI, against
a real Ceph RADOS gateway with Object Lock: run, status, verify and restore, COMPLIANCE
retention until a segment's end plus its minimum, and archive expiry by retention."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError
from testbed import ceph as _ceph

from riskaudit import AuditConfig, AuditLog, EventPriority, EventType, RiskEvent
from riskaudit.archive import archive_expiry, expire_archive
from riskaudit.format import Segment, list_segments, parse_ts
from riskaudit.ops import open_backup
from riskaudit.settings import DAY, Rotation
from tests.conftest import RISKAUDIT
from tests.helpers import clean_env, event, records, synced_clock

PREFIX = "prod/eu-1"
SIDECAR = "risk_audit.jsonl.checkpoints"


@pytest.fixture
def client(s3_client: Any) -> Any:
    return s3_client


@pytest.fixture
def bucket(client: Any) -> str:
    """A fresh bucket created with Object Lock enabled."""
    name = f"audit-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def write_rotated_log(
    log_path: Path, *, kill_switch_at: int | None = None, pause: float = 0.0
) -> list[Segment]:
    """120 events or more through built-in rotation (8 kB), until at least three segments
    are sealed. ``pause`` seconds pass after the first 20 events, inside the first
    segment (it fills at 8 kB, after about 25 events). A segment is sealed with whatever
    is queued at that moment, so under load it may hold three rounds of 20, not two:
    more rounds follow until three are sealed."""
    cfg = AuditConfig(log_path=log_path, rotation=Rotation(max_bytes=8_000))
    with AuditLog(cfg, clock=synced_clock) as log:
        i = 0
        while i < 120 or (len(list_segments(log_path)) < 3 and i < 600):
            if i == kill_switch_at:
                log.append(
                    RiskEvent(EventType.KILL_SWITCH, EventPriority.CRITICAL, "test", {"i": i})
                )
            else:
                log.append(event(i))
            if i % 20 == 19:
                log.flush(5)  # rotation happens between batches
            if i == 19:
                time.sleep(pause)
            i += 1
    segs = list_segments(log_path)
    assert len(segs) >= 3, segs
    return segs


def cli_env(
    s3: _ceph.S3Server, bucket: str, log_path: Path, tmp_path: Path, **extra: str
) -> dict[str, str]:
    """Only the environment configures the CLI: no riskaudit or AWS variable of ours
    leaks in, and no AWS config or credentials file is read."""
    base = {k: v for k, v in clean_env().items() if not k.startswith("AWS_")}
    return {
        **base,
        "RISK_AUDIT_LOG_PATH": str(log_path),
        "RISK_AUDIT_BACKUP_TARGET": f"s3://{bucket}/{PREFIX}",
        "RISK_AUDIT_BACKUP_S3_ENDPOINT": s3.endpoint,
        "AUDIT_BACKUP_ENABLED": "1",
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RISKAUDIT, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def cli_json(env: dict[str, str], *args: str, code: int = 0) -> dict[str, Any]:
    """Run a ``--json`` command, check its exit code, return its parsed output."""
    out = cli(env, *args)
    assert out.returncode == code, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    data = orjson.loads(out.stdout)
    assert isinstance(data, dict)
    return data


def s3_error(call: Callable[..., object], **kwargs: Any) -> tuple[str, int, str]:
    """The S3 error code, HTTP status and message of a call that must be refused."""
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    resp = caught.value.response
    return (
        str(resp["Error"].get("Code")),
        int(resp["ResponseMetadata"]["HTTPStatusCode"]),
        str(resp["Error"].get("Message") or ""),
    )


def stream_of(seg: Segment) -> str:
    stream = records(seg.path)[0]["stream"]
    assert isinstance(stream, str)
    return stream


def end_ns(seg: Segment) -> int:
    """A segment's end as backup defines it: the time of its sealing checkpoint."""
    last = orjson.loads(seg.path.read_bytes().splitlines()[-1])
    assert last["kind"] == "checkpoint"
    return parse_ts(last["ts"])


def object_key(stream: str, name: str) -> str:
    return f"{PREFIX}/{stream}/segments/{name}"


def versions(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    resp = client.list_object_versions(Bucket=bucket, Prefix=key)
    found: list[dict[str, Any]] = resp.get("Versions", []) + resp.get("DeleteMarkers", [])
    return [v for v in found if v["Key"] == key]


def test_cli_backs_up_to_s3_from_the_environment_and_restores_one_segment(
    s3: _ceph.S3Server, client: Any, bucket: str, tmp_path: Path
) -> None:
    """`backup run|status|verify|restore` configured only by environment variables copy
    every rotated segment and checkpoint to S3 byte for byte, skip them the second time,
    report the state, pass the restore drill (and fail it for a substituted object), and
    restore one segment that `riskaudit verify` then finds consistent (unanchored: the
    log is unsigned)."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    segs = write_rotated_log(log_path)
    names = [s.path.name for s in segs]
    stream = stream_of(segs[0])
    sidecar = log_path.with_name(SIDECAR)
    checkpoints = sidecar.read_bytes().splitlines()
    env = cli_env(s3, bucket, log_path, tmp_path)

    before = cli_json(env, "backup", "status", "--json")
    assert before["target"] == f"s3://{bucket}/{PREFIX}"
    assert before["pending_segments"] == names and before["archived_segments"] == 0
    assert before["last_success"] == "never"

    run = cli_json(env, "backup", "run", "--json")
    no_holds: dict[str, list[str]] = {
        "legal_holds_set": [],
        "legal_holds_released": [],
        "errors": [],
    }
    assert run == {"copied": names, "skipped": 0, "checkpoints": len(checkpoints), **no_holds}
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    seg_keys = [k for k in keys if "/segments/" in k]
    assert seg_keys == [object_key(stream, n) for n in names]
    assert len([k for k in keys if k.startswith(f"{PREFIX}/{stream}/checkpoints/")]) == len(
        checkpoints
    )
    for seg in segs:
        got = client.get_object(Bucket=bucket, Key=object_key(stream, seg.path.name))
        assert got["Body"].read() == seg.path.read_bytes()

    again = cli_json(env, "backup", "run", "--json")
    assert again == {"copied": [], "skipped": len(segs), "checkpoints": 0, **no_holds}

    status = cli_json(env, "backup", "status", "--json")
    assert status["target"] == f"s3://{bucket}/{PREFIX}"
    assert status["archived_segments"] == len(segs) and status["pending_segments"] == []
    assert status["failures"] == 0 and status["last_error"] is None
    last = dt.datetime.fromisoformat(status["last_success"])
    assert abs(dt.datetime.now(dt.UTC) - last) < dt.timedelta(minutes=5)
    assert status["checkpoints_shipped_bytes"] == sidecar.stat().st_size

    drill = cli_json(env, "backup", "verify", "--json")
    assert drill["valid"] is True and drill["problems"] == []
    assert drill["verify"]["records"] == sum(len(records(s.path, checkpoints=True)) for s in segs)
    assert (drill["verify"]["first_seq"], drill["verify"]["last_seq"]) == (1, segs[-1].last_seq)
    text = cli(env, "backup", "verify")
    assert text.returncode == 0, text.stdout + text.stderr
    assert f"archive s3://{bucket}/{PREFIX}: VALID" in text.stdout

    middle = segs[1]
    out = tmp_path / "restored"
    restore = cli(
        env, "backup", "restore", "--out", str(out), "--segment", f"{middle.first_seq:020d}"
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert f"restored {out / middle.path.name}" in restore.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([middle.path.name, SIDECAR])
    assert (out / middle.path.name).read_bytes() == middle.path.read_bytes()
    # Only the checkpoints up to the restored segment: a later one would make the
    # directory's verify read the segments not restored as a cut-off tail.
    kept = [
        line
        for line in sidecar.read_bytes().splitlines(keepends=True)
        if orjson.loads(line)["covers_seq"] <= middle.last_seq
    ]
    assert (out / SIDECAR).read_bytes() == b"".join(kept) and len(kept) >= 2
    assert f"now: riskaudit verify {out}" in restore.stdout
    # What the command says to run: consistent, but this log is unsigned, so nothing
    # proves the restored segment's head: unanchored, its own exit code.
    checked = cli_json(env, "verify", "--json", str(out), code=3)
    assert checked["status"] == "unanchored" and checked["problems"] == []
    assert (checked["first_seq"], checked["last_seq"]) == (middle.first_seq, middle.last_seq)
    assert checked["records"] == middle.last_seq - middle.first_seq + 1

    # A newer version put over a locked one (Object Lock allows new versions): the
    # drill reads what a restore would get and names the object that no longer matches.
    victim = object_key(stream, middle.path.name)
    head = client.head_object(Bucket=bucket, Key=victim)
    client.put_object(
        Bucket=bucket,
        Key=victim,
        Body=middle.path.read_bytes().replace(b'"source":"test"', b'"source":"tset"', 1),
        Metadata=head["Metadata"],
    )
    broken = cli_json(env, "backup", "verify", "--json", code=1)
    assert broken["valid"] is False
    assert [p for p in broken["problems"] if middle.path.name in p and "does not match" in p]


def test_s3_objects_get_compliance_retention_until_end_plus_minimum_and_keep_it(
    s3: _ceph.S3Server, client: Any, bucket: str, tmp_path: Path
) -> None:
    """Each uploaded segment is locked in COMPLIANCE mode until its sealing checkpoint's
    time plus its minimum (the by-type minimum where its event type occurs); the gateway
    refuses to delete that version (AccessDenied, 403) and to shorten its retention
    (AccessDenied, 403), while the same credentials may extend it."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    segs = write_rotated_log(log_path, kill_switch_at=70, pause=2.5)
    # "end" is told apart from the start (the first segment spans the pause) and from
    # the upload time (two seconds later): each is more than the one-second tolerance off.
    assert end_ns(segs[0]) - segs[0].start_ns > 2 * 10**9
    time.sleep(2)
    stream = stream_of(segs[0])
    env = cli_env(
        s3,
        bucket,
        log_path,
        tmp_path,
        RISK_AUDIT_RETENTION_MIN="7d",
        RISK_AUDIT_RETENTION_MIN_BY_TYPE="KILL_SWITCH=30d",
    )
    run = cli_json(env, "backup", "run", "--json")
    assert run["errors"] == [] and len(run["copied"]) == len(segs)

    minimums = []
    for seg in segs:
        key = object_key(stream, seg.path.name)
        killer = b'"event_type":"KILL_SWITCH"' in seg.path.read_bytes()
        minimum = (30 if killer else 7) * DAY
        minimums.append(minimum)
        expected = dt.datetime.fromtimestamp(end_ns(seg) / 1e9 + minimum, dt.UTC)
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert abs(until - expected) < dt.timedelta(seconds=1), (seg.path.name, until, expected)
        [version] = versions(client, bucket, key)
        vid = version["VersionId"]
        retention = client.get_object_retention(Bucket=bucket, Key=key, VersionId=vid)
        assert retention["Retention"]["Mode"] == "COMPLIANCE"
        assert retention["Retention"]["RetainUntilDate"] == until

        code, status, message = s3_error(
            client.delete_object, Bucket=bucket, Key=key, VersionId=vid
        )
        assert (code, status) == ("AccessDenied", 403), message
        assert "object lock" in message.lower()
        code, status, message = s3_error(
            client.put_object_retention,
            Bucket=bucket,
            Key=key,
            VersionId=vid,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - dt.timedelta(days=1)},
        )
        assert (code, status) == ("AccessDenied", 403), message
        assert "shortens" in message

        assert versions(client, bucket, key) == [version]
        kept = client.get_object(Bucket=bucket, Key=key, VersionId=vid)
        assert kept["Body"].read() == seg.path.read_bytes()
        assert kept["ObjectLockRetainUntilDate"] == until
    assert sorted(set(minimums)) == [7 * DAY, 30 * DAY]  # both minimums were exercised

    key = object_key(stream, segs[0].path.name)
    [version] = versions(client, bucket, key)
    later = client.head_object(Bucket=bucket, Key=key)["ObjectLockRetainUntilDate"]
    later += dt.timedelta(days=1)
    client.put_object_retention(
        Bucket=bucket,
        Key=key,
        VersionId=version["VersionId"],
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later},
    )
    assert client.head_object(Bucket=bucket, Key=key)["ObjectLockRetainUntilDate"] == later


MINIMUM_S = 30  # retain-until = the end + this: long enough to act before it on a busy host


def test_retention_expires_archived_segments_only_after_their_retain_until(
    s3: _ceph.S3Server, client: Any, bucket: str, tmp_path: Path
) -> None:
    """With every tier at zero, `retention apply` removes the local copies but leaves the
    archived ones before their retain-until; deleting them early anyway is refused by
    Object Lock (nothing recorded); once the date passes, `retention apply` deletes every
    version and writes an expire-archive record for each."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    segs = write_rotated_log(log_path)
    names = [s.path.name for s in segs]
    stream = stream_of(segs[0])
    env = cli_env(
        s3,
        bucket,
        log_path,
        tmp_path,
        RISK_AUDIT_RETENTION_HOT="0",
        RISK_AUDIT_RETENTION_WARM="0",
        RISK_AUDIT_RETENTION_COLD="0",
        RISK_AUDIT_RETENTION_MIN=f"{MINIMUM_S}s",
    )
    run = cli_json(env, "backup", "run", "--json")
    assert run["errors"] == [] and run["copied"] == names
    untils = [
        client.head_object(Bucket=bucket, Key=object_key(stream, n))["ObjectLockRetainUntilDate"]
        for n in names
    ]
    first_until = min(untils).timestamp()

    early = cli_json(env, "retention", "apply", "--json")
    assert time.time() < first_until, "the host took longer than the retain-until margin"
    actions = early["actions"]
    assert [a for a in actions if "error" in a] == []
    assert sorted(a["segment"] for a in actions if a["action"] == "remove-local") == names
    assert [a for a in actions if a["action"] == "expire-archive"] == []
    assert list_segments(log_path) == []
    for name in names:
        assert len(versions(client, bucket, object_key(stream, name))) == 1

    # The planner's clock wrong (as if past every date): Object Lock still refuses.
    config = AuditConfig.from_env(env)
    backup = open_backup(config, log_path)
    assert backup is not None
    archived = backup.archived()
    assert sorted(archived) == names
    assert archive_expiry(archived, set(), config.retention, []) == []
    late_ns = int((max(untils).timestamp() + 1) * 1e9)
    forced = archive_expiry(archived, set(), config.retention, [], now_ns=late_ns)
    assert [base for base, _ in forced] == names
    recorded: list[dict[str, Any]] = []
    refused = expire_archive(backup, archived, forced, record=recorded.append)
    assert time.time() < first_until, "the host took longer than the retain-until margin"
    assert recorded == [] and len(refused) == len(names)
    for done in refused:
        assert "AccessDenied" in done["error"], done
    for name in names:
        assert len(versions(client, bucket, object_key(stream, name))) == 1

    time.sleep(max(0.0, max(untils).timestamp() + 1.5 - time.time()))
    expired = cli_json(env, "retention", "apply", "--json")
    actions = expired["actions"]
    assert [a for a in actions if "error" in a] == []
    assert sorted(a["segment"] for a in actions if a["action"] == "expire-archive") == names
    for name in names:
        assert versions(client, bucket, object_key(stream, name)) == []
    logged = [r for r in records(log_path) if r.get("kind") == "retention"]
    assert sorted(r["segment"] for r in logged if r["action"] == "expire-archive") == names
    assert sorted(r["segment"] for r in logged if r["action"] == "remove-local") == names
