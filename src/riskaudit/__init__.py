"""riskaudit: the hash-chained, crash-safe audit trail of a trading risk engine.

Data flow: events → bus → log → writer → file (fsynced, chained) → verify.
"""

from riskaudit._version import __version__
from riskaudit.bus import AuditSinkProtocol, RiskEventBus, Subscription
from riskaudit.config import AuditConfig
from riskaudit.errors import (
    AuditBackupError,
    AuditClosedError,
    AuditConfigError,
    AuditDegradedError,
    AuditEncodingError,
    AuditError,
    AuditFlushTimeoutError,
    AuditForkedError,
    AuditFormatError,
    AuditLockedError,
    AuditNativeError,
    AuditPolicyError,
    AuditQueueFullError,
    AuditSchemaError,
    AuditStateError,
    AuditStorageError,
)
from riskaudit.events import EventPriority, EventType, RiskEvent, new_event_id
from riskaudit.integrity import Finding, VerifyReport, verify_paths
from riskaudit.log import AuditLog
from riskaudit.sink import EnhancedJsonAuditSink, JsonAuditSink

__all__ = [
    "AuditBackupError",
    "AuditClosedError",
    "AuditConfig",
    "AuditConfigError",
    "AuditDegradedError",
    "AuditEncodingError",
    "AuditError",
    "AuditFlushTimeoutError",
    "AuditForkedError",
    "AuditFormatError",
    "AuditLockedError",
    "AuditLog",
    "AuditNativeError",
    "AuditPolicyError",
    "AuditQueueFullError",
    "AuditSchemaError",
    "AuditSinkProtocol",
    "AuditStateError",
    "AuditStorageError",
    "EnhancedJsonAuditSink",
    "EventPriority",
    "EventType",
    "Finding",
    "JsonAuditSink",
    "RiskEvent",
    "RiskEventBus",
    "Subscription",
    "VerifyReport",
    "__version__",
    "new_event_id",
    "verify_paths",
]
