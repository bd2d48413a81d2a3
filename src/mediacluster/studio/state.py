"""The curated state of a run, derived from its edit log.

The state starts from the fitted clustering (``assignments.cluster``: ``-2`` outlier, ``-1``
noise, ``>= 0`` a cluster) and the names it had (automatic names, ``names.yaml`` on top), and
changes only by replaying events (:mod:`.editlog`) in order:

=========  =====================================================================================
rename     ``{"cluster", "name"}``
merge      ``{"clusters": [...], "into"}``: the others' members join ``into`` (which keeps its
           name); the others are gone
move       ``{"items": [...], "to", "create": null | {"id", "name", "junk"}}``: items to a
           cluster, to ``-1`` (unassigned), or to a new cluster created by this event
split      ``{"cluster", "items": [...], "parts": [...], "ids": [...], "names": [...],
           "named_by": [...]}``: member ``items[j]`` goes to ``ids[parts[j]]``; the largest part
           keeps the cluster's id; ``named_by``: per part "person" for a name the person typed
           (not the fallback, nor a preview's name left as shown), else "automatic" (absent from
           older logs: all automatic)
           (``"concepts"``: per part, the automatic name a preview gave it, how sure the preview
           measured it and what it claims, ``{"name", "record", "method", "candidates"}``, or
           null; added by the session)
tag        ``{"clusters": [...], "items": [...], "add": [...], "remove": [...]}``
junk       ``{"clusters": [...], "value": bool}``: flag (or unflag) clusters as junk
keep       ``{"group", "item"}``: the copy of duplicate group ``group`` (a ``--dedup`` run's) a
           clean dataset keeps, a person's choice over the export's rule (``exports.keep_copy``);
           ``item`` null hands the group back to the rule
level_     ``{"level", "cluster", "name"}``: name a group of a coarser level (``level``: its key
rename     in ``level_names.json``, ``cluster``: the run's cluster id at that level; the studio
           finds both from the group the page shows, ``Studio.edit``); the names a person gave
           the levels' groups are ``level_names`` (``naming.run_level_names``' studio layer)
undo/redo  ``{"target": seq}``: the latest effective edit / the latest undone one
=========  =====================================================================================

Every event is self-contained: ids a new cluster gets and the members a split saw are recorded
in the event when it is made (:meth:`CuratedState.prepare`), so replaying the log always gives
the same state. Undo is linear (like an editor): it takes back the latest edit still in effect;
redo re-applies the latest undone edit, until a new edit is made. The state after an undo is
rebuilt from the start state and the edits still in effect.
"""

from __future__ import annotations

import copy
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from ..data import NOISE, OUTLIER
from ..errors import InputError
from .editlog import Event

EDITS = ("rename", "merge", "move", "split", "tag", "junk", "keep", "level_rename")
MAX_NAME = 200
MAX_TAG = 64
JUNK_NAME = "junk"


class EditConflict(InputError):
    """The edit no longer fits the state (another tab changed it first): answered with 409.

    ``by``: the edit that changed it (``{"seq", "kind", "client", "user", "ts"}``), said between
    ``message`` and ``tail`` in a person's words (:func:`edit_words`: who made it, from the
    point of view of the page asking, and when); :meth:`asked_by` says it to that page."""

    def __init__(self, message: str, by: dict | None = None, tail: str = "", verb: bool = False):
        self.head, self.by, self.tail, self.verb = message, by, tail, verb
        super().__init__(self.said())

    def said(self, asking: str = "", now: float | None = None, asking_user: str = "") -> str:
        if self.by is None:
            return self.head
        return self.head + edit_words(self.by, asking, now, kind=self.verb, asking_user=asking_user) + self.tail

    def asked_by(self, client: str, user: str = "") -> EditConflict:
        """The message said to the page (or client) ``client`` of the person named ``user``:
        "this page" for its own edits, "you, on another page" for the same name's elsewhere."""
        self.args = (self.said(client, asking_user=user),)
        return self

    def details(self) -> dict:
        """The 409's JSON beyond the message: the edit that changed the state, for a program
        (``client``: the page id it sent, "" for none; ``user``: the name the person gave, ""
        for none; ``ts``: seconds since the epoch)."""
        if self.by is None:
            return {}
        return {"edit": {k: self.by.get(k, "" if k == "user" else None) for k in ("seq", "kind", "client", "user", "ts")}}


def author(client: str, asking: str = "", user: str = "", asking_user: str = "") -> str:
    """Who made an edit, in words a person can use: the page asking ("this page"), the person's
    name when one was given (the page's "your name" box, ``studio --user``; "you, on another page"
    when it is the asking page's own name), else "another studio page" (the random id a page sends
    says nothing to a person), a carry, the command line, or a client that sent no id (a script)."""
    if client and client == asking:
        return "this page"
    if user:
        return "you, on another page" if user == asking_user else user
    if client.startswith("carried from "):
        return f"the carry from run {client.removeprefix('carried from ')}"
    if client == "cli":
        return "the command line"
    return "another studio page" if client else "a script or tool (no page id)"


def ago(ts: float, now: float | None = None) -> str:
    """How long ago ``ts`` was: "just now", "40 s ago", "12 min ago, at 14:03" (local time)."""
    import time

    now = time.time() if now is None else now
    s = max(0.0, now - ts)
    if s < 2:
        return "just now"
    if s < 90:
        return f"{s:.0f} s ago"
    clock = time.strftime("%H:%M", time.localtime(ts))
    if s < 90 * 60:
        return f"{s / 60:.0f} min ago, at {clock}"
    if s < 36 * 3600:
        return f"{s / 3600:.0f} h ago, at {clock}"
    return time.strftime("on %Y-%m-%d at %H:%M", time.localtime(ts))


def edit_words(by: dict, asking: str = "", now: float | None = None, kind: bool = False,
               asking_user: str = "") -> str:
    """An edit named for a person: "edit 12 (by Ana, 40 s ago)", "edit 12 (by another studio
    page, 40 s ago)"; ``kind``: with what it was, "edit 12 (a merge by this page, just now)"."""
    what = f"a {by['kind']} by " if kind and by.get("kind") else "by "
    when = f", {ago(by['ts'], now)}" if by.get("ts") is not None else ""
    who = author(by.get("client") or "", asking, by.get("user") or "", asking_user)
    return f"edit {by['seq']} ({what}{who}{when})"


@dataclass
class Cluster:
    id: int
    name: str
    named_by: str = "automatic"  # "automatic" | "person"
    origin: str = "fitted"  # "fitted" | "split" | "new" | "junk"
    tags: list[str] = field(default_factory=list)
    junk: bool = False
    alive: bool = True
    parent: int | None = None  # the cluster a split or move took it from
    # the automatic name a split gave it: how sure the preview measured it, what it claims, and
    # the edit that gave it ("seq"), for Studio._name_sure; not shown
    concept: dict | None = None
    touched: int = 0  # the last edit that changed its items (0: none, the fitted items)
    # the edit that merged it away (``{"seq", "kind", "into", "client", "user", "ts"}``), for the 409 of an edit made
    # on a view from before it (another studio or tab); not shown
    gone: dict | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "named_by": self.named_by, "origin": self.origin,
                "tags": list(self.tags), "junk": self.junk, "parent": self.parent}


def whole_number(v, what: str) -> int:
    """``v`` as an int (a JSON request's number, also written 2.0 or "2"), or an InputError
    naming ``what`` (a fraction, infinity, a bool, a list: never a 500)."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise InputError(f"{what} must be a whole number, got {v!r}")
    try:
        f = float(v)
        if f != int(f):
            raise ValueError
        return int(f)
    except (ValueError, OverflowError):
        raise InputError(f"{what} must be a whole number, got {v!r}") from None


def listed(v, what: str) -> list:
    """``v`` when it is a JSON list, ``[]`` when missing (None), else an InputError naming
    ``what`` (a number or a text where a list belongs was a 500, iterated or not)."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise InputError(f"{what} must be a list, got {type(v).__name__}")
    return v


def whole_numbers(v, what: str) -> np.ndarray:
    """A JSON list of whole numbers as a flat int64 array, or an InputError naming ``what``
    (numpy alone read "5" and true as numbers and cut 1.5 to 1)."""
    v = listed(v, what)
    if any(isinstance(x, bool | str) for x in v):
        raise InputError(f"{what} must be whole numbers")
    try:
        given = np.asarray(v)
        arr = given.astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} must be whole numbers") from None
    if arr.ndim != 1:
        raise InputError(f"{what} must be a flat list of whole numbers")
    if given.dtype.kind not in "iu" and not (given == arr).all():
        raise InputError(f"{what} must be whole numbers")
    return arr


def clean_text(value, what: str, limit: int) -> str:
    """A name or tag as given by a person: trimmed, one line, no control characters."""
    if not isinstance(value, str):
        raise InputError(f"{what} must be text, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", value).strip()
    if not text:
        raise InputError(f"{what} is empty")
    if len(text) > limit:
        raise InputError(f"{what} is {len(text)} characters long; the limit is {limit}")
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs") or c in "\u2028\u2029"]
    if bad:
        raise InputError(f"{what} contains a control character ({ord(bad[0]):#06x})")
    return text


class CuratedState:
    """Per-item curated cluster, per-cluster names / tags / junk flags, per-item tags, the copy
    of a duplicate group a person keeps (``kept``: group -> item). ``groups``: each item's
    duplicate group (-1: none; None: the run has no duplicate data), which ``keep`` edits are
    checked against."""

    def __init__(self, labels: np.ndarray, names: dict[int, tuple[str, str]], groups=None):
        labels = np.asarray(labels, dtype=np.int64)
        self.n = len(labels)
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self._labels0 = labels.copy()
        ids = sorted(set(labels[labels >= 0].tolist()) | set(names))
        self._clusters0 = {c: Cluster(c, *(names.get(c) or (f"cluster {c}", "automatic"))) for c in ids}
        self._max_id = max(ids, default=-1)
        self.seq = 0
        self.changed = 0  # the last event that may have changed the state (an edit, undo, redo)
        self.done: list[Event] = []
        self.undone: list[Event] = []
        self._reset()

    def _reset(self) -> None:
        self.labels = self._labels0.copy()
        self.clusters: dict[int, Cluster] = copy.deepcopy(self._clusters0)
        self.item_tags: dict[int, list[str]] = {}
        self.kept: dict[int, int] = {}
        self.level_names: dict[int, dict[int, str]] = {}  # level key -> the run's cluster id -> a person's name

    # -- reading -------------------------------------------------------------------------------
    def sizes(self) -> dict[int, int]:
        lab = self.labels
        ids, counts = np.unique(lab, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def alive(self) -> list[Cluster]:
        return [c for c in self.clusters.values() if c.alive]

    def members(self, cid: int) -> np.ndarray:
        return np.flatnonzero(self.labels == int(cid))

    def names(self, person_only: bool = False) -> dict[int, str]:
        return {c.id: c.name for c in self.alive() if not person_only or c.named_by == "person"}

    def junk_cluster(self) -> int | None:
        return next((c.id for c in self.alive() if c.origin == "junk"), None)

    def can_undo(self) -> bool:
        return bool(self.done)

    def can_redo(self) -> bool:
        return bool(self.undone)

    # -- checking requests ---------------------------------------------------------------------
    def _cluster(self, cid, what: str = "cluster") -> Cluster:
        cid = whole_number(cid, what)  # int(cid) was a 500 for Infinity / 1e400 and cut 1.5 to 1
        c = self.clusters.get(cid)
        if c is None:
            raise EditConflict(f"there is no cluster {cid}")
        if not c.alive:
            g = c.gone or {}
            into = self.clusters.get(g.get("into"))
            if g and into is not None:
                raise EditConflict(f"cluster {cid} no longer exists: ", g,
                                   f" merged it into cluster {into.id} ({into.name})")
            raise EditConflict(f"cluster {cid} no longer exists: it was merged away")
        return c

    def _items(self, items) -> list[int]:
        if not isinstance(items, list) or not items:
            raise InputError("items must be a non-empty list of item numbers")
        arr = whole_numbers(items, "items")
        if (arr < 0).any() or (arr >= self.n).any():
            bad = int(arr[(arr < 0) | (arr >= self.n)][0])
            raise InputError(f"item {bad} does not exist (the run has items 0..{self.n - 1})")
        return sorted(set(arr.tolist()))

    def _new_id(self) -> int:
        return self._max_id + 1

    def prepare(self, kind: str, req: dict) -> dict:
        """Check a request against the current state; return the event payload to record
        (with new cluster ids allocated). Raises ``InputError`` / ``EditConflict``."""
        if kind not in EDITS:
            raise InputError(f"unknown edit {kind!r}; edits: {', '.join(EDITS)}")
        if not isinstance(req, dict):
            raise InputError("an edit is a JSON object")
        return getattr(self, f"_prepare_{kind}")(req)

    def _prepare_rename(self, req):
        c = self._cluster(req.get("cluster"))
        return {"cluster": c.id, "name": clean_text(req.get("name"), "the name", MAX_NAME)}

    def _prepare_merge(self, req):
        ids = req.get("clusters")
        if not isinstance(ids, list) or len(ids) < 2:
            raise InputError("merge needs a list of at least two clusters")
        cl = [self._cluster(c) for c in ids]
        if len({c.id for c in cl}) != len(cl):
            raise InputError("merge lists a cluster twice")
        sizes = self.sizes()
        into = req.get("into")
        if into is None:  # the largest keeps its id and name
            into = max(cl, key=lambda c: (sizes.get(c.id, 0), -c.id)).id
        into = self._cluster(into, "into").id
        if into not in {c.id for c in cl}:
            raise InputError(f"into={into} is not one of the merged clusters")
        return {"clusters": [c.id for c in cl], "into": into}

    def _prepare_move(self, req):
        items = self._items(req.get("items"))
        to = req.get("to")
        create = None
        if to == "junk":
            j = self.junk_cluster()
            if j is None:
                create = {"id": self._new_id(), "name": JUNK_NAME, "junk": True}
                to = create["id"]
            else:
                to = j
        elif to == "new":
            name = req.get("name")
            name = clean_text(name, "the new cluster's name", MAX_NAME) if name else None
            create = {"id": self._new_id(), "name": name, "junk": False}
            to = create["id"]
        elif to in (NOISE, str(NOISE)):
            to = NOISE
        else:
            to = self._cluster(to, "to").id
        if create is None and bool((self.labels[items] == to).all()):
            raise InputError("the items are already there")
        return {"items": items, "to": int(to), "create": create}

    def _prepare_split(self, req):
        c = self._cluster(req.get("cluster"))
        items = self._items(req.get("items"))
        now = self.members(c.id).tolist()
        if items != now:
            raise EditConflict(f"cluster {c.id} changed since the split was previewed "
                               f"({len(items)} then, {len(now)} now); preview it again")
        parts = whole_numbers(req.get("parts"), "parts")
        if parts.shape != (len(items),) or parts.min(initial=0) < 0 or parts.max(initial=0) >= len(items):
            # a number past the member count is no part (and 10**12 sized bincount's array: 8 TB)
            raise InputError("parts must give a part number (0 .. members - 1) for every member")
        k = int(parts.max()) + 1
        names = listed(req.get("names"), "names")
        if len(np.unique(parts)) < 2:
            raise InputError("a split needs at least two parts")
        counts = np.bincount(parts, minlength=k)
        order = [int(p) for p in np.argsort(-counts, kind="stable") if counts[p] > 0]
        ids = [-1] * k
        ids[order[0]] = c.id  # the largest part keeps the cluster's id
        nxt = self._new_id()
        for p in order[1:]:
            ids[p] = nxt
            nxt += 1
        out_names, named_by = [], []
        shown = req.get("shown") or []  # a previewed split: the names its preview showed
        for p in range(k):
            given = p < len(names) and bool(names[p])
            nm = clean_text(names[p] if given else f"{c.name} ({p + 1})", f"the name of part {p + 1}", MAX_NAME)
            # a name the person typed (not the fallback, nor the preview's name left as shown) is
            # theirs, and so is their name of the cluster left on the part that keeps its id
            typed = given and (p >= len(shown) or nm != shown[p])
            if shown and not typed and p == order[0] and c.named_by == "person":
                nm = c.name  # the cluster's name now: a rename since the preview (another tab's) wins
            out_names.append(nm)
            named_by.append("person" if typed or (p == order[0] and c.named_by == "person" and nm == c.name)
                            else "automatic")
        return {"cluster": c.id, "items": items, "parts": parts.tolist(), "ids": ids, "names": out_names,
                "named_by": named_by}

    def _prepare_tag(self, req):
        clusters = [self._cluster(c).id for c in listed(req.get("clusters"), "clusters")]
        items = self._items(req["items"]) if listed(req.get("items"), "items") else []
        add = [clean_text(t, "a tag", MAX_TAG) for t in listed(req.get("add"), "add")]
        remove = [clean_text(t, "a tag", MAX_TAG) for t in listed(req.get("remove"), "remove")]
        if not (clusters or items):
            raise InputError("tag needs clusters or items")
        if not (add or remove):
            raise InputError("tag needs tags to add or remove")
        if len(add) + len(remove) > 50:
            raise InputError("at most 50 tags per edit")
        return {"clusters": clusters, "items": items, "add": add, "remove": remove}

    def _prepare_junk(self, req):
        clusters = [self._cluster(c).id for c in listed(req.get("clusters"), "clusters")]
        if not clusters:
            raise InputError("junk needs clusters (to mark items, move them to 'junk')")
        value = req.get("value", True)
        if not isinstance(value, bool):  # "false" was true
            raise InputError(f"value must be true or false, got {value!r}")
        return {"clusters": clusters, "value": value}

    def _prepare_keep(self, req):
        if self.groups is None:
            raise InputError("this run has no duplicate groups: it was clustered without --dedup")
        group = whole_number(req.get("group"), "group")
        if group < 0 or not (self.groups == group).any():
            raise InputError(f"there is no duplicate group {group}")
        if "item" not in req:
            raise InputError("keep needs the item to keep (null: the export's rule decides again)")
        item = req.get("item")
        if item is None:
            return {"group": group, "item": None}
        item = whole_number(item, "item")
        if not 0 <= item < self.n:
            raise InputError(f"item {item} does not exist (the run has items 0..{self.n - 1})")
        if self.groups[item] != group:
            raise InputError(f"item {item} is not in duplicate group {group}")
        return {"group": group, "item": item}

    def _prepare_level_rename(self, req):
        """``{"level", "cluster", "name"}``: the level's key and the run's cluster id there, as
        ``Studio.edit`` found them (it checks they exist)."""
        return {"level": whole_number(req.get("level"), "level"), "cluster": whole_number(req.get("cluster"), "cluster"),
                "name": clean_text(req.get("name"), "the name", MAX_NAME)}

    def changes_nothing(self, kind: str, payload: dict) -> bool:
        """Whether a prepared rename / level rename gives the name a person already gave (Enter
        on an unchanged name box): recorded, it would be a no-op edit in the undo history, in a
        carry and in a publish's note. An automatic name given again is a change (it becomes the
        person's)."""
        if kind == "rename":
            c = self.clusters[payload["cluster"]]
            return c.named_by == "person" and c.name == payload["name"]
        if kind == "level_rename":
            return self.level_names.get(payload["level"], {}).get(payload["cluster"]) == payload["name"]
        return False

    def prepare_undo(self, target=None) -> dict:
        """Take back the latest edit in effect; ``target``: the edit the person means to take
        back (the one their view showed as the latest), refused when it is no longer the latest
        (another studio or tab edited, undid or redid since): an undo never takes back an edit
        its maker has not seen."""
        if not self.done:
            raise EditConflict("nothing to undo")
        self._expect(self.done, target, "undo", "in effect")
        return {"target": self.done[-1].seq}

    def prepare_redo(self, target=None) -> dict:
        """Re-apply the latest undone edit; ``target`` as for :meth:`prepare_undo`."""
        if not self.undone:
            raise EditConflict("nothing to redo")
        self._expect(self.undone, target, "redo", "undone")
        return {"target": self.undone[-1].seq}

    @staticmethod
    def _expect(stack: list[Event], target, what: str, where: str) -> None:
        if target is None:
            return
        target = whole_number(target, "target")
        last = stack[-1]
        if last.seq == target:
            return
        raise EditConflict(f"edit {target} is not the latest edit {where} any more: ",
                           {"seq": last.seq, "kind": last.kind, "client": last.client, "user": last.user,
                            "ts": last.ts},
                           f" is; nothing was changed: look again, then {what}", verb=True)

    def undo_target(self) -> int | None:
        """The edit an undo would take back now (None: nothing)."""
        return self.done[-1].seq if self.done else None

    def redo_target(self) -> int | None:
        return self.undone[-1].seq if self.undone else None

    # -- applying events -------------------------------------------------------------------------
    def apply(self, ev: Event) -> None:
        """Apply one event of the log (in order)."""
        if ev.seq <= self.seq:
            return
        self.seq = ev.seq
        self._note_ids(ev)
        if ev.kind in EDITS or ev.kind in ("undo", "redo"):
            self.changed = ev.seq  # the state of every edit from here to the next such is this one
        if ev.kind in EDITS:
            self._do(ev)
            self.done.append(ev)
            self.undone.clear()
        elif ev.kind == "undo":
            if self.done and self.done[-1].seq == ev.payload.get("target"):
                self.undone.append(self.done.pop())
                self._rebuild()
        elif ev.kind == "redo":
            if self.undone and self.undone[-1].seq == ev.payload.get("target"):
                e = self.undone.pop()
                self._do(e)
                self.done.append(e)
        # other kinds (notes, publish / export records) do not change the state

    def _note_ids(self, ev: Event) -> None:
        p = ev.payload
        ids = list(p.get("ids") or []) + ([p["create"]["id"]] if p.get("create") else [])
        if ids:
            self._max_id = max(self._max_id, *map(int, ids))

    def _rebuild(self) -> None:
        self._reset()
        for e in self.done:
            self._do(e)

    def _do(self, ev: Event) -> None:
        p, kind = ev.payload, ev.kind
        if kind == "rename":
            c = self.clusters[p["cluster"]]
            c.name, c.named_by = p["name"], "person"
        elif kind == "merge":
            into = p["into"]
            for cid in p["clusters"]:
                if cid != into:
                    self.labels[self.labels == cid] = into
                    self.clusters[cid].alive = False
                    self.clusters[cid].gone = {"seq": ev.seq, "kind": ev.kind, "into": into,
                                               "client": ev.client, "user": ev.user, "ts": ev.ts}
            self.clusters[into].touched = ev.seq
        elif kind == "move":
            items = np.asarray(p["items"], dtype=np.int64)
            cr = p.get("create")
            if cr:
                src = self.labels[items]
                parent = int(np.bincount(src[src >= 0]).argmax()) if (src >= 0).any() else None
                junk = bool(cr.get("junk"))
                self.clusters[cr["id"]] = Cluster(
                    cr["id"], cr.get("name") or f"new cluster {cr['id']}",
                    named_by="person" if cr.get("name") and not junk else "automatic",
                    origin="junk" if junk else "new", junk=junk, parent=parent)
            for cid in {*np.unique(self.labels[items]).tolist(), int(p["to"])}:
                if cid in self.clusters:  # the clusters the items left and the one they joined
                    self.clusters[cid].touched = ev.seq
            self.labels[items] = p["to"]
        elif kind == "split":
            items = np.asarray(p["items"], dtype=np.int64)
            parts = np.asarray(p["parts"], dtype=np.int64)
            ids = p["ids"]
            concepts = p.get("concepts") or []
            by = p.get("named_by") or []  # absent from a split recorded before who named a part was kept
            old = self.clusters[p["cluster"]]
            for k, cid in enumerate(ids):
                concept = {**concepts[k], "seq": ev.seq} if k < len(concepts) and concepts[k] else None
                named_by = "person" if k < len(by) and by[k] == "person" else "automatic"
                if cid == old.id:
                    old.name, old.named_by, old.concept = p["names"][k], named_by, concept
                else:
                    self.clusters[cid] = Cluster(cid, p["names"][k], named_by=named_by, origin="split",
                                                 parent=old.id, tags=list(old.tags), junk=old.junk,
                                                 concept=concept)
                self.clusters[cid].touched = ev.seq
            self.labels[items] = np.asarray(ids, dtype=np.int64)[parts]
        elif kind == "tag":
            for cid in p["clusters"]:
                c = self.clusters[cid]
                c.tags = _retag(c.tags, p["add"], p["remove"])
            for i in p["items"]:
                t = _retag(self.item_tags.get(i, []), p["add"], p["remove"])
                if t:
                    self.item_tags[i] = t
                else:
                    self.item_tags.pop(i, None)
        elif kind == "junk":
            for cid in p["clusters"]:
                self.clusters[cid].junk = bool(p["value"])
        elif kind == "keep":
            if p.get("item") is None:
                self.kept.pop(int(p["group"]), None)
            else:
                self.kept[int(p["group"])] = int(p["item"])
        elif kind == "level_rename":
            self.level_names.setdefault(int(p["level"]), {})[int(p["cluster"])] = p["name"]

    # -- what the rest of the tool reads -----------------------------------------------------------
    def cluster_table(self) -> list[dict]:
        sizes = self.sizes()
        return [{**c.to_dict(), "size": sizes.get(c.id, 0)} for c in sorted(self.alive(), key=lambda c: c.id)]

    def status(self) -> np.ndarray:
        """Per item: clustered / noise / outlier / junk."""
        lab = self.labels
        junk = np.array(sorted(c.id for c in self.alive() if c.junk), dtype=np.int64)
        st = np.where(lab >= 0, "clustered", np.where(lab == OUTLIER, "outlier", "noise")).astype(object)
        if len(junk):
            st[np.isin(lab, junk)] = "junk"
        return st


def start_names(run) -> dict[int, tuple[str, str]]:
    """``{cluster: (name, named_by)}`` a run's curated state starts from: its automatic names,
    with ``names.yaml``'s on top as names a person gave (the studio's own names come from the
    events)."""
    from ..naming.overrides import load_names

    auto = load_names(run, automatic=True, curated=False)
    hand = load_names(run, automatic=False, curated=False)
    return {c: (nm, "person" if c in hand else "automatic") for c, nm in auto.items()}


def _retag(tags: list[str], add: list[str], remove: list[str]) -> list[str]:
    out = [t for t in tags if t not in set(remove)]
    for t in add:
        if t not in out:
            out.append(t)
    return out
