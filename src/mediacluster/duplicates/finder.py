"""``DuplicateFinder``: exact, perceptual, geometric and semantic duplicates in one grouping.

How a pair of items becomes a duplicate link (each step only sees pairs the step before left):

1. **exact**: same content hash (BLAKE2b-128 of the file, as in the embedding cache).
2. **perceptual**: perceptual hashes (or one's mirror hash) within ``hash_radius`` bits, and the
   colour thumbnails agree (``PhotometricCheck``): the same picture re-encoded, resized,
   recoloured to grey, brightened, watermarked, flipped or palette-reduced.
3. **geometric**: embeddings with cosine >= ``semantic_threshold`` among each item's
   ``n_neighbors`` nearest, confirmed by keypoint alignment plus the photometric check on the
   overlap (``GeometricVerifier``): crops, caption bars, screenshot frames. Needs the files.
4. **semantic**: without files to check (vectors only), cosine >= ``semantic_only_threshold``
   and, unless ``semantic_only_relative`` is None, 1 - cosine <= ``semantic_only_relative`` x the
   collection's own neighbour distance (:func:`neighbour_distance`): 0.97 was measured on the
   default encoder's vectors, where ordinary neighbours lie far below it; another encoder's
   vectors (a non-zero mean, a narrower cone: CLIP's unrelated images at cosine ~.5-.8) or tight
   clusters put whole collections above any absolute cosine (benchmarks/RESULTS.md, "Duplicates
   on vectors from another encoder"). The cosine actually used is ``semantic_only_cutoff_``.

Audio clips (``media="audio"``): exact copies by their bytes; then each clip's ``n_neighbors``
nearest embeddings with cosine >= ``semantic_threshold`` are candidates, and with the files at
hand so are its :data:`AUDIO_PROFILE_NEIGHBORS` nearest spectrum profiles (``fingerprint.profile``:
the spectrum under the clip's own peak, silence left out, so a copy made louder and limited, or
padded, is proposed where its vector, which holds the level, moved), confirmed by the
**fingerprint** check (``fingerprint.AudioVerifier``: log spectrograms correlated over time
offsets, ``audio_min_ncc``): re-encoded, resampled, trimmed, padded, louder, noisier or stereo copies.
There is no perceptual hash, and with the files at hand the vectors alone never decide (no
``semantic_only_threshold`` fallback: other takes of the same word are as close as a copy;
benchmarks/audio_reposts.py); ``cluster --dedup`` and ``dups`` also turn that threshold off for
audio vectors without files unless it is given (``collection.find_in_rows``).

Links are grouped with a guard against chaining (``grouping.group_links``). Every default comes
from benchmarks/duplicates.py (see benchmarks/RESULTS.md, "Duplicates").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator

from ..data import nonfinite_message, nonfinite_rows
from ..errors import InputError, ParameterError
from ..fileio import hash_files, text_series
from .fingerprint import PROFILE_NEIGHBORS
from .grouping import KINDS, PairDistance, group_links
from .hashing import HASHES, Signatures, compute_signatures, store_call
from .index import DuplicateIndex
from .search import cosine_pairs, hamming_pairs, normalise
from .verify import GeometricCheck, PhotometricCheck, photometric_ok, thumb_pairs

#: Link kinds, in order of strength (the code stored in ``links_["kind"]``).
EXACT, PERCEPTUAL, GEOMETRIC, SEMANTIC, FINGERPRINT = range(5)
#: what ``paths`` are
MEDIA = ("image", "audio")

#: candidates per audio clip from its spectrum profile (``fingerprint.PROFILE_NEIGHBORS``)
AUDIO_PROFILE_NEIGHBORS = PROFILE_NEIGHBORS
#: 1 - cosine below which two vectors are the same whatever the collection (float32 rounding)
SAME_VECTOR = 1e-5
LINK_DTYPE = np.dtype([("i", np.int64), ("j", np.int64), ("kind", np.int8), ("distance", np.float32)])


def _exact_links(content: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    first: dict[str, int] = {}
    i, j = [], []
    for k, c in enumerate(content):
        if c is None:
            continue
        f = first.setdefault(c, k)
        if f != k:
            i.append(f)
            j.append(k)
    return np.asarray(i, np.int64), np.asarray(j, np.int64)


def _pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j)


def neighbour_distance(kth: np.ndarray) -> float | None:
    """The collection's ordinary neighbour distance: the median over items of 1 - cosine to the
    item's ``n_neighbors``-th nearest other item (``kth``: those cosines, from the duplicate
    search itself, ``search.cosine_pairs(kth=)``; NaN: not found). The k-th, not the nearest: an
    item's few copies do not count, so the scale holds while fewer than half the items are in
    groups larger than ``n_neighbors``. None under 3 items (no scale to measure)."""
    kth = np.asarray(kth, np.float64)
    kth = kth[np.isfinite(kth)]
    return None if len(kth) < 3 else float(np.median(1.0 - kth))


class DuplicateFinder(BaseEstimator):
    """Find and group duplicates among images or audio clips (paths), embeddings (vectors), or both.

    Parameters
    ----------
    hash : perceptual hash from ``imagehash`` ("phash", "dhash", "ahash", "whash").
    hash_size : hash side; the hash has ``hash_size ** 2`` bits.
    hash_radius : largest Hamming distance (bits) of a perceptual candidate pair.
    min_ncc, max_chroma, grey_chroma : the photometric check (``verify.PhotometricCheck``);
        ``photometric=False`` accepts every pair within ``hash_radius`` (the plain hash rule).
    semantic_threshold : smallest cosine of a candidate pair sent to geometric verification.
    semantic_only_threshold : smallest cosine accepted without images to check (vectors only,
        or ``verify=False``); None: never link on embeddings alone.
    semantic_only_relative : without files, a pair is also linked only when 1 - cosine <= this
        fraction of the collection's neighbour distance (:func:`neighbour_distance`: the median
        1 - cosine to an item's ``n_neighbors``-th nearest), so that duplicates are what is far
        closer than ordinary neighbours in the vectors' own scale; None: the absolute threshold
        alone (vectors known to be the default encoder's, where 0.97 was measured).
    n_neighbors : nearest neighbours per item searched for semantic candidates.
    verify : check semantic candidates geometrically (images) or by their fingerprints (audio)
        when the files are given.
    min_inliers : keypoint matches consistent with one similarity transform (geometric check).
    audio_min_ncc : smallest correlation of two clips' aligned log spectrograms (fingerprint
        check, ``fingerprint.AudioCheck``; audio only).
    max_diameter : largest normalised distance between two members of one group (1 = one
        link threshold; see ``grouping``).
    workers : threads for decoding and verification (default: ``embed.default_workers()``).
    progress : show progress bars (rate and ETA).
    media : what ``paths`` are: "image" (hashes, thumbnails, keypoints) or "audio" (exact
        copies, then vector candidates confirmed by the fingerprint check).

    Attributes (after ``fit``)
    --------------------------
    n_items_ : number of items.
    labels_ : (n,) duplicate group per item, -1 for an item with no duplicate.
    representative_ : (n,) index of the group's representative (its centre), -1 if none.
    duplicate_of_ : (n,) the representative for the other members of a group, else -1.
    link_kind_, link_distance_ : (n,) how each member is linked to its group (the link to the
        representative when there is one, else its closest link inside the group); kinds as in
        ``KINDS`` (-1: none); distance in bits (perceptual), 1 - cosine (geometric, semantic, fingerprint),
        0 (exact).
    group_diameter_ : (n_groups,) normalised diameter of each group.
    links_ : structured array (i, j, kind, distance) of every accepted link (a candidate pair
        whose items were already connected is not verified, so not every duplicate pair is a
        link; groups are what counts).
    n_verified_ : candidate pairs checked geometrically (images) or by fingerprint (audio).
    n_verdicts_cached_ : how many of those took the verdict stored by an earlier run
        (``fit(store=)``) instead of decoding the pair.
    skipped_ : {index: reason} for files that could not be decoded (they can still be exact
        duplicates, never perceptual or geometric ones).
    signatures_ : the ``hashing.Signatures`` used (None without images).
    vectors_ : L2-normalised embeddings (None without vectors): the input itself when its rows
        already have unit length, else a ``search.UnitRows`` view that normalises the rows it
        reads (``vectors`` may be a ``.npy`` opened with ``np.load(mmap_mode="r")``: it is read
        block by block, never loaded or copied whole).
    content_hashes_ : content hash per item (None where unknown).
    neighbour_distance_ : the collection's neighbour distance (vectors alone decided; else None).
    semantic_only_cutoff_ : the cosine a vectors-only link needed: max(``semantic_only_threshold``,
        1 - ``semantic_only_relative`` x ``neighbour_distance_``); None when no link is made on
        vectors alone (files verified, or ``semantic_only_threshold`` None).
    """

    def __init__(self, hash: str = "phash", hash_size: int = 8, hash_radius: int = 7,
                 photometric: bool = True, min_ncc: float = 0.97, max_chroma: float = 0.5,
                 grey_chroma: float = 3.0, semantic_threshold: float = 0.8,
                 semantic_only_threshold: float | None = 0.97, semantic_only_relative: float | None = 0.2,
                 n_neighbors: int = 10,
                 verify: bool = True, min_inliers: int = 15, max_diameter: float = 2.0,
                 workers: int | None = None, progress: bool = False, media: str = "image",
                 audio_min_ncc: float = 0.96):
        self.hash = hash
        self.hash_size = hash_size
        self.hash_radius = hash_radius
        self.photometric = photometric
        self.min_ncc = min_ncc
        self.max_chroma = max_chroma
        self.grey_chroma = grey_chroma
        self.semantic_threshold = semantic_threshold
        self.semantic_only_threshold = semantic_only_threshold
        self.semantic_only_relative = semantic_only_relative
        self.n_neighbors = n_neighbors
        self.verify = verify
        self.min_inliers = min_inliers
        self.max_diameter = max_diameter
        self.workers = workers
        self.progress = progress
        self.media = media
        self.audio_min_ncc = audio_min_ncc

    # -- checks ----------------------------------------------------------------------------
    def photometric_check(self) -> PhotometricCheck:
        return PhotometricCheck(min_ncc=self.min_ncc, max_chroma=self.max_chroma, grey_chroma=self.grey_chroma)

    def geometric_check(self) -> GeometricCheck:
        return GeometricCheck(min_inliers=self.min_inliers)

    def audio_check(self):
        from .fingerprint import AudioCheck

        return AudioCheck(min_ncc=float(self.audio_min_ncc))

    def _verifier(self):
        """The check of a candidate pair of files: fingerprints (audio) or keypoints (images)."""
        if self.media == "audio":
            from .fingerprint import AudioVerifier

            return AudioVerifier(self.audio_check())
        from .verify import GeometricVerifier

        return GeometricVerifier(self.geometric_check(), self.photometric_check())

    def _check_types(self) -> None:
        """Each parameter of the kind it must be: a string ('nan', 'none' given on the command line),
        a NaN or a fraction of a count failed later inside numpy, or was silently truncated."""
        def bad(name, want):
            raise ParameterError(f"{name}={getattr(self, name)!r}: expected {want}", param=name)

        def number(v) -> bool:
            return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_) \
                and not np.isnan(v)

        for name in ("hash_size", "hash_radius", "n_neighbors", "min_inliers"):
            v = getattr(self, name)
            if not number(v) or not float(v).is_integer():
                bad(name, "a whole number")
        nullable = ("semantic_only_threshold", "semantic_only_relative")
        for name in ("min_ncc", "max_chroma", "grey_chroma", "semantic_threshold", "semantic_only_threshold",
                     "semantic_only_relative", "max_diameter", "audio_min_ncc"):
            v = getattr(self, name)
            if not number(v) and not (v is None and name in nullable):
                bad(name, "a number" + (" or null" if name in nullable else ""))
        for name in ("photometric", "verify"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                bad(name, "true or false")
        w = self.workers
        if w is not None and (not number(w) or not float(w).is_integer() or w < 1):
            bad("workers", "a whole number >= 1 or null")

    def _validate(self) -> None:
        self._check_types()
        if self.hash_size < 2 or (self.hash_size * self.hash_size) % 8:
            raise ParameterError(f"hash_size={self.hash_size}: must be >= 2 with hash_size**2 a multiple of 8",
                                 param="hash_size")
        if not -1 <= self.min_ncc <= 1:
            raise ParameterError(f"min_ncc={self.min_ncc}: a correlation, in [-1, 1]", param="min_ncc")
        for name in ("max_chroma", "grey_chroma", "min_inliers"):
            if getattr(self, name) < 0:
                raise ParameterError(f"{name}={getattr(self, name)}: must be >= 0", param=name)
        if self.media not in MEDIA:
            raise ParameterError(f"media={self.media!r}: choose from {', '.join(MEDIA)}", param="media")
        if not -1 <= self.audio_min_ncc <= 1:
            raise ParameterError(f"audio_min_ncc={self.audio_min_ncc}: a correlation, in [-1, 1]", param="audio_min_ncc")
        if self.hash not in HASHES:
            raise ParameterError(f"hash={self.hash!r}: choose from {', '.join(HASHES)}", param="hash")
        if not 0 <= int(self.hash_radius) < self.hash_size ** 2:
            raise ParameterError(f"hash_radius={self.hash_radius}: must be in [0, {self.hash_size ** 2})", param="hash_radius")
        if not -1 <= self.semantic_threshold <= 1:
            raise ParameterError(f"semantic_threshold={self.semantic_threshold}: a cosine, in [-1, 1]", param="semantic_threshold")
        if self.semantic_only_threshold is not None and not -1 <= self.semantic_only_threshold <= 1:
            raise ParameterError(f"semantic_only_threshold={self.semantic_only_threshold}: a cosine, in [-1, 1]", param="semantic_only_threshold")
        if self.semantic_only_relative is not None and not 0 < self.semantic_only_relative <= 1:
            raise ParameterError(f"semantic_only_relative={self.semantic_only_relative}: a fraction of the "
                                 "neighbour distance, in (0, 1] (or null: the absolute threshold alone)",
                                 param="semantic_only_relative")
        if self.max_diameter < 1:
            raise ParameterError(f"max_diameter={self.max_diameter}: must be >= 1 (1 = one link threshold)", param="max_diameter")
        if self.n_neighbors < 1:
            raise ParameterError(f"n_neighbors={self.n_neighbors}: must be >= 1", param="n_neighbors")

    # -- fit -------------------------------------------------------------------------------
    def fit(self, paths: Sequence[str | os.PathLike] | None = None, vectors: np.ndarray | None = None, *,
            content_hashes: Sequence[str | None] | None = None, signatures: Signatures | None = None,
            ids: Sequence[str] | None = None, store=None):
        """Find duplicates among ``paths`` (image or audio files, ``media``) and/or ``vectors``
        (one row per item).

        ``content_hashes``: known content hashes (e.g. from the embedding cache), to skip
        reading the files again for exact duplicates. ``signatures``: precomputed
        ``hashing.Signatures`` (perceptual hashes, thumbnails), to skip decoding. ``ids``:
        names for the items (default: the paths, else row numbers). ``store``: an
        ``embed.EmbeddingStore`` (the embedding cache) that keeps, by content hash, the images'
        signatures (``hashing.compute_signatures``) and the geometric check's verdict on each
        pair, so a run over files already seen decodes only new ones; the results are the same
        with or without it.
        """
        self._validate()
        n = None
        for name, x in (("paths", paths), ("vectors", vectors), ("content_hashes", content_hashes),
                        ("signatures", signatures), ("ids", ids)):
            if x is None:
                continue
            if n is not None and len(x) != n:
                raise InputError(f"{name} has {len(x)} items, expected {n} (one per item)")
            n = len(x)
        if n is None:
            raise InputError("give paths, vectors, signatures or content_hashes")
        if signatures is not None and (signatures.kind, signatures.hash_size) != (self.hash, self.hash_size):
            raise InputError(f"signatures are {signatures.kind}/{signatures.hash_size}, the finder uses "
                             f"{self.hash}/{self.hash_size}")
        self.n_items_ = n
        self.paths_ = None if paths is None else [os.fspath(p) for p in paths]
        self.ids_ = ([str(x) for x in ids] if ids is not None else
                     list(self.paths_) if self.paths_ is not None else [str(k) for k in range(n)])
        if self.media == "audio":
            if signatures is not None:
                raise InputError("signatures are perceptual hashes of images; audio clips have none")
            if content_hashes is None and self.paths_ is not None:
                from ..embed.engine import default_workers

                content_hashes = hash_files(self.paths_, workers=self.workers or default_workers())[0]
        self.vectors_ = None if vectors is None else self._checked_vectors(vectors)
        self.profiles_ = self.profile_mean_ = None  # audio: the spectrum profiles, when made (_with_profile_pairs)
        # The geometric check's candidates depend on the vectors only: found first, so the
        # signature pass keeps what the check needs of each image it decodes (one decode per file)
        self.content_hashes_ = None if content_hashes is None else [None if c is None else str(c)
                                                                    for c in content_hashes]
        early = self._early_candidates(store) if self.media == "image" else None
        if self.media != "audio" and signatures is None and self.paths_ is not None:
            signatures = compute_signatures(self.paths_, kind=self.hash, hash_size=self.hash_size,
                                            content=content_hashes is None, workers=self.workers,
                                            progress=self.progress, store=store,
                                            content_hashes=content_hashes,
                                            on_decoded=None if early is None else early["on_decoded"])
        self.signatures_ = signatures
        self.skipped_ = dict(signatures.skipped) if signatures is not None else {}
        if content_hashes is None and signatures is not None and any(c is not None for c in signatures.content):
            self.content_hashes_ = list(signatures.content)

        self.neighbour_distance_ = self.semantic_only_cutoff_ = None  # set when vectors alone decide
        links = [self._links_exact(), self._links_perceptual()]
        links.append(self._links_semantic(links, store, early))
        self.links_ = np.concatenate(links) if links else np.zeros(0, LINK_DTYPE)
        self._group()
        return self

    @staticmethod
    def _checked_vectors(vectors):
        vectors = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)  # a memmap stays one
        if vectors.ndim != 2:
            raise InputError(f"vectors must be 2-D (items x dims), got shape {vectors.shape}")
        for s in range(0, len(vectors), 65536):  # in chunks: no n x d boolean temporary
            bad = nonfinite_rows(vectors[s:s + 65536])
            if len(bad):  # the first one named (the rest are not read)
                raise InputError(nonfinite_message(bad[:1] + s, len(vectors), "vectors", row="row {}"))
        return normalise(vectors)

    def _semantic_pairs(self, lo: float, kth: np.ndarray | None = None):
        return cosine_pairs(self.vectors_, float(lo), k=int(self.n_neighbors), progress=self.progress, kth=kth)

    def _early_candidates(self, store) -> dict | None:
        """Before the signature pass (images with vectors and files to verify): the geometric
        check's candidate pairs, its verifier, the verdicts the store already holds for them
        (when the content hashes are known), and ``on_decoded`` for ``compute_signatures``,
        which hands the verifier each decoded image of a pair still to check (kept within the
        verifier's cache, ``GeometricVerifier.offer``; beyond it the check decodes as before)."""
        if self.vectors_ is None or self.paths_ is None or not self.verify:
            return None
        i, j, cos = self._semantic_pairs(self.semantic_threshold)
        verifier = self._verifier()
        kind, verdicts = self._stored_verdicts(i, j, verifier, store)
        need = np.zeros(self.n_items_, bool)
        if kind is not None:
            known = np.array([self._verdict_key(kind, a, b) in verdicts for a, b in zip(i.tolist(), j.tolist())], bool)
            need[i[~known]] = need[j[~known]] = True
        else:
            need[i] = need[j] = True
        paths = self.paths_
        offer = getattr(verifier, "offer", None)

        def on_decoded(k: int, im, draft: int) -> None:
            if need[k] and offer is not None:
                offer(paths[k], im, draft)

        return {"pairs": (i, j, cos), "verifier": verifier, "kind": kind, "verdicts": verdicts,
                "on_decoded": on_decoded if need.any() else None}

    def _verdict_key(self, kind, a: int, b: int) -> str | None:
        content = self.content_hashes_
        if kind is None or content is None:
            return None
        ca, cb = content[a], content[b]
        return None if ca is None or cb is None else f"{ca}|{cb}"

    def _stored_verdicts(self, i: np.ndarray, j: np.ndarray, verifier, store) -> tuple[str | None, dict]:
        """The store kind of ``verifier``'s verdicts (None: not cached) and those held for pairs (i, j)."""
        kind = getattr(verifier, "cache_kind", None)
        kind = kind() if (store is not None and kind is not None and self.content_hashes_ is not None) else None
        if kind is None:
            return None, {}
        keys = [self._verdict_key(kind, a, b) for a, b in zip(i.tolist(), j.tolist())]
        return kind, store_call(store, lambda: store.get_derived([k for k in keys if k], kind), {})

    def _links_exact(self) -> np.ndarray:
        if self.content_hashes_ is None:
            return np.zeros(0, LINK_DTYPE)
        i, j = _exact_links(self.content_hashes_)
        out = np.zeros(len(i), LINK_DTYPE)
        out["i"], out["j"], out["kind"] = i, j, EXACT
        return out

    def _links_perceptual(self) -> np.ndarray:
        sig = self.signatures_
        if sig is None:
            return np.zeros(0, LINK_DTYPE)
        i, j, bits = hamming_pairs(sig.hashes, int(self.hash_radius), mirror=sig.mirror, valid=sig.usable(),
                                   progress=self.progress)
        if self.photometric and sig.thumbs is not None and len(i):
            ncc, chroma, sat, _ = thumb_pairs(sig.thumbs, i, j)
            keep = photometric_ok(ncc, chroma, sat, self.photometric_check())
            i, j, bits = i[keep], j[keep], bits[keep]
        out = np.zeros(len(i), LINK_DTYPE)
        out["i"], out["j"], out["kind"], out["distance"] = i, j, PERCEPTUAL, bits
        return out

    def _links_semantic(self, found: list[np.ndarray], store=None, early: dict | None = None) -> np.ndarray:
        X = self.vectors_
        if X is None:
            return np.zeros(0, LINK_DTYPE)
        can_verify = bool(self.verify) and self.paths_ is not None
        audio = self.media == "audio"
        lo = self.semantic_threshold if can_verify else self.semantic_only_threshold
        if lo is None:
            return np.zeros(0, LINK_DTYPE)
        if not can_verify:  # the vectors alone decide: in their own scale too
            relative = self.semantic_only_relative is not None
            kth = np.full(self.n_items_, np.nan) if relative else None
            i, j, cos = self._semantic_pairs(lo, kth)
            lo = self._vectors_only_cutoff(lo, kth)
            keep = cos >= lo
            i, j, cos = i[keep], j[keep], cos[keep]
        else:
            i, j, cos = early["pairs"] if early is not None else self._semantic_pairs(lo)
        n = self.n_items_
        if audio and can_verify and AUDIO_PROFILE_NEIGHBORS > 0:  # fingerprints made here, kept for the check
            early = {"verifier": self._verifier(), "kind": None}
            i, j, cos = self._with_profile_pairs(i, j, cos, early["verifier"])
        done = np.concatenate([_pair_keys(f["i"], f["j"], n) for f in found]) if found else np.zeros(0, np.int64)
        new = ~np.isin(_pair_keys(i, j, n), done)
        i, j, cos = i[new], j[new], cos[new]
        self.n_verified_ = 0
        self.n_verdicts_cached_ = 0
        if can_verify and len(i):
            ok = self._verify_pairs(i, j, cos, found, store, early)
            kind = np.full(len(i), FINGERPRINT if audio else GEOMETRIC, np.int8)
            if self.semantic_only_threshold is not None and not audio:
                strong = ~ok & (cos >= self.semantic_only_threshold) & self._undecodable(i, j)
                kind[strong] = SEMANTIC  # a file could not be decoded: the embedding decides
                ok |= strong
            i, j, cos, kind = i[ok], j[ok], cos[ok], kind[ok]
        else:
            kind = np.full(len(i), SEMANTIC, np.int8)
        out = np.zeros(len(i), LINK_DTYPE)
        out["i"], out["j"], out["kind"], out["distance"] = i, j, kind, 1.0 - cos
        return out

    def _vectors_only_cutoff(self, lo: float, kth: np.ndarray | None) -> float:
        """``semantic_only_cutoff_``: ``lo`` raised to 1 - ``semantic_only_relative`` x the
        collection's neighbour distance when that is higher (``neighbour_distance_``, from
        ``kth``, each item's cosine to its ``n_neighbors``-th nearest), never above
        1 - :data:`SAME_VECTOR` (a collection of copies has no neighbour distance, and its
        identical rows differ by float rounding)."""
        if self.semantic_only_relative is not None and kth is not None:
            self.neighbour_distance_ = neighbour_distance(kth)
            if self.neighbour_distance_ is not None:
                rel = 1.0 - max(float(self.semantic_only_relative) * self.neighbour_distance_, SAME_VECTOR)
                lo = max(float(lo), rel)
        self.semantic_only_cutoff_ = float(lo)
        return lo

    def _with_profile_pairs(self, i, j, cos, verifier):
        """Audio: the vector candidates ``(i, j, cos)`` joined with each clip's
        :data:`AUDIO_PROFILE_NEIGHBORS` nearest spectrum profiles (``fingerprint.profile``, the
        fingerprints made by ``verifier``, which the check then reuses); a pair found only by its
        profile carries its vectors' cosine."""
        from ..embed.engine import default_workers
        from ..progress import threaded_map
        from .fingerprint import profile

        n = self.n_items_
        profiles = threaded_map(lambda path: profile(verifier.prepared(path)), self.paths_,
                                self.workers or default_workers(), desc="audio profiles", unit="clip",
                                progress=self.progress)
        ok = np.array([p is not None for p in profiles], bool)
        if ok.sum() < 2:
            return i, j, cos
        width = len(next(p for p in profiles if p is not None))
        P = np.zeros((n, width), np.float32)
        P[ok] = np.stack([p for p in profiles if p is not None])
        mean = P[ok].mean(0)
        P[ok] -= mean  # centred: what sets a clip apart from the collection's average sound
        # kept for the index (DuplicateIndex: a new upload's candidates come from both sources too)
        self.profiles_, self.profile_mean_ = P.astype(np.float16), mean.astype(np.float32)
        pi, pj, _ = cosine_pairs(P, -1.0, k=AUDIO_PROFILE_NEIGHBORS, valid=ok)
        new = ~np.isin(_pair_keys(pi, pj, n), _pair_keys(i, j, n))
        pi, pj = pi[new], pj[new]
        if not len(pi):
            return i, j, cos
        X = self.vectors_
        pcos = np.einsum("ij,ij->i", np.asarray(X[pi], np.float32), np.asarray(X[pj], np.float32))
        return (np.concatenate([i, pi]), np.concatenate([j, pj]),
                np.concatenate([cos, pcos.astype(cos.dtype, copy=False)]))

    def _undecodable(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        sig = self.signatures_
        if sig is None:
            return np.ones(len(i), bool)
        ok = sig.usable()
        return ~ok[i] | ~ok[j]

    def _verify_pairs(self, i: np.ndarray, j: np.ndarray, cos: np.ndarray,
                      linked: list[np.ndarray], store=None, early: dict | None = None) -> np.ndarray:
        """Geometric check of candidate pairs, most similar first, in batches; a pair whose
        items are already connected (by earlier links or verified pairs) is not checked: it
        cannot change the groups' membership, and in a group of 300 reposts it saves most of
        the 300 x ``n_neighbors`` checks. With a ``store``, a pair of contents already checked
        by the same verifier (``cache_kind``) takes its stored verdict; new verdicts are stored as
        each batch ends."""
        from scipy.cluster.hierarchy import DisjointSet

        from ..embed.engine import default_workers
        from ..progress import progress_bar

        verifier = early["verifier"] if early is not None else self._verifier()
        usable = self.signatures_.usable() if self.signatures_ is not None else np.ones(self.n_items_, bool)
        paths = self.paths_
        ds = DisjointSet(range(self.n_items_))
        for f in linked:
            for a, b in zip(f["i"].tolist(), f["j"].tolist()):
                ds.merge(a, b)
        order = np.argsort(-cos, kind="stable")
        ok = np.zeros(len(i), bool)
        workers = self.workers or default_workers()

        if early is not None and early["kind"] is not None:  # read before the signature pass
            kind, verdicts = early["kind"], early["verdicts"]
        else:
            kind, verdicts = self._stored_verdicts(i, j, verifier, store)
        fresh: list[tuple[str, bytes]] = []
        hits: list[int] = []

        def key(a: int, b: int) -> str | None:
            return self._verdict_key(kind, a, b)

        def one(k: int) -> bool:
            a, b = int(i[k]), int(j[k])
            if not (usable[a] and usable[b]):
                return False
            pk = key(a, b)
            got = verdicts.get(pk) if pk is not None else None
            if got in (b"\x00", b"\x01"):  # anything else (a damaged entry): checked again
                hits.append(k)
                return got == b"\x01"
            res = bool(verifier.verify(paths[a], paths[b])[0])
            if pk is not None:
                fresh.append((pk, b"\x01" if res else b"\x00"))  # list.append: thread-safe
            return res

        batch = 64 * workers
        checked = 0
        with ThreadPoolExecutor(max_workers=workers) as pool, progress_bar(
                total=len(order), desc="verify pairs", unit="pair", disable=not self.progress) as bar:
            for s in range(0, len(order), batch):
                ks = [int(k) for k in order[s:s + batch] if not ds.connected(int(i[k]), int(j[k]))]
                ks.sort(key=lambda k: (int(i[k]), int(j[k])))  # one item's neighbours together: cache hits
                for k, res in zip(ks, pool.map(one, ks)):
                    if res:
                        ok[k] = True
                        ds.merge(int(i[k]), int(j[k]))
                checked += len(ks)
                bar.update(min(batch, len(order) - s))
                if fresh:  # each batch's verdicts kept as it ends (one transaction): a killed run keeps them
                    store_call(store, lambda: store.put_derived(fresh, kind), None)
                    fresh.clear()
        self.n_verified_ = checked
        self.n_verdicts_cached_ = len(hits)
        return ok

    # -- grouping --------------------------------------------------------------------------
    def pair_distance(self) -> PairDistance:
        """The normalised distance used by the chaining guard (1 = a link threshold)."""
        sig = self.signatures_
        return PairDistance(
            self.n_items_, content=self.content_hashes_,
            hashes=None if sig is None else sig.hashes, mirror=None if sig is None else sig.mirror,
            hash_ok=None if sig is None else sig.usable(), hash_scale=max(1, int(self.hash_radius)),
            vectors=self.vectors_,
            cos_scale=max(1e-6, 1.0 - (self.semantic_threshold if (self.verify and self.paths_ is not None)
                                       or self.media == "audio"
                                       else (self.semantic_only_cutoff_ or self.semantic_only_threshold
                                             or self.semantic_threshold))),
        )

    def _group(self) -> None:
        n = self.n_items_
        L = self.links_
        labels, rep, diam = group_links(n, L["i"], L["j"], self.pair_distance(), float(self.max_diameter))
        self.labels_ = labels
        self.representative_ = rep
        self.group_diameter_ = diam
        self.duplicate_of_ = np.where((rep >= 0) & (rep != np.arange(n)), rep, -1)
        # how each member is linked: to its representative if directly, else its best link in
        # the group (strongest kind, then smallest distance)
        kind = np.full(n, -1, np.int8)
        dist = np.full(n, np.nan, np.float32)
        same = labels[L["i"]] == labels[L["j"]]
        inside = L[same & (labels[L["i"]] >= 0)]
        best: dict[int, tuple] = {}
        for a, b, k, d in zip(inside["i"].tolist(), inside["j"].tolist(), inside["kind"].tolist(),
                              inside["distance"].tolist()):
            for x, y in ((a, b), (b, a)):
                key = (0 if y == rep[x] else 1, k, d)
                if x not in best or key < best[x]:
                    best[x] = key
        for x, (_, k, d) in best.items():
            kind[x], dist[x] = k, d
        self.link_kind_ = kind
        self.link_distance_ = dist

    # -- results ---------------------------------------------------------------------------
    @property
    def n_groups_(self) -> int:
        return int(len(self.group_diameter_))

    def groups(self) -> list[dict]:
        """One dict per group: id, size, representative (index and id), diameter, members."""
        out = []
        order = np.argsort(self.labels_, kind="stable")
        labs = self.labels_[order]
        start = np.searchsorted(labs, 0)
        for g, members in enumerate(np.split(order[start:], np.flatnonzero(np.diff(labs[start:])) + 1)):
            if not len(members):
                continue
            r = int(self.representative_[members[0]])
            out.append({"group": g, "size": int(len(members)), "representative": r,
                        "representative_id": self.ids_[r], "diameter": float(self.group_diameter_[g]),
                        "members": [int(m) for m in members]})
        return out

    def table(self):
        """A pandas DataFrame, one row per item: id, duplicate_group, duplicate_of (id of the
        representative, empty for representatives and unique items), is_representative,
        link_kind, link_distance, group_size, group_diameter, skipped (reason, if any)."""
        import pandas as pd

        n = self.n_items_
        labels = self.labels_
        sizes = np.bincount(labels[labels >= 0], minlength=self.n_groups_) if self.n_groups_ else np.zeros(0, int)
        return pd.DataFrame({  # text_series: a file name that is not UTF-8 stays as it is
            "id": text_series(self.ids_),
            "duplicate_group": labels,
            "duplicate_of": text_series(self.ids_[r] if r >= 0 else "" for r in self.duplicate_of_),
            "is_representative": self.representative_ == np.arange(n),
            "link_kind": [KINDS[k] if k >= 0 else "" for k in self.link_kind_],
            "link_distance": self.link_distance_,
            "group_size": np.where(labels >= 0, sizes[np.maximum(labels, 0)] if len(sizes) else 0, 1),
            "group_diameter": np.where(labels >= 0, self.group_diameter_[np.maximum(labels, 0)]
                                       if self.n_groups_ else 0.0, 0.0),
            "skipped": [self.skipped_.get(k, "") for k in range(n)],
        })

    def index(self, vectors: bool = True):
        """A ``DuplicateIndex`` over the fitted items, to check new items (saveable)."""
        return DuplicateIndex.from_finder(self, vectors=vectors)


__all__ = ["DuplicateFinder", "KINDS", "LINK_DTYPE"]
