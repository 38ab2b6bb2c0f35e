"""The engine: AuditLog (hand-off), the writer thread, format v1, start-up repair, lock."""

from riskaudit.log._auditlog import AuditLog
from riskaudit.log._codec import (
    EMERGENCY_PREFIX,
    FORMAT,
    ZERO_HASH,
    encode_event_body,
    format_ts,
    line_hash,
    parse_ts,
    split_head,
)
from riskaudit.log._lock import lock_path_for

__all__ = [
    "EMERGENCY_PREFIX",
    "FORMAT",
    "ZERO_HASH",
    "AuditLog",
    "encode_event_body",
    "format_ts",
    "line_hash",
    "lock_path_for",
    "parse_ts",
    "split_head",
]
