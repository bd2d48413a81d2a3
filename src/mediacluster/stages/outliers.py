"""Outlier stages: Local Outlier Factor, IsolationForest, or none.

``fit(Z)`` sets ``outlier_mask_`` (bool, True = outlier; the pipeline labels those items ``-2``,
as in the source study) and ``scores_`` (higher = more normal, scikit-learn's convention);
``predict(Z)`` follows scikit-learn's outlier detectors: ``-1`` for an outlier, ``1`` for an
inlier. ``fit(Z, neighbors_graph=G)`` accepts a precomputed sparse kNN distance graph of ``Z``
(the tuner computes one per reduced space and shares it between trials; LOF uses it, the others
ignore it).

Both detectors are deterministic given their training data and parameters (IsolationForest
through ``random_state``), so a saved model stores only the reduced training coordinates and
refits the detector on load instead of unpickling it (see ``mediacluster.persist``).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin

from ..data import validate_rows
from .registry import SEED, Choice, Float, Int, Param, check_params, register

CONTAMINATION = Float(0.0, 0.5, low_open=True, extra=("auto",),
                      doc="share of items removed, or 'auto' (the method's own threshold)")


@register("outliers", "lof", params={
    "n_neighbors": Int(2, tune={"int": [10, 1000], "log": True}, scale=True),
    "metric": Choice("euclidean", "manhattan", "chebyshev", "minkowski", "cosine"),
    "contamination": CONTAMINATION,
})
class LOFOutliers(OutlierMixin, BaseEstimator):
    """Local Outlier Factor (scikit-learn, ``novelty=True`` so new points can be checked).

    ``contamination="auto"`` uses the original paper's threshold (LOF > 1.5); a float in
    (0, 0.5] removes that share of the training items.
    """

    def __init__(self, n_neighbors: int = 20, metric: str = "euclidean", contamination="auto"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.contamination = contamination

    def fit(self, Z, y=None, neighbors_graph=None):
        from sklearn.neighbors import LocalOutlierFactor

        Z = _check_Z(self, Z)
        k = int(min(self.n_neighbors, max(1, len(Z) - 1)))
        if neighbors_graph is not None and self.metric == "euclidean":
            # the graph holds >= k neighbours per row (the point itself at distance 0 included);
            # scikit-learn's own search over Z gives the same neighbours, so the result is equal
            lof = LocalOutlierFactor(n_neighbors=k, metric="precomputed",
                                     contamination=self.contamination, novelty=True).fit(neighbors_graph)
            self._graph_fit_ = True
        else:
            lof = LocalOutlierFactor(n_neighbors=k, metric=self.metric,
                                     contamination=self.contamination, novelty=True).fit(Z)
            self._graph_fit_ = False
        self.lof_ = lof
        self.scores_ = lof.negative_outlier_factor_.astype(np.float64)
        self.offset_ = float(lof.offset_)
        self.outlier_mask_ = self.scores_ < self.offset_
        self.n_features_in_ = Z.shape[1]
        self._train_ = Z
        return self

    def score_samples(self, Z) -> np.ndarray:
        """Minus the local outlier factor of new points (lower = more abnormal)."""
        Z = _check_Z(self, Z, reset=False)
        if self._graph_fit_:  # a precomputed fit answers new points through a tree on the data
            from sklearn.neighbors import LocalOutlierFactor

            self.lof_ = LocalOutlierFactor(n_neighbors=self.lof_.n_neighbors_, metric=self.metric,
                                           contamination=self.contamination, novelty=True).fit(self._train_)
            self._graph_fit_ = False
        return self.lof_.score_samples(Z).astype(np.float64)

    def decision_function(self, Z) -> np.ndarray:
        """Positive for inliers, negative for outliers (scikit-learn's convention)."""
        return self.score_samples(Z) - self.offset_

    def predict(self, Z) -> np.ndarray:
        return np.where(self.decision_function(Z) < 0, -1, 1)

    def fit_predict(self, Z, y=None, neighbors_graph=None):
        return np.where(self.fit(Z, neighbors_graph=neighbors_graph).outlier_mask_, -1, 1)


# IsolationForest's default: Tukey's fence on the forest's scores (scikit-learn's 'auto', a score
# below -0.5, flagged 40-54% of clustered data: its median score lies near -0.5 there; RESULTS
# "Loose ends, third pass")
FENCE = "fence"


@register("outliers", "isolation_forest", aliases=("iforest",), params={
    "n_estimators": Int(1),
    "contamination": Float(0.0, 0.5, low_open=True, extra=("auto", FENCE),
                           doc="share of items removed, 'fence' (a score below Q1 - 1.5 IQR of the "
                               "training scores: Tukey's fence) or 'auto' (scikit-learn's: below -0.5)"),
    "max_samples": Param("float", 0.0, None, low_open=True, extra=("auto",),
                         doc="'auto', a count (> 1) or a share (<= 1)"),
    "random_state": SEED,
})
class IsolationForestOutliers(OutlierMixin, BaseEstimator):
    """Isolation Forest (scikit-learn). ``contamination="fence"`` (the default): an item is an
    outlier when its forest score lies below the training scores' first quartile by more than
    1.5 interquartile ranges (Tukey's fence), so well-clustered data loses few or none;
    ``"auto"``: scikit-learn's threshold (score below -0.5), which on clustered data sits near
    the median score; a number: that share of the items."""

    def __init__(self, n_estimators: int = 100, contamination=FENCE, max_samples="auto",
                 random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.contamination = contamination
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, Z, y=None, neighbors_graph=None):
        from sklearn.ensemble import IsolationForest

        Z = _check_Z(self, Z)
        ms = self.max_samples
        if isinstance(ms, float) and ms > 1:
            ms = int(ms)
        fence = isinstance(self.contamination, str) and self.contamination == FENCE
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, contamination="auto" if fence else self.contamination,
            max_samples=ms, random_state=self.random_state,
        ).fit(Z)
        raw = self.forest_.score_samples(Z)
        if fence:
            q1, q3 = np.quantile(raw, [0.25, 0.75])
            self.offset_ = float(q1 - 1.5 * (q3 - q1))
        else:
            self.offset_ = float(self.forest_.offset_)
        self.scores_ = (raw - self.offset_).astype(np.float64)
        self.outlier_mask_ = self.scores_ < 0
        self.n_features_in_ = Z.shape[1]
        return self

    def score_samples(self, Z) -> np.ndarray:
        """The forest's anomaly score of new points, negated (lower = more abnormal)."""
        Z = _check_Z(self, Z, reset=False)
        return self.forest_.score_samples(Z)

    def decision_function(self, Z) -> np.ndarray:
        """Positive for inliers, negative for outliers (scikit-learn's convention)."""
        return self.score_samples(Z) - self.offset_

    def predict(self, Z) -> np.ndarray:
        return np.where(self.decision_function(Z) < 0, -1, 1)

    def fit_predict(self, Z, y=None, neighbors_graph=None):
        return np.where(self.fit(Z).outlier_mask_, -1, 1)


@register("outliers", "none", params={})
class NoOutliers(OutlierMixin, BaseEstimator):
    """Keep every item (the "none" stage)."""

    def fit(self, Z, y=None, neighbors_graph=None):
        Z = _check_Z(self, Z)
        self.outlier_mask_ = np.zeros(len(Z), dtype=bool)
        self.scores_ = np.zeros(len(Z), dtype=np.float64)
        self.offset_ = 0.0
        self.n_features_in_ = Z.shape[1]
        return self

    def score_samples(self, Z) -> np.ndarray:
        return np.ones(len(_check_Z(self, Z, reset=False)))

    def decision_function(self, Z) -> np.ndarray:
        return self.score_samples(Z) - self.offset_

    def predict(self, Z) -> np.ndarray:
        return np.ones(len(_check_Z(self, Z, reset=False)), dtype=np.int64)

    def fit_predict(self, Z, y=None, neighbors_graph=None):
        return np.where(self.fit(Z).outlier_mask_, -1, 1)


def _check_Z(est, Z, reset: bool = True) -> np.ndarray:
    """float32 2-D finite data (scikit-learn's ``validate_data``); sets/checks n_features_in_."""
    from sklearn.utils.validation import check_is_fitted

    if reset:
        check_params(est)  # every parameter against the registry table, before any work
    else:
        check_is_fitted(est)
    return validate_rows(est, Z, reset=reset, dtype=np.float32)
