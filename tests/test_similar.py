""""More like this": ``Pipeline.similar``, the model's item ids (``items.json``), ``POST
/v1/similar`` over real loopback HTTP (a `mediacluster serve` process) and ``assign --similar``,
on a run of 300 real CIFAR-10 images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_serve import Server, upload

from mediacluster.errors import ParameterError
from mediacluster.pipeline import Pipeline
from mediacluster.stages import build as make_stage

pytestmark = pytest.mark.usefixtures("one_blas_thread")  # small matrices: see conftest


@pytest.fixture(scope="module")
def run_dir(cifar3_embeddings, tmp_path_factory) -> Path:
    """A run with a saved model with levels, as `cluster --save-model` writes it."""
    from mediacluster.workflow import publish_run

    out = tmp_path_factory.mktemp("similar") / "run"
    pipe = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 8}), clusterer="hierarchy",
                    reference_dims=64).fit(cifar3_embeddings.vectors)
    publish_run(out, cifar3_embeddings, pipe, save_model=True)
    return out


@pytest.fixture(scope="module")
def model(run_dir) -> Pipeline:
    return Pipeline.load(run_dir / "models" / "v0001")


@pytest.fixture(scope="module")
def old_model(run_dir, tmp_path_factory) -> Path:
    """The same model as one saved before ids and how sure names are were kept: no items.json,
    no ``names_support`` in model.json."""
    old = tmp_path_factory.mktemp("old") / "model"
    shutil.copytree(run_dir / "models" / "v0001", old)
    (old / "items.json").unlink()
    doc = json.loads((old / "model.json").read_text())
    for key in ("names_support", "names_support_by_level"):
        doc["metadata"].pop(key, None)
    doc.pop("items_saved", None)
    (old / "model.json").write_text(json.dumps(doc))
    return old


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    s = Server(str(run_dir), "--max-vectors", "100", log=tmp_path_factory.mktemp("similar-log") / "server.log")
    yield s
    s.stop()


def test_own_vector_first_with_its_id_and_path(model, cifar3_embeddings):
    emb = cifar3_embeddings
    rows = np.arange(0, 300, 7)
    r = model.similar(emb.vectors[rows], k=5)
    assert r["rows"].shape == (len(rows), 5)
    assert (r["rows"][:, 0] == rows).all()
    assert np.allclose(r["distances"][:, 0], 0.0, atol=1e-3)
    # a PCA reducer's model compares directions (Pipeline.neighbour_metric): cosine similarities
    assert np.allclose(r["similarities"][:, 0], 1.0, atol=1e-3) and not np.isnan(r["similarities"]).any()
    assert (np.diff(r["similarities"], axis=1) <= 1e-6).all()
    assert (np.diff(r["distances"], axis=1) >= 0).all()  # nearest first
    assert [ids[0] for ids in r["ids"]] == [emb.ids[i] for i in rows]
    assert [p[0] for p in r["paths"]] == [emb.paths[i] for i in rows]
    # the neighbours' clusters are the fitted items' at the level in use
    assert (r["clusters"] == model.cluster_[r["rows"]]).all()
    assert (r["cluster"] == model.predict_details(emb.vectors[rows])["cluster"]).all()


def test_cosine_similarity_of_a_cosine_model(cifar3_embeddings):
    """A cosine model (the default reducer's metric) answers cosine similarities: without a
    projection exactly those of the full vectors; rows only for a model fitted on bare vectors."""
    from mediacluster.data import l2_normalize

    X, y = cifar3_embeddings.vectors, np.repeat(np.arange(3), 100)
    pipe = Pipeline(reference_dims=None).fit_labels(X, y, X[:, :2])
    r = pipe.similar(X[:20], k=6)
    U = l2_normalize(X)
    exact = np.sort(U[:20] @ U.T, axis=1)[:, ::-1][:, :6]
    assert np.allclose(r["similarities"], exact, atol=1e-4)
    assert (r["rows"][:, 0] == np.arange(20)).all() and r["ids"] is None


def test_same_cluster_and_level_restrict_the_neighbours(model, cifar3_embeddings):
    X = cifar3_embeddings.vectors
    finest = len(model.levels_) - 1
    free = model.similar(X, k=30, level=finest)
    crossing = np.flatnonzero((free["clusters"] != free["cluster"][:, None]).any(axis=1))
    assert len(crossing) > 0  # without the restriction some neighbours lie in other clusters
    q = X[crossing[:20]]
    same = model.similar(q, k=30, same_cluster=True, level=finest)
    filled = same["rows"] >= 0
    assert filled[:, 0].all()
    assert (same["clusters"][filled] == np.broadcast_to(same["cluster"][:, None], filled.shape)[filled]).all()
    assert (model.levels_[finest][same["rows"][filled]] == same["clusters"][filled]).all()
    # a coarser level: clusters are that level's
    top = model.similar(q, k=5, same_cluster=True, level=0)
    assert (top["clusters"] == top["cluster"][:, None]).all()
    assert top["level"] == 0 and (top["cluster"] == model.predict_path(q)[0][0]).all()
    with pytest.raises(ParameterError) as e:
        model.similar(q, k=5, level=len(model.levels_))
    assert e.value.param == "level"
    with pytest.raises(ParameterError) as e:
        model.similar(q, k=0)
    assert e.value.param == "k"


def test_ids_and_paths_survive_save_load_and_a_moved_collection(model, cifar3_embeddings, tmp_path):
    model.save(tmp_path / "copy")  # a loaded model saved again keeps its items
    again = Pipeline.load(tmp_path / "copy")
    X = cifar3_embeddings.vectors[:3]
    assert again.similar(X, k=2)["ids"] == model.similar(X, k=2)["ids"]
    moved = tmp_path / "moved"
    moved.mkdir()
    root = model.model_items().root
    r = again.similar(X, k=1, collection_root=moved)
    assert r["paths"] == [[str(moved / Path(cifar3_embeddings.paths[i]).relative_to(root))] for i in range(3)]


def test_items_file_keeps_names_that_are_not_utf8(tmp_path):
    from mediacluster.model_items import read_items, save_items

    root = tmp_path / "photos"
    root.mkdir()
    names = [str(root / "caf\udce9.jpg"), str(root / "a\\b.jpg"), str(root / "plain.jpg")]
    save_items(tmp_path, [n + "#id" for n in names], names, root)
    got = read_items(tmp_path, 3)
    assert got.paths == names and got.ids == [n + "#id" for n in names] and got.root == str(root)
    assert json.loads((tmp_path / "items.json").read_text())["escaped"] == [0]


def test_old_model_without_ids_answers_rows(old_model, model, cifar3_embeddings):
    old = Pipeline.load(old_model)
    X = cifar3_embeddings.vectors[:10]
    r = old.similar(X, k=3)
    assert r["ids"] is None and r["paths"] is None
    assert (r["rows"] == model.similar(X, k=3)["rows"]).all() and (r["rows"][:, 0] == np.arange(10)).all()


def test_http_similar_vectors_images_errors_and_metrics(server, model, cifar3_embeddings, cifar3_dir):
    emb = cifar3_embeddings
    c = server.client
    X = emb.vectors[[3, 150, 290]]
    r = c.post("/v1/similar?k=4", json={"vectors": X.tolist()})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["k"] == 4 and doc["same_cluster"] is False and doc["model"]["version"] == "v0001"
    assigned = c.post("/v1/assign", json={"vectors": X.tolist()}).json()["items"]
    for it, a, row in zip(doc["items"], assigned, [3, 150, 290]):
        assert {k: it[k] for k in a} == a  # the assign answer, as /v1/assign gives it
        near = it["neighbours"]
        assert len(near) == 4 and near[0]["row"] == row and near[0]["id"] == emb.ids[row]
        assert near[0]["path"] == emb.paths[row] and near[0]["distance"] == pytest.approx(0.0, abs=1e-3)
        assert near[0]["similarity"] == pytest.approx(1.0, abs=1e-3)  # cosine (Pipeline.neighbour_metric)
        assert it["level_cluster"] == it["cluster"] and near[0]["cluster"] == model.cluster_[row]
        assert near[0]["name"] == it["level_name"]
    # same_cluster at the finest level
    finest = len(model.levels_) - 1
    r = c.post(f"/v1/similar?k=20&same_cluster=true&level={finest}", json={"vectors": emb.vectors[::30].tolist()})
    assert r.status_code == 200, r.text
    for it in r.json()["items"]:
        assert it["level"] == finest and it["neighbours"]
        assert {n["cluster"] for n in it["neighbours"]} == {it["level_cluster"]}
    # bad parameters: 4xx naming the parameter; the server keeps answering
    for q, code, word in (("k=0", 422, "k"), ("k=101", 422, "k"), ("k=ten", 422, "k"),
                          (f"level={len(model.levels_)}", 400, "level")):
        bad = c.post(f"/v1/similar?{q}", json={"vectors": X[:1].tolist()})
        assert bad.status_code == code, (q, bad.text)
        assert word in bad.json()["error"]["message"], bad.text
    # the parameters sent in the body instead: the answer says where they go
    bad = c.post("/v1/similar", json={"vectors": X[:1].tolist(), "k": 3})
    assert bad.status_code == 422 and "query parameters of /v1/similar" in bad.text, bad.text
    assert "k: Extra inputs are not permitted" in bad.text, bad.text
    # an uploaded image (the micro-batcher): its own file comes first
    img = sorted((cifar3_dir / "frog").glob("*.jpg"))[0]
    r = c.post("/v1/similar?k=3", files=upload([img]))
    assert r.status_code == 200, r.text
    it = r.json()["items"][0]
    assert it["filename"] == img.name and Path(it["neighbours"][0]["path"]).name == img.name
    assert it["neighbours"][0]["distance"] < 1e-2
    from prometheus_client.parser import text_string_to_metric_families

    fams = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    got = {s.labels["input"]: s.value for s in fams["mediacluster_similar_items"].samples if s.name.endswith("_total")}
    assert got["vector"] >= 3 + 10 and got["image"] >= 1
    assert server.alive()
    assert "/v1/similar" in c.get("/openapi.json").json()["paths"]


@pytest.mark.slow
def test_http_similar_follows_a_new_model_version(run_dir, cifar3_embeddings, tmp_path):
    """A version published while the service runs (the file watch) answers /v1/similar from then
    on, with its own clusters and its own ids; each answer names the version that gave it."""
    from test_serve import wait_for_version

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    s = Server(str(run), "--poll", "0.2", log=tmp_path / "server.log")
    try:
        X = cifar3_embeddings.vectors[[0, 120]]
        first = s.client.post("/v1/similar?k=2", json={"vectors": X.tolist()}).json()
        assert first["model"]["version"] == "v0001" and first["items"][0]["level"] is not None
        flat = Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 8}),
                        clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 2}),
                        reference_dims=64).fit(cifar3_embeddings.vectors)
        flat.publish(run / "models", metadata={"encoder": "efficientnet-lite0"}, source="test",
                     items={"ids": [f"new-{i}" for i in range(300)], "paths": None})
        wait_for_version(s, "v0002")
        r = s.client.post("/v1/similar?k=2&same_cluster=true", json={"vectors": X.tolist()})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model"]["version"] == "v0002"
        for it, row in zip(doc["items"], [0, 120]):
            assert it["level"] is None and it["level_cluster"] == flat.cluster_[row]
            assert it["neighbours"][0]["id"] == f"new-{row}" and it["neighbours"][0]["path"] is None
            assert {n["cluster"] for n in it["neighbours"]} == {it["cluster"]}
        # the description follows the switch: this model is flat, level 0 only
        (param,) = [p for p in s.client.get("/openapi.json").json()["paths"]["/v1/similar"]["post"]["parameters"]
                    if p["name"] == "level"]
        assert "(v0002) is flat: level 0 only" in param["description"], param
        r = s.client.post("/v1/similar?level=1", json={"vectors": X.tolist()})
        assert r.status_code == 400 and "level 0 only" in r.json()["error"]["message"], r.text
    finally:
        s.stop()


def test_http_old_model_answers_rows(old_model, cifar3_embeddings, tmp_path):
    s = Server(str(old_model), log=tmp_path / "server.log")
    try:
        r = s.client.post("/v1/similar?k=2", json={"vectors": cifar3_embeddings.vectors[:2].tolist()})
        assert r.status_code == 200, r.text
        for i, it in enumerate(r.json()["items"]):
            assert it["neighbours"][0]["row"] == i and it["neighbours"][0]["id"] is None
            # how sure the names are was not kept: null, not an error
            assert it["level_name_sure"] is None and all(n["name_sure"] is None for n in it["neighbours"])
        # no ids kept: it cannot be asked by id, and says so
        r = s.client.post("/v1/similar", json={"ids": [cifar3_embeddings.ids[0]]})
        assert r.status_code == 400 and "ask by vector" in r.json()["error"]["message"], r.text
    finally:
        s.stop()


def test_http_similar_says_how_sure_names_are_and_describes_the_models_levels(server, model, cifar3_embeddings):
    """Each neighbour (and the item's cluster at `level`) says how sure its name is, as
    /v1/clusters lists it at that level; `level` is described with the served model's levels,
    and a level it lacks is a 400 naming the range."""
    c = server.client
    top = len(model.levels_) - 1
    levels = c.get("/v1/clusters").json()["levels"]
    sure = {t["level"]: {cl["id"]: cl["name_sure"] for cl in t["clusters"]} for t in levels}
    X = cifar3_embeddings.vectors[::25]
    seen = set()
    for q in ("", "&level=0", f"&level={top}"):
        r = c.post(f"/v1/similar?k=6{q}", json={"vectors": X.tolist()})
        assert r.status_code == 200, r.text
        for it in r.json()["items"]:
            at = sure[it["level"]]
            assert it["level_name_sure"] == at.get(it["level_cluster"])
            for n in it["neighbours"]:
                assert n["name_sure"] == at.get(n["cluster"]), (q, n)
                seen.add(n["name_sure"])
    assert seen & {True, False}, seen  # the run measured its names: not all null
    spec = c.get("/openapi.json").json()
    (param,) = [p for p in spec["paths"]["/v1/similar"]["post"]["parameters"] if p["name"] == "level"]
    assert f"levels 0..{top}, coarse to fine" in param["description"], param
    assert {"type": "integer", "minimum": 0, "maximum": top} in param["schema"]["anyOf"], param
    chosen = next(t["level"] for t in levels if t["chosen"])
    assert f"the level in use (the default) is {chosen}" in param["description"]
    neighbour = spec["components"]["schemas"]["Neighbour"]["properties"]
    assert "name_sure" in neighbour and "level_name_sure" in spec["components"]["schemas"]["Similar"]["properties"]
    for bad in (-1, top + 1):
        r = c.post(f"/v1/similar?level={bad}", json={"vectors": X[:1].tolist()})
        assert r.status_code == 400 and f"0..{top}" in r.json()["error"]["message"], r.text


@pytest.mark.slow
def test_cli_assign_similar(run_dir, cifar3_dir, cifar3_embeddings, tmp_path):
    imgs = sorted((cifar3_dir / "truck").glob("*.jpg"))[:2]
    out = tmp_path / "a.csv"
    p = subprocess.run([sys.executable, "-m", "mediacluster", "assign", str(run_dir), *map(str, imgs),
                        "--similar", "3", "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    from mediacluster.fileio import read_table

    df = read_table(out)
    for img, cell in zip(imgs, df["similar"]):
        near = json.loads(cell)
        assert len(near) == 3 and Path(near[0]["path"]).name == img.name
        assert near[0]["id"] == cifar3_embeddings.ids[cifar3_embeddings.paths.index(near[0]["path"])]
    # each neighbour says how sure its name is, as the service's /v1/similar neighbours do
    served = Pipeline.load(run_dir)
    from mediacluster.naming import level_names, level_names_sure

    lv = int(served.level_)
    sure = {c: r["name_sure"] for c, r in level_names_sure(served, level_names(served))[lv].items()}
    got = [(n["cluster"], n["name_sure"]) for cell in df["similar"] for n in json.loads(cell)]
    assert got and all(s == sure.get(c) for c, s in got), (got, sure)
    assert {s for _, s in got} & {True, False}, got  # measured, not all null
    bad = subprocess.run([sys.executable, "-m", "mediacluster", "assign", str(run_dir), str(imgs[0]),
                          "--similar", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--similar" in bad.stderr


def test_a_run_fitted_on_a_sample_keeps_the_sample_ids(cifar3_embeddings, tmp_path):
    """The streamed path fits a sample: the model's items are the sampled rows, named by their
    own ids (row i of the model is not row i of the collection)."""
    from mediacluster.workflow import cluster_folder

    X = cifar3_embeddings.vectors
    np.save(tmp_path / "v.npy", X)
    res = cluster_folder(tmp_path / "v.npy", tmp_path / "out", save_model=True, fit_sample=120, batch_rows=100,
                         pipeline=Pipeline(reducer=make_stage("reducer", "pca", {"n_components": 8}),
                                           clusterer=make_stage("clusterer", "kmeans", {"n_clusters": 3}),
                                           reference_dims=64), progress=False)
    model = Pipeline.load(res.out)
    ids = model.model_items().ids
    assert len(ids) == 120 and ids != [str(i) for i in range(120)]
    rows = [int(i) for i in ids[::10]]
    r = model.similar(X[rows], k=2)
    assert [n[0] for n in r["ids"]] == [str(i) for i in rows]


# -- what a product asks of the list: by item id, exclude, pages, per cluster -------------------

def _filtered(rows, clusters, drop=(), cap=None):
    """The reference answer of the filters: a long list filtered in order."""
    out, seen = [], {}
    for r, c in zip(rows, clusters):
        if r < 0 or r in drop:
            continue
        if cap is not None and seen.get(c, 0) >= cap:
            continue
        seen[c] = seen.get(c, 0) + 1
        out.append(int(r))
    return out


def test_similar_to_an_item_by_id_leaves_the_item_out(model, cifar3_embeddings):
    from mediacluster.errors import InputError

    emb = cifar3_embeddings
    rows = np.arange(5, 300, 11)
    ids = [emb.ids[i] for i in rows]
    by_id = model.similar(ids=ids, k=6)
    by_vec = model.similar(emb.vectors[rows], k=7)
    assert (by_vec["rows"][:, 0] == rows).all()  # the vector finds the item itself first ...
    assert (by_id["rows"] == by_vec["rows"][:, 1:]).all()  # ... the id never does; the rest the same
    assert np.allclose(by_id["distances"], by_vec["distances"][:, 1:], atol=1e-5)
    assert (by_id["query_rows"] == rows).all() and by_id["details"] is None
    assert (by_id["cluster"] == model.cluster_[rows]).all()  # the item's own fitted cluster
    assert by_id["ids"] == [[emb.ids[r] for r in rr] for rr in by_id["rows"]]
    one = model.similar(ids=ids[0], k=3)  # one id as a string
    assert (one["rows"][0] == by_id["rows"][0, :3]).all()
    # same_cluster by id: the item's own cluster at that level, the item still left out
    finest = len(model.levels_) - 1
    same = model.similar(ids=ids, k=5, same_cluster=True, level=finest)
    filled = same["rows"] >= 0
    assert (same["cluster"] == model.levels_[finest][rows]).all()
    assert (same["clusters"][filled] == np.broadcast_to(same["cluster"][:, None], filled.shape)[filled]).all()
    assert not (same["rows"] == rows[:, None]).any()
    with pytest.raises(InputError, match=r"ids\[1\] 'no-such-item'"):
        model.similar(ids=[ids[0], "no-such-item"], k=3)
    with pytest.raises(ParameterError, match="either"):
        model.similar(emb.vectors[:1], ids=ids[:1])
    with pytest.raises(ParameterError, match="either"):
        model.similar()


def test_model_without_ids_cannot_be_asked_by_id(old_model, cifar3_embeddings):
    old = Pipeline.load(old_model)
    with pytest.raises(ParameterError, match="ask by vector") as e:
        old.similar(ids=[cifar3_embeddings.ids[0]], k=3)
    assert e.value.param == "ids"


def test_a_deleted_items_file_is_named_not_called_bare_vectors(run_dir, cifar3_embeddings, tmp_path):
    """A model saved with its items' ids whose items.json was deleted by hand: asked by id, the
    answer names the missing file rather than "fitted on bare vectors"; by vector it answers."""
    gone = tmp_path / "model"
    shutil.copytree(run_dir / "models" / "v0001", gone)
    assert json.loads((gone / "model.json").read_text())["items_saved"] is True
    (gone / "items.json").unlink()
    m = Pipeline.load(gone)
    with pytest.raises(ParameterError, match="items.json is missing") as e:
        m.similar(ids=[cifar3_embeddings.ids[0]], k=3)
    assert "bare vectors" not in str(e.value) and e.value.param == "ids"
    assert m.similar(cifar3_embeddings.vectors[:2], k=3)["ids"] is None
    # saved again (it has no items now): recorded so, and asked by id it says it keeps none
    m.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model.json").read_text())["items_saved"] is False
    with pytest.raises(ParameterError, match="does not keep its items' ids"):
        Pipeline.load(tmp_path / "again").similar(ids=[cifar3_embeddings.ids[0]], k=3)


def test_exclude_offset_and_per_cluster_filter_the_same_list(model, cifar3_embeddings):
    emb = cifar3_embeddings
    X = emb.vectors[[0, 40, 120, 222]]
    finest = len(model.levels_) - 1
    long = model.similar(X, k=300, level=finest)
    # pages: offset 0 and 10 make the first 20
    p1, p2 = model.similar(X, k=10, level=finest), model.similar(X, k=10, offset=10, level=finest)
    assert (np.hstack([p1["rows"], p2["rows"]]) == long["rows"][:, :20]).all()
    # a page past the end: empty slots
    end = model.similar(X, k=5, offset=298)
    assert ((end["rows"] >= 0).sum(axis=1) == 2).all() and np.isinf(end["distances"][:, 2:]).all()
    # exclude: those ids never answered, the rest of the list in order; unknown ids are ignored
    gone = [int(r) for r in long["rows"][:, :3].ravel()]
    ex = model.similar(X, k=12, exclude=[emb.ids[r] for r in gone] + ["not-an-item"], level=finest)
    for i in range(len(X)):
        assert ex["rows"][i].tolist() == _filtered(long["rows"][i], long["clusters"][i], drop=set(gone))[:12]
    # per_cluster: at most 2 of one cluster at the level, in the order of the long list
    div = model.similar(X, k=8, per_cluster=2, level=finest)
    for i in range(len(X)):
        want = _filtered(long["rows"][i], long["clusters"][i], cap=2)[:8]
        assert div["rows"][i][div["rows"][i] >= 0].tolist() == want
        counts = np.unique(div["clusters"][i][div["rows"][i] >= 0], return_counts=True)[1]
        assert counts.max() <= 2
    assert len({c for c in div["clusters"][0] if c >= 0}) >= 4  # not 8 of one kind
    # all together, by id, page 2 of a diverse list without some ids
    ids = [emb.ids[0], emb.ids[40]]
    base = model.similar(ids=ids, k=299, level=finest)
    both = model.similar(ids=ids, k=4, offset=4, per_cluster=3, exclude=[emb.ids[gone[0]]], level=finest)
    for i in range(2):
        want = _filtered(base["rows"][i], base["clusters"][i], drop={gone[0]}, cap=3)[4:8]
        assert both["rows"][i].tolist() == want
    for bad in ({"offset": -1}, {"per_cluster": 0}, {"offset": 1.5}):
        with pytest.raises(ParameterError) as e:
            model.similar(X, k=3, **bad)
        assert e.value.param == next(iter(bad))


def test_http_similar_by_id_and_the_product_filters(server, model, cifar3_embeddings):
    emb = cifar3_embeddings
    c = server.client
    finest = len(model.levels_) - 1
    rows = [3, 150, 290]
    ids = [emb.ids[r] for r in rows]
    r = c.post(f"/v1/similar?k=5&level={finest}", json={"ids": ids})
    assert r.status_code == 200, r.text
    doc = r.json()
    want = model.similar(ids=ids, k=5, level=finest)
    for i, (it, row) in enumerate(zip(doc["items"], rows)):
        assert it["index"] == i and it["id"] == emb.ids[row] and it["row"] == row
        assert it["cluster"] == model.labels_[row] and it["status"] == "clustered"
        assert it["level"] == finest and it["level_cluster"] == model.levels_[finest][row]
        assert [n["row"] for n in it["neighbours"]] == want["rows"][i].tolist()
        assert row not in [n["row"] for n in it["neighbours"]]  # never the item itself
    # the same filters as Pipeline.similar, in the query, for ids and for vectors alike
    q = f"k=4&offset=4&per_cluster=2&level={finest}&exclude={ids[1]}&exclude=not-an-item"
    want = model.similar(ids=ids, k=4, offset=4, per_cluster=2, exclude=[ids[1], "not-an-item"], level=finest)
    got = c.post(f"/v1/similar?{q}", json={"ids": ids}).json()
    assert got["offset"] == 4 and got["per_cluster"] == 2
    assert [[n["row"] for n in it["neighbours"]] for it in got["items"]] == \
        [r[r >= 0].tolist() for r in want["rows"]]
    X = emb.vectors[rows]
    want = model.similar(X, k=4, offset=4, per_cluster=2, exclude=[ids[1], "not-an-item"], level=finest)
    got = c.post(f"/v1/similar?{q}", json={"vectors": X.tolist()}).json()
    assert [[n["row"] for n in it["neighbours"]] for it in got["items"]] == \
        [r[r >= 0].tolist() for r in want["rows"]]
    # an id the model does not hold is answered in its place; none known: a 400 naming each
    r = c.post("/v1/similar?k=2", json={"ids": [ids[0], "no-such-item"]})
    assert r.status_code == 200 and r.json()["failed"] == 1, r.text
    bad = r.json()["items"][1]
    assert bad["error"]["kind"] == "unknown_id" and "ids[1] 'no-such-item'" in bad["error"]["message"]
    assert len(r.json()["items"][0]["neighbours"]) == 2
    r = c.post("/v1/similar", json={"ids": ["x", "y"]})
    assert r.status_code == 400 and r.json()["error"]["kind"] == "unknown_id", r.text
    assert [it["index"] for it in r.json()["error"]["items"]] == [0, 1]
    # a wrong body or parameter: 4xx naming it
    for body, code, word in (({"ids": []}, 400, "'ids' is empty"), ({"ids": [1]}, 422, "ids"),
                             ({"ids": ids[:1], "k": 3}, 422, "query"),
                             ({"ids": ids[:1], "vectors": X[:1].tolist()}, 422, "vectors")):
        bad = c.post("/v1/similar", json=body)
        assert bad.status_code == code and word in bad.text, (body, bad.text)
    for q in ("offset=-1", "offset=901", "per_cluster=0"):
        bad = c.post(f"/v1/similar?{q}", json={"ids": ids[:1]})
        assert bad.status_code == 422 and q.split("=")[0] in bad.text, (q, bad.text)
    assert server.alive()



def test_cli_assign_similar_pages_caps_and_excludes(run_dir, model, cifar3_embeddings, tmp_path):
    emb = cifar3_embeddings
    vec = tmp_path / "q.npy"
    np.save(vec, emb.vectors[[7, 77]])
    finest = str(len(model.levels_) - 1)
    out = tmp_path / "a.csv"
    p = subprocess.run([sys.executable, "-m", "mediacluster", "assign", str(run_dir), str(vec), "--level", finest,
                        "--similar", "4", "--similar-offset", "2", "--per-cluster", "1",
                        "--exclude", emb.ids[7], "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    from mediacluster.fileio import read_table

    again = Pipeline.load(run_dir)
    again.set_level(int(finest))
    want = again.similar(emb.vectors[[7, 77]], k=4, offset=2, per_cluster=1, exclude=[emb.ids[7]])
    got = [[n["row"] for n in json.loads(c)] for c in read_table(out)["similar"]]
    assert got == [r[r >= 0].tolist() for r in want["rows"]] and 7 not in got[0]
    bad = subprocess.run([sys.executable, "-m", "mediacluster", "assign", str(run_dir), str(vec),
                          "--per-cluster", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--per-cluster" in bad.stderr and "--similar" in bad.stderr, bad.stderr


def test_same_cluster_without_similar_is_refused_as_its_siblings_are(run_dir, cifar3_embeddings, tmp_path, capsys):
    """``assign --same-cluster`` without ``--similar`` printed the assignments and passed the flag
    over; ``--per-cluster``, ``--similar-offset`` and ``--exclude`` were already refused so."""
    from mediacluster.cli import main

    np.save(tmp_path / "q.npy", cifar3_embeddings.vectors[[7]])
    assert main(["assign", str(run_dir), str(tmp_path / "q.npy"), "--same-cluster"]) == 2
    err = capsys.readouterr().err
    assert "--same-cluster" in err and "--similar K" in err, err


def test_a_repost_is_asked_by_id_as_its_group(cifar3_dir, tmp_path):
    """A model saved with --dedup searches one item per near-duplicate group: a member that is
    not the representative is found as its group, and "more like" it never answers the group."""
    import contextlib
    import io

    from mediacluster.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    files = sorted((cifar3_dir / "airplane").glob("*.jpg"))[:15] + sorted((cifar3_dir / "frog").glob("*.jpg"))[:15]
    for f in files:
        shutil.copyfile(f, photos / f"{f.parent.name}_{f.name}")
    shutil.copyfile(files[0], photos / "zz_repost.jpg")  # an exact copy: one group with the original
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(["cluster", str(photos), "--out", str(tmp_path / "run"), "--dedup", "--save-model", "--quiet",
                     "--reducer", "pca", "--reducer-param", "n_components=4", "--clusterer", "kmeans",
                     "--clusterer-param", "n_clusters=2", "--no-names"])
    assert code == 0
    model = Pipeline.load(tmp_path / "run")
    orig, copy = str(photos / f"airplane_{files[0].name}"), str(photos / "zz_repost.jpg")
    known = set(model.model_items().ids)
    assert len({orig, copy} & known) == 1  # one of the two is searchable: the group's representative
    both = model.similar(ids=[orig, copy], k=5)
    assert (both["rows"][0] == both["rows"][1]).all() and (both["query_rows"][0] == both["query_rows"][1])
    assert not ({orig, copy} & {i for ids in both["ids"] for i in ids})
    s = Server(str(tmp_path / "run"), log=tmp_path / "server.log")  # the service, by the index it loaded
    try:
        r = s.client.post("/v1/similar?k=5", json={"ids": [copy, orig]})
        assert r.status_code == 200 and r.json()["failed"] == 0, r.text
        got = [[n["row"] for n in it["neighbours"]] for it in r.json()["items"]]
        assert got == [both["rows"][0].tolist()] * 2
    finally:
        s.stop()
