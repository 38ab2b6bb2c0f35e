"""The command line: verify's output and exit codes, tail, demo, SIGTERM draining."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from riskaudit.cli import app
from tests.conftest import RISKAUDIT, VECTORS
from tests.helpers import ROOT, records

runner = CliRunner()


def test_verify_valid_log_exits_0() -> None:
    """A valid log: records, seq range, VALID, exit 0."""
    result = runner.invoke(app, ["verify", str(VECTORS / "valid.jsonl")])
    assert result.exit_code == 0, result.output
    assert "records read: 6 (seq 1-6)" in result.output and "VALID" in result.output
    assert "verified without a problem: seq 1-6" in result.output


def test_verify_tampered_log_exits_1_naming_seq() -> None:
    """A tampered log: one INVALID line per problem naming the seq, exit 1."""
    result = runner.invoke(app, ["verify", str(VECTORS / "tampered-deleted-seq4.jsonl")])
    assert result.exit_code == 1
    assert "INVALID: seq 4: deleted" in result.output


def test_verify_json_output() -> None:
    """--json prints a machine-readable report."""
    result = runner.invoke(app, ["verify", "--json", str(VECTORS / "tampered-modified-seq3.jsonl")])
    assert result.exit_code == 1
    report = orjson.loads(result.stdout)
    assert report["valid"] is False and report["problems"][0]["seq"] == 3
    assert report["problems"][0]["kind"] == "modified"


def test_verify_missing_path_exits_2(tmp_path: Path) -> None:
    """A path that names nothing is a usage error: exit 2."""
    result = runner.invoke(app, ["verify", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2


def test_verify_directory_skips_lock_torn_and_sidecar(tmp_path: Path) -> None:
    """Given a directory, verify reads the segments and ignores lock and torn files."""
    shutil.copy(VECTORS / "valid.jsonl", tmp_path / "risk_audit.jsonl")
    (tmp_path / "risk_audit.jsonl.lock").write_text("123\n")
    (tmp_path / "risk_audit.jsonl.torn-20261126T000000.000000000Z").write_bytes(b'{"seq":')
    shutil.copy(VECTORS / "valid.jsonl.checkpoints", tmp_path / "risk_audit.jsonl.checkpoints")
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "files: 1" in result.output


def test_verify_glob_across_files_ordered_by_first_seq(tmp_path: Path) -> None:
    """A stream split over files verifies whatever the names, ordered by first seq."""
    lines = (VECTORS / "valid.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "b.jsonl").write_bytes(b"".join(lines[:3]))
    (tmp_path / "a.jsonl").write_bytes(b"".join(lines[3:]))
    result = runner.invoke(app, ["verify", str(tmp_path / "*.jsonl")])
    assert result.exit_code == 0, result.output
    (tmp_path / "a.jsonl").write_bytes(b"".join(lines[4:]))
    result = runner.invoke(app, ["verify", str(tmp_path / "*.jsonl")])
    assert result.exit_code == 1 and "INVALID: seq 4: seq gap" in result.output


def test_tail_prints_recent_records_readably() -> None:
    """tail -n shows seq, ts, and what each record is."""
    result = runner.invoke(app, ["tail", "-n", "2", str(VECTORS / "valid.jsonl")])
    assert result.exit_code == 0
    out = result.output.splitlines()
    assert len(out) == 2
    assert "KILL_SWITCH CRITICAL" in out[0] and "[checkpoint]" in out[1]


def test_demo_writes_a_log_that_verifies(tmp_path: Path) -> None:
    """demo publishes a realistic mix, prints the log path and how to verify it."""
    log = tmp_path / "demo.jsonl"
    result = runner.invoke(
        app, ["demo", "--events", "2000", "--rate", "0", "--log", str(log), "--seed", "7"]
    )
    assert result.exit_code == 0, result.output
    assert "riskaudit verify" in result.output and str(log) in result.output
    types = {r.get("event_type") for r in records(log)}
    assert {"PRE_TRADE_CHECK", "LIMIT_BREACH", "KILL_SWITCH", "CONFIG_UPDATE"} <= types
    kill = [r["data"]["action"] for r in records(log) if r.get("event_type") == "KILL_SWITCH"]
    assert kill == ["activate", "reset"]
    assert runner.invoke(app, ["verify", str(log)]).exit_code == 0


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals")
def test_sigterm_drains_the_queue_and_writes_stop(tmp_path: Path) -> None:
    """SIGTERM to a running demo: it exits, every accepted record is on disk, stop last."""
    log = tmp_path / "term.jsonl"
    proc = subprocess.Popen(
        [RISKAUDIT, "demo", "--events", "10000000", "--rate", "20000", "--log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 50_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode != 0  # interrupted
    recs = records(log)
    assert recs[-1]["kind"] == "stop"
    assert runner.invoke(app, ["verify", str(log)]).exit_code == 0


def test_the_conventions_a_user_expects() -> None:
    """`riskaudit --version`, `python -m riskaudit`, typer's shell completion, a py.typed
    marker and a LICENSE that matches pyproject's license."""
    import tomllib

    import riskaudit

    out = subprocess.run([RISKAUDIT, "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == f"riskaudit {riskaudit.__version__}"
    mod = subprocess.run(
        [sys.executable, "-m", "riskaudit", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mod.returncode == 0 and mod.stdout == out.stdout
    assert "--install-completion" in runner.invoke(app, ["--help"]).output
    assert (Path(riskaudit.__file__).parent / "py.typed").exists()
    root = ROOT
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (root / "LICENSE").read_text()
    assert "Version 2.0" in (root / "LICENSE").read_text()
