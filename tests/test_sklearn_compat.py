"""A scikit-learn user's notebook: the stages and the Pipeline where sklearn's habits meet them.

``tests/test_conventions.py`` runs the checks ``parametrize_with_checks`` yields on every
registered stage. This file covers what those leave out and a notebook hits: the transformer
checks scikit-learn runs only on its own estimators (``get_feature_names_out``, ``set_output``,
DataFrame column names), and the habits of a data scientist with vectors she already has
(``NotFittedError`` before ``fit``, a row named when a value is NaN, the HTML repr, use inside
``sklearn.pipeline.make_pipeline`` / ``GridSearchCV`` with a clustering scorer, pickling).
Tiny data and tiny parameters throughout (benchmarks/RESULTS.md, "A scikit-learn user's
notebook").
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.utils.estimator_checks as sk_checks
from sklearn.exceptions import NotFittedError

from mediacluster.stages import registry

# parameters for tiny data (everything else: the registered defaults)
SMALL = {
    ("clusterer", "hdbscan"): {"min_cluster_size": 5},
    ("outliers", "isolation_forest"): {"n_estimators": 10},
    ("reducer", "umap"): {"n_neighbors": 5, "n_epochs": 10},
    ("clusterer", "evoc"): {"n_epochs": 10},
    ("reducer", "pca"): {"n_components": 3},
    ("reducer", "ipca"): {"n_components": 3},
    ("reducer", "kernel_pca"): {"n_components": 3},
}
# numba-compiled stages: their first fit in a process compiles (seconds); the fast tier skips them
SLOW = {("reducer", "umap"), ("clusterer", "evoc")}


def _stage_params(kinds=registry.KINDS):
    return [pytest.param(k, n, id=f"{k}-{n}", marks=[pytest.mark.slow] if (k, n) in SLOW else [])
            for k in kinds for n in registry.names(k)]


def _build(kind, name):
    return registry.build(kind, name, SMALL.get((kind, name), {}))


@pytest.fixture(scope="module")
def blobs():
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=90, centers=3, n_features=6, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize(("kind", "name"), _stage_params())
def test_every_method_before_fit_raises_sklearns_not_fitted_error(kind, name, blobs):
    X, _ = blobs
    est = _build(kind, name)
    methods = [m for m in ("predict", "transform", "predict_membership", "score_samples", "decision_function")
               if hasattr(est, m)]
    assert methods
    for m in methods:
        with pytest.raises(NotFittedError):
            getattr(est, m)(X[:3])


@pytest.mark.parametrize(("kind", "name"), _stage_params())
def test_nan_or_inf_is_refused_naming_the_row(kind, name, blobs):
    X, _ = blobs
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 4 contains NaN or infinity"):
        _build(kind, name).fit(bad)
    est = _build(kind, name).fit(X)
    new = X[:6].copy()
    new[2, 0] = np.inf
    for m in ("predict", "transform"):
        if hasattr(est, m):
            with pytest.raises(ValueError, match=r"row 2 contains NaN or infinity"):
                getattr(est, m)(new)


def test_incremental_pca_names_the_row_across_batches(blobs):
    X, _ = blobs
    bad = X.copy()
    bad[37, 0] = np.inf
    with pytest.raises(ValueError, match=r"row 37 contains NaN or infinity"):
        _build("reducer", "ipca").set_params(batch_size=16).fit(bad)
    with pytest.raises(ValueError, match=r"row 37 contains NaN or infinity"):
        _build("reducer", "ipca").fit([bad[:30], bad[30:60], bad[60:]])



# scikit-learn's checks that parametrize_with_checks does not yield (its own test suite runs them
# on its own estimators): feature names in, feature names out, set_output
TRANSFORMER_CHECKS = ("check_transformer_get_feature_names_out", "check_transformer_get_feature_names_out_pandas",
                      "check_get_feature_names_out_error", "check_set_output_transform",
                      "check_set_output_transform_pandas", "check_global_output_transform_pandas")


@pytest.mark.parametrize("check", TRANSFORMER_CHECKS)
@pytest.mark.parametrize(("kind", "name"), _stage_params(["reducer"]))
def test_reducer_feature_names_and_set_output(kind, name, check):
    est = _build(kind, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # umap-learn's n_jobs / spectral-start notes
        getattr(sk_checks, check)(type(est).__name__, est)


@pytest.mark.parametrize(("kind", "name"), _stage_params())
def test_dataframe_column_names_are_kept_and_checked(kind, name):
    est = _build(kind, name)
    sk_checks.check_dataframe_column_names_consistency(type(est).__name__, est)


def test_reducer_in_make_pipeline_gives_named_dataframe_columns(blobs):
    import pandas as pd
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, _ = blobs
    df = pd.DataFrame(X, columns=[f"dim{i}" for i in range(X.shape[1])], index=[f"item{i}" for i in range(len(X))])
    pipe = make_pipeline(StandardScaler(), _build("reducer", "pca")).set_output(transform="pandas")
    out = pipe.fit_transform(df)
    assert list(out.columns) == ["pcareducer0", "pcareducer1", "pcareducer2"]
    assert list(out.index) == list(df.index)
    assert list(pipe.transform(df.iloc[:4]).index) == ["item0", "item1", "item2", "item3"]
    plain = make_pipeline(StandardScaler(), _build("reducer", "pca")).fit_transform(X)
    np.testing.assert_allclose(out.to_numpy(), plain, rtol=1e-5, atol=1e-6)  # a DataFrame's memory order


def test_global_pandas_output_leaves_pipeline_results_unchanged(blobs):
    import pandas as pd
    import sklearn

    from mediacluster import Pipeline

    X, _ = blobs
    make = lambda: Pipeline(reducer=_build("reducer", "pca"), clusterer="hierarchy", reference_dims=None)  # noqa: E731
    plain = make().fit(X)
    with sklearn.config_context(transform_output="pandas"):
        framed = make().fit(X)
        # the fitted state stays arrays; transform follows the setting, as every transformer does
        assert type(framed.embedding_) is np.ndarray and type(framed.transform(X[:5])) is pd.DataFrame
        np.testing.assert_array_equal(framed.predict(X[:20]), plain.predict(X[:20]))
    np.testing.assert_array_equal(framed.labels_, plain.labels_)
    np.testing.assert_array_equal(framed.embedding_, plain.embedding_)


@pytest.mark.parametrize(("kind", "name"), _stage_params())
def test_notebook_html_repr_without_warnings(kind, name):
    est = _build(kind, name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's docstring parser warns on an unknown section
        html = est._repr_html_()
    assert type(est).__name__ in html


def test_pipeline_keeps_and_checks_dataframe_column_names(blobs):
    import pandas as pd

    from mediacluster import Pipeline

    X, _ = blobs
    cols = [f"dim{i}" for i in range(X.shape[1])]
    est = Pipeline(reducer=_build("reducer", "pca"), clusterer="kmeans", reference_dims=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing inside the fit or predict warns about names
        est.fit(pd.DataFrame(X, columns=cols))
        assert list(est.feature_names_in_) == cols
        same = est.predict(pd.DataFrame(X[:5], columns=cols))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):  # scikit-learn's rule
        np.testing.assert_array_equal(est.predict(X[:5]), same)
    with pytest.raises(ValueError, match="feature names should match"):
        est.predict(pd.DataFrame(X[:5], columns=cols[::-1]))
    assert not hasattr(Pipeline(reducer=_build("reducer", "pca"), clusterer="kmeans").fit(X), "feature_names_in_")
    sk_checks.check_dataframe_column_names_consistency("Pipeline", est)


def test_pipeline_set_output_names_its_reduced_coordinates(blobs):
    """``Pipeline(...).set_output(transform="pandas")`` was an AttributeError (the reducers had
    it, the pipeline not): ``fit_transform`` / ``transform`` now give DataFrames of ``pipeline0``,
    ... with the input's index, the same numbers as the arrays."""
    import pandas as pd

    from mediacluster import Pipeline

    X, _ = blobs
    df = pd.DataFrame(X, columns=[f"dim{i}" for i in range(X.shape[1])], index=[f"item{i}" for i in range(len(X))])
    make = lambda: Pipeline(reducer=_build("reducer", "pca"), clusterer="kmeans", reference_dims=None)  # noqa: E731
    est = make().set_output(transform="pandas")
    out = est.fit_transform(df)
    assert list(out.columns) == ["pipeline0", "pipeline1", "pipeline2"] and list(out.index) == list(df.index)
    assert list(est.get_feature_names_out()) == list(out.columns)
    new = est.transform(df.iloc[3:6])
    assert type(new) is pd.DataFrame and list(new.index) == ["item3", "item4", "item5"]
    plain = make().fit(X)
    np.testing.assert_allclose(out.to_numpy(), plain.embedding_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.to_numpy(), plain.transform(X[3:6]), rtol=1e-5, atol=1e-5)
    assert type(est.predict(df.iloc[:3])) is np.ndarray  # labels stay an array
    for check in ("check_set_output_transform", "check_set_output_transform_pandas",
                  "check_transformer_get_feature_names_out", "check_transformer_get_feature_names_out_pandas"):
        getattr(sk_checks, check)("Pipeline", make())


def test_a_saved_pipeline_keeps_its_dataframe_column_names(blobs, tmp_path):
    """A pipeline fitted on a DataFrame, saved and loaded, checked the width only: a frame with
    other columns (or the columns in another order) was answered in silence."""
    import pandas as pd

    from mediacluster import Pipeline, load

    X, _ = blobs
    cols = [f"dim{i}" for i in range(X.shape[1])]
    est = Pipeline(reducer=_build("reducer", "pca"), clusterer="kmeans", reference_dims=None)
    est.fit(pd.DataFrame(X, columns=cols)).save(tmp_path / "m")
    back = load(tmp_path / "m")
    assert list(back.feature_names_in_) == cols
    np.testing.assert_array_equal(back.predict(pd.DataFrame(X[:9], columns=cols)), est.predict(X[:9]))
    with pytest.raises(ValueError, match="feature names should match"):
        back.predict(pd.DataFrame(X[:5], columns=cols[::-1]))
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        back.predict(X[:5])
    Pipeline(reducer=_build("reducer", "pca"), clusterer="kmeans").fit(X).save(tmp_path / "plain")
    assert not hasattr(load(tmp_path / "plain"), "feature_names_in_")  # an array fit: width only


# -- the notebook's remaining habits (they already work: kept working) ---------------------------
def test_grid_search_with_a_clustering_scorer_over_our_stages(blobs):
    from sklearn.metrics import adjusted_rand_score, make_scorer
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mediacluster import Pipeline

    X, y = blobs
    ari = make_scorer(adjusted_rand_score)
    sk = make_pipeline(StandardScaler(), _build("reducer", "pca"), _build("clusterer", "hdbscan"))
    assert cross_val_score(sk, X, y, scoring=ari, cv=3).min() > 0.9
    ours = Pipeline(reducer=_build("reducer", "pca"), clusterer="kmeans", reference_dims=None)
    grid = GridSearchCV(ours, {"clusterer__n_clusters": [2, 3, 6]}, scoring=ari, cv=3).fit(X, y)
    assert grid.best_params_ == {"clusterer__n_clusters": 3} and grid.best_score_ > 0.9
    assert grid.best_estimator_.get_params()["clusterer__n_clusters"] == 3


def test_fitted_pipeline_pickles_and_joblib_dumps_with_identical_predictions(blobs, tmp_path):
    import pickle

    import joblib
    from sklearn.base import clone

    from mediacluster import Pipeline

    X, _ = blobs
    est = Pipeline(reducer=_build("reducer", "pca"), clusterer="hierarchy", reference_dims=None).fit(X[:60])
    joblib.dump(est, tmp_path / "model.joblib")
    for back in (pickle.loads(pickle.dumps(est)), joblib.load(tmp_path / "model.joblib")):
        np.testing.assert_array_equal(back.predict(X[60:]), est.predict(X[60:]))
        np.testing.assert_array_equal(back.transform(X[60:]), est.transform(X[60:]))
    again = clone(est).fit(X[:60])  # a fixed seed: the same fit
    np.testing.assert_array_equal(again.labels_, est.labels_)
    np.testing.assert_array_equal(again.predict(X[60:]), est.predict(X[60:]))
