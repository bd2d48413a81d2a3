"""The service's inbox (`serve --keep-uploads DIR`), as a client and a reviewer see it: a real
`mediacluster serve` process on a loopback port, real CIFAR / Imagenette images over HTTP, and
then the folder and its SQLite table read back: what the --keep rule picks is kept with its
answer, once per content; hostile file names stay data; the size bound and a failing disk stop
keeping but never answering; two worker processes lose no row."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_serve import Server, metric_families, upload

from mediacluster.serve.inbox import DB_NAME, KeepRule, sniff_extension


def rows(inbox: Path, n: int | None = None, timeout: float = 30) -> list[dict]:
    """The inbox's upload rows (waiting, when ``n`` is given, until there are that many: the
    writer thread writes after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        con = sqlite3.connect(inbox / DB_NAME)
        con.row_factory = sqlite3.Row
        out = [dict(r) for r in con.execute("SELECT * FROM uploads ORDER BY id")]
        con.close()
        if n is None or len(out) >= n or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def contents(inbox: Path) -> dict:
    con = sqlite3.connect(inbox / DB_NAME)
    out = {h: (f, c) for h, f, c in con.execute("SELECT hash, file, count FROM contents")}
    con.close()
    return out


def metric(server, family: str, **labels) -> float:
    fams = metric_families(server)
    if family not in fams:
        return 0.0
    return sum(s.value for s in fams[family].samples
               if all(s.labels.get(k) == v for k, v in labels.items())
               and not s.name.endswith("_created"))


def wait_ready(s: Server) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if s.client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("not ready")


@pytest.fixture(scope="module")
def run_dir(cifar3_embeddings, tmp_path_factory) -> Path:
    """The default pipeline's model of the 300 CIFAR airplanes / frogs / trucks (2-3 s). Not
    test_serve's fast PCA + k-means pipeline: a pipeline without UMAP gives its predictor the
    euclidean metric on the unnormalised vectors, and there (64 axes) none of the 80 Imagenette
    photos of the fixture is `novel` (novelty .83-.96), where the default's cosine predictor flags
    all of them (benchmarks/RESULTS.md, "Novelty on small collections: the check")."""
    from mediacluster.pipeline import Pipeline
    from mediacluster.workflow import publish_run

    out = tmp_path_factory.mktemp("inbox") / "run"
    publish_run(out, cifar3_embeddings, Pipeline(random_state=0).fit(cifar3_embeddings.vectors), save_model=True)
    return out


@pytest.fixture(scope="module")
def known(cifar3_dir) -> list[Path]:
    return [p for c in ("airplane", "frog", "truck") for p in sorted((cifar3_dir / c).glob("*.jpg"))[:2]]


@pytest.fixture(scope="module")
def strange(imagenette_dir) -> list[Path]:
    """Photos of kinds the CIFAR airplane / frog / truck model lacks (fish, dog, church, ...)."""
    found = sorted(imagenette_dir.rglob("*.JPEG"))[::10][:8]
    assert found
    return found


def test_keep_rule():
    r = KeepRule(frozenset({"novel"}))
    assert r.reason({"novel": True, "probability": 0.9}) == "novel"
    assert r.reason({"novel": False, "probability": 0.0, "status": "noise"}) is None
    u = KeepRule(frozenset({"uncertain", "junk"}), below=0.3)
    assert u.reason({"novel": False, "probability": 0.2, "status": "clustered"}) == "uncertain"
    assert u.reason({"novel": False, "probability": 0.9, "status": "junk"}) == "junk"
    assert u.reason({"novel": True, "probability": 0.9, "status": "clustered"}) is None
    t = KeepRule(frozenset({"novel"}), novelty=0.95)
    assert t.reason({"novel": False, "novelty": 0.96, "probability": 0.9}) == "novel"
    assert t.reason({"novel": False, "novelty": 0.5, "probability": 0.9}) is None
    assert t.reason({"novel": False, "novelty": None, "probability": 0.9}) is None  # an old model


def test_extension_from_the_bytes_not_the_name(known):
    data = known[0].read_bytes()
    assert sniff_extension(data, "../../evil.png", "image") == ".jpg"
    assert sniff_extension(b"RIFF\0\0\0\0WAVEfmt ", "a.mp3", "audio") == ".wav"
    assert sniff_extension(b"garbage", "x/../y.PNG", "image") == ".png"
    assert sniff_extension(b"garbage", "x.exe", "image") == ".bin"
    from PIL import features

    if features.check("avif"):  # an AVIF upload without a name was kept as .bin, which no run reads
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buf, format="AVIF")
        assert sniff_extension(buf.getvalue(), None, "image") == ".avif"


def test_every_kept_extension_has_its_content_type():
    """One table (``ingest.sources.CONTENT_TYPES``) for what a stored upload is served as: every
    extension the inbox may keep (sniffed, or a client's name a run reads) has its media's type
    (before, the HTTP layer's own table knew 12 and a kept ``.tga`` / ``.ppm`` went out as
    ``application/octet-stream``); the excerpts' two formats go both ways."""
    from mediacluster.inbox import _PIL_EXT
    from mediacluster.ingest.sources import MEDIA_EXTENSIONS, content_type, extension_of

    for media, exts in MEDIA_EXTENSIONS.items():
        for ext in exts | (set(_PIL_EXT.values()) if media == "image" else set()):
            assert content_type(f"a--0123{ext.upper()}").startswith(f"{media}/"), ext
    assert sniff_extension(b"garbage", "scan.tga", "image") == ".tga" and content_type("x.tga") == "image/x-tga"
    assert content_type("x.bin") == "application/octet-stream"
    for kind in ("audio/mpeg", "audio/wav"):
        assert content_type("x" + extension_of(kind)) == kind


@pytest.mark.slow
def test_keep_novel_keeps_the_unlike_and_not_the_known(run_dir, known, strange, cifar3_embeddings, tmp_path):
    inbox = tmp_path / "inbox"
    s = Server(str(run_dir), "--keep-uploads", str(inbox), log=tmp_path / "server.log")
    try:
        answers = []
        for p in known + strange:
            r = s.client.post("/v1/assign", files=upload([p]))
            assert r.status_code == 200, r.text
            answers.append(r.json()["items"][0])
        # a vector far from every training vector: certainly a kind the collection lacks
        far = (-10 * cifar3_embeddings.vectors.mean(axis=0)).astype(float).tolist()
        r = s.client.post("/v1/assign", json={"vectors": [far, cifar3_embeddings.vectors[0].tolist()]})
        assert r.status_code == 200
        vec = r.json()["items"]
        assert vec[0]["novel"] and not vec[1]["novel"]
        novel_files = [a for a in answers if a["novel"]]
        got = rows(inbox, len(novel_files) + 1)
        time.sleep(0.3)  # nothing more comes
        got = rows(inbox)
        assert len(got) == len(novel_files) + 1
        assert all(r["reason"] == "novel" and r["novel"] == 1 for r in got)
        assert not any(a["novel"] for a in answers[:len(known)]), "CIFAR images of the model's kinds"
        # photos of kinds a CIFAR airplane / frog / truck model lacks: answered novel (measured: all 8,
        # novelty .997) and kept, and only they
        assert len(novel_files) >= 6 and {a["filename"] for a in novel_files} <= {p.name for p in strange}
        files = [r for r in got if r["input"] == "image"]
        assert sorted(r["filename"] for r in files) == sorted(a["filename"] for a in novel_files)
        for r, a in zip(files, novel_files):
            assert r["model_version"] == "v0001" and r["status"] == a["status"]
            assert r["cluster"] == a["cluster"] and abs(r["novelty"] - a["novelty"]) < 1e-9
            stored = inbox / r["file"]
            assert stored.suffix == ".jpg" and stored.parent == inbox / "files"
            src = next(p for p in strange if p.name == r["filename"])
            assert stored.read_bytes() == src.read_bytes() and r["size"] == src.stat().st_size
        v = next(r for r in got if r["input"] == "vector")
        assert v["file"] is None and v["size"] == 4 * len(far)
        assert metric(s, "mediacluster_inbox_kept", input="image") == len(novel_files)
        assert metric(s, "mediacluster_inbox_kept", input="vector") == 1
        # /v1/similar's answers are kept the same way, the same content counted again
        r = s.client.post("/v1/similar?k=2", json={"vectors": [far]})
        assert r.status_code == 200
        again = rows(inbox, len(got) + 1)[-1]
        assert again["route"] == "similar" and again["hash"] == v["hash"]
        assert contents(inbox)[v["hash"]] == (None, 2)
    finally:
        s.stop()


def test_keep_all_once_per_content_hostile_names_bound_and_failures(run_dir, known, strange, tmp_path):
    inbox = tmp_path / "inbox"
    sizes = [p.stat().st_size for p in known]
    # room for the six CIFAR images (about 1 KB each) and not for an Imagenette photo (tens of KB)
    bound_mb = (sum(sizes) + 2000) / 2**20
    s = Server(str(run_dir), "--keep-uploads", str(inbox), "--keep", "all", "--keep-max-mb",
               f"{bound_mb:.6f}", log=tmp_path / "server.log")
    try:
        hostile = ["../../x.jpg", "/etc/passwd", "a" * 190 + ".jpg", "caf\xe9\u202egpj.exe", "..", "x\\..\\y.jpg"]
        data = [p.read_bytes() for p in known]
        for name, d in zip(hostile, data):
            r = s.client.post("/v1/assign", files=[("files", (name, d, "image/jpeg"))])
            assert r.status_code == 200, r.text
        again = s.client.post("/v1/assign", files=upload(known[:2]))  # the same bytes twice
        assert again.status_code == 200
        got = rows(inbox, 8)
        assert len(got) == 8 and all(r["reason"] == "all" for r in got)
        assert {r["filename"] for r in got[:6]} >= {"../../x.jpg", "/etc/passwd", ".."}
        stored = sorted(p for p in inbox.rglob("*") if p.is_file())
        assert all(p.resolve().is_relative_to(inbox.resolve()) for p in stored)
        assert not (tmp_path / "x.jpg").exists() and not (inbox.parent.parent / "x.jpg").exists()
        files = sorted((inbox / "files").iterdir())
        assert len(files) == 6 and all(p.suffix == ".jpg" for p in files)  # stored once per content
        c = contents(inbox)
        assert sorted(n for _, n in c.values()) == [1, 1, 1, 1, 2, 2]
        from mediacluster.ingest import collect  # the kept folder is a collection like any folder

        assert len(collect(inbox / "files")) == 6
        # an item that cannot be read is answered with its error and not kept (nothing to review,
        # nothing a clustering could read); the good item beside it is kept, with its own answer
        r = s.client.post("/v1/assign", files=[("files", ("notes.jpg", b"not an image", "image/jpeg"))]
                          + upload(known[2:3]))
        assert r.status_code == 200 and r.json()["failed"] == 1, r.text
        got = rows(inbox, 9)
        assert len(got) == 9 and got[8]["filename"] == known[2].name, got[8:]
        # a failing write (a file in the way of the folder; root ignores permissions): answered, counted
        (inbox / "files").rename(inbox / "aside")
        (inbox / "files").write_text("in the way")
        for _ in range(2):
            r = s.client.post("/v1/assign", files=[("files", ("new.png", _png(), "image/png"))])
            assert r.status_code == 200 and r.json()["items"][0]["cluster"] >= -2
        deadline = time.monotonic() + 20
        while metric(s, "mediacluster_inbox_skipped", reason="error") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(s, "mediacluster_inbox_skipped", reason="error") == 2
        assert len(rows(inbox)) == 9
        (inbox / "files").unlink()
        (inbox / "aside").rename(inbox / "files")
        # the bound: a new, larger upload is answered but not kept
        for p in strange[:2]:
            r = s.client.post("/v1/assign", files=upload([p]))
            assert r.status_code == 200
        deadline = time.monotonic() + 20
        while metric(s, "mediacluster_inbox_skipped", reason="full") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric(s, "mediacluster_inbox_skipped", reason="full") == 2
        assert metric(s, "mediacluster_inbox_full") == 1
        assert len(rows(inbox)) == 9 and len(list((inbox / "files").iterdir())) == 6
        # a content already stored costs nothing and is still counted
        assert s.client.post("/v1/assign", files=upload(known[:1])).status_code == 200
        assert len(rows(inbox, 10)) == 10
        assert contents(inbox)[rows(inbox)[-1]["hash"]][1] == 3
    finally:
        s.stop()
    log = (tmp_path / "server.log").read_text()
    assert log.count("--keep-max-mb reached") == 1, log  # said once
    assert log.count("cannot keep an upload") == 1, log


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_two_worker_processes_lose_no_row(run_dir, known, tmp_path):
    """`--workers 2` and, on the same inbox, a second service: several processes write the one
    table at once (which worker accepts a connection is the kernel's choice, so the second
    service makes sure at least two processes write)."""
    inbox = tmp_path / "inbox"
    s = Server(str(run_dir / "models" / "v0001"), "--workers", "2", "--keep-uploads", str(inbox),
               "--keep", "all", log=tmp_path / "server.log")
    t = Server(str(run_dir), "--keep-uploads", str(inbox), "--keep", "all", log=tmp_path / "server2.log")
    try:
        wait_ready(s)

        def send(job):  # a new connection per request: the workers take turns accepting them
            url, p = job
            return httpx.post(url + "/v1/assign", files=upload([p]), timeout=60).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(send, [(u, p) for p in known * 4 for u in (s.url, t.url)]))
        assert codes == [200] * 48
        got = rows(inbox, 48)
        assert len(got) == 48 and len({r["pid"] for r in got}) >= 2
        assert sorted(n for _, n in contents(inbox).values()) == [8] * 6
        assert len(list((inbox / "files").iterdir())) == 6
        kept = metric(s, "mediacluster_inbox_kept", input="image")  # summed over both workers
        assert kept + metric(t, "mediacluster_inbox_kept", input="image") == 48
    finally:
        s.stop()
        t.stop()
    assert len(rows(inbox)) == 48
    assert not [p.name for p in (inbox / "files").iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.slow
def test_audio_model_keeps_clips_as_wav_whatever_their_name(tmp_path):
    """An audio model served with --keep all: the clips are stored with the extension of their
    format (a clip named .jpg is still a .wav) and the folder reads as an audio collection."""
    pytest.importorskip("soundfile")
    from test_audio import _extract, audio_model_run

    from mediacluster.ingest import collect

    clips = _extract(tmp_path / "fsdd", ("nicolas", "theo"), 12)
    run = audio_model_run(tmp_path, clips[::2])
    inbox = tmp_path / "inbox"
    s = Server(str(run), "--keep-uploads", str(inbox), "--keep", "all", log=tmp_path / "serve.log")
    try:
        new = clips[1::2][:3]
        names = ["clip.jpg", "../up.wav", "noext"]
        r = s.client.post("/v1/assign", files=[("files", (n, p.read_bytes())) for n, p in zip(names, new)])
        assert r.status_code == 200, r.text
        got = rows(inbox, 3)
        assert sorted(g["filename"] for g in got) == sorted(names)
        assert all(g["input"] == "audio" and g["file"].endswith(".wav") for g in got)
        assert len(collect(inbox / "files", media="audio")) == 3
    finally:
        s.stop()


def test_cli_refuses_an_inbox_it_cannot_write(tmp_path, run_dir, capsys):
    from mediacluster.cli import main

    (tmp_path / "afile").write_text("x")
    assert main(["serve", str(run_dir), "--port", "0", "--keep-uploads", str(tmp_path / "afile")]) == 2
    assert "afile" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", str(run_dir), "--port", "0", "--keep-uploads", str(tmp_path), "--keep-below", "1.5"])
    assert e.value.code == 2 and "--keep-below" in capsys.readouterr().err


def test_writer_backlog_is_bounded_and_close_writes_what_is_queued(tmp_path, known, monkeypatch):
    """In process, a real folder and table: what waits for the writer is bounded in bytes (the
    rest skipped as 'backlog', never queued without end), and close() writes what was queued."""
    from mediacluster.serve import inbox as mod

    events = []
    box = mod.Inbox(tmp_path / "inbox", KeepRule(frozenset({"all"})),
                    on_event=lambda kind, label: events.append((kind, label)))
    data = [p.read_bytes() for p in known[:3]]
    answers = [{"filename": f"{i}.jpg", "cluster": 0, "status": "clustered", "probability": 0.9,
                "novel": False, "novelty": 0.1} for i in range(3)]
    monkeypatch.setattr(mod, "MAX_PENDING_BYTES", len(data[0]) + len(data[1]))
    with box._cv:  # the writer cannot take anything while the test holds its lock
        assert box.offer("v0001", "assign", "image", answers, datas=data) == 3
        assert len(box._queue) == 2
    box.close()
    assert events.count(("skipped", "backlog")) == 1 and events.count(("kept", "image")) == 2
    assert len(rows(tmp_path / "inbox")) == 2


@pytest.mark.slow
def test_keep_novelty_keeps_answers_at_or_above_the_threshold(run_dir, cifar3_embeddings, tmp_path):
    """`--keep-novelty T`: a moderation queue of the answers at least T novel, not only those the
    1% rule flags `novel` (README: `novelty >= 0.95` catches more of the kinds a collection
    lacks); it implies `--keep novel`. Training vectors moved by more and more noise are
    answered more and more novel; those at or above T are kept, and only they."""
    inbox = tmp_path / "inbox"
    s = Server(str(run_dir), "--keep-uploads", str(inbox), "--keep", "uncertain", "--keep-below",
               "0.0001", "--keep-novelty", "0.5", log=tmp_path / "server.log")
    try:
        X = cifar3_embeddings.vectors
        rng = np.random.default_rng(0)
        scale = float(np.linalg.norm(X, axis=1).mean() / np.sqrt(X.shape[1]))
        moved = [X[i] + eps * scale * rng.standard_normal(X.shape[1]).astype(np.float32)
                 for i, eps in enumerate(np.linspace(0.0, 1.5, 16))]
        r = s.client.post("/v1/assign", json={"vectors": [m.tolist() for m in moved]})
        assert r.status_code == 200, r.text
        answers = r.json()["items"]
        want = sorted(round(a["novelty"], 6) for a in answers if a["novel"] or a["novelty"] >= 0.5)
        flagged = [a for a in answers if a["novel"]]
        assert want and len(want) < len(answers), [a["novelty"] for a in answers]  # both sides seen
        assert len(want) > len(flagged), [a["novelty"] for a in answers]  # more than the 1% rule
        # each answer says whether it went to the inbox, and why: an app files the others as placed
        assert [a["kept"] for a in answers] == ["novel" if a["novel"] or a["novelty"] >= 0.5 else None
                                                for a in answers]
        got = rows(inbox, len(want))
        time.sleep(0.3)  # nothing more comes
        got = rows(inbox)
        assert sorted(round(r["novelty"], 6) for r in got) == want
        assert all(r["reason"] == "novel" and r["input"] == "vector" for r in got)
    finally:
        s.stop()


@pytest.mark.parametrize("flags", [["--keep", "all"], ["--keep-novelty", "0.5"], ["--keep-max-mb", "10"]])
def test_a_keep_rule_without_an_inbox_is_refused(flags, tmp_path, capsys):
    """``serve RUN --keep all`` (``--keep-novelty``, ``--keep-max-mb``) without ``--keep-uploads``
    served with the rule unused: no upload was kept, and nothing said so."""
    from mediacluster.cli import main

    assert main(["serve", str(tmp_path), "--port", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert flags[0] in err and "--keep-uploads" in err, err
