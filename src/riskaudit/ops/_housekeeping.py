"""The service's schedule: backups every interval, checkpoints within seconds,
retention every ``RISK_AUDIT_RETENTION_INTERVAL``.

It runs on one background thread beside the writer, never on the producer's path,
and only reads sealed files (which the writer never touches again) and the sidecar.
Retention actions are written into the log through the open :class:`AuditLog`, so
this is also how a running service applies retention (the CLI cannot: it would need
the writer's lock).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riskaudit.archive import (
    SHIP_EVERY,
    Backup,
    apply_plan,
    archive_expiry,
    expire_archive,
    load_holds,
    plan,
    replicated_through,
)
from riskaudit.config import AuditConfig
from riskaudit.errors import AuditError
from riskaudit.format import holds_path, list_segments, sidecar_path
from riskaudit.log import AuditLog

logger = logging.getLogger("riskaudit.housekeeping")


@dataclass(slots=True)
class RetentionRun:
    decisions: list[Any]
    done: list[dict[str, Any]]


def open_backup(config: AuditConfig, log_path: Path, **kw: Any) -> Backup | None:
    """The configured backup of this log, or None when no target is set."""
    if not config.backup.target:
        return None
    sidecar = config.checkpoint_path or sidecar_path(log_path)
    return Backup.from_settings(
        log_path,
        config.backup,
        config.retention,
        sidecar=sidecar,
        holds_file=config.holds_file or holds_path(log_path),
        **kw,
    )


def run_retention(
    config: AuditConfig,
    log: AuditLog,
    *,
    backup: Backup | None,
    progress: Any = None,
    facts: dict[str, tuple[int, set[str]]] | None = None,
) -> RetentionRun:
    """Plan and apply retention for the open log; each action becomes a ``retention``
    record in the log (flushed before this returns)."""
    holds = load_holds(config.holds_file or holds_path(log.path))
    archived = backup.archived() if backup is not None else None
    segments = list_segments(log.path)
    decisions = plan(
        segments,
        config.retention,
        holds,
        archived_keys=archived,
        facts=facts,
        replicated_through=replicated_through(log.path),
    )

    def record(fields: dict[str, Any]) -> None:
        log.append_control("retention", fields)

    done = apply_plan(
        decisions,
        record=record,
        compression=config.compression,
        archive=backup,
        archived=archived,
        progress=progress,
    )
    if backup is not None and archived is not None:
        local = {s.key for s in list_segments(log.path)}
        expiries = archive_expiry(archived, local, config.retention, holds)
        done += expire_archive(backup, archived, expiries, record=record)
    log.flush(timeout=30)
    return RetentionRun(decisions, done)


class Housekeeper:
    """Backups, checkpoint shipping and retention on a schedule, in one thread."""

    def __init__(self, log: AuditLog, config: AuditConfig) -> None:
        self.log = log
        self.config = config
        self.backup = open_backup(config, log.path) if config.backup.enabled else None
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="riskaudit-housekeeping", daemon=True)
        self.backup_failures = self.backup.failures if self.backup else 0
        self.last_backup_ns = self.backup.last_success_ns if self.backup else None
        self.segment_facts: dict[str, tuple[int, set[str]]] = {}

    def start(self) -> None:
        if self.backup is None and self.config.retention_interval <= 0:
            return
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def backup_now(self) -> None:
        if self.backup is None:
            return
        report = self.backup.run()
        if report.errors:
            self.backup_failures += 1
        else:
            self.last_backup_ns = self.backup.last_success_ns

    def _run(self) -> None:
        next_backup = 0.0
        next_ship = 0.0
        retention_every = self.config.retention_interval
        next_retention = time.monotonic() + min(retention_every, 60.0) if retention_every else None
        while not self.stop_event.is_set():
            now = time.monotonic()
            try:
                if self.backup is not None and now >= next_backup:
                    next_backup = now + self.config.backup.interval
                    next_ship = now + SHIP_EVERY
                    self.backup_now()
                elif self.backup is not None and now >= next_ship:
                    next_ship = now + SHIP_EVERY
                    self.backup.ship_checkpoints()
            except AuditError as exc:
                self.backup_failures += 1
                logger.error("backup: %s", exc)
            except Exception:
                self.backup_failures += 1
                logger.exception("backup failed")
            if next_retention is not None and now >= next_retention:
                next_retention = now + retention_every
                try:
                    run_retention(
                        self.config, self.log, backup=self.backup, facts=self.segment_facts
                    )
                except Exception:
                    logger.exception("retention failed")
            self.stop_event.wait(0.5)
