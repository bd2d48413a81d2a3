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

Drawing spectrograms and re-encoding excerpts for the report is in ``mediacluster.report.audio``.
"""

from __future__ import annotations

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

