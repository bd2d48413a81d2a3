"""Write docs/CLI.md: every command and option of ``mediacluster``, from the parser itself.

    python docs/cli_reference.py          # rewrite docs/CLI.md
    python docs/cli_reference.py --check  # exit 1 when docs/CLI.md is not what the parser says

The page is generated so that it cannot drift from ``--help``: ``tests/test_docs.py`` fails when a
command gains, loses or re-words an option and the page was not rewritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "CLI.md"
HEADER = """# Command-line reference

Every option of every `mediacluster` command, as `mediacluster COMMAND --help` prints it.
Generated from the parser by `python docs/cli_reference.py` (a test fails when this page and the
parser disagree); README explains what the commands are for.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option(action: argparse.Action) -> str:
    opts = ", ".join(f"`{o}`" for o in action.option_strings)
    if action.nargs == 0:
        return opts
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if action.choices is not None and action.metavar is None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}"
    more = " ..." if action.nargs in ("*", "+", argparse.REMAINDER) else ""
    return f"{opts} `{metavar}{more}`" if opts else f"`{metavar}{more}`"


def _default(action: argparse.Action) -> str:
    d = action.default
    if action.nargs == 0 or d is None or d is argparse.SUPPRESS or d == [] or d is False:
        return ""
    return f"`{d}`"


def _section(name: str, parser: argparse.ArgumentParser, out: list[str]) -> None:
    formatter = parser._get_formatter()
    sub = None
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action
            continue
        if isinstance(action, argparse._HelpAction) or action.help is argparse.SUPPRESS:
            continue
        text = formatter._expand_help(action) if action.help else ""
        rows.append(f"| {_option(action)} | {_cell(_default(action))} | {_cell(text)} |")
    out.append(f"## `{name}`\n")
    if parser.description:
        out.append(_cell(parser.description) + "\n")
    usage = " ".join(parser.format_usage().split())
    out.append(f"```\n{usage}\n```\n")
    if rows:
        out.append("| option | default | what it does |\n|---|---|---|")
        out.extend(rows)
        out.append("")
    if sub is not None:
        for sub_name, sub_parser in sub.choices.items():
            _section(f"{name} {sub_name}", sub_parser, out)


def render() -> str:
    from mediacluster.cli import build_parser

    out = [HEADER]
    _section("mediacluster", build_parser(), out)
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when the page is stale")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python docs/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    tmp = OUT.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(OUT)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
