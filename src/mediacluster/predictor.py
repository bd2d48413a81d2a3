"""The neighbour predictor: places new vectors among a fitted pipeline's items, never refitting.

:class:`NeighbourPredictor` is what ``Pipeline.predict`` / ``predict_details`` / ``predict_path``
delegate to (``Pipeline.predictor_``). It needs neither the UMAP object nor the HDBSCAN tree, so a
saved model is plain arrays (``pipeline_model``):

1. project the vector (L2-normalised when the metric is cosine; centred, its mean over its
   dimensions subtracted, then L2-normalised when it is correlation, as UMAP compares them) onto the top
   ``reference_dims`` principal axes of the training vectors, when there are at least
   ``PROJECTION_ROWS_PER_AXIS`` distinct training vectors per axis (:func:`projects`; a smaller
   collection keeps its vectors whole);
2. find its ``n_neighbors`` nearest reference items (exact, faiss ``IndexFlatL2``; a batch of
   ``HNSW_MIN_QUERIES`` or more against over ``EXACT_SEARCH_MAX`` reference items searches a
   faiss HNSW graph, built on first use the same way in every process);
3. its reduced coordinates are the 1/d-weighted mean of the neighbours' coordinates (the same
   initialisation umap-learn's ``transform`` starts from);
4. cluster: 1/d-weighted vote of the neighbours' labels (noise votes as noise); probability =
   vote share x the neighbours' membership probabilities; with levels, a top-down vote along the
   tree (``stages.hierarchy.vote_path``). A training item's own copy dominates its vote, so
   predicting the training items reproduces their labels (tested >= 99%);
5. novelty: the item's score (its mean distance to the neighbours) against calibration scores
   of fitted items scored as if they were new (:meth:`NeighbourPredictor._calibration_scores`):
   ``novelty`` = the share of them that score lower, ``novel`` = the score exceeds all but
   ``1 - NOVELTY_QUANTILE`` of them (split conformal: for new items like the fitted ones, a
   false-positive rate of about 1%, measured 0-1% on six sets). A copy of a fitted item is
   never novel. Calibrating on the fitted items' own leave-self-out
   distances in the projected space (the rule before) put the threshold far too high: the PCA,
   fitted on those items, keeps what is peculiar to each of them, so they look farther from
   their neighbours than a new item of the same kind does (0 of 15 unseen-kind uploads flagged;
   measured in benchmarks/RESULTS.md, "Novelty").

The pipeline adds what belongs to it: its outlier stage, the level in use, ``assign_noise`` and
the clusters a person marked as junk. ``reference_size`` keeps only a class-stratified sample of
the training vectors (:func:`reference_sample`; smaller files, cost measured in
benchmarks/RESULTS.md).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .data import NOISE, OUTLIER, as_vectors, check_finite, l2_normalize
from .errors import InputError, ParameterError
from .stages.cluster import vote
from .stages.hierarchy import vote_path

# A new item whose mean distance to its nearest reference items exceeds all but 1 - this share
# of the calibration scores is novel (an outlier, with an outlier stage).
NOVELTY_QUANTILE = 0.99
# At most this many fitted items are scored as new for the calibration. With a projection they
# are scored in folds, each left out of a PCA refitted on the other rows (a fold at most a tenth
# of them): as many folds as keep the refitted rows near CALIBRATION_ROWS (1 to 10; measured
# ~1 CPU s per 3,000 x 1,280 refit), so a small collection is calibrated on most of its items.
CALIBRATION_MAX = 2000
CALIBRATION_ROWS = 6000
# The projection is used only with at least this many distinct fitted rows per kept axis
# (512 at the default 128 axes). Fitted on fewer, its axes span little beyond those rows, so a new
# item loses what sets it apart in the residual: at 150-300 rows the unprojected score ranks
# unseen kinds above known ones better on every set measured (AUROC), and `novel` catches more of
# them at the same 1% target (Imagenette's held-out kinds 9-15% -> 41-59%); from 600 rows the
# projection ranks better on some sets (benchmarks/RESULTS.md, "Novelty on small collections: the
# check").
PROJECTION_ROWS_PER_AXIS = 4
# An item this close to a reference item (times the median calibration score) is a copy of it.
COPY_DISTANCE = 1e-2
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


def compared_as(metric: str) -> str:
    """How the predictor compares vectors under a neighbour ``metric``
    (``Pipeline.neighbour_metric``): ``"cosine"``, ``"correlation"`` (cosine of the mean-centred
    rows), else ``"euclidean"`` (manhattan, chebyshev, minkowski, ...: faiss searches L2)."""
    return metric if metric in ("cosine", "correlation") else "euclidean"


class NeighbourPredictor(BaseEstimator):
    """New items placed by a distance-weighted vote of their nearest fitted items.

    Parameters
    ----------
    n_neighbors : neighbours voting (the pipeline's ``predict_neighbors``)
    reference_size : keep at most this many fitted items as references (None = all)
    reference_dims : PCA dimensions of the stored reference vectors (None = keep all dims; also
        kept whole below ``PROJECTION_ROWS_PER_AXIS`` distinct fitted rows per axis)
    metric : ``"cosine"`` compares directions (vectors are L2-normalised); ``"correlation"``
        the directions of the mean-centred vectors (each row's mean subtracted first: cosine of
        the centred rows, UMAP's correlation distance); anything else is compared as given
        (euclidean; :meth:`fit` warns, naming the metric, see :func:`compared_as`)
    random_state : seed of the reference sample, the PCA and the novelty probe

    ``fit(X, labels=, probabilities=, cluster=, confidence=, embedding=, levels=, parents=)``
    takes the fitted items' vectors and what each of them votes; learned state: ``ref_index_``
    (the reference items' rows), ``ref_vectors_``, ``ref_mean_`` / ``ref_components_`` (the
    projection, None without one), ``ref_normalize_``, ``ref_center_`` (rows mean-centred
    first: correlation), ``novelty_threshold_``, ``votes_`` (the
    per-item arrays at the reference items; :meth:`set_votes` replaces them when the fitted
    labels change, e.g. another level).
    """

    def __init__(self, n_neighbors: int = 10, reference_size: int | None = None,
                 reference_dims: int | None = 128, metric: str = "euclidean", random_state: int | None = 0):
        self.n_neighbors = n_neighbors
        self.reference_size = reference_size
        self.reference_dims = reference_dims
        self.metric = metric
        self.random_state = random_state

    def fit(self, X, *, labels, probabilities, cluster, confidence, embedding, levels=None, parents=(),
            distinct=None) -> NeighbourPredictor:
        """``X`` (n, d): the fitted items' vectors; the per-item arrays are what they vote (see
        :meth:`set_votes`); ``cluster`` also stratifies the reference sample. ``distinct``:
        indices of the distinct rows of ``X`` (None: all are); copies of a row add nothing to
        the reference set, and would make the novelty distances zero."""
        X = np.asarray(X, dtype=np.float32)
        n, d = X.shape
        self.n_features_in_ = d
        space = compared_as(self.metric)
        if space != self.metric:
            warnings.warn(f"metric {self.metric!r}: the neighbour predictor compares vectors by cosine, "
                          "correlation or euclidean distance only, so new items are placed (predict, "
                          f"novelty, similar) by euclidean distance on the input vectors, not by {self.metric}",
                          UserWarning, stacklevel=2)
        self.ref_normalize_ = space in ("cosine", "correlation")
        self.ref_center_ = space == "correlation"
        self.ref_components_ = None
        self.ref_mean_ = None
        dims = self.reference_dims
        Xs, sub = None, slice(None)
        if projects(n if distinct is None else len(distinct), d, dims):
            from sklearn.decomposition import PCA

            Xs = self._directions(X)
            rng = np.random.default_rng(self.random_state)
            sub = rng.choice(n, size=min(n, 20000), replace=False) if n > 20000 else slice(None)
            pca = PCA(n_components=int(dims), svd_solver="randomized", random_state=self.random_state).fit(Xs[sub])
            self.ref_mean_ = pca.mean_.astype(np.float32)
            self.ref_components_ = pca.components_.astype(np.float32)
        cluster = np.asarray(cluster)
        if distinct is None:
            self.ref_index_ = reference_sample(cluster, self.reference_size, self.random_state)
        else:
            distinct = np.asarray(distinct)
            self.ref_index_ = distinct[reference_sample(cluster[distinct], self.reference_size,
                                                        self.random_state)]
        self.ref_vectors_ = self.transform(X[self.ref_index_], rows=self.ref_index_)
        self._build_index()
        if len(self.ref_index_) < 2:  # one distinct training vector: no distances to learn from
            self._set_calibration(None)
            self.novelty_threshold_ = np.asarray(0.0)
        else:
            cal = np.sort(self._calibration_scores(X, Xs[sub] if self.ref_components_ is not None else None,
                                                   np.arange(n)[sub] if self.ref_components_ is not None else None))
            self._set_calibration(cal.astype(np.float32))
            self.novelty_threshold_ = np.asarray(conformal_threshold(cal, 1.0 - NOVELTY_QUANTILE))
        return self.set_votes(labels=labels, probabilities=probabilities, cluster=cluster,
                              confidence=confidence, embedding=embedding, levels=levels, parents=parents)

    def _calibration_scores(self, X, Xfit, fit_rows) -> np.ndarray:
        """Novelty scores (mean distance to the k nearest references) of up to ``CALIBRATION_MAX``
        reference items, each scored as a new item would be. With a projection (``Xfit``: the
        rows the PCA was fitted on, ``fit_rows`` their rows of ``X``) the items are taken in
        folds of at most a tenth of those rows; a fold is projected by a PCA refitted without it
        and finds its neighbours among the other references. Without a projection (or with under
        ten rows): the leave-self-out distances in the predictor's own space, which are
        unbiased there."""
        m = len(self.ref_index_)
        k = int(max(1, min(self.n_neighbors, m - 1)))
        rng = np.random.default_rng(self.random_state)
        probe = rng.choice(m, size=min(m, CALIBRATION_MAX), replace=False)
        dims = 0 if self.ref_components_ is None else len(self.ref_components_)
        fold = 0 if Xfit is None else min(CALIBRATION_MAX, len(Xfit) // 10)
        if dims == 0 or fold < 1:
            dist, _ = self._neighbours(self.ref_vectors_[probe], k + 1)
            return dist[:, 1:].mean(axis=1)
        import faiss
        from sklearn.decomposition import PCA

        in_fit = np.full(len(X), -1, dtype=np.int64)
        in_fit[fit_rows] = np.arange(len(fit_rows))
        R = self._directions(np.asarray(X[self.ref_index_]))
        out = []
        folds = int(np.clip(-(-CALIBRATION_ROWS // len(Xfit)), 1, 10))
        for f in range(min(folds, -(-len(probe) // fold))):
            part = probe[f * fold:(f + 1) * fold]
            keep = np.ones(len(Xfit), dtype=bool)
            rows = in_fit[self.ref_index_[part]]
            keep[rows[rows >= 0]] = False
            # a collection barely larger than the projection: as many axes as the other rows span
            # (a new item, too, keeps only what lies in the span of the fitted rows)
            pca = PCA(n_components=min(dims, int(keep.sum()) - 1), svd_solver="randomized",
                      random_state=self.random_state).fit(Xfit[keep])
            Rp = np.ascontiguousarray(pca.transform(R), dtype=np.float32)
            # neighbours among the other references only: the fold's items, all projected
            # without their own parts, would look nearer to each other than to a fitted item
            others = np.ones(m, dtype=bool)
            others[part] = False
            index = faiss.IndexFlatL2(Rp.shape[1])
            index.add(np.ascontiguousarray(Rp[others]))
            d2, _ = index.search(np.ascontiguousarray(Rp[part]), min(k, int(others.sum())))
            out.append(np.sqrt(np.maximum(d2, 0.0)).mean(axis=1))
        return np.concatenate(out)

    def _set_calibration(self, cal) -> None:
        """The calibration scores (sorted) and what ``novelty`` derives from them once, at fit
        and load, not on every call: ``copy_distance_``, below which a nearest reference is
        a copy (``COPY_DISTANCE`` x their median; None without a calibration)."""
        self.novelty_calibration_ = cal
        self.copy_distance_ = None if cal is None else COPY_DISTANCE * max(float(np.median(cal)), 1e-12)

    def novelty(self, dist) -> tuple[np.ndarray, np.ndarray]:
        """``(novel, novelty)`` of items whose distances to their nearest references are ``dist``
        (m, k): ``novelty`` the share of the calibration scores below the item's (NaN for a model
        saved before there were any), ``novel`` the item's above the threshold. With a
        calibration, a copy of a fitted item (its nearest reference at a distance below
        ``COPY_DISTANCE`` x the median calibration score) has novelty 0 and is not novel."""
        dist = np.asarray(dist, dtype=np.float64)
        score = dist.mean(axis=1)
        novel = score > float(np.ravel(self.novelty_threshold_)[0])
        cal = getattr(self, "novelty_calibration_", None)
        if cal is None:  # a model saved before the calibration: its threshold, as it answered then
            return novel, np.full(len(score), np.nan)
        novelty = np.searchsorted(cal, score.astype(cal.dtype), side="left") / (len(cal) + 1.0)
        # a copy of a fitted item is of the collection: in the projection fitted on it, a fitted
        # item lies farther from its neighbours than a new one does (what the calibration
        # corrects for new items), so a fitted item itself would otherwise look novel
        copy = dist[:, 0] <= self.copy_distance_
        return novel & ~copy, np.where(copy, 0.0, novelty)

    @classmethod
    def from_arrays(cls, arrays: dict, n_features_in: int, ref_normalize: bool, ref_center: bool = False,
                    **params) -> NeighbourPredictor:
        """A fitted predictor from its saved arrays (``ref_index``, ``ref_vectors``, ``ref_mean``,
        ``ref_components``, ``novelty_threshold``; checked by the caller), how it compares
        (``ref_normalize``, ``ref_center``, as saved) and constructor ``params``;
        :meth:`set_votes` gives it the fitted items' arrays."""
        self = cls(**params)
        for name in ("ref_index", "ref_vectors", "ref_mean", "ref_components", "novelty_threshold"):
            setattr(self, name + "_", arrays.get(name))
        self._set_calibration(arrays.get("novelty_calibration"))
        self.n_features_in_ = int(n_features_in)
        self.ref_normalize_ = bool(ref_normalize)
        self.ref_center_ = bool(ref_center)
        self._build_index()
        return self

    def set_votes(self, *, labels, probabilities, cluster, confidence, embedding, levels=None,
                  parents=()) -> NeighbourPredictor:
        """What the reference items vote, taken at ``ref_index_`` from the fitted items' arrays:
        ``labels`` (outliers vote as noise) with their ``probabilities``, ``cluster`` /
        ``confidence`` (noise assigned), ``embedding`` (the reduced coordinates new items are
        interpolated from), and with a tree ``levels`` (n_levels, n) and ``parents``. Kept once
        per fitted state (a service answers one item at a time: gathering them on every call
        cost more than the vote)."""
        ri = self.ref_index_
        lab = np.asarray(labels)[ri]
        votes = {"labels": np.where(lab == OUTLIER, NOISE, lab), "probabilities": np.asarray(probabilities)[ri],
                 "cluster": np.asarray(cluster)[ri], "confidence": np.asarray(confidence)[ri],
                 "embedding": np.asarray(embedding)[ri].astype(np.float64),
                 "levels": None if levels is None else np.ascontiguousarray(np.asarray(levels)[:, ri])}
        # each level's cluster count is the tree's (its parents' length), not the sample's largest id:
        # a reference sample can miss a level's last cluster
        votes["n_clusters"] = None if levels is None else [int(lv.max()) + 1 for lv in np.asarray(levels)]
        self.votes_ = votes
        self.parents_ = list(parents)
        return self

    # -- the space and the search ------------------------------------------------------------
    def transform(self, X, zero_vectors: str = "place", rows=None) -> np.ndarray:
        """``X`` checked and mapped into the predictor's space. ``zero_vectors="refuse"`` (new
        items to place): under the cosine metric an all-zero vector has no direction and every
        fitted item is equally far from it (its "cluster" would be the vote of arbitrary
        neighbours), so it is refused, naming it, as NaN is; ``"place"``: the rows of a
        collection (the fit's own, or those assigned after a sample fit, which a full fit would
        have clustered too). ``rows``: the numbers errors name ``X``'s rows by (default 0..)."""
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
                             f"(X has {X.shape[1]} features, but Pipeline is expecting {self.n_features_in_} "
                             "features as input: was it fitted with another encoder?)")
        check_finite(X)
        X_in = X
        X, zero = self._mapped(X)
        if zero_vectors == "refuse" and zero is not None and zero.any():
            what = self._no_direction()
            raise InputError(f"vector {int(np.flatnonzero(zero)[0])} {what[0]} ({int(zero.sum())} "
                             f"{what[1]}): this model compares directions ({what[2]}) and "
                             f"{what[3]} has none")
        bad = np.flatnonzero(self._overflow(X))
        if len(bad):
            big = float(np.abs(np.asarray(X_in[bad[0]], dtype=np.float64)).max())
            raise InputError(f"vector {int(bad[0] if rows is None else rows[bad[0]])} has values too large to place (up to {big:.3g}; "
                             f"{len(bad)} such vectors): their squares overflow float32 in the model's space")
        return np.ascontiguousarray(X, dtype=np.float32)

    def _mapped(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        """Finite rows ``X`` (n, d) in the predictor's space, unchecked for overflow, and which of
        them have no direction (all zeros; constant under correlation): None for a model that
        does not compare directions."""
        zero = None
        if self.ref_normalize_:
            D = self._centred(X)  # once: the zero check and the directions both read it
            zero = ~D.any(axis=1)
            X = l2_normalize(D)
        if self.ref_components_ is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                X = (X - self.ref_mean_) @ self.ref_components_.T
        return X, zero

    @staticmethod
    def _overflow(X) -> np.ndarray:
        """Rows of mapped ``X`` whose squared norm overflows: faiss compares squared distances in
        float32, and finite values whose squares overflow (above ~1e19) gave every such vector
        the same arbitrary answer."""
        with np.errstate(over="ignore", invalid="ignore"):
            return ~np.isfinite(np.linalg.norm(X, axis=1))

    def _no_direction(self) -> tuple[str, str, str, str]:
        """The words of the message refusing a row without direction, by metric."""
        return (("is constant", "constant vectors", "correlation", "a constant vector, centred,")
                if getattr(self, "ref_center_", False) else
                ("is all zeros", "such vectors", "cosine", "a zero vector"))

    def unplaceable(self, X) -> dict[int, tuple[str, str]]:
        """The rows of ``X`` (finite, of the model's size) that :meth:`predict_details` refuses
        as new items, each ``{row: (kind, why)}``: ``no_direction`` (all zeros, or constant under
        correlation, for a model that compares directions) and ``too_large`` (values whose
        squares overflow float32 in the model's space). For a caller that answers the other rows
        (the service's per-item answers); ``transform`` raises on the first of them instead."""
        check_is_fitted(self, "ref_vectors_")
        X = as_vectors(X)
        X = X[None, :] if X.ndim == 1 else X
        mapped, zero = self._mapped(X)
        out = {}
        if zero is not None:
            what = self._no_direction()
            why = f"{what[0]}: this model compares directions ({what[2]}) and {what[3]} has none"
            out = {int(i): ("no_direction", why) for i in np.flatnonzero(zero)}
        for i in np.flatnonzero(self._overflow(mapped)):
            big = float(np.abs(np.asarray(X[i], dtype=np.float64)).max())
            out.setdefault(int(i), ("too_large", f"has values too large to place (up to {big:.3g}): their "
                                                 "squares overflow float32 in the model's space"))
        return out

    def _centred(self, X) -> np.ndarray:
        """``X`` with each row's mean subtracted under the correlation metric, else as given."""
        return X - X.mean(axis=1, keepdims=True, dtype=np.float64).astype(X.dtype) \
            if getattr(self, "ref_center_", False) else X

    def _directions(self, X) -> np.ndarray:
        """``X`` as the metric compares it before any projection: centred (correlation), then
        L2-normalised (cosine, correlation); as given (euclidean)."""
        return l2_normalize(self._centred(X)) if self.ref_normalize_ else X

    def kneighbors(self, X, n_neighbors: int | None = None, zero_vectors: str = "refuse", among=None):
        """``(distances, positions)`` (m, k) of each vector's nearest reference items (positions
        in ``ref_index_``); ``n_neighbors`` defaults to the constructor's, at most the number of
        reference items. ``among``: only these positions are searched (faiss's ID selector over
        the same index); slots beyond them are position -1, distance infinity."""
        check_is_fitted(self, "ref_vectors_")
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        return self._neighbours(self.transform(X, zero_vectors), int(max(1, min(k, len(self.ref_index_)))),
                                among)

    def search(self, Q, n_neighbors: int, among=None):
        """``(distances, positions)`` like :meth:`kneighbors`, of vectors ``Q`` already in the
        predictor's space (:meth:`transform`'s output, or rows of ``ref_vectors_``: "more like
        this" of a reference item, ``similar.similar(ids=)``)."""
        check_is_fitted(self, "ref_vectors_")
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        return self._neighbours(Q, int(max(1, min(n_neighbors, len(self.ref_index_)))), among)

    def _build_index(self):
        import faiss  # heavy: loaded when a predictor is built or a model loaded

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
            index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * int(self.n_neighbors))
            self._hnsw_ = index
        return self._hnsw_

    def _neighbours(self, Q: np.ndarray, k: int, among=None):
        import faiss

        index = self._faiss_
        hnsw = len(self.ref_vectors_) > EXACT_SEARCH_MAX and len(Q) >= HNSW_MIN_QUERIES
        if hnsw:
            index = self._graph()
        params = None
        if among is not None:
            among = np.asarray(among, dtype=np.int64)
            if len(among) == 0:
                return np.full((len(Q), k), np.inf, np.float32), np.full((len(Q), k), -1, np.int64)
            sel = faiss.IDSelectorBatch(among)
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=index.hnsw.efSearch) if hnsw \
                else faiss.SearchParameters(sel=sel)
        # faiss parallelises over queries with OpenMP; for a few queries the threads only add
        # barrier waits (measured at load ~20: one query 77 ms with 2 threads, 1.4 ms with 1).
        if len(Q) < SMALL_QUERY:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                dist2, idx = index.search(Q, k, params=params)
            finally:
                faiss.omp_set_num_threads(before)
        else:
            dist2, idx = index.search(Q, k, params=params)
        # the distances of the found items again, from the differences (fewer candidates than k
        # with ``among``: faiss fills the rest with -1, at distance infinity), nearest first
        dist = exact_distances(Q, self.ref_vectors_, idx)
        order = np.argsort(dist, axis=1, kind="stable")
        return np.take_along_axis(dist, order, axis=1), np.take_along_axis(idx, order, axis=1)

    # -- the vote ----------------------------------------------------------------------------
    def predict_path(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Each new item's root-to-leaf path through the fitted levels: ``(labels,
        probabilities)``, each (n_levels, m), coarse to fine (see ``Pipeline.predict_path``)."""
        check_is_fitted(self, "ref_vectors_")
        if self.votes_["levels"] is None:
            raise ParameterError("the fitted items have no levels", "levels")
        return self._vote_path(*self.kneighbors(X, zero_vectors="refuse"))

    def _vote_path(self, dist, idx):
        v = self.votes_
        return vote_path(dist, idx, v["levels"], self.parents_, n_clusters=v["n_clusters"])

    def predict_details(self, X, zero_vectors: str = "refuse") -> dict:
        """The neighbours' vote per item, before the pipeline's outlier stage and level:
        ``labels`` (-1/>=0) with ``probabilities`` (share x membership, 0 for noise),
        ``cluster`` / ``confidence`` (the vote of the noise-assigned clusters), ``embedding``,
        ``novel``, ``neighbors`` (rows of the fitted items), ``weights`` (normalised 1/d) and
        ``path`` (``{"labels", "probabilities"}`` along the levels, None without levels)."""
        dist, idx = self.kneighbors(X, zero_vectors=zero_vectors)
        v = self.votes_
        w = 1.0 / np.maximum(dist.astype(np.float64), 1e-9)
        w /= w.sum(axis=1, keepdims=True)
        emb = np.einsum("qk,qkd->qd", w, v["embedding"][idx]).astype(np.float32)
        labels, share, prob = vote(dist, idx, v["labels"], v["probabilities"])
        proba = np.where(labels >= 0, share * prob, 0.0)
        novel, novelty = self.novelty(dist)
        cluster, cshare, cconf = vote(dist, idx, v["cluster"], v["confidence"])
        path = None
        if v["levels"] is not None:
            plab, pprob = self._vote_path(dist, idx)
            path = {"labels": plab, "probabilities": pprob}
        return {"labels": labels, "probabilities": proba, "cluster": cluster, "confidence": cshare * cconf,
                "embedding": emb, "novel": novel, "novelty": novelty, "neighbors": self.ref_index_[idx],
                "weights": w.astype(np.float32), "path": path}


def exact_distances(Q: np.ndarray, R: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Euclidean distances (float32, (m, k)) from each row of ``Q`` to the rows ``idx`` (m, k) of
    ``R``; infinity where ``idx`` is -1. faiss answers a batch as |q|^2 + |r|^2 - 2 q.r, which in
    1,280 dims loses up to ~1e-3 to cancellation: a fitted item's own copy came back that far
    away instead of at 0 and no longer dominated its 1/d-weighted vote (its predicted coordinates
    off by ~1e-2). Computed from the differences, in blocks of at most ``2**22`` numbers."""
    out = np.full(idx.shape, np.inf, dtype=np.float32)
    rows = max(1, 2**22 // max(1, idx.shape[1] * R.shape[1]))
    for s in range(0, len(Q), rows):
        i = idx[s:s + rows]
        ok = i >= 0
        diff = R[np.where(ok, i, 0)] - Q[s:s + rows, None, :]
        out[s:s + rows] = np.where(ok, np.sqrt(np.einsum("qkd,qkd->qk", diff, diff)), np.inf)
    return out


def projects(rows: int, d: int, dims: int | None) -> bool:
    """Whether a predictor fitted on ``rows`` distinct ``d``-dimensional vectors projects them onto
    ``dims`` principal axes: only when that is fewer than ``d`` and there are at least
    ``PROJECTION_ROWS_PER_AXIS`` rows per axis (else the vectors are kept whole)."""
    return dims is not None and d > dims and rows >= PROJECTION_ROWS_PER_AXIS * dims


def conformal_threshold(scores: np.ndarray, alpha: float) -> float:
    """Split conformal: the ``ceil((n + 1)(1 - alpha))``-th smallest of ``scores``; a new item
    exchangeable with them exceeds it with probability at most ``alpha``. With too few scores
    for that rank (under 99 at alpha 0.01): the largest."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    r = int(np.ceil((len(s) + 1) * (1.0 - alpha)))
    return float(s[min(r, len(s)) - 1])


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
