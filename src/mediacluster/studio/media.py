"""What the studio shows of an item's file: JPEG thumbnails and previews of images, PNG
spectrograms and re-encoded excerpts of sounds, made by the package's hardened loaders and
never the original file itself. Thumbnails are cached by content in the user cache.

:class:`ItemMedia` knows only the run's file of each item number and its media kind; the
session checks the item number first (:meth:`Studio.thumbnail <.session.Studio.thumbnail>`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from pathlib import Path

from ..errors import InputError
from ..fileio import cache_root, path_to_text

log = logging.getLogger(__name__)

THUMB_SIZES = (96, 160)
PREVIEW_SIZE = 512


class ItemMedia:
    """Renderings of the files ``paths`` (one per item number; None for an item made from
    vectors) of a run of ``media`` ("image" or "audio")."""

    def __init__(self, paths: list[str | None], media: str = "image", thumb_dir: Path | None = None):
        self.paths = paths
        self.media = media
        self._thumbs: dict[tuple[int, int], Path] = {}
        self._thumb_dir = thumb_dir if thumb_dir is not None else cache_root() / "thumbs"
        self._store_failed = False  # said once

    def thumbnail(self, i: int, size: int = 160) -> tuple[bytes, str]:
        """``(bytes, media type)``: a JPEG thumbnail of image ``i`` (made with the package's
        hardened image loader), or a PNG spectrogram of audio item ``i``; cached by content in
        the user cache."""
        from ..fileio import hash_file

        if size not in THUMB_SIZES:
            raise InputError(f"size must be one of {THUMB_SIZES}")
        audio = self.media == "audio"
        kind = "image/png" if audio else "image/jpeg"
        key = (i, size)
        p = self._thumbs.get(key)
        if p is not None and p.exists():
            return p.read_bytes(), kind
        src = self.file(i)
        try:
            h = hash_file(src)
        except OSError as e:
            raise FileNotFoundError(f"item {i}: cannot read its file ({e.strerror or e})") from None
        dst = self._thumb_dir / (f"{h}-spec{size}.png" if audio else f"{h}-{size}.jpg")
        if not dst.exists():
            data = spectrogram(src, size, min(64, size // 2)) if audio else jpeg(src, size, quality=82)
            if self._store(dst, data):
                self._thumbs[key] = dst
            return data, kind
        self._thumbs[key] = dst
        return dst.read_bytes(), kind

    def preview(self, i: int) -> tuple[bytes, str]:
        """A larger rendering of item ``i`` for the item view (never the original file itself):
        a JPEG of an image, a PNG spectrogram of a sound."""
        if self.media == "audio":
            return spectrogram(self.file(i), PREVIEW_SIZE, 64), "image/png"  # 64 mel bands
        return jpeg(self.file(i), PREVIEW_SIZE, quality=88), "image/jpeg"

    def audio(self, i: int) -> tuple[bytes, str]:
        """A short re-encoded excerpt of audio item ``i`` for the item view's player."""
        p, kind = self.audio_file(i)
        return (p.read_bytes() if isinstance(p, Path) else p), kind

    def audio_file(self, i: int) -> tuple[Path | bytes, str]:
        """``(file, media type)``: the excerpt of :meth:`audio` as a file, cached by content in the
        user cache as the thumbnails are; the studio serves it with byte ranges, without which a
        browser's player cannot seek (Chromium's seekable range is then empty). Its bytes instead
        of a file when the cache cannot keep it (a full disk)."""
        from ..fileio import hash_file
        from ..ingest import SkipItem
        from ..ingest.sources import content_type, extension_of
        from ..report.audio import audio_preview  # librosa / soundfile: audio runs only

        if self.media != "audio":
            raise FileNotFoundError(f"item {i} is an image, not a sound")
        src = self.file(i)
        try:
            h = hash_file(src)
        except OSError as e:
            raise FileNotFoundError(f"item {i}: cannot read its file ({e.strerror or e})") from None
        for ext in (".mp3", ".wav"):  # audio_preview's two formats
            dst = self._thumb_dir / f"{h}-excerpt{ext}"
            if dst.exists():
                return dst, content_type(dst.name)
        try:
            data, kind = audio_preview(src)
        except SkipItem as e:
            raise FileNotFoundError(f"cannot play item {i}: {e}") from None
        dst = self._thumb_dir / f"{h}-excerpt{extension_of(kind)}"
        return (dst if self._store(dst, data) else data), kind

    def _store(self, dst: Path, data: bytes) -> bool:
        """Keep ``data`` as ``dst`` in the cache (atomically); False when the cache cannot keep it
        (a full disk, a cache folder that cannot be made): what it would hold is served all the
        same, said once in the log."""
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self._thumb_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, dst)
            return True
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if not self._store_failed:
                self._store_failed = True
                log.warning("studio: the thumbnail cache %s cannot keep files (%s); thumbnails are made "
                            "anew each time", self._thumb_dir, e.strerror or e)
            return False

    def file(self, i: int) -> str:
        p = self.paths[i]
        if not p:
            raise FileNotFoundError(f"item {i} has no file (the run was made from vectors)")
        return p


def spectrogram(src: str, width: int, height: int) -> bytes:
    """A PNG spectrogram of the sound ``src``; FileNotFoundError when it cannot be read."""
    from ..ingest import SkipItem
    from ..report.audio import spectrogram_png  # librosa: audio runs only

    try:
        return spectrogram_png(src, width=width, height=height)
    except SkipItem as e:
        raise FileNotFoundError(f"cannot draw {path_to_text(os.path.basename(src))}: {e}") from None


def jpeg(src: str, size: int, quality: int) -> bytes:
    """A JPEG of the image ``src`` at most ``size`` pixels wide and high; FileNotFoundError when
    it cannot be read."""
    from PIL import Image

    from ..ingest import SkipItem, load_image

    try:
        im = load_image(src, draft_size=size)
    except SkipItem as e:
        raise FileNotFoundError(f"cannot show {path_to_text(os.path.basename(src))}: {e}") from None
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()
