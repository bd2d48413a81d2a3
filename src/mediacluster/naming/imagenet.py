"""Names from ImageNet class probabilities, lifted through the WordNet noun hierarchy.

For a cluster, the ImageNet-1k probabilities of its members are summed into a *mass* over the
1000 classes (normalised to 1). Every WordNet concept above those classes *covers* the mass of the
classes below it. The name is the most specific concept that still covers most of the mass: a
cluster whose mass sits on tabby, tiger cat and Persian cat is named "cat" (which covers all
three), not "tabby" (which covers one third) and not "animal" (which covers the same mass but says
less).

The rule (``lift``): score every concept ``s`` by

    score(s) = cover(s) - penalty * generality(s),   generality(s) = log(n_below(s)) / log(1000)

where ``n_below`` is the number of ImageNet classes under ``s`` (1 for a class itself, 1000 for
``entity``), and pick the best scoring concept among those with ``cover(s) >= min_cover``. The
penalty trades mass for specificity in information-content units (number of classes below),
which - unlike the raw WordNet depth - is comparable across branches (animal branches are twice
as deep as artifact branches). ``min_cover`` keeps a concept that covers only a sliver of the
mass from winning. Defaults were chosen on real data (CIFAR-10 test and Imagenette val, grouped
by true class; ``benchmarks/naming.py``; see RESULTS.md).

A few WordNet concepts are correct but useless as names (``entity``, ``whole``, ``artifact``,
``organism``...): concepts in :data:`TOO_ABSTRACT` are never chosen.
"""

from __future__ import annotations

import math

import numpy as np

from . import wordnet as wn

#: default rule parameters (tuned in benchmarks/naming.py)
MIN_COVER = 0.4
PENALTY = 1.0

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
        n_below = self.cover.sum(axis=1)
        self.generality = (np.log(n_below) / math.log(1000.0)).astype(np.float64)
        self.depth = np.array([self.nodes[s]["depth"] for s in self.ids])
        self.allowed = np.array([s not in TOO_ABSTRACT for s in self.ids])


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


def lift(mass: np.ndarray, min_cover: float = MIN_COVER, penalty: float = PENALTY, k: int = 4) -> list[dict]:
    """Best concepts for one probability mass over the 1000 classes, best first.

    Returns up to ``k`` dicts ``{"synset", "name", "cover", "score", "depth"}``; alternatives never
    repeat a concept that is an ancestor or descendant of one already listed with a better score
    unless nothing else qualifies.
    """
    t = tree()
    m = np.asarray(mass, dtype=np.float64)
    s = m.sum()
    m = m / s if s > 0 else np.full(1000, 1e-3)
    cover = t.cover @ m
    score = cover - penalty * t.generality
    ok = t.allowed & (cover >= min_cover)
    if not ok.any():  # nothing covers enough (a diffuse cluster): the broadest useful concept
        ok = t.allowed & (cover >= cover[t.allowed].max() - 1e-9)
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
    return out


def cluster_masses(probs: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Summed (normalised) ImageNet probabilities per cluster id >= 0."""
    out = {}
    for c in sorted(set(np.asarray(labels)[np.asarray(labels) >= 0].tolist())):
        idx = np.flatnonzero(labels == c)
        m = np.asarray(probs[idx], dtype=np.float64).sum(axis=0)
        out[int(c)] = m / max(m.sum(), 1e-12)
    return out


def name_clusters_imagenet(probs: np.ndarray, labels: np.ndarray, min_cover: float = MIN_COVER,
                           penalty: float = PENALTY) -> dict[int, list[dict]]:
    """Cluster id -> ranked candidate concepts (see :func:`lift`)."""
    return {c: lift(m, min_cover=min_cover, penalty=penalty) for c, m in cluster_masses(probs, labels).items()}


def contrast_qualifiers(masses: dict[int, np.ndarray], group: list[int], base: str | None = None) -> dict[int, str]:
    """Distinguishing qualifiers for clusters that got the same name.

    For each cluster of ``group``, the concept whose cover in this cluster most exceeds its largest
    cover in the other clusters of the group (preferring concepts below ``base``, the shared name's
    synset): "mammal (dog)" vs "mammal (cat)". Clusters without a positive contrast are absent.
    """
    t = tree()
    covers = {c: t.cover @ masses[c] for c in group}
    below_base = np.ones(len(t.ids), dtype=bool)
    if base is not None and base in t.nodes:
        base_row = t.cover[t.ids.index(base)]
        below_base = (t.cover <= base_row).all(axis=1) & (t.cover.sum(axis=1) < base_row.sum())
    out = {}
    for c in group:
        other = np.max([covers[g] for g in group if g != c], axis=0)
        gain = covers[c] - other - 0.02 * t.generality  # a little preference for specific ones
        gain = np.where(t.allowed & below_base, gain, -np.inf)
        r = int(np.argmax(gain))
        if np.isfinite(gain[r]) and gain[r] > 0.02:
            out[c] = readable(t.ids[r])
    return out
