"""Format v1's lines: their bytes, built and read (see the package's docstring).

The split of work follows the data flow: the producer's thread encodes the event body
once (:func:`encode_event_body`), which both snapshots its mutable dicts and rejects
what JSON cannot hold before a ``seq`` is spent; the writer thread only glues
``seq``/``prev``/``ts`` in front and hashes. The writer does that in the Rust core
(``riskaudit._native.chain``, without the GIL); :func:`event_line`,
:func:`control_line` and :func:`chain_batch` here are the readable reference of the
same bytes, which the tests hold the core to (tests/unit/test_native.py).
"""

from __future__ import annotations

import calendar
import hashlib
import time
from decimal import Decimal
from typing import Any

import orjson

from riskaudit.errors import AuditEncodingError
from riskaudit.events import EventPriority, EventType, RiskEvent
from riskaudit.redact import Redactor

FORMAT = "riskaudit/1"
ZERO_HASH = b"0" * 64
EMERGENCY_PREFIX = "AUDIT_EMERGENCY "

_ts_cache_sec = -1
_ts_cache_prefix = ""


def format_ts(ns: int) -> str:
    """RFC 3339 UTC with nanoseconds: ``2026-11-26T09:00:00.000153201Z``."""
    global _ts_cache_sec, _ts_cache_prefix
    sec, frac = divmod(ns, 1_000_000_000)
    if sec != _ts_cache_sec:
        _ts_cache_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache_sec = sec
    return f"{_ts_cache_prefix}.{frac:09d}Z"


def parse_ts(text: str) -> int:
    """Nanoseconds since the epoch from a format-v1 ``ts`` (inverse of format_ts)."""
    if len(text) != 30 or text[-1] != "Z" or text[19] != ".":
        raise ValueError(f"not a format-v1 timestamp: {text!r}")
    whole = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(whole) * 1_000_000_000 + int(text[20:29])


def parse_utc(text: str) -> int:
    """Nanoseconds from a UTC time a person types: ``2026-11-26``,
    ``2026-11-26T09:30:00Z``, or with any fraction up to nine digits. ValueError if not."""
    t = text.strip()
    if len(t) == 10:
        t += "T00:00:00Z"
    if t.endswith("Z") and "." not in t:
        t = t[:-1] + ".000000000Z"
    elif t.endswith("Z"):
        whole, frac = t[:-1].split(".", 1)
        t = f"{whole}.{(frac + '0' * 9)[:9]}Z"
    return parse_ts(t)


def _default(obj: Any) -> Any:
    """Documented conversions for values orjson does not encode natively."""
    if isinstance(obj, Decimal):
        return str(obj)  # exact: prices must not pass through binary floats
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"type {type(obj).__name__} is not JSON serialisable")


def encode_event(
    event: RiskEvent, redactor: Redactor | None = None, principal: dict[str, Any] | None = None
) -> bytes:
    """The event's fields as one JSON object, ``{"event_id":...}``: what ``append``
    hands to the core, which queues it without its opening brace (the record line
    supplies its own), so the producer copies the body once.

    Raises AuditEncodingError, naming the field, when the event cannot be written.
    """
    event_type = event.event_type
    priority = event.priority
    # ``_name_`` is a plain attribute; ``.name`` is a descriptor several times slower.
    if event_type.__class__ is not EventType or priority.__class__ is not EventPriority:
        raise AuditEncodingError(
            f"event {getattr(event, 'event_id', '?')}: event_type must be an EventType and "
            f"priority an EventPriority, got {event_type!r} and {priority!r}"
        )
    try:
        fields = {
            "event_id": event.event_id,
            "event_type": event_type._name_,
            "priority": priority._name_,
            "source": event.source,
            "data": event.data if redactor is None else redactor.apply("data", event.data),
            "metadata": (
                event.metadata if redactor is None else redactor.apply("metadata", event.metadata)
            ),
            "timestamp_ns": event.timestamp_ns,
        }
        if principal is not None:
            fields["principal"] = principal
        return orjson.dumps(fields, default=_default)
    except (TypeError, orjson.JSONEncodeError) as exc:
        message, field = _explain(event, exc)
        raise AuditEncodingError(message, field=field) from exc


def encode_event_body(
    event: RiskEvent, redactor: Redactor | None = None, principal: dict[str, Any] | None = None
) -> bytes:
    """The event's fields as JSON without the opening brace: ``"event_id":...}``, the
    part of a record line after its ``seq``, ``prev`` and ``ts``.

    Raises AuditEncodingError, naming the field, when the event cannot be written.
    """
    return encode_event(event, redactor, principal)[1:]


def _explain(event: RiskEvent, exc: Exception) -> tuple[str, str | None]:
    """Name the field that could not be encoded, for a clear error at append."""
    for name in ("event_id", "source", "data", "metadata", "timestamp_ns"):
        try:
            # Wrapped as in the record, so nesting one level short of the limit on its
            # own — but over it inside the record — is still traced to its field.
            orjson.dumps({"x": getattr(event, name)}, default=_default)
        except (TypeError, orjson.JSONEncodeError) as inner:
            return f"event {event.event_id!r}: field {name!r} cannot be encoded: {inner}", name
    if not isinstance(event.event_id, str) or not isinstance(event.source, str):
        return f"event {event.event_id!r}: event_id and source must be strings", None
    return f"event {event.event_id!r} cannot be encoded: {exc}", None


def event_line(seq: int, prev: bytes, ts_ns: int, body: bytes) -> bytes:
    """A complete event record line (no trailing newline)."""
    return b'{"seq":%d,"prev":"%b","ts":"%b",%b' % (seq, prev, format_ts(ts_ns).encode(), body)


def chain_batch(
    items: list[tuple[int, int, Any]], prev: bytes, chunk_bytes: int
) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Chain queued ``(seq, ts_ns, body)`` items: ``(new prev, [(last seq, bytes), ...])``.

    The writer's hot loop: the same bytes as :func:`event_line` plus ``\\n``, with the
    timestamp prefix cached per second and no function calls per event record, because
    under a busy producer every microsecond here is held under the GIL. ``body`` is
    either encoded event bytes or a ``(kind, fields)`` control tuple.
    """
    sha = hashlib.sha256
    ns_per_s = 1_000_000_000
    cur_sec = -1
    prefix = b""
    chunks: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    append = parts.append
    size = 0
    seq = 0
    for seq, ts_ns, body in items:
        if body.__class__ is bytes:
            sec = ts_ns // ns_per_s
            if sec != cur_sec:
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
                cur_sec = sec
            line = b'{"seq":%d,"prev":"%b","ts":"%b.%09dZ",%b\n' % (
                seq,
                prev,
                prefix,
                ts_ns - sec * ns_per_s,
                body,
            )
        else:
            line = control_line(seq, prev, body[0], body[1], ts_ns) + b"\n"
        prev = sha(line[:-1]).hexdigest().encode()
        append(line)
        size += len(line)
        if size >= chunk_bytes:
            chunks.append((seq, b"".join(parts)))
            parts.clear()
            size = 0
    if parts:
        chunks.append((seq, b"".join(parts)))
    return prev, chunks


def control_mid(kind: str, fields: dict[str, Any]) -> tuple[bytes, bool]:
    """What the native chain needs of a control record: ``"kind":...,<fields>`` (the
    middle of :func:`control_line`'s object) and whether the fields carry their own
    ``ts``. Raises what orjson raises for a value JSON cannot hold."""
    if "seq" in fields or "prev" in fields:
        raise ValueError(f"{kind} record: seq and prev are the chain's own keys")
    return orjson.dumps({"kind": kind, **fields})[1:-1], "ts" in fields


def control_line(seq: int, prev: bytes, kind: str, fields: dict[str, Any], ts_ns: int) -> bytes:
    """A control record line: ``seq``, ``prev``, ``kind``, its fields, then ``ts``."""
    record: dict[str, Any] = {"seq": seq, "prev": prev.decode("ascii"), "kind": kind}
    record.update(fields)
    if "ts" not in fields:  # a checkpoint places its signed ts itself
        record["ts"] = format_ts(ts_ns)
    return orjson.dumps(record)


def unsequenced_line(
    reason: str,
    ts_ns: int,
    *,
    body: bytes | None = None,
    log: str | None = None,
    event_repr: str | None = None,
) -> bytes:
    """An event that never got a ``seq``, for stdout after ``AUDIT_EMERGENCY ``:
    ``{"kind":"unsequenced","ts":...,"reason":...,"log":...,"event":{...}}``. ``body``
    is the encoded event without its opening brace (:func:`encode_event_body`); an
    event that cannot be encoded at all keeps its ``event_repr`` instead."""
    head: dict[str, str | None] = {
        "kind": "unsequenced",
        "ts": format_ts(ts_ns),
        "reason": reason,
    }
    if log is not None:
        head["log"] = log
    if body is None:
        head["event_repr"] = event_repr
        return orjson.dumps(head)
    return orjson.dumps(head)[:-1] + b',"event":{' + body + b"}"


def line_hash(line: bytes) -> bytes:
    """The record hash that the next record names in ``prev``."""
    return hashlib.sha256(line).hexdigest().encode("ascii")


def is_control(line: bytes, kind: str) -> bool:
    """Whether a record line (its head already checked) is a ``kind`` control record.

    A control record's third key is ``kind`` (:func:`control_line`); an event record's
    is ``ts``, so the same bytes inside an event's payload never match."""
    comma = line.find(b",", 7, 30)
    return comma > 0 and line.startswith(b',"kind":"%b"' % kind.encode(), comma + 74)


def gap_range(line: bytes) -> tuple[int, int] | None:
    """(first, last) named by a ``gap`` record, or None for any other line."""
    if b'"kind":"gap"' not in line:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    first, last = record.get("first_seq"), record.get("last_seq")
    if record.get("kind") == "gap" and isinstance(first, int) and isinstance(last, int):
        return first, last
    return None


def ts_ns_of(line: bytes) -> int:
    """A record's ``ts`` in nanoseconds, or now for a line without a readable one (what
    a sealed segment's name then says of its start)."""
    try:
        return parse_ts(orjson.loads(line)["ts"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return time.time_ns()


def split_head(line: bytes) -> tuple[int, bytes] | None:
    """``(seq, prev)`` from the fixed first two keys, or None if the head is not v1.

    This is the verifier's fast path: it does not parse the rest of the line, because
    the next record's ``prev`` vouches for every byte of this one.
    """
    if not line.startswith(b'{"seq":'):
        return None
    comma = line.find(b",", 7, 30)
    if (
        comma < 0
        or line[comma : comma + 9] != b',"prev":"'
        or line[comma + 73 : comma + 74] != b'"'
    ):
        return None
    digits = line[7:comma]
    if not digits.isdigit() or (len(digits) > 1 and digits[0] == 48):
        return None
    return int(digits), line[comma + 9 : comma + 73]
