"""Peak memory of one full-size (50,000-item) tuning trial, step by step (RESULTS: "Tuning's peak memory").

    python benchmarks/tune_memory.py trial PARAMS.json [CACHE]   # the trial's steps, as Workspace.run does them
    python benchmarks/tune_memory.py umap NN GRAPH.npz       # one UMAPReducer fit at n_neighbors NN
    python benchmarks/tune_memory.py watch LOG.json STUDY_DIR -- CMD ...   # a whole study, per process

``watch`` runs CMD (e.g. ``benchmarks/tuning.py ... --out OUT``, STUDY_DIR = ``OUT/study-tpe``)
and samples every process of its tree twice a second from /proc: RSS (anonymous and file-backed
apart) and PSS (a page shared by k processes counts 1/k in each, so the tree's PSS sum is the
memory the study really holds). At the end it reads STUDY_DIR/study.db and names the trial each
process was running at its peak (trials record their process id). LOG.json: the samples.

PARAMS.json: a trial's parameters (``best_params.json``'s ``params`` of a study's out folder);
GRAPH.npz: the study's cached input graph (``cache/knn-*-full-cosine-2000-svd.npz``). The vectors
are /work/vec/cifar10-train.npz (the default encoder's CIFAR-10 train vectors). A thread samples
the process's RSS every 10 ms; the peak within each step is printed, and the peak of its anonymous
part (RssAnon: what the process must hold; file-backed pages of a memory-mapped cache are the
page cache's, shared and reclaimable). CACHE: a study's cache folder, so that the workspace reads
its input graph from there as a study's processes do (without it the graph is built in memory).
"""

from __future__ import annotations

import gc
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
        self.step, self.peaks, self.anon, self.stop = "start", {}, {}, False
        threading.Thread(target=self.loop, daemon=True).start()

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9

    @staticmethod
    def rss_anon() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1e6

    def loop(self):
        while not self.stop:
            r, a, s = self.rss(), self.rss_anon(), self.step
            self.peaks[s] = max(self.peaks.get(s, 0.0), r)
            self.anon[s] = max(self.anon.get(s, 0.0), a)
            time.sleep(0.01)

    def enter(self, name: str):
        self.step = name
        self.peaks[name] = max(self.peaks.get(name, 0.0), self.rss())
        print(f"-> {name}: RSS now {self.rss():.2f} GB", flush=True)


def trial(params_file: str, cache: str | None = None):
    from mediacluster.pipeline import Pipeline
    from mediacluster.tune.space import preset
    from mediacluster.tune.study import one_thread
    from mediacluster.tune.workspace import Workspace

    S = Sampler()
    params = json.load(open(params_file))
    X = np.load(VECTORS)["vectors"].astype(np.float32)
    ws = Workspace(X, preset("seed-study", len(X)), Pipeline(random_state=0), seed=0,
                   subsample=[2000, 10000], layout_epochs=100, knn_method="auto", cache_dir=cache)
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
        S.enter("after (the trial's objects dropped)")
        del pipe, G
        gc.collect()
        time.sleep(0.1)
    S.stop = True
    print("clusters", m["n_clusters"], "silhouette", m["silhouette"])
    print(f"  {'step':32s} peak RSS / peak anonymous RSS")
    for k, v in S.peaks.items():
        print(f"  {k:32s} {v:.2f} / {S.anon.get(k, 0.0):.2f} GB")
    print(f"  RSS at the end {S.rss():.2f} GB, anonymous {S.rss_anon():.2f} GB")


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


def _proc_mem(pid: int) -> dict | None:
    """RSS, its anonymous / file-backed parts and PSS of one process, GB (None: gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0]) / 1e6
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["Pss"] = int(line.split()[1]) / 1e6
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return out


def _tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def watch(log_file: str, study_dir: str, cmd: list[str]) -> int:
    import datetime
    import sqlite3
    import subprocess

    t0 = time.time()
    proc = subprocess.Popen(cmd)
    samples = []  # (time, pid, mem)
    while proc.poll() is None:
        now = time.time()
        for pid in _tree(proc.pid):
            m = _proc_mem(pid)
            if m:
                samples.append((now, pid, m))
        time.sleep(0.5)
    rc = proc.returncode
    json.dump({"cmd": cmd, "t0": t0, "samples": samples}, open(log_file, "w"))
    by_pid: dict[int, list] = {}
    for t, pid, m in samples:
        by_pid.setdefault(pid, []).append((t, m))
    totals: dict[float, dict] = {}
    for t, _pid, m in samples:
        tot = totals.setdefault(t, {"VmRSS": 0.0, "Pss": 0.0})
        tot["VmRSS"] += m.get("VmRSS", 0.0)
        tot["Pss"] += m.get("Pss", 0.0)
    # trials: process id, start / end (UTC in the study's database), level reached, parameters
    trials = []
    db = os.path.join(study_dir, "study.db")
    if os.path.exists(db):
        con = sqlite3.connect(db)
        for tid, num, start, end in con.execute(
                "select trial_id, number, datetime_start, datetime_complete from trials"):
            attrs = {k: json.loads(v) for k, v in con.execute(
                "select key, value_json from trial_user_attributes where trial_id=?", (tid,))}
            params = dict(con.execute("select param_name, param_value from trial_params where trial_id=?", (tid,)))

            def ts(s):
                return None if s is None else datetime.datetime.fromisoformat(s).replace(
                    tzinfo=datetime.UTC).timestamp()
            trials.append({"number": num, "pid": attrs.get("pid"), "start": ts(start), "end": ts(end),
                           "fidelity": attrs.get("fidelity"), "nn": params.get("reducer__n_neighbors")})

    def running(pid, t):
        for tr in trials:
            if tr["pid"] == pid and tr["start"] and tr["start"] <= t <= (tr["end"] or 1e18):
                return f"trial {tr['number']} ({tr['fidelity']}, reducer n_neighbors {tr['nn']})"
        return "no trial (graph / set-up / oracle)"

    print(f"\n{len(samples)} samples over {time.time() - t0:.0f} s; exit {rc}")
    print("per process: peak RSS (anon / file at that moment), peak PSS, what it ran at its RSS peak")
    for pid, rows in sorted(by_pid.items(), key=lambda kv: kv[1][0][0]):
        t, m = max(rows, key=lambda r: r[1].get("VmRSS", 0.0))
        pss = max(r[1].get("Pss", 0.0) for r in rows)
        if m.get("VmRSS", 0.0) < 0.2:
            continue
        print(f"  pid {pid}: RSS {m['VmRSS']:.2f} GB (anon {m.get('RssAnon', 0):.2f}, file "
              f"{m.get('RssFile', 0):.2f}) at +{t - t0:.0f} s, PSS peak {pss:.2f} GB: {running(pid, t)}")
    if totals:
        t, tot = max(totals.items(), key=lambda kv: kv[1]["Pss"])
        print(f"  whole tree: PSS peak {tot['Pss']:.2f} GB at +{t - t0:.0f} s (RSS sum then {tot['VmRSS']:.2f} GB); "
              f"RSS sum peak {max(v['VmRSS'] for v in totals.values()):.2f} GB")
    return rc


if __name__ == "__main__":
    if sys.argv[1] == "watch":
        sep = sys.argv.index("--")
        sys.exit(watch(sys.argv[2], sys.argv[3], sys.argv[sep + 1:]))
    if sys.argv[1] == "trial":
        trial(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        umap_fit(int(sys.argv[2]), sys.argv[3])
    print(f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
