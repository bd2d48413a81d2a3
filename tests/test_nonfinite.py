"""Non-finite input is found by one helper (``data.nonfinite_rows`` / ``check_finite``) and
refused with one message at every entry point: the first bad row named, how many of how many
and the first few when there are more, the file first when there is one. Real files."""

from __future__ import annotations

import numpy as np
import pytest
from colour_encoders import UnitColour

from mediacluster.data import check_finite, nonfinite_message, nonfinite_rows
from mediacluster.errors import InputError


@pytest.fixture
def X():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6)).astype(np.float32)
    X[7, 2] = np.nan
    X[9, 0] = np.inf
    return X


def test_the_helper_names_the_first_row_and_counts_the_rest():
    A = np.zeros((10, 3))
    assert check_finite(A) is A and not len(nonfinite_rows(np.arange(6).reshape(3, 2)))
    A[[2, 4, 5, 6, 7, 8, 9], 1] = -np.inf
    assert nonfinite_rows(A).tolist() == [2, 4, 5, 6, 7, 8, 9]
    assert nonfinite_message(nonfinite_rows(A), 10, "f.npy") == (
        "f.npy: vector 2 contains NaN or infinity (rows [2, 4, 5, 6, 7] ...: 7 of 10)")
    assert nonfinite_message([1], 3, row="row {}", numbers=[10, 11, 12]) == "row 11 contains NaN or infinity"


def test_fit_fit_labels_predict_and_the_hierarchy_name_the_row(X):
    from mediacluster.pipeline import Pipeline
    from mediacluster.stages.hierarchy import HierarchyClusterer

    msg = r"^vector 7 contains NaN or infinity \(rows \[7, 9\]: 2 of 40\)$"
    with pytest.raises(InputError, match=msg):
        Pipeline(reducer="pca", outliers=None, clusterer="hierarchy").fit(X)
    with pytest.raises(InputError, match=msg):
        Pipeline(reducer="pca", outliers=None, clusterer="hierarchy").fit_labels(
            X, np.arange(40) % 3, X[:, :2])
    with pytest.raises(InputError, match=r"^row 7 contains NaN or infinity \(rows \[7, 9\]: 2 of 40\)$"):
        HierarchyClusterer().fit(X)
    good = np.nan_to_num(X, posinf=0.0)
    pipe = Pipeline(reducer="pca", outliers=None, clusterer="hierarchy").fit(good)
    with pytest.raises(InputError, match=r"^vector 1 contains NaN or infinity$"):
        pipe.predict(np.stack([good[0], X[7]]))


def test_files_name_the_file_and_the_row(tmp_path, X):
    from mediacluster.ingest.sources import collect
    from mediacluster.ingest.stream import open_vectors

    np.save(tmp_path / "v.npy", X)
    with pytest.raises(InputError, match=r"v\.npy: row 7 contains NaN or infinity \(rows \[7, 9\]: 2 of 40\)"):
        collect(tmp_path / "v.npy")
    # streamed a window at a time: the row numbers are the file's, not the window's
    src = open_vectors(tmp_path / "v.npy")
    assert src.read(0, 5).shape == (5, 6)
    with pytest.raises(InputError, match=r"v\.npy: row 9 contains NaN or infinity$"):
        src.read(8, 12)
    with pytest.raises(InputError, match=r"v\.npy: row 7 contains NaN or infinity \(rows \[7, 9\]: 2 of 3\)"):
        src.take([3, 7, 9])
    # a CSV with one numeric column per dimension: an empty cell is a missing value
    (tmp_path / "v.csv").write_text("id,a,b\nx,1,2\ny,,3\nz,4,5\n")
    with pytest.raises(InputError, match=r"v\.csv: row 1 has missing values, NaN or infinity$"):
        collect(tmp_path / "v.csv")


def test_finite_vectors_past_float32_squares_are_placed_or_refused_by_name(rng):
    """Finite float32 values whose squares overflow (above ~1e19) made ``l2_normalize`` give an
    all-zero row, and a projection overflow to NaN: every such vector got the same arbitrary
    cluster with HTTP 200 (found by fuzzing the service's vectors, tests/test_fuzz.py). Now a
    cosine model places a scaled vector as the vector itself, and a vector that still
    overflows in the model's space is refused naming it."""
    from mediacluster.data import l2_normalize
    from mediacluster.pipeline import Pipeline
    from mediacluster.predictor import NeighbourPredictor

    X = np.zeros((5, 64), np.float32)
    X[0, 0], X[1], X[3], X[4, 3] = 3e38, 3e38, 1e-45, 2.0
    X[2, :32], X[2, 32:] = -3e38, 3e38
    N = l2_normalize(X)
    assert N.dtype == np.float32 and np.allclose(np.linalg.norm(N.astype(np.float64), axis=1), 1, atol=1e-6)
    assert N[0, 0] == 1 and N[4, 3] == 1 and (l2_normalize(np.zeros((2, 3))) == 0).all()
    V = rng.normal(size=(120, 64)).astype(np.float32) + np.repeat(np.eye(3, 64, dtype=np.float32) * 6, 40, axis=0)
    lab = np.repeat(np.arange(3), 40)
    ones = np.ones(len(V))
    cos = NeighbourPredictor(metric="cosine", reference_dims=16).fit(
        V, labels=lab, probabilities=ones, cluster=lab, confidence=ones, embedding=V[:, :2])
    for scale in (np.float32(1e30), np.float32(1e-40)):
        same = cos.predict_details(V[:9]), cos.predict_details(V[:9] * scale)
        assert same[0]["labels"].tolist() == same[1]["labels"].tolist() == lab[:9].tolist()
        assert np.allclose(same[0]["novelty"], same[1]["novelty"])
    euclid = NeighbourPredictor(metric="euclidean", reference_dims=16).fit(
        V, labels=lab, probabilities=ones, cluster=lab, confidence=ones, embedding=V[:, :2])
    big = V[:3].copy()
    big[1] = 3e38
    with pytest.raises(InputError, match=r"^vector 1 has values too large to place \(up to 3e\+38"):
        euclid.predict_details(big)
    # a pipeline without UMAP compares directions (Pipeline.neighbour_metric): the vector is placed
    flat = Pipeline(reducer="pca", outliers=None, clusterer="kmeans", random_state=0).set_params(
        reducer__n_components=4, clusterer__n_clusters=3).fit(V)
    assert len(flat.predict_details(big)["labels"]) == 3


def test_fitting_on_values_whose_squares_overflow_names_the_row(rng):
    """A fit on vectors longer than float32's squares allow (values above ~1e19) is refused by
    ``data.check_magnitude`` naming the row, for every pipeline: scikit-learn's PCA stopped with
    a plain ValueError (the bug path, exit 1), a cosine neighbour graph zeroed the row."""
    from mediacluster.data import MAX_NORM, check_magnitude
    from mediacluster.pipeline import Pipeline

    V = rng.normal(size=(40, 8)).astype(np.float32)
    assert check_magnitude(V) is V
    V[[3, 11]] = 3e19
    msg = r"^vector 3 has values too large \(up to 3e\+19; .*rescale the vectors \(rows \[3, 11\]: 2 of 40\)$"
    with pytest.raises(InputError, match=msg):
        check_magnitude(V)
    for reducer in ("pca", "none"):
        with pytest.raises(InputError, match=msg):
            Pipeline(reducer=reducer, outliers=None, clusterer="kmeans").fit(V)
    # the hierarchy clusterers called on their own (coordinates a user computed) refuse them too
    from mediacluster.stages.evoc import EVoCClusterer
    from mediacluster.stages.hierarchy import HierarchyClusterer

    for est in (HierarchyClusterer(), EVoCClusterer()):
        with pytest.raises(InputError, match=r"^row 3 has values too large \(up to 3e\+19"):
            est.fit(V)
    V[[3, 11]] = MAX_NORM / 4 / np.sqrt(8)  # long, but its squares fit: accepted by the check
    assert check_magnitude(V) is V


def test_a_run_fitted_on_a_sample_names_the_input_file_not_its_own_copy(tmp_path, X, capsys):
    """``cluster --fit-sample`` copies a float32 ``.npy`` into the run being built and reads the
    copy back; a NaN row was then reported in ``.OUT.tmp-PID-ID/embeddings.npy``, a file the
    user never gave (and which is gone once the command has failed)."""
    from mediacluster.cli import main

    np.save(tmp_path / "v.npy", X)
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--fit-sample", "20",
                 "--quiet", "--no-names", "--no-csv"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'v.npy'}: row " in err and "contains NaN or infinity" in err and ".tmp-" not in err


def test_values_too_large_in_a_sampled_or_a_full_fit_name_the_files_rows(tmp_path, capsys):
    """``cluster --fit-sample``: rows too long for float32 distances were named by their place in
    the sample ("vector 4 ... 2 of 50"), rows the user's file holds fine values in."""
    from mediacluster.cli import main

    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    X[[5, 33]] = 3e19
    np.save(tmp_path / "v.npy", X)
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"), "--fit-sample", "39",
                 "--quiet", "--no-names", "--no-csv", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'v.npy'}: row 5 has values too large" in err and "rows [5, 33]" in err, err
    # the full fit names the file too (it named "vector 5" only)
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(tmp_path / "run"),
                 "--quiet", "--no-names", "--no-csv", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'v.npy'}: row 5 has values too large" in err and "rows [5, 33]: 2 of 40" in err, err


def test_a_run_folder_holding_a_nan_row_is_refused_naming_its_file_and_row(tmp_path, capsys):
    """A run folder's ``embeddings.npy`` with NaN / infinity (damaged, or written by hand): every
    reader of it (``evaluate``, ``tune``, ``report``, the studio) says the file and the row at
    once; before, ``evaluate`` crashed as an internal error and ``report`` / ``tune`` named a
    row but no file."""
    from mediacluster.cli import main
    from mediacluster.errors import RunDirError
    from mediacluster.rundir import RunDir

    rng = np.random.default_rng(1)
    V = np.concatenate([rng.normal(c, 0.3, size=(30, 6)) for c in range(3)]).astype(np.float32)
    np.save(tmp_path / "v.npy", V)
    run = tmp_path / "run"
    assert main(["cluster", str(tmp_path / "v.npy"), "--out", str(run), "--reducer", "pca", "--clusterer",
                 "kmeans", "--clusterer-param", "n_clusters=3", "--quiet", "--no-names"]) == 0
    a = np.load(run / "embeddings.npy")
    a[5, 3], a[9, 0] = np.nan, np.inf
    np.save(run / "embeddings.npy", a)
    capsys.readouterr()
    msg = rf"{run / 'embeddings.npy'}: row 5 contains NaN or infinity \(rows \[5, 9\]: 2 of 90\)"
    for reader in (lambda r: r.read_embeddings(), lambda r: r.read_embeddings(mmap=True), lambda r: r.read_vectors()):
        with pytest.raises(RunDirError, match=msg):
            reader(RunDir.open(run))
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and f"{run / 'embeddings.npy'}: row 5" in err, err


def test_an_encoder_giving_nan_or_a_cache_holding_it_skips_that_file_by_name(tmp_path):
    """A vector that is not finite never reaches the cache nor the fit: the encoder's output for
    one file (here a unit-length colour of a black image, 0 / 0) skips that file with the
    reason, the rest embedded; a cache already holding one (written before, or damaged) drops it
    and skips the file, the next run embeds it again. Before, the NaN row was stored in the
    cache and handed to the fit, which names a row number but no file."""
    from PIL import Image

    from mediacluster.embed.engine import NONFINITE, NONFINITE_CACHED, embed_collection_cached
    from mediacluster.embed.store import EmbeddingStore
    from mediacluster.encoders import register
    from mediacluster.ingest.sources import collect

    register("unit-colour", UnitColour)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, rgb in (("a_red.png", (255, 0, 0)), ("b_black.png", (0, 0, 0)), ("c_blue.png", (0, 0, 255))):
        Image.new("RGB", (8, 8), rgb).save(photos / name)
    cache = tmp_path / "cache"
    emb = embed_collection_cached(collect(photos), "unit-colour", cache_dir=cache, workers=1, progress=False)
    assert [p.rsplit("/", 1)[1] for p in emb.paths] == ["a_red.png", "c_blue.png"]
    assert np.isfinite(emb.vectors).all()
    assert [(s.path.rsplit("/", 1)[1], s.reason) for s in emb.skipped] == [("b_black.png", NONFINITE)]
    with EmbeddingStore(cache) as store:
        red = store.hash_files([str(photos / "a_red.png")])[0][0]
        assert store.missing([red], "unit-colour@1") == []
        store.put([red], "unit-colour@1", {"embedding": np.full((1, 3), np.nan, np.float32)})
    emb = embed_collection_cached(collect(photos), "unit-colour", cache_dir=cache, workers=1, progress=False)
    assert [p.rsplit("/", 1)[1] for p in emb.paths] == ["c_blue.png"]
    assert ("a_red.png", NONFINITE_CACHED) in [(s.path.rsplit("/", 1)[1], s.reason) for s in emb.skipped]
    emb = embed_collection_cached(collect(photos), "unit-colour", cache_dir=cache, workers=1, progress=False)
    assert [p.rsplit("/", 1)[1] for p in emb.paths] == ["a_red.png", "c_blue.png"]  # embedded again
