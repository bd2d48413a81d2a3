"""Thumbnails for the report: made once, in parallel, cached by content.

A thumbnail's file name is a hash of the source file's bytes and the thumbnail size, so renamed
or copied files reuse it and an edited file gets a new one. Existing thumbnails are never
re-made; a report over the same collection (or a re-run) only makes the missing ones.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..fileio import atomic_path, hash_file, output_error
from ..progress import progress_bar

THUMB_EXT = ".jpg"


def content_key(path: str | os.PathLike, tag) -> str | None:
    """File name stem for a derived file: the content hash plus ``tag`` (e.g. the thumbnail
    size); ``None`` when the file can't be read."""
    try:
        return f"{hash_file(path)}-{tag}"
    except OSError:
        return None


def _make_one(src: str, dst: Path, size: int) -> str | None:
    """Make one thumbnail; None when done, else why the source gives none. A failure to
    *write* it (full disk, read-only folder) raises OutputError: that is not the image's fault."""
    from PIL import Image

    from ..ingest import SkipItem
    from ..ingest.images import load_image

    try:  # the loader the embedding used: same caps, same conversions, same reasons
        im = load_image(src, draft_size=size * 2)
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
    except SkipItem as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not cost the report
        return f"cannot make a thumbnail: {type(e).__name__}: {e}"
    buf = io.BytesIO()  # PIL writes straight to the file descriptor and misses short writes
    im.convert("RGB").save(buf, "JPEG", quality=82, optimize=True)
    with atomic_path(dst) as tmp, open(tmp, "wb") as f:
        f.write(buf.getvalue())  # Python's write: a full disk raises
    return None


def make_thumbnails(paths: list[str | None], out_dir: str | os.PathLike, size: int = 96,
                    workers: int | None = None, progress: bool = True,
                    failures: dict[int, str] | None = None) -> list[str | None]:
    """Thumbnail file names (relative to ``out_dir``) for ``paths``; ``None`` where impossible,
    with the reason in ``failures[index]`` when a dict is given. Raises OutputError when a
    thumbnail cannot be written."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(e, out_dir) from e
    workers = workers or max(1, min(8, os.cpu_count() or 1))

    def job(p):
        if not p:
            return None, None
        key = content_key(p, size)
        if key is None:
            return None, "cannot read file (moved or deleted since the run?)"
        name = key + THUMB_EXT
        dst = out_dir / name
        if dst.exists():
            return name, None
        why = _make_one(p, dst, size)
        return (name, None) if why is None else (None, why)

    out: list[str | None] = [None] * len(paths)
    with ThreadPoolExecutor(workers) as ex, progress_bar(len(paths), "thumbnails", "img",
                                                          disable=not progress) as bar:
        for i, (r, why) in enumerate(ex.map(job, paths, chunksize=64)):
            out[i] = r
            if why is not None and failures is not None:
                failures[i] = why
            bar.update(1)
    return out
