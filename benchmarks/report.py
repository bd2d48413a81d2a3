"""Time and size of the HTML report for the 10,000 CIFAR-10 test images (and a 100k-item page).

Steps (everything through the package; persistent caches under benchmarks/out/):

1. extract CIFAR-10 test from ../shared/datasets into benchmarks/out/report/cifar10-test;
2. ``mediacluster.workflow.cluster_folder`` (default encoder and pipeline, the shared embedding
   cache) -> run folder benchmarks/out/report/run;
3. **cold** report: names, 2-D UMAP, all 10,000 thumbnails and the page, timed per stage, on a
   fresh copy of the run (``RunDir.create``: a new run id, so no name, map or thumbnail of an
   earlier report is reused); then **warm**: the same command again (map and thumbnails cached);
4. sizes: index.html, thumbnails;
5. headless Chromium: page load to first map drawn, time of a filter redraw, a screenshot
   (benchmarks/out/report/screenshot*.png);
6. ``--scale 100000``: a 100,000-item page built from the 10k run (each item repeated 10x with a
   jittered map position; thumbnails are shared by content) to check the page stays usable:
   HTML size, load and redraw times in Chromium. UMAP time at 100k is *not* measured here.

Usage:
    flock /tmp/mc-bench.lock python benchmarks/report.py [--scale 100000] [--write]
    python benchmarks/report.py --per-class 20 --scale 2000    # quick check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import _results
import numpy as np
from _browser import chromium

ROOT = Path(__file__).resolve().parents[1]
SHARED = _results.SHARED
OUT = ROOT / "benchmarks" / "out" / "report"
SECTION = "## Report and names (report/naming helper)"


def prepare_run(per_class: int | None = None):
    """The clustered 10k run (made once), as a RunDir; ``per_class``: a smaller slice."""
    from mediacluster.datasets import extract_slice
    from mediacluster.rundir import RunDir
    from mediacluster.workflow import cluster_folder

    data = OUT / "cifar10-test"
    if not (data / ".done").exists():
        extract_slice(SHARED / "cifar10-test.tar.gz", data, per_class=per_class, seed=0)
        (data / ".done").write_text("ok")
    run = OUT / "run"
    if not RunDir.is_run(run):
        cluster_folder(data, run, labels_from_folders=True, progress=True,
                       params={"benchmark": "report"})
    return RunDir.open(run)


def _info_of(run) -> dict:
    """``run.json`` of ``run`` without what a new run records for itself."""
    return {k: v for k, v in run.info.items()
            if k not in ("schema", "schema_version", "run_id", "command", "created")}


def fresh_copy(run, dest: Path):
    """A new run with the same items, vectors, assignments and clusters, nothing derived."""
    from mediacluster.rundir import RunDir

    with RunDir.create(dest, command="cluster") as b:
        b.write_embeddings(run.read_embeddings())
        b.write_assignments(run.read_assignments())
        b.write_clusters(run.read_clusters())
        b.write_info(_info_of(run))
    return b.published


def browse(html: Path, shot: Path) -> dict:
    d = chromium()
    try:
        t = time.perf_counter()
        d.get(html.resolve().as_uri())  # returns after the load event: data parsed, map drawn
        load = time.perf_counter() - t
        drawn = d.execute_script("return window.mcReport.drawn")
        cid = int(d.find_elements("css selector", "[data-cluster]")[0].get_attribute("data-cluster"))
        redraw = d.execute_script(
            "const t = performance.now(); window.mcReport.setFilter(arguments[0]);"
            "const a = performance.now() - t; const t2 = performance.now(); window.mcReport.setFilter(null);"
            "return [a, performance.now() - t2];", cid)
        d.save_screenshot(str(shot))
        d.execute_script("document.getElementById('clusters').scrollIntoView()")
        time.sleep(1.5)
        d.save_screenshot(str(shot.with_name(shot.stem + "-cards.png")))
        severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        return {"load_s": round(load, 2), "drawn": drawn, "filter_redraw_ms": round(redraw[0], 1),
                "full_redraw_ms": round(redraw[1], 1), "severe_console": len(severe)}
    finally:
        d.quit()


def dir_bytes(p: Path) -> tuple[int, int]:
    files = [f for f in p.iterdir() if f.is_file()]
    return len(files), sum(f.stat().st_size for f in files)


def scaled_run(run, n_target: int):
    """A run of ``n_target`` items made by repeating the 10k run (see module doc)."""
    import pandas as pd

    from mediacluster.data import Embeddings
    from mediacluster.rundir import REPORT, RunDir

    a = run.read_assignments()
    reps = int(np.ceil(n_target / len(a)))
    A = pd.concat([a] * reps, ignore_index=True).iloc[:n_target].copy()
    A["id"] = [f"{i}:{x}" for i, x in enumerate(A["id"])]
    emb = run.read_embeddings()
    big_emb = Embeddings(ids=A["id"].tolist(), vectors=np.tile(emb.vectors, (reps, 1))[:n_target],
                         encoder=emb.encoder, encoder_version=emb.encoder_version,
                         paths=A["path"].tolist() if "path" in A else None,
                         labels=A["label"].tolist() if "label" in A else None)
    xy, meta = run.read_map(len(a))
    rng = np.random.default_rng(0)
    span = xy.max(axis=0) - xy.min(axis=0)
    big_xy = np.tile(xy, (reps, 1))[:n_target] + rng.normal(0, 0.004, (n_target, 2)) * span
    with RunDir.create(OUT / f"run-{n_target}", command="cluster") as b:
        b.write_embeddings(big_emb)
        b.write_assignments(A)
        b.write_clusters(run.read_clusters())
        b.write_info(_info_of(run))
    big = b.published
    with big.writing("benchmark"):
        big.write_map(big_xy, {k: v for k, v in meta.items() if k not in ("run_id", "n")})
        named = run.read_automatic_names()
        if named:
            big.write_names(named, method=named[0].get("method"))
        # the thumbnails are content-addressed: copy the 10k set so only the page is measured
        shutil.copytree(run.file(REPORT) / "thumbs", big.file(REPORT) / "thumbs")
    return big


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=0, help="also build and load a page of this many items")
    _results.add_common_args(ap)
    ap.add_argument("--per-class", type=int, default=None,
                    help="a quick check on N images per class (in benchmarks/out/report/small-N), "
                         "never with --write")
    args = ap.parse_args()
    if args.per_class and args.write:
        ap.error("--write is for the whole test set; --per-class is a quick check")
    global OUT
    if args.per_class:
        OUT = OUT / f"small-{args.per_class}"
    from mediacluster.report import make_report

    run = fresh_copy(prepare_run(args.per_class), OUT / "run-cold")
    res: dict = {"loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    t = time.perf_counter()
    html = make_report(run, progress=True)
    res["cold_s"] = round(time.perf_counter() - t, 1)
    res["cold_stages_s"] = {k: round(v, 1) for k, v in json.loads((html.parent / "report.json").read_text())["timings_s"].items()}
    t = time.perf_counter()
    html = make_report(run, progress=False)
    res["warm_s"] = round(time.perf_counter() - t, 1)
    res["html_bytes"] = html.stat().st_size
    res["thumbs"], res["thumb_bytes"] = dir_bytes(html.parent / "thumbs")
    info = run.info["summary"]
    res["items"], res["clusters"] = info["items"], info["clusters"]
    res["names"] = [(e["cluster"], e["name"]) for e in run.read_automatic_names()]
    res["browser"] = browse(html, OUT / "screenshot.png")
    if args.scale:
        big = scaled_run(run, args.scale)
        t = time.perf_counter()
        bhtml = make_report(big, progress=False)
        res["scaled"] = {"items": args.scale, "build_s": round(time.perf_counter() - t, 1),
                         "html_bytes": bhtml.stat().st_size, "browser": browse(bhtml, OUT / f"screenshot-{args.scale}.png")}
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res, indent=1))
    (OUT / "results.json").write_text(json.dumps(res, indent=1))
    if args.write:
        write_results(res, _results.command("report.py"))
    return 0


def write_results(r: dict, cmd: str) -> None:
    b = r["browser"]
    lines = [
        SECTION, "",
        f"Command: `flock /tmp/mc-bench.lock {cmd}` (2 shared CPU cores; load average "
        f"{r['loadavg_before']} before, {r['loadavg_after']} after).", "",
        f"CIFAR-10 test, {r['items']:,} images, {r['clusters']} clusters (default encoder and pipeline):", "",
        "| | value |", "|---|---|",
        f"| cold report (names + 2-D UMAP + {r['thumbs']:,} thumbnails + page) | {r['cold_s']} s |",
        "| of which: " + ", ".join(f"{k} {v} s" for k, v in r["cold_stages_s"].items()) + " | |",
        f"| warm report (map and thumbnails cached) | {r['warm_s']} s |",
        f"| index.html (all data inlined) | {r['html_bytes'] / 1e6:.2f} MB |",
        f"| thumbnails (96 px JPEG, lazy-loaded) | {r['thumbs']:,} files, {r['thumb_bytes'] / 1e6:.1f} MB |",
        f"| headless Chromium: load to map drawn | {b['load_s']} s ({b['drawn']:,} points) |",
        f"| filter redraw / full redraw | {b['filter_redraw_ms']} ms / {b['full_redraw_ms']} ms |",
        f"| SEVERE console messages | {b['severe_console']} |",
    ]
    if "scaled" in r:
        s = r["scaled"]
        lines += [
            f"| **{s['items']:,}-item page** (10k run repeated, map jittered): build | {s['build_s']} s |",
            f"| {s['items']:,}-item index.html | {s['html_bytes'] / 1e6:.1f} MB |",
            f"| {s['items']:,}-item page: load to map drawn; filter / full redraw | {s['browser']['load_s']} s; "
            f"{s['browser']['filter_redraw_ms']} ms / {s['browser']['full_redraw_ms']} ms |",
        ]
    lines += ["", "Automatic names (ImageNet -> WordNet lifting): " +
              "; ".join(f"#{c} {n}" for c, n in r["names"]) + ". The cold time is mostly the 2-D UMAP "
              "(numba compilation in a fresh process included); it is cached in the run folder (map2d.npy), "
              "and thumbnails are cached by content, so a re-run only rewrites the page. Redraw times are "
              "JavaScript time for one frame (setFilter) in headless Chromium.", ""]
    block = "\n".join(lines) + "\n"
    _results.write_section(SECTION, block)


if __name__ == "__main__":
    sys.exit(main())
