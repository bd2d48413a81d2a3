"""Build a museum archive's folder of scans from Imagenette (the archive helper's walkthrough).

    python benchmarks/archive_collection.py /tmp/archive/collection [--month2]

What a regional museum's digitisation share holds, made with Pillow (and OpenCV for the 48-bit
TIFFs Pillow does not write): 48-bit and 16-bit greyscale scans, multi-page TIFFs, CMYK and
YCCK JPEGs from a print workflow, EXIF-rotated camera JPEGs, GIF / BMP / PCX / ICO / PSD files,
sidecars (.xmp, .txt, .json), Thumbs.db, .DS_Store, AppleDouble ``._x.jpg`` files, names in NFD
next to NFC, spaces, a symbolic link loop, a read-only folder, an empty file, a truncated scan,
three huge scans (80, 99 and 192 megapixels), two JPEG 2000 masters and re-scans of ten prints (half resolution, a
crop, a greyscale scan). ``--month2`` adds next month's folder (30 more prints) for
``--carry-from``. Prints a count of files per format and mode. Data is never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(os.environ.get("MC_DATA", "/work/data")) / "imagenette" / "val"
CLASSES = ["n01440764", "n02102040", "n03028079", "n03394916", "n03417042", "n03888257"]
TOPIC = {"n01440764": "fish", "n02102040": "dog", "n03028079": "church", "n03394916": "horn",
         "n03417042": "truck", "n03888257": "parachute"}


def sources(per_class: int, skip: int = 0) -> list[tuple[str, Path]]:
    out = []
    for c in CLASSES:
        files = sorted((DATA / c).iterdir())[skip:skip + per_class]
        out += [(TOPIC[c], f) for f in files]
    # interleave the classes so every format gets every topic
    return [out[i * per_class + j] for j in range(per_class) for i in range(len(CLASSES))]


def save_psd(im: Image.Image, path: Path) -> None:
    """A flat RGB PSD (no layers, raw image data), as Photoshop's maximised-compatibility
    composite: Pillow reads it, nothing here writes it."""
    im = im.convert("RGB")
    w, h = im.size
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3)
    body = struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0)
    planes = b"".join(np.asarray(im)[:, :, k].tobytes() for k in range(3))
    path.write_bytes(head + body + planes)


def save_ycck(im: Image.Image, path: Path) -> None:
    """A YCCK JPEG (Adobe transform 2), as prepress software writes CMYK: the CMY channels are
    stored as YCbCr of (C, M, Y), inverted as Adobe's CMYK is; Pillow's decoder turns it back."""
    cmyk = np.asarray(im.convert("CMYK")).astype(np.uint8)
    ycc = np.asarray(Image.fromarray(cmyk[:, :, :3], "RGB").convert("YCbCr"))
    v = np.dstack([255 - ycc, cmyk[:, :, 3:]])
    Image.fromarray(v.astype(np.uint8), "CMYK").save(path, quality=92)
    b = bytearray(path.read_bytes())
    i = b.find(b"Adobe")
    b[i + 11] = 2
    path.write_bytes(bytes(b))


def exif_rotated(im: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """Pixels as a camera held sideways stores them, and the EXIF tag that puts them upright."""
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    stored = im.transpose(undo[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return stored, exif.tobytes()


def build(root: Path) -> Counter:
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    src = sources(30)
    it = iter(src)
    made: Counter = Counter()

    def take(n):
        return [next(it) for _ in range(n)]

    def note(path: Path):
        with Image.open(path) as im:
            made[f"{im.format} {im.mode}" + (f" x{im.n_frames}" if getattr(im, "n_frames", 1) > 1 else "")] += 1

    d = root / "1962 flatbed scans"
    d.mkdir(exist_ok=True)
    for k, (topic, f) in enumerate(take(20)):  # 48-bit RGB TIFF (LZW), as a flatbed saves them
        a = np.asarray(Image.open(f).convert("RGB")).astype(np.uint16) * 257
        p = d / f"{topic} scan {k:03d}.tif"
        cv2.imwrite(str(p), a[:, :, ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 5])
        note(p)
    d = root / "glass negatives"
    d.mkdir(exist_ok=True)
    for k, (topic, f) in enumerate(take(15)):  # 16-bit greyscale PNG (I;16)
        a = np.asarray(Image.open(f).convert("L")).astype(np.uint16) * 257
        p = d / f"neg_{topic}_{k:03d}.png"
        Image.fromarray(a).save(p)
        note(p)
    d = root / "print workflow"
    d.mkdir(exist_ok=True)
    for k, (topic, f) in enumerate(take(15)):
        p = d / f"{topic}-cmyk-{k:03d}.jpg"
        Image.open(f).convert("RGB").convert("CMYK").save(p, quality=90)
        note(p)
    for k, (topic, f) in enumerate(take(6)):
        p = d / f"{topic}-ycck-{k:03d}.jpg"
        save_ycck(Image.open(f).convert("RGB"), p)
        note(p)
    d = root / "camera" / "2009"
    d.mkdir(parents=True, exist_ok=True)
    for k, (topic, f) in enumerate(take(24)):
        orient = (6, 8, 3)[k % 3]
        stored, exif = exif_rotated(Image.open(f).convert("RGB"), orient)
        p = d / f"IMG_{4000 + k} {topic}.JPG"
        stored.save(p, quality=90, exif=exif)
        note(p)
    d = root / "documents"
    d.mkdir(exist_ok=True)
    for k in range(5):  # multi-page TIFFs: a letter scanned page by page
        pages = [Image.open(f).convert("L") for _, f in take(3)]
        p = d / f"letter {k:02d}.tiff"
        pages[0].save(p, save_all=True, append_images=pages[1:], compression="tiff_deflate")
        note(p)
    d = root / "old formats"
    d.mkdir(exist_ok=True)
    for fmt, n in (("gif", 8), ("bmp", 8), ("pcx", 6), ("ico", 4), ("psd", 4)):
        for k, (topic, f) in enumerate(take(n)):
            im = Image.open(f).convert("RGB")
            p = d / f"{topic}_{k:02d}.{fmt}"
            if fmt == "psd":
                save_psd(im, p)
            elif fmt == "gif":
                im.convert("P", palette=Image.Palette.ADAPTIVE).save(p)
            elif fmt == "ico":
                im.resize((256, 256)).save(p, sizes=[(256, 256), (48, 48)])
            else:
                im.save(p)
            note(p)
    d = root / "Mac share"
    d.mkdir(exist_ok=True)
    for k, (topic, f) in enumerate(take(12)):
        name = f"Gemeindehaus Zürich {k:02d} {topic}.jpg"
        form = "NFD" if k % 2 else "NFC"
        p = d / unicodedata.normalize(form, name)
        Image.open(f).convert("RGB").save(p, quality=90)
        note(p)
        if k < 3:  # the Finder's AppleDouble companion: binary junk under a .jpg name
            (d / f"._{p.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    (d / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    rest = list(it)
    d = root / "prints"
    d.mkdir(exist_ok=True)
    for k, (topic, f) in enumerate(rest):
        p = d / f"print {k:03d} {topic}.jpg"
        Image.open(f).convert("RGB").save(p, quality=92)
        note(p)
        (d / f"print {k:03d} {topic}.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    (d / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500))
    (d / "catalogue notes.txt").write_text("box 12, donated 1987\n")
    (d / "catalogue.json").write_text(json.dumps({"box": 12}))
    # re-scans of ten prints: half resolution (PNG), a 90% crop (JPEG), a greyscale TIFF
    d = root / "rescans"
    d.mkdir(exist_ok=True)
    for k in range(10):
        topic, f = rest[k]
        im = Image.open(f).convert("RGB")
        w, h = im.size
        im.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(d / f"print {k:03d} half.png")
        im.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(d / f"print {k:03d} crop.jpg", quality=85)
        im.convert("L").save(d / f"print {k:03d} grey.tif")
        for s in ("half.png", "crop.jpg", "grey.tif"):
            note(d / f"print {k:03d} {s}")
    # huge scans of prints 10-12: 80 MP TIFF, 99 MP JPEG, 192 MP JPEG (past Pillow's bomb error)
    d = root / "large format"
    d.mkdir(exist_ok=True)
    for k, (size, ext) in enumerate((((8000, 10000), "tif"), ((9000, 11000), "jpg"), ((12000, 16000), "jpg"))):
        topic, f = rest[10 + k]
        im = Image.open(f).convert("RGB")
        big = im.resize(size if im.width <= im.height else size[::-1], Image.Resampling.BILINEAR)
        p = d / f"print {10 + k:03d} {size[0] * size[1] // 10**6}MP.{ext}"
        big.save(p, **({"quality": 90} if ext == "jpg" else {}))
        del big
        made[f"{ext.upper()} RGB huge"] += 1
    # JPEG 2000 preservation masters of prints 13-14 (4000 x 5000, 2000 x 2500), where Pillow has OpenJPEG
    from PIL import features

    if features.check("jpg_2000"):
        d = root / "preservation masters"
        d.mkdir(exist_ok=True)
        for k, size in enumerate(((4000, 5000), (2000, 2500))):
            topic, f = rest[13 + k]
            im = Image.open(f).convert("RGB")
            p = d / f"print {13 + k:03d} master.jp2"
            im.resize(size if im.width <= im.height else size[::-1], Image.Resampling.BILINEAR).save(p)
            note(p)
    # damage
    d = root / "to sort"
    d.mkdir(exist_ok=True)
    (d / "empty.jpg").write_bytes(b"")
    whole = (root / "prints" / f"print 013 {rest[13][0]}.jpg").read_bytes()
    (d / "truncated scan.jpg").write_bytes(whole[: len(whole) // 2])
    tif = next((root / "1962 flatbed scans").glob("*.tif")).read_bytes()
    (d / "truncated scan.tif").write_bytes(tif[: len(tif) // 3])
    loop = d / "loop"
    if not loop.is_symlink():
        loop.symlink_to("..")
    ro = root / "donations (read-only)"
    ro.mkdir(exist_ok=True)
    for k, (topic, f) in enumerate(sources(2, skip=50)):
        Image.open(f).convert("RGB").save(ro / f"donation {k:02d} {topic}.jpg", quality=90)
        made["JPEG RGB"] += 1
    os.chmod(ro, 0o555)
    return made


def month2(root: Path) -> Counter:
    d = root / "2027-01 new accessions"
    d.mkdir(parents=True, exist_ok=True)
    made: Counter = Counter()
    for k, (topic, f) in enumerate(sources(5, skip=70)):
        im = Image.open(f).convert("RGB")
        if k % 2:
            a = np.asarray(im).astype(np.uint16) * 257
            import cv2

            cv2.imwrite(str(d / f"accession {k:03d} {topic}.tif"), a[:, :, ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 5])
            made["TIFF RGB (48-bit)"] += 1
        else:
            im.save(d / f"accession {k:03d} {topic}.jpg", quality=90)
            made["JPEG RGB"] += 1
    return made


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--month2", action="store_true")
    a = ap.parse_args()
    counts = month2(a.root) if a.month2 else build(a.root)
    for k, v in sorted(counts.items()):
        print(f"{v:4d}  {k}")
    print(f"{sum(counts.values()):4d}  files made")
