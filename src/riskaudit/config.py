"""AuditConfig: the one frozen settings object, built once and passed in.

Nothing deeper in the package reads the environment: :meth:`AuditConfig.from_env` is
the only place that does, and a bad value stops start-up with a message naming the
setting. Every setting is listed with its default in the README's settings table.

Conventions: durations are seconds, optionally with a ``us``, ``ms``, ``s``, ``m``,
``h`` or ``d`` suffix; booleans are ``1/0/true/false``; lists are comma-separated.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from riskaudit.errors import AuditConfigError
from riskaudit.events import EventPriority, EventType
from riskaudit.policy import ENFORCEMENTS, Enforcement
from riskaudit.settings import (
    BackupSettings,
    ReplicationSettings,
    RetentionPolicy,
    Rotation,
    Watermarks,
)

DEFAULT_LOG_PATH = Path("logs/risk_audit.jsonl")

#: The original risk engine's per-priority latency budgets, publish to handlers done.
DEFAULT_SLO_SECONDS: Mapping[EventPriority, float] = {
    EventPriority.CRITICAL: 20e-6,
    EventPriority.HIGH: 150e-6,
    EventPriority.MEDIUM: 100e-6,
    EventPriority.LOW: 1.0,
}

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s|m|h|d)?\s*$")
_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


def parse_duration(setting: str, text: str) -> float:
    """Seconds from ``"0.01"``, ``"10ms"``, ``"20us"``, ``"5m"``, ``"1d"``."""
    match = _DURATION.match(text)
    if match is None:
        raise AuditConfigError(
            setting, f"{text!r} is not a duration (seconds, or a number with us/ms/s/m/h/d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_bool(setting: str, text: str) -> bool:
    """``1/0/true/false`` (any case, also yes/no/on/off)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise AuditConfigError(setting, f"{text!r} is not a boolean (use 1/0/true/false)")


_SIZE = re.compile(r"^\s*([0-9]+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(setting: str, text: str) -> int:
    """A size: ``1073741824``, ``512MiB``, ``1G``, ``64k``."""
    match = _SIZE.match(text)
    if match is None:
        raise AuditConfigError(setting, f"{text!r} is not a size (bytes, or with K/M/G/T)")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _SIZE_UNITS[unit]


def parse_percent(setting: str, text: str) -> float:
    """A percentage 0-100, with or without ``%``."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise AuditConfigError(setting, f"{text!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise AuditConfigError(setting, f"{value} is not between 0 and 100")
    return value


def parse_int(setting: str, text: str, *, minimum: int = 0) -> int:
    """A whole number no smaller than ``minimum``."""
    try:
        value = int(text.strip())
    except ValueError:
        raise AuditConfigError(setting, f"{text!r} is not a whole number") from None
    if value < minimum:
        raise AuditConfigError(setting, f"{value} is below the minimum {minimum}")
    return value


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Every knob of the audit log, the bus and the tools, with its default.

    ``flush_interval`` is the group-commit window: the writer syncs at most once per
    interval unless a caller is waiting in ``flush()``. The default, 0, syncs each
    batch as soon as it is taken; records that arrive during a sync form the next batch
    (group commit without an added delay). A window trades time-to-durable for fewer
    syncs, and under a producer that never blocks it costs extra GIL hand-offs: see
    docs/benchmarks.md. ``append_timeout`` bounds how long ``append`` may block on a full
    queue. ``switch_interval`` is opt-in interpreter tuning (``sys.setswitchinterval``):
    ``None`` leaves the host process's setting alone.
    """

    log_path: Path = DEFAULT_LOG_PATH
    flush_interval: float = 0.0
    queue_size: int = 262_144
    queue_bytes: int = 256 << 20
    backlog_limit: int = 2_048
    reserve: int = 4_096
    append_timeout: float = 0.05
    fail_closed: bool = False
    spool_dir: Path | None = None
    retry_max: float = 30.0
    require_persistent: bool = False
    watermarks: Watermarks = field(default_factory=Watermarks)
    storage_check_interval: float = 60.0
    in_kubernetes: bool = False
    signing_key_file: Path | None = None
    checkpoint_interval: float = 60.0
    checkpoint_records: int = 100_000
    checkpoint_path: Path | None = None
    clock_max_error: float = 0.001
    clock_required: bool = False
    schema_policy: Enforcement = "warn"
    redact_fields: tuple[str, ...] = ()
    tokens_file: Path | None = None
    open_endpoints: tuple[str, ...] = ("health", "ready", "metrics", "status", "page")
    max_body_bytes: int = 1 << 20
    max_batch: int = 1000
    dedupe_window: float = 300.0
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_max_connections: int = 10_000
    hmac_key_file: Path | None = None
    actor_policy: Enforcement = "enforce"
    approval_window: float = 3600.0
    ready_max_replication_lag: float | None = None
    trusted_proxies: tuple[str, ...] = ()
    host: str = field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    switch_interval: float | None = None
    slo_seconds: Mapping[EventPriority, float] = field(
        default_factory=lambda: dict(DEFAULT_SLO_SECONDS)
    )
    handler_failure_threshold: int = 5
    pid_file: Path | None = None
    rotation: Rotation = field(default_factory=Rotation)
    truncate_ring: int = 10_000
    compression: str = "gzip"
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    retention_interval: float = 3600.0
    holds_file: Path | None = None
    backup: BackupSettings = field(default_factory=BackupSettings)
    min_free_bytes: int = 50 << 30
    runtime_log_bytes: int | None = None
    logrotate_file: Path | None = None
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)

    def __post_init__(self) -> None:
        if self.flush_interval < 0:
            raise AuditConfigError("RISK_AUDIT_FLUSH_INTERVAL", "must not be negative")
        if self.queue_size < 1:
            raise AuditConfigError("RISK_AUDIT_QUEUE_SIZE", "must be at least 1")
        if self.redact_fields and self.hmac_key_file is None:
            raise AuditConfigError(
                "RISK_AUDIT_HMAC_KEY_FILE", "required when RISK_AUDIT_REDACT_FIELDS is set"
            )
        if self.schema_policy not in ENFORCEMENTS:
            raise AuditConfigError(
                "RISK_AUDIT_SCHEMA_POLICY", f"{self.schema_policy!r} is not enforce, warn or off"
            )
        if self.actor_policy not in ENFORCEMENTS:
            raise AuditConfigError(
                "RISK_AUDIT_ACTOR_POLICY", f"{self.actor_policy!r} is not enforce, warn or off"
            )
        if self.ready_max_replication_lag is not None and self.ready_max_replication_lag <= 0:
            raise AuditConfigError("RISK_AUDIT_READY_MAX_REPLICATION_LAG", "must be positive")
        if self.approval_window <= 0:
            raise AuditConfigError("RISK_AUDIT_APPROVAL_WINDOW", "must be positive")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise AuditConfigError(
                    "RISK_AUDIT_TRUSTED_PROXIES", f"{proxy!r} is not an address or network"
                ) from None
        if self.checkpoint_records < 0:
            raise AuditConfigError("RISK_AUDIT_CHECKPOINT_RECORDS", "must not be negative")
        if self.checkpoint_interval < 0:
            raise AuditConfigError("RISK_AUDIT_CHECKPOINT_INTERVAL", "must not be negative")
        if self.reserve < 0:
            raise AuditConfigError("RISK_AUDIT_RESERVE", "must not be negative")
        if self.queue_bytes < 1 << 16:
            raise AuditConfigError("RISK_AUDIT_QUEUE_BYTES", "must be at least 65536")
        if self.retry_max <= 0:
            raise AuditConfigError("RISK_AUDIT_RETRY_MAX", "must be positive")
        if self.storage_check_interval <= 0:
            raise AuditConfigError("RISK_AUDIT_STORAGE_CHECK_INTERVAL", "must be positive")
        if self.backlog_limit < 0:
            raise AuditConfigError("RISK_AUDIT_BACKLOG_LIMIT", "must not be negative")
        if self.append_timeout < 0:
            raise AuditConfigError("RISK_AUDIT_APPEND_TIMEOUT", "must not be negative")
        if self.log_level not in _LEVELS:
            raise AuditConfigError("LOG_LEVEL", f"{self.log_level!r} is not one of {_LEVELS}")
        if self.switch_interval is not None and self.switch_interval <= 0:
            raise AuditConfigError("RISK_AUDIT_SWITCH_INTERVAL", "must be positive")
        if self.compression not in ("gzip", "zstd"):
            raise AuditConfigError(
                "RISK_AUDIT_COMPRESSION", f"{self.compression!r} is not gzip or zstd"
            )
        if self.backup.enabled and not self.backup.target:
            raise AuditConfigError(
                "RISK_AUDIT_BACKUP_TARGET", "required when AUDIT_BACKUP_ENABLED is set"
            )
        if self.backup.interval <= 0:
            raise AuditConfigError("AUDIT_BACKUP_INTERVAL", "must be positive")
        if self.handler_failure_threshold < 1:
            raise AuditConfigError("RISK_AUDIT_HANDLER_FAILURE_THRESHOLD", "must be >= 1")
        if self.http_header_timeout <= 0:
            raise AuditConfigError("RISK_AUDIT_HTTP_HEADER_TIMEOUT", "must be positive")
        if self.http_body_timeout <= 0:
            raise AuditConfigError("RISK_AUDIT_HTTP_BODY_TIMEOUT", "must be positive")
        if self.http_max_connections < 1:
            raise AuditConfigError("RISK_AUDIT_HTTP_MAX_CONNECTIONS", "must be at least 1")

    def with_(self, **changes: Any) -> AuditConfig:
        """A copy with some settings changed (the object itself never changes)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuditConfig:
        """Build the config from ``RISK_AUDIT_*`` variables and the original design's names."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, Any] = {}

        def get(*names: str) -> tuple[str, str] | None:
            for name in names:
                value = env.get(name)
                if value is not None and value.strip() != "":
                    return name, value
            return None

        if got := get("RISK_AUDIT_LOG_PATH"):
            kwargs["log_path"] = Path(got[1].strip())
        if got := get("RISK_AUDIT_FLUSH_INTERVAL", "AUDIT_FLUSH_INTERVAL"):
            kwargs["flush_interval"] = parse_duration(*got)
        if got := get("RISK_AUDIT_QUEUE_SIZE"):
            kwargs["queue_size"] = parse_int(*got, minimum=1)
        if got := get("RISK_AUDIT_QUEUE_BYTES"):
            kwargs["queue_bytes"] = parse_int(*got, minimum=1 << 16)
        if got := get("RISK_AUDIT_BACKLOG_LIMIT"):
            kwargs["backlog_limit"] = parse_int(*got, minimum=0)
        if got := get("RISK_AUDIT_RESERVE"):
            kwargs["reserve"] = parse_int(*got, minimum=0)
        if got := get("RISK_AUDIT_FAIL_CLOSED"):
            kwargs["fail_closed"] = parse_bool(*got)
        if got := get("RISK_AUDIT_SPOOL_DIR"):
            kwargs["spool_dir"] = Path(got[1].strip())
        if got := get("RISK_AUDIT_RETRY_MAX"):
            kwargs["retry_max"] = parse_duration(*got)
        if got := get("RISK_AUDIT_REQUIRE_PERSISTENT"):
            kwargs["require_persistent"] = parse_bool(*got)
        if got := get("RISK_AUDIT_STORAGE_CHECK_INTERVAL"):
            kwargs["storage_check_interval"] = parse_duration(*got)
        kwargs["in_kubernetes"] = bool(env.get("KUBERNETES_SERVICE_HOST"))
        if got := get("RISK_AUDIT_SIGNING_KEY_FILE"):
            kwargs["signing_key_file"] = Path(got[1].strip())
        if got := get("RISK_AUDIT_CHECKPOINT_INTERVAL"):
            kwargs["checkpoint_interval"] = parse_duration(*got)
        if got := get("RISK_AUDIT_CHECKPOINT_RECORDS"):
            kwargs["checkpoint_records"] = parse_int(*got, minimum=0)
        if got := get("RISK_AUDIT_REDACT_FIELDS"):
            kwargs["redact_fields"] = tuple(f.strip() for f in got[1].split(",") if f.strip())
        if got := get("RISK_AUDIT_HMAC_KEY_FILE"):
            kwargs["hmac_key_file"] = Path(got[1].strip())
        if got := get("RISK_AUDIT_TOKENS_FILE"):
            kwargs["tokens_file"] = Path(got[1].strip())
        if "RISK_AUDIT_OPEN_ENDPOINTS" in env:
            text = env.get("RISK_AUDIT_OPEN_ENDPOINTS", "")
            names = tuple(n.strip() for n in text.split(",") if n.strip())
            bad = set(names) - {"health", "ready", "metrics", "status", "page"}
            if bad:
                raise AuditConfigError(
                    "RISK_AUDIT_OPEN_ENDPOINTS", f"unknown endpoint(s) {sorted(bad)}"
                )
            kwargs["open_endpoints"] = names
        if got := get("RISK_AUDIT_MAX_BODY_BYTES"):
            kwargs["max_body_bytes"] = parse_bytes(*got)
        if got := get("RISK_AUDIT_MAX_BATCH"):
            kwargs["max_batch"] = parse_int(*got, minimum=1)
        if got := get("RISK_AUDIT_DEDUPE_WINDOW"):
            kwargs["dedupe_window"] = parse_duration(*got)
        if got := get("RISK_AUDIT_HTTP_HEADER_TIMEOUT"):
            kwargs["http_header_timeout"] = parse_duration(*got)
        if got := get("RISK_AUDIT_HTTP_BODY_TIMEOUT"):
            kwargs["http_body_timeout"] = parse_duration(*got)
        if got := get("RISK_AUDIT_HTTP_MAX_CONNECTIONS"):
            kwargs["http_max_connections"] = parse_int(*got, minimum=1)
        if got := get("RISK_AUDIT_SCHEMA_POLICY"):
            kwargs["schema_policy"] = got[1].strip().lower()
        if got := get("RISK_AUDIT_ACTOR_POLICY"):
            kwargs["actor_policy"] = got[1].strip().lower()
        if got := get("RISK_AUDIT_READY_MAX_REPLICATION_LAG"):
            kwargs["ready_max_replication_lag"] = parse_duration(*got)
        if got := get("RISK_AUDIT_APPROVAL_WINDOW"):
            kwargs["approval_window"] = parse_duration(*got)
        if got := get("RISK_AUDIT_TRUSTED_PROXIES"):
            kwargs["trusted_proxies"] = tuple(p.strip() for p in got[1].split(",") if p.strip())
        if got := get("RISK_AUDIT_CLOCK_MAX_ERROR"):
            kwargs["clock_max_error"] = parse_duration(*got)
        if got := get("RISK_AUDIT_CLOCK_REQUIRED"):
            kwargs["clock_required"] = parse_bool(*got)
        if got := get("RISK_AUDIT_CHECKPOINT_PATH"):
            kwargs["checkpoint_path"] = Path(got[1].strip())
        marks: dict[str, Any] = {}
        for name, key, parse in (
            ("RISK_AUDIT_FREE_WARN_PERCENT", "warn_percent", parse_percent),
            ("RISK_AUDIT_FREE_CRIT_PERCENT", "crit_percent", parse_percent),
            ("RISK_AUDIT_FREE_WARN_BYTES", "warn_bytes", parse_bytes),
            ("RISK_AUDIT_FREE_CRIT_BYTES", "crit_bytes", parse_bytes),
        ):
            if got := get(name):
                marks[key] = parse(*got)
        kwargs["watermarks"] = Watermarks(**marks)
        if got := get("RISK_AUDIT_APPEND_TIMEOUT"):
            kwargs["append_timeout"] = parse_duration(*got)
        if got := get("RISK_AUDIT_HOST"):
            kwargs["host"] = got[1].strip()
        if got := get("LOG_LEVEL", "RISK_AUDIT_LOG_LEVEL"):
            kwargs["log_level"] = got[1].strip().upper()
        if got := get("RISK_AUDIT_SWITCH_INTERVAL"):
            kwargs["switch_interval"] = parse_duration(*got)
        if got := get("RISK_AUDIT_HANDLER_FAILURE_THRESHOLD"):
            kwargs["handler_failure_threshold"] = parse_int(*got, minimum=1)
        _storage_from_env(get, kwargs)
        slo = dict(DEFAULT_SLO_SECONDS)
        for priority in EventPriority:
            if got := get(f"RISK_AUDIT_SLO_{priority.name}"):
                slo[priority] = parse_duration(*got)
        kwargs["slo_seconds"] = slo
        return cls(**kwargs)


_NAMED_INTERVALS = {"hourly": 3600.0, "daily": 86400.0, "weekly": 7 * 86400.0}


def parse_interval(setting: str, text: str) -> float:
    """A rotation interval: ``daily`` (00:00 UTC), ``hourly``, ``weekly``, a duration,
    or ``0``/``off``."""
    value = text.strip().lower()
    if value in ("off", "none", "0"):
        return 0.0
    if value in _NAMED_INTERVALS:
        return _NAMED_INTERVALS[value]
    return parse_duration(setting, text)


def parse_minimums(setting: str, text: str) -> dict[str, float]:
    """``KILL_SWITCH=2557d,LIMIT_BREACH=1827d``."""
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise AuditConfigError(setting, f"{part!r} is not EVENT_TYPE=duration")
        kind = name.strip().upper()
        if kind not in EventType.__members__:
            # A minimum for a type that does not exist applies to nothing, silently.
            raise AuditConfigError(
                setting,
                f"{name.strip()!r} is not an event type (one of: "
                f"{', '.join(EventType.__members__)})",
            )
        out[kind] = parse_duration(setting, value)
    return out


def _storage_from_env(get: Any, kwargs: dict[str, Any]) -> None:
    """Rotation, retention and backup settings (the backup ones under both prefixes)."""
    if got := get("RISK_AUDIT_PID_FILE"):
        kwargs["pid_file"] = Path(got[1].strip())
    rot: dict[str, Any] = {}
    if got := get("RISK_AUDIT_ROTATE_BYTES"):
        rot["max_bytes"] = parse_bytes(*got)
    if got := get("RISK_AUDIT_ROTATE_INTERVAL"):
        rot["interval"] = parse_interval(*got)
    kwargs["rotation"] = Rotation(**rot)
    if got := get("RISK_AUDIT_TRUNCATE_RING"):
        kwargs["truncate_ring"] = parse_int(*got, minimum=0)
    if got := get("RISK_AUDIT_COMPRESSION"):
        kwargs["compression"] = got[1].strip().lower()
    pol: dict[str, Any] = {}
    for name, key in (
        ("RISK_AUDIT_RETENTION_HOT", "hot"),
        ("RISK_AUDIT_RETENTION_WARM", "warm"),
        ("RISK_AUDIT_RETENTION_COLD", "cold"),
        ("RISK_AUDIT_RETENTION_MIN", "minimum"),
    ):
        if got := get(name):
            pol[key] = parse_duration(*got)
    if got := get("RISK_AUDIT_RETENTION_MIN_BY_TYPE"):
        pol["minimum_by_type"] = parse_minimums(*got)
    if got := get("RISK_AUDIT_RETENTION_WAIT_FOR_REPLICATION"):
        pol["wait_for_replication"] = parse_bool(*got)
    kwargs["retention"] = RetentionPolicy(**pol)
    if got := get("RISK_AUDIT_RETENTION_INTERVAL"):
        kwargs["retention_interval"] = parse_interval(*got)
    if got := get("RISK_AUDIT_HOLDS_FILE"):
        kwargs["holds_file"] = Path(got[1].strip())
    bk: dict[str, Any] = {}
    if got := get("AUDIT_BACKUP_ENABLED", "RISK_AUDIT_BACKUP_ENABLED"):
        bk["enabled"] = parse_bool(*got)
    if got := get("AUDIT_BACKUP_INTERVAL", "RISK_AUDIT_BACKUP_INTERVAL"):
        bk["interval"] = parse_duration(*got)
    if got := get("RISK_AUDIT_BACKUP_TARGET", "AUDIT_BACKUP_TARGET"):
        bk["target"] = got[1].strip()
    if got := get("RISK_AUDIT_BACKUP_S3_ENDPOINT", "AUDIT_BACKUP_S3_ENDPOINT"):
        bk["s3_endpoint"] = got[1].strip()
    if got := get("RISK_AUDIT_BACKUP_OBJECT_LOCK", "AUDIT_BACKUP_OBJECT_LOCK"):
        bk["object_lock"] = parse_bool(*got)
    kwargs["backup"] = BackupSettings(**bk)
    if got := get("RISK_AUDIT_MIN_FREE_BYTES"):
        kwargs["min_free_bytes"] = parse_bytes(*got)
    if got := get("RISK_AUDIT_RUNTIME_LOG_BYTES"):
        kwargs["runtime_log_bytes"] = parse_bytes(*got)
    if got := get("RISK_AUDIT_LOGROTATE_FILE"):
        kwargs["logrotate_file"] = Path(got[1].strip())
    rep: dict[str, Any] = {}
    if got := get("RISK_AUDIT_NATS_URL"):
        rep["urls"] = tuple(u.strip() for u in got[1].split(",") if u.strip())
    if got := get("RISK_AUDIT_NATS_STREAM"):
        rep["stream"] = got[1].strip()
    if got := get("RISK_AUDIT_NATS_SUBJECT_PREFIX"):
        rep["subject_prefix"] = got[1].strip()
    if got := get("RISK_AUDIT_NATS_REPLICAS"):
        rep["replicas"] = parse_int(*got, minimum=1)
    if got := get("RISK_AUDIT_NATS_MAX_AGE"):
        rep["max_age"] = parse_duration(*got)
    if got := get("RISK_AUDIT_NATS_DUPLICATE_WINDOW"):
        rep["duplicate_window"] = parse_duration(*got)
    if got := get("RISK_AUDIT_FORWARD_CHUNK_RECORDS"):
        rep["chunk_records"] = parse_int(*got, minimum=1)
    if got := get("RISK_AUDIT_FORWARD_CHUNK_BYTES"):
        rep["chunk_bytes"] = parse_bytes(*got)
    if got := get("RISK_AUDIT_FORWARD_WINDOW"):
        rep["window"] = parse_int(*got, minimum=1)
    if got := get("RISK_AUDIT_NATS_CREDS"):
        rep["creds_file"] = got[1].strip()
    if got := get("RISK_AUDIT_NATS_USER"):
        rep["user"] = got[1].strip()
    if got := get("RISK_AUDIT_NATS_PASSWORD_FILE"):
        rep["password_file"] = got[1].strip()
    if got := get("RISK_AUDIT_NATS_CONNECT_TIMEOUT"):
        rep["connect_timeout"] = parse_duration(*got)
    if got := get("RISK_AUDIT_NATS_MONITOR_URL"):
        rep["monitor_url"] = got[1].strip().rstrip("/")
    kwargs["replication"] = ReplicationSettings(**rep)
