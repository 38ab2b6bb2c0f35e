"""AuditLog: the non-blocking hand-off between producers and the writer thread.

``append`` does the least it can on the producer's thread: encode the event body (which
also snapshots it and rejects what JSON cannot hold), then one call into the native
queue (``riskaudit._native.Queue``), which takes the next ``seq``, stamps the acceptance
time and queues a copy of the bytes under its own lock. Because ``seq`` is taken under
the same lock as the append, queue order is ``seq`` order. The writer takes the whole
queue in one call that waits without the GIL, so the host's threads keep it.

When the writer cannot keep up, the policy is explicit and asymmetric, as trading
needs (DESIGN.md, rule 2):

The queue is bounded in records (``queue_size``) and in bytes (``queue_bytes``);
whichever limit comes first applies, tier by tier:

* past ``backlog_limit`` queued records, an ordinary append waits (at most the append
  timeout) for the writer to take the queue — backpressure against GIL starvation;
* the last ``reserve`` places of the queue are kept for risk-reducing events (every
  KILL_SWITCH, and ``metadata.risk_reducing = true``): they never wait;
* an ordinary event that finds the queue full waits the append timeout, then goes out
  as an ``unsequenced`` emergency line (``riskaudit recover`` puts it back), or, with
  ``fail_closed``, raises AuditQueueFullError; a risk-reducing event that finds even
  the reserve full takes the emergency path at once.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from riskaudit._native import Batch, Queue
from riskaudit._version import __version__
from riskaudit.clock import ClockReader, read_clock
from riskaudit.config import AuditConfig
from riskaudit.errors import (
    AuditClosedError,
    AuditConfigError,
    AuditDegradedError,
    AuditEncodingError,
    AuditError,
    AuditFlushTimeoutError,
    AuditForkedError,
    AuditPolicyError,
    AuditQueueFullError,
    AuditSchemaError,
    AuditStateError,
    AuditStorageError,
)
from riskaudit.events import RiskEvent
from riskaudit.integrity._keys import load_signer
from riskaudit.log._checkpoint import Checkpointer
from riskaudit.log._codec import FORMAT, control_mid, encode_event_body, format_ts
from riskaudit.log._destinations import SetAside
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.log._files import ensure_dir
from riskaudit.log._lock import CENTRAL_MARK, WriterLock, lock_path_for
from riskaudit.log._startup import open_log
from riskaudit.log._writer import Destination, Writer
from riskaudit.policy import ACTOR_TYPE_NAMES, SchemaProblem, actor_problem, schema_problem
from riskaudit.redact import Redactor, load_key
from riskaudit.storage import StorageReport, check_storage, existing_ancestor

logger = logging.getLogger("riskaudit")

_OPEN, _CLOSING, _CLOSED, _FORKED, _FAILED = range(5)
#: Control records the tools and the service write (the writer writes the rest itself).
_TOOL_KINDS = frozenset(
    {
        "recovered",
        "access",
        "retention",
        "conflict",
        "approval_request",
        "approval",
        "tokens",
        "holds",
        "policy_violation",
    }
)
_LIVE: weakref.WeakSet[AuditLog] = weakref.WeakSet()
CLOSE_TIMEOUT = 10.0
CLOCK_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class Health:
    """The log's state from facts: ``ok`` (writing to the primary), ``degraded``
    (spool, retrying, low space, volatile storage), ``failing`` (emergency stdout, lock
    lost, writer dead)."""

    status: str
    reasons: tuple[str, ...]
    destination: str
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


class AuditLog:
    """An open, hash-chained audit log with one writer thread.

    Open it with a config (``AuditLog(AuditConfig(log_path=...))``) or a path; use it
    as a context manager or call :meth:`close`. Thread-safe; not usable after ``fork``
    in the child, which must open its own.
    """

    def __init__(
        self,
        config: AuditConfig | None = None,
        *,
        path: str | Path | None = None,
        on_durable: Callable[[int], None] | None = None,
        emergency: EmergencyOutput | None = None,
        clock: ClockReader | None = None,
    ) -> None:
        """Open (or create) the log, repair a torn tail, replay the spool, write
        ``start``, and start the writer.

        ``on_durable(seq)`` is called on the writer thread after every durable write
        with the new durable watermark (metrics and benchmarks hook in here); keep it
        quick. ``emergency`` replaces stdout as the last destination, and ``clock``
        the kernel clock reader (test seams).
        """
        self._on_durable = on_durable
        cfg = config if config is not None else AuditConfig()
        if path is not None:
            cfg = cfg.with_(log_path=Path(path))
        self.config = cfg
        self.path = Path(os.path.abspath(cfg.log_path))
        self._lock = threading.Lock()
        self._maxsize = cfg.queue_size
        # The reserve never takes more than a quarter of the queue.
        self._normal_limit = max(1, cfg.queue_size - min(cfg.reserve, cfg.queue_size // 4))
        self._backlog_limit = min(cfg.backlog_limit or cfg.queue_size, self._normal_limit)
        # Bytes: the same share is kept for risk-reducing events; the backlog throttle
        # counts records only.
        self._max_bytes = cfg.queue_bytes
        self._normal_bytes = max(1, cfg.queue_bytes * self._normal_limit // cfg.queue_size)
        self._queue = Queue(1, 1 if cfg.flush_interval == 0 else max(1, cfg.queue_size // 4))
        self._durable = threading.Condition(threading.Lock())
        self._durable_seq = 0
        self._handled_seq = 0
        #: Ranges of seqs that reached only stdout, merged, for the life of the process:
        #: the one source of truth for per-caller durability (flush, durable=True).
        self._stdout_ranges: list[tuple[int, int]] = []
        self._state = _CLOSED
        self._failure: BaseException | None = None
        self._owner_pid = os.getpid()
        self.throttled = 0
        self.event_counts: dict[tuple[str, str], int] = {}
        self.last_by_source: dict[str, int] = {}
        self.append_samples: deque[float] = deque(maxlen=4096)
        self._appends = 0
        self.schema_warnings = 0
        self.policy_violations = 0
        self._redactor = (
            Redactor(load_key(cfg.hmac_key_file), cfg.redact_fields)
            if cfg.redact_fields and cfg.hmac_key_file is not None
            else None
        )
        self._schema_policy = None if cfg.schema_policy == "off" else cfg.schema_policy
        self._actor_policy = None if cfg.actor_policy == "off" else cfg.actor_policy
        self.unsequenced = 0
        self.refused = 0
        self._lock_lost = False
        self._next_storage = 0.0
        self.storage: StorageReport | None = None
        if cfg.switch_interval is not None:
            sys.setswitchinterval(cfg.switch_interval)  # opt-in interpreter tuning

        self._check_storage_at_start()
        self._read_clock = clock if clock is not None else read_clock
        self.clock = self._read_clock()
        self._clock_problem = self.clock.problem(cfg.clock_max_error)
        self._next_clock = 0.0
        # A bad key stops start-up before anything is opened.
        self._signer = load_signer(cfg.signing_key_file) if cfg.signing_key_file else None
        self._owns_emergency = emergency is None
        self._emergency = emergency if emergency is not None else EmergencyOutput()
        try:
            self._open(cfg)
        except BaseException:
            if self._owns_emergency:
                self._emergency.close(timeout=1.0)
            raise
        self._state = _OPEN
        _LIVE.add(self)
        self._writer.thread.start()
        logger.info("Audit log file initialized: %s", self.path)

    # -- opening --------------------------------------------------------------------

    def _open(self, cfg: AuditConfig) -> None:
        """Lock, find the head (primary and spool), replay, write the opening records."""
        if (self.path.parent / CENTRAL_MARK).exists():
            raise AuditConfigError(
                "RISK_AUDIT_LOG_PATH",
                f"{self.path.parent} is a central copy written by `riskaudit collect` "
                "(byte for byte another host's records); no writer may append to it",
            )
        with contextlib.suppress(OSError, AuditStorageError):
            ensure_dir(self.path.parent)
        self._file_lock = WriterLock(lock_path_for(self.path), cfg.spool_dir)
        try:
            sidecar = cfg.checkpoint_path or self.path.with_name(self.path.name + ".checkpoints")
            opened = open_log(self.path, cfg.spool_dir, sidecar)
            self.stream = opened.stream
            self.repaired = opened.repaired
            self._writer = Writer(
                self,
                opened.primary,
                opened.spool,
                self._emergency,
                opened.last_seq,
                opened.last_hash,
                cfg.retry_max,
            )
            if cfg.checkpoint_interval > 0:
                self._writer.checkpointer = Checkpointer(
                    stream=self.stream,
                    signer=self._signer,
                    sidecar=sidecar,
                    interval=cfg.checkpoint_interval,
                    every_records=cfg.checkpoint_records,
                )
                # The start record carries this reading: chained again only once it changes.
                self._writer.checkpointer.clock_chained(self._clock_fields())
            self._writer.stream = self.stream
            self._writer.ring.limit = cfg.truncate_ring
            self._writer.rotation = cfg.rotation
            self._writer.primary_last = opened.primary_last
            if opened.aside is not None:
                self._writer.set_aside.append(opened.aside)
            self._queue.next_seq = opened.last_seq + 1
            self._durable_seq = self._handled_seq = opened.last_seq
            try:
                self._start_writer_state(opened.primary_writable, opened.spool_last)
                self._write_opening_records(opened.last_seq, opened.aside, opened.stdout_gap)
            except BaseException:
                self._writer.close_files()
                raise
        except BaseException:
            self._file_lock.release()
            raise

    def _check_storage_at_start(self) -> None:
        cfg = self.config
        directory = self.path.parent
        probe_dir = existing_ancestor(directory)
        report = check_storage(
            probe_dir, in_kubernetes=cfg.in_kubernetes, marks=cfg.watermarks, probe=False
        )
        self.storage = report
        if report.volatile_reason is not None and cfg.require_persistent:
            raise AuditStorageError(
                report.warnings[0] + " (RISK_AUDIT_REQUIRE_PERSISTENT=1: refusing to start)"
            )
        for warning in report.warnings:
            logger.warning("%s", warning)

    def _start_writer_state(self, primary_writable: bool, spool_last: int) -> None:
        w = self._writer
        if primary_writable:
            if spool_last:
                w.replay_spool(w.primary_last)
            return
        w.destination = Destination.SPOOL if w.spool is not None else Destination.STDOUT
        w._schedule_retry()

    def _write_opening_records(
        self, last_seq: int, aside: SetAside | None, stdout_gap: tuple[int, int] | None
    ) -> None:
        now = time.time_ns()
        seq = last_seq
        items: list[tuple[int, int, tuple[str, dict[str, Any]]]] = []
        if stdout_gap is not None:  # right after the hole it names
            first, last = stdout_gap
            seq += 1
            fields = {
                "first_seq": first,
                "last_seq": last,
                "records": last - first + 1,
                "destination": "stdout",
            }
            items.append((seq, now, ("gap", fields)))
        if aside is not None:
            seq += 1
            items.append((seq, now, ("segment", self._writer.aside_fields(aside))))
        if last_seq == 0:
            seq += 1
            items.append(
                (
                    seq,
                    now,
                    (
                        "genesis",
                        {"stream": self.stream, "format": FORMAT, "host": self.config.host},
                    ),
                )
            )
        if self.repaired is not None:
            r = self.repaired
            seq += 1
            fields = {"cut_bytes": r.cut_bytes, "cut_sha256": r.cut_sha256, "kept_at": r.kept_at}
            items.append((seq, now, ("repair", fields)))
        seq += 1
        items.append((seq, now, ("start", {**self._identity(), "clock": self.clock.to_record()})))
        if self._clock_problem is not None:
            seq += 1
            items.append((seq, now, ("clock", self._clock_fields())))
            logger.warning("system clock: %s (%s)", self._clock_problem, self.clock)
        self._queue.next_seq = seq + 1
        self._writer.chain(Batch.of_controls([(q, t, *control_mid(*c)) for q, t, c in items]))
        if not self._writer.commit():
            # Only stdout took them: the records that name a file set aside or a cut
            # tail are owed to the durable log, written again once it is back.
            owed = [(kind, fields) for _s, _t, (kind, fields) in items]
            self._writer.owed.extend(o for o in owed if o[0] in ("segment", "repair"))
            if stdout_gap is not None:  # the next gap record names it, with the rest
                self._writer.reopen_stdout_range(stdout_gap[0])

    def _identity(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": self.config.host,
            "version": __version__,
            "stream": self.stream,
        }

    # -- the producer side ----------------------------------------------------------

    def append(self, event: RiskEvent, *, principal: dict[str, Any] | None = None) -> int | None:
        """Hand the event to the writer; return its ``seq``. Microseconds, no I/O.

        Returns None when the queue was full and the event went out as an
        ``unsequenced`` emergency line instead (counted; ``recover`` puts it back).
        ``principal`` is who handed the event in, as the service authenticated it (a
        top-level field of the record); the library's own callers leave it out.
        """
        self._appends = n = self._appends + 1
        started = time.perf_counter() if not n & 63 else 0.0  # time 1 call in 64
        body = encode_event_body(event, self._redactor, principal)
        if self._schema_policy and (problem := schema_problem(event)) is not None:
            self._schema_violation(event, problem)
        if self._actor_policy and event.event_type._name_ in ACTOR_TYPE_NAMES:
            rule = actor_problem(event)
            if rule is not None:
                return self._actor_violation(event, body, *rule)
        seq = self._hand_off(event, body)
        if started:
            self.append_samples.append(time.perf_counter() - started)
        return seq

    def check(self, event: RiskEvent, *, principal: dict[str, Any] | None = None) -> None:
        """Raise what :meth:`append` would raise for this event's content — an
        :class:`AuditEncodingError` (or :class:`AuditSchemaError` under an enforcing
        schema policy) — without writing anything: a batch is checked whole first, so
        it is written whole or not at all."""
        encode_event_body(event, self._redactor, principal)
        if self._schema_policy == "enforce" and (problem := schema_problem(event)) is not None:
            self._schema_violation(event, problem)

    def event_fields(self, event: RiskEvent) -> dict[str, Any]:
        """The event's fields as its record would hold them (redacted, converted), for
        a control record that quotes an event it did not write (a conflict, a request
        for approval): a quote must not keep what the record itself would not."""
        parsed: dict[str, Any] = orjson.loads(b"{" + encode_event_body(event, self._redactor))
        return parsed

    def _hand_off(self, event: RiskEvent, body: bytes) -> int | None:
        seq = self._queue.push(body, self._backlog_limit, self._normal_bytes)
        if seq <= 0:
            if seq < 0:
                self._raise_state()
            seq = self._make_room(event, body)
            if not seq:
                self._unsequenced(body, "audit queue full")
                return None
        # Plain dict updates here; the metrics collector reads them at scrape time.
        key = (event.event_type._name_, event.priority._name_)
        counts = self.event_counts
        counts[key] = counts.get(key, 0) + 1
        self.last_by_source[event.source] = time.time_ns()
        return seq

    def _schema_violation(self, event: RiskEvent, problem: SchemaProblem) -> None:
        if self._schema_policy == "enforce":
            raise AuditSchemaError(
                f"event {event.event_id}: {problem}; nothing was written", field=problem.field
            )
        self.schema_warnings += 1
        if self.schema_warnings == 1 or self.schema_warnings % 1000 == 0:
            logger.warning(
                "event %s: %s (RISK_AUDIT_SCHEMA_POLICY=warn: written anyway; %d so far)",
                event.event_id,
                problem,
                self.schema_warnings,
            )

    def _actor_violation(self, event: RiskEvent, body: bytes, rule: str, detail: str) -> int | None:
        """Record the attempt; refuse it (enforce) or write it flagged (warn)."""
        self.policy_violations += 1
        fields: dict[str, Any] = {"rule": rule, "detail": detail, "event_id": event.event_id}
        if self._actor_policy == "enforce":
            fields["outcome"] = "refused"
            fields["event"] = orjson.loads(b"{" + body)
            seq = self._enqueue_control("policy_violation", fields)
            logger.error(
                "event %s refused: %s (policy_violation seq %d)", event.event_id, detail, seq
            )
            raise AuditPolicyError(
                f"event {event.event_id} refused: {detail}; the attempt is recorded as "
                f"policy_violation seq {seq}",
                rule=rule,
                seq=seq,
            )
        event_seq = self._hand_off(event, body)
        fields["outcome"] = "flagged"
        fields["event_seq"] = event_seq
        self._enqueue_control("policy_violation", fields)
        logger.warning("event %s flagged: %s", event.event_id, detail)
        return event_seq

    def _make_room(self, event: RiskEvent, body: bytes) -> int:
        """The slow path: the queue holds the backlog limit or more. Returns the seq, or
        0 for an emergency line; raises when the log closed or under fail-closed."""
        queue = self._queue
        if event.risk_reducing:  # the reserve: never wait
            return self._pushed(queue.push(body, self._maxsize, self._max_bytes))
        if len(queue) < self._normal_limit and queue.bytes < self._normal_bytes:
            self._throttle()
            # After the throttle the event is queued below the full limit, never refused.
            seq = self._pushed(queue.push(body, self._normal_limit, self._normal_bytes))
            if seq:
                return seq
        deadline = time.monotonic() + self.config.append_timeout
        while True:
            seq = self._pushed(queue.push(body, self._normal_limit, self._normal_bytes))
            remaining = deadline - time.monotonic()
            if seq or remaining <= 0:
                break
            queue.wait_room(self._normal_limit, self._normal_bytes, remaining)
        if seq:
            return seq
        if self.config.fail_closed:
            self.refused += 1
            raise AuditQueueFullError(
                f"audit queue full ({self._normal_limit} records or "
                f"{self._normal_bytes} bytes) for {self.config.append_timeout:g}s and "
                f"RISK_AUDIT_FAIL_CLOSED is set: the event was not recorded ({self.path})"
            )
        return 0

    def _pushed(self, seq: int) -> int:
        if seq < 0:
            self._raise_state()
        return seq

    def _throttle(self) -> None:
        """Backpressure past the backlog limit.

        A producer that never pauses starves the writer of the GIL, and the backlog (so
        the time to durable) then grows without bound. Waiting here, at most the append
        timeout and without the GIL, lets the writer take the queue. Never raises.
        """
        self.throttled += 1
        self._queue.wait_taken(self.config.append_timeout)

    def append_recovered(self, fields: dict[str, Any]) -> int:
        """Append a ``recovered`` record (what ``riskaudit recover`` puts back)."""
        return self.append_control("recovered", fields)

    def append_control(self, kind: str, fields: dict[str, Any]) -> int:
        """Append a control record of a kind tools and the service write themselves:
        ``recovered`` (by recover), ``access`` (who read what through the API),
        ``retention`` (what retention compressed, archived or deleted),
        ``policy_violation`` (over HTTP: an actor a token is not bound to), ``conflict`` (an
        ``event_id`` re-posted with other content), ``approval_request`` and
        ``approval`` (four eyes over HTTP), ``tokens`` and ``holds`` (who may do what,
        and what may not be deleted, as it changed)."""
        if kind not in _TOOL_KINDS:
            raise ValueError(f"control records of kind {kind!r} are the writer's own")
        with self._lock:
            if self._state is not _OPEN:
                self._raise_state()
        return self._enqueue_control(kind, fields)

    def _unsequenced(self, body: bytes, reason: str) -> None:
        """One unsequenced emergency line (``riskaudit recover`` puts it back)."""
        self.unsequenced += 1
        line = b'{"kind":"unsequenced","ts":"%b","reason":"%b","log":"%b","event":{%b}' % (
            format_ts(time.time_ns()).encode(),
            reason.encode(),
            str(self.path).encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"'),
            body,
        )
        if self.unsequenced == 1 or self.unsequenced % 1000 == 0:
            logger.error(
                "%s: event written as an unsequenced AUDIT_EMERGENCY line on stdout "
                "(%d so far); falling back to stdout",
                reason,
                self.unsequenced,
            )
        self._emergency.put(line)

    def _raise_state(self) -> None:
        if self._state is _FORKED or os.getpid() != self._owner_pid:
            raise AuditForkedError(
                f"this AuditLog belongs to process {self._owner_pid}; a forked child must "
                "open its own log"
            )
        if self._state is _FAILED:
            raise AuditStateError(f"the writer of {self.path} died: {self._failure!r}")
        raise AuditClosedError(f"audit log {self.path} is closed")

    # -- durability -----------------------------------------------------------------

    @property
    def durable_seq(self) -> int:
        """The durable watermark: the newest ``seq`` synced to the primary or spool."""
        return self._durable_seq

    @property
    def last_seq(self) -> int:
        """The last ``seq`` handed out (it may not be durable yet)."""
        return int(self._queue.next_seq) - 1

    def flush(self, timeout: float | None = None) -> None:
        """Return once every record appended before the call is synced in the primary
        or the spool.

        Raises AuditDegradedError naming the ``seq`` range of every record at or below
        the target that reached only stdout — every time it is asked, for the life of
        the process (a ``gap`` record names such records in the durable log but does
        not make them durable) — and AuditFlushTimeoutError if the writer needs longer
        than ``timeout`` seconds.
        """
        with self._lock:
            if self._state is not _OPEN and self._state is not _CLOSING:
                if self._state is _CLOSED and self._handled_seq >= self.last_seq:
                    return
                self._raise_state()
            target = self.last_seq
        self._wait_handled(target, timeout)
        self._raise_if_stdout(1, target)

    def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        """Block until ``seq`` is durable (the write-ahead wait of ``durable=True``).

        Judges only that record: AuditDegradedError if it reached only stdout."""
        self._wait_handled(seq, timeout)
        self._raise_if_stdout(seq, seq)

    def _raise_if_stdout(self, low: int, high: int) -> None:
        with self._durable:
            lost = [
                (max(a, low), min(b, high))
                for a, b in self._stdout_ranges
                if b >= low and a <= high
            ]
        if lost:
            first, last = lost[0][0], lost[-1][1]
            ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in lost[:10])
            raise AuditDegradedError(
                f"seq {ranges}{' ...' if len(lost) > 10 else ''} reached only stdout "
                "(AUDIT_EMERGENCY lines), not the primary or the spool; recover them with "
                "`riskaudit recover`",
                first_seq=first,
                last_seq=last,
            )

    def _wait_handled(self, seq: int, timeout: float | None) -> None:
        if self._handled_seq < seq:
            self._queue.kick()
            deadline = None if timeout is None else time.monotonic() + timeout
            with self._durable:
                while self._handled_seq < seq:
                    if self._state is _FAILED or self._state is _FORKED:
                        self._raise_state()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise AuditFlushTimeoutError(
                            f"seq {self._handled_seq + 1}-{seq} not durable after {timeout:g}s",
                            durable_seq=self._durable_seq,
                            target_seq=seq,
                        )
                    self._durable.wait(remaining if remaining is not None else 1.0)

    # -- the writer side (called from the writer thread) ----------------------------

    def _take(self) -> tuple[Batch, bool]:
        """Wait for work (group-commit window, without the GIL), then take everything
        queued. Closing: drain and stop without waiting out a window."""
        closing = self._state is _CLOSING
        interval = self.config.flush_interval
        batch = self._queue.take(0.0 if closing else interval if interval > 0 else 0.5)
        return batch, closing

    def _take_all_and_reserve_seq(self, n: int = 1) -> tuple[Batch, int]:
        """Everything queued plus the next ``n`` seqs (the first is returned),
        atomically: the writer's own records then follow everything queued before."""
        return self._queue.take_reserving(n)

    def _enqueue_control(self, kind: str, fields: dict[str, Any], *, force: bool = False) -> int:
        """Queue a control record of the writer's own (it takes the next ``seq``).

        The fields are encoded here first, so a value JSON cannot hold fails in the
        caller, never in the writer thread."""
        try:
            mid, has_ts = control_mid(kind, fields)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise AuditEncodingError(f"{kind} record cannot be encoded: {exc}") from exc
        seq = self._queue.push_control(mid, has_ts, force)
        if seq < 0:
            self._raise_state()
        return seq

    def _mark_handled(
        self, seq: int, *, durable: bool, stdout: tuple[int, int] | None = None
    ) -> None:
        with self._durable:
            if stdout is not None:
                ranges = self._stdout_ranges
                if ranges and ranges[-1][1] == stdout[0] - 1:
                    ranges[-1] = (ranges[-1][0], stdout[1])
                else:
                    ranges.append(stdout)
            self._handled_seq = seq
            if durable:
                self._durable_seq = seq
            self._durable.notify_all()
        if durable and self._on_durable is not None:
            self._on_durable(seq)

    def _periodic(self, now: float) -> None:
        """Housekeeping on the writer thread: the lock, and storage every interval."""
        if self._file_lock.lost():
            self._relock()
        if now >= self._next_clock:
            self._next_clock = now + CLOCK_EVERY
            self._check_clock()
        if now >= self._next_storage:
            self._next_storage = now + self.config.storage_check_interval
            directory = self.path.parent
            report = check_storage(
                existing_ancestor(directory),
                in_kubernetes=self.config.in_kubernetes,
                marks=self.config.watermarks,
                probe=self._writer.destination is Destination.PRIMARY,
            )
            old = self.storage.warnings if self.storage is not None else []
            for warning in report.warnings:
                if warning not in old:
                    logger.warning("%s", warning)
            self.storage = report

    def _clock_fields(self) -> dict[str, Any]:
        return {
            **self.clock.to_record(),
            "problem": self._clock_problem or "ok",
            "limit_s": self.config.clock_max_error,
        }

    def _check_clock(self) -> None:
        """Re-read the kernel clock; a ``clock`` record when its verdict changes."""
        self.clock = self._read_clock()
        problem = self.clock.problem(self.config.clock_max_error)
        if (problem is None) != (self._clock_problem is None):
            self._clock_problem = problem
            self._enqueue_control("clock", self._clock_fields())
            logger.warning("system clock: %s (%s)", problem or "back within limits", self.clock)
        self._clock_problem = problem
        if self._writer.checkpointer is not None:
            self._writer.checkpointer.clock = self._clock_fields()

    def _relock(self) -> None:
        """The lock file was deleted or replaced (``rm -r`` of the log directory): take
        the lock again on a fresh file; if another writer already holds it, we have
        lost the lock and say so (health: failing)."""
        try:
            fresh = WriterLock(lock_path_for(self.path), self.config.spool_dir)
        except AuditError as exc:
            if not self._lock_lost:
                logger.critical("audit log lock %s lost: %s", self._file_lock.path, exc)
            self._lock_lost = True
            return
        self._file_lock.release()
        self._file_lock = fresh
        if self._lock_lost:
            logger.warning("audit log lock %s held again", fresh.path)
        else:
            logger.warning("audit log lock %s was removed; taken again", fresh.path)
        self._lock_lost = False

    def _writer_died(self, exc: BaseException) -> None:
        logger.critical("riskaudit writer thread died: %r", exc)
        self._failure = exc
        self._state = _FAILED
        self._queue.shut()
        with self._durable:
            self._durable.notify_all()
        # What was queued and never chained: unsequenced lines, so nothing confirmed
        # by a seq is only in memory of a dead writer (recover puts them back).
        batch, _seq = self._queue.take_reserving(0)
        for body in batch.event_bodies():
            self._unsequenced(body, "audit writer died")

    # -- state ----------------------------------------------------------------------

    def health(self) -> Health:
        """ok / degraded / failing, with the reasons, computed from facts."""
        w = self._writer
        reasons: list[str] = []
        status = "ok"
        if self._state is _FAILED:
            status = "failing"
            reasons.append(f"writer thread died: {self._failure!r}")
        if self._lock_lost:
            status = "failing"
            reasons.append(f"lock {self._file_lock.path} lost")
        if w.destination is Destination.STDOUT:
            status = "failing"
            reasons.append("emergency path: records go to stdout only")
        elif w.destination is Destination.SPOOL:
            status = "degraded" if status == "ok" else status
            reasons.append(f"primary unavailable, spooling ({w.counters.last_error})")
        storage = self.storage
        if storage is not None:
            if storage.space in ("warning", "critical"):
                status = "degraded" if status == "ok" else status
                reasons.append(f"free space {storage.space}")
            if storage.volatile_reason is not None:
                status = "degraded" if status == "ok" else status
                reasons.append(f"volatile storage: {storage.volatile_reason}")
            if not storage.writable and w.destination is Destination.PRIMARY:
                status = "degraded" if status == "ok" else status
                reasons.append(f"write probe failed: {storage.probe_error}")
        warnings: list[str] = []
        if self._clock_problem is not None:
            text = f"clock: {self._clock_problem}"
            warnings.append(text)
            if self.config.clock_required:
                status = "degraded" if status == "ok" else status
                reasons.append(text)
        lost = self._emergency.lost
        if lost:
            status = "failing"
            reasons.append(f"{lost} records lost (emergency output full or broken)")
        if w.primary.poisoned is not None:
            reasons.append(f"primary untrusted after a failed write or sync: {w.primary.poisoned}")
        untrusted = tuple(a.name or "" for a in w.set_aside if a.reason == "untrusted")
        corrupt = tuple(
            a.name or str(self.path.name) for a in w.set_aside if a.reason != "untrusted"
        )
        if corrupt:
            status = "failing"
            reasons.append(
                "corrupt: " + ", ".join(corrupt) + " (confirmed records damaged or missing; "
                "kept untouched, see docs/operations.md)"
            )
        with self._durable:
            unrecovered = tuple(self._stdout_ranges)
        if unrecovered:
            status = "degraded" if status == "ok" else status
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
            destination=w.destination.value,
            last_seq=self.last_seq,
            durable_seq=self._durable_seq,
            queued=len(self._queue),
            stdout_records=w.counters.stdout_records,
            unsequenced=self.unsequenced,
            lost=lost,
            warnings=tuple(warnings),
            unrecovered=unrecovered,
            untrusted=untrusted,
            corrupt=corrupt,
        )

    def status(self) -> dict[str, Any]:
        """One snapshot of everything the service, its status page and the metrics show."""
        w = self._writer
        c = w.counters
        cp = w.checkpointer
        storage = self.storage
        health = self.health()
        return {
            "path": str(self.path),
            "stream": self.stream,
            "health": {
                "status": health.status,
                "reasons": list(health.reasons),
                "warnings": list(health.warnings),
            },
            "integrity": {
                "primary_trusted": w.primary.poisoned is None,
                "untrusted_files": list(health.untrusted),
                "corrupt_files": list(health.corrupt),
                "unrecovered": [list(r) for r in health.unrecovered],
                "unrecovered_records": sum(b - a + 1 for a, b in health.unrecovered),
            },
            "ready": health.destination != "stdout"
            and not self._lock_lost
            and self._state is _OPEN,
            "writer_alive": self._writer.thread.is_alive(),
            "last_seq": self.last_seq,
            "durable_seq": self._durable_seq,
            "queued": len(self._queue),
            "queued_bytes": self._queue.bytes,
            "queue_capacity": self._maxsize,
            "destination": w.destination.value,
            "checkpoint": {
                "enabled": cp is not None,
                "signed": cp is not None and cp.signer is not None,
                "written": cp.written if cp is not None else 0,
                "age_s": (time.monotonic() - cp.last) if cp is not None else None,
                "sidecar": str(cp.sidecar.path) if cp is not None else None,
                "sidecar_failures": cp.sidecar_failures if cp is not None else 0,
            },
            "storage": None
            if storage is None
            else {
                "directory": storage.directory,
                "container": storage.container,
                "mount": None if storage.mount is None else storage.mount.mount_point,
                "fstype": None if storage.mount is None else storage.mount.fstype,
                "persistent": storage.persistent,
                "free_bytes": storage.free_bytes,
                "total_bytes": storage.total_bytes,
                "space": storage.space,
                "writable": storage.writable,
            },
            "clock": {**self.clock.to_record(), "problem": self._clock_problem},
            "records": {
                "primary": c.primary_records,
                "spool": c.spool_records,
                "spool_pending": c.spool_pending,
                "stdout": c.stdout_records,
                "unsequenced": self.unsequenced,
                "lost": self._emergency.lost,
                "replayed": c.replayed_records,
            },
            "write_failures": {
                **c.failures_by,
                "checkpoint_sidecar": cp.sidecar_failures if cp else 0,
            },
            "bytes_written": c.bytes_written,
            "throttled": self.throttled,
            "schema_warnings": self.schema_warnings,
            "policy_violations": self.policy_violations,
        }

    def reopen(self) -> None:
        """Ask the writer to reopen the path (SIGUSR1/SIGHUP after logrotate): if the
        file was rotated away it is sealed and the chain continues in the new file.
        Safe to call from a signal handler (it only sets a flag)."""
        self._writer.reopen_requested = True
        self._queue.kick()

    def rotate(self) -> None:
        """Ask the writer to rotate now (built-in rotation): seal, rename, start anew."""
        self._writer.rotate_requested = True
        self._queue.kick()

    @property
    def counters(self) -> Any:
        """What the writer did (records per destination, failures, replays, ...)."""
        return self._writer.counters

    # -- closing --------------------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Drain the queue, write a ``stop`` record, sync, stop the writer. Idempotent."""
        with self._lock:
            if self._state is not _OPEN:
                return
            self._state = _CLOSING
            self._queue.shut()  # producers are refused from here; waiters wake
            seq = self._enqueue_control("stop", self._identity(), force=True)
        self._queue.kick()
        self._writer.thread.join(timeout)
        if self._owns_emergency:
            self._emergency.close(timeout=min(timeout, 5.0))
        else:
            self._emergency.drain(timeout=min(timeout, 5.0))
        _LIVE.discard(self)
        if self._writer.thread.is_alive() or self._handled_seq < seq:
            logger.critical(
                "audit log %s closed with seq %d-%d not written (writer stuck)",
                self.path,
                self._handled_seq + 1,
                seq,
            )
        self._state = _CLOSED
        self._file_lock.release()

    @property
    def closed(self) -> bool:
        return self._state is not _OPEN

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def stall_writer(self) -> Iterator[None]:
        """Test seam: hold the writer thread still (a slow disk) inside the block."""
        self._writer.gate.clear()
        self._queue.kick()
        if not self._writer.parked.wait(5.0):
            raise AuditStateError("the writer did not stop within 5 s")
        try:
            yield
        finally:
            self._writer.gate.set()

    def _after_fork_in_child(self) -> None:
        self._state = _FORKED
        # A fresh, shut queue: the parent's may have been locked by a thread that does
        # not exist in the child.
        self._queue = Queue(1, 1)
        self._queue.shut()
        self._lock = threading.Lock()
        self._file_lock.abandon()
        self._writer.forget()

    def __repr__(self) -> str:
        return (
            f"AuditLog({str(self.path)!r}, last_seq={self.last_seq}, durable={self._durable_seq})"
        )


def _close_all_at_exit() -> None:
    for log in list(_LIVE):
        if log._owner_pid == os.getpid():
            log.close()


def _mark_forked() -> None:
    for log in list(_LIVE):
        log._after_fork_in_child()


atexit.register(_close_all_at_exit)
os.register_at_fork(after_in_child=_mark_forked)
