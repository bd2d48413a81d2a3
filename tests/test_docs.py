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

# flags the README names that belong to other programs (pip)
NOT_OURS = {"--no-deps"}


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
