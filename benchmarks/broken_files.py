"""Broken files on a re-run: what a second ``cluster`` / ``dups`` / ``dups --no-embed`` costs
when the folder holds many files that cannot be used, with the failures remembered by the
embedding cache (this tree) and, with ``--before SRC``, without (another checkout's ``src``).

The folder: ``--good`` photos of Imagenette val, ``--broken`` files of each cheap kind (cut at
2/3, an HTML page named .jpg, empty, a decompression-bomb PNG header, a JPEG header followed by
noise), and broken downloads of phone-sized photos: ``--cut-jpg`` 4000x3000 JPEGs and
``--cut-png`` 3000x2000 PNGs cut at 80% of their bytes. Each code gets a fresh cache
(``MEDIACLUSTER_CACHE``) and one first run of each command, then ``--repeats`` second runs
(interleaved between the codes, so both see the same load); the good photos alone give the
floor. Wall seconds of the whole command (``python -m mediacluster ...``, imports included).

    PYTHONPATH=src python benchmarks/broken_files.py --before /tmp/before/src --write-results
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import _results
from PIL import Image

SECTION = "## Broken files, remembered (badcache helper)"
HERE_SRC = str(Path(__file__).resolve().parent.parent / "src")
COMMANDS = {"cluster": ["cluster"], "dups": ["dups"], "dups --no-embed": ["dups", "--no-embed"]}


def _png_header(w: int, h: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def _big(path: str, size, fmt: str) -> bytes:
    b = io.BytesIO()
    opts = {"quality": 90} if fmt == "JPEG" else {"compress_level": 1}
    Image.open(path).convert("RGB").resize(size).save(b, fmt, **opts)
    return b.getvalue()


def add_folder_args(ap: argparse.ArgumentParser, broken: int, cut_jpg: int, cut_png: int,
                    repeats: int) -> None:
    """The options of the folder :func:`make_folder` builds (``folder_of(args)`` builds it),
    and how many times each run is repeated; the defaults are the script's own."""
    ap.add_argument("--images", type=Path, default=Path("/work/data/imagenette/val"))
    ap.add_argument("--good", type=int, default=200)
    ap.add_argument("--broken", type=int, default=broken, help="files of each cheap kind")
    ap.add_argument("--cut-jpg", type=int, default=cut_jpg)
    ap.add_argument("--cut-png", type=int, default=cut_png)
    ap.add_argument("--repeats", type=int, default=repeats)


def folder_of(a: argparse.Namespace, out: Path) -> dict:
    """:func:`make_folder` at ``out`` as the options of :func:`add_folder_args` ask."""
    return make_folder(out, a.images, a.good, a.broken, a.cut_jpg, a.cut_png)


def make_folder(out: Path, images: Path, good: int, broken: int, cut_jpg: int, cut_png: int) -> dict:
    out.mkdir(parents=True)
    src = sorted(str(p) for p in images.glob("*/*.JPEG"))
    random.Random(0).shuffle(src)
    need = good + broken + cut_jpg + cut_png
    if len(src) < need:
        raise SystemExit(f"{images} holds {len(src)} photos, {need} needed")
    it = iter(src)
    for i in range(good):
        (out / f"good_{i:04d}.jpg").write_bytes(Path(next(it)).read_bytes())
    for i in range(broken):
        data = Path(next(it)).read_bytes()
        (out / f"cut_{i:04d}.jpg").write_bytes(data[: len(data) * 2 // 3])
        (out / f"html_{i:04d}.jpg").write_bytes(b"<html><body>404 not found %d</body></html>" % i)
        (out / f"empty_{i:04d}.png").write_bytes(b"")
        (out / f"bomb_{i:04d}.png").write_bytes(_png_header(40000 + i, 40000))
        (out / f"noise_{i:04d}.jpg").write_bytes(data[:600] + random.Random(i).randbytes(len(data) - 600))
    for i in range(cut_jpg):
        d = _big(next(it), (4000, 3000), "JPEG")
        (out / f"phone_{i:04d}.jpg").write_bytes(d[: len(d) * 4 // 5])
    for i in range(cut_png):
        d = _big(next(it), (3000, 2000), "PNG")
        (out / f"screen_{i:04d}.png").write_bytes(d[: len(d) * 4 // 5])
    return {"good": good, "broken": 5 * broken + cut_jpg + cut_png}


def run(src: str, cache: Path, folder: Path, out: Path, words: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "MEDIACLUSTER_CACHE": str(cache)}
    load = _results.load1()
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "mediacluster", words[0], str(folder), *words[1:], "--out",
                        str(out), "--quiet"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode not in (0, 3):
        raise SystemExit(f"{words} failed ({p.returncode}): {p.stderr[-2000:]}")
    return {"wall_s": round(wall, 2), "load1": round(load, 1), "rc": p.returncode}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_folder_args(ap, broken=200, cut_jpg=200, cut_png=50, repeats=3)
    ap.add_argument("--before", default=None, help="the src folder of the code to compare with")
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args(argv)
    res = _results.started("broken_files.py", argv)
    res["commit"] = _results.commit()
    with tempfile.TemporaryDirectory(prefix="broken_files_") as tmp:
        tmp = Path(tmp)
        res["folder"] = folder_of(a, tmp / "mixed")
        good = tmp / "good"
        good.mkdir()
        for p in sorted((tmp / "mixed").glob("good_*")):
            os.link(p, good / p.name)
        codes = {"remembered": HERE_SRC, **({"before": a.before} if a.before else {})}
        cases = [(code, "mixed") for code in codes] + [("remembered", "good")]
        first: dict = {}
        again: dict = {}
        for code, which in cases:  # first runs: fill each cache
            for name, words in COMMANDS.items():
                first[f"{code}/{which}/{name}"] = run(codes[code], tmp / f"cache_{code}_{which}", tmp / which,
                                                      tmp / f"out_{code}_{which}_{name}", words)
        for _ in range(a.repeats):
            for code, which in cases:
                for name, words in COMMANDS.items():
                    again.setdefault(f"{code}/{which}/{name}", []).append(
                        run(codes[code], tmp / f"cache_{code}_{which}", tmp / which,
                            tmp / f"out_{code}_{which}_{name}", words))
    res["first"], res["again"] = first, again
    res["cases"] = [f"{c}/{w}" for c, w in cases]
    _results.finish(res, SECTION, render, a.write_results)
    return 0


def render(res: dict) -> str:
    f = res["folder"]
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in res["again"].items()}
    loads = sorted({r["load1"] for v in res["again"].values() for r in v})
    lines = [SECTION, "",
             f"`{res['command']}` (commit {res['commit']}, {res['finished']}; load {res['loadavg']} before, "
             f"{res['loadavg_after']} after; 1-min load during the re-runs {loads[0]}-{loads[-1]}).", "",
             f"A folder of {f['good']} Imagenette photos and {f['broken']} files that cannot be used (cut-off "
             "photos and phone-sized downloads, HTML pages named .jpg, empty files, decompression-bomb "
             "headers, noise after a JPEG header). Median wall seconds of a second run of each whole "
             "command (imports included), the embedding cache warm; `before`: the code without remembered "
             "failures (every broken file decoded again by every command); `good only`: the same photos "
             "without the broken files, the floor.", "",
             "| command | " + " | ".join(c.replace("/mixed", "").replace("remembered/good", "good only")
                                        for c in res["cases"]) + " |",
             "|---|" + "---:|" * len(res["cases"])]
    for name in COMMANDS:
        lines.append(f"| `{name}` | " + " | ".join(f"{med[f'{c}/{name}']:.2f}" for c in res["cases"]) + " |")
    lines += ["", "First runs (each cache empty): " + "; ".join(
        f"{k} {v['wall_s']:.1f} s" for k, v in res["first"].items() if k.endswith("/cluster")) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
