"""Two studio processes on one run folder (two people, or a studio open while a carry is
written): each sees the other's edits when its page polls ``/api/version``, without editing
itself, and an edit made on a view another process has since changed is applied or refused by
one rule (``Studio.edit``): what it names still exists, it applies to the state now; a cluster
merged away, or an undo / redo whose target is no longer the latest, is a 409 saying what
happened. Real ``mediacluster studio`` servers on free loopback ports over 300 CIFAR-10 images;
the page's side in real Chromium."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from studio_helpers import Server, browser, client, copy_run, make_run, post


@pytest.fixture(scope="module")
def pair(base_run, tmp_path_factory):
    """Two studio servers (two processes) on one copy of the run."""
    run = copy_run(base_run, tmp_path_factory.mktemp("live-pair") / "run")
    a = Server(run)
    try:
        b = Server(run)
    except BaseException:
        a.stop()
        raise
    a.run = run
    yield a, b
    b.stop()
    a.stop()


def clusters_of(c) -> dict:
    return {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}


def labels_of(c) -> np.ndarray:
    return np.frombuffer(c.get("/api/labels").content, dtype="<i4")


def polled(c, seq: int, timeout: float = 10.0) -> dict:
    """Poll ``/api/version`` as the page does until it shows edit ``seq``."""
    t0 = time.time()
    while True:
        v = c.get("/api/version").json()
        if v["seq"] >= seq:
            return v
        assert time.time() - t0 < timeout, f"edit {seq} not seen: {v}"
        time.sleep(0.1)


def test_a_second_studio_sees_edits_and_undos_without_editing(pair):
    sa, sb = pair
    with client(sa) as a, client(sb) as b:
        lab = labels_of(b)
        ids = sorted(set(lab[lab >= 0].tolist()))
        before = b.get("/api/version").json()
        r = post(a, "/api/edits", {"kind": "rename", "cluster": ids[0], "name": "renamed in A"},
                 headers={"X-Mediacluster-Client": "personA"})
        assert r.status_code == 200, r.text
        seq = r.json()["seq"]
        v = b.get("/api/version").json()  # one poll: no edit in B, and it shows A's
        assert v["seq"] == seq > before["seq"]
        assert v["can_undo"] and v["undo"] == seq  # B's undo would take back A's edit: it says which
        assert clusters_of(b)[ids[0]]["name"] == "renamed in A"
        items = np.flatnonzero(lab == ids[1])[:5].tolist()
        r = post(a, "/api/edits", {"kind": "move", "items": items, "to": ids[2]})
        assert r.status_code == 200
        polled(b, r.json()["seq"])
        assert (labels_of(b)[items] == ids[2]).all()
        assert clusters_of(b)[ids[2]]["size"] == clusters_of(a)[ids[2]]["size"]
        # an undo in A: B shows the items back where they were
        r = post(a, "/api/undo", {})
        assert r.status_code == 200 and r.json()["edit"]["target"] == seq + 1
        v = polled(b, r.json()["seq"])
        assert v["redo"] == seq + 1 and v["undo"] == seq
        assert (labels_of(b)[items] == ids[1]).all()
        assert clusters_of(b)[ids[0]]["name"] == "renamed in A"
        r = post(a, "/api/undo", {})
        polled(b, r.json()["seq"])
        assert clusters_of(b)[ids[0]]["name"] == clusters_of(a)[ids[0]]["name"] != "renamed in A"
        # B's own edit now follows A's: one log, one order
        r = post(b, "/api/edits", {"kind": "rename", "cluster": ids[0], "name": "renamed in B"})
        assert r.status_code == 200
        polled(a, r.json()["seq"])
        assert clusters_of(a)[ids[0]]["name"] == "renamed in B"


def test_an_edit_on_a_stale_view_applies_or_is_a_409_saying_what_happened(pair):
    sa, sb = pair
    with client(sa) as a, client(sb) as b:
        lab = labels_of(b)
        ids = sorted(set(lab[lab >= 0].tolist()))
        stale = b.get("/api/version").json()  # what B's page shows: the state before A's merge
        r = post(a, "/api/edits", {"kind": "merge", "clusters": [ids[0], ids[1]], "into": ids[0]},
                 headers={"X-Mediacluster-Client": "personA"})
        assert r.status_code == 200
        merge = r.json()["seq"]
        into_name = clusters_of(a)[ids[0]]["name"]
        # B renames the cluster A merged away, on its old view: refused, naming the merge
        r = post(b, "/api/edits", {"kind": "rename", "cluster": ids[1], "name": "too late"})
        assert r.status_code == 409
        err = r.json()["error"]
        msg = err["message"]
        assert f"cluster {ids[1]} no longer exists" in msg
        # who did it in words a person can use (the page's random id says nothing to them), and
        # when; the page's id and the edit stay in the error for a program
        assert re.search(rf"edit {merge} \(by another studio page, (just now|\d+ s ago)\) merged it "
                         rf"into cluster {ids[0]} \({re.escape(into_name)}\)", msg), msg
        assert "personA" not in msg
        assert err["edit"]["seq"] == merge and err["edit"]["kind"] == "merge" and err["edit"]["client"] == "personA"
        assert abs(err["edit"]["ts"] - time.time()) < 60
        # the page that merged it, on a stale view of its own: "this page"
        r = post(a, "/api/edits", {"kind": "rename", "cluster": ids[1], "name": "again"},
                 headers={"X-Mediacluster-Client": "personA"})
        assert r.status_code == 409 and f"edit {merge} (by this page, " in r.json()["error"]["message"], r.text
        # moving items to it, tagging it: the same
        r = post(b, "/api/edits", {"kind": "move", "items": [int(np.flatnonzero(lab == ids[2])[0])], "to": ids[1]})
        assert r.status_code == 409 and "merged it into" in r.json()["error"]["message"]
        # B's undo made on its old view (it showed another edit as the latest): refused, nothing changed
        r = post(b, "/api/undo", {"target": stale["undo"]})
        assert r.status_code == 409
        msg = r.json()["error"]["message"]
        assert re.search(rf"edit {merge} \(a merge by another studio page, [^)]*\) is; nothing was changed", msg), msg
        assert b.get("/api/version").json()["seq"] == merge
        # an edit whose clusters still exist applies to the state now: the later rename wins
        r = post(b, "/api/edits", {"kind": "rename", "cluster": ids[0], "name": "both, named in B"})
        assert r.status_code == 200
        assert clusters_of(a)[ids[0]]["name"] == "both, named in B"
        assert clusters_of(a)[ids[0]]["size"] == int(np.isin(lab, ids[:2]).sum())
        # a split previewed in B before A moved items out of the cluster: refused (preview again)
        prev = post(b, "/api/split/preview", {"cluster": ids[2], "k": 2, "reducer": "pca"}).json()
        r = post(a, "/api/edits", {"kind": "move", "items": prev["labels"]["items"][:2], "to": ids[0]})
        assert r.status_code == 200
        r = post(b, "/api/edits", {"kind": "split", "preview": prev["preview"]})
        assert r.status_code == 409 and "preview it again" in r.json()["error"]["message"]
        # undo with the target the page shows now: A's move, taken back
        v = b.get("/api/version").json()
        r = post(b, "/api/undo", {"target": v["undo"]})
        assert r.status_code == 200 and r.json()["edit"]["target"] == v["undo"]
        r = post(b, "/api/redo", {"target": v["undo"] + 1})  # not the undone edit: refused
        assert r.status_code == 409
        r = post(a, "/api/redo", {"target": a.get("/api/version").json()["redo"]})
        assert r.status_code == 200 and r.json()["edit"]["target"] == v["undo"]


def test_a_carry_written_while_a_studio_is_open_appears(base_run, cifar3_embeddings, tmp_path):
    """``studio NEW --carry-from OLD`` (or ``cluster --carry-from``) writes its events into the
    log of a run a studio has open: the open studio shows the carried names at its next poll."""
    from mediacluster.studio.carry import carry_curation
    from mediacluster.studio.session import Studio

    old = make_run(cifar3_embeddings, tmp_path / "old", save_model=False)
    st = Studio(old, warm=False, map_method="pca")
    try:
        lab = st.state.labels.copy()
        big = int(np.bincount(lab[lab >= 0]).argmax())
        st.edit("rename", {"cluster": big, "name": "carried over"})
    finally:
        st.close()
    new = copy_run(base_run, tmp_path / "new")
    s = Server(new)
    try:
        with client(s) as c:
            seq0 = c.get("/api/version").json()["seq"]
            assert "carried over" not in {e["name"] for e in clusters_of(c).values()}
            summary = carry_curation(old, new, cache_dir=tmp_path / "cache")
            assert summary["carried"]["names"] == 1
            v = polled(c, seq0 + 1)
            assert v["seq"] == summary["edits_seq"]
            mine = labels_of(c)
            assert [e["name"] for e in clusters_of(c).values()].count("carried over") == 1
            named = next(e for e in clusters_of(c).values() if e["name"] == "carried over")
            assert np.mean(mine[lab == big] == named["id"]) > 0.5
            assert named["carry"] == "kept"  # carry.json, written after the events, read too
    finally:
        s.stop()


@pytest.mark.browser
def test_the_second_page_updates_without_a_reload(pair):
    """Chromium: a page open on studio B shows a rename made through studio A within a poll,
    and a rename of a cluster A merged away answers a 409 the page shows, then shows the merge."""
    from selenium.webdriver.common.keys import Keys
    from test_studio_browser import cluster_rows, loaded, open_cluster, severe, wait

    sa, sb = pair
    with browser() as drv:
        with client(sa) as a:
            drv.get(sb.url)
            wait(lambda: loaded(drv), what="first paint")
            ids = sorted(k for k in cluster_rows(drv))
            polls = drv.execute_script("return window.mcStudio.polls")
            r = post(a, "/api/edits", {"kind": "rename", "cluster": ids[-1], "name": "seen live"})
            assert r.status_code == 200
            wait(lambda: cluster_rows(drv).get(ids[-1]) == "seen live", timeout=15, what="A's rename in B's page")
            assert drv.execute_script("return window.mcStudio.polls") > polls  # by the poll, not a reload
            assert drv.execute_script("return performance.getEntriesByType('navigation').length") == 1
            # B's page edits a cluster A merged away before B's poll saw the merge: the 409's
            # message is shown, and the page shows the merge at once
            open_cluster(drv, ids[-2])
            drv.execute_script("window.mcStudio.editing = true")  # hold the poll's refresh
            r = post(a, "/api/edits", {"kind": "merge", "clusters": [ids[-2], ids[-1]], "into": ids[-1]})
            assert r.status_code == 200
            time.sleep(2)  # a poll or two pass
            assert ids[-2] in cluster_rows(drv)
            name = drv.find_element("id", "cluster-name")
            name.clear()
            name.send_keys("too late" + Keys.ENTER)
            wait(lambda: ids[-2] not in cluster_rows(drv), timeout=15, what="the merge shown")
            errors = drv.execute_script("return window.mcStudio.errors")
            assert any(f"cluster {ids[-2]} no longer exists" in e and "merged it into" in e for e in errors), errors
            assert drv.execute_script("return window.mcStudio.conflicts") == 1
            assert "too late" not in cluster_rows(drv).values()
            assert not [e for e in severe(drv) if "409 (Conflict)" not in e["message"]]  # the 409 is logged


def test_the_studio_that_did_not_edit_writes_nothing_and_never_an_older_state(base_run, tmp_path):
    """The edit log is shared, so the state of an edit is the same in every process: a studio
    that picked up another's edit does not write it again once that process wrote it, and a
    write of an older edit never replaces a newer one on disk (it did: both studios wrote after
    every change, and the one behind could write last)."""
    from mediacluster.rundir import RunDir
    from mediacluster.studio.session import Studio

    run = copy_run(base_run, tmp_path / "run")
    a, b = Studio(run, warm=False), Studio(run, warm=False)
    try:
        b.writer.stop()  # b's background writer would race this test's explicit writes
        lab = a.state.labels
        big = int(np.bincount(lab[lab >= 0]).argmax())
        a.edit("rename", {"cluster": big, "name": "first name"})
        seq1 = a.write_state()
        b.sync()
        assert b.state.seq == seq1
        mtime = (Path(run) / "curated.json").stat().st_mtime_ns
        assert b.write_state() == seq1  # already written by a: nothing written again
        assert (Path(run) / "curated.json").stat().st_mtime_ns == mtime
        # b holds edit seq1's state; a makes and writes a later edit; b's late write must not win
        st1 = (b.state.seq, b.state.labels.copy(), b.state.cluster_table(), b.state.status(), {})
        a.edit("rename", {"cluster": big, "name": "second name"})
        seq2 = a.write_state()
        b.writer.written_seq = 0  # as if b had not written seq1 yet
        assert b.writer.write(*st1) == seq1
        doc = RunDir.open(run).read_curated()
        assert doc["edits_seq"] == seq2
        assert {e["id"]: e["name"] for e in doc["clusters"]}[big] == "second name"
        df = RunDir.open(run).read_assignments()
        assert set(df.loc[df["curated_cluster"] == big, "curated_name"]) == {"second name"}
    finally:
        a.close()
        b.close()
