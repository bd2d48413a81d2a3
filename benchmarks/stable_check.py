"""How stable is the default level's agreement check under numerically equivalent changes?

Question (issue 16, session 17): ``stages.hierarchy.agreement_level`` keeps the modularity level
unless a candidate level agrees better with K-means on a PCA-50 view of the input vectors by
more than the K-means starts' spread. Its pick moved with changes that should not matter (exact
instead of randomized PCA, K-means starts 3-5 instead of 0-2). This script measures, on the
levels of the engine's fits cached by ``fast_layout.py sweep`` (variant ``base``: seed 0, the
committed engine), which level each *design* of the check picks under each *perturbation*:

* perturbations: K-means start sets (three disjoint blocks of S seeds: 0.., S.., 2S..), the PCA
  computed exactly (``svd_solver="full"``) instead of randomized, and a different PCA
  ``random_state`` (+100);
* designs: ``fixedS``: one PCA view (seeded with the first start, as the engine does), S
  K-means starts; ``viewS``: every start its own randomized PCA (``random_state`` = the start's
  seed), so the spread the rule compares against includes the view's own noise; ``subS`` /
  ``submS``: one view, S starts, each K-means on its own random sample of 4,000 / 3,000 items
  (``sub12 sd`` is what ``agreement_level`` does since session 17); each with a
  rule: ``sd`` (the engine's: the best-agreeing candidate when its mean gain exceeds the sum of
  the two levels' start-to-start sds), ``paired`` (per start, the gain of the candidate over the
  modularity level; its mean must exceed its sd) and ``sign`` (the candidate must gain in every
  start). ``fixed3 sd`` is the check before session 17.

Commands::

    B="python benchmarks/stable_check.py --vectors-from /work/vec --levels /tmp/fastcheck/c --cache /tmp/robustcheck/g"
    $B grid  --cases whole subsets    # ARI of every candidate level against every K-means run needed
    $B table --cases whole subsets    # picks per design and perturbation, stability and quality
    $B timing                         # the check's seconds at 10k (CIFAR-10 test), second of two runs

``grid`` caches one pickle per collection (the ARIs, keyed by (view, K-means seed, level));
``table`` reads only those and the cached levels.
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import level_stability as ls  # noqa: E402  (the benchmarks folder is not a package)
import subsets  # noqa: E402

SIZES = (3, 6)
SUB_SIZES = (12, 16)
SUB_ROWS = {"sub": 4000, "subm": 3000}  # ``subS``/``submS``: each start's K-means on its own
# random sample of this many rows (all rows when fewer)
RULES = ("sd", "paired", "sign")


def perturbations(kind: str, S: int) -> list[tuple[str, list[tuple[str, int]]]]:
    """``[(label, [(view, K-means seed) per start])]`` for a design with S starts. Views: ``rN``
    randomized PCA with random_state N, ``full`` the exact PCA."""
    out = []
    for b in range(3):
        seeds = list(range(b * S, (b + 1) * S))
        views = [f"r{s}" for s in seeds] if kind == "view" else [f"r{seeds[0]}"] * S
        out.append((f"starts {seeds[0]}-{seeds[-1]}", list(zip(views, seeds))))
    out.append(("exact PCA", [("full", s) for s in range(S)]))
    views = [f"r{100 + s}" for s in range(S)] if kind == "view" else ["r100"] * S
    out.append(("PCA seed +100", list(zip(views, range(S)))))
    return out


DESIGNS = {f"{kind}{S} {rule}": (kind, S, rule) for kind in ("fixed", "view") for S in SIZES
           for rule in RULES}
DESIGNS.update({f"{kind}{S} {rule}": (kind, S, rule) for kind in SUB_ROWS for S in SUB_SIZES
                for rule in RULES})


def decide(scores: dict[int, list[float]], auto: int, rule: str) -> int:
    """The level a rule picks from per-start ARIs (``scores[level]``, starts in order)."""
    means = {lv: float(np.mean(a)) for lv, a in scores.items()}
    best = max(scores, key=lambda lv: (round(means[lv], 6), lv == auto))
    if best == auto:
        return auto
    a, b = np.asarray(scores[auto]), np.asarray(scores[best])
    if rule == "sd":
        ok = means[best] - means[auto] > np.std(b, ddof=1) + np.std(a, ddof=1)
    elif rule == "paired":
        d = b - a
        ok = d.mean() > d.std(ddof=1)
    else:  # sign: a gain in every start
        ok = bool(np.all(b > a))
    return best if ok else auto


def candidates(levels, auto, n):
    from mediacluster.stages import hierarchy as h

    counts = [int(lv.max()) + 1 for lv in levels]
    ka = counts[auto]
    c = [lv for lv, k in enumerate(counts) if ka / h.AGREEMENT_WINDOW <= k <= ka * h.AGREEMENT_WINDOW
         and 2 <= k < n]
    return c if len(c) >= 2 and auto in c else []


def view(X, name, dims):
    from sklearn.decomposition import PCA

    if name == "full":
        return PCA(n_components=dims, svd_solver="full").fit_transform(X)
    return PCA(n_components=dims, random_state=int(name[1:])).fit_transform(X)


def cmd_grid(args):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from mediacluster.data import l2_normalize
    from mediacluster.stages.cluster import single_blas_thread

    need = sorted({(kind if kind in SUB_ROWS else "", *p) for kind, S, _ in DESIGNS.values()
                   for _, starts in perturbations(kind, S) for p in starts})
    by_view = {}
    for sub, v, s in need:
        by_view.setdefault(v, []).append((sub, s))
    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    for key in ls_keys(args):
        out = args.cache / f"{key}.pkl"
        ari = {}
        if out.exists() and not args.force:  # only what is missing
            with open(out, "rb") as f:
                ari = pickle.load(f)["ari"]
        levels, mod, ref = cached_levels(args, key)
        X, y = ls.collection(key, args)
        cands = candidates(levels, mod, len(X))
        t = time.perf_counter()
        if cands:
            Xn = l2_normalize(X)
            dims = int(min(50, Xn.shape[1], len(Xn) - 1))
            with single_blas_thread():
                for v, seeds in by_view.items():
                    seeds = [(sub, s) for sub, s in seeds if key_of(sub, v, s, cands[0]) not in ari]
                    if not seeds:
                        continue
                    V = view(Xn, v, dims)
                    for sub, s in seeds:
                        rows = sample_rows(len(V), s, sub) if sub else np.arange(len(V))
                        same = [key_of(o, v, s, cands[0]) for o in ("", *SUB_ROWS)
                                if len(rows) == len(V) and (not o or len(V) <= SUB_ROWS[o])]
                        same = [k for k in same if k in ari]
                        if sub and same:  # n <= SUB_ROWS: the same fit as on all rows
                            for lv in cands:
                                ari[key_of(sub, v, s, lv)] = ari[(*same[0][:-1], lv)]
                            continue
                        for lv in cands:
                            k = int(levels[lv].max()) + 1
                            lab = KMeans(n_clusters=k, n_init=1, random_state=s).fit(V[rows]).labels_
                            ari[key_of(sub, v, s, lv)] = float(adjusted_rand_score(levels[lv][rows], lab))
        rec = {"cands": cands, "mod": mod, "ref": ref, "ari": ari,
               "counts": [int(lv.max()) + 1 for lv in levels],
               "nmi": [ls_nmi(y, lv) for lv in levels]}
        tmp = out.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(rec, f)
        tmp.replace(out)
        print(f"{key}: n={len(X)}, {len(cands)} candidates, {time.perf_counter() - t:.1f} s", flush=True)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


def key_of(kind, v, s, lv):
    """The grid's key of one K-means run's ARI (``kind``: "" for all rows, else a SUB_ROWS key)."""
    return (v, s, lv) if not kind else (kind, v, s, lv)


def sample_rows(n, seed, kind="sub"):
    """``subS``: start ``seed``'s rows (all of them at n <= SUB_ROWS[kind]), as
    ``stages.hierarchy.agreement_level`` draws them."""
    m = SUB_ROWS[kind]
    if n <= m:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, m, replace=False))


def ls_nmi(y, lab):
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(y, lab))


def ls_keys(args):
    out = []
    for c in args.cases:
        if c == "whole":
            out += ls.WHOLE
        elif c == "subsets":
            out += [f"{s}#{d}" for s in subsets.CASES for d in range(args.draws)]
        else:
            out.append(c)
    return out


def cached_levels(args, key):
    z = np.load(args.levels / f"{key}@base.npz")
    return list(z["levels"]), int(z["mod"]), int(z["auto"])


def picks(rec, design):
    """Per perturbation: the picked level."""
    kind, S, rule = DESIGNS[design]
    out = []
    for _, starts in perturbations(kind, S):
        if not rec["cands"]:
            out.append(rec["mod"])
            continue
        scores = {lv: [rec["ari"][key_of(kind if kind in SUB_ROWS else "", v, s, lv)] for v, s in starts]
                  for lv in rec["cands"]}
        out.append(decide(scores, rec["mod"], rule))
    return out


def cmd_table(args):
    keys = ls_keys(args)
    recs = {k: pickle.load(open(args.cache / f"{k}.pkl", "rb")) for k in keys}
    # today's check must reproduce the engine's cached pick
    bad = [k for k, r in recs.items() if picks(r, "fixed3 sd")[0] != r["ref"]]
    print(f"fixed3 sd, starts 0-2 = the engine's cached level: {len(keys) - len(bad)}/{len(keys)} {bad}")
    designs = args.designs or list(DESIGNS)
    summary = {}
    for d in designs:
        kind, S, _ = DESIGNS[d]
        labels = [p for p, _ in perturbations(kind, S)]
        rows, moved, dn, mean_nmi = [], 0, [], {}
        for k, r in recs.items():
            p = picks(r, d)
            nm = [r["nmi"][lv] for lv in p]
            moved += len(set(p)) > 1
            dn.append(np.mean([abs(a - b) for a, b in itertools.combinations(nm, 2)]))
            mean_nmi[k] = float(np.mean(nm))
            rows.append(f"| {k} | {r['counts'][r['mod']]} | " + " | ".join(
                f"{r['counts'][lv]} ({n:.3f})" for lv, n in zip(p, nm)) + f" | {mean_nmi[k]:.3f} |")
        whole = float(np.mean([mean_nmi[k] for k in keys if k in ls.WHOLE])) if set(keys) & set(ls.WHOLE) else float("nan")
        cases = {}
        for k in keys:
            if k not in ls.WHOLE:
                cases.setdefault(k.split("#")[0], []).append(mean_nmi[k])
        sub = float(np.mean([np.mean(v) for v in cases.values()])) if cases else float("nan")
        summary[d] = (moved, float(np.mean(dn)), whole, sub, mean_nmi)
        if args.rows:
            print(f"\n### {d}\n\n| collection | modularity level | " + " | ".join(labels)
                  + " | mean NMI |\n|---|---|" + "---|" * (len(labels) + 1))
            print("\n".join(rows))
    ref = summary.get("fixed3 sd")
    print("\n| design | collections whose pick differs | mean pairwise abs dNMI | whole-set mean NMI "
          "| subset mean NMI | worst whole set vs today |\n|---|---|---|---|---|---|")
    for d, (moved, dn, whole, sub, mn) in summary.items():
        worst = min((mn[k] - ref[4][k] for k in keys if k in ls.WHOLE), default=float("nan")) if ref else float("nan")
        print(f"| {d} | {moved}/{len(keys)} | {dn:.4f} | {whole:.4f} | {sub:.4f} | {worst:+.4f} |")


def cmd_timing(args):
    """Today's check and each design's cost at 10k: the cached levels of CIFAR-10 test, one
    thread as in the engine, each timed twice in this process (the second run reported)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from mediacluster.data import l2_normalize
    from mediacluster.stages.cluster import single_blas_thread
    from mediacluster.stages.hierarchy import agreement_level

    key = args.timing_set
    levels, mod, _ = cached_levels(args, key)
    X, _ = ls.collection(key, args)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")

    def design_check(kind, S, rule):
        cands = candidates(levels, mod, len(X))
        Xn = l2_normalize(X)
        dims = int(min(50, Xn.shape[1], len(Xn) - 1))
        starts = perturbations(kind, S)[0][1]
        scores = {lv: [] for lv in cands}
        with single_blas_thread():
            views = {}
            for v, s in starts:
                if v not in views:
                    views = {v: view(Xn, v, dims)}
                rows = sample_rows(len(Xn), s, kind) if kind in SUB_ROWS else np.arange(len(Xn))
                for lv in cands:
                    lab = KMeans(n_clusters=int(levels[lv].max()) + 1, n_init=1,
                                 random_state=s).fit(views[v][rows]).labels_
                    scores[lv].append(adjusted_rand_score(levels[lv][rows], lab))
        return decide(scores, mod, rule)

    runs = {"engine (agreement_level)": lambda: agreement_level(levels, mod, X, random_state=0)[0]}
    for d in args.designs or ["fixed3 sd", "sub12 sd", "subm12 sd"]:
        runs[d] = (lambda spec: lambda: design_check(*spec))(DESIGNS[d])
    print("| check | wall s (second run) | CPU s (second run) | level's clusters |\n|---|---|---|---|")
    for name, f in runs.items():
        f()
        t, c = time.perf_counter(), time.process_time()
        lv = f()
        print(f"| {name} | {time.perf_counter() - t:.2f} | {time.process_time() - c:.2f} | "
              f"{int(levels[lv].max()) + 1} |", flush=True)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Designs: " + ", ".join(DESIGNS))
    ap.add_argument("cmd", choices=["grid", "table", "timing"])
    ap.add_argument("--cases", nargs="+", default=["whole", "subsets"])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--designs", nargs="+", choices=list(DESIGNS), default=None, metavar="DESIGN",
                    help="table / timing: these designs only (names below)")
    ap.add_argument("--rows", action="store_true", help="table: a row per collection per design")
    ap.add_argument("--levels", type=Path, default=Path("/tmp/fastcheck/c"),
                    help="fast_layout.py sweep's cache (<key>@base.npz: levels, mod, auto)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/robustcheck/g"))
    ap.add_argument("--timing-set", default="cifar10-test")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--shared", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quality"))
    ap.add_argument("--vectors-from", type=Path, default=None)
    args = ap.parse_args(argv)
    {"grid": cmd_grid, "table": cmd_table, "timing": cmd_timing}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
