"""The studio on what people produce: names it takes must export, clusters it has must split
or say why not."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from studio_helpers import make_run

from mediacluster.data import Embeddings


def _png_run(tmp_path, vecs=None, names=None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "c").mkdir()
    paths = []
    for i in range(12):
        p = tmp_path / "c" / (names[i] if names else f"im{i:02d}.png")
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(p)
        paths.append(str(p))
    if vecs is None:
        centres = rng.standard_normal((3, 8)) * 5
        vecs = (centres[np.arange(12) % 3] + rng.standard_normal((12, 8))).astype("float32")
    emb = Embeddings(ids=paths, vectors=vecs, encoder="test", paths=paths, root=str(tmp_path / "c"))
    return make_run(emb, tmp_path / "run", save_model=False, k=3)


@pytest.fixture
def png_run(tmp_path) -> Path:
    """A run of 12 small PNGs in 3 clusters (random vectors around 3 centres)."""
    return _png_run(tmp_path)


def test_a_long_name_of_emoji_exports_as_a_folder_the_file_system_takes(png_run):
    from mediacluster.studio.session import Studio

    st = Studio(png_run)
    try:
        name = "🐶" * 70  # 70 characters (the studio takes 200), 280 bytes in UTF-8: above NAME_MAX (255)
        st.edit("rename", {"cluster": 0, "name": name})
        for kind in ("folders", "classes"):
            out = Path(st.export(kind)["path"])
            dirs = [d for d in os.listdir(out) if (out / d).is_dir()]
            mine = [d for d in dirs if "🐶" in d]
            assert len(mine) == 1 and len(os.fsencode(mine[0])) <= 255, dirs
            assert len(os.listdir(out / mine[0])) == 4  # every item of the cluster
    finally:
        st.close()


def test_names_export_as_folders_under_an_ascii_file_system_encoding(png_run):
    """Under ``PYTHONUTF8=0 PYTHONCOERCECLOCALE=0 LC_ALL=C`` Python's file-system encoding is
    ASCII: ``studio --export classes`` of a cluster named "animal · device" was an internal error
    (UnicodeEncodeError in ``mkdir``). Each folder name is one the encoding can write ("café" is
    "cafe"), each item is exported, and under UTF-8 the names stay as they are."""
    import subprocess
    import sys

    from mediacluster.studio.session import Studio

    st = Studio(png_run)
    try:
        st.edit("rename", {"cluster": 0, "name": "animal · device"})
        st.edit("rename", {"cluster": 1, "name": "café"})
    finally:
        st.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_") and k not in ("LANG", "PYTHONIOENCODING")}
    env.update(PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", LC_ALL="C", MEDIACLUSTER_CACHE=str(png_run.parent / "cache"))
    enc = subprocess.run([sys.executable, "-c", "import sys; print(sys.getfilesystemencoding())"], env=env,
                         capture_output=True, text=True).stdout.strip()
    assert enc == "ascii"
    r = subprocess.run([sys.executable, "-m", "mediacluster", "studio", str(png_run), "--export", "classes"],
                       env=env, capture_output=True)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    (made,) = png_run.rglob("classes-*")
    dirs = sorted(d.name for d in made.iterdir() if d.is_dir())
    assert {"animal _ device", "cafe"} <= set(dirs), dirs
    assert len(list(made.rglob("*.png"))) == 12
    from mediacluster.studio.exports import safe_name

    if sys.getfilesystemencoding() == "utf-8":  # this process's: the names as they are
        assert safe_name("animal · device") == "animal · device" and safe_name("café") == "café"


def test_a_split_into_k_parts_of_identical_items_says_why_not_choose_k(tmp_path):
    from mediacluster.errors import InputError
    from mediacluster.studio.session import Studio

    vecs = np.zeros((12, 8), np.float32)
    vecs[:, 0] = 1
    vecs[4:8, 1] = 3
    vecs[8:, 2] = 3  # three clusters of 4 identical items each (copies of one photo)
    st = Studio(_png_run(tmp_path, vecs))
    try:
        for k, reducer in ((None, "auto"), (2, "auto"), (2, "pca"), (3, "umap")):
            with pytest.raises(InputError, match="no split") as e:
                st.split_preview(0, k=k, reducer=reducer)
            # no k splits copies: the answer says why, not to choose k (which the person did)
            assert "choose k" not in str(e.value) and "identical" in str(e.value)
        # a split along the levels takes no k: said so, not "choose k" (before, with k=2 given)
        with pytest.raises(InputError, match="not k=2; leave k out"):
            st.split_preview(1, k=2, reducer="tree")
    finally:
        st.close()


@pytest.mark.slow
@pytest.mark.browser
def test_ctrl_z_pressed_three_times_quickly_undoes_three_edits_in_chromium(png_run):
    """Before: every press sent the edit the page showed before the first answer came back: one
    undo, then two 409s ("edit 3 is not the latest edit in effect any more") for the person's
    own presses."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from studio_helpers import client, post, studio_in_chromium
    from test_studio_browser import js, loaded, wait

    with studio_in_chromium(png_run) as (s, drv):
        with client(s) as api:
            for k in range(3):
                assert post(api, "/api/edits", {"kind": "rename", "cluster": k, "name": f"name {k}"}).status_code == 200
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        drv.find_element("tag name", "body").click()
        ActionChains(drv).key_down(Keys.CONTROL).send_keys("zzz").key_up(Keys.CONTROL).perform()
        wait(lambda: js(drv, "return window.mcStudio.canUndo") is False and js(drv, "return window.mcStudio.busy") == 0,
             timeout=30, what="three undos")
        assert not js(drv, "return window.mcStudio.conflicts")
        with client(s) as api:
            ev = api.get("/api/edits").json()["events"]
        assert [(e["kind"], e["payload"].get("target")) for e in ev[3:]] == [("undo", 3), ("undo", 2), ("undo", 1)]


@pytest.mark.slow
def test_two_studios_with_tokens_on_one_machine_keep_their_own_page_cookie(png_run, tmp_path):
    """A browser sends a host's cookies to every port of it (RFC 6265 8.5). Before: both studios
    kept the page's token in one cookie name, so opening the second studio's page overwrote the
    first's, and every request of the first page was a 401 from then on."""
    import shutil

    import httpx
    from studio_helpers import Server

    other = shutil.copytree(png_run, tmp_path / "run2", symlinks=True)
    one, two = Server(png_run, "--token", "first-token"), Server(other, "--token", "second-token")
    try:
        with httpx.Client(timeout=60) as browser:  # one cookie jar, as one browser's
            assert browser.get(one.base + "?token=first-token").status_code == 200
            assert browser.get(one.base + "api/clusters").status_code == 200
            assert browser.get(two.base + "?token=second-token").status_code == 200
            assert browser.get(two.base + "api/clusters").status_code == 200
            assert browser.get(one.base + "api/clusters").status_code == 200  # the first page still works
    finally:
        one.stop()
        two.stop()


@pytest.mark.parametrize("flags", [["--export-prefer", "train/"], ["--export-split", "top"],
                                   ["--export-mode", "copy"], ["--cache-dir", "somewhere"]])
def test_an_export_or_carry_flag_without_its_step_is_refused_not_passed_over(png_run, flags, capsys):
    """Before: `studio RUN --export-prefer train/` (the --export forgotten) started the server and
    left the flag unused (here the port cannot be bound, so the start fails instead of serving)."""
    from mediacluster.cli import main

    assert main(["studio", str(png_run), "--no-browser", "--port", "70000", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{flags[0]} goes with" in err and "cannot listen" not in err


@pytest.mark.parametrize("mode", ["copy", "symlink"])
def test_a_file_gone_since_the_run_is_left_out_of_an_export_and_said(png_run, mode):
    """Before: a copy export of a run one of whose files was deleted since failed whole, "cannot
    write the export to .../folders-...: No such file or directory" (the export blamed, not the
    file); a symlink export linked to nothing."""
    import pandas as pd

    from mediacluster.studio.session import Studio

    st = Studio(png_run)
    try:
        gone = st.item(5)["path"]
        os.remove(gone)
        res = st.export("folders", mode)
        out = Path(res["path"])
        files = [f for d in out.iterdir() for f in d.iterdir()]
        assert len(files) == 11 and all(f.is_file() for f in files) and res["missing"] == 1
        res = st.export("classes", mode)
        out = Path(res["path"])
        assert res["dropped"] == {"missing": 1} and res["missing"] == 1
        drop = pd.read_csv(out / "dropped.csv")
        assert drop["path"].tolist() == [gone] and drop["reason"].tolist() == ["missing"]
        assert len(pd.read_csv(out / "manifest.csv")) == 11
    finally:
        st.close()


def test_a_run_re_clustered_while_the_studio_is_open_gets_no_export_or_model_of_the_old_curation(tmp_path):
    """Before: edits were refused once another process re-clustered the folder, but an export
    and a publish still wrote the old run's curated clusters into the new run: its exports/ and a
    model version its LATEST pointed at (a service watching the run switched to it)."""
    from mediacluster.rundir import RunDir
    from mediacluster.studio.session import Studio
    from mediacluster.studio.state import EditConflict

    run = _png_run(tmp_path)
    st = Studio(run)
    try:
        st.edit("rename", {"cluster": 0, "name": "cats"})
        old = RunDir(run)
        old_id, items = old.run_id, old.read_items()
        emb = Embeddings(ids=items["id"].tolist(), vectors=np.random.default_rng(1).standard_normal((12, 8)).astype("float32"),
                         encoder="test", paths=items["path"].tolist(), root=str(tmp_path / "c"))
        make_run(emb, run, save_model=False, k=2)  # another process re-clusters the folder
        for call in (lambda: st.export("csv"), lambda: st.export("classes"), st.publish):
            with pytest.raises(EditConflict, match="re-clustered"):
                call()
        assert RunDir(run).run_id != old_id
        assert not (run / "models").exists() and not (run / "exports").exists()
    finally:
        st.close()


def test_a_name_with_joiners_keeps_them_in_its_export_folder():
    """Zero-width joiners are part of the words (Persian's ZWNJ in "می‌خواهم") and of emoji (the
    family "👨‍👩‍👧"): before, each became "_" in the class folder, so the folder differed from the
    label manifest.csv gives it; a bidi override, which can make a name read as another, still does."""
    from mediacluster.studio.exports import safe_name

    for name in ("می\u200cخواهم", "👨\u200d👩\u200d👧 family", "cat\u200ddog"):
        assert safe_name(name) == name
    assert safe_name("photo\u202egpj.exe") == "photo_gpj.exe"


def test_the_duplicates_view_shows_a_copy_gone_since_the_run_as_the_export_leaves_it(tmp_path):
    """The page's duplicates view shows what the classes export will do: a person's chosen copy
    whose file is gone now is left out of the export (another copy kept), so the view must not
    call it kept."""
    from mediacluster.studio.dupgroups import DuplicateGroups

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    b.write_bytes(b"x")
    groups = DuplicateGroups([0, 0], [True, False], [str(a), str(b)], str(tmp_path))
    g = groups.group(0, np.array([0, 0]), set(), lambda i: {"i": i}, chosen=0)
    assert g["kept"] == 1 and {m["i"]: m["fate"] for m in g["members"]} == {0: "missing", 1: "kept"}


def test_a_thumbnail_is_served_when_the_cache_cannot_keep_it(png_run, tmp_path, monkeypatch):
    """The thumbnail cache is a convenience: a full disk or a cache folder that cannot be made
    (here under a plain file) must not cost the gallery. Before: every thumbnail was an internal
    error (NotADirectoryError / ENOSPC: a 500 per tile)."""
    from PIL import Image

    from mediacluster.studio.session import Studio

    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "file" / "cache"))
    st = Studio(png_run)
    try:
        for size in (96, 160):
            data, kind = st.thumbnail(0, size)
            assert kind == "image/jpeg" and Image.open(io.BytesIO(data)).format == "JPEG"
    finally:
        st.close()


@pytest.mark.parametrize("named_before", [False, True])
def test_a_rename_from_another_tab_after_a_split_preview_is_kept_by_the_split(png_run, named_before):
    """Tab A previews a split of a cluster, tab B renames the cluster, tab A applies the split
    with the preview's names. Before: the part keeping the cluster's id took the name the preview
    showed: B's "dogs" was lost in silence, and a cluster A had named "pets" came back "pets"
    marked automatic (so no longer sure by hand)."""
    from mediacluster.studio.session import Studio

    st = Studio(png_run)
    try:
        if named_before:
            st.edit("rename", {"cluster": 1, "name": "pets"}, client="tabA")
        pv = st.split_preview(1, k=2)
        st.edit("rename", {"cluster": 1, "name": "dogs"}, client="tabB")
        st.edit("split", {"preview": pv["preview"]}, client="tabA")
        c = next(c for c in st.clusters()["clusters"] if c["id"] == 1)
        assert (c["name"], c["named_by"]) == ("dogs", "person")
    finally:
        st.close()


def test_a_classes_export_lists_a_file_whose_name_is_not_utf8(tmp_path):
    """Before: the manifest's table was built with pandas' inferred (Arrow-backed) string columns,
    which cannot hold a name of Latin-1 bytes: UnicodeEncodeError, an internal error, and a
    half-written export folder left behind."""
    from mediacluster.fileio import read_table
    from mediacluster.studio.session import Studio

    names = [f"im{i:02d}.png" for i in range(12)]
    names[3] = os.fsdecode(b"caf\xe9.png")  # the name as Python reads it: a surrogate escape
    st = Studio(_png_run(tmp_path, names=names))
    try:
        odd = str(tmp_path / "c" / names[3])
        assert st.paths[3] == odd
        res = st.export("classes")
        out = Path(res["path"])
        man = read_table(out / "manifest.csv")
        assert len(man) == 12 and odd in man["path"].tolist()
        assert any(os.fsencode(f).endswith(b"caf\xe9.png") for d in out.iterdir() if d.is_dir() for f in os.listdir(d))
    finally:
        st.close()


def test_two_names_that_make_one_folder_name_export_as_two_classes(png_run):
    """A classes export put two clusters whose names give one folder name ('a/b' and 'a_b';
    'Cat' and 'cat', one folder on macOS and Windows) into one class folder, merging two
    classes in silence. Each class has its own folder now; the manifest's labels say which."""
    import pandas as pd

    from mediacluster.studio.exports import class_folders
    from mediacluster.studio.session import Studio

    assert class_folders(["a_b", "a/b", "Cat", "cat"]) == {"a_b": "a_b", "a/b": "a_b (2)", "Cat": "Cat",
                                                           "cat": "cat (2)"}
    long = "x" * 300
    assert all(len(v.encode()) <= 255 for v in class_folders([long, long[:100] + "y"]).values())
    st = Studio(png_run)
    try:
        for cid, name in ((0, "a/b"), (1, "a_b"), (2, "A_B")):
            st.edit("rename", {"cluster": cid, "name": name})
        out = Path(st.export("classes")["path"])
        dirs = sorted(d for d in os.listdir(out) if (out / d).is_dir())
        assert len(dirs) == 3, dirs
        man = pd.read_csv(out / "manifest.csv")
        for d in dirs:  # each folder holds one class's files, all of them
            files = set(os.listdir(out / d))
            rows = man[man["path"].map(os.path.basename).isin(files)]
            assert rows["label"].nunique() == 1 and len(rows) == len(files) == 4
    finally:
        st.close()


def test_publishing_when_every_cluster_is_junk_is_refused(png_run):
    """With every cluster marked junk the studio published a model (and moved LATEST to it)
    that places every new upload in junk; it is refused now, naming the way out, and no
    version is written."""
    from mediacluster.errors import InputError
    from mediacluster.rundir import RunDir
    from mediacluster.studio.session import Studio

    st = Studio(png_run)
    try:
        before = RunDir.open(png_run).models.versions()
        st.edit("junk", {"clusters": [0, 1, 2]})
        with pytest.raises(InputError, match="nothing to publish"):
            st.publish()
        assert RunDir.open(png_run).models.versions() == before
        st.edit("undo", {})
        assert st.publish()["clusters"] == 3
    finally:
        st.close()


def test_two_files_of_one_name_near_the_limit_export_into_one_folder(tmp_path):
    """Two files of one name (254 bytes, in two folders) in one cluster: the second got the
    ``i-`` prefix past NAME_MAX (255 bytes), ``File name too long``, and the whole export failed.
    The prefixed name's stem is cut in bytes now (its extension kept); a name that is not UTF-8
    counts as its bytes."""
    from PIL import Image

    from mediacluster.studio.exports import NAME_MAX
    from mediacluster.studio.session import Studio

    rng = np.random.default_rng(0)
    long = "é" * 125 + ".png"  # 125 characters of 2 bytes: 254 bytes
    paths = []
    for i in range(12):
        d = tmp_path / "c" / ("a" if i < 6 else "b")
        d.mkdir(parents=True, exist_ok=True)
        p = d / (long if i in (0, 6) else f"im{i:02d}.png")
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(p)
        paths.append(str(p))
    vecs = np.repeat(np.eye(3, 8, dtype=np.float32) * 5, 4, axis=0) + rng.standard_normal((12, 8)).astype("float32") * 0.1
    vecs[6] = vecs[0]  # the two files of one name in one cluster
    emb = Embeddings(ids=paths, vectors=vecs, encoder="test", paths=paths, root=str(tmp_path / "c"))
    st = Studio(make_run(emb, tmp_path / "run", save_model=False, k=3))
    try:
        for kind in ("folders", "classes"):
            out = Path(st.export(kind)["path"])
            names = [f for d in out.iterdir() if d.is_dir() for f in os.listdir(d)]
            assert len(names) == 12, (kind, names)
            mine = [f for f in names if "é" in f]
            assert len(mine) == 2 and all(len(os.fsencode(f)) <= NAME_MAX and f.endswith(".png") for f in mine)
    finally:
        st.close()
    from mediacluster.studio.exports import _prefixed

    odd = os.fsdecode(b"\xe9" * 251 + b".png")  # Latin-1 bytes: each one byte on disk
    assert len(os.fsencode(_prefixed("11-", odd))) == NAME_MAX and _prefixed("11-", odd).endswith(".png")


def test_an_export_that_fails_on_anything_but_an_oserror_leaves_no_folder(tmp_path):
    """Only an OSError removed the half-written export folder; any other failure left it behind
    (a folder of some clusters' links that looks like an export)."""
    import pandas as pd

    from mediacluster.studio.exports import export

    p = tmp_path / "x.png"
    p.write_bytes(b"not looked at")
    table = pd.DataFrame({"id": [str(p)], "path": [str(p)]})  # no curated_cluster column: a KeyError
    with pytest.raises(KeyError):
        export("folders", tmp_path / "exports", paths=[str(p)], table=table, clusters=[], seq=1)
    assert os.listdir(tmp_path / "exports") == []


def test_renaming_a_cluster_to_the_name_a_person_gave_records_nothing(png_run):
    """Enter on an unchanged name box recorded a rename: a no-op edit in the undo history (one
    Ctrl+Z that does nothing), in the next carry and in a publish's edit count. Now nothing is
    recorded and the answer says ``unchanged``; an automatic name given again is still an edit
    (the name becomes the person's)."""
    from mediacluster.studio.session import Studio

    st = Studio(png_run)
    try:
        auto = st.state.clusters[1].name
        first = st.edit("rename", {"cluster": 0, "name": "dogs"})
        again = st.edit("rename", {"cluster": 0, "name": " dogs "})  # the same name, as the box may hold it
        assert again["unchanged"] and again["seq"] == first["seq"] == st.state.seq
        assert [e.kind for e in st.log.events()] == ["rename"]
        confirmed = st.edit("rename", {"cluster": 1, "name": auto})  # the automatic name, now the person's
        assert "unchanged" not in confirmed and st.state.clusters[1].named_by == "person"
        assert st.edit("rename", {"cluster": 1, "name": auto})["unchanged"]
        st.edit("undo", {})  # takes back the confirmation, not a no-op
        assert st.state.clusters[1].named_by == "automatic" and st.state.clusters[0].name == "dogs"
    finally:
        st.close()


@pytest.mark.slow
@pytest.mark.browser
def test_a_duplicated_tab_takes_its_own_page_id_in_chromium(png_run):
    """A tab the browser clones (Chrome's "Duplicate tab"; a ``window.open`` of the page, which
    the HTML standard has copy the opener's ``sessionStorage`` the same way) started with the
    page id the studio keeps there: both tabs sent one id, so a 409 called the other tab's edit
    "this page"'s. The clone asks the pages of its origin whether its id is taken and takes a
    new one; a reload keeps its id."""
    from studio_helpers import client, studio_in_chromium
    from test_studio_browser import js, loaded, wait

    with studio_in_chromium(png_run) as (s, drv):
        drv.get(s.url)
        wait(lambda: loaded(drv), what="first paint")
        first = drv.current_window_handle
        mine = js(drv, "return sessionStorage.getItem('mc-client')")
        js(drv, "window.open(location.href)")  # not noopener: a clone of this page's sessionStorage
        wait(lambda: len(drv.window_handles) == 2, what="the second tab")
        drv.switch_to.window(next(h for h in drv.window_handles if h != first))
        wait(lambda: loaded(drv), what="the second tab's first paint")
        wait(lambda: js(drv, "return sessionStorage.getItem('mc-client')") != mine, timeout=10,
             what="a page id of its own")
        theirs = js(drv, "return sessionStorage.getItem('mc-client')")
        assert js(drv, "return window.mcStudio.client") == theirs  # the id the page's edits send
        rename = ("return fetch('api/edits', {method: 'POST', headers: {'Content-Type': 'application/json', "
                  "'X-Mediacluster': '1', 'X-Mediacluster-Client': sessionStorage.getItem('mc-client')}, "
                  "body: JSON.stringify({kind: 'rename', cluster: arguments[0], name: arguments[1]})}).then(r => r.status)")
        assert js(drv, rename, 1, "from the clone") == 200
        drv.switch_to.window(first)
        drv.refresh()  # a reload is the same page: its id stays
        wait(lambda: loaded(drv), what="the reload's first paint")
        assert js(drv, "return sessionStorage.getItem('mc-client')") == mine
        assert js(drv, rename, 0, "from the first tab") == 200
        with client(s) as api:
            ev = api.get("/api/edits").json()["events"]
        assert [e["client"] for e in ev] == [theirs, mine] and theirs != mine


def test_an_edit_the_disk_refuses_is_a_507_naming_the_log_and_the_edits_before_it_are_kept(png_run):
    """The disk fills (a file-size limit on the studio's process: EFBIG) while a person edits:
    each refused edit is a 507 saying the edit log could not be written and that this edit was
    not recorded (a 500 "internal error (OperationalError)" with a traceback in the log before);
    every acknowledged edit is in the log, and the studio goes on answering."""
    import httpx
    from studio_helpers import Server, post

    from mediacluster.rundir import RunDir

    limit = 48 * 1024  # the edit log's WAL outgrows it after a few commits; the tables stay under it
    srv = Server(png_run, setup=f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, "
                                "resource.getrlimit(resource.RLIMIT_FSIZE)[1]))")
    acked, refused = [], []
    try:
        with httpx.Client(base_url=srv.base, timeout=60.0) as c:
            for i in range(60):
                r = post(c, "/api/edits", {"kind": "rename", "cluster": i % 3, "name": f"{i:03d} " + "x" * 190})
                if r.status_code == 200:
                    acked.append(r.json()["seq"])
                else:
                    refused.append(r)
                    if len(refused) >= 3:
                        break
            assert refused, "the limit was never reached"
            for r in refused:
                err = r.json()["error"]
                assert r.status_code == 507 and err["kind"] == "output", r.text
                assert "edits.sqlite" in err["message"] and "this edit was not recorded" in err["message"], r.text
            assert c.get("/api/clusters").status_code == 200
    finally:
        srv.stop()
    assert "Traceback" not in "".join(srv.lines), "".join(srv.lines)[-3000:]
    log = RunDir(png_run).edits()
    try:
        assert [e.seq for e in log.events()] == acked
    finally:
        log.close()


def test_a_publish_or_export_record_leaves_the_written_state_current(png_run):
    """A publish (or export) is a record in the edit log, not an edit, and ``curated.json`` kept
    the edit before it: every studio opened on the run afterwards counted itself behind and
    wrote the whole curated state again (assignments and ``curated.json``), once per open; a
    second studio open meanwhile did the same when it read the record. Now a written state
    that no edit, undo or redo followed is current, at open and on reading another's record."""
    from mediacluster.rundir import RunDir
    from mediacluster.studio.session import Studio

    run = RunDir.open(png_run)

    def stamp():  # every write replaces both files (a new inode and time)
        return [(os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in (png_run / "curated.json", png_run / "assignments.parquet")]

    st = Studio(png_run, write_delay=0.05)
    try:
        st.edit("rename", {"cluster": 0, "name": "dogs"})
        st.write_state()
        other = Studio(png_run, write_delay=0.05)  # a second studio on the run, caught up
        try:
            assert other.writer.written_seq == other.state.seq
            before = stamp()
            st.publish()
            st.export("folders")
            other.sync()  # reads both records; its background writer is woken
            other.write_state()
            assert other.writer.written_seq == other.state.seq == st.state.seq
        finally:
            other.close()
        assert stamp() == before
    finally:
        st.close()
    assert stamp() == before and run.read_curated()["edits_seq"] == 1
    again = Studio(png_run, write_delay=0.05)
    try:
        assert again.writer.written_seq == again.state.seq == 3  # the edit, the publish, the export
        time.sleep(0.5)  # the background writer had it written by now
        assert stamp() == before
        again.edit("rename", {"cluster": 1, "name": "cats"})  # an edit after the records is written
        assert again.write_state() == 4 and run.read_curated()["edits_seq"] == 4
    finally:
        again.close()

def test_an_export_leaves_the_folder_another_export_of_this_process_is_building(tmp_path):
    """Two exports of one kind in the same second (two tabs, two people: the studio's requests
    run on a thread pool, unserialised) got one name: an export is built in a hidden
    ``.NAME.building-PID`` until whole, so the first's name was still free when the second
    picked it, the second's mkdir met the first's folder and its cleanup removed it (both
    failed). The in-progress folder is this process's (a live pid), as another thread's is."""
    import os
    import time

    import pandas as pd

    from mediacluster.studio.exports import BUILDING, export

    files = []
    for i in range(3):
        p = tmp_path / "media" / f"{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
        files.append(str(p))
    table = pd.DataFrame({"id": files, "curated_cluster": [0, 0, 1], "probability": [1.0] * 3})
    out_root = tmp_path / "exports"
    out_root.mkdir()
    t0 = time.time()
    building = []
    for dt in range(3):  # whichever second the export below starts in
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(t0 + dt))
        b = out_root / f".folders-{stamp}-e4{BUILDING}{os.getpid()}"
        (b / "cats").mkdir(parents=True)
        (b / "cats" / "0.jpg").write_bytes(b"half-way")
        building.append(b)
    res = export("folders", out_root, paths=files, table=table,
                 clusters=[{"id": 0, "name": "cats"}, {"id": 1, "name": "dogs"}], seq=4)
    assert all((b / "cats" / "0.jpg").read_bytes() == b"half-way" for b in building), \
        "another export's folder in progress was removed"
    assert Path(res["path"]).is_dir() and Path(res["path"]).name.endswith("-2"), res["path"]
    assert len(list(Path(res["path"]).iterdir())) == 2  # its two cluster folders
