"""AuditConfig: built from the environment once; bad values name their setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from riskaudit import AuditConfig, AuditConfigError, EventPriority
from riskaudit.config import parse_bool, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0.01", 0.01),
        ("10ms", 0.01),
        ("20us", 20e-6),
        ("2s", 2),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        ("0", 0),
    ],
)
def test_durations_accept_suffixes(text: str, seconds: float) -> None:
    """Durations are seconds, with optional us/ms/s/m/h/d suffixes."""
    assert parse_duration("X", text) == pytest.approx(seconds)


def test_defaults(no_settings: None) -> None:
    """With nothing set, the defaults of the README's table apply."""
    cfg = AuditConfig.from_env({})
    assert cfg.log_path == Path("logs/risk_audit.jsonl")
    assert cfg.flush_interval == 0 and cfg.append_timeout == 0.05
    assert cfg.queue_size == 262_144 and cfg.switch_interval is None
    assert cfg.slo_seconds[EventPriority.CRITICAL] == pytest.approx(20e-6)


def test_environment_overrides_and_original_names() -> None:
    """RISK_AUDIT_* settings apply; the original design's AUDIT_FLUSH_INTERVAL is the
    fallback."""
    cfg = AuditConfig.from_env(
        {
            "RISK_AUDIT_LOG_PATH": "/x/y.jsonl",
            "AUDIT_FLUSH_INTERVAL": "250ms",
            "RISK_AUDIT_QUEUE_SIZE": "1000",
            "LOG_LEVEL": "debug",
            "RISK_AUDIT_SLO_HIGH": "300us",
            "RISK_AUDIT_SWITCH_INTERVAL": "1ms",
        }
    )
    assert cfg.log_path == Path("/x/y.jsonl") and cfg.flush_interval == 0.25
    assert cfg.queue_size == 1000 and cfg.log_level == "DEBUG"
    assert cfg.slo_seconds[EventPriority.HIGH] == pytest.approx(300e-6)
    assert cfg.switch_interval == pytest.approx(0.001)
    new = AuditConfig.from_env({"RISK_AUDIT_FLUSH_INTERVAL": "0", "AUDIT_FLUSH_INTERVAL": "9"})
    assert new.flush_interval == 0


@pytest.mark.parametrize(
    "env, setting",
    [
        ({"RISK_AUDIT_FLUSH_INTERVAL": "soon"}, "RISK_AUDIT_FLUSH_INTERVAL"),
        ({"AUDIT_FLUSH_INTERVAL": "-1"}, "AUDIT_FLUSH_INTERVAL"),
        ({"RISK_AUDIT_QUEUE_SIZE": "0"}, "RISK_AUDIT_QUEUE_SIZE"),
        ({"RISK_AUDIT_QUEUE_SIZE": "many"}, "RISK_AUDIT_QUEUE_SIZE"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"RISK_AUDIT_APPEND_TIMEOUT": "1x"}, "RISK_AUDIT_APPEND_TIMEOUT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    """A bad value stops start-up with a message that names the setting."""
    with pytest.raises(AuditConfigError) as info:
        AuditConfig.from_env(env)
    assert setting in str(info.value)


def test_booleans() -> None:
    """Booleans are 1/0/true/false; anything else is an error."""
    assert parse_bool("X", "true") and parse_bool("X", "1")
    assert not parse_bool("X", "0") and not parse_bool("X", "FALSE")
    with pytest.raises(AuditConfigError):
        parse_bool("X", "maybe")


def test_never_lose_settings() -> None:
    """Spool, retry, reserve, fail-closed, persistence and watermarks from the environment."""
    cfg = AuditConfig.from_env(
        {
            "RISK_AUDIT_SPOOL_DIR": "/spool",
            "RISK_AUDIT_RETRY_MAX": "5s",
            "RISK_AUDIT_RESERVE": "128",
            "RISK_AUDIT_FAIL_CLOSED": "1",
            "RISK_AUDIT_REQUIRE_PERSISTENT": "true",
            "RISK_AUDIT_FREE_WARN_PERCENT": "20%",
            "RISK_AUDIT_FREE_CRIT_BYTES": "512MiB",
            "RISK_AUDIT_STORAGE_CHECK_INTERVAL": "2m",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        }
    )
    assert cfg.spool_dir == Path("/spool") and cfg.retry_max == 5
    assert cfg.reserve == 128 and cfg.fail_closed and cfg.require_persistent
    assert cfg.watermarks.warn_percent == 20 and cfg.watermarks.crit_bytes == 512 << 20
    assert cfg.storage_check_interval == 120 and cfg.in_kubernetes


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"RISK_AUDIT_FAIL_CLOSED": "perhaps"}, "RISK_AUDIT_FAIL_CLOSED"),
        ({"RISK_AUDIT_FREE_WARN_PERCENT": "120"}, "RISK_AUDIT_FREE_WARN_PERCENT"),
        ({"RISK_AUDIT_FREE_CRIT_BYTES": "lots"}, "RISK_AUDIT_FREE_CRIT_BYTES"),
        ({"RISK_AUDIT_RETRY_MAX": "0"}, "RISK_AUDIT_RETRY_MAX"),
    ],
)
def test_bad_never_lose_settings_name_the_setting(env: dict[str, str], setting: str) -> None:
    """A bad value of the new settings names the setting too."""
    with pytest.raises(AuditConfigError) as info:
        AuditConfig.from_env(env)
    assert setting in str(info.value)


def test_tamper_evidence_settings() -> None:
    """Signing key, checkpoints, clock, policies and redaction from the environment."""
    cfg = AuditConfig.from_env(
        {
            "RISK_AUDIT_SIGNING_KEY_FILE": "/run/secrets/key.pem",
            "RISK_AUDIT_CHECKPOINT_INTERVAL": "30s",
            "RISK_AUDIT_CHECKPOINT_RECORDS": "5000",
            "RISK_AUDIT_CHECKPOINT_PATH": "/mnt/offhost/log.checkpoints",
            "RISK_AUDIT_CLOCK_MAX_ERROR": "100us",
            "RISK_AUDIT_CLOCK_REQUIRED": "1",
            "RISK_AUDIT_SCHEMA_POLICY": "ENFORCE",
            "RISK_AUDIT_ACTOR_POLICY": "warn",
            "RISK_AUDIT_REDACT_FIELDS": "data.api_key, metadata.client.account",
            "RISK_AUDIT_HMAC_KEY_FILE": "/run/secrets/hmac",
        }
    )
    assert cfg.signing_key_file == Path("/run/secrets/key.pem")
    assert cfg.checkpoint_interval == 30 and cfg.checkpoint_records == 5000
    assert cfg.checkpoint_path == Path("/mnt/offhost/log.checkpoints")
    assert cfg.clock_max_error == pytest.approx(100e-6) and cfg.clock_required
    assert cfg.schema_policy == "enforce" and cfg.actor_policy == "warn"
    assert cfg.redact_fields == ("data.api_key", "metadata.client.account")
    with pytest.raises(AuditConfigError, match="RISK_AUDIT_SCHEMA_POLICY"):
        AuditConfig.from_env({"RISK_AUDIT_SCHEMA_POLICY": "strict"})
