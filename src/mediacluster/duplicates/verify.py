"""Checking a candidate pair: is it the same picture, or only a similar one?

Perceptual hashes and embeddings propose candidates; two checks decide:

* ``photometric``: compare two colour thumbnails of the same framing (the whole image, or the
  overlap of two aligned images). The grey levels must correlate (normalised cross-correlation,
  which ignores brightness and contrast changes) and, unless one image is colourless, the
  colours must agree (the chroma patterns in YCbCr, each scaled to the same mean, so a
  brightness change does not count), so a purple heart is not a repost of a
  blue one even though their greyscale hashes are identical.
* ``GeometricVerifier``: for edits that move the picture inside the frame (crops, caption bars,
  screenshot borders), ORB keypoints (OpenCV) are matched, a similarity transform (rotation,
  uniform scale, shift; mirrored images tried too) is fitted with RANSAC, one image is warped
  onto the other and the overlap is checked photometrically. Classic geometric verification
  from near-duplicate image retrieval; distinct photos of the same kind of scene rarely align
  with enough inliers, and when they do (burst shots), the photometric check still sees the
  difference more often than not.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .hashing import THUMB


class PreparedCache:
    """The most recently prepared items of a verifier, by path (thread-safe): ``get(path)``
    returns the cached item or ``prepare(path)``'s (None for a file that cannot be read is
    cached too), dropping the least recently used beyond ``max_items`` items or, with
    ``nbytes``, beyond ``max_bytes`` bytes (always keeping the newest). Shared by the image
    (``GeometricVerifier``) and audio (``fingerprint.AudioVerifier``) checks."""

    def __init__(self, prepare, max_items: int | None = None, max_bytes: int | None = None, nbytes=None):
        self.prepare = prepare
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.nbytes = nbytes or (lambda item: 0)
        self._items: OrderedDict[str, object] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, path: str | os.PathLike, item) -> bool:
        """Keep ``item`` (prepared elsewhere, e.g. from an image already decoded) for ``path``
        if there is room without dropping anything; False (nothing kept) when the cache is full
        or already holds ``path``. Items offered ahead of their use never push out others."""
        path = os.fspath(path)
        size = 0 if item is None else self.nbytes(item)
        with self._lock:
            if path in self._items or (self.max_items is not None and len(self._items) >= self.max_items) or (
                    self.max_bytes is not None and self._held + size > self.max_bytes):
                return False
            self._items[path] = item
            self._held += size
        return True

    def get(self, path: str | os.PathLike):
        path = os.fspath(path)
        with self._lock:
            if path in self._items:
                self._items.move_to_end(path)
                return self._items[path]
        item = self.prepare(path)  # outside the lock: threads prepare different files at once
        with self._lock:
            if path not in self._items:
                self._items[path] = item
                self._held += 0 if item is None else self.nbytes(item)
            while len(self._items) > 1 and (
                    (self.max_items is not None and len(self._items) > self.max_items)
                    or (self.max_bytes is not None and self._held > self.max_bytes)):
                _, old = self._items.popitem(last=False)
                self._held -= 0 if old is None else self.nbytes(old)
        return item


@dataclass(frozen=True)
class PhotometricCheck:
    """Thresholds of the thumbnail comparison (defaults from benchmarks/duplicates.py)."""

    min_ncc: float = 0.97       # grey-level correlation of the two thumbnails
    max_chroma: float = 0.5     # mean difference of the (Cb, Cr) patterns, each scaled to mean 1
    grey_chroma: float = 3.0    # an image whose mean chroma is below this counts as colourless


_Y = np.array([0.299, 0.587, 0.114], np.float32)
_CB = np.array([-0.168736, -0.331264, 0.5], np.float32)
_CR = np.array([0.5, -0.418688, -0.081312], np.float32)


def _weights(mask: np.ndarray | None, shape) -> np.ndarray:
    return np.ones(shape, np.float32) if mask is None else mask.astype(np.float32)


def compare_thumbs(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ncc, chroma difference, min chroma) of RGB thumbnails ``a``, ``b`` of shape (..., s, s, 3).

    ``mask`` (..., s, s) restricts the comparison to valid pixels (the overlap of two aligned
    images). Vectorised over leading axes.
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    w = _weights(mask, a.shape[:-1])
    wsum = np.maximum(w.sum((-1, -2)), 1e-6)
    ya, yb = a @ _Y, b @ _Y
    ma = (ya * w).sum((-1, -2)) / wsum
    mb = (yb * w).sum((-1, -2)) / wsum
    da = (ya - ma[..., None, None]) * w
    db = (yb - mb[..., None, None]) * w
    num = (da * db).sum((-1, -2))
    den = np.sqrt((da * da).sum((-1, -2)) * (db * db).sum((-1, -2)))
    # two flat images (den ~ 0) correlate perfectly only if both are flat
    ncc = np.where(den > 1e-3, num / np.maximum(den, 1e-6), np.where(
        ((da * da).sum((-1, -2)) < 1e-3) & ((db * db).sum((-1, -2)) < 1e-3), 1.0, 0.0))
    ca = np.stack([a @ _CB, a @ _CR], -1)
    cb = np.stack([b @ _CB, b @ _CR], -1)
    sat_a = (np.linalg.norm(ca, axis=-1) * w).sum((-1, -2)) / wsum
    sat_b = (np.linalg.norm(cb, axis=-1) * w).sum((-1, -2)) / wsum
    # Brightness and contrast changes scale the chroma of every pixel by about one factor:
    # compare the chroma patterns each scaled to a mean magnitude of 1 (dimensionless).
    na = ca / np.maximum(sat_a, 1e-3)[..., None, None, None]
    nb = cb / np.maximum(sat_b, 1e-3)[..., None, None, None]
    chroma = (np.linalg.norm(na - nb, axis=-1) * w).sum((-1, -2)) / wsum
    return ncc, chroma, np.minimum(sat_a, sat_b)


def photometric_ok(ncc, chroma, sat, check: PhotometricCheck) -> np.ndarray:
    """Same picture by the thumbnails? (colour compared only when both images have colour)."""
    return (np.asarray(ncc) >= check.min_ncc) & (
        (np.asarray(chroma) <= check.max_chroma) | (np.asarray(sat) < check.grey_chroma))


def thumb_pairs(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536):
    """``compare_thumbs`` for pairs (i, j), also with j mirrored; the better framing wins.

    Returns (ncc, chroma, sat, mirrored) arrays aligned with the pairs.
    """
    n = len(i)
    ncc = np.empty(n, np.float32)
    chroma = np.empty(n, np.float32)
    sat = np.empty(n, np.float32)
    mirrored = np.zeros(n, bool)
    for s in range(0, n, chunk):
        a, b = thumbs[i[s:s + chunk]], thumbs[j[s:s + chunk]]
        n0, c0, s0 = compare_thumbs(a, b)
        n1, c1, s1 = compare_thumbs(a, b[:, :, ::-1])
        use1 = n1 > n0
        ncc[s:s + chunk] = np.where(use1, n1, n0)
        chroma[s:s + chunk] = np.where(use1, c1, c0)
        sat[s:s + chunk] = np.where(use1, s1, s0)
        mirrored[s:s + chunk] = use1
    return ncc, chroma, sat, mirrored


@dataclass(frozen=True)
class GeometricCheck:
    """Settings of the keypoint check (defaults from benchmarks/duplicates.py)."""

    side: int = 256             # images are resized to this longest side for keypoints
    n_features: int = 500       # ORB keypoints per image
    ratio: float = 0.8          # Lowe's ratio test on descriptor matches
    reproj_px: float = 3.0      # RANSAC inlier distance at ``side`` scale
    min_inliers: int = 15       # matches consistent with one similarity transform
    min_overlap: float = 0.25   # overlap / area of the smaller image
    max_scale: float = 8.0      # largest accepted scale change between the two images


class GeometricVerifier:
    """ORB + RANSAC similarity + photometric check on the overlap, with a cache of keypoints.

    ``verify(a, b)`` takes two image paths and returns ``(ok, info)``; ``info`` has the inlier
    count, the scale, the overlap, the photometric figures and whether ``b`` was mirrored. A
    file that cannot be decoded fails the check (the pair stays unlinked). Safe to call from
    several threads (OpenCV releases the GIL; each thread has its own ORB and matcher).

    Per cached image: keypoints and descriptors (~20 KB each, computed on first use: those of
    the image, and of its mirror image once a pair needed them), the grey image at ``side`` px
    (~64 KB) and a small RGB copy (``SMALL`` px longest side, ~12 KB) for the photometric check.
    At most ``cache_size`` images are kept (least recently used dropped).

    ``offer(path, im, draft_size)``: an image someone else already decoded (the duplicate
    finder's signature pass, ``hashing.compute_signatures(on_decoded=)``) is kept for a later
    ``verify`` without decoding the file again, when it was decoded as this verifier decodes
    (``load_image(draft_size=side)``: the same pixels, so the same verdicts) and the cache has room.
    """

    SMALL = 64
    #: raise when the check changes (cached verdicts of the old one are then not read)
    VERSION = 1

    def __init__(self, geometric: GeometricCheck | None = None, photometric: PhotometricCheck | None = None,
                 cache_size: int = 2048):
        import cv2  # lazy: OpenCV is only needed when candidate pairs are verified

        self.cv2 = cv2
        self.geo = geometric or GeometricCheck()
        self.photo = photometric or PhotometricCheck()
        self.cache_size = cache_size
        self._cache = PreparedCache(self._prepare, max_items=cache_size)
        self._local = threading.local()

    def cache_kind(self) -> str:
        """What a cached verdict depends on (``DuplicateFinder.fit(store=)``): the checks'
        settings, this class's ``VERSION`` and OpenCV's version."""
        return f"dups.geometric/v{self.VERSION}/{self.geo}/{self.photo}/small{self.SMALL}/cv2-{self.cv2.__version__}"

    @classmethod
    def is_current_kind(cls, kind: str) -> bool:
        """Whether this code reads cached verdicts of store kind ``kind`` (with some settings):
        False for another ``VERSION``, small side or OpenCV version."""
        import cv2

        return (kind.startswith(f"dups.geometric/v{cls.VERSION}/")
                and kind.endswith(f"/small{cls.SMALL}/cv2-{cv2.__version__}"))

    def _tools(self):
        t = self._local
        if not hasattr(t, "orb"):
            cv2 = self.cv2
            t.orb = cv2.ORB_create(nfeatures=self.geo.n_features, fastThreshold=10, edgeThreshold=15,
                                   patchSize=15)
            t.bf = cv2.BFMatcher(cv2.NORM_HAMMING)
        return t.orb, t.bf

    # -- per image -------------------------------------------------------------------------
    def _prepare(self, path: str) -> dict | None:
        from ..ingest import SkipItem, load_image

        try:
            im = load_image(path, draft_size=self.geo.side)
        except SkipItem:
            return None
        return self._arrays(im)

    def _arrays(self, im) -> dict:
        """The grey (``side`` px) and small RGB copies of a decoded image; keypoints on first use."""
        from PIL import Image

        cv2 = self.cv2
        w, h = im.size
        s = self.geo.side / max(w, h)
        big = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
        t = self.SMALL / max(w, h)
        small = im.resize((max(1, round(w * t)), max(1, round(h * t))), Image.Resampling.BOX)
        grey = cv2.cvtColor(np.asarray(big), cv2.COLOR_RGB2GRAY)
        return {"small": np.ascontiguousarray(np.asarray(small)), "k": self.SMALL / self.geo.side,
                "grey": grey}

    def offer(self, path: str | os.PathLike, im, draft_size: int | None) -> bool:
        """Keep the prepared copies of ``im`` (``path`` decoded by ``load_image(draft_size=)``)
        for a later ``verify``: only when it was decoded as ``_prepare`` decodes and the cache
        has room (nothing is dropped for it). True if kept."""
        if draft_size != self.geo.side or len(self._cache) >= self.cache_size:
            return False
        return self._cache.offer(path, self._arrays(im))

    def _keypoints(self, grey: np.ndarray):
        orb, _ = self._tools()
        kp, de = orb.detectAndCompute(grey, None)
        return np.float32([k.pt for k in kp]).reshape(-1, 2), de

    def _normal(self, item: dict):
        """Keypoints of the image, computed on first use (the same in whichever thread)."""
        if "n" not in item:
            item["n"] = self._keypoints(item["grey"])
        return item["n"]

    def _mirrored(self, item: dict):
        """Keypoints of the mirror image, computed on first use (most pairs never need them)."""
        if "m" not in item:
            item["m"] = self._keypoints(np.ascontiguousarray(item["grey"][:, ::-1]))
        return item["m"]

    def prepared(self, path: str | os.PathLike) -> dict | None:
        return self._cache.get(path)

    # -- per pair --------------------------------------------------------------------------
    def _align(self, A: dict, B: dict, key: str):
        cv2 = self.cv2
        ka, da = self._normal(A)
        kb, db = self._normal(B) if key == "n" else self._mirrored(B)
        if da is None or db is None or len(da) < 8 or len(db) < 8:
            return None
        _, bf = self._tools()
        matches = bf.knnMatch(db, da, k=2)
        good = [m[0] for m in matches if len(m) == 2 and m[0].distance < self.geo.ratio * m[1].distance]
        if len(good) < max(4, self.geo.min_inliers):
            return None
        src = kb[[m.queryIdx for m in good]]
        dst = ka[[m.trainIdx for m in good]]
        M, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                 ransacReprojThreshold=self.geo.reproj_px)
        if M is None:
            return None
        return int(inliers.sum()), M

    def verify(self, a: str | os.PathLike, b: str | os.PathLike) -> tuple[bool, dict]:
        A, B = self.prepared(a), self.prepared(b)
        if A is None or B is None:
            return False, {"reason": "not decodable"}
        best = None
        for key in ("n", "m"):
            r = self._align(A, B, key)
            if r is not None and (best is None or r[0] > best[0]):
                best = (*r, key)
            if best is not None and best[0] >= 4 * self.geo.min_inliers:
                break  # a clear alignment already: no need to try the mirror image
        if best is None or best[0] < self.geo.min_inliers:
            return False, {"inliers": 0 if best is None else best[0]}
        inliers, M, key = best
        scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))
        info = {"inliers": inliers, "scale": round(scale, 3), "mirrored": key == "m"}
        if not (1 / self.geo.max_scale <= scale <= self.geo.max_scale):
            return False, info
        cv2 = self.cv2
        # the transform maps B's keypoint frame (side px) to A's; rescale it to the small copies
        Ms = M.astype(np.float64).copy()
        Ms[:, :2] *= A["k"] / B["k"]
        Ms[:, 2] *= A["k"]
        rb = B["small"] if key == "n" else np.ascontiguousarray(B["small"][:, ::-1])
        ra = A["small"]
        h, w = ra.shape[:2]
        warped = cv2.warpAffine(rb, Ms, (w, h), flags=cv2.INTER_AREA)
        mask = cv2.warpAffine(np.full(rb.shape[:2], 255, np.uint8), Ms, (w, h), flags=cv2.INTER_NEAREST) > 0
        area = int(mask.sum())
        small_b = rb.shape[0] * rb.shape[1] * (A["k"] / B["k"] * scale) ** 2
        overlap = area / max(1.0, min(h * w, small_b))
        info["overlap"] = round(float(overlap), 3)
        if area < 16 or overlap < self.geo.min_overlap:
            return False, info
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        size = (THUMB, THUMB)
        ta = cv2.resize(ra[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
        tb = cv2.resize(warped[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
        tm = cv2.resize(mask[y0:y1, x0:x1].astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99
        if tm.sum() < 16:
            return False, info
        ncc, chroma, sat = (float(x) for x in compare_thumbs(ta, tb, tm))
        info.update(ncc=round(ncc, 4), chroma=round(chroma, 3), sat=round(sat, 2))
        return bool(photometric_ok(ncc, chroma, sat, self.photo)), info


__all__ = ["PhotometricCheck", "GeometricCheck", "GeometricVerifier", "compare_thumbs",
           "photometric_ok", "thumb_pairs"]
