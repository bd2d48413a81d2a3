"""A run's clusters at every level as tables a study reports from (pandas, one reader).

:func:`cluster_table`: one row per cluster of every hierarchy level (its parent on the next
coarser level, size, share, name and how sure the name is): a paper's table of groups, the
tree to draw (BERTopic's ``get_topic_info`` and ``hierarchical_topics`` in one frame).
:func:`named_assignments`: the run's assignments with each level's name per item
(``level_<k>_name``, as ``assign --out`` writes them), ready to join on ``id`` with a
researcher's own metadata. Names follow :func:`load_names`' rule at the level in use
(automatic < ``names.yaml``); the other levels :func:`run_level_names`' (automatic names of
``level_names.json`` < ``names.yaml``'s ``levels:`` < the studio's level renames). A manifest's
own columns (``metadata.parquet``) come last. A run curated in the studio adds the studio's name (``curated_name``)
of the curated cluster holding most of each cluster's items at the level in use.
"""

from __future__ import annotations

import numpy as np

from ..rundir import RunDir
from .overrides import _as_run, load_names, run_level_names
from .support import with_hand_names

COLUMNS = ["level", "n_clusters", "cluster", "parent", "size", "share", "name", "name_sure", "name_support"]


def cluster_lineage(run) -> dict[int, str]:
    """Cluster of the level in use -> its lasting id, ``RUN_ID/C``: the run where the group was
    first seen and its cluster there, carried by ``cluster --carry-from`` to the cluster that
    inherits it (``carry.json`` ``lineage``, see ``studio.carry.lineage``); without a carry every
    cluster is this run's own (``THIS_RUN_ID/C``). Noise and outliers have none."""
    run = _as_run(run)
    carried = (run.read_carry() or {}).get("lineage") or {}
    ids = np.unique(run.read_assignments(columns=["cluster"])["cluster"].to_numpy(np.int64))
    return {int(c): carried.get(str(int(c)), f"{run.run_id}/{int(c)}") for c in ids if c >= 0}


def made_lineage(run) -> dict[int, str]:
    """Curated cluster -> lasting id for the groups a carry made again in ``run`` (a split part or
    a cluster the person made by moving items: groups of the curation only, which no fitted
    cluster's lineage names; ``carry.json`` ``made_lineage``, see ``studio.carry``)."""
    made = (_as_run(run).read_carry() or {}).get("made_lineage") or {}
    return {int(g): str(x) for g, x in made.items()}


def group_lineage(groups, fitted, lasting: dict[int, str], run_id: str,
                  made: dict[int, str] | None = None) -> dict[int, str]:
    """Each group of items (a curated cluster; ``groups`` and ``fitted`` one label per item,
    < 0 none) -> its lasting id: ``made``'s (:func:`made_lineage`: a group a carry made again
    keeps the id it had in the run it came from); else that of the fitted cluster most of its
    items are in, when it is the group holding the most of that cluster's items (a merge of a
    template's parts keeps the template's id, into whichever part it went); else its own,
    ``run_id/G`` (the smaller part of a split is a group of its own)."""
    groups, fitted = np.asarray(groups, np.int64), np.asarray(fitted, np.int64)
    keep = (groups >= 0) & (fitted >= 0)
    pairs, counts = np.unique(np.stack([groups[keep], fitted[keep]], axis=1), axis=0, return_counts=True)
    top_of_group, top_of_fitted = {}, {}
    for (g, f), k in zip(pairs.tolist(), counts.tolist()):
        if k > top_of_group.get(g, (0, None))[0]:
            top_of_group[g] = (k, f)
        if k > top_of_fitted.get(f, (0, None))[0]:
            top_of_fitted[f] = (k, g)
    out = {int(g): f"{run_id}/{int(g)}" for g in np.unique(groups[groups >= 0]).tolist()}
    for g, (_, f) in top_of_group.items():
        if top_of_fitted[f][1] == g and f in lasting:
            out[int(g)] = lasting[f]
    for g, x in (made or {}).items():
        if g in out:
            out[g] = x
    return out


def _levels(run: RunDir, a):
    """(key, labels) per level coarse to fine, and the position of the level in use; a flat
    run is one level, its ``cluster`` column."""
    lv = run.read_levels(a)
    if len(lv):
        return list(zip(lv.index, lv.labels)), lv.level
    return [(0, a["cluster"].to_numpy(np.int64))], 0


def _names(run: RunDir, levels, at) -> dict[int, dict[int, dict]]:
    """Level key -> cluster -> {name, name_sure, name_support}."""
    stored = run.read_level_names()
    named = run_level_names(run)  # the names of level L: automatic < names.yaml < the studio's level renames
    out: dict[int, dict[int, dict]] = {}
    for pos, (k, _) in enumerate(levels):
        # a person's name: sure, its support not measured (support.with_hand_names)
        out[k] = {int(e["cluster"]): {"name": e.get("name"), "name_sure": e.get("name_sure"),
                                       "name_support": e.get("name_support")}
                  for e in with_hand_names(stored.get(k, []), named.get(k, {}))}
        if pos == at:  # the level in use: the one rule (names.yaml wins over automatic names)
            records = {int(e["cluster"]): e for e in run.read_automatic_names()}
            for c, name in load_names(run, curated=False).items():
                e = records.get(c, {})
                person = name != e.get("name")
                out[k][c] = {"name": name, "name_sure": True if person else e.get("name_sure"),
                             "name_support": None if person else e.get("name_support")}
    return out


def cluster_table(run):
    """One row per cluster of every level, coarse to fine (:data:`COLUMNS`): ``level`` (0 the
    coarsest), ``n_clusters`` of that level, ``cluster`` (the id in ``level_<k>``, or in
    ``cluster`` for a flat run), ``parent`` (its cluster on level ``k - 1``; -1 on level 0),
    ``size``, ``share`` of the items, ``name``, ``name_sure``, ``name_support`` (see "How sure a
    name is"; a person's name is sure, its support not measured), ``in_use`` (the level the
    run's ``cluster`` column holds) and, at that level, ``lineage`` (:func:`cluster_lineage`).
    Noise and outliers (-1, -2) of a flat run are rows too."""
    import pandas as pd

    run = _as_run(run)
    a = run.read_assignments()
    levels, at = _levels(run, a)
    names = _names(run, levels, at)
    n = len(a)
    curated = _curated(a, levels[at][1]) if at is not None and "curated_name" in a.columns else None
    lasting = cluster_lineage(run)
    rows = []
    for pos, (k, lab) in enumerate(levels):
        ids, sizes = np.unique(lab, return_counts=True)
        parent = np.full(len(ids), -1, np.int64)
        if pos > 0:  # every item of a cluster has one parent: read it off the first item
            first = np.searchsorted(np.sort(lab), ids)
            parent = levels[pos - 1][1][np.argsort(lab, kind="stable")[first]]
        k_clusters = int((ids >= 0).sum())
        for c, size, p in zip(ids.tolist(), sizes.tolist(), parent.tolist()):
            nm = names.get(k, {}).get(c, {})
            row = {"level": int(k), "n_clusters": k_clusters, "cluster": c, "parent": int(p), "size": size,
                   "share": size / n if n else 0.0, "name": nm.get("name"), "name_sure": nm.get("name_sure"),
                   "name_support": nm.get("name_support"), "in_use": pos == at,
                   "lineage": lasting.get(c) if pos == at else None}
            if curated is not None:
                row["curated_name"] = curated.get(c) if pos == at else None
            rows.append(row)
    cols = COLUMNS + ["in_use", "lineage"] + (["curated_name"] if curated is not None else [])
    return pd.DataFrame(rows, columns=cols)


def _curated(a, lab) -> dict[int, str]:
    """Cluster of the level in use -> the studio's name of the curated cluster holding most of
    its items."""
    out = {}
    for c, names in a["curated_name"].groupby(lab):
        mode = names.dropna().mode()
        if len(mode):
            out[int(c)] = str(mode.iloc[0])
    return out


def named_assignments(run):
    """The run's assignments (``RunDir.read_assignments``: absolute paths) with
    ``level_<k>_name`` beside each ``level_<k>`` column (a flat run: ``name`` only, as it is):
    every item's group and its name at each granularity, one row per item, to join on ``id``;
    ``lineage`` after ``cluster``: its cluster's lasting id across re-clusters
    (:func:`cluster_lineage`);
    a run made from a manifest with columns of its own (a post's time, author, ...) has them
    last (``RunDir.with_metadata``), so no join is needed."""
    run = _as_run(run)
    a = run.read_assignments()
    lasting = cluster_lineage(run)
    a.insert(a.columns.get_loc("cluster") + 1, "lineage", [lasting.get(c) for c in a["cluster"].tolist()])
    lv = run.read_levels(a)
    if not len(lv):
        return run.with_metadata(a)
    levels, at = list(zip(lv.index, lv.labels)), lv.level
    names = _names(run, levels, at)
    for col, (k, lab) in zip(lv.names, levels):
        table = names.get(k, {})
        named = [table.get(c, {}).get("name") for c in lab.tolist()]
        if col in a.columns:
            a.insert(a.columns.get_loc(col) + 1, f"level_{k}_name", named)
        else:
            a[f"level_{k}_name"] = named
    return run.with_metadata(a)


__all__ = ["COLUMNS", "cluster_lineage", "cluster_table", "group_lineage", "made_lineage", "named_assignments"]
