"""What the safe loader costs: ``load_image`` vs a bare PIL open + draft + convert.

``mediacluster.ingest.load_image`` adds a stat (byte cap, regular file), a header pixel check,
an EXIF orientation lookup and mode handling to every decode. This measures that overhead on
real files, single-threaded, files already in the page cache (reading is not what is timed):

* Imagenette val JPEGs (224 px in the shared set), ``draft_size=256`` as the default encoder uses;
* CIFAR-10 test JPEGs (32 px).

Usage (takes the shared benchmark lock; ~1 min on an idle machine):

    flock /tmp/mc-bench.lock python benchmarks/decode.py [--n 400] [--write]

``--write`` replaces the "## Decoding (ingest helper)" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import _results
from PIL import Image

from mediacluster.datasets import extract_slice
from mediacluster.ingest import load_image

ROOT = Path(__file__).resolve().parents[1]
SHARED = _results.SHARED
SECTION = "## Decoding (ingest helper)"


def bare(path: str, draft: int) -> Image.Image:
    im = Image.open(path)
    im.draft("RGB", (draft, draft))
    return im.convert("RGB")


def safe(path: str, draft: int) -> Image.Image:
    return load_image(path, draft_size=draft)


def best_ms(fn, paths, draft, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for p in paths:
            fn(p, draft)
        best = min(best, time.perf_counter() - t)
    return 1000 * best / len(paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400, help="images per set")
    _results.add_common_args(ap)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, per_class in (("imagenette-val", args.n // 10), ("cifar10-test", args.n // 10)):
            items = extract_slice(SHARED / f"{name}.tar.gz", Path(tmp) / name, per_class=per_class, seed=0)
            paths = [p for p, _ in items]
            for p in paths:  # page cache
                Path(p).read_bytes()
            sizes = {Image.open(p).size for p in paths[:50]}
            b = best_ms(bare, paths, 256)
            s = best_ms(safe, paths, 256)
            rows.append((name, len(paths), sorted(sizes)[len(sizes) // 2], b, s))
    load = os.getloadavg()
    lines = [
        SECTION,
        "",
        "Single thread, files in the page cache, best of 3 passes, `draft_size=256`.",
        f"Command: `flock /tmp/mc-bench.lock python benchmarks/decode.py --n {args.n} --write`",
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} during the run; the numbers are noisy when the load is high)",
        "",
        "| set | images | typical size | bare PIL open+draft+convert | `load_image` | overhead |",
        "|---|---|---|---|---|---|",
    ]
    for name, n, size, b, s in rows:
        lines.append(f"| {name} | {n} | {size[0]}x{size[1]} | {b:.3f} ms | {s:.3f} ms | {100 * (s / b - 1):+.0f}% |")
    text = "\n".join(lines) + "\n"
    _results.publish(SECTION, text, args.write)


if __name__ == "__main__":
    main()
