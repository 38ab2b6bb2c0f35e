"""The engine: AuditLog (the public face), the hand-off, the writer thread, the monitor,
health and status, start-up repair, lock, and the checks of the volume the log lives
on. Format v1 itself is :mod:`riskaudit.format`;
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
from riskaudit.log._counters import Timings, WriterCounters
from riskaudit.log._destinations import AppendFile
from riskaudit.log._startup import sibling_head
from riskaudit.log._status import Health, HealthStatus, LogState, LogStatus
from riskaudit.log._volume import (
    Mount,
    SpaceLevel,
    StorageReport,
    check_storage,
    detect_container,
    existing_ancestor,
    mount_of,
    parse_mountinfo,
    probe_write,
    risk_message,
    space_level,
    volatile_reason,
)
from riskaudit.log._writer import Destination

__all__ = [
    "EMERGENCY_PREFIX",
    "FORMAT",
    "ZERO_HASH",
    "AppendFile",
    "AuditLog",
    "Destination",
    "Health",
    "HealthStatus",
    "LogState",
    "LogStatus",
    "Mount",
    "SpaceLevel",
    "StorageReport",
    "Timings",
    "WriterCounters",
    "check_storage",
    "detect_container",
    "encode_event_body",
    "existing_ancestor",
    "format_ts",
    "line_hash",
    "lock_path_for",
    "mount_of",
    "parse_mountinfo",
    "parse_ts",
    "probe_write",
    "risk_message",
    "sibling_head",
    "space_level",
    "split_head",
    "volatile_reason",
]
