"""Dimensionality reduction stages (UMAP, PCA, ...), one small interface: fit / transform."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class UMAPReducer(BaseEstimator, TransformerMixin):
    """UMAP (umap-learn) with the parameters the source study tuned."""

    def __init__(self, n_neighbors: int = 30, n_components: int = 10, min_dist: float = 0.0,
                 spread: float = 1.0, metric: str = "cosine", n_epochs: int | None = None,
                 random_state: int | None = 0):
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.min_dist = min_dist
        self.spread = spread
        self.metric = metric
        self.n_epochs = n_epochs
        self.random_state = random_state

    def fit(self, X, y=None):
        import umap

        X = np.asarray(X, dtype=np.float32)
        self.umap_ = umap.UMAP(
            n_neighbors=min(self.n_neighbors, max(2, len(X) - 1)),
            n_components=self.n_components, min_dist=self.min_dist, spread=self.spread,
            metric=self.metric, n_epochs=self.n_epochs, random_state=self.random_state,
        )
        self.embedding_ = self.umap_.fit_transform(X).astype(np.float32)
        return self

    def fit_transform(self, X, y=None):
        return self.fit(X).embedding_

    def transform(self, X):
        return self.umap_.transform(np.asarray(X, dtype=np.float32)).astype(np.float32)
