"""Decode an audio file into a mono float32 waveform at a given rate, or explain why not.

Everything goes through ``soundfile`` (libsndfile 1.2, bundled in its wheel), which reads WAV,
FLAC, OGG/Vorbis, Opus, MP3, AIFF and more without ffmpeg. The checks, in order, each with the
reason shown to the user when a file is skipped:

* empty file (0 bytes);
* not audio / corrupt (libsndfile cannot open it, e.g. a text file named ``.wav``);
* no samples (a valid header with 0 frames);
* too long (the header claims more than ``max_seconds``, a day by default: a broken or lying
  header, as a WAV at 1 Hz; nothing is decoded);
* truncated WAV (the header promises more data than the file holds; libsndfile would silently
  return the shorter part, we refuse it as the image loader refuses truncated images; a long
  file of another format is refused the same way when an excerpt its header promises cannot be
  read);
* non-finite samples (NaN / infinity in float files);
* all silent (peak below ``silence_dbfs``, -60 dBFS by default).

**Long files** (podcasts, lectures, songs, voice notes) are not decoded whole: a file that lasts
at most ``read_seconds`` (300 s) is read whole; a longer one as ``excerpts`` (10) excerpts of
``read_seconds / excerpts`` (30 s) spread evenly over it, the first at its start and the last at
its end (``excerpt_spans``), found by seeking (libsndfile seeks in WAV, FLAC, Ogg and MP3), so an
hour costs what five minutes cost, in time and in memory. The checks above apply to what is read.
**MP3 excerpts and libmpg123's stderr.** Every ``SoundFile.read`` of soundfile asks libsndfile for
the position first (``tell`` is ``seek(0, SEEK_CUR)``), and libsndfile's MP3 decoder answers a
seek with ``mpg123_seek``: decoding resumes with the bit reservoir empty, and when the first frame
refers back into it libmpg123 prints "[src/libmpg123/layer3.c:...] error: part2_3_length (N) too
large for available bit count (M)" on the process's stderr (fd 2, from C: no Python warning to
filter, and libsndfile sets no MPG123_QUIET). The excerpt is decoded all the same (measured: it
correlates with the WAV the MP3 was made from exactly as the same excerpt cut from the MP3 decoded
whole does, benchmarks/RESULTS.md "Audio: long recordings"). Reading a whole file makes one read
from the start, which does not print it. So the seek and read of each excerpt of an MP3 run with
fd 2 sent to a temporary file (``_Mpg123SeekNoise``: one excerpt at a time in the process, other
threads' output meanwhile is written back afterwards), and what was written there goes back to
stderr except at most ``SEEK_NOISE_PER_READ`` such reservoir lines per read, what one seek gives
(measured: 0 or 1). Anything else libmpg123 says (a broken stream: "Illegal Audio-MPEG-Header",
"Giving up resync") still reaches stderr, and when the excerpt then comes up short the file is
skipped as corrupt with libmpg123's words in the reason. ``load_audio_read`` says which parts were
read (``AudioRead.spans_s``), ``long_recordings`` lists a collection's long files with those
parts, from their headers (run.json and dups.json ``long_recordings``).

Then stereo / multichannel audio is mixed down to mono and resampled (soxr, through librosa) to
the rate the encoder asks for. ``windows`` cuts a waveform into fixed-length windows (padding the
last or only one), which encoders embed and pool.

Drawing spectrograms and re-encoding excerpts for the report is in ``mediacluster.report.audio``.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

from . import SkipItem

#: a header claiming more than this (seconds) is refused as "too long": a day of sound in one file
#: is a broken or lying header (a WAV "at 1 Hz"); long recordings below it are read in excerpts
MAX_SECONDS = 24 * 3600.0
#: files lasting up to this (seconds) are read whole; longer ones as ``EXCERPTS`` excerpts spread
#: over the file, this much audio in all
READ_SECONDS = 300.0
#: how many excerpts of a long file are read (each ``READ_SECONDS / EXCERPTS`` long)
EXCERPTS = 10
#: a clip whose peak is below this level (dBFS) counts as silent
SILENCE_DBFS = -60.0
#: a stereo mix keeping less than this share of its channels' mean power has cancelled them
#: (``_decoded``): the loudest channel is read instead
CANCELLED = 0.1


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


def excerpt_spans(frames: int, rate: float, read_seconds: float | None = READ_SECONDS,
                  excerpts: int = EXCERPTS) -> list[tuple[int, int]]:
    """The ``(start, stop)`` frames read of a file of ``frames`` frames at ``rate`` Hz.

    The whole file (``[(0, frames)]``) when it lasts at most ``read_seconds`` (or
    ``read_seconds`` is None); else ``excerpts`` spans of ``read_seconds / excerpts`` seconds,
    evenly spread: the first at the start, the last at the end (a single excerpt: the middle).
    """
    frames = int(frames)
    if read_seconds is None or frames <= read_seconds * rate:
        return [(0, frames)]
    n = max(1, int(excerpts))
    seg = min(frames, max(1, int(round(read_seconds * rate / n))))
    if n == 1:
        a = (frames - seg) // 2
        return [(a, a + seg)]
    starts = np.linspace(0, frames - seg, n).round().astype(np.int64)
    return [(int(a), int(a) + seg) for a in starts]


@dataclass
class AudioRead:
    """What ``load_audio_read`` read: the mono waveform at ``rate``, the file's duration (from
    its header) and the parts of it read, in seconds (one span ``(0, duration)`` for a file read
    whole; the excerpts of a long file, concatenated in ``wav`` in this order)."""

    wav: np.ndarray
    rate: int
    duration_s: float
    spans_s: list[tuple[float, float]]
    frames_read: int

    @property
    def partial(self) -> bool:
        """True when only excerpts of the file were read."""
        return len(self.spans_s) != 1 or self.spans_s[0][0] > 0 or self.spans_s[0][1] < self.duration_s


def load_audio_read(
    path: str,
    sr: int | None = None,
    max_seconds: float | None = MAX_SECONDS,
    silence_dbfs: float | None = SILENCE_DBFS,
    allow_truncated: bool = False,
    read_seconds: float | None = READ_SECONDS,
    excerpts: int = EXCERPTS,
) -> AudioRead:
    """``load_audio`` with what was read (``AudioRead``); see the module docstring."""
    info = audio_info(path)
    if info.frames <= 0 or info.samplerate <= 0:
        raise SkipItem("no audio samples (0 frames)", "no_samples")
    duration = info.frames / info.samplerate
    if max_seconds is not None and duration > max_seconds:
        raise SkipItem(f"too long: the header claims {_duration_text(duration)} of audio "
                       f"({info.frames} frames at {info.samplerate} Hz; limit {_duration_text(max_seconds)})",
                       "too_long")
    if not allow_truncated and info.format in ("WAV", "WAVEX", "RF64"):
        short = wav_data_shortfall(path)
        if short is not None:
            raise SkipItem(
                f"truncated WAV: header promises {short[0]} bytes of audio, file holds {short[1]}",
                "truncated")
    spans = excerpt_spans(info.frames, info.samplerate, read_seconds, excerpts)
    if spans == [(0, info.frames)]:
        wav, rate, read = _read_whole(path)
    else:
        wav, rate, read = _read_excerpts(path, spans, sr)
    peak = max(float(wav.max()), -float(wav.min())) if len(wav) else 0.0  # no |wav| copy
    if silence_dbfs is not None and peak <= 10 ** (silence_dbfs / 20):
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.0f}"
        where = "" if len(spans) == 1 else f" in the {len(spans)} excerpts read of {_duration_text(duration)}"
        raise SkipItem(f"all silent (peak {level} dBFS{where}, threshold {silence_dbfs:.0f} dBFS)", "silent")
    if sr is not None and rate != sr:
        wav = resample(wav, rate, sr)
        rate = sr
    return AudioRead(wav=np.ascontiguousarray(wav, dtype=np.float32), rate=int(rate),
                     duration_s=float(duration),
                     spans_s=[(a / info.samplerate, b / info.samplerate) for a, b in spans],
                     frames_read=int(read))


def _decoded(data: np.ndarray) -> np.ndarray:
    """Frames read (frames, channels) -> mono, refusing NaN / infinity.

    The channels' mean, as every mix-down does, except where the channels cancel: one the other
    inverted (a miswired microphone, a phase-flipped copy) mixes down to near silence though
    each channel is loud, and the clip was refused as silent. When the mix keeps less than
    ``CANCELLED`` of the channels' mean power (uncorrelated channels keep half, identical ones
    all, opposite ones none: a correlation below about -0.8), the loudest channel is taken."""
    if not np.isfinite(data).all():
        raise SkipItem("corrupt audio: samples contain NaN or infinity", "corrupt")
    if data.shape[1] == 1:
        return data[:, 0]
    mix = data.mean(axis=1)
    power = np.einsum("ij,ij->j", data, data, dtype=np.float64)
    if float(np.dot(mix, mix)) < CANCELLED * float(power.mean()):
        return np.ascontiguousarray(data[:, int(np.argmax(power))])
    return mix


#: libmpg123's lines for a frame that refers back into a bit reservoir emptied by a seek
_RESERVOIR = re.compile(rb"^\[[^\]\n]*libmpg123[^\]\n]*\] error: (?:part2_3_length \(\d+\) too large for "
                        rb"available bit count \(-?\d+\)|Can't rewind stream by \d+ bits!)\s*$")
_PREFIX = re.compile(r"^(?:\[[^\]]*\] (?:error|warning): |Note: )")
#: at most this many of those lines per read of an excerpt are the seek's (more: a broken stream)
SEEK_NOISE_PER_READ = 2


class _Mpg123SeekNoise:
    """fd 2 sent to a temporary file while an MP3 excerpt is sought and read (see the module
    docstring). One at a time in the process (a lock: fd 2 is the process's); on leaving, fd 2
    is restored and everything written there meanwhile, by this read or by other threads, is
    written back, less at most ``SEEK_NOISE_PER_READ`` reservoir lines. ``complaints`` are the
    other libmpg123 lines (for a skip reason). Where fd 2 cannot be duplicated nothing is
    redirected."""

    _lock = threading.Lock()

    def __init__(self):
        self.complaints: list[str] = []

    def __enter__(self):
        self._lock.acquire()
        self._saved = self._tmp = None
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            self._tmp = tempfile.TemporaryFile()
            self._saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        except (OSError, ValueError):  # no fd 2 to redirect: say everything as before
            self._close()
        except BaseException:
            self._close()
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            if self._saved is not None:
                if sys.stderr is not None:
                    try:
                        sys.stderr.flush()
                    except (OSError, ValueError):
                        pass
                os.dup2(self._saved, 2)
                self._tmp.seek(0)
                lines = self._tmp.read().splitlines(keepends=True)
                noise = [i for i, line in enumerate(lines) if _RESERVOIR.match(line)]
                drop = set(noise) if len(noise) <= SEEK_NOISE_PER_READ else set()
                kept = [line for i, line in enumerate(lines) if i not in drop]
                self.complaints = [_PREFIX.sub("", line.decode("utf-8", "replace").strip()) for line in kept
                                   if b"libmpg123" in line or line.startswith(b"Note: ")]
                if kept:
                    os.write(2, b"".join(kept))
        finally:
            self._close()
            self._lock.release()
        return False

    def _close(self):
        if self._saved is not None:
            os.close(self._saved)
        if self._tmp is not None:
            self._tmp.close()
        self._saved = self._tmp = None


def _read_whole(path: str) -> tuple[np.ndarray, int, int]:
    import soundfile as sf

    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise SkipItem(f"corrupt audio: {e}", "corrupt") from None
    if data.shape[0] == 0:
        raise SkipItem("no audio samples (0 frames decoded)", "no_samples")
    return _decoded(data), int(rate), int(data.shape[0])


def _read_excerpts(path: str, spans: list[tuple[int, int]], sr: int | None) -> tuple[np.ndarray, int, int]:
    """The excerpts ``spans`` of ``path``, each mixed down and resampled to ``sr`` on its own
    (to its exact length there, so windows of whole seconds stay aligned with the excerpts),
    one after the other in one array: memory for the result and one excerpt, whatever the
    file's length. Returns ``(wav at sr or the file's rate, that rate, frames read)``."""
    import soundfile as sf

    read = 0
    try:
        with sf.SoundFile(path) as f:
            rate = int(f.samplerate)
            out_rate = sr or rate
            seg = int(round((spans[0][1] - spans[0][0]) * out_rate / rate))
            out = np.zeros(seg * len(spans), np.float32)
            end = 0
            mp3 = f.format == "MP3"
            for a, b in spans:
                quiet = _Mpg123SeekNoise() if mp3 else None
                with quiet or contextlib.nullcontext():
                    try:
                        f.seek(a)
                        data = f.read(b - a, dtype="float32", always_2d=True)
                    except (sf.LibsndfileError, RuntimeError, ValueError):
                        data = np.zeros((0, 1), np.float32)
                got = data.shape[0]
                read += got
                if got < (b - a) // 2:  # the stream ends before its header says (a cut-off download)
                    if quiet is not None and quiet.complaints:  # libmpg123 gave up on a broken stream
                        raise SkipItem(
                            f"corrupt {f.format}: decoding stopped at {_duration_text((a + got) / rate)} of "
                            f"{_duration_text(f.frames / rate)} (libmpg123: "
                            f"{'; '.join(dict.fromkeys(quiet.complaints[:1] + quiet.complaints[-1:]))})",
                            "corrupt")
                    raise SkipItem(
                        f"truncated {f.format}: the header promises {_duration_text(f.frames / rate)} of audio, "
                        f"the file ends before {_duration_text((a + got) / rate + 1)}", "truncated")
                w = _decoded(data)
                del data
                if out_rate != rate:
                    w = resample(w, rate, out_rate)
                n = min(seg, len(w), int(round(got * out_rate / rate)))
                out[end:end + n] = w[:n]
                end += n
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise SkipItem(f"corrupt audio: {e}", "corrupt") from None
    if end == 0:
        raise SkipItem("no audio samples (0 frames decoded)", "no_samples")
    return out[:end], out_rate, read


def load_audio(path: str, sr: int | None = None, **options) -> tuple[np.ndarray, int]:
    """Read ``path`` as mono float32 in [-1, 1], resampled to ``sr`` (None keeps the file's rate).

    Returns ``(waveform, rate)``: the whole file, or for a file longer than ``read_seconds`` its
    ``excerpts`` excerpts one after the other (``load_audio_read`` says which, and takes the same
    ``options``: ``max_seconds``, ``silence_dbfs``, ``allow_truncated``, ``read_seconds``,
    ``excerpts``). Raises ``SkipItem`` with a human reason for unusable files (see the module
    docstring). Thread-safe (libsndfile and soxr share no state between calls).
    """
    r = load_audio_read(path, sr, **options)
    return r.wav, r.rate


#: a clip's ends below this many dB under its peak are silence added around it (digital zeros,
#: dither), not its own sound: :func:`strip_silence`
PAD_BELOW_DB = 60.0


def strip_silence(wav: np.ndarray, below_db: float = PAD_BELOW_DB) -> np.ndarray:
    """``wav`` without its leading and trailing samples more than ``below_db`` under its peak,
    to the sample: the silence a repost was padded with (an editor's or a platform's zeros) goes,
    a recording's own room noise (tens of dB under its peak) stays. Exact, where a frame-wise trim
    (``librosa.effects.trim``: 2048-sample frames) leaves up to a frame of the padding. An all
    silent ``wav`` is returned as it is."""
    if not len(wav):
        return wav
    peak = float(np.max(np.abs(wav)))
    if peak <= 0:
        return wav
    loud = np.flatnonzero(np.abs(wav) > peak * 10 ** (-below_db / 20))
    return wav[loud[0]:loud[-1] + 1]


def _fix_length(w: np.ndarray, n: int) -> np.ndarray:
    if len(w) >= n:
        return w[:n]
    return np.pad(w, (0, n - len(w)))


def _duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def long_recordings(paths, read_seconds: float | None = READ_SECONDS, excerpts: int = EXCERPTS) -> list[dict]:
    """The files of ``paths`` longer than ``read_seconds``, each with the parts an audio encoder
    reads of it: ``{"path", "duration_s", "excerpts_s": [[start, end], ...]}`` (seconds),
    from the headers alone (a file whose header cannot be read is left out: it was skipped)."""
    import soundfile as sf

    out = []
    if read_seconds is None:
        return out
    for p in paths:
        if p is None:
            continue
        try:
            info = sf.info(str(p))
        except Exception:  # noqa: BLE001 - unreadable: listed as skipped elsewhere
            continue
        if info.samplerate <= 0 or info.frames <= read_seconds * info.samplerate:
            continue
        spans = excerpt_spans(info.frames, info.samplerate, read_seconds, excerpts)
        out.append({"path": str(p), "duration_s": round(info.frames / info.samplerate, 2),
                    "excerpts_s": [[round(a / info.samplerate, 2), round(b / info.samplerate, 2)]
                                   for a, b in spans]})
    return out


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

