"""docs/benchmarks.png: throughput and producer call p99 per variant, and HTTP ingest.

matplotlib is imported only when the chart is drawn: the measuring subprocesses and a
``--no-docs`` run never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _format import DASH, TIMES, Spread
from _summary import TARGET_P99_X_LOWER, TARGET_RATIO, VARIANTS, Summary


def chart(raw: dict[str, Any], path: Path) -> None:
    """Draw the chart of this run's summary into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    s = raw["summary"]["throughput"]
    short = {
        "a": "seed\njson + line-buffered",
        "b": "structlog\n+ orjson",
        "c": "stdlib\nQueueHandler",
        "d": "riskaudit\nAuditLog",
        "e": "lower bound\norjson + 64 KiB",
    }
    labels = [f"({v}) {short[v]}" for v in VARIANTS]
    colors = ["#9e9e9e", "#7e57c2", "#42a5f5", "#e65100", "#66bb6a"]
    http = raw["summary"].get("http")
    ops = raw["summary"].get("ops")
    if http:
        fig, axes = plt.subplots(
            1, 3, figsize=(19, 5.4), gridspec_kw={"width_ratios": [1.15, 1.15, 1]}
        )
        ax1, ax2, ax3 = axes
    else:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    x = range(len(VARIANTS))

    def bars(ax: Any, key: str, scale: float) -> None:
        med = [s[v][key]["median"] * scale for v in VARIANTS]
        lo = [m - s[v][key]["min"] * scale for m, v in zip(med, VARIANTS, strict=True)]
        hi = [s[v][key]["max"] * scale - m for m, v in zip(med, VARIANTS, strict=True)]
        ax.bar(x, med, color=colors, yerr=[lo, hi], capsize=5, edgecolor="black", lw=0.5)
        for i, (m, h) in enumerate(zip(med, hi, strict=True)):
            ax.annotate(
                f"{m:.3g}",
                (i, m + h),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=9,
            )
        ax.set_xticks(list(x), labels, fontsize=8)

    bars(ax1, "events_per_s", 1e-3)
    ax1.set_ylim(0, max(s[v]["events_per_s"]["max"] for v in VARIANTS) * 1e-3 * 1.12)
    a_eps = s["a"]["events_per_s"]["median"] * 1e-3
    ax1.axhline(a_eps * TARGET_RATIO, color="#e65100", ls="--", lw=1)
    ax1.text(
        -0.4,
        a_eps * TARGET_RATIO,
        f" target for (d): {TARGET_RATIO:g}{TIMES} (a)",
        va="bottom",
        fontsize=8,
    )
    ax1.set_ylabel("thousand events/s, end to end (higher is better)")
    ax1.set_title(f"Throughput: median, min{DASH}max over {len(raw['rounds'])} rounds")

    bars(ax2, "p99_us", 1.0)
    ax2.set_yscale("log")
    lo = min(s[v]["p99_us"]["min"] for v in VARIANTS)
    hi = max(s[v]["p99_us"]["max"] for v in VARIANTS)
    p99_limit = s["e"]["p99_us"]["median"] * TARGET_P99_X_LOWER
    ax2.set_ylim(min(lo, p99_limit) * 0.7, hi * 1.6)
    nice = [1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000]
    ax2.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(nice))
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax2.axhline(p99_limit, color="#e65100", ls="--", lw=1)
    ax2.text(
        -0.4,
        p99_limit,
        f" target for (d): {TARGET_P99_X_LOWER:g}{TIMES} p99 of (e)",
        va="bottom",
        fontsize=8,
    )
    ax2.set_ylabel("producer call p99, µs (log scale; lower is better)")
    ax2.set_title("Producer call latency p99")
    if http:
        _http_panel(ax3, http, ops)
    m = raw["meta"]
    fig.suptitle(
        f"riskaudit benchmarks, {m['args']['events']:,} events per run, "
        f"{m['machine']['cpus']} CPUs, Python {m['machine']['python']} ({m['started'][:10]})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _http_panel(ax: Any, http: Summary, ops: Summary | None) -> None:
    """events/s over HTTP (three ways) next to the embedded producer, log scale."""
    import matplotlib.ticker

    short = {
        "http:single": "HTTP\nsingle events",
        "http:batch": "HTTP\nNDJSON batches\nof 1,000",
        "http:durable": "HTTP NDJSON\nbatches, durable",
    }
    items: list[tuple[str, Spread, str]] = [
        (short[k], h["events_per_s"], "#26a69a") for k, h in http.items()
    ]
    if ops:
        items.append(("embedded\nAuditLog", ops["off"]["events_per_s"], "#e65100"))
        items.append(("embedded\n+ ops, scraped", ops["on"]["events_per_s"], "#ff9800"))
    xs = range(len(items))
    med = [sp["median"] for _, sp, _ in items]
    lo = [m - sp["min"] for m, (_, sp, _) in zip(med, items, strict=True)]
    hi = [sp["max"] - m for m, (_, sp, _) in zip(med, items, strict=True)]
    ax.bar(
        xs,
        med,
        color=[c for _, _, c in items],
        yerr=[lo, hi],
        capsize=5,
        edgecolor="black",
        lw=0.5,
    )
    for i, (m_, h) in enumerate(zip(med, hi, strict=True)):
        text = f"{m_ / 1e3:.3g}k" if m_ >= 1e3 else f"{m_:.0f}"
        ax.annotate(
            text, (i, m_ + h), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=9
        )
    ax.set_yscale("log")
    ax.set_ylim(
        min(sp["min"] for _, sp, _ in items) * 0.5, max(sp["max"] for _, sp, _ in items) * 3
    )
    nice = [100, 300, 1000, 3000, 10_000, 30_000, 100_000, 300_000, 1_000_000]
    ax.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(nice))
    ax.yaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda y, _: f"{y / 1e3:g}k" if y >= 1e3 else f"{y:g}")
    )
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(list(xs), [label for label, _, _ in items], fontsize=8)
    ax.set_ylabel("events/s (log scale; higher is better)")
    ax.set_title("HTTP ingest (one keep-alive client) vs embedded")
