"""Levels through the pipeline, the run folder, the model and the command line (issue 16).

Fast tests fit ``Pipeline(reducer=pca, clusterer=hierarchy)`` (no UMAP compilation) on blobs or
on 300 real CIFAR-10 images (default encoder); the default pipeline (UMAP + hierarchy) and the
command line on a real slice are in the slow tier.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.metrics import normalized_mutual_info_score as nmi
from test_hierarchy import check_nested

from mediacluster.errors import LevelRangeError, ModelFormatError, ParameterError
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir
from mediacluster.stages import registry


def pca_tree(**kw) -> Pipeline:
    return Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}), clusterer="hierarchy",
                    random_state=0, **kw)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=900, centers=6, n_features=24, cluster_std=1.5, random_state=5)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(blobs, one_blas_thread):
    X, _ = blobs
    return pca_tree().fit(X)


def test_pipeline_levels_are_a_tree(fitted, blobs):
    X, y = blobs
    p = fitted
    counts = check_nested(p.levels_, p.parents_)
    assert counts == p.n_clusters_per_level_.tolist()
    assert p.levels_.shape == (len(counts), len(X))
    assert p.level_ == p.auto_level_ and counts[p.level_] == 6
    assert (p.labels_ == p.levels_[p.level_]).all() and (p.cluster_ == p.labels_).all()
    assert nmi(y, p.labels_) > 0.95
    assert counts[-1] > 6 * 4, "the finest level goes well past the number of groups"
    assert p.level_table()[p.level_]["chosen"] and p.level_table()[p.auto_level_]["auto"]


def test_predict_path_equals_the_fit_for_training_items(fitted, blobs):
    X, _ = blobs
    lab, prob = fitted.predict_path(X)
    assert lab.shape == prob.shape == fitted.levels_.shape
    assert (lab == fitted.levels_).all(axis=0).mean() >= 0.99, "whole paths agree"
    for lv in range(len(fitted.parents_)):  # every predicted path is a root-to-leaf path
        assert (fitted.parents_[lv][lab[lv + 1]] == lab[lv]).all()
    assert ((prob >= 0) & (prob <= 1)).all()
    det = fitted.predict_details(X[:50] + 0.05)
    assert (det["labels"] == det["path"]["labels"][fitted.level_]).all()
    assert (det["cluster"] == det["labels"]).all()
    assert (fitted.predict(X) == fitted.labels_).mean() >= 0.99


def test_the_services_cluster_and_level_listings_count_and_name_what_they_say(fitted, blobs, one_blas_thread):
    """``/v1/clusters`` and ``/v1/levels`` as ``serve.model`` builds them. Clusters: noise is no
    cluster, ``size`` counts the training items labelled so and ``assigned_size`` those whose
    nearest cluster it is (noise included: they sum to n). Levels: the chosen level is named by
    the names in use, the others by their own level's names, and an id with no items (a curated
    tree's finest level keeps the studio's ids, with gaps) is not listed."""
    import copy

    from mediacluster.serve.model import cluster_table, level_table

    X, _ = blobs
    rng = np.random.default_rng(0)
    Xn = np.vstack([X, rng.uniform(X.min(), X.max(), size=(60, X.shape[1])).astype(np.float32)])
    flat = Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}),
                    clusterer=registry.build("clusterer", "hdbscan", {"min_cluster_size": 20}), random_state=0).fit(Xn)
    lab = flat.labels_
    assert (lab < 0).any() and (flat.cluster_ >= 0).all()
    tab = cluster_table(flat, {0: "zero"})
    assert [r["id"] for r in tab] == sorted(set(lab[lab >= 0].tolist()))
    assert [r["size"] for r in tab] == [int((lab == r["id"]).sum()) for r in tab]
    assert [r["assigned_size"] for r in tab] == [int((flat.cluster_ == r["id"]).sum()) for r in tab]
    assert sum(r["assigned_size"] for r in tab) == len(Xn) > sum(r["size"] for r in tab)
    assert tab[0]["name"] == "zero" and tab[1]["name"] is None

    tree = copy.copy(fitted)
    k = int(tree.n_clusters_per_level_[-1])
    tree.n_clusters_per_level_ = np.append(tree.n_clusters_per_level_[:-1], k + 1)  # id k: no items
    tree.parents_ = [*tree.parents_[:-1], np.append(tree.parents_[-1], 0)]
    names = {c: f"chosen {c}" for c in range(6)}
    by_level = {lv: {c: f"L{lv} {c}" for c in range(n)} for lv, n in enumerate(tree.n_clusters_per_level_)}
    levels = level_table(tree, names, by_level)
    assert [t["chosen"] for t in levels].index(True) == tree.level_ and len(levels) == len(tree.levels_)
    for t in levels:
        row = tree.levels_[t["level"]]
        assert [c["id"] for c in t["clusters"]] == sorted(set(row.tolist()))  # not the empty id k
        assert [c["size"] for c in t["clusters"]] == [int((row == c["id"]).sum()) for c in t["clusters"]]
        want = names if t["chosen"] else by_level[t["level"]]
        assert [c["name"] for c in t["clusters"]] == [want.get(c["id"]) for c in t["clusters"]]


def test_save_load_keeps_the_tree(fitted, blobs, tmp_path):
    X, _ = blobs
    fitted.save(tmp_path / "m")
    q = Pipeline.load(tmp_path / "m")
    assert (q.levels_ == fitted.levels_).all() and q.level_ == fitted.level_
    assert q.auto_level_ == fitted.auto_level_
    assert all((a == b).all() for a, b in zip(q.parents_, fitted.parents_))
    a, b = fitted.predict_path(X[::9] + 0.1), q.predict_path(X[::9] + 0.1)
    assert (a[0] == b[0]).all() and np.allclose(a[1], b[1])
    assert q.model_info_["levels"]["n_clusters_per_level"] == fitted.n_clusters_per_level_.tolist()
    # no pickle anywhere: arrays only
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as z:
        assert z["levels"].shape == fitted.levels_.shape


def test_load_refuses_a_tampered_tree(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    f = tmp_path / "m" / "arrays.npz"
    with np.load(f, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    broken = dict(arrays)
    lv = broken["levels"].copy()
    lv[1, 0] = (lv[1, 0] + 1) % (lv[1].max() + 1)  # an item moved to another level-1 branch
    broken["levels"] = lv
    np.savez(f, **broken)
    with pytest.raises(ModelFormatError, match="not nested|hierarchy"):
        Pipeline.load(tmp_path / "m")
    del arrays["parents_offsets"]
    np.savez(f, **arrays)
    with pytest.raises(ModelFormatError, match="hierarchy is incomplete"):
        Pipeline.load(tmp_path / "m")


def test_set_level_without_refitting(fitted, blobs, tmp_path):
    X, _ = blobs
    fitted.save(tmp_path / "m")
    q = Pipeline.load(tmp_path / "m")
    q.set_level(0)
    assert q.level_ == 0 and q.n_clusters_ == q.n_clusters_per_level_[0]
    assert (q.labels_ == q.levels_[0]).all() and (q.cluster_ == q.levels_[0]).all()
    assert (q.predict(X) == q.levels_[0]).mean() >= 0.99
    with pytest.raises(ParameterError, match="out of range") as e:
        q.set_level(len(q.levels_))
    assert e.value.param == "level" and q.level_ == 0
    q.set_level("auto")
    assert q.level_ == q.auto_level_


def test_level_with_finds_the_level_closest_to_a_cluster_count_also_after_load(fitted, tmp_path):
    """``Pipeline.level_with`` (the clusterer's was the only one, and a loaded model's clusterer
    is not fitted: AttributeError 'n_clusters_per_level_')."""
    fitted.save(tmp_path / "m")
    q = Pipeline.load(tmp_path / "m")
    counts = q.n_clusters_per_level_
    for lv, k in enumerate(counts):
        assert q.level_with(int(k)) == lv
    assert q.level_with(1) == 0 and q.level_with(10**6) == len(counts) - 1
    assert q.set_level(q.level_with(counts[1])).level_ == 1
    assert fitted.level_with(int(counts[2])) == fitted.clusterer_.level_with(int(counts[2]))
    with pytest.raises(ParameterError, match="n_clusters"):
        q.level_with(-3)
    flat = Pipeline(reducer="pca", clusterer="kmeans").fit(np.asarray(fitted.embedding_, np.float32))
    with pytest.raises(ParameterError, match="no levels"):
        flat.level_with(3)


def test_level_parameter_picks_the_flat_answer(blobs, fitted, one_blas_thread):
    X, _ = blobs
    p = pca_tree(level=1).fit(X)
    assert p.level_ == 1 and (p.labels_ == fitted.levels_[1]).all()
    # a level past the tree's last is refused once the tree is known, with the fit kept at the
    # automatic level (a long fit is not thrown away; set_level picks a level it has)
    p = pca_tree(level=99)
    with pytest.raises(LevelRangeError) as e:
        p.fit(X)
    assert e.value.param == "level" and "out of range" in str(e.value)
    assert p.level_ == p.auto_level_ == fitted.auto_level_ and (p.labels_ == fitted.labels_).all()
    assert (p.predict(X) == fitted.predict(X)).all()
    p.set_level(1)
    assert (p.labels_ == fitted.levels_[1]).all()
    with pytest.raises(ParameterError) as e:
        Pipeline(clusterer="kmeans", level=2).check_params()
    assert e.value.param == "level" and "no levels" in str(e.value)


@pytest.mark.parametrize("kw, param", [
    ({"max_unclustered": 1.0}, "max_unclustered"), ({"max_unclustered": -0.1}, "max_unclustered"),
    ({"level": -1}, "level"), ({"level": "coarse"}, "level"),
])
def test_bad_pipeline_parameters_are_named(kw, param):
    with pytest.raises(ParameterError) as e:
        Pipeline(**kw).check_params()
    assert e.value.param == param


@pytest.mark.parametrize("params, param", [
    ({"clusterer__min_cluster_size": 1}, "clusterer__min_cluster_size"),
    ({"clusterer__max_unclustered": 1.5}, "clusterer__max_unclustered"),
    ({"clusterer__n_cells": 0}, "clusterer__n_cells"),
])
def test_bad_hierarchy_parameters_are_named(params, param):
    with pytest.raises(ParameterError) as e:
        Pipeline().with_params({"clusterer": "hierarchy", **params}).check_params()
    assert e.value.param == param


def test_max_unclustered_bounds_noise_and_outliers(one_blas_thread):
    X, _ = make_blobs(n_samples=600, centers=4, n_features=8, cluster_std=0.7, random_state=1)
    rng = np.random.default_rng(1)
    X = np.vstack([X, rng.uniform(X.min() - 5, X.max() + 5, size=(150, 8))]).astype(np.float32)
    hdb = Pipeline(reducer=None, clusterer=registry.build("clusterer", "hdbscan", {"min_cluster_size": 20}))
    free = clone(hdb).fit(X)  # (a refit of the same object would make free and bounded one)
    assert (free.labels_ < 0).mean() > 0.1, "the setting needs noise to bound"
    bounded = hdb.set_params(max_unclustered=0.05).fit(X)
    assert 0 < (bounded.labels_ < 0).mean() <= 0.05
    kept = free.labels_ >= 0
    assert (bounded.labels_[kept] == free.labels_[kept]).all(), "clustered items keep their cluster"
    # the noise items that get a cluster are those with the strongest pull toward one: the
    # vote share of their 15 nearest clustered items, every rescued one's at least any left's
    from mediacluster.stages.cluster import knn_vote

    q = np.flatnonzero(~kept)
    voted, share, _ = knn_vote(free.embedding_[kept], free.labels_[kept], free.embedding_[q], k=15)
    rescued = bounded.labels_[q] >= 0
    assert rescued.any() and (~rescued).any() and (bounded.labels_[q][rescued] == voted[rescued]).all()
    assert share[rescued].min() >= share[~rescued].max()
    # outliers count too: a 10% LOF stage, at most 3% left unclustered
    tree = Pipeline(reducer=None, outliers="lof", clusterer="hierarchy", max_unclustered=0.03).fit(X)
    assert (tree.labels_ == -2).any() and (tree.labels_ < 0).mean() <= 0.03
    check_nested(tree.levels_, tree.parents_)  # outliers too have a path
    everyone = Pipeline(reducer=None, clusterer="hierarchy").fit(X)
    assert (everyone.labels_ >= 0).all(), "the hierarchy alone assigns every item"


def test_max_unclustered_with_no_cluster_at_all_leaves_everything_noise(one_blas_thread):
    """Nothing clustered (min_cluster_size above the data's groups): no cluster to pull toward,
    so --max-unclustered leaves every item noise instead of voting with no voters."""
    X = np.random.default_rng(0).uniform(size=(60, 4)).astype(np.float32)
    p = Pipeline(reducer=None, clusterer=registry.build("clusterer", "hdbscan", {"min_cluster_size": 59}),
                 max_unclustered=0.1).fit(X)
    assert (p.labels_ == -1).all()


def test_identical_items_share_every_level(blobs, one_blas_thread):
    X, _ = blobs
    Xd = np.vstack([np.repeat(X[:1], 300, axis=0), X[100:400]])
    p = pca_tree().fit(Xd)
    check_nested(p.levels_, p.parents_)
    assert (p.levels_[:, :300] == p.levels_[:, :1]).all(), "300 copies: one cluster at every level"
    only = pca_tree().fit(np.repeat(X[:1], 300, axis=0))
    assert only.levels_.shape == (1, 300) and (only.labels_ == 0).all()


@pytest.mark.parametrize("n", [3, 4, 7, 11])
def test_three_to_eleven_items(n, blobs, one_blas_thread):
    X, _ = blobs
    p = Pipeline(reducer=None, clusterer="hierarchy").fit(X[:n])
    check_nested(p.levels_, p.parents_)
    assert (p.labels_ >= 0).all() and p.predict_path(X[:n])[0].shape == (len(p.levels_), n)


def test_run_folder_holds_the_tree(cifar3_embeddings, tmp_path, one_blas_thread):
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    run = publish_run(tmp_path / "run", cifar3_embeddings, pipe, save_model=True, name=False)
    h = RunDir.open(tmp_path / "run").read_hierarchy()
    assert {"levels", "parents", "parents_offsets", "n_clusters", "auto_level", "level"} <= set(h)
    off = h["parents_offsets"]
    parents = [h["parents"][off[i]:off[i + 1]] for i in range(len(off) - 1)]
    check_nested(h["levels"].astype(np.int64), parents)
    assert int(h["level"]) == pipe.level_ and h["n_clusters"].tolist() == pipe.n_clusters_per_level_.tolist()
    a = run.read_assignments()
    cols = [f"level_{i}" for i in range(len(h["levels"]))]
    assert [c for c in a.columns if c.startswith("level_")] == cols
    assert (a[cols].to_numpy().T == h["levels"]).all()
    assert (a["cluster"] == a[f"level_{int(h['level'])}"]).all()
    assert run.info["summary"]["levels"]["n_clusters"] == pipe.n_clusters_per_level_.tolist()
    # the studio reads the same levels
    from mediacluster.studio.levels import level_views

    levels = run.read_levels(a)
    assert levels.level == pipe.level_ and levels.names == tuple(cols)
    assert [lv["groups"] for lv in level_views(levels)] == pipe.n_clusters_per_level_.tolist()
    # the service's view of the model
    from mediacluster.serve.model import level_table, path_records

    model = Pipeline.load(tmp_path / "run")
    table = level_table(model, {})
    assert [t["n_clusters"] for t in table] == pipe.n_clusters_per_level_.tolist()
    for t in table[1:]:
        assert sum(c["size"] for c in t["clusters"]) == len(a)
        assert all(0 <= c["parent"] < table[t["level"] - 1]["n_clusters"] for c in t["clusters"])
    recs = path_records(model.predict_details(cifar3_embeddings.vectors[:3])["path"])
    assert len(recs) == 3 and [r["level"] for r in recs[0]] == list(range(len(h["levels"])))
    assert [r["cluster"] for r in recs[0]] == h["levels"][:, 0].tolist()


def streamed_tree_run(emb, out, **kw):
    """``(run, pipe)``: :func:`pca_tree` fitted on a sample of 200 of ``emb``'s vectors by
    ``workflow.write_streamed_run``, the other items assigned in batches of 64 (``kw``: more
    keywords for it)."""
    from mediacluster.ingest.stream import ArrayVectors
    from mediacluster.workflow import write_streamed_run

    X = emb.vectors
    src = ArrayVectors(X, ids=[str(i) for i in range(len(X))], labels=None, paths=None, path="mem")
    pipe = pca_tree()
    with RunDir.create(out, command="test") as b:
        write_streamed_run(b, src, pipe, fit_sample=200, batch_rows=64, make_map=False, progress=False, **kw)
    return b.published, pipe


def test_streamed_run_writes_every_items_path(cifar3_embeddings, tmp_path, one_blas_thread):
    """A run fitted on a sample: the other items' paths come from the model, batch by batch."""
    X = cifar3_embeddings.vectors
    run, pipe = streamed_tree_run(cifar3_embeddings, tmp_path / "run", name=False)
    h = run.read_hierarchy()
    assert h["levels"].shape == (len(pipe.levels_), len(X))
    a = run.read_assignments()
    assert (a["cluster"] == a[f"level_{pipe.level_}"]).all()
    assert (a[[f"level_{i}" for i in range(len(pipe.levels_))]].to_numpy().T == h["levels"]).all()


# -- the default pipeline and the command line on a real slice (slow: UMAP) ------------------
def run_cli(argv) -> tuple[int, str, str]:
    from mediacluster.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("sample", [None, "300"])
def test_cli_level_past_the_last_keeps_the_run(blobs, tmp_path, sample):
    """`cluster --level 99`: the number of levels is known only after the fit, so the run is
    written at the automatic level (whole, with every level's column), and the command exits 2
    listing the levels there are; a level that cannot be one is refused before any work."""
    X, _ = blobs
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, X)
    out = tmp_path / "run"
    extra = ["--fit-sample", sample] if sample else []
    rc, stdout, err = run_cli(["cluster", vectors, "--out", out, "--quiet", "--level", "99", "--save-model",
                               "--reducer", "pca", "--reducer-param", "n_components=10", *extra])
    assert rc == 2, (stdout, err)
    info = json.loads((out / "run.json").read_text())
    lv = info["summary"]["levels"]
    last = len(lv["n_clusters"]) - 1
    assert f"error: --level 99: this fit has {last + 1} levels, 0..{last} (clusters per level" in err, err
    assert f"written at the automatic level {lv['auto_level']}" in err and "Traceback" not in err
    assert lv["level"] == lv["auto_level"] and info["level_refused"]["level"] == 99
    a = RunDir.open(out).read_assignments()
    assert len(a) == len(X) and (a["cluster"] == a[f"level_{lv['auto_level']}"]).all()
    assert f"level_{last}" in a and (out / "models" / "LATEST").exists()
    for bad in ("-1", "1.5", "fine"):  # refused by the argument parser, before any work
        rc, _, err = run_cli(["cluster", vectors, "--out", tmp_path / "bad", "--quiet", "--level", bad])
        assert rc == 2 and "--level" in err and not (tmp_path / "bad").exists(), (bad, err)


@pytest.mark.slow
def test_default_pipeline_computes_the_knn_graph_once(cifar3_embeddings, monkeypatch):
    from mediacluster.stages import neighbors

    calls = []
    real = neighbors.knn_graph

    def counted(*a, **kw):
        calls.append(a[1] if len(a) > 1 else kw.get("k"))
        return real(*a, **kw)

    monkeypatch.setattr(neighbors, "knn_graph", counted)
    p = Pipeline(random_state=0).fit(cifar3_embeddings.vectors)
    assert calls == [15], "one graph, handed to UMAP and to the hierarchy"
    y = np.asarray(cifar3_embeddings.labels)
    check_nested(p.levels_, p.parents_)
    assert nmi(y, p.labels_) > 0.5
    again = Pipeline(random_state=0).fit(cifar3_embeddings.vectors)
    assert (again.levels_ == p.levels_).all(), "same seed, same tree"
    paths = p.predict_path(cifar3_embeddings.vectors)[0]
    assert (paths == p.levels_).all(axis=0).mean() >= 0.99, "the fit's paths, through the saved predictor"


@pytest.mark.slow
def test_cli_level_and_max_unclustered_on_a_real_slice(cifar3_dir, cifar3_embeddings, tmp_path):
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(["cluster", cifar3_dir, "--out", out, "--quiet", "--level", "1",
                             "--max-unclustered", "0.1", "--save-model", "--no-names",
                             "--clusterer", "hierarchy", "--clusterer-param", "min_cluster_size=5"])
    assert rc == 0, stdout
    assert "levels:" in stdout and "in use: level 1" in stdout
    a = pd.read_parquet(out / "assignments.parquet")
    clustered = a["cluster"] >= 0
    assert (a.loc[clustered, "cluster"] == a.loc[clustered, "level_1"]).all()
    assert (a["assigned_cluster"] == a["level_1"]).all(), "noise is assigned along its path"
    assert (~clustered).mean() <= 0.1
    info = json.loads((out / "run.json").read_text())
    assert info["summary"]["levels"]["level"] == 1
    h = RunDir.open(out).read_hierarchy()
    assert int(h["level"]) == 1 and h["levels"].shape[1] == len(a)
    # assign: each new item's path, coarse to fine, written as level columns
    rc, stdout, _ = run_cli(["assign", out, sorted((cifar3_dir / "frog").glob("*.jpg"))[0], "--quiet"])
    assert rc == 0 and "levels" in stdout.splitlines()[0]
    assert "name" not in stdout.splitlines()[0].split("\t"), "--no-names: no name column"
    table = tmp_path / "new.csv"
    rc, _, _ = run_cli(["assign", out, cifar3_dir / "truck", "--out", table, "--quiet"])
    t = pd.read_csv(table)
    assert rc == 0 and (t["assigned_cluster"] == t["level_1"]).all()
    assert {"level_0", "level_0_probability"} <= set(t.columns)
    # nonsense is refused before any work, naming the option
    for bad, name in ((["--level", "fine"], "--level"), (["--level", "-2"], "--level"),
                      (["--max-unclustered", "1.5"], "--max-unclustered"),
                      (["--max-unclustered", "lots"], "--max-unclustered")):
        rc, _, err = run_cli(["cluster", cifar3_dir, "--out", tmp_path / "bad", "--quiet", *bad])
        assert rc == 2 and name in err, (bad, err)
    rc, _, err = run_cli(["cluster", cifar3_dir, "--out", tmp_path / "bad", "--quiet", "--level", "2",
                          "--clusterer", "kmeans"])
    assert rc == 2 and "level" in err and "no levels" in err


@pytest.mark.slow
def test_evoc_as_the_pipelines_clusterer(cifar3_embeddings, tmp_path):
    from mediacluster.fileio import setup_numba_cache

    setup_numba_cache()
    X = cifar3_embeddings.vectors
    p = Pipeline(clusterer="evoc", random_state=0).fit(X)
    assert p.reducer_ is None, "EVoC reduces the raw vectors itself"
    check_nested(p.levels_, p.parents_)
    assert (p.predict_path(X)[0] == p.levels_).all(axis=0).mean() >= 0.99
    p.save(tmp_path / "m")
    q = Pipeline.load(tmp_path / "m")
    assert (q.levels_ == p.levels_).all() and (q.predict(X[:20]) == p.predict(X[:20])).all()
