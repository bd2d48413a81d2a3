"""Time to the studio's first item view (benchmarks/RESULTS.md, "Slow corners at scale").

Starts ``mediacluster studio RUN`` and, the moment it says it listens, asks for item views
(``GET /api/items/{i}``, real HTTP on 127.0.0.1) one after another (and, where a view came without
its neighbours, the page's search for them), then a search by example
(``GET /api/search?item=``) that does need the search index; prints each request's
milliseconds and the server's own log lines about the background work. Run it under the bench
lock and note the load:
``flock /tmp/mc-bench.lock python benchmarks/studio_first_item.py RUN --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request

from _results import loadavg

PY = [sys.executable, "-m", "mediacluster"]


def get(base: str, path: str, headers: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=600) as r:
        body = r.read()
    return time.perf_counter() - t, json.loads(body)


def one_round(run: str, items: list[int]) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen([*PY, "studio", run, "--port", "0", "--no-browser"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = {}
    try:
        url = None
        while url is None and time.perf_counter() - t0 < 600:
            if select.select([p.stdout], [], [], 1.0)[0]:
                m = re.search(r"studio: listening on (\S+)", p.stdout.readline())
                url = m.group(1) if m else None
            if p.poll() is not None:
                raise SystemExit(f"the studio stopped: {p.stdout.read()}")
        out["listening_s"] = time.perf_counter() - t0
        base = url.split("?", 1)[0].rstrip("/")
        tok = re.search(r"token=([^&\s]+)", url)
        h = {"Authorization": f"Bearer {tok.group(1)}"} if tok else {}
        views, near = [], []
        for i in items:
            dt, body = get(base, f"/api/items/{i}", h)
            views.append(round(dt * 1000))
            assert body["i"] == i, body
            if body["neighbours"] is None:  # the index not built yet: the page asks the search
                dt2, found = get(base, f"/api/search/similar?item={i}&limit=13", h)
                assert len(found["items"]) > 1, found
                dt += dt2
            near.append(round(dt * 1000))
        out["item_views_ms"] = views
        out["item_with_neighbours_ms"] = near
        dt, body = get(base, f"/api/search/similar?item={items[0]}&limit=20", h)
        out["search_by_example_ms"] = round(dt * 1000)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--items", type=int, nargs="+", default=[0, 4321, 31337])
    a = ap.parse_args()
    print("load before", loadavg())
    for r in range(a.rounds):
        print(f"round {r}:", json.dumps(one_round(a.run, a.items)), "| load", loadavg(), flush=True)


if __name__ == "__main__":
    main()
