"""Duplicates and splits where the curator works: the studio's duplicate-group list
(``GET /api/duplicates`` over real HTTP, and the page's view in real headless Chromium), the
export's ``prefer`` folders from the page, and the ``classes`` export keeping a collection's
``train/`` / ``test/`` splits, on a real small tree of CIFAR-10 images with planted copies
(``studio_helpers.split_run``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from studio_helpers import Server, client, copy_run, post, split_run


@pytest.fixture(scope="module")
def split(cifar3_embeddings, tmp_path_factory):
    run, rows = split_run(cifar3_embeddings, tmp_path_factory.mktemp("split") / "run")
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
            # bad parameters: 4xx naming them, and the server serves on
            for params, status, word in (({"limit": 0}, 422, "limit"), ({"limit": 201}, 422, "limit"),
                                         ({"offset": -1}, 422, "offset"), ({"order": "big"}, 422, "order"),
                                         ({"limt": 5}, 422, "limt"), ({"prefer": "/"}, 400, "prefer")):
                r = c.get("/api/duplicates", params=params)
                assert r.status_code == status and word in r.text, (params, r.text)
            assert c.get("/api/duplicates", params={"offset": 10_000}).json()["groups"] == []
            spec = c.get("/openapi.json").json()["paths"]["/api/duplicates"]["get"]
            ps = {p["name"]: p["schema"] for p in spec["parameters"]}
            assert set(ps) == {"offset", "limit", "order", "prefer"}
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
