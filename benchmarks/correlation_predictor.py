"""The predictor under a UMAP ``metric=correlation``: euclidean on the raw vectors (before) against
correlation as UMAP compares it (each row mean-centred, then cosine; ``predictor.compared_as``).

For each set and seed: a random ~20% of the classes are held out; both predictors are fitted on
``--n`` items of the other classes (the default ``reference_dims`` 128 projection; votes: the
items' classes, so only the metric differs) and measured on up to 500 unseen items of the known
classes and up to 500 of the held-out ones:

* ``recall@10``: mean share of an unseen known item's 10 nearest fitted items by the correlation
  distance over the full vectors (scipy's, which UMAP's neighbour graph uses) that the
  predictor's 10 neighbours (``similar``'s) find;
* ``AUROC``: the novelty score of the held-out items against the unseen known ones; ``novel``
  TPR / FPR on them;
* ``acc``: share of the unseen known items whose predicted cluster is their class.

Vectors: ``/work/vec``-style ``.npz`` files (keys ``vectors``, ``labels``). Usage::

    python benchmarks/correlation_predictor.py --vectors-from DIR [--sets ...] [--seeds 0 1] [--write-results]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import _results
import numpy as np

SECTION = "## Correlation metric in the predictor: before / after (polish helper)"


def measure(X, y, n, seed, metric) -> dict:
    from sklearn.metrics import pairwise_distances, roc_auc_score

    from mediacluster.predictor import NeighbourPredictor

    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    held = rng.choice(classes, size=max(1, int(round(0.2 * len(classes)))), replace=False)
    known = rng.permutation(np.flatnonzero(~np.isin(y, held)))
    unknown = rng.permutation(np.flatnonzero(np.isin(y, held)))[:500]
    tr, te = known[:n], known[n:n + 500]
    _, lab = np.unique(y[tr], return_inverse=True)
    ones = np.ones(len(tr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pred = NeighbourPredictor(n_neighbors=10, reference_dims=128, metric=metric, random_state=seed).fit(
            X[tr], labels=lab, probabilities=ones, cluster=lab, confidence=ones, embedding=np.zeros((len(tr), 2)))
    D = pairwise_distances(X[te].astype(np.float64), X[tr][pred.ref_index_].astype(np.float64), metric="correlation")
    truth = np.argsort(D, axis=1)[:, :10]
    _, pos = pred.kneighbors(X[te], 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, pos)]))
    dk, du = pred.predict_details(X[te]), pred.predict_details(X[unknown])
    classes_tr = np.unique(y[tr])
    acc = float((classes_tr[dk["cluster"]] == y[te]).mean())
    auroc = float(roc_auc_score(np.r_[np.zeros(len(te)), np.ones(len(unknown))], np.r_[dk["novelty"], du["novelty"]]))
    return {"recall": recall, "auroc": auroc, "tpr": float(du["novel"].mean()), "fpr": float(dk["novel"].mean()),
            "acc": acc}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors-from", required=True)
    ap.add_argument("--sets", nargs="+", default=["imagenette", "sports100", "cifar10-test"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = []
    for name in args.sets:
        d = np.load(Path(args.vectors_from) / f"{name}.npz", allow_pickle=True)
        X, y = np.asarray(d["vectors"], np.float32), np.asarray(d["labels"]).astype(str)
        for metric, label in (("euclidean", "before: euclidean"), ("correlation", "after: correlation")):
            ms = [measure(X, y, args.n, s, metric) for s in args.seeds]
            avg = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
            rows.append(f"| {name} | {label} | {avg['recall']:.3f} | {avg['auroc']:.3f} | "
                        f"{avg['tpr']:.1%} | {avg['fpr']:.1%} | {avg['acc']:.3f} |")
            print(rows[-1], flush=True)
    load = _results.load1()
    block = "\n".join([
        SECTION, "",
        f"`python benchmarks/correlation_predictor.py --vectors-from /work/vec --seeds {' '.join(map(str, args.seeds))} "
        f"--n {args.n} --write-results` ({time.time() - t0:.0f} s, 1-min load {load:.1f}). Predictor fitted on "
        f"{args.n} items of ~80% of the classes (default 128-d projection), only the metric differs; mean over "
        f"seeds {', '.join(map(str, args.seeds))}. recall@10: of the 10 nearest by correlation distance (UMAP's "
        "neighbours) over the full vectors; AUROC / TPR: held-out classes against unseen items of the known "
        "classes (FPR); acc: predicted cluster = class.", "",
        "| set | predictor | recall@10 | AUROC | novel TPR | novel FPR | acc |",
        "|---|---|---|---|---|---|---|", *rows])
    _results.publish(SECTION, block, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
