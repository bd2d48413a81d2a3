"""load_image on awkward and broken files that the tests build themselves (broken_media.py)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from broken_media import jpeg_bytes, make_awkward, make_broken, photo
from PIL import Image, ImageFile

from mediacluster.ingest import SkipItem, load_image
from mediacluster.ingest import images as images_mod


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    return make_awkward(tmp_path_factory.mktemp("awkward"))


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    d = tmp_path_factory.mktemp("broken")
    return d, make_broken(d)


def px(im: Image.Image, xy) -> tuple[int, int, int]:
    assert im.mode == "RGB"
    return im.getpixel(xy)


def close(a, b, tol=12):
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


# -- usable but awkward ------------------------------------------------------------------------


def test_cmyk_colour_preserved(awkward):
    im = load_image(awkward["cmyk"])
    assert im.size == (32, 32)
    assert close(px(im, (16, 16)), (255, 0, 0), tol=20)


def test_grey16_scaled_not_clipped(awkward):
    a = np.asarray(load_image(awkward["grey16"]))
    row = a[4, :, 0].astype(int)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    # the 16-bit ramp 0..65535 becomes the full 8-bit ramp: clipping would make >99% of it 255
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1
    assert np.all(np.diff(row) >= 0) and len(np.unique(row)) > 200


def test_rgb16_scaled(awkward):
    assert close(px(load_image(awkward["rgb16"]), (3, 3)), (255, 128, 0), tol=1)


def test_la_composited_on_white(awkward):
    im = load_image(awkward["la"])
    assert close(px(im, (0, 0)), (255, 255, 255), tol=1)  # transparent -> white
    assert close(px(im, (1, 0)), (127, 127, 127), tol=2)  # black at half alpha -> mid grey
    assert close(px(im, (2, 0)), (200, 200, 200), tol=1)  # opaque kept


def test_rgba_composited_on_white(awkward):
    im = load_image(awkward["rgba"])
    assert px(im, (0, 0)) == (255, 255, 255)
    assert px(im, (6, 0)) == (255, 0, 0)


def test_palette_with_and_without_transparency(awkward):
    plain = load_image(awkward["palette"])
    assert px(plain, (0, 0)) == (0, 0, 255) and px(plain, (6, 0)) == (0, 255, 0)
    trns = load_image(awkward["palette_trns"])
    assert px(trns, (0, 0)) == (255, 255, 255)  # transparent index -> white, not blue
    assert px(trns, (6, 0)) == (0, 255, 0)


@pytest.mark.parametrize("name", ["anim_gif", "anim_webp", "anim_png", "pages_tif"])
def test_animated_first_frame(awkward, name):
    """A file of several frames or pages is read as its first (README, formats), by the one
    loader of the embedding, the thumbnails and the duplicate signatures."""
    with Image.open(awkward[name]) as im:
        assert getattr(im, "n_frames", 1) == 3  # really animated / three pages
    assert close(px(load_image(awkward[name]), (8, 8)), (255, 0, 0), tol=2)
    assert close(px(load_image(awkward[name], draft_size=8), (4, 4)), (255, 0, 0), tol=2)


@pytest.mark.parametrize("draft", [None, 256])
def test_exif_orientation_applied(awkward, draft):
    im = load_image(awkward["rotated"], draft_size=draft)
    assert im.size == (20, 40)  # stored 40x20, displayed upright
    assert close(px(im, (10, 5)), (255, 0, 0), tol=30)  # red on top
    assert close(px(im, (10, 34)), (0, 0, 255), tol=30)  # blue below


def test_jpeg_draft_decodes_smaller(awkward):
    full = load_image(awkward["big"])
    small = load_image(awkward["big"], draft_size=256)
    assert full.size == (2000, 1500)
    # DCT scaling by 1/4 here: short side stays >= 256, four times fewer rows and columns
    assert min(small.size) >= 256 and small.size[0] <= 1000
    # same picture: the colour at the centre matches
    assert close(px(small, (small.size[0] // 2, small.size[1] // 2)), px(full, (1000, 750)), tol=12)


def test_grey_with_transparent_colour(tmp_path):
    p = tmp_path / "trns.png"  # greyscale PNG whose value 0 is declared transparent (tRNS)
    a = np.full((4, 4), 90, np.uint8)
    a[:, :2] = 0
    Image.fromarray(a, "L").save(p, transparency=0)
    im = load_image(p)
    assert px(im, (0, 0)) == (255, 255, 255) and px(im, (3, 0)) == (90, 90, 90)


def test_plain_rgb_and_grey(tmp_path):
    p = tmp_path / "g.bmp"
    Image.new("L", (5, 5), 77).save(p)
    assert px(load_image(p), (2, 2)) == (77, 77, 77)
    p = tmp_path / "bw.tiff"
    Image.new("1", (5, 5), 1).save(p)
    assert px(load_image(p), (2, 2)) == (255, 255, 255)


# -- unusable: skipped with a distinct reason --------------------------------------------------


def reason_of(path, **kw) -> SkipItem:
    with pytest.raises(SkipItem) as ei:
        load_image(path, **kw)
    return ei.value


def test_broken_files_skipped_with_distinct_reasons(broken):
    d, expected = broken
    reasons = {}
    for name, kind in expected.items():
        e = reason_of(d / name)
        assert e.kind == kind, (name, str(e))
        assert str(e) and "Traceback" not in str(e)
        reasons[name] = str(e)
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["truncated.jpg"].startswith("truncated image")
    assert reasons["notes.jpg"] == "not an image: the file contains text"
    assert reasons["bomb.png"].startswith("image too large")
    assert reasons["bomb.png"].endswith("if it is a real scan, save a smaller copy, or a JPEG (read reduced)")
    assert reasons["badcrc.png"].startswith("corrupt image")
    assert len(set(reasons.values())) == len(reasons)


def test_header_only_jpeg_is_truncated(tmp_path):
    p = tmp_path / "stub.jpg"
    p.write_bytes(jpeg_bytes(photo())[:40])
    assert reason_of(p).kind == "truncated"


def test_binary_garbage_is_not_an_image(tmp_path):
    p = tmp_path / "noise.png"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    e = reason_of(p)
    assert e.kind == "not_an_image" and "unrecognised" in str(e)


def test_bomb_refused_from_header_without_decoding(broken, monkeypatch):
    """Even with PIL's own bomb guard switched off, our pixel cap refuses before any decoding."""
    d, _ = broken
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    t = time.perf_counter()
    e = reason_of(d / "bomb.png")
    assert time.perf_counter() - t < 1.0
    assert e.kind == "image_too_large" and "30000x30000" in str(e)


def test_pixel_cap_parameter(awkward):
    e = reason_of(awkward["big"], max_pixels=1_000_000)
    assert e.kind == "image_too_large" and "2000x1500" in str(e)
    # a JPEG decoded at 1/8 scale (250x188) fits the same cap: draft is applied first
    assert load_image(awkward["big"], max_pixels=1_000_000, draft_size=180).size[0] <= 500


def test_file_size_cap(tmp_path):
    p = tmp_path / "huge.jpg"
    with open(p, "wb") as f:  # sparse: takes no disk space
        f.truncate(images_mod.MAX_FILE_BYTES + 1)
    e = reason_of(p)
    assert e.kind == "file_too_large" and str(e).startswith("file too large")
    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg_bytes(photo()))
    assert reason_of(small, max_bytes=100).kind == "file_too_large"


def test_missing_directory_and_fifo(tmp_path):
    assert reason_of(tmp_path / "nope.jpg").kind == "not_found"
    (tmp_path / "dir.jpg").mkdir()
    assert reason_of(tmp_path / "dir.jpg").kind == "not_a_file"
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.jpg")
        assert reason_of(tmp_path / "pipe.jpg").kind == "not_a_file"  # and does not block


def test_thread_safe_and_deterministic(awkward, broken):
    d, expected = broken
    paths = [*awkward.values(), *(d / n for n in expected)] * 3

    def outcome(p):
        try:
            return np.asarray(load_image(p, draft_size=256)).tobytes()
        except SkipItem as e:
            return str(e)

    serial = [outcome(p) for p in paths]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(outcome, paths)) == serial


def test_bytes_in_memory_decode_like_files(awkward, broken):
    """An upload's bytes (a BytesIO) get the same pixels or the same reason as the file."""
    import io

    d, expected = broken
    paths = [p for p in [*awkward.values(), *(d / n for n in expected)] if os.path.isfile(p)]

    def outcome(src, **kw):
        try:
            return np.asarray(load_image(src, draft_size=256, **kw)).tobytes()
        except SkipItem as e:
            return (e.kind, str(e))

    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        assert outcome(io.BytesIO(data)) == outcome(p), p
    small = jpeg_bytes(photo())
    assert outcome(io.BytesIO(small), max_bytes=100)[0] == "file_too_large"
    assert outcome(io.BytesIO(b""))[0] == "empty"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_damaged_files_never_crash(tmp_path, fmt):
    """Random byte damage and cuts: always an RGB image or a SkipItem, never another error."""
    import io

    buf = io.BytesIO()
    photo((48, 40)).save(buf, fmt)
    good = buf.getvalue()
    rng = np.random.default_rng(0)
    kinds = set()
    for i in range(40):
        b = bytearray(good)
        if i % 4 == 0:
            b = b[: rng.integers(1, len(b))]
        else:
            for pos in rng.integers(0, len(b), size=1 + i % 5):
                b[pos] = rng.integers(0, 256)
        p = tmp_path / f"d{i}.{fmt.lower()}"
        p.write_bytes(bytes(b))
        try:
            im = load_image(p, draft_size=16)
            assert im.mode == "RGB" and im.size[0] > 0
        except SkipItem as e:
            assert e.kind in {"truncated", "corrupt", "not_an_image", "image_too_large"}, str(e)
            kinds.add(e.kind)
    assert kinds  # the damage was noticed at least sometimes


def test_a_jpeg_past_pillows_bomb_limit_is_read_reduced(tmp_path, monkeypatch):
    """A museum's 12000 x 16000 JPEG scan (192 MP) passed Pillow's decompression-bomb error
    limit (2 x ``Image.MAX_IMAGE_PIXELS``) and was skipped, although ``draft`` decodes it at 1/8
    for an embedding. Here Pillow's limit is lowered so that a small JPEG stands for the scan."""
    p = tmp_path / "scan.jpg"
    photo((320, 240)).save(p, quality=90)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 320 * 240 // 3)  # error above 2x: 51,200
    im = load_image(p, draft_size=40)
    assert im.mode == "RGB" and im.size == (80, 60)  # 1/4 by DCT scaling: both sides stay >= 40
    # whole, or a format that cannot be read reduced: still refused, with Pillow's numbers
    with pytest.raises(SkipItem, match=r"image too large \(0 megapixels in the header, limit 0\)") as e:
        load_image(p)
    assert e.value.kind == "image_too_large"
    q = tmp_path / "scan.png"
    photo((320, 240)).save(q)
    with pytest.raises(SkipItem, match="if it is a real scan, save a smaller copy, or a JPEG") as e:
        load_image(q, draft_size=40)
    assert e.value.kind == "image_too_large"
    monkeypatch.undo()  # Pillow's limit as shipped: mediacluster's own cap refuses, saying the size
    with pytest.raises(SkipItem, match=r"\(320x240 pixels, 0 megapixels, limit 0\): .* a JPEG \(read reduced\)"):
        load_image(q, max_pixels=1000)
    # what draft leaves is still held to mediacluster's own cap
    with pytest.raises(SkipItem, match="image too large") as e:
        load_image(p, draft_size=40, max_pixels=1000)


def test_a_tiff_cut_before_its_directory_is_called_truncated(tmp_path):
    """A scanner writes the TIFF directory after the pixels; a copy cut short was reported as
    "the TIFF header is damaged". Now: truncated."""
    p = tmp_path / "scan.tif"
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(p, compression="tiff_lzw")
    data = p.read_bytes()
    assert int.from_bytes(data[4:8], "little") > len(data) // 2  # libtiff, as a scanner, writes it last
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SkipItem, match=r"truncated image: the TIFF file ends early") as e:
        load_image(p)
    assert e.value.kind == "truncated"


def test_the_cli_does_not_print_pillows_bomb_warning_for_a_scan_it_reads(tmp_path):
    """A 99-megapixel scan made Pillow print "DecompressionBombWarning: ... could be decompression
    bomb DOS attack" mid-progress-bar, naming no file, for an image mediacluster then read within
    its own limits. Pillow's limit is lowered here so that a small photo stands for the scan."""
    import subprocess
    import sys

    d = tmp_path / "scans"
    d.mkdir()
    for i in range(2):
        photo((120, 100), seed=i).save(d / f"scan{i}.png")
    code = ("import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 8000\n"
            "from mediacluster.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "MEDIACLUSTER_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": ""}
    r = subprocess.run([sys.executable, "-c", code, "dups", str(d), "--out", str(tmp_path / "out"), "--no-embed"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "2 items" in r.stderr + r.stdout
    assert "DecompressionBombWarning" not in r.stderr


@pytest.mark.skipif(not __import__("PIL.features").features.check("jpg_2000"), reason="Pillow without OpenJPEG")
def test_a_jpeg2000_master_is_decoded_at_a_reduced_resolution_level(tmp_path, monkeypatch):
    """JPEG 2000, an archive's master format, was decoded whole (a 1600 x 1200 file: 1.4 s,
    against 0.08 s at 1/4); now at the smallest resolution level whose sides stay >= draft_size,
    never more levels than the codestream holds (OpenJPEG fails then), and past Pillow's bomb
    limit as a JPEG is."""
    a = np.asarray(photo((320, 256)))
    Image.fromarray(a).save(tmp_path / "master.jp2")  # OpenJPEG's default: 5 decomposition levels
    Image.fromarray(a).save(tmp_path / "few.jp2", num_resolutions=2)  # 1 level
    Image.fromarray(a).save(tmp_path / "raw.j2k")  # a bare codestream, no JP2 boxes
    whole = load_image(tmp_path / "master.jp2")
    assert whole.size == (320, 256)
    im = load_image(tmp_path / "master.jp2", draft_size=60)
    assert im.mode == "RGB" and im.size == (80, 64)  # 1/4; 1/8 would be 40 x 32
    ref = np.asarray(whole.resize((80, 64), Image.Resampling.BOX), dtype=float)
    assert np.abs(np.asarray(im, dtype=float) - ref).mean() < 12  # the same picture
    assert load_image(tmp_path / "few.jp2", draft_size=60).size == (160, 128)  # the one level it has
    assert load_image(tmp_path / "raw.j2k", draft_size=60).size == (80, 64)
    assert load_image(tmp_path / "master.jp2", draft_size=400).size == (320, 256)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 320 * 256 // 3)
    assert load_image(tmp_path / "master.jp2", draft_size=60).size == (80, 64)
