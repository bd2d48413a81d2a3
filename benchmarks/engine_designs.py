"""Which hierarchy and which label-free level criterion? The candidate designs of issue 16, measured.

Per shared set (default-encoder vectors embedded through the package, as in
``benchmarks/quality.py``), one reduced space Z (the engine's reducer, seed 0) and one input
kNN graph are shared by every design on Z:

* ``PLSCAN layers`` (fast_hdbscan): HDBSCAN's condensed tree cut into layers by the
  min-cluster-size persistence barcode; its pick = the most persistent layer (noise assigned
  by a kNN vote in Z);
* ``cells + Ward`` (``HierarchyClusterer`` with no density groups, i.e. one Ward tree over
  K-means cells) with three level criteria: **silhouette** of Z (3,000-item sample),
  **modularity** of the input kNN graph (best cut of the tree), **map equation** (two-level,
  Rosvall & Bergstrom) of the input kNN graph over the levels;
* ``EVoC layers`` (``evoc.EVoC`` on the raw vectors): EVoC's most persistent layer;
* ``engine`` (``HierarchyClusterer`` defaults: density groups of Z never merged, then the
  modularity cut).

For each: the clusters and NMI of its own pick, and the best NMI over its levels (oracle).
Quality only (no timings), so it need not run under the benchmark lock::

    python benchmarks/engine_designs.py --write-results
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Engine: candidate designs (issue 16)"


def map_equation(A, labels) -> float:
    """Two-level map equation (bits) of an undirected graph partition; lower is better."""
    lab = np.asarray(labels)
    coo = A.tocoo()
    m2 = float(coo.data.sum())
    deg = np.asarray(A.sum(axis=1)).ravel()
    same = lab[coo.row] == lab[coo.col]
    inside = np.bincount(lab[coo.row[same]], weights=coo.data[same], minlength=lab.max() + 1)
    vol = np.bincount(lab, weights=deg, minlength=lab.max() + 1)
    q_i = (vol - inside) / m2
    p_i = vol / m2

    def plogp(x):
        x = np.asarray(x, dtype=np.float64)
        x = x[x > 0]
        return float((x * np.log2(x)).sum())

    return plogp([q_i.sum()]) - 2 * plogp(q_i) - plogp(deg / m2) + plogp(q_i + p_i)


def assign_in(Z, labels):
    from mediacluster.stages.cluster import knn_vote

    lab = np.asarray(labels, dtype=np.int64).copy()
    m = lab >= 0
    if m.all() or not m.any():
        return np.where(m, lab, 0)
    lab[~m] = knn_vote(Z[m], lab[m], Z[~m], k=15)[0]
    return lab


def designs(X, y, seed):
    import fast_hdbscan
    from sklearn.metrics import silhouette_score

    from mediacluster.metrics import external_scores
    from mediacluster.stages.hierarchy import HierarchyClusterer, reduce_and_cluster
    from mediacluster.stages.neighbors import symmetric_adjacency

    def nmi(lab):
        return external_scores(y, lab)["all"]["nmi"]

    rows = []

    def add(name, levels, pick, note=""):
        levels = [np.asarray(lv) for lv in levels]
        s = [nmi(lv) for lv in levels]
        b = int(np.argmax(s))
        rows.append({"design": name, "pick_k": int(len(np.unique(levels[pick]))), "pick_nmi": s[pick],
                     "best_k": int(len(np.unique(levels[b]))), "best_nmi": s[b],
                     "levels": [int(len(np.unique(lv))) for lv in levels], "note": note})
        print(f"  {name}: pick {rows[-1]['pick_k']} {s[pick]:.3f}, best {rows[-1]['best_k']} {s[b]:.3f}",
              file=sys.stderr, flush=True)

    r = reduce_and_cluster(X, random_state=seed)
    Z, knn, eng = r["embedding"], r["knn"], r["clusterer"]
    if len(knn[0]) != len(Z):  # duplicates: the graph per row, as the engine's criterion saw it
        from mediacluster.stages.hierarchy import _expand_knn

        knn = _expand_knn(knn, r["inverse"])
    A = symmetric_adjacency(knn[0])
    # PLSCAN layers on Z
    p = fast_hdbscan.PLSCAN(reproducible=True).fit(Z.astype(np.float64))
    lay = [assign_in(Z, lv) for lv in p.cluster_layers_]
    add("PLSCAN layers (fast_hdbscan), most persistent layer", lay,
        int(np.argmax(p.layer_persistence_scores_)), "noise assigned by a kNN vote in Z")
    # one Ward tree over cells, three criteria
    ward = HierarchyClusterer(min_cluster_size=len(Z), random_state=seed).fit(Z, knn=knn)
    lv = ward.levels_
    rng = np.random.default_rng(seed)
    samp = rng.choice(len(Z), min(3000, len(Z)), replace=False)
    sil = [silhouette_score(Z[samp], x[samp]) if len(np.unique(x[samp])) > 1 else -1 for x in lv]
    add("cells + Ward, silhouette of Z", lv, int(np.argmax(sil)))
    add("cells + Ward, modularity of the input kNN graph", lv, int(ward.auto_level_))
    add("cells + Ward, map equation of the input kNN graph", lv, int(np.argmin([map_equation(A, x) for x in lv])))
    # EVoC layers on the raw vectors
    import evoc

    from mediacluster.stages.evoc import assign_noise_by_neighbours

    e = evoc.EVoC(random_state=seed).fit(X)
    ev = [assign_noise_by_neighbours(x, np.asarray(e.nn_inds_), np.asarray(e.nn_dists_), X)
          for x in e.cluster_layers_]
    add("EVoC layers, most persistent layer", ev, int(np.argmax(e.persistence_scores_)) if len(ev) > 1 else 0)
    add("engine: density groups + modularity", eng.levels_, int(eng.auto_level_),
        f"{eng.n_groups_} density groups")
    return rows


def markdown(res):
    lines = [SECTION, "",
             "One reduced space per set (the engine's reducer, seed 0) and the input kNN graph, "
             "shared by every design on it; EVoC runs on the raw vectors. *pick* = the design's own "
             "label-free choice, *best* = its best level by NMI (oracle). NMI over all items, every "
             "item assigned. Produced by `benchmarks/engine_designs.py` (definitions there).", "",
             "Command: " + "; ".join(f"`{c}`" for c in res["commands"]) + f" (finished {res['finished']}).", ""]
    names = list(res["datasets"])
    designs_ = [r["design"] for r in next(iter(res["datasets"].values()))]
    lines += ["| design | " + " | ".join(f"{n} pick | {n} best" for n in names) + " | worst pick - best |",
              "|---|" + "---|---|" * len(names) + "---|"]
    for d in designs_:
        cells, regrets = [], []
        for n in names:
            r = next(x for x in res["datasets"][n] if x["design"] == d)
            cells += [f"{r['pick_nmi']:.3f} ({r['pick_k']})", f"{r['best_nmi']:.3f} ({r['best_k']})"]
            regrets.append(r["pick_nmi"] - r["best_nmi"])
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {min(regrets):+.3f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["imagenette-val", "cifar10-test", "mnist-test",
                                                       "sports100", "openmoji"])
    _results.add_data_args(ap, seed=True)
    ap.add_argument("--vectors-from", type=Path, default=None, help="DEVELOPMENT ONLY")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)
    if args.write_results and args.vectors_from is not None:
        ap.error("--write-results is refused with --vectors-from")
    from mediacluster.fileio import setup_numba_cache

    setup_numba_cache()
    import quality


    res = {"commands": [_results.command("engine_designs.py", argv)],
           "datasets": {}}
    for name in args.datasets:
        X, y, _ = quality.load_dataset(name, args.out, args.shared, args.vectors_from, False)
        print(f"[{name}] n={len(X)}", file=sys.stderr, flush=True)
        res["datasets"][name] = designs(X, y, args.seed)
    _results.finish(res, SECTION, markdown, args.write_results,
                    args.out / ("engine-designs.json" if args.vectors_from is None else "engine-designs-dev.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
