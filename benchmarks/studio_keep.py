"""What the studio page's refresh costs when another page's edit arrives (real Chromium).

A run of the 3,925 Imagenette images (as ``studio_live.py`` makes it: default-encoder vectors,
PCA 10 + K-means k=10, a cached PCA map) served by a real ``mediacluster studio``; page A in
headless Chromium shows the largest cluster's gallery (60 tiles). "Page B" edits over HTTP with
its own client id, in turn: a rename of another cluster, a move of 5 items between two other
clusters, a tag of 3 items, a move of 5 items out of A's cluster. After each edit A's refresh
runs (``mcStudio.refresh(false, true)``, what A's poll runs on a new edit number; the page's
own 1.5 s poll is stopped for the measurement so the two never race) and is timed in the page,
from its first request until it has rendered, with the requests it made (thumbnails included,
counted 0.5 s later) and their bytes. ``--before SRC`` measures the page of another source tree
(e.g. a copy of ``src`` before a change) the same way, for a before / after table.

Usage:
    flock /tmp/mc-bench.lock python benchmarks/studio_keep.py [--before SRC] [--rounds 10] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _results
import numpy as np
from _browser import chromium

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Studio: a refresh's cost after another page's edit (studiokeep helper)"
sys.path.insert(0, str(ROOT / "tests"))
KINDS = ["rename another cluster", "move 5 items between two other clusters", "tag 3 items",
         "move 5 items out of the cluster shown"]
# A on a search ("more like this" of an item of the largest cluster, its item panel open)
SEARCH_KINDS = ["search shown: move 5 of its results, the open item among them",
                "search shown: rename the cluster of its results"]

MEASURE = """
const done = arguments[arguments.length - 1], S = window.mcStudio, x = arguments[0];  // x: the open item
const n0 = performance.getEntriesByType('resource').length, t0 = performance.now();
S.refresh(false, true).then(() => {
  const ms = performance.now() - t0;
  setTimeout(() => {
    const es = performance.getEntriesByType('resource').slice(n0);
    // what the view still shows wrong: tiles whose cluster is not the item's now; the open
    // item panel without its item's cluster now
    const stale = S.items.filter((it) => it.cluster !== S.L[it.i]).length;
    const p = document.getElementById('item-panel');
    const panel = x === null ? null : !p.textContent.includes('(#' + S.L[x] + ')');
    done([ms, es.length, es.reduce((s, e) => s + (e.transferSize || e.encodedBodySize || 0), 0),
          stale, panel, es.map((e) => e.name.split('/api/')[1])]);
  }, 500);
}).catch((e) => done(['error', String(e)]));
"""


def measure(run: Path, src: Path, rounds: int) -> dict:
    from studio_helpers import WRITE, Server, client

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)  # the server (and the page it ships) from this tree
    try:
        s = Server(run)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    drv = chromium(1400, 900)
    drv.set_script_timeout(60)
    out = {k: [] for k in KINDS + SEARCH_KINDS}
    try:
        with client(s) as api:
            b = {**WRITE, "X-Mediacluster-Client": "page-b"}
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            order = [int(c) for c in np.argsort(-np.bincount(lab[lab >= 0]))]
            shown, x, y = order[0], order[1], order[2]
            drv.get(s.url)
            t0 = time.time()
            while not drv.execute_script("const s = window.mcStudio; return s && s.firstPaint !== null && s.busy === 0"):
                assert time.time() - t0 < 120, "the page did not load"
                time.sleep(0.1)
            # the poll stopped: each refresh below is the one measured (the page's own intervals)
            drv.execute_script("for (let i = 1; i < 1000; i++) clearInterval(i);"
                               "performance.setResourceTimingBufferSize(100000);")
            drv.execute_script("return window.mcStudio.showCluster(arguments[0])", shown)
            time.sleep(1.0)
            rng = np.random.default_rng(0)
            for r in range(rounds):
                for kind in KINDS:
                    lab = np.frombuffer(api.get("/api/labels").content, "<i4")
                    if kind == KINDS[0]:
                        body = {"kind": "rename", "cluster": x, "name": f"b's name {r}"}
                    elif kind == KINDS[1]:
                        body = {"kind": "move", "items": rng.choice(np.flatnonzero(lab == x), 5, replace=False).tolist(), "to": y}
                    elif kind == KINDS[2]:
                        body = {"kind": "tag", "items": rng.choice(len(lab), 3, replace=False).tolist(), "add": [f"t{r}"]}
                    else:
                        body = {"kind": "move", "items": rng.choice(np.flatnonzero(lab == shown), 5, replace=False).tolist(), "to": y}
                    resp = api.post("/api/edits", json=body, headers=b)
                    assert resp.status_code == 200, resp.text
                    got = drv.execute_async_script(MEASURE, None)
                    assert got[0] != "error", got
                    out[kind].append(got[:5])
            # the search: the first tile's item opened, then "more like this" (a page's own clicks)
            drv.execute_script("return window.mcStudio.showCluster(arguments[0])", shown)
            time.sleep(1.0)
            tile = drv.find_elements("css selector", "#grid .tile")[0]
            item = int(tile.get_attribute("data-i"))
            tile.find_element("css selector", ".open").click()
            time.sleep(1.0)
            drv.find_element("id", "more-like").click()
            time.sleep(1.0)
            results = drv.execute_script("return window.mcStudio.view.kind === 'search' && "
                                         "window.mcStudio.view.result.items.map((it) => it.i)")
            assert results and item in results, results
            for r in range(rounds):
                for kind in SEARCH_KINDS:
                    lab = np.frombuffer(api.get("/api/labels").content, "<i4")
                    if kind == SEARCH_KINDS[0]:
                        # the open item and 4 results, to a cluster none of them is in
                        others = [i for i in results if i != item]
                        its = [item, *rng.choice(others, 4, replace=False).tolist()]
                        to = next(c for c in order if c not in set(lab[its].tolist()))
                        body = {"kind": "move", "items": its, "to": to}
                    else:
                        top = np.bincount(lab[results][lab[results] >= 0]).argmax()
                        body = {"kind": "rename", "cluster": int(top), "name": f"b's search name {r}"}
                    resp = api.post("/api/edits", json=body, headers=b)
                    assert resp.status_code == 200, resp.text
                    got = drv.execute_async_script(MEASURE, item)
                    assert got[0] != "error", got
                    out[kind].append(got[:5])
            assert drv.execute_script("return window.mcStudio.errors") == []
    finally:
        drv.quit()
        s.stop()
    return {k: {"ms": round(statistics.median(v[0] for v in vs), 1),
                "requests": statistics.median(v[1] for v in vs),
                "kb": round(statistics.median(v[2] for v in vs) / 1024, 1),
                "stale": statistics.median(v[3] for v in vs),
                "panel": None if vs[0][4] is None else sum(bool(v[4]) for v in vs)} for k, vs in out.items()}


def main(argv=None) -> int:
    from studio_live import make

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="a source tree whose page to measure as 'before'")
    ap.add_argument("--rounds", type=int, default=10)
    _results.add_common_args(ap)
    args = ap.parse_args(argv)
    res = _results.started("studio_keep.py", argv)
    with tempfile.TemporaryDirectory(prefix="studio-keep-") as tmp:
        run = make(Path(tmp) / "run")
        before = measure(_copy(run, Path(tmp) / "before"), args.before, args.rounds) if args.before else None
        after = measure(_copy(run, Path(tmp) / "after"), ROOT / "src", args.rounds)
    load = f"{_results.load1():.2f}"
    rows = []
    for k in KINDS + SEARCH_KINDS:
        rows.append(f"| {k} | {cell(before[k], args.rounds) if before else ''} | {cell(after[k], args.rounds)} |")
    block = f"""{SECTION}

Page A's refresh after one edit of another page (page B over HTTP), A showing the largest
cluster's gallery; Imagenette val, 3,925 items, k=10 (as "Studio: edits from another process").
Time from the refresh's first request until it has rendered, in the page; the requests it made
(thumbnails included, most from the browser's cache: `max-age`) and their bytes. Then A on a
search ("more like this" of the first item of that cluster, everywhere; the item's panel open),
B editing its results; there also what A's view still shows wrong after the refresh: the tiles
whose swatch is not their item's cluster now (median), the rounds whose item panel does not
show its item's cluster now. Medians of {args.rounds} rounds. Before: the page as it was
(`--before`, a copy of `src` at the branch point). Command: `flock /tmp/mc-bench.lock {res['command']}`;
commit {_results.commit()}; 1-min load average {load} (2 cores shared by other sessions).

| B's edit | refresh before | refresh now |
|---|---|---|
""" + "\n".join(rows) + "\n"
    _results.publish(SECTION, block, args.write)
    return 0


def cell(m: dict, rounds: int) -> str:
    out = f"{m['ms']} ms, {m['requests']:g} requests, {m['kb']} KB"
    if m["panel"] is not None:
        out += f"; {m['stale']:g} stale tiles, item panel stale in {m['panel']} of {rounds}"
    return out


def _copy(run: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(run, dst, symlinks=True)
    return dst


if __name__ == "__main__":
    sys.exit(main())
