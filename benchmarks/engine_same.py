"""Does a change to the engine's code keep its results? Fit, store, fit again, compare.

A speed change to ``stages.hierarchy.reduce_and_cluster`` (or anything under it) must leave
every output identical, seed fixed: ``levels_`` (every level, every item), ``parents_``,
``auto_level_``, ``modularity_level_``, ``groups_level_``, ``level_scores_``,
``agreement_scores_``, ``level_probabilities_`` and the embedding. ``save`` fits the engine on
each collection and writes those arrays to ``DIR/<collection>.npz``; ``compare`` fits again
(with the code now on ``PYTHONPATH``) and reports, per collection, which arrays differ (exact
equality; NaN equals NaN). Collections: the five whole sets and the subset draws of
``benchmarks/subsets.py`` (as ``level_stability.py`` builds them), from the development vectors::

    flock /tmp/mc-engine.lock python benchmarks/engine_same.py save    --vectors-from /work/vec --dir /tmp/same/base
    flock /tmp/mc-engine.lock python benchmarks/engine_same.py compare --vectors-from /work/vec --dir /tmp/same/base

Exit status 1 when any collection differs. Timings (wall / CPU per fit and the engine's steps)
are printed for both; ``--repeat 2`` times a second fit in the same process (the first loads
numba's kernels), so ``compare`` run alternately with the old and the new code on ``PYTHONPATH``
under the lock is a before/after timing too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import level_stability  # noqa: E402  (the benchmarks folder is not a package)
import subsets  # noqa: E402

KEYS = ("levels", "parents", "n_clusters", "auto_level", "modularity_level", "groups_level",
        "level_scores", "agreement_scores", "level_probabilities", "unclustered", "embedding")


def outputs(X, seed: int) -> tuple[dict, dict]:
    """The engine's outputs on ``X`` as plain arrays, and its step timings."""
    from mediacluster.stages.hierarchy import reduce_and_cluster

    r = reduce_and_cluster(X, random_state=seed)
    h = r["clusterer"]
    P = h.parents_
    out = {"levels": h.levels_, "parents": np.concatenate(P) if P else np.zeros(0, np.int64),
           "n_clusters": h.n_clusters_per_level_, "auto_level": np.int64(h.auto_level_),
           "modularity_level": np.int64(h.modularity_level_), "groups_level": np.int64(h.groups_level_),
           "level_scores": h.level_scores_, "agreement_scores": h.agreement_scores_,
           "level_probabilities": h.level_probabilities_, "unclustered": h.unclustered_,
           "embedding": r["embedding"]}
    return out, r["timings"]


def differs(a: dict, b: dict) -> list[str]:
    bad = []
    for k in KEYS:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            bad.append(k)
    return bad


def keys(cases, draws):
    """A subset case of subsets.py: its draws (``case#d``); any other name: that whole set's
    vectors file (``--vectors-from DIR/<name>.npz``, e.g. cifar10-train for 50,000 items)."""
    for c in cases:
        yield from (f"{c}#{d}" for d in range(draws)) if c in subsets.CASES else [c]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("save", "compare"))
    ap.add_argument("--dir", type=Path, required=True, help="where the stored outputs are (one .npz per collection)")
    ap.add_argument("--vectors-from", type=Path, default=Path("/work/vec"))
    ap.add_argument("--cases", nargs="+", default=level_stability.WHOLE + list(subsets.CASES),
                    help="subset cases of subsets.py and/or whole sets (default: the five whole sets and every case)")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1,
                    help="fits per collection in this process; the last one's seconds are printed (the first "
                         "loads numba kernels), and all must give the same outputs")
    args = ap.parse_args(argv)
    ns = argparse.Namespace(vectors_from=args.vectors_from, out=None, shared=None)
    args.dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for key in keys(args.cases, args.draws):
        X, _ = level_stability.collection(key, ns) if "#" in key else level_stability.load(key, ns)
        path = args.dir / f"{key.replace('#', '_')}.npz"
        fits = []
        for _ in range(max(1, args.repeat)):  # the last fit is timed and kept; all must agree
            t, c = time.perf_counter(), time.process_time()
            out, steps = outputs(X, args.seed)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            fits.append(out)
        if any(differs(fits[0], f) for f in fits[1:]):
            print(f"{key}: the fits in this process differ from each other", flush=True)
            failed.append(key)
        steps = {k: round(v, 2) for k, v in steps.items()}
        if args.mode == "save":
            np.savez(path, **out)
            verdict = "saved"
        else:
            with np.load(path) as f:
                bad = differs(dict(f), out)
            verdict = "identical" if not bad else "DIFFERS: " + ", ".join(bad)
            if bad:
                failed.append(key)
        print(f"{key:22s} n={len(X):6d} wall {wall:6.2f} cpu {cpu:6.2f} {steps} "
              f"levels {out['n_clusters'].tolist()} auto {int(out['auto_level'])}: {verdict}", flush=True)
    if args.mode == "compare":
        print(f"{len(failed)} collection(s) differ" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
