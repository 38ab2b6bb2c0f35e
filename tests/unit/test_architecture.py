"""The package's shape, as docs/architecture.md draws it: layers, public faces, no cycles.

Imports are read from the source (ast), including those inside functions: a deferred
import that hides a cycle is still a cycle. Imports under ``if TYPE_CHECKING:`` are
left out: they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

SRC = ROOT / "src"

#: Top to bottom; a unit may import units of the layers below its own, never above or
#: beside (the same layer holds units that do not know each other). A unit is a
#: subpackage or a top-level module of ``riskaudit``; "riskaudit" is the package's own
#: ``__init__`` (the public face).
LAYERS: list[set[str]] = [
    {"__main__"},  # python -m riskaudit
    {"riskaudit", "cli"},  # the shells: the public face, the command line
    {"ops", "demo"},  # the service, the demo producer
    {"bus", "sink", "archive", "recovery", "replication"},  # around the engine
    {"log"},  # the engine
    {"integrity"},  # verify, keys, export
    {"config"},  # one frozen object, built once
    {"format"},  # format v1: codec, file names, segments, durable writes
    {"settings", "clock", "policy", "redact", "_version"},  # small value objects, rules
    {"events", "errors", "_native"},  # the event model, the error family, the core
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "riskaudit").rglob("*.py"))}
NATIVE = "riskaudit._native"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def _imports(name: str, path: Path) -> Iterator[str]:
    """The riskaudit modules ``name`` imports (``from pkg import mod`` names the module)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("riskaudit"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if not module.startswith("riskaudit"):
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                yield full if full in MODULES or full == NATIVE else module


GRAPH: dict[str, set[str]] = defaultdict(set)
for _name, _path in MODULES.items():
    GRAPH[_name].update(m for m in _imports(_name, _path) if m != _name)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def test_every_unit_has_a_layer() -> None:
    """A new package or module is placed in a layer before it is used."""
    units = {_unit(m) for m in MODULES} | {_unit(NATIVE)}
    placed = set().union(*LAYERS)
    assert units - placed == set()
    assert placed - units == set()


def test_each_unit_imports_only_the_layers_below() -> None:
    """The dependencies point down: format v1 at the bottom imports no engine, the
    engine imports no shell, and units of one layer do not know each other."""
    wrong = sorted(
        (a, b)
        for a, targets in GRAPH.items()
        for b in targets
        if _unit(a) != _unit(b) and _layer(_unit(a)) >= _layer(_unit(b))
    )
    assert wrong == []


def test_no_module_imports_another_packages_private_module() -> None:
    """Each package's ``__init__`` is its face; ``riskaudit.log._writer`` is the log's
    business alone."""
    wrong = []
    for a, targets in GRAPH.items():
        for b in targets:
            parts = b.split(".")
            private = [i for i, p in enumerate(parts) if i > 0 and p.startswith("_")]
            if not private or b in (NATIVE, "riskaudit._version"):
                continue
            owner = ".".join(parts[: private[0]])
            if not (a == owner or a.startswith(owner + ".")):
                wrong.append((a, b))
    assert sorted(wrong) == []


def test_no_import_cycle_among_modules() -> None:
    """Tarjan's strongly connected components of the import graph are all single."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize(
    ("source", "cycle"),
    [
        ({"a": "from riskaudit.b import x", "b": "def f():\n    from riskaudit.a import y"}, True),
        (
            {"a": "from riskaudit.b import x", "b": "if TYPE_CHECKING:\n    import riskaudit.a"},
            False,
        ),
    ],
)
def test_the_cycle_finder_sees_deferred_imports_and_skips_type_checking(
    source: dict[str, str], cycle: bool, tmp_path: Path
) -> None:
    """The walk counts an import inside a function and ignores one under TYPE_CHECKING
    (so the cycle test above can fail)."""
    found = set()
    for name, text in source.items():
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        found |= {(name, t.rsplit(".", 1)[-1]) for t in _imports(f"riskaudit.{name}", path)}
    assert (("a", "b") in found and ("b", "a") in found) is cycle


def test_tests_import_what_a_package_exports_from_the_package() -> None:
    """Tests may reach into a private module to test it, but a name the package
    exports is imported from the package, as its users do."""
    import importlib

    tests = Path(__file__).parent.parent
    wrong = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            parts = node.module.split(".")
            if parts[0] != "riskaudit" or len(parts) < 3 or not parts[2].startswith("_"):
                continue
            package = importlib.import_module(".".join(parts[:2]))
            exported = set(getattr(package, "__all__", ()))
            wrong += [
                f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name in exported
            ]
    assert wrong == []
