"""More like this: the fitted items nearest to new ones, or to an item of the collection
(``Pipeline.similar``, ``/v1/similar``, ``assign --similar``).

One search, the predictor's own (``NeighbourPredictor.search`` over its reference items),
restricted to a cluster at a level with faiss's ID selector for ``same_cluster``; a model saved
from a run names the neighbours by the ids and paths of ``model_items``, and finds an item of
its collection by its id (``ids=``: its stored vector is the query, the item itself left out).
What a product asks of the list is applied to the search's candidates, nearest first, fetching
more until ``k`` are kept or the items run out: ``exclude`` (ids), ``per_cluster`` (at most so
many of one cluster: a diverse list) and ``offset`` (the next page).
"""

from __future__ import annotations

import weakref

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .data import as_vectors
from .errors import InputError, ParameterError
from .model_items import missing_note


def _whole(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ParameterError(f"{name} must be a whole number >= {low}, got {value!r}", name)
    return int(value)


class _Lookups:
    """What this module keeps per fitted pipeline (:data:`_LOOKUPS`), never on the pipeline
    itself: ``items`` with ``where`` (id -> reference position, built once per read of
    ``items.json``), ``representatives`` (:func:`_representatives`) and ``duplicate_index``
    (one already loaded: :func:`use_duplicate_index`)."""

    __slots__ = ("items", "where", "representatives", "duplicate_index")

    def __init__(self):
        self.items = self.where = self.representatives = self.duplicate_index = None


#: per pipeline, gone with it (a service drops a version it no longer serves)
_LOOKUPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _lookups(pipe) -> _Lookups:
    got = _LOOKUPS.get(pipe)
    if got is None:
        got = _LOOKUPS[pipe] = _Lookups()
    return got


def use_duplicate_index(pipe, index) -> None:
    """Hand over the duplicate index of ``pipe``'s model already loaded (the service loads it
    with the version): :func:`item_positions` finds a repost by it rather than reading it again."""
    _lookups(pipe).duplicate_index = index


def item_positions(pipe, ids, collection_root=None) -> np.ndarray:
    """The reference positions (in ``predictor_.ref_index_``) of the collection items ``ids``
    (-1 for an id the model does not hold: not in its collection, or not searchable, e.g. left
    out of a ``reference_size`` sample). A member of a near-duplicate group of a model saved with
    ``cluster --dedup`` is found as its group's representative (the one item of the group the
    model searches), so "more like" a repost leaves out its original too. A model without its items' ids (fitted on bare vectors,
    saved before they were kept) is a ``ParameterError``: it can only be asked by vector."""
    items = pipe.model_items(collection_root)
    if items is None:
        missing = missing_note(getattr(pipe, "model_path_", None), getattr(pipe, "model_info_", None))
        if missing:
            raise ParameterError(missing, "ids")
        raise ParameterError("this model does not keep its items' ids (fitted on bare vectors, or saved "
                             "before they were kept): ask by vector, or save the model from a run "
                             "(cluster --save-model)", "ids")
    got = _lookups(pipe)
    where = got.where
    if where is None or got.items is not items:  # built once per read of items.json
        where = {v: p for p, v in reversed(list(enumerate(items.ids)))}
        got.items, got.where = items, where
    pos = np.asarray([where.get(str(i), -1) for i in ids], dtype=np.int64)
    if (pos < 0).any():  # a near-duplicate's member is found as its group's representative
        reps = _representatives(pipe)
        for j in np.flatnonzero(pos < 0):
            rep = reps.get(str(ids[j]))
            pos[j] = -1 if rep is None else where.get(rep, -1)
    return pos


def _representatives(pipe) -> dict[str, str]:
    """member id -> its near-duplicate group's representative id, from the model's duplicate
    index (``cluster --dedup --save-model``: only the representative of a group is a reference
    item); {} for a model without one. Read once per model (the service hands over the index it
    loaded: :func:`use_duplicate_index`)."""
    got = _lookups(pipe)
    if got.representatives is not None:
        return got.representatives
    index = got.duplicate_index
    folder = getattr(pipe, "model_path_", None)
    if index is None and folder is not None:
        # imported here: the duplicate finder's modules are needed only by a model saved with --dedup
        from .duplicates.index import read_from_model

        index = read_from_model(folder)
    reps = {}
    if index is not None and index.representative is not None:
        ids = index.ids
        reps = {str(ids[m]): str(ids[r]) for m, r in enumerate(index.representative.tolist()) if 0 <= r != m}
    got.representatives = reps
    return reps


def similar(pipe, X=None, k: int = 10, same_cluster: bool = False, level=None, details: dict | None = None,
            collection_root=None, *, ids=None, exclude=None, offset: int = 0,
            per_cluster: int | None = None) -> dict:
    """Each query's ``k`` nearest fitted items, nearest first. The queries are new vectors
    ``X``, or items of the model's collection by their ``ids`` (as ``items.json`` names them:
    ``model_items``; each item's stored vector is the query and the item itself is never among
    its neighbours, nor, for a model fitted with near-duplicate groups, its group, which is one
    item; an id the model does not hold is an ``InputError`` naming it, see
    :func:`item_positions` for asking which).

    The search is the predictor's own (``NeighbourPredictor.search``: its faiss index
    over the reference items, for a cosine model the L2-normalised vectors projected on
    ``reference_dims`` principal axes; recall against exact cosine search over the full
    vectors is measured in benchmarks/RESULTS.md, "More like this"). Only reference items
    are found: all distinct fitted items unless ``reference_size`` keeps a sample (exact
    copies of a row are one item, found by the first of them; so are the members of a
    near-duplicate group of a model fitted with ``duplicates=``, ``cluster --dedup``); ``k``
    is at most their number.

    ``same_cluster``: only items of the query's cluster at ``level`` (a new item's ``cluster``
    as ``predict_details`` answers it: noise assigned to its nearest cluster; an item in no
    cluster then gets no neighbours). ``level``: a level of the model's tree (default the
    level in use); a flat model has level 0 only. ``exclude``: ids of items never to answer
    (ids the model does not hold are ignored). ``per_cluster``: at most this many neighbours
    of one cluster at ``level`` (noise counts as one cluster), so a list is not ten items of one
    kind. ``offset``: skip the first ``offset`` neighbours that pass these filters (the next
    page: ``offset=k``). ``details``: this ``X``'s ``predict_details`` when the caller has it
    already. ``collection_root``: where the model's collection is now (the paths of a model
    saved from a run, see :meth:`Pipeline.model_items`).

    Returns ``rows`` (m, k) the neighbours' rows of the fitted items, ``distances`` (in the
    predictor's space), ``similarities`` (cosine similarity, ``1 - d**2 / 2`` of unit
    vectors; for a correlation model that of the mean-centred vectors, their correlation;
    NaN for a model that is neither), ``clusters`` (their cluster at the level),
    with -1 / inf / NaN / -1 in slots that no item fills (``same_cluster`` and a cluster of
    fewer than ``k``, filters that leave fewer, a page past the end); ``ids`` / ``paths``
    (lists of lists of the filled slots) for a model saved from a run (None for one fitted on
    bare vectors); ``cluster`` (m,) each query's cluster at the level; ``level`` (None for a
    flat model); ``details`` (the ``predict_details`` used; None for ``ids``); ``query_rows``
    (m,) the fitted rows of the ``ids`` asked for (None for ``X``)."""
    check_is_fitted(pipe, "predictor_")
    k = _whole(k, "k", 1)
    offset = _whole(offset, "offset", 0)
    cap = None if per_cluster is None else _whole(per_cluster, "per_cluster", 1)
    if (X is None) == (ids is None):
        raise ParameterError("give either new vectors (X) or the ids of the collection's items (ids), "
                             "not both", "ids" if X is not None else "X")
    lv = pipe.level_index(level)
    at_level = lv is None or lv == pipe.level_
    fitted = np.asarray(pipe.cluster_ if at_level else pipe.levels_[lv])
    pred = pipe.predictor_
    det, query_rows, own = None, None, None
    if ids is not None:
        ids = [ids] if isinstance(ids, str) else list(ids)
        own = item_positions(pipe, ids, collection_root)
        if (own < 0).any():
            bad = int(np.flatnonzero(own < 0)[0])
            raise InputError(f"ids[{bad}] {str(ids[bad])[:200]!r} is not an item this model can search "
                             f"({int((own < 0).sum())} of {len(ids)} ids are not; only the items the model "
                             "keeps as its reference set are found, see items.json)")
        query_rows = pred.ref_index_[own]
        Q = np.ascontiguousarray(pred.ref_vectors_[own], dtype=np.float32)
        qc = fitted[query_rows]
    else:
        det = pipe.predict_details(X) if details is None else details
        X = as_vectors(X)
        X = X[None, :] if X.ndim == 1 else X
        Q = pred.transform(X, "refuse")
        qc = np.asarray(det["cluster"] if at_level else det["path"]["labels"][lv])
    drop = [set() for _ in range(len(Q))]
    if own is not None:
        for i, p in enumerate(own):
            drop[i].add(int(p))
    if exclude is not None:
        gone = item_positions(pipe, [exclude] if isinstance(exclude, str) else list(exclude), collection_root)
        for s in drop:
            s.update(int(p) for p in gone[gone >= 0])
    ref_cluster = fitted[pred.ref_index_]
    kk = int(min(k, len(pred.ref_index_)))
    if not same_cluster:
        dist, pos = _pick(pred, Q, kk, offset, None, drop, cap, ref_cluster)
    else:
        dist = np.full((len(Q), kk), np.inf, np.float32)
        pos = np.full((len(Q), kk), -1, np.int64)
        for c in np.unique(qc):
            if c < 0:
                continue
            q = np.flatnonzero(qc == c)
            d, p = _pick(pred, Q[q], kk, offset, np.flatnonzero(ref_cluster == c), [drop[i] for i in q], cap,
                         ref_cluster)
            dist[q], pos[q] = d, p
    found = pos >= 0
    rows = np.where(found, pred.ref_index_[np.maximum(pos, 0)], -1)
    sims = (np.clip(1.0 - dist.astype(np.float64) ** 2 / 2.0, -1.0, 1.0) if pred.ref_normalize_
            else np.full(dist.shape, np.nan))
    out = {"rows": rows, "distances": dist, "similarities": np.where(found, sims, np.nan),
           "clusters": np.where(found, fitted[np.maximum(rows, 0)], -1), "ids": None, "paths": None,
           "cluster": qc, "level": lv, "details": det, "query_rows": query_rows}
    items = pipe.model_items(collection_root)
    if items is not None:
        out["ids"] = [[items.ids[p] for p in r[r >= 0]] for r in pos]
        out["paths"] = None if items.paths is None else [[items.paths[p] for p in r[r >= 0]] for r in pos]
    return out


def _pick(pred, Q: np.ndarray, k: int, offset: int, among, drop: list[set], cap: int | None,
          ref_cluster: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, positions)`` (m, k): per query the neighbours ``offset .. offset + k - 1``
    among those not in its ``drop`` set and, with ``cap``, not past ``cap`` of one cluster
    (``ref_cluster`` by position), nearest first; unfilled slots -1 / inf. The search fetches as
    many candidates as the filters can cost, and four times more while a query is short and
    more items are left."""
    m = len(Q)
    dist = np.full((m, k), np.inf, np.float32)
    pos = np.full((m, k), -1, np.int64)
    if m == 0:
        return dist, pos
    avail = len(pred.ref_index_) if among is None else len(among)
    need = offset + k
    fetch = need + max(len(s) for s in drop)
    if cap is not None:
        fetch = max(fetch, 2 * need)
    todo = np.arange(m)
    while len(todo):
        fetch = int(min(fetch, avail))
        d, p = pred.search(Q[todo], max(fetch, 1), among=among)
        short = []
        for j, i in enumerate(todo):
            keep = p[j] >= 0
            if drop[i]:
                keep &= ~np.isin(p[j], list(drop[i]))
            sel = np.flatnonzero(keep)
            if cap is not None and len(sel):
                sel = sel[_rank_within(ref_cluster[p[j, sel]]) < cap]
            if len(sel) < need and fetch < avail:
                short.append(i)
                continue
            sel = sel[offset:need]
            dist[i, :len(sel)], pos[i, :len(sel)] = d[j, sel], p[j, sel]
        todo = np.asarray(short, dtype=np.int64)
        fetch *= 4
    return dist, pos


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements share its group (0 for the first of each)."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    out = np.empty(len(g), dtype=np.int64)
    out[order] = rank
    return out
