"""What the writer watches besides its records: the lock file, the clock, the volume.

The writer thread calls :meth:`Monitor.tick` about twice a second. The monitor keeps
the facts health reads (lock lost, the clock's verdict, the last storage report) and
says what changed: a ``clock`` record through the hand-off when the clock's verdict
flips, a log line for each new storage warning, the lock taken again after ``rm -r``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from riskaudit.clock import ClockReader, ClockState
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditError, AuditStorageError
from riskaudit.format import lock_path_for
from riskaudit.log._handoff import HandOff
from riskaudit.log._lock import WriterLock
from riskaudit.log._volume import StorageReport, check_storage, existing_ancestor

logger = logging.getLogger("riskaudit")

#: Seconds between two readings of the kernel clock's synchronisation state.
CLOCK_EVERY = 5.0


class Monitor:
    """The lock, the clock and the volume of one log, polled from the writer thread."""

    def __init__(self, config: AuditConfig, path: Path, read_clock: ClockReader) -> None:
        self._config = config
        self._path = path
        self._read_clock = read_clock
        self.clock: ClockState = read_clock()
        self.clock_problem = self.clock.problem(config.clock_max_error)
        self._next_clock = 0.0
        self._next_storage = 0.0
        self.storage: StorageReport | None = None
        self.lock: WriterLock | None = None
        self.lock_lost = False
        #: Where clock records go once the log is open (None before).
        self.handoff: HandOff | None = None
        #: Told the clock's fields whenever they are read (the checkpointer signs them).
        self.on_clock: Callable[[dict[str, Any]], None] | None = None

    def check_storage_at_start(self) -> None:
        """Refuse volatile storage when required; log what the first check finds."""
        cfg = self._config
        report = check_storage(
            existing_ancestor(self._path.parent),
            in_kubernetes=cfg.in_kubernetes,
            marks=cfg.watermarks,
            probe=False,
        )
        self.storage = report
        if report.volatile_reason is not None and cfg.require_persistent:
            raise AuditStorageError(
                report.warnings[0] + " (RISK_AUDIT_REQUIRE_PERSISTENT=1: refusing to start)"
            )
        for warning in report.warnings:
            logger.warning("%s", warning)

    def take_lock(self, spool_dir: Path | None) -> WriterLock:
        self.lock = WriterLock(lock_path_for(self._path), spool_dir)
        return self.lock

    def clock_fields(self) -> dict[str, Any]:
        return {
            **self.clock.to_record(),
            "problem": self.clock_problem or "ok",
            "limit_s": self._config.clock_max_error,
        }

    def tick(self, now: float, on_primary: bool) -> None:
        """Housekeeping on the writer thread: the lock, the clock and the volume, each
        on its own interval. ``on_primary``: whether a write probe makes sense."""
        if self.lock is not None and self.lock.lost():
            self._relock()
        if now >= self._next_clock:
            self._next_clock = now + CLOCK_EVERY
            self.check_clock()
        if now >= self._next_storage:
            self._next_storage = now + self._config.storage_check_interval
            report = check_storage(
                existing_ancestor(self._path.parent),
                in_kubernetes=self._config.in_kubernetes,
                marks=self._config.watermarks,
                probe=on_primary,
            )
            old = self.storage.warnings if self.storage is not None else []
            for warning in report.warnings:
                if warning not in old:
                    logger.warning("%s", warning)
            self.storage = report

    def check_clock(self) -> None:
        """Re-read the kernel clock; a ``clock`` record when its verdict changes."""
        self.clock = self._read_clock()
        problem = self.clock.problem(self._config.clock_max_error)
        if (problem is None) != (self.clock_problem is None):
            self.clock_problem = problem
            if self.handoff is not None:
                self.handoff.writer_control("clock", self.clock_fields())
            logger.warning("system clock: %s (%s)", problem or "back within limits", self.clock)
        self.clock_problem = problem
        if self.on_clock is not None:
            self.on_clock(self.clock_fields())

    def _relock(self) -> None:
        """The lock file was deleted or replaced (``rm -r`` of the log directory): take
        the lock again on a fresh file; if another writer already holds it, we have
        lost the lock and say so (health: failing)."""
        assert self.lock is not None
        try:
            fresh = WriterLock(lock_path_for(self._path), self._config.spool_dir)
        except AuditError as exc:
            if not self.lock_lost:
                logger.critical("audit log lock %s lost: %s", self.lock.path, exc)
            self.lock_lost = True
            return
        self.lock.release()
        self.lock = fresh
        if self.lock_lost:
            logger.warning("audit log lock %s held again", fresh.path)
        else:
            logger.warning("audit log lock %s was removed; taken again", fresh.path)
        self.lock_lost = False
