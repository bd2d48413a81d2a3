"""The k-nearest-neighbour graph of the input vectors, computed once and shared.

UMAP (``UMAPReducer.fit(X, precomputed_knn=...)``) and the hierarchy's level criterion
(``HierarchyClusterer.fit(Z, knn=...)``) both take the graph this module returns, so the most
expensive step of a fit runs once. ``method``:

* ``"exact"``: faiss brute force (``IndexFlatIP`` on L2-normalised rows for cosine,
  ``IndexFlatL2`` for euclidean), in blocks of queries; the reference.
* ``"nndescent"`` (cosine only): EVoC's NN-descent (``evoc.knn_graph``: random-projection trees
  then neighbour-of-neighbour refinement, both cores, reproducible with a seed). Measured on
  CIFAR-10 train (50,000 x 1,280, k=15): 11 CPU-s at recall 0.927, where faiss exact took 78 CPU-s
  and faiss IVF 25-80 CPU-s for recall 0.74-0.95 (its k-means training alone ~13 s).
* ``"ivf"``: faiss ``IndexIVFFlat`` (``nlist ~ 4 sqrt(n)`` lists, ``nprobe`` searched), for the
  euclidean metric on large inputs.
* ``"svd"`` (cosine only): exact inner-product search (faiss) among the unit rows projected on
  their top ``dims`` right singular vectors (uncentred, so inner products keep all but the
  dropped energy); distances are ``1 -`` the projected inner product. For the large k of a
  tuning study (k = 2,000 on 50,000 x 1,280), where the exact search's cost is its matrix
  product and NN-descent's grows with k^2: 256 dims cut the CPU time by about half at recall
  0.95 (k = 1,500) / 0.86 (k = 15) against exact (benchmarks/RESULTS.md, Tuning, "session 5").
* ``"auto"``: exact up to ``EXACT_MAX`` items (3 CPU-s at 10,000 x 1,280), above that
  NN-descent for cosine and IVF for euclidean (exact search grows as n^2).

The tuner keeps its own ``mediacluster.tune.workspace.knn_graph`` (for < 4,096 items it
reproduces umap-learn's small-data graph bit for bit, which its tests rely on); for larger inputs
both are the same faiss exact search.

>>> from mediacluster.stages.neighbors import knn_graph
>>> idx, dist = knn_graph(vectors, k=30)                     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, ParameterError

EXACT_MAX = 10000
METHODS = ("auto", "exact", "nndescent", "ivf", "svd")
SVD_DIMS = 256
METRICS = ("cosine", "euclidean")


def _prepare(X: np.ndarray, metric: str) -> np.ndarray:
    Y = np.ascontiguousarray(X, dtype=np.float32)
    if metric == "cosine":
        Y = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(Y, dtype=np.float32)


def _to_distance(D: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":  # inner products of unit vectors -> cosine distance
        return np.maximum(1.0 - D, 0.0).astype(np.float32)
    return np.sqrt(np.maximum(D, 0.0)).astype(np.float32)


def knn_graph(X, k: int, metric: str = "cosine", method: str = "auto", nprobe: int | None = None,
              block: int = 4096, random_state: int | None = 0,
              dims: int = SVD_DIMS) -> tuple[np.ndarray, np.ndarray]:
    """``k`` nearest neighbours of every row of ``X`` among the rows of ``X``.

    Returns ``(indices int32 (n, k), distances float32 (n, k))`` sorted by distance, with
    column 0 the point itself at distance 0 (as umap-learn's ``precomputed_knn`` expects; exact
    duplicates are reordered so that this holds). ``k`` is clipped to ``n``.
    """
    import faiss

    if metric not in METRICS:
        raise ParameterError(f"knn_graph: metric must be one of {METRICS}, not {metric!r}", "metric")
    if method not in METHODS:
        raise ParameterError(f"knn_graph: method must be one of {METHODS}, not {method!r}", "method")
    X = np.asarray(X)
    if X.ndim != 2 or len(X) < 2:
        raise InputError(f"knn_graph needs a 2-D array of at least 2 rows, got shape {X.shape}")
    n = len(X)
    k = int(min(int(k), n))
    if k < 1:
        raise ParameterError(f"knn_graph: k must be >= 1, got {k}", "k")
    Y = _prepare(X, metric)
    d = Y.shape[1]
    if method == "auto":
        method = "exact" if n <= EXACT_MAX else ("nndescent" if metric == "cosine" else "ivf")
    if method == "nndescent":
        if metric != "cosine":
            raise ParameterError(f"knn_graph: method='nndescent' (EVoC's) supports metric='cosine' only, "
                                 f"not {metric!r}", "metric")
        from evoc.knn_graph import knn_graph as evoc_knn  # numba kernels: imported when used

        idx, dist = evoc_knn(Y, n_neighbors=k, random_state=random_state)
        # EVoC reports -log2(cosine similarity); back to cosine distance 1 - similarity
        dist = (1.0 - np.exp2(-np.asarray(dist, dtype=np.float64))).astype(np.float32)
        idx, dist = self_first(np.asarray(idx, dtype=np.int64).copy(), np.maximum(dist, 0.0))
        return idx.astype(np.int32), dist
    if method == "svd":
        if metric != "cosine":
            raise ParameterError(f"knn_graph: method='svd' (a projection of unit rows) supports metric='cosine' "
                                 f"only, not {metric!r}; use method='exact' or 'ivf' for {metric!r}", "metric")
        Y = svd_project(Y, dims)
        d = Y.shape[1]
    inner = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if method in ("exact", "svd"):
        index = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
    else:
        nlist = int(max(1, min(n // 39, round(4 * np.sqrt(n)))))  # faiss wants >= 39 points per list
        quantizer = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, inner)
        index.cp.seed = 1234  # faiss's default, stated: the graph is reproducible
        index.train(Y)
        index.nprobe = int(nprobe) if nprobe else max(1, min(nlist, nlist // 16 or 1))
    index.add(Y)
    idx = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float32)
    for s in range(0, n, block):
        D, Ind = index.search(Y[s:s + block], k)
        idx[s:s + block] = Ind
        dist[s:s + block] = _to_distance(D, metric)
    missing = idx < 0  # IVF may return fewer than k hits for a query in a sparse list
    if missing.any():
        rows = np.flatnonzero(missing.any(axis=1))
        exact = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        exact.add(Y)
        D, Ind = exact.search(Y[rows], k)
        idx[rows], dist[rows] = Ind, _to_distance(D, metric)
    idx, dist = self_first(idx, dist)
    if method == "svd":  # a projected row's inner product with itself is its kept energy, < 1
        dist[:, 0] = 0.0
    return idx.astype(np.int32), dist


def svd_project(Y: np.ndarray, dims: int) -> np.ndarray:
    """``Y`` (n, d) projected on its top ``dims`` right singular vectors, uncentred (the
    eigenvectors of ``Y.T @ Y``, computed in float64): inner products between rows are kept up
    to the energy of the dropped directions. ``Y`` itself when ``dims >= d``.

    On one BLAS thread: OpenBLAS splits ``Y.T @ Y``'s sums by its thread count, so the same
    rows gave other bits on 2 threads than on 1 (20,000 x 256: up to 2e-7; a tuning study's
    cached 50,000-item graph differed in a row of neighbours, and with it a trial's score), and
    a cached graph or a study would depend on the machine's core count, which nothing records.
    Cost: the Gram product on one core (~1-2 s at 50,000 x 1,280, once per study)."""
    if dims >= Y.shape[1]:
        return Y
    from threadpoolctl import threadpool_limits

    Y64 = Y.astype(np.float64)
    with threadpool_limits(limits=1, user_api="blas"):
        _, V = np.linalg.eigh(Y64.T @ Y64)
        V = V[:, ::-1][:, :int(dims)]
        return np.ascontiguousarray(Y64 @ V, dtype=np.float32)


def self_first(idx: np.ndarray, dist: np.ndarray):
    """Make column 0 each point itself at distance 0 (duplicates or an approximate search may
    have displaced it); the other columns keep their order."""
    n = len(idx)
    bad = np.flatnonzero(idx[:, 0] != np.arange(n))
    for i in bad:
        r = idx[i].tolist()
        if i in r:
            j = r.index(i)
            idx[i, 1:j + 1] = idx[i, :j].copy()
            dist[i, 1:j + 1] = dist[i, :j].copy()
        else:
            idx[i, 1:] = idx[i, :-1].copy()
            dist[i, 1:] = dist[i, :-1].copy()
        idx[i, 0] = i
        dist[i, 0] = 0.0
    return idx, dist


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row's exact neighbours that the approximate graph found."""
    k = min(approx.shape[1], exact.shape[1])
    hits = [len(np.intersect1d(a[:k], b[:k], assume_unique=False)) for a, b in zip(approx, exact)]
    return float(np.mean(hits) / k)


def symmetric_adjacency(indices: np.ndarray, n_neighbors: int | None = None):
    """Unweighted undirected graph (scipy CSR, 0/1) of the kNN lists, self loops dropped: an
    edge joins i and j when either is among the other's ``n_neighbors`` nearest."""
    import scipy.sparse as sp

    idx = np.asarray(indices)
    n = len(idx)
    k = idx.shape[1] - 1 if n_neighbors is None else int(min(n_neighbors, idx.shape[1] - 1))
    if k < 1:
        return sp.csr_matrix((n, n))
    rows = np.repeat(np.arange(n), k)
    cols = idx[:, 1:k + 1].ravel().astype(np.int64)
    keep = (cols != rows) & (cols >= 0)
    A = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(n, n))
    A = A.maximum(A.T).tocsr()
    A.data[:] = 1.0
    return A
