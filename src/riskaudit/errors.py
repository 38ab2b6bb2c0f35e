"""The one exception family of riskaudit.

Every error the library raises on purpose derives from :class:`AuditError`, so a
trading process can catch the whole family in one place::

    AuditError
    ├── AuditConfigError        a setting has a bad value (the message names it)
    ├── AuditStorageError       the log's file system refused us (wraps the OSError)
    │   └── AuditLockedError    another writer holds ``<log>.lock`` (names its pid)
    ├── AuditStateError         the log cannot take records in its current state
    │   ├── AuditClosedError    ... because it was closed
    │   ├── AuditForkedError    ... because this process is a fork of its owner
    │   └── AuditNativeError    ... because the Rust core failed (a bug; its panic
    │                           is caught at the boundary, never crosses into the host)
    ├── AuditEncodingError      an event cannot be written as format v1 (nothing written)
    │   └── AuditSchemaError    an event lacks a field its type's schema requires
    ├── AuditPolicyError        an event breaks the actor rules (a policy_violation
    │                           record keeps the attempt)
    ├── AuditQueueFullError     the writer did not make room within the append timeout
    ├── AuditFlushTimeoutError  ``flush(timeout)`` ran out of time
    ├── AuditDegradedError      records reached only a non-durable destination
    ├── AuditBackupError        a backup target refused a copy, or a copy did not verify
    └── AuditFormatError        a file given to a reader is not a riskaudit log

Low-level ``OSError`` is translated at the storage boundary with ``raise ... from exc``
so the cause stays visible in tracebacks.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every error riskaudit raises on purpose."""


class AuditConfigError(AuditError, ValueError):
    """A setting has a value riskaudit cannot use; the message names the setting."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class AuditStorageError(AuditError, OSError):
    """The file system refused an operation the log needs."""


class AuditLockedError(AuditStorageError):
    """Another writer (in this or another process) holds the log's lock."""

    def __init__(self, lock_path: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "an unknown process"
        super().__init__(f"{lock_path} is held by {holder}: only one writer may own an audit log")
        self.lock_path = lock_path
        self.pid = pid


class AuditStateError(AuditError, RuntimeError):
    """The log cannot accept records in its current state."""


class AuditClosedError(AuditStateError):
    """The log was closed; open a new one to write again."""


class AuditForkedError(AuditStateError):
    """This process is a fork of the log's owner: the child must open its own log."""


class AuditNativeError(AuditStateError):
    """The native core (``riskaudit._native``) panicked: a bug, caught at its boundary.

    On the writer thread it ends the writer the documented way (the log fails; queued
    records go to the emergency output); in a producer or in ``verify`` the call fails
    with this error and nothing half-done is kept."""


class AuditEncodingError(AuditError, TypeError):
    """An event cannot be encoded as a format-v1 record; nothing was written.

    ``field`` names the event's field at fault (``data``, ``metadata``, ...) when it is
    known, so an API can answer with it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class AuditSchemaError(AuditEncodingError):
    """An event lacks a ``data`` field its type's schema requires; nothing was written."""


class AuditPolicyError(AuditError):
    """An event breaks the actor rules; the attempt is recorded as ``policy_violation``."""

    def __init__(self, message: str, *, rule: str, seq: int) -> None:
        super().__init__(message)
        self.rule = rule
        self.seq = seq


class AuditQueueFullError(AuditError):
    """The writer did not free queue space within the configured append timeout."""


class AuditFlushTimeoutError(AuditError, TimeoutError):
    """``flush(timeout)`` returned before every earlier record was durable."""

    def __init__(self, message: str, *, durable_seq: int, target_seq: int) -> None:
        super().__init__(message)
        self.durable_seq = durable_seq
        self.target_seq = target_seq


class AuditDegradedError(AuditError):
    """Some records reached only a non-durable destination (for example stdout)."""

    def __init__(self, message: str, *, first_seq: int, last_seq: int) -> None:
        super().__init__(message)
        self.first_seq = first_seq
        self.last_seq = last_seq


class AuditBackupError(AuditError):
    """A backup target refused a copy, lacks Object Lock, or holds a copy whose SHA-256
    does not match."""


class AuditFormatError(AuditError, ValueError):
    """A file is not a format-v1 riskaudit log (or is damaged beyond reading)."""
