"""Tuning benchmark: fast tuner vs the naive loop, samplers, and objective vs the NMI oracle.

Full mode (the issue's claim): CIFAR-10 train (50,000 images) embedded by the default encoder
through the package (the shared embedding cache), 100 TPE trials over the
seed-study space. ``--quick``: CIFAR-10 test (10,000 images).

    python benchmarks/tuning.py --quick            # ~CIFAR-10 test
    python benchmarks/tuning.py                    # CIFAR-10 train, 50k
    python benchmarks/tuning.py --quick --vectors /work/devcache/cifar10-test.npz   # dev shortcut

Parts (``--parts``):
  study    N TPE trials (``--trials``) with the fast tuner; wall time, per trial, work reused.
  naive    ``--naive-trials`` trials done the naive way on the same data, same parameters as the
           study's first trials: umap-learn from raw vectors (its own NNDescent/exact graph),
           scikit-learn LOF, hdbscan, full (unsampled) silhouette. -> speed-up ratio.
  samplers every sampler, ``--repeats`` runs of ``--compare-trials`` trials on a
           ``--compare-n`` subsample; median and range of the best objective, time.
  oracle   for every objective: NMI of the trial it selects vs the best NMI of any trial
           (labels are recorded per trial, never optimised). Read from the finished studies.
  grid     how the default objective was chosen: a fixed grid of UMAP x HDBSCAN settings
           (``GRID_REDUCERS`` x min_cluster_size x min_samples x eom/leaf) on a labelled
           ``--grid-n`` subsample, every trial scored, then every objective's pick vs the
           NMI oracle over the same trials (``python benchmarks/tuning.py --quick --parts grid``).

Results (JSON) go to benchmarks/out/tuning-<mode>/results.json; the tables printed at the end
are what benchmarks/RESULTS.md quotes, with the load average at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
SHARED = _results.SHARED


def load_data(args):
    """(vectors, labels, how) for the chosen mode."""
    if args.vectors:
        f = np.load(args.vectors, allow_pickle=False)
        return f["vectors"].astype(np.float32), [str(v) for v in f["labels"]], f"vectors file {args.vectors}"
    from mediacluster.datasets import extract_slice
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    split = "test" if args.quick else "train"
    dest = OUT / f"cifar10-{split}"
    if not dest.exists() or not any(dest.iterdir()):
        extract_slice(SHARED / "cifar10-test.tar.gz" if split == "test" else SHARED / "cifar10-train.tar.gz",
                      dest)
    coll = collect(dest, labels_from_folders=True)
    emb = embed_collection(coll, progress=True)  # the shared embedding cache
    return emb.vectors.astype(np.float32), list(emb.labels), f"CIFAR-10 {split} via mediacluster (shared cache)"


def seed_space(n: int, scale: bool) -> dict | str:
    """The seed study's space; ``scale`` keeps its neighbourhood sizes as the same *share* of
    the data (100-2000 of 50k) when the data set is smaller (grid values scaled alike)."""
    if not scale or n >= 50000:
        return "seed-study"
    from mediacluster.tune.space import preset

    f = n / 50000
    spec = preset("seed-study", 50000).to_dict()
    for key, lo_min in (("reducer__n_neighbors", 5), ("outliers__n_neighbors", 2)):
        d = spec[key]
        lo, hi = d["int"]
        d["int"] = [max(lo_min, round(lo * f)), max(lo_min + 1, round(hi * f))]
        d["grid"] = sorted({min(d["int"][1], max(d["int"][0], round(g * f))) for g in d["grid"]})
    spec["clusterer__min_cluster_size"] = max(5, round(0.01 * n))
    return spec


def start_pipeline(seed: int = 0):
    """The pipeline every study starts from; the presets name all three stages."""
    from mediacluster.pipeline import Pipeline

    return Pipeline(random_state=seed)


def run_study(X, y, space, out, args, sampler="tpe", n_trials=None, seed=0, objective="default"):
    from mediacluster.tune import tune

    t = time.perf_counter()
    kw = {} if args.layout_epochs == "default" else {
        "layout_epochs": None if args.layout_epochs == "umap" else
        [int(e) for e in args.layout_epochs.split(",")] if "," in args.layout_epochs else int(args.layout_epochs)}
    if args.promote_full != "default":
        kw["promote_full"] = args.promote_full
    if args.knn_method != "default":
        kw["knn_method"] = args.knn_method
    if args.leader_margin is not None:
        kw["leader_margin"] = args.leader_margin
    if args.umap_init != "default":
        kw["umap_init"] = None if args.umap_init == "stage" else args.umap_init
    res = tune(X, start_pipeline(seed), out=out, space=space, sampler=sampler, objective=objective,
               n_trials=n_trials or args.trials, seed=seed, labels=y, n_jobs=args.jobs,
               timeout=args.timeout, progress=not args.quiet, refit=False, **kw)
    wall = time.perf_counter() - t
    return res, wall


def part_naive(X, study, n_naive, seed=0):
    """The naive trial: everything from raw vectors, full silhouette."""
    from sklearn.metrics import silhouette_score

    from mediacluster.tune.workspace import configure

    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")][:n_naive]
    rows = []
    fixed = {k: v["fixed"] for k, v in study.user_attrs["space"].items() if "fixed" in v}
    start = start_pipeline(seed).concrete(len(X))
    for t in done:
        params = fixed | t.params
        c0 = time.process_time()
        t0 = time.perf_counter()
        pipe = configure(start, params, seed).fit(X)
        t1 = time.perf_counter()
        lab = pipe.labels_
        m = lab >= 0
        sil = float(silhouette_score(pipe.embedding_[m], lab[m])) if len(set(lab[m].tolist())) >= 2 else None
        t2 = time.perf_counter()
        rows.append({"trial": t.number, "params": t.params, "fit_s": t1 - t0, "silhouette_full_s": t2 - t1,
                     "total_s": t2 - t0, "cpu_s": time.process_time() - c0, "silhouette": sil, "timings": pipe.timings_})
        print(f"naive trial {t.number}: {t2 - t0:.1f} s (fit {t1 - t0:.1f}, full silhouette {t2 - t1:.1f})",
              flush=True)
    return rows


GRID_REDUCERS = [(15, 5), (30, 10), (60, 10), (100, 5), (30, 2)]  # (n_neighbors, n_components)


def part_grid(X, y, n, out_json: Path, seed=1):
    """Score a fixed grid of settings on a labelled subsample; returns per-trial records."""
    import itertools

    from mediacluster import metrics as M
    from mediacluster.tune.space import SearchSpace
    from mediacluster.tune.workspace import Workspace

    rng = np.random.default_rng(seed)
    if n < len(X):
        idx = np.sort(rng.choice(len(X), n, replace=False))
        X, y = X[idx], [y[i] for i in idx]
    sp = SearchSpace.from_dict({"reducer": "umap", "reducer__n_neighbors": {"int": [10, 100]},
                                "outliers": None, "clusterer": "hdbscan",
                                "clusterer__min_cluster_size": {"int": [5, 500]}}).clamp_to(len(X))
    ws = Workspace(X, sp, start_pipeline(0), seed=0, cache_dir=out_json.parent / "grid-cache")
    N = len(X)
    mcs_vals = sorted({max(5, int(N * q)) for q in (0.002, 0.005, 0.01, 0.02, 0.04, 0.08)})
    rows = json.loads(out_json.read_text()) if out_json.exists() else []
    seen = {json.dumps(r["params"], sort_keys=True) for r in rows}
    for nn, nc in GRID_REDUCERS:
        for mcs, ms, meth in itertools.product(mcs_vals, [None, 5, 25], ["eom", "leaf"]):
            p = {"reducer": "umap", "outliers": None, "clusterer": "hdbscan",
                 "reducer__n_neighbors": nn, "reducer__n_components": nc,
                 "clusterer__min_cluster_size": mcs, "clusterer__min_samples": ms,
                 "clusterer__cluster_selection_method": meth}
            if json.dumps(p, sort_keys=True) in seen:
                continue
            o = ws.run(p)
            m = {k: v for k, v in o.metrics.items() if k != "params_used"}
            e = M.external_scores(y, o.labels)
            m.update(params=p, nmi=e["all"]["nmi"], ari=e["all"]["ari"])
            rows.append(m)
            print(f"grid {p} -> {m['n_clusters']} clusters, coverage {m['coverage']:.2f}, NMI {m['nmi']:.3f}",
                  flush=True)
        out_json.write_text(json.dumps(rows, default=str))
    return rows


def pick_vs_oracle(rows: list[dict], nmi: str = "ext_nmi", tag: str | None = None) -> dict:
    """For every objective: the NMI of the row it picks vs the best NMI of any row (the oracle).
    ``rows`` are per-trial score dicts; ``tag`` names a field (trial number, params) to report
    with the oracle and each pick."""
    from mediacluster.tune.objectives import OBJECTIVES

    oracle = max(rows, key=lambda m: m[nmi])
    out = {"n_trials": len(rows), "oracle_nmi": oracle[nmi], "oracle_clusters": oracle.get("n_clusters"),
           "objectives": {}}
    if tag:
        out[f"oracle_{tag}"] = oracle[tag]
    for name, fn in OBJECTIVES.items():
        pick = max(rows, key=fn)
        out["objectives"][name] = {"nmi": pick[nmi], "gap": oracle[nmi] - pick[nmi],
                                   "clusters": pick.get("n_clusters"), "coverage": pick.get("coverage")}
        if tag:
            out["objectives"][name][tag] = pick[tag]
    return out


def grid_table(rows: list) -> dict:
    return pick_vs_oracle(rows, nmi="nmi", tag="params")


def oracle_table(studies: list) -> dict:
    """Per objective: NMI of its pick vs the best NMI among the same complete trials."""
    rows = [t.user_attrs | {"trial": t.number} for s in studies for t in s.trials
            if t.state.name == "COMPLETE" and t.user_attrs.get("ext_nmi") is not None]
    return pick_vs_oracle(rows, tag="trial") if rows else {}


def levels_table(study) -> dict:
    """Per fidelity level: trials that ran it, their summed and mean compute time, and how well
    the level ranks trials the way the next level does (Spearman, trials that ran both)."""
    from scipy.stats import spearmanr

    trials = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    keys = sorted({k for t in trials for k in t.user_attrs if k.startswith("rung")})
    levels = [*keys, "full"]

    def metrics(t, key):  # a trial's recorded scores at a level, None if it never ran there
        if key == "full":
            return t.user_attrs if t.state.name == "COMPLETE" else None
        return t.user_attrs.get(key)

    def value(t, key):  # its objective there
        m = metrics(t, key)
        return None if m is None else (t.value if key == "full" else m["objective"])

    out = {}
    for i, key in enumerate(levels):
        ms = [m for t in trials if (m := metrics(t, key))]
        if not ms:
            continue
        times = [m.get("time_total_s") or 0.0 for m in ms]
        row = {"items": ms[0].get("n_items"), "trials": len(ms), "time_sum_s": sum(times),
               "time_mean_s": sum(times) / len(ms)}
        if i + 1 < len(levels):
            nxt = levels[i + 1]
            pairs = [(value(t, key), value(t, nxt)) for t in trials
                     if value(t, key) is not None and value(t, nxt) is not None]
            if len(pairs) >= 3:
                row[f"spearman_vs_{nxt}"] = float(spearmanr(*zip(*pairs)).statistic)
                row[f"pairs_vs_{nxt}"] = len(pairs)
        out[key] = row
    return out


def rung_oracle_table(study, key="rung0") -> dict:
    """The oracle comparison on the cheapest rung, where *every* trial was scored (NMI of the
    subsample's labels against its true labels)."""
    rows = [t.user_attrs[key] for t in study.trials
            if key in t.user_attrs and t.user_attrs[key].get("ext_nmi") is not None]
    if not rows:
        return {}
    return pick_vs_oracle(rows) | {"items": rows[0].get("n_items")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CIFAR-10 test (10k) instead of train (50k)")
    ap.add_argument("--vectors", default=None, help="npz with vectors+labels instead of embedding (dev only)")
    ap.add_argument("--parts", default="study,naive,samplers,oracle")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--naive-trials", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--space", default=None,
                    help="search space for the study part (default: the seed study's, see --no-scale-space)")
    ap.add_argument("--no-scale-space", action="store_true",
                    help="quick mode: use the literal seed-study ranges (default scales them to n/50k)")
    ap.add_argument("--compare-n", type=int, default=3000)
    ap.add_argument("--compare-trials", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=8, help="at most this many rounds (the study ran 8)")
    ap.add_argument("--compare-budget", type=float, default=1800,
                    help="seconds for the sampler comparison; no round starts that would not fit")
    ap.add_argument("--samplers", default="tpe,random,grid,gp,cmaes,nsga2")
    ap.add_argument("--grid-n", type=int, default=4000)
    ap.add_argument("--layout-epochs", default="default",
                    help="tune(layout_epochs=): a number, one per level ('100,50,100'), 'umap' "
                         "(umap-learn's count) or 'default'")
    ap.add_argument("--promote-full", default="default", choices=["default", "leader", "halving"],
                    help="tune(promote_full=): which trials of the last rung go on to the full size")
    ap.add_argument("--leader-margin", type=float, default=None,
                    help="tune(leader_margin=): standard errors a new leader must be ahead (default: the tuner's)")
    ap.add_argument("--knn-method", default="default", choices=["default", "auto", "exact", "svd"],
                    help="tune(knn_method=): the input graph's search")
    ap.add_argument("--umap-init", default="default",
                    help="tune(umap_init=): pca, spectral, ... or 'stage' (the stage's own)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else OUT / f"tuning-{mode}"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["command"] = " ".join([sys.executable.split("/")[-1], *sys.argv])
    results["loadavg_start"] = os.getloadavg()

    def save():
        results["loadavg_now"] = os.getloadavg()
        results_path.write_text(json.dumps(results, indent=2, default=str))

    t = time.perf_counter()
    X, y, how = load_data(args)
    results["data"] = {"how": how, "n": len(X), "dims": int(X.shape[1]), "load_s": time.perf_counter() - t}
    print(f"data: {how}: {X.shape}", flush=True)
    space = args.space or seed_space(len(X), not args.no_scale_space)
    results["space"] = space
    studies = []
    study_levels = None  # the study part's levels table, reused by the oracle part

    if "study" in parts or "naive" in parts:
        cpu0 = time.process_time()
        res, wall = run_study(X, y, space, out / "study-tpe", args)
        s = res.summary
        n_run = s["timing"]["trials_this_run"]
        results["study"] = {
            "wall_s": wall, "trials_this_run": n_run, "states": s["states"],
            "per_trial_s": wall / max(1, n_run), "graph_s": s["timing"]["graph_s"],
            "workspace": s["workspace"], "best_value": s["best_value"], "best_params": s["best_params"],
            "best_nmi": s["best_metrics"].get("ext_nmi"), "best_clusters": s["best_metrics"].get("n_clusters"),
            "best_coverage": s["best_metrics"].get("coverage"), "loadavg": os.getloadavg(),
            "layout_epochs": res.study.user_attrs.get("layout_epochs"),
            "umap_init": res.study.user_attrs.get("umap_init"),
            "promote_full": res.study.user_attrs.get("promote_full"),
            "leader_margin": res.study.user_attrs.get("leader_margin"),
            "knn_method": res.study.user_attrs.get("knn_method"),
            "cpu_s_trials": sum(t.user_attrs.get("cpu_s", 0.0) for t in res.study.trials),
            "cpu_s_process": time.process_time(),
        }
        # CPU of the whole study: this process (graph, its trials, overhead) + the trials the
        # worker processes ran (each trial records its process id and CPU seconds)
        results["study"]["cpu_s_total"] = time.process_time() - cpu0 + sum(
            t.user_attrs.get("cpu_s", 0.0) for t in res.study.trials
            if t.user_attrs.get("pid") not in (None, os.getpid()))
        results["study"]["levels"] = study_levels = levels_table(res.study)
        results["study"]["trials_per_level"] = s.get("trials_per_level")
        studies.append(res.study)
        print(f"fast study: {n_run} trials in {wall:.0f} s ({wall / max(1, n_run):.1f} s/trial); "
              f"states {s['states']}", flush=True)
        save()
        if "naive" in parts:
            rows = part_naive(X, res.study, args.naive_trials)
            per = statistics.mean(r["total_s"] for r in rows)
            cpu = statistics.mean(r["cpu_s"] for r in rows)
            n_t = max(1, results["study"]["trials_this_run"])
            results["naive"] = {"trials": rows, "per_trial_s": per, "loadavg": os.getloadavg(),
                                "cpu_per_trial_s": cpu,
                                "speedup_cpu": cpu / (results["study"]["cpu_s_total"] / n_t),
                                "speedup": per / results["study"]["per_trial_s"],
                                "naive_100_trials_s": 100 * per}
            print(f"naive: {per:.1f} s/trial -> speed-up x{results['naive']['speedup']:.1f}", flush=True)
            save()

    if "samplers" in parts:
        # the study's comparison: every sampler, repeated with new seeds; whole rounds (one run of
        # every sampler) until --compare-budget seconds have passed, so all samplers get the same
        # number of repeats ("as many repeats as fit in 30 minutes")
        from mediacluster.tune.objectives import OBJECTIVES

        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(X), min(args.compare_n, len(X)), replace=False))
        Xs, ys = X[idx], [y[i] for i in idx]
        sp = seed_space(len(Xs), True)
        names = args.samplers.split(",")
        runs = {name: [] for name in names}
        t_start = time.perf_counter()
        for r in range(args.repeats):
            elapsed = time.perf_counter() - t_start
            if r > 0 and elapsed + elapsed / r > args.compare_budget:
                break  # another round (at the mean round time so far) would not fit
            for sampler in names:
                res, wall = run_study(Xs, ys, sp, out / f"samplers/{sampler}-{r}", args, sampler=sampler,
                                      n_trials=args.compare_trials, seed=100 + r)
                if isinstance(res.best_value, list):  # Pareto mode: the default objective of the pick
                    bv = OBJECTIVES["default"](res.study.trials[res.best_trial].user_attrs)
                else:
                    bv = res.best_value
                runs[sampler].append({"best": bv, "time_s": wall,
                                      "nmi": res.study.trials[res.best_trial].user_attrs.get("ext_nmi")})
                studies.append(res.study)
                print(f"sampler {sampler} repeat {r}: best {bv:.4f} in {wall:.0f} s", flush=True)
            table = {}
            for sampler, rr in runs.items():
                bests = [x["best"] for x in rr]
                table[sampler] = {"best_median": statistics.median(bests), "best_min": min(bests),
                                  "best_max": max(bests),
                                  "time_median_s": statistics.median(x["time_s"] for x in rr),
                                  "repeats": len(rr), "runs": rr}
            results["samplers"] = {"n": len(Xs), "trials": args.compare_trials, "table": table,
                                   "jobs": args.jobs, "budget_s": args.compare_budget,
                                   "elapsed_s": time.perf_counter() - t_start, "loadavg": os.getloadavg()}
            save()
        for sampler, row in results.get("samplers", {}).get("table", {}).items():
            print(f"  {sampler:7s} best median {row['best_median']:.4f} range [{row['best_min']:.4f}, "
                  f"{row['best_max']:.4f}] over {row['repeats']} runs, median {row['time_median_s']:.0f} s")

    if "grid" in parts:
        rows = part_grid(X, y, args.grid_n, out / f"grid-{len(X)}-{args.grid_n}.json")
        results["grid"] = grid_table(rows)
        save()
        g = results["grid"]
        print(f"\ngrid: {g['n_trials']} settings, oracle NMI {g['oracle_nmi']:.3f} ({g['oracle_clusters']} clusters)")
        for name, r in g["objectives"].items():
            print(f"  {name:20s} NMI {r['nmi']:.3f}  gap {r['gap']:.3f}  clusters {r['clusters']}  "
                  f"coverage {r['coverage']:.2f}")

    if "oracle" in parts:
        if not studies:
            import optuna

            for db in sorted(out.glob("**/study.db")):
                studies.append(optuna.load_study(study_name="mediacluster", storage=f"sqlite:///{db}"))
        results["oracle"] = oracle_table(studies[:1])
        results["oracle_all_studies"] = oracle_table(studies)
        results["oracle_rung0"] = rung_oracle_table(studies[0])
        results["levels"] = study_levels or levels_table(studies[0])
        save()
        for lev, row in results["levels"].items():
            print(f"level {lev}: {row}")
        for key in ("oracle", "oracle_rung0", "oracle_all_studies"):
            o = results[key]
            if not o:
                continue
            print(f"\n{key}: {o['n_trials']} complete trials, oracle NMI {o['oracle_nmi']:.3f} "
                  f"({o['oracle_clusters']} clusters)")
            for name, r in o["objectives"].items():
                print(f"  {name:20s} NMI {r['nmi']:.3f}  gap {r['gap']:.3f}  clusters {r['clusters']}  "
                      f"coverage {r['coverage']:.2f}")
    save()
    print(f"\nresults: {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
