"""``DuplicateIndex``: is a new item a near-duplicate of one already seen?

Built from a fitted ``DuplicateFinder`` (``finder.index()``), it keeps per item only plain
arrays: content hash, perceptual hash and mirror hash, colour thumbnail, duplicate group and,
optionally, the embedding (float16). ``query(path=..., vector=...)`` applies the finder's rule
to one new item against all stored items:

exact (same bytes) > perceptual (hash within the radius, thumbnails agree) > geometric
(cosine >= ``semantic_threshold`` and keypoint alignment with the stored file, when that file
is still readable) > semantic (cosine >= ``semantic_only_threshold``). An index of audio clips
(``params["media"] == "audio"``) keeps no hashes or thumbnails: exact, then fingerprint (one of
the ``n_neighbors`` nearest vectors with cosine >= ``semantic_threshold`` whose stored file's
log spectrogram the new clip's aligns with; ``fingerprint.AudioVerifier``).

``save(folder)`` writes ``duplicates.json`` (parameters, ids, paths), ``duplicates.npz`` (the
per-item arrays, no pickle) and ``vectors.faiss`` (the unit vectors as float16, a faiss
``IndexScalarQuantizer`` file written block by block from the fitted rows, never a whole n x d
copy); ``DuplicateIndex.load(folder)`` reads them back, the vectors memory-mapped
(``faiss.IO_FLAG_MMAP_IFC``): loading reads no vectors (0.2 s for a million items, their ids and
paths); a query's pages are read from the file when it touches them.

The search over the vectors is exact (every stored row is scored, as before): a few queries
through faiss's float16 scan of the memory-mapped file; from ``BATCH_QUERIES`` queries on
(``query_many``: ``assign``, a service batch) the file is read once, ``search.BLOCK`` rows at a
time as float32, each block against every query by faiss's BLAS kernel (``faiss.knn``): at
200,000 x 1280, 1,000 queries took 3.5 s that way and 10.8 s through the float16 scan, one query
0.61 s and 0.024 s (benchmarks/dupindex.py; benchmarks/RESULTS.md, "Duplicates at scale"). The
pages a batch or the writer read are handed back as they go (``fileio.release_pages``). An index
written before (format 2: the vectors inside ``duplicates.npz``) is still read, its vectors into
memory.

The stored files are found again after the collection, the run or the model moved: the index
keeps each path relative to the collection root (the run's, ``save(root=)``, when every
training file lies under it; else their deepest common folder), that root as it was, and the
root relative to the index folder. On load the root is found by ``mediacluster.locations``
(the one rule of every stored item path): the one given (``root=``; ``assign
--collection-root``), else the recorded one while it exists, else the one at the same place
relative to the index (a project folder holding the photos and the run, moved or copied
whole). An index written before (format 1, absolute paths) is read the same way, its root
being its paths' common folder. Where no root holds the files, queries
still answer by hashes and vectors; only the geometric check, which reads the stored file,
is skipped (``files_found`` says so).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelFormatError
from ..fileio import path_to_text
from ..locations import Root, check_given, common_folder, find, legacy, split_root, under
from .grouping import KINDS
from .hashing import THUMB, hamming

FORMAT = "mediacluster.duplicates/3"  # 3: the vectors in their own memory-mapped file
READ_FORMATS = ("mediacluster.duplicates/1", "mediacluster.duplicates/2", FORMAT)  # 1: absolute paths;
# 2: paths relative to a recorded collection root, the vectors inside duplicates.npz
JSON_NAME = "duplicates.json"
NPZ_NAME = "duplicates.npz"
VECTORS_NAME = "vectors.faiss"
#: From this many queries at once the vectors are searched block by block through BLAS (see the
#: module doc: at 200,000 rows the float16 scan costs ~11-24 ms a query, a blocked pass ~0.6 s +
#: 3 ms a query; even at ~40-60 queries).
BATCH_QUERIES = 64

#: Finder parameters the index needs to apply the same rule.
_PARAMS = ("hash", "hash_size", "hash_radius", "photometric", "min_ncc", "max_chroma", "grey_chroma",
           "semantic_threshold", "semantic_only_threshold", "n_neighbors", "verify", "min_inliers")
#: Finder parameters of an audio index only (an image index is written as before without them).
_AUDIO_PARAMS = ("media", "audio_min_ncc")


@dataclass(frozen=True)
class DuplicateMatch:
    """The stored item a new item duplicates: its row, id, group, and how it matched."""

    index: int
    id: str
    group: int
    kind: str
    distance: float
    representative: str | None = None  # id of the group's representative (None: no group)

    def __str__(self) -> str:
        unit = " bits" if self.kind == "perceptual" else "" if self.kind == "exact" else " (1 - cosine)"
        if self.kind == "fingerprint":
            unit += ", the recording aligned"
        return f"near-duplicate of {self.id} ({self.kind}, distance {self.distance:g}{unit})"

    def to_dict(self) -> dict:
        return {"index": self.index, "id": self.id, "group": self.group, "kind": self.kind,
                "distance": self.distance, "representative": self.representative}


class DuplicateIndex:
    """Stored signatures of fitted items; answers "near-duplicate of item X (distance d)"."""

    def __init__(self, params: dict, ids: list[str], paths: list[str] | None, labels: np.ndarray,
                 content: list[str | None] | None, hashes: np.ndarray | None, mirror: np.ndarray | None,
                 thumbs: np.ndarray | None, hash_ok: np.ndarray | None, vectors: np.ndarray | None,
                 representative: np.ndarray | None = None, profiles: np.ndarray | None = None,
                 profile_mean: np.ndarray | None = None):
        self.params = dict(params)
        self.ids = list(ids)
        self.paths = None if paths is None else list(paths)
        self.labels = np.asarray(labels, np.int64)
        self.content = content
        self.hashes = hashes
        self.mirror = mirror
        self.thumbs = thumbs
        self.hash_ok = hash_ok
        self.vectors = vectors  # unit rows: float16 (loaded), or the finder's (unsaved; see from_finder)
        self._faiss = None  # the float16 inner-product index over them (memory-mapped once loaded)
        self.representative = None if representative is None else np.asarray(representative, np.int64)
        # audio: each stored clip's spectrum profile (fingerprint.profile, centred on the
        # collection's mean, profile_mean; a zero row: none), the finder's second candidate source
        self.profiles = None if profiles is None else np.asarray(profiles)
        self.profile_mean = None if profile_mean is None else np.asarray(profile_mean, np.float32)
        self._unit_profiles = None
        self.root: str | None = None  # the collection root the paths were resolved against (load)
        self._by_content = {} if content is None else {c: k for k, c in reversed(list(enumerate(content)))
                                                       if c is not None}
        self._verifier = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def media(self) -> str:
        """What the stored files are: "image" or "audio" (the finder's ``media``)."""
        return self.params.get("media", "image")

    def __getstate__(self) -> dict:
        """For ``pickle`` / ``joblib`` (:meth:`save` is the stored form): the geometric verifier
        holds OpenCV objects that do not pickle; it is made again on the next query that needs it."""
        return {**self.__dict__, "_verifier": None}

    @classmethod
    def from_finder(cls, finder, vectors: bool = True) -> DuplicateIndex:
        """The index of a fitted finder. Its vectors are the finder's unit rows themselves (an
        array, or a ``search.UnitRows`` view of a memory-mapped file), not a copy: :meth:`save`
        writes them as float16 block by block, and a query of the unsaved index scores them as
        float16, as the saved one does."""
        sig = finder.signatures_
        audio = getattr(finder, "media", "image") == "audio"
        params = {p: getattr(finder, p) for p in _PARAMS + (_AUDIO_PARAMS if audio else ())}
        cutoff = getattr(finder, "semantic_only_cutoff_", None)
        if cutoff is not None:  # vectors alone decided: a new item is judged by the cutoff the fit used
            params["semantic_only_threshold"] = cutoff
        return cls(
            params=params,
            ids=finder.ids_, paths=finder.paths_, labels=finder.labels_, content=finder.content_hashes_,
            hashes=None if sig is None else sig.hashes, mirror=None if sig is None else sig.mirror,
            thumbs=None if sig is None else sig.thumbs, hash_ok=None if sig is None else sig.usable(),
            vectors=None if not vectors else finder.vectors_, representative=finder.representative_,
            profiles=getattr(finder, "profiles_", None), profile_mean=getattr(finder, "profile_mean_", None),
        )

    # -- query -----------------------------------------------------------------------------
    def query(self, path: str | os.PathLike | None = None, vector: np.ndarray | None = None,
              exclude: int | None = None, near: tuple | None = None) -> DuplicateMatch | None:
        """The best match of one new item (an image file and/or its embedding), or None.

        A file that cannot be decoded is checked for exact copies only. ``exclude``: a stored
        row to ignore (e.g. the item itself when checking a stored item). ``near``: the vector's
        ``(similarities, rows)`` from :meth:`nearest` when several items are checked at once.
        """
        from ..fileio import hash_file
        from ..ingest import SkipItem, load_image
        from .hashing import hash_image, thumbnail

        p = self.params
        found: list[tuple[int, float, int]] = []  # (kind, distance, row)
        h = m = th = None
        audio = self.media == "audio"
        if path is not None:
            path = os.fspath(path)
            try:
                digest = hash_file(path)
            except OSError:
                digest = None
            row = self._by_content.get(digest) if digest is not None else None
            if row is not None and row != exclude:
                found.append((0, 0.0, row))
            try:
                if audio:
                    raise SkipItem("an audio clip has no perceptual hash", "audio")
                from PIL import ImageOps

                from .hashing import DRAFT

                im = load_image(path, draft_size=DRAFT)
                h = hash_image(im, p["hash"], p["hash_size"])
                m = hash_image(ImageOps.mirror(im), p["hash"], p["hash_size"])
                th = thumbnail(im, THUMB)
            except SkipItem:
                pass
        if h is not None and self.hashes is not None:
            bits = hamming(self.hashes, h[None, :])
            if self.mirror is not None:
                bits = np.minimum(bits, hamming(self.hashes, m[None, :]))
            ok = bits <= p["hash_radius"]
            if self.hash_ok is not None:
                ok &= self.hash_ok
            if exclude is not None:
                ok[exclude] = False
            rows = np.flatnonzero(ok)
            if len(rows) and p["photometric"] and self.thumbs is not None:
                from .verify import PhotometricCheck, compare_thumbs, photometric_ok

                check = PhotometricCheck(p["min_ncc"], p["max_chroma"], p["grey_chroma"])
                a = np.broadcast_to(th, (len(rows), *th.shape))
                n0, c0, s0 = compare_thumbs(a, self.thumbs[rows])
                n1, c1, s1 = compare_thumbs(a, self.thumbs[rows][:, :, ::-1])
                rows = rows[photometric_ok(n0, c0, s0, check) | photometric_ok(n1, c1, s1, check)]
            found += [(1, float(bits[r]), int(r)) for r in rows]
        if vector is not None and self.vectors is not None:
            found += self._semantic(np.asarray(vector, np.float32).ravel(), path, exclude, near)
        if audio and path is not None:
            found += self._by_profile(path, vector, exclude, {r for _, _, r in found})
        if not found:
            return None
        kind, dist, row = min(found)
        r = int(self.representative[row]) if self.representative is not None else -1
        return DuplicateMatch(index=row, id=self.ids[row], group=int(self.labels[row]), kind=KINDS[kind],
                              distance=dist, representative=self.ids[r] if r >= 0 else None)

    def query_bytes(self, data: bytes, vector: np.ndarray | None = None, suffix: str = "",
                    near: tuple | None = None) -> DuplicateMatch | None:
        """:meth:`query` for an upload held in memory (the service): the bytes go to a temporary
        file for the duration of the check (the geometric check reads files)."""
        import tempfile

        suffix = suffix if suffix.startswith(".") and len(suffix) <= 10 and suffix[1:].isalnum() else ""
        with tempfile.TemporaryDirectory(prefix="mc-dup-") as d:
            p = Path(d) / f"upload{suffix}"
            p.write_bytes(data)
            return self.query(path=p, vector=vector, near=near)

    def query_many(self, paths=None, vectors: np.ndarray | None = None) -> list[DuplicateMatch | None]:
        """:meth:`query` for each of several new items (``paths`` and/or ``vectors`` rows; a
        None path checks that item by its vector alone)."""
        n = len(paths) if paths is not None else len(vectors) if vectors is not None else 0
        if paths is not None and vectors is not None and len(vectors) != n:
            raise InputError(f"{n} paths but {len(vectors)} vectors")
        near = self.nearest(vectors) if vectors is not None and self.vectors is not None else None
        return [self.query(path=None if paths is None else paths[k],
                           vector=None if vectors is None else vectors[k],
                           near=None if near is None else (near[0][k], near[1][k])) for k in range(n)]

    def nearest(self, vectors: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(similarities, rows)``, each (m, k): every vector's ``k`` (default ``n_neighbors``)
        stored rows of highest cosine, exact, best first (row -1 past the stored items; an all-zero
        or non-finite vector gets none). For :meth:`query`'s ``near``."""
        V = np.asarray(vectors, np.float32)
        if V.ndim != 2 or V.shape[1] != self.vectors.shape[1]:
            raise InputError(f"vectors of shape {V.shape}: the index holds {self.vectors.shape[1]}-d vectors")
        k = min(int(self.params["n_neighbors"] if k is None else k), len(self.vectors))
        norms = np.linalg.norm(V, axis=1)
        ok = np.isfinite(norms) & (norms > 0)
        sims = np.full((len(V), k), -np.inf, np.float32)
        rows = np.full((len(V), k), -1, np.int64)
        if ok.any() and k > 0:
            Q = np.ascontiguousarray(V[ok] / norms[ok, None], np.float32)
            sims[ok], rows[ok] = self._search(Q, k)
        return sims, rows

    def _search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` inner products of unit queries ``Q`` with the stored rows."""
        if len(Q) < BATCH_QUERIES or not isinstance(self.vectors, np.ndarray) or self.vectors.dtype != np.float16:
            return self._vector_index().search(Q, k)
        import faiss  # heavy: only when a query needs the vectors

        from ..fileio import release_pages
        from .search import BLOCK

        heap = faiss.ResultHeap(len(Q), k, keep_max=True)
        for s in range(0, len(self.vectors), BLOCK):
            block = np.asarray(self.vectors[s:s + BLOCK], np.float32)  # float16 rows, exactly
            release_pages(self.vectors)  # the file's pages stay cache, not this process's memory
            D, rows = faiss.knn(Q, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
            heap.add_result(D, np.where(rows >= 0, rows + s, -1))
        heap.finalize()
        return heap.D, heap.I

    def _semantic(self, v: np.ndarray, path, exclude, near=None) -> list[tuple[int, float, int]]:
        p = self.params
        if v.shape[0] != self.vectors.shape[1]:
            raise InputError(f"vector has {v.shape[0]} dims, the index holds {self.vectors.shape[1]}-d vectors")
        if near is None or exclude is not None:
            near = self.nearest(v[None, :], int(p["n_neighbors"]) + (exclude is not None))
            near = (near[0][0], near[1][0])
        sims, rows = near
        keep = (rows >= 0) & (rows != (-1 if exclude is None else exclude))
        sims, top = sims[keep][: int(p["n_neighbors"])], rows[keep][: int(p["n_neighbors"])]
        # a cosine distance: float16 vectors and float32 sums can put a copy's similarity a hair above 1
        out = []
        can_verify = p["verify"] and path is not None and self.paths is not None
        verified = 4 if self.media == "audio" else 2  # KINDS: fingerprint, geometric
        for r, c in zip(top.tolist(), sims.tolist()):
            if can_verify and c >= p["semantic_threshold"] and os.path.exists(self.paths[r]):
                if self._verify(path, self.paths[r]):
                    out.append((verified, max(0.0, 1.0 - c), int(r)))
                    continue
            if p["semantic_only_threshold"] is not None and c >= p["semantic_only_threshold"] and not (
                    can_verify and os.path.exists(self.paths[r])):
                out.append((3, max(0.0, 1.0 - c), int(r)))
        return out

    def _by_profile(self, path, vector, exclude, seen: set) -> list[tuple[int, float, int]]:
        """Audio: the stored clips among the new clip's ``fingerprint.PROFILE_NEIGHBORS`` nearest
        spectrum profiles (level- and silence-free, as the finder's candidates) that the
        fingerprint check links to it (kind fingerprint, distance: 1 - the vectors' cosine when
        there are vectors, else 0). Nothing without stored profiles or readable stored files."""
        from .fingerprint import PROFILE_NEIGHBORS, profile

        p = self.params
        if (self.profiles is None or self.profile_mean is None or not p["verify"] or self.paths is None
                or PROFILE_NEIGHBORS <= 0):
            return []
        got = profile(self._audio_verifier().prepared(path))
        if got is None or got.shape != self.profile_mean.shape:
            return []
        if self._unit_profiles is None:
            P = np.asarray(self.profiles, np.float32)
            norms = np.linalg.norm(P, axis=1, keepdims=True)
            self._unit_profiles = np.divide(P, norms, out=np.zeros_like(P), where=norms > 0)
        q = got - self.profile_mean
        q /= max(float(np.linalg.norm(q)), 1e-12)
        sims = self._unit_profiles @ q
        if exclude is not None:
            sims[exclude] = -np.inf
        top = np.argsort(-sims, kind="stable")[:PROFILE_NEIGHBORS]
        v = None
        if vector is not None and self.vectors is not None:
            v = np.asarray(vector, np.float32).ravel()
            v = v / max(float(np.linalg.norm(v)), 1e-12)
        out = []
        for r in top.tolist():
            if r in seen or not np.isfinite(sims[r]) or not os.path.exists(self.paths[r]):
                continue
            if self._verify(path, self.paths[r]):
                c = float(np.asarray(self.vectors[r], np.float32) @ v) if v is not None else 1.0
                out.append((4, max(0.0, 1.0 - c), int(r)))  # KINDS[4]: fingerprint
        return out

    def _audio_verifier(self):
        from .fingerprint import AudioCheck, AudioVerifier

        if self._verifier is None:
            self._verifier = AudioVerifier(AudioCheck(min_ncc=float(self.params["audio_min_ncc"])),
                                           cache_bytes=32 * 2**20)
        return self._verifier

    def _vector_index(self):
        """A faiss inner-product index over the stored vectors as float16 (``IndexScalarQuantizer``
        QT_fp16: SIMD search of the stored precision). A loaded index maps its file (see
        :meth:`load`); an unsaved one (or one of format 2) is filled here on the first query, its
        rows rounded to float16 as :meth:`save` stores them."""
        if self._faiss is None:
            import faiss  # heavy: only when a query needs the vectors

            from .search import _blocks

            d = self.vectors.shape[1]
            index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            for _, v in _blocks(self.vectors):
                index.add(v.astype(np.float16).astype(np.float32))
            self._faiss = index
        return self._faiss

    def _verify(self, a, b) -> bool:
        from .verify import GeometricCheck, GeometricVerifier, PhotometricCheck

        p = self.params
        if self.media == "audio":
            return self._audio_verifier().verify(a, b)[0]
        if self._verifier is None:
            self._verifier = GeometricVerifier(GeometricCheck(min_inliers=p["min_inliers"]),
                                               PhotometricCheck(p["min_ncc"], p["max_chroma"], p["grey_chroma"]),
                                               cache_size=256)
        return self._verifier.verify(a, b)[0]

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
        """Write ``duplicates.json``, ``duplicates.npz`` and (with vectors) ``vectors.faiss`` into
        ``folder`` (atomically each, the JSON last). ``root``: the collection root (the run's;
        default, or when a path lies outside it: the paths' common folder), which the paths are
        stored relative to."""
        from ..fileio import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vectors = None
        if self.vectors is not None:
            _write_vectors(folder / VECTORS_NAME, self.vectors)
            vectors = {"file": VECTORS_NAME, "rows": len(self.vectors), "dims": int(self.vectors.shape[1]),
                       "dtype": "float16"}
        arrays = {"labels": self.labels}
        for name in ("hashes", "mirror", "thumbs", "hash_ok", "representative", "profiles", "profile_mean"):
            if getattr(self, name) is not None:
                arrays[name] = np.asarray(getattr(self, name))
        if self.content is not None:
            arrays["content"] = np.array([c or "" for c in self.content], dtype="S32")
        with atomic_path(folder / NPZ_NAME) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        loc = _root_for(self.paths, root)
        rel = None if self.paths is None else loc.store_all(self.paths)
        where = loc.record(folder)
        where = {"root": where["root"], "root_from_index": where["root_from_store"]} if where else {}
        write_json(folder / JSON_NAME, {
            "format": FORMAT, "params": self.params, "ids": self.ids, **where,
            "paths": None if rel is None else [None if r is None else path_to_text(r, force=True) for r in rel],
            "arrays": sorted(arrays), "vectors": vectors})
        return folder

    @property
    def files_found(self) -> bool | None:
        """Whether the stored training files are where the index looks for them (the first
        stored path exists); None without paths."""
        first = next((p for p in self.paths or () if p is not None), None)
        return None if first is None else os.path.exists(first)

    @classmethod
    def load(cls, folder: str | os.PathLike, root: str | os.PathLike | None = None) -> DuplicateIndex:
        """Read an index written by :meth:`save`, checking it (never unpickles): a damaged or
        foreign folder raises ``ModelFormatError`` naming the file and what is wrong. ``root``:
        where the training collection is now (see the module doc for where it is looked for
        otherwise)."""
        folder = Path(folder)
        jp, zp = folder / JSON_NAME, folder / NPZ_NAME
        try:
            with open(jp, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{jp}: cannot read the duplicate index: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") not in READ_FORMATS:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise ModelFormatError(f"{jp}: format {fmt!r}, expected {FORMAT!r}")
        params, ids, paths = meta.get("params"), meta.get("ids"), meta.get("paths")
        if not isinstance(params, dict) or set(_PARAMS) - set(params):
            raise ModelFormatError(f"{jp}: params must hold {list(_PARAMS)}")
        if params.get("media", "image") not in ("image", "audio") or (
                params.get("media") == "audio" and not isinstance(params.get("audio_min_ncc"), (int, float))):
            raise ModelFormatError(f"{jp}: params 'media' must be 'image' or 'audio' (audio: with a number "
                                   f"'audio_min_ncc'), got {params.get('media')!r}")
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise ModelFormatError(f"{jp}: ids must be a list of strings")
        if paths is not None and (not isinstance(paths, list) or len(paths) != len(ids)
                                  or not all(p is None or isinstance(p, str) for p in paths)):
            raise ModelFormatError(f"{jp}: paths must be null or one string (or null) per id ({len(ids)})")
        found_root, paths = _resolve_paths(meta, paths, folder, root, jp)
        try:
            with np.load(zp, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            # ValueError: object arrays need pickle; BadZipFile: cut short (a copy, a full disk)
            raise ModelFormatError(f"{zp}: cannot read the duplicate index arrays: {e}") from e
        n = len(ids)
        expect = {"labels": "iu", "representative": "iu", "hashes": "u", "mirror": "u", "thumbs": "u", "hash_ok": "b",
                  "vectors": "f", "content": "S", "profiles": "f", "profile_mean": "f"}
        if meta["format"] == FORMAT:  # the vectors live in their own file
            del expect["vectors"]
        for k, a in arrays.items():
            if k not in expect or a.dtype.kind not in expect[k]:
                raise ModelFormatError(f"{zp}: unexpected array {k!r} ({a.dtype})")
            if len(a) != n and k != "profile_mean":
                raise ModelFormatError(f"{zp}: array {k!r} has {len(a)} rows, the index {n} items")
        if "labels" not in arrays:
            raise ModelFormatError(f"{zp}: no 'labels' array")
        content = None
        if "content" in arrays:
            content = [c.decode() or None for c in arrays["content"]]
        vectors, mapped = arrays.get("vectors"), None
        if meta["format"] == FORMAT and meta.get("vectors") is not None:
            vectors, mapped = _read_vectors(folder, meta["vectors"], n, jp)
        index = cls(params=meta["params"], ids=meta["ids"], paths=paths, labels=arrays["labels"],
                    content=content, hashes=arrays.get("hashes"), mirror=arrays.get("mirror"),
                    thumbs=arrays.get("thumbs"), hash_ok=arrays.get("hash_ok"), vectors=vectors,
                    representative=arrays.get("representative"), profiles=arrays.get("profiles"),
                    profile_mean=arrays.get("profile_mean"))
        if (index.profiles is None) != (index.profile_mean is None) or (
                index.profiles is not None and (index.profiles.ndim != 2 or index.profile_mean.shape
                                                != index.profiles.shape[1:])):
            raise ModelFormatError(f"{zp}: 'profiles' and 'profile_mean' must come together, of one width")
        index._faiss = mapped
        index.root = found_root
        return index


def _sq_index(d: int):
    """An empty faiss float16 inner-product index of ``d`` dims (the stored vectors' index)."""
    import faiss  # heavy: only when vectors are written or searched

    return faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)


def _sq_header(d: int, n: int) -> bytes:
    """What faiss writes before the codes of a float16 ``IndexScalarQuantizer`` holding ``n``
    rows: its serialisation when empty, with ``ntotal`` (int64, after the fourcc and ``d``) and
    the codes' byte count (uint64, the last field before the codes) set to ``n`` rows'."""
    import faiss  # heavy: only when vectors are written or searched

    head = bytearray(faiss.serialize_index(_sq_index(d)).tobytes())
    if head[:4] != b"IxSQ" or head[8:16] != bytes(8) or head[-8:] != bytes(8):
        raise RuntimeError(f"faiss {faiss.__version__} serialises IndexScalarQuantizer in an unexpected layout")
    head[8:16] = np.int64(n).tobytes()
    head[-8:] = np.uint64(n * d * 2).tobytes()
    return bytes(head)


def _write_vectors(path: Path, V) -> None:
    """``V``'s unit rows (the finder's array or ``search.UnitRows``, or float16 rows) as a faiss
    float16 ``IndexScalarQuantizer`` file, written ``search.BLOCK`` rows at a time (no n x d
    copy): faiss's header, then the rows' float16 values in order, which are that index's
    codes. The layout is checked against faiss's own serialisation of an index holding the
    first row, so a faiss that writes differently fails here, not on a later load."""
    import faiss  # heavy: only when vectors are written

    from ..fileio import atomic_path, release_pages
    from .search import _blocks

    n, d = int(V.shape[0]), int(V.shape[1])
    source = getattr(V, "X", V)  # the run's memory-mapped vectors under a UnitRows view
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(_sq_header(d, n))
        for s, v in _blocks(V):
            half = v.astype("<f2")
            if s == 0:
                one = _sq_index(d)
                one.add(half[:1].astype(np.float32))
                if faiss.serialize_index(one).tobytes() != _sq_header(d, 1) + half[:1].tobytes():
                    raise RuntimeError(f"faiss {faiss.__version__}: the float16 index's codes are not the rows' "
                                       "float16 values; cannot write the duplicate index's vectors")
            f.write(half.tobytes())
            release_pages(source)  # the rows read so far: a memory map's pages are not kept mapped


def _read_vectors(folder: Path, spec, n: int, where) -> tuple[np.ndarray, object]:
    """``(rows, index)`` of a stored ``vectors.faiss``: the faiss index memory-mapped
    (``IO_FLAG_MMAP_IFC``: nothing read until a query touches it) and the same file's codes as
    a read-only (n, d) float16 memory map; checked against ``duplicates.json``."""
    import faiss  # heavy: only when an index with vectors is loaded

    if not isinstance(spec, dict) or spec.get("file") != VECTORS_NAME or spec.get("dtype") != "float16" \
            or spec.get("rows") != n or not isinstance(spec.get("dims"), int) or spec["dims"] < 1:
        raise ModelFormatError(f"{where}: 'vectors' must be {{file: {VECTORS_NAME!r}, rows: {n}, dims, "
                               f"dtype: 'float16'}}, got {spec!r}")
    path, d = folder / VECTORS_NAME, spec["dims"]
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)  # already its own class; owns the map
        size = os.path.getsize(path)
    except (RuntimeError, OSError) as e:
        raise ModelFormatError(f"{path}: cannot read the duplicate index vectors: {e}") from e
    offset = size - n * d * 2
    if not isinstance(index, faiss.IndexScalarQuantizer) or index.sq.qtype != faiss.ScalarQuantizer.QT_fp16 \
            or index.metric_type != faiss.METRIC_INNER_PRODUCT or index.d != d or index.ntotal != n \
            or offset != len(_sq_header(d, n)):
        raise ModelFormatError(f"{path}: not a float16 inner-product index of {n} x {d} vectors")
    rows = np.memmap(path, dtype="<f2", mode="r", offset=offset, shape=(n, d)) if n else np.zeros((0, d), "<f2")
    return rows, index


def _root_for(paths, root) -> Root:
    """The root an index is saved against: ``root`` when every path lies under it, else the
    paths' common folder (format 2 keeps every path relative)."""
    full = [os.path.abspath(p) for p in paths or () if p is not None]
    if root is not None and all(under(p, os.path.abspath(root)) for p in full):
        top = os.path.abspath(root)
    else:
        top = common_folder(full)
    return Root(path=top, recorded=top)


def _resolve_paths(meta: dict, paths, folder: Path, root, where) -> tuple[str | None, list | None]:
    """``(root, absolute paths)`` of a stored index (``locations.find``: the one rule for stored
    item paths)."""
    from ..fileio import path_from_text

    check_given(root)
    if paths is None or all(p is None for p in paths):
        return None, paths
    if meta["format"] == FORMAT:
        for key in ("root", "root_from_index"):
            if not isinstance(meta.get(key), str):
                raise ModelFormatError(f"{where}: {key!r} must be a string when paths are stored")
        rel = [None if p is None else path_from_text(p) for p in paths]
        if any(r is not None and os.path.isabs(r) for r in rel):
            raise ModelFormatError(f"{where}: paths must be relative to 'root'")
        loc = find(meta["root"], meta["root_from_index"], folder, given=root)
    else:  # format 1: absolute paths as they were; their common folder is the root
        rel = paths
        loc = legacy(paths, given=root)
        if loc.path is None:
            loc = Root(path=loc.recorded, recorded=loc.recorded)
    return loc.path, [None if r is None else os.path.normpath(loc.resolve(r)) for r in rel]


def save_to_model(model_dir: str | os.PathLike, index: DuplicateIndex,
                  root: str | os.PathLike | None = None) -> Path:
    """Store ``index`` inside a model folder (``persist.DUPLICATES_DIR``), before it is published;
    ``root``: the run's collection root (see :meth:`DuplicateIndex.save`)."""
    from ..persist import DUPLICATES_DIR

    return index.save(Path(model_dir) / DUPLICATES_DIR, root=root)


def link_to_model(src_model_dir: str | os.PathLike, model_dir: str | os.PathLike) -> Path:
    """Put the duplicate index of the model version ``src_model_dir`` into ``model_dir``, a new
    version of the same model store (the studio's curated versions of a ``--dedup`` run), before
    it is published: its files hard-linked (a published version is never written into again, so
    the two share the bytes; the vectors of a large run are gigabytes), copied where a link
    cannot be made. The stored paths stay valid: they are relative to the collection root, which
    is recorded relative to the index folder, at the same depth in every version."""
    import shutil

    from ..persist import DUPLICATES_DIR

    src, dst = Path(src_model_dir) / DUPLICATES_DIR, Path(model_dir) / DUPLICATES_DIR
    dst.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in src.iterdir() if p.is_file())
    for name in sorted(names, key=lambda x: x == JSON_NAME):  # the JSON, which names the rest, last
        try:
            os.link(src / name, dst / name)
        except OSError:
            shutil.copy2(src / name, dst / name)
    return dst


def read_from_model(model_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> DuplicateIndex | None:
    """The model folder's duplicate index (checked, never unpickled); None when it has none.
    ``root``: where the training collection is now (:meth:`DuplicateIndex.load`)."""
    from ..persist import DUPLICATES_DIR

    d = Path(model_dir) / DUPLICATES_DIR
    return DuplicateIndex.load(d, root=root) if d.is_dir() else None


__all__ = ["DuplicateIndex", "DuplicateMatch", "FORMAT", "save_to_model", "link_to_model", "read_from_model",
           "split_root"]
