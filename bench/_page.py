"""docs/benchmarks.md, rendered from one run's results (nothing on it is typed in by hand).

The prose is the Jinja2 template ``benchmarks.md.j2`` beside this file (rendered in
``_template``'s environment), so the page reads and edits as Markdown. This module
computes what the template fills in: every number, ratio and verdict ("meets" or
"misses", "within the noise" or not) comes from the summary of the run that wrote the
page. An optional section (HTTP, ops, the host's cost, ...) is ``None`` in the context
when the run has no data for it, and the template leaves it out. A name the template
reads but the context lacks fails the render (``StrictUndefined``).
"""

from __future__ import annotations

from typing import Any

from _format import Spread
from _stats import spread
from _summary import (
    PACED_SPIN_WINDOW,
    PACED_SPIN_WINDOW_SI,
    PACED_TICK_DEFAULT,
    PACED_TICK_WINDOW,
    PRIMARY_PACED,
    TARGET_TTD_MS,
    Summary,
)
from _tables import markdown_tables
from _template import HERE, environment
from _variants import QUEUE_SIZE

TEMPLATE = HERE / "benchmarks.md.j2"

Context = dict[str, Any]


def render(raw: dict[str, Any], chart_name: str) -> str:
    """The page for ``raw`` (a results.json with its ``summary``), the chart at ``chart_name``."""
    template = environment().get_template(TEMPLATE.name)
    return template.render(context(raw, chart_name))


def context(raw: dict[str, Any], chart_name: str) -> Context:
    """Everything the template reads, by name."""
    s: Summary = raw["summary"]
    return {
        "run": _run(raw, chart_name),
        "queue_size": QUEUE_SIZE,
        "target_ttd_ms": TARGET_TTD_MS,
        "tables": markdown_tables(s),
        "variant": s["throughput"],  # (a) to (e), as the throughput table shows them
        "tp": _throughput(s, int(raw["meta"]["args"]["events"])),
        "full": s["d"],  # (d) at full speed: time to durable, commits, CPU, verify
        "paced": _paced(s),
        "gil": _gil(s),
        "attrib": _attrib(s),
        "construct": _construct(s),
        "stall": _stall(s),
        "http": _http(s) if "http" in s else None,
        "ops": _ops(s) if "ops" in s else None,
        "host": s.get("host"),
        "verify_big": s.get("verify_big"),
        "queue_memory": s.get("queue_memory"),
        "targets": _targets(s),
    }


def _run(raw: dict[str, Any], chart_name: str) -> Context:
    """The run itself: when, how long, on what machine, with which arguments."""
    s, m = raw["summary"], raw["meta"]
    args = m["args"]
    noise = sorted(
        (x["events_per_s"]["max"] - x["events_per_s"]["min"]) / x["events_per_s"]["median"]
        for x in s["throughput"].values()
    )
    return {
        "started": m["started"],
        "duration_s": m["duration_s"],
        "minutes": m["duration_s"] / 60,
        "rounds": len(raw["rounds"]),
        "events": args["events"],
        "pace_warmup": args["pace_warmup"],
        "gil_seconds": args["gil_seconds"],
        "http_seconds": args["http_seconds"],
        "source_changed": bool(m.get("source_changed_during_run")),
        "source_fingerprint": m["source_fingerprint"],
        "events_digest": m["events_digest"],
        "machine": m["machine"],
        "switch_ms": m["machine"]["switch_interval_default"] * 1e3,
        "chart": chart_name,
        # how far one variant's events/s moved across rounds, (max - min) / median, in %
        "noise_pct": {"min": noise[0] * 100, "max": noise[-1] * 100},
        "loadavg": s.get("loadavg_1m"),
        "timer": s["timer"]["p50_ns"],
    }


def _throughput(s: Summary, calls: int) -> Context:
    """What the throughput bullets say beyond the table."""
    tp, d_run = s["throughput"], s["d"]
    d, e = tp["d"], tp["e"]
    throttled = d_run.get("throttled")
    return {
        "d_pct_of_e": d["events_per_s"]["median"] / e["events_per_s"]["median"] * 100,
        "d_max_ms": d["max_us"]["median"] / 1e3,
        "calls": calls,
        "calls_k": calls // 1000,  # the p99.9 is the calls_k-th slowest call
        # backlog-throttle waits per run, when the library counts them and there were any
        "throttled": throttled["median"]
        if throttled is not None and throttled["median"] > 0
        else None,
        "c_piles_up": tp["c"]["rss_delta_mib"]["median"] > 10,
    }


def _paced(s: Summary) -> Context:
    """The paced runs by role, each with what its bullet compares it to."""
    pr = s["paced"]
    any_p = next(iter(pr.values()))
    rate = any_p["rate_target"]
    dflt = pr.get(PRIMARY_PACED)
    spin01 = pr.get(PACED_SPIN_WINDOW)
    spin01_si = pr.get(PACED_SPIN_WINDOW_SI)
    tick_d = pr.get(PACED_TICK_DEFAULT)
    tick01 = pr.get(PACED_TICK_WINDOW)
    if dflt:
        dflt = dflt | {"meets": dflt["p99_ms"]["median"] <= TARGET_TTD_MS}
    if spin01:
        gap = spin01["commit_gap_p50_ms"]["median"]
        spin01 = spin01 | {
            "x_default": spin01["p99_ms"]["median"] / dflt["p99_ms"]["median"] if dflt else None,
            "window_late": gap > 12,  # commits further apart than the 10 ms window
            "gil_starved": gap > 15,  # ... by more than a switch interval or so
        }
    knob = None
    if spin01 and spin01_si:
        a, b = spin01["p99_ms"], spin01_si["p99_ms"]
        change = b["median"] / a["median"] - 1
        knob = spin01_si | {"change_pct": change * 100, "verdict": _knob_verdict(a, b, change)}
    ticks = None
    if tick_d and tick01:
        ticks = {
            "default": tick_d,
            "window": tick01,
            "fsync_cheap": tick_d["p99_ms"]["median"] < 5,
        }
    return {
        "rate": rate,
        "seconds": any_p["seconds"],
        "slot_us": 1e6 / rate,
        "per_tick": rate // 1000,
        "default": dflt,
        "spin01": spin01,
        "knob": knob,
        "ticks": ticks,
    }


def _knob_verdict(a: Spread, b: Spread, change: float) -> str:
    """What switch_interval=0.001 did to the p99: ``a`` without it, ``b`` with it."""
    if min(a["n"], b["n"]) < 3:
        return "too few rounds"
    if b["min"] <= a["max"] and a["min"] <= b["max"]:
        return "overlap"
    return "better" if change < 0 else "worse"


def _gil(s: Summary) -> Context | None:
    """The flat-out producer with both switch intervals (None unless the run has both)."""
    g0, g1 = s["gil"].get("gil:default"), s["gil"].get("gil:0.001")
    if not (g0 and g1):
        return None
    change = g1["p99_ms"]["median"] / g0["p99_ms"]["median"] - 1
    thr = g0.get("throttled")
    return {
        "default": g0,
        "short": g1,
        "change_pct": change * 100,
        "helps": change < -0.25,
        "throttled": thr["median"] if thr is not None and thr["median"] > 0 else None,
        "rejected": g0["rejected"] + g1["rejected"],
    }


def _attrib(s: Summary) -> Context | None:
    """The slow calls' page faults and context switches, as percentages."""
    att: Summary | None = s.get("attrib")
    if not att:
        return None
    fault_share = att["tail_fault_only"]["median"] + att["tail_both"]["median"]
    all_share = att["calls_with_fault"]["median"] / att["events"]
    return att | {
        "pct": {
            "fault_only": att["tail_fault_only"]["median"] * 100,
            "switch_only": att["tail_switch_only"]["median"] * 100,
            "both": att["tail_both"]["median"] * 100,
            "neither": att["tail_neither"]["median"] * 100,
            "all_fault": all_share * 100,
        },
        # how much likelier a faulting call is to be in the slowest 1% than any call
        "fault_odds": fault_share / all_share if all_share > 0 else None,
    }


def _construct(s: Summary) -> Context | None:
    """A RiskEvent against uuid4 alone and the uuid4 dataclass, p50 (None if unmeasured)."""
    cons = s["construct"]
    if not ("riskevent" in cons and "uuid4_str" in cons and "dataclass_uuid4" in cons):
        return None
    r, u, dc = (cons[x]["p50_us"]["median"] for x in ("riskevent", "uuid4_str", "dataclass_uuid4"))
    return {
        "riskevent": r,
        "uuid4": u,
        "dataclass": dc,
        "pct_of_uuid4": r / u * 100,
        "pct_of_dataclass": r / dc * 100,
    }


def _stall(s: Summary) -> Context:
    """The stalled disk: the bounded run, and what a queued record costs."""
    st = s["stall"]
    per = st["bytes_per_queued_record"]["median"]
    return {
        "bounded": st["stall:bounded"],
        "per_record": per,
        "default_queue_mib": QUEUE_SIZE * per / 2**20,
    }


def _http(s: Summary) -> Context:
    """HTTP ingest: the three workloads (each None if not run) and what they add up to."""
    h = s["http"]
    single, batch, dur = h.get("http:single"), h.get("http:batch"), h.get("http:durable")
    any_h = next(iter(h.values()))
    out: Context = {
        "single": single,
        "batch": batch,
        "durable": dur,
        "startup_s": spread(x["server_startup_s"]["median"] for x in h.values()),
        "single_body_bytes": single["body_bytes"] if single else 80,
        "events_per_batch": any_h["events_per_request"] if not single else 1000,
        "batch_body_bytes": batch["body_bytes"] if batch else 0,
        "runs": sum(x["runs"] for x in h.values()),
        "verified": sum(x["verified"] for x in h.values()),
        "accepted_seqs": sum(x["accepted_seqs"] for x in h.values()),
        "records_verified": sum(x["records_verified"] for x in h.values()),
        "rss_mib": spread(x["server_rss_peak_mib"]["median"] for x in h.values()),
    }
    codes: dict[str, int] = {}
    for x in h.values():
        for code, n in x["statuses"].items():
            codes[code] = codes.get(code, 0) + n
    out["statuses"] = sorted(codes.items())
    if single:
        srv = single["server_cpu_us_per_request"]["median"]
        out |= {
            "server_us": srv,
            "client_us": single["client_cpu_us_per_request"]["median"],
            "wall_us": 1e6 / single["requests_per_s"]["median"],
            "server_max_rps": 1e6 / srv,  # what one server's CPU allows, single events
        }
        if batch:
            out["per_request_us"] = srv - batch["server_cpu_us_per_event"]["median"]
    if single and batch:
        out["batch_x_single"] = batch["events_per_s"]["median"] / single["events_per_s"]["median"]
    if batch and dur:
        b, d = batch["events_per_s"], dur["events_per_s"]
        out |= {
            "durable_change_pct": (d["median"] / b["median"] - 1) * 100,
            "durable_overlaps": d["min"] <= b["max"] and b["min"] <= d["max"],
            "durable_extra_ms": dur["p50_ms"]["median"] - batch["p50_ms"]["median"],
        }
    return out


def _ops(s: Summary) -> Context:
    """The ops endpoints' cost: verdicts on the per-round ratios, CPU share, scrapes."""
    o: Summary = s["ops"]
    r = o["ratio_eps"]
    if r["min"] <= 1.0 <= r["max"]:
        verdict = "noise"
    elif r["median"] < 1:
        verdict = "slower"
    else:
        verdict = "not slower"
    other = o["on"]["other_cpu_ms"]["median"]
    secs = o["on"]["elapsed_s"]["median"]
    return o | {
        "verdict": verdict,
        "fewer_pct": (1 - r["median"]) * 100,
        "p999_up": o["ratio_p999"]["min"] > 1,  # higher in every round
        "core_pct": other / 1e3 / secs * 100,
        "statuses": sorted(o["scrape_statuses"].items()),
        "metrics_late": o["metrics_p50_ms"]["median"] > 10,
    }


def _targets(s: Summary) -> Context:
    """Targets met and missed; the paced figures the default's target is not judged on."""
    pr = s["paced"]
    others = []
    for config, key in (
        ("spin01", PACED_SPIN_WINDOW),
        ("tick01", PACED_TICK_WINDOW),
        ("knob", PACED_SPIN_WINDOW_SI),
    ):
        p = pr.get(key)
        if p is not None:
            p99 = p["p99_ms"]["median"]
            others.append({"config": config, "p99_ms": p99, "within": p99 <= TARGET_TTD_MS})
    return {
        "all": s["targets"],
        "met": [t for t in s["targets"] if t["met"]],
        "missed": [t for t in s["targets"] if not t["met"]],
        "others": others,
    }
