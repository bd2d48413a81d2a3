"""Why the inbox test saw no image answered ``novel`` where novelty_size.py flags most.

The inbox test (tests/test_serve_inbox.py) served a model of the tests' ``cifar3`` fixture (300
CIFAR-10 test images: 100 airplanes, frogs, trucks; ``extract_slice`` seed 0) and sent 8 of the
``imagenette_dir`` fixture's 80 Imagenette photos (20 of each of tench, springer, church,
parachute; seed 0). Its model was test_serve's ``fast_pipeline``: PCA (8) + k-means (3) and
``reference_dims=64``. A pipeline's predictor takes its metric from the reducer, and PCA has
none, so that predictor compares the raw (unnormalised) vectors by euclidean distance; the
default pipeline's UMAP gives cosine (L2-normalised vectors). This script rebuilds both fixtures
as the tests do, embeds them through the package (the shared embedding cache), and answers the
80 photos with: the fast pipeline, the default ``Pipeline()``, and the bare predictor in each
metric at 64 / 128 axes and unprojected. Second table: the predictor's novelty in the two metrics
on every set (novelty_size.py's held-out-classes protocol and its ``cifar3`` case; 300 and 1,000
fitted items, seeds 0-2; the projection forced as novelty_size.py's ``pca`` does). Usage::

    python benchmarks/novelty_inbox.py --write-results [--out DIR-with-extracted-sets]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import _results
import novelty_size
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Novelty on small collections: why the inbox test saw none (novelcheck helper)"
SPACES = [("euclidean", 64), ("euclidean", 128), ("euclidean", None), ("cosine", 64), ("cosine", 128),
          ("cosine", None)]


def fit_space(X, metric, dims, seed=0):
    """The bare predictor in ``metric``, projected on ``dims`` axes at any size (None: whole)."""
    from mediacluster import predictor

    n = len(X)
    z = np.zeros(n, dtype=np.int64)
    rule, predictor.PROJECTION_ROWS_PER_AXIS = predictor.PROJECTION_ROWS_PER_AXIS, 0
    try:
        return predictor.NeighbourPredictor(n_neighbors=10, reference_dims=dims, metric=metric,
                                            random_state=seed).fit(
            X, labels=z, probabilities=np.ones(n), cluster=z, confidence=np.ones(n), embedding=np.zeros((n, 2)))
    finally:
        predictor.PROJECTION_ROWS_PER_AXIS = rule


def fixtures(shared: Path, work: Path):
    """The tests' cifar3 and imagenette fixtures, embedded: (X3, XI, sent) with ``sent`` the
    positions of the 8 photos the inbox test sends (every tenth of the sorted paths)."""
    from mediacluster.datasets import extract_slice
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    extract_slice(shared / "cifar10-test.tar.gz", work / "cifar3", classes=["airplane", "frog", "truck"],
                  per_class=100, seed=0)
    extract_slice(shared / "imagenette-val.tar.gz", work / "imagenette",
                  classes=["n01440764", "n02102040", "n03028079", "n03888257"], per_class=20, seed=0)
    c3 = embed_collection(collect(work / "cifar3", labels_from_folders=True), progress=False)
    im = embed_collection(collect(work / "imagenette", labels_from_folders=True), progress=False)
    paths = sorted(str(p) for p in (work / "imagenette").rglob("*.JPEG"))
    sent = [paths.index(p) for p in paths[::10][:8]]
    order = {str(work / "imagenette" / p): i for i, p in enumerate(im.ids)}
    if len(order) == len(paths):  # ids relative to the collection root
        sent = [order[paths[j]] for j in sent]
    else:
        raise RuntimeError("cannot match the photos to their vectors")
    return (np.asarray(c3.vectors, dtype=np.float32), np.asarray(im.vectors, dtype=np.float32), np.asarray(sent))


def fixture_rows(X3, XI, sent) -> list[tuple]:
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages import build as make_stage

    fast = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 8}),
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3}), reference_dims=64)
    rows = []
    for name, pipe in [("test_serve.fast_pipeline (PCA 8 + k-means 3, reference_dims 64)", fast),
                       ("default Pipeline()", Pipeline(random_state=0))]:
        pipe.fit(X3)
        p = pipe.predictor_
        d = pipe.predict_details(XI)
        space = f"{p.metric}, {'whole' if p.ref_components_ is None else len(p.ref_components_)}"
        rows.append((name, space, d["novel"], d["novelty"]))
    for metric, dims in SPACES:
        p = fit_space(X3, metric, dims)
        nv, nt = p.novelty(p.kneighbors(XI)[0])
        rows.append(("bare predictor", f"{metric}, {'whole' if dims is None else dims}", nv, nt))
    return [(a, b, float(nv.mean()), int(nv[sent].sum()), float(np.median(nt)), float(nt[sent].min()),
             float(nt[sent].max())) for a, b, nv, nt in rows]


def metric_rows(load, seeds) -> list[tuple]:
    from sklearn.metrics import roc_auc_score

    data = {s: load(s) for s in novelty_size.DATASETS}
    out = []
    for n in (300, 1000):
        for s in novelty_size.DATASETS + ["cifar3 vs imagenette-val"]:
            per = {}
            for seed in seeds:
                if s.startswith("cifar3"):
                    X, y = data["cifar10-test"]
                    rng = np.random.default_rng(seed)
                    idx = rng.permutation(np.flatnonzero(np.isin(y, novelty_size.CIFAR3)))
                    F = data["imagenette-val"][0]
                    tr, kn, un = X[idx[:n]], X[idx[n:n + 500]], F[rng.choice(len(F), 500, replace=False)]
                else:
                    X, y = data[s]
                    c = novelty_size.held_out_case(X, y, n, seed)
                    if c is None:
                        continue
                    tr, kn, un = X[c[0]], X[c[1]], X[c[2]]
                Q = np.concatenate([kn, un])
                lab = np.r_[np.zeros(len(kn), bool), np.ones(len(un), bool)]
                for metric in ("euclidean", "cosine"):
                    p = fit_space(tr, metric, 128, seed)
                    dist = p.kneighbors(Q)[0]
                    nv, _ = p.novelty(dist)
                    per.setdefault(metric, []).append((roc_auc_score(lab, dist.mean(axis=1)), nv[lab].mean(),
                                                       nv[~lab].mean()))
            if per:
                out.append((n, s, *[tuple(np.mean(per[m], axis=0)) for m in ("euclidean", "cosine")]))
                print(f"  {out[-1]}", file=sys.stderr, flush=True)
    return out


def markdown(res: dict) -> str:
    lines = [SECTION, "", f"`{res['command']}` (load average before: {res['loadavg']}, after: {res['loadavg_after']}; "
             f"2 cores shared; {res['finished']}; vectors: {res['source']}).", "",
             "Protocol in benchmarks/novelty_inbox.py's docstring. The 300-item `cifar3` fixture against the 80 "
             "Imagenette photos of the `imagenette_dir` fixture (the inbox test sends 8 of them):", "",
             "| model | predictor space (metric, axes) | photos `novel` (of 80) | the 8 sent `novel` | median `novelty` "
             "| `novelty` of the 8 sent |", "|---|---|---|---|---|---|"]
    for a, b, share, k, med, lo, hi in res["fixture"]:
        lines.append(f"| {a} | {b} | {share:.2f} | {k}/8 | {med:.3f} | {lo:.3f}-{hi:.3f} |")
    lines += ["", "The predictor's metric on every set (128 axes; AUROC of the score for unknown vs known, `novel` "
              "TPR / FPR; mean over seeds " + str(res["seeds"]) + "):", "",
              "| n fitted | case | AUROC euclidean / cosine | `novel` TPR / FPR euclidean | `novel` TPR / FPR cosine |",
              "|---|---|---|---|---|"]
    for n, s, e, c in res["metric"]:
        lines.append(f"| {n} | {s} | {e[0]:.3f} / {c[0]:.3f} | {e[1]:.2f} / {e[2]:.3f} | {c[1]:.2f} / {c[2]:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    _results.add_data_args(ap)
    ap.add_argument("--write-results", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    import quality

    def load(name):
        X, y, _ = quality.load_dataset(name, args.out, args.shared, None, False)
        return X, np.asarray(y)

    res = {**_results.started("novelty_inbox.py", argv), "seeds": args.seeds, "source": "embedded through the package (default encoder), shared embedding cache"}
    with tempfile.TemporaryDirectory() as tmp:
        res["fixture"] = fixture_rows(*fixtures(args.shared, Path(tmp)))
    res["metric"] = metric_rows(load, args.seeds)
    _results.finish(res, SECTION, markdown, args.write_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
