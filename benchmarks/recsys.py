""""More like this" for a product: ``POST /v1/similar`` by item id and by vector, on a published
model served by ``mediacluster serve --workers 2`` (a real subprocess, loopback HTTP).

``python benchmarks/recsys.py MODEL VECTORS.npz [--requests 200] [--label after] [--json OUT]``

MODEL: a run folder (or model version) saved with ``--save-model`` from VECTORS.npz (the /work/vec
files: ``vectors``, ``ids``), so the model's item ids are the npz's. 300 of its items (seed 0)
are the queries. Measured, one keep-alive client each row, bodies built beforehand:

- latency p50 / p99 of ``/v1/similar`` at k 10 / 100, 1 / 32 items a request, asking by id
  (``{"ids": [...]}``) and by vector (the item's own vector re-sent, as a client had to before
  ids were accepted; its first neighbour is then the item itself), and the bytes sent;
- throughput: 4 client threads, one connection each, one id (or vector) a request, bounded by
  ``--seconds`` and ``--requests`` x 10;
- recall@10 of the served neighbours against exact cosine search over the full vectors of the
  model's items (the item itself left out), by id and by vector;
- diversity: distinct clusters (at the level in use and the finest level) among the 10
  neighbours with and without ``per_cluster=2``, and their mean similarity.

A server that does not take ids (an older build: ``PYTHONPATH`` of another tree) answers them 422;
those rows say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve  # noqa: E402
from _results import loadavg  # noqa: E402
from serve import Server, percentile  # noqa: E402

N_QUERIES = 300


class Client(serve.Client):
    """``serve.Client``'s keep-alive connection, posting JSON to any path."""

    def post(self, path: str, body: bytes) -> tuple[int, float, bytes]:
        return super().post(body, "application/json", path=path)


def latency(url: str, path: str, bodies: list[bytes], n: int) -> dict:
    c = Client(url)
    for b in bodies[:5]:
        c.post(path, b)
    times, codes = [], {}
    for i in range(n):
        s, dt, _ = c.post(path, bodies[i % len(bodies)])
        codes[s] = codes.get(s, 0) + 1
        times.append(dt)
    return {"p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3,
            "n": n, "codes": codes, "bytes": int(np.mean([len(b) for b in bodies]))}


def throughput(url: str, path: str, bodies: list[bytes], threads: int, seconds: float, cap: int) -> dict:
    done, codes, lock = [], {}, threading.Lock()
    stop = time.perf_counter() + seconds

    def work(t):
        c = Client(url)
        i = t
        while time.perf_counter() < stop:
            with lock:
                if len(done) >= cap:
                    return
            s, dt, _ = c.post(path, bodies[i % len(bodies)])
            i += threads
            with lock:
                done.append(dt)
                codes[s] = codes.get(s, 0) + 1

    t0 = time.perf_counter()
    ws = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    wall = time.perf_counter() - t0
    return {"rps": len(done) / wall, "requests": len(done), "seconds": wall, "codes": codes,
            "p50_ms": percentile(done, 50) * 1e3, "p99_ms": percentile(done, 99) * 1e3}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("vectors")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--label", default="after")
    ap.add_argument("--json", default=None)
    ap.add_argument("--log", default="/tmp/recsys-serve.log")
    a = ap.parse_args(argv)
    from mediacluster.pipeline import Pipeline

    d = np.load(a.vectors, allow_pickle=False)
    V, vid = np.asarray(d["vectors"], np.float32), [str(x) for x in d["ids"]]
    model = Pipeline.load(a.model)
    items = model.model_items()
    row_of = {v: i for i, v in enumerate(vid)}
    ref = np.asarray([row_of[i] for i in items.ids])  # npz rows of the reference items, in order
    rng = np.random.default_rng(0)
    qpos = rng.choice(len(ref), size=min(N_QUERIES, len(ref)), replace=False)
    qids = [items.ids[p] for p in qpos]
    qvec = V[ref[qpos]]
    finest = None if model.levels_ is None else len(model.levels_) - 1
    out = {"label": a.label, "model": str(a.model), "n_items": int(len(model.labels_)),
           "n_reference": int(len(ref)), "load_before": loadavg(), "rows": []}
    srv = Server(Path(a.model), "--workers", "2", "--max-vectors", "64", log=Path(a.log))
    try:
        t_ready = time.perf_counter()
        out["server"] = {"workers": 2}
        for k in (10, 100):
            for batch in (1, 32):
                n = a.requests if batch == 1 else max(10, a.requests // 5)
                groups = [list(range(i, i + batch)) for i in range(0, len(qids) - batch + 1, batch)]
                by_id = [json.dumps({"ids": [qids[j] for j in g]}).encode() for g in groups]
                # the item's own vector re-sent (one more neighbour: the item itself comes first)
                by_vec = [json.dumps({"vectors": qvec[g].tolist()}).encode() for g in groups]
                for mode, bodies, kk in (("id", by_id, k), ("vector", by_vec, min(k + 1, 100))):
                    row = latency(srv.url, f"/v1/similar?k={kk}", bodies, n)
                    row.update(mode=mode, k=k, batch=batch, load=loadavg())
                    out["rows"].append(row)
                    print(json.dumps(row), flush=True)
        one_id = [json.dumps({"ids": [q]}).encode() for q in qids]
        one_vec = [json.dumps({"vectors": [v.tolist()]}).encode() for v in qvec]
        out["throughput"] = {}
        for mode, bodies in (("id", one_id), ("vector", one_vec)):
            tp = throughput(srv.url, "/v1/similar?k=10", bodies, 4, a.seconds, a.requests * 10)
            tp["load"] = loadavg()
            out["throughput"][mode] = tp
            print(mode, json.dumps(tp), flush=True)
        # recall@10 against exact cosine over the full vectors of the reference items
        from mediacluster.data import l2_normalize

        R = l2_normalize(V[ref])
        S = l2_normalize(qvec) @ R.T
        S[np.arange(len(qpos)), qpos] = -np.inf  # the item itself
        exact = np.argsort(-S, axis=1)[:, :10]
        c = Client(srv.url)
        got = {}
        for mode in ("id", "vector"):
            found = []
            for i0 in range(0, len(qids), 32):
                body = ({"ids": qids[i0:i0 + 32]} if mode == "id" else {"vectors": qvec[i0:i0 + 32].tolist()})
                s, _, text = c.post(f"/v1/similar?k={10 if mode == 'id' else 11}", json.dumps(body).encode())
                if s != 200:
                    found = None
                    break
                for it, p in zip(json.loads(text)["items"], qpos[i0:i0 + 32]):
                    ids = [n["id"] for n in it["neighbours"] if n["id"] != items.ids[p]][:10]
                    found.append(ids)
            got[mode] = found
        pos_of = {v: i for i, v in enumerate(items.ids)}
        out["recall10"] = {m: (None if f is None else float(np.mean(
            [len({pos_of[x] for x in f[i]} & set(exact[i].tolist())) / 10 for i in range(len(f))])))
            for m, f in got.items()}
        print("recall", out["recall10"], flush=True)
        # diversity: distinct clusters among the 10, with and without per_cluster=2
        div = {}
        if got["id"] is not None:
            for name, lv in (("in use", None), ("finest", finest)):
                for cap in (None, 2):
                    q = "k=10" + ("" if lv is None else f"&level={lv}") + ("" if cap is None else f"&per_cluster={cap}")
                    n_cl, sims, t0 = [], [], time.perf_counter()
                    for i0 in range(0, len(qids), 32):
                        s, _, text = c.post(f"/v1/similar?{q}", json.dumps({"ids": qids[i0:i0 + 32]}).encode())
                        for it in json.loads(text)["items"]:
                            n_cl.append(len({n["cluster"] for n in it["neighbours"]}))
                            sims.append(np.mean([n["similarity"] for n in it["neighbours"]]))
                    div[f"{name} cap={cap}"] = {"clusters_in_10": float(np.mean(n_cl)),
                                                "mean_similarity": float(np.mean(sims)),
                                                "seconds_per_32": (time.perf_counter() - t0) / ((len(qids) + 31) // 32)}
            print("diversity", json.dumps(div), flush=True)
        out["diversity"] = div
        # exclude and pages: one long exclude list in the query
        if got["id"] is not None:
            ex = "&".join(f"exclude={quote(x)}" for x in qids[:50])
            row = latency(srv.url, f"/v1/similar?k=10&offset=10&{ex}", one_id, a.requests)
            row.update(mode="id, offset=10, 50 excluded", k=10, batch=1, load=loadavg())
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
        out["seconds"] = time.perf_counter() - t_ready
    finally:
        srv.stop()
    out["load_after"] = loadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
