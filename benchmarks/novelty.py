"""Novelty benchmark: does a model flag items of kinds its collection lacks? (open-set recognition)

Protocol, per image set and per seeded split: hold out a quarter of the classes entirely
(3 of 10; 25 of 100 for Sports-100); the items of the other ("known") classes are shuffled into a
training part (60%, at most ``--train-max``), a calibration part (15%, at most 600; known kinds,
never fitted) and a test part (25%, at most 1,000: known kinds, unseen items); the held-out
classes' items (at most 1,000) are the unknown kinds. The default ``Pipeline(random_state=seed)``
is fitted on the training part; then every candidate score is computed for the test items, and
its AUROC for unknown-vs-known is reported (1.0: every unknown item scores above every known one;
0.5: no separation). Candidates (higher = more novel):

* ``today``       mean distance to the k (``predict_neighbors``, 10) nearest reference items in
                  the predictor's space (L2-normalised, PCA 128): the score behind ``novel``
* ``cos k=1``     cosine distance to the nearest training item, raw L2-normalised vectors
* ``cos mean k``  mean cosine distance to the k nearest training items, raw vectors
* ``per-cluster`` ``today`` divided by the median ``today`` (leave-self-out) of the training
                  items of the cluster the item is assigned to (each cluster's own spread)
* ``1-probability`` / ``1-confidence``  of ``predict_details`` (the vote's membership)
* ``UMAP dist``   mean distance of the item's reduced coordinates (``embedding``) to its k nearest
                  training items' coordinates
* ``LOF raw``     scikit-learn ``LocalOutlierFactor(novelty=True, n_neighbors=20, metric cosine)``
                  fitted on the training vectors, ``-score_samples`` (a local density ratio)

Thresholds (the flag as decided; TPR = share of unknown-kind items flagged, FPR = share of
known-kind test items flagged):

* ``q99 train`` the rule before this benchmark: above the 99% quantile of the training items'
  leave-self-out score (for ``today``: in the predictor's projected space, as the model did)
* ``q95 train`` the same at 95%
* ``conformal 1%`` / ``5%`` split conformal: above all but 1% / 5% of the calibration items'
  scores (the ``ceil((n+1)(1-alpha))``-th smallest), which states its false-positive rate: at
  most alpha for items exchangeable with the calibration items
* ``model novel`` / ``model novelty>=0.95`` (``today`` only): the fitted model's own answers,
  ``predict_details(...)["novel"]`` and its ``novelty`` thresholded at 0.95
* ``TPR@FPR1%`` / ``5% (oracle)`` the share of unknown items above the 99% / 95% quantile of the
  known test items' scores: what a threshold chosen with the answers would reach

Data: each set read as ``benchmarks/quality.py`` reads it (extracted from ``../shared/datasets``
into ``--out``, embedded through the package with the default encoder and the shared embedding
cache, so a rerun does not re-embed). Usage::

    flock /tmp/mc-bench.lock python benchmarks/novelty.py --write-results

``--vectors-from DIR`` (development only, refused with ``--write-results``) reads
``DIR/<set>.npz`` instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Novelty: kinds the collection lacks (novelty helper)"
DATASETS = ["imagenette-val", "cifar10-test", "mnist-test", "sports100", "openmoji", "cifar10-train"]
SCORES = ["today", "PCA+residual", "cos k=1", "cos mean k", "per-cluster", "1-probability", "1-confidence", "UMAP dist",
          "LOF raw"]
THRESHOLDS = ["q99 train", "q95 train", "conformal 1%", "conformal 5%", "model novel", "model novelty>=0.95",
              "TPR@FPR1% (oracle)", "TPR@FPR5% (oracle)"]
HOLD_OUT = 0.25  # share of the classes held out (rounded half up: 3 of 10, 25 of 100)
ALPHA = 0.05


def split(labels: np.ndarray, seed: int, train_max: int):
    """(train, calib, test_known, test_unknown) index arrays and the held-out classes."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    n_out = max(1, int(len(classes) * HOLD_OUT + 0.5))
    held = rng.choice(classes, size=n_out, replace=False)
    unknown = np.flatnonzero(np.isin(labels, held))
    known = rng.permutation(np.flatnonzero(~np.isin(labels, held)))
    n = len(known)
    a, b = int(0.6 * n), int(0.75 * n)
    train, calib, test = known[:a][:train_max], known[a:b][:600], known[b:][:1000]
    unknown = rng.permutation(unknown)[:1000]
    return train, calib, test, unknown, sorted(str(h) for h in held)


def _knn_cos(R: np.ndarray, Q: np.ndarray, k: int, leave_self_out: bool = False) -> np.ndarray:
    """Cosine distances (m, k) of each row of Q to its k nearest rows of R (both L2-normalised)."""
    import faiss  # exact inner-product search, the same library the predictor uses

    index = faiss.IndexFlatIP(R.shape[1])
    index.add(np.ascontiguousarray(R, dtype=np.float32))
    sim, _ = index.search(np.ascontiguousarray(Q, dtype=np.float32), k + int(leave_self_out))
    return 1.0 - (sim[:, 1:] if leave_self_out else sim)


def scores_for(pipe, Xtr: np.ndarray, Q: np.ndarray, lof) -> dict:
    """Every candidate score of the rows of Q (higher = more novel) and today's flag."""
    from mediacluster.data import l2_normalize

    pred = pipe.predictor_
    k = int(pred.n_neighbors)
    det = pipe.predict_details(Q)
    dist, _ = pred.kneighbors(Q)
    today = dist.mean(axis=1)
    Rn, Qn = l2_normalize(Xtr), l2_normalize(Q)
    cos = _knn_cos(Rn, Qn, k)
    # each cluster's own spread: the median leave-self-out score of its training items
    spread = pipe._novelty_spread if hasattr(pipe, "_novelty_spread") else None
    if spread is None:
        d_tr, _ = pred._neighbours(pred.ref_vectors_, k + 1)
        own = d_tr[:, 1:].mean(axis=1)
        cl = np.asarray(pipe.cluster_)[pred.ref_index_]
        spread = {int(c): float(np.median(own[cl == c])) for c in np.unique(cl)}
        spread["all"] = float(np.median(own))
        pipe._novelty_spread = spread
    per = today / np.array([spread.get(int(c), spread["all"]) or spread["all"] for c in det["cluster"]])
    E = np.asarray(pipe.embedding_, dtype=np.float32)
    e = np.asarray(det["embedding"], dtype=np.float32)
    d2 = ((e[:, None, :] - E[None, :, :]) ** 2).sum(-1) if len(e) * len(E) < 2e7 else None
    if d2 is None:
        from sklearn.neighbors import NearestNeighbors

        umap_d = NearestNeighbors(n_neighbors=k).fit(E).kneighbors(e)[0].mean(axis=1)
    else:
        umap_d = np.sqrt(np.sort(d2, axis=1)[:, :k]).mean(axis=1)
    return {"today": today, "PCA+residual": _pca_residual(pred, Xtr, Q), "cos k=1": cos[:, 0],
            "cos mean k": cos.mean(axis=1), "per-cluster": per,
            "1-probability": 1.0 - det["probabilities"], "1-confidence": 1.0 - det["confidence"],
            "UMAP dist": umap_d, "LOF raw": -lof.score_samples(Qn), "_novel": det["novel"],
            "_novelty": np.asarray(det.get("novelty", np.full(len(Q), np.nan)), dtype=np.float64)}


def _residual(pred, X):
    from mediacluster.data import l2_normalize

    Xn = l2_normalize(X) if pred.ref_normalize_ else X
    if pred.ref_components_ is None:
        return np.zeros(len(X))
    c = Xn - pred.ref_mean_
    p = c @ pred.ref_components_.T
    return np.sqrt(np.maximum((c * c).sum(1) - (p * p).sum(1), 0))


def _pca_residual(pred, Xtr, Q, leave_self_out=False):
    """Mean over the k nearest references of sqrt(d_pca^2 + r_q^2 + r_ref^2): the full-space
    distance if the residuals (what the PCA drops) were orthogonal."""
    k = int(pred.n_neighbors)
    d, idx = pred._neighbours(pred.transform(Q, "place"), k + int(leave_self_out))
    if leave_self_out:
        d, idx = d[:, 1:], idx[:, 1:]
    r_ref = _residual(pred, Xtr[pred.ref_index_])
    r_q = _residual(pred, Q)
    return np.sqrt(d ** 2 + r_q[:, None] ** 2 + r_ref[idx] ** 2).mean(axis=1)


def train_scores(pipe, Xtr: np.ndarray, lof) -> dict:
    """Leave-self-out scores of the training items, where the score has one (the quantile rules)."""
    from mediacluster.data import l2_normalize

    pred = pipe.predictor_
    k = int(pred.n_neighbors)
    d_tr, _ = pred._neighbours(pred.transform(Xtr, "place"), k + 1)
    today = d_tr[:, 1:].mean(axis=1)
    cos = _knn_cos(l2_normalize(Xtr), l2_normalize(Xtr), k, leave_self_out=True)
    return {"today": today, "PCA+residual": _pca_residual(pred, Xtr, Xtr, leave_self_out=True),
            "cos k=1": cos[:, 0], "cos mean k": cos.mean(axis=1),
            "LOF raw": -lof.negative_outlier_factor_}


def conformal_threshold(calib: np.ndarray, alpha: float) -> float:
    """Split conformal: the ceil((n+1)(1-alpha))-th smallest calibration score (inf if n too small)."""
    s = np.sort(calib)
    r = math.ceil((len(s) + 1) * (1 - alpha))
    return float(s[r - 1]) if r <= len(s) else float("inf")


def run_set(X: np.ndarray, y: list[str], seeds: list[int], train_max: int) -> list[dict]:
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import LocalOutlierFactor

    from mediacluster.data import l2_normalize
    from mediacluster.pipeline import Pipeline

    labels = np.asarray(y)
    out = []
    for seed in seeds:
        tr, ca, te, un, held = split(labels, seed, train_max)
        t0, c0 = time.perf_counter(), time.process_time()
        pipe = Pipeline(random_state=seed).fit(X[tr])
        fit_s = time.perf_counter() - t0
        lof = LocalOutlierFactor(n_neighbors=20, novelty=True, metric="cosine").fit(l2_normalize(X[tr]))
        s_test = scores_for(pipe, X[tr], np.concatenate([X[te], X[un]]), lof)
        s_cal = scores_for(pipe, X[tr], X[ca], lof)
        s_tr = train_scores(pipe, X[tr], lof)
        is_unknown = np.r_[np.zeros(len(te), bool), np.ones(len(un), bool)]
        row = {"seed": seed, "held_out": held, "n_train": len(tr), "n_calib": len(ca), "n_known": len(te),
               "n_unknown": len(un), "fit_s": round(fit_s, 1), "clusters": int(len(np.unique(pipe.cluster_))),
               "auroc": {}, "flag": {}}
        for name in SCORES:
            s = s_test[name]
            row["auroc"][name] = float(roc_auc_score(is_unknown, s))
            flags = {}
            if name in s_tr:
                for q, tname in ((0.99, "q99 train"), (0.95, "q95 train")):
                    flags[tname] = s > np.quantile(s_tr[name], q)
            if name == "today":  # the model's own answers, as decided
                flags["model novel"] = np.asarray(s_test["_novel"])
                if not np.isnan(s_test["_novelty"]).any():
                    flags["model novelty>=0.95"] = s_test["_novelty"] >= 0.95
            for a in (0.01, ALPHA):
                flags[f"conformal {a:.0%}"] = s > conformal_threshold(s_cal[name], a)
                flags[f"TPR@FPR{a:.0%} (oracle)"] = s > np.quantile(s[~is_unknown], 1 - a)
            row["flag"][name] = {t: [float(f[is_unknown].mean()), float(f[~is_unknown].mean())]
                                 for t, f in flags.items()}
        out.append(row)
        print(f"  seed {seed}: held out {held[:5]}{'...' if len(held) > 5 else ''}; fit {fit_s:.0f}s "
              f"(CPU {time.process_time() - c0:.0f}s); AUROC "
              + ", ".join(f"{k} {v:.3f}" for k, v in row["auroc"].items()), file=sys.stderr)
    return out


def summary(rows: list[dict]) -> dict:
    """Mean over the splits (and the spread: min..max of AUROC)."""
    s = {"auroc": {}, "auroc_range": {}, "flag": {}}
    for name in SCORES:
        a = [r["auroc"][name] for r in rows]
        s["auroc"][name] = float(np.mean(a))
        s["auroc_range"][name] = [float(min(a)), float(max(a))]
        s["flag"][name] = {t: [float(np.mean([r["flag"][name][t][i] for r in rows])) for i in (0, 1)]
                           for t in THRESHOLDS if t in rows[0]["flag"][name]}
    return s


def markdown(res: dict) -> str:
    sets = list(res["datasets"])
    lines = [SECTION, "",
             f"`{res['command']}` (load average before: {res['loadavg']}; 2 cores shared; seeds "
             f"{res['seeds']}; {res['finished']}).", "",
             "Open-set protocol (benchmarks/novelty.py's docstring): per set and seeded split, a quarter of "
             "the classes held out entirely; the default `Pipeline()` fitted on 60% of the other classes' "
             f"items (at most {res['train_max']}), 15% (at most 600) kept for calibration, 25% (at most 1,000) "
             "as unseen items of known kinds, against at most 1,000 items of the held-out kinds. Vectors: "
             f"{res['source']}.", "",
             "AUROC of each score for unknown kinds vs known kinds (mean over the splits, min..max):", "",
             "| score | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name in SCORES:
        cells = []
        for ds in sets:
            s = res["datasets"][ds]["summary"]
            lo, hi = s["auroc_range"][name]
            cells.append(f"{s['auroc'][name]:.3f} ({lo:.2f}..{hi:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "The flag as decided: TPR (unknown kinds flagged) / FPR (known kinds flagged), mean over "
              "the splits; `model novel` is the model's `novel` as the code under test answers:", "",
              "| score | threshold | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for name in SCORES:
        for t in THRESHOLDS:
            if t not in res["datasets"][sets[0]]["summary"]["flag"][name]:
                continue
            cells = []
            for ds in sets:
                tp, fp = res["datasets"][ds]["summary"]["flag"][name][t]
                cells.append(f"{tp:.2f} / {fp:.2f}")
            lines.append(f"| {name} | {t} | " + " | ".join(cells) + " |")
    lines += ["", "| set | n | classes | held out per split | train / calib / known / unknown per split | "
              "clusters fitted | fit s |", "|---|---|---|---|---|---|---|"]
    for ds in sets:
        d = res["datasets"][ds]
        r = d["rows"]
        lines.append(f"| {ds} | {d['n']} | {d['k']} | {len(r[0]['held_out'])} | {r[0]['n_train']} / "
                     f"{r[0]['n_calib']} / {r[0]['n_known']} / {r[0]['n_unknown']} | "
                     + ", ".join(str(x["clusters"]) for x in r) + " | "
                     + ", ".join(str(x["fit_s"]) for x in r) + " |")
    if res.get("notes"):
        lines += ["", res["notes"]]
    return "\n".join(lines) + "\n"


def fit_cost(X: np.ndarray, sizes=(3000, 10000), repeats: int = 2) -> None:
    """Print the best process CPU (and wall) seconds of ``Pipeline(random_state=0).fit`` on the
    first ``n`` rows of ``X``: what the novelty calibration adds to a fit (run it with the old
    and the new code on PYTHONPATH, as benchmarks/model_compat.py does)."""
    from mediacluster.pipeline import Pipeline

    for n in sizes:
        best = min(_timed_fit(Pipeline, X[:n]) for _ in range(repeats))
        print(f"Pipeline().fit on {n} x {X.shape[1]}: best of {repeats} CPU {best[0]:.2f} s, wall {best[1]:.2f} s "
              f"(loadavg {os.getloadavg()[0]:.2f})")


def _timed_fit(cls, X):
    c, t = time.process_time(), time.perf_counter()
    cls(random_state=0).fit(X)
    return time.process_time() - c, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-max", type=int, default=3000, help="at most this many training items per split")
    _results.add_data_args(ap)
    ap.add_argument("--vectors-from", type=Path, default=None,
                    help="DEVELOPMENT ONLY: read DIR/<set>.npz instead of embedding")
    ap.add_argument("--write-results", action="store_true",
                    help="write the tables into benchmarks/RESULTS.md (refused with --vectors-from)")
    ap.add_argument("--notes", default="", help="a paragraph appended to the section")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--fit-cost", action="store_true",
                    help="only time Pipeline().fit on the first 3,000 / 10,000 vectors of the first dataset")
    args = ap.parse_args(argv)
    if args.write_results and args.vectors_from is not None:
        ap.error("--write-results is refused with --vectors-from (the figures must come from the package)")
    from mediacluster.fileio import setup_numba_cache, write_json

    setup_numba_cache()  # before umap is imported: compiled kernels reused across runs
    import quality  # the same extraction and embedding path as the quality benchmark

    res = {**_results.started("novelty.py", argv), "seeds": args.seeds, "train_max": args.train_max, "datasets": {}, "notes": args.notes,
           "source": ("embedded through the package (default encoder), shared embedding cache"
                      if args.vectors_from is None else f"dev vectors {args.vectors_from}")}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.fit_cost:
        name = args.datasets[0]
        fit_cost(quality.load_dataset(name, args.out, args.shared, args.vectors_from, False)[0])
        return 0
    saved = args.out / ("novelty.json" if args.vectors_from is None else "novelty-dev.json")
    for name in args.datasets:
        X, y, _ = quality.load_dataset(name, args.out, args.shared, args.vectors_from, not args.quiet)
        print(f"[{name}] n={len(X)} classes={len(set(y))} loadavg {os.getloadavg()[0]:.1f}", file=sys.stderr)
        rows = run_set(X, y, args.seeds, args.train_max)
        res["datasets"][name] = {"n": len(X), "k": len(set(y)), "rows": rows, "summary": summary(rows)}
        res["finished"] = _results.finished()
        write_json(saved, res)  # after every set, so a long run keeps what it finished
    _results.finish(res, SECTION, markdown, args.write_results, saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
