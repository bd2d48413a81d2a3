"""Candidate pairs at scale: Hamming-radius search on binary hashes, cosine kNN on vectors (faiss).

* ``hamming_pairs``: every pair within ``radius`` bits, also comparing each hash with the other
  images' mirror hashes (flipped reposts). Below ``FLAT_LIMIT`` items a brute-force
  ``IndexBinaryFlat`` is exact and fastest; above it, multi-index hashing
  (``IndexBinaryMultiHash``: the 64 bits cut into 4 tables of 16 bits, ``nflip`` bits flipped per
  probe) is exact as long as ``radius < 4 * (nflip + 1)`` by the pigeonhole principle, and
  needs only the buckets near each hash instead of all n of them (measured in
  benchmarks/duplicates.py).
* ``cosine_pairs``: each vector's ``k`` nearest neighbours by inner product (vectors are
  L2-normalised first), kept when the cosine is at least ``threshold``. Exact
  (``IndexFlatIP``) below ``EXACT_LIMIT`` vectors; above it a PCA to ``IVF_DIMS`` dimensions and
  an inverted file (``IndexIVFFlat``) rank the neighbours, and the kept pairs' cosines are
  recomputed exactly from the vectors. The vectors are read ``BLOCK`` rows at a time and
  normalised as they are read (``UnitRows``): an input memory-mapped from a ``.npy`` file is
  searched without being loaded, one in memory without a normalised copy.

Pairs are returned once, as ``i < j``, with their distance (bits) or cosine.
"""

from __future__ import annotations

import math

import numpy as np

#: Largest collection searched brute force (binary hashes).
FLAT_LIMIT = 200_000
#: Largest collection searched exactly (float vectors).
EXACT_LIMIT = 20_000
#: Above it: PCA to this many dimensions, then an inverted file probed in this many lists.
IVF_DIMS = 128
IVF_NPROBE = 16


def _dedupe(i: np.ndarray, j: np.ndarray, d: np.ndarray, keep_min: bool = True):
    """Order pairs as i < j, drop self pairs, keep one row per pair (min or max of ``d``)."""
    a, b = np.minimum(i, j), np.maximum(i, j)
    keep = a != b
    a, b, d = a[keep], b[keep], d[keep]
    if not len(a):
        return a.astype(np.int64), b.astype(np.int64), d
    order = np.lexsort((d if keep_min else -d, b, a))
    a, b, d = a[order], b[order], d[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first].astype(np.int64), b[first].astype(np.int64), d[first]


def _binary_index(codes: np.ndarray, radius: int, method: str):
    import faiss  # lazy: only needed when searching

    nbits = codes.shape[1] * 8
    if method == "auto":
        method = "flat" if len(codes) <= FLAT_LIMIT else "multihash"
    if method == "flat":
        index = faiss.IndexBinaryFlat(nbits)
    elif method == "multihash":
        nhash = 4
        b = nbits // nhash
        index = faiss.IndexBinaryMultiHash(nbits, nhash, b)
        index.nflip = max(0, math.ceil((radius + 1) / nhash) - 1)
    else:
        raise ValueError(f"unknown binary search method {method!r}; choose auto, flat or multihash")
    index.add(codes)
    return index


def hamming_pairs(
    codes: np.ndarray,
    radius: int,
    mirror: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    method: str = "auto",
    batch: int = 65536,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of packed hashes within ``radius`` bits; returns (i, j, bits).

    ``mirror`` (same shape as ``codes``): hashes of the mirrored images; a pair also matches
    when one image's mirror hash is within ``radius`` of the other's hash, and the smaller
    distance is reported. ``valid``: rows to search (others, e.g. undecodable files, never pair).
    """
    from ..progress import progress_bar

    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n = len(codes)
    rows = np.arange(n) if valid is None else np.flatnonzero(valid)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32))
    if len(rows) < 2:
        return empty
    db = codes[rows]
    index = _binary_index(db, radius, method)
    queries = [db] if mirror is None else [db, np.ascontiguousarray(mirror, dtype=np.uint8)[rows]]
    out_i, out_j, out_d = [], [], []
    total = len(rows) * len(queries)
    with progress_bar(total=total, desc="hash neighbours", unit="hash", disable=not progress) as bar:
        for q in queries:
            for s in range(0, len(q), batch):
                lims, D, nb = index.range_search(q[s:s + batch], radius + 1)
                counts = np.diff(lims).astype(np.int64)
                out_i.append(np.repeat(np.arange(s, s + len(counts)), counts))
                out_j.append(nb.astype(np.int64))
                out_d.append(D.astype(np.int32))
                bar.update(len(counts))
    i, j, d = _dedupe(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d))
    return rows[i], rows[j], d


#: Rows per block when vectors are read, normalised or searched block by block.
BLOCK = 16384  # 84 MB of 1280-d float32 rows
#: Rows the PCA before the inverted file is fitted on (25 per dimension at 1280-d: it only
#: ranks neighbours, whose cosines are then computed in full).
PCA_SAMPLE = 32768


class UnitRows:
    """The rows of an (n, d) array scaled to unit L2 norm, read block by block: the array (in
    memory, or a ``.npy`` opened with ``np.load(mmap_mode="r")``) is never copied whole. Indexing
    (``rows[i]``, ``rows[a:b]``, an index array of any shape) returns float32 unit rows (all-zero
    rows stay zero), as the normalised array would. Norms are computed once, a block at a time."""

    def __init__(self, X, block: int | None = None):
        if getattr(X, "ndim", None) != 2:
            raise ValueError(f"vectors must be 2-D (items x dims), got shape {getattr(X, 'shape', None)}")
        self.X = X
        self.block = int(block or BLOCK)
        n = len(X)
        norms = np.empty(n, np.float32)
        for s in range(0, n, self.block):
            norms[s:s + self.block] = np.linalg.norm(np.asarray(X[s:s + self.block], np.float32), axis=1)
        self.inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.unit = bool(np.all(np.abs(norms - 1.0) < 1e-4))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.X.shape)

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, tuple):
            raise TypeError("UnitRows takes a row index, a slice or an index array")
        if isinstance(idx, slice) or np.ndim(idx) == 0:
            rows = np.asarray(self.X[idx], np.float32)
            inv = self.inv[idx]
        else:
            idx = np.asarray(idx)
            flat = idx.ravel()
            if flat.dtype == bool:
                flat = np.flatnonzero(flat)
                idx = flat
            if len(flat) and np.all(flat[1:] > flat[:-1]):  # already sorted and unique
                rows = np.array(self.X[flat], dtype=np.float32)
                rows *= self.inv[flat][:, None]
                return rows.reshape(*idx.shape, self.X.shape[1])
            # sorted, unique rows: one pass over a memory-mapped file, each row read once
            uniq, back = np.unique(flat, return_inverse=True)
            rows = np.array(self.X[uniq], dtype=np.float32)  # a copy of its own: scaled in place
            rows *= self.inv[uniq][:, None]
            return rows[back].reshape(*idx.shape, self.X.shape[1])
        return rows * np.asarray(inv, np.float32)[..., None]

    def to_array(self, dtype=np.float32) -> np.ndarray:
        """The whole normalised array in ``dtype``, filled block by block (no float32 copy on the
        way). A whole n x d array: the package's own paths read blocks instead (the
        ``DuplicateIndex`` writes its float16 file block by block)."""
        out = np.empty(self.shape, dtype)
        for s, v in _blocks(self, block=self.block):
            out[s:s + len(v)] = v
        return out


def normalise(X) -> np.ndarray | UnitRows:
    """Rows scaled to unit L2 norm: ``X`` itself when it is a C-contiguous float32 array already
    of unit rows (a million 1280-d vectors are 5 GB: no copy), else a :class:`UnitRows` view
    that normalises the rows it is asked for (a memory-mapped ``X`` stays on disk)."""
    if isinstance(X, UnitRows):
        return X
    if not hasattr(X, "ndim"):
        X = np.asarray(X, dtype=np.float32)
    view = UnitRows(X)
    if view.unit and isinstance(X, np.ndarray) and not isinstance(X, np.memmap) and X.dtype == np.float32 \
            and X.flags.c_contiguous:
        return X
    return view


def _vector_index(X, rows: np.ndarray, every: np.ndarray | None, method: str, seed: int):
    """(index, exact) over ``X[rows]`` (unit rows, read a block at a time; ``every``: ``rows``, or
    None when they are all the rows): exact inner product,
    or PCA to ``IVF_DIMS`` + an inverted file.

    At a million 1280-d vectors an inverted file in the full space is slow twice over (every
    query against thousands of centroids, then thousands of 1280-d vectors); after a PCA to
    128 dimensions both cost ~10x less, and the index holds 0.5 GB instead of 5 GB. Scores from
    the reduced index only rank the neighbours; their cosines are recomputed in full. The PCA is
    fitted on at most ``PCA_SAMPLE`` sampled rows and the inverted file's centroids on the sample's
    reduced rows, so no full-width copy of the sample (1.3 GB at a million rows) is made.
    """
    import faiss  # lazy: only needed when searching

    n, d = len(rows), X.shape[1]
    if method == "auto":
        method = "flat" if n <= EXACT_LIMIT else "ivf"
    if method == "flat":
        index = faiss.IndexFlatIP(d)
        for _, v in _blocks(X, every):
            index.add(v)
        return index, True
    if method != "ivf":
        raise ValueError(f"unknown vector search method {method!r}; choose auto, flat or ivf")
    nlist = int(min(65536, max(16, 4 * math.sqrt(n))))
    rng = np.random.default_rng(seed)
    sample = rows[np.sort(rng.choice(n, size=min(n, max(64 * nlist, 50_000)), replace=False))]
    dims = min(d, IVF_DIMS)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    if dims < d:
        pca = faiss.PCAMatrix(d, dims)
        pca.train(_take(X, np.sort(rng.choice(sample, size=min(len(sample), PCA_SAMPLE), replace=False))))
        reduced = np.concatenate([pca.apply(v) for _, v in _blocks(X, sample)])
        ivf.train(reduced)
        del reduced
        index = faiss.IndexPreTransform(pca, ivf)
    else:
        ivf.train(_take(X, sample))
        index = ivf
    for _, v in _blocks(X, every):
        index.add(v)
    ivf.nprobe = IVF_NPROBE
    return index, False


def _cosines(X, rows: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Exact cosines of query rows ``q[a]`` with ``X[rows[b]]``, ``chunk`` pairs at a time (the
    rows read for a batch's 45,000 pairs at 1280-d would be 230 MB at once)."""
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), chunk):
        out[s:s + chunk] = np.einsum("ij,ij->i", q[a[s:s + chunk]], _take(X, rows[b[s:s + chunk]]))
    return out


def _take(X, rows: np.ndarray) -> np.ndarray:
    """Unit float32 rows ``X[rows]`` (``X`` a unit array or a :class:`UnitRows`)."""
    return np.ascontiguousarray(X[rows], dtype=np.float32)


def _blocks(X, rows: np.ndarray | None = None, block: int | None = None):
    """``(start, unit rows)`` of ``X[rows]`` (default: every row), ``block`` (default ``BLOCK``)
    rows at a time."""
    block = int(block or BLOCK)
    n = len(X) if rows is None else len(rows)
    for s in range(0, n, block):
        yield s, _take(X, slice(s, s + block) if rows is None else rows[s:s + block])


def cosine_pairs(
    X: np.ndarray,
    threshold: float,
    k: int = 10,
    valid: np.ndarray | None = None,
    method: str = "auto",
    batch: int = 4096,
    seed: int = 0,
    progress: bool = False,
    kth: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) among each row's ``k`` nearest neighbours with cosine >= ``threshold``.

    Returns (i, j, cosine). ``X`` is normalised here; cosines of the returned pairs are exact
    whatever the index. ``valid``: rows to search. ``kth``: a float array, one per row of
    ``X``, given the exact cosine of each searched row to the last of its ``k + 1`` nearest (its
    ``k``-th nearest other row; the row itself is one of them), NaN where the search found fewer,
    at no extra search (``finder.neighbour_distance``).
    """
    from ..progress import progress_bar

    X = normalise(X)  # unit rows: the array itself, or a view normalising the rows it reads
    n = len(X)
    rows = np.arange(n) if valid is None else np.flatnonzero(valid)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(rows) < 2:
        return empty
    every = None if valid is None else rows  # every row: read by slices (a memory map's own pages)
    index, exact = _vector_index(X, rows, every, method, seed)
    kk = min(k + 1, len(rows))
    out_i, out_j, out_c = [], [], []
    with progress_bar(total=len(rows), desc="vector neighbours", unit="vec", disable=not progress) as bar:
        for s, q in _blocks(X, every, batch):
            D, nb = index.search(q, kk)
            if kth is not None:
                last = nb[:, -1].astype(np.int64)
                found = last >= 0
                kc = np.full(len(nb), np.nan)
                kc[found] = D[found, -1] if exact else _cosines(X, rows, q, np.flatnonzero(found), last[found])
                kth[rows[s:s + len(nb)]] = kc
            # scores of the reduced index only rank; exact cosines are computed below
            keep = (nb >= 0) & ((D >= threshold) if exact else True)
            qi = np.broadcast_to(np.arange(s, s + len(nb))[:, None], nb.shape)[keep]
            qj = nb[keep].astype(np.int64)
            c = D[keep] if exact else _cosines(X, rows, q, qi - s, qj)
            ok = (c >= threshold) & (qi != qj)
            out_i.append(qi[ok])
            out_j.append(qj[ok])
            out_c.append(c[ok].astype(np.float32))
            bar.update(len(nb))
    i, j, c = _dedupe(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_c), keep_min=False)
    return rows[i], rows[j], c


__all__ = ["hamming_pairs", "cosine_pairs", "normalise", "UnitRows", "FLAT_LIMIT", "EXACT_LIMIT"]
