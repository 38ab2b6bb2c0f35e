"""What a risk event must say: versioned data schemas and the actor rules.

**Schemas** (version 1) name the ``data`` fields each event type needs so that the
record is useful evidence — a LIMIT_BREACH names the limit, its value and the observed
value; a PRE_TRADE_CHECK names the order and the outcome. They are checked at
``append`` under ``RISK_AUDIT_SCHEMA_POLICY``: ``warn`` (default: write the event, log
and count), ``enforce`` (refuse it with AuditSchemaError naming the field), ``off``.

**Actor rules** (MiFID II RTS 6 Art. 18, SEC 15c3-5: who changed a limit, who switched
trading back on). A risk-limit change is a CONFIG_UPDATE with ``data.limit``,
``data.old`` and ``data.new``; it is an increase when ``new > old``. A KILL_SWITCH has
``data.action`` = ``activate``, ``deactivate`` or ``reset``. CONFIG_UPDATE events and
kill-switch deactivations and resets must carry ``metadata.actor``; limit increases
and kill-switch resets also ``metadata.approved_by``, a different person. Under
``RISK_AUDIT_ACTOR_POLICY=enforce`` (default) a violation writes a ``policy_violation``
record — the attempt is evidence — and ``append`` raises AuditPolicyError; under
``warn`` the event is written and a ``policy_violation`` record flags it.

There is no update or delete: a correction is a new event whose ``metadata.corrects``
names the original ``event_id``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from riskaudit.events import EventType, RiskEvent

#: How a rule is applied (RISK_AUDIT_SCHEMA_POLICY, RISK_AUDIT_ACTOR_POLICY): ``enforce``
#: refuses the event, ``warn`` records it and says so, ``off`` does not look.
Enforcement = Literal["enforce", "warn", "off"]
ENFORCEMENTS: tuple[Enforcement, ...] = get_args(Enforcement)

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Schema:
    """Required ``data`` fields: all of ``required``, and one of ``one_of`` if given."""

    required: frozenset[str]
    one_of: frozenset[str] = frozenset()


SCHEMAS: dict[EventType, Schema] = {
    EventType.MARKET_DATA: Schema(frozenset({"symbol"})),
    EventType.POSITION_UPDATE: Schema(frozenset({"symbol", "position"})),
    EventType.TRADE_REQUEST: Schema(frozenset({"order_id", "symbol", "side", "qty"})),
    EventType.PRE_TRADE_CHECK: Schema(frozenset({"order_id", "outcome"})),
    EventType.RISK_CALCULATION: Schema(frozenset({"metric", "value"})),
    EventType.RULE_EVALUATION: Schema(frozenset({"rule", "result"})),
    EventType.LIMIT_BREACH: Schema(frozenset({"limit", "limit_value", "observed"})),
    EventType.KILL_SWITCH: Schema(frozenset({"action", "scope"})),
    EventType.ALERT: Schema(frozenset({"message"})),
    EventType.CONFIG_UPDATE: Schema(frozenset({"old", "new"}), frozenset({"limit", "setting"})),
    EventType.RISK_MONITORING: Schema(frozenset({"metric"})),
    EventType.POSITION_MANAGEMENT: Schema(frozenset({"action", "symbol"})),
    EventType.HEARTBEAT: Schema(frozenset()),
}

KILL_SWITCH_ACTIONS = frozenset({"activate", "deactivate", "reset"})
ACTOR_TYPES = frozenset({EventType.CONFIG_UPDATE, EventType.KILL_SWITCH})


# The checks run on the producer's thread for every append, so they avoid enum hashing
# (a Python-level __hash__) and build nothing: lookups by the member's name string.
_REQUIRED: dict[str, tuple[str, ...]] = {
    t.name: tuple(sorted(schema.required)) for t, schema in SCHEMAS.items()
}
_ONE_OF: dict[str, tuple[str, ...]] = {
    t.name: tuple(sorted(schema.one_of)) for t, schema in SCHEMAS.items() if schema.one_of
}
ACTOR_TYPE_NAMES = frozenset(t.name for t in ACTOR_TYPES)
# The common case in one C-level comparison: the type's required fields are all there
# and nothing else needs looking at (no one-of rule, not a kill switch).
_SIMPLE: dict[str, frozenset[str]] = {
    name: frozenset(fields)
    for name, fields in _REQUIRED.items()
    if name not in _ONE_OF and name != "KILL_SWITCH"
}


def native_checks(
    schema_policy: Enforcement, actor_policy: Enforcement
) -> list[tuple[EventType, tuple[str, ...] | None]]:
    """The common case of these rules, for the core's ``Queue.push_event`` (given
    once): the event types no rule needs to look at event by event (no one-of rule, no
    kill switch's action, no actor rule), each with its required ``data`` keys (None
    when schemas are off). The core queues an event only when that plainly passes;
    anything else comes back here (:func:`schema_problem`, :func:`actor_problem`), so
    the rules and their messages are written once, in Python."""
    schemas = schema_policy != "off"
    actors = actor_policy != "off"
    return [
        (t, tuple(sorted(_SIMPLE[t.name])) if schemas else None)
        for t in SCHEMAS
        if not (schemas and t.name not in _SIMPLE) and not (actors and t.name in ACTOR_TYPE_NAMES)
    ]


class SchemaProblem(str):
    """What is wrong, as a message, and the field at fault (``data.limit``), so an API
    can name it without reading the message."""

    __slots__ = ("field",)
    field: str

    @classmethod
    def of(cls, message: str, field: str) -> SchemaProblem:
        problem = cls(message)
        problem.field = field
        return problem


def schema_problem(event: RiskEvent) -> SchemaProblem | None:
    """The first missing or malformed ``data`` field, named, or None."""
    name = event.event_type._name_
    data = event.data
    simple = _SIMPLE.get(name)
    if simple is not None and data.__class__ is dict and data.keys() >= simple:
        return None
    if not isinstance(data, dict):
        return SchemaProblem.of("data must be an object", "data")
    for field in _REQUIRED.get(name, ()):
        if field not in data:
            return SchemaProblem.of(f"{name} v{SCHEMA_VERSION} needs data.{field}", f"data.{field}")
    one_of = _ONE_OF.get(name)
    if one_of is not None and not any(f in data for f in one_of):
        message = f"{name} v{SCHEMA_VERSION} needs " + " or ".join(f"data.{f}" for f in one_of)
        return SchemaProblem.of(message, f"data.{one_of[0]}")
    if name == "KILL_SWITCH" and data["action"] not in KILL_SWITCH_ACTIONS:
        message = f"KILL_SWITCH data.action must be one of {sorted(KILL_SWITCH_ACTIONS)}"
        return SchemaProblem.of(message, "data.action")
    return None


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not math.isnan(value)


def _increase(old: Any, new: Any) -> bool:
    """Whether a limit change raises the limit. Fails closed: a change that cannot be
    shown to lower it (a value missing, a string, NaN) counts as an increase, so a limit
    written as ``"1000000"`` does not slip past the approval a raise needs."""
    if not (_number(old) and _number(new)):
        return True
    return bool(new > old)


def requires_approval(event: RiskEvent) -> bool:
    """A change that must have a second person's approval: a limit increase (or a limit
    change not shown to be a decrease) or a kill-switch reset."""
    data = event.data if isinstance(event.data, dict) else {}
    if event.event_type is EventType.CONFIG_UPDATE:
        return "limit" in data and _increase(data.get("old"), data.get("new"))
    if event.event_type is EventType.KILL_SWITCH:
        return data.get("action") == "reset"
    return False


def actor_problem(event: RiskEvent) -> tuple[str, str] | None:
    """(rule, detail) of the first actor rule the event breaks, or None."""
    meta = event.metadata if isinstance(event.metadata, dict) else {}
    data = event.data if isinstance(event.data, dict) else {}
    actor = meta.get("actor")
    approver = meta.get("approved_by")
    if event.event_type is EventType.CONFIG_UPDATE:
        if not actor:
            return "actor_required", "CONFIG_UPDATE needs metadata.actor"
        if requires_approval(event):
            if not approver:
                return (
                    "approval_required",
                    f"raising limit {data['limit']!r} from {data.get('old')!r} to "
                    f"{data.get('new')!r} needs metadata.approved_by",
                )
            if approver == actor:
                return "four_eyes", "metadata.approved_by must differ from metadata.actor"
    elif event.event_type is EventType.KILL_SWITCH:
        action = data.get("action")
        if action in ("deactivate", "reset") and not actor:
            return "actor_required", f"kill-switch {action} needs metadata.actor"
        if requires_approval(event):
            if not approver:
                return "approval_required", "kill-switch reset needs metadata.approved_by"
            if approver == actor:
                return "four_eyes", "metadata.approved_by must differ from metadata.actor"
    return None
