"""Carrying a person's curation from a previous run to a re-clustered (grown) collection.

A collection grows (new photos, the service's kept uploads) and is clustered again into a new
run. :func:`carry_curation` matches the new run's clusters to the previous run's *curated*
clusters (its edit log replayed, :class:`~.state.CuratedState`) by the items they share, and
writes what the person did as ordinary studio events into the new run's ``edits.sqlite``, so
undo, the studio, publish, the report and exports treat them as any edit.

**Which items are the same.** An item's identity across the two runs is its file's content hash
(BLAKE2b-128, the embedding cache's: ``EmbeddingStore.hash_files``, which takes the recorded hash
of a file unchanged since it was embedded) when every item of both runs is a readable file;
otherwise its path relative to the run's collection root (its id where it has no path). The
summary says which was used (``identity``: ``content`` or ``path``).

**The rule** (:mod:`.matching`, which computes it and states it in full): a previous curated
cluster and a new cluster are matched when each holds the majority of the other's *shared*
items (in both runs); what the person did is carried only over such a mutual majority, and
each previous cluster is reported ``kept``, ``split``, ``merged`` or ``gone``.

A new cluster that inherits nothing and is no part of a split is ``new``: to review (the studio
marks it). What is carried: names a person gave (never automatic ones), junk marks, cluster tags
(all to the matched cluster), item tags (to the same items), and items a person moved (to the
cluster their target became; to junk / unassigned as before; to a re-created cluster when the
person made it by moving items and it has no match), the copy of a duplicate group a person
keeps, and the names a person gave the levels' groups (studio level renames, ``names.yaml``
``levels:``): each level of the previous run is paired with the new run's level that holds the
same groups (:func:`pair_levels`: most shared items in mutual-majority pairs, one to one), and a
named group's name goes, as a ``level_rename``, to its match there by the same rule (else it is
listed with why: split, merged, gone, the new run's level in use).

**Merges.** A group the person made by merging clusters is carried as a ``merge`` of the new
clusters its parts became, before the matching: each part (a merged cluster, its items as
they were before the merge) goes to the new cluster it is a mutual majority with
(:func:`merge_targets`), and the rule then matches the previous clusters with the new ones as
merged, so the group's name, junk mark and tags go to the merged cluster. Parts that follow no
such cluster (their items with another group, or spread) are listed in ``not_carried``; a new run
that already has the parts as one cluster gets no merge.

**Splits.** A part a person's split made (the part that kept the cluster's id too) that has no
match but an heir (the new fit has its items with another part, or with another group:
reported merged) is made again from its items there; a new cluster that inherits nothing and
whose old items are mostly one split's parts is continued by the part it holds most of
(:func:`split_continues`), the others made again from it, as a ``move`` to a new cluster with its name, tags and junk mark
(:func:`_plan_split_parts`; counted as ``splits``); a continued part whose heir is another
cluster gets its items there moved to it (counted as ``moves``). Each carried event has the client
``carried from RUN_ID`` and a ``carried_from`` field; one ``carry`` event records the carrying
in the same transaction with the previous run's last edit it reached (``from_seq``).

**Carrying again** from the same run carries only what the previous run's edits made since that
mark (and still in effect there) touched: a cluster's name, junk mark or tags, an item's
cluster or tags, each as the previous run has it now; nothing twice. What the person changed in
the new run after the first carry wins and is listed in ``not_carried`` (the cluster or rows,
their edit, why): a cluster they renamed, junked or re-tagged, an item they moved, split or
re-tagged, a carried edit they undid, a cluster they merged or split (for a merge). The
previous run's merges and split parts since are carried as above; a split since that made
no such part is not carried (the matching follows it) and its undos of edits carried before are listed, not
undone here, but for a keep's: a group whose keep was undone or handed back to the rule there
is handed back here too (the choice of a group is carried as the previous run has it now).
With no edit since the mark, nothing is carried or written. The summary is written atomically
into the new run (``carry.json``, with ``rounds``: each carry) and returned.

**The "new" badge** follows the items: :func:`statuses_at_carry` gives each item the status of
the cluster that held it when the carry was made, :func:`status_by_items` a cluster now the
status most of its items had (the studio's ``carry`` / ``new`` flags).
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..data import NOISE
from ..errors import InputError, MediaclusterError, RunDirError
from ..fileio import path_to_text
from ..naming.overrides import merge_level_names, run_level_names
from ..rundir import NAMES_YAML, RunDir
from .carry_write import CARRY_EVENT, record_plan, write_curated_state, write_summary
from .matching import (
    level_name_reason,
    match_clusters,
    merge_targets,
    pair_levels,
    split_continues,
)
from .state import EDITS, CuratedState, start_names

RULE = ("mutual majority over the shared items: a new cluster inherits a previous curated "
        "cluster's names, junk mark and tags when it holds more than half of that cluster's "
        "items still present and those are more than half of its own items that were in the "
        "previous run")


class _Side:
    """One run opened for carrying: its items' keys and its curated state (log replayed)."""

    def __init__(self, run: RunDir, what: str):
        self.run = run
        self.what = what
        a = run.read_assignments()
        if len(a) == 0:
            raise RunDirError(f"{run.path} has no items")
        self.ids = [str(x) for x in a["id"].tolist()]
        self.paths = [p if isinstance(p, str) and p else None for p in a["path"].tolist()] \
            if "path" in a else [None] * len(a)
        self.fitted = a["cluster"].to_numpy(np.int64)
        # each item's duplicate group (a --dedup run's; -1 none), which a keep edit names
        self.groups = a["duplicate_group"].to_numpy() if "duplicate_group" in a else None
        self.levels = run.read_levels(a)  # the run's hierarchy levels (empty: a flat run)
        self.state = CuratedState(self.fitted, start_names(run), self.groups)
        self.log = run.edits(create=what == "new")
        self.events = self.log.events() if self.log is not None else []
        for ev in self.events:
            self.state.apply(ev)

    @property
    def media(self) -> str | None:
        return (self.run.info.get("encoder") or {}).get("media")

    def relative_keys(self) -> list[str]:
        """Each item's path as the run folder stores it (``locations``: relative to the
        collection root where it lies under it), its id where it has no path."""
        stored = self.run.collection_root.store_all(self.paths)
        return ["id:" + i if p is None else "path:" + p for p, i in zip(stored, self.ids)]


def item_keys(old: _Side, new: _Side, cache_dir=None, progress: bool = False) -> tuple[list[str], list[str], str]:
    """Each item's identity in both runs and which kind was used (see the module docstring)."""
    paths = old.paths + new.paths
    if all(p is not None and os.path.isfile(p) for p in paths):
        from ..embed.store import open_store

        with open_store(cache_dir) as store:  # a cache nobody may write: a temporary one, as embedding does
            hashes, _errors = store.hash_files(paths, progress=progress)
        if all(h is not None for h in hashes):
            return hashes[:len(old.paths)], hashes[len(old.paths):], "content"
    return old.relative_keys(), new.relative_keys(), "path"


def _first_rows(keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, k in enumerate(keys):
        out.setdefault(k, i)
    return out


def _rows_of(keys: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        out[k].append(i)
    return out


def _plan_merges(old: _Side, rows: tuple[np.ndarray, np.ndarray], new_lab: np.ndarray,
                 carried: dict[int, int], scope: _Touched | None, owned: _Touched) -> tuple[list, list, dict]:
    """The person's merges of the previous run (after the first carry, those made since), as
    ``merge`` edits of the new clusters their parts became (:func:`merge_targets`), and what is
    not carried. The parts are found by replaying the previous run's edits in effect without
    those merges: an item's cluster there is the part it came from. Never over what the person
    did to those clusters in the new run after the first carry (a merge or split of theirs, a
    carried merge they undid). Returns the plan, the not carried and ``{previous cluster:
    (the new clusters merged, into)}``."""
    ost = old.state
    merges = [e for e in ost.done if e.kind == "merge" and (scope is None or e.seq in scope.merges)]
    if not merges:
        return [], [], {}
    skip = {e.seq for e in merges}
    before = CuratedState(old.fitted, start_names(old.run), old.groups)
    for e in ost.done:
        if e.seq not in skip:
            before.apply(e)
    parts, group = before.labels[rows[0]], ost.labels[rows[0]]
    plan, not_carried, done = [], [], {}
    seq_of = {}  # each merged group -> the latest merge that made it
    for e in merges:
        for g in np.unique(ost.labels[np.isin(before.labels, e.payload["clusters"])]).tolist():
            if g >= 0:
                seq_of[int(g)] = e.seq
    for g in sorted(seq_of):
        ids = np.unique(parts[group == g]).tolist()
        if len(ids) < 2:  # what is left of the merge is one part (the rest gone from the collection)
            continue
        targets, into, left = merge_targets(parts, group, new_lab, g, carried.get(g))
        rec = {"what": "merges", "previous_cluster": g, "name": ost.clusters[g].name, "edit": seq_of[g]}
        mine = sorted({owned.regrouped[b] for b in targets if b in owned.regrouped})
        if len(targets) >= 2 and mine:
            not_carried.append({**rec, "clusters": targets, "edits": mine, "reason": _why(mine[-1])})
            continue
        if len(targets) >= 2:
            plan.append(("merge", {"clusters": targets, "into": into}, "merges", {"previous_cluster": g}))
            done[g] = (targets, into)
        if left:
            not_carried.append({**rec, "parts": left, "reason": (
                f"part{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} of the merge "
                + (f"follow{'s' if len(left) == 1 else ''} no new cluster of it: most of "
                   f"{'its' if len(left) == 1 else 'their'} items are with another group or spread"
                   if targets else "have no match in the new run")
                + (f" (merged: {', '.join(map(str, targets))})" if len(targets) >= 2 else
                   f" (the rest is in cluster {targets[0]})" if targets else ""))})
    return plan, not_carried, done


def lineage(old: _Side, new: _Side, carried: dict[int, int]) -> dict[str, str]:
    """Each cluster of the new run's fit -> its lasting id, ``RUN_ID/C``: the run where its group
    was first seen and its cluster there (what :func:`~mediacluster.naming.tables.cluster_lineage`
    reads). It follows the person's groups as the carry left them: a fitted cluster most of whose
    items are in a curated cluster that inherits a previous curated one (``carried``, the rule's
    mutual majorities: kept, or the part that continues a split) takes that one's lasting id, so a
    template keeps one id through every re-cluster of a growing collection, and the clusters a
    carried merge made one share it; any other is new here (``NEW_RUN_ID/C``). A previous curated
    cluster's lasting id is that of the previous run's fitted cluster it holds most of (its own
    ``carry.json`` lineage, else ``PREVIOUS_RUN_ID/C``; ``naming.tables.group_lineage``: the
    parts a person merged there keep the template's id)."""
    before = _lasting_before(old)
    heir_of = {b: a for a, b in carried.items()}
    fitted, now = new.fitted, new.state.labels
    ok = fitted >= 0
    pairs, counts = np.unique(np.stack([fitted[ok], now[ok]]), axis=1, return_counts=True)
    top: dict[int, tuple[int, int]] = {}  # fitted cluster -> (items, the curated cluster holding most)
    for (f, g), k in zip(pairs.T.tolist(), counts.tolist()):
        if k > top.get(f, (0, None))[0]:
            top[f] = (k, g)
    new_id = new.run.run_id
    out = {}
    for f in sorted(top):
        g = top[f][1]
        a = heir_of.get(g) if g >= 0 else None
        out[str(f)] = f"{new_id}/{f}" if a is None else before.get(int(a), f"{old.run.run_id}/{a}")
    return out


def _lasting_before(old: _Side) -> dict[int, str]:
    """The previous run's curated clusters -> their lasting ids (``naming.tables.group_lineage``
    with the groups its own carry made again)."""
    from ..naming.tables import cluster_lineage, group_lineage, made_lineage

    return group_lineage(old.state.labels, old.fitted, cluster_lineage(old.run), old.run.run_id,
                         made_lineage(old.run))


def made_again_lineage(old: _Side, new: _Side) -> dict[str, str]:
    """The groups the carries from ``old`` made again in ``new`` (a split part, a cluster the
    person made by moving items: :func:`_recreated`, still there) -> the lasting id the group had
    in ``old``, so the person's group keeps its identity across re-runs (a group of the curation
    only: no fitted cluster, so :func:`lineage` cannot key it)."""
    before = _lasting_before(old)
    return {str(c): before.get(a, f"{old.run.run_id}/{a}")
            for a, c in sorted(_recreated(new.state, old.run.run_id).items())}


class _Touched:
    """What effective edits touched, each subject with the latest edit (seq) that touched it:
    a cluster's name or junk mark, a cluster's tag, an item's cluster or tag."""

    def __init__(self, events=()):
        self.names: dict[int, int] = {}
        self.junk: dict[int, int] = {}
        self.ctags: dict[tuple[int, str], int] = {}
        self.moved: dict[int, int] = {}  # rows a move put somewhere
        self.split: dict[int, int] = {}  # rows a split put somewhere
        self.itags: dict[tuple[int, str], int] = {}
        self.keeps: dict[int, int] = {}  # duplicate groups whose kept copy a person chose (or handed back)
        self.level_names: dict[tuple[int, int], int] = {}  # (level, the run's cluster there) renamed
        self.structure: list = []  # merges and splits
        self.merges: set[int] = set()  # the merge edits (seq)
        self.regrouped: dict[int, int] = {}  # clusters a merge or split took apart or together
        for ev in events:
            self.add(ev)

    def add(self, ev) -> None:
        p, seq = ev.payload, ev.seq
        if ev.kind == "rename":
            self.names[int(p["cluster"])] = seq
        elif ev.kind == "junk":
            for c in p["clusters"]:
                self.junk[int(c)] = seq
        elif ev.kind == "tag":
            for t in list(p.get("add") or []) + list(p.get("remove") or []):
                for c in p.get("clusters") or []:
                    self.ctags[int(c), t] = seq
                for i in p.get("items") or []:
                    self.itags[int(i), t] = seq
        elif ev.kind == "move":
            for i in p["items"]:
                self.moved[int(i)] = seq
            if p.get("create") and p["create"].get("name"):
                self.names[int(p["create"]["id"])] = seq
        elif ev.kind == "split":
            for i in p["items"]:
                self.split[int(i)] = seq
            for c in {int(p["cluster"]), *map(int, p.get("ids") or [])}:
                self.regrouped[c] = seq
            self.structure.append(ev)
        elif ev.kind == "merge":
            self.merges.add(seq)
            for c in p["clusters"]:
                self.regrouped[int(c)] = seq
            self.structure.append(ev)
        elif ev.kind == "keep":
            self.keeps[int(p["group"])] = seq
        elif ev.kind == "level_rename":
            self.level_names[int(p["level"]), int(p["cluster"])] = seq

    def clusters(self) -> set[int]:
        return set(self.names) | set(self.junk) | {c for c, _ in self.ctags}


def _carried_client(ev) -> bool:
    return ev.client.startswith("carried from ")


def _owned(nst: CuratedState, events: list, first: int) -> _Touched:
    """What the person changed in the new run after the first carry (edit ``first``): their own
    edits still in effect, and the carried edits they undid."""
    own = _Touched(e for e in nst.done if e.seq > first and not _carried_client(e))
    by_seq = {e.seq: e for e in events}
    done = {e.seq for e in nst.done}
    for e in events:
        if e.seq > first and e.kind == "undo" and not _carried_client(e):
            t = by_seq.get(e.payload.get("target"))
            if t is not None and _carried_client(t) and t.seq not in done:
                own.add(type(t)(e.seq, t.ts, t.kind, t.payload, t.client))  # the undo is the person's edit
    return own


def _recreated(nst: CuratedState, from_run_id: str) -> dict[int, int]:
    """``{previous cluster: new cluster}`` for clusters an earlier carry made again (a cluster
    the person made by moving items, with no match), still there."""
    out = {}
    for e in nst.done:
        p = e.payload
        if e.kind == "move" and p.get("carried_from") == from_run_id and p.get("create") \
                and p.get("carried_cluster") is not None:
            c = nst.clusters.get(int(p["create"]["id"]))
            if c is not None and c.alive:
                out[int(p["carried_cluster"])] = c.id
    return out


def _why(seq: int) -> str:
    return f"changed in this run after the carry (edit {seq}): this run's own edit wins"


def _moved_rows(state: CuratedState) -> set[int]:
    """Rows an effective ``move`` event of the state touched."""
    rows: set[int] = set()
    for ev in state.done:
        if ev.kind == "move":
            rows.update(int(i) for i in ev.payload["items"])
    return rows


def _plan(old: _Side, new: _Side, old_keys, new_keys, carried: dict[int, int],
          scope: _Touched | None = None, owned: _Touched | None = None,
          recreated: dict[int, int] | None = None,
          shared_rows: tuple[np.ndarray, np.ndarray] | None = None,
          heirs: dict[int, int] | None = None, merged_into: dict[int, int] | None = None,
          continued: dict[int, int] | None = None) -> tuple[list, list]:
    """The carried edits as ``(kind, request, what, extra payload)`` in order, and what could
    not be carried. ``scope``: carry only what these previous-run edits touched (the edits
    since the last carry; None: everything, the first carry); ``owned``: what the person
    changed in the new run since the first carry, which is never overridden (listed instead);
    ``recreated``: the clusters an earlier carry made again; ``shared_rows``: the shared items'
    rows in each run (the level names' matching); ``heirs``: each previous cluster's heir (the
    new cluster holding most of its items), ``merged_into``: the new clusters a carried merge
    merges, each with the one it goes into; ``continued``: the split parts a new cluster
    continues (:func:`split_continues`)."""
    ost, nst = old.state, new.state
    owned = owned or _Touched()
    targets = {**(recreated or {}), **carried}
    plan, not_carried = [], []
    new_rows = _rows_of(new_keys)
    parts = _plan_split_parts(old, new, old_keys, new_rows, targets, heirs or {}, merged_into or {}, scope, owned,
                              plan, not_carried, continued or {})

    def refuse(what: str, seq: int, **where) -> None:
        not_carried.append({"what": what, **where, "edit": seq, "reason": _why(seq)})

    for a, b in sorted(targets.items()):
        ca, cb = ost.clusters[a], nst.clusters.get(b)
        if cb is None or not cb.alive:
            continue
        ids = {"cluster": b, "previous_cluster": a}
        # a person's name is carried as theirs also where the automatic namer says the same
        if ca.named_by == "person" and (ca.name != cb.name or cb.named_by != "person") \
                and (scope is None or a in scope.names):
            if b in owned.names:
                refuse("names", owned.names[b], name=ca.name, **ids)
            else:
                plan.append(("rename", {"cluster": b, "name": ca.name}, "names", {}))
        if scope is None:
            if ca.junk and not cb.junk:
                plan.append(("junk", {"clusters": [b], "value": True}, "junk", {}))
        elif a in scope.junk and ca.junk != cb.junk:
            if b in owned.junk:
                refuse("junk", owned.junk[b], value=ca.junk, **ids)
            else:
                plan.append(("junk", {"clusters": [b], "value": ca.junk}, "junk", {}))
        if scope is None:
            add, remove = [t for t in ca.tags if t not in cb.tags], []
        else:
            mine = [t for c, t in scope.ctags if c == a]
            add = [t for t in mine if t in ca.tags and t not in cb.tags]
            remove = [t for t in mine if t not in ca.tags and t in cb.tags]
        for t in [t for t in add + remove if (b, t) in owned.ctags]:
            refuse("cluster_tags", owned.ctags[b, t], tag=t, **ids)
        add = [t for t in add if (b, t) not in owned.ctags]
        remove = [t for t in remove if (b, t) not in owned.ctags]
        if add or remove:
            plan.append(("tag", {"clusters": [b], "add": add, "remove": remove}, "cluster_tags", {}))
    if scope is not None:  # clusters the edits since the last carry touched that have no match
        made = {int(e.payload["create"]["id"]) for e in ost.done if e.kind == "move" and e.payload.get("create")}
        for a in sorted(scope.clusters() - set(targets) - made):
            c = ost.clusters.get(a)
            if c is not None and c.alive:
                not_carried.append({"what": "cluster", "previous_cluster": a, "name": c.name,
                                    "reason": f"cluster {a} ({c.name}) has no match in the new run"})
    # items a person moved: where their target cluster went
    by_target: dict[int, list[int]] = defaultdict(list)
    for r in sorted(_moved_rows(ost) if scope is None else set(scope.moved)):
        rows = new_rows.get(old_keys[r])
        if rows:
            by_target[int(ost.labels[r])].extend(rows)
    for target, rows in sorted(by_target.items()):
        rows = sorted(set(rows))
        c = ost.clusters.get(target)
        there = (targets.get(target) if target in targets else NOISE if target < 0
                 else nst.junk_cluster() if c is not None and c.junk else None)
        if there is not None:  # already where the move puts them (this run's own edit agreed): nothing
            rows = [i for i in rows if nst.labels[i] != there]
            if not rows:
                continue
        mine = {i: owned.moved.get(i, owned.split.get(i)) for i in rows if i in owned.moved or i in owned.split}
        if mine:
            not_carried.append({"what": "moves", "rows": sorted(mine), "items": len(mine),
                                "edits": sorted(set(mine.values())),
                                "reason": "moved in this run after the carry: this run's own edits win"})
            rows = [i for i in rows if i not in mine]
            if not rows:
                continue
        if target in targets:
            to = targets[target]
            rows = [i for i in rows if nst.labels[i] != to]
            if rows:
                plan.append(("move", {"items": rows, "to": to}, "moves", {}))
        elif target in parts:  # into a split part made again here (the part's own items went with it)
            rows = [i for i in rows if i not in parts[target]]
            if rows:
                plan.append(("move", {"items": rows, "to": f"made:{target}"}, "moves", {}))
        elif target < 0:
            rows = [i for i in rows if nst.labels[i] != NOISE]
            if rows:
                plan.append(("move", {"items": rows, "to": NOISE}, "moves", {}))
        elif c is not None and c.junk:
            plan.append(("move", {"items": rows, "to": "junk"}, "moves", {}))
        elif c is not None and c.origin == "new":
            req = {"items": rows, "to": "new"}
            if c.named_by == "person":
                req["name"] = c.name
            plan.append(("move", req, "moves", {"carried_cluster": int(target)}))
            if c.tags:
                plan.append(("tag", {"clusters": ["created"], "add": list(c.tags)}, "cluster_tags", {}))
        else:
            not_carried.append({"what": "moves", "items": len(rows), "to": int(target),
                                "reason": f"cluster {target} ({c.name if c else '?'}) has no match in the new run"})
    # item tags, grouped by the tags to add (and, after the first carry, to remove)
    groups: dict[tuple, list[int]] = defaultdict(list)
    if scope is None:
        for r, tags in sorted(ost.item_tags.items()):
            for i in new_rows.get(old_keys[r], []):
                have = nst.item_tags.get(i, [])
                add = tuple(t for t in tags if t not in have)
                if add:
                    groups[add, ()].append(i)
    else:
        refused: dict[tuple[str, int], list[int]] = defaultdict(list)
        for r, t in sorted(scope.itags):
            keep = t in ost.item_tags.get(r, [])
            for i in new_rows.get(old_keys[r], []):
                if keep == (t in nst.item_tags.get(i, [])):
                    continue
                if (i, t) in owned.itags:
                    refused[t, owned.itags[i, t]].append(i)
                else:
                    groups[((t,), ()) if keep else ((), (t,))].append(i)
        for (t, seq), rows in sorted(refused.items()):
            not_carried.append({"what": "item_tags", "tag": t, "rows": sorted(set(rows)), "items": len(set(rows)),
                                "edit": seq, "reason": _why(seq)})
    for (add, remove), rows in groups.items():
        plan.append(("tag", {"items": sorted(set(rows)), "add": list(add), "remove": list(remove)}, "item_tags", {}))
    _plan_keeps(old, new, old_keys, new_rows, scope, owned, plan, refuse, not_carried)
    if shared_rows is not None:
        _plan_level_names(old, new, shared_rows, scope, owned, plan, refuse, not_carried)
    return plan, not_carried


def _plan_split_parts(old: _Side, new: _Side, old_keys, new_rows, targets: dict, heirs: dict[int, int],
                      merged_into: dict[int, int], scope, owned: _Touched, plan: list, not_carried: list,
                      continued: dict[int, int] | None = None) -> dict:
    """The parts a person's split made (the part that kept the cluster's id too) that have no
    match in the new run but an heir, a new cluster holding most of their items (the rule reports
    them merged: the new fit has them with another part, or with another group): each is made
    again there from its items in that cluster, as a ``move`` to a new cluster with the part's
    name (when the person gave it), tags and junk mark (``carried_cluster``: the part, so a later
    carry finds it, :func:`_recreated`). After the first carry only the parts of the splits
    since; never the items the person moved or split in the new run since (listed). A part a
    new cluster continues (``continued``, :func:`split_continues`) whose heir is another cluster
    gets its items there moved to it (the person's split put them in the part; they were left
    in the heir, under another group's name). Returns ``{part: the new run's rows it takes}``."""
    ost, nst = old.state, new.state
    out = {}
    made = {int(x) for e in ost.done if e.kind == "split" for x in e.payload["ids"]}
    continued = continued or {}

    def in_heir(a: int, b: int, what: str) -> list[int]:
        """The part's items in new cluster ``b`` (as merged), less those the person moved here since."""
        rows = sorted({i for r in np.flatnonzero(ost.labels == a).tolist() for i in new_rows.get(old_keys[r], [])
                       if merged_into.get(int(nst.labels[i]), int(nst.labels[i])) == b})
        mine = {i: owned.moved.get(i, owned.split.get(i)) for i in rows if i in owned.moved or i in owned.split}
        if mine:
            not_carried.append({"what": what, "previous_cluster": a, "name": ost.clusters[a].name,
                                "rows": sorted(mine), "items": len(mine), "edits": sorted(set(mine.values())),
                                "reason": "moved in this run after the carry: this run's own edits win"})
        return [i for i in rows if i not in mine]

    for a in sorted(c.id for c in ost.alive() if c.id in made):
        if scope is not None and a not in scope.regrouped:
            continue
        if a in continued:
            b = heirs.get(a)
            if b is not None and b != continued[a]:
                rows = in_heir(a, b, "moves")
                if rows:
                    plan.append(("move", {"items": rows, "to": continued[a]}, "moves", {"split_part": int(a)}))
            continue
        if a in targets or a not in heirs:
            continue
        b, ca = heirs[a], ost.clusters[a]
        rows = in_heir(a, b, "splits")
        if not rows:
            continue
        req = {"items": rows, "to": "new"}
        if ca.named_by == "person":
            req["name"] = ca.name
        plan.append(("move", req, "splits", {"carried_cluster": int(a), "split_from": int(b)}))
        if ca.tags:
            plan.append(("tag", {"clusters": [f"made:{a}"], "add": list(ca.tags)}, "cluster_tags", {}))
        if ca.junk:
            plan.append(("junk", {"clusters": [f"made:{a}"], "value": True}, "junk", {}))
        out[a] = set(rows)
    return out


def _old_level_names(old: _Side, scope: _Touched | None, not_carried: list) -> dict[tuple[int, int], tuple[str, object]]:
    """``{(level key, the previous run's cluster there): (name, where)}``: the names a person
    gave the previous run's levels (``where``: the studio edit, or ``names.yaml``), the level in
    use left out (its clusters are the curated clusters: the flat carry carries their names).
    After the first carry only the studio's level renames since (``scope``), as for names."""
    lv = old.levels
    at = lv.index[lv.level] if len(lv) and lv.level is not None else None
    out: dict[tuple[int, int], tuple[str, object]] = {}
    if scope is None:
        try:
            yaml = run_level_names(old.run, automatic=False, curated=False)
        except MediaclusterError as e:  # a names.yaml the run's own readers refuse: the rest still carries
            not_carried.append({"what": "level_names", "reason": f"the previous run's names.yaml is not read: {e}"})
            yaml = {}
        for k, named in yaml.items():
            out.update({(int(k), int(c)): (v, NAMES_YAML) for c, v in named.items()})
    seqs = _Touched(old.state.done).level_names
    for k, named in old.state.level_names.items():
        for c, v in named.items():
            if scope is None or (k, c) in scope.level_names:
                out[int(k), int(c)] = (v, seqs.get((k, c)))
    return {kc: v for kc, v in out.items() if kc[0] != at}


def _plan_level_names(old: _Side, new: _Side, shared_rows, scope, owned: _Touched, plan: list, refuse,
                      not_carried: list) -> None:
    """The names a person gave the previous run's levels, carried as ``level_rename`` edits to
    the groups of the new run's levels that continue them: each named level is paired with the
    new level that holds the same groups (:func:`pair_levels`), and a named group's name goes to
    its mutual-majority match there (:func:`match_clusters`, the flat carry's rule); the rest is
    listed with the reason. Never over a name this run's person gave the group (its studio after
    the first carry, its ``names.yaml``)."""
    named = _old_level_names(old, scope, not_carried)
    if not named:
        return
    lo, ln = old.levels, new.levels

    def unmatched(k: int, c: int, reason: str, **more) -> None:
        name, where = named[k, c]
        not_carried.append({"what": "level_names", "level": k, "previous_cluster": c, "name": name,
                            "edit": where, **more, "reason": reason})

    if not len(ln):
        for k, c in sorted(named):
            unmatched(k, c, "the new run has no levels (a flat clusterer): name its clusters instead")
        return
    orows, nrows = shared_rows
    pos_of = {int(k): j for j, k in enumerate(lo.index)}
    old_pos = sorted({pos_of[k] for k, _ in named} | ({lo.level} if lo.level is not None else set()))
    pairs = pair_levels([lo.labels[j][orows] for j in old_pos], [lab[nrows] for lab in ln.labels])
    at_new = ln.index[ln.level] if ln.level is not None else None
    try:
        mine = run_level_names(new.run, automatic=False, curated=False)  # this run's names.yaml
    except MediaclusterError:
        mine = {}
    now = merge_level_names(mine, new.state.level_names)
    taken: dict[tuple[int, int], tuple[int, int]] = {}
    for k in sorted({k for k, _ in named}):
        ids = sorted(c for kk, c in named if kk == k)
        pair = pairs.get(old_pos.index(pos_of[k]))
        if pair is None:
            for c in ids:
                unmatched(k, c, f"no level of the new run holds a group of level_{k} of the previous run")
            continue
        j, share = pair
        nk = int(ln.index[j])
        if nk == at_new:
            for c in ids:
                unmatched(k, c, f"level_{k} of the previous run is the new run's level in use (level_{nk}), "
                                "whose clusters are the curated clusters: name the cluster (a rename)", to_level=nk)
            continue
        lab = ln.labels[j]
        sizes = {int(c): int(m) for c, m in zip(*np.unique(lab[lab >= 0], return_counts=True))}
        olab = lo.labels[pos_of[k]]
        every = sorted(set(np.unique(olab[olab >= 0]).tolist()) | set(ids))  # the level's groups: the rule's records
        previous, _clusters, carried = match_clusters(olab[orows], lab[nrows], every, sizes)
        for rec in (r for r in previous if r["cluster"] in set(ids)):
            c, b = rec["cluster"], carried.get(rec["cluster"])
            name = named[k, c][0]
            if b is None:
                unmatched(k, c, level_name_reason(rec, k, nk, share), to_level=nk, status=rec["status"])
                continue
            ids_new = {"to_level": nk, "cluster": int(b)}
            if now.get(nk, {}).get(b) == name:
                continue  # the new run already has it (its person's own name agreed: nothing to list)
            elif (nk, b) in owned.level_names:
                refuse("level_names", owned.level_names[nk, b], level=k, previous_cluster=c, name=name, **ids_new)
            elif b in mine.get(nk, {}):
                unmatched(k, c, f"this run's names.yaml names group {b} of level_{nk} "
                                f"{mine[nk][b]!r}: its own name wins", **ids_new)
            elif (nk, b) in taken:
                unmatched(k, c, f"group {b} of the new run's level_{nk} takes the name of group {taken[nk, b][1]} "
                                f"of level_{taken[nk, b][0]} of the previous run", **ids_new)
            else:
                taken[nk, b] = (k, c)
                plan.append(("level_rename", {"level": nk, "cluster": int(b), "name": name}, "level_names",
                             {"previous_level": k, "previous_cluster": c}))


def _plan_keeps(old: _Side, new: _Side, old_keys, new_rows, scope, owned, plan, refuse, not_carried) -> None:
    """The copies a person chose to keep of duplicate groups: the same file in the new run,
    kept in the group it is in there (``keep`` edits); after the first carry only the groups the
    previous run's edits since then touched (a keep, a hand-back to the export's rule, or an
    undo of either), each as the previous run has it now, never over the new run's own choice:
    a group handed back there (or whose keep was undone there) is handed back here where the
    carry had kept a copy. The file is found by its path (the copies of a group share their
    content, so the content key names them all), else by its content (moved: the first copy)."""
    ost, nst = old.state, new.state
    groups = sorted(set(ost.kept) | (set(scope.keeps) if scope is not None else set()))
    if not groups:
        return
    by_path = _first_rows(new.relative_keys())
    old_paths = old.relative_keys()
    carried_keeps = _carried_keeps(nst, old.run.run_id)
    for g in groups:
        if scope is not None and g not in scope.keeps:
            continue
        if nst.groups is None:
            not_carried.append({"what": "keep", "previous_group": g, "reason": "the new run has no duplicate "
                                "groups (clustered without --dedup)"})
            continue
        r = ost.kept.get(g)
        if r is None:  # handed back to the rule in the previous run (or its keep undone) since the last carry
            members = {i for row in np.flatnonzero(old.groups == g).tolist()
                       for i in new_rows.get(old_keys[row], [])} if old.groups is not None else set()
            here = {int(nst.groups[i]) for i in members}
            for ng in sorted(ng for ng, pg in carried_keeps.items() if pg == g or (pg is None and ng in here)):
                if ng in owned.keeps:
                    refuse("keep", owned.keeps[ng], group=ng, previous_group=g)
                elif nst.kept.get(ng) is not None:
                    plan.append(("keep", {"group": ng, "item": None}, "keeps", {"previous_group": g}))
            continue
        same = by_path.get(old_paths[r]) if old_paths[r].startswith("path:") else None
        rows = [i for i in ([same] if same is not None else new_rows.get(old_keys[r], [])) if int(nst.groups[i]) >= 0]
        if not rows:
            not_carried.append({"what": "keep", "previous_group": g, "reason": "the copy kept is not in a "
                                "duplicate group of the new run (gone, or no longer a duplicate)"})
            continue
        i = rows[0]
        ng = int(nst.groups[i])
        if nst.kept.get(ng) == i:
            continue  # this run keeps the same copy (its person's own keep agreed: nothing to list)
        if ng in owned.keeps:
            refuse("keep", owned.keeps[ng], group=ng, previous_group=g)
        else:
            plan.append(("keep", {"group": ng, "item": i}, "keeps", {"previous_group": g}))


def _carried_keeps(nst: CuratedState, from_run_id: str) -> dict[int, int | None]:
    """``{new group: the previous run's group or None (a carry before that was recorded)}``
    for the duplicate groups whose kept copy is, now, the one a carry from the run chose (the
    latest keep in effect of the group is a carried one)."""
    last: dict[int, object] = {}
    for e in nst.done:
        if e.kind == "keep":
            last[int(e.payload["group"])] = e
    return {ng: e.payload.get("previous_group") for ng, e in last.items()
            if e.payload.get("carried_from") == from_run_id and e.payload.get("item") is not None}


def _since(old: _Side, since: int) -> list:
    """The previous run's edits made after its edit ``since`` and still in effect."""
    return [e for e in old.state.done if e.seq > since]


def _undone_since(old: _Side, old_run: RunDir, since: int) -> list:
    """The previous run's edits up to ``since`` (carried before) that were undone there since."""
    before = CuratedState(old.fitted, start_names(old_run))
    for e in old.events:
        if e.seq > since:
            break
        before.apply(e)
    now = {e.seq for e in old.state.done}
    return [e for e in before.done if e.seq not in now]


def _not_carried_since(old: _Side, old_run: RunDir, since: int, remade=frozenset()) -> list[dict]:
    """What the previous run's edits since ``since`` did that carrying again does not carry:
    its splits (the matching follows them; the new run's clusters are its own; its merges are
    carried, :func:`_plan_merges`), and undos of edits carried before (this run keeps what was
    carried; undo it here), but for a keep's: the group goes back to the rule here too
    (:func:`_plan_keeps`)."""
    out = [{"what": e.kind, "previous_edit": e.seq,
            "reason": f"a {e.kind} in the previous run is not carried: the new run's clusters are its own "
                      "(the matching follows it)"} for e in _Touched(_since(old, since)).structure
           if e.kind == "split" and not set(map(int, e.payload.get("ids") or [])) & set(remade)]
    out += [{"what": "undo", "previous_edit": e.seq,
             "reason": f"edit {e.seq} ({e.kind}) of the previous run was undone there after it was "
                       "carried; this run keeps it (undo it here if it should go)"}
            for e in _undone_since(old, old_run, since) if e.kind != "keep"]
    return out


def _person_work(state: CuratedState) -> bool:
    return bool(state.done) or any(c.named_by == "person" or c.junk or c.tags for c in state.alive()) \
        or bool(state.item_tags)


def carry_curation(old: str | os.PathLike | RunDir, new: str | os.PathLike | RunDir,
                   cache_dir=None, collection_root=None, progress: bool = False) -> dict:
    """Carry the curation of run ``old`` into run ``new`` (see the module docstring); returns
    the summary (also written to ``new/carry.json``). ``cache_dir``: the embedding cache that
    knows the files' hashes (default the user cache); ``collection_root``: where the previous
    run's files are now, when they moved; ``progress``: a progress bar while files are hashed."""
    t0 = time.perf_counter()
    old_run = old if isinstance(old, RunDir) else _open(old, "--carry-from", collection_root)
    new_run = new if isinstance(new, RunDir) else _open(new, "the new run", None)
    if old_run.run_id == new_run.run_id:
        raise InputError(f"--carry-from {path_to_text(str(old_run.path))} is the same run as "
                         f"{path_to_text(str(new_run.path))}; give the previous run's folder")
    o, nw = _Side(old_run, "old"), _Side(new_run, "new")
    try:
        if o.media and nw.media and o.media != nw.media:
            raise InputError(f"--carry-from {path_to_text(str(old_run.path))} is a run of {o.media}, "
                             f"the new run {path_to_text(str(new_run.path))} one of {nw.media}; "
                             "curation carries between runs of the same media only")
        done = [e for e in nw.events if e.kind == CARRY_EVENT
                and e.payload.get("from_run_id") == old_run.run_id]
        since = max(int(e.payload.get("from_seq") or 0) for e in done) if done else None
        if done and not any(e.seq > since and e.kind in EDITS + ("undo", "redo") for e in o.events):
            prev = new_run.read_carry() or {}
            return {**prev, "already": True, "carried": {k: 0 for k in (prev.get("carried") or {})},
                    "message": f"already carried from run {old_run.run_id} up to its edit {since} "
                               f"(edit {done[-1].seq} here); it has no edit since: nothing carried again"}
        old_keys, new_keys, identity = item_keys(o, nw, cache_dir, progress)
        ofirst, nfirst = _first_rows(old_keys), _first_rows(new_keys)
        shared = [k for k in ofirst if k in nfirst]
        if not shared:
            raise InputError(f"--carry-from {path_to_text(str(old_run.path))} shares no item with "
                             f"{path_to_text(str(new_run.path))} (compared by {identity}: "
                             + ("the files' contents" if identity == "content" else
                                "paths relative to each run's collection root") + ")")
        rows = (np.array([ofirst[k] for k in shared], np.int64), np.array([nfirst[k] for k in shared], np.int64))
        old_lab, new_lab = o.state.labels[rows[0]], nw.state.labels[rows[1]]
        held = set(np.unique(o.state.labels).tolist())  # a cluster emptied by edits is none
        old_ids = sorted(c.id for c in o.state.alive() if c.id in held)
        alive = {c.id for c in nw.state.alive()}
        new_sizes = {int(c): int(k) for c, k in zip(*np.unique(nw.state.labels, return_counts=True))
                     if int(c) in alive}
        scope = owned = None
        if since is not None:  # again: only what the previous run's edits since the last carry did
            scope = _Touched(_since(o, since))
            for e in _undone_since(o, old_run, since):  # a keep undone there: the group back to the rule
                if e.kind == "keep":
                    scope.keeps[int(e.payload["group"])] = e.seq
            owned = _owned(nw.state, nw.events, done[0].seq)
        # the person's merges first: the new clusters their parts became are merged, and the
        # rule then matches the previous clusters with the new ones as they will be
        carried = match_clusters(old_lab, new_lab, old_ids, new_sizes)[2]
        merge_plan, merge_left, merged = _plan_merges(o, rows, new_lab, carried, scope, owned or _Touched())
        for targets, into in merged.values():
            new_lab = np.where(np.isin(new_lab, targets), into, new_lab)
            new_sizes[into] = sum(new_sizes.pop(b) for b in targets if b != into) + new_sizes[into]
        previous, clusters, carried = match_clusters(old_lab, new_lab, old_ids, new_sizes)
        whole = split_continues([e for e in o.state.done if e.kind == "split"], old_lab, new_lab, carried)
        carried.update(whole)
        for r in previous:
            if r["cluster"] in whole:
                r["carried_to"] = whole[r["cluster"]]
                r["continues_split"] = True
        for r in clusters:
            if r["cluster"] in whole.values():
                r["inherits"] = next(a for a, b in whole.items() if b == r["cluster"])
        for r in previous:
            c = o.state.clusters[r["cluster"]]
            r.update(name=c.name, named_by=c.named_by, junk=c.junk, tags=list(c.tags))
            if r["cluster"] in merged:
                r["merged_parts"] = merged[r["cluster"]][0]
        work = _person_work(o.state) or bool(_old_level_names(o, None, []))  # names.yaml levels: too
        heirs = {r["cluster"]: r["heir"] for r in previous if r.get("heir") is not None}
        merged_into = {b: into for targets, into in merged.values() for b in targets}
        if since is None:
            plan, not_carried = _plan(o, nw, old_keys, new_keys, carried, shared_rows=rows, heirs=heirs,
                                      merged_into=merged_into, continued=whole) if work else ([], [])
        else:
            plan, not_carried = _plan(o, nw, old_keys, new_keys, carried, scope, owned,
                                      _recreated(nw.state, old_run.run_id), rows, heirs, merged_into, whole)
            remade = {e[3]["carried_cluster"] for e in plan if e[2] == "splits"}
            not_carried = _not_carried_since(o, old_run, since, remade) + not_carried
        plan, not_carried = merge_plan + plan, merge_left + not_carried
        counts, moved, skipped, seq = record_plan(nw, old_run.run_id, o.state.seq, plan,
                                             since, done[-1].seq if done else None)
        for r in clusters:  # the names now, carried ones included
            r["name"] = nw.state.clusters[r["cluster"]].name
        counts = {k: counts.get(k, 0) for k in CARRIED_WORDS}
        statuses = defaultdict(int)
        for r in previous:
            statuses[r["status"]] += 1
        new_ids = [r["cluster"] for r in clusters if r["status"] == "new"]
        summary = {
            "from": {"run": path_to_text(str(old_run.path.resolve())), "run_id": old_run.run_id,
                     "edits_seq": o.state.seq, "items": len(o.ids)},
            "identity": identity, "rule": RULE,
            "items": len(nw.ids), "shared_items": len(shared),
            "items_new_to_the_collection": int(sum(k not in ofirst for k in nfirst)),
            "items_gone": int(sum(k not in nfirst for k in ofirst)),
            "previous_clusters": dict(sorted(statuses.items())),
            "new_clusters": new_ids,
            "carried": counts, "carried_items_moved": moved,
            "not_carried": not_carried + skipped,
            "edits_seq": seq, "seconds": round(time.perf_counter() - t0, 3),
            "previous": previous, "clusters": clusters,
            "lineage": lineage(o, nw, carried),
            "made_lineage": made_again_lineage(o, nw),
        }
        prev = (new_run.read_carry() or {}) if done else {}
        earlier = prev.get("rounds") or ([{  # a carry.json written before rounds were recorded
            "edits_seq": prev.get("edits_seq"), "from_edits_seq": (prev.get("from") or {}).get("edits_seq"),
            "since": None, "carried": prev.get("carried"),
            "not_carried": len(prev.get("not_carried") or [])}] if prev else [])
        summary["rounds"] = [*earlier, {"edits_seq": seq, "from_edits_seq": o.state.seq, "since": since,
                                        "carried": counts, "not_carried": len(summary["not_carried"])}]
        if not work:
            summary["message"] = (f"the previous run {old_run.run_id} has no edits and no hand-given "
                                  "names: nothing to carry")
        elif not any(summary["carried"].values()) and done and summary["not_carried"]:
            summary["message"] = (f"nothing carried from run {old_run.run_id}'s edits since its edit {since}: "
                                  f"{len(summary['not_carried'])} not carried (carry.json not_carried says why)")
        elif not any(summary["carried"].values()):
            summary["message"] = "nothing to carry: the new run already has what the person did"
        else:
            summary["message"] = (f"carried {sum(summary['carried'].values())} edit(s) from run "
                                  f"{old_run.run_id}" + (f" made since its edit {since}" if done else ""))
        write_summary(new_run, summary)
        write_curated_state(nw)
        return summary
    finally:
        if o.log is not None:
            o.log.close()
        nw.log.close()


def _open(path, what: str, collection_root) -> RunDir:
    try:
        return RunDir.open(path, collection_root=collection_root)
    except RunDirError as e:
        raise RunDirError(f"{what} {path_to_text(str(path))}: {e}") from None


def check_previous(path: str | os.PathLike) -> str:
    """Refuse a ``--carry-from`` that is not a run before any work; its run id."""
    return _open(path, "--carry-from", None).run_id


def resolve_previous(given: str | os.PathLike, out: str | os.PathLike, before_id: str | None,
                     kept: str | os.PathLike | None) -> Path | None:
    """The previous run's folder after ``cluster --out OUT --carry-from OLD``: OLD itself, or,
    when OLD was OUT and the new run replaced it, the kept ``OUT.replaced-<run id>`` (None when
    the replaced run held no person's work and so was not kept)."""
    given, out = Path(given), Path(out)
    if given.resolve() != out.resolve():
        return given
    # ``.replaced-<id>-2``: that name was taken already (rundir keeps a run copied back and replaced again)
    if kept is not None and re.search(rf"\.replaced-{re.escape(str(before_id))}(-\d+)?$", Path(kept).name):
        return Path(kept)
    return None


def statuses_at_carry(doc: dict, fitted: np.ndarray, names0: dict, events) -> tuple[list[str], np.ndarray]:
    """Each item's carry status: that of the cluster which held it when ``carry.json`` (``doc``)
    was written, the state replayed from ``fitted`` / ``names0`` through the ``events`` of the
    new run's log up to the carry (``doc["edits_seq"]``: the log is append-only, so this never
    changes). Returns the statuses and each row's index into them (-1: no cluster, or one the
    summary does not list)."""
    statuses = sorted({str(r["status"]) for r in doc.get("clusters") or [] if isinstance(r, dict) and "status" in r})
    code_of = {int(r["cluster"]): statuses.index(str(r["status"])) for r in doc.get("clusters") or []
               if isinstance(r, dict) and "cluster" in r and "status" in r}
    st = CuratedState(fitted, names0)
    upto = int(doc.get("edits_seq") or 0)
    for ev in events:
        if ev.seq > upto:
            break
        st.apply(ev)
    lut = np.full(max(code_of, default=-1) + 2, -1, dtype=np.int64)  # the last entry: no cluster
    for c, k in code_of.items():
        if c >= 0:
            lut[c] = k
    lab = st.labels
    return statuses, lut[np.where((lab >= 0) & (lab < len(lut) - 1), lab, -1)]


def status_by_items(labels: np.ndarray, statuses: list[str], codes: np.ndarray) -> dict[int, str]:
    """``{cluster: status}`` for the clusters now (``labels``) by their items: the carry status
    (:func:`statuses_at_carry`) more than half of a cluster's items had, so a badge follows the
    items through later merges, splits and moves; no entry where no status has a majority."""
    ok = labels >= 0
    lab, code = labels[ok], codes[ok]
    sizes = dict(zip(*np.unique(lab, return_counts=True)))
    known = code >= 0
    k = len(statuses)
    pairs, counts = np.unique(lab[known] * k + code[known], return_counts=True)
    return {int(p // k): statuses[int(p % k)] for p, n in zip(pairs.tolist(), counts.tolist())
            if 2 * n > sizes[p // k]}


#: what each count of ``carried`` is, as the CLI and the studio say it (one, many)
CARRIED_WORDS = {"names": ("name", "names"), "junk": ("junk mark", "junk marks"),
                 "cluster_tags": ("cluster tag", "cluster tags"), "item_tags": ("item tag", "item tags"),
                 "moves": ("move", "moves"), "keeps": ("kept copy", "kept copies"),
                 "level_names": ("level name", "level names"), "merges": ("merge", "merges"),
                 "splits": ("split part", "split parts")}


def carry_notice(summary: dict | None) -> dict | None:
    """What the studio says about the last carry into its run (``carry.json``, ``summary``):
    ``text``, one line with each kind carried (level names included) and how many were not;
    ``level_names``, the names of the previous run's levels not carried, each with the level,
    the previous run's group, the name and why; ``edits_seq``, the carry's edit here (a page
    shows a notice once per carry). None without a carry."""
    if not isinstance(summary, dict) or not isinstance(summary.get("carried"), dict):
        return None
    c = summary["carried"]
    said = [f"{int(c.get(k) or 0)} {w[0] if int(c.get(k) or 0) == 1 else w[1]}" for k, w in CARRIED_WORDS.items()
            if k in c or k == "level_names"]
    rest = [r for r in summary.get("not_carried") or [] if isinstance(r, dict)]
    levels = [{k: r.get(k) for k in ("level", "previous_cluster", "name", "reason")} for r in rest
              if r.get("what") == "level_names"]
    run_id = (summary.get("from") or {}).get("run_id")
    text = (f"carried from run {run_id}: " + ", ".join(said)
            + (f"; {len(rest)} not carried" + (f" ({len(levels)} level name{'' if len(levels) == 1 else 's'})"
                                                if levels else "") if rest else ""))
    return {"run_id": run_id, "edits_seq": summary.get("edits_seq"), "text": text, "carried": dict(c),
            "not_carried": len(rest), "level_names": levels, "message": summary.get("message")}
