"""Seeded runs of a real writer under failing system calls (run with faultinject.so preloaded).

``python -m tests.faults._syscall_worker WORK OUT SEED [SEED ...]`` runs one scenario per
seed, each in its own directory under WORK, and writes one JSON line per run to OUT.

A run: open the log (faults off), switch the fault library on for the log and spool
directories only, and let 1 or 4 producer threads append events and confirm them —
with ``flush()`` (every record before the call) or ``durable=True`` semantics
(``wait_durable`` on the event's own seq). An event counts as confirmed only when that
call returned without raising. Then the faults are lifted, the writer comes back to the
primary, the log is closed, opened again (start-up repair and replay), and ``recover``
puts the stdout lines back. The run's result says what was confirmed and where every
event ended, and the test checks: every confirmed event in the log exactly once,
no event twice, and ``verify`` valid.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from riskaudit import (
    AuditConfig,
    AuditDegradedError,
    AuditError,
    AuditLog,
    verify_paths,
)
from riskaudit.format import _files
from riskaudit.log._emergency import EmergencyOutput
from riskaudit.recovery import recover
from riskaudit.settings import Rotation
from tests.faults._events import numbered_event
from tests.faults._faultlib import FaultControl, Spec
from tests.helpers import stream_event_ids

#: The calls the writer makes (it never calls pwrite, pwritev or fdatasync): the schedule
#: targets exactly these, so each must fire somewhere in the suite.
TARGETED = ("write", "pwritev2", "fsync", "ftruncate", "rename", "openat")
ERRNOS = ("EIO", "ENOSPC", "EROFS")
MIN_CONFIRMED = 1000
RUN_SECONDS = 6.0  # at most, to confirm the first events (they take ~0.2 s)
FAULT_SECONDS = 3.0  # at most, under faults


@dataclass(frozen=True, slots=True)
class Plan:
    """What one seed decides: the shape of the run and its fault schedule."""

    seed: int
    spool: bool
    threads: int
    confirm: str  # "flush" or "durable"
    dsync: bool  # pwritev2(RWF_DSYNC), or write + fsync (a file system without it)
    rotate_bytes: int
    spec: Spec

    @classmethod
    def of(cls, seed: int, root: Path) -> Plan:
        rnd = random.Random(seed)
        spool = rnd.random() < 0.5
        dirs = [str(root / "log")] + ([str(root / "spool")] if spool else [])
        errnos = tuple(e for e in ERRNOS if rnd.random() < 0.7) or (rnd.choice(ERRNOS),)
        spec = Spec(
            seed=seed,
            rate=rnd.uniform(0.004, 0.03),
            burst=rnd.randint(0, 6),
            after=rnd.randint(0, 40),
            calls=TARGETED,
            errnos=errnos,
            prefixes=tuple(dirs),
            enabled=True,
        )
        return cls(
            seed=seed,
            spool=spool,
            threads=rnd.choice((1, 4)),
            confirm=rnd.choice(("flush", "durable")),
            dsync=rnd.random() < 0.6,
            rotate_bytes=rnd.choice((0, 0, 96 * 1024)),
            spec=spec,
        )


def _config(root: Path, plan: Plan) -> AuditConfig:
    return AuditConfig(
        log_path=root / "log" / "risk_audit.jsonl",
        spool_dir=root / "spool" if plan.spool else None,
        flush_interval=0.001,
        retry_max=0.02,
        checkpoint_interval=0.25,
        checkpoint_records=300,
        rotation=Rotation(max_bytes=plan.rotate_bytes),
        host="fault-host",
        schema_policy="off",
        actor_policy="off",
    )


class Producers:
    """Producer threads and what each had confirmed."""

    def __init__(self, log: AuditLog, plan: Plan) -> None:
        self.log = log
        self.plan = plan
        self.confirmed: list[str] = []
        self.produced: list[str] = []
        self.degraded = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.next_index = [0] * plan.threads  # event ids stay unique across phases

    def run(self, tid: int) -> None:
        log, pending, i = self.log, [], self.next_index[tid]
        while not self.stop.is_set():
            event_id = f"s{self.plan.seed}-t{tid}-{i:07d}"
            ev = numbered_event("fault-run", event_id, i, "x" * (i % 7 * 40))
            i += 1
            seq = log.append(ev)
            with self.lock:
                self.produced.append(ev.event_id)
            if seq is None:
                continue  # unsequenced: never confirmed
            if self.plan.confirm == "durable":
                try:
                    log.wait_durable(seq, timeout=10)
                except AuditDegradedError:
                    self.degraded += 1
                    continue
                with self.lock:
                    self.confirmed.append(ev.event_id)
            else:
                pending.append(ev.event_id)
                if len(pending) >= 16:
                    try:
                        log.flush(timeout=10)
                    except AuditDegradedError:
                        self.degraded += 1
                    else:
                        with self.lock:
                            self.confirmed.extend(pending)
                    pending = []
        self.next_index[tid] = i

    def produce(self, until: Any, seconds: float) -> None:
        threads = [
            threading.Thread(target=self.run, args=(t,), daemon=True)
            for t in range(self.plan.threads)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            time.sleep(0.005)
        self.stop.set()
        for t in threads:
            t.join(30)


def run_one(seed: int, work: Path, faults: FaultControl) -> dict[str, Any]:
    root = work / f"seed-{seed}"
    root.mkdir(parents=True)
    plan = Plan.of(seed, root)
    cfg = _config(root, plan)
    _files._DSYNC = getattr(os, "RWF_DSYNC", None) if plan.dsync else None
    capture = root / "stdout.capture"
    out = open(capture, "ab")  # noqa: SIM115 (closed below, after the emergency thread)
    emergency = EmergencyOutput(stream=out)
    faults.disable()
    faults.reset()
    faults.configure(plan.spec)
    faults.disable()
    log = AuditLog(cfg, emergency=emergency)
    prod = Producers(log, plan)
    # Confirmed events from before the faults must survive them too (a cut back to a
    # stale offset once destroyed exactly those). flush() raises for the life of the
    # process once a record reached only stdout, so a flush-confirmed run confirms its
    # first thousand before the faults start; a durable=True run keeps confirming.
    warm = MIN_CONFIRMED if plan.confirm == "flush" else MIN_CONFIRMED // 2
    prod.produce(lambda: len(prod.confirmed) >= warm, RUN_SECONDS)
    prod.stop.clear()
    faults.enable()
    base = len(prod.produced)
    prod.produce(
        lambda: (
            faults.faults() >= 3
            and len(prod.confirmed) >= MIN_CONFIRMED
            and len(prod.produced) - base >= 2000
        ),
        FAULT_SECONDS,
    )
    faults.disable()
    fired = faults.stats()
    counters = log.counters
    reached = {
        "spool": counters.spool_records > 0,
        "stdout": counters.stdout_records > 0,
        "set_aside": bool(getattr(log._writer, "set_aside", ())),
    }
    deadline = time.monotonic() + 15
    while log.health().destination != "primary" and time.monotonic() < deadline:
        time.sleep(0.01)
    back = log.health().destination == "primary"
    if back and len(prod.confirmed) < MIN_CONFIRMED:
        # A durable=True run without a spool confirms little while everything fails
        # (each record reaching only stdout is refused): it goes on after the faults
        # lift, in the file that replaced the poisoned one, until it has its thousand.
        prod.stop.clear()
        prod.produce(lambda: len(prod.confirmed) >= MIN_CONFIRMED, RUN_SECONDS)
    log.close()
    emergency.close(timeout=5)
    out.close()
    AuditLog(cfg).close()  # start-up on what the faults left: repair, replay, seal
    sources = [capture] if capture.stat().st_size else []
    if sources:
        rep = recover(sources, cfg.log_path, cfg)
        missing = rep.missing
    else:
        missing = []
    report = verify_paths([cfg.log_path.parent])
    seen = Counter(stream_event_ids(cfg.log_path.parent))
    confirmed = set(prod.confirmed)
    return {
        "seed": seed,
        "plan": {
            "spool": plan.spool,
            "threads": plan.threads,
            "confirm": plan.confirm,
            "dsync": plan.dsync,
            "rotate_bytes": plan.rotate_bytes,
            "spec": plan.spec.render(),
        },
        "faults": [[g, e, n] for (g, e), n in sorted(fired.items())],
        "reached": reached,
        "back_on_primary": back,
        "produced": len(prod.produced),
        "confirmed": len(confirmed),
        "degraded": prod.degraded,
        "lost": sorted(confirmed - set(seen))[:20],
        "lost_count": len(confirmed - set(seen)),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "valid": report.valid,
        "findings": [str(f) for f in report.findings[:10]],
        "unrecovered_missing": [list(m) for m in missing],
    }


def main() -> None:
    work, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    seeds = [int(s) for s in sys.argv[3:]]
    faults = FaultControl()
    with open(out_path, "ab") as out:
        for seed in seeds:
            try:
                result = run_one(seed, work, faults)
            except (AuditError, OSError, AssertionError) as exc:
                faults.disable()
                result = {"seed": seed, "error": repr(exc), "trace": traceback.format_exc()}
            out.write(orjson.dumps(result) + b"\n")
            out.flush()


if __name__ == "__main__":
    main()
