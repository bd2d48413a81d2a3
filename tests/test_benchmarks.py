"""The benchmark scripts use the package's current API (they are not run by the test suite, so a
renamed or removed function would otherwise only surface when someone re-runs a benchmark)."""

from __future__ import annotations

import ast
import importlib
import re
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


def _results_module():
    """``benchmarks/_results.py`` loaded from its file (the benchmarks folder is not put on
    ``sys.path``, where its scripts would shadow other modules)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_results", BENCHMARKS / "_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_helpers_write_only_their_section_of_the_file_the_environment_names(tmp_path, monkeypatch, capsys):
    r = _results_module()
    scratch = tmp_path / "RESULTS.md"
    scratch.write_text("# Benchmark results\n\n## A (one)\n\nold a\n\n## B (two)\n\nhand-written b\n", encoding="utf-8")
    monkeypatch.setenv(r.RESULTS_ENV, str(scratch))
    assert r.results_path() == scratch
    r.publish("## A (one)", "## A (one)\n\nnew a\n", write=False)
    assert "new a" in capsys.readouterr().out and "old a" in scratch.read_text(encoding="utf-8")
    r.publish("## A (one)", "## A (one)\n\nnew a\n", write=True, show=False)
    r.publish("## C (three)", "## C (three)\n\nc\n", write=True)
    text = scratch.read_text(encoding="utf-8")
    assert text == ("# Benchmark results\n\n## A (one)\n\nnew a\n\n## B (two)\n\nhand-written b\n\n"
                    "## C (three)\n\nc\n")
    with pytest.raises(ValueError, match="heading line"):
        r.write_section("## B (two)", "no heading\n")
    monkeypatch.delenv(r.RESULTS_ENV)
    assert r.results_path() == BENCHMARKS / "RESULTS.md"


def test_results_helpers_command_load_and_timing(monkeypatch):
    import argparse

    r = _results_module()
    assert r.command("x.py", ["--sets", "a", "--write"], drop=["--write"]) == "python benchmarks/x.py --sets a"
    assert r.command("x.py", []) == "python benchmarks/x.py"
    monkeypatch.setattr("sys.argv", ["x.py", "--quick"])
    assert r.command("x.py") == "python benchmarks/x.py --quick"
    assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d", r.loadavg())
    assert r.proc_loadavg().startswith(r.loadavg())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", r.finished())
    out, t = r.timed(lambda: sum(range(100_000)))
    assert out == sum(range(100_000)) and set(t) == {"wall_s", "cpu_s", "load_before", "load_after"}
    assert t["wall_s"] > 0 and t["cpu_s"] >= 0
    args = r.add_data_args(argparse.ArgumentParser(), seed=True, quiet=True).parse_args(["--seed", "3"])
    assert (args.out, args.shared, args.seed, args.quiet) == (r.QUALITY_OUT, r.SHARED, 3, False)


def test_benchmarks_write_results_through_results_helpers():
    """A script that names RESULTS.md's path itself would write the committed file even when
    ``MEDIACLUSTER_RESULTS`` points at a scratch copy."""
    users = [p.name for p in SCRIPTS if p.name != "_results.py"
             and re.search(r'"RESULTS\.md"|write_section\([^)]*,[^)]*,', p.read_text(encoding="utf-8"))]
    assert not users, f"{users} name the results file themselves; use _results.write_section / publish"
