"""Search a run: by words (WordNet over the ImageNet probabilities, or a CLIP text tower) and by
example (nearest neighbours of a vector over the run's vectors, with faiss).

* :class:`WordSearch` (any run of the default encoder): a word or synset id ("dog", "vehicle",
  "n02084071") is resolved to a WordNet noun concept of the ImageNet hierarchy (the naming
  module's tree), and every item is scored by the share of its top-5 ImageNet probability mass
  that falls under the concept: the same lifting the cluster names use, per item.
* :class:`TextSearch` (CLIP runs): the query is embedded by the run's encoder's text tower with
  the naming module's prompt ensemble; items are ranked by cosine similarity.
* :class:`VectorIndex`: exact inner-product search over the L2-normalised vectors
  (``faiss.IndexFlatIP``); above :data:`FLAT_LIMIT` floats the vectors are first projected to
  :data:`PCA_DIMS` dimensions (``faiss.PCAMatrix``) to bound the memory. A search can be limited
  to a set of items (a cluster) with faiss's ID selector.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from ..data import l2_normalize
from ..errors import InputError

#: vectors kept in full (n x d floats) up to this many floats, else PCA-projected first
FLAT_LIMIT = 64_000_000
PCA_DIMS = 256
CHUNK = 16384


def _chunks(n: int, size: int = CHUNK):
    for a in range(0, n, size):
        yield a, min(n, a + size)


class WordSearch:
    """Rank items by a WordNet concept's share of their ImageNet probability mass."""

    def __init__(self, probs):
        self._probs = probs  # (n, 1000), memory-mapped float16 is fine
        self._idx = self._w = None
        self._lock = threading.Lock()

    def _sparse(self):
        from ..naming.imagenet import TOP_K, top_classes

        with self._lock:
            if self._idx is None:
                n = len(self._probs)
                idx = np.empty((n, TOP_K), dtype=np.int16)
                w = np.empty((n, TOP_K), dtype=np.float32)
                for a, b in _chunks(n):
                    idx[a:b], w[a:b] = top_classes(np.asarray(self._probs[a:b], dtype=np.float32), TOP_K)
                self._idx, self._w = idx, w
        return self._idx, self._w

    def warm(self) -> None:
        self._sparse()
        self.concepts("dog")  # loads WordNet and the ImageNet tree

    @staticmethod
    def concepts(query: str) -> list[dict]:
        """The WordNet concepts of the ImageNet hierarchy a query can mean, best first: every
        noun sense of the word that is a concept of the tree, else the most specific concept of
        the tree above a sense (e.g. a breed not among the 1000 classes -> its class's parent)."""
        from ..naming import wordnet as wn
        from ..naming.imagenet import readable, tree

        t = tree()
        q = query.strip()
        if not q:
            raise InputError("the search is empty")
        if re.fullmatch(r"n\d{8}", q):
            senses = [q]
        else:
            senses = wn.synsets_for(q)
        out, seen = [], set()
        for s in senses:
            if s in t.nodes and s not in seen:
                seen.add(s)
                out.append({"synset": s, "name": readable(s), "via": None})
        if not out:
            for s in senses:
                try:
                    anc = [a for a in wn.hypernym_closure(s) if a in t.nodes]
                except KeyError:
                    continue
                if anc:
                    best = max(anc, key=lambda a: t.nodes[a]["depth"])
                    if best not in seen:
                        seen.add(best)
                        out.append({"synset": best, "name": readable(best), "via": s})
        return out

    def scores(self, query: str) -> tuple[np.ndarray, dict, list[dict]]:
        """(per-item score in [0, 1], the concept used, the other meanings)."""
        from ..naming.imagenet import tree

        found = self.concepts(query)
        if not found:
            raise InputError(f"no WordNet noun {query.strip()!r} is (or lies below) a concept of the "
                             "ImageNet classes; try a broader word (e.g. 'dog', 'vehicle', 'food') "
                             "or a synset id such as n02084071")
        t = tree()
        use = found[0]
        cover = t.cover[t.ids.index(use["synset"])].astype(np.float32)  # (1000,) 0/1
        use = {**use, "classes": int(cover.sum())}
        idx, w = self._sparse()
        s = (w * cover[idx.astype(np.int64)]).sum(axis=1)
        return s, use, found[1:8]


class TextSearch:
    """Rank items by the cosine similarity of their vectors to a text query (CLIP runs)."""

    def __init__(self, encoder, vectors):
        self.encoder = encoder
        self._vectors = vectors

    def scores(self, query: str) -> tuple[np.ndarray, dict, list[dict]]:
        from ..naming.zeroshot import topic_vectors

        q = query.strip()
        if not q:
            raise InputError("the search is empty")
        t = topic_vectors(self.encoder, [q])[0].astype(np.float32)
        n = len(self._vectors)
        s = np.empty(n, dtype=np.float32)
        for a, b in _chunks(n):
            s[a:b] = l2_normalize(np.asarray(self._vectors[a:b], dtype=np.float32)) @ t
        return s, {"text": q, "encoder": self.encoder.name}, []


class VectorIndex:
    """Nearest neighbours by cosine similarity over a run's vectors (faiss, built on first use)."""

    def __init__(self, vectors):
        self._vectors = vectors
        self._index = None
        self._lock = threading.Lock()
        self.projected = False

    def _build(self):
        import faiss  # heavy: loaded on the first search

        with self._lock:
            if self._index is not None:
                return self._index
            n, d = self._vectors.shape
            if n * d > FLAT_LIMIT and d > PCA_DIMS:
                rng = np.random.default_rng(0)
                sample = np.sort(rng.choice(n, size=min(n, 20000), replace=False))
                pca = faiss.PCAMatrix(d, PCA_DIMS)
                pca.train(l2_normalize(np.asarray(self._vectors[sample], dtype=np.float32)))
                index = faiss.IndexPreTransform(pca, faiss.IndexFlatIP(PCA_DIMS))
                self.projected = True
            else:
                index = faiss.IndexFlatIP(d)
            for a, b in _chunks(n):
                index.add(l2_normalize(np.asarray(self._vectors[a:b], dtype=np.float32)))
            self._index = index
            return index

    def warm(self) -> None:
        self._build()

    def search(self, q: np.ndarray, k: int, within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item numbers) of the ``k`` nearest items to each row of ``q``, optionally
        only among the items ``within``; missing slots are -1."""
        import faiss

        index = self._build()
        q = l2_normalize(np.atleast_2d(np.asarray(q, dtype=np.float32)))
        if q.shape[1] != self._vectors.shape[1]:
            raise InputError(f"the query vector has {q.shape[1]} dimensions; the run's have "
                             f"{self._vectors.shape[1]}")
        params = None
        if within is not None:
            within = np.asarray(within, dtype=np.int64)
            if len(within) == 0:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(within))
            k = min(k, len(within))
        k = max(1, min(int(k), index.ntotal))
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query: threads only add barrier waits
        try:
            dist, idx = index.search(np.ascontiguousarray(q), k, params=params)
        finally:
            faiss.omp_set_num_threads(before)
        return dist, idx
