"""Implementation choices, by measurement: which library does each pipeline job.

On the CIFAR-10 test set (10,000 images, default encoder, embedded through the package with the
same cache/loader as benchmarks/quality.py):

1. neighbour graph, k=30, cosine: scikit-learn brute force (exact) vs faiss ``IndexFlatIP`` on
   L2-normalised vectors (exact) vs pynndescent (approximate; what umap-learn uses inside):
   time and recall@30 against the exact graph;
2. HDBSCAN on the UMAP(10 dims, nn30, min_dist 0) space: ``fast_hdbscan`` vs ``hdbscan`` vs
   scikit-learn's ``HDBSCAN``: time, cluster count, and label agreement (ARI, share of identical
   labels after matching) with ``hdbscan`` as the reference, for eom/leaf and min_samples;
3. the predictor's exact kNN search over 10,000 reference vectors of 128 dims: faiss
   ``IndexFlatL2`` vs scikit-learn ``NearestNeighbors(algorithm="brute")``: one query and a
   batch of 10,000.

Every library's numba JIT is paid on a small warm-up first (not timed).

    flock /tmp/mc-bench.lock python benchmarks/choices.py [--vectors-from DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _results
import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = _results.SHARED


def timed(fn, repeat=1):
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return out, best


def matched_agreement(a, b) -> float:
    """Share of items with the same label after Hungarian matching of the two labelings."""
    from scipy.optimize import linear_sum_assignment

    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    m = np.zeros((len(ua), len(ub)))
    np.add.at(m, (ia, ib), 1)
    r, c = linear_sum_assignment(-m)
    return float(m[r, c].sum() / len(a))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors-from", type=Path, default=None,
                    help="dev only: DIR/cifar10-test.npz instead of embedding through the package")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "quality")
    ap.add_argument("--umap-cache", type=Path, default=None,
                    help="reuse DIR/cifar10-test.npy written by default_search.py --umap-cache")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from quality import load_dataset

    X, _y, src = load_dataset("cifar10-test", args.out, SHARED,
                              args.vectors_from, progress=False)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = len(X)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    print(f"data: CIFAR-10 test, n={n}, d={X.shape[1]} ({src}); loadavg {os.getloadavg()}")

    # 1. neighbour graphs ------------------------------------------------------------------
    import faiss
    import pynndescent
    from sklearn.neighbors import NearestNeighbors

    k = 30
    pynndescent.NNDescent(Xn[:500], metric="cosine", n_neighbors=10, random_state=0)  # JIT warm-up
    (d_ex, i_ex), t_sk = timed(lambda: NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute")
                               .fit(X).kneighbors(X))

    def faiss_knn():
        index = faiss.IndexFlatIP(Xn.shape[1])
        index.add(Xn)
        return index.search(Xn, k)

    (_, i_fa), t_fa = timed(faiss_knn)

    def pynn():
        return pynndescent.NNDescent(X, metric="cosine", n_neighbors=k, random_state=0).neighbor_graph

    (i_pn, _), t_pn = timed(pynn)

    def recall(idx):
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(idx, i_ex)]))

    print("\n### kNN graph, k=30, cosine, 10,000 x 1280")
    print("| library | time (s) | recall@30 vs exact |\n|---|---|---|")
    print(f"| scikit-learn brute (exact) | {t_sk:.1f} | 1.000 |")
    print(f"| faiss IndexFlatIP (exact) | {t_fa:.1f} | {recall(i_fa):.3f} |")
    print(f"| pynndescent (approximate) | {t_pn:.1f} | {recall(i_pn):.3f} |")

    # 2. HDBSCAN implementations --------------------------------------------------------------
    from sklearn.metrics import adjusted_rand_score

    from mediacluster.stages.cluster import HDBSCANClusterer
    from mediacluster.stages.reduce import UMAPReducer

    cache = args.umap_cache / "cifar10-test.npy" if args.umap_cache else None
    if cache is not None and cache.exists():
        Z, t_umap = np.load(cache, allow_pickle=False), float("nan")
    else:
        Z, t_umap = timed(lambda: UMAPReducer(n_neighbors=30, n_components=10, min_dist=0.0,
                                              random_state=0).fit_transform(X))
    print(f"\n(UMAP 10d nn30 for the HDBSCAN comparison: {t_umap:.1f}s)")
    for b in ("fast_hdbscan", "hdbscan", "sklearn"):  # JIT / import warm-up
        HDBSCANClusterer(min_cluster_size=20, backend=b).fit(Z[:500])
    print("\n### HDBSCAN on UMAP(10) of CIFAR-10 test (10,000 points), min_cluster_size 100")
    print("| selection | min_samples | library | time (s) | clusters | noise | ARI vs hdbscan | matched agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for method in ("eom", "leaf"):
        for ms in (None, 10):
            ref = None
            for b in ("hdbscan", "fast_hdbscan", "sklearn"):
                c, t = timed(lambda b=b, ms=ms, method=method: HDBSCANClusterer(
                    min_cluster_size=100, min_samples=ms, cluster_selection_method=method, backend=b).fit(Z))
                lab = c.labels_
                if ref is None:
                    ref = lab
                print(f"| {method} | {ms} | {b} | {t:.2f} | {lab.max() + 1} | {(lab < 0).mean():.3f} | "
                      f"{adjusted_rand_score(ref, lab):.3f} | {matched_agreement(ref, lab):.3f} |")

    # 3. predictor kNN search ---------------------------------------------------------------
    from sklearn.decomposition import PCA

    R = np.ascontiguousarray(PCA(128, random_state=0).fit_transform(Xn), dtype=np.float32)
    index = faiss.IndexFlatL2(R.shape[1])
    index.add(R)
    nn = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(R)
    q1 = R[5:6]
    for _ in range(5):
        index.search(q1, 10)
        nn.kneighbors(q1)
    lat_f = np.median([timed(lambda: index.search(q1, 10))[1] for _ in range(100)]) * 1e3
    lat_s = np.median([timed(lambda: nn.kneighbors(q1))[1] for _ in range(100)]) * 1e3
    _, tb_f = timed(lambda: index.search(R, 10))
    _, tb_s = timed(lambda: nn.kneighbors(R))
    print("\n### predictor kNN search, 10,000 reference vectors x 128 dims, k=10")
    print("| library | one query (ms, median of 100) | batch of 10,000 (items/s) |\n|---|---|---|")
    print(f"| faiss IndexFlatL2 | {lat_f:.3f} | {n / tb_f:,.0f} |")
    print(f"| scikit-learn brute | {lat_s:.3f} | {n / tb_s:,.0f} |")
    print(f"\nloadavg at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
