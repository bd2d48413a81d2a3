"""Where the engine's levels lose to K-means told k, and a tree rebuilt around a refined cut.

Question (issue 16, session 20, treecut helper): on Imagenette the engine's *best* level scores
below UMAP+K-means told k; is the loss in the layout (the engine's UMAP: 15 neighbours, 200
epochs, PCA start, cosine; the baselines': 30 neighbours, default epochs) or in the tree (Ward
of K-means cells inside HDBSCAN density groups, then of the groups)?

``prep`` fits, per collection (the five whole sets and the subset draws of ``subsets.py``, as
``fast_layout.py`` draws them), the engine's kNN graph and layout ``Z`` exactly as
``stages.hierarchy.reduce_and_cluster`` does, and the baselines' UMAP space (``quality.py``'s
``_umap_space``), and caches them (``--cache``). Everything else works on the cache:

``diag`` for k = the true class count and k = the auto level's count: NMI of (a) the tree's cut
at k (the tree is cut at any count: ``_level_counts`` is given the extra counts), (b) K-means on
``Z`` told k (``KMeansClusterer``, as quality.py's rows), (c) K-means on the baselines' UMAP space
told k, (d) the cut at k of a tree built without the density groups (Ward of all cells).

``fix`` fits the hierarchy with a *design* on the cached ``Z`` (same kNN graph, same input
vectors for the agreement check) and records the auto level's and the best level's NMI:

* ``base``: today's ``HierarchyClusterer``.
* ``km``: the modularity cut (k clusters) refined by K-means on ``Z`` seeded from the cut's
  centroids (Lloyd to convergence); the tree rebuilt around it: the leaves are the (cell,
  refined cluster) pieces, Ward inside each refined cluster, Ward of the refined clusters inside
  each density group (a refined cluster's group: where most of its items are), Ward of the
  groups. The refined clusters are the modularity level; the agreement check then runs as today.
* ``grid`` / ``gridc``: today's tree, cut at every cluster count from half the modularity level's
  count to twice it (``gridc``: to the count itself), besides today's counts: the agreement check
  (whose window is that range) and the best level then see every count there.
* ``cells2`` / ``cells.5``: today's tree on twice / half today's number of K-means cells.
* ``kmg``: as ``km``, but each density group's clusters of the cut are refined by K-means on
  that group's items only (the density groups stay exactly as HDBSCAN drew them).

Usage::

    B="python benchmarks/treecut.py --vectors-from /work/vec --cache /tmp/treecut"
    flock /tmp/mc-engine.lock $B prep --cases whole --baseline imagenette-val openmoji
    flock /tmp/mc-engine.lock $B prep --cases subsets
    $B diag --cases whole subsets
    $B fix --cases whole subsets --designs base km kmg
    $B rules --cases whole subsets --designs base gridc   # other move rules of the agreement check
    $B rules --cases whole subsets --designs base gridc --check-ninit 4   # ... and less spread
    $B timing --designs base km        # the cluster step's CPU seconds at 10,000 (CIFAR-10 test)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fast_layout as fl  # noqa: E402  (the benchmarks folder is not a package)
import level_stability as ls  # noqa: E402
import subsets  # noqa: E402


def nmi(y, lab):
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(y, lab))


# ------------------------------------------------------------------------------------------
# the engine's pieces, cached
# ------------------------------------------------------------------------------------------
def cmd_prep(args):
    import warnings

    import quality

    from mediacluster.stages.hierarchy import ENGINE_REDUCER, _expand_knn, unique_rows
    from mediacluster.stages.neighbors import knn_graph
    from mediacluster.stages.reduce import UMAPReducer

    args.cache.mkdir(parents=True, exist_ok=True)
    for key in fl.keys_of(args.cases, args.draws):
        p = args.cache / f"{key}.npz"
        if p.exists() and not args.force:
            continue
        X, y = ls.collection(key, args)
        t = time.perf_counter()
        U, inv, _ = unique_rows(X)
        knn = knn_graph(U, 15, metric="cosine", method="auto")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            P = ENGINE_REDUCER
            Z = UMAPReducer(n_neighbors=15, n_components=P["n_components"], min_dist=P["min_dist"],
                            metric=P["metric"], n_epochs=P["n_epochs"], init=P["init"],
                            random_state=0).fit(U, precomputed_knn=knn).embedding_
        kidx, kdist = _expand_knn(knn, inv) if len(U) < len(X) else knn
        te = time.perf_counter() - t
        np.savez(p, Z=np.asarray(Z, np.float32)[inv], kidx=kidx, kdist=kdist)
        print(f"{key}: n={len(X)} engine layout {te:.1f}s", flush=True)
    for key in fl.keys_of(args.baseline, args.draws):  # the baselines' UMAP space: slow (500 epochs below 10k)
        p = args.cache / f"{key}.base.npz"
        if p.exists() and not args.force:
            continue
        X, y = ls.collection(key, args)
        t = time.perf_counter()
        quality._umap_space.cache = None
        Zb, _ = quality._umap_space(X, 0)
        np.savez(p, Zb=np.asarray(Zb, np.float32))
        print(f"{key}: baselines' UMAP {time.perf_counter() - t:.1f}s", flush=True)


def cached(key, args):
    X, y = ls.collection(key, args)
    d = np.load(args.cache / f"{key}.npz")
    b = args.cache / f"{key}.base.npz"
    Zb = np.load(b)["Zb"] if b.exists() else None
    return X, y, d["Z"], Zb, (d["kidx"], d["kdist"])


# ------------------------------------------------------------------------------------------
# designs of the tree
# ------------------------------------------------------------------------------------------
def _ward_layers(tree, centres, sizes, members):
    """Ward of the nodes ``members`` (tree nodes) with their ``centres`` / ``sizes``; returns
    (root node, its centre, its size, the new internal nodes)."""
    from mediacluster.stages.hierarchy import weighted_ward

    node_of = list(members)
    new = []
    for a, b, h in weighted_ward(np.asarray(centres), np.asarray(sizes, np.float64)):
        v = tree.add(node_of[a], node_of[b], h)
        node_of.append(v)
        new.append(v)
    w = np.asarray(sizes, np.float64)
    return node_of[-1], (np.asarray(centres) * w[:, None]).sum(0) / w.sum(), w.sum(), new


def build_three(centres, sizes, cluster_of_leaf, group_of_cluster):
    """Ward of the leaves inside each cluster, of the clusters inside each group, of the groups.
    Returns (tree, root, above: nodes above the group roots, mid: nodes between the group roots
    and the cluster roots (inclusive of the group roots that merge two clusters))."""
    from mediacluster.stages.hierarchy import _Tree

    tree = _Tree(len(centres))
    croot, cc, cw = {}, {}, {}
    for c in np.unique(cluster_of_leaf):
        leaves = np.flatnonzero(cluster_of_leaf == c)
        croot[c], cc[c], cw[c], _ = _ward_layers(tree, centres[leaves], sizes[leaves], leaves.tolist())
    groots, gc, gw, mid = [], [], [], set()
    for g in np.unique([group_of_cluster[c] for c in croot]):
        cs = [c for c in croot if group_of_cluster[c] == g]
        r, c_, w_, new = _ward_layers(tree, [cc[c] for c in cs], [cw[c] for c in cs], [croot[c] for c in cs])
        groots.append(r)
        gc.append(c_)
        gw.append(w_)
        mid.update(new)
    above = set()
    if len(groots) > 1:
        _, _, _, new = _ward_layers(tree, gc, gw, groots)
        above.update(new)
    return tree, tree.n_nodes - 1, above, mid, len(groots)


CELLS = {"cells2": 2.0, "cells.5": 0.5}  # today's number of cells (4 sqrt(n), at most 1,000) times this
GRIDS = {"grid": (0.5, 2.0), "gridc": (0.5, 1.0)}  # every count in [lo * k_auto, hi * k_auto] a level


class Designed:
    """A ``HierarchyClusterer`` whose tree is rebuilt around a refined modularity cut."""

    def __init__(self, design):
        self.design = design

    def fit(self, Z, knn, vectors, seed=0):
        from sklearn.cluster import KMeans

        from mediacluster.stages import hierarchy as h
        from mediacluster.stages.cluster import single_blas_thread

        cells = CELLS.get(self.design)
        cl = h.HierarchyClusterer(random_state=seed, n_cells=None if cells is None else int(
            min(h.MAX_CELLS * cells, max(2, round(4 * cells * math.sqrt(len(Z)))))))
        if self.design == "base" or cells is not None:
            return cl.fit(Z, knn=knn, vectors=vectors)
        if self.design in GRIDS:
            lo, hi = GRIDS[self.design]
            orig = h._level_counts

            def counts(L, extra):  # extra = [k_groups, k_auto]
                ka = int(extra[-1])
                return sorted(set(orig(L, extra)) | {k for k in range(max(2, math.ceil(ka * lo)), int(ka * hi) + 1)
                                                     if k < L})
            h._level_counts = counts
            try:
                return cl.fit(Z, knn=knn, vectors=vectors)
            finally:
                h._level_counts = orig
        # today's fit, up to the modularity cut
        Z = h.validate_input(cl, Z, reset=True)
        U, inv, counts = h.unique_rows(Z)
        cl._train_ = Z
        A = cl._graph(Z, knn)
        cl._min_samples_ = int(np.asarray(knn[0]).shape[1])
        leaf_of_item, centres, sizes, group_of_leaf, noise = cl._leaves(Z, U, inv, counts)
        tree, roots, above = h._build_tree(centres, sizes, group_of_leaf)
        root = tree.n_nodes - 1
        inw, vol, m2 = h._node_graph_stats(tree, leaf_of_item, A)
        q = inw / m2 - (vol / m2) ** 2
        accepted = h._best_cut(tree, q, above, root)
        cut = {root: 0}
        for v in sorted(accepted, key=lambda v: -v):  # parents (higher ids) first
            c = cut.pop(v)
            a, b = tree.children(v)
            cut[a] = c
            cut[b] = len(cut)
        P0 = h._cut_labels(tree, cut)[leaf_of_item]
        k = int(P0.max()) + 1
        group = group_of_leaf[leaf_of_item]
        P = P0.copy()
        with single_blas_thread():
            if self.design == "km" and k > 1:
                C0 = np.stack([Z[P0 == c].mean(0) for c in range(k)])
                P = KMeans(n_clusters=k, init=C0, n_init=1, random_state=seed).fit(Z).labels_
            elif self.design == "kmg":
                for g in np.unique(group):
                    rows = np.flatnonzero(group == g)
                    cs = np.unique(P0[rows])
                    if len(cs) < 2:
                        continue
                    C0 = np.stack([Z[rows][P0[rows] == c].mean(0) for c in cs])
                    lab = KMeans(n_clusters=len(cs), init=C0, n_init=1, random_state=seed).fit(Z[rows]).labels_
                    P[rows] = cs[lab]
        _, P = np.unique(P, return_inverse=True)
        P = P.ravel()
        # leaves: (cell, refined cluster, group) pieces
        cell = _cells(cl, Z, U, inv, counts)
        key = (cell.astype(np.int64) * (P.max() + 1) + P) * (group.max() + 1) + group
        _, leaf = np.unique(key, return_inverse=True)
        leaf = leaf.ravel()
        L = int(leaf.max()) + 1
        sz = np.bincount(leaf, minlength=L).astype(np.float64)
        ce = np.zeros((L, Z.shape[1]))
        np.add.at(ce, leaf, Z.astype(np.float64))
        ce /= sz[:, None]
        cl_of_leaf = np.zeros(L, np.int64)
        cl_of_leaf[leaf] = P
        g_of_cluster = {c: int(np.bincount(group[P == c]).argmax()) for c in np.unique(P)}
        tree, root, above, mid, n_groups = build_three(ce, sz, cl_of_leaf, g_of_cluster)
        cl._make_levels(tree, root, above, above | mid, leaf, n_groups)
        cl.level_scores_ = np.array([h.modularity(A, lv) for lv in cl.levels_])
        cl.modularity_level_ = cl.auto_level_
        cl.auto_level_, cl.agreement_scores_ = h.agreement_level(cl.levels_, cl.auto_level_, vectors,
                                                                 random_state=seed)
        cl.unclustered_ = noise
        cl._build_index()
        cl._probabilities(Z)
        cl._select()
        return cl


def _cells(cl, Z, U, inv, counts):
    """The K-means cells of ``HierarchyClusterer._leaves`` (same seed and settings)."""
    import math

    from sklearn.cluster import KMeans

    from mediacluster.stages import hierarchy as h
    from mediacluster.stages.cluster import single_blas_thread

    n_cells = int(min(min(h.MAX_CELLS, max(2, round(4 * math.sqrt(len(Z))))), len(U)))
    with single_blas_thread():
        km = KMeans(n_clusters=n_cells, n_init=1, init="random", max_iter=20, random_state=cl.random_state)
        return km.fit(U, sample_weight=counts).labels_[inv]


# ------------------------------------------------------------------------------------------
def cmd_diag(args):
    from mediacluster.stages import hierarchy as h
    from mediacluster.stages.cluster import KMeansClusterer

    rows = []
    orig, build = h._level_counts, h._build_tree
    for key in fl.keys_of(args.cases, args.draws):
        X, y, Z, Zb, knn = cached(key, args)
        k_true = len(np.unique(y))
        cl0 = h.HierarchyClusterer(random_state=0).fit(Z, knn=knn, vectors=X)
        k_auto = int(cl0.labels_.max()) + 1
        extra = [k_true, k_auto]
        h._level_counts = lambda L, ex, _e=extra: orig(L, list(ex) + _e)
        try:
            cl = h.HierarchyClusterer(random_state=0).fit(Z, knn=knn, vectors=None)
            h._build_tree = lambda c, s, g: build(c, s, np.zeros_like(g))
            try:
                cn = h.HierarchyClusterer(random_state=0).fit(Z, knn=knn, vectors=None)
            finally:
                h._build_tree = build
        finally:
            h._level_counts = orig
        rec = {"key": key, "n": len(X), "k_true": k_true, "k_auto": k_auto, "auto": nmi(y, cl0.labels_),
               "best": max(nmi(y, lv) for lv in cl0.levels_)}
        for tag, k in (("true", k_true), ("auto", k_auto)):
            lv = cl.levels_[cl.level_with(k)]
            rec[f"tree@{tag}"] = nmi(y, lv) if int(lv.max()) + 1 == k else float("nan")
            lv = cn.levels_[cn.level_with(k)]
            rec[f"nogroups@{tag}"] = nmi(y, lv) if int(lv.max()) + 1 == k else float("nan")
            rec[f"kmZ@{tag}"] = nmi(y, KMeansClusterer(n_clusters=k, random_state=0).fit(Z).labels_)
            rec[f"kmZb@{tag}"] = nmi(y, KMeansClusterer(n_clusters=k, random_state=0).fit(Zb).labels_) \
                if Zb is not None else float("nan")
        rows.append(rec)
        print(json.dumps({a: (round(b, 3) if isinstance(b, float) else b) for a, b in rec.items()}), flush=True)
    cols = ["auto", "best", "tree@true", "nogroups@true", "kmZ@true", "kmZb@true",
            "tree@auto", "nogroups@auto", "kmZ@auto", "kmZb@auto"]
    print("\n| collection | k true / auto | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    groups = {}
    for r in rows:
        groups.setdefault(r["key"].split("#")[0], []).append(r)
    for g, rs in groups.items():
        kk = "/".join(str(r["k_true"]) for r in rs[:1]) + " / " + "/".join(str(r["k_auto"]) for r in rs)
        print(f"| {g} | {kk} | " + " | ".join(f"{np.nanmean([r[c] for r in rs]):.3f}" for c in cols) + " |")
    for label, sel in (("whole sets, mean", ls.WHOLE), ("subset collections, mean", list(subsets.CASES))):
        gs = [g for g in groups if g in sel]
        if gs:
            print(f"| **{label}** | | " + " | ".join(
                f"{np.mean([np.nanmean([r[c] for r in groups[g]]) for g in gs]):.3f}" for c in cols) + " |")


def cmd_fix(args):
    args.out_dir.mkdir(parents=True, exist_ok=True)
    res = {}
    for key in fl.keys_of(args.cases, args.draws):
        X, y, Z, _, knn = cached(key, args)
        for d in args.designs:
            p = args.out_dir / f"{key}@{d}.json"
            if p.exists() and not args.force:
                res[key, d] = json.loads(p.read_text())
                continue
            c = time.process_time()
            cl = Designed(d).fit(Z, knn, X)
            cpu = time.process_time() - c
            sc = [nmi(y, lv) for lv in cl.levels_]
            nested = all((p_[lv2] == lv1).all() for p_, lv1, lv2 in zip(cl.parents_, cl.levels_[:-1], cl.levels_[1:]))
            rec = {"key": key, "design": d, "auto": nmi(y, cl.labels_), "auto_k": int(cl.labels_.max()) + 1,
                   "mod_k": int(cl.levels_[cl.modularity_level_].max()) + 1, "best": max(sc),
                   "best_k": int(cl.levels_[int(np.argmax(sc))].max()) + 1, "groups": int(cl.n_groups_),
                   "nested": bool(nested), "cpu": cpu}
            p.write_text(json.dumps(rec))
            np.savez_compressed(p.with_suffix(".npz"), levels=cl.levels_, scores=cl.agreement_scores_,
                                mod=cl.modularity_level_, auto=cl.auto_level_)
            res[key, d] = rec
            print(json.dumps({a: (round(b, 3) if isinstance(b, float) else b) for a, b in rec.items()}), flush=True)
    table(args, res)


def table(args, res):
    ds = args.designs
    keys = fl.keys_of(args.cases, args.draws)
    groups = {}
    for key in keys:
        groups.setdefault(key.split("#")[0], []).append(key)
    print("\n| collection | " + " | ".join(f"{d}: auto (k) / best" for d in ds) + " |")
    print("|---|" + "---|" * len(ds))
    means = {d: {} for d in ds}
    for g, ks in groups.items():
        cells = []
        for d in ds:
            rs = [res.get((k, d)) for k in ks]
            if any(r is None for r in rs):
                cells.append("")
                continue
            a, b = np.mean([r["auto"] for r in rs]), np.mean([r["best"] for r in rs])
            means[d][g] = (a, b)
            cells.append(f"{a:.3f} ({'/'.join(str(r['auto_k']) for r in rs)}) / {b:.3f}")
        print(f"| {g} | " + " | ".join(cells) + " |")
    for label, sel in (("whole sets, mean", ls.WHOLE), ("subset collections, mean", list(subsets.CASES))):
        cells = []
        for d in ds:
            v = [means[d][g] for g in sel if g in means[d]]
            cells.append(f"{np.mean([a for a, _ in v]):.3f} / {np.mean([b for _, b in v]):.3f}" if v else "")
        print(f"| **{label}** | " + " | ".join(cells) + " |")
    for label, sel in (("worst whole-set change (auto)", ls.WHOLE), ("worst subset change (auto)", list(subsets.CASES))):
        cells = []
        for d in ds:
            dd = [means[d][g][0] - means[ds[0]][g][0] for g in sel if g in means[d] and g in means[ds[0]]]
            cells.append(f"{min(dd):+.3f}" if dd else "")
        print(f"| {label} vs {ds[0]} | " + " | ".join(cells) + " |")
    cells = []
    for d in ds:
        rs = [r for (k, d_), r in res.items() if d_ == d]
        cells.append(f"{sum(r['nested'] for r in rs)}/{len(rs)}")
    print("| nested levels | " + " | ".join(cells) + " |")


RULES = {  # the agreement check's move rule, given the best candidate b and the modularity level a
    "today": lambda gain, sb, sa, m: gain > sb + sa,          # gain beyond both levels' sd
    "se2": lambda gain, sb, sa, m: gain > 2 * np.hypot(sb, sa) / np.sqrt(m),  # 2 standard errors
    "argmax": lambda gain, sb, sa, m: gain > 0,
}


def cmd_rules(args):
    """The agreement check's pick under other move rules, on the levels and scores ``fix`` saved
    (design ``--designs``); NMI of the level each rule picks (auto level's mean per collection)."""
    from mediacluster.stages.hierarchy import AGREEMENT_SEEDS

    keys = fl.keys_of(args.cases, args.draws)
    for d in args.designs:
        out = {r: {} for r in RULES}
        for key in keys:
            z = np.load(args.out_dir / f"{key}@{d}.npz")
            _, y = ls.collection(key, args)
            levels, sc, mod = z["levels"], z["scores"], int(z["mod"])
            if args.check_ninit > 1:  # the check's scores again, each start the best of n_init K-means runs
                from sklearn.cluster import KMeans

                from mediacluster.stages.hierarchy import agreement_level

                X, _ = ls.collection(key, args)
                fit0 = KMeans.fit

                def fit_n(self, *a, _f=fit0, **kw):  # the check's own code, its K-means given n_init starts
                    self.n_init = args.check_ninit
                    return _f(self, *a, **kw)
                KMeans.fit = fit_n
                try:
                    _, sc = agreement_level(levels, mod, X, random_state=0)
                finally:
                    KMeans.fit = fit0
            ok = ~np.isnan(sc[:, 0])
            for r, rule in RULES.items():
                lv = mod
                if ok.sum() >= 2 and ok[mod]:
                    b = max(np.flatnonzero(ok), key=lambda i: (round(float(sc[i, 0]), 6), i == mod))
                    if b != mod and rule(sc[b, 0] - sc[mod, 0], sc[b, 1], sc[mod, 1], AGREEMENT_SEEDS):
                        lv = b
                out[r].setdefault(key.split("#")[0], []).append((nmi(y, levels[lv]), int(levels[lv].max()) + 1))
        print(f"\n{d}: | collection | " + " | ".join(RULES) + " |")
        for g in out["today"]:
            print(f"| {g} | " + " | ".join(f"{np.mean([a for a, _ in out[r][g]]):.3f} "
                                          f"({'/'.join(str(k) for _, k in out[r][g])})" for r in RULES) + " |")
        for label, sel in (("whole sets, mean", ls.WHOLE), ("subset collections, mean", list(subsets.CASES))):
            print(f"| **{label}** | " + " | ".join(
                f"{np.mean([np.mean([a for a, _ in out[r][g]]) for g in out[r] if g in sel]):.3f}" for r in RULES) + " |")


def cmd_timing(args):
    """CPU seconds of the cluster step (hierarchy fit incl. the agreement check) at 10,000, each
    design run ``--repeats`` times, interleaved; the median is reported."""
    key = "cifar10-test"
    X, y, Z, _, knn = cached(key, args)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    t = {d: [] for d in args.designs}
    labs = {}
    for _ in range(args.repeats):
        for d in args.designs:
            c = time.process_time()
            cl = Designed(d).fit(Z, knn, X)
            t[d].append(time.process_time() - c)
            if d in labs:
                assert (labs[d] == cl.labels_).all(), "not reproducible"
            labs[d] = cl.labels_.copy()
    for d in args.designs:
        print(f"| {d} | {np.median(t[d]):.2f} | {' '.join(f'{x:.2f}' for x in t[d])} |")
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["prep", "diag", "fix", "rules", "timing"])
    ap.add_argument("--cases", nargs="*", default=["whole"])
    ap.add_argument("--baseline", nargs="*", default=[], help="prep: also the baselines' UMAP space of these")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--designs", nargs="+", default=["base", "km", "kmg"])
    ap.add_argument("--check-ninit", type=int, default=1,
                    help="rules: recompute the agreement scores, each start the best of this many K-means runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/treecut"))
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/treecut/fix"))
    ap.add_argument("--shared", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quality"))
    ap.add_argument("--vectors-from", type=Path, default=None)
    args = ap.parse_args(argv)
    from mediacluster.fileio import setup_numba_cache

    setup_numba_cache()
    {"prep": cmd_prep, "diag": cmd_diag, "fix": cmd_fix, "rules": cmd_rules, "timing": cmd_timing}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
