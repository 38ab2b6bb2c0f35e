"""Event schemas and the actor rules, both ways."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from riskaudit import (
    AuditConfig,
    AuditLog,
    AuditPolicyError,
    AuditSchemaError,
    EventPriority,
    EventType,
    RiskEvent,
    verify_paths,
)
from riskaudit.policy import SCHEMAS, actor_problem, schema_problem
from tests.conftest import VECTORS
from tests.helpers import records, synced_clock


def limit_change(old: object, new: object, **meta: str) -> RiskEvent:
    return RiskEvent(
        EventType.CONFIG_UPDATE,
        EventPriority.HIGH,
        "risk-ui",
        {"limit": "max_position_ESZ6", "old": old, "new": new},
        dict(meta),
    )


def kill(action: str, **meta: str) -> RiskEvent:
    return RiskEvent(
        EventType.KILL_SWITCH,
        EventPriority.CRITICAL,
        "risk-ui",
        {"action": action, "scope": "desk-1"},
        dict(meta),
    )


def test_every_event_type_has_a_schema_and_the_vectors_conform() -> None:
    """Schemas cover every type; the conformance vectors' events satisfy them."""
    assert set(SCHEMAS) == set(EventType)
    for line in (VECTORS / "valid.jsonl").read_bytes().splitlines():
        rec = orjson.loads(line)
        if "event_id" in rec:
            assert schema_problem(RiskEvent.from_dict(rec)) is None


def test_schema_warn_writes_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Default warn: the event is written, the missing field named in the log, counted."""
    with AuditLog(path=tmp_path / "w.jsonl", clock=synced_clock) as log:
        seq = log.append(RiskEvent(EventType.LIMIT_BREACH, data={"limit": "x", "observed": 3}))
        assert seq is not None and log.schema_warnings == 1
    assert "needs data.limit_value" in caplog.text


def test_schema_enforce_refuses_naming_the_field(tmp_path: Path) -> None:
    """enforce: AuditSchemaError names the field; nothing written, no seq spent."""
    cfg = AuditConfig(log_path=tmp_path / "e.jsonl", schema_policy="enforce")
    with AuditLog(cfg, clock=synced_clock) as log:
        first = log.append(RiskEvent(EventType.ALERT, data={"message": "ok"}))
        with pytest.raises(AuditSchemaError, match=r"data\.order_id"):
            log.append(RiskEvent(EventType.PRE_TRADE_CHECK, data={"outcome": "ACCEPT"}))
        with pytest.raises(AuditSchemaError, match=r"data\.action must be one of"):
            log.append(RiskEvent(EventType.KILL_SWITCH, data={"action": "pause", "scope": "x"}))
        assert log.append(RiskEvent(EventType.ALERT, data={"message": "ok"})) == first + 1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("event", "rule"),
    [
        (limit_change(100, 50), "actor_required"),
        (limit_change(100, 150, actor="alice"), "approval_required"),
        (limit_change(100, 150, actor="alice", approved_by="alice"), "four_eyes"),
        (kill("deactivate"), "actor_required"),
        (kill("reset", actor="alice"), "approval_required"),
        (kill("reset", actor="alice", approved_by="alice"), "four_eyes"),
        # Fail closed: a change not shown to lower the limit needs approval as a raise.
        (limit_change(100, "1000000", actor="alice"), "approval_required"),
        (limit_change(None, 10**9, actor="alice"), "approval_required"),
        (limit_change(100, float("nan"), actor="alice"), "approval_required"),
        (limit_change(False, True, actor="alice"), "approval_required"),
    ],
)
def test_actor_rules(event: RiskEvent, rule: str) -> None:
    """Each rule is named for the event that breaks it."""
    found = actor_problem(event)
    assert found is not None and found[0] == rule


@pytest.mark.parametrize(
    "event",
    [
        limit_change(100, 50, actor="alice"),
        limit_change(100, 150, actor="alice", approved_by="bob"),
        kill("activate"),
        kill("reset", actor="alice", approved_by="bob"),
    ],
)
def test_compliant_events_pass(event: RiskEvent) -> None:
    """A decrease needs only the actor; an activation nobody; four eyes satisfy the rest."""
    assert actor_problem(event) is None


def test_enforce_records_the_attempt_then_raises(tmp_path: Path) -> None:
    """enforce (default): a policy_violation record keeps the refused event; append raises."""
    with AuditLog(path=tmp_path / "a.jsonl", clock=synced_clock) as log:
        bad = limit_change(100, 500, actor="trader-7")
        with pytest.raises(AuditPolicyError, match=r"needs metadata\.approved_by") as info:
            log.append(bad)
        assert info.value.rule == "approval_required"
    recs = records(tmp_path / "a.jsonl")
    violation = next(r for r in recs if r.get("kind") == "policy_violation")
    assert violation["seq"] == info.value.seq and violation["outcome"] == "refused"
    assert (
        violation["event"]["event_id"] == bad.event_id and violation["event"]["data"]["new"] == 500
    )
    assert not [r for r in recs if "kind" not in r and r.get("event_id") == bad.event_id]
    assert verify_paths([tmp_path / "a.jsonl"]).valid


def test_warn_writes_the_event_and_flags_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """warn: the event is written, and a policy_violation record flags it by seq."""
    caplog.set_level(logging.WARNING)
    cfg = AuditConfig(log_path=tmp_path / "w.jsonl", actor_policy="warn")
    with AuditLog(cfg, clock=synced_clock) as log:
        seq = log.append(kill("reset", actor="alice"))
        assert log.policy_violations == 1
    recs = records(tmp_path / "w.jsonl")
    flagged = next(r for r in recs if r.get("kind") == "policy_violation")
    assert flagged["outcome"] == "flagged" and flagged["event_seq"] == seq
    assert any(r.get("seq") == seq and r.get("event_type") == "KILL_SWITCH" for r in recs)


def test_a_correction_is_a_new_event_naming_the_original(tmp_path: Path) -> None:
    """No update or delete: the correction and the original are both in the log."""
    with AuditLog(path=tmp_path / "c.jsonl", clock=synced_clock) as log:
        original = RiskEvent(EventType.ALERT, data={"message": "limit breached on ESZ6"})
        log.append(original)
        fix = RiskEvent(
            EventType.ALERT,
            data={"message": "limit breached on ESH7"},
            metadata={"corrects": original.event_id},
        )
        log.append(fix)
    recs = [r for r in records(tmp_path / "c.jsonl") if r.get("event_type") == "ALERT"]
    assert [r["event_id"] for r in recs] == [original.event_id, fix.event_id]
    assert recs[1]["metadata"]["corrects"] == original.event_id
