"""Outlier stages: Local Outlier Factor, IsolationForest, or none.

``fit(Z)`` sets ``outlier_mask_`` (bool, True = outlier; the pipeline labels those items ``-2``,
as in the source study) and ``scores_`` (higher = more normal, scikit-learn's convention);
``predict(Z)`` returns the same kind of mask for new points.

Both detectors are deterministic given their training data and parameters (IsolationForest
through ``random_state``), so a saved model stores only the reduced training coordinates and
refits the detector on load instead of unpickling it (see ``mediacluster.persist``).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin


class LOFOutliers(BaseEstimator, OutlierMixin):
    """Local Outlier Factor (scikit-learn, ``novelty=True`` so new points can be checked).

    ``contamination="auto"`` uses the original paper's threshold (LOF > 1.5); a float in
    (0, 0.5] removes that share of the training items.
    """

    def __init__(self, n_neighbors: int = 20, metric: str = "euclidean", contamination="auto"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.contamination = contamination

    def fit(self, Z, y=None):
        from sklearn.neighbors import LocalOutlierFactor

        Z = np.asarray(Z, dtype=np.float32)
        self.lof_ = LocalOutlierFactor(
            n_neighbors=int(min(self.n_neighbors, max(1, len(Z) - 1))), metric=self.metric,
            contamination=self.contamination, novelty=True,
        ).fit(Z)
        self.scores_ = self.lof_.negative_outlier_factor_.astype(np.float64)
        self.outlier_mask_ = self.scores_ < self.lof_.offset_
        return self

    def predict(self, Z) -> np.ndarray:
        return self.lof_.predict(np.asarray(Z, dtype=np.float32)) == -1

    def fit_predict(self, Z, y=None):
        return self.fit(Z).outlier_mask_


class IsolationForestOutliers(BaseEstimator, OutlierMixin):
    """Isolation Forest (scikit-learn)."""

    def __init__(self, n_estimators: int = 100, contamination="auto", max_samples="auto",
                 random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.contamination = contamination
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, Z, y=None):
        from sklearn.ensemble import IsolationForest

        Z = np.asarray(Z, dtype=np.float32)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, contamination=self.contamination,
            max_samples=self.max_samples, random_state=self.random_state,
        ).fit(Z)
        self.scores_ = self.forest_.decision_function(Z).astype(np.float64)
        self.outlier_mask_ = self.scores_ < 0
        return self

    def predict(self, Z) -> np.ndarray:
        return self.forest_.predict(np.asarray(Z, dtype=np.float32)) == -1

    def fit_predict(self, Z, y=None):
        return self.fit(Z).outlier_mask_


class NoOutliers(BaseEstimator, OutlierMixin):
    """Keep every item (the "none" stage)."""

    def fit(self, Z, y=None):
        self.outlier_mask_ = np.zeros(len(Z), dtype=bool)
        self.scores_ = np.zeros(len(Z), dtype=np.float64)
        return self

    def predict(self, Z) -> np.ndarray:
        return np.zeros(len(Z), dtype=bool)

    def fit_predict(self, Z, y=None):
        return self.fit(Z).outlier_mask_


OUTLIERS = {
    "lof": LOFOutliers,
    "isolation_forest": IsolationForestOutliers,
    "iforest": IsolationForestOutliers,
    "none": NoOutliers,
}
