"""The neighbour predictor under a UMAP metric other than cosine / euclidean: ``correlation``
compared as UMAP compares it (each row mean-centred, then as cosine) by ``predict``, novelty
and ``similar``, saved and loaded with the model (an older model answers as it was fitted);
any other metric says at fit, naming it, that new items are placed by euclidean distance.
On 300 real CIFAR-10 images."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
from sklearn.metrics import pairwise_distances

from mediacluster.errors import InputError
from mediacluster.pipeline import Pipeline
from mediacluster.predictor import NeighbourPredictor
from mediacluster.stages import build as make_stage

pytestmark = pytest.mark.usefixtures("one_blas_thread")  # small matrices: see conftest


@pytest.fixture(scope="module")
def split(cifar3_embeddings):
    X = np.asarray(cifar3_embeddings.vectors, dtype=np.float32)
    order = np.random.default_rng(0).permutation(len(X))
    return X[order[:240]], X[order[240:]]


def _umap(metric: str):
    return make_stage("reducer", "umap", {"metric": metric, "n_components": 5, "n_neighbors": 10,
                                          "n_epochs": 30})


@pytest.fixture(scope="module")
def model(split):
    """A pipeline whose UMAP compares by correlation, its predictor keeping every dimension (so
    its distances are exact)."""
    train, _ = split
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # correlation is compared as such: no warning
        return Pipeline(reducer=_umap("correlation"), clusterer="hdbscan", reference_dims=None).fit(train)


def test_correlation_neighbours_and_similarities_are_umaps(model, split):
    """The predictor's neighbours of new items, and ``similar``'s similarities, are those of
    the correlation distance (scipy's / UMAP's: 1 - cosine of the mean-centred rows), not of
    cosine or euclidean distance on the raw vectors."""
    train, new = split
    pred = model.predictor_
    assert pred.metric == "correlation" and pred.ref_center_ and pred.ref_normalize_
    sim = model.similar(new, k=5)
    ref = train[pred.ref_index_].astype(np.float64)
    D = pairwise_distances(new.astype(np.float64), ref, metric="correlation")
    order = np.argsort(D, axis=1)
    assert (sim["rows"][:, 0] == pred.ref_index_[order[:, 0]]).mean() >= 0.95
    np.testing.assert_allclose(sim["similarities"], 1.0 - np.sort(D, axis=1)[:, :5], atol=1e-4)
    C = pairwise_distances(new.astype(np.float64), ref, metric="cosine")
    assert np.abs(sim["similarities"] - (1.0 - np.sort(C, axis=1)[:, :5])).max() > 1e-2  # centring matters here
    # novelty in the same space: the mean distance (of unit centred vectors) to the nearest references
    k = pred.n_neighbors
    score = np.sqrt(2.0 * np.maximum(np.sort(D, axis=1)[:, :k], 0.0)).mean(axis=1)
    cal = pred.novelty_calibration_
    want = np.searchsorted(cal, score.astype(cal.dtype)) / (len(cal) + 1.0)
    det = model.predict_details(new)
    assert np.abs(det["novelty"] - want).max() <= 2.0 / (len(cal) + 1.0), np.abs(det["novelty"] - want).max()
    # a constant vector has no direction once centred: refused, naming it
    with pytest.raises(InputError, match="constant"):
        model.predict_details(np.full((1, new.shape[1]), 0.5, np.float32))


def test_a_correlation_model_round_trips_and_an_older_one_answers_as_it_did(model, split, tmp_path):
    train, new = split
    before = model.predict_details(new)
    sim = model.similar(new, k=4)
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text())["ref_center"] is True
    loaded = Pipeline.load(tmp_path / "m")
    assert loaded.predictor_.metric == "correlation" and loaded.predictor_.ref_center_
    after = loaded.predict_details(new)
    for k in ("labels", "cluster", "novel"):
        assert (after[k] == before[k]).all(), k
    np.testing.assert_allclose(after["novelty"], before["novelty"])
    again = loaded.similar(new, k=4)
    assert (again["rows"] == sim["rows"]).all()
    np.testing.assert_allclose(again["similarities"], sim["similarities"], atol=1e-6)
    # a model saved before correlation was compared as such: a euclidean predictor on the raw
    # vectors and no ref_center in model.json; loaded, it keeps answering that way
    old = copy.deepcopy(model)
    old.predictor_ = NeighbourPredictor(n_neighbors=old.predict_neighbors, reference_dims=None,
                                        metric="euclidean").fit(train, **old._votes())
    was = old.predict_details(new)
    old.save(tmp_path / "old")
    doc = json.loads((tmp_path / "old" / "model.json").read_text())
    doc.pop("ref_center")
    (tmp_path / "old" / "model.json").write_text(json.dumps(doc))
    back = Pipeline.load(tmp_path / "old")
    assert back.predictor_.metric == "euclidean" and not back.ref_normalize_ and not back.predictor_.ref_center_
    now = back.predict_details(new)
    assert (now["labels"] == was["labels"]).all() and (now["novel"] == was["novel"]).all()
    assert np.isnan(back.similar(new[:3], k=4)["similarities"]).all()


def test_another_umap_metric_warns_once_naming_it(split):
    """A metric the predictor cannot compare (manhattan) still fits; one warning at fit names it
    and says new items are placed by euclidean distance."""
    train, new = split
    with pytest.warns(UserWarning) as got:
        pipe = Pipeline(reducer=_umap("manhattan"), clusterer="hdbscan", reference_dims=32).fit(train)
    said = [str(w.message) for w in got if "placed" in str(w.message)]
    assert len(said) == 1 and "'manhattan'" in said[0] and "euclidean distance" in said[0], said
    assert not pipe.ref_normalize_ and not pipe.predictor_.ref_center_
    assert len(pipe.predict_details(new)["labels"]) == len(new)
