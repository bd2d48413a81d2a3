"""Near-duplicates among vectors the package did not make (``cluster --dedup`` on a ``.npy``):
the vectors-only rule is an absolute cosine (``semantic_only_threshold``, 0.97, measured on the
default encoder) and the collection's own scale (``semantic_only_relative``: 1 - cosine at most
0.2 x the median distance to each item's ``n_neighbors``-th nearest). Another encoder's vectors
(a non-zero mean: every cosine inflated) or tight clusters put whole collections above 0.97;
only the planted copies are duplicates there (benchmarks/RESULTS.md, "Duplicates on vectors
from another encoder")."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from mediacluster.cli import main
from mediacluster.duplicates.collection import find_in_rows, summary
from mediacluster.duplicates.finder import DuplicateFinder
from mediacluster.duplicates.index import DuplicateIndex
from mediacluster.errors import ParameterError


def with_copies(X: np.ndarray, n: int, cos: float, seed: int = 0) -> tuple[np.ndarray, set]:
    """X with ``n`` copies of random rows appended, each at cosine ``cos`` to its source; the
    (source, copy) pairs."""
    rng = np.random.default_rng(seed)
    src = rng.choice(len(X), n, replace=False)
    Y = X[src].astype(np.float64)
    norm = np.linalg.norm(Y, axis=1, keepdims=True)
    e = rng.standard_normal(Y.shape)
    e -= (e * Y).sum(1, keepdims=True) / norm ** 2 * Y
    e *= norm / np.linalg.norm(e, axis=1, keepdims=True)
    t = np.arccos(cos)
    Y = np.cos(t) * Y + np.sin(t) * e
    return np.vstack([X, Y]).astype(np.float32), {(int(s), len(X) + k) for k, s in enumerate(src)}


def pairs(finder) -> set:
    out = set()
    for g in finder.groups():
        m = sorted(g["members"])
        out |= {(a, b) for x, a in enumerate(m) for b in m[x + 1:]}
    return out


def fit(X, **params):
    return find_in_rows(X, [str(k) for k in range(len(X))], media="vector", params=params, progress=False)


def test_tight_clusters_are_not_duplicates_but_their_copies_are():
    X, _ = make_blobs(90, n_features=16, centers=3, random_state=0)  # the bug hunt's case
    assert fit(X.astype(np.float32), semantic_only_relative=None).labels_.max() >= 0  # the absolute rule alone
    f = fit(X.astype(np.float32))
    assert f.n_groups_ == 0, f"{int((f.labels_ >= 0).sum())} of 90 blob vectors grouped as near-duplicates"
    Xc, truth = with_copies(X, 10, 0.999)
    assert pairs(fit(Xc)) == truth


def test_another_encoders_vectors_inflated_by_a_mean_keep_only_the_copies():
    rng = np.random.default_rng(1)
    C = rng.normal(size=(20, 64)) * 2.0
    X = (C[rng.integers(0, 20, 600)] + rng.normal(size=(600, 64))).astype(np.float32)
    X, truth = with_copies(X, 15, 0.99)
    as_is = fit(X)
    assert pairs(as_is) == truth and as_is.semantic_only_cutoff_ == pytest.approx(0.97)  # as before here
    # the same collection through a rotation plus an offset: unrelated items at cosine ~0.9
    R, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    u = rng.normal(size=64)
    Z = (X @ R + 3.0 * np.linalg.norm(X, axis=1).mean() * u / np.linalg.norm(u)).astype(np.float32)
    Zu = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    assert np.median(Zu[:300] @ Zu[300:600].T) > 0.85
    assert len(pairs(fit(Z, semantic_only_relative=None))) > 10 * len(truth)  # the absolute rule alone
    f = fit(Z)
    assert pairs(f) == truth
    s = summary(f)
    assert s["semantic_only_cutoff"] > 0.97 and 0 < s["neighbour_distance"] < 0.15
    # the saved index judges a new vector by the cutoff the fit used
    index = DuplicateIndex.from_finder(f)
    assert index.params["semantic_only_threshold"] == pytest.approx(f.semantic_only_cutoff_)
    a, b = next(iter(truth))
    assert index.query(vector=Z[b], exclude=b).index == a
    planted = {k for pair in truth for k in pair}
    row = next(k for k in range(len(Z)) if k not in planted)
    assert np.sort(Zu @ Zu[row])[-2] > 0.97  # its nearest other item: above the absolute threshold
    assert index.query(vector=Z[row], exclude=row) is None  # an ordinary neighbour, no duplicate


def test_a_collection_of_identical_vectors_is_one_group():
    f = fit(np.ones((6, 8), np.float32))
    assert f.n_groups_ == 1 and (f.labels_ == 0).all()


@pytest.mark.parametrize("value", [0, 1.5, -0.1, "none", float("nan")])
def test_semantic_only_relative_out_of_range_is_refused_by_name(value):
    with pytest.raises(ParameterError, match="semantic_only_relative"):
        DuplicateFinder(semantic_only_relative=value).fit(vectors=np.eye(4, dtype=np.float32))


def test_cluster_dedup_on_blob_vectors_fits_every_item(tmp_path):
    X, _ = make_blobs(90, n_features=16, centers=3, random_state=0)
    np.save(tmp_path / "blobs.npy", X.astype(np.float32))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in ("cluster", tmp_path / "blobs.npy", "--out", tmp_path / "run", "--dedup",
                                      "--no-names", "--reducer", "pca", "--reducer-param", "n_components=4",
                                      "--clusterer", "kmeans", "--clusterer-param", "n_clusters=3", "--quiet")])
    assert code == 0, err.getvalue()
    dups = json.loads((tmp_path / "run" / "run.json").read_text())["duplicates"]
    assert dups["groups"] == 0 and dups["items_in_groups"] == 0, dups
    said = out.getvalue()  # what a duplicate was, said: the cutoff the vectors needed
    assert f"duplicates by their vectors alone: cosine >= {dups['semantic_only_cutoff']:.4f}" in said, said
    assert dups["semantic_only_cutoff"] > 0.99 and "semantic_only_relative=null" in said


@pytest.mark.parametrize("method", ["flat", "ivf"])
def test_the_search_reports_each_rows_kth_neighbour_cosine(method):
    from mediacluster.duplicates.search import cosine_pairs

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 16)).astype(np.float32)
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    C = U @ U.T
    np.fill_diagonal(C, -np.inf)
    want = np.sort(C, axis=1)[:, -5]  # the 5th nearest other row
    kth = np.full(len(X), np.nan)
    cosine_pairs(X, 0.99, k=5, method=method, kth=kth)
    assert np.isfinite(kth).all()
    if method == "flat":
        np.testing.assert_allclose(kth, want, atol=1e-5)
    else:  # approximate: never nearer than the true k-th, mostly equal
        assert (kth <= want + 1e-5).all() and np.mean(np.abs(kth - want) < 1e-5) > 0.5
