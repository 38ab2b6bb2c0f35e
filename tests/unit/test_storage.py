"""Storage checks read facts: mountinfo, statvfs and a real write probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskaudit import AuditConfig, AuditLog, AuditStorageError
from riskaudit.log import (
    check_storage,
    detect_container,
    mount_of,
    parse_mountinfo,
    probe_write,
    space_level,
    volatile_reason,
)
from riskaudit.settings import Watermarks
from tests.helpers import synced_clock

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u
30 27 0:27 / /var/log/riskaudit rw,relatime - ext4 /dev/sdb1 rw
31 27 0:28 / /run/secrets rw,relatime - tmpfs tmpfs rw,size=4k
32 27 0:29 / /mnt/with\\040space ro,relatime - xfs /dev/sdc rw
"""


def test_mountinfo_is_parsed_with_escapes() -> None:
    """Mount points, types, sources and ro are read; \\040 is a space."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/proc",
        "/",
        "/var/log/riskaudit",
        "/run/secrets",
        "/mnt/with space",
    ]
    assert mounts[4].read_only and mounts[4].fstype == "xfs"


def test_the_longest_mount_point_holds_the_path() -> None:
    """A volume mounted at the log directory wins over the root overlay."""
    mounts = parse_mountinfo(MOUNTINFO)
    assert mount_of(Path("/var/log/riskaudit/x.jsonl"), mounts).fstype == "ext4"  # type: ignore[union-attr]
    assert mount_of(Path("/var/log/other"), mounts).fstype == "overlay"  # type: ignore[union-attr]
    assert mount_of(Path("/var/log/riskaudit-not"), mounts).fstype == "overlay"  # type: ignore[union-attr]


def test_volatile_locations_are_named() -> None:
    """tmpfs, the container's own overlay root, and /tmp are volatile; a volume is not."""
    mounts = parse_mountinfo(MOUNTINFO)
    logdir = Path("/var/log/riskaudit")
    assert volatile_reason(logdir, mount_of(logdir, mounts), "docker") is None
    other = Path("/app/logs")
    assert "overlay" in (volatile_reason(other, mount_of(other, mounts), "docker") or "")
    assert volatile_reason(other, mount_of(other, mounts), None) is None
    secrets = Path("/run/secrets")
    assert "tmpfs" in (volatile_reason(secrets, mount_of(secrets, mounts), None) or "")
    assert "/tmp" in (volatile_reason(Path("/tmp/x"), None, None) or "")


def test_container_detection(tmp_path: Path) -> None:
    """Kubernetes from its variable; Docker and Podman from their marker files."""
    assert detect_container(True, tmp_path) == "kubernetes"
    assert detect_container(False, tmp_path) is None
    (tmp_path / ".dockerenv").touch()
    assert detect_container(False, tmp_path) == "docker"


def test_free_space_levels() -> None:
    """Either the percent or the bytes watermark sets the level."""
    marks = Watermarks(warn_percent=10, crit_percent=5, warn_bytes=100, crit_bytes=50)
    assert space_level(900, 1000, marks)[0] == "ok"
    assert space_level(90, 1000, marks)[0] == "warning"  # 9 %
    assert space_level(40, 1000, marks)[0] == "critical"  # 4 % and < 50 bytes
    assert space_level(60, 10_000, marks)[0] == "critical"  # 0.6 %


def test_write_probe(tmp_path: Path) -> None:
    """The probe creates, syncs and removes a file; it names the error when it fails."""
    assert probe_write(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    assert probe_write(tmp_path / "missing") is not None


def test_check_storage_warns_with_the_operators_wording(tmp_path: Path) -> None:
    """A log under /tmp gets the AUDIT LOG RISK warning (the runbook's grep target)."""
    ext4_root = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    report = check_storage(tmp_path, in_kubernetes=False, mountinfo=ext4_root)
    assert report.volatile_reason == "a path under /tmp"
    assert report.warnings[0].startswith(f"AUDIT LOG RISK: {tmp_path.resolve()} is on")
    assert (
        "Logs will be lost on container restart! Mount a persistent volume to" in report.warnings[0]
    )
    assert report.writable and report.free_bytes is not None


def test_require_persistent_refuses_to_start(tmp_path: Path) -> None:
    """RISK_AUDIT_REQUIRE_PERSISTENT turns the warning into a refusal to start."""
    cfg = AuditConfig(log_path=tmp_path / "log.jsonl", require_persistent=True)
    if not str(tmp_path.resolve()).startswith("/tmp/"):
        pytest.skip("needs a temporary directory under /tmp")
    with pytest.raises(AuditStorageError, match="AUDIT LOG RISK"):
        AuditLog(cfg, clock=synced_clock)
    assert not (tmp_path / "log.jsonl").exists()
