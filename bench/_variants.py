"""The measured workloads. Each runs alone in a fresh process (``run.py --one NAME``).

Every workload gets the same pre-built events, builds whatever it needs (files, loggers,
the AuditLog) before the clock starts, and cleans up its temporary directory before it
returns. Peak RSS (``ru_maxrss``) is read before any post-run analysis so the sorting of
latency samples does not count against the variant.
"""

from __future__ import annotations

import gc
import json
import logging
import logging.handlers
import os
import queue
import resource
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import orjson

from _events import build_events, digest
from _stats import latency_us, timer_cost
from riskaudit import (
    AuditConfig,
    AuditLog,
    AuditQueueFullError,
    EventPriority,
    EventType,
    RiskEvent,
    verify_paths,
)

encode_event_body: Callable[[RiskEvent], bytes] | None
try:  # public today; the breakdown is skipped if it moves
    from riskaudit.log import encode_event_body
except ImportError:  # pragma: no cover
    encode_event_body = None

QUEUE_SIZE = 262_144
# The group-commit window the issue prescribes for (d) ("flush interval 0.01 s"). It is
# NOT the library default (AuditConfig.flush_interval defaults to 0); the paced runs
# measure the default configuration separately.
FLUSH_INTERVAL = 0.01
WRITE_CHUNK = 64 * 1024
UNBOUNDED = 1 << 30

Result = dict[str, Any]


class _GilState(TypedDict):
    """What the GIL run's producer thread reports back."""

    count: int
    rejected: int
    t_begin: int
    t_end: int
    cpu: NotRequired[float]
    throttled: NotRequired[int | None]


def rss_peak_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_now_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def writer_tid() -> int | None:
    """Kernel id of the log's writer thread (found by its thread name), if any."""
    for t in threading.enumerate():
        if t.name == "riskaudit-writer" and t.native_id is not None:
            return t.native_id
    return None


def thread_cpu_s(tid: int | None) -> float | None:
    """user+system CPU seconds of one thread of this process (10 ms resolution)."""
    if tid is None:
        return None
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_report(producer_s: float, writer_s: float | None, wall_s: float, n: int) -> Result:
    """CPU per record on each side, and how busy the two threads kept one core."""
    out: Result = {
        "producer_cpu_s": producer_s,
        "writer_cpu_s": writer_s,
        "wall_s": wall_s,
        "producer_us_per_record": producer_s / n * 1e6,
        "writer_us_per_record": None,
        "cores_busy": None,
    }
    if writer_s is not None:
        out["writer_us_per_record"] = writer_s / n * 1e6
        out["cores_busy"] = (producer_s + writer_s) / wall_s
    return out


def tmpdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="riskaudit-bench-")


def frozen_events(n: int) -> list[RiskEvent]:
    """The pre-built events, moved out of the collector's sight (``gc.freeze``).

    A real engine does not keep 100,000 events alive; without the freeze, every full
    collection would walk them and charge some unlucky call tens of milliseconds.
    """
    events = build_events(n)
    gc.collect()
    gc.freeze()
    return events


# -- the throughput variants (a)-(e) ------------------------------------------------


class Producer:
    """Times every call of ``emit(event)`` individually; wall clock over the whole run.

    The sample arrays are allocated up front (before the RSS baseline) so their memory
    counts the same for every variant.
    """

    def __init__(self, n: int) -> None:
        self.starts = array("q", bytes(8 * n))
        self.lats = array("q", bytes(8 * n))
        self.t_begin = 0
        self.t_calls_done = 0
        self.last: Any = None

    def run(self, events: list[RiskEvent], emit: Callable[[RiskEvent], Any]) -> None:
        pc = time.perf_counter_ns
        starts, lats = self.starts, self.lats
        last = None
        self.t_begin = pc()
        for i, ev in enumerate(events):
            t0 = pc()
            last = emit(ev)
            t1 = pc()
            starts[i] = t0
            lats[i] = t1 - t0
        self.t_calls_done = pc()
        self.last = last


def _seed_sink(events: list[RiskEvent], prod: Producer, path: Path) -> int:
    """(a) The seed: dict + ``json.dumps`` + a line-buffered text file, per event."""
    dumps = json.dumps
    utcnow = datetime.utcnow  # the seed's call (naive UTC), deprecated in 3.12
    with open(path, "a", buffering=1, encoding="utf-8") as f:
        write = f.write

        def emit(e: RiskEvent) -> None:
            payload = {
                "event_id": e.event_id,
                "event_type": e.event_type.name,
                "priority": e.priority.name,
                "source": e.source,
                "data": e.data,
                "metadata": e.metadata,
                "timestamp_ns": e.timestamp_ns,
                "ts": utcnow().isoformat(),
            }
            write(dumps(payload, separators=(",", ":")) + "\n")

        prod.run(events, emit)
    return time.perf_counter_ns()


def _structlog(events: list[RiskEvent], prod: Producer, path: Path) -> int:
    """(b) structlog, BytesLogger on a file, TimeStamper + orjson JSONRenderer."""
    import structlog

    with open(path, "ab") as f:
        structlog.configure(
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.BytesLoggerFactory(f),
            cache_logger_on_first_use=True,
        )
        info = structlog.get_logger().bind().info

        def emit(e: RiskEvent) -> None:
            info(
                "risk_event",
                event_id=e.event_id,
                event_type=e.event_type.name,
                priority=e.priority.name,
                source=e.source,
                data=e.data,
                metadata=e.metadata,
                timestamp_ns=e.timestamp_ns,
            )

        prod.run(events, emit)
    return time.perf_counter_ns()


class _JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "msg": record.getMessage(),
        }
        payload.update(record.__dict__["audit"])
        return json.dumps(payload, separators=(",", ":"))


def _stdlib_queue(events: list[RiskEvent], prod: Producer, path: Path) -> int:
    """(c) stdlib logging: QueueHandler on the producer, QueueListener writing JSON lines."""
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    file_handler.setFormatter(_JsonLineFormatter())
    listener = logging.handlers.QueueListener(q, file_handler)
    logger = logging.getLogger("bench.audit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.handlers.QueueHandler(q))
    info = logger.info
    listener.start()

    def emit(e: RiskEvent) -> None:
        info(
            "risk_event",
            extra={
                "audit": {
                    "event_id": e.event_id,
                    "event_type": e.event_type.name,
                    "priority": e.priority.name,
                    "source": e.source,
                    "data": e.data,
                    "metadata": e.metadata,
                    "timestamp_ns": e.timestamp_ns,
                }
            },
        )

    try:
        prod.run(events, emit)
    finally:
        listener.stop()  # returns once the listener thread has written every record
        file_handler.close()
    return time.perf_counter_ns()


class Durable:
    """The ``on_durable`` hook: when (perf_counter_ns) each watermark became durable."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self.seqs: list[int] = []
        pc = time.perf_counter_ns
        t_append = self.times.append
        s_append = self.seqs.append

        def hook(seq: int) -> None:
            t_append(pc())
            s_append(seq)

        self.hook = hook

    def latencies(self, starts: array[int], seqs: array[int] | None, first_seq: int) -> list[int]:
        """Time-to-durable of each append: first watermark >= its seq, minus its start."""
        times, marks = self.times, self.seqs
        out: list[int] = []
        j = 0
        last = len(marks) - 1
        for i in range(len(starts)):
            seq = seqs[i] if seqs is not None else first_seq + i
            while marks[j] < seq:
                if j == last:
                    raise RuntimeError(f"seq {seq} never became durable (watermark {marks[j]})")
                j += 1
            out.append(times[j] - starts[i])
        return out


def _riskaudit(
    events: list[RiskEvent], prod: Producer, path: Path, extra: Result
) -> tuple[int, AuditLog, Durable]:
    """(d) AuditLog.append: producer encodes, writer chains and group-commits."""
    durable = Durable()
    cfg = AuditConfig(log_path=path, flush_interval=FLUSH_INTERVAL, queue_size=QUEUE_SIZE)
    log = AuditLog(cfg, on_durable=durable.hook)
    tid = writer_tid()
    w0 = thread_cpu_s(tid)
    c0 = time.thread_time()
    prod.run(events, log.append)
    c1 = time.thread_time()
    log.flush(timeout=30)
    t_end = time.perf_counter_ns()
    w1 = thread_cpu_s(tid)
    extra["flush_wait_ms"] = (t_end - prod.t_calls_done) / 1e6
    extra["cpu"] = cpu_report(
        c1 - c0,
        None if w0 is None or w1 is None else w1 - w0,
        (t_end - prod.t_begin) / 1e9,
        len(events),
    )
    extra["throttled"] = getattr(log, "throttled", None)
    return t_end, log, durable


def _lower_bound(events: list[RiskEvent], prod: Producer, path: Path) -> int:
    """(e) orjson into a buffer, one ``os.write`` per 64 KiB; no chain, no fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    buf = bytearray()
    extend = buf.extend
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE

    def flush_buf() -> None:
        view = memoryview(buf)
        while view:
            view = view[os.write(fd, view) :]
        view.release()
        buf.clear()

    def emit(e: RiskEvent) -> None:
        extend(dumps(e.to_dict(), option=opt))
        if len(buf) >= WRITE_CHUNK:
            flush_buf()

    try:
        prod.run(events, emit)
        flush_buf()
    finally:
        os.close(fd)
    return time.perf_counter_ns()


THROUGHPUT = {
    "a": "seed: json.dumps + line-buffered file",
    "b": "structlog + orjson (BytesLogger)",
    "c": "stdlib QueueHandler + QueueListener",
    "d": "riskaudit AuditLog (chain + fsync)",
    "e": "lower bound: orjson + 64 KiB os.write",
}


def run_throughput(name: str, n_events: int, verify_repeats: int = 5) -> Result:
    """One of (a)-(e) over ``n_events`` pre-built events."""
    events = frozen_events(n_events)
    fingerprint = digest(events)
    prod = Producer(n_events)
    timer = timer_cost()
    result: Result = {"variant": name, "events": n_events, "digest": fingerprint}
    with tmpdir() as tmp:
        path = Path(tmp) / f"{name}.jsonl"
        rss_base = rss_peak_mib()
        rss_base_now = rss_now_mib()
        log: AuditLog | None = None
        durable: Durable | None = None
        if name == "a":
            t_end = _seed_sink(events, prod, path)
        elif name == "b":
            t_end = _structlog(events, prod, path)
        elif name == "c":
            t_end = _stdlib_queue(events, prod, path)
        elif name == "d":
            t_end, log, durable = _riskaudit(events, prod, path, result)
        elif name == "e":
            t_end = _lower_bound(events, prod, path)
        else:
            raise SystemExit(f"unknown variant {name!r}")
        rss_peak = rss_peak_mib()
        if log is not None:
            log.close()  # joins the writer: every on_durable call has been recorded
        elapsed_ns = t_end - prod.t_begin
        result.update(
            {
                "elapsed_s": elapsed_ns / 1e9,
                "calls_s": (prod.t_calls_done - prod.t_begin) / 1e9,
                "events_per_s": n_events / (elapsed_ns / 1e9),
                "call": latency_us(prod.lats),
                "timer": timer,
                "rss_peak_mib": rss_peak,
                "rss_baseline_mib": rss_base,
                "rss_baseline_now_mib": rss_base_now,
                "rss_delta_mib": rss_peak - rss_base,
                "bytes_written": path.stat().st_size,
            }
        )
        if log is not None and durable is not None:
            seqs = event_seqs(path, n_events, prod.last)
            ttd = durable.latencies(prod.starts, seqs, 0)
            result["control_records"] = seqs[-1] - n_events
            result["durable"] = latency_us(ttd)
            result["commits"] = len(durable.seqs)
            result["verify"] = _verify(path, verify_repeats)
    return result


def event_seqs(path: Path, n_events: int, last: Any) -> array[int]:
    """The ``seq`` of each appended event, in append order, read back from the log.

    The log interleaves control records with the events (genesis, start, a clock
    warning on an unsynchronised host, checkpoints every ``checkpoint_records``), so an
    event's seq is not its index plus a constant. One producer appends in order, so the
    i-th event record in the file is the i-th ``append``. Read after the run, outside
    every timed window.
    """
    out = array("q")
    loads = orjson.loads
    with open(path, "rb") as f:
        for line in f:
            rec = loads(line)
            if "kind" not in rec:
                out.append(rec["seq"])
    if len(out) != n_events or out[-1] != last:
        raise RuntimeError(
            f"expected {n_events} event records ending at seq {last}, "
            f"found {len(out)} ending at {out[-1] if out else None}"
        )
    return out


def _verify(path: Path, repeats: int) -> Result:
    """records/s of ``verify_paths([file])`` (warm page cache), median of ``repeats``."""
    rates: list[float] = []
    report = None
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        report = verify_paths([path])
        el = time.perf_counter_ns() - t0
        rates.append(report.records / (el / 1e9))
    assert report is not None
    rates.sort()
    return {
        "records": report.records,
        "valid": report.valid,
        "bytes": path.stat().st_size,
        "records_per_s": rates[len(rates) // 2],
        "records_per_s_all": rates,
    }


# -- time to durable at a paced rate ------------------------------------------------


def run_paced(
    n_events: int,
    rate: int,
    seconds: float,
    warmup: float,
    flush_interval: float | None,
    pacing: str,
    switch_interval: float | None = None,
) -> Result:
    """Append at ``rate``/s for ``warmup + seconds``; time-to-durable of the last ``seconds``.

    ``flush_interval`` / ``switch_interval`` ``None``: not passed to ``AuditConfig``, so
    the library's default applies (``AuditConfig(log_path=...)`` and nothing else when
    both are ``None``). The result records the values the log actually ran with.

    ``spin``: each event has its own slot (``rate`` per second) and the producer
    busy-waits for it, so it never gives up the GIL voluntarily (a hot Python loop).
    ``tick``: 1 ms ticks; the producer sleeps until the tick, then appends that tick's
    events back to back (a producer that idles between bursts).
    """
    events = frozen_events(n_events)
    n = len(events)
    total = int(rate * (seconds + warmup))
    starts = array("q", bytes(8 * total))
    seqs = array("q", bytes(8 * total))
    durable = Durable()
    pc = time.perf_counter_ns
    sleep = time.sleep
    with tmpdir() as tmp:
        path = Path(tmp) / "paced.jsonl"
        overrides: Result = {}
        if flush_interval is not None:
            overrides["flush_interval"] = flush_interval
        if switch_interval is not None:
            overrides["switch_interval"] = switch_interval
        cfg = AuditConfig(log_path=path, **overrides)
        log = AuditLog(cfg, on_durable=durable.hook)
        append = log.append
        max_late = 0
        t_start = pc() + 2_000_000
        if pacing == "spin":
            for i in range(total):
                target = t_start + i * 1_000_000_000 // rate
                now = pc()
                if target - now > 200_000:
                    sleep((target - now - 100_000) / 1e9)
                while (now := pc()) < target:
                    pass
                max_late = max(max_late, now - target)
                t0 = pc()
                seq = append(events[i % n])
                assert seq is not None, "queue full: an unsequenced emergency line, no seq"
                seqs[i] = seq
                starts[i] = t0
        elif pacing == "tick":
            per_tick = rate // 1000
            i = 0
            for k in range(total // per_tick):
                target = t_start + k * 1_000_000
                now = pc()
                if target - now > 150_000:
                    sleep((target - now - 100_000) / 1e9)
                while (now := pc()) < target:
                    pass
                max_late = max(max_late, now - target)
                for _ in range(per_tick):
                    t0 = pc()
                    seq = append(events[i % n])
                    assert seq is not None, "queue full: an unsequenced emergency line, no seq"
                    seqs[i] = seq
                    starts[i] = t0
                    i += 1
            total = i
        else:
            raise SystemExit(f"unknown pacing {pacing!r}")
        t_done = pc()
        log.flush(timeout=30)
        log.close()
        skip = int(rate * warmup)
        ttd = durable.latencies(starts[skip:total], seqs[skip:total], 0)
        commit_gaps = [b - a for a, b in zip(durable.times, durable.times[1:], strict=False)]
    return {
        "throttled": getattr(log, "throttled", None),
        "rate_target": rate,
        "rate_achieved": total / ((t_done - t_start) / 1e9),
        "seconds": seconds,
        "warmup": warmup,
        "flush_interval": cfg.flush_interval,
        "flush_interval_cfg": flush_interval,
        "queue_size": cfg.queue_size,
        "pacing": pacing,
        "switch_interval_cfg": switch_interval,
        "switch_interval": sys.getswitchinterval(),
        "max_schedule_lag_ms": max_late / 1e6,
        "measured_events": total - skip,
        "durable": latency_us(ttd),
        "commits": len(durable.seqs),
        "commit_gap": latency_us(commit_gaps),
    }


# -- GIL starvation -----------------------------------------------------------------


def run_gil(n_events: int, seconds: float, switch_interval: float | None) -> Result:
    """One thread appends flat out for ``seconds``; how long until its events are durable."""
    events = frozen_events(n_events)
    n = len(events)
    cap = int(seconds * 600_000) + 1
    starts = array("q", bytes(8 * cap))
    seqs = array("q", bytes(8 * cap))
    lats = array("q", bytes(8 * cap))
    durable = Durable()
    state: _GilState = {"count": 0, "rejected": 0, "t_begin": 0, "t_end": 0}
    with tmpdir() as tmp:
        path = Path(tmp) / "gil.jsonl"
        cfg = AuditConfig(
            log_path=path,
            flush_interval=FLUSH_INTERVAL,
            queue_size=QUEUE_SIZE,
            switch_interval=switch_interval,
        )
        log = AuditLog(cfg, on_durable=durable.hook)
        append = log.append
        tid = writer_tid()
        w0 = thread_cpu_s(tid)

        def producer() -> None:
            pc = time.perf_counter_ns
            i = 0
            rejected = 0
            c0 = time.thread_time()
            t_begin = pc()
            deadline = t_begin + int(seconds * 1e9)
            while i < cap:
                t0 = pc()
                if t0 >= deadline:
                    break
                try:
                    seq = append(events[i % n])
                except AuditQueueFullError:
                    rejected += 1
                    continue
                t1 = pc()
                assert seq is not None, "queue full: an unsequenced emergency line, no seq"
                starts[i] = t0
                seqs[i] = seq
                lats[i] = t1 - t0
                i += 1
            state.update({"count": i, "rejected": rejected, "t_begin": t_begin, "t_end": pc()})
            state["cpu"] = time.thread_time() - c0
            state["throttled"] = getattr(log, "throttled", None)

        thread = threading.Thread(target=producer, name="bench-producer")
        thread.start()
        thread.join()
        log.flush(timeout=60)
        t_flushed = time.perf_counter_ns()
        w1 = thread_cpu_s(tid)
        log.close()
        count = state["count"]
        ttd = durable.latencies(starts[:count], seqs[:count], 0)
        commit_gaps = [b - a for a, b in zip(durable.times, durable.times[1:], strict=False)]
    return {
        "switch_interval_cfg": switch_interval,
        "switch_interval": sys.getswitchinterval(),
        "seconds": (state["t_end"] - state["t_begin"]) / 1e9,
        "appended": count,
        "rejected_queue_full": state["rejected"],
        "throttled": state["throttled"],
        "cpu": cpu_report(
            state["cpu"],
            None if w0 is None or w1 is None else w1 - w0,
            (t_flushed - state["t_begin"]) / 1e9,
            count,
        ),
        "events_per_s": count / ((state["t_end"] - state["t_begin"]) / 1e9),
        "durable": latency_us(ttd),
        "call": latency_us(lats[:count]),
        "commits": len(durable.seqs),
        "commit_gap": latency_us(commit_gaps),
    }


# -- construction cost --------------------------------------------------------------


@dataclass
class SeedStyleEvent:
    """The obvious design: a dataclass whose id defaults to ``str(uuid.uuid4())``."""

    event_type: EventType
    priority: EventPriority
    source: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp_ns: int = field(default_factory=time.time_ns)


def run_construct(n: int) -> Result:
    """µs per construction: RiskEvent vs ``str(uuid.uuid4())`` vs the uuid4 dataclass.

    Each is timed per call (p50/p99; includes one timer pair) and in a bulk loop (mean,
    no per-call timer). ``encode_event_body``, the producer-side half of ``append``, is
    timed the same way as a breakdown.
    """
    gc.collect()
    gc.freeze()
    pc = time.perf_counter_ns
    data = {
        "order_id": "O-1",
        "symbol": "ESZ6",
        "side": "BUY",
        "qty": 25,
        "price": 5012.25,
        "outcome": "ACCEPT",
    }
    meta = {"strategy": "stat-arb-3"}
    pre, crit, src = EventType.PRE_TRADE_CHECK, EventPriority.CRITICAL, "risk-engine-01"
    uuid4 = uuid.uuid4
    sample = RiskEvent(pre, crit, src, data, meta)
    lats = array("q", bytes(8 * n))

    # One loop for both event classes: the class is a closure variable, called with the
    # same positional arguments, so the timed call is what it was with two copies
    # (measured side by side: per-call p50 0.995x and 1.001x). The uuid and encode loops
    # stay their own: through one helper they pay a lambda frame or an argument tuple
    # per call (+2.3% and +3.2% at p50, outside the rounds' min-max).
    def construct(cls: Callable[..., object]) -> Callable[[int], int]:
        def run(count: int) -> int:
            t_bulk = pc()
            for _ in range(count):
                cls(pre, crit, src, data, meta)
            t_bulk = pc() - t_bulk
            for i in range(count):
                t0 = pc()
                cls(pre, crit, src, data, meta)
                lats[i] = pc() - t0
            return t_bulk

        return run

    def uuid_str(count: int) -> int:
        t_bulk = pc()
        for _ in range(count):
            str(uuid4())
        t_bulk = pc() - t_bulk
        for i in range(count):
            t0 = pc()
            str(uuid4())
            lats[i] = pc() - t0
        return t_bulk

    def encode(count: int) -> int:
        assert encode_event_body is not None
        t_bulk = pc()
        for _ in range(count):
            encode_event_body(sample)
        t_bulk = pc() - t_bulk
        for i in range(count):
            t0 = pc()
            encode_event_body(sample)
            lats[i] = pc() - t0
        return t_bulk

    kinds: list[tuple[str, Callable[[int], int]]] = [
        ("riskevent", construct(RiskEvent)),
        ("uuid4_str", uuid_str),
        ("dataclass_uuid4", construct(SeedStyleEvent)),
    ]
    if encode_event_body is not None:
        kinds.append(("encode_event_body", encode))
    out: Result = {"n": n, "timer": timer_cost()}
    for key, fn in kinds:
        fn(n // 10)  # warm up
        t_bulk = fn(n)
        stats = latency_us(lats)
        stats["bulk_mean_us"] = t_bulk / n / 1e3
        out[key] = stats
    t_empty = pc()
    for _ in range(n):
        pass
    out["empty_loop_us"] = (pc() - t_empty) / n / 1e3
    return out


# -- memory under a stalled disk ----------------------------------------------------

_IO_CALLS = ("write", "writev", "pwrite", "pwritev", "fsync", "fdatasync")


def run_stall(n_events: int, appends: int, queue_size: int, stall: float) -> Result:
    """Peak RSS while the disk stalls: the queue limit, not the backlog, bounds memory.

    The first write or sync system call the writer thread makes after the log is open
    sleeps ``stall`` seconds first (the ``os`` functions are wrapped in this process
    only: a stand-in for a storage hiccup, independent of which calls the writer uses).
    Meanwhile one producer appends ``appends`` events flat out. With a bounded queue
    (``append_timeout`` longer than the stall, so it blocks rather than raising) the
    producer must wait; with ``queue_size`` 2**30 and ``append_timeout`` 0 (nothing
    ever waits) the backlog grows in memory: the comparison that prices one record.
    """
    events = frozen_events(n_events)
    n = len(events)
    main = threading.main_thread()
    real = {name: getattr(os, name) for name in _IO_CALLS if hasattr(os, name)}
    state: dict[str, Any] = {"armed": False, "stalled_at": None}

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def stalling(*args: Any) -> Any:
            if state["armed"] and threading.current_thread() is not main:
                state["armed"] = False
                state["stalled_at"] = time.perf_counter_ns()
                time.sleep(stall)
            return fn(*args)

        return stalling

    unbounded = queue_size >= UNBOUNDED
    lats = array("q", bytes(8 * appends))
    rejected = 0
    with tmpdir() as tmp:
        path = Path(tmp) / "stall.jsonl"
        cfg = AuditConfig(
            log_path=path,
            flush_interval=FLUSH_INTERVAL,
            queue_size=queue_size,
            append_timeout=0.0 if unbounded else stall * 4 + 5,
        )
        log = AuditLog(cfg)
        for name, fn in real.items():
            setattr(os, name, wrap(fn))
        try:
            rss_base = rss_peak_mib()
            append = log.append
            pc = time.perf_counter_ns
            state["armed"] = True
            t_begin = pc()
            for i in range(appends):
                t0 = pc()
                try:
                    append(events[i % n])
                except AuditQueueFullError:
                    rejected += 1
                lats[i] = pc() - t0
            t_calls = pc()
            log.flush(timeout=stall * 4 + 60)
            t_end = pc()
            rss_peak = rss_peak_mib()
        finally:
            for name, fn in real.items():
                setattr(os, name, fn)
        log.close()
    if state["stalled_at"] is None:
        raise RuntimeError("the simulated stall never happened: the writer made no I/O call")
    return {
        "queue_size": queue_size,
        "appends": appends,
        "rejected": rejected,
        "stall_s": stall,
        "calls_s": (t_calls - t_begin) / 1e9,
        "elapsed_s": (t_end - t_begin) / 1e9,
        "rss_baseline_mib": rss_base,
        "rss_peak_mib": rss_peak,
        "rss_delta_mib": rss_peak - rss_base,
        "call": latency_us(lats),
    }


# -- what the slow appends have in common -------------------------------------------


def run_attrib(n_events: int) -> Result:
    """(d) again, with each call bracketed by ``getrusage(RUSAGE_THREAD)``.

    A call that took a minor page fault (first touch of fresh memory) or a context
    switch (it blocked, e.g. waiting for the GIL) shows it in the counters. The two
    extra system calls per event sit outside the timed window but perturb the run a
    little, so this is a diagnosis, not a headline number.
    """
    events = frozen_events(n_events)
    n = len(events)
    lats = array("q", bytes(8 * n))
    faults = array("q", bytes(8 * n))
    switches = array("q", bytes(8 * n))
    getrusage = resource.getrusage
    who = resource.RUSAGE_THREAD
    pc = time.perf_counter_ns
    with tmpdir() as tmp:
        path = Path(tmp) / "attrib.jsonl"
        cfg = AuditConfig(log_path=path, flush_interval=FLUSH_INTERVAL, queue_size=QUEUE_SIZE)
        log = AuditLog(cfg)
        append = log.append
        for i, ev in enumerate(events):
            r0 = getrusage(who)
            t0 = pc()
            append(ev)
            t1 = pc()
            r1 = getrusage(who)
            lats[i] = t1 - t0
            faults[i] = r1.ru_minflt - r0.ru_minflt + r1.ru_majflt - r0.ru_majflt
            switches[i] = r1.ru_nvcsw - r0.ru_nvcsw + r1.ru_nivcsw - r0.ru_nivcsw
        log.flush(timeout=30)
        log.close()
    order = sorted(range(n), key=lats.__getitem__)
    tail = order[int(0.99 * n) :]
    clean = [lats[i] for i in range(n) if not faults[i] and not switches[i]]

    def share(pred: Callable[[int], bool]) -> float:
        return sum(1 for i in tail if pred(i)) / len(tail)

    return {
        "call": latency_us(lats),
        "calls_with_fault": sum(1 for x in faults if x),
        "calls_with_switch": sum(1 for x in switches if x),
        "tail_n": len(tail),
        "tail_fault_only": share(lambda i: bool(faults[i]) and not switches[i]),
        "tail_switch_only": share(lambda i: bool(switches[i]) and not faults[i]),
        "tail_both": share(lambda i: bool(faults[i]) and bool(switches[i])),
        "tail_neither": share(lambda i: not faults[i] and not switches[i]),
        "clean_call": latency_us(clean),
    }


# -- the native core's targets: cost to the host, verify at SHA-256 speed, queue memory --


def run_host(n_events: int, rate: int, seconds: float, producer: str) -> Result:
    """Cost to the host process: a pure-Python CPU-bound thread (the stand-in for the
    trading engine) counts loop iterations while another thread appends ``rate``
    events/s (sleeping to 1 ms ticks, then that tick's events back to back).

    ``producer``: ``riskaudit`` (``AuditLog.append``, the default configuration),
    ``lower`` (the lower bound (e): ``orjson.dumps(event.to_dict())`` into a buffer and
    one ``os.write`` per 64 KiB, so the producer's own encode is in both) or ``none``.
    The engine's iterations/s is the measure; the run's first 0.5 s are not counted.
    """
    events = frozen_events(n_events)
    n = len(events)
    warmup = 0.5
    stop = threading.Event()
    counted = {"iterations": 0, "t0": 0.0, "t1": 0.0}

    def engine() -> None:
        x = 0
        iterations = 0
        t_begin = time.perf_counter() + warmup
        counting = False
        while not stop.is_set():
            for _ in range(1000):
                x += 1
            if counting:
                iterations += 1000
            elif time.perf_counter() >= t_begin:
                counting = True
                counted["t0"] = time.perf_counter()
        counted["t1"] = time.perf_counter()
        counted["iterations"] = iterations

    with tmpdir() as tmp:
        path = Path(tmp) / "host.jsonl"
        log = AuditLog(AuditConfig(log_path=path)) if producer == "riskaudit" else None
        fd = os.open(path.with_suffix(".lower"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        buf = bytearray()
        dumps = orjson.dumps
        opt = orjson.OPT_APPEND_NEWLINE

        def lower(e: RiskEvent) -> None:
            buf.extend(dumps(e.to_dict(), option=opt))
            if len(buf) >= WRITE_CHUNK:
                os.write(fd, buf)
                buf.clear()

        emit: Callable[[RiskEvent], Any] | None = (
            log.append if log is not None else lower if producer == "lower" else None
        )
        appended = {"n": 0}

        def produce() -> None:
            if emit is None:
                return
            per_tick = max(1, rate // 1000)
            pc = time.perf_counter_ns
            t_start = pc() + 1_000_000
            i = 0
            k = 0
            while not stop.is_set():
                target = t_start + k * 1_000_000
                now = pc()
                if target > now:
                    time.sleep((target - now) / 1e9)
                for _ in range(per_tick):
                    emit(events[i % n])
                    i += 1
                k += 1
            appended["n"] = i

        threads = [
            threading.Thread(target=engine, name="bench-engine"),
            threading.Thread(target=produce, name="bench-producer"),
        ]
        for t in threads:
            t.start()
        time.sleep(warmup + seconds)
        stop.set()
        for t in threads:
            t.join()
        if log is not None:
            log.close()
        os.close(fd)
    span = counted["t1"] - counted["t0"]
    return {
        "producer": producer,
        "rate_target": rate,
        "seconds": span,
        "appended": appended["n"],
        "engine_iterations_per_s": counted["iterations"] / span if span > 0 else 0.0,
    }


def _openssl_sha256_512() -> float | None:
    """Bytes/s of ``openssl speed -bytes 512 -evp sha256`` on one core (None: no openssl)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        return None
    out = subprocess.run(
        ["openssl", "speed", "-bytes", "512", "-seconds", "2", "-evp", "sha256"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        if line.startswith("sha256"):
            return float(line.split()[-1].rstrip("k")) * 1000.0
    return None


def run_verify_big(n_records: int) -> Result:
    """``verify`` bytes/s on a log of ``n_records`` events, native and Python engines,
    beside ``openssl speed -bytes 512 -evp sha256`` measured in the same process."""
    events = frozen_events(min(n_records, 50_000))
    with tmpdir() as tmp:
        path = Path(tmp) / "verify.jsonl"
        with AuditLog(AuditConfig(log_path=path, queue_size=QUEUE_SIZE)) as log:
            for i in range(n_records):
                log.append(events[i % len(events)])
        size = path.stat().st_size
        timings: dict[str, list[float]] = {"native": [], "python": []}
        records = 0
        for engine, repeats in (("native", 5), ("python", 1)):
            for _ in range(repeats):
                t0 = time.perf_counter_ns()
                report = verify_paths([path], engine=engine)  # type: ignore[arg-type]
                timings[engine].append((time.perf_counter_ns() - t0) / 1e9)
                assert report.valid, report.findings[:3]
                records = report.records
    sha = _openssl_sha256_512()
    native = sorted(timings["native"])[len(timings["native"]) // 2]
    python = timings["python"][0]
    return {
        "records": records,
        "bytes": size,
        "native_bytes_per_s": size / native,
        "native_records_per_s": records / native,
        "python_bytes_per_s": size / python,
        "python_records_per_s": records / python,
        "openssl_sha256_512_bytes_per_s": sha,
        "native_vs_openssl": (size / native) / sha if sha else None,
    }


def run_queue_memory(n_events: int) -> Result:
    """What a queued record costs: RSS growth of a native queue holding the encoded
    bodies of ``n_events`` events (no writer takes them), less their bytes."""
    from riskaudit._native import Queue

    events = frozen_events(min(n_events, 50_000))
    assert encode_event_body is not None
    bodies = [encode_event_body(events[i % len(events)]) for i in range(n_events)]
    body_bytes = sum(len(b) for b in bodies)
    queue_ = Queue(1, n_events + 1)
    gc.collect()
    before = rss_now_mib()
    for body in bodies:
        queue_.push(body, n_events + 1, 1 << 40)
    after = rss_now_mib()
    grown = (after - before) * 1024 * 1024
    return {
        "records": n_events,
        "body_bytes": body_bytes,
        "rss_growth_bytes": grown,
        "overhead_per_record": (grown - body_bytes) / n_events,
        "item_overhead_declared": Queue.item_overhead,
    }
