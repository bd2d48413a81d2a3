"""Speed of the clustering engine (issue 16) against EVoC and umap-learn + HDBSCAN, same run.

Per dataset (CIFAR-10 test, 10,000 x 1,280, and CIFAR-10 train, 50,000 x 1,280, default-encoder
vectors embedded through the package as in ``benchmarks/quality.py``), in one process, one
after the other:

* ``engine``: ``mediacluster.stages.hierarchy.reduce_and_cluster`` (kNN graph once, UMAP with
  ``ENGINE_REDUCER`` on it, ``HierarchyClusterer``), seed 0; run twice, and the two label
  arrays must be identical (reproducibility);
* ``EVoC default``: ``evoc.EVoC(random_state=0).fit(X)`` (EVoC's own defaults);
* ``umap-learn + HDBSCAN``: the project's previous reduce stage (``UMAPReducer`` 10 dims, 30
  neighbours, min_dist 0, umap-learn's default epochs and kNN search, seed 0) then
  ``HDBSCANClusterer(min_cluster_size=default_min_cluster_size(n))``;
* ``Pipeline() before``: the default pipeline before this work (that UMAP, then K-means with k
  from the silhouette curve over 2..30, noise assignment and the predictor), at <= 10,000
  items only (the "before" of before/after).

Every method runs twice on the full data and the second run is reported (the first compiles or
loads from the on-disk cache of ``setup_numba_cache`` every numba kernel for these shapes; its
wall time is kept as ``first run``); the engine's two runs must give identical labels.
``--cold`` also times a fresh process on 2,000 items with and without the numba cache. Reported per run: wall seconds, process
CPU seconds (all threads), the 1-min load average before and after, the number of clusters and
NMI of the default output against the classes (noise as one group). The machine is shared by
up to 8 sessions, so run it under the lock and read the ratios, not the absolute seconds::

    flock /tmp/mc-bench.lock python benchmarks/engine.py --write-results
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Engine: speed (issue 16)"
DATASETS = ["cifar10-test", "cifar10-train"]


def run_engine(X, seed):
    from mediacluster.stages.hierarchy import reduce_and_cluster

    r = reduce_and_cluster(X, random_state=seed)
    h = r["clusterer"]
    return h.labels_, {"steps": {k: round(v, 2) for k, v in r["timings"].items()},
                       "levels": h.n_clusters_per_level_.tolist(), "auto_level": int(h.auto_level_),
                       "knn_method": "exact" if len(X) <= _exact_max() else "nndescent"}


def _exact_max():
    from mediacluster.stages.neighbors import EXACT_MAX

    return EXACT_MAX


def run_evoc(X, seed):
    import evoc

    m = evoc.EVoC(random_state=seed).fit(X)
    return np.asarray(m.labels_), {"layers": [int(lay.max()) + 1 for lay in m.cluster_layers_],
                                   "clustered": float((np.asarray(m.labels_) >= 0).mean())}


def run_umap_hdbscan(X, seed):
    from mediacluster.pipeline import default_min_cluster_size
    from mediacluster.stages.cluster import HDBSCANClusterer
    from mediacluster.stages.reduce import UMAPReducer

    Z = UMAPReducer(n_neighbors=30, n_components=10, min_dist=0.0, random_state=seed).fit_transform(X)
    mcs = default_min_cluster_size(len(X))
    c = HDBSCANClusterer(min_cluster_size=mcs).fit(Z)
    return c.labels_, {"min_cluster_size": mcs, "clustered": float((c.labels_ >= 0).mean())}


def run_previous_default(X, seed):
    from mediacluster.pipeline import Pipeline

    p = Pipeline(random_state=seed).fit(X)
    return p.cluster_, {"clusterer": type(p.clusterer_).__name__}


METHODS = {"engine": run_engine, "EVoC default": run_evoc, "umap-learn + HDBSCAN": run_umap_hdbscan,
           "Pipeline() before": run_previous_default}
SMALL_ONLY = {"Pipeline() before"}  # its k sweep (30 K-means fits + silhouettes) is run at 10k only


def cold_start(n: int, seed: int) -> dict:
    """Seconds for a fresh process to run the engine on ``n`` synthetic unit vectors, with the
    numba cache of ``setup_numba_cache`` and with an empty cache folder (every kernel compiled)."""
    code = ("import time,numpy as np;t=time.perf_counter();"
            "from mediacluster.fileio import setup_numba_cache;setup_numba_cache();"
            "from mediacluster.stages.hierarchy import reduce_and_cluster;"
            f"X=np.random.default_rng({seed}).normal(size=({n},256)).astype('float32');"
            f"reduce_and_cluster(X,random_state={seed});print(time.perf_counter()-t)")
    out = {}
    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)
    for label, cache in (("cached", None), ("empty cache", "tmp")):
        with tempfile.TemporaryDirectory() as tmp:
            e = dict(env)
            if cache:
                e["NUMBA_CACHE_DIR"] = tmp
            r = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True)
            out[label] = round(float(r.stdout.strip().splitlines()[-1]), 1)
    return out


def markdown(res: dict) -> str:
    lines = [SECTION, "",
             "Reduce + cluster wall and CPU seconds on 2 cores, the methods one after the other in "
             "one process (so under similar load), each run twice on the full data and the second "
             "run reported (the first compiles numba kernels; its wall time is in the last column). "
             "CPU = process CPU seconds over all threads. load = "
             "1-min load average before -> after the run (the machine is shared; wall seconds "
             "inflate with load, CPU seconds much less). NMI over all items against the classes, "
             "noise as one group, at each method's default output. Produced by "
             "`benchmarks/engine.py`; engine settings: `stages.hierarchy.ENGINE_REDUCER` "
             f"{res['engine_reducer']} + `HierarchyClusterer()` defaults.", "",
             "Command: " + "; ".join(f"`{c}`" for c in res["commands"]) + f" (finished {res['finished']}).", ""]
    for name, ds in res["datasets"].items():
        lines += [f"### {name} (n={ds['n']}, d={ds['d']})", "",
                  "| method | wall (s) | CPU (s) | load | clusters | NMI | detail | first run wall (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in ds["runs"]:
            lines.append(f"| {m['method']} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['load_before']} -> "
                         f"{m['load_after']} | {m['n_clusters']} | {m['nmi']:.3f} | {m['detail']} | "
                         f"{m['first_run_wall_s']:.1f} |")
        by = {m["method"]: m for m in ds["runs"]}
        e, v = by.get("engine"), by.get("EVoC default")
        if e and v:
            lines += ["", f"Engine / EVoC: wall {e['wall_s'] / v['wall_s']:.2f}x, CPU {e['cpu_s'] / v['cpu_s']:.2f}x "
                          f"(goal at 10k: wall <= 2x). Engine reproducible (both runs, same labels): "
                          f"**{'yes' if ds.get('reproducible') else 'NO'}**."]
        for other in ("umap-learn + HDBSCAN", "Pipeline() before"):
            u = by.get(other)
            if e and u:
                lines += [f"Engine / {other}: wall {e['wall_s'] / u['wall_s']:.2f}x, CPU {e['cpu_s'] / u['cpu_s']:.2f}x."]
        if ds["n"] >= 50000 and e:
            lines += [f"Goal at 50,000 (<= 90 s wall): {e['wall_s']:.1f} s -> **{'met' if e['wall_s'] <= 90 else 'missed'}**"
                      f" (CPU {e['cpu_s']:.1f} s)."]
        lines.append("")
    if res.get("cold"):
        lines += ["Fresh process, engine on 2,000 x 256 synthetic vectors (import + numba + fit): "
                  + ", ".join(f"{k} {v} s" for k, v in res["cold"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    _results.add_data_args(ap, seed=True)
    ap.add_argument("--cold", action="store_true", help="also time fresh processes (numba cache on/off)")
    ap.add_argument("--vectors-from", type=Path, default=None,
                    help="DEVELOPMENT ONLY: DIR/<dataset>.npz instead of embedding (refused with --write-results)")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)
    if args.write_results and args.vectors_from is not None:
        ap.error("--write-results is refused with --vectors-from")
    from mediacluster.fileio import setup_numba_cache

    setup_numba_cache()
    import quality

    from mediacluster.metrics import external_scores
    from mediacluster.stages.hierarchy import ENGINE_REDUCER

    command = _results.command("engine.py", argv)
    res = {"commands": [command], "datasets": {}, "engine_reducer": ENGINE_REDUCER,
           "versions": quality.versions()}
    for name in args.datasets:
        X, y, source = quality.load_dataset(name, args.out, args.shared, args.vectors_from, False)
        print(f"[{name}] n={len(X)} ({source})", file=sys.stderr, flush=True)
        methods = [m for m in args.methods if not (m in SMALL_ONLY and len(X) > 10000)]
        runs = []
        ds = {"n": len(X), "d": int(X.shape[1]), "source": source, "runs": runs}
        for m in methods:
            # run 1 compiles / loads every numba kernel for these shapes; run 2 is reported
            (labels1, _), t1 = _results.timed(lambda m=m, X=X: METHODS[m](X, args.seed))
            (labels, detail), t = _results.timed(lambda m=m, X=X: METHODS[m](X, args.seed))
            s = external_scores(y, labels)
            row = {"method": m, **t, "first_run_wall_s": t1["wall_s"], "n_clusters": s["n_clusters"],
                   "nmi": s["all"]["nmi"], "detail": ", ".join(f"{k} {v}" for k, v in detail.items())}
            runs.append(row)
            print(f"  {m}: wall {t['wall_s']:.1f}s (first run {t1['wall_s']:.1f}s) cpu {t['cpu_s']:.1f}s "
                  f"load {t['load_before']}->{t['load_after']} k={s['n_clusters']} nmi {s['all']['nmi']:.3f} "
                  f"{row['detail']}", file=sys.stderr, flush=True)
            if m == "engine":
                ds["reproducible"] = bool(np.array_equal(labels1, labels))
        res["datasets"][name] = ds
    if args.cold:
        res["cold"] = cold_start(2000, args.seed)
        print(f"  cold start: {res['cold']}", file=sys.stderr)
    _results.finish(res, SECTION, markdown, args.write_results,
                    args.out / ("engine-speed.json" if args.vectors_from is None else "engine-speed-dev.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
