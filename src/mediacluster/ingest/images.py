"""Decode an image file into an RGB PIL image, or explain why not."""

from __future__ import annotations

import os
import warnings

from PIL import Image, ImageFile, ImageOps

from . import SkipItem

# Images with more pixels than this are refused (decompression bombs). 16k x 16k.
MAX_PIXELS = 16384 * 16384
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False


def load_image(path: str, draft_size: int | None = None) -> Image.Image:
    """Open ``path`` as an RGB image.

    EXIF orientation is applied; palette, CMYK, greyscale, 16-bit and alpha images become RGB
    (alpha composited on white); animated images give their first frame. ``draft_size`` lets JPEG
    decoding shrink by DCT scaling to at least that short side, which is much faster for large
    photos. Raises ``SkipItem`` with a reason for anything unusable.
    """
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise SkipItem(f"cannot read file: {e.strerror or e}") from None
    if size == 0:
        raise SkipItem("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise SkipItem(f"image too large ({w}x{h} pixels, limit {MAX_PIXELS})")
                if getattr(im, "is_animated", False):
                    im.seek(0)
                if draft_size and im.format == "JPEG":
                    im.draft("RGB", (draft_size, draft_size))
                im.load()
                return to_rgb(im)
    except SkipItem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SkipItem(f"image too large (decompression bomb): {e}") from None
    except Image.UnidentifiedImageError:
        raise SkipItem("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise SkipItem(f"truncated image: {msg}") from None
        raise SkipItem(f"corrupt image: {msg}") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, applying EXIF orientation."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not lose the picture
        pass
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype("uint8")
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "F":
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        return Image.fromarray(a.astype("uint8"), "L").convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV, ...
    return im.convert("RGB")
