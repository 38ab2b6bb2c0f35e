"""The forwarder: the local log, replicated through NATS JetStream, resumable exactly.

Each message carries consecutive records (their exact lines) of one stream, on subject
``<prefix>.<stream id>``, with headers ``Riskaudit-Stream``, ``Riskaudit-First-Seq``,
``Riskaudit-Last-Seq`` and ``Nats-Msg-Id: <stream id>:<first>-<last>``, so a chunk
published twice (an acknowledgement lost, the forwarder killed after publishing but
before saving its cursor) is dropped by the server within its duplicate window; the
collector drops anything older by ``seq``. Checkpoint sidecar lines travel on the same
subject (``Riskaudit-Kind: checkpoints``), so a central copy can detect a cut tail too.

A window of chunks is published at once and the acknowledgements awaited together
(JetStream keeps per-subject order for one publisher); each chunk is retried with
capped exponential backoff until the server acknowledges it. Only then does the cursor
move: ``<log>.forward.json``, written to a temp file, fsynced and renamed, so a restart
resumes exactly where the acknowledged data ends.

The broker's acknowledgement moves the cursor, but it is not what "replicated" means:
that is the collector's watermark (:mod:`riskaudit.replication._board`), read every
``BOARD_EVERY`` seconds and kept in the cursor file for retention to see. A repair
request on the board is served from the host's log, the system of record: the range is
read again and published under a message id of its own (the broker's duplicate window
would drop the original id), and the collector drops by ``seq`` what it already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from riskaudit.errors import AuditConfigError
from riskaudit.format import (
    atomic_write,
    forward_cursor_path,
    last_line,
    log_stream,
    recovered_glob,
    sidecar_path,
    split_head,
    ts_ns_of,
)
from riskaudit.replication._board import Board, KvBoard, RepairRequest, Watermark, bucket_name
from riskaudit.replication._follow import Chunk, LogFollower
from riskaudit.settings import ReplicationSettings

logger = logging.getLogger("riskaudit.forward")

POLL = 0.05
RETRY_MIN, RETRY_MAX = 0.05, 5.0
#: How long one publish waits for the server's acknowledgement before it is retried.
ACK_TIMEOUT = 5.0
#: How long a JetStream API request (stream and consumer management, KV) may take: a
#: replicated stream's creation with one of three nodes down took 5.3 s on the test
#: cluster, more than nats-py's default of 5 s.
API_TIMEOUT = 15.0
#: Seconds between looks at the collector's watermark and repair requests.
BOARD_EVERY = 0.5
#: Seconds between attempts to open the board while it cannot be (no bucket yet, ...).
BOARD_RETRY = 30.0
UNCONFIRMED_MAX = 100_000

Publish = Callable[[str, bytes, dict[str, str]], Awaitable[Any]]


def cursor_path(log_path: Path) -> Path:
    return forward_cursor_path(log_path)


@dataclass(slots=True)
class Cursor:
    """What the server has acknowledged: the last record and the sidecar offset."""

    stream: str
    seq: int = 0
    hash: str | None = None
    sidecar_offset: int = 0
    recovered: list[str] = field(default_factory=list)
    replicated_seq: int = 0  # the collector's watermark: fsynced centrally through here
    replicated_at: float = 0.0
    repair_served: int = 0  # the number of the last repair request served

    @classmethod
    def load(cls, path: Path, stream: str) -> Cursor:
        try:
            raw = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(stream)
        if raw.get("stream") != stream:
            raise AuditConfigError(
                "RISK_AUDIT_LOG_PATH",
                f"{path} belongs to stream {raw.get('stream')}, the log is {stream}",
            )
        return cls(
            stream,
            int(raw["seq"]),
            raw.get("hash"),
            int(raw.get("sidecar_offset", 0)),
            list(raw.get("recovered", [])),
            int(raw.get("replicated_seq", 0)),
            float(raw.get("replicated_at", 0.0)),
            int(raw.get("repair_served", 0)),
        )

    def save(self, path: Path) -> None:
        data = {
            "stream": self.stream,
            "seq": self.seq,
            "hash": self.hash,
            "sidecar_offset": self.sidecar_offset,
            "recovered": self.recovered,
            "replicated_seq": self.replicated_seq,
            "replicated_at": self.replicated_at,
            "repair_served": self.repair_served,
            "saved": time.time(),
        }
        atomic_write(path, orjson.dumps(data))


@dataclass(slots=True)
class ForwardStats:
    published_messages: int = 0
    published_records: int = 0
    errors: int = 0
    checkpoints: int = 0
    last_error: str | None = None
    repairs: int = 0  # repair requests served
    repaired_records: int = 0


class Forwarder:
    """Follows one local log and publishes it; ``publish`` is injected (a JetStream
    publish that returns once acknowledged), so tests and benchmarks can swap it."""

    def __init__(
        self,
        log_path: Path,
        settings: ReplicationSettings,
        publish: Publish,
        *,
        sidecar: Path | None = None,
        board: Board | None = None,
        open_board: Callable[[], Awaitable[Board | None]] | None = None,
    ) -> None:
        self.log_path = log_path
        self.settings = settings
        self.publish = publish
        self.sidecar = sidecar or sidecar_path(log_path)
        self.follower = LogFollower(
            log_path, max_records=settings.chunk_records, max_bytes=settings.chunk_bytes
        )
        self.stats = ForwardStats()
        self.cursor_file = cursor_path(log_path)
        self.cursor: Cursor | None = None
        self._ahead: list[Chunk] = []
        self.board = board
        self.board_opener = open_board  # tried again every BOARD_RETRY while board is None
        self._board_at = 0.0
        self._board_retry_at = 0.0
        self._started_at = time.time()
        # (last seq, ts of its first record, hash of its last) of chunks sent and not yet
        # confirmed by the collector: how old the oldest unconfirmed record is, and the
        # hashes a watermark must match. Bounded: past UNCONFIRMED_MAX the oldest stay.
        self._unconfirmed: deque[tuple[int, int, str]] = deque()

    def _ensure_cursor(self) -> Cursor | None:
        if self.cursor is None:
            stream = log_stream(self.log_path)
            if stream is None:
                return None  # no log yet
            self.cursor = Cursor.load(self.cursor_file, stream)
        return self.cursor

    def local_seq(self) -> int:
        """The newest record in the active file (for the lag metric)."""
        try:
            head = split_head(last_line(self.log_path))
        except (OSError, IndexError):
            return self.cursor.seq if self.cursor else 0
        return head[0] if head else (self.cursor.seq if self.cursor else 0)

    def lag(self) -> int:
        """Records not yet acknowledged by the broker."""
        return max(0, self.local_seq() - (self.cursor.seq if self.cursor else 0))

    @property
    def replicated_seq(self) -> int:
        """The collector's watermark, as last read: fsynced centrally through here."""
        return self.cursor.replicated_seq if self.cursor else 0

    def replication_lag(self) -> int:
        """Records in the local log the collector has not yet fsynced centrally."""
        return max(0, self.local_seq() - self.replicated_seq)

    def replication_lag_seconds(self, now_ns: int | None = None) -> float:
        """How old the oldest record not yet fsynced centrally is (by its ``ts``); when
        the forwarder has not sent it itself (after a restart), the time since the
        central copy last advanced."""
        if self.replication_lag() == 0:
            return 0.0
        now = time.time_ns() if now_ns is None else now_ns
        try:  # the forwarder's thread may pop it meanwhile (metrics read from another)
            return max(0.0, (now - self._unconfirmed[0][1]) / 1e9)
        except IndexError:
            pass
        since = self.cursor.replicated_at if self.cursor and self.cursor.replicated_at else 0.0
        return max(0.0, now / 1e9 - (since or self._started_at))

    async def look_at_board(self, cursor: Cursor, *, force: bool = False) -> bool:
        """Take the collector's watermark and serve its repair request; True if the
        cursor changed (to be saved)."""
        opener = self.board_opener if self.board is None else None
        if opener is not None and time.monotonic() >= self._board_retry_at:
            self._board_retry_at = time.monotonic() + BOARD_RETRY
            self.board = await opener()
        if self.board is None or (not force and time.monotonic() < self._board_at):
            return False
        self._board_at = time.monotonic() + BOARD_EVERY
        try:
            mark, want = await self.board.read(cursor.stream)
        except Exception as exc:  # the bucket's leader moving: look again next time
            self.stats.errors += 1
            self.stats.last_error = f"board: {type(exc).__name__}: {exc}"
            return False
        changed = False
        if mark is not None and mark.seq != cursor.replicated_seq and self._believe(cursor, mark):
            if mark.seq < cursor.replicated_seq:
                logger.warning(
                    "the collector's watermark went back from %d to %d (a central copy "
                    "restored or rebuilt): replicated is what it says now",
                    cursor.replicated_seq,
                    mark.seq,
                )
            cursor.replicated_seq, cursor.replicated_at = mark.seq, mark.at
            while self._unconfirmed and self._unconfirmed[0][0] <= mark.seq:
                self._unconfirmed.popleft()
            changed = True
        if want is not None and want.number != cursor.repair_served:
            await self._repair(cursor, want)
            cursor.repair_served = want.number
            changed = True
        return changed

    def _believe(self, cursor: Cursor, mark: Watermark) -> bool:
        """A watermark names a record this host sent, and its hash is that record's:
        anything else (another host's history, a rewritten one) is refused, loudly."""
        problem = None
        if mark.seq > cursor.seq:
            problem = f"seq {mark.seq} is past what this host sent ({cursor.seq})"
        elif mark.hash is not None:
            mine = self._hash_of(mark.seq)
            if mine is not None and mine != mark.hash:
                problem = f"seq {mark.seq} has hash {mark.hash[:12]}…, this host's {mine[:12]}…"
        if problem is not None:
            self.stats.errors += 1
            self.stats.last_error = f"watermark refused: {problem}"
            logger.error("the collector's watermark is refused: %s", problem)
            return False
        return True

    def _hash_of(self, seq: int) -> str | None:
        """The hash of local record ``seq``: from the chunks sent in this run, or read."""
        for last, _ts, last_hash in self._unconfirmed:
            if last == seq:
                return last_hash
        chunk = LogFollower(self.log_path, max_records=1, max_bytes=1 << 20).next_chunk(
            seq - 1, None
        )
        if chunk is None or chunk.first_seq != seq:
            return None  # no longer here (retention): nothing to compare
        return chunk.last_hash.decode()

    async def _repair(self, cursor: Cursor, want: RepairRequest) -> None:
        """Publish records ``want.first``..``want.last`` again, from the local files."""
        logger.warning(
            "the collector is missing seq %d-%d of stream %s: sending them again from the log",
            want.first,
            want.last,
            cursor.stream,
        )
        reader = LogFollower(
            self.log_path,
            max_records=self.settings.chunk_records,
            max_bytes=self.settings.chunk_bytes,
        )
        seq = want.first - 1
        while seq < want.last:
            chunk = await asyncio.to_thread(reader.next_chunk, seq, None)
            if chunk is None or chunk.first_seq != seq + 1:
                # No longer on this host (retention) or never was: nothing to send; the
                # collector calls the gap in the end and verify names it.
                logger.error(
                    "seq %d-%d of stream %s are not in this host's log: cannot repair them",
                    seq + 1,
                    want.last,
                    cursor.stream,
                )
                break
            headers = self._headers(cursor.stream, chunk)
            headers["Nats-Msg-Id"] += f":repair-{want.number}"
            await self._publish_acked(chunk.data, headers)
            self.stats.repaired_records += chunk.records
            seq = chunk.last_seq
        self.stats.repairs += 1

    async def _publish_acked(self, data: bytes, headers: dict[str, str]) -> None:
        subject = self.settings.subject(headers["Riskaudit-Stream"])
        delay = RETRY_MIN
        while True:
            try:
                await self.publish(subject, data, headers)
                return
            except Exception as exc:  # any transport failure: retry, never skip
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "publish of %s failed (%s); retrying in %.2fs",
                    headers["Nats-Msg-Id"],
                    self.stats.last_error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _headers(self, stream: str, chunk: Chunk) -> dict[str, str]:
        return {
            "Riskaudit-Stream": stream,
            "Riskaudit-Kind": "records",
            "Riskaudit-First-Seq": str(chunk.first_seq),
            "Riskaudit-Last-Seq": str(chunk.last_seq),
            "Nats-Msg-Id": f"{stream}:{chunk.first_seq}-{chunk.last_seq}",
        }

    def _read_window(self, seq: int, prev: bytes | None) -> list[Chunk]:
        chunks: list[Chunk] = []
        for _ in range(self.settings.window):
            chunk = self.follower.next_chunk(seq, prev)
            if chunk is None:
                break
            chunks.append(chunk)
            seq, prev = chunk.last_seq, chunk.last_hash
        return chunks

    async def step(self) -> bool:
        """Publish what is new (a window of chunks, then the sidecar); True if any.

        While a window's acknowledgements are awaited, the next window is read, so
        reading the disk and waiting for the cluster overlap."""
        cursor = self._ensure_cursor()
        if cursor is None:
            return False
        chunks = self._ahead
        self._ahead = []
        if not chunks or chunks[0].first_seq <= cursor.seq:
            chunks = self._read_window(cursor.seq, cursor.hash.encode() if cursor.hash else None)
        if chunks:
            sends = [
                asyncio.ensure_future(self._publish_acked(c.data, self._headers(cursor.stream, c)))
                for c in chunks
            ]
            try:
                # Read the next window on a worker thread while this one's
                # acknowledgements come in on the event loop.
                self._ahead = await asyncio.to_thread(
                    self._read_window, chunks[-1].last_seq, chunks[-1].last_hash
                )
            finally:
                await asyncio.gather(*sends)
            cursor.seq = chunks[-1].last_seq
            cursor.hash = chunks[-1].last_hash.decode()
            for c in chunks:
                if len(self._unconfirmed) < UNCONFIRMED_MAX:
                    first_ts = ts_ns_of(c.data[: c.data.find(b"\n")])
                    self._unconfirmed.append((c.last_seq, first_ts, c.last_hash.decode()))
            self.stats.published_messages += len(chunks)
            self.stats.published_records += sum(c.records for c in chunks)
        shipped = await self._ship_checkpoints(cursor)
        shipped = await self._ship_recovered(cursor) or shipped
        shipped = await self.look_at_board(cursor) or shipped
        if chunks or shipped:
            cursor.save(self.cursor_file)  # after every acknowledged window: exact resume
        return bool(chunks)

    async def _ship_checkpoints(self, cursor: Cursor) -> bool:
        try:
            size = self.sidecar.stat().st_size
        except FileNotFoundError:
            return False
        if size <= cursor.sidecar_offset:
            return False
        with open(self.sidecar, "rb") as fh:
            fh.seek(cursor.sidecar_offset)
            data = fh.read(min(size - cursor.sidecar_offset, self.settings.chunk_bytes))
        end = data.rfind(b"\n") + 1
        if end == 0:
            return False
        lines = data[:end].split(b"\n")[:-1]
        first, last = split_head(lines[0]), split_head(lines[-1])
        if first is None or last is None:
            logger.error("checkpoint sidecar %s holds a line that is no record", self.sidecar)
            cursor.sidecar_offset += end
            return True
        headers = {
            "Riskaudit-Stream": cursor.stream,
            "Riskaudit-Kind": "checkpoints",
            "Riskaudit-First-Seq": str(first[0]),
            "Riskaudit-Last-Seq": str(last[0]),
            "Nats-Msg-Id": f"{cursor.stream}:checkpoints:{first[0]}-{last[0]}",
        }
        await self._publish_acked(data[:end], headers)
        cursor.sidecar_offset += end
        self.stats.checkpoints += len(lines)
        return True

    async def _ship_recovered(self, cursor: Cursor) -> bool:
        """Recovered segments (``riskaudit recover`` puts stdout-only records back into
        ``<log>.recovered-<first>-<last>.jsonl``) fill holes the forwarder has passed:
        each is sent once, whole, in chunks, for the collector to keep as a recovered
        segment of its own beside the central log."""
        done = set(cursor.recovered)
        names = sorted(
            p.name
            for p in self.log_path.parent.glob(recovered_glob(self.log_path))
            if p.name not in done
        )
        for name in names:
            data = (self.log_path.parent / name).read_bytes()
            lines = data.split(b"\n")[:-1]
            step = self.settings.chunk_records
            for i in range(0, len(lines), step):
                part = lines[i : i + step]
                first, last = split_head(part[0]), split_head(part[-1])
                if first is None or last is None:
                    raise AuditConfigError(
                        "RISK_AUDIT_LOG_PATH", f"{name} holds a line that is no record"
                    )
                headers = {
                    "Riskaudit-Stream": cursor.stream,
                    "Riskaudit-Kind": "recovered",
                    "Riskaudit-File": name,
                    "Riskaudit-First-Seq": str(first[0]),
                    "Riskaudit-Last-Seq": str(last[0]),
                    "Nats-Msg-Id": f"{cursor.stream}:recovered:{first[0]}-{last[0]}",
                }
                await self._publish_acked(b"\n".join(part) + b"\n", headers)
            cursor.recovered.append(name)
        return bool(names)

    async def catch_up(self) -> None:
        """Forward what is there now, then return."""
        while await self.step():
            pass

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set."""
        while not stop.is_set():
            try:
                busy = await self.step()
            except AuditConfigError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("forwarding stopped for a moment")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL)


async def connect_jetstream(
    settings: ReplicationSettings, *, bounded: bool = False
) -> tuple[Any, Any]:
    """A NATS connection that reconnects forever, and its JetStream context.

    Forever, except for refused credentials: nats-py would retry a wrong password as
    patiently as an unreachable server, so a refused login ends the first connect with
    an AuditConfigError naming the setting (later refusals, say a rotated password,
    are logged while it keeps retrying). ``bounded`` (one-shot commands): the first
    connect gives up after ``settings.connect_timeout`` with a ConnectionError. Retries
    are reported once per backoff step (1 s, 2 s, ... up to a minute), not per attempt.
    """
    from nats.aio.client import Client  # noqa: PLC0415 (only the replication commands need it)

    loop = asyncio.get_running_loop()
    refused: asyncio.Future[str] = loop.create_future()
    quiet = {"until": 0.0, "step": 1.0, "hidden": 0}

    async def on_error(exc: Exception) -> None:
        text = str(exc).strip() or type(exc).__name__
        if "authorization violation" in text.lower() and not refused.done():
            refused.set_result(text)
        now = loop.time()
        if now < quiet["until"]:
            quiet["hidden"] += 1
            return
        more = f" ({quiet['hidden']} more like it)" if quiet["hidden"] else ""
        logger.warning("NATS: %s%s; retrying, next report in %.0fs", text, more, quiet["step"])
        quiet.update(until=now + quiet["step"], step=min(60.0, quiet["step"] * 2), hidden=0)

    kwargs: dict[str, Any] = {
        "servers": list(settings.urls),
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "error_cb": on_error,
    }
    if settings.creds_file:
        kwargs["user_credentials"] = settings.creds_file
    if settings.user is not None and settings.password_file is not None:
        # Read at connect time from a mounted secret: the password never sits in the
        # environment or a ConfigMap, and a rotated secret is used on the next start.
        try:
            password = Path(settings.password_file).read_text().strip("\r\n")
        except OSError as exc:
            raise AuditConfigError("RISK_AUDIT_NATS_PASSWORD_FILE", str(exc)) from exc
        kwargs["user"], kwargs["password"] = settings.user, password
    nc = Client()
    connecting: asyncio.Future[Any] = asyncio.ensure_future(nc.connect(**kwargs))
    either: set[asyncio.Future[Any]] = {connecting, refused}
    timeout = settings.connect_timeout if bounded else None
    await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await nc.close()
        if not refused.done():
            raise ConnectionError(
                f"cannot reach NATS at {', '.join(settings.urls)}: gave up after "
                f"{settings.connect_timeout:g}s (RISK_AUDIT_NATS_CONNECT_TIMEOUT)"
            )
        setting = "RISK_AUDIT_NATS_CREDS" if settings.creds_file else "RISK_AUDIT_NATS_USER"
        raise AuditConfigError(setting, f"the NATS server refused the login ({refused.result()})")
    connecting.result()  # raises what the connect raised
    return nc, nc.jetstream(timeout=API_TIMEOUT)


async def open_board(
    js: Any, settings: ReplicationSettings, *, create: bool = False
) -> Board | None:
    """The collector's board, or None (said loudly) when it cannot be had now: the
    caller goes on and tries again later. A forwarder does not create it (``create``:
    ``nats init`` and the collector do); without it nothing counts as replicated."""
    from nats.js.errors import BucketNotFoundError  # noqa: PLC0415

    try:
        return await KvBoard.open(js, settings, create=create)
    except BucketNotFoundError:
        logger.warning(
            "no key-value bucket %s: the collector's watermark cannot be read, so nothing "
            "counts as replicated (run `riskaudit nats init`, start `riskaudit collect`)",
            bucket_name(settings),
        )
    except Exception as exc:  # no permission, the cluster electing: the same warning
        logger.warning("the collector's watermark cannot be read: %s", exc)
    return None


def jetstream_publisher(js: Any, timeout: float = ACK_TIMEOUT) -> Publish:
    async def publish(subject: str, data: bytes, headers: dict[str, str]) -> Any:
        return await js.publish(subject, data, timeout=timeout, headers=headers)

    return publish


class ForwarderThread:
    """The forwarder beside a running service (``riskaudit serve --forward``): its own
    thread and event loop, connecting (and reconnecting) in the background, so a NATS
    outage never touches the writer or the HTTP service."""

    def __init__(
        self, log_path: Path, settings: ReplicationSettings, *, sidecar: Path | None = None
    ) -> None:
        self.settings = settings
        self._js: Any = None
        self.forwarder = Forwarder(log_path, settings, self._publish, sidecar=sidecar)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, name="riskaudit-forward", daemon=True)

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> Any:
        if self._js is None:
            raise ConnectionError("not connected to NATS yet")
        return await self._js.publish(subject, data, timeout=ACK_TIMEOUT, headers=headers)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = None
        delay = RETRY_MIN
        while nc is None and not self._stop.is_set():
            try:
                nc, self._js = await connect_jetstream(self.settings)
                self.forwarder.board_opener = functools.partial(open_board, self._js, self.settings)
            except Exception as exc:
                self.forwarder.stats.errors += 1
                self.forwarder.stats.last_error = f"connect: {exc}"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(RETRY_MAX, delay * 2)
        try:
            await self.forwarder.run(self._stop)
        finally:
            if nc is not None:
                await nc.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)
