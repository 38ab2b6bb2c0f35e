"""docs/benchmarks.md from sample runs: the templates, their contexts and the tables agree.

The page is rendered from ``tests/data/bench-results.json`` (three rounds of a real
``make bench``), as ``bench/run.py --from-json`` does, without measuring anything; its
replication section from ``tests/data/bench-replication.json`` (a real ``make
bench-nats``). The bench modules are imported the way run.py imports them: with bench/
on ``sys.path``.
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
REPLICATION = ROOT / "tests" / "data" / "bench-replication.json"

sys.path.insert(0, str(BENCH))
import _page  # noqa: E402
import _summary  # noqa: E402
import _tables  # noqa: E402
import _template  # noqa: E402
import nats_forward  # noqa: E402


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


def names_read(template: str) -> set[str]:
    """The names a template reads that it does not set itself (loops, ``set``)."""
    tree = _template.environment().parse(template)
    own = {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx in ("store", "param")}
    return jinja2.meta.find_undeclared_variables(tree) - own


def test_the_template_reads_only_names_the_context_has(raw: dict[str, Any]) -> None:
    """The names the template reads (and does not set) are exactly the keys of _page's context."""
    read = names_read(_page.TEMPLATE.read_text())
    assert read
    assert read == set(_page.context(raw, "benchmarks.png"))


def test_a_value_missing_from_the_context_fails_the_render(raw: dict[str, Any]) -> None:
    """StrictUndefined: a value the template needs but the context lacks raises, not blank."""
    ctx = _page.context(raw, "benchmarks.png")
    del ctx["run"]["events_digest"]
    with pytest.raises(jinja2.UndefinedError, match="events_digest"):
        _template.environment().get_template(_page.TEMPLATE.name).render(ctx)


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


def test_the_replication_section_renders_every_row_and_verdict() -> None:
    """The NATS section has a row per replicas x publisher x fsync, a verdict per
    replicas, the cost table, and sits between its markers."""
    results = json.loads(REPLICATION.read_text())
    section = nats_forward.render(results)
    assert section.startswith(nats_forward.BEGIN + "\n## Replication through NATS")
    assert section.endswith("(a read and a publish per chunk).\n" + nats_forward.END)
    rows = [line for line in section.splitlines() if line.startswith("| R")]
    runs = len(results["runs"])
    workloads = len(nats_forward.WORKLOADS)
    assert len(rows) == runs * workloads * (len(nats_forward.CONFIGS) + 1)  # + cost rows
    assert section.count("`sync_interval: always`: forward moves **") == runs
    assert "Fewer records" not in section and "rounds rather than" not in section
    assert "{{" not in section and "{%" not in section and "\n\n\n" not in section


def test_the_replication_section_says_why_a_run_was_shorter_or_longer() -> None:
    """Fewer records or more rounds than the earlier runs are explained in the prose."""
    results = json.loads(REPLICATION.read_text())
    results["records"], results["rounds"] = 100_000, 5
    section = nats_forward.render(results)
    assert "the first 50,000 records, 256 in flight. Fewer records than the 200,004" in section
    assert "(5 rounds). 5 rounds rather than the 3 of earlier runs" in section


def test_the_replication_template_reads_only_names_its_context_has() -> None:
    """A name the replication template reads but render() does not give fails it."""
    read = names_read((BENCH / nats_forward.TEMPLATE).read_text())
    assert read
    assert read == set(nats_forward.context(json.loads(REPLICATION.read_text())))


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
