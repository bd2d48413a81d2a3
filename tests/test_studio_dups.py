"""Duplicates and splits where the curator works: the studio's duplicate-group list
(``GET /api/duplicates`` over real HTTP, and the page's view in real headless Chromium), the
export's ``prefer`` folders from the page, and the ``classes`` export keeping a collection's
``train/`` / ``test/`` splits, on a real small tree of CIFAR-10 images with planted copies
(``studio_helpers.split_run``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from studio_helpers import Server, client, copy_run, post, split_run, studio_in_chromium


@pytest.fixture(scope="module")
def split(cifar3_embeddings, tmp_path_factory):
    run, rows = split_run(cifar3_embeddings, tmp_path_factory.mktemp("split") / "run", meme=30)
    return run, rows


def planted(rows) -> dict[int, tuple[int, str]]:
    """copy row -> (original row, kind)."""
    return {c: (rows["originals"][c], kind) for kind in ("leak", "misfiled", "loose") for c in rows[kind]}


def test_duplicate_groups_over_http(split, tmp_path):
    run, rows = split
    run = copy_run(run, tmp_path / "run")  # edited here
    s = Server(run)
    try:
        with client(s) as c:
            r = c.get("/api/duplicates")
            assert r.status_code == 200, r.text
            d = r.json()
            assert d["has_duplicates"] and d["order"] == "size" and d["total"] >= 6
            sm = d["summary"]
            assert sm["copies"] == sm["items"] - sm["groups"] >= 6
            assert sm["across_folders"].get("test + train", 0) >= 3  # the three leaks
            assert sm["across_folders"].get(". + train", 0) >= 1  # a copy loose in the collection's folder
            # every planted copy is in its original's group, with its folder
            found = {}
            for off in range(0, d["total"], 7):  # paging: disjoint pages that cover every group
                page = c.get("/api/duplicates", params={"offset": off, "limit": 7}).json()
                assert page["total"] == d["total"] and len(page["groups"]) == min(7, d["total"] - off)
                for g in page["groups"]:
                    assert g["group"] not in found
                    found[g["group"]] = g
            assert len(found) == d["total"]
            member_of = {m["i"]: g for g in found.values() for m in g["members"]}
            for copy, (orig, kind) in planted(rows).items():
                g = member_of[copy]
                assert member_of[orig] is g
                folder = {m["i"]: m["folder"] for m in g["members"]}
                assert folder[orig] == "train"
                assert folder[copy] == {"leak": "test", "misfiled": "train", "loose": "."}[kind]
                assert g["across_folders"] == (kind != "misfiled")
                # the same bytes: the representative is kept, as the export keeps it
                assert g["kept_by"] == "representative" and g["kept"] in (orig, copy)
                fates = {m["i"]: m["fate"] for m in g["members"]}
                assert sorted(fates.values()) == ["copy", "kept"]
            # order: groups across folders first
            folders = c.get("/api/duplicates", params={"order": "folders", "limit": 200}).json()["groups"]
            flags = [g["across_folders"] for g in folders]
            assert flags == sorted(flags, reverse=True) and sum(flags) >= 4
            # the export's preferred folder decides the copy shown as kept
            pref = c.get("/api/duplicates", params=[("order", "folders"), ("prefer", "train/"), ("limit", 200)]).json()
            assert pref["prefer"] == ["train/"]
            for copy in rows["leak"]:
                g = next(g for g in pref["groups"] if any(m["i"] == copy for m in g["members"]))
                assert g["kept"] == rows["originals"][copy] and g["kept_by"] == "prefer"
                assert "train/" in g["kept_why"]
            # a copy a person moved to another cluster: the group is in two clusters, listed first
            # by order=clusters; "move all to the kept one's cluster" is the move edit
            copy = rows["leak"][0]
            g = member_of[copy]
            lab = np.frombuffer(c.get("/api/labels").content, "<i4")
            other = int((lab[copy] + 1) % 3)
            assert post(c, "/api/edits", {"kind": "move", "items": [copy], "to": other}).status_code == 200
            mixed = c.get("/api/duplicates", params={"order": "clusters", "limit": 1}).json()["groups"][0]
            assert mixed["group"] == g["group"] and mixed["mixed_clusters"] and other in mixed["clusters"]
            assert c.get("/api/duplicates").json()["summary"]["mixed_clusters"] >= 1
            items = [m["i"] for m in mixed["members"] if m["cluster"] != mixed["kept_cluster"]]
            r = post(c, "/api/edits", {"kind": "move", "items": items, "to": mixed["kept_cluster"]})
            assert r.status_code == 200, r.text
            again = c.get("/api/duplicates", params={"order": "clusters", "limit": 200}).json()["groups"]
            assert not next(x for x in again if x["group"] == g["group"])["mixed_clusters"]
            # a junk member is not kept: the other copy is, and the junk one says so
            assert post(c, "/api/edits", {"kind": "move", "items": [g["kept"]], "to": "junk"}).status_code == 200
            after = next(x for x in c.get("/api/duplicates", params={"limit": 200}).json()["groups"]
                         if x["group"] == g["group"])
            fates = {m["i"]: m["fate"] for m in after["members"]}
            assert fates[g["kept"]] == "junk" and after["kept"] != g["kept"] and after["kept_by"] == "only"
            # "keep this copy": a person's choice over the rule, an edit (undo takes it back)
            leak = next(x for x in c.get("/api/duplicates", params={"limit": 200}).json()["groups"]
                        if x["group"] == member_of[rows["leak"][1]]["group"])
            pick = next(m["i"] for m in leak["members"] if m["fate"] == "copy")
            r = post(c, "/api/edits", {"kind": "keep", "group": leak["group"], "item": pick})
            assert r.status_code == 200 and r.json()["kind"] == "keep", r.text
            now = next(x for x in c.get("/api/duplicates", params=[("limit", 200), ("prefer", "train/")]).json()["groups"]
                       if x["group"] == leak["group"])
            assert now["kept"] == pick and now["kept_by"] == "person" and "person" in now["kept_why"]
            assert {m["i"]: m["fate"] for m in now["members"]}[pick] == "kept"
            assert c.get("/api/duplicates").json()["summary"]["kept_by_person"] == 1
            for body, word in (({"group": leak["group"], "item": g["kept"]}, "group"),  # not a member
                               ({"group": 10_000, "item": pick}, "group"), ({"group": leak["group"]}, "item")):
                r = post(c, "/api/edits", {"kind": "keep", **body})
                assert r.status_code in (400, 422) and word in r.text, (body, r.text)
            assert post(c, "/api/undo").status_code == 200
            back = next(x for x in c.get("/api/duplicates", params={"limit": 200}).json()["groups"]
                        if x["group"] == leak["group"])
            assert back["kept_by"] != "person"
            assert post(c, "/api/redo").status_code == 200
            # a group of many copies (a meme): its first members with their count, the rest a page
            # at a time, each member once, the kept copy first
            big = next(x for x in found.values() if x["size"] == len(rows["meme"]) + 1)
            assert len(big["members"]) == 24 < big["members_total"] == big["size"]
            assert big["members"][0]["i"] == big["kept"] and big["members"][0]["fate"] == "kept"
            first = c.get("/api/duplicates", params={"members_limit": 5, "limit": 1}).json()["groups"][0]
            assert first["group"] == big["group"] and len(first["members"]) == 5
            seen = [m["i"] for m in first["members"]]
            for off in range(5, big["size"], 7):
                r = c.get(f"/api/duplicates/{big['group']}", params={"members_offset": off, "members_limit": 7})
                assert r.status_code == 200, r.text
                part = r.json()
                assert part["kept"] == big["kept"] and part["members_offset"] == off and part["members_total"] == big["size"]
                seen += [m["i"] for m in part["members"]]
            assert sorted(seen) == sorted([rows["originals"][rows["meme"][0]], *rows["meme"]])
            r = c.get("/api/duplicates/99999")
            assert r.status_code == 404 and "99999" in r.text
            for params in ({"members_limit": 0}, {"members_limit": 1001}, {"members_offset": -1}):
                r = c.get(f"/api/duplicates/{big['group']}", params=params)
                assert r.status_code == 422 and next(iter(params)) in r.text, (params, r.text)
            # bad parameters: 4xx naming them, and the server serves on
            for params, status, word in (({"limit": 0}, 422, "limit"), ({"limit": 201}, 422, "limit"),
                                         ({"offset": -1}, 422, "offset"), ({"order": "big"}, 422, "order"),
                                         ({"limt": 5}, 422, "limt"), ({"prefer": "/"}, 400, "prefer")):
                r = c.get("/api/duplicates", params=params)
                assert r.status_code == status and word in r.text, (params, r.text)
            assert c.get("/api/duplicates", params={"offset": 10_000}).json()["groups"] == []
            spec = c.get("/openapi.json").json()["paths"]["/api/duplicates"]["get"]
            ps = {p["name"]: p["schema"] for p in spec["parameters"]}
            assert set(ps) == {"offset", "limit", "order", "prefer", "members_limit"}
            assert ps["limit"]["maximum"] == 200 and set(ps["order"]["enum"]) == {"size", "folders", "clusters"}
    finally:
        s.stop()


def test_a_run_without_duplicate_data_says_so(base_run):
    from mediacluster.studio.session import Studio

    st = Studio(base_run, warm=False)
    try:
        d = st.duplicate_groups()
        assert d["has_duplicates"] is False and d["groups"] == [] and "--dedup" in d["message"]
    finally:
        st.close()


def test_classes_export_keeps_the_splits(split, tmp_path, capsys):
    """``split="top"``: train/<name>/file and test/<name>/file; a leak keeps one copy (the train one
    with prefer train/) and lists the other as ``leak``; a copy in the same split is a
    ``duplicate``; a file in no split folder is ``no_split``; manifest + dropped = every item."""
    from mediacluster.cli import main
    from mediacluster.errors import InputError
    from mediacluster.studio.session import Studio

    run, rows = split
    run = copy_run(run, tmp_path / "run")  # edited here
    st = Studio(run, warm=False, lazy_map=True)
    try:
        st.edit("rename", {"cluster": 0, "name": "first"})
        res = st.export("classes", prefer=["train/"], split="top")
        ids = st.ids
        n = st.n
        with pytest.raises(InputError, match="split"):
            st.export("csv", split="top")
        with pytest.raises(InputError, match="split must be"):
            st.export("classes", split="name")
    finally:
        st.close()
    out = Path(res["path"])
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["test", "train"]
    man = pd.read_csv(out / "manifest.csv")
    drop = pd.read_csv(out / "dropped.csv")
    assert list(man.columns) == ["id", "path", "label", "split"]
    assert list(drop.columns) == ["id", "path", "curated_cluster", "curated_name", "reason", "kept", "split"]
    assert len(man) + len(drop) == n and not set(man["id"]) & set(drop["id"])
    for split_name in ("train", "test"):
        for d in (out / split_name).iterdir():
            files = list(d.iterdir())
            assert files and all(f.is_symlink() and f.resolve().is_file() for f in files)
            assert all(f"/{split_name}/" in str(f.resolve()) for f in files)  # its split's files only
            assert len(files) == ((man["split"] == split_name) & (man["label"].map(str) == d.name)).sum()
    why = dict(zip(drop["id"], drop["reason"]))
    kept = dict(zip(drop["id"], drop["kept"]))
    for c in rows["leak"]:  # the test/ copy of a train image goes, the train one stays
        assert why[ids[c]] == "leak" and kept[ids[c]] == ids[rows["originals"][c]]
        assert ids[rows["originals"][c]] in set(man["id"])
    for c in rows["misfiled"]:  # both in train/: one of them is kept
        pair = {ids[c], ids[rows["originals"][c]]}
        assert len(pair & set(man["id"])) == 1 and why[(pair - set(man["id"])).pop()] == "duplicate"
    for c in rows["loose"]:
        assert why[ids[c]] == "no_split" and ids[rows["originals"][c]] in set(man["id"])
    assert res["dropped"]["leak"] == len(rows["leak"]) and res["dropped"]["no_split"] == len(rows["loose"])
    # the CLI, and the HTTP body's split
    assert main(["studio", str(run), "--export", "classes", "--export-split", "top"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"left out \(dropped.csv\): .*\d+ leak", text), text
    path = re.search(r"export: (.+?) \(", text).group(1)
    assert (Path(path) / "test").is_dir() and (Path(path) / "train").is_dir()


def test_a_copy_a_person_keeps_is_the_exports_and_survives_a_reload(split, tmp_path, capsys):
    """``keep`` (group, item): the export keeps that copy whatever its rule (``prefer``, splits)
    would, says how many groups a person decided, and the choice is in the edit log: a reload
    (a new studio on the run) sees it, undo / redo take it back and forth, ``item: null`` hands
    the group back to the rule, a member that is junk is not kept."""
    from mediacluster.errors import InputError
    from mediacluster.studio.session import Studio

    run, rows = split
    run = copy_run(run, tmp_path / "run")
    copy = rows["leak"][0]
    orig = rows["originals"][copy]
    st = Studio(run, warm=False, lazy_map=True)
    try:
        g = int(st.dup_group[copy])
        st.edit("keep", {"group": g, "item": copy})  # the test/ copy, against prefer train/
        with pytest.raises(InputError, match="not in duplicate group"):
            st.edit("keep", {"group": g, "item": int(np.flatnonzero(np.asarray(st.dup_group) != g)[0])})
        with pytest.raises(InputError, match="item"):
            st.edit("keep", {"group": g, "item": st.n})
        res = st.export("classes", prefer=["train/"], split="top")
        assert res["kept_by_person"] == 1
        ids = st.ids
    finally:
        st.close()
    drop = pd.read_csv(Path(res["path"]) / "dropped.csv")
    why = dict(zip(drop["id"], drop["reason"]))
    assert why[ids[orig]] == "leak" and ids[copy] not in why
    assert dict(zip(drop["id"], drop["kept"]))[ids[orig]] == ids[copy]
    from mediacluster.cli import main

    capsys.readouterr()
    assert main(["studio", str(run), "--export", "classes", "--export-split", "top"]) == 0
    assert "copies kept as a person chose in the studio: 1 duplicate group" in capsys.readouterr().out
    st = Studio(run, warm=False, lazy_map=True)  # a reload: the log replayed
    try:
        grp = next(x for x in st.duplicate_groups(limit=200)["groups"] if x["group"] == g)
        assert grp["kept"] == copy and grp["kept_by"] == "person"
        st.edit("undo", {})
        grp = next(x for x in st.duplicate_groups(limit=200, prefer=["train/"])["groups"] if x["group"] == g)
        assert grp["kept"] == orig and grp["kept_by"] == "prefer"
        st.edit("redo", {})
        st.edit("move", {"items": [copy], "to": "junk"})  # a junk copy is not kept, chosen or not
        grp = next(x for x in st.duplicate_groups(limit=200)["groups"] if x["group"] == g)
        assert grp["kept"] == orig and grp["kept_by"] == "only"
        st.edit("undo", {})
        st.edit("keep", {"group": g, "item": None})  # back to the rule
        grp = next(x for x in st.duplicate_groups(limit=200, prefer=["train/"])["groups"] if x["group"] == g)
        assert grp["kept"] == orig and grp["kept_by"] == "prefer"
        assert [e["kind"] for e in st.events()["events"]][-2:] == ["undo", "keep"]
    finally:
        st.close()


@pytest.mark.browser
@pytest.mark.slow
def test_the_duplicates_view_in_chromium(split, base_run, tmp_path):
    """The page's duplicates view: groups with the kept copy marked, leaks across train/ and test/
    first on request, the export's "keep copies under" folder changing the copy shown as kept, a
    group in two clusters moved to the kept copy's cluster by its button, the export sending
    prefer and split (a bad folder shown to the person), and a run without duplicates saying so."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    from test_studio_browser import js, loaded, severe, shot, wait

    run, rows = split
    run = copy_run(run, tmp_path / "run")
    with studio_in_chromium(run) as (s, drv):
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        drv.find_element("id", "show-dups").click()
        wait(lambda: js(drv, "return window.mcStudio.busy === 0 && document.querySelectorAll('.dgroup').length"),
             what="the duplicate groups")
        total = js(drv, "return window.mcStudio.dups.total")
        groups = drv.find_elements("css selector", ".dgroup")
        assert len(groups) == min(20, total) and total >= 6
        assert "test + train" in drv.find_element("id", "dups-summary").text
        for g in groups:  # one kept copy each, the others dropped copies
            fates = [t.get_attribute("data-fate") for t in g.find_elements("css selector", ".tile")]
            assert fates.count("kept") == 1 and set(fates) == {"kept", "copy"}
        # the meme (31 copies, the largest group): its first 24 members, the rest on request
        meme = groups[0]
        assert len(meme.find_elements("css selector", ".tile")) == 24
        meme.find_element("css selector", ".dup-more").click()
        wait(lambda: len(meme.find_elements("css selector", ".tile")) == len(rows["meme"]) + 1, what="the other members")
        assert not meme.find_elements("css selector", ".dup-more")
        Select(drv.find_element("id", "dups-order")).select_by_value("folders")
        wait(lambda: js(drv, "return window.mcStudio.busy === 0 && window.mcStudio.dups.order === 'folders'"),
             what="the folders order")
        first = drv.find_elements("css selector", ".dgroup")[0]
        assert first.find_elements("css selector", ".badge.leak")
        # the export's preferred folder: the leaks' train/ copies are shown as kept
        Select(drv.find_element("id", "export-kind")).select_by_value("classes")
        box = drv.find_element("id", "export-prefer")
        assert box.is_displayed()
        box.send_keys("train/", Keys.TAB)
        wait(lambda: js(drv, "const d = window.mcStudio.dups; return window.mcStudio.busy === 0 && d.prefer && d.prefer[0] === 'train/'"),
             what="the groups with prefer")
        leak_groups = [g for g in drv.find_elements("css selector", ".dgroup") if g.find_elements("css selector", ".badge.leak")]
        kept_where = [g.find_element("css selector", '.tile[data-fate="kept"] .where').text for g in leak_groups]
        assert kept_where and all(w.startswith("train/") for w in kept_where)
        shot(drv, "studio-duplicates.png")
        # "keep this": a person's choice over the rule, drawn as kept; another page's keep edit
        # (handing the group back to the rule) is seen here at the next poll
        g0 = leak_groups[0]
        gid = int(g0.get_attribute("data-group"))
        tile = g0.find_element("css selector", '.tile[data-fate="copy"]')
        pick = int(tile.get_attribute("data-i"))
        drv.execute_script("arguments[0].querySelector('.keep-this').click()", tile)
        find = f"const g = window.mcStudio.dups.groups.find((x) => x.group === {gid});"
        wait(lambda: js(drv, find + f" return window.mcStudio.busy === 0 && g && g.kept === {pick} && g.kept_by === 'person'"),
             what="the copy kept by the person")
        assert drv.find_element("css selector", f'.dgroup[data-group="{gid}"] .tile[data-i="{pick}"]').get_attribute("data-fate") == "kept"
        assert drv.find_elements("css selector", f'.dgroup[data-group="{gid}"] .keep-rule')
        with client(s) as api:
            assert post(api, "/api/edits", {"kind": "keep", "group": gid, "item": None}).status_code == 200
        wait(lambda: js(drv, find + " return g && g.kept_by === 'prefer'"), what="the other page's keep edit")
        # another page moves a copy to another cluster: the view shows the group in two clusters,
        # and its button moves every member to the kept copy's cluster
        copy = rows["leak"][0]
        with client(s) as api:
            lab = np.frombuffer(api.get("/api/labels").content, "<i4")
            r = post(api, "/api/edits", {"kind": "move", "items": [copy], "to": int((lab[copy] + 1) % 3)})
            assert r.status_code == 200
        # the page has refreshed to that edit (its view drawn again) and nothing is loading: the
        # button found then is the one the person sees (found at its first drawing, it could be
        # replaced before the click: StaleElementReference at load 16)
        wait(lambda: js(drv, "const S = window.mcStudio; return S.seq === arguments[0] && S.busy === 0 && "
                             "document.querySelectorAll('.move-to-kept').length > 0", r.json()["seq"]),
             what="the page at the other page's move, with the move button")
        drv.find_element("css selector", ".move-to-kept").click()
        wait(lambda: js(drv, f"return window.mcStudio.L[{copy}] === {int(lab[copy])}"), what="the group moved back")
        wait(lambda: not drv.find_elements("css selector", ".move-to-kept"), what="no group in two clusters")
        # the export: prefer and split from the page; a bad folder is said to the person
        Select(drv.find_element("id", "export-split")).select_by_value("top")
        drv.find_element("id", "export").click()
        r = wait(lambda: js(drv, "return window.mcStudio.lastExport"), what="the export")
        assert r["dropped"]["leak"] == len(rows["leak"]) and r["kind"] == "classes"
        assert sorted(p.name for p in Path(r["path"]).iterdir() if p.is_dir()) == ["test", "train"]
        box.clear()
        box.send_keys("/")
        drv.find_element("id", "export").click()
        err = wait(lambda: js(drv, "return window.mcStudio.exportError"), what="the refusal")
        assert "prefer" in err and box.get_attribute("aria-invalid") == "true"
        assert any("prefer" in t.text for t in drv.find_elements("css selector", "#toast .msg.error"))
        # the console's only errors are the two refusals of that folder (the view and the export)
        assert all("400" in e["message"] and ("prefer=%2F" in e["message"] or "api/export" in e["message"])
                   for e in severe(drv)), severe(drv)
    # a run made without --dedup: the view says so
    with studio_in_chromium(copy_run(base_run, tmp_path / "plain")) as (s, drv):
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        drv.find_element("id", "show-dups").click()
        none = wait(lambda: drv.find_elements("id", "dups-none"), what="the no-duplicates message")
        assert "--dedup" in none[0].text and not drv.find_elements("css selector", ".dgroup")


def test_keep_copy_says_by_which_rule(tmp_path):
    """``keep_copy``'s rule, first that tells the members apart: a preferred folder, the largest
    file, the representative, the first; ``split_of`` a file's top-level folder, None outside one."""
    from mediacluster.studio.exports import check_prefer, keep_copy, kept_words, split_of

    files = {"test/a.jpg": 300, "train/a.jpg": 100, "train/b.jpg": 100, "c.jpg": 100}
    for rel, size in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    paths = [str(tmp_path / rel) for rel in files]
    root = str(tmp_path)
    rep = [False, True, False, False]
    assert keep_copy([0, 1], paths, rep) == (0, "size")
    assert keep_copy([0, 1], paths, rep, check_prefer(["train/"]), root) == (1, "prefer")
    assert keep_copy([1, 2], paths, rep) == (1, "representative")
    assert keep_copy([2, 3], paths, rep) == (2, "order")
    assert keep_copy([3], paths, rep) == (3, "only")
    assert "300 bytes" in kept_words(paths[0], "size") and "train/" in kept_words(paths[1], "prefer", ["train/"], root)
    assert [split_of(p, root) for p in paths] == ["test", "train", "train", None]
    assert split_of("/elsewhere/x/y.jpg", root) is None and split_of(None, root) is None


def test_dropped_says_why_and_a_junk_copy_never_takes_a_groups_place():
    """``dropped`` on a hand table: noise is "unassigned", an outlier "outlier", a junk cluster's
    item "junk"; a duplicate group is decided among the members not dropped otherwise, so a junk
    copy (or one a person chose, now junk) is never the kept one and the group's other copy stays."""
    import pandas as pd

    from mediacluster.studio.exports import dropped

    table = pd.DataFrame({"id": list("abcdefg"), "curated_cluster": [0, 0, 1, 2, -1, -2, 0],
                          "duplicate_group": [0, -1, 0, 1, 1, -1, 0],
                          "duplicate_of": [None, None, "a", None, "d", None, "a"]})
    clusters = [{"id": 0}, {"id": 1, "junk": True}, {"id": 2}]
    why, kept = dropped(table, clusters)
    assert why == [None, None, "junk", None, "unassigned", "outlier", "duplicate"]
    assert kept == [None] * 6 + ["a"]  # group 0: a (the representative) over g; c is junk
    why, kept = dropped(table, clusters, chosen={0: 2})  # a person kept c, since marked junk
    assert why == [None, None, "junk", None, "unassigned", "outlier", "duplicate"] and kept[6] == "a"


def test_the_clean_dataset_keeps_the_colour_scan_at_full_resolution_not_the_largest_file(tmp_path):
    """An archive's re-scans of one print: the colour JPEG, a greyscale scan saved as an
    uncompressed TIFF, a half-size PNG and a crop. By bytes the grey TIFF (and even the half-size
    PNG) outweighed the JPEG and was kept as "the original"; the most pixels, then colour, decide."""
    import numpy as np
    from PIL import Image

    from mediacluster.studio.exports import keep_copy, kept_words

    y, x = np.mgrid[0:300, 0:400]
    rng = np.random.default_rng(0)
    a = np.stack([x * 255 // 399, y * 255 // 299, (x * y) % 256], -1) + rng.integers(0, 40, (300, 400, 3))
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    paths = [str(tmp_path / n) for n in ("grey.tif", "half.png", "print.jpg", "crop.jpg")]
    im.convert("L").save(paths[0])
    im.resize((200, 150)).save(paths[1])
    im.save(paths[2], quality=75)
    im.crop((20, 20, 380, 280)).save(paths[3], quality=95)
    sizes = [os.path.getsize(p) for p in paths]
    assert sizes[0] > sizes[2] and sizes[1] > sizes[2]  # by bytes the colour print came last but one
    assert keep_copy([0, 1, 2, 3], paths, [True, False, False, False]) == (2, "size")
    assert keep_copy([0, 1, 3], paths) == (0, "size")  # without the colour one: the most pixels
    words = kept_words(paths[2], "size")
    assert "120,000 pixels, colour" in words and f"{sizes[2]:,} bytes" in words


def test_the_copy_a_person_keeps_is_carried_to_a_reclustered_run(split, cifar3_embeddings, tmp_path):
    """``--carry-from``: a keep edit of the previous run is carried as a keep of the same file
    in the group it is in in the new run (the groups are renumbered by each run); it was
    dropped silently. Carrying again follows the previous run's choice of the group now: handed
    back to the rule there (an edit, or an undo of the keep), handed back here (both were left
    as carried: the hand-back silently, the undo listed); a keep undone before a carry is not
    carried; a carried keep undone here stays undone, the previous run's later keep listed."""
    from mediacluster.studio.carry import carry_curation
    from mediacluster.studio.session import Studio

    def edit(run, *edits) -> None:
        st = Studio(run, warm=False, lazy_map=True)
        try:
            for kind, req in edits:
                st.edit(kind, req)
        finally:
            st.close()

    def kept(run) -> dict:
        st = Studio(run, warm=False, lazy_map=True)
        try:
            return dict(st.state.kept)
        finally:
            st.close()

    run, rows = split
    old = copy_run(run, tmp_path / "old")
    new, _ = split_run(cifar3_embeddings, tmp_path / "again" / "run", meme=30)  # the same tree, a new run
    fresh = copy_run(new, tmp_path / "again" / "fresh")  # the same new run, for a first carry later
    copy, other = rows["leak"][0], rows["originals"][rows["leak"][0]]
    st = Studio(old, warm=False, lazy_map=True)
    try:
        g = int(st.dup_group[copy])
        st.edit("keep", {"group": g, "item": copy})
    finally:
        st.close()
    summary = carry_curation(old, new)
    assert summary["carried"].get("keeps") == 1, summary
    st = Studio(new, warm=False, lazy_map=True)
    try:
        ng = int(st.dup_group[copy])
        assert st.state.kept == {ng: copy}
        assert st.export("classes", prefer=["train/"], split="top")["kept_by_person"] == 1
    finally:
        st.close()
    again = carry_curation(old, new)  # nothing new to carry: not carried twice
    assert not again["carried"].get("keeps"), again
    # handed back to the rule in the previous run: handed back here too
    edit(old, ("keep", {"group": g, "item": None}))
    s2 = carry_curation(old, new)
    assert s2["carried"]["keeps"] == 1 and kept(new) == {}, s2
    # kept again, carried; the keep undone in the previous run: handed back here, not listed
    edit(old, ("keep", {"group": g, "item": copy}))
    assert carry_curation(old, new)["carried"]["keeps"] == 1 and kept(new) == {ng: copy}
    edit(old, ("undo", {}))
    s3 = carry_curation(old, new)
    assert s3["carried"]["keeps"] == 1 and kept(new) == {}, s3
    assert not [r for r in s3["not_carried"] if r["what"] == "undo"], s3["not_carried"]
    # a carried keep undone here stays undone: the previous run's later keep of the group is listed
    edit(old, ("keep", {"group": g, "item": copy}))
    assert carry_curation(old, new)["carried"]["keeps"] == 1
    edit(new, ("undo", {}))
    edit(old, ("tag", {"items": [copy], "add": ["seen"]}))
    s4 = carry_curation(old, new)
    assert kept(new) == {} and s4["carried"]["keeps"] == 0 and s4["carried"]["item_tags"] == 1, s4
    edit(old, ("keep", {"group": g, "item": other}))
    s5 = carry_curation(old, new)
    assert kept(new) == {} and s5["carried"]["keeps"] == 0, s5
    assert [(r["what"], r["group"]) for r in s5["not_carried"] if r["what"] == "keep"] == [("keep", ng)], s5
    # the person here and the previous run then keep the same copy: nothing written or listed
    edit(new, ("keep", {"group": ng, "item": copy}))
    edit(old, ("keep", {"group": g, "item": copy}))
    s7 = carry_curation(old, new)
    assert kept(new) == {ng: copy} and s7["carried"]["keeps"] == 0 and s7["not_carried"] == [], s7
    # a keep undone in the previous run before a first carry is not carried
    old2 = copy_run(run, tmp_path / "old2")
    edit(old2, ("keep", {"group": g, "item": copy}), ("undo", {}), ("tag", {"items": [copy], "add": ["seen"]}))
    s6 = carry_curation(old2, fresh)
    assert s6["carried"]["item_tags"] == 1 and not s6["carried"]["keeps"] and kept(fresh) == {}, s6
