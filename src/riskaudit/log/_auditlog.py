"""AuditLog: the public face of the engine, which wires its parts and nothing more.

The parts, each in its own module, depend one way (top to bottom):

* :class:`~riskaudit.log._handoff.HandOff` — producers' records into the native queue,
  and the full-queue policy;
* :class:`~riskaudit.log._writer.Writer` — the thread that owns the files, the chain
  head and the destinations;
* the native ``Watermark`` — what is handled and where each range went; ``flush()``
  and ``durable=True`` wait on it without the GIL;
* :class:`~riskaudit.log._monitor.Monitor` — the lock file, the clock, the volume;
* :mod:`riskaudit.log._status` — health and status, computed from their facts.

``append`` does the least it can on the producer's thread: encode the event body (which
also snapshots it and rejects what JSON cannot hold), check the policies that apply,
and one native call that queues it.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import orjson

from riskaudit._native import NEEDS_CHECK, STDOUT, Batch, Tally, Watermark
from riskaudit._version import __version__
from riskaudit.clock import ClockReader, read_clock
from riskaudit.config import AuditConfig
from riskaudit.errors import (
    AuditClosedError,
    AuditConfigError,
    AuditDegradedError,
    AuditFlushTimeoutError,
    AuditForkedError,
    AuditPolicyError,
    AuditSchemaError,
    AuditStateError,
    AuditStorageError,
)
from riskaudit.events import RiskEvent
from riskaudit.format import (
    CENTRAL_MARK,
    FORMAT,
    control_mid,
    encode_event,
    encode_event_body,
    ensure_dir,
    sidecar_path,
)
from riskaudit.integrity import load_signer
from riskaudit.log._checkpoint import Checkpointer
from riskaudit.log._counters import Timings, WriterCounters, samples, take
from riskaudit.log._destinations import SetAside
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.log._handoff import HandOff
from riskaudit.log._monitor import Monitor
from riskaudit.log._startup import open_log
from riskaudit.log._status import (
    Facts,
    Health,
    LogState,
    LogStatus,
    build_health,
    build_status,
)
from riskaudit.log._volume import StorageReport
from riskaudit.log._writer import Writer, WriterSetup
from riskaudit.policy import ACTOR_TYPE_NAMES, SchemaProblem, actor_problem, schema_problem
from riskaudit.redact import Redactor, load_key

logger = logging.getLogger("riskaudit")

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
        self._lock = threading.Lock()  # state changes (close, fork) only
        self._state = LogState.CLOSED
        self._failure: BaseException | None = None
        self._released = False  # a failed log's lock, released by close()
        self._owner_pid = os.getpid()
        self._tally = Tally()
        self._append_samples = samples()
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
        if cfg.switch_interval is not None:
            sys.setswitchinterval(cfg.switch_interval)  # opt-in interpreter tuning

        self._monitor = Monitor(cfg, self.path, clock if clock is not None else read_clock)
        self._monitor.check_storage_at_start()
        # A bad key stops start-up before anything is opened.
        self._signer = load_signer(cfg.signing_key_file) if cfg.signing_key_file else None
        self._owns_emergency = emergency is None
        self._emergency = emergency if emergency is not None else EmergencyOutput()
        self._handoff = HandOff(cfg, self._emergency, self.path, self._raise_state)
        self._push_event = self._handoff.queue.push_event
        self._push_limit = self._handoff.backlog_limit
        self._push_bytes = self._handoff.normal_bytes
        self._monitor.handoff = self._handoff
        try:
            self._open(cfg)
        except BaseException:
            if self._owns_emergency:
                self._emergency.close(timeout=1.0)
            raise
        self._state = LogState.OPEN
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
        file_lock = self._monitor.take_lock(cfg.spool_dir)
        try:
            sidecar = cfg.checkpoint_path or sidecar_path(self.path)
            opened = open_log(self.path, cfg.spool_dir, sidecar)
            self.stream = opened.stream
            self.repaired = opened.repaired
            checkpointer = None
            if cfg.checkpoint_interval > 0:
                checkpointer = Checkpointer(
                    stream=self.stream,
                    signer=self._signer,
                    sidecar=sidecar,
                    interval=cfg.checkpoint_interval,
                    every_records=cfg.checkpoint_records,
                )
                # The start record carries this reading: chained again only once it changes.
                checkpointer.clock_chained(self._monitor.clock_fields())
                self._monitor.on_clock = checkpointer.clock_read
            self._watermark = Watermark(opened.last_seq)
            self._handoff.start_at(opened.last_seq + 1)
            setup = WriterSetup(
                last_seq=opened.last_seq,
                last_hash=opened.last_hash,
                primary_last=opened.primary_last,
                stream=self.stream,
                retry_max=cfg.retry_max,
                rotation=cfg.rotation,
                ring_limit=cfg.truncate_ring,
                checkpointer=checkpointer,
            )
            self._writer = Writer(
                setup,
                self._handoff,
                self._watermark,
                self._monitor,
                (opened.primary, opened.spool),
                self._emergency,
                on_durable=self._on_durable,
                on_died=self._writer_died,
                tally=self._tally,
            )
            if opened.aside is not None:
                self._writer.set_aside.append(opened.aside)
            try:
                self._start_writer_state(opened.primary_writable, opened.spool_last)
                self._write_opening_records(opened.last_seq, opened.aside, opened.stdout_gap)
            except BaseException:
                self._writer.close_files()
                raise
        except BaseException:
            file_lock.release()
            raise

    def _start_writer_state(self, primary_writable: bool, spool_last: int) -> None:
        w = self._writer
        if primary_writable:
            if spool_last:
                w.replay_spool(w.primary_last)
            return
        w.start_degraded()

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
        monitor = self._monitor
        start = {**self._identity(), "clock": monitor.clock.to_record()}
        items.append((seq, now, ("start", start)))
        if monitor.clock_problem is not None:
            seq += 1
            items.append((seq, now, ("clock", monitor.clock_fields())))
            logger.warning("system clock: %s (%s)", monitor.clock_problem, monitor.clock)
        self._handoff.start_at(seq + 1)
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
        # 1 call in 1024 is timed: often enough for the histogram, rarely enough that
        # the timing itself stays out of the p99 it is meant to show.
        started = time.perf_counter() if not n & 1023 else 0.0
        encoded = encode_event(event, self._redactor, principal)
        # One native call: the core queues the event when its type's checks plainly
        # pass (it says -3 when Python must look first) and there is room.
        seq: int | None = self._push_event(
            encoded, event.event_type, event.data, self._push_limit, self._push_bytes
        )
        if seq is not None and seq <= 0:
            seq = self._append_slowly(event, encoded[1:], seq)
        if started:
            self._append_samples.append(time.perf_counter() - started)
        return seq

    def _append_slowly(self, event: RiskEvent, body: bytes, pushed: int) -> int | None:
        """The schema and actor rules when the core asked for them, then the hand-off
        (its push, and its policy when the queue holds its backlog limit or more)."""
        if pushed == NEEDS_CHECK:
            if self._schema_policy and (problem := schema_problem(event)) is not None:
                self._schema_violation(event, problem)
            if self._actor_policy and event.event_type._name_ in ACTOR_TYPE_NAMES:
                rule = actor_problem(event)
                if rule is not None:
                    return self._actor_violation(event, body, *rule)
        return self._hand_off(event, body)

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
        return self._handoff.put(body, event.risk_reducing)

    @property
    def event_counts(self) -> dict[tuple[str, str], int]:
        """Events written, by (event_type, priority): counted by the writer in the
        native chain, so ``append`` does not pay for it."""
        return {(t.decode(), p.decode()): n for t, p, n in self._tally.by_kind()}

    @property
    def last_by_source(self) -> dict[str, int]:
        """The newest acceptance time (ns) of an event, per source."""
        out: dict[str, int] = {}
        for raw, ts in self._tally.last_by_source():
            try:
                source = orjson.loads(b'"' + raw + b'"')
            except orjson.JSONDecodeError:
                source = raw.decode("utf-8", "replace")
            out[str(source)] = max(ts, out.get(str(source), 0))
        return out

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
            seq = self._handoff.control("policy_violation", fields)
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
        self._handoff.control("policy_violation", fields)
        logger.warning("event %s flagged: %s", event.event_id, detail)
        return event_seq

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
            if self._state is not LogState.OPEN:
                self._raise_state()
        return self._handoff.control(kind, fields)

    def _raise_state(self) -> NoReturn:
        if self._state is LogState.FORKED or os.getpid() != self._owner_pid:
            raise AuditForkedError(
                f"this AuditLog belongs to process {self._owner_pid}; a forked child must "
                "open its own log"
            )
        if self._state is LogState.FAILED:
            raise AuditStateError(f"the writer of {self.path} died: {self._failure!r}")
        raise AuditClosedError(f"audit log {self.path} is closed")

    # -- durability -----------------------------------------------------------------

    @property
    def durable_seq(self) -> int:
        """The durable watermark: the newest ``seq`` synced to the primary or spool."""
        return self._watermark.durable

    @property
    def last_seq(self) -> int:
        """The last ``seq`` handed out (it may not be durable yet)."""
        return self._handoff.last_seq

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
            if self._state is not LogState.OPEN and self._state is not LogState.CLOSING:
                if self._state is LogState.CLOSED and self._watermark.handled >= self.last_seq:
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
        lost = self._watermark.ranges(STDOUT, low, high)
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
        watermark = self._watermark
        if watermark.handled >= seq:
            return
        self._handoff.hurry()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if watermark.wait(seq, max(remaining, 0.0)):
                return
            if self._state is LogState.FAILED or self._state is LogState.FORKED:
                self._raise_state()
            if deadline is not None and time.monotonic() >= deadline:
                raise AuditFlushTimeoutError(
                    f"seq {watermark.handled + 1}-{seq} not durable after {timeout:g}s",
                    durable_seq=watermark.durable,
                    target_seq=seq,
                )

    def _writer_died(self, exc: BaseException) -> None:
        """On the writer thread as it dies: refuse new events, wake every waiter, and
        send what was queued out as unsequenced lines."""
        logger.critical("riskaudit writer thread died: %r", exc)
        self._failure = exc
        self._state = LogState.FAILED
        self._handoff.shut()
        self._watermark.stop()
        self._handoff.spill("audit writer died")

    # -- state ----------------------------------------------------------------------

    def health(self) -> Health:
        """ok / degraded / failing, with the reasons, computed from facts."""
        return build_health(self._facts())

    def status(self) -> LogStatus:
        """One snapshot of everything the service, its status page and the metrics show."""
        return build_status(self._facts())

    def _facts(self) -> Facts:
        return Facts(
            path=self.path,
            stream=self.stream,
            state=self._state,
            failure=self._failure,
            writer=self._writer,
            monitor=self._monitor,
            handoff=self._handoff,
            watermark=self._watermark,
            emergency_lost=self._emergency.lost,
            clock_required=self.config.clock_required,
            schema_warnings=self.schema_warnings,
            policy_violations=self.policy_violations,
        )

    @property
    def storage(self) -> StorageReport | None:
        """The last storage report (free space, mount, persistence)."""
        return self._monitor.storage

    @property
    def unsequenced(self) -> int:
        """Events that went out as unsequenced emergency lines (queue full, dead writer)."""
        return self._handoff.unsequenced_count

    @property
    def throttled(self) -> int:
        """Appends that waited for the writer past the backlog limit."""
        return self._handoff.throttled

    @property
    def refused(self) -> int:
        """Appends refused by a full queue under fail-closed."""
        return self._handoff.refused

    def reopen(self) -> None:
        """Ask the writer to reopen the path (SIGUSR1/SIGHUP after logrotate): if the
        file was rotated away it is sealed and the chain continues in the new file.
        Safe to call from a signal handler (it only sets a flag)."""
        self._writer.reopen_requested = True
        self._handoff.kick()

    def rotate(self) -> None:
        """Ask the writer to rotate now (built-in rotation): seal, rename, start anew."""
        self._writer.rotate_requested = True
        self._handoff.kick()

    @property
    def counters(self) -> WriterCounters:
        """What the writer did so far (records per destination, failures, replays,
        ...): a snapshot, taken anew at each read. While the core commits turns on its
        own, these catch up when the writer next runs Python (within half a second),
        and are complete once the log is closed; ``durable_seq`` is never behind."""
        return self._writer.counters.snapshot()

    def take_timings(self) -> Timings:
        """The timing samples since the last call, removed (the metrics observe each
        once); at most the last ``SAMPLES`` (4,096) of each kind are kept in between."""
        c = self._writer.counters
        return Timings(
            append=take(self._append_samples),
            durable=take(c.durable_latency),
            sync=take(c.sync_seconds),
        )

    # -- closing --------------------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Drain the queue, write a ``stop`` record, sync, stop the writer. Idempotent.

        After the writer died (``failed``) it flushes the emergency output and releases
        the lock, so the process can open the log again."""
        with self._lock:
            if self._state is LogState.FAILED and not self._released:
                self._released = True
                self._writer.thread.join(timeout)
                self._release(timeout)
                return
            if self._state is not LogState.OPEN:
                return
            self._state = LogState.CLOSING
            self._handoff.shut()  # producers are refused from here; waiters wake
            seq = self._handoff.control("stop", self._identity(), force=True)
        self._writer.stopping = True
        self._handoff.kick()
        self._writer.thread.join(timeout)
        if self._writer.thread.is_alive() or self._watermark.handled < seq:
            logger.critical(
                "audit log %s closed with seq %d-%d not written (writer stuck)",
                self.path,
                self._watermark.handled + 1,
                seq,
            )
        self._state = LogState.CLOSED
        self._release(timeout)

    def _release(self, timeout: float) -> None:
        """The emergency output flushed, the lock released: nothing more of this log."""
        if self._owns_emergency:
            self._emergency.close(timeout=min(timeout, 5.0))
        else:
            self._emergency.drain(timeout=min(timeout, 5.0))
        _LIVE.discard(self)
        if self._monitor.lock is not None:
            self._monitor.lock.release()

    @property
    def closed(self) -> bool:
        return self._state is not LogState.OPEN

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
        self._handoff.kick()
        if not self._writer.parked.wait(5.0):
            raise AuditStateError("the writer did not stop within 5 s")
        try:
            yield
        finally:
            self._writer.gate.set()

    def _after_fork_in_child(self) -> None:
        self._state = LogState.FORKED
        # Fresh native objects: the parent's locks may be held by threads that do not
        # exist in the child.
        self._handoff.forget()
        self._push_event = self._handoff.queue.push_event
        self._tally = Tally()  # the parent's lock may be held by its writer
        self._watermark = Watermark(0)
        self._watermark.stop()
        self._lock = threading.Lock()
        if self._monitor.lock is not None:
            self._monitor.lock.abandon()
        self._writer.forget()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, last_seq={self.last_seq}, durable={self.durable_seq})"


def _close_all_at_exit() -> None:
    for log in list(_LIVE):
        if log._owner_pid == os.getpid():
            log.close()


def _mark_forked() -> None:
    for log in list(_LIVE):
        log._after_fork_in_child()


atexit.register(_close_all_at_exit)
os.register_at_fork(after_in_child=_mark_forked)
