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

Session 18 (consensus helper) adds, from ``grid2``: ``kcc12 sd`` / ``eac12 sd``: the sub12 runs
(each fitted on its own sample, its centres assigning every item) judged by their consensus
partition instead of one by one: the level's agreement is its ARI with the consensus (K-means on
the runs' one-hot memberships, or average linkage on 1 - co-association of a 2,000-item sample),
the starts' sd stays the noise; ``kcch12 sd``: a consensus of starts 0-5 and one of 6-11, the
mean and sd of their two ARIs; ``faiss12 {sd,paired,sign}``: faiss K-means on the full
L2-normalised vectors (no PCA view), same starts and samples, perturbed by the start blocks, a
random rotation of the input and the rows in reverse order.

Commands::

    B="python benchmarks/stable_check.py --vectors-from /work/vec --levels /tmp/fastcheck/c --cache /tmp/robustcheck/g"
    $B grid  --cases whole subsets    # ARI of every candidate level against every K-means run needed
    $B table --cases whole subsets    # picks per design and perturbation, stability and quality
    $B timing                         # the check's seconds at 10k (CIFAR-10 test), second of two runs
    $B grid2 --parts cons faiss       # session 18: the consensus and faiss designs' numbers
    $B table --designs 'sub12 sd' 'kcc12 sd' 'eac12 sd' 'kcch12 sd' 'faiss12 sd' --rows

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
    randomized PCA with random_state N, ``full`` the exact PCA. ``faiss`` has no PCA view; its
    views are the input itself (``x``), the input times a random orthogonal matrix (``rot100``:
    every distance the same up to rounding, the analogue of another PCA solver) and the rows in
    reverse order (``rev``: each start's sample draws other items)."""
    if kind == "faiss":
        out = [(f"starts {b * S}-{(b + 1) * S - 1}", [("x", s) for s in range(b * S, (b + 1) * S)])
               for b in range(3)]
        out.append(("rotated input", [("rot100", s) for s in range(S)]))
        out.append(("rows reversed", [("rev", s) for s in range(S)]))
        return out
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
# session 18 (consensus helper): the sub12 starts judged by their consensus, and faiss K-means on
# the full L2-normalised vectors (no PCA view); computed by ``grid2``
CONSENSUS = ("kcc", "eac")  # how the 12 runs' consensus partition is formed (see ``consensus``)
DESIGNS.update({f"{kind}12 sd": (kind, 12, "sd") for kind in (*CONSENSUS, "kcch")})
# ``kcch``: the consensus noise measured, not borrowed: one ``kcc`` consensus of starts 0-5 and
# one of starts 6-11; the level's agreement is the mean of their two ARIs, its noise their sd
DESIGNS.update({f"faiss12 {rule}": ("faiss", 12, rule) for rule in RULES})
EAC_ROWS = 2000  # evidence accumulation: the co-association on a common sample of this many items


def decide(scores: dict[int, list[float]], auto: int, rule: str, means=None) -> int:
    """The level a rule picks from per-start ARIs (``scores[level]``, starts in order).
    ``means``: the level's agreement when it is not the mean of the starts' (a consensus
    design's ARI against the runs' consensus; the starts' sd stays the noise)."""
    means = means or {lv: float(np.mean(a)) for lv, a in scores.items()}
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
                   if kind not in (*CONSENSUS, "faiss") for _, starts in perturbations(kind, S) for p in starts})
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


def consensus(kind, runs: np.ndarray, k: int, seed: int):
    """The consensus partition of K-means runs (``runs``: n x R labels) into k clusters:
    ``(rows, labels)``, the items it covers and their consensus labels.

    ``kcc``: K-means-based consensus clustering (Topchy, Jain & Punch 2003; Wu et al., KCC,
    TKDE 2015): scikit-learn's K-means on the items' one-hot memberships in the R runs' clusters
    (their inner products are R times the co-association), k-means++ with 3 inits, on all items.
    ``eac``: evidence accumulation (Fred & Jain 2005): the co-association on a common sample of
    ``EAC_ROWS`` items (all when fewer), 1 - co-association as a distance, scipy's average
    linkage cut at k clusters."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.cluster import KMeans

    n, R = runs.shape
    if kind == "eac":
        rows = sample_rows(n, seed, rows=EAC_ROWS)
        H = one_hot(runs[rows])
        D = 1.0 - (H @ H.T) / R
        np.fill_diagonal(D, 0.0)
        Z = linkage(squareform(D, checks=False), method="average")
        return rows, fcluster(Z, k, criterion="maxclust")
    H = one_hot(runs)
    return np.arange(n), KMeans(n_clusters=k, n_init=3, random_state=seed).fit(H).labels_


def one_hot(runs):
    """Items x (sum of the runs' cluster counts): 1 where the item is in that run's cluster."""
    return np.hstack([np.eye(int(r.max()) + 1, dtype=np.float32)[r] for r in runs.T])


def rotation(d, seed):
    """A random orthogonal d x d matrix (QR of a Gaussian one)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def faiss_labels(Xp, k, seed):
    """faiss K-means (k-means++ init, as scikit-learn's; 25 iterations, faiss's default) on all
    of ``Xp``'s rows (no faiss subsampling): each row's cluster."""
    import faiss

    km = faiss.Kmeans(Xp.shape[1], k, niter=25, seed=int(seed), max_points_per_centroid=10**9,
                      init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS)
    km.train(Xp)
    return km.index.search(Xp, 1)[1].ravel()


def faiss_input(v, Xn, levels):
    """A ``faiss`` perturbation's input and levels (see ``perturbations``)."""
    if v == "rot100":
        return Xn @ rotation(Xn.shape[1], 100), levels
    if v == "rev":
        return np.ascontiguousarray(Xn[::-1]), [lv[::-1] for lv in levels]
    return Xn, levels


def cmd_grid2(args):
    """The session-18 designs' numbers: for every ``sub12`` perturbation, the 12 runs' labels of
    all items (each run fitted on its own sample as ``agreement_level`` does, its centres
    assigning every item) and each consensus' ARI with every candidate level; and faiss K-means
    on the full L2-normalised vectors per start, perturbation and level."""
    import faiss
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from mediacluster.data import l2_normalize
    from mediacluster.stages.cluster import single_blas_thread

    args.cache.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for key in ls_keys(args):
            out = args.cache / f"{key}.pkl"
            with open(out, "rb") as f:
                rec = pickle.load(f)  # ``grid``'s record: the sub12 runs' ARIs on their samples
            ari, cands = rec["ari"], rec["cands"]
            levels, _, _ = cached_levels(args, key)
            t = time.perf_counter()
            if cands:
                X, _ = ls.collection(key, args)
                Xn = l2_normalize(X).astype(np.float32)
                n = len(Xn)
                dims = int(min(50, Xn.shape[1], n - 1))
                with single_blas_thread():
                    if "cons" in args.parts:
                        for label, starts in perturbations("sub", 12):
                            if all((kind, label, lv) in ari for kind in (*CONSENSUS, "kcch") for lv in cands) \
                                    and not args.force:
                                continue
                            V = view(Xn, starts[0][0], dims)
                            for lv in cands:
                                k = int(levels[lv].max()) + 1
                                runs = np.empty((n, len(starts)), dtype=np.int64)
                                for j, (v, s) in enumerate(starts):
                                    rows = sample_rows(n, s, "sub")
                                    km = KMeans(n_clusters=k, n_init=1, random_state=s).fit(V[rows])
                                    runs[:, j] = km.predict(V)
                                    a = float(adjusted_rand_score(levels[lv][rows], km.labels_))
                                    old = ari.get(key_of("sub", v, s, lv))
                                    if old is not None and abs(old - a) > 1e-9:
                                        raise RuntimeError(f"{key}: the sub fit {v, s, lv} differs from grid's")
                                for kind in CONSENSUS:
                                    rows, cons = consensus(kind, runs, k, starts[0][1])
                                    ari[(kind, label, lv)] = float(adjusted_rand_score(levels[lv][rows], cons))
                                half = len(starts) // 2
                                ari[("kcch", label, lv)] = [
                                    float(adjusted_rand_score(levels[lv], consensus("kcc", runs[:, h], k, starts[h][0][1])[1]))
                                    for h in (slice(0, half), slice(half, None))]
                    if "faiss" in args.parts:
                        for _, starts in perturbations("faiss", 12):
                            todo = [(v, s) for v, s in starts if args.force or ("faiss", v, s, cands[0]) not in ari]
                            if not todo:
                                continue
                            Xp, lp = faiss_input(todo[0][0], Xn, levels)
                            for v, s in todo:
                                rows = sample_rows(n, s, "sub")
                                for lv in cands:
                                    lab = faiss_labels(Xp[rows], int(levels[lv].max()) + 1, s)
                                    ari[("faiss", v, s, lv)] = float(adjusted_rand_score(lp[lv][rows], lab))
            tmp = out.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(rec, f)
            tmp.replace(out)
            print(f"{key}: {len(cands)} candidates, {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        faiss.omp_set_num_threads(threads)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


def key_of(kind, v, s, lv):
    """The grid's key of one K-means run's ARI (``kind``: "" for all rows, else a SUB_ROWS key)."""
    return (v, s, lv) if not kind else (kind, v, s, lv)


def sample_rows(n, seed, kind="sub", rows=None):
    """``subS``: start ``seed``'s rows (all of them at n <= SUB_ROWS[kind]), as
    ``stages.hierarchy.agreement_level`` draws them."""
    m = rows or SUB_ROWS[kind]
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
    for label, starts in perturbations(kind, S):
        if not rec["cands"]:
            out.append(rec["mod"])
            continue
        if kind in ("faiss", "kcch"):
            scores = {lv: [rec["ari"][("faiss", v, s, lv)] for v, s in starts] if kind == "faiss"
                      else rec["ari"][("kcch", label, lv)] for lv in rec["cands"]}
            out.append(decide(scores, rec["mod"], rule))
            continue
        sub = kind if kind in SUB_ROWS else "sub" if kind in CONSENSUS else ""
        scores = {lv: [rec["ari"][key_of(sub, v, s, lv)] for v, s in starts] for lv in rec["cands"]}
        means = {lv: rec["ari"][(kind, label, lv)] for lv in rec["cands"]} if kind in CONSENSUS else None
        out.append(decide(scores, rec["mod"], rule, means))
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
        rows, moved, moved3, dn, mean_nmi = [], 0, 0, [], {}
        for k, r in recs.items():
            p = picks(r, d)
            nm = [r["nmi"][lv] for lv in p]
            moved += len(set(p)) > 1
            moved3 += len(set(p[:3])) > 1  # the three start blocks only (every design has them)
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
        summary[d] = (moved, moved3, float(np.mean(dn)), whole, sub, mean_nmi)
        if args.rows:
            print(f"\n### {d}\n\n| collection | modularity level | " + " | ".join(labels)
                  + " | mean NMI |\n|---|---|" + "---|" * (len(labels) + 1))
            print("\n".join(rows))
    ref = summary.get(args.today)
    print(f"\n| design | collections whose pick differs | ... across the three start blocks only "
          f"| mean pairwise abs dNMI | whole-set mean NMI | subset mean NMI | worst whole set vs "
          f"{args.today} |\n|---|---|---|---|---|---|---|")
    for d, (moved, moved3, dn, whole, sub, mn) in summary.items():
        worst = min((mn[k] - ref[5][k] for k in keys if k in ls.WHOLE), default=float("nan")) if ref else float("nan")
        print(f"| {d} | {moved}/{len(keys)} | {moved3}/{len(keys)} | {dn:.4f} | {whole:.4f} | {sub:.4f} "
              f"| {worst:+.4f} |")


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
        if kind == "faiss":
            import faiss

            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                Xf = Xn.astype(np.float32)
                for _, s in starts:
                    rows = sample_rows(len(Xf), s, "sub")
                    for lv in cands:
                        lab = faiss_labels(Xf[rows], int(levels[lv].max()) + 1, s)
                        scores[lv].append(adjusted_rand_score(levels[lv][rows], lab))
            finally:
                faiss.omp_set_num_threads(threads)
            return decide(scores, mod, rule)
        means = {} if kind in CONSENSUS else None
        cons_kind = kind in CONSENSUS or kind == "kcch"
        with single_blas_thread():
            views = {v: view(Xn, v, dims) for v in dict.fromkeys(v for v, _ in starts)}
            for lv in cands:
                k = int(levels[lv].max()) + 1
                runs = []
                for v, s in starts:
                    rows = sample_rows(len(Xn), s, "sub" if cons_kind else kind) \
                        if kind in SUB_ROWS or cons_kind else np.arange(len(Xn))
                    km = KMeans(n_clusters=k, n_init=1, random_state=s).fit(views[v][rows])
                    scores[lv].append(adjusted_rand_score(levels[lv][rows], km.labels_))
                    if cons_kind:
                        runs.append(km.predict(views[v]))
                if kind == "kcch":
                    runs, half = np.stack(runs, axis=1), len(starts) // 2
                    scores[lv] = [adjusted_rand_score(levels[lv], consensus("kcc", runs[:, h], k, starts[h][0][1])[1])
                                  for h in (slice(0, half), slice(half, None))]
                if means is not None:
                    rows, cons = consensus(kind, np.stack(runs, axis=1), k, starts[0][1])
                    means[lv] = adjusted_rand_score(levels[lv][rows], cons)
        return decide(scores, mod, rule, means)

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
    ap.add_argument("cmd", choices=["grid", "grid2", "table", "timing"])
    ap.add_argument("--parts", nargs="+", choices=["cons", "faiss"], default=["cons", "faiss"],
                    help="grid2: the consensus designs' numbers, faiss K-means', or both")
    ap.add_argument("--cases", nargs="+", default=["whole", "subsets"])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--designs", nargs="+", choices=list(DESIGNS), default=None, metavar="DESIGN",
                    help="table / timing: these designs only (names below)")
    ap.add_argument("--rows", action="store_true", help="table: a row per collection per design")
    ap.add_argument("--levels", type=Path, default=Path("/tmp/fastcheck/c"),
                    help="fast_layout.py sweep's cache (<key>@base.npz: levels, mod, auto)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/robustcheck/g"))
    ap.add_argument("--timing-set", default="cifar10-test")
    ap.add_argument("--today", default="sub12 sd", choices=list(DESIGNS),
                    help="table: the design the worst-whole-set column compares against (the engine's "
                    "check; 'fixed3 sd' before session 17)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--shared", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quality"))
    ap.add_argument("--vectors-from", type=Path, default=None)
    args = ap.parse_args(argv)
    {"grid": cmd_grid, "grid2": cmd_grid2, "table": cmd_table, "timing": cmd_timing}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
