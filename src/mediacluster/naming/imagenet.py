"""Names from ImageNet class probabilities, lifted through the WordNet noun hierarchy.

For a cluster, the ImageNet-1k probabilities of its members are summed into a *mass* over the
1000 classes (normalised to 1). Every WordNet concept above those classes *covers* the mass of the
classes below it. The name is the most specific concept that still covers most of the mass: a
cluster whose mass sits on tabby, tiger cat and Persian cat is named "cat" (which covers all
three), not "tabby" (which covers one third) and not "animal" (which covers the same mass but says
less).

The rule (``lift``):

1. each member's probabilities are cut to its ``TOP_K`` = 5 classes and renormalised (the long
   softmax tail is spread over classes roughly in proportion to how many a concept holds - 398 of
   the 1000 are animals - so summed over a cluster it votes for "animal" whatever the images are);
2. every concept ``s`` is scored

       score(s) = cover(s) - PENALTY * generality(s) + CONTRAST * (cover(s) - cover_all(s))

   where ``generality(s) = log(n_below(s)) / log(1000)`` (``n_below`` = ImageNet classes under
   ``s``: 1 for a class, 1000 for ``entity``) and ``cover_all`` is the concept's cover over the
   whole collection (what sets this cluster apart from the others);
3. the best scoring concept with ``cover(s) >= MIN_COVER`` wins; if none covers that much (a
   diffuse cluster, a mix of kinds) the concept with the highest ``cover + CONTRAST * lift``
   does as its concept, and its name lists its largest parts (:func:`composite`: "device ·
   equipment · structure …" for Imagenette's root cluster of nine classes, which "device", a
   third of it, named before); that concept stays the first alternative.

Composite names (:func:`parts`): a part is a concept the rule would choose for the mass under
it alone; the largest goes first, no two share a class, at most ``MAX_PARTS`` = 3 are listed (a
name read at a glance; " …" when there are more) and at most as many as the cluster has items, and a part is not listed when it is minor: it
holds under half (``MIN_COVER``) of the part before it and all that is left holds less than that
part. Only diffuse clusters change; clear ones keep their names exactly.

Generality counts classes (information content) rather than WordNet depth, because depth is not
comparable across branches (animal branches are twice as deep as artifact branches). Defaults
(``MIN_COVER`` 0.5, ``PENALTY`` 1.0, ``TOP_K`` 5, ``CONTRAST`` 0.5) were chosen on real data:
CIFAR-10 test and Imagenette val grouped by true class (whole classes and random 50-image
subsets), maximising the share of names that are the class's concept or a hypernym of it, then
specificity; ``benchmarks/naming.py`` reproduces the grid, RESULTS.md has the numbers.

A few WordNet concepts are correct but useless as names (``entity``, ``whole``, ``artifact``,
``organism``...): concepts in :data:`TOO_ABSTRACT` are never chosen.
"""

from __future__ import annotations

import math

import numpy as np

from . import wordnet as wn

#: default rule parameters (tuned in benchmarks/naming.py)
MIN_COVER = 0.5
PENALTY = 1.0
TOP_K: int | None = 5
CONTRAST = 0.5
#: a mixed (diffuse) cluster's composite name lists at most this many parts (readable at a glance)
MAX_PARTS = 3
#: joins the parts of a composite name; a trailing ELLIPSIS says the named parts are not all
PART_SEP = " · "
ELLIPSIS = " …"

#: WordNet concepts that are correct for almost anything and so name nothing
TOO_ABSTRACT = frozenset({
    "n00001740",  # entity
    "n00001930",  # physical entity
    "n00002684",  # object, physical object
    "n00003553",  # whole, unit
    "n00004258",  # living thing, animate thing
    "n00004475",  # organism, being
    "n00021939",  # artifact, artefact
    "n03575240",  # instrumentality, instrumentation
    "n00002137",  # abstraction
    "n01466257",  # chordate
    "n01471682",  # vertebrate, craniate
    "n01886756",  # placental, eutherian
    "n03129123",  # creation
    "n00019128",  # natural object
    "n00020827",  # matter
    "n03076708",  # commodity, trade good
    "n00007347",  # causal agent
    "n03094503",  # container (WordNet files cars under it, via wheeled vehicle)
    "n03100490",  # conveyance, transport (as broad as "vehicle", less readable)
})


class _Tree:
    """The ImageNet part of WordNet as arrays: a (n_nodes x 1000) 0/1 coverage matrix."""

    def __init__(self) -> None:
        h = wn.imagenet_hierarchy()
        self.classes: list[str] = h["classes"]
        self.class_names: list[str] = h["names"]
        self.ids = sorted(h["nodes"])
        self.nodes = h["nodes"]
        self.cover = np.zeros((len(self.ids), 1000), dtype=np.float32)
        for r, sid in enumerate(self.ids):
            self.cover[r, self.nodes[sid]["below"]] = 1.0
        # cover @ mass in float64 as a sparse product: 12,547 ones in 1,860 x 1,000, so 0.015 ms
        # per cluster against 12 ms for the dense product (naming a hierarchy's 900 clusters went
        # from 8.6 s to well under a second)
        from scipy import sparse

        self.cover64 = sparse.csr_matrix(self.cover.astype(np.float64))
        self._below: dict[str, np.ndarray] = {}
        n_below = self.cover.sum(axis=1)
        self.generality = (np.log(n_below) / math.log(1000.0)).astype(np.float64)
        self.depth = np.array([self.nodes[s]["depth"] for s in self.ids])
        self.allowed = np.array([s not in TOO_ABSTRACT for s in self.ids])

    def strictly_below(self, base: str) -> np.ndarray:
        """Mask of the concepts strictly below ``base`` (computed once per base)."""
        if base not in self._below:
            base_row = self.cover[self.ids.index(base)]
            self._below[base] = (self.cover <= base_row).all(axis=1) & (self.cover.sum(axis=1) < base_row.sum())
        return self._below[base]


_TREE: _Tree | None = None


def tree() -> _Tree:
    global _TREE
    if _TREE is None:
        _TREE = _Tree()
    return _TREE


def readable(synset: str) -> str:
    """Readable label of a synset: its first lemma, spaces for underscores."""
    t = tree()
    node = t.nodes.get(synset)
    lem = node["lemmas"][0] if node else wn.lemmas(synset)[0]
    return lem.replace("_", " ")


def lift(mass: np.ndarray, min_cover: float = MIN_COVER, penalty: float = PENALTY, k: int = 4,
         background: np.ndarray | None = None, contrast: float = CONTRAST,
         max_parts: int | None = None) -> list[dict]:
    """Best concepts for one probability mass over the 1000 classes, best first.

    Returns up to ``k`` dicts ``{"synset", "name", "cover", "score", "depth"}``; alternatives never
    repeat a concept that is an ancestor or descendant of one already listed with a better score
    unless nothing else qualifies. A diffuse mass is named first by its :func:`composite`, of at
    most ``max_parts`` parts (None: :data:`MAX_PARTS`; a cluster of m items is a mix of at most
    m kinds, so a single item is never named by the runner-up guesses of its own probabilities).
    """
    t = tree()
    m = np.asarray(mass, dtype=np.float64)
    s = m.sum()
    m = m / s if s > 0 else np.full(1000, 1e-3)
    cover = t.cover64 @ m
    if background is not None:  # what sets this cluster apart from the whole collection
        lift_ = cover - _background_cover(background)
    else:
        lift_ = np.zeros_like(cover)
    score = cover - penalty * t.generality + contrast * lift_
    ok = t.allowed & (cover >= min_cover)
    if not ok.any():  # nothing covers enough (a diffuse cluster): the most enriched broad concept
        key = cover + contrast * lift_
        ok = t.allowed & (key >= key[t.allowed].max() - 1e-9)
    diffuse = not (t.allowed & (cover >= min_cover)).any()
    order = np.argsort(-np.where(ok, score, -np.inf), kind="stable")
    out: list[dict] = []
    # alternatives: next best concepts, also from below the threshold (e.g. the top class)
    alt_order = np.argsort(-np.where(t.allowed, score, -np.inf), kind="stable")
    first = int(order[0])
    picked = [first]
    for r in alt_order:
        if len(picked) >= k:
            break
        r = int(r)
        if r == first:
            continue
        name_r = readable(t.ids[r])
        if any(readable(t.ids[p]) == name_r for p in picked):
            continue
        picked.append(r)
    for r in picked:
        out.append({
            "synset": t.ids[r], "name": readable(t.ids[r]), "cover": round(float(cover[r]), 4),
            "score": round(float(score[r]), 4), "depth": int(t.depth[r]),
        })
    if diffuse and k > 0:
        comp = composite(m, min_cover=min_cover, penalty=penalty, max_parts=max_parts)
        if comp is not None:  # the concepts stay as the alternatives
            comp.update(synset=out[0]["synset"], score=out[0]["score"], depth=out[0]["depth"])
            out = [comp] + out[:k - 1]
    return out


def parts(mass: np.ndarray, min_cover: float = MIN_COVER, penalty: float = PENALTY,
          max_parts: int | None = None) -> tuple[list[dict], bool]:
    """The largest parts of a mixed cluster's mass: ``([{"synset", "name", "cover"}], more)``.

    A *part* is a concept that the naming rule would choose for the mass under it (applied to
    that mass alone, without the collection's contrast): "tench" for the mass on tench, "dog"
    for mass spread over many breeds of which none holds half, not "device" when most of the
    mass under "device" is on chain saws (then "chain saw" is the part). Parts are taken
    greedily, the one covering the most of the mass not yet named first, and no two share a
    class. The next part is listed unless it is minor: it holds less than ``min_cover`` of what
    the part before it holds (half: as a clear name may leave up to half of its mass unnamed) and
    all the mass left holds less than that part too; at most ``max_parts`` (None:
    :data:`MAX_PARTS`) are listed. ``more``: ``max_parts`` stopped the list before a part that
    is not minor.
    """
    t = tree()
    from scipy import sparse  # already loaded by tree()

    max_parts = MAX_PARTS if max_parts is None else max_parts
    r = np.asarray(mass, dtype=np.float64)
    r = r / max(r.sum(), 1e-12)
    out: list[dict] = []
    while True:
        cov = t.cover64 @ r
        cols = np.flatnonzero(t.allowed & (cov > 1e-9))
        if not len(cols):
            return out, False
        # column j: the cover of every concept within the mass under concept cols[j]
        within = (t.cover64 @ sparse.diags(r) @ t.cover64[cols].T).toarray() / cov[cols]
        sc = np.where((within >= min_cover - 1e-9) & t.allowed[:, None],
                      within - penalty * t.generality[:, None], -np.inf)
        own = sc[cols, np.arange(len(cols))] >= sc.max(axis=0) - 1e-9  # s names its own mass
        cand = cols[own]
        if not len(cand):
            return out, False
        # the largest part; among equal covers the more specific one
        best = int(cand[np.lexsort((t.generality[cand], -np.round(cov[cand], 9)))[0]])
        part_cover = float(cov[best])
        if out and part_cover < min_cover * out[-1]["cover"] - 1e-9 and float(r.sum()) < out[-1]["cover"] - 1e-9:
            return out, False  # what is left is minor parts, all together less than the last one
        if len(out) >= max_parts:
            return out, True
        out.append({"synset": t.ids[best], "name": readable(t.ids[best]), "cover": round(part_cover, 4)})
        r = r * (1.0 - t.cover[best])


def composite(mass: np.ndarray, min_cover: float = MIN_COVER, penalty: float = PENALTY,
              max_parts: int | None = None) -> dict | None:
    """The composite candidate of a mixed cluster ("church · gas pump · tench …"): its
    :func:`parts` joined by :data:`PART_SEP`, an :data:`ELLIPSIS` when there are more parts
    than it lists. It keeps the synset of the concept :func:`lift` would
    otherwise have named it by (the nesting of :func:`names.nest_candidates` reads that), and
    lists its ``parts``. None when the mass has fewer than two parts."""
    ps, more = parts(mass, min_cover=min_cover, penalty=penalty, max_parts=max_parts)
    if len(ps) < 2:
        return None
    name = PART_SEP.join(p["name"] for p in ps) + (ELLIPSIS if more else "")
    return {"name": name, "parts": ps, "cover": round(sum(p["cover"] for p in ps), 4), "composite": True}


def _background_cover(background) -> np.ndarray:
    """``cover @ normalised background``, kept for the last background seen (one per naming
    of a labelling: every cluster's lift is measured against the same collection)."""
    b = np.asarray(background, dtype=np.float64)
    key = _BG_CACHE.get("key")
    if key is None or key.shape != b.shape or not np.array_equal(key, b):
        _BG_CACHE["key"] = b.copy()
        _BG_CACHE["cover"] = tree().cover64 @ (b / max(b.sum(), 1e-12))
    return _BG_CACHE["cover"]


_BG_CACHE: dict[str, np.ndarray] = {}


def item_mass(probs: np.ndarray, top_k: int | None = TOP_K) -> np.ndarray:
    """Per-item probabilities kept to their ``top_k`` classes and renormalised.

    The long tail of a softmax is spread over all 1000 classes roughly in proportion to how many
    classes a concept holds (398 of them are animals), so summed over a cluster it votes for the
    biggest concepts whatever the images show; cutting it keeps what the encoder actually saw.
    """
    P = np.asarray(probs, dtype=np.float32)
    if top_k is None or top_k >= P.shape[1]:
        return P / np.maximum(P.sum(axis=1, keepdims=True), 1e-12)
    idx, w = top_classes(P, top_k)
    out = np.zeros_like(P)
    out[np.arange(len(P))[:, None], idx] = w
    return out


def top_classes(probs: np.ndarray, top_k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The sparse form of :func:`item_mass`: per item its ``top_k`` class indices (int16) and
    their renormalised probabilities (float32), e.g. for ranking a large run by a concept."""
    P = np.asarray(probs, dtype=np.float32)
    k = int(min(top_k, P.shape[1]))
    part = np.argpartition(-P, k - 1, axis=1)[:, :k]
    w = np.take_along_axis(P, part, axis=1)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return part.astype(np.int16), w.astype(np.float32)


def top_classes_blocked(probs, top_k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_classes` of every row, read in row blocks: through a memory map a million
    items' probabilities are never all in memory."""
    k = int(min(top_k, probs.shape[1]))
    idx, w = np.empty((len(probs), k), np.int16), np.empty((len(probs), k), np.float32)
    for s in range(0, len(probs), 65_536):
        idx[s:s + 65_536], w[s:s + 65_536] = top_classes(np.asarray(probs[s:s + 65_536], np.float32), k)
    return idx, w


def cluster_masses(probs: np.ndarray, labels: np.ndarray, top_k: int | None = TOP_K,
                   item_top: tuple[np.ndarray, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Summed (normalised) ImageNet probabilities per cluster id >= 0 (see :func:`item_mass`).

    ``item_top``: :func:`top_classes` of ``probs`` computed once (with ``top_k``), e.g. for
    naming several labellings of the same items: the sums are then one ``bincount``."""
    labels = np.asarray(labels)
    if item_top is not None and top_k is not None:
        idx, w = item_top
        ok = labels >= 0
        n_cls = int(np.asarray(probs).shape[1]) if probs is not None else 1000
        K = int(labels.max()) + 1 if ok.any() else 0
        flat = (labels[ok].astype(np.int64)[:, None] * n_cls + np.asarray(idx)[ok]).ravel()
        M = np.bincount(flat, weights=np.asarray(w)[ok].astype(np.float64).ravel(),
                        minlength=K * n_cls).reshape(K, n_cls)
        return {int(c): M[c] / max(M[c].sum(), 1e-12) for c in sorted(set(labels[ok].tolist()))}
    out = {}
    for c in sorted(set(labels[labels >= 0].tolist())):
        idx = np.flatnonzero(labels == c)
        m = item_mass(probs[idx], top_k).astype(np.float64).sum(axis=0)
        out[int(c)] = m / max(m.sum(), 1e-12)
    return out


def name_clusters_imagenet(probs: np.ndarray, labels: np.ndarray, min_cover: float = MIN_COVER,
                           penalty: float = PENALTY, top_k: int | None = TOP_K,
                           contrast: float = CONTRAST, item_top=None, masses=None) -> dict[int, list[dict]]:
    """Cluster id -> ranked candidate concepts (see :func:`lift`); ``item_top`` /
    ``masses``: :func:`top_classes` / :func:`cluster_masses` already computed."""
    if not contrast:
        bg = None
    elif item_top is not None and top_k is not None:
        idx, w = item_top
        bg = np.bincount(np.asarray(idx).ravel().astype(np.int64), weights=np.asarray(w).astype(np.float64).ravel(),
                         minlength=int(np.asarray(probs).shape[1]) if probs is not None else 1000)
    else:
        bg = item_mass(probs, top_k).astype(np.float64).sum(axis=0)
    if masses is None:
        masses = cluster_masses(probs, labels, top_k, item_top=item_top)
    lab = np.asarray(labels).ravel()
    sizes = np.bincount(lab[lab >= 0].astype(np.int64)) if (lab >= 0).any() else np.zeros(0, np.int64)
    return {c: lift(m, min_cover=min_cover, penalty=penalty, background=bg, contrast=contrast,
                    max_parts=min(MAX_PARTS, int(sizes[c]) if 0 <= c < len(sizes) else MAX_PARTS))
            for c, m in masses.items()}


def contrast_qualifiers(masses: dict[int, np.ndarray], group: list[int], base: str | None = None) -> dict[int, str]:
    """Distinguishing qualifiers for clusters that got the same name.

    For each cluster of ``group``, the concept whose cover in this cluster most exceeds its largest
    cover in the other clusters of the group (preferring concepts below ``base``, the shared name's
    synset): "mammal (dog)" vs "mammal (cat)". Clusters without a positive contrast are absent.
    """
    t = tree()
    covers = {c: t.cover64 @ masses[c] for c in group}
    below_base = np.ones(len(t.ids), dtype=bool)
    if base is not None and base in t.nodes:
        below_base = t.strictly_below(base)
    out = {}
    for c in group:
        other = np.max([covers[g] for g in group if g != c], axis=0)
        gain = covers[c] - other - 0.02 * t.generality  # a little preference for specific ones
        gain = np.where(t.allowed & below_base, gain, -np.inf)
        r = int(np.argmax(gain))
        if np.isfinite(gain[r]) and gain[r] > 0.02:
            out[c] = readable(t.ids[r])
    return out
