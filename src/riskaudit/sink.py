"""JsonAuditSink: the seed's surface over AuditLog, for code written against it.

The seed's contract is that audit failures never break trading: ``write`` and
``flush`` do not raise. Where the seed printed only an event id on failure, this sink
prints the complete event as an ``AUDIT_EMERGENCY`` line of kind ``unsequenced`` (which
``riskaudit recover`` puts back), and logs ``falling back to stdout``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from types import TracebackType

import orjson

from riskaudit.config import AuditConfig
from riskaudit.errors import AuditEncodingError, AuditError
from riskaudit.events import RiskEvent
from riskaudit.log import EMERGENCY_PREFIX, AuditLog, format_ts

logger = logging.getLogger("riskaudit.sink")


class JsonAuditSink:
    """Write risk events to the hash-chained log; never raise into the trading path.

    The path comes from the argument, else ``RISK_AUDIT_LOG_PATH``, else
    ``logs/risk_audit.jsonl`` (the config's default).
    """

    def __init__(
        self, log_path: str | Path | None = None, *, config: AuditConfig | None = None
    ) -> None:
        cfg = config if config is not None else AuditConfig.from_env()
        if log_path is not None:
            cfg = cfg.with_(log_path=Path(log_path))
        self.log = AuditLog(cfg)
        self.log_path = self.log.path

    @property
    def config(self) -> AuditConfig:
        return self.log.config

    def append(self, event: RiskEvent) -> int | None:
        """:meth:`write` under the name the bus calls (:class:`AuditSinkProtocol`)."""
        return self.write(event)

    def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        """Wait until ``seq`` is durable. The one call of this sink that raises
        (``AuditDegradedError``): only a caller that asked for durability
        (``publish(..., durable=True)``) gets here, and it must not be told yes falsely."""
        self.log.wait_durable(seq, timeout)

    def write(self, event: RiskEvent) -> int | None:
        """Record the event; return its ``seq``, or None if it went to stdout instead."""
        try:
            return self.log.append(event)
        except AuditEncodingError as exc:
            self._emergency(event, f"encoding: {exc}")
        except AuditError as exc:
            self._emergency(event, str(exc))
        return None

    def flush(self, timeout: float | None = 5.0) -> bool:
        """True when every record written so far is fsynced; False (and a log) if not."""
        try:
            self.log.flush(timeout)
        except AuditError as exc:
            logger.error("audit flush failed: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.log.close()

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
        logger.error("audit write failed (%s); falling back to stdout", reason)
        try:
            fields = event.to_dict()
            payload = orjson.dumps(
                {
                    "kind": "unsequenced",
                    "ts": format_ts(time.time_ns()),
                    "reason": reason,
                    "event": fields,
                },
                default=repr,
            )
        except Exception:  # the event itself is broken: keep what can be kept
            payload = orjson.dumps(
                {
                    "kind": "unsequenced",
                    "ts": format_ts(time.time_ns()),
                    "reason": reason,
                    "event_repr": repr(event),
                }
            )
        try:
            sys.stdout.write(EMERGENCY_PREFIX + payload.decode() + "\n")
            sys.stdout.flush()
        except Exception:
            logger.critical("stdout emergency line failed too for %r", event)


#: The seed's other name for the same sink.
EnhancedJsonAuditSink = JsonAuditSink
