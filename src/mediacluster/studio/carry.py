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

A new cluster that inherits nothing and is no part of a split is ``new``: to review (the studio
marks it). What is carried: names a person gave (never automatic ones), junk marks, cluster tags
(all to the matched cluster), item tags (to the same items), and items a person moved (to the
cluster their target became; to junk / unassigned as before; to a re-created cluster when the
person made it by moving items and it has no match). Each carried event has the client
``carried from RUN_ID`` and a ``carried_from`` field; one ``carry`` event records the carrying
in the same transaction, so a second carry from the same run carries nothing. The summary is
written atomically into the new run (``carry.json``) and returned.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..data import NOISE
from ..errors import InputError, RunDirError, RunLockedError
from ..fileio import path_to_text
from ..rundir import RunDir
from .state import CuratedState, EditConflict, start_names
from .writer import StateWriter

log = logging.getLogger(__name__)

#: the log event that records a carry (it changes no state)
CARRY_EVENT = "carry"
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
        self.state = CuratedState(self.fitted, start_names(run))
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
        from ..embed.store import EmbeddingStore

        with EmbeddingStore(cache_dir) as store:
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


def match_clusters(old_labels: np.ndarray, new_labels: np.ndarray, old_ids: list[int],
                   new_sizes: dict[int, int]) -> tuple[list[dict], list[dict], dict[int, int]]:
    """The rule of the module docstring on the shared items' labels (row j of both arrays is one
    shared item; labels < 0 are no cluster). ``old_ids``: the previous curated clusters;
    ``new_sizes``: every new cluster with its size (all its items). Returns the previous
    clusters' records, the new clusters' records and ``{previous: new}`` where carried."""
    old_labels = np.asarray(old_labels, dtype=np.int64)
    new_labels = np.asarray(new_labels, dtype=np.int64)
    n = defaultdict(int)
    for a, b in zip(old_labels.tolist(), new_labels.tolist()):
        n[a, b] += 1
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


def _moved_rows(state: CuratedState) -> set[int]:
    """Rows an effective ``move`` event of the state touched."""
    rows: set[int] = set()
    for ev in state.done:
        if ev.kind == "move":
            rows.update(int(i) for i in ev.payload["items"])
    return rows


def _plan(old: _Side, new: _Side, old_keys, new_keys, carried: dict[int, int]) -> tuple[list, list]:
    """The carried edits as ``(kind, request, what)`` in order, and what could not be carried."""
    ost, nst = old.state, new.state
    plan, not_carried = [], []
    for a, b in sorted(carried.items()):
        ca, cb = ost.clusters[a], nst.clusters.get(b)
        if cb is None or not cb.alive:
            continue
        if ca.named_by == "person" and ca.name != cb.name:
            plan.append(("rename", {"cluster": b, "name": ca.name}, "names"))
        if ca.junk and not cb.junk:
            plan.append(("junk", {"clusters": [b], "value": True}, "junk"))
        add = [t for t in ca.tags if t not in cb.tags]
        if add:
            plan.append(("tag", {"clusters": [b], "add": add}, "cluster_tags"))
    new_rows = _rows_of(new_keys)
    # items a person moved: where their target cluster went
    by_target: dict[int, list[int]] = defaultdict(list)
    for r in sorted(_moved_rows(ost)):
        rows = new_rows.get(old_keys[r])
        if rows:
            by_target[int(ost.labels[r])].extend(rows)
    for target, rows in sorted(by_target.items()):
        rows = sorted(set(rows))
        c = ost.clusters.get(target)
        if target in carried:
            to = carried[target]
            rows = [i for i in rows if nst.labels[i] != to]
            if rows:
                plan.append(("move", {"items": rows, "to": to}, "moves"))
        elif target < 0:
            rows = [i for i in rows if nst.labels[i] != NOISE]
            if rows:
                plan.append(("move", {"items": rows, "to": NOISE}, "moves"))
        elif c is not None and c.junk:
            plan.append(("move", {"items": rows, "to": "junk"}, "moves"))
        elif c is not None and c.origin == "new":
            req = {"items": rows, "to": "new"}
            if c.named_by == "person":
                req["name"] = c.name
            plan.append(("move", req, "moves"))
            if c.tags:
                plan.append(("tag", {"clusters": ["created"], "add": list(c.tags)}, "cluster_tags"))
        else:
            not_carried.append({"what": "moves", "items": len(rows), "to": int(target),
                                "reason": f"cluster {target} ({c.name if c else '?'}) has no match in the new run"})
    # item tags, grouped by the tags to add
    groups: dict[tuple, list[int]] = defaultdict(list)
    for r, tags in sorted(ost.item_tags.items()):
        for i in new_rows.get(old_keys[r], []):
            have = nst.item_tags.get(i, [])
            add = tuple(t for t in tags if t not in have)
            if add:
                groups[add].append(i)
    for add, rows in groups.items():
        plan.append(("tag", {"items": sorted(set(rows)), "add": list(add)}, "item_tags"))
    return plan, not_carried


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
        if done:
            prev = new_run.read_carry() or {}
            return {**prev, "already": True, "carried": {k: 0 for k in (prev.get("carried") or {})},
                    "message": f"already carried from run {old_run.run_id} (edit {done[0].seq}); "
                               "nothing carried again"}
        old_keys, new_keys, identity = item_keys(o, nw, cache_dir, progress)
        ofirst, nfirst = _first_rows(old_keys), _first_rows(new_keys)
        shared = [k for k in ofirst if k in nfirst]
        if not shared:
            raise InputError(f"--carry-from {path_to_text(str(old_run.path))} shares no item with "
                             f"{path_to_text(str(new_run.path))} (compared by {identity}: "
                             + ("the files' contents" if identity == "content" else
                                "paths relative to each run's collection root") + ")")
        old_lab = o.state.labels[[ofirst[k] for k in shared]]
        new_lab = nw.state.labels[[nfirst[k] for k in shared]]
        held = set(np.unique(o.state.labels).tolist())  # a cluster emptied by edits is none
        old_ids = sorted(c.id for c in o.state.alive() if c.id in held)
        alive = {c.id for c in nw.state.alive()}
        new_sizes = {int(c): int(k) for c, k in zip(*np.unique(nw.state.labels, return_counts=True))
                     if int(c) in alive}
        previous, clusters, carried = match_clusters(old_lab, new_lab, old_ids, new_sizes)
        for r in previous:
            c = o.state.clusters[r["cluster"]]
            r.update(name=c.name, named_by=c.named_by, junk=c.junk, tags=list(c.tags))
        work = _person_work(o.state)
        plan, not_carried = _plan(o, nw, old_keys, new_keys, carried) if work else ([], [])
        counts, moved, skipped, seq = _write(nw, old_run.run_id, o.state.seq, plan)
        for r in clusters:  # the names now, carried ones included
            r["name"] = nw.state.clusters[r["cluster"]].name
        counts = {k: counts.get(k, 0) for k in ("names", "junk", "cluster_tags", "item_tags", "moves")}
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
        }
        if not work:
            summary["message"] = (f"the previous run {old_run.run_id} has no edits and no hand-given "
                                  "names: nothing to carry")
        elif not any(summary["carried"].values()):
            summary["message"] = "nothing to carry: the new run already has what the person did"
        else:
            summary["message"] = (f"carried {sum(summary['carried'].values())} edit(s) from run "
                                  f"{old_run.run_id}")
        _write_summary(new_run, summary)
        _write_state(nw)
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


def _write_summary(run: RunDir, summary: dict, tries: int = 20) -> None:
    """``carry.json``, under the folder's lock (a studio writing its state holds it a moment)."""
    for k in range(tries):
        try:
            with run.writing("carry"):
                run.write_carry(summary)
            return
        except RunLockedError:
            if k == tries - 1:
                raise
            time.sleep(0.5)


def _write(nw: _Side, from_run_id: str, from_seq: int, plan: list) -> tuple[dict, int, list, int]:
    """Record the planned edits and the ``carry`` event in one transaction of the new run's log
    (each checked against the state as it is then, as the studio checks an edit)."""
    st, lg = nw.state, nw.log
    client = f"carried from {from_run_id}"
    counts: dict[str, int] = defaultdict(int)
    moved = 0
    skipped = []
    with lg.writing():
        for ev in lg.events(since=st.seq):  # a studio's edits made meanwhile first
            st.apply(ev)
        if any(e.kind == CARRY_EVENT and e.payload.get("from_run_id") == from_run_id
               for e in lg.events()):
            raise EditConflict(f"run {from_run_id} was carried into this run meanwhile")
        created = None
        for kind, req, what in plan:
            if req.get("clusters") == ["created"]:
                if created is None:
                    continue
                req = {**req, "clusters": [created]}
            if kind == "move":
                created = None
            try:
                payload = st.prepare(kind, req)
            except (InputError, EditConflict) as e:
                skipped.append({"what": what, "edit": kind, "reason": str(e)})
                continue
            ev = lg.insert(kind, {**payload, "carried_from": from_run_id}, client)
            st.apply(ev)
            if kind == "move":
                created = (payload.get("create") or {}).get("id")
                moved += len(payload["items"])
            counts[what] += 1
        ev = lg.insert(CARRY_EVENT, {"from_run_id": from_run_id, "from_seq": from_seq,
                                     "events": int(sum(counts.values()))},
                       client)
        st.apply(ev)
    return dict(counts), moved, skipped, st.seq


def _write_state(nw: _Side) -> None:
    """The curated state written back into the new run (``curated.json``, ``curated_*``), as
    the studio writes it; a studio open on the run writes it itself when its folder is busy."""
    st = nw.state
    if not st.done:
        return
    writer = StateWriter(nw.run, nw.ids, nw.run.read_extra("imagenet_probs", mmap=True),
                         write_state=lambda: st.seq, replaced=lambda: False)
    try:
        writer.write(st.seq, st.labels.copy(), st.cluster_table(), st.status(),
                     {i: list(t) for i, t in st.item_tags.items()})
    except RunLockedError as e:
        log.warning("carry: the curated state is in the edit log but could not be written into "
                    "the run now (%s); the studio writes it when it opens the run", e)


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
    if kept is not None and Path(kept).name.endswith(f".replaced-{before_id}"):
        return Path(kept)
    return None
