"""A run's duplicate groups as the studio lists them (``GET /api/duplicates``, the page's
"duplicates" view): each group's members with their curated cluster, the top-level folder of the
collection each lies in (``train`` / ``test``: a group across folders is a leak between splits),
and which copy a clean dataset keeps and why, by the ``classes`` export's own rule
(:func:`.exports.keep_copy`, with the same ``prefer`` folders), so the page shows what the export
will do. The groups are those ``cluster --dedup`` found (the assignments' ``duplicate_group`` /
``duplicate_of``; how each member was linked from ``duplicates.parquet``). A run made without
``--dedup`` has none, and says so.
"""

from __future__ import annotations

import numpy as np

from ..duplicates.collection import folder_counts, top_folder
from ..errors import InputError
from .exports import gone, keep_copy, kept_words, left_out

#: the orders of the list: largest groups first; groups across top-level folders first (leaks
#: between splits); groups whose members are in more than one curated cluster first (a copy
#: labelled as another class)
ORDERS = ("size", "folders", "clusters")
MAX_GROUPS = 200  # groups on one page
MEMBERS_LIMIT = 24  # members of a group listed with it (the rest: members_offset, GET /api/duplicates/{group})
MAX_MEMBERS = 1000  # members of one group in one answer
NO_DATA = ("this run has no duplicate groups: it was clustered without --dedup "
           "(mediacluster cluster INPUT --out RUN --dedup finds them)")


class DuplicateGroups:
    """The duplicate groups of a run's items. ``group``: each item's group (-1: none; None: the
    run has no duplicate data), ``representative``: whether each item is its group's
    representative, ``paths``: the files (absolute, None where unknown), ``root``: the
    collection's folder, ``links``: ``duplicates.parquet``'s ``link_kind`` / ``link_distance``
    in item order (or None)."""

    def __init__(self, group, representative, paths, root: str | None, links=None):
        self.available = group is not None
        self.paths = paths
        self.root = root
        self.links = links
        g = np.asarray(group if group is not None else [], dtype=np.int64)
        self.rep = np.asarray(representative if representative is not None else np.zeros(len(g), bool), bool)
        order = np.argsort(g, kind="stable")
        order = order[g[order] >= 0]
        ids, starts = np.unique(g[order], return_index=True)
        self.members: dict[int, np.ndarray] = {int(k): m for k, m in zip(ids, np.split(order, starts[1:]))} \
            if len(order) else {}
        # each member's top-level folder of the collection ("." for a file directly in it or outside)
        self.folder = {int(i): top_folder(paths[i], root) for m in self.members.values() for i in m}
        self.folders = {k: sorted({self.folder[int(i)] for i in m}) for k, m in self.members.items()}

    def summary(self, labels: np.ndarray) -> dict:
        """Counts over every group: groups, items in them, copies (items - groups), groups across
        top-level folders by those folders (``dups``' count: :func:`.folder_counts`), groups in
        several clusters."""
        items = sum(len(m) for m in self.members.values())
        mixed = sum(len(np.unique(labels[m])) > 1 for m in self.members.values())
        return {"groups": len(self.members), "items": items, "copies": items - len(self.members),
                "across_folders": folder_counts(self.folders.values()),
                "mixed_clusters": int(mixed)}

    def page(self, labels: np.ndarray, junk: set[int], brief, offset: int = 0, limit: int = 20,
             order: str = "size", prefer: list[str] | None = None, chosen: dict | None = None,
             members_limit: int = MEMBERS_LIMIT) -> dict:
        """A page of groups in ``order`` (:data:`ORDERS`); ``labels``: the curated clusters now,
        ``junk`` the junk clusters, ``brief(i)``: an item's brief (the studio's); ``prefer``: the
        ``classes`` export's preferred folders (checked: :func:`.exports.check_prefer`);
        ``chosen``: the copy a person keeps, by group (the studio's ``keep`` edits); each group
        lists its first ``members_limit`` members (the kept copy first; :meth:`group`)."""
        if order not in ORDERS:
            raise InputError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
        if offset < 0 or not 1 <= limit <= MAX_GROUPS:
            raise InputError(f"offset must be 0 or more and limit 1 .. {MAX_GROUPS}")
        if not self.available:
            return {"has_duplicates": False, "message": NO_DATA, "total": 0, "offset": offset,
                    "limit": limit, "order": order, "groups": []}
        n_clusters = {k: len(np.unique(labels[m])) for k, m in self.members.items()}
        if order == "size":
            key = lambda k: (-len(self.members[k]), k)  # noqa: E731
        elif order == "folders":
            key = lambda k: (len(self.folders[k]) < 2, -len(self.members[k]), k)  # noqa: E731
        else:
            key = lambda k: (n_clusters[k] < 2, -len(self.members[k]), k)  # noqa: E731
        ranked = sorted(self.members, key=key)
        chosen = chosen or {}
        out = [self.group(k, labels, junk, brief, prefer, chosen.get(k), 0, members_limit)
               for k in ranked[offset:offset + limit]]
        summary = self.summary(labels)
        summary["kept_by_person"] = sum(1 for k in chosen if k in self.members)
        return {"has_duplicates": True, "total": len(ranked), "offset": offset, "limit": limit,
                "order": order, "prefer": prefer, "summary": summary, "groups": out}

    def group(self, k: int, labels: np.ndarray, junk: set[int], brief, prefer=None, chosen: int | None = None,
              members_offset: int = 0, members_limit: int = MEMBERS_LIMIT) -> dict:
        """One group: its members (each with its folder, whether it is the representative, how
        it was linked, and its fate in a clean dataset: ``kept``, ``copy`` or why it is dropped
        anyway: ``junk`` / ``unassigned`` / ``outlier`` / ``missing``), the copy kept and why (``kept_by``:
        :data:`.exports.KEPT_BY`, ``kept_why`` in words; ``chosen``: the copy a person keeps,
        ``kept_by`` "person" while it is not dropped otherwise), its folders and curated clusters.
        The members are listed kept copy first, then in the collection's order, ``members_limit``
        of them from ``members_offset`` (``members_total``: all of them), so a meme posted 500
        times costs a page of members, not 500 briefs."""
        if members_offset < 0 or not 1 <= members_limit <= MAX_MEMBERS:
            raise InputError(f"members_offset must be 0 or more and members_limit 1 .. {MAX_MEMBERS}")
        m = [int(i) for i in self.members[k]]
        fate = {i: left_out(labels[i], junk) or gone(self.paths[i]) for i in m}  # the export's rule
        left = [i for i in m if fate[i] is None]
        keep, by = keep_copy(left, self.paths, self.rep, prefer, self.root, chosen) if left else (None, None)
        listed = ([keep] if keep is not None else []) + [i for i in m if i != keep]
        members = []
        for i in listed[members_offset:members_offset + members_limit]:
            e = brief(i)
            e.update(folder=self.folder[i], representative=bool(self.rep[i]),
                     fate="kept" if i == keep else fate[i] or "copy")
            if self.links is not None:
                kind, dist = self.links[0][i], self.links[1][i]
                e.update(link_kind=kind or None, link_distance=None if not kind else round(float(dist), 4))
            members.append(e)
        clusters = sorted({int(labels[i]) for i in m})
        return {"group": k, "size": len(m), "folders": self.folders[k], "across_folders": len(self.folders[k]) > 1,
                "clusters": clusters, "mixed_clusters": len(clusters) > 1,
                "kept": keep, "kept_by": by, "kept_why": kept_words(self.paths[keep] if keep is not None else None, by, prefer, self.root),
                "kept_cluster": int(labels[keep]) if keep is not None else None, "members_total": len(m),
                "members_offset": members_offset, "members": members}
