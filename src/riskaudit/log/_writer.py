"""The writer thread: it alone owns the files, the chain state and the destinations.

Each turn it takes everything queued, glues ``seq``/``prev``/``ts`` onto the bodies the
producers encoded, hashes each line into the next one's ``prev`` and makes the batch
durable in one system call where the kernel allows it (group commit). Only then does
the durable watermark move and ``flush()`` callers wake.

Destinations, in order of preference, all receiving the same chained bytes:

1. the primary file;
2. the spool directory (another volume), synced like the primary;
3. stdout, one ``AUDIT_EMERGENCY`` line per record (not durable: ``recover`` puts the
   records back).

A write or sync error on the primary poisons that file (it is trusted only up to the
last offset a successful sync covered, and never appended to again) and sends the batch
to the next destination at once; the primary is retried with capped exponential
backoff. When it works again the poisoned file is set aside untouched (found through
its descriptor if it was renamed meanwhile, copied out of it if it was deleted), under
a sealed segment name that ends at its last trusted record, and the chain continues in
a new file: the replayed spool records, the ``gap`` record if any, then a ``segment``
record naming the old file and its trusted length — a record *owed* to the durable log
(:attr:`Writer.owed`), never sent to stdout with the records queued meanwhile. The
spool is replayed into the primary in ``seq`` order, synced, read back and compared
byte for byte before the spool files are deleted. Records that
reached only stdout leave a hole in the durable chain, which the writer names with a
``gap`` record once one is durable — a gap record that itself fails is folded into the
next one, so every stdout-only range is named, however many failures come in a row.

The GIL matters here: every blocking call releases it, and taking it back from a
producer or a host thread that never pauses costs up to a whole switch interval (5 ms
by default). So while the primary takes every write, the Rust core runs whole commit
turns without the GIL (``commit_turns``: take the queue, build each line and its
SHA-256, one ``pwritev2(RWF_DSYNC)``, mark the watermark), as many as it can before
something needs this thread (a periodic check, a kick, a checkpoint, a rotation, an
``on_durable`` hook, an error); the Python here then books what the core did, once.
Everything else — the spool, stdout, rewrites, rescue, replays — takes the Python path
(:meth:`Writer.chain` and :meth:`Writer.commit`), with the same core calls one at a time.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from riskaudit._native import (
    COMMIT_PANIC,
    FAILED,
    PRIMARY,
    SPOOL,
    STDOUT,
    Batch,
    Chunk,
    Tally,
    Watermark,
    begin_section,
    commit_turns,
    end_section,
)
from riskaudit._native import chain as native_chain
from riskaudit.errors import AuditNativeError
from riskaudit.format import (
    atomic_write,
    control_mid,
    dsync_works,
    seal_as_segment,
    split_head,
    truncated_path,
    ts_ns_of,
)
from riskaudit.log._chain_end import Tail, validate_tail
from riskaudit.log._checkpoint import Checkpointer, unsigned_fields
from riskaudit.log._counters import WriterTally
from riskaudit.log._destinations import (
    AppendFile,
    Identity,
    SetAside,
    Spool,
    replay_lines,
    set_aside,
)
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.log._handoff import HandOff
from riskaudit.log._monitor import Monitor
from riskaudit.log._rotation import RecentRecords
from riskaudit.log._startup import leftover_spool_files
from riskaudit.log._volume import probe_write
from riskaudit.settings import Rotation

logger = logging.getLogger("riskaudit.writer")

CHUNK_BYTES = 4 << 20
RETRY_MIN = 0.05
IDENTITY_EVERY = 0.5


class Destination(StrEnum):
    """Where records go now: the primary file, the spool, or (the last resort) stdout."""

    PRIMARY = "primary"
    SPOOL = "spool"
    STDOUT = "stdout"


#: How each destination is told to the watermark.
_OUTCOME = {Destination.PRIMARY: PRIMARY, Destination.SPOOL: SPOOL, Destination.STDOUT: STDOUT}


@dataclass(frozen=True, slots=True)
class WriterSetup:
    """What the writer is given at start: where the chain stands and how to go on."""

    last_seq: int
    last_hash: bytes
    #: The last ``seq`` durable in the primary (spool records after it are replayed).
    primary_last: int
    stream: str
    retry_max: float
    rotation: Rotation
    ring_limit: int
    checkpointer: Checkpointer | None = None


class Writer:
    """Chain state, destinations and the thread body (:meth:`run`).

    It takes records from the hand-off, marks what it committed on the watermark, and
    asks the monitor to look around between batches; it knows nothing of ``AuditLog``.
    ``on_died`` is told if the thread ends by an exception.
    """

    #: Test seam: False sends every turn through the Python path, so a test that
    #: replaces a Python write function (``AppendFile.write``, ``write_durably``)
    #: sees every write; the core's own turns are tested through real faults.
    native_commit = True

    def __init__(
        self,
        setup: WriterSetup,
        handoff: HandOff,
        watermark: Watermark,
        monitor: Monitor,
        files: tuple[AppendFile, Spool | None],
        emergency: EmergencyOutput,
        *,
        on_durable: Callable[[int], None] | None = None,
        on_died: Callable[[BaseException], None] | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.handoff = handoff
        self.watermark = watermark
        self.monitor = monitor
        self._on_durable = on_durable
        self._on_died = on_died
        self._tally = tally
        primary, spool = files
        last_seq = setup.last_seq
        self.retry_max = setup.retry_max
        #: Set by close(): drain, seal, stop.
        self.stopping = False
        self.primary = primary
        self.spool = spool
        self.emergency = emergency
        self.last_seq = last_seq
        self.prev = setup.last_hash
        self.destination = Destination.PRIMARY
        #: The last ``seq`` durable in the primary (spool records after it are replayed).
        self.primary_last = setup.primary_last
        #: Files set aside (untrusted, corrupt) by this writer and at start-up.
        self.set_aside: list[SetAside] = []
        self._backlog: list[tuple[int, bytes]] = []
        self._backlog_first = 0
        self._backlog_first_ts = 0
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self._next_identity = 0.0
        self._stdout_first: int | None = None  # the open stdout-only range, if any
        #: Records of the writer's own that must reach a durable destination (a
        #: ``segment`` naming a file set aside, a ``repair``): written right after the
        #: replayed spool records (and the gap record, which must follow its hole),
        #: never with records that go to stdout, and written again until durable.
        self.owed: list[tuple[str, dict[str, Any]]] = []
        self._spool_announce = True  # log the switch to the spool once per episode
        self.counters = WriterTally()
        self.checkpointer = setup.checkpointer
        self.stream = setup.stream
        self.ring = RecentRecords(setup.ring_limit)
        self.rotation = setup.rotation
        #: Test seam: the wall clock that time-based rotation follows.
        self.wall = time.time
        self._next_rotation = math.inf
        self._rotate_pending = False
        self.reopen_requested = False
        self.rotate_requested = False
        #: (seq, ts_ns) of the active file's first record, for the segment's name.
        self.file_first: tuple[int, int] | None = None
        self.note_file_start()
        #: Test seam: while this event is clear, the writer waits before each turn.
        self.gate = threading.Event()
        self.gate.set()
        self.parked = threading.Event()
        self.thread = threading.Thread(target=self.run, name="riskaudit-writer", daemon=True)

    # -- chaining -----------------------------------------------------------------

    def chain(self, batch: Batch) -> None:
        """Chain a batch into the backlog, in ``seq`` order (native, without the GIL).

        A panic of the core (AuditNativeError) ends the writer; the batch's events go
        out as unsequenced emergency lines first, so none is only in memory."""
        n = len(batch)
        if not n:
            return
        try:
            self.prev, chunks = native_chain(batch, self.prev, CHUNK_BYTES, self._tally)
        except AuditNativeError:
            for body in batch.event_bodies():
                self.handoff.unsequenced(body, "audit writer failed")
            raise
        if not self._backlog:
            self._backlog_first = batch.first_seq or 0
            self._backlog_first_ts = batch.first_ts or 0
        if self.checkpointer is not None:
            self.checkpointer.records += n
        self._backlog.extend(chunks)
        self.last_seq = batch.last_seq or self.last_seq

    def control(self, seq: int, kind: str, fields: dict[str, Any]) -> bytes:
        """Chain one control record now (the writer's own records); return its line."""
        mid, has_ts = control_mid(kind, fields)
        self.chain(Batch.of_controls([(seq, time.time_ns(), mid, has_ts)]))
        return self._backlog[-1][1].rsplit(b"\n", 2)[-2]

    # -- committing ---------------------------------------------------------------

    def commit(self) -> bool:
        """Send the backlog to the best destination that takes it; whether that one was
        durable (True too when there was nothing to send)."""
        if not self._backlog:
            return True
        chunks = [data for _last, data in self._backlog]
        first, last = self._backlog_first, self._backlog[-1][0]
        count = last - first + 1
        size = sum(len(c) for c in chunks)
        started = time.perf_counter()
        if self.destination is Destination.PRIMARY:
            try:
                if self.primary.shrunk() is not None:
                    self._rewrite_after_truncation()
                if self.primary.offset == 0:
                    self.file_first = (first, self._backlog_first_ts or time.time_ns())
                self.primary.write(chunks)
            except OSError as exc:
                self._primary_failed(exc)
            else:
                self._primary_committed(first, last, self._backlog, size)
                self._synced(time.perf_counter() - started, size, time.time_ns())
                self._done(first, last)
                return True
        if self.destination is Destination.SPOOL and self.spool is not None:
            try:
                self.spool.write(chunks, first)
            except OSError as exc:
                self._failed("spool", exc)
                self.spool.end_episode()
                self._switch_to(Destination.STDOUT, f"spool write failed: {exc}")
            else:
                if self._spool_announce:
                    logger.warning(
                        "audit records now go to the spool %s (primary %s unavailable)",
                        self.spool.directory,
                        self.primary.path,
                    )
                    self._spool_announce = False
                self.counters.spool_records += count
                self.counters.spool_pending += count
                self._synced(time.perf_counter() - started, size, time.time_ns())
                self._done(first, last)
                return True
        self._to_stdout(chunks, first, last)
        return False

    def _to_stdout(self, chunks: list[bytes], first: int, last: int) -> None:
        if self._stdout_first is None:
            self._stdout_first = first
            logger.error(
                "audit log cannot write to %s%s; falling back to stdout "
                "(AUDIT_EMERGENCY lines, recover them with `riskaudit recover`)",
                self.primary.path,
                f" nor the spool {self.spool.directory}" if self.spool else "",
            )
        for data in chunks:
            for line in data.split(b"\n")[:-1]:
                self.emergency.put(line)
        self.counters.stdout_records += last - first + 1
        self._backlog.clear()
        self.counters.batches += 1
        self._mark(first, last, Destination.STDOUT)

    def reopen_stdout_range(self, first: int) -> None:
        """Records from ``first`` on are named by no durable ``gap`` record yet (a gap
        record that reached only stdout): the next gap record names them."""
        if self._stdout_first is None or first < self._stdout_first:
            self._stdout_first = first

    def _primary_committed(
        self, first: int, last: int, chunks: Sequence[tuple[int, bytes | Chunk]], size: int
    ) -> None:
        self.counters.primary_records += last - first + 1
        self.primary_last = last
        self.ring.add(first, chunks)
        rot = self.rotation
        if rot.max_bytes and self.primary.offset >= rot.max_bytes:
            self._rotate_pending = True

    def _primary_failed(self, exc: OSError) -> None:
        self.primary.poison(str(exc))
        self._failed("primary", exc)
        self._fall_back(f"primary write failed: {exc}")
        self._schedule_retry()

    def _synced(self, seconds: float, size: int, done_ns: int) -> None:
        c = self.counters
        c.sync_seconds.append(seconds)
        c.bytes_written += size
        if self._backlog_first_ts:
            c.durable_latency.append((done_ns - self._backlog_first_ts) / 1e9)

    def _done(self, first: int, last: int) -> None:
        self._backlog.clear()
        self.counters.batches += 1
        self._mark(first, last, self.destination)

    def _mark(self, first: int, last: int, where: Destination) -> None:
        """The one place a committed range is told: the watermark keeps it with where
        it went (per-caller durability reads it), waiters wake without the GIL."""
        self.watermark.mark(first, last, _OUTCOME[where])
        if where is not Destination.STDOUT and self._on_durable is not None:
            self._on_durable(last)

    # -- the core's turns ---------------------------------------------------------------

    def _native_turns(self) -> bool:
        """Let the core commit turns to the primary (see the module's text); book what
        it did, then finish a batch it handed back the Python way. Whether it took any
        record.

        The watermark moves in the core as each turn is durable; the counters, the ring
        and ``primary_last`` catch up here when the call returns (at most the periodic
        checks' half second later); other threads read the counters as snapshots."""
        primary = self.primary
        assert primary.fd is not None
        cp = self.checkpointer
        every = cp.every_records if cp is not None else 0
        was_empty = primary.offset == 0
        prev, offset, turns, pending = commit_turns(
            self.handoff.queue,
            self.watermark,
            self._tally,
            self.prev,
            CHUNK_BYTES,
            primary.fd,
            primary.offset,
            self.handoff.wait(closing=False),
            self._next_identity,
            1 if self._on_durable is not None else 0,
            max(1, every - cp.records) if cp is not None and every else 0,
            self.rotation.max_bytes,
            dsync_works(),
            max(0, self.ring.limit),
        )
        self.prev = prev
        for first, last, first_ts, size, sync_ns, done_ns, kept in turns:
            if was_empty:
                self.file_first = (first, first_ts)
                was_empty = False
            primary.offset += size
            self._chained(first, first_ts, last)
            self._primary_committed(first, last, kept, size)
            self._synced(sync_ns / 1e9, size, done_ns)
            self.counters.batches += 1
            if self._on_durable is not None:
                self._on_durable(last)  # the core marked the watermark already
        assert primary.offset == offset, (primary.offset, offset)
        if pending is None:
            return bool(turns)
        if len(pending) == 4:  # CHAIN_PANIC: the batch comes back unchained
            _status, _errno, message, batch = pending
            for body in batch.event_bodies():
                self.handoff.unsequenced(body, "audit writer failed")
            raise AuditNativeError(message)
        status, err, strerror, first, first_ts, last, chunks = pending
        self._chained(first, first_ts, last)
        self._backlog.extend(chunks)
        if status == COMMIT_PANIC:
            raise AuditNativeError(strerror)  # run() spills the backlog to stdout
        if was_empty:
            self.file_first = (first, first_ts)
        if status == FAILED:
            self._primary_failed(OSError(err, strerror))
        self.commit()  # SHRUNK: rewrite, then write; FAILED: the next destination
        return True

    def _chained(self, first: int, first_ts: int, last: int) -> None:
        """Book a batch the core chained (what :meth:`chain` does for its own)."""
        if not self._backlog:
            self._backlog_first = first
            self._backlog_first_ts = first_ts
        if self.checkpointer is not None:
            self.checkpointer.records += last - first + 1
        self.last_seq = last

    def _switch_to(self, destination: Destination, reason: str) -> None:
        """The one place the destination changes (the log line says why)."""
        if destination is not self.destination:
            logger.info(
                "audit destination %s -> %s: %s",
                self.destination.value,
                destination.value,
                reason,
            )
        self.destination = destination

    def _fall_back(self, reason: str) -> None:
        """The primary failed: the spool if there is one, else stdout."""
        self._switch_to(Destination.SPOOL if self.spool else Destination.STDOUT, reason)

    def _failed(self, what: str, exc: OSError) -> None:
        self.counters.write_failures += 1
        self.counters.failures_by[what] = self.counters.failures_by.get(what, 0) + 1
        self.counters.last_error = f"{what}: {exc}"
        logger.error("audit %s write failed: %s", what, exc)

    def start_degraded(self) -> None:
        """The primary cannot be written at start: begin on the spool (or stdout) and
        retry the primary with backoff."""
        self._fall_back("the primary is not writable at start")
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        self._retry_delay = min(self.retry_max, max(RETRY_MIN, self._retry_delay * 2))
        self._retry_at = time.monotonic() + self._retry_delay

    # -- coming back ------------------------------------------------------------------

    def try_restore(self) -> None:
        """Retry the primary (then the spool): replay the spool, mark stdout holes."""
        now = time.monotonic()
        if self.destination is Destination.PRIMARY or now < self._retry_at:
            return
        try:
            self._restore_primary()
        except OSError as exc:
            self.counters.last_error = f"primary: {exc}"
            self._schedule_retry()
            logger.warning(
                "audit log %s still unavailable (%s); next retry in %.1fs",
                self.primary.path,
                exc,
                self._retry_delay,
            )
            if self.destination is Destination.STDOUT and self.spool is not None:
                self._try_spool_again()
            return
        logger.warning("audit log %s writable again; back on the primary", self.primary.path)
        self._retry_delay = 0.0
        self._switch_to(Destination.PRIMARY, "the primary takes writes again")
        self._spool_announce = True
        self._close_stdout_range()

    def _restore_primary(self) -> None:
        """Set a poisoned primary aside (wherever it is now), open the path, validate a
        file this writer did not write, replay the spool. Raises OSError."""
        primary = self.primary
        if primary.poisoned is not None and primary.is_open:
            self._set_aside_untrusted(None, f"a write or sync failed ({primary.poisoned})")
            self.primary = primary = AppendFile(primary.path)
        if (
            not primary.is_open
            or primary.poisoned is not None
            or primary.identity() is not Identity.OK
        ):
            created = primary.open(create=True)
            self.note_file_start()
            self.ring.clear()
            if not created and primary.offset:
                self._validate_unknown_file()
        self.replay_spool(self.primary_last)

    def _set_aside_untrusted(self, trusted: Tail | None, why: str) -> None:
        """Set the primary aside untouched, trusted up to ``trusted`` (None: up to its
        last successful sync), and owe the ``segment`` record that names it."""
        primary = self.primary
        aside = set_aside(primary, trusted, "untrusted")
        self.set_aside.append(aside)
        if aside.name is not None:
            self.owed.append(("segment", self.aside_fields(aside)))
        logger.error(
            "audit log %s: %s; the file is kept untouched as %s (trusted up to byte %d, "
            "seq %d) and the chain continues in a new file",
            primary.path,
            why,
            aside.name,
            aside.trusted_bytes,
            aside.last_seq,
        )

    def _validate_unknown_file(self) -> None:
        """A file this writer did not write (start-up found the volume read-only, or the
        path now names another file): validate its tail before appending, and cut a torn
        tail aside — the writer never appends after garbage."""
        primary = self.primary
        assert primary.fd is not None
        tail = validate_tail(primary.fd)
        spooled: list[int] = []
        if self.spool is not None:
            left = leftover_spool_files(primary.path, primary.fd, tail, self.spool)
            for f, exc in self.spool.delete(left):
                logger.error("cannot remove the replayed spool file %s: %s", f.path, exc)
            gone = {f.path for f in left}
            spooled = [f.first_seq for f in self.spool.files() if f.path not in gone]
        first_spooled = min(spooled, default=0)
        if first_spooled and tail.last_seq + (1 if tail.torn else 0) >= first_spooled:
            # Records the spool holds: the primary's copy is a batch whose write or sync
            # failed (the volume went read-only under it), never trusted.
            trusted = validate_tail(primary.fd, limit_seq=first_spooled - 1)
            self._set_aside_untrusted(
                trusted, f"it holds seqs the spool holds (from {first_spooled})"
            )
            primary.open(create=True)
            self.note_file_start()
            self.primary_last = trusted.last_seq
            return
        if tail.torn:
            kept = primary.repair(tail)
            logger.warning(
                "audit log %s had a torn tail: %d bytes kept in %s",
                primary.path,
                kept.cut_bytes,
                kept.kept_at,
            )
            self.owed.append(
                (
                    "repair",
                    {
                        "cut_bytes": kept.cut_bytes,
                        "cut_sha256": kept.cut_sha256,
                        "kept_at": kept.kept_at,
                    },
                )
            )
        if tail.last_seq != self.primary_last:
            logger.warning(
                "audit log %s ends at seq %d (expected %d): continuing from what it holds",
                primary.path,
                tail.last_seq,
                self.primary_last,
            )
        self.primary_last = tail.last_seq  # the file as it is now, never what it was

    def aside_fields(self, aside: SetAside) -> dict[str, Any]:
        """The ``segment`` record that names a file set aside, and what to trust of it."""
        fields: dict[str, Any] = {
            "stream": self.stream,
            "reason": aside.reason,
            "previous": aside.name,
            "previous_trusted_bytes": aside.trusted_bytes,
            "previous_last_seq": aside.last_seq,
        }
        if aside.missing_from is not None:
            fields["missing_through"] = aside.missing_from
        return fields

    def replay_spool(self, primary_last: int) -> None:
        """Append the spool's records newer than the primary's trusted head, sync, read
        them back and compare byte for byte; only then delete the spool files."""
        if self.spool is None:
            return
        files = self.spool.files()
        if not files:
            return
        self.spool.end_episode()
        lines: list[bytes] = []
        for f in files:
            for line in replay_lines(f.path, primary_last):
                head = split_head(line)
                if head is not None and (not lines or head[0] > self._seq_of(lines[-1])):
                    lines.append(line)
        if lines:
            data = b"".join(lines)
            if self.primary.offset == 0:
                self.file_first = (self._seq_of(lines[0]), time.time_ns())
            start = self.primary.offset
            self.primary.write([data])
            if self.primary.read_range(start, start + len(data)) != data:
                self.primary.offset = start  # those bytes are not trusted
                self.primary.poison("replayed records read back differently")
                raise OSError(errno.EIO, f"{self.primary.path}: replayed records read back wrong")
            last_replayed = self._seq_of(lines[-1])
            self.primary_last = last_replayed
            self.ring.add(last_replayed - len(lines) + 1, [(last_replayed, data)])
        self.counters.replayed_records += len(lines)
        left = self.spool.delete(files)
        self.counters.spool_pending = 0
        logger.warning(
            "replayed %d spool records into %s and removed %d spool files",
            len(lines),
            self.primary.path,
            len(files) - len(left),
        )
        for f, exc in left:
            logger.error(
                "cannot remove the replayed spool file %s (%s): left in place; every "
                "record in it is in the primary, and start-up compares it byte for byte",
                f.path,
                exc,
            )

    @staticmethod
    def _seq_of(line: bytes) -> int:
        head = split_head(line)
        assert head is not None
        return head[0]

    def _try_spool_again(self) -> None:
        """From stdout back to the spool, if a probe shows it takes writes again."""
        assert self.spool is not None
        if probe_write(self.spool.directory) is not None:
            return
        self._switch_to(Destination.SPOOL, "the spool takes writes again")
        self._close_stdout_range()

    def _close_stdout_range(self) -> None:
        """Back on a durable destination: write the records owed (:attr:`owed`) and,
        after records went only to stdout, the ``gap`` record that names them. The gap
        takes the next ``seq``; records queued meanwhile (lower ``seq``) still go to
        stdout, so the gap's ``prev`` is the hash of the last stdout-only record and the
        chain stays one line."""
        owed = list(self.owed)
        if self._stdout_first is None:
            if owed:
                items, seq = self.handoff.take_reserving(len(owed))
                if items:
                    self.chain(items)
                for i, (kind, fields) in enumerate(owed):
                    self.control(seq + i, kind, fields)
                if self.commit():
                    del self.owed[: len(owed)]
            return
        items, gap_seq = self.handoff.take_reserving(1 + len(owed))
        if items:
            self.chain(items)
            chunks = [data for _last, data in self._backlog]
            self._to_stdout(chunks, self._backlog_first, self._backlog[-1][0])
        first, last = self._stdout_first, self.last_seq
        self.control(
            gap_seq,
            "gap",
            {
                "first_seq": first,
                "last_seq": last,
                "records": last - first + 1,
                "destination": "stdout",
            },
        )
        for i, (kind, fields) in enumerate(owed):
            self.control(gap_seq + 1 + i, kind, fields)
        if not self.commit():
            # The gap record went to stdout too: the range stays open and the next gap
            # record names it whole, this one included; the owed records stay owed.
            return
        del self.owed[: len(owed)]
        self._stdout_first = None
        self.counters.gaps += 1
        logger.error(
            "audit log back on a durable destination: seq %d-%d went only to stdout "
            "(gap record %d); recover them with `riskaudit recover`",
            first,
            last,
            gap_seq,
        )

    # -- checkpoints ----------------------------------------------------------------

    def checkpoint(self) -> None:
        """Seal the chain head (when checkpoints are on)."""
        if self.checkpointer is not None:
            self._seal()

    def _seal(self, extra_seqs: int = 0) -> int:
        """A checkpoint record right after the chain head (everything queued is chained
        first), committed, then copied to the sidecar; returns its ``seq``. The next
        ``extra_seqs`` seqs are reserved for the writer's own records that follow.
        Without a checkpointer (a file must still be sealed to rotate) it is unsigned
        and has no sidecar."""
        cp = self.checkpointer
        clock = cp.clock_to_chain() if cp is not None else None
        items, seq = self.handoff.take_reserving(1 + (clock is not None) + extra_seqs)
        if items:
            self.chain(items)
        if clock is not None:  # covered by the checkpoint that follows
            self.control(seq, "clock", clock)
            seq += 1
        now = time.time_ns()
        fields = (
            cp.fields(self.last_seq, self.prev, now)
            if cp is not None
            else unsigned_fields(self.stream, self.last_seq, self.prev, now)
        )
        line = self.control(seq, "checkpoint", fields)
        # The sidecar promises that everything up to the checkpoint is durable: a
        # checkpoint that reached only stdout is not copied there.
        if self.commit() and cp is not None:
            cp.written_now(line, seq)
        elif cp is not None:  # not due again at once: the next interval tries anew
            cp.records = 0
            cp.last = time.monotonic()
        return seq

    # -- new files: rotation, reopen, copytruncate (see _rotation.py) ------------------

    def note_file_start(self) -> None:
        """Learn (seq, ts) of the open primary's first record (None when empty)."""
        try:
            found = self.primary.first_record()
        except OSError:
            found = None
        if found is None:
            self.file_first = None
            return
        seq, line = found
        self.file_first = (seq, ts_ns_of(line))

    def switch_file(self, reason: str, *, seal: bool) -> None:
        """Seal the active file with a checkpoint, rename it to a sealed segment name
        (built-in rotation) or leave it where it is (renamed by logrotate), open the
        path anew and begin the new file with a ``segment`` record."""
        seq = self._seal(extra_seqs=1)
        previous: str | None = None
        if self.destination is Destination.PRIMARY and self.primary.is_open:
            previous = self.primary.path.name
            try:
                # Checked just before; should logrotate rename the file since, it stays
                # where it went (sealed there): renaming the path would move another.
                if seal and self.file_first is not None and self.primary.identity() is Identity.OK:
                    first, start_ns = self.file_first
                    target = seal_as_segment(self.primary.path, first, seq, start_ns)
                    previous = target.name
                    self.counters.rotations += 1
                    logger.info("audit log rotated: %s sealed at seq %d", target.name, seq)
                self.primary.open(create=True)
                self.note_file_start()
                self.ring.clear()
                self._rotate_pending = False  # the seal itself may have crossed the size
                if self.primary.offset:
                    head = self.primary.head()
                    if head.last_seq and head.last_seq != self.last_seq:
                        logger.error(
                            "the file now at %s ends at seq %d, not %d: not ours; continuing in it",
                            self.primary.path,
                            head.last_seq,
                            self.last_seq,
                        )
            except OSError as exc:
                self._failed("primary", exc)
                self._fall_back(f"a new file cannot be opened: {exc}")
                self._schedule_retry()
        self.control(
            seq + 1,
            "segment",
            {"stream": self.stream, "reason": reason, "previous": previous},
        )
        self.commit()

    def reopen(self) -> None:
        """SIGUSR1/SIGHUP: the identity check, now rather than within half a second: if
        the path names another file (logrotate's create mode), the old one is sealed and
        the chain continues in the new one."""
        if self.check_identity() is Identity.OK:
            logger.info("reopen requested: %s is still the same file", self.primary.path)

    def _rewrite_after_truncation(self) -> None:
        """The file shrank under us (copytruncate): write the recent records back.

        Whatever the file still holds is cut, but kept aside first unless the ring
        holds it too (records written since the truncation always are)."""
        primary = self.primary
        size = primary.shrunk() or 0
        expected = primary.offset
        found = primary.read_range(0, size) if size else b""
        kept = self.ring.data()
        span = self.ring.span()
        aside: str | None = None
        if found and found not in kept:
            target = truncated_path(primary.path)
            atomic_write(target, found)
            aside = target.name
        primary.reset()
        self.counters.truncations += 1
        if kept:
            primary.write([kept])
        self.note_file_start()
        logger.critical(
            "audit log %s shrank under the writer (%d bytes, expected %d): copytruncate "
            "or a cut. Records written between a copy and a truncate exist nowhere else: "
            "rewrote %s at the start of the file. Use logrotate's create mode instead.",
            primary.path,
            size,
            expected,
            f"seq {span[0]}-{span[1]}" if span else "nothing (RISK_AUDIT_TRUNCATE_RING=0)",
        )
        self.handoff.writer_control(
            "truncated",
            {
                "stream": self.stream,
                "found_bytes": size,
                "expected_bytes": expected,
                "rewritten_first_seq": span[0] if span else None,
                "rewritten_last_seq": span[1] if span else None,
                "kept_at": aside,
            },
        )

    # -- the file under us --------------------------------------------------------

    def check_identity(self) -> Identity | None:
        """Deleted: copy it back from the open handle. Renamed: seal it and reopen the
        path. Shrunk: write the recent records back. Returns what it found (None when
        not writing to the primary)."""
        if self.destination is not Destination.PRIMARY or not self.primary.is_open:
            return None  # the retry loop reopens the path anyway
        try:
            state = self.primary.identity()
        except OSError:
            return None
        if state is Identity.OK:
            with contextlib.suppress(OSError):
                if self.primary.shrunk() is not None:
                    self._rewrite_after_truncation()
        elif state is Identity.DELETED:
            self._rescue_deleted()
        else:
            self.counters.reopened += 1
            logger.warning(
                "audit log %s was renamed or replaced; reopening the path", self.primary.path
            )
            self.switch_file("reopen", seal=False)
        return state

    def _rescue_deleted(self) -> None:
        self.counters.rescued += 1
        old = self.primary
        try:
            content = old.read_all()
        except OSError as exc:
            old.poison(str(exc))
            self._failed("primary", exc)
            self._fall_back(f"a deleted log cannot be read back: {exc}")
            self._schedule_retry()
            return
        logger.critical(
            "audit log %s was deleted while open: restoring its %d bytes from the open handle",
            old.path,
            len(content),
        )
        fresh = AppendFile(old.path)
        try:
            fresh.open(create=True)
            if fresh.offset:
                raise OSError(f"{old.path} exists again with other content")
            fresh.write([content])
        except OSError as exc:
            fresh.close()
            self._failed("primary", exc)
            self._rescue_into_spool(content)
            return
        old.close()
        self.primary = fresh

    def _rescue_into_spool(self, content: bytes) -> None:
        """The path cannot be made: keep the content as the first spool file."""
        self.primary.close()
        if self.spool is None:
            # No spool: the records are still readable through stdout, at least.
            for line in content.split(b"\n")[:-1]:
                self.emergency.put(line)
            self._switch_to(Destination.STDOUT, "deleted log rescued to stdout (no spool)")
            self._schedule_retry()
            return
        first = content[: content.find(b",")]
        seq = int(first[len(b'{"seq":') :]) if first.startswith(b'{"seq":') else 1
        target = self.spool.path_for(seq)
        try:
            atomic_write(target, content)
        except Exception as exc:
            logger.critical("cannot rescue the deleted log into the spool either: %s", exc)
            for line in content.split(b"\n")[:-1]:
                self.emergency.put(line)
            self._switch_to(Destination.STDOUT, "deleted log rescued to stdout")
        else:
            self._switch_to(Destination.SPOOL, "deleted log rescued into the spool")
        self._schedule_retry()

    # -- the thread ---------------------------------------------------------------

    def _periodic(self, now: float) -> None:
        """Every half second: the file's identity, the clock and the volume, a
        checkpoint or a rotation that is due by time."""
        self.check_identity()
        self.monitor.tick(now, self.destination is Destination.PRIMARY)
        if self.checkpointer is not None and self.checkpointer.due(now):
            self.checkpoint()
        if self.rotation.interval:
            wall = self.wall()
            if self._next_rotation == math.inf:
                self._next_rotation = self.rotation.next_boundary(wall)
            elif wall >= self._next_rotation:
                self._next_rotation = self.rotation.next_boundary(wall)
                self._rotate_pending = True

    @staticmethod
    @contextlib.contextmanager
    def _priority() -> Iterator[None]:
        """The writer's own bounded Python work: a producer that gets the GIL while
        this section makes a system call steps aside until it ends, at most a switch
        interval (5 ms) from its start, instead of keeping the GIL for a switch interval
        each time. Not nested, and never around a wait (the gate, the take)."""
        token = begin_section()
        try:
            yield
        finally:
            end_section(token)

    def run(self) -> None:
        try:
            while True:
                if not self.gate.is_set():
                    self.parked.set()
                    self.gate.wait()
                    self.parked.clear()
                now = time.monotonic()
                if self.reopen_requested:
                    self.reopen_requested = False
                    with self._priority():
                        self.reopen()
                if now >= self._next_identity:
                    self._next_identity = now + IDENTITY_EVERY
                    with self._priority():
                        self._periodic(now)
                if (self._rotate_pending or self.rotate_requested) and (
                    self.destination is Destination.PRIMARY
                ):
                    self._rotate_pending = self.rotate_requested = False
                    with self._priority():
                        # An rm or logrotate may have come first: rescue the file, or
                        # seal it where it went and begin anew (no rotation then).
                        state = self.check_identity()
                        if state is not Identity.REPLACED and (
                            self.destination is Destination.PRIMARY
                        ):
                            self.switch_file("rotate", seal=True)
                if self.destination is not Destination.PRIMARY:
                    self.try_restore()
                closing = self.stopping  # read first: a stop queued before it is taken now
                if (
                    self.native_commit
                    and not closing
                    and self.destination is Destination.PRIMARY
                    and self.primary.writable
                ):
                    took = self._native_turns()
                else:
                    items = self.handoff.take(closing)
                    took = bool(items)
                    if took:
                        self.chain(items)
                        self.commit()
                if took:
                    cp = self.checkpointer
                    if cp is not None and cp.every_records and cp.records >= cp.every_records:
                        with self._priority():
                            self.checkpoint()
                elif closing:
                    if self.owed and self.destination is not Destination.STDOUT:
                        self._close_stdout_range()  # what is owed, durably if at all
                    cp = self.checkpointer
                    if cp is not None and cp.sealed_seq != self.last_seq:
                        self.checkpoint()  # seals the stop record, unless a due one did
                    return
        except BaseException as exc:  # the thread must never die silently
            self._spill_backlog()
            if self._on_died is not None:
                self._on_died(exc)
            raise
        finally:
            self.primary.close()
            if self.spool is not None:
                self.spool.end_episode()
            if self.checkpointer is not None:
                self.checkpointer.close()

    def _spill_backlog(self) -> None:
        """The thread is dying with chained records not yet written: they go out as
        AUDIT_EMERGENCY lines (``recover`` puts them back), never only in memory."""
        if not self._backlog:
            return
        try:
            chunks = [data for _last, data in self._backlog]
            self._to_stdout(chunks, self._backlog_first, self._backlog[-1][0])
        except Exception:  # the emergency output itself failed: counted there as lost
            logger.exception("audit writer could not spill its backlog")

    def close_files(self) -> None:
        """Close the files when the thread never started (open failed half-way)."""
        self.primary.close()
        if self.spool is not None:
            self.spool.end_episode()

    def forget(self) -> None:
        """In a forked child: drop our copies of the descriptors."""
        with contextlib.suppress(Exception):
            self.primary.forget()
        if self.spool is not None and self.spool.current is not None:
            self.spool.current.forget()
