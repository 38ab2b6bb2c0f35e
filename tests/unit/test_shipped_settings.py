"""The settings the project ships (README, .env files, Kubernetes) name things that exist."""

from __future__ import annotations

import re

import pytest

from riskaudit.config import parse_minimums
from riskaudit.errors import AuditConfigError
from riskaudit.events import EventType
from tests.helpers import ROOT

SHIPPED = ["README.md", ".env.prod", ".env.dev", "deploy/k8s/configmap.yaml", "docs/operations.md"]


def test_every_shipped_retention_minimum_names_a_real_event_type() -> None:
    """Each RISK_AUDIT_RETENTION_MIN_BY_TYPE value in a shipped file parses: a minimum for
    a type that does not exist would apply to nothing (the docs once shipped
    RISK_LIMIT_CHANGE; limit changes are CONFIG_UPDATE)."""
    found = 0
    for name in SHIPPED:
        text = (ROOT / name).read_text()
        lines = [line for line in text.splitlines() if "RETENTION_MIN_BY_TYPE" in line]
        for value in re.findall(r"[A-Z_]+=\d+\w*(?:,[A-Z_]+=\d+\w*)*", "\n".join(lines)):
            parsed = parse_minimums("RISK_AUDIT_RETENTION_MIN_BY_TYPE", value)
            assert set(parsed) <= set(EventType.__members__), (name, value)
            found += 1
    assert found >= 4


def test_an_unknown_event_type_stops_start_up_naming_the_valid_ones() -> None:
    """A minimum for an unknown type is refused with the setting and the valid names."""
    with pytest.raises(AuditConfigError) as err:
        parse_minimums("RISK_AUDIT_RETENTION_MIN_BY_TYPE", "KILL_SWITCH=2557d,NOT_A_TYPE=1d")
    assert "RISK_AUDIT_RETENTION_MIN_BY_TYPE" in str(err.value)
    assert "NOT_A_TYPE" in str(err.value) and "CONFIG_UPDATE" in str(err.value)
