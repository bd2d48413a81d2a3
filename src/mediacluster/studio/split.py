"""Split previews: how the members of one cluster fall into parts, and the parts' names.

:class:`Splitter` knows the run's vectors, its hierarchy levels and their stored names, the
fitted model's reduced space and what names new groups; given a cluster's members it returns a
:class:`Split`. Automatic (no ``k``, ``reducer="auto"``) on a run with levels: the split the
hierarchy already holds (:meth:`Splitter.tree_split`, space ``"tree"``): the cluster's children
at the first finer level, so the parts are the clusters the report's finer levels show (and,
when they are exactly those clusters, carry the names the run stored for them, or a person's
names of them: ``names.yaml``'s ``levels:``, the studio's level renames). Otherwise the
clusterer is K-means with ``k``, or the default clusterer's silhouette-chosen K-means over
2..:data:`SPLIT_K_MAX` parts, in the space ``reducer`` names: ``auto`` = the saved model's
reduced coordinates of the members when the run kept its model, else a PCA of the members
(32 dims); ``tree`` = the hierarchy only (refused on a run without levels); ``umap`` runs the
default reducer on the members (slow).

:class:`Previews` keeps the last previews for the split edit that applies one. The session
(:meth:`Studio.split_preview <.session.Studio.split_preview>`) owns the cluster's members,
the names other clusters have, and the items' descriptions.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..data import l2_normalize, nearest_to_centre
from ..errors import InputError
from ..naming.support import FIELDS
from .state import EditConflict, whole_number

log = logging.getLogger(__name__)

#: an automatic split tries 2..SPLIT_K_MAX parts
SPLIT_K_MAX = 12
#: split previews kept for the edit that applies one
MAX_PREVIEWS = 20
#: the naming methods whose names :meth:`Splitter.measure` measures against the whole collection
MEASURED = ("imagenet-wordnet", "clip-zeroshot")


def min_part(m: int) -> int:
    """Smallest part a split along the hierarchy keeps for a cluster of ``m`` items: 1% of it,
    at least 2 (one stray item is not a sub-group)."""
    return max(2, -(-m // 100))


@dataclass
class Split:
    """A split of ``members`` (item numbers) into ``parts`` (0..k-1, one per member) found in
    ``space`` (``tree``, ``model``, ``pca`` or ``umap``; ``level``: the level of a tree split),
    with the naming's entry of each part (``names``: part -> {name, alternatives}) and the
    members' vectors ``X`` (the examples)."""

    members: np.ndarray
    parts: np.ndarray
    space: str
    level: str | None
    names: dict[int, dict]
    X: np.ndarray
    sure: dict[int, dict] = field(default_factory=dict)  # part -> how sure its name is (naming.support)

    @property
    def k(self) -> int:
        return int(self.parts.max()) + 1

    def part_names(self, cluster_name: str, taken: set[str]) -> list[str]:
        """One name per part: its naming's name, else "``cluster_name`` (p)"; a name already in
        ``taken`` (another cluster's: a finer level's stored name or a fresh one can be) gets
        " 2", " 3", ... as naming does."""
        taken = set(taken)
        out = []
        for p in range(self.k):
            base = name = self.names.get(p, {}).get("name") or f"{cluster_name} ({p + 1})"
            n_same = 1
            while name in taken:
                n_same += 1
                name = f"{base} {n_same}"
            taken.add(name)
            out.append(name)
        return out

    def part_sure(self, p: int, name: str) -> dict:
        """How sure part ``p``'s name ``name`` is: the measured record while it is the naming's
        name of the part, else null (a fallback name or one made unique was not measured)."""
        from ..naming.support import NOT_MEASURED

        rec = self.sure.get(p)
        ok = rec is not None and name == self.names.get(p, {}).get("name")
        return {f: (rec if ok else NOT_MEASURED).get(f) for f in NOT_MEASURED}

    def concept(self, p: int, name: str) -> dict | None:
        """What the split edit records of part ``p``'s name ``name``, while it is the naming's
        name of the part: ``{"name", "record", "method", "candidates"}``: how sure it is as the
        preview showed it (``record``: :meth:`part_sure`, null when not measured) and, when its
        naming can be measured again on other items (an ImageNet or CLIP name with its
        candidates: :meth:`Splitter.measure`), what it claims (the first candidate, the one
        measured); None for another name or one with neither."""
        e = self.names.get(p) or {}
        if name != e.get("name"):
            return None
        rec = self.part_sure(p, name)
        cands = e.get("candidates") or []
        out = {"name": name, "record": rec if rec["name_sure"] is not None else None}
        if cands and e.get("method") in MEASURED:
            out.update(method=e["method"], candidates=cands[:1])
        return out if out["record"] is not None or "candidates" in out else None

    def alternatives(self, p: int) -> list:
        return self.names.get(p, {}).get("alternatives", [])

    def examples(self, p: int, n: int = 12) -> tuple[int, np.ndarray]:
        """(size of part ``p``, its ``n`` members nearest to its centre, as item numbers)."""
        idx = np.flatnonzero(self.parts == p)
        return len(idx), self.members[nearest_to_centre(self.X, idx, n)]


class Splitter:
    """Splits of a run's clusters (see the module docstring). ``vectors`` (n, d), ``fitted``
    the cluster job's labels (to recognise its model among ``models``' versions), ``levels``
    the run's hierarchy levels (dicts with ``name``, ``labels``, ``index``; coarse to fine),
    ``level_names`` the stored names of each level (``RunDir.read_level_names``),
    ``imagenet`` the ImageNet probabilities (or None) and ``encoder`` a callable giving the
    run's CLIP encoder (None: the run has none) for naming the parts."""

    def __init__(self, vectors, fitted: np.ndarray, levels: list[dict], level_names: dict, models,
                 imagenet=None, encoder: Callable | None = None):
        self.vectors = vectors
        self.fitted = fitted
        self.levels = levels
        # every level's stored automatic names: level index -> {cluster: {cluster, name, alternatives}}
        self.level_names = {k: {int(e["cluster"]): e for e in named} for k, named in level_names.items()}
        self.models = models
        self.imagenet = imagenet
        self.encoder = encoder
        self.model = None
        self._support = None  # naming.support.ImagenetSupport of the whole collection, made once
        self._topics = None  # (vocabulary, topic vectors, every item's best topic): CLIP runs, made once
        self._model_checked = False
        self._lock = threading.Lock()

    def reduced_space(self) -> np.ndarray | None:
        """The fitted model's reduced coordinates of every item, when the run kept its model
        (then :attr:`model`).

        That model is the newest version the studio did not publish: a curated version's labels
        are not the fitted ones, so taking the latest version lost the model's space for every
        split and publish after a first publish (the next curated model then fell back to the
        2-D map as its space)."""
        with self._lock:
            if not self._model_checked:
                self._model_checked = True
                from ..persist import check_model_dir
                from ..pipeline import Pipeline

                for version in reversed(self.models.versions()):
                    path = self.models.root / version
                    try:
                        if (check_model_dir(path).get("metadata") or {}).get("source") == "studio":
                            continue
                        m = Pipeline.load(path)
                        if len(m.labels_) == len(self.fitted) and np.array_equal(np.asarray(m.labels_), self.fitted):
                            self.model = m
                    except Exception as e:  # noqa: BLE001 - without it a split reduces on its own
                        log.warning("studio: model %s not used for splits: %s", path, e)
                    break  # the newest model of the cluster job (or tune): used if it made the run
        return None if self.model is None else np.asarray(self.model.embedding_)

    def split(self, cid: int, members: np.ndarray, k: int | None = None, reducer: str = "auto",
              hand: dict | None = None) -> Split:
        """Split cluster ``cid``'s ``members`` (see the module docstring), its parts named.
        ``hand``: every level's names now (level key -> cluster -> name, the studio's
        ``named_levels``): a tree split's parts take a name a person gave their cluster
        (``names.yaml``, a level rename) over the stored automatic one."""
        from ..naming.names import name_clusters

        m = len(members)
        if m < 4:
            raise InputError(f"cluster {cid} has {m} items; a split needs at least 4")
        if k is not None:
            k = whole_number(k, "k")
            if not 2 <= k <= min(100, m - 1):
                raise InputError(f"k must be between 2 and {min(100, m - 1)} for {m} items")
        if reducer not in ("auto", "tree", "model", "pca", "umap"):
            raise InputError("reducer must be auto, tree, model, pca or umap")
        X = np.asarray(self.vectors[members], dtype=np.float32)
        tree = self.tree_split(members, X, hand) if k is None and reducer in ("auto", "tree") else None
        if tree is None and reducer == "tree":
            if k is not None:  # the tree's level gives the parts: "choose k" below would be no help
                raise InputError(f"a split along the run's levels (reducer tree) takes its parts from a level, "
                                 f"not k={k}; leave k out, or choose k with model, pca or umap")
            raise InputError("the run has no finer level that splits this cluster "
                             "(a run of the engine has levels); use model, pca or umap, or choose k")
        stored = None
        if tree is not None:
            (parts, level_name, stored), space = tree, "tree"
        else:
            parts, space = self.recluster(members, X, k, reducer)
            level_name = None
        _, parts = np.unique(parts, return_inverse=True)
        parts = parts.astype(np.int64)
        if parts.max(initial=0) < 1:
            if len(np.unique(X, axis=0)) < 2:  # no k or space splits them: not "choose k"
                raise InputError(f"the clusterer found no split of cluster {cid}: its {m} items' vectors are "
                                 "identical (copies of one file?)")
            raise InputError(f"the clusterer found no split of cluster {cid}; "
                             + ("choose k" if k is None else "try another space (reducer)"))
        if stored is not None:  # the finer level's own clusters: the names the run gave them
            names = dict(enumerate(stored))
        else:
            enc = self.encoder() if self.encoder is not None else None
            named = name_clusters(X if enc is not None else None, parts,
                                  imagenet_probs=(np.asarray(self.imagenet[members], dtype=np.float32)
                                                  if self.imagenet is not None else None),
                                  encoder=enc)
            names = {e["cluster"]: e for e in named}
        if stored is not None:  # the run's stored names, as the run measured them
            sure = {p: {f: e[f] for f in FIELDS} for p, e in names.items() if "name_sure" in e}
        else:  # the parts were named within the parent: measured against the whole collection
            sure = self.measure(members, parts, names)
        return Split(members=members, parts=parts, space=space, level=level_name, names=names, X=X, sure=sure)

    def measure(self, members: np.ndarray, parts: np.ndarray, names: dict[int, dict]) -> dict[int, dict]:
        """How sure each part's fresh name is (``parts``: the part of each of ``members``;
        ``names``: part -> its naming entry, ``method`` and ``candidates``), measured as the run
        measures its names: against the whole collection, not against the parent cluster the
        parts were named within. An ImageNet name (the default method) by
        ``naming.support.ImagenetSupport.of`` (the collection's mean probabilities and its null
        computed once and kept); a CLIP name on votes, ``naming.support.zeroshot_support``: the
        share of the part whose best topic is the name against the whole collection's share
        (:meth:`topics`). Parts of another method, or without what their method needs, are
        left out (not measured)."""
        by = {}
        for p, e in names.items():
            by.setdefault(e.get("method") or "imagenet-wordnet", {})[int(p)] = e.get("candidates") or []
        out = {}
        if by.get("imagenet-wordnet") and self.imagenet is not None:
            from ..naming.support import ImagenetSupport

            with self._lock:
                if self._support is None:
                    self._support = ImagenetSupport(self.imagenet)
                sup = self._support
            out.update(sup.of(by["imagenet-wordnet"], parts, rows=members))
        if by.get("clip-zeroshot") and self.encoder is not None:
            out.update(self._measure_votes(members, parts, by["clip-zeroshot"]))
        return out

    def topics(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(the vocabulary split parts are named from, its topic vectors, every item's best
        topic) for the run's CLIP encoder, computed once (a matrix product in row blocks)."""
        with self._lock:
            if self._topics is None:
                from ..naming.zeroshot import default_vocabulary, media_of, topic_vectors

                enc = self.encoder()
                vocab = default_vocabulary(media_of(enc))  # the parts' names come from it (name_clusters' default)
                T = topic_vectors(enc, vocab)
                best = np.empty(len(self.vectors), np.int64)
                for s in range(0, len(best), 65_536):
                    best[s:s + 65_536] = (l2_normalize(np.asarray(self.vectors[s:s + 65_536], np.float32))
                                          @ T.T).argmax(axis=1)
                self._topics = (vocab, T, best)
            return self._topics

    def _measure_votes(self, members: np.ndarray, parts: np.ndarray, cands: dict[int, list]) -> dict[int, dict]:
        """CLIP names measured as the cluster job measures them (``zeroshot.name_clusters_zeroshot``
        ``with_support``), over the whole collection: part p's members labelled p, every other
        item unlabelled; the null names random groups of the collection by their mean similarity."""
        from ..naming.support import zeroshot_support

        vocab, T, best = self.topics()
        index = {v: j for j, v in enumerate(vocab)}
        named = {p: index[cs[0]["name"]] for p, cs in cands.items() if cs and cs[0].get("name") in index}
        if not named:
            return {}
        lab = np.full(len(best), -1, np.int64)
        lab[np.asarray(members)] = parts

        def group_name(g: np.ndarray) -> int:
            return int(np.argmax((l2_normalize(np.asarray(self.vectors[np.sort(g)], np.float32)) @ T.T).mean(axis=0)))

        return zeroshot_support(best, lab, named, len(vocab), group_name=group_name)

    def recluster(self, members: np.ndarray, X: np.ndarray, k: int | None, reducer: str) -> tuple[np.ndarray, str]:
        """(part of each member, space) of a split by re-clustering: K-means with ``k``, or the
        default clusterer's silhouette-chosen K-means, in the space ``reducer`` names (see the
        module docstring); noise joins its nearest part."""
        from ..pipeline import Pipeline
        from ..stages import registry
        from ..stages.cluster import knn_vote

        m = len(members)
        # automatic: the default clusterer's silhouette-chosen K-means, over 2..SPLIT_K_MAX parts
        # (a split asks for a few sub-groups; choose k for more): 2.7 s instead of 9.7 s for
        # 5,000 members at load 11 (benchmarks/RESULTS.md, "Studio")
        clusterer = (registry.build("clusterer", "kmeans_auto", {"k_max": SPLIT_K_MAX}) if k is None
                     else registry.build("clusterer", "kmeans", {"n_clusters": k}))
        Z = None
        space = reducer
        if reducer in ("auto", "model"):
            full = self.reduced_space()
            if full is not None:
                Z, space = full[members], "model"
            elif reducer == "model":
                raise InputError("the run kept no model, so it has no reduced space; use pca or umap "
                                 "(or re-run cluster with --save-model)")
            else:
                space = "pca"
        if Z is not None:
            pipe = Pipeline(reducer=None, outliers=None, clusterer=clusterer, random_state=0)
            pipe.fit(X, embedding=Z, build_predictor=False)
        elif space == "pca":
            pca = registry.build("reducer", "pca", {"n_components": int(min(32, m - 1, X.shape[1]))})
            pipe = Pipeline(reducer=pca, outliers=None, clusterer=clusterer, random_state=0)
            pipe.fit(l2_normalize(X), build_predictor=False)
        else:
            pipe = Pipeline(outliers=None, clusterer=clusterer, random_state=0)  # the default reducer
            pipe.fit(X, build_predictor=False)
        parts = np.asarray(pipe.labels_, dtype=np.int64)
        if (parts < 0).any() and (parts >= 0).any():  # noise: its nearest part
            q = parts < 0
            parts[q], _, _ = knn_vote(pipe.embedding_[~q], parts[~q], pipe.embedding_[q], k=15)
        return parts, space

    def tree_split(self, members: np.ndarray, X: np.ndarray,
                   hand: dict | None = None) -> tuple[np.ndarray, str, list | None] | None:
        """(part of each member, level name, the parts' stored names) from the run's hierarchy,
        or None.

        The coarsest level at which the members fall into 2 to :data:`SPLIT_K_MAX` parts of at
        least :func:`min_part` items each; members in smaller pieces (items a person moved in,
        slivers of a neighbour) join the part most of their 15 nearest members (cosine, the
        run's vectors) are in. An unedited cluster's parts are then exactly its children in
        the tree. None when no level splits it that way (a leaf, or a jump to too many parts).
        When the parts are exactly that level's clusters (no piece joined to a part, none of
        their items elsewhere), their names are the level's names the run stored
        (``level_names.json``: what the report's level view shows; a name in ``hand`` replaces
        it, sure by hand), one dict per part; else None and the parts are named afresh."""
        from ..stages.cluster import knn_vote

        m = len(members)
        small = min_part(m)
        for lv in self.levels:
            lab = lv["labels"][members]
            vals, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
            big = (counts >= small) & (vals >= 0)
            if big.sum() < 2:
                continue
            if big.sum() > SPLIT_K_MAX:
                return None
            keep = big[inv]
            parts = np.where(keep, inv, -1).astype(np.int64)
            if not keep.all():
                Xn = l2_normalize(X)
                parts[~keep], _, _ = knn_vote(Xn[keep], parts[keep], Xn[~keep], k=15)
            return parts, str(lv["name"]), self.stored_part_names(lv, vals, counts, keep, hand)
        return None

    def stored_part_names(self, lv: dict, vals: np.ndarray, counts: np.ndarray, keep: np.ndarray,
                          hand: dict | None = None) -> list | None:
        """The stored names of a tree split's parts (see :meth:`tree_split`), a person's names
        (``hand``) laid over them as every other reader of level names does
        (``naming.support.with_hand_names``), or None."""
        from ..naming.support import with_hand_names

        at = lv.get("index")
        stored = self.level_names.get(at) if at is not None else None
        given = (hand or {}).get(int(at)) if at is not None else None
        if given:
            stored = {int(e["cluster"]): e for e in with_hand_names(list((stored or {}).values()), given)}
        if not stored or not keep.all():
            return None
        whole = np.bincount(lv["labels"][lv["labels"] >= 0], minlength=int(vals.max()) + 1)
        if any(whole[v] != c for v, c in zip(vals.tolist(), counts.tolist())):
            return None  # a part is only some of its cluster's items: not that cluster
        named = [stored.get(int(v)) for v in vals.tolist()]
        return named if all(e and e.get("name") for e in named) else None


class Previews:
    """The last :data:`MAX_PREVIEWS` split previews, by id, for the split edit that applies one."""

    def __init__(self):
        self._kept: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, split: Split, cid: int, names: list[str]) -> str:
        """Keep a preview of ``split`` of cluster ``cid`` with the parts' ``names``; its id. With
        them (``shown``, ``concepts``): what each part's automatic name claims, while it is the
        name the naming gave (:meth:`Split.concept`), for the split edit to record."""
        pid = uuid.uuid4().hex[:12]
        with self._lock:
            self._kept[pid] = {"cluster": int(cid), "items": split.members.tolist(),
                               "parts": split.parts.tolist(), "names": list(names), "shown": list(names),
                               "concepts": [split.concept(p, nm) for p, nm in enumerate(names)]}
            while len(self._kept) > MAX_PREVIEWS:
                self._kept.popitem(last=False)
        return pid

    def request(self, req: dict) -> dict:
        """The split edit's request for the preview ``req["preview"]`` (with ``req["names"]``, a
        person's names for the parts, when given)."""
        with self._lock:
            pv = self._kept.get(str(req.get("preview")))
        if pv is None:
            raise EditConflict("that split preview is gone (the studio restarted or it is old); "
                               "preview the split again")
        names = req.get("names")
        if names is not None and (not isinstance(names, list) or len(names) != len(pv["names"])):
            raise InputError(f"names must list one name per part ({len(pv['names'])})")
        # a null name is the preview's (it was the fallback "NAME (2)", which the preview never showed)
        names = [given or shown for given, shown in zip(names, pv["names"])] if names else pv["names"]
        return {**pv, "names": names}
