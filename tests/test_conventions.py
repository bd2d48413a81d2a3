"""Every registered stage follows scikit-learn's estimator conventions (issue 17, item 5).

``parametrize_with_checks`` runs scikit-learn's own estimator checks (input validation,
``n_features_in_``, ``check_is_fitted`` before ``predict``/``transform``, parameters left as
given, fit idempotence, dtypes, sample-order invariance, pickling, read-only memmap input, one
sample / one feature) on one instance of every stage in ``stages.registry``. A check that cannot
apply to a stage is listed in :data:`EXPECTED_FAILURES` with the reason; anything else failing
is a defect of the stage.

The instances use parameters that fit scikit-learn's small check data (20-300 rows, 1-10
columns): HDBSCAN's default ``min_cluster_size=50`` is above most of those row counts (it
refuses, naming the parameter), UMAP runs few epochs, IsolationForest grows few trees.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from mediacluster import Pipeline
from mediacluster.stages import registry
from mediacluster.stages.cluster import HDBSCANClusterer, MeanShiftClusterer
from mediacluster.stages.evoc import EVoCClusterer
from mediacluster.stages.outliers import IsolationForestOutliers, LOFOutliers
from mediacluster.stages.reduce import UMAPReducer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every thread pool (BLAS, OpenMP, numba) at one thread: the check data are tiny, and on a
    loaded 2-core machine idle pool threads spin (measured: the same checks took 3x the CPU)."""
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    numba.set_num_threads(before)


# parameters for scikit-learn's small check data (everything else: the registered defaults)
SMALL = {
    ("clusterer", "hdbscan"): {"min_cluster_size": 5},
    ("outliers", "isolation_forest"): {"n_estimators": 10},
    ("reducer", "umap"): {"n_neighbors": 5, "n_epochs": 10},
    ("clusterer", "evoc"): {"n_epochs": 10},
}

_LOF_TRAIN = (
    "LOF labels its training items by the LOF of each among the others (outlier_mask_, "
    "fit_predict) and new points by their LOF against the training set (predict, novelty=True); "
    "a training item given to predict finds itself at distance 0, so predict(X_train) is not "
    "fit_predict(X_train) and does not remove the contamination share. scikit-learn's "
    "LocalOutlierFactor makes the same distinction (it exempts itself from these checks through "
    "its `novelty` parameter, which LOFOutliers fixes to True); "
    "test_lof_fit_predict_removes_contamination_share checks the training-set side.")
_NONE_FLAGS_NOTHING = ("the 'none' outlier stage keeps every item by design: its labels are all 1, "
                       "never the -1 and 1 these checks require")
_UMAP_TRANSFORM = ("umap-learn places new points by a short stochastic optimisation over the "
                   "whole batch (negative sampling draws depend on the batch), so a point's "
                   "coordinates depend on the other points transformed with it; Pipeline.predict "
                   "does not use it (it places new items through its own neighbour predictor)")

EXPECTED_FAILURES = {
    ("outliers", "lof"): {
        "check_outliers_fit_predict": _LOF_TRAIN,
        "check_outliers_train": _LOF_TRAIN,
    },
    ("outliers", "none"): {
        "check_outliers_fit_predict": _NONE_FLAGS_NOTHING,
        "check_outliers_train": _NONE_FLAGS_NOTHING,
    },
    ("reducer", "umap"): {
        "check_methods_sample_order_invariance": _UMAP_TRANSFORM,
        "check_methods_subset_invariance": _UMAP_TRANSFORM,
    },
}


def _instances() -> list:
    out = []
    for kind in registry.KINDS:
        for name in registry.names(kind):
            out.append(registry.build(kind, name, SMALL.get((kind, name), {})))
    return out


def _expected_failures(estimator) -> dict[str, str]:
    info = registry.of(estimator)
    return EXPECTED_FAILURES.get((info.kind, info.name), {})


STAGES = _instances()
# the slow tier: UMAP's checks (~8 CPU s: numba code for transform, used nowhere else in the fast
# tier), MeanShift's (2-8 CPU s: a bandwidth estimate and a mean-shift per check) and EVoC's
# (15 CPU s: its numba kernels; HierarchyClusterer passes every check, ~3 CPU s, in the fast tier)
SLOW_STAGES = [s for s in STAGES if isinstance(s, UMAPReducer | MeanShiftClusterer | EVoCClusterer)]
SLOW_CLUSTERERS = {"evoc"}  # its numba kernels compile on first use


def test_every_registered_stage_is_checked():
    checked = {(registry.of(s).kind, registry.of(s).name) for s in STAGES}
    assert checked == {(k, n) for k in registry.KINDS for n in registry.names(k)}
    assert set(EXPECTED_FAILURES) <= checked and set(SMALL) <= checked


@parametrize_with_checks([s for s in STAGES if s not in SLOW_STAGES],
                         expected_failed_checks=_expected_failures, xfail_strict=True)
def test_scikit_learn_conventions(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(SLOW_STAGES, expected_failed_checks=_expected_failures, xfail_strict=True)
def test_scikit_learn_conventions_slow_stages(estimator, check):
    check(estimator)


# -- the Pipeline users hold -------------------------------------------------------------------
# The same checks on mediacluster.Pipeline (a clusterer that also transforms: fit_predict =
# labels_, fit_transform = embedding_, predict / transform place new items through the neighbour
# predictor), with fast stages for the tiny check data: PCA + K-means, and PCA + the default
# hierarchy clusterer (~1 CPU s each); the default Pipeline() in the slow tier.
_ONE_VECTOR = ("predict / predict_details / transform take one 1-D vector as one item (a service "
               "answering one upload, README \"Python API\"); scikit-learn's check wants it refused")
_OBJECT_NOT_NUMBER = ("an object array holding a non-number (the check puts a dict in it) is refused "
                      "with mediacluster's InputError (a ValueError, exit 2 in the CLI) naming the value "
                      "and its row, not numpy's TypeError; object arrays of numbers are accepted, "
                      "which is the rest of the check")
_ZERO_VECTOR = ("a model that compares directions (cosine: the default UMAP's metric, and every pipeline "
                "without UMAP, Pipeline.neighbour_metric) refuses to "
                "predict an all-zero vector, naming it (it has no direction: every fitted item is "
                "equally far from it); the check's integer data hold one. test_predict.py "
                "test_a_zero_vector_is_refused_by_a_cosine_model_only")
PIPELINE_EXPECTED_FAILURES = {"check_fit2d_predict1d": _ONE_VECTOR, "check_dtype_object": _OBJECT_NOT_NUMBER}
PIPELINES = [
    Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 2}),
             clusterer=registry.build("clusterer", "kmeans", {"n_clusters": 3}), reference_dims=64),
    Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 2}), reference_dims=64),
]


def _pipeline_expected_failures(pipe) -> dict[str, str]:
    out = dict(PIPELINE_EXPECTED_FAILURES)
    if Pipeline.neighbour_metric(registry.build("reducer", pipe.reducer)) == "cosine":  # "auto": UMAP, cosine
        out["check_estimators_dtypes"] = _ZERO_VECTOR
    return out


@parametrize_with_checks(PIPELINES, expected_failed_checks=_pipeline_expected_failures, xfail_strict=True)
def test_pipeline_scikit_learn_conventions(estimator, check):
    check(estimator)


# the default Pipeline() (UMAP on the shared kNN graph + the hierarchy): its UMAP's numba code
@pytest.mark.slow
@parametrize_with_checks([Pipeline()], expected_failed_checks=_pipeline_expected_failures, xfail_strict=True)
def test_default_pipeline_scikit_learn_conventions(estimator, check):
    check(estimator)


# -- what the checks above leave to us ---------------------------------------------------------
@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=300, centers=3, n_features=4, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CLUSTERERS else n
                                  for n in registry.names("clusterer")])
def test_clusterer_predict_returns_labels_and_membership_separately(blobs, name):
    X, _ = blobs
    est = registry.build("clusterer", name, SMALL.get(("clusterer", name), {})).fit(X)
    labels, member = est.predict(X[:40]), est.predict_membership(X[:40])
    assert isinstance(labels, np.ndarray) and labels.shape == (40,) and labels.dtype.kind == "i"
    assert set(np.unique(labels)) <= {-1} | set(np.unique(est.labels_).tolist())
    assert member.shape == (40,) and member.dtype.kind == "f"
    assert np.all((member >= 0) & (member <= 1))
    assert np.all(member[labels < 0] == 0)  # noise has no membership


@pytest.mark.parametrize("name", registry.names("outliers"))
def test_outlier_predict_returns_plus_minus_one(blobs, name):
    X, _ = blobs
    est = registry.build("outliers", name, SMALL.get(("outliers", name), {})).fit(X)
    far = X[:5] + 100.0 * np.abs(X).max()
    pred = est.predict(np.vstack([X[:40], far]))
    assert pred.dtype.kind == "i" and set(np.unique(pred)) <= {-1, 1}
    assert np.array_equal(est.fit_predict(X), np.where(est.outlier_mask_, -1, 1))
    if name != "none":
        assert (pred[-5:] == -1).all()


def test_lof_fit_predict_removes_contamination_share(blobs):
    X, _ = blobs
    pred = LOFOutliers(contamination=0.1).fit_predict(X)
    assert (pred == -1).sum() == 30


def test_isolation_forest_decision_is_score_minus_offset(blobs):
    X, _ = blobs
    est = IsolationForestOutliers(n_estimators=10, contamination=0.1).fit(X)
    np.testing.assert_allclose(est.decision_function(X), est.score_samples(X) - est.offset_)
    np.testing.assert_allclose(est.decision_function(X), est.scores_)


def test_stage_refuses_too_few_items_naming_the_parameter():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=r"min_cluster_size=50 but there are only 20 items to cluster \(n_samples=20\)"):
        HDBSCANClusterer().fit(X)


@pytest.mark.slow
def test_umap_with_fewer_points_than_dimensions_plus_two():
    # spectral initialisation cannot run (scipy's eigsh needs k < N): random start instead
    X = np.random.default_rng(0).normal(size=(8, 5))
    Z = UMAPReducer(n_components=7, n_neighbors=3, n_epochs=5).fit_transform(X)
    assert Z.shape == (8, 7) and np.isfinite(Z).all()
