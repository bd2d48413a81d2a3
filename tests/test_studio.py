"""The studio: its edit log and state, and every HTTP endpoint of a real server process started on
a free loopback port over a run of 300 real CIFAR-10 images (airplane, frog, truck).

Browser tests (real headless Chromium) are in test_studio_browser.py.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from studio_helpers import WRITE, Server, client, copy_run, post, publish, wait_written


@pytest.fixture(scope="module")
def server(base_run, tmp_path_factory):
    run = copy_run(base_run, tmp_path_factory.mktemp("served") / "run")
    s = Server(run)
    s.run = run
    yield s
    s.stop()


@pytest.fixture(scope="module")
def truth(base_run):
    from mediacluster.rundir import RunDir

    return np.array(RunDir.open(base_run).read_items()["label"].tolist())


def clusters_of(c) -> dict:
    return {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}


def labels_of(c) -> np.ndarray:
    r = c.get("/api/labels")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    return np.frombuffer(r.content, dtype="<i4")


# ------------------------------------------------------------------------------ the log and state
def test_edit_log_is_append_only_and_bound_to_its_run(tmp_path):
    from mediacluster.errors import RunDirError
    from mediacluster.studio.editlog import EditLog

    log = EditLog(tmp_path / "e.sqlite", "run-a")
    e1 = log.append("rename", {"cluster": 0, "name": "x"}, "c1")
    e2 = log.append("undo", {"target": e1.seq})
    assert (e1.seq, e2.seq) == (1, 2) and log.last_seq() == 2 and len(log) == 2
    assert [e.kind for e in log.events()] == ["rename", "undo"]
    assert log.events(since=1)[0].payload == {"target": 1}
    con = sqlite3.connect(tmp_path / "e.sqlite")
    for sql in ("UPDATE events SET kind = 'merge'", "DELETE FROM events"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    con.close()
    log.close()
    with pytest.raises(RunDirError, match="run-a"):
        EditLog(tmp_path / "e.sqlite", "run-b")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RunDirError, match="not a readable edit log"):
        EditLog(tmp_path / "junk.sqlite", "run-a")


def test_an_edit_log_statement_sqlite_refuses_stays_a_bug_not_a_full_disk(tmp_path):
    """Only a write the disk refuses (full, a quota, read-only) is the user's OutputError; a
    statement SQLite refuses inside an edit ("no such column") was reported as "cannot write
    edits.sqlite ...; this edit was not recorded" too (exit 2, HTTP 507), hiding the bug."""
    from mediacluster.errors import OutputError
    from mediacluster.studio.editlog import EditLog

    log = EditLog(tmp_path / "e.sqlite", "run-a")
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such column") as got:
            with log.writing():
                log.insert("rename", {"cluster": 0, "name": "x"})
                log._conn.execute("SELECT no_such_column FROM events")
        assert not isinstance(got.value, OutputError)
        assert len(log) == 0  # rolled back
        assert log.append("rename", {"cluster": 0, "name": "y"}).seq >= 1
    finally:
        log.close()


def test_state_replay_undo_redo_are_deterministic(tmp_path):
    from mediacluster.studio.editlog import EditLog
    from mediacluster.studio.state import CuratedState, EditConflict

    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -2])
    names = {0: ("a", "automatic"), 1: ("b", "automatic"), 2: ("c", "person")}
    log = EditLog(tmp_path / "e.sqlite", "r")
    st = CuratedState(labels, names)
    assert st.status().tolist()[6:] == ["clustered", "clustered", "noise", "outlier"]

    def do(kind, req=None):
        p = st.prepare_undo() if kind == "undo" else st.prepare_redo() if kind == "redo" else st.prepare(kind, req)
        st.apply(log.append(kind, p))

    do("rename", {"cluster": 0, "name": "  first  "})
    do("merge", {"clusters": [1, 2]})  # 1 is larger: it keeps its id
    do("move", {"items": [0, 8], "to": "new", "name": "moved"})
    do("move", {"items": [9], "to": "junk"})
    do("tag", {"clusters": [1], "items": [3], "add": ["x", "y"]})
    do("junk", {"clusters": [0]})
    assert st.clusters[0].name == "first" and st.clusters[0].named_by == "person" and st.clusters[0].junk
    assert not st.clusters[2].alive and st.labels.tolist() == [3, 0, 0, 1, 1, 1, 1, 1, 3, 4]
    assert st.clusters[3].name == "moved" and st.clusters[4].origin == "junk"
    assert st.status().tolist().count("junk") == 3  # cluster 0 (2 items) + the junk item
    with pytest.raises(EditConflict):
        st.prepare("rename", {"cluster": 2, "name": "gone"})
    before = st.labels.copy()
    do("undo")
    do("undo")
    assert not st.clusters[0].junk and st.clusters[1].tags == [] and st.item_tags == {}
    do("redo")
    assert st.clusters[1].tags == ["x", "y"] and st.item_tags == {3: ["x", "y"]}
    do("tag", {"clusters": [1], "items": [3], "remove": ["x"]})
    assert st.clusters[1].tags == ["y"] and st.item_tags == {3: ["y"]}
    do("rename", {"cluster": 1, "name": "B"})  # a new edit ends the redo chain
    assert not st.can_redo()
    with pytest.raises(EditConflict, match="nothing to redo"):
        st.prepare_redo()
    # the same log replayed from the start gives the same state
    again = CuratedState(labels, names)
    for ev in log.events():
        again.apply(ev)
    assert again.labels.tolist() == st.labels.tolist() and again.cluster_table() == st.cluster_table()
    assert before.tolist() == st.labels.tolist()
    # undo back to the start: new ids are never reused
    while st.can_undo():
        do("undo")
    assert st.labels.tolist() == labels.tolist() and st.clusters[0].name == "a"
    do("move", {"items": [0], "to": "new"})
    assert st.labels[0] == 5
    # a new cluster's parent is the cluster most of its items came from (1: two of three)
    do("move", {"items": [1, 3, 4], "to": "new"})
    assert st.labels[1] == 6 and st.clusters[6].parent == 1
    for bad in ({"items": [], "to": 1}, {"items": [99], "to": 1}, {"items": ["a"], "to": 1}):
        with pytest.raises(Exception, match="item"):
            st.prepare("move", bad)
    for bad_name in ("", "   ", "a\x00b", "x" * 201, 5):
        with pytest.raises(Exception, match="name"):
            st.prepare("rename", {"cluster": 1, "name": bad_name})


def test_changed_clusters_are_those_that_gained_or_lost_an_item():
    """``session.changed_clusters``: which clusters' items differ from the fit's (their
    automatic name's support no longer holds): one that only lost an item is changed as much
    as one that gained; a cluster merged away is changed; the others are not."""
    from mediacluster.studio.session import changed_clusters

    fitted = np.array([0, 0, 1, 1, 2, 2, -1])
    assert changed_clusters(fitted, fitted) == set()
    assert changed_clusters(fitted, np.array([0, -1, 1, 1, 2, 2, -1])) == {0}  # lost one to noise
    assert changed_clusters(fitted, np.array([0, 0, 1, 1, 2, 2, 2])) == {2}  # gained one
    assert changed_clusters(fitted, np.array([0, 0, 0, 0, 2, 2, -1])) == {0, 1}  # 1 merged into 0
    assert changed_clusters(np.array([-1, -1]), np.array([-1, -1])) == set()


# ------------------------------------------------------------------------------ reading endpoints
def test_a_conflict_names_who_and_when_in_words():
    """A 409 named the other page by its random id ("edit 2 (from 7f3a...)"): now who made the
    edit as a person reads it (this page, another studio page, a carry, a script) and how long
    ago; the id stays in the error's details for a program."""
    from mediacluster.studio.state import EditConflict, ago, author

    assert author("7f3a9c01", asking="7f3a9c01") == "this page"
    assert author("7f3a9c01", asking="b2") == author("7f3a9c01") == "another studio page"
    assert author("carried from run-1") == "the carry from run run-1"
    assert author("cli") == "the command line" and author("") == "a script or tool (no page id)"
    now = 1_800_000_000.0
    assert ago(now - 0.5, now) == "just now" and ago(now - 40, now) == "40 s ago"
    assert ago(now - 720, now) == "12 min ago, at " + time.strftime("%H:%M", time.localtime(now - 720))
    assert ago(now - 3 * 3600, now).startswith("3 h ago, at ") and ago(now - 9 * 86400, now).startswith("on ")
    e = EditConflict("cluster 3 no longer exists: ", {"seq": 12, "kind": "merge", "client": "7f3a9c01",
                                                       "ts": time.time() - 40}, " merged it into cluster 5 (cats)")
    assert re.fullmatch(r"cluster 3 no longer exists: edit 12 \(by another studio page, 4\d s ago\) merged it "
                        r"into cluster 5 \(cats\)", str(e)), str(e)
    assert str(e.asked_by("7f3a9c01")).startswith("cluster 3 no longer exists: edit 12 (by this page, ")
    assert e.details() == {"edit": {"seq": 12, "kind": "merge", "client": "7f3a9c01", "user": "", "ts": e.by["ts"]}}
    # a name the person gave says who, from any other page; the same name elsewhere is "you"
    assert author("7f3a9c01", asking="b2", user="Ana") == "Ana"
    assert author("7f3a9c01", asking="b2", user="Ana", asking_user="Ana") == "you, on another page"
    assert author("7f3a9c01", asking="7f3a9c01", user="Ana") == "this page"
    assert EditConflict("nothing to undo").details() == {}


def test_edits_keep_the_name_a_person_gave_and_a_conflict_says_it(base_run, tmp_path):
    """Pages send a random id; a person can give a name (the page's box: the X-Mediacluster-User
    header, percent-encoded UTF-8; ``studio --user`` for edits that give none). The edit log
    keeps it, the history (/api/edits) shows it, and a 409 names the other person."""
    from urllib.parse import quote

    run = copy_run(base_run, tmp_path / "run")
    s = Server(run, "--user", "Lead")
    try:
        with client(s) as c:
            assert c.get("/api/info").json()["user"] == "Lead"
            ids = sorted(clusters_of(c))
            ana = {"X-Mediacluster-Client": "pageA", "X-Mediacluster-User": quote("Ana Müller")}
            bo = {"X-Mediacluster-Client": "pageB", "X-Mediacluster-User": "Bo"}
            # Bo merges cluster ids[1] away; Ana, on her older view, renames it: refused, naming Bo
            r = post(c, "/api/edits", {"kind": "merge", "clusters": [ids[0], ids[1]], "into": ids[0]}, headers=bo)
            assert r.status_code == 200, r.text
            merge = r.json()["seq"]
            r = post(c, "/api/edits", {"kind": "rename", "cluster": ids[1], "name": "planes"}, headers=ana)
            assert r.status_code == 409, r.text
            err = r.json()["error"]
            assert re.fullmatch(rf"cluster {ids[1]} no longer exists: edit {merge} \(by Bo, (just now|\d+ s ago)\) "
                                rf"merged it into cluster {ids[0]} \(.+\)", err["message"]), err["message"]
            assert err["edit"]["user"] == "Bo" and err["edit"]["client"] == "pageB"
            # Ana renames; Bo's undo of his merge now names her edit, with her name as she wrote it
            r = post(c, "/api/edits", {"kind": "rename", "cluster": ids[0], "name": "things"}, headers=ana)
            assert r.status_code == 200, r.text
            rename = r.json()["seq"]
            r = post(c, "/api/undo", {"target": merge}, headers=bo)
            assert r.status_code == 409 and f"edit {rename} (a rename by Ana Müller, " in r.json()["error"]["message"], r.text
            # Ana on another page (same name): "you, on another page"; a page without a name: --user's
            r = post(c, "/api/undo", {"target": merge}, headers={**ana, "X-Mediacluster-Client": "pageA2"})
            assert r.status_code == 409 and "(a rename by you, on another page, " in r.json()["error"]["message"], r.text
            r = post(c, "/api/edits", {"kind": "rename", "cluster": ids[2], "name": "frogs"},
                     headers={"X-Mediacluster-Client": "pageC"})
            assert r.status_code == 200, r.text
            r = post(c, "/api/undo", {"target": merge}, headers=bo)
            assert r.status_code == 409 and "(a rename by Lead, " in r.json()["error"]["message"], r.text
            # control characters and white space runs are not kept
            r = post(c, "/api/edits", {"kind": "rename", "cluster": ids[2], "name": "frog"},
                     headers={"X-Mediacluster-Client": "pageB", "X-Mediacluster-User": quote("  Bo\n\x1b[2J  B. ")})
            assert r.status_code == 200, r.text
            history = c.get("/api/edits", params={"since": 0}).json()["events"]
            assert [(e["kind"], e["client"], e["user"]) for e in history] == [
                ("merge", "pageB", "Bo"), ("rename", "pageA", "Ana Müller"), ("rename", "pageC", "Lead"),
                ("rename", "pageB", "Bo [2J B.")]
    finally:
        s.stop()
    with sqlite3.connect(run / "edits.sqlite") as con:  # kept in the log itself
        assert [u for (u,) in con.execute("SELECT user FROM events ORDER BY seq")] == [
            "Bo", "Ana Müller", "Lead", "Bo [2J B."]


def test_a_persons_name_is_kept_to_its_bound(tmp_path):
    """A name longer than ``MAX_USER`` characters (a pasted paragraph in the page's box) is kept
    cut to the bound, in the log and in what ``append`` answers."""
    from mediacluster.studio.editlog import MAX_USER, EditLog

    log = EditLog(tmp_path / "edits.sqlite", "run-1")
    try:
        ev = log.append("rename", {"cluster": 0, "name": "x"}, "page", "Ann " + "a" * 200)
        assert ev.user == ("Ann " + "a" * 200)[:MAX_USER]
        assert [e.user for e in log.events()] == [ev.user] and len(ev.user) == MAX_USER
    finally:
        log.close()


def test_an_edit_log_written_before_names_gets_them(tmp_path):
    """A log written before names were kept (no ``user`` column) is read as before and takes
    names from then on."""
    from mediacluster.studio.editlog import EditLog

    path = tmp_path / "edits.sqlite"
    with sqlite3.connect(path) as con:  # the version-1 log as it was written before
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, "
                    "kind TEXT NOT NULL, client TEXT NOT NULL DEFAULT '', payload TEXT NOT NULL)")
        con.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "mediacluster-edits"),
                        ("schema_version", "1"), ("run_id", "r1"), ("created", "then")])
        con.execute("INSERT INTO events (ts, kind, client, payload) VALUES (1.0, 'rename', 'p1', "
                    "'{\"cluster\": 0, \"name\": \"a\"}')")
    con.close()
    log = EditLog(path, "r1")
    try:
        log.append("rename", {"cluster": 0, "name": "b"}, "p2", "Ana")
        assert [(e.client, e.user) for e in log.events()] == [("p1", ""), ("p2", "Ana")]
    finally:
        log.close()


def test_page_and_reading_endpoints(server, truth):
    from PIL import Image

    with client(server) as c:
        r = c.get("/")
        assert r.status_code == 200 and "mediacluster studio" in r.text
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        for name, kind in (("studio.js", "javascript"), ("studio.css", "css")):
            r = c.get(f"/static/{name}")
            assert r.status_code == 200 and kind in r.headers["content-type"]
        assert c.get("/healthz").json() == {"ok": True}
        info = c.get("/api/info").json()
        n = info["n"]
        assert n == 300 and info["word_search"] == "imagenet-wordnet" and info["upload_search"]
        assert info["models"] == ["v0001"] and info["levels"] == []
        xy = c.get("/api/map").content
        assert len(xy) == 8 * n and np.isfinite(np.frombuffer(xy, "<f4")).all()
        lab = labels_of(c)
        assert len(lab) == n and set(lab.tolist()) == {0, 1, 2}
        cl = c.get("/api/clusters").json()
        assert sorted(e["id"] for e in cl["clusters"]) == [0, 1, 2]
        assert sum(e["size"] for e in cl["clusters"]) == n and all(e["name"] for e in cl["clusters"])
        assert {s["id"] for s in cl["special"]} == {-1, -2} and cl["can_undo"] is False
        one = c.get("/api/clusters/0").json()
        assert one["size"] == int((lab == 0).sum()) and len(one["top_classes"]) == 5
        assert one["true_labels"][0]["share"] > 0.5
        assert c.get("/api/clusters/99").status_code == 404
        # paging and orders
        p1 = c.get("/api/clusters/0/items", params={"offset": 0, "limit": 7}).json()
        p2 = c.get("/api/clusters/0/items", params={"offset": 7, "limit": 7}).json()
        assert p1["total"] == one["size"] and len(p1["items"]) == 7
        assert not {x["i"] for x in p1["items"]} & {x["i"] for x in p2["items"]}
        ps = [x["p"] for x in p1["items"] + p2["items"]]
        assert ps == sorted(ps, reverse=True)
        border = c.get("/api/clusters/0/items", params={"order": "borderline", "limit": 5}).json()["items"]
        assert border[0]["p"] <= ps[-1]
        for order in ("map", "file"):
            assert c.get("/api/clusters/0/items", params={"order": order}).status_code == 200
        assert c.get("/api/clusters/0/items", params={"order": "nope"}).status_code == 400
        br = c.get("/api/briefs", params={"ids": "5,7,9"}).json()["items"]
        assert [b["i"] for b in br] == [5, 7, 9] and all(b["name"] for b in br)
        assert c.get("/api/briefs", params={"ids": "5,x"}).status_code == 400
        assert c.get("/api/briefs", params={"ids": "5,300"}).status_code == 404
        allm = c.get("/api/clusters/0/all").json()["items"]
        assert sorted(allm) == np.flatnonzero(lab == 0).tolist()
        noise = c.get("/api/clusters/-1/items").json()
        assert noise["total"] == 0
        # one item
        it = c.get("/api/items/5").json()
        assert it["i"] == 5 and it["cluster"] == lab[5] and it["label"] == truth[5]
        assert len(it["neighbours"]) == 12 and 5 not in [x["i"] for x in it["neighbours"]]
        assert len(it["top_classes"]) == 5 and it["path"].endswith(it["name"])
        same = np.mean([truth[x["i"]] == truth[5] for x in it["neighbours"]])
        assert same >= 0.5
        for bad in ("/api/items/300", "/api/items/-1"):
            assert c.get(bad).status_code == 404
        assert c.get("/api/items/abc").status_code == 422
        # images: JPEG renderings, never the file itself
        for path, size in (("/api/items/5/thumb", 160), ("/api/items/5/thumb?size=96", 96), ("/api/items/5/preview", 512)):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            im = Image.open(io.BytesIO(r.content))
            assert im.format == "JPEG" and max(im.size) <= size
        assert c.get("/api/items/5/thumb?size=5000").status_code == 400
        v = c.get("/api/version").json()
        assert v["seq"] == 0 and v["replaced"] is False
        assert c.get("/api/edits").json()["events"] == []


def test_search_by_words_and_by_example(server, truth, cifar3_dir):
    with client(server) as c:
        lab = labels_of(c)
        for word, want in (("airplane", "airplane"), ("frog", "frog"), ("truck", "truck")):
            r = c.get("/api/search/words", params={"q": word, "limit": 50}).json()
            assert r["method"] == "imagenet-wordnet" and r["concept"]["synset"].startswith("n")
            top = [truth[x["i"]] for x in r["items"][:30]]
            assert np.mean([t == want for t in top]) >= 0.8, (word, top)
            scores = [x["score"] for x in r["items"]]
            assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0001
        # a broader word, a synset id, and a sense below the ImageNet tree's concepts
        veh = c.get("/api/search/words", params={"q": "vehicle", "limit": 60}).json()
        assert np.mean([truth[x["i"]] in ("airplane", "truck") for x in veh["items"]]) >= 0.9
        amph = c.get("/api/search/words", params={"q": "n01639765"}).json()  # frog, toad
        assert amph["concept"]["synset"] == "n01639765"
        # limited to one cluster
        cid = int(np.bincount(lab).argmax())
        r = c.get("/api/search/words", params={"q": "vehicle", "cluster": cid}).json()
        assert r["cluster"] == cid and all(lab[x["i"]] == cid for x in r["items"])
        assert r["matches"] <= int((lab == cid).sum())
        for bad in ({"q": "qwxzzy"}, {"q": ""}, {"q": "x" * 300}):
            r = c.get("/api/search/words", params=bad)
            assert r.status_code == 400 and r.json()["error"]["message"]
        assert c.get("/api/search/words", params={"q": "dog", "cluster": 77}).status_code == 404
        # more like this
        r = c.get("/api/search/similar", params={"item": 10, "limit": 20}).json()
        assert r["items"][0]["i"] == 10 and r["items"][0]["score"] > 0.999
        assert np.mean([truth[x["i"]] == truth[10] for x in r["items"]]) >= 0.7
        r = c.get("/api/search/similar", params={"item": 10, "cluster": int(lab[10]), "limit": 500}).json()
        assert len(r["items"]) == int((lab == lab[10]).sum()) and all(lab[x["i"]] == lab[10] for x in r["items"])
        # an uploaded image: the package's loader + the run's encoder; its own file comes first
        it = c.get("/api/items/42").json()
        data = Path(it["path"]).read_bytes()
        r = c.post("/api/search/image", files={"file": ("mine.png", data, "image/png")},
                   data={"limit": "10"}, headers={"X-Mediacluster": "1"})
        assert r.status_code == 200, r.text
        r = r.json()
        assert r["method"] == "upload" and r["items"][0]["i"] == 42 and r["items"][0]["score"] > 0.999
        r = c.post("/api/search/image", files={"file": ("x.jpg", b"<html>not an image</html>", "image/jpeg")},
                   headers={"X-Mediacluster": "1"})
        assert r.status_code == 400 and "not an image" in r.json()["error"]["message"]
        # a form field the search does not read (a typo of limit) is refused naming it, not ignored
        r = c.post("/api/search/image", files={"file": ("mine.png", data, "image/png")},
                   data={"limt": "10"}, headers={"X-Mediacluster": "1"})
        assert r.status_code == 422 and r.json()["error"]["message"].startswith("limt: "), r.text


# ------------------------------------------------------------------------------ edits
@pytest.mark.slow
def test_edits_through_the_api(server, truth):
    from mediacluster.rundir import RunDir

    with client(server) as c:
        lab0 = labels_of(c)
        sizes = np.bincount(lab0)
        a, b, other = [int(x) for x in np.argsort(-sizes)]
        # guards of the write endpoints
        r = c.post("/api/edits", json={"kind": "rename", "cluster": a, "name": "x"})
        assert r.status_code == 403 and "curl -H 'X-Mediacluster: 1'" in r.json()["error"]["message"]
        r = post(c, "/api/edits", {"kind": "explode"})
        assert r.status_code == 422 and "an edit needs a 'kind'" in r.json()["error"]["message"]
        r = c.post("/api/edits", content=b"{not json", headers={"X-Mediacluster": "1", "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["kind"] == "invalid_json", r.text  # as the service
        r = c.post("/api/edits", content=b"x" * (33 << 20), headers={"X-Mediacluster": "1", "Content-Type": "application/json"})
        assert r.status_code == 413
        assert post(c, "/api/edits", {"kind": "rename", "cluster": a, "name": "\x07bell"}).status_code == 400
        assert post(c, "/api/undo").status_code == 409
        # rename
        r = post(c, "/api/edits", {"kind": "rename", "cluster": a, "name": "flying things"})
        assert r.status_code == 200 and r.json()["seq"] == 1 and r.json()["can_undo"]
        assert clusters_of(c)[a]["name"] == "flying things" and clusters_of(c)[a]["named_by"] == "person"
        # merge (the larger keeps its id)
        r = post(c, "/api/edits", {"kind": "merge", "clusters": [b, other]}).json()
        assert r["edit"]["into"] == b
        lab = labels_of(c)
        assert set(lab.tolist()) == {a, b} and (lab == b).sum() == sizes[b] + sizes[other]
        assert post(c, "/api/edits", {"kind": "rename", "cluster": other, "name": "gone"}).status_code == 409
        # split with a preview (K-means, k=2, in the saved model's reduced space)
        pv = post(c, "/api/split/preview", {"cluster": b, "k": 2}).json()
        assert pv["k"] == 2 and pv["n"] == (lab == b).sum() and pv["space"] == "model"
        assert sum(p["size"] for p in pv["parts"]) == pv["n"] and all(p["name"] and p["examples"] for p in pv["parts"])
        assert sorted(pv["labels"]["items"]) == np.flatnonzero(lab == b).tolist()
        # the preview changed nothing yet
        assert (labels_of(c) == lab).all()
        for bad in ({"cluster": b, "k": 1}, {"cluster": b, "k": 10 ** 6}, {"cluster": b, "reducer": "magic"}, {}):
            assert post(c, "/api/split/preview", bad).status_code == 422  # the body's schema (web.StrictBody)
        assert post(c, "/api/split/preview", {"cluster": 12345}).status_code == 404
        auto = post(c, "/api/split/preview", {"cluster": b, "reducer": "pca"}).json()
        assert auto["k"] >= 2 and auto["space"] == "pca"
        r = post(c, "/api/edits", {"kind": "split", "preview": pv["preview"], "names": ["part one", None]}).json()
        new_ids = r["edit"]["ids"]
        lab = labels_of(c)
        assert len(set(lab.tolist())) == 3 and set(new_ids) <= set(lab.tolist())
        cl = clusters_of(c)
        assert "part one" in [cl[i]["name"] for i in new_ids]
        # a null name is the preview's (it was "NAME (2)", a name the preview never showed)
        assert sorted(cl[i]["name"] for i in new_ids) == sorted(["part one", pv["parts"][1]["name"]])
        # the truth: the split separates frogs from trucks better than chance
        part_truth = [set(truth[lab == i]) for i in new_ids]
        assert all(len(s) >= 1 for s in part_truth)
        # a stale preview is refused
        assert post(c, "/api/edits", {"kind": "split", "preview": pv["preview"]}).status_code == 409
        assert post(c, "/api/edits", {"kind": "split", "preview": "nope"}).status_code == 409
        # move a few items to a new cluster, then one to junk, then tag
        items = np.flatnonzero(lab == a)[:5].tolist()
        r = post(c, "/api/edits", {"kind": "move", "items": items, "to": "new", "name": "odd ones"}).json()
        moved_to = r["edit"]["to"]
        assert (labels_of(c)[items] == moved_to).all() and clusters_of(c)[moved_to]["name"] == "odd ones"
        r = post(c, "/api/edits", {"kind": "move", "items": items[:1], "to": "junk"}).json()
        junk = r["edit"]["to"]
        assert clusters_of(c)[junk]["junk"] and labels_of(c)[items[0]] == junk
        post(c, "/api/edits", {"kind": "tag", "clusters": [a], "items": items[1:3], "add": ["sky"]})
        post(c, "/api/edits", {"kind": "junk", "clusters": [moved_to]})
        assert clusters_of(c)[moved_to]["junk"] is True
        assert c.get(f"/api/items/{items[1]}").json()["tags"] == ["sky"]
        # undo, undo, redo
        seq = c.get("/api/version").json()["seq"]
        post(c, "/api/undo")
        assert clusters_of(c)[moved_to]["junk"] is False
        post(c, "/api/undo")
        assert c.get(f"/api/items/{items[1]}").json()["tags"] == []
        r = post(c, "/api/redo").json()
        assert r["can_redo"] is False or r["can_redo"] is True
        assert c.get(f"/api/items/{items[1]}").json()["tags"] == ["sky"]
        ev = c.get("/api/edits", params={"since": seq}).json()["events"]
        assert [e["kind"] for e in ev] == ["undo", "undo", "redo"]
        # written back into the run: assignments.curated_* and curated.json
        v = wait_written(c)
        assert v["written"] == v["seq"]
        run = RunDir.open(server.run)
        asg = run.read_assignments()
        assert (asg["curated_cluster"].to_numpy() == labels_of(c)).all()
        assert set(asg["curated_status"]) >= {"clustered", "junk"}
        assert json.loads(asg["curated_tags"][items[1]]) == ["sky"]
        doc = run.read_curated()
        assert doc["edits_seq"] == v["seq"] and {e["id"] for e in doc["clusters"]} >= {a, b, moved_to, junk}
        from mediacluster.naming import load_names

        names = load_names(run)
        assert names[a] == "flying things" and names[moved_to] == "odd ones"
        assert load_names(run, automatic=False)[a] == "flying things"
        assert "part one" in load_names(run).values()


def test_export_and_download(server):
    with client(server) as c:
        lab = labels_of(c)
        out = {}
        for kind in ("folders", "csv", "parquet", "labelstudio"):
            r = post(c, "/api/export", {"kind": kind})
            assert r.status_code == 200, r.text
            out[kind] = Path(r.json()["path"])
            assert out[kind].parent == server.run / "exports" and r.json()["items"] == len(lab)
        assert post(c, "/api/export", {"kind": "zip"}).status_code == 422
        assert post(c, "/api/export", {"kind": "folders", "mode": "move"}).status_code == 422
        # one folder per cluster of symbolic links to the real files
        cl = clusters_of(c)
        folders = {p.name: p for p in out["folders"].iterdir()}
        linked = [f for d in folders.values() for f in d.iterdir()]
        assert len(linked) == len(lab) and all(f.is_symlink() and f.resolve().is_file() for f in linked)
        for cid in set(lab.tolist()):
            d = next(p for name, p in folders.items() if name.split(" ")[0 if not name.startswith("junk") else 1] == f"{cid:03d}")
            assert len(list(d.iterdir())) == int((lab == cid).sum())
            assert cl[cid]["name"][:20].strip() in d.name or cl[cid]["junk"]
        t = pd.read_csv(out["csv"] / "curated_assignments.csv")
        assert (t["curated_cluster"].to_numpy() == lab).all() and len(t) == len(lab)
        pq = pd.read_parquet(out["parquet"] / "curated_assignments.parquet")
        assert (pq["curated_cluster"].to_numpy() == lab).all()
        tasks = json.loads((out["labelstudio"] / "tasks.json").read_text())
        assert len(tasks) == len(lab)
        pred = tasks[0]["predictions"][0]["result"][0]
        assert pred["type"] == "choices" and pred["from_name"] == "cluster" and pred["to_name"] == "image"
        assert tasks[0]["data"]["image"].startswith("/data/local-files/?d=")
        # Label Studio serves the files from the run's collection root
        from urllib.parse import unquote

        from mediacluster.rundir import RunDir

        root = RunDir.open(server.run).collection_root.path
        assert f"DOCUMENT_ROOT={root} " in (out["labelstudio"] / "README.txt").read_text()
        assert all((Path(root) / unquote(t["data"]["image"].split("?d=", 1)[1])).is_file() for t in tasks)
        cfg = (out["labelstudio"] / "label_config.xml").read_text()
        import xml.etree.ElementTree as ET

        choices = {ch.get("value") for ch in ET.fromstring(cfg).iter("Choice")}
        assert {t["predictions"][0]["result"][0]["value"]["choices"][0] for t in tasks if "predictions" in t} <= choices
        r = c.get("/api/download/curated_assignments.csv")
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        assert len(pd.read_csv(io.StringIO(r.text))) == len(lab)
        assert c.get("/api/download/run.json").status_code == 404
        kinds = [e["kind"] for e in c.get("/api/edits").json()["events"]]
        assert kinds.count("export") >= 4


def test_publish_makes_a_model_of_the_curated_clusters(server, cifar3_dir):
    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline
    from mediacluster.rundir import RunDir
    from mediacluster.tags.data import examples_from_run

    with client(server) as c:
        lab = labels_of(c)
        named = int(np.bincount(lab[lab >= 0]).argmax())
        assert post(c, "/api/edits", {"kind": "rename", "cluster": named, "name": "published name"}).status_code == 200
        cl = clusters_of(c)
        wait_written(c)  # the rename written: the publish record after it changes nothing to write
        res = publish(c)
        assert res["version"] == "v0002" and res["agreement"] >= 0.99
        v = c.get("/api/version").json()
        assert v["written"] == v["seq"], v
    run = RunDir.open(server.run)
    assert run.models.pointer()["source"] == "studio" and run.models.pointer()["version"] == "v0002"
    model = Pipeline.load(server.run)  # a run folder: its latest version
    curated = lab >= 0
    pred = model.predict(run.read_vectors(mmap=False))
    assert np.mean(pred[curated] == lab[curated]) >= 0.99
    # it keeps the run's ids and paths for `similar`: an item's own vector finds it by its id
    items = run.read_items()
    sim = model.similar(run.read_vectors(mmap=False)[[0, 7]], k=1)
    assert sim["ids"] == [[items["id"][0]], [items["id"][7]]] and sim["paths"] == [[items["path"][0]], [items["path"][7]]]
    meta = model.model_info_["metadata"]
    assert meta["source"] == "studio" and meta["encoder"] == "efficientnet-lite0"
    assert {int(k): v for k, v in meta["names"].items()} == {k: e["name"] for k, e in cl.items()}
    # `assign` loads it and names with the curated names
    out = server.run.parent / "assigned.csv"
    frogs = sorted((cifar3_dir / "frog").iterdir())[:5]
    assert main(["assign", str(server.run), *map(str, frogs), "--out", str(out), "--quiet"]) == 0
    got = pd.read_csv(out)
    assert set(got["name"]) <= {e["name"] for e in cl.values()}
    # `tags train --run` reads the curated clusters and the names a person gave
    # (every other curated cluster is learned as "other": what none of the tags is)
    ex = examples_from_run(server.run)
    # (a junk cluster, as an earlier test of this module's run may have made one, teaches nothing)
    person = {k: e["name"] for k, e in cl.items() if e["named_by"] == "person" and not e["junk"]}
    taught = [int(c) for c in lab if c >= 0 and not cl[int(c)]["junk"]]
    assert "published name" in set(ex.labels) and len(ex.labels) == len(taught)
    assert ex.labels == [person.get(c, "other") for c in taught]
    # the report shows the curated clusters and their names
    from mediacluster.report import build_report

    html = build_report(server.run, progress=False).read_text(encoding="utf-8")
    assert "published name" in html
    import re

    cards = set(map(int, re.findall(r'<section class="card" data-cluster="(\d+)"', html)))
    assert cards == set(lab[lab >= 0].tolist())


@pytest.mark.slow
def test_junk_clusters_are_junk_in_the_published_model_and_the_service(base_run, tmp_path):
    """A cluster a person marked as junk is "junk" wherever the published model answers, as it is
    in the run's curated_status: predict_details, `assign` and the service (the model carried the
    junk list in its metadata, but they all answered "clustered" with the junk cluster's name), and
    the service's /v1/clusters marks it."""
    import re
    import subprocess
    import sys

    import httpx

    from mediacluster.cli import main
    from mediacluster.pipeline import Pipeline
    from mediacluster.rundir import RunDir

    run = copy_run(base_run, tmp_path / "run")
    s = Server(run)
    try:
        with client(s) as c:
            lab = labels_of(c)
            junk = int(np.bincount(lab[lab >= 0]).argmax())
            assert post(c, "/api/edits", {"kind": "junk", "clusters": [junk]}).status_code == 200
            assert post(c, "/api/publish").status_code == 200
            wait_written(c)
    finally:
        s.stop()
    rd = RunDir.open(run)
    a = rd.read_assignments()
    X = rd.read_vectors(mmap=False)
    assert set(a.loc[a["curated_cluster"] == junk, "curated_status"]) == {"junk"}
    det = Pipeline.load(run).predict_details(X)
    assert (det["labels"] == lab).mean() >= 0.99
    assert set(det["status"][det["labels"] == junk]) == {"junk"}
    assert set(det["status"][det["labels"] >= 0][det["labels"][det["labels"] >= 0] != junk]) == {"clustered"}
    vec = tmp_path / "vectors.npy"
    np.save(vec, X[:40])
    out = tmp_path / "assigned.csv"
    assert main(["assign", str(run), str(vec), "--out", str(out), "--quiet"]) == 0
    got = pd.read_csv(out)
    assert (got["status"] == np.where(det["labels"][:40] == junk, "junk",
                                      np.where(det["labels"][:40] >= 0, "clustered", "noise"))).all()
    proc = subprocess.Popen([sys.executable, "-m", "mediacluster", "serve", str(run), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        while url is None and (line := proc.stdout.readline()):
            m = re.search(r"listening on (\S+)", line)
            url = m and m.group(1).rstrip("/")
        assert url, "the service did not start"
        items = httpx.post(url + "/v1/assign", json={"vectors": X[:40].tolist()}, timeout=120).json()["items"]
        assert [it["status"] for it in items] == got["status"].tolist()
        assert junk in {it["cluster"] for it in items}
        # /v1/clusters says which cluster is junk (a client listing the clusters as topics showed
        # the junk one as any other: it said nothing of it)
        listed = httpx.get(url + "/v1/clusters", timeout=60).json()["clusters"]
        assert {e["id"]: e["junk"] for e in listed} == {e["id"]: e["id"] == junk for e in listed}
    finally:
        proc.terminate()
        proc.wait(30)


def test_label_studio_readme_quotes_the_collection_folder_for_the_shell(cifar3_dir, tmp_path):
    """The Label Studio README's command line is pasted into a shell: a collection folder with a
    space (or a quote) in its name must stay one word (it read "...DOCUMENT_ROOT=/x/My Photos
    label-studio", which runs "Photos" with the variable set to "/x/My")."""
    import shlex
    import shutil
    import subprocess

    from mediacluster.studio.exports import export

    folder = tmp_path / "My Photos 'n' more"
    folder.mkdir()
    paths = []
    for k, src in enumerate(sorted((cifar3_dir / "frog").glob("*.jpg"))[:2]):
        paths.append(str(shutil.copy(src, folder / f"{k}.jpg")))
    table = pd.DataFrame({"id": paths, "curated_cluster": [0, 0], "probability": [1.0, 1.0]})
    res = export("labelstudio", tmp_path / "exports", paths=paths, table=table,
                 clusters=[{"id": 0, "name": "frogs"}], seq=1)
    readme = (Path(res["path"]) / "README.txt").read_text(encoding="utf-8")
    line = next(x.strip() for x in readme.splitlines() if "DOCUMENT_ROOT=" in x)
    words = shlex.split(line)
    assert words == [f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={folder}", "label-studio"], words
    # and a shell reads it so: the variable holds the whole folder name
    out = subprocess.run(["sh", "-c", line.replace("label-studio", 'printenv LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT')],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(folder)


def test_split_parts_are_not_named_like_other_clusters(base_run, tmp_path):
    """A split's parts get names no other cluster has (a finer level's stored name or a fresh
    one could repeat another cluster's: two clusters "chain saw (tool)" on a real run)."""
    from mediacluster.studio.session import Studio

    run = copy_run(base_run, tmp_path / "run")
    st = Studio(run, warm=False)
    try:
        lab = st.state.labels
        big, other = (int(c) for c in np.argsort(-np.bincount(lab[lab >= 0]))[:2])
        first = st.split_preview(big, k=2)["parts"]
        st.edit("rename", {"cluster": other, "name": first[0]["name"]})
        again = st.split_preview(big, k=2)["parts"]
        names = [p["name"] for p in again]
        others = {c.name for c in st.state.alive() if c.id != big}
        assert len(set(names)) == len(names) and not set(names) & others, (names, others)
        assert first[0]["name"] + " 2" in names
    finally:
        st.close()


def test_splitting_a_cluster_a_person_named_keeps_their_name_on_its_largest_part(base_run, tmp_path):
    """Split "my planes": the part that keeps the cluster's id (the largest) keeps the person's
    name, as the preview shows it, and it stays theirs (sure); the other part is named
    automatically. A cluster nobody named splits into automatic names as before."""
    from mediacluster.studio.session import Studio

    run = copy_run(base_run, tmp_path / "run")
    st = Studio(run, warm=False)
    try:
        lab = st.state.labels
        big, other = (int(c) for c in np.argsort(-np.bincount(lab[lab >= 0]))[:2])
        auto = [p["name"] for p in st.split_preview(big, k=2)["parts"]]
        assert st.state.clusters[big].name not in auto or st.state.clusters[big].named_by == "automatic"
        st.edit("rename", {"cluster": big, "name": "my planes"})
        pv = st.split_preview(big, k=2)
        largest = max(pv["parts"], key=lambda p: p["size"])
        rest = [p for p in pv["parts"] if p is not largest]
        assert largest["name"] == "my planes" and largest["name_sure"] is True and largest["named_by"] == "person"
        assert [p["name"] for p in rest] != ["my planes"] and all("named_by" not in p for p in rest)
        st.edit("split", {"preview": pv["preview"]})
        kept = st.state.clusters[big]
        assert kept.name == "my planes" and kept.named_by == "person"
        new = [c for c in st.state.alive() if c.parent == big]
        assert len(new) == 1 and new[0].named_by == "automatic" and new[0].name == rest[0]["name"]
        row = next(c for c in st.clusters()["clusters"] if c["id"] == big)
        assert row["name_sure"] is True and row["named_by"] == "person"
        # undo and split with a typed name for the big part: the typed one wins, still the person's
        st.edit("undo", {"target": None})
        pv = st.split_preview(big, k=2)
        names = ["typed" if p["size"] == largest["size"] and p["name"] == "my planes" else None for p in pv["parts"]]
        st.edit("split", {"preview": pv["preview"], "names": names})
        assert st.state.clusters[big].name == "typed" and st.state.clusters[big].named_by == "person"
        # the other cluster, named by nobody: its parts' names are automatic
        pv = st.split_preview(other, k=2)
        assert all(p.get("named_by") != "person" for p in pv["parts"])
    finally:
        st.close()


def test_the_report_says_which_curated_clusters_are_junk(base_run, tmp_path):
    """A cluster marked as junk in the studio carries a "junk" badge on its report card and in the
    map's legend (the report showed it like any other cluster)."""
    import re

    from mediacluster.report import build_report
    from mediacluster.studio.session import Studio

    run = copy_run(base_run, tmp_path / "run")
    st = Studio(run, warm=False)
    try:
        lab = st.state.labels
        junk = int(np.bincount(lab[lab >= 0]).argmax())
        st.edit("junk", {"clusters": [junk]})
        st.write_state()
    finally:
        st.close()
    page = build_report(run, progress=False).read_text(encoding="utf-8")
    cards = dict(re.findall(r'<section class="card" data-cluster="(\d+)".*?<h3[^>]*>(.*?)</h3>', page, re.S))
    assert set(map(int, cards)) == set(lab[lab >= 0].tolist())
    assert [int(c) for c, h3 in cards.items() if 'class="junk"' in h3] == [junk]
    data = json.loads(re.search(r'<script id="mc-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert [c["id"] for c in data["clusters"] if c["junk"]] == [junk]


@pytest.mark.slow
def test_a_second_publish_keeps_the_fitted_models_space(base_run, tmp_path):
    """Publishing again in a later session uses the cluster job's reduced space, as the first
    publish did: the studio took the LATEST version as "the fitted model", which after a first
    publish is the curated one (its labels differ), and fell back to the 2-D map."""
    from mediacluster.pipeline import Pipeline

    run = copy_run(base_run, tmp_path / "run")
    versions = []
    for name in ("first", "second"):  # two sessions: the studio restarted between publishes
        s = Server(run)
        try:
            with client(s) as c:
                cid = min(clusters_of(c))
                assert post(c, "/api/edits", {"kind": "rename", "cluster": cid, "name": name}).status_code == 200
                other = c.get(f"/api/clusters/{max(clusters_of(c))}/all").json()["items"][:3]
                assert post(c, "/api/edits", {"kind": "move", "items": other, "to": cid}).status_code == 200
                r = post(c, "/api/publish")
                assert r.status_code == 200, r.text
                versions.append(r.json()["version"])
        finally:
            s.stop()
    assert versions == ["v0002", "v0003"]
    fitted = Pipeline.load(run / "models" / "v0001")
    for v in versions:
        m = Pipeline.load(run / "models" / v)
        assert m.model_info_["metadata"]["names"][str(cid)] == ("first" if v == "v0002" else "second")
        np.testing.assert_array_equal(m.embedding_, fitted.embedding_)


def test_path_traversal_and_foreign_hosts(server):
    secret = (server.run / "run.json").read_text()
    attempts = [
        "/static/../../run.json", "/static/..%2f..%2frun.json", "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/studio.js/../../app.py", "/static/..%5c..%5capp.py", "/static/index.html/..",
        "/api/items/..%2f..%2fetc%2fpasswd/thumb", "/api/items/-1/thumb", "/api/items/300/preview",
        "/api/items/1e3/thumb", "/api/items/0x10/thumb", "/api/levels/..%2f..%2frun.json",
        "/api/download/..%2frun.json", "/api/download/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd", "/api/items/0/thumb?size=../../etc/passwd",
        "/exports/", "/run.json", "/edits.sqlite", "/models/LATEST",
        "/static-offline-docs/../../run.json", "/static-offline-docs/..%2f..%2f..%2frun.json",
        "/static-offline-docs/%2e%2e/%2e%2e/etc/passwd",
    ]
    host, port = server.base.split("//")[1].rstrip("/").split(":")
    for path in attempts + ["/../../etc/passwd", "/static/../../../../etc/passwd", "//etc/passwd"]:
        # a raw request: no client-side normalisation of the path
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert 400 <= status < 500, (path, head)
        assert b"root:" not in body and secret.encode()[:40] not in body
        if status != 400 or b"json" in head:
            assert body.startswith(b"{") and b'"error"' in body, (path, body[:200])
    with client(server) as c:
        # DNS rebinding: a loopback studio answers only to loopback names
        assert c.get("/api/info", headers={"Host": "evil.example:80"}).status_code == 403
        assert c.get("/api/info", headers={"Host": f"localhost:{port}"}).status_code == 200
        # the server still serves after all of that
        assert c.get("/api/version").status_code == 200


def test_malformed_requests_get_4xx_and_the_connection_serves_on(server):
    """Values of the wrong type or size in a request are the client's mistake: a 4xx JSON error
    naming the value, never a 500 (a split preview of cluster "x" or k "x", and an edit history
    since a number past SQLite's integers, were 500s), and the next request on the same
    connection is served."""
    with client(server) as c:
        cid = min(clusters_of(c))
        bad = [("POST", "/api/split/preview", {"cluster": "x"}, "cluster"),
               ("POST", "/api/split/preview", {"cluster": [1]}, "cluster"),
               ("POST", "/api/split/preview", {"cluster": None}, "cluster"),
               ("POST", "/api/split/preview", {"cluster": cid, "k": "x"}, "k"),
               ("POST", "/api/split/preview", {"cluster": cid, "k": 2.5}, "k"),
               ("POST", "/api/split/preview", {"cluster": cid, "k": {"a": 1}}, "k"),
               ("GET", "/api/edits?since=99999999999999999999999", None, None),
               ("GET", "/api/edits?since=-99999999999999999999999&limit=99999999999999999999", None, None)]
        for method, path, body, names in bad:
            r = post(c, path, body) if method == "POST" else c.get(path)
            if names is None:  # out-of-range numbers are clipped: an answer, not an error
                assert r.status_code == 200 and "events" in r.json(), (path, r.text)
            else:  # refused by the body's schema (web.StrictBody), naming the field
                assert r.status_code == 422, (body, r.status_code, r.text)
                assert r.json()["error"]["kind"] == "invalid_request" and names in r.json()["error"]["message"]
            assert c.get("/api/version").status_code == 200  # same connection, still served
        # a whole number written 2.0 is one (JSON Schema's "integer"); the text "2" is not
        assert post(c, "/api/split/preview", {"cluster": cid, "k": 2.0}).status_code == 200
        assert post(c, "/api/split/preview", {"cluster": cid, "k": "2"}).status_code == 422


def test_an_unknown_query_parameter_is_a_422_and_the_pages_own_are_taken(server):
    """A query parameter a route does not take (`/api/clusters/0/items?limt=5`, a POST's
    `?dry_run=1`) was ignored: the request answered, or the edit applied, as if it were absent.
    Now every described operation refuses it with a 422 naming it and the route's parameters
    (web.app: the route's declared ones), before any handler runs; the query strings the page
    builds (studio.js: its thumbnails, briefs, gallery pages and searches) and the token are
    taken."""
    from test_web import refuses_unknown_query

    with client(server) as c:
        cid = min(clusters_of(c))
        before = c.get("/api/version").json()["seq"]
        assert refuses_unknown_query(c, WRITE, free=("/static/{name}",)) >= 25
        assert c.get("/static/studio.js?v=2").status_code == 200  # a file: cache-busting is no typo
        r = c.get(f"/api/clusters/{cid}/items?limt=5")
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["parameters"] == ["limt"] and err["accepted"] == ["limit", "offset", "order"]
        assert "'limt' (did you mean 'limit'?)" in err["message"]
        r = post(c, "/api/edits?dry_run=1", {"kind": "rename", "cluster": cid, "name": "not applied"})
        assert r.status_code == 422 and "'dry_run'" in r.json()["error"]["message"], r.text
        assert c.get("/api/version").json()["seq"] == before  # nothing was recorded
        assert clusters_of(c)[cid]["name"] != "not applied"
        # what the page sends (studio.js: thumbURL, api("api/briefs?ids=..."), q({...}))
        page = ["/api/items/5/thumb?size=96", "/api/briefs?ids=5,7",
                f"/api/clusters/{cid}/items?offset=0&limit=60&order=typical",
                f"/api/search/words?q=dog&cluster={cid}&limit=200", "/api/search/words?q=dog&limit=200",
                "/api/search/similar?item=5&limit=100", f"/api/search/similar?item=5&cluster={cid}&limit=100",
                "/?token=anything", "/api/info?token=anything"]
        for url in page:
            assert c.get(url).status_code == 200, url


def test_edits_of_the_wrong_shape_get_422_naming_the_field(server):
    """Edits whose values have the wrong type or size (found by fuzzing the described API,
    tests/test_fuzz.py): a cluster id of Infinity or 1e400 (Python's JSON reads both as inf),
    a number where a list belongs, "no" for a junk flag, a fraction or text for an item, and a
    split part number of 10**12 (np.bincount's array of 8 TB) were 500s or silently
    something else; each is refused naming the field (a value of the wrong type by the body's
    schema, web.StrictBody: 422; a part number past the members by the state: 400), nothing is
    recorded, and the connection serves on."""
    with client(server) as c:
        cid = min(clusters_of(c))
        members = c.get(f"/api/clusters/{cid}/all").json()["items"]
        seq = c.get("/api/version").json()["seq"]
        raw = [(b'{"kind": "rename", "cluster": Infinity, "name": "x"}', "cluster"),
               (b'{"kind": "rename", "cluster": 1e400, "name": "x"}', "cluster"),
               (b'{"kind": "merge", "clusters": [-Infinity, %d]}' % cid, "cluster"),
               (b'{"kind": "move", "items": [0], "to": Infinity}', "to")]
        bodies = [({"kind": "rename", "cluster": 0.5, "name": "x"}, "cluster"),
                  ({"kind": "tag", "clusters": [cid], "add": 5}, "add"),
                  ({"kind": "tag", "clusters": cid, "add": ["x"]}, "clusters"),
                  ({"kind": "tag", "items": 3, "add": ["x"]}, "items"),
                  ({"kind": "tag", "clusters": [cid], "remove": "x"}, "remove"),
                  ({"kind": "junk", "clusters": 5}, "clusters"),
                  ({"kind": "junk", "clusters": [cid], "value": "no"}, "value"),
                  ({"kind": "move", "items": [1.5], "to": cid}, "items"),
                  ({"kind": "move", "items": ["1"], "to": cid}, "items"),
                  ({"kind": "move", "items": [True], "to": cid}, "items"),
                  ({"kind": "split", "cluster": cid, "items": members, "parts": "x"}, "parts"),
                  ({"kind": "split", "cluster": cid, "items": members,
                    "parts": [0] * (len(members) - 1) + [1], "names": 5}, "names")]
        answers = [(c.post("/api/edits", content=body, headers={**WRITE, "Content-Type": "application/json"}), name)
                   for body, name in raw]
        answers += [(post(c, "/api/edits", body), name) for body, name in bodies]
        for r, name in answers:  # the wrong type: refused by the body's schema (web.StrictBody)
            assert r.status_code == 422, (name, r.status_code, r.text)
            err = r.json()["error"]
            assert err["kind"] == "invalid_request" and name in err["message"], err
            assert c.get("/api/version").status_code == 200  # same connection, still served
        # a whole number, but past the member count: the state's check (np.bincount's 8 TB array)
        r = post(c, "/api/edits", {"kind": "split", "cluster": cid, "items": members,
                                   "parts": [0] * (len(members) - 1) + [10 ** 12]})
        assert r.status_code == 400 and r.json()["error"]["kind"] == "input" and "parts" in r.text, r.text
        assert c.get("/api/version").json()["seq"] == seq  # nothing was recorded
        # a body that is not UTF-8 JSON: FastAPI's "There was an error parsing the body" said
        # neither what nor why
        r = c.post("/api/edits", content=b"\xcdA", headers={**WRITE, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["kind"] == "invalid_request", r.text
        assert "UTF-8" in r.json()["error"]["message"]
        # a form Starlette cannot split: a 400 of kind invalid_request, not "http_error"
        for ctype, body in (("multipart/form-data", b"abc"),
                            ("multipart/form-data; boundary=x", b"--x\r\nbroken\r\n\r\nab\r\n--x--\r\n")):
            r = c.post("/api/search/image", content=body, headers={**WRITE, "Content-Type": ctype})
            assert r.status_code == 400 and r.json()["error"]["kind"] == "invalid_request", r.text
            assert "multipart" in r.json()["error"]["message"], r.text
        # the description says what each body holds, so clients (and fuzzers) reach the handlers
        spec = c.get("/openapi.json").json()
        def schema(d: dict) -> dict:
            return spec["components"]["schemas"][d["$ref"].rsplit("/", 1)[1]] if "$ref" in d else d

        edit = spec["paths"]["/api/edits"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        kinds = [schema(e) for e in edit["oneOf"]]
        assert {e["properties"]["kind"]["const"] for e in kinds} == {"rename", "merge", "move", "split", "tag", "junk",
                                                                       "keep", "level_rename"}
        for path in ("/api/split/preview", "/api/export"):
            kinds.append(schema(spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]))
        for body in kinds:  # every key is described and no other is taken (web.StrictBody)
            assert body["required"] and body["properties"] and body["additionalProperties"] is False, body
        assert {"400", "403", "404", "409", "413", "422"} <= set(spec["paths"]["/api/edits"]["post"]["responses"])
        assert "image/jpeg" in spec["paths"]["/api/items/{i}/thumb"]["get"]["responses"]["200"]["content"]
        params = {p["name"]: p["schema"] for p in spec["paths"]["/api/clusters/{cid}/items"]["get"]["parameters"]}
        assert params["order"]["enum"] == ["typical", "borderline", "map", "file", "label"]
        # a 405 names every method of the path: Starlette's named the first route's only
        r = c.request("TRACE", "/api/edits", headers=WRITE)
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.headers
        # an empty object or text where a word belongs was the default, not a mistake
        for path, body, name in (("/api/export", {"kind": "csv", "mode": {}}, "mode"),
                                 ("/api/export", {"kind": "csv", "mode": ""}, "mode"),
                                 ("/api/split/preview", {"cluster": cid, "k": 2, "reducer": {}}, "reducer")):
            r = post(c, path, body)
            assert r.status_code == 422 and name in r.json()["error"]["message"], (body, r.text)


@pytest.mark.slow
def test_token_off_loopback(base_run, tmp_path):
    import httpx

    run = copy_run(base_run, tmp_path / "run")
    s = Server(run, "--host", "0.0.0.0")
    try:
        assert "?token=" in s.url
        token = s.url.split("token=")[1]
        base = s.base.replace("0.0.0.0", "127.0.0.1")
        with httpx.Client(base_url=base, timeout=60) as c:
            r = c.get("/api/info")
            assert r.status_code == 401 and r.json()["error"]["kind"] == "unauthorized"
            assert c.get("/api/info", params={"token": "wrong"}).status_code == 401
            r = c.get("/", params={"token": token})
            assert r.status_code == 200 and "mediacluster_token" in r.headers["set-cookie"]
            assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
            assert c.get("/api/info").status_code == 200  # the cookie from the page
            assert httpx.get(base + "api/info", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        s.stop()


# ------------------------------------------------------------------------------ durability
@pytest.mark.slow
def test_acknowledged_edits_survive_kill_9(base_run, tmp_path):
    from mediacluster.rundir import RunDir

    run = copy_run(base_run, tmp_path / "run")
    s = Server(run)
    with client(s) as c:
        lab = labels_of(c)
        acked = []
        for k in range(12):
            r = post(c, "/api/edits", {"kind": "rename", "cluster": int(lab[0]), "name": f"name {k}"})
            assert r.status_code == 200
            acked.append(r.json()["seq"])
        r = post(c, "/api/edits", {"kind": "move", "items": [1, 2, 3], "to": "new", "name": "last"})
        assert r.status_code == 200
        last = r.json()
    s.kill9()  # at once: the background writer had no time to write the tables
    assert s.proc.returncode == -9
    s2 = Server(run)
    try:
        with client(s2) as c:
            v = c.get("/api/version").json()
            assert v["seq"] == last["seq"] == acked[-1] + 1
            assert clusters_of(c)[int(lab[0])]["name"] == "name 11"
            assert (labels_of(c)[[1, 2, 3]] == last["edit"]["to"]).all()
            v = wait_written(c)  # the reopened studio writes what the killed one had not
            assert v["written"] == v["seq"]
        asg = RunDir.open(run).read_assignments()
        assert (asg["curated_cluster"].to_numpy()[[1, 2, 3]] == last["edit"]["to"]).all()
    finally:
        s2.stop()


@pytest.mark.slow
def test_two_clients_see_each_other_and_lose_nothing(base_run, tmp_path):
    run = copy_run(base_run, tmp_path / "run")
    s = Server(run)
    try:
        with client(s) as a, client(s) as b:
            lab = labels_of(a)
            ids = sorted(set(lab.tolist()))
            # b sees a's edit within a few seconds by polling, as the page does
            seq0 = b.get("/api/version").json()["seq"]
            post(a, "/api/edits", {"kind": "rename", "cluster": ids[0], "name": "from tab A"},
                 headers={"X-Mediacluster-Client": "tabA"})
            t0 = time.time()
            while b.get("/api/version").json()["seq"] == seq0:
                assert time.time() - t0 < 3
                time.sleep(0.1)
            assert clusters_of(b)[ids[0]]["name"] == "from tab A"
            # both edit at once: every acknowledged edit is in the log, in one order
            acks: dict[str, list] = {"A": [], "B": []}
            errors = []

            def work(c, who, cid, items):
                for k in range(15):
                    r = post(c, "/api/edits", {"kind": "rename", "cluster": cid, "name": f"{who}{k}"},
                             headers={"X-Mediacluster-Client": f"tab{who}"})
                    (acks[who] if r.status_code == 200 else errors).append(r.json())
                    r = post(c, "/api/edits", {"kind": "tag", "items": [int(items[k])], "add": [who]},
                             headers={"X-Mediacluster-Client": f"tab{who}"})
                    (acks[who] if r.status_code == 200 else errors).append(r.json())

            ta = threading.Thread(target=work, args=(a, "A", ids[1], np.flatnonzero(lab == ids[1])))
            tb = threading.Thread(target=work, args=(b, "B", ids[2], np.flatnonzero(lab == ids[2])))
            ta.start()
            tb.start()
            ta.join()
            tb.join()
            assert not errors
            seqs = [x["seq"] for x in acks["A"] + acks["B"]]
            assert len(seqs) == 60 and len(set(seqs)) == 60
            ev = a.get("/api/edits", params={"since": 0, "limit": 1000}).json()["events"]
            assert {e["seq"] for e in ev} >= set(seqs)
            assert {e["client"] for e in ev} >= {"tabA", "tabB"}
            for c in (a, b):
                cl = clusters_of(c)
                assert cl[ids[1]]["name"] == "A14" and cl[ids[2]]["name"] == "B14"
            tagged = [a.get(f"/api/items/{int(i)}").json()["tags"] for i in np.flatnonzero(lab == ids[1])[:15]]
            assert all(t == ["A"] for t in tagged)
    finally:
        s.stop()
    # a second process on the same log (another studio) picks up the edits too
    from mediacluster.studio.session import Studio

    st = Studio(run)
    try:
        assert st.state.clusters[ids[1]].name == "A14" and st.state.seq == max(seqs)
    finally:
        st.close()


# ------------------------------------------------------------------------------ levels, CLIP, CLI
def test_levels_of_a_hierarchy_are_shown(base_run, tmp_path):
    from mediacluster.rundir import RunDir
    from mediacluster.studio.session import Studio

    run_dir = copy_run(base_run, tmp_path / "run")
    run = RunDir.open(run_dir)
    lab = run.read_assignments()["cluster"].to_numpy()
    coarse = (lab > 0).astype(np.int64)  # 2 groups over the 3 clusters
    # the clusterer's layout (RunDir.read_levels): one (n_levels, n) array, row 0 coarsest,
    # ``level`` the row the run's clusters are
    with run.writing("test"):
        run.write_hierarchy({"levels": np.stack([coarse, lab]), "level": np.int64(1)})
    st = Studio(run_dir)
    try:
        info = st.info()
        assert [(lv["name"], lv["groups"]) for lv in info["levels"]] == [("levels 0", 2), ("levels 1", 3)]
        # the clusters grouped as a curated model would be published: the coarse level only
        assert st.clusters()["groups"] == {"levels 0": {str(c): int(c > 0) for c in set(lab.tolist())}}
        assert np.frombuffer(st.level_bytes("levels 0"), "<i4").tolist() == coarse.tolist()
        assert np.frombuffer(st.level_bytes("levels 1"), "<i4").tolist() == lab.tolist()
        with pytest.raises(Exception, match="no level"):
            st.level_bytes("nope")
    finally:
        st.close()


def test_a_large_run_without_a_map_opens_on_pca_and_gets_its_umap_map(base_run, tmp_path, monkeypatch):
    """A run without a 2-D map and at least MAP_BACKGROUND_MIN items opens at once on a PCA map;
    the UMAP map is laid out in the background, cached in the run and shown instead."""
    from mediacluster.rundir import RunDir
    from mediacluster.studio import session

    run_dir = copy_run(base_run, tmp_path / "run")
    for f in ("map2d.npy", "map2d.json"):
        (run_dir / f).unlink(missing_ok=True)
    assert RunDir.open(run_dir).read_map(300) is None
    monkeypatch.setattr(session, "MAP_BACKGROUND_MIN", 100)  # the 300-item run counts as large
    st = session.Studio(run_dir, warm=False)
    try:
        # laying out 300 items with UMAP takes far longer than returning from the constructor
        first = st.info()
        assert (first["map_method"], first["map_pending"]) == ("pca", True)
        pca = np.frombuffer(st.map_bytes(), "<f4")
        assert len(pca) == 600 and np.isfinite(pca).all()
        deadline = time.time() + 120
        while st.version()["map_pending"] and time.time() < deadline:
            time.sleep(0.2)
        v = st.version()
        assert (v["map"], v["map_pending"]) == ("umap", False)
        umap = np.frombuffer(st.map_bytes(), "<f4")
        assert len(umap) == 600 and np.isfinite(umap).all() and not np.allclose(umap, pca)
        cached = RunDir.open(run_dir).read_map(300)
        assert cached is not None and cached[1]["method"] == "umap"
        assert np.allclose(np.asarray(cached[0], np.float32).T.ravel(), umap)
    finally:
        st.close()
    st2 = session.Studio(run_dir, warm=False)  # the next start reads the cached UMAP map
    try:
        assert (st2.info()["map_method"], st2.info()["map_pending"]) == ("umap", False)
    finally:
        st2.close()


def test_automatic_split_follows_the_hierarchy(cifar3_embeddings, tmp_path, one_blas_thread):
    """On a run with levels an automatic split gives the cluster's children at the first finer
    level (the groups the report's finer levels show), not a new K-means; an item a person
    moved in joins the part its neighbours are in; explicit k or space still re-cluster."""
    from test_levels import pca_tree

    from mediacluster.errors import InputError
    from mediacluster.report.build import map_2d
    from mediacluster.studio.session import Studio
    from mediacluster.studio.split import min_part
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    run = publish_run(tmp_path / "run", cifar3_embeddings, pipe, save_model=True)
    with run.writing("test"):
        map_2d(run, cifar3_embeddings.vectors, method="pca")
    levels, lv = pipe.levels_, pipe.level_
    assert lv + 1 < len(levels), "the test needs a finer level than the one in use"
    st = Studio(run.path)
    try:
        assert len(st.info()["levels"]) == len(levels)
        # the cluster of the level in use that the next finer level splits into most parts
        # (each at least min_part items)
        def kids(c, k):
            sub = levels[k][levels[lv] == c]
            vals, cnt = np.unique(sub, return_counts=True)
            return vals[cnt >= min_part(len(sub))]
        cid = max(np.unique(levels[lv]), key=lambda c: len(kids(c, lv + 1)))
        assert len(kids(cid, lv + 1)) >= 2
        members = np.flatnonzero(levels[lv] == cid)
        pv = st.split_preview(int(cid))
        assert pv["space"] == "tree" and pv["level"]
        part_of = dict(zip(pv["labels"]["items"], pv["labels"]["parts"]))
        finer = levels[lv + 1]
        # the parts are exactly the finer level's clusters inside it (small slivers joined)
        for child in kids(cid, lv + 1):
            inside = members[finer[members] == child]
            assert len({part_of[int(i)] for i in inside}) == 1
        assert pv["k"] == len(kids(cid, lv + 1)) and sorted(part_of) == members.tolist()
        assert all(p["name"] and p["examples"] for p in pv["parts"])
        # explicit k, or an explicit space, re-cluster as before; "tree" where nothing splits
        assert st.split_preview(int(cid), k=2)["space"] == "model"
        assert st.split_preview(int(cid), reducer="pca")["space"] == "pca"
        # an item a person moved in is not a part of its own: it joins its neighbours' part
        stray = int(np.flatnonzero(levels[lv] != cid)[0])
        st.edit("move", {"items": [stray], "to": int(cid)})
        pv2 = st.split_preview(int(cid))
        assert pv2["space"] == "tree" and pv2["k"] == pv["k"] and stray in pv2["labels"]["items"]
        # a new cluster of 4 items of one leaf: no level splits it; "tree" says so, auto re-clusters
        leaf = levels[-1]
        c4 = next(c for c in np.unique(leaf) if (leaf == c).sum() >= 4 and c not in leaf[[stray]])
        four = [int(i) for i in np.flatnonzero(leaf == c4)[:4]]
        new_id = st.edit("move", {"items": four, "to": "new", "name": "four"})["edit"]["to"]
        with pytest.raises(InputError, match="no finer level"):
            st.split_preview(int(new_id), reducer="tree")
        assert st.split_preview(int(new_id))["space"] in ("model", "pca")
    finally:
        st.close()


@pytest.mark.slow
def test_tree_split_parts_keep_the_finer_levels_stored_names(cifar3_embeddings, tmp_path, one_blas_thread):
    """An automatic split whose parts are exactly the finer level's clusters names them with
    the names the run stored for that level (level_names.json, what the report's level view
    shows), not afresh; once a person moved an item in, the parts are no longer those clusters
    and are named afresh."""
    from test_levels import pca_tree

    from mediacluster.report.build import map_2d
    from mediacluster.rundir import RunDir
    from mediacluster.studio.session import Studio
    from mediacluster.workflow import publish_run

    pipe = pca_tree().fit(cifar3_embeddings.vectors)
    run = publish_run(tmp_path / "run", cifar3_embeddings, pipe, save_model=True)
    stored = run.read_level_names()
    assert stored, "the run names every level"
    # mark the stored names, so that names computed afresh cannot pass for them
    with run.writing("test"):
        map_2d(run, cifar3_embeddings.vectors, method="pca")
        run.write_level_names({k: [{**e, "name": f"stored {k}/{e['cluster']}"} for e in named]
                               for k, named in stored.items()})
    levels, lv = pipe.levels_, pipe.level_
    st = Studio(RunDir.open(run.path))
    try:
        exact = None
        for cid in np.unique(levels[lv][levels[lv] >= 0]):
            pv = st.split_preview(int(cid))
            if pv["space"] != "tree":
                continue
            k = int(pv["level"].rsplit("_", 1)[1])
            members = np.flatnonzero(levels[lv] == cid)
            kids = np.unique(levels[k][members])
            part_of = dict(zip(pv["labels"]["items"], pv["labels"]["parts"]))
            if len(kids) == pv["k"] and (kids >= 0).all():  # every child is a part: no sliver joined
                exact = (cid, k, members, kids, part_of, pv)
                break
        assert exact is not None, "no cluster splits into exactly its children"
        cid, k, members, kids, part_of, pv = exact
        for child in kids:
            p = {part_of[int(i)] for i in members[levels[k][members] == child]}
            assert len(p) == 1
            assert pv["parts"][p.pop()]["name"] == f"stored {k}/{child}"
        # an item of another cluster moved in: the parts are not the level's clusters any more
        stray = int(np.flatnonzero(levels[lv] != cid)[0])
        st.edit("move", {"items": [stray], "to": int(cid)})
        pv2 = st.split_preview(int(cid))
        assert pv2["space"] == "tree" and not any(p["name"].startswith("stored ") for p in pv2["parts"])
    finally:
        st.close()


@pytest.mark.slow
def test_clip_run_searches_words_with_the_text_tower(cifar3_dir, tmp_path, monkeypatch):
    from test_encoders import make_tiny_clip

    from mediacluster.embed import embed_collection_cached
    from mediacluster.encoders import get_encoder
    from mediacluster.ingest import collect
    from mediacluster.naming.zeroshot import topic_vectors
    from mediacluster.studio.session import Studio

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = f"clip:{make_tiny_clip(tmp_path / 'clip')}"
    coll = collect(cifar3_dir / "frog")
    coll.ids, coll.paths = coll.ids[:40], coll.paths[:40]
    emb = embed_collection_cached(coll, spec, cache_dir=tmp_path / "cache", progress=False)
    from mediacluster.pipeline import Pipeline
    from mediacluster.workflow import publish_run

    pipe = Pipeline(outliers=None).with_params({"reducer": "pca", "reducer__n_components": 5,
                                                "clusterer": "kmeans", "clusterer__n_clusters": 2}).fit(emb.vectors)
    run = publish_run(tmp_path / "run", emb, pipe, encoder_spec=spec, name=False)
    from mediacluster.report.build import map_2d

    with run.writing("t"):
        map_2d(run, emb.vectors, method="pca")
    st = Studio(run.path)
    try:
        assert st.info()["word_search"] == "clip-text"
        r = st.search_words("a cat", limit=40)
        assert r["method"] == "clip-text" and len(r["items"]) == 40
        t = topic_vectors(get_encoder(spec), ["a cat"])[0]
        from mediacluster.data import l2_normalize

        want = np.argsort(-(l2_normalize(emb.vectors) @ t), kind="stable")
        assert [x["i"] for x in r["items"][:10]] == want[:10].tolist()
        pv = st.split_preview(0, k=2)
        assert pv["k"] == 2 and all(p["name"] for p in pv["parts"])
    finally:
        st.close()


def test_cli_publish_and_export_without_a_server(base_run, tmp_path, capsys):
    from mediacluster.cli import main
    from mediacluster.rundir import RunDir
    from mediacluster.studio.session import Studio

    run_dir = copy_run(base_run, tmp_path / "run")
    for name in ("map2d.npy", "map2d.json"):  # a run nobody opened in the studio yet
        (run_dir / name).unlink(missing_ok=True)
    st = Studio(run_dir, lazy_map=True)
    st.edit("rename", {"cluster": 0, "name": "named in the studio"})
    st.close()
    assert main(["studio", str(run_dir), "--export", "csv", "--publish"]) == 0
    out = capsys.readouterr().out
    # publishing from a run with a saved model never needs the 2-D map (UMAP: seconds of CPU)
    assert not (run_dir / "map2d.npy").exists()
    assert "export:" in out and "published model v0002" in out and "100.00%" in out
    assert "duplicate index" not in out  # a run clustered without --dedup has none to carry
    run = RunDir.open(run_dir)
    assert run.models.pointer()["source"] == "studio"
    assert main(["studio", str(tmp_path / "nope")]) == 2


def test_audio_run_shows_spectrograms_and_plays_excerpts(tmp_path):
    import soundfile as sf
    from PIL import Image
    from test_audio import _extract

    from mediacluster.embed import embed_collection
    from mediacluster.errors import InputError
    from mediacluster.ingest import collect
    from mediacluster.pipeline import Pipeline
    from mediacluster.report.build import map_2d
    from mediacluster.studio.session import Studio
    from mediacluster.workflow import publish_run

    _extract(tmp_path / "fsdd", ("nicolas", "theo"), 10)
    emb = embed_collection(collect(tmp_path / "fsdd", media="audio"), encoder="mfcc",
                           cache_dir=tmp_path / "cache", progress=False)
    pipe = Pipeline(outliers=None).with_params({"reducer": "pca", "reducer__n_components": 5,
                                                "clusterer": "kmeans", "clusterer__n_clusters": 2}).fit(emb.vectors)
    run = publish_run(tmp_path / "run", emb, pipe, media="audio", name=False)
    with run.writing("t"):
        map_2d(run, emb.vectors, method="pca")
    st = Studio(run.path)
    try:
        info = st.info()
        assert info["media"] == "audio" and info["word_search"] is None and info["upload_search"]
        # search by a clip of yours (as an image run searches by an uploaded image): a clip of the
        # run finds itself first, also uploaded as MP3 (decoded by its name's extension)
        clip = Path(st.item(4)["path"])
        res = st.search_image(clip.read_bytes(), clip.name, limit=3)
        assert res["method"] == "upload" and res["items"][0]["i"] == 4
        wav, sr = sf.read(clip)
        sf.write(tmp_path / "again.mp3", wav, sr)
        assert st.search_image((tmp_path / "again.mp3").read_bytes(), "again.mp3", limit=3)["items"][0]["i"] == 4
        with pytest.raises(InputError, match="cannot be used"):
            st.search_image(b"not a sound", "notes.wav")
        for data, kind in (st.thumbnail(0), st.thumbnail(0, 96), st.preview(3)):
            assert kind == "image/png" and Image.open(io.BytesIO(data)).format == "PNG"
        data, kind = st.audio(0)
        assert kind in ("audio/mpeg", "audio/wav") and len(data) > 1000
        assert st.split_preview(0, k=2)["k"] == 2
        # the Label Studio import plays the clips: an <Audio> object, tasks with an audio field
        ls = Path(st.export("labelstudio")["path"])
        cfg = (ls / "label_config.xml").read_text(encoding="utf-8")
        assert '<Audio name="audio" value="$audio"/>' in cfg and 'toName="audio"' in cfg and "<Image" not in cfg
        task = json.loads((ls / "tasks.json").read_text(encoding="utf-8"))[0]
        assert task["data"]["audio"].endswith(".wav") and task["predictions"][0]["result"][0]["to_name"] == "audio"
    finally:
        st.close()


def _publish_dedup(emb, out: Path):
    """The run ``cluster --dedup`` writes over ``emb`` (PCA + K-means, 3 clusters); its path."""
    from mediacluster.duplicates import DuplicateFinder
    from mediacluster.pipeline import Pipeline
    from mediacluster.workflow import publish_run

    finder = DuplicateFinder().fit(vectors=emb.vectors, ids=emb.ids)
    pipe = Pipeline(outliers=None, random_state=0).with_params(
        {"reducer": "pca", "reducer__n_components": 10, "clusterer": "kmeans", "clusterer__n_clusters": 3})
    pipe.fit(emb.vectors, duplicates=finder.duplicate_of_)
    return publish_run(out, emb, pipe, duplicates=finder).path


def _dedup_run(emb, out: Path, copies=(5, 120)):
    """A run as ``cluster --dedup`` writes it over ``emb`` plus the items ``copies`` again (their
    vectors and files: copies of themselves), PCA + K-means; returns (run path, number of items)."""
    import dataclasses

    emb = dataclasses.replace(
        emb, ids=list(emb.ids) + [f"{emb.ids[i]}#copy" for i in copies],
        vectors=np.concatenate([emb.vectors, emb.vectors[list(copies)]]),
        paths=list(emb.paths) + [emb.paths[i] for i in copies],
        labels=list(emb.labels) + [emb.labels[i] for i in copies],
        extras={k: np.concatenate([v, v[list(copies)]]) for k, v in emb.extras.items()})
    return _publish_dedup(emb, out), len(emb.ids)


def test_export_of_a_deduplicated_run_says_which_files_are_copies(cifar3_embeddings, tmp_path):
    """A run clustered with --dedup: the curated CSV / Parquet export keeps duplicate_group and
    duplicate_of (the representative's id), so the exported table says which files to drop."""
    from mediacluster.studio.session import Studio

    copies = [5, 120]
    run, n = _dedup_run(cifar3_embeddings, tmp_path / "run", copies)
    st = Studio(run)
    try:
        res = st.export("csv")
    finally:
        st.close()
    df = pd.read_csv(Path(res["path"]) / "curated_assignments.csv")
    grouped = df[df["duplicate_group"] >= 0]
    assert len(grouped) >= 4 and grouped["duplicate_group"].nunique() >= 2
    for i in copies:
        a, b = df.iloc[i], df.iloc[n - len(copies) + copies.index(i)]
        assert a["duplicate_group"] == b["duplicate_group"] >= 0
        # one of the two is the representative (no duplicate_of), the other names it
        assert (a["duplicate_of"] == b["id"]) != (b["duplicate_of"] == a["id"])
        assert isinstance(a["duplicate_of"], str) != isinstance(b["duplicate_of"], str)
    assert df.loc[df["duplicate_group"] < 0, "duplicate_of"].isna().all()


def test_classes_export_is_the_clean_dataset(cifar3_embeddings, tmp_path):
    """``classes``: one folder per curated name (two clusters named alike share one), junk and
    duplicate copies left out and listed with why in dropped.csv, the kept files in manifest.csv."""
    import os

    from mediacluster.studio.session import Studio

    run, n = _dedup_run(cifar3_embeddings, tmp_path / "run")
    st = Studio(run)
    try:
        lab0 = st.state.labels.copy()
        st.edit("rename", {"cluster": 0, "name": "things/that fly"})  # a separator: made safe
        st.edit("rename", {"cluster": 1, "name": "things/that fly"})
        st.edit("move", {"items": [int(np.flatnonzero(lab0 == 2)[0])], "to": "junk"})
        _, table, _ = st.curated_table()
        res = st.export("classes")
    finally:
        st.close()
    out = Path(res["path"])
    drop = pd.read_csv(out / "dropped.csv")
    man = pd.read_csv(out / "manifest.csv")
    assert list(drop.columns) == ["id", "path", "curated_cluster", "curated_name", "reason", "kept"]
    assert (drop["reason"] == "junk").sum() == 1
    dups = drop[drop["reason"] == "duplicate"]
    # copies of one file: the representative kept, every other member dropped naming it
    assert len(dups) == table["duplicate_of"].notna().sum() >= 2
    assert set(dups["kept"]) <= set(table.loc[table["duplicate_of"].isna(), "id"])
    assert not set(dups["kept"]) & set(drop["id"])
    assert len(man) + len(drop) == n
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 2 and "things_that fly" in folders  # clusters 0 and 1 share their name's folder
    files = [f for d in folders for f in (out / d).iterdir()]
    assert len(files) == len(man) and all(f.is_symlink() and f.resolve().is_file() for f in files)
    assert len(list((out / "things_that fly").iterdir())) == (man["label"] == "things/that fly").sum()
    assert set(man["path"]) == {os.path.realpath(f) for f in files}  # links to the original files
    assert not set(man["id"]) & set(drop["id"]) and set(man["id"]) | set(drop["id"]) == set(table["id"])


def test_order_label_shows_the_items_whose_label_is_not_their_clusters_first(base_run, cifar3_embeddings, tmp_path):
    """A run with folder labels: a cluster's gallery in order ``label`` starts with the items
    whose label is rarest in it (evaluate's label issues), and each item brief has its label."""
    import dataclasses

    from mediacluster.errors import InputError
    from mediacluster.studio.session import Studio

    st = Studio(base_run)
    try:
        truth = st.truth
        checked = 0
        for c in st.clusters()["clusters"]:
            page = st.members(c["id"], limit=1000, order="label")
            labels = [truth[it["i"]] for it in page["items"]]
            assert [it["label"] for it in page["items"]] == labels
            counts = pd.Series(labels).value_counts()
            shares = [counts[v] for v in labels]
            assert shares == sorted(shares)  # rarest label first, the cluster's main label last
            main = counts.index[0]
            n_other = sum(v != main for v in labels)
            assert set(labels[n_other:]) == {main}
            checked += n_other > 0
            rest = [it["p"] for it in page["items"][n_other:]]
            assert rest == sorted(rest, reverse=True)  # then the most typical first
        assert checked >= 1  # K-means on three CIFAR classes mixes some
    finally:
        st.close()
    emb = dataclasses.replace(cifar3_embeddings, labels=None)
    from studio_helpers import make_run

    st = Studio(make_run(emb, tmp_path / "nolabels"))
    try:
        assert "label" not in st.members(0, limit=5)["items"][0]
        with pytest.raises(InputError, match="order 'label' needs true labels"):
            st.members(0, order="label")
    finally:
        st.close()


def test_a_clean_dataset_keeps_the_largest_copy_of_a_group(tmp_path):
    """Of a duplicate group the largest file is kept (the original of a resized or re-compressed
    copy), of files as large the representative; junk is dropped as junk, and a copy of a junk
    item is kept in its place."""
    from mediacluster.studio.exports import dropped

    sizes = [100, 300, 200, 50, 50, 80, 90]
    paths = []
    for k, n in enumerate(sizes):
        (tmp_path / f"{k}.jpg").write_bytes(b"x" * n)
        paths.append(str(tmp_path / f"{k}.jpg"))
    table = pd.DataFrame({
        "id": [f"id{k}" for k in range(7)],
        "curated_cluster": [0, 0, 1, 1, 1, 2, 0],
        "duplicate_group": [0, 0, 0, 1, 1, 2, 2],
        "duplicate_of": [None, "id0", "id0", None, "id3", None, "id5"],
    })
    clusters = [{"id": 0}, {"id": 1}, {"id": 2, "junk": True}]
    why, kept = dropped(table, clusters, paths)
    # group 0: id1 is the largest (300 bytes), kept over its representative id0
    assert why[:3] == ["duplicate", None, "duplicate"] and kept[:3] == ["id1", None, "id1"]
    # group 1: as large as each other: the representative id3 kept
    assert why[3:5] == [None, "duplicate"] and kept[4] == "id3"
    # group 2: id5 is junk, so its copy id6 stays
    assert why[5:] == ["junk", None] and kept[5:] == [None, None]
    # without the files' sizes: the representative
    why, kept = dropped(table, clusters)
    assert kept[:3] == [None, "id0", "id0"]


def test_dropped_keeps_the_copy_under_the_preferred_folder(tmp_path):
    """``prefer``: of a duplicate group the copy under the earliest preferred folder is kept, before
    the largest file; without it the largest, then the representative."""
    from mediacluster.errors import InputError
    from mediacluster.studio.exports import check_prefer, dropped

    root = tmp_path / "coll"
    files = {"test/cat/a.jpg": 300, "train/cat/a.jpg": 100, "val/cat/a.jpg": 100,
             "test/dog/b.jpg": 50, "train/dog/b.jpg": 50}
    for rel, size in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    paths = [str(root / rel) for rel in files]
    table = pd.DataFrame({"id": ["a-test", "a-train", "a-val", "b-test", "b-train"],
                          "curated_cluster": [0, 0, 0, 1, 1], "duplicate_group": [0, 0, 0, 1, 1],
                          "duplicate_of": [None, "a-test", "a-test", None, "b-test"]})

    def kept(prefer):
        why, k = dropped(table, [], paths, check_prefer(prefer), str(root))
        return sorted(i for i, w in zip(table["id"], why) if w is None), k

    assert kept(None)[0] == ["a-test", "b-test"]  # the largest; of equal sizes the representative
    ids, k = kept(["train/"])
    assert ids == ["a-train", "b-train"] and k == ["a-train", None, "a-train", "b-train", None]
    assert kept("train")[0] == ["a-train", "b-train"]  # one folder, no slash
    assert kept(["val/", "train/"])[0] == ["a-val", "b-train"]  # an order of preference
    assert kept(["train/dog"])[0] == ["a-test", "b-train"]  # deeper folders; others as before
    assert kept([str(root / "train")])[0] == ["a-train", "b-train"]  # an absolute folder
    assert kept(["tra"])[0] == ["a-test", "b-test"]  # a folder, not a name's beginning
    for bad in ([""], ["/"], [3], 5):
        with pytest.raises(InputError, match="prefer"):
            check_prefer(bad)


def _leak_run(emb, out: Path, copies=(5, 120)):
    """A --dedup run whose files lie in ``test/`` under its collection, with byte-identical copies
    of the items ``copies`` in ``train/`` (the same vectors); returns (run path, ids of the copies)."""
    import dataclasses
    import shutil

    root = out.parent / "coll"
    paths = []
    for i, p in enumerate(emb.paths):
        dst = root / "test" / f"{i}-{Path(p).name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
        paths.append(str(dst))
    for i in copies:
        dst = root / "train" / Path(paths[i]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[i], dst)
        paths.append(str(dst))
    ids = list(emb.ids) + [f"{emb.ids[i]}#train" for i in copies]
    emb = dataclasses.replace(
        emb, ids=ids, root=str(root), paths=paths,
        vectors=np.concatenate([emb.vectors, emb.vectors[list(copies)]]),
        labels=list(emb.labels) + [emb.labels[i] for i in copies],
        extras={k: np.concatenate([v, v[list(copies)]]) for k, v in emb.extras.items()})
    return _publish_dedup(emb, out), ids[len(emb.ids) - len(copies):]


@pytest.mark.slow
def test_classes_export_prefer_over_http_and_the_cli(cifar3_embeddings, tmp_path, capsys):
    """A leak between test/ and train/: the classes export keeps the test/ copy (the first by path)
    unless the person prefers train/, on the HTTP export and on ``studio --export``."""
    from mediacluster.cli import main

    run, train_ids = _leak_run(cifar3_embeddings, tmp_path / "run")
    server = Server(run)
    try:
        with client(server) as c:
            r = post(c, "/api/export", {"kind": "classes"})
            assert r.status_code == 200, r.text
            drop = pd.read_csv(Path(r.json()["path"]) / "dropped.csv")
            dups = drop[drop["reason"] == "duplicate"]
            assert set(train_ids) <= set(dups["id"])  # by default the train copies go
            r = post(c, "/api/export", {"kind": "classes", "prefer": ["train/"]})
            assert r.status_code == 200, r.text
            out = Path(r.json()["path"])
            drop = pd.read_csv(out / "dropped.csv")
            man = pd.read_csv(out / "manifest.csv")
            assert set(train_ids) <= set(man["id"]) and not set(train_ids) & set(drop["id"])
            assert set(train_ids) <= set(drop.loc[drop["reason"] == "duplicate", "kept"])
            assert all("/train/" in p for p in man.loc[man["id"].isin(train_ids), "path"])
            for body, word in (({"kind": "csv", "prefer": ["train/"]}, "classes"),
                               ({"kind": "classes", "prefer": [""]}, "prefer")):
                r = post(c, "/api/export", body)
                assert r.status_code == 400 and word in r.text, r.text
            assert post(c, "/api/export", {"kind": "classes", "prefer": "train/"}).status_code == 422
    finally:
        server.stop()
    assert main(["studio", str(run), "--export", "classes", "--export-prefer", "nowhere",
                 "--export-prefer", "train"]) == 0
    path = re.search(r"export: (.+?) \(", capsys.readouterr().out).group(1)
    man = pd.read_csv(Path(path) / "manifest.csv")
    assert set(train_ids) <= set(man["id"])


def test_an_item_view_does_not_wait_for_the_search_index_being_built(base_run, tmp_path):
    """While the background warm-up is to build the search index (seconds at 50,000 items), an
    item view answers at once without its neighbours (None: the page asks the search by example,
    which waits for the index); once the index is there, the view has them again. A studio
    without the warm-up builds it for the first item view, as before."""
    from mediacluster.studio.session import Studio

    st = Studio(copy_run(base_run, tmp_path / "run"), warm=False)
    try:
        index = st.index
        got = {}
        st._warming.set()  # as a studio opened with its warm-up, before the warm-up built the index
        with index._lock:  # the index being built by the warm-up
            t = threading.Thread(target=lambda: got.update(st.item(3)), daemon=True)
            t.start()
            t.join(30)
            assert not t.is_alive(), "the item view waited for the index"
        assert got["i"] == 3 and got["neighbours"] is None and got["cluster"] == int(st.state.labels[3])
        st._warming.clear()
        assert not index.ready
        near = st.item(3)["neighbours"]  # built for it
        assert index.ready and len(near) == 12 and 3 not in [n["i"] for n in near]
        assert [n["i"] for n in near] == [n["i"] for n in st.search_item(3, limit=13)["items"] if n["i"] != 3][:12]
    finally:
        st.close()
