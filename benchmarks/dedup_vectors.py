"""Near-duplicates among vectors the package did not make (dupvec helper; benchmarks/RESULTS.md,
"Duplicates on vectors from another encoder").

The vectors-only rule of ``DuplicateFinder`` (no files to check: ``cluster vectors.npy --dedup``)
run with ``semantic_only_relative`` None (the absolute cosine 0.97 alone, the rule before), 0.1,
0.2 (the default) and 0.3 on:

(a) the default encoder's vectors of a shared set (``/work/vec/SET.npz``) plus 100 planted
    copies at cosine 0.99 to a random row;
(b) the same rows through a random rotation plus an offset along a random direction, scaled so
    that the median cosine of random pairs reaches 0.75 (CLIP-like) or 0.9 (a text-embedding
    model): "another encoder" with a non-zero mean. ``extra``: pairs inside the groups that are
    neither planted nor grouped in (a) by the rule before;
(c) well-separated Gaussian clusters (``sklearn.datasets.make_blobs``; the bug hunt's 90 x 16-d
    case and larger ones) with 50 planted copies at cosine 0.999.

Usage: ``python benchmarks/dedup_vectors.py [SET ...]`` (no SET: the blobs (c)).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sklearn.datasets import make_blobs

from mediacluster.duplicates.collection import find_in_rows

RELATIVE = (None, 0.1, 0.2, 0.3)


def plant(X: np.ndarray, n: int, cos: float, rng) -> tuple[np.ndarray, set]:
    """X with ``n`` copies of random rows appended at cosine ``cos``; the (source, copy) pairs."""
    src = rng.choice(len(X), n, replace=False)
    Y = X[src].astype(np.float64)
    norms = np.linalg.norm(Y, axis=1, keepdims=True)
    e = rng.standard_normal(Y.shape)
    e -= (e * Y).sum(1, keepdims=True) / norms ** 2 * Y
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    t = np.arccos(cos)
    Y = np.cos(t) * Y + np.sin(t) * norms * e
    return np.vstack([X, Y.astype(np.float32)]), {(int(s), len(X) + k) for k, s in enumerate(src)}


def transform(X: np.ndarray, target: float, rng) -> tuple[np.ndarray, float]:
    """A random rotation of X plus the smallest offset (in units of the mean row norm, steps of
    0.05) that puts the median cosine of 3,000 random pairs at ``target`` or above."""
    d = X.shape[1]
    R, _ = np.linalg.qr(rng.standard_normal((d, d)))
    Y = X @ R.astype(np.float32)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    scale = np.linalg.norm(X, axis=1).mean()
    r = rng.integers(0, len(X), (3000, 2))
    for a in np.linspace(0, 10, 201):
        Z = Y + (a * scale * u).astype(np.float32)
        Zu = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        if np.median((Zu[r[:, 0]] * Zu[r[:, 1]]).sum(1)) >= target:
            break
    return Z, float(a)


def pairs_of(finder) -> set:
    out = set()
    for g in finder.groups():
        m = sorted(g["members"])
        out |= {(a, b) for x, a in enumerate(m) for b in m[x + 1:]}
    return out


def run(tag: str, X: np.ndarray, truth: set, ref: set | None = None) -> dict:
    row, res = [tag, f"n={len(X)}"], {}
    for rel in RELATIVE:
        t = time.perf_counter()
        f = find_in_rows(X, [str(k) for k in range(len(X))], media="vector",
                         params={"semantic_only_relative": rel}, progress=False)
        p = pairs_of(f)
        res[rel] = p
        s = f"rel={rel}: groups {f.n_groups_} items {int((f.labels_ >= 0).sum())} planted {len(p & truth)}/{len(truth)}"
        if ref is not None:
            s += f" extra {len(p - ref - truth)}"
        if rel == 0.2:
            s += (f" cutoff {f.semantic_only_cutoff_:.4f} nd {f.neighbour_distance_:.4f}"
                  f" ({time.perf_counter() - t:.1f}s)")
        row.append(s)
    print(" | ".join(row), flush=True)
    return res


def main(sets: list[str]) -> None:
    rng = np.random.default_rng(0)
    for s in sets:
        X = np.load(f"/work/vec/{s}.npz")["vectors"]
        Xp, truth = plant(X, 100, 0.99, rng)
        before = run(f"(a) {s}+100@.99", Xp, truth)[None]
        for target in (0.75, 0.9):
            Z, a = transform(Xp, target, rng)
            run(f"(b) {s} rot+offset(a={a:.2f}) random-pair cos {target}", Z, truth, before)
    if not sets:
        X, _ = make_blobs(90, n_features=16, centers=3, random_state=0)
        run("(c) blobs 90x16 (bughunt6)", X.astype(np.float32), set())
        for d, n, cs in ((16, 90, 3), (64, 3000, 30), (384, 3000, 30)):
            X, _ = make_blobs(n, n_features=d, centers=cs, random_state=1)
            Xp, truth = plant(X.astype(np.float32), 50, 0.999, rng)
            run(f"(c) blobs {n}x{d} {cs} centres +50@.999", Xp, truth)


if __name__ == "__main__":
    main(sys.argv[1:])
