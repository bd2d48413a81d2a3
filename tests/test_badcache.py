"""Files whose own content cannot be used are remembered by the embedding cache: a re-run lists
them as skipped with the same reason without decoding them again (``EmbeddingStore.failures``)."""

from __future__ import annotations

import json

import pytest
from broken_media import jpeg_bytes, make_broken, photo

from mediacluster.cli import main
from mediacluster.duplicates.hashing import compute_signatures, signature_kind
from mediacluster.embed import EmbeddingStore, embed_collection
from mediacluster.embed import store as store_mod
from mediacluster.embed.engine import _embed_through
from mediacluster.encoders import get_encoder
from mediacluster.ingest import SkipItem, collect


@pytest.fixture
def folder(tmp_path):
    """Three photos and the five broken files of ``broken_media.make_broken``."""
    d = tmp_path / "photos"
    kinds = make_broken(d)
    for k in range(3):
        (d / f"good{k}.jpg").write_bytes(jpeg_bytes(photo((96, 64), seed=k)))
    return d, kinds


def reasons(emb) -> dict[str, str]:
    return {s.path.rsplit("/", 1)[-1]: s.reason for s in emb.skipped}


def test_a_broken_file_is_decoded_once_and_listed_the_same_on_every_run(folder, tmp_path, capsys):
    d, kinds = folder
    cache = tmp_path / "cache"
    first = embed_collection(collect(d), cache_dir=cache, progress=True)
    assert set(reasons(first)) == set(kinds)
    assert first.cache_stats["decoded"] == 8 and first.cache_stats["known_bad"] == 0
    assert all(s.lasting for s in first.skipped)
    capsys.readouterr()
    again = embed_collection(collect(d), cache_dir=cache, progress=True)
    err = capsys.readouterr().err
    # nothing reached the decoder: the good files come from the cache, the broken ones are known
    assert again.cache_stats["decoded"] == 0 and again.cache_stats["known_bad"] == 5
    assert "0 to embed, 5 known from an earlier run not to decode" in err
    assert reasons(again) == reasons(first)  # the same reasons, word for word
    assert again.skipped == first.skipped
    assert again.ids == first.ids and (again.vectors == first.vectors).all()


def test_a_fixed_or_edited_file_is_read_again(folder, tmp_path):
    d, _ = folder
    cache = tmp_path / "cache"
    embed_collection(collect(d), cache_dir=cache, progress=False)
    (d / "truncated.jpg").write_bytes(jpeg_bytes(photo((96, 64), seed=7)))  # the download finished
    (d / "empty.jpg").write_bytes(b"still not a picture")                    # another failure
    emb = embed_collection(collect(d), cache_dir=cache, progress=False)
    assert emb.cache_stats["decoded"] == 2 and emb.cache_stats["known_bad"] == 3
    assert "truncated.jpg" not in reasons(emb)
    assert any(p.endswith("truncated.jpg") for p in emb.paths)
    assert reasons(emb)["empty.jpg"].startswith("not an image")


def test_a_decoder_upgrade_or_another_encoder_tries_again(folder, tmp_path, monkeypatch):
    d, _ = folder
    cache = tmp_path / "cache"
    embed_collection(collect(d), cache_dir=cache, progress=False)
    monkeypatch.setattr(store_mod, "FAILURE_VERSION", store_mod.FAILURE_VERSION + 1)
    emb = embed_collection(collect(d), cache_dir=cache, progress=False)
    assert emb.cache_stats["decoded"] == 5 and emb.cache_stats["known_bad"] == 0
    assert store_mod.failure_kind("a") != store_mod.failure_kind("b")  # one kind per encoder
    with EmbeddingStore(cache) as store:  # the old version's entries: kept while used, then dropped
        failed = [k for k in store.derived_kinds() if k.startswith(store_mod.FAILED)]
        assert len(failed) == 2
        assert store.prune_derived(store_mod.stale_failure_kind) == {
            next(k for k in failed if k.startswith(f"{store_mod.FAILED}v{store_mod.FAILURE_VERSION - 1}/")): 5}
        assert [k for k in store.derived_kinds() if k.startswith(store_mod.FAILED)] == [
            store_mod.failure_kind(get_encoder("efficientnet-lite0").id)]


class _MachineFaults:
    """The real encoder, on a machine that runs out of memory decoding one file and hits a
    loader bug on another (faults of the machine or the code, not of the files' content)."""

    def __init__(self, enc, faults: dict[str, BaseException]):
        self._enc, self._faults = enc, faults

    def __getattr__(self, name):
        return getattr(self._enc, name)

    def prepare(self, path):
        for name, exc in self._faults.items():
            if path.endswith(name):
                raise exc
        return self._enc.prepare(path)


def test_failures_not_of_the_file_are_not_remembered(folder, tmp_path):
    d, _ = folder
    enc = get_encoder("efficientnet-lite0")
    faults = {"good0.jpg": MemoryError(), "good1.jpg": KeyError("a loader bug"),
              "good2.jpg": SkipItem("image too large: out of memory while decoding", "image_too_large",
                                    lasting=False)}
    with EmbeddingStore(tmp_path / "cache") as store:
        first = _embed_through(store, collect(d), _MachineFaults(enc, faults), 16, None, False)
        assert {"good0.jpg", "good1.jpg", "good2.jpg"} <= set(reasons(first))
        assert store.failures([store.hash_files([str(d / n)])[0][0] for n in faults],
                              store_mod.failure_kind(enc.id)) == {}
        again = _embed_through(store, collect(d), enc, 16, None, False)
    assert again.cache_stats["decoded"] == 3 and again.cache_stats["known_bad"] == 5
    assert set(reasons(again)) == set(reasons(first)) - set(faults)


def test_the_signature_pass_remembers_too_and_keeps_broken_files_as_bytes(folder, tmp_path):
    d, kinds = folder
    paths = sorted(str(p) for p in d.iterdir())
    with EmbeddingStore(tmp_path / "cache") as store:
        first = compute_signatures(paths, store=store)
        again = compute_signatures(paths, store=store)
        assert first.decoded == 8 and again.decoded == 0
        assert again.skipped == first.skipped and len(first.skipped) == len(kinds)
        assert again.content == first.content and None not in again.content  # exact copies still found
        assert again.ok.tolist() == first.ok.tolist()
        assert store.forget_failures() == 5
        assert compute_signatures(paths, store=store).decoded == 5
        assert signature_kind() in store.derived_kinds()  # the signatures are not forgotten


def test_cli_retry_bad_decodes_them_again_with_the_same_list(folder, tmp_path, capsys):
    d, kinds = folder
    cache = str(tmp_path / "cache")

    def dups(out, *more):
        assert main(["dups", str(d), "--out", str(tmp_path / out), "--no-embed", "--cache-dir", cache,
                     "--quiet", *more]) == 3
        return json.loads((tmp_path / out / "dups.json").read_text())["skipped_files"]

    first = dups("a")
    assert len(first) == len(kinds)
    capsys.readouterr()
    assert dups("b") == first
    assert dups("c", "--retry-bad") == first
    assert "--retry-bad: 5 remembered failures of this command's files forgotten" in capsys.readouterr().err
    with EmbeddingStore(cache) as store:  # and remembered again by the run that retried them
        assert sum(1 for k in store.derived_kinds() if k.startswith(store_mod.FAILED)) == 1


def other_broken(d):
    """Four broken files unlike ``make_broken``'s bytes (another collection's): their content
    hashes differ from those of ``folder``'s."""
    d.mkdir(parents=True, exist_ok=True)
    for k in range(2):
        whole = jpeg_bytes(photo((120, 80), seed=90 + k))
        (d / f"cut{k}.jpg").write_bytes(whole[: len(whole) // 3])
    (d / "page.jpg").write_text("<html><body>a download that went wrong</body></html>\n")
    (d / "short.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (d / "fine.jpg").write_bytes(jpeg_bytes(photo((96, 64), seed=77)))
    return d


def remembered(cache, folder) -> int:
    """How many of ``folder``'s files the cache remembers as failing, of any kind."""
    with EmbeddingStore(cache) as store:
        hashes = [h for h in store.hash_files(sorted(str(p) for p in folder.iterdir()))[0] if h]
        return sum(len(store.failures(hashes, k)) for k in store.derived_kinds() if k.startswith(store_mod.FAILED))


def test_retry_bad_forgets_only_the_failures_of_its_own_files(folder, tmp_path, capsys):
    """Two folders with broken files share a cache (~/.cache/mediacluster is every folder's):
    ``--retry-bad`` on one decodes its files again and leaves the other's remembered, on the
    duplicate finder's pass and on the embedding path."""
    a, kinds = folder
    b = other_broken(tmp_path / "other")
    cache = str(tmp_path / "cache")

    def dups(d, out, *more):
        assert main(["dups", str(d), "--out", str(tmp_path / out), "--no-embed", "--cache-dir", cache,
                     "--quiet", *more]) == 3
        return json.loads((tmp_path / out / "dups.json").read_text())["skipped_files"]

    first_a, first_b = dups(a, "a1"), dups(b, "b1")
    assert len(first_a) == len(kinds) and len(first_b) == 4
    assert remembered(cache, a) == 5 and remembered(cache, b) == 4
    capsys.readouterr()
    assert dups(a, "a2", "--retry-bad") == first_a
    assert "--retry-bad: 5 remembered failures of this command's files forgotten" in capsys.readouterr().err
    assert remembered(cache, b) == 4  # the other folder's: kept
    assert remembered(cache, a) == 5  # this one's: remembered again by the run that retried them
    with EmbeddingStore(cache) as store:
        sig = compute_signatures(sorted(str(p) for p in b.iterdir()), store=store)
    assert sig.decoded == 0  # b's broken files still known without decoding them

    # the embedding path (cluster, assign, tune, tags): the same rule
    embed_collection(collect(a), cache_dir=cache, progress=False)
    embed_collection(collect(b), cache_dir=cache, progress=False)
    with store_mod.retrying_failures() as retry:
        again = embed_collection(collect(a), cache_dir=cache, progress=False)
        once_more = embed_collection(collect(a), cache_dir=cache, progress=False)
    assert retry.forgotten == 5 and again.cache_stats["decoded"] == 5 and again.cache_stats["known_bad"] == 0
    assert once_more.cache_stats["known_bad"] == 5  # retried once per block, then remembered again
    other = embed_collection(collect(b), cache_dir=cache, progress=False)
    assert other.cache_stats["decoded"] == 0 and other.cache_stats["known_bad"] == 4


def test_audio_failures_are_remembered_too(tmp_path):
    import numpy as np
    import soundfile as sf

    d = tmp_path / "clips"
    d.mkdir()
    t = np.arange(16000) / 16000
    for k in range(3):
        sf.write(d / f"tone{k}.wav", (0.3 * np.sin(2 * np.pi * (220 + 110 * k) * t)).astype(np.float32), 16000)
    sf.write(d / "silent.wav", np.zeros(16000, np.float32), 16000)
    (d / "empty.wav").write_bytes(b"")
    (d / "junk.wav").write_bytes(b"RIFF....not audio at all")
    whole = (d / "tone0.wav").read_bytes()
    (d / "cut.wav").write_bytes(whole[: len(whole) // 2])
    first = embed_collection(collect(d), cache_dir=tmp_path / "cache", progress=False)
    again = embed_collection(collect(d), cache_dir=tmp_path / "cache", progress=False)
    assert len(first.skipped) == 4 and first.cache_stats["decoded"] == 7
    assert again.cache_stats["decoded"] == 0 and again.cache_stats["known_bad"] == 4
    assert again.skipped == first.skipped


CHILD = r"""
import sys, time
from mediacluster.embed import embed_collection_cached
from mediacluster.encoders import get_encoder
from mediacluster.ingest import collect

folder, cache, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
enc = get_encoder("efficientnet-lite0")
real_encode = enc.encode

def encode(batch):  # the real encoder, slowed so that the run can be killed part-way
    out = real_encode(batch)
    time.sleep(pause)
    return out

enc.encode = encode
embed_collection_cached(collect(folder), enc, cache_dir=cache, batch_size=4, progress=False)
print("done")
"""


def _count(db, sql: str) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet
        return 0


def test_a_killed_run_keeps_the_failures_of_its_finished_batches(tmp_path):
    """Failures are remembered batch by batch, as the vectors are: a run killed (kill -9) after
    its first batches does not leave its broken files to be decoded again."""
    import signal
    import subprocess
    import sys
    import time

    d, cache = tmp_path / "photos", tmp_path / "cache"
    d.mkdir()
    for k in range(6):  # sorted first: the first batches hold them
        whole = jpeg_bytes(photo((96, 64), seed=50 + k))
        (d / f"a_cut{k}.jpg").write_bytes(whole[: len(whole) // 2])
    for k in range(32):
        (d / f"b_good{k:02d}.jpg").write_bytes(jpeg_bytes(photo((96, 64), seed=k)))
    db = cache / "embeddings.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(d), str(cache), "0.5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, failed, vectors = time.monotonic() + 120, 0, 0
    while time.monotonic() < deadline and child.poll() is None:
        failed = _count(db, f"SELECT COUNT(*) FROM derived WHERE kind LIKE '{store_mod.FAILED}%'")
        if failed >= 6:
            break
        time.sleep(0.02)
    assert child.poll() is None, f"the run ended before its failures were remembered: {child.communicate()[1][-1500:]}"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    vectors = _count(db, "SELECT COUNT(*) FROM vectors")
    assert failed == 6 and vectors < 32  # killed with good files still to embed

    enc = get_encoder("efficientnet-lite0")
    seen: list[str] = []

    class Counting(_MachineFaults):
        def prepare(self, path):
            seen.append(path)
            return super().prepare(path)

    with EmbeddingStore(cache) as store:
        again = _embed_through(store, collect(d), Counting(enc, {}), 4, None, False)
    assert again.cache_stats["known_bad"] == 6 and again.cache_stats["decoded"] == 32 - vectors
    assert not [p for p in seen if "a_cut" in p]  # none of the broken files was decoded again
    assert sorted(reasons(again)) == [f"a_cut{k}.jpg" for k in range(6)]
    assert all(s.lasting for s in again.skipped) and len(again) == 32


SIG_CHILD = r"""
import sys, time
from mediacluster.duplicates import hashing
from mediacluster.embed import EmbeddingStore

folder, cache, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
hashing.SAVE_EVERY = 8  # small batches: the test's folder is small

def slow(i, im, draft):  # each decoded photo takes a while, so that the pass can be killed part-way
    time.sleep(pause)

import os
paths = sorted(os.path.join(folder, n) for n in os.listdir(folder))
with EmbeddingStore(cache) as store:
    hashing.compute_signatures(paths, store=store, workers=1, on_decoded=slow)
print("done")
"""


@pytest.mark.slow
def test_a_killed_signature_pass_keeps_what_its_finished_batches_learned(tmp_path):
    """The duplicate finder's signature pass keeps signatures and failures batch by batch
    (``hashing.SAVE_EVERY``), as the embedding path does: a pass killed (kill -9) part-way does
    not decode again the files of its finished batches, broken or not."""
    import signal
    import subprocess
    import sys
    import time

    d, cache = tmp_path / "photos", tmp_path / "cache"
    d.mkdir()
    for k in range(6):  # sorted first: the first batch holds them
        whole = jpeg_bytes(photo((96, 64), seed=50 + k))
        (d / f"a_cut{k}.jpg").write_bytes(whole[: len(whole) // 2])
    for k in range(34):
        (d / f"b_good{k:02d}.jpg").write_bytes(jpeg_bytes(photo((96, 64), seed=k)))
    db = cache / "embeddings.sqlite"
    child = subprocess.Popen([sys.executable, "-c", SIG_CHILD, str(d), str(cache), "0.1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, failed = time.monotonic() + 120, 0
    while time.monotonic() < deadline and child.poll() is None:
        failed = _count(db, f"SELECT COUNT(*) FROM derived WHERE kind LIKE '{store_mod.FAILED}%'")
        if failed >= 6:
            break
        time.sleep(0.02)
    assert child.poll() is None, f"the pass ended before its failures were kept: {child.communicate()[1][-1500:]}"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    kept = _count(db, f"SELECT COUNT(*) FROM derived WHERE kind = '{signature_kind()}'")
    assert failed == 6 and 2 <= kept < 34  # the first batch's photos kept, others still to do

    paths = sorted(str(p) for p in d.iterdir())
    with EmbeddingStore(cache) as store:
        again = compute_signatures(paths, store=store)
    assert again.decoded == 34 - kept  # neither the broken files nor the kept photos decoded again
    assert len(again.skipped) == 6 and int(again.ok.sum()) == 34
