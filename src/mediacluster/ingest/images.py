"""Decode an image file into an 8-bit RGB PIL image, or say in plain words why not.

Every failure becomes ``SkipItem(reason)`` with a distinct, human-readable reason (and a short
machine code in ``SkipItem.kind``):

========================  ==============================================================
kind                      reason starts with
========================  ==============================================================
``not_found``             ``file not found``
``unreadable``            ``cannot read file`` (permissions, I/O error)
``not_a_file``            ``not a regular file`` (directory, FIFO, device named *.jpg)
``empty``                 ``empty file (0 bytes)``
``file_too_large``        ``file too large`` (byte-size cap, checked before opening)
``image_too_large``       ``image too large`` (pixel cap from the header: decompression bomb)
``not_an_image``          ``not an image`` (text, HTML, unknown format)
``truncated``             ``truncated image``
``corrupt``               ``corrupt image``
``unsupported``           ``unsupported image mode``
========================  ==============================================================

Decoding is cheap on purpose: the file is opened once, the size cap comes from ``fstat``, the
pixel cap from the header (nothing is decoded or allocated for a 30000 x 30000 header), JPEGs
are decoded at a reduced scale with ``draft`` when the caller only needs a small image, and no
conversion copies the pixels more than needed. The function touches no global state (no PIL
settings, no warning filters), so it is safe to call from many threads at once.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import threading
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import SkipItem

#: Largest decoded image accepted, in pixels (after JPEG draft scaling). 120 megapixels as
#: 8-bit RGB is 360 MB; bigger non-JPEG images are almost always decompression bombs or scans
#: that would not help an embedding computed at 224 px anyway. PIL itself refuses headers
#: above 2 x ``PIL.Image.MAX_IMAGE_PIXELS`` (179 MP by default) before we even look.
MAX_PIXELS = 120_000_000
#: Largest file accepted on disk, in bytes (checked before anything is read).
MAX_FILE_BYTES = 512 * 1024 * 1024
#: Decoded pixels allowed in flight at once across every decoding thread of the process (the
#: embedding's workers, a service's requests): a caps per image is not enough when 8 workers
#: each decode a 110-megapixel PNG. ``$MEDIACLUSTER_DECODE_PIXELS`` overrides it. An image
#: larger than the budget is decoded alone.
MAX_PIXELS_IN_FLIGHT = 120_000_000

# (signature, format name) used only to word the reason when PIL cannot identify a file.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

_DRAFTABLE = ("JPEG", "MPO")


class PixelBudget:
    """A shared allowance of decoded pixels (a counting semaphore measured in pixels).

    ``acquire(n)`` blocks until ``n`` more pixels fit (an ``n`` above the capacity waits until
    nothing else is held, then takes the whole budget) and returns what it took, for
    ``release``."""

    def __init__(self, pixels: int):
        self.capacity = max(1, int(pixels))
        self.used = 0
        self.peak = 0  # the most ever held at once (for tests and measurements)
        self._cond = threading.Condition()

    def acquire(self, pixels: int) -> int:
        take = max(0, min(int(pixels), self.capacity))
        with self._cond:
            while self.used and self.used + take > self.capacity:
                self._cond.wait()
            self.used += take
            self.peak = max(self.peak, self.used)
        return take

    def release(self, taken: int) -> None:
        with self._cond:
            self.used -= taken
            self._cond.notify_all()


def _budget_from_env() -> PixelBudget:
    try:
        return PixelBudget(int(os.environ.get("MEDIACLUSTER_DECODE_PIXELS", MAX_PIXELS_IN_FLIGHT)))
    except ValueError:
        return PixelBudget(MAX_PIXELS_IN_FLIGHT)


#: The process-wide budget ``decoding()`` uses by default.
DECODE_BUDGET = _budget_from_env()
_scope = threading.local()


@contextmanager
def decoding(budget: PixelBudget | None = None):
    """Within this block, every :func:`load_image` in this thread holds its decoded pixels
    from ``budget`` (default: the process-wide ``DECODE_BUDGET``) until the block ends, i.e.
    until the caller has turned the big decoded image into its small model input. Decoding
    threads use it around ``encoder.prepare(path)``."""
    budget = DECODE_BUDGET if budget is None else budget
    held: list[int] = []
    prev = getattr(_scope, "frame", None)
    _scope.frame = (budget, held)
    try:
        yield budget
    finally:
        _scope.frame = prev
        if sum(held) >= TRIM_PIXELS:
            _trim()  # before the release: the next image must not meet this one's memory
        for taken in held:
            budget.release(taken)


#: After an image of this many pixels is done, free heap memory goes back to the system: each
#: decoding thread has its own malloc arena, and without this every arena keeps the largest
#: image it ever decoded (8 workers -> 8 images resident although one is in flight).
TRIM_PIXELS = 4_000_000


def _trim() -> None:
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes
            import ctypes.util

            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def _hold_pixels(pixels: int) -> None:
    frame = getattr(_scope, "frame", None)
    if frame is not None:
        budget, held = frame
        held.append(budget.acquire(pixels))


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def file_too_large_reason(size: int, limit: int) -> str:
    return f"file too large ({_mb(size)} on disk, limit {_mb(limit)})"


def _sniff(head: bytes) -> str | None:
    for sig, name in _SIGNATURES:
        if head.startswith(sig):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _unidentified_reason(f) -> tuple[str, str]:
    """Word the reason for a file PIL cannot identify, from its first and last bytes."""
    f.seek(0)
    head = f.read(512)
    fmt = _sniff(head)
    if fmt is not None:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 32))
        tail = f.read()
        ended = {"JPEG": b"\xff\xd9" in tail, "PNG": b"IEND" in tail}.get(fmt, True)
        if fmt == "TIFF" and len(head) >= 8:  # the first directory's offset lies past the end
            ended = int.from_bytes(head[4:8], "little" if head[:2] == b"II" else "big") + 2 <= size
        if not ended:
            return f"truncated image: the {fmt} file ends early (header incomplete)", "truncated"
        return f"corrupt image: the {fmt} header is damaged", "corrupt"
    text = head.lstrip()
    if text[:1] == b"<" and b"html" in text[:200].lower():
        return "not an image: the file is an HTML page", "not_an_image"
    try:  # incremental: a multi-byte character cut at byte 512 is not an error
        decoded = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        if decoded and all(c.isprintable() or c in "\r\n\t" for c in decoded.rstrip("\x00")):
            return "not an image: the file contains text", "not_an_image"
    except UnicodeDecodeError:
        pass
    return "not an image: unrecognised file format", "not_an_image"


def load_image(
    path: str | os.PathLike | BinaryIO,
    draft_size: int | None = None,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> Image.Image:
    """Open ``path`` as an 8-bit RGB image.

    ``path`` may also be a seekable binary file object holding the file's bytes (an upload the
    service received: ``io.BytesIO(data)``); the same checks apply, the size cap to its length.

    EXIF orientation is applied; palette (with or without transparency), CMYK, greyscale, LA,
    16-bit and alpha images become RGB (transparent areas composited on white); animated GIF /
    WebP / multi-page TIFF give their first frame. ``draft_size`` lets JPEG decoding shrink by
    DCT scaling (1/2, 1/4, 1/8) to the smallest size whose sides stay >= ``draft_size``, which
    is several times faster for camera photos; a JPEG 2000 is decoded at the smallest of its
    resolution levels whose sides stay >= ``draft_size`` (a master scan: 15x faster at 1/4).
    ``max_pixels`` / ``max_bytes`` default to ``MAX_PIXELS`` / ``MAX_FILE_BYTES``.

    Raises ``SkipItem`` with a human-readable reason for anything unusable (see module doc).
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    if hasattr(path, "read"):
        return _load_stream(path, draft_size, max_pixels, max_bytes)
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SkipItem("file not found", kind="not_found") from None
    except OSError as e:
        raise SkipItem(f"cannot read file: {e.strerror or e}", kind="unreadable") from None
    # Refuse FIFOs, devices and directories before open(): opening a FIFO would block forever.
    if not stat.S_ISREG(st.st_mode):
        raise SkipItem("not a regular file", kind="not_a_file")
    if st.st_size == 0:
        raise SkipItem("empty file (0 bytes)", kind="empty")
    if st.st_size > max_bytes:
        raise SkipItem(file_too_large_reason(st.st_size, max_bytes), kind="file_too_large")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise SkipItem(f"cannot read file: {e.strerror or e}", kind="unreadable") from None
    with f:
        return _open_decode(f, draft_size, max_pixels)


def _load_stream(f: BinaryIO, draft_size: int | None, max_pixels: int, max_bytes: int) -> Image.Image:
    """``load_image`` on an open binary stream (the caller owns and closes it)."""
    try:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
    except (OSError, ValueError) as e:
        raise SkipItem(f"cannot read file: {e}", kind="unreadable") from None
    if size == 0:
        raise SkipItem("empty file (0 bytes)", kind="empty")
    if size > max_bytes:
        raise SkipItem(file_too_large_reason(size, max_bytes), kind="file_too_large")
    return _open_decode(f, draft_size, max_pixels)


def _open_decode(f: BinaryIO, draft_size: int | None, max_pixels: int) -> Image.Image:
    """Identify, check and decode the image in the open file ``f``."""
    try:
        im = Image.open(f)
    except Image.DecompressionBombError as e:
        im = _open_large_jpeg(f) if draft_size else None
        if im is None:
            raise _bomb(e) from None
    except UnidentifiedImageError:
        reason, kind = _unidentified_reason(f)
        raise SkipItem(reason, kind=kind) from None
    except Exception as e:  # OSError, SyntaxError, struct.error, ... from a damaged header
        raise _decode_error(e) from None
    # ``im`` is not closed here on purpose: the caller owns ``f``, and the returned image may
    # be ``im`` itself when it is already RGB.
    try:
        return _decode(im, draft_size, max_pixels)
    except SkipItem:
        raise
    except Image.DecompressionBombError as e:
        raise _bomb(e) from None
    except MemoryError:
        raise SkipItem("image too large: out of memory while decoding", kind="image_too_large",
                       lasting=False) from None
    except Exception as e:  # PIL plugins raise many types (KeyError, TypeError...) on odd files
        raise _decode_error(e) from None


def _open_large_jpeg(f: BinaryIO) -> Image.Image | None:
    """A JPEG (or JPEG 2000) past Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``
    x 2: 179 megapixels by default), opened without that check, for a caller that decodes it
    reduced (``draft_size``): a museum's 12000 x 16000 scan is read by DCT scaling at 1/8 (1500 x
    2000), a JPEG 2000 master at its resolution levels, and ``_decode`` still holds what is left
    to ``max_pixels``. None for any other file."""
    from PIL import Jpeg2KImagePlugin, JpegImagePlugin

    try:
        f.seek(0)
        head = f.read(12)
        f.seek(0)
        if head[:3] == b"\xff\xd8\xff":
            return JpegImagePlugin.JpegImageFile(f)
        if head[:4] == b"\xff\x4f\xff\x51" or head == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
            return Jpeg2KImagePlugin.Jpeg2KImageFile(f)
        return None
    except Exception:  # noqa: BLE001 - a damaged header, no codec: the bomb reason stands
        return None


#: what a person with a genuine large scan can do (a museum's 200-megapixel TIFF is no attack)
_TOO_LARGE_ADVICE = "if it is a real scan, save a smaller copy, or a JPEG (read reduced)"


def _bomb(e: BaseException) -> SkipItem:
    """PIL's own decompression-bomb refusal (raised by ``Image.open`` from the header)."""
    nums = re.findall(r"\d+", str(e))
    if len(nums) >= 2:
        msg = (f"image too large ({int(nums[0]) / 1e6:.0f} megapixels in the header, limit "
               f"{int(nums[1]) / 1e6:.0f}): refused as a possible decompression bomb; {_TOO_LARGE_ADVICE}")
    else:
        msg = f"image too large: refused as a possible decompression bomb ({e})"
    return SkipItem(msg, kind="image_too_large")


def _decode_error(e: BaseException) -> SkipItem:
    msg = str(e) or type(e).__name__
    if not isinstance(e, OSError | SyntaxError | ValueError | EOFError):
        msg = f"{type(e).__name__}: {msg}"
    low = msg.lower()
    if "truncated" in low or isinstance(e, EOFError) or "unexpected end" in low:
        return SkipItem(f"truncated image: {msg}", kind="truncated")
    return SkipItem(f"corrupt image: {msg}", kind="corrupt")


def _decode(im: Image.Image, draft_size: int | None, max_pixels: int) -> Image.Image:
    w, h = im.size
    if w <= 0 or h <= 0:
        raise SkipItem(f"corrupt image: header says {w}x{h} pixels", kind="corrupt")
    # Animated GIF/WebP, multi-page TIFF: Image.open is positioned on the first frame already.
    if draft_size and im.format in _DRAFTABLE:
        im.draft("RGB" if im.mode in ("RGB", "YCbCr") else im.mode, (draft_size, draft_size))
    dw, dh = im.size  # after draft: what will actually be decoded
    if draft_size and im.format == "JPEG2000":
        k = _j2k_reduce(im, draft_size)
        if k:  # OpenJPEG decodes only the resolution levels needed: 1/2**k of each side
            im.reduce = k
            dw, dh = (w + (1 << k >> 1)) >> k, (h + (1 << k >> 1)) >> k  # as Pillow's load sizes it
    if dw * dh > max_pixels:
        raise SkipItem(
            f"image too large ({w}x{h} pixels, {w * h / 1e6:.0f} megapixels, limit {max_pixels / 1e6:.0f}): "
            f"refused from the header, possibly a decompression bomb; {_TOO_LARGE_ADVICE}",
            kind="image_too_large",
        )
    _hold_pixels(dw * dh)  # waits while other threads hold the pixel budget (see decoding())
    im.load()
    return to_rgb(im)


def _j2k_reduce(im: Image.Image, draft_size: int) -> int:
    """How many resolution levels a JPEG 2000 image (an archive's master scan) can be decoded
    below full size with both sides staying >= ``draft_size``: at most the decomposition levels
    of its codestream's COD marker (asking OpenJPEG for more fails). 0 when they cannot be read."""
    w, h = im.size
    k, levels = 0, _j2k_levels(im)
    while k < levels and min(w, h) >> (k + 1) >= draft_size:
        k += 1
    return k


def _j2k_levels(im: Image.Image) -> int:
    """The decomposition levels in the COD marker of ``im``'s codestream (0 when not found)."""
    fp = getattr(im, "fp", None)
    if fp is None or not im.tile:
        return 0
    pos = fp.tell()
    try:
        fp.seek(im.tile[0][2])
        soc = fp.read(2)
        for _ in range(32):  # a JP2 file: the codestream is the content of its 'jp2c' box
            if soc == b"\xff\x4f":  # SOC: the codestream starts here
                break
            head = soc + fp.read(6)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if len(head) < 8:
                return 0
            if size == 1:  # a 64-bit length follows
                size = int.from_bytes(fp.read(8), "big") - 8
            if kind == b"jp2c":
                soc = fp.read(2)
                continue
            if size < 8:
                return 0
            fp.seek(size - 8, os.SEEK_CUR)
            soc = fp.read(2)
        if soc != b"\xff\x4f":
            return 0
        for _ in range(64):  # SIZ, then COD in the main header; stop at the first tile (SOT)
            marker, length = fp.read(2), int.from_bytes(fp.read(2), "big")
            if len(marker) < 2 or marker == b"\xff\x90" or length < 2:
                return 0
            if marker == b"\xff\x52":
                seg = fp.read(length - 2)
                return seg[5] if len(seg) > 5 else 0
            fp.seek(length - 2, os.SEEK_CUR)
        return 0
    except (OSError, ValueError, IndexError, TypeError):
        return 0
    finally:
        fp.seek(pos)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not lose the picture
        return 1


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert a loaded PIL image of any mode to 8-bit RGB, applying EXIF orientation."""
    if _orientation(im) != 1:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:
            pass
    mode = im.mode
    if mode in ("L", "RGB") and "transparency" in im.info:  # PNG tRNS: one transparent colour
        im, mode = im.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return im
    if mode == "P":
        # palette with a transparent index (or alpha palette) -> RGBA, else plain RGB
        if "transparency" in im.info or im.palette is not None and im.palette.mode == "RGBA":
            im, mode = im.convert("RGBA"), "RGBA"
        else:
            return im.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        return _gray_to_rgb(_scale16(im))
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        a = np.nan_to_num((a - lo) / (hi - lo if hi > lo else 1.0), nan=0.0) * 255.0
        return _gray_to_rgb(np.clip(a + 0.5, 0, 255).astype(np.uint8))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if mode != "LA":  # PA, premultiplied RGBa / La -> straight RGBA
            im = im.convert("RGBA")
        alpha = im.getchannel("A")
        rgb = im.getchannel("L").convert("RGB") if im.mode == "LA" else im.convert("RGB")
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(rgb, (0, 0), alpha)  # alpha-composite over white
        return white
    try:
        # L, 1, CMYK, YCbCr, RGBX, HSV, ...
        return im.convert("RGB")
    except ValueError:
        raise SkipItem(f"unsupported image mode {mode}", kind="unsupported") from None


def _scale16(im: Image.Image) -> np.ndarray:
    """16/32-bit integer greyscale -> uint8, scaled (not clipped) to the full 0-255 range.

    ``I;16*`` modes are 16-bit by definition: divide by 257 (65535 -> 255). Mode ``I`` (32-bit)
    carries no bit depth: values within 0..255 are kept, within 0..65535 are treated as 16-bit,
    anything else is min-max normalised.
    """
    a = np.asarray(im)
    if im.mode.startswith("I;16") and a.dtype.kind == "u":
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    a = a.astype(np.int64)
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return ((a + 128) // 257).astype(np.uint8)
    return ((a - lo) * 255 // max(hi - lo, 1)).astype(np.uint8)


def _gray_to_rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(a), "L").convert("RGB")
