"""A million items on one machine, and past one machine on Ray (issue 15): the figures.

Parts (run one or several; each prints a markdown table and keeps its raw numbers in
``benchmarks/out/scale/<part>.json``; ``--write`` puts the tables into benchmarks/RESULTS.md,
section "Scale"):

* ``quality``: the 60,000 CIFAR-10 vectors (train + test, embedded through the package with the
  default encoder; the user embedding cache makes that instant after the first time). The
  default pipeline fitted on everything vs fitted on samples of 2,500 .. 40,000 items with every
  other item assigned by the fitted model (``mediacluster.scale``): NMI against the true classes,
  agreement with the full fit (NMI, and the share of items whose cluster matches after a one-to-one
  matching of cluster ids), fit and assignment time (wall and CPU seconds).
* ``recall``: the predictor's neighbour search at ``EXACT_SEARCH_MAX`` and above: faiss HNSW vs
  exact, recall@k and how often the vote (the assigned cluster) differs, on the CIFAR-10 vectors.
* ``synth``: writes the synthetic sets (a mixture of a few hundred clusters of varied sizes and
  spreads on the unit sphere) as ``.npy`` + labels, 100k / 300k / 1M x 768 and 1280, streamed to
  disk (never one array in memory).
* ``runs``: ``mediacluster cluster SET.npy --out ...`` in a child process per set: wall and CPU
  time per stage (from run.json), peak RSS of the child (``resource.getrusage``), NMI against the
  mixture labels and coverage.
* ``ray``: the same assignment (and embedding of a CIFAR-10 slice) through ``--executor ray`` on a
  local Ray cluster vs the local path: overhead on this machine, throughput vs workers.

    flock /tmp/mc-bench.lock python benchmarks/scale.py quality [--sizes 2500,5000,...]
    python benchmarks/scale.py synth --dir /tmp/mc-scale            # (not timed)
    flock /tmp/mc-bench.lock python benchmarks/scale.py runs --dir /tmp/mc-scale --sets 100k-768,...
    flock /tmp/mc-bench.lock python benchmarks/scale.py ray --dir /tmp/mc-scale

Every timed part records ``/proc/loadavg`` before and after: this 2-core machine is shared, so
CPU seconds are the figure to compare where the load average is high.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _results
import numpy as np
from _results import loadavg

from mediacluster.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "scale"
SECTION = "## Scale: a million items, sample fits, Ray (scale helper, issue 15)"


class Clock:
    """Wall and CPU seconds (this process, all threads) of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c
        return False


def save(part: str, doc: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{part}.json").write_text(json.dumps(doc, indent=2, default=float))


# ---------------------------------------------------------------------------------- data
def cifar60k(vectors_from: str | None = None):
    """(X, y) of CIFAR-10 train + test through the package (or a dev .npz folder)."""
    if vectors_from:
        parts = [np.load(Path(vectors_from) / f"cifar10-{s}.npz", allow_pickle=False) for s in ("train", "test")]
        X = np.vstack([p["vectors"] for p in parts]).astype(np.float32)
        y = np.concatenate([p["labels"] for p in parts]).astype(str)
        return X, y, f"dev vectors {vectors_from}"
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    Xs, ys = [], []
    for split in ("train", "test"):
        coll = collect(f"/work/data/cifar10/{split}", labels_from_folders=True)
        emb = embed_collection(coll, progress=False)
        Xs.append(np.asarray(emb.vectors, np.float32))
        ys.append(np.asarray(emb.labels).astype(str))
    return np.vstack(Xs), np.concatenate(ys), "default encoder through the package (user embedding cache)"


def matched_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of items whose label in ``a`` maps to their label in ``b`` under the best one-to-one
    matching of label ids (Hungarian on the contingency table)."""
    from scipy.optimize import linear_sum_assignment

    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    table = np.zeros((len(ua), len(ub)), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    r, c = linear_sum_assignment(-table)
    return float(table[r, c].sum() / len(a))


def assign_all(pipe, rows, X, batch=20_000):
    from mediacluster.scale import assign_batch

    out = np.empty(len(X), np.int64)
    for s in range(0, len(X), batch):
        out[s:s + batch] = assign_batch(pipe, rows, s, X[s:s + batch])["cluster"]
    return out


# ---------------------------------------------------------------------------------- quality
def part_quality(args) -> dict:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from mediacluster.pipeline import Pipeline
    from mediacluster.scale import sample_rows

    X, y, source = cifar60k(args.vectors_from)
    n = len(X)
    rows_out = []
    load0 = loadavg()
    full = None
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = range(args.seeds) if args.seed_list is None else [int(v) for v in args.seed_list.split(",")]
    if args.no_full and (OUT / "quality.json").exists():  # more samples for an earlier table
        old = json.loads((OUT / "quality.json").read_text())
        rows_out = old["rows"]
        load0 = old["load_before"]
        if (OUT / "quality_full.npy").exists():
            full = np.load(OUT / "quality_full.npy")
    if not args.no_full:
        with Clock() as c:
            pipe = Pipeline(random_state=0).fit(X)
        full = pipe.cluster_.copy()
        OUT.mkdir(parents=True, exist_ok=True)
        np.save(OUT / "quality_full.npy", full)
        rows_out.append({"sample": n, "seed": 0, "fit_wall": c.wall, "fit_cpu": c.cpu, "assign_wall": 0.0,
                         "assign_cpu": 0.0, "clusters": int(pipe.n_clusters_), "nmi_truth": nmi(y, full),
                         "nmi_full": 1.0, "agree_full": 1.0})
        print(json.dumps(rows_out[-1], default=float), flush=True)
        save("quality", {"n": n, "source": source, "rows": rows_out, "load_before": load0})
    for size in sizes:
        for seed in seeds:
            rows = sample_rows(n, size, seed)
            with Clock() as c:
                pipe = Pipeline(random_state=0).fit(X[rows])
            with Clock() as a:
                lab = assign_all(pipe, rows, X)
            r = {"sample": size, "seed": seed, "fit_wall": c.wall, "fit_cpu": c.cpu, "assign_wall": a.wall,
                 "assign_cpu": a.cpu, "clusters": int(pipe.n_clusters_), "nmi_truth": nmi(y, lab),
                 "nmi_full": nmi(full, lab) if full is not None else None,
                 "agree_full": matched_agreement(lab, full) if full is not None else None}
            rows_out.append(r)
            print(json.dumps(r, default=float), flush=True)
            save("quality", {"n": n, "source": source, "rows": rows_out, "load_before": load0})
    doc = {"n": n, "source": source, "rows": rows_out, "load_before": load0, "load_after": loadavg()}
    save("quality", doc)
    return doc


def table_quality(doc: dict) -> str:
    lines = [f"CIFAR-10 train + test, {doc['n']:,} vectors ({doc['source']}); default pipeline, "
             f"`random_state=0`; sample drawn with seed s; load average {doc['load_before']} before, "
             f"{doc.get('load_after', '?')} after.", "",
             "| fitted on | seed | clusters | NMI vs classes | NMI vs full fit | same cluster as full fit | "
             "fit wall / CPU s | assign 60k wall / CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        nf = "-" if r["nmi_full"] is None else f"{r['nmi_full']:.3f}"
        af = "-" if r["agree_full"] is None else f"{100 * r['agree_full']:.1f}%"
        lines.append(f"| {r['sample']:,}{' (all)' if r['sample'] == doc['n'] else ''} | {r['seed']} | "
                     f"{r['clusters']} | {r['nmi_truth']:.3f} | {nf} | {af} | {r['fit_wall']:.0f} / "
                     f"{r['fit_cpu']:.0f} | {r['assign_wall']:.1f} / {r['assign_cpu']:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- recall
def part_recall(args) -> dict:
    """HNSW vs exact search in the predictor: a model fitted on 40,000 CIFAR-10 vectors assigns
    the other 20,000 both ways; recall@k of the neighbours and agreement of the votes."""
    import mediacluster.predictor as P
    from mediacluster.pipeline import Pipeline
    from mediacluster.scale import sample_rows

    X, y, source = cifar60k(args.vectors_from)
    rows = sample_rows(len(X), 40_000, 0)
    rest = np.setdiff1d(np.arange(len(X)), rows)
    doc = {"source": source, "rows": [], "load_before": loadavg()}
    for clusterer, params in (("kmeans", {"clusterer__n_clusters": 10}), ("kmeans", {"clusterer__n_clusters": 50})):
        pipe = Pipeline(random_state=0).with_params({"reducer": "pca", "reducer__n_components": 10,
                                                     "clusterer": clusterer, **params}).fit(X[rows])
        pred = pipe.predictor_
        Q = pred.transform(X[rest])
        k = pipe.predict_neighbors
        with Clock() as ce:
            d0, i0 = pred._faiss_.search(Q, k)
        pred._hnsw_ = None
        with Clock() as cb:
            pred._graph()
        pred._hnsw_.hnsw.efSearch = 48
        with Clock() as ch:
            d1, i1 = pred._hnsw_.search(Q, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(i0, i1)]))
        saved, saved_max = P.HNSW_MIN_QUERIES, P.EXACT_SEARCH_MAX
        try:
            P.HNSW_MIN_QUERIES = 10**12  # exact
            exact = pipe.predict_details(X[rest])
        finally:
            P.HNSW_MIN_QUERIES = saved
        P.EXACT_SEARCH_MAX = 0  # the graph, whatever the size
        approx = pipe.predict_details(X[rest])
        for ef in args.ef:
            pred._hnsw_.hnsw.efSearch = ef
            with Clock() as ca:
                d2 = pipe.predict_details(X[rest])
            doc.setdefault("ef", []).append({
                "clusterer": f"{clusterer} {params}", "ef_search": ef, "same_cluster": float(np.mean(
                    exact["cluster"] == d2["cluster"])), "predict_cpu_s": ca.cpu, "predict_wall_s": ca.wall})
            print(json.dumps(doc["ef"][-1]), flush=True)
        pred._hnsw_.hnsw.efSearch = max(P.HNSW_EF_SEARCH, 2 * k)
        P.EXACT_SEARCH_MAX = saved_max
        with Clock() as cx:
            P.HNSW_MIN_QUERIES = 10**12
            try:
                pipe.predict_details(X[rest])
            finally:
                P.HNSW_MIN_QUERIES = saved
        doc.setdefault("ef", []).append({"clusterer": f"{clusterer} {params}", "ef_search": "exact",
                                         "same_cluster": 1.0, "predict_cpu_s": cx.cpu, "predict_wall_s": cx.wall})
        r = {"clusterer": f"{clusterer} {params}", "references": len(rows), "queries": len(rest), "k": k,
             "ef_search": 48, "recall": recall,
             "same_cluster": float(np.mean(exact["cluster"] == approx["cluster"])),
             "same_label": float(np.mean(exact["labels"] == approx["labels"])),
             "exact_search_s": ce.wall, "exact_cpu_s": ce.cpu, "graph_build_s": cb.wall, "hnsw_search_s": ch.wall,
             "hnsw_cpu_s": ch.cpu, "load": loadavg()}
        doc["rows"].append(r)
        print(json.dumps(r), flush=True)
    save("recall", doc)
    return doc


def table_recall(doc: dict) -> str:
    ef = ["", "| model | efSearch | same assigned cluster as exact | predict 20,000 CPU s |", "|---|---|---|---|"]
    for r in doc.get("ef", []):
        ef.append(f"| {r['clusterer']} | {r['ef_search']} | {100 * r['same_cluster']:.2f}% | {r['predict_cpu_s']:.1f} |")
    return _table_recall(doc) + "\n" + "\n".join(ef)


def _table_recall(doc: dict) -> str:
    lines = [f"CIFAR-10 ({doc['source']}): a PCA(10) + K-means model fitted on 40,000 vectors assigns the "
             "other 20,000 with exact search and with the HNSW graph (M=16).", "",
             "| model | k | efSearch | recall@k | same assigned cluster | exact search wall / CPU | "
             "HNSW search wall / CPU | load avg |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['clusterer']} | {r['k']} | {r['ef_search']} | {r['recall']:.3f} | "
                     f"{100 * r['same_cluster']:.2f}% | {r['exact_search_s']:.1f} / {r['exact_cpu_s']:.1f} s | "
                     f"{r['hnsw_search_s']:.1f} / {r['hnsw_cpu_s']:.1f} s | {r['load']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- synthetic
SET_SIZES = {"100k": 100_000, "300k": 300_000, "1m": 1_000_000}


def synth_set(path: Path, n: int, dim: int, n_clusters: int = 300, seed: int = 0, chunk: int = 50_000) -> None:
    """``path``.npy (n, dim) float32 unit vectors and ``path``.labels.npy: a mixture of
    ``n_clusters`` clusters of varied sizes (log-normal weights) and spreads, grouped under 30
    parent directions so that neighbouring clusters overlap, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    groups = rng.normal(size=(30, dim))
    groups /= np.linalg.norm(groups, axis=1, keepdims=True)
    parent = rng.integers(0, 30, n_clusters)
    centres = groups[parent] + 0.9 * rng.normal(size=(n_clusters, dim)) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.35, 1.1, n_clusters)  # noise norm relative to the centre's
    weights = np.exp(rng.normal(0, 1.0, n_clusters))
    labels = rng.choice(n_clusters, size=n, p=weights / weights.sum()).astype(np.int32)
    tmp = path.with_suffix(".tmp.npy")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, chunk):
        lab = labels[s:s + chunk]
        X = centres[lab] + spread[lab, None] * rng.normal(size=(len(lab), dim)) / np.sqrt(dim)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        mm[s:s + chunk] = X
        mm.flush()
    del mm
    os.replace(tmp, path)
    np.save(path.with_suffix(".labels.npy"), labels)


def part_synth(args) -> dict:
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    made = {}
    for name in args.sets.split(","):
        size, dim = name.split("-")
        p = d / f"{name}.npy"
        if not p.exists():
            t = time.perf_counter()
            synth_set(p, SET_SIZES[size], int(dim))
            print(f"{p}: {time.perf_counter() - t:.0f}s", flush=True)
        made[name] = str(p)
    return None


# ---------------------------------------------------------------------------------- runs
LAUNCHER = ("import json, os, subprocess, sys, time; t = time.perf_counter(); "
            "p = subprocess.Popen(json.loads(sys.argv[1])); _, st, ru = os.wait4(p.pid, 0); "
            "print(json.dumps([os.waitstatus_to_exitcode(st), time.perf_counter() - t, "
            "ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024]))")


def run_child(cmd: list[str], env=None) -> tuple[int, float, float, float]:
    """(exit code, wall s, CPU s, peak RSS MB) of one command. A small launcher process runs it:
    Linux carries a process's peak RSS across exec, so a child forked straight from this
    (larger) process would start with this process's peak."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(cmd)], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    rc, wall, cpu, rss = json.loads(out.strip().splitlines()[-1])
    return rc, wall, cpu, rss


def part_runs(args) -> dict:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    d = Path(args.dir)
    doc = {"runs": []}
    if (OUT / "runs.json").exists():
        doc = json.loads((OUT / "runs.json").read_text())
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for name in args.sets.split(","):
        vec = d / f"{name}.npy"
        out = d / f"run-{name}"
        load0 = loadavg()
        cmd = [sys.executable, "-m", "mediacluster", "cluster", str(vec), "--out", str(out), "--quiet",
               "--fit-sample", args.fit_sample]
        rc, wall, cpu, rss = run_child(cmd, env)
        info = RunDir.open(out).info if rc == 0 else {}
        stage_peaks = info.get("peak_rss_mb") or {}
        # runs made before StageMeter stopped resetting VmHWM: the reset hid earlier peaks from
        # wait4, so the largest stage peak is the process's peak
        rss = max([rss, *stage_peaks.values()])
        r = {"set": name, "rc": rc, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss, "load_before": load0,
             "load_after": loadavg(), "fit_sample": info.get("fit_sample"), "timings_s": info.get("timings_s"),
             "stage_peak_rss_mb": info.get("peak_rss_mb"), "summary": info.get("summary")}
        if rc == 0:
            y = np.load(d / f"{name}.labels.npy")
            lab = RunDir.open(out).read_assignments(columns=["cluster", "assigned_cluster"])
            r["nmi"] = nmi(y, lab["cluster"].to_numpy())
            r["nmi_assigned"] = nmi(y, lab["assigned_cluster"].to_numpy())
            r["true_clusters"] = int(len(np.unique(y)))
            r["bytes"] = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
        doc["runs"] = [x for x in doc["runs"] if x["set"] != name] + [r]
        print(json.dumps(r, default=float), flush=True)
        save("runs", doc)
    return doc


def table_runs(doc: dict) -> str:
    lines = ["| set (n x dim) | wall | CPU | peak RSS | fit sample | clusters (true) | NMI | coverage | "
             "stage seconds (peak RSS MB) | load avg before / after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(doc["runs"], key=lambda r: (SET_SIZES[r["set"].split("-")[0]], r["set"])):
        if r["rc"] != 0:
            lines.append(f"| {r['set']} | failed (exit {r['rc']}) | | | | | | | | |")
            continue
        t, pk = r["timings_s"], r["stage_peak_rss_mb"] or {}
        peak = max([r["peak_rss_mb"], *pk.values()])
        stages = ", ".join(f"{k} {t[k]:.0f} ({pk.get(k, 0):.0f})" for k in
                           ("vectors", "sample", "fit", "map_sample", "assign", "write") if k in t)
        s = r["summary"]
        lines.append(f"| {r['set']} | {r['wall_s'] / 60:.1f} min | {r['cpu_s'] / 60:.1f} min | "
                     f"{peak / 1024:.2f} GB | {r['fit_sample']['size']:,} | {s['clusters']} "
                     f"({r['true_clusters']}) | {r['nmi']:.3f} | {100 * s['coverage']:.1f}% | {stages} | "
                     f"{r['load_before']} / {r['load_after']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- the map
def chrome():
    """The report page's browser: it reads the page's chunk files from file://."""
    from _browser import chromium

    return chromium(extra=("--allow-file-access-from-files",))


def measure_page(html: Path, zooms: int = 12, loads: int = 3) -> dict:
    """First paint (ms since navigation start, page parsed and map drawn), frame times while
    zooming in and out about the centre, and a hover that loads an item's name on demand."""
    paints = []
    for _ in range(loads - 1):  # fresh browsers: the first loads of the page
        drv = chrome()
        try:
            drv.get(html.resolve().as_uri())
            while not drv.execute_script("return window.mcReport && window.mcReport.firstPaintMs"):
                time.sleep(0.05)
            paints.append(drv.execute_script("return window.mcReport.firstPaintMs"))
        finally:
            drv.quit()
    drv = chrome()
    try:
        t = time.perf_counter()
        drv.get(html.resolve().as_uri())
        while not drv.execute_script("return window.mcReport && window.mcReport.firstPaintMs"):
            time.sleep(0.05)
        paints.append(drv.execute_script("return window.mcReport.firstPaintMs"))
        out = {"first_paint_ms": float(np.median(paints)), "first_paints_ms": paints,
               "load_wall_s": time.perf_counter() - t,
               "mode": drv.execute_script("return window.mcReport.mode"),
               "drawn": drv.execute_script("return window.mcReport.drawn")}
        frames = []
        for k in range(zooms):
            f = 1.6 if k < zooms // 2 else 1 / 1.6
            frames.append(drv.execute_script(
                "var m = window.mcReport, c = document.getElementById('map').getBoundingClientRect();"
                f"m.zoom({f}, c.width / 2, c.height / 2); return [m.lastFrameMs, m.mode, m.drawn];"))
        out["frame_ms"] = [round(f[0], 1) for f in frames]
        out["frame_modes"] = [f[1] for f in frames]
        out["frame_ms_median"] = float(np.median([f[0] for f in frames]))
        out["frame_ms_max"] = float(max(f[0] for f in frames))
        severe = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
        out["errors"] = [e.get("message") for e in severe]
        return out
    finally:
        drv.quit()


def part_map(args) -> dict:
    """The report of each run made by ``runs`` (and ``--report-runs`` extra run folders)."""
    doc = json.loads((OUT / "map.json").read_text()) if (OUT / "map.json").exists() else {"pages": []}
    runs = [Path(args.dir) / f"run-{s}" for s in args.sets.split(",")] + [Path(p) for p in args.report_runs]
    for run in runs:
        if not RunDir.is_run(run):
            continue
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        rc, wall, cpu, rss = run_child([sys.executable, "-m", "mediacluster", "report", str(run), "--quiet"], env)
        rep = json.loads((run / "report" / "report.json").read_text())
        m = measure_page(run / "report" / "index.html")
        r = {"run": str(run), "items": rep["items"], "build_wall_s": wall, "build_cpu_s": cpu,
             "build_peak_rss_mb": rss, "html_bytes": rep["html_bytes"],
             "path_chunk_bytes": rep.get("path_chunk_bytes", 0), "load": loadavg(), **m}
        doc["pages"] = [p for p in doc["pages"] if p["run"] != r["run"]] + [r]
        print(json.dumps(r, default=float), flush=True)
        save("map", doc)
    return doc


def table_map(doc: dict) -> str:
    lines = ["| run | items | page (index.html) | names on demand | report build wall / CPU / peak RSS | "
             "first paint, median (each of 3 loads) | zoom frame median / max | load avg |", "|---|---|---|---|---|---|---|---|"]
    for r in doc["pages"]:
        lines.append(f"| {Path(r['run']).name} | {r['items']:,} | {r['html_bytes'] / 1e6:.1f} MB | "
                     f"{r['path_chunk_bytes'] / 1e6:.1f} MB | {r['build_wall_s']:.0f} s / {r['build_cpu_s']:.0f} s / "
                     f"{r['build_peak_rss_mb'] / 1024:.2f} GB | {r['first_paint_ms'] / 1000:.2f} s "
                     f"({' / '.join(f'{p / 1000:.2f}' for p in r.get('first_paints_ms', [r['first_paint_ms']]))}) | "
                     f"{r['frame_ms_median']:.0f} / {r['frame_ms_max']:.0f} ms | {r['load']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- ray
def part_ray(args) -> dict:
    """Local vs Ray (a local Ray on this machine) for the same work: assigning the vectors of a
    synthetic set with one fitted model, and embedding a slice of CIFAR-10 images (fresh cache)."""
    import tempfile

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # listen on 127.0.0.1 only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from mediacluster.encoders import get_encoder
    from mediacluster.executors import LocalExecutor
    from mediacluster.executors.ray_executor import RayExecutor
    from mediacluster.ingest import collect
    from mediacluster.ingest.stream import NpyVectors
    from mediacluster.pipeline import Pipeline
    from mediacluster.scale import sample_rows

    doc = {"assign": [], "embed": [], "load_before": loadavg()}
    name = args.ray_set
    src = NpyVectors(Path(args.dir) / f"{name}.npy")
    rows = sample_rows(src.n, 10_000, 0)
    pipe = Pipeline(random_state=0).with_params({"reducer": "pca", "reducer__n_components": 10,
                                                 "clusterer": "kmeans", "clusterer__n_clusters": 30}).fit(src.take(rows))
    with Clock() as c:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    doc["ray_start_s"] = c.wall
    try:
        runs = [("local", None)] + [("ray", w) for w in args.ray_workers]
        for kind, w in runs:
            exe = LocalExecutor() if kind == "local" else RayExecutor(workers=w)
            with Clock() as c:
                k = sum(len(o["labels"]) for _, o in exe.assign(src.path, src.n, pipe, rows, batch_rows=10_000,
                                                                progress=False))
            r = {"executor": kind, "workers": w, "items": k, "wall_s": c.wall, "driver_cpu_s": c.cpu,
                 "items_per_s": k / c.wall, "load": loadavg(), **getattr(exe, "stats", {})}
            doc["assign"].append(r)
            print(json.dumps(r), flush=True)
            save("ray", doc)
        coll = collect("/work/data/cifar10/test", labels_from_folders=True)
        take = np.sort(np.random.default_rng(0).choice(len(coll), args.ray_images, replace=False))
        coll.ids, coll.paths = [coll.ids[i] for i in take], [coll.paths[i] for i in take]
        coll.labels = [coll.labels[i] for i in take]
        for kind, w in runs:
            exe = LocalExecutor() if kind == "local" else RayExecutor(workers=w, embed_block=64)
            with tempfile.TemporaryDirectory() as cache, Clock() as c:
                emb = exe.embed(coll, encoder=get_encoder("efficientnet-lite0"), cache_dir=cache, progress=False,
                                encoder_spec="efficientnet-lite0")
            r = {"executor": kind, "workers": w, "images": len(emb), "wall_s": c.wall, "driver_cpu_s": c.cpu,
                 "images_per_s": len(emb) / c.wall, "load": loadavg(), **getattr(exe, "stats", {})}
            doc["embed"].append(r)
            print(json.dumps(r), flush=True)
            save("ray", doc)
    finally:
        ray.shutdown()
    doc["load_after"] = loadavg()
    save("ray", doc)
    return doc


def table_ray(doc: dict) -> str:
    lines = [f"Ray {__import__('ray').__version__} started locally on this machine in {doc['ray_start_s']:.0f} s "
             f"(not included below); load average {doc['load_before']} before, {doc.get('load_after', '?')} after.",
             "", "| job | executor | workers | items | wall | items/s | vs local | first result after | "
             "items/s after it | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for job, key, unit in (("assign", "items_per_s", "items"), ("embed", "images_per_s", "images")):
        rows = doc[job]
        base = next((r[key] for r in rows if r["executor"] == "local"), None)
        for r in rows:
            first = r.get(f"{job}_first_result_s")
            steady = r.get(f"{job}_steady_per_s")
            lines.append(f"| {job} | {r['executor']} | {r['workers'] or '-'} | {r[unit]:,} | {r['wall_s']:.1f} s | "
                         f"{r[key]:.0f} | {r[key] / base:.2f}x | {'-' if first is None else f'{first:.0f} s'} | "
                         f"{'-' if steady is None else f'{steady:.0f}'} | {r['load']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- RESULTS.md
NOTES = Path(__file__).with_name("scale_notes.md")


def part_tables(args) -> None:
    """Write benchmarks/RESULTS.md's "Scale" section from the saved JSON of every part (and the
    hand-written context in benchmarks/scale_notes.md, whose {placeholders} name the tables)."""
    tables = {}
    for part in ("quality", "recall", "runs", "map", "ray"):
        f = OUT / f"{part}.json"
        tables[part] = globals()[f"table_{part}"](json.loads(f.read_text())) if f.exists() else "(not measured)"
    text = NOTES.read_text(encoding="utf-8").format(**tables)
    print(text)
    _results.publish(SECTION, SECTION + "\n\n" + text, args.write, show=False)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="+", choices=("quality", "recall", "synth", "runs", "map", "ray", "tables"))
    ap.add_argument("--vectors-from", default=None, help="folder of dev .npz vectors (not for committed figures)")
    ap.add_argument("--sizes", default="2500,5000,10000,20000,40000")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--seed-list", default=None, help="quality: these sample seeds (e.g. 1,2)")
    ap.add_argument("--no-full", action="store_true")
    ap.add_argument("--dir", default="/tmp/mc-scale", help="where the synthetic sets and runs go")
    ap.add_argument("--sets", default="100k-768,100k-1280,300k-768,300k-1280,1m-768,1m-1280")
    ap.add_argument("--fit-sample", default="auto")
    ap.add_argument("--ef", type=int, nargs="*", default=[32, 48, 96, 160, 256])
    ap.add_argument("--ray-set", default="100k-768", help="ray: the synthetic set to assign")
    ap.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--ray-images", type=int, default=1000)
    ap.add_argument("--report-runs", nargs="*", default=[], help="map: more run folders to build reports for")
    _results.add_common_args(ap)
    args = ap.parse_args(argv)
    for part in args.parts:
        fn = globals()[f"part_{part}"]
        doc = fn(args)
        tab = globals().get(f"table_{part}")
        if tab is not None and doc is not None:
            print(tab(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
