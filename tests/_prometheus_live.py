"""Run as root inside ``unshare -m``: riskaudit serve on a full tmpfs, scraped by a real
Prometheus evaluating deploy/prometheus/rules.yml. Writes RESULT.json for the test.

Steps: mount a 4 MiB tmpfs for the log (no spool: a failing primary goes straight to
the emergency path), start Prometheus (1 s scrape and evaluation) and the service with
its demo producer, wait until Prometheus has scraped the service with no failures, fill
the tmpfs, then wait for the alerts to fire and read /ready and /health.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from testbed.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


def wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def main() -> None:
    work = Path(sys.argv[1])
    logdir = work / "mnt"
    logdir.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(logdir)], check=True
    )
    sport, pport = free_port(), free_port()
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ROOT / 'deploy/prometheus/rules.yml'}']\n"
        "scrape_configs:\n"
        "  - job_name: riskaudit\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{sport}']}}]\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {}
    try:
        procs.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{pport}",
                ],
                stdout=open(work / "prometheus.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
        )
        env = {
            **os.environ,
            "RISK_AUDIT_LOG_PATH": str(logdir / "risk_audit.jsonl"),
            "RISK_AUDIT_RETRY_MAX": "1",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("RISK_AUDIT_SPOOL_DIR", None)
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("riskaudit")),
                    "serve",
                    "--demo",
                    "--demo-rate",
                    "50",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(sport),
                ],
                env=env,
                stdout=open(work / "serve.stdout", "wb"),  # noqa: SIM115
                stderr=open(work / "serve.stderr", "wb"),  # noqa: SIM115
            )
        )
        base = f"http://127.0.0.1:{sport}"
        prom = f"http://127.0.0.1:{pport}/api/v1"
        wait("the service", lambda: get(f"{base}/health")[0] == 200, 30)
        result["ready_before"] = get(f"{base}/ready")[0]

        def scraped_clean() -> bool:
            _, body = get(
                f"{prom}/query?query=audit_write_failures_total%7Breason%3D%22primary%22%7D"
            )
            data = (body or {}).get("data", {}).get("result", [])
            return bool(data) and data[0]["value"][1] == "0"

        started = time.monotonic()
        wait("the first clean scrape", scraped_clean, 60)
        time.sleep(2.5)  # a couple more samples at 0, so increase() sees the change
        result["first_scrape_s"] = round(time.monotonic() - started, 1)
        filler = logdir / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass  # ENOSPC: the volume is full
        finally:
            os.close(fd)
        filled_at = time.monotonic()

        def firing() -> list[str]:
            _, body = get(f"{prom}/alerts")
            alerts = (body or {}).get("data", {}).get("alerts", [])
            names = sorted({a["labels"]["alertname"] for a in alerts if a["state"] == "firing"})
            return names if {"AuditLogWriteFailure", "AuditEmergencyPath"} <= set(names) else []

        result["firing"] = wait("the alerts", firing, 60)
        result["fired_after_s"] = round(time.monotonic() - filled_at, 1)
        result["ready_after"] = get(f"{base}/ready")[0]
        result["health_after"] = get(f"{base}/health")[0]
        result["health_body"] = get(f"{base}/health")[1]
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        (work / "RESULT.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
