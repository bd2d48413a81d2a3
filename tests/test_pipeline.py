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
    far = X[:2] * 50.0 + 10.0  # nowhere near the training data in PCA space
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
    assert len(passes) == 1 and "'items': 9" in passes[0], passes
    df = pd.read_csv(res)
    assert df["id"].tolist() == [str(p) for p in images]
    # the same answers as one file at a time
    one = tmp_path / "one.csv"
    assert main(["assign", str(out), str(images[3]), "--out", str(one), "--quiet",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert pd.read_csv(one)["cluster"].iloc[0] == df["cluster"].iloc[3]


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
    cfg.write_text("clusterer: hdbscan\nclusterer__min_clustr_size: 20\n")
    with pytest.raises(ConfigError, match=r"has no parameter\(s\) \['min_clustr_size'\]"):
        pipeline_from_config(load_config(cfg), source=str(cfg))
