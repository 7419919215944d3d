"""The import graph of rlcustom (and actors/, shipped as rlcustom.actors), built from every module's AST,
imports inside functions included: no cycles, and the layer contracts hold.

An edge ``a -> b`` is an ``import b`` / ``from b import x`` (``b.x`` when that is a module) anywhere in
``a`` except under ``if TYPE_CHECKING:`` (never executed). Importing ``p.q`` also runs ``p/__init__``;
like import-linter, that implicit parent edge is not counted.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"rlcustom": ROOT / "rlcustom", "rlcustom.actors": ROOT / "actors"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg, base in SOURCES.items():
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, name: str, is_pkg: bool, known: set[str]) -> set[str]:
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                out.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in known else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        targets = _imports(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
        graph[name] = {t for t in targets if t in known and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_checker_finds_a_cycle_through_a_function_level_import():
    g = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert cycles(g) == []
    g["c"] = {"a"}
    assert cycles(g) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from rlcustom.x import y\nif TYPE_CHECKING:\n    import rlcustom.z\n")
    assert _imports(tree, "rlcustom.m", False, {"rlcustom.x.y", "rlcustom.z"}) == {"rlcustom.x.y"}


# Cycles not broken yet, each with what removes it. The test fails on any other cycle, and on one of these
# once it is gone (then delete it here).
KNOWN_CYCLES: list[list[str]] = []  # none left; an entry here must name a cycle that still exists


def test_no_import_cycles():
    found = cycles(import_graph())
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles (counting imports inside functions):\n" + "\n".join(" <-> ".join(c) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"no longer a cycle, remove it from KNOWN_CYCLES: {gone}"


def _layer(mod: str, layer: str) -> bool:
    return mod == f"rlcustom.{layer}" or mod.startswith(f"rlcustom.{layer}.")


@pytest.mark.parametrize("layer, forbidden", [
    ("algos", ("models", "data", "engines", "decoding", "rewards", "training", "actors", "runtime", "trainers",
               "eval", "cluster", "cli", "config", "builtins", "tracking")),  # pure math: nothing above it
    ("envs", ("training", "actors", "runtime", "trainers", "eval", "cli", "cluster", "config", "builtins")),
    ("engines", ("envs", "training", "actors", "runtime", "trainers", "eval", "cli", "cluster")),
    ("actors", ("trainers", "eval", "cli", "cluster", "runtime")),
    ("runtime", ("trainers", "eval", "cli", "cluster")),
    ("trainers", ("cli", "eval", "cluster")),
    ("config", ("decoding", "trainers", "actors", "runtime", "eval", "cli", "cluster", "builtins")),
])
def test_layer_contract(layer, forbidden):
    bad = sorted(f"{a} -> {b}" for a, targets in import_graph().items() if _layer(a, layer)
                 for b in targets if any(_layer(b, f) for f in forbidden))
    assert not bad, f"{layer} must not import {', '.join(forbidden)}:\n" + "\n".join(bad)
