"""The engine's default level under vector drift (issue 16, session 21).

The default encoder's ONNX copy computes slightly different vectors on another CPU (the last
digits), and the engine's layout (NN-descent / umap-learn) is chaotic in its input, so another
machine fits another tree and may pick another default level. This script measures how much the
default level (``level="auto"``) moves under such drift and scores label-free pick rules on it.

``fit``: for each collection (the whole sets of ``--vectors-from`` and subset draws as
``subsets.py`` draws them) and each drift ``d`` in ``--drifts`` (0: the vectors as they are;
``d > 0``: ``perturb_plugin.perturb`` with seed ``d`` and relative noise ``--scale``, the plugin's
noise model), runs ``reduce_and_cluster(X_d, random_state=0)`` (the engine as ``quality.py``
runs it) and caches its levels, the modularity level, the agreement check's pick, the density
groups, and the check's per-start adjusted Rand indices for ``--starts`` starts (the engine's
first 12, then more) on every candidate level of the check's window (the engine's own
arithmetic: ``agreement_view`` with seed 0, each start's own sample).

``table``: per collection and drift, the auto level (clusters, NMI), the modularity level, the
density groups and the best level; then each pick rule (``RULES``) applied to the cached levels
and start ARIs: mean / worst / spread of its NMI over the drifts, and the adoption bar
(``--baseline`` against each rule).

Commands (engine runs under the engine lock)::

    B="python benchmarks/drift.py --vectors-from /work/vec --cache /tmp/drift"
    flock /tmp/mc-engine.lock $B fit --cases imagenette-val openmoji
    $B table --cases whole subsets --draws 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import level_stability as ls  # noqa: E402  (the benchmarks folder is not a package)
import perturb_plugin  # noqa: E402  (does nothing on import without MC_PERTURB_SEED)
from fast_layout import keys_of  # noqa: E402


def collection(key, args):
    """(vectors, labels) of a whole set, a subset draw, or any other ``--vectors-from`` file
    (cifar10-train)."""
    if key in ls.WHOLE or "#" in key:
        return ls.collection(key, args)
    d = np.load(args.vectors_from / f"{key}.npz", allow_pickle=False)
    return d["vectors"].astype(np.float32), np.asarray(d["labels"]).astype(str)


def drifted(X: np.ndarray, d: int, scale: float) -> np.ndarray:
    """``X`` as another machine might compute it: drift 0 is ``X`` itself."""
    if d == 0:
        return X
    return perturb_plugin.perturb({"v": X}, seed=d, scale=scale)["v"]


def start_aris(levels, cands, vectors, seeds, view):
    """ARI of each candidate level with K-means of its k from each start (``agreement_level``'s
    arithmetic: the same view, sample and K-means per start)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from mediacluster.stages import hierarchy as h
    from mediacluster.stages.cluster import single_blas_thread

    n = len(vectors)
    counts = [int(lv.max()) + 1 for lv in levels]

    def start(job):
        lv, s = job
        k = counts[lv]
        size = max(h.AGREEMENT_ROWS, h.AGREEMENT_PER_CLUSTER * k)
        r = np.sort(np.random.default_rng(s).choice(n, size, replace=False)) if n > size else np.arange(n)
        return adjusted_rand_score(levels[lv][r], KMeans(n_clusters=k, n_init=1, random_state=s).fit(view[r]).labels_)

    jobs = [(lv, s) for lv in cands for s in seeds]
    with single_blas_thread():
        return np.array(h._map_single_threaded(start, jobs)).reshape(len(cands), len(seeds))


def cmd_fit(args):
    from mediacluster.stages import hierarchy as h

    args.cache.mkdir(parents=True, exist_ok=True)
    for key in keys_of(args.cases, args.draws):
        X0, _ = collection(key, args)
        for d in args.drifts:
            p = args.cache / f"{key}@d{d}.npz"
            if p.exists() and not args.force:
                continue
            X = drifted(X0, d, args.scale)
            t = time.process_time()
            res = h.reduce_and_cluster(X, random_state=0)
            cpu = time.process_time() - t
            cl = res["clusterer"]
            levels = np.asarray(cl.levels_)
            counts = np.array([int(lv.max()) + 1 for lv in levels])
            ka = int(counts[cl.modularity_level_])
            cands = [lv for lv, k in enumerate(counts) if ka / h.AGREEMENT_WINDOW <= k <= ka * h.AGREEMENT_WINDOW
                     and 2 <= k < len(X)]
            ari = np.zeros((0, args.starts))
            if len(cands) >= 2:
                view = h.agreement_view(X, 0)
                ari = start_aris(levels, cands, X, list(range(args.starts)), view)
                got = ari[:, :h.AGREEMENT_SEEDS].mean(1)
                want = cl.agreement_scores_[cands, 0]
                assert np.allclose(got, want, atol=1e-12), (key, d, got, want)  # the engine's own numbers
            np.savez_compressed(p, levels=levels.astype(np.int32), auto=cl.auto_level_,
                                mod=cl.modularity_level_, groups_level=cl.groups_level_,
                                n_groups=cl.n_groups_, scores=cl.level_scores_, cands=np.asarray(cands, np.int64),
                                ari=ari, cpu=cpu, load=os.getloadavg()[0])
            print(json.dumps(dict(key=key, drift=d, auto_k=int(counts[cl.auto_level_]), mod_k=ka,
                                  groups=int(cl.n_groups_), cpu=round(cpu, 1),
                                  load=round(os.getloadavg()[0], 1))), flush=True)


def cmd_grid(args):
    """The check's 12 start ARIs (the engine's starts) of every level with
    ``2 <= k <= 2 max(k_mod, n_groups)`` and ``k >= min(k_mod, n_groups) / 2``: what a wider
    window of candidates would see."""
    from mediacluster.stages import hierarchy as h

    for key in keys_of(args.cases, args.draws):
        X0, _ = collection(key, args)
        for d in args.drifts:
            p = args.cache / f"{key}@d{d}.npz"
            g = args.cache / f"{key}@d{d}.grid.npz"
            if not p.exists() or (g.exists() and not args.force):
                continue
            c = load_fit(args, key, d)
            levels = c["levels"]
            counts = np.array([int(lv.max()) + 1 for lv in levels])
            km, ng = int(counts[c["mod"]]), int(c["n_groups"])
            lvls = [lv for lv, k in enumerate(counts)
                    if max(2, min(km, ng) / 2) <= k <= 2 * max(km, ng) and k < len(X0)]
            X = drifted(X0, d, args.scale)
            t = time.process_time()
            ari = start_aris(levels, lvls, X, list(range(h.AGREEMENT_SEEDS)), h.agreement_view(X, 0))
            np.savez_compressed(g, lvls=np.asarray(lvls, np.int64), ari=ari)
            print(json.dumps(dict(key=key, drift=d, levels=[int(counts[v]) for v in lvls],
                                  cpu=round(time.process_time() - t, 1))), flush=True)


# ------------------------------------------------------------------------------------------
# pick rules: (levels, mod level, candidates, start ARIs (n_cands, starts)) -> level
# ------------------------------------------------------------------------------------------
def rule_sd(starts=12, first=0):
    """Today's ``agreement_level``: the best mean beats the modularity level by more than the
    sum of their sds (over ``starts`` starts)."""
    def pick(c):
        cands, A = c["cands"], c["ari"][:, first:first + starts]
        if len(cands) < 2 or c["mod"] not in list(cands):
            return c["mod"]
        m, s = A.mean(1), A.std(1, ddof=1)
        i_a = list(cands).index(c["mod"])
        b = max(range(len(cands)), key=lambda i: (round(float(m[i]), 6), i == i_a))
        return int(cands[b]) if b != i_a and m[b] - m[i_a] > s[b] + s[i_a] else int(c["mod"])
    return pick


def rule_mod(c):
    return int(c["mod"])


def rule_argmax(starts=12):
    """The best-agreeing candidate, no noise guard."""
    def pick(c):
        cands, A = c["cands"], c["ari"][:, :starts]
        if len(cands) < 2 or c["mod"] not in list(cands):
            return c["mod"]
        return int(cands[int(np.argmax(A.mean(1)))])
    return pick


def rule_paired(starts=24):
    """Move to the best-agreeing candidate when its per-start gain over the modularity level
    has a mean above its sd."""
    def pick(c):
        cands, A = c["cands"], c["ari"][:, :starts]
        if len(cands) < 2 or c["mod"] not in list(cands):
            return c["mod"]
        i_a = list(cands).index(c["mod"])
        b = int(np.argmax(A.mean(1)))
        g = A[b] - A[i_a]
        return int(cands[b]) if b != i_a and g.mean() > g.std(ddof=1) else int(c["mod"])
    return pick


def rule_up(c, starts=12):
    """Today's rule with the window's upper end raised to twice the density groups' count when
    that is larger (the lower end stays half the modularity level's): modularity's known error
    is its resolution limit (too coarse); the density groups have none. ``starts``: only the
    first this many of the check's starts (fewer K-means runs; fitspeed helper)."""
    if "g_lvls" not in c:
        raise KeyError("no grid")
    counts = [int(lv.max()) + 1 for lv in c["levels"]]
    km = counts[c["mod"]]
    keep = [i for i, lv in enumerate(c["g_lvls"]) if counts[lv] >= km / 2]
    return rule_wide()(c | {"g_lvls": c["g_lvls"][keep], "g_ari": c["g_ari"][keep][:, :starts]})


def rule_wide(guard=True):
    """Today's rule over a window that spans both of the engine's label-free counts: from half
    the smaller to twice the larger of the modularity level's and the density groups' (the
    grid's levels; today's window is centred on the modularity level alone)."""
    def pick(c):
        if "g_lvls" not in c:
            raise KeyError("no grid")
        cands, A = list(c["g_lvls"]), c["g_ari"]
        if len(cands) < 2 or c["mod"] not in cands:
            return c["mod"]
        m, s = A.mean(1), A.std(1, ddof=1)
        i_a = cands.index(c["mod"])
        b = max(range(len(cands)), key=lambda i: (round(float(m[i]), 6), i == i_a))
        if not guard:
            return int(cands[b])
        return int(cands[b]) if b != i_a and m[b] - m[i_a] > s[b] + s[i_a] else int(c["mod"])
    return pick


RULES = {
    "today": rule_sd(12),
    "mod": rule_mod,
    "sd24": rule_sd(24),
    "argmax12": rule_argmax(12),
    "argmax24": rule_argmax(24),
    "paired24": rule_paired(24),
    "up": rule_up,
    "up8": lambda c: rule_up(c, 8),
    "up6": lambda c: rule_up(c, 6),
    "up4": lambda c: rule_up(c, 4),
    "wide": rule_wide(),
    "wide_argmax": rule_wide(False),
}


def load_fit(args, key, d):
    z = np.load(args.cache / f"{key}@d{d}.npz")
    out = {k: z[k] for k in z.files} | {"mod": int(z["mod"]), "auto": int(z["auto"])}
    g = args.cache / f"{key}@d{d}.grid.npz"
    if g.exists():
        z = np.load(g)
        out |= {"g_lvls": z["lvls"], "g_ari": z["ari"]}
    return out


def nmi(y, lab):
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(y, lab))


def cmd_table(args):
    keys = keys_of(args.cases, args.draws)
    rules = args.rules or list(RULES)
    per = {}  # (key, rule) -> [nmi per drift]
    print("| collection | drift | density groups | modularity level: k, NMI | today's check's pick: k, NMI | best: k, NMI |")
    print("|---|---|---|---|---|---|")
    for key in keys:
        _, y = collection(key, args)
        for d in args.drifts:
            if not (args.cache / f"{key}@d{d}.npz").exists():
                continue
            c = load_fit(args, key, d)
            lv = c["levels"]
            sc = [nmi(y, x) for x in lv]
            k = [int(x.max()) + 1 for x in lv]
            b = int(np.argmax(sc))
            t = RULES["today"](c)
            print(f"| {key} | {d} | {int(c['n_groups'])} | {k[c['mod']]}, {sc[c['mod']]:.3f} | "
                  f"{k[t]}, {sc[t]:.3f} | {k[b]}, {sc[b]:.3f} |")
            for r in rules:
                try:
                    lvl = RULES[r](c)
                except KeyError:
                    continue
                per.setdefault((key, r), []).append((sc[lvl], k[lvl]))
            per.setdefault((key, "best"), []).append((sc[b], k[b]))
    print()
    cols = rules + ["best"]
    print("| collection | " + " | ".join(f"{r}: mean / worst / spread (k per drift)" for r in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    keys = [k for k in keys if all(len(per.get((k, r), [])) == len(per.get((k, "best"), [])) > 0 for r in cols)]
    for key in keys:
        cells = []
        for r in cols:
            v = np.array([x for x, _ in per[key, r]])
            ks = "/".join(str(k) for _, k in per[key, r])
            cells.append(f"{v.mean():.3f} / {v.min():.3f} / {v.max() - v.min():.3f} ({ks})")
        print(f"| {key} | " + " | ".join(cells) + " |")
    print()
    print("| rule | whole mean | subset mean | all mean | mean spread | worst whole-set worst vs baseline | picks that move |")
    print("|---|---|---|---|---|---|---|")
    for r in cols:
        def agg(ks, f, r=r):
            v = [f(np.array([x for x, _ in per[k, r]])) for k in ks if (k, r) in per]
            return float(np.mean(v)) if v else float("nan")
        whole = [k for k in keys if k in ls.WHOLE]
        sub = [k for k in keys if k not in ls.WHOLE]
        worst = min((np.min([x for x, _ in per[k, r]]) - np.min([x for x, _ in per[k, args.baseline]])
                     for k in whole if (k, r) in per), default=float("nan"))
        moves = sum(len({kk for _, kk in per[k, r]}) > 1 for k in keys if (k, r) in per)
        print(f"| {r} | {agg(whole, np.mean):.4f} | {agg(sub, np.mean):.4f} | {agg(keys, np.mean):.4f} | "
              f"{agg(keys, lambda v: v.max() - v.min()):.4f} | {worst:+.4f} | {moves}/{sum((k, r) in per for k in keys)} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["fit", "grid", "table"])
    ap.add_argument("--cases", nargs="+", default=["whole"])
    ap.add_argument("--draws", type=int, default=1)
    ap.add_argument("--drifts", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--scale", type=float, default=1e-6, help="relative noise of a drift")
    ap.add_argument("--starts", type=int, default=24, help="fit: check starts cached per candidate")
    ap.add_argument("--rules", nargs="+", choices=list(RULES))
    ap.add_argument("--baseline", default="today")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/drift"))
    ap.add_argument("--shared", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/quality"))
    ap.add_argument("--vectors-from", type=Path, default=None)
    args = ap.parse_args(argv)
    from mediacluster.fileio import setup_numba_cache

    setup_numba_cache()
    {"fit": cmd_fit, "grid": cmd_grid, "table": cmd_table}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
