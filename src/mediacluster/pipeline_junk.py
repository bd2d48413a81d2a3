"""A curated model's junk clusters, as ``Pipeline.predict_details`` answers new items with them.

A model the studio publishes keeps the clusters a person marked as junk in its metadata
(``model.json`` ``metadata.curated.junk``); a curated tree keeps them on a branch of their own
at every coarser level (``stages.hierarchy.tree_above``). These functions take plain arrays: the
fitted levels (``levels_``, row 0 coarsest), the level in use, the predictor's neighbours and
weights and its top-down path; ``Pipeline`` keeps ``junk_clusters()`` and ``predict_details``
and calls them.
"""

from __future__ import annotations

import numpy as np


def junk_clusters(metadata: dict, levels, level) -> list[int]:
    """The clusters a person marked as junk (``metadata["curated"]["junk"]``) at the level in
    use: their items' status is ``"junk"``, as in the run's ``curated_status``. At a coarser
    level of a curated tree: the clusters of the junk branch (those holding only junk)."""
    junk = (metadata.get("curated") or {}).get("junk") or []
    junk = [int(c) for c in junk if isinstance(c, int) and not isinstance(c, bool)]
    if junk and levels is not None and level != len(levels) - 1:
        # a curated tree answering at a coarser level: the clusters holding only junk (the
        # junk branch, see stages.hierarchy.tree_above); the ids are the finest level's
        at = levels[level]
        kept = np.unique(at[~np.isin(levels[-1], junk)])
        return [int(c) for c in np.setdiff1d(np.unique(at), kept)]
    return junk


def junk_answer(levels, level: int, junk: list[int], path: dict, at, share, neighbors, weights):
    """``(at, share, path)``: the flat answer at the level in use (``at``, ``share``: the path's)
    where the flat vote of an item's neighbours there is a junk cluster's (:func:`junk_vote`)
    replaced by it, and those items given its path (:func:`junk_path`)."""
    won, won_share, rep = junk_vote(levels[level], neighbors, weights, junk)
    at, share = np.where(won >= 0, won, at), np.where(won >= 0, won_share, share)
    if (won >= 0).any():
        path = junk_path(levels, path, won >= 0, rep, neighbors, weights)
    return at, share, path


def junk_vote(at, neighbors, weights, junk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item, the junk cluster that wins the flat vote of its neighbours at the level in
    use (``at``: that level's labels of the fitted items; -1 where another cluster wins; ties:
    the nearest neighbour's), its share, and the heaviest neighbour in it (-1 where none won;
    its path is the item's, see :func:`junk_path`).

    A curated tree keeps junk clusters on a branch of their own at every coarse level, so
    the top-down path no longer adds a junk cluster's votes to its former siblings': an
    upload the earlier version put in a cluster (its siblings carried the path to it) went
    to another branch once that cluster was marked junk. An item whose neighbours vote
    for a junk cluster is junk, as a flat model answers it; every other item keeps its
    path. A fitted item's own copy outvotes its neighbours, so it keeps its label."""
    lab = np.asarray(at)[neighbors]  # (m, k)
    near_junk = np.isin(lab, junk).any(axis=1)
    won, share = np.full(len(lab), -1, np.int64), np.zeros(len(lab))
    rep = np.full(len(lab), -1, np.int64)
    if not near_junk.any():  # most items: no junk neighbour, nothing to vote
        return won, share, rep
    lab, w = lab[near_junk], np.asarray(weights, dtype=np.float64)[near_junk]
    rows = np.arange(len(lab))
    # each neighbour's cluster's weight among the item's k neighbours (k is small)
    votes = ((lab[:, :, None] == lab[:, None, :]) * w[:, None, :]).sum(axis=2)
    best = votes.argmax(axis=1)
    top = lab[rows, best]
    won[near_junk] = np.where(np.isin(top, junk), top, -1)
    share[near_junk] = votes[rows, best] / np.maximum(w.sum(axis=1), 1e-300)
    # the heaviest neighbour in the winning cluster: its path through the levels is the item's
    rep[near_junk] = np.asarray(neighbors)[near_junk][rows, np.where(lab == top[:, None], w, -1.0).argmax(axis=1)]
    return won, share, rep


def junk_path(levels, path: dict, moved, rep, neighbors, weights) -> dict:
    """``path`` with the items answered junk by :func:`junk_vote` (``moved``) given the
    junk cluster's path (that of ``rep``, their heaviest neighbour in it), so the answer's
    cluster lies on its path; each step's probability the share of the neighbours in the
    step's cluster among those in its parent (the product down to the level in use is the
    answer's probability, as for any path)."""
    L = np.asarray(levels)
    labels, probs = path["labels"].copy(), path["probabilities"].copy()
    labels[:, moved] = L[:, rep[moved]]
    w = np.asarray(weights, dtype=np.float64)[moved]
    nb = np.asarray(neighbors)[moved]
    before = w.sum(axis=1)
    for lv in range(len(L)):
        inside = (w * (L[lv][nb] == labels[lv, moved][:, None])).sum(axis=1)
        probs[lv, moved] = inside / np.maximum(before, 1e-300)
        before = inside
    return {"labels": labels, "probabilities": np.clip(probs, 0.0, 1.0)}
