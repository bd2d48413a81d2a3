"""Saved models stay loadable and answer the same across a change to the model code.

Made for the split of ``pipeline.py`` (the model format and the neighbour predictor moved to
their own modules, the format unchanged). Run ``save`` with the code before the change and
``check`` with the code after it::

    PYTHONPATH=OLD/src python benchmarks/model_compat.py save DIR
    PYTHONPATH=NEW/src python benchmarks/model_compat.py check DIR
    PYTHONPATH=NEW/src python benchmarks/model_compat.py latency MODEL VECTORS.npz

``save`` fits three pipelines on seeded synthetic vectors (192-d, so the reference vectors go
through the PCA projection) and saves each with the answers of ``predict_details`` (and
``predict_path``) for the training vectors, perturbed copies, far-away vectors and, for the
hierarchy, another level; the models are a hierarchy (the default pipeline, cosine), an HDBSCAN
pipeline on PCA with a LOF outlier stage (noise and outliers; euclidean) and one fitted with
exact copies and near-duplicate groups (``fit(duplicates=)``). ``check`` loads every model with
the current code, compares each answer exactly (same dtype, shape and values) and refits the
same pipelines to compare the arrays they save with the old ones, and asks each loaded model
``similar`` (a model saved before ids were kept answers rows). ``latency`` times
``predict_details`` of a saved model: one item (median over 500 calls) and a batch of 1,000
(median and fastest of 20), wall and process CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def data(seed: int, n: int = 900, d: int = 192, k: int = 6):
    rng = np.random.default_rng(seed)
    C = 3.0 * rng.standard_normal((k, d)).astype(np.float32)
    X = C[rng.integers(0, k, n)] + rng.standard_normal((n, d)).astype(np.float32)
    X[:40] = 6.0 * rng.standard_normal((40, d)).astype(np.float32)  # scattered: noise / outliers
    return X


def cases():
    """name -> (pipeline, X, fit keyword arguments)."""
    from mediacluster.pipeline import Pipeline

    X1 = data(1)
    X2 = data(2)
    X3 = data(3)
    X3[100:130] = X3[:30]  # exact copies
    rng = np.random.default_rng(3)
    X3[200:220] = X3[300:320] + 0.01 * rng.standard_normal((20, X3.shape[1])).astype(np.float32)
    groups = np.full(len(X3), -1, dtype=np.int64)
    groups[200:220] = np.arange(300, 320)  # near duplicates: each joins its representative
    groups[300:320] = np.arange(300, 320)
    return {
        "hierarchy": (Pipeline(random_state=0), X1, {}),
        "hdbscan_lof": (Pipeline(random_state=0).with_params({
            "reducer": "pca", "reducer__n_components": 8, "outliers": "lof", "clusterer": "hdbscan",
            "clusterer__min_cluster_size": 25}), X2, {}),
        "duplicates": (Pipeline(random_state=0, reference_size=500).with_params({
            "clusterer": "hdbscan", "clusterer__min_cluster_size": 20}), X3, {"duplicates": groups}),
    }


def queries(X):
    rng = np.random.default_rng(11)
    return np.vstack([X, X[::7] + 0.3 * rng.standard_normal(X[::7].shape).astype(np.float32),
                      8.0 * rng.standard_normal((25, X.shape[1])).astype(np.float32)])


def answers(pipe, Q) -> dict[str, np.ndarray]:
    out = {}
    det = pipe.predict_details(Q)
    for k, v in det.items():
        if k == "path":
            if v is not None:
                out["path_labels"], out["path_probabilities"] = v["labels"], v["probabilities"]
        else:
            out[k] = np.asarray(v)
    if pipe.levels_ is not None:
        out["predict_path_labels"], out["predict_path_probabilities"] = pipe.predict_path(Q)
        other = 0 if pipe.level_ != 0 else len(pipe.levels_) - 1
        pipe.set_level(other)
        for k, v in pipe.predict_details(Q).items():
            if k != "path":
                out[f"level{other}_{k}"] = np.asarray(v)
        out[f"level{other}_labels_"] = pipe.labels_
        out[f"level{other}_cluster_"] = pipe.cluster_
    return out


def save(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (pipe, X, kw) in cases().items():
        pipe.fit(X, **kw)
        pipe.save(folder / name, metadata={"encoder": "synthetic", "names": {"0": "first"}})
        np.save(folder / f"{name}_X.npy", X)
        np.savez(folder / f"{name}_answers.npz", **answers(pipe, queries(X)))
        print(name, "clusters", pipe.n_clusters_, "noise", int((pipe.labels_ == -1).sum()),
              "outliers", int((pipe.labels_ == -2).sum()), "reference", len(pipe.ref_index_))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def same_files(a: Path, b: Path) -> str:
    """Whether two model folders hold the same bytes: model.json but for the package versions
    (and the fit timings, which a load keeps), arrays.npz member by member (the zip's own
    timestamps differ)."""
    import zipfile

    ja, jb = (json.loads((d / "model.json").read_text()) for d in (a, b))
    for j in (ja, jb):
        j.pop("mediacluster_version"), j.pop("versions")
    if json.dumps(ja) != json.dumps(jb):
        return "model.json differs"
    with zipfile.ZipFile(a / "arrays.npz") as za, zipfile.ZipFile(b / "arrays.npz") as zb:
        if za.namelist() != zb.namelist():
            return f"arrays.npz members differ: {za.namelist()} / {zb.namelist()}"
        for m in za.namelist():
            if za.read(m) != zb.read(m):
                return f"arrays.npz member {m} differs"
    return "the same bytes"


def similar_answers(pipe, X, name: str) -> bool:
    """``Pipeline.similar`` on a model saved without its items' ids (no ``items.json``): it
    answers rows, ids None, each reference item's own vector first."""
    ri = pipe.ref_index_[:50]
    r = pipe.similar(X[ri], k=5)
    ok = r["ids"] is None and np.array_equal(r["rows"][:, 0], ri) and (r["rows"] >= 0).all()
    print(f"{name}: similar on the old model: rows answered, own row first: {ok}")
    return bool(ok)


def check(folder: Path) -> int:
    from mediacluster.persist import read_model
    from mediacluster.pipeline import load

    bad = 0
    for name, (pipe, X, kw) in cases().items():
        old = dict(np.load(folder / f"{name}_answers.npz", allow_pickle=False))
        new = answers(load(folder / name), queries(np.load(folder / f"{name}_X.npy")))
        diff = sorted(k for k in old.keys() if k not in new or not same(old[k], new[k]))
        added = sorted(new.keys() - old.keys())  # answers the old code did not give (e.g. novelty)
        print(f"{name}: {len(old)} answers loaded from the old model, differing: {diff or 'none'}"
              + (f"; new answers: {added}" if added else ""))
        bad += bool(diff)
        bad += not similar_answers(load(folder / name), np.load(folder / f"{name}_X.npy"), name)
        info_old, arr_old = read_model(folder / name)
        resaved = folder / f"{name}_resaved"
        load(folder / name).save(resaved, overwrite=True, metadata=info_old["metadata"])
        files = same_files(folder / name, resaved)
        print(f"{name}: loaded and saved again with this code: {files}")
        bad += files != "the same bytes"
        pipe.fit(X, **kw)
        refit = folder / f"{name}_refit"
        pipe.save(refit, overwrite=True, metadata={"encoder": "synthetic", "names": {"0": "first"}})
        info_new, arr_new = read_model(refit)
        adiff = sorted(k for k in arr_old.keys() | arr_new.keys()
                       if k not in arr_old or k not in arr_new or not same(arr_old[k], arr_new[k]))
        skip = {"mediacluster_version", "versions", "timings_s"}
        jdiff = sorted(k for k in info_old.keys() | info_new.keys()
                       if k not in skip and json.dumps(info_old.get(k)) != json.dumps(info_new.get(k)))
        if list(info_old) != list(info_new) or list(arr_old) != list(arr_new):
            jdiff.append("the order of the fields or arrays")
        print(f"{name}: refitted with this code, saved arrays differing: {adiff or 'none'}; "
              f"model.json fields differing: {jdiff or 'none'}")
        bad += bool(adiff or jdiff)
    return bad


def latency(model: Path, vectors: Path):
    from mediacluster.pipeline import load

    with np.load(vectors, allow_pickle=False) as z:
        X = z["vectors"].astype(np.float32)[:10_000]
    pipe = load(model)
    pipe.predict_details(X[:10])
    one = []
    c0 = time.process_time()
    for i in range(500):
        t = time.perf_counter()
        pipe.predict_details(X[(i * 37) % len(X)])
        one.append(time.perf_counter() - t)
    cpu_one = (time.process_time() - c0) / 500
    batch, cpu_batch = [], []
    for i in range(20):
        t, c = time.perf_counter(), time.process_time()
        pipe.predict_details(X[(i % 10) * 1000:(i % 10 + 1) * 1000])
        batch.append(time.perf_counter() - t)
        cpu_batch.append(time.process_time() - c)
    print(json.dumps({"code": sys.modules["mediacluster"].__file__, "n_items": len(pipe.labels_),
                      "one_ms_median": round(1e3 * float(np.median(one)), 3),
                      "one_ms_p95": round(1e3 * float(np.percentile(one, 95)), 3),
                      "one_cpu_ms": round(1e3 * cpu_one, 3),
                      "batch1000_ms_median": round(1e3 * float(np.median(batch)), 1),
                      "batch1000_ms_min": round(1e3 * float(np.min(batch)), 1),
                      "batch1000_cpu_ms_median": round(1e3 * float(np.median(cpu_batch)), 1),
                      "loadavg": os.getloadavg()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["save", "check", "latency"])
    ap.add_argument("folder", type=Path)
    ap.add_argument("vectors", type=Path, nargs="?", help="latency: an .npz with 'vectors'")
    args = ap.parse_args()
    if args.what == "save":
        save(args.folder)
    elif args.what == "check":
        sys.exit(1 if check(args.folder) else 0)
    else:
        latency(args.folder, args.vectors)


if __name__ == "__main__":
    main()
