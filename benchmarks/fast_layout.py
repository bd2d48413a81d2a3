"""A faster layout for the engine: EVoC's node embedding (and kNN) in place of umap-learn's.

Question (issue 16, session 8): reduce + cluster at 10,000 x 1,280 must take <= 2x EVoC's wall
time. The engine spends ~5 s of its ~7 s in umap-learn (fuzzy graph + 200 serial seeded
epochs). EVoC's reproducible blocked-parallel layout is 8-12x faster, but HDBSCAN finds more
density groups on it and the auto level comes out too fine. This script fits the engine with a
*variant* of the kNN graph and of the layout, keeps the hierarchy (``HierarchyClusterer``) as
is (or with the given clusterer parameters), and scores the auto level and the best level.

A variant is ``name=key:value,key:value,...`` (``name`` labels its cached results); the keys
(defaults in brackets):

* ``lay``   ``umap`` (umap-learn, today's engine) or ``evoc`` (``evoc.node_embedding``) or
  ``par`` (session 22, parlayout helper: umap-learn's fit with today's settings, its layout epochs
  run by ``par_layout.optimize_layout_owned``, vertex-owned on every numba thread, reproducible)
  or ``parc`` (the same, the vertices moved one colour class of the graph at a time:
  ``par_layout.optimize_layout_colored``) or ``paro`` (colour classes, each vertex's moves in
  umap-learn's serial order: ``par_layout.optimize_layout_ordered``) or ``pars`` (``paro`` with the
  colours given in a seeded random vertex order: ``par_layout.optimize_layout_shuffled``) [umap]
* ``perm``  1: the layout runs on the distinct rows in a seeded random order (then put back): the
  development sets' rows are sorted by class, and umap-learn's serial epoch moves the vertices in
  row order (session 22, parlayout helper) [0]
* ``knn``   ``exact`` (faiss) | ``nndescent`` (EVoC's) | ``svd`` (faiss on 256 dims) [exact]
* ``dim``   layout dimensions [10]; ``ep`` layout epochs [200 umap, 50 evoc]
* ``noise`` EVoC's noise_level [0.5]; ``init`` ``lp`` (EVoC's label propagation) | ``pca`` |
  ``spectral`` (umap-learn's spectral_layout on the fuzzy graph) [lp]
* ``alpha`` EVoC's initial learning rate [0.1]; ``nsr`` negative sample rate [1.0]
* ``dist``  ``cos`` (cosine distance, the engine's) | ``log`` (EVoC's -log2 similarity) [cos]
* ``ms``    HDBSCAN ``min_samples`` of the hierarchy [None = the kNN width]
* ``mcs``   HDBSCAN ``min_cluster_size`` [10]; ``ps`` scale of the fuzzy graph's n_neighbors [1.0]
* ``nocheck`` 1: fit the hierarchy without the input vectors, so without the default level's
  agreement check (``stages.hierarchy.agreement_level``; session 8 ran so) [0]
* ``lay:landmark`` umap-learn (today's settings) on a seeded random sample of ``m`` distinct
  items, the others placed as umap-learn's ``UMAP.transform`` places new points (fuzzy weights
  to their ``n_neighbors`` nearest sample items, weighted-mean start, ``ep // 3`` epochs with
  the sample fixed). Its keys: ``lm`` the rule ``CxF``: ``m = min(n, max(F, ceil(C sqrt(n))))``
  [30x3000]; ``place`` ``tr`` (the transform's epochs) | ``init`` (the weighted-mean start only)
  [tr]; ``refine`` then this many umap-learn epochs on the whole graph from that layout as the
  start [0: none]. The neighbours among the sample come from one faiss exact search of every item against
  the sample (the sample's own graph too: its rows' first hit is themselves).
* ``rep``   the input representation the kNN graph and the layout are built on (session 19,
  represent helper; :func:`represent`): ``raw`` (today's) | ``center`` (minus the collection's
  mean of the unit rows) | ``sqrt`` (element-wise signed square root, Perronnin's power
  normalisation) | ``sqrtc`` (sqrt, then centred) | ``pca`` (scikit-learn PCA of the unit rows:
  centred and projected, whitened by ``wpow``) [raw]
* ``rdim``  ``pca``'s dimensions: ``v95`` (those holding 95% of the variance) or a number (at
  most d and n - 1) [v95]; ``wpow`` eigenvalue power of the whitening: each component divided by
  its standard deviation ** ``wpow`` (0: none, 1: full PCA-whitening, 0.5: shrunk) [0]
* ``rcheck`` 1: the default level's agreement check also sees the transformed vectors (else the
  raw input, as today) [0]
* ``rimpl`` how ``pca`` is applied: ``arrays`` (``(Y - mean) @ components.T * scale`` in float32,
  the arithmetic of the engine step written for adoption) | ``sk`` (``PCA.transform``, then
  divided): the same numbers up to float rounding (~1e-6), so two draws of one design [arrays]
* ``winit`` ``rep``: umap-learn's PCA start of the rows it lays out (the transformed ones) |
  ``raw``: the PCA start of the raw unit rows, the graph still the transformed rows' [rep]
* ``rgraph`` which graph is built on the transformed rows: ``both`` (UMAP's and the default
  level's modularity criterion's: one graph, as the engine shares it) | ``crit`` (the criterion's
  only; UMAP lays out the raw rows' graph) | ``lay`` (UMAP's only; the criterion scores the raw
  rows' graph); ``crit`` and ``lay`` build two graphs [both]
* ``seed``  the fit's seed (UMAP, K-means, the check's starts): another draw of the same design [0]
* ``crit``  the default level's rule for the density groups (session 20, levelmerge helper;
  :func:`crit_cut`): ``today`` (the engine's own rule: since session 20 levelmerge's ``min``,
  ``stages.hierarchy.kept_group_splits``; before it, never merge two density groups) | ``free``
  (plain modularity, density groups may merge) | ``loc`` / ``rel`` / ``cross`` / ``min``:
  modularity may merge two density groups unless a local test says the input graph separates
  them (then the split is forced) | ``conf`` / ``confmed`` / ``confmin`` / ``confand`` (session
  21, confirm helper; :func:`confirmed_splits`): a density split is forced only when K-means
  (k = 2) of its items in the input vectors separates its two sides | ``grain``
  (:func:`grain_splits`): forced when the input separates its sides more than K-means separates
  the inside of either side [today]

``sweep`` also caches each layout (``<key>@lay-<hash>.npz``: the distinct rows' coordinates and
kNN graph) under ``--cache``, so variants that differ only in the keys the layout does not see
(``ms``, ``mcs``, ``nocheck``, ``crit``) re-cluster one layout.

Each fit records the level with the check (``auto``) and without it (``mod``, the modularity
level, from the same fit), and ``sweep`` keeps the levels in ``<key>@<name>.npz`` beside the JSON
(``check`` re-runs variants of the agreement check on them).

Usage::

    B="python benchmarks/fast_layout.py --vectors-from /work/vec --cache /tmp/fastlayout/c"
    $B sweep --cases whole --variants base=lay:umap evoc50=lay:evoc,ep:50
    $B table --cases whole subsets --variants base evoc50
    $B timing --variants base=lay:umap evoc50=lay:evoc,knn:nndescent   # 10k, against EVoC
    $B timing --timing-sets cifar10-train --variants base=lay:umap,knn:nndescent   # 50k
    $B sweep --cases whole --variants lm30=lay:landmark,lm:30x3000 lm30r50=lay:landmark,refine:50
    $B knn                                   # kNN time and recall at 10k and 50k
    $B check --cases whole subsets --variants base --checks src iter50   # forms of the level check

``sweep`` caches one JSON per (collection, variant name) under ``--cache``; ``table`` reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import level_stability as ls  # noqa: E402  (the benchmarks folder is not a package)
import subsets  # noqa: E402

DEFAULTS = {"lay": "umap", "knn": "exact", "dim": 10, "ep": None, "noise": 0.5, "init": "lp",
            "alpha": 0.1, "nsr": 1.0, "dist": "cos", "ms": None, "mcs": 10, "ps": 1.0,
            "nocheck": 0, "lm": "30x3000", "place": "tr", "refine": 0,
            "rep": "raw", "rdim": "v95", "wpow": 0.0, "rcheck": 0, "seed": 0,
            "winit": "rep", "rimpl": "arrays", "rgraph": "both", "crit": "today", "perm": 0}
CLUSTER_KEYS = ("ms", "mcs", "nocheck", "crit")  # keys that leave the layout as it is


def closed_upward(forced: set, parent: dict) -> set:
    """``forced`` with every ancestor (``parent``: child -> parent node) of its nodes added, in
    place: a forced split forces the splits above it."""
    for v in list(forced):
        while v in parent and parent[v] not in forced:
            v = parent[v]
            forced.add(v)
    return forced


INTS = ("dim", "ep", "ms", "mcs", "nocheck", "refine", "rcheck", "seed", "perm")
FLOATS = ("noise", "alpha", "nsr", "ps", "wpow")


def represent(U, v, seed=0):
    """The rows ``U`` in the representation ``v["rep"]`` (see the module docstring); cosine
    distances are then taken on these rows (``knn_graph`` L2-normalises them)."""
    rep = v["rep"]
    if rep == "raw":
        return U
    from sklearn.decomposition import PCA

    from mediacluster.data import l2_normalize

    Y = np.asarray(U, np.float32)
    if rep in ("sqrt", "sqrtc"):
        Y = np.sign(Y) * np.sqrt(np.abs(Y))
    Y = l2_normalize(Y)
    if rep in ("center", "sqrtc"):
        return np.ascontiguousarray(Y - Y.mean(0), np.float32)
    if rep == "sqrt":
        return Y
    if rep != "pca":
        raise SystemExit(f"unknown rep {rep!r}")
    cap = int(min(Y.shape[1], len(Y) - 1))
    dims = 0.95 if v["rdim"] == "v95" else min(int(v["rdim"]), cap)
    pca = PCA(n_components=dims, svd_solver="covariance_eigh" if dims == 0.95 or Y.shape[1] <= 2048 else "auto",
              random_state=seed).fit(Y)
    var = np.maximum(pca.explained_variance_, 1e-12)
    if v["rimpl"] == "arrays":  # the arithmetic of the engine step written for adoption (not kept)
        ev = np.asarray(pca.explained_variance_, dtype=np.float64)
        scale = (np.maximum(ev, max(float(ev.max(initial=0.0)) * 1e-6, 1e-12)) ** (-0.5 * float(v["wpow"])))
        comp = pca.components_.astype(np.float32)
        return np.ascontiguousarray(((Y - pca.mean_.astype(np.float32)) @ comp.T) * scale.astype(np.float32),
                                    dtype=np.float32)
    Z = pca.transform(Y)
    if v["wpow"]:
        Z = Z / var ** (0.5 * float(v["wpow"]))
    return np.ascontiguousarray(Z, np.float32)


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, spec = text.partition("=")
    v = dict(DEFAULTS)
    for part in filter(None, spec.split(",")):
        k, _, val = part.partition(":")
        if k not in DEFAULTS:
            raise SystemExit(f"unknown variant key {k!r} in {text!r}")
        v[k] = None if val == "none" else (int(val) if k in INTS else float(val) if k in FLOATS else val)
    if v["ep"] is None:
        v["ep"] = 200 if v["lay"] in ("umap", "landmark", "par", "parc", "paro", "pars") else 50
    return name, v


def landmark_m(n: int, rule: str) -> int:
    c, _, f = rule.partition("x")
    return int(min(n, max(int(f), int(np.ceil(float(c) * np.sqrt(n))))))


SUB: dict = {}  # the landmark layout's own steps (seconds) of the last call


def landmark_layout(U, knn, v, seed=0):
    """umap-learn on a seeded sample of ``landmark_m`` rows, the rest placed as
    ``umap.UMAP.transform`` places new points (its functions, with faiss's neighbours)."""
    import faiss
    import scipy.sparse

    from mediacluster.stages.neighbors import _prepare, _to_distance, self_first
    from mediacluster.stages.reduce import UMAPReducer, import_umap

    umap = import_umap()
    SUB.clear()
    n, nn, ep = len(U), 15, int(v["ep"])
    m = landmark_m(n, v["lm"])
    SUB["m"] = m
    if m >= n:  # no sample to take: today's layout on the whole graph
        return layout(U, knn, dict(v, lay="umap"), seed)
    t = time.perf_counter()
    S = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    Y = _prepare(U, "cosine")
    index = faiss.IndexFlatIP(Y.shape[1])
    index.add(Y[S])
    idx = np.empty((n, nn), np.int64)
    dist = np.empty((n, nn), np.float32)
    for s in range(0, n, 4096):
        D, Ind = index.search(Y[s:s + 4096], nn)
        idx[s:s + 4096], dist[s:s + 4096] = Ind, _to_distance(D, "cosine")
    SUB["search"] = time.perf_counter() - t
    t = time.perf_counter()
    si, sd = self_first(idx[S].copy(), dist[S].copy())  # sample row r's first hit: itself (r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        red = UMAPReducer(n_neighbors=nn, n_components=int(v["dim"]), min_dist=0.0, metric="cosine",
                          n_epochs=ep, init="pca", random_state=seed).fit(U[S], precomputed_knn=(si, sd))
    Zs = red.embedding_
    SUB["sample_layout"] = time.perf_counter() - t
    t = time.perf_counter()
    Z = np.empty((n, Zs.shape[1]), np.float32)
    Z[S] = Zs
    rest = np.setdiff1d(np.arange(n), S)
    if len(rest):
        um = red.umap_
        ri, rd = idx[rest].astype(np.int32), np.ascontiguousarray(dist[rest])
        ri[rd >= um._disconnection_distance] = -1
        sigmas, rhos = umap.umap_.smooth_knn_dist(rd, float(nn), local_connectivity=max(0.0, um.local_connectivity - 1.0))
        rows, cols, vals, _ = umap.umap_.compute_membership_strengths(ri, rd, sigmas, rhos, bipartite=True)
        graph = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(len(rest), m))
        csr = graph.tocsr()
        csr.eliminate_zeros()
        emb = umap.umap_.init_graph_transform(csr, Zs)
        if v["place"] == "tr":
            n_ep = int(ep // 3.0)
            graph.data[graph.data < (graph.data.max() / float(n_ep))] = 0.0
            graph.eliminate_zeros()
            eps = umap.umap_.make_epochs_per_sample(graph.data, n_ep)
            rng_state = np.random.RandomState(seed).randint(np.iinfo(np.int32).min, np.iinfo(np.int32).max, 3
                                                            ).astype(np.int64)
            emb = umap.umap_.optimize_layout_euclidean(
                emb, Zs.astype(np.float32, copy=True), graph.row, graph.col, n_ep, m, eps, um._a, um._b,
                rng_state, um.repulsion_strength, um._initial_alpha / 4.0, um.negative_sample_rate, False,
                verbose=False)
        Z[rest] = emb
    SUB["place"] = time.perf_counter() - t
    if v["refine"]:
        t = time.perf_counter()
        ki, kd = knn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Z = umap.UMAP(n_neighbors=nn, n_components=int(v["dim"]), min_dist=0.0, metric="cosine",
                          n_epochs=int(v["refine"]), init=Z, random_state=seed,
                          precomputed_knn=(np.array(ki[:, :nn], np.int32), np.array(kd[:, :nn], np.float32), None)
                          ).fit_transform(U)
        SUB["refine"] = time.perf_counter() - t
    return np.asarray(Z, np.float32)


def layout(U, knn, v, seed=0, raw=None):
    """Reduced coordinates of the distinct rows ``U`` from their kNN graph, by variant ``v``
    (``raw``: the rows before ``represent``, for ``winit:raw``)."""
    if v.get("perm"):  # the same layout of the rows in a seeded random order, put back
        order = np.random.default_rng(seed).permutation(len(U))
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        idx, dist = knn
        Z = layout(U[order], (back[np.asarray(idx)[order]].astype(np.int32), np.asarray(dist)[order]),
                   dict(v, perm=0), seed, raw=None if raw is None else raw[order])
        return np.asarray(Z)[back]
    if v["lay"] == "landmark":
        return landmark_layout(U, knn, v, seed)
    if v["lay"] == "umap" and v["winit"] == "raw" and raw is not None:
        from sklearn.decomposition import PCA

        from mediacluster.data import l2_normalize
        from mediacluster.stages.reduce import import_umap

        umap = import_umap()
        init = PCA(int(v["dim"]), random_state=seed).fit_transform(l2_normalize(raw)).astype(np.float32)
        idx, dist = knn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return umap.UMAP(n_neighbors=15, n_components=int(v["dim"]), min_dist=0.0, metric="cosine",
                             n_epochs=int(v["ep"]), random_state=seed, init=init,
                             precomputed_knn=(np.array(idx[:, :15], np.int32), np.array(dist[:, :15], np.float32),
                                              None)).fit_transform(U)
    if v["lay"] in ("umap", "par", "parc", "paro", "pars"):
        import contextlib

        import par_layout

        from mediacluster.stages.reduce import UMAPReducer

        owned = (par_layout.owned_layout(colored=v["lay"] != "par", ordered=v["lay"] in ("paro", "pars"),
                                         shuffled=v["lay"] == "pars")
                 if v["lay"] != "umap"
                 else contextlib.nullcontext())
        with warnings.catch_warnings(), owned:
            warnings.simplefilter("ignore")
            return UMAPReducer(n_neighbors=15, n_components=int(v["dim"]), min_dist=0.0,
                               metric="cosine", n_epochs=int(v["ep"]), init="pca",
                               random_state=seed).fit(U, precomputed_knn=knn).embedding_
    from evoc.graph_construction import neighbor_graph_matrix
    from evoc.label_propagation import label_propagation_init
    from evoc.node_embedding import node_embedding

    idx, dist = knn
    dist = np.asarray(dist, np.float64)
    if v["dist"] == "log":  # EVoC's own scale: -log2(cosine similarity)
        dist = -np.log2(np.clip(1.0 - dist, 1e-12, 1.0))
    rs = np.random.RandomState(seed)
    g = neighbor_graph_matrix(15.0 * float(v["ps"]), np.ascontiguousarray(idx, np.int32),
                              np.ascontiguousarray(dist, np.float32), True)
    dim = int(v["dim"])
    if v["init"] == "lp":
        init = label_propagation_init(
            g, n_components=dim, approx_n_parts=int(np.clip(int(8 * np.sqrt(len(U))), 256, 16384)),
            random_scale=0.1, scaling=0.5, noise_level=float(v["noise"]), random_state=rs, data=U,
            n_label_prop_iter=20)
    elif v["init"] == "pca":
        from sklearn.decomposition import PCA

        init = PCA(dim, random_state=seed, svd_solver="randomized").fit_transform(U)
        init = (init - init.mean(0)) / (np.abs(init).max() + 1e-12)
    elif v["init"] == "spectral":
        from umap.spectral import spectral_layout

        init = spectral_layout(U, g.tocsr(), dim, np.random.RandomState(seed))
        init = (init - init.mean(0)) / (np.abs(init).max() + 1e-12)
    else:
        raise SystemExit(f"unknown init {v['init']!r}")
    init = np.ascontiguousarray(init, np.float32)
    ep = int(min(255, int(v["ep"])))  # node_embedding counts epochs in a uint8
    return node_embedding(g.tocsr(), n_components=dim, n_epochs=ep, initial_embedding=init,
                          negative_sample_rate=float(v["nsr"]), noise_level=float(v["noise"]),
                          random_state=rs, verbose=False, reproducible_flag=True,
                          initial_alpha=float(v["alpha"]))


CRIT_INFO: dict = {}  # the last fit's criterion diagnostics (density-group splits kept / merged)
CRITS = ("today", "free", "loc", "rel", "cross", "min")
CONFIRMS = ("conf", "confmed", "confmin", "confand", "grain")  # session 21: :func:`confirmed_splits`


def crit_cut(name, tree, inw, vol, m2, above, root, best_cut=None, size=None, min_size=10):
    """The default level's cut under criterion ``name``: ``(accepted, forced)``, the internal
    nodes split at the default level and the density-group splits it was not free to undo.

    For an internal node v with children a, b (``inw``: a node's internal edge weight, both
    directions; ``vol``: its degree sum in the whole graph), the cross weight is
    ``c = (inw_v - inw_a - inw_b) / 2`` and v's own subgraph gives a and b the degrees
    ``d_a = inw_a + c``, ``d_b = inw_b + c``. The *local* ratio ``r = c inw_v / (d_a d_b)`` is the
    cross weight over its configuration-model expectation inside v alone (1: the graph does not
    see the split; 0: no edge crosses); it has no resolution limit (it never looks outside v).

    * ``today``: every split above the density groups is forced (the engine).
    * ``free``: none is (plain modularity; its resolution limit merges small groups).
    * ``loc``: a density-group split is forced when ``r < 1`` (local modularity of the split > 0).
    * ``rel``: forced when ``r`` is below the median ``r`` of the splits *inside* density groups
      that today's cut leaves unsplit (the splits the graph does not support, measured on the
      same graph and tree: no constant).
    * ``cross``: forced unless one side's items have most of their neighbours (inside v) on the
      other side (``c > min(inw_a, inw_b)``).
    * ``min``: forced when ``r`` is below the lowest ``r`` of those unsupported splits inside
      density groups whose smaller side holds at least ``min_size`` items (HDBSCAN's
      ``min_cluster_size``: the smallest group worth reporting; ``size``: items per node): a
      density boundary is kept when it is sharper than every boundary today's cut left inside a
      cluster; the others are left to modularity (no such split: all forced, as today).
    Forced sets are closed upward (a forced node's ancestors are forced: else it is never
    reached), then the cut maximises modularity (``_best_cut``)."""
    from mediacluster.stages import hierarchy

    _best_cut = best_cut or hierarchy._best_cut
    q = inw / m2 - (vol / m2) ** 2
    today = _best_cut(tree, q, above, root)
    L, N = tree.L, tree.n_nodes
    ch = np.array([tree.children(v) for v in range(L, N)], dtype=np.int64).reshape(-1, 2)
    a, b = ch[:, 0], ch[:, 1]
    c = np.maximum((inw[L:] - inw[a] - inw[b]) / 2.0, 0.0)
    da, db = inw[a] + c, inw[b] + c
    r = np.where(da * db > 0, c * inw[L:] / np.maximum(da * db, 1e-300), 1.0)
    eg = vol[a] * vol[b] / m2  # global expectation of c
    inside = [v for v in range(L, N) if v not in above and v not in today]
    ref = float(np.median(r[np.asarray(inside, np.int64) - L])) if inside else 1.0
    if name == "today":
        forced = set(above)
    elif name == "free":
        forced = set()
    elif name == "loc":
        forced = {v for v in above if r[v - L] < 1.0}
    elif name == "rel":
        forced = {v for v in above if r[v - L] < ref}
    elif name == "min":
        big = [v for v in inside if min(size[a[v - L]], size[b[v - L]]) >= min_size]
        ref = float(r[np.asarray(big, np.int64) - L].min()) if big else np.inf  # none: today's
        forced = {v for v in above if r[v - L] < ref}
    elif name == "cross":
        forced = {v for v in above if c[v - L] <= min(inw[a[v - L]], inw[b[v - L]])}
    else:
        raise SystemExit(f"unknown crit {name!r} (one of {', '.join(CRITS)})")
    parent = {}
    for v in range(L, N):
        for x in tree.children(v):
            parent[x] = v
    closed_upward(forced, parent)
    acc = today if name == "today" else _best_cut(tree, q, forced, root)
    CRIT_INFO.clear()
    ab = sorted(above)
    CRIT_INFO.update(ref=ref, kept=len(acc & above), forced=len(forced), above=len(above),
                     r=[round(float(r[v - L]), 4) for v in ab],
                     cg=[round(float(c[v - L] / max(eg[v - L], 1e-300)), 4) for v in ab],
                     vmin=[float(min(vol[a[v - L]], vol[b[v - L]])) for v in ab],
                     split=[int(v in acc) for v in ab])
    return acc, forced


CONFIRM_ROWS = 2000  # items per K-means fit of the ``conf`` rules (a seeded sample of a larger node)
CONFIRM_STARTS = 3
CONFIRM_SECONDS: list = []  # the last fit's seconds in confirmed_splits
_LABELS: dict = {}  # sweeps only: the collection's labels, to annotate CRIT_INFO (never read by a rule)


def confirm_scores(tree, leaf_of_item, view, nodes, seed=0, min_size=10):
    """Per internal node v of ``nodes``: the adjusted Rand index between v's two sides (the
    items under each child) and K-means (k = 2, ``CONFIRM_STARTS`` seeded starts) of the same
    items on the agreement view (PCA-50 of the L2-normalised input vectors), on a seeded sample
    of at most ``CONFIRM_ROWS`` items; NaN where a side holds fewer than ``min_size`` items.
    1: the input separates the two sides as the layout does; 0: K-means' halves ignore them."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from mediacluster.stages.cluster import single_blas_thread
    from mediacluster.stages.hierarchy import _leaves_under

    out = {}
    with single_blas_thread():
        for v in nodes:
            a, b = tree.children(v)
            ia = np.flatnonzero(np.isin(leaf_of_item, list(_leaves_under(tree, a))))
            ib = np.flatnonzero(np.isin(leaf_of_item, list(_leaves_under(tree, b))))
            if min(len(ia), len(ib)) < min_size:
                out[v] = float("nan")
                continue
            items = np.concatenate([ia, ib])
            side = np.r_[np.zeros(len(ia), np.int64), np.ones(len(ib), np.int64)]
            if len(items) > CONFIRM_ROWS:
                pick = np.sort(np.random.default_rng(seed + v).choice(len(items), CONFIRM_ROWS, replace=False))
                items, side = items[pick], side[pick]
            km = KMeans(n_clusters=2, n_init=CONFIRM_STARTS, random_state=seed).fit(view[items])
            out[v] = float(adjusted_rand_score(side, km.labels_))
    return out


def grain_scores(tree, leaf_of_item, view, nodes, seed=0, min_size=10):
    """Per internal node v of ``nodes``: ``(between, inner)``. ``between``: the share of the sum of
    squares (on the agreement view, a seeded sample of at most ``CONFIRM_ROWS`` items) between v's
    two sides; ``inner``: the largest between-share of K-means' own best 2-split (k = 2,
    ``CONFIRM_STARTS`` starts) of either side's items (0 for a side under ``2 min_size`` items)."""
    from sklearn.cluster import KMeans

    from mediacluster.stages.cluster import single_blas_thread
    from mediacluster.stages.hierarchy import _leaves_under

    def items_of(u):
        return np.flatnonzero(np.isin(leaf_of_item, list(_leaves_under(tree, u))))

    def sample(it, salt):
        if len(it) <= CONFIRM_ROWS:
            return it
        return np.sort(np.random.default_rng(seed + salt).choice(it, CONFIRM_ROWS, replace=False))

    def km_share(it, salt):
        if len(it) < 2 * min_size:
            return 0.0
        Y = view[sample(it, salt)]
        tot = float(((Y - Y.mean(0)) ** 2).sum())
        km = KMeans(n_clusters=2, n_init=CONFIRM_STARTS, random_state=seed).fit(Y)
        return 1.0 - float(km.inertia_) / tot if tot > 0 else 0.0

    out = {}
    with single_blas_thread():
        for v in nodes:
            a, b = tree.children(v)
            ia, ib = items_of(a), items_of(b)
            it = sample(np.concatenate([ia, ib]), v)
            Y = view[it]
            side = np.isin(it, ia)
            tot = float(((Y - Y.mean(0)) ** 2).sum())
            within = sum(float(((Y[m] - Y[m].mean(0)) ** 2).sum()) for m in (side, ~side) if m.any())
            out[v] = (1.0 - within / tot if tot > 0 else 0.0, max(km_share(ia, a), km_share(ib, b)))
    return out


def grain_splits(tree, above, leaf_of_item, view, seed=0, min_size=10):
    """``crit:grain`` (confirm helper, session 21): a density split is forced when the input
    vectors separate its two sides more than K-means separates the inside of either side
    (between-share of the split > each side's own best 2-split's): a border at this grain, not a
    fragment whose halves are as separable as itself. Closed upward."""
    sc = grain_scores(tree, leaf_of_item, view, sorted(above), seed, min_size)
    forced = {v for v in above if sc[v][0] > sc[v][1]}
    parent = {x: v for v in above for x in tree.children(v)}
    closed_upward(forced, parent)
    ab = sorted(above)
    CRIT_INFO.clear()
    CRIT_INFO.update(forced=len(forced), above=len(above), share=[[round(x, 4) for x in sc[v]] for v in ab],
                     forced_nodes=[int(v in forced) for v in ab])
    y = _LABELS.get("y")
    if y is not None and len(y) == len(leaf_of_item):
        from mediacluster.stages.hierarchy import _leaves_under

        def major(u):
            return int(np.bincount(y[np.isin(leaf_of_item, list(_leaves_under(tree, u)))]).argmax())
        CRIT_INFO["between"] = [int(major(tree.children(v)[0]) != major(tree.children(v)[1])) for v in ab]
    return forced


def confirmed_splits(name, tree, inw, size, above, root, q, min_size, leaf_of_item, view, seed=0):
    """The density-group splits kept apart under ``conf*`` rule ``name`` (issue 16, session 21,
    confirm helper), closed upward: a density split (a node of ``above``) is *confirmed* when
    K-means k = 2 of its items in the input vectors separates its two sides
    (:func:`confirm_scores`) more clearly than the top split of every cluster the
    density-constrained modularity cut leaves whole (splits the input graph does not support;
    both sides at least ``min_size`` items): ``conf`` against the highest of those references,
    ``confmed`` against their median; ``confmin``: confirmed (median) *or* kept by the engine's
    input-graph rule (``stages.hierarchy.kept_group_splits``); ``confand``: confirmed (median)
    *and* kept by it. No reference: every density split is kept. Confirmed splits are forced;
    the others are left to modularity, as ``kept_group_splits`` leaves them."""
    from mediacluster.stages import hierarchy

    if not above:
        return set()
    if name == "grain":
        return grain_splits(tree, above, leaf_of_item, view, seed, min_size)
    today = hierarchy._best_cut(tree, q, above, root)
    # the cut's clusters: children of split nodes that are not split themselves
    whole = [x for v in today for x in tree.children(v) if x not in today and x >= tree.L]
    if not today and root >= tree.L:
        whole = [root]
    sc = confirm_scores(tree, leaf_of_item, view, sorted(above) + whole, seed, min_size)
    ref = [sc[v] for v in whole if np.isfinite(sc[v])]
    if not ref:
        forced = set(above)
        thr = float("nan")
    else:
        thr = float(np.max(ref)) if name == "conf" else float(np.median(ref))
        forced = {v for v in above if np.isfinite(sc[v]) and sc[v] > thr}
        if name in ("confmin", "confand"):
            kept = hierarchy.kept_group_splits(tree, inw, size, above, root, q, min_size)
            forced = forced | kept if name == "confmin" else forced & kept
    parent = {x: v for v in above for x in tree.children(v)}
    closed_upward(forced, parent)
    ab = sorted(above)
    CRIT_INFO.clear()
    CRIT_INFO.update(ref=thr, refs=[round(x, 4) for x in ref], forced=len(forced), above=len(above),
                     ari=[round(sc[v], 4) for v in ab], forced_nodes=[int(v in forced) for v in ab])
    y = _LABELS.get("y")
    if y is not None and len(y) == len(leaf_of_item):  # diagnostics: do the sides' majority classes differ
        from mediacluster.stages.hierarchy import _leaves_under

        def major(u):
            it = np.isin(leaf_of_item, list(_leaves_under(tree, u)))
            return int(np.bincount(y[it]).argmax())
        CRIT_INFO["between"] = [int(major(tree.children(v)[0]) != major(tree.children(v)[1])) for v in ab]
    return forced


def _use_confirm(hierarchy, name, view, seed):
    """Patch ``stages.hierarchy`` so that ``HierarchyClusterer.fit`` keeps the density splits
    :func:`confirmed_splits` confirms (in place of ``kept_group_splits``); returns the undo."""
    stats, kept = hierarchy._node_graph_stats, hierarchy.kept_group_splits
    seen = {}

    def node_stats(tree, leaf_of_item, A):
        seen["leaf"] = leaf_of_item
        return stats(tree, leaf_of_item, A)

    def keep(tree, inw, size, above, root, q, min_size):
        hierarchy.kept_group_splits = kept  # confirmed_splits may call the engine's rule
        t0 = time.perf_counter()
        try:
            return confirmed_splits(name, tree, inw, size, above, root, q, min_size, seen["leaf"], view, seed)
        finally:
            CONFIRM_SECONDS.append(time.perf_counter() - t0)
            hierarchy.kept_group_splits = keep

    hierarchy._node_graph_stats, hierarchy.kept_group_splits = node_stats, keep

    def restore():
        hierarchy._node_graph_stats, hierarchy.kept_group_splits = stats, kept
    return restore


def _use_crit(hierarchy, name):
    """Patch ``stages.hierarchy`` so that ``HierarchyClusterer.fit`` cuts by ``crit_cut(name)``;
    returns the function that undoes it. The density-group splits the criterion merges are
    dropped from the ``above`` set ``fit`` hands to ``_make_levels`` (so the level order still
    nests: kept group splits, then the other accepted splits, then the rest, merged group
    splits first)."""
    CRIT_INFO.clear()
    if name == "today":
        return lambda: None
    stats, best = hierarchy._node_graph_stats, hierarchy._best_cut
    seen = {}

    def node_stats(tree, leaf_of_item, A):
        out = stats(tree, leaf_of_item, A)
        size = np.zeros(tree.n_nodes)
        size[:tree.L] = np.bincount(leaf_of_item, minlength=tree.L)
        for v in range(tree.L, tree.n_nodes):
            size[v] = sum(size[x] for x in tree.children(v))
        seen["s"], seen["size"] = out, size
        return out

    def cut(tree, score, must_split, root):
        inw, vol, m2 = seen["s"]
        acc, _ = crit_cut(name, tree, inw, vol, m2, must_split, root, best_cut=best, size=seen["size"])
        merged = set(must_split) - acc
        top = max(tree.height) + 1.0
        for v in merged:  # first among the rest, in their own height order (parents first)
            tree.height[v - tree.L] += top
        must_split.intersection_update(acc)  # the same set object reaches _make_levels
        return acc

    kept = hierarchy.kept_group_splits  # since session 20 the engine's own rule (``min``): every
    # density split goes to ``cut`` forced, which applies this criterion instead

    hierarchy._node_graph_stats, hierarchy._best_cut = node_stats, cut
    hierarchy.kept_group_splits = lambda tree, inw, size, above, *a: set(above)

    def restore():
        hierarchy._node_graph_stats, hierarchy._best_cut = stats, best
        hierarchy.kept_group_splits = kept
    return restore


_KNN: dict = {}


def fit(X, v, seed=0, reuse_knn=False, layout_file=None):
    """The engine with variant ``v``: (clusterer, timings). ``reuse_knn``: keep the kNN graph of
    the last call on the same array and method (sweeps only; timings never reuse it).
    ``layout_file``: an ``.npz`` holding (or to hold) the layout and kNN graph of the distinct
    rows (sweeps only; not with ``rcheck``, which needs the transformed rows)."""
    from mediacluster.stages.hierarchy import _expand_knn, unique_rows

    tm = {}
    t = time.perf_counter()
    U, inv, _ = unique_rows(X)
    if layout_file is not None and not v["rcheck"]:
        if layout_file.exists():
            z = np.load(layout_file)
            Z, knn = z["Z"], (z["idx"], z["dist"])
            tm.update(knn=0.0, layout=0.0)
        else:
            Z, knn, tl = _layout_of(X, U, v, seed, reuse_knn, tm, t)
            np.savez(layout_file, Z=Z, idx=knn[0], dist=knn[1])
        return _cluster(X, Z, inv, knn, None, v, seed, tm, _expand_knn)
    Z, knn, R = _layout_of(X, U, v, seed, reuse_knn, tm, t)
    return _cluster(X, Z, inv, knn, R, v, seed, tm, _expand_knn)


def _layout_of(X, U, v, seed, reuse_knn, tm, t):
    """(layout of the distinct rows ``U``, the criterion's kNN graph, the transformed rows)."""
    from mediacluster.stages.neighbors import knn_graph

    ck = (id(X), X.shape, v["knn"], v["rep"], v["rdim"], v["wpow"], v["rimpl"], v["rgraph"])
    if reuse_knn and ck in _KNN:
        R, knn, knn_lay = _KNN[ck]
    else:
        t0 = time.perf_counter()
        R = represent(U, v, seed)
        tm["rep"] = time.perf_counter() - t0
        knn = knn_graph(R, 15, metric="cosine", method=v["knn"])
        knn_lay = knn
        if v["rgraph"] != "both" and R is not U:  # a second graph, of the raw rows
            raw = knn_graph(U, 15, metric="cosine", method=v["knn"])
            knn, knn_lay = (knn, raw) if v["rgraph"] == "crit" else (raw, knn)
        _KNN.clear()
        _KNN[ck] = R, knn, knn_lay
    tm["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    lay_rows = U if v["rgraph"] == "crit" else R
    Z = np.asarray(layout(lay_rows, knn_lay, v, seed, raw=U), np.float32)
    tm["layout"] = time.perf_counter() - t
    if v["lay"] == "landmark":
        tm.update({f"lm_{k}": x for k, x in SUB.items()})
    return Z, knn, R


def _cluster(X, Z, inv, knn, R, v, seed, tm, _expand_knn):
    from mediacluster.stages import hierarchy
    from mediacluster.stages.hierarchy import HierarchyClusterer

    t = time.perf_counter()
    cl = HierarchyClusterer(random_state=seed, min_samples=v["ms"], min_cluster_size=int(v["mcs"]))
    check = hierarchy.agreement_level
    spent = []

    def timed_check(*a, **kw):  # the agreement check's own seconds, inside the cluster step
        t0 = time.perf_counter()
        out = check(*a, **kw)
        spent.append(time.perf_counter() - t0)
        return out

    hierarchy.agreement_level = timed_check
    view = None
    CONFIRM_SECONDS.clear()
    if v["crit"] in CONFIRMS:  # the check's view, once (the engine makes it during the layout)
        t0 = time.perf_counter()
        view = hierarchy.agreement_view(np.asarray(X, np.float32), seed)
        tm["view"] = time.perf_counter() - t0
        restore = _use_confirm(hierarchy, v["crit"], view, seed)
    else:
        restore = _use_crit(hierarchy, v["crit"])
    try:  # the input vectors, as reduce_and_cluster gives them: the level's agreement check runs
        cl.fit(Z[inv], knn=_expand_knn(knn, inv) if len(Z) < len(X) else knn,
               vectors=None if v["nocheck"] else (R[inv] if v["rcheck"] else X),
               agreement_view=None if (v["nocheck"] or v["rcheck"]) else view)
    finally:
        hierarchy.agreement_level = check
        restore()
    cl.crit_info_ = dict(CRIT_INFO)
    tm["cluster"] = time.perf_counter() - t
    tm["check"] = sum(spent)
    if CONFIRM_SECONDS:
        tm["confirm"] = sum(CONFIRM_SECONDS)
    return cl, tm


def nmi(y, lab):
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(y, lab))


def keys_of(cases, draws):
    out = []
    for c in cases:
        if c == "whole":
            out += ls.WHOLE
        elif c == "subsets":
            out += [f"{s}#{d}" for s in subsets.CASES for d in range(draws)]
        elif c in subsets.CASES:
            out += [f"{c}#{d}" for d in range(draws)]
        else:
            out.append(c)
    return out


def result_path(args, key, name):
    return args.cache / f"{key}@{name}.json"


def layout_path(args, key, v):
    import hashlib

    spec = json.dumps({k: x for k, x in sorted(v.items()) if k not in CLUSTER_KEYS})
    return args.cache / f"{key}@lay-{hashlib.sha1(spec.encode()).hexdigest()[:10]}.npz"


def cmd_sweep(args):
    args.cache.mkdir(parents=True, exist_ok=True)
    for key in keys_of(args.cases, args.draws):
        X, y = ls.collection(key, args)
        _LABELS["y"] = np.unique(np.asarray(y), return_inverse=True)[1].ravel()  # diagnostics only
        for text in args.variants:
            name, v = parse_variant(text)
            p = result_path(args, key, name)
            if p.exists() and not args.force:
                continue
            labs, tms = [], []
            for _ in range(2 if args.repro else 1):
                cl, tm = fit(X, v, seed=int(v["seed"]), reuse_knn=True,  # --repro: fit the layout twice
                             layout_file=None if args.repro else layout_path(args, key, v))
                labs.append(cl.labels_.copy())
                tms.append(tm)
            sc = [nmi(y, lv) for lv in cl.levels_]
            b = int(np.argmax(sc))
            np.savez_compressed(p.with_suffix(".npz"), levels=np.asarray(cl.levels_),
                                auto=cl.auto_level_, mod=cl.modularity_level_)
            m = cl.levels_[cl.modularity_level_]
            rec = dict(key=key, variant=name, spec=v, auto=nmi(y, cl.labels_),
                       mod=nmi(y, m), mod_k=int(m.max() + 1), auto_level=int(cl.auto_level_),
                       mod_level=int(cl.modularity_level_),
                       auto_k=int(cl.labels_.max() + 1), groups=int(cl.n_groups_), best=sc[b],
                       best_k=int(cl.levels_[b].max() + 1), times=tms[-1],
                       repro=bool(all((lab == labs[0]).all() for lab in labs)) if args.repro else None,
                       load=os.getloadavg()[0], crit=cl.crit_info_)
            p.write_text(json.dumps(rec))
            print(json.dumps({k: (round(x, 3) if isinstance(x, float) else x) for k, x in rec.items()
                              if k not in ("spec", "times", "crit")} | {"layout_s": round(tm["layout"], 2)}),
                  flush=True)


def cmd_table(args):
    names = [parse_variant(t)[0] for t in args.variants]
    keys = keys_of(args.cases, args.draws)
    R = {}
    for key in keys:
        for n in names:
            p = result_path(args, key, n)
            if p.exists():
                R[key, n] = json.loads(p.read_text())
    print("| collection | " + " | ".join(f"{n}: auto (k, groups) / best" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    groups = {}
    for key in keys:
        g = key.split("#")[0]
        groups.setdefault(g, []).append(key)
    means = {n: {} for n in names}
    for g, ks in groups.items():
        cells = []
        for n in names:
            rs = [R.get((k, n)) for k in ks]
            if any(r is None for r in rs):
                cells.append("")
                continue
            a = np.mean([r["auto"] for r in rs])
            b = np.mean([r["best"] for r in rs])
            means[n][g] = (a, b)
            kk = "/".join(str(r["auto_k"]) for r in rs)
            gg = "/".join(str(r["groups"]) for r in rs)
            cells.append(f"{a:.3f} ({kk}; {gg}) / {b:.3f}")
        print(f"| {g} | " + " | ".join(cells) + " |")
    for label, sel in (("whole sets, mean", ls.WHOLE), ("subset collections, mean", list(subsets.CASES))):
        cells = []
        for n in names:
            v = [means[n][g] for g in sel if g in means[n]]
            cells.append(f"{np.mean([a for a, _ in v]):.3f} / {np.mean([b for _, b in v]):.3f}"
                         if len(v) == len([g for g in sel if g in groups]) and v else "")
        print(f"| **{label}** | " + " | ".join(cells) + " |")
    cells = []  # against the first variant named (the baseline)
    for n in names:
        d = [means[n][g][0] - means[names[0]][g][0] for g in ls.WHOLE
             if g in means[n] and g in means[names[0]]]
        cells.append(f"{min(d):+.3f}" if d else "")
    print("| worst whole-set change vs " + names[0] + " | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        rs = [R.get((k, n)) for k in keys]
        mv = [r for r in rs if r is not None and "mod" in r]
        cells.append(f"{sum(r['auto_level'] != r['mod_level'] for r in mv)}/{len(mv)}" if mv else "")
    print("| collections whose level the check moved | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        rs = [R.get((k, n)) for k in keys]
        rp = [r["repro"] for r in rs if r is not None and r["repro"] is not None]
        cells.append(f"{sum(rp)}/{len(rp)}" if rp else "")
    print("| reproducible (two runs) | " + " | ".join(cells) + " |")


def cmd_timing(args):
    """Reduce + cluster per variant against EVoC's default on each of ``--timing-sets`` (10k:
    CIFAR-10 test; 50k: cifar10-train), one process, each run twice and the second reported;
    labels of the two runs compared."""
    import evoc

    for set_name in args.timing_sets:
        _timing_one(args, set_name, evoc)


def _timing_one(args, set_name, evoc):
    X, y = ls.load(set_name, args)
    print(f"\n{set_name} (n={len(X)}); load average before: {open('/proc/loadavg').read().split()[:3]}")
    print("| method | wall (s) | CPU (s) | steps (s) | clusters | NMI | reproducible | load after |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [("EVoC default", None)] + [parse_variant(t) for t in args.variants] + [("EVoC default, again", None)]
    for name, v in runs:
        labs = []
        for _ in range(2):
            t, c = time.perf_counter(), time.process_time()
            if v is None:
                lab = evoc.EVoC(random_state=0).fit(X).labels_
                tm = {}
            else:
                cl, tm = fit(X, v)
                lab = cl.labels_
            w, cpu = time.perf_counter() - t, time.process_time() - c
            labs.append(np.asarray(lab).copy())
        steps = ", ".join(f"{k} {s:.2f}" if isinstance(s, float) else f"{k} {s}" for k, s in tm.items())
        print(f"| {name} | {w:.2f} | {cpu:.2f} | {steps} | {int(labs[1].max() + 1)} | {nmi(y, labs[1]):.3f} "
              f"| {'yes' if (labs[0] == labs[1]).all() else 'NO'} | {open('/proc/loadavg').read().split()[0]} |",
              flush=True)


def cmd_knn(args):
    """kNN graph time and recall (against faiss exact), k = 15, at 10k and 50k."""
    from mediacluster.stages.neighbors import knn_graph

    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    print("| set | n | method | wall (s) | CPU (s) | recall vs exact |\n|---|---|---|---|---|---|")
    for name in args.knn_sets:
        X, _ = ls.load(name, args)
        ref = None
        for m, dims in (("exact", 0), ("nndescent", 0), ("svd", 256), ("svd", 128)):
            for _ in range(2):
                t, c = time.perf_counter(), time.process_time()
                idx, _ = knn_graph(X, 15, metric="cosine", method=m, dims=dims or 256)
                w, cpu = time.perf_counter() - t, time.process_time() - c
            if ref is None:
                ref = idx
            rec = np.mean([len(set(a) & set(b)) for a, b in zip(idx, ref)]) / idx.shape[1]
            print(f"| {name} | {len(X)} | {m}{' ' + str(dims) + ' dims' if dims else ''} | {w:.2f} | {cpu:.2f} | {rec:.3f} |", flush=True)


CHECKS = {  # ways to run the agreement check; ``src`` is stages.hierarchy.agreement_level itself
    "src": {},
    "same": {},                                   # this script's copy, as src (must agree)
    "pca_cov": {"pca": {"svd_solver": "covariance_eigh"}},  # PCA from the d x d covariance (exact)
    "pca_it2": {"pca": {"svd_solver": "randomized", "iterated_power": 2}},  # (auto's is 7 here)
    "elkan": {"km": {"algorithm": "elkan"}},     # Elkan's exact Lloyd
    "iter50": {"km": {"max_iter": 50}},
    "tol1e-3": {"km": {"tol": 1e-3}},
    "sub4k": {"sub": 4000},                       # K-means fitted on a fixed 4,000-row sample
}


def agreement_variant(levels, auto, vectors, random_state=0, pca=None, km=None, sub=None):
    """``stages.hierarchy.agreement_level`` with its PCA solver / K-means settings / a fixed
    subsample for K-means changed (``CHECKS``); otherwise the same code (``sub`` replaces the
    engine's per-start samples by one fixed sample)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from mediacluster.data import l2_normalize
    from mediacluster.stages import hierarchy as h
    from mediacluster.stages.cluster import single_blas_thread

    counts = np.array([int(lv.max()) + 1 for lv in levels])
    ka = int(counts[auto])
    cands = [lv for lv, k in enumerate(counts) if ka / h.AGREEMENT_WINDOW <= k <= ka * h.AGREEMENT_WINDOW
             and 2 <= k < len(vectors)]
    scores = np.full((len(levels), 2), np.nan)
    if len(cands) < 2 or auto not in cands:
        return auto, scores
    X = l2_normalize(vectors)
    dims = int(min(h.AGREEMENT_DIMS, X.shape[1], len(X) - 1))
    seed = [(int(random_state) + i) % 2**32 for i in range(h.AGREEMENT_SEEDS)]
    with single_blas_thread():
        V = PCA(n_components=dims, random_state=seed[0], **(pca or {})).fit_transform(X) \
            if dims < X.shape[1] else X
        rows = np.arange(len(V))
        if sub and len(V) > sub:
            rows = np.sort(np.random.default_rng(0).choice(len(V), sub, replace=False))
        m = getattr(h, "AGREEMENT_ROWS", None)  # since session 17: each start its own sample
        own = {s: np.sort(np.random.default_rng(s).choice(len(V), m, replace=False))
               if not sub and m and len(V) > m else None for s in seed}
        for lv in cands:
            ari = []
            for s in seed:
                if own[s] is not None:
                    k = KMeans(n_clusters=int(counts[lv]), n_init=1, random_state=s, **(km or {})).fit(V[own[s]])
                    ari.append(adjusted_rand_score(levels[lv][own[s]], k.labels_))
                    continue
                k = KMeans(n_clusters=int(counts[lv]), n_init=1, random_state=s, **(km or {})).fit(V[rows])
                ari.append(adjusted_rand_score(levels[lv], k.labels_ if len(rows) == len(V) else k.predict(V)))
            scores[lv] = np.mean(ari), np.std(ari, ddof=1)
    best = max(cands, key=lambda lv: (round(float(scores[lv, 0]), 6), lv == auto))
    if best != auto and scores[best, 0] - scores[auto, 0] > scores[best, 1] + scores[auto, 1]:
        return best, scores
    return auto, scores


def cmd_check(args):
    """Each check way (``--checks``) on the levels ``sweep`` cached: the level it picks against
    the cached (engine) one, and its seconds; one line per collection, then the totals."""
    from mediacluster.stages.hierarchy import agreement_level

    names = [parse_variant(t)[0] for t in args.variants]
    keys = keys_of(args.cases, args.draws)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    tot = {c: [0.0, 0, 0] for c in args.checks}
    score = {c: {} for c in args.checks}  # case -> NMI of each chosen level
    for key in keys:
        X = None
        for n in names:
            p = result_path(args, key, n).with_suffix(".npz")
            if not p.exists():
                continue
            if X is None:
                X, y = ls.collection(key, args)
            z = np.load(p)
            levels, mod, ref = list(z["levels"]), int(z["mod"]), int(z["auto"])
            cells = []
            for c in args.checks:
                t = time.perf_counter()
                if c == "src":
                    lv, _ = agreement_level(levels, mod, X, random_state=args.check_seed)
                else:
                    lv, _ = agreement_variant(levels, mod, X, args.check_seed, **CHECKS[c])
                dt = time.perf_counter() - t
                tot[c][0] += dt
                tot[c][1] += int(lv == ref)
                tot[c][2] += 1
                score[c].setdefault((n, key.split("#")[0]), []).append(nmi(y, levels[lv]))
                cells.append(f"{c} {int(levels[lv].max() + 1)}{'' if lv == ref else '!'} "
                             f"(NMI {score[c][n, key.split('#')[0]][-1]:.3f}) {dt:.2f}s")
            print(f"{key}@{n} (n={len(X)}, engine {int(levels[ref].max() + 1)}): " + "; ".join(cells), flush=True)
    print("| check | same level as the engine | seconds (sum) | whole-set mean NMI | subset mean NMI |")
    print("|---|---|---|---|---|")
    for c, (dt, same, m) in tot.items():
        means = []
        for sel in (ls.WHOLE, list(subsets.CASES)):
            v = [np.mean(x) for (_, g), x in score[c].items() if g in sel]
            means.append(f"{np.mean(v):.4f}" if v else "")
        print(f"| {c} | {same}/{m} | {dt:.1f} | " + " | ".join(means) + " |")
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["sweep", "table", "timing", "knn", "check"])
    ap.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    ap.add_argument("--check-seed", type=int, default=0, help="check: the first K-means seed")
    ap.add_argument("--cases", nargs="+", default=["whole"])
    ap.add_argument("--variants", nargs="+", default=["base=lay:umap"])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--repro", action="store_true", help="sweep: fit twice, compare labels")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--timing-sets", nargs="+", default=["cifar10-test"],
                    help="timing: the sets (cifar10-train: 50,000 items, from --vectors-from)")
    ap.add_argument("--knn-sets", nargs="+", default=["cifar10-test", "cifar10-train"])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/fastlayout/c"))
    ap.add_argument("--shared", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quality"))
    ap.add_argument("--vectors-from", type=Path, default=None)
    args = ap.parse_args(argv)
    from mediacluster.fileio import setup_numba_cache

    setup_numba_cache()
    {"sweep": cmd_sweep, "table": cmd_table, "timing": cmd_timing, "knn": cmd_knn,
     "check": cmd_check}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
