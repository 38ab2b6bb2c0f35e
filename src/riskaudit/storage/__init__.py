"""Storage: where the log lives, whether that survives, and how much room is left."""

from riskaudit.storage._checks import (
    Mount,
    StorageReport,
    Watermarks,
    check_storage,
    detect_container,
    existing_ancestor,
    mount_of,
    parse_mountinfo,
    probe_write,
    risk_message,
    volatile_reason,
)

__all__ = [
    "Mount",
    "StorageReport",
    "Watermarks",
    "check_storage",
    "detect_container",
    "existing_ancestor",
    "mount_of",
    "parse_mountinfo",
    "probe_write",
    "risk_message",
    "volatile_reason",
]
