"""EVoC (``pip install evoc``) as a clusterer whose layers are our nested levels.

EVoC (Embedding Vector Oriented Clustering, by the UMAP / HDBSCAN author) reduces and clusters
raw embedding vectors in one step, so this stage is fitted on the *input* vectors (use it with
``reducer=None``). Its ``cluster_layers_`` come from one condensed tree but are not exactly
nested once noise is involved, so they are made nested here:

1. the finest layer's noise items take the cluster most of their EVoC neighbours (EVoC's own
   ``nn_inds_``) belong to, by a distance-weighted vote;
2. each coarser layer is rebuilt from the finer one: every fine cluster goes, whole, to the
   coarse cluster that most of its members were in (noise not counting); a fine cluster whose
   members were all noise in the coarse layer goes where most of its members' EVoC neighbours
   were (or, with none clustered, starts a coarse cluster of its own).

``level="auto"`` is EVoC's own choice (its most persistent layer); ``level_scores_`` holds
EVoC's persistence score of each layer. The interface is that of
``mediacluster.stages.hierarchy.HierarchyClusterer`` (``levels_``, ``parents_``, ``labels_``,
``probabilities_``, ``predict_path``, ``to_arrays``); predicting needs the input vectors of the
training items, which the stage keeps.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from .hierarchy import (
    LEVEL,
    SHARE,
    VOTE_NEIGHBORS,
    LevelsMixin,
    check_share,
    select_level,
    validate_input,
    vote_path,
)
from .registry import SEED, Float, Int, register


@register("clusterer", "evoc", params={
    "level": LEVEL,
    "noise_level": Float(0.0, 1.0, tune={"float": [0.0, 1.0]}),
    "base_min_cluster_size": Int(2, tune={"int": [2, 50], "log": True}, scale=True),
    "n_neighbors": Int(2, tune={"int": [5, 50], "log": True}),
    "min_samples": Int(1, tune={"int": [2, 20], "log": True}),
    "n_epochs": Int(1),
    "max_layers": Int(1),
    "max_unclustered": SHARE,
    "random_state": SEED,
})
class EVoCClusterer(LevelsMixin, ClusterMixin, BaseEstimator):
    """EVoC's layers as nested levels (coarse -> fine); fitted on the raw vectors.

    Parameters are EVoC's (see ``evoc.EVoC``): ``noise_level``, ``base_min_cluster_size``,
    ``n_neighbors``, ``min_samples``, ``n_epochs``, ``max_layers``; ``level`` is ``"auto"``
    (EVoC's most persistent layer) or an index into ``levels_``; ``max_unclustered`` is the share
    of items that may stay noise in ``labels_`` (EVoC's own noise at the chosen layer, the
    weakest memberships first; 0 assigns all); ``random_state`` makes EVoC reproducible.
    """

    def __init__(self, level="auto", noise_level: float = 0.5, base_min_cluster_size: int = 5,
                 n_neighbors: int = 15, min_samples: int = 5, n_epochs: int = 50,
                 max_layers: int = 10, max_unclustered: float = 0.0, random_state: int | None = 0):
        self.level = level
        self.noise_level = noise_level
        self.base_min_cluster_size = base_min_cluster_size
        self.n_neighbors = n_neighbors
        self.min_samples = min_samples
        self.n_epochs = n_epochs
        self.max_layers = max_layers
        self.max_unclustered = max_unclustered
        self.random_state = random_state

    def _check_params(self, prefix=None):
        check_share(self.max_unclustered, f"{prefix}__max_unclustered" if prefix else f"{type(self).__name__}.max_unclustered")

    def fit(self, X, y=None):
        import evoc  # optional heavy import (numba kernels): only when this stage is used

        X = validate_input(self, X, reset=True)
        n = len(X)
        self._train_ = X
        self._build_index()
        if len(np.unique(X, axis=0)) == 1:
            self._single(n)
            return self
        nn = int(min(self.n_neighbors, n - 1))
        # EVoC's node embedding has min(max(nn // 4, 4), 15) dimensions, initialised by a PCA of
        # the data: never more than the data has (few-feature inputs)
        dim = int(min(min(max(nn // 4, 4), 15), X.shape[1], n))
        model = evoc.EVoC(node_embedding_dim=dim, noise_level=float(self.noise_level),
                          base_min_cluster_size=int(self.base_min_cluster_size), n_neighbors=nn,
                          min_samples=int(min(self.min_samples, n - 1)), n_epochs=int(self.n_epochs),
                          max_layers=int(self.max_layers), random_state=self.random_state)
        model.fit(X)
        self.evoc_ = model
        layers = [np.asarray(lay, dtype=np.int64) for lay in model.cluster_layers_]  # fine -> coarse
        strengths = [np.asarray(s, dtype=np.float64) for s in model.membership_strength_layers_]
        scores = np.asarray(model.persistence_scores_, dtype=np.float64)
        keep = [i for i, lay in enumerate(layers) if (lay >= 0).any()]
        if not keep:
            self._single(n)
            return self
        layers = [layers[i] for i in keep]
        strengths = [strengths[i] for i in keep]
        scores = scores[keep]
        self.raw_layers_ = layers
        nested = _nest(layers, np.asarray(model.nn_inds_), np.asarray(model.nn_dists_), X)
        # coarse -> fine, drop layers that repeat the cluster count of a finer one
        order = list(range(len(nested)))[::-1]
        levels, lev_scores, raw_idx, counts = [], [], [], []
        for i in order:
            k = int(nested[i].max()) + 1
            if counts and k == counts[-1]:
                levels[-1], lev_scores[-1], raw_idx[-1] = nested[i], scores[i], i
                continue
            levels.append(nested[i])
            lev_scores.append(scores[i])
            raw_idx.append(i)
            counts.append(k)
        self.levels_ = np.asarray(levels, dtype=np.int64)
        self.parents_ = [_parent_map(self.levels_[lv], self.levels_[lv + 1])
                         for lv in range(len(self.levels_) - 1)]
        self.n_clusters_per_level_ = np.asarray(counts)
        self.level_scores_ = np.asarray(lev_scores)
        best_raw = int(np.argmax(scores)) if len(scores) > 1 else 0
        best_k = int(nested[best_raw].max()) + 1
        self.auto_level_ = int(np.flatnonzero(self.n_clusters_per_level_ == best_k)[0])
        self._raw_index_ = raw_idx
        self.unclustered_layers_ = [layers[i] < 0 for i in raw_idx]
        self._strengths_ = [strengths[i] for i in raw_idx]
        self._probabilities()
        self._select()
        return self

    def _single(self, n):
        self.levels_ = np.zeros((1, n), dtype=np.int64)
        self.parents_ = []
        self.n_clusters_per_level_ = np.array([1])
        self.level_scores_ = np.zeros(1)
        self.auto_level_ = 0
        self.unclustered_layers_ = [np.zeros(n, bool)]
        self._strengths_ = [np.ones(n)]
        self.level_probabilities_ = np.ones((1, n))
        self._select()

    def _probabilities(self):
        # EVoC's membership strength where the item was a member, else the neighbour vote share
        P = np.zeros(self.levels_.shape)
        idx = np.asarray(self.evoc_.nn_inds_)[:, 1:]
        for lv, lab in enumerate(self.levels_):
            share = (lab[idx] == lab[:, None]).mean(axis=1) if idx.shape[1] else np.ones(len(lab))
            P[lv] = np.where(self.unclustered_layers_[lv], share, np.clip(self._strengths_[lv], 0, 1))
        self.level_probabilities_ = P

    def _select(self):
        select_level(self, self.unclustered_layers_[self.auto_level_ if self.level == "auto"
                                                    else min(int(self.level), len(self.levels_) - 1)])

    def _build_index(self):
        import faiss  # the cosine neighbours of new vectors among the training vectors

        R = self._train_ / np.maximum(np.linalg.norm(self._train_, axis=1, keepdims=True), 1e-12)
        self._faiss_ = faiss.IndexFlatIP(R.shape[1])
        self._faiss_.add(np.ascontiguousarray(R, dtype=np.float32))

    def __getstate__(self):  # a faiss index does not pickle; it is rebuilt from the vectors
        state = dict(self.__dict__)
        state.pop("_faiss_", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "_train_" in state:
            self._build_index()

    def _path(self, X):
        """Root-to-leaf path of new vectors: top-down vote of their nearest training vectors
        (cosine)."""
        Qn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        k = int(min(VOTE_NEIGHBORS, len(self._train_)))
        sim, idx = self._faiss_.search(np.ascontiguousarray(Qn, dtype=np.float32), k)
        return vote_path(np.maximum(1.0 - sim, 0.0), idx, self.levels_, self.parents_)


def _parent_map(coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    par = np.zeros(int(fine.max()) + 1, np.int64)
    par[fine] = coarse
    return par


def assign_noise_by_neighbours(labels: np.ndarray, nn_inds: np.ndarray, nn_dists: np.ndarray,
                               X: np.ndarray | None = None) -> np.ndarray:
    """``labels`` with every noise item (< 0) given the distance-weighted majority cluster of
    its clustered neighbours (``nn_inds`` / ``nn_dists``, column 0 the item itself), in rounds
    (an item whose neighbours are all noise waits for them). Items no round reaches (their
    whole neighbourhood is noise) take the vote of their 15 nearest clustered items among the
    vectors ``X`` (cosine), or, without ``X``, form one cluster each."""
    lab_all = np.asarray(labels, dtype=np.int64).copy()
    for _ in range(len(lab_all)):
        q = np.flatnonzero(lab_all < 0)
        if not len(q):
            break
        idx, dist = nn_inds[q, 1:], nn_dists[q, 1:].astype(np.float64)
        lab = lab_all[idx]
        w = np.where(lab >= 0, 1.0 / np.maximum(dist, 1e-9), 0.0)
        ok = w.sum(axis=1) > 0
        if not ok.any():
            if X is not None and (lab_all >= 0).any():
                from .cluster import knn_vote

                V = np.asarray(X, dtype=np.float32)
                V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
                c = lab_all >= 0
                lab_all[q] = knn_vote(V[c], lab_all[c], V[q], k=VOTE_NEIGHBORS)[0]
            else:
                lab_all[q] = lab_all.max() + 1 + np.arange(len(q))
            break
        K = int(lab_all.max()) + 1
        rows = np.repeat(np.arange(len(q)), lab.shape[1])
        tally = np.bincount(rows * K + np.maximum(lab, 0).ravel(), weights=w.ravel(),
                            minlength=len(q) * K).reshape(len(q), K)
        lab_all[q[ok]] = tally[ok].argmax(axis=1)
    return lab_all


def _nest(layers: list[np.ndarray], nn_inds: np.ndarray, nn_dists: np.ndarray,
          X: np.ndarray | None = None) -> list[np.ndarray]:
    """Nested versions of EVoC's layers (``layers[0]`` finest), every item assigned."""
    fine = assign_noise_by_neighbours(layers[0], nn_inds, nn_dists, X)
    fine = np.unique(fine, return_inverse=True)[1].ravel()
    out = [fine]
    for coarse in layers[1:]:
        prev = out[-1]
        K = int(prev.max()) + 1
        par = np.full(K, -1, np.int64)
        nxt = int(coarse.max()) + 1
        for c in range(K):
            members = coarse[prev == c]
            members = members[members >= 0]
            if not len(members):  # all noise there: the coarse cluster of the members' neighbours
                members = coarse[nn_inds[prev == c, 1:].ravel()]
                members = members[members >= 0]
            if len(members):
                par[c] = np.bincount(members).argmax()
            else:
                par[c] = nxt
                nxt += 1
        lab = par[prev]
        out.append(np.unique(lab, return_inverse=True)[1].ravel())
    return out
