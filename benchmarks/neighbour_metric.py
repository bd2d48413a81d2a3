"""The predictor's metric for pipelines without UMAP: euclidean on the raw vectors (before) against
cosine (``Pipeline.neighbour_metric``, now).

For each set and configuration (``--reducer pca``, ``--clusterer evoc``, ``--reducer none``; the
other stages at their defaults) and seed: a random ~20% of the classes are held out (at least 1);
the pipeline is fitted on ``--n`` items of the other classes; then both predictors are fitted on
the same items and votes (``pipe._votes()``: only the metric differs) and measured:

* ``fit agree``: share of the fitted items whose predicted ``labels`` equal the fitted ones;
* ``held-out acc``: share of up to 500 unseen items of the fitted classes whose predicted
  ``cluster`` is one whose fitted items are mostly of the item's class;
* ``AUROC``: the novelty score (mean distance to the neighbours) of up to 500 items of the
  held-out classes against those unseen known items; ``novel`` TPR / FPR on them;
* ``similar@10``: mean share of the 10 nearest reference items (``similar``'s neighbours) that
  share the unseen known item's class.

Vectors: ``/work/vec``-style ``.npz`` files (keys ``vectors``, ``labels``) written by the package's
``embed_collection`` (default encoder). Usage::

    python benchmarks/neighbour_metric.py --vectors-from DIR [--sets ...] [--seeds 0 1 2] [--write-results]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _results
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## One metric for neighbours: before / after (metric helper)"
CONFIGS = {"pca": {"reducer": "pca"}, "evoc": {"clusterer": "evoc"}, "none": {"reducer": "none"}}


def auroc(neg, pos) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def measure(X, y, config, n, seed) -> dict:
    from mediacluster.pipeline import Pipeline
    from mediacluster.predictor import NeighbourPredictor

    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    held = rng.choice(classes, size=max(1, int(round(0.2 * len(classes)))), replace=False)
    known = np.flatnonzero(~np.isin(y, held))
    unknown = rng.permutation(np.flatnonzero(np.isin(y, held)))[:500]
    known = rng.permutation(known)
    tr, te = known[:n], known[n:n + 500]
    pipe = Pipeline(**CONFIGS[config], random_state=seed).fit(X[tr])
    votes = pipe._votes()
    lab = np.where(pipe.labels_ < 0, -1, pipe.labels_)
    major = {c: (y[tr][pipe.cluster_ == c] == y[tr][pipe.cluster_ == c][:, None]).sum(0).argmax()
             for c in np.unique(pipe.cluster_) if c >= 0}
    major = {c: y[tr][pipe.cluster_ == c][i] for c, i in major.items()}
    out = {"clusters": int(pipe.cluster_.max()) + 1}
    for metric in ("euclidean", "cosine"):
        p = NeighbourPredictor(n_neighbors=pipe.predict_neighbors, reference_dims=pipe.reference_dims,
                               metric=metric, random_state=seed).fit(X[tr], **votes)
        fit = p.predict_details(X[tr], zero_vectors="place")
        k = p.predict_details(X[te])
        u = p.predict_details(X[unknown])
        dk, _ = p.kneighbors(X[te])
        du, _ = p.kneighbors(X[unknown])
        _, pos = p.kneighbors(X[te], 10)
        out[metric] = {
            "fit": float((fit["labels"] == lab).mean()),
            "acc": float(np.mean([major.get(c) == t for c, t in zip(k["cluster"], y[te], strict=True)])),
            "auroc": auroc(dk.mean(1), du.mean(1)),
            "tpr": float(u["novel"].mean()), "fpr": float(k["novel"].mean()),
            "sim": float((y[tr][p.ref_index_[pos]] == y[te][:, None]).mean()),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors-from", type=Path, required=True)
    ap.add_argument("--sets", nargs="+", default=["imagenette", "cifar10-test", "openmoji"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--write-results", action="store_true")
    a = ap.parse_args(argv)
    load0 = _results.loadavg()
    rows = []
    for s in a.sets:
        d = np.load(a.vectors_from / f"{s}.npz", allow_pickle=True)
        X, y = np.asarray(d["vectors"], np.float32), np.asarray(d["labels"]).astype(str)
        for c in a.configs:
            t = time.perf_counter()
            res = [measure(X, y, c, a.n, seed) for seed in a.seeds]
            m = {mt: {key: float(np.mean([r[mt][key] for r in res])) for key in res[0][mt]}
                 for mt in ("euclidean", "cosine")}
            cl = np.mean([r["clusters"] for r in res])
            row = (f"| {s} | {c} | {cl:.1f} | " + " | ".join(
                f"{m['euclidean'][key]:.3f} / {m['cosine'][key]:.3f}"
                for key in ("fit", "acc", "auroc", "tpr", "fpr", "sim")) + " |")
            print(row, f"({time.perf_counter() - t:.0f} s)", flush=True)
            rows.append(row)
    load1 = _results.loadavg()
    cmd = _results.command("neighbour_metric.py", argv)
    text = "\n".join([
        SECTION, "",
        f"`{cmd}` (load average before: {load0}, after: {load1}; 2 cores shared; seeds {a.seeds}; "
        f"{a.n} fitted items of the known classes; {_results.finished()}; "
        "vectors: default encoder, written by the package's embed_collection).", "",
        "Protocol in benchmarks/neighbour_metric.py's docstring. Each cell: euclidean (before) / cosine "
        "(now), mean over the seeds.", "",
        "| set | config | clusters | fit agree | held-out acc | novelty AUROC | `novel` TPR | `novel` FPR "
        "| similar@10 same class |",
        "|---|---|---|---|---|---|---|---|---|", *rows, ""])
    _results.publish(SECTION, text, a.write_results, show=not a.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
