"""The tree of a curated run: the person's clusters as the finest level under the run's coarser
levels, as the studio groups them, the published model serves them (``path``, ``assign
--level``, ``/v1/clusters``) and the report shows them.

One rule, :func:`stages.hierarchy.tree_above` (each curated cluster follows the majority of its
items down the run's tree, top-down so it nests; junk clusters a branch of their own; a level
not strictly coarser than the next dropped), computed here for every view:
``studio.session`` (the groups of the cluster list and the map's level colours),
``studio.publish`` (this tree is the model's: ``Pipeline.fit_labels(tree=)`` takes it, checks it
against the labels and gives the unassigned items their nearest cluster's path; the coarse
levels' names come from here) and
``report.build`` (the level switch and cards of a curated run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .rundir import RunLevels
from .stages.hierarchy import tree_above

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CuratedTree:
    """``rows`` (K + 1, n): the K coarse levels kept above the curated clusters (ids as the
    published model's levels: renumbered 0.., the junk branch last) and the curated clusters
    as the last row; an item the person left unassigned (< 0) keeps its label on every row.
    ``parents[j]``: row ``j + 1``'s clusters' parent ids in row ``j`` (``tree_above``'s);
    ``sources[j]``: ``{"level": position in the run's levels, "clusters": new id -> the run's
    cluster id there, -1 for the junk branch}`` (as ``Pipeline.tree_sources_``); ``names[j]``
    and ``index[j]``: the run level's name (``RunLevels.names``) and its key in
    ``level_names.json``."""

    rows: np.ndarray
    parents: list
    sources: list
    names: list
    index: list

    def groups(self) -> dict[str, dict[str, int]]:
        """Each coarse level (by the run level's name): each curated cluster's group there,
        ``{level name: {str(cluster): group}}`` (the model's cluster id at that level)."""
        fine = self.rows[-1]
        ok = fine >= 0
        ids, first = np.unique(fine[ok], return_index=True)
        at = np.flatnonzero(ok)[first]
        return {name: {str(c): int(g) for c, g in zip(ids.tolist(), self.rows[j][at].tolist())}
                for j, name in enumerate(self.names)}

    def names_by_level(self, named: dict[int, dict[int, str]], names: dict[str, str],
                       junk_names: list[str]) -> dict[str, dict[str, str]]:
        """The model's ``names_by_level``: a coarse level's clusters named as the run's clusters
        they come from are named (``named``: level key -> the run's cluster id -> name,
        ``naming.run_level_names``: automatic < ``names.yaml`` < the studio's level renames), the
        junk branch by the junk cluster's name (``junk`` when there are several), the finest
        level by the curated ``names`` ({str(id): name})."""
        out = {}
        junk_name = junk_names[0] if len(junk_names) == 1 else "junk"
        for j, src in enumerate(self.sources):
            level_named = named.get(self.index[j], {})
            level = {str(new): (junk_name if orig < 0 else level_named.get(int(orig)))
                     for new, orig in enumerate(np.asarray(src["clusters"]).tolist())}
            out[str(j)] = {k: v for k, v in level.items() if isinstance(v, str) and v}
        out[str(len(out))] = dict(names)
        return out

    def run_ids(self, j: int) -> np.ndarray:
        """Coarse level ``j``'s group of every item as the run's cluster id at that level (the
        ids ``level_<k>`` and ``names.yaml``'s ``levels:`` use, which do not change with edits;
        the published model renumbers them): -1 for the junk branch, an unassigned item's own
        label (-1 noise, -2 outlier)."""
        src = np.asarray(self.sources[j]["clusters"], dtype=np.int64)
        row = self.rows[j]
        return np.where(row >= 0, src[np.clip(row, 0, max(len(src) - 1, 0))], row)

    def support_by_level(self, stored: dict[int, list[dict]]) -> dict[str, dict[str, dict]]:
        """How sure the coarse levels' names are (the model's ``names_support_by_level`` above
        the finest level): each coarse cluster carries the measured record of the run's cluster
        it comes from (``naming.support.model_records``); the junk branch and clusters never
        measured have none."""
        from .naming.support import model_records

        out = {}
        for j, src in enumerate(self.sources):
            rec = {int(k): v for k, v in model_records(stored.get(self.index[j], [])).items()}
            level = {str(new): rec[int(orig)] for new, orig in enumerate(np.asarray(src["clusters"]).tolist())
                     if orig >= 0 and int(orig) in rec}
            if level:
                out[str(j)] = level
        return out

    def alternatives(self, j: int, stored: dict[int, list[dict]]) -> dict[int, list]:
        """Coarse level ``j``'s clusters' alternative names, as the run stored them."""
        alts = {int(e["cluster"]): e.get("alternatives") or [] for e in stored.get(self.index[j], [])}
        return {new: alts.get(int(orig), []) for new, orig in enumerate(np.asarray(self.sources[j]["clusters"]).tolist())
                if orig >= 0}


def curated_tree(levels: RunLevels, labels, junk=()) -> CuratedTree | None:
    """The tree above the curated ``labels`` (n,) (< 0: unassigned) under the run's ``levels``
    coarser than its ``cluster`` column (``RunLevels.above``), ``junk`` the junk clusters' ids;
    None when nothing is kept above them (a flat run, no assigned item, no coarser level, or
    levels a tree cannot hold: unclustered items, levels that do not nest; said in the log):
    the published model is then flat."""
    above = levels.above()
    lab = np.asarray(labels, dtype=np.int64)
    ok = lab >= 0
    if above is None or not ok.any():
        return None
    if above.min(initial=0) < 0:
        log.warning("the run's levels leave items unclustered: they are not kept above the curated clusters")
        return None
    # only assigned items vote (tree_above's `labelled`): the cluster an unassigned item is
    # given here does not move any cluster, so this is the tree fit_labels builds
    fine = np.where(ok, lab, lab[ok][0])
    try:
        rows, parents, sources = tree_above(fine, ok, above, junk)
    except InputError as e:  # the run's levels are not a tree: the curated clusters stand alone
        log.warning("the run's levels are not kept above the curated clusters: %s", e)
        return None
    if len(rows) < 2:
        return None
    rows = np.where(ok[None, :], rows, lab[None, :])
    return CuratedTree(rows=rows, parents=parents, sources=sources, names=[levels.names[s["level"]] for s in sources],
                       index=[levels.index[s["level"]] for s in sources])
