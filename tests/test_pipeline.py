"""Pipeline composition, noise assignment, predict-reproduces-fit, config parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import normalized_mutual_info_score

from mediacluster.config import load_config, parse_param, pipeline_from_config
from mediacluster.errors import ConfigError, ParameterError
from mediacluster.pipeline import Pipeline
from mediacluster.stages import build as make_stage
from mediacluster.stages.outliers import NoOutliers

REDUCERS = [("pca", {"n_components": 8}), ("ipca", {"n_components": 8, "batch_size": 100}),
            ("kernel_pca", {"n_components": 6}), ("none", {})]
OUTLIERS = [("none", {}), ("lof", {"n_neighbors": 15, "contamination": 0.05}),
            ("isolation_forest", {"contamination": 0.05})]
CLUSTERERS = [("hdbscan", {"min_cluster_size": 10}),
              ("hdbscan", {"min_cluster_size": 10, "cluster_selection_method": "leaf"}),
              ("kmeans", {"n_clusters": 3}), ("agglomerative", {"n_clusters": 3, "linkage": "ward"}),
              ("agglomerative", {"n_clusters": 3, "linkage": "average"}),
              ("dbscan", {"eps": 0.5, "min_samples": 5}), ("meanshift", {})]


pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def data(cifar3_embeddings):
    return (np.asarray(cifar3_embeddings.vectors, dtype=np.float32), np.asarray(cifar3_embeddings.labels))


@pytest.fixture(scope="module")
def fitted_default(data):
    """The default pipeline (UMAP + auto clusterer), fitted once for the module."""
    X, _ = data
    return Pipeline(random_state=0).fit(X)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(r=st.sampled_from(REDUCERS), o=st.sampled_from(OUTLIERS), c=st.sampled_from(CLUSTERERS),
       assign=st.booleans())
def test_any_composition_runs_with_documented_labels(data, r, o, c, assign):
    X, _ = data
    X = X[::2]  # 150 items keep the property test fast
    pipe = Pipeline(reducer=make_stage("reducer", *r), outliers=make_stage("outliers", *o),
                    clusterer=make_stage("clusterer", *c), assign_noise=assign, reference_dims=32).fit(X)
    n = len(X)
    lab = pipe.labels_
    assert lab.shape == (n,) and lab.dtype == np.int64
    assert set(np.unique(lab)) <= {-2, -1} | set(range(n))
    assert set(np.unique(pipe.status_)) <= {"clustered", "noise", "outlier"}
    assert np.array_equal(pipe.status_ == "outlier", lab == -2)
    assert np.array_equal(pipe.status_ == "noise", lab == -1)
    assert np.all((pipe.probabilities_ >= 0) & (pipe.probabilities_ <= 1))
    if o[0] == "none":
        assert not (lab == -2).any()
    if assign and (lab >= 0).any():
        assert (pipe.cluster_ >= 0).all()
        assert np.array_equal(pipe.cluster_[lab >= 0], lab[lab >= 0])
    pred = pipe.predict_details(X[:10])
    assert set(np.unique(pred["labels"])) <= {-2, -1} | set(np.unique(lab))
    assert len(pred["cluster"]) == 10


def test_default_pipeline_on_real_embeddings(fitted_default, data):
    pipe = fitted_default
    _, y = data
    assert pipe.embedding_.shape == (len(y), 10)
    assert 2 <= pipe.n_clusters_ <= 20
    assert (pipe.cluster_ >= 0).all()  # noise assigned: 100% coverage
    # 3 well separated classes (airplane, frog, truck): measured ~0.7-0.8 NMI
    assert normalized_mutual_info_score(y, pipe.cluster_) > 0.5
    assert set(pipe.timings_) >= {"reduce", "outliers", "cluster", "assign_noise"}


def test_predict_reproduces_fit(fitted_default, data):
    X, _ = data
    pipe = fitted_default
    det = pipe.predict_details(X)
    clustered = pipe.labels_ >= 0
    assert (det["labels"][clustered] == pipe.labels_[clustered]).mean() >= 0.99
    assert (det["cluster"] == pipe.cluster_).mean() >= 0.99
    np.testing.assert_allclose(det["embedding"], pipe.embedding_, atol=1e-2)
    assert np.array_equal(pipe.predict(X[:5]), det["labels"][:5])
    one = pipe.predict_details(X[7])  # a single 1-D vector
    assert one["labels"].shape == (1,)
    with pytest.raises(ValueError, match="1280-d"):
        pipe.predict(X[:3, :100])


def test_pipeline_with_lof_labels_outliers_minus_two(data):
    X, _ = data
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 10}),
                    outliers=make_stage("outliers", "lof", {"contamination": 0.05}),
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3})).fit(X)
    assert (pipe.labels_ == -2).mean() == pytest.approx(0.05, abs=0.02)
    assert (pipe.status_[pipe.labels_ == -2] == "outlier").all()
    assert (pipe.cluster_ >= 0).all()  # outliers assigned to their nearest cluster...
    assert (pipe.confidence_[pipe.labels_ == -2] <= 1).all()  # ...with a confidence
    far = -X[:2]  # nowhere near the training data: the opposite directions (the predictor is cosine)
    assert (pipe.predict_details(far)["labels"] == -2).all()
    assert (pipe.predict(X)[pipe.labels_ >= 0] >= 0).mean() > 0.97


def test_reference_size_keeps_a_stratified_sample(data):
    X, _ = data
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 10}),
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3}),
                    reference_size=60).fit(X)
    assert len(pipe.ref_index_) == pytest.approx(60, abs=3)
    assert set(pipe.cluster_[pipe.ref_index_]) == set(pipe.cluster_)
    agree = (pipe.predict(X) == pipe.labels_).mean()
    assert agree > 0.8  # most non-reference items still get their fitted cluster


def test_config_and_params():
    cfg = {"reducer": {"name": "umap", "params": {"n_components": 5, "n_neighbors": 20}},
           "outliers": "lof", "clusterer": {"name": "hdbscan", "params": {"cluster_selection_method": "leaf"}},
           "assign_noise": False}
    pipe = pipeline_from_config(cfg)
    assert pipe.reducer.n_components == 5 and pipe.outliers.n_neighbors == 20
    assert pipe.clusterer.cluster_selection_method == "leaf" and pipe.assign_noise is False
    assert parse_param("min_dist=0.1") == ("min_dist", 0.1)
    assert parse_param("metric=cosine") == ("metric", "cosine")
    assert parse_param("min_samples=null") == ("min_samples", None)
    with pytest.raises(ValueError, match="unknown reducer"):
        make_stage("reducer", "tsne")
    with pytest.raises(ValueError, match="no parameter"):
        make_stage("clusterer", "kmeans", {"min_cluster_size": 3})
    with pytest.raises(ValueError, match="unknown pipeline config key"):
        pipeline_from_config({"reduce": "pca"})
    assert isinstance(make_stage("outliers", "none"), NoOutliers) and make_stage("outliers", None) is None


def test_cli_cluster_with_stage_flags_and_assign(tmp_path, data, cifar3_dir, capsys):
    """`cluster` with stage flags on vectors + --save-model, then `assign` on image files."""
    from mediacluster.cli import main

    X, y = data
    vec = tmp_path / "vecs.npz"
    np.savez(vec, vectors=X, labels=np.asarray(y, dtype=str))
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text("reducer: {name: pca, params: {n_components: 12}}\nclusterer: kmeans\n")
    out = tmp_path / "run"
    rc = main(["cluster", str(vec), "--out", str(out), "--config", str(cfg), "--clusterer-param",
               "n_clusters=3", "--outliers", "lof", "--outliers-param", "contamination=0.02",
               "--save-model", "--quiet"])
    assert rc == 0
    import json

    info = json.loads((out / "models" / "v0001" / "model.json").read_text())
    assert info["stages"]["clusterer"]["params"]["n_clusters"] == 3
    assert info["stages"]["reducer"]["params"]["n_components"] == 12
    assert info["stages"]["outliers"]["class"] == "LOFOutliers"
    images = sorted(p for p in cifar3_dir.rglob("*.jpg"))[:4]
    capsys.readouterr()
    res = tmp_path / "assign.csv"
    rc = main(["assign", str(out), *map(str, images), "--out", str(res), "--quiet",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    import pandas as pd

    df = pd.read_csv(res)
    assert len(df) == 4 and set(df["status"]) <= {"clustered", "noise", "outlier"}
    assert df["assigned_cluster"].between(0, 2).all()


def test_assign_embeds_the_files_it_is_given_in_one_pass(tmp_path, data, cifar3_dir, caplog):
    """`assign RUN new/*.jpg` (the shell hands it every file) embeds the files in one pass, in
    batches, as it does a folder: each file was embedded on its own (an encoder call, a thread
    pool and an "embedding: ..." log line per file, even with --quiet; ~45% slower on 142
    uploads). The rows stay in the order given."""
    import logging

    import pandas as pd

    from mediacluster.cli import main

    X, y = data
    vec = tmp_path / "vecs.npz"
    np.savez(vec, vectors=X, labels=np.asarray(y, dtype=str))
    out = tmp_path / "run"
    assert main(["cluster", str(vec), "--out", str(out), "--reducer", "pca", "--clusterer", "kmeans",
                 "--clusterer-param", "n_clusters=3", "--save-model", "--quiet"]) == 0
    images = sorted(p for p in cifar3_dir.rglob("*.jpg"))[:9][::-1]
    res = tmp_path / "assign.csv"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mediacluster.embed.engine"):
        assert main(["assign", str(out), *map(str, images), "--out", str(res), "--quiet",
                     "--cache-dir", str(tmp_path / "cache")]) == 0
    passes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embedding:")]
    assert len(passes) == 1 and passes[0].startswith("embedding: 9 items "), passes
    df = pd.read_csv(res)
    assert df["id"].tolist() == [str(p) for p in images]
    # the same answers as one file at a time
    one = tmp_path / "one.csv"
    assert main(["assign", str(out), str(images[3]), "--out", str(one), "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert pd.read_csv(one)["cluster"].iloc[0] == df["cluster"].iloc[3]


def test_assign_refuses_a_folder_as_out_before_any_work(tmp_path, capsys):
    """`assign RUN x.jpg --out results/` wrote a file named `results` (a trailing slash is lost
    by pathlib), and an existing folder failed only after every item was embedded: both are
    refused first, naming --out, and nothing is written."""
    from mediacluster.cli import main

    missing_model = tmp_path / "no-such-run"  # never opened: the check comes first
    for out in (f"{tmp_path / 'results'}/", str(tmp_path)):
        assert main(["assign", str(missing_model), str(tmp_path / "x.jpg"), "--out", out, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "is a folder" in err and "assignments.csv" in err, err
    assert not (tmp_path / "results").exists()


def test_set_params_reaches_a_stage_given_by_name():
    # the README's example: stages by registry name, then scikit-learn's nested names
    pipe = Pipeline(outliers="lof", clusterer="hdbscan").set_params(clusterer__min_cluster_size=200)
    assert pipe.clusterer.min_cluster_size == 200 and pipe.outliers == "lof"
    pipe = Pipeline().set_params(clusterer="kmeans", clusterer__n_clusters=4)
    assert pipe.clusterer.n_clusters == 4
    with pytest.raises(ParameterError, match="reducer is 'auto'; name the stage"):
        Pipeline().set_params(reducer__n_components=3)
    with pytest.raises(ParameterError, match="outliers is None; name the stage"):
        Pipeline().set_params(outliers__n_neighbors=3)
    with pytest.raises(ParameterError, match="clusterer__min_cluster_size: must be >= 2, got -5"):
        Pipeline(clusterer="hdbscan").set_params(clusterer__min_cluster_size=-5).check_params()


def test_config_file_takes_nested_stage_parameters(tmp_path):
    # the form of a tuning space (README, Tuning) is also a --config file
    cfg = tmp_path / "c.yaml"
    cfg.write_text("reducer: umap\nreducer__n_components: 5\nclusterer: hdbscan\n"
                   "clusterer__min_cluster_size: 20\n")
    pipe = pipeline_from_config(load_config(cfg), source=str(cfg))
    assert pipe.reducer.n_components == 5 and pipe.clusterer.min_cluster_size == 20
    cfg.write_text("clusterer: {name: hdbscan, params: {min_cluster_size: 9}}\nclusterer__min_cluster_size: 20\n")
    with pytest.raises(ConfigError, match="clusterer__min_cluster_size is given twice"):
        load_config(cfg)
    cfg.write_text("clusterer__min_cluster_size: 20\n")
    with pytest.raises(ParameterError, match="clusterer 'auto' takes no parameters"):
        pipeline_from_config(load_config(cfg), source=str(cfg))
    # the default reducer: the message gives the settings that keep it, but for the one changed
    cfg.write_text("reducer__n_neighbors: 30\n")
    with pytest.raises(ParameterError, match="reducer 'auto' takes no parameters") as e:
        pipeline_from_config(load_config(cfg), source=str(cfg))
    assert "n_neighbors=15" not in str(e.value) and "init=pca" in str(e.value) and "n_epochs=200" in str(e.value)
    keep = str(e.value).split("umap with ")[1].split(":")[0]
    cfg.write_text("reducer: umap\nreducer__n_neighbors: 30\n"
                   + "".join(f"reducer__{kv.split('=')[0]}: {kv.split('=')[1]}\n" for kv in keep.split(", ")))
    pipe = pipeline_from_config(load_config(cfg), source=str(cfg))
    from mediacluster.pipeline import default_reducer

    want = default_reducer(10**4).set_params(n_neighbors=30).get_params()
    assert {k: pipe.reducer.get_params()[k] for k in want if k != "random_state"} == \
        {k: v for k, v in want.items() if k != "random_state"}
    cfg.write_text("clusterer: hdbscan\nclusterer__min_clustr_size: 20\n")
    with pytest.raises(ConfigError, match=r"has no parameter\(s\) \['min_clustr_size'\]"):
        pipeline_from_config(load_config(cfg), source=str(cfg))


def test_numpy_integers_are_integers_to_parameters_grid_search_and_saving(tmp_path):
    """A grid from np.arange and a level from np.argmax are numpy integers: accepted wherever
    an integer is, and a model fitted with them saves and loads (stored as plain numbers)."""
    from sklearn.datasets import make_blobs
    from sklearn.model_selection import GridSearchCV

    X, y = make_blobs(n_samples=300, centers=3, n_features=16, random_state=0)
    X = X.astype(np.float32)
    grid = GridSearchCV(Pipeline(reducer="pca", clusterer="kmeans", random_state=0),
                        {"reducer__n_components": np.arange(4, 6), "clusterer__n_clusters": np.arange(2, 5)},
                        scoring=lambda est, X, y: normalized_mutual_info_score(y, est.predict(X)), cv=3)
    best = grid.fit(X, y).best_estimator_
    assert grid.best_params_["clusterer__n_clusters"] == 3
    best.save(tmp_path / "m")
    assert np.array_equal(Pipeline.load(tmp_path / "m").predict(X[:30]), best.predict(X[:30]))
    fitted = Pipeline(random_state=0).fit(X)
    level = np.argmin(np.abs(fitted.n_clusters_per_level_ - 3))
    assert fitted.set_level(level).level_ == level
    with pytest.raises(ParameterError, match="expected an integer"):
        fitted.set_level(np.float64(1.5))


def test_the_pipeline_is_a_clusterer_to_scikit_learn():
    """scikit-learn tells a clusterer by its ClusterMixin (``is_clusterer``, the estimator tags,
    its HTML repr), as every registered clusterer stage already is."""
    from sklearn.base import is_clusterer

    assert is_clusterer(Pipeline()) and is_clusterer(Pipeline(clusterer="hdbscan"))
    assert Pipeline().__sklearn_tags__().estimator_type == "clusterer"


def test_the_default_pipeline_fits_vectors_of_fewer_dimensions_than_its_umap():
    """The default UMAP (10 dims, PCA start) on 3-d vectors failed with scikit-learn's bare
    'n_components=10 must be between 0 and min(n_samples, n_features)=3' (a bug's exit 1 in the
    CLI): a PCA start cannot have more axes than the vectors, so it starts from random positions."""
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=120, centers=3, n_features=3, random_state=0)
    pipe = Pipeline(random_state=0).fit(X)
    assert pipe.embedding_.shape == (120, 10) and pipe.n_clusters_ >= 2
    assert np.array_equal(pipe.predict(X), pipe.labels_)


def test_the_pipeline_also_transforms_and_set_params_does_not_validate():
    """It also transforms (tags say so; fit_transform is the training items' reduced coordinates,
    transform places new ones), and, as scikit-learn's set_params, an unknown stage name is taken
    and refused by check_params / fit, naming it."""
    from mediacluster.errors import ParameterError

    tags = Pipeline().__sklearn_tags__()
    assert tags.transformer_tags is not None and tags.transformer_tags.preserves_dtype == ["float32"]
    X = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    pipe = Pipeline(reducer="pca", clusterer="kmeans", random_state=0)
    Z = pipe.fit_transform(X)
    assert Z.dtype == np.float32 and np.array_equal(Z, pipe.embedding_)
    assert np.allclose(pipe.transform(X), Z, atol=1e-4)
    odd = Pipeline().set_params(reducer="helloworld")
    assert odd.get_params()["reducer"] == "helloworld"
    with pytest.raises(ParameterError, match="unknown reducer 'helloworld'"):
        odd.check_params()


def test_input_that_is_not_dense_real_vectors_is_refused_saying_what_it_is():
    """A sparse matrix failed with numpy's 'setting an array element with a sequence', strings
    with a bare ValueError, and complex numbers were cast with their imaginary part dropped."""
    import scipy.sparse as sp

    from mediacluster.errors import InputError

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)).astype(np.float32)
    fitted = Pipeline(reducer="pca", clusterer="kmeans", random_state=0).fit(X)
    for bad, match in [(sp.csr_matrix(X), "sparse matrix is not supported"),
                       (X.astype(np.complex64), "complex numbers"),
                       (np.array([["a"] * 8] * 60), "must be numbers"),
                       ([[1.0, 2.0], [3.0]] * 30, "one length")]:
        with pytest.raises(InputError, match=match):
            Pipeline(reducer="pca", clusterer="kmeans").fit(bad)
        with pytest.raises(InputError, match=match):
            fitted.predict(bad[:3] if not isinstance(bad, list) else bad[:3])
    with pytest.raises(InputError, match=r"rows of vectors \(n, 8\), got an array of shape \(1, 3, 8\)"):
        fitted.predict(X[None, :3])  # it said "expects 8-d vectors, got (1, 3, 8)-d (another encoder?)"
    import pandas as pd

    same = Pipeline(reducer="pca", clusterer="kmeans", random_state=0).fit(pd.DataFrame(X.astype(np.float64)))
    assert np.array_equal(same.labels_, fitted.labels_)
    # numbers held as Python objects (an object DataFrame column) are numbers; anything else is named
    objects = X.astype(np.float64).astype(object)
    same = Pipeline(reducer="pca", clusterer="kmeans", random_state=0).fit(objects)
    assert np.array_equal(same.labels_, fitted.labels_)
    assert np.array_equal(fitted.predict(objects[:5]), fitted.predict(X[:5]))
    objects[7, 3] = "0.5"
    with pytest.raises(InputError, match=r"must be numbers, got '0.5' \(a str\) at row 7"):
        fitted.predict(objects)


def test_deep_get_params_lists_the_parameters_of_a_stage_given_by_name():
    """``set_params(clusterer__min_cluster_size=...)`` works on ``Pipeline(clusterer="hdbscan")``;
    ``get_params(deep=True)`` now lists those names too (it listed only ``clusterer: 'hdbscan'``),
    with the same values as for the stage given as an estimator."""
    from sklearn.base import clone

    from mediacluster.stages.cluster import HDBSCANClusterer

    by_name = Pipeline(reducer="pca", clusterer="hdbscan").get_params(deep=True)
    by_object = Pipeline(reducer="pca", clusterer=HDBSCANClusterer()).get_params(deep=True)
    assert by_name["clusterer__min_cluster_size"] == HDBSCANClusterer().min_cluster_size
    assert {k: v for k, v in by_name.items() if "__" in k} == {
        k: v for k, v in Pipeline(reducer=make_stage("reducer", "pca"), clusterer=HDBSCANClusterer())
        .get_params(deep=True).items() if "__" in k}
    assert by_object["clusterer__min_cluster_size"] == by_name["clusterer__min_cluster_size"]
    assert not any(k.startswith("reducer__") for k in Pipeline().get_params(deep=True))  # "auto"
    p = Pipeline(reducer="pca", clusterer="hdbscan")
    p.set_params(**{k: v for k, v in p.get_params(deep=True).items() if k.startswith("clusterer__")})
    nested = {k: v for k, v in p.get_params(deep=True).items() if "__" in k}
    assert {k: v for k, v in clone(p).get_params(deep=True).items() if "__" in k} == nested
    assert Pipeline(reducer="pca", clusterer="hdbscan").get_params(deep=False)["clusterer"] == "hdbscan"


def test_umap_leaves_the_given_neighbour_graph_as_it_was():
    """umap-learn cuts the edges of a ``precomputed_knn`` at its disconnection distance (cosine
    >= 1: orthogonal or opposite neighbours) by writing -1 into the arrays it is given. The
    reducer handed it the caller's arrays whenever they were already int32 / float32 of the
    right width, so the pipeline's graph reached the clusterer with -1 in it: 30 one-number
    vectors (half of them point the other way) failed with "knn indices must be an (n=30, k)
    array", and a tuner's cached graph was changed under every later trial."""
    from mediacluster.stages.neighbors import knn_graph

    X = np.random.default_rng(0).normal(size=(30, 1)).astype(np.float32)
    knn = knn_graph(X, 15, metric="cosine")
    before = knn[0].copy(), knn[1].copy()
    make_stage("reducer", "umap", {"n_neighbors": 15, "n_components": 2}).fit(X, precomputed_knn=knn)
    assert np.array_equal(knn[0], before[0]) and np.array_equal(knn[1], before[1])
    labels = Pipeline().fit(X).labels_
    assert len(set(labels[X[:, 0] > 0]) & set(labels[X[:, 0] < 0])) == 0  # the two directions apart


def test_a_seed_numpy_cannot_take_is_refused_by_name():
    """``--seed 99999999999999999999`` (or any seed from 2**32) passed the parameter check and
    stopped in umap-learn's ``RandomState`` after the collection was embedded: exit 1."""
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    for seed in (2**32, 10**20):
        with pytest.raises(ParameterError, match=r"random_state: must be <= 4294967295"):
            Pipeline(random_state=seed).fit(X)
    assert len(Pipeline(random_state=2**32 - 1).fit(X).labels_) == 40


def test_the_agreement_view_is_made_during_the_layout_and_changes_nothing(data, monkeypatch):
    """``Pipeline.fit`` has the hierarchy's agreement view (PCA of the input vectors) and the
    check's likeliest K-means starts made in a second thread while UMAP lays out
    (``agreement_prefit``), and hands them to the clusterer: the check's scores and level are
    exactly those of the check run afterwards on its own."""
    import threading

    from mediacluster import pipeline as pipeline_module
    from mediacluster.stages.hierarchy import HierarchyClusterer, agreement_level

    X, _ = data
    threads = []
    real = pipeline_module.agreement_prefit

    def spy(vectors, seed, stop):  # the real function, recording where it ran
        threads.append(threading.current_thread())
        return real(vectors, seed, stop)

    monkeypatch.setattr(pipeline_module, "agreement_prefit", spy)
    pipe = Pipeline(random_state=0).fit(X)
    h = pipe.clusterer_
    assert isinstance(h, HierarchyClusterer)
    assert len(threads) == 1 and threads[0] is not threading.main_thread(), "made beside the layout"
    level, scores = agreement_level(h.levels_, h.modularity_level_, X, random_state=0, n_groups=h.n_groups_)
    assert level == h.auto_level_ and np.array_equal(scores, h.agreement_scores_, equal_nan=True)


def test_run_json_summaries_and_the_assignment_columns_say_what_they_count():
    """workflow's pieces of run.json and assignments.parquet on a hand case: noise (-1) and
    outliers (-2) counted apart, a cluster's top ImageNet classes most likely first, the
    ``assigned_name`` of the cluster an item was assigned to (noise included), and the level
    columns ``level_0`` (coarsest) .. ``level_<L-1>`` in that order."""
    from mediacluster.data import Embeddings, Skipped
    from mediacluster.workflow import assignment_frame, cluster_summaries, run_summary

    lab = np.array([0, 0, 1, -1, -2, -2, 1, -1])
    probs = np.full((8, 1000), 1e-4, np.float32)
    probs[:, 7], probs[:, 3] = 0.5, 0.3
    emb = Embeddings(ids=[f"i{k}" for k in range(8)], vectors=np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32),
                     encoder="x", extras={"imagenet_probs": probs}, skipped=[Skipped("gone.jpg", "cannot read")])
    s = run_summary(emb, lab, {"fit": 1.23456})
    assert (s["items"], s["clusters"], s["noise"], s["outliers"], s["skipped"]) == (8, 2, 2, 2, 1)
    assert s["noise_share"] == 0.5 and s["coverage"] == 0.5 and s["timings_s"] == {"fit": 1.235}
    cs = cluster_summaries(emb, lab)
    assert [(c["cluster"], c["size"], c["share"]) for c in cs] == [(0, 2, 0.25), (1, 2, 0.25)]
    assert [t["index"] for t in cs[0]["top_classes"][:2]] == [7, 3]
    coarse, fine = np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([0, 1, 2, 2, 3, 4, 5, 5])
    df = assignment_frame(emb.ids, None, None, {"labels": lab, "probabilities": np.ones(8),
                                                 "cluster": np.array([0, 0, 1, 1, 0, 1, 1, 0]), "confidence": np.ones(8),
                                                 "levels": np.stack([coarse, fine], axis=1)},
                          names={0: "zero", 1: "one"})
    assert df["name"].fillna("-").tolist() == ["zero", "zero", "one", "-", "-", "-", "one", "-"]
    assert df["assigned_name"].tolist() == ["zero", "zero", "one", "one", "zero", "one", "one", "zero"]
    assert df["level_0"].tolist() == coarse.tolist() and df["level_1"].tolist() == fine.tolist()
