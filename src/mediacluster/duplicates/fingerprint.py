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

**Long recordings** (over ``excerpt_seconds``, 120 s) are never decoded whole. Their fingerprint
(``Fingerprint``) has two parts, read by seeking (``ingest.audio.excerpt_spans``):

* the **block**: the middle 120 s (a shorter clip: all of it). Two blocks are compared as two
  clips are, so a pair costs at most two 120 s spectrograms whatever the files' lengths. The
  middles of a copy trimmed or padded unevenly at its two ends are shifted by half the
  difference, which the alignment finds while the two middles still overlap by ``min_overlap``
  (0.7 of 120 s: up to 72 s more cut at one end than at the other);
* the **probes**: ``probes`` (30) pieces of ``probe_seconds`` (5 s) spread evenly over the file,
  the first at its start and the last at its end (150 s of audio, whatever the length). When the
  blocks do not match, each probe of one file is looked for inside the other's block: a coarse
  pass (the spectrogram averaged into bands of ``coarse_bins`` bins) finds its best offset, and
  the full spectrogram around it (``coarse_margin`` frames either side) decides, at ``min_ncc``.
  A clip shorter than a probe is left to the blocks: a second of speech inside 150 s of probes
  of the same voice saying the same words met another take of its word at 0.954 (the threshold
  is 0.96), where the middle 120 s alone gave 0.927 at most (benchmarks/long_audio_excerpts.py
  at 8e171fd), while the probes would find such a clip only by chance (its length over their
  spacing).
  The pair is linked when the probes found agree on one alignment (within ``probe_tolerance``
  frames) and they are at least ``probe_share`` of the probes which, at that alignment, lie
  inside the block (near-silent probes are not counted). So an excerpt cut from anywhere in a
  long recording is found when one of the recording's probes lies inside the excerpt's block: an
  excerpt longer than the probes' spacing plus a probe (duration / 29 + 5 s: about 2 min for an
  hour) always has one; a shorter one by chance (its length less 5 s, over the spacing); and one file's probes are matched as a set,
  so a short stretch the two share (an intro jingle) does not link two recordings whose blocks
  hold more. Measured: benchmarks/long_audio_excerpts.py (benchmarks/RESULTS.md, "Audio: long
  recordings, second pass").

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
    fmax: float = 3000.0         # highest frequency bin kept (Hz): 189 bins of 15.6 Hz
    floor_db: float = 40.0       # bins more than this below the clip's loudest are set to the floor
    max_seconds: float = MAX_SECONDS  # a header claiming more is refused (the pair stays unlinked)
    excerpt_seconds: float = 120.0  # a longer file's block: its middle this many seconds
    probes: int = 30             # a longer file's probes: this many pieces spread over it (0: none)
    probe_seconds: float = 5.0   # each probe this long
    probe_share: float = 0.5     # probes found / probes lying inside the other's block, at least
    probe_tolerance: int = 2     # frames two found probes' alignments may differ by
    coarse_bins: int = 12        # the coarse pass averages this many bins into one band
    coarse_margin: int = 3       # frames either side of the coarse offset the full check searches


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


#: the frames of a clip's :func:`profile`: those within this many dB of its loudest bin
PROFILE_DB = 30.0
#: candidates per audio clip from its spectrum profile (:func:`profile`: level- and silence-free),
#: beside its ``n_neighbors`` nearest vectors, for the finder (``finder.AUDIO_PROFILE_NEIGHBORS``)
#: and a new clip's query (``DuplicateIndex``); 0: vectors only. On 50 FSDD clips reposted louder
#: (limited), padded, and both with MP3, the original was among the 10 nearest profiles of each
#: of the 200 reposts (benchmarks/audio_padded.py)
PROFILE_NEIGHBORS = 10


def profile(fp) -> np.ndarray | None:
    """A clip's spectrum whatever its level and the silence around it: per frequency bin of its
    fingerprint (``Fingerprint`` or a bare spectrogram; dB under the clip's loudest bin), the
    mean and the spread over its frames whose loudest bin is within :data:`PROFILE_DB` of the
    clip's (silence, padding and room noise left out). float32, 2 x bins; None for None. The
    duplicate finder's second source of audio candidates: a copy made louder (and limited) or
    padded keeps its profile where its MFCC vector, which holds the level, moves."""
    if fp is None:
        return None
    b = np.asarray(_as_fingerprint(fp).block, np.float32)
    loud = b.max(0) > -PROFILE_DB
    b = b[:, loud] if loud.any() else b
    return np.concatenate([b.mean(1), b.std(1)]).astype(np.float32)


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


@dataclass(frozen=True)
class Fingerprint:
    """What the check compares of one file (see the module docstring): ``block`` (bins, frames),
    the whole clip or the middle ``excerpt_seconds`` of a longer one, starting ``block_start_s``
    into it; for a longer one ``probes`` (k, bins, frames), pieces of ``probe_seconds`` starting
    ``probe_starts_s`` into it (None: a clip read whole). float16 dB."""

    block: np.ndarray
    block_start_s: float = 0.0
    duration_s: float = 0.0
    probes: np.ndarray | None = None
    probe_starts_s: tuple[float, ...] = ()

    @property
    def nbytes(self) -> int:
        return int(self.block.nbytes + (0 if self.probes is None else self.probes.nbytes))


def _as_fingerprint(x) -> Fingerprint:
    return x if isinstance(x, Fingerprint) else Fingerprint(np.asarray(x))


#: the coarse pass also averages this many consecutive frames into one
_COARSE_FRAMES = 2


def _coarse(a: np.ndarray, bins: int) -> np.ndarray:
    """``a`` (..., bins, frames) with every ``bins`` consecutive bins and every
    ``_COARSE_FRAMES`` consecutive frames averaged (float32)."""
    a = np.asarray(a, np.float32)
    edges = np.arange(0, a.shape[-2], max(1, int(bins)))
    a = np.add.reduceat(a, edges, axis=-2) / np.diff(np.append(edges, a.shape[-2]))[:, None]
    t = a.shape[-1] // _COARSE_FRAMES * _COARSE_FRAMES
    return a[..., :t].reshape(*a.shape[:-1], -1, _COARSE_FRAMES).mean(-1)


def _coarse_offsets(block: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each probe (k, bands, m) the offset in ``block`` (bands, n >= m) where it lies wholly
    inside and correlates best (normalised, over every band and frame), and that correlation:
    all probes in one FFT pass, the block's transform shared."""
    from scipy import fft

    k, _, m = probes.shape
    n = block.shape[1]
    size = fft.next_fast_len(n + m - 1, real=True)
    X = fft.rfft(block.astype(np.float64), size, axis=1)
    P = fft.rfft(probes.astype(np.float64), size, axis=2)
    xc = fft.irfft(np.einsum("bf,kbf->kf", X, P.conj()), size, axis=1)[:, :n - m + 1]
    cnt = m * block.shape[0]
    c1 = np.concatenate([[0.0], np.cumsum(block.sum(0, dtype=np.float64))])
    c2 = np.concatenate([[0.0], np.cumsum((block.astype(np.float64) ** 2).sum(0))])
    s1 = c1[m:] - c1[:-m]
    s2 = c2[m:] - c2[:-m]
    p1 = probes.sum((1, 2), dtype=np.float64)[:, None]
    p2 = (probes.astype(np.float64) ** 2).sum((1, 2))[:, None]
    den = np.sqrt(np.maximum(s2 - s1 * s1 / cnt, 0)[None] * np.maximum(p2 - p1 * p1 / cnt, 0))
    ncc = np.where(den > 1e-9, (xc - s1[None] * p1 / cnt) / np.maximum(den, 1e-9), -1.0)
    at = ncc.argmax(1)
    return at, ncc[np.arange(k), at]


def _refloored(block: np.ndarray, probe: np.ndarray, near: int, check: AudioCheck) -> tuple[float, int]:
    """The best correlation of ``probe`` with ``block`` at offsets within ``check.coarse_margin``
    frames of ``near`` where ``probe`` lies wholly inside ``block``, and the offset (frames
    ``probe`` starts after ``block``). Each is in dB below its own loudest bin, the
    block below the block's, the probe below the probe's: at each offset both are re-floored to
    the same level below the loudest bin of the stretch compared, so a quiet stretch of a loud
    block is compared with the probe as if both had been cut alone. Both float32."""
    nb, npr = block.shape[1], probe.shape[1]
    m = check.coarse_margin
    best, at = -1.0, 0
    for o in range(max(near - m, 0), min(near + m, nb - npr) + 1):
        seg, short = block[:, o:o + npr], probe
        top_s, top_q = float(seg.max()), float(short.max())
        # both relative to their own loudest bin, floored where the higher of the two floors lies
        fl = -float(check.floor_db) - min(top_s, top_q)
        a = np.maximum(seg - top_s, fl).ravel()
        b = np.maximum(short - top_q, fl).ravel()
        a -= a.mean()
        b -= b.mean()
        den = float(np.sqrt((a @ a) * (b @ b)))
        if den > 1e-9 and (a @ b) / den > best:
            best, at = float((a @ b) / den), o
    return best, at


def find_probes(probes: np.ndarray, starts_s, block: np.ndarray, block_start_s: float,
                check: AudioCheck) -> tuple[bool, dict]:
    """Look for each probe (k, bins, frames) inside ``block`` (bins, frames); see the module
    docstring. Returns ``(linked, info)``: ``info["ncc"]`` the best probe's correlation,
    ``shift_s`` the block's file time minus the probes' file time at the agreed alignment,
    ``probes`` "found/expected"."""
    hop_s = check.hop / check.sr
    nb = block.shape[1]
    probes = np.asarray(probes, np.float32)
    live = [i for i in range(len(probes)) if float(probes[i].std()) >= 1.0]  # near silent: all floor
    if not live:
        return False, {"ncc": None, "top": None, "probes": "0/0"}
    block = np.asarray(block, np.float32)
    cblock = _coarse(block, check.coarse_bins)
    cprobes = _coarse(probes[live], check.coarse_bins)
    if cprobes.shape[2] > cblock.shape[1]:  # a clip shorter than a probe: its block alone decides
        return False, {"ncc": None, "top": None, "probes": "0/0"}
    near = _coarse_offsets(cblock, cprobes)[0]
    found = []  # (ncc, shift in frames, probe index)
    top = -1.0
    for i, off in zip(live, near):  # the coarse correlation itself says little: the floors differ
        ncc, at = _refloored(block, probes[i], int(off) * _COARSE_FRAMES, check)
        top = max(top, ncc)
        if ncc >= check.min_ncc:
            found.append((ncc, at + (block_start_s - starts_s[i]) / hop_s, i))
    if not found:
        return False, {"ncc": None, "top": round(top, 4), "probes": f"0/{len(live)}"}
    best, shift, _ = max(found)
    agree = sum(1 for _, s, _ in found if abs(s - shift) <= check.probe_tolerance)
    plen = probes.shape[2]
    # the live probes which, at this alignment, lie wholly inside the block, as every probe found does
    expected = 0
    for i in live:
        a = starts_s[i] / hop_s + shift - block_start_s / hop_s
        expected += min(nb, a + plen) - max(0.0, a) >= plen - check.probe_tolerance
    need = max(1, int(np.ceil(check.probe_share * expected)))
    return bool(agree >= need), {"ncc": round(float(best), 4), "top": round(top, 4),
                                 "shift_s": round(float(shift) * hop_s, 3), "probes": f"{agree}/{expected}"}


class AudioVerifier:
    """The fingerprint check of two audio files, with a cache of fingerprints (``Fingerprint``).

    ``verify(a, b)`` takes two audio paths and returns ``(ok, info)`` like
    ``verify.GeometricVerifier``; ``info`` has the correlation, the offset (seconds: where in
    ``a``'s time ``b`` starts, negative when before ``a``'s start) and the overlap of the blocks (of
    the shorter one), or, for a pair linked by
    its probes, ``by: "probes"``, the best probe's correlation, the offset and ``probes``
    ("found/expected"); an unlinked pair with probes also has ``probe_ncc``, the best probe's. A file that cannot be decoded fails the check (the pair stays unlinked). Safe to
    call from several threads. A cached fingerprint costs 189 bins x 2 bytes per 10 ms
    (~38 KB for a second of audio; 9.7 MiB at most: a long file's middle 120 s, 4.3 MiB, and its
    30 probes of 5 s, 5.3 MiB); ``cache_bytes`` bounds them. A pair found by its blocks costs
    what it did; a pair with a long file whose blocks do not match also looks for the probes
    (tens of ms: benchmarks/RESULTS.md, "Audio: long recordings, second pass").
    """

    def __init__(self, check: AudioCheck | None = None, cache_bytes: int = 256 * 2**20):
        self.check = check or AudioCheck()
        self.cache_bytes = cache_bytes
        self._cache = PreparedCache(self._prepare, max_bytes=cache_bytes, nbytes=lambda fp: fp.nbytes)

    def _prepare(self, path: str) -> Fingerprint | None:
        from ..ingest import SkipItem
        from ..ingest.audio import load_audio_read

        c = self.check
        try:
            r = load_audio_read(path, sr=c.sr, max_seconds=c.max_seconds, read_seconds=c.excerpt_seconds,
                                excerpts=1)
        except SkipItem:
            return None
        block = fingerprint(r.wav, c).astype(np.float16)  # dB to 0.03 at worst: half the memory
        if not r.partial or c.probes <= 0:
            return Fingerprint(block, 0.0, r.duration_s)
        probes, starts = None, ()
        n = int(round(c.probe_seconds * c.sr))
        try:
            p = load_audio_read(path, sr=c.sr, max_seconds=c.max_seconds,
                                read_seconds=c.probes * c.probe_seconds, excerpts=c.probes)
        except SkipItem:
            p = None  # every probe silent, or the file gave out: the block alone
        if p is not None:
            if p.partial:  # the excerpts one after the other, each as long
                starts = tuple(a for a, _ in p.spans_s)
                seg = len(p.wav) // len(starts)
                pieces = [p.wav[k * seg:(k + 1) * seg] for k in range(len(starts))]
            else:  # not much longer than the block: the file read whole, cut into probes
                starts = tuple(k * c.probe_seconds for k in range(max(1, len(p.wav) // n)))
                pieces = [p.wav[k * n:(k + 1) * n] for k in range(len(starts))]
            pieces = [w for w in pieces if len(w) >= c.n_fft]
            starts = starts[:len(pieces)]
            if pieces:
                probes = np.stack([fingerprint(_fit(w, n), c) for w in pieces]).astype(np.float16)
        return Fingerprint(block, r.spans_s[0][0], r.duration_s, probes, starts if probes is not None else ())

    def prepared(self, path: str | os.PathLike) -> Fingerprint | None:
        """The fingerprint of ``path`` (``Fingerprint``), None when it cannot be decoded; the
        most recent ones are kept up to ``cache_bytes``."""
        return self._cache.get(path)

    def compare(self, A, B) -> tuple[bool, dict]:
        """Are fingerprints ``A`` and ``B`` (``Fingerprint``, or a bare spectrogram) of the same
        recording? The blocks first; then each file's probes inside the other's block."""
        A, B = _as_fingerprint(A), _as_fingerprint(B)
        ncc, off, overlap = best_alignment(A.block, B.block, self.check.min_overlap)
        at = A.block_start_s + off * self.check.hop / self.check.sr - B.block_start_s  # in A's time
        info = {"ncc": round(ncc, 4), "offset_s": round(at, 3), "overlap": round(overlap, 3)}
        if ncc >= self.check.min_ncc:
            return True, info
        best = None
        for X, Y, sign in ((A, B, -1.0), (B, A, 1.0)):
            if X.probes is None or not len(X.probes):
                continue
            ok, pinfo = find_probes(X.probes, X.probe_starts_s, Y.block, Y.block_start_s, self.check)
            if ok:  # offset_s: file time B starts after A, as for the blocks
                return True, {"ncc": pinfo["ncc"], "offset_s": round(sign * pinfo["shift_s"], 3),
                              "probes": pinfo["probes"], "by": "probes"}
            if best is None or (pinfo["top"] or -1) > (best["top"] or -1):
                best = pinfo
        if best is not None:  # the best probe's correlation, and the probes found / expected
            info["probe_ncc"], info["probes"] = best["top"], best["probes"]
        return False, info

    def verify(self, a: str | os.PathLike, b: str | os.PathLike) -> tuple[bool, dict]:
        A, B = self.prepared(a), self.prepared(b)
        if A is None or B is None:
            return False, {"reason": "not decodable"}
        return self.compare(A, B)


def _fit(w: np.ndarray, n: int) -> np.ndarray:
    return w[:n] if len(w) >= n else np.pad(w, (0, n - len(w)))


__all__ = ["AudioCheck", "AudioVerifier", "Fingerprint", "best_alignment", "find_probes", "fingerprint", "profile"]
