"""Matching the clusters of two runs by the items they share: the rule a carry follows.

:mod:`~mediacluster.studio.carry` opens the runs, finds which items are the same and plans and
writes what the person did; this module only compares labellings of the *shared* items (row j
of both arrays is one item; labels < 0 are no cluster) and knows nothing of runs, edits or files.

**The rule.** Overlaps are counted over the *shared* items (in both runs; copies of one file
count once). For a previous curated cluster ``A`` and a new cluster ``B`` let ``n(A, B)`` be
their shared items, ``|A|`` the shared items of ``A`` and ``|B|`` the shared items of ``B``
(items new to the collection are not counted against a cluster):

- ``B`` is ``A``'s *heir* when ``n(A, B) > |A| / 2`` (most of what is left of ``A`` is in ``B``);
- ``A`` is ``B``'s *source* when ``n(A, B) > |B| / 2`` (most of ``B``'s old items come from ``A``).

What the person did to ``A`` is carried to ``B`` only when each is the other's: ``B`` is ``A``'s
heir and ``A`` is ``B``'s source (a mutual majority). Each previous cluster is then reported as

- ``split``: at least two new clusters have ``A`` as their source (other than the heir, such a
  part must be mostly old items, else it is a new group that took a few of ``A``'s items); its
  names etc. go to the heir when the heir is mutual, else nowhere;
- ``merged``: its heir's old items come mostly from elsewhere, or another previous cluster has
  the same heir; carried only when ``A`` is still the heir's source;
- ``kept``: mutual, neither split nor merged;
- ``gone``: none of its items is left, or no new cluster holds most of them.

:func:`match_clusters` applies it to the curated clusters, :func:`mutual_pairs` gives its pairs
alone (how much of one labelling the other holds), :func:`pair_levels` pairs the levels of two
trees by it, :func:`merge_targets` places a person's merged parts by it and
:func:`split_continues` finds the new clusters that continue a person's split as a whole.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def overlaps(old_labels: np.ndarray, new_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, n)``: each pair of labels the shared items have (row j of both arrays is one
    shared item) and how many have it, counted at once (numpy, not a loop over the items)."""
    a = np.asarray(old_labels, dtype=np.int64)
    b = np.asarray(new_labels, dtype=np.int64)
    if not len(a):
        return a[:0], b[:0], np.zeros(0, np.int64)
    lo_a, lo_b = int(a.min()), int(b.min())
    width = int(b.max()) - lo_b + 1
    keys, counts = np.unique((a - lo_a) * width + (b - lo_b), return_counts=True)
    return keys // width + lo_a, keys % width + lo_b, counts


def mutual_pairs(old_labels: np.ndarray, new_labels: np.ndarray) -> tuple[dict[int, int], int]:
    """The pairs of :func:`match_clusters`' rule (``{previous: new}``, each the other's mutual
    majority over the shared items; labels < 0 are no cluster) and how many shared items lie in
    them: how much of one labelling the other holds, which pairs a run's levels with the
    previous run's (:func:`pair_levels`)."""
    a, b, k = overlaps(old_labels, new_labels)
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    size_a = np.bincount(ia, weights=k)[ia]  # each pair's old cluster's shared items
    size_b = np.bincount(ib, weights=k)[ib]
    good = (a >= 0) & (b >= 0) & (2 * k > size_a) & (2 * k > size_b)
    return dict(zip(a[good].tolist(), b[good].tolist())), int(k[good].sum())


def pair_levels(old_levels: list[np.ndarray], new_levels: list[np.ndarray]) -> dict[int, tuple[int, float]]:
    """Which level of the new run continues each level of the previous one, by what they hold
    (each a labelling of the shared items, coarse to fine): ``{old position: (new position,
    share)}``, ``share`` the part of the shared items lying in mutual-majority pairs of the two
    levels (:func:`mutual_pairs`, the flat carry's rule). Paired one to one, the pair holding
    most first (ties: the closer cluster count, then the closer position), so a re-cluster with
    a level more or less pairs the levels that hold the same groups, not the same numbers; a
    level without a pair holding anything is absent."""
    counts_o = [len(np.unique(x[x >= 0])) for x in old_levels]
    counts_n = [len(np.unique(y[y >= 0])) for y in new_levels]
    n = max(len(old_levels[0]), 1) if old_levels else 1
    cand = []
    for i, x in enumerate(old_levels):
        for j, y in enumerate(new_levels):
            held = mutual_pairs(x, y)[1]
            if held:
                cand.append((-held, abs(counts_o[i] - counts_n[j]), abs(i - j), i, j))
    out: dict[int, tuple[int, float]] = {}
    taken = set()
    for held, _, _, i, j in sorted(cand):
        if i not in out and j not in taken:
            out[i] = (j, round(-held / n, 4))
            taken.add(j)
    return out


def match_clusters(old_labels: np.ndarray, new_labels: np.ndarray, old_ids: list[int],
                   new_sizes: dict[int, int]) -> tuple[list[dict], list[dict], dict[int, int]]:
    """The rule of the module docstring on the shared items' labels (row j of both arrays is one
    shared item; labels < 0 are no cluster). ``old_ids``: the previous curated clusters;
    ``new_sizes``: every new cluster with its size (all its items). Returns the previous
    clusters' records, the new clusters' records and ``{previous: new}`` where carried."""
    n = defaultdict(int)
    for a, b, k in zip(*(x.tolist() for x in overlaps(old_labels, new_labels))):
        n[a, b] = k
    size_a = defaultdict(int)
    size_b = defaultdict(int)
    for (a, b), k in n.items():
        size_a[a] += k
        size_b[b] += k
    heir, source = {}, {}
    for (a, b), k in n.items():
        if a >= 0 and b >= 0 and 2 * k > size_a[a]:
            heir[a] = b
        if a >= 0 and b >= 0 and 2 * k > size_b[b]:
            source[b] = a
    heirs_of = defaultdict(list)  # new cluster -> previous clusters whose heir it is
    for a, b in heir.items():
        heirs_of[b].append(a)
    parts = defaultdict(list)  # previous cluster -> new clusters that are its parts
    for b, a in source.items():
        if heir.get(a) == b or 2 * size_b[b] > new_sizes.get(b, 0):
            parts[a].append(b)
    carried = {a: b for a, b in heir.items() if source.get(b) == a}
    previous = []
    for a in old_ids:
        rec = {"cluster": int(a), "shared_items": int(size_a.get(a, 0))}
        b = heir.get(a)
        if not size_a.get(a):
            rec.update(status="gone", reason="none of its items is in the new run")
        elif len(parts[a]) >= 2:
            rec.update(status="split", to=sorted(int(x) for x in parts[a]))
        elif b is not None and (source.get(b) != a or len(heirs_of[b]) > 1):
            rec.update(status="merged", to=int(b), **{"with": sorted(int(x) for x in heirs_of[b] if x != a)})
        elif b is not None:
            rec.update(status="kept", to=int(b))
        else:
            rec.update(status="gone", reason="no new cluster holds most of its items")
        if b is not None:
            rec.update(heir=int(b), heir_share=round(n[a, b] / size_a[a], 4))
        if b is None and size_a.get(a):  # where most of what is left went: a hint for review
            most = max((x for x in size_b if x >= 0 and n.get((a, x))), key=lambda x: (n[a, x], -x), default=None)
            if most is not None:
                rec.update(largest=int(most), largest_share=round(n[a, most] / size_a[a], 4))
        rec["carried_to"] = int(carried[a]) if a in carried else None
        previous.append(rec)
    status_of = {r["cluster"]: r["status"] for r in previous}
    clusters = []
    for b in sorted(new_sizes):
        rec = {"cluster": int(b), "size": int(new_sizes[b]), "shared_items": int(size_b.get(b, 0)),
               "new_items": int(new_sizes[b] - size_b.get(b, 0)), "inherits": None}
        heir_of = sorted(int(x) for x in heirs_of.get(b, []))
        src = source.get(b)
        if src is not None and carried.get(src) == b:  # kept, or the part that continues a split
            rec.update(status=status_of[src], inherits=int(src))
            if len(heir_of) > 1:
                rec.update(status="merged", sources=heir_of)
        elif heir_of:
            rec.update(status="merged", sources=heir_of)
        elif src is not None and b in parts.get(src, []):
            rec.update(status="split", source=int(src))
        else:
            rec["status"] = "new"
        clusters.append(rec)
    return previous, clusters, carried


def merge_targets(parts: np.ndarray, group: np.ndarray, new: np.ndarray, g: int,
                  carried_to: int | None) -> tuple[list[int], int | None, list[int]]:
    """Where a person's merge goes in the new run. ``parts``, ``group`` and ``new``: the shared
    items' labels (row j of each is one item): the cluster each was in before the person's
    merges (a merged-away cluster's id), its previous curated cluster, its new cluster; ``g``
    the merged group (a previous curated cluster made of parts), ``carried_to`` the new cluster
    the group as a whole is carried to (None: none). Each part goes to the new cluster it is a
    mutual majority with (:func:`mutual_pairs`: most of the part's items are there, and those
    are most of that cluster's old items). Returns the new clusters to be one (sorted; fewer
    than two: nothing to merge), the one they merge into (``carried_to`` when it is one of them,
    else the one the group's own part went to, else the one holding most of the group) and the
    parts with items left that follow none of them (most of their items in no target: with
    another group, or spread)."""
    mine = group == g
    pairs, _ = mutual_pairs(parts, new)
    ids = np.unique(parts[mine]).tolist()
    targets = {pairs[p] for p in ids if p in pairs}
    if carried_to is not None:
        targets.add(int(carried_to))
    left = []
    for p in ids:
        there = new[mine & (parts == p)]
        if 2 * int(np.isin(there, list(targets)).sum()) <= len(there):
            left.append(int(p))
    into = None
    if targets:
        held = dict(zip(*np.unique(new[mine], return_counts=True)))
        into = (carried_to if carried_to in targets else pairs[g] if pairs.get(g) in targets
                else max(sorted(targets), key=lambda b: held.get(b, 0)))
    return sorted(int(b) for b in targets), (None if into is None else int(into)), left


def split_continues(splits: list, old_lab: np.ndarray, new_lab: np.ndarray, carried: dict[int, int]) -> dict[int, int]:
    """``{part: new cluster}``: new clusters that continue a person's split cluster as a whole.
    ``splits``: the split edits in effect; ``old_lab`` / ``new_lab`` the shared items' labels.
    A new cluster that inherits nothing, whose old items are mostly those of one split's parts
    (together, or one alone that is no mutual match: most of that part lies elsewhere), is
    continued by the part it holds the most of (ties: the lower id), so the split is made again
    there from the other parts (``studio.carry._plan_split_parts``) and that part's name stays with the
    fit's cluster."""
    family: dict[int, int] = {}  # each part -> the cluster first split (a part split again: the same family)
    for e in splits:
        root = family.get(int(e.payload["cluster"]), int(e.payload["cluster"]))
        for x in e.payload["ids"]:
            family[int(x)] = root
    if not family:
        return {}
    taken, out = set(carried.values()), {}
    a, b, k = overlaps(old_lab, new_lab)
    size_b = defaultdict(int)
    by_family: dict[tuple[int, int], int] = defaultdict(int)
    for x, y, n in zip(a.tolist(), b.tolist(), k.tolist()):
        size_b[y] += n
        if x in family:
            by_family[y, family[x]] += n
    for (y, root), n in sorted(by_family.items()):
        if y < 0 or y in taken or 2 * n <= size_b[y]:
            continue
        parts = [(int(m), int(x)) for x, yy, m in zip(a.tolist(), b.tolist(), k.tolist())
                 if yy == y and family.get(x) == root and x not in carried and x not in out]
        if parts:
            out[max(parts, key=lambda p: (p[0], -p[1]))[1]] = int(y)
    return out


def level_name_reason(rec: dict, level: int, to_level: int, share: float) -> str:
    """Why a name of group ``rec["cluster"]`` of the previous run's ``level`` is not carried to
    ``to_level``, the new run's level paired with it (``share``: of the shared items, the part
    in matching groups): ``rec`` is the group's record of :func:`match_clusters` (split, merged,
    gone: no mutual match)."""
    to = rec.get("to")
    how = (f"split there (into groups {', '.join(map(str, to))})" if rec["status"] == "split" else
           f"merged there into group {to}" + (f", with previous group {', '.join(map(str, rec['with']))}"
                                                if rec.get("with") else "")
           if rec["status"] == "merged" else rec.get("reason") or "no group there holds most of it")
    return (f"no clear match in the new run's level_{to_level} (the level that continues level_{level}: "
            f"{100 * share:.0f}% of the shared items in groups that match): {how}; name it again there")
