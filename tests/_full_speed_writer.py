"""A writer that appends as fast as it can until SIGTERM, reopening on SIGUSR1/SIGHUP as
``riskaudit serve`` does; prints how many events it appended when it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def start(pid_file: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start this writer in a child process; return once it has written its pid file."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests._full_speed_writer", str(pid_file)],
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


if __name__ == "__main__":
    main()
