"""Pipeline: reduce -> remove outliers -> cluster (-> optionally assign noise), one object.

Each stage is a scikit-learn style estimator passed to the constructor; ``None`` means "skip".
The pipeline only composes them; the work lives in the stages.

Label convention (as in the source study): ``-2`` = removed as an outlier, ``-1`` = clustering
noise, ``>= 0`` = cluster id.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator

OUTLIER = -2
NOISE = -1


def default_min_cluster_size(n: int) -> int:
    """min_cluster_size scaled to the collection.

    The source study used 500 at 50k items (1%); we keep 1% with floors so small collections
    still form clusters.
    """
    return int(max(5, min(1000, round(0.01 * n))))


class Pipeline(BaseEstimator):
    """Compose a reducer, an outlier detector and a clusterer.

    Parameters
    ----------
    reducer : estimator with fit_transform/transform, or None
    outliers : estimator with fit/predict (True = outlier), or None
    clusterer : estimator with fit / labels_ / probabilities_ / predict
    random_state : int, seed passed on to stages that take one at fit time
    """

    def __init__(self, reducer="auto", outliers=None, clusterer="auto", random_state: int = 0):
        self.reducer = reducer
        self.outliers = outliers
        self.clusterer = clusterer
        self.random_state = random_state

    # -- building the default stages -------------------------------------------------------
    def _resolve(self, n: int):
        from .cluster import HDBSCANClusterer
        from .reduce import UMAPReducer

        reducer = self.reducer
        if isinstance(reducer, str) and reducer == "auto":
            reducer = UMAPReducer(
                n_neighbors=min(30, max(2, n - 1)), n_components=10, min_dist=0.0,
                random_state=self.random_state,
            )
        clusterer = self.clusterer
        if isinstance(clusterer, str) and clusterer == "auto":
            clusterer = HDBSCANClusterer(min_cluster_size=default_min_cluster_size(n))
        return reducer, self.outliers, clusterer

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float32)
        n = len(X)
        self.timings_ = {}
        reducer, outliers, clusterer = self._resolve(n)
        t = time.perf_counter()
        Z = reducer.fit_transform(X) if reducer is not None else X
        self.timings_["reduce"] = time.perf_counter() - t
        labels = np.full(n, NOISE, dtype=np.int64)
        probs = np.zeros(n, dtype=np.float64)
        keep = np.ones(n, dtype=bool)
        t = time.perf_counter()
        if outliers is not None:
            keep = ~outliers.fit(Z).outlier_mask_
        self.timings_["outliers"] = time.perf_counter() - t
        t = time.perf_counter()
        clusterer.fit(Z[keep])
        labels[keep] = clusterer.labels_
        probs[keep] = clusterer.probabilities_
        labels[~keep] = OUTLIER
        self.timings_["cluster"] = time.perf_counter() - t
        self.reducer_, self.outliers_, self.clusterer_ = reducer, outliers, clusterer
        self.embedding_ = Z
        self.labels_ = labels
        self.probabilities_ = probs
        return self

    def fit_predict(self, X, y=None):
        return self.fit(X).labels_

    @property
    def n_clusters_(self) -> int:
        return int(len(set(self.labels_.tolist()) - {NOISE, OUTLIER}))
