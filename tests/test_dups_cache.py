"""The duplicate finder's per-file signatures and pair verdicts kept in the embedding cache."""

from __future__ import annotations

import shutil
import sqlite3
import time
import warnings

import numpy as np
import pytest

from mediacluster.duplicates import DuplicateFinder, hashing
from mediacluster.duplicates.hashing import compute_signatures, signature_kind
from mediacluster.duplicates.reposts import make_repost
from mediacluster.embed import EmbeddingStore
from mediacluster.fileio import hash_file


@pytest.fixture
def photos(imagenette_dir, tmp_path):
    """6 photos copied to a folder of their own (the tests delete and rewrite them)."""
    d = tmp_path / "photos"
    d.mkdir()
    out = []
    for k, src in enumerate(sorted((imagenette_dir / "n03028079").iterdir())[:6]):
        out.append(str(shutil.copyfile(src, d / f"p{k}.jpeg")))
    return out


def same(a, b) -> None:
    assert a.ok.tolist() == b.ok.tolist()
    for name in ("hashes", "mirror", "thumbs", "sizes"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_cached_signatures_are_read_back_without_the_files(photos, tmp_path):
    fresh = compute_signatures(photos)
    content = [hash_file(p) for p in photos]
    with EmbeddingStore(tmp_path / "cache") as store:
        first = compute_signatures(photos, store=store, content_hashes=content)
        same(first, fresh)
        for p in photos:  # gone: only the cache can answer now
            shutil.move(p, p + ".away")
        again = compute_signatures(photos, store=store, content_hashes=content)
    same(again, fresh)
    assert again.content == content and not again.skipped


def test_a_changed_file_or_a_new_signature_version_is_computed_again(photos, tmp_path, monkeypatch):
    with EmbeddingStore(tmp_path / "cache") as store:
        before = compute_signatures(photos, store=store)  # the store hashes the files itself
        shutil.copyfile(photos[5], photos[0])  # p0 now holds p5's picture
        after = compute_signatures(photos, store=store)
        assert after.content[0] == after.content[5] != before.content[0]
        assert np.array_equal(after.hashes[0], before.hashes[5])
        assert np.array_equal(after.thumbs[0], before.thumbs[5])
        content = list(after.content)
        old = signature_kind()
        monkeypatch.setattr(hashing, "SIGNATURE_VERSION", hashing.SIGNATURE_VERSION + 1)
        assert signature_kind() != old
        shutil.move(photos[1], photos[1] + ".away")
        bumped = compute_signatures(photos, store=store, content_hashes=content)
    assert not bumped.ok[1] and 1 in bumped.skipped  # the old entry is not read: the file is gone
    assert bumped.ok[[0, 2, 3, 4, 5]].all()


def test_a_damaged_cache_entry_is_ignored_with_a_warning_and_replaced(photos, tmp_path):
    fresh = compute_signatures(photos)
    content = [hash_file(p) for p in photos]
    with EmbeddingStore(tmp_path / "cache") as store:
        compute_signatures(photos, store=store, content_hashes=content)
        store.put_derived([(content[2], b"not a signature")], signature_kind())
        with pytest.warns(RuntimeWarning, match=r"1 damaged entry ignored.*" + content[2]):
            got = compute_signatures(photos, store=store, content_hashes=content)
        same(got, fresh)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # rewritten: no warning the next time
            same(compute_signatures(photos, store=store, content_hashes=content), fresh)


def test_pair_verdicts_are_kept_and_give_the_same_groups(photos, tmp_path):
    rng = np.random.default_rng(0)
    crop, _ = make_repost(photos[0], tmp_path / "crop", "crop", rng)  # found by the geometric check only
    paths = [*photos, crop]
    X = rng.normal(size=(len(paths), 32)).astype(np.float32)
    X[-1] = X[0] + 0.4 * rng.normal(size=32)  # cosine ~0.9: a candidate, not enough alone
    X[1] = X[2] + 0.4 * rng.normal(size=32)   # a candidate pair of distinct photos
    plain = DuplicateFinder().fit(paths, X)
    assert plain.labels_[0] == plain.labels_[-1] >= 0 and plain.labels_[1] == plain.labels_[2] == -1
    assert plain.n_verified_ >= 2 and plain.n_verdicts_cached_ == 0
    content = [hash_file(p) for p in paths]  # as the embedding cache gives them
    with EmbeddingStore(tmp_path / "cache") as store:
        first = DuplicateFinder().fit(paths, X, store=store)  # the store hashes the files
        assert first.n_verdicts_cached_ == 0 and first.content_hashes_ == content
        for p in paths:  # gone: only the cache can answer now
            shutil.move(p, p + ".away")
        again = DuplicateFinder().fit(paths, X, store=store, content_hashes=content)
    assert again.n_verified_ == plain.n_verified_ == again.n_verdicts_cached_
    assert again.labels_.tolist() == plain.labels_.tolist()
    assert again.link_kind_.tolist() == plain.link_kind_.tolist()
    assert not again.skipped_


def test_verdicts_of_other_settings_are_not_reused(photos, tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(len(photos), 32)).astype(np.float32)
    X[1] = X[2] + 0.3 * rng.normal(size=32)
    with EmbeddingStore(tmp_path / "cache") as store:
        a = DuplicateFinder().fit(photos, X, store=store)
        b = DuplicateFinder(min_inliers=10).fit(photos, X, store=store)
        c = DuplicateFinder().fit(photos, X, store=store)
    assert a.n_verified_ >= 1 and b.n_verdicts_cached_ == 0 and c.n_verdicts_cached_ == a.n_verified_


def test_two_runs_filling_one_cache_at_once(photos, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    fresh = compute_signatures(photos)
    content = [hash_file(p) for p in photos]

    def run(_):
        with EmbeddingStore(tmp_path / "cache") as store:  # a connection each, as two processes
            return compute_signatures(photos, store=store, content_hashes=content, workers=1)

    with ThreadPoolExecutor(2) as pool:
        for got in pool.map(run, range(2)):
            same(got, fresh)
    for p in photos:
        shutil.move(p, p + ".away")
    same(run(0), fresh)


def test_dups_keeps_signatures_and_verdicts_in_its_cache_dir(photos, tmp_path):
    from mediacluster.cli import main

    root = tmp_path / "photos"
    make_repost(photos[0], root / "crop", "crop", np.random.default_rng(0))
    cache = tmp_path / "cache"
    for out in ("first", "again"):
        assert main(["dups", str(root), "--out", str(tmp_path / out), "--cache-dir", str(cache), "--quiet"]) == 0
    first, again = ((tmp_path / out / "dups.csv").read_bytes() for out in ("first", "again"))
    assert first == again
    content = [hash_file(p) for p in sorted(root.iterdir())]
    with EmbeddingStore(cache) as store:
        assert set(store.get_derived(content, signature_kind())) == set(content)
        con = sqlite3.connect(store.path)
        kinds = dict(con.execute("SELECT kind, COUNT(*) FROM derived GROUP BY kind").fetchall())
        con.close()
    assert any(k.startswith("dups.geometric/") and n >= 1 for k, n in kinds.items()), kinds


def test_dups_no_embed_uses_the_cache_and_runs_without_one_it_cannot_open(photos, tmp_path):
    from mediacluster.cli import main

    root = tmp_path / "photos"
    cache = tmp_path / "cache"
    assert main(["dups", str(root), "--out", str(tmp_path / "a"), "--no-embed", "--cache-dir", str(cache),
                 "--quiet"]) == 0
    content = [hash_file(p) for p in photos]
    with EmbeddingStore(cache) as store:
        assert set(store.get_derived(content, signature_kind())) == set(content)
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="without the cache"):
        assert main(["dups", str(root), "--out", str(tmp_path / "b"), "--no-embed", "--cache-dir",
                     str(blocked), "--quiet"]) == 0
    assert (tmp_path / "a" / "dups.csv").read_bytes() == (tmp_path / "b" / "dups.csv").read_bytes()


@pytest.mark.parametrize("param", ["hash_radius=99", "bogus=1"])
def test_dups_refuses_a_bad_finder_parameter_before_reading_any_file(param, photos, tmp_path, capsys):
    # before: refused only after every file was embedded (a typo cost the whole embedding),
    # where cluster --dedup refuses it at once
    from mediacluster.cli import main

    cache = tmp_path / "cache"
    assert main(["dups", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--cache-dir", str(cache),
                 "--param", param, "--quiet"]) == 2
    assert param.split("=")[0] in capsys.readouterr().err
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_dups_takes_workers_as_a_finder_parameter_too(photos, tmp_path):
    # before: DuplicateFinder() got multiple values for keyword argument 'workers' (an internal error)
    from mediacluster.cli import main

    assert main(["dups", str(tmp_path / "photos"), "--out", str(tmp_path / "out"), "--no-embed", "--cache-dir",
                 str(tmp_path / "cache"), "--param", "workers=1", "--quiet"]) == 0


def _crop_case(photos, tmp_path):
    """The photos, a crop of the first (a geometric duplicate), and vectors making it a candidate."""
    rng = np.random.default_rng(0)
    crop, _ = make_repost(photos[0], tmp_path / "crop", "crop", rng)
    paths = [*photos, crop]
    X = rng.normal(size=(len(paths), 32)).astype(np.float32)
    X[-1] = X[0] + 0.4 * rng.normal(size=32)
    X[1] = X[2] + 0.4 * rng.normal(size=32)
    return paths, X


def test_a_first_run_decodes_each_file_once_and_finds_the_same_groups(photos, tmp_path, monkeypatch):
    from collections import Counter

    from mediacluster import ingest

    paths, X = _crop_case(photos, tmp_path)
    # signatures given: the geometric check decodes the files of its pairs itself, as it always did
    reference = DuplicateFinder().fit(paths, X, signatures=compute_signatures(paths))
    decoded = Counter()
    real = ingest.load_image

    def counted(path, *a, **k):
        decoded[str(path)] += 1
        return real(path, *a, **k)

    monkeypatch.setattr(ingest, "load_image", counted)
    got = DuplicateFinder().fit(paths, X)
    assert got.n_verified_ == reference.n_verified_ >= 2
    assert dict(decoded) == {p: 1 for p in paths}  # the signature pass fed the check
    assert got.labels_.tolist() == reference.labels_.tolist() and got.labels_[0] == got.labels_[-1] >= 0
    assert got.link_kind_.tolist() == reference.link_kind_.tolist()
    assert np.array_equal(got.links_, reference.links_)


def test_the_verifier_keeps_an_offered_image_only_as_it_would_decode_it_and_within_its_cache(photos, tmp_path):
    from mediacluster.duplicates.verify import GeometricVerifier
    from mediacluster.ingest import load_image

    paths, _ = _crop_case(photos, tmp_path)
    a, crop = paths[0], paths[-1]
    fresh, fed = GeometricVerifier(), GeometricVerifier(cache_size=1)
    assert not fed.offer(a, load_image(a, draft_size=128), 128)  # other pixels than its own decode
    assert fed.offer(a, load_image(a, draft_size=256), 256)
    assert not fed.offer(crop, load_image(crop, draft_size=256), 256)  # full: nothing is dropped for it
    assert fed.verify(a, crop) == fresh.verify(a, crop) and fresh.verify(a, crop)[0]


def test_the_store_drops_stale_kinds_in_one_go_and_lists_those_of_an_older_cache(tmp_path):
    with EmbeddingStore(tmp_path / "cache") as store:
        store.put_derived([("a", b"1"), ("b", b"2")], "old/v1")
        store.put_derived([("a", b"3")], "new/v2")
        assert store.derived_kinds() == ["new/v2", "old/v1"]
        assert store.prune_derived(lambda k: k.startswith("old/")) == {"old/v1": 2}
        assert store.derived_kinds() == ["new/v2"] and store.get_derived(["a", "b"], "old/v1") == {}
        assert store.get_derived(["a"], "new/v2") == {"a": b"3"}
        assert store.prune_derived(lambda k: k.startswith("old/")) == {}
        path = store.path
    con = sqlite3.connect(path)  # as a cache written before the kinds were listed
    con.execute("DROP TABLE derived_kinds")
    con.commit()
    con.close()
    with EmbeddingStore(tmp_path / "cache") as store:
        assert store.derived_kinds() == ["new/v2"]


def test_stale_kinds_are_those_of_the_finder_no_current_code_reads(monkeypatch):
    from mediacluster.duplicates.collection import stale_kind
    from mediacluster.duplicates.verify import GeometricVerifier

    current = [signature_kind(), signature_kind("dhash", 16), GeometricVerifier().cache_kind(),
               DuplicateFinder(min_inliers=10)._verifier().cache_kind()]
    assert not any(stale_kind(k) for k in current)
    assert not stale_kind("tags.something/v1")  # not the finder's: left alone
    assert stale_kind("dups.signature/v1/phash/8/thumb16/draft256/imagehash-0.0.1")
    assert stale_kind(current[2].replace("/v1/", "/v0/")) and stale_kind("dups.removed/v1")
    monkeypatch.setattr(hashing, "SIGNATURE_VERSION", hashing.SIGNATURE_VERSION + 1)
    assert stale_kind(current[0]) and not stale_kind(signature_kind())


def backdate(cache, kind, days) -> None:
    """Record ``kind``'s last use ``days`` ago, as if nobody had touched it since."""
    con = sqlite3.connect(cache / "embeddings.sqlite")
    con.execute("INSERT INTO derived_used VALUES (?, ?) ON CONFLICT(kind) DO UPDATE SET used=excluded.used",
                (kind, time.time() - days * 86400))
    con.commit()
    con.close()


def test_a_dups_run_drops_stale_kinds_from_its_cache(photos, tmp_path):
    from mediacluster.cli import main
    from mediacluster.duplicates.collection import STALE_IDLE_DAYS

    old = signature_kind().replace(f"/v{hashing.SIGNATURE_VERSION}/", "/v0/")
    recent = signature_kind().replace(f"/v{hashing.SIGNATURE_VERSION}/", "/v99/")  # another version, in use
    with EmbeddingStore(tmp_path / "cache") as store:
        store.put_derived([("x", b"stale"), ("y", b"stale")], old)
        store.put_derived([("x", b"recent")], recent)
        store.put_derived([("x", b"kept")], "another.tool/v1")
    backdate(tmp_path / "cache", old, STALE_IDLE_DAYS + 1)
    backdate(tmp_path / "cache", recent, STALE_IDLE_DAYS - 1)
    backdate(tmp_path / "cache", "another.tool/v1", 1000)
    assert main(["dups", str(tmp_path / "photos"), "--out", str(tmp_path / "a"), "--no-embed", "--cache-dir",
                 str(tmp_path / "cache"), "--quiet"]) == 0
    with EmbeddingStore(tmp_path / "cache") as store:
        assert store.derived_kinds() == sorted(["another.tool/v1", recent, signature_kind()])
        assert store.get_derived(["x", "y"], old) == {}
        assert store.get_derived(["x"], recent) == {"x": b"recent"}


def test_pruning_while_another_run_writes(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from mediacluster.duplicates.collection import prune_cache

    old = signature_kind().replace(f"/v{hashing.SIGNATURE_VERSION}/", "/v0/")
    with EmbeddingStore(tmp_path / "cache") as store:
        store.put_derived([(f"s{k}", b"stale") for k in range(2000)], old)
    backdate(tmp_path / "cache", old, 365)

    def write(_):
        with EmbeddingStore(tmp_path / "cache") as store:  # its own connection, as another process
            for b in range(20):
                store.put_derived([(f"k{b}-{k}", b"new") for k in range(100)], signature_kind())

    def prune(_):
        with EmbeddingStore(tmp_path / "cache") as store:
            return prune_cache(store)

    with ThreadPoolExecutor(2) as pool:
        w, p = pool.submit(write, 0), pool.submit(prune, 0)
        w.result()
        assert p.result() == {old: 2000}
    with EmbeddingStore(tmp_path / "cache") as store:
        assert store.derived_kinds() == [signature_kind()]
        keys = [f"k{b}-{k}" for b in range(20) for k in range(100)]
        assert len(store.get_derived(keys, signature_kind())) == 2000
        assert store.integrity_check() == "ok"


def db_size(store) -> int:
    """The cache file's size once its write-ahead log is checkpointed into it."""
    import os

    store._con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return os.path.getsize(store.path)


def test_a_prune_gives_the_space_back(tmp_path):
    rng = np.random.default_rng(0)
    with EmbeddingStore(tmp_path / "cache") as store:  # a cache made now: incremental vacuum
        store.put_derived([(f"k{i}", rng.bytes(800)) for i in range(3000)], "old/v1")
        store.put_derived([(f"k{i}", rng.bytes(800)) for i in range(3000)], "new/v2")
        full = db_size(store)
        assert store.prune_derived(lambda k: k.startswith("old/")) == {"old/v1": 3000}
        # half the entries gone: the file is at most ~half (not its full size, as before)
        assert db_size(store) < 0.6 * full
        assert store._con.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert len(store.get_derived([f"k{i}" for i in range(3000)], "new/v2")) == 3000
        assert store.integrity_check() == "ok"


@pytest.mark.parametrize("share", [0.5, 0.1])
def test_an_older_cache_is_rewritten_only_when_a_prune_freed_much_of_it(tmp_path, share):
    from mediacluster.embed.store import _SCHEMA, VACUUM_SHARE

    (tmp_path / "cache").mkdir()
    con = sqlite3.connect(tmp_path / "cache" / "embeddings.sqlite")  # as made before: auto_vacuum off
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(_SCHEMA)
    con.close()
    rng = np.random.default_rng(0)
    n_old = int(4000 * share)
    with EmbeddingStore(tmp_path / "cache") as store:
        assert store._con.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        store.put_derived([(f"k{i}", rng.bytes(800)) for i in range(n_old)], "old/v1")
        store.put_derived([(f"k{i}", rng.bytes(800)) for i in range(4000 - n_old)], "new/v2")
        full = db_size(store)
        assert store.prune_derived(lambda k: k.startswith("old/")) == {"old/v1": n_old}
        if share >= VACUUM_SHARE:  # rewritten, and incremental from now on
            assert db_size(store) < (1 - share + 0.1) * full
            assert store._con.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        else:  # a whole rewrite for a tenth: left, the pages are reused by later writes
            assert db_size(store) == full
            store.put_derived([(f"n{i}", rng.bytes(800)) for i in range(n_old)], "new/v2")
            assert db_size(store) <= full * 1.02
        assert store.integrity_check() == "ok"


def test_two_versions_sharing_a_cache_keep_each_others_kinds_while_used(tmp_path):
    day = 86400.0
    cache = tmp_path / "cache"
    with EmbeddingStore(cache) as b:  # version B writes its kind
        b.put_derived([("a", b"B")], "dups.signature/vB")

    def prune_as_a():  # version A, for which B's kind is stale, opens the cache
        with EmbeddingStore(cache) as a:
            return a.prune_derived(lambda k: k == "dups.signature/vB", idle_s=30 * day)

    assert prune_as_a() == {}  # just written
    backdate(cache, "dups.signature/vB", 20)
    with EmbeddingStore(cache) as b:  # B reads its kind (a re-run with everything cached)
        assert b.get_derived(["a"], "dups.signature/vB") == {"a": b"B"}
    used = sqlite3.connect(cache / "embeddings.sqlite").execute(
        "SELECT used FROM derived_used WHERE kind='dups.signature/vB'").fetchone()[0]
    assert time.time() - used < 60  # the read counted as a use
    backdate(cache, "dups.signature/vB", 29)
    assert prune_as_a() == {}
    backdate(cache, "dups.signature/vB", 31)  # B not used for 31 days: its kind goes
    assert prune_as_a() == {"dups.signature/vB": 1}
    with EmbeddingStore(cache) as store:
        assert store.derived_kinds() == []


def test_a_kind_written_by_code_that_records_no_use_is_kept_from_its_first_sight(tmp_path):
    cache = tmp_path / "cache"
    with EmbeddingStore(cache) as store:
        store.put_derived([("a", b"old")], "dups.signature/v0")
    con = sqlite3.connect(cache / "embeddings.sqlite")  # older code: no record of its use
    con.execute("DELETE FROM derived_used")
    con.commit()
    con.close()
    with EmbeddingStore(cache) as store:
        assert store.prune_derived(lambda k: True, idle_s=30 * 86400.0) == {}
    backdate(cache, "dups.signature/v0", 31)  # first seen 31 days ago, not used since
    with EmbeddingStore(cache) as store:
        assert store.prune_derived(lambda k: True, idle_s=30 * 86400.0) == {"dups.signature/v0": 1}


def test_a_new_version_opening_the_cache_keeps_the_previous_versions_signatures(photos, tmp_path, monkeypatch):
    from mediacluster.duplicates.collection import signature_cache

    cache = tmp_path / "cache"
    with signature_cache(cache) as store:  # version 1 runs
        compute_signatures(photos, store=store)
    v1 = signature_kind()
    monkeypatch.setattr(hashing, "SIGNATURE_VERSION", hashing.SIGNATURE_VERSION + 1)
    with signature_cache(cache) as store:  # version 2 runs on the same cache
        compute_signatures(photos, store=store)
        assert store.derived_kinds() == sorted([v1, signature_kind()])
    monkeypatch.undo()
    with signature_cache(cache) as store:  # version 1 again: its signatures are all still there
        assert len(store.get_derived([hash_file(p) for p in photos], v1)) == len(photos)


def test_a_file_replaced_while_its_signature_is_computed_leaves_nothing_under_its_old_content(photos, tmp_path):
    """Before: the signature (perceptual hash, thumbnail) of the new bytes was stored under the
    hash of the bytes read before, for good: a later run took it for every file with the old bytes."""
    from mediacluster.embed.engine import CHANGED

    old = open(photos[0], "rb").read()

    def rewrite(i, im, draft):  # the file is rewritten after it was hashed
        if i == 0:
            shutil.copyfile(photos[1], photos[0])

    with EmbeddingStore(tmp_path / "cache") as store:
        sig = compute_signatures(photos, store=store, on_decoded=rewrite)
        assert sig.skipped == {0: CHANGED} and sig.ok.tolist() == [False] + [True] * 5
        assert store.get_derived([hash_file(photos[1])], signature_kind())  # the others are kept
        with open(photos[0], "wb") as f:
            f.write(old)
        assert store.get_derived([hash_file(photos[0])], signature_kind()) == {}
        again = compute_signatures(photos, store=store)
    same(again, compute_signatures(photos))


@pytest.mark.parametrize("out", ["photos", "photos/dups"])
def test_a_dups_output_inside_the_collection_is_not_read_as_part_of_it(photos, tmp_path, out):
    """`dups photos --out photos` (or `--out photos/dups`), then again, or `cluster photos`: the
    second read took the first run's page thumbnails (photos/thumbs/*.jpg) as photos of the
    collection: 7 items instead of 6 and a duplicate group holding a thumbnail. Run folders
    were passed over already; thumbnail folders now carry fileio.MADE_HERE and are too."""
    from mediacluster.cli import main
    from mediacluster.ingest import collect

    root, cache = tmp_path / "photos", tmp_path / "cache"
    shutil.copyfile(photos[0], root / "copy.jpeg")  # a duplicate group, so the page has thumbnails
    args = ["dups", str(root), "--out", str(tmp_path / out), "--no-embed", "--cache-dir", str(cache), "--quiet"]
    assert main(args) == 0
    first = (tmp_path / out / "dups.csv").read_bytes()
    assert any((tmp_path / out / "thumbs").glob("*.jpg"))
    assert len(collect(root)) == 7
    assert main(args) == 0
    assert (tmp_path / out / "dups.csv").read_bytes() == first


@pytest.mark.parametrize("case", ["manifest of moved files", "folder of broken files",
                                  "folder of broken files, --no-embed"])
def test_dups_on_nothing_usable_says_why(tmp_path, capsys, case):
    """`dups` on a manifest whose files are gone, or (embedding) a folder of files none of which
    decodes, said only "no usable files found in man.csv" / "no file of DIR could be read";
    `cluster` on the same input names how many were skipped and the first one's reason.
    ``--no-embed`` on the broken folder compared the files as bytes and wrote a table (exit 3)
    where the embedding check refused it (exit 2): now both refuse it alike."""
    from mediacluster.cli import main

    if case.startswith("manifest"):
        src = tmp_path / "man.csv"
        src.write_text(f"path\n{tmp_path / 'gone' / 'a.jpg'}\n{tmp_path / 'gone' / 'b.jpg'}\n")
        first = f"{tmp_path / 'gone' / 'a.jpg'}: file not found"
    else:
        src = tmp_path / "broken"
        src.mkdir()
        (src / "a.png").write_text("not a picture")
        (src / "b.jpg").write_bytes(b"")
        first = f"{src / 'a.png'}: not an image"
    capsys.readouterr()
    more = ["--no-embed"] if case.endswith("--no-embed") else []
    assert main(["dups", str(src), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet", *more]) == 2
    err = capsys.readouterr().err
    assert "(2 skipped; the first, " in err and first in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("table", ["dups.parquet", "dups.csv"])
def test_a_dups_table_given_back_as_a_manifest_reads_the_files_it_names(photos, tmp_path, capsys, table):
    """`dups OUT/dups.parquet`: the table keeps its paths relative to the collection root recorded
    in dups.json, but read as a manifest they were resolved against OUT: "no usable files found
    (7 skipped; the first, OUT/copy.jpeg: file not found)". Now they resolve as the table
    recorded them (locations.table_root): the same items, the same group; a table without its
    dups.json beside it is an ordinary manifest again."""
    import os

    import pandas as pd

    from mediacluster.cli import main
    from mediacluster.ingest import collect

    root, cache = tmp_path / "photos", tmp_path / "cache"
    shutil.copyfile(photos[0], root / "copy.jpeg")
    first = tmp_path / "o1"
    assert main(["dups", str(root), "--out", str(first), "--no-embed", "--cache-dir", str(cache), "--quiet"]) == 0
    assert not os.path.isabs(pd.read_parquet(first / "dups.parquet")["path"][0])
    coll = collect(first / table)
    assert sorted(coll.paths) == sorted(str(p) for p in collect(root).paths) and not coll.skipped
    capsys.readouterr()
    assert main(["dups", str(first / table), "--out", str(tmp_path / "o2"), "--no-embed", "--cache-dir",
                 str(cache), "--quiet"]) == 0
    assert "7 items -> 1 duplicate groups" in capsys.readouterr().out
    # the table alone (its dups.json not beside it): paths relative to its own folder, as any manifest
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copyfile(first / table, alone / table)
    assert len(collect(alone / table)) == 0
