"""Thumbnails for the report: made once, in parallel, cached by content.

A thumbnail's file name is a hash of the source file's bytes and the thumbnail size, so renamed
or copied files reuse it and an edited file gets a new one. Existing thumbnails are never
re-made; a report over the same collection (or a re-run) only makes the missing ones.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..fileio import hash_file
from ..progress import progress_bar

THUMB_EXT = ".jpg"


def content_key(path: str | os.PathLike, tag) -> str | None:
    """File name stem for a derived file: the content hash plus ``tag`` (e.g. the thumbnail
    size); ``None`` when the file can't be read."""
    try:
        return f"{hash_file(path)}-{tag}"
    except OSError:
        return None


def _make_one(src: str, dst: Path, size: int) -> bool:
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as im:
            im.draft("RGB", (size * 2, size * 2))  # JPEG: decode at reduced scale, much faster
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGBA")
                bg = Image.new("RGB", im.size, (255, 255, 255))
                bg.paste(im, mask=im.split()[-1])
                im = bg
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            im.convert("RGB").save(tmp, "JPEG", quality=82, optimize=True)
            os.replace(tmp, dst)
        return True
    except Exception:  # unreadable images simply have no thumbnail
        return False


def make_thumbnails(paths: list[str | None], out_dir: str | os.PathLike, size: int = 96,
                    workers: int | None = None, progress: bool = True) -> list[str | None]:
    """Thumbnail file names (relative to ``out_dir``) for ``paths``; ``None`` where impossible."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(8, os.cpu_count() or 1))

    def job(p):
        if not p:
            return None
        key = content_key(p, size)
        if key is None:
            return None
        name = key + THUMB_EXT
        dst = out_dir / name
        if dst.exists() or _make_one(p, dst, size):
            return name
        return None

    out: list[str | None] = [None] * len(paths)
    with ThreadPoolExecutor(workers) as ex, progress_bar(len(paths), "thumbnails", "img",
                                                          disable=not progress) as bar:
        for i, r in enumerate(ex.map(job, paths, chunksize=64)):
            out[i] = r
            bar.update(1)
    return out
