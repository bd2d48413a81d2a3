"""A meme posted 500 times in the studio's duplicate groups: what the list costs over HTTP and in
the page when one group has hundreds of members.

The collection: ``studio_dups.build``'s (588 files: train/ and test/, 11 classes, planted copies
and leaks) plus ``--copies`` (500) exact copies of one train file in its class folder.
``mediacluster cluster COLL --out RUN --folder-label name --dedup`` (the user's embedding cache),
then a real ``mediacluster studio RUN`` (the package on ``PYTHONPATH``: run it once per version
to compare, with ``--reuse`` the second time):

* ``GET /api/duplicates`` (order ``size``, 20 groups: the meme's group first) over HTTP (httpx,
  keep-alive): the first call and the median / max of ``--rounds`` calls, the answer's bytes and
  the members listed for the meme's group;
* ``GET /api/duplicates/{group}?members_offset=24&members_limit=96`` (where the server has it):
  the next page of the meme's members;
* the page in headless Chromium: "duplicates" clicked until the groups are drawn and the
  thumbnails in view have loaded; the tiles drawn.

Usage:
    flock /tmp/mc-bench.lock python benchmarks/studio_big_group.py [--out DIR] [--copies 500] [--reuse] [--label L] [--write]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import _results
from studio_dups import build, cluster, first_list, open_view

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
SECTION = "## Duplicates a person acts on: a 500-member group in the studio (dupsloose helper)"


def make(out: Path, data: Path, copies: int) -> dict:
    coll, run = out / "coll", out / "run"
    col = build(coll, data)
    src = sorted((coll / "train").rglob("*.jpg"))[0]
    for k in range(copies):
        shutil.copy2(src, src.parent / f"meme{k:04d}-{src.name}")
    col["meme"] = copies
    shutil.rmtree(run, ignore_errors=True)
    col["cluster_s"] = cluster(coll, run)
    return col


def measure(run: Path, rounds: int) -> dict:
    import httpx
    from studio_helpers import Server

    res: dict = {}
    s = Server(run)
    try:
        with httpx.Client(base_url=s.base, timeout=120) as c:
            res["first_ms"], _ = first_list(c)
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                r = c.get("/api/duplicates", params={"limit": 20, "order": "size"})
                times.append(1000 * (time.perf_counter() - t))
            d = r.json()
            big = d["groups"][0]
            res.update(median_ms=statistics.median(times), max_ms=max(times), bytes=len(r.content),
                       group_size=big["size"], listed=len(big["members"]))
            more = c.get(f"/api/duplicates/{big['group']}", params={"members_offset": 24, "members_limit": 96})
            if more.status_code == 200:
                times = []
                for _ in range(rounds):
                    t = time.perf_counter()
                    c.get(f"/api/duplicates/{big['group']}", params={"members_offset": 24, "members_limit": 96})
                    times.append(1000 * (time.perf_counter() - t))
                res["more_median_ms"] = statistics.median(times)
            _, view, res["tiles"] = open_view(s.url, "return document.querySelectorAll('.dgroup .tile').length")
            res["view_drawn_ms"], res["view_thumbs_ms"] = view[0], view[1]
    finally:
        s.stop()
    return res


def render(res: dict) -> str:
    col = res["collection"]
    lines = [SECTION, "",
             f"`{res['command']}` runs (1-min load average before: {res['loadavg']}; 2 cores shared; "
             f"{res['finished']}).", "",
             f"Collection: {col['files']} files (`studio_dups.build`'s curator collection) plus {col['meme']} exact "
             f"copies of one train image (a meme posted {col['meme']} times; with the original and a planted leak "
             f"of the same file its group has {next(iter(res['versions'].values()))['group_size']} members). "
             "`GET /api/duplicates` (20 groups, largest first: the meme's group first) and the page's "
             "\"duplicates\" view:", "",
             "| version | members listed with the meme's group | answer bytes | first call ms | median ms | max ms "
             "| next 96 members ms | view drawn ms | thumbnails in view ms | tiles drawn |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in res["versions"].items():
        more = f"{r['more_median_ms']:.1f}" if "more_median_ms" in r else "-"
        lines.append(f"| {label} | {r['listed']} | {r['bytes']:,} | {r['first_ms']:.0f} | {r['median_ms']:.1f} | "
                     f"{r['max_ms']:.1f} | {more} | {r['view_drawn_ms']:.0f} | {r['view_thumbs_ms']:.0f} | {r['tiles']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/dupsloose/biggroup"))
    ap.add_argument("--data", type=Path, default=Path("/work/data"), help="the shared sets, extracted")
    ap.add_argument("--copies", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--reuse", action="store_true", help="the run already built under --out")
    ap.add_argument("--label", default="this branch", help="the version measured, a row of the table")
    _results.add_common_args(ap)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    state = args.out / "results.json"
    res = json.loads(state.read_text()) if args.reuse and state.exists() else {"versions": {}}
    res.update(_results.started("studio_big_group.py", argv))
    if not args.reuse:
        res["collection"] = make(args.out, args.data, args.copies)
    res["versions"][args.label] = measure(args.out / "run", args.rounds)
    state.write_text(json.dumps(res))
    text = _results.finish(res, SECTION, render, args.write)
    return 0 if text else 1


if __name__ == "__main__":
    raise SystemExit(main())
