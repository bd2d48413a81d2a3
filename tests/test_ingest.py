"""Ingest: folders, manifests and precomputed embeddings become a Collection (no decoding here)."""

from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from broken_media import jpeg_bytes, photo

from mediacluster.errors import InputError, ParameterError
from mediacluster.ingest import collect, find_duplicates
from mediacluster.ingest.sources import scan_folder

JPEG = jpeg_bytes(photo((16, 16)))


def touch(p, data: bytes = JPEG):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


# -- folders ------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    touch(root / "cats" / "a.JPG")
    touch(root / "cats" / "b.jpeg")
    touch(root / "cats" / "notes.txt", b"not media")
    touch(root / "dogs" / "small" / "c.Png")
    touch(root / "dogs" / "d.TIFF")
    touch(root / "top.gif")
    touch(root / "w.webp")
    touch(root / "x.bmp")
    touch(root / ".hidden.jpg")
    touch(root / ".cache" / "thumb.jpg")
    touch(root / "cats" / ".DS_Store", b"junk")
    touch(root / "@eaDir" / "SYNOPHOTO_THUMB.jpg")
    touch(root / "audio.wav", b"RIFF")
    return root


def rel(coll, root):
    return [os.path.relpath(p, root) for p in coll.paths]


def test_folder_recursive_case_insensitive_hidden_skipped(tree):
    coll = collect(tree, media="image", labels_from_folders=True)
    assert rel(coll, tree) == [
        "top.gif", "w.webp", "x.bmp",
        os.path.join("cats", "a.JPG"), os.path.join("cats", "b.jpeg"),
        os.path.join("dogs", "d.TIFF"), os.path.join("dogs", "small", "c.Png"),
    ]
    assert coll.labels == [None, None, None, "cats", "cats", "dogs", "dogs/small"]
    assert coll.ids == coll.paths and coll.vectors is None and coll.skipped == []
    assert coll.has_labels
    # without the flag there are no labels at all
    assert collect(tree, media="image").labels is None
    # "path" is the flag's own rule; "name" takes each file's own folder name (train/cat and
    # test/cat are one class), the root's files still without one; anything else is refused
    assert collect(tree, media="image", labels_from_folders="path").labels == coll.labels
    assert collect(tree, media="image", labels_from_folders="name").labels == [
        None, None, None, "cats", "cats", "dogs", "small"]
    with pytest.raises(ParameterError, match="labels_from_folders"):
        collect(tree, media="image", labels_from_folders="last")
    # by default (media="auto", as the CLI) the kind most files are, the one clip named as such
    auto = collect(tree)
    assert auto.media == "image" and auto.paths == coll.paths  # the same scan gives the same order
    assert [(os.path.relpath(s.path, tree), s.reason.split(":")[0]) for s in auto.skipped] == [
        ("audio.wav", "audio file in a mixed folder")]


def test_relative_input_gives_absolute_paths(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    coll = collect("photos")
    assert all(os.path.isabs(p) for p in coll.paths)
    assert coll.paths == collect(tree).paths


def test_folder_audio_media_kind(tree):
    coll = collect(tree, media="audio")
    assert rel(coll, tree) == ["audio.wav"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinks_followed_once_and_loops_safe(tree, tmp_path):
    outside = tmp_path / "elsewhere"
    touch(outside / "e.jpg")
    os.symlink(tree, tree / "dogs" / "loop")  # loop back to the root
    os.symlink(tree / "cats", tree / "zz_cats_again")  # second way to reach cats/
    os.symlink(outside, tree / "linked")  # a folder outside the root
    os.symlink(tree / "cats" / "a.JPG", tree / "alias.jpg")  # link to a file: an item
    os.symlink(tmp_path / "gone.jpg", tree / "dead.jpg")  # broken link
    if hasattr(os, "mkfifo"):
        os.mkfifo(tree / "pipe.jpg")
    coll = scan_folder(tree, labels_from_folders=True)
    names = rel(coll, tree)
    assert names.count(os.path.join("cats", "a.JPG")) == 1
    assert not any("zz_cats_again" in n or "loop" in n for n in names)
    assert os.path.join("linked", "e.jpg") in names
    assert coll.labels[names.index(os.path.join("linked", "e.jpg"))] == "linked"
    assert "alias.jpg" in names
    reasons = {os.path.basename(s.path): s.reason for s in coll.skipped}
    assert reasons["dead.jpg"] == "broken symbolic link"
    if hasattr(os, "mkfifo"):
        assert reasons["pipe.jpg"] == "not a regular file"


def test_oversized_files_skipped_before_reading(tree, tmp_path):
    """The byte cap applies at ingest (from stat), so the embedding cache never hashes them."""
    from mediacluster.ingest import images

    big = tree / "cats" / "huge.jpg"
    with open(big, "wb") as f:  # sparse: no disk space used
        f.truncate(images.MAX_FILE_BYTES + 1)
    coll = collect(tree, media="image")
    assert str(big) not in coll.paths
    [s] = coll.skipped
    assert s.path == str(big) and s.reason.startswith("file too large")
    (tmp_path / "m.csv").write_text(f"path\n{big}\n{tree / 'top.gif'}\n")
    coll = collect(tmp_path / "m.csv")
    assert coll.paths == [str(tree / "top.gif")] and coll.skipped[0].reason.startswith("file too large")
    # audio is not capped by the image limit
    big_wav = tree / "long.wav"
    with open(big_wav, "wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)
    assert str(big_wav) in collect(tree, media="audio").paths


def test_unreadable_subfolder_listed(tree):
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    locked = tree / "locked"
    touch(locked / "f.jpg")
    locked.chmod(0)
    try:
        coll = collect(tree)
        assert any(s.reason.startswith("cannot read folder") for s in coll.skipped)
    finally:
        locked.chmod(0o755)


def test_a_folder_deeper_than_path_max_is_listed_as_skipped(tmp_path):
    """Folders nested past PATH_MAX (4096 bytes: 20 names of 250): the files above are read and
    the folder the OS cannot name is listed as skipped with the reason. Before: an internal
    error (``Path.is_file`` of the run-folder check raised ENAMETOOLONG)."""
    touch(tmp_path / "top.jpg")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:  # made relative to an open folder: no path the OS is given is over PATH_MAX
        for _ in range(20):
            os.mkdir("d" * 250, dir_fd=fd)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    coll = collect(tmp_path)
    assert coll.paths == [str(tmp_path / "top.jpg")]
    assert any("cannot read folder" in s.reason and "too long" in s.reason for s in coll.skipped), coll.skipped


def test_empty_and_missing_input(tmp_path):
    assert len(collect(tmp_path)) == 0
    with pytest.raises(InputError, match="input not found"):
        collect(tmp_path / "nope")
    (tmp_path / "x.docx").write_bytes(b"x")
    with pytest.raises(ValueError, match="don't know how to read"):
        collect(tmp_path / "x.docx")


def test_formats_that_are_not_read_are_listed_as_skipped(tree, tmp_path, capsys, monkeypatch):
    """A phone's HEIC photos or M4A notes are listed with the reason, never passed over in silence."""
    touch(tree / "cats" / "IMG_0001.HEIC", b"\x00\x00\x00\x18ftypheic")
    touch(tree / "raw" / "DSC_1.nef", b"raw")
    touch(tree / "memo.m4a", b"\x00\x00\x00\x18ftypM4A ")
    coll = collect(tree, media="image")
    assert {os.path.relpath(s.path, tree): s.reason.split(" files ")[0] for s in coll.skipped} == {
        os.path.join("cats", "IMG_0001.HEIC"): "HEIC image", os.path.join("raw", "DSC_1.nef"): "NEF image"}
    assert all("convert it to JPEG or PNG" in s.reason for s in coll.skipped)
    assert len(coll) == 7  # the readable ones, as before
    audio = collect(tree, media="audio")
    assert [os.path.relpath(s.path, tree) for s in audio.skipped] == ["memo.m4a"]
    with pytest.raises(InputError, match="HEIC image files are not read"):
        collect(tree / "cats" / "IMG_0001.HEIC")
    # a folder of nothing else: the command says why, exit 2
    from mediacluster.cli import main

    only = tmp_path / "phone"
    touch(only / "a.heic", b"x")
    monkeypatch.setenv("MEDIACLUSTER_CACHE", str(tmp_path / "cache"))
    assert main(["cluster", str(only), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "a.heic: HEIC image files are not read" in capsys.readouterr().err


def test_jpeg_saved_by_a_browser_as_jfif_or_jpe_is_read(tmp_path):
    """Browsers save many web images as .jfif; they are JPEGs and are read, not passed over."""
    from PIL import Image

    from mediacluster.ingest import load_image

    d = tmp_path / "saved"
    d.mkdir()
    for i, ext in enumerate((".jfif", ".jpe", ".JFIF", ".jpg")):
        Image.new("RGB", (40, 30), (60 * i, 100, 200)).save(d / f"img{i}{ext}", format="JPEG")
    coll = collect(d)
    assert sorted(os.path.basename(p) for p in coll.paths) == ["img0.jfif", "img1.jpe", "img2.JFIF", "img3.jpg"]
    assert not coll.skipped
    assert all(load_image(p).size == (40, 30) for p in coll.paths)


def test_a_file_of_the_other_media_kind_is_named_as_such(tree):
    # an audio model given a photo (assign) said "don't know how to read"
    with pytest.raises(InputError, match=r"a\.JPG is an image file; this reads audio files"):
        collect(tree / "cats" / "a.JPG", media="audio")
    with pytest.raises(InputError, match=r"audio\.wav is an audio file; this reads image files"):
        collect(tree / "audio.wav", media="image")


# -- manifests ----------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "data"
    return [touch(d / "imgs" / f"{i}.jpg", jpeg_bytes(photo((16, 16), seed=i))) for i in range(4)]


def test_csv_manifest_relative_missing_empty_duplicate(files, tmp_path, monkeypatch):
    d = files[0].parents[1]
    (d / "m.csv").write_text(
        "Path,Label\n"
        "imgs/0.jpg,cat\n"
        f"{files[1]},dog\n"  # absolute
        "imgs/missing.jpg,cat\n"
        ",cat\n"
        "imgs/0.jpg,cat\n"  # listed twice
        "./imgs/2.jpg,\n"  # no label
    )
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the manifest, not the cwd
    coll = collect(d / "m.csv")
    assert coll.paths == [str(files[0]), str(files[1]), str(files[2])]
    assert coll.ids == coll.paths
    assert coll.labels == ["cat", "dog", None]
    reasons = [(os.path.basename(s.path), s.reason) for s in coll.skipped]
    assert ("missing.jpg", "file not found") in reasons
    assert ("m.csv (line 5)", "empty path in manifest") in reasons
    assert ("0.jpg", "duplicate of manifest line 2") in reasons


def test_parquet_manifest_ids_and_folder_labels(files):
    d = files[0].parents[1]
    pd.DataFrame({"id": ["a", "b", "c"], "path": ["imgs/0.jpg", "imgs/1.jpg", "imgs/x.jpg"],
                  "label": [1, 2, None]}).to_parquet(d / "m.parquet")
    coll = collect(d / "m.parquet")
    assert coll.ids == ["a", "b"] and coll.labels == ["1", "2"]
    assert [s.reason for s in coll.skipped] == ["file not found"]
    coll = collect(d / "m.parquet", labels_from_folders=True)
    assert coll.labels == ["imgs", "imgs"]
    # a duplicate explicit id (a post scraped twice) keeps the first row and lists the later
    # one as skipped, naming both rows: never a silent overwrite, never the whole run lost
    pd.DataFrame({"id": ["a", "b", "a"], "path": ["imgs/0.jpg", "imgs/1.jpg", "imgs/1.jpg"]}
                 ).to_parquet(d / "dup.parquet")
    coll = collect(d / "dup.parquet")
    assert coll.ids == ["a", "b"] and coll.paths == [str(files[0]), str(files[1])]
    assert [(s.path, s.reason) for s in coll.skipped] == [
        (f"{d / 'dup.parquet'} (row 2)", "id 'a' already on manifest row 0")]


# -- precomputed embeddings --------------------------------------------------------------------


def test_npy_and_npz(tmp_path, rng):
    X = rng.normal(size=(5, 8)).astype(np.float64)
    np.save(tmp_path / "v.npy", X)
    coll = collect(tmp_path / "v.npy")
    assert coll.vectors.dtype == np.float32 and coll.vectors.shape == (5, 8)
    assert coll.ids == ["0", "1", "2", "3", "4"] and coll.paths is None and coll.media == "vector"
    np.savez(tmp_path / "v.npz", vectors=X, ids=np.array(list("abcde")), labels=np.array(list("xxyyz")))
    coll = collect(tmp_path / "v.npz")
    assert coll.ids == list("abcde") and coll.labels == list("xxyyz")
    np.testing.assert_allclose(coll.vectors, X.astype(np.float32))
    np.savez(tmp_path / "one.npz", whatever=X)  # a single array of any name is the vectors
    assert collect(tmp_path / "one.npz").vectors.shape == (5, 8)


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.zeros(8), "expected a 2-D array.*single vector"),
        (np.zeros((2, 3, 4)), "expected a 2-D array"),
        (np.zeros((0, 4)), "no vectors"),
        (np.array([[1.0, np.nan], [1.0, 2.0], [np.inf, 0.0]]), r"bad\.npy: row 0 contains NaN or infinity \(rows \[0, 2\]: 2 of 3\)"),
        (np.array([["a", "b"]]), "must be numbers"),
    ],
)
def test_npy_errors(tmp_path, arr, message):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(ValueError, match=message):
        collect(tmp_path / "bad.npy")


def test_npy_object_array_never_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="never unpickled"):
        collect(tmp_path / "obj.npy")


def test_npz_mismatched_ids(tmp_path):
    np.savez(tmp_path / "v.npz", vectors=np.zeros((3, 2)), ids=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="2 ids for 3 vectors"):
        collect(tmp_path / "v.npz")


def test_parquet_vectors(tmp_path, rng):
    X = rng.normal(size=(4, 6)).astype(np.float32)
    df = pd.DataFrame({"id": ["a", "b", "c", "d"], "embedding": list(X), "label": ["p", "q", "p", None]})
    df.to_parquet(tmp_path / "v.parquet")
    coll = collect(tmp_path / "v.parquet")
    assert coll.ids == ["a", "b", "c", "d"] and coll.labels == ["p", "q", "p", None]
    np.testing.assert_array_equal(coll.vectors, X)
    # a 'path' column next to a vector column: still vectors (not a manifest), paths kept
    df["path"] = [f"/x/{i}.jpg" for i in "abcd"]
    df.to_parquet(tmp_path / "vp.parquet")
    coll = collect(tmp_path / "vp.parquet")
    assert coll.vectors is not None and coll.paths == df["path"].tolist() and coll.ids == ["a", "b", "c", "d"]
    # one numeric column per dimension
    wide = pd.DataFrame(X, columns=[f"d{i}" for i in range(6)])
    wide.insert(0, "id", list("abcd"))
    wide.to_parquet(tmp_path / "wide.parquet")
    np.testing.assert_array_equal(collect(tmp_path / "wide.parquet").vectors, X)


def test_csv_vectors_as_strings(tmp_path):
    (tmp_path / "v.csv").write_text('id,vector\nu,"[1, 2, 3]"\nv,4 5 6\n')
    coll = collect(tmp_path / "v.csv")
    assert coll.ids == ["u", "v"]
    np.testing.assert_array_equal(coll.vectors, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "vectors, ids, message",
    [
        ([[1.0, 2.0], [1.0, 2.0, 3.0]], ["a", "b"], "different lengths: row 0 has 2 values, row 1 has 3"),
        ([[1.0, 2.0], None], ["a", "b"], "row 1: vector is missing"),
        ([[1.0, 2.0], [np.nan, 1.0]], ["a", "b"], r"bad\.parquet: row 1 contains NaN or infinity$"),
        ([[1.0, 2.0], [3.0, 1.0]], ["a", "a"], "ids are not unique"),
    ],
)
def test_parquet_vector_errors(tmp_path, vectors, ids, message):
    pd.DataFrame({"id": ids, "vector": vectors}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=message):
        collect(tmp_path / "bad.parquet")


def test_table_without_path_or_vectors(tmp_path):
    pd.DataFrame({"id": ["a"], "label": ["x"]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="need a 'path' column"):
        collect(tmp_path / "t.parquet")


# -- duplicates ---------------------------------------------------------------------------------


def test_duplicates_kept_and_findable(files):
    d = files[0].parent
    shutil.copy(files[1], d / "copy_of_1.jpg")
    shutil.copy(files[1], d / "another_copy.jpg")
    touch(d / "same_size_other.jpg", files[2].read_bytes()[:-1] + b"\0")
    coll = collect(d)
    assert len(coll) == 7  # every path stays an item
    groups = find_duplicates(coll.paths)
    assert [sorted(os.path.basename(p) for p in g) for g in groups] == [
        ["1.jpg", "another_copy.jpg", "copy_of_1.jpg"]]


def test_collections_and_embeddings_show_a_summary_not_every_item():
    """In a notebook, a collection or its embeddings is shown by ``repr``: the dataclass's
    printed every id and array (a 1M-item collection froze the notebook); now a one-line summary."""
    import numpy as np

    from mediacluster.data import Collection, Embeddings, Skipped

    n = 20000
    ids = [f"/photos/img_{i:06d}.jpg" for i in range(n)]
    coll = Collection(ids=ids, paths=ids, labels=["cat"] * n, skipped=[Skipped("/photos/x.heic", "HEIC")],
                      source="/photos", root="/photos")
    emb = Embeddings(ids=ids, vectors=np.zeros((n, 1280), np.float32), encoder="efficientnet-lite0",
                     extras={"imagenet_probs": np.zeros((n, 1000), np.float16)}, root="/photos")
    assert repr(coll) == ("Collection(20000 image items, labels=yes, skipped=1, source='/photos', "
                          "root='/photos')")
    assert repr(emb) == ("Embeddings(20000 items, vectors 20000x1280 float32, encoder='efficientnet-lite0', "
                         "extras=['imagenet_probs'], labels=no, skipped=0, root='/photos')")


def test_a_file_removed_while_the_folder_is_read_is_not_called_a_broken_link(tmp_path, monkeypatch):
    """A sync tool or camera import removes a file between the folder's listing and its stat.
    Before: it was skipped as a "broken symbolic link" (it was a plain file)."""
    from PIL import Image

    from mediacluster.ingest import collect

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    real = os.scandir

    def scandir(path):  # the real listing; b.png is removed just after it was listed
        it = real(path)
        entries = list(it)
        it.close()
        if (tmp_path / "b.png").exists():
            (tmp_path / "b.png").unlink()
        return contextlib.nullcontext(iter(entries))

    monkeypatch.setattr(os, "scandir", scandir)
    coll = collect(tmp_path, media="image")
    assert [os.path.basename(p) for p in coll.paths] == ["a.png"]
    assert [(os.path.basename(s.path), s.reason) for s in coll.skipped] == [
        ("b.png", "file not found (removed while the folder was read)")]


def test_avif_photos_are_read_where_pillow_has_the_codec(tmp_path):
    """AVIF (what phones and web pages now save) was listed as "not read, convert it" although
    the installed Pillow reads it; it is read where Pillow has the codec and listed as not read
    where it has not."""
    from PIL import Image, features

    from mediacluster.ingest import IMAGE_EXTENSIONS, load_image

    if not features.check("avif"):
        assert ".avif" not in IMAGE_EXTENSIONS
        pytest.skip("this Pillow has no AVIF codec")
    (tmp_path / "c").mkdir()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "c" / "a.avif")
    coll = collect(tmp_path / "c", media="image")
    assert len(coll) == 1 and not coll.skipped
    assert load_image(tmp_path / "c" / "a.avif").size == (40, 30)


def _flat_psd(im) -> bytes:
    """A flat RGB PSD (no layers, raw composite), as Photoshop's maximised-compatibility file."""
    import struct

    w, h = im.size
    a = np.asarray(im.convert("RGB"))
    return (b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3) + struct.pack(">IIIH", 0, 0, 0, 0)
            + b"".join(a[:, :, k].tobytes() for k in range(3)))


def test_an_archives_older_formats_pillow_reads_are_clustered_not_passed_over(tmp_path):
    """PCX, ICO, TGA, Netpbm and PSD files of a museum's scans were passed over in silence (PCX,
    ICO) or skipped as "not read" (PSD) although Pillow reads them: now they are items."""
    from PIL import Image

    from mediacluster.ingest import load_image

    d = tmp_path / "old formats"
    d.mkdir()
    im = Image.new("RGB", (48, 32), (200, 30, 40))
    for ext in ("pcx", "tga", "ppm", "dib"):
        im.save(d / f"a.{ext}", format={"dib": "BMP"}.get(ext, ext.upper() if ext != "ppm" else "PPM"))
    im.convert("L").save(d / "b.pgm")
    im.save(d / "c.ico", sizes=[(32, 32)])
    (d / "d.psd").write_bytes(_flat_psd(im))
    (d / "e.PSD").write_bytes(_flat_psd(im))
    coll = collect(d, media="image")
    assert not coll.skipped
    assert sorted(os.path.basename(p) for p in coll.paths) == [
        "a.dib", "a.pcx", "a.ppm", "a.tga", "b.pgm", "c.ico", "d.psd", "e.PSD"]
    for p in coll.paths:
        got = load_image(p)
        assert got.mode == "RGB"
        r, g, b = got.getpixel((got.width // 2, got.height // 2))
        assert (r > 150 and g < 80) or os.path.basename(p) == "b.pgm", p


def test_a_manifest_counts_the_files_beside_it_that_no_row_names(tmp_path):
    """A file in the manifest's folder that no row names was not reported (a scrape the manifest
    missed went unseen): the collection counts the files of its kind under the manifest's folder
    that no row names, without reading them (hidden files, other kinds and run folders aside);
    a folder past the scan limit gives a lower bound."""
    from mediacluster.ingest.sources import unlisted_files
    from mediacluster.rundir import RUN_JSON, SCHEMA

    for name in ("imgs/0.jpg", "imgs/1.jpg", "imgs/2.jpg", "imgs/sub/3.jpg", "imgs/.hidden.jpg",
                 "imgs/notes.txt", "run/thumbs/t.jpg"):
        touch(tmp_path / name)
    (tmp_path / "run" / RUN_JSON).write_text(f'{{"schema": "{SCHEMA}"}}')
    (tmp_path / "imgs" / "2.jpg").write_bytes(b"not an image: never read")
    pd.DataFrame({"path": ["imgs/0.jpg", "imgs/1.jpg", "imgs/gone.jpg"]}).to_csv(tmp_path / "m.csv", index=False)
    coll = collect(tmp_path / "m.csv")
    assert coll.unlisted == {"folder": str(tmp_path), "count": 2, "complete": True,
                             "examples": [str(tmp_path / "imgs" / "2.jpg"), str(tmp_path / "imgs" / "sub" / "3.jpg")]}
    pd.DataFrame({"path": ["imgs/0.jpg", "imgs/1.jpg", "imgs/2.jpg", "imgs/sub/3.jpg"]}).to_csv(tmp_path / "m.csv",
                                                                                             index=False)
    assert collect(tmp_path / "m.csv").unlisted is None
    got = unlisted_files(tmp_path, set(), {".jpg"}, show=1, limit=3)
    assert got["complete"] is False and 1 <= got["count"] < 4 and len(got["examples"]) == 1


def test_a_folder_mediacluster_made_inside_the_input_is_passed_over(tmp_path):
    """An ``--out`` (or a report's / a dups page's thumbnails) inside the input folder: its
    pictures are mediacluster's own, not the collection's, so a later scan passes over the folder
    (marked ``fileio.MADE_HERE``, or a run folder), as the media count does."""
    from mediacluster.fileio import MADE_HERE
    from mediacluster.ingest.sources import detect_media

    root = tmp_path / "photos"
    (root / "thumbs").mkdir(parents=True)
    (root / "a.jpg").write_bytes(b"\xff\xd8 not decoded at the scan")
    (root / "thumbs" / "0001.jpg").write_bytes(b"\xff\xd8 a thumbnail")
    (root / "thumbs" / MADE_HERE).write_text("")
    coll = collect(root, media="image")
    assert [os.path.basename(p) for p in coll.paths] == ["a.jpg"] and not coll.skipped
    assert detect_media(root)[1]["image"] == 1
