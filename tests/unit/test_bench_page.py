"""docs/benchmarks.md from a sample run: the template, its context and the tables agree.

The page is rendered from ``tests/data/bench-results.json`` (three rounds of a real
``make bench``), as ``bench/run.py --from-json`` does, without measuring anything. The
bench modules are imported the way run.py imports them: with bench/ on ``sys.path``.
"""

from __future__ import annotations

import ast
import copy
import json
import sys
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
import pytest

from tests.helpers import ROOT

BENCH = ROOT / "bench"
SAMPLE = ROOT / "tests" / "data" / "bench-results.json"

sys.path.insert(0, str(BENCH))
import _page  # noqa: E402
import _summary  # noqa: E402
import _tables  # noqa: E402


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(SAMPLE.read_text())
    raw["summary"] = _summary.summarize(raw)
    return raw


def test_the_page_renders_with_a_row_per_target(raw: dict[str, Any]) -> None:
    """The sample renders to a page whose targets table has one row for every target."""
    page = _page.render(raw, "benchmarks.png")
    assert page.startswith("# Benchmarks\n\n")
    assert page.endswith("where that happens.\n")
    targets = raw["summary"]["targets"]
    assert len(targets) >= 10
    for t in targets:
        assert f"| {t['name']} | {t['target']} | {t['measured']} | " in page
    for heading in ("## HTTP ingest", "### What the ops endpoints", "**Cost to the host"):
        assert heading in page
    assert "{{" not in page
    assert "{%" not in page


def test_the_template_reads_only_names_the_context_has(raw: dict[str, Any]) -> None:
    """The names the template reads (and does not set) are exactly the keys of _page's context."""
    tree = _page.environment().parse(_page.TEMPLATE.read_text())
    own = {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx in ("store", "param")}
    read = jinja2.meta.find_undeclared_variables(tree) - own
    assert read
    assert read == set(_page.context(raw, "benchmarks.png"))


def test_a_value_missing_from_the_context_fails_the_render(raw: dict[str, Any]) -> None:
    """StrictUndefined: a value the template needs but the context lacks raises, not blank."""
    ctx = _page.context(raw, "benchmarks.png")
    del ctx["run"]["events_digest"]
    with pytest.raises(jinja2.UndefinedError, match="events_digest"):
        _page.environment().get_template(_page.TEMPLATE.name).render(ctx)


def test_sections_without_data_are_left_out(raw: dict[str, Any]) -> None:
    """A run without HTTP, ops, attribution or the native extras renders without those parts."""
    lean = copy.deepcopy(raw)
    for key in ("http", "ops", "attrib", "host", "verify_big", "queue_memory", "loadavg_1m"):
        del lean["summary"][key]
    page = _page.render(lean, "benchmarks.png")
    for gone in ("## HTTP ingest", "### What the ops", "## What the slow appends", "load average"):
        assert gone not in page
    assert "## The native core" in page
    assert "\n\n\n" not in page
    assert "HTTP ingest" not in _tables.text_tables(lean)


def test_bench_modules_import_no_private_names_and_no_cycles() -> None:
    """No bench module imports an _underscore name from another, nor one that imports it back."""
    modules = {p.stem: p for p in BENCH.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function bodies included
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                graph[name].add(node.module)
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name} imports {private} from {node.module}"
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    cyclic = sorted(name for name in graph if name in reachable(name))
    assert not cyclic, f"import cycle through {cyclic}"
