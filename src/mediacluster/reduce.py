"""Dimensionality reduction stages behind one small interface: ``fit`` / ``transform`` / ``embedding_``.

Every reducer is a scikit-learn estimator (constructor stores parameters only; ``fit`` returns
``self``; learned state ends in ``_``) and accepts ``fit(X, y=None, precomputed_knn=None)`` so the
tuner can pass one neighbour graph to every trial (only UMAP uses it; the others ignore it).

>>> from mediacluster.reduce import UMAPReducer
>>> Z = UMAPReducer(n_components=10, n_neighbors=30).fit_transform(vectors)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class _Reducer(BaseEstimator, TransformerMixin):
    def fit_transform(self, X, y=None, precomputed_knn=None):
        return self.fit(X, y, precomputed_knn=precomputed_knn).embedding_


class UMAPReducer(_Reducer):
    """UMAP (umap-learn) with every parameter the source study tuned.

    ``fit(X, precomputed_knn=(indices, distances))`` reuses a neighbour graph computed once
    (``k >= n_neighbors`` columns, the first ``n_neighbors`` are used, column 0 is the point
    itself as umap-learn expects). Without a search index umap-learn cannot ``transform`` new
    points, so such a fit is for exploring/tuning; ``Pipeline.predict`` does not need it (it maps
    new items through its own neighbour predictor, see ``mediacluster.pipeline``).

    ``random_state=None`` lets umap-learn use both cores (faster, not reproducible); an int
    makes the result reproducible and single-threaded. ``init`` is umap-learn's layout start
    (``"spectral"``, ``"pca"``, ``"tswspectral"``, ``"random"``): the spectral start solves an
    eigenproblem that cost as much as 100 layout epochs on 10,000 items (benchmarks/engine.py).
    """

    def __init__(self, n_neighbors: int = 30, n_components: int = 10, min_dist: float = 0.0,
                 spread: float = 1.0, metric: str = "cosine", n_epochs: int | None = None,
                 random_state: int | None = 0, init: str = "spectral"):
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.min_dist = min_dist
        self.spread = spread
        self.metric = metric
        self.n_epochs = n_epochs
        self.random_state = random_state
        self.init = init

    def fit(self, X, y=None, precomputed_knn=None):
        import umap

        X = np.asarray(X, dtype=np.float32)
        nn = int(min(self.n_neighbors, max(2, len(X) - 1)))
        kw = {}
        if precomputed_knn is not None:
            idx, dist = precomputed_knn
            idx, dist = np.asarray(idx), np.asarray(dist)
            if idx.shape != dist.shape or idx.shape[0] != len(X) or idx.shape[1] < nn:
                raise ValueError(
                    f"precomputed_knn must be two (n, k) arrays with n={len(X)} and k >= n_neighbors={nn}; "
                    f"got {idx.shape} and {dist.shape}")
            kw["precomputed_knn"] = (np.ascontiguousarray(idx[:, :nn], dtype=np.int32),
                                     np.ascontiguousarray(dist[:, :nn], dtype=np.float32), None)
        import warnings

        self.umap_ = umap.UMAP(
            n_neighbors=nn, n_components=int(self.n_components), min_dist=float(self.min_dist),
            spread=float(self.spread), metric=self.metric, n_epochs=self.n_epochs,
            random_state=self.random_state, init=self.init, **kw,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs value.*")
            warnings.filterwarnings("ignore", message=".*precomputed_knn.*")
            self.embedding_ = np.asarray(self.umap_.fit_transform(X), dtype=np.float32)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return np.asarray(self.umap_.transform(np.asarray(X, dtype=np.float32)), dtype=np.float32)


class PCAReducer(_Reducer):
    """Principal component analysis (scikit-learn ``PCA``)."""

    def __init__(self, n_components: int = 50, whiten: bool = False, random_state: int | None = 0):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None, precomputed_knn=None):
        from sklearn.decomposition import PCA

        X = np.asarray(X, dtype=np.float32)
        k = int(min(self.n_components, X.shape[0], X.shape[1]))
        self.pca_ = PCA(n_components=k, whiten=self.whiten, random_state=self.random_state)
        self.embedding_ = self.pca_.fit_transform(X).astype(np.float32)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return self.pca_.transform(np.asarray(X, dtype=np.float32)).astype(np.float32)


class IncrementalPCAReducer(_Reducer):
    """PCA fitted batch by batch (scikit-learn ``IncrementalPCA``) for data not held in memory.

    ``X`` may be an array, a ``np.memmap`` / ``np.load(..., mmap_mode="r")`` array (read one
    batch at a time), or an iterable of 2-D batches (e.g. a generator reading Parquet row
    groups). With an iterable, ``embedding_`` is built by a second pass only if the iterable can
    be iterated again (a list); for a one-shot generator call ``transform`` batch-wise yourself.
    """

    def __init__(self, n_components: int = 50, batch_size: int = 2048, whiten: bool = False):
        self.n_components = n_components
        self.batch_size = batch_size
        self.whiten = whiten

    def _batches(self, X) -> Iterable[np.ndarray]:
        if hasattr(X, "shape") and hasattr(X, "__getitem__"):
            for s in range(0, X.shape[0], self.batch_size):
                yield np.asarray(X[s:s + self.batch_size], dtype=np.float32)
        else:
            for b in X:
                yield np.asarray(b, dtype=np.float32)

    def fit(self, X, y=None, precomputed_knn=None):
        from sklearn.decomposition import IncrementalPCA

        self.ipca_ = IncrementalPCA(n_components=int(self.n_components), whiten=self.whiten)
        pending = None  # partial_fit needs >= n_components rows per call: merge small tails
        for b in self._batches(X):
            pending = b if pending is None else np.vstack([pending, b])
            if len(pending) >= self.n_components:
                self.ipca_.partial_fit(pending)
                pending = None
        if pending is not None:
            if not hasattr(self.ipca_, "components_"):
                raise ValueError(f"IncrementalPCA needs at least n_components={self.n_components} rows")
            if len(pending) >= self.n_components:
                self.ipca_.partial_fit(pending)
        reiterable = hasattr(X, "shape") or isinstance(X, list | tuple)
        self.embedding_ = (np.vstack([self.transform(b) for b in self._batches(X)])
                           if reiterable else None)
        self.n_features_in_ = int(self.ipca_.components_.shape[1])
        return self

    def transform(self, X):
        return self.ipca_.transform(np.asarray(X, dtype=np.float32)).astype(np.float32)


class KernelPCAReducer(_Reducer):
    """Kernel PCA (scikit-learn ``KernelPCA``); O(n^2) memory, for collections up to ~20k items."""

    def __init__(self, n_components: int = 10, kernel: str = "rbf", gamma: float | None = None,
                 degree: int = 3, random_state: int | None = 0):
        self.n_components = n_components
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.random_state = random_state

    def fit(self, X, y=None, precomputed_knn=None):
        from sklearn.decomposition import KernelPCA

        X = np.asarray(X, dtype=np.float32)
        self.kpca_ = KernelPCA(
            n_components=int(min(self.n_components, len(X))), kernel=self.kernel, gamma=self.gamma,
            degree=self.degree, random_state=self.random_state,
            eigen_solver="randomized" if len(X) > 2000 else "auto",
        )
        self.embedding_ = self.kpca_.fit_transform(X).astype(np.float32)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return self.kpca_.transform(np.asarray(X, dtype=np.float32)).astype(np.float32)


class NoReduction(_Reducer):
    """Pass the vectors through unchanged (the "none" stage)."""

    def fit(self, X, y=None, precomputed_knn=None):
        self.embedding_ = np.asarray(X, dtype=np.float32)
        self.n_features_in_ = self.embedding_.shape[1]
        return self

    def transform(self, X):
        return np.asarray(X, dtype=np.float32)


REDUCERS = {
    "umap": UMAPReducer,
    "pca": PCAReducer,
    "ipca": IncrementalPCAReducer,
    "incremental_pca": IncrementalPCAReducer,
    "kernel_pca": KernelPCAReducer,
    "kpca": KernelPCAReducer,
    "none": NoReduction,
}
