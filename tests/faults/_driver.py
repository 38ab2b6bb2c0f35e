"""A writer process the fault scenarios steer: JSON commands on stdin, answers on fd 3.

Its stdout is the emergency channel (AUDIT_EMERGENCY lines), captured to a file by the
orchestrator exactly as a container runtime would keep it. Configuration comes from
the RISK_AUDIT_* environment, as in production. Event ids are deterministic
(``<prefix>-<index>``) so the orchestrator can count without being told each one.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson

from riskaudit import (
    AuditConfig,
    AuditDegradedError,
    AuditError,
    AuditLog,
    EventPriority,
    EventType,
    RiskEvent,
)


def main() -> None:
    answers = os.fdopen(int(sys.argv[1]), "wb", buffering=0)
    log = AuditLog(AuditConfig.from_env())
    stall: Any = None

    def answer(**fields: Any) -> None:
        answers.write(orjson.dumps(fields) + b"\n")

    answer(ok=True, pid=os.getpid(), destination=log.health().destination)
    for raw in sys.stdin:
        cmd = orjson.loads(raw)
        op = cmd["op"]
        try:
            if op == "produce":
                unsequenced = 0
                pad = "x" * int(cmd.get("size", 0))
                every = int(cmd.get("flush_every", 0))
                for i in range(int(cmd["n"])):
                    ev = RiskEvent(
                        EventType.PRE_TRADE_CHECK,
                        EventPriority.HIGH,
                        "fault-driver",
                        {"i": i, "pad": pad},
                        event_id=f"{cmd['prefix']}-{i:08d}",
                    )
                    if log.append(ev) is None:
                        unsequenced += 1
                    if every and (i + 1) % every == 0:
                        log.flush()
                        answer(ok=True, confirmed=i + 1)
                answer(ok=True, unsequenced=unsequenced)
            elif op == "flush":
                try:
                    log.flush(timeout=float(cmd.get("timeout", 30)))
                    answer(ok=True)
                except AuditDegradedError as exc:
                    answer(ok=False, degraded=[exc.first_seq, exc.last_seq], error=str(exc))
            elif op == "wait":
                deadline = time.monotonic() + float(cmd.get("timeout", 30))
                while log.health().destination != cmd["destination"]:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                h = log.health()
                answer(
                    ok=h.destination == cmd["destination"],
                    status=h.status,
                    destination=h.destination,
                    reasons=list(h.reasons),
                )
            elif op == "health":
                h = log.health()
                answer(
                    ok=True,
                    status=h.status,
                    destination=h.destination,
                    reasons=list(h.reasons),
                    counters=repr(log.counters),
                )
            elif op == "stall":
                stall = log.stall_writer()
                stall.__enter__()
                answer(ok=True)
            elif op == "unstall":
                stall.__exit__(None, None, None)
                answer(ok=True)
            elif op == "kill_switch":
                ev = RiskEvent(
                    EventType.KILL_SWITCH,
                    EventPriority.CRITICAL,
                    "fault-driver",
                    {"action": "activate"},
                    event_id=cmd["event_id"],
                )
                started = time.perf_counter()
                seq = log.append(ev)
                answer(ok=True, seconds=time.perf_counter() - started, seq=seq)
            elif op == "timed":
                ev = RiskEvent(
                    EventType.LIMIT_BREACH,
                    EventPriority.HIGH,
                    "fault-driver",
                    {},
                    event_id=cmd["event_id"],
                )
                started = time.perf_counter()
                seq = log.append(ev)
                answer(ok=True, seconds=time.perf_counter() - started, seq=seq)
            elif op == "close":
                log.close()
                answer(ok=True)
                return
            else:
                answer(ok=False, error=f"unknown op {op}")
        except AuditError as exc:
            answer(ok=False, error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
