"""HTTP ingest and the cost of the embedded ops endpoints (``run.py --one http:* / ops:*``).

``http:single``, ``http:batch`` and ``http:durable`` each run in a fresh ``run.py --one``
subprocess, the load generator. It starts its own server, ``riskaudit serve --host
127.0.0.1 --port PORT`` (the console script, a second process), with a writer token
made by ``riskaudit token create`` and a fresh log directory, waits for ``GET /health``
== 200, then posts to ``POST /v1/events`` over loopback from one thread with one
keep-alive ``httpx.Client``: one request in flight at a time. Every answer is checked
(202, or 200 and ``"durable": true`` with ``?durable=true``; ``accepted`` and the
``seqs`` as many as the events posted, no duplicates). After the measured window the
server is stopped with SIGINT (it closes the log), ``riskaudit verify <dir>`` must
exit 0, and every accepted seq must be in the written log as one of the bench's events.

``ops:off`` and ``ops:on`` append a fixed number of events flat out from one thread to
an ``AuditLog`` with the library's default configuration; ``ops:on`` also runs
``riskaudit.ops.start_ops_server(log, port=0)`` in that process while a separate
process (``run.py --one scrape``) fetches ``/metrics`` and ``/health`` once a second,
like a Prometheus scrape and a liveness probe.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import httpx
import orjson

from _stats import latency_us
from _variants import (
    Durable,
    Producer,
    cpu_report,
    event_seqs,
    frozen_events,
    rss_peak_mib,
    thread_cpu_s,
    tmpdir,
    writer_tid,
)
from riskaudit import AuditConfig, AuditLog

RISKAUDIT = Path(sys.executable).with_name("riskaudit")
RUN_PY = Path(__file__).resolve().with_name("run.py")
MARK = "BENCH-RESULT "
EVENT = {"event_type": "ALERT", "priority": "HIGH", "source": "bench", "data": {"message": "m"}}
BATCH = 1000
HTTP_MODES = {
    "http:single": "single events, application/json",
    "http:batch": f"NDJSON batches of {BATCH:,}",
    "http:durable": f"NDJSON batches of {BATCH:,}, ?durable=true",
}
_CLK_TCK = os.sysconf("SC_CLK_TCK")

Result = dict[str, Any]


# -- the server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _proc_cpu_s(pid: int) -> float:
    """user+system CPU seconds of a whole process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _proc_rss_peak_mib(pid: int) -> float | None:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


class Server:
    """``riskaudit serve`` on a free loopback port, with a fresh log dir and writer token."""

    def __init__(self, tmp: Path, timeout: float = 30.0) -> None:
        made = subprocess.run(
            [str(RISKAUDIT), "token", "create", "--name", "bench", "--role", "writer"],
            capture_output=True,
            text=True,
            check=True,
        )
        token = line = None
        for text in made.stdout.splitlines():
            if text.startswith("token: "):
                token = text.split(": ", 1)[1].strip()
            elif text.startswith("tokens-file line: "):
                line = text.split(": ", 1)[1].strip()
        if not token or not line:
            raise RuntimeError(f"unexpected `riskaudit token create` output: {made.stdout!r}")
        self.token = token
        self.dir = tmp / "log"
        self.dir.mkdir()
        tokens = tmp / "tokens"
        tokens.write_text(line + "\n")
        tokens.chmod(0o600)
        self.log_path = self.dir / "risk_audit.jsonl"
        # Only the settings below: nothing inherited from the caller's RISK_AUDIT_* vars.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RISK_AUDIT_", "AUDIT_"))}
        env.update(
            RISK_AUDIT_LOG_PATH=str(self.log_path),
            RISK_AUDIT_TOKENS_FILE=str(tokens),
            LOG_LEVEL="WARNING",
            RISK_AUDIT_SCHEMA_POLICY="off",
        )
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = tmp / "server.out"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [str(RISKAUDIT), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"riskaudit serve exited: {self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"riskaudit serve not healthy after {timeout} s: {self.tail()}")
            time.sleep(0.05)
        self.startup_s = time.perf_counter() - t0

    def tail(self) -> str:
        try:
            return self.output.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def cpu_s(self) -> float:
        return _proc_cpu_s(self.proc.pid)

    def rss_peak_mib(self) -> float | None:
        return _proc_rss_peak_mib(self.proc.pid)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT (uvicorn shuts down, ``serve`` closes the log); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("riskaudit serve did not stop within 60 s of SIGINT") from None
        return self.proc.returncode


def _verify_dir(path: Path) -> Result:
    """``riskaudit verify --json DIR``: its exit code and what it reported."""
    proc = subprocess.run(
        [str(RISKAUDIT), "verify", "--json", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    out: Result = {"exit_code": proc.returncode}
    try:
        rep = orjson.loads(proc.stdout)
    except orjson.JSONDecodeError:
        out["output"] = (proc.stdout + proc.stderr)[-2000:]
        return out
    out.update(
        valid=rep.get("valid"),
        records=rep.get("records"),
        last_seq=rep.get("last_seq"),
        findings=len(rep.get("findings") or []),
        seconds=rep.get("seconds"),
    )
    return out


def _bench_seqs_in_log(log_dir: Path) -> array[int]:
    """The seq of every event record the load generator posted, from the written log."""
    out = array("q")
    loads = orjson.loads
    for path in sorted(log_dir.glob("*.jsonl")):
        with open(path, "rb") as f:
            for line in f:
                rec = loads(line)
                if "kind" not in rec and rec.get("source") == EVENT["source"]:
                    out.append(rec["seq"])
    return out


# -- the load generator -----------------------------------------------------------------


def run_http(mode: str, seconds: float) -> Result:
    """Post for ``seconds`` (after a short unmeasured warm-up); events/s and latency."""
    if mode not in HTTP_MODES:
        raise SystemExit(f"unknown HTTP workload {mode!r}")
    one = orjson.dumps(EVENT)
    if mode == "http:single":
        body, per_request, ctype, query, ok = one, 1, "application/json", "", 202
    else:
        body = b"".join([one + b"\n"] * BATCH)
        per_request, ctype = BATCH, "application/x-ndjson"
        query, ok = ("?durable=true", 200) if mode == "http:durable" else ("", 202)
    warm = 200 if per_request == 1 else 3
    cap = int(seconds * 20_000) + 16
    lats = array("q", bytes(8 * cap))
    accepted = array("q")
    statuses: dict[str, int] = {}
    pc = time.perf_counter_ns
    with tmpdir() as tmp_name:
        srv = Server(Path(tmp_name))
        try:
            headers = {"Authorization": f"Bearer {srv.token}", "Content-Type": ctype}
            with httpx.Client(base_url=srv.url, headers=headers, timeout=60.0) as client:
                post = client.post
                target = "/v1/events" + query

                def one_post() -> int:
                    r = post(target, content=body)
                    key = str(r.status_code)
                    statuses[key] = statuses.get(key, 0) + 1
                    if r.status_code != ok:
                        raise RuntimeError(f"HTTP {r.status_code} (wanted {ok}): {r.text[:500]}")
                    ans = orjson.loads(r.content)
                    seqs = ans["seqs"]
                    if (
                        ans["accepted"] != per_request
                        or len(seqs) != per_request
                        or ans["duplicates"]
                        or (ok == 200 and ans.get("durable") is not True)
                    ):
                        raise RuntimeError(f"unexpected answer: {r.text[:500]}")
                    accepted.extend(seqs)
                    return len(seqs)

                for _ in range(warm):  # connection, first-call imports, caches
                    one_post()
                warm_events = len(accepted)
                s0, c0 = srv.cpu_s(), time.process_time()
                n = 0
                t_begin = pc()
                deadline = t_begin + int(seconds * 1e9)
                while n < cap:
                    t0 = pc()
                    if t0 >= deadline:
                        break
                    one_post()
                    lats[n] = pc() - t0
                    n += 1
                t_end = pc()
                s1, c1 = srv.cpu_s(), time.process_time()
            server_rss = srv.rss_peak_mib()
        finally:
            exit_code = srv.stop()
        if exit_code != 0:
            raise RuntimeError(f"riskaudit serve exited {exit_code}: {srv.tail()}")
        verify = _verify_dir(srv.dir)
        in_log = _bench_seqs_in_log(srv.dir)
    if verify["exit_code"] != 0:
        raise RuntimeError(f"riskaudit verify exited {verify['exit_code']}: {verify}")
    posted = sorted(accepted)
    if len(set(posted)) != len(posted):
        raise RuntimeError("the server answered the same seq twice")
    verify["accepted_seqs"] = len(posted)
    verify["bench_records_in_log"] = len(in_log)
    verify["all_accepted_in_log"] = posted == sorted(in_log)
    if not verify["all_accepted_in_log"]:
        raise RuntimeError(
            f"{len(posted)} seqs accepted, {len(in_log)} bench records in the log: they differ"
        )
    events = n * per_request
    wall = (t_end - t_begin) / 1e9
    return {
        "mode": mode,
        "label": HTTP_MODES[mode],
        "events_per_request": per_request,
        "body_bytes": len(body),
        "seconds": wall,
        "requests": n,
        "events": events,
        "warmup_events": warm_events,
        "requests_per_s": n / wall,
        "events_per_s": events / wall,
        "latency": latency_us(lats[:n]),
        "statuses": statuses,
        "server_cpu_us_per_event": (s1 - s0) / events * 1e6,
        "server_cpu_us_per_request": (s1 - s0) / n * 1e6,
        "server_cores_busy": (s1 - s0) / wall,
        "client_cpu_us_per_request": (c1 - c0) / n * 1e6,
        "server_rss_peak_mib": server_rss,
        "server_startup_s": srv.startup_s,
        "verify": verify,
    }


# -- the scraper (its own process) --------------------------------------------------------


def run_scrape(url: str, every: float) -> Result:
    """GET /metrics then /health every ``every`` s until stdin closes; latencies."""
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    pc = time.perf_counter_ns
    metrics, health = array("q"), array("q")
    statuses: dict[str, int] = {}
    size = 0
    with httpx.Client(base_url=url, timeout=10.0) as client:

        def scrape() -> None:
            nonlocal size
            for path, lats in (("/metrics", metrics), ("/health", health)):
                t0 = pc()
                r = client.get(path)
                lats.append(pc() - t0)
                key = f"{path} {r.status_code}"
                statuses[key] = statuses.get(key, 0) + 1
                if path == "/metrics":
                    size = len(r.content)

        scrape()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        t_next = time.monotonic() + every
        while not stop.wait(max(0.0, t_next - time.monotonic())):
            scrape()
            t_next += every
    return {
        "every_s": every,
        "scrapes": len(metrics),
        "statuses": statuses,
        "metrics_bytes": size,
        "metrics": latency_us(metrics),
        "health": latency_us(health),
    }


class _Scraper:
    """``run.py --one scrape`` against ``url``; ready once its first scrape answered."""

    def __init__(self, url: str, every: float) -> None:
        cmd = [sys.executable, str(RUN_PY), "--one", "scrape", "--url", url]
        cmd += ["--scrape-every", str(every)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            _, err = self.proc.communicate()
            raise RuntimeError(f"the scraper did not start: {line!r} {err[-2000:]}")

    def finish(self) -> Result:
        out, err = self.proc.communicate(input="", timeout=60)
        for line in reversed(out.splitlines()):
            if line.startswith(MARK):
                result: Result = orjson.loads(line[len(MARK) :])
                return result
        raise RuntimeError(f"the scraper failed ({self.proc.returncode}): {err[-2000:]}")


# -- the embedded producer with and without the ops endpoints -----------------------------


def run_ops(with_ops: bool, pool_size: int, count: int, every: float) -> Result:
    """``count`` appends flat out, library defaults; optionally ops endpoints + scraper."""
    pool = frozen_events(pool_size)
    events = [pool[i % pool_size] for i in range(count)]
    gc.freeze()  # the cycled list too (see frozen_events)
    prod = Producer(count)
    durable = Durable()
    result: Result = {"ops": with_ops, "events": count, "pool": pool_size}
    with tmpdir() as tmp:
        path = Path(tmp) / "ops.jsonl"
        cfg = AuditConfig(log_path=path)  # everything at the library's defaults
        log = AuditLog(cfg, on_durable=durable.hook)
        result["flush_interval"] = cfg.flush_interval
        server = scraper = None
        if with_ops:
            from riskaudit.ops import start_ops_server

            server = start_ops_server(log, port=0)
            scraper = _Scraper(f"http://127.0.0.1:{server.port}", every)
        tid = writer_tid()
        rss_base = rss_peak_mib()
        w0 = thread_cpu_s(tid)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0 = time.thread_time()
        prod.run(events, log.append)
        c1 = time.thread_time()
        log.flush(timeout=60)
        t_end = time.perf_counter_ns()
        w1 = thread_cpu_s(tid)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        rss_peak = rss_peak_mib()
        if scraper is not None and server is not None:
            result["scrape"] = scraper.finish()
            server.stop()
        log.close()
        seqs = event_seqs(path, count, prod.last)
        ttd = durable.latencies(prod.starts, seqs, 0)
    wall = (t_end - prod.t_begin) / 1e9
    proc_cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    writer = None if w0 is None or w1 is None else w1 - w0
    result.update(
        {
            "elapsed_s": wall,
            "events_per_s": count / wall,
            "call": latency_us(prod.lats),
            "durable": latency_us(ttd),
            "commits": len(durable.seqs),
            "cpu": cpu_report(c1 - c0, writer, wall, count),
            "other_threads_cpu_s": proc_cpu - (c1 - c0) - (writer or 0.0),
            "rss_peak_mib": rss_peak,
            "rss_delta_mib": rss_peak - rss_base,
            "throttled": getattr(log, "throttled", None),
        }
    )
    return result
