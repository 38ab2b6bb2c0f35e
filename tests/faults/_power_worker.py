"""A writer on the power-loss file system: ``python -m tests.faults._power_worker SPEC OUT``.

SPEC is JSON (log path, spool, rotation, checkpoint cadence, confirmation mode); OUT is a
file on another file system where the worker appends the id of each event whose
confirmation returned (``flush()`` or ``wait_durable``), one per line, before it
produces the next. It produces until it is killed: the test crashes the file system
under it, then SIGKILLs it, as a power cut would.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import orjson

from riskaudit import (
    AuditConfig,
    AuditDegradedError,
    AuditError,
    AuditLog,
)
from riskaudit.settings import Rotation
from tests.faults._events import numbered_event


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    out = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    cfg = AuditConfig(
        log_path=Path(spec["log"]),
        spool_dir=Path(spec["spool"]) if spec.get("spool") else None,
        flush_interval=0.001,
        retry_max=0.02,
        checkpoint_interval=0.2,
        checkpoint_records=int(spec.get("checkpoint_records", 0)) or 100_000,
        rotation=Rotation(max_bytes=int(spec.get("rotate_bytes", 0))),
        host="power-host",
        schema_policy="off",
        actor_policy="off",
    )
    if not spec.get("dsync", True):
        # A file system without RWF_DSYNC: write, then fsync (the window a tear needs).
        from riskaudit.format import _files

        _files._DSYNC = None
    log = AuditLog(cfg)
    os.write(out, b"#open\n")
    durable = spec.get("confirm") == "durable"
    i, pending = 0, []
    limit = int(spec.get("max_events", 20_000))
    while True:
        if i >= limit:  # enough: keep the log small; the writer's timers go on
            time.sleep(0.05)
            continue
        ev = numbered_event("power-run", f"{spec['prefix']}-{i:07d}", i, "p" * (i % 9 * 50))
        i += 1
        try:
            seq = log.append(ev)
            if seq is None:
                continue
            if durable:
                log.wait_durable(seq, timeout=5)
                os.write(out, ev.event_id.encode() + b"\n")
            else:
                pending.append(ev.event_id)
                if len(pending) >= 8:
                    batch, pending = pending, []
                    log.flush(timeout=5)
                    os.write(out, b"".join(e.encode() + b"\n" for e in batch))
        except AuditDegradedError:
            pending = []
        except AuditError:
            pending = []


if __name__ == "__main__":
    main()
