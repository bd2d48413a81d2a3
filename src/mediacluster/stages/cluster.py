"""Clustering stages: HDBSCAN and the classic alternatives behind ``fit`` / ``labels_`` / ``predict``.

Every clusterer is a scikit-learn estimator with ``fit(Z)`` setting ``labels_`` (int64, ``-1`` =
noise, ``>= 0`` = cluster id) and ``probabilities_`` (membership strength in [0, 1]);
``predict(Z)`` returns labels for new points of the same space and ``predict_membership(Z)``
their membership probabilities.

``predict`` of the density-based clusterers (HDBSCAN, DBSCAN, Agglomerative, which have no
native out-of-sample rule in every backend) is a distance-weighted vote of the ``k`` nearest
training points (noise votes as noise), which reproduces the training labels exactly on the
training points and is what ``Pipeline.predict`` generalises (see ``mediacluster.pipeline``).
K-means and MeanShift predict their nearest centre.

>>> from mediacluster.cluster import HDBSCANClusterer
>>> labels = HDBSCANClusterer(min_cluster_size=100).fit(Z).labels_      # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from ..data import NOISE, validate_rows
from ..errors import ParameterError
from .registry import SEED, Bool, Choice, Float, Int, check_params, register


def single_blas_thread():
    """Context: BLAS/OpenMP pools limited to one thread.

    Measured on the 2-core VM at load ~25: K-means (k=10, 10,000 x 10) 12 s with the default
    pools vs 0.4 s with one thread; PCA of 150 x 1280 2.9 s vs 0.05 s (oversubscribed pools
    spin). On an idle machine the cost is at most the second core on these small problems.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def knn_vote(ref: np.ndarray, ref_labels: np.ndarray, query: np.ndarray, k: int = 15,
             ref_prob: np.ndarray | None = None, index=None):
    """Distance-weighted (1/d) vote of the ``k`` nearest reference points.

    Returns ``(labels, share, prob)``: the winning label, its weighted vote share in [0, 1], and
    the weighted mean ``ref_prob`` of the neighbours that voted for it (1 if not given). A query
    that coincides with a reference point takes that point's label (share ~1), as in
    scikit-learn's ``KNeighborsClassifier(weights="distance")``.
    """
    from sklearn.neighbors import NearestNeighbors

    ref_labels = np.asarray(ref_labels)
    n_q = len(query)
    if n_q == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    k = int(max(1, min(k, len(ref))))
    if index is None:
        index = NearestNeighbors(n_neighbors=k).fit(ref)
    dist, idx = index.kneighbors(np.asarray(query, dtype=ref.dtype), n_neighbors=k)
    return vote(dist, idx, ref_labels, ref_prob)


def vote(dist: np.ndarray, idx: np.ndarray, ref_labels: np.ndarray, ref_prob=None):
    """The weighting used by :func:`knn_vote`, given neighbour distances and indices (no
    queries: empty answers, as ``knn_vote`` and ``hierarchy.vote_path`` give)."""
    if len(idx) == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    w = 1.0 / np.maximum(dist.astype(np.float64), 1e-9)
    lab = ref_labels[idx]
    classes, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(lab.shape)
    n_q = len(idx)
    rows = np.repeat(np.arange(n_q), idx.shape[1])
    tally = np.bincount(rows * len(classes) + inv.ravel(), weights=w.ravel(),
                        minlength=n_q * len(classes)).reshape(n_q, len(classes))
    best = tally.argmax(axis=1)
    share = tally[np.arange(n_q), best] / tally.sum(axis=1)
    if ref_prob is None:
        prob = np.ones(n_q)
    else:
        p = np.asarray(ref_prob, dtype=np.float64)[idx]
        m = inv == best[:, None]
        prob = (w * p * m).sum(axis=1) / np.maximum((w * m).sum(axis=1), 1e-300)
    return classes[best].astype(np.int64), share, prob


class _Clusterer(ClusterMixin, BaseEstimator):
    """``predict`` / ``predict_membership`` on top of a ``_predict(Z) -> (labels, prob)``."""

    def predict(self, Z) -> np.ndarray:
        """Cluster labels of new points (``-1`` = noise)."""
        return self._predict(_check_Z(self, Z, reset=False))[0]

    def predict_membership(self, Z) -> np.ndarray:
        """Membership probability in [0, 1] of each new point's predicted cluster."""
        return self._predict(_check_Z(self, Z, reset=False))[1]

    def fit_predict(self, Z, y=None):
        return self.fit(Z).labels_


class _KNNPredictMixin(_Clusterer):
    """predict() by a weighted vote of the training points (noise included as a label)."""

    predict_neighbors = 15

    def _remember(self, Z):
        from sklearn.neighbors import NearestNeighbors

        self._train_ = np.asarray(Z, dtype=np.float32)
        self._index_ = NearestNeighbors(n_neighbors=int(min(self.predict_neighbors, len(Z)))).fit(self._train_)

    def _predict(self, Z):
        labels, share, prob = knn_vote(self._train_, self.labels_, np.asarray(Z, dtype=np.float32),
                                       k=self.predict_neighbors, ref_prob=self.probabilities_,
                                       index=self._index_)
        p = np.where(labels >= 0, share * prob, 0.0)
        return labels, np.clip(p, 0.0, 1.0)


def _check_Z(est, Z, reset: bool = True, dtype=np.float32) -> np.ndarray:
    """2-D finite C-ordered data (scikit-learn's ``validate_data``; fast_hdbscan's numba code
    has no Fortran-order signature); sets/checks ``n_features_in_``."""
    from sklearn.utils.validation import check_is_fitted

    if reset:
        check_params(est)  # every parameter against the registry table, before any work
    else:
        check_is_fitted(est)
    return validate_rows(est, Z, reset=reset, dtype=dtype, order="C")


# fast_hdbscan (0.3.x) clusters data of more than 30 dimensions, where its kd-tree is slow, on a
# kNN graph (k = max(3 min_samples, 15), the point itself excluded) that pynndescent builds. That
# graph is approximate, drawn from numpy's global RNG with no seed (the same 40-d input gave
# noise 269 vs 408 of 2,400 items run to run), and pynndescent's kernels take the distance as an
# argument, so numba compiles them without a disk cache: 26 CPU s in every new process, ~55 s of a
# 50,000-item tuning study. Above this many dimensions the stage hands fast_hdbscan the exact
# graph instead (faiss, the same k, as ``metric="precomputed"``, whose core distance also excludes
# the point): on 18 tuning-trial UMAP embeddings of 32-50 dimensions (2,000 and 10,000 items) the
# same clusters (ARI >= 0.997, the same count, noise within 0.001), 2.2 vs 7.2 CPU s warm at
# 10,000 items, no compile, and reproducible without touching the global RNG
# (benchmarks/RESULTS.md, Tuning, "session 6").
# The exact search is n^2 x d work; above this much (10,000 x 10,000 x 1,280, ~3 CPU s; 50,000
# UMAP coordinates of up to 51 dimensions still fit) the graph comes from faiss's IVF search
# (``stages.neighbors``, seeded), approximate like pynndescent's but without its compile, so HDBSCAN
# on raw high-dimensional vectors of a large collection does not become a quadratic search.
EXACT_KNN_WORK = 10_000 * 10_000 * 1_280
KNN_GRAPH_ABOVE_DIMS = 30


def exact_knn_distances(Z: np.ndarray, k: int):
    """The euclidean ``k``-nearest-neighbour graph of ``Z`` (the point itself excluded) as a
    scipy CSR matrix of distances, the input of fast_hdbscan's ``metric="precomputed"``: exact
    up to ``EXACT_KNN_WORK``, faiss IVF above."""
    import scipy.sparse as sp

    from .neighbors import knn_graph

    n, d = Z.shape
    k = int(min(k, n - 1))
    method = "exact" if n * n * d <= EXACT_KNN_WORK else "ivf"
    idx, dist = knn_graph(Z, k + 1, metric="euclidean", method=method)
    rows = np.repeat(np.arange(n, dtype=np.int32), k)
    return sp.csr_matrix((dist[:, 1:].ravel().astype(np.float64), (rows, idx[:, 1:].ravel())),
                         shape=(n, n))


def _too_many(name: str, value: int, n: int) -> ParameterError:
    return ParameterError(f"{name}={value} but there are only {n} items to cluster (n_samples={n}); "
                          "lower it", name)


@register("clusterer", "hdbscan", params={
    "min_cluster_size": Int(2, tune={"int": [5, 1000], "log": True}, scale=True),
    "min_samples": Int(1, none_ok=True, tune={"int": [1, 50], "log": True}, scale=True),
    "cluster_selection_method": Choice("eom", "leaf", tune={"choice": ["eom", "leaf"]}),
    "cluster_selection_epsilon": Float(0.0),
    "alpha": Float(0.0, low_open=True),
    "max_cluster_size": Int(0),
    "allow_single_cluster": Bool(),
    "backend": Choice("auto", "fast_hdbscan", "hdbscan", "sklearn"),
})
class HDBSCANClusterer(_KNNPredictMixin):
    """HDBSCAN; ``labels_`` has ``-1`` for noise, ``probabilities_`` is membership strength.

    ``backend``: ``"auto"`` uses ``fast_hdbscan`` (measured fastest with the same labels, see
    ``benchmarks/choices.py`` / RESULTS.md) unless ``alpha != 1`` (only ``hdbscan`` implements
    alpha), ``"hdbscan"`` or ``"sklearn"`` force one implementation.
    ``max_cluster_size`` (0 = unlimited) is passed to both libraries.
    """

    def __init__(self, min_cluster_size: int = 50, min_samples: int | None = None,
                 cluster_selection_method: str = "eom", cluster_selection_epsilon: float = 0.0,
                 alpha: float = 1.0, max_cluster_size: int = 0, allow_single_cluster: bool = False,
                 backend: str = "auto"):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.alpha = alpha
        self.max_cluster_size = max_cluster_size
        self.allow_single_cluster = allow_single_cluster
        self.backend = backend

    def _backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return "hdbscan" if float(self.alpha) != 1.0 else "fast_hdbscan"

    def fit(self, Z, y=None):
        Z = _check_Z(self, Z, dtype=np.float64)
        n = len(Z)
        if self.min_cluster_size > n:
            raise _too_many("min_cluster_size", self.min_cluster_size, n)
        mcs = int(self.min_cluster_size)
        ms = None if self.min_samples is None else int(max(1, min(self.min_samples, n - 1)))
        backend = self._backend()
        common = dict(min_cluster_size=mcs, min_samples=ms,
                      cluster_selection_method=self.cluster_selection_method,
                      cluster_selection_epsilon=float(self.cluster_selection_epsilon),
                      allow_single_cluster=bool(self.allow_single_cluster))
        if n <= mcs:
            labels, probs = np.full(n, NOISE, dtype=np.int64), np.zeros(n)
        elif backend == "fast_hdbscan":
            import fast_hdbscan

            kw = {"max_cluster_size": self.max_cluster_size} if self.max_cluster_size else {}
            if Z.shape[1] > KNN_GRAPH_ABOVE_DIMS:  # see KNN_GRAPH_ABOVE_DIMS
                m_s = mcs if ms is None else ms
                graph = exact_knn_distances(Z, max(3 * m_s, 15, m_s))  # fast_hdbscan's own k
                m = fast_hdbscan.HDBSCAN(**common, **kw, metric="precomputed").fit(graph)
            else:
                m = fast_hdbscan.HDBSCAN(**common, **kw).fit(Z)
            labels, probs = m.labels_, m.probabilities_
        elif backend == "hdbscan":
            import hdbscan

            m = hdbscan.HDBSCAN(**common, alpha=float(self.alpha),
                                max_cluster_size=int(self.max_cluster_size)).fit(Z)
            labels, probs = m.labels_, m.probabilities_
        elif backend == "sklearn":
            from sklearn.cluster import HDBSCAN

            m = HDBSCAN(**common, alpha=float(self.alpha),
                        max_cluster_size=self.max_cluster_size or None, copy=True).fit(Z)
            labels, probs = m.labels_, m.probabilities_
        else:
            raise ParameterError(f"unknown HDBSCAN backend {backend!r} (auto, fast_hdbscan, hdbscan, "
                                 "sklearn)", "backend")
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.probabilities_ = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
        self._remember(Z)
        return self


@register("clusterer", "kmeans", params={
    "n_clusters": Int(1, tune={"int": [2, 100], "log": True}), "n_init": Int(1), "random_state": SEED})
class KMeansClusterer(_Clusterer):
    """K-means (scikit-learn); no noise. ``probabilities_`` is the margin ``(d2 - d1) / (d2 + d1)``
    between the nearest and second-nearest centre (1 at a centre, 0 on a boundary)."""

    def __init__(self, n_clusters: int = 10, n_init: int = 3, random_state: int | None = 0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, Z, y=None):
        from sklearn.cluster import KMeans

        Z = _check_Z(self, Z)
        if self.n_clusters > len(Z):
            raise _too_many("n_clusters", self.n_clusters, len(Z))
        k = int(self.n_clusters)
        with single_blas_thread():
            self.km_ = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state).fit(Z)
        self.cluster_centers_ = self.km_.cluster_centers_
        self.labels_, self.probabilities_ = self._predict(Z)
        return self

    def _predict(self, Z):
        return _nearest_centre(np.asarray(Z, dtype=np.float32), self.cluster_centers_)


def _nearest_centre(Z, centres):
    d = np.sqrt(np.maximum(((Z[:, None, :] - centres[None, :, :]) ** 2).sum(-1), 0.0)) if len(Z) * len(centres) < 5e7 \
        else _chunked_dist(Z, centres)
    order = np.argsort(d, axis=1)
    lab = order[:, 0]
    if d.shape[1] == 1:
        return lab.astype(np.int64), np.ones(len(Z))
    d1 = d[np.arange(len(Z)), lab]
    d2 = d[np.arange(len(Z)), order[:, 1]]
    return lab.astype(np.int64), (d2 - d1) / np.maximum(d2 + d1, 1e-12)


def _chunked_dist(Z, C):
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(Z, C)


@register("clusterer", "kmeans_auto", params={
    "k_min": Int(2), "k_max": Int(2, tune={"int": [10, 100], "log": True}),
    "selection": Choice("max", "local_max"), "min_size": Int(1), "sample_size": Int(2),
    "n_init": Int(1), "random_state": SEED})
class SilhouetteKMeansClusterer(_Clusterer):
    """K-means with the number of clusters chosen by silhouette, not told k.

    Fits K-means for every k in ``[k_min, k_max]`` (``k_max`` also capped at n / ``min_size``)
    and scores each with the silhouette on a fixed random sample of ``sample_size`` points.
    ``selection``:

    * ``"max"``: the k with the highest silhouette (the textbook rule; on CIFAR-10 it picks
      k=2, animals vs vehicles, because that top split has the widest gap);
    * ``"local_max"``: the highest silhouette among *interior* local maxima of the silhouette
      curve (``s[k] >= s[k-1]`` and ``s[k] >= s[k+1]``, k_min < k < k_max), falling back to "max" when
      the curve has none. A curve that only falls from k_min says "the coarsest split is the
      sharpest", not "there is nothing finer"; the interior peak is the finest level that is
      still locally well separated. See benchmarks/default_search.py for the measurements.

    ``scores_`` maps k to its silhouette; ``n_clusters_`` is the chosen k.
    """

    def __init__(self, k_min: int = 2, k_max: int = 30, selection: str = "local_max",
                 min_size: int = 10, sample_size: int = 3000, n_init: int = 3,
                 random_state: int | None = 0):
        self.k_min = k_min
        self.k_max = k_max
        self.selection = selection
        self.min_size = min_size
        self.sample_size = sample_size
        self.n_init = n_init
        self.random_state = random_state

    def _check_params(self, prefix=None):
        if self.k_min > self.k_max:
            name = f"{prefix}__k_min" if prefix else "k_min"
            raise ParameterError(f"{name}={self.k_min} is above k_max={self.k_max}", name)

    def fit(self, Z, y=None):
        self._check_params()
        Z = _check_Z(self, Z)
        n = len(Z)
        if self.k_min > max(2, n - 1):  # k_max is a cap (scaled to n); k_min is a demand
            raise _too_many("k_min", self.k_min, n)
        k_hi = int(max(2, min(self.k_max, n // max(1, self.min_size), n - 1)))
        k_lo = int(max(2, min(self.k_min, k_hi)))
        rng = np.random.default_rng(self.random_state)
        samp = rng.choice(n, size=min(n, self.sample_size), replace=False)
        self.scores_, fits = {}, {}
        with single_blas_thread():
            self._sweep(Z, samp, k_lo, k_hi, fits)
        ks = sorted(self.scores_)
        s = [self.scores_[k] for k in ks]
        best = ks[int(np.argmax(s))]
        if self.selection == "local_max":
            interior = [ks[i] for i in range(1, len(ks) - 1) if s[i] >= s[i - 1] and s[i] >= s[i + 1]]
            if interior:
                best = max(interior, key=lambda k: self.scores_[k])
        self.n_clusters_ = int(best)
        self.cluster_centers_ = fits[best]
        self.labels_, self.probabilities_ = self._predict(Z)
        return self

    def _sweep(self, Z, samp, k_lo, k_hi, fits):
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score

        for k in range(k_lo, k_hi + 1):
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state).fit(Z)
            lab = km.labels_
            ok = len(np.unique(lab[samp])) > 1
            self.scores_[k] = float(silhouette_score(Z[samp], lab[samp])) if ok else -1.0
            fits[k] = km.cluster_centers_.astype(np.float32)

    def _predict(self, Z):
        return _nearest_centre(np.asarray(Z, dtype=np.float32), self.cluster_centers_)


@register("clusterer", "agglomerative", params={
    "n_clusters": Int(1, none_ok=True, tune={"int": [2, 100], "log": True}),
    "linkage": Choice("ward", "average", "complete", "single"),
    "metric": Choice("euclidean", "manhattan", "cosine", "l1", "l2"),
    "distance_threshold": Float(0.0, low_open=True, none_ok=True),
    "connectivity_neighbors": Int(0)})
class AgglomerativeClusterer(_KNNPredictMixin):
    """Agglomerative clustering (scikit-learn), ``linkage`` ward / average / complete / single.

    Give ``n_clusters`` or a ``distance_threshold``. Memory grows as n^2 without connectivity:
    ``connectivity_neighbors`` (default 30, 0 = none) restricts merges to a kNN graph.
    """

    def __init__(self, n_clusters: int | None = 10, linkage: str = "ward", metric: str = "euclidean",
                 distance_threshold: float | None = None, connectivity_neighbors: int = 30):
        self.n_clusters = n_clusters
        self.linkage = linkage
        self.metric = metric
        self.distance_threshold = distance_threshold
        self.connectivity_neighbors = connectivity_neighbors

    def fit(self, Z, y=None):
        from sklearn.cluster import AgglomerativeClustering

        Z = _check_Z(self, Z)
        if self.n_clusters is None and self.distance_threshold is None:
            raise ParameterError("give n_clusters or distance_threshold", "n_clusters")
        if self.distance_threshold is None and self.n_clusters > len(Z):
            raise _too_many("n_clusters", self.n_clusters, len(Z))
        conn = None
        if self.connectivity_neighbors and len(Z) > self.connectivity_neighbors + 1:
            from sklearn.neighbors import kneighbors_graph

            conn = kneighbors_graph(Z, self.connectivity_neighbors, include_self=False)
        n_clusters = None if self.distance_threshold is not None else int(min(self.n_clusters, len(Z)))
        m = AgglomerativeClustering(
            n_clusters=n_clusters, linkage=self.linkage,
            metric="euclidean" if self.linkage == "ward" else self.metric,
            distance_threshold=self.distance_threshold, connectivity=conn,
        )
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the number of connected components ..." is handled
            self.labels_ = m.fit_predict(Z).astype(np.int64)
        self.probabilities_ = np.ones(len(Z))
        self._remember(Z)
        return self


@register("clusterer", "dbscan", params={
    "eps": Float(0.0, low_open=True, tune={"float": [0.05, 5.0], "log": True}),
    "min_samples": Int(1, tune={"int": [2, 100], "log": True}, scale=True),
    "metric": Choice("euclidean", "manhattan", "cosine", "chebyshev", "l1", "l2")})
class DBSCANClusterer(_KNNPredictMixin):
    """DBSCAN (scikit-learn); ``-1`` = noise, ``probabilities_`` 1 for core points, 0.5 for border."""

    def __init__(self, eps: float = 0.5, min_samples: int = 10, metric: str = "euclidean"):
        self.eps = eps
        self.min_samples = min_samples
        self.metric = metric

    def fit(self, Z, y=None):
        from sklearn.cluster import DBSCAN

        Z = _check_Z(self, Z)
        m = DBSCAN(eps=self.eps, min_samples=self.min_samples, metric=self.metric).fit(Z)
        self.labels_ = m.labels_.astype(np.int64)
        p = np.where(self.labels_ >= 0, 0.5, 0.0)
        p[m.core_sample_indices_] = 1.0
        self.probabilities_ = p
        self._remember(Z)
        return self


@register("clusterer", "meanshift", params={
    "bandwidth": Float(0.0, low_open=True, none_ok=True), "quantile": Float(0.0, 1.0, low_open=True),
    "bin_seeding": Bool(), "random_state": SEED})
class MeanShiftClusterer(_Clusterer):
    """MeanShift (scikit-learn) with an estimated bandwidth unless given; no noise
    (``cluster_all=True``). Slow beyond ~10k points: use ``bin_seeding``."""

    def __init__(self, bandwidth: float | None = None, quantile: float = 0.2, bin_seeding: bool = True,
                 random_state: int | None = 0):
        self.bandwidth = bandwidth
        self.quantile = quantile
        self.bin_seeding = bin_seeding
        self.random_state = random_state

    def fit(self, Z, y=None):
        from sklearn.cluster import MeanShift, estimate_bandwidth

        Z = _check_Z(self, Z)
        bw = self.bandwidth or estimate_bandwidth(Z, quantile=self.quantile,
                                                  n_samples=min(len(Z), 2000),
                                                  random_state=self.random_state)
        m = MeanShift(bandwidth=max(float(bw), 1e-6), bin_seeding=self.bin_seeding, cluster_all=True).fit(Z)
        self.cluster_centers_ = m.cluster_centers_.astype(np.float32)
        self.labels_, self.probabilities_ = self._predict(Z)
        return self

    def _predict(self, Z):
        return _nearest_centre(np.asarray(Z, dtype=np.float32), self.cluster_centers_)

