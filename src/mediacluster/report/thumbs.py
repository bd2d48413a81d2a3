"""Thumbnails for the report: made once, in parallel, cached by content.

A thumbnail's file name is a hash of the source file's bytes and the thumbnail size, so renamed
or copied files reuse it and an edited file gets a new one. Existing thumbnails are never
re-made; a report over the same collection (or a re-run) only makes the missing ones.
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
from pathlib import Path

from ..errors import MediaclusterError
from ..fileio import MADE_HERE, atomic_path, hash_file, output_error
from ..progress import threaded_map

THUMB_EXT = ".jpg"

log = logging.getLogger(__name__)


def content_key(path: str | os.PathLike, tag) -> str | None:
    """File name stem for a derived file: the content hash plus ``tag`` (e.g. the thumbnail
    size); ``None`` when the file can't be read."""
    try:
        return f"{hash_file(path)}-{tag}"
    except OSError:
        return None


def content_keys(paths: list[str | None], tag) -> list[str | None]:
    """:func:`content_key` of each path (``None`` for none or an unreadable file), without
    reading the files the embedding cache has hashed since they last changed
    (:meth:`~mediacluster.embed.store.EmbeddingStore.hash_files`: its record of size, times and
    inode; the same content hash). A report re-read every file's bytes to find its thumbnails:
    5.4 of the 12.4 s a re-built report of 50,000 CIFAR images took, and it grows with the
    photos' size (benchmarks/RESULTS.md, "What a user waits for")."""
    from ..embed.store import EmbeddingStore  # sqlite: the user's embedding cache

    todo = [i for i, p in enumerate(paths) if p]
    try:
        with EmbeddingStore(timeout=10.0) as store:  # busy with a long write: hash the files instead
            hashes, _ = store.hash_files([os.fspath(paths[i]) for i in todo],
                                         workers=max(4, min(8, os.cpu_count() or 1)))
    except (MediaclusterError, OSError, sqlite3.Error) as e:  # no usable cache: read every file
        log.info("thumbnails: the embedding cache is not usable (%s); hashing every file", e)
        return [content_key(p, tag) if p else None for p in paths]
    out: list[str | None] = [None] * len(paths)
    for i, h in zip(todo, hashes):
        out[i] = None if h is None else f"{h}-{tag}"
    return out


def cached_files(paths: list[str | None], out_dir: str | os.PathLike, tag, exts: tuple[str, ...], make,
                 desc: str, unit: str = "file", workers: int | None = None, progress: bool = True,
                 failures: dict[int, str] | None = None) -> list[str | None]:
    """Files derived from ``paths``, made once, in parallel, cached by content: for each path the
    name of ``out_dir/<content key><ext>`` (key: :func:`content_keys` with ``tag``). An existing
    file with one of ``exts`` is reused (taken from one listing of ``out_dir``); otherwise
    ``make(path) -> (bytes, ext)`` is written atomically. ``None`` for an empty or unreadable
    path, or where ``make`` raises, with the reason in ``failures[index]`` when a dict is
    given. A file that cannot be written (full disk) raises OutputError: that is not the
    source's fault. The report's thumbnails, and its spectrograms and audio clips
    (``report.audio``)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / MADE_HERE).exists():  # a folder scan of the collection passes over this folder
            (out_dir / MADE_HERE).touch()  # once: the folder's files keep their times
    except OSError as e:
        raise output_error(e, out_dir) from e
    workers = workers or max(1, min(8, os.cpu_count() or 1))

    def job(pk):
        p, key = pk
        if not p:
            return None, None
        if key is None:
            return None, "cannot read file (moved or deleted since the run?)"
        try:
            data, ext = make(p)
        except Exception as e:  # noqa: BLE001 - SkipItem or any decoder error: no file for this one
            return None, str(e) or type(e).__name__
        name = key + ext
        with atomic_path(out_dir / name) as tmp, open(tmp, "wb") as f:
            f.write(data)  # Python's write: a full disk raises
        return name, None

    out: list[str | None] = [None] * len(paths)
    keys = content_keys(paths, tag)
    try:  # files made before are taken from one listing, not one pool task each
        have = {e.name for e in os.scandir(out_dir)}
    except OSError:
        have = set()
    todo = []
    for i, (p, key) in enumerate(zip(paths, keys)):
        made = next((key + ext for ext in exts if key + ext in have), None) if p and key is not None else None
        if made is not None:
            out[i] = made
        else:
            todo.append(i)
    made = threaded_map(job, [(paths[i], keys[i]) for i in todo], workers, desc, unit, progress,
                        done=len(paths) - len(todo))
    for i, (r, why) in zip(todo, made):
        out[i] = r
        if why is not None and failures is not None:
            failures[i] = why
    return out


def _thumbnail(src: str, size: int) -> tuple[bytes, str]:
    """One thumbnail as JPEG bytes; raises SkipItem with the reason the source gives none."""
    from PIL import Image

    from ..ingest import SkipItem
    from ..ingest.images import load_image

    try:  # the loader the embedding used: same caps, same conversions, same reasons
        im = load_image(src, draft_size=size * 2)
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
    except SkipItem:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not cost the report
        raise SkipItem(f"cannot make a thumbnail: {type(e).__name__}: {e}") from e
    buf = io.BytesIO()  # PIL writes straight to the file descriptor and misses short writes
    im.convert("RGB").save(buf, "JPEG", quality=82, optimize=True)
    return buf.getvalue(), THUMB_EXT


def make_thumbnails(paths: list[str | None], out_dir: str | os.PathLike, size: int = 96,
                    workers: int | None = None, progress: bool = True,
                    failures: dict[int, str] | None = None) -> list[str | None]:
    """Thumbnail file names (relative to ``out_dir``) for ``paths``; ``None`` where impossible,
    with the reason in ``failures[index]`` when a dict is given. Raises OutputError when a
    thumbnail cannot be written."""
    return cached_files(paths, out_dir, size, (THUMB_EXT,), lambda p: _thumbnail(p, size), "thumbnails",
                        "img", workers, progress, failures)
