"""``mediacluster cache``: what the embedding cache holds, and forgetting a part of it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time

import numpy as np

from mediacluster.cli import main
from mediacluster.embed.store import EmbeddingStore, failure_kind


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _filled(tmp_path):
    """A cache with two encoders (one with an extra), a derived kind, failures of one encoder,
    and the records of a file still there and of one deleted since."""
    d = tmp_path / "cache"
    kept, gone = tmp_path / "kept.bin", tmp_path / "gone.bin"
    kept.write_bytes(b"a")
    gone.write_bytes(b"bb")
    with EmbeddingStore(d) as s:
        rng = np.random.default_rng(0)
        s.put([f"h{i}" for i in range(5)], "imgenc@v1", {"embedding": rng.normal(size=(5, 8)),
                                                         "imagenet_probs": rng.random((5, 10))})
        s.put(["h0", "h9"], "mfcc@sr16000", {"embedding": rng.normal(size=(2, 3))})
        s.put_derived([("h0", b"x" * 16), ("h1", b"y" * 16)], "dups.signature/v1")
        s.remember_failures([("h7", "not an image")], failure_kind("imgenc@v1"))
        # recorded as if hashed a while after they were written (a younger file is not recorded)
        s.record_hashes([(str(p), os.stat(p), f"f{i}") for i, p in enumerate((kept, gone))], time.time() + 10)
    gone.unlink()
    return d


def test_summary_lists_what_the_cache_holds(tmp_path):
    d = _filled(tmp_path)
    rc, out, _ = run_cli(["cache", "--cache-dir", str(d), "--json"])
    assert rc == 0
    info = json.loads(out)
    enc = {r["encoder"]: r for r in info["encoders"]}
    assert enc["imgenc@v1"]["vectors"] == 5 and enc["imgenc@v1"]["dim"] == 8
    assert enc["imgenc@v1"]["extras"] == ["imagenet_probs"]
    assert enc["imgenc@v1"]["bytes"] == 5 * 8 * 4 + 5 * 10 * 2  # float32 vectors, float16 probs
    assert enc["mfcc@sr16000"]["vectors"] == 2
    kinds = {r["kind"]: r for r in info["derived"]}
    assert kinds["dups.signature/v1"]["entries"] == 2 and kinds["dups.signature/v1"]["bytes"] == 32
    assert [r["failures"] for r in info["derived"] if r["kind"].startswith("failed/")] == [True]
    assert info["files"] == 2 and info["bytes"] > 0
    rc, text, _ = run_cli(["cache", "--cache-dir", str(d)])
    assert rc == 0 and "imgenc@v1 (8 dimensions, with imagenet_probs)" in text
    assert "2 file records" in text


def test_forget_encoder_by_unique_prefix_takes_its_failures_too(tmp_path):
    d = _filled(tmp_path)
    rc, _, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", "imgenc", "--json"])
    assert rc == 0 and "forgot 5 vectors of imgenc@v1 (1 remembered failures with them)" in err
    with EmbeddingStore(d) as s:
        assert s.contains(["h0", "h1"], "imgenc@v1") == set()
        assert s.contains(["h0", "h9"], "mfcc@sr16000") == {"h0", "h9"}  # the other encoder kept
        assert s.failures(["h7"], failure_kind("imgenc@v1")) == {}
        assert set(s.get_derived(["h0", "h1"], "dups.signature/v1")) == {"h0", "h1"}


def test_forget_encoder_refuses_unknown_and_ambiguous_ids(tmp_path):
    d = _filled(tmp_path)
    with EmbeddingStore(d) as s:
        s.put(["h1"], "imgenc@v2", {"embedding": np.ones((1, 8))})
    rc, _, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", "imgenc"])
    assert rc == 2 and "matches 2 encoders (imgenc@v1, imgenc@v2)" in err
    rc, _, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", "cpil"])
    assert rc == 2 and "holds no vectors of such an encoder" in err and "mfcc@sr16000" in err
    # a family it holds nothing of: nothing to forget, said with what it holds (loose11: like rm -f)
    rc, _, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", "clip"])
    assert rc == 0 and "nothing to forget" in err and "mfcc@sr16000" in err
    with EmbeddingStore(d) as s:  # nothing was deleted by a refused request
        assert s.stats()["vectors"] == 8


def test_forget_missing_files_and_failures(tmp_path):
    d = _filled(tmp_path)
    rc, _, err = run_cli(["cache", "--cache-dir", str(d), "--forget-missing-files", "--forget-failures"])
    assert rc == 0
    assert "forgot the records of 1 files" in err and "forgot 1 remembered decode failures" in err
    with EmbeddingStore(d) as s:
        known, _, _ = s.known_hashes([str(tmp_path / "kept.bin")])
        assert known[0] == "f0"  # the file still there keeps its record
        assert s.summary()["files"] == 1


def test_no_cache_yet_is_said_not_made(tmp_path):
    d = tmp_path / "nothing"
    rc, out, _ = run_cli(["cache", "--cache-dir", str(d)])
    assert rc == 0 and "no embedding cache at" in out
    assert not d.exists()
    rc, _, err = run_cli(["cache", "--cache-dir", str(d), "--forget-failures"])
    assert rc == 2 and "nothing to forget" in err


def test_user_cache_lists_the_folders_beside_it(tmp_path, monkeypatch):
    root = tmp_path / "usercache"
    (root / "numba").mkdir(parents=True)
    (root / "numba" / "k.nbi").write_bytes(b"z" * 100)
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(root))
    with EmbeddingStore(None):
        pass
    rc, out, _ = run_cli(["cache", "--json"])
    info = json.loads(out)
    beside = {f["name"]: f for f in info["beside"]}
    assert set(beside) == {"numba"}  # the store's own files are not listed beside it
    assert beside["numba"]["bytes"] == 100 and beside["numba"]["files"] == 1
    assert "compiles it again" in beside["numba"]["holds"]
    assert os.path.exists(info["path"])


def test_input_says_what_a_run_on_it_would_hash_and_embed(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    paths = []
    for i in range(3):
        p = photos / f"p{i}.png"
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(p)
        paths.append(p)
    d = tmp_path / "cache"
    with EmbeddingStore(d) as s:
        s.record_hashes([(str(p), os.stat(p), f"c{i}") for i, p in enumerate(paths[:2])], time.time() + 10)
        s.put(["c0"], "imgenc@v1", {"embedding": np.ones((1, 4))})
    rc, out, _ = run_cli(["cache", str(photos), "--cache-dir", str(d), "--json"])
    assert rc == 0
    got = json.loads(out)["input"]
    assert got["media"] == "image" and got["files"] == 3 and got["known"] == 2
    assert got["to_hash"] == 1 and got["to_hash_bytes"] == paths[2].stat().st_size
    assert got["encoders"] == {"imgenc@v1": 1}
    rc, text, _ = run_cli(["cache", str(photos), "--cache-dir", str(d)])
    assert "3 image files; 2 known and unchanged, 1 to hash" in text


def test_something_in_the_way_of_the_cache_is_named_not_called_no_cache_yet(tmp_path):
    """`cache --cache-dir F` where F is a file, or where F/embeddings.sqlite is a folder: "no
    embedding cache at ... yet (the first command that embeds files makes it)", exit 0, while
    that first command fails ("unable to open database file")."""
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    rc, out, err = run_cli(["cache", "--cache-dir", str(blocked)])
    assert rc == 2 and "yet" not in out and f"{blocked} is a file, not the folder" in err, (out, err)
    (tmp_path / "c" / "embeddings.sqlite").mkdir(parents=True)
    rc, out, err = run_cli(["cache", "--cache-dir", str(tmp_path / "c")])
    assert rc == 2 and "yet" not in out and "embeddings.sqlite is a folder" in err, (out, err)


def test_input_that_is_a_vectors_file_with_paths_is_not_counted_as_files_to_hash(tmp_path):
    """`cache v.npz` of vectors that keep their items' paths: "300 vector files; 0 known and
    unchanged, 300 to hash (3.2 MB to read)", though no run hashes or embeds a vectors file's
    paths: it reads the vectors. A vectors file without paths was refused so already."""
    from PIL import Image

    paths = []
    for i in range(3):
        p = tmp_path / f"p{i}.png"
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(p)
        paths.append(str(p))
    np.savez(tmp_path / "v.npz", vectors=np.eye(3, 4, dtype=np.float32), paths=np.array(paths))
    with EmbeddingStore(tmp_path / "cache"):
        pass
    rc, out, err = run_cli(["cache", str(tmp_path / "v.npz"), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 2 and "holds precomputed vectors, not media files" in err, (out, err)


def test_a_folder_where_the_cache_file_goes_stops_a_run_as_it_stops_cache(tmp_path, caplog):
    """CACHE/embeddings.sqlite a folder (or CACHE a file): `mediacluster cache` refused it as
    something in the way, but a run (``open_store``: embedding, the duplicate finder, carrying a
    curation) called it a cache that "cannot be written" ("unable to open database file") and
    went on with a temporary cache and a warning, every run, never keeping a vector. Now both
    refuse it before any work, with the same words naming the path."""
    import tempfile

    import pytest

    from mediacluster.embed.store import open_store
    from mediacluster.errors import OutputError

    folder = tmp_path / "c"
    (folder / "embeddings.sqlite").mkdir(parents=True)
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    before = set(os.listdir(tempfile.gettempdir()))
    for where, says in ((folder, f"{folder / 'embeddings.sqlite'} is a folder, not the cache's file"),
                        (blocked, f"{blocked} is a file, not the folder of the cache")):
        with pytest.raises(OutputError) as got:
            open_store(where).close()
        assert says in str(got.value) and "another --cache-dir" in str(got.value), got.value
        rc, out, err = run_cli(["cache", "--cache-dir", str(where)])
        assert rc == 2 and f"error: {got.value}" in err, (err, got.value)
    assert "cannot" not in caplog.text and "without it" not in caplog.text, caplog.text
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("mediacluster-cache-")}


def test_stale_encoder_versions_are_marked_and_forget_stale_drops_only_them(tmp_path):
    """After mfcc's v3 the cache kept the v2 rows (no run reads them again) and
    `--forget-encoder mfcc` said "matches 2 encoders" without saying which one the package
    writes today. The listing marks each id current or stale (an id it cannot judge, a family
    not registered here, unmarked), the ambiguous forget names both marked and the way out,
    and --forget-stale deletes the stale version's vectors and nothing else."""
    from mediacluster.encoders import get_encoder

    now = get_encoder("mfcc").id
    old = now.rsplit("-", 2)[0] + "-v2"  # the v2 id of the same settings (no lifter then)
    d = tmp_path / "cache"
    rng = np.random.default_rng(0)
    with EmbeddingStore(d) as s:
        for enc, n in ((now, 3), (old, 2), ("imgenc@v1", 1)):
            s.put([f"{enc}{i}" for i in range(n)], enc, {"embedding": rng.normal(size=(n, 4))})
    rc, out, err = run_cli(["cache", "--cache-dir", str(d)])
    assert rc == 0, err
    line = {enc: next(x for x in out.splitlines() if x.rstrip().endswith(")") and f" {enc} (" in x)
            for enc in (now, old, "imgenc@v1")}
    assert "current" in line[now] and "stale" not in line[now], out
    assert "stale" in line[old] and "--forget-stale" in line[old], out
    assert "current" not in line["imgenc@v1"] and "stale" not in line["imgenc@v1"], out
    rc, out, _ = run_cli(["cache", "--cache-dir", str(d), "--json"])
    assert {r["encoder"]: r["current"] for r in json.loads(out)["encoders"]} == {now: True, old: False,
                                                                                  "imgenc@v1": None}
    rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", "mfcc"])
    assert rc == 2 and f"{now} (current)" in err and f"{old} (stale)" in err and "--forget-stale" in err, err
    rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-stale", "--json"])
    assert rc == 0 and f"forgot 2 vectors of {old} (stale)" in err, err
    assert {r["encoder"]: r["vectors"] for r in json.loads(out)["encoders"]} == {now: 3, "imgenc@v1": 1}
    rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-stale"])
    assert rc == 0 and "no stale encoder version" in err, err


def test_forgetting_an_encoder_already_forgotten_is_nothing_to_do_a_name_of_none_is_an_error(tmp_path):
    """`cache --forget-encoder mfcc` run again after one that completed (or one killed after its
    commit, then re-run) exited 2 "holds no vectors of such an encoder", as for a typo. Forgetting
    what is already gone is now nothing to do (exit 0, said), like `rm -f`, for a family's name,
    the start of one, or a whole id of a registered family; a name no encoder family has stays an
    error listing what the cache holds. --forget-stale with nothing stale is exit 0 as well."""
    from mediacluster.encoders import get_encoder

    now = get_encoder("mfcc").id
    d = tmp_path / "cache"
    rng = np.random.default_rng(0)
    with EmbeddingStore(d) as s:
        for enc, n in ((now, 3), ("imgenc@v1", 1)):
            s.put([f"{enc}{i}" for i in range(n)], enc, {"embedding": rng.normal(size=(n, 4))})
    rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", "mfcc"])
    assert rc == 0 and f"forgot 3 vectors of {now}" in err, err
    for given in ("mfcc", "mfc", now, "efficientnet-lite0@x"):
        rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", given, "--json"])
        assert rc == 0 and "nothing to forget" in err and given in err and "forgot " not in err, (given, err)
        assert [r["encoder"] for r in json.loads(out)["encoders"]] == ["imgenc@v1"]
    for typo in ("mfccc", "nosuch", "nosuch@v1"):
        rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", typo])
        assert rc == 2 and "holds no vectors of such an encoder" in err and "imgenc@v1" in err, (typo, err)
    # resolved before any is forgotten: a typo beside a real one forgets nothing
    rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-encoder", "imgenc", "--forget-encoder", "nosuch"])
    assert rc == 2
    rc, out, err = run_cli(["cache", "--cache-dir", str(d), "--forget-stale"])
    assert rc == 0 and "no stale encoder version" in err, err
    with EmbeddingStore(d) as s:
        assert [r["encoder"] for r in s.summary()["encoders"]] == ["imgenc@v1"]
