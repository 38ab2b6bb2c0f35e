"""JsonAuditSink: the original design's surface over AuditLog, for code written
against it.

The original design's contract is that audit failures never break trading: ``write``
and ``flush`` do not raise. Where it printed only an event id on failure, this sink
prints the complete event as an ``AUDIT_EMERGENCY`` line of kind ``unsequenced`` (which
``riskaudit recover`` puts back), and logs ``falling back to stdout``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import orjson

from riskaudit.clock import ClockReader
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditDegradedError, AuditEncodingError, AuditError, AuditStateError
from riskaudit.events import RiskEvent
from riskaudit.format import EMERGENCY_PREFIX, unsequenced_line
from riskaudit.log import AuditLog, Destination, Health, HealthStatus

logger = logging.getLogger("riskaudit.sink")


class JsonAuditSink:
    """Write risk events to the hash-chained log; never raise into the trading path.

    The path comes from the argument, else ``RISK_AUDIT_LOG_PATH``, else
    ``logs/risk_audit.jsonl`` (the config's default).
    """

    def __init__(
        self,
        log_path: str | Path | None = None,
        *,
        config: AuditConfig | None = None,
        clock: ClockReader | None = None,
    ) -> None:
        cfg = config if config is not None else AuditConfig.from_env()
        if log_path is not None:
            cfg = cfg.with_(log_path=Path(log_path))
        self._config = cfg
        self._clock = clock
        self.log_path = cfg.log_path.absolute()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._log: AuditLog | None = None
        #: Why the log could not be opened (None once it is): a read-only or missing
        #: volume, or another process holding ``<log>.lock`` (named with its pid).
        self.unavailable: str | None = None
        self.emergency_lines = 0  # events printed to stdout because the log was not open
        try:
            self._log = AuditLog(cfg, clock=clock)
            self.log_path = self._log.path
        except AuditError as exc:
            # Audit failures never break trading: start degraded, every event goes to
            # stdout as a complete AUDIT_EMERGENCY line, and the log is retried.
            self.unavailable = str(exc)
            logger.error(
                "audit log %s cannot be opened (%s); falling back to stdout "
                "(AUDIT_EMERGENCY lines; `riskaudit recover` puts them back), retrying",
                cfg.log_path,
                exc,
            )
            self._retry = threading.Thread(target=self._reopen, name="riskaudit-sink", daemon=True)
            self._retry.start()

    @property
    def log(self) -> AuditLog:
        """The open log (AuditStateError while the sink is degraded and has none)."""
        if self._log is None:
            raise AuditStateError(f"the audit log is not open: {self.unavailable}")
        return self._log

    def _reopen(self) -> None:
        delay = 0.5
        while not self._closed.wait(delay):
            try:
                log = AuditLog(self._config, clock=self._clock)
            except AuditError as exc:
                self.unavailable = str(exc)
                delay = min(30.0, delay * 2)
                continue
            with self._lock:
                if self._closed.is_set():
                    log.close()
                    return
                self._log, self.unavailable = log, None
            logger.warning("audit log %s open again: events go to it", self._config.log_path)
            return

    def health(self) -> Health:
        """The log's health; ``failing`` while the log cannot be opened at all."""
        log = self._log
        if log is not None:
            return log.health()
        return Health(
            status=HealthStatus.FAILING,
            reasons=(f"audit log not open, events on stdout: {self.unavailable}",),
            destination=Destination.STDOUT,
            last_seq=0,
            durable_seq=0,
            queued=0,
            stdout_records=0,
            unsequenced=self.emergency_lines,
            lost=0,
        )

    @property
    def config(self) -> AuditConfig:
        return self._config

    def append(self, event: RiskEvent) -> int | None:
        """:meth:`write` under the name the bus calls (:class:`AuditSinkProtocol`)."""
        return self.write(event)

    def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        """Wait until ``seq`` is durable. The one call of this sink that raises
        (``AuditDegradedError``): only a caller that asked for durability
        (``publish(..., durable=True)``) gets here, and it must not be told yes falsely."""
        if self._log is None:
            raise AuditDegradedError(
                f"the audit log is not open ({self.unavailable}): the event is on stdout",
                first_seq=seq,
                last_seq=seq,
            )
        self._log.wait_durable(seq, timeout)

    def write(self, event: RiskEvent) -> int | None:
        """Record the event; return its ``seq``, or None if it went to stdout instead."""
        log = self._log
        if log is None:
            self._emergency(event, f"audit log not open: {self.unavailable}")
            return None
        try:
            return log.append(event)
        except AuditEncodingError as exc:
            self._emergency(event, f"encoding: {exc}")
        except AuditError as exc:
            self._emergency(event, str(exc))
        return None

    def flush(self, timeout: float | None = 5.0) -> bool:
        """True when every record written so far is fsynced; False (and a log) if not."""
        if self._log is None:
            logger.error("audit flush: the log is not open (%s)", self.unavailable)
            return False
        try:
            self._log.flush(timeout)
        except AuditError as exc:
            logger.error("audit flush failed: %s", exc)
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            log = self._log
        if log is not None:
            log.close()

    def __enter__(self) -> JsonAuditSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _emergency(self, event: RiskEvent, reason: str) -> None:
        self.emergency_lines += 1
        if self._log is not None or self.emergency_lines == 1:
            logger.error("audit write failed (%s); falling back to stdout", reason)
        now = time.time_ns()
        try:
            body = orjson.dumps(event.to_dict(), default=repr)[1:]
            payload = unsequenced_line(reason, now, body=body)
        except Exception:  # the event itself is broken: keep what can be kept
            payload = unsequenced_line(reason, now, event_repr=repr(event))
        try:
            sys.stdout.write(EMERGENCY_PREFIX + payload.decode() + "\n")
            sys.stdout.flush()
        except Exception:
            logger.critical("stdout emergency line failed too for %r", event)


#: The original design's other name for the same sink.
EnhancedJsonAuditSink = JsonAuditSink
