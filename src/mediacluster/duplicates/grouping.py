"""Duplicate links -> groups, with a guard against chaining.

Connected components of the accepted links are the natural groups, but they chain: if A is a
repost of B and B of C, A and C land together however different they are, and at scale one
component can swallow thousands of unrelated images through intermediates (the complaint in
fastdup #302). So a component is accepted as one group only if its **diameter** (the largest
distance between any two of its members, not only linked ones) is at most ``max_diameter``;
otherwise it is split, leader-style:

1. the member with the most links inside what is left of the component leads a new group;
2. its linked members join in order of distance to the leader, each only if it is within
   ``max_diameter`` of every member already in the group (complete linkage);
3. repeat on the members left over until none is left (a member left alone is no duplicate).

Distances are metrics normalised so that 1 is the link threshold of each signal
(``PairDistance``: Hamming bits / radius, and the chordal distance sqrt(1 - cosine) / sqrt(1 -
threshold), not 1 - cosine, which is no metric: two reposts at cosine 0.975 from an original
can be at cosine 0.90 from each other, four times the distance). A repost group is a star
around the original, so two of its members are at most twice the threshold apart (triangle
inequality): ``max_diameter = 2`` keeps every star whole, while a chain that wanders further,
or one that hops between signals (A~B by hash, B~C by embedding, A and C unrelated), is cut. Each group's representative is its
centre: the member whose largest distance to the others is smallest (ties: smallest sum, then
input order), which is the original in a star of reposts.
"""

from __future__ import annotations

import heapq

import numpy as np

from .hashing import hamming

# the kinds of evidence a link can rest on (link_kind_ holds the index into this); "fingerprint":
# audio clips whose vectors were close, confirmed by their log spectrograms (``fingerprint``)
KINDS = ("exact", "perceptual", "geometric", "semantic", "fingerprint")

#: Components up to this size get their full distance matrix (checked in one go); larger ones
#: go straight to the leader split, which needs only leader-to-member distances.
FULL_MATRIX_LIMIT = 3000


class PairDistance:
    """Normalised distance between any two items from the cheap signals.

    ``min`` over the signals present for both items of: 0 for equal content hashes; Hamming
    bits (also against the mirror hash) / ``hash_scale``; sqrt((1 - cosine) / ``cos_scale``).
    Both are metrics (Hamming; the chordal distance between unit vectors), scaled so that 1 is
    the link threshold, so the triangle inequality bounds a star of links by 2. Items with no
    comparable signal are ``inf`` apart.
    """

    def __init__(self, n: int, content: list[str | None] | None = None, hashes: np.ndarray | None = None,
                 mirror: np.ndarray | None = None, hash_ok: np.ndarray | None = None, hash_scale: float = 1.0,
                 vectors: np.ndarray | None = None, cos_scale: float = 1.0):
        self.n = n
        self.content = None
        if content is not None:
            codes: dict[str, int] = {}
            self.content = np.array([-1 - i if c is None else codes.setdefault(c, len(codes))
                                     for i, c in enumerate(content)], np.int64)
        self.hashes = None if hashes is None else np.asarray(hashes, np.uint8)
        self.mirror = None if mirror is None else np.asarray(mirror, np.uint8)
        self.hash_ok = (np.ones(n, bool) if hash_ok is None else np.asarray(hash_ok, bool))
        self.hash_scale = float(hash_scale)
        self.vectors = vectors
        self.cos_scale = float(cos_scale)

    def _bits(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return hamming(a, b)

    def between(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Distances of pairs (i[k], j[k]); broadcasts i against j."""
        i, j = np.broadcast_arrays(np.asarray(i), np.asarray(j))
        d = np.full(i.shape, np.inf)
        if self.content is not None:
            d[self.content[i] == self.content[j]] = 0.0
        if self.hashes is not None:
            bits = self._bits(self.hashes[i], self.hashes[j])
            if self.mirror is not None:
                bits = np.minimum(bits, self._bits(self.mirror[i], self.hashes[j]))
            ok = self.hash_ok[i] & self.hash_ok[j]
            d = np.where(ok, np.minimum(d, bits / self.hash_scale), d)
        if self.vectors is not None:
            cos = np.einsum("...k,...k->...", self.vectors[i], self.vectors[j])
            d = np.minimum(d, self._chord(cos))
        d[i == j] = 0.0
        return d

    def _chord(self, cos: np.ndarray) -> np.ndarray:
        # sqrt(1 - cos) is the chordal distance between unit vectors up to a constant: a metric
        return np.sqrt(np.maximum(1.0 - cos, 0.0) / self.cos_scale)

    def matrix(self, members: np.ndarray) -> np.ndarray:
        """Full distance matrix among ``members`` (memory: a few len(members)^2 arrays)."""
        m = np.asarray(members)
        k = len(m)
        D = np.full((k, k), np.inf)
        if self.content is not None:
            c = self.content[m]
            D[c[:, None] == c[None, :]] = 0.0
        if self.hashes is not None:
            h = self.hashes[m]
            hm = self.mirror[m] if self.mirror is not None else None
            ok = self.hash_ok[m]
            step = max(1, 4_000_000 // max(1, k * h.shape[1]))
            for s in range(0, k, step):
                bits = self._bits(h[s:s + step, None, :], h[None, :, :])
                if hm is not None:
                    bits = np.minimum(bits, self._bits(hm[s:s + step, None, :], h[None, :, :]))
                valid = ok[s:s + step, None] & ok[None, :]
                D[s:s + step] = np.where(valid, np.minimum(D[s:s + step], bits / self.hash_scale), D[s:s + step])
        if self.vectors is not None:
            V = np.asarray(self.vectors[m], np.float32)
            D = np.minimum(D, self._chord(V @ V.T))
        np.fill_diagonal(D, 0.0)
        return np.minimum(D, D.T)  # the mirror comparison is not exactly symmetric


def _centre(D: np.ndarray) -> int:
    """Index (into D) of the member with the smallest max distance, then smallest sum."""
    worst = D.max(1)
    total = D.sum(1)
    return int(np.lexsort((np.arange(len(D)), total, worst))[0])


def _split(members: np.ndarray, nbrs: dict[int, list[int]], dist: PairDistance, max_diameter: float,
           D: np.ndarray | None) -> list[list[int]]:
    """Leader split of one component; returns groups (lists of item indices, size >= 2)."""
    pos = {int(m): k for k, m in enumerate(members)}

    def d(a: int, b: list[int]) -> np.ndarray:
        if D is not None:
            return D[pos[a], [pos[x] for x in b]]
        return dist.between(np.full(len(b), a), np.asarray(b))

    left = set(pos)
    deg = {m: len(nbrs.get(m, ())) for m in left}
    heap = [(-deg[m], m) for m in left]
    heapq.heapify(heap)
    groups = []
    while heap:
        negdeg, leader = heapq.heappop(heap)
        if leader not in left or -negdeg != deg[leader]:
            continue  # stale entry
        cands = [x for x in nbrs.get(leader, ()) if x in left]
        group = [leader]
        if cands:
            order = np.argsort(d(leader, cands), kind="stable")
            for k in order:
                x = cands[k]
                if np.all(d(x, group) <= max_diameter):
                    group.append(x)
        for x in group:
            left.discard(x)
        for x in group:  # members left over lose the links to the new group
            for y in nbrs.get(x, ()):
                if y in left:
                    deg[y] -= 1
                    heapq.heappush(heap, (-deg[y], y))
        if len(group) >= 2:
            groups.append(group)
    return groups


def group_links(n: int, i: np.ndarray, j: np.ndarray, dist: PairDistance, max_diameter: float = 2.0):
    """Groups from accepted links (i, j).

    Returns ``(labels, representative, diameter)``: ``labels`` (n,) group id per item (-1: no
    duplicate), numbered by the first member in input order; ``representative`` (n,) the
    group's centre for members (-1 otherwise); ``diameter`` (n_groups,) normalised diameter.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = np.full(n, -1, np.int64)
    rep = np.full(n, -1, np.int64)
    if len(i) == 0:
        return labels, rep, np.zeros(0)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp)
    in_big = sizes[comp] >= 2
    order = np.argsort(comp[in_big], kind="stable")
    idx = np.flatnonzero(in_big)[order]
    bounds = np.flatnonzero(np.diff(comp[idx])) + 1
    found: list[tuple[list[int], int, float]] = []
    nbrs_all: dict[int, list[int]] | None = None
    for members in np.split(idx, bounds):
        D = dist.matrix(members) if len(members) <= FULL_MATRIX_LIMIT else None
        if D is not None and D.max() <= max_diameter:
            c = _centre(D)
            found.append((members.tolist(), int(members[c]), float(D.max())))
            continue
        if nbrs_all is None:
            nbrs_all = {}
            for a, b in zip(i.tolist(), j.tolist()):
                nbrs_all.setdefault(a, []).append(b)
                nbrs_all.setdefault(b, []).append(a)
        for g in _split(members, nbrs_all, dist, max_diameter, D):
            g = sorted(g)
            Dg = dist.matrix(np.asarray(g))
            found.append((g, g[_centre(Dg)], float(Dg.max())))
    found.sort(key=lambda t: t[0][0])
    diam = np.zeros(len(found))
    for gid, (members, centre, dm) in enumerate(found):
        labels[members] = gid
        rep[members] = centre
        diam[gid] = dm
    return labels, rep, diam


__all__ = ["PairDistance", "group_links", "FULL_MATRIX_LIMIT"]
