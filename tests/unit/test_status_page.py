"""The status page's HTML: the chart scales to its card and labels its axes; the
checkpoint age says "none yet" until a checkpoint exists."""

from __future__ import annotations

import re
import time
from pathlib import Path

from riskaudit import AuditConfig, AuditLog
from riskaudit.ops._page import render_page
from tests.helpers import event, synced_clock

SVG = re.compile(r"<svg [^>]*>.*?</svg>", re.S)


def page_of(log: AuditLog, rates: list[tuple[float, float]]) -> str:
    return render_page(log.status(), None, rates, "test")


def checkpoint_age(page: str) -> str:
    m = re.search(r"<td>checkpoint age</td><td><b>([^<]*)</b>", page)
    assert m is not None, page
    return m.group(1)


def test_checkpoint_age_says_none_yet_until_the_first_checkpoint(tmp_path: Path) -> None:
    """Before the first checkpoint the age is "none yet", not the time since start;
    after one it is a number of seconds."""
    log = AuditLog(
        AuditConfig(log_path=tmp_path / "a.jsonl", checkpoint_records=3), clock=synced_clock
    )
    try:
        assert checkpoint_age(page_of(log, [])) == "none yet"
        for i in range(4):
            log.append(event(i))
        log.flush()
        deadline = time.monotonic() + 10
        while log.status().checkpoint.written == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert re.fullmatch(r"\d+ s", checkpoint_age(page_of(log, [])))
    finally:
        log.close()


def test_checkpoint_age_says_off_when_checkpoints_are_off(tmp_path: Path) -> None:
    """With checkpoints disabled the page says so rather than showing an age."""
    cfg = AuditConfig(log_path=tmp_path / "a.jsonl", checkpoint_interval=0, checkpoint_records=0)
    log = AuditLog(cfg, clock=synced_clock)
    try:
        assert log.status().checkpoint.enabled is False
        assert checkpoint_age(page_of(log, [])) == "checkpoints off"
    finally:
        log.close()


def test_chart_scales_to_its_card_and_labels_both_axes(tmp_path: Path) -> None:
    """The SVG has a viewBox and 100% width (it fills the card at any size), an axis
    title on each axis, the rate scale from 0 to the top, and the time span to now."""
    log = AuditLog(AuditConfig(log_path=tmp_path / "a.jsonl"), clock=synced_clock)
    try:
        rates = [(300.0, 120.0), (150.0, 400.0), (0.0, 80.0)]
        svg = SVG.search(page_of(log, rates))
        assert svg is not None
        chart = svg.group(0)
        opening = chart[: chart.index(">")]
        assert 'viewBox="0 0 ' in opening and 'width="100%"' in opening
        assert "height=" not in opening  # the height follows the width
        axes = re.findall(r'<text class="axis"[^>]*>([^<]+)</text>', chart)
        assert axes == ["time", "events per second"]
        labels = re.findall(r"<text [^>]*>([^<]+)</text>", chart)
        assert {"0", "250", "500", "5 min ago", "2.5 min ago", "now"} <= set(labels), labels
        assert len(re.findall(r"<polyline ", chart)) == 1
        # Not enough samples yet: still a full-width chart, saying why it is empty.
        empty = SVG.search(page_of(log, [(0.0, 1.0)]))
        assert empty is not None and 'width="100%"' in empty.group(0)
        assert "collecting samples" in empty.group(0)
    finally:
        log.close()
