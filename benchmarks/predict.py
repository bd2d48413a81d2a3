"""Predict latency and agreement of a fitted pipeline, given embeddings (warm process, after JIT).

Embeds the CIFAR-10 test set through the package (embedding cache, default encoder), fits the
default pipeline, then measures on the fitted model:

* single-item latency of ``predict_details`` (median / p95 over 200 calls, one vector each);
* batch throughput (items/s) for batches of 1,000 and 10,000 items;
* reproduction: share of clustered training items whose predicted label equals the fitted one;
* held-out agreement: the same vote with each item's own copy left out of its neighbours (what a
  new near-duplicate-free item gets), against its fitted label;
* model size on disk, for the full reference set and for ``reference_size`` subsamples, with the
  agreement cost of each.

    flock /tmp/mc-bench.lock python benchmarks/predict.py [--limit N] [--vectors FILE.npz]

``--vectors`` skips embedding (an .npz with ``vectors``, for quick checks); the numbers in
RESULTS.md come from the run through the package unless stated.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = _results.SHARED


def embeddings(args):
    """CIFAR-10 test vectors, loaded/embedded through the package exactly like quality.py."""
    if args.vectors:
        with np.load(args.vectors, allow_pickle=False) as z:
            return z["vectors"].astype(np.float32)[: args.limit]
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from quality import load_dataset

    X, _y, _src = load_dataset("cifar10-test", ROOT / "benchmarks" / "out" / "quality",
                               SHARED, None, progress=False)
    return np.asarray(X, dtype=np.float32)[: args.limit]


def leave_self_out_agreement(pipe, X) -> float:
    from mediacluster.stages.cluster import vote

    k = pipe.predict_neighbors
    dist, idx = pipe.predictor_.kneighbors(X, k + 1, zero_vectors="place")
    own = pipe.ref_index_[idx] == np.arange(len(X))[:, None]
    keep = np.zeros((len(X), k), dtype=np.int64)
    dk = np.zeros((len(X), k))
    for i in range(len(X)):
        sel = np.flatnonzero(~own[i])[:k]
        keep[i], dk[i] = idx[i, sel], dist[i, sel]
    ri = pipe.ref_index_
    ref_lab = np.where(pipe.labels_[ri] == -2, -1, pipe.labels_[ri])
    lab, _, _ = vote(dk, keep, ref_lab)
    m = pipe.labels_ >= 0
    return float((lab[m] == pipe.labels_[m]).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--vectors", default=None)
    ap.add_argument("--umap-cache", type=Path, default=None,
                    help="reuse DIR/cifar10-test.npy (default_search.py --umap-cache) as the UMAP space")
    args = ap.parse_args()
    from mediacluster import Pipeline
    from mediacluster.pipeline import load

    X = embeddings(args)
    n = len(X)
    Z = None
    if args.umap_cache is not None and (args.umap_cache / "cifar10-test.npy").exists() and args.limit is None:
        Z = np.load(args.umap_cache / "cifar10-test.npy", allow_pickle=False)
    t = time.perf_counter()
    pipe = Pipeline(random_state=0).fit(X, embedding=Z)
    fit_s = time.perf_counter() - t
    pipe.predict_details(X[:10])  # warm-up
    lat = []
    c0 = time.process_time()
    for i in range(200):
        x = X[(i * 37) % n]
        t = time.perf_counter()
        pipe.predict_details(x)
        lat.append(time.perf_counter() - t)
    cpu_one = (time.process_time() - c0) / 200 * 1e3
    lat = np.array(lat) * 1e3
    rates, cpu_rates = {}, {}
    for b in (1000, 10000):
        b = min(b, n)
        t, c0 = time.perf_counter(), time.process_time()
        pipe.predict_details(X[:b])
        rates[b] = b / (time.perf_counter() - t)
        cpu_rates[b] = b / max(time.process_time() - c0, 1e-9)
    det = pipe.predict_details(X)
    m = pipe.labels_ >= 0
    repro = float((det["labels"][m] == pipe.labels_[m]).mean())
    loo = leave_self_out_agreement(pipe, X)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        pipe.save(Path(d) / "full")
        q = load(Path(d) / "full")
        same = all(np.array_equal(v, q.predict_details(X[:500])[k]) for k, v in pipe.predict_details(X[:500]).items())
        for ref in (None, 5000, 2000, 500):
            if ref is not None and ref >= n:
                continue
            p2 = pipe if ref is None else _refit_reference(pipe, X, ref)
            size = p2.save(Path(d) / f"r{ref}")["bytes"]
            agree = float((p2.predict(X)[m] == pipe.labels_[m]).mean())
            rows.append((ref or n, size, agree))
    load1 = os.getloadavg()[0]
    print(f"\n## predict benchmark (n={n}, clusters={pipe.n_clusters_}, fit {fit_s:.1f}s"
          f"{' with cached UMAP space' if Z is not None else ''}, loadavg {load1:.2f})")
    print("fit timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in pipe.timings_.items()))
    print(f"single item: median {np.median(lat):.2f} ms, p95 {np.percentile(lat, 95):.2f} ms wall; "
          f"{cpu_one:.2f} ms CPU")
    for b, r in rates.items():
        print(f"batch of {b}: {r:,.0f} items/s wall, {cpu_rates[b]:,.0f} items per CPU-second "
              f"(process CPU over all threads)")
    print(f"training items reproduced: {100 * repro:.2f}% of clustered items; "
          f"leave-self-out agreement {100 * loo:.2f}%; identical after save/load: {same}")
    print("| reference items kept | model size (MB) | agreement with fitted labels (clustered items) |")
    print("|---|---|---|")
    for ref, size, agree in rows:
        print(f"| {ref} | {size / 1e6:.2f} | {100 * agree:.2f}% |")


def _refit_reference(pipe, X, size):
    """Same fitted clustering, smaller reference set (what ``reference_size`` does at fit time)."""
    import copy

    p = copy.copy(pipe)
    p.reference_size = size
    p._fit_predictor(X)
    return p


if __name__ == "__main__":
    main()
