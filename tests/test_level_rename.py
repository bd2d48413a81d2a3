"""A person names every level of the hierarchy, not only the one in use (levelnames3):
``names.yaml``'s ``levels:`` section and the studio's level renames, read through the one
function ``naming.run_level_names`` by every consumer (the report's level switch,
``named_assignments``, the studio's groups and exports, the published model's path names).

A real run: 300 CIFAR-10 images (default encoder, ImageNet probabilities -> WordNet names),
``Pipeline(reducer=pca, clusterer=hierarchy)`` answering at a level with coarser ones above,
published by the cluster job's own writer with a saved model; the studio in its own process
over real HTTP.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from studio_helpers import Server, client, copy_run, post, publish, start_service, wait_written

from mediacluster.errors import ConfigError
from mediacluster.naming import (
    level_names,
    level_names_sure,
    load_names,
    named_assignments,
    run_level_names,
)
from mediacluster.pipeline import Pipeline
from mediacluster.rundir import RunDir


@pytest.fixture(scope="module")
def tree_run(cifar3_embeddings, tmp_path_factory, one_blas_thread):
    """A run of the hierarchy answering at a level with at least two coarser ones."""
    from test_levels import pca_tree

    from mediacluster.report.build import map_2d
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    counts = pipe.n_clusters_per_level_.tolist()
    level = next(lv for lv, k in enumerate(counts) if lv >= 2 and k >= 6)
    pipe.set_level(level)
    run = publish_run(tmp_path_factory.mktemp("lvrename") / "run", cifar3_embeddings, pipe, save_model=True)
    with run.writing("test"):
        map_2d(run, cifar3_embeddings.vectors, method="pca")
    return run.path


def _ids(run: RunDir, key: int) -> list[int]:
    lab = run.read_levels().labels[list(run.read_levels().index).index(key)]
    return sorted(set(lab[lab >= 0].tolist()))


def test_names_yaml_names_every_level_by_the_one_rule(tree_run, tmp_path):
    run = RunDir.open(copy_run(tree_run, tmp_path / "run"))
    auto = run_level_names(run)
    at = run.read_levels().index[run.read_levels().level]
    c0, c1 = _ids(run, 0)[0], _ids(run, 1)[-1]
    fitted = sorted(load_names(run))
    (run.path / "names.yaml").write_text(
        f"{fitted[0]}: my cluster\n"
        f"levels:\n  0:\n    {c0}: memes\n  level_1:\n    {c1}: food\n    {_ids(run, 1)[0]}:\n", encoding="utf-8")
    named = run_level_names(run)
    assert named[0][c0] == "memes" and named[1][c1] == "food"
    assert named[1][_ids(run, 1)[0]] == auto[1][_ids(run, 1)[0]]  # an empty entry keeps the automatic name
    # the level in use takes the flat mapping too; the flat names stay as before (old files work)
    assert named[at][fitted[0]] == "my cluster" == load_names(run)[fitted[0]]
    assert {k: v for k, v in named[2].items()} == {**auto[2], **({fitted[0]: "my cluster"} if at == 2 else {})}
    # the same names in the researcher's table (named_assignments) and the report's level switch
    a = named_assignments(run)
    assert set(a.loc[a["level_0"] == c0, "level_0_name"]) == {"memes"}
    assert set(a.loc[a["level_1"] == c1, "level_1_name"]) == {"food"}
    # a levels: entry of the level in use names its clusters as the flat mapping does
    (run.path / "names.yaml").write_text(f"levels:\n  {at}:\n    {fitted[1]}: by level\n", encoding="utf-8")
    assert load_names(run)[fitted[1]] == "by level" == run_level_names(run)[at][fitted[1]]


@pytest.mark.parametrize("text, match", [
    ("levels:\n  x:\n    0: a\n", r"names.yaml: levels: 'x' is not a level key"),
    ("levels:\n  99:\n    0: a\n", r"names.yaml: levels: 99 is not a level of this run \(levels: 0, "),
    ("levels:\n  0:\n    999: a\n", r"names.yaml: levels: 0: 999 is not a cluster of level 0 \(clusters: 0, "),
    ("levels:\n  0:\n    abc: a\n", r"names.yaml: levels: 0: cluster id 'abc' is not an integer"),
    ("levels:\n  0: [1, 2]\n", r"names.yaml: levels: 0: expected a mapping 'cluster id: name', got list"),
    ("levels: food\n", r"names.yaml: 'levels' must be a mapping"),
    ("levels:\n  0:\n    0: a\n  level_0:\n    1: b\n", r"names.yaml: levels: level 0 is given twice"),
    ("levels:\n  0:\n    0: [a]\n", r"names.yaml: levels: 0: the name of cluster 0 must be plain text"),
])
def test_a_bad_levels_entry_is_refused_naming_the_file_and_entry(tree_run, tmp_path, text, match):
    run = RunDir.open(copy_run(tree_run, tmp_path / "run"))
    (run.path / "names.yaml").write_text(text, encoding="utf-8")
    for read in (run_level_names, load_names):
        with pytest.raises(ConfigError, match=match):
            read(run)


def test_a_name_given_twice_for_the_level_in_use_is_refused(tree_run, tmp_path):
    run = RunDir.open(copy_run(tree_run, tmp_path / "run"))
    at = run.read_levels().index[run.read_levels().level]
    c = sorted(load_names(run))[0]
    (run.path / "names.yaml").write_text(f"{c}: one\nlevels:\n  {at}:\n    {c}: two\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"cluster {c} is named 'one' and, under levels: {at} .*'two'"):
        load_names(run)


def test_the_cluster_jobs_model_answers_with_the_hand_given_level_names(tree_run, tmp_path):
    """``assign`` and the service name a path through ``naming.level_names``: a model the cluster
    job saved takes the run's names.yaml levels (its levels are the run's)."""
    run = RunDir.open(copy_run(tree_run, tmp_path / "run"))
    c0 = _ids(run, 0)[0]
    (run.path / "names.yaml").write_text(f"levels:\n  0:\n    {c0}: memes\n", encoding="utf-8")
    model = Pipeline.load(run.path)
    by_level = level_names(model)
    assert by_level[0][c0] == "memes"
    assert level_names_sure(model, by_level)[0][c0]["name_sure"] is True  # a person's name


def test_a_studio_rename_of_a_coarse_group_reaches_exports_and_the_served_path(tree_run, tmp_path):
    """Over real HTTP: a level rename of a coarse group is an edit (undo / redo), seen by another
    client, written to curated.json, in the CSV / Parquet exports' level columns and in the
    published model's path names the service answers with."""
    import httpx

    run = copy_run(tree_run, tmp_path / "run")
    s = Server(run)
    try:
        with client(s) as c, client(s) as other:
            shown = c.get("/api/clusters").json()
            level = next(iter(shown["group_clusters"]))  # the coarsest level the curated tree keeps
            group, cid = next((g, k) for g, k in shown["group_clusters"][level].items() if k >= 0)
            before = shown["group_names"][level][group]
            r = post(c, "/api/edits", {"kind": "level_rename", "level": level, "cluster": cid, "name": "memes"})
            assert r.status_code == 200, r.text
            assert r.json()["edit"] == {"level": 0, "cluster": cid, "name": "memes"}
            assert other.get("/api/clusters").json()["group_names"][level][group] == "memes"
            assert post(c, "/api/undo").status_code == 200
            assert c.get("/api/clusters").json()["group_names"][level][group] == before
            assert post(c, "/api/redo").status_code == 200
            assert other.get("/api/clusters").json()["group_names"][level][group] == "memes"
            # refused: the level in use (its clusters are the curated ones), a cluster the level has not
            info = c.get("/api/info").json()
            bad = post(c, "/api/edits", {"kind": "level_rename", "level": level, "cluster": 10**6, "name": "x"})
            assert bad.status_code == 400 and f"{level} has no cluster {10**6}" in bad.text
            in_use = info["levels"][RunDir.open(run).read_levels().level]["name"]
            bad = post(c, "/api/edits", {"kind": "level_rename", "level": in_use, "cluster": 0, "name": "x"})
            assert bad.status_code == 400 and "is the level in use" in bad.text
            bad = post(c, "/api/edits", {"kind": "level_rename", "level": "nope", "cluster": 0, "name": "x"})
            assert bad.status_code == 400 and "no level 'nope'" in bad.text
            # exports: one id + one name column per level the tree keeps, coarse to fine, then the curated
            exported = {}
            for kind in ("csv", "parquet", "classes"):
                r = post(c, "/api/export", {"kind": kind})
                assert r.status_code == 200, r.text
                exported[kind] = r.json()["path"]
            publish(c)
            wait_written(c)
    finally:
        s.stop()
    rd = RunDir.open(run)
    assert rd.read_curated()["level_names"] == {"0": {str(cid): "memes"}}
    assert run_level_names(rd)[0][cid] == "memes"  # the one function reads the studio's layer
    lab0 = rd.read_levels().labels[0]
    man = pd.read_csv(f"{exported.pop('classes')}/manifest.csv")  # the class tree's manifest: the same columns
    assert list(man.columns[:3]) == ["id", "path", "label"] and "level_0_name" in man.columns
    assert set(man.loc[man["level_0"] == cid, "level_0_name"]) == {"memes"}
    for kind, folder in exported.items():
        path = f"{folder}/curated_assignments.{kind}"
        df = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
        cols = list(df.columns)
        levels = [k for k in cols if re.fullmatch(r"level_\d+", k)]
        assert levels and levels == sorted(levels, key=lambda k: int(k[6:]))
        assert cols[cols.index("path") + 1: cols.index("curated_cluster")] == [
            x for k in levels for x in (k, f"{k}_name")]
        # the run's own level ids (stable across edits): nothing edited moved items, so the run's level 0
        assert (df["level_0"].to_numpy() == lab0).all()
        assert set(df.loc[df["level_0"] == cid, "level_0_name"]) == {"memes"}
    # the published model: its path names the group so, sure (a person's name)
    model = Pipeline.load(run)
    meta = model.model_info_["metadata"]
    assert meta["curated"] and len(model.levels_) >= 2
    group_new = int(np.bincount(model.levels_[0][lab0 == cid]).argmax())  # the model renumbers the run's ids
    assert set(model.levels_[0][lab0 == cid].tolist()) == {group_new}
    assert level_names(model)[0][group_new] == "memes"  # not the run's names.yaml layer by the run's ids
    assert meta["names_by_level"]["0"][str(group_new)] == "memes"
    X = rd.read_vectors(mmap=False)
    rows = np.flatnonzero(lab0 == cid)[:5].tolist() + np.flatnonzero(lab0 != cid)[:5].tolist()
    proc, url = start_service(run)
    try:
        items = httpx.post(url + "/v1/assign", json={"vectors": X[rows].tolist()}, timeout=120).json()["items"]
    finally:
        proc.terminate()
        proc.wait(30)
    named = [it["path"][0] for it in items]
    assert [p["name"] == "memes" for p in named] == [p["cluster"] == group_new for p in named]
    assert sum(p["name"] == "memes" for p in named) >= 4
    assert all(p["name_sure"] for p in named if p["name"] == "memes")


def test_the_names_template_lists_the_coarser_levels(tree_run, tmp_path):
    """``report --names-template``'s file lists every coarser level's clusters with their automatic
    names; left as written it names nothing; a name typed in it is the level's name."""
    from mediacluster.naming import save_names_template

    run = RunDir.open(copy_run(tree_run, tmp_path / "run"))
    before = run_level_names(run)
    p = save_names_template(run)
    text = p.read_text(encoding="utf-8")
    at = run.read_levels().index[run.read_levels().level]
    assert "\nlevels:\n  0:\n" in text and f"\n  {at}:\n" not in text
    assert run_level_names(run) == before and load_names(run) == load_names(run, curated=False)
    c0 = _ids(run, 0)[0]
    p.write_text(re.sub(rf"(\n  0:\n(?:    .*\n)*?    {c0}:)[^\n]*", r"\1 memes", text), encoding="utf-8")
    assert run_level_names(run)[0][c0] == "memes"


def test_levels_are_paired_by_the_groups_they_hold():
    """A re-cluster with one level more on top, its groups numbered otherwise: each previous
    level is paired with the new level that holds its groups (not the one at its index)."""
    from mediacluster.studio.matching import pair_levels

    rng = np.random.default_rng(0)
    fine = rng.integers(0, 8, 400)
    old = [fine // 2, fine]  # 4 groups over 8
    new = [fine // 4, 3 - fine // 2, rng.permutation(8)[fine]]  # 2 groups over those, renumbered
    pairs = pair_levels(old, new)
    assert {i: j for i, (j, _) in pairs.items()} == {0: 1, 1: 2}
    assert [share for _, share in pairs.values()] == [1.0, 1.0]
    assert pair_levels([fine], [rng.integers(0, 2, 400) - 3]) == {}  # nothing held: no pair


def test_a_level_name_not_carried_says_why():
    """The reason listed for a group split, merged or gone in the paired level (the flat
    carry's records of it, ``match_clusters``)."""
    from mediacluster.studio.matching import level_name_reason, match_clusters

    old = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    new = np.array([0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2, -1])  # 0 split in two, 1 merged into 2 (still 2's match)
    previous, _, carried = match_clusters(old, new, [0, 1, 2, 3], {0: 2, 1: 2, 2: 7})
    rec = {r["cluster"]: r for r in previous}
    assert carried == {2: 2} and [rec[c]["status"] for c in range(4)] == ["split", "merged", "merged", "gone"]
    assert level_name_reason(rec[0], 1, 2, 0.5).startswith(
        "no clear match in the new run's level_2 (the level that continues level_1: 50% of the shared items")
    assert "split there (into groups 0, 1); name it again there" in level_name_reason(rec[0], 1, 2, 0.5)
    assert "merged there into group 2, with previous group 2;" in level_name_reason(rec[1], 1, 2, 0.5)
    assert "none of its items is in the new run" in level_name_reason(rec[3], 1, 2, 0.5)


def test_a_carry_carries_the_level_names_to_the_groups_that_continue_them(tree_run, cifar3_embeddings,
                                                                        tmp_path, capsys):
    """``studio NEW --carry-from OLD --publish``: the names a person gave the previous run's
    levels (studio level renames, ``names.yaml`` ``levels:``) go to the new run's groups that
    continue them (each the mutual majority of its group over the shared items, checked here
    on the items), as the person's names: the curated state, the run's level names, the studio's
    groups, its export, the published model (sure); a group whose items all left the collection
    is listed with why, in carry.json, the CLI's output and the studio's notice. Carrying again:
    a group renamed in the new run keeps its name there, listed; another renamed since arrives."""
    from test_levels import pca_tree

    from mediacluster.cli import main
    from mediacluster.naming import hand_level_names
    from mediacluster.studio.carry import carry_curation
    from mediacluster.studio.session import Studio
    from mediacluster.workflow import publish_run

    old = copy_run(tree_run, tmp_path / "old")
    ro = RunDir.open(old)
    lo = ro.read_levels()
    lab = dict(zip(lo.index, lo.labels))
    small = lo.index[lo.level] - 1  # a coarse level (the level in use is at least level 2)
    tiny = int(np.bincount(lab[small][lab[small] >= 0]).argmin())
    big = int(np.bincount(lab[1][lab[1] >= 0]).argmax())
    (old / "names.yaml").write_text(f"levels:\n  1:\n    {big}: selfies\n", encoding="utf-8")
    st = Studio(old, warm=False, lazy_map=True)
    try:
        for level, cid, name in ((0, 0, "memes"), (0, 1, "food"), (small, tiny, "tiny")):
            st.edit("level_rename", {"level": level, "cluster": cid, "name": name})
    finally:
        st.close()
    # the collection without the tiny group's items, clustered again
    sub = cifar3_embeddings.subset(np.flatnonzero(lab[small] != tiny))
    pipe = pca_tree().fit(sub.vectors)
    pipe.set_level(next(lv for lv, k in enumerate(pipe.n_clusters_per_level_) if lv >= 2 and k >= 6))
    new = publish_run(tmp_path / "new", sub, pipe).path
    assert main(["studio", str(new), "--carry-from", str(old), "--publish"]) == 0
    out = capsys.readouterr().out
    rn = RunDir.open(new)
    summary = rn.read_carry()
    log = rn.edits()
    try:
        events = [e.payload for e in log.events() if e.kind == "level_rename"]
    finally:
        log.close()
    n = len(events)
    assert summary["carried"]["level_names"] == n and f"{n} level names" in out, out
    assert {p["name"] for p in events} == {"memes", "food", "selfies"}, events
    # each lands on the group that continues it: the mutual majority over the shared items
    ln = rn.read_levels()
    labn = dict(zip(ln.index, ln.labels))
    row_new = {i: r for r, i in enumerate(rn.read_assignments()["id"])}
    ids_old = ro.read_assignments()["id"].tolist()
    so = [r for r, i in enumerate(ids_old) if i in row_new]
    sn = [row_new[ids_old[r]] for r in so]
    where = {}
    for p in events:
        a = lab[p["previous_level"]][so] == p["previous_cluster"]
        b = labn[p["level"]][sn] == p["cluster"]
        assert 2 * (a & b).sum() > a.sum() and 2 * (a & b).sum() > b.sum(), p
        assert p["carried_from"] == ro.run_id
        where[p["name"]] = (p["level"], p["cluster"])
    listed = [r for r in summary["not_carried"] if r["what"] == "level_names"]
    assert [(r["name"], r["level"], r["previous_cluster"]) for r in listed] == [("tiny", small, tiny)], listed
    assert "none of its items is in the new run" in listed[0]["reason"]
    assert f"not carried: level_names 'tiny' of level_{small} (group {tiny})" in out
    # the person's names (sure by hand) wherever a level is named: the run's names, the model
    for name, (k, c) in where.items():
        assert run_level_names(rn)[k][c] == name == hand_level_names(rn)[k][c]
    meta = Pipeline.load(new).model_info_["metadata"]
    assert meta["curated"]
    memes = [v for lv in meta["names_support_by_level"].values() for v in lv.values() if v["name"] == "memes"]
    assert memes and all(v["name_sure"] for v in memes)
    k0, food = where["food"]
    s = Server(new)
    try:
        with client(s) as c:
            shown = c.get("/api/clusters").json()
            notice = shown["carry_notice"]
            assert f"{n} level names" in notice["text"] and "1 not carried (1 level name)" in notice["text"]
            assert [r["name"] for r in notice["level_names"]] == ["tiny"]
            assert "memes" in shown["group_names"][f"level_{where['memes'][0]}"].values()
            r = post(c, "/api/edits", {"kind": "level_rename", "level": f"level_{k0}", "cluster": food,
                                       "name": "food here"})
            assert r.status_code == 200, r.text
            r = post(c, "/api/export", {"kind": "csv"})
            assert r.status_code == 200, r.text
            wait_written(c)
    finally:
        s.stop()
    df = pd.read_csv(f"{r.json()['path']}/curated_assignments.csv")
    k, c = where["memes"]
    assert set(df.loc[df[f"level_{k}"] == c, f"level_{k}_name"]) == {"memes"}
    # carrying again: the previous run's renames since; the new run's own rename wins
    st = Studio(old, warm=False, lazy_map=True)
    try:
        st.edit("level_rename", {"level": 0, "cluster": 0, "name": "memes v2"})
        st.edit("level_rename", {"level": 0, "cluster": 1, "name": "food v2"})
    finally:
        st.close()
    again = carry_curation(old, new)
    assert again["carried"]["level_names"] == 1, again
    kept = [r for r in again["not_carried"] if r["what"] == "level_names"]
    assert [r["name"] for r in kept] == ["food v2"] and "this run's own edit wins" in kept[0]["reason"]
    named = run_level_names(rn)
    assert named[k][c] == "memes v2" and named[k0][food] == "food here"
    # the person here and the previous run give a group the same name: nothing written or listed
    # (it was listed as "this run's own edit wins" though the two agreed)
    st = Studio(new, warm=False, lazy_map=True)
    try:
        st.edit("level_rename", {"level": k, "cluster": c, "name": "memes v3"})
    finally:
        st.close()
    st = Studio(old, warm=False, lazy_map=True)
    try:
        st.edit("level_rename", {"level": 0, "cluster": 0, "name": "memes v3"})
    finally:
        st.close()
    n = len(RunDir.open(new).edits().events())
    again = carry_curation(old, new)
    assert not any(again["carried"].values()) and again["not_carried"] == [], again["not_carried"]
    assert [e.kind for e in RunDir.open(new).edits().events()[n:]] == ["carry"]


def test_a_tree_split_names_its_parts_with_the_finer_levels_hand_names(tree_run, tmp_path):
    """A split along the hierarchy named its parts with the finer level's stored automatic names
    even where ``names.yaml``'s ``levels:`` section named those clusters: the preview (and the
    split it makes) now shows the person's names, sure by hand, like the report and exports."""
    from mediacluster.naming.support import BY_HAND
    from mediacluster.studio.session import Studio

    run = RunDir.open(copy_run(tree_run, tmp_path / "run"))
    lv = run.read_levels()
    at = list(lv.index).index(lv.index[lv.level])
    st = Studio(run)
    try:
        found = None
        for cid in sorted(set(lv.labels[at][lv.labels[at] >= 0].tolist())):
            pv = st.split_preview(int(cid))
            if pv["space"] != "tree":
                continue
            k = int(pv["level"].rsplit("_", 1)[1])
            pos = list(lv.index).index(k)
            members = np.flatnonzero(lv.labels[at] == cid)
            kids = np.unique(lv.labels[pos][members])
            if len(kids) == pv["k"] and (kids >= 0).all():  # the parts are exactly the children
                found = cid, k, pos, members, kids
                break
    finally:
        st.close()
    assert found is not None, "no cluster splits into exactly its children"
    cid, k, pos, members, kids = found
    (run.path / "names.yaml").write_text(f"levels:\n  {k}:\n    {int(kids[0])}: first by hand\n", encoding="utf-8")
    st = Studio(RunDir.open(run.path))
    try:
        pv = st.split_preview(int(cid))
        part_of = dict(zip(pv["labels"]["items"], pv["labels"]["parts"]))
        p = part_of[int(members[lv.labels[pos][members] == kids[0]][0])]
        assert pv["parts"][p]["name"] == "first by hand"
        assert pv["parts"][p]["name_sure"] is True and pv["parts"][p]["name_why"] == BY_HAND
        auto = run.read_level_names()[k]
        other = next(q for q in pv["parts"] if q["part"] != p)
        assert other["name"] in {e["name"] for e in auto}  # the rest keep the stored names
    finally:
        st.close()


def test_naming_a_group_the_name_it_has_records_nothing(tree_run, tmp_path):
    """A level rename to the name a person already gave that group recorded a no-op edit (the
    undo history, a carry); now the answer says ``unchanged`` and the log holds one edit."""
    from mediacluster.studio.session import Studio

    run = copy_run(tree_run, tmp_path / "run")
    st = Studio(run, warm=False, lazy_map=True)
    try:
        first = st.edit("level_rename", {"level": 0, "cluster": 0, "name": "memes"})
        again = st.edit("level_rename", {"level": 0, "cluster": 0, "name": "memes"})
        assert again["unchanged"] and again["seq"] == first["seq"]
        assert [e.kind for e in st.log.events()] == ["level_rename"]
    finally:
        st.close()
