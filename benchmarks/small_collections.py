"""The automatic level on small collections (3-200 items): does a person get the groups they see?

Draws small collections from the shared sets' vectors (``--vectors-from``: ``<set>.npz`` with
``vectors`` and ``labels``), seeded, and scores the default pipeline's automatic level against
label-free references a user could glue together:

* ``engine``: ``Pipeline(random_state=0).fit(X)``, its automatic level (what ``cluster`` gives)
* ``sil``: agglomerative clustering (average linkage, cosine) of the input vectors, k in
  2..min(10, distinct - 1) by the silhouette (it cannot answer one group)
* ``hdb``: HDBSCAN on the L2-normalised input (``min_cluster_size`` 2 at n < 16, else 5),
  its noise one more cluster

Collections (``kind``): ``1`` one class (must stay one cluster), ``Cb`` C classes balanced,
``Cs`` C classes skewed (class i keeps a share proportional to 2^-i, at least 1 item),
``Cx4`` C classes of distinct items each copied 4 times (n // 4 distinct).

Columns: mean NMI / ARI over the draws (classes > 1), the share of draws whose cluster count
equals the class count (``k=c``; for one class: stays one), mean cluster count.

Command: ``python benchmarks/small_collections.py --vectors-from /work/vec --seeds 3``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

SETS = ["imagenette-val", "sports100", "cifar10-test", "openmoji", "mnist-test"]
SIZES = [3, 5, 8, 12, 16, 24, 40, 64, 100, 200]
KINDS = ["1", "2b", "3b", "4s", "6b", "3x4"]


def draw(y, n: int, kind: str, seed: int) -> np.ndarray | None:
    """Row indices of one collection (copies repeat an index), or None when n cannot hold it."""
    r = np.random.default_rng(seed)
    c = int(kind[0])
    copies = 4 if kind.endswith("x4") else 1
    m = n // copies  # distinct items
    if m < c:
        return None
    cls = r.permutation(np.unique(y))[:c]
    if kind.endswith("s"):
        share = 2.0 ** -np.arange(c)
        sizes = np.maximum(1, np.floor(m * share / share.sum())).astype(int)
        sizes[0] += m - sizes.sum()
    else:
        sizes = np.full(c, m // c)
        sizes[: m - sizes.sum()] += 1
    idx = []
    for k, s in zip(cls, sizes):
        pool = np.flatnonzero(y == k)
        if len(pool) < s:
            return None
        idx.append(r.choice(pool, s, replace=False))
    idx = np.concatenate(idx)
    idx = np.repeat(idx, copies)
    if len(idx) < n and copies > 1:  # the rest: copies of the first items
        idx = np.concatenate([idx, idx[: n - len(idx)]])
    return r.permutation(idx)


def l2(X):
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def run_engine(X, **params):
    from mediacluster.pipeline import Pipeline

    p = Pipeline(random_state=0, **params).fit(X)
    return np.asarray(p.labels_)


def run_sil(X):
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    V = l2(X)
    nu = len(np.unique(V, axis=0))
    best, lab = -2.0, np.zeros(len(X), int)
    for k in range(2, min(10, nu - 1) + 1):
        lk = AgglomerativeClustering(n_clusters=k, linkage="average", metric="cosine").fit_predict(V)
        if len(np.unique(lk)) < 2:
            continue
        s = silhouette_score(V, lk, metric="cosine")
        if s > best:
            best, lab = s, lk
    return lab


def run_hdb(X):
    import hdbscan

    V = l2(X).astype(np.float64)
    if len(V) < 3:
        return np.zeros(len(V), int)
    mcs = 2 if len(V) < 16 else 5
    lab = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=min(mcs, len(V) - 1)).fit(V).labels_
    lab = np.asarray(lab).copy()
    lab[lab < 0] = lab.max() + 1
    return lab


METHODS = {"engine": run_engine, "sil": run_sil, "hdb": run_hdb}


def score(y, lab):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {"nmi": float(normalized_mutual_info_score(y, lab)), "ari": float(adjusted_rand_score(y, lab)),
            "k": int(len(np.unique(lab))), "c": int(len(np.unique(y)))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors-from", required=True)
    ap.add_argument("--sets", nargs="+", default=SETS)
    ap.add_argument("--sizes", nargs="+", type=int, default=SIZES)
    ap.add_argument("--kinds", nargs="+", default=KINDS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON lines, one per (draw, method); appended")
    ap.add_argument("--label", default="", help="a suffix for the method names in --out (e.g. before/after)")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows = []
    for name in a.sets:
        d = np.load(Path(a.vectors_from) / f"{name}.npz", allow_pickle=True)
        V, Y = np.asarray(d["vectors"], np.float32), np.asarray(d["labels"]).astype(str)
        for n in a.sizes:
            for kind in a.kinds:
                for s in range(a.seeds):
                    idx = draw(Y, n, kind, seed=1000 * s + n)
                    if idx is None:
                        continue
                    X, y = V[idx], Y[idx]
                    for m in a.methods:
                        t = time.process_time()
                        lab = METHODS[m](X)
                        row = {"set": name, "n": n, "kind": kind, "seed": s, "method": m + a.label,
                               "cpu": time.process_time() - t, **score(y, lab)}
                        rows.append(row)
                        if a.out:
                            with open(a.out, "a") as f:
                                f.write(json.dumps(row) + "\n")
    table(rows)


def table(rows):
    import pandas as pd

    df = pd.DataFrame(rows)
    df["hit"] = (df.k == df.c).astype(float)
    one = df[df.kind == "1"].groupby(["method", "n"]).hit.mean().unstack()
    many = df[df.kind != "1"]
    print("one class: share kept as one cluster")
    print(one.round(2).to_string())
    for col in ("nmi", "ari", "hit", "k"):
        print(f"\nclasses > 1: mean {col}")
        print(many.groupby(["method", "n"])[col].mean().unstack().round(3).to_string())
    print("\nby kind (NMI, all n >= 8):")
    print(many[many.n >= 8].groupby(["method", "kind"]).nmi.mean().unstack().round(3).to_string())


if __name__ == "__main__":
    main()
