"""Percentiles and round summaries, in plain Python (no numpy in the measured processes)."""

from __future__ import annotations

import math
import statistics
import time
from array import array
from collections.abc import Iterable, Sequence
from typing import Any


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..1)."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    k = min(n - 1, max(0, math.ceil(q * n) - 1))
    return float(sorted_values[k])


def latency_us(values_ns: Iterable[int]) -> dict[str, Any]:
    """p50/p99/p99.9/max/mean of nanosecond samples, in microseconds."""
    s = sorted(values_ns)
    n = len(s)
    return {
        "n": n,
        "p50_us": pct(s, 0.50) / 1e3,
        "p90_us": pct(s, 0.90) / 1e3,
        "p99_us": pct(s, 0.99) / 1e3,
        "p999_us": pct(s, 0.999) / 1e3,
        "max_us": (s[-1] / 1e3) if n else math.nan,
        "mean_us": (sum(s) / n / 1e3) if n else math.nan,
    }


def timer_cost(samples: int = 200_000) -> dict[str, Any]:
    """What one ``perf_counter_ns`` pair costs: the floor under every per-call figure."""
    pc = time.perf_counter_ns
    out = array("q", bytes(8 * samples))
    for i in range(samples):
        t0 = pc()
        t1 = pc()
        out[i] = t1 - t0
    s = sorted(out)
    return {"p50_ns": pct(s, 0.5), "p99_ns": pct(s, 0.99), "mean_ns": sum(s) / len(s)}


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median and min-max over rounds (NaNs dropped)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
