"""What every benchmark script does around its measuring: its arguments, its load averages and
timings, and the ``## `` section of benchmarks/RESULTS.md it writes, leaving the others alone.

Every benchmark script owns one section (its heading line); ``write_section`` replaces that
section (from its heading up to the next ``## `` heading) or appends it, atomically;
``publish`` prints a section and, when asked, writes it. The file is RESULTS.md beside this
module, or the one ``MEDIACLUSTER_RESULTS`` names (a scratch copy, to try a script's ``--write``
without touching the committed one). ``commit`` names the code a section measured, ``command``
the command line that produced it, ``loadavg`` / ``proc_loadavg`` / ``load1`` the machine's
load, ``finished`` the time (``started`` / ``finish`` put them in a script's results record
and publish it); ``timed`` measures one step's wall and CPU seconds;
``add_data_args`` adds the shared sets' ``--out`` / ``--shared`` (and ``--seed`` / ``--quiet``)
options.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from mediacluster.fileio import atomic_path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
RESULTS_ENV = "MEDIACLUSTER_RESULTS"
QUALITY_OUT = HERE / "out" / "quality"
#: the shared sets' archives: ``$MEDIACLUSTER_SHARED/datasets``, else ../shared/datasets
SHARED = Path(os.environ.get("MEDIACLUSTER_SHARED", ROOT.parent / "shared")) / "datasets"


def results_path() -> Path:
    """The results file: ``$MEDIACLUSTER_RESULTS`` when set, else benchmarks/RESULTS.md."""
    return Path(os.environ[RESULTS_ENV]) if os.environ.get(RESULTS_ENV) else RESULTS


def write_section(section: str, block: str, path: Path | None = None) -> None:
    """Replace (or append) the section headed ``section`` with ``block`` (which starts with it)."""
    if not block.startswith(section + "\n"):
        raise ValueError(f"block must start with its heading line {section!r}")
    path = results_path() if path is None else Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pat = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    new_block = block.rstrip("\n") + "\n\n"
    if pat.search(old):
        new = pat.sub(lambda _: new_block, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + new_block
    with atomic_path(path) as tmp:
        Path(tmp).write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def publish(section: str, text: str, write: bool, *, show: bool = True) -> None:
    """A script's last step: print ``text`` (unless ``show`` is false) and, with ``write``,
    make it the section headed ``section`` of the results file."""
    if show:
        print(text)
    if write:
        write_section(section, text)


def started(script: str, argv: Sequence[str] | None = None) -> dict:
    """The start of a script's results record: its ``command`` and the ``loadavg`` now."""
    return {"command": command(script, argv), "loadavg": loadavg()}


def finish(res: dict, section: str, render: Callable[[dict], str], write: bool,
           save_to: Path | None = None) -> str:
    """A script's tail: stamp ``res`` with ``loadavg_after`` and ``finished``, save it as JSON at
    ``save_to`` (when given), then ``publish`` ``render(res)`` as ``section``; the text."""
    from mediacluster.fileio import write_json

    res["loadavg_after"] = loadavg()
    res["finished"] = finished()
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        write_json(save_to, res)
    text = render(res)
    publish(section, text, write)
    return text


def commit() -> str:
    """The checkout's short commit id (``git rev-parse --short HEAD``), "unknown" outside git."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=HERE)
    return out.stdout.strip() or "unknown"


def command(script: str, argv: Sequence[str] | None = None, drop: Iterable[str] = ()) -> str:
    """``python benchmarks/<script> ARGS`` as run (``argv``, else the process's arguments),
    without the arguments in ``drop``."""
    args = sys.argv[1:] if argv is None else argv
    dropped = set(drop)
    return ("python benchmarks/" + script + " " + " ".join(a for a in args if a not in dropped)).strip()


def proc_loadavg() -> str:
    """The whole line of /proc/loadavg (load averages, running/all tasks, last pid); "n/a" without it."""
    p = Path("/proc/loadavg")
    return p.read_text().strip() if p.exists() else "n/a"


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages as /proc/loadavg writes them ("0.52 0.61 0.70")."""
    p = Path("/proc/loadavg")
    if p.exists():
        return " ".join(p.read_text().split()[:3])
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def load1() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def finished() -> str:
    """Now, as the sections write it: ``2026-12-01 14:05 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def timed(fn: Callable[[], Any]) -> tuple[Any, dict]:
    """Run ``fn()``: (its result, {wall_s, cpu_s (the process's CPU seconds, all threads),
    load_before, load_after (1-min load average, one decimal)})."""
    la0 = load1()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
                 "load_before": round(la0, 1), "load_after": round(load1(), 1)}


def add_common_args(ap: argparse.ArgumentParser, *, write: bool = True,
                    seed: bool = False) -> argparse.ArgumentParser:
    """The flags the scripts share: ``--write`` (the printed text made this script's section of
    the results file, :func:`publish`) and ``--seed`` (0)."""
    if write:
        ap.add_argument("--write", action="store_true",
                        help="replace this script's section of benchmarks/RESULTS.md with what it prints")
    if seed:
        ap.add_argument("--seed", type=int, default=0)
    return ap


def add_data_args(ap: argparse.ArgumentParser, *, out: bool = True, shared: bool = True,
                  seed: bool = False, quiet: bool = False) -> argparse.ArgumentParser:
    """The options of the scripts that read the shared sets through ``quality.load_dataset``:
    ``--out`` (where the archives are extracted and embedded, benchmarks/out/quality),
    ``--shared`` (the archives: ``$MEDIACLUSTER_SHARED/datasets``, else ../shared/datasets),
    ``--seed`` (0) and ``--quiet``."""
    if out:
        ap.add_argument("--out", type=Path, default=QUALITY_OUT,
                        help="where the sets are extracted and embedded (shared with benchmarks/quality.py)")
    if shared:
        ap.add_argument("--shared", type=Path, default=SHARED, help="the shared sets' archives")
    add_common_args(ap, write=False, seed=seed)
    if quiet:
        ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap
