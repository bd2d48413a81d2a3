"""``DuplicateIndex``: is a new item a near-duplicate of one already seen?

Built from a fitted ``DuplicateFinder`` (``finder.index()``), it keeps per item only plain
arrays: content hash, perceptual hash and mirror hash, colour thumbnail, duplicate group and,
optionally, the embedding (float16). ``query(path=..., vector=...)`` applies the finder's rule
to one new item against all stored items:

exact (same bytes) > perceptual (hash within the radius, thumbnails agree) > geometric
(cosine >= ``semantic_threshold`` and keypoint alignment with the stored file, when that file
is still readable) > semantic (cosine >= ``semantic_only_threshold``).

``save(folder)`` writes ``duplicates.json`` (parameters, ids, paths) and ``duplicates.npz``
(arrays, no pickle); ``DuplicateIndex.load(folder)`` reads them back.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelFormatError
from ..fileio import path_to_text
from ..locations import Root, check_given, common_folder, find, legacy, split_root, under
from .grouping import KINDS
from .hashing import THUMB, hamming

FORMAT = "mediacluster.duplicates/2"  # 2: paths relative to a recorded collection root
READ_FORMATS = ("mediacluster.duplicates/1", FORMAT)  # 1: absolute paths
JSON_NAME = "duplicates.json"
NPZ_NAME = "duplicates.npz"

#: Finder parameters the index needs to apply the same rule.
_PARAMS = ("hash", "hash_size", "hash_radius", "photometric", "min_ncc", "max_chroma", "grey_chroma",
           "semantic_threshold", "semantic_only_threshold", "n_neighbors", "verify", "min_inliers")


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
        return f"near-duplicate of {self.id} ({self.kind}, distance {self.distance:g}{unit})"

    def to_dict(self) -> dict:
        return {"index": self.index, "id": self.id, "group": self.group, "kind": self.kind,
                "distance": self.distance, "representative": self.representative}


class DuplicateIndex:
    """Stored signatures of fitted items; answers "near-duplicate of item X (distance d)"."""

    def __init__(self, params: dict, ids: list[str], paths: list[str] | None, labels: np.ndarray,
                 content: list[str | None] | None, hashes: np.ndarray | None, mirror: np.ndarray | None,
                 thumbs: np.ndarray | None, hash_ok: np.ndarray | None, vectors: np.ndarray | None,
                 representative: np.ndarray | None = None):
        self.params = dict(params)
        self.ids = list(ids)
        self.paths = None if paths is None else list(paths)
        self.labels = np.asarray(labels, np.int64)
        self.content = content
        self.hashes = hashes
        self.mirror = mirror
        self.thumbs = thumbs
        self.hash_ok = hash_ok
        self.vectors = vectors
        self.representative = None if representative is None else np.asarray(representative, np.int64)
        self.root: str | None = None  # the collection root the paths were resolved against (load)
        self._by_content = {} if content is None else {c: k for k, c in reversed(list(enumerate(content)))
                                                       if c is not None}
        self._verifier = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_finder(cls, finder, vectors: bool = True) -> DuplicateIndex:
        sig = finder.signatures_
        return cls(
            params={p: getattr(finder, p) for p in _PARAMS},
            ids=finder.ids_, paths=finder.paths_, labels=finder.labels_, content=finder.content_hashes_,
            hashes=None if sig is None else sig.hashes, mirror=None if sig is None else sig.mirror,
            thumbs=None if sig is None else sig.thumbs, hash_ok=None if sig is None else sig.usable(),
            vectors=None if (finder.vectors_ is None or not vectors) else _half(finder.vectors_),
            representative=finder.representative_,
        )

    # -- query -----------------------------------------------------------------------------
    def query(self, path: str | os.PathLike | None = None, vector: np.ndarray | None = None,
              exclude: int | None = None) -> DuplicateMatch | None:
        """The best match of one new item (an image file and/or its embedding), or None.

        A file that cannot be decoded is checked for exact copies only. ``exclude``: a stored
        row to ignore (e.g. the item itself when checking a stored item).
        """
        from ..fileio import hash_file
        from ..ingest import SkipItem, load_image
        from .hashing import hash_image, thumbnail

        p = self.params
        found: list[tuple[int, float, int]] = []  # (kind, distance, row)
        h = m = th = None
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
            found += self._semantic(np.asarray(vector, np.float32).ravel(), path, exclude)
        if not found:
            return None
        kind, dist, row = min(found)
        r = int(self.representative[row]) if self.representative is not None else -1
        return DuplicateMatch(index=row, id=self.ids[row], group=int(self.labels[row]), kind=KINDS[kind],
                              distance=dist, representative=self.ids[r] if r >= 0 else None)

    def query_bytes(self, data: bytes, vector: np.ndarray | None = None, suffix: str = "") -> DuplicateMatch | None:
        """:meth:`query` for an upload held in memory (the service): the bytes go to a temporary
        file for the duration of the check (the geometric check reads files)."""
        import tempfile

        suffix = suffix if suffix.startswith(".") and len(suffix) <= 10 and suffix[1:].isalnum() else ""
        with tempfile.TemporaryDirectory(prefix="mc-dup-") as d:
            p = Path(d) / f"upload{suffix}"
            p.write_bytes(data)
            return self.query(path=p, vector=vector)

    def query_many(self, paths=None, vectors: np.ndarray | None = None) -> list[DuplicateMatch | None]:
        """:meth:`query` for each of several new items (``paths`` and/or ``vectors`` rows; a
        None path checks that item by its vector alone)."""
        n = len(paths) if paths is not None else len(vectors) if vectors is not None else 0
        if paths is not None and vectors is not None and len(vectors) != n:
            raise InputError(f"{n} paths but {len(vectors)} vectors")
        return [self.query(path=None if paths is None else paths[k],
                           vector=None if vectors is None else vectors[k]) for k in range(n)]

    def _semantic(self, v: np.ndarray, path, exclude) -> list[tuple[int, float, int]]:
        p = self.params
        if v.shape[0] != self.vectors.shape[1]:
            raise InputError(f"vector has {v.shape[0]} dims, the index holds {self.vectors.shape[1]}-d vectors")
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0:
            return []
        v = (v / norm).astype(np.float32)
        k = min(int(p["n_neighbors"]) + (exclude is not None), len(self.vectors))
        sims, rows = self._vector_index().search(v[None, :], k)
        keep = (rows[0] >= 0) & (rows[0] != (-1 if exclude is None else exclude))
        sims, top = sims[0][keep][: int(p["n_neighbors"])], rows[0][keep][: int(p["n_neighbors"])]
        # a cosine distance: float16 vectors and float32 sums can put a copy's similarity a hair above 1
        out = []
        can_verify = p["verify"] and path is not None and self.paths is not None
        for r, c in zip(top.tolist(), sims.tolist()):
            if can_verify and c >= p["semantic_threshold"] and os.path.exists(self.paths[r]):
                if self._verify(path, self.paths[r]):
                    out.append((2, max(0.0, 1.0 - c), int(r)))
                    continue
            if p["semantic_only_threshold"] is not None and c >= p["semantic_only_threshold"] and not (
                    can_verify and os.path.exists(self.paths[r])):
                out.append((3, max(0.0, 1.0 - c), int(r)))
        return out

    def _vector_index(self):
        """A faiss inner-product index over the stored vectors, kept as float16
        (``IndexScalarQuantizer`` QT_fp16: the stored precision, half the memory of float32,
        SIMD search). Built on the first query: 50,000 x 1280 vectors took 238 ms per query
        through numpy (float16 rows converted every time)."""
        if getattr(self, "_faiss", None) is None:
            import faiss  # heavy: only when a query needs the vectors

            d = self.vectors.shape[1]
            index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            for s in range(0, len(self.vectors), 65536):
                index.add(np.ascontiguousarray(self.vectors[s:s + 65536], dtype=np.float32))
            self._faiss = index
        return self._faiss

    def _verify(self, a, b) -> bool:
        from .verify import GeometricCheck, GeometricVerifier, PhotometricCheck

        p = self.params
        if self._verifier is None:
            self._verifier = GeometricVerifier(GeometricCheck(min_inliers=p["min_inliers"]),
                                               PhotometricCheck(p["min_ncc"], p["max_chroma"], p["grey_chroma"]),
                                               cache_size=256)
        return self._verifier.verify(a, b)[0]

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
        """Write ``duplicates.json`` and ``duplicates.npz`` into ``folder`` (atomically each).
        ``root``: the collection root (the run's; default, or when a path lies outside it: the
        paths' common folder), which the paths are stored relative to."""
        from ..fileio import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"labels": self.labels}
        for name in ("hashes", "mirror", "thumbs", "hash_ok", "vectors", "representative"):
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
            "arrays": sorted(arrays)})
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
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise ModelFormatError(f"{jp}: ids must be a list of strings")
        if paths is not None and (not isinstance(paths, list) or len(paths) != len(ids)
                                  or not all(p is None or isinstance(p, str) for p in paths)):
            raise ModelFormatError(f"{jp}: paths must be null or one string (or null) per id ({len(ids)})")
        found_root, paths = _resolve_paths(meta, paths, folder, root, jp)
        try:
            with np.load(zp, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:  # ValueError: object arrays need pickle
            raise ModelFormatError(f"{zp}: cannot read the duplicate index arrays: {e}") from e
        n = len(ids)
        expect = {"labels": "iu", "representative": "iu", "hashes": "u", "mirror": "u", "thumbs": "u", "hash_ok": "b",
                  "vectors": "f", "content": "S"}
        for k, a in arrays.items():
            if k not in expect or a.dtype.kind not in expect[k]:
                raise ModelFormatError(f"{zp}: unexpected array {k!r} ({a.dtype})")
            if len(a) != n:
                raise ModelFormatError(f"{zp}: array {k!r} has {len(a)} rows, the index {n} items")
        if "labels" not in arrays:
            raise ModelFormatError(f"{zp}: no 'labels' array")
        content = None
        if "content" in arrays:
            content = [c.decode() or None for c in arrays["content"]]
        index = cls(params=meta["params"], ids=meta["ids"], paths=paths, labels=arrays["labels"],
                    content=content, hashes=arrays.get("hashes"), mirror=arrays.get("mirror"),
                    thumbs=arrays.get("thumbs"), hash_ok=arrays.get("hash_ok"), vectors=arrays.get("vectors"),
                    representative=arrays.get("representative"))
        index.root = found_root
        return index


def _half(V) -> np.ndarray:
    """The finder's unit vectors as float16, without a float32 copy of them all (``UnitRows``)."""
    from .search import UnitRows

    return V.to_array(np.float16) if isinstance(V, UnitRows) else np.asarray(V).astype(np.float16)


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


def read_from_model(model_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> DuplicateIndex | None:
    """The model folder's duplicate index (checked, never unpickled); None when it has none.
    ``root``: where the training collection is now (:meth:`DuplicateIndex.load`)."""
    from ..persist import DUPLICATES_DIR

    d = Path(model_dir) / DUPLICATES_DIR
    return DuplicateIndex.load(d, root=root) if d.is_dir() else None


__all__ = ["DuplicateIndex", "DuplicateMatch", "FORMAT", "save_to_model", "read_from_model", "split_root"]
