"""Save / load: identical predictions, no pickle ever, clear refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mediacluster
from mediacluster._version import MODEL_FORMAT_VERSION
from mediacluster.errors import ModelFormatError
from mediacluster.pipeline import Pipeline
from mediacluster.stages import build as make_stage

pytestmark = pytest.mark.usefixtures("one_blas_thread")


@pytest.fixture(scope="module")
def X(cifar3_embeddings):
    return np.asarray(cifar3_embeddings.vectors, dtype=np.float32)


@pytest.fixture(scope="module")
def fitted(X):
    return Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 10}),
                    outliers=make_stage("outliers", "lof", {"contamination": 0.03}),
                    clusterer=make_stage("clusterer", "hdbscan", {"min_cluster_size": 15})).fit(X)


def test_round_trip_identical_predictions(fitted, X, tmp_path):
    info = fitted.save(tmp_path / "m", metadata={"encoder": "efficientnet-lite0"})
    assert info["bytes"] > 0 and set(info["files"]) == {"model.json", "arrays.npz"}
    loaded = mediacluster.load(tmp_path / "m")
    a, b = fitted.predict_details(X), loaded.predict_details(X)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    for attr in ("labels_", "cluster_", "confidence_", "probabilities_", "embedding_"):
        assert np.array_equal(getattr(fitted, attr), getattr(loaded, attr))
    assert np.array_equal(fitted.status_, loaded.status_)
    assert loaded.n_clusters_ == fitted.n_clusters_
    assert loaded.model_info_["metadata"]["encoder"] == "efficientnet-lite0"
    assert loaded.clusterer.get_params() == fitted.clusterer_.get_params()


def test_arrays_load_without_pickle(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


@pytest.mark.parametrize("name", ["model.pkl", "sub/umap.joblib", "x.pickle"])
def test_pickle_in_directory_is_refused(fitted, tmp_path, name):
    import pickle

    fitted.save(tmp_path / "m")
    p = tmp_path / "m" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFormatError, match="pickle"):
        mediacluster.load(tmp_path / "m")


def test_wrong_version_is_refused(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    meta = tmp_path / "m" / "model.json"
    info = json.loads(meta.read_text())
    info["format_version"] = MODEL_FORMAT_VERSION + 1
    meta.write_text(json.dumps(info))
    with pytest.raises(ModelFormatError, match=f"format version {MODEL_FORMAT_VERSION + 1}.*reads format"):
        mediacluster.load(tmp_path / "m")


def test_object_arrays_and_foreign_classes_are_refused(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    np.savez(tmp_path / "m" / "arrays.npz", labels=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ModelFormatError, match="pickle"):
        mediacluster.load(tmp_path / "m")
    fitted.save(tmp_path / "m2")
    meta = tmp_path / "m2" / "model.json"
    info = json.loads(meta.read_text())
    info["stages"]["clusterer"] = {"class": "os.system", "params": {}}
    meta.write_text(json.dumps(info))
    with pytest.raises(ModelFormatError, match="unknown clusterer class"):
        mediacluster.load(tmp_path / "m2")


def test_not_a_model(tmp_path):
    with pytest.raises(ModelFormatError, match="holds no model"):
        mediacluster.load(tmp_path)


def test_subsampled_reference_is_smaller(fitted, X, tmp_path):
    small = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 10}),
                     clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3}),
                     reference_size=50, reference_dims=32).fit(X)
    full = fitted.save(tmp_path / "full")["bytes"]
    part = small.save(tmp_path / "small")["bytes"]
    assert part < full
    loaded = mediacluster.load(tmp_path / "small")
    assert np.array_equal(loaded.predict(X), small.predict(X))


def test_a_version_killed_while_written_is_cleaned_by_the_next_publish(tmp_path):
    """kill -9 while a version is being written leaves its ``.tmp-PID-*`` folder in the store;
    the next publish removes it (its writer is gone) rather than keeping a model-sized folder
    for ever, and leaves a living writer's alone."""
    import signal
    import subprocess
    import sys

    from mediacluster.persist import ModelStore

    store = tmp_path / "models"
    code = ("import sys, time\nfrom mediacluster.persist import ModelStore\n"
            "def write(f):\n    f.mkdir()\n    (f / 'arrays.npz').write_bytes(b'x' * 1000)\n"
            "    print('writing', flush=True)\n    time.sleep(60)\n"
            f"ModelStore({str(store)!r}).publish(write)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert [q.name for q in store.glob(".tmp-*")]  # what the killed writer left
    living = store / f".tmp-{os.getpid()}-1"  # a writer still at work (this process)
    living.mkdir()
    ModelStore(store).publish(lambda f: (f.mkdir(), (f / "model.json").write_text("{}")))
    assert sorted(q.name for q in store.iterdir()) == sorted([living.name, "LATEST", "v0001"])


def test_a_version_whose_writer_raises_leaves_nothing_in_the_store(tmp_path):
    from mediacluster.errors import InputError
    from mediacluster.persist import ModelStore

    def write(f):
        f.mkdir()
        (f / "arrays.npz").write_bytes(b"x")
        raise InputError("items.json: bad row")

    with pytest.raises(InputError):
        ModelStore(tmp_path).publish(write)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("latest", ['"v0001"', '["v0001"]', '{"version": null}', '{"version": 1}', "null"])
def test_a_latest_file_of_another_form_is_read_as_none_not_a_crash(tmp_path, latest, capsys):
    """A hand-edited or foreign ``LATEST`` that is JSON but not the pointer object (a bare
    version string, a list, a version that is not text) was an internal error in
    `mediacluster models`, `assign` and a service's start; it reads as a missing ``LATEST``
    does (invalid JSON already did): the newest version."""
    from mediacluster.cli import main
    from mediacluster.persist import ModelStore, resolve_model

    store = ModelStore(tmp_path / "models")
    for _ in range(2):
        store.publish(lambda f: (f.mkdir(), (f / "model.json").write_text("{}")))
    (store.root / "LATEST").write_text(latest)
    assert store.pointer() is None
    assert store.latest() == store.root / "v0002" and resolve_model(tmp_path) == store.root / "v0002"
    assert main(["models", str(tmp_path)]) == 0
    assert "* v0002" in capsys.readouterr().out


def test_versions_past_v9999_keep_their_order(tmp_path):
    """Version names are v%04d: v10000 sorted before v9999 as text, so after the 10,000th publish
    the store's newest (``latest`` without LATEST, `models`' order, the next number) was v9999."""
    from mediacluster.persist import ModelStore

    store = ModelStore(tmp_path)
    for v in ("v0002", "v9999", "v10000"):
        (tmp_path / v).mkdir()
        (tmp_path / v / "model.json").write_text("{}")
    assert store.versions() == ["v0002", "v9999", "v10000"]
    assert store.latest() == tmp_path / "v10000"
    assert store.publish(lambda f: (f.mkdir(), (f / "model.json").write_text("{}"))).name == "v10001"


def _write_version(folder):
    folder.mkdir()
    (folder / "model.json").write_text("{}")


def test_hold_does_not_undo_a_publish_made_while_it_reads_latest(tmp_path, monkeypatch):
    """``hold`` read ``LATEST`` and wrote it back marked held: a publish (or ``use``) in between
    was undone, ``LATEST`` pointing at the older version again, held. Both now write ``LATEST``
    under one lock (a ``flock`` on the store's folder), so the publish lands after the hold and releases
    it. The window is widened by letting the hold's read wait (up to 1 s) for the other
    thread's publish."""
    import threading

    from mediacluster.persist import ModelStore

    store = ModelStore(tmp_path)
    store.publish(_write_version)
    read, published = threading.Event(), threading.Event()
    real = ModelStore.pointer

    def slow_read(self):
        ptr = real(self)
        if threading.current_thread().name == "holder":
            read.set()
            published.wait(1.0)  # before: the publish lands here; now: it waits for the lock
        return ptr

    monkeypatch.setattr(ModelStore, "pointer", slow_read)
    holder = threading.Thread(target=lambda: ModelStore(tmp_path).hold(), name="holder")
    holder.start()
    assert read.wait(10)
    ModelStore(tmp_path).publish(_write_version)
    published.set()
    holder.join(10)
    assert real(store)["version"] == "v0002" and not real(store).get("held")


def test_a_watching_holder_reads_held_and_the_version_from_one_latest(tmp_path, monkeypatch):
    """The service's reload checked ``LATEST``'s ``held`` and then read ``LATEST`` again for the
    version: a held version published between the two reads (a bare fit before its carried
    curation, ``cluster --carry-from --save-model``; a run swapped in) was served. Now both
    come from one read of ``LATEST``."""
    from mediacluster.persist import ModelStore
    from mediacluster.serve import ModelHolder

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 4}), outliers=None,
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3})).fit(X)
    pipe.publish(tmp_path)
    h = ModelHolder(tmp_path, poll_s=3600)
    try:
        real = ModelStore.pointer
        calls = []

        def publish_held_after_first_read(self):
            ptr = real(self)
            calls.append(ptr)
            if len(calls) == 1:  # the reload's first read: another process publishes held now
                pipe.publish(tmp_path, held=True)
            return ptr

        monkeypatch.setattr(ModelStore, "pointer", publish_held_after_first_read)
        res = h.reload()
        assert res["switched"] is False and h.current.version == "v0001", res
        monkeypatch.setattr(ModelStore, "pointer", real)
        assert h.reload()["switched"] is False  # held: still not served
        ModelStore(tmp_path).use("v0002")  # released
        assert h.reload()["switched"] is True and h.current.version == "v0002"
    finally:
        h.stop()


def test_a_damaged_version_is_listed_and_refused_by_models_not_a_crash(fitted, tmp_path, capsys):
    """A version whose model.json is cut short (a copy of the store interrupted) or whose
    ``metadata`` is not a mapping: `mediacluster models` was an internal error listing the store
    and `--use` on it too; it lists such a version with "?" and refuses to point LATEST at one
    (a watching service would then fail to load it)."""
    from mediacluster.cli import main
    from mediacluster.persist import ModelStore, model_id

    store = ModelStore(tmp_path / "models")
    for _ in range(3):
        fitted.publish(store.root, run_id="r1")
    (store.root / "v0001" / "model.json").write_text('{"format": "mediacluster-model", "metad')
    doc = json.loads((store.root / "v0002" / "model.json").read_text())
    (store.root / "v0002" / "model.json").write_text(json.dumps({**doc, "metadata": "x"}))
    assert model_id(store.root / "v0002") == "v0002"
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "v0001" in out and "v0002" in out and "* v0003" in out, out
    assert main(["models", str(tmp_path), "--use", "v0001"]) == 2
    assert "v0001/model.json is not valid JSON" in capsys.readouterr().err
    assert store.pointer()["version"] == "v0003"  # LATEST left as it was
    assert main(["models", str(tmp_path), "--use", "v0002"]) == 2  # its format is a model's, but it does not load
    assert "version v0002 does not load, so LATEST stays at v0003" in capsys.readouterr().err
    assert store.pointer()["version"] == "v0003"



def test_models_says_which_versions_are_cut_short_and_a_latest_naming_none(fitted, tmp_path, capsys):
    """`mediacluster models` listed a version whose arrays.npz or model.json was cut short (a
    copy of the store interrupted, a full disk) like any other (or with "?"), so a person
    learned it only from `--use` or a service refusing it; and a LATEST naming a version that is
    not there (deleted since, hand-edited) was passed over in silence, the newest marked '*'."""
    from mediacluster.cli import main
    from mediacluster.persist import ModelStore

    store = ModelStore(tmp_path / "models")
    for _ in range(3):
        fitted.publish(store.root, run_id="r1")
    npz = store.root / "v0001" / "arrays.npz"
    with open(npz, "r+b") as f:
        f.truncate(npz.stat().st_size // 2)
    mj = store.root / "v0002" / "model.json"
    mj.write_text(mj.read_text()[:40])
    capsys.readouterr()
    assert main(["models", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"DAMAGED, does not load: {npz} cannot be read" in out[0], out
    assert f"DAMAGED, does not load: {mj} is not valid JSON" in out[1], out
    assert out[2].startswith("* v0003") and "DAMAGED" not in out[2], out
    (store.root / "LATEST").write_text('{"version": "v0009"}')
    assert main(["models", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "LATEST names 'v0009', which is not here" in err and "newest version, v0003" in err, err

def test_a_model_saved_over_another_keeps_none_of_the_others_items_or_duplicate_index(tmp_path):
    """``save(path, overwrite=True)`` of a model fitted on bare vectors over one saved with item ids
    (and a ``--dedup`` duplicate index): the old ``items.json`` stayed, so ``similar`` named the new
    model's neighbours with the old model's ids ('cat0' for a row of other data), and the old
    duplicate index answered "near-duplicate of" items of another collection. A model saved again
    in place keeps its own."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(2, 60, 8)).astype(np.float32)

    def fit(v):
        return Pipeline(outliers=None, random_state=0).with_params(
            {"reducer": "pca", "reducer__n_components": 4, "clusterer": "kmeans", "clusterer__n_clusters": 3}).fit(v)

    m = tmp_path / "m"
    fit(X).save(m, items={"ids": [f"cat{i}" for i in range(60)]})
    (m / "duplicates").mkdir()
    (m / "duplicates" / "index.json").write_text("{}")
    Pipeline.load(m).save(m, overwrite=True)  # in place: its own items and index stay
    assert (m / "duplicates").is_dir() and Pipeline.load(m).similar(X[:1], k=1)["ids"] == [["cat0"]]
    fit(Y).save(m, overwrite=True)
    assert sorted(p.name for p in m.iterdir()) == ["arrays.npz", "model.json"]
    assert Pipeline.load(m).similar(Y[:1], k=3)["ids"] is None  # rows only, as for any bare-vector model


def test_a_version_is_found_by_the_number_a_person_types(tmp_path):
    """``models --use v2`` said "no model version 'v2'" in a store holding v0002: the number
    forms a person types (``v2``, ``2``, ``V02``, ``RUN_ID/2``) name the version; a number two
    hand-made folders share (``v2`` beside ``v0002``) is refused as ambiguous, naming both."""
    from mediacluster.persist import ModelStore

    store = ModelStore(tmp_path)
    for _ in range(3):
        store.publish(_write_version)
    for typed in ("v2", "2", "V02", "0002", " v2", "/v2"):
        assert store.find(typed) == "v0002", typed
    with pytest.raises(ModelFormatError, match=r"no model version 'v4' \(versions: v0001, v0002, v0003\)"):
        store.find("v4")
    with pytest.raises(ModelFormatError, match="no model version 'vx'"):
        store.find("vx")
    _write_version(tmp_path / "v2")
    with pytest.raises(ModelFormatError, match=r"'2' is ambiguous: it may be v0002, v2"):
        store.find("2")
    assert store.find("v2") == "v2" and store.find("v0002") == "v0002"  # exact names still do


@pytest.mark.parametrize("damage", ["no arrays", "cut short", "an array missing", "stages edited"])
def test_a_version_that_does_not_load_is_refused_before_latest_moves(tmp_path, damage, capsys):
    """``models --use`` checked a version's folder (model.json's format), not that it loads: a
    version whose arrays.npz is gone, cut short or lacks an array (or whose model.json was edited)
    became LATEST, and the service watching the store failed on it. It is now loaded first
    (``Pipeline.load``, as the service loads it) and refused by name, LATEST left as it was; a
    cut-short arrays.npz was an internal error (BadZipFile) in every reader."""
    from mediacluster.cli import main
    from mediacluster.persist import ModelStore

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 4}), outliers=None,
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3})).fit(X)
    store = ModelStore(tmp_path / "models")
    for _ in range(2):
        pipe.publish(store.root, run_id="r1")
    v1 = store.root / "v0001"
    if damage == "no arrays":
        (v1 / "arrays.npz").unlink()
    elif damage == "cut short":
        (v1 / "arrays.npz").write_bytes((v1 / "arrays.npz").read_bytes()[:100])
    elif damage == "an array missing":
        with np.load(v1 / "arrays.npz") as z:
            np.savez(v1 / "arrays.npz", **{k: z[k] for k in z.files if k != "probabilities"})
    else:
        doc = json.loads((v1 / "model.json").read_text())
        (v1 / "model.json").write_text(json.dumps({**doc, "stages": "x"}))
    assert main(["models", str(tmp_path), "--use", "v1"]) == 2
    err = capsys.readouterr().err
    assert "version v0001 does not load, so LATEST stays at v0002" in err and "internal error" not in err, err
    assert store.pointer()["version"] == "v0002"
    if damage in ("no arrays", "cut short"):  # the store's own check reads the arrays (which ones: the pipeline's)
        with pytest.raises(ModelFormatError, match="v0001 does not load"):
            store.use("v0001")
    assert store.use("v0001", load=None)["version"] == "v0001"  # its format alone: as before


def test_a_latest_version_whose_model_json_is_gone_is_refused_out_loud(tmp_path):
    """``LATEST`` names a version whose ``model.json`` cannot be read (deleted, a half-copied
    folder): the service's reload says it cannot switch (``ModelFormatError``, kept in
    ``last_error`` for /v1/health) and keeps serving the version it has; it is not taken for the
    version already served."""
    from mediacluster.serve import ModelHolder

    X = np.random.default_rng(0).standard_normal((60, 8)).astype(np.float32)
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 4}), outliers=None,
                    clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3})).fit(X)
    pipe.publish(tmp_path)
    h = ModelHolder(tmp_path, poll_s=3600)
    try:
        pipe.publish(tmp_path)
        (tmp_path / "v0002" / "model.json").unlink()
        with pytest.raises(ModelFormatError, match="cannot switch to .*v0002"):
            h.reload()
        assert h.current.version == "v0001" and "v0002" in h.last_error
    finally:
        h.stop()
