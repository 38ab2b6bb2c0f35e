"""A writer that appends as fast as it can until SIGTERM, reopening on SIGUSR1/SIGHUP as
``riskaudit serve`` does; prints how many events it appended when it stops."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from riskaudit import AuditConfig, AuditLog, EventPriority, EventType, RiskEvent


def main() -> None:
    log = AuditLog(AuditConfig.from_env())
    signal.signal(signal.SIGUSR1, lambda _s, _f: log.reopen())
    signal.signal(signal.SIGHUP, lambda _s, _f: log.reopen())
    stop = False

    def on_term(_s: int, _f: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    Path(sys.argv[1]).write_text(f"{os.getpid()}\n")
    n = 0
    while not stop:
        ev = RiskEvent(
            EventType.PRE_TRADE_CHECK,
            EventPriority.HIGH,
            "logrotate-test",
            {"order_id": f"o-{n}", "outcome": "pass", "pad": "x" * 100},
            event_id=f"ev-{n:09d}",
        )
        if log.append(ev) is None:
            raise SystemExit("an event went out unsequenced")
        n += 1
    log.close()
    print(n, flush=True)


if __name__ == "__main__":
    main()
