"""`riskaudit check` against real situations: mounts, permissions, a full disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from riskaudit import AuditConfig
from riskaudit.clock import ClockState
from riskaudit.format import backup_state_path
from riskaudit.ops import FAIL, run_checks
from riskaudit.ops._preflight import (
    OK,
    WARN,
    check_backup,
    check_rotation,
    check_runtime_log,
    logrotate_keeps_days,
)
from riskaudit.settings import BackupSettings, Rotation
from tests.conftest import RISKAUDIT
from tests.helpers import ROOT, require, synced_clock

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
SHIPPED_LOGROTATE = ROOT / "deploy" / "logrotate" / "riskaudit"


@pytest.fixture(scope="module")
def nobody_cli(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A command line that runs riskaudit as user nobody. The venv's interpreter may
    live under /root: then the system python runs a copy of just the imported packages."""
    probe = subprocess.run([*NOBODY, RISKAUDIT, "--help"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [RISKAUDIT]
    python = "/usr/bin/python3.11"
    require(os.path.exists(python), "needs Debian's python3.11 for the unprivileged run")
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import riskaudit.cli, sys, json; print(json.dumps("
            "[getattr(m, '__file__', None) for m in list(sys.modules.values())]))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    site = Path(orjson.__file__).resolve().parent.parent
    lib = tmp_path_factory.mktemp("nobody-lib")
    tops = set()
    for f in orjson.loads(listing.stdout):
        if f and Path(f).resolve().is_relative_to(site):
            tops.add(Path(f).resolve().relative_to(site).parts[0])
    for top in tops:
        src = site / top
        (shutil.copytree if src.is_dir() else shutil.copy)(src, lib / top)
    src_pkg = ROOT / "src" / "riskaudit"
    shutil.copytree(src_pkg, lib / "riskaudit", dirs_exist_ok=True)
    for p in [lib.parent, lib, *lib.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return ["env", f"PYTHONPATH={lib}", python, "-c", "from riskaudit.cli import main; main()"]


def ext4_image(path: Path, size: str = "16M") -> Path:
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True)
    return path


def run_check(
    tmp_path: Path,
    setup: str,
    env: dict[str, str],
    *,
    cli: list[str] | None = None,
    as_nobody: bool = False,
    args: tuple[str, ...] = (),
) -> tuple[int, dict[str, dict[str, str]]]:
    """Build the situation in a private mount namespace, then run `riskaudit check --json`."""
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare")
    img_log, img_spool = ext4_image(tmp_path / "log.img"), ext4_image(tmp_path / "spool.img")
    keys = tmp_path / "keys"
    subprocess.run([RISKAUDIT, "keygen", "--out", str(keys)], check=True, capture_output=True)
    command = " ".join([*(NOBODY if as_nobody else []), *(cli or [RISKAUDIT])])
    script = f"""set -e
mount -t tmpfs -o size=64m tmpfs /mnt
mkdir -p /mnt/log /mnt/spool /mnt/keys
mount -o loop {img_log} /mnt/log
mount -o loop {img_spool} /mnt/spool
mkdir -p /mnt/log/audit
cp {keys}/signing-key.pem /mnt/keys/ && chmod 0644 /mnt/keys/signing-key.pem
{setup}
{command} check --json {" ".join(args)} > {tmp_path}/out.json || echo $? > {tmp_path}/rc
"""
    full_env = {
        "PATH": os.environ["PATH"],
        "RISK_AUDIT_LOG_PATH": "/mnt/log/audit/risk_audit.jsonl",
        "RISK_AUDIT_SPOOL_DIR": "/mnt/spool",
        "RISK_AUDIT_SIGNING_KEY_FILE": "/mnt/keys/signing-key.pem",
        "RISK_AUDIT_ROTATE_INTERVAL": "daily",
        "RISK_AUDIT_MIN_FREE_BYTES": "1M",
        "RISK_AUDIT_FREE_WARN_BYTES": "1M",
        "RISK_AUDIT_FREE_CRIT_BYTES": "512K",
        **env,
    }
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rc_file = tmp_path / "rc"
    rc = int(rc_file.read_text()) if rc_file.exists() else 0
    out = orjson.loads((tmp_path / "out.json").read_bytes())
    return rc, {c["name"]: c for c in out["checks"]}


def failing(checks: dict[str, dict[str, str]]) -> set[str]:
    return {name for name, c in checks.items() if c["status"] == FAIL}


def test_a_healthy_setup_passes(tmp_path: Path) -> None:
    """Log and spool on their own persistent volumes, key elsewhere, rotation on: no ✗."""
    rc, checks = run_check(tmp_path, "", {})
    assert rc == 0, checks
    assert failing(checks) == set()
    for name in (
        "persistent volume",
        "write permission",
        "free space",
        "spool on another volume",
        "signing key",
        "rotation",
    ):
        assert checks[name]["status"] == OK, checks[name]


def test_log_on_tmpfs_fails_with_the_fix(tmp_path: Path) -> None:
    """A log directory on tmpfs: ✗ persistent volume, and the fix says what to mount."""
    rc, checks = run_check(
        tmp_path, "mkdir -p /mnt/mem", {"RISK_AUDIT_LOG_PATH": "/mnt/mem/risk_audit.jsonl"}
    )
    assert rc == 1
    assert "persistent volume" in failing(checks)
    assert "tmpfs" in checks["persistent volume"]["detail"]
    assert "persistent volume" in checks["persistent volume"]["fix"]


def test_read_only_volume_fails_the_write_probe(tmp_path: Path) -> None:
    """A read-only mount: ✗ write permission (a real write was refused)."""
    rc, checks = run_check(tmp_path, "mount -o remount,ro /mnt/log", {})
    assert rc == 1 and failing(checks) == {"write permission"}
    assert "Read-only" in checks["write permission"]["detail"]
    assert checks["write permission"]["fix"]


def test_unwritable_for_a_non_root_user(tmp_path: Path, nobody_cli: list[str]) -> None:
    """The directory belongs to root (0755) and the check runs as nobody: ✗ with the fix."""
    rc, checks = run_check(
        tmp_path, "chmod 0755 /mnt/log/audit", {}, cli=nobody_cli, as_nobody=True
    )
    assert rc == 1 and "write permission" in failing(checks)
    assert "uid 65534" in checks["write permission"]["detail"]
    assert "chown" in checks["write permission"]["fix"]


def test_full_file_system_fails_free_space(tmp_path: Path) -> None:
    """A full volume: ✗ free space under the critical watermark."""
    rc, checks = run_check(
        tmp_path, "dd if=/dev/zero of=/mnt/log/fill bs=1M 2>/dev/null || true", {}
    )
    assert rc == 1 and "free space" in failing(checks)
    assert "critical" in checks["free space"]["detail"]
    assert "No space left on device" in checks["free space"]["fix"]


def test_free_space_under_the_recommended_minimum_warns(tmp_path: Path) -> None:
    """Room above the critical watermark but under RISK_AUDIT_MIN_FREE_BYTES: ⚠, not ✗,
    naming the setting and the sizing section."""
    rc, checks = run_check(tmp_path, "", {"RISK_AUDIT_MIN_FREE_BYTES": "50G"})
    assert rc == 0 and checks["free space"]["status"] == WARN
    assert "RISK_AUDIT_MIN_FREE_BYTES" in checks["free space"]["detail"]
    assert "Sizing" in checks["free space"]["fix"]


def test_spool_on_the_log_volume_fails(tmp_path: Path) -> None:
    """A spool on the same file system as the log: ✗ (it fails together with the log)."""
    rc, checks = run_check(
        tmp_path, "mkdir -p /mnt/log/spool", {"RISK_AUDIT_SPOOL_DIR": "/mnt/log/spool"}
    )
    assert rc == 1 and failing(checks) == {"spool on another volume"}
    assert checks["spool on another volume"]["fix"]


def test_signing_key_on_the_log_volume_fails(tmp_path: Path) -> None:
    """A signing key next to the log: ✗ (whoever takes the volume could re-sign)."""
    rc, checks = run_check(
        tmp_path,
        "cp /mnt/keys/signing-key.pem /mnt/log/key.pem",
        {"RISK_AUDIT_SIGNING_KEY_FILE": "/mnt/log/key.pem"},
    )
    assert rc == 1 and failing(checks) == {"signing key"}
    assert "log volume" in checks["signing key"]["detail"]
    assert checks["signing key"]["fix"]


def test_logrotate_with_copytruncate_fails(tmp_path: Path) -> None:
    """A logrotate file using copytruncate: ✗ rotation, naming create mode as the fix."""
    bad = tmp_path / "riskaudit.logrotate"
    bad.write_text("/mnt/log/audit/risk_audit.jsonl {\n  daily\n  copytruncate\n}\n")
    rc, checks = run_check(
        tmp_path, "", {"RISK_AUDIT_ROTATE_INTERVAL": "0"}, args=("--logrotate", str(bad))
    )
    assert rc == 1 and failing(checks) == {"rotation"}
    assert "create mode" in checks["rotation"]["fix"]


def test_rotation_check_accepts_the_shipped_logrotate_file(tmp_path: Path) -> None:
    """The shipped policy (copytruncate only in its comments) passes with backups on;
    without them its 30 days fall short of the retention minimum: ✗. None at all warns."""
    cfg = AuditConfig(
        log_path=tmp_path / "x.jsonl",
        backup=BackupSettings(enabled=True, target=str(tmp_path / "archive")),
    )
    assert check_rotation(cfg, SHIPPED_LOGROTATE).status == OK
    bare = check_rotation(cfg.with_(backup=BackupSettings()), SHIPPED_LOGROTATE)
    assert bare.status == FAIL and "after 30 days" in bare.detail
    assert "AUDIT_BACKUP_ENABLED" in bare.fix
    long = tmp_path / "long.logrotate"
    long.write_text(SHIPPED_LOGROTATE.read_text().replace("rotate 30", "rotate 1900"))
    assert check_rotation(cfg.with_(backup=BackupSettings()), long).status == OK
    assert check_rotation(cfg, None).status == WARN
    daily = cfg.with_(rotation=Rotation(interval=86400))
    assert check_rotation(daily, None).status == OK


def test_logrotate_retention_is_read_from_rotate_period_and_maxage() -> None:
    """rotate x period and maxage, the shorter one; unknown for size-only or rotate -1."""
    assert logrotate_keeps_days("x {\n daily\n rotate 30\n}") == 30
    assert logrotate_keeps_days("x {\n weekly\n rotate 300\n maxage 90\n}") == 90
    assert logrotate_keeps_days("x {\n hourly\n rotate 48\n}") == 2
    assert logrotate_keeps_days("x {\n size 100M\n rotate 5\n}") is None
    assert logrotate_keeps_days("x {\n daily\n rotate -1\n}") is None


def test_backup_check_follows_the_last_success(tmp_path: Path) -> None:
    """Backups off or never run warn; a success within two intervals passes; an older
    one warns (never ✗: the check gates the pod's start) and names the runbook."""
    log = tmp_path / "risk_audit.jsonl"
    on = AuditConfig(log_path=log, backup=BackupSettings(enabled=True, target=str(tmp_path / "a")))
    now = 1_800_000_000.0
    assert check_backup(AuditConfig(log_path=log), now).status == WARN
    assert "no backup has succeeded" in check_backup(on, now).detail
    state = backup_state_path(log.absolute())
    state.write_bytes(orjson.dumps({"last_success_ns": int((now - 600) * 1e9)}))
    assert check_backup(on, now).status == OK
    state.write_bytes(orjson.dumps({"last_success_ns": int((now - 3 * 3600) * 1e9)}))
    stale = check_backup(on, now)
    assert stale.status == WARN and "3.0 h ago" in stale.detail
    assert "AuditBackupStale" in stale.fix


def test_container_log_rotation_is_sized_for_emergency_lines(tmp_path: Path) -> None:
    """In a pod with the runtime's log size unknown or under 100 MiB: ⚠ with how to
    size it; enough: ✓."""
    pod = AuditConfig(log_path=tmp_path / "x.jsonl", in_kubernetes=True)
    unknown = check_runtime_log(pod)
    assert unknown.status == WARN and "kubelet keeps" in unknown.detail
    assert "RISK_AUDIT_RUNTIME_LOG_BYTES" in unknown.fix
    small = check_runtime_log(pod.with_(runtime_log_bytes=50 << 20))
    assert small.status == WARN and "max-size" in small.fix
    assert check_runtime_log(pod.with_(runtime_log_bytes=500 << 20)).status == OK


def test_clock_is_a_warning_unless_required(tmp_path: Path) -> None:
    """An unsynchronised clock warns; with RISK_AUDIT_CLOCK_REQUIRED it fails."""
    bad = lambda: ClockState(False, 16.0, 16.0, "TIME_ERROR")  # noqa: E731
    cfg = AuditConfig(log_path=tmp_path / "x.jsonl")
    by_name = {c.name: c for c in run_checks(cfg, clock=bad)}
    assert by_name["clock"].status == WARN
    strict = {c.name: c for c in run_checks(cfg.with_(clock_required=True), clock=bad)}
    assert strict["clock"].status == FAIL


def test_metrics_url_is_checked(tmp_path: Path) -> None:
    """An unreachable metrics URL is a ✗; a live riskaudit /metrics is a ✓."""
    from riskaudit import AuditLog
    from riskaudit.ops import start_ops_server

    cfg = AuditConfig(log_path=tmp_path / "logs" / "x.jsonl")
    bad = {c.name: c for c in run_checks(cfg, metrics_url="http://127.0.0.1:9/metrics")}
    assert bad["metrics endpoint"].status == FAIL
    with AuditLog(cfg, clock=synced_clock) as log:
        server = start_ops_server(log, port=0)
        try:
            url = f"http://127.0.0.1:{server.port}/metrics"
            good = {c.name: c for c in run_checks(cfg, metrics_url=url)}
        finally:
            server.stop()
    assert good["metrics endpoint"].status == OK
