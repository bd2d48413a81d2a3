"""A curated model keeps the hierarchy: the studio publishes the curated clusters as the finest
level under the run's coarser levels (``Pipeline.fit_labels(levels=)``,
``stages.hierarchy.tree_above``), so ``predict_path``, ``assign --level`` and the service's
``path`` and ``/v1/clusters`` levels work after curation. Real runs, a real studio over HTTP and
a real service process."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from studio_helpers import Server, client, copy_run, make_run, post, publish, start_service


def test_tree_above_nests_by_majority_and_keeps_junk_apart():
    from mediacluster.stages.hierarchy import tree_above

    # a tree: 2 -> 4 -> 8 clusters over 80 items (10 per leaf)
    leaf = np.repeat(np.arange(8), 10)
    tree = np.stack([leaf // 4, leaf // 2])
    fine = leaf.copy()
    fine[leaf == 1] = 0                  # merge two leaves of one parent
    fine[(leaf == 5)] = 9                # a renamed leaf (ids need not be contiguous)
    fine[[20, 21, 22]] = 6               # three items of leaf 2 moved into leaf 6's cluster
    rows, parents, sources = tree_above(fine, np.ones(80, bool), tree, junk=[7])
    assert rows.shape == (3, 80) and (rows[-1] == fine).all()
    for lv, par in enumerate(parents):  # nested: every cluster has exactly one parent
        assert (par[rows[lv + 1]] == rows[lv]).all()
    # cluster 6 (10 of leaf 6, 3 of leaf 2) sits where most of it is: under tree cluster 3 / 1
    assert sources[1]["clusters"][rows[1][fine == 6][0]] == 3
    assert sources[0]["clusters"][rows[0][fine == 6][0]] == 1
    # junk (leaf 7) is a branch of its own at every coarse level, the last id
    for lv in range(2):
        assert set(rows[lv][fine == 7]) == {len(sources[lv]["clusters"]) - 1}
        assert sources[lv]["clusters"][-1] == -1 and not np.isin(rows[lv][fine != 7], rows[lv][fine == 7]).any()
    # a level not strictly coarser than the next is dropped: the leaves themselves (8 -> 7 kept ids)
    rows2, _, sources2 = tree_above(leaf, np.ones(80, bool), np.stack([leaf // 4, leaf // 2, leaf]))
    assert [s["level"] for s in sources2] == [0, 1] and len(rows2) == 3
    # nothing coarser than the clustering: no level above it
    rows3, parents3, _ = tree_above(leaf // 4, np.ones(80, bool), tree)
    assert len(rows3) == 1 and parents3 == []


def test_fit_labels_with_levels_is_a_tree_that_saves_loads_and_switches_levels(tmp_path):
    from sklearn.datasets import make_blobs

    from mediacluster.errors import InputError, ParameterError
    from mediacluster.pipeline import Pipeline

    X, y = make_blobs(n_samples=240, centers=6, n_features=16, cluster_std=0.6, random_state=3)
    X = X.astype(np.float32)
    tree = np.stack([y // 3, y])          # the "run's" levels: 2 -> 6
    labels = y.copy()
    labels[y == 1] = 0                    # a merge: 5 curated clusters under the 2 coarse ones
    labels[:6] = -1                       # unassigned items get their nearest cluster in the tree

    def pipe(**kw):
        return Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", reference_size=None, **kw)

    p = pipe().fit_labels(X, labels, X[:, :2], levels=tree[:1])
    assert p.n_clusters_per_level_.tolist() == [2, 6] and p.level_ == p.auto_level_ == 1
    assert (p.labels_ == labels).all() and (p.levels_[1][6:] == labels[6:]).all()
    assert p.parents_[0][[0, 2, 3, 4, 5]].tolist() == [0, 0, 1, 1, 1]
    assert [s["level"] for s in p.tree_sources_] == [0]
    path, _ = p.predict_path(X)
    assert (path[1][6:] == labels[6:]).all() and (path[0] == p.parents_[0][path[1]]).all()
    p.save(tmp_path / "m")
    q = Pipeline.load(tmp_path / "m")
    assert (q.levels_ == p.levels_).all() and q.level_ == 1
    assert (q.predict(X) == p.predict(X)).all()
    q.set_level(0)
    assert set(q.predict(X)[6:].tolist()) == {0, 1}
    # the cluster count of the curated level is of the clusters it has (ids 0, 2..5: 5, not 6)
    assert [t["n_clusters"] for t in q.level_table()] == [2, 5] and q.level_with(5) == 1
    # the level to answer at, and the checks of the given levels
    assert (pipe(level=0).fit_labels(X, labels, X[:, :2], levels=tree[:1]).labels_[6:] == (y // 3)[6:]).all()
    with pytest.raises(ParameterError, match="level=5"):
        pipe(level=5).fit_labels(X, labels, X[:, :2], levels=tree[:1])
    with pytest.raises(InputError, match="levels must be"):
        pipe().fit_labels(X, labels, X[:, :2], levels=tree[:, :10])
    # nothing coarser than the labels: a flat model, noise assigned as before
    flat = pipe().fit_labels(X, labels, X[:, :2], levels=tree[1:])
    assert flat.levels_ is None and flat.tree_sources_ is None and (flat.cluster_ >= 0).all()


def test_curated_tree_is_the_tree_fit_labels_builds():
    """``curated_tree`` (what the studio and the report show) gives each curated cluster the
    path ``Pipeline.fit_labels(levels=, junk=)`` gives it, with unassigned items and junk; a
    tree it cannot build (unclustered items in the levels, levels that do not nest) is None."""
    from sklearn.datasets import make_blobs

    from mediacluster.curated_tree import curated_tree
    from mediacluster.errors import InputError, ParameterError
    from mediacluster.pipeline import Pipeline
    from mediacluster.rundir import RunLevels

    X, y = make_blobs(n_samples=400, centers=8, n_features=16, cluster_std=0.8, random_state=5)
    tree = [y // 4, y // 2, y]
    levels = RunLevels(tuple(tree), ("level_0", "level_1", "level_2"), (0, 1, 2), level=2)
    labels = y.copy()
    labels[y == 3] = 2                            # a merge
    labels[np.flatnonzero(y == 6)[:30]] = 1       # most of cluster 6 moved across the tree
    labels[:10] = -1                              # unassigned
    t = curated_tree(levels, labels, junk=[7])
    p = Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", reference_size=None).fit_labels(
        X.astype(np.float32), labels, X[:, :2], levels=levels.above(), junk=[7])
    assert [s["level"] for s in t.sources] == [s["level"] for s in p.tree_sources_]
    assert all(np.array_equal(a["clusters"], b["clusters"]) for a, b in zip(t.sources, p.tree_sources_))
    ok = labels >= 0
    assert (t.rows[:, ok] == p.levels_[:, ok]).all() and (t.rows[:, ~ok] == -1).all()
    assert t.names == ["level_0", "level_1"] and t.groups()["level_0"]["7"] == len(t.sources[0]["clusters"]) - 1
    # the studio's publish gives fit_labels this tree instead of computing it again: same model
    given = Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", reference_size=None).fit_labels(
        X.astype(np.float32), labels, X[:, :2], tree=(t.rows, t.parents, t.sources))
    assert (given.levels_ == p.levels_).all() and (given.labels_ == p.labels_).all()
    assert all((a == b).all() for a, b in zip(given.parents_, p.parents_)) and given.tree_sources_ == t.sources
    assert (given.predict(X[:10].astype(np.float32)) == p.predict(X[:10].astype(np.float32))).all()
    moved = labels.copy()
    moved[labels == 0] = 5  # not the labels the tree was computed for
    with pytest.raises(InputError, match="last row is not the labels"):
        Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", reference_size=None).fit_labels(
            X.astype(np.float32), moved, X[:, :2], tree=(t.rows, t.parents, t.sources))
    crossed_parents = [p_[::-1].copy() for p_ in t.parents]
    with pytest.raises(InputError, match="does not hold level"):
        Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", reference_size=None).fit_labels(
            X.astype(np.float32), labels, X[:, :2], tree=(t.rows, crossed_parents, t.sources))
    with pytest.raises(ParameterError, match="not both"):
        Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", reference_size=None).fit_labels(
            X.astype(np.float32), labels, X[:, :2], levels=levels.above(), tree=(t.rows, t.parents, t.sources))
    with_noise = RunLevels(tuple([np.where(y == 0, -1, y // 4)] + tree[1:]), levels.names, levels.index, 2)
    assert curated_tree(with_noise, labels) is None
    crossed = RunLevels((y % 2, y // 2, y), levels.names, levels.index, 2)  # level 0 does not nest level 1
    assert curated_tree(crossed, labels) is None
    assert curated_tree(RunLevels(tuple(tree), levels.names, levels.index, 0), labels) is None


@pytest.fixture(scope="module")
def tree_run(cifar3_embeddings, tmp_path_factory):
    """A run of the hierarchy (PCA + the engine's tree) answering at a level with coarser ones."""
    from test_levels import pca_tree

    from mediacluster.report.build import map_2d
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    counts = pipe.n_clusters_per_level_.tolist()
    level = next(lv for lv, k in enumerate(counts) if lv >= 2 and k >= 8)
    pipe.set_level(level)
    run = publish_run(tmp_path_factory.mktemp("tree") / "run", cifar3_embeddings, pipe, save_model=True)
    with run.writing("test"):
        map_2d(run, cifar3_embeddings.vectors, method="pca")
    return run.path, pipe


@pytest.mark.slow
def test_a_curated_model_keeps_the_runs_levels_above_the_curated_clusters(tree_run, tmp_path):
    import httpx

    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline
    from mediacluster.rundir import RunDir

    run, fitted = tree_run
    s = Server(run)
    try:
        with client(s) as c:
            lab0 = np.frombuffer(c.get("/api/labels").content, dtype="<i4")
            sizes = np.bincount(lab0[lab0 >= 0])
            big, a, b = (int(x) for x in np.argsort(-sizes)[:3])
            # a merge, a split (k=2), a rename and a junk cluster
            assert post(c, "/api/edits", {"kind": "merge", "clusters": [a, b]}).status_code == 200
            pv = post(c, "/api/split/preview", {"cluster": big, "k": 2}).json()
            assert post(c, "/api/edits", {"kind": "split", "preview": pv["preview"]}).status_code == 200
            lab = np.frombuffer(c.get("/api/labels").content, dtype="<i4").astype(np.int64)
            left = sorted(set(lab[lab >= 0].tolist()) - {a, b})
            smallest = min(left, key=lambda k: (lab == k).sum())
            assert post(c, "/api/edits", {"kind": "junk", "clusters": [smallest]}).status_code == 200
            assert post(c, "/api/edits", {"kind": "rename", "cluster": a, "name": "merged pair"}).status_code == 200
            res = publish(c)
    finally:
        s.stop()
    assert res["agreement"] >= 0.99 and len(res["levels"]) >= 3
    rd = RunDir.open(run)
    X = rd.read_vectors(mmap=False)
    model = Pipeline.load(run)
    assert model.levels_ is not None and len(model.levels_) >= 2
    finest = len(model.levels_) - 1
    assert model.level_ == finest == model.auto_level_
    curated = lab >= 0
    # the finest level is the curated clustering; every fine cluster has exactly one parent
    assert (model.levels_[finest][curated] == lab[curated]).all()
    for lv, par in enumerate(model.parents_):
        assert (par[model.levels_[lv + 1]] == model.levels_[lv]).all()
    counts = [len(np.unique(r)) for r in model.levels_]
    assert counts == sorted(set(counts)) and counts[-1] == len(set(lab[curated].tolist()))
    # the coarse levels are the run's: each coarse cluster is one of the run's clusters there
    path, _ = model.predict_path(X)
    assert np.mean(path[-1][curated] == lab[curated]) >= 0.99
    assert np.mean(model.predict(X)[curated] == lab[curated]) >= 0.99
    # names: the curated ones at the finest level, the run's stored ones above, junk its own branch
    meta = model.model_info_["metadata"]
    by_level = meta["names_by_level"]
    assert set(by_level) == {str(lv) for lv in range(finest + 1)}
    assert by_level[str(finest)][str(a)] == "merged pair" == meta["names"][str(a)]
    stored = {int(k): {e["cluster"]: e["name"] for e in v} for k, v in rd.read_level_names().items()}
    coarse_names = set(by_level["0"].values())
    assert coarse_names - {by_level[str(finest)][str(smallest)]} <= set().union(*(set(v.values()) for v in stored.values()))
    det = model.predict_details(X)
    assert set(det["status"][det["labels"] == smallest]) == {"junk"}
    model.set_level(0)
    junk0 = model.junk_clusters()
    assert junk0 and set(model.levels_[0][lab == smallest]) == set(junk0)
    assert set(model.predict_details(X)["status"][lab == smallest]) == {"junk"}
    # `assign --level 0` answers at the coarse level of the curated model
    vec = tmp_path / "vectors.npy"
    np.save(vec, X[:30])
    out = tmp_path / "assigned.csv"
    assert main(["assign", str(run), str(vec), "--level", "0", "--out", str(out), "--quiet"]) == 0
    got = pd.read_csv(out)
    assert (got["cluster"].to_numpy() == path[0][:30]).mean() >= 0.99
    assert {f"level_{lv}" for lv in range(finest + 1)} <= set(got.columns)
    assert set(got["name"]) <= set(by_level["0"].values())
    # the service: a non-empty path per item and the named levels in /v1/clusters
    proc, url = start_service(run)
    try:
        items = httpx.post(url + "/v1/assign", json={"vectors": X[:20].tolist()}, timeout=120).json()["items"]
        assert all(len(it["path"]) == finest + 1 for it in items)
        assert [it["path"][-1]["cluster"] for it in items] == [it["cluster"] for it in items]
        assert np.mean([it["cluster"] == lab[i] for i, it in enumerate(items) if lab[i] >= 0]) >= 0.99
        levels = httpx.get(url + "/v1/clusters", timeout=60).json()["levels"]
        assert len(levels) == finest + 1 and levels[-1]["chosen"]
        assert [lv["n_clusters"] for lv in levels] == counts
        for lv, listed in zip(model.levels_, levels):  # every cluster with items, named; no empty id
            assert [e["id"] for e in listed["clusters"]] == np.unique(lv).tolist()
            assert all(e["name"] and e["size"] > 0 for e in listed["clusters"])
        assert {e["id"]: e["name"] for e in levels[-1]["clusters"]}[a] == "merged pair"
        assert all(e["parent"] in {p["id"] for p in levels[-2]["clusters"]} for e in levels[-1]["clusters"])
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_studio_groups_the_curated_clusters_as_the_published_model_serves_them(tree_run, tmp_path):
    """After merges, a split, a junk mark and moves, each curated cluster's group at each
    coarse level in the studio's answers (``/api/clusters`` groups and their names,
    ``/api/levels/NAME``) is the published model's path for that cluster's items."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.rundir import RunDir

    run = copy_run(tree_run[0], tmp_path / "run")
    s = Server(run)
    try:
        with client(s) as c:
            lab0 = np.frombuffer(c.get("/api/labels").content, dtype="<i4").astype(np.int64)
            ids, sizes = np.unique(lab0[lab0 >= 0], return_counts=True)  # the clusters there are now
            order = ids[np.argsort(-sizes, kind="stable")].tolist()
            big, a, b, d, e, f = order[:6]
            assert post(c, "/api/edits", {"kind": "merge", "clusters": [a, b]}).status_code == 200
            assert post(c, "/api/edits", {"kind": "merge", "clusters": [e, f]}).status_code == 200
            pv = post(c, "/api/split/preview", {"cluster": big, "k": 2}).json()
            assert post(c, "/api/edits", {"kind": "split", "preview": pv["preview"]}).status_code == 200
            assert post(c, "/api/edits", {"kind": "junk", "clusters": [order[-1]]}).status_code == 200
            # moves: most of d into a, a few items into a new cluster, one item out of every cluster
            moved = np.flatnonzero(lab0 == d)
            assert post(c, "/api/edits", {"kind": "move", "items": moved[: len(moved) * 2 // 3].tolist(),
                                          "to": a}).status_code == 200
            assert post(c, "/api/edits", {"kind": "move", "items": np.flatnonzero(lab0 == e)[:5].tolist(),
                                          "to": "new", "name": "picked"}).status_code == 200
            assert post(c, "/api/edits", {"kind": "move", "items": [int(np.flatnonzero(lab0 == big)[-1])],
                                          "to": -1}).status_code == 200
            lab = np.frombuffer(c.get("/api/labels").content, dtype="<i4").astype(np.int64)
            shown = c.get("/api/clusters").json()
            level_names = [lv["name"] for lv in c.get("/api/info").json()["levels"]]
            colours = {name: np.frombuffer(c.get(f"/api/levels/{name}").content, dtype="<i4")
                       for name in shown["groups"]}
            publish(c)
    finally:
        s.stop()
    model = Pipeline.load(run)
    finest = len(model.levels_) - 1
    groups, names = shown["groups"], shown["group_names"]
    # one group per coarse level the model keeps, coarse to fine, named after the run's levels
    assert len(groups) == finest >= 2 and list(groups) == list(names)
    assert [level_names.index(k) for k in groups] == sorted(level_names.index(k) for k in groups)
    curated = lab >= 0
    X = RunDir.open(run).read_vectors(mmap=False)
    path, _ = model.predict_path(X)
    by_level = model.model_info_["metadata"]["names_by_level"]
    for j, name in enumerate(groups):
        for cid in np.unique(lab[curated]).tolist():
            served = np.unique(model.levels_[j][lab == cid])
            assert served.tolist() == [groups[name][str(cid)]], (name, cid)
            # the service's path for the cluster's items (their own copies dominate the vote)
            assert np.mean(path[j][lab == cid] == served[0]) >= 0.95, (name, cid)
        assert set(groups[name]) == {str(x) for x in np.unique(lab[curated])}
        assert names[name] == by_level[str(j)]
        assert (colours[name][curated] == model.levels_[j][curated]).all()
        assert (colours[name][~curated] == lab[~curated]).all()
    model.set_level(0)
    assert {groups[next(iter(groups))][str(order[-1])]} == set(model.junk_clusters())


def test_publish_from_the_command_line_says_the_levels_kept(tree_run, tmp_path, capsys):
    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline

    run = copy_run(tree_run[0], tmp_path / "run")
    assert main(["studio", str(run), "--publish"]) == 0
    out = capsys.readouterr().out
    model = Pipeline.load(run)
    counts = " -> ".join(str(len(np.unique(r))) for r in model.levels_)
    assert f"it keeps the run's levels above them (clusters per level {counts})" in out


def test_a_run_without_levels_still_publishes_a_flat_curated_model(cifar3_embeddings, tmp_path, capsys):
    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline

    run = make_run(cifar3_embeddings, tmp_path / "run")
    assert main(["studio", str(run), "--publish"]) == 0
    out = capsys.readouterr().out
    assert "published model v0002" in out and "keeps the run's levels" not in out, out
    model = Pipeline.load(run)
    assert model.levels_ is None and "names_by_level" not in model.model_info_["metadata"]


def test_fit_labels_converts_its_input_as_fit_does():
    """Ragged, complex, sparse or non-finite vectors are an InputError naming the problem, as in
    ``fit`` (``data.as_vectors``), not numpy's ValueError or a silently dropped imaginary part."""
    import scipy.sparse

    from mediacluster.errors import InputError
    from mediacluster.pipeline import Pipeline

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8))
    labels = np.repeat([0, 1, 2], 10)
    pipe = Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", reference_size=None)
    assert (pipe.fit_labels(X.tolist(), labels, X[:, :2]).labels_ == labels).all()  # nested lists are fine
    for bad, match in ((X.astype(np.complex128), "Complex"), (scipy.sparse.csr_matrix(X), "sparse"),
                       ([[1.0, 2.0]] * 29 + [[1.0]], "one length"), (np.array([["a"] * 8] * 30), "numbers")):
        with pytest.raises(InputError, match=match):
            pipe.fit_labels(bad, labels, X[:, :2])
    Xn = X.copy()
    Xn[4, 2] = np.nan
    with pytest.raises(InputError, match="vector 4 contains NaN"):
        pipe.fit_labels(Xn, labels, X[:, :2])


def test_the_report_of_a_curated_run_shows_the_tree_the_model_serves(tree_run, tmp_path):
    """``mediacluster report`` on a curated run: its level switch is the published model's
    levels (the run's coarser levels above the curated clusters, named as the model names them,
    the junk branch a card of its own), the curated clusters the finest level and the one shown
    first; not the run's levels from before the curation."""
    import base64
    import json

    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline
    from mediacluster.studio.session import Studio

    run = copy_run(tree_run[0], tmp_path / "run")
    st = Studio(run, warm=False)
    try:
        lab0 = st.state.labels.copy()
        ids, sizes = np.unique(lab0[lab0 >= 0], return_counts=True)  # the clusters there are now
        order = ids[np.argsort(-sizes, kind="stable")].tolist()
        st.edit("merge", {"clusters": order[1:3]})
        st.edit("junk", {"clusters": [order[-1]]})
        st.edit("move", {"items": np.flatnonzero(lab0 == order[3])[:6].tolist(), "to": "new", "name": "by hand"})
        st.edit("rename", {"cluster": order[1], "name": "merged pair"})
        st.publish()
        lab = st.state.labels.copy()
    finally:
        st.close()
    assert main(["report", str(run), "--quiet"]) == 0
    html = (run / "report" / "index.html").read_text(encoding="utf-8")
    D = json.loads(re.search(r'<script id="mc-data" type="application/json">(.*?)</script>', html, re.S).group(1))
    model = Pipeline.load(run)
    by_level = model.model_info_["metadata"]["names_by_level"]
    finest = len(model.levels_) - 1
    views = D["levels"]["views"]
    assert len(views) == finest + 1 and D["levels"]["current"] == finest
    assert views[finest]["label"] == f"level {finest}: {len(np.unique(lab[lab >= 0]))} clusters (curated)"
    curated = lab >= 0
    for j, v in enumerate(views[:finest]):
        shown = np.frombuffer(base64.b64decode(v["c"]), dtype=np.int32)
        assert (shown[curated] == model.levels_[j][curated]).all() and (shown[~curated] < 0).all()
        assert {str(c["id"]): c["name"] for c in v["clusters"]} == by_level[str(j)]
        assert v["label"] == f"level {j}: {len(np.unique(model.levels_[j]))} clusters"
    model.set_level(0)
    junk0 = model.junk_clusters()[0]
    box = html[html.index('<div class="cards" data-view="0"'):html.index('<div class="cards" data-view="1"')]
    card = box[box.index(f'data-cluster="{junk0}"'):]
    assert 'class="junk"' in card[:card.index("</section>")]
    cards = {c["id"]: c["name"] for c in D["clusters"]}
    assert cards[order[1]] == "merged pair" and "by hand" in cards.values()
    assert cards == {int(k): v for k, v in by_level[str(finest)].items()}


def test_read_levels_is_the_one_reader_of_a_runs_levels(tree_run, tmp_path, caplog):
    """``RunDir.read_levels``: the ``level_<k>`` columns, else ``hierarchy.npz``'s rows (named
    ``levels <row>``), the level the ``cluster`` column holds, the coarser ones; a damaged
    ``hierarchy.npz`` is a warning (the columns still serve), not an error."""
    from mediacluster.rundir import RunDir

    run = RunDir.open(copy_run(tree_run[0], tmp_path / "run"))
    a = run.read_assignments()
    h = run.read_hierarchy()
    lv = run.read_levels(a)
    assert lv.names == tuple(f"level_{k}" for k in range(len(h["levels"]))) and lv.index == tuple(range(len(lv)))
    assert lv.level == int(h["level"]) and (np.stack(lv.labels) == h["levels"]).all()
    assert (lv.above() == h["levels"][:lv.level]).all()
    assert (lv.labels[lv.level] == a["cluster"].to_numpy()).all()
    bare = a.drop(columns=list(lv.names))
    from_file = run.read_levels(bare)
    assert from_file.names == tuple(f"levels {k}" for k in range(len(lv))) and from_file.level == lv.level
    assert all((x == y).all() for x, y in zip(from_file.labels, lv.labels))
    with run.writing("test"):
        run.file("hierarchy.npz").write_bytes(b"not an npz")
    with caplog.at_level("WARNING"):
        assert len(run.read_levels(bare)) == 0
    assert "hierarchy is not readable" in caplog.text
    damaged = run.read_levels(a)
    assert damaged.names == lv.names and damaged.level is None and len(damaged.above()) == len(lv)


def test_fit_labels_keeps_one_reference_per_copy(cifar3_embeddings):
    """A curated model (``fit_labels``, the studio's publish) takes exact copies of a file as one
    reference, as ``fit`` does: a copy among the references put its twin's calibration score at
    0 and lowered the novelty threshold (more new items of known kinds answered ``novel``)."""
    from mediacluster.pipeline import Pipeline

    X = np.asarray(cifar3_embeddings.vectors, dtype=np.float32)
    X = np.concatenate([X, X[: len(X) // 2]])  # half the collection posted twice
    labels = np.asarray(cifar3_embeddings.labels)
    labels = np.concatenate([labels, labels[: len(labels) // 2]])
    labels = np.unique(labels, return_inverse=True)[1]
    pipe = Pipeline(reducer="pca", outliers=None, clusterer="hierarchy", random_state=0)
    fitted = pipe.fit_labels(X, labels, X[:, :2])
    refs = X[fitted.predictor_.ref_index_]
    assert len(np.unique(refs, axis=0)) == len(refs)
    cal = fitted.predictor_.novelty_calibration_
    assert cal is not None and (cal > 0).all()


def test_an_upload_the_earlier_version_put_in_a_cluster_marked_junk_later_is_junk(tmp_path):
    """A borderline upload whose neighbours are mostly of cluster J (under A, with sibling B)
    but whose other neighbours lie under D: version 1 answers J (A outvotes D at the top). In
    version 2 J is junk, a branch of its own at the coarse level, so there D outvotes what is
    left of A and the top-down path went to D's cluster; the flat vote at the level in use is
    still J's, and the upload is answered junk, as a flat model would answer it."""
    from mediacluster.pipeline import Pipeline, load
    from mediacluster.stages import build as make_stage

    rng = np.random.default_rng(0)
    near = {0: 6, 1: 2, 2: 4, 3: 3}  # J, B, C1, C2: 15 neighbours of the upload on a unit circle
    far = {0: (60, 0), 1: (0, 60), 2: (-60, 0), 3: (0, -60)}
    X, fine = [], []
    angle = 0.0
    for c, k in near.items():
        for _ in range(k):
            X.append([np.cos(angle), np.sin(angle)])
            angle += 2 * np.pi / 15
            fine.append(c)
        X.extend(np.asarray(far[c]) + rng.normal(scale=0.5, size=(12, 2)))
        fine.extend([c] * 12)
    X, fine = np.asarray(X, np.float32), np.asarray(fine)
    top = np.where(fine <= 1, 0, 1)  # A = {J, B}, D = {C1, C2}
    upload = np.zeros((1, 2), np.float32)

    def version(junk):
        # positions in the plane, the upload at the origin: a euclidean predictor (a UMAP reducer's
        # metric, Pipeline.neighbour_metric; fit_labels fits no stage)
        euclidean = make_stage("reducer", "umap", {"metric": "euclidean"})
        pipe = Pipeline(reducer=euclidean, outliers=None, clusterer="hierarchy", reference_size=None,
                        predict_neighbors=15).fit_labels(X, fine, X, levels=top[None, :], junk=junk)
        folder = tmp_path / f"v{len(junk)}"
        pipe.save(folder, metadata={"curated": {"junk": junk}})
        return load(folder)

    v1, v2 = version([]), version([0])
    assert v1.predict(upload)[0] == 0 and v1.predict_details(upload)["status"][0] == "clustered"
    det = v2.predict_details(upload)
    assert det["labels"][0] == 0 and det["status"][0] == "junk", det
    # its path is the junk cluster's (the junk branch, 2, then J), not the top-down vote's (D, C1),
    # each step the share of the neighbours in it among those in its parent
    assert v2.predictor_.predict_path(upload)[0][:, 0].tolist() == [1, 2]
    labels, probs = v2.predict_path(upload)
    assert labels[:, 0].tolist() == [2, 0] and (det["path"]["labels"] == labels).all()
    assert np.isclose(np.prod(probs[:, 0]), det["probabilities"][0]) and 0 < det["probabilities"][0] < 1
    # the fitted items still get their own labels (their own copy outvotes the rest)
    assert (v2.predict(X) == fine).all() and (v1.predict(X) == fine).all()
