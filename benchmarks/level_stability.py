"""Stability of the engine's levels, and rules that choose the default level from it.

Question (issue 16, session 8): the auto level (modularity of the input kNN graph over the Ward
tree, density groups never merged) is often one level too fine; stability across UMAP seeds
separates good from bad levels, but three full layouts cost too much time. This measures cheap
ways to get a stability signal and whether a label-free rule on it beats the current criterion.

For every collection (the five whole sets and the nine collections of ``subsets.py``, three
draws each) the engine is fitted once (``reduce_and_cluster``, seed 0; the *main* fit). Then
each *signal* refits R times and compares the main fit's tree with the refit's tree, restricted
to the refit's items:

* ``relayout``  the whole engine with seed r (a full re-layout, 200 epochs; the reference)
* ``fast50``    the whole engine with seed r and 50 layout epochs instead of 200
* ``sub2000``   the whole engine with seed r on a random subsample of min(n, 2,000) items
* ``pair2000``  as ``sub2000`` but one fixed subsample; the refits are compared with EACH
                OTHER (not with the main fit)
* ``pert``      no new layout: ``HierarchyClusterer(random_state=r)`` on a random half of the
                main fit's own coordinates (its input kNN graph recomputed on that half)

Stability of a level with k clusters = mean ARI between the main fit's level and the refit's
cut at the same k (the refit's split order, so any k exists). Stability of a cluster = its
best Jaccard with a cluster of the refit's cut at the same count (mean over refits).

Rules (each uses one signal; no constant fitted to these sets):

* ``window``    the auto level or its next coarser level, whichever is more stable
* ``window-g``  the same, never coarser than the density groups
* ``cliff-g``   the next coarser level when the stability lost by the auto level's own split
                (coarser -> auto) exceeds the stability lost by the next finer one
                (auto -> finer); never coarser than the density groups
* ``undo.5`` / ``undo.75``  at the auto cut, merge back every split inside a density group
                whose two parts are clusters of the cut and one of them is not reproduced
                (mean best Jaccard < .5: Hennig's "dissolved"; < .75: not "stable"), repeated
                at the new count until none is left

Usage (each step caches under ``--cache``; a later step reuses what exists)::

    python benchmarks/level_stability.py fit --cases all
    python benchmarks/level_stability.py signal relayout --resamples 2 --cases all
    python benchmarks/level_stability.py table --signals relayout fast50 sub2000 pert
    python benchmarks/level_stability.py levels --cases imagenette-val mnist-test
    python benchmarks/level_stability.py timing      # 10k: engine, EVoC, each signal's cost

``--vectors-from DIR`` (development) reads ``DIR/<set>.npz`` (arrays ``vectors``, ``labels``)
instead of embedding through the package (``quality.load_dataset``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import pickle
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (the benchmarks folder is not a package)
import quality  # noqa: E402
import subsets  # noqa: E402

WHOLE = ["imagenette-val", "cifar10-test", "mnist-test", "sports100", "openmoji"]
ALIASES = {"imagenette-val": "imagenette", "mnist-test": "mnist"}  # /work/vec file names
SIGNALS = ["relayout", "fast50", "sub2000", "pair2000", "pert"]
RULES = ["window", "window-g", "cliff-g", "undo.5", "undo.75"]


# ------------------------------------------------------------------------------------------
# the main fit's tree
# ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def recording_trees():
    """While active, every ``HierarchyClusterer`` fit keeps its tree in ``_tree_record``
    (``_make_levels`` receives it and the fitted estimator does not keep it)."""
    from mediacluster.stages import hierarchy as H

    orig = H.HierarchyClusterer._make_levels

    def make_levels(self, tree, root, above, accepted, leaf_of_item, n_groups):
        self._tree_record = dict(tree=tree, root=root, above=set(above), accepted=set(accepted),
                                 leaf=np.asarray(leaf_of_item))
        return orig(self, tree, root, above, accepted, leaf_of_item, n_groups)

    H.HierarchyClusterer._make_levels = make_levels
    try:
        yield
    finally:
        H.HierarchyClusterer._make_levels = orig


class Tree:
    """One fit's tree: leaves of items, node membership, split order, cut at any count."""

    def __init__(self, clusterer):
        d = clusterer._tree_record
        self.tree, self.root, self.leaf = d["tree"], d["root"], d["leaf"]
        self.above, self.accepted = d["above"], d["accepted"]
        t = self.tree
        L, N = t.L, t.n_nodes
        M = np.zeros((N, L), bool)
        M[np.arange(L), np.arange(L)] = True
        for v in range(L, N):
            a, b = t.children(v)
            M[v] = M[a] | M[b]
        self.M = M
        h = {v: t.height[v - L] for v in range(L, N)}
        p0 = sorted(self.above, key=lambda v: -h[v])
        p1 = sorted(self.accepted - self.above, key=lambda v: -h[v])
        rest = sorted(set(range(L, N)) - self.accepted - self.above, key=lambda v: -h[v])
        self.order = p0 + p1 + rest  # the split order of HierarchyClusterer._make_levels
        self.k_groups = 1 + len(p0)
        self.k_auto = self.k_groups + len(p1)
        self.levels = clusterer.levels_
        self.counts = clusterer.n_clusters_per_level_
        self.auto = clusterer.auto_level_

    def cut_nodes(self, k):
        cut = {self.root}
        for v in self.order[:max(0, k - 1)]:
            cut.remove(v)
            cut.update(self.tree.children(v))
        return cut

    def labels_of(self, nodes):
        lab_leaf = np.full(self.tree.L, -1)
        for c, v in enumerate(sorted(nodes)):
            lab_leaf[self.M[v]] = c
        return lab_leaf[self.leaf]

    def cut(self, k):
        return self.labels_of(self.cut_nodes(k))


def engine_tree(X, seed, reducer=None):
    from mediacluster.stages.hierarchy import reduce_and_cluster

    with recording_trees(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = reduce_and_cluster(X, random_state=seed, reducer=reducer)
    return Tree(r["clusterer"]), r


# ------------------------------------------------------------------------------------------
# collections
# ------------------------------------------------------------------------------------------
_data: dict = {}


def load(name, args):
    if name not in _data:
        vf = args.vectors_from
        if vf is not None and not (vf / f"{name}.npz").exists():
            d = np.load(vf / f"{ALIASES.get(name, name)}.npz", allow_pickle=False)
            _data[name] = (d["vectors"].astype(np.float32), np.asarray(d["labels"]).astype(str))
        else:
            V, lab, _ = quality.load_dataset(name, args.out, args.shared, vf, progress=False)
            _data[name] = (V, np.asarray(lab).astype(str))
    return _data[name]


def collection_keys(cases, draws):
    for c in cases:
        if c in WHOLE:
            yield c
        else:
            for d in range(draws):
                yield f"{c}#{d}"


def collection(key, args):
    if key in WHOLE:
        return load(key, args)
    case, d = key.rsplit("#", 1)
    Xs, ys = [], []
    for s, (name, how) in enumerate(subsets.CASES[case]):
        V, lab = load(name, args)
        idx = subsets.draw(lab, 1000 * int(d) + s, **how)  # the draws of subsets.py
        Xs.append(V[idx])
        ys.extend(f"{name}/{v}" for v in lab[idx])
    return np.vstack(Xs), np.asarray(ys)


def cache_path(args, key, what):
    return args.cache / f"{key}@{what}.pkl"


def cached(args, key, what):
    p = cache_path(args, key, what)
    if not p.exists():
        return None
    with open(p, "rb") as f:
        return pickle.load(f)


def store(args, key, what, obj):
    args.cache.mkdir(parents=True, exist_ok=True)
    with open(cache_path(args, key, what), "wb") as f:
        pickle.dump(obj, f)


# ------------------------------------------------------------------------------------------
# signals
# ------------------------------------------------------------------------------------------
def refit(signal, X, main_Z, seed):
    """(refit tree, indices of X it covers)."""
    from mediacluster.stages.hierarchy import HierarchyClusterer
    from mediacluster.stages.neighbors import knn_graph

    n = len(X)
    if signal == "relayout":
        return engine_tree(X, seed)[0], np.arange(n)
    if signal.startswith("fast"):
        return engine_tree(X, seed, reducer={"n_epochs": int(signal[4:])})[0], np.arange(n)
    if signal.startswith(("sub", "pair")):
        size = int(signal.lstrip("subpair"))
        rng = np.random.default_rng(seed if signal.startswith("sub") else 0)
        S = np.sort(rng.choice(n, min(n, size), replace=False))
        return engine_tree(X[S], seed)[0], S
    if signal == "pert":
        S = np.sort(np.random.default_rng(seed).choice(n, n // 2, replace=False))
        with recording_trees():
            cl = HierarchyClusterer(random_state=seed).fit(main_Z[S], knn=knn_graph(X[S], 15))
        return Tree(cl), S
    raise SystemExit(f"unknown signal {signal!r}")


def level_ari(main: Tree, refits):
    """(n_levels,) mean ARI of each main level with the refits' cuts at its count; for the
    pair signals, of the refits' cuts with each other."""
    from sklearn.metrics import adjusted_rand_score as ari

    rows = []
    if refits and refits[0][2] == "pair":
        for (g, _, _), (h, _, _) in itertools.combinations(refits, 2):
            rows.append([ari(g.cut(int(k)), h.cut(int(k))) for k in main.counts])
    else:
        for g, S, _ in refits:
            rows.append([ari(lv[S], g.cut(int(k))) for lv, k in zip(main.levels, main.counts)])
    return np.mean(rows, axis=0)


def cluster_jaccard(main: Tree, nodes, refits):
    """{node: mean over refits of its best Jaccard with a cluster of the refit's cut at the
    same count}."""
    nodes = sorted(nodes)
    lab = main.labels_of(nodes)
    k = len(nodes)
    Js = []
    for g, S, _ in refits:
        a, b = lab[S], g.cut(k)
        kb = int(b.max()) + 1
        C = np.bincount(a * kb + b, minlength=k * kb).reshape(k, kb).astype(float)
        ra, rb = C.sum(1), C.sum(0)
        J = (C / np.maximum(ra[:, None] + rb[None, :] - C, 1e-12)).max(1)
        J[ra == 0] = np.nan
        Js.append(J)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return dict(zip(nodes, np.nanmean(Js, axis=0)))


# ------------------------------------------------------------------------------------------
# rules
# ------------------------------------------------------------------------------------------
def apply_rule(rule, main: Tree, A, refits):
    """Labels chosen by ``rule`` (A = per-level stability)."""
    lv = main.auto
    if rule in ("window", "window-g"):
        cands = [x for x in (lv - 1, lv) if x >= 0 and (rule == "window" or main.counts[x] >= main.k_groups)]
        pick = max(cands, key=lambda x: (round(float(A[x]), 6), x))
        return main.levels[pick]
    if rule == "cliff-g":
        if 1 <= lv < len(A) - 1 and main.counts[lv - 1] >= main.k_groups \
                and A[lv - 1] - A[lv] > A[lv] - A[lv + 1]:
            lv -= 1
        return main.levels[lv]
    if rule.startswith("undo"):
        tau = float(rule[4:])
        cut = main.cut_nodes(main.k_auto)
        within = main.accepted - main.above
        while True:
            J = cluster_jaccard(main, cut, refits)
            undo = [v for v in within if v not in cut and all(c in cut for c in main.tree.children(v))
                    and min(J[c] for c in main.tree.children(v)) < tau]
            if not undo:
                return main.labels_of(cut)
            for v in undo:
                cut -= set(main.tree.children(v))
                cut.add(v)
    raise SystemExit(f"unknown rule {rule!r}")


# ------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------
def cmd_fit(args):
    for key in collection_keys(args.cases, args.draws):
        if cached(args, key, "main") is not None:
            continue
        X, y = collection(key, args)
        t = time.perf_counter()
        tree, r = engine_tree(X, 0)
        store(args, key, "main", dict(tree=tree, y=y, Z=r["embedding"], seconds=time.perf_counter() - t))
        print(f"{key}: n={len(X)} auto {tree.counts[tree.auto]} clusters "
              f"({time.perf_counter() - t:.1f}s)", flush=True)


def cmd_signal(args):
    for key in collection_keys(args.cases, args.draws):
        main = cached(args, key, "main")
        if main is None:
            raise SystemExit(f"{key}: run `fit` first")
        have = cached(args, key, args.signal) or dict(refits=[], seconds=[])
        if len(have["refits"]) >= args.resamples:
            continue
        X, _ = collection(key, args)
        for r in range(len(have["refits"]), args.resamples):
            t = time.perf_counter()
            g, S = refit(args.signal, X, main["Z"], r + 1)
            have["seconds"].append(time.perf_counter() - t)
            have["refits"].append((g, S, "pair" if args.signal.startswith("pair") else "main"))
            store(args, key, args.signal, have)
            print(f"{key} {args.signal} seed {r + 1}: {len(S)} items, refit auto {g.k_auto} "
                  f"({have['seconds'][-1]:.1f}s)", flush=True)


def _nmi(y, lab):
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(y, lab))


def cmd_table(args):
    rows = []
    for key in collection_keys(args.cases, args.draws):
        main = cached(args, key, "main")
        tree, y = main["tree"], main["y"]
        sc = [_nmi(y, lv) for lv in tree.levels]
        best = int(np.argmax(sc))
        row = {"key": key, "auto": (sc[tree.auto], int(tree.counts[tree.auto])),
               "best (oracle)": (sc[best], int(tree.counts[best]))}
        for sig in args.signals:
            st = cached(args, key, sig)
            if st is None:
                raise SystemExit(f"{key}: run `signal {sig}` first")
            refits = st["refits"][:args.resamples]
            A = level_ari(tree, refits)
            for rule in args.rules:
                lab = apply_rule(rule, tree, A, refits)
                row[f"{sig} {rule}"] = (_nmi(y, lab), int(lab.max()) + 1)
        rows.append(row)
    cols = [c for c in rows[0] if c != "key"]
    print("| collection | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for r in rows:
        print(f"| {r['key']} | " + " | ".join(f"{r[c][0]:.3f} ({r[c][1]})" for c in cols) + " |")
    groups = {"whole sets (mean of 5)": [r for r in rows if "#" not in r["key"]]}
    for c in args.cases:
        if c not in WHOLE:
            groups[c] = [r for r in rows if r["key"].startswith(c + "#")]
    print("\n| mean NMI | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for g, rs in groups.items():
        if rs:
            print(f"| {g} | " + " | ".join(f"{np.mean([r[c][0] for r in rs]):.3f}" for c in cols) + " |")
    sub = [rs for g, rs in groups.items() if not g.startswith("whole") and rs]
    if sub:
        print("| subset collections (mean of the case means) | " + " | ".join(
            f"{np.mean([np.mean([r[c][0] for r in rs]) for rs in sub]):.3f}" for c in cols) + " |")
    whole = groups["whole sets (mean of 5)"]
    if whole:
        print("| worst whole-set change vs auto | " + " | ".join(
            f"{min(r[c][0] - r['auto'][0] for r in whole):+.3f}" for c in cols) + " |")


def cmd_levels(args):
    for key in collection_keys(args.cases, args.draws):
        main = cached(args, key, "main")
        tree, y = main["tree"], main["y"]
        A = {}
        for sig in args.signals:
            st = cached(args, key, sig)
            if st is not None:
                A[sig] = level_ari(tree, st["refits"][:args.resamples])
        print(f"\n{key} (auto level {tree.counts[tree.auto]} clusters, density groups {tree.k_groups})\n")
        print("| clusters | NMI | " + " | ".join(A) + " |")
        print("|" + "---|" * (len(A) + 2))
        for lv, k in enumerate(tree.counts):
            if k > max(3 * tree.counts[tree.auto], 40):
                break
            mark = "**" if lv == tree.auto else ""
            print(f"| {mark}{k}{mark} | {_nmi(y, tree.levels[lv]):.3f} | "
                  + " | ".join(f"{a[lv]:.3f}" for a in A.values()) + " |")


def cmd_timing(args):
    """Engine fit, EVoC default and each signal's extra cost on CIFAR-10 test (10,000 items),
    one process, each timed twice and the second reported. The re-layout signals reuse the
    engine's kNN graph (as an implementation would)."""
    import evoc

    from mediacluster.stages.hierarchy import ENGINE_REDUCER, HierarchyClusterer
    from mediacluster.stages.neighbors import knn_graph
    from mediacluster.stages.reduce import UMAPReducer

    X, _ = load("cifar10-test", args)
    st = {}

    def clock(fn):
        for _ in range(2):
            t, c = time.perf_counter(), time.process_time()
            fn()
            w, cpu = time.perf_counter() - t, time.process_time() - c
        return w, cpu

    def eng():
        st["r"] = engine_tree(X, 0)[1]

    def relayout(epochs, size=None):
        def f():
            for s in (1, 2):
                S = np.arange(len(X)) if size is None else np.sort(
                    np.random.default_rng(s).choice(len(X), size, replace=False))
                knn = st["r"]["knn"] if size is None else knn_graph(X[S], 15)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    Z = UMAPReducer(n_neighbors=15, n_components=ENGINE_REDUCER["n_components"],
                                    min_dist=0.0, metric="cosine", n_epochs=epochs, init="pca",
                                    random_state=s).fit(X[S], precomputed_knn=knn).embedding_
                HierarchyClusterer(random_state=s).fit(Z, knn=knn)
        return f

    def pert():
        Z = st["r"]["embedding"]
        for s in (1, 2, 3):
            S = np.sort(np.random.default_rng(s).choice(len(X), len(X) // 2, replace=False))
            HierarchyClusterer(random_state=s).fit(Z[S], knn=knn_graph(X[S], 15))

    runs = [("engine fit (reduce + cluster)", eng),
            ("EVoC default", lambda: evoc.EVoC(random_state=0).fit(X)),
            ("+ relayout x2 (200 epochs, kNN reused)", relayout(200)),
            ("+ fast50 x2 (50 epochs, kNN reused)", relayout(50)),
            ("+ sub2000 x2 (2,000 items: kNN + layout + tree)", relayout(200, 2000)),
            ("+ pert x3 (half the items: kNN + tree)", pert)]
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    print("| step | wall (s) | CPU (s) | load after |\n|---|---|---|---|")
    for name, fn in runs:
        w, c = clock(fn)
        print(f"| {name} | {w:.1f} | {c:.1f} | {open('/proc/loadavg').read().split()[0]} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["fit", "signal", "table", "levels", "timing"])
    ap.add_argument("signal", nargs="?", choices=SIGNALS, help="for `signal`")
    ap.add_argument("--cases", nargs="+", default=["all"])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--resamples", type=int, default=None,
                    help="refits per signal (`signal`: how many to have; default 2, pert 3; "
                         "`table`/`levels`: how many to use; default all)")
    ap.add_argument("--signals", nargs="+", default=["relayout", "fast50", "sub2000", "pert"])
    ap.add_argument("--rules", nargs="+", default=RULES, choices=RULES)
    ap.add_argument("--cache", type=Path, default=quality.ROOT / "benchmarks" / "out" / "level_stability")
    _results.add_data_args(ap)
    ap.add_argument("--vectors-from", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cases == ["all"]:
        args.cases = WHOLE + list(subsets.CASES)
    bad = [c for c in args.cases if c not in WHOLE and c not in subsets.CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}")
    if args.command == "signal":
        if args.signal is None:
            ap.error("signal: name the signal")
        if args.resamples is None:
            args.resamples = 3 if args.signal.startswith(("pert", "pair")) else 2
    {"fit": cmd_fit, "signal": cmd_signal, "table": cmd_table, "levels": cmd_levels,
     "timing": cmd_timing}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
