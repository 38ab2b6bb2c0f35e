"""The writer thread: it alone owns the file and the chain state.

Each turn it takes everything queued, glues ``seq``/``prev``/``ts`` onto the bodies the
producers encoded, hashes each line into the next one's ``prev``, writes the batch with
as few ``write`` calls as the size allows and fsyncs once (group commit). Only after
the fsync does the durable watermark move and ``flush()`` callers wake.

The GIL matters here: every blocking call releases it, and taking it back from a
producer that never pauses costs a whole switch interval (5 ms by default). So a batch
is made durable with one system call where the kernel allows it, ``pwritev`` with
``RWF_DSYNC`` (a write and an fdatasync in one), and the chaining loop does as little
as it can per record (see ``chain_batch``).

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

from riskaudit.log._codec import chain_batch
from riskaudit.log._files import write_durably

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
        self.prev, chunks = chain_batch(items, self.prev, CHUNK_BYTES)
        self._backlog.extend(chunks)
        self.last_seq = items[-1][0]

    # -- durability ---------------------------------------------------------------

    def commit(self) -> None:
        """Write the backlog durably; on OSError truncate back to the durable offset."""
        if not self._backlog:
            return
        try:
            write_durably(self.fd, [data for _last, data in self._backlog], self.durable_offset)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.durable_offset)
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
