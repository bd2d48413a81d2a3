"""Exit aborts of streamed ``cluster`` runs, and what reading Parquet run tables on one thread costs.

    python benchmarks/exit_abort.py runs --src A/src --src B/src --rounds 100 --vectors v.npy
    python benchmarks/exit_abort.py read

``runs``: each round starts 4 streamed ``cluster`` processes at once under ``nice -n 10``, split
evenly between the ``--src`` folders (put first on ``PYTHONPATH``), so every version sees the
same load; counts the runs that did not exit 0 (an abort at exit is rc 134). Without
``--vectors``, 3,000 random 32-d vectors. ``read``: wall and CPU seconds of reading a
1,000,000-row assignments-like table with ``pd.read_parquet`` and with ``fileio.read_table``
(run it with the branch's ``src`` first on ``PYTHONPATH``). Results: RESULTS.md, "Exit abort".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _results
import numpy as np

CLUSTER = ["cluster", "--fit-sample", "600", "--batch-rows", "40", "--quiet", "--no-names",
           "--reducer", "pca", "--reducer-param", "n_components=8", "--clusterer", "kmeans",
           "--clusterer-param", "n_clusters=6"]


def runs(srcs: list[str], rounds: int, vectors: str | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="exit_abort-"))
    if vectors is None:
        vectors = str(work / "v.npy")
        np.save(vectors, np.random.default_rng(0).normal(size=(3000, 32)).astype(np.float32))
    counts = {s: [0, 0] for s in srcs}
    for r in range(rounds):
        procs = []
        for i in range(4):
            src = srcs[i * len(srcs) // 4]
            env = {**os.environ, "PYTHONPATH": src}
            cmd = ["nice", "-n", "10", sys.executable, "-m", "mediacluster", CLUSTER[0], vectors,
                   *CLUSTER[1:], "--out", str(work / f"r{i}")]
            procs.append((src, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE, text=True)))
        for src, p in procs:
            err = p.communicate()[1]
            counts[src][0] += 1
            if p.returncode != 0:
                counts[src][1] += 1
                print(f"round {r + 1}: {src} rc={p.returncode} {err.strip().splitlines()[:1]}", flush=True)
    load = _results.loadavg()
    for src, (n, bad) in counts.items():
        print(f"{src}: {n} runs, {bad} not exit 0 (load average at the end {load})")


def read() -> None:
    import pandas as pd

    from mediacluster import fileio

    n = 1_000_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": [f"img_{i:07d}" for i in range(n)],
                       "path": [f"/data/photos/{i % 977}/img_{i:07d}.jpg" for i in range(n)],
                       "cluster": rng.integers(-1, 300, n), "status": rng.choice(["clustered", "noise", "outlier"], n),
                       "probability": rng.random(n), "assigned_cluster": rng.integers(0, 300, n),
                       "confidence": rng.random(n)})
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "table.parquet"  # an assignments-like table, not a run folder
        fileio.write_table(p, df)

        def old(columns):
            with open(p, "rb") as f:
                return pd.read_parquet(f, columns=columns)

        def new(columns):
            return fileio.read_table(p, columns=columns, unescape=False)

        for cols in (None, ["cluster", "status"]):
            for name, fn in (("pd.read_parquet", old), ("fileio.read_table", new)):
                fn(cols)
                wall, cpu = [], []
                for _ in range(5):
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn(cols)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                print(f"{name:18s} columns={cols}: wall {np.median(wall):.3f} s, CPU {np.median(cpu):.3f} s "
                      f"(median of 5; file {p.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("runs")
    r.add_argument("--src", action="append", required=True, help="a src folder to run (1, 2 or 4 of them)")
    r.add_argument("--rounds", type=int, default=50)
    r.add_argument("--vectors", default=None)
    sub.add_parser("read")
    args = ap.parse_args()
    if args.what == "runs":
        if len(args.src) not in (1, 2, 4):
            ap.error("--src: 1, 2 or 4 folders (4 processes a round, split evenly)")
        runs(args.src, args.rounds, args.vectors)
    else:
        read()


if __name__ == "__main__":
    main()
