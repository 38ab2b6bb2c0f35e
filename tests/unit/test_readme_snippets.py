"""Every Python snippet in the README runs as written, in a fresh interpreter, with no
schema or policy warning (a snippet once published a LIMIT_BREACH the default schema
policy warned about, and used names it never defined)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_captured, synced_clock

README = ROOT / "README.md"
SNIPPETS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.S | re.M)


def test_the_readme_has_python_snippets() -> None:
    """The extraction finds the README's snippets (so the test below cannot pass empty)."""
    assert SNIPPETS


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet-{i}" for i in range(len(SNIPPETS))])
def test_a_readme_snippet_runs_as_written(code: str, tmp_path: Path) -> None:
    """The snippet, alone in a fresh interpreter (no injected names): exit 0, no warning
    from the schema or actor policy."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "RISK_AUDIT_LOG_PATH": str(tmp_path / "logs" / "risk_audit.jsonl"),
    }
    done = run_captured([sys.executable, "-c", code], tmp_path, env, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SCHEMA_POLICY" not in done.stderr and "needs data." not in done.stderr, done.stderr
    assert "ACTOR_POLICY" not in done.stderr, done.stderr


def test_the_demo_s_breaches_compare_like_with_like(tmp_path: Path) -> None:
    """Each LIMIT_BREACH of the demo reports the limit it names, with the limit value and
    the observed quantity in one unit, the observed beyond the limit (it once reported
    the position limit against a notional breach: "limit 100, observed 34")."""
    from riskaudit import AuditConfig, AuditLog, RiskEventBus
    from riskaudit.demo import RiskEngineSimulator
    from tests.helpers import records

    cfg = AuditConfig(log_path=tmp_path / "demo.jsonl")
    with AuditLog(cfg, clock=synced_clock) as log:
        sim = RiskEngineSimulator(RiskEventBus(log), seed=7)
        sim.max_notional = 1_000_000.0  # both limits breached in a short run
        sim.run(3_000, 0, lambda: False)
    breaches = [r["data"] for r in records(cfg.log_path) if r.get("event_type") == "LIMIT_BREACH"]
    assert {b["limit"] for b in breaches} == {"max_position", "max_notional"}
    for b in breaches:
        assert b["unit"] == {"max_position": "contracts", "max_notional": "USD"}[b["limit"]]
        assert b["observed"] > b["limit_value"], b
