"""Small collections (fewer distinct items than two of the criterion graph's neighbour lists):
the automatic level gives the groups a person sees, and one kind stays one cluster
(stages.hierarchy.is_small / small_collection_cut; benchmarks/RESULTS.md, "Engine: small
collections")."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from mediacluster.pipeline import Pipeline
from mediacluster.stages.hierarchy import (
    HierarchyClusterer,
    is_small,
    reduce_and_cluster,
    weighted_silhouette,
)

CLASSES = ["n01440764", "n02102040", "n03028079", "n03888257"]  # tench, springer, church, parachute


@pytest.fixture(scope="module")
def photos(imagenette_dir, tmp_path_factory):
    """Default-encoder vectors of the 80 Imagenette photos (20 per class): ``(X, labels, paths)``."""
    from mediacluster.embed import embed_collection
    from mediacluster.ingest import collect

    coll = collect(imagenette_dir, labels_from_folders=True)
    emb = embed_collection(coll, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    X = np.asarray(emb.vectors, dtype=np.float32)
    labels = np.asarray([str(x) for x in emb.labels])
    root = Path(emb.root) if emb.root else Path(imagenette_dir)
    return X, labels, [str(root / p) for p in emb.paths]


def _rows(labels, per_class: dict) -> np.ndarray:
    return np.concatenate([np.flatnonzero(labels == c)[:m] for c, m in per_class.items()])


def check_nested(levels, parents):
    for lv in range(1, len(levels)):
        assert (parents[lv - 1][levels[lv]] == levels[lv - 1]).all()


def test_two_or_three_kinds_of_a_few_photos_are_found(photos):
    """6 + 6 photos of two kinds (all six pairs of four classes), 5 + 5 + 5 of three: the
    automatic level is the kinds. Before, fewer than ~16 distinct items were one cluster by
    construction (the 15-neighbour graph is complete, every split scores below 0)."""
    X, y, _ = photos
    draws = [dict.fromkeys(pair, 6) for pair in itertools.combinations(CLASSES, 2)]
    draws += [dict.fromkeys(t, 5) for t in itertools.combinations(CLASSES, 3)]
    ari = []
    for d in draws:
        rows = _rows(y, d)
        p = Pipeline(random_state=0).fit(X[rows])
        assert p.clusterer_.small_collection_
        assert len(set(p.labels_.tolist())) == len(d), (d, p.labels_.tolist())
        check_nested(p.clusterer_.levels_, p.clusterer_.parents_)
        ari.append(adjusted_rand_score(y[rows], p.labels_))
    assert np.mean(ari) > 0.9 and min(ari) > 0.6, ari


@pytest.mark.parametrize("m", [12, 20])
def test_one_kind_stays_one_cluster(photos, m):
    """m photos of one class: one cluster. Before, 20 of one class came out as 2-3 clusters
    (the modularity cut splits any kNN graph of 20 items in two or three)."""
    X, y, _ = photos
    for c in CLASSES:
        p = Pipeline(random_state=0).fit(X[_rows(y, {c: m})])
        assert p.clusterer_.small_collection_ and len(set(p.labels_.tolist())) == 1, (c, p.labels_.tolist())


def test_copies_stay_together_and_count_once(photos):
    """Every photo of a 6 + 6 draw twice: the copies share every level, the two kinds are
    found, through the pipeline (copies fitted once) and the engine (copies weighted)."""
    X, y, _ = photos
    rows = np.repeat(_rows(y, dict.fromkeys(CLASSES[1:3], 6)), 2)
    p = Pipeline(random_state=0).fit(X[rows])
    assert adjusted_rand_score(y[rows], p.labels_) == 1.0
    out = reduce_and_cluster(X[rows], random_state=0)
    h = out["clusterer"]
    assert h.small_collection_ and adjusted_rand_score(y[rows], h.labels_) == 1.0
    assert (h.levels_[:, 0::2] == h.levels_[:, 1::2]).all()


def test_a_folder_of_a_few_photos_through_cluster(photos, tmp_path):
    """``mediacluster cluster`` on a folder of 6 + 6 photos: two clusters at the automatic
    level, each one kind (before: one cluster)."""
    import shutil

    from mediacluster.cli import main
    from mediacluster.rundir import RunDir

    _, y, paths = photos
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = _rows(y, {CLASSES[0]: 6, CLASSES[2]: 6})
    for r in rows:
        shutil.copy(paths[r], folder / f"{y[r]}-{r}.jpg")
    out = tmp_path / "run"
    assert main(["cluster", str(folder), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", "--no-names", "--seed", "0"]) == 0
    run = RunDir.open(out)
    lv = run.info["summary"]["levels"]
    assert lv["n_clusters"][lv["auto_level"]] == 2 and lv["small_collection"]
    table = run.read_assignments()
    kind = table["path"].map(lambda s: s.rsplit("/", 1)[-1].split("-")[0])
    assert adjusted_rand_score(kind, table["cluster"]) == 1.0


def test_small_path_keeps_the_hierarchy_contract(rng, tmp_path):
    """Two separated blobs of 7 in 40-d: nested levels, the auto level is the blobs, training
    items predict their own path, the arrays round trip with the small-collection flag."""
    X = np.vstack([rng.normal(0, 1, (7, 40)) + 8 * np.eye(40)[0], rng.normal(0, 1, (7, 40)) - 8 * np.eye(40)[0]])
    X = X.astype(np.float32)
    h = HierarchyClusterer().fit(X, vectors=X)
    assert h.small_collection_
    check_nested(h.levels_, h.parents_)
    assert adjusted_rand_score(np.repeat([0, 1], 7), h.labels_) == 1.0
    assert (h.predict_path(X)[0] == h.levels_).all()
    h2 = HierarchyClusterer.from_arrays(h.to_arrays())
    assert h2.small_collection_ and h2.auto_level_ == h.auto_level_ and (h2.labels_ == h.labels_).all()
    # saved before the flag existed: read as the normal path
    arrays = dict(h.to_arrays(), meta=h.to_arrays()["meta"][:4])
    assert not HierarchyClusterer.from_arrays(arrays).small_collection_


def test_one_gaussian_blob_stays_one(rng):
    """A single Gaussian blob (anisotropic, as embeddings are) of 12-29 items: one cluster."""
    scale = 1.0 / np.sqrt(np.arange(1, 61))
    for n in (12, 20, 29):
        for seed in range(3):
            X = (np.random.default_rng(seed).normal(size=(n, 60)) * scale).astype(np.float32)
            h = HierarchyClusterer().fit(X, vectors=X)
            assert h.small_collection_ and h.n_clusters_per_level_[h.auto_level_] == 1, (n, seed)


def test_the_switch_follows_the_criterion_graph():
    """Small below two neighbour lists of the criterion graph (15 with the engine's default)."""
    assert is_small(29, 15) and not is_small(30, 15)
    h = HierarchyClusterer(graph_neighbors=4)
    assert h._graph_width(100, None) == 5
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    assert not HierarchyClusterer().fit(X, vectors=X).small_collection_


def test_weighted_silhouette_is_the_silhouette_of_the_copies(rng):
    from sklearn.metrics import silhouette_score

    P = rng.normal(size=(12, 4))
    lab = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3])
    w = np.array([1, 2, 1, 1, 3, 1, 1, 1, 1, 1, 2, 1])
    from scipy.spatial.distance import cdist

    D = cdist(P, P)
    assert weighted_silhouette(D, np.ones(12), lab) == pytest.approx(silhouette_score(P, lab))
    assert weighted_silhouette(D, w.astype(float), lab) == pytest.approx(
        silhouette_score(np.repeat(P, w, 0), np.repeat(lab, w)))


def test_equal_distances_keep_the_levels_nested():
    """Every pair at the same distance (the corners of a simplex; also one-feature input, as
    scikit-learn's checks give): equal merge heights must not put a child's split before its
    parent's (was 'split order breaks nesting')."""
    X = np.eye(12, dtype=np.float32)
    h = HierarchyClusterer().fit(X, vectors=X)
    check_nested(h.levels_, h.parents_)
    X1 = np.repeat(np.arange(10, dtype=np.float32), 2)[:, None] + 1.0
    h = HierarchyClusterer().fit(X1, vectors=X1)
    check_nested(h.levels_, h.parents_)


def test_a_folder_of_one_kind_says_why_it_is_one_cluster(photos, tmp_path, capsys):
    """12 photos of one class through ``cluster``: one cluster, and the run says why and where
    the finer levels are (before: one cluster, nothing said)."""
    import shutil

    from mediacluster.cli import main
    from mediacluster.cli.cluster import small_one
    from mediacluster.rundir import RunDir

    _, y, paths = photos
    folder = tmp_path / "photos"
    folder.mkdir()
    for r in _rows(y, {CLASSES[3]: 12}):
        shutil.copy(paths[r], folder / f"{r}.jpg")
    out = tmp_path / "run"
    assert main(["cluster", str(folder), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", "--no-names", "--seed", "0"]) == 0
    lv = RunDir.open(out).info["summary"]["levels"]
    assert lv["n_clusters"][lv["auto_level"]] == 1
    assert "note: the automatic level is one cluster: the collection is small" in capsys.readouterr().out
    assert small_one({**lv, "level": 1}) is None  # another level in use: nothing to explain
    assert small_one({**lv, "small_collection": False}) is None
