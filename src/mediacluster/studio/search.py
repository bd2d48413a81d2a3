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
* :class:`SearchService`: the studio's searches of one run (by words, by an item, by an
  uploaded image), built on first use; the session hands it the items of a cluster and the
  description of an item as they are now.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data import l2_normalize
from ..errors import InputError
from ..fileio import path_to_text

#: vectors kept in full (n x d floats) up to this many floats, else PCA-projected first
FLAT_LIMIT = 64_000_000
PCA_DIMS = 256
CHUNK = 16384
#: the most items one search answers
MAX_RESULTS = 1000
MAX_QUERY = 200  # characters of a search by words


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

    @property
    def ready(self) -> bool:
        """True once the index is built (a search then does not wait for it)."""
        return self._index is not None

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


class SearchService:
    """The searches of one run in the studio: by words (:class:`WordSearch` over the ImageNet
    probabilities, or :class:`TextSearch` on a CLIP run), by an item's vector and by an uploaded
    image embedded with the run's encoder (:class:`VectorIndex`). Each is built on first use
    (:meth:`warm` builds them ahead).

    ``within(cluster)`` gives the items a search is limited to (None: all; it raises for a
    cluster that is not there) and ``briefs([(item, score), ...])`` the answer's description of
    each item, both as the session's state is now."""

    def __init__(self, vectors, imagenet, encoder_info: dict, media: str,
                 within: Callable[[object], np.ndarray | None], briefs: Callable[[list], list[dict]]):
        self.vectors = vectors
        self.imagenet = imagenet
        self.encoder_info = encoder_info
        self.media = media
        self.n = len(vectors)
        self._within = within
        self._briefs = briefs
        self._word = None
        self._text = None
        self._index = None
        self._encoder = None
        self._lock = threading.Lock()

    @property
    def clip(self) -> bool:
        """True for a run of a CLIP encoder (it searches words with its text tower)."""
        return str(self.encoder_info.get("name") or "").startswith("clip")

    def kinds(self) -> dict:
        """The searches this run allows: ``word_search`` (``clip-text``, ``imagenet-wordnet`` or
        None), ``example_search``, ``upload_search`` (a run of a known encoder: an uploaded image,
        or an uploaded clip for an audio run)."""
        name = self.encoder_info.get("name")
        return {"word_search": "clip-text" if self.clip else ("imagenet-wordnet" if self.imagenet is not None else None),
                "example_search": True,
                "upload_search": bool(name) and name != "precomputed"}

    def warm(self) -> None:
        if self.imagenet is not None and not self.clip:
            self._word_search().warm()
        self.index.warm()

    @property
    def index(self) -> VectorIndex:
        with self._lock:
            if self._index is None:
                self._index = VectorIndex(self.vectors)
        return self._index

    def search_words(self, q: str, cluster=None, limit: int = 200) -> dict:
        t = time.perf_counter()
        if not isinstance(q, str) or len(q) > MAX_QUERY:
            raise InputError(f"the search must be text of at most {MAX_QUERY} characters")
        if self.clip:
            searcher, method = self._text_search(), "clip-text"
        elif self.imagenet is not None:
            searcher, method = self._word_search(), "imagenet-wordnet"
        else:
            raise InputError("this run has neither ImageNet probabilities (default encoder) nor a "
                             "CLIP encoder, so it cannot be searched by words; search by example")
        scores, used, others = searcher.scores(q)
        return self._ranked(scores, cluster, limit, {"query": q, "method": method, "concept": used,
                                                     "other_meanings": others}, t,
                            min_score=1e-6 if method == "imagenet-wordnet" else None)

    def _word_search(self) -> WordSearch:
        with self._lock:
            if self._word is None:
                self._word = WordSearch(self.imagenet)
        return self._word

    def _text_search(self) -> TextSearch:
        with self._lock:
            if self._text is None:
                self._text = TextSearch(self.encoder(), self.vectors)
        return self._text

    def encoder(self):
        """The run's encoder (loaded once), to embed a query image or text; an InputError for a
        run made from precomputed vectors."""
        from ..encoders import get_encoder

        if self._encoder is None:
            name = self.encoder_info.get("name")
            if not name or name == "precomputed":
                raise InputError("this run was made from precomputed vectors: no encoder to embed "
                                 "a new image or text with")
            self._encoder = get_encoder(name)
        return self._encoder

    def _ranked(self, scores: np.ndarray, cluster, limit: int, head: dict, t0: float,
                min_score: float | None = None) -> dict:
        limit = int(max(1, min(MAX_RESULTS, limit)))
        within = self._within(cluster)
        cand = np.arange(self.n) if within is None else within
        s = scores[cand]
        if min_score is not None:
            keep = s >= min_score
            cand, s = cand[keep], s[keep]
        top = np.argsort(-s, kind="stable")[:limit]
        items = self._briefs([(int(cand[j]), s[j]) for j in top])
        return {**head, "cluster": None if within is None else int(cluster), "matches": int(len(cand)),
                "items": items, "seconds": round(time.perf_counter() - t0, 4)}

    def search_item(self, i: int, cluster=None, limit: int = 100) -> dict:
        """The items nearest to item ``i`` (a checked item number)."""
        t = time.perf_counter()
        return self._search_vector(np.asarray(self.vectors[i], dtype=np.float32), cluster, limit,
                                   {"method": "example", "item": i}, t)

    def search_image(self, data: bytes, filename: str = "", cluster=None, limit: int = 100) -> dict:
        """Embed an uploaded image (an audio run: an uploaded clip) with the run's encoder (through
        the package's hardened image or audio loader) and search for its nearest items."""
        from ..ingest import AUDIO_EXTENSIONS, SkipItem

        t = time.perf_counter()
        if not data:
            raise InputError("the upload is empty")
        enc = self.encoder()
        # an audio decoder may go by the name's extension (MP3): the client's, when it is a sound's
        ext = Path(str(filename or "")).suffix.lower()
        ext = ext if self.media == "audio" and ext in AUDIO_EXTENSIONS else ""
        with tempfile.TemporaryDirectory(prefix="mc-studio-") as d:
            p = Path(d) / f"upload{ext}"
            p.write_bytes(data)
            try:
                x = enc.prepare(str(p))
            except SkipItem as e:
                raise InputError(f"the uploaded file cannot be used: {e}") from None
        with self._lock:  # one inference at a time on the shared encoder
            v = enc.encode([x])["embedding"][0]
        head = {"method": "upload", "filename": path_to_text(filename or "")[:200]}
        rec = self.encoder_info.get("id")
        if rec and rec != enc.id:
            head["warning"] = f"the encoder now is {enc.id}; the run was embedded with {rec}"
        return self._search_vector(v, cluster, limit, head, t)

    def _search_vector(self, v, cluster, limit, head, t0) -> dict:
        limit = int(max(1, min(MAX_RESULTS, limit)))
        within = self._within(cluster)
        D, idx = self.index.search(v, limit, within=within)
        items = self._briefs([(int(j), s) for s, j in zip(D[0], idx[0]) if j >= 0])
        return {**head, "cluster": None if within is None else int(cluster),
                "matches": int(self.n if within is None else len(within)), "items": items,
                "seconds": round(time.perf_counter() - t0, 4)}
