"""The HTTP service under hostile connections, against a real `riskaudit serve`: a
chunked body is cut off at RISK_AUDIT_MAX_BODY_BYTES while it is read (memory stays
flat); connections that never finish their headers or their body are closed after
RISK_AUDIT_HTTP_HEADER_TIMEOUT / RISK_AUDIT_HTTP_BODY_TIMEOUT while /health stays fast;
RISK_AUDIT_HTTP_MAX_CONNECTIONS bounds the open connections."""

from __future__ import annotations

import contextlib
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from testbed.ports import free_port

from riskaudit import AuditConfig, AuditConfigError
from riskaudit.ops import create_token
from tests.conftest import RISKAUDIT
from tests.helpers import clean_env, require, start_serve, wait_serving

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 30.0
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
SLOW_CONNECTIONS = 3000
PROBES = 200
#: A request that never ends its headers: no blank line, ever.
PARTIAL = b"GET /health HTTP/1.1\r\nHost: riskaudit\r\nX-Slow: "


@pytest.fixture(autouse=True, scope="module")
def many_descriptors() -> Iterator[None]:
    """3,000 sockets in this process (and in the server, which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    got = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    require(
        got == resource.RLIM_INFINITY or got >= SLOW_CONNECTIONS + 500,
        f"RLIMIT_NOFILE hard limit {hard} is too low for {SLOW_CONNECTIONS} sockets",
    )
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    output: Path
    token: str

    def out(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]

    def events_written(self) -> int:
        lines = self.log.read_bytes().split(b"\n")[:-1] if self.log.exists() else []
        return sum(1 for line in lines if b'"event_id"' in line)


@contextlib.contextmanager
def serving(tmp_path: Path, **settings: str) -> Iterator[Server]:
    """`riskaudit serve` on a free loopback port with a writer token and ``settings``."""
    token, line = create_token("limits-test", "writer")
    (tmp_path / "tokens").write_text(line + "\n")
    log = tmp_path / "logs" / "risk_audit.jsonl"
    env = {
        **clean_env(),
        "RISK_AUDIT_LOG_PATH": str(log),
        "RISK_AUDIT_TOKENS_FILE": str(tmp_path / "tokens"),
        **settings,
    }
    port = free_port()
    output = tmp_path / "serve.out"
    proc = start_serve([RISKAUDIT], port, env, output)
    try:
        wait_serving(proc, f"http://127.0.0.1:{port}", output, STARTUP_TIMEOUT)
        yield Server(proc, port, log, output, token)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def status_kib(pid: int, name: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def read_response(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one answer; status 0 if the connection ended without one."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        length = 0
        for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(data.partition(b"\r\n\r\n")[2]) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, head, body


def get_health(port: int, timeout: float = 5.0) -> int:
    """GET /health on a new connection; the status (0: no answer, the connection ended)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: riskaudit\r\nConnection: close\r\n\r\n")
            return read_response(sock)[0]
    except OSError:
        return 0


def post_head(token: str, length: int) -> bytes:
    """The complete headers of a POST /v1/events whose body is ``length`` bytes."""
    return (
        b"POST /v1/events HTTP/1.1\r\nHost: riskaudit\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def open_connection(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(first)
    sock.setblocking(False)
    return sock


@dataclass
class Watch:
    """When the server closed each of some sockets (monotonic), and what it sent first."""

    closed: dict[int, float] = field(default_factory=dict)
    received: dict[int, bytes] = field(default_factory=dict)


def watch_until(socks: list[socket.socket], deadline: float) -> Watch:
    """Read every socket until the server closes it (EOF or reset) or ``deadline``."""
    seen = Watch()
    with selectors.DefaultSelector() as sel:
        for i, sock in enumerate(socks):
            sel.register(sock, selectors.EVENT_READ, i)
        while len(seen.closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(timeout=min(left, 0.05)):
                i = key.data
                try:
                    data = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    seen.received[i] = seen.received.get(i, b"") + data
                    continue
                seen.closed[i] = time.monotonic()
                sel.unregister(socks[i])
    return seen


def still_open(socks: list[socket.socket], wait: float = 0.3) -> list[int]:
    """Indexes of the sockets the server has not closed within ``wait`` seconds."""
    seen = watch_until(socks, time.monotonic() + wait)
    return [i for i in range(len(socks)) if i not in seen.closed]


#: GET /health on a new connection every ``every`` seconds, ``count`` times: a separate
#: process, so that its timings do not wait for this one's GIL. One line per probe:
#: ``<monotonic start> <seconds> <status>``.
PROBE = r"""
import socket, sys, time
port, count, every = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ask = b"GET /health HTTP/1.1\r\nHost: riskaudit\r\nConnection: close\r\n\r\n"
print("ready", flush=True)
for _ in range(count):
    start, status = time.monotonic(), 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(ask)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        pass
    took = time.monotonic() - start
    print(start, took, status, flush=True)
    time.sleep(max(0.0, every - took))
"""


class Prober:
    """The probing process; ``results()`` waits for it: (start, seconds, status) each."""

    def __init__(self, port: int, count: int, every: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, str(port), str(count), str(every)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def results(self) -> list[tuple[float, float, int]]:
        out, _ = self.proc.communicate(timeout=60)
        rows = [line.split() for line in out.splitlines()]
        return [(float(a), float(b), int(c)) for a, b, c in rows]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))]


def test_a_chunked_body_over_the_limit_is_cut_off_while_it_is_read(tmp_path: Path) -> None:
    """A 200 MB chunked body gets the 413 at 1 MiB, the RSS grows < 30 MB and nothing is written."""
    total = 200 << 20
    with serving(tmp_path) as srv:
        pid = srv.proc.pid

        def upload(size: int) -> tuple[int, bytes, bytes, int]:
            payload = (b'{"event_type": "ALERT", "data": {"pad": "' + b"x" * 400 + b'"}}\n') * 150
            chunk = b"%x\r\n%s\r\n" % (len(payload), payload)
            with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
                sock.sendall(
                    b"POST /v1/events HTTP/1.1\r\nHost: riskaudit\r\n"
                    b"Authorization: Bearer " + srv.token.encode() + b"\r\n"
                    b"Content-Type: application/x-ndjson\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                sent = 0
                with selectors.DefaultSelector() as sel:
                    sel.register(sock, selectors.EVENT_READ)
                    try:
                        while sent < size and not sel.select(timeout=0):
                            sock.sendall(chunk)
                            sent += len(payload)
                        if sent >= size:
                            sock.sendall(b"0\r\n\r\n")
                    except ConnectionError:
                        pass  # the server answered and closed: the answer is still there
                status, head, body = read_response(sock)
            return status, head, body, sent

        assert upload(2 << 20)[0] == 413  # the same path once, so the baseline is warm
        baseline = status_kib(pid, "VmRSS")
        hwm_reset = False
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            hwm_reset = True
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(OSError, AssertionError):
                    peak.append(status_kib(pid, "VmRSS"))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            status, head, body, sent = upload(total)
        finally:
            done.set()
            sampler.join()
        if hwm_reset:
            peak.append(status_kib(pid, "VmHWM"))
        growth_mib = (max(peak) - baseline) / 1024
        print(f"sent {sent / 2**20:.1f} MiB; RSS {baseline / 1024:.0f} MiB + {growth_mib:.1f} MiB")
        assert status == 413, (head, body[:200], srv.out())
        problem = orjson.loads(body)
        assert problem["field"] is None and "1048576" in problem["error"]
        assert sent < 64 << 20, f"the server read {sent / 2**20:.0f} MiB before answering"
        assert growth_mib < 30, f"RSS grew by {growth_mib:.0f} MiB for a refused body"
        assert srv.events_written() == 0
        assert get_health(srv.port) == 200


def test_connections_that_never_finish_their_headers_are_closed(tmp_path: Path) -> None:
    """3,000 half-sent requests are closed within 2x the header timeout; /health p99 < 100 ms."""
    settings = {"RISK_AUDIT_HTTP_HEADER_TIMEOUT": f"{HEADER_TIMEOUT}s"}
    socks: list[socket.socket] = []
    with serving(tmp_path, **settings) as srv:
        # The probes span the whole test: the connections arriving, waiting, timing out.
        prober = Prober(srv.port, PROBES, every=(2 * HEADER_TIMEOUT + 0.5) / PROBES)
        try:
            opened: list[float] = []
            for _ in range(SLOW_CONNECTIONS):
                socks.append(open_connection(srv.port, PARTIAL))
                opened.append(time.monotonic())
            seen = watch_until(socks, opened[-1] + 2 * HEADER_TIMEOUT)
            probes = prober.results()
        finally:
            for sock in socks:
                sock.close()
        left_open = len(socks) - len(seen.closed)
        late = [i for i, t in seen.closed.items() if t - opened[i] > 2 * HEADER_TIMEOUT]
        early = [i for i, t in seen.closed.items() if t - opened[i] < 0.8 * HEADER_TIMEOUT]
        statuses = {status for _, _, status in probes}
        latency = [took for _, took, _ in probes]
        worst = sorted(probes, key=lambda p: -p[1])[:3]
        print(
            f"open after 2x timeout: {left_open}/{len(socks)} (opened in "
            f"{opened[-1] - opened[0]:.2f} s); closed late {len(late)}, early {len(early)}; "
            f"/health p99 {p99(latency) * 1000:.1f} ms, worst "
            f"{[(round(t * 1000), round(s - opened[0], 2)) for s, t, _ in worst]} "
            f"(ms, s after the first connection), statuses {statuses}"
        )
        assert left_open == 0, f"{left_open} of {len(socks)} connections still open"
        assert not late and not early, (len(late), len(early))
        assert len(probes) == PROBES and statuses == {200}, statuses
        assert p99(latency) < 0.1, f"/health p99 {p99(latency) * 1000:.0f} ms"
        assert get_health(srv.port) == 200


def test_a_body_that_does_not_arrive_in_time_is_answered_408_and_closed(
    tmp_path: Path,
) -> None:
    """A body never sent, or trickled, gets a 408 and a close within 2x the body timeout."""
    settings = {"RISK_AUDIT_HTTP_BODY_TIMEOUT": f"{BODY_TIMEOUT}s"}
    with serving(tmp_path, **settings) as srv:
        head = post_head(srv.token, 100)
        idle = open_connection(srv.port, head)
        trickle = open_connection(srv.port, head)
        start = time.monotonic()
        deadline = start + 2 * BODY_TIMEOUT
        seen = Watch()
        try:
            while len(seen.closed) < 2 and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    trickle.send(b"x")
                part = watch_until([idle, trickle], min(deadline, time.monotonic() + 0.25))
                for i, t in part.closed.items():
                    seen.closed.setdefault(i, t)
                for i, data in part.received.items():
                    seen.received[i] = seen.received.get(i, b"") + data
        finally:
            idle.close()
            trickle.close()
        print(f"closed after {[round(t - start, 2) for t in seen.closed.values()]} s")
        assert sorted(seen.closed) == [0, 1], "still open after twice the body timeout"
        assert all(t - start >= 0.8 * BODY_TIMEOUT for t in seen.closed.values())
        for i in (0, 1):
            assert seen.received.get(i, b"").startswith(b"HTTP/1.1 408 "), seen.received
        assert srv.events_written() == 0
        assert get_health(srv.port) == 200


def test_the_connection_cap_evicts_the_oldest_waiting_and_refuses_when_all_are_busy(
    tmp_path: Path,
) -> None:
    """At the cap a new connection evicts the oldest header-waiter; with all busy it is refused."""
    settings = {
        "RISK_AUDIT_HTTP_MAX_CONNECTIONS": "50",
        "RISK_AUDIT_HTTP_HEADER_TIMEOUT": "60s",
        "RISK_AUDIT_HTTP_BODY_TIMEOUT": "3s",
    }
    with serving(tmp_path, **settings) as srv:
        # 50 connections waiting for their headers (the header timeout is far away): a
        # 51st is served, and the oldest of the 50, only it, makes room.
        waiting = [open_connection(srv.port, PARTIAL) for _ in range(50)]
        try:
            time.sleep(0.3)
            assert get_health(srv.port) == 200
            assert still_open(waiting[:1], wait=2.0) == [], "the oldest was not evicted"
            assert still_open(waiting[1:]) == list(range(49)), "a newer one was evicted"
        finally:
            for sock in waiting:
                sock.close()
        time.sleep(0.3)
        # 50 requests in progress (headers done, body awaited): nothing to evict, so a
        # 51st connection is refused unserved until the body timeout frees the places.
        busy = [open_connection(srv.port, post_head(srv.token, 100)) for _ in range(50)]
        try:
            time.sleep(0.3)
            assert get_health(srv.port) in (0, 503), "served a 51st connection past the cap"
            assert still_open(busy) == list(range(50))
            seen = watch_until(busy, time.monotonic() + 2 * 3.0)
            assert len(seen.closed) == 50, "the body timeout did not free the places"
        finally:
            for sock in busy:
                sock.close()
        assert get_health(srv.port) == 200
        assert srv.events_written() == 0


def test_http_settings_parse_with_defaults_and_name_themselves_when_bad() -> None:
    """The HTTP settings default to 10 s, 30 s and 10,000; a bad value names its setting."""
    cfg = AuditConfig.from_env({})
    assert (cfg.http_header_timeout, cfg.http_body_timeout) == (10.0, 30.0)
    assert cfg.http_max_connections == 10_000
    cfg = AuditConfig.from_env(
        {
            "RISK_AUDIT_HTTP_HEADER_TIMEOUT": "500ms",
            "RISK_AUDIT_HTTP_BODY_TIMEOUT": "1m",
            "RISK_AUDIT_HTTP_MAX_CONNECTIONS": "64",
        }
    )
    assert (cfg.http_header_timeout, cfg.http_body_timeout) == (0.5, 60.0)
    assert cfg.http_max_connections == 64
    for name, value in (
        ("RISK_AUDIT_HTTP_HEADER_TIMEOUT", "0"),
        ("RISK_AUDIT_HTTP_HEADER_TIMEOUT", "soon"),
        ("RISK_AUDIT_HTTP_BODY_TIMEOUT", "0s"),
        ("RISK_AUDIT_HTTP_MAX_CONNECTIONS", "0"),
        ("RISK_AUDIT_HTTP_MAX_CONNECTIONS", "many"),
    ):
        with pytest.raises(AuditConfigError) as info:
            AuditConfig.from_env({name: value})
        assert name in str(info.value)


def test_the_connection_cap_fits_the_descriptor_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The soft fd limit is raised for the cap; a hard limit too low lowers the cap, warning."""
    from riskaudit.ops import _server

    limits = {"soft": 1024, "hard": 4096}
    # The resource module _server asks.
    monkeypatch.setattr(resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda _, v: limits.update(soft=v[0]))
    assert _server.connection_budget(500) == 500 and limits["soft"] == 1024
    assert _server.connection_budget(3000) == 3000 and limits["soft"] == 4096
    assert not caplog.records
    assert _server.connection_budget(10_000) == 4096 - _server.FD_MARGIN
    assert "RISK_AUDIT_HTTP_MAX_CONNECTIONS" in caplog.text
