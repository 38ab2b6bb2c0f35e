"""The shipped logrotate policy, run by the real logrotate against a writer at full speed."""

from __future__ import annotations

import gzip
import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson

from riskaudit import verify_paths
from tests import _full_speed_writer as full_speed_writer
from tests.conftest import RISKAUDIT
from tests.helpers import ROOT, require

SHIPPED = ROOT / "deploy" / "logrotate" / "riskaudit"


def adapted_config(log: Path, pid_file: Path) -> str:
    """The shipped file with its paths pointed at the test's directory."""
    text = SHIPPED.read_text()
    text = text.replace("/var/log/riskaudit/risk_audit.jsonl", str(log))
    text = text.replace("/run/riskaudit/riskaudit.pid", str(pid_file))
    return text.replace("/usr/local/bin/riskaudit", RISKAUDIT)


def read_all(directory: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if not name.startswith("risk_audit.jsonl") or name.endswith((".lock", ".checkpoints")):
            continue
        data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        # Complete lines only: a copy taken mid-write may end inside a record.
        out.extend(orjson.loads(line) for line in data.split(b"\n")[:-1])
    return out


def test_shipped_policy_is_create_mode_without_copytruncate() -> None:
    """The shipped policy keeps the original's settings and never uses copytruncate."""
    text = SHIPPED.read_text()
    for directive in (
        "daily",
        "rotate 30",
        "compress",
        "delaycompress",
        "missingok",
        "notifempty",
        "create 0640",
        "postrotate",
    ):
        assert directive in text
    assert "copytruncate" not in text.split("#")[-1]  # only named in the comments


def test_logrotate_debug_accepts_the_shipped_file(tmp_path: Path) -> None:
    """`logrotate -d` parses the shipped file without an error."""
    require(shutil.which("logrotate") is not None, "needs Debian's logrotate")
    conf = tmp_path / "riskaudit.conf"
    conf.write_text(SHIPPED.read_text())
    out = subprocess.run(
        ["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "error" not in out.stderr.lower()


def rotate_while_writing(
    tmp_path: Path, policy: str, env: dict[str, str], rotations: int
) -> tuple[Path, int, str]:
    """Run the real logrotate `rotations` times (forced) on the policy while a writer
    appends flat out; return the log directory, how many events the writer appended,
    and its stderr. ``policy`` is the config with @LOG@ and @PIDFILE@ placeholders."""
    require(shutil.which("logrotate") is not None, "needs Debian's logrotate")
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o750)
    log = logs / "risk_audit.jsonl"
    pid_file = tmp_path / "writer.pid"
    conf = tmp_path / "riskaudit.conf"
    conf.write_text(policy.replace("@LOG@", str(log)).replace("@PIDFILE@", str(pid_file)))
    writer = full_speed_writer.start(pid_file, {"RISK_AUDIT_LOG_PATH": str(log), **env})
    try:
        for _ in range(rotations):
            time.sleep(0.8)
            out = subprocess.run(
                ["logrotate", "-f", "-s", str(tmp_path / "state"), str(conf)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert out.returncode == 0, out.stderr
        time.sleep(0.8)
    finally:
        writer.send_signal(signal.SIGTERM)
        stdout, stderr = writer.communicate(timeout=60)
    return logs, int(stdout.strip()), stderr


def test_forced_rotations_at_full_speed_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """Three forced rotations while a writer appends flat out: every event exactly once
    across the current, .1 and .gz files, and the chain verifies across them."""
    policy = adapted_config(Path("@LOG@"), Path("@PIDFILE@"))
    logs, appended, _ = rotate_while_writing(
        tmp_path, policy, {"RISK_AUDIT_CHECKPOINT_INTERVAL": "1"}, 3
    )
    assert appended > 10_000  # it really was writing at speed
    names = sorted(p.name for p in logs.iterdir())
    assert "risk_audit.jsonl.1" in names and "risk_audit.jsonl.2.gz" in names
    assert "risk_audit.jsonl.3.gz" in names
    records = read_all(logs)
    ids = [r["event_id"] for r in records if "event_id" in r]
    assert len(ids) == appended  # zero lost, zero duplicated
    assert len(set(ids)) == appended
    assert sum(1 for r in records if r.get("kind") == "segment") == 3
    report = verify_paths([logs])
    assert report.valid, report.findings


def test_logrotate_copytruncate_is_detected_and_recovered(tmp_path: Path) -> None:
    """A copytruncate policy (the unsafe one) run by the real logrotate: the writer
    notices, rewrites its ring, counts it, and verify across both files passes."""
    policy = "@LOG@ {\n  rotate 5\n  copytruncate\n  nocompress\n}\n"
    logs, appended, stderr = rotate_while_writing(
        tmp_path, policy, {"RISK_AUDIT_TRUNCATE_RING": "200000"}, 1
    )
    assert "copytruncate" in stderr, stderr[-2000:]
    records = read_all(logs)
    assert any(r.get("kind") == "truncated" for r in records)
    ids = {r["event_id"] for r in records if "event_id" in r}
    assert len(ids) == appended
    report = verify_paths([logs])
    assert report.valid, report.findings
