"""From the raw rounds of one run to its summary: medians over the rounds, and the targets.

``results.json`` keeps every round's raw figures; everything the text table, the chart and
docs/benchmarks.md show is read from the summary made here, so the three agree. The
targets of the native-core issue are judged here too, each on a figure of the same run.
"""

from __future__ import annotations

from typing import Any

from _format import DASH, TIMES, Spread, rng
from _stats import spread
from _variants import THROUGHPUT

VARIANTS = "abcde"
# The targets of the native-core issue (17), each judged in the same run.
TARGET_RATIO = 4.0  # (d) events/s, x (a)
TARGET_OF_LOWER = 0.75  # (d) events/s, share of (e)
TARGET_P50_X_LOWER = 1.3  # producer call p50, x (e)'s p50
TARGET_P99_X_LOWER = 1.25  # producer call p99, x (e)'s p99
TARGET_P999_US = 20.0
TARGET_TTD_MS = 5.0  # time to durable p99, 50k/s, default config, busy-wait producer
TARGET_GIL_MS = 20.0  # the same, flat-out producer
TARGET_HOST = 0.98  # host thread's throughput beside riskaudit / beside (e)
TARGET_VERIFY_SHA = 0.60  # verify bytes/s / openssl sha256 (512-byte blocks) bytes/s
TARGET_QUEUE_OVERHEAD = 64  # bytes per queued record beyond its own
# The time-to-durable target is judged on the library's default configuration with the
# busy-wait producer (the harder shape).
PRIMARY_PACED = "paced:spin:default"
PACED_SPIN_WINDOW = "paced:spin:0.01"
PACED_SPIN_WINDOW_SI = "paced:spin:0.01:si0.001"
PACED_TICK_DEFAULT = "paced:tick:default"
PACED_TICK_WINDOW = "paced:tick:0.01"

Summary = dict[str, Any]


def _runs(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [rnd["runs"][key] for rnd in raw["rounds"] if key in rnd["runs"]]


def _sp(runs: list[dict[str, Any]], *path: str, scale: float = 1.0) -> Spread:
    values = []
    for run in runs:
        v: Any = run
        for p in path:
            v = v[p]
        values.append(v * scale)
    return spread(values)


def _opt(runs: list[dict[str, Any]], key: str) -> Spread | None:
    """A counter the library may or may not expose (None when it does not)."""
    if any(r.get(key) is None for r in runs):
        return None
    return spread(r[key] for r in runs)


def _cpu(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-record CPU of producer and writer, and cores kept busy (None if unmeasured)."""
    cpus = [r.get("cpu") for r in runs]
    if any(c is None or c.get("cores_busy") is None for c in cpus):
        return None
    keys = ("producer_us_per_record", "writer_us_per_record", "cores_busy")
    return {k: spread(c[k] for c in cpus if c is not None) for k in keys}


# -- summary --------------------------------------------------------------------------


def summarize(raw: dict[str, Any]) -> Summary:
    rounds = raw["rounds"]
    out: Summary = {"throughput": {}, "paced": {}, "gil": {}, "stall": {}}
    for v in VARIANTS:
        runs = _runs(raw, v)
        ratio_eps, ratio_p99 = [], []
        for rnd in rounds:
            a, x = rnd["runs"]["a"], rnd["runs"][v]
            ratio_eps.append(x["events_per_s"] / a["events_per_s"])
            ratio_p99.append(x["call"]["p99_us"] / a["call"]["p99_us"])
        out["throughput"][v] = {
            "label": THROUGHPUT[v],
            "events_per_s": _sp(runs, "events_per_s"),
            "ratio_eps": spread(ratio_eps),
            "p50_us": _sp(runs, "call", "p50_us"),
            "p99_us": _sp(runs, "call", "p99_us"),
            "p999_us": _sp(runs, "call", "p999_us"),
            "max_us": _sp(runs, "call", "max_us"),
            "ratio_p99": spread(ratio_p99),
            "rss_peak_mib": _sp(runs, "rss_peak_mib"),
            "rss_delta_mib": _sp(runs, "rss_delta_mib"),
        }
    all_tp = [run for v in VARIANTS for run in _runs(raw, v)]
    out["timer"] = {
        "p50_ns": _sp(all_tp, "timer", "p50_ns"),
        "mean_ns": _sp(all_tp, "timer", "mean_ns"),
    }
    d = _runs(raw, "d")
    out["d"] = {
        "durable_p50_ms": _sp(d, "durable", "p50_us", scale=1e-3),
        "durable_p99_ms": _sp(d, "durable", "p99_us", scale=1e-3),
        "commits": _sp(d, "commits"),
        "flush_wait_ms": _sp(d, "flush_wait_ms"),
        "verify_rps": _sp(d, "verify", "records_per_s"),
        "verify_records": d[0]["verify"]["records"],
        "verify_mib": d[0]["verify"]["bytes"] / 2**20,
        "verify_valid": all(run["verify"]["valid"] for run in d),
        "throttled": _opt(d, "throttled"),
        "cpu": _cpu(d),
    }
    paced_keys: list[str] = []  # in the order they ran
    for rnd in rounds:
        paced_keys += [k for k in rnd["runs"] if k.startswith("paced:") and k not in paced_keys]
    for key in paced_keys:
        runs = _runs(raw, key)
        out["paced"][key] = {
            "pacing": runs[0]["pacing"],
            "flush_interval": runs[0]["flush_interval"],
            "flush_interval_cfg": runs[0].get("flush_interval_cfg", runs[0]["flush_interval"]),
            "switch_interval": runs[0]["switch_interval"],
            "switch_interval_cfg": runs[0].get("switch_interval_cfg"),
            "rate_target": runs[0]["rate_target"],
            "seconds": runs[0]["seconds"],
            "rate_achieved": _sp(runs, "rate_achieved"),
            "max_lag_ms": _sp(runs, "max_schedule_lag_ms"),
            "p50_ms": _sp(runs, "durable", "p50_us", scale=1e-3),
            "p99_ms": _sp(runs, "durable", "p99_us", scale=1e-3),
            "p999_ms": _sp(runs, "durable", "p999_us", scale=1e-3),
            "max_ms": _sp(runs, "durable", "max_us", scale=1e-3),
            "commit_gap_p50_ms": _sp(runs, "commit_gap", "p50_us", scale=1e-3),
            "commits_per_s": spread(r["commits"] / (r["seconds"] + r["warmup"]) for r in runs),
        }
    for key in ("gil:default", "gil:0.001"):
        runs = _runs(raw, key)
        if not runs:
            continue
        out["gil"][key] = {
            "switch_interval": runs[0]["switch_interval"],
            "seconds": _sp(runs, "seconds"),
            "events_per_s": _sp(runs, "events_per_s"),
            "p50_ms": _sp(runs, "durable", "p50_us", scale=1e-3),
            "p99_ms": _sp(runs, "durable", "p99_us", scale=1e-3),
            "max_ms": _sp(runs, "durable", "max_us", scale=1e-3),
            "commits_per_s": spread(r["commits"] / r["seconds"] for r in runs),
            "commit_gap_p50_ms": _sp(runs, "commit_gap", "p50_us", scale=1e-3),
            "call_p99_us": _sp(runs, "call", "p99_us"),
            "call_max_ms": _sp(runs, "call", "max_us", scale=1e-3),
            "rejected": sum(r["rejected_queue_full"] for r in runs),
            "throttled": _opt(runs, "throttled"),
            "cpu": _cpu(runs),
        }
    cons = _runs(raw, "construct")
    out["construct"] = {
        kind: {
            "p50_us": _sp(cons, kind, "p50_us"),
            "p99_us": _sp(cons, kind, "p99_us"),
            "bulk_mean_us": _sp(cons, kind, "bulk_mean_us"),
        }
        for kind in ("riskevent", "uuid4_str", "dataclass_uuid4", "encode_event_body")
        if kind in cons[0]
    }
    for key in ("stall:bounded", "stall:unbounded"):
        runs = _runs(raw, key)
        out["stall"][key] = {
            "queue_size": runs[0]["queue_size"],
            "appends": runs[0]["appends"],
            "stall_s": runs[0]["stall_s"],
            "rss_delta_mib": _sp(runs, "rss_delta_mib"),
            "rss_peak_mib": _sp(runs, "rss_peak_mib"),
            "calls_s": _sp(runs, "calls_s"),
            "call_max_ms": _sp(runs, "call", "max_us", scale=1e-3),
        }
    unb = _runs(raw, "stall:unbounded")
    per_item = spread(r["rss_delta_mib"] * 2**20 / r["appends"] for r in unb)
    out["stall"]["bytes_per_queued_record"] = per_item
    att = _runs(raw, "attrib")
    if att:
        out["attrib"] = {
            k: _sp(att, k)
            for k in ("tail_fault_only", "tail_switch_only", "tail_both", "tail_neither")
        } | {
            "p99_us": _sp(att, "call", "p99_us"),
            "clean_p99_us": _sp(att, "clean_call", "p99_us"),
            "calls_with_fault": _sp(att, "calls_with_fault"),
            "calls_with_switch": _sp(att, "calls_with_switch"),
            "events": att[0]["call"]["n"],
        }
    http = _http_summary(raw)
    if http:
        out["http"] = http
    ops = _ops_summary(raw)
    if ops:
        out["ops"] = ops
    loads = [
        run["job"]["loadavg_1m_before"]
        for rnd in rounds
        for run in rnd["runs"].values()
        if "job" in run
    ]
    if loads:
        out["loadavg_1m"] = spread(loads)
    _native_summary(raw, out)
    d_of_e, p50_x, p99_x = [], [], []
    for rnd in rounds:
        d, e = rnd["runs"]["d"], rnd["runs"]["e"]
        d_of_e.append(d["events_per_s"] / e["events_per_s"])
        p50_x.append(d["call"]["p50_us"] / e["call"]["p50_us"])
        p99_x.append(d["call"]["p99_us"] / e["call"]["p99_us"])
    out["d_of_e"] = spread(d_of_e)
    out["call_p50_x_e"] = spread(p50_x)
    out["call_p99_x_e"] = spread(p99_x)
    out["targets"] = targets(out)
    return out


def _native_summary(raw: dict[str, Any], out: Summary) -> None:
    """Cost to the host, verify against SHA-256, a queued record's memory."""
    host: Summary = {}
    for who in ("none", "lower", "riskaudit"):
        runs = _runs(raw, f"host:{who}")
        if runs:
            host[who] = {
                "iterations_per_s": _sp(runs, "engine_iterations_per_s"),
                "appended": _sp(runs, "appended"),
                "seconds": runs[0]["seconds"],
                "rate_target": runs[0]["rate_target"],
            }
    if len(host) == 3:
        vs_lower, vs_none = [], []
        for rnd in raw["rounds"]:
            r = rnd["runs"]
            ra, lo, no = r.get("host:riskaudit"), r.get("host:lower"), r.get("host:none")
            if ra and lo and no:
                vs_lower.append(ra["engine_iterations_per_s"] / lo["engine_iterations_per_s"])
                vs_none.append(ra["engine_iterations_per_s"] / no["engine_iterations_per_s"])
        host["ratio_vs_lower"] = spread(vs_lower)
        host["ratio_vs_none"] = spread(vs_none)
        out["host"] = host
    ver = _runs(raw, "verify:big")
    if ver:
        out["verify_big"] = {
            "records": ver[0]["records"],
            "mib": ver[0]["bytes"] / 2**20,
            "native_mb_s": _sp(ver, "native_bytes_per_s", scale=1e-6),
            "native_rps": _sp(ver, "native_records_per_s"),
            "python_mb_s": _sp(ver, "python_bytes_per_s", scale=1e-6),
            "python_rps": _sp(ver, "python_records_per_s"),
            "openssl_mb_s": _sp(ver, "openssl_sha256_512_bytes_per_s", scale=1e-6),
            "ratio": _sp(ver, "native_vs_openssl"),
        }
    mem = _runs(raw, "queue:memory")
    if mem:
        out["queue_memory"] = {
            "records": mem[0]["records"],
            "overhead": _sp(mem, "overhead_per_record"),
            "declared": mem[0]["item_overhead_declared"],
        }


HTTP_KEYS = ("http:single", "http:batch", "http:durable")


def _http_summary(raw: dict[str, Any]) -> Summary:
    out: Summary = {}
    for key in HTTP_KEYS:
        runs = _runs(raw, key)
        if not runs:
            continue
        statuses: dict[str, int] = {}
        for r in runs:
            for code, count in r["statuses"].items():
                statuses[code] = statuses.get(code, 0) + count
        out[key] = {
            "label": runs[0]["label"],
            "events_per_request": runs[0]["events_per_request"],
            "body_bytes": runs[0]["body_bytes"],
            "seconds": runs[0]["seconds"],
            "events_per_s": _sp(runs, "events_per_s"),
            "requests_per_s": _sp(runs, "requests_per_s"),
            "p50_ms": _sp(runs, "latency", "p50_us", scale=1e-3),
            "p99_ms": _sp(runs, "latency", "p99_us", scale=1e-3),
            "max_ms": _sp(runs, "latency", "max_us", scale=1e-3),
            "requests": _sp(runs, "requests"),
            "server_cpu_us_per_event": _sp(runs, "server_cpu_us_per_event"),
            "server_cpu_us_per_request": _sp(runs, "server_cpu_us_per_request"),
            "server_cores_busy": _sp(runs, "server_cores_busy"),
            "client_cpu_us_per_request": _sp(runs, "client_cpu_us_per_request"),
            "server_rss_peak_mib": _sp(runs, "server_rss_peak_mib"),
            "server_startup_s": _sp(runs, "server_startup_s"),
            "statuses": statuses,
            "runs": len(runs),
            "verified": sum(
                1
                for r in runs
                if r["verify"]["exit_code"] == 0
                and r["verify"]["valid"]
                and r["verify"]["all_accepted_in_log"]
            ),
            "accepted_seqs": sum(r["verify"]["accepted_seqs"] for r in runs),
            "records_verified": sum(r["verify"]["records"] for r in runs),
        }
    return out


def _ops_summary(raw: dict[str, Any]) -> Summary:
    off, on = _runs(raw, "ops:off"), _runs(raw, "ops:on")
    if not off or not on:
        return {}
    out: Summary = {}
    for key, runs in (("off", off), ("on", on)):
        out[key] = {
            "events_per_s": _sp(runs, "events_per_s"),
            "p50_us": _sp(runs, "call", "p50_us"),
            "p99_us": _sp(runs, "call", "p99_us"),
            "p999_us": _sp(runs, "call", "p999_us"),
            "max_ms": _sp(runs, "call", "max_us", scale=1e-3),
            "durable_p99_ms": _sp(runs, "durable", "p99_us", scale=1e-3),
            "other_cpu_ms": _sp(runs, "other_threads_cpu_s", scale=1e3),
            "elapsed_s": _sp(runs, "elapsed_s"),
            "rss_peak_mib": _sp(runs, "rss_peak_mib"),
        }
    ratio_eps, ratio_p99, ratio_p999 = [], [], []
    for rnd in raw["rounds"]:
        a, b = rnd["runs"].get("ops:off"), rnd["runs"].get("ops:on")
        if a is None or b is None:
            continue
        ratio_eps.append(b["events_per_s"] / a["events_per_s"])
        ratio_p99.append(b["call"]["p99_us"] / a["call"]["p99_us"])
        ratio_p999.append(b["call"]["p999_us"] / a["call"]["p999_us"])
    scrapes = [r["scrape"] for r in on]
    statuses: dict[str, int] = {}
    for sc in scrapes:
        for code, count in sc["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    out.update(
        {
            "events": on[0]["events"],
            "pool": on[0]["pool"],
            "flush_interval": on[0]["flush_interval"],
            "ratio_eps": spread(ratio_eps),
            "ratio_p99": spread(ratio_p99),
            "ratio_p999": spread(ratio_p999),
            "scrape_every_s": scrapes[0]["every_s"],
            "scrapes": sum(sc["scrapes"] for sc in scrapes),
            "scrape_statuses": statuses,
            "metrics_bytes": scrapes[0]["metrics_bytes"],
            "metrics_p50_ms": spread(sc["metrics"]["p50_us"] / 1e3 for sc in scrapes),
            "metrics_max_ms": spread(sc["metrics"]["max_us"] / 1e3 for sc in scrapes),
            "health_p50_ms": spread(sc["health"]["p50_us"] / 1e3 for sc in scrapes),
        }
    )
    return out


def _target(
    name: str, target: str, measured: str, value: Spread, limit: float, higher: bool
) -> dict[str, Any]:
    met = value["median"] >= limit if higher else value["median"] <= limit
    return {
        "name": name,
        "target": target,
        "measured": measured,
        "met": met,
        "margin": _margin(value, limit, higher_is_better=higher),
    }


def targets(s: Summary) -> list[dict[str, Any]]:
    """The native-core issue's targets, every one a ratio or figure of this run."""
    tp, t = s["throughput"], []
    ratio = tp["d"]["ratio_eps"]
    t.append(
        _target(
            f"(d) events/s {TIMES} (a)",
            f">= {TARGET_RATIO:g}{TIMES}",
            f"{ratio['median']:.2f}{TIMES} ({rng(ratio, '.2f')})",
            ratio,
            TARGET_RATIO,
            True,
        )
    )
    of_e = s["d_of_e"]
    t.append(
        _target(
            "(d) events/s, share of the lower bound (e)",
            f">= {TARGET_OF_LOWER:.0%}",
            f"{of_e['median']:.0%} ({of_e['min']:.0%}{DASH}{of_e['max']:.0%})",
            of_e,
            TARGET_OF_LOWER,
            True,
        )
    )
    for pct, limit in (("p50", TARGET_P50_X_LOWER), ("p99", TARGET_P99_X_LOWER)):
        x = s[f"call_{pct}_x_e"]
        t.append(
            _target(
                f"producer call {pct} (d) {TIMES} {pct} (e)",
                f"<= {limit:g}{TIMES}",
                f"{x['median']:.2f}{TIMES} ({rng(x, '.2f')}): "
                f"{tp['d'][f'{pct}_us']['median']:.2f} vs {tp['e'][f'{pct}_us']['median']:.2f} µs",
                x,
                limit,
                False,
            )
        )
    p999 = tp["d"]["p999_us"]
    t.append(
        _target(
            "producer call p99.9 (d)",
            f"<= {TARGET_P999_US:g} µs",
            f"{p999['median']:.1f} µs ({rng(p999, '.1f')})",
            p999,
            TARGET_P999_US,
            False,
        )
    )
    paced = s["paced"].get(PRIMARY_PACED)
    if paced is not None:
        ttd = paced["p99_ms"]
        t.append(
            _target(
                f"time-to-durable p99 at {paced['rate_target']:,}/s (default config, "
                "busy-wait producer)",
                f"<= {TARGET_TTD_MS:g} ms",
                f"{ttd['median']:.2f} ms ({rng(ttd, '.2f')})",
                ttd,
                TARGET_TTD_MS,
                False,
            )
        )
    gil = s["gil"].get("gil:default")
    if gil is not None:
        t.append(
            _target(
                "time-to-durable p99, flat-out producer (default switch interval)",
                f"<= {TARGET_GIL_MS:g} ms",
                f"{gil['p99_ms']['median']:.1f} ms ({rng(gil['p99_ms'], '.1f')})",
                gil["p99_ms"],
                TARGET_GIL_MS,
                False,
            )
        )
    host = s.get("host")
    if host is not None:
        r = host["ratio_vs_lower"]
        t.append(
            _target(
                "cost to the host: engine thread beside riskaudit / beside (e), 50k ev/s",
                f">= {TARGET_HOST:g}",
                f"{r['median']:.3f} ({rng(r, '.3f')}); vs no producer "
                f"{host['ratio_vs_none']['median']:.3f}",
                r,
                TARGET_HOST,
                True,
            )
        )
    vb = s.get("verify_big")
    if vb is not None:
        r = vb["ratio"]
        t.append(
            _target(
                f"verify bytes/s {TIMES} openssl sha256 (512-byte blocks), "
                f"{vb['records']:,} records",
                f">= {TARGET_VERIFY_SHA:.0%}",
                f"{r['median']:.0%} ({r['min']:.0%}{DASH}{r['max']:.0%}): "
                f"{vb['native_mb_s']['median']:.0f} vs {vb['openssl_mb_s']['median']:.0f} MB/s, "
                f"{vb['native_rps']['median']:,.0f} records/s",
                r,
                TARGET_VERIFY_SHA,
                True,
            )
        )
    qm = s.get("queue_memory")
    if qm is not None:
        o = qm["overhead"]
        t.append(
            _target(
                "memory: a queued record costs its bytes plus",
                f"<= {TARGET_QUEUE_OVERHEAD} bytes",
                f"{o['median']:.0f} bytes ({rng(o, '.0f')}; {qm['declared']} by layout)",
                o,
                TARGET_QUEUE_OVERHEAD,
                False,
            )
        )
    return t


def _margin(sp: Spread, target: float, *, higher_is_better: bool) -> str:
    value = sp["median"]
    pct = (value / target - 1) * 100
    if higher_is_better:
        text = f"{pct:+.0f}% vs target" + (
            "" if pct >= 0 else f" (needs {target / value:.2f}{TIMES})"
        )
    else:
        text = f"{-pct:.0f}% headroom" if pct <= 0 else f"{pct:.0f}% over the limit"
    if sp["min"] <= target <= sp["max"]:
        text += f"; the target is inside the min{DASH}max range (noise)"
    return text
