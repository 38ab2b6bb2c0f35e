"""The rotation, retention, hold and backup commands, and their settings."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from riskaudit import AuditConfig, AuditLog
from riskaudit.cli import app
from riskaudit.config import AuditConfig as Config
from riskaudit.errors import AuditConfigError
from riskaudit.ops import AuditMetrics, Housekeeper
from riskaudit.settings import DAY, BackupSettings
from tests import _full_speed_writer as full_speed_writer
from tests._segments import DAY_NS, Span, synthetic_stream
from tests.conftest import RISKAUDIT
from tests.helpers import event, synced_clock

runner = CliRunner()


def env_for(log_path: Path, **extra: str) -> dict[str, str]:
    return {"RISK_AUDIT_LOG_PATH": str(log_path), **extra}


def test_storage_settings_from_the_environment(no_settings: None) -> None:
    """Rotation, retention and backup settings parse, the backup ones under both prefixes."""
    cfg = Config.from_env(
        {
            "RISK_AUDIT_ROTATE_BYTES": "512MiB",
            "RISK_AUDIT_ROTATE_INTERVAL": "daily",
            "RISK_AUDIT_RETENTION_HOT": "30d",
            "RISK_AUDIT_RETENTION_MIN_BY_TYPE": "KILL_SWITCH=2557d, limit_breach=2000d",
            "AUDIT_BACKUP_ENABLED": "1",
            "AUDIT_BACKUP_INTERVAL": "30m",
            "AUDIT_BACKUP_TARGET": "s3://bucket/prefix",
            "RISK_AUDIT_COMPRESSION": "zstd",
        }
    )
    assert cfg.rotation.max_bytes == 512 << 20 and cfg.rotation.interval == 86400
    assert cfg.retention.hot == 30 * DAY and cfg.retention.warm == 365 * DAY
    assert cfg.retention.minimum_by_type == {"KILL_SWITCH": 2557 * DAY, "LIMIT_BREACH": 2000 * DAY}
    assert cfg.backup == BackupSettings(True, 1800.0, "s3://bucket/prefix")
    assert cfg.compression == "zstd"
    defaults = Config.from_env({})
    assert defaults.backup.interval == 3600 and not defaults.backup.enabled
    assert defaults.retention.minimum == 1827 * DAY and defaults.rotation.max_bytes == 0


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"AUDIT_BACKUP_ENABLED": "1"}, "RISK_AUDIT_BACKUP_TARGET"),
        ({"RISK_AUDIT_ROTATE_INTERVAL": "fortnightly"}, "RISK_AUDIT_ROTATE_INTERVAL"),
        ({"RISK_AUDIT_RETENTION_HOT": "400d"}, "RISK_AUDIT_RETENTION_HOT"),
        ({"RISK_AUDIT_RETENTION_MIN_BY_TYPE": "KILL_SWITCH"}, "RISK_AUDIT_RETENTION_MIN_BY_TYPE"),
        ({"RISK_AUDIT_RETENTION_MIN_BY_TYPE": "NOT_A_TYPE=1d"}, "RISK_AUDIT_RETENTION_MIN_BY_TYPE"),
        ({"RISK_AUDIT_COMPRESSION": "lz4"}, "RISK_AUDIT_COMPRESSION"),
    ],
)
def test_bad_storage_settings_name_the_setting(env: dict[str, str], setting: str) -> None:
    """A bad rotation, retention or backup value stops start-up naming the setting."""
    with pytest.raises(AuditConfigError, match=setting):
        Config.from_env(env)


def test_signal_reopen_reaches_the_writer_through_its_pid_file(
    log_path: Path, tmp_path: Path
) -> None:
    """`riskaudit signal reopen` sends SIGUSR1 to the pid in the pid file (or lock file)."""
    pid_file = tmp_path / "w.pid"
    writer = full_speed_writer.start(pid_file, {"RISK_AUDIT_LOG_PATH": str(log_path)})
    try:
        time.sleep(0.3)
        os.rename(log_path, log_path.with_name("risk_audit.jsonl.1"))
        out = subprocess.run(
            [RISKAUDIT, "signal", "reopen"],
            env={**os.environ, "RISK_AUDIT_LOG_PATH": str(log_path)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "SIGUSR1" in out.stdout
        time.sleep(0.3)
    finally:
        writer.send_signal(signal.SIGTERM)
        writer.communicate(timeout=30)
    assert log_path.exists()
    first = orjson.loads(log_path.read_bytes().split(b"\n", 1)[0])
    assert first["kind"] == "segment"


def test_signal_without_a_writer_is_a_clear_error(log_path: Path) -> None:
    """No lock file, no pid: a message saying so, exit 1."""
    result = runner.invoke(app, ["signal", "reopen"], env=env_for(log_path))
    assert result.exit_code == 1 and "cannot read the writer's pid" in result.output


def test_hold_commands_and_retention_plan_json(tmp_path: Path) -> None:
    """hold add/list/remove, and `retention plan --json` showing the hold's effect."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    synthetic_stream(log_path, None, [Span(now - 2200 * DAY_NS), Span(now - 5 * DAY_NS)])
    env = env_for(log_path)
    plan = runner.invoke(app, ["retention", "plan", "--json"], env=env)
    assert plan.exit_code == 0, plan.output
    assert [d["action"] for d in orjson.loads(plan.output)["decisions"]] == ["delete", "keep"]
    add = runner.invoke(app, ["hold", "add", "CASE-1", "--reason", "inquiry"], env=env)
    assert add.exit_code == 0, add.output
    dup = runner.invoke(app, ["hold", "add", "CASE-1", "--reason", "again"], env=env)
    assert dup.exit_code == 2 and "exists already" in dup.output
    listed = runner.invoke(app, ["hold", "list", "--json"], env=env)
    assert orjson.loads(listed.output)[0]["name"] == "CASE-1"
    held = orjson.loads(runner.invoke(app, ["retention", "plan", "--json"], env=env).output)
    assert [d["action"] for d in held["decisions"]] == ["compress", "keep"]  # never delete
    table = runner.invoke(app, ["retention", "plan"], env=env)
    assert "legal hold CASE-1" in table.output
    future = runner.invoke(app, ["retention", "plan", "--json", "--as-of", "2099-01-01"], env=env)
    assert future.exit_code == 0
    assert runner.invoke(app, ["hold", "remove", "CASE-1"], env=env).exit_code == 0
    assert "no legal holds" in runner.invoke(app, ["hold", "list"], env=env).output


def test_retention_apply_refuses_while_the_service_holds_the_log(log_path: Path) -> None:
    """apply needs the writer's lock: with a writer running it says who holds it."""
    with AuditLog(AuditConfig(log_path=log_path), clock=synced_clock):
        result = runner.invoke(app, ["retention", "apply"], env=env_for(log_path))
    assert result.exit_code == 1
    assert "applies retention every RISK_AUDIT_RETENTION_INTERVAL" in result.output


def test_retention_apply_writes_its_actions_into_the_log(tmp_path: Path) -> None:
    """apply by hand: the expired segment goes, and a `retention` record says so."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    _s, paths = synthetic_stream(log_path, None, [Span(now - 2200 * DAY_NS), Span(now - DAY_NS)])
    result = runner.invoke(app, ["retention", "apply", "--json"], env=env_for(log_path))
    assert result.exit_code == 0, result.output
    assert not paths[0].exists() and paths[1].exists()
    recs = [orjson.loads(x) for x in log_path.read_bytes().splitlines()]
    (ret,) = [r for r in recs if r.get("kind") == "retention"]
    assert ret["action"] == "delete" and ret["segment"] == paths[0].name


def test_backup_commands_run_status_verify_restore(tmp_path: Path) -> None:
    """backup run, status, verify (a restore drill) and restore, with a directory target."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    synthetic_stream(log_path, None, [Span(now - 3 * DAY_NS), Span(now - DAY_NS)])
    env = env_for(log_path, RISK_AUDIT_BACKUP_TARGET=str(tmp_path / "archive"))
    run = runner.invoke(app, ["backup", "run", "--json"], env=env)
    assert run.exit_code == 0, run.output
    assert len(orjson.loads(run.output)["copied"]) == 2
    status = orjson.loads(runner.invoke(app, ["backup", "status", "--json"], env=env).output)
    assert status["archived_segments"] == 2 and status["pending_segments"] == []
    assert status["last_success"] != "never"
    verify = runner.invoke(app, ["backup", "verify"], env=env)
    assert verify.exit_code == 0, verify.output
    assert "VALID" in verify.output
    out = tmp_path / "restored"
    restore = runner.invoke(app, ["backup", "restore", "--out", str(out)], env=env)
    assert restore.exit_code == 0, restore.output
    check = runner.invoke(app, ["verify", str(out)])
    assert check.exit_code == 0, check.output
    none = runner.invoke(app, ["backup", "run"], env=env_for(log_path))
    assert none.exit_code == 2 and "RISK_AUDIT_BACKUP_TARGET" in none.output


def test_backup_metrics_are_exported(log_path: Path, tmp_path: Path) -> None:
    """The service exports the backup's last success time and its failure count."""
    cfg = AuditConfig(
        log_path=log_path,
        backup=BackupSettings(enabled=True, target=str(tmp_path / "archive")),
        retention_interval=0,
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        metrics = AuditMetrics(log)
        keeper = Housekeeper(log, cfg)
        metrics.watch_housekeeping(keeper)
        assert b"audit_backup_last_success_timestamp_seconds 0.0" in metrics.render()
        log.append(event(1))
        keeper.backup_now()
        text = metrics.render().decode()
    line = next(x for x in text.splitlines() if x.startswith("audit_backup_last_success"))
    assert abs(float(line.split()[-1]) - time.time()) < 60
    assert "audit_backup_failures_total 0.0" in text
    assert "audit_truncations_total 0.0" in text


def on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run the CLI with stdin and stderr on a pseudo-terminal: (exit code, what it drew)."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [RISKAUDIT, *args],
        stdin=child,
        stdout=subprocess.DEVNULL,
        stderr=child,
        env={**os.environ, "TERM": "xterm", **env},
    )
    os.close(child)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=60)
    os.close(main)
    return proc.returncode, seen


def test_progress_bars_on_a_terminal_and_quiet_in_pipes_and_json(tmp_path: Path) -> None:
    """verify, backup run and retention apply draw a progress bar on a terminal; none in
    a pipe, and none with --json even on a terminal."""
    log_path = tmp_path / "logs" / "risk_audit.jsonl"
    now = time.time_ns()
    synthetic_stream(
        log_path,
        None,
        [Span(now - 2200 * DAY_NS, events=50)]
        + [Span(now - d * DAY_NS, events=2000) for d in range(30, 0, -1)],
    )
    env = env_for(log_path, RISK_AUDIT_BACKUP_TARGET=str(tmp_path / "archive"))
    piped = subprocess.run(
        [RISKAUDIT, "verify", str(log_path.parent)], capture_output=True, text=True, check=False
    )
    assert piped.returncode == 0 and "\x1b" not in piped.stderr + piped.stdout
    for args, label in (
        (["verify", str(log_path.parent)], b"verify"),
        (["backup", "run"], b"backup"),
        (["retention", "apply"], b"retention"),
    ):
        rc, seen = on_terminal(args, env)
        assert rc == 0, seen
        # rich redraws its line (erase, then the label) and draws the bar with "━".
        assert b"\x1b[2K" + label in seen and "━".encode() in seen, (args, seen)
    rc, seen = on_terminal(["backup", "run", "--json"], env)
    assert rc == 0 and b"\x1b" not in seen
    rc, seen = on_terminal(["retention", "apply", "--json"], env)
    assert rc == 0 and b"\x1b" not in seen
