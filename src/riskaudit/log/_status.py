"""The log's state, computed from the facts its parts keep: health and status.

Health is ``ok`` (writing to the primary), ``degraded`` (spool, retrying, low space,
volatile storage, records only on stdout) or ``failing`` (emergency stdout, lock lost,
writer dead, corrupt files), always with the reasons. Nothing here keeps state of its
own: each call reads the writer, the monitor, the hand-off and the watermark anew.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from riskaudit._native import STDOUT, Watermark
from riskaudit.log._handoff import HandOff
from riskaudit.log._monitor import Monitor
from riskaudit.log._volume import SpaceLevel
from riskaudit.log._writer import Destination, Writer


class LogState(enum.Enum):
    """The lifecycle of an AuditLog."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"
    FORKED = "forked"  # this process is a fork of the owner: the child opens its own
    FAILED = "failed"  # the writer thread died


class HealthStatus(enum.StrEnum):
    """``ok`` (writing to the primary), ``degraded`` (spool, retrying, low space,
    volatile storage), ``failing`` (emergency stdout, lock lost, writer dead)."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"

    def at_least(self, other: HealthStatus) -> HealthStatus:
        """The worse of the two."""
        order = (HealthStatus.OK, HealthStatus.DEGRADED, HealthStatus.FAILING)
        return max(self, other, key=order.index)


@dataclass(frozen=True, slots=True)
class Health:
    """The log's state from facts: ``ok`` (writing to the primary), ``degraded``
    (spool, retrying, low space, volatile storage), ``failing`` (emergency stdout, lock
    lost, writer dead)."""

    status: HealthStatus
    reasons: tuple[str, ...]
    destination: Destination
    last_seq: int
    durable_seq: int
    queued: int
    stdout_records: int
    unsequenced: int
    lost: int
    warnings: tuple[str, ...] = ()
    #: Ranges of seqs that reached only stdout (not durable until `riskaudit recover`).
    unrecovered: tuple[tuple[int, int], ...] = ()
    #: Files kept untouched because a write or sync on them failed (trusted only up to
    #: their sealed end) and files found corrupt or truncated, by name.
    untrusted: tuple[str, ...] = ()
    corrupt: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Facts:
    """Where health and status read from (the parts of one AuditLog)."""

    path: Path
    stream: str
    state: LogState
    failure: BaseException | None
    writer: Writer
    monitor: Monitor
    handoff: HandOff
    watermark: Watermark
    emergency_lost: int
    clock_required: bool
    schema_warnings: int
    policy_violations: int


def build_health(f: Facts) -> Health:
    """ok / degraded / failing, with the reasons."""
    w = f.writer
    reasons: list[str] = []
    status = HealthStatus.OK
    if f.state is LogState.FAILED:
        status = HealthStatus.FAILING
        reasons.append(f"writer thread died: {f.failure!r}")
    if f.monitor.lock_lost:
        status = HealthStatus.FAILING
        reasons.append(f"lock {f.monitor.lock.path if f.monitor.lock else ''} lost")
    if w.destination is Destination.STDOUT:
        status = HealthStatus.FAILING
        reasons.append("emergency path: records go to stdout only")
    elif w.destination is Destination.SPOOL:
        status = status.at_least(HealthStatus.DEGRADED)
        reasons.append(f"primary unavailable, spooling ({w.counters.last_error})")
    storage = f.monitor.storage
    if storage is not None:
        if storage.space in (SpaceLevel.WARNING, SpaceLevel.CRITICAL):
            status = status.at_least(HealthStatus.DEGRADED)
            reasons.append(f"free space {storage.space}")
        if storage.volatile_reason is not None:
            status = status.at_least(HealthStatus.DEGRADED)
            reasons.append(f"volatile storage: {storage.volatile_reason}")
        if not storage.writable and w.destination is Destination.PRIMARY:
            status = status.at_least(HealthStatus.DEGRADED)
            reasons.append(f"write probe failed: {storage.probe_error}")
    warnings: list[str] = []
    if f.monitor.clock_problem is not None:
        text = f"clock: {f.monitor.clock_problem}"
        warnings.append(text)
        if f.clock_required:
            status = status.at_least(HealthStatus.DEGRADED)
            reasons.append(text)
    lost = f.emergency_lost
    if lost:
        status = HealthStatus.FAILING
        reasons.append(f"{lost} records lost (emergency output full or broken)")
    if w.primary.poisoned is not None:
        reasons.append(f"primary untrusted after a failed write or sync: {w.primary.poisoned}")
    untrusted = tuple(a.name or "" for a in w.set_aside if a.reason == "untrusted")
    corrupt = tuple(a.name or str(f.path.name) for a in w.set_aside if a.reason != "untrusted")
    if corrupt:
        status = HealthStatus.FAILING
        reasons.append(
            "corrupt: " + ", ".join(corrupt) + " (confirmed records damaged or missing; "
            "kept untouched, see docs/operations.md)"
        )
    unrecovered = tuple(f.watermark.ranges(STDOUT, 0, 2**63))
    if unrecovered:
        status = status.at_least(HealthStatus.DEGRADED)
        count = sum(b - a + 1 for a, b in unrecovered)
        reasons.append(
            f"{count} records reached only stdout (seq "
            + ", ".join(f"{a}-{b}" for a, b in unrecovered[:5])
            + (" ..." if len(unrecovered) > 5 else "")
            + "): run `riskaudit recover` with the container's stdout log"
        )
    return Health(
        status=status,
        reasons=tuple(reasons),
        destination=w.destination,
        last_seq=f.handoff.last_seq,
        durable_seq=f.watermark.durable,
        queued=f.handoff.queued,
        stdout_records=w.counters.stdout_records,
        unsequenced=f.handoff.unsequenced_count,
        lost=lost,
        warnings=tuple(warnings),
        unrecovered=unrecovered,
        untrusted=untrusted,
        corrupt=corrupt,
    )


@dataclass(frozen=True, slots=True)
class HealthView:
    status: HealthStatus
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IntegrityStatus:
    primary_trusted: bool
    untrusted_files: tuple[str, ...]
    corrupt_files: tuple[str, ...]
    unrecovered: tuple[tuple[int, int], ...]
    unrecovered_records: int


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    enabled: bool
    signed: bool
    written: int
    age_s: float | None
    sidecar: str | None
    sidecar_failures: int


@dataclass(frozen=True, slots=True)
class StorageStatus:
    directory: str
    container: str | None
    mount: str | None
    fstype: str | None
    persistent: bool
    free_bytes: int | None
    total_bytes: int | None
    space: SpaceLevel
    writable: bool


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """The kernel clock's last reading (``ClockState``) and why it is not good enough
    for ``clock_max_error``, if it is not."""

    synchronised: bool
    max_error_s: float | None
    est_error_s: float | None
    state: str
    problem: str | None


@dataclass(frozen=True, slots=True)
class RecordCounts:
    primary: int
    spool: int
    spool_pending: int
    stdout: int
    unsequenced: int
    lost: int
    replayed: int


@dataclass(frozen=True, slots=True)
class LogStatus:
    """One snapshot of everything the service, its status page and the metrics show.

    ``to_dict()`` is its JSON form (``GET /v1/status``)."""

    path: str
    stream: str
    health: HealthView
    integrity: IntegrityStatus
    ready: bool
    writer_alive: bool
    last_seq: int
    durable_seq: int
    queued: int
    queued_bytes: int
    queue_capacity: int
    destination: Destination
    checkpoint: CheckpointStatus
    storage: StorageStatus | None
    clock: ClockStatus
    records: RecordCounts
    #: Failed writes by destination (``primary``, ``spool``, ``checkpoint_sidecar``).
    write_failures: dict[str, int]
    bytes_written: int
    throttled: int
    schema_warnings: int
    policy_violations: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(orjson.dumps(self))
        return out


def build_status(f: Facts) -> LogStatus:
    """The snapshot, read from the parts' facts."""
    w = f.writer
    c = w.counters
    cp = w.checkpointer
    storage = f.monitor.storage
    health = build_health(f)
    return LogStatus(
        path=str(f.path),
        stream=f.stream,
        health=HealthView(health.status, health.reasons, health.warnings),
        integrity=IntegrityStatus(
            primary_trusted=w.primary.poisoned is None,
            untrusted_files=health.untrusted,
            corrupt_files=health.corrupt,
            unrecovered=health.unrecovered,
            unrecovered_records=sum(b - a + 1 for a, b in health.unrecovered),
        ),
        ready=health.destination is not Destination.STDOUT
        and not f.monitor.lock_lost
        and f.state is LogState.OPEN,
        writer_alive=w.thread.is_alive(),
        last_seq=f.handoff.last_seq,
        durable_seq=f.watermark.durable,
        queued=f.handoff.queued,
        queued_bytes=f.handoff.queued_bytes,
        queue_capacity=f.handoff.capacity,
        destination=w.destination,
        checkpoint=CheckpointStatus(
            enabled=cp is not None,
            signed=cp is not None and cp.signer is not None,
            written=cp.written if cp is not None else 0,
            age_s=(time.monotonic() - cp.last) if cp is not None else None,
            sidecar=str(cp.sidecar.path) if cp is not None else None,
            sidecar_failures=cp.sidecar_failures if cp is not None else 0,
        ),
        storage=None
        if storage is None
        else StorageStatus(
            directory=storage.directory,
            container=storage.container,
            mount=None if storage.mount is None else storage.mount.mount_point,
            fstype=None if storage.mount is None else storage.mount.fstype,
            persistent=storage.persistent,
            free_bytes=storage.free_bytes,
            total_bytes=storage.total_bytes,
            space=storage.space,
            writable=storage.writable,
        ),
        clock=ClockStatus(
            synchronised=f.monitor.clock.synchronised,
            max_error_s=f.monitor.clock.max_error_s,
            est_error_s=f.monitor.clock.est_error_s,
            state=f.monitor.clock.state,
            problem=f.monitor.clock_problem,
        ),
        records=RecordCounts(
            primary=c.primary_records,
            spool=c.spool_records,
            spool_pending=c.spool_pending,
            stdout=c.stdout_records,
            unsequenced=f.handoff.unsequenced_count,
            lost=f.emergency_lost,
            replayed=c.replayed_records,
        ),
        write_failures={**c.failures_by, "checkpoint_sidecar": cp.sidecar_failures if cp else 0},
        bytes_written=c.bytes_written,
        throttled=f.handoff.throttled,
        schema_warnings=f.schema_warnings,
        policy_violations=f.policy_violations,
    )
