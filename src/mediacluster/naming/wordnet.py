"""WordNet 3.0 noun hierarchy, shipped with the package (no download, no nltk corpus needed).

The data were built at development time by ``scripts/build_wordnet.py`` from Debian's
``wordnet-base`` (read with nltk's ``WordNetCorpusReader``). Synset ids are ImageNet-style
wnids: ``"n"`` + the 8-digit WordNet 3.0 offset, e.g. ``"n02121808"`` (domestic cat).

>>> from mediacluster.naming import wordnet as wn
>>> wn.synsets_for("cat")[0]
'n02121620'
>>> "n02121620" in wn.hypernym_closure(wn.imagenet_synsets()[281])   # tabby -> ... -> cat
True
>>> wn.lemmas("n02121620")[:2]
['cat', 'true_cat']

Hypernyms include WordNet's instance hypernyms (e.g. a city instance -> city).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources

__all__ = [
    "synsets_for", "hypernym_closure", "hypernyms", "lemmas", "name", "imagenet_synsets",
    "imagenet_names", "depth", "is_hypernym_or_synonym", "imagenet_hierarchy", "all_synsets",
]

# nltk's morphy rules for nouns (WordNet's morphological processing)
_NOUN_SUFFIXES = [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"),
                  ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")]


def _load(name: str):
    with resources.files("mediacluster.naming").joinpath("data", name).open("rb") as f:
        return json.loads(gzip.decompress(f.read()).decode("utf-8"))


class _Graph:
    def __init__(self) -> None:
        d = _load("noun_graph.json.gz")
        self.ids: list[str] = d["ids"]
        self.lemmas: list[list[str]] = d["lemmas"]
        self.parents: list[list[int]] = d["parents"]
        self.index: dict[str, list[int]] = d["index"]
        self.exceptions: dict[str, list[str]] = d["exceptions"]
        self.pos = {s: i for i, s in enumerate(self.ids)}


@lru_cache(maxsize=1)
def _graph() -> _Graph:
    return _Graph()


@lru_cache(maxsize=1)
def imagenet_hierarchy() -> dict:
    """The ImageNet-1k part: ``classes`` (wnids by index), ``names`` (clean names) and ``nodes``
    (every class and ancestor: ``lemmas``, ``parents``, ``depth``, ``name``, ``below`` = indices of
    the ImageNet classes it covers)."""
    return _load("imagenet_hierarchy.json.gz")


def _norm(word: str) -> str:
    return word.strip().lower().replace(" ", "_").replace("-", "_")


def _candidates(word: str) -> list[str]:
    """``word`` itself, then its base forms by WordNet's noun exceptions and suffix rules."""
    g = _graph()
    w = _norm(word)
    out = [w]
    out += g.exceptions.get(w, [])
    for suf, rep in _NOUN_SUFFIXES:
        if w.endswith(suf) and len(w) > len(suf):
            out.append(w[: len(w) - len(suf)] + rep)
    seen, uniq = set(), []
    for c in out:
        if c not in seen:
            seen.add(c)
            uniq.append(c)
    return uniq


def synsets_for(word: str) -> list[str]:
    """Noun synset ids whose lemmas include ``word`` (case-insensitive; spaces or hyphens match
    underscores; plurals reduced like nltk's morphy), most frequent sense first. ``[]`` if none."""
    g = _graph()
    out: list[str] = []
    cands = _candidates(word)
    if cands[0] in g.index:  # the exact form wins over base forms when it is a lemma
        cands = cands[:1]
    for cand in cands:
        for i in g.index.get(cand, []):
            s = g.ids[i]
            if s not in out:
                out.append(s)
    return out


def _idx(synset: str) -> int:
    try:
        return _graph().pos[synset]
    except KeyError:
        raise KeyError(f"unknown noun synset id {synset!r} (expected e.g. 'n02121620')") from None


def lemmas(synset: str) -> list[str]:
    """Lemma names of a synset (underscores as in WordNet, e.g. ``'tiger_cat'``)."""
    return list(_graph().lemmas[_idx(synset)])


def name(synset: str) -> str:
    """A readable name: the first lemma with spaces, e.g. ``'tiger cat'``."""
    return _graph().lemmas[_idx(synset)][0].replace("_", " ")


def hypernyms(synset: str) -> list[str]:
    """Direct hypernyms (and instance hypernyms)."""
    g = _graph()
    return [g.ids[j] for j in g.parents[_idx(synset)]]


@lru_cache(maxsize=65536)
def _closure(i: int) -> frozenset[int]:
    g = _graph()
    out: set[int] = set()
    stack = list(g.parents[i])
    while stack:
        j = stack.pop()
        if j not in out:
            out.add(j)
            stack.extend(g.parents[j])
    return frozenset(out)


def hypernym_closure(synset: str) -> set[str]:
    """All ancestors of ``synset`` (transitively; the synset itself excluded)."""
    g = _graph()
    return {g.ids[j] for j in _closure(_idx(synset))}


def depth(synset: str) -> int:
    """Shortest number of hypernym steps from ``synset`` to a root (``entity`` has depth 0)."""
    g = _graph()
    i = _idx(synset)
    d, frontier, seen = 0, [i], {i}
    while frontier:
        if any(not g.parents[j] for j in frontier):
            return d
        nxt = []
        for j in frontier:
            for p in g.parents[j]:
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        frontier, d = nxt, d + 1
    return d


def is_hypernym_or_synonym(word: str, synset: str) -> bool:
    """True when some noun sense of ``word`` is ``synset`` itself or one of its hypernyms."""
    anc = hypernym_closure(synset) | {synset}
    return any(s in anc for s in synsets_for(word))


def all_synsets() -> list[str]:
    """Every noun synset id (82,115 in WordNet 3.0)."""
    return list(_graph().ids)


def imagenet_synsets() -> list[str]:
    """ImageNet-1k class index -> wnid (e.g. index 281 -> ``'n02123045'``, tabby)."""
    return list(imagenet_hierarchy()["classes"])


def imagenet_names() -> list[str]:
    """ImageNet-1k class index -> clean readable name."""
    return list(imagenet_hierarchy()["names"])
