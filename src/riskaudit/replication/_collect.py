"""The collector: every source stream written into its own central log, byte for byte.

For each stream id found on the JetStream stream (subjects ``<prefix>.<stream id>``) it
keeps a durable pull consumer ``<durable>-<stream id>`` and a central directory
``<out>/<stream id>/`` holding ``audit.jsonl`` (the records, exactly the bytes the
source wrote, so every hash and checkpoint verifies) and ``audit.jsonl.checkpoints``.

The central files mirror the source's: where the source started a new file (its
``segment`` record, after a built-in rotation or logrotate), the central active file is
sealed under the canonical segment name ``audit.seg-<first>-<last>-<UTC start>.jsonl``
(renamed, directory fsynced, mode 0440) and the ``segment`` record begins a new
``audit.jsonl``. No central record is added, so the bytes stay the source's; each
central segment is anchored by the same sealing checkpoint as the source's, and the
central segments are backed up like a local log's (``.collector.lock`` keeps any writer
out: a record of riskaudit's own would break the byte-for-byte copy). A collector
killed between the rename and the new file's first record continues the chain from
the newest central segment.

A message is acknowledged only after its records are fsynced centrally; a collector
killed in between gets the message again and drops what it already has, by ``seq``.
Chunks that arrive ahead of a missing one (a retried publish stored late) wait in
memory, unacknowledged, until the missing one arrives; if it never does within
``GAP_WAIT`` seconds (longer than a killed collector's messages take to come back) the
gap is reported (log, counter) and writing goes on, so ``verify`` names the hole
instead of the collector stalling forever. Records of a called gap that still arrive
later go into ``audit.jsonl.recovered-<first>-<last>.jsonl``, which ``verify`` splices
into the hole: late is never dropped.

With a board (:mod:`riskaudit.replication._board`, a NATS key-value bucket), the
collector closes the chain of custody: after each fsync it publishes the stream's
watermark — the highest ``seq`` through which the central copy is complete — and a hole
that outlasts ``REPAIR_AFTER`` (a message the broker acknowledged but lost, or a gap an
operator's purge left) becomes a repair request, repeated every ``REPAIR_AFTER`` while
it stays open; the host's forwarder re-sends the range from its log, and the central
copy stays byte-equal to the source. Only when no repair comes for ``REPAIR_GIVE_UP``
(the host gone for good) is the gap called, as without a board.

Several collectors share the work by partition: ``--partition I/N`` takes the streams
whose id hashes to I modulo N, so each stream has exactly one collector and its order
is kept. Each central directory is locked (``flock``) by the collector writing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from riskaudit.errors import AuditLockedError
from riskaudit.format import (
    CENTRAL_MARK,
    CENTRAL_NAME,
    HOLES_NAME,
    ZERO_HASH,
    atomic_write,
    gap_range,
    is_control,
    line_hash,
    recovered_path,
    recovered_range,
    seal_as_segment,
    sidecar_path,
    split_head,
    ts_ns_of,
)
from riskaudit.log import AppendFile, sibling_head
from riskaudit.replication._board import Board, RepairRequest, Watermark
from riskaudit.settings import ReplicationSettings

logger = logging.getLogger("riskaudit.collect")

#: A collector killed with messages in hand gets them back only after ``ACK_WAIT``:
#: chunks that arrive ahead of them must wait longer than that before a gap is called.
ACK_WAIT = 10.0
GAP_WAIT = 60.0
#: With a board: a hole open this long is asked for again from the host (longer than a
#: killed collector's messages take to come back), and called a gap only after
#: ``REPAIR_GIVE_UP`` without an answer.
REPAIR_AFTER = ACK_WAIT + 2.0
REPAIR_GIVE_UP = 900.0
#: A hole unchanged after a request is asked for again after twice the wait, up to this.
REPAIR_BACKOFF_MAX = 300.0
#: Chunks held ahead of a hole, at most (well under the consumer's max_ack_pending, so
#: the repair can still be delivered); more are handed back to the server for later.
HOLD_MAX = 256
#: Seconds between attempts to open the board while it cannot be.
BOARD_RETRY = 5.0


@dataclass(slots=True)
class CollectStats:
    records: int = 0
    duplicates: int = 0
    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    chain_breaks: list[tuple[str, int]] = field(default_factory=list)
    checkpoints: int = 0
    segments: int = 0
    repairs_asked: int = 0


class CentralLog:
    """One stream's central copy: append records in ``seq`` order, durably."""

    def __init__(self, directory: Path, stream: str, stats: CollectStats) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.stream = stream
        self.stats = stats
        self.lock_fd = os.open(directory / CENTRAL_MARK, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.lock_fd)
            raise AuditLockedError(str(directory / CENTRAL_MARK), None) from exc
        self.log = AppendFile(directory / CENTRAL_NAME)
        self.log.open(create=True)
        head = self.log.head()
        if head.torn:
            self.log.repair(head)
        self.last_seq, self.last_hash = head.last_seq, head.last_hash or ZERO_HASH
        if not self.last_seq:  # new, or killed between a seal's rename and the next record
            self.last_seq, self.last_hash, _ = sibling_head(self.log.path)
        self.sidecar = AppendFile(sidecar_path(directory / CENTRAL_NAME))
        self.sidecar.open(create=True)
        side = self.sidecar.head() if self.sidecar.offset else None
        if side is not None and side.torn:
            self.sidecar.repair(side)
        self.last_checkpoint = side.last_seq if side is not None else 0
        self.waiting: dict[int, tuple[bytes, list[Any], float]] = {}
        self.holes_file = directory / HOLES_NAME
        self.holes: list[tuple[int, int]] = self._load_holes()
        # The hole being repaired: since when it has been as it is, and the wait before
        # asking (again): doubled after each unanswered request, reset when it changes.
        self.hole: tuple[int, int] | None = None
        self.hole_since = 0.0
        self.ask_wait = REPAIR_AFTER
        self.confirmed = 0  # the watermark last published

    def _load_holes(self) -> list[tuple[int, int]]:
        try:
            raw = orjson.loads(self.holes_file.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError) as exc:
            # Unreadable: claim nothing past the start rather than too much.
            logger.error("stream %s: %s unreadable (%s)", self.stream, self.holes_file, exc)
            return [(1, 1)]
        return [(int(a), int(b)) for a, b in raw.get("holes", [])]

    def _save_holes(self) -> None:
        atomic_write(self.holes_file, orjson.dumps({"holes": self.holes}))

    def _add_hole(self, first: int, last: int) -> None:
        self.holes.append((first, last))
        self._save_holes()

    def complete_through(self) -> tuple[int, str | None]:
        """The watermark: the highest seq through which this copy is complete and
        synced, with that record's hash (unknown below a hole: a gap called, or a record
        that broke the chain, in this run or an earlier one)."""
        if self.holes:
            return min(first for first, _last in self.holes) - 1, None
        return self.last_seq, self.last_hash.decode() if self.last_seq else None

    def take_records(self, data: bytes) -> list[bytes]:
        """The lines of ``data`` that extend this log (duplicates dropped), as pieces:
        the first continues the active file, each further one begins a new file (it
        starts with the source's ``segment`` record)."""
        pieces: list[bytes] = []
        out: list[bytes] = []
        late: dict[tuple[int, int], list[bytes]] = {}
        for line in data.split(b"\n")[:-1]:
            head = split_head(line)
            if head is None:
                logger.error("stream %s: a line that is no record; dropped", self.stream)
                continue
            seq, prev = head
            if seq <= self.last_seq:
                hole = next((h for h in self.holes if h[0] <= seq <= h[1]), None)
                if hole is not None:
                    late.setdefault(hole, []).append(line + b"\n")
                else:
                    self.stats.duplicates += 1
                continue
            if seq != self.last_seq + 1 and gap_range(line) == (self.last_seq + 1, seq - 1):
                # The host's own gap record: those records reached only its stdout, and
                # its log lacks them too. Nothing to wait for; not a hole of ours.
                logger.warning(
                    "stream %s: seq %d-%d reached only the host's stdout (its gap record)",
                    self.stream,
                    self.last_seq + 1,
                    seq - 1,
                )
            elif seq != self.last_seq + 1:
                self._add_hole(self.last_seq + 1, seq - 1)
                self.stats.gaps.append((self.stream, self.last_seq + 1, seq - 1))
                logger.error(
                    "stream %s: seq %d-%d never arrived; continuing at %d",
                    self.stream,
                    self.last_seq + 1,
                    seq - 1,
                    seq,
                )
            elif self.last_seq and prev != self.last_hash:
                self.stats.chain_breaks.append((self.stream, seq))
                self._add_hole(seq, seq)  # the watermark stops before it
                logger.error("stream %s: seq %d does not link to its predecessor", self.stream, seq)
            if is_control(line, "segment"):
                pieces.append(b"".join(out))
                out = []
            out.append(line + b"\n")
            self.last_seq, self.last_hash = seq, line_hash(line)
            self.stats.records += 1
        for (first, last), lines in late.items():
            # Records of a hole already called a gap arrived after all: kept as a
            # recovered segment, which ``verify`` splices into the hole.
            self._write_recovered(first, last, b"".join(lines))
            logger.warning(
                "stream %s: %d records of the gap %d-%d arrived late; kept in a recovered segment",
                self.stream,
                len(lines),
                first,
                last,
            )
        pieces.append(b"".join(out))
        return pieces

    def write(self, pieces: list[bytes]) -> None:
        """Append durably; a new file (the previous one sealed) before each piece but
        the first."""
        for i, piece in enumerate(pieces):
            if i:
                self.seal_file()
            if piece:
                self.log.write([piece])

    def seal_file(self) -> None:
        """Rename the active file to its sealed segment name and open a new one, as the
        source did at the same record (the writer's ``switch_file``, without a record
        of our own)."""
        first = self.log.first_record()
        if first is None:
            return  # nothing to seal: the source's file began where ours does
        last = self.log.head().last_seq
        target = seal_as_segment(self.log.path, first[0], last, ts_ns_of(first[1]))
        self.log.close()
        self.log.open(create=True)
        self.stats.segments += 1
        logger.info("stream %s: central file sealed as %s", self.stream, target.name)

    def take_checkpoints(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for line in data.split(b"\n")[:-1]:
            head = split_head(line)
            if head is None or head[0] <= self.last_checkpoint:
                continue
            out.append(line + b"\n")
            self.last_checkpoint = head[0]
        self.stats.checkpoints += len(out)
        return b"".join(out)

    def add_recovered(self, name: str, data: bytes) -> None:
        """A recovered segment's records, kept as ``audit.jsonl.recovered-<a>-<b>.jsonl``
        (``verify`` splices it into the hole its ``gap`` record names)."""
        span = recovered_range(name)
        if span is None:
            logger.error("stream %s: recovered records from %r: bad name", self.stream, name)
            return
        self._write_recovered(*span, data)

    def _write_recovered(self, first: int, last: int, data: bytes) -> None:
        target = AppendFile(recovered_path(self.log.path, first, last))
        target.open(create=True)
        try:
            have = target.head().last_seq if target.offset else 0
            fresh = [
                line + b"\n"
                for line in data.split(b"\n")[:-1]
                if (h := split_head(line)) is not None and h[0] > have
            ]
            if fresh:
                target.write([b"".join(fresh)])
            complete = target.head().last_seq >= last
        finally:
            target.close()
        if complete and (first, last) in self.holes:  # the recovered segment fills it
            self.holes.remove((first, last))
            self._save_holes()

    def close(self) -> None:
        self.log.close()
        self.sidecar.close()
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)


def _names_hole(data: bytes, first: int, last: int) -> bool:
    """Whether the chunk starts with the ``gap`` record that names exactly this hole
    (records that reached only stdout on the host): nothing more will arrive for it
    on this subject, only a recovered segment later."""
    return gap_range(data.split(b"\n", 1)[0]) == (first, last)


def partition_of(stream_id: str, parts: int) -> int:
    return int.from_bytes(hashlib.sha256(stream_id.encode()).digest()[:4], "big") % parts


class Collector:
    """Consumes the JetStream stream into ``out_dir``; ``js`` is a JetStream context."""

    def __init__(
        self,
        out_dir: Path,
        settings: ReplicationSettings,
        js: Any,
        *,
        partition: tuple[int, int] = (0, 1),
        durable: str = "riskaudit-collect",
        batch: int = 64,
        board: Board | None = None,
        board_opener: Callable[[], Awaitable[Board | None]] | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.settings = settings
        self.js = js
        self.partition = partition
        self.durable = durable
        self.batch = batch
        self.stats = CollectStats()
        self.logs: dict[str, CentralLog] = {}
        self.subs: dict[str, Any] = {}
        self._next_discovery = 0.0
        self.board = board
        # The board is opened (and created) once the cluster answers: a collector
        # restarted while the bucket's leader is being elected must not die of it.
        self.board_opener = board_opener
        self._board_retry_at = 0.0

    async def discover(self) -> None:
        """Subscribe to every stream id of our partition (new ones appear over time)."""
        prefix = self.settings.subject_prefix + "."
        info = await self.js.stream_info(
            self.settings.stream, subjects_filter=self.settings.subject_prefix + ".*"
        )
        subjects = (info.state.subjects or {}) if info.state else {}
        for subject in subjects:
            stream_id = subject[len(prefix) :]
            if stream_id in self.subs:
                continue
            if partition_of(stream_id, self.partition[1]) != self.partition[0]:
                continue
            from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: PLC0415

            config = ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ACK_WAIT,
                max_ack_pending=4096,
            )
            self.logs[stream_id] = CentralLog(self.out_dir / stream_id, stream_id, self.stats)
            self.subs[stream_id] = await self.js.pull_subscribe(
                subject,
                durable=f"{self.durable}-{stream_id}",
                stream=self.settings.stream,
                config=config,
            )
            logger.info("collecting stream %s into %s", stream_id, self.out_dir / stream_id)

    async def poll(self, timeout: float = 0.2) -> int:
        """Fetch, write, sync and acknowledge one round; the number of messages."""
        opener = self.board_opener if self.board is None else None
        if opener is not None and time.monotonic() >= self._board_retry_at:
            self._board_retry_at = time.monotonic() + BOARD_RETRY
            self.board = await opener()
        if time.monotonic() >= self._next_discovery:
            self._next_discovery = time.monotonic() + 2.0
            await self.discover()
        total = 0
        for stream_id, sub in list(self.subs.items()):
            try:
                msgs = await sub.fetch(self.batch, timeout=timeout)
            except TimeoutError:
                msgs = []
            except Exception as exc:  # the cluster electing a leader, a reconnect
                logger.warning("fetch for %s failed: %s", stream_id, exc)
                continue
            total += len(msgs)
            await self._handle(self.logs[stream_id], msgs)
        return total

    async def _handle(self, central: CentralLog, msgs: list[Any]) -> None:
        pieces: list[bytes] = [b""]
        checkpoints: list[bytes] = []
        acks: list[Any] = []
        now = time.monotonic()
        for msg in msgs:
            headers = msg.headers or {}
            if headers.get("Riskaudit-Kind") == "checkpoints":
                checkpoints.append(central.take_checkpoints(msg.data))
                acks.append(msg)
                continue
            if headers.get("Riskaudit-Kind") == "recovered":
                central.add_recovered(headers.get("Riskaudit-File", ""), msg.data)
                acks.append(msg)
                continue
            first = int(headers.get("Riskaudit-First-Seq", "0"))
            held = central.waiting.get(first)
            if held is not None:  # the same chunk again (a redelivery): ack them together,
                # keeping the last few deliveries only (a hole can last many redeliveries)
                central.waiting[first] = (held[0], [*held[1][-3:], msg], held[2])
            elif first > central.last_seq + 1 and len(central.waiting) >= HOLD_MAX:
                await msg.nak(delay=REPAIR_AFTER)  # back to the server: room for the repair
            else:
                central.waiting[first] = (msg.data, [msg], now)
        # Take waiting chunks in seq order while they connect (or have waited too long).
        give_up = GAP_WAIT if self.board is None else REPAIR_GIVE_UP
        while central.waiting:
            first = min(central.waiting)
            data, chunk_msgs, since = central.waiting[first]
            if (
                first > central.last_seq + 1
                and now - since < give_up
                and not _names_hole(data, central.last_seq + 1, first - 1)
            ):
                if self.board is not None:
                    await self._ask(central, central.last_seq + 1, first - 1, now)
                break
            del central.waiting[first]
            taken = central.take_records(data)
            pieces[-1] += taken[0]
            pieces.extend(taken[1:])
            acks.extend(chunk_msgs)
        central.write(pieces)
        side = b"".join(checkpoints)
        if side:
            central.sidecar.write([side])
        for msg in acks:
            await msg.ack()
        await self._confirm(central)

    async def _confirm(self, central: CentralLog) -> None:
        """Publish the watermark once the central copy has moved (it is synced: written
        above with ``AppendFile.write``, which fsyncs before returning)."""
        seq, line_hash_hex = central.complete_through()
        if self.board is None or seq <= central.confirmed:
            return
        try:
            await self.board.confirm(central.stream, Watermark(seq, line_hash_hex, time.time()))
        except Exception as exc:  # published again with the next write
            logger.warning("stream %s: watermark %d not published: %s", central.stream, seq, exc)
            return
        central.confirmed = seq

    async def _ask(self, central: CentralLog, first: int, last: int, now: float) -> None:
        """Ask the host for records it has and we never got, once the hole has stayed
        as it is for the wait (a repair under way shrinks it: no new request then), and
        again after twice as long while nothing comes (each request is re-sent whole)."""
        if central.hole != (first, last):
            central.hole, central.hole_since, central.ask_wait = (first, last), now, REPAIR_AFTER
        if self.board is None or now - central.hole_since < central.ask_wait:
            return
        request = RepairRequest(first, last, time.time_ns(), time.time())
        try:
            await self.board.ask(central.stream, request)
        except Exception as exc:
            logger.warning("stream %s: repair request not posted: %s", central.stream, exc)
            return
        central.hole_since = now
        central.ask_wait = min(REPAIR_BACKOFF_MAX, central.ask_wait * 2)
        self.stats.repairs_asked += 1
        logger.warning(
            "stream %s: seq %d-%d missing (lost by the broker, or purged): asked the host "
            "to send them again",
            central.stream,
            first,
            last,
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                got = await self.poll()
            except Exception as exc:
                logger.warning("collector round failed: %s", exc)
                got = 0
            if not got:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)

    def close(self) -> None:
        for central in self.logs.values():
            central.close()
