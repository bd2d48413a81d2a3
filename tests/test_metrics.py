"""mediacluster.metrics: hand-computed small cases, properties, and real embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacluster import metrics as M

# --------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------


def test_coverage_and_counts():
    lab = np.array([0, 0, 1, -1, -2, 3])
    assert M.coverage(lab) == pytest.approx(4 / 6)
    assert M.n_clusters(lab) == 3
    assert M.coverage([]) == 0.0
    assert M.coverage([-1, -1]) == 0.0


def test_hungarian_accuracy_hand_cases():
    # clusters 1->class 0 (2 items), 0->class 1 (2), 2->class 2 (1): 5 of 6
    assert M.hungarian_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 0, 2]) == pytest.approx(5 / 6)
    # more clusters than classes: the surplus cluster's item counts as wrong
    assert M.hungarian_accuracy(list("aaabbb"), [0, 0, 1, 2, 2, 2]) == pytest.approx(5 / 6)
    # fewer clusters than classes: one class stays unmatched
    assert M.hungarian_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1]) == pytest.approx(4 / 6)
    # string labels on both sides
    assert M.hungarian_accuracy(["cat", "cat", "dog"], ["x", "x", "y"]) == 1.0
    with pytest.raises(ValueError):
        M.hungarian_accuracy([0, 1], [0])


def test_silhouette_hand_case_and_noise_policy():
    # 1-d points 0,1 | 4,5: s = 1 - a/b with a=1, b=4.5 or 3.5 -> mean 1 - (1/9 + 1/7) = 47/63
    X = np.array([[0.0], [1.0], [4.0], [5.0], [100.0]])
    lab = np.array([0, 0, 1, 1, -1])
    r = M.silhouette(X, lab)
    assert r["value"] == pytest.approx(47 / 63)
    assert r["n_used"] == 4 and r["exclude_noise"] is True and r["sampled"] is False
    assert r["ci_low"] <= r["value"] <= r["ci_high"]
    # noise as its own (singleton) group: silhouette 0 for it, others unchanged (it is far)
    r2 = M.silhouette(X, lab, exclude_noise=False)
    assert r2["value"] == pytest.approx(4 * (47 / 63) / 5)
    assert r2["n_used"] == 5
    # -2 and -1 are merged into one group when noise is included
    r3 = M.silhouette(np.vstack([X, [[101.0]]]), np.append(lab, -2), exclude_noise=False)
    # the merged group {100, 101}: a=1, b=95.5 / 96.5 (to cluster 1); the others keep their b
    expected = (4 * 47 / 63 + (1 - 1 / 95.5) + (1 - 1 / 96.5)) / 6
    assert r3["value"] == pytest.approx(expected)
    assert r3["n_used"] == 6


def test_silhouette_undefined_cases():
    X = np.arange(10, dtype=float)[:, None]
    r = M.silhouette(X, np.zeros(10, dtype=int))  # single cluster
    assert r["value"] is None and "reason" in r
    r = M.silhouette(X, -np.ones(10, dtype=int))  # all noise
    assert r["value"] is None and r["n_eligible"] == 0
    r = M.silhouette(X, -np.ones(10, dtype=int), exclude_noise=False)
    assert r["value"] is None
    with pytest.raises(ValueError):
        M.silhouette(X, [0.5] * 10)  # not integer labels


def test_external_scores_hand_cases():
    # noise and outliers together form one group in "all": here that group is exactly class c
    r = M.external_scores(list("aabbcc"), [0, 0, 1, 1, -1, -2])
    assert r["all"]["nmi"] == pytest.approx(1.0) and r["all"]["acc"] == 1.0
    assert r["clustered"]["ari"] == pytest.approx(1.0) and r["clustered"]["n"] == 4
    assert r["coverage"] == pytest.approx(4 / 6) and r["n_clusters"] == 2 and r["n_classes"] == 3
    # mixed: all -> groups 0:{a,a}, 1:{b,c}, noise:{b,c}; ACC 4/6. clustered: [a,a,b,c] vs [0,0,1,1]
    r = M.external_scores(list("aabbcc"), [0, 0, 1, -1, 1, -2])
    assert r["all"]["acc"] == pytest.approx(4 / 6)
    assert r["clustered"]["acc"] == pytest.approx(3 / 4)
    # ARI hand value: [0,0,1,1] vs [0,1,0,1] -> (0 - 2/3) / (2 - 2/3) = -0.5
    r = M.external_scores([0, 0, 1, 1], [0, 1, 0, 1])
    assert r["all"]["ari"] == pytest.approx(-0.5)
    assert r["all"]["nmi"] == pytest.approx(0.0, abs=1e-12)


def test_external_scores_unlabelled_items_excluded():
    y = ["a", None, "b", float("nan"), "a", "b"]
    p = [0, 5, 1, 7, 0, 1]
    r = M.external_scores(y, p)
    assert r["n_labelled"] == 4 and r["n_unlabelled"] == 2
    assert r["all"]["nmi"] == pytest.approx(1.0) and r["all"]["n"] == 4
    assert r["n_clusters"] == 2  # clusters 5 and 7 hold only unlabelled items


def test_external_scores_edge_cases():
    y = list("aabbcc")
    single = M.external_scores(y, [0] * 6)
    assert single["all"]["nmi"] == pytest.approx(0.0) and single["all"]["ari"] == pytest.approx(0.0)
    assert single["all"]["acc"] == pytest.approx(2 / 6)
    noise = M.external_scores(y, [-1] * 6)
    assert noise["coverage"] == 0.0 and noise["n_clusters"] == 0
    assert noise["clustered"] == {"nmi": None, "ami": None, "ari": None, "acc": None, "n": 0}
    assert noise["all"]["nmi"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        M.external_scores(y, [0] * 5)


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------

labels_st = st.lists(st.integers(0, 4), min_size=2, max_size=40)


@settings(max_examples=60, deadline=None)
@given(labels_st, st.randoms(use_true_random=False))
def test_perfect_clustering_scores_one_and_renaming_invariance(y, rnd):
    y = np.array(y)
    ids = list(range(10, 10 + 5))
    rnd.shuffle(ids)
    pred = np.array([ids[v] for v in y])  # a renaming of the classes
    r = M.external_scores([f"class{v}" for v in y], pred)
    assert r["all"]["acc"] == 1.0 and r["clustered"]["acc"] == 1.0
    assert r["all"]["nmi"] == pytest.approx(1.0) and r["all"]["ari"] == pytest.approx(1.0)
    assert r["coverage"] == 1.0


@settings(max_examples=60, deadline=None)
@given(labels_st, st.lists(st.integers(-2, 5), min_size=40, max_size=40), st.randoms(use_true_random=False))
def test_external_invariant_to_item_order_and_cluster_ids(y, p, rnd):
    y = np.array(y)
    p = np.array(p[: len(y)])
    base = M.external_scores(y, p)
    perm = np.arange(len(y))
    rnd.shuffle(perm)
    shuffled = M.external_scores(y[perm], p[perm])
    ids = list(range(100, 106))
    rnd.shuffle(ids)
    renamed = M.external_scores(y, np.array([ids[v] if v >= 0 else v for v in p]))
    for other in (shuffled, renamed):
        for part in ("all", "clustered"):
            for key in ("nmi", "ami", "ari", "acc"):
                a, b = base[part][key], other[part][key]
                assert (a is None and b is None) or a == pytest.approx(b, abs=1e-9)
    for part in ("all", "clustered"):
        acc = base[part]["acc"]
        if acc is not None:
            assert 0.0 <= acc <= 1.0
    # ACC is at least the majority-class share inside the best-matched single cluster
    assert base["all"]["acc"] >= np.bincount(np.unique(y, return_inverse=True)[1]).max() / len(y) / 7


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=4, max_size=30))
def test_accuracy_of_single_cluster_is_majority_share(y):
    y = np.array(y)
    assert M.hungarian_accuracy(y, np.zeros(len(y), int)) == pytest.approx(np.bincount(y).max() / len(y))


def test_silhouette_matches_sklearn_and_sampling_is_seeded(rng):
    from sklearn.metrics import silhouette_score

    X = np.vstack([rng.normal(c, 1.0, (300, 5)) for c in (0, 4, 8)])
    lab = np.repeat([0, 1, 2], 300)
    full = M.silhouette(X, lab, sample_size=None)
    assert full["value"] == pytest.approx(silhouette_score(X, lab))
    s1 = M.silhouette(X, lab, sample_size=200, random_state=1)
    s2 = M.silhouette(X, lab, sample_size=200, random_state=1)
    s3 = M.silhouette(X, lab, sample_size=200, random_state=2)
    assert s1 == s2 and s1["sampled"] and s1["n_used"] == 200
    assert s1["value"] != s3["value"]
    # the sampled estimate's interval is wider and, here, covers the full value
    assert s1["ci_high"] - s1["ci_low"] > full["ci_high"] - full["ci_low"]
    assert s1["ci_low"] <= full["value"] <= s1["ci_high"]
    # over many seeds the sampled interval covers the full-data value most of the time (the
    # jackknife also drops reference points; a per-item bootstrap covered only ~78% here)
    hits = [M.silhouette(X, lab, sample_size=150, random_state=s) for s in range(40)]
    assert np.mean([h["ci_low"] <= full["value"] <= h["ci_high"] for h in hits]) >= 0.85
    assert M.silhouette(X, lab, sample_size=200, random_state=1, n_boot=0)["ci_low"] is None
    # permuting items does not change the unsampled value
    perm = rng.permutation(len(X))
    assert M.silhouette(X[perm], lab[perm], sample_size=None)["value"] == pytest.approx(full["value"])


def test_silhouette_of_float32_vectors_matches_sklearn_in_float64(rng, monkeypatch):
    """Encoder vectors are float32: their Euclidean silhouette takes the dot products in float32
    (scikit-learn up-casts them block by block, 3x the time at 10,000 x 1,280) and still gives
    scikit-learn's float64 value, interval and noise handling to far below the interval's width."""
    from sklearn.metrics import silhouette_score

    X = np.vstack([rng.normal(c, 1.0, (200, 256)) for c in (0.0, 0.15, 0.3)]) + 20.0  # far from 0
    lab = np.repeat([0, 1, 2], 200)
    lab[::37] = -1
    X32 = X.astype(np.float32)
    for exclude in (True, False):
        ours = M.silhouette(X32, lab, sample_size=None, exclude_noise=exclude)
        ref = M.silhouette(X32.astype(np.float64), lab, sample_size=None, exclude_noise=exclude)
        assert ours["value"] == pytest.approx(ref["value"], abs=1e-6)
        assert ours["se"] == pytest.approx(ref["se"], rel=1e-3)
    keep = lab >= 0
    whole = M.silhouette(X32, lab, sample_size=None)
    assert whole["value"] == pytest.approx(silhouette_score(X32.astype(np.float64)[keep], lab[keep]), abs=1e-6)
    # the distances by row blocks (their size bounds the memory): the same numbers to float32 precision
    monkeypatch.setattr(M, "DISTANCE_BLOCK", 7 * 29)
    assert M.silhouette(X32, lab, sample_size=None) == pytest.approx(whole, abs=1e-6)


def test_dbcv_matches_hdbscan_and_ranks_clusterings(rng):
    from hdbscan.validity import validity_index

    X = np.vstack([rng.normal(c, 0.5, (80, 2)) for c in ((0, 0), (6, 0), (0, 6))])
    lab = np.repeat([0, 1, 2], 80)
    ours = M.dbcv(X, lab, sample_size=None)
    assert ours == pytest.approx(validity_index(X, lab), abs=1e-9)  # scaling is harmless
    assert ours > 0.5
    # merging two true blobs, or splitting blobs at random, scores lower
    assert M.dbcv(X, np.where(lab == 2, 1, lab), sample_size=None) < ours
    assert M.dbcv(X, rng.integers(0, 3, len(X)), sample_size=None) < 0
    # noise counts in the denominator: dropping half a cluster to noise lowers the score
    noisy = lab.copy()
    noisy[:40] = -1
    assert M.dbcv(X, noisy, sample_size=None) < ours
    assert math.isnan(M.dbcv(X, np.zeros(len(X), int)))
    assert math.isnan(M.dbcv(X, -np.ones(len(X), int)))
    d = M.dbcv_details(X, lab, sample_size=100, random_state=0)
    assert d["sampled"] and d["n_used"] == 100 and d == M.dbcv_details(X, lab, sample_size=100)


def test_dbcv_keeps_a_cluster_of_exactly_min_points_and_drops_a_smaller_one(rng):
    """"Clusters with fewer than ``min_points`` items are treated as noise": one of exactly
    ``min_points`` is kept, one item fewer is not."""
    X = np.vstack([rng.normal(c, 0.3, (n, 2)) for c, n in (((0, 0), 30), ((5, 0), 30), ((0, 5), 4))])
    lab = np.repeat([0, 1, 2], [30, 30, 4])
    assert M.dbcv_details(X, lab, sample_size=None, min_points=4)["n_clusters_used"] == 3
    assert M.dbcv_details(X, lab, sample_size=None, min_points=5)["n_clusters_used"] == 2


def test_dbcv_high_dimension_falls_back_and_says_so(rng):
    X = np.vstack([rng.normal(c, 1.0, (60, 1280)) for c in (0, 3)])
    lab = np.repeat([0, 1], 60)
    d = M.dbcv_details(X, lab)
    assert d["value"] > 0.5  # concentrated distances: the core-distance formula still fits
    # near-duplicates (as real collections have) make (1/d)^1280 overflow float64
    Xd = np.vstack([X, X[:5] + rng.normal(0, 1e-3, (5, 1280))])
    d = M.dbcv_details(Xd, np.append(lab, [0] * 5))
    assert d["variant"] == "raw-distance"
    assert d["value"] > 0.5


def test_internal_scores_edge_cases():
    X = np.arange(20, dtype=float).reshape(10, 2)
    r = M.internal_scores(X, -np.ones(10, int))
    assert r["coverage"] == 0.0 and r["n_clusters"] == 0
    assert r["silhouette"]["value"] is None and r["dbcv"] is None
    assert r["calinski_harabasz"] is None and r["davies_bouldin"] is None
    r = M.internal_scores(X, np.zeros(10, int), space="original")
    assert r["n_clusters"] == 1 and r["space"] == "original" and r["calinski_harabasz"] is None
    import json

    json.dumps(r, allow_nan=False)  # JSON-safe even when undefined


# --------------------------------------------------------------------------------------------
# real embeddings (300 CIFAR-10 test images: airplane / frog / truck)
# --------------------------------------------------------------------------------------------


def test_scores_on_real_embeddings(cifar3_embeddings):
    from sklearn.cluster import KMeans

    X = cifar3_embeddings.vectors
    y = cifar3_embeddings.labels
    pred = KMeans(3, n_init=4, random_state=0).fit_predict(X)
    ext = M.external_scores(y, pred)
    assert ext["all"]["acc"] > 0.7 and ext["all"]["nmi"] > 0.4  # frogs are easy to separate
    assert ext["n_classes"] == 3 and ext["coverage"] == 1.0
    rnd = np.random.default_rng(0).integers(0, 3, len(X))
    assert M.external_scores(y, rnd)["all"]["nmi"] < 0.05
    good = M.internal_scores(X, pred, space="original")
    bad = M.internal_scores(X, rnd, space="original")
    assert good["silhouette"]["value"] > bad["silhouette"]["value"]
    assert good["calinski_harabasz"] > bad["calinski_harabasz"]
    assert good["davies_bouldin"] < bad["davies_bouldin"]
    assert good["dbcv"] > bad["dbcv"]


def test_silhouette_with_thousands_of_clusters_is_scikit_learns_with_a_whole_jackknife(rng):
    """Very many clusters (a run cut at its finest level): the value is scikit-learn's and the
    interval the delete-a-group jackknife over all ``n_groups`` groups it names, each replicate
    scikit-learn's silhouette of the items left (the sums once held an items x clusters matrix
    per group, so the groups were cut to 10 here, and to 2 at 10,000 items in 5,000 clusters)."""
    from scipy.stats import norm
    from sklearn.metrics import silhouette_samples, silhouette_score

    m, k = 3000, 1500
    X = rng.normal(size=(m, 16)).astype(np.float32)
    lab = np.concatenate([np.arange(k), rng.integers(0, k, m - k)])
    r = M.silhouette(X, lab, sample_size=None, random_state=3)
    X64 = X.astype(np.float64)
    assert r["value"] == pytest.approx(silhouette_score(X64, lab), abs=1e-6)
    reps = []
    for g in np.array_split(np.random.default_rng(3).permutation(m), 20):
        keep = np.ones(m, bool)
        keep[g] = False
        reps.append(silhouette_samples(X64[keep], lab[keep]).mean())
    reps = np.asarray(reps)
    se = np.sqrt(19 / 20 * np.sum((reps - reps.mean()) ** 2))
    assert r["se"] == pytest.approx(se, rel=1e-4)
    assert r["ci_high"] - r["value"] == pytest.approx(norm.ppf(0.975) * se, rel=1e-4)
    assert "20 groups" in r["ci_method"]
