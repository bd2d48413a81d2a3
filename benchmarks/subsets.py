"""The engine's default level on collections unlike the whole shared sets: small, few or many
classes, imbalanced, mixed domains.

The quality benchmark (``quality.py --section engine``) scores the engine on five whole sets,
all balanced, of 2,268-10,000 items. Users' collections are often smaller, skewed (many selfies,
a few memes) or a mix of domains. This draws such collections from the same shared sets,
``--draws`` times each with a different seed, and scores the same rows as ``quality.py`` on
each (its ``run_rows``): UMAP+K-means told k, UMAP+HDBSCAN (mcs 10, not told k, noise
assigned), EVoC default (noise assigned), the engine's auto level, the engine's best level
(oracle). Vectors come through the package (``quality.load_dataset``: extracted archives,
default encoder, the shared embedding cache).

Collections (each a draw of items, seeded):

* ``imagenette-300`` / ``imagenette-1000``: random items of Imagenette val (10 classes)
* ``imagenette-skewed``: class ``i`` (in a random order) keeps ``max(8, n_i / 2^(0.7 i))`` items:
  sizes about 390 / 240 / 135 / 90 / 58 / 34 / 21 / 14 / 8 / 8
* ``sports100-10cls`` / ``sports100-30cls``: every item of 10 / 30 random Sports-100 classes
* ``openmoji-600``, ``mnist-1000``, ``cifar10-2000``: random items
* ``mixed-3domains``: 1,000 Imagenette + 800 OpenMoji + 800 MNIST items, 30 classes

Command: ``python benchmarks/subsets.py --shared ../shared/datasets --draws 3``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (the benchmarks folder is not a package)
import quality  # noqa: E402

ROWS = ["umap-kmeans", "umap-hdbscan10", "evoc", "engine"]
CASES = {
    "imagenette-300": [("imagenette-val", dict(n=300))],
    "imagenette-1000": [("imagenette-val", dict(n=1000))],
    "imagenette-skewed": [("imagenette-val", dict(skewed=True))],
    "sports100-10cls": [("sports100", dict(classes=10))],
    "sports100-30cls": [("sports100", dict(classes=30))],
    "openmoji-600": [("openmoji", dict(n=600))],
    "mnist-1000": [("mnist-test", dict(n=1000))],
    "cifar10-2000": [("cifar10-test", dict(n=2000))],
    "mixed-3domains": [("imagenette-val", dict(n=1000)), ("openmoji", dict(n=800)),
                       ("mnist-test", dict(n=800))],
}


def draw(y: np.ndarray, seed: int, n=None, classes=None, skewed=False) -> np.ndarray:
    """Row indices of one collection drawn from labels ``y``."""
    r = np.random.default_rng(seed)
    cls = r.permutation(np.unique(y))
    if classes:
        cls = cls[:classes]
    idx = []
    for i, c in enumerate(cls):
        m = np.flatnonzero(y == c)
        take = max(8, int(len(m) / 2 ** (0.7 * i))) if skewed else len(m)
        idx.extend(r.choice(m, min(take, len(m)), replace=False))
    idx = np.asarray(idx)
    if n:
        idx = r.choice(idx, min(n, len(idx)), replace=False)
    return np.sort(idx)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--draws", type=int, default=3)
    _results.add_data_args(ap)
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per draw here")
    args = ap.parse_args(argv)
    data = {}
    for case in args.cases:
        for draw_seed in range(args.draws):
            X, y = [], []
            for s, (name, how) in enumerate(CASES[case]):
                if name not in data:
                    V, lab, _ = quality.load_dataset(name, args.out, args.shared, None, progress=False)
                    data[name] = (V, np.asarray(lab))
                V, lab = data[name]
                idx = draw(lab, 1000 * draw_seed + s, **how)
                X.append(V[idx])
                y.extend(f"{name}/{v}" for v in lab[idx])
            X = np.vstack(X)
            t = time.perf_counter()
            print(f"[{case} draw {draw_seed}] n={len(X)} classes={len(set(y))}", file=sys.stderr)
            rows = quality.run_rows(X, y, ROWS, seed=0)
            rec = {"case": case, "draw": draw_seed, "n": len(X), "classes": len(set(y)),
                   "seconds": round(time.perf_counter() - t, 1),
                   "rows": {r["row"]: {"nmi": r["nmi"], "ari": r["ari"], "clusters": r["n_clusters"]}
                            for r in rows}}
            line = json.dumps(rec)
            print(line, flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
