"""How should the default pipeline (NOT told k) cluster? The experiments behind ``Pipeline()``.

For each dataset (Imagenette val, CIFAR-10 test, MNIST test; default-encoder features, loaded
exactly like benchmarks/quality.py, sharing its embedding cache), one UMAP space is computed
(10 dims, 30 neighbours, min_dist 0, cosine, seed 0 - the reducer every row uses) and each
candidate clusterer runs on it. Noise / outliers are assigned to the nearest cluster (weighted
vote of the 15 nearest clustered points, as ``Pipeline(assign_noise=True)`` does), so every row
is scored at 100% coverage; NMI over all items (sklearn arithmetic NMI).

Rows:

* ``K-means told k``                       the bar (UMAP + K-means with the true k)
* ``HDBSCAN eom, mcs 1%``                  the first version's default (mcs = 1% of N)
* ``HDBSCAN leaf, mcs 1% / 2%``            leaf selection (finest clusters of the condensed tree)
* ``K-means, k by silhouette max``         k in [2, 30], silhouette in UMAP space (3,000-pt sample)
* ``K-means, k by silhouette local max``   same curve, best INTERIOR local maximum (the default)

    flock /tmp/mc-bench.lock python benchmarks/default_search.py [--umap-cache DIR] [--vectors-from DIR]

``--umap-cache DIR`` stores / reuses the UMAP space per dataset (``DIR/<name>.npy``) so reruns
skip UMAP. ``--vectors-from DIR`` (dev only) reads ``DIR/<name>.npz`` instead of embedding.
``--fit-timing`` additionally times ``Pipeline().fit`` end to end (UMAP included) per dataset.
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
NAMES = ["imagenette-val", "cifar10-test", "mnist-test"]


def assign(Z, lab, k=15):
    from mediacluster.stages.cluster import knn_vote

    lab = lab.copy()
    m = lab >= 0
    if m.all() or not m.any():
        return lab
    lab[~m] = knn_vote(Z[m], lab[m], Z[~m], k=k)[0]
    return lab


def run_dataset(name, args, rows):
    from quality import load_dataset
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mediacluster.stages.cluster import (
        HDBSCANClusterer,
        KMeansClusterer,
        SilhouetteKMeansClusterer,
    )
    from mediacluster.stages.reduce import UMAPReducer

    X, y, src = load_dataset(name, args.out, SHARED,
                             args.vectors_from, progress=False)
    y = np.asarray(y)
    n, k_true = len(X), len(set(y.tolist()))
    cache = args.umap_cache / f"{name}.npy" if args.umap_cache else None
    if cache is not None and cache.exists():
        Z, t_umap = np.load(cache, allow_pickle=False), float("nan")
    else:
        t = time.perf_counter()
        Z = UMAPReducer(n_neighbors=30, n_components=10, min_dist=0.0, random_state=0).fit_transform(X)
        t_umap = time.perf_counter() - t
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, Z)
    print(f"[{name}] n={n} ({src}); UMAP {t_umap:.1f}s", file=sys.stderr, flush=True)

    def add(method, labels, secs, note=""):
        la = assign(Z, labels)
        r = {"dataset": name, "method": method, "nmi": nmi(y, la),
             "clusters": int(len(set(labels[labels >= 0].tolist()))),
             "coverage_before": float((labels >= 0).mean()), "time_s": secs, "note": note}
        rows.append(r)
        print(f"  {method:<40} NMI {r['nmi']:.3f}  k={r['clusters']:<3} "
              f"cov-before {r['coverage_before']:.2f}  {secs:.1f}s {note}", file=sys.stderr, flush=True)

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t

    HDBSCANClusterer(min_cluster_size=20).fit(Z[:300])  # JIT warm-up, not timed
    c, t = timed(lambda: KMeansClusterer(n_clusters=k_true).fit(Z))
    add("K-means told k (the bar)", c.labels_, t)
    for method, frac in (("eom", 0.01), ("leaf", 0.01), ("leaf", 0.02)):
        mcs = max(5, round(frac * n))
        c, t = timed(lambda method=method, mcs=mcs: HDBSCANClusterer(
            min_cluster_size=mcs, cluster_selection_method=method).fit(Z))
        add(f"HDBSCAN {method}, mcs {frac:.0%} ({mcs})", c.labels_, t)
    c, t = timed(lambda: SilhouetteKMeansClusterer(selection="local_max", random_state=0).fit(Z))
    scores = c.scores_
    k_max = max(scores, key=scores.get)
    c2 = KMeansClusterer(n_clusters=k_max).fit(Z)
    add("K-means, k by silhouette max", c2.labels_, t, f"k={k_max}")
    add("K-means, k by silhouette local max (default)", c.labels_, t, f"k={c.n_clusters_}")
    curve = " ".join(f"{k}:{v:.3f}" for k, v in sorted(scores.items()))
    print(f"  silhouette curve: {curve}", file=sys.stderr, flush=True)
    if args.fit_timing:
        from mediacluster import Pipeline

        p, t = timed(lambda: Pipeline(random_state=0).fit(X))
        add("Pipeline() default, end to end", p.cluster_, t,
            "fit incl. UMAP; " + ", ".join(f"{a} {b:.1f}s" for a, b in p.timings_.items()))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=NAMES)
    ap.add_argument("--umap-cache", type=Path, default=None)
    ap.add_argument("--vectors-from", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "quality")
    ap.add_argument("--fit-timing", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    rows = []
    for name in args.datasets:
        run_dataset(name, args, rows)
    print(f"\nloadavg {tuple(round(v, 1) for v in os.getloadavg())}, {os.cpu_count()} cpus")
    print("| dataset | method | NMI (all, 100% coverage) | clusters | coverage before assignment | time (s) | note |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['method']} | {r['nmi']:.3f} | {r['clusters']} | "
              f"{r['coverage_before']:.2f} | {r['time_s']:.1f} | {r['note']} |")


if __name__ == "__main__":
    main()
