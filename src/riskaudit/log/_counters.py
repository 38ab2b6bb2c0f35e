"""What the writer did: the tally it keeps as it goes, and the frozen snapshot others read.

The writer bumps plain attributes of its ``WriterTally`` on its own thread. Health, metrics
and callers read a ``WriterCounters`` snapshot instead of the tally itself, so they cannot
change the writer's figures, and a snapshot they hold does not change under them. Each
field is as it was when read: the snapshot takes no lock, so two fields the writer
bumps one after the other (``spool_records`` and ``spool_pending``) may be a step apart. The
timing samples (one per batch) are taken out, not read: each scrape of the metrics
observes every sample once (``Timings``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class WriterCounters:
    """What the writer did since the log was opened (``AuditLog.counters``)."""

    batches: int
    primary_records: int
    spool_records: int
    stdout_records: int
    write_failures: int
    replayed_records: int
    reopened: int
    rescued: int
    gaps: int
    rotations: int
    truncations: int
    last_error: str | None
    #: Failed writes by destination (``primary``, ``spool``).
    failures_by: Mapping[str, int]
    bytes_written: int
    #: Records in the spool not yet replayed into the primary.
    spool_pending: int


@dataclass(frozen=True, slots=True)
class Timings:
    """Samples in seconds taken since the last ``AuditLog.take_timings()``, oldest first."""

    #: One ``append`` call each (the producer's side).
    append: tuple[float, ...]
    #: Append to durable, per batch (its oldest record).
    durable: tuple[float, ...]
    #: One batch's write and sync.
    sync: tuple[float, ...]


#: Timing samples kept of each kind between two ``AuditLog.take_timings()`` calls
#: (the newest): bounded memory when nothing scrapes.
SAMPLES = 4096


def samples() -> deque[float]:
    return deque(maxlen=SAMPLES)


@dataclass(slots=True)
class WriterTally:
    """The writer's own, mutable counters (only the writer thread changes them)."""

    batches: int = 0
    primary_records: int = 0
    spool_records: int = 0
    stdout_records: int = 0
    write_failures: int = 0
    replayed_records: int = 0
    reopened: int = 0
    rescued: int = 0
    gaps: int = 0
    rotations: int = 0
    truncations: int = 0
    last_error: str | None = None
    failures_by: dict[str, int] = field(default_factory=lambda: {"primary": 0, "spool": 0})
    bytes_written: int = 0
    spool_pending: int = 0
    sync_seconds: deque[float] = field(default_factory=samples)
    durable_latency: deque[float] = field(default_factory=samples)

    def snapshot(self) -> WriterCounters:
        values = {f.name: getattr(self, f.name) for f in fields(WriterCounters)}
        values["failures_by"] = MappingProxyType(dict(self.failures_by))
        return WriterCounters(**values)


def take(samples: deque[float]) -> tuple[float, ...]:
    """Everything in ``samples``, removed. Each ``popleft`` is atomic, so a sample
    appended meanwhile is taken or left whole, and two takers at once (two scrapes
    overlapping) share the samples between them, each taken once."""
    out: list[float] = []
    while True:
        try:
            out.append(samples.popleft())
        except IndexError:  # empty, perhaps emptied by another taker since
            return tuple(out)
