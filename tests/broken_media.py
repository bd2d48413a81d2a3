"""Build awkward and broken image files for the decoding and CLI tests.

Every file is made here from scratch (PIL or hand-written PNG chunks), so the tests need no
fixtures on disk and show exactly what each file contains.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes | None) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit RGB, nor lie about the size).

    ``raw_rows`` is the filtered scanline data (each row starts with filter byte 0); ``None``
    writes a tiny IDAT that does not match the header (for decompression-bomb headers).
    """

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(raw_rows if raw_rows is not None else b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rgb16_png(pixels: np.ndarray) -> bytes:
    """(h, w, 3) uint16 -> 16-bit RGB PNG bytes."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))
    return png_bytes(w, h, 16, 2, rows)


def photo(size=(64, 48), seed=0) -> Image.Image:
    """A smooth colourful RGB picture (compresses like a photo, unlike noise)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    a = np.clip(a + rng.integers(-8, 8, a.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def make_broken(d: Path) -> dict[str, str]:
    """Write the unusable files into ``d``; returns {file name: expected SkipItem kind}."""
    d.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(photo((256, 192)))
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("This is a text file that someone named .jpg\nline two\n")
    (d / "bomb.png").write_bytes(png_bytes(30000, 30000, 8, 2, None))
    # a PNG whose first chunk has a wrong checksum
    ok = io.BytesIO()
    photo((32, 32)).save(ok, "PNG")
    b = bytearray(ok.getvalue())
    b[29] ^= 0xFF  # inside the IHDR CRC
    (d / "badcrc.png").write_bytes(bytes(b))
    return {
        "truncated.jpg": "truncated",
        "empty.jpg": "empty",
        "notes.jpg": "not_an_image",
        "bomb.png": "image_too_large",
        "badcrc.png": "corrupt",
    }


def make_awkward(d: Path) -> dict[str, Path]:
    """Write usable but awkward images into ``d``; returns {short name: path}."""
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    p = d / "cmyk.jpg"  # pure red in CMYK
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(p, quality=95)
    out["cmyk"] = p

    p = d / "grey16.png"  # horizontal 16-bit ramp 0 .. 65535
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (8, 1))).save(p)
    out["grey16"] = p

    p = d / "rgb16.png"  # 16-bit RGB: (65535, 32896, 0)
    p.write_bytes(rgb16_png(np.tile(np.array([65535, 32896, 0], np.uint16), (8, 8, 1))))
    out["rgb16"] = p

    p = d / "la.png"  # three columns: black fully transparent / black half / 200 opaque
    la = np.zeros((8, 3, 2), np.uint8)
    la[:, 0] = (0, 0)
    la[:, 1] = (0, 128)
    la[:, 2] = (200, 255)
    Image.fromarray(la, "LA").save(p)
    out["la"] = p

    p = d / "rgba.png"  # red, transparent on the left half
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 4:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(p)
    out["rgba"] = p

    p = d / "palette.png"  # palette: index 0 blue, index 1 green, no transparency
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    im.paste(1, (4, 0, 8, 8))
    im.save(p)
    out["palette"] = p

    p = d / "palette_trns.png"  # same palette, index 0 transparent
    im.save(p, transparency=0)
    out["palette_trns"] = p

    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    p = d / "anim.gif"  # first frame red
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["anim_gif"] = p
    p = d / "anim.webp"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    out["anim_webp"] = p
    p = d / "anim.png"  # APNG
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    out["anim_png"] = p
    p = d / "pages.tif"  # a multi-page TIFF (a scanned document's pages)
    frames[0].save(p, save_all=True, append_images=frames[1:])
    out["pages_tif"] = p

    # EXIF orientation 6 (camera held sideways): stored 40x20, left half red, right half blue;
    # displayed rotated 90 degrees clockwise, i.e. 20x40 with red on top.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = d / "rotated.jpg"
    Image.fromarray(a).save(p, quality=95, exif=exif.tobytes())
    out["rotated"] = p

    p = d / "big.jpg"  # a camera-sized JPEG for the draft (reduced-scale decoding) path
    photo((2000, 1500)).save(p, quality=85)
    out["big"] = p
    return out
