"""A fitted pipeline's levels: the tree's state on the pipeline and every question about it.

The functions take the fitted :class:`~mediacluster.pipeline.Pipeline` (``pipe``) and read or
set its level attributes: ``levels_`` (n_levels, n) row 0 coarsest, ``level_probabilities_``,
``parents_``, ``n_clusters_per_level_``, ``auto_level_`` and ``level_`` (the level in use);
``labels_`` / ``probabilities_`` follow the level in use. ``Pipeline`` keeps the public methods
(``set_level``, ``level_with``, ``level_table``, ``level_index``) and delegates here; noise
assignment (``cluster_``) and the predictor's votes stay with the pipeline, which redoes them
after a level changes. How the tree is saved and read back: ``pipeline_model``.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .errors import InputError, ParameterError
from .stages import registry
from .stages.cluster import knn_vote
from .stages.hierarchy import tree_above

#: the pipeline's ``level`` parameter: "auto" or a level index (0 = coarsest)
LEVEL = registry.Int(0, extra=("auto",))


def is_auto(x) -> bool:
    """Whether a parameter is the word ``"auto"`` (a level, a reducer, a clusterer)."""
    return isinstance(x, str) and x == "auto"


def fit_path(clusterer, Z, keep):
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


def clear(pipe) -> None:
    """No levels (a flat fit, or before a fit)."""
    pipe.levels_ = pipe.level_probabilities_ = pipe.n_clusters_per_level_ = None
    pipe.parents_ = []
    pipe.auto_level_ = pipe.level_ = None


def set_path(pipe, path) -> None:
    """The fitted levels from ``path`` (:func:`fit_path`'s tuple; None: the clusterer has no levels)."""
    if path is None:
        clear(pipe)
        return
    L, P, parents, auto, level = path
    pipe.levels_ = np.asarray(L, dtype=np.int64)
    pipe.level_probabilities_ = np.clip(np.asarray(P, dtype=np.float64), 0.0, 1.0)
    pipe.parents_ = [np.asarray(p, dtype=np.int64) for p in parents]
    pipe.n_clusters_per_level_ = np.array([int(lv.max()) + 1 for lv in pipe.levels_], dtype=np.int64)
    pipe.auto_level_, pipe.level_ = int(auto), int(level)


def bound_unclustered(pipe) -> None:
    """At most ``max_unclustered`` of the items stay noise or outlier in ``labels_``: the
    others with the strongest pull toward a cluster get it (their cluster on the fitted
    level's path with a hierarchy, else a vote of their 15 nearest clustered items in the
    reduced space)."""
    mu = pipe.max_unclustered
    lab = pipe.labels_
    un = lab < 0
    budget = int(np.floor(float(mu) * len(lab))) if mu is not None else None
    if budget is None or un.sum() <= budget or un.all():
        return
    q = np.flatnonzero(un)
    if pipe.levels_ is not None:
        c, share = pipe.levels_[pipe.level_][q], pipe.level_probabilities_[pipe.level_][q]
    else:
        c, share, _ = knn_vote(pipe.embedding_[~un], lab[~un], pipe.embedding_[q], k=15)
    take = np.argsort(-share, kind="stable")[:int(un.sum() - budget)]
    pipe.labels_ = lab.copy()
    pipe.labels_[q[take]] = c[take]
    pipe.probabilities_ = pipe.probabilities_.copy()
    pipe.probabilities_[q[take]] = np.clip(share[take], 0.0, 1.0)


def set_level(pipe, level) -> None:
    """``Pipeline.set_level`` up to the noise assignment and the predictor's votes (the pipeline
    redoes those): switch the flat labelling (``labels_``, what ``predict`` answers) to
    another level of the fitted tree without refitting: ``"auto"`` or a level index
    (0 = coarsest). Items left unclustered (noise, outliers) stay so. A loaded model saved
    with ``names_by_level`` switches ``model_info_["metadata"]["names"]`` to that level's."""
    check_is_fitted(pipe, "embedding_")
    if pipe.levels_ is None:
        raise ParameterError(f"level={level!r}: this model's clusterer has no levels", "level")
    LEVEL.check(level, "level")
    lv = pipe.auto_level_ if is_auto(level) else int(level)
    if lv >= len(pipe.levels_):
        raise ParameterError(f"level={lv} is out of range: this fit has {len(pipe.levels_)} levels "
                             f"(0..{len(pipe.levels_) - 1}, cluster counts "
                             f"{pipe.n_clusters_per_level_.tolist()})", "level")
    pipe.level = level
    pipe.level_ = int(lv)
    switch_names(pipe, lv)
    un = pipe.labels_ < 0
    pipe.labels_ = np.where(un, pipe.labels_, pipe.levels_[lv]).astype(np.int64)
    pipe.probabilities_ = np.where(un, 0.0, pipe.level_probabilities_[lv])


def level_with(pipe, n_clusters: int) -> int:
    """Index of the fitted level whose cluster count is closest to ``n_clusters`` (the
    coarser on a tie), e.g. ``pipe.set_level(pipe.level_with(6))``; also on a loaded model."""
    check_is_fitted(pipe, "embedding_")
    if pipe.levels_ is None:
        raise ParameterError("this model's clusterer has no levels (use clusterer hierarchy or evoc)",
                             "clusterer")
    LEVEL.check(n_clusters, "n_clusters")
    counts = np.array([t["n_clusters"] for t in level_table(pipe)])  # clusters with items
    return int(np.argmin(np.abs(counts - int(n_clusters))))


def switch_names(pipe, lv: int) -> None:
    """A loaded model's ``metadata.names`` become level ``lv``'s (``names_by_level``, saved
    with it). A model saved before every level was named knows the names of its saved level
    only: the others get none rather than another level's."""
    info = getattr(pipe, "model_info_", None)
    meta = info.get("metadata") if isinstance(info, dict) else None
    if not isinstance(meta, dict):
        return
    by_level = meta.get("names_by_level")
    saved = (info.get("levels") or {}).get("level")
    if by_level is None:
        by_level = meta["names_by_level"] = ({} if saved is None else
                                             {str(int(saved)): dict(meta.get("names") or {})})
    meta["names"] = dict(by_level.get(str(int(lv)), {}))
    # how sure those names are switches with them (absent from models saved before it was kept)
    sup_by = meta.get("names_support_by_level")
    if sup_by is None and "names_support" in meta:
        sup_by = meta["names_support_by_level"] = ({} if saved is None else
                                                   {str(int(saved)): dict(meta["names_support"])})
    if sup_by is not None:
        meta["names_support"] = dict(sup_by.get(str(int(lv)), {}))


def level_table(pipe) -> list[dict]:
    """Per level, coarse to fine: ``level``, ``n_clusters`` (clusters with items: a curated
    tree's finest level keeps the studio's ids, with gaps), ``sizes`` (items per cluster id)
    and ``parents`` (each cluster's parent in the level above; None for level 0)."""
    if pipe.levels_ is None:
        return []
    out = []
    for lv, row in enumerate(pipe.levels_):
        k = int(pipe.n_clusters_per_level_[lv])
        sizes = np.bincount(row, minlength=k)
        out.append({"level": lv, "n_clusters": int((sizes > 0).sum()), "auto": lv == pipe.auto_level_,
                    "chosen": lv == pipe.level_,
                    "sizes": sizes.astype(int).tolist(),
                    "parents": None if lv == 0 else pipe.parents_[lv - 1].astype(int).tolist()})
    return out


def level_index(pipe, level) -> int | None:
    """``level`` checked against the fitted tree (None: the level in use; None for a flat
    model, whose only level is 0)."""
    levels = getattr(pipe, "levels_", None)
    if level is None:
        return None if levels is None else int(pipe.level_)
    if isinstance(level, bool) or not isinstance(level, int | np.integer):
        raise ParameterError(f"level must be a whole number, got {level!r}", "level")
    if levels is None:
        if level == 0:
            return None
        raise ParameterError(f"level {level}: this model is flat (its clusterer has no levels; level 0 only)",
                             "level")
    if not 0 <= level < len(levels):
        raise ParameterError(f"level {level} is not a level of this model (0..{len(levels) - 1}, coarse "
                             "to fine)", "level")
    return int(level)


def levels_above(pipe, levels, junk, tree=None) -> bool:
    """``fit_labels``' tree: the given labels (noise given its nearest cluster) as the finest
    level under the coarser ``levels``, or the given ``tree`` (see ``Pipeline.fit_labels``);
    False when no level is kept above them (a flat model). The caller assigns noise after."""
    n = len(pipe.labels_)
    if tree is None:
        L = np.asarray(levels)
        if L.ndim == 1:
            L = L[None, :]
        if L.ndim != 2 or L.shape[1] != n or L.dtype.kind not in "iu" or (L.size and L.min() < 0):
            raise InputError(f"levels must be (n_levels, {n}) cluster ids >= 0, got {L.dtype} {L.shape}")
    if (pipe.labels_ < 0).all():
        return False  # nothing clustered: no tree above it
    lab = pipe.labels_
    fine, conf = lab.copy(), pipe.probabilities_.copy()
    un = lab < 0
    if un.any():  # the tree has a place for everyone: the nearest cluster, as ``Pipeline._assign`` gives it
        fine[un], conf[un], _ = knn_vote(pipe.embedding_[~un], lab[~un], pipe.embedding_[un], k=15)
    if tree is None:
        rows, parents, sources = tree_above(fine, ~un, L, junk)
    else:
        rows, parents, sources = given_tree(tree, fine, un)
    if len(rows) < 2:
        return False  # no level of the tree is coarser than the labels: a flat model
    finest = len(rows) - 1
    level = finest if is_auto(pipe.level) else int(pipe.level)
    if level > finest:
        raise ParameterError(f"level={level} is out of range: the curated tree has {len(rows)} levels "
                             f"(0..{finest})", "level")
    set_path(pipe, (rows, np.tile(np.clip(conf, 0.0, 1.0), (len(rows), 1)), parents, finest, level))
    pipe.tree_sources_ = sources
    pipe.labels_ = np.where(un, lab, rows[level]).astype(np.int64)
    pipe.probabilities_ = np.where(un, 0.0, pipe.level_probabilities_[level])
    return True


def given_tree(tree, fine: np.ndarray, un: np.ndarray):
    """``fit_labels(tree=)``: the tree ``(rows, parents, sources)`` computed for the labels
    (``tree_above``'s result, unassigned items possibly < 0), checked against them, with the
    unassigned items (``un``) given the path of their nearest cluster (``fine``)."""
    rows, parents, sources = tree
    rows = np.array(rows, dtype=np.int64, copy=True)
    parents = [np.asarray(p, dtype=np.int64) for p in parents]
    n, ok = len(fine), ~un
    if rows.ndim != 2 or rows.shape[1] != n or len(rows) != len(parents) + 1 or len(sources) != len(parents):
        raise InputError(f"tree must be (rows ({len(parents) + 1}, {n}), {len(parents)} parents, "
                         f"{len(parents)} sources), got rows {rows.shape}, {len(sources)} sources")
    if not np.array_equal(rows[-1, ok], fine[ok]):
        raise InputError("the tree's last row is not the labels it was given with")
    for j in range(len(parents) - 1, -1, -1):  # bottom-up: each row is its parents' of the row below
        child = rows[j + 1, ok]
        if child.size and (child.max() >= len(parents[j]) or
                           not np.array_equal(parents[j][child], rows[j, ok])):
            raise InputError(f"the tree's level {j} does not hold level {j + 1} through its parents")
    path = fine[un]
    rows[-1, un] = path
    for j in range(len(parents) - 1, -1, -1):
        path = parents[j][path]
        rows[j, un] = path
    return rows, parents, sources
