"""Each stage on real embeddings (300 CIFAR-10 test images, 3 classes)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from mediacluster.stages.cluster import (
    AgglomerativeClusterer,
    DBSCANClusterer,
    HDBSCANClusterer,
    KMeansClusterer,
    MeanShiftClusterer,
    knn_vote,
)
from mediacluster.stages.outliers import IsolationForestOutliers, LOFOutliers, NoOutliers
from mediacluster.stages.reduce import (
    IncrementalPCAReducer,
    KernelPCAReducer,
    NoReduction,
    PCAReducer,
    UMAPReducer,
)

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def data(cifar3_embeddings):
    X = np.asarray(cifar3_embeddings.vectors, dtype=np.float32)
    y = np.asarray(cifar3_embeddings.labels)
    return X, y


@pytest.fixture(scope="module")
def Z10(data):
    return PCAReducer(n_components=10).fit_transform(data[0])


@pytest.mark.parametrize("cls,kw,dim", [
    (PCAReducer, {"n_components": 7}, 7),
    (IncrementalPCAReducer, {"n_components": 7, "batch_size": 64}, 7),
    (KernelPCAReducer, {"n_components": 5}, 5),
    (NoReduction, {}, 1280),
])
def test_linear_reducers_shapes_and_transform(data, cls, kw, dim):
    X, _ = data
    r = cls(**kw)
    assert not hasattr(r, "embedding_")  # constructor does no work
    Z = r.fit_transform(X)
    assert Z.shape == (len(X), dim) and Z.dtype == np.float32
    np.testing.assert_allclose(r.transform(X[:20]), Z[:20], rtol=1e-3, atol=1e-3)
    assert kw.items() <= r.get_params().items()


def test_incremental_pca_matches_pca_subspace_and_reads_batches(data):
    X, _ = data
    full = PCAReducer(n_components=5).fit(X)
    inc = IncrementalPCAReducer(n_components=5, batch_size=50).fit(X)
    # same leading subspace (signs may flip): |cos| of the first axis close to 1
    a, b = full.pca_.components_[0], inc.ipca_.components_[0]
    assert abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99
    batches = [X[i:i + 40] for i in range(0, len(X), 40)]  # an iterable of batches, not one array
    inc2 = IncrementalPCAReducer(n_components=5, batch_size=40).fit(batches)
    assert inc2.embedding_.shape == (len(X), 5)


def test_umap_with_precomputed_knn(data):
    from sklearn.neighbors import NearestNeighbors

    X, y = data
    dist, idx = NearestNeighbors(n_neighbors=20, metric="cosine").fit(X).kneighbors(X)
    r = UMAPReducer(n_neighbors=15, n_components=5, n_epochs=100, random_state=0)
    Z = r.fit_transform(X, precomputed_knn=(idx, dist))  # 20 columns given, 15 used
    assert Z.shape == (len(X), 5)
    km = KMeansClusterer(n_clusters=3).fit(Z)
    assert normalized_mutual_info_score(y, km.labels_) > 0.6
    with pytest.raises(ValueError, match="precomputed_knn"):
        UMAPReducer(n_neighbors=30).fit(X, precomputed_knn=(idx, dist))  # k < n_neighbors


def test_umap_reads_a_precomputed_graph_in_place_when_it_cuts_no_edge(data):
    """A graph of int32 / float32 with no edge at umap-learn's disconnection distance is read
    where it lies (the tuner's 50,000 x 1,988 graph was copied: 0.8 GB of its peak), gives the
    same layout as a copy, and is left as it was; one with such an edge is still copied (umap-learn
    writes -1 / inf there)."""
    from mediacluster.stages.neighbors import knn_graph

    X, _ = data
    idx, dist = knn_graph(X, 15, metric="cosine")  # as wide as used (a wider one: the test below)
    before = idx.copy(), dist.copy()
    kw = {"n_neighbors": 15, "n_components": 2, "n_epochs": 30, "random_state": 0}
    r = UMAPReducer(**kw).fit(X, precomputed_knn=(idx, dist))
    assert np.shares_memory(r.umap_._knn_indices, idx) and np.shares_memory(r.umap_._knn_dists, dist)
    copied = UMAPReducer(**kw).fit(X, precomputed_knn=(idx.astype(np.int64), dist.astype(np.float64)))
    assert np.array_equal(r.embedding_, copied.embedding_)
    assert np.array_equal(idx, before[0]) and np.array_equal(dist, before[1])
    far = dist.copy()
    far[0, 14:] = 2.0  # cosine: opposite neighbours (among the 15 used), past umap-learn's cut
    r = UMAPReducer(**kw).fit(X, precomputed_knn=(idx, far))
    assert not np.shares_memory(r.umap_._knn_dists, far) and (far[0, 14:] == 2.0).all()
    assert r.umap_._knn_indices[0, 14] == -1 and idx[0, 14] == before[0][0, 14]


def test_a_fitted_umap_keeps_no_view_of_a_wider_precomputed_graph(data):
    """The layout reads the caller's wider graph in place, but the fitted object keeps only the
    columns it used: a view would keep the whole graph alive as long as the pipeline (the tuner's
    refit: 1,988 columns, 0.8 GB, held for 15), where a copy of the 15 columns was kept before."""
    from mediacluster.stages.neighbors import knn_graph

    X, _ = data
    idx, dist = knn_graph(X, 40, metric="cosine")
    kw = {"n_neighbors": 15, "n_components": 2, "n_epochs": 30, "random_state": 0}
    r = UMAPReducer(**kw).fit(X, precomputed_knn=(idx, dist))
    arrays = [v for v in vars(r.umap_).values() if isinstance(v, np.ndarray)]
    arrays += [a for v in vars(r.umap_).values() if isinstance(v, tuple) for a in v if isinstance(a, np.ndarray)]
    assert not [a.shape for a in arrays if np.shares_memory(a, idx) or np.shares_memory(a, dist)]
    assert np.array_equal(r.umap_._knn_indices, idx[:, :15]) and np.array_equal(r.umap_.precomputed_knn[1], dist[:, :15])
    same = UMAPReducer(**kw).fit(X, precomputed_knn=(idx[:, :15].copy(), dist[:, :15].copy()))
    assert np.array_equal(r.embedding_, same.embedding_)


def test_lof_flags_contamination_share_and_predicts(Z10):
    lof = LOFOutliers(n_neighbors=20, contamination=0.05).fit(Z10)
    assert lof.outlier_mask_.dtype == bool and len(lof.outlier_mask_) == len(Z10)
    assert 0.03 <= lof.outlier_mask_.mean() <= 0.07
    far = Z10[:3] + 100.0 * np.abs(Z10).max()  # far away from everything
    assert (lof.predict(far) == -1).all()  # scikit-learn's convention: -1 outlier, 1 inlier
    assert (lof.predict(np.median(Z10, axis=0, keepdims=True)) == 1).all()


def test_isolation_forest_and_none(Z10):
    iso = IsolationForestOutliers(contamination=0.1, random_state=0).fit(Z10)
    assert 0.05 <= iso.outlier_mask_.mean() <= 0.15
    iso2 = IsolationForestOutliers(contamination=0.1, random_state=0).fit(Z10)
    assert np.array_equal(iso.outlier_mask_, iso2.outlier_mask_)  # deterministic: refit on load
    assert not NoOutliers().fit(Z10).outlier_mask_.any()


def test_outlier_stages_keep_their_stated_rules(Z10):
    """The fence is Tukey's (Q1 - 1.5 IQR of the forest's training scores); ``max_samples`` given
    as a float count above 1 is that count (scikit-learn refuses a float > 1); LOF fitted with a
    precomputed euclidean kNN graph answers as without it, and a cosine LOF ignores that graph
    (its neighbours are not the cosine ones)."""
    from sklearn.neighbors import kneighbors_graph

    Z = np.ascontiguousarray(Z10, dtype=np.float32)
    iso = IsolationForestOutliers(random_state=0).fit(Z)
    q1, q3 = np.quantile(iso.forest_.score_samples(Z), [0.25, 0.75])
    assert iso.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))
    as_float = IsolationForestOutliers(max_samples=64.0, random_state=0).fit(Z)
    assert np.array_equal(as_float.scores_, IsolationForestOutliers(max_samples=64, random_state=0).fit(Z).scores_)
    graph = kneighbors_graph(Z, n_neighbors=30, mode="distance", include_self=True)
    for metric in ("euclidean", "cosine"):
        plain = LOFOutliers(n_neighbors=20, metric=metric).fit(Z)
        via = LOFOutliers(n_neighbors=20, metric=metric).fit(Z, neighbors_graph=graph)
        np.testing.assert_allclose(via.scores_, plain.scores_, rtol=1e-5, err_msg=metric)
        np.testing.assert_allclose(via.score_samples(Z[:20] + 0.01), plain.score_samples(Z[:20] + 0.01), rtol=1e-4,
                                   err_msg=metric)


def test_degenerate_settings_cluster_without_an_error(Z10):
    """k-means with one cluster (every item in it, membership 1) and HDBSCAN with min_samples
    above the number of items (capped to n - 1) answer instead of raising."""
    one = KMeansClusterer(n_clusters=1).fit(Z10)
    assert (one.labels_ == 0).all() and (one.probabilities_ == 1).all()
    assert (one.predict(Z10[:5]) == 0).all()
    few = np.ascontiguousarray(Z10[:40])
    h = HDBSCANClusterer(min_cluster_size=5, min_samples=1000).fit(few)
    assert len(h.labels_) == 40 and np.all((h.probabilities_ >= 0) & (h.probabilities_ <= 1))


def test_kmeans_membership_is_the_margin_between_the_two_nearest_centres():
    """``(d2 - d1) / (d2 + d1)``: 1 at a centre, 0 on the boundary, 0.5 at a quarter of the way."""
    from mediacluster.stages.cluster import _nearest_centre

    centres = np.array([[0.0, 0.0], [4.0, 0.0]], dtype=np.float32)
    lab, p = _nearest_centre(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.5, 0.0]], dtype=np.float32), centres)
    assert lab.tolist()[:2] == [0, 0] and lab[3] == 1
    np.testing.assert_allclose(p, [1.0, 0.5, 0.0, 0.75], atol=1e-6)


def test_isolation_forest_default_flags_outliers_not_a_share_of_every_cluster():
    """scikit-learn's contamination='auto' (a score below -0.5) flagged 40-48% of four
    well-separated blobs in the pipeline's reduced space, and 54% of Imagenette (whose flagged
    items were the typical ones), because clustered data puts the forest's median score near
    -0.5. The stage's default is now Tukey's fence on the forest's scores; 'auto' and a share
    stay as the user gives them."""
    from sklearn.datasets import make_blobs
    from sklearn.ensemble import IsolationForest

    X, _ = make_blobs(200, n_features=16, centers=4, cluster_std=1.0, center_box=(-20, 20), random_state=0)
    far = np.random.default_rng(0).uniform(-40, 40, size=(10, 16))
    for Z in (X, np.vstack([X, far])):
        Z = Z.astype(np.float32)
        iso = IsolationForestOutliers(random_state=0).fit(Z)
        assert iso.outlier_mask_[:200].mean() <= 0.02  # the blobs' own items
        assert np.array_equal(iso.predict(Z) == -1, iso.outlier_mask_)
        auto = IsolationForestOutliers(contamination="auto", random_state=0).fit(Z)
        assert np.array_equal(auto.outlier_mask_,
                              IsolationForest(contamination="auto", random_state=0).fit_predict(Z) == -1)
    assert iso.outlier_mask_[200:].all()  # the far points are the outliers
    assert IsolationForestOutliers(contamination=0.1, random_state=0).fit(Z).outlier_mask_.mean() == pytest.approx(0.1, abs=0.01)
    from mediacluster.pipeline import Pipeline

    pipe = Pipeline(outliers="isolation_forest", random_state=0).fit(X.astype(np.float32))
    assert (pipe.labels_ == -2).mean() <= 0.02


@pytest.mark.parametrize("clu,min_nmi", [
    (HDBSCANClusterer(min_cluster_size=15), 0.3),
    (HDBSCANClusterer(min_cluster_size=15, cluster_selection_method="leaf", backend="hdbscan", alpha=1.2), 0.3),
    (KMeansClusterer(n_clusters=3), 0.6),
    (AgglomerativeClusterer(n_clusters=3, linkage="ward"), 0.5),
    (AgglomerativeClusterer(n_clusters=3, linkage="average", metric="cosine", connectivity_neighbors=0), 0.0),
    (DBSCANClusterer(eps=3.0, min_samples=5), 0.0),
    (MeanShiftClusterer(quantile=0.3), 0.0),
])
def test_clusterers_labels_probabilities_predict(Z10, data, clu, min_nmi):
    _, y = data
    clu.fit(Z10)
    lab, p = clu.labels_, clu.probabilities_
    assert lab.dtype == np.int64 and len(lab) == len(Z10)
    assert set(np.unique(lab)) <= {-1} | set(range(len(Z10)))
    assert np.all((p >= 0) & (p <= 1))
    assert normalized_mutual_info_score(y, lab) >= min_nmi
    plab, pp = clu.predict(Z10), clu.predict_membership(Z10)
    assert (plab == lab).mean() >= 0.99
    assert np.all((pp >= 0) & (pp <= 1))


def test_hdbscan_backends_agree(Z10):
    a = HDBSCANClusterer(min_cluster_size=15, min_samples=5, backend="fast_hdbscan").fit(Z10).labels_
    b = HDBSCANClusterer(min_cluster_size=15, min_samples=5, backend="hdbscan").fit(Z10).labels_
    assert adjusted_rand_score(a, b) > 0.9
    with pytest.raises(ValueError, match="cluster_selection_method"):
        HDBSCANClusterer(cluster_selection_method="best").fit(Z10)


def test_hdbscan_above_30_dimensions_uses_the_exact_graph():
    """fast_hdbscan clusters data of more than 30 dimensions on a kNN graph; its own is an
    unseeded pynndescent graph (refits disagreed: noise 269 vs 408 of these 2,400 items). The
    stage hands it the exact graph instead: refits agree, also from threads at once, numpy's
    global RNG is not touched, and the answer matches the hdbscan library's."""
    from concurrent.futures import ThreadPoolExecutor

    from mediacluster.stages.cluster import KNN_GRAPH_ABOVE_DIMS, exact_knn_distances

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 40)) * 3
    Z = np.vstack([c + rng.normal(size=(400, 40)) * 2.5 for c in centres]).astype(np.float32)
    assert Z.shape[1] > KNN_GRAPH_ABOVE_DIMS
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    labels = [HDBSCANClusterer(min_cluster_size=50, backend="fast_hdbscan").fit(Z).labels_ for _ in range(2)]
    assert np.array_equal(np.random.get_state()[1], before)
    assert len(set(labels[0].tolist()) - {-1}) >= 2
    np.testing.assert_array_equal(labels[0], labels[1])
    with ThreadPoolExecutor(3) as ex:
        threaded = list(ex.map(lambda _: HDBSCANClusterer(min_cluster_size=50, backend="fast_hdbscan")
                               .fit(Z).labels_, range(3)))
    for other in threaded:
        np.testing.assert_array_equal(labels[0], other)
    ref = HDBSCANClusterer(min_cluster_size=50, backend="hdbscan").fit(Z).labels_
    assert adjusted_rand_score(labels[0], ref) > 0.9
    # the graph: k neighbours per row, the row itself excluded, exact euclidean distances
    G = exact_knn_distances(Z[:300], 7)
    assert G.shape == (300, 300) and np.all(np.diff(G.indptr) == 7) and G.diagonal().max() == 0
    d = np.linalg.norm(Z[:300, None] - Z[None, :300], axis=2)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(np.sort(G[0].data), np.sort(d[0])[:7], rtol=1e-4)


def test_knn_vote_self_match_and_share():
    ref = np.array([[0.0, 0], [0, 1], [5, 5], [5, 6]], dtype=np.float32)
    lab = np.array([0, 0, 1, 1])
    got, share, _ = knn_vote(ref, lab, ref, k=3)
    assert np.array_equal(got, lab) and np.all(share > 0.99)
    got, share, _ = knn_vote(ref, lab, np.array([[2.5, 2.8]], dtype=np.float32), k=4)
    assert 0.3 < share[0] < 0.8
