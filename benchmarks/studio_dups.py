"""The studio's duplicate groups on a curator's collection: what the list costs over HTTP and in
the page, and the ``classes`` export keeping the splits.

The collection (built under ``--out``, from the shared sets' extracted files): ``train/`` and
``test/`` with 11 class folders each (8 Sports-100 classes, 3 Imagenette classes), 40 + 10 files
a class (550), plus 30 copies of train files put in *other* classes' train folders (8 exact,
8 resized to 2/3, 7 re-saved at JPEG quality 60, 7 cropped 10% a side) and 8 copies of train
files in ``test/`` (exact / resized: leaks between the splits): 588 files, as the curator helper's
collection (benchmarks/RESULTS.md, "A dataset curator's day"). ``mediacluster cluster COLL --out
RUN --folder-label name --dedup`` (the default pipeline, the user's embedding cache), then a real
``mediacluster studio RUN``:

* ``GET /api/duplicates`` over HTTP (httpx, keep-alive): the first call (which builds the groups
  from the run) and the median / max of ``--rounds`` calls per order, a page of 20 and of 200
  groups, with and without ``prefer=train/``;
* the page in headless Chromium: first paint, then a click on "duplicates" until the groups are
  drawn and the thumbnails in view have loaded;
* ``POST /api/export {"kind": "classes", "split": "top", "prefer": ["train/"]}``: its time and
  what it left out.

Usage:
    flock /tmp/mc-bench.lock python benchmarks/studio_dups.py [--out DIR] [--rounds 20] [--write]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _results
from _browser import chromium, wait_studio_loaded

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Duplicates and splits in the studio: timings (dupstudio helper)"
sys.path.insert(0, str(ROOT / "tests"))
SPORTS = ["archery", "basketball", "bowling", "boxing", "billiards", "bmx", "air hockey", "bobsled"]
IMAGENETTE = {"n01440764": "tench", "n02102040": "springer", "n03394916": "french horn"}

OPEN_VIEW = """
const done = arguments[arguments.length - 1], S = window.mcStudio, t0 = performance.now();
let drawn = null;
document.getElementById('show-dups').click();
(function wait() {
  const groups = document.querySelectorAll('.dgroup');
  if (S.view.kind === 'dups' && S.busy === 0 && S.dups && groups.length) {
    if (drawn === null) drawn = performance.now() - t0;
    const seen = Array.from(document.querySelectorAll('.dgroup img')).filter((i) => i.getBoundingClientRect().top < window.innerHeight);
    if (seen.every((i) => i.complete)) return done([drawn, performance.now() - t0, groups.length, seen.length]);
  }
  if (performance.now() - t0 > 60000) return done(['timeout']);
  setTimeout(wait, 5);
})();
"""


def build(root: Path, data: Path) -> dict:
    """The collection (see the module docstring); its counts."""
    from PIL import Image

    rng = random.Random(7)
    shutil.rmtree(root, ignore_errors=True)
    train: dict[str, list[Path]] = {}

    def put(src: Path, split: str, cls: str) -> Path:
        d = root / split / cls
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, d / src.name)
        return d / src.name

    for folder, cls in [(data / "sports100" / "all" / c, c) for c in SPORTS] + \
                       [(data / "imagenette" / "val" / n, c) for n, c in IMAGENETTE.items()]:
        fs = sorted(folder.iterdir())
        rng.shuffle(fs)
        train[cls] = [put(f, "train", cls) for f in fs[:40]]
        for f in fs[40:50]:
            put(f, "test", cls)
    classes = list(train)

    def make(src: Path, kind: str, dst: Path) -> None:
        if kind == "exact":
            shutil.copy2(src, dst)
            return
        im = Image.open(src).convert("RGB")
        if kind == "resized":
            im = im.resize((im.width * 2 // 3, im.height * 2 // 3))
        if kind == "cropped":
            w, h = im.size
            im = im.crop((int(w * .1), int(h * .1), int(w * .9), int(h * .9)))
        im.save(dst, "JPEG", quality=60 if kind == "recompressed" else 90)

    kinds = ["exact"] * 8 + ["resized"] * 8 + ["recompressed"] * 7 + ["cropped"] * 7
    for i, k in enumerate(kinds):  # label noise: copies in another class's train folder
        c = classes[i % len(classes)]
        other = classes[(classes.index(c) + 1 + i % (len(classes) - 1)) % len(classes)]
        make(train[c][30 + i // len(classes)], k, root / "train" / other / f"copy{i:02d}_{k}.jpg")
    for i in range(8):  # leaks: copies of train files in test/
        c = classes[i % len(classes)]
        k = ["exact", "resized"][i % 2]
        make(train[c][i // len(classes)], k, root / "test" / c / f"leak{i:02d}_{k}.jpg")
    return {"files": sum(1 for p in root.rglob("*") if p.is_file()), "copies": len(kinds), "leaks": 8}


def cluster(coll: Path, run: Path) -> float:
    """``mediacluster cluster COLL --out RUN --folder-label name --dedup`` (the user's embedding
    cache); its seconds."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mediacluster", "cluster", str(coll), "--out", str(run),
                    "--folder-label", "name", "--dedup", "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def first_list(c):
    """The first ``GET /api/duplicates`` (which builds the groups from the run) on the httpx
    client ``c``: its ms and its answer (an HTTP error raised)."""
    t = time.perf_counter()
    first = c.get("/api/duplicates")
    ms = 1000 * (time.perf_counter() - t)
    first.raise_for_status()
    return ms, first


def open_view(url: str, also: str = "return null") -> tuple:
    """The page at ``url`` in headless Chromium: its first paint (ms), :data:`OPEN_VIEW`'s answer
    (the duplicates view drawn, its thumbnails in view loaded) and what the script ``also``
    returns after."""
    drv = chromium(1400, 900)
    drv.set_script_timeout(90)
    try:
        drv.get(url)
        wait_studio_loaded(drv, 60)
        paint = drv.execute_script("return window.mcStudio.firstPaint")
        return paint, drv.execute_async_script(OPEN_VIEW), drv.execute_script(also)
    finally:
        drv.quit()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/studio_dups"))
    ap.add_argument("--data", type=Path, default=Path("/work/data"), help="the shared sets, extracted")
    ap.add_argument("--rounds", type=int, default=20)
    _results.add_common_args(ap)
    args = ap.parse_args(argv)
    import httpx
    from studio_helpers import WRITE, Server

    res = _results.started("studio_dups.py", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    coll, run = args.out / "coll", args.out / "run"
    res["collection"] = build(coll, args.data)
    res["cluster_s"] = cluster(coll, run)
    s = Server(run)
    try:
        with httpx.Client(base_url=s.base, timeout=120) as c:
            res["first_ms"], first = first_list(c)
            d = first.json()
            res["groups"], res["summary"] = d["total"], d["summary"]
            rows = []
            for order in ("size", "folders", "clusters"):
                for limit in (20, 200):
                    for prefer in (None, "train/"):
                        params = {"order": order, "limit": limit, **({"prefer": prefer} if prefer else {})}
                        ms = []
                        for _ in range(args.rounds):
                            t = time.perf_counter()
                            r = c.get("/api/duplicates", params=params)
                            ms.append(1000 * (time.perf_counter() - t))
                            r.raise_for_status()
                        rows.append((order, limit, prefer, len(r.json()["groups"]), len(r.content),
                                     statistics.median(ms), max(ms)))
            res["rows"] = rows
            res["first_paint_ms"], res["view"], _ = open_view(s.url)
            t = time.perf_counter()
            r = c.post("/api/export", json={"kind": "classes", "split": "top", "prefer": ["train/"]}, headers=WRITE)
            res["export_ms"] = 1000 * (time.perf_counter() - t)
            r.raise_for_status()
            res["export"] = r.json()["dropped"]
    finally:
        s.stop()
    text = _results.finish(res, SECTION, render, args.write)
    return 0 if text else 1


def render(res: dict) -> str:
    col, sm = res["collection"], res["summary"]
    view = res["view"]
    lines = [SECTION, "",
             f"`{res['command']}` (1-min load average before: {res['loadavg']}, after: {res['loadavg_after']}; "
             f"2 cores shared; {res['finished']}).", "",
             f"Collection: {col['files']} files (train/ and test/, 11 classes; {col['copies']} copies in other "
             f"classes' train folders, {col['leaks']} copies of train files in test/); `cluster --folder-label name "
             f"--dedup` {res['cluster_s']:.1f} s. The studio found {res['groups']} groups, {sm['copies']} extra "
             f"copies, across folders {sm['across_folders']}, {sm['mixed_clusters']} in more than one cluster.", "",
             f"`GET /api/duplicates`, first call (builds the groups from the run): {res['first_ms']:.1f} ms; then "
             "per call over a keep-alive connection:", "",
             "| order | limit | prefer | groups | bytes | median ms | max ms |", "|---|---:|---|---:|---:|---:|---:|"]
    for order, limit, prefer, n, size, med, mx in res["rows"]:
        lines.append(f"| {order} | {limit} | {prefer or '-'} | {n} | {size:,} | {med:.1f} | {mx:.1f} |")
    lines += ["", f"Page (headless Chromium): first paint {res['first_paint_ms']:.0f} ms; \"duplicates\" clicked: "
              f"groups drawn in {view[0]:.0f} ms, the {view[3]} thumbnails in view loaded in {view[1]:.0f} ms "
              f"({view[2]} groups on the page).", "",
              f"`POST /api/export {{\"kind\": \"classes\", \"split\": \"top\", \"prefer\": [\"train/\"]}}`: "
              f"{res['export_ms']:.0f} ms; left out: {res['export']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
