"""Report pieces for audio runs: spectrogram thumbnails and short player clips, as files.

Same contract as ``mediacluster.report.thumbs.make_thumbnails`` (content-keyed names, made once,
in parallel, ``None`` where the file can't be read), so the report can treat an audio run like an
image run:

* ``make_spectrogram_thumbnails(paths, out_dir)`` writes ``<key>.jpg`` log-mel spectrograms
  (time left to right, low frequencies at the bottom) into the report's ``thumbs/`` folder: the
  map's hover and the cluster cards show them like image thumbnails; hovering plays nothing.
* ``make_audio_clips(paths, out_dir)`` writes ``<key>.mp3`` (or ``.wav``) excerpts, the first
  ``max_seconds`` at up to 16 kHz mono, for ``<audio controls preload="none">`` players on the
  cluster cards (``audio_player_html``): sound only when the user presses play.

The drawing and re-encoding live in ``mediacluster.ingest.audio`` (``spectrogram_png``,
``audio_preview``, ``report_media`` for data URIs).
"""

from __future__ import annotations

import html
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .progress import progress_bar


def _key(path: str, tag: str) -> str | None:
    from .report.thumbs import content_key

    return content_key(path, tag)  # type: ignore[arg-type]


def _parallel(paths, job, desc: str, workers: int | None, progress: bool) -> list[str | None]:
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    out: list[str | None] = [None] * len(paths)
    with ThreadPoolExecutor(workers) as ex, progress_bar(len(paths), desc, "clip",
                                                          disable=not progress) as bar:
        for i, r in enumerate(ex.map(job, paths)):
            out[i] = r
            bar.update(1)
    return out


def _cached_files(paths, out_dir, tag: str, exts: tuple[str, ...], make, desc: str,
                  workers: int | None, progress: bool) -> list[str | None]:
    """For each path, the name of ``out_dir/<content key><ext>``: an existing file with one of
    ``exts`` is reused, otherwise ``make(path) -> (bytes, ext)`` is written atomically; ``None``
    for an empty or unreadable path (unreadable clips simply get no file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def job(p):
        if not p:
            return None
        key = _key(p, tag)
        if key is None:
            return None
        for ext in exts:
            if (out_dir / (key + ext)).exists():
                return key + ext
        try:
            data, ext = make(p)
        except Exception:  # noqa: BLE001 - SkipItem or any decoder error: no file for this clip
            return None
        name = key + ext
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out_dir / name)
        return name

    return _parallel(paths, job, desc, workers, progress)


def make_spectrogram_thumbnails(paths: list[str | None], out_dir: str | os.PathLike, size: int = 96,
                                workers: int | None = None, progress: bool = True) -> list[str | None]:
    """Spectrogram JPEG file names (relative to ``out_dir``) for ``paths``; ``None`` if unreadable."""
    from PIL import Image

    from .ingest.audio import spectrogram_png

    def make(p):
        png = spectrogram_png(p, width=size, height=max(32, size * 2 // 3))
        buf = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").save(buf, "JPEG", quality=85)
        return buf.getvalue(), ".jpg"

    return _cached_files(paths, out_dir, f"spec{size}", (".jpg",), make, "spectrograms", workers,
                         progress)


def make_audio_clips(paths: list[str | None], out_dir: str | os.PathLike, max_seconds: float = 10.0,
                     workers: int | None = None, progress: bool = True) -> list[str | None]:
    """Playable excerpt file names (relative to ``out_dir``) for ``paths``; ``None`` if unreadable."""
    from .ingest.audio import audio_preview

    def make(p):
        data, mime = audio_preview(p, max_seconds=max_seconds)
        return data, (".mp3" if mime == "audio/mpeg" else ".wav")

    return _cached_files(paths, out_dir, f"clip{max_seconds:g}", (".mp3", ".wav"), make,
                         "audio clips", workers, progress)


def audio_player_html(name: str | None, folder: str = "audio") -> str:
    """An ``<audio>`` element for a clip written by ``make_audio_clips`` (nothing autoplays)."""
    if not name:
        return ""
    # stopPropagation: pressing play must not also trigger the card's "filter the map" click
    return (f'<audio class="clip" controls preload="none" onclick="event.stopPropagation()" '
            f'src="{html.escape(folder)}/{html.escape(name)}"></audio>')
