"""A run folder survives moving the collection and the run: item paths are stored relative to
the recorded collection root and resolved when read (``mediacluster.locations``), with
``--collection-root`` for a collection that moved elsewhere. Real runs of real images, the real
CLI, the studio as a real server process over HTTP; an old run with absolute paths still reads."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from studio_helpers import Server, client, post, wait_written

from mediacluster.locations import Root, find, legacy, split_root


def cli(*argv):
    from mediacluster.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def raw_paths(run_dir: Path, name: str) -> list:
    """A table's ``path`` column as stored (no resolving)."""
    from mediacluster.fileio import read_table

    return read_table(run_dir / name)["path"].tolist()


# ------------------------------------------------------------------------------- the rule itself
def test_paths_under_the_root_are_stored_relative_others_absolute(tmp_path):
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    paths = [str(root / "a" / "x.jpg"), str(tmp_path / "elsewhere.jpg"), None, str(root / "b.jpg")]
    got_root, stored = split_root(paths, root)
    assert got_root == str(root)
    assert stored == ["a/x.jpg", str(tmp_path / "elsewhere.jpg"), None, "b.jpg"]
    # a sibling folder whose name starts like the root's is not under it
    assert Root(str(root), str(root)).store(str(tmp_path / "photos2" / "c.jpg")) == str(tmp_path / "photos2" / "c.jpg")
    # text that is not an absolute path (an id) is kept as it is
    assert Root(str(root), str(root)).store("item-7") == "item-7"
    # names that are not normal are normalised first; a hidden folder is an ordinary folder
    odd = [str(root) + "/./a.jpg", str(root) + "/.hidden/x.jpg", str(root) + "/a//b.jpg", "id7", None]
    assert Root(str(root), str(root)).store_all(odd) == ["a.jpg", ".hidden/x.jpg", "a/b.jpg", "id7", None]
    assert Root(str(root), str(root)).resolve_all(["a.jpg", "/x/y.jpg", None]) == [str(root / "a.jpg"), "/x/y.jpg", None]
    # without a root: the paths' common folder
    assert split_root([str(root / "a" / "x.jpg"), str(root / "b.jpg")])[0] == str(root)

    rec = Root(str(root), str(root)).record(tmp_path / "runs" / "r1")
    assert rec["root_from_store"] == "../../photos"
    now = tmp_path / "moved"
    shutil.move(root, now)
    # the recorded root is gone; nothing relative to the store either: paths say where they were
    assert find(rec["root"], rec["root_from_store"], tmp_path / "runs" / "r1").resolve("b.jpg") == str(root / "b.jpg")
    loc = find(rec["root"], rec["root_from_store"], tmp_path / "runs" / "r1", given=now)
    assert loc.resolve("a/x.jpg") == str(now / "a" / "x.jpg")
    assert loc.resolve(str(tmp_path / "elsewhere.jpg")) == str(tmp_path / "elsewhere.jpg")
    # a store with absolute paths only: their common folder, moved to the given root
    old = legacy([str(root / "a" / "x.jpg"), str(root / "b.jpg")], given=now)
    assert old.resolve(str(root / "a" / "x.jpg")) == str(now / "a" / "x.jpg")
    from mediacluster.errors import InputError

    with pytest.raises(InputError, match="collection root .*not a folder"):
        find(rec["root"], None, tmp_path, given=tmp_path / "nowhere")


# ------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def template(cifar3_dir, tmp_path_factory):
    """30 CIFAR images in three class folders, one of them twice (an exact duplicate for
    ``--dedup``), and an embedding cache that holds them after the first run."""
    base = tmp_path_factory.mktemp("relocate")
    photos = base / "photos"
    for cls in ("airplane", "frog", "truck"):
        (photos / cls).mkdir(parents=True)
        for f in sorted((cifar3_dir / cls).iterdir())[:10]:
            shutil.copy(f, photos / cls / f.name)
    first = sorted((photos / "frog").iterdir())[0]
    shutil.copy(first, photos / "frog" / ("copy of " + first.name))
    return {"photos": photos, "cache": base / "cache", "first": first.name}


def make_project(template, base: Path) -> dict:
    """``base/project/photos`` clustered by the CLI into ``base/project/run``."""
    photos = base / "project" / "photos"
    shutil.copytree(template["photos"], photos)
    code, out, err = cli("cluster", photos, "--out", base / "project" / "run", "--dedup", "--save-model", "--quiet",
                         "--reducer", "pca", "--reducer-param", "n_components=5", "--clusterer", "kmeans",
                         "--clusterer-param", "n_clusters=3", "--cache-dir", template["cache"])
    assert code == 0, out + err
    return {"project": base / "project", "photos": photos, "run": base / "project" / "run",
            "copied": str(photos / "frog" / ("copy of " + template["first"])),
            "original": str(photos / "frog" / template["first"])}


def check_run_reads(run_dir: Path, photos: Path, ids: list, root=None) -> None:
    """Every path the run gives back lies in ``photos`` and exists; ids are unchanged."""
    from mediacluster.rundir import RunDir

    run = RunDir.open(run_dir, collection_root=root)
    for df in (run.read_items(), run.read_assignments(), run.read_duplicates()):
        assert all(p.startswith(str(photos) + os.sep) and os.path.isfile(p) for p in df["path"]), df["path"][:3]
        assert df["id"].tolist() == ids
    emb = run.read_embeddings(mmap=True)
    assert all(os.path.isfile(p) for p in emb.paths)
    examples = [p for e in run.read_clusters() for p in e["examples"]]
    assert examples and all(p.startswith(str(photos) + os.sep) and os.path.isfile(p) for p in examples)


def test_a_run_stores_paths_relative_to_its_collection_root(template, tmp_path):
    project = make_project(template, tmp_path)
    info = json.loads((project["run"] / "run.json").read_text())
    assert info["collection_root"] == str(project["photos"]) and info["collection_root_from_run"] == "../photos"
    for name in ("items.parquet", "assignments.parquet", "duplicates.parquet"):
        stored = raw_paths(project["run"], name)
        assert not any(os.path.isabs(p) for p in stored) and "frog/" + Path(project["copied"]).name in stored
    clusters = json.loads((project["run"] / "clusters.json").read_text())["clusters"]
    assert not any(os.path.isabs(p) for e in clusters for p in e["examples"])
    # the id is the file's path when the run was made (what users join on), not the stored form
    from mediacluster.rundir import RunDir

    ids = RunDir.open(project["run"]).read_items()["id"].tolist()
    assert project["copied"] in ids and all(os.path.isabs(i) for i in ids)
    check_run_reads(project["run"], project["photos"], ids)
    # the duplicate pair is found, and its paths are where the files are
    dups = RunDir.open(project["run"]).read_duplicates()
    pair = dups[dups["path"].isin([project["copied"], project["original"]])]
    assert len(pair) == 2 and pair["duplicate_group"].nunique() == 1 and (pair["duplicate_group"] >= 0).all()
    # a run made from a run's embeddings (tune --report's OUT/best) keeps the collection root
    from mediacluster.pipeline import Pipeline
    from mediacluster.workflow import publish_run

    emb = RunDir.open(project["run"]).read_embeddings()
    assert emb.root == str(project["photos"])
    pipe = Pipeline(outliers=None, random_state=0).with_params(
        {"reducer": "pca", "reducer__n_components": 5, "clusterer": "kmeans", "clusterer__n_clusters": 2})
    again = publish_run(tmp_path / "again", emb, pipe.fit(emb.vectors), name=False)
    assert again.info["collection_root"] == str(project["photos"])
    assert raw_paths(again.path, "items.parquet") == raw_paths(project["run"], "items.parquet")


def test_a_run_table_given_as_a_manifest_reads_the_files_it_names(template, tmp_path):
    """`dups RUN/items.parquet` (or assignments.*, duplicates.parquet): the paths, relative to the
    collection root run.json records, were resolved against the run folder: "no usable files
    found ... RUN/frog/...: file not found". Now as the run reads them (RunDir.table_root),
    also after the project (run and photos) moved together."""
    from mediacluster.ingest import collect

    project = make_project(template, tmp_path / "a")
    files = sorted(str(p) for p in collect(project["photos"]).paths)
    for name in ("items.parquet", "assignments.parquet", "assignments.csv", "duplicates.parquet"):
        coll = collect(project["run"] / name)
        assert sorted(coll.paths) == files and not coll.skipped, (name, coll.skipped[:2])
    moved = tmp_path / "b"
    shutil.move(str(project["project"]), moved)
    coll = collect(moved / "run" / "items.parquet")
    assert sorted(coll.paths) == sorted(str(p) for p in collect(moved / "photos").paths)
    code, out, err = cli("dups", moved / "run" / "items.parquet", "--out", tmp_path / "o", "--no-embed",
                         "--cache-dir", template["cache"], "--quiet")
    assert code == 0 and f"{len(files)} items -> 1 duplicate groups" in out, out + err


@pytest.mark.slow
def test_moved_project_and_moved_collection(template, tmp_path):
    """The project folder (photos + run) moved whole: everything is found without a flag. Then
    the photos and the run moved apart: the report and the studio find the files again with
    ``--collection-root``, and writing the run back keeps the stored form."""
    from mediacluster.rundir import RunDir

    project = make_project(template, tmp_path / "made")
    ids = RunDir.open(project["run"]).read_items()["id"].tolist()
    whole = tmp_path / "renamed project"
    shutil.move(project["project"], whole)
    check_run_reads(whole / "run", whole / "photos", ids)
    code, out, err = cli("report", whole / "run", "--quiet")
    assert code == 0, out + err  # 3 would mean items without thumbnails

    pics, run_dir = tmp_path / "pictures" / "from the phone", tmp_path / "runs" / "r1"
    pics.parent.mkdir()
    run_dir.parent.mkdir()
    shutil.move(whole / "photos", pics)
    shutil.move(whole / "run", run_dir)
    code, out, err = cli("report", run_dir, "--quiet")
    assert code == 3 and "no thumbnail" in err  # the files are not where the run says
    assert f"collection root {project['photos']} recorded in the run is not there" in err and "--collection-root" in err
    # the Python API takes the same root
    from mediacluster.report import make_report

    make_report(run_dir, collection_root=pics, progress=False)
    assert json.loads((run_dir / "report" / "report.json").read_text())["missing_thumbnails"] == []
    examples = [e["examples"] for e in json.loads((run_dir / "clusters.json").read_text())["clusters"]]
    code, out, err = cli("report", run_dir, "--quiet", "--rename", "--collection-root", pics)
    assert code == 0, out + err
    # renaming rewrote clusters.json: its examples are still stored relative to the root
    assert [e["examples"] for e in json.loads((run_dir / "clusters.json").read_text())["clusters"]] == examples
    rep = json.loads((run_dir / "report" / "report.json").read_text())
    assert rep["missing_thumbnails"] == [] and rep["thumbnails"] > 0
    assert len(list((run_dir / "report" / "thumbs").iterdir())) >= rep["thumbnails"]
    code, out, err = cli("report", run_dir, "--collection-root", tmp_path / "nowhere")
    assert code == 2 and "not a folder" in err
    check_run_reads(run_dir, pics, ids, root=pics)

    # the studio, a real server process over HTTP: the images are found with the flag only
    stored_before = raw_paths(run_dir, "assignments.parquet")
    for extra, found in (((), False), (("--collection-root", str(pics)), True)):
        s = Server(run_dir, *extra)
        try:
            with client(s) as c:
                assert ("--collection-root DIR" in "".join(s.lines)) is not found
                item = c.get("/api/items/0").json()
                assert item["path"].startswith(str(pics if found else project["photos"]))
                r = c.get("/api/items/0/preview")
                if found:
                    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
                else:
                    assert r.status_code == 404 and r.json()["error"]["kind"] == "no_image"
                if found:  # an edit makes the studio write the assignments back
                    assert post(c, "/api/edits", {"kind": "rename", "cluster": 0, "name": "moved"}).status_code == 200
                    wait_written(c)
        finally:
            s.stop()
    a = RunDir.open(run_dir).read_assignments()
    assert "curated_name" in a and "moved" in set(a["curated_name"])
    assert raw_paths(run_dir, "assignments.parquet") == stored_before  # still relative, unchanged


def test_an_old_run_with_absolute_paths_still_reads(template, tmp_path):
    """A run written before roots were recorded: absolute paths, no ``collection_root`` in
    run.json. It reads as before; ``--collection-root`` moves its paths; writing keeps them
    absolute (its run.json names no root to be relative to), at the place they resolved to."""
    from mediacluster.fileio import read_table, write_table
    from mediacluster.rundir import RunDir

    proj = make_project(template, tmp_path)["project"]
    run_dir, photos = proj / "run", proj / "photos"
    info = json.loads((run_dir / "run.json").read_text())
    info.pop("collection_root")
    info.pop("collection_root_from_run")
    (run_dir / "run.json").write_text(json.dumps(info))
    for name in ("items.parquet", "assignments.parquet", "duplicates.parquet"):
        df = read_table(run_dir / name)
        write_table(run_dir / name, df.assign(path=[str(photos / p) for p in df["path"]]))
    clusters = json.loads((run_dir / "clusters.json").read_text())
    for e in clusters["clusters"]:
        e["examples"] = [str(photos / p) for p in e["examples"]]
    (run_dir / "clusters.json").write_text(json.dumps(clusters))
    ids = RunDir.open(run_dir).read_items()["id"].tolist()

    check_run_reads(run_dir, photos, ids)
    code, out, err = cli("report", run_dir, "--quiet")
    assert code == 0, out + err
    now = tmp_path / "photos now"
    shutil.move(photos, now)
    check_run_reads(run_dir, now, ids, root=now)
    run = RunDir.open(run_dir, collection_root=now)
    run.write_assignments(run.read_assignments())
    # still absolute (its run.json names no root), now where the files are
    assert all(p.startswith(str(now) + os.sep) for p in raw_paths(run_dir, "assignments.parquet"))
    check_run_reads(run_dir, now, ids, root=now)
    code, out, err = cli("report", run_dir, "--quiet", "--collection-root", now)
    assert code == 0, out + err


# ------------------------------------------------------------------------ the `dups` job's output
def test_dups_output_follows_a_moved_collection(template, tmp_path):
    """`mediacluster dups PHOTOS --out OUT` stores paths relative to the collection root and
    records it (dups.json) as a run does: after the project (photos + OUT) moved whole the table
    reads back with paths that exist and the page's thumbnails are still beside it; OUT moved
    alone, ``collection_root=`` finds the photos; ``id`` (what users join on) never changes."""
    import re

    import pandas as pd

    from mediacluster.duplicates.collection import read_dups

    photos = tmp_path / "project" / "photos"
    shutil.copytree(template["photos"], photos)
    out = tmp_path / "project" / "dups"
    code, text, err = cli("dups", photos, "--out", out, "--no-embed", "--quiet")
    assert code == 0, text + err
    info = json.loads((out / "dups.json").read_text())
    assert info["collection_root"] == str(photos) and info["collection_root_from_out"] == "../photos"
    copied = "frog/copy of " + template["first"]
    for stored in (raw_paths(out, "dups.parquet"), pd.read_csv(out / "dups.csv")["path"].tolist()):
        assert len(stored) == 31 and not any(os.path.isabs(p) for p in stored) and copied in stored
    ids = pd.read_parquet(out / "dups.parquet")["id"].tolist()
    assert all(os.path.isabs(i) and i.startswith(str(photos) + os.sep) for i in ids)
    df = read_dups(out)
    assert df["id"].tolist() == ids and all(p.startswith(str(photos) + os.sep) and os.path.isfile(p) for p in df["path"])
    pair = df[df["path"].isin([str(photos / copied), str(photos / "frog" / template["first"])])]
    assert len(pair) == 2 and pair["duplicate_group"].nunique() == 1 and (pair["duplicate_group"] >= 0).all()
    page = (out / "dups.html").read_text(encoding="utf-8")
    thumbs = re.findall(r'src="(thumbs/[^"]+)"', page)
    assert len(thumbs) == 2 and str(photos) not in page  # the pair; names shown as stored

    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(tmp_path / "project", moved)
    assert not photos.exists()
    df = read_dups(moved / "dups")
    assert df["id"].tolist() == ids
    assert all(p.startswith(str(moved / "photos") + os.sep) and os.path.isfile(p) for p in df["path"])
    assert all((moved / "dups" / t).is_file() for t in thumbs)  # the page's thumbnails moved with it

    # the output alone elsewhere: paths say where the photos were, until told where they are
    alone = tmp_path / "dups_copy"
    shutil.copytree(moved / "dups", alone)
    assert read_dups(alone)["path"].tolist() == [str(photos / p) for p in raw_paths(alone, "dups.parquet")]
    df = read_dups(alone, collection_root=moved / "photos")
    assert all(os.path.isfile(p) for p in df["path"]) and df["id"].tolist() == ids


def test_dups_output_with_absolute_paths_still_reads(template, tmp_path):
    """An output of `dups` written before roots were recorded (absolute paths, no dups.json)
    reads as it is, and ``collection_root=`` moves its paths from their common folder."""
    import pandas as pd

    from mediacluster.duplicates.collection import read_dups
    from mediacluster.fileio import write_table

    photos = tmp_path / "photos"
    shutil.copytree(template["photos"], photos)
    out = tmp_path / "dups"
    code, text, err = cli("dups", photos, "--out", out, "--no-embed", "--quiet", "--groups", "1")
    assert code == 0, text + err
    df = pd.read_parquet(out / "dups.parquet")
    write_table(out / "dups.parquet", df.assign(path=[str(photos / p) for p in df["path"]]))
    (out / "dups.json").unlink()
    assert read_dups(out)["path"].tolist() == [str(photos / p) for p in df["path"]]
    now = tmp_path / "now"
    shutil.move(photos, now)
    got = read_dups(out, collection_root=now)["path"].tolist()
    assert got == [str(now / p) for p in df["path"]] and all(os.path.isfile(p) for p in got)
