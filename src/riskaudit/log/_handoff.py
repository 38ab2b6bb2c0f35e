"""The hand-off: producers' records into the native queue, and what happens when it is full.

A producer's ``append`` ends in one native call (``Queue.push``): the core takes the
next ``seq``, stamps the acceptance time and queues a copy of the encoded body under its
own lock, so queue order is ``seq`` order. The writer takes the whole queue in one call
that waits without the GIL. Everything here that is Python runs only when the queue
holds more than the backlog limit.

When the writer cannot keep up, the policy is explicit and asymmetric, as trading needs
(DESIGN.md, rule 2). The queue is bounded in records (``queue_size``) and in bytes
(``queue_bytes``); whichever limit comes first applies, tier by tier:

* past ``backlog_limit`` queued records, an ordinary append waits (at most the append
  timeout, without the GIL) for the writer to take the queue — backpressure: a
  producer that outruns the disk waits for it, so the time to durable stays bounded
  (the queued backlog is what every record behind it waits for);
* the last ``reserve`` places of the queue (and the same share of its bytes) are kept
  for risk-reducing events (every KILL_SWITCH, and ``metadata.risk_reducing = true``):
  they never wait;
* an ordinary event that finds the queue full waits the append timeout, then goes out
  as an ``unsequenced`` emergency line (``riskaudit recover`` puts it back), or, with
  ``fail_closed``, raises AuditQueueFullError; a risk-reducing event that finds even
  the reserve full takes the emergency path at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson

from riskaudit._native import Batch, Queue, yield_to_writer
from riskaudit._native import _after_fork as native_after_fork
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditEncodingError, AuditQueueFullError
from riskaudit.format import control_mid, unsequenced_line
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.policy import native_checks

logger = logging.getLogger("riskaudit")


class HandOff:
    """The queue between producers and the writer, with the full-queue policy.

    ``refuse`` raises the error that says why the log takes no records now (closed,
    failed, forked); it is called when the queue has been shut.
    """

    def __init__(
        self,
        config: AuditConfig,
        emergency: EmergencyOutput,
        path: Path,
        refuse: Callable[[], NoReturn],
    ) -> None:
        self._config = config
        self._emergency = emergency
        self._log_name = str(path)
        self._refuse = refuse
        size = config.queue_size
        self.capacity = size
        # The reserve never takes more than a quarter of the queue.
        self.normal_limit = max(1, size - min(config.reserve, size // 4))
        self.backlog_limit = min(config.backlog_limit or size, self.normal_limit)
        # Bytes: the same share is kept for risk-reducing events; the backlog throttle
        # counts records only.
        self.max_bytes = config.queue_bytes
        self.normal_bytes = max(1, config.queue_bytes * self.normal_limit // size)
        self._wake_at = 1 if config.flush_interval == 0 else max(1, size // 4)
        self.queue = Queue(1, self._wake_at)
        self.queue.set_checks(native_checks(config.schema_policy, config.actor_policy))
        self.throttled = 0
        #: Pushes that stepped aside for a writer waiting for the GIL.
        self.yields = 0
        self.refused = 0
        self.unsequenced_count = 0

    # -- the producers' side ----------------------------------------------------------

    def put(self, body: bytes, risk_reducing: bool) -> int | None:
        """Queue an encoded event body: its seq, or None when it went out as an
        unsequenced emergency line (the queue stayed full)."""
        seq = self.queue.push(body, self.backlog_limit, self.normal_bytes, not risk_reducing)
        if seq == -2:  # the writer waits for the GIL: step aside once, then push
            self.yields += 1
            yield_to_writer(self._config.append_timeout)
            seq = self.queue.push(body, self.backlog_limit, self.normal_bytes, False)
        if seq > 0:
            return seq
        if seq < 0:
            self._refuse()
        seq = self._make_room(body, risk_reducing)
        if seq:
            return seq
        self.unsequenced(body, "audit queue full")
        return None

    def _make_room(self, body: bytes, risk_reducing: bool) -> int:
        """The slow path: the queue holds the backlog limit or more. The seq, or 0 for
        an emergency line; raises under fail-closed."""
        queue = self.queue
        if risk_reducing:  # the reserve: never wait
            return self._pushed(queue.push(body, self.capacity, self.max_bytes, False))
        # One append timeout in all, throttle included.
        deadline = time.monotonic() + self._config.append_timeout
        if len(body) > self.normal_bytes:
            seq = 0  # never fits: no point waiting for room
        else:
            if len(queue) < self.normal_limit and queue.bytes < self.normal_bytes:
                self._throttle(deadline)
                seq = self._pushed(queue.push(body, self.normal_limit, self.normal_bytes, False))
                if seq:
                    return seq
            while True:
                seq = self._pushed(queue.push(body, self.normal_limit, self.normal_bytes, False))
                remaining = deadline - time.monotonic()
                if seq or remaining <= 0:
                    break
                queue.wait_room(self.normal_limit, self.normal_bytes, remaining, len(body))
        if seq:
            return seq
        if self._config.fail_closed:
            self.refused += 1
            raise AuditQueueFullError(
                f"audit queue full ({self.normal_limit} records or {self.normal_bytes} "
                f"bytes) for {self._config.append_timeout:g}s and RISK_AUDIT_FAIL_CLOSED is "
                f"set: the event was not recorded ({self._log_name})"
            )
        return 0

    def _pushed(self, seq: int) -> int:
        if seq < 0:
            self._refuse()
        return seq

    def _throttle(self, deadline: float) -> None:
        """Backpressure past the backlog limit.

        A producer that never pauses outruns the disk: every record queued behind the
        writer's current sync waits for it and for its own, so the backlog is the time to
        durable. Waiting here, at most the append timeout and without the GIL, until the
        writer takes the queue (it is hurried to) keeps that bounded. Never raises.
        """
        self.throttled += 1
        self.queue.wait_taken(max(0.0, deadline - time.monotonic()))

    def control(self, kind: str, fields: dict[str, Any], *, force: bool = False) -> int:
        """Queue a control record (it takes the next ``seq``). The fields are encoded
        here, so a value JSON cannot hold fails in the caller, never in the writer.
        ``force``: queue it even though the queue is shut (the closing ``stop``)."""
        try:
            mid, has_ts = control_mid(kind, fields)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise AuditEncodingError(f"{kind} record cannot be encoded: {exc}") from exc
        return self._pushed(self.queue.push_control(mid, has_ts, force))

    def unsequenced(self, body: bytes, reason: str) -> None:
        """One unsequenced emergency line for an event body (``recover`` puts it back)."""
        self.unsequenced_count += 1
        line = unsequenced_line(reason, time.time_ns(), body=body, log=self._log_name)
        n = self.unsequenced_count
        if n == 1 or n % 1000 == 0:
            logger.error(
                "%s: event written as an unsequenced AUDIT_EMERGENCY line on stdout "
                "(%d so far); falling back to stdout",
                reason,
                n,
            )
        self._emergency.put(line)

    # -- the writer's side -------------------------------------------------------------

    def take(self, closing: bool) -> Batch:
        """Wait for work (the group-commit window, without the GIL), then take all."""
        return self.queue.take(self.wait(closing))

    def wait(self, closing: bool) -> float:
        """How long the writer waits for a batch: the group-commit window (or half a
        second idle when each batch goes at once), nothing while closing."""
        interval = self._config.flush_interval
        return 0.0 if closing else interval if interval > 0 else 0.5

    def take_reserving(self, n: int) -> tuple[Batch, int]:
        """Everything queued plus the next ``n`` seqs (the first is returned),
        atomically: the writer's own records then follow everything queued before."""
        return self.queue.take_reserving(n)

    def kick(self) -> None:
        """Wake the writer and bring it back to its Python loop (reopen, rotate,
        close, the test gate)."""
        self.queue.kick()

    def hurry(self) -> None:
        """Wake the writer to commit what is queued now, without the group-commit
        window (a flush); the core's commit turns go on."""
        self.queue.hurry()

    def shut(self) -> None:
        """Take no more events; wake every waiter (they see why through ``refuse``)."""
        self.queue.shut()

    def spill(self, reason: str) -> None:
        """A dead writer: every queued event goes out as an unsequenced line, so nothing
        a producer handed in is only in the memory of a thread that is gone (queued
        control records of the log's own are not events and are not repeated)."""
        batch, _seq = self.queue.take_reserving(0)
        for body in batch.event_bodies():
            self.unsequenced(body, reason)

    def forget(self) -> None:
        """In a forked child: a fresh, shut queue (the parent's lock may be held by a
        thread that does not exist here), and no parent's writer waiting for the GIL."""
        self.queue = Queue(1, 1)
        self.queue.shut()
        native_after_fork()

    def writer_control(self, kind: str, fields: dict[str, Any]) -> int:
        """A control record of the writer's own (a clock verdict, a truncation): taken
        even while the log closes, since the writer still drains then."""
        return self.control(kind, fields, force=True)

    @property
    def last_seq(self) -> int:
        """The last ``seq`` handed out (it may not be durable yet)."""
        return self.queue.next_seq - 1

    def start_at(self, next_seq: int) -> None:
        self.queue.next_seq = next_seq

    @property
    def queued(self) -> int:
        return len(self.queue)

    @property
    def queued_bytes(self) -> int:
        return self.queue.bytes
