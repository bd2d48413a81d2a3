"""The benchmark scripts use the package's current API (they are not run by the test suite, so a
renamed or removed function would otherwise only surface when someone re-runs a benchmark)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mediacluster"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mediacluster"):
                    yield node.lineno, a.name, []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_imports_resolve(script):
    missing = []
    for line, module, names in _imports(script):
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing.append(f"line {line}: {module} ({e})")
            continue
        for name in names:
            if not hasattr(mod, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"line {line}: {module}.{name}")
    assert not missing, f"{script.name} imports what the package no longer has: {missing}"


@pytest.mark.parametrize("name", ["assignments.parquet", "run.json", "clusters.json", "names.json",
                                  "map2d.npy", "embeddings.npy", "items.parquet"])
def test_benchmarks_read_run_folders_through_rundir(name):
    users = [p.name for p in SCRIPTS if f'"{name}"' in p.read_text(encoding="utf-8")]
    assert not users, f"{users} spell {name!r}; use mediacluster.rundir.RunDir"
