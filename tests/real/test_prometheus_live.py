"""A real Prometheus scrapes riskaudit serve while its disk fills: the alerts fire."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, require


@pytest.mark.slow
def test_write_failure_and_emergency_alerts_fire_on_a_real_prometheus() -> None:
    """The primary's tmpfs fills (no spool): AuditLogWriteFailure and AuditEmergencyPath
    fire in Prometheus, /ready turns 503 while /health stays 200."""
    require(shutil.which("prometheus") is not None, "needs Debian's prometheus")
    require(os.geteuid() == 0, "needs root (a size-limited tmpfs)")
    require(shutil.which("unshare") is not None, "needs util-linux unshare")
    work = Path(tempfile.mkdtemp(prefix="riskaudit-prom-"))
    try:
        proc = subprocess.run(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                sys.executable,
                str(ROOT / "tests" / "_prometheus_live.py"),
                str(work),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
        )
        logs = "".join(
            f"\n--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(work.glob("*.log")) + sorted(work.glob("*.stderr"))
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr + logs
        result = json.loads((work / "RESULT.json").read_text())
        assert result["ready_before"] == 200
        assert {"AuditLogWriteFailure", "AuditEmergencyPath"} <= set(result["firing"])
        assert result["ready_after"] == 503, result
        assert result["health_after"] == 200, result
        assert result["health_body"]["status"] == "failing"
        print(
            f"first clean scrape after {result['first_scrape_s']} s; alerts fired "
            f"{result['fired_after_s']} s after the disk filled: {result['firing']}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
