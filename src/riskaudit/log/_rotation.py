"""Rotation: when the writer starts a new file, and what it keeps to survive copytruncate.

Three things move the active file under the writer, and each keeps the chain whole:

* **built-in rotation** (``RISK_AUDIT_ROTATE_BYTES`` / ``RISK_AUDIT_ROTATE_INTERVAL``):
  the writer seals the file with a checkpoint, renames it to a sealed segment name
  (``format/_names.py``), fsyncs the directory and starts a new file;
* **logrotate in create mode**: the file is renamed away and SIGUSR1/SIGHUP (or the
  writer's own identity check) makes the writer seal the renamed file and reopen the
  path;
* **logrotate copytruncate**, which is unsafe: lines written between its copy and its
  truncate exist nowhere. The writer notices the file shrinking under it before its
  next write, and writes the records of a bounded in-memory ring of recent records
  back at the start of the truncated file. The same record (same ``seq``, same bytes)
  in the rotated copy and in the new file is one record copied, so ``verify`` across
  both passes when the ring covered the window, and names the missing ``seq`` range
  when it did not.

Every new file begins with a ``segment`` record (the stream id, why the file was
started, and the previous file's name), so each file says which stream it belongs to.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from riskaudit._native import Chunk


class RecentRecords:
    """The last ``limit`` records written to the primary, as the chunks written.

    Holds references to bytes the writer made anyway (no copy: the core's turns hand
    theirs over as ``Chunk``, bytes-like); always keeps the newest
    chunk whole, so whatever reached the file since a truncation can be written back.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[tuple[int, int, bytes | Chunk]] = deque()
        self.records = 0

    def add(self, first: int, backlog: Sequence[tuple[int, bytes | Chunk]]) -> None:
        if self.limit <= 0:
            return
        chunks = self.chunks
        for last, data in backlog:
            chunks.append((first, last, data))
            self.records += last - first + 1
            first = last + 1
        while len(chunks) > 1:
            f, la, _d = chunks[0]
            if self.records - (la - f + 1) < self.limit:
                break
            chunks.popleft()
            self.records -= la - f + 1

    def clear(self) -> None:
        self.chunks.clear()
        self.records = 0

    def span(self) -> tuple[int, int] | None:
        if not self.chunks:
            return None
        return self.chunks[0][0], self.chunks[-1][1]

    def data(self) -> bytes:
        return b"".join(d for _f, _l, d in self.chunks)
