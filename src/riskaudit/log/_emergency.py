"""The last destination: complete records on stdout, from a thread of their own.

When neither the primary file nor the spool can take a record, it is printed as one
line, ``AUDIT_EMERGENCY `` followed by the complete record (so container log
collectors keep the whole evidence, and ``riskaudit recover`` can put it back).

A full stdout pipe is a real case (a stuck log collector), and a write to it blocks.
So neither producers nor the writer write to stdout themselves: they hand lines to
this object, which never blocks them, and its own thread does the blocking write. Its
queue is bounded; a line that does not fit is counted as lost and logged — the one
place where riskaudit can lose an event, and never silently.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from typing import BinaryIO

from riskaudit.format import EMERGENCY_PREFIX

logger = logging.getLogger("riskaudit.emergency")
_PREFIX = EMERGENCY_PREFIX.encode()


class EmergencyOutput:
    """Bounded, non-blocking hand-off of emergency lines to stdout."""

    def __init__(self, stream: BinaryIO | None = None, capacity: int = 65_536) -> None:
        self._stream = stream
        self._capacity = capacity
        self._lines: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self.written = 0
        self.lost = 0
        self._thread = threading.Thread(target=self._run, name="riskaudit-emergency", daemon=True)
        self._thread.start()

    def put(self, line: bytes) -> bool:
        """Queue one record line (without prefix or newline); False if it was lost."""
        with self._cond:
            if self._closed:
                self._write_now(line)
                return True
            if len(self._lines) >= self._capacity:
                self.lost += 1
                lost = True
            else:
                self._lines.append(line)
                self._cond.notify()
                lost = False
        if lost:
            logger.critical("emergency output full: a record was LOST: %.200r", line)
        return not lost

    def drain(self, timeout: float) -> bool:
        """Wait until every queued line was written; False on timeout (a stuck pipe)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._lines or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (at most ``timeout`` seconds), then stop the thread."""
        self.drain(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        return len(self._lines)

    def _target(self) -> BinaryIO | int:
        if self._stream is not None:
            return self._stream
        out = sys.stdout
        buffer = getattr(out, "buffer", None)
        return buffer if buffer is not None else out.fileno()

    def _write_now(self, line: bytes) -> None:
        """After close (a late record): write synchronously, there is no thread left."""
        try:
            self._emit([line])
        except Exception as exc:
            self.lost += 1
            logger.critical("emergency output failed, a record was LOST: %r", exc)

    def _emit(self, batch: list[bytes]) -> None:
        data = b"".join(_PREFIX + line + b"\n" for line in batch)
        target = self._target()
        if isinstance(target, int):
            view = memoryview(data)
            while view:
                view = view[os.write(target, view) :]
        else:
            target.write(data)
            target.flush()
        self.written += len(batch)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._lines and not self._closed:
                    self._cond.wait()
                if not self._lines:
                    return
                batch = list(self._lines)
                self._lines.clear()
                self._busy = True
            try:
                self._emit(batch)
            except Exception as exc:  # stdout closed or broken: nowhere left to go
                self.lost += len(batch)
                logger.critical("emergency output failed, %d records LOST: %r", len(batch), exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
