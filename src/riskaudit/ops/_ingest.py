"""From HTTP bodies to RiskEvents: strict parsing, every error naming its field.

A body is one JSON object (``application/json``) or NDJSON, one object per line
(``application/x-ndjson``). Each object has ``event_type`` and optionally
``priority`` (default MEDIUM), ``source``, ``data``, ``metadata``, ``event_id`` and
``timestamp_ns``; any other field is an error (a typo must not pass silently). A
batch is all-or-nothing: every event is parsed and checked before any is written.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from riskaudit.events import EventPriority, EventType, RiskEvent

#: Floats up to here hold every integer exactly; beyond, ``1.7e18`` may not be what was meant.
_EXACT_FLOAT = 2.0**53
_FIELDS = {"event_type", "priority", "source", "data", "metadata", "event_id", "timestamp_ns"}


@dataclass(frozen=True, slots=True)
class Problem(Exception):
    """A 4xx answer: status, the field at fault (with the line for NDJSON), a message."""

    status: int
    field: str | None
    message: str

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "field": self.field}


def parse_body(raw: bytes, content_type: str, max_batch: int) -> list[dict[str, Any]]:
    """JSON objects from the body, by content type."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/json":
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, None, f"malformed JSON: {exc}") from None
        objs = obj if isinstance(obj, list) else [obj]
        if isinstance(obj, list):  # the exact re-read covers the whole body: paths say [i]
            if any([check_values(one, None, f"[{i}].") for i, one in enumerate(obj)]):
                refuse_big_ints(raw, "")
        else:
            check_values(obj, raw, "")
    elif ctype in ("application/x-ndjson", "application/jsonl", "application/json-seq"):
        objs = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                one = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise Problem(400, f"line {n}", f"malformed JSON on line {n}: {exc}") from None
            check_values(one, line, f"[{len(objs)}].")
            objs.append(one)
    else:
        raise Problem(
            415, "content-type", "send application/json (one event) or application/x-ndjson"
        )
    if not objs:
        raise Problem(400, None, "no events in the body")
    if len(objs) > max_batch:
        raise Problem(413, None, f"{len(objs)} events exceed the batch limit of {max_batch}")
    return objs


#: What a record can hold: orjson writes integers in [-2**63, 2**64 - 1] and reads any
#: integer literal outside that range as a float — a silent change of the value.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


#: Deepest nesting of a field's value. A record wraps an event one level, a control
#: record that quotes it (conflict, approval_request) two more, and the encoder stops at
#: 255: 200 keeps every form of the event writable, so a batch is refused before any of
#: it is written, never half-way.
MAX_DEPTH = 200


def _walk(value: Any) -> tuple[int, bool]:
    """(deepest nesting, whether a float may hide an integer literal out of range), by
    an explicit stack: a body nested 1,000 deep must not exhaust Python's recursion."""
    deepest = 0
    suspect = False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((v, depth) for v in item.values())
        elif isinstance(item, list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((v, depth) for v in item)
        elif isinstance(item, float) and item.is_integer() and abs(item) >= 2.0**63:
            # Rounding can land an out-of-range literal on the boundary: suspect from 2**63.
            suspect = True
    return deepest, suspect


def check_values(obj: Any, raw: bytes | None, where: str) -> bool:
    """422 for a field nested deeper than a record can hold, or holding an integer
    beyond 64 bits (which would otherwise be written as a rounded float) — checked
    exactly in ``raw``, or, without it, left to the caller (True: suspect)."""
    if not isinstance(obj, dict):
        return False  # to_event names the problem
    suspects = False
    for key, value in obj.items():
        deepest, suspect = _walk(value)
        if deepest > MAX_DEPTH:
            raise Problem(
                422,
                f"{where}{key}",
                f"{key} is nested {deepest} levels deep; a record holds at most {MAX_DEPTH}",
            )
        suspects = suspects or suspect
    if suspects and raw is not None:
        refuse_big_ints(raw, where)
    return suspects


def _big_int_path(value: Any, path: str) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value <= _INT_MAX else path
    if isinstance(value, float):  # JSON has one kind of number: 1e20 is the integer 10**20
        return path if value.is_integer() and not _INT_MIN <= value <= _INT_MAX else None
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, v in items:
        found = _big_int_path(v, sub)
        if found is not None:
            return found
    return None


def refuse_big_ints(raw: bytes, where: str) -> None:
    """422 for an integer literal beyond 64 bits, which would otherwise be written as a
    rounded float, and for a whole number beyond them written as a float (``1e20``): to
    JSON, and to the API's schema, that is the same integer. The stdlib parser (exact
    integers) runs only on suspicion."""
    found = _big_int_path(json.loads(raw), "")
    if found is not None:
        raise Problem(
            422,
            f"{where}{found}",
            f"{found}: integer beyond 64 bits (a whole number however written, 1e20 too); a "
            "record holds integers from -2**63 to 2**64-1 (send larger values as strings)",
        )


def to_event(obj: Any, where: str) -> RiskEvent:
    """One validated RiskEvent; ``where`` prefixes field names in batches (``[3].data``)."""
    if not isinstance(obj, dict):
        raise Problem(422, where or None, "an event is a JSON object")
    if "principal" in obj:
        raise Problem(
            422,
            f"{where}principal",
            "principal is not sent: the service records who posted from the token and the "
            "connection",
        )
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise Problem(422, f"{where}{unknown[0]}", f"unknown field {unknown[0]!r}")
    try:
        event_type = EventType[obj["event_type"]]
    except KeyError:
        if "event_type" not in obj:
            raise Problem(422, f"{where}event_type", "event_type is required") from None
        raise Problem(
            422, f"{where}event_type", f"unknown event type {obj['event_type']!r}"
        ) from None
    except TypeError:
        raise Problem(422, f"{where}event_type", "event_type must be a string") from None
    try:
        priority = EventPriority[obj.get("priority", "MEDIUM")]
    except (KeyError, TypeError):
        raise Problem(
            422, f"{where}priority", f"priority must be one of {[p.name for p in EventPriority]}"
        ) from None
    for name, kind in (("source", str), ("event_id", str), ("data", dict), ("metadata", dict)):
        if name in obj and not isinstance(obj[name], kind):
            raise Problem(
                422,
                f"{where}{name}",
                f"{name} must be a {'string' if kind is str else 'JSON object'}",
            )
    ts = obj.get("timestamp_ns")
    if isinstance(ts, float) and ts.is_integer() and 0 <= ts <= _EXACT_FLOAT:
        ts = int(ts)  # 481.0 is the integer JSON Schema says it is, and exactly so
    if "timestamp_ns" in obj and (not isinstance(ts, int) or isinstance(ts, bool) or ts < 0):
        raise Problem(
            422,
            f"{where}timestamp_ns",
            "timestamp_ns must be a non-negative integer, sent as an integer literal "
            "(a fraction, or a float beyond 2**53 whose digits are already lost, is refused)",
        )
    return RiskEvent(
        event_type,
        priority,
        obj.get("source", ""),
        obj.get("data") or {},
        obj.get("metadata") or {},
        event_id=obj.get("event_id"),
        timestamp_ns=ts,
    )


def content_digest(obj: Any) -> str:
    """What an event was posted as, key order aside: a retry sends the same, a changed
    story under the same ``event_id`` does not."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    """An approver's answer: ``approve`` or ``reject``, as which actor, and why."""

    decision: str = "approve"
    actor: str | None = None
    comment: str | None = None
    request_seq: int | None = None  # the request the approver read: another is a 409


def parse_decision(raw: bytes) -> Decision:
    """The optional body of ``POST /v1/approvals/{event_id}``."""
    if not raw.strip():
        return Decision()
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, None, f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Problem(422, None, "an approval is a JSON object")
    unknown = sorted(set(obj) - {"decision", "actor", "comment", "request_seq"})
    if unknown:
        raise Problem(422, unknown[0], f"unknown field {unknown[0]!r}")
    decision = obj.get("decision", "approve")
    if decision not in ("approve", "reject"):
        raise Problem(422, "decision", "decision is 'approve' or 'reject'")
    for name in ("actor", "comment"):
        if name in obj and not isinstance(obj[name], str):
            raise Problem(422, name, f"{name} must be a string")
    seq = obj.get("request_seq")
    if isinstance(seq, float) and seq.is_integer() and 1 <= seq < 2**63:
        seq = int(seq)  # JSON Schema's integer: 359.0 is 359
    if "request_seq" in obj and (
        not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 2**63
    ):
        raise Problem(422, "request_seq", "request_seq is the approval_request's seq")
    return Decision(decision, obj.get("actor"), obj.get("comment"), seq)


class Deduplicator:
    """``event_id`` → (``seq``, content digest) for the dedupe window: a retried post is
    not written twice, and a different content under a known id is a conflict."""

    def __init__(self, window: float, capacity: int = 1_000_000) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[str, tuple[int, str, float]] = OrderedDict()

    def get(self, event_id: str) -> tuple[int, str] | None:
        self._expire()
        hit = self._seen.get(event_id)
        return (hit[0], hit[1]) if hit is not None else None

    def add(self, event_id: str, seq: int, digest: str) -> None:
        self._seen.pop(event_id, None)
        self._seen[event_id] = (seq, digest, time.monotonic())
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def _expire(self) -> None:
        limit = time.monotonic() - self.window
        while self._seen:
            _eid, (_seq, _digest, at) = next(iter(self._seen.items()))
            if at >= limit:
                break
            self._seen.popitem(last=False)
