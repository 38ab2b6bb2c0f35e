"""riskaudit benchmarks: ``make bench`` (= ``.venv/bin/python bench/run.py``).

One run measures, in interleaved rounds (round 1: a b c d e ..., round 2: a b c d e ...),
every workload in a fresh subprocess (``run.py --one NAME``) over the same pre-built
events, then prints a table, writes ``bench/out/results.json``, draws
``docs/benchmarks.png`` and rewrites ``docs/benchmarks.md`` from the numbers of this run.
Each round ends with HTTP ingest (``riskaudit serve`` and a load generator, see
``_http.py``) and the embedded ops endpoints' cost; ``--no-http`` skips them.

    .venv/bin/python bench/run.py                  # the full run (about 5 minutes)
    .venv/bin/python bench/run.py --rounds 3 --events 50000
    .venv/bin/python bench/run.py --one d --events 100000   # one variant, JSON to stdout
    .venv/bin/python bench/run.py --from-json bench/out/results.json  # re-render only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_DIR = HERE / "out"
DOC = ROOT / "docs" / "benchmarks.md"
REPLICATION_BEGIN, REPLICATION_END = "<!-- replication:begin -->", "<!-- replication:end -->"


def keep_replication_section(text: str) -> str:
    """The replication section comes from bench/nats_forward.py: keep the last one."""
    if not DOC.exists():
        return text
    old = DOC.read_text()
    if REPLICATION_BEGIN not in old:
        return text
    block = old[old.index(REPLICATION_BEGIN) : old.index(REPLICATION_END) + len(REPLICATION_END)]
    return text.rstrip("\n") + "\n\n" + block + "\n"


CHART = ROOT / "docs" / "benchmarks.png"
MARK = "BENCH-RESULT "
SMALL_POOL = 20_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    p.add_argument(
        "--events", type=int, default=100_000, help="events per throughput run (default 100000)"
    )
    p.add_argument("--pace-rate", type=int, default=50_000, help="paced rate, events/s")
    p.add_argument("--pace-seconds", type=float, default=2.5, help="measured pacing per run (>= 2)")
    p.add_argument("--pace-warmup", type=float, default=0.25, help="unmeasured lead-in, s")
    p.add_argument("--gil-seconds", type=float, default=2.0, help="flat-out producer, s")
    p.add_argument("--stall-seconds", type=float, default=1.0, help="simulated fsync stall")
    p.add_argument("--stall-appends", type=int, default=150_000, help="appends during stall")
    p.add_argument("--stall-queue", type=int, default=16_384, help="queue_size, bounded run")
    p.add_argument(
        "--http-seconds", type=float, default=4.0, help="measured posting per HTTP run, s"
    )
    p.add_argument("--ops-events", type=int, default=500_000, help="appends per embedded-ops run")
    p.add_argument("--host-seconds", type=float, default=3.0, help="cost-to-host run, s")
    p.add_argument(
        "--verify-records", type=int, default=500_000, help="records of the verify-speed log"
    )
    p.add_argument("--scrape-every", type=float, default=1.0, help="ops scrape interval, s")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP / ops workloads")
    p.add_argument("--no-docs", action="store_true", help="skip docs/benchmarks.{md,png}")
    p.add_argument("--out", type=Path, default=OUT_DIR / "results.json")
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS",
        help="measure nothing: redo the table, chart and page from a results.json",
    )
    # the subprocess side
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--flush-interval", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--pacing", default="spin", help=argparse.SUPPRESS)
    p.add_argument("--switch-interval", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--queue-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)
    return p


# -- one workload, in this process ----------------------------------------------------


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import _variants as v

    name = args.one
    small = min(args.events, SMALL_POOL)  # workloads that cycle through a pool of events
    if name in v.THROUGHPUT:
        return v.run_throughput(name, args.events)
    if name == "paced":
        return v.run_paced(
            small,
            args.pace_rate,
            args.pace_seconds,
            args.pace_warmup,
            args.flush_interval,
            args.pacing,
            args.switch_interval,
        )
    if name == "gil":
        return v.run_gil(small, args.gil_seconds, args.switch_interval)
    if name == "construct":
        return v.run_construct(min(args.events, 50_000))
    if name == "stall":
        return v.run_stall(small, args.stall_appends, args.queue_size, args.stall_seconds)
    if name == "attrib":
        return v.run_attrib(args.events)
    if name.startswith("host:"):
        return v.run_host(small, args.pace_rate, args.host_seconds, name.split(":", 1)[1])
    if name == "verify:big":
        return v.run_verify_big(args.verify_records)
    if name == "queue:memory":
        return v.run_queue_memory(200_000)
    if name.startswith(("http:", "ops:")) or name == "scrape":
        import _http

        if name.startswith("http:"):
            return _http.run_http(name, args.http_seconds)
        if name in ("ops:off", "ops:on"):
            return _http.run_ops(name == "ops:on", small, args.ops_events, args.scrape_every)
        return _http.run_scrape(args.url, args.scrape_every)
    raise SystemExit(f"unknown workload {name!r}")


# -- the orchestrator -----------------------------------------------------------------


def _jobs(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(key, extra argv) of one round, in the order they run."""
    from _variants import UNBOUNDED

    jobs: list[tuple[str, list[str]]] = [(k, ["--one", k]) for k in "abcde"]
    # Time to durable at a paced rate: the library's default configuration (the target is
    # judged on it), the 0.01 s window of (d) for both producer shapes, and that window
    # with the opt-in switch interval under the busy-wait producer.
    paced = "--one", "paced", "--pacing"
    fi01 = "--flush-interval", "0.01"
    jobs.append(("paced:spin:default", [*paced, "spin"]))
    jobs.append(("paced:spin:0.01", [*paced, "spin", *fi01]))
    jobs.append(("paced:spin:0.01:si0.001", [*paced, "spin", *fi01, "--switch-interval", "0.001"]))
    jobs.append(("paced:tick:default", [*paced, "tick"]))
    jobs.append(("paced:tick:0.01", [*paced, "tick", *fi01]))
    jobs.append(("gil:default", ["--one", "gil"]))
    jobs.append(("gil:0.001", ["--one", "gil", "--switch-interval", "0.001"]))
    jobs.append(("construct", ["--one", "construct"]))
    jobs.append(("stall:bounded", ["--one", "stall", "--queue-size", str(args.stall_queue)]))
    jobs.append(("stall:unbounded", ["--one", "stall", "--queue-size", str(UNBOUNDED)]))
    jobs.append(("attrib", ["--one", "attrib"]))
    # The native core's targets: cost to the host (three producers, side by side),
    # verify against SHA-256's own speed, and what a queued record costs.
    jobs += [(k, ["--one", k]) for k in ("host:none", "host:lower", "host:riskaudit")]
    jobs.append(("verify:big", ["--one", "verify:big"]))
    jobs.append(("queue:memory", ["--one", "queue:memory"]))
    if not args.no_http:
        # HTTP ingest and the embedded ops endpoints, after the rest of each round.
        jobs += [(k, ["--one", k]) for k in ("http:single", "http:batch", "http:durable")]
        jobs += [(k, ["--one", k]) for k in ("ops:off", "ops:on")]
    return jobs


def _common_argv(args: argparse.Namespace) -> list[str]:
    return [
        "--events",
        str(args.events),
        "--pace-rate",
        str(args.pace_rate),
        "--pace-seconds",
        str(args.pace_seconds),
        "--pace-warmup",
        str(args.pace_warmup),
        "--gil-seconds",
        str(args.gil_seconds),
        "--stall-seconds",
        str(args.stall_seconds),
        "--stall-appends",
        str(args.stall_appends),
        "--http-seconds",
        str(args.http_seconds),
        "--ops-events",
        str(args.ops_events),
        "--scrape-every",
        str(args.scrape_every),
        "--host-seconds",
        str(args.host_seconds),
        "--verify-records",
        str(args.verify_records),
    ]


def _spawn(argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK) :])
            if proc.stderr.strip():
                result["stderr"] = proc.stderr.strip()[-2000:]
            return result
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise SystemExit(f"benchmark subprocess failed ({proc.returncode}): {' '.join(argv)}")


def _source_fingerprint() -> str:
    """sha256 over src/riskaudit/**/*.py: which library code these numbers are for."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "src" / "riskaudit").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import importlib.metadata as md
    import tempfile

    versions = {}
    for pkg in ("riskaudit", "orjson", "structlog", "matplotlib"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "?"
    tmp = tempfile.gettempdir()
    fs = "?"
    try:
        best = ""
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, kind = line.split()[:3]
                if tmp.startswith(mnt) and len(mnt) > len(best):
                    best, fs = mnt, f"{kind} on {dev} (mounted at {mnt})"
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(mem_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "switch_interval_default": sys.getswitchinterval(),
        "tmpdir": tmp,
        "tmp_fs": fs,
        "versions": versions,
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    if args.rounds < 3:
        print("note: fewer than 3 rounds; medians are weak", file=sys.stderr)
    if args.pace_seconds < 2:
        raise SystemExit("--pace-seconds must be at least 2")
    from _variants import THROUGHPUT

    jobs = _jobs(args)
    common = _common_argv(args)
    started = datetime.now(UTC)
    source_before = _source_fingerprint()
    t0 = time.perf_counter()
    rounds: list[dict[str, Any]] = []
    for r in range(1, args.rounds + 1):
        runs: dict[str, Any] = {}
        for key, argv in jobs:
            t_job = time.perf_counter()
            load = os.getloadavg()[0]
            runs[key] = _spawn([*argv, *common])
            runs[key]["job"] = {
                "loadavg_1m_before": load,
                "loadavg_1m_after": os.getloadavg()[0],
                "wall_s": time.perf_counter() - t_job,
            }
            print(
                f"  round {r}/{args.rounds}  {key:<18} {time.perf_counter() - t_job:5.1f}s"
                f"  (total {time.perf_counter() - t0:5.0f}s)",
                file=sys.stderr,
                flush=True,
            )
        rounds.append({"round": r, "runs": runs})
    digests = {run["digest"] for rnd in rounds for k, run in rnd["runs"].items() if k in THROUGHPUT}
    if len(digests) != 1:
        raise SystemExit(f"the variants did not see the same events: {digests}")
    return {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "duration_s": round(time.perf_counter() - t0, 1),
            "command": " ".join(["bench/run.py", *sys.argv[1:]]),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "events_digest": digests.pop(),
            "source_fingerprint": source_before,
            "source_changed_during_run": _source_fingerprint() != source_before,
            "machine": _machine(),
        },
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.one:
        result = run_one(args)
        sys.stdout.write(MARK + json.dumps(result) + "\n")
        return 0
    sys.path.insert(0, str(HERE))
    from _summary import summarize
    from _tables import text_tables

    if args.from_json:
        raw = json.loads(args.from_json.read_text())
        raw["summary"] = summarize(raw)
    else:
        raw = orchestrate(args)
        raw["summary"] = summarize(raw)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(raw, indent=2) + "\n")
    print(text_tables(raw))
    if not args.from_json:
        print(f"\nwrote {args.out}")
    if not args.no_docs:
        # The page needs jinja2 and the chart matplotlib (the bench extra): only here.
        from _chart import chart
        from _page import render

        chart(raw, CHART)
        DOC.write_text(keep_replication_section(render(raw, CHART.name)))
        print(f"wrote {CHART}\nwrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
