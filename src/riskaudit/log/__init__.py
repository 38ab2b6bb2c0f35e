"""The engine: AuditLog (the public face), the hand-off, the writer thread, the monitor,
health and status, start-up repair, lock. Format v1 itself is :mod:`riskaudit.format`;
its names that users of the log need are re-exported here."""

from riskaudit.format import (
    EMERGENCY_PREFIX,
    FORMAT,
    ZERO_HASH,
    encode_event_body,
    format_ts,
    line_hash,
    lock_path_for,
    parse_ts,
    split_head,
)
from riskaudit.log._auditlog import AuditLog
from riskaudit.log._status import Health, LogState, LogStatus

__all__ = [
    "EMERGENCY_PREFIX",
    "FORMAT",
    "ZERO_HASH",
    "AuditLog",
    "Health",
    "LogState",
    "LogStatus",
    "encode_event_body",
    "format_ts",
    "line_hash",
    "lock_path_for",
    "parse_ts",
    "split_head",
]
