"""More like this: the fitted items nearest to new ones (``Pipeline.similar``, ``/v1/similar``,
``assign --similar``).

One search, the predictor's own (``NeighbourPredictor.kneighbors`` over its reference items),
restricted to a cluster at a level with faiss's ID selector for ``same_cluster``; a model saved
from a run names the neighbours by the ids and paths of ``model_items``.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .data import as_vectors
from .errors import ParameterError


def similar(pipe, X, k: int = 10, same_cluster: bool = False, level=None, details: dict | None = None,
            collection_root=None) -> dict:
    """Each new vector's ``k`` nearest fitted items, nearest first.

    The search is the predictor's own (``NeighbourPredictor.kneighbors``: its faiss index
    over the reference items, for a cosine model the L2-normalised vectors projected on
    ``reference_dims`` principal axes; recall against exact cosine search over the full
    vectors is measured in benchmarks/RESULTS.md, "More like this"). Only reference items
    are found: all distinct fitted items unless ``reference_size`` keeps a sample (exact
    copies of a row are one item, found by the first of them); ``k`` is at most their
    number.

    ``same_cluster``: only items of the new item's cluster at ``level`` (its ``cluster``
    as ``predict_details`` answers it: noise assigned to its nearest cluster; an item in no
    cluster then gets no neighbours). ``level``: a level of the model's tree (default the
    level in use); a flat model has level 0 only. ``details``: this ``X``'s
    ``predict_details`` when the caller has it already. ``collection_root``: where the
    model's collection is now (the paths of a model saved from a run, see
    :meth:`Pipeline.model_items`).

    Returns ``rows`` (m, k) the neighbours' rows of the fitted items, ``distances`` (in the
    predictor's space), ``similarities`` (cosine similarity, ``1 - d**2 / 2`` of unit
    vectors; for a correlation model that of the mean-centred vectors, their correlation;
    NaN for a model that is neither), ``clusters`` (their cluster at the level),
    with -1 / inf / NaN / -1 in slots that no item fills (``same_cluster`` and a cluster of
    fewer than ``k``); ``ids`` / ``paths`` (lists of lists of the filled slots) for a model
    saved from a run (None for one fitted on bare vectors); ``cluster`` (m,) each new
    item's cluster at the level; ``level`` (None for a flat model); ``details`` (the
    ``predict_details`` used)."""
    check_is_fitted(pipe, "predictor_")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ParameterError(f"k must be a whole number >= 1, got {k!r}", "k")
    lv = pipe.level_index(level)
    det = pipe.predict_details(X) if details is None else details
    X = as_vectors(X)
    X = X[None, :] if X.ndim == 1 else X
    at_level = lv is None or lv == pipe.level_
    qc = np.asarray(det["cluster"] if at_level else det["path"]["labels"][lv])
    fitted = np.asarray(pipe.cluster_ if at_level else pipe.levels_[lv])
    pred = pipe.predictor_
    kk = int(min(k, len(pred.ref_index_)))
    if not same_cluster:
        dist, pos = pred.kneighbors(X, kk)
    else:
        dist = np.full((len(X), kk), np.inf, np.float32)
        pos = np.full((len(X), kk), -1, np.int64)
        ref_cluster = fitted[pred.ref_index_]
        for c in np.unique(qc):
            if c < 0:
                continue
            q = np.flatnonzero(qc == c)
            d, p = pred.kneighbors(X[q], kk, among=np.flatnonzero(ref_cluster == c))
            dist[q, :d.shape[1]], pos[q, :p.shape[1]] = d, p
    found = pos >= 0
    rows = np.where(found, pred.ref_index_[np.maximum(pos, 0)], -1)
    sims = (np.clip(1.0 - dist.astype(np.float64) ** 2 / 2.0, -1.0, 1.0) if pred.ref_normalize_
            else np.full(dist.shape, np.nan))
    out = {"rows": rows, "distances": dist, "similarities": np.where(found, sims, np.nan),
           "clusters": np.where(found, fitted[np.maximum(rows, 0)], -1), "ids": None, "paths": None,
           "cluster": qc, "level": lv, "details": det}
    items = pipe.model_items(collection_root)
    if items is not None:
        out["ids"] = [[items.ids[p] for p in r[r >= 0]] for r in pos]
        out["paths"] = None if items.paths is None else [[items.paths[p] for p in r[r >= 0]] for r in pos]
    return out
