"""Decode an audio file into a mono float32 waveform at a given rate, or explain why not.

Everything goes through ``soundfile`` (libsndfile 1.2, bundled in its wheel), which reads WAV,
FLAC, OGG/Vorbis, Opus, MP3, AIFF and more without ffmpeg. The checks, in order, each with the
reason shown to the user when a file is skipped:

* empty file (0 bytes);
* not audio / corrupt (libsndfile cannot open it, e.g. a text file named ``.wav``);
* no samples (a valid header with 0 frames);
* too long (longer than ``max_seconds``, read from the header, so nothing is decoded);
* truncated WAV (the header promises more data than the file holds; libsndfile would silently
  return the shorter part, we refuse it as the image loader refuses truncated images);
* non-finite samples (NaN / infinity in float files);
* all silent (peak below ``silence_dbfs``, -60 dBFS by default).

Then stereo / multichannel audio is mixed down to mono and resampled (soxr, through librosa) to
the rate the encoder asks for. ``windows`` cuts a waveform into fixed-length windows (padding the
last or only one), which encoders embed and pool.

For the report, ``spectrogram_png`` draws a small log-mel spectrogram and ``audio_preview``
re-encodes a short excerpt for an HTML ``<audio>`` player; ``report_media`` returns both as
data URIs.
"""

from __future__ import annotations

import base64
import io
import os
import struct

import numpy as np

from . import SkipItem

#: files longer than this (seconds, read from the header) are skipped unless an encoder says otherwise
MAX_SECONDS = 300.0
#: a clip whose peak is below this level (dBFS) counts as silent
SILENCE_DBFS = -60.0


def audio_info(path: str):
    """``soundfile.info`` of ``path``, or ``SkipItem`` with the reason it cannot be read."""
    import soundfile as sf

    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise SkipItem(f"cannot read file: {e.strerror or e}", "unreadable") from None
    if size == 0:
        raise SkipItem("empty file (0 bytes)", "empty")
    try:
        return sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        msg = str(e).split(": ", 1)[-1] if ": " in str(e) else str(e)
        raise SkipItem(f"not a readable audio file ({msg.strip() or type(e).__name__})", "not_audio") from None


def wav_data_shortfall(path: str) -> tuple[int, int] | None:
    """For a RIFF/WAVE file, ``(promised, present)`` bytes of its data chunk when it is cut short.

    Returns None for non-WAV files and complete WAV files. Only the chunk headers are read.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            fmt = "<I" if head[:4] == b"RIFF" else ">I"
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                (n,) = struct.unpack(fmt, hdr[4:8])
                if hdr[:4] == b"data":
                    present = size - (pos + 8)
                    # 0xFFFFFFFF is used by streaming writers for "unknown length"
                    if n != 0xFFFFFFFF and n > present:
                        return n, present
                    return None
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


def load_audio(
    path: str,
    sr: int | None = None,
    max_seconds: float | None = MAX_SECONDS,
    silence_dbfs: float | None = SILENCE_DBFS,
    allow_truncated: bool = False,
) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono float32 in [-1, 1], resampled to ``sr`` (None keeps the file's rate).

    Returns ``(waveform, rate)``. Raises ``SkipItem`` with a human reason for unusable files
    (see the module docstring). Thread-safe (libsndfile and soxr release no shared state).
    """
    import soundfile as sf

    info = audio_info(path)
    if info.frames <= 0 or info.samplerate <= 0:
        raise SkipItem("no audio samples (0 frames)", "no_samples")
    duration = info.frames / info.samplerate
    if max_seconds is not None and duration > max_seconds:
        raise SkipItem(f"too long ({duration:.0f} s; limit {max_seconds:.0f} s)", "too_long")
    if not allow_truncated and info.format in ("WAV", "WAVEX", "RF64"):
        short = wav_data_shortfall(path)
        if short is not None:
            raise SkipItem(
                f"truncated WAV: header promises {short[0]} bytes of audio, file holds {short[1]}",
                "truncated")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise SkipItem(f"corrupt audio: {e}", "corrupt") from None
    if data.shape[0] == 0:
        raise SkipItem("no audio samples (0 frames decoded)", "no_samples")
    if not np.isfinite(data).all():
        raise SkipItem("corrupt audio: samples contain NaN or infinity", "corrupt")
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    peak = float(np.abs(wav).max())
    if silence_dbfs is not None and peak <= 10 ** (silence_dbfs / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.0f}"
        raise SkipItem(f"all silent (peak {level} dBFS, threshold {silence_dbfs:.0f} dBFS)", "silent")
    if sr is not None and rate != sr:
        wav = resample(wav, rate, sr)
        rate = sr
    return np.ascontiguousarray(wav, dtype=np.float32), int(rate)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    import librosa

    return librosa.resample(wav, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(
        np.float32, copy=False)


def windows(wav: np.ndarray, length: int, hop: int | None = None, min_fill: float = 0.5,
            max_windows: int | None = None) -> np.ndarray:
    """Cut ``wav`` into ``(n, length)`` windows ``hop`` apart (default: no overlap).

    A clip shorter than ``length`` gives one zero-padded window. The last partial window of a
    longer clip is kept (zero-padded) when at least ``min_fill`` of it holds audio.
    ``max_windows`` keeps that many windows spread evenly over the clip (bounds the work on long
    files).
    """
    hop = hop or length
    n = len(wav)
    if n <= length:
        out = np.zeros((1, length), np.float32)
        out[0, :n] = wav
        return out
    starts = list(range(0, n - length + 1, hop))
    last = starts[-1] + hop
    if last < n and (n - last) >= min_fill * length:
        starts.append(last)
    if max_windows is not None and len(starts) > max_windows:
        pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in pick]
    out = np.zeros((len(starts), length), np.float32)
    for i, s in enumerate(starts):
        seg = wav[s:s + length]
        out[i, :len(seg)] = seg
    return out


# -- report pieces -----------------------------------------------------------------------------

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
