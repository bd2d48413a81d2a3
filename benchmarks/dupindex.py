"""How a model's duplicate index searches its stored vectors: load time, resident memory, one
query, a batch of queries (benchmarks/RESULTS.md, "Duplicates at scale").

Two parts, each case in its own process (resident memory from /proc/self/status: VmRSS, RssAnon
= memory the process holds, RssFile = pages of mapped files, which the kernel can drop):

* ``--options``: the designs considered for an exact inner-product search over n float16 unit
  rows (the first ``--n`` rows of ``--npy``, rounded to float16):
  ``inmem`` (before: the rows loaded whole, a faiss ``IndexScalarQuantizer`` QT_fp16 filled
  from them), ``mmapifc`` (that index written to a file and read with
  ``faiss.IO_FLAG_MMAP_IFC``: faiss scans the mapped file), ``blocked`` (a float16 ``.npy``
  memory map read 16,384 rows at a time as float32, ``faiss.knn`` per block, merged with
  ``faiss.ResultHeap``), ``blocked_sq`` (each block copied into a small float16 index).
* ``--model DIR --queries Q.npy``: the package's own path, ``DuplicateIndex`` of a model version
  (``read_from_model``): load, one query (``query(vector=)``), all queries (``query_many``).

    flock /tmp/mc-bench.lock python benchmarks/dupindex.py --options --npy /tmp/v200k.npy --n 200000 --work /tmp/dx
    flock /tmp/mc-bench.lock python benchmarks/dupindex.py --model RUN/models/v0001 --queries q.npy

``--npy``: e.g. the planted vectors of ``benchmarks/duplicates.py --planted-npy``; the queries of
``--options`` are 1,000 of its rows with noise 0.02, renormalised.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OPTIONS = ("inmem", "mmapifc", "blocked", "blocked_sq")
BLOCK = 16384


def memory() -> dict:
    s = Path("/proc/self/status").read_text()
    out = {}
    for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
        out[key + "_mb"] = round(int(s.split(key + ":")[1].split()[0]) / 1024)
    return out


def prepare(npy: str, n: int, work: Path) -> None:
    """``work/f16.npy`` (float16 unit rows, written block by block) and ``work/sq.faiss``."""
    import faiss

    work.mkdir(parents=True, exist_ok=True)
    X = np.load(npy, mmap_mode="r")[:n]
    out = np.lib.format.open_memmap(work / "f16.npy", mode="w+", dtype=np.float16, shape=X.shape)
    for s in range(0, n, BLOCK):
        x = np.asarray(X[s:s + BLOCK], np.float32)
        out[s:s + BLOCK] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    V = np.load(work / "f16.npy", mmap_mode="r")
    index = faiss.IndexScalarQuantizer(V.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    for s in range(0, n, BLOCK):
        index.add(np.asarray(V[s:s + BLOCK], np.float32))
    faiss.write_index(index, str(work / "sq.faiss"))


def queries(V, m: int = 1000, noise: float = 0.02, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q = np.asarray(V[np.sort(rng.choice(len(V), m, replace=False))], np.float32)
    Q += noise * rng.standard_normal(Q.shape, dtype=np.float32)
    return Q / np.linalg.norm(Q, axis=1, keepdims=True)


def option_child(option: str, work: Path, k: int = 10) -> dict:
    import faiss

    V = np.load(work / "f16.npy", mmap_mode="r")
    n, d = V.shape
    Q = queries(V)
    from mediacluster.fileio import release_pages

    release_pages(V)  # the query rows' pages: not counted below
    res = {"option": option, "n": n, "before_load": memory()}
    t = time.perf_counter()
    if option == "inmem":
        rows = np.array(V)  # what format 2 did: every vector in memory (from duplicates.npz)
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        for s in range(0, n, 65536):
            index.add(np.asarray(rows[s:s + 65536], np.float32))

        def search(q):
            return index.search(q, k)
    elif option == "mmapifc":
        index = faiss.read_index(str(work / "sq.faiss"), faiss.IO_FLAG_MMAP_IFC)

        def search(q):
            return index.search(q, k)
    elif option == "blocked":
        def search(q):
            heap = faiss.ResultHeap(len(q), k, keep_max=True)
            for s in range(0, n, BLOCK):
                D, rows = faiss.knn(q, np.asarray(V[s:s + BLOCK], np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)
                heap.add_result(D, rows + s)
            heap.finalize()
            return heap.D, heap.I
    elif option == "blocked_sq":
        def search(q):
            heap = faiss.ResultHeap(len(q), k, keep_max=True)
            sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            for s in range(0, n, BLOCK):
                block = np.ascontiguousarray(V[s:s + BLOCK])
                sq.reset()
                faiss.copy_array_to_vector(block.view(np.uint8).ravel(), sq.codes)
                sq.ntotal = len(block)
                D, rows = sq.search(q, k)
                heap.add_result(D, rows + s)
            heap.finalize()
            return heap.D, heap.I
    else:
        raise SystemExit(f"unknown option {option!r}")
    res["load_s"] = round(time.perf_counter() - t, 3)
    res["after_load"] = memory()
    search(Q[:1])
    t = time.perf_counter()
    for i in range(1, 11):
        search(Q[i:i + 1])
    res["one_query_s"] = round((time.perf_counter() - t) / 10, 4)
    t = time.perf_counter()
    D, rows = search(Q)
    res["batch_s"] = round(time.perf_counter() - t, 2)
    res["batch"] = len(Q)
    res["after_queries"] = memory()
    np.save(work / f"rows_{option}.npy", rows)
    return res


def model_child(model: str, qpath: str) -> dict:
    from mediacluster.duplicates.index import read_from_model

    Q = np.load(qpath).astype(np.float32)
    res = {"model": model, "before_load": memory()}
    t = time.perf_counter()
    index = read_from_model(model)
    if index is None:
        raise SystemExit(f"{model}: no duplicates/ (a model saved by `cluster --dedup --save-model`)")
    res["load_s"] = round(time.perf_counter() - t, 3)
    res["items"] = len(index)
    res["after_load"] = memory()
    index.query(vector=Q[0])
    t = time.perf_counter()
    for q in Q[1:11]:
        index.query(vector=q)
    res["one_query_s"] = round((time.perf_counter() - t) / 10, 4)
    t = time.perf_counter()
    found = index.query_many(None, Q)
    res["batch_s"] = round(time.perf_counter() - t, 2)
    res["batch"] = len(Q)
    res["found"] = sum(m is not None for m in found)
    res["after_queries"] = memory()
    return res


def child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--options", action="store_true", help="compare the search designs (see the module doc)")
    ap.add_argument("--npy", help="float32 vectors (.npy) for --options")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--work", default="/tmp/dupindex-bench", help="folder for --options' files")
    ap.add_argument("--model", help="a model version folder holding duplicates/")
    ap.add_argument("--queries", help="query vectors (.npy) for --model")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "model":
        print(json.dumps(model_child(args.model, args.queries)))
    elif args.child:
        print(json.dumps(option_child(args.child, Path(args.work))))
    elif args.options:
        if not args.npy:
            ap.error("--options needs --npy")
        prepare(args.npy, args.n, Path(args.work))
        for option in OPTIONS:
            print(json.dumps(child(["--child", option, "--work", args.work])), flush=True)
        base = np.load(Path(args.work) / "rows_inmem.npy")
        for option in OPTIONS[1:]:
            same = np.array_equal(np.sort(base, axis=1), np.sort(np.load(Path(args.work) / f"rows_{option}.npy"), axis=1))
            print(json.dumps({"option": option, "same_neighbours_as_inmem": bool(same)}))
    elif args.model:
        if not args.queries:
            ap.error("--model needs --queries")
        print(json.dumps(child(["--child", "model", "--model", args.model, "--queries", args.queries])))
    else:
        ap.error("give --options or --model")


if __name__ == "__main__":
    main()
