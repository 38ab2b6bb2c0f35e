"""Test helpers: build format-v1 logs directly from the codec, read records back."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from riskaudit import EventPriority, EventType, RiskEvent
from riskaudit.clock import ClockState
from riskaudit.format import control_line, encode_event_body, event_line
from riskaudit.log import ZERO_HASH, line_hash

#: The repository (the tests read its deploy/, docs/ and README.md).
ROOT = Path(__file__).resolve().parent.parent


def build_log(
    events: list[dict[str, Any]], *, start_ns: int = 1_795_683_600_000_000_000
) -> list[bytes]:
    """A valid stream: genesis, start, then one event record per dict (no newlines)."""
    lines: list[bytes] = []
    prev = ZERO_HASH
    ts = start_ns
    lines.append(
        control_line(
            1,
            prev,
            "genesis",
            {
                "stream": "3f6c1b2e-8d4a-4f7e-9c21-5a0b7d9e1c44",
                "format": "riskaudit/1",
                "host": "h",
            },
            ts,
        )
    )
    prev = line_hash(lines[-1])
    lines.append(control_line(2, prev, "start", {"pid": 1, "host": "h", "version": "0"}, ts))
    prev = line_hash(lines[-1])
    for i, data in enumerate(events):
        ts += 1000
        event = RiskEvent(
            EventType.PRE_TRADE_CHECK,
            EventPriority.CRITICAL,
            "src",
            data,
            {"i": i},
            event_id=f"00000000-0000-4000-8000-{i:012d}",
            timestamp_ns=ts,
        )
        line = event_line(3 + i, prev, ts, encode_event_body(event))
        lines.append(line)
        prev = line_hash(line)
    return lines


def write_lines(path: Path, lines: list[bytes], *, trailing_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    path.write_bytes(data)
    return path


def records(path: Path, *, checkpoints: bool = False) -> list[dict[str, Any]]:
    """Every record of a (valid) log file, parsed (checkpoints only if asked for)."""
    out = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out if checkpoints else [r for r in out if r.get("kind") != "checkpoint"]


def stream_records(directory: Path) -> list[dict[str, Any]]:
    """Every trusted record of the stream in a log directory, in file order, read the
    way verify reads it (sealed segments only up to their named end; recovered segments
    included)."""
    from riskaudit.integrity import expand, line_chunks, order

    out: list[dict[str, Any]] = []
    seen: set[bytes] = set()  # the same record in two files is one record copied
    for src in order(expand([str(directory)])):
        for lines, complete in line_chunks(src.path):
            if complete:
                for line in lines:
                    if (h := line_hash(line)) not in seen:
                        seen.add(h)
                        out.append(orjson.loads(line))
    return out


def stream_event_ids(directory: Path) -> list[str]:
    """Event ids of a log directory's stream: event records, then those that recovered
    records put back (sequenced lines and unsequenced events)."""
    ids: list[str] = []
    for r in stream_records(directory):
        if "event_id" in r:
            ids.append(r["event_id"])
        elif r.get("kind") == "recovered":
            ev = r.get("event") or (orjson.loads(r["record"]) if "record" in r else {})
            if isinstance(ev, dict) and "event_id" in ev:
                ids.append(ev["event_id"])
    return ids


def synced_clock() -> ClockState:
    """The kernel clock as a synchronised machine reports it, for the ``clock=`` seam of
    every log a test opens: CI machines often run unsynchronised, which would add
    ``clock`` records to the log and make record counts depend on the machine."""
    return ClockState(True, 0.0001, 0.00001, "TIME_OK")


def event(i: int = 0, **data: Any) -> RiskEvent:
    return RiskEvent(EventType.PRE_TRADE_CHECK, EventPriority.HIGH, "test", {"i": i, **data})


def require(condition: bool, reason: str) -> None:
    """Skip a test whose real tool or privilege is missing; under CI=true, fail instead."""
    import os

    import pytest

    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI: {reason}")
    pytest.skip(reason)


def clean_env() -> dict[str, str]:
    """This process's environment without any riskaudit setting (the test sets its own)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RISK_AUDIT_", "AUDIT_")) and k != "LOG_LEVEL"
    }


def start_serve(
    argv: list[str], port: int, env: dict[str, str], output: Path, **popen: Any
) -> subprocess.Popen[bytes]:
    """``<argv> serve`` on 127.0.0.1:``port``, its output (both streams) into ``output``."""
    with output.open("wb") as out:
        return subprocess.Popen(
            [*argv, "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            **popen,
        )


def run_captured(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """A child process as a user starts it, its output captured as text (never raises
    on a non-zero exit: the test reads the code)."""
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def wait_serving(
    proc: subprocess.Popen[bytes], url: str, output: Path, timeout: float = 30.0
) -> None:
    """Until `riskaudit serve` answers /health with its writer alive; fails with the
    server's output if it exits first or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"riskaudit serve exited {proc.returncode}:\n{output.read_text()}")
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"{url}/health", timeout=2).json()["writer_alive"]:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"no /health in {timeout:.0f} s:\n{output.read_text()}")
        time.sleep(0.1)


def utc(ns: int) -> str:
    """A UTC time to the second, as a holds file and the CLI take it."""
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
