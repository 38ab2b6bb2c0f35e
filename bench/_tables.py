"""The tables of a run: each as a header and rows of cells, printed as text or Markdown.

The same rows make the table ``run.py`` prints and the tables of docs/benchmarks.md, so
the terminal and the page never disagree on a cell.
"""

from __future__ import annotations

from typing import Any

from _format import DASH, TIMES, k, med, rng
from _summary import VARIANTS, Summary


def table(header: list[str], rows: list[list[str]], *, markdown: bool) -> str:
    """One table, as aligned text columns or as a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        + [fmt.format(*r) for r in rows]
    )


def throughput_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    header = [
        "variant",
        "events/s",
        f"{TIMES} (a)",
        "call p50 µs",
        "call p99 µs",
        "call p99.9 µs",
        f"p99 {TIMES} (a)",
        "peak RSS MiB (+run)",
    ]
    rows = []
    for v in VARIANTS:
        x = s["throughput"][v]
        rows.append(
            [
                f"({v}) {x['label']}",
                k(x["events_per_s"]),
                f"{x['ratio_eps']['median']:.2f}{TIMES}",
                med(x["p50_us"], ".2f"),
                med(x["p99_us"], ".2f"),
                med(x["p999_us"], ".1f"),
                f"{x['ratio_p99']['median']:.2f}{TIMES}",
                f"{x['rss_peak_mib']['median']:.0f} (+{x['rss_delta_mib']['median']:.1f})",
            ]
        )
    return header, rows


def _paced_config(p: dict[str, Any]) -> tuple[str, str]:
    """The flush_interval and switch-interval cells of one paced row."""
    fi = f"{p['flush_interval']:g} s"
    if p.get("flush_interval_cfg") is None:
        fi += " (library default)"
    si = f"{p['switch_interval'] * 1e3:g} ms"
    if p.get("switch_interval_cfg") is None:
        si += " (interpreter default)"
    else:
        si += f" (AuditConfig(switch_interval={p['switch_interval_cfg']:g}))"
    return fi, si


def paced_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    header = [
        "producer",
        "flush_interval",
        "switch interval",
        "durable p50 ms",
        "durable p99 ms",
        "max ms",
        "commits/s",
        "achieved/s",
    ]
    names = {"spin": "busy-wait per event", "tick": "sleep to 1 ms ticks"}
    rows = []
    for p in s["paced"].values():
        rows.append(
            [
                names.get(p["pacing"], p["pacing"]),
                *_paced_config(p),
                med(p["p50_ms"], ".1f"),
                med(p["p99_ms"], ".1f"),
                f"{p['max_ms']['median']:.1f}",
                f"{p['commits_per_s']['median']:.0f}",
                f"{p['rate_achieved']['median']:,.0f}",
            ]
        )
    return header, rows


def gil_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    header = [
        "switch interval",
        "appends/s",
        "durable p50 ms",
        "durable p99 ms",
        "commits/s",
        "call p99 µs",
        "worst call ms",
    ]
    rows = []
    for key, g in s["gil"].items():
        label = "default" if key == "gil:default" else "AuditConfig(switch_interval=0.001)"
        rows.append(
            [
                f"{label} ({g['switch_interval'] * 1e3:g} ms)",
                k(g["events_per_s"]),
                med(g["p50_ms"], ".0f"),
                med(g["p99_ms"], ".0f"),
                f"{g['commits_per_s']['median']:.1f}",
                med(g["call_p99_us"], ".2f"),
                f"{g['call_max_ms']['median']:.1f}",
            ]
        )
    return header, rows


def construct_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    header = ["what", "p50 µs (timed per call)", "p99 µs", "mean µs (bulk loop)"]
    names = {
        "riskevent": "RiskEvent(...)",
        "uuid4_str": "str(uuid.uuid4()) alone",
        "dataclass_uuid4": "dataclass with uuid4 default",
        "encode_event_body": "encode_event_body (append's encode)",
    }
    rows = [
        [
            names[k],
            med(c["p50_us"], ".2f"),
            med(c["p99_us"], ".2f"),
            med(c["bulk_mean_us"], ".2f"),
        ]
        for k, c in s["construct"].items()
    ]
    return header, rows


def stall_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    header = ["queue_size", "appends", "peak RSS MiB", "growth MiB", "appending took s"]
    rows = []
    for key in ("stall:bounded", "stall:unbounded"):
        x = s["stall"][key]
        q = "unbounded (2^30)" if key.endswith("unbounded") else f"{x['queue_size']:,}"
        rows.append(
            [
                q,
                f"{x['appends']:,}",
                med(x["rss_peak_mib"], ".0f"),
                med(x["rss_delta_mib"], ".1f"),
                med(x["calls_s"], ".2f"),
            ]
        )
    return header, rows


def http_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    header = [
        "workload",
        "events/s",
        "requests/s",
        "request p50 ms",
        "request p99 ms",
        "server CPU µs/event",
        "server cores busy",
        "verified",
    ]
    rows = []
    for h in s["http"].values():
        per_event = h["server_cpu_us_per_event"]
        rows.append(
            [
                h["label"],
                med(h["events_per_s"], ",.0f"),
                med(h["requests_per_s"], ",.0f"),
                med(h["p50_ms"], ".2f"),
                med(h["p99_ms"], ".2f"),
                f"{per_event['median']:,.0f}"
                if per_event["median"] >= 100
                else f"{per_event['median']:.1f}",
                f"{h['server_cores_busy']['median']:.2f}",
                f"{h['verified']}/{h['runs']} runs",
            ]
        )
    return header, rows


def ops_rows(s: Summary) -> tuple[list[str], list[list[str]]]:
    o = s["ops"]
    header = [
        "embedded producer",
        "events/s",
        "call p50 µs",
        "call p99 µs",
        "call p99.9 µs",
        "worst call ms",
        "durable p99 ms",
        "other threads' CPU ms",
    ]
    names = {
        "off": "AuditLog alone",
        "on": f"+ start_ops_server, scraped every {o['scrape_every_s']:g} s",
    }
    rows = []
    for key in ("off", "on"):
        x = o[key]
        rows.append(
            [
                names[key],
                k(x["events_per_s"]),
                med(x["p50_us"], ".2f"),
                med(x["p99_us"], ".2f"),
                med(x["p999_us"], ".0f"),
                med(x["max_ms"], ".1f"),
                med(x["durable_p99_ms"], ".0f"),
                f"{x['other_cpu_ms']['median']:.0f}",
            ]
        )
    rows.append(
        [
            "ratio with / without (per round)",
            f"{o['ratio_eps']['median']:.2f}{TIMES} ({rng(o['ratio_eps'], '.2f')})",
            "",
            f"{o['ratio_p99']['median']:.2f}{TIMES} ({rng(o['ratio_p99'], '.2f')})",
            f"{o['ratio_p999']['median']:.2f}{TIMES}",
            "",
            "",
            "",
        ]
    )
    return header, rows


def target_rows(s: Summary, *, markdown: bool) -> tuple[list[str], list[list[str]]]:
    header = ["target", "wanted", f"measured (median, min{DASH}max)", "met?", "by how much"]
    no = "**no**" if markdown else "NO"
    rows = [
        [t["name"], t["target"], t["measured"], "yes" if t["met"] else no, t["margin"]]
        for t in s["targets"]
    ]
    return header, rows


def markdown_tables(s: Summary) -> dict[str, str]:
    """The tables of docs/benchmarks.md by name; ``http`` and ``ops`` if the run has them."""
    rows = {
        "throughput": throughput_rows(s),
        "paced": paced_rows(s),
        "gil": gil_rows(s),
        "construct": construct_rows(s),
        "stall": stall_rows(s),
        "targets": target_rows(s, markdown=True),
    }
    if "http" in s:
        rows["http"] = http_rows(s)
    if "ops" in s:
        rows["ops"] = ops_rows(s)
    return {name: table(*r, markdown=True) for name, r in rows.items()}


def text_tables(raw: dict[str, Any]) -> str:
    """What ``run.py`` prints: every table of the run as text, the targets last."""
    s = raw["summary"]
    m = raw["meta"]
    parts = [
        f"\nriskaudit benchmarks: {len(raw['rounds'])} rounds x {m['args']['events']:,} events,"
        f" {m['machine']['cpus']} CPUs, Python {m['machine']['python']}"
        f" (median, min{DASH}max over rounds)\n",
        table(*throughput_rows(s), markdown=False),
        f"\ntimer (perf_counter_ns pair): p50 {s['timer']['p50_ns']['median']:.0f} ns",
        f"(d) at full speed: time-to-durable p50 {med(s['d']['durable_p50_ms'], '.0f')} ms,"
        f" p99 {med(s['d']['durable_p99_ms'], '.0f')} ms;"
        f" verify {k(s['d']['verify_rps'])} records/s",
        "\ntime to durable, AuditLog paced (target judged on the first row):",
        table(*paced_rows(s), markdown=False),
        f"\nGIL starvation, one producer flat out for ~{m['args']['gil_seconds']:g} s:",
        table(*gil_rows(s), markdown=False),
        "\nconstruction:",
        table(*construct_rows(s), markdown=False),
        "\nmemory while the disk stalls:",
        table(*stall_rows(s), markdown=False),
    ]
    if "http" in s:
        parts += [
            "\nHTTP ingest (riskaudit serve on loopback, one keep-alive httpx client):",
            table(*http_rows(s), markdown=False),
        ]
    if "ops" in s:
        parts += [
            f"\nembedded producer, {s['ops']['events']:,} appends, with and without the ops "
            "endpoints:",
            table(*ops_rows(s), markdown=False),
        ]
    parts += ["\ntargets:", table(*target_rows(s, markdown=False), markdown=False)]
    return "\n".join(parts)
