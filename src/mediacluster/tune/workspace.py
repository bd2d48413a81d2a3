"""Shared work for a tuning study: computed once, reused by every trial.

* one neighbour graph of the input vectors at the largest ``reduce.n_neighbors`` of the space
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
  and UMAP runs the number of epochs it would run on the full set.

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

from .space import SearchSpace, full_params, split_params

SMALL_DATA = 4096  # umap-learn's exact-distance threshold


def setup_numba_cache(cache_dir: str | os.PathLike | None = None) -> None:
    """Persist numba's compiled code (umap-learn / pynndescent use ``cache=True``) so a new
    process does not pay the JIT again. Must run before umap is imported to take effect."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        d = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "mediacluster" / "numba"
        d.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(d)


# ------------------------------------------------------------------------------------------
# neighbour graphs
# ------------------------------------------------------------------------------------------
def knn_graph(X: np.ndarray, k: int, metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (the point itself first), ``(indices int32, distances float32)``.

    Below 4096 items this reproduces umap-learn's small-data path bit for bit (full distance
    matrix from scikit-learn, rows ordered by ``umap.utils.fast_knn_indices``), so a reducer
    fitted on a slice of it equals one that computed its own graph.
    """
    n = len(X)
    k = int(min(k, n))
    if n < SMALL_DATA:
        from sklearn.metrics import pairwise_distances
        from umap.distances import named_distances
        from umap.utils import fast_knn_indices

        # umap-learn computes the small-data matrix with sklearn's pairwise_distances and its own
        # numba metric (a Python-level call per pair); the same loops in numba give the same
        # values in a fraction of the time
        fn = named_distances.get(metric)
        if fn is not None:
            dmat = _pairwise_numba(np.ascontiguousarray(X, dtype=np.float32), fn)
        else:
            dmat = pairwise_distances(X, metric=metric)
        idx = fast_knn_indices(dmat, k)
        dist = dmat[np.arange(n)[:, None], idx]
        return idx.astype(np.int32), dist.astype(np.float32)
    if metric in ("cosine", "euclidean"):
        import faiss

        Y = np.ascontiguousarray(X, dtype=np.float32)
        if metric == "cosine":
            Y = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
            index = faiss.IndexFlatIP(Y.shape[1])
        else:
            index = faiss.IndexFlatL2(Y.shape[1])
        index.add(Y)
        idx = np.empty((n, k), np.int64)
        dist = np.empty((n, k), np.float32)
        step = 2048
        for s in range(0, n, step):
            D, Ind = index.search(Y[s:s + step], k)
            idx[s:s + step] = Ind
            dist[s:s + step] = np.maximum(1.0 - D, 0.0) if metric == "cosine" else np.sqrt(np.maximum(D, 0))
        idx, dist = _self_first(idx, dist)
        return idx.astype(np.int32), dist
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, metric=metric, algorithm="brute").fit(X)
    dist, idx = nn.kneighbors(X)
    idx, dist = _self_first(idx, dist.astype(np.float32))
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


def _self_first(idx: np.ndarray, dist: np.ndarray):
    """Make column 0 the point itself at distance 0 (duplicates may have displaced it)."""
    n = len(idx)
    rows = np.arange(n)
    bad = idx[:, 0] != rows
    for i in np.flatnonzero(bad):
        r = idx[i].tolist()
        if i in r:
            j = r.index(i)
            idx[i, 1:j + 1] = idx[i, :j].copy()
            dist[i, 1:j + 1] = dist[i, :j].copy()
        else:
            idx[i, 1:] = idx[i, :-1].copy()
            dist[i, 1:] = dist[i, :-1].copy()
        idx[i, 0] = i
        dist[i, 0] = 0.0
    return idx, dist


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
# stages
# ------------------------------------------------------------------------------------------
def make_stages(params: dict, n: int, seed: int):
    """(reducer, outliers-or-None, clusterer) stage objects for a full parameter dict."""
    from ..cluster import HDBSCANClusterer
    from ..reduce import UMAPReducer

    p = split_params(full_params(params, n))
    r = p["reduce"]
    reducer = UMAPReducer(
        n_neighbors=int(r["n_neighbors"]), n_components=int(r["n_components"]),
        min_dist=float(r["min_dist"]), spread=float(r["spread"]), metric=r["metric"],
        n_epochs=None if r["n_epochs"] is None else int(r["n_epochs"]), random_state=seed,
    )
    o = p["outliers"]
    outliers = None
    if o["method"] == "lof":
        from ..outliers import LOFOutliers

        outliers = LOFOutliers(n_neighbors=int(o["n_neighbors"]), contamination=o["contamination"])
    c = p["cluster"]
    clusterer = HDBSCANClusterer(
        min_cluster_size=int(c["min_cluster_size"]),
        min_samples=None if c["min_samples"] is None else int(c["min_samples"]),
        cluster_selection_method=c["cluster_selection_method"],
        cluster_selection_epsilon=float(c["cluster_selection_epsilon"]), alpha=float(c["alpha"]),
    )
    return reducer, outliers, clusterer


def build_pipeline(params: dict, n: int, seed: int):
    """A ``mediacluster.Pipeline`` for the parameters (what the best trial is refitted as)."""
    from ..pipeline import Pipeline

    reducer, outliers, clusterer = make_stages(params, n, seed)
    return Pipeline(reducer=reducer, outliers=outliers, clusterer=clusterer, random_state=seed)


def slow_labels(X: np.ndarray, params: dict, seed: int) -> np.ndarray:
    """Reference path: the stages fitted from raw vectors, nothing reused."""
    return build_pipeline(params, len(X), seed).fit(X).labels_


def umap_default_epochs(n: int) -> int:
    """The epoch count umap-learn picks for ``n`` items when ``n_epochs`` is None."""
    return 500 if n <= 10000 else 200


def _clamp_cluster(c, n_kept: int):
    c.min_cluster_size = int(max(2, min(c.min_cluster_size, n_kept)))
    if c.min_samples is not None:
        c.min_samples = int(max(1, min(c.min_samples, n_kept - 1)))
    return c


# ------------------------------------------------------------------------------------------
# the workspace
# ------------------------------------------------------------------------------------------
@dataclass
class TrialOutput:
    labels: np.ndarray
    metrics: dict
    Z: np.ndarray = field(repr=False, default=None)


class Workspace:
    """Everything trials share. ``X``: (n, d) vectors; ``space``: the (clamped) search space."""

    def __init__(self, X: np.ndarray, space: SearchSpace, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, silhouette_sample: int = 5000,
                 dbcv_sample: int = 1000, input_sample: int = 3000,
                 subsample=None, max_cached: int = 64):
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        self.n = len(self.X)
        self.space = space
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.silhouette_sample = silhouette_sample
        self.dbcv_sample = dbcv_sample
        self.input_sample = input_sample
        self.max_cached = max_cached
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

    def scale_params(self, params: dict, level: str) -> dict:
        """Parameters for a low-fidelity level: neighbourhood sizes scaled by the subsample
        fraction, and UMAP's epoch count fixed to what it would use on the full set (umap-learn
        gives <= 10,000 items 500 epochs, more items 200; a subsample standing in for 50,000
        items should train like them, and 2.5x fewer epochs is what makes a rung cheap)."""
        if level == "full":
            return dict(params)
        m = self.size(level)
        frac = m / self.n
        out = dict(params)
        for k, lo in (("reduce.n_neighbors", 2), ("outliers.n_neighbors", 2),
                      ("cluster.min_cluster_size", 2), ("cluster.min_samples", 1)):
            if out.get(k) is not None:
                out[k] = int(min(m - 1, max(lo, round(out[k] * frac))))
        if out.get("reduce.n_epochs") is None:
            out["reduce.n_epochs"] = umap_default_epochs(self.n)
        return out

    # -- neighbour graph of the inputs -----------------------------------------------------
    def graph(self, level: str, metric: str):
        key = (level, metric)
        if key not in self._graphs:
            k = int(self.space.max_of("reduce.n_neighbors", 30))
            data = self.data(level)
            if level != "full":
                k = self.scale_params({"reduce.n_neighbors": k}, level)["reduce.n_neighbors"]
            k = min(k, len(data) - 1)
            path = None
            if self.cache_dir is not None:
                path = self.cache_dir / f"knn-{self.fingerprint}-{level}-{metric}-{k}.npz"
                if path.exists():
                    with np.load(path, allow_pickle=False) as f:
                        self._graphs[key] = (f["indices"], f["distances"])
                    return self._graphs[key]
            t = time.perf_counter()
            g = knn_graph(data, k, metric)
            self.timings["knn"] += time.perf_counter() - t
            if path is not None:
                from ..io import atomic_path

                with atomic_path(path, suffix=".npz") as tmp:
                    np.savez(tmp, indices=g[0], distances=g[1])
            self._graphs[key] = g
        return self._graphs[key]

    # -- reduction with caching --------------------------------------------------------------
    def reduce(self, params: dict, level: str = "full") -> np.ndarray:
        reducer, _, _ = make_stages(params, self.n, self.seed)
        rp = reducer.get_params()
        key = json.dumps({"level": level, "data": self.fingerprint, **rp}, sort_keys=True, default=str)
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
            idx, dist = self.graph(level, rp["metric"])
            nn = int(min(rp["n_neighbors"], max(2, len(data) - 1)))
            Z = reducer.fit(data, precomputed_knn=(idx[:, :nn], dist[:, :nn])).embedding_
            self.stats["umap_fits"] += 1
            if path is not None:
                from ..io import write_npy

                write_npy(path, Z)
        self._reduced[key] = Z
        while len(self._reduced) > self.max_cached:
            self._reduced.popitem(last=False)
        return Z

    def _zgraph(self, Z: np.ndarray, zkey: str, k_max: int):
        g = self._zknn.get(zkey)
        if g is None or g[0] < k_max or g[2] is not Z:
            g = (k_max, reduced_knn(Z, k_max), Z)
            self._zknn[zkey] = g
            while len(self._zknn) > 4:
                self._zknn.popitem(last=False)
        return g[1]

    # -- one trial ---------------------------------------------------------------------------
    def run(self, params: dict, level: str = "full", score: bool = True) -> TrialOutput:
        """Fit reduce -> outliers -> cluster with the shared work; labels -2/-1/>=0 + metrics."""
        from sklearn.neighbors import LocalOutlierFactor

        p = full_params(self.scale_params(params, level), self.size(level))
        t0 = time.perf_counter()
        Z = self.reduce(p, level)
        t1 = time.perf_counter()
        n = len(Z)
        keep = np.ones(n, dtype=bool)
        if p["outliers.method"] == "lof":
            k_space = self.space.max_of("outliers.n_neighbors", p["outliers.n_neighbors"])
            k_max = int(self.scale_params({"outliers.n_neighbors": k_space}, level)["outliers.n_neighbors"])
            k_max = max(k_max, int(p["outliers.n_neighbors"]))
            k = int(min(p["outliers.n_neighbors"], max(1, n - 1)))
            G = self._zgraph(Z, f"{id(Z)}", min(k_max, n - 1))
            lof = LocalOutlierFactor(n_neighbors=k, metric="precomputed",
                                     contamination=p["outliers.contamination"], novelty=True).fit(G)
            keep = ~(lof.negative_outlier_factor_ < lof.offset_)
        t2 = time.perf_counter()
        _, _, clusterer = make_stages(p, int(keep.sum()), self.seed)
        _clamp_cluster(clusterer, int(keep.sum()))
        labels = np.full(n, -1, dtype=np.int64)
        labels[~keep] = -2
        if keep.sum() >= 2:
            clusterer.fit(Z[keep])
            labels[keep] = clusterer.labels_
        t3 = time.perf_counter()
        m = {"level": level, "n_items": int(n), "params_used": p,
             "time_reduce_s": t1 - t0, "time_outliers_s": t2 - t1, "time_cluster_s": t3 - t2}
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


def score_labels(Z, X, labels, seed=0, silhouette_sample=5000, dbcv_sample=1000,
                 input_sample=3000) -> dict:
    """Every label-free score a trial records (see ``objectives`` for how they combine)."""
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
