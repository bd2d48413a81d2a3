"""Pipeline: reduce -> remove outliers -> cluster (-> assign noise) -> predict / save, one object.

Each stage is a scikit-learn style estimator passed to the constructor (or a registry name such
as ``"umap"`` / ``"pca"`` / ``"lof"`` / ``"hdbscan"``; ``None`` or ``"none"`` skips it). The
pipeline only composes them; the work lives in the stages.

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
2. find its ``predict_neighbors`` nearest reference items (exact, faiss ``IndexFlatL2``);
3. reduce: its reduced coordinates are the 1/d-weighted mean of the neighbours' coordinates
   (the same initialisation umap-learn's ``transform`` starts from);
4. outlier check: the fitted outlier stage's ``predict`` on those coordinates (-> ``-2``);
5. cluster: 1/d-weighted vote of the neighbours' labels (noise votes as noise); probability =
   vote share x the neighbours' membership probabilities. A training item's own copy dominates
   its vote, so predicting the training items reproduces their labels (tested >= 99%).

``reference_size`` keeps only a class-stratified sample of the training vectors inside the model
(smaller files, cost measured in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, clone

OUTLIER = -2
NOISE = -1
STATUS = ("clustered", "noise", "outlier")
# With an outlier stage, a new item whose mean distance to its nearest reference items exceeds
# this quantile of the training items' own (leave-self-out) distances is also an outlier.
NOVELTY_QUANTILE = 0.99
SMALL_QUERY = 64  # below this many query vectors the kNN search runs on one thread


def default_min_cluster_size(n: int) -> int:
    """min_cluster_size scaled to the collection.

    The source study used 500 at 50k items (1%); we keep 1% with floors so small collections
    still form clusters.
    """
    return int(max(5, min(1000, round(0.01 * n))))


def make_stage(kind: str, spec, params: dict | None = None):
    """Build a stage from a registry name (``kind`` = reducer / outliers / clusterer).

    ``spec`` may already be an estimator (returned as is, with ``params`` applied), ``None`` /
    ``"none"``, ``"auto"`` (resolved at fit time), or a name from the stage module's registry.
    Only names from these registries are accepted: a config can never import arbitrary code.
    """
    from .cluster import CLUSTERERS
    from .outliers import OUTLIERS
    from .reduce import REDUCERS

    registry = {"reducer": REDUCERS, "outliers": OUTLIERS, "clusterer": CLUSTERERS}[kind]
    params = dict(params or {})
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        if params:
            raise ValueError(f"{kind} 'none' takes no parameters, got {sorted(params)}")
        return None
    if isinstance(spec, str) and spec == "auto":
        if params:
            raise ValueError(f"{kind} 'auto' takes no parameters; name the stage to set {sorted(params)}")
        return "auto"
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        if key not in registry:
            raise ValueError(f"unknown {kind} {spec!r}; choose one of {sorted(registry)}")
        cls = registry[key]
        valid = cls().get_params()
        bad = sorted(set(params) - set(valid))
        if bad:
            raise ValueError(f"{kind} {spec!r} has no parameter(s) {bad}; valid: {sorted(valid)}")
        return cls(**params)
    if params:
        spec = clone(spec).set_params(**params)
    return spec


def _is_auto(x) -> bool:
    return isinstance(x, str) and x == "auto"


class Pipeline(BaseEstimator):
    """Compose a reducer, an outlier detector and a clusterer; assign noise; predict; save.

    Parameters
    ----------
    reducer : estimator, registry name, ``"auto"`` (UMAP 10 dims, 30 neighbours, min_dist 0,
        cosine) or None
    outliers : estimator, registry name (``"lof"``, ``"isolation_forest"``) or None
    clusterer : estimator, registry name or ``"auto"`` (K-means with k chosen by the silhouette
        curve, see :func:`auto_clusterer`)
    assign_noise : give noise and outliers their nearest cluster in ``cluster_`` / ``confidence_``
    predict_neighbors : neighbours voting in ``predict``
    reference_size : keep at most this many training vectors in the model (None = all)
    reference_dims : PCA dimensions of the stored reference vectors (None = keep all dims)
    random_state : seed passed on to the auto stages
    """

    def __init__(self, reducer="auto", outliers=None, clusterer="auto", assign_noise: bool = True,
                 predict_neighbors: int = 10, reference_size: int | None = None,
                 reference_dims: int | None = 128, random_state: int | None = 0):
        self.reducer = reducer
        self.outliers = outliers
        self.clusterer = clusterer
        self.assign_noise = assign_noise
        self.predict_neighbors = predict_neighbors
        self.reference_size = reference_size
        self.reference_dims = reference_dims
        self.random_state = random_state

    # -- building the stages ---------------------------------------------------------------
    def _resolve(self, n: int):
        from .reduce import UMAPReducer

        reducer = make_stage("reducer", self.reducer)
        if _is_auto(reducer):
            reducer = UMAPReducer(n_neighbors=min(30, max(2, n - 1)), n_components=10, min_dist=0.0,
                                  metric="cosine", random_state=self.random_state)
        elif reducer is not None:
            reducer = clone(reducer)
        outliers = make_stage("outliers", self.outliers)
        outliers = clone(outliers) if outliers is not None else None
        clusterer = make_stage("clusterer", self.clusterer)
        clusterer = auto_clusterer(n, self.random_state) if _is_auto(clusterer) else clone(clusterer)
        return reducer, outliers, clusterer

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None, precomputed_knn=None, embedding=None):
        """Fit every stage on ``X`` (n, d).

        ``precomputed_knn=(indices, distances)`` is passed to the reducer (UMAP reuses it);
        ``embedding`` (n, k) skips the reducer's fit and uses these reduced coordinates instead
        (e.g. a cached UMAP space; the reducer is then kept unfitted, for its parameters).
        """
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) < 3:
            raise ValueError(f"need a 2-D array of at least 3 vectors, got shape {X.shape}")
        n = len(X)
        self.timings_ = {}
        reducer, outliers, clusterer = self._resolve(n)
        t = time.perf_counter()
        if embedding is not None:
            Z = np.asarray(embedding)
            if Z.ndim != 2 or len(Z) != n:
                raise ValueError(f"embedding must be ({n}, k), got {Z.shape}")
        elif reducer is not None:
            Z = reducer.fit(X, precomputed_knn=precomputed_knn).embedding_
        else:
            Z = X
        Z = np.asarray(Z, dtype=np.float32)
        self.timings_["reduce"] = time.perf_counter() - t
        labels = np.full(n, NOISE, dtype=np.int64)
        probs = np.zeros(n, dtype=np.float64)
        keep = np.ones(n, dtype=bool)
        t = time.perf_counter()
        if outliers is not None:
            keep = ~outliers.fit(Z).outlier_mask_
        self.timings_["outliers"] = time.perf_counter() - t
        t = time.perf_counter()
        if keep.sum() >= 2:
            clusterer.fit(Z[keep])
            labels[keep] = clusterer.labels_
            probs[keep] = clusterer.probabilities_
        labels[~keep] = OUTLIER
        self.timings_["cluster"] = time.perf_counter() - t
        self.reducer_, self.outliers_, self.clusterer_ = reducer, outliers, clusterer
        self.embedding_ = Z
        self.labels_ = labels
        self.probabilities_ = np.where(labels >= 0, probs, 0.0)
        self.n_features_in_ = X.shape[1]
        t = time.perf_counter()
        self._assign()
        self.timings_["assign_noise"] = time.perf_counter() - t
        t = time.perf_counter()
        from .cluster import single_blas_thread

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

    def _assign(self):
        from .cluster import knn_vote

        lab = self.labels_
        self.cluster_ = lab.copy()
        self.confidence_ = self.probabilities_.copy()
        clustered = lab >= 0
        if not self.assign_noise or clustered.all() or not clustered.any():
            return
        Zc = self.embedding_[clustered]
        q = ~clustered
        c, share, _ = knn_vote(Zc, lab[clustered], self.embedding_[q], k=15)
        self.cluster_[q] = c
        self.confidence_[q] = share

    # -- the predictor: plain arrays, no pickled objects -----------------------------------------
    def _space(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"model expects {self.n_features_in_}-d vectors, got {X.shape[1]}-d "
                             "(was it fitted with another encoder?)")
        if self.ref_normalize_:
            X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        if self.ref_components_ is not None:
            X = (X - self.ref_mean_) @ self.ref_components_.T
        return np.ascontiguousarray(X, dtype=np.float32)

    def _fit_predictor(self, X):
        n, d = X.shape
        metric = getattr(self.reducer_, "metric", "euclidean")
        self.ref_normalize_ = bool(metric == "cosine")
        self.ref_components_ = None
        self.ref_mean_ = None
        dims = self.reference_dims
        if dims is not None and d > dims and n > dims:
            from sklearn.decomposition import PCA

            Xs = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12) if self.ref_normalize_ else X
            rng = np.random.default_rng(self.random_state)
            sub = rng.choice(n, size=min(n, 20000), replace=False) if n > 20000 else slice(None)
            pca = PCA(n_components=int(dims), svd_solver="randomized", random_state=self.random_state).fit(Xs[sub])
            self.ref_mean_ = pca.mean_.astype(np.float32)
            self.ref_components_ = pca.components_.astype(np.float32)
        self.ref_index_ = reference_sample(self.cluster_, self.reference_size, self.random_state)
        self.ref_vectors_ = self._space(X[self.ref_index_])
        self._build_index()
        # novelty: mean distance to the k nearest reference items, leave-self-out, on a sample
        k = int(max(1, min(self.predict_neighbors, len(self.ref_index_) - 1)))
        rng = np.random.default_rng(self.random_state)
        m = len(self.ref_index_)
        probe = rng.choice(m, size=min(m, 5000), replace=False)
        dist, _ = self._neighbours(self.ref_vectors_[probe], k + 1)
        self.novelty_threshold_ = np.asarray(float(np.quantile(dist[:, 1:].mean(axis=1), NOVELTY_QUANTILE)))

    def _build_index(self):
        import faiss

        self._faiss_ = faiss.IndexFlatL2(self.ref_vectors_.shape[1])
        self._faiss_.add(np.ascontiguousarray(self.ref_vectors_, dtype=np.float32))

    def _neighbours(self, Q: np.ndarray, k: int):
        import faiss

        # faiss parallelises over queries with OpenMP; for a few queries the threads only add
        # barrier waits (measured at load ~20: one query 77 ms with 2 threads, 1.4 ms with 1).
        if len(Q) < SMALL_QUERY:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                dist2, idx = self._faiss_.search(Q, k)
            finally:
                faiss.omp_set_num_threads(before)
        else:
            dist2, idx = self._faiss_.search(Q, k)
        return np.sqrt(np.maximum(dist2, 0.0)), idx

    def predict_details(self, X) -> dict:
        """Per item: ``labels`` (-2/-1/>=0), ``probabilities``, ``status``, ``cluster`` and
        ``confidence`` (nearest cluster even for noise/outliers), ``embedding`` (reduced coords)."""
        from .cluster import vote

        Q = self._space(X)
        k = int(max(1, min(self.predict_neighbors, len(self.ref_index_))))
        dist, idx = self._neighbours(Q, k)
        ri = self.ref_index_
        w = 1.0 / np.maximum(dist.astype(np.float64), 1e-9)
        w /= w.sum(axis=1, keepdims=True)
        emb = np.einsum("qk,qkd->qd", w, self.embedding_[ri][idx].astype(np.float64)).astype(np.float32)
        ref_lab = np.where(self.labels_[ri] == OUTLIER, NOISE, self.labels_[ri])
        labels, share, prob = vote(dist, idx, ref_lab, self.probabilities_[ri])
        proba = np.where(labels >= 0, share * prob, 0.0)
        if getattr(self, "outliers_", None) is not None:
            out = self.outliers_.predict(emb) | (dist.mean(axis=1) > float(np.ravel(self.novelty_threshold_)[0]))
            labels = np.where(out, OUTLIER, labels)
            proba = np.where(out, 0.0, proba)
        cluster, cshare, cconf = vote(dist, idx, self.cluster_[ri], self.confidence_[ri])
        conf = cshare * cconf
        if not self.assign_noise:
            cluster, conf = labels.copy(), proba.copy()
        return {"labels": labels, "probabilities": np.clip(proba, 0, 1), "status": status_of(labels),
                "cluster": cluster, "confidence": np.clip(conf, 0, 1), "embedding": emb}

    def predict(self, X) -> np.ndarray:
        """Labels (-2 outlier / -1 noise / >= 0 cluster) for new vectors, without refitting."""
        return self.predict_details(X)["labels"]

    def predict_proba(self, X) -> np.ndarray:
        """Membership probability of the predicted cluster (0 for noise / outliers)."""
        return self.predict_details(X)["probabilities"]

    def transform(self, X) -> np.ndarray:
        """Approximate reduced coordinates of new vectors (neighbour-weighted training coords)."""
        return self.predict_details(X)["embedding"]

    # -- persistence / tuning ---------------------------------------------------------------
    def save(self, path, overwrite: bool = False, metadata: dict | None = None) -> dict:
        """Write the fitted model as a directory of JSON + npz (no pickle); returns
        ``{"path", "bytes", "files"}``. ``metadata`` (JSON-able, e.g. the encoder name) is stored
        in model.json."""
        from .persist import save

        return save(self, path, overwrite=overwrite, metadata=metadata)

    def tune(self, X, **kwargs):
        """Thin delegate to :func:`mediacluster.tune.tune` starting from this pipeline."""
        from .tune import tune

        return tune(X, pipeline=self, **kwargs)


def status_of(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    return np.where(labels >= 0, "clustered", np.where(labels == OUTLIER, "outlier", "noise"))


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


def auto_clusterer(n: int, random_state=0):
    """The default clusterer for ``n`` items (chosen by benchmarks/default_search.py).

    K-means on the UMAP space with k chosen by the silhouette curve's best interior local
    maximum (``SilhouetteKMeansClusterer(selection="local_max")``), k in [2, min(30, n/10)].
    Plain UMAP+HDBSCAN (eom) merged CIFAR-10 into animals vs vehicles (NMI .31) and leaf
    selection over-split Imagenette (.83); see benchmarks/RESULTS.md for the table.
    """
    from .cluster import SilhouetteKMeansClusterer

    return SilhouetteKMeansClusterer(k_min=2, k_max=30, selection="local_max", min_size=10,
                                     random_state=random_state)


# -- configuration (CLI flags and YAML/JSON files) ---------------------------------------------
PIPELINE_KEYS = ("assign_noise", "predict_neighbors", "reference_size", "reference_dims", "random_state")


def parse_param(text: str) -> tuple[str, object]:
    """``"n_components=10"`` -> ``("n_components", 10)``; values parsed as YAML scalars
    (numbers, true/false, null, strings)."""
    import yaml

    if "=" not in text:
        raise ValueError(f"stage parameter {text!r} must look like name=value")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v) if v.strip() else None


def load_config(path) -> dict:
    """Read a YAML or JSON pipeline config (safe loader: no Python objects)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a pipeline config must be a mapping, e.g. 'reducer: {{name: umap}}'")
    return cfg


def pipeline_from_config(cfg: dict, **overrides) -> Pipeline:
    """Build a :class:`Pipeline` from a mapping such as::

        reducer: {name: umap, params: {n_components: 10, n_neighbors: 30}}
        outliers: {name: lof, params: {n_neighbors: 20, contamination: 0.02}}
        clusterer: {name: hdbscan, params: {min_cluster_size: 100, cluster_selection_method: leaf}}
        assign_noise: true

    A stage may also be a bare name (``reducer: pca``), ``auto`` or ``none``. Unknown keys,
    stage names or stage parameters are refused with a message naming them.
    """
    cfg = dict(cfg)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    known = {"reducer", "outliers", "clusterer", *PIPELINE_KEYS}
    bad = sorted(set(cfg) - known)
    if bad:
        raise ValueError(f"unknown pipeline config key(s) {bad}; valid: {sorted(known)}")
    stages = {}
    for kind in ("reducer", "outliers", "clusterer"):
        spec = cfg.get(kind, None if kind == "outliers" else "auto")
        params = {}
        if isinstance(spec, dict):
            extra = sorted(set(spec) - {"name", "params"})
            if extra or "name" not in spec:
                raise ValueError(f"{kind}: expected {{name: ..., params: {{...}}}}, got keys {sorted(spec)}")
            spec, params = spec["name"], dict(spec.get("params") or {})
        stages[kind] = make_stage(kind, spec, params)
    return Pipeline(**stages, **{k: cfg[k] for k in PIPELINE_KEYS if k in cfg})
