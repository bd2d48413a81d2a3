"""How sure a name is, where a name travels past the run folder: the saved model's metadata, the
service's ``/v1/clusters`` and answers (real HTTP), ``assign``'s table, and the studio (merge,
rename, publish; real HTTP). A person's name is sure, an automatic one as the run measured it,
a name nobody measured (an older model, a cluster the studio changed) null."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest
from studio_helpers import (
    Server,
    client,
    copy_run,
    post,
    publish,
    start_service,
    studio_in_chromium,
)

from mediacluster.naming import support
from mediacluster.naming.support import ImagenetSupport
from mediacluster.rundir import RunDir


@pytest.fixture(scope="module")
def tree_run(cifar3_embeddings, tmp_path_factory):
    """A run of the hierarchy (PCA + the engine's tree) answering at a level with coarser ones
    (the level names measured as the cluster job measures them), with a saved model and a map."""
    from test_levels import pca_tree

    from mediacluster.report.build import map_2d
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    counts = pipe.n_clusters_per_level_.tolist()
    pipe.set_level(next(lv for lv, k in enumerate(counts) if lv >= 2 and k >= 6))
    run = publish_run(tmp_path_factory.mktemp("sure") / "run", cifar3_embeddings, pipe, save_model=True)
    with run.writing("test"):
        map_2d(run, cifar3_embeddings.vectors, method="pca")
    return run.path


def _measured(run) -> tuple[dict[int, dict], dict[int, dict[int, dict]]]:
    rd = RunDir.open(run)
    named = {int(e["cluster"]): e for e in rd.read_automatic_names()}
    levels = {int(lv): {int(e["cluster"]): e for e in v} for lv, v in rd.read_level_names().items()}
    return named, levels


def test_the_model_the_service_and_assign_carry_how_sure_each_name_is(tree_run, tmp_path, capsys):
    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline

    run = copy_run(tree_run, tmp_path / "run")
    named, levels = _measured(run)
    assert named and all("name_sure" in e for e in named.values())
    model = Pipeline.load(run)
    meta = model.model_info_["metadata"]
    # the saved model: each measured name with its support, at the level in use and every level
    assert {int(k): (v["name"], v["name_sure"], v["name_support"]) for k, v in meta["names_support"].items()} == \
        {c: (e["name"], e["name_sure"], e["name_support"]) for c, e in named.items()}
    assert set(meta["names_support_by_level"]) == {str(lv) for lv in levels}
    # a person names one cluster (names.yaml): that name is sure, whatever the automatic one was
    mine = min(named, key=lambda c: (named[c]["name_sure"], c))
    (run / "names.yaml").write_text(f"{mine}: my planes\n", encoding="utf-8")
    want = {c: (True if c == mine else e["name_sure"]) for c, e in named.items()}
    X = RunDir.open(run).read_vectors(mmap=False)
    proc, url = start_service(run)
    try:
        cl = httpx.get(url + "/v1/clusters", timeout=60).json()
        got = {c["id"]: c for c in cl["clusters"]}
        assert {c: got[c]["name_sure"] for c in named} == want
        assert got[mine]["name"] == "my planes" and got[mine]["name_why"] == support.BY_HAND
        assert got[mine]["name_support"] is None
        other = next(c for c in named if c != mine)
        assert got[other]["name_support"] == named[other]["name_support"]
        assert got[other]["name_why"] == named[other]["name_why"]
        # every level's clusters, as the run measured that level's names
        checked = 0
        for lv in cl["levels"]:
            for c in lv["clusters"]:
                rec = levels[lv["level"]].get(c["id"])
                if lv["chosen"]:
                    assert c["name_sure"] == want[c["id"]]
                elif rec is not None and rec.get("name") == c["name"]:
                    assert (c["name_sure"], c["name_support"]) == (rec["name_sure"], rec["name_support"])
                    checked += 1
        assert checked > len(named)  # the coarse and finer levels' names were measured and carried
        # the answers: a name_sure next to each name (and each level's name on the path)
        items = httpx.post(url + "/v1/assign", json={"vectors": X[::15].tolist()}, timeout=120).json()["items"]
        assert items and all(it["name_sure"] == want.get(it["cluster"]) for it in items)
        assert all(it["assigned_name_sure"] == want.get(it["assigned_cluster"]) for it in items)
        for it in items:
            for p in it["path"]:
                rec = levels[p["level"]].get(p["cluster"])
                if p["level"] != model.level_ and rec is not None and rec.get("name") == p["name"]:
                    assert p["name_sure"] == rec["name_sure"]
        doc = httpx.get(url + "/openapi.json", timeout=60).json()["components"]["schemas"]
        assert "name_sure" in doc["Assigned"]["properties"] and "name_support" in doc["ClusterInfo"]["properties"]
    finally:
        proc.terminate()
        proc.wait(30)
    # assign's table: a name_sure column, as the service answers
    np.save(tmp_path / "v.npy", X[::15])
    out = tmp_path / "a.csv"
    assert main(["assign", str(run), str(tmp_path / "v.npy"), "--out", str(out), "--quiet"]) == 0
    df = pd.read_csv(out)
    assert df["name_sure"].tolist() == [want[c] for c in df["cluster"]]
    assert df["assigned_name_sure"].tolist() == [want[c] for c in df["assigned_cluster"]]
    # the printed table marks an unsure name with a "?", a sure one without
    assert False in want.values() and True in want.values()
    capsys.readouterr()
    assert main(["assign", str(run), str(tmp_path / "v.npy"), "--quiet"]) == 0
    rows = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()[1:]]
    assert len(rows) == len(df)
    assert [r[6] for r in rows] == [n + ("?" if want[c] is False else "")
                                    for n, c in zip(df["assigned_name"], df["assigned_cluster"])]


def test_an_older_model_answers_null_not_an_error(tree_run, tmp_path, capsys):
    """A model saved before names carried their support: every name_sure is null (empty in
    assign's table, null on /v1/clusters' table), and switching levels still works."""
    from mediacluster.cli import main
    from mediacluster.naming import (
        level_names,
        level_names_sure,
        pipeline_names,
        pipeline_names_sure,
    )
    from mediacluster.pipeline import Pipeline
    from mediacluster.serve.model import cluster_table, level_table

    run = copy_run(tree_run, tmp_path / "run")
    folder = next((run / "models").glob("v0*"))
    doc = json.loads((folder / "model.json").read_text())
    for k in ("names_support", "names_support_by_level"):
        doc["metadata"].pop(k)
    (folder / "model.json").write_text(json.dumps(doc))
    model = Pipeline.load(run)
    names = pipeline_names(model)
    assert names and set(pipeline_names_sure(model, names)) == set(names)
    assert all(v == support.NOT_MEASURED for v in pipeline_names_sure(model, names).values())
    sure_by = level_names_sure(model, level_names(model, names))
    assert all(c["name_sure"] is None and c["name_support"] is None for c in cluster_table(model, names, {}))
    assert all(c["name_sure"] is None for lv in level_table(model, names, level_names(model, names),
                                                            pipeline_names_sure(model, names), sure_by)
               for c in lv["clusters"])
    model.set_level(0)  # switches the names; no support to switch
    assert all(v["name_sure"] is None for v in pipeline_names_sure(model).values())
    X = RunDir.open(run).read_vectors(mmap=False)
    np.save(tmp_path / "v.npy", X[:10])
    out = tmp_path / "a.csv"
    assert main(["assign", str(run), str(tmp_path / "v.npy"), "--out", str(out), "--quiet"]) == 0
    df = pd.read_csv(out)
    assert df["name"].notna().all() and df["name_sure"].isna().all()
    # a model.json whose support is the wrong shape is refused, naming the field
    doc["metadata"]["names_support"] = {"0": {"name": "x", "name_sure": "yes"}}
    (folder / "model.json").write_text(json.dumps(doc))
    from mediacluster.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match=r"metadata\.names_support\.0"):
        Pipeline.load(run)


def test_the_studio_measures_a_merged_name_again_and_publishes_how_sure_names_are(tree_run, tmp_path):
    from mediacluster.naming import pipeline_names_sure
    from mediacluster.pipeline import Pipeline

    run = copy_run(tree_run, tmp_path / "run")
    named, levels = _measured(run)
    s = Server(run)
    try:
        with client(s) as c:
            rows = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
            assert all(rows[k]["name_sure"] == e["name_sure"] for k, e in named.items())
            a, b, d = sorted(named, key=lambda k: -rows[k]["size"])[:3]
            assert post(c, "/api/edits", {"kind": "merge", "clusters": [a, b]}).status_code == 200
            assert post(c, "/api/edits", {"kind": "rename", "cluster": d, "name": "my group"}).status_code == 200
            rows = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
            into = a if a in rows else b
            # the merged cluster keeps its automatic name; the support measured before the merge is
            # not its own: it is measured again on its items now, against the whole collection
            lab = np.frombuffer(c.get("/api/labels").content, dtype="<i4").astype(np.int64)
            again = ImagenetSupport(RunDir.open(run).read_extra("imagenet_probs")).of(
                {into: named[into]["candidates"]}, lab)[into]
            assert rows[into]["name"] == named[into]["name"]
            assert rows[into]["name_support"] == pytest.approx(again["name_support"], abs=1e-3)
            assert rows[into]["name_sure"] == again["name_sure"] and rows[into]["name_why"] == again["name_why"]
            assert rows[into]["name_support"] != named[into]["name_support"]
            detail = c.get(f"/api/clusters/{into}").json()  # the panel's view says the same
            assert {f: detail[f] for f in support.FIELDS} == {f: rows[into][f] for f in support.FIELDS}
            assert rows[d]["name_sure"] is True and rows[d]["name_why"] == support.BY_HAND
            untouched = [k for k in named if k not in (a, b, d)]
            assert all(rows[k]["name_sure"] == named[k]["name_sure"] for k in untouched)
            # undo the rename and the merge: the items are the fitted ones again, and so is the support
            assert all(post(c, "/api/undo").status_code == 200 for _ in range(2))
            rows = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
            assert all(rows[k]["name_sure"] == named[k]["name_sure"] for k in (a, b, d))
            assert all(post(c, "/api/redo").status_code == 200 for _ in range(2))
            # split previews: a split along the run's tree carries the finer level's measured
            # names; a fresh split's ImageNet names are measured against the whole collection,
            # as the run's are (a part of one kind among several kinds is set apart from them)
            big = max(untouched, key=lambda k: rows[k]["size"])
            tree = c.post("/api/split/preview", json={"cluster": big}, headers={"X-Mediacluster": "1"}).json()
            if tree["space"] == "tree":
                finer = next(lv for lv in levels.values() if any(
                    e["name"] == tree["parts"][0]["name"] for e in lv.values()))
                by_name = {e["name"]: e for e in finer.values()}
                for p in tree["parts"]:
                    if p["name"] in by_name:
                        assert p["name_sure"] == by_name[p["name"]]["name_sure"]
            fresh = post(c, "/api/split/preview", {"cluster": big, "k": 2, "reducer": "pca"}).json()
            assert fresh["space"] == "pca" and len(fresh["parts"]) == 2
            for p in fresh["parts"]:
                assert set(support.FIELDS) <= set(p)
                if p["name_sure"] is not None:
                    assert p["name_why"].startswith(("sure:", "unsure:")) and "whole collection" in p["name_why"]
            assert any(p["name_sure"] is not None for p in fresh["parts"])
            publish(c)
    finally:
        s.stop()
    model = Pipeline.load(run)
    meta = model.model_info_["metadata"]
    sup = {int(k): v for k, v in meta["names_support"].items()}
    assert sup[d] == {"name": "my group", "name_sure": True, "name_support": None, "name_why": support.BY_HAND}
    assert sup[into]["name_support"] == pytest.approx(again["name_support"], abs=1e-3)  # as re-measured
    assert all(sup[k]["name_sure"] == named[k]["name_sure"] for k in untouched)
    sure = pipeline_names_sure(model)
    assert sure[d]["name_sure"] is True and sure[into]["name_sure"] == again["name_sure"]
    # the curated model's coarse levels carry the run's measured names of the clusters they come from
    finest = len(model.levels_) - 1
    assert str(finest) in meta["names_support_by_level"]
    for lv, recs in meta["names_support_by_level"].items():
        for cid, rec in recs.items():
            assert meta["names_by_level"][lv][cid] == rec["name"]


@pytest.mark.slow
@pytest.mark.browser
def test_the_detail_panel_and_the_report_legend_mark_unsure_names_in_chromium(tree_run, tmp_path):
    """The studio's cluster panel says an unsure name is unsure (and why), also a merged
    cluster's re-measured one; the report's map legend marks the unsure names its cards mark."""
    from test_studio_browser import js, loaded, open_cluster, wait

    from mediacluster.cli import main

    run = copy_run(tree_run, tmp_path / "run")
    named, _ = _measured(run)
    unsure = sorted(c for c, e in named.items() if e["name_sure"] is False)
    sure = sorted(c for c, e in named.items() if e["name_sure"] is True)
    assert unsure and sure
    a, b = unsure[0], sure[0]
    with studio_in_chromium(run) as (s, drv):
        with client(s) as api:
            assert post(api, "/api/edits", {"kind": "merge", "clusters": [a, b]}).status_code == 200
            rows = {e["id"]: e for e in api.get("/api/clusters").json()["clusters"]}
            into = a if a in rows else b
            merged = rows[into]
            assert isinstance(merged["name_sure"], bool)  # re-measured on its items now
            # a split: its parts are marked in the list as their preview measured them
            cut = max((k for k in rows if k not in (a, b, *unsure[1:2], *sure[1:2])), key=lambda k: rows[k]["size"])
            pv = post(api, "/api/split/preview", {"cluster": cut, "k": 2, "reducer": "pca"}).json()
            parts = dict(zip(post(api, "/api/edits", {"kind": "split", "preview": pv["preview"]}).json()["edit"]["ids"],
                             pv["parts"]))
            assert any(isinstance(p["name_sure"], bool) for p in parts.values())
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        for cid, p in parts.items():
            marks = js(drv, f"return Array.from(document.querySelectorAll('#cluster-list li[data-cluster=\"{cid}\"] "
                            f".unsure-mark')).map(e => e.title)")
            assert marks == ([p["name_why"]] if p["name_sure"] is False else []), (cid, p, marks)
            assert drv.find_element("css selector", f'#cluster-list li[data-cluster="{cid}"] .cname').text == p["name"]
        for c in unsure[1:2]:
            open_cluster(drv, c)
            badge = drv.find_element("id", "name-unsure")
            assert badge.get_attribute("title") == named[c]["name_why"]
        for c in sure[1:2]:
            open_cluster(drv, c)
            assert not drv.find_elements("id", "name-unsure") and not drv.find_elements("id", "name-unmeasured")
        open_cluster(drv, into)
        assert not drv.find_elements("id", "name-unmeasured")
        if merged["name_sure"] is False:
            assert drv.find_element("id", "name-unsure").get_attribute("title") == merged["name_why"]
        else:
            assert not drv.find_elements("id", "name-unsure")
        s.stop()
        # the report of the run as fitted (the studio's state is not the report's: a fresh copy)
        rep = copy_run(tree_run, tmp_path / "rep")
        assert main(["report", str(rep), "--quiet"]) == 0
        drv.get((rep / "report" / "index.html").as_uri())
        wait(lambda: drv.find_elements("css selector", "#legend .item"), what="the legend")
        marked = js(drv, "return Array.from(document.querySelectorAll('#legend .item[data-name-sure=\"no\"]'))"
                         ".map(e => [Number(e.getAttribute('data-id')), e.querySelector('.unsure-mark').title])")
        assert sorted(map(tuple, marked)) == sorted((c, named[c]["name_why"]) for c in unsure)


def test_a_fresh_split_part_is_measured_as_the_run_measures_its_clusters(tree_run):
    """Splitter.measure on parts that are whole fitted clusters (two of them: a parent that is
    not the collection) gives the support the run measured for those clusters against the whole
    collection (the run's probabilities are stored as float16: equal to 0.01)."""
    from mediacluster.studio.split import Splitter

    rd = RunDir.open(tree_run)
    named, _ = _measured(tree_run)
    fitted = rd.read_assignments()["cluster"].to_numpy(np.int64)
    a, b = sorted(named, key=lambda c: -int((fitted == c).sum()))[:2]
    members = np.flatnonzero((fitted == a) | (fitted == b))
    parts = (fitted[members] == b).astype(np.int64)
    sp = Splitter(rd.read_vectors(mmap=False), fitted, [], {}, None, imagenet=rd.read_extra("imagenet_probs"))
    got = sp.measure(members, parts, {0: named[a], 1: named[b]})
    for p, c in ((0, a), (1, b)):
        assert got[p]["name_support"] == pytest.approx(named[c]["name_support"], abs=0.01)
        assert got[p]["name_sure"] == named[c]["name_sure"]


def test_without_the_probabilities_a_changed_cluster_is_not_measured(tree_run, tmp_path):
    """A run whose items' ImageNet probabilities are gone: the studio cannot measure a merged
    cluster's name again, so it says it is not measured (and why) rather than keep the old value."""
    from mediacluster.studio.session import Studio

    run = copy_run(tree_run, tmp_path / "run")
    named, _ = _measured(run)
    for p in run.glob("extra_imagenet_probs*"):
        p.unlink()
    st = Studio(run, warm=False)
    try:
        rows = {e["id"]: e for e in st.clusters()["clusters"]}
        a, b = sorted(named, key=lambda k: -rows[k]["size"])[:2]
        st.edit("merge", {"clusters": [a, b]})
        rows = {e["id"]: e for e in st.clusters()["clusters"]}
        into = a if a in rows else b
        assert {f: rows[into][f] for f in support.FIELDS} == {**support.NOT_MEASURED, "name_why": support.CHANGED}
        other = next(k for k in named if k not in (a, b))
        assert rows[other]["name_sure"] == named[other]["name_sure"]  # untouched: as the run measured it
    finally:
        st.close()


def _rows(c) -> dict[int, dict]:
    return {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}


def _same(row: dict, part: dict, abs_: float = 1e-9) -> None:
    """The cluster list's row says what the split preview said of the part's name."""
    assert row["name_sure"] == part["name_sure"], (row, part)
    if part["name_support"] is None:
        assert row["name_support"] is None, row
    else:
        assert row["name_support"] == pytest.approx(part["name_support"], abs=abs_), (row, part)


@pytest.mark.slow
def test_the_studio_list_measures_the_parts_a_split_made(tree_run, tmp_path):
    """Clusters an applied split made show in the cluster list (and the panel) how sure their
    names are, as the split preview measured them: a fresh split's ImageNet names measured on
    the part's items against the whole collection; a part whose name was typed at the split is
    the person's (sure, as any person's name; a name left as the preview showed it, or the
    fallback of a split by parts, stays automatic). After a merge into a part its name is measured again on its
    items now; the records come from the split event, so a restarted studio shows the same;
    a split along the run's tree shows the finer level's names as the preview did."""
    run = copy_run(tree_run, tmp_path / "run")
    named, _ = _measured(run)
    probs = RunDir.open(run).read_extra("imagenet_probs")
    s = Server(run)
    try:
        with client(s) as c:
            rows = _rows(c)
            big, other, small = sorted(named, key=lambda k: -rows[k]["size"])[:3]
            pv = post(c, "/api/split/preview", {"cluster": big, "k": 2, "reducer": "pca"}).json()
            parts = pv["parts"]
            assert all(isinstance(p["name_sure"], bool) for p in parts), parts  # both measured
            r = post(c, "/api/edits", {"kind": "split", "preview": pv["preview"],
                                       "names": [parts[0]["name"], "typed at the split"]})
            assert r.status_code == 200, r.text
            ids = r.json()["edit"]["ids"]
            rows = _rows(c)
            _same(rows[ids[0]], parts[0])
            assert rows[ids[0]]["name_why"] == parts[0]["name_why"] and rows[ids[0]]["named_by"] == "automatic"
            typed = rows[ids[1]]
            assert typed["name"] == "typed at the split" and typed["named_by"] == "person", typed
            assert typed["name_sure"] is True and typed["name_why"] == support.BY_HAND, typed
            for cid in ids:  # the panel says what the list says
                detail = c.get(f"/api/clusters/{cid}").json()
                assert {f: detail[f] for f in support.FIELDS} == {f: rows[cid][f] for f in support.FIELDS}
            # the split event keeps what part 0's name claims (none for the typed one)
            ev = [e for e in c.get("/api/edits").json()["events"] if e["kind"] == "split"][-1]
            concepts = ev["payload"]["concepts"]
            assert concepts[1] is None and concepts[0]["name"] == parts[0]["name"]
            # a merge into the part: its name measured again on the items it holds now
            assert post(c, "/api/edits", {"kind": "merge", "clusters": [ids[0], small],
                                          "into": ids[0]}).status_code == 200
            lab = np.frombuffer(c.get("/api/labels").content, dtype="<i4").astype(np.int64)
            want = ImagenetSupport(probs).of({ids[0]: concepts[0]["candidates"]}, lab)[ids[0]]
            merged = _rows(c)[ids[0]]
            assert merged["name"] == parts[0]["name"]
            assert merged["name_support"] == pytest.approx(want["name_support"], abs=1e-3)
            assert (merged["name_sure"], merged["name_why"]) == (want["name_sure"], want["name_why"])
            # a split along the run's tree: the parts as the preview showed them (the finer
            # level's records as the run measured them); once a part's items change, its name
            # is not measured (the run kept no concept for a finer level's name: null, and why)
            tree = post(c, "/api/split/preview", {"cluster": other}).json()
            r = post(c, "/api/edits", {"kind": "split", "preview": tree["preview"]})
            assert r.status_code == 200, r.text
            tids = r.json()["edit"]["ids"]
            rows = _rows(c)
            for p, cid in zip(tree["parts"], tids):
                _same(rows[cid], p)
            assert tree["space"] == "tree" and any(isinstance(p["name_sure"], bool) for p in tree["parts"])
            one = np.flatnonzero(lab == ids[1])[:1].tolist()
            assert post(c, "/api/edits", {"kind": "move", "items": one, "to": tids[0]}).status_code == 200
            moved = _rows(c)[tids[0]]
            assert moved["name_sure"] is None and moved["name_why"] == support.CHANGED, moved
            assert post(c, "/api/undo").status_code == 200
            _same(_rows(c)[tids[0]], tree["parts"][0])  # the split's items again: the preview's record
            # a split by given parts: a name given is the person's, a part left unnamed is not
            lab = np.frombuffer(c.get("/api/labels").content, dtype="<i4").astype(np.int64)
            members = np.flatnonzero(lab == tids[1]).tolist()
            r = post(c, "/api/edits", {"kind": "split", "cluster": tids[1], "items": members,
                                       "parts": [j % 2 for j in range(len(members))], "names": [None, "mine"]})
            assert r.status_code == 200, r.text
            gids = r.json()["edit"]["ids"]
            rows = _rows(c)
            assert (rows[gids[1]]["named_by"], rows[gids[1]]["name_sure"]) == ("person", True), rows[gids[1]]
            assert rows[gids[0]]["named_by"] == "automatic" and rows[gids[0]]["name_sure"] is None, rows[gids[0]]
            rows = _rows(c)
            before = {k: {f: e[f] for f in support.FIELDS} for k, e in rows.items()}
        s.stop()
        s = Server(run)  # the state replayed from the events: the same records
        with client(s) as c:
            assert {k: {f: e[f] for f in support.FIELDS} for k, e in _rows(c).items()} == before
    finally:
        s.stop()


@pytest.mark.slow
def test_clip_split_parts_are_measured_on_votes_against_the_whole_collection(cifar3_dir, tmp_path, monkeypatch):
    """A CLIP run's split preview measures its parts' zero-shot names as the cluster job measures
    a CLIP run's names (naming.support.zeroshot_support on votes): the share of the part whose
    best topic is the name against the whole collection's share, not the parent's; the list
    shows the same once the split is applied."""
    from test_encoders import make_tiny_clip

    from mediacluster.data import l2_normalize
    from mediacluster.embed import embed_collection_cached
    from mediacluster.encoders import get_encoder
    from mediacluster.ingest import collect
    from mediacluster.naming.support import zeroshot_support
    from mediacluster.naming.zeroshot import default_vocabulary, topic_vectors
    from mediacluster.pipeline import Pipeline
    from mediacluster.report.build import map_2d
    from mediacluster.workflow import publish_run

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = f"clip:{make_tiny_clip(tmp_path / 'clip')}"
    coll = collect(cifar3_dir)
    keep = list(range(0, len(coll.ids), 5))[:60]
    coll.ids, coll.paths = [coll.ids[i] for i in keep], [coll.paths[i] for i in keep]
    emb = embed_collection_cached(coll, spec, cache_dir=tmp_path / "cache", progress=False)
    pipe = Pipeline(outliers=None).with_params({"reducer": "pca", "reducer__n_components": 5,
                                                "clusterer": "kmeans", "clusterer__n_clusters": 2}).fit(emb.vectors)
    run = publish_run(tmp_path / "run", emb, pipe, encoder_spec=spec)
    with run.writing("t"):
        map_2d(run, emb.vectors, method="pca")
    vocab = default_vocabulary()
    best = (l2_normalize(emb.vectors) @ topic_vectors(get_encoder(spec), vocab).T).argmax(axis=1)
    s = Server(run.path)
    try:
        with client(s) as c:
            cid = max(_rows(c).values(), key=lambda e: e["size"])["id"]
            pv = post(c, "/api/split/preview", {"cluster": cid, "k": 2, "reducer": "pca"}).json()
            lab = np.full(len(best), -1)
            lab[pv["labels"]["items"]] = pv["labels"]["parts"]
            want = zeroshot_support(best, lab, {p["part"]: vocab.index(p["name"]) for p in pv["parts"]}, len(vocab))
            for p in pv["parts"]:
                assert isinstance(p["name_sure"], bool) and "best topic" in p["name_why"], p
                assert "whole collection" in p["name_why"]
                assert p["name_support"] == pytest.approx(want[p["part"]]["name_support"], abs=1e-3)
            r = post(c, "/api/edits", {"kind": "split", "preview": pv["preview"]})
            assert r.status_code == 200, r.text
            rows = _rows(c)
            for p, new in zip(pv["parts"], r.json()["edit"]["ids"]):
                _same(rows[new], p)
                assert rows[new]["name_why"] == p["name_why"]
    finally:
        s.stop()
