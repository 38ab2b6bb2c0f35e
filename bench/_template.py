"""The Jinja2 environment both benchmark pages render in (``benchmarks.md.j2`` for
``make bench``, ``replication.md.j2`` for ``make bench-nats``): Markdown, so nothing is
escaped; strict, so a name the context lacks fails the render instead of printing
nothing; and line-oriented, so one line of a template is one line of the page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from _format import k, med, mega, rng

#: The folder the templates are in (this one).
HERE = Path(__file__).resolve().parent


def _defined(value: Any) -> None:
    """StrictUndefined fails when printed; a filter formats it first, so fail there too."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()


def _fmt(value: Any, spec: str) -> str:
    """``{{ x|fmt(".2f") }}``: Python's ``format(x, spec)``, as an f-string does it."""
    _defined(value)
    return format(value, spec)


def _spread_filter(fn: Callable[..., str]) -> Callable[..., str]:
    """``{{ sp|med(".1f") }}`` and the like: one of _format's functions of a spread."""

    def apply(sp: Any, *args: Any) -> str:
        _defined(sp)
        return fn(sp, *args)

    return apply


def environment() -> jinja2.Environment:
    """The pages' Jinja2 environment: Markdown (no escaping), strict, line-oriented."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE),
        autoescape=False,  # Markdown, not HTML
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        fmt=_fmt,
        med=_spread_filter(med),
        rng=_spread_filter(rng),
        k=_spread_filter(k),
        mega=_spread_filter(mega),
    )
    return env
