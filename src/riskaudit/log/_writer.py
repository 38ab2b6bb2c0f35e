"""The writer thread: it alone owns the file and the chain state.

Each turn it takes everything queued, glues ``seq``/``prev``/``ts`` onto the bodies the
producers encoded, hashes each line into the next one's ``prev``, writes the batch with
as few ``write`` calls as the size allows and fsyncs once (group commit). Only after
the fsync does the durable watermark move and ``flush()`` callers wake.

The GIL matters here: every ``write`` and ``fsync`` releases it, and taking it back
from a producer that never pauses can cost a whole switch interval (5 ms by default).
So the writer makes few releases per batch (one write per 4 MiB, one fsync), and the
producer side yields briefly when the backlog grows (see ``AuditLog.append``).

A failed write or fsync truncates the file back to the last durable offset, keeps the
already-chained bytes, and retries with capped exponential backoff; while it fails, it
takes nothing new, so the bounded queue pushes back on producers instead of memory
growing without bound.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from riskaudit.log._codec import control_line, event_line, line_hash
from riskaudit.log._files import write_all

if TYPE_CHECKING:
    from riskaudit.log._auditlog import AuditLog

logger = logging.getLogger("riskaudit.writer")

CHUNK_BYTES = 4 << 20
RETRY_MIN = 0.05
RETRY_MAX = 30.0

QueueItem = tuple[int, int, Any]


class Writer:
    """Chain state and file handle of one log; :meth:`run` is the thread body."""

    def __init__(self, log: AuditLog, fd: int, last_seq: int, last_hash: bytes) -> None:
        self._log = log
        self.fd = fd
        self.last_seq = last_seq
        self.prev = last_hash
        self.durable_offset = os.fstat(fd).st_size
        self._backlog: list[tuple[int, bytes]] = []  # (last seq in chunk, bytes), chained
        self.batches = 0
        self.write_errors = 0
        #: Test seam: while this event is clear, the writer waits before each turn.
        self.gate = threading.Event()
        self.gate.set()
        self.thread = threading.Thread(target=self.run, name="riskaudit-writer", daemon=True)

    # -- encoding -----------------------------------------------------------------

    def chain(self, items: list[QueueItem]) -> None:
        """Encode and chain queued items into the backlog, in ``seq`` order."""
        prev = self.prev
        parts: list[bytes] = []
        size = 0
        last = self.last_seq
        for seq, ts_ns, body in items:
            if body.__class__ is bytes:
                line = event_line(seq, prev, ts_ns, body)
            else:
                line = control_line(seq, prev, body[0], body[1], ts_ns)
            prev = line_hash(line)
            parts.append(line)
            parts.append(b"\n")
            size += len(line) + 1
            last = seq
            if size >= CHUNK_BYTES:
                self._backlog.append((last, b"".join(parts)))
                parts = []
                size = 0
        if parts:
            self._backlog.append((last, b"".join(parts)))
        self.prev = prev
        self.last_seq = last

    # -- durability ---------------------------------------------------------------

    def commit(self) -> None:
        """Write the backlog and fsync once; raise OSError with the file truncated back."""
        if not self._backlog:
            return
        fd = self.fd
        try:
            for _last, data in self._backlog:
                write_all(fd, data)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.durable_offset)
            raise
        durable_seq = self._backlog[-1][0]
        self.durable_offset += sum(len(data) for _last, data in self._backlog)
        self._backlog.clear()
        self.batches += 1
        self._log._mark_durable(durable_seq)

    @property
    def pending_records(self) -> bool:
        return bool(self._backlog)

    # -- the thread ---------------------------------------------------------------

    def run(self) -> None:
        log = self._log
        retry = 0.0
        try:
            while True:
                self.gate.wait()
                if self._backlog:
                    try:
                        self.commit()
                        if retry:
                            logger.warning("audit log writable again: %s", log.path)
                        retry = 0.0
                    except OSError as exc:
                        self.write_errors += 1
                        retry = min(RETRY_MAX, max(RETRY_MIN, retry * 2))
                        logger.error(
                            "audit log write failed (%s); seq %d-%d kept in memory, "
                            "retrying in %.2fs",
                            exc,
                            log.durable_seq + 1,
                            self.last_seq,
                            retry,
                        )
                        if log._closing_deadline_passed():
                            return
                        log._sleep_writer(retry)
                        continue
                items, closing = log._take()
                if items:
                    self.chain(items)  # committed at the top of the next turn
                elif closing:
                    return
        except BaseException as exc:  # the thread must never die silently
            log._writer_died(exc)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def close_sync(self) -> None:
        """Close the file when the thread was never started (open failed half-way)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
