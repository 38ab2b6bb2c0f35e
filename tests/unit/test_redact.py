"""Redaction: HMAC of any value type; hash-value finds a known value; nothing leaks."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from riskaudit import AuditConfig, AuditConfigError, AuditLog, EventType, RiskEvent, verify_paths
from riskaudit.cli import app
from tests.helpers import records, synced_clock


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "hmac.key"
    path.write_bytes(os.urandom(32))
    return path


def _leaves(value: object) -> list[object]:
    """Every scalar inside a JSON value (dict keys excluded)."""
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_redaction_round_trip_with_hash_value(tmp_path: Path, key_file: Path) -> None:
    """Strings, numbers and nested objects are replaced by their HMAC; hash-value
    reproduces it; the producer's event is untouched; the log verifies."""
    cfg = AuditConfig(
        log_path=tmp_path / "r.jsonl",
        hmac_key_file=key_file,
        redact_fields=("data.api_key", "data.account", "metadata.client.ssn", "data.absent"),
    )
    event = RiskEvent(
        EventType.ALERT,
        data={"message": "login", "api_key": "sk-live-123", "account": 4711},
        metadata={"client": {"ssn": {"nr": "078-05-1120"}, "desk": "rates"}},
    )
    with AuditLog(cfg, clock=synced_clock) as log:
        log.append(event)
    rec = next(r for r in records(cfg.log_path) if r.get("event_type") == "ALERT")
    raw = cfg.log_path.read_bytes()
    assert b"sk-live-123" not in raw and b"078-05-1120" not in raw
    # 4711 is four hex digits, so it may occur by chance inside a hash: look at values.
    assert 4711 not in _leaves(list(records(cfg.log_path)))
    assert rec["data"]["message"] == "login" and rec["metadata"]["client"]["desk"] == "rates"
    runner = CliRunner()
    for value, flag, got in (
        ("sk-live-123", [], rec["data"]["api_key"]),
        ("4711", ["--value-json"], rec["data"]["account"]),
        ('{"nr": "078-05-1120"}', ["--value-json"], rec["metadata"]["client"]["ssn"]),
    ):
        out = runner.invoke(app, ["hash-value", value, *flag, "--key-file", str(key_file)])
        assert out.exit_code == 0, out.output
        assert out.output.strip() == got and got.startswith("hmac-sha256:")
    out = runner.invoke(
        app, ["hash-value", "4711", "--value-json", "--json", "--key-file", str(key_file)]
    )
    assert orjson.loads(out.output) == {"value": 4711, "hash": rec["data"]["account"]}
    assert event.data["api_key"] == "sk-live-123"  # the producer's dict is untouched
    assert event.metadata["client"]["ssn"] == {"nr": "078-05-1120"}
    assert verify_paths([cfg.log_path]).valid


def test_redaction_needs_a_key_and_valid_paths(tmp_path: Path, key_file: Path) -> None:
    """Fields without a key, or paths outside data/metadata, are configuration errors."""
    with pytest.raises(AuditConfigError, match="RISK_AUDIT_HMAC_KEY_FILE"):
        AuditConfig.from_env({"RISK_AUDIT_REDACT_FIELDS": "data.api_key"})
    cfg = AuditConfig(
        log_path=tmp_path / "x.jsonl", hmac_key_file=key_file, redact_fields=("source",)
    )
    with pytest.raises(AuditConfigError, match="RISK_AUDIT_REDACT_FIELDS"):
        AuditLog(cfg, clock=synced_clock)
