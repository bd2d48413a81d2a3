"""Write one benchmark's ``## `` section of benchmarks/RESULTS.md, leaving the others alone.

Every benchmark script owns one section (its heading line); ``write_section`` replaces that
section (from its heading up to the next ``## `` heading) or appends it, atomically. ``commit``
names the code a section measured.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from mediacluster.fileio import atomic_path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section: str, block: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section headed ``section`` with ``block`` (which starts with it)."""
    if not block.startswith(section + "\n"):
        raise ValueError(f"block must start with its heading line {section!r}")
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pat = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    new_block = block.rstrip("\n") + "\n\n"
    if pat.search(old):
        new = pat.sub(lambda _: new_block, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + new_block
    with atomic_path(path) as tmp:
        Path(tmp).write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def commit() -> str:
    """The checkout's short commit id (``git rev-parse --short HEAD``), "unknown" outside git."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent)
    return out.stdout.strip() or "unknown"
