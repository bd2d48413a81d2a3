"""The README and docs/ARCHITECTURE.md name things that exist: every ``--flag`` the README
names is an option of some sub-command (and every option of ``assign``, ``dups`` and ``serve``
is in the README, with a help text), every encoder it lists is registered, every module of the
package has a row (or a mention) where a newcomer looks for it, every dotted module path they
name exists, and every field of the service's answers is described on its OpenAPI page. Text
and import checks only: no data, no models."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
PACKAGE = ROOT / "src" / "mediacluster"

# flags the README names that belong to other programs (pip, pytest)
NOT_OURS = {"--no-deps", "--collect-only"}


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    out = set()
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        out.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _option_strings(sub)
    return out


def test_every_readme_flag_is_an_option_of_a_command():
    from mediacluster.cli import build_parser

    options = _option_strings(build_parser())
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", README)) - NOT_OURS
    assert named, "the README names no flags: the pattern is wrong"
    assert sorted(named - options) == []


def test_every_encoder_the_readme_lists_is_registered():
    from mediacluster import encoders

    line = next(x for x in README.splitlines() if x.strip().startswith("encoders/"))
    listed = re.search(r"\(([^)]*)\)", line).group(1).split(", ")
    assert sorted(listed) == sorted(encoders._LAZY)


def test_every_module_is_described_in_the_architecture():
    """Each module is named in docs/ARCHITECTURE.md: a top-level one by its file name, a
    package's by its file name or as ``stem.something`` in its package's row; cli/ has one
    module per sub-command (the rule the page states), each listed in ``cli.COMMANDS``."""
    from mediacluster.cli import COMMANDS

    spans = set(re.findall(r"`([^`\n]+)`", ARCHITECTURE))
    missing = []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(PACKAGE)
        if p.name in ("__init__.py", "__main__.py"):
            continue
        if rel.parts[0] == "cli":
            if p.stem not in COMMANDS:
                missing.append(rel.as_posix())
            continue
        if len(rel.parts) == 1:
            named = p.name in spans
        else:
            named = any(sp in (p.name, rel.as_posix()) or sp.startswith(p.stem + ".")
                        or sp.endswith("/" + p.name) for sp in spans)
        if not named:
            missing.append(rel.as_posix())
    assert missing == []


def test_every_field_of_the_service_answers_is_described():
    """The service's OpenAPI page (`/openapi.json`, `/docs`) is built from the response models
    in ``serve/app.py``: each of their fields carries a description there, so a client reading
    the page learns what every field of an answer means (``/v1/similar``'s ``model`` and
    ``items``, ``assigned_name``, ... had none)."""
    from pydantic import BaseModel

    from mediacluster.serve import app

    models = [v for v in vars(app).values() if isinstance(v, type) and issubclass(v, BaseModel)
              and v.__module__ == app.__name__]
    assert {"Assigned", "Similar", "Neighbour", "SimilarResponse"} <= {m.__name__ for m in models}
    missing = [f"{m.__name__}.{name}" for m in models for name, field in m.model_fields.items()
               if not field.description]
    assert missing == []


def test_every_option_of_assign_dups_and_serve_is_in_the_readme():
    """The commands a user of the model and the service runs (``assign``, ``dups``, ``serve``;
    all three gained options for "more like this", audio reposts and the inbox) have every
    option named in the README, and every one has a help text (``dups --media`` had none)."""
    from mediacluster.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing, silent = [], []
    for name in ("assign", "dups", "serve"):
        for action in sub.choices[name]._actions:
            for opt in action.option_strings:
                if not opt.startswith("--") or opt in ("--help", "--quiet"):
                    continue
                if not re.search(re.escape(opt) + r"(?![\w-])", README):
                    missing.append(f"{name} {opt}")
                if not action.help:
                    silent.append(f"{name} {opt}")
    assert missing == [] and silent == []


def every_action(name: str = "", parser=None):
    """``(command, action)`` for every action of every (sub-)command's parser, the
    sub-command actions themselves included."""
    from mediacluster.cli import build_parser

    for action in (parser or build_parser())._actions:
        yield name, action
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from every_action(f"{name} {sub_name}".strip(), sub)


def test_every_option_of_every_command_has_a_help_text():
    """``mediacluster CMD --help`` explains every option it lists (``tags train --thresholds``,
    ``tags suggest --top-k``, ``cluster --seed`` ... had none)."""
    silent = [f"{name} {action.option_strings[-1]}" for name, action in every_action()
              if action.option_strings and not action.help]
    assert silent == []


def test_every_dotted_name_in_the_docs_exists():
    """A backticked dotted name in docs/ARCHITECTURE.md or the README that starts with a module
    path of the package (``tune.study.LAYOUT_EPOCHS``, ``stages.hierarchy.tree_above``; a name
    relative to its row, such as ``verify.PreparedCache`` in the duplicates row, is not checked)
    names something that exists, so a rename cannot leave the docs behind."""
    import importlib
    import pkgutil

    import mediacluster

    modules = {m.name for m in pkgutil.walk_packages(mediacluster.__path__, "mediacluster.")}
    files = {"py", "json", "parquet", "npz", "npy", "sqlite", "yaml", "csv", "html", "js", "faiss"}
    spans = set(re.findall(r"`([A-Za-z_][\w.]*\.[A-Za-z_]\w*)(?:\(|`)", ARCHITECTURE + README))
    checked, wrong = 0, []
    for span in sorted(spans):
        parts = span.split(".")
        if parts[-1] in files:
            continue
        for i in range(len(parts), 0, -1):
            name = "mediacluster." + ".".join(parts[:i])
            if name in modules:
                obj = importlib.import_module(name)
                for attr in parts[i:]:
                    if not hasattr(obj, attr):
                        wrong.append(span)
                        break
                    obj = getattr(obj, attr)
                checked += 1
                break
    assert checked > 20, "the pattern finds no dotted names"
    assert wrong == []


def test_cli_reference_page_is_what_the_parser_says():
    """docs/CLI.md lists every option of every command (README names only the main ones): it is
    generated from the parser, and this fails when an option was added, removed or re-worded
    without re-generating it (``python docs/cli_reference.py``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "cli_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    page = (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8")
    assert page == mod.render(), "docs/CLI.md is stale: run python docs/cli_reference.py"
    absent = [f"{name} {opt}" for name, action in every_action() for opt in action.option_strings
              if opt not in ("-h", "--help") and f"`{opt}`" not in page]
    assert absent == []


def _command_lines(text: str) -> list[str]:
    """The backticked spans and the lines of the fenced code blocks of a page."""
    spans = re.findall(r"`([^`\n]+)`", text)
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    return spans + [line for block in blocks for line in block.splitlines()]


def test_every_flag_of_a_command_line_is_an_option_of_that_command():
    """A command line in the README or docs/ARCHITECTURE.md (`mediacluster report RUN
    --collection-root DIR`, or the short form `report RUN --figure map.png`) uses only options of
    the command it names (of its sub-command for ``tags train ...``, ``models ...``): an option
    moved to another command, or a line copied under the wrong one, fails here, where the
    flag-exists check above passes as long as any command has it."""
    from mediacluster.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    checked, wrong = 0, []
    for doc, text in (("README.md", README), ("docs/ARCHITECTURE.md", ARCHITECTURE)):
        for line in _command_lines(text):
            m = re.match(r"\s*(?:mediacluster )?([a-z-]+)((?: [a-z-]+)?)(.*)", line)
            if not m or m.group(1) not in sub.choices:
                continue
            parser = sub.choices[m.group(1)]
            nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if nested and m.group(2).strip() in nested[0].choices:
                parser = nested[0].choices[m.group(2).strip()]
            options = {o for a in parser._actions for o in a.option_strings}
            rest = (m.group(2) + m.group(3)).split("#")[0].split(" | ")[0]  # a comment, a pipe
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", rest):
                checked += 1
                if flag not in options:
                    wrong.append(f"{doc}: {flag} is no option of `{m.group(1)}`: {line.strip()}")
    assert checked > 50, "the pattern finds no command lines"
    assert wrong == []


def test_every_file_the_docs_name_exists():
    """A ``.py`` file the README or docs/ARCHITECTURE.md names exists: a path with a folder
    (``tune/small_graph.py``, ``tests/test_conventions.py``, ``benchmarks/perturb_plugin.py``)
    under the package or the repository, a bare name (a row's ``finder.py``) somewhere in the
    package or one of the repository's folders; ``stages/{reduce,outliers,cluster}.py`` is
    each of the three."""
    missing, checked = [], 0
    for doc, text in (("README.md", README), ("docs/ARCHITECTURE.md", ARCHITECTURE)):
        for span in sorted(set(re.findall(r"`([\w/{},.]+\.py)`", text))):
            alts = re.match(r"(.*)\{(.*)\}(.*)", span)
            names = ([alts.group(1) + a + alts.group(3) for a in alts.group(2).split(",")]
                     if alts else [span])
            for name in names:
                if "NAME" in name:  # a pattern: `cli/NAME.py`
                    continue
                checked += 1
                if "/" in name:
                    found = any((base / name).exists() for base in (PACKAGE, ROOT, ROOT / "src"))
                else:
                    found = any(PACKAGE.rglob(name)) or any(ROOT.glob("*/" + name))
                if not found:
                    missing.append(f"{doc}: {name}")
    assert checked > 30, "the pattern finds no file names"
    assert missing == []


def test_every_run_folder_file_has_a_row_in_the_architecture():
    """Each file name ``rundir.py`` gives a run folder (its upper-case string constants) is in
    the run-folder table of docs/ARCHITECTURE.md (``assignments.csv`` as the row's ``.csv``) and
    in the README's "What a run writes", so a new run-folder file gets its row (the README had
    none for ``map2d.npy`` / ``map2d.json``)."""
    from mediacluster import rundir

    names = [v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str)
             and re.fullmatch(r"[a-z_0-9]+(\.[a-z]+)?", v) and k not in ("SCHEMA",)
             and not k.endswith("_KEY")]
    assert len(names) > 15, "no run-folder file names found in rundir.py"
    missing = []
    for doc, heading in ((ARCHITECTURE, "## The run folder"), (README, "## What a run writes")):
        table = doc.split(heading, 1)[1].split("\n## ", 1)[0]
        rows = set(re.findall(r"`([^`\n]+)`", table))
        stems = {r.split(".")[0] for r in rows}
        missing += [f"{heading}: {n}" for n in names if not any(r == n or r.startswith(n) for r in rows)
                    and not (n.split(".")[0] in stems and "." + n.split(".")[-1] in rows)]  # `.csv`
    assert missing == []


def test_every_folder_of_the_package_is_in_the_flow():
    """docs/ARCHITECTURE.md's flow diagram, where a newcomer learns where an input goes, names
    every package folder and top-level module of the steps (``duplicates/``, ``serve/`` and
    ``encoders/`` were missing from it: the folders mirror the flow only if it shows them all)."""
    flow = re.search(r"## The flow\n\n```\n(.*?)```", ARCHITECTURE, re.S).group(1)
    named = set(re.findall(r"(?<![\w./])([a-z_]+/)", flow))
    folders = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert sorted(folders - named) == []


def test_every_command_has_a_row_in_the_readme_table():
    """The README's Commands table, where a newcomer looks first, has a row for every
    sub-command (``inbox`` had none: it was only described under "The service")."""
    from mediacluster.cli import COMMANDS

    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `mediacluster ([a-z-]+)", table, re.M))
    assert sorted(set(COMMANDS) - rows) == []


def test_every_module_is_in_the_readme_layout():
    """The README's Layout lists every folder and top-level module of the package (``_version.py``
    and ``datasets.py`` were missing)."""
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = [p.name for p in sorted(PACKAGE.iterdir())
               if (p.suffix == ".py" and not p.name.startswith("__")) or (p / "__init__.py").exists()
               if not re.search(r"(?<![\w/])" + re.escape(p.name + ("/" if p.is_dir() else "")), layout)]
    assert missing == []


def test_every_results_section_the_docs_cite_exists():
    """A section of benchmarks/RESULTS.md the README or docs/ARCHITECTURE.md cites by its title
    (`benchmarks/RESULTS.md`, "Broken files, remembered"; RESULTS, "Names of mixed clusters")
    is a ``## `` heading there (or the start of one: "Engine: ..."), so a reader finds the
    measurement behind a figure."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", results, re.M)
    cited, missing = 0, []
    for doc, text in (("README.md", README), ("docs/ARCHITECTURE.md", ARCHITECTURE)):
        runs = re.findall(r'RESULTS(?:\.md`?)?(?:,| section| sections|:)?\s*'
                          r'((?:"[^"\n]+"(?:,? (?:and |or )?)?)+)', text)
        for title in (t for run in runs for t in re.findall(r'"([^"\n]+)"', run)):
            cited += 1
            if not any(h.startswith(title.rstrip(".")) for h in headings):
                missing.append(f"{doc}: {title}")
    assert cited > 20, "the pattern finds no citations"
    assert missing == []


def test_every_environment_variable_the_package_reads_is_in_the_readme():
    """A ``MEDIACLUSTER_*`` variable the package reads is a setting a user can give, so the README
    names it (``MEDIACLUSTER_BACKEND``, the default encoder's ONNX Runtime / PyTorch choice, was
    named nowhere); ``MEDIACLUSTER_SERVE_CONFIG`` is what ``serve --workers`` hands its workers."""
    internal = {"MEDIACLUSTER_SERVE_CONFIG"}
    read = {v for p in PACKAGE.rglob("*.py")
            for v in re.findall(r"MEDIACLUSTER_[A-Z_]+", p.read_text(encoding="utf-8"))}
    assert "MEDIACLUSTER_CACHE" in read, "the pattern finds no variables"
    assert sorted(v for v in read - internal if v not in README) == []
