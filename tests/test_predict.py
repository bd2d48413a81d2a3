"""Predicting new items with a fitted model: batch == one by one, probabilities, speed sanity."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mediacluster.pipeline import Pipeline
from mediacluster.stages import build as make_stage

pytestmark = pytest.mark.usefixtures("one_blas_thread")  # small matrices: see conftest


@pytest.fixture(scope="module")
def split(cifar3_embeddings):
    X = np.asarray(cifar3_embeddings.vectors, dtype=np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    return X[order[:240]], X[order[240:]]


@pytest.fixture(scope="module")
def model(split):
    train, _ = split
    return Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 10}),
                    clusterer=make_stage("clusterer", "hdbscan", {"min_cluster_size": 10}),
                    reference_dims=64).fit(train)


def test_batch_equals_one_by_one(model, split):
    _, new = split
    batch = model.predict_details(new)
    for i in range(0, len(new), 7):
        one = model.predict_details(new[i])
        for k in ("labels", "cluster", "status"):
            assert one[k][0] == batch[k][i], k
        assert one["probabilities"][0] == pytest.approx(batch["probabilities"][i], abs=1e-5)  # float32 gemm vs loop


def test_held_out_items_get_valid_assignments(model, split):
    _, new = split
    det = model.predict_details(new)
    fitted = set(model.labels_.tolist())
    assert set(det["labels"].tolist()) <= fitted | {-1}
    assert (det["cluster"] >= 0).all()  # assign_noise: every item gets its nearest cluster
    assert np.all((det["probabilities"] >= 0) & (det["probabilities"] <= 1))
    assert np.all(det["probabilities"][det["labels"] < 0] == 0)
    assert det["embedding"].shape == (len(new), 10)
    # held-out items land in a cluster, not noise, at least as often as the fitted items do (HDBSCAN
    # leaves 65% of these 240 noise; measured: 45% of the held-out items clustered; the euclidean
    # predictor before Pipeline.neighbour_metric clustered over half, farther from the fit's share)
    assert (det["labels"] >= 0).mean() >= (model.labels_ >= 0).mean() > 0.2


def test_latency_sanity(model, split):
    """Loose bound (the real figures are in benchmarks/predict.py): one item well under 50 ms."""
    _, new = split
    model.predict_details(new[0])
    t = time.perf_counter()
    for i in range(20):
        model.predict_details(new[i])
    assert (time.perf_counter() - t) / 20 < 0.05


def test_a_zero_vector_is_refused_by_a_cosine_model_only(model, split):
    """Under the cosine metric a zero vector has no direction and every fitted item is equally far
    from it: refused, naming it (as NaN is), instead of a cluster from an arbitrary vote. A
    pipeline without UMAP (here PCA) compares directions too (``Pipeline.neighbour_metric``); a
    predictor that compares positions (euclidean) places it as any other point."""
    from mediacluster.errors import InputError
    from mediacluster.predictor import NeighbourPredictor

    train, new = split
    assert model.ref_normalize_ and model.predictor_.metric == "cosine"
    batch = np.vstack([new[:2], np.zeros((1, new.shape[1]), np.float32)])
    with pytest.raises(InputError, match="vector 2 is all zeros"):
        model.predict_details(batch)
    with pytest.raises(InputError, match="vector 0 is all zeros"):
        model.predict_details(batch[2])  # one vector, 1-D
    with pytest.raises(InputError, match="vector 2 is all zeros"):
        model.similar(batch, k=3)  # not NaN similarities
    assert len(model.predict_details(new[:2])["labels"]) == 2
    # a collection's own rows (a sample fit's assignment, the studio's check) are placed
    assert len(model.predict_details(batch, zero_vectors="place")["labels"]) == 3
    lab = model.labels_
    euclid = NeighbourPredictor(n_neighbors=5, reference_dims=16, metric="euclidean").fit(
        train, labels=lab, probabilities=model.probabilities_, cluster=lab, confidence=model.confidence_,
        embedding=model.embedding_)
    assert not euclid.ref_normalize_ and len(euclid.predict_details(batch)["labels"]) == 3


def test_a_model_saved_with_a_euclidean_predictor_answers_as_it_did(model, split, tmp_path):
    """Before ``Pipeline.neighbour_metric`` a pipeline without UMAP got a euclidean predictor on
    the raw vectors; such a saved model (``ref_normalize`` false) keeps answering that way after
    loading: the same votes, distances only in ``similar``, a zero vector placed. Refitted, the
    same pipeline compares directions."""
    import copy

    from mediacluster.predictor import NeighbourPredictor

    train, new = split
    old = copy.deepcopy(model)
    old.predictor_ = NeighbourPredictor(n_neighbors=old.predict_neighbors, reference_dims=old.reference_dims,
                                        metric="euclidean").fit(train, **old._votes())
    before = old.predict_details(new)
    old.save(tmp_path / "m")
    loaded = Pipeline.load(tmp_path / "m")
    assert not loaded.ref_normalize_ and loaded.predictor_.metric == "euclidean"
    after = loaded.predict_details(new)
    assert (after["labels"] == before["labels"]).all() and (after["novel"] == before["novel"]).all()
    assert np.isnan(loaded.similar(new[:3], k=4)["similarities"]).all()
    assert len(loaded.predict_details(np.zeros((1, new.shape[1]), np.float32))["labels"]) == 1
    again = Pipeline.load(tmp_path / "m").set_params().fit(train)
    assert again.ref_normalize_ and again.predictor_.metric == "cosine"


def test_the_neighbour_predictor_on_its_own(split):
    """``NeighbourPredictor`` without a pipeline: the fitted items' own vectors get their own
    labels back, the saved arrays rebuild the same answers, and new votes (another labelling of
    the same items) change the answers without refitting the index."""
    from mediacluster.errors import ParameterError
    from mediacluster.predictor import NeighbourPredictor

    train, new = split
    labels = (train[:, 0] > np.median(train[:, 0])).astype(np.int64)
    labels[:5] = -1
    items = {"labels": labels, "probabilities": np.where(labels >= 0, 0.9, 0.0), "cluster": np.abs(labels),
             "confidence": np.full(len(train), 0.5), "embedding": train[:, :2]}
    pred = NeighbourPredictor(n_neighbors=5, reference_dims=16, metric="cosine").fit(train, **items)
    assert pred.ref_vectors_.shape == (len(train), 16) and pred.ref_normalize_
    dist, pos = pred.kneighbors(train)
    assert (pos[:, 0] == np.arange(len(train))).all() and np.allclose(dist[:, 0], 0, atol=1e-3)
    det = pred.predict_details(train)
    assert (det["labels"] == labels).all() and (det["cluster"] == np.abs(labels)).all()
    assert det["path"] is None and (det["neighbors"][:, 0] == np.arange(len(train))).all()
    with pytest.raises(ParameterError, match="no levels"):
        pred.predict_path(new)
    arrays = {k.rstrip("_"): getattr(pred, k) for k in ("ref_index_", "ref_vectors_", "ref_mean_",
                                                         "ref_components_", "novelty_threshold_",
                                                         "novelty_calibration_")}
    again = NeighbourPredictor.from_arrays(arrays, train.shape[1], True, n_neighbors=5).set_votes(**items)
    for k, v in pred.predict_details(new).items():
        if v is not None:
            assert np.array_equal(v, again.predict_details(new)[k]), k
    flipped = again.set_votes(**{**items, "labels": np.where(labels >= 0, 1 - labels, labels)})
    assert (flipped.predict_details(train)["labels"] == np.where(labels >= 0, 1 - labels, labels)).all()
    # the copy distance (a copy of a fitted item is not novel) is derived from the calibration
    # once, at fit and at load, not on every predict call; the answers are the formula's
    from mediacluster.predictor import COPY_DISTANCE

    cal = pred.novelty_calibration_
    assert pred.copy_distance_ == again.copy_distance_ == COPY_DISTANCE * max(float(np.median(cal)), 1e-12)
    dist = np.array([[0.0, 1.0], [pred.copy_distance_ * 2, 1.0], [float(cal[-1]) * 3, cal[-1] * 3]])
    novel, novelty = pred.novelty(dist)
    assert novelty[0] == 0.0 and not novel[0] and novelty[1] > 0 and novel[2]
    # a new item's coordinates are its neighbours' weighted by normalised 1/d (weights summing
    # to 1), so it lands among them on the map, not off it (unnormalised: ~|w| times farther out)
    d = pred.predict_details(new)
    np.testing.assert_allclose(d["weights"].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(d["embedding"], np.einsum("qk,qkd->qd", d["weights"], train[:, :2][d["neighbors"]]),
                               rtol=1e-4, atol=1e-5)
    # a noise answer has probability 0 whatever membership its voters carried ("0 for noise"):
    # votes whose noise items hold 0.7 (a caller's own scores) give noise 0, a cluster share x 0.7
    det = pred.set_votes(**{**items, "probabilities": np.full(len(train), 0.7)}).predict_details(train)
    assert (det["labels"] == labels).all()
    assert (det["probabilities"][labels < 0] == 0).all() and np.allclose(det["probabilities"][labels >= 0], 0.7)


def test_the_novelty_threshold_is_the_split_conformal_rank():
    """``conformal_threshold``: the ceil((n + 1)(1 - alpha))-th smallest score, so a new item
    exchangeable with the n calibration items exceeds it with probability at most alpha; too
    few scores for that rank: the largest. Hand cases where n(1 - alpha) would give another rank."""
    from mediacluster.predictor import conformal_threshold

    s = np.arange(10, 0, -1, dtype=np.float64)  # 10..1, unsorted on purpose
    assert conformal_threshold(s, 0.25) == 9.0  # ceil(11 * 0.75) = 9th smallest, not ceil(7.5) = 8th
    assert conformal_threshold(s, 0.5) == 6.0  # ceil(5.5) = 6th, not the 5th
    assert conformal_threshold(s, 0.01) == 10.0  # rank 11 > n: the largest
    assert conformal_threshold(np.arange(1.0, 100.0), 0.01) == 99.0  # 99 scores: exactly rank 99


def test_projection_needs_four_distinct_rows_per_axis(split):
    """The reference vectors are projected on ``reference_dims`` axes only from 4 distinct fitted
    rows per axis: exact copies do not count (they span nothing), and below that the vectors are
    kept whole, calibrated leave-self-out, and a fitted item is still its own nearest reference."""
    from mediacluster.predictor import NeighbourPredictor, projects

    assert not projects(511, 1280, 128) and projects(512, 1280, 128) and not projects(10**6, 64, 128)
    assert not projects(10**6, 1280, None)
    train, _ = split  # 240 distinct rows
    z = np.zeros(480, dtype=np.int64)
    items = {"labels": z, "probabilities": np.ones(480), "cluster": z, "confidence": np.ones(480),
             "embedding": np.zeros((480, 2))}
    doubled = np.concatenate([train, train])
    kept = NeighbourPredictor(reference_dims=64, metric="cosine").fit(doubled, distinct=np.arange(240), **items)
    assert kept.ref_components_ is None and kept.ref_vectors_.shape == (240, train.shape[1])
    assert len(kept.novelty_calibration_) == 240 and (kept.novelty_calibration_ > 0).all()
    dist, pos = kept.kneighbors(train)
    assert (pos[:, 0] == np.arange(240)).all() and not kept.novelty(dist)[0].any()
    # at distance 0 exactly (faiss's batch distances, |q|^2 + |r|^2 - 2 q.r, put some at ~1e-3 in
    # 1,280 dims, and the item's own vote no longer dominated); the others as numpy measures them
    assert (dist[:, 0] == 0).all() and (np.diff(dist, axis=1) >= 0).all()
    ref = np.linalg.norm(kept.transform(train)[:, None, :] - kept.ref_vectors_[pos], axis=2)
    np.testing.assert_allclose(dist, ref, rtol=1e-5, atol=1e-6)
    projected = NeighbourPredictor(reference_dims=60, metric="cosine").fit(doubled, distinct=np.arange(240), **items)
    assert projected.ref_vectors_.shape == (240, 60) and projected.ref_components_.shape == (60, train.shape[1])


@pytest.mark.parametrize("outliers", [None, "lof"])
def test_no_new_items_get_empty_answers(split, outliers):
    """A batch of zero vectors (an empty chunk of a stream) gets empty answers of the right
    shapes, as ``predict_path`` gave, where ``predict`` failed inside the vote with 'attempt to
    get argmax of an empty sequence' (and LOF with scikit-learn's '0 sample(s)')."""
    train, _ = split
    pipe = Pipeline(reducer="pca", outliers=outliers, clusterer="hdbscan", random_state=0).fit(train)
    none = train[:0]
    assert pipe.predict(none).shape == (0,) and pipe.predict_membership(none).shape == (0,)
    d = pipe.predict_details(none)
    assert d["status"].shape == d["cluster"].shape == (0,)
    assert pipe.transform(none).shape == (0, pipe.embedding_.shape[1])
    levels = Pipeline(random_state=0).fit(train)
    labels, probs = levels.predict_path(none)
    assert levels.predict(none).shape == (0,) and labels.shape == (len(levels.levels_), 0)


def test_a_held_out_kind_is_novel_and_known_kinds_are_not(cifar3_embeddings, tmp_path):
    """Open set on a real slice: fitted on 140 airplanes and trucks, most frogs get a high
    ``novelty`` and few unseen airplanes / trucks do; the 1% flag never fires on more known items
    than a few. The old rule (99% quantile of the fitted items' own distances in the PCA space
    they shaped) flagged none of the frogs. Saved and loaded, the answers are the same; a model
    saved without the calibration (older code) answers ``novel`` as before, ``novelty`` NaN."""
    import shutil

    from mediacluster import persist

    X = np.asarray(cifar3_embeddings.vectors, dtype=np.float32)
    y = np.asarray(cifar3_embeddings.labels)
    order = np.random.default_rng(0).permutation(len(X))
    known = order[y[order] != "frog"]
    train, test = known[:140], known[140:]
    frogs = np.flatnonzero(y == "frog")
    pipe = Pipeline(random_state=0).fit(X[train])
    assert pipe.novelty_calibration_ is not None and len(pipe.novelty_calibration_) == len(train)
    det_known, det_frog = pipe.predict_details(X[test]), pipe.predict_details(X[frogs])
    for det in (det_known, det_frog):
        assert ((det["novelty"] >= 0) & (det["novelty"] <= 1)).all()
        assert (det["novel"] <= (det["novelty"] >= 0.99)).all()  # novel only where novelty is high
    # measured (140 items: kept whole): frogs' novelty 10th percentile 0.89, median 0.96; unseen known items' median 0.49
    assert (det_frog["novelty"] >= 0.9).mean() > 0.6, np.median(det_frog["novelty"])
    assert (det_known["novelty"] >= 0.9).mean() < 0.2, np.median(det_known["novelty"])
    assert 0.25 < np.median(det_known["novelty"]) < 0.75  # calibrated: unseen known items spread over 0..1
    assert det_known["novel"].mean() <= 0.05
    assert np.median(det_frog["novelty"]) > np.median(det_known["novelty"]) + 0.3
    # 140 fitted items are too few for the 128-axis projection (predictor.projects): kept whole, the
    # frogs are flagged `novel` 19% of the time; projected, 5% (the known items 1.7% either way)
    assert pipe.ref_components_ is None and pipe.ref_vectors_.shape[1] == X.shape[1]
    assert det_frog["novel"].mean() >= 0.12, det_frog["novel"].mean()
    # the fitted items themselves are copies of the collection's items: never novel
    fitted = pipe.predict_details(X[train])
    assert not fitted["novel"].any() and (fitted["novelty"] == 0).all()

    pipe.save(tmp_path / "m")
    again = Pipeline.load(tmp_path / "m")
    d2 = again.predict_details(X[frogs])
    assert np.array_equal(d2["novel"], det_frog["novel"]) and np.array_equal(d2["novelty"], det_frog["novelty"])

    # a model written before the calibration was kept: no novelty_calibration in arrays.npz
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "m", old)
    info, arrays = persist.read_model(old)
    del arrays["novelty_calibration"]
    info["arrays"] = {k: v for k, v in info.get("arrays", {}).items() if k != "novelty_calibration"}
    shutil.rmtree(old)
    persist.write_model(old, info, arrays)
    d3 = Pipeline.load(old).predict_details(X[frogs])
    assert np.array_equal(d3["novel"], det_frog["novel"]) and np.isnan(d3["novelty"]).all()
    assert np.array_equal(d3["labels"], det_frog["labels"])


def test_a_reference_sample_without_a_levels_last_cluster_still_votes_the_path(tmp_path):
    """``reference_size`` below n keeps a stratified sample of the fitted items; a fine level's
    cluster with the highest id can be missing from it. The path vote sized each level by the
    sample's largest id, not by the tree, and every predict of such a model failed with a
    broadcast error (n=300, reference_size 50..200 all did)."""
    import mediacluster

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(6, 16))[rng.integers(0, 6, 300)] * 5 + rng.normal(size=(300, 16))).astype(np.float32)
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 5}), clusterer="hierarchy",
                    reference_size=50).fit(X)
    kept = pipe.levels_[:, pipe.predictor_.ref_index_]
    assert any(k.max() < lv.max() for k, lv in zip(kept, pipe.levels_))  # the case itself
    labels = pipe.predict(X)
    assert np.mean(labels == pipe.labels_) > 0.9
    path, _ = pipe.predict_path(X[:20])
    for lv in range(1, len(path)):  # a path, each cluster under the one above it
        assert np.array_equal(pipe.parents_[lv - 1][path[lv]], path[lv - 1])
    pipe.save(tmp_path / "m")
    assert np.array_equal(mediacluster.load(tmp_path / "m").predict(X), labels)
