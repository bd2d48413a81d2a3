"""Nested clusterings, coarse to fine, with a label-free default level.

``HierarchyClusterer().fit(Z, knn=(indices, distances))`` takes the reduced coordinates ``Z``
(n, k) and, optionally, the neighbour graph of the *input* vectors (the one UMAP was given, see
``mediacluster.stages.neighbors``), and builds one tree whose cuts are the levels:

1. **cells**: K-means with ``n_cells`` (default ``4 sqrt(n)``, at most 1,000) centres on ``Z``;
   the finest possible level.
2. **density groups**: HDBSCAN (``hdbscan``, ``min_cluster_size``, excess-of-mass) on ``Z``
   finds the groups separated by density gaps, whatever their size or number; its noise joins
   the group that most of its 15 nearest neighbours belong to. Cells are split along group
   borders; the (cell, group) pieces are the tree's leaves.
3. **tree**: size-weighted Ward linkage of the pieces inside each group, then of the groups.
4. **default level** (``level="auto"``): the cut of the tree that maximises Newman-Girvan
   modularity of the input-space neighbour graph, subject to never merging two density groups
   that the input graph separates more sharply than any split the cut leaves inside a cluster.
   Density separation in the reduced space has no resolution limit (it finds 100 groups of 50
   as readily as 3 of 3,000) but misses groups that touch, and on large collections it also
   tears one kind into fragments (CIFAR-10's 50,000 training photos: 80+ density groups);
   modularity of the input graph splits touching groups but merges small ones (its resolution
   limit: a group whose share of the graph is below ~1/sqrt(edges) is merged). So a density
   split is kept (forced) only when its *local cross ratio* ``r`` (the input graph's edges
   between its two sides over their configuration-model expectation inside that node alone:
   1 the graph does not see the split, 0 no edge crosses; no resolution limit) is below the
   lowest ``r`` of the splits density-constrained leaves inside its clusters with at least
   ``min_cluster_size`` items on each side (:func:`kept_group_splits`): a border sharper than
   every border left inside a cluster is a border; the others are left to modularity. Both
   sides are label-free and use no constant fitted to a labelled set (modularity at its
   standard resolution 1, HDBSCAN at ``min_cluster_size``: the smallest group worth reporting).
   **checked against the input vectors** (``fit(..., vectors=X)``, as the engine and the
   pipeline call it): the levels from half that cut's cluster count up to twice the larger of
   it and the density groups' count (modularity errs toward too coarse) are compared
   with K-means of the same k on a PCA-50 view of the L2-normalised input vectors (12 starts,
   each on its own sample of at most 4,000 items, adjusted Rand index), a view that does not
   share the layout's tearing; the best-agreeing level replaces the modularity cut only when
   its gain exceeds the starts' own spread (:func:`agreement_level`; 12 starts so that the pick
   holds under numerically equivalent changes, such as another PCA solver).
   ``modularity_level_`` keeps the modularity cut.
5. **levels**: the tree's splits in one order (first the density-group splits the default level
   keeps, then the other splits it accepts, then the density-group splits it merged, then the
   rest, each by decreasing Ward height), cut after
   2, 3, 4, 6, 8, 12, 16, ... clusters plus the density-group and default cuts and the finest
   (all leaves). Every level refines the previous one, so each cluster of level ``l + 1`` has
   exactly one parent at level ``l``.

**Small collections** (fewer distinct items than two of the criterion graph's neighbour lists,
:func:`is_small`: below 30 with the engine's 15) cannot be cut by that criterion (no side of a
cut holds its members' neighbours; below 16 the graph is complete) nor by HDBSCAN (groups of at
least ``min_cluster_size``). For them the tree is average linkage of the distinct items by the
input vectors' cosine distances, and the default level is one cluster unless Ward's top split
of the items is significantly tighter than in references of the same spectrum
(:func:`split_test`, 1%), else the cut with the best silhouette (:func:`small_collection_cut`);
``small_collection_`` says which path was taken. Measured on draws of 3-200 items in
benchmarks/RESULTS.md, "Engine: small collections".

Identical rows of ``Z`` always end in the same cluster at every level (they share a cell, a
group vote and every tree node). Without ``knn`` the criterion uses the kNN graph of ``Z``
itself (measured worse: it over-splits large homogeneous groups).

``predict(Z_new)`` / ``predict_path(Z_new)`` place new points by a distance-weighted vote of
their nearest training points, top-down: the coarsest level first, then among the children of
the chosen cluster, so a path is always a valid root-to-leaf path; each level's probability is
the vote share of the chosen cluster among the neighbours still in its parent.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from ..data import check_finite, check_magnitude, l2_normalize
from ..errors import InputError, ParameterError
from .registry import SEED, Float, Int, check_params, register

NOISE = -1
MAX_CELLS = 1000
VOTE_NEIGHBORS = 15


def unique_rows(X: np.ndarray):
    """``(distinct rows in order of first appearance, row -> distinct index, counts)``.

    Rows are compared as raw bytes; -0.0 and 0.0 count as different. The rows are grouped by a
    64-bit hash of their bytes (one pass, then a sort of n integers), and every row is checked
    byte for byte against its group's first row; only when two different rows share a hash are
    the rows sorted as byte strings instead (1.2 CPU s on 50,000 x 1,280; ``np.unique(axis=0)``
    sorts column by column and took 10 s). The answer is the same either way."""
    X = np.ascontiguousarray(X)
    W = X.view(np.uint32 if X.dtype.itemsize * X.shape[1] % 4 == 0 else np.uint8)  # each row's bytes
    _, first, inv, counts = np.unique(_row_hash(W), return_index=True, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    if not all(np.array_equal(W[s:s + 4096], W[first[inv[s:s + 4096]]]) for s in range(0, len(W), 4096)):
        v = X.view(np.dtype((np.void, X.dtype.itemsize * X.shape[1]))).ravel()  # a shared hash: by bytes
        _, first, inv, counts = np.unique(v, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return X[first[order]], rank[inv.ravel()], counts[order]


def _row_hash(W: np.ndarray, block: int = 4096, words: int = 64) -> np.ndarray:
    """A 64-bit hash of each row of unsigned words ``W`` from ``words`` of its words spread over
    the row (rows that differ elsewhere only share a hash; the caller checks every byte): the
    words times fixed odd multipliers, summed modulo 2**64, then mixed."""
    W = W[:, np.unique(np.linspace(0, W.shape[1] - 1, min(words, W.shape[1])).astype(np.int64))]
    mult = np.random.default_rng(0x5EED).integers(0, 2**62, W.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    h = np.empty(len(W), np.uint64)
    with np.errstate(over="ignore"):
        for s in range(0, len(W), block):
            h[s:s + block] = (W[s:s + block].astype(np.uint64) * mult).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x9E3779B97F4A7C15)
    return h


# ------------------------------------------------------------------------------------------
# size-weighted Ward linkage
# ------------------------------------------------------------------------------------------
def weighted_ward(centres: np.ndarray, weights: np.ndarray) -> list[tuple[int, int, float]]:
    """Ward linkage of points ``centres`` that stand for ``weights`` items each.

    scipy's and scikit-learn's Ward start every observation at size 1, so they cannot cluster
    K-means cells by their sizes (a 3-item outlying cell would then merge as late as a 300-item
    one). Merge cost of clusters A, B: ``2 nA nB / (nA + nB) * |cA - cB|^2`` (the squared Ward
    distance scipy reports), recomputed from the merged centroid. Returns ``[(a, b, height)]``
    with the merged cluster numbered ``p + step`` (scipy's convention), ``p = len(centres)``.
    """
    C = np.asarray(centres, dtype=np.float64).copy()
    w = np.asarray(weights, dtype=np.float64).copy()
    p = len(C)
    if p < 2:
        return []
    D = _ward_sq(C, w, C, w)
    np.fill_diagonal(D, np.inf)
    ids = np.arange(p)
    alive = np.ones(p, bool)
    nn = D.argmin(axis=1)
    nd = D[np.arange(p), nn]
    out = []
    for step in range(p - 1):
        i = int(np.argmin(np.where(alive, nd, np.inf)))
        j = int(nn[i])
        h = float(D[i, j])
        if i > j:
            i, j = j, i
        out.append((int(ids[i]), int(ids[j]), math.sqrt(max(h, 0.0))))
        C[i] = (w[i] * C[i] + w[j] * C[j]) / (w[i] + w[j])
        w[i] += w[j]
        alive[j] = False
        D[j, :] = np.inf
        D[:, j] = np.inf
        row = _ward_sq(C[i:i + 1], w[i:i + 1], C, w)[0]
        row[~alive] = np.inf
        row[i] = np.inf
        D[i, :] = row
        D[:, i] = row
        ids[i] = p + step
        nd[j] = np.inf
        # rows whose nearest neighbour was i or j, and row i itself, are recomputed
        stale = np.flatnonzero(alive & ((nn == i) | (nn == j)))
        for r in (*stale.tolist(), i):
            nn[r] = int(D[r].argmin())
            nd[r] = D[r, nn[r]]
        closer = alive & (row < nd)  # the merged cluster became some row's nearest
        nn[closer] = i
        nd[closer] = row[closer]
    return out


def _ward_sq(A, wa, B, wb):
    d2 = np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T, 0.0)
    return 2.0 * (wa[:, None] * wb[None, :]) / (wa[:, None] + wb[None, :]) * d2


# ------------------------------------------------------------------------------------------
# the tree
# ------------------------------------------------------------------------------------------
class _Tree:
    """Binary tree over ``L`` leaves (nodes ``0..L-1``); internal node ``L + s`` is merge ``s``."""

    def __init__(self, n_leaves: int):
        self.L = n_leaves
        self.left: list[int] = []
        self.right: list[int] = []
        self.height: list[float] = []

    def add(self, a: int, b: int, h: float) -> int:
        self.left.append(a)
        self.right.append(b)
        self.height.append(h)
        return self.L + len(self.left) - 1

    @property
    def n_nodes(self) -> int:
        return self.L + len(self.left)

    def children(self, v: int):
        return (self.left[v - self.L], self.right[v - self.L]) if v >= self.L else None


def _build_tree(centres, sizes, group_of_leaf):
    """Ward inside each group, then Ward over the groups. Returns the tree, the group root
    node of each group, and the set of internal nodes above the group roots."""
    L = len(centres)
    tree = _Tree(L)
    groups = np.unique(group_of_leaf)
    roots, gc, gw = [], [], []
    for g in groups:
        leaves = np.flatnonzero(group_of_leaf == g)
        node_of = [int(leaf) for leaf in leaves]  # local id -> tree node
        for a, b, h in weighted_ward(centres[leaves], sizes[leaves]):
            node_of.append(tree.add(node_of[a], node_of[b], h))
        roots.append(node_of[-1])
        w = sizes[leaves].astype(np.float64)
        gc.append((centres[leaves] * w[:, None]).sum(0) / w.sum())
        gw.append(w.sum())
    above = set()
    if len(roots) > 1:
        node_of = list(roots)
        for a, b, h in weighted_ward(np.asarray(gc), np.asarray(gw)):
            v = tree.add(node_of[a], node_of[b], h)
            node_of.append(v)
            above.add(v)
    return tree, roots, above


def _node_graph_stats(tree: _Tree, leaf_of_item: np.ndarray, A):
    """Per tree node: internal edge weight (both directions) and volume of graph ``A``."""
    import scipy.sparse as sp

    L, N = tree.L, tree.n_nodes
    n = len(leaf_of_item)
    M = sp.csr_matrix((np.ones(n), (np.arange(n), leaf_of_item)), shape=(n, L))
    W = (M.T @ A @ M).toarray()
    deg = np.asarray(A.sum(axis=1)).ravel()
    inw = np.zeros(N)
    vol = np.zeros(N)
    inw[:L] = np.diag(W)
    vol[:L] = M.T @ deg
    row_of = {v: v for v in range(L)}
    for v in range(L, N):
        a, b = tree.children(v)
        ra, rb = row_of.pop(a), row_of.pop(b)
        inw[v] = inw[a] + inw[b] + 2.0 * W[ra, rb]
        vol[v] = vol[a] + vol[b]
        W[ra] += W[rb]
        W[:, ra] += W[:, rb]
        W[rb] = 0.0
        W[:, rb] = 0.0
        row_of[v] = ra
    return inw, vol, float(deg.sum())


def _best_cut(tree: _Tree, score: np.ndarray, must_split: set, root: int) -> set:
    """Internal nodes to split so that the sum of ``score`` over the cut is maximal
    (the excess-of-mass recursion of HDBSCAN, with modularity terms), ``must_split`` forced."""
    best = score.copy()
    split = np.zeros(tree.n_nodes, bool)
    for v in range(tree.L, tree.n_nodes):
        a, b = tree.children(v)
        if v in must_split or best[a] + best[b] > score[v]:
            best[v] = best[a] + best[b]
            split[v] = True
    chosen, stack = set(), [root]
    while stack:
        v = stack.pop()
        if v >= tree.L and split[v]:
            chosen.add(v)
            stack.extend(tree.children(v))
    return chosen



def kept_group_splits(tree: _Tree, inw: np.ndarray, size: np.ndarray, above: set, root: int,
                      q: np.ndarray, min_size: int) -> set:
    """The density-group splits (``above``: the tree's nodes over the density groups) the default
    level keeps apart, closed upward.

    For a node v with children a, b the input graph's cross weight is
    ``c = (inw_v - inw_a - inw_b) / 2`` (``inw``: a node's internal edge weight, both
    directions) and v's own subgraph gives a and b the degrees ``d_a = inw_a + c``,
    ``d_b = inw_b + c``; the local cross ratio ``r = c inw_v / (d_a d_b)`` is c over its
    configuration-model expectation inside v alone (modularity's expectation looks at the whole
    graph, hence its resolution limit). The reference is the lowest ``r`` among the splits the
    modularity cut with every density split forced leaves *inside* its clusters (splits the graph
    does not support) whose smaller side holds at least ``min_size`` items (``size``; the
    density step's ``min_cluster_size``); a density split sharper than that is kept. Without
    such a reference every density split is kept (the rule before it: measured in RESULTS
    "Engine: a default level that may merge density groups")."""
    if not above:
        return set()
    L = tree.L
    today = _best_cut(tree, q, above, root)
    ch = np.array([tree.children(v) for v in range(L, tree.n_nodes)], dtype=np.int64).reshape(-1, 2)
    a, b = ch[:, 0], ch[:, 1]
    c = np.maximum((inw[L:] - inw[a] - inw[b]) / 2.0, 0.0)
    dd = (inw[a] + c) * (inw[b] + c)
    r = np.where(dd > 0, c * inw[L:] / np.maximum(dd, 1e-300), 1.0)
    inside = [v for v in range(L, tree.n_nodes) if v not in above and v not in today
              and min(size[a[v - L]], size[b[v - L]]) >= min_size]
    if not inside:
        return set(above)
    ref = float(r[np.asarray(inside, np.int64) - L].min())
    forced = {v for v in above if r[v - L] < ref}
    parent = {x: v for v in above for x in tree.children(v)}
    for v in list(forced):  # a kept split's ancestors are kept: else it is never reached
        while v in parent and parent[v] not in forced:
            v = parent[v]
            forced.add(v)
    return forced

def _level_counts(n_leaves: int, extra) -> list[int]:
    ks = set()
    k = 2
    while k < n_leaves:
        ks.add(k)
        ks.add(int(k * 3 // 2))
        k *= 2
    ks = {x for x in ks if 2 <= x < n_leaves}
    ks.add(n_leaves)
    ks.update(int(x) for x in extra if 1 <= x <= n_leaves)  # incl. 1 when the criterion says so
    return sorted(ks)


def modularity(A, labels: np.ndarray, gamma: float = 1.0) -> float:
    """Newman-Girvan modularity of ``labels`` (>= 0) on the undirected graph ``A``."""
    return float(modularities(A, [labels], gamma)[0])


def modularities(A, levels, gamma: float = 1.0) -> np.ndarray:
    """:func:`modularity` of each labelling in ``levels``, the graph's edge lists and degrees
    taken once."""
    coo = A.tocoo()
    m2 = float(coo.data.sum())
    if m2 <= 0:
        return np.zeros(len(levels))
    deg = np.asarray(A.sum(axis=1)).ravel()
    out = []
    for labels in levels:
        lab = np.asarray(labels)
        same = lab[coo.row] == lab[coo.col]
        vol = np.bincount(lab, weights=deg)
        out.append(float(coo.data[same].sum() / m2 - gamma * ((vol / m2) ** 2).sum()))
    return np.array(out)


AGREEMENT_WINDOW = 2.0  # candidate levels: cluster counts within this factor of the modularity level's
AGREEMENT_SEEDS = 12  # K-means starts per candidate: their spread is the agreement's own noise
AGREEMENT_ROWS = 4000  # each start clusters its own random sample of this many items (all when fewer)
AGREEMENT_PER_CLUSTER = 10  # ... and of at least this many items per cluster of the level it checks
AGREEMENT_DIMS = 50
PREFIT_MAX_K = 2  # agreement_prefit runs starts up to this many times sqrt(n) clusters


def agreement_view(vectors: np.ndarray, seed: int) -> np.ndarray:
    """The view :func:`agreement_level` clusters: the L2-normalised ``vectors``, PCA to
    ``AGREEMENT_DIMS`` dimensions (seed ``seed``: the first K-means start's), one BLAS thread.
    It depends on the input vectors only, so the engine computes it while UMAP lays out."""
    from sklearn.decomposition import PCA

    from .cluster import single_blas_thread

    X = l2_normalize(vectors)
    dims = int(min(AGREEMENT_DIMS, X.shape[1], len(X) - 1))
    if dims >= X.shape[1]:
        return X
    with single_blas_thread():
        return PCA(n_components=dims, random_state=seed).fit_transform(X)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _map_single_threaded(fn, jobs: list) -> list:
    """``[fn(job) for job in jobs]``, spread over one thread per core, each running its
    OpenMP code (scikit-learn's K-means) on one thread as ``single_blas_thread`` does for the
    calling thread (OpenMP's thread count is per thread; the BLAS limit is process-wide, so the
    caller holds it). Each ``fn(job)`` computes exactly what it would alone: K-means' sums do
    not depend on which thread runs them, only on how many threads split them."""
    workers = min(len(jobs), _cores())
    if workers <= 1:
        return [fn(job) for job in jobs]
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    with ThreadPoolExecutor(workers, initializer=threadpool_limits, initargs=(1, "openmp")) as pool:
        return list(pool.map(fn, jobs))


def _agreement_start(V: np.ndarray, k: int, s: int):
    """One K-means start of the agreement check: ``(sample, labels)``, K-means with ``k``
    clusters and seed ``s`` on its own random sample of the rows of ``V`` (``AGREEMENT_ROWS``, or
    ``AGREEMENT_PER_CLUSTER`` per cluster for a level of very many clusters; all rows when fewer).
    The caller limits BLAS and OpenMP to one thread (the labels' bits depend on it)."""
    from sklearn.cluster import KMeans

    n = len(V)
    size = max(AGREEMENT_ROWS, AGREEMENT_PER_CLUSTER * k)  # more for a level of very many clusters
    r = np.sort(np.random.default_rng(s).choice(n, size, replace=False)) if n > size else np.arange(n)
    return r, KMeans(n_clusters=k, n_init=1, random_state=s).fit(V[r]).labels_


def agreement_prefit(vectors: np.ndarray, seed: int, stop) -> tuple[np.ndarray, dict]:
    """The agreement check's work that needs the input vectors only, done ahead while UMAP lays
    out: ``(view, starts)``, ``view`` = :func:`agreement_view` ``(vectors, seed)`` and ``starts``
    = ``{(n, k, s): (sample, labels)}``, the check's K-means starts (:func:`_agreement_start`)
    for the cluster counts a level is most likely to have (``_level_counts``' ladder 2, 3, 4, 6,
    8, 12, ..., up to ``PREFIT_MAX_K * sqrt(n)``, smallest first, each with the check's 12
    seeds), until ``stop`` (a
    ``threading.Event``) is set: the end of the layout. Each start computes exactly what
    :func:`agreement_level` would (one BLAS and OpenMP thread here and there), which takes the
    stored ones and runs the rest itself; a start whose count no candidate level has is wasted
    (at most the layout's idle core)."""
    from .cluster import single_blas_thread

    view = agreement_view(vectors, seed)
    n = len(view)
    seeds = [(seed + i) % 2**32 for i in range(AGREEMENT_SEEDS)]
    starts = {}
    with single_blas_thread():
        for k in _level_counts(n, ()):
            if k > PREFIT_MAX_K * math.sqrt(n) or k >= n:  # a start of many clusters would hold the layout up
                break
            for s in seeds:
                if stop.is_set():
                    return view, starts
                starts[(n, k, s)] = _agreement_start(view, k, s)
    return view, starts


def agreement_level(levels: np.ndarray, auto: int, vectors: np.ndarray, random_state=0, view=None,
                    n_groups: int | None = None, starts: dict | None = None):
    """The default level checked against another view of the same items: ``(level, scores)``.

    A level the data supports should also be found by a clustering that does not share the
    layout's tearing. For each candidate level (cluster count k from level ``auto``'s divided by
    ``AGREEMENT_WINDOW`` up to the larger of level ``auto``'s and ``n_groups``, the density
    groups' count, times ``AGREEMENT_WINDOW``), K-means with the same k on the input vectors
    (L2-normalised, PCA to ``AGREEMENT_DIMS`` dimensions) is run from ``AGREEMENT_SEEDS`` starts,
    each on its own random sample of ``AGREEMENT_ROWS`` items, or ``AGREEMENT_PER_CLUSTER`` per
    cluster for a level of very many clusters (all items when there are fewer);
    the level's agreement is the mean adjusted Rand index between its labels and K-means' on the
    start's items, its noise the starts' sample sd. The best-agreeing candidate replaces ``auto``
    only when its gain exceeds the two levels' noise (``mean_b - mean_auto > sd_b + sd_auto``),
    so the rule has no fitted threshold. The window reaches up to the density groups' count
    because modularity's known error is one-sided (its resolution limit merges small groups: a
    cut too coarse) and the density groups have no resolution limit; its lower end stays
    ``auto``'s (a window down to a small density count let K-means' easy 2-cluster split win:
    CIFAR-10 NMI .43 -> .31). Without that upper reach, the window followed the modularity
    level, which moves with the last digits of the vectors (Sports-100: 30-58 clusters over five
    drifts of 1e-6, so the pick went 16-96 clusters, NMI .577-.756; with it 96-128, .755-.763;
    benchmarks/RESULTS.md, "Engine: the auto level under vector drift"). ``scores`` (n_levels, 2): mean and sd per level, NaN
    off the window. ``view``: :func:`agreement_view` of ``vectors`` with the first start's seed,
    when the caller has it already (the engine computes it during the layout); ``starts``: K-means
    starts already run on that view (:func:`agreement_prefit`, also during the layout). The other
    starts run on one thread per core (:func:`_map_single_threaded`), each computing what it would alone.

    Why 12 starts on samples: a single K-means run lands in one of many local optima, and any
    numerically equivalent change (another PCA solver or seed, other starts) lands it in
    another; with 3 starts on all items the pick moved under such changes on 14 of 32
    collections, with 12 starts on samples of 4,000 on 6, for about 0.3 CPU s more at 10,000
    items and the same or better NMI (benchmarks/RESULTS.md, "Engine: a stable agreement check"; the
    check itself: "Engine: agreement across representations"). It moves the level rarely,
    mostly to a finer level on many-class sets."""
    from sklearn.metrics import adjusted_rand_score

    from .cluster import single_blas_thread

    counts = np.array([int(lv.max()) + 1 for lv in levels])
    ka = int(counts[auto])
    top = max(ka, int(n_groups or 0)) * AGREEMENT_WINDOW
    cands = [lv for lv, k in enumerate(counts) if ka / AGREEMENT_WINDOW <= k <= top and 2 <= k < len(vectors)]
    scores = np.full((len(levels), 2), np.nan)
    if len(cands) < 2 or auto not in cands:
        return auto, scores
    base = int(np.random.default_rng().integers(2**30)) if random_state is None else int(random_state)
    seed = [(base + i) % 2**32 for i in range(AGREEMENT_SEEDS)]  # seed 0: 0, 1, ..., 11 (as measured)
    n = len(vectors)
    V = agreement_view(vectors, seed[0]) if view is None else view

    done = starts or {}

    def start(job):  # one K-means start on its own sample: its adjusted Rand index with the level
        lv, s = job
        k = int(counts[lv])
        r, lab = done[(n, k, s)] if (n, k, s) in done else _agreement_start(V, k, s)
        return adjusted_rand_score(levels[lv][r], lab)

    jobs = [(lv, s) for lv in cands for s in seed]
    with single_blas_thread():
        ari = np.array(_map_single_threaded(start, jobs)).reshape(len(cands), len(seed))
    for lv, a in zip(cands, ari):
        scores[lv] = np.mean(a), np.std(a, ddof=1)
    best = max(cands, key=lambda lv: (round(float(scores[lv, 0]), 6), lv == auto))
    if best != auto and scores[best, 0] - scores[auto, 0] > scores[best, 1] + scores[auto, 1]:
        return best, scores
    return auto, scores


# ------------------------------------------------------------------------------------------
# small collections: too few items for the criterion graph
# ------------------------------------------------------------------------------------------
SPLIT_ALPHA = 0.01  # one-sided level of each split's test (a homogeneous collection must stay one)
SPLIT_REFERENCES = 49  # reference draws per test


def is_small(n_distinct: int, graph_width: int) -> bool:
    """Whether a collection is too small for the modularity criterion: fewer distinct items
    than two full neighbour lists of the criterion graph (``graph_width`` = items per list,
    the item itself included). A cut's side can only hold its members' neighbours when it has
    at least ``graph_width`` items, so below ``2 * graph_width`` no cut into two groups keeps
    them (with ``graph_width >= n`` the graph is complete and every split scores below 0)."""
    return n_distinct < 2 * int(graph_width)


def _weighted_coords(V: np.ndarray, w: np.ndarray):
    """``(coordinates, singular values)`` of rows ``V`` weighted by ``w`` about their weighted
    mean: ``sqrt(w) * (V - mean) = U S Vt``, coordinates ``(V - mean) @ Vt.T`` (distances kept)."""
    C = V - (w[:, None] * V).sum(0) / w.sum()
    _, S, Vt = np.linalg.svd(np.sqrt(w)[:, None] * C, full_matrices=False)
    r = int((S > S[0] * 1e-9).sum()) if len(S) and S[0] > 0 else 0
    return C @ Vt[:r].T, S[:r]


def _split_share(P: np.ndarray, w: np.ndarray, side: np.ndarray) -> float:
    """Within-side sum of squares over the total (weights ``w``): Ward's cluster index."""
    def ss(m):
        c = (w[m, None] * P[m]).sum(0) / w[m].sum()
        return float((w[m] * ((P[m] - c) ** 2).sum(1)).sum())
    total = ss(np.ones(len(P), bool))
    return (ss(side) + ss(~side)) / total if total > 0 else 1.0


def _ward_top_split(P: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The two sides of Ward's top split of points ``P`` weighted ``w`` (bool, True = one side)."""
    merges = weighted_ward(P, w)
    p = len(P)
    members = {i: [i] for i in range(p)}
    for s, (a, b, _) in enumerate(merges[:-1]):
        members[p + s] = members.pop(a) + members.pop(b)
    side = np.zeros(p, bool)
    side[members[merges[-1][0]]] = True
    return side


def split_test(V: np.ndarray, w: np.ndarray, side: np.ndarray, rng) -> float:
    """How far a split of rows ``V`` (weights ``w``) into ``side`` / ``~side`` is from what one
    homogeneous group would give: the z-score of its Ward cluster index (within-side share of
    the sum of squares) against ``SPLIT_REFERENCES`` reference collections.

    A reference keeps everything second-order about the collection (the same items' weights,
    the same singular values of the centred rows, so the same total spread along the same
    number of axes) and draws only which item sits where: ``U`` of ``sqrt(w) (V - mean) = U S
    Vt`` is replaced by a random orthonormal basis of the same size orthogonal to
    ``sqrt(w)``. Two groups put a few items at the two ends of the first axes; a random basis
    does not, so a real split has a clearly smaller index than its references' Ward splits.
    With fewer items than dimensions (always here) every split of the items themselves looks
    linearly separable, which is why the reference has the same shape instead of the gap
    statistic's uniform box (measured: it almost never split two kinds), a Gaussian with the
    sample eigenvalues (one-class draws scored above two-class ones) or one in all the input's
    dimensions (everything significant). Positive: the split is tighter than the references'."""
    P, S = _weighted_coords(V, w)
    if len(S) == 0:
        return -np.inf
    share = _split_share(P, w, side)
    sw = np.sqrt(w)
    ref = np.empty(SPLIT_REFERENCES)
    for b in range(SPLIT_REFERENCES):
        G = rng.standard_normal((len(P), len(S)))
        G -= np.outer(sw, sw @ G) / (sw @ sw)  # orthogonal to sqrt(w): centred
        Q, _ = np.linalg.qr(G)
        R = Q * S / sw[:, None]
        ref[b] = _split_share(R, w, _ward_top_split(R, w))
    sd = float(ref.std(ddof=1))
    return (float(ref.mean()) - share) / sd if sd > 0 else (np.inf if share < ref.mean() else -np.inf)


def weighted_silhouette(D: np.ndarray, w: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of points with pairwise distances ``D`` standing for ``w`` items each
    (copies at distance 0 from each other), weighted by ``w``; an item alone in its cluster
    scores 0 (scikit-learn's convention)."""
    K = int(labels.max()) + 1
    M = np.zeros((len(D), K))
    np.add.at(M.T, labels, w[:, None] * D)  # M[i, c]: weighted distance sum to cluster c
    size = np.bincount(labels, weights=w, minlength=K)
    own = size[labels] - 1.0  # the other items of i's cluster (its own copies among them, at 0)
    a = np.where(own > 0, M[np.arange(len(D)), labels] / np.maximum(own, 1e-300), 0.0)
    other = np.where(np.arange(K)[None, :] == labels[:, None], np.inf, M / np.maximum(size, 1e-300))
    b = other.min(axis=1)
    sil = np.where((own > 0) & np.isfinite(b), (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float((w * sil).sum() / w.sum())


def weighted_average_linkage(D: np.ndarray, w: np.ndarray) -> list[tuple[int, int, float]]:
    """Average linkage (UPGMA) of points with distances ``D`` standing for ``w`` items each:
    the distance between two clusters is the mean over their items' pairs. Same output
    convention as :func:`weighted_ward`."""
    p = len(D)
    D = np.asarray(D, dtype=np.float64).copy()
    np.fill_diagonal(D, np.inf)
    w = np.asarray(w, dtype=np.float64).copy()
    ids = np.arange(p)
    alive = np.ones(p, bool)
    out = []
    for step in range(p - 1):
        flat = int(np.argmin(np.where(alive[:, None] & alive[None, :], D, np.inf)))
        i, j = divmod(flat, p)
        if i > j:
            i, j = j, i
        out.append((int(ids[i]), int(ids[j]), float(D[i, j])))
        row = (w[i] * D[i] + w[j] * D[j]) / (w[i] + w[j])
        w[i] += w[j]
        alive[j] = False
        D[i, :] = row
        D[:, i] = row
        D[i, i] = np.inf
        D[j, :] = np.inf
        D[:, j] = np.inf
        ids[i] = p + step
    return out


def small_collection_cut(tree: _Tree, P: np.ndarray, D: np.ndarray, w: np.ndarray, random_state=0) -> set:
    """The tree nodes to split for the default level of a small collection (:func:`is_small`):
    none when Ward's top split of the items is not significant (:func:`split_test`, one-sided
    at ``SPLIT_ALPHA``, normal quantile), so one homogeneous collection stays one cluster;
    otherwise the cut of ``tree`` (into 2 .. L - 1 clusters, L the distinct items) with the
    largest silhouette (:func:`weighted_silhouette` on the distances ``D``). ``P`` (L, r) the
    coordinates of the tree's leaves, ``w`` their weights (copies). Returns the split nodes
    (the ``k - 1`` highest)."""
    from scipy.stats import norm

    L, root = tree.L, tree.n_nodes - 1
    if L < 3:
        return set()
    z = split_test(P, w, _ward_top_split(P, w), np.random.default_rng(random_state))
    if not z > float(norm.ppf(1.0 - SPLIT_ALPHA)):
        return set()
    order = sorted(range(L, tree.n_nodes), key=lambda v: -tree.height[v - L])
    best, best_k, nodes = -np.inf, 2, {root}
    for k in range(2, L):
        v = order[k - 2]
        nodes.remove(v)
        nodes.update(tree.children(v))
        lab = np.empty(L, np.int64)
        for c, u in enumerate(nodes):
            lab[_leaves_under(tree, u)] = c
        sil = weighted_silhouette(D, w, lab)
        if sil > best + 1e-12:
            best, best_k = sil, k
    return set(order[:best_k - 1])


# ------------------------------------------------------------------------------------------
# conventions shared with stages/evoc.py
# ------------------------------------------------------------------------------------------
def check_share(value, name: str) -> None:
    """``max_unclustered``: a share in [0, 1) (the registry table checks [0, 1])."""
    if float(value) >= 1.0:
        raise ParameterError(f"{name}: must be a share below 1 (1 would leave everything unclustered), "
                             f"got {value!r}", name)


def validate_input(est, X, reset: bool, min_items: int = 3) -> np.ndarray:
    """``X`` as finite, C-ordered float32 (scikit-learn's ``validate_data``; sets/checks
    ``n_features_in_``), parameters checked against the registry first (``reset``) or the
    estimator checked fitted. Non-finite values, and values whose squares overflow float32
    distances (``data.check_magnitude``), are refused naming the row."""
    from sklearn.utils.validation import check_is_fitted, validate_data

    if reset:
        check_params(est)
    else:
        check_is_fitted(est, "levels_")
    X = validate_data(est, X, reset=reset, dtype=np.float32, order="C", ensure_all_finite=False)
    check_finite(X, row="row {}")
    check_magnitude(X, row="row {}")  # finite, but squares that overflow float32 distances
    if reset and len(X) < min_items:
        raise InputError(f"{type(est).__name__} needs at least {min_items} items to cluster, got "
                         f"n_samples={len(X)}")
    return X


def select_level(est, unclustered: np.ndarray):
    """Set ``level_`` / ``labels_`` / ``probabilities_`` from ``est.level`` (``"auto"`` or an
    index), leaving at most ``max_unclustered`` of the items in ``unclustered`` (the weakest
    memberships first) as noise."""
    n_levels = len(est.levels_)
    if est.level == "auto":
        lv = est.auto_level_
    else:
        lv = int(est.level)
        if lv >= n_levels:
            raise ParameterError(f"level={lv} is out of range: this fit has {n_levels} levels "
                                 f"(0..{n_levels - 1}, cluster counts {est.n_clusters_per_level_.tolist()})",
                                 "level")
    est.level_ = lv
    labels = est.levels_[lv].copy()
    probs = est.level_probabilities_[lv].copy()
    budget = int(math.floor(float(est.max_unclustered) * len(labels)))
    if budget > 0 and unclustered.any():
        cand = np.flatnonzero(unclustered)
        keep = cand[np.argsort(probs[cand], kind="stable")[:budget]]
        labels[keep] = NOISE
        probs[keep] = 0.0
    est.labels_ = labels
    est.probabilities_ = probs


class LevelsMixin:
    """``predict`` / ``predict_membership`` / ``set_level`` of a clusterer with nested levels;
    the subclass provides ``_path(Z)`` (validated input) and ``_unclustered(level)``."""

    def predict_path(self, Z):
        """``(labels, probabilities)``, each (n_levels, m): every new point's cluster at every
        level (a root-to-leaf path, coarse to fine) and the vote share behind each step."""
        return self._path(validate_input(self, Z, reset=False))

    def predict(self, Z) -> np.ndarray:
        """Cluster labels of new points at the level in use (``level_``)."""
        return self.predict_path(Z)[0][self.level_]

    def predict_membership(self, Z) -> np.ndarray:
        """Membership probability in [0, 1] of each new point's cluster at ``level_``."""
        return self.predict_path(Z)[1][self.level_]

    def fit_predict(self, Z, y=None, **kw):
        return self.fit(Z, **kw).labels_

    def set_level(self, level):
        """Switch the flat labelling (``labels_`` / ``probabilities_``) without refitting."""
        old = self.level
        self.level = level
        try:
            check_params(self)
            self._select()
        except ParameterError:
            self.level = old
            raise
        return self

    def level_with(self, n_clusters: int) -> int:
        """Index of the level whose cluster count is closest to ``n_clusters``."""
        return int(np.argmin(np.abs(self.n_clusters_per_level_ - int(n_clusters))))


LEVEL = Int(0, extra=("auto",), doc="'auto' (the clusterer's own choice) or a level index, 0 = coarsest")
SHARE = Float(0.0, 1.0, doc="share of items that may stay unclustered (below 1)")


# ------------------------------------------------------------------------------------------
# the estimator
# ------------------------------------------------------------------------------------------
@register("clusterer", "hierarchy", params={
    "level": LEVEL,
    "min_cluster_size": Int(2, tune={"int": [5, 200], "log": True}, scale=True),
    "min_samples": Int(1, none_ok=True, tune={"int": [5, 50], "log": True}, scale=True),
    "n_cells": Int(1, none_ok=True),
    "max_unclustered": SHARE,
    "graph_neighbors": Int(1, none_ok=True),
    "random_state": SEED,
})
class HierarchyClusterer(LevelsMixin, ClusterMixin, BaseEstimator):
    """Nested levels coarse -> fine on reduced coordinates, a label-free default level.

    Parameters
    ----------
    level : ``"auto"`` (the modularity cut within the density groups the input graph
        separates, checked against the input
        vectors when ``fit`` gets them; see the module docstring) or an int, the index into
        ``levels_`` (0 = coarsest).
    min_cluster_size : smallest density group HDBSCAN may report (items).
    min_samples : HDBSCAN's density smoothing (neighbours in a core distance); None = the width
        of the ``knn`` lists (UMAP's ``n_neighbors``: density is then estimated at the scale of
        the graph the layout was made from), 15 without ``knn``. Measured: with 10 (HDBSCAN's
        own default, = min_cluster_size) CIFAR-10 train (50,000) broke into 118 groups and 41%
        noise, with 15 into the 2 groups animals / vehicles.
    n_cells : finest partition (K-means centres); None = ``min(1000, 4 sqrt(n))``.
    max_unclustered : share of items (in [0, 1)) that may stay unclustered (``-1`` in
        ``labels_``): the density step's noise items with the weakest membership, at most this
        share. 0 (default) assigns every item. ``levels_`` always assigns every item.
    graph_neighbors : neighbours per item in the criterion's graph (the first columns of
        ``knn``); None = all columns given.
    random_state : seed of the K-means cells (everything else is deterministic).

    Attributes
    ----------
    levels_ : int64 (n_levels, n), row 0 coarsest; ``levels_[l, i]`` is item i's cluster.
    parents_ : list of ``n_levels - 1`` int64 arrays; ``parents_[l][c]`` is the level-``l``
        parent of cluster ``c`` of level ``l + 1``.
    n_clusters_per_level_ : int64 (n_levels,), strictly increasing.
    level_scores_ : float (n_levels,), modularity of each level on the criterion graph.
    level_probabilities_ : float (n_levels, n), share of each item's 15 nearest neighbours
        (distance-weighted, itself excluded) in its cluster at that level.
    auto_level_ : index of the criterion's level; ``level_`` the one in use.
    modularity_level_ : index of the modularity cut (``auto_level_`` unless the agreement with
        the input vectors moved it).
    agreement_scores_ : float (n_levels, 2), mean and sd over K-means starts of each candidate
        level's adjusted Rand index with K-means on the input vectors; NaN for levels outside
        the window and when ``fit`` got no ``vectors``.
    groups_level_ : index of the level of the density groups the default level keeps apart
        (:func:`kept_group_splits`); ``n_groups_`` the number of density groups HDBSCAN found.
    labels_, probabilities_ : at ``level_`` (``-1`` / 0 for items left unclustered).
    unclustered_ : bool (n,), items HDBSCAN called noise before they were assigned.
    small_collection_ : True when the collection was too small for the criterion graph and the
        small-collection path made the tree and the default level (see the module docstring).
    """

    def __init__(self, level="auto", min_cluster_size: int = 10, min_samples: int | None = None,
                 n_cells: int | None = None, max_unclustered: float = 0.0,
                 graph_neighbors: int | None = None, random_state: int | None = 0):
        self.level = level
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.n_cells = n_cells
        self.max_unclustered = max_unclustered
        self.graph_neighbors = graph_neighbors
        self.random_state = random_state

    # -- validation --------------------------------------------------------------------------
    def _check_params(self, prefix=None):
        """What the registry table cannot say: ``max_unclustered`` below 1."""
        check_share(self.max_unclustered, f"{prefix}__max_unclustered" if prefix else f"{type(self).__name__}.max_unclustered")

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, Z, y=None, knn=None, vectors=None, agreement_view=None, agreement_starts=None):
        """Build the tree and its levels on ``Z`` (n, k).

        ``knn``: ``(indices, distances)`` of the input vectors' nearest neighbours (column 0 the
        item itself), as returned by ``mediacluster.stages.neighbors.knn_graph`` and handed to
        UMAP; the default-level criterion is computed on that graph.
        ``vectors``: the input vectors (n, d) ``Z`` was made from; when given, the default level
        is checked against a clustering of them (:func:`agreement_level`).
        ``agreement_view``: that check's view of ``vectors`` (:func:`agreement_view` with this
        clusterer's seed), when the caller computed it beforehand; ``agreement_starts``: that
        check's K-means starts already run on it (:func:`agreement_prefit`); the same numbers
        either way.
        """
        Z = validate_input(self, Z, reset=True)
        n = len(Z)
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != n:
                raise InputError(f"vectors must be an (n={n}, d) array, one row per row of Z, got shape "
                                 f"{vectors.shape}")
            check_finite(vectors, row="vectors row {}")
        if knn is not None:
            kidx = np.asarray(knn[0])
            if kidx.ndim != 2 or len(kidx) != n or kidx.dtype.kind not in "iu" or (
                    kidx.size and (kidx.min() < 0 or kidx.max() >= n)):
                raise InputError(f"knn indices must be an (n={n}, k) array of item indices, got "
                                 f"{kidx.dtype} {kidx.shape}")
        # identical rows are one point: fit on the distinct rows, weighted by multiplicity
        U, inv, counts = unique_rows(Z)
        self._train_ = Z
        if len(U) == 1:
            self._fit_single(n)
            return self
        A = self._graph(Z, knn)
        if is_small(len(U), self._graph_width(n, knn)):
            self._fit_small(Z, U, inv, counts, A, vectors)
            return self
        self.small_collection_ = False
        self._min_samples_ = int(self.min_samples) if self.min_samples is not None else (
            int(np.asarray(knn[0]).shape[1]) if knn is not None else 15)
        leaf_of_item, centres, sizes, group_of_leaf, noise = self._leaves(Z, U, inv, counts)
        tree, roots, above = _build_tree(centres, sizes, group_of_leaf)
        root = tree.n_nodes - 1
        inw, vol, m2 = _node_graph_stats(tree, leaf_of_item, A)
        q = inw / m2 - (vol / m2) ** 2 if m2 > 0 else np.zeros(tree.n_nodes)
        size = np.zeros(tree.n_nodes)
        size[:tree.L] = np.bincount(leaf_of_item, minlength=tree.L)
        for v in range(tree.L, tree.n_nodes):
            a, b = tree.children(v)
            size[v] = size[a] + size[b]
        forced = kept_group_splits(tree, inw, size, above, root, q, int(self.min_cluster_size))
        accepted = _best_cut(tree, q, forced, root)
        self._make_levels(tree, root, above & accepted, accepted, leaf_of_item, len(roots),
                          merged=above - accepted)
        self.level_scores_ = modularities(A, self.levels_) if m2 > 0 else np.zeros(len(self.levels_))
        self.modularity_level_ = self.auto_level_
        self.agreement_scores_ = np.full((len(self.levels_), 2), np.nan)
        if vectors is not None:
            self.auto_level_, self.agreement_scores_ = agreement_level(
                self.levels_, self.auto_level_, vectors, random_state=self.random_state, view=agreement_view,
                n_groups=self.n_groups_, starts=agreement_starts if agreement_view is not None else None)
        self.unclustered_ = noise
        self._build_index()
        self._probabilities(Z)
        self._select()
        return self

    def _graph_width(self, n: int, knn) -> int:
        """Items per list of the criterion graph (the item itself included)."""
        cols = int(np.asarray(knn[0]).shape[1]) if knn is not None else int(min(n - 1, 15)) + 1
        if self.graph_neighbors is not None:
            cols = min(cols, int(self.graph_neighbors) + 1)
        return cols

    def _fit_small(self, Z, U, inv, counts, A, vectors):
        """A collection too small for the criterion graph (:func:`is_small`): one tree of
        average-linkage merges of its distinct items by the input vectors' cosine distances (as
        the graph sees them; Euclidean distances of ``Z`` when ``fit`` got no vectors), copies
        counted once; the default level is one cluster unless the tree's top split is
        significant, else the cut with the best silhouette (:func:`small_collection_cut`). No density groups (HDBSCAN needs more items than its ``min_cluster_size``),
        no agreement check (the test is already on the input vectors)."""
        n = len(Z)
        first = np.zeros(len(U), np.int64)
        first[inv[::-1]] = np.arange(n)[::-1]  # each distinct row's first item
        if vectors is not None:
            V = np.asarray(l2_normalize(vectors[first]), dtype=np.float64)
        else:
            V = np.asarray(U, dtype=np.float64)
        # copies count once, as in the pipeline (which fits distinct rows only): weighted, a
        # copy's cluster of itself would score a silhouette of 1 and every copy-pair split off
        w = np.ones(len(U))
        P, _ = _weighted_coords(V, w)
        if P.shape[1] == 0:  # distinct in Z, one point in the input's view
            P = np.zeros((len(U), 1))
        D = np.sqrt(np.maximum(((P[:, None, :] - P[None, :, :]) ** 2).sum(-1), 0.0))
        if vectors is not None:  # cosine distances of the input, as the graph sees them
            D = np.maximum(1.0 - V @ V.T, 0.0)
        np.fill_diagonal(D, 0.0)
        tree = _Tree(len(U))
        for a, b, h in weighted_average_linkage(D, w):
            # strictly above its children, so that sorting by height never puts a child's
            # split before its parent's (ties: equal distances, e.g. one-feature input)
            below = max((tree.height[c - tree.L] for c in (a, b) if c >= tree.L), default=-np.inf)
            tree.add(a, b, max(float(h), float(np.nextafter(below, np.inf))))
        root = tree.n_nodes - 1
        accepted = small_collection_cut(tree, P, D, w, random_state=self.random_state)
        self._make_levels(tree, root, set(), accepted, inv, 1)
        m2 = float(A.sum())
        self.level_scores_ = np.array([modularity(A, lv) for lv in self.levels_]) if m2 > 0 \
            else np.zeros(len(self.levels_))
        self.modularity_level_ = self.auto_level_
        self.agreement_scores_ = np.full((len(self.levels_), 2), np.nan)
        self.small_collection_ = True
        self.unclustered_ = np.zeros(n, bool)
        self._build_index()
        self._probabilities(Z)
        self._select()

    def _fit_single(self, n):
        self.levels_ = np.zeros((1, n), dtype=np.int64)
        self.parents_ = []
        self.n_clusters_per_level_ = np.array([1])
        self.level_scores_ = np.zeros(1)
        self.level_probabilities_ = np.ones((1, n))
        self.auto_level_ = 0
        self.modularity_level_ = 0
        self.agreement_scores_ = np.full((1, 2), np.nan)
        self.groups_level_ = 0
        self.n_groups_ = 1
        self.small_collection_ = False
        self.unclustered_ = np.zeros(n, bool)
        self._build_index()
        self._select()

    def _leaves(self, Z, U, inv, counts):
        """(leaf of each item, leaf centres, leaf sizes, group of each leaf, noise mask)."""
        from sklearn.cluster import KMeans

        from .cluster import knn_vote, single_blas_thread

        n, nu = len(Z), len(U)
        n_cells = self.n_cells or int(min(MAX_CELLS, max(2, round(4 * math.sqrt(n)))))
        n_cells = int(min(n_cells, nu))
        # cells are an over-partition, not a final answer: random starts and at most 20 Lloyd
        # rounds (k-means++ with full convergence took 10 s more on 50,000 x 10, 894 cells)
        with single_blas_thread():  # small dense problems: one thread is faster on a busy box
            km = KMeans(n_clusters=n_cells, n_init=1, init="random", max_iter=20,
                        random_state=self.random_state)
            cell_u = km.fit(U, sample_weight=counts).labels_
        cell = cell_u[inv]
        # density groups on the distinct points (HDBSCAN needs more points than its cluster size)
        group_u = np.full(nu, NOISE, dtype=np.int64)
        if nu > self.min_cluster_size:
            # the hdbscan library: single-threaded and deterministic; fast_hdbscan needs its
            # slower reproducible mode for that (measured 0.1-0.3 s vs 1.3-4.6 s CPU at 5-10k)
            import hdbscan

            h = hdbscan.HDBSCAN(min_cluster_size=int(self.min_cluster_size),
                                min_samples=int(min(self._min_samples_, nu - 1)), core_dist_n_jobs=1)
            group_u = np.asarray(h.fit(U.astype(np.float64)).labels_, dtype=np.int64)
        noise_u = group_u < 0
        if noise_u.all():
            group_u[:] = 0
        elif noise_u.any():
            lab, _, _ = knn_vote(U[~noise_u], group_u[~noise_u], U[noise_u], k=VOTE_NEIGHBORS)
            group_u[noise_u] = lab
        group = group_u[inv]
        noise = noise_u[inv] if not noise_u.all() else np.zeros(n, bool)
        # leaves: (cell, group) pieces
        key = cell.astype(np.int64) * (int(group.max()) + 1) + group
        _, leaf_of_item = np.unique(key, return_inverse=True)
        leaf_of_item = leaf_of_item.ravel()
        L = int(leaf_of_item.max()) + 1
        sizes = np.bincount(leaf_of_item, minlength=L).astype(np.float64)
        centres = np.zeros((L, Z.shape[1]))
        np.add.at(centres, leaf_of_item, Z.astype(np.float64))
        centres /= sizes[:, None]
        group_of_leaf = np.zeros(L, np.int64)
        group_of_leaf[leaf_of_item] = group
        return leaf_of_item, centres, sizes, group_of_leaf, noise

    def _graph(self, Z, knn):
        from .neighbors import symmetric_adjacency

        if knn is None:
            from sklearn.neighbors import NearestNeighbors

            k = int(min(len(Z) - 1, 15 if self.graph_neighbors is None else self.graph_neighbors))
            idx = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z, return_distance=False)
            from .neighbors import self_first

            idx, _ = self_first(idx, np.zeros(idx.shape, np.float32))
            return symmetric_adjacency(idx)
        return symmetric_adjacency(np.asarray(knn[0]), self.graph_neighbors)

    def _make_levels(self, tree, root, above, accepted, leaf_of_item, n_groups, merged=frozenset()):
        """``above``: the density-group splits the default level keeps; ``merged``: those it
        merged (split right after the default level's own splits)."""
        internal = range(tree.L, tree.n_nodes)
        h = {v: tree.height[v - tree.L] for v in internal}
        phase0 = sorted(above, key=lambda v: -h[v])
        phase1 = sorted(set(accepted) - set(above), key=lambda v: -h[v])
        phase2 = sorted(set(merged) - set(accepted), key=lambda v: -h[v])
        rest = sorted(set(internal) - set(accepted) - set(above) - set(merged), key=lambda v: -h[v])
        order = phase0 + phase1 + phase2 + rest
        # a node may only split after its parent: true inside each phase (Ward heights grow
        # toward the root) and across phases (each phase's parents are in it or before it);
        # the check below guards the invariant the nesting depends on
        parent = {}
        for v in internal:
            for c in tree.children(v):
                parent[c] = v
        pos = {v: i for i, v in enumerate(order)}
        for v in order:
            if v in parent and v != root and pos[parent[v]] > pos[v]:
                raise RuntimeError("internal error: split order breaks nesting")
        k_groups = 1 + len(phase0)
        k_auto = k_groups + len(phase1)
        counts = _level_counts(tree.L, [k_groups, k_auto])
        # walk the split order, recording the cut at each requested cluster count
        cluster_of_node = {root: 0}
        levels, parents = [], []
        targets = iter(counts)
        target = next(targets)
        if target == 1:
            self._record(tree, cluster_of_node, leaf_of_item, levels, parents)
            target = next(targets, None)
        for v in order:
            if target is None:
                break
            a, b = tree.children(v)
            c = cluster_of_node.pop(v)
            cluster_of_node[a] = c
            cluster_of_node[b] = len(cluster_of_node)
            if len(cluster_of_node) == target:
                self._record(tree, cluster_of_node, leaf_of_item, levels, parents)
                target = next(targets, None)
        self.levels_ = np.asarray(levels, dtype=np.int64)
        self.parents_ = parents
        self.n_clusters_per_level_ = np.array([int(lv.max()) + 1 for lv in self.levels_])
        self.auto_level_ = int(np.flatnonzero(self.n_clusters_per_level_ == k_auto)[0])
        self.groups_level_ = int(np.flatnonzero(self.n_clusters_per_level_ == k_groups)[0])
        self.n_groups_ = int(n_groups)

    @staticmethod
    def _record(tree, cluster_of_node, leaf_of_item, levels, parents):
        """Append the current cut as a level (clusters numbered by size, largest first) and the
        parent of each of its clusters in the previous level."""
        labels = _cut_labels(tree, cluster_of_node)[leaf_of_item]
        sizes = np.bincount(labels)
        rank = np.empty(len(sizes), np.int64)
        rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
        labels = rank[labels]
        if levels:
            order = np.argsort(labels, kind="stable")
            first_item = order[np.searchsorted(labels[order], np.arange(len(sizes)))]
            parents.append(levels[-1][first_item].astype(np.int64))
        levels.append(labels)

    # -- probabilities, selection ------------------------------------------------------------
    def _build_index(self):
        from sklearn.neighbors import NearestNeighbors

        self._index_ = NearestNeighbors().fit(self._train_)

    def _neighbours(self, Q, exclude_self: bool, threads: bool = False):
        """``threads``: the queries in one block per core, each block on its own thread, when
        the index is a tree (each query's search is its own and runs without the GIL, so the
        answer is the same; a brute-force index is left alone)."""
        n = len(self._train_)
        k = int(min(n, VOTE_NEIGHBORS + (1 if exclude_self else 0)))
        Q = np.asarray(Q, dtype=np.float32)
        if threads and getattr(self._index_, "_fit_method", None) in ("kd_tree", "ball_tree"):
            parts = _map_single_threaded(lambda q: self._index_.kneighbors(q, n_neighbors=k),
                                         [q for q in np.array_split(Q, _cores()) if len(q)])
            dist, idx = np.concatenate([d for d, _ in parts]), np.concatenate([i for _, i in parts])
        else:
            dist, idx = self._index_.kneighbors(Q, n_neighbors=k)
        if exclude_self:
            dist, idx = dist[:, 1:], idx[:, 1:]
        return dist, idx

    def _probabilities(self, Z):
        dist, idx = self._neighbours(Z, exclude_self=True, threads=True)
        if idx.shape[1] == 0:
            self.level_probabilities_ = np.ones(self.levels_.shape)
            return
        w = 1.0 / np.maximum(dist.astype(np.float64), 1e-9)
        w /= w.sum(axis=1, keepdims=True)
        P = np.empty(self.levels_.shape)
        for lv, lab in enumerate(self.levels_):
            P[lv] = (w * (lab[idx] == lab[:, None])).sum(axis=1)
        self.level_probabilities_ = np.clip(P, 0.0, 1.0)  # float rounding can exceed 1

    def _select(self):
        select_level(self, self.unclustered_)

    def _path(self, Z):
        dist, idx = self._neighbours(Z, exclude_self=False)
        return vote_path(dist, idx, self.levels_, self.parents_)

    # -- persistence -------------------------------------------------------------------------
    def to_arrays(self) -> dict:
        """Everything ``predict`` needs, as plain arrays (no pickle)."""
        P = self.parents_
        return {"levels": self.levels_.astype(np.int32), "train": self._train_,
                "parents": np.concatenate(P).astype(np.int32) if P else np.zeros(0, np.int32),
                "parents_offsets": np.cumsum([0] + [len(p) for p in P]).astype(np.int64),
                "level_scores": self.level_scores_, "level_probabilities": self.level_probabilities_.astype(np.float32),
                "unclustered": self.unclustered_,
                "agreement_scores": self.agreement_scores_,
                "meta": np.array([self.auto_level_, self.groups_level_, self.n_groups_,
                                  self.modularity_level_, int(self.small_collection_)], np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict, **params):
        """Rebuild a fitted clusterer from :meth:`to_arrays` (``params`` = constructor params)."""
        self = cls(**params)
        self.levels_ = np.asarray(arrays["levels"], dtype=np.int64)
        off = np.asarray(arrays["parents_offsets"])
        flat = np.asarray(arrays["parents"], dtype=np.int64)
        self.parents_ = [flat[off[i]:off[i + 1]] for i in range(len(off) - 1)]
        self._train_ = np.asarray(arrays["train"], dtype=np.float32)
        self.level_scores_ = np.asarray(arrays["level_scores"], dtype=np.float64)
        self.level_probabilities_ = np.asarray(arrays["level_probabilities"], dtype=np.float64)
        self.unclustered_ = np.asarray(arrays["unclustered"], dtype=bool)
        meta = [int(x) for x in arrays["meta"]]
        self.auto_level_, self.groups_level_, self.n_groups_ = meta[:3]
        self.modularity_level_ = meta[3] if len(meta) > 3 else self.auto_level_  # saved before 4
        self.small_collection_ = bool(meta[4]) if len(meta) > 4 else False  # saved before 5
        self.agreement_scores_ = np.asarray(arrays["agreement_scores"], dtype=np.float64) \
            if "agreement_scores" in arrays else np.full((len(self.levels_), 2), np.nan)
        self.n_clusters_per_level_ = np.array([int(lv.max()) + 1 for lv in self.levels_])
        self.n_features_in_ = int(self._train_.shape[1])
        self._build_index()
        self._select()
        return self


# ------------------------------------------------------------------------------------------
# the engine: neighbour graph once -> UMAP on it -> hierarchy on it
# ------------------------------------------------------------------------------------------
ENGINE_REDUCER = {"n_neighbors": 15, "n_components": 10, "min_dist": 0.0, "n_epochs": 200,
                  "init": "pca", "metric": "cosine"}


def reduce_and_cluster(X, random_state: int | None = 0, knn_method: str = "auto",
                       reducer: dict | None = None, **clusterer_params) -> dict:
    """Fit the engine on raw vectors ``X`` (n, d): one kNN graph (``stages.neighbors``) shared
    by UMAP (``ENGINE_REDUCER`` settings, overridable through ``reducer``) and the hierarchy's
    criterion. Identical vectors are fitted once (and so always share every cluster); with
    fewer distinct vectors than UMAP needs, the L2-normalised vectors are clustered directly.

    Returns ``{"embedding": Z, "knn": (idx, dist) of the distinct rows, "clusterer":
    HierarchyClusterer, "inverse": row -> distinct row, "timings": {step: seconds}}``; the
    clusterer's ``levels_`` / ``labels_`` are per row of ``X``.
    """
    import time

    from .neighbors import knn_graph
    from .reduce import UMAPReducer, during_layout

    p = dict(ENGINE_REDUCER, **(reducer or {}))
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) < 3:
        raise InputError(f"need a 2-D array of at least 3 vectors, got shape {X.shape}")
    timings = {}
    t = time.perf_counter()
    U, inv, _ = unique_rows(X)
    timings["dedupe"] = time.perf_counter() - t
    nn = int(p["n_neighbors"])
    t = time.perf_counter()
    knn = knn_graph(U, min(nn, len(U)), metric=p["metric"], method=knn_method) if len(U) > 1 else None
    timings["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    view = None
    if len(U) > max(int(p["n_components"]) + 2, nn):
        import threading
        import warnings

        # the agreement check's PCA of X and its likeliest K-means starts need X only: computed
        # while the seeded (serial) layout keeps one core busy, until the layout ends;
        # random_state None draws its seed inside agreement_level
        stop = threading.Event()
        job = (lambda: agreement_prefit(X, int(random_state) % 2**32, stop)) if random_state is not None else None
        with warnings.catch_warnings(), during_layout(job, stop=stop) as view:  # umap-learn's index for transform, unused
            warnings.filterwarnings("ignore", message=".*Failed to correctly find n_neighbors.*")
            Z = UMAPReducer(n_neighbors=nn, n_components=int(p["n_components"]),
                            min_dist=float(p["min_dist"]),
                            metric=p["metric"], n_epochs=p["n_epochs"], init=p["init"],
                            random_state=random_state).fit(U, precomputed_knn=knn).embedding_
    else:
        Z = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12) if p["metric"] == "cosine" else U
    timings["reduce"] = time.perf_counter() - t
    t = time.perf_counter()
    Zfull = np.asarray(Z, dtype=np.float32)[inv]
    knn_full = None
    if knn is not None and len(U) == len(X):
        knn_full = knn
    view, starts = view.result() if view is not None and view.done() else (None, None)
    clusterer = HierarchyClusterer(random_state=random_state, **clusterer_params)
    if knn is not None and len(U) < len(X):
        # the criterion graph is over distinct rows; duplicates join their first copy's list
        clusterer.fit(Zfull, knn=_expand_knn(knn, inv), vectors=X, agreement_view=view, agreement_starts=starts)
    else:
        clusterer.fit(Zfull, knn=knn_full, vectors=X, agreement_view=view, agreement_starts=starts)
    timings["cluster"] = time.perf_counter() - t
    return {"embedding": Zfull, "knn": knn, "clusterer": clusterer, "inverse": inv, "timings": timings}


def _expand_knn(knn, inv):
    """A kNN list per row of the full data from one per distinct row: each row takes its
    distinct row's neighbours (mapped to the first row holding each), itself first."""
    idx, dist = knn
    n = len(inv)
    rep = np.zeros(int(inv.max()) + 1, np.int64)
    rep[inv[::-1]] = np.arange(n)[::-1]  # repeated indices: the last write (smallest row) wins
    full_idx = rep[np.asarray(idx)][inv].copy()
    full_idx[:, 0] = np.arange(len(inv))
    return full_idx, np.asarray(dist)[inv]


def _leaves_under(tree: _Tree, v: int):
    stack, out = [v], []
    while stack:
        u = stack.pop()
        if u < tree.L:
            out.append(u)
        else:
            stack.extend(tree.children(u))
    return out


def _cut_labels(tree, cluster_of_node):
    lab = np.empty(tree.L, np.int64)
    for v, c in cluster_of_node.items():
        lab[_leaves_under(tree, v)] = c
    return lab


def vote_path(dist: np.ndarray, idx: np.ndarray, levels: np.ndarray, parents: list,
              n_clusters: list[int] | None = None):
    """Top-down distance-weighted vote of reference items ``idx`` (with distances ``dist``)
    over nested ``levels`` (n_levels, n_ref). Returns ``(labels, probabilities)`` (n_levels, m).

    Level 0: the cluster with the largest weight among the neighbours. Level l + 1: among the
    children of the level-l choice, the one with the largest weight; probability = its weight
    over the weight of the neighbours inside the level-l choice. When no neighbour lies in any
    child (possible only for points far from every training item), the largest child by training
    size is taken with probability 0. A query at distance 0 from a training item gets that
    item's path (its weight dominates). ``n_clusters``: ``levels[l].max() + 1`` per level, when the
    caller has it (saves a pass over ``levels`` per level and call).
    """
    dist = np.asarray(dist, dtype=np.float64)
    idx = np.asarray(idx)
    m = len(idx)
    n_levels = len(levels)
    w = 1.0 / np.maximum(dist, 1e-9)
    out = np.zeros((n_levels, m), np.int64)
    prob = np.zeros((n_levels, m))
    inside = np.ones(w.shape, bool)  # neighbours inside the current path's cluster
    for lv in range(n_levels):
        lab = levels[lv][idx]  # (m, k)
        K = int(levels[lv].max()) + 1 if n_clusters is None else int(n_clusters[lv])
        if lv == 0:
            allowed = None
        else:
            par = parents[lv - 1]
            allowed = par[None, :] == out[lv - 1][:, None]  # (m, K) children of the chosen parent
        rows = np.repeat(np.arange(m), lab.shape[1])
        tally = np.bincount(rows * K + lab.ravel(), weights=(w * inside).ravel(),
                            minlength=m * K).reshape(m, K)
        if allowed is not None:
            tally = np.where(allowed, tally, -1.0)
        choice = tally.argmax(axis=1)
        total = (w * inside).sum(axis=1)
        got = tally[np.arange(m), choice]
        empty = got <= 0
        if empty.any() and allowed is not None:
            sizes = np.bincount(levels[lv], minlength=K).astype(float)
            for r in np.flatnonzero(empty):
                kids = np.flatnonzero(allowed[r])
                choice[r] = kids[np.argmax(sizes[kids])]
        out[lv] = choice
        prob[lv] = np.where(empty, 0.0, got / np.maximum(total, 1e-300))
        inside = inside & (lab == choice[:, None])
    return out, np.clip(prob, 0.0, 1.0)


def tree_above(fine: np.ndarray, labelled: np.ndarray, levels: np.ndarray, junk=()):
    """Coarse levels above a given flat clustering (a person's curated clusters), taken from a
    nested tree fitted on the same items (``levels`` (L, n), row 0 coarsest: the run's levels
    coarser than the clustering the person started from).

    The rule, top-down and nested by construction: each cluster ``c`` of ``fine`` (every item
    has one, ``>= 0``) follows the majority of its ``labelled`` items down the tree: at level 0
    the cluster most of them are in, at level ``l`` the cluster most of those still on its
    path are in (so a child of its level ``l - 1`` choice; ties: the smaller id). Its cluster at
    level ``l`` is the tree's cluster it chose there, so every fine cluster has exactly one
    parent and every coarse cluster is one of the tree's (its names apply). Clusters in
    ``junk`` form their own branch (one cluster per coarse level): a junk group is not part of
    the kinds above it. A level is kept only when it has at least 2 clusters, more than the
    kept level above it and fewer than ``fine``: the others would repeat a neighbour.

    Returns ``(rows, parents, sources)``: ``rows`` (K + 1, n) the kept coarse levels (ids
    renumbered 0.. in the tree's order, the junk branch last) and ``fine`` as the last row;
    ``parents[j]`` level ``j + 1``'s parent ids (indexed by cluster id; an id ``fine`` does
    not use gets parent 0); ``sources[j]`` = ``{"level": row of levels, "clusters": array new
    id -> the tree's cluster id, -1 for the junk branch}``. K = 0 (no coarse level): nothing
    above the clustering."""
    fine = np.asarray(fine, dtype=np.int64)
    labelled = np.asarray(labelled, dtype=bool)
    levels = np.asarray(levels, dtype=np.int64).reshape(-1, len(fine))
    if fine.min(initial=0) < 0:
        raise InputError("every item needs a cluster >= 0 in the finest level")
    ids = np.unique(fine)
    junk = set(int(c) for c in junk)
    n_levels = len(levels)
    path = np.full((len(ids), n_levels), -1, np.int64)  # each fine cluster's tree cluster per level
    order = np.argsort(fine, kind="stable")
    starts = np.searchsorted(fine[order], ids)
    ends = np.append(starts[1:], len(fine))
    for i, c in enumerate(ids.tolist()):
        if c in junk:
            continue
        idx = order[starts[i]:ends[i]]
        own = idx[labelled[idx]]
        idx = own if len(own) else idx  # a cluster only of assigned items: follow them
        for lv in range(n_levels):
            vals = levels[lv, idx]
            choice = int(np.bincount(vals).argmax())
            path[i, lv] = choice
            idx = idx[vals == choice]
    kept, new_ids, sources = [], [], []
    last = 1
    for lv in range(n_levels):
        col = path[:, lv]
        tree_ids = np.unique(col[col >= 0])
        src = np.concatenate([tree_ids, [-1]]) if (col < 0).any() else tree_ids
        if not (last < len(src) < len(ids)):
            continue
        last = len(src)
        new = np.searchsorted(tree_ids, col)
        new[col < 0] = len(tree_ids)  # the junk branch
        kept.append(lv)
        new_ids.append(new)
        sources.append({"level": lv, "clusters": src.astype(np.int64)})
    n_fine = int(fine.max()) + 1 if len(fine) else 0
    where = np.searchsorted(ids, fine)  # each item's row in ids
    rows = [new[where] for new in new_ids] + [fine]
    parents = []
    for j in range(1, len(new_ids)):
        par = np.zeros(len(sources[j]["clusters"]), np.int64)
        par[new_ids[j]] = new_ids[j - 1]
        if (par[new_ids[j]] != new_ids[j - 1]).any():
            raise InputError(f"levels {sources[j - 1]['level']} and {sources[j]['level']} of the tree "
                             "are not nested")
        parents.append(par)
    if new_ids:
        par = np.zeros(n_fine, np.int64)
        par[ids] = new_ids[-1]
        parents.append(par)
    return np.stack(rows).astype(np.int64), parents, sources
