"""Shared work for a tuning study: computed once, reused by every trial.

The workspace only supplies caches; every trial is the starting ``Pipeline`` configured with the
trial's parameters (:func:`configure`) and fitted by ``Pipeline.fit`` itself, which accepts them:

* one neighbour graph of the input vectors at the largest ``reducer__n_neighbors`` of the space
  (exact: faiss / scikit-learn brute force), sliced per trial and handed to
  ``UMAPReducer.fit(X, precomputed_knn=...)``; for fewer than 4096 items it is built the way
  umap-learn builds its own small-data graph, so the labels equal the slow path exactly;
* reduced embeddings cached by reducer parameters (memory + ``cache_dir/reduced/*.npy``), so
  trials that change only outlier / clustering parameters never rerun UMAP, and a resumed or
  parallel study finds them on disk;
* per reduced embedding, one neighbour graph at the largest LOF ``n_neighbors``, passed to
  scikit-learn's LocalOutlierFactor as a precomputed sparse graph;
* silhouette on a seeded random sample with a bootstrap CI (``mediacluster.metrics``);
* nested fixed random subsamples (``sub2000`` inside ``sub10000`` inside 50,000 items) for the
  low-fidelity rungs of multi-fidelity tuning, each with its own graph; neighbourhood sizes are
  scaled by the subsample fraction there (the same *share* of the data, so the same radius),
  and UMAP runs the number of epochs it would run on the full set;
* ``umap_init``: the layout start of every trial's UMAP whose ``init`` the space leaves alone
  (None: the stage's own). ``"pca"`` is the engine's start: umap-learn's spectral start solves
  an eigenproblem of the whole graph (9 of 68 CPU s of one 50,000-item trial at n_neighbors
  1,500), a PCA start of the input vectors takes ~1 s (``tune.study.UMAP_INIT`` says why it is
  not the tuner's default);
* ``layout_epochs``: the number of layout epochs of every trial's UMAP that leaves ``n_epochs``
  to umap-learn, at every level, or a list of one count per level, cheapest first (None:
  umap-learn's own count for the full set). The layout is
  75-85 % of a trial's CPU time, and it is linear in the epochs.

The slow path (what a user would write by hand) is :func:`slow_labels`; tests check that both
give the same labels for the same parameters and seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import clone

from ..errors import ParameterError
from ..fileio import write_npy
from ..stages.neighbors import knn_graph as faiss_knn
from ..stages.neighbors import self_first
from .space import SearchSpace

SMALL_DATA = 4096  # umap-learn's exact-distance threshold
# reduced-space (LOF) graphs kept for later trials on the same embedding, at most this many
# bytes: a full-size trial's graph at 50,000 items and k 773 is 0.6 GB, which stayed in the
# process that ran it for the rest of the study (on top of its next full-size UMAP fit, or the
# refit), though a later trial on the same full-size embedding is rare (RESULTS, "Tuning's
# memory, second pass"); the 2,000- and 10,000-item rungs' graphs are 1-25 MB
ZKNN_KEEP_BYTES = 256 * 2**20


# ------------------------------------------------------------------------------------------
# neighbour graphs
# ------------------------------------------------------------------------------------------
KNN_METHODS = ("auto", "exact", "svd")


def graph_method(n: int, metric: str, method: str = "auto") -> str:
    """The input graph's search for ``n`` items: ``"auto"`` is ``"svd"`` (an approximate search,
    see ``stages.neighbors``) for cosine above ``stages.neighbors.EXACT_MAX`` items, else exact."""
    from ..stages.neighbors import EXACT_MAX

    if method == "auto":
        return "svd" if metric == "cosine" and n > EXACT_MAX else "exact"
    if method == "svd" and (metric != "cosine" or n < SMALL_DATA):
        return "exact"
    return method


def knn_graph(X: np.ndarray, k: int, metric: str = "cosine",
              method: str = "exact") -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours (the point itself first), ``(indices int32, distances float32)``,
    exact unless ``method="svd"`` (see :func:`graph_method`).

    Below 4096 items this reproduces umap-learn's small-data path bit for bit (full distance
    matrix from scikit-learn, rows ordered by ``umap.utils.fast_knn_indices``), so a reducer
    fitted on a slice of it equals one that computed its own graph.
    """
    n = len(X)
    k = int(min(k, n))
    if n < SMALL_DATA:
        from sklearn.metrics import pairwise_distances
        from umap.distances import named_distances

        from . import small_graph  # numba kernels with a disk cache

        # umap-learn computes the small-data matrix with sklearn's pairwise_distances and its own
        # numba metric (a Python-level call per pair); the same loops in numba give the same
        # values in a fraction of the time
        fn = named_distances.get(metric)
        Y = np.ascontiguousarray(X, dtype=np.float32)
        if metric in small_graph.METRICS:
            dmat = small_graph.pairwise(Y, metric)
        elif fn is not None:
            dmat = _pairwise_numba(Y, fn)
        else:
            dmat = pairwise_distances(X, metric=metric)
        idx = small_graph.fast_knn_indices(dmat, k)
        dist = dmat[np.arange(n)[:, None], idx]
        return idx.astype(np.int32), dist.astype(np.float32)
    if method == "svd" and metric == "cosine":
        return faiss_knn(X, k, metric="cosine", method="svd")
    if metric in ("cosine", "euclidean"):
        # the one exact faiss search; queries in blocks of 2048, the size this graph has always
        # used: faiss's BLAS blocking follows the query count, so another block size moves some
        # distances in the last bit, and cached graphs and the identity tests compare bits
        return faiss_knn(X, k, metric=metric, method="exact", block=2048)
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(X)
    dist, idx = nn.kneighbors(X)
    idx, dist = self_first(idx, dist.astype(np.float32))
    return idx.astype(np.int32), dist


_PAIRWISE_CACHE: dict = {}


def _pairwise_numba(X: np.ndarray, fn) -> np.ndarray:
    """``sklearn.metrics.pairwise_distances(X, metric=fn)`` for a numba metric, same loops."""
    import numba

    kernel = _PAIRWISE_CACHE.get(fn)
    if kernel is None:
        @numba.njit(nogil=True)
        def kernel(X):
            n = X.shape[0]
            out = np.zeros((n, n), dtype=X.dtype)
            for i in range(n):
                for j in range(i + 1, n):
                    out[i, j] = fn(X[i], X[j])
            out = out + out.T
            for i in range(n):
                out[i, i] = fn(X[i], X[i])
            return out

        _PAIRWISE_CACHE[fn] = kernel
    return kernel(X)


def reduced_knn(Z: np.ndarray, k: int):
    """Sparse distance graph of the ``k`` nearest other points in reduced space (euclidean),
    in the form scikit-learn's ``metric="precomputed"`` estimators accept.

    scikit-learn's own exact search, what ``LocalOutlierFactor`` would run itself, so the
    tuner's LOF equals a from-scratch one. (faiss's exact search was tried for large sets and
    was not faster: LOF on 50,000 points in 8-29 dims at k 450-1,000 took 22-29 s with faiss on
    one thread, 17-32 s with this tree in the previous run of the same study.)"""
    from sklearn.neighbors import NearestNeighbors

    k = int(min(k, len(Z) - 1))
    # query with Z itself so each row holds the point at distance 0 (scikit-learn drops that
    # column when it asks a precomputed graph for the neighbours of its own training points)
    return NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors_graph(Z, mode="distance")


# ------------------------------------------------------------------------------------------
# trial pipelines
# ------------------------------------------------------------------------------------------
def configure(pipeline, params: dict, seed: int):
    """The pipeline a trial fits: ``pipeline`` with the trial's stage choices and parameters,
    every stage's ``random_state`` and the pipeline's set to ``seed``."""
    pipe = pipeline.with_params(params)
    seeds = {"random_state": seed}
    for kind, stage in pipe.stages().items():
        if stage is not None and stage != "auto" and "random_state" in stage.get_params(deep=False):
            seeds[f"{kind}__random_state"] = seed
    return pipe.set_params(**seeds)


def flat_params(pipe) -> dict:
    """Stage names and every stage parameter as ``kind__param`` (JSON-able), e.g. for
    ``best_params.json``."""
    from ..stages import registry

    out: dict = {}
    for kind, stage in pipe.stages().items():
        info = registry.of(stage) if stage not in (None, "auto") else None
        out[kind] = info.name if info is not None else stage
        if info is not None:
            for k, v in stage.get_params(deep=False).items():
                out[f"{kind}__{k}"] = v
    return out


def slow_labels(X: np.ndarray, params: dict, seed: int, pipeline) -> np.ndarray:
    """Reference path: the trial's pipeline fitted from raw vectors, nothing reused."""
    return configure(pipeline.concrete(len(X)), params, seed).fit(X, build_predictor=False).labels_


def umap_default_epochs(n: int) -> int:
    """The epoch count umap-learn picks for ``n`` items when ``n_epochs`` is None."""
    return 500 if n <= 10000 else 200


# ------------------------------------------------------------------------------------------
# the workspace
# ------------------------------------------------------------------------------------------
@dataclass
class TrialOutput:
    labels: np.ndarray
    metrics: dict
    Z: np.ndarray = field(repr=False, default=None)


class Workspace:
    """Everything trials share. ``X``: (n, d) vectors; ``space``: the (clamped) search space;
    ``pipeline``: the starting pipeline every trial is configured from."""

    def __init__(self, X: np.ndarray, space: SearchSpace, pipeline, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, silhouette_sample: int = 5000,
                 dbcv_sample: int = 1000, input_sample: int = 3000,
                 subsample=None, max_cached: int = 64, layout_epochs: int | list | None = None,
                 umap_init: str | None = None, knn_method: str = "exact"):
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.n = len(self.X)
        self.space = space
        self.base = pipeline.concrete(self.n)
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.silhouette_sample = silhouette_sample
        self.dbcv_sample = dbcv_sample
        self.input_sample = input_sample
        self.max_cached = max_cached
        # one count for every level, or one per level (cheapest first, the full set last)
        self.layout_epochs = (None if layout_epochs is None else
                              [int(e) for e in layout_epochs] if isinstance(layout_epochs, list | tuple)
                              else int(layout_epochs))
        self.umap_init = umap_init
        self.knn_method = knn_method
        self._graphs: dict = {}
        self._reduced: OrderedDict = OrderedDict()
        self._zknn: OrderedDict = OrderedDict()
        self.timings = {"knn": 0.0}
        self.stats = {"umap_fits": 0, "umap_cache_hits": 0, "umap_disk_hits": 0}
        self.fingerprint = hashlib.sha1(self.X[:: max(1, self.n // 512)].tobytes()
                                        + str(self.X.shape).encode()).hexdigest()[:12]
        # low-fidelity levels: prefixes of one seeded permutation, so each is nested in the next
        sizes = sorted({int(m) for m in np.atleast_1d(subsample if subsample else [])
                        if 10 <= int(m) < self.n})
        perm = np.random.default_rng(self.seed).permutation(self.n) if sizes else None
        self.level_index = {f"sub{m}": np.sort(perm[:m]) for m in sizes}
        self.levels = [*self.level_index, "full"]  # cheapest first
        self._level_data: dict[str, np.ndarray] = {}  # subsample rows, gathered once per level

    # -- fidelity levels -------------------------------------------------------------------
    def data(self, level: str) -> np.ndarray:
        if level == "full":
            return self.X
        if level not in self._level_data:
            self._level_data[level] = self.X[self.index(level)]
        return self._level_data[level]

    def index(self, level: str) -> np.ndarray:
        if level == "full":
            return np.arange(self.n)
        if level not in self.level_index:
            raise KeyError(f"unknown fidelity level {level!r}; levels: {self.levels}")
        return self.level_index[level]

    def size(self, level: str) -> int:
        return self.n if level == "full" else len(self.index(level))

    def scaled(self, value: int, low: int, level: str) -> int:
        """A neighbourhood size for a low-fidelity level: the same share of the data."""
        if level == "full":
            return int(value)
        m = self.size(level)
        return int(min(m - 1, max(low, round(value * m / self.n))))

    def trial_pipeline(self, params: dict, level: str = "full"):
        """The pipeline a trial fits at ``level``: on a subsample, parameters the registry marks
        as neighbourhood sizes are scaled by the subsample fraction, and a reducer with an
        ``n_epochs`` left to its library trains for the epochs it would use on the full set
        (umap-learn gives <= 10,000 items 500 epochs, more items 200; a subsample standing in
        for 50,000 items should train like them, and 2.5x fewer epochs is what makes a rung
        cheap)."""
        from ..stages import registry

        pipe = configure(self.base, params, self.seed)
        updates = {}
        for kind, stage in pipe.stages().items():
            info = registry.of(stage) if stage not in (None, "auto") else None
            if info is None:
                continue
            if level != "full":
                for p, spec in info.params.items():
                    v = getattr(stage, p)
                    if spec.scale and v is not None:
                        updates[f"{kind}__{p}"] = self.scaled(v, int(spec.low or 1), level)
            if kind == "reducer" and "n_epochs" in info.params and stage.n_epochs is None:
                if self.layout_epochs is not None:
                    updates["reducer__n_epochs"] = self.epochs_at(level)
                elif level != "full":
                    updates["reducer__n_epochs"] = umap_default_epochs(self.n)
            if (kind == "reducer" and self.umap_init is not None and "init" in info.params
                    and "reducer__init" not in self.space.dims):
                updates["reducer__init"] = self.umap_init
        return pipe.set_params(**updates) if updates else pipe

    def epochs_at(self, level: str) -> int | None:
        """``layout_epochs`` at ``level``."""
        e = self.layout_epochs
        if isinstance(e, list):
            if len(e) != len(self.levels):
                raise ParameterError(f"layout_epochs gives {len(e)} counts for {len(self.levels)} levels "
                                     f"({', '.join(self.levels)}): give one count, or one per level",
                                     "layout_epochs")
            return e[self.levels.index(level)]
        return e

    def _space_max(self, name: str, default: int, level: str) -> int:
        kind, p = name.split("__", 1)
        from ..stages import registry

        v = int(self.space.max_of(name, default) or default)
        info = registry.of(getattr(self.base, kind)) if getattr(self.base, kind) not in (None, "auto") else None
        low = int(info.params[p].low or 1) if info is not None and p in info.params else 1
        return max(self.scaled(v, low, level), 1)

    # -- neighbour graph of the inputs -----------------------------------------------------
    def graph(self, level: str, metric: str):
        """The level's input graph ``(indices int32, distances float32)`` at the space's largest
        ``reducer__n_neighbors``; each trial's reducer reads its first ``n_neighbors`` columns.

        With a ``cache_dir`` the graph lives in two ``.npy`` files there and every call maps them
        (copy-on-write, ``np.load(mmap_mode="c")``); nothing is kept in memory between trials.
        The study's processes then share one copy in the page cache, a page is read only when a
        trial's reducer reads it, and the mapping is gone when the trial's reducer is: the
        50,000 x 2,000 graph (0.8 GB) was an in-memory copy in the main process for the whole
        study and in each worker from its first full-size trial on (benchmarks/RESULTS.md,
        "Tuning's memory, second pass"). Without a ``cache_dir`` it is kept in memory."""
        key = (level, metric)
        if key in self._graphs:
            return self._graphs[key]
        base_nn = getattr(self.base.reducer, "n_neighbors", 30) or 30
        data = self.data(level)
        k = min(self._space_max("reducer__n_neighbors", base_nn, level), len(data) - 1)
        method = graph_method(len(data), metric, self.knn_method)
        if self.cache_dir is None:
            t = time.perf_counter()
            self._graphs[key] = knn_graph(data, k, metric, method)
            self.timings["knn"] += time.perf_counter() - t
            return self._graphs[key]
        tag = "" if method == "exact" else f"-{method}"
        stem = self.cache_dir / f"knn-{self.fingerprint}-{level}-{metric}-{k}{tag}"
        paths = [stem.with_name(stem.name + ".indices.npy"), stem.with_name(stem.name + ".distances.npy")]
        if not all(p.exists() for p in paths):
            old = stem.with_name(stem.name + ".npz")  # the one-file form of earlier versions
            if old.exists():
                with np.load(old, allow_pickle=False) as f:
                    g = (f["indices"], f["distances"])
            else:
                t = time.perf_counter()
                g = knn_graph(data, k, metric, method)
                self.timings["knn"] += time.perf_counter() - t
            for p, a in zip(paths, g):  # the distances last: both present means both complete
                write_npy(p, a)
            del g
            old.unlink(missing_ok=True)  # converted: the one-file copy would only hold the disk
        # plain ndarray views of the maps (numba and pickle see what they saw before)
        return tuple(np.load(p, mmap_mode="c", allow_pickle=False).view(np.ndarray) for p in paths)

    # -- reduction with caching --------------------------------------------------------------
    def reduce(self, pipe, level: str = "full") -> np.ndarray:
        """The trial reducer's embedding of the level's data: from memory, from disk, or fitted
        once on the shared input graph."""
        reducer = pipe.reducer
        if reducer is None:
            return self.data(level)
        rp = reducer.get_params()
        key = json.dumps({"level": level, "data": self.fingerprint, "class": type(reducer).__name__, **rp},
                         sort_keys=True, default=str)
        if key in self._reduced:
            self._reduced.move_to_end(key)
            self.stats["umap_cache_hits"] += 1
            return self._reduced[key]
        h = hashlib.sha1(key.encode()).hexdigest()[:16]
        path = self.cache_dir / "reduced" / f"{h}.npy" if self.cache_dir is not None else None
        if path is not None and path.exists():
            Z = np.load(path, allow_pickle=False)
            self.stats["umap_disk_hits"] += 1
        else:
            data = self.data(level)
            knn = self.graph(level, rp["metric"]) if {"n_neighbors", "metric"} <= set(rp) else None
            Z = clone(reducer).fit(data, precomputed_knn=knn).embedding_
            self.stats["umap_fits"] += 1
            if path is not None:
                write_npy(path, Z)
        self._reduced[key] = Z
        while len(self._reduced) > self.max_cached:
            self._reduced.popitem(last=False)
        return Z

    def outlier_graph(self, pipe, Z: np.ndarray, level: str):
        """A reduced-space kNN graph for a neighbourhood-based outlier stage (LOF).

        The first trial on a reduced space gets a graph of its own ``n_neighbors``: in a
        continuous space no other trial sees the same embedding, and the search costs about
        linearly in k (at 50,000 items a graph at the space's largest k, 1,000, took 17-32 s).
        A later trial on the same (cached) embedding that asks for more neighbours gets one graph
        at the largest k the space can ask for, which serves every trial after it."""
        o = pipe.outliers
        if o is None or "n_neighbors" not in o.get_params():
            return None
        n = len(Z)
        k = min(int(o.n_neighbors), n - 1)
        zkey = f"{id(Z)}"
        g = self._zknn.get(zkey)
        if g is None or g[2] is not Z:
            g = (k, reduced_knn(Z, k), Z)
        elif g[0] < k:
            k_max = max(self._space_max("outliers__n_neighbors", o.n_neighbors, level), k)
            k_max = min(k_max, n - 1)
            g = (k_max, reduced_knn(Z, k_max), Z)
        self._zknn[zkey] = g
        # kept for later trials on the same embedding within ZKNN_KEEP_BYTES: a graph bigger
        # than that serves its own trial only (a later trial on that embedding searches again,
        # as the slow path does)
        size = lambda e: e[1].data.nbytes + e[1].indices.nbytes + e[1].indptr.nbytes  # noqa: E731
        while self._zknn and (len(self._zknn) > 4 or sum(size(e) for e in self._zknn.values()) > ZKNN_KEEP_BYTES):
            self._zknn.popitem(last=False)
        return g[1]

    # -- one trial ---------------------------------------------------------------------------
    def run(self, params: dict, level: str = "full", score: bool = True) -> TrialOutput:
        """Fit the trial's pipeline with the shared work; labels -2/-1/>=0 + metrics."""
        pipe = self.trial_pipeline(params, level)
        t0 = time.perf_counter()
        Z = self.reduce(pipe, level)
        t1 = time.perf_counter()
        G = self.outlier_graph(pipe, Z, level)
        pipe.fit(self.data(level), embedding=Z, outlier_graph=G, build_predictor=False)
        labels = pipe.labels_
        m = {"level": level, "n_items": int(len(Z)), "params_used": flat_params(pipe),
             "time_reduce_s": t1 - t0, "time_outliers_s": pipe.timings_["outliers"],
             "time_cluster_s": pipe.timings_["cluster"]}
        if score:
            ts = time.perf_counter()
            m.update(self.score(Z, labels, level))
            m["time_score_s"] = time.perf_counter() - ts
        m["time_total_s"] = time.perf_counter() - t0
        return TrialOutput(labels=labels, metrics=m, Z=Z)

    def score(self, Z: np.ndarray, labels: np.ndarray, level: str = "full") -> dict:
        return score_labels(Z, self.data(level), labels, seed=self.seed,
                            silhouette_sample=self.silhouette_sample,
                            dbcv_sample=self.dbcv_sample, input_sample=self.input_sample)

    def input_silhouette_se(self, labels: np.ndarray, level: str = "full") -> float | None:
        """The standard error (``metrics.silhouette``'s jackknife) of the input-space silhouette
        that :meth:`score` recorded for these labels: the same seeded sample, 0.1-0.3 s more at
        10,000 x 1,280, so it is computed only for the trials that need it (the leader rule)."""
        from .. import metrics as M

        s = M.silhouette(self.data(level), np.asarray(labels), sample_size=self.input_sample,
                         random_state=self.seed, exclude_noise=True, metric="cosine", n_boot=100)
        return s["se"]


def score_labels(Z, X, labels, seed=0, silhouette_sample=5000, dbcv_sample=1000,
                 input_sample=3000) -> dict:
    """Every label-free score a trial records (see ``objectives`` for how they combine). The
    reduced-space silhouette's standard error (``metrics.silhouette``'s jackknife) is recorded
    as ``silhouette_se``; the input-space one's on demand (``Workspace.input_silhouette_se``)."""
    from .. import metrics as M

    lab = np.asarray(labels)
    n = len(lab)
    k = M.n_clusters(lab)
    cov = M.coverage(lab)
    sizes = np.bincount(lab[lab >= 0]) if k else np.zeros(0, int)
    out = {
        "n_clusters": k, "coverage": cov,
        "noise_share": float((lab == -1).mean()), "outlier_share": float((lab == -2).mean()),
        "largest_cluster_share": float(sizes.max() / n) if k else 0.0,
    }
    s = M.silhouette(Z, lab, sample_size=silhouette_sample, random_state=seed, exclude_noise=True,
                     n_boot=100)
    out["silhouette"] = s["value"]
    out["silhouette_ci"] = [s["ci_low"], s["ci_high"]]
    out["silhouette_n"] = s["n_used"]
    out["silhouette_se"] = s["se"]
    sa = M.silhouette(Z, lab, sample_size=silhouette_sample, random_state=seed, exclude_noise=False,
                      n_boot=0)
    out["silhouette_all"] = sa["value"]
    si = M.silhouette(X, lab, sample_size=input_sample, random_state=seed, exclude_noise=True,
                      metric="cosine", n_boot=0)
    out["silhouette_input"] = si["value"]
    if k >= 2:
        d = M.dbcv(Z, lab, sample_size=dbcv_sample, random_state=seed)
        out["dbcv"] = None if not np.isfinite(d) else float(d)
    else:
        out["dbcv"] = None
    return out
