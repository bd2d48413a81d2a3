"""The package's shape: no import circles, one owner per concept, stages that follow the rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports (at module level or inside functions), from ``ast``."""
    mods: dict[str, Path] = {}
    for p in (SRC / "mediacluster").rglob("*.py"):
        m = ".".join(p.relative_to(SRC).with_suffix("").parts)
        mods[m[: -len(".__init__")] if m.endswith(".__init__") else m] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = pkg
                for _ in range(max(0, node.level - 1)):
                    base = base.rsplit(".", 1)[0]
                t = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
                targets = [f"{t}.{a.name}" if f"{t}.{a.name}" in mods else t for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            # a module importing its own package's __init__ is not a circle of its own making
            graph[m] |= {t for t in targets if t in mods and t != m and t != m.rsplit(".", 1)[0]}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 40  # the walk found the package
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _run_file_names() -> list[str]:
    """Every file name rundir.py defines as a module constant (``EVALUATION = "evaluation.json"``):
    a new run-folder file is covered by the test below as soon as it gets its constant."""
    import re

    text = (SRC / "mediacluster" / "rundir.py").read_text(encoding="utf-8")
    return sorted(set(re.findall(r'^[A-Z_]+ = "([\w.-]+\.(?:json|parquet|npy|npz|sqlite|csv|yaml))"', text, re.M)))


def test_rundir_defines_the_run_folder_files():
    assert {"assignments.parquet", "run.json", "clusters.json", "names.json", "map2d.npy", "embeddings.npy",
            "items.parquet", "duplicates.parquet", "hierarchy.npz", "level_names.json", "evaluation.json",
            "edits.sqlite", "curated.json"} <= set(_run_file_names())


@pytest.mark.parametrize("name", _run_file_names())
def test_run_folder_file_names_have_one_owner(name):
    """Only rundir.py spells the run folder's file names."""
    users = [p.relative_to(SRC) for p in (SRC / "mediacluster").rglob("*.py")
             if f'"{name}"' in p.read_text(encoding="utf-8")]
    assert [str(p) for p in users] == ["mediacluster/rundir.py"]


def test_cli_holds_no_library_code():
    """Commands only parse arguments, call the API and print: nothing else imports from cli/."""
    graph = import_graph()
    outside = {m: {t for t in ts if t.startswith("mediacluster.cli")} for m, ts in graph.items()
               if not m.startswith("mediacluster.cli") and m != "mediacluster.__main__"}
    assert {m: ts for m, ts in outside.items() if ts} == {}
