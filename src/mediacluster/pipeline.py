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

Predicting new items (``predict`` / ``predict_details`` / ``predict_path``) never refits: the
fitted pipeline holds a :class:`~mediacluster.predictor.NeighbourPredictor` (``predictor_``: a
distance-weighted vote of the nearest fitted items, see ``mediacluster.predictor``) and adds its
own outlier stage (-> ``-2``), the level in use and ``assign_noise``. The saved model is plain
arrays (``mediacluster.pipeline_model``, written through ``mediacluster.persist``).

``fit_labels(X, labels, embedding)`` builds the same predictor for labels given from outside (a
person's curated clusters, published by the studio) without fitting the stages.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, clone
from sklearn.utils import TransformerTags
from sklearn.utils._set_output import _SetOutputMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import persist, pipeline_junk, pipeline_levels, pipeline_model
from .copies import distinct_rows, merge_duplicates
from .data import NOISE, OUTLIER, as_vectors, check_finite, check_magnitude, status_of
from .errors import InputError, LevelRangeError, ParameterError
from .model_items import read_items
from .pipeline_levels import is_auto as _is_auto
from .predictor import NeighbourPredictor
from .progress import logged_step
from .similar import similar as find_similar
from .stages import registry
from .stages.cluster import knn_vote, single_blas_thread
from .stages.evoc import EVoCClusterer
from .stages.hierarchy import (
    ENGINE_REDUCER,
    HierarchyClusterer,
    LevelsMixin,
    agreement_prefit,
    check_share,
)
from .stages.reduce import UMAPReducer, during_layout

# Each stage of a fit, said as it starts and ends (INFO, kept quiet unless a caller such as
# ``workflow.fit_pipeline`` raises this logger to INFO for a fit a person waits for).
stage_log = logging.getLogger("mediacluster.pipeline.stages")
stage_log.setLevel(logging.WARNING)

STAGES = registry.KINDS  # reducer, outliers, clusterer: the order they run in
_EXAMPLE_STAGE = {"reducer": "umap", "outliers": "lof", "clusterer": "hdbscan"}
PIPELINE_PARAMS = {
    "level": pipeline_levels.LEVEL,
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




class Pipeline(ClassNamePrefixFeaturesOutMixin, _SetOutputMixin, ClusterMixin, BaseEstimator):
    """Compose a reducer, an outlier detector and a clusterer; assign noise; predict; save.

    ``transform`` / ``fit_transform`` give the reduced coordinates, named ``pipeline0``, ...
    (``get_feature_names_out``), so ``set_output(transform="pandas")`` gives a DataFrame with the
    input's index, as the reducers and scikit-learn's transformers do.

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
    reference_dims : PCA dimensions of the stored reference vectors (None = keep all dims; a
        collection of under 4 distinct items per dimension keeps them all too: ``predictor.projects``)
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
                    try:
                        built = registry.build(kind, stage)
                    except ParameterError:  # an unknown name: refused, naming it, by check_params / fit
                        continue           # (scikit-learn's get_params / set_params never validate)
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
        _feature_names(self, X, reset=True)
        X = _training_vectors(X)
        self.check_params()
        for loaded in ("model_info_", "model_path_"):  # a loaded model refitted is that model no more
            self.__dict__.pop(loaded, None)            # (its names, junk clusters, path)
        self.timings_ = {}
        self.__dict__.pop("predictor_", None)  # an earlier fit's predictor would vote stale labels
        t = time.perf_counter()
        # Identical vectors (copies of one file) must share everything; see distinct_rows.
        dup = distinct_rows(X)
        if duplicates is not None:
            dup = merge_duplicates(dup, duplicates, len(X))
        self.timings_["distinct"] = time.perf_counter() - t
        pipeline_levels.clear(self)
        refused: list[str] = []  # a level past the tree's last: fitted at the automatic level
        Z, labels, probs, path = self._fit_stages(X, dup, precomputed_knn, embedding, outlier_graph, refused)
        self.embedding_ = Z
        self.n_features_in_ = X.shape[1]
        pipeline_levels.set_path(self, path)
        self.labels_ = labels
        self.probabilities_ = np.where(labels >= 0, probs, 0.0)
        pipeline_levels.bound_unclustered(self)
        if not build_predictor:
            return self._refuse_level(refused)
        t = time.perf_counter()
        self._assign()
        self.timings_["assign_noise"] = time.perf_counter() - t
        t = time.perf_counter()
        with single_blas_thread(), _stage("predictor (neighbour index for assign)", len(X)):
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
            with _stage("neighbour graph", n):
                knn = self._knn(X, reducer)
        self.timings_["knn"] = time.perf_counter() - t
        t = time.perf_counter()
        if embedding is None and reducer is not None:
            _stage_start("reduce", n, reducer)
        view = None  # the agreement check's view of X, when made during the layout
        if embedding is not None:
            Z = np.asarray(embedding)
            if Z.ndim != 2 or len(Z) != n:
                raise InputError(f"embedding must be ({n}, k), got {Z.shape}")
        elif reducer is not None:
            # the hierarchy's agreement check needs the input vectors' PCA view only: it and the
            # check's likeliest K-means starts are made while UMAP lays out (reduce.during_layout,
            # hierarchy.agreement_prefit), and used when no item is dropped below
            seed = getattr(clusterer, "random_state", None) if isinstance(clusterer, HierarchyClusterer) else None
            stop = threading.Event()
            job = (lambda: agreement_prefit(X, int(seed) % 2**32, stop)) if seed is not None and takes_knn else None
            with during_layout(job, stop=stop) as view:
                Z = reducer.fit(X, precomputed_knn=knn).embedding_
        else:
            Z = X
        Z = np.asarray(Z, dtype=np.float32)
        self.timings_["reduce"] = time.perf_counter() - t
        if embedding is None and reducer is not None:
            _stage_end("reduce", self.timings_["reduce"])
        labels = np.full(n, NOISE, dtype=np.int64)
        probs = np.zeros(n, dtype=np.float64)
        keep = np.ones(n, dtype=bool)
        t = time.perf_counter()
        if outliers is not None:
            with _stage("outliers", n, outliers):
                keep = ~outliers.fit(Z, neighbors_graph=outlier_graph).outlier_mask_
        self.timings_["outliers"] = time.perf_counter() - t
        t = time.perf_counter()
        path = None
        if knn is not None and isinstance(reducer, UMAPReducer):  # the graph UMAP was given (a
            knn = tuple(np.asarray(a)[:, :int(reducer.n_neighbors)] for a in knn)  # tuner's is wider)
        if keep.sum() >= 2:
            _stage_start("cluster", int(keep.sum()), clusterer)
            try:
                if takes_knn:  # the graph describes every row: only usable when none was removed
                    extra = {}
                    if "vectors" in inspect.signature(clusterer.fit).parameters and (
                            embedding is not None or reducer is not None):
                        extra["vectors"] = X[keep]  # the default level checked on the input's view
                        if view is not None and view.done() and keep.all():
                            extra["agreement_view"], extra["agreement_starts"] = view.result()
                    clusterer.fit(Z[keep], knn=knn if keep.all() else None, **extra)
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
                path = pipeline_levels.fit_path(clusterer, Z, keep)
        labels[~keep] = OUTLIER
        self.timings_["cluster"] = time.perf_counter() - t
        if keep.sum() >= 2:
            _stage_end("cluster", self.timings_["cluster"])
        if dup is not None:  # tuner caches: copies take their first occurrence's result
            first = dup[0][dup[1]]
            Z, labels, probs = Z[first], labels[first], probs[first]
            if path is not None:
                path = (path[0][:, first], path[1][:, first], *path[2:])
        return Z, labels, probs, path

    @staticmethod
    def neighbour_metric(reducer) -> str:
        """The metric of every neighbour computation on a pipeline's input vectors (its kNN
        graph, the predictor, so ``predict`` / novelty / ``similar``): a UMAP reducer's own
        metric, else cosine, the input's (embeddings compare by direction; their lengths vary
        with the image, not the content). The one rule: before, the predictor took
        ``getattr(reducer_, "metric", "euclidean")``, so a pipeline without UMAP (``--reducer
        pca|ipca|kernel_pca|none``, ``--clusterer evoc``) placed and scored new items by
        euclidean distance on the raw vectors while its own graph was cosine (novelty AUROC
        on Imagenette .78 against .96: benchmarks/RESULTS.md, "One metric for neighbours").
        The predictor compares cosine and correlation as UMAP does and any other metric by
        euclidean distance, with a warning at fit (``predictor.compared_as``)."""
        return reducer.metric if isinstance(reducer, UMAPReducer) else "cosine"

    @staticmethod
    def _knn(X, reducer):
        """The input vectors' neighbour graph, computed once for the reducer (UMAP's
        ``precomputed_knn``) and the clusterer's level criterion: the reducer's neighbour count
        (15 without a UMAP reducer) and :meth:`neighbour_metric`."""
        from .stages.neighbors import METRICS, knn_graph

        metric = Pipeline.neighbour_metric(reducer)
        metric = metric if metric in METRICS else None
        k = int(min(reducer.n_neighbors, max(2, len(X) - 1))) if isinstance(reducer, UMAPReducer) else 15
        if metric is None:  # a metric faiss cannot search: UMAP finds its own neighbours
            return None
        return knn_graph(X, int(min(k, len(X))), metric=metric)

    def fit_labels(self, X, labels, embedding, probabilities=None, levels=None, junk=(), tree=None):
        """Build the predictor for labels given from outside (a person's curated clusters from
        the studio) instead of fitting the stages.

        ``labels`` (n,) are cluster ids (``-1`` for unassigned items), ``embedding`` (n, k) the
        reduced coordinates the predictions' ``embedding`` is interpolated from (the space the
        labels were made in, e.g. the fitted model's or the studio's map), ``probabilities``
        the membership of each item (default 1: a person placed it). No stage is fitted: the
        reducer and clusterer are kept as configured (for their parameters); there is no outlier
        stage (set ``outliers=None``). ``predict`` on the training vectors then reproduces the
        labels (each item's own copy dominates its neighbours' vote).

        ``levels`` (L, n), row 0 coarsest: a nested tree fitted on the same items whose levels
        are coarser than ``labels`` (the run's levels above the one the person curated). The
        labels then become the finest level of the model and the tree's levels are kept above
        them (:func:`~mediacluster.stages.hierarchy.tree_above`: each cluster under the tree's
        clusters most of its items are in, top-down, so it nests; the clusters in ``junk``
        form their own branch; a level that would not be strictly coarser than the next is
        dropped): ``levels_``, ``parents_``, ``predict_path``, ``set_level`` work as after
        ``fit``, the level in use (and the automatic one) is the finest, unless ``level`` names
        another. Items left unassigned (-1) get their nearest cluster in the finest level.
        ``tree_sources_`` says where each coarse level comes from (per level ``{"level": row of
        levels, "clusters": new id -> the tree's id, -1 the junk branch}``; None when flat).

        ``tree`` instead of ``levels`` and ``junk``: that tree already computed for these labels,
        ``(rows, parents, sources)`` as :func:`~mediacluster.stages.hierarchy.tree_above` returns
        it (:class:`~mediacluster.curated_tree.CuratedTree` has them: the studio's publish
        computes the tree once); ``rows`` may leave the unassigned items < 0. It is checked (the
        last row is ``labels``, each row nests in the one above through ``parents``) and the
        unassigned items are given their nearest cluster's path, as with ``levels``.
        """
        _feature_names(self, X, reset=True)
        X = _training_vectors(X)  # as fit: ragged, complex, sparse, non-finite -> InputError
        labels = np.asarray(labels)
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
        if tree is not None and levels is not None:
            raise ParameterError("give fit_labels the tree's levels or the tree computed from them, not both",
                                 "tree")
        self.check_params()
        reducer, _, clusterer = self._resolve(len(X))
        self.reducer_, self.outliers_, self.clusterer_ = reducer, None, clusterer
        self.timings_ = {}
        pipeline_levels.clear(self)
        self.embedding_ = Z
        self.labels_ = labels.astype(np.int64)
        p = np.ones(len(X)) if probabilities is None else np.clip(np.asarray(probabilities, np.float64), 0, 1)
        self.probabilities_ = np.where(self.labels_ >= 0, p, 0.0)
        self.n_features_in_ = X.shape[1]
        t = time.perf_counter()
        self.tree_sources_ = None
        if levels is not None or tree is not None:  # the labels under the coarser levels (or flat)
            pipeline_levels.levels_above(self, levels, junk, tree)
        self._assign()
        # copies of a file are one reference, as in fit: a copy among the references would put
        # a calibration item at distance 0 from its twin and lower the novelty threshold
        dup = distinct_rows(X)
        with single_blas_thread():
            self._fit_predictor(X, distinct=dup[0] if dup is not None else None)
        self.timings_["predictor"] = time.perf_counter() - t
        return self

    def fit_predict(self, X, y=None):
        """``fit(X).labels_``: the training items' labels (what ``predict(X)`` reproduces)."""
        return self.fit(X).labels_

    def fit_transform(self, X, y=None):
        """``fit(X).embedding_``: the training items' reduced coordinates (``transform`` places
        new items among them)."""
        return self.fit(X).embedding_

    @property
    def _n_features_out(self) -> int:
        """The reduced coordinates' width (``get_feature_names_out``: ``pipeline0``, ...)."""
        return int(np.shape(self.embedding_)[1])

    def __sklearn_tags__(self):
        # a clusterer that also transforms (reduced coordinates, always float32)
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])
        return tags

    @property
    def status_(self) -> np.ndarray:
        return status_of(self.labels_)

    @property
    def n_clusters_(self) -> int:
        return int(len(set(self.labels_.tolist()) - {NOISE, OUTLIER}))

    # -- levels (pipeline_levels) ----------------------------------------------------------------
    def set_level(self, level) -> Pipeline:
        """Switch the flat labelling (``labels_``, ``cluster_``, what ``predict`` answers) to
        another level of the fitted tree without refitting: ``"auto"`` or a level index
        (0 = coarsest). Items left unclustered (noise, outliers) stay so. A loaded model saved
        with ``names_by_level`` switches ``model_info_["metadata"]["names"]`` to that level's
        (``pipeline_levels.set_level``)."""
        pipeline_levels.set_level(self, level)
        self._assign()
        if hasattr(self, "predictor_"):
            self.predictor_.set_votes(**self._votes())
        return self

    def level_with(self, n_clusters: int) -> int:
        """Index of the fitted level whose cluster count is closest to ``n_clusters`` (the
        coarser on a tie), e.g. ``pipe.set_level(pipe.level_with(6))``; also on a loaded model."""
        return pipeline_levels.level_with(self, n_clusters)

    def level_table(self) -> list[dict]:
        """Per level, coarse to fine: ``level``, ``n_clusters`` (clusters with items: a curated
        tree's finest level keeps the studio's ids, with gaps), ``sizes`` (items per cluster id)
        and ``parents`` (each cluster's parent in the level above; None for level 0)."""
        return pipeline_levels.level_table(self)

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

    # -- the predictor (predictor.NeighbourPredictor) ------------------------------------------
    def _predictor(self) -> NeighbourPredictor:
        """The predictor as this pipeline's parameters configure it (unfitted)."""
        return NeighbourPredictor(n_neighbors=self.predict_neighbors, reference_size=self.reference_size,
                                  reference_dims=self.reference_dims,
                                  metric=self.neighbour_metric(self.reducer_),
                                  random_state=self.random_state)

    def _votes(self) -> dict:
        """What the fitted items vote for new ones (``NeighbourPredictor.set_votes``)."""
        return {"labels": self.labels_, "probabilities": self.probabilities_, "cluster": self.cluster_,
                "confidence": self.confidence_, "embedding": self.embedding_, "levels": self.levels_,
                "parents": self.parents_}

    def _fit_predictor(self, X, distinct=None):
        """``distinct``: indices of the distinct rows of ``X`` (None: all are)."""
        self.predictor_ = self._predictor().fit(X, distinct=distinct, **self._votes())

    # the predictor's learned state, read through the pipeline (saved in the model under these names)
    ref_index_ = property(lambda self: self.predictor_.ref_index_, doc="rows of the reference items")
    ref_vectors_ = property(lambda self: self.predictor_.ref_vectors_, doc="the reference vectors, projected")
    ref_mean_ = property(lambda self: self.predictor_.ref_mean_, doc="the projection's mean (or None)")
    ref_components_ = property(lambda self: self.predictor_.ref_components_, doc="its axes (or None)")
    ref_normalize_ = property(lambda self: self.predictor_.ref_normalize_, doc="vectors L2-normalised")
    novelty_threshold_ = property(lambda self: self.predictor_.novelty_threshold_,
                                  doc="mean neighbour distance above which a new item is novel")
    novelty_calibration_ = property(lambda self: getattr(self.predictor_, "novelty_calibration_", None),
                                    doc="sorted calibration scores behind `novelty` (None: older model)")

    def predict_path(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Each new item's root-to-leaf path through the fitted levels: ``(labels,
        probabilities)``, each (n_levels, m), coarse to fine; ``probabilities[l]`` is the vote
        share of the chosen cluster among the item's neighbours inside its level ``l - 1``
        cluster (a top-down distance-weighted vote of its nearest reference items; an item a
        curated model answers junk, ``pipeline_junk.junk_vote``, gets the junk cluster's path)."""
        check_is_fitted(self, "predictor_")
        _feature_names(self, X, reset=False)
        if self.levels_ is None:
            raise ParameterError("this model's clusterer has no levels (use clusterer hierarchy or evoc)",
                                 "clusterer")
        if self.junk_clusters():  # an item answered junk gets the junk cluster's path (pipeline_junk)
            path = self.predict_details(X)["path"]
            return path["labels"], path["probabilities"]
        return self.predictor_.predict_path(X)

    def unplaceable(self, X) -> dict[int, tuple[str, str]]:
        """The rows of ``X`` (finite, of the model's size) that :meth:`predict_details` refuses,
        ``{row: (kind, why)}`` (``no_direction``: an all-zero vector for a model that compares
        directions; ``too_large``): for a caller that answers the other rows instead of none
        (the service). ``Predictor.unplaceable``."""
        check_is_fitted(self, "predictor_")
        return self.predictor_.unplaceable(X)

    def predict_details(self, X, zero_vectors: str = "refuse") -> dict:
        """Per item: ``labels`` (-2/-1/>=0), ``probabilities``, ``status``, ``cluster`` and
        ``confidence`` (nearest cluster even for noise/outliers), ``embedding`` (reduced coords),
        ``novel`` and ``novelty`` (the share of the fitted items, scored as new items, that are
        nearer to their neighbours than this one; ``novel`` about ``novelty >= 0.99``; NaN from a
        model saved before it was kept), and the voting neighbours: ``neighbors`` (rows of the fitted items) with their
        normalised 1/d ``weights`` (anything defined per fitted item, such as a 2-D map position,
        carries over to new items as ``(weights[..., None] * values[neighbors]).sum(1)``).

        ``zero_vectors``: ``"refuse"`` (default) raises an ``InputError`` naming an all-zero
        vector when the model compares directions (cosine); ``"place"`` votes it like any other."""
        check_is_fitted(self, "predictor_")
        _feature_names(self, X, reset=False)
        det = self.predictor_.predict_details(X, zero_vectors)
        labels, proba, emb, novel = det["labels"], det["probabilities"], det["embedding"], det["novel"]
        if getattr(self, "outliers_", None) is not None and len(emb):  # scikit-learn refuses 0 rows
            out = (self.outliers_.predict(emb) == -1) | novel
            labels = np.where(out, OUTLIER, labels)
            proba = np.where(out, 0.0, proba)
        cluster, conf, path = det["cluster"], det["confidence"], det["path"]
        junk = self.junk_clusters()
        if path is not None:
            plab, pprob = path["labels"], path["probabilities"]
            # the flat answer is the path's cluster at the level in use; its probability the
            # product of the path's steps down to it (the share of the neighbours in that cluster)
            at, share = plab[self.level_], np.prod(pprob[:self.level_ + 1], axis=0)
            if junk:  # ... unless the flat vote there is a junk cluster's (pipeline_junk.junk_vote)
                at, share, path = pipeline_junk.junk_answer(self.levels_, self.level_, junk, path, at, share,
                                                            det["neighbors"], det["weights"])
            clustered = labels >= 0
            labels = np.where(clustered, at, labels)
            proba = np.where(clustered, share, 0.0)
            cluster, conf = at, share
        if not self.assign_noise:
            cluster, conf = labels.copy(), proba.copy()
        status = status_of(labels)
        if junk:  # a curated model (the studio's publish): clusters a person marked as junk
            status = np.where(np.isin(labels, junk), "junk", status)
        return {"labels": labels, "probabilities": np.clip(proba, 0, 1), "status": status,
                "cluster": cluster, "confidence": np.clip(conf, 0, 1), "embedding": emb,
                "novel": novel, "novelty": det["novelty"], "neighbors": det["neighbors"],
                "weights": det["weights"], "path": path}

    def junk_clusters(self) -> list[int]:
        """The clusters a person marked as junk in the studio (a published curated model's
        metadata): their items' status is ``"junk"``, as in the run's ``curated_status``. At a
        coarser level of a curated tree: the clusters of the junk branch
        (``pipeline_junk.junk_clusters``)."""
        return pipeline_junk.junk_clusters(self._own_metadata(), getattr(self, "levels_", None),
                                           getattr(self, "level_", None))

    def similar(self, X=None, k: int = 10, same_cluster: bool = False, level=None, details: dict | None = None,
                collection_root=None, *, ids=None, exclude=None, offset: int = 0,
                per_cluster: int | None = None) -> dict:
        """"More like this": each new vector's (or, with ``ids``, each collection item's) ``k``
        nearest fitted items, nearest first, optionally without the ``exclude`` ids, at most
        ``per_cluster`` of one cluster, from ``offset`` on (:func:`mediacluster.similar.similar`,
        which documents the arguments and the answer)."""
        return find_similar(self, X, k=k, same_cluster=same_cluster, level=level, details=details,
                            collection_root=collection_root, ids=ids, exclude=exclude, offset=offset,
                            per_cluster=per_cluster)

    def level_index(self, level) -> int | None:
        """``level`` checked against the fitted tree (None: the level in use; None for a flat
        model, whose only level is 0)."""
        return pipeline_levels.level_index(self, level)

    def model_items(self, collection_root=None):
        """The ids and paths of a loaded model's reference items (``model_items.ModelItems``,
        read from the model folder's ``items.json`` on first use, paths resolved against
        ``collection_root`` when given); None for a model without them (fitted on bare vectors,
        not loaded, or saved before they were kept)."""
        folder = getattr(self, "model_path_", None)
        if folder is None:
            return None
        key = None if collection_root is None else os.fspath(collection_root)
        cached = getattr(self, "_model_items", None)
        if cached is None or cached[0] != key:
            cached = (key, read_items(folder, len(self.predictor_.ref_index_), root=key))
            self._model_items = cached
        return cached[1]

    def predict(self, X) -> np.ndarray:
        """Labels (-2 outlier / -1 noise / >= 0 cluster) for new vectors, without refitting."""
        return self.predict_details(X)["labels"]

    def predict_membership(self, X) -> np.ndarray:
        """Membership probability of the predicted cluster (0 for noise / outliers)."""
        return self.predict_details(X)["probabilities"]

    def transform(self, X) -> np.ndarray:
        """Approximate reduced coordinates of new vectors (neighbour-weighted training coords)."""
        return self.predict_details(X)["embedding"]

    # -- persistence (the format: pipeline_model) ----------------------------------------------
    def hierarchy_arrays(self) -> dict[str, np.ndarray]:
        """The fitted tree as plain arrays ({} without levels; see
        :func:`mediacluster.pipeline_model.hierarchy_arrays`)."""
        return pipeline_model.hierarchy_arrays(self)

    def _own_metadata(self) -> dict:
        """A loaded model's metadata (``model_info_``; {} for a pipeline fitted here)."""
        return dict((getattr(self, "model_info_", None) or {}).get("metadata") or {})

    def save(self, path, overwrite: bool = False, metadata: dict | None = None, items: dict | None = None) -> dict:
        """Write the fitted model as a folder of JSON + npz (no pickle); returns
        ``{"path", "bytes", "files"}``. ``metadata`` (JSON-able: the encoder, cluster names,
        the run id) is stored in model.json; None keeps a loaded model's own (its encoder, the
        names of the level in use, a curated model's junk clusters). ``items``: ``{"ids",
        "paths", "root"}`` of the fitted rows (``paths`` / ``root`` optional), kept for
        :meth:`similar` (``pipeline_model.write_items``); None keeps a loaded model's own."""
        # read (and kept) before an overwrite of its own folder replaces items.json
        saved = items is not None or self.model_items() is not None
        info, arrays = pipeline_model.model_doc(self, self._own_metadata() if metadata is None else metadata, saved)
        out = persist.write_model(path, info, arrays, overwrite=overwrite)
        pipeline_model.write_items(path, self, items)
        pipeline_model.drop_foreign_extras(path, self)
        return out

    def publish(self, store, metadata: dict | None = None, run_id: str | None = None,
                source: str = "", also=None, items: dict | None = None, held: bool = False,
                unless=None) -> str:
        """Save as the next version of a model store (``RUN/models``); returns its path.
        ``metadata`` None: a loaded model's own, as in :meth:`save`; ``items`` as in
        :meth:`save`. ``also(folder)`` writes more into the new version before it is published
        (a duplicate index). ``held``: published held (``persist.ModelStore.hold``).
        ``unless(latest)``: True when the latest version already is this model (nothing is
        published; the latest's path is returned: ``persist.ModelStore.publish``)."""
        store = store if isinstance(store, persist.ModelStore) else persist.ModelStore(store)
        base = self._own_metadata() if metadata is None else metadata
        saved = items is not None or self.model_items() is not None
        info, arrays = pipeline_model.model_doc(self, {**base, "run_id": run_id, "source": source}, saved)

        def write(folder):
            persist.write_model(folder, info, arrays)
            pipeline_model.write_items(folder, self, items)
            if also is not None:
                also(folder)

        return str(store.publish(write, run_id, source, held=held, unless=unless))

    @classmethod
    def load(cls, path) -> Pipeline:
        """A model written by :meth:`save` / :meth:`publish`, ready to ``predict`` (``path``: a
        model folder, a model store or a run folder: the latest version)."""
        return pipeline_model.load(cls, path, PIPELINE_PARAMS)

    # -- tuning ------------------------------------------------------------------------------
    def tune(self, X, **kwargs):
        """Tune this pipeline's parameters with Optuna (see :func:`mediacluster.tune.tune`)."""
        from .tune import tune  # heavy: optuna loads only when tuning

        return tune(X, pipeline=self, **kwargs)


def _feature_names(est, X, reset: bool) -> None:
    """scikit-learn's rule for a DataFrame's column names: a fit on one keeps them
    (``feature_names_in_``), a later call with other names is refused and one without names
    warns. Only the names: ``_training_vectors`` / the predictor check the values and width."""
    validate_data(est, X, reset=reset, skip_check_array=True, ensure_2d=False)


def _training_vectors(X) -> np.ndarray:
    """The vectors a fit (``fit``, ``fit_labels``) learns from: C-ordered float32, at least 3
    rows of one length, every value finite and every row's length within float32's squares
    (``data.check_magnitude``); else an ``InputError`` naming what is wrong."""
    X = np.ascontiguousarray(as_vectors(X), dtype=np.float32)
    if X.ndim != 2 or len(X) < 3:
        raise InputError(f"need a 2-D array of at least 3 vectors, got shape {X.shape}"
                         + (f" (n_samples={len(X)})" if X.ndim == 2 else ""))
    return check_magnitude(check_finite(X))


MIN_DISTINCT = 3  # below this many distinct vectors the stages are not run (see _fit_stages)


def load(path) -> Pipeline:
    """A saved model (a model folder, a model store or a run folder's latest version)."""
    return Pipeline.load(os.fspath(path))


def _stage_start(name: str, n: int, est=None) -> None:
    stage_log.info("%s", _started(name, n, est))


def _stage_end(name: str, seconds: float) -> None:
    stage_log.info("%s done in %.1f s", name, seconds)


def _started(name: str, n: int, est=None) -> str:
    what = f" ({type(est).__name__})" if est is not None else ""
    return f"{name}{what} on {n:,} items ..."


def _stage(name: str, n: int, est=None):
    """``with _stage(name, n):`` says a fit stage's start and its seconds on ``stage_log``."""
    return logged_step(stage_log, _started(name, n, est), f"{name} done in")
