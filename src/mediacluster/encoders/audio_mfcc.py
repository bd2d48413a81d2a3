"""Classical audio features: MFCC + deltas, summarised over time (librosa). The default for audio.

No model weights, so no licence questions and nothing to download; works on any machine.

Per clip (resampled to 16 kHz, mono; the silence it was padded with stripped to the sample,
``ingest.audio.strip_silence``: ends 60 dB under the peak, so a repost padded with 1-3 s of
zeros is the clip's own vector; then leading/trailing silence trimmed at ``trim_db`` below the
peak): a 40-band log-mel spectrogram (32 ms window, 10 ms hop), ``n_mfcc`` MFCCs liftered as HTK
does (``lifter`` 22, HTK's default: coefficient n scaled by 1 + 11 sin(pi n / 22), n = 1..20), their
first and second deltas; the vector is the mean and standard deviation over time of all three
(``6 * n_mfcc`` values) followed by the MFCC means of ``segments`` equal parts of the clip
(``segments * n_mfcc``; keeps the coarse order of sounds, which summary statistics lose).
Default: 20 MFCCs, 3 segments -> 180 dimensions. The summary statistics are the pooling over
windows: a clip contributes all its frames; a recording longer than 300 s, those of the 10
excerpts of 30 s spread over it that ``ingest.audio.load_audio`` reads (one after the other, so
the segments follow the recording's beginning, middle and end).

Why the lifter: unliftered, c0 (the frame's log energy: loudness) and c1 (spectral tilt) are the
largest coefficients by far; on FSDD c0 held 82% of a vector's squared norm (94% with c1), so
cosine similarity compared mostly loudness and a clip made 10 dB quieter was often nearer other
clips than its own. Liftered, c0 holds 52% and the higher coefficients (the vocal tract's shape)
count: FSDD's engine auto level digit NMI 0.650 -> 0.689, speaker 0.557 -> 0.600, K-means told
6 speakers 0.514 -> 0.724 (``benchmarks/RESULTS.md``, "The default audio vector's scale").
The rule is the feature's own convention, per clip: no statistic of a collection enters a vector.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from ..ingest.audio import MAX_SECONDS, load_audio, strip_silence
from . import register
from .base import Encoder


def mfcc_features(wav: np.ndarray, sr: int = 16000, n_mfcc: int = 20, n_mels: int = 40,
                  segments: int = 3, trim_db: float | None = 30.0, lifter: int = 22) -> np.ndarray:
    """The feature vector described in the module docstring for one mono waveform."""
    import librosa

    if trim_db is not None:
        wav = strip_silence(wav)
        trimmed, _ = librosa.effects.trim(wav, top_db=trim_db)
        if len(trimmed) > 0:
            wav = trimmed
    n_fft = int(round(0.032 * sr))
    hop = int(round(0.010 * sr))
    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    S = librosa.feature.melspectrogram(y=wav, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels,
                                       fmax=sr / 2)
    L = librosa.power_to_db(S + 1e-10)
    M = librosa.feature.mfcc(S=L, n_mfcc=n_mfcc, lifter=lifter)
    if M.shape[1] < 3:
        M = np.pad(M, ((0, 0), (0, 3 - M.shape[1])), mode="edge")
    T = M.shape[1]
    width = max(3, min(9, T if T % 2 else T - 1))
    d1 = librosa.feature.delta(M, width=width, mode="nearest")
    d2 = librosa.feature.delta(M, order=2, width=width, mode="nearest")
    F = np.concatenate([M, d1, d2])
    edges = np.linspace(0, T, segments + 1).astype(int)
    segs = [M[:, a:max(b, a + 1)].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])]
    return np.concatenate([F.mean(axis=1), F.std(axis=1), *segs]).astype(np.float32)


class MFCCEncoder(Encoder):
    """``mfcc`` (default audio encoder): MFCC/delta summary statistics, 180-d."""

    name = "mfcc"
    media = "audio"

    def __init__(self, model: str = "", sr: int = 16000, n_mfcc: int = 20, segments: int = 3,
                 trim_db: float | None = 30.0, max_seconds: float = MAX_SECONDS, lifter: int = 22):
        if model and model not in ("stats", "mfcc"):
            raise ParameterError(f"mfcc: unknown variant {model!r} (only 'stats')")
        if int(lifter) < 0:
            raise ParameterError(f"mfcc: lifter must be 0 (none) or more, not {lifter!r}")
        self.sr = sr
        self.n_mfcc = n_mfcc
        self.segments = segments
        self.trim_db = trim_db
        self.max_seconds = max_seconds
        self.lifter = int(lifter)
        self.dim = n_mfcc * (6 + segments)

    #: the code's version, the end of every id (v2: strip_silence; v3: liftered, HTK's lifter 22)
    CODE = "v3"

    @property
    def version(self) -> str:
        return f"sr{self.sr}-m{self.n_mfcc}-s{self.segments}-t{self.trim_db}-l{self.lifter}-{self.CODE}"

    @classmethod
    def writes(cls, version: str) -> bool:
        return version.endswith(f"-{cls.CODE}")

    def prepare(self, path: str) -> np.ndarray:
        wav, sr = load_audio(path, sr=self.sr, max_seconds=self.max_seconds)
        return mfcc_features(wav, sr, n_mfcc=self.n_mfcc, segments=self.segments,
                             trim_db=self.trim_db, lifter=self.lifter)

    def encode(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"embedding": np.stack(batch).astype(np.float32, copy=False)}


register("mfcc", MFCCEncoder)
