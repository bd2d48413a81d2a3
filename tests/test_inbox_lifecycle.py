"""The inbox a person works through (`mediacluster.inbox`, `mediacluster inbox DIR`): a real
`mediacluster serve --workers 2 --keep-uploads` process over HTTP on 127.0.0.1 keeps uploads
under the names their uploaders gave (made safe); the review queue is listed, marked reviewed
and purged while the two workers write; a `cluster` run that reads the inbox's files through a
link takes them out of the queue, and its items carry the uploaders' names."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_serve import Server
from test_serve_inbox import metric, rows

from mediacluster.inbox import (
    CLUSTERED,
    DB_NAME,
    FILES,
    REVIEWED,
    clean_name,
    listing,
    mark,
    purge,
    stored_file,
    summary,
    take,
)


def test_uploaders_names_are_made_safe():
    assert clean_name("beach day.jpg") == "beach day.jpg"
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\x\\..\\cat.PNG") == "cat.PNG"
    assert clean_name("\x1b[31mred\x00.png") == "[31mred.png"  # control characters gone
    assert clean_name("caf\xe9\u202egpj.exe") == "caf\xe9gpj.exe"  # no right-to-left override
    assert clean_name(".hidden.jpg") == "hidden.jpg"  # a leading dot would hide it from a folder scan
    assert clean_name("..") is None and clean_name("/") is None and clean_name(None) is None
    assert clean_name("\udcff\udcfe.jpg") == "\ufffd\ufffd.jpg"  # undecodable bytes, as a viewer shows them
    long = clean_name("a" * 300 + ".jpeg")
    assert long.endswith(".jpeg") and len(long) <= 80
    wide = clean_name("\u732b" * 200 + ".jpg")  # 3 UTF-8 bytes each: bounded in bytes too
    assert len(wide.encode()) <= 150 and wide.endswith(".jpg")
    h = "0123456789abcdef" * 2
    assert stored_file(h, ".jpg", "../x/beach day.png") == f"{FILES}/beach day--{h[:16]}.jpg"
    assert stored_file(h, ".jpg", "..") == f"{FILES}/{h}.jpg"
    assert stored_file(h, ".bin", None) == f"{FILES}/{h}.bin"


@pytest.fixture(scope="module")
def fast_run(cifar3_embeddings, tmp_path_factory) -> Path:
    from studio_helpers import make_run

    return make_run(cifar3_embeddings, tmp_path_factory.mktemp("lifecycle") / "run")


def _cli(*args: str, capsys) -> tuple[int, dict]:
    from mediacluster.cli import main

    capsys.readouterr()
    code = main(["inbox", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _consistent(inbox: Path) -> None:
    """Every stored content's file exists, every file in files/ is a stored content's, every
    upload row has its content."""
    con = sqlite3.connect(inbox / DB_NAME)
    stored = {f for (f,) in con.execute("SELECT file FROM stored WHERE file IS NOT NULL")}
    orphans = con.execute("SELECT COUNT(*) FROM uploads u LEFT JOIN stored s ON s.hash = u.hash "
                          "WHERE s.hash IS NULL").fetchone()[0]
    con.close()
    on_disk = {f"{FILES}/{p.name}" for p in (inbox / FILES).iterdir() if not p.name.startswith(".")}
    assert stored == on_disk and orphans == 0, (stored ^ on_disk, orphans)


def test_the_review_queue_over_http_with_two_workers(fast_run, cifar3_dir, imagenette_dir, tmp_path, capsys):
    inbox = tmp_path / "inbox"
    s = Server(str(fast_run), "--workers", "2", "--keep-uploads", str(inbox), "--keep", "all",
               log=tmp_path / "server.log")
    try:
        known = sorted(cifar3_dir.rglob("*.jpg"))
        names = ["beach day.jpg", "../../etc/passwd", "\x1b[31mred.png", "a" * 190 + ".jpg"]
        for name, p in zip(names, known):
            r = s.client.post("/v1/assign", files=[("files", (name, p.read_bytes(), "image/jpeg"))])
            assert r.status_code == 200 and r.json()["items"][0]["filename"] == name, r.text
        got = rows(inbox, 4)
        assert [r["filename"] for r in got] == names  # the client's name as sent stays data
        files = sorted(p.name for p in (inbox / FILES).iterdir())
        assert len(files) == 4 and all(p.resolve().parent == (inbox / FILES).resolve()
                                       for p in (inbox / FILES).iterdir())
        by_hash = {r["hash"]: r for r in got}
        for h, r in by_hash.items():
            want = f"{clean_name(r['filename'])}"
            assert r["file"] == stored_file(h, ".jpg", r["filename"]), r
            assert Path(r["file"]).name.startswith(os.path.splitext(want)[0] + "--")
        assert metric(s, "mediacluster_inbox_contents", state="pending") == 4

        code, out = _cli(str(inbox), capsys=capsys)
        assert code == 0 and out["contents"] == {"pending": 4, "reviewed": 0, "clustered": 0}
        assert [it["name"] for it in out["items"]] == [clean_name(n) for n in names]
        assert out["items"][0]["answer"]["status"] in ("clustered", "noise", "outlier")
        beach = out["items"][0]["file"]
        code, out = _cli(str(inbox), "--mark-reviewed", beach, "nope", capsys=capsys)
        assert code == 2 and out["marked"] == {"marked": 1, "unknown": ["nope"]}
        assert out["contents"]["pending"] == 3 and len(out["items"]) == 3
        assert metric(s, "mediacluster_inbox_contents", state="reviewed") == 1
        assert metric(s, "mediacluster_inbox_contents", state="pending") == 3

        # the two workers keep writing while a person marks and purges: nothing half-done
        more = sorted(imagenette_dir.rglob("*.JPEG"))[:24] + known[4:12]
        errors = []

        def send():
            for i, p in enumerate(more):
                try:
                    r = s.client.post("/v1/assign", files=[("files", (f"up {i}.jpg", p.read_bytes(), "image/jpeg"))])
                    assert r.status_code == 200
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)

        t = threading.Thread(target=send)
        t.start()
        marked = purged = purged_uploads = 0
        while t.is_alive():
            marked += mark(inbox)["marked"]
            got = purge(inbox, 0)
            purged, purged_uploads = purged + got["contents"], purged_uploads + got["uploads"]
            time.sleep(0.05)
        t.join()
        assert not errors
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the rows are written after the answers
            if len(rows(inbox)) + purged_uploads >= 4 + len(more):
                break
            time.sleep(0.1)
        assert len(rows(inbox)) + purged_uploads == 4 + len(more)
        _consistent(inbox)
        assert purged >= 1 and marked >= 1  # 'beach day' at least: reviewed before the loop
        c = summary(inbox)
        assert sum(c["contents"].values()) + purged == 4 + len(more)
        # a content purged and uploaded again is stored anew, pending
        r = s.client.post("/v1/assign", files=[("files", ("beach day.jpg", known[0].read_bytes(), "image/jpeg"))])
        assert r.status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                it["name"] == "beach day.jpg" for it in listing(inbox, "pending")):
            time.sleep(0.1)
        assert any(it["name"] == "beach day.jpg" for it in listing(inbox, "pending"))
        _consistent(inbox)
    finally:
        s.stop()


def test_a_cluster_run_takes_the_inbox_it_reads(cifar3_dir, tmp_path, capsys):
    """In process: an inbox written by the service's writer, linked into a collection as README
    says; `cluster` over the collection marks what it read as clustered by its run and shows
    the uploaders' names in its items; purge keeps clustered contents unless asked."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.serve.inbox import Inbox, KeepRule
    from mediacluster.workflow import cluster_folder

    known = sorted(cifar3_dir.rglob("*.jpg"))
    inbox = tmp_path / "inbox"
    box = Inbox(inbox, KeepRule(frozenset({"all"})))
    answers = [{"filename": f"upload {i}.jpg", "cluster": 0, "status": "clustered", "probability": 0.9,
                "novel": False, "novelty": 0.1} for i in range(4)]
    box.offer("v0001", "assign", "image", answers, datas=[p.read_bytes() for p in known[200:204]])
    box.offer("v0001", "assign", "vector", [dict(answers[0], filename=None)], vectors=np.ones((1, 8), "float32"))
    box.close()
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in known[:12]:
        shutil.copy(p, photos / f"{p.parent.name}-{p.name}")
    (photos / "inbox").symlink_to(inbox / FILES)
    pipe = Pipeline(outliers=None, random_state=0).with_params(
        {"reducer": "pca", "reducer__n_components": 4, "clusterer": "kmeans", "clusterer__n_clusters": 2})
    res = cluster_folder(photos, tmp_path / "run", pipeline=pipe, cache_dir=tmp_path / "cache", progress=False)
    assert res.inbox_taken == {str(inbox.resolve()): 4}
    c = summary(inbox)["contents"]
    assert c == {"pending": 1, "reviewed": 0, "clustered": 4}  # the vector is no file: still pending
    taken = listing(inbox, CLUSTERED)
    assert {it["run"] for it in taken} == {res.run.run_id} and {it["name"] for it in taken} == {
        f"upload {i}.jpg" for i in range(4)}
    shown = sorted(os.path.basename(p) for p in res.embeddings.paths if "/inbox/" in p)
    assert len(shown) == 4 and all(n.startswith("upload ") for n in shown)  # the studio shows basenames
    # a person marking everything leaves the clustered ones clustered
    assert mark(inbox, None, how=REVIEWED)["marked"] == 1
    assert summary(inbox)["contents"] == {"pending": 0, "reviewed": 1, "clustered": 4}
    assert take([str(photos / "inbox" / "nothing.jpg"), str(known[0])], "x") == {str(inbox.resolve()): 0}
    assert purge(inbox, 0)["contents"] == 1 and len(list((inbox / FILES).iterdir())) == 4
    got = purge(inbox, 0, states=(CLUSTERED,))
    assert got["contents"] == 4 and got["uploads"] == 4 and not list((inbox / FILES).iterdir())
    from mediacluster.errors import ParameterError

    with pytest.raises(ParameterError, match="purge states"):
        purge(inbox, 1, states=("gone",))


def test_take_passes_over_items_without_a_file(tmp_path):
    """A run of vectors (a fit sample, a streamed vector file) has no path for its rows: None or
    NaN from the assignments table. `take` raised TypeError on the NaN, an internal error after
    the run was made (every `cluster --fit-sample` of vectors)."""
    from mediacluster.inbox import take

    assert take([None, float("nan"), "", str(tmp_path / "a.jpg")], "run-1") == {}


@pytest.mark.parametrize("damage", ["cut short", "overwritten"])
@pytest.mark.parametrize("args", [[], ["--mark-reviewed", "all"], ["--purge", "0"]])
def test_the_inbox_command_refuses_a_damaged_table_naming_it(tmp_path, capsys, damage, args):
    """An inbox.sqlite cut short (a copy, a full disk) or overwritten: `mediacluster inbox`
    (list, --mark-reviewed, --purge) stopped with "internal error (a bug, not your input):
    DatabaseError: database disk image is malformed" (or "file is not a database"), a crash
    log; `serve --keep-uploads` on the same folder already refused it by name."""
    from mediacluster.cli import main
    from mediacluster.inbox import open_db

    inbox = tmp_path / "inbox"
    con = open_db(inbox)
    with con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    db = inbox / DB_NAME
    assert db.stat().st_size >= 8192
    if damage == "cut short":
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2)
    else:
        db.write_bytes(b"not a database, a text file saved over it\n" * 200)
    capsys.readouterr()
    assert main(["inbox", str(inbox), *args]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and f"{db} cannot be read" in err and "damaged" in err, err


def _three_photos(cifar3_dir, tmp_path) -> Path:
    """An inbox (``tmp_path/inbox``, keeping all) holding three CIFAR photos offered as one
    assign request, each clustered to 0."""
    from mediacluster.serve.inbox import Inbox, KeepRule

    inbox = tmp_path / "inbox"
    box = Inbox(inbox, KeepRule(frozenset({"all"})))
    photos = sorted(cifar3_dir.rglob("*.jpg"))[:3]
    box.offer("v0001", "assign", "image", [{"filename": f"u{i}.jpg", "cluster": 0, "status": "clustered"}
                                           for i in range(3)], datas=[p.read_bytes() for p in photos])
    box.close()
    return inbox


def test_purge_passes_over_a_file_it_cannot_remove_and_keeps_its_rows(cifar3_dir, tmp_path, capsys):
    """`inbox DIR --purge 0` where one stored file cannot be removed (a folder in its place, a
    read-only disk): "internal error (a bug, not your input): IsADirectoryError", and the files
    removed before it were gone while the rolled-back rows still listed them. Now that content
    keeps its rows (and is named), the others are purged, exit 2."""
    from mediacluster.cli import main

    inbox = _three_photos(cifar3_dir, tmp_path)
    files = sorted(p.name for p in (inbox / FILES).iterdir())
    stuck = inbox / FILES / files[1]  # the middle one: one file is removed before it
    stuck.unlink()
    (stuck / "inside").mkdir(parents=True)
    capsys.readouterr()
    assert main(["inbox", str(inbox), "--purge", "0", "--purge-also", "pending"]) == 2
    cap = capsys.readouterr()
    assert "purged: 2 contents" in cap.out and f"{FILES}/{files[1]}" in cap.err and "internal error" not in cap.err
    left = listing(inbox, "all")
    assert [it["file"] for it in left] == [f"{FILES}/{files[1]}"]
    assert sorted(p.name for p in (inbox / FILES).iterdir()) == [files[1]]
    _consistent(inbox)  # no row without its file, no file without its row
    assert summary(inbox)["uploads"] == 1


def test_the_listing_marks_a_content_whose_stored_file_is_gone(cifar3_dir, tmp_path, capsys):
    """A stored file deleted by hand: `inbox DIR` listed its content as any other (the service's
    file route 404s). Now the row says so (`missing`, "(FILE MISSING)") and a line counts them."""
    from mediacluster.cli import main

    inbox = _three_photos(cifar3_dir, tmp_path)
    before = listing(inbox, "all")
    assert [it["missing"] for it in before] == [False] * 3
    (inbox / before[1]["file"]).unlink()
    assert [it["missing"] for it in listing(inbox, "all")] == [False, True, False]
    capsys.readouterr()
    assert main(["inbox", str(inbox)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if before[1]["file"] in ln]
    assert len(lines) == 1 and "FILE MISSING" in lines[0], out
    assert out.count("FILE MISSING") == 1 and "1 of the 3 listed contents have lost their stored file" in out
    assert main(["inbox", str(inbox), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [it["missing"] for it in doc["items"]] == [False, True, False]
