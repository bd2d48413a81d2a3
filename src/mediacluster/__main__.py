"""``python -m mediacluster`` and the ``mediacluster`` command (``run``).

A Ctrl-C while the libraries load (``mediacluster.cli`` imports numpy, pandas, ...: the first
second or so of every command, before ``cli.main`` takes Ctrl-C over) ended with Python's
traceback of the import and exit status -2; it ends as ``main``'s own: one line, exit 130."""

import sys


def run() -> int:
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
