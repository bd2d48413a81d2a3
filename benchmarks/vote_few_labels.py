"""The neighbour vote with few labels per class: flagged share of correct vs flipped labels.

For each vectors file (``vectors``, ``labels``: e.g. /work/vec/imagenette-val.npz) and each
labelling (labelled items per class: small / big, the share of classes that are big), seeds
0..``--seeds``-1: that many items of each class are labelled (seeded), 10% of them given another
class at random (the known wrong labels), then ``evaluation.neighbour_vote`` (k 10) of the
labels. An item counts as flagged when the vote's label is not its own (what ``evaluate`` lists
as outvoted); items the vote cannot judge (``alone``) are left out. Prints the mean shares.
The copy of mediacluster measured is the one on ``PYTHONPATH``:

    PYTHONPATH=src python benchmarks/vote_few_labels.py /work/vec/imagenette-val.npz /work/vec/sports100.npz
"""

from __future__ import annotations

import argparse

import numpy as np

from mediacluster.evaluation import neighbour_vote

LABELLINGS = [(3, 3, 0.0), (5, 5, 0.0), (3, 30, 0.5), (10, 10, 0.0)]  # (small, big, share of classes big)


def labelling(y, small, big, share_big, seed, k=10, flip=0.1):
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    rng.shuffle(classes)
    n_big = int(round(share_big * len(classes)))
    truth, wrong = [None] * len(y), np.zeros(len(y), bool)
    for j, c in enumerate(classes):
        idx = np.flatnonzero(y == c)
        for i in rng.choice(idx, min(len(idx), big if j < n_big else small), replace=False):
            truth[i] = str(c)
            if rng.random() < flip:
                truth[i], wrong[i] = str(rng.choice(classes[classes != c])), True
    return truth, wrong


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vectors", nargs="+")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--k", type=int, default=10)
    a = ap.parse_args(argv)
    for path in a.vectors:
        d = np.load(path, allow_pickle=True)
        X, y = d["vectors"].astype(np.float32), np.asarray(d["labels"]).astype(str)
        for small, big, share_big in LABELLINGS:
            ok, bad, n_ok, n_bad = [], [], [], []
            for seed in range(a.seeds):
                truth, wrong = labelling(y, small, big, share_big, seed)
                v = neighbour_vote(X, truth, a.k)
                judged = np.array([t is not None for t in truth]) & ~v["alone"]
                flag = np.array([v["label"][i] is not None and v["label"][i] != truth[i] for i in range(len(y))])
                ok.append(flag[judged & ~wrong].mean())
                bad.append(flag[judged & wrong].mean())
                n_ok.append((judged & ~wrong).sum())
                n_bad.append((judged & wrong).sum())
            print(f"{path.rsplit('/', 1)[-1]:18s} per class {small:2d} / {big:2d} (big {share_big:.0%} of classes): "
                  f"correct flagged {np.mean(ok):.2f}, flipped flagged {np.mean(bad):.2f} "
                  f"(per seed {np.mean(n_ok):.0f} correct, {np.mean(n_bad):.0f} flipped)")


if __name__ == "__main__":
    main()
