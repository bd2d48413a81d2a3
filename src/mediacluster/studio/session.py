"""One open run in the studio: its data, the curated state and its edits, and the views the
page reads (clusters, members, items). The HTTP layer (:mod:`.app`) only translates requests
to these calls. :class:`Studio` holds the run and the edit log and delegates the concepts that
have their own module: the items' renderings (:mod:`.media`), search (:mod:`.search`), split
previews (:mod:`.split`), the hierarchy levels (:mod:`.levels`), writing the curated state
back (:mod:`.writer`), exports (:mod:`.exports`) and publishing (:mod:`.publish`).

Edits are acknowledged when their event is committed to the edit log (fsync'd); the curated
state is then written back into the run folder by a background writer a moment later
(``assignments`` gain ``curated_cluster``, ``curated_name``, ``curated_status``,
``curated_tags``; ``curated.json`` holds the clusters), under the run folder's lock
(``run.writing("studio")``), stamped with the edit number it reflects. Opening a run whose
written state is behind its log (the server was killed before writing) writes it at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from ..curated_tree import CuratedTree, curated_tree
from ..data import NOISE, OUTLIER
from ..errors import InputError, RunDirError, RunLockedError
from ..locations import under
from ..naming.overrides import merge_level_names, run_level_names
from ..naming.support import BY_HAND, CHANGED, NOT_MEASURED, SPLIT_UNMEASURED
from ..naming.support import of_records as support_of_records
from ..rundir import CARRY, RunDir, path_to_text
from .carry import carry_notice, status_by_items, statuses_at_carry
from .editlog import Event
from .levels import find_level, level_views
from .media import ItemMedia
from .search import SearchService
from .split import Previews, Splitter
from .state import CuratedState, EditConflict, start_names, whole_number
from .writer import WRITE_DELAY, StateWriter

log = logging.getLogger(__name__)

MAX_PAGE = 500
ORDERS = ("typical", "borderline", "map", "file", "label")  # of a cluster's members (members)
#: A run of at least this many items that has no 2-D map yet opens at once on a PCA map, and its
#: UMAP map is laid out in the background and replaces it (the page picks it up when it polls):
#: laying it out before listening kept a user waiting 9.2 s at 10,000 items and 40.7 s at 50,000
#: (benchmarks/RESULTS.md, "What a user waits for"). Smaller runs get their UMAP map first, as
#: before (a few seconds at most). Runs over ``report.build.MAP_FULL_MAX`` get a PCA map anyway.
MAP_BACKGROUND_MIN = 5000


def changed_clusters(fitted: np.ndarray, labels: np.ndarray) -> set[int]:
    """The ids whose items are no longer those the fit gave them (a merge, a move or a split:
    an item gained or lost), in one pass."""
    fitted, labels = np.asarray(fitted, np.int64), np.asarray(labels, np.int64)
    k = int(max(fitted.max(initial=-1), labels.max(initial=-1))) + 1
    if k <= 0:
        return set()
    same = (fitted == labels) & (labels >= 0)
    kept = np.bincount(labels[same], minlength=k)
    now = np.bincount(labels[labels >= 0], minlength=k)
    before = np.bincount(fitted[fitted >= 0], minlength=k)
    return {int(c) for c in np.flatnonzero((kept != now) | (kept != before))}


class Studio:
    """A run opened for curation (see the module docstring)."""

    def __init__(self, run: RunDir | str | os.PathLike, map_method: str = "auto",
                 write_delay: float = WRITE_DELAY, progress: bool = False, warm: bool = True,
                 collection_root: str | os.PathLike | None = None, lazy_map: bool = False):
        # lazy_map: the 2-D map is made on first use, not on opening (``studio --publish`` /
        # ``--export`` of a run with a saved model never use it: 15 s of UMAP on 2,200 items)
        # collection_root: where the files are now, when given a run folder's path (a RunDir
        # carries its own, see RunDir.open)
        self.run = run if isinstance(run, RunDir) else RunDir.open(run, collection_root=collection_root)
        self.run_id = self.run.run_id
        info = self.run.info
        self.encoder_info = info.get("encoder") or {}
        self.media = self.encoder_info.get("media", "image")
        t0 = time.perf_counter()
        a = self.run.read_assignments()
        self.n = len(a)
        if self.n == 0:
            raise RunDirError(f"{self.run.path} has no items")
        self.ids = [str(x) for x in a["id"].tolist()]
        self.paths = [p if isinstance(p, str) and p else None for p in a["path"].tolist()] \
            if "path" in a else [None] * self.n
        self.fitted = a["cluster"].to_numpy(np.int64)
        self.probability = (a["probability"].to_numpy(np.float64) if "probability" in a
                            else np.ones(self.n))
        self.assigned = a["assigned_cluster"].to_numpy(np.int64) if "assigned_cluster" in a else None
        self.truth = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                      for v in a["label"].tolist()] if "label" in a else None
        self.dup_group = a["duplicate_group"].to_numpy() if "duplicate_group" in a else None
        self.dup_of = ([v if isinstance(v, str) and v else None for v in a["duplicate_of"].tolist()]
                       if "duplicate_of" in a else None)
        self._dup_groups = None  # dupgroups.DuplicateGroups, made on first use
        self.run_levels = self.run.read_levels(a)
        self.levels = level_views(self.run_levels)
        self.level_names = self.run.read_level_names() if self.levels else {}  # the records (splits)
        # every level's names before the studio's own (automatic < names.yaml: run_level_names)
        self._level_named0 = run_level_names(self.run, curated=False) if self.levels else {}
        self._level_ids = {lv["index"]: set(np.unique(lv["labels"][lv["labels"] >= 0]).tolist()) for lv in self.levels}
        self._tree: tuple[int, CuratedTree | None] | None = None  # (seq, the curated tree then)
        self._carry: tuple | None = None  # (carry.json's mtime, the items' statuses then, (seq, by cluster))
        self._carry_notice: tuple | None = None  # (carry.json's mtime, what the page says of it)
        self.vectors = self.run.read_vectors(mmap=True)
        if len(self.vectors) != self.n:
            raise RunDirError(f"{self.run.path}: {len(self.vectors)} vectors but {self.n} assignments; "
                              "the folder is damaged, re-run cluster")
        self.imagenet = self.run.read_extra("imagenet_probs", mmap=True)
        self._xy, self._map_args, self.map_method, later = None, (map_method, progress), None, False
        if not lazy_map:
            self._xy, self.map_method, later = self._map(map_method, progress)
        self.map_pending = later
        self._display = [os.path.basename(path_to_text(p)) if p else path_to_text(i)
                         for p, i in zip(self.paths, self.ids)]
        self._lock = threading.RLock()
        self.log = self.run.edits()
        self._names0 = start_names(self.run)
        auto = self.run.read_automatic_names()
        self._sure0 = support_of_records(auto)  # naming.support, per fitted cluster
        # the concept each fitted ImageNet name claims: a cluster whose items changed is re-measured
        self._cands0 = {int(e["cluster"]): e["candidates"] for e in auto
                        if e.get("method") == "imagenet-wordnet" and e.get("candidates") and "name_sure" in e}
        self._remeasured: dict[tuple[int, int], dict | None] = {}  # (cluster, edit seq) -> record
        self.state = CuratedState(self.fitted, self._names0, self.dup_group)
        for ev in self.log.events():
            self.state.apply(ev)
        self.files = ItemMedia(self.paths, self.media)
        self.searcher = SearchService(self.vectors, self.imagenet, self.encoder_info, self.media,
                                      within=self._within, briefs=self._scored_briefs)
        self.splitter = Splitter(self.vectors, self.fitted, self.levels, self.level_names, self.run.models,
                                 imagenet=self.imagenet,
                                 encoder=self.searcher.encoder if self.searcher.clip else None)
        self.previews = Previews()
        self.writer = StateWriter(self.run, self.ids, self.imagenet, self.write_state, self.replaced,
                                  write_delay)
        # behind: killed before the last edits were written: write them now (a publish or export
        # recorded after the written edit changes nothing to write)
        self.writer.start(behind=not self.writer.current(self.state.seq, self.state.changed))
        self.load_seconds = time.perf_counter() - t0
        if later:
            threading.Thread(target=self._finish_map, name="studio-map", daemon=True).start()
        self._warming = threading.Event()  # set while the warm-up has the search index to build
        if warm:
            self._warming.set()
            threading.Thread(target=self._warm, name="studio-warm", daemon=True).start()

    def _warm(self) -> None:
        """Build the search structures and load the saved model (the reduced space splits
        work in) in the background, so the first search and the first split are quick (the
        first automatic split of a 5,000-item cluster of a 100,000-item run took 12.5 s, most
        of it loading the model, against 0.9 s for the next one)."""
        try:
            self.searcher.warm()
        except Exception as e:  # noqa: BLE001 - a search will build them (and report) on demand
            log.warning("studio: preparing search failed: %s", e)
        finally:
            self._warming.clear()
        try:
            self.splitter.reduced_space()  # an unusable model is logged there; splits then use a PCA
        except Exception as e:  # noqa: BLE001 - the first split will retry and report
            log.warning("studio: loading the model for splits failed: %s", e)

    # -- setup ---------------------------------------------------------------------------------
    @property
    def xy(self) -> np.ndarray:
        """The 2-D map (made now when the studio was opened with ``lazy_map``: no UMAP left to
        the background then, a run that would get one gets its quick PCA map)."""
        if self._xy is None:
            self._xy, self.map_method, _ = self._map(*self._map_args)
        return self._xy

    @xy.setter
    def xy(self, value: np.ndarray) -> None:
        self._xy = value

    def _map(self, method: str, progress: bool) -> tuple[np.ndarray, str, bool]:
        """(xy, method, whether a UMAP map is still to be laid out by :meth:`_finish_map`)."""
        cached = self.run.read_map(self.n)
        if cached is not None and method in ("auto", cached[1].get("method")):
            return np.asarray(cached[0], dtype=np.float32), cached[1].get("method", "?"), False
        from ..report.build import MAP_FULL_MAX, layout_2d, map_2d  # the report's map: one per run

        use = "umap" if method == "auto" else method
        if use == "umap" and MAP_BACKGROUND_MIN <= self.n <= MAP_FULL_MAX:
            log.info("studio: %d items without a 2-D map: a PCA map now, the UMAP map in the "
                     "background (cached in the run folder)", self.n)
            xy, _ = layout_2d(np.asarray(self.vectors), "pca")
            return np.asarray(xy, dtype=np.float32), "pca", True
        log.info("studio: computing the 2-D map of %d items (%s, once; cached in the run folder)",
                 self.n, use)
        with self.run.writing("studio"):
            xy = map_2d(self.run, np.asarray(self.vectors), method=use)
        return np.asarray(xy, dtype=np.float32), use, False

    def _finish_map(self) -> None:
        """Lay out the UMAP map (``report.build.run_map``, the run's map as the report makes
        it), cache it in the run folder and show it instead of the PCA map the studio opened
        with (see :data:`MAP_BACKGROUND_MIN`). The folder's lock is held to write it only."""
        from ..report.build import run_map

        try:
            xy, meta = run_map(self.run, np.asarray(self.vectors), "umap")
        except Exception as e:  # noqa: BLE001 - the PCA map stays; say why
            log.warning("studio: the UMAP map could not be laid out (%s); the PCA map stays", e)
            with self._lock:
                self.map_pending = False
            return
        xy = np.asarray(xy, dtype=np.float32)
        try:
            if not self.replaced():
                with self.run.writing("studio"):
                    self.run.write_map(xy, meta)
        except (RunLockedError, OSError) as e:  # shown all the same; laid out again next time
            log.warning("studio: the UMAP map could not be cached in the run folder (%s)", e)
        with self._lock:
            self.xy, self.map_method, self.map_pending = xy, meta["method"], False
        log.info("studio: the UMAP map is ready (%.1f s)", meta["seconds"])

    def close(self) -> None:
        """Write what is not written yet and stop the background writer."""
        self.writer.stop()
        try:
            self.write_state()
        except RunLockedError as e:
            log.warning("studio: the curated state could not be written now (%s); it is safe in "
                        "the edit log and is written the next time the studio opens the run", e)
        self.log.close()

    # -- reading -------------------------------------------------------------------------------
    def replaced(self) -> bool:
        """True when the run folder now holds another run (re-clustered while open)."""
        try:
            return RunDir(self.run.path).run_id != self.run_id
        except (OSError, ValueError, KeyError, RunDirError):
            return True

    def _check_current(self) -> None:
        """An :class:`EditConflict` (a 409) when the folder holds another run now: this studio's
        edits, exports and models are the old run's, and must not land in the new one."""
        if self.replaced():
            raise EditConflict("the run folder now holds another run (it was re-clustered); "
                               "restart the studio on it")

    def info(self) -> dict:
        return {
            "run": path_to_text(str(self.run.path)), "run_name": path_to_text(self.run.path.name),
            "run_id": self.run_id, "n": self.n, "media": self.media,
            "encoder": self.encoder_info.get("name"), "map_method": self.map_method,
            "map_pending": self.map_pending,
            **self.searcher.kinds(),
            "levels": [{"name": lv["name"], "groups": lv["groups"]} for lv in self.levels],
            "has_truth": self.truth is not None, "has_duplicates": self.dup_group is not None,
            "models": self.run.models.versions(),
            "seq": self.state.seq,
        }

    def version(self) -> dict:
        """What the page polls: the edit number it shows (after :meth:`sync`: another
        process's edits count), whether the state is written, what undo / redo would take back."""
        self.sync()
        with self._lock:
            return {"seq": self.state.seq, "written": self.writer.written_seq,
                    "can_undo": self.state.can_undo(), "can_redo": self.state.can_redo(),
                    "undo": self.state.undo_target(), "redo": self.state.redo_target(),
                    "replaced": self.replaced(), "map": self.map_method, "map_pending": self.map_pending}

    def sync(self) -> int:
        """Apply the events other processes appended to the log since this one last looked (another
        studio on the run, a ``--carry-from``): one read of the log's last edit number when there
        are none, else the new events only. Called by every read the page polls or reloads
        (``/api/version``, ``/api/clusters``, ``/api/labels``), so a page shows another
        person's edits within a poll without editing itself."""
        with self._lock:
            if self.log.last_seq() > self.state.seq:
                for ev in self.log.events(since=self.state.seq):
                    self.state.apply(ev)
                self.writer.changed()
            return self.state.seq

    def map_bytes(self) -> bytes:
        """x then y, float32 little-endian (n each)."""
        xy = self.xy  # one map, also while the UMAP map replaces the PCA one
        return np.ascontiguousarray(xy[:, 0], "<f4").tobytes() + np.ascontiguousarray(xy[:, 1], "<f4").tobytes()

    def labels_bytes(self) -> tuple[int, bytes]:
        self.sync()
        with self._lock:
            return self.state.seq, np.ascontiguousarray(self.state.labels, "<i4").tobytes()

    def level_bytes(self, name: str) -> bytes:
        """A level's labels: for a level the curated tree keeps, each item's group there (its
        curated cluster's, as the published model answers; unassigned items keep -1 / -2), else the
        run's labels of that level."""
        lab = find_level(self.levels, name)["labels"]
        with self._lock:
            tree = self.tree()
        if tree is not None and name in tree.names:
            lab = tree.rows[tree.names.index(name)]
        return np.ascontiguousarray(lab, "<i4").tobytes()

    def carry_statuses(self, labels: np.ndarray, seq: int) -> dict[int, str]:
        """``{cluster: status}`` for the curated clusters at edit ``seq`` (``labels``), by their
        items (:mod:`.carry`: ``carry.json`` says what each cluster was to the previous run's
        curated clusters when the carry was made; a cluster now has the status most of its
        items had then, so the "new" badge follows the items through later merges and splits).
        The items' statuses are re-read when the file changes, the clusters' once per edit."""
        try:
            stamp = os.stat(self.run.file(CARRY)).st_mtime_ns
        except OSError:
            return {}
        if self._carry is None or self._carry[0] != stamp:
            doc = self.run.read_carry() or {}
            self._carry = (stamp, statuses_at_carry(doc, self.fitted, self._names0, self.log.events()), None)
        if self._carry[2] is None or self._carry[2][0] != seq:
            statuses, codes = self._carry[1]
            self._carry = (stamp, self._carry[1], (seq, status_by_items(labels, statuses, codes)))
        return self._carry[2][1]

    def carry_notice(self) -> dict | None:
        """What the last ``--carry-from`` into this run carried and what not (the level names not
        carried listed): :func:`.carry.carry_notice` of ``carry.json``, re-read when it changes;
        None without a carry."""
        try:
            stamp = os.stat(self.run.file(CARRY)).st_mtime_ns
        except OSError:
            return None
        if self._carry_notice is None or self._carry_notice[0] != stamp:
            self._carry_notice = (stamp, carry_notice(self.run.read_carry()))
        return self._carry_notice[1]

    def tree(self) -> CuratedTree | None:
        """The curated tree now (:func:`~mediacluster.curated_tree.curated_tree`: what publishing
        would write), computed once per edit; call with the lock held."""
        if self._tree is None or self._tree[0] != self.state.seq:
            junk = [c.id for c in self.state.alive() if c.junk]
            self._tree = (self.state.seq, curated_tree(self.run_levels, self.state.labels, junk))
        return self._tree[1]

    def clusters(self) -> dict:
        self.sync()
        with self._lock:
            table = self.state.cluster_table()
            labels = self.state.labels.copy()
            seq = self.state.seq
            undo, redo = self.state.can_undo(), self.state.can_redo()
            targets = {"undo": self.state.undo_target(), "redo": self.state.redo_target()}
            tree = self.tree()
            named = self.named_levels()
        sizes = {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
        carry = self.carry_statuses(labels, seq)
        self._name_sure(table, labels, seq)
        for e in table:
            e["carry"] = carry.get(e["id"])  # after --carry-from: kept / split / merged / new, by its items
            e["new"] = e["carry"] == "new"  # most of its items had no ancestor in the previous run: to review
        special = [{"id": NOISE, "name": "unassigned (noise)", "size": sizes.get(NOISE, 0)},
                   {"id": OUTLIER, "name": "outliers", "size": sizes.get(OUTLIER, 0)}]
        # each curated cluster's group at each coarse level the published model keeps, named
        # (group_clusters: each group's cluster id in the run's level, what a level rename names)
        groups, group_names, group_clusters = {}, {}, {}
        if tree is not None:
            groups = tree.groups()
            by_level = tree.names_by_level(named, {}, [e["name"] for e in table if e.get("junk")])
            group_names = {name: by_level[str(j)] for j, name in enumerate(tree.names)}
            group_clusters = {name: {str(g): int(c) for g, c in enumerate(np.asarray(tree.sources[j]["clusters"]).tolist())}
                              for j, name in enumerate(tree.names)}
        return {"seq": seq, "clusters": table, "special": special, "groups": groups,
                "group_names": group_names, "group_clusters": group_clusters,
                "can_undo": undo, "can_redo": redo, "carry_notice": self.carry_notice(), **targets}

    def named_levels(self) -> dict[int, dict[int, str]]:
        """Every level's names now: ``naming.run_level_names``' rule with the studio's level
        renames of the edits in effect as its last layer; call with the lock held."""
        return merge_level_names(self._level_named0, self.state.level_names)

    def _level_request(self, req: dict) -> dict:
        """A level rename as the page sends it (``level``: the level's name in the level switch,
        ``level_0``, or its key; ``cluster``: the group's cluster id in that level of the run,
        ``/api/clusters``' ``group_clusters``) as the edit records it (the level's key)."""
        if not isinstance(req, dict):
            raise InputError("an edit is a JSON object")
        given = req.get("level")
        lv = next((v for v in self.levels if given in (v["name"], v["index"], str(v["index"]))), None)
        if lv is None:
            have = ", ".join(v["name"] for v in self.levels) or "none: the run has no levels"
            raise InputError(f"the run has no level {given!r} (levels: {have})")
        if self.run_levels.level is not None and lv["index"] == self.run_levels.index[self.run_levels.level]:
            raise InputError(f"{lv['name']} is the level in use: its clusters are the curated clusters; "
                             "rename those (a 'rename' edit)")
        cid = whole_number(req.get("cluster"), "cluster")
        if cid not in self._level_ids.get(lv["index"], set()):
            raise InputError(f"{lv['name']} has no cluster {cid} (the junk branch is named after the junk "
                             "cluster: rename that)" if cid < 0 else f"{lv['name']} has no cluster {cid}")
        return {"level": int(lv["index"]), "cluster": cid, "name": req.get("name")}

    def _name_sure(self, table: list[dict], labels: np.ndarray, seq: int) -> None:
        """Each cluster's ``auto_name`` and how sure its name is, in place: a person's always; a
        fitted cluster's automatic name as measured while it holds the items it was measured
        on; after a merge, a move or a split changed them (at edit ``seq``), re-measured on its
        items now, against the whole collection as the run measured it (an ImageNet name:
        ``Splitter.measure``, once per cluster and edit), else (a CLIP name, a run without
        probabilities) not measured: null, and why."""
        changed = changed_clusters(self.fitted, labels)
        with self._lock:  # what the names a split gave claim (Cluster.concept), by the name given
            concepts = {c.id: {**c.concept, "same": c.touched == c.concept["seq"]}
                        for c in self.state.alive() if c.concept}
        for e in table:
            e["auto_name"] = (self._names0.get(e["id"]) or (None,))[0] if e["origin"] == "fitted" else None
            concept = concepts.get(e["id"])
            if e["named_by"] == "person":
                e.update(name_sure=True, name_support=None, name_why=BY_HAND)  # as naming.support.of_names
            elif concept is not None and concept.get("name") == e["name"]:
                # a part a split made, with the name its preview gave it: as the preview measured it
                # while it holds the items the split gave it, else measured again on its items now
                if concept["same"] and concept.get("record"):
                    e.update(concept["record"])
                elif "candidates" in concept:
                    e.update(self._remeasure(e["id"], labels, seq, concept) or dict(NOT_MEASURED, name_why=CHANGED))
                else:  # a name the run measured (a tree split's) whose items changed since
                    e.update(dict(NOT_MEASURED, name_why=CHANGED))
            elif e["origin"] == "fitted" and e["name"] == e["auto_name"] and e["id"] in self._sure0:
                if e["id"] not in changed:
                    e.update(self._sure0[e["id"]])
                else:
                    e.update(self._remeasure(e["id"], labels, seq) or dict(NOT_MEASURED, name_why=CHANGED))
            elif e["origin"] == "split" or (e["origin"] == "fitted" and e["name"] != e["auto_name"]):
                # a part of a split whose automatic name was not measured (or typed at an older split)
                e.update(dict(NOT_MEASURED, name_why=SPLIT_UNMEASURED))

    def _remeasure(self, cid: int, labels: np.ndarray, seq: int, concept: dict | None = None) -> dict | None:
        """The record of cluster ``cid``'s automatic name on its items at edit ``seq``: the name a
        split gave it (``concept``), else the fitted cluster's."""
        key = (int(cid), int(seq))
        if key not in self._remeasured:
            members = np.flatnonzero(labels == cid)
            rec = None
            if concept is None and cid in self._cands0:
                concept = {"method": "imagenet-wordnet", "candidates": self._cands0[cid]}
            if concept is not None and len(members):
                rec = self.splitter.measure(members, np.zeros(len(members), np.int64), {0: concept}).get(0)
            if len(self._remeasured) > 4096:
                self._remeasured.clear()
            self._remeasured[key] = rec
        return self._remeasured[key]

    def cluster(self, cid: int) -> dict:
        with self._lock:
            c = self.state.clusters.get(int(cid))
            members = self.state.members(cid)
            labels = self.state.labels.copy()
            seq = self.state.seq
        if cid not in (NOISE, OUTLIER) and (c is None or not c.alive):
            raise KeyError(cid)
        out = {"id": int(cid), "size": int(len(members))}
        if c is not None:
            out.update(c.to_dict())
            self._name_sure([out], labels, seq)  # how sure its name is, as the cluster list says
        if len(members) and self.probability is not None:
            out["mean_probability"] = float(self.probability[members].mean())
        out["top_classes"] = self._top_classes(members) if len(members) else []
        if self.truth is not None and len(members):
            vals, cnt = np.unique(np.array([str(self.truth[i]) for i in members]), return_counts=True)
            o = np.argsort(-cnt)[:3]
            out["true_labels"] = [{"label": str(vals[j]), "share": float(cnt[j] / len(members))} for j in o]
        return out

    def _top_classes(self, idx: np.ndarray, k: int = 5) -> list[dict]:
        if self.imagenet is None or not len(idx):
            return []
        from ..naming.wordnet import imagenet_names

        names = imagenet_names()
        mass = np.zeros(self.imagenet.shape[1], dtype=np.float64)
        idx = np.sort(np.asarray(idx))
        for a in range(0, len(idx), 8192):
            mass += np.asarray(self.imagenet[idx[a:a + 8192]], dtype=np.float64).sum(axis=0)
        top = np.argsort(-mass)[:k]
        return [{"class": names[j], "index": int(j), "share": float(mass[j] / len(idx))} for j in top]

    def members(self, cid: int, offset: int = 0, limit: int = 60, order: str = "typical") -> dict:
        """A page of a cluster's members: ``typical`` (highest membership first), ``borderline``
        (lowest first), ``map`` (left to right on the map), ``file`` (by file name) or, with
        true labels, ``label``: the items whose label is rarest in the cluster first (those not of
        its main label: ``evaluate``'s label issues), then the others, each most typical first;
        unlabelled items last."""
        limit = int(max(1, min(MAX_PAGE, limit)))
        with self._lock:
            idx = self.state.members(cid)
            seq = self.state.seq
        if cid >= 0 and (int(cid) not in self.state.clusters or not self.state.clusters[int(cid)].alive):
            raise KeyError(cid)
        if order == "typical":
            idx = idx[np.argsort(-self.probability[idx], kind="stable")]
        elif order == "borderline":
            idx = idx[np.argsort(self.probability[idx], kind="stable")]
        elif order == "map":
            idx = idx[np.argsort(self.xy[idx, 0], kind="stable")]
        elif order == "file":
            idx = np.array(sorted(idx.tolist(), key=lambda i: self._display[i]), dtype=np.int64)
        elif order == "label":
            if self.truth is None:
                raise InputError("order 'label' needs true labels (cluster --labels-from-folders, or a "
                                 "manifest's label column); this run has none")
            lab = [self.truth[i] for i in idx.tolist()]
            count: dict = {}
            for v in lab:
                count[v] = count.get(v, 0) + 1
            share = np.array([count[v] if v is not None else np.inf for v in lab], dtype=np.float64)
            idx = idx[np.lexsort((-self.probability[idx], share))]
        else:
            raise InputError(f"order must be {', '.join(ORDERS[:-1])} or {ORDERS[-1]}, not {order!r}")
        page = idx[int(max(0, offset)): int(max(0, offset)) + limit]
        return {"cluster": int(cid), "seq": seq, "total": int(len(idx)), "offset": int(offset),
                "items": [self._item_brief(int(i)) for i in page]}

    def briefs(self, ids: list[int]) -> list[dict]:
        """Name, cluster and membership of the given items (a selection's page, a hover)."""
        if len(ids) > MAX_PAGE:
            raise InputError(f"at most {MAX_PAGE} items at a time")
        items = [self._check_item(i) for i in ids]
        with self._lock:
            return [self._item_brief(i) for i in items]

    def all_members(self, cid: int) -> list[int]:
        with self._lock:
            return self.state.members(cid).tolist()

    def _item_brief(self, i: int, score: float | None = None) -> dict:
        out = {"i": i, "name": self._display[i], "cluster": int(self.state.labels[i]),
               "p": round(float(self.probability[i]), 4)}
        if self.truth is not None:  # a run with true labels: the item's, for a tile's tooltip
            out["label"] = self.truth[i]
        if score is not None:
            out["score"] = round(float(score), 4)
        return out

    def _check_item(self, i) -> int:
        try:
            i = int(i)
        except (TypeError, ValueError):
            raise InputError(f"item must be an item number, got {i!r}") from None
        if not 0 <= i < self.n:
            raise KeyError(i)
        return i

    def item(self, i: int, k: int = 12) -> dict:
        i = self._check_item(i)
        with self._lock:
            cur = int(self.state.labels[i])
            c = self.state.clusters.get(cur)
            tags = list(self.state.item_tags.get(i, []))
        out = {
            "i": i, "id": path_to_text(self.ids[i]), "name": self._display[i],
            "path": path_to_text(self.paths[i]) if self.paths[i] else None,
            "cluster": cur, "cluster_name": c.name if c is not None else None,
            "fitted_cluster": int(self.fitted[i]),
            "assigned_cluster": int(self.assigned[i]) if self.assigned is not None else None,
            "probability": float(self.probability[i]), "tags": tags,
            "label": self.truth[i] if self.truth is not None else None,
            "x": float(self.xy[i, 0]), "y": float(self.xy[i, 1]),
        }
        if self.imagenet is not None:
            from ..naming.wordnet import imagenet_names

            p = np.asarray(self.imagenet[i], dtype=np.float32)
            top = np.argsort(-p)[:5]
            names = imagenet_names()
            out["top_classes"] = [{"class": names[j], "p": round(float(p[j]), 4)} for j in top]
        if self.dup_group is not None:
            g = self.dup_group[i]
            if g is not None and not (isinstance(g, float) and np.isnan(g)) and int(g) >= 0:
                same = np.flatnonzero(self.dup_group == g)
                out["duplicates"] = [self._item_brief(int(j)) for j in same if j != i][:50]
            else:
                out["duplicates"] = []
        if not self.index.ready and self._warming.is_set():
            # the background warm-up is to build the index (at 50,000 items the first item view
            # waited 2.4-4 s for it, RESULTS "Slow corners at scale"): the view answers now and
            # the page asks for the neighbours (GET /api/search/similar, which waits for it)
            out["neighbours"] = None
            return out
        D, idx = self.index.search(np.asarray(self.vectors[i], dtype=np.float32), k + 1)
        out["neighbours"] = [self._item_brief(int(j), s) for s, j in zip(D[0], idx[0]) if j >= 0 and j != i][:k]
        return out

    # -- duplicate groups (dupgroups.py) -----------------------------------------------------------
    @property
    def dup_groups(self):
        """The run's duplicate groups (:class:`.DuplicateGroups`), made on first use."""
        if self._dup_groups is None:
            from .dupgroups import DuplicateGroups

            links = None
            if self.dup_group is not None:
                d = self.run.read_duplicates(columns=["id", "link_kind", "link_distance"])
                if d is not None and len(d) == self.n and [str(x) for x in d["id"].tolist()] == self.ids:
                    links = (d["link_kind"].fillna("").astype(str).tolist(),
                             d["link_distance"].to_numpy(np.float64))
            rep = None if self.dup_of is None else np.array([v is None for v in self.dup_of], bool)
            self._dup_groups = DuplicateGroups(self.dup_group, rep, self.paths,
                                               self.run.collection_root.path, links)
        return self._dup_groups

    def duplicate_groups(self, offset: int = 0, limit: int = 20, order: str = "size", prefer=None,
                         members_limit: int | None = None) -> dict:
        """A page of the run's duplicate groups (:meth:`.DuplicateGroups.page`): each group's
        members (its first ``members_limit``) with their curated cluster and top-level folder, and
        the copy the ``classes`` export keeps (with ``prefer``, its preferred folders) and why."""
        from .dupgroups import MEMBERS_LIMIT

        with self._dup_view(prefer) as (groups, args, prefer):
            out = groups.page(*args, int(offset), int(limit), order, prefer, self.state.kept.copy(),
                              int(members_limit or MEMBERS_LIMIT))
            out["seq"] = self.state.seq
        return out

    def duplicate_group(self, group: int, members_offset: int = 0, members_limit: int | None = None,
                        prefer=None) -> dict | None:
        """One duplicate group with ``members_limit`` of its members from ``members_offset``
        (:meth:`.DuplicateGroups.group`); None for a group the run does not have."""
        from .dupgroups import MEMBERS_LIMIT

        with self._dup_view(prefer) as (groups, args, prefer):
            if int(group) not in groups.members:
                return None
            out = groups.group(int(group), *args, prefer, self.state.kept.get(int(group)), int(members_offset),
                               int(members_limit or MEMBERS_LIMIT))
            out["seq"] = self.state.seq
        return out

    @contextlib.contextmanager
    def _dup_view(self, prefer):
        """Under the lock: the groups, ``(labels, junk, brief)`` as they are now, the checked
        ``prefer``."""
        from .exports import check_prefer

        prefer = check_prefer(prefer)
        groups = self.dup_groups
        with self._lock:
            labels = self.state.labels.copy()
            junk = {c.id for c in self.state.alive() if c.junk}
            names = {c.id: c.name for c in self.state.alive()}

            def brief(i):
                e = self._item_brief(i)
                e["cluster_name"] = names.get(e["cluster"])
                return e

            yield groups, (labels, junk, brief), prefer

    # -- images and sounds (media.py) --------------------------------------------------------------
    def thumbnail(self, i: int, size: int = 160) -> tuple[bytes, str]:
        """``(bytes, media type)``: a thumbnail of item ``i`` (see :meth:`.ItemMedia.thumbnail`)."""
        return self.files.thumbnail(self._check_item(i), size)

    def preview(self, i: int) -> tuple[bytes, str]:
        """A larger rendering of item ``i`` for the item view (see :meth:`.ItemMedia.preview`)."""
        return self.files.preview(self._check_item(i))

    def audio(self, i: int) -> tuple[bytes, str]:
        """A short re-encoded excerpt of audio item ``i`` (see :meth:`.ItemMedia.audio`)."""
        return self.files.audio(self._check_item(i))

    def audio_file(self, i: int) -> tuple[Path | bytes, str]:
        """The excerpt of :meth:`audio` as a cached file, or its bytes when the cache cannot keep
        it (see :meth:`.ItemMedia.audio_file`)."""
        return self.files.audio_file(self._check_item(i))

    # -- editing ---------------------------------------------------------------------------------
    def edit(self, kind: str, req: dict, client: str = "", user: str = "") -> dict:
        """Check, record (committed to disk) and apply one edit; returns the acknowledgement.

        Another process's edits (a second studio on the run, a carry) are applied first, under
        the log's write lock, and the edit is checked against the state they leave: an edit made
        on a view older than theirs applies to what is there now when what it names still exists
        (the later rename, tag or junk flag of a cluster wins; moved items move from where they
        are now); it is refused with :class:`EditConflict` (a 409 saying what happened) when a
        cluster it names was merged away, when a split's cluster changed members since its
        preview, and when an undo / redo's ``target`` is no longer the edit it would take back.
        ``client``: the page's id; ``user``: the name of the person, kept with the edit and said in
        the other pages' 409s. A rename to the name a person already gave records nothing: the
        answer says ``unchanged`` (``seq`` the state's; :meth:`.CuratedState.changes_nothing`)."""
        self._check_current()
        previewed = kind == "split" and isinstance(req, dict) and "preview" in req
        if previewed:
            req = self.previews.request(req)
        with self._lock:
            with self.log.writing():
                for ev in self.log.events(since=self.state.seq):  # another process's edits first
                    self.state.apply(ev)
                try:
                    if kind == "undo":  # target: the edit the person saw as the latest (see prepare_undo)
                        payload = self.state.prepare_undo(req.get("target"))
                    elif kind == "redo":
                        payload = self.state.prepare_redo(req.get("target"))
                    elif kind == "level_rename":
                        payload = self.state.prepare(kind, self._level_request(req))
                    else:
                        payload = self.state.prepare(kind, req)
                except EditConflict as e:  # said to this client: its own edits are "this page"'s
                    raise e.asked_by(client, user) from None
                if previewed:  # what each part's automatic name claims, while it is the preview's name
                    payload["concepts"] = [c if c is not None and name == shown else None for c, name, shown
                                           in zip(req["concepts"], payload["names"], req["shown"])]
                if self.state.changes_nothing(kind, payload):  # the name it has: nothing recorded
                    return {"seq": self.state.seq, "kind": kind, "edit": payload, "unchanged": True,
                            "can_undo": self.state.can_undo(), "can_redo": self.state.can_redo()}
                ev = self.log.insert(kind, payload, client, user)
            self.state.apply(ev)
            ack = self._ack(ev)
        self.writer.edited()
        return ack

    def _ack(self, ev: Event) -> dict:
        p = ev.payload
        brief = {k: v for k, v in p.items() if k not in ("items", "parts")}
        if "items" in p:
            brief["n_items"] = len(p["items"])
        return {"seq": ev.seq, "kind": ev.kind, "edit": brief, "can_undo": self.state.can_undo(),
                "can_redo": self.state.can_redo()}

    def events(self, since: int = 0, limit: int = 200) -> dict:
        # clipped to SQLite's integer range: a bigger number overflowed (a 500)
        evs = self.log.events(since=max(0, min(since, 2**62)), limit=max(1, min(1000, limit)))
        out = []
        for e in evs:
            d = e.to_dict()
            p = d["payload"]
            if "items" in p:
                p = {**{k: v for k, v in p.items() if k not in ("items", "parts")}, "n_items": len(p["items"])}
            d["payload"] = p
            out.append(d)
        return {"seq": self.state.seq, "events": out}

    def _record(self, kind: str, payload: dict, client: str = "", user: str = "") -> None:
        """A non-edit event (publish, export) in the log, for the history. It changes nothing
        the writer writes: where the state before it is written, so is the state after it
        (else ``/api/version`` said ``written`` < ``seq`` until the next edit)."""
        with self._lock:
            caught_up = self.writer.written_seq >= self.state.seq
            ev = self.log.append(kind, payload, client, user)
            self.state.apply(ev)
            if caught_up:
                self.writer.written_seq = max(self.writer.written_seq, self.state.seq)

    # -- writing the curated state into the run (writer.py) ------------------------------------
    @property
    def _write_lock(self) -> threading.Lock:
        """Held while this process writes into the run folder (see :class:`.StateWriter`)."""
        return self.writer.lock

    def write_state(self, force: bool = False) -> int:
        """Write ``curated_*`` columns into the assignments and ``curated.json``; returns the
        edit number written. Nothing is written for a run nobody edited."""
        with self._lock:
            seq = self.state.seq
            if (seq == self.writer.written_seq and not force) or (seq == 0 and not self.state.done):
                return self.writer.written_seq
            labels = self.state.labels.copy()
            table = self.state.cluster_table()
            status = self.state.status()
            item_tags = {i: list(t) for i, t in self.state.item_tags.items()}
            level_names = {k: dict(v) for k, v in self.state.level_names.items()}
            changed = self.state.changed
        return self.writer.write(seq, labels, table, status, item_tags, force=force, level_names=level_names,
                                 changed=changed)

    # -- search (search.py) -------------------------------------------------------------------
    @property
    def index(self):
        """The run's nearest-neighbour index (:class:`.VectorIndex`)."""
        return self.searcher.index

    def _within(self, cluster) -> np.ndarray | None:
        """The items of ``cluster`` now (None: no cluster given), for a search limited to it."""
        if cluster is None or cluster == "":
            return None
        try:
            cid = int(cluster)
        except (TypeError, ValueError):
            raise InputError(f"cluster must be a cluster id, got {cluster!r}") from None
        with self._lock:
            if cid >= 0 and (cid not in self.state.clusters or not self.state.clusters[cid].alive):
                raise KeyError(cid)
            return self.state.members(cid)

    def _scored_briefs(self, scored: list[tuple[int, float]]) -> list[dict]:
        with self._lock:
            return [self._item_brief(i, s) for i, s in scored]

    def search_words(self, q: str, cluster=None, limit: int = 200) -> dict:
        return self.searcher.search_words(q, cluster, limit)

    def search_item(self, i: int, cluster=None, limit: int = 100) -> dict:
        return self.searcher.search_item(self._check_item(i), cluster, limit)

    def search_image(self, data: bytes, filename: str = "", cluster=None, limit: int = 100) -> dict:
        return self.searcher.search_image(data, filename, cluster, limit)

    # -- split (split.py) ----------------------------------------------------------------------
    @property
    def _model(self):
        """The cluster job's model, when the run kept it (see :meth:`.Splitter.reduced_space`)."""
        return self.splitter.model

    def _reduced_space(self) -> np.ndarray | None:
        return self.splitter.reduced_space()

    def split_preview(self, cid: int, k: int | None = None, reducer: str = "auto") -> dict:
        """Re-cluster only the members of ``cid`` with the pipeline's own stages (or follow the
        run's hierarchy: see :mod:`.split`) and keep the result for :meth:`edit` ("split")."""
        t0 = time.perf_counter()
        cid = whole_number(cid, "cluster")
        with self._lock:
            c = self.state.clusters.get(cid)
            if c is None or not c.alive:
                raise KeyError(cid)
            members = self.state.members(cid)
            named = self.named_levels()  # a tree split's parts keep a person's level names
        split = self.splitter.split(cid, members, k, reducer, hand=named)
        with self._lock:  # a part is not named like another cluster (a finer level's stored name
            # or a fresh one can be the name of a cluster elsewhere): "name 2" then, as naming does
            taken = {x.name for x in self.state.alive() if x.id != c.id}
        names = split.part_names(c.name, taken)
        # a cluster a person named keeps their name on the part that keeps its id (the largest,
        # as the split edit gives it): splitting "bowling" leaves "bowling" and a new part
        kept = int(np.argmax(np.bincount(split.parts, minlength=len(names)))) if c.named_by == "person" else None
        if kept is not None:
            names[kept] = c.name
        out_parts = []
        for p, name in enumerate(names):
            size, examples = split.examples(p)
            sure = (dict(name_sure=True, name_support=None, name_why=BY_HAND, named_by="person") if p == kept
                    else split.part_sure(p, name))
            out_parts.append({"part": p, "size": int(size), "name": name, **sure,
                              "alternatives": split.alternatives(p),
                              "examples": [self._item_brief(int(i)) for i in examples]})
        pid = self.previews.keep(split, cid, names)
        return {"preview": pid, "cluster": int(cid), "n": int(len(members)), "k": len(out_parts),
                "space": split.space, "level": split.level, "parts": out_parts,
                "labels": {"items": members.tolist(), "parts": split.parts.tolist()},
                "seconds": round(time.perf_counter() - t0, 3)}

    # -- exports and publishing --------------------------------------------------------------------
    def _snapshot(self):
        with self._lock:
            return (self.state.seq, self.state.labels.copy(), self.state.cluster_table(),
                    self.state.status(), {i: list(t) for i, t in self.state.item_tags.items()})

    def _levels_now(self):
        """(the curated tree now, every level's names now), as one snapshot of the state."""
        with self._lock:
            return self.tree(), self.named_levels()

    def curated_table(self):
        from ..naming.tables import cluster_lineage, group_lineage, made_lineage
        from .exports import curated_table, level_columns

        with self._lock:
            seq, labels, table, status, tags = self._snapshot()
            tree, named = self._levels_now()
        names = {e["id"]: e["name"] for e in table}
        dups = None if self.dup_group is None else (self.dup_group, self.dup_of)
        levels = level_columns(tree, named, [e["name"] for e in table if e.get("junk")])
        df = curated_table(self.ids, self.paths, self.fitted, labels, names, status,
                           self.probability, tags, self.truth, duplicates=dups, levels=levels)
        # each curated cluster's lasting id across re-clusters (that of the fitted cluster it holds most of)
        lasting = group_lineage(labels, self.fitted, cluster_lineage(self.run), self.run.run_id,
                                made_lineage(self.run))
        df.insert(df.columns.get_loc("curated_name") + 1, "lineage", [lasting.get(int(c)) for c in labels])
        return seq, self.run.with_metadata(df, ids=self.ids), table  # a manifest's own columns last

    def export(self, kind: str, mode: str = "symlink", client: str = "", user: str = "", prefer=None,
               split: str | None = None) -> dict:
        """Write an export (:func:`.exports.export`). ``prefer``: the ``classes`` export's folder
        prefixes under the collection, first preferred, of which a duplicate group keeps its copy;
        ``split``: ``"top"`` keeps the collection's top-level folders (``train/``, ``test/``) above
        its class folders."""
        from .exports import KINDS, check_prefer, check_split, export

        if kind not in KINDS:
            raise InputError(f"unknown export {kind!r}; choose one of {', '.join(KINDS)}")
        split = check_split(split)
        self._check_current()  # the old run's curation is not the new run's export
        with self._lock:
            chosen = dict(self.state.kept)
        seq, df, table = self.curated_table()
        root = self.run.collection_root.path  # Label Studio serves files under one folder:
        if root is not None and not all(under(os.path.abspath(p), root) for p in self.paths if p):
            root = None  # the collection's, when every file lies in it; else their common folder
        prefer = check_prefer(prefer)
        res = export(kind, self.run.exports_dir(), paths=self.paths, table=df, clusters=table, seq=seq,
                     mode=mode, root=root, media=self.media, prefer=prefer,
                     collection_root=self.run.collection_root.path, split=split, chosen=chosen)
        res["relative"] = path_to_text(os.path.relpath(res["path"], self.run.path))
        record = {"kind": kind, "path": res["relative"], "edits_seq": seq}
        if prefer is not None:
            record["prefer"] = prefer
        if split is not None:
            record["split"] = split
        self._record("export", record, client, user)
        return res

    def publish(self, client: str = "", user: str = "", note: str | None = None) -> dict:
        """Write a new model version that predicts the curated clusters (see :mod:`.publish`;
        ``note``: what this version is, kept in it and shown by ``mediacluster models``)."""
        from .publish import publish_curated

        t0 = time.perf_counter()
        self._check_current()  # nor its model a version of the new run's store
        with self._lock:
            seq, labels, table, _, tags = self._snapshot()
            named = self.named_levels()
        if not any(not e.get("junk") and e.get("size") for e in table):  # a model answering junk to every upload
            raise InputError("nothing to publish: every cluster left is junk or empty, so the "
                             "model would place every new item in junk; undo the junk marks "
                             "(or move items into a cluster) first")
        self._name_sure(table, labels, seq)  # how sure each name is goes into the model (names_support)
        self.write_state()
        base = self._model if self._reduced_space() is not None else None
        xy = None if base is not None else self.xy  # the map only when no saved model gives a space
        with self._write_lock:
            res = publish_curated(self.run, self.vectors, labels, table, self.probability, self.fitted,
                                  base=base, xy=xy, map_method=self.map_method,
                                  encoder=self.encoder_info, seq=seq, item_tags=tags, levels=self.run_levels,
                                  items={"ids": self.ids, "paths": self.paths}, note=note,
                                  level_names=named)
        res["seconds"] = round(time.perf_counter() - t0, 2)
        self._record("publish", {k: res[k] for k in ("version", "agreement", "edits_seq")}, client, user)
        return res
