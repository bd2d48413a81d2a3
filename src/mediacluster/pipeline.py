"""Pipeline: reduce -> remove outliers -> cluster (-> assign noise) -> predict / save, one object.

Each stage is a scikit-learn style estimator passed to the constructor, or a name from the
stage registry (``"umap"``, ``"pca"``, ``"lof"``, ``"hdbscan"``, ...; see
``mediacluster.stages``); ``None`` skips a stage, ``"auto"`` picks the default at fit time. The
pipeline only composes them; the work lives in the stages. Parameters use scikit-learn's
nested naming: ``Pipeline().set_params(reducer__n_neighbors=15)``.

Label convention (as in the source study): ``-2`` = removed as an outlier, ``-1`` = clustering
noise, ``>= 0`` = cluster id. After ``fit``:

* ``labels_`` / ``probabilities_``: what the stages said (noise stays ``-1``);
* ``status_``: ``"clustered"`` / ``"noise"`` / ``"outlier"`` per item;
* ``cluster_`` / ``confidence_``: with ``assign_noise=True`` (default) every noise/outlier item
  is given its nearest cluster by a distance-weighted vote of its 15 nearest clustered items in
  the reduced space, ``confidence_`` = the vote share (clustered items keep their label and
  membership probability). With ``assign_noise=False`` they equal ``labels_`` / ``probabilities_``.

Predicting new items (``predict`` / ``predict_details``) never refits and needs neither the
UMAP object nor the HDBSCAN tree, so a saved model is plain arrays (see ``mediacluster.persist``):

1. project the vector (L2-normalised when the reducer's metric is cosine) onto the top
   ``reference_dims`` principal axes of the training vectors;
2. find its ``predict_neighbors`` nearest reference items (exact, faiss ``IndexFlatL2``; a batch
   of ``HNSW_MIN_QUERIES`` or more against over ``EXACT_SEARCH_MAX`` reference items searches a
   faiss HNSW graph, built on first use the same way in every process);
3. reduce: its reduced coordinates are the 1/d-weighted mean of the neighbours' coordinates
   (the same initialisation umap-learn's ``transform`` starts from);
4. outlier check: the fitted outlier stage's ``predict`` on those coordinates (-> ``-2``);
5. cluster: 1/d-weighted vote of the neighbours' labels (noise votes as noise); probability =
   vote share x the neighbours' membership probabilities. A training item's own copy dominates
   its vote, so predicting the training items reproduces their labels (tested >= 99%).

``fit_labels(X, labels, embedding)`` builds the same predictor for labels given from outside (a
person's curated clusters, published by the studio) without fitting the stages.

``reference_size`` keeps only a class-stratified sample of the training vectors inside the model
(smaller files, cost measured in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import inspect
import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.utils.validation import check_is_fitted

from . import persist
from .data import NOISE, OUTLIER, as_vectors, l2_normalize, status_of
from .errors import InputError, LevelRangeError, MediaclusterError, ModelFormatError, ParameterError
from .stages import registry
from .stages.cluster import knn_vote, single_blas_thread, vote
from .stages.evoc import EVoCClusterer
from .stages.hierarchy import (
    ENGINE_REDUCER,
    HierarchyClusterer,
    LevelsMixin,
    check_share,
    vote_path,
)
from .stages.reduce import UMAPReducer

STAGES = ("reducer", "outliers", "clusterer")
_EXAMPLE_STAGE = {"reducer": "umap", "outliers": "lof", "clusterer": "hdbscan"}
# With an outlier stage, a new item whose mean distance to its nearest reference items exceeds
# this quantile of the training items' own (leave-self-out) distances is also an outlier.
NOVELTY_QUANTILE = 0.99
SMALL_QUERY = 64  # below this many query vectors the kNN search runs on one thread
# Batches of at least HNSW_MIN_QUERIES items against more than EXACT_SEARCH_MAX reference items
# search a faiss HNSW graph instead of every reference vector. Measured on CIFAR-10 (40,000
# references, 128-d, benchmarks/RESULTS.md "Scale"): exact search costs ~0.3 ms of CPU per query,
# so at the default sample size it is ~5 CPU minutes per million items, not the run's main cost;
# HNSW at efSearch 160 saves a quarter of that and moves 0.3-0.6% of the items to another
# cluster (efSearch 48: 3x cheaper, 2-4% moved). So the graph is used only where exact search grows
# large (a sample of over 100,000 items); one new item or a small upload is searched exactly.
EXACT_SEARCH_MAX = 100_000
HNSW_MIN_QUERIES = 1_000
HNSW_M = 16
HNSW_EF_SEARCH = 160
MODEL_ARRAYS = ("labels_", "probabilities_", "cluster_", "confidence_", "embedding_", "ref_index_",
                "ref_vectors_", "ref_mean_", "ref_components_", "novelty_threshold_")
PIPELINE_PARAMS = {
    "level": registry.Int(0, extra=("auto",)),
    "max_unclustered": registry.Float(0.0, 1.0, none_ok=True),
    "assign_noise": registry.Bool(),
    "predict_neighbors": registry.Int(1),
    "reference_size": registry.Int(1, none_ok=True),
    "reference_dims": registry.Int(1, none_ok=True),
    "random_state": registry.SEED,
}


def default_min_cluster_size(n: int) -> int:
    """min_cluster_size scaled to the collection.

    The source study used 500 at 50k items (1%); we keep 1% with floors so small collections
    still form clusters.
    """
    return int(max(5, min(1000, round(0.01 * n))))


def default_reducer(n: int, random_state=0) -> UMAPReducer:
    """The engine's UMAP (``stages.hierarchy.ENGINE_REDUCER``): 10 dims, 15 neighbours, min_dist
    0, cosine, 200 epochs, PCA start; fitted on the kNN graph the pipeline computes once and
    shares with the hierarchy (see :meth:`Pipeline.fit`)."""
    p = ENGINE_REDUCER
    return UMAPReducer(n_neighbors=min(int(p["n_neighbors"]), max(2, n - 1)), n_components=int(p["n_components"]),
                       min_dist=float(p["min_dist"]), metric=p["metric"], n_epochs=int(p["n_epochs"]),
                       init=p["init"], random_state=random_state)


def default_clusterer(n: int, random_state=0) -> HierarchyClusterer:
    """The default clusterer: nested levels coarse -> fine with a label-free default level
    (``stages.hierarchy.HierarchyClusterer``; see there and benchmarks/RESULTS.md). It replaced
    K-means with k from the silhouette curve over 2..30, which cannot find more than 30 groups
    (Sports-100, 100 classes: 8 clusters, NMI .47 against .75 for the hierarchy's auto level)."""
    return HierarchyClusterer(random_state=random_state)


def has_levels(stage) -> bool:
    """Whether a (fitted or configured) clusterer produces nested levels."""
    return isinstance(stage, LevelsMixin)


def _is_auto(x) -> bool:
    return isinstance(x, str) and x == "auto"


class Pipeline(ClusterMixin, BaseEstimator):
    """Compose a reducer, an outlier detector and a clusterer; assign noise; predict; save.

    Parameters
    ----------
    reducer : estimator, registry name, ``"auto"`` (UMAP 10 dims, 15 neighbours, min_dist 0,
        cosine, 200 epochs; none for ``evoc``, which reduces itself) or None
    outliers : estimator, registry name (``"lof"``, ``"isolation_forest"``) or None
    clusterer : estimator, registry name or ``"auto"`` (the hierarchy, see
        :func:`default_clusterer`)
    level : with a clusterer that has levels (``hierarchy``, ``evoc``): ``"auto"`` (the
        clusterer's own choice) or a level index (0 = coarsest) for the flat labelling
    max_unclustered : at most this share of the items stays noise or outlier before noise is
        assigned (``labels_``); the weakest are kept unclustered, the others get their nearest
        cluster. None: whatever the stages say (a hierarchy assigns everyone)
    assign_noise : give noise and outliers their nearest cluster in ``cluster_`` / ``confidence_``
    predict_neighbors : neighbours voting in ``predict``
    reference_size : keep at most this many training vectors in the model (None = all)
    reference_dims : PCA dimensions of the stored reference vectors (None = keep all dims)
    random_state : seed passed on to the auto stages

    >>> pipe = Pipeline(clusterer="hdbscan", random_state=0).fit(X)      # doctest: +SKIP
    >>> pipe.labels_, pipe.predict(X_new)                                 # doctest: +SKIP
    """

    def __init__(self, reducer="auto", outliers=None, clusterer="auto", level="auto",
                 max_unclustered: float | None = None, assign_noise: bool = True,
                 predict_neighbors: int = 10, reference_size: int | None = None,
                 reference_dims: int | None = 128, random_state: int | None = 0):
        self.reducer = reducer
        self.outliers = outliers
        self.clusterer = clusterer
        self.level = level
        self.max_unclustered = max_unclustered
        self.assign_noise = assign_noise
        self.predict_neighbors = predict_neighbors
        self.reference_size = reference_size
        self.reference_dims = reference_dims
        self.random_state = random_state

    # -- building the stages ---------------------------------------------------------------
    def check_params(self) -> None:
        """Check every parameter (the pipeline's and each stage's) before any work."""
        for k, p in PIPELINE_PARAMS.items():
            p.check(getattr(self, k), k)
        if self.max_unclustered is not None:
            check_share(self.max_unclustered, "max_unclustered")
        built = {kind: registry.build(kind, getattr(self, kind)) for kind in STAGES}
        c = built["clusterer"]
        if not _is_auto(self.level) and c is not None and not _is_auto(c) and not has_levels(c):
            raise ParameterError(f"level={self.level!r}: the clusterer {type(c).__name__} has no levels "
                                 "(use clusterer hierarchy or evoc, or level auto)", "level")

    def _resolve(self, n: int):
        clusterer = registry.build("clusterer", self.clusterer)
        if clusterer is None:
            raise ParameterError("clusterer: a pipeline needs a clusterer", "clusterer")
        clusterer = default_clusterer(n, self.random_state) if _is_auto(clusterer) else clone(clusterer)
        if has_levels(clusterer):  # the pipeline's level / share, when given, are the clusterer's
            if not _is_auto(self.level):
                clusterer.set_params(level=self.level)
            if self.max_unclustered is not None:
                clusterer.set_params(max_unclustered=float(self.max_unclustered))
        reducer = registry.build("reducer", self.reducer)
        if _is_auto(reducer):  # EVoC reduces the raw vectors itself
            reducer = None if isinstance(clusterer, EVoCClusterer) else default_reducer(n, self.random_state)
        elif reducer is not None:
            reducer = clone(reducer)
        outliers = registry.build("outliers", self.outliers)
        outliers = clone(outliers) if outliers is not None else None
        return reducer, outliers, clusterer

    def stages(self) -> dict:
        """kind -> the stage as configured (an estimator, None, or "auto")."""
        return {kind: registry.build(kind, getattr(self, kind)) for kind in STAGES}

    def concrete(self, n: int) -> Pipeline:
        """A copy whose "auto" stages are the concrete defaults for ``n`` items (so their
        parameters can be set, e.g. by the tuner)."""
        reducer, outliers, clusterer = self._resolve(n)
        return clone(self).set_params(reducer=reducer, outliers=outliers, clusterer=clusterer)

    def get_params(self, deep: bool = True) -> dict:
        """scikit-learn's ``get_params``; with ``deep``, a stage given by registry name also lists
        its parameters (``clusterer__min_cluster_size``: the stage's defaults), as a stage given
        as an estimator does, so what ``set_params`` takes is listed. An ``"auto"`` stage has
        none (it is made for the data's size at ``fit``)."""
        out = super().get_params(deep=deep)
        if deep:
            for kind in STAGES:
                stage = getattr(self, kind)
                if isinstance(stage, str) and not _is_auto(stage):
                    built = registry.build(kind, stage)
                    if built is not None:
                        out.update({f"{kind}__{k}": v for k, v in built.get_params(deep=False).items()})
        return out

    def set_params(self, **params):
        """scikit-learn's ``set_params``, where a stage given by registry name is built first, so
        nested names reach it: ``Pipeline(clusterer="hdbscan").set_params(
        clusterer__min_cluster_size=200)``. An ``"auto"`` or absent stage cannot take parameters
        (``ParameterError`` naming it); values are checked by ``check_params`` / ``fit``."""
        own = {k: v for k, v in params.items() if "__" not in k}
        nested = {k: v for k, v in params.items() if "__" in k}
        if own:
            super().set_params(**own)
        for kind in dict.fromkeys(k.split("__", 1)[0] for k in nested):
            if kind not in STAGES:
                continue  # scikit-learn's own message names an unknown parameter
            stage = getattr(self, kind)
            if _is_auto(stage) or stage is None:
                raise ParameterError(f"{kind} is {stage!r}; name the stage to set its parameters "
                                     f"(e.g. {kind}='{_EXAMPLE_STAGE[kind]}')", kind)
            if isinstance(stage, str):
                setattr(self, kind, registry.build(kind, stage))
        if nested:
            super().set_params(**nested)
        return self

    def with_params(self, params: dict) -> Pipeline:
        """A copy with ``params`` applied; stage values may be registry names, e.g.
        ``{"outliers": "lof", "outliers__n_neighbors": 50, "clusterer__min_cluster_size": 20}``."""
        new = clone(self)
        stage_names = {k: v for k, v in params.items() if k in STAGES}
        for kind, spec in stage_names.items():
            setattr(new, kind, registry.build(kind, spec))
        rest = {k: v for k, v in params.items() if k not in STAGES}
        for kind in STAGES:  # "auto" stages become their concrete default before taking params
            if any(k.startswith(kind + "__") for k in rest) and _is_auto(getattr(new, kind)):
                raise ParameterError(f"{kind} is 'auto'; name the stage to set its parameters "
                                     f"(e.g. {kind}: umap)", kind)
        if rest:
            new.set_params(**rest)
        return new

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None, precomputed_knn=None, embedding=None, outlier_graph=None,
            build_predictor: bool = True, duplicates=None):
        """Fit every stage on ``X`` (n, d).

        ``precomputed_knn=(indices, distances)`` is passed to the reducer (UMAP reuses it) and
        to a clusterer that takes a neighbour graph (the hierarchy's level criterion); without it
        the pipeline computes that graph once (``stages.neighbors.knn_graph``) when the
        clusterer takes one, and hands the same graph to both;
        ``embedding`` (n, k) skips the reducer's fit and uses these reduced coordinates instead
        (e.g. a cached UMAP space; the reducer is then kept unfitted, for its parameters);
        ``outlier_graph`` is a sparse kNN distance graph of the reduced coordinates for the
        outlier stage. The tuner passes these caches; a plain fit computes everything.
        ``build_predictor=False`` stops after the stages (labels only: what a tuning trial needs).
        ``duplicates`` (n,) gives each row its duplicate group's representative row (-1: none;
        e.g. ``DuplicateFinder.representative_``): a group is then one item to every stage, like
        exact copies, and every member takes its representative's results (see
        :func:`merge_duplicates`).
        """
        X = np.ascontiguousarray(as_vectors(X), dtype=np.float32)
        if X.ndim != 2 or len(X) < 3:
            raise InputError(f"need a 2-D array of at least 3 vectors, got shape {X.shape}")
        if not np.isfinite(X).all():
            bad = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
            raise InputError(f"vector {bad} contains NaN or infinity")
        self.check_params()
        for loaded in ("model_info_", "model_path_"):  # a loaded model refitted is that model no more
            self.__dict__.pop(loaded, None)            # (its names, junk clusters, path)
        self.timings_ = {}
        t = time.perf_counter()
        # Identical vectors (copies of one file) must share everything; see distinct_rows.
        dup = distinct_rows(X)
        if duplicates is not None:
            dup = merge_duplicates(dup, duplicates, len(X))
        self.timings_["distinct"] = time.perf_counter() - t
        self._clear_levels()
        refused: list[str] = []  # a level past the tree's last: fitted at the automatic level
        Z, labels, probs, path = self._fit_stages(X, dup, precomputed_knn, embedding, outlier_graph, refused)
        self.embedding_ = Z
        self.n_features_in_ = X.shape[1]
        self._set_levels(path)
        self.labels_ = labels
        self.probabilities_ = np.where(labels >= 0, probs, 0.0)
        self._bound_unclustered()
        if not build_predictor:
            return self._refuse_level(refused)
        t = time.perf_counter()
        self._assign()
        self.timings_["assign_noise"] = time.perf_counter() - t
        t = time.perf_counter()
        with single_blas_thread():
            self._fit_predictor(X, distinct=dup[0] if dup is not None else None)
        self.timings_["predictor"] = time.perf_counter() - t
        return self._refuse_level(refused)

    def _refuse_level(self, refused: list[str]) -> Pipeline:
        """The end of ``fit``: a ``level`` the fitted tree does not have is refused only now
        (the number of levels is known only after the fit), with the pipeline fitted at the
        automatic level, so nothing is lost: ``set_level`` picks a level it has."""
        if refused:
            raise LevelRangeError(f"{refused[0]}; the pipeline is fitted at the automatic level "
                                  f"{self.auto_level_} (set_level picks another without refitting)")
        return self

    def _fit_stages(self, X, dup, precomputed_knn, embedding, outlier_graph, refused: list[str]):
        """Reduce, remove outliers and cluster; sets the fitted stages and returns (reduced
        coordinates, labels, probabilities) for every row of ``X``.

        Exact copies (``dup`` from :func:`distinct_rows`) are one item to every stage: the
        stages are fitted on the distinct vectors and each copy gets its first occurrence's
        coordinates, label and probability, whatever the stages are (UMAP scatters copies,
        K-means splits them, density clusterers see infinite density at zero distance). Sizes
        such as ``min_cluster_size`` therefore count distinct vectors. With the tuner's caches
        (which describe every row) all rows are fitted and copies are made to agree afterwards.
        With fewer than ``MIN_DISTINCT`` distinct vectors nothing is fitted: each distinct
        vector is a cluster. A ``level`` the fitted tree does not have is appended to
        ``refused`` and the automatic level used (``fit`` raises it at the end)."""
        n = len(X)
        if dup is not None and precomputed_knn is None and embedding is None and outlier_graph is None:
            first, inverse = dup
            if len(first) < MIN_DISTINCT:
                reducer, outliers, clusterer = self._resolve(n)
                self.reducer_, self.outliers_, self.clusterer_ = reducer, None, clusterer
                for k in ("reduce", "outliers", "cluster"):
                    self.timings_[k] = 0.0
                path = None
                if has_levels(clusterer):  # one level: each distinct vector a cluster
                    if not _is_auto(self.level) and int(self.level) > 0:
                        refused.append(f"level={self.level} is out of range: {len(first)} distinct "
                                       "vector(s) make one level (0)")
                    path = (inverse.astype(np.int64)[None, :], np.ones((1, n)), [], 0, 0)
                return X.copy(), inverse.astype(np.int64), np.ones(n, dtype=np.float64), path
            try:
                Z, labels, probs, path = self._fit_stages(X[first], None, None, None, None, refused)
            except ParameterError as e:  # e.g. min_cluster_size above the distinct count
                raise ParameterError(f"{e} (the {n} items hold {len(first)} distinct vectors: "
                                     "exact copies are clustered once)", e.param) from None
            if path is not None:
                path = (path[0][:, inverse], path[1][:, inverse], *path[2:])
            return Z[inverse], labels[inverse], probs[inverse], path
        reducer, outliers, clusterer = self._resolve(n)
        self.reducer_, self.outliers_, self.clusterer_ = reducer, outliers, clusterer
        knn = precomputed_knn
        takes_knn = "knn" in inspect.signature(clusterer.fit).parameters
        t = time.perf_counter()
        if knn is None and embedding is None and takes_knn:
            knn = self._knn(X, reducer)
        self.timings_["knn"] = time.perf_counter() - t
        t = time.perf_counter()
        if embedding is not None:
            Z = np.asarray(embedding)
            if Z.ndim != 2 or len(Z) != n:
                raise InputError(f"embedding must be ({n}, k), got {Z.shape}")
        elif reducer is not None:
            Z = reducer.fit(X, precomputed_knn=knn).embedding_
        else:
            Z = X
        Z = np.asarray(Z, dtype=np.float32)
        self.timings_["reduce"] = time.perf_counter() - t
        labels = np.full(n, NOISE, dtype=np.int64)
        probs = np.zeros(n, dtype=np.float64)
        keep = np.ones(n, dtype=bool)
        t = time.perf_counter()
        if outliers is not None:
            keep = ~outliers.fit(Z, neighbors_graph=outlier_graph).outlier_mask_
        self.timings_["outliers"] = time.perf_counter() - t
        t = time.perf_counter()
        path = None
        if knn is not None and isinstance(reducer, UMAPReducer):  # the graph UMAP was given (a
            knn = tuple(np.asarray(a)[:, :int(reducer.n_neighbors)] for a in knn)  # tuner's is wider)
        if keep.sum() >= 2:
            try:
                if takes_knn:  # the graph describes every row: only usable when none was removed
                    clusterer.fit(Z[keep], knn=knn if keep.all() else None)
                else:
                    clusterer.fit(Z[keep])
            except ParameterError as e:
                # the tree is made, its level picked last: keep the fit at the automatic level
                if e.param != "level" or getattr(clusterer, "levels_", None) is None:
                    raise
                refused.append(str(e))
                clusterer.set_level("auto")
            labels[keep] = clusterer.labels_
            probs[keep] = clusterer.probabilities_
            if has_levels(clusterer):
                path = self._fit_path(clusterer, Z, keep)
        labels[~keep] = OUTLIER
        self.timings_["cluster"] = time.perf_counter() - t
        if dup is not None:  # tuner caches: copies take their first occurrence's result
            first = dup[0][dup[1]]
            Z, labels, probs = Z[first], labels[first], probs[first]
            if path is not None:
                path = (path[0][:, first], path[1][:, first], *path[2:])
        return Z, labels, probs, path

    @staticmethod
    def _knn(X, reducer):
        """The input vectors' neighbour graph, computed once for the reducer (UMAP's
        ``precomputed_knn``) and the clusterer's level criterion: the reducer's neighbour count
        and metric (15, cosine without a UMAP reducer)."""
        from .stages.neighbors import METRICS, knn_graph

        if isinstance(reducer, UMAPReducer):
            k = int(min(reducer.n_neighbors, max(2, len(X) - 1)))
            metric = reducer.metric if reducer.metric in METRICS else None
        else:
            k, metric = 15, "cosine"
        if metric is None:  # a metric faiss cannot search: UMAP finds its own neighbours
            return None
        return knn_graph(X, int(min(k, len(X))), metric=metric)

    @staticmethod
    def _fit_path(clusterer, Z, keep):
        """``(levels (L, n), level probabilities (L, n), parents, auto level, level)`` of a
        fitted clusterer with levels, for every row: items removed as outliers take the path
        the clusterer predicts for them."""
        L = np.zeros((len(clusterer.levels_), len(keep)), np.int64)
        P = np.zeros(L.shape)
        L[:, keep] = clusterer.levels_
        P[:, keep] = clusterer.level_probabilities_
        if not keep.all():
            L[:, ~keep], P[:, ~keep] = clusterer.predict_path(Z[~keep])
        return L, P, [np.asarray(p, np.int64) for p in clusterer.parents_], int(clusterer.auto_level_), \
            int(clusterer.level_)

    def fit_labels(self, X, labels, embedding, probabilities=None):
        """Build the predictor for labels given from outside (a person's curated clusters from
        the studio) instead of fitting the stages.

        ``labels`` (n,) are cluster ids (``-1`` for unassigned items), ``embedding`` (n, k) the
        reduced coordinates the predictions' ``embedding`` is interpolated from (the space the
        labels were made in, e.g. the fitted model's or the studio's map), ``probabilities``
        the membership of each item (default 1: a person placed it). No stage is fitted: the
        reducer and clusterer are kept as configured (for their parameters); there is no outlier
        stage (set ``outliers=None``). ``predict`` on the training vectors then reproduces the
        labels (each item's own copy dominates its neighbours' vote).
        """
        X = np.asarray(X, dtype=np.float32)
        labels = np.asarray(labels)
        if X.ndim != 2 or len(X) < 3:
            raise InputError(f"need a 2-D array of at least 3 vectors, got shape {X.shape}")
        if labels.shape != (len(X),) or labels.dtype.kind not in "iu":
            raise InputError(f"labels must be {len(X)} integers, got {labels.dtype} {labels.shape}")
        if labels.min(initial=0) < NOISE:
            raise InputError("labels below -1: give unassigned items -1 (no outlier stage here)")
        Z = np.asarray(embedding, dtype=np.float32)
        if Z.ndim != 2 or len(Z) != len(X):
            raise InputError(f"embedding must be ({len(X)}, k), got {Z.shape}")
        if self.outliers is not None:
            raise ParameterError("fit_labels builds a model without an outlier stage; set outliers=None",
                                 "outliers")
        self.check_params()
        reducer, _, clusterer = self._resolve(len(X))
        self.reducer_, self.outliers_, self.clusterer_ = reducer, None, clusterer
        self.timings_ = {}
        self._clear_levels()
        self.embedding_ = Z
        self.labels_ = labels.astype(np.int64)
        p = np.ones(len(X)) if probabilities is None else np.clip(np.asarray(probabilities, np.float64), 0, 1)
        self.probabilities_ = np.where(self.labels_ >= 0, p, 0.0)
        self.n_features_in_ = X.shape[1]
        t = time.perf_counter()
        self._assign()
        with single_blas_thread():
            self._fit_predictor(X)
        self.timings_["predictor"] = time.perf_counter() - t
        return self

    def fit_predict(self, X, y=None):
        return self.fit(X).labels_

    @property
    def status_(self) -> np.ndarray:
        return status_of(self.labels_)

    @property
    def n_clusters_(self) -> int:
        return int(len(set(self.labels_.tolist()) - {NOISE, OUTLIER}))

    # -- levels ----------------------------------------------------------------------------------
    def _clear_levels(self):
        self.levels_ = self.level_probabilities_ = self.n_clusters_per_level_ = None
        self.parents_ = []
        self.auto_level_ = self.level_ = None

    def _set_levels(self, path):
        """``path`` from :meth:`_fit_path` (or None: the clusterer has no levels)."""
        if path is None:
            self._clear_levels()
            return
        L, P, parents, auto, level = path
        self.levels_ = np.asarray(L, dtype=np.int64)
        self.level_probabilities_ = np.clip(np.asarray(P, dtype=np.float64), 0.0, 1.0)
        self.parents_ = [np.asarray(p, dtype=np.int64) for p in parents]
        self.n_clusters_per_level_ = np.array([int(lv.max()) + 1 for lv in self.levels_], dtype=np.int64)
        self.auto_level_, self.level_ = int(auto), int(level)

    def _bound_unclustered(self):
        """At most ``max_unclustered`` of the items stay noise or outlier in ``labels_``: the
        others with the strongest pull toward a cluster get it (their cluster on the fitted
        level's path with a hierarchy, else a vote of their 15 nearest clustered items in the
        reduced space)."""
        mu = self.max_unclustered
        lab = self.labels_
        un = lab < 0
        budget = int(np.floor(float(mu) * len(lab))) if mu is not None else None
        if budget is None or un.sum() <= budget or un.all():
            return
        q = np.flatnonzero(un)
        if self.levels_ is not None:
            c, share = self.levels_[self.level_][q], self.level_probabilities_[self.level_][q]
        else:
            c, share, _ = knn_vote(self.embedding_[~un], lab[~un], self.embedding_[q], k=15)
        take = np.argsort(-share, kind="stable")[:int(un.sum() - budget)]
        self.labels_ = lab.copy()
        self.labels_[q[take]] = c[take]
        self.probabilities_ = self.probabilities_.copy()
        self.probabilities_[q[take]] = np.clip(share[take], 0.0, 1.0)

    def set_level(self, level) -> Pipeline:
        """Switch the flat labelling (``labels_``, ``cluster_``, what ``predict`` answers) to
        another level of the fitted tree without refitting: ``"auto"`` or a level index
        (0 = coarsest). Items left unclustered (noise, outliers) stay so. A loaded model saved
        with ``names_by_level`` switches ``model_info_["metadata"]["names"]`` to that level's."""
        check_is_fitted(self, "embedding_")
        if self.levels_ is None:
            raise ParameterError(f"level={level!r}: this model's clusterer has no levels", "level")
        PIPELINE_PARAMS["level"].check(level, "level")
        lv = self.auto_level_ if _is_auto(level) else int(level)
        if lv >= len(self.levels_):
            raise ParameterError(f"level={lv} is out of range: this fit has {len(self.levels_)} levels "
                                 f"(0..{len(self.levels_) - 1}, cluster counts "
                                 f"{self.n_clusters_per_level_.tolist()})", "level")
        self.level = level
        self.level_ = int(lv)
        self._switch_names(lv)
        un = self.labels_ < 0
        self.labels_ = np.where(un, self.labels_, self.levels_[lv]).astype(np.int64)
        self.probabilities_ = np.where(un, 0.0, self.level_probabilities_[lv])
        self._assign()
        return self

    def level_with(self, n_clusters: int) -> int:
        """Index of the fitted level whose cluster count is closest to ``n_clusters`` (the
        coarser on a tie), e.g. ``pipe.set_level(pipe.level_with(6))``; also on a loaded model."""
        check_is_fitted(self, "embedding_")
        if self.levels_ is None:
            raise ParameterError("this model's clusterer has no levels (use clusterer hierarchy or evoc)",
                                 "clusterer")
        PIPELINE_PARAMS["level"].check(n_clusters, "n_clusters")
        return int(np.argmin(np.abs(self.n_clusters_per_level_ - int(n_clusters))))

    def _switch_names(self, lv: int) -> None:
        """A loaded model's ``metadata.names`` become level ``lv``'s (``names_by_level``, saved
        with it). A model saved before every level was named knows the names of its saved level
        only: the others get none rather than another level's."""
        info = getattr(self, "model_info_", None)
        meta = info.get("metadata") if isinstance(info, dict) else None
        if not isinstance(meta, dict):
            return
        by_level = meta.get("names_by_level")
        if by_level is None:
            saved = (info.get("levels") or {}).get("level")
            by_level = meta["names_by_level"] = ({} if saved is None else
                                                 {str(int(saved)): dict(meta.get("names") or {})})
        meta["names"] = dict(by_level.get(str(int(lv)), {}))

    def level_table(self) -> list[dict]:
        """Per level, coarse to fine: ``level``, ``n_clusters``, ``sizes`` (items per cluster id)
        and ``parents`` (each cluster's parent in the level above; None for level 0)."""
        if self.levels_ is None:
            return []
        out = []
        for lv, row in enumerate(self.levels_):
            k = int(self.n_clusters_per_level_[lv])
            out.append({"level": lv, "n_clusters": k, "auto": lv == self.auto_level_,
                        "chosen": lv == self.level_,
                        "sizes": np.bincount(row, minlength=k).astype(int).tolist(),
                        "parents": None if lv == 0 else self.parents_[lv - 1].astype(int).tolist()})
        return out

    def _assign(self):
        lab = self.labels_
        self.cluster_ = lab.copy()
        self.confidence_ = self.probabilities_.copy()
        clustered = lab >= 0
        if not self.assign_noise or clustered.all():
            return
        if self.levels_ is not None:  # the tree has a place for everyone
            self.cluster_ = self.levels_[self.level_].copy()
            self.confidence_ = np.where(clustered, self.probabilities_, self.level_probabilities_[self.level_])
            return
        if not clustered.any():
            return
        Zc = self.embedding_[clustered]
        q = ~clustered
        c, share, _ = knn_vote(Zc, lab[clustered], self.embedding_[q], k=15)
        self.cluster_[q] = c
        self.confidence_[q] = share

    # -- the predictor: plain arrays, no pickled objects -----------------------------------------
    def _space(self, X, zero_vectors: str = "place") -> np.ndarray:
        """``X`` checked and mapped into the predictor's space. ``zero_vectors="refuse"`` (new
        items to place): under the cosine metric an all-zero vector has no direction and every
        fitted item is equally far from it (its "cluster" would be the vote of arbitrary
        neighbours), so it is refused, naming it, as NaN is; ``"place"``: the rows of a
        collection (the fit's own, or those assigned after a sample fit, which a full fit would
        have clustered too)."""
        if zero_vectors not in ("refuse", "place"):
            raise ParameterError(f"zero_vectors must be 'refuse' or 'place', not {zero_vectors!r}", "zero_vectors")
        X = as_vectors(X)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2:
            raise InputError(f"model expects one vector or rows of vectors (n, {self.n_features_in_}), "
                             f"got an array of shape {X.shape}")
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"model expects {self.n_features_in_}-d vectors, got {X.shape[1]}-d "
                             "(was it fitted with another encoder?)")
        if not np.isfinite(X).all():
            bad = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
            raise InputError(f"vector {bad} contains NaN or infinity")
        if self.ref_normalize_:
            if zero_vectors == "refuse":
                zero = ~X.any(axis=1)
                if zero.any():
                    raise InputError(f"vector {int(np.flatnonzero(zero)[0])} is all zeros ({int(zero.sum())} "
                                     "such vectors): this model compares directions (cosine) and a zero "
                                     "vector has none")
            X = l2_normalize(X)
        if self.ref_components_ is not None:
            X = (X - self.ref_mean_) @ self.ref_components_.T
        return np.ascontiguousarray(X, dtype=np.float32)

    def _fit_predictor(self, X, distinct=None):
        """``distinct``: indices of the distinct rows of ``X`` (None: all are); copies of a row
        add nothing to the reference set, and would make the novelty distances zero."""
        n, d = X.shape
        metric = getattr(self.reducer_, "metric", "euclidean")
        self.ref_normalize_ = bool(metric == "cosine")
        self.ref_components_ = None
        self.ref_mean_ = None
        dims = self.reference_dims
        if dims is not None and d > dims and n > dims:
            from sklearn.decomposition import PCA

            Xs = l2_normalize(X) if self.ref_normalize_ else X
            rng = np.random.default_rng(self.random_state)
            sub = rng.choice(n, size=min(n, 20000), replace=False) if n > 20000 else slice(None)
            pca = PCA(n_components=int(dims), svd_solver="randomized", random_state=self.random_state).fit(Xs[sub])
            self.ref_mean_ = pca.mean_.astype(np.float32)
            self.ref_components_ = pca.components_.astype(np.float32)
        if distinct is None:
            self.ref_index_ = reference_sample(self.cluster_, self.reference_size, self.random_state)
        else:
            distinct = np.asarray(distinct)
            self.ref_index_ = distinct[reference_sample(self.cluster_[distinct], self.reference_size,
                                                        self.random_state)]
        self.ref_vectors_ = self._space(X[self.ref_index_])
        self._build_index()
        # novelty: mean distance to the k nearest reference items, leave-self-out, on a sample
        k = int(max(1, min(self.predict_neighbors, len(self.ref_index_) - 1)))
        rng = np.random.default_rng(self.random_state)
        m = len(self.ref_index_)
        if m < 2:  # one distinct training vector: no distances to learn from
            self.novelty_threshold_ = np.asarray(0.0)
            return
        probe = rng.choice(m, size=min(m, 5000), replace=False)
        dist, _ = self._neighbours(self.ref_vectors_[probe], k + 1)
        self.novelty_threshold_ = np.asarray(float(np.quantile(dist[:, 1:].mean(axis=1), NOVELTY_QUANTILE)))

    def _ref_arrays(self) -> dict:
        """The fitted per-item arrays at the reference items (``ref_index_``), as ``predict_details``
        reads them, made once per fitted state instead of on every call (a service answers one
        item at a time: copying them cost more than the vote). Rebuilt when any of those arrays
        is replaced (a new fit, ``set_level``)."""
        src = (self.ref_index_, self.labels_, self.probabilities_, self.cluster_, self.confidence_,
               self.embedding_, getattr(self, "levels_", None))
        cache = self.__dict__.get("_ref_cache")
        if cache is None or any(a is not b for a, b in zip(cache[0], src)):
            ri, levels = self.ref_index_, src[-1]
            lab = self.labels_[ri]
            ref = {"labels": np.where(lab == OUTLIER, NOISE, lab), "probabilities": self.probabilities_[ri],
                   "cluster": self.cluster_[ri], "confidence": self.confidence_[ri],
                   "embedding": self.embedding_[ri].astype(np.float64),
                   "levels": None if levels is None else np.ascontiguousarray(levels[:, ri])}
            ref["n_clusters"] = None if levels is None else [int(lv.max()) + 1 for lv in ref["levels"]]
            cache = self._ref_cache = (src, ref)
        return cache[1]

    def _build_index(self):
        import faiss  # heavy: loaded when a predictor is built or a model loaded

        self.__dict__.pop("_ref_cache", None)

        R = np.ascontiguousarray(self.ref_vectors_, dtype=np.float32)
        self._faiss_ = faiss.IndexFlatL2(R.shape[1])
        self._faiss_.add(R)
        self._hnsw_ = None

    def _graph(self):
        """The HNSW graph over the reference vectors, built on first use (seconds for 40k
        references, so a model that answers one item at a time never pays for it). Built on one
        thread: the same graph, and so the same answers, in every process that loads the model."""
        if self._hnsw_ is None:
            import faiss

            R = np.ascontiguousarray(self.ref_vectors_, dtype=np.float32)
            index = faiss.IndexHNSWFlat(R.shape[1], HNSW_M)
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                index.add(R)
            finally:
                faiss.omp_set_num_threads(before)
            index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * int(self.predict_neighbors))
            self._hnsw_ = index
        return self._hnsw_

    def _neighbours(self, Q: np.ndarray, k: int):
        import faiss

        index = self._faiss_
        if len(self.ref_vectors_) > EXACT_SEARCH_MAX and len(Q) >= HNSW_MIN_QUERIES:
            index = self._graph()
        # faiss parallelises over queries with OpenMP; for a few queries the threads only add
        # barrier waits (measured at load ~20: one query 77 ms with 2 threads, 1.4 ms with 1).
        if len(Q) < SMALL_QUERY:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                dist2, idx = index.search(Q, k)
            finally:
                faiss.omp_set_num_threads(before)
        else:
            dist2, idx = index.search(Q, k)
        return np.sqrt(np.maximum(dist2, 0.0)), idx

    def predict_path(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Each new item's root-to-leaf path through the fitted levels: ``(labels,
        probabilities)``, each (n_levels, m), coarse to fine; ``probabilities[l]`` is the vote
        share of the chosen cluster among the item's neighbours inside its level ``l - 1``
        cluster (a top-down distance-weighted vote of its nearest reference items)."""
        check_is_fitted(self, "ref_vectors_")
        if self.levels_ is None:
            raise ParameterError("this model's clusterer has no levels (use clusterer hierarchy or evoc)",
                                 "clusterer")
        Q = self._space(X, zero_vectors="refuse")
        k = int(max(1, min(self.predict_neighbors, len(self.ref_index_))))
        dist, idx = self._neighbours(Q, k)
        return self._vote_path(dist, idx)

    def _vote_path(self, dist, idx):
        ref = self._ref_arrays()
        return vote_path(dist, idx, ref["levels"], self.parents_, n_clusters=ref["n_clusters"])

    def predict_details(self, X, zero_vectors: str = "refuse") -> dict:
        """Per item: ``labels`` (-2/-1/>=0), ``probabilities``, ``status``, ``cluster`` and
        ``confidence`` (nearest cluster even for noise/outliers), ``embedding`` (reduced coords),
        ``novel``, and the voting neighbours: ``neighbors`` (rows of the fitted items) with their
        normalised 1/d ``weights`` (anything defined per fitted item, such as a 2-D map position,
        carries over to new items as ``(weights[..., None] * values[neighbors]).sum(1)``).

        ``zero_vectors``: ``"refuse"`` (default) raises an ``InputError`` naming an all-zero
        vector when the model compares directions (cosine); ``"place"`` votes it like any other."""
        check_is_fitted(self, "ref_vectors_")
        Q = self._space(X, zero_vectors)
        k = int(max(1, min(self.predict_neighbors, len(self.ref_index_))))
        dist, idx = self._neighbours(Q, k)
        ri, ref = self.ref_index_, self._ref_arrays()
        w = 1.0 / np.maximum(dist.astype(np.float64), 1e-9)
        w /= w.sum(axis=1, keepdims=True)
        emb = np.einsum("qk,qkd->qd", w, ref["embedding"][idx]).astype(np.float32)
        labels, share, prob = vote(dist, idx, ref["labels"], ref["probabilities"])
        proba = np.where(labels >= 0, share * prob, 0.0)
        novel = dist.mean(axis=1) > float(np.ravel(self.novelty_threshold_)[0])
        if getattr(self, "outliers_", None) is not None and len(emb):  # scikit-learn refuses 0 rows
            out = (self.outliers_.predict(emb) == -1) | novel
            labels = np.where(out, OUTLIER, labels)
            proba = np.where(out, 0.0, proba)
        cluster, cshare, cconf = vote(dist, idx, ref["cluster"], ref["confidence"])
        conf = cshare * cconf
        path = None
        if getattr(self, "levels_", None) is not None:
            plab, pprob = self._vote_path(dist, idx)
            path = {"labels": plab, "probabilities": pprob}
            # the flat answer is the path's cluster at the level in use; its probability the
            # product of the path's steps down to it (the share of the neighbours in that cluster)
            at, share = plab[self.level_], np.prod(pprob[:self.level_ + 1], axis=0)
            clustered = labels >= 0
            labels = np.where(clustered, at, labels)
            proba = np.where(clustered, share, 0.0)
            cluster, conf = at, share
        if not self.assign_noise:
            cluster, conf = labels.copy(), proba.copy()
        status = status_of(labels)
        junk = self._junk_clusters()
        if junk:  # a curated model (the studio's publish): clusters a person marked as junk
            status = np.where(np.isin(labels, junk), "junk", status)
        return {"labels": labels, "probabilities": np.clip(proba, 0, 1), "status": status,
                "cluster": cluster, "confidence": np.clip(conf, 0, 1), "embedding": emb,
                "novel": novel, "neighbors": ri[idx], "weights": w.astype(np.float32), "path": path}

    def _junk_clusters(self) -> list[int]:
        """The clusters a person marked as junk in the studio (a published curated model's
        metadata): their items' status is ``"junk"``, as in the run's ``curated_status``."""
        meta = (getattr(self, "model_info_", None) or {}).get("metadata") or {}
        junk = (meta.get("curated") or {}).get("junk") or []
        return [int(c) for c in junk if isinstance(c, int) and not isinstance(c, bool)]

    def predict(self, X) -> np.ndarray:
        """Labels (-2 outlier / -1 noise / >= 0 cluster) for new vectors, without refitting."""
        return self.predict_details(X)["labels"]

    def predict_membership(self, X) -> np.ndarray:
        """Membership probability of the predicted cluster (0 for noise / outliers)."""
        return self.predict_details(X)["probabilities"]

    def transform(self, X) -> np.ndarray:
        """Approximate reduced coordinates of new vectors (neighbour-weighted training coords)."""
        return self.predict_details(X)["embedding"]

    # -- persistence -------------------------------------------------------------------------
    def _model_doc(self, metadata: dict | None) -> tuple[dict, dict]:
        check_is_fitted(self, "ref_vectors_")
        arrays = {}
        for name in MODEL_ARRAYS:
            v = getattr(self, name, None)
            if v is not None:
                arrays[name.rstrip("_")] = np.asarray(v) if np.ndim(v) == 0 else np.ascontiguousarray(v)
        arrays.update(self.hierarchy_arrays())
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in STAGES}
        info = {
            "pipeline": params,
            "stages": {"reducer": _stage_json(self.reducer_), "outliers": _stage_json(self.outliers_),
                       "clusterer": _stage_json(self.clusterer_)},
            "n_items": int(len(self.labels_)), "n_features_in": int(self.n_features_in_),
            "n_clusters": int(self.n_clusters_), "n_reference": int(len(self.ref_index_)),
            "levels": None if getattr(self, "levels_", None) is None else {
                "n_levels": int(len(self.levels_)), "n_clusters_per_level": self.n_clusters_per_level_.tolist(),
                "auto_level": int(self.auto_level_), "level": int(self.level_)},
            "ref_normalize": bool(self.ref_normalize_),
            "timings_s": {k: float(v) for k, v in getattr(self, "timings_", {}).items()},
            "metadata": dict(metadata or {}),
        }
        return info, arrays

    def _own_metadata(self) -> dict:
        """A loaded model's metadata (``model_info_``; {} for a pipeline fitted here)."""
        return dict((getattr(self, "model_info_", None) or {}).get("metadata") or {})

    def hierarchy_arrays(self) -> dict[str, np.ndarray]:
        """The fitted tree as plain arrays ({} without levels): ``levels`` (n_levels, n) int32,
        row 0 coarsest; ``parents`` + ``parents_offsets`` (level ``l + 1``'s parents are
        ``parents[offsets[l]:offsets[l + 1]]``); ``n_clusters``; ``auto_level``; ``level``;
        ``level_probabilities`` (n_levels, n) float32."""
        if getattr(self, "levels_", None) is None:
            return {}
        P = self.parents_
        return {"levels": self.levels_.astype(np.int32),
                "parents": np.concatenate(P).astype(np.int32) if P else np.zeros(0, np.int32),
                "parents_offsets": np.cumsum([0] + [len(p) for p in P]).astype(np.int64),
                "n_clusters": self.n_clusters_per_level_.astype(np.int64),
                "auto_level": np.asarray(self.auto_level_, np.int64), "level": np.asarray(self.level_, np.int64),
                "level_probabilities": self.level_probabilities_.astype(np.float32)}

    def save(self, path, overwrite: bool = False, metadata: dict | None = None) -> dict:
        """Write the fitted model as a folder of JSON + npz (no pickle); returns
        ``{"path", "bytes", "files"}``. ``metadata`` (JSON-able: the encoder, cluster names,
        the run id) is stored in model.json; None keeps a loaded model's own (its encoder, the
        names of the level in use, a curated model's junk clusters)."""
        info, arrays = self._model_doc(self._own_metadata() if metadata is None else metadata)
        return persist.write_model(path, info, arrays, overwrite=overwrite)

    def publish(self, store, metadata: dict | None = None, run_id: str | None = None,
                source: str = "") -> str:
        """Save as the next version of a model store (``RUN/models``); returns its path.
        ``metadata`` None: a loaded model's own, as in :meth:`save`."""
        store = store if isinstance(store, persist.ModelStore) else persist.ModelStore(store)
        base = self._own_metadata() if metadata is None else metadata
        info, arrays = self._model_doc({**base, "run_id": run_id, "source": source})
        return str(store.publish(lambda d: persist.write_model(d, info, arrays), run_id, source))

    @classmethod
    def load(cls, path) -> Pipeline:
        """A model written by :meth:`save` / :meth:`publish`, ready to ``predict`` (``path``: a
        model folder, a model store or a run folder: the latest version)."""
        folder = persist.resolve_model(path)
        info, arrays = persist.read_model(folder)
        try:
            _check_model_doc(info)
            st = info["stages"]
            stages = {k: _stage_from_json(k, st.get(k)) for k in STAGES}
            pipe = cls(**stages, **info["pipeline"])
            pipe.check_params()
            for name in MODEL_ARRAYS:
                setattr(pipe, name, arrays.get(name.rstrip("_")))
            pipe.reducer_, pipe.clusterer_ = stages["reducer"], stages["clusterer"]
            pipe.n_features_in_ = int(info["n_features_in"])
            pipe.ref_normalize_ = bool(info["ref_normalize"])
            pipe.timings_ = dict(info.get("timings_s", {}))
        except (KeyError, TypeError, ValueError, MediaclusterError) as e:
            what = f"lacks {e}" if isinstance(e, KeyError) else str(e)
            raise ModelFormatError(f"{folder}/model.json is damaged or was edited: {what}") from e
        _check_model_arrays(pipe, folder, info)
        pipe._set_levels(_levels_from_arrays(arrays, len(pipe.labels_), folder))
        pipe.outliers_ = None
        if stages["outliers"] is not None:  # deterministic given its data: refit, never unpickle
            E = pipe.embedding_  # fitted on the distinct items, as in fit (copies share a row)
            dup = distinct_rows(np.asarray(E, dtype=np.float32))
            pipe.outliers_ = stages["outliers"].fit(E[dup[0]] if dup is not None else E)
        pipe._build_index()
        pipe.model_info_ = info
        pipe.model_path_ = str(folder)
        return pipe

    # -- tuning ------------------------------------------------------------------------------
    def tune(self, X, **kwargs):
        """Tune this pipeline's parameters with Optuna (see :func:`mediacluster.tune.tune`)."""
        from .tune import tune  # heavy: optuna loads only when tuning

        return tune(X, pipeline=self, **kwargs)


def _stage_json(stage):
    if stage is None:
        return None
    info = registry.of(stage)
    if info is None:
        raise ModelFormatError(f"cannot save stage of type {type(stage).__name__}: not a registered stage")
    # numpy scalars (a grid search over np.arange) are stored as the Python numbers they are
    params = {k: v.item() if isinstance(v, np.generic) else v for k, v in stage.get_params(deep=False).items()}
    import json

    for k, v in params.items():
        try:
            json.dumps(v)
        except TypeError as e:
            raise ModelFormatError(f"{type(stage).__name__}.{k}={v!r} is not JSON-serialisable; cannot save") from e
    return {"class": type(stage).__name__, "params": params}


def _stage_from_json(kind: str, spec):
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ModelFormatError(f"{kind}: expected {{class, params}}, got {spec!r}")
    try:
        info = registry.by_class(kind, spec.get("class"))
    except KeyError:
        raise ModelFormatError(f"unknown {kind} class {spec.get('class')!r} in model; known: "
                               f"{sorted(i.cls.__name__ for i in map(lambda n: registry.get(kind, n), registry.names(kind)))}") from None
    params = spec.get("params", {})
    if not isinstance(params, dict) or set(params) - set(info.params):
        raise ModelFormatError(f"{kind} {spec.get('class')}: unexpected parameters {params!r}")
    return registry.build(kind, info.name, params)


def _need_type(doc: dict, key: str, types, what: str, optional: bool = False, prefix: str = ""):
    if key not in doc:
        if optional:
            return None
        raise ModelFormatError(f"lacks {prefix}{key!r}")
    v = doc[key]
    if v is None and optional:
        return None
    if (isinstance(v, bool) and types is not bool) or not isinstance(v, types):
        raise ModelFormatError(f"{prefix}{key} must be {what}, got {v!r}")
    return v


def _check_model_doc(info: dict) -> None:
    """Every field of model.json that loading or ``assign`` reads, by type and range (the
    arrays are checked by :func:`_check_model_arrays`)."""
    pipe = _need_type(info, "pipeline", dict, "a mapping of pipeline parameters")
    bad = sorted(set(pipe) - set(PIPELINE_PARAMS))
    if bad:
        raise ModelFormatError(f"pipeline has unknown parameter(s) {bad}")
    st = _need_type(info, "stages", dict, "a mapping reducer/outliers/clusterer -> {class, params}")
    bad = sorted(set(st) - set(STAGES))
    if bad:
        raise ModelFormatError(f"stages has unknown stage kind(s) {bad}")
    for key in ("n_features_in", "n_items"):
        v = _need_type(info, key, int, "a positive integer", optional=key != "n_features_in")
        if v is not None and v < 1:
            raise ModelFormatError(f"{key} must be a positive integer, got {v!r}")
    _need_type(info, "ref_normalize", bool, "true or false")
    t = _need_type(info, "timings_s", dict, "a mapping of stage -> seconds", optional=True)
    if t and not all(isinstance(v, int | float) and not isinstance(v, bool) for v in t.values()):
        raise ModelFormatError("timings_s must map stages to seconds")
    meta = _need_type(info, "metadata", dict, "a mapping", optional=True) or {}
    for key in ("encoder", "run_id", "source"):
        _need_type(meta, key, str, "text", optional=True, prefix="metadata.")
    names = _need_type(meta, "names", dict, "a mapping of cluster id -> name", optional=True,
                       prefix="metadata.") or {}
    _check_names(names, "metadata.names")
    by_level = _need_type(meta, "names_by_level", dict, "a mapping of level -> {cluster id: name}",
                          optional=True, prefix="metadata.") or {}
    n_levels = ((info.get("levels") or {}).get("n_levels")) if isinstance(info.get("levels"), dict) else None
    for lv, named in by_level.items():
        try:
            ok = int(lv) >= 0 and (n_levels is None or int(lv) < int(n_levels))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFormatError(f"metadata.names_by_level: {lv!r} is not a level of this model")
        if not isinstance(named, dict):
            raise ModelFormatError(f"metadata.names_by_level.{lv} must be a mapping of cluster id -> name")
        _check_names(named, f"metadata.names_by_level.{lv}")


def _check_names(names: dict, where: str) -> None:
    for k, v in names.items():
        try:
            int(k)
        except ValueError:
            raise ModelFormatError(f"{where}: {k!r} is not a cluster id") from None
        if v is not None and not isinstance(v, str):
            raise ModelFormatError(f"{where}: the name of cluster {k} must be text, got {v!r}")


def _check_model_arrays(pipe, folder, info: dict | None = None) -> None:
    """The arrays of a loaded model: present, of the right kind, shape and range, consistent
    with each other and with model.json (a tampered model is refused, naming what is wrong)."""
    def bad(msg):
        return ModelFormatError(f"{folder}/arrays.npz is damaged or was edited: {msg}")

    need = ("labels_", "probabilities_", "cluster_", "confidence_", "embedding_", "ref_index_",
            "ref_vectors_", "novelty_threshold_")
    for name in need:
        if getattr(pipe, name) is None:
            raise bad(f"it lacks {name.rstrip('_')!r}")
    for name in ("ref_mean_", "ref_components_"):
        v = getattr(pipe, name)
        if v is not None and v.dtype.kind not in "iuf":
            raise bad(f"{name.rstrip('_')} must be numbers")
    for name in ("labels_", "cluster_", "ref_index_"):
        a = getattr(pipe, name)
        if a.dtype.kind not in "iu" or a.ndim != 1:
            raise bad(f"{name.rstrip('_')} must be a 1-D array of integers, got {a.dtype} {a.shape}")
    for name in ("probabilities_", "confidence_", "embedding_", "ref_vectors_", "novelty_threshold_"):
        a = getattr(pipe, name)
        if a.dtype.kind not in "iuf":
            raise bad(f"{name.rstrip('_')} must be numbers, got {a.dtype}")
        if not np.isfinite(a).all():
            raise bad(f"{name.rstrip('_')} holds NaN or infinity")
    n = len(pipe.labels_)
    if n < 1:
        raise bad("the model has no items")
    for key, have in (("n_items", n), ("n_reference", len(pipe.ref_index_))):
        if info is not None and info.get(key) is not None and info.get(key) != have:
            raise bad(f"it holds {have} rows where model.json says {key} {info.get(key)!r}")
    for name in ("probabilities_", "confidence_"):
        a = getattr(pipe, name)
        if a.ndim != 1 or len(a) != n:
            raise bad(f"{name.rstrip('_')} has shape {a.shape}, labels {n} rows")
        if len(a) and (a.min() < 0 or a.max() > 1):
            raise bad(f"{name.rstrip('_')} must lie in [0, 1]")
    if len(pipe.cluster_) != n:
        raise bad(f"cluster has {len(pipe.cluster_)} rows, labels {n}")
    if pipe.embedding_.ndim != 2 or len(pipe.embedding_) != n or pipe.embedding_.shape[1] < 1:
        raise bad(f"embedding has shape {pipe.embedding_.shape}, expected ({n}, k)")
    for name in ("labels_", "cluster_"):
        if getattr(pipe, name).min() < OUTLIER:
            raise bad(f"{name.rstrip('_')} holds values below {OUTLIER}")
    ri, rv = pipe.ref_index_, pipe.ref_vectors_
    if rv.ndim != 2 or len(ri) != len(rv) or len(ri) < 1 or ri.min() < 0 or ri.max() >= n:
        raise bad("ref_index does not match the reference vectors")
    d = pipe.n_features_in_
    mean, comp = pipe.ref_mean_, pipe.ref_components_
    if (mean is None) != (comp is None):
        raise bad("ref_mean and ref_components come together")
    if comp is not None:
        if comp.ndim != 2 or comp.shape[1] != d or mean.shape != (d,) or rv.shape[1] != comp.shape[0]:
            raise bad(f"ref_mean {mean.shape} / ref_components {comp.shape} / ref_vectors {rv.shape} "
                      f"do not fit {d}-d inputs")
    elif rv.shape[1] != d:
        raise bad(f"ref_vectors are {rv.shape[1]}-d but model.json says n_features_in {d}")
    nt = pipe.novelty_threshold_
    if nt.size != 1 or float(np.ravel(nt)[0]) < 0:
        raise bad(f"novelty_threshold must be one number >= 0, got {nt.tolist()}")


def _levels_from_arrays(arrays: dict, n: int, folder):
    """The path tuple of :meth:`Pipeline._set_levels` from a saved model's arrays (None when it
    has no levels), checked: nested, ordered coarse to fine, consistent with the parents."""
    present = [k for k in ("levels", "parents", "parents_offsets", "n_clusters", "auto_level", "level",
                           "level_probabilities") if k in arrays]
    if not present:
        return None

    def bad(msg):
        return ModelFormatError(f"{folder}/arrays.npz is damaged or was edited: the hierarchy {msg}")

    if len(present) < 7:
        raise bad(f"is incomplete (has only {present})")
    L, flat, off = (np.asarray(arrays[k]) for k in ("levels", "parents", "parents_offsets"))
    P = np.asarray(arrays["level_probabilities"])
    if L.ndim != 2 or L.shape[1] != n or L.shape[0] < 1 or L.dtype.kind not in "iu":
        raise bad(f"levels must be (n_levels, {n}) integers, got {L.dtype} {L.shape}")
    if P.shape != L.shape or P.dtype.kind != "f" or not np.isfinite(P).all() or P.min() < 0 or P.max() > 1:
        raise bad("level_probabilities must be numbers in [0, 1] shaped like levels")
    L = L.astype(np.int64)
    if L.min() < 0:
        raise bad("levels hold negative cluster ids")
    counts = np.array([int(r.max()) + 1 for r in L])
    if (np.diff(counts) <= 0).any() or not np.array_equal(counts, np.asarray(arrays["n_clusters"])):
        raise bad(f"levels are not ordered coarse to fine or disagree with n_clusters: {counts.tolist()}")
    if off.shape != (len(L),) or off[0] != 0 or (np.diff(off) != counts[1:]).any() or off[-1] != len(flat):
        raise bad("parents_offsets do not match the levels")
    parents = [flat[off[i]:off[i + 1]].astype(np.int64) for i in range(len(L) - 1)]
    for lv, par in enumerate(parents):
        if par.min(initial=0) < 0 or par.max(initial=0) >= counts[lv] or (par[L[lv + 1]] != L[lv]).any():
            raise bad(f"level {lv + 1} is not nested in level {lv}")
    auto, level = int(np.asarray(arrays["auto_level"])), int(np.asarray(arrays["level"]))
    if not (0 <= auto < len(L) and 0 <= level < len(L)):
        raise bad(f"auto_level {auto} / level {level} out of range 0..{len(L) - 1}")
    return L, P.astype(np.float64), parents, auto, level


MIN_DISTINCT = 3  # below this many distinct vectors the stages are not run (see _fit_stages)


def distinct_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact duplicate rows of ``X``: ``(first, inverse)`` with ``first`` the index of each
    distinct row's first occurrence (in input order) and ``X[first][inverse] == X``; None when
    every row is distinct.

    Rows are first grouped by the bytes of 8 spread-out columns (cheap: 32 bytes a row), and
    only rows that share those are compared whole, so a collection without copies costs one
    sort of short keys (52-95 ms for 50k CIFAR-10 vectors of 1280 dims at load 21 on 2 cores;
    1.3 s when 5k of 55k rows are copies)."""
    X = np.ascontiguousarray(X)
    n, d = X.shape
    if n < 2:
        return None
    cols = np.unique(np.linspace(0, d - 1, min(d, 8)).astype(np.int64))
    key = np.ascontiguousarray(X[:, cols])
    key = key.view(np.dtype((np.void, key.dtype.itemsize * len(cols)))).ravel()
    _, inv0, counts = np.unique(key, return_inverse=True, return_counts=True)
    cand = np.flatnonzero(counts[inv0.ravel()] > 1)
    if not len(cand):
        return None
    full = np.ascontiguousarray(X[cand])
    full = full.view(np.dtype((np.void, full.dtype.itemsize * d))).ravel()
    _, first_c, inv_c = np.unique(full, return_index=True, return_inverse=True)
    rep = np.arange(n)
    rep[cand] = cand[first_c[inv_c.ravel()]]
    first = np.flatnonzero(rep == np.arange(n))
    if len(first) == n:
        return None
    pos = np.empty(n, dtype=np.int64)
    pos[first] = np.arange(len(first))
    return first, pos[rep]


def merge_duplicates(dup, representative, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact copies (``dup`` from :func:`distinct_rows`, or None) joined with near-duplicate
    groups (``representative``: (n,) row of each row's group representative, -1 for none), in
    the same ``(first, inverse)`` form. A merged group is represented by its given
    representative (the smallest one when exact copies join two groups), else by its first row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rep = np.asarray(representative)
    if rep.shape != (n,) or rep.dtype.kind not in "iu":
        raise InputError(f"duplicates must be {n} integer row numbers (-1 for none), got {rep.dtype} {rep.shape}")
    if len(rep) and (rep.min() < -1 or rep.max() >= n):
        raise InputError(f"duplicates: row numbers must be in [-1, {n})")
    rows = np.arange(n)
    src, dst = [rows], [np.where(rep >= 0, rep, rows)]
    if dup is not None:
        src.append(rows)
        dst.append(dup[0][dup[1]])
    a, b = np.concatenate(src), np.concatenate(dst)
    k, comp = connected_components(coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)), directed=False)
    if k == n:
        return None
    chosen = np.full(k, n, dtype=np.int64)
    given = np.flatnonzero(rep == rows)
    np.minimum.at(chosen, comp[given], given)
    none = chosen == n
    if none.any():  # components of exact copies only: their first row
        firsts = np.full(k, n, dtype=np.int64)
        np.minimum.at(firsts, comp, rows)
        chosen[none] = firsts[none]
    first = np.sort(chosen)
    pos = np.empty(n, dtype=np.int64)
    pos[first] = np.arange(k)
    return first, pos[chosen[comp]]


def reference_sample(groups: np.ndarray, size: int | None, random_state) -> np.ndarray:
    """Indices of a group-stratified random sample of ``size`` items (all items if None)."""
    n = len(groups)
    if size is None or size >= n:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    out = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        take = max(1, int(round(size * len(idx) / n)))
        out.append(rng.choice(idx, size=min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def load(path) -> Pipeline:
    """A saved model (a model folder, a model store or a run folder's latest version)."""
    return Pipeline.load(os.fspath(path))
