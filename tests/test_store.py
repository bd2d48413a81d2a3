"""The embedding cache: keyed by content, re-runs embed nothing new, safe under concurrency."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mediacluster.fileio as fileio_mod
from mediacluster.data import Collection
from mediacluster.embed import embed_collection_cached
from mediacluster.embed.store import EmbeddingStore, failure_kind
from mediacluster.encoders import get_encoder
from mediacluster.fileio import hash_file
from mediacluster.ingest import collect


@pytest.fixture(scope="module")
def encoder():
    return get_encoder("efficientnet-lite0")


@pytest.fixture
def folder(cifar3_dir, tmp_path) -> Path:
    """40 CIFAR images (frog + truck), copied so the test may move and add files."""
    root = tmp_path / "photos"
    for cls in ("frog", "truck"):
        (root / cls).mkdir(parents=True)
        for p in sorted((Path(cifar3_dir) / cls).glob("*.jpg"))[:20]:
            shutil.copy(p, root / cls / p.name)
    return root


def test_hash_is_blake2b_of_content(tmp_path):
    p = tmp_path / "a.bin"
    data = os.urandom(300_000)  # several read chunks
    p.write_bytes(data)
    assert hash_file(p) == hashlib.blake2b(data, digest_size=16).hexdigest()


def test_put_get_roundtrip_with_extras(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 8)).astype(np.float32)
    probs = rng.dirichlet(np.ones(10), size=5).astype(np.float32)
    other = rng.normal(size=(5, 3)).astype(np.float32)
    with EmbeddingStore(tmp_path) as st:
        st.put(list("abcde"), "enc@1", {"embedding": v, "imagenet_probs": probs, "other": other})
        got, extras = st.get(["c", "a", "c"], "enc@1")
        np.testing.assert_array_equal(got, v[[2, 0, 2]])  # float32 exactly
        np.testing.assert_allclose(extras["imagenet_probs"], probs[[2, 0, 2]], atol=1e-3)  # float16
        np.testing.assert_array_equal(extras["other"], other[[2, 0, 2]])
        assert st.missing(["a", "x", "b", "x"], "enc@1") == ["x"]
        assert st.missing(["a"], "enc@2") == ["a"]  # another encoder id is another key
        with pytest.raises(KeyError):
            st.get(["a", "zz"], "enc@1")
        with pytest.raises(ValueError):
            st.put(["a"], "enc@1", {"embedding": v})
        assert st.stats("enc@1")["vectors"] == 5 and st.integrity_check() == "ok"
    with EmbeddingStore(tmp_path / "embeddings.sqlite") as st:  # reopened by file path
        assert st.stats()["vectors"] == 5


def test_rerun_embeds_nothing_added_files_only_renames_free(folder, tmp_path, encoder, cifar3_dir, caplog):
    cache = tmp_path / "cache"
    coll = collect(folder, labels_from_folders=True)
    with caplog.at_level("INFO", logger="mediacluster.embed.engine"):
        first = embed_collection_cached(coll, encoder, cache_dir=cache, progress=False)
    assert first.cache_stats["encoded"] == 40 and first.vectors.shape == (40, 1280)
    # the line every embedding command shows is a sentence, not a Python dict
    assert "embedding: 40 items (40 distinct): 0 from the cache, 40 encoded, 0 skipped" in caplog.messages
    assert first.extras["imagenet_probs"].shape == (40, 1000)
    assert first.labels[:20] == ["frog"] * 20

    again = embed_collection_cached(collect(folder, labels_from_folders=True), encoder, cache_dir=cache,
                                    progress=False)
    assert again.cache_stats["encoded"] == 0 and again.cache_stats["cached"] == 40
    np.testing.assert_array_equal(again.vectors, first.vectors)
    np.testing.assert_array_equal(again.extras["imagenet_probs"], first.extras["imagenet_probs"])

    # 10 new files (airplanes) -> exactly 10 embedded
    (folder / "airplane").mkdir()
    new = sorted((Path(cifar3_dir) / "airplane").glob("*.jpg"))[:10]
    for p in new:
        shutil.copy(p, folder / "airplane" / p.name)
    more = embed_collection_cached(collect(folder), encoder, cache_dir=cache, progress=False)
    assert more.cache_stats["encoded"] == 10 and len(more) == 50

    # renamed and moved files with the same bytes are not embedded again
    moved = folder / "elsewhere" / "deeper"
    moved.mkdir(parents=True)
    for p in sorted((folder / "truck").glob("*.jpg"))[:5]:
        p.rename(moved / ("renamed_" + p.name))
    coll = collect(folder)
    after = embed_collection_cached(coll, encoder, cache_dir=cache, progress=False)
    assert after.cache_stats["encoded"] == 0 and len(after) == 50
    by_path = dict(zip(more.paths, more.vectors))
    for p, v in zip(after.paths, after.vectors):
        if "renamed_" in p:
            orig = str(folder / "truck" / Path(p).name[len("renamed_"):])
            np.testing.assert_array_equal(v, by_path[orig])

    # an edited file is a new key
    victim = Path(after.paths[0])
    with open(victim, "ab") as f:
        f.write(b"\0")  # trailing bytes after the JPEG end: same picture, new content hash
    edited = embed_collection_cached(collect(folder), encoder, cache_dir=cache, progress=False)
    assert edited.cache_stats["encoded"] == 1
    with EmbeddingStore(cache) as st:
        assert set(st.writes(encoder.id).values()) == {1}  # nothing was ever embedded twice
        assert st.integrity_check() == "ok"


def test_duplicates_embedded_once_and_bad_files_listed(folder, tmp_path, encoder):
    a = sorted((folder / "frog").glob("*.jpg"))[0]
    shutil.copy(a, folder / "frog" / "copy.jpg")
    (folder / "frog" / "empty.jpg").write_bytes(b"")
    (folder / "frog" / "text.jpg").write_text("hello")
    gone = folder / "frog" / "gone.jpg"
    shutil.copy(a, gone)
    coll = collect(folder)
    gone.unlink()  # vanished between listing and embedding
    emb = embed_collection_cached(coll, encoder, cache_dir=tmp_path / "c", progress=False)
    assert emb.cache_stats["encoded"] == 40  # the copy shares the original's vector
    assert len(emb) == 41
    np.testing.assert_array_equal(emb.vectors[emb.paths.index(str(a))],
                                  emb.vectors[emb.paths.index(str(folder / "frog" / "copy.jpg"))])
    reasons = {Path(s.path).name: s.reason for s in emb.skipped}
    assert set(reasons) == {"empty.jpg", "text.jpg", "gone.jpg"}
    assert reasons["empty.jpg"].startswith("empty file")
    assert reasons["text.jpg"].startswith("not an image")
    assert reasons["gone.jpg"].startswith("cannot read file")


def test_fast_path_skips_reading_unchanged_files(folder, tmp_path, monkeypatch):
    paths = [str(p) for p in sorted(folder.rglob("*.jpg"))]
    past = time.time() - 3600
    for p in paths:
        os.utime(p, (past, past))
    time.sleep(2.1)  # ctime (set by utime) must be older than the 2 s "racily clean" window
    reads = []
    real = fileio_mod.hash_file  # the store reads files through fileio.hash_files
    monkeypatch.setattr(fileio_mod, "hash_file", lambda p: reads.append(p) or real(p))
    with EmbeddingStore(tmp_path) as st:
        h1, err = st.hash_files(paths)
        assert not err and len(reads) == 40
        h2, _ = st.hash_files(paths)
        assert h2 == h1 and len(reads) == 40  # nothing read again
        # rewrite one file with other bytes of the same size and restore its mtime: ctime changes
        p = Path(paths[3])
        data = bytearray(p.read_bytes())
        data[-3] ^= 0xFF
        p.write_bytes(bytes(data))
        os.utime(p, (past, past))
        h3, _ = st.hash_files(paths)
        assert len(reads) == 41 and h3[3] != h1[3] and h3[:3] == h1[:3]
        h4, _ = st.hash_files(paths, verify=True)
        assert h4 == h3 and len(reads) == 81


def test_a_file_younger_than_two_seconds_is_not_recorded_and_a_stat_that_failed_is_a_change(tmp_path):
    """git's "racily clean" rule: a hash is recorded against a file's (size, mtime, ctime, inode)
    only when those timestamps were at least 2 s old when the bytes were hashed (a write within
    the same timestamp tick would otherwise keep the old hash); ``changed_since`` takes a file
    whose stat failed before hashing (None) as changed, and a rewrite of the same size as one."""
    from mediacluster.embed.store import changed_since, stale_failure_kind

    p = tmp_path / "a.bin"
    p.write_bytes(b"x" * 100)
    st0 = os.stat(p)
    with EmbeddingStore(tmp_path / "cache") as st:
        st.record_hashes([(str(p), st0, "young")], hashed_after=time.time())  # written just now
        assert st.known_hashes([str(p)])[0] == [None]
        st.record_hashes([(str(p), st0, "settled")], hashed_after=max(st0.st_mtime, st0.st_ctime) + 2.5)
        assert st.known_hashes([str(p)])[0] == ["settled"]
    assert changed_since(str(p), None) and not changed_since(str(p), st0)
    p.write_bytes(b"y" * 100)
    assert changed_since(str(p), st0)
    # remembered failures: the current decoder's are read, another version's are the stale ones
    assert not stale_failure_kind(failure_kind("enc@1")) and not stale_failure_kind("dups.signature/v1")
    assert stale_failure_kind("failed/v0/pillow-0.0/enc@1")


_WRITER = r"""
import sys, numpy as np
from mediacluster.embed.store import EmbeddingStore, failure_kind
path, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
with EmbeddingStore(path) as st:
    for b in range(60):
        keys = [f"k{(b * 7 + i) % 300}" for i in range(8)]  # overlaps the other writer's keys
        st.put(keys, "enc@1", {"embedding": rng.normal(size=(8, 64)).astype(np.float32),
                               "imagenet_probs": rng.random((8, 100)).astype(np.float32)})
        if b % 10 == 0:
            st.get(keys, "enc@1")
print("ok")
"""


def test_two_processes_on_one_store(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(s)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    with EmbeddingStore(tmp_path) as st:
        assert st.integrity_check() == "ok"
        s = st.stats("enc@1")
        assert s["vectors"] == 300  # every key once, whatever the interleaving
        assert s["rewrites"] == 2 * 60 * 8 - 300
        v, ex = st.get([f"k{i}" for i in range(300)], "enc@1")
        assert v.shape == (300, 64) and ex["imagenet_probs"].shape == (300, 100)


def test_empty_collection(tmp_path, encoder):
    emb = embed_collection_cached(Collection(ids=[], paths=[]), encoder, cache_dir=tmp_path, progress=False)
    assert len(emb) == 0 and emb.vectors.shape == (0, 1280)


@pytest.mark.parametrize("into", ["another photo", "a truncated file"])
def test_a_file_replaced_while_embedded_leaves_nothing_under_its_old_content(into, folder, tmp_path, encoder,
                                                                             monkeypatch):
    """Before: the vector of the new bytes (or their failure, "truncated image") was stored under
    the hash of the bytes read before, for good: every later file with the old bytes got the
    other photo's vector, or was skipped as truncated without being read."""
    a, b = sorted((folder / "frog").glob("*.jpg"))[:2]
    old = a.read_bytes()
    new = b.read_bytes() + b"\0" if into == "another photo" else old[: len(old) // 2]
    real = encoder.prepare

    def prepare(path):  # the file is rewritten after it was hashed, before it is decoded
        if path == str(a) and a.read_bytes() == old:
            a.write_bytes(new)
        return real(path)

    monkeypatch.setattr(encoder, "prepare", prepare)
    cache = tmp_path / "c"
    emb = embed_collection_cached(collect(folder), encoder, cache_dir=cache, progress=False)
    monkeypatch.setattr(encoder, "prepare", real)
    assert [(s.path, s.reason, s.lasting) for s in emb.skipped] == [
        (str(a), "file changed while it was read (the next run reads it as it is then)", False)]
    assert len(emb) == 39 and emb.cache_stats["encoded"] == 39
    with EmbeddingStore(cache) as st:
        old_hash = hashlib.blake2b(old, digest_size=16).hexdigest()
        assert st.missing([old_hash], encoder.id) == [old_hash]
        assert st.failures([old_hash], failure_kind(encoder.id)) == {}
    a.write_bytes(old)  # the old bytes, anywhere: embedded as what they are
    again = embed_collection_cached(collect(folder), encoder, cache_dir=cache, progress=False)
    assert not again.skipped and again.cache_stats["encoded"] == 1
    fresh = encoder.encode([encoder.prepare(str(a))])["embedding"][0]
    np.testing.assert_allclose(again.vectors[again.paths.index(str(a))], fresh, atol=1e-5)
