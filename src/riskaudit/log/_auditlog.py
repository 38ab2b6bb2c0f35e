"""AuditLog: the non-blocking hand-off between producers and the writer thread.

``append`` does the least it can on the producer's thread: encode the event body (which
also snapshots it and rejects what JSON cannot hold), then, under one lock, take the
next ``seq``, stamp the acceptance time and put the item on a list. Because ``seq`` is
taken under the same lock as the list append, queue order is ``seq`` order. The writer
swaps the whole list out in O(1), so producers and the writer touch the lock briefly.

The producer wakes the writer only when it is idle and there is a reason: with a flush
interval of 0, any record; otherwise a queue past its high-water mark. ``flush()`` and
``close()`` always wake it. A full queue makes ``append`` wait up to the configured
append timeout, then raise AuditQueueFullError: nothing is dropped silently.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from riskaudit._version import __version__
from riskaudit.config import AuditConfig
from riskaudit.errors import (
    AuditClosedError,
    AuditFlushTimeoutError,
    AuditForkedError,
    AuditQueueFullError,
    AuditStateError,
    AuditStorageError,
)
from riskaudit.events import RiskEvent
from riskaudit.log._codec import FORMAT, encode_event_body
from riskaudit.log._files import FILE_MODE, ensure_dir, fsync_dir
from riskaudit.log._lock import WriterLock, lock_path_for
from riskaudit.log._resume import ChainHead, cut_torn_tail, find_head
from riskaudit.log._writer import QueueItem, Writer

logger = logging.getLogger("riskaudit")

_OPEN, _CLOSING, _CLOSED, _FORKED, _FAILED = range(5)
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
    ) -> None:
        """Open (or create) the log, repair a torn tail, write ``start``, start the writer.

        ``on_durable(seq)`` is called on the writer thread after every fsync with the
        new durable watermark (metrics and benchmarks hook in here); keep it quick.
        """
        self._on_durable = on_durable
        cfg = config if config is not None else AuditConfig()
        if path is not None:
            cfg = cfg.with_(log_path=Path(path))
        self.config = cfg
        self.path = Path(os.path.abspath(cfg.log_path))
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._space_waiters = 0
        self._pending: list[QueueItem] = []
        self._maxsize = cfg.queue_size
        self._backlog_limit = min(cfg.backlog_limit or cfg.queue_size, cfg.queue_size)
        self.throttled = 0
        self._wake_at = 1 if cfg.flush_interval == 0 else max(1, cfg.queue_size // 4)
        self._wake = threading.Event()
        self._writer_idle = False
        self._durable = threading.Condition(threading.Lock())
        self._durable_seq = 0
        self._state = _CLOSED
        self._failure: BaseException | None = None
        self._close_deadline: float | None = None
        self._owner_pid = os.getpid()
        if cfg.switch_interval is not None:
            sys.setswitchinterval(cfg.switch_interval)  # opt-in interpreter tuning

        ensure_dir(self.path.parent)
        self._file_lock = WriterLock(lock_path_for(self.path))
        try:
            fd, created = _open_log_file(self.path)
            try:
                head = find_head(fd)
                self.repaired = None
                if head.torn:
                    self.repaired = cut_torn_tail(fd, self.path, head)
                    logger.warning(
                        "audit log %s had a torn tail: %d bytes kept in %s",
                        self.path,
                        self.repaired.cut_bytes,
                        self.repaired.kept_at,
                    )
                self.stream = head.stream or str(uuid.uuid4())
                self._writer = Writer(self, fd, head.last_seq, head.last_hash)
                self._next_seq = head.last_seq + 1
                self._durable_seq = head.last_seq
                self._write_opening_records(head, created)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            self._file_lock.release()
            raise
        self._state = _OPEN
        _LIVE.add(self)
        self._writer.thread.start()
        logger.info("Audit log file initialized: %s", self.path)

    # -- opening --------------------------------------------------------------------

    def _write_opening_records(self, head: ChainHead, created: bool) -> None:
        now = time.time_ns()
        items: list[QueueItem] = []
        if head.last_seq == 0:
            items.append(
                (
                    1,
                    now,
                    (
                        "genesis",
                        {"stream": self.stream, "format": FORMAT, "host": self.config.host},
                    ),
                )
            )
        if self.repaired is not None:
            r = self.repaired
            items.append(
                (
                    self._take_seq(items, head),
                    now,
                    (
                        "repair",
                        {
                            "cut_bytes": r.cut_bytes,
                            "cut_sha256": r.cut_sha256,
                            "kept_at": r.kept_at,
                        },
                    ),
                )
            )
        items.append((self._take_seq(items, head), now, ("start", self._identity())))
        self._writer.chain(items)
        try:
            self._writer.commit()
            if created:
                fsync_dir(self.path.parent)
        except OSError as exc:
            raise AuditStorageError(f"cannot write audit log {self.path}: {exc}") from exc
        self._next_seq = items[-1][0] + 1

    @staticmethod
    def _take_seq(items: list[QueueItem], head: ChainHead) -> int:
        return (items[-1][0] if items else head.last_seq) + 1

    def _identity(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": self.config.host,
            "version": __version__,
            "stream": self.stream,
        }

    # -- the producer side ----------------------------------------------------------

    def append(self, event: RiskEvent) -> int:
        """Hand the event to the writer; return its ``seq``. Microseconds, no I/O."""
        body = encode_event_body(event)
        with self._lock:
            if self._state is not _OPEN:
                self._raise_state()
            pending = self._pending
            n = len(pending)
            if n >= self._backlog_limit:
                if n >= self._maxsize:
                    self._wait_for_space()
                elif not event.risk_reducing:
                    self._throttle()
                pending = self._pending
                n = len(pending)
            seq = self._next_seq
            self._next_seq = seq + 1
            pending.append((seq, time.time_ns(), body))
        if n >= self._wake_at and self._writer_idle:
            self._writer_idle = False
            self._wake.set()
        return seq

    def _throttle(self) -> None:
        """Backpressure, called with the lock held and the backlog past its limit.

        A producer that never pauses starves the writer of the GIL, and the backlog (so
        the time to durable) then grows without bound. Waiting here, at most the append
        timeout, hands the GIL to the writer until it has taken the queue. Never raises.
        """
        self.throttled += 1
        if self._writer_idle:
            self._wake.set()
        self._space_waiters += 1
        try:
            self._space.wait(self.config.append_timeout)
        finally:
            self._space_waiters -= 1

    def _wait_for_space(self) -> None:
        """Called with the lock held and the queue full."""
        self._wake.set()
        deadline = time.monotonic() + self.config.append_timeout
        self._space_waiters += 1
        try:
            while len(self._pending) >= self._maxsize:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AuditQueueFullError(
                        f"audit queue full ({self._maxsize} records) for "
                        f"{self.config.append_timeout:g}s: the writer of {self.path} is not "
                        "keeping up; the event was not recorded"
                    )
                self._space.wait(remaining)
                if self._state is not _OPEN:
                    self._raise_state()
        finally:
            self._space_waiters -= 1

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
        """The durable watermark: every record up to this ``seq`` is fsynced."""
        return self._durable_seq

    @property
    def last_seq(self) -> int:
        """The last ``seq`` handed out (it may not be durable yet)."""
        return self._next_seq - 1

    def flush(self, timeout: float | None = None) -> None:
        """Return once every record appended before the call is fsynced.

        Raises AuditFlushTimeoutError if that takes longer than ``timeout`` seconds.
        """
        with self._lock:
            if self._state is not _OPEN and self._state is not _CLOSING:
                if self._state is _CLOSED and self._durable_seq >= self._next_seq - 1:
                    return
                self._raise_state()
            target = self._next_seq - 1
        self.wait_durable(target, timeout)

    def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        """Block until ``seq`` is durable (the write-ahead wait of ``durable=True``)."""
        if self._durable_seq >= seq:
            return
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._durable:
            while self._durable_seq < seq:
                if self._state is _FAILED or self._state is _FORKED:
                    self._raise_state()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise AuditFlushTimeoutError(
                        f"seq {self._durable_seq + 1}-{seq} not durable after {timeout:g}s",
                        durable_seq=self._durable_seq,
                        target_seq=seq,
                    )
                self._durable.wait(remaining if remaining is not None else 1.0)

    # -- the writer side (called from the writer thread) ----------------------------

    def _take(self) -> tuple[list[QueueItem], bool]:
        """Wait for work (group-commit window), then take everything queued."""
        interval = self.config.flush_interval
        self._writer_idle = True  # set before looking, so a producer cannot miss it
        if interval > 0:
            if len(self._pending) < self._wake_at:
                self._wake.wait(interval)
        elif not self._pending:
            self._wake.wait(0.5)
        self._writer_idle = False
        self._wake.clear()
        with self._lock:
            items = self._pending
            if items:
                self._pending = []
                if self._space_waiters:
                    self._space.notify_all()
            closing = self._state is _CLOSING
        return items, closing

    def _mark_durable(self, seq: int) -> None:
        with self._durable:
            self._durable_seq = seq
            self._durable.notify_all()
        if self._on_durable is not None:
            self._on_durable(seq)

    def _sleep_writer(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def _closing_deadline_passed(self) -> bool:
        return self._close_deadline is not None and time.monotonic() > self._close_deadline

    def _writer_died(self, exc: BaseException) -> None:
        logger.critical("riskaudit writer thread died: %r", exc)
        self._failure = exc
        self._state = _FAILED
        with self._durable:
            self._durable.notify_all()
        with self._lock:
            self._space.notify_all()

    # -- closing --------------------------------------------------------------------

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Drain the queue, write a ``stop`` record, fsync, stop the writer. Idempotent."""
        with self._lock:
            if self._state is not _OPEN:
                return
            self._state = _CLOSING
            seq = self._next_seq
            self._next_seq = seq + 1
            self._pending.append((seq, time.time_ns(), ("stop", self._identity())))
            self._space.notify_all()
        self._close_deadline = time.monotonic() + timeout
        self._wake.set()
        self._writer.thread.join(timeout + 1.0)
        _LIVE.discard(self)
        if self._writer.thread.is_alive() or self._durable_seq < seq:
            logger.critical(
                "audit log %s closed with seq %d-%d not durable (storage failing)",
                self.path,
                self._durable_seq + 1,
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
        try:
            yield
        finally:
            self._writer.gate.set()

    def _after_fork_in_child(self) -> None:
        self._state = _FORKED
        self._pending = []
        self._lock = threading.Lock()
        self._file_lock.abandon()
        with contextlib.suppress(OSError):
            os.close(self._writer.fd)

    def __repr__(self) -> str:
        return (
            f"AuditLog({str(self.path)!r}, last_seq={self.last_seq}, durable={self._durable_seq})"
        )


def _open_log_file(path: Path) -> tuple[int, bool]:
    """Open (or create, mode 0640) the log for appending; say whether it was created."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE), True
        except FileExistsError:
            return os.open(path, flags), False
    except OSError as exc:
        raise AuditStorageError(f"cannot open audit log {path}: {exc}") from exc


def _close_all_at_exit() -> None:
    for log in list(_LIVE):
        if log._owner_pid == os.getpid():
            log.close()


def _mark_forked() -> None:
    for log in list(_LIVE):
        log._after_fork_in_child()


atexit.register(_close_all_at_exit)
os.register_at_fork(after_in_child=_mark_forked)
