"""Carrying a person's curation to a re-clustered, grown collection (``mediacluster.studio.carry``).

A real slice: 60 Imagenette photos of three classes are clustered and curated (two renames, a
junk mark, a cluster tag, a moved item, an item tag), then the slice plus 20 photos of a fourth
class is clustered again with ``--carry-from``. Runs use PCA + K-means (fast and deterministic;
carrying does not care how the clusters were made); the embedding cache is shared by the runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from studio_helpers import Server, browser, client, copy_run, post

from mediacluster.cli import main
from mediacluster.errors import InputError
from mediacluster.rundir import RunDir
from mediacluster.studio.carry import carry_curation
from mediacluster.studio.matching import match_clusters
from mediacluster.studio.session import Studio

CLASSES = ["n01440764", "n02102040", "n03028079"]  # tench, springer, church; n03888257 parachute is new
NEW_CLASS = "n03888257"


def run_cli(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def cluster(folder: Path, out: Path, k: int, cache: Path, *extra: str) -> tuple[int, str]:
    return run_cli(["cluster", str(folder), "--out", str(out), "--quiet", "--labels-from-folders",
                    "--reducer", "pca", "--reducer-param", "n_components=10", "--clusterer", "kmeans",
                    "--clusterer-param", f"n_clusters={k}", "--cache-dir", str(cache), *extra])


def by_label(run: Path, column: str = "cluster") -> dict[str, int]:
    """Each class's majority cluster in a run."""
    a = pd.read_parquet(run / "assignments.parquet")
    return {lab: int(g[column].mode()[0]) for lab, g in a.groupby("label")}


@pytest.fixture(scope="module")
def world(imagenette_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("carry")
    old, new = base / "old", base / "new"
    for c in CLASSES:
        shutil.copytree(imagenette_dir / c, old / c)
    shutil.copytree(imagenette_dir, new)  # the grown collection: the same photos plus a class
    cache = base / "cache"
    rc, out = cluster(old, base / "run_old", 3, cache)
    assert rc == 0, out
    return {"base": base, "old": old, "new": new, "cache": cache, "run_old": base / "run_old"}


@pytest.fixture(scope="module")
def curated(world):
    """The previous run, curated through the studio's own edit API; what the person did."""
    run = world["run_old"]
    cl = by_label(run)
    a = pd.read_parquet(run / "assignments.parquet")
    st = Studio(run, warm=False, map_method="pca")
    try:
        fish = [int(i) for i in st.state.members(cl[CLASSES[0]]) if a["label"][i] == CLASSES[0]]
        st.edit("rename", {"cluster": cl[CLASSES[0]], "name": "my fish"})
        st.edit("rename", {"cluster": cl[CLASSES[1]], "name": "my dogs"})
        st.edit("junk", {"clusters": [cl[CLASSES[2]]]})
        st.edit("tag", {"clusters": [cl[CLASSES[1]]], "add": ["pets"]})
        st.edit("move", {"items": [fish[0]], "to": cl[CLASSES[1]]})  # a fish the person calls a dog
        st.edit("tag", {"items": [fish[1]], "add": ["favourite"]})
        seq = st.state.seq
    finally:
        st.close()
    paths = RunDir.open(run).read_assignments()["path"]  # absolute, as the readers give them
    return {"moved": paths[fish[0]], "tagged": paths[fish[1]],
            "seq": seq}


@pytest.fixture(scope="module")
def carried(world, curated):
    out = world["base"] / "run_new"
    rc, stdout = cluster(world["new"], out, 4, world["cache"], "--carry-from", str(world["run_old"]))
    assert rc == 0, stdout
    return {"out": out, "stdout": stdout}


def _row_of(run: Path, old_file: str, old_root: Path, new_root: Path) -> int:
    """The new run's row of a file of the previous collection (the same photo in the grown one)."""
    rel = os.path.relpath(old_file, old_root)
    items = RunDir.open(run).read_items()
    return [os.path.relpath(p, new_root) for p in items["path"]].index(rel)


def test_names_junk_tags_and_moves_are_carried_to_the_matching_clusters(world, curated, carried):
    out = carried["out"]
    summary = json.loads((out / "carry.json").read_text())
    assert summary["identity"] == "content" and summary["shared_items"] == 60
    assert summary["items_new_to_the_collection"] == 20 and summary["items_gone"] == 0
    assert summary["previous_clusters"] == {"kept": 3}
    assert summary["carried"] == {"names": 2, "junk": 1, "cluster_tags": 1, "item_tags": 1, "moves": 1, "keeps": 0,
                                  "level_names": 0, "merges": 0, "splits": 0}
    cl = by_label(out)
    st = Studio(out, warm=False, map_method="pca")
    try:
        state = st.state
        assert state.clusters[cl[CLASSES[0]]].name == "my fish"
        assert state.clusters[cl[CLASSES[0]]].named_by == "person"
        dogs = state.clusters[cl[CLASSES[1]]]
        assert (dogs.name, dogs.named_by, dogs.tags) == ("my dogs", "person", ["pets"])
        assert state.clusters[cl[CLASSES[2]]].junk
        # the new class's cluster: reported new, its name still the automatic one
        parachute = cl[NEW_CLASS]
        assert summary["new_clusters"] == [parachute]
        assert state.clusters[parachute].named_by == "automatic"
        assert [r["status"] for r in summary["clusters"] if r["cluster"] == parachute] == ["new"]
        old_root = RunDir.open(world["run_old"]).collection_root.path
        moved = _row_of(out, curated["moved"], old_root, world["new"])
        tagged = _row_of(out, curated["tagged"], old_root, world["new"])
        assert int(state.labels[moved]) == cl[CLASSES[1]]  # where the person put it
        assert state.item_tags == {tagged: ["favourite"]}
        # every carried edit is an ordinary event, marked with the run it came from
        evs = st.log.events()
        old_id = RunDir.open(world["run_old"]).run_id
        assert {e.client for e in evs} == {f"carried from {old_id}"}
        assert [e.kind for e in evs][-1] == "carry" and len(evs) == 7
        assert all(e.payload["carried_from"] == old_id for e in evs[:-1])
        assert state.can_undo()  # undo works on them as on any edit
        # the studio's state was written back into the run (report, export, tags read it)
        doc = json.loads((out / "curated.json").read_text())
        assert doc["edits_seq"] == state.seq
        a = pd.read_parquet(out / "assignments.parquet")
        assert a["curated_name"][moved] == "my dogs" and a["curated_status"][cl[CLASSES[2]] == a["cluster"]].eq("junk").all()
        # publishing the new run works and its model answers the carried names
        res = st.publish(client="test")
        assert res["agreement"] >= 0.99
    finally:
        st.close()
    from mediacluster.pipeline import Pipeline

    model = Pipeline.load(out)
    vectors = RunDir.open(out).read_vectors(mmap=False)
    lab = pd.read_parquet(out / "assignments.parquet")["label"].to_numpy()
    names = {int(k): v for k, v in model.model_info_["metadata"]["names"].items()}
    pred = model.predict(vectors)
    fish_named = [names[int(p)] for p in pred[lab == CLASSES[0]]]
    assert fish_named.count("my fish") >= 18
    dogs_named = [names[int(p)] for p in pred[lab == CLASSES[1]]]
    assert dogs_named.count("my dogs") >= 18
    # the command said what happened
    assert "3 kept, 0 split, 0 merged, 0 gone" in carried["stdout"]
    assert f"new clusters (no ancestor, to review): {parachute}" in carried["stdout"]


def test_carrying_twice_carries_nothing_twice(world, carried):
    out = carried["out"]
    n = len(RunDir.open(out).edits())
    s = carry_curation(world["run_old"], out, cache_dir=world["cache"])
    assert s["already"] and not any(s["carried"].values()) and "already carried" in s["message"]
    assert len(RunDir.open(out).edits()) == n
    rc, stdout = run_cli(["studio", str(out), "--carry-from", str(world["run_old"]), "--publish"])
    assert rc == 0 and "already carried" in stdout
    assert len(RunDir.open(out).edits()) == n + 1  # the publish record only


def test_studio_carries_through_the_cache_it_is_given(world, carried, tmp_path):
    """``studio NEW --carry-from OLD --cache-dir DIR`` hashes the files through DIR (the cache
    ``cluster`` was given), not the user cache."""
    rc, _ = cluster(world["new"], tmp_path / "grown", 4, world["cache"])
    assert rc == 0
    cache = tmp_path / "own-cache"
    rc, stdout = run_cli(["studio", str(tmp_path / "grown"), "--carry-from", str(world["run_old"]),
                          "--cache-dir", str(cache), "--export", "csv"])
    assert rc == 0, stdout
    s = json.loads((tmp_path / "grown" / "carry.json").read_text())
    assert s["identity"] == "content" and s["carried"]["names"] >= 2
    assert cache.is_dir() and any(cache.iterdir())  # the hashes went through the given cache


def test_carrying_with_a_cache_nobody_may_write_hashes_the_files_itself(world, carried, tmp_path):
    """A cache in a read-only place (a shared or read-only HOME): ``cluster`` embeds through a
    temporary cache (``embed.store.open_store``), and carrying the curation then stopped the
    command ("cannot write the embedding cache"); it hashes the files through a temporary
    cache too, so the items are still the same by their content."""
    import subprocess

    rc, _ = cluster(world["new"], tmp_path / "grown", 4, world["cache"])
    assert rc == 0
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
    elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode != 0:
        pytest.skip("running as root without permission to mount a read-only folder")
    try:
        s = carry_curation(world["run_old"], tmp_path / "grown", cache_dir=ro / "cache")
    finally:
        if os.geteuid() != 0:
            ro.chmod(0o755)
        else:
            subprocess.run(["umount", str(ro)])
    assert s["identity"] == "content" and s["carried"]["names"] >= 2


def test_without_readable_files_items_are_the_same_by_their_stored_paths(world, carried):
    """The fallback identity (a file gone or moved: no content hash for every item): the path
    relative to each run's own collection root, as the run folders store it, so the photos the
    grown collection copied from the previous one are the same items."""
    from mediacluster.studio.carry import _Side

    old = _Side(RunDir.open(world["run_old"]), "old").relative_keys()
    new = _Side(RunDir.open(carried["out"]), "new").relative_keys()
    assert len(old) == 60 and len(new) == 80 and len(set(old) & set(new)) == 60
    assert all(k.startswith("path:") and not k.startswith("path:/") for k in old + new)


def test_a_previous_run_without_edits_carries_nothing_and_says_so(world, tmp_path):
    rc, _ = cluster(world["old"], tmp_path / "plain", 3, world["cache"])
    assert rc == 0
    rc, stdout = cluster(world["new"], tmp_path / "grown", 4, world["cache"], "--carry-from", str(tmp_path / "plain"))
    assert rc == 0, stdout
    s = json.loads((tmp_path / "grown" / "carry.json").read_text())
    assert not any(s["carried"].values()) and "no edits" in s["message"]
    assert "no edits" in stdout
    assert s["previous_clusters"] == {"kept": 3}  # the matching is reported all the same
    log = RunDir.open(tmp_path / "grown").edits()
    assert [e.kind for e in log.events()] == ["carry"]  # recorded, so it is not carried again
    assert not (tmp_path / "grown" / "curated.json").exists()


def test_carrying_from_the_run_the_new_one_replaces(world, curated, tmp_path):
    """``cluster --out RUN --carry-from RUN``: the curated run is kept aside and carried from."""
    same = tmp_path / "run"
    shutil.copytree(world["run_old"], same)
    rc, stdout = cluster(world["new"], same, 4, world["cache"], "--carry-from", str(same))
    assert rc == 0, stdout
    kept = list(tmp_path.glob("run.replaced-*"))
    assert len(kept) == 1
    s = json.loads((same / "carry.json").read_text())
    assert s["from"]["run"] == str(kept[0].resolve()) and s["carried"]["names"] == 2


def test_bad_previous_runs_are_refused_naming_them(world, carried, tmp_path, capsys):
    # not a run: refused before any work (nothing written)
    not_run = tmp_path / "photos"
    not_run.mkdir()
    rc, _ = cluster(world["new"], tmp_path / "x", 4, world["cache"], "--carry-from", str(not_run))
    assert rc == 2 and not (tmp_path / "x").exists()
    assert f"--carry-from {not_run}: {not_run} is not a run folder" in capsys.readouterr().err
    # no shared items: a run of the new class alone
    rc, _ = cluster(world["new"] / NEW_CLASS, tmp_path / "other", 2, world["cache"])
    assert rc == 0
    with pytest.raises(InputError, match="shares no item"):
        carry_curation(world["run_old"], tmp_path / "other", cache_dir=world["cache"])
    # the same run
    with pytest.raises(InputError, match="same run"):
        carry_curation(carried["out"], carried["out"])
    # another media: a run of real spoken-digit clips
    clips = tmp_path / "clips"
    clips.mkdir()
    with tarfile.open(dataset("fsdd")) as tf:
        wavs = sorted((m for m in tf.getmembers() if m.isfile() and m.name.endswith(".wav")), key=lambda m: m.name)
        for m in wavs[:12]:
            (clips / os.path.basename(m.name)).write_bytes(tf.extractfile(m).read())
    rc, _ = run_cli(["cluster", str(clips), "--out", str(tmp_path / "audio"), "--quiet", "--reducer", "pca",
                     "--reducer-param", "n_components=4", "--clusterer", "kmeans", "--clusterer-param",
                     "n_clusters=2", "--cache-dir", str(world["cache"])])
    assert rc == 0
    with pytest.raises(InputError, match="run of audio.*one of image"):
        carry_curation(tmp_path / "audio", carried["out"])


@pytest.fixture(scope="module")
def studio(carried):
    srv = Server(carried["out"], "--map", "pca")
    yield srv
    srv.stop()


def test_the_studio_serves_which_clusters_are_new(carried, studio):
    with client(studio) as c:
        r = c.get("/api/clusters")
        assert r.status_code == 200
        rows = {e["id"]: e for e in r.json()["clusters"]}
    summary = json.loads((carried["out"] / "carry.json").read_text())
    new = set(summary["new_clusters"])
    assert new and {i for i, e in rows.items() if e["new"]} == new
    assert {e["carry"] for i, e in rows.items() if i not in new} == {"kept"}


def test_the_page_marks_the_new_clusters_and_filters_them(carried, studio):
    from mediacluster.studio.carry import carry_notice

    summary = json.loads((carried["out"] / "carry.json").read_text())
    note = carry_notice(summary)["text"]
    assert note.startswith(f"carried from run {summary['from']['run_id']}: 2 names, 1 junk mark") \
        and "0 level names" in note
    _page_badges_and_filters(studio.url, summary["new_clusters"], note)


def _page_badges_and_filters(url: str, new: list[int], note: str | None = None) -> None:
    """In Chromium, the studio page at ``url`` badges exactly the clusters ``new`` "new" and its
    filter "new" lists exactly them; ``note``: the carry's note it shows until closed."""
    from test_studio_browser import loaded, wait

    with browser() as drv:
        drv.get(url)
        wait(lambda: loaded(drv), 60, "the page")
        if note is not None:
            shown = drv.find_element("css selector", "#toast .carry-notice")
            assert note in shown.text
            shown.find_element("css selector", ".close").click()
            wait(lambda: not drv.find_elements("css selector", "#toast .carry-notice"), 10, "the note closed")
        rows = "#cluster-list li[data-cluster]"
        badged = [int(li.get_attribute("data-cluster")) for li in drv.find_elements("css selector", rows)
                  if li.find_elements("css selector", ".badge.new")]
        assert badged == new
        drv.find_element("id", "filter").send_keys("new")
        wait(lambda: [int(li.get_attribute("data-cluster")) for li in drv.find_elements("css selector", rows)] == new,
             10, "the filter 'new'")


def _rows_by_file(run: Path, root: Path) -> dict[str, int]:
    """A run's rows by their file relative to its collection folder ``root``."""
    return {os.path.relpath(p, root): i for i, p in enumerate(RunDir.open(run).read_assignments()["path"])}


def test_carrying_again_carries_what_the_previous_run_did_since_and_never_over_this_runs_edits(
        world, curated, carried, tmp_path):
    """The person keeps naming in the previous run after the carry, and also edits the new run:
    carrying again carries only the previous run's later edits, once; where the new run's own
    later edit touched the same cluster or item, that edit wins and carry.json says so."""
    old = copy_run(world["run_old"], tmp_path / "old")
    new = copy_run(carried["out"], tmp_path / "new")
    cl_old, cl_new = by_label(old), by_label(new)
    a = pd.read_parquet(old / "assignments.parquet")
    old_rows, new_rows = _rows_by_file(old, world["old"]), _rows_by_file(new, world["new"])
    to_new = {r: new_rows[f] for f, r in old_rows.items()}
    dogs = [i for i in range(len(a)) if a["label"][i] == CLASSES[1]]
    church = [i for i in range(len(a)) if a["label"][i] == CLASSES[2]]
    x, z, y = dogs[-1], dogs[-2], church[-1]  # x: moved in both runs; z: in the previous one only
    st = Studio(new, warm=False, map_method="pca")  # the person's own edits in the new run
    try:
        n0 = len(st.log.events())
        st.edit("rename", {"cluster": cl_new[CLASSES[0]], "name": "fish here"})
        st.edit("move", {"items": [to_new[x]], "to": -1})
    finally:
        st.close()
    st = Studio(old, warm=False, map_method="pca")  # and more naming in the previous run
    try:
        st.edit("rename", {"cluster": cl_old[CLASSES[0]], "name": "my fish 2"})
        st.edit("rename", {"cluster": cl_old[CLASSES[1]], "name": "my dogs 2"})
        st.edit("tag", {"clusters": [cl_old[CLASSES[2]]], "add": ["old"]})
        st.edit("tag", {"items": [y], "add": ["later"]})
        st.edit("move", {"items": [x, z], "to": cl_old[CLASSES[2]]})
    finally:
        st.close()
    rc, stdout = run_cli(["studio", str(new), "--carry-from", str(old), "--cache-dir", str(world["cache"]),
                          "--export", "csv"])  # as a person carries again
    assert rc == 0, stdout
    assert f"not carried: names to cluster {cl_new[CLASSES[0]]}: changed in this run after the carry" in stdout
    s = json.loads((new / "carry.json").read_text())
    assert not s.get("already") and len(s["rounds"]) == 2
    assert s["carried"] == {"names": 1, "junk": 0, "cluster_tags": 1, "item_tags": 1, "moves": 1, "keeps": 0,
                            "level_names": 0, "merges": 0, "splits": 0}
    assert s["carried_items_moved"] == 1
    why = {(r["what"], r.get("cluster"), tuple(r.get("rows") or ())): r["reason"] for r in s["not_carried"]}
    assert set(why) == {("names", cl_new[CLASSES[0]], ()), ("moves", None, (to_new[x],))}
    assert all("this run's own edit" in r for r in why.values())
    st = Studio(new, warm=False, map_method="pca")
    try:
        state = st.state
        assert state.clusters[cl_new[CLASSES[0]]].name == "fish here"  # the new run's own edit won
        assert state.clusters[cl_new[CLASSES[1]]].name == "my dogs 2"
        assert state.clusters[cl_new[CLASSES[2]]].tags == ["old"] and state.clusters[cl_new[CLASSES[2]]].junk
        assert int(state.labels[to_new[x]]) == -1 and int(state.labels[to_new[z]]) == cl_new[CLASSES[2]]
        tagged = new_rows[os.path.relpath(curated["tagged"], world["old"])]
        assert state.item_tags == {tagged: ["favourite"], to_new[y]: ["later"]}
        evs = st.log.events()
        carried_evs = [e for e in evs[n0:] if e.client.startswith("carried from")]
        assert [e.kind for e in carried_evs] == ["rename", "tag", "move", "tag", "carry"]  # nothing twice
    finally:
        st.close()
    # a third time with nothing new: nothing
    n = len(RunDir.open(new).edits())
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["already"] and "no edit since" in s["message"] and len(RunDir.open(new).edits()) == n
    # the previous run undoes an edit that was carried: not taken back here, and said so
    st = Studio(old, warm=False, map_method="pca")
    try:
        st.edit("undo", {})  # the move of x and z
    finally:
        st.close()
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert not any(s["carried"].values())
    assert [r["what"] for r in s["not_carried"]] == ["undo"] and "undone" in s["not_carried"][0]["reason"]
    assert "1 not carried" in s["message"]
    assert RunDir.open(new).edits().events()[-1].kind == "carry"
    st = Studio(new, warm=False, map_method="pca")
    try:
        assert int(st.state.labels[to_new[z]]) == cl_new[CLASSES[2]]
    finally:
        st.close()


def test_carrying_again_leaves_the_last_edit_carried_before_alone(world, curated, carried, tmp_path):
    """The previous run's last edit carried the first time (the item tag "favourite") is not
    part of a second carry: this run took its tag off since, and carrying a later rename must
    neither put it back nor list it as not carried."""
    old = copy_run(world["run_old"], tmp_path / "old")
    new = copy_run(carried["out"], tmp_path / "new")
    tagged = _rows_by_file(new, world["new"])[os.path.relpath(curated["tagged"], world["old"])]
    st = Studio(new, warm=False, map_method="pca")
    try:
        st.edit("tag", {"items": [tagged], "remove": ["favourite"]})
    finally:
        st.close()
    st = Studio(old, warm=False, map_method="pca")
    try:
        st.edit("rename", {"cluster": by_label(old)[CLASSES[1]], "name": "my dogs again"})
    finally:
        st.close()
    s = carry_curation(old, new, cache_dir=world["cache"])
    assert s["carried"]["names"] == 1 and s["carried"]["item_tags"] == 0 and s["not_carried"] == [], s
    st = Studio(new, warm=False, map_method="pca")
    try:
        assert tagged not in st.state.item_tags
    finally:
        st.close()


@pytest.mark.slow
def test_the_new_badge_follows_the_items_through_merges_and_moves(carried, tmp_path):
    """A cluster is "new" when most of its items were in a cluster the carry found new: after
    the person moves most of a new cluster's items to a cluster of their own and merges a kept
    cluster into what is left, the badge is on the cluster the items went to, not on the id."""

    run = copy_run(carried["out"], tmp_path / "run")
    summary = json.loads((run / "carry.json").read_text())
    (p,) = summary["new_clusters"]
    kept = by_label(run)[CLASSES[0]]
    srv = Server(run, "--map", "pca")
    try:
        with client(srv) as c:
            members = c.get(f"/api/clusters/{p}/all").json()["items"]
            r = post(c, "/api/edits", {"kind": "move", "items": members[:15], "to": "new", "name": "chutes"})
            assert r.status_code == 200, r.text
            r = post(c, "/api/edits", {"kind": "merge", "clusters": [p, kept], "into": p})
            assert r.status_code == 200, r.text
            rows = {e["id"]: e for e in c.get("/api/clusters").json()["clusters"]}
        made = next(i for i, e in rows.items() if e["name"] == "chutes")
        assert {i for i, e in rows.items() if e["new"]} == {made}
        assert rows[made]["carry"] == "new" and rows[p]["carry"] == "kept" and kept not in rows
        _page_badges_and_filters(srv.url, [made])
    finally:
        srv.stop()


def test_the_rule_reports_splits_merges_and_gone_clusters():
    """The matching rule alone, on the shared items' labels (previous, new)."""
    pairs = ([(0, 10)] * 10                     # 0 kept as 10
             + [(1, 11)] * 6 + [(1, 12)] * 4    # 1 split into 11 and 12; 11 continues it
             + [(2, 13)] * 5 + [(3, 13)] * 5    # 2 and 3 merged into 13: neither is most of it
             + [(4, 10)] * 1 + [(4, 11)] * 1 + [(4, 13)] * 1)  # 4 scattered: gone
    old, new = np.array(pairs).T
    sizes = {10: 11, 11: 7, 12: 4, 13: 11, 14: 30}  # 14: only new items
    prev, clusters, carried = match_clusters(old, new, [0, 1, 2, 3, 4, 5], sizes)
    st = {r["cluster"]: r["status"] for r in prev}
    assert st == {0: "kept", 1: "split", 2: "merged", 3: "merged", 4: "gone", 5: "gone"}
    assert carried == {0: 10, 1: 11}  # the mutual majorities only: merges carry nothing
    assert [r["to"] for r in prev if r["cluster"] == 1] == [[11, 12]]
    assert [r["with"] for r in prev if r["cluster"] == 2] == [[3]]
    assert [(r["largest"], r["largest_share"]) for r in prev if r["cluster"] == 4] == [(10, 0.3333)]  # 4 has one item in each of 10, 11, 13: ties go to the lowest id
    cst = {r["cluster"]: r["status"] for r in clusters}
    assert cst == {10: "kept", 11: "split", 12: "split", 13: "merged", 14: "new"}


def test_half_of_a_cluster_is_no_majority_its_curation_goes_to_neither_half():
    """A previous cluster split exactly in half: neither half holds most of it, so neither
    inherits its name (either would be an arbitrary pick); it is reported split into both."""
    old, new = np.array([(6, 15)] * 3 + [(6, 16)] * 3 + [(7, 17)] * 4).T
    prev, _, carried = match_clusters(old, new, [6, 7], {15: 3, 16: 3, 17: 4})
    assert carried == {7: 17}
    six = next(r for r in prev if r["cluster"] == 6)
    assert six["status"] == "split" and six["to"] == [15, 16] and six["carried_to"] is None
    assert "heir" not in six


def test_a_clusters_carry_status_is_the_one_most_of_its_items_had():
    """``status_by_items`` on labels after a split (cluster 2, new, in two parts 2 and 5), a
    merge (0 and 1 into 0: kept and split) and a half-new cluster (3: no majority)."""
    from mediacluster.studio.carry import status_by_items

    statuses = ["kept", "new", "split"]
    codes = np.array([0] * 4 + [2] * 2 + [1] * 6 + [0] * 2 + [1] * 2 + [-1] * 3)
    labels = np.array([0] * 4 + [0] * 2 + [2] * 3 + [5] * 3 + [3] * 2 + [3] * 2 + [-1, 4, 4])
    assert status_by_items(labels, statuses, codes) == {0: "kept", 2: "new", 5: "new"}


@pytest.mark.slow
def test_reclustering_in_place_with_save_model_serves_the_carried_curation(world, curated, tmp_path):
    """The weekly loop: a service watches the curated run; `cluster ... --out RUN --carry-from RUN
    --save-model` re-clusters the grown collection and publishes the carried curation at once,
    so the service ends on a version with the person's names and junk marks (before, it was
    left on the bare fit, the junk cluster answered as clustered, until someone published)."""
    from test_serve import Server as Service

    same = tmp_path / "run"
    shutil.copytree(world["run_old"], same)
    st = Studio(same, warm=False, map_method="pca")
    try:
        st.publish(client="test")
    finally:
        st.close()
    before = RunDir.open(same).models.describe()  # last week's versions, kept for a rollback
    s = Service(str(same), "--poll", "0.2", log=tmp_path / "serve.log")
    try:
        rc, stdout = cluster(world["new"], same, 4, world["cache"], "--carry-from", str(same),
                             "--save-model")
        assert rc == 0, stdout
        assert "(the carried curation, published" in stdout, stdout
        latest = RunDir.open(same).models.pointer()
        n = len(before)  # numbering goes on after last week's versions: the bare fit, then the curation
        bare, carried = f"v{n + 1:04d}", f"v{n + 2:04d}"
        assert latest["version"] == carried and latest["source"] == "studio"
        deadline = time.monotonic() + 30
        while s.client.get("/v1/model").json()["version"] != carried or \
                s.client.get("/v1/model").json()["run_id"] != latest["run_id"]:
            assert time.monotonic() < deadline, "the service did not switch"
            time.sleep(0.1)
        clusters = s.client.get("/v1/clusters").json()["clusters"]
        names = {c["name"] for c in clusters}
        assert {"my fish", "my dogs"} <= names, names
        assert sum(c["junk"] for c in clusters) == 1
        # the bare fit was never served: it showed the carried names (read from the run)
        # without the junk mark and tags until the curated version came, about a second later
        assert s.client.get("/v1/model").json()["switches"] == 1
        after = RunDir.open(same).models.describe()
        assert [v["version"] for v in after if v["latest"]] == [carried]
        assert [v["version"] for v in after] == [v["version"] for v in before] + [bare, carried]
        # last week's versions are still there, with their ids: a rollback reaches them
        assert [v["id"] for v in after[:n]] == [v["id"] for v in before]
        assert len({v["id"] for v in after}) == n + 2
        # the listing tells the carried curation from a person's publish (both "studio")
        rc, listing = run_cli(["models", str(same)])
        lines = {ln.lstrip("* ").split()[0]: ln for ln in listing.splitlines() if ln.strip()}
        assert "carried curation" in lines[carried], listing
        assert not any("carried" in lines[v["version"]] for v in before), listing
    finally:
        s.stop()



def test_a_carry_that_carries_nothing_leaves_the_fit_served(world, tmp_path):
    """`--carry-from --save-model` publishes the bare fit held (a watching service does not
    switch to it) until the carried curation is published; a previous run with nothing to carry
    releases it at once, so the fit is what LATEST names, unheld."""
    rc, _ = cluster(world["old"], tmp_path / "plain", 3, world["cache"])
    assert rc == 0
    rc, stdout = cluster(world["new"], tmp_path / "grown", 4, world["cache"], "--carry-from",
                         str(tmp_path / "plain"), "--save-model")
    assert rc == 0 and "no edits" in stdout, stdout
    ptr = RunDir.open(tmp_path / "grown").models.pointer()
    assert ptr["version"] == "v0001" and not ptr.get("held"), (ptr, stdout)


def test_a_persons_name_equal_to_the_new_automatic_one_is_carried_as_theirs(world, tmp_path):
    """A person named a cluster what the new run's automatic namer also calls its heir (an
    ImageNet class: "tench"). The name is still theirs after the carry: the studio says so (no
    review of a cluster they named) and a later re-cluster carries it again, where the
    automatic name may differ. It was left as an automatic name (no rename carried)."""
    rc, _ = cluster(world["new"], tmp_path / "grown", 4, world["cache"])
    assert rc == 0
    fish_new = by_label(tmp_path / "grown")[CLASSES[0]]
    st = Studio(tmp_path / "grown", warm=False, map_method="pca")
    try:
        auto_name = st.state.clusters[fish_new].name
        assert st.state.clusters[fish_new].named_by == "automatic"
    finally:
        st.close()
    old = copy_run(world["run_old"], tmp_path / "old")
    st = Studio(old, warm=False, map_method="pca")
    try:
        st.edit("rename", {"cluster": by_label(old)[CLASSES[0]], "name": auto_name})
    finally:
        st.close()
    s = carry_curation(old, tmp_path / "grown", cache_dir=world["cache"])
    st = Studio(tmp_path / "grown", warm=False, map_method="pca")
    try:
        c = st.state.clusters[fish_new]
        assert (c.name, c.named_by) == (auto_name, "person")
    finally:
        st.close()
    assert s["carried"]["names"] >= 1
