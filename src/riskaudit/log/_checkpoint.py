"""Checkpoints: signed statements of the chain head, in the log and in a sidecar.

A hash chain cannot show that its newest records were cut off, and whoever can write
the file can rewrite the whole chain. A checkpoint names the newest record (its
``seq`` and hash) at a moment, signed with a key that is not on the log volume, and is
written twice: into the chain itself and, synced, into the sidecar
``<log>.checkpoints`` that operators ship off the host. Checkpoints are written every
interval even when nothing else happens — silence is evidence too — every N records,
and at close (after the ``stop`` record, so a clean close is sealed).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from riskaudit.errors import AuditStorageError
from riskaudit.format import atomic_write, format_ts, torn_path
from riskaudit.integrity import Signer, signed_text
from riskaudit.log._destinations import AppendFile

logger = logging.getLogger("riskaudit.checkpoint")


def unsigned_fields(stream: str, covers_seq: int, covers_hash: bytes, ts_ns: int) -> dict[str, Any]:
    """A checkpoint's fields without a signature (the seal of a file when checkpoints
    are off): the same fields, so every reader learns the stream from any checkpoint."""
    return {
        "stream": stream,
        "covers_seq": covers_seq,
        "covers_hash": covers_hash.decode("ascii"),
        "ts": format_ts(ts_ns),
    }


class Checkpointer:
    """When a checkpoint is due, what it says, and the sidecar it is copied to."""

    def __init__(
        self,
        *,
        stream: str,
        signer: Signer | None,
        sidecar: Path,
        interval: float,
        every_records: int,
    ) -> None:
        self.stream = stream
        self.signer = signer
        self.sidecar = AppendFile(sidecar)
        self.interval = interval
        self.every_records = every_records
        self.records = 0
        self.last = time.monotonic()
        self.written = 0
        #: The ``seq`` of the last checkpoint committed durably: at close, a chain head
        #: that is that checkpoint is sealed already (a second one would only cover it).
        self.sealed_seq: int | None = None
        self.sidecar_failures = 0
        #: The newest clock reading (a ``clock`` record's fields), and the last one
        #: chained: a reading goes into the chain as a ``clock`` record right before the
        #: checkpoint that then covers it — never as a field of the checkpoint, which
        #: carries nothing its signature does not cover.
        self.clock: dict[str, Any] | None = None
        self._clock_chained: dict[str, Any] | None = None

    def due(self, now: float) -> bool:
        if self.every_records and self.records >= self.every_records:
            return True
        return now - self.last >= self.interval

    def fields(self, covers_seq: int, covers_hash: bytes, ts_ns: int) -> dict[str, Any]:
        """The record's fields in format-v1 order: exactly what the signed text covers
        (``stream``, ``covers_seq``, ``covers_hash``, ``ts``), then ``key_id`` and ``sig``."""
        fields = unsigned_fields(self.stream, covers_seq, covers_hash, ts_ns)
        if self.signer is not None:
            text = signed_text(self.stream, covers_seq, fields["covers_hash"], fields["ts"])
            fields["key_id"] = self.signer.key_id
            fields["sig"] = self.signer.sign(text)
        return fields

    def clock_chained(self, reading: dict[str, Any]) -> None:
        """This reading is in the chain already (the ``start`` record carries it)."""
        self.clock = self._clock_chained = reading

    def clock_read(self, reading: dict[str, Any]) -> None:
        """The clock's latest reading (the monitor's): chained before the next
        checkpoint if it differs from the one already in the chain."""
        self.clock = reading

    def clock_to_chain(self) -> dict[str, Any] | None:
        """The clock reading to chain before the next checkpoint (None: unchanged)."""
        if self.clock is None or self.clock == self._clock_chained:
            return None
        self._clock_chained = self.clock
        return self.clock

    def written_now(self, line: bytes, seq: int) -> None:
        """The checkpoint record (at ``seq``) was committed: copy it to the sidecar,
        synced."""
        self.sealed_seq = seq
        self.records = 0
        self.last = time.monotonic()
        self.written += 1
        try:
            if not self.sidecar.is_open or self.sidecar.poisoned is not None:
                self._reopen()
            self.sidecar.write([line + b"\n"])
        except (OSError, AuditStorageError) as exc:
            self.sidecar_failures += 1
            self.sidecar.close()
            logger.error("cannot append the checkpoint to %s: %s", self.sidecar.path, exc)

    def _reopen(self) -> None:
        """Open the sidecar; a line left incomplete by a crash or a failed write is
        copied aside (``<sidecar>.torn-<UTC>``) and cut, so the next line starts clean
        (the log holds every checkpoint the sidecar copies)."""
        side = self.sidecar
        side.open(create=True)
        assert side.fd is not None
        size = side.offset
        tail = os.pread(side.fd, min(size, 1 << 16), max(0, size - (1 << 16)))
        if tail and not tail.endswith(b"\n"):
            keep = size - (len(tail) - (tail.rfind(b"\n") + 1))
            atomic_write(torn_path(side.path), tail[keep - size :])
            os.ftruncate(side.fd, keep)
            os.fsync(side.fd)
            side.offset = keep
            logger.warning("checkpoint sidecar %s: cut an incomplete last line", side.path)

    def close(self) -> None:
        self.sidecar.close()
