"""Peak memory of one full-size (50,000-item) tuning trial, step by step (RESULTS: "Tuning's peak memory").

    python benchmarks/tune_memory.py trial PARAMS.json      # the trial's steps, as Workspace.run does them
    python benchmarks/tune_memory.py umap NN GRAPH.npz       # one UMAPReducer fit at n_neighbors NN

PARAMS.json: a trial's parameters (``best_params.json``'s ``params`` of a study's out folder);
GRAPH.npz: the study's cached input graph (``cache/knn-*-full-cosine-2000-svd.npz``). The vectors
are /work/vec/cifar10-train.npz (the default encoder's CIFAR-10 train vectors). A thread samples
the process's RSS every 10 ms; the peak within each step is printed.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time

import numpy as np

VECTORS = "/work/vec/cifar10-train.npz"


class Sampler:
    def __init__(self):
        self.step, self.peaks, self.stop = "start", {}, False
        threading.Thread(target=self.loop, daemon=True).start()

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9

    def loop(self):
        while not self.stop:
            r, s = self.rss(), self.step
            self.peaks[s] = max(self.peaks.get(s, 0.0), r)
            time.sleep(0.01)

    def enter(self, name: str):
        self.step = name
        self.peaks[name] = max(self.peaks.get(name, 0.0), self.rss())
        print(f"-> {name}: RSS now {self.rss():.2f} GB", flush=True)


def trial(params_file: str):
    from mediacluster.pipeline import Pipeline
    from mediacluster.tune.space import preset
    from mediacluster.tune.study import one_thread
    from mediacluster.tune.workspace import Workspace

    S = Sampler()
    params = json.load(open(params_file))
    X = np.load(VECTORS)["vectors"].astype(np.float32)
    ws = Workspace(X, preset("seed-study", len(X)), Pipeline(random_state=0), seed=0,
                   subsample=[2000, 10000], layout_epochs=100, knn_method="auto")
    with one_thread():
        S.enter("input graph full")
        ws.graph("full", "cosine")
        pipe = ws.trial_pipeline(params, "full")
        S.enter("umap fit")
        Z = ws.reduce(pipe, "full")
        S.enter("outlier graph")
        G = ws.outlier_graph(pipe, Z, "full")
        S.enter("pipe.fit (outliers+cluster)")
        pipe.fit(ws.data("full"), embedding=Z, outlier_graph=G, build_predictor=False)
        S.enter("score")
        m = ws.score(Z, pipe.labels_, "full")
        S.enter("after")
        time.sleep(0.1)
    S.stop = True
    print("clusters", m["n_clusters"], "silhouette", m["silhouette"])
    for k, v in S.peaks.items():
        print(f"  {k:32s} {v:.2f} GB")


def umap_fit(nn: int, graph_file: str):
    from mediacluster.stages.reduce import UMAPReducer
    from mediacluster.tune.study import one_thread

    S = Sampler()
    X = np.load(VECTORS)["vectors"].astype(np.float32)
    with np.load(graph_file) as f:
        g = (f["indices"], f["distances"])
    S.enter("umap fit")
    base = S.rss()
    with one_thread():
        UMAPReducer(n_neighbors=nn, n_components=3, min_dist=0.145, n_epochs=100, random_state=0,
                    init="spectral", metric="cosine").fit(X, precomputed_knn=g)
    S.stop = True
    print(f"nn={nn}: RSS before the fit {base:.2f} GB, peak {S.peaks['umap fit']:.2f} GB")


if __name__ == "__main__":
    if sys.argv[1] == "trial":
        trial(sys.argv[2])
    else:
        umap_fit(int(sys.argv[2]), sys.argv[3])
    print(f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
