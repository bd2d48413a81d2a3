"""Command line: thin sub-commands over the Python API.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` and ``run(args)``
(returning the exit code), so adding one touches this list only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .._version import __version__

COMMANDS = ["cluster", "assign", "evaluate", "tune", "report", "tags"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediacluster",
        description="Cluster, tune, evaluate, name and tag large media collections.",
    )
    parser.add_argument("--version", action="version", version=f"mediacluster {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"mediacluster.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mediacluster.cli.{name}":
                continue  # command not built yet
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # faiss announces which CPU build it loaded at INFO on every import
        logging.getLogger("faiss").setLevel(logging.WARNING)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is kept, re-run the same command to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
