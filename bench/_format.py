"""How a figure is printed: "median (min-max)" over the rounds, ratios, thousands.

One place for these, because the targets (in the summary), the text table, the Markdown
tables and the page's prose all print the same figures and must print them alike. The
page's template uses the same functions as Jinja filters.
"""

from __future__ import annotations

DASH = "\u2013"  # en dash, for ranges
TIMES = "\u00d7"  # multiplication sign, for ratios

#: A figure over the rounds, as ``_stats.spread`` returns it: median, min, max, n.
Spread = dict[str, float]


def rng(sp: Spread, fmt: str) -> str:
    """``min-max`` of a spread."""
    return f"{sp['min']:{fmt}}{DASH}{sp['max']:{fmt}}"


def med(sp: Spread, fmt: str) -> str:
    """``median (min-max)`` of a spread."""
    return f"{sp['median']:{fmt}} ({rng(sp, fmt)})"


def k(sp: Spread) -> str:
    """events/s as ``148.6k (140.1k-152.3k)``."""
    return f"{sp['median'] / 1e3:.1f}k ({sp['min'] / 1e3:.1f}k{DASH}{sp['max'] / 1e3:.1f}k)"


def mega(sp: Spread) -> str:
    """A large rate as ``12.3M (11.9M-12.6M)``."""
    return f"{sp['median'] / 1e6:.1f}M ({sp['min'] / 1e6:.1f}M{DASH}{sp['max'] / 1e6:.1f}M)"
