"""The storage settings as small value objects: rotation, free-space watermarks,
retention, backup and replication.

They live apart from the code that acts on them so that ``AuditConfig`` can hold them
without importing the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from riskaudit.errors import AuditConfigError

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Watermarks:
    """Free-space thresholds; a level is reached when either the percent or bytes is."""

    warn_percent: float = 10.0
    crit_percent: float = 5.0
    warn_bytes: int = 1 << 30
    crit_bytes: int = 256 << 20


@dataclass(frozen=True, slots=True)
class Rotation:
    """Built-in rotation: by size, by time (aligned to UTC: ``86400`` rotates at 00:00
    UTC), both, or neither (0)."""

    max_bytes: int = 0
    interval: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 or self.interval > 0

    def next_boundary(self, now: float) -> float:
        """The next multiple of the interval after ``now`` (UNIX time, so UTC-aligned)."""
        if self.interval <= 0:
            return math.inf
        return (math.floor(now / self.interval) + 1) * self.interval


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Ages in seconds from a segment's end. ``minimum_by_type`` lengthens the minimum
    for segments holding those event types (e.g. ``{"KILL_SWITCH": 7 * 365 * DAY}``)."""

    hot: float = 90 * DAY
    warm: float = 365 * DAY
    cold: float = 1827 * DAY
    minimum: float = 1827 * DAY
    minimum_by_type: Mapping[str, float] = field(default_factory=dict)
    #: A replicated log's segments the collector has not fsynced are kept even past the
    #: minimum (False: deleted at the minimum all the same, and the reason says so).
    wait_for_replication: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.hot <= self.warm <= self.cold:
            raise AuditConfigError(
                "RISK_AUDIT_RETENTION_HOT/WARM/COLD", "need 0 <= hot <= warm <= cold"
            )
        if self.minimum < 0 or any(v < 0 for v in self.minimum_by_type.values()):
            raise AuditConfigError("RISK_AUDIT_RETENTION_MIN", "must not be negative")

    def minimum_for(self, types: set[str]) -> float:
        return max([self.minimum, *(self.minimum_by_type[t] for t in types)])

    @property
    def longest_minimum(self) -> float:
        """The minimum of a copy that may hold any event type (a replica of the whole
        log does): the longest of ``minimum`` and every ``minimum_by_type``."""
        return max([self.minimum, *self.minimum_by_type.values()])


@dataclass(frozen=True, slots=True)
class BackupSettings:
    """``AUDIT_BACKUP_ENABLED``, ``AUDIT_BACKUP_INTERVAL`` and the target."""

    enabled: bool = False
    interval: float = 3600.0
    target: str | None = None
    s3_endpoint: str | None = None
    object_lock: bool = True


@dataclass(frozen=True, slots=True)
class ReplicationSettings:
    """Where the forwarder publishes and the collector reads: a NATS JetStream stream.

    ``max_age`` ``None`` follows the retention minimum (see :meth:`stream_max_age`); 0
    keeps messages without limit. ``duplicate_window`` must outlast the forwarder's
    retry horizon, so that a chunk re-sent after a lost acknowledgement is dropped by
    the server (``Nats-Msg-Id``); ``riskaudit nats init`` checks it
    (``riskaudit.replication._setup.RETRY_HORIZON``)."""

    urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str = "AUDIT"
    subject_prefix: str = "audit"
    replicas: int = 3
    max_age: float | None = None
    duplicate_window: float = 600.0
    chunk_records: int = 1000
    chunk_bytes: int = 512 << 10
    window: int = 16
    creds_file: str | None = None
    user: str | None = None
    password_file: str | None = None
    #: How long one-shot commands (``forward --once``, ``nats init``) try to reach NATS
    #: before they give up with an error; long-running ones retry for ever.
    connect_timeout: float = 5.0
    #: The monitoring endpoints (``http`` ports) of the NATS servers, comma-separated,
    #: e.g. ``http://nats-1:8222,http://nats-2:8222``: ``nats init`` and ``check`` read
    #: each one's ``/varz`` to see that it fsyncs every write (``sync_interval:
    #: always``). Unset: not checked.
    monitor_url: str | None = None

    @property
    def monitor_urls(self) -> tuple[str, ...]:
        text = self.monitor_url or ""
        return tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())

    def __post_init__(self) -> None:
        for url in self.monitor_urls:
            if not url.startswith(("http://", "https://")):
                raise AuditConfigError(
                    "RISK_AUDIT_NATS_MONITOR_URL",
                    f"{url!r} is not an http:// or https:// URL "
                    "(a server's monitoring port, e.g. http://127.0.0.1:8222)",
                )
        if self.connect_timeout <= 0:
            raise AuditConfigError("RISK_AUDIT_NATS_CONNECT_TIMEOUT", "must be above 0")
        if not self.urls:
            raise AuditConfigError("RISK_AUDIT_NATS_URL", "needs at least one server")
        if (self.user is None) != (self.password_file is None):
            raise AuditConfigError(
                "RISK_AUDIT_NATS_USER/RISK_AUDIT_NATS_PASSWORD_FILE", "set both or neither"
            )
        if self.user is not None and self.creds_file is not None:
            raise AuditConfigError(
                "RISK_AUDIT_NATS_CREDS", "use a credentials file or a user and password, not both"
            )
        if self.replicas not in (1, 3, 5):
            raise AuditConfigError("RISK_AUDIT_NATS_REPLICAS", "use 1, 3 or 5")
        if not 1 <= self.chunk_records <= 100_000:
            raise AuditConfigError("RISK_AUDIT_FORWARD_CHUNK_RECORDS", "1 to 100000")
        if not 1 <= self.window <= 1024:
            raise AuditConfigError("RISK_AUDIT_FORWARD_WINDOW", "1 to 1024")
        if self.max_age is not None and self.max_age < 0:
            raise AuditConfigError("RISK_AUDIT_NATS_MAX_AGE", "must not be negative (0: no limit)")
        if self.duplicate_window <= 0:
            raise AuditConfigError("RISK_AUDIT_NATS_DUPLICATE_WINDOW", "must be positive")

    def stream_max_age(self, retention: RetentionPolicy) -> float:
        """The stream's ``max_age`` (0: no limit): never shorter than the retention
        minimum, because the central copy is evidence too and JetStream would delete it
        on its own. Unset, it is that minimum (the longest of ``RISK_AUDIT_RETENTION_MIN``
        and ``_MIN_BY_TYPE``, so raising the minimum raises it); a setting shorter than
        the minimum is refused rather than silently lengthened, so what the operator
        wrote is never quietly not what the stream does."""
        floor = retention.longest_minimum
        if self.max_age is None:
            # The server refuses a duplicate window longer than max_age (0 is no limit).
            return max(floor, self.duplicate_window) if floor else 0.0
        if 0 < self.max_age < floor:
            raise AuditConfigError(
                "RISK_AUDIT_NATS_MAX_AGE",
                f"{self.max_age / DAY:g} days is shorter than the retention minimum "
                f"{floor / DAY:g} days (RISK_AUDIT_RETENTION_MIN, "
                "RISK_AUDIT_RETENTION_MIN_BY_TYPE): the stream would delete the central "
                "copy before it may go; raise it, or unset it to follow the minimum",
            )
        if 0 < self.max_age < self.duplicate_window:
            raise AuditConfigError(
                "RISK_AUDIT_NATS_MAX_AGE",
                f"{self.max_age:g}s is shorter than RISK_AUDIT_NATS_DUPLICATE_WINDOW "
                f"({self.duplicate_window:g}s); the server refuses that",
            )
        return self.max_age

    def subject(self, stream_id: str) -> str:
        return f"{self.subject_prefix}.{stream_id}"
