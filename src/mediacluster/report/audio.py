"""Report pieces for audio runs: spectrogram thumbnails and short player clips, as files.

Made as ``mediacluster.report.thumbs.make_thumbnails`` makes thumbnails, by ``thumbs.cached_files``
(content-keyed names, made once, in parallel, ``None`` where the file can't be read), so the report
can treat an audio run like an image run:

* ``make_spectrogram_thumbnails(paths, out_dir)`` writes ``<key>.jpg`` log-mel spectrograms
  (time left to right, low frequencies at the bottom) into the report's ``thumbs/`` folder: the
  map's hover and the cluster cards show them like image thumbnails; hovering plays nothing.
* ``make_audio_clips(paths, out_dir)`` writes ``<key>.mp3`` (or ``.wav``) excerpts, the first
  ``max_seconds`` at up to 16 kHz mono, for ``<audio controls preload="none">`` players on the
  cluster cards (``audio_player_html``): sound only when the user presses play.

``spectrogram_png`` draws a small log-mel spectrogram, ``audio_preview`` re-encodes a short
excerpt for an HTML ``<audio>`` player, ``report_media`` returns both as data URIs. Decoding
checks come from ``mediacluster.ingest.audio``.
"""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np

from ..ingest import SkipItem
from ..ingest.audio import audio_info, resample
from ..ingest.sources import extension_of
from .thumbs import cached_files


def _workers(workers: int | None) -> int:
    """Threads for audio files: ``workers``, else at most 4 (decoding a clip is heavier)."""
    return workers or max(1, min(4, os.cpu_count() or 1))


def make_spectrogram_thumbnails(paths: list[str | None], out_dir: str | os.PathLike, size: int = 96,
                                workers: int | None = None, progress: bool = True,
                                failures: dict[int, str] | None = None) -> list[str | None]:
    """Spectrogram JPEG file names (relative to ``out_dir``) for ``paths``; ``None`` if unreadable
    (the reason in ``failures[index]``)."""
    from PIL import Image

    def make(p):
        png = spectrogram_png(p, width=size, height=max(32, size * 2 // 3))
        buf = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").save(buf, "JPEG", quality=85)
        return buf.getvalue(), ".jpg"

    return cached_files(paths, out_dir, f"spec{size}", (".jpg",), make, "spectrograms", "clip",
                        _workers(workers), progress, failures)


def make_audio_clips(paths: list[str | None], out_dir: str | os.PathLike, max_seconds: float = 10.0,
                     workers: int | None = None, progress: bool = True) -> list[str | None]:
    """Playable excerpt file names (relative to ``out_dir``) for ``paths``; ``None`` if unreadable."""
    def make(p):
        data, mime = audio_preview(p, max_seconds=max_seconds)
        return data, extension_of(mime)

    return cached_files(paths, out_dir, f"clip{max_seconds:g}", (".mp3", ".wav"), make, "audio clips",
                        "clip", _workers(workers), progress)


def audio_player_html(name: str | None, folder: str = "audio") -> str:
    """An ``<audio>`` element for a clip written by ``make_audio_clips`` (nothing autoplays)."""
    if not name:
        return ""
    # stopPropagation: pressing play must not also trigger the card's "filter the map" click
    return (f'<audio class="clip" controls preload="none" onclick="event.stopPropagation()" '
            f'src="{html.escape(folder)}/{html.escape(name)}"></audio>')


# -- drawing and re-encoding --------------------------------------------------------------------

# viridis anchor colours (matplotlib's, public domain data); interpolated to a 256-entry table
_VIRIDIS = np.array([
    [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
], dtype=np.float64)


def _colormap(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (viridis)."""
    x = np.clip(v, 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(x.astype(int), len(_VIRIDIS) - 2)
    t = (x - i)[..., None]
    rgb = _VIRIDIS[i] * (1 - t) + _VIRIDIS[i + 1] * t
    return rgb.round().astype(np.uint8)


def spectrogram_png(path: str, width: int = 160, height: int = 64, max_seconds: float = 10.0,
                    sr: int = 16000, top_db: float = 70.0) -> bytes:
    """PNG bytes of a small log-mel spectrogram of the first ``max_seconds`` of ``path``.

    Low frequencies at the bottom, time left to right, ``top_db`` of dynamic range (viridis).
    Raises ``SkipItem`` when the file cannot be decoded (same checks as ``load_audio``, except
    silence: a silent clip draws as a dark image).
    """
    import librosa
    from PIL import Image

    info = audio_info(path)
    frames = int(min(info.frames, max_seconds * info.samplerate)) if info.frames > 0 else 0
    if frames <= 0:
        raise SkipItem("no audio samples (0 frames)", "no_samples")
    import soundfile as sf

    data, rate = sf.read(path, frames=frames, dtype="float32", always_2d=True)
    wav = data.mean(axis=1)
    if rate != sr:
        wav = resample(wav, rate, sr)
    n_fft = 512
    hop = max(64, len(wav) // max(1, width))
    mel = librosa.feature.melspectrogram(y=np.pad(wav, (0, max(0, n_fft - len(wav)))), sr=sr,
                                         n_fft=n_fft, hop_length=hop, n_mels=height,
                                         fmax=min(sr / 2, rate / 2))
    db = librosa.power_to_db(mel, ref=max(float(mel.max()), 1e-10), top_db=top_db)
    v = (db + top_db) / top_db
    img = Image.fromarray(_colormap(v[::-1]), "RGB").resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def audio_preview(path: str, max_seconds: float = 10.0, sr: int = 16000) -> tuple[bytes, str]:
    """A short mono excerpt of ``path`` for an HTML ``<audio>`` player: ``(bytes, mime type)``.

    Re-encoded as MP3 (libsndfile's LAME, every browser plays it; about 2 kB per second at
    16 kHz), or 16-bit WAV when this libsndfile cannot write MP3.
    """
    import soundfile as sf

    info = audio_info(path)
    frames = int(min(info.frames, max_seconds * info.samplerate))
    if frames <= 0:
        raise SkipItem("no audio samples (0 frames)", "no_samples")
    data, rate = sf.read(path, frames=frames, dtype="float32", always_2d=True)
    wav = data.mean(axis=1)
    out_sr = min(sr, rate)
    if rate != out_sr:
        wav = resample(wav, rate, out_sr)
    buf = io.BytesIO()
    try:
        sf.write(buf, wav, out_sr, format="MP3", subtype="MPEG_LAYER_III")
        return buf.getvalue(), "audio/mpeg"
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        buf = io.BytesIO()
        sf.write(buf, wav, out_sr, format="WAV", subtype="PCM_16")
        return buf.getvalue(), "audio/wav"


def report_media(path: str, max_seconds: float = 10.0) -> dict:
    """What a report card needs for one audio example, as data URIs.

    ``{"spectrogram": "data:image/png;base64,...", "audio": "data:audio/mpeg;base64,...",
    "duration_s": float}``; on an unreadable file ``{"error": reason}``. The report shows the
    spectrogram with ``<audio controls preload="none">`` under it, so nothing plays unless the
    user presses play (the map's hover shows the spectrogram only).
    """
    try:
        png = spectrogram_png(path, max_seconds=max_seconds)
        snd, mime = audio_preview(path, max_seconds=max_seconds)
        info = audio_info(path)
    except SkipItem as e:
        return {"error": str(e)}
    return {
        "spectrogram": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "audio": f"data:{mime};base64," + base64.b64encode(snd).decode("ascii"),
        "duration_s": float(info.frames / info.samplerate) if info.samplerate else 0.0,
    }
