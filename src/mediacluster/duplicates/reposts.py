"""Simulated reposts: the edits an image goes through when it is shared again.

Used by ``benchmarks/duplicates.py`` (to measure precision and recall per edit and choose the
default thresholds) and by the tests (each edit must be caught at the defaults), and useful to
anyone who wants to check the thresholds on their own images.

Each edit takes an 8-bit RGB PIL image and a ``numpy.random.Generator`` and returns the edited
image, the file format to save it in, and the parameters it drew (written next to the benchmark
figures). Ranges are those a social-media repost goes through:

==============  ===========================================================================
``copy``        the same bytes under another name (an exact duplicate)
``jpeg``        re-encoded as JPEG at quality 20-95
``resize``      scaled by 0.25x-2x (log-uniform), bilinear or Lanczos
``crop``        5-25% of the width and, independently, 5-25% of the height cut away, split
                at random between the two sides (so 10-44% of the area is lost)
``caption``     a meme caption bar (12-30% of the height, white or black, one or two lines of
                text) added above or below
``watermark``   semi-transparent "@name" text (45-75% opacity, 7-12% of the short side high)
                in a random corner
``flip``        mirrored left-right
``brightness``  brightness and contrast each scaled by 0.6-1.4
``border``      a phone-screenshot frame: the image on a white, black or grey screen with
                side margins of 0-6%, a status bar (8-20%) with the time on top and a likes
                line (8-25%) below
``grey``        converted to greyscale
``gif``         reduced to an adaptive 32-256 colour palette with dithering, saved as GIF
==============  ===========================================================================

Every edit except ``copy``, ``jpeg`` and ``gif`` is saved as JPEG at quality 90, as a platform
would re-encode an upload.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from ..errors import ParameterError

_WORDS = ("when", "you", "finally", "the", "monday", "me", "my", "cat", "nobody", "literally",
          "every", "time", "weekend", "coffee", "mood", "boss", "friends", "be", "like", "ok",
          "this", "is", "fine", "why", "again", "lol", "real", "tfw", "morning", "dog")
_SAVE_JPEG = {"format": "JPEG", "quality": 90}


def _font(px: int) -> ImageFont.ImageFont:
    """Pillow's built-in scalable font (FreeType), so no font file is needed."""
    return ImageFont.load_default(size=max(6, int(px)))


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(_WORDS, size=n)).upper()


def jpeg(im: Image.Image, rng: np.random.Generator):
    q = int(rng.integers(20, 96))
    return im, {"format": "JPEG", "quality": q}, {"quality": q}


def resize(im: Image.Image, rng: np.random.Generator):
    s = float(np.exp(rng.uniform(np.log(0.25), np.log(2.0))))
    method = "lanczos" if rng.random() < 0.5 else "bilinear"
    w, h = im.size
    size = (max(8, round(w * s)), max(8, round(h * s)))
    resample = Image.Resampling.LANCZOS if method == "lanczos" else Image.Resampling.BILINEAR
    return im.resize(size, resample), _SAVE_JPEG, {"scale": round(s, 3), "method": method}


def crop(im: Image.Image, rng: np.random.Generator):
    w, h = im.size
    fx, fy = rng.uniform(0.05, 0.25, size=2)
    cut_w, cut_h = round(w * fx), round(h * fy)
    left = int(rng.integers(0, cut_w + 1))
    top = int(rng.integers(0, cut_h + 1))
    box = (left, top, w - (cut_w - left), h - (cut_h - top))
    return im.crop(box), _SAVE_JPEG, {"cut_w": round(float(fx), 3), "cut_h": round(float(fy), 3)}


def caption(im: Image.Image, rng: np.random.Generator):
    w, h = im.size
    bar = max(8, round(h * rng.uniform(0.12, 0.30)))
    dark = bool(rng.random() < 0.3)
    where = "above" if rng.random() < 0.5 else "below"
    bg, fg = ((0, 0, 0), (255, 255, 255)) if dark else ((255, 255, 255), (0, 0, 0))
    out = Image.new("RGB", (w, h + bar), bg)
    out.paste(im, (0, bar if where == "above" else 0))
    lines = int(rng.integers(1, 3))
    font = _font(bar * 0.8 / (lines + 0.6))
    draw = ImageDraw.Draw(out)
    y0 = 0 if where == "above" else h
    text = "\n".join(_words(rng, int(rng.integers(2, 5))) for _ in range(lines))
    draw.multiline_text((w / 2, y0 + bar / 2), text, fill=fg, font=font, anchor="mm", align="center")
    return out, _SAVE_JPEG, {"bar": round(bar / h, 3), "where": where, "dark": dark}


def watermark(im: Image.Image, rng: np.random.Generator):
    w, h = im.size
    px = max(6, round(min(w, h) * rng.uniform(0.07, 0.12)))
    alpha = int(255 * rng.uniform(0.45, 0.75))
    text = "@" + "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz_0123456789"), size=int(rng.integers(5, 11))))
    layer = Image.new("RGBA", im.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(px)
    corner = int(rng.integers(0, 4))
    margin = max(2, round(px * 0.4))
    x = margin if corner in (0, 2) else w - margin
    y = margin if corner in (0, 1) else h - margin
    anchor = ("l" if corner in (0, 2) else "r") + ("t" if corner in (0, 1) else "b")
    draw.text((x, y), text, font=font, anchor=anchor, fill=(255, 255, 255, alpha),
              stroke_width=max(1, px // 12), stroke_fill=(0, 0, 0, alpha // 2))
    out = Image.alpha_composite(im.convert("RGBA"), layer).convert("RGB")
    return out, _SAVE_JPEG, {"size": round(px / min(w, h), 3), "opacity": round(alpha / 255, 2),
                             "corner": corner}


def flip(im: Image.Image, rng: np.random.Generator):
    return ImageOps.mirror(im), _SAVE_JPEG, {}


def brightness(im: Image.Image, rng: np.random.Generator):
    b, c = rng.uniform(0.6, 1.4, size=2)
    out = ImageEnhance.Contrast(ImageEnhance.Brightness(im).enhance(b)).enhance(c)
    return out, _SAVE_JPEG, {"brightness": round(float(b), 3), "contrast": round(float(c), 3)}


def border(im: Image.Image, rng: np.random.Generator):
    w, h = im.size
    palette = [((255, 255, 255), (20, 20, 20)), ((0, 0, 0), (235, 235, 235)),
               ((28, 28, 30), (220, 220, 220)), ((240, 240, 240), (40, 40, 40))]
    bg, fg = palette[int(rng.integers(0, len(palette)))]
    side = round(w * rng.uniform(0.0, 0.06))
    top = max(6, round(h * rng.uniform(0.08, 0.20)))
    bottom = max(6, round(h * rng.uniform(0.08, 0.25)))
    out = Image.new("RGB", (w + 2 * side, h + top + bottom), bg)
    out.paste(im, (side, top))
    draw = ImageDraw.Draw(out)
    hh, mm = int(rng.integers(0, 24)), int(rng.integers(0, 60))
    draw.text((side + 4, top * 0.3), f"{hh:02d}:{mm:02d}", fill=fg, font=_font(top * 0.35), anchor="lm")
    draw.text((side + 4, top + h + bottom * 0.4), f"{int(rng.integers(2, 99999))} likes",
              fill=fg, font=_font(bottom * 0.3), anchor="lm")
    return out, _SAVE_JPEG, {"side": round(side / w, 3), "top": round(top / h, 3),
                             "bottom": round(bottom / h, 3), "background": list(bg)}


def grey(im: Image.Image, rng: np.random.Generator):
    return im.convert("L"), _SAVE_JPEG, {}


def gif(im: Image.Image, rng: np.random.Generator):
    colours = int(rng.choice([32, 64, 128, 256]))
    out = im.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    return out, {"format": "GIF"}, {"colours": colours}


#: name -> edit. ``copy`` is handled by ``make_repost`` (it copies bytes, no decoding).
TRANSFORMS: dict[str, Callable] = {
    "jpeg": jpeg, "resize": resize, "crop": crop, "caption": caption, "watermark": watermark,
    "flip": flip, "brightness": brightness, "border": border, "grey": grey, "gif": gif,
}
#: Every kind of repost, ``copy`` first.
KINDS: tuple[str, ...] = ("copy", *TRANSFORMS)

_SUFFIX = {"JPEG": ".jpg", "GIF": ".gif", "PNG": ".png"}


def make_repost(src: str | os.PathLike, dst_stem: str | os.PathLike, kind: str,
                rng: np.random.Generator) -> tuple[str, dict]:
    """Write a ``kind`` repost of image ``src`` to ``dst_stem`` + a suffix; return (path, params).

    ``src`` is decoded with the package's safe loader (``mediacluster.ingest.load_image``), so a
    transparent PNG is composited on white first, as every other part of the package sees it.
    """
    from ..ingest import load_image

    Path(dst_stem).parent.mkdir(parents=True, exist_ok=True)
    if kind == "copy":
        dst = str(dst_stem) + Path(src).suffix.lower()
        shutil.copyfile(src, dst)
        return dst, {}
    if kind not in TRANSFORMS:
        raise ParameterError(f"unknown repost kind {kind!r}; choose from {', '.join(KINDS)}")
    im = load_image(src)
    out, save, params = TRANSFORMS[kind](im, rng)
    save = dict(save)
    dst = str(dst_stem) + _SUFFIX[save["format"]]
    out.save(dst, **save)
    return dst, params


__all__ = ["TRANSFORMS", "KINDS", "make_repost"]
