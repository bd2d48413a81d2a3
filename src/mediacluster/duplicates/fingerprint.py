"""Checking a candidate pair of audio clips: is it the same recording, or only a similar one?

The audio encoders' vectors propose candidates (a repost has cosine .994-1.0 to its original,
but so do other takes of the same word: benchmarks/RESULTS.md, "End to end: an audio
collection"); this check decides, as the geometric check does for images (``verify``).

Each clip is decoded by the package's loader (``ingest.audio.load_audio``: mono, resampled) at
``AudioCheck.sr`` and turned into a **log-power spectrogram** (librosa STFT: a 64 ms window
every 10 ms, the 60-3000 Hz bins, 15.6 Hz apart, so a voice's harmonics are resolved) in dB
below the clip's loudest bin, floored at ``floor_db``: a gain change does not move it, a
resampled, re-encoded (Ogg, MP3), stereo or slightly noisy copy moves it little, and the floor
hides the noise in the silences. Two spectrograms are compared by **normalised
cross-correlation over every time offset** (FFT, one pass per pair) where the two overlap by at
least ``min_overlap`` of the shorter one, so a copy trimmed or padded at either end is aligned
with its original. The best correlation decides: a copy of the same recording scores ~0.96-1.0;
another take of the same word by the same speaker (same voice, same formants, but its own
timing and pitch, so its harmonics land elsewhere) rarely above ~0.94. Thresholds and the
measurement behind them: benchmarks/audio_reposts.py (benchmarks/RESULTS.md, "Duplicates:
audio reposts").

**Long recordings** (over ``excerpt_seconds``, 120 s) are compared by their middle 120 s, read
by seeking (``ingest.audio.excerpt_spans`` with one excerpt), so a pair costs at most two 120 s
fingerprints (3.8 MB each in the cache) whatever the files' lengths. The middles of a copy trimmed
or padded unevenly at its two ends are shifted by half the difference, which the alignment finds
while the two middles still overlap by ``min_overlap`` (0.7 of 120 s: up to 72 s more cut at one
end than at the other). A long file is linked with a short one only when the short one lies
inside its middle 120 s: an excerpt cut from elsewhere in a long recording is not found.

Measured and rejected there: mel bands (32-128; they blur the harmonics, which is where two
takes differ: other takes reached 0.97-0.985 at 80 bands) and Chromaprint (``fpcalc``, via
pyacoustid: built for music of several seconds, it gives an empty fingerprint for a one-second
voice clip).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..ingest.audio import MAX_SECONDS
from .verify import PreparedCache


@dataclass(frozen=True)
class AudioCheck:
    """Settings of the audio fingerprint check (defaults from benchmarks/audio_reposts.py)."""

    min_ncc: float = 0.96        # best normalised cross-correlation of the two log-spectrogram sequences
    min_overlap: float = 0.7     # aligned overlap / duration of the shorter clip
    sr: int = 8000               # clips are compared at this sample rate (speech band)
    hop: int = 80                # samples between frames (10 ms at 8 kHz)
    n_fft: int = 512             # window (64 ms at 8 kHz: the harmonics of a voice resolved)
    fmin: float = 60.0           # lowest frequency bin kept (Hz)
    fmax: float = 3000.0         # highest frequency bin kept (Hz): 157 bins of 15.6 Hz
    floor_db: float = 40.0       # bins more than this below the clip's loudest are set to the floor
    max_seconds: float = MAX_SECONDS  # a header claiming more is refused (the pair stays unlinked)
    excerpt_seconds: float = 120.0  # a longer file is compared by its middle this many seconds


def fingerprint(wav: np.ndarray, check: AudioCheck = AudioCheck()) -> np.ndarray:
    """The (bins, frames) float32 log-power spectrogram of a mono waveform at ``check.sr``, in dB
    below its loudest bin, floored at ``-check.floor_db``."""
    import librosa  # lazy: only audio needs it

    wav = np.asarray(wav, np.float32)
    if len(wav) < check.n_fft:
        wav = np.pad(wav, (0, check.n_fft - len(wav)))
    S = np.abs(librosa.stft(wav, n_fft=check.n_fft, hop_length=check.hop, center=False)) ** 2
    f = librosa.fft_frequencies(sr=check.sr, n_fft=check.n_fft)
    S = S[(f >= check.fmin) & (f <= check.fmax)]
    db = 10.0 * np.log10(np.maximum(S, 1e-12))
    return np.maximum(db - db.max(), -float(check.floor_db)).astype(np.float32)


def best_alignment(a: np.ndarray, b: np.ndarray, min_overlap: float = 0.7) -> tuple[float, int, float]:
    """``(ncc, offset, overlap)`` of the best time alignment of spectrograms ``a``, ``b`` (bins x frames).

    ``offset``: frames ``b`` starts after ``a`` (negative: before); ``overlap``: overlapping
    frames / frames of the shorter sequence. The correlation is taken over the overlap only,
    every band and frame of it, each sequence centred on its own mean there; offsets whose
    overlap is below ``min_overlap`` are not considered (``ncc`` = -1 if none qualifies).
    """
    from scipy.signal import fftconvolve

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    na, nb = a.shape[1], b.shape[1]
    m = a.shape[0]
    # sum over bands of the cross-correlation: xc[k] = sum a[:, t] * b[:, t - s], s = k - (nb - 1)
    xc = fftconvolve(a, b[:, ::-1], mode="full", axes=1).sum(0)
    s = np.arange(-(nb - 1), na)  # b's frame 0 lies at a's frame s
    lo_a = np.maximum(0, s)
    hi_a = np.minimum(na, s + nb)
    lo_b, hi_b = lo_a - s, hi_a - s
    n = hi_a - lo_a
    keep = n >= max(1, int(np.ceil(min_overlap * min(na, nb))))
    if not keep.any():
        return -1.0, 0, 0.0
    ca = np.concatenate([[0.0], np.cumsum(a.sum(0))])
    ca2 = np.concatenate([[0.0], np.cumsum((a * a).sum(0))])
    cb = np.concatenate([[0.0], np.cumsum(b.sum(0))])
    cb2 = np.concatenate([[0.0], np.cumsum((b * b).sum(0))])
    cnt = n * m
    sa, sa2 = ca[hi_a] - ca[lo_a], ca2[hi_a] - ca2[lo_a]
    sb, sb2 = cb[hi_b] - cb[lo_b], cb2[hi_b] - cb2[lo_b]
    cov = xc - sa * sb / np.maximum(cnt, 1)
    va = sa2 - sa * sa / np.maximum(cnt, 1)
    vb = sb2 - sb * sb / np.maximum(cnt, 1)
    den = np.sqrt(np.maximum(va, 0) * np.maximum(vb, 0))
    ncc = np.where(keep & (den > 1e-9), cov / np.maximum(den, 1e-9), -1.0)
    k = int(np.argmax(ncc))
    return float(ncc[k]), int(s[k]), float(n[k] / min(na, nb))


class AudioVerifier:
    """The fingerprint check of two audio files, with a cache of fingerprints.

    ``verify(a, b)`` takes two audio paths and returns ``(ok, info)`` like
    ``verify.GeometricVerifier``; ``info`` has the correlation, the offset (seconds) and the
    overlap. A file that cannot be decoded fails the check (the pair stays unlinked). Safe to
    call from several threads. A cached fingerprint costs 157 bins x 2 bytes per 10 ms
    (~31 KB for a second of audio, 3.8 MB at most: a long file's middle 120 s);
    ``cache_bytes`` bounds them.
    """

    def __init__(self, check: AudioCheck | None = None, cache_bytes: int = 256 * 2**20):
        self.check = check or AudioCheck()
        self.cache_bytes = cache_bytes
        self._cache = PreparedCache(self._prepare, max_bytes=cache_bytes, nbytes=lambda fp: fp.nbytes)

    def _prepare(self, path: str) -> np.ndarray | None:
        from ..ingest import SkipItem
        from ..ingest.audio import load_audio

        try:
            wav, _ = load_audio(path, sr=self.check.sr, max_seconds=self.check.max_seconds,
                                read_seconds=self.check.excerpt_seconds, excerpts=1)
        except SkipItem:
            return None
        return fingerprint(wav, self.check).astype(np.float16)  # dB to 0.03 at worst: half the memory

    def prepared(self, path: str | os.PathLike) -> np.ndarray | None:
        """The fingerprint of ``path`` (float16), None when it cannot be decoded; the most recent
        ones are kept up to ``cache_bytes``."""
        return self._cache.get(path)

    def compare(self, A: np.ndarray, B: np.ndarray) -> tuple[bool, dict]:
        ncc, off, overlap = best_alignment(A, B, self.check.min_overlap)
        info = {"ncc": round(ncc, 4), "offset_s": round(off * self.check.hop / self.check.sr, 3),
                "overlap": round(overlap, 3)}
        return bool(ncc >= self.check.min_ncc), info

    def verify(self, a: str | os.PathLike, b: str | os.PathLike) -> tuple[bool, dict]:
        A, B = self.prepared(a), self.prepared(b)
        if A is None or B is None:
            return False, {"reason": "not decodable"}
        return self.compare(A, B)


__all__ = ["AudioCheck", "AudioVerifier", "best_alignment", "fingerprint"]
