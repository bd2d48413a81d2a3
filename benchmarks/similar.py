""""More like this" (``Pipeline.similar``, ``POST /v1/similar``): recall, latency, and the cost of
the ids a model carries.

``recall FOLDER...``: each folder embedded through the package (``collect`` +
``embed_collection``, through the shared embedding cache), 500 items held out at random as new
uploads, the predictor fitted on the rest (``Pipeline.fit_labels`` with the folder labels: the
reference set and its PCA do not depend on the clusters, so the search is a full fit's), and
the top 10 of ``similar`` compared with exact cosine search over the full vectors of the same
fitted items (recall@10 = the share of the exact top 10 found), for ``reference_dims`` 128 (the
default), 256 and none (full vectors); with the time of one ``similar`` call (one item, median
of 300, wall and CPU).

``items``: ``items.json`` (``model_items.save_items`` / ``read_items``) for 10,000 and 1,000,000
synthetic ids and paths shaped like a photo library's: bytes, write and read seconds.

``http``: a run of Imagenette val with the default pipeline and a saved model
(``workflow.cluster_folder``, the embeddings from the shared cache; reused from ``--out``), a
``mediacluster serve`` process on loopback and one keep-alive client: one-image requests to
``/v1/similar?k=10`` and to ``/v1/assign`` (for comparison), then JSON vectors (1 and 32 per
request), p50/p95 and the server's CPU per request.

    flock /tmp/mc-bench.lock python benchmarks/similar.py recall /work/data/imagenette/val ...
    flock /tmp/mc-bench.lock python benchmarks/similar.py items
    flock /tmp/mc-bench.lock python benchmarks/similar.py http --out /tmp/similar-bench
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import loadavg  # noqa: E402
from serve import BOUNDARY, Server, build_run, multipart, percentile, proc_cpu  # noqa: E402

HELD_OUT = 500
K = 10


def recall(folders: list[str]) -> list[dict]:
    from mediacluster.data import l2_normalize
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect
    from mediacluster.pipeline import Pipeline

    out = []
    for folder in folders:
        emb = embed_collection(collect(folder, labels_from_folders=True), progress=False)
        X = np.asarray(emb.vectors, dtype=np.float32)
        y = np.unique(np.asarray(emb.labels, dtype=str), return_inverse=True)[1]
        rng = np.random.default_rng(0)
        held = np.zeros(len(X), bool)
        held[rng.choice(len(X), HELD_OUT, replace=False)] = True
        F, Q = X[~held], X[held]
        U = l2_normalize(F)
        exact_new = np.argsort(-(l2_normalize(Q) @ U.T), axis=1)[:, :K]
        fq = rng.choice(len(F), HELD_OUT, replace=False)
        exact_fit = np.argsort(-(U[fq] @ U.T), axis=1)[:, :K]
        for dims in (128, 256, None):
            pipe = Pipeline(reference_dims=dims, random_state=0).fit_labels(F, y[~held], F[:, :2])
            got_new = pipe.similar(Q, k=K)["rows"]
            got_fit = pipe.similar(F[fq], k=K)["rows"]
            r_new = np.mean([len(set(a) & set(b)) / K for a, b in zip(got_new, exact_new)])
            r_fit = np.mean([len(set(a) & set(b)) / K for a, b in zip(got_fit, exact_fit)])
            top1 = float(np.mean(got_new[:, 0] == exact_new[:, 0]))
            wall, cpu = [], []
            for i in range(300):
                t, c = time.perf_counter(), time.process_time()
                pipe.similar(Q[i % len(Q)], k=K)
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            row = {"set": folder, "n_fitted": len(F), "reference_dims": dims, "recall10_new": round(r_new, 4),
                   "top1_new": round(top1, 4), "recall10_fitted": round(r_fit, 4),
                   "one_ms_p50": round(1e3 * float(np.median(wall)), 2),
                   "one_ms_p95": round(1e3 * percentile(wall, 95), 2),
                   "one_cpu_ms": round(1e3 * float(np.median(cpu)), 2), "loadavg": loadavg()}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def items() -> list[dict]:
    from mediacluster.model_items import read_items, save_items

    out = []
    for n in (10_000, 1_000_000):
        ids = [f"/srv/photos/library/2024/{i % 12 + 1:02d}/album_{i // 500:05d}/IMG_{i:07d}.jpg" for i in range(n)]
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            p = save_items(d, ids, ids, "/srv/photos/library")
            w = time.perf_counter() - t
            t, c = time.perf_counter(), time.process_time()
            got = read_items(d, n)
            r, rc = time.perf_counter() - t, time.process_time() - c
            assert got.paths[-1] == ids[-1] and got.ids[0] == ids[0]
            row = {"n": n, "items_json_mb": round(os.path.getsize(p) / 1e6, 2), "write_s": round(w, 3),
                   "read_s": round(r, 3), "read_cpu_s": round(rc, 3),
                   "ref_vectors_mb_at_128d": round(n * 128 * 4 / 1e6, 1), "loadavg": loadavg()}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


class Client:
    """One keep-alive connection to the service."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, path: str, body: bytes, ctype: str) -> tuple[int, float, bytes]:
        t = time.perf_counter()
        self.conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, time.perf_counter() - t, data


def timed(server: Server, path: str, bodies: list[bytes], ctype: str, n: int) -> dict:
    c = Client(server.url)
    for b in bodies[:10]:  # warm-up
        c.post(path, b, ctype)
    lat, failed = [], 0
    cpu0 = proc_cpu(server.pid)
    for i in range(n):
        status, s, data = c.post(path, bodies[i % len(bodies)], ctype)
        failed += status != 200 or b'"error":{' in data  # an item not placed
        lat.append(s)
    cpu = proc_cpu(server.pid) - cpu0
    return {"path": path, "requests": n, "failed": failed, "p50_ms": round(percentile(lat, 50) * 1e3, 2),
            "p95_ms": round(percentile(lat, 95) * 1e3, 2), "server_cpu_ms": round(cpu / n * 1e3, 2),
            "loadavg": loadavg()}


def http_latency(out: Path, n: int) -> list[dict]:
    from mediacluster.rundir import RunDir

    data = Path("/work/data/imagenette/val")
    run = build_run(argparse.Namespace(out=str(out)), data)
    files = sorted(data.rglob("*.JPEG"))[::40][:60]
    X = RunDir.open(run).read_embeddings().vectors
    rng = np.random.default_rng(1)
    server = Server(run, log=out / "server.log")
    rows = []
    try:
        mp = f"multipart/form-data; boundary={BOUNDARY}"
        bodies = [multipart(p) for p in files]
        for path in ("/v1/similar?k=10", "/v1/assign", "/v1/similar?k=10&same_cluster=true"):
            rows.append({"input": "one image", **timed(server, path, bodies, mp, n)})
        for per in (1, 32):
            vb = [json.dumps({"vectors": (X[rng.choice(len(X), per)] + 0.01).tolist()}).encode() for _ in range(20)]
            for path in ("/v1/similar?k=10", "/v1/assign"):
                rows.append({"input": f"{per} vectors", **timed(server, path, vb, "application/json", n)})
    finally:
        server.stop()
    for r in rows:
        print(json.dumps(r), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["recall", "items", "http"])
    ap.add_argument("folders", nargs="*")
    ap.add_argument("--out", type=Path, default=Path("/tmp/similar-bench"))
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args()
    if args.what == "recall":
        recall(args.folders)
    elif args.what == "items":
        items()
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        http_latency(args.out, args.requests)


if __name__ == "__main__":
    main()
