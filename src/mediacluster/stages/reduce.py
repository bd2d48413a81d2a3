"""Dimensionality reduction stages behind one small interface: ``fit`` / ``transform`` / ``embedding_``.

Every reducer is a scikit-learn estimator (constructor stores parameters only; ``fit`` returns
``self``; learned state ends in ``_``) and accepts ``fit(X, y=None, precomputed_knn=None)`` so the
tuner can pass one neighbour graph to every trial (only UMAP uses it; the others ignore it).

>>> from mediacluster.reduce import UMAPReducer
>>> Z = UMAPReducer(n_components=10, n_neighbors=30).fit_transform(vectors)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
)

from ..data import validate_rows
from ..errors import InputError
from .registry import SEED, Bool, Choice, Float, Int, check_params, register

# metrics umap-learn computes natively (numba); others are refused with the list
UMAP_METRICS = ("cosine", "euclidean", "correlation", "manhattan", "chebyshev", "minkowski",
                "canberra", "braycurtis", "hamming", "jaccard", "dice", "hellinger")


class _Reducer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A reducer's output columns are named after its class (``pcareducer0``, ...:
    ``get_feature_names_out``), so ``set_output(transform="pandas")`` gives a DataFrame, as
    scikit-learn's own decompositions do. ``embedding_``, which ``Pipeline`` reads, is always an
    array: the scikit-learn estimators inside are read with ``np.asarray``, since a global
    ``sklearn.set_config(transform_output="pandas")`` makes them return DataFrames."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # every reducer returns float32
        return tags

    def fit_transform(self, X, y=None, precomputed_knn=None):
        return self.fit(X, y, precomputed_knn=precomputed_knn).embedding_

    def _fit_data(self, X) -> np.ndarray:
        """Parameters checked against the registry, then X as finite 2-D float32."""
        check_params(self)
        return validate_rows(self, X)

    def _new_data(self, X, dtype=np.float32) -> np.ndarray:
        """New points, checked against the fit. The linear reducers ask for float64: a float32
        projection differs in the last bit with a row's position in the batch (BLAS blocking),
        a float64 one rounded to float32 does not."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        return validate_rows(self, X, reset=False, dtype=dtype)


# umap-learn kernels that it compiles without numba's on-disk cache (its own ``cache=True`` is
# set on a few small helpers only): a new process spent ~10 s of CPU compiling these three
# before its first UMAP fit (measured with numba's compile events on 2,268 items: 6.7 s
# smooth_knn_dist, 2.2 s compute_membership_strengths, 1.0 s the serial layout epoch, the rest
# numpy helpers compiled inside them). Only the serial layout epoch is cached: numba's cache
# index is keyed by the Python function and signature, not by ``parallel=``, so caching both
# twins of one function could load one for the other. The two graph kernels are compiled
# serial (``parallel=False``): they compile in a third of the time (1.6 vs 4.8 s for both),
# ran as fast on 200,000 items x 15 neighbours on 2 cores (0.26 vs 0.37 s).
_UMAP_UNCACHED = (("umap.umap_", "smooth_knn_dist", False), ("umap.umap_", "compute_membership_strengths", False),
                  ("umap.layouts", "_nb_optimize_layout_euclidean_single_epoch", None))
_UMAP_LOCK = threading.Lock()
_LAYOUT_JOB = threading.local()  # ``during_layout``'s job for the next UMAP layout in this thread


@contextlib.contextmanager
def during_layout(job, stop=None):
    """Run ``job()`` in a second thread while the next UMAP fit of the calling thread inside this
    block runs its layout epochs (umap-learn's ``optimize_layout_euclidean``: seeded, it is serial
    numba code that uses no BLAS, so the other core idles). Yields a ``concurrent.futures.Future``
    with ``job``'s result or exception; it stays not ``done()`` when no layout ran (e.g. too few
    items for UMAP), and the caller then does the work itself. ``job=None`` yields None. The layout waits for the job
    before it returns, so nothing the job does (such as ``single_blas_thread``, whose BLAS limit
    is process-wide) outlives the layout. Results do not change: the job must not touch the
    layout's inputs, and the layout's numba kernel is the same in either case. ``stop``: a
    ``threading.Event`` set as soon as the layout's epochs end, before the layout waits for the
    job, so a job doing optional work (``hierarchy.agreement_prefit``) can end early."""
    from concurrent.futures import Future

    if job is None:
        yield None
        return
    fut = Future()
    _LAYOUT_JOB.job = (job, fut, stop)
    try:
        yield fut
    finally:
        _LAYOUT_JOB.job = None


def _run_job(job, fut):
    if fut.set_running_or_notify_cancel():
        try:
            fut.set_result(job())
        except BaseException as e:  # handed to whoever reads the future
            fut.set_exception(e)


def _with_layout_job(layout):
    """umap-learn's layout function, running ``during_layout``'s job alongside."""
    import functools

    @functools.wraps(layout)
    def run(*args, **kwargs):
        pending = getattr(_LAYOUT_JOB, "job", None)
        if pending is None:
            return layout(*args, **kwargs)
        _LAYOUT_JOB.job = None  # once: a second layout in the block runs alone
        job, fut, stop = pending
        worker = threading.Thread(target=_run_job, args=(job, fut), daemon=True)
        worker.start()
        try:
            return layout(*args, **kwargs)
        finally:
            if stop is not None:
                stop.set()
            worker.join()

    run._mediacluster_job = True
    return run


def import_umap():
    """``umap`` (umap-learn), its hottest kernels re-wrapped with ``cache=True`` once per
    process, so only the first process on a machine pays their compilation (where numba caches
    is numba's choice: ``NUMBA_CACHE_DIR``, which the CLI points at the user cache)."""
    import importlib

    with _UMAP_LOCK:  # two threads fitting at once may both get here first
        import umap  # heavy (numba): loaded when a UMAP is fitted

        for mod_name, attr, parallel in _UMAP_UNCACHED:
            mod = importlib.import_module(mod_name)
            fn = getattr(mod, attr, None)
            # another umap-learn version may lack or rename one: it then compiles as before
            if fn is None or not hasattr(fn, "py_func") or getattr(fn, "_mediacluster_cached", False):
                continue
            import numba

            opts = {k: v for k, v in fn.targetoptions.items() if k != "nopython"}
            if parallel is not None:
                opts["parallel"] = parallel
            cached = numba.njit(cache=True, locals=dict(fn.locals), **opts)(fn.py_func)
            cached._mediacluster_cached = True
            setattr(mod, attr, cached)
        umap_ = importlib.import_module("umap.umap_")
        layout = getattr(umap_, "optimize_layout_euclidean", None)
        if layout is not None and not getattr(layout, "_mediacluster_job", False):
            umap_.optimize_layout_euclidean = _with_layout_job(layout)  # see during_layout
    return umap


@register("reducer", "umap", params={
    "n_neighbors": Int(2, tune={"int": [5, 200], "log": True}, scale=True),
    "n_components": Int(1, tune={"int": [2, 50]}),
    "min_dist": Float(0.0, tune={"float": [0.0, 0.5]}),
    "spread": Float(0.0, low_open=True),
    "metric": Choice(*UMAP_METRICS),
    "n_epochs": Int(1, none_ok=True),
    "random_state": SEED,
    "init": Choice("spectral", "pca", "tswspectral", "random"),
})
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
        umap = import_umap()

        X = self._fit_data(X)
        nn = int(min(self.n_neighbors, max(2, len(X) - 1)))
        kw = {}
        if precomputed_knn is not None:
            idx, dist = precomputed_knn
            idx, dist = np.asarray(idx), np.asarray(dist)
            if idx.shape != dist.shape or idx.shape[0] != len(X) or idx.shape[1] < nn:
                raise InputError(
                    f"precomputed_knn must be two (n, k) arrays with n={len(X)} and k >= n_neighbors={nn}; "
                    f"got {idx.shape} and {dist.shape}")
            # umap-learn writes -1 / inf into the arrays it is given where an edge is at or past
            # its disconnection distance, and these are the caller's graph: copies then. Where no
            # edge is, it only reads them, so the caller's int32 / float32 columns are handed over
            # as they are (a view, the slice umap-learn itself takes of a wider graph): a copy of
            # the tuner's 50,000 x 1,988 graph was 0.8 GB of its peak (benchmarks/RESULTS.md,
            # "Tuning's peak memory")
            wider = idx.shape[1] > nn  # a slice of a wider graph: released after the fit (below)
            idx, dist = idx[:, :nn], dist[:, :nn]
            cut = umap.umap_.DISCONNECTION_DISTANCES.get(self.metric, np.inf)
            if idx.dtype != np.int32 or dist.dtype != np.float32 or bool((dist >= cut).any()):
                idx = np.array(idx, dtype=np.int32, order="C")
                dist = np.array(dist, dtype=np.float32, order="C")
            kw["precomputed_knn"] = (idx, dist, None)
        import warnings

        # umap-learn's spectral initialisation asks scipy for n_components + 1 eigenvectors,
        # which a graph of that few items does not have: start those from random positions
        init = self.init if len(X) > int(self.n_components) + 1 else "random"
        if init == "pca" and int(self.n_components) > X.shape[1]:
            # a PCA start has at most as many axes as the vectors have dimensions (the default
            # pipeline's 10 on 3-d vectors was scikit-learn's bare ValueError): random start too
            init = "random"
        self.umap_ = umap.UMAP(
            n_neighbors=nn, n_components=int(self.n_components), min_dist=float(self.min_dist),
            spread=float(self.spread), metric=self.metric, n_epochs=self.n_epochs,
            random_state=self.random_state, init=init, **kw,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs value.*")
            warnings.filterwarnings("ignore", message=".*precomputed_knn.*")
            self.embedding_ = np.asarray(self.umap_.fit_transform(X), dtype=np.float32)
        if precomputed_knn is not None and wider:
            self._release_graph(*kw["precomputed_knn"][:2])
        return self

    def _release_graph(self, idx: np.ndarray, dist: np.ndarray) -> None:
        """The fitted umap-learn object keeps the graph it was given (``precomputed_knn``,
        ``knn_indices``, ``_knn_indices``, ...); where that is a view of the caller's wider graph,
        it would keep all of that graph alive as long as the fitted pipeline lives (the tuner's
        refit: its 50,000 x 1,988 graph, 0.8 GB, for 15 columns). Those references become a copy
        of the columns used, made after the fit's peak."""
        if idx.base is None and dist.base is None:  # copies already (cut edges, other dtypes)
            return
        own = {id(idx): np.ascontiguousarray(idx), id(dist): np.ascontiguousarray(dist)}
        for name, value in list(vars(self.umap_).items()):
            if id(value) in own:
                setattr(self.umap_, name, own[id(value)])
            elif isinstance(value, tuple) and any(id(v) in own for v in value):
                setattr(self.umap_, name, tuple(own.get(id(v), v) for v in value))

    def transform(self, X):
        X = self._new_data(X)  # first: NotFittedError before any fitted attribute is read
        return np.asarray(self.umap_.transform(X), dtype=np.float32)

    @property
    def _n_features_out(self) -> int:
        return int(self.umap_.n_components)


@register("reducer", "pca", params={
    "n_components": Int(1, tune={"int": [2, 100], "log": True}), "whiten": Bool(), "random_state": SEED})
class PCAReducer(_Reducer):
    """Principal component analysis (scikit-learn ``PCA``)."""

    def __init__(self, n_components: int = 50, whiten: bool = False, random_state: int | None = 0):
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def fit(self, X, y=None, precomputed_knn=None):
        from sklearn.decomposition import PCA

        X = self._fit_data(X)
        k = int(min(self.n_components, X.shape[0], X.shape[1]))
        self.pca_ = PCA(n_components=k, whiten=self.whiten, random_state=self.random_state)
        self.embedding_ = np.asarray(self.pca_.fit_transform(X), dtype=np.float32)

        return self

    def transform(self, X):
        X = self._new_data(X, np.float64)
        return np.asarray(self.pca_.transform(X), dtype=np.float32)

    @property
    def _n_features_out(self) -> int:
        return int(self.pca_.n_components_)


@register("reducer", "ipca", aliases=("incremental_pca",), params={
    "n_components": Int(1, tune={"int": [2, 100], "log": True}), "batch_size": Int(1), "whiten": Bool()})
class IncrementalPCAReducer(_Reducer):
    """PCA fitted batch by batch (scikit-learn ``IncrementalPCA``) for data not held in memory.

    ``X`` may be an array, a ``np.memmap`` / ``np.load(..., mmap_mode="r")`` array (read one
    batch at a time), or an iterable of 2-D batches (a list of arrays, or a generator reading
    e.g. Parquet row groups). Each batch is checked like any scikit-learn input (finite numbers,
    the same number of columns). With an iterable, ``embedding_`` is built by a second pass only
    if the iterable can be iterated again (a list); for a one-shot generator it is None and you
    call ``transform`` batch-wise yourself.

    As :class:`PCAReducer`, ``n_components`` is capped at the number of columns (and of rows,
    for an array). A batch with fewer rows than that is merged into the one before it.
    """

    def __init__(self, n_components: int = 50, batch_size: int = 2048, whiten: bool = False):
        self.n_components = n_components
        self.batch_size = batch_size
        self.whiten = whiten

    def _batches(self, X, reset: bool):
        """``X`` as checked float32 batches (the first one sets ``n_features_in_`` if ``reset``);
        a non-finite value is refused naming its row counted over the whole input."""
        first, row = reset, 0
        if _is_batch_iterable(X):
            for b in X:
                b = validate_rows(self, b, reset=first, first_row=row)
                first, row = False, row + len(b)
                yield b
            return
        if not (hasattr(X, "shape") and hasattr(X, "__getitem__")) or sparse.issparse(X):
            # a list of rows, an object exposing __array__, a sparse matrix (refused): check it whole
            X = validate_rows(self, X, reset=first)
        if X.shape[0] == 0 or len(X.shape) != 2:
            validate_rows(self, X, reset=first)  # raises scikit-learn's message
        for s in range(0, X.shape[0], self.batch_size):
            yield validate_rows(self, X[s:s + self.batch_size], reset=first, first_row=s)
            first = False

    def fit(self, X, y=None, precomputed_knn=None):
        from sklearn.decomposition import IncrementalPCA

        check_params(self)
        self.ipca_ = None
        pending = None  # held back one batch, so a short tail joins the batch before it
        for b in self._batches(X, reset=True):
            if self.ipca_ is None:
                k = min(int(self.n_components), b.shape[1])
                if hasattr(X, "shape") and not _is_batch_iterable(X):
                    k = min(k, X.shape[0])
                self.ipca_ = IncrementalPCA(n_components=k, whiten=self.whiten)
                k = self.ipca_.n_components
            if pending is not None and len(pending) >= k and len(b) >= k:
                self.ipca_.partial_fit(pending)
                pending = b
            else:
                pending = b if pending is None else np.vstack([pending, b])
        if self.ipca_ is None:
            raise InputError("IncrementalPCA: the iterable of batches is empty")
        if len(pending) < self.ipca_.n_components:  # only an iterable with fewer rows in all
            raise InputError(f"IncrementalPCA needs at least n_components={self.ipca_.n_components} "
                             f"rows, got {len(pending)}")
        self.ipca_.partial_fit(pending)
        reiterable = not _is_batch_iterable(X) or isinstance(X, list | tuple)
        self.embedding_ = (np.vstack([np.asarray(self.ipca_.transform(b.astype(np.float64)), dtype=np.float32)
                                      for b in self._batches(X, reset=False)])
                           if reiterable else None)
        return self

    def transform(self, X):
        X = self._new_data(X, np.float64)
        return np.asarray(self.ipca_.transform(X), dtype=np.float32)

    @property
    def _n_features_out(self) -> int:
        return int(self.ipca_.n_components_)


def _is_batch_iterable(X) -> bool:
    """An iterator, or a list/tuple of 2-D batches (not one array given as a list of rows)."""
    if isinstance(X, list | tuple):
        return len(X) > 0 and np.ndim(X[0]) == 2
    return not hasattr(X, "__array__") and not hasattr(X, "shape") and iter(X) is X


@register("reducer", "kernel_pca", aliases=("kpca",), params={
    "n_components": Int(1, tune={"int": [2, 50]}),
    "kernel": Choice("linear", "poly", "rbf", "sigmoid", "cosine"),
    "gamma": Float(0.0, low_open=True, none_ok=True), "degree": Int(1), "random_state": SEED})
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

        X = self._fit_data(X)
        self.kpca_ = KernelPCA(
            n_components=int(min(self.n_components, len(X))), kernel=self.kernel, gamma=self.gamma,
            degree=self.degree, random_state=self.random_state,
            eigen_solver="randomized" if len(X) > 2000 else "auto",
        )
        self.embedding_ = np.asarray(self.kpca_.fit_transform(X), dtype=np.float32)

        return self

    def transform(self, X):
        X = self._new_data(X, np.float64)
        return np.asarray(self.kpca_.transform(X), dtype=np.float32)

    @property
    def _n_features_out(self) -> int:
        return int(self.kpca_.eigenvalues_.shape[0])


@register("reducer", "none", params={})
class NoReduction(OneToOneFeatureMixin, _Reducer):
    """Pass the vectors through unchanged (the "none" stage; its output columns keep the input's
    names)."""

    def fit(self, X, y=None, precomputed_knn=None):
        self.embedding_ = self._fit_data(X)
        return self

    def transform(self, X):
        return self._new_data(X)

