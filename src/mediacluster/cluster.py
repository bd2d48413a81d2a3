"""Clustering stages: HDBSCAN and the classic alternatives behind fit / labels_ / predict."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin


class HDBSCANClusterer(BaseEstimator, ClusterMixin):
    """HDBSCAN (``hdbscan`` package); noise is -1, ``probabilities_`` is membership strength."""

    def __init__(self, min_cluster_size: int = 50, min_samples: int | None = None,
                 cluster_selection_method: str = "eom", cluster_selection_epsilon: float = 0.0,
                 alpha: float = 1.0):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.alpha = alpha

    def fit(self, X, y=None):
        import hdbscan

        X = np.asarray(X, dtype=np.float64)
        self.model_ = hdbscan.HDBSCAN(
            min_cluster_size=self.min_cluster_size, min_samples=self.min_samples,
            cluster_selection_method=self.cluster_selection_method,
            cluster_selection_epsilon=self.cluster_selection_epsilon, alpha=self.alpha,
            prediction_data=True,
        ).fit(X)
        self.labels_ = self.model_.labels_.astype(np.int64)
        self.probabilities_ = self.model_.probabilities_.astype(np.float64)
        return self

    def predict(self, X):
        import hdbscan

        labels, strengths = hdbscan.approximate_predict(self.model_, np.asarray(X, dtype=np.float64))
        return labels.astype(np.int64), strengths
