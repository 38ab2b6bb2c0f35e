"""RiskEventBus: audit first, then the handlers.

``publish`` hands the event to the audit log before any handler sees it, so a risk
rule can never act on an event the audit trail does not hold. With ``durable=True``
the handlers run only after the record is fsynced: a true write-ahead log for callers
who need it, at the price of a group-commit wait.

The log is injected (the original system hard-coded its sink, which made it untestable
and impossible to point elsewhere); by default the bus opens one from the config.
Handlers are isolated: an exception is logged and counted, and N consecutive failures
for one event type open a circuit breaker that skips that type's handlers until reset.
Per-priority latency, publish to the end of that event's handlers, is tracked against
the original engine's SLOs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, cast, runtime_checkable

from riskaudit.clock import ClockReader
from riskaudit.config import DEFAULT_SLO_SECONDS, AuditConfig
from riskaudit.errors import AuditDegradedError
from riskaudit.events import EventPriority, EventType, RiskEvent
from riskaudit.log import AuditLog

logger = logging.getLogger("riskaudit.bus")

Handler = Callable[[RiskEvent], Any] | Callable[[RiskEvent], Awaitable[Any]]


@runtime_checkable
class AuditSinkProtocol(Protocol):
    """What the bus needs of its audit log: :class:`AuditLog` and :class:`JsonAuditSink`
    are two; a test double or a wrapper can be a third."""

    @property
    def config(self) -> AuditConfig: ...

    def append(self, event: RiskEvent) -> int | None: ...

    def wait_durable(self, seq: int, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...


_SAMPLES = 4096


class Subscription:
    """A handler's registration; :meth:`unsubscribe` (or ``with``) removes it."""

    __slots__ = ("_bus", "active", "event_type", "handler", "is_async", "loop", "priorities")

    def __init__(
        self,
        bus: RiskEventBus,
        event_type: EventType,
        handler: Handler,
        priorities: frozenset[EventPriority] | None,
    ) -> None:
        self._bus = bus
        self.event_type = event_type
        self.handler = handler
        self.priorities = priorities
        self.is_async = inspect.iscoroutinefunction(handler)
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.active = True

    def unsubscribe(self) -> None:
        """Stop delivering events to this handler (idempotent)."""
        if self.active:
            self.active = False
            self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unsubscribe()


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Publish-to-handlers-done latency of one priority, over the recent samples."""

    priority: str
    count: int
    p50_us: float
    p99_us: float
    slo_us: float
    violations: int


class _Latency:
    """A fixed ring of recent samples and a violation counter, per priority."""

    __slots__ = ("count", "ring", "slo_ns", "violations")

    def __init__(self, slo_seconds: float) -> None:
        self.slo_ns = int(slo_seconds * 1e9)
        self.ring = [0] * _SAMPLES
        self.count = 0
        self.violations = 0

    def add(self, ns: int) -> None:
        self.ring[self.count % _SAMPLES] = ns
        self.count += 1
        if ns > self.slo_ns:
            self.violations += 1

    def stats(self, name: str) -> LatencyStats:
        samples = sorted(self.ring[: min(self.count, _SAMPLES)])
        if samples:
            p50 = samples[len(samples) // 2] / 1000
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000
        else:
            p50 = p99 = 0.0
        return LatencyStats(name, self.count, p50, p99, self.slo_ns / 1000, self.violations)


class RiskEventBus:
    """Publish risk events: audit hand-off first, then the subscribed handlers."""

    def __init__(
        self,
        audit_log: AuditSinkProtocol | None = None,
        *,
        config: AuditConfig | None = None,
        slo_seconds: Mapping[EventPriority, float] | None = None,
        failure_threshold: int | None = None,
        clock: ClockReader | None = None,
    ) -> None:
        """``clock`` is the clock reader of the log the bus opens when none is given
        (``AuditLog``'s seam); a log passed in already has its own."""
        if audit_log is not None and clock is not None:
            raise TypeError("RiskEventBus: pass clock= to the AuditLog you give it, not here")
        if audit_log is None:
            cfg = config if config is not None else AuditConfig.from_env()
            audit_log = AuditLog(cfg, clock=clock)
            self._owns_log = True
        elif isinstance(audit_log, AuditSinkProtocol):
            cfg = config if config is not None else audit_log.config
            self._owns_log = False
        else:
            raise TypeError(
                f"RiskEventBus needs an AuditLog, a JsonAuditSink or an object with "
                f"append(event), wait_durable(seq, timeout) and config "
                f"(riskaudit.AuditSinkProtocol); got {type(audit_log).__name__}"
            )
        self.audit_log: AuditSinkProtocol = audit_log
        slo = dict(DEFAULT_SLO_SECONDS)
        slo.update(cfg.slo_seconds)
        slo.update(slo_seconds or {})
        self._latency = {p: _Latency(slo.get(p, 1.0)) for p in EventPriority}
        self._threshold = failure_threshold or cfg.handler_failure_threshold
        self._subs: dict[EventType, tuple[Subscription, ...]] = {}
        self._lock = threading.Lock()
        self._consecutive: dict[EventType, int] = {}
        self._open_circuits: set[EventType] = set()
        self.handler_failures = 0
        self.skipped_by_breaker = 0

    # -- subscriptions ---------------------------------------------------------------

    def subscribe(
        self,
        event_type: EventType,
        handler: Handler,
        priorities: Iterable[EventPriority] | None = None,
    ) -> Subscription:
        """Call ``handler(event)`` for events of this type (and these priorities)."""
        sub = Subscription(
            self, event_type, handler, None if priorities is None else frozenset(priorities)
        )
        with self._lock:
            self._subs[event_type] = (*self._subs.get(event_type, ()), sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs[sub.event_type] = tuple(
                s for s in self._subs.get(sub.event_type, ()) if s is not sub
            )

    # -- publishing ------------------------------------------------------------------

    def publish(self, event: RiskEvent, durable: bool = False) -> int | None:
        """Audit the event, then run its handlers; return the record's ``seq`` (None
        if the queue was full and it became an unsequenced emergency line).

        Coroutine handlers are scheduled on the loop they were subscribed from (or the
        caller's running loop), not awaited; use :meth:`publish_async` to await them.
        """
        start = time.perf_counter_ns()
        seq = self.audit_log.append(event)
        if durable:
            self._wait(seq)
        for sub in self._targets(event):
            if sub.is_async:
                self._schedule(sub, event, start)
            else:
                self._call(sub, event)
        self._latency[event.priority].add(time.perf_counter_ns() - start)
        return seq

    async def publish_async(self, event: RiskEvent, durable: bool = False) -> int | None:
        """Audit the event, then run (and await) its handlers; return its ``seq``."""
        start = time.perf_counter_ns()
        seq = self.audit_log.append(event)
        if durable:
            await asyncio.to_thread(self._wait, seq)
        for sub in self._targets(event):
            if sub.is_async:
                try:
                    await sub.handler(event)
                except Exception as exc:
                    self._failed(sub, event, exc)
                else:
                    self._succeeded(sub)
            else:
                self._call(sub, event)
        self._latency[event.priority].add(time.perf_counter_ns() - start)
        return seq

    def _wait(self, seq: int | None) -> None:
        if seq is None:
            raise AuditDegradedError(
                "the audit queue was full: the event went out as an unsequenced "
                "AUDIT_EMERGENCY line, not to durable storage",
                first_seq=0,
                last_seq=0,
            )
        self.audit_log.wait_durable(seq)

    def _targets(self, event: RiskEvent) -> tuple[Subscription, ...] | list[Subscription]:
        subs = self._subs.get(event.event_type, ())
        if not subs:
            return ()
        if event.event_type in self._open_circuits:
            self.skipped_by_breaker += len(subs)
            return ()
        return [s for s in subs if s.priorities is None or event.priority in s.priorities]

    def _call(self, sub: Subscription, event: RiskEvent) -> None:
        try:
            sub.handler(event)
        except Exception as exc:
            self._failed(sub, event, exc)
        else:
            self._succeeded(sub)

    def _schedule(self, sub: Subscription, event: RiskEvent, start: int) -> None:
        coro = cast(Coroutine[Any, Any, Any], sub.handler(event))
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = sub.loop if sub.loop is not None and not sub.loop.is_closed() else running
        if loop is None:
            try:
                asyncio.run(coro)
            except Exception as exc:
                self._failed(sub, event, exc)
            else:
                self._succeeded(sub)
            return

        def done(fut: Future[Any] | asyncio.Future[Any]) -> None:
            exc = None if fut.cancelled() else fut.exception()
            if exc is not None and isinstance(exc, Exception):
                self._failed(sub, event, exc)
            else:
                self._succeeded(sub)

        if loop is running:
            loop.create_task(coro).add_done_callback(done)
        else:
            asyncio.run_coroutine_threadsafe(coro, loop).add_done_callback(done)

    # -- isolation and the breaker ----------------------------------------------------

    def _succeeded(self, sub: Subscription) -> None:
        if self._consecutive.get(sub.event_type):
            self._consecutive[sub.event_type] = 0

    def _failed(self, sub: Subscription, event: RiskEvent, exc: Exception) -> None:
        self.handler_failures += 1
        n = self._consecutive.get(sub.event_type, 0) + 1
        self._consecutive[sub.event_type] = n
        logger.error(
            "handler %r failed on %s %s: %r",
            getattr(sub.handler, "__qualname__", sub.handler),
            event.event_type.name,
            event.event_id,
            exc,
        )
        if n >= self._threshold and sub.event_type not in self._open_circuits:
            self._open_circuits.add(sub.event_type)
            logger.critical(
                "circuit breaker open for %s after %d consecutive handler failures; "
                "events are still audited, handlers are skipped until reset",
                sub.event_type.name,
                n,
            )

    def circuit_open(self, event_type: EventType) -> bool:
        """True while this type's handlers are skipped by the breaker."""
        return event_type in self._open_circuits

    def reset_circuit(self, event_type: EventType | None = None) -> None:
        """Close the breaker for one type, or for all."""
        types = list(self._open_circuits) if event_type is None else [event_type]
        for t in types:
            self._open_circuits.discard(t)
            self._consecutive[t] = 0

    # -- reporting and lifetime ---------------------------------------------------------

    def latency(self) -> dict[str, LatencyStats]:
        """Per-priority latency against its SLO (p50/p99 over the last samples)."""
        return {p.name: self._latency[p].stats(p.name) for p in EventPriority}

    def close(self) -> None:
        """Close the audit log if this bus opened it."""
        if self._owns_log:
            self.audit_log.close()

    def __enter__(self) -> RiskEventBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
