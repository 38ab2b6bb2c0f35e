"""The status page: server-rendered HTML, no front-end build, no event content.

Everything is in the HTML itself — works with JavaScript disabled — and the chart of
events per second is inline SVG drawn on the server; a ``meta refresh`` keeps it live.
"""

from __future__ import annotations

import html
from typing import Any

from riskaudit.log import LogStatus
from riskaudit.ops._views import ReplicationStatus

_CSS = """
body{font:14px system-ui,sans-serif;margin:2em;color:#1b1f24;background:#f7f8fa}
h1{font-size:20px;margin:0 0 .2em} .sub{color:#57606a;margin-bottom:1.2em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 14px}
.card h2{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#57606a;margin:0 0 6px}
.big{font-size:22px;font-weight:600} .ok{color:#1a7f37} .degraded{color:#9a6700}
.failing{color:#cf222e} td{padding:2px 10px 2px 0} ul{margin:4px 0 0 18px;padding:0}
.wide{grid-column:1/-1} svg.chart{display:block;width:100%;height:auto}
"""


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><td>{html.escape(k)}</td><td><b>{html.escape(str(v))}</b></td></tr>" for k, v in pairs
    )


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    minutes = f"{seconds / 60:.1f}".removesuffix(".0")
    return f"{minutes} min ago"


# The chart's own coordinates; the SVG scales to the card's width (viewBox), so it
# fills the card at any window size without script.
_W, _H = 800, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 12, 40


def _rate_label(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"


def _chart(rates: list[tuple[float, float]]) -> str:
    """Events per second over the last minutes, newest on the right: axes, labels,
    gridlines and the line, all drawn here."""
    open_tag = (
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="100%" '
        'preserveAspectRatio="xMidYMid meet" role="img" aria-label="events per second">'
    )
    if len(rates) < 2:
        return (
            f'{open_tag}<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" '
            'fill="#57606a">collecting samples…</text></svg>'
        )
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    span = max(1.0, *(a for a, _ in rates))
    top = max(1.0, *(r for _, r in rates)) * 1.25  # headroom above the peak

    def x(ago: float) -> float:
        return _LEFT + plot_w * (1 - ago / span)

    def y(rate: float) -> float:
        return _TOP + plot_h * (1 - rate / top)

    parts = [open_tag]
    for frac in (0.0, 0.5, 1.0):  # horizontal gridlines with their y-axis values
        gy = y(top * frac)
        parts.append(
            f'<line x1="{_LEFT}" y1="{gy:.1f}" x2="{_W - _RIGHT}" y2="{gy:.1f}" '
            'stroke="#d0d7de" stroke-width="1"/>'
            f'<text x="{_LEFT - 6}" y="{gy + 4:.1f}" font-size="12" text-anchor="end" '
            f'fill="#57606a">{_rate_label(top * frac)}</text>'
        )
    for frac, label in ((1.0, _ago(span)), (0.5, _ago(span / 2)), (0.0, "now")):
        gx = x(span * frac)
        anchor = "start" if frac == 1.0 else "end" if frac == 0.0 else "middle"
        parts.append(
            f'<text x="{gx:.1f}" y="{_TOP + plot_h + 16}" font-size="12" '
            f'text-anchor="{anchor}" fill="#57606a">{label}</text>'
        )
    pts = " ".join(f"{x(ago):.1f},{y(r):.1f}" for ago, r in rates)
    parts.append(
        f'<polyline fill="none" stroke="#0969da" stroke-width="2" points="{pts}"/>'
        f'<text class="axis" x="{_LEFT + plot_w / 2}" y="{_H - 4}" font-size="12" '
        'text-anchor="middle" fill="#57606a">time</text>'
        f'<text class="axis" transform="translate(14 {_TOP + plot_h / 2}) rotate(-90)" '
        'font-size="12" text-anchor="middle" fill="#57606a">events per second</text></svg>'
    )
    return "".join(parts)


def _replication_card(rep: ReplicationStatus | None) -> str:
    """The forwarder's view, end to end: what the broker has, and what the collector
    has fsynced centrally (the only one that counts as replicated)."""
    if rep is None:
        return ""
    return f"""<div class="card"><h2>Replication</h2><table>{
        _rows(
            [
                ("fsynced centrally (seq)", rep.replicated_seq),
                ("acknowledged by NATS (seq)", rep.broker_acked_seq),
                ("not yet replicated", f"{rep.lag_records:,} records"),
                ("oldest of them", "—" if not rep.lag_records else f"{rep.lag_seconds:.0f} s"),
                ("repairs served", rep.repairs),
            ]
        )
    }</table></div>"""


def render_page(
    status: LogStatus,
    replication: ReplicationStatus | None,
    rates: list[tuple[float, float]],
    version: str,
) -> str:
    health = status.health
    cls = html.escape(health.status)
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in health.reasons) or "<li>none</li>"
    warnings = "".join(f"<li>{html.escape(r)}</li>" for r in health.warnings)
    cp = status.checkpoint
    storage = status.storage
    clock = status.clock
    rec = status.records
    if not cp.enabled:
        age = "checkpoints off"
    elif not cp.written or cp.age_s is None:
        age = "none yet"  # the age would be the time since start, not of a checkpoint
    else:
        age = f"{cp.age_s:.0f} s"
    free = storage.free_bytes if storage else None
    total = storage.total_bytes if storage else None
    space = (
        "—" if not free or not total else f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
    )
    latest = f"{rates[-1][1]:,.1f}/s" if rates else "—"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>riskaudit — {cls}</title><style>{_CSS}</style></head>
<body>
<h1>riskaudit <span class="{cls}">{cls}</span></h1>
<div class="sub">{html.escape(status.path)} · stream {html.escape(status.stream)} · riskaudit {
        html.escape(version)
    }</div>
<div class="grid">
<div class="card"><h2>Health</h2><div class="big {cls}" id="health">{cls}</div>
<ul>{reasons}</ul>{f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else ""}</div>
<div class="card"><h2>Chain</h2><table>{
        _rows(
            [
                ("chain head (seq)", status.last_seq),
                ("durable watermark", status.durable_seq),
                ("queued", status.queued),
                ("checkpoint age", age),
                ("checkpoints signed", "yes" if cp.signed else "no"),
            ]
        )
    }</table><span id="chain-head" hidden>{status.last_seq}</span></div>
<div class="card"><h2>Destinations</h2><table>{
        _rows(
            [
                ("writing to", status.destination),
                ("records to primary", rec.primary),
                ("to spool / pending", f"{rec.spool} / {rec.spool_pending}"),
                ("stdout only", rec.stdout),
                ("unsequenced", rec.unsequenced),
                ("lost", rec.lost),
            ]
        )
    }</table></div>
<div class="card"><h2>Storage</h2><table>{
        _rows(
            [
                ("volume", "— (—)" if storage is None else f"{storage.mount} ({storage.fstype})"),
                ("space", space),
                ("persistent", "yes" if storage and storage.persistent else "NO"),
                ("container", (storage.container if storage else None) or "none"),
            ]
        )
    }</table></div>
<div class="card"><h2>Clock</h2><table>{
        _rows(
            [
                ("synchronised", "yes" if clock.synchronised else "NO"),
                ("max error", "—" if clock.max_error_s is None else f"{clock.max_error_s:g} s"),
                ("kernel state", clock.state),
            ]
        )
    }</table></div>
{_replication_card(replication)}
<div class="card wide"><h2>Events per second ({latest})</h2>{_chart(rates)}</div>
</div>
<p class="sub">No event content is shown here. API: <a href="/docs">/docs</a> ·
<a href="/metrics">/metrics</a> · <a href="/v1/status">/v1/status</a></p>
</body></html>"""
