"""What the inbox over HTTP costs a dashboard: `GET /v1/inbox` pages, a file, `POST /v1/inbox/mark`.

A synthetic inbox of ``--contents`` contents (two uploads each, every upload with an
uploader's id, a small file per content) written through the store's own schema
(``inbox.open_db``), served by a real `mediacluster serve --keep-uploads` process (a PCA +
k-means model of 500 Imagenette vectors of the default encoder: the inbox routes never touch
the model), read over one keep-alive loopback connection. Per call the median of ``--repeat`` (and the min / max), and
the in-process ``inbox.listing`` / ``summary`` for comparison.

    flock /tmp/mc-bench.lock python benchmarks/inbox_http.py [--contents 10000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
from serve import Server  # noqa: E402 - the service benchmark's server helper

VECTORS = Path("/work/vec/imagenette.npz")


def make_inbox(root: Path, n: int) -> None:
    from mediacluster.inbox import FILES, open_db, write_transaction

    con = open_db(root)
    with write_transaction(con):
        for i in range(n):
            h = f"{i:032x}"
            rel = f"{FILES}/up {i}--{h[:16]}.jpg"
            (root / rel).write_bytes(b"\xff\xd8\xff" + h.encode())
            con.execute("INSERT INTO stored (hash, file, size) VALUES (?, ?, 35)", (h, rel))
            for k in range(2):
                con.execute("INSERT INTO uploads (time, model_version, route, input, reason, cluster, status, "
                            "probability, novelty, novel, filename, size, hash, file, item_id) VALUES "
                            "(?, 'v0001', 'assign', 'image', 'novel', 1, 'clustered', 0.4, 0.99, 1, ?, 35, ?, ?, ?)",
                            (f"2026-12-0{1 + k}T00:00:00Z", f"up {i}.jpg", h, rel, f"post-{i}-{k}"))
    con.close()


def make_run(out: Path) -> Path:
    from mediacluster.data import Embeddings
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages import build as make_stage
    from mediacluster.workflow import publish_run

    d = np.load(VECTORS, allow_pickle=True)
    X = np.asarray(d["vectors"][:500], dtype=np.float32)
    emb = Embeddings([str(i) for i in d["ids"][:500]], X, encoder="efficientnet-lite0")
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 8}),
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3}), outliers=None)
    publish_run(out, emb, pipe.fit(X), save_model=True)
    return out


class Conn:
    def __init__(self, url: str):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self.c = http.client.HTTPConnection(host, int(port), timeout=120)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, float, bytes]:
        t = time.perf_counter()
        self.c.request(method, path, body=None if body is None else json.dumps(body).encode(),
                       headers={"Content-Type": "application/json"} if body is not None else {})
        r = self.c.getresponse()
        out = r.read()
        return r.status, time.perf_counter() - t, out


def timed(f, repeat: int) -> tuple[float, float, float]:
    ts = [f() for _ in range(repeat)]
    return statistics.median(ts) * 1e3, min(ts) * 1e3, max(ts) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contents", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    load0 = _results.loadavg()
    from mediacluster.inbox import listing, summary

    with tempfile.TemporaryDirectory(prefix="inbox-http-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_inbox(tmp / "inbox", args.contents)
        made = time.perf_counter() - t
        run = make_run(tmp / "run")
        s = Server(run, "--keep-uploads", str(tmp / "inbox"), log=tmp / "server.log")
        try:
            c = Conn(s.url)
            rows = []

            def get(path):
                def f():
                    st, sec, body = c.call("GET", path)
                    assert st == 200, (path, st, body[:300])
                    return sec
                return f

            first = json.loads(c.call("GET", "/v1/inbox?limit=50")[2])
            assert first["contents"]["pending"] == args.contents
            mid = listing(tmp / "inbox", limit=args.contents // 2)[-1]["seq"]
            last = listing(tmp / "inbox")[-51]["seq"]
            for name, path in (("first page, limit 50", "/v1/inbox?limit=50"),
                               ("middle page, limit 50", f"/v1/inbox?limit=50&after={mid}"),
                               ("last page, limit 50", f"/v1/inbox?limit=50&after={last}"),
                               ("first page, limit 500", "/v1/inbox?limit=500"),
                               ("state=all, limit 50", "/v1/inbox?state=all&limit=50"),
                               ("a file", first["items"][0]["url"].replace(" ", "%20")),
                               ("/metrics", "/metrics")):
                rows.append((f"GET {name}", *timed(get(path), args.repeat)))

            def walk():
                t0, after, n = time.perf_counter(), None, 0
                while True:
                    page = json.loads(c.call("GET", "/v1/inbox?limit=500" + (f"&after={after}" if after else ""))[2])
                    n += len(page["items"])
                    after = page["next"]
                    if after is None:
                        assert n == args.contents, n
                        return time.perf_counter() - t0
            rows.append((f"every page, limit 500 ({-(-args.contents // 500)} pages)", *timed(walk, 3)))
            rows.append(("in process: listing(limit=50)", *timed(
                lambda: (lambda t0: (listing(tmp / "inbox", limit=50), time.perf_counter() - t0)[1])(
                    time.perf_counter()), args.repeat)))
            rows.append(("in process: summary()", *timed(
                lambda: (lambda t0: (summary(tmp / "inbox"), time.perf_counter() - t0)[1])(
                    time.perf_counter()), args.repeat)))
            keys = [f"post-{i}-1" for i in range(0, 100)]
            st, sec, body = c.call("POST", "/v1/inbox/mark", {"keys": keys})
            assert st == 200 and json.loads(body)["marked"] == 100, body[:300]
            rows.append(("POST mark, 100 uploader ids", sec * 1e3, sec * 1e3, sec * 1e3))
            keys = [f"files/up {i}--{f'{i:032x}'[:16]}.jpg" for i in range(100, min(1100, args.contents))]
            st, sec, body = c.call("POST", "/v1/inbox/mark", {"keys": keys})
            assert st == 200 and json.loads(body)["marked"] == len(keys), body[:300]
            rows.append((f"POST mark, {len(keys)} stored files", sec * 1e3, sec * 1e3, sec * 1e3))
        finally:
            s.stop()
    print(f"inbox of {args.contents} contents / {2 * args.contents} uploads (made in {made:.1f} s); "
          f"load before {load0}, after {_results.loadavg()}")
    print("| call | median ms | min | max |\n|---|---|---|---|")
    for name, med, lo, hi in rows:
        print(f"| {name} | {med:.1f} | {lo:.1f} | {hi:.1f} |")


if __name__ == "__main__":
    main()
