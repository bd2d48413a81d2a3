"""Agreement across representations as a criterion for the engine's default level (issue 16).

Question (session 15): every criterion tried so far judges a level inside the UMAP layout or its
input kNN graph, and the known failures are splits the layout itself makes (Imagenette) or
levels one step too fine (MNIST, CIFAR-10, OpenMoji). Does a level the data supports agree
better with a clustering of a *different view* of the same items, one that does not share the
layout's tearing?

For every collection (the main fits of ``level_stability.py fit``: 5 whole sets + 27 subset
draws, seed 0; reused from its cache) and every *candidate level* (a level of the main fit whose
cluster count k is within a factor 2 of the auto level's, ``k_auto / 2 <= k <= 2 k_auto``), K-means
with the same k is run on a view of the ORIGINAL vectors, with seeds 0, 1, 2 (``n_init=1``
each: the seeds give the score's own noise):

* ``raw``    the L2-normalised vectors (the engine's metric is cosine: spherical-like K-means)
* ``pca50``  PCA to 50 dimensions of the L2-normalised vectors (not whitened)

Agreement of a level = mean over the seeds of ARI (or AMI) between the level's labels and
K-means' labels; noise = the sample sd over the seeds. Rules (no constant fitted to these sets):

* ``max``     the candidate with the highest mean agreement (ties: the auto level)
* ``noise``   that candidate only when its gain over the auto level exceeds the two levels'
              seed noise (``mean_b - mean_auto > sd_b + sd_auto``), else the auto level
* suffix ``-g``: candidates never coarser than the density groups (``k >= k_groups``); without
  it the window is free

Usage (the K-means step caches under ``--cache``, next to level_stability's own)::

    B="python benchmarks/level_agreement.py --vectors-from /work/vec --cache /tmp/xspace/c"
    python benchmarks/level_stability.py --vectors-from /work/vec --cache /tmp/xspace/c fit --cases all
    $B kmeans             # K-means labels per collection, view, candidate k, seed
    $B table              # per collection and per collection group, every variant
    $B table --package    # + the rule as the package computes it (must equal `pca50 ari noise`)
    $B timing             # 10k (CIFAR-10 test): the package step, and K-means per view
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402
import level_stability as LS  # noqa: E402
import quality  # noqa: E402
import subsets  # noqa: E402

import __main__  # noqa: E402

__main__.Tree = LS.Tree  # level_stability's cache pickles its Tree as __main__.Tree
VIEWS = ["raw", "pca50"]
SCORES = ["ari", "ami"]
RULES = ["max", "max-g", "noise", "noise-g"]
SEEDS = (0, 1, 2)
WINDOW = 2.0


def candidates(tree, window=WINDOW):
    """Level indices whose cluster count is within a factor ``window`` of the auto level's."""
    ka = int(tree.counts[tree.auto])
    return [lv for lv, k in enumerate(tree.counts) if ka / window <= k <= ka * window and k >= 2]


def view(X, name, seed=0):
    from sklearn.decomposition import PCA

    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if name == "raw":
        return Xn.astype(np.float32)
    if name == "pca50":
        d = min(50, Xn.shape[1], len(Xn) - 1)
        return PCA(n_components=d, random_state=seed).fit_transform(Xn).astype(np.float32)
    raise SystemExit(f"unknown view {name!r}")


def kmeans_labels(V, k, seed):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=int(k), n_init=1, random_state=seed).fit(V).labels_


def agree_key(args):
    return "agree" if tuple(args.seeds) == SEEDS else "agree-s" + "-".join(map(str, args.seeds))


def cmd_kmeans(args):
    for key in LS.collection_keys(args.cases, args.draws):
        main = LS.cached(args, key, "main")
        if main is None:
            raise SystemExit(f"{key}: run `level_stability.py fit` first")
        tree = main["tree"]
        have = LS.cached(args, key, agree_key(args)) or {}
        ks = sorted({int(tree.counts[lv]) for lv in candidates(tree)})
        todo = [(v, k) for v in VIEWS for k in ks if (v, k) not in have]
        if not todo:
            continue
        X, _ = LS.collection(key, args)
        t = time.perf_counter()
        views = {}
        for v, k in todo:
            if v not in views:
                views[v] = view(X, v)
            have[(v, k)] = [kmeans_labels(views[v], k, s) for s in args.seeds]
        LS.store(args, key, agree_key(args), have)
        print(f"{key}: n={len(X)} ks {ks} ({time.perf_counter() - t:.1f}s)", flush=True)


def agreement(tree, have, vname, score):
    """{level: (mean, sd)} over the seeds."""
    from sklearn.metrics import adjusted_mutual_info_score as ami
    from sklearn.metrics import adjusted_rand_score as ari

    f = ari if score == "ari" else ami
    out = {}
    for lv in candidates(tree):
        vals = [f(tree.levels[lv], km) for km in have[(vname, int(tree.counts[lv]))]]
        out[lv] = (float(np.mean(vals)), float(np.std(vals, ddof=1)))
    return out


def choose(tree, ag, rule):
    auto = tree.auto
    cands = [lv for lv in ag if not rule.endswith("-g") or tree.counts[lv] >= tree.k_groups]
    best = max(cands, key=lambda lv: (round(ag[lv][0], 6), lv == auto))
    if rule.startswith("noise") and best != auto:
        if not ag[best][0] - ag[auto][0] > ag[best][1] + ag[auto][1]:
            best = auto
    return best


def variants(args):
    return [f"{v} {s} {r}" for v in args.views for s in args.scores for r in args.rules]


def cmd_table(args):
    from sklearn.metrics import normalized_mutual_info_score as nmi

    rows = []
    for key in LS.collection_keys(args.cases, args.draws):
        main = LS.cached(args, key, "main")
        have = LS.cached(args, key, agree_key(args))
        if have is None:
            raise SystemExit(f"{key}: run `kmeans` first")
        tree, y = main["tree"], main["y"]
        sc = [float(nmi(y, lv)) for lv in tree.levels]
        best = int(np.argmax(sc))
        row = {"key": key, "groups": int(tree.k_groups), "auto": (sc[tree.auto], int(tree.counts[tree.auto])),
               "best (oracle)": (sc[best], int(tree.counts[best]))}
        cache = {}
        for name in variants(args):
            v, s, r = name.split()
            if (v, s) not in cache:
                cache[(v, s)] = agreement(tree, have, v, s)
            lv = choose(tree, cache[(v, s)], r)
            row[name] = (sc[lv], int(tree.counts[lv]))
        if args.package:  # the rule as the package implements it, computed afresh
            from mediacluster.stages.hierarchy import agreement_level

            X, _ = LS.collection(key, args)
            lv, _ = agreement_level(tree.levels, tree.auto, X, random_state=0)
            row["package (pca50 ari noise)"] = (sc[lv], int(tree.counts[lv]))
        rows.append(row)
        if args.verbose:
            print(f"{key} groups {tree.k_groups} auto {tree.counts[tree.auto]}: " + "; ".join(
                f"{int(tree.counts[lv])}: nmi {sc[lv]:.3f} " + " ".join(
                    f"{v}/{s} {cache[(v, s)][lv][0]:.3f}±{cache[(v, s)][lv][1]:.3f}" for (v, s) in cache)
                for lv in candidates(tree)), flush=True)
    cols = [c for c in rows[0] if c not in ("key", "groups")]
    print("| collection | groups | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 2))
    for r in rows:
        print(f"| {r['key']} | {r['groups']} | " + " | ".join(f"{r[c][0]:.3f} ({r[c][1]})" for c in cols) + " |")
    whole = [r for r in rows if "#" not in r["key"]]
    groups = {c: [r for r in rows if r["key"].startswith(c + "#")] for c in args.cases if c not in LS.WHOLE}
    groups = {g: rs for g, rs in groups.items() if rs}
    print("\n| mean NMI | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    if whole:
        print("| whole sets (mean of 5) | " + " | ".join(f"{np.mean([r[c][0] for r in whole]):.4f}" for c in cols) + " |")
    for g, rs in groups.items():
        print(f"| {g} | " + " | ".join(f"{np.mean([r[c][0] for r in rs]):.4f}" for c in cols) + " |")
    if groups:
        print("| subset collections (mean of the case means) | " + " | ".join(
            f"{np.mean([np.mean([r[c][0] for r in rs]) for rs in groups.values()]):.4f}" for c in cols) + " |")
    if whole:
        print("| worst whole-set change vs auto | " + " | ".join(
            f"{min(r[c][0] - r['auto'][0] for r in whole):+.4f}" for c in cols) + " |")
    print("| collections whose level moved | " + " | ".join(
        f"{sum(r[c][1] != r['auto'][1] for r in rows)}" for c in cols) + " |")


def cmd_timing(args):
    """K-means at the auto window's ks of CIFAR-10 test (10,000 x 1,280), 3 seeds, per view;
    each timed twice, the second reported."""
    X, _ = LS.load("cifar10-test", args)
    main = LS.cached(args, "cifar10-test", "main")
    ks = sorted({int(main["tree"].counts[lv]) for lv in candidates(main["tree"])}) if main else [4, 6, 8, 9, 12, 16]
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}; ks {ks} x seeds {args.seeds}")
    from mediacluster.stages.hierarchy import agreement_level

    if main:
        for _ in range(2):
            t, c = time.perf_counter(), time.process_time()
            agreement_level(main["tree"].levels, main["tree"].auto, X, random_state=0)
            w, cpu = time.perf_counter() - t, time.process_time() - c
        print(f"package `agreement_level` (PCA-50, one BLAS thread, the window's ks x 3 starts, ARI): "
              f"{w:.2f} s wall, {cpu:.2f} s CPU; load after {open('/proc/loadavg').read().split()[0]}")
    print("| view | view (s) | K-means, all ks and seeds: wall (s) | CPU (s) | load after |\n|---|---|---|---|---|")
    for v in args.views:
        for _ in range(2):
            t, c = time.perf_counter(), time.process_time()
            V = view(X, v)
            tv = time.perf_counter() - t
            for k in ks:
                for s in args.seeds:
                    kmeans_labels(V, k, s)
            w, cpu = time.perf_counter() - t, time.process_time() - c
        print(f"| {v} | {tv:.2f} | {w:.1f} | {cpu:.1f} | {open('/proc/loadavg').read().split()[0]} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["kmeans", "table", "timing"])
    ap.add_argument("--cases", nargs="+", default=["all"])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--views", nargs="+", default=VIEWS, choices=VIEWS)
    ap.add_argument("--scores", nargs="+", default=SCORES, choices=SCORES)
    ap.add_argument("--rules", nargs="+", default=RULES, choices=RULES)
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS),
                    help="K-means seeds (a second set checks that a rule's choices are not one draw's luck)")
    ap.add_argument("--package", action="store_true",
                    help="`table`: add the rule as mediacluster.stages.hierarchy.agreement_level computes it")
    ap.add_argument("--verbose", action="store_true", help="`table`: each candidate's agreement")
    ap.add_argument("--cache", type=Path, default=quality.ROOT / "benchmarks" / "out" / "level_stability")
    _results.add_data_args(ap)
    ap.add_argument("--vectors-from", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cases == ["all"]:
        args.cases = LS.WHOLE + list(subsets.CASES)
    bad = [c for c in args.cases if c not in LS.WHOLE and c not in subsets.CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        {"kmeans": cmd_kmeans, "table": cmd_table, "timing": cmd_timing}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
