"""`riskaudit serve` as a real process and its signals: the pid file, `riskaudit signal
rotate|reopen`, kill -USR2 / -HUP after a logrotate-style rename, events posted across
the new files (none lost, none doubled) and SIGTERM's clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from testbed.ports import free_port

from riskaudit import verify_paths
from riskaudit.format import list_segments
from riskaudit.log import line_hash
from riskaudit.log._writer import IDENTITY_EVERY
from riskaudit.ops import create_token
from tests.conftest import RISKAUDIT
from tests.helpers import clean_env, start_serve, wait_serving

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
REACT_TIMEOUT = 10.0
# uvicorn drains, then re-raises SIGTERM; `serve` ends with 0 (a supervisor's stop).
CLEAN_SIGTERM_EXITS = (0,)
#: `riskaudit serve` (the same CLI entry point) with the writer's periodic identity
#: check, IDENTITY_EVERY (0.5 s, a module constant: no setting), pushed out to an hour,
#: so that only SIGHUP/SIGUSR1 can make it notice that its file was renamed away.
SLOW_SELF_CHECK = (
    "import sys; import riskaudit.log._writer as w; w.IDENTITY_EVERY = 3600.0; "
    "from riskaudit.cli import main; sys.argv[0] = 'riskaudit'; sys.exit(main())"
)


@dataclass
class Server:
    """A running `riskaudit serve` and what the test needs to talk to it."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    pid_file: Path
    output: Path
    token: str
    env: dict[str, str]

    @property
    def logs(self) -> Path:
        return self.log.parent

    def out(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]

    def post(self, client: httpx.Client, tag: str, n: int, *, durable: bool = False) -> list[int]:
        """Post ``n`` events with ids ``<tag>-<i>`` as one NDJSON batch; their seqs."""
        body = b"\n".join(
            orjson.dumps(
                {
                    "event_type": "ALERT",
                    "priority": "HIGH",
                    "source": "signals-test",
                    "data": {"message": f"{tag}-{i}"},
                    "event_id": f"{tag}-{i}",
                }
            )
            for i in range(n)
        )
        r = client.post(
            f"{self.url}/v1/events",
            params={"durable": "true"} if durable else None,
            content=body,
            headers={
                "authorization": f"Bearer {self.token}",
                "content-type": "application/x-ndjson",
            },
        )
        assert r.status_code == (200 if durable else 202), r.text
        seqs = r.json()["seqs"]
        assert len(seqs) == n and r.json()["duplicates"] == []
        return [int(s) for s in seqs]

    def signal_cli(self, what: str) -> None:
        """`riskaudit signal <what>` with RISK_AUDIT_PID_FILE set; the log path points
        elsewhere, so the pid can only have come from the pid file."""
        env = {
            **self.env,
            "RISK_AUDIT_LOG_PATH": str(self.logs.parent / "elsewhere" / "x.jsonl"),
        }
        out = subprocess.run(
            [RISKAUDIT, "signal", what], env=env, capture_output=True, text=True, check=False
        )
        name = {"rotate": "SIGUSR2", "reopen": "SIGUSR1"}[what]
        assert out.returncode == 0, out.stderr
        assert f"sent {name} ({what}) to {self.proc.pid}" in out.stdout

    def stop(self) -> None:
        """SIGTERM: a clean exit, the pid file removed, the log ends with `stop` and the
        checkpoint that seals it."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"riskaudit serve ignored SIGTERM for {STOP_TIMEOUT:.0f} s")
        assert code in CLEAN_SIGTERM_EXITS, f"exit {code} on SIGTERM:\n{self.out()}"
        assert not self.pid_file.exists()
        tail = file_records(self.log)[-2:]
        assert [r.get("kind") for r in tail] == ["stop", "checkpoint"], tail
        assert tail[0]["pid"] == self.proc.pid
        assert tail[1]["covers_seq"] == tail[0]["seq"] == tail[1]["seq"] - 1


@contextlib.contextmanager
def serving(tmp_path: Path, *, slow_self_check: bool = False) -> Iterator[Server]:
    """`riskaudit serve` on a free loopback port with a pid file and a writer token,
    ready (/health answers, writer alive); killed at the end if a test left it running."""
    token, line = create_token("signals-test", "writer")
    (tmp_path / "tokens").write_text(line + "\n")
    log = tmp_path / "logs" / "risk_audit.jsonl"
    pid_file = tmp_path / "run" / "riskaudit.pid"
    pid_file.parent.mkdir()
    env = {
        **clean_env(),
        "RISK_AUDIT_LOG_PATH": str(log),
        "RISK_AUDIT_PID_FILE": str(pid_file),
        "RISK_AUDIT_TOKENS_FILE": str(tmp_path / "tokens"),
    }
    port = free_port()
    argv = [sys.executable, "-c", SLOW_SELF_CHECK] if slow_self_check else [RISKAUDIT]
    output = tmp_path / "serve.out"
    proc = start_serve(argv, port, env, output)
    server = Server(proc, f"http://127.0.0.1:{port}", log, pid_file, output, token, env)
    try:
        wait_serving(proc, server.url, output, STARTUP_TIMEOUT)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path) as srv:
        yield srv


@pytest.fixture
def slow_check_server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path, slow_self_check=True) as srv:
        yield srv


def wait_for(condition: Callable[[], bool], what: str, timeout: float = REACT_TIMEOUT) -> float:
    """Poll ``condition`` until it holds; the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.005)
    return time.monotonic() - start


def lines_of(path: Path) -> list[bytes]:
    """The complete lines of a log file (a record being written may be cut off)."""
    try:
        return path.read_bytes().split(b"\n")[:-1]
    except FileNotFoundError:
        return []


def file_records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines_of(path)]


def begins_with_segment(path: Path) -> bool:
    lines = lines_of(path)
    return bool(lines) and orjson.loads(lines[0]).get("kind") == "segment"


def log_files(logs: Path) -> list[Path]:
    """Every file holding records: the active one, sealed segments, renamed ones."""
    return sorted(
        p
        for p in logs.iterdir()
        if p.name.startswith("risk_audit") and not p.name.endswith((".lock", ".checkpoints"))
    )


def assert_sealed_then_continued(old: Path, new: Path, *, reason: str, previous: str) -> None:
    """``old`` ends with the checkpoint that sealed it; ``new`` begins with the `segment`
    record that follows it in the chain and names where the chain came from."""
    old_lines, new_lines = lines_of(old), lines_of(new)
    last = orjson.loads(old_lines[-1])
    assert last["kind"] == "checkpoint"
    assert last["covers_seq"] == last["seq"] - 1
    assert last["covers_hash"] == line_hash(old_lines[-2]).decode()
    first = orjson.loads(new_lines[0])
    assert first["kind"] == "segment"
    assert (first["reason"], first["previous"]) == (reason, previous)
    assert first["seq"] == last["seq"] + 1
    assert first["prev"] == line_hash(old_lines[-1]).decode()


def send_rotate(server: Server, how: str) -> None:
    if how == "riskaudit signal rotate":
        server.signal_cli("rotate")
    else:
        os.kill(server.proc.pid, signal.SIGUSR2)


@pytest.mark.parametrize("how", ["riskaudit signal rotate", "kill -USR2"])
def test_pid_file_and_sigusr2_seal_a_segment(server: Server, how: str) -> None:
    """The pid file names the serve process; SIGUSR2 (by the command or by kill) seals
    the active file as a read-only segment and the chain verifies across both files."""
    assert server.pid_file.read_text() == f"{server.proc.pid}\n"
    with httpx.Client(timeout=10) as client:
        before = server.post(client, "before", 5, durable=True)
        assert list_segments(server.log) == []
        send_rotate(server, how)
        wait_for(
            lambda: len(list_segments(server.log)) == 1 and begins_with_segment(server.log),
            "a sealed segment and a new active file",
        )
        (seg,) = list_segments(server.log)
        assert seg.first_seq == 1 and seg.compression is None
        assert stat.S_IMODE(seg.path.stat().st_mode) == 0o440
        sealed = file_records(seg.path)
        assert sealed[-1]["seq"] == seg.last_seq
        assert set(before) <= {r["seq"] for r in sealed}
        assert_sealed_then_continued(seg.path, server.log, reason="rotate", previous=seg.path.name)
        after = server.post(client, "after", 5, durable=True)
    assert min(after) > seg.last_seq + 1
    assert set(after) <= {r["seq"] for r in file_records(server.log)}
    verified = subprocess.run(
        [RISKAUDIT, "verify", str(server.logs)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "files: 2" in verified.stdout and "VALID" in verified.stdout
    server.stop()
    report = verify_paths([server.logs])
    assert report.valid, report.findings
    assert len(report.files) == 2


@pytest.mark.parametrize("how", ["kill -HUP", "riskaudit signal reopen"])
def test_reopen_signal_after_rename_seals_the_renamed_file(
    slow_check_server: Server, how: str
) -> None:
    """logrotate create mode: after os.rename(log, log.1) the writer keeps writing to .1
    and never notices by itself (its periodic check is pushed out); SIGHUP or SIGUSR1
    makes it seal .1 and start a new file at the path with a `segment` record."""
    server = slow_check_server
    rotated = server.log.with_name(server.log.name + ".1")
    with httpx.Client(timeout=10) as client:
        before = server.post(client, "before", 5, durable=True)
        os.rename(server.log, rotated)
        during = server.post(client, "during", 5, durable=True)
        # Three times the default self-check interval: without the signal, nothing.
        time.sleep(3 * IDENTITY_EVERY)
        assert not server.log.exists(), "the writer reopened without a signal"
        assert set(before + during) <= {r["seq"] for r in file_records(rotated)}
        if how == "kill -HUP":
            os.kill(server.proc.pid, signal.SIGHUP)
        else:
            server.signal_cli("reopen")
        wait_for(lambda: begins_with_segment(server.log), "a new file at the log's path")
        assert_sealed_then_continued(rotated, server.log, reason="reopen", previous=server.log.name)
        after = server.post(client, "after", 5, durable=True)
    assert set(after) <= {r["seq"] for r in file_records(server.log)}
    assert "was renamed or replaced; reopening the path" in server.out()
    server.stop()
    report = verify_paths([server.logs])
    assert report.valid, report.findings
    seqs = sorted(r["seq"] for f in (rotated, server.log) for r in file_records(f))
    assert seqs == list(range(1, seqs[-1] + 1))


class Poster(threading.Thread):
    """Posts batches of 10 events with unique ids until stopped; keeps id → seq."""

    def __init__(self, server: Server) -> None:
        super().__init__(name="poster", daemon=True)
        self.server = server
        self.stopping = threading.Event()
        self.posted: dict[str, int] = {}
        self.batches = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(timeout=10) as client:
                while not self.stopping.is_set():
                    tag = f"b{self.batches}"
                    seqs = self.server.post(client, tag, 10)
                    self.posted.update({f"{tag}-{i}": s for i, s in enumerate(seqs)})
                    self.batches += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def wait_batches(self, more: int) -> None:
        target = self.batches + more
        wait_for(lambda: self.batches >= target or self.error is not None, "events posted")
        assert self.error is None, self.error


def test_events_posted_across_signals_are_neither_lost_nor_duplicated(server: Server) -> None:
    """While a client posts events non-stop: SIGUSR2, rename + SIGHUP, `signal rotate`,
    rename + `signal reopen`; after SIGTERM every accepted event is in exactly one file
    at the seq it was given, seqs run 1..N without a gap or repeat, and it verifies."""
    log = server.log
    poster = Poster(server)
    poster.start()
    try:
        poster.wait_batches(3)
        os.kill(server.proc.pid, signal.SIGUSR2)
        wait_for(lambda: len(list_segments(log)) == 1 and begins_with_segment(log), "rotate 1")
        poster.wait_batches(3)
        os.rename(log, log.with_name(log.name + ".1"))
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for(lambda: begins_with_segment(log), "reopen 1")
        poster.wait_batches(3)
        server.signal_cli("rotate")
        wait_for(lambda: len(list_segments(log)) == 2 and begins_with_segment(log), "rotate 2")
        poster.wait_batches(3)
        os.rename(log, log.with_name(log.name + ".2"))
        server.signal_cli("reopen")
        wait_for(lambda: begins_with_segment(log), "reopen 2")
        poster.wait_batches(3)
    finally:
        poster.stopping.set()
        poster.join(timeout=30)
    assert poster.error is None, poster.error
    server.stop()

    files = log_files(server.logs)
    assert len(files) == 5, [f.name for f in files]
    records = [r for f in files for r in file_records(f)]
    seqs = sorted(r["seq"] for r in records)
    assert seqs == list(range(1, len(records) + 1)), "a seq lost or repeated across files"
    events = [r for r in records if "event_id" in r]
    assert len(events) == len(poster.posted) >= 15 * 10
    assert {r["event_id"]: r["seq"] for r in events} == poster.posted
    segments = sorted((r for r in records if r.get("kind") == "segment"), key=lambda r: r["seq"])
    assert [s["reason"] for s in segments] == ["rotate", "reopen", "rotate", "reopen"]
    starts = sorted(orjson.loads(lines_of(f)[0])["seq"] for f in files)
    assert starts[0] == 1 and starts[1:] == [s["seq"] for s in segments]
    report = verify_paths([server.logs])
    assert report.valid, report.findings
    assert report.records == len(records) and len(report.files) == 5


def test_a_rotate_signal_during_start_up_is_kept_not_fatal(tmp_path: Path) -> None:
    """SIGUSR2 sent the moment the lock file names the pid (before the log is open and
    the handlers are in place) neither kills the service nor is lost: it rotates once
    the log is open."""
    log = tmp_path / "logs" / "risk_audit.jsonl"
    lock = log.with_name(log.name + ".lock")
    port = free_port()
    env = {**clean_env(), "RISK_AUDIT_LOG_PATH": str(log)}
    output = tmp_path / "serve.out"
    proc = start_serve([RISKAUDIT], port, env, output)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (lock.exists() and lock.read_text().strip() == str(proc.pid)):
            assert time.monotonic() < deadline and proc.poll() is None, output.read_text()
        proc.send_signal(signal.SIGUSR2)  # at once: the log is still opening
        wait_for(lambda: len(list_segments(log)) == 1, "a sealed segment")
        wait_for(lambda: log.exists() and begins_with_segment(log), "the new file begun")
        assert proc.poll() is None, output.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT) in CLEAN_SIGTERM_EXITS, output.read_text()
    assert verify_paths([log.parent]).valid


def test_token_revoke_and_sighup_refuse_the_token_within_a_second(server: Server) -> None:
    """`riskaudit token revoke` on the running service's file, then kill -HUP: the
    token gets 401 within a second, the service keeps running, and a `tokens` record
    names the revocation."""
    with httpx.Client(timeout=5) as client:
        server.post(client, "before-revoke", 1)
        out = subprocess.run(
            [RISKAUDIT, "token", "revoke", "signals-test"],
            env=server.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        server.proc.send_signal(signal.SIGHUP)

        def refused() -> bool:
            r = client.get(
                f"{server.url}/v1/events", headers={"authorization": f"Bearer {server.token}"}
            )
            return r.status_code == 401

        took = wait_for(refused, "the revoked token refused")
        assert took < 1.0, took
        assert client.get(f"{server.url}/health").status_code == 200

    def changes() -> list[dict[str, Any]]:
        return [r for r in file_records(server.log) if r.get("kind") == "tokens"]

    wait_for(lambda: len(changes()) == 2, "the tokens record written")
    start, revoked = changes()
    assert start["reason"] == "start" and revoked["removed"] == ["signals-test"]
    server.stop()
