"""Novelty on small collections: does ``novel`` fire when the fitted collection has a few hundred items?

benchmarks/novelty.py measured collections of 1,000-3,000 fitted items. This script adds a size
axis. Per image set, size n (150, 300, 1,000, 3,000 fitted items) and seed: a quarter of the
classes is held out (as in novelty.py), n items of the other classes are fitted, and at most 500
unseen items of the fitted kinds ("known") and 500 of the held-out kinds ("unknown") are scored.
The cross-dataset case (what the inbox helper hit): a model of CIFAR-10 test's airplane / frog /
truck (``cifar3``) against 500 items of another set.

Only the predictor decides ``novel`` / ``novelty`` (the clusters do not enter them), so each model
is the ``NeighbourPredictor`` a default ``Pipeline`` builds (cosine metric, ``predict_neighbors``
10, ``reference_dims`` 128, every item a reference), fitted directly, in two spaces: ``pca``,
projected on the 128 principal axes at every size (the rule before ``predictor.projects``: the
module's ``PROJECTION_ROWS_PER_AXIS`` set to 0 while it is fitted), and ``raw``, with
``reference_dims=None`` (no projection: scored and calibrated in the L2-normalised 1,280-d space,
leave-self-out, which is unbiased there). What the package answers (``default``) is one of the
two, by ``predictor.projects`` (``raw`` below 4 distinct rows per axis, 512 items); the table
says which. Reported per case: AUROC of the score (mean distance to the 10 nearest references)
for unknown vs known, and TPR / FPR of ``novel`` and of ``novelty >= 0.95`` (mean over the
seeds). Usage::

    python benchmarks/novelty_size.py --write-results [--out DIR-with-extracted-sets]

``--vectors-from DIR`` (development only, refused with ``--write-results``) reads ``DIR/<set>.npz``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Novelty on small collections: the check (novelcheck helper)"
DATASETS = ["imagenette-val", "cifar10-test", "mnist-test", "sports100", "openmoji"]
SIZES = [150, 300, 600, 1000]
CIFAR3 = ["airplane", "frog", "truck"]
VARIANTS = {"pca": 128, "raw": None}
DIMS = 128
PER_SIDE = 500


def fit_predictor(X: np.ndarray, dims, seed: int):
    """The predictor of a default pipeline, projected at any size when ``dims`` is given."""
    from mediacluster import predictor

    n = len(X)
    z = np.zeros(n, dtype=np.int64)
    rule, predictor.PROJECTION_ROWS_PER_AXIS = predictor.PROJECTION_ROWS_PER_AXIS, 0
    try:
        return predictor.NeighbourPredictor(n_neighbors=10, reference_dims=dims, metric="cosine",
                                            random_state=seed).fit(
            X, labels=z, probabilities=np.ones(n), cluster=z, confidence=np.ones(n), embedding=np.zeros((n, 2)))
    finally:
        predictor.PROJECTION_ROWS_PER_AXIS = rule


def default_variant(X: np.ndarray) -> str:
    """Which of the variants the package's own rule gives a collection of these rows."""
    from mediacluster.predictor import projects

    return "pca" if projects(len(np.unique(X, axis=0)), X.shape[1], DIMS) else "raw"


def measure(Xtr, Xknown, Xunknown, seed: int) -> dict:
    from sklearn.metrics import roc_auc_score

    out = {}
    Q = np.concatenate([Xknown, Xunknown])
    lab = np.r_[np.zeros(len(Xknown), bool), np.ones(len(Xunknown), bool)]
    for v, dims in VARIANTS.items():
        p = fit_predictor(Xtr, dims, seed)
        dist, _ = p.kneighbors(Q)
        novel, novelty = p.novelty(dist)
        hi = novelty >= 0.95
        out[v] = [float(roc_auc_score(lab, dist.mean(axis=1))), float(novel[lab].mean()), float(novel[~lab].mean()),
                  float(hi[lab].mean()), float(hi[~lab].mean())]
    out["default"] = out[default_variant(Xtr)]
    out["picks"] = default_variant(Xtr)
    return out


def held_out_case(X, y, n, seed):
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    held = rng.choice(classes, size=max(1, int(len(classes) * 0.25 + 0.5)), replace=False)
    known = rng.permutation(np.flatnonzero(~np.isin(y, held)))
    unknown = rng.permutation(np.flatnonzero(np.isin(y, held)))[:PER_SIDE]
    if len(known) < n + 50:
        return None
    return known[:n], known[n:n + PER_SIDE], unknown


def run(load, sets, sizes, seeds) -> list[dict]:
    rows = []
    data = {s: load(s) for s in dict.fromkeys(sets + ["cifar10-test"])}
    cases = [(s, "held-out classes") for s in sets] + [(f, "cifar3 model") for f in sets if f != "cifar10-test"]
    for n in sizes:
        for s, kind in cases:
            per = []
            for seed in seeds:
                if kind == "held-out classes":
                    X, y = data[s]
                    c = held_out_case(X, y, n, seed)
                    if c is None:
                        continue
                    tr, kn, un = c
                    per.append(measure(X[tr], X[kn], X[un], seed))
                else:
                    X, y = data["cifar10-test"]
                    rng = np.random.default_rng(seed)
                    idx = rng.permutation(np.flatnonzero(np.isin(y, CIFAR3)))
                    if len(idx) < n + 50:
                        continue
                    F = data[s][0]
                    fi = rng.choice(len(F), size=min(PER_SIDE, len(F)), replace=False)
                    per.append(measure(X[idx[:n]], X[idx[n:n + PER_SIDE]], F[fi], seed))
            if not per:
                continue
            row = {"n": n, "set": s if kind != "cifar3 model" else f"cifar3 vs {s}", "seeds": len(per),
                   "picks": "/".join(sorted({p["picks"] for p in per})),
                   **{v: [float(np.mean([p[v][i] for p in per])) for i in range(5)] for v in [*VARIANTS, "default"]}}
            rows.append(row)
            print(f"  n={n} {row['set']}: " + "; ".join(
                f"{v} AUROC {row[v][0]:.3f} novel {row[v][1]:.2f}/{row[v][2]:.3f} n95 {row[v][3]:.2f}/{row[v][4]:.3f}"
                for v in VARIANTS) + f"; default = {row['picks']}", file=sys.stderr, flush=True)
    return rows


def markdown(res: dict) -> str:
    lines = [SECTION, "", f"`{res['command']}` (load average before: {res['loadavg']}, after: {res['loadavg_after']}; "
             f"2 cores shared; seeds {res['seeds']}; {res['finished']}; vectors: {res['source']}).", "",
             "Protocol in benchmarks/novelty_size.py's docstring. `pca`: the predictor a default `Pipeline` built "
             "before `predictor.projects` (PCA 128 at every size); `raw`: the same with `reference_dims=None` (no "
             "projection); `default`: what the package answers now, by `predictor.projects` (column `default is`). "
             "TPR = share of unknown items flagged, FPR = share of unseen items of the fitted kinds flagged (mean over "
             "the seeds).", "",
             "| n fitted | case | default is | AUROC pca / raw | `novel` TPR / FPR pca | `novel` TPR / FPR raw | "
             "`novelty>=0.95` TPR / FPR pca | `novelty>=0.95` TPR / FPR raw |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        t, w = r["pca"], r["raw"]
        lines.append(f"| {r['n']} | {r['set']} | {r['picks']} | {t[0]:.3f} / {w[0]:.3f} | {t[1]:.2f} / {t[2]:.3f} | "
                     f"{w[1]:.2f} / {w[2]:.3f} | {t[3]:.2f} / {t[4]:.3f} | {w[3]:.2f} / {w[4]:.3f} |")
    known = {}  # the FPR once per model (the cifar3 cases share their known items)
    for r in res["rows"]:
        known.setdefault((r["n"], r["set"].split(" vs ")[0] if r["set"].startswith("cifar3") else r["set"]), r)
    lines += ["", "`novel` FPR of what the package answers (`default`), per size: the largest over the sets and the mean "
              "over the sets (each model's known items once):", ""]
    for n in sorted({r["n"] for r in res["rows"]}):
        f = [r["default"][2] for (m, _), r in known.items() if m == n]
        lines.append(f"- {n}: max {max(f):.3f}, mean {np.mean(f):.4f} ({len(f)} models)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    _results.add_data_args(ap)
    ap.add_argument("--vectors-from", type=Path, default=None, help="DEVELOPMENT ONLY: read DIR/<set>.npz")
    ap.add_argument("--write-results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.write_results and args.vectors_from is not None:
        ap.error("--write-results is refused with --vectors-from (the figures must come from the package)")
    import quality  # the same extraction and embedding path as the quality benchmark

    def load(name):
        X, y, _ = quality.load_dataset(name, args.out, args.shared, args.vectors_from, False)
        return X, np.asarray(y)

    res = {**_results.started("novelty_size.py", argv), "seeds": args.seeds,
           "source": ("embedded through the package (default encoder), shared embedding cache"
                      if args.vectors_from is None else f"dev vectors {args.vectors_from}")}
    res["rows"] = run(load, args.datasets, args.sizes, args.seeds)
    _results.finish(res, SECTION, markdown, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
