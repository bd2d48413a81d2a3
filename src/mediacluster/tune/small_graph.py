"""The tuner's exact graph below umap-learn's small-data threshold, compiled once per machine.

``workspace.knn_graph`` reproduces umap-learn's small-data path bit for bit (umap's own numba
metric on every pair, then ``umap.utils.fast_knn_indices``), so a trial on a 2,000-item rung
equals a plain fit on that subsample. Compiled as closures over the metric, and with umap's
``fast_knn_indices`` carrying no ``cache=True``, that cost 12 CPU s in every study (numba
compilation ~10 s of it, on one core while the other waited for the graph). Here the same loops
are module-level functions with numba's disk cache, and the pair loop runs over both cores: each
pair is still one call of umap's metric, so the values are the same.

Imported only when the tuner builds a small graph (numba and umap are heavy).
"""

from __future__ import annotations

import numba
import numpy as np
from umap.distances import cosine, euclidean

# the metrics with a cached kernel (a code, not the function: a kernel taking a function as an
# argument, like workspace._pairwise_numba's closure, cannot use numba's disk cache)
METRICS = {"cosine": 0, "euclidean": 1}


@numba.njit(nogil=True, parallel=True, cache=True)
def _pairwise(X, metric):
    n = X.shape[0]
    out = np.zeros((n, n), dtype=X.dtype)
    for i in numba.prange(n):
        for j in range(i + 1, n):
            out[i, j] = cosine(X[i], X[j]) if metric == 0 else euclidean(X[i], X[j])
    out = out + out.T
    for i in range(n):
        out[i, i] = cosine(X[i], X[i]) if metric == 0 else euclidean(X[i], X[i])
    return out


def pairwise(X, metric: str):
    """``sklearn.metrics.pairwise_distances(X, metric=umap's metric)`` for a metric in
    ``METRICS``: every pair is one call of umap's numba metric, as umap-learn's small-data path."""
    return _pairwise(X, METRICS[metric])


@numba.njit(parallel=True, cache=True)
def fast_knn_indices(X, n_neighbors):
    """``umap.utils.fast_knn_indices`` (umap-learn 0.5), the same loop with a disk cache: each
    row's first ``n_neighbors`` by a stable sort."""
    knn_indices = np.empty((X.shape[0], n_neighbors), dtype=np.int32)
    for row in numba.prange(X.shape[0]):
        v = X[row].argsort(kind="mergesort")
        v = v[:n_neighbors]
        knn_indices[row] = v
    return knn_indices
