"""Prometheus metrics computed from what the log actually did, per instance.

Peers are known to report healthy while losing data; here every series is read at
scrape time from the log's own counters and state (records per destination, failures,
the durable watermark, the spool, the clock, free space), so a scrape shows facts. The
registry belongs to the instance — never prometheus-client's global one — so tests and
several logs in one process each get their own. Every labelled counter is exported
for every known label value from the start, at 0, so an ``increase()`` alert can fire
on the first failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from riskaudit._version import __version__
from riskaudit.events import EventPriority, EventType
from riskaudit.format import list_segments
from riskaudit.log import Destination

if TYPE_CHECKING:
    from riskaudit.bus import RiskEventBus
    from riskaudit.log import AuditLog
    from riskaudit.ops._housekeeping import Housekeeper
    from riskaudit.replication import Forwarder

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_APPEND_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 1e-2, 0.1)


class _AuditCollector(Collector):
    def __init__(self, log: AuditLog, bus: RiskEventBus | None) -> None:
        self.log = log
        self.bus = bus
        self.housekeeper: Housekeeper | None = None

    def collect(self) -> Iterator[Any]:
        log = self.log
        st = log.status()
        rec = st.records

        events = CounterMetricFamily(
            "audit_events", "Events accepted by the log", labels=["event_type", "priority"]
        )
        counts = dict(log.event_counts)
        for t in EventType:
            for p in EventPriority:
                events.add_metric([t.name, p.name], counts.get((t.name, p.name), 0))
        yield events

        failures = CounterMetricFamily(
            "audit_write_failures", "Failed writes or syncs, by destination", labels=["reason"]
        )
        for reason, n in sorted(st.write_failures.items()):
            failures.add_metric([reason], n)
        yield failures

        yield CounterMetricFamily(
            "audit_events_emergency",
            "Records that reached only stdout, plus unsequenced events (recover them)",
            value=rec.stdout + rec.unsequenced,
        )
        yield CounterMetricFamily(
            "audit_events_dropped",
            "Records lost even to stdout (must stay 0)",
            value=rec.lost,
        )
        yield CounterMetricFamily(
            "audit_bytes_written",
            "Bytes made durable (primary and spool)",
            value=st.bytes_written,
        )

        fallback = GaugeMetricFamily(
            "audit_fallback_active", "1 while records go to this fallback", labels=["destination"]
        )
        for dest in (Destination.SPOOL, Destination.STDOUT):
            fallback.add_metric([dest], 1.0 if st.destination is dest else 0.0)
        yield fallback

        gauges = {
            "audit_ready": (
                1.0 if st.ready else 0.0,
                "1 while records reach a durable destination",
            ),
            "audit_queue_depth": (st.queued, "Records waiting for the writer"),
            "audit_queue_capacity": (st.queue_capacity, "Queue size limit"),
            "audit_chain_seq": (st.last_seq, "Last seq handed out"),
            "audit_durable_seq": (st.durable_seq, "Durable watermark"),
            "audit_spool_records": (rec.spool_pending, "Records in the spool, not yet replayed"),
            "audit_primary_trusted": (
                1.0 if st.integrity.primary_trusted else 0.0,
                "0 after a write or sync on the primary failed, until it is set aside",
            ),
            "audit_untrusted_files": (
                len(st.integrity.untrusted_files),
                "Files set aside untouched after a failed write or sync (trusted to their end)",
            ),
            "audit_corrupt_files": (
                len(st.integrity.corrupt_files),
                "Files found corrupt or truncated before confirmed records (kept untouched)",
            ),
            "audit_unrecovered_records": (
                st.integrity.unrecovered_records,
                "Records that reached only stdout in this process (recover them)",
            ),
        }
        cp = st.checkpoint
        if cp.enabled and cp.age_s is not None:
            gauges["audit_checkpoint_age_seconds"] = (
                cp.age_s,
                "Seconds since the last checkpoint",
            )
        storage = st.storage
        if storage is not None and storage.free_bytes is not None:
            gauges["audit_volume_free_bytes"] = (
                storage.free_bytes,
                "Free bytes on the log volume",
            )
            gauges["audit_volume_size_bytes"] = (
                float(storage.total_bytes or 0),
                "Size of the log volume",
            )
        clock = st.clock
        if clock.max_error_s is not None:
            gauges["audit_clock_max_error_seconds"] = (
                clock.max_error_s,
                "Kernel's maximum clock error (adjtimex)",
            )
        gauges["audit_clock_synchronized"] = (
            1.0 if clock.synchronised else 0.0,
            "1 if the kernel reports the clock synchronised",
        )
        for name, (value, doc) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)

        last = GaugeMetricFamily(
            "audit_last_event_timestamp_seconds",
            "Time of the last event, by source",
            labels=["source"],
        )
        for source, ns in sorted(dict(log.last_by_source).items()):
            last.add_metric([source], ns / 1e9)
        yield last

        if self.bus is not None:
            lat = GaugeMetricFamily(
                "audit_bus_latency_seconds",
                "Publish to end of handlers, recent samples",
                labels=["priority", "quantile"],
            )
            slo = CounterMetricFamily(
                "audit_bus_slo_violations",
                "Publishes over their priority's SLO",
                labels=["priority"],
            )
            for name, s in self.bus.latency().items():
                lat.add_metric([name, "0.5"], s.p50_us / 1e6)
                lat.add_metric([name, "0.99"], s.p99_us / 1e6)
                slo.add_metric([name], s.violations)
            yield lat
            yield slo

        c = log.counters
        yield CounterMetricFamily(
            "audit_rotations", "Files sealed and renamed by built-in rotation", value=c.rotations
        )
        yield CounterMetricFamily(
            "audit_reopens", "Files reopened after logrotate renamed them", value=c.reopened
        )
        yield CounterMetricFamily(
            "audit_truncations",
            "Times the file shrank under the writer (copytruncate): must stay 0",
            value=c.truncations,
        )
        files = GaugeMetricFamily(
            "audit_log_file_bytes",
            "Bytes on disk: the active file, and the sealed segments beside it",
            labels=["file"],
        )
        files.add_metric(["active"], _size(log.path))
        files.add_metric(["segments"], sum(_size(s.path) for s in list_segments(log.path)))
        yield files

        hk = self.housekeeper
        if hk is not None and hk.backup is not None:
            yield CounterMetricFamily(
                "audit_backup_failures", "Backup runs that failed", value=hk.backup_failures
            )
            yield GaugeMetricFamily(
                "audit_backup_last_success_timestamp_seconds",
                "When the last backup run succeeded (0: never)",
                value=(hk.last_backup_ns or 0) / 1e9,
            )


def _size(path: os.PathLike[str]) -> int:
    """A file's size, 0 while it does not exist (between a rotation's rename and create,
    or on a volume that is gone): a scrape never fails for a file in motion."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class _BuildCollector(Collector):
    """``riskaudit_build_info{version}``: which release a host runs, joinable in PromQL."""

    def collect(self) -> Iterator[Any]:
        info = GaugeMetricFamily(
            "riskaudit_build_info", "The riskaudit release running (always 1)", labels=["version"]
        )
        info.add_metric([__version__], 1.0)
        yield info


def register_process_metrics(registry: CollectorRegistry) -> None:
    """``riskaudit_build_info`` and the standard ``process_*`` and ``python_info`` series
    (memory, CPU, open descriptors of this process), in ``registry``, not the global one."""
    registry.register(_BuildCollector())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)


class ForwardCollector(Collector):
    """The forwarder's metrics: how far behind the local log it is, and its errors."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def collect(self) -> Iterator[Any]:
        fwd = self.forwarder
        yield GaugeMetricFamily(
            "audit_forward_lag_records",
            "Records in the local log not yet acknowledged by NATS JetStream (the broker)",
            value=fwd.lag(),
        )
        yield GaugeMetricFamily(
            "audit_forward_replicated_seq",
            "The collector's watermark: the local log is fsynced centrally through this seq",
            value=fwd.replicated_seq,
        )
        yield GaugeMetricFamily(
            "audit_forward_replication_lag_records",
            "Records in the local log not yet fsynced by the collector (end to end)",
            value=fwd.replication_lag(),
        )
        yield GaugeMetricFamily(
            "audit_forward_replication_lag_seconds",
            "Age of the oldest local record not yet fsynced by the collector (end to end)",
            value=fwd.replication_lag_seconds(),
        )
        yield CounterMetricFamily(
            "audit_forward_repairs",
            "Repair requests from the collector served from the local log",
            value=fwd.stats.repairs,
        )
        yield CounterMetricFamily(
            "audit_forward_errors",
            "Failed publishes or reads (each retried)",
            value=fwd.stats.errors,
        )
        yield CounterMetricFamily(
            "audit_forward_records",
            "Records acknowledged by NATS JetStream",
            value=fwd.stats.published_records,
        )


class AuditMetrics:
    """The metrics of one log (and optionally its bus), in a registry of their own."""

    def __init__(
        self,
        log: AuditLog,
        bus: RiskEventBus | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.log = log
        self.registry = registry if registry is not None else CollectorRegistry()
        self.append_seconds = Histogram(
            "audit_append_seconds",
            "append() on the producer's thread (1 call in 1024 is timed)",
            buckets=_APPEND_BUCKETS,
            registry=self.registry,
        )
        self.durable_latency = Histogram(
            "audit_durable_latency_seconds",
            "From append to durable, per batch (its oldest record)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fsync_seconds = Histogram(
            "audit_fsync_seconds",
            "One batch's write and sync",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._collector = _AuditCollector(log, bus)
        self.registry.register(self._collector)
        register_process_metrics(self.registry)
        self.scraped_at = 0.0

    def watch_forwarder(self, forwarder: Forwarder) -> None:
        """Export the forwarder's lag and errors too."""
        self.registry.register(ForwardCollector(forwarder))

    def watch_housekeeping(self, housekeeper: Housekeeper) -> None:
        """Export the backup metrics of this housekeeper."""
        self._collector.housekeeper = housekeeper

    def _drain(self) -> None:
        timings = self.log.take_timings()
        for samples, hist in (
            (timings.append, self.append_seconds),
            (timings.durable, self.durable_latency),
            (timings.sync, self.fsync_seconds),
        ):
            for seconds in samples:
                hist.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of this log's metrics."""
        self._drain()
        self.scraped_at = time.time()
        return generate_latest(self.registry)
