"""Every level of a hierarchy is named once, when clustering (issue 16 item 1): the run folder
(``level_names.json``), the saved model (``names_by_level``), ``set_level``, the report, the
service and ``assign`` all use those names, so a name always belongs to the clusters of the
level it is shown with.

A real run: 300 CIFAR-10 images (default encoder, ImageNet probabilities -> WordNet names)
fitted by ``Pipeline(reducer=pca, clusterer=hierarchy)`` (no UMAP compilation) and published by
the cluster job's own writer with a saved model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_levels import pca_tree, run_cli, streamed_tree_run

from mediacluster.naming import level_names, load_names, model_names, pipeline_names
from mediacluster.naming.names import name_levels
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir


@pytest.fixture(scope="module")
def named_run(cifar3_embeddings, tmp_path_factory, one_blas_thread):
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    assert len(pipe.levels_) >= 3
    out = tmp_path_factory.mktemp("lvnames") / "run"
    publish_run(out, cifar3_embeddings, pipe, save_model=True)
    return {"run": RunDir.open(out), "pipe": pipe, "emb": cifar3_embeddings}


def ids_of(labels) -> set[int]:
    labels = np.asarray(labels)
    return set(labels[labels >= 0].tolist())


def test_every_level_is_named_in_the_run_folder(named_run, one_blas_thread):
    run, pipe, emb = named_run["run"], named_run["pipe"], named_run["emb"]
    by_level = run.read_level_names()
    assert sorted(by_level) == list(range(len(pipe.levels_)))
    h = run.read_hierarchy()
    every = name_levels(emb.vectors, pipe.levels_, clustered=pipe.labels_ >= 0,
                        imagenet_probs=emb.extras["imagenet_probs"], level=int(pipe.level_))
    for k, named in by_level.items():
        ids = [e["cluster"] for e in named]
        assert set(ids) == ids_of(h["levels"][k]), f"level {k}: one name per cluster"
        names = [e["name"] for e in named]
        assert all(names) and len(set(names)) == len(names), f"level {k}: distinct names"
        assert all(isinstance(e["alternatives"], list) for e in named)
        # the one automatic rule over every level (names nest down the levels), as the flat
        # answer of a fit at that level would be named
        assert {e["cluster"]: e["name"] for e in every[k]} == dict(zip(ids, names))
    # the level in use keeps its files as they were: names.json / clusters.json / the name
    # column, and its entry in level_names.json is the same names
    auto = {e["cluster"]: e["name"] for e in run.read_automatic_names()}
    assert {e["cluster"]: e["name"] for e in by_level[pipe.level_]} == auto
    assert {int(e["cluster"]): e["name"] for e in run.read_clusters()} == auto
    a = run.read_assignments(["cluster", "name"])
    assert (a["name"] == a["cluster"].map(auto)).all()
    doc = json.loads(run.file("level_names.json").read_text())
    assert doc["run_id"] == run.run_id and doc["method"] == "imagenet-wordnet"


def test_the_saved_model_carries_every_levels_names_and_set_level_switches_them(named_run):
    run, pipe = named_run["run"], named_run["pipe"]
    by_level = {k: {str(e["cluster"]): e["name"] for e in v} for k, v in run.read_level_names().items()}
    model = Pipeline.load(run.path)
    meta = model.model_info_["metadata"]
    assert meta["names_by_level"] == {str(k): v for k, v in by_level.items()}
    assert meta["names"] == by_level[pipe.level_]
    saved = model.level_
    for k in [*range(len(model.levels_)), saved]:
        model.set_level(k)
        names = model.model_info_["metadata"]["names"]
        assert names == by_level[k]
        assert {int(c) for c in names} == ids_of(model.labels_), f"level {k}: names match the clusters"
        assert pipeline_names(model) == {int(c): v for c, v in names.items()}
    model.set_level("auto")
    assert model.model_info_["metadata"]["names"] == by_level[model.auto_level_]
    # the service's / assign's view: every level named, the one in use by model_names
    model.set_level(saved)
    table = level_names(model)
    assert sorted(table) == list(range(len(model.levels_)))
    assert table[saved] == model_names(model.model_path_, meta["names"])
    assert all(table[k] == {int(c): v for c, v in by_level[k].items()} for k in table if k != saved)


def test_hand_given_names_stay_with_the_level_they_were_given_for(named_run, tmp_path):
    """names.yaml names the run's clusters (the saved level): after set_level another level's
    clusters do not inherit them."""
    import shutil

    run = named_run["run"]
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / "names.yaml").write_text("0: my hand-given name\n", encoding="utf-8")
    assert load_names(RunDir.open(copy))[0] == "my hand-given name"
    model = Pipeline.load(copy)
    saved = model.level_
    assert pipeline_names(model)[0] == "my hand-given name"
    other = 0 if saved != 0 else 1
    model.set_level(other)
    assert "my hand-given name" not in pipeline_names(model).values()
    table = level_names(model)
    assert table[saved][0] == "my hand-given name" and "my hand-given name" not in table[other].values()


def test_a_model_saved_without_level_names_names_only_its_saved_level(named_run, tmp_path):
    pipe = named_run["pipe"]
    names = {str(e["cluster"]): e["name"] for e in named_run["run"].read_automatic_names()}
    pipe.save(tmp_path / "m", metadata={"names": names})  # as models were saved before
    model = Pipeline.load(tmp_path / "m")
    saved, other = model.level_, (0 if model.level_ != 0 else 1)
    model.set_level(other)
    assert model.model_info_["metadata"]["names"] == {} and pipeline_names(model) == {}
    model.set_level(saved)
    assert model.model_info_["metadata"]["names"] == names


def test_the_report_shows_the_stored_names_of_every_level(named_run, tmp_path):
    """The report takes each level's names from level_names.json (what it shows is what was
    stored: a name changed in the file shows), and names a level itself only when a run has no
    stored names for it."""
    import shutil

    from test_report import _page_data

    from mediacluster.report import build_report

    copy = tmp_path / "run"
    shutil.copytree(named_run["run"].path, copy)
    run = RunDir.open(copy)
    stored = run.read_level_names()
    chosen = named_run["pipe"].level_
    other = 0 if chosen != 0 else 1

    def shown(html) -> dict[int, dict[int, str]]:
        views = _page_data(html)["levels"]["views"]
        return {k: {c["id"]: c["name"] for c in v["clusters"]} for k, v in enumerate(views) if k != chosen}

    first = shown(build_report(run, progress=False, map_method="pca"))
    assert first == {k: {e["cluster"]: e["name"] for e in v} for k, v in stored.items() if k != chosen}
    edited = {**stored, other: [{**e, "name": f"stored name {e['cluster']}"} for e in stored[other]]}
    with run.writing("test"):
        run.write_level_names(edited, method="imagenet-wordnet")
    html = build_report(run, progress=False, map_method="pca")
    assert shown(html)[other] == {e["cluster"]: f"stored name {e['cluster']}" for e in stored[other]}
    assert "stored name 0" in html.read_text(encoding="utf-8")
    # names.yaml's levels: section names that level's clusters over the stored names (run_level_names)
    c = stored[other][0]["cluster"]
    run.file("names.yaml").write_text(f"levels:\n  {other}:\n    {c}: named by hand\n", encoding="utf-8")
    assert shown(build_report(run, progress=False, map_method="pca"))[other][c] == "named by hand"
    run.file("names.yaml").unlink()
    run.file("level_names.json").unlink()  # a run from before: the report names the levels itself
    assert run.read_level_names() == {}
    assert shown(build_report(run, progress=False, map_method="pca")) == first


def test_assign_writes_each_levels_name(named_run, tmp_path):
    run, pipe, emb = named_run["run"], named_run["pipe"], named_run["emb"]
    vectors = tmp_path / "new.npy"
    np.save(vectors, emb.vectors[::30] + 0.01)
    table = tmp_path / "out.csv"
    rc, out, err = run_cli(["assign", run.path, vectors, "--out", table, "--quiet"])
    assert rc == 0, out + err
    t = pd.read_csv(table)
    by_level = {k: {e["cluster"]: e["name"] for e in v} for k, v in run.read_level_names().items()}
    for k in range(len(pipe.levels_)):
        assert (t[f"level_{k}_name"] == t[f"level_{k}"].map(by_level[k])).all()
    assert (t["name"] == t[f"level_{pipe.level_}_name"]).all()
    # the printed form names the cluster each item was assigned to
    rc, out, err = run_cli(["assign", run.path, vectors, "--quiet"])
    assert rc == 0, out + err
    lines = [line.split("\t") for line in out.splitlines() if line]
    head, rows = lines[0], lines[1:]
    assert "name" in head and len(rows) == len(t)
    names = by_level[pipe.level_]
    sure = {e["cluster"]: e.get("name_sure") for e in run.read_level_names()[pipe.level_]}
    for r in rows:  # an unsure name with its "?", as the report shows it
        c = int(r[head.index("assigned_cluster")])
        assert r[head.index("name")] == names[c] + ("?" if sure[c] is False else "")


def test_assign_answers_at_the_level_asked_for(named_run, tmp_path):
    """`assign --level N|auto` (issue gaps item 1): the flat answer (cluster, probability,
    name) is the asked level's, every level's columns stay as they were; the same items at the
    saved level answer as without --level."""
    run, pipe, emb = named_run["run"], named_run["pipe"], named_run["emb"]
    vectors = tmp_path / "new.npy"
    np.save(vectors, emb.vectors[::20] + 0.01)
    by_level = {k: {e["cluster"]: e["name"] for e in v} for k, v in run.read_level_names().items()}

    def table(*extra) -> pd.DataFrame:
        out = tmp_path / f"out{'_'.join(extra) or 'plain'}.csv"
        rc, stdout, err = run_cli(["assign", run.path, vectors, "--out", out, "--quiet", *extra])
        assert rc == 0, stdout + err
        return pd.read_csv(out)

    plain = table()
    levels = [c for c in plain.columns if c.startswith("level_") and c[6:].isdigit()]
    assert len(levels) == len(pipe.levels_) >= 3
    seen = set()
    for k in range(len(pipe.levels_)):
        t = table("--level", str(k))
        assert t[levels].equals(plain[levels]), "every level's path is the same whatever level is asked"
        assert (t["assigned_cluster"] == t[f"level_{k}"]).all()
        ok = t["cluster"] >= 0
        assert ok.any() and (t.loc[ok, "cluster"] == t.loc[ok, f"level_{k}"]).all()
        assert (t["cluster"] < 0).equals(plain["cluster"] < 0), "unclustered items stay so"
        assert (t["assigned_name"] == t["assigned_cluster"].map(by_level[k])).all(), f"level {k}'s names"
        assert (t.loc[ok, "name"] == t.loc[ok, "cluster"].map(by_level[k])).all()
        seen.add(t["assigned_cluster"].nunique())
        if k == pipe.level_:
            assert t.equals(plain), "the saved level answers as without --level"
    assert len(seen) > 1, "the levels give different answers"
    auto = table("--level", "auto")
    assert (auto["assigned_cluster"] == auto[f"level_{pipe.auto_level_}"]).all()
    # the printed form follows the level too
    k = 0 if pipe.level_ != 0 else len(pipe.levels_) - 1
    rc, out, err = run_cli(["assign", run.path, vectors, "--quiet", "--level", str(k)])
    assert rc == 0, out + err
    lines = [line.split("\t") for line in out.splitlines() if line]
    head, rows = lines[0], lines[1:]
    sure = {e["cluster"]: e.get("name_sure") for e in run.read_level_names()[k]}
    for r in rows:
        c = int(r[head.index("assigned_cluster")])
        assert r[head.index("name")] == by_level[k][c] + ("?" if sure[c] is False else "")  # unsure: "?"
        assert int(r[head.index("levels")].split("/")[k]) == c


@pytest.mark.parametrize("level, match", [("99", r"--level 99: level=99 is out of range: this fit has \d+ levels"),
                                          ("-1", "levels are numbered from 0"),
                                          ("top", "expected a level number")])
def test_assign_refuses_a_level_the_model_does_not_have(named_run, tmp_path, level, match):
    import re

    vectors = tmp_path / "new.npy"
    np.save(vectors, named_run["emb"].vectors[:3])
    rc, out, err = run_cli(["assign", named_run["run"].path, vectors, "--quiet", "--level", level])
    assert rc == 2 and re.search(match, err), err
    assert "--level" in err and "Traceback" not in err and not out


def test_assign_level_on_a_model_without_levels(cifar3_embeddings, tmp_path, one_blas_thread):
    """A flat model: a level number is an error naming --level and the model; 'auto' is its
    only answer (as `cluster --level auto` with a flat clusterer)."""
    from mediacluster.stages import registry
    from mediacluster.workflow import publish_run

    pipe = Pipeline(reducer=registry.build("reducer", "pca", {"n_components": 10}), clusterer="kmeans",
                    random_state=0).fit(cifar3_embeddings.vectors)
    assert pipe.levels_ is None
    out = tmp_path / "flat"
    publish_run(out, cifar3_embeddings, pipe, save_model=True)
    vectors = tmp_path / "new.npy"
    np.save(vectors, cifar3_embeddings.vectors[::50] + 0.01)
    rc, stdout, err = run_cli(["assign", out, vectors, "--quiet", "--level", "1"])
    assert rc == 2 and not stdout
    assert "error: --level 1: the model" in err and "has no levels" in err and "models" in err, err
    rc, auto, err = run_cli(["assign", out, vectors, "--quiet", "--level", "auto"])
    rc2, plain, _ = run_cli(["assign", out, vectors, "--quiet"])
    assert rc == rc2 == 0 and auto == plain and "level_" not in auto


def test_the_service_names_every_level_of_the_path_and_of_clusters(named_run, tmp_path):
    """`serve` on the run: each answer's path names its cluster at every level, /v1/clusters
    names every level's clusters (real process, real HTTP)."""
    from test_serve import Server

    run, pipe, emb = named_run["run"], named_run["pipe"], named_run["emb"]
    by_level = {k: {e["cluster"]: e["name"] for e in v} for k, v in run.read_level_names().items()}
    s = Server(str(run.path), log=tmp_path / "server.log")
    try:
        X = emb.vectors[::25] + 0.01
        r = s.client.post("/v1/assign", json={"vectors": X.tolist()})
        assert r.status_code == 200, r.text
        for it in r.json()["items"]:
            assert [p["level"] for p in it["path"]] == list(range(len(pipe.levels_)))
            assert all(p["name"] == by_level[p["level"]][p["cluster"]] for p in it["path"])
            assert it["path"][pipe.level_]["name"] == it["name"]
        levels = s.client.get("/v1/clusters").json()["levels"]
        for lv in levels:
            assert {c["id"]: c["name"] for c in lv["clusters"]} == by_level[lv["level"]]
    finally:
        s.stop()


def test_renaming_a_run_names_every_level_by_the_same_rule(named_run, tmp_path):
    """`report --rename` (naming.names.name_run) rewrites level_names.json with what the cluster
    job wrote, and a run named after the fact (cluster --no-names, then report) gets it too."""
    import shutil

    from mediacluster.naming.names import name_run

    copy = tmp_path / "run"
    shutil.copytree(named_run["run"].path, copy)
    run = RunDir.open(copy)
    stored = run.read_level_names()
    run.file("level_names.json").unlink()
    named = name_run(run)
    assert run.read_level_names() == stored
    assert {e["cluster"]: e["name"] for e in named} == \
        {e["cluster"]: e["name"] for e in stored[named_run["pipe"].level_]}


def test_a_run_fitted_on_a_sample_names_every_level(cifar3_embeddings, tmp_path, one_blas_thread):
    run, pipe = streamed_tree_run(cifar3_embeddings, tmp_path / "run", save_model=True,
                                  extras={"imagenet_probs": cifar3_embeddings.extras["imagenet_probs"]})
    by_level, h = run.read_level_names(), run.read_hierarchy()
    assert sorted(by_level) == list(range(len(pipe.levels_)))
    for k, named in by_level.items():
        ids = {e["cluster"] for e in named}
        assert ids == ids_of(pipe.levels_[k]), "named from the fitted sample"
        assert ids_of(h["levels"][k]) <= ids, "every item's cluster has a name"
    meta = Pipeline.load(run.path).model_info_["metadata"]
    assert sorted(map(int, meta["names_by_level"])) == list(range(len(pipe.levels_)))


@pytest.mark.parametrize("bad, match", [
    ({"99": {"0": "x"}}, "not a level of this model"), ({"x": {"0": "x"}}, "not a level"),
    ({"0": ["x"]}, "must be a mapping"), ({"0": {"a": "x"}}, "not a cluster id"), ({"0": {"0": 5}}, "must be text"),
])
def test_load_refuses_edited_level_names(named_run, tmp_path, bad, match):
    import shutil

    from mediacluster.errors import ModelFormatError

    folder = tmp_path / "m"
    shutil.copytree(Pipeline.load(named_run["run"].path).model_path_, folder)
    doc = json.loads((folder / "model.json").read_text())
    doc["metadata"]["names_by_level"] = bad
    (folder / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match=match):
        Pipeline.load(folder)


def test_a_loaded_model_saved_again_keeps_its_metadata_and_a_refit_drops_it(named_run, tmp_path):
    """``load(run).set_level(k).save(path)`` (no metadata given) keeps the model's own: the
    encoder and level k's names, which ``assign`` and the service read (they were dropped: the
    copy answered without names, and ``assign`` fell back to the image encoder). Refitting a
    loaded model makes it another model: its names, path and junk clusters are not carried."""
    run, X = named_run["run"], named_run["emb"].vectors
    model = Pipeline.load(run.path)
    meta = dict(model.model_info_["metadata"])
    other = 0 if model.level_ != 0 else 1
    model.set_level(other)
    model.save(tmp_path / "m")
    copy = Pipeline.load(tmp_path / "m")
    kept = copy.model_info_["metadata"]
    assert copy.level_ == other and kept["encoder"] == meta["encoder"]
    assert kept["names"] == meta["names_by_level"][str(other)] and kept["names_by_level"] == meta["names_by_level"]
    assert pipeline_names(copy) == {int(c): v for c, v in kept["names"].items()}
    assert Path(copy.publish(tmp_path / "models")).name == "v0001"
    assert Pipeline.load(tmp_path / "models").model_info_["metadata"]["names"] == kept["names"]
    copy.fit(X[::2])
    assert getattr(copy, "model_info_", None) is None and getattr(copy, "model_path_", None) is None
    assert pipeline_names(copy) == {}
    copy.save(tmp_path / "refit")
    assert "names" not in Pipeline.load(tmp_path / "refit").model_info_["metadata"]


def head_synsets(name: str) -> set[str]:
    """The WordNet senses of a shown name's head ("mammal (cat)" -> mammal, "dog 2" -> dog)."""
    from mediacluster.naming import wordnet as wn

    head = name.split(" (")[0]
    if head.rsplit(" ", 1)[-1].isdigit():
        head = head.rsplit(" ", 1)[0]
    return set(wn.synsets_for(head))


def inverted_pairs(run, pipe, down_to: int) -> tuple[list[str], int]:
    """(child, parent) pairs down to level ``down_to`` whose child's name is a strict WordNet
    hypernym of its parent's (the parent = the next coarser level's cluster holding its items),
    in level_names.json as the cluster job wrote it; and how many pairs there are."""
    from mediacluster.naming import wordnet as wn

    by_level = run.read_level_names()
    levels = np.asarray(run.read_hierarchy()["levels"])
    keep = pipe.labels_ >= 0
    inverted, pairs = [], 0
    for k in range(1, down_to + 1):
        names = {e["cluster"]: e["name"] for e in by_level[k]}
        parents = {e["cluster"]: e["name"] for e in by_level[k - 1]}
        for c, nm in names.items():
            p = np.bincount(levels[k - 1][keep & (levels[k] == c)]).argmax()
            child, parent = head_synsets(nm), head_synsets(parents[int(p)])
            pairs += 1
            if child.isdisjoint(parent) and any(s in wn.hypernym_closure(q) for s in child for q in parent):
                inverted.append(f"level {k} #{c} {nm!r} under {parents[int(p)]!r}")
    return inverted, pairs


def test_no_child_is_named_more_generally_than_its_parent(cifar3_embeddings, tmp_path, one_blas_thread):
    """Browsing down the levels to the level in use a name only gets more specific: no
    cluster's name there or above is a strict WordNet hypernym of its parent's. A fit answering
    at its finest level nests every level: before names nested, this slice had 10 such pairs
    (e.g. 'vehicle (moving van)' under 'motor vehicle')."""
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    pipe.set_level(len(pipe.levels_) - 1)
    publish_run(tmp_path / "run", cifar3_embeddings, pipe)
    inverted, pairs = inverted_pairs(RunDir.open(tmp_path / "run"), pipe, int(pipe.level_))
    assert pairs > 10 and inverted == []


def test_the_level_in_use_keeps_its_own_names(named_run):
    """Nesting stops at the level in use: its names are those it has named by itself (nesting
    all the way down made Imagenette's automatic level far less specific, "tench" -> "animal"),
    and no level above it is named more generally than its parent."""
    from mediacluster.naming.names import name_clusters

    run, pipe, emb = named_run["run"], named_run["pipe"], named_run["emb"]
    inverted, _ = inverted_pairs(run, pipe, int(pipe.level_))
    assert inverted == []
    levels = np.asarray(run.read_hierarchy()["levels"])
    alone = name_clusters(emb.vectors, np.where(pipe.labels_ >= 0, levels[int(pipe.level_)], -1),
                          imagenet_probs=emb.extras["imagenet_probs"])
    by_level = run.read_level_names()
    assert {e["cluster"]: e["name"] for e in alone} == {e["cluster"]: e["name"] for e in by_level[int(pipe.level_)]}


def test_composite_names_leave_the_clear_names_as_they_were(named_run, monkeypatch):
    """A real slice named through ``name_levels``: the clusters no concept covers most of are
    named by their parts (or keep their concept where they have fewer than two), every other
    cluster keeps the concept it had without composite names, the level in use included, and
    names stay distinct on every level."""
    from mediacluster.naming import imagenet

    pipe, emb = named_run["pipe"], named_run["emb"]
    args = dict(clustered=pipe.labels_ >= 0, imagenet_probs=emb.extras["imagenet_probs"], level=int(pipe.level_))
    now = name_levels(emb.vectors, pipe.levels_, **args)
    monkeypatch.setattr(imagenet, "MAX_PARTS", 0)
    before = name_levels(emb.vectors, pipe.levels_, **args)
    composites = 0
    for k in now:
        assert len({e["name"] for e in now[k]}) == len(now[k])
        for a, b in zip(now[k], before[k]):
            c0 = a["candidates"][0]
            if c0.get("composite"):
                composites += 1
                assert all(p["name"] in a["name"] for p in c0["parts"]) and b["candidates"][0]["name"] in a["alternatives"]
                # no concept covered half of it (covers are reported rounded to 4 places, so a
                # best cover just under MIN_COVER reads MIN_COVER: it flipped on perturbed vectors)
                assert max(x.get("cover", 0) for x in b["candidates"]) <= imagenet.MIN_COVER
            else:
                assert c0["name"] == b["candidates"][0]["name"], (k, a["name"], b["name"])
    use = int(pipe.level_)
    clear = [(a["name"], b["name"]) for a, b in zip(now[use], before[use]) if not a["candidates"][0].get("composite")]
    assert clear and all(x == y for x, y in clear)
    assert composites > 0  # this slice has mixed clusters
    # and the cluster job wrote them (the service's path and /v1/clusters carry these names:
    # test_the_service_names_every_level_of_the_path_and_of_clusters)
    assert any(imagenet.PART_SEP in e["name"] for v in named_run["run"].read_level_names().values() for e in v)
