"""mediacluster.tune: spaces, reuse == slow path, every sampler, resume after an interruption."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import sigint_default

from mediacluster.errors import InputError, ParameterError
from mediacluster.pipeline import Pipeline
from mediacluster.tune import SearchSpace, SpaceError, load_space, preset
from mediacluster.tune import tune as _tune
from mediacluster.tune.workspace import Workspace, slow_labels

# small, fast spaces on the 300-item CIFAR slice (n_epochs fixed low to keep UMAP quick)
SPACE = {
    "reducer__n_neighbors": {"int": [10, 30]},
    "reducer__n_components": {"choice": [3, 5]},
    "reducer__n_epochs": 100,
    "clusterer": "hdbscan",
    "clusterer__min_cluster_size": {"int": [5, 40], "log": True},
    "clusterer__cluster_selection_method": {"choice": ["eom", "leaf"]},
}


def tune(X, **kw):
    """The tuner from the default pipeline (what `mediacluster tune` starts from)."""
    return _tune(X, Pipeline(random_state=kw.get("seed") or 0), **kw)


@pytest.fixture(scope="module")
def X(cifar3_embeddings):
    return cifar3_embeddings.vectors


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tune-cache")


# -- spaces --------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, message", [
    ({"reducer": "umap", "reducer__n_neighbours": {"int": [5, 50]}}, "unknown parameter 'reducer__n_neighbours'"),
    ({"reducer__n_neighbours": {"int": [5, 50]}, "reducer": "umap"}, "unknown parameter 'reducer__n_neighbours'"),
    ({"umap.n_components": {"int": [2, 5]}}, "unknown parameter 'umap.n_components'"),
    ({"reducer": "tsne", "reducer__n_components": {"int": [2, 5]}}, "unknown reducer 'tsne'"),
    ({"clusterer": "kmeans", "clusterer__min_cluster_size": {"int": [2, 5]}}, "known clusterer \\(kmeans\\) parameters"),
    ({"reducer__n_components": {"int": [50, 2]}}, "empty range, min 50 > max 2"),
    ({"reducer__min_dist": {"float": [0.1, 0.1]}}, "empty range"),
    ({"reducer__n_components": {"float": [2, 5]}}, "integer parameter"),
    ({"reducer__n_components": {"int": [2.5, 5]}}, "whole numbers"),
    ({"reducer__n_components": {"int": ["a", 5]}}, "must be numbers"),
    ({"clusterer__cluster_selection_method": {"choice": ["eom", "tree"]}}, "'tree' is not one of"),
    ({"clusterer__cluster_selection_method": {"int": [1, 2]}}, "use {choice"),
    ({"reducer__min_dist": {"float": [-0.1, 0.2]}}, "below the smallest allowed value"),
    ({"reducer__n_neighbors": {"int": [0, 10], "log": True}}, "reducer__n_neighbors"),
    ({"reducer__n_neighbors": {"int": [5, 10], "logg": True}}, "unknown option"),
    ({"reducer__metric": "cosine"}, "no free parameter"),
    ({"reducer__min_dist": {"float": [0.0, 0.2], "step": 0.05, "grid": [0.0, 0.07]}}, "not on the step 0.05"),
    ({}, "non-empty"),
])
def test_invalid_space_is_refused_with_a_message(spec, message):
    base = {"reducer": "umap", "outliers": "lof", "clusterer": "hdbscan"}
    pattern = message if "\\(" in message else message.replace("(", r"\(").replace("{", r"\{")
    with pytest.raises(SpaceError, match=pattern):
        SearchSpace.from_dict(spec, base=base)


def test_space_file_presets_clamping_and_grid(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("reduce:\n  n_components: {int: [2, 50]}\n  min_dist: {float: [0, 0.25]}\n"
                 "clusterer: hdbscan\nclusterer__cluster_selection_method: {choice: [eom, leaf]}\n"
                 "outliers: lof\noutliers__n_neighbors: {int: [10, 1000], log: true}\n")
    sp = load_space(str(f), 300, Pipeline())  # the reducer is the pipeline's own (UMAP)
    assert sp.dims["outliers__n_neighbors"].high == 299  # clamped to the data, and said so
    assert any("outliers__n_neighbors" in n for n in sp.notes)
    g = sp.grid(points=3)
    assert g["reducer__n_components"] == [2, 26, 50]
    assert g["reducer__min_dist"] == [0.0, 0.125, 0.25]
    assert g["clusterer__cluster_selection_method"] == ["eom", "leaf"]
    for points in (1, 0):  # a range's grid needs its two ends (1 was a ZeroDivisionError, exit 1)
        with pytest.raises(ParameterError, match=f"grid_points must be at least 2, got {points}"):
            sp.grid(points=points)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"clusterer": "hdbscan", "clusterer__min_cluster_size": {"int": [50, 5]}}))
    with pytest.raises(SpaceError, match="clusterer__min_cluster_size: empty range"):
        load_space(str(bad), 1000)
    seed = preset("seed-study", 50000)
    assert (seed.dims["reducer__n_neighbors"].low, seed.dims["reducer__n_neighbors"].high) == (100, 2000)
    assert (seed.dims["outliers__n_neighbors"].low, seed.dims["outliers__n_neighbors"].high) == (10, 1000)
    assert seed.dims["reducer__min_dist"].high == 0.25 and seed.dims["reducer__n_components"].high == 50
    # the study fixed HDBSCAN min_cluster_size (500 at 50k) and searched its grid with these values
    assert seed.dims["clusterer__min_cluster_size"].value == 500
    g = seed.grid()
    assert g["reducer__n_neighbors"] == [100, 250, 500, 1000, 1500, 2000]
    assert g["reducer__n_components"] == [2, 5, 10, 15, 20, 35, 50]
    assert g["reducer__min_dist"] == [0.0, 0.025, 0.1, 0.25]
    assert g["outliers__n_neighbors"] == [10, 100, 250, 500, 1000]
    with pytest.raises(SpaceError, match="neither a preset"):
        load_space("no-such-space", 100)


def test_a_ranges_grid_keeps_its_step():
    """``{int: [4, 12], step: 4}`` searched by the grid sampler was tried at 4, 6, 8, 10, 12:
    values the step rules out (Optuna warned "out of range" and used them anyway), and an
    explicit grid off the step is refused. The grid now spreads over the step's points."""
    sp = SearchSpace.from_dict({"clusterer": "hdbscan",
                                "clusterer__min_cluster_size": {"int": [4, 12], "step": 4},
                                "clusterer__min_samples": {"int": [2, 30], "step": 2},
                                "clusterer__cluster_selection_epsilon": {"float": [0.0, 0.3], "step": 0.1}})
    g = sp.grid(points=5)
    assert g["clusterer__min_cluster_size"] == [4, 8, 12]
    assert g["clusterer__min_samples"] == [2, 10, 16, 24, 30]
    assert g["clusterer__cluster_selection_epsilon"] == [0.0, 0.1, 0.2, 0.3]


# -- the fast path gives the slow path's labels ----------------------------------------------
def test_reuse_paths_equal_slow_path(X):
    start = Pipeline(reducer="umap", outliers="lof", clusterer="hdbscan", random_state=3)
    space = SearchSpace.from_dict({
        "reducer__n_neighbors": {"int": [10, 40]}, "outliers__n_neighbors": {"int": [5, 60]},
        "clusterer__min_cluster_size": {"int": [5, 40]}},
        base={"reducer": "umap", "outliers": "lof", "clusterer": "hdbscan"}).clamp_to(len(X))
    ws = Workspace(X, space, start, seed=3)
    cases = [
        # graph computed at k=40, sliced to 15; LOF graph at the trial's k=20
        {"reducer__n_neighbors": 15, "reducer__n_components": 5, "reducer__n_epochs": 100,
         "outliers": "lof", "outliers__n_neighbors": 20, "clusterer__min_cluster_size": 10},
        # same reducer: cached embedding; a larger LOF k (graph again, at the space's 60) and
        # different clustering
        {"reducer__n_neighbors": 15, "reducer__n_components": 5, "reducer__n_epochs": 100,
         "outliers": "lof", "outliers__n_neighbors": 45, "clusterer__min_cluster_size": 15,
         "clusterer__cluster_selection_method": "leaf"},
        {"reducer__n_neighbors": 40, "reducer__n_components": 3, "reducer__n_epochs": 100,
         "outliers": None, "clusterer__min_cluster_size": 8, "clusterer__min_samples": 3},
    ]
    for p in cases:
        fast = ws.run(p).labels
        slow = slow_labels(X, p, seed=3, pipeline=start)
        assert len(set(slow.tolist()) - {-1, -2}) >= 2  # a real clustering, not a trivial one
        np.testing.assert_array_equal(fast, slow, err_msg=str(p))
    assert ws.stats["umap_fits"] == 2 and ws.stats["umap_cache_hits"] == 1


def _mapped_file(a: np.ndarray):
    """The memory map an array is a view of (None: memory of its own)."""
    while a is not None:
        if isinstance(a, np.memmap):
            return a
        a = a.base if isinstance(a, np.ndarray) else None
    return None


def test_a_cached_input_graph_is_mapped_from_its_files_and_not_held_between_trials(X, tmp_path):
    """With a cache folder the workspace's input graph is a copy-on-write map of its files there,
    not an in-memory copy the workspace keeps: the tuning benchmark's 50,000 x 2,000 graph
    (0.8 GB) sat in the main process for the whole study and in every worker from its first
    full-size trial on. Now the processes share one copy in the page cache and a map lives as
    long as the trial that reads it. The trials' labels and scores are those of the in-memory
    graph (and of the slow path); a second workspace (a worker) maps the files, computing nothing,
    and an earlier version's one-file cache (``.npz``) is still read. Fails before: the graph was
    an in-memory array held in ``Workspace._graphs``."""
    import gc
    import weakref

    start = Pipeline(reducer="umap", outliers="lof", clusterer="hdbscan", random_state=3)
    space = SearchSpace.from_dict({
        "reducer__n_neighbors": {"int": [10, 40]}, "outliers__n_neighbors": {"int": [5, 60]},
        "clusterer__min_cluster_size": {"int": [5, 40]}},
        base={"reducer": "umap", "outliers": "lof", "clusterer": "hdbscan"}).clamp_to(len(X))
    cache = tmp_path / "cache"
    ws = Workspace(X, space, start, seed=3, cache_dir=cache, subsample=[150])
    mem = Workspace(X, space, start, seed=3, subsample=[150])
    for level in ws.levels:
        g = ws.graph(level, "cosine")
        for a, b in zip(g, mem.graph(level, "cosine")):
            m = _mapped_file(a)
            assert m is not None and Path(m.filename).parent == cache, level
            assert a.dtype == b.dtype and type(a) is np.ndarray
            np.testing.assert_array_equal(a, b)
        maps = [weakref.ref(_mapped_file(a)) for a in g]
        del g, a, m
        gc.collect()
        assert all(r() is None for r in maps), "the workspace keeps the graph's map"
    worker = Workspace(X, space, start, seed=3, cache_dir=cache, subsample=[150])
    p = {"reducer__n_neighbors": 15, "reducer__n_components": 5, "reducer__n_epochs": 100,
         "outliers": "lof", "outliers__n_neighbors": 20, "clusterer__min_cluster_size": 10}
    for level in ws.levels:
        a, b = worker.run(p, level), mem.run(p, level)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert {k: v for k, v in a.metrics.items() if not k.startswith("time")} == \
            {k: v for k, v in b.metrics.items() if not k.startswith("time")}
    assert worker.timings["knn"] == 0.0
    np.testing.assert_array_equal(a.labels, slow_labels(X, p, seed=3, pipeline=start))
    # an earlier version's cache: one .npz per graph
    old = tmp_path / "old"
    old.mkdir()
    for f in cache.glob("knn-*-full-*.indices.npy"):
        stem = f.name[: -len(".indices.npy")]
        np.savez(old / f"{stem}.npz", indices=np.load(f), distances=np.load(cache / f"{stem}.distances.npy"))
    reader = Workspace(X, space, start, seed=3, cache_dir=old, subsample=[150])
    for a, b in zip(reader.graph("full", "cosine"), mem.graph("full", "cosine")):
        np.testing.assert_array_equal(a, b)
    assert reader.timings["knn"] == 0.0
    # converted once, then the one-file copy is gone (0.8 GB at 50,000 x 2,000 left behind before)
    assert not list(old.glob("*.npz")) and len(list(old.glob("knn-*.npy"))) == 2


def test_a_reduced_space_graph_over_the_keep_budget_serves_its_own_trial_only(X, monkeypatch):
    """A trial's LOF graph is kept for later trials on the same embedding only within
    ``ZKNN_KEEP_BYTES``: the tuning benchmark's full-size LOF graph (50,000 items, k 773: 0.6 GB)
    stayed in its process for the rest of the study, on top of the next full-size UMAP fit.
    Over the budget it is freed with its trial, and a later trial on that embedding searches
    again; the labels are the slow path's either way. Fails before: every graph was kept."""
    import gc
    import weakref

    from mediacluster.tune import workspace

    start = Pipeline(reducer="umap", outliers="lof", clusterer="hdbscan", random_state=3)
    space = SearchSpace.from_dict({
        "reducer__n_neighbors": {"int": [10, 40]}, "outliers__n_neighbors": {"int": [5, 60]},
        "clusterer__min_cluster_size": {"int": [5, 40]}},
        base={"reducer": "umap", "outliers": "lof", "clusterer": "hdbscan"}).clamp_to(len(X))
    p = {"reducer__n_neighbors": 15, "reducer__n_components": 5, "reducer__n_epochs": 100,
         "outliers": "lof", "outliers__n_neighbors": 20, "clusterer__min_cluster_size": 10}
    more = p | {"outliers__n_neighbors": 45, "clusterer__min_cluster_size": 15}

    def kept(ws) -> bool:
        pipe = ws.trial_pipeline(p)
        G = ws.outlier_graph(pipe, ws.reduce(pipe), "full")
        ref = weakref.ref(G)
        del G
        gc.collect()
        return ref() is not None

    assert kept(Workspace(X, space, start, seed=3))  # a few kB: kept
    monkeypatch.setattr(workspace, "ZKNN_KEEP_BYTES", 1024, raising=False)  # before: no budget
    ws = Workspace(X, space, start, seed=3)
    assert not kept(ws)
    for q in (p, more):  # the same embedding (cached), its graph searched again
        np.testing.assert_array_equal(ws.run(q).labels, slow_labels(X, q, seed=3, pipeline=start))
    assert ws.stats["umap_fits"] == 1


def test_layout_epochs_reach_every_level_and_equal_the_slow_path(X):
    """``layout_epochs`` sets the epochs of a UMAP that leaves them open, on subsamples and at
    full size alike; a stage's own n_epochs is kept; the trial is the slow path with that many
    epochs."""
    start = Pipeline(reducer="umap", outliers=None, clusterer="hdbscan", random_state=2)
    space = SearchSpace.from_dict({"reducer__n_neighbors": {"int": [10, 30]},
                                   "clusterer__min_cluster_size": {"int": [5, 30]}},
                                  base={"reducer": "umap", "clusterer": "hdbscan"}).clamp_to(len(X))
    p = {"reducer__n_neighbors": 15, "reducer__n_components": 4, "clusterer__min_cluster_size": 10}
    ws = Workspace(X, space, start, seed=2, subsample=[150], layout_epochs=60)
    assert [ws.trial_pipeline(p, lev).reducer.n_epochs for lev in ws.levels] == [60, 60]
    assert ws.trial_pipeline(p | {"reducer__n_epochs": 30}, "sub150").reducer.n_epochs == 30
    plain = Workspace(X, space, start, seed=2, subsample=[150])
    assert plain.trial_pipeline(p, "full").reducer.n_epochs is None  # umap-learn decides
    assert plain.trial_pipeline(p, "sub150").reducer.n_epochs == 500  # as it would for all 300
    fast = ws.run(p).labels
    slow = slow_labels(X, p | {"reducer__n_epochs": 60}, seed=2, pipeline=start)
    assert len(set(slow.tolist()) - {-1}) >= 2
    np.testing.assert_array_equal(fast, slow)
    with pytest.raises(ParameterError, match="layout_epochs"):
        tune(X, space=SPACE, n_trials=1, progress=False, refit=False, layout_epochs=0)
    # one count per level, cheapest first
    per = Workspace(X, space, start, seed=2, subsample=[150], layout_epochs=[40, 60])
    assert [per.trial_pipeline(p, lev).reducer.n_epochs for lev in per.levels] == [40, 60]
    with pytest.raises(ParameterError, match="2 counts for 1 levels"):
        tune(X, space=SPACE, n_trials=1, progress=False, refit=False, layout_epochs=[40, 60])


def test_umap_init_reaches_every_level_unless_the_space_sets_it(X):
    """``umap_init`` sets the layout start of every trial's UMAP (subsamples and full size) when
    the space leaves ``reducer__init`` alone; a space that sets it wins; the trial is the slow
    path with that start."""
    start = Pipeline(reducer="umap", outliers=None, clusterer="hdbscan", random_state=2)
    dims = {"reducer__n_neighbors": {"int": [10, 30]}, "clusterer__min_cluster_size": {"int": [5, 30]}}
    base = {"reducer": "umap", "clusterer": "hdbscan"}
    space = SearchSpace.from_dict(dims, base=base).clamp_to(len(X))
    p = {"reducer__n_neighbors": 15, "reducer__n_components": 4, "clusterer__min_cluster_size": 10}
    ws = Workspace(X, space, start, seed=2, subsample=[150], umap_init="pca")
    assert [ws.trial_pipeline(p, lev).reducer.init for lev in ws.levels] == ["pca", "pca"]
    assert Workspace(X, space, start, seed=2).trial_pipeline(p).reducer.init == "spectral"
    fixed = SearchSpace.from_dict(dims | {"reducer__init": "spectral"}, base=base).clamp_to(len(X))
    assert Workspace(X, fixed, start, seed=2, umap_init="pca").trial_pipeline(
        p | {"reducer__init": "spectral"}).reducer.init == "spectral"
    fast = ws.run(p).labels
    slow = slow_labels(X, p | {"reducer__init": "pca"}, seed=2, pipeline=start)
    assert len(set(slow.tolist()) - {-1}) >= 2
    np.testing.assert_array_equal(fast, slow)
    with pytest.raises(ParameterError, match="umap_init"):
        tune(X, space=SPACE, n_trials=1, progress=False, refit=False, umap_init="svd")
    with pytest.raises(ParameterError, match="knn_method"):
        tune(X, space=SPACE, n_trials=1, progress=False, refit=False, knn_method="hnsw")


def test_input_graph_search_is_exact_up_to_10000_items():
    """knn_method="auto": the approximate (svd) search only for cosine above 10,000 items; an
    explicit "svd" still keeps umap-learn's exact small-data graph below 4,096 items."""
    from mediacluster.tune.workspace import graph_method

    assert graph_method(50000, "cosine") == "svd" and graph_method(10000, "cosine") == "exact"
    assert graph_method(50000, "euclidean") == "exact" and graph_method(50000, "cosine", "exact") == "exact"
    assert graph_method(3000, "cosine", "svd") == "exact" and graph_method(5000, "cosine", "svd") == "svd"


# -- every sampler runs and returns a fitted pipeline -------------------------------------------
@pytest.mark.parametrize("sampler", ["tpe", "random", *(pytest.param(s, marks=pytest.mark.slow)
                                                       for s in ("grid", "gp", "cmaes", "nsga2"))])
def test_each_sampler_returns_a_fitted_pipeline(X, cifar3_embeddings, sampler, tmp_path, shared_cache):
    space = dict(SPACE)
    if sampler == "grid":  # a small discretised grid: 2 x 2 points
        space = {"reducer__n_neighbors": 15, "reducer__n_components": 5, "reducer__n_epochs": 100,
                 "clusterer": "hdbscan", "clusterer__min_cluster_size": {"int": [10, 30]},
                 "clusterer__cluster_selection_method": {"choice": ["eom", "leaf"]}}
    res = tune(cifar3_embeddings, out=tmp_path, space=space, sampler=sampler, n_trials=4, seed=1,
               progress=False, grid_points=2, cache_dir=shared_cache)
    pipe = res.pipeline
    assert pipe is not None and len(pipe.labels_) == len(X)
    assert (pipe.predict(X[:5]) >= -2).all()
    assert (tmp_path / "study.db").exists() and (tmp_path / "best_params.json").exists()
    trials = [t for t in res.study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 4
    for t in trials:  # every trial records all scores, not just the objective
        for k in ("silhouette", "silhouette_input", "dbcv", "coverage", "n_clusters", "time_s", "ext_nmi"):
            assert k in t.user_attrs, (k, t.user_attrs)
    if sampler == "grid":
        assert sorted((t.params["clusterer__min_cluster_size"], t.params["clusterer__cluster_selection_method"])
                      for t in trials) == [(10, "eom"), (10, "leaf"), (30, "eom"), (30, "leaf")]
    if sampler == "nsga2":  # Pareto mode: quality vs coverage, picked trial on the front
        assert res.pareto and all(len(r["values"]) == 2 for r in res.pareto)
        assert res.best_trial in [r["trial"] for r in res.pareto]
    # the refitted pipeline reproduces the best trial's clustering
    best = res.study.trials[res.best_trial]
    assert pipe.n_clusters_ == best.user_attrs["n_clusters"]


# -- interrupted studies continue ---------------------------------------------------------------
@pytest.mark.slow
def test_interrupted_study_resumes_with_the_same_numbering(X, tmp_path, shared_cache):
    import optuna

    calls = {"n": 0}

    def flaky(m):  # dies (like Ctrl-C) during the third trial
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return m["coverage"]

    with pytest.raises(KeyboardInterrupt):
        tune(X, out=tmp_path, space=SPACE, objective=flaky, n_trials=5, progress=False,
             cache_dir=shared_cache)
    study = optuna.load_study(study_name="mediacluster", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    # a SIGKILL leaves the trial RUNNING in storage: what ask() without tell() leaves too
    from optuna.distributions import CategoricalDistribution, IntDistribution

    study.ask({"reducer__n_neighbors": IntDistribution(10, 30),
               "reducer__n_components": CategoricalDistribution([3, 5]),
               "clusterer__min_cluster_size": IntDistribution(5, 40, log=True),
               "clusterer__cluster_selection_method": CategoricalDistribution(["eom", "leaf"])})
    assert study.trials[-1].state.name == "RUNNING"
    res = tune(X, out=tmp_path, space=SPACE, objective=flaky, n_trials=5, progress=False,
               refit=False, cache_dir=shared_cache)
    trials = res.study.trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert trials[3].state.name == "FAIL" and trials[3].user_attrs["failed_reason"] == "interrupted"
    assert res.summary["timing"]["recovered_trials"] == [3]
    retried = [t for t in trials if t.user_attrs.get("retry_of") == 3]
    assert len(retried) == 1 and retried[0].params == trials[3].params  # re-enqueued, not lost
    assert sum(t.state.name == "COMPLETE" for t in trials) == 5
    # a different space in the same folder is refused rather than mixed in
    with pytest.raises(ValueError, match="different space"):
        tune(X, out=tmp_path, space={"clusterer": "hdbscan", "clusterer__min_cluster_size": {"int": [5, 9]}}, n_trials=6,
             progress=False, refit=False)


@pytest.mark.slow
def test_resumed_study_prints_no_optuna_log_lines(X, tmp_path):
    """Re-running the same tune command continues the study without Optuna's own INFO line
    ('[I ...] Using an existing study ...') on the terminal."""
    import subprocess
    import sys

    np.save(tmp_path / "v.npy", X)
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    cmd = [sys.executable, "-m", "mediacluster", "tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"),
           "--space", str(tmp_path / "space.json"), "--quiet", "--sampler", "random", "--trials"]
    for n in ("1", "2"):
        r = subprocess.run(cmd + [n], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    assert "2 trials" in r.stdout and "Using an existing study" not in r.stderr, r.stderr


def test_cli_tune_on_a_vectors_file(X, tmp_path, capsys, caplog):
    from mediacluster.cli import main

    caplog.set_level("INFO", logger="mediacluster.tune.study")
    np.save(tmp_path / "v.npy", X)
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    rc = main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--trials", "2",
               "--space", str(tmp_path / "space.json"), "--quiet", "--pareto", "--sampler", "random"])
    text = capsys.readouterr().out
    assert rc == 0 and "Pareto front" in text and "best parameters" in text
    # the best trial's line: rounded, and each silhouette named by its space (one was printed bare)
    best = next(ln for ln in text.splitlines() if ln.startswith("best trial"))
    assert re.fullmatch(r"best trial \d+: objective -?\d\.\d{4} / \d\.\d{4}, clusters \d+, coverage \d\.\d{3}, "
                        r"silhouette -?\d\.\d{3} in the input space, -?\d\.\d{3} in the reduced space", best), best
    # a space that leaves n_epochs open (a fresh UMAP stage: the default pipeline's own UMAP
    # sets 200): --layout-epochs sets the trials' and the model's count
    open_space = {"reducer": "umap"} | {k: v for k, v in SPACE.items() if k != "reducer__n_epochs"}
    (tmp_path / "open.json").write_text(json.dumps(open_space))
    rc = main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o3"), "--trials", "1",
               "--space", str(tmp_path / "open.json"), "--quiet", "--layout-epochs", "30",
               "--umap-init", "random"])
    assert rc == 0
    # the shared input graph, before the first trial, is said with its time (50,000 items: minutes)
    said = [r.getMessage() for r in caplog.records if r.name == "mediacluster.tune.study"]
    assert any(m.startswith(f"neighbour graph of the inputs ({len(X):,} items") for m in said), said
    assert any(re.fullmatch(r"neighbour graph: \d+\.\d s", m) for m in said), said
    best = json.loads((tmp_path / "o3" / "best_params.json").read_text())
    assert best["params"]["reducer__n_epochs"] == 30 and best["params"]["reducer__init"] == "random"
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"clusterer": "hdbscan", "clusterer__min_cluster_size": {"int": [9, 3]}}))
    rc = main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o2"), "--space", str(bad)])
    assert rc == 2 and "min 9 > max 3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage error, exit 2, names the flag
        main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o4"), "--leader-margin", "-1"])
    assert exit_info.value.code == 2 and "--leader-margin" in capsys.readouterr().err


def test_zero_trials_is_refused_by_name_before_any_work(X, tmp_path, capsys):
    """--trials 0 (and n_trials=0) is a bad parameter, not a study in which no trial finished."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", X)
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--trials", "0", "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--trials" in err and "no trial finished" not in err
    assert not (tmp_path / "o").exists()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="n_trials") as info:
            tune(X, space=SPACE, n_trials=bad, progress=False, refit=False)
        assert info.value.param == "n_trials"


def test_zero_or_negative_jobs_is_refused_by_name_before_any_work(X, tmp_path, capsys):
    """--jobs 0 / -1 ran one process without a word (a joblib user reads -1 as every core);
    it is a bad parameter, named, before any work."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", X)
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "o"), "--jobs", bad, "--quiet"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "--jobs" in err and "at least 1" in err
        assert not (tmp_path / "o").exists()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="n_jobs") as info:
            tune(X, space=SPACE, n_trials=1, n_jobs=bad, progress=False, refit=False)
        assert info.value.param == "n_jobs"


def test_a_study_whose_every_trial_fails_stops_and_names_the_first_failure(tmp_path, capsys):
    """Every trial failing (here: more clusters than items) ran trials for ever (failed trials do
    not count towards --trials: 2,000 in 10 s) and, with --timeout, ended "no trial finished"
    pointing at reasons the study did not hold. Now the run stops once as many trials failed as
    were asked for, and the message gives the first failure's parameters and error."""
    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    space = {"reducer": "pca", "reducer__n_components": {"choice": [3, 5]}, "clusterer": "kmeans",
             "clusterer__n_clusters": {"choice": [50, 60]}}
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"no trial finished: the 3 trials of this study failed; the first "
                                         r"\(trial 0, .*clusterer__n_clusters=(50|60)\): ParameterError: n_clusters=\d+ but "
                                         r"there are only 40 items") as info:
        tune(X, space=space, n_trials=3, out=tmp_path / "o", timeout=60, progress=False, refit=False)
    assert time.perf_counter() - t0 < 30
    import optuna

    study = optuna.load_study(study_name="mediacluster", storage=f"sqlite:///{tmp_path / 'o' / 'study.db'}")
    assert len(study.trials) == 3 and study.trials[0].user_attrs["failed_reason"].startswith("ParameterError")
    assert "reasons are in the study" not in str(info.value)
    # vectors no trial can fit (a row too long for float32 distances) are refused before any trial
    big = X.copy()
    big[5] *= 1e19
    with pytest.raises(InputError, match="vector 5 has values too large"):
        tune(big, space=space, n_trials=3, out=tmp_path / "o2", progress=False, refit=False)
    assert not (tmp_path / "o2").exists()


def test_the_largest_seed_tunes_and_resumes(tmp_path):
    """--seed 2**32 - 1 (the largest numpy takes): a resumed study's sampler seed (seed plus the
    trials held) passed numpy's range and the resume crashed in optuna."""
    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    seed = 2**32 - 1
    kw = dict(out=tmp_path, space=PCA_KMEANS, seed=seed, progress=False, refit=False)
    assert _tune(X, Pipeline(random_state=seed), n_trials=2, **kw).summary["n_trials"] == 2
    assert _tune(X, Pipeline(random_state=seed), n_trials=3, **kw).summary["n_trials"] == 3


@pytest.mark.slow
def test_resumed_tune_publishes_no_copy_of_an_unchanged_best(X, tmp_path, capsys):
    """Re-running a finished study (no new trial, or none better) refits the same best trial:
    no second model version of it, and the output says so; a different best is published."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", X)
    space = {"reducer": "pca", "reducer__n_components": {"choice": [5, 8]}, "clusterer": "kmeans",
             "clusterer__n_clusters": {"int": [2, 6]}}
    (tmp_path / "space.json").write_text(json.dumps(space))
    out = tmp_path / "o"
    cmd = ["tune", str(tmp_path / "v.npy"), "--out", str(out), "--space", str(tmp_path / "space.json"),
           "--quiet", "--sampler", "random", "--trials"]
    assert main(cmd + ["2"]) == 0
    assert "model: " in capsys.readouterr().out
    assert sorted(p.name for p in (out / "models").iterdir()) == ["LATEST", "v0001"]
    assert main(cmd + ["2"]) == 0  # the study is complete: the same best trial again
    text = capsys.readouterr().out
    assert "model: best unchanged: v0001" in text, text
    assert sorted(p.name for p in (out / "models").iterdir()) == ["LATEST", "v0001"]
    summary = json.loads((out / "tune.json").read_text())  # the summary names the model too
    assert Path(summary["model"]).name == "v0001" and summary["model_unchanged"] is True
    # a different best (here: the published version names another trial) is a new version
    model_json = out / "models" / "v0001" / "model.json"
    doc = json.loads(model_json.read_text())
    doc["metadata"]["tuned"]["trial"] += 1
    model_json.write_text(json.dumps(doc))
    assert main(cmd + ["2"]) == 0
    assert "model: " in (text := capsys.readouterr().out) and "unchanged" not in text
    assert (out / "models" / "v0002").is_dir()
    summary = json.loads((out / "tune.json").read_text())
    assert Path(summary["model"]).name == "v0002" and "model_unchanged" not in summary


@pytest.mark.parametrize("flag, first, then", [("--seed", "0", "1"), ("--sampler", "random", "tpe")])
def test_a_study_resumed_with_another_seed_or_sampler_is_refused(tmp_path, capsys, flag, first, then):
    """A resume with another --seed was accepted without a word: its new trials were fitted with
    the new seed and the best trial (scored under the old one) refitted with it, so the published
    model was not the one the trial scored. Refused, naming the flag and the study's value."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32))
    (tmp_path / "space.json").write_text(json.dumps(PCA_KMEANS))
    out = tmp_path / "o"
    cmd = ["tune", str(tmp_path / "v.npy"), "--out", str(out), "--space", str(tmp_path / "space.json"),
           "--quiet", "--no-refit", "--trials", "3"]
    other = {"--seed": ["--sampler", "random"], "--sampler": []}[flag]
    assert main(cmd + ["--trials", "2", flag, first] + other) == 0
    capsys.readouterr()
    assert main(cmd + [flag, then] + other) == 2
    err = capsys.readouterr().err
    assert f"run with {flag[2:]} " in err and f"resume it with {flag} {first}" in err, err
    assert str(out / "study.db") in err
    assert main(cmd + [flag, first] + other) == 0  # the same settings resume it
    assert json.loads((out / "tune.json").read_text())["n_trials"] == 3


PCA_KMEANS = {"reducer": "pca", "reducer__n_components": {"choice": [5, 8]}, "clusterer": "kmeans",
              "clusterer__n_clusters": {"int": [2, 6]}}


@pytest.mark.slow
def test_resumed_tune_with_an_unchanged_best_loads_the_published_version_instead_of_refitting(X, tmp_path):
    """Nothing is published when the best is unchanged, so the best pipeline is not fitted again:
    the result's pipeline is the published version, loaded, with the same answers."""
    out = tmp_path / "o"
    kw = dict(out=out, space=PCA_KMEANS, sampler="random", progress=False)
    first = Pipeline(random_state=0).tune(X, n_trials=2, **kw)
    assert "refit_loaded" not in first.summary and (out / "models" / "v0001").is_dir()
    again = Pipeline(random_state=0).tune(X, n_trials=2, **kw)  # complete: the same best
    assert again.summary["model_unchanged"] is True
    v1 = str(out / "models" / "v0001")
    assert again.summary["refit_loaded"] == v1 and getattr(again.pipeline, "model_path_", None) == v1
    assert np.array_equal(again.pipeline.labels_, first.pipeline.labels_)
    assert np.array_equal(again.pipeline.predict(X[:20]), first.pipeline.predict(X[:20]))
    assert again.summary["refit_n_clusters"] == first.summary["refit_n_clusters"]
    assert sorted(p.name for p in (out / "models").iterdir()) == ["LATEST", "v0001"]
    # a damaged published version is refitted and published anew, not trusted
    arrays = out / "models" / "v0001" / "arrays.npz"
    arrays.write_bytes(b"not an npz")
    third = Pipeline(random_state=0).tune(X, n_trials=2, **kw)
    assert "refit_loaded" not in third.summary and Path(third.summary["model"]).name == "v0002"


@pytest.mark.slow
def test_a_version_published_before_tuned_recorded_seed_and_params_is_not_copied_on_resume(X, tmp_path):
    """A model published when the 'tuned' metadata held trial, value and study only: resuming
    the study with the same best publishes nothing; a resume with another seed (the model's
    random_state says which seed its refit used) that differs from the study's is refitted."""
    from mediacluster.fileio import read_json, write_json

    out = tmp_path / "o"
    kw = dict(out=out, space=PCA_KMEANS, sampler="random", progress=False, n_trials=2)
    Pipeline(random_state=0).tune(X, **kw)
    model_json = out / "models" / "v0001" / "model.json"
    doc = read_json(model_json)
    doc["metadata"]["tuned"] = {k: doc["metadata"]["tuned"][k] for k in ("trial", "value", "study")}
    write_json(model_json, doc)
    res = Pipeline(random_state=0).tune(X, **kw)
    assert res.summary.get("model_unchanged") is True, res.summary.get("model")
    assert sorted(p.name for p in (out / "models").iterdir()) == ["LATEST", "v0001"]
    doc["pipeline"]["random_state"] = 1  # a refit with another seed (studies now refuse one)
    write_json(model_json, doc)
    res = Pipeline(random_state=0).tune(X, **kw)
    assert "model_unchanged" not in res.summary and Path(res.summary["model"]).name == "v0002"


def test_pipeline_tune_keeps_the_starting_pipelines_settings(X, shared_cache):
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages.reduce import UMAPReducer

    start = Pipeline(reducer=UMAPReducer(n_neighbors=15, n_components=5, n_epochs=100),
                     assign_noise=False, random_state=2)
    res = start.tune(X, space={"clusterer": "hdbscan", "clusterer__min_cluster_size": {"int": [5, 30]}},
                     n_trials=3, progress=False, cache_dir=shared_cache)
    assert res.best_params["reducer__n_neighbors"] == 15 and res.best_params["reducer__n_epochs"] == 100
    assert res.summary["seed"] == 2 and res.pipeline.assign_noise is False
    assert res.summary["workspace"]["umap_fits"] + res.summary["workspace"]["umap_disk_hits"] == 1


def test_pipeline_tune_without_a_space_tunes_its_own_stages(X, shared_cache):
    """The default pipeline's clusterer (K-means with k from the silhouette curve) stays: the
    space comes from the registry's tunable ranges of the pipeline's own stages."""
    from mediacluster.stages.cluster import KMeansClusterer
    from mediacluster.stages.reduce import PCAReducer

    start = Pipeline(reducer=PCAReducer(n_components=8), clusterer=KMeansClusterer(n_clusters=3),
                     random_state=1)
    res = start.tune(X, n_trials=4, progress=False, cache_dir=shared_cache)
    assert set(res.study.best_trial.params) == {"reducer__n_components", "clusterer__n_clusters"}
    assert isinstance(res.pipeline.clusterer_, KMeansClusterer)
    assert res.best_params["clusterer"] == "kmeans" and res.best_params["reducer"] == "pca"
    assert res.pipeline.n_clusters_ == res.best_params["clusterer__n_clusters"]


# -- multi-fidelity: successive halving over nested subsamples ----------------------------------
@pytest.mark.slow
def test_successive_halving_prunes_on_subsamples_and_promotes_the_best(cifar3_embeddings, tmp_path,
                                                                       shared_cache):
    from mediacluster.tune.study import _fidelity_sizes

    assert _fidelity_sizes(50000, "auto", 5) == [2000, 10000]
    assert _fidelity_sizes(50000, "auto", 4) == [3125, 12500]
    assert _fidelity_sizes(10000, "auto", 5) == [2000]
    assert _fidelity_sizes(5000, "auto", 5) == [] and _fidelity_sizes(50000, "off", 5) == []
    assert _fidelity_sizes(300, [150, 75, 400], 5) == [75, 150]
    n_trials = 12
    res = tune(cifar3_embeddings, out=tmp_path, space=SPACE, sampler="random", n_trials=n_trials, seed=4,
               fidelity=[75, 150], prune_keep=0.5, progress=False, refit=False,
               cache_dir=shared_cache)
    # when halving pruned all 12 (data-dependent on 300 items), one more trial ran the best of
    # them at full size (promote_best_pruned, tested on its own below); the halving checks read
    # the 12
    extra = [t for t in res.study.trials if "final_of" in t.user_attrs]
    trials = [t for t in res.study.trials if "final_of" not in t.user_attrs]
    states = [t.state.name for t in trials]
    assert len(trials) == n_trials and set(states) <= {"COMPLETE", "PRUNED"} and len(extra) <= 1
    assert "PRUNED" in states and ("COMPLETE" in states) != bool(extra)
    assert res.summary["timing"]["final_of_pruned"] == (extra[0].number if extra else None)
    per = res.summary["trials_per_level"]
    assert list(per.values())[0] == n_trials  # every trial ran on the smallest subsample first
    assert n_trials > list(per.values())[1] >= states.count("COMPLETE")
    assert per["full (300 items)"] == states.count("COMPLETE") + len(extra)
    for t in trials:
        r0 = t.user_attrs["rung0"]
        assert r0["n_items"] == 75 and "ext_nmi" in r0 and "objective" in r0
        if t.state.name == "COMPLETE":  # promoted twice: judged on both rungs, then full size
            assert t.user_attrs["rung1"]["n_items"] == 150 and t.user_attrs["n_items"] == 300
            assert sorted(t.intermediate_values) == [1, 2]
    # the first trial at a rung stops there (bootstrap), a promoted trial is the better half of
    # what its rung had seen (rf = 2) and never the worst
    seen: list[float] = []
    for t in sorted(trials, key=lambda t: t.number):
        v = t.user_attrs["rung0"]["objective"]
        if not seen:
            assert "rung1" not in t.user_attrs
        if "rung1" in t.user_attrs:
            assert v >= min(seen)
        seen.append(v)
    # promote_full="leader": a trial reaches the full size only with a last-rung value above that
    # of every trial that reached it before (one process: in trial order) by more than one
    # standard error of its objective, recorded at the last rung
    best = -np.inf
    for t in sorted(trials, key=lambda t: t.number):
        if "rung1" in t.user_attrs:  # recorded for the trials ahead of every promoted one
            se = t.user_attrs["rung1"].get("objective_se")
            assert se is None or se > 0
            assert ("objective_se" in t.user_attrs["rung1"]) == (t.intermediate_values[2] > best)
        if t.state.name == "COMPLETE":
            assert t.user_attrs["promoted_full"]
            assert t.intermediate_values[2] > best + (t.user_attrs["rung1"]["objective_se"] or 0.0)
            best = t.intermediate_values[2]
        elif "rung1" in t.user_attrs:
            assert "promoted_full" not in t.user_attrs
    assert res.study.user_attrs["promote_full"] == "leader"
    assert res.study.user_attrs["leader_margin"] == 1.0
    with pytest.raises(ParameterError, match="leader_margin"):
        tune(cifar3_embeddings, space=SPACE, n_trials=1, progress=False, refit=False, leader_margin=-1)
    with pytest.raises(ParameterError, match="promote_full"):
        tune(cifar3_embeddings, space=SPACE, n_trials=1, progress=False, refit=False,
             promote_full="all")


def test_a_study_whose_every_trial_was_pruned_runs_the_best_at_full_size(cifar3_embeddings, tmp_path):
    """Successive halving stops the first trial at each rung, so a study of one trial on
    subsamples used to end with nothing to pick ("no trial finished"); now the trial that got
    furthest runs once more at full size, and that is the answer."""
    res = tune(cifar3_embeddings, out=tmp_path, space=SPACE, sampler="random", n_trials=1, seed=0,
               fidelity=[75, 150], progress=False, refit=False)
    first, final = res.study.trials
    assert first.state.name == "PRUNED" and sorted(first.intermediate_values) == [1]
    assert final.state.name == "COMPLETE" and final.user_attrs["final_of"] == first.number
    assert final.params == first.params and final.user_attrs["fidelity"] == "full"
    assert final.user_attrs["n_items"] == 300 and not final.intermediate_values  # no rung re-run
    assert res.summary["timing"]["final_of_pruned"] == final.number
    assert res.best_trial == final.number


def test_the_pruned_trial_run_at_full_size_is_the_one_that_got_furthest_and_was_best_there():
    """``promote_best_pruned`` among several pruned trials: the furthest rung reached first, then
    the best value at that rung (maximised); a trial stopped at an earlier rung with a higher
    value is not it. Its parameters run once at full size, marked ``final_of``."""
    import optuna

    from mediacluster.tune.study import FINAL_OF, promote_best_pruned

    class Objective:
        multi = False

        def __call__(self, trial):
            return trial.suggest_float("x", 0.0, 1.0)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for x, reached in ((0.1, {1: 0.9}), (0.2, {1: 0.5, 2: 0.3}), (0.3, {1: 0.4, 2: 0.45}), (0.4, {1: 0.6, 2: 0.1})):
        study.enqueue_trial({"x": x})
        t = study.ask()
        t.suggest_float("x", 0.0, 1.0)
        for step, v in reached.items():
            t.report(v, step)
        study.tell(t, state=optuna.trial.TrialState.PRUNED)
    pruned = study.get_trials(deepcopy=False)
    chosen = pruned[2]  # rung 2 reached, best there (0.45 > 0.3 > 0.1); trial 0 has 0.9 but only at rung 1
    new = promote_best_pruned(study, Objective())
    final = study.trials[new]
    assert final.state.name == "COMPLETE" and final.user_attrs[FINAL_OF] == chosen.number
    assert final.params == chosen.params == {"x": 0.3}


def test_cli_tune_publishes_a_model_with_encoder_and_names(cifar3_dir, cifar3_embeddings, tmp_path):
    """The model `tune` publishes in OUT/models records the encoder and its clusters' names, as
    `cluster --save-model` does, so `assign` / `serve` on the tuning folder answer with names."""
    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline

    out = tmp_path / "t"
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"reducer": "pca", "reducer__n_components": {"int": [5, 10]},
                                 "clusterer": "kmeans", "clusterer__n_clusters": {"int": [2, 4]}}))
    rc = main(["tune", str(cifar3_dir), "--out", str(out), "--trials", "3", "--space", str(space),
               "--quiet", "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    model = Pipeline.load(out)
    meta = model.model_info_["metadata"]
    assert meta["encoder"] == cifar3_embeddings.encoder
    ids = {int(c) for c in np.unique(model.labels_) if c >= 0}
    assert ids and {int(k) for k in meta["names"]} == ids
    assert all(isinstance(v, str) and v for v in meta["names"].values())
    # and the items' ids and paths, for `similar`
    emb = cifar3_embeddings
    sim = model.similar(emb.vectors[[5, 250]], k=1)
    assert sim["ids"] == [[emb.ids[5]], [emb.ids[250]]] and sim["paths"] == [[emb.paths[5]], [emb.paths[250]]]


def test_objective_se_carries_the_silhouettes_sampling_error():
    """The default objective is silhouette_input x coverage x (1 - 1/k): one standard error of
    the sampled silhouette moves it by se x coverage x (1 - 1/k); DBCV has no recorded SE."""
    from mediacluster.tune.objectives import get_objective, objective_se

    m = {"silhouette_input": 0.1, "silhouette_input_se": 0.002, "coverage": 0.9, "n_clusters": 4,
         "silhouette": 0.5, "silhouette_se": 0.01, "dbcv": 0.3}
    _, f = get_objective("default")
    assert objective_se(f, m) == pytest.approx(0.002 * 0.9 * 0.75)
    _, f = get_objective("silhouette")  # reduced-space silhouette: its own SE
    assert objective_se(f, m) == pytest.approx(0.01)
    assert objective_se(get_objective("dbcv")[1], m) is None
    assert objective_se(get_objective("default")[1], m | {"silhouette_input_se": None}) is None
    assert objective_se(get_objective("default")[1], m | {"n_clusters": 1}) is None  # WORST


def test_leader_rule_sends_on_only_a_clear_new_leader():
    """At the last rung a trial goes on to the full size only if it beats every trial already
    sent on by more than leader_margin standard errors of its own objective."""
    import optuna

    from mediacluster.tune.study import PROMOTED, _leader_pruner_class

    def judge(study, value, se):
        t = study.ask()
        t.set_user_attr("rung0", {"objective_se": se})
        t.report(value, 1)
        pruned = t.should_prune()
        if not pruned:
            t.set_user_attr(PROMOTED, True)
        if pruned:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, value)
        return pruned

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rule = _leader_pruner_class()
    study = optuna.create_study(direction="maximize",
                                pruner=rule(optuna.pruners.NopPruner(), last_step=1, rung=0, margin=1.0))
    assert judge(study, 0.060, 0.001) is False       # the first goes on
    assert judge(study, 0.0605, 0.001) is True       # ahead, but inside one SE
    assert judge(study, 0.0612, 0.001) is False      # a clear lead
    assert judge(study, 0.0500, None) is True        # behind (no SE recorded: no margin)
    assert judge(study, 0.0613, None) is False       # ahead, no SE: any lead counts
    # which trials the objective's SE is measured for (the margin's input): only one ahead of
    # every trial sent on (0.0613 so far); none sent on yet: any
    from mediacluster.tune.study import _may_lead

    assert _may_lead(study, 0.0614, 1) and not _may_lead(study, 0.0613, 1) and not _may_lead(study, 0.05, 1)
    assert _may_lead(optuna.create_study(direction="maximize"), -1.0, 1)
    loose = optuna.create_study(direction="maximize",
                                pruner=rule(optuna.pruners.NopPruner(), last_step=1, rung=0, margin=0.0))
    assert judge(loose, 0.060, 0.001) is False and judge(loose, 0.0605, 0.001) is False


@pytest.mark.slow
def test_worker_processes_tune_the_studys_own_data_in_a_shared_cache(tmp_path):
    """``tune(n_jobs=2)`` handed its worker processes the vectors through ``cache_dir/X.npy``,
    written only when absent: a cache folder shared with an earlier study of other data (or an
    ``--out`` whose study.db was removed to start again) gave the workers the earlier data, so
    their trials scored another collection (measured: trials of 6 blobs answering 2-blob
    clusterings) and the best trial could be one of them. The workers now read a file named
    after the data, as the cached graphs beside it are. Unlabelled items (None; NaN read as the
    class "nan") reached the workers as a class "" of their own, so their trials' recorded
    ``ext_*`` scores were not the main process's."""
    def blobs(k, seed, n=240):
        r = np.random.default_rng(seed)
        c = r.normal(size=(k, 16)) * 8
        return (np.vstack([c[i] + r.normal(size=(n // k, 16)) for i in range(k)]).astype(np.float32),
                np.repeat(np.arange(k), n // k))

    cache = tmp_path / "cache"
    X1, _ = blobs(2, 2)
    _tune(X1, Pipeline(random_state=0), out=tmp_path / "a", cache_dir=cache, n_trials=1, n_jobs=2,
          space={"clusterer__min_cluster_size": {"int": [5, 6]}}, progress=False, refit=False)
    X2, y2 = blobs(6, 6)
    # every 4th item unlabelled (None, or NaN as a float array holds it): no class of its own,
    # in the workers' trials as in the main process's (the workers read them back as a class "")
    y2 = [None if i % 8 == 0 else np.nan if i % 4 == 0 else int(v) for i, v in enumerate(y2)]
    res = _tune(X2, Pipeline(random_state=0), out=tmp_path / "b", cache_dir=cache, n_trials=10, n_jobs=2,
                space={"reducer__n_neighbors": {"int": [5, 60]}}, sampler="random", labels=y2,
                progress=False, refit=False)
    trials = [t for t in res.study.trials if t.datetime_complete is not None]
    if len({t.user_attrs.get("pid") for t in trials}) < 2:  # the worker started after every trial ran
        pytest.skip("the worker process took no trial on this machine now")
    assert all(t.user_attrs["ext_nmi"] > 0.97 for t in trials), [(t.number, t.user_attrs["ext_nmi"]) for t in trials]


def test_a_pick_without_a_pareto_front_is_refused_before_any_trial(tmp_path, capsys):
    """``tune --pick 3`` without ``--pareto`` (or nsga2) ran the whole study and then refitted and
    published the best trial, not trial 3, without a word: the flag chooses from a Pareto front,
    which a single-objective study has not."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
    assert main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "t"), "--trials", "2", "--pick", "1",
                 "--quiet"]) == 2
    assert "pick" in (err := capsys.readouterr().err) and "--pareto" in err
    assert not (tmp_path / "t" / "study.db").exists()


def test_a_report_without_the_refit_is_refused_before_any_trial(tmp_path, capsys):
    """``tune --report --no-refit`` ran the whole study, then said "--report needs the refit best
    pipeline (drop --no-refit)" (exit 2): the report is of the refit best pipeline."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
    assert main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "t"), "--trials", "2", "--report",
                 "--no-refit", "--quiet"]) == 2
    assert "--no-refit" in capsys.readouterr().err
    assert not (tmp_path / "t" / "study.db").exists()


@pytest.mark.parametrize("timeout", [-5.0, 0.0, float("nan")])
def test_a_timeout_that_is_no_time_is_refused_by_name(timeout, tmp_path):
    """``tune --timeout -5`` computed the neighbour graph, started no trial and ended "no trial
    finished; nothing to pick (give more --trials or --timeout)"; ``0`` and NaN meant no limit."""
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    with pytest.raises(ParameterError, match="timeout must be a number of seconds above 0"):
        _tune(X, Pipeline(random_state=0), out=tmp_path / "t", n_trials=1, timeout=timeout, progress=False,
              refit=False)
    assert not (tmp_path / "t" / "study.db").exists()


def test_a_space_file_giving_a_parameter_twice_is_refused_naming_the_line(tmp_path):
    """A space file with ``reducer__n_components`` twice searched the second range only, silently
    (PyYAML keeps the last key). A merge (``<<: *base``) may still give a key again."""
    p = tmp_path / "space.yaml"
    p.write_text("reducer__n_components: {int: [2, 50]}\nclusterer__min_cluster_size: {int: [5, 50]}\n"
                 "reducer__n_components: {int: [5, 10]}\n")
    with pytest.raises(SpaceError, match=r"space.yaml: not valid YAML: line 3, column 1: found the key "
                                         r"'reducer__n_components' a second time \(first on line 1\)"):
        load_space(str(p), 500)
    p.write_text("base: &b {int: [2, 50], log: true}\nreducer__n_components:\n  <<: *b\n  int: [5, 10]\n")
    with pytest.raises(SpaceError, match="'base'"):  # read, then refused as an unknown name
        load_space(str(p), 500)


@pytest.mark.parametrize("content", [b"junk\n", b"SQLite format 3\x00" + b"\x10\x00" + b"\x00" * 80])
def test_a_study_db_that_is_no_database_is_refused_naming_it(tmp_path, content):
    """``--out`` holding a ``study.db`` cut short (a copy, a full disk) or overwritten: SQLAlchemy's
    DatabaseError ("database disk image is malformed", "file is not a database") was an internal
    error with a crash log."""
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    (tmp_path / "study.db").write_bytes(content)
    with pytest.raises(InputError, match=r"study.db cannot be read as a study \(.*\): move it away"):
        _tune(X, Pipeline(), out=tmp_path, n_trials=1, progress=False)


def test_tune_refuses_an_encoder_for_a_vectors_file(tmp_path, capsys):
    """``tune v.npy --encoder clip:...`` tuned the file's own vectors, the encoder unused, silently."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32))
    assert main(["tune", str(tmp_path / "v.npy"), "--out", str(tmp_path / "t"), "--encoder", "mfcc", "--quiet"]) == 2
    assert "--encoder mfcc" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


class _Records(__import__("logging").Handler):
    """Every record that reaches optuna's own logger (which does not propagate to the root)."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.mark.parametrize("stop", [KeyboardInterrupt, "numba"])
def test_a_ctrl_c_in_a_trial_logs_no_optuna_traceback(tmp_path, stop):
    """Ctrl-C during `tune`: optuna logged the stopped trial as failed with its ~30-line traceback
    before the CLI's "interrupted". Nothing of it is logged now; the interrupt still propagates
    (the CLI maps it to exit 130) and the study is resumable."""
    import logging

    def objective(m):
        if stop is KeyboardInterrupt:
            raise KeyboardInterrupt
        try:  # a Ctrl-C inside numba code reaches Python as a SystemError caused by it
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from e

    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    h = _Records()
    h.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("optuna").addHandler(h)
    try:
        with pytest.raises((KeyboardInterrupt, SystemError)):
            _tune(X, Pipeline(), out=tmp_path, space=PCA_KMEANS, objective=objective, n_trials=2,
                  progress=False, refit=False)
    finally:
        logging.getLogger("optuna").removeHandler(h)
    assert not any("failed" in line or "Traceback" in line for line in h.lines), h.lines


def test_a_trial_failed_by_its_parameters_keeps_its_reason_without_the_traceback(tmp_path):
    """A trial failed by what its parameters cause (a MediaclusterError) is logged in one line
    that names the error and its message; optuna's traceback and its "failed with value None."
    line are left out."""
    import logging

    def objective(m):
        raise ParameterError("too few clusters to score", "clusterer__n_clusters")

    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    h = _Records()
    h.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("optuna").addHandler(h)
    try:
        with pytest.raises(InputError, match="no trial finished.*too few clusters to score"):
            _tune(X, Pipeline(), out=tmp_path, space=PCA_KMEANS, objective=objective, n_trials=1,
                  progress=False, refit=False)
    finally:
        logging.getLogger("optuna").removeHandler(h)
    failed = [line for line in h.lines if "failed" in line]
    assert failed and all("ParameterError('too few clusters to score'" in line for line in failed), h.lines
    assert not any("Traceback" in line for line in h.lines), h.lines


def _interrupted_tune(tmp_path, interrupt, timeout: float) -> tuple[int, str]:
    """The real CLI's `tune --jobs 2` on 200 vectors, ``interrupt(pid)`` once both processes
    have finished trials: (exit code, stderr)."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    X = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    (tmp_path / "space.json").write_text(json.dumps(PCA_KMEANS))
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    p = subprocess.Popen([sys.executable, "-m", "mediacluster", "tune", str(tmp_path / "v.npy"), "--out", str(out),
                          "--space", str(tmp_path / "space.json"), "--quiet", "--no-refit", "--trials", "100000",
                          "--jobs", "2", "--sampler", "random"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, env=env, preexec_fn=sigint_default)
    try:
        deadline = time.time() + 120
        pids = set()
        while len(pids) < 2 and time.time() < deadline and p.poll() is None:
            time.sleep(0.5)
            try:
                with sqlite3.connect(out / "study.db") as db:
                    pids = {v for (v,) in db.execute("select value_json from trial_user_attributes where key='pid'")}
            except sqlite3.Error:
                pass  # not created yet
        assert len(pids) == 2, (pids, p.poll())
        interrupt(p.pid)
        _, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return p.returncode, err


@pytest.mark.slow
def test_a_ctrl_c_during_a_tune_with_workers_prints_no_traceback(tmp_path):
    """A Ctrl-C reaches every process of the terminal's group: with --jobs 2 the worker's
    KeyboardInterrupt was printed by multiprocessing, ~50 lines above "interrupted". The real CLI,
    SIGINT to its process group once both processes have finished trials: exit 130, no traceback."""
    import os
    import signal

    code, err = _interrupted_tune(tmp_path, lambda pid: os.killpg(pid, signal.SIGINT), timeout=120)
    assert code == 130, err
    assert "Traceback" not in err and "interrupted; finished work is kept" in err, err


@pytest.mark.slow
def test_a_tune_interrupted_alone_does_not_wait_on_its_workers(tmp_path):
    """SIGINT to the main process only (``kill -INT PID``, a supervisor): its workers never see
    it and went on with their trials (here 100,000), and the command waited on them for ever.
    Now a stopped tune terminates the workers that have not ended WORKER_GRACE_S later: exit
    130, the finished trials kept."""
    import os
    import signal

    code, err = _interrupted_tune(tmp_path, lambda pid: os.kill(pid, signal.SIGINT), timeout=60)
    assert code == 130, err
    assert "interrupted; finished work is kept" in err, err


def test_two_tunes_on_one_out_publish_their_common_best_once(tmp_path):
    """Two `tune` on one --out share the study; each checked the store for its best before
    refitting, found nothing (the other had not published yet) and published: two identical
    versions. The check is made again under the store's lock when publishing, so the second
    publishes nothing and says the model is already published. Here the other tune runs,
    whole, in the first one's last step before publishing (``model_metadata``)."""

    X = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
    out = tmp_path / "o"
    kw = dict(out=out, space=PCA_KMEANS, sampler="random", progress=False, n_trials=2)
    other = []

    def meanwhile(pipe):
        if not other:
            other.append(Pipeline(random_state=0).tune(X, **kw))  # the study is complete: its best
        return {}

    first = Pipeline(random_state=0).tune(X, model_metadata=meanwhile, **kw)
    assert "model_unchanged" not in other[0].summary and Path(other[0].summary["model"]).name == "v0001"
    assert sorted(p.name for p in (out / "models").iterdir()) == ["LATEST", "v0001"]
    assert first.summary["model"] == other[0].summary["model"]
    assert first.summary["model_unchanged"] is True and first.summary["published_meanwhile"] is True
    assert json.loads((out / "tune.json").read_text())["published_meanwhile"] is True
