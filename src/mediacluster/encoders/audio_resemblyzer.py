"""Speaker embeddings from ``resemblyzer`` (GE2E LSTM voice encoder, 256-d, weights in the wheel).

Licence: resemblyzer and its bundled ``pretrained.pt`` are Apache-2.0.

Install: ``pip install --no-deps resemblyzer==0.1.4`` plus ``webrtcvad-wheels librosa scipy``
(pulled in by mediacluster's own dependencies). resemblyzer declares the ``webrtcvad`` source
package (needs a C compiler) and the obsolete ``typing`` backport; ``webrtcvad-wheels`` provides
the same ``webrtcvad`` module prebuilt, hence ``--no-deps``.

What it does, per clip: 16 kHz mono, resemblyzer's own ``preprocess_wav`` (volume normalised to
-30 dBFS, long silences cut with WebRTC VAD), split into 1.6 s partial utterances (40-band mel,
10 ms frames) at 1.3 partials per second, a short clip zero-padded to one partial; the LSTM embeds
every partial and the clip's vector is the L2-normalised mean of its partials (as
``VoiceEncoder.embed_utterance``, but batched over clips), at most ``max_partials`` (64) of them
spread over the clip. A recording longer than 300 s is read as 10 excerpts of 30 s spread over it
(``ingest.audio.load_audio``), and the partials are spread over those. The weights are read by
resemblyzer with ``torch.load``, which in torch >= 2.6 (we pin 2.13) only accepts tensors
(``weights_only=True``), so no arbitrary unpickling happens.
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import ParameterError
from ..ingest import SkipItem
from ..ingest.audio import MAX_SECONDS, load_audio
from . import register
from .base import Encoder, mean_of_parts

RATE = 16000


def _import():
    try:
        import resemblyzer
        from resemblyzer import audio as raudio
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the 'resemblyzer' encoder needs `pip install --no-deps resemblyzer==0.1.4 "
            f"webrtcvad-wheels` ({e})") from e
    return resemblyzer, raudio


class ResemblyzerEncoder(Encoder):
    """``resemblyzer``: who is speaking (256-d, unit length).

    ``threads``: torch threads for the LSTM (default 1, restored afterwards). The small LSTM
    gains nothing from more threads, and on a busy 2-core machine 2 threads ran it 50x slower
    than 1 (0.5 s vs 0.01 s per clip: OpenMP workers wait on each other); decoding runs in
    parallel worker threads anyway.
    """

    name = "resemblyzer"
    media = "audio"
    dim = 256

    def __init__(self, model: str = "", max_seconds: float = MAX_SECONDS, rate: float = 1.3,
                 min_coverage: float = 0.75, max_partials: int = 64, threads: int | None = 1):
        if model and model not in ("ge2e", "pretrained"):
            raise ParameterError(f"resemblyzer: only the bundled 'pretrained' model exists, not {model!r}")
        self.max_seconds = max_seconds
        self.rate = rate
        self.min_coverage = min_coverage
        self.max_partials = max_partials
        self.threads = threads
        self._net = None
        self._lock = threading.Lock()

    #: what every version begins with (the settings follow)
    CODE = "resemblyzer-0.1.4-ge2e-"

    @property
    def version(self) -> str:
        return f"{self.CODE}r{self.rate}-c{self.min_coverage}-p{self.max_partials}"

    @classmethod
    def writes(cls, version: str) -> bool:
        return version.startswith(cls.CODE)

    def _load(self):
        with self._lock:
            if self._net is None:

                resemblyzer, _ = _import()
                net = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
                net.eval()
                self._net = net
        return self._net

    def prepare(self, path: str) -> np.ndarray:
        resemblyzer, raudio = _import()
        wav, _ = load_audio(path, sr=RATE, max_seconds=self.max_seconds)
        pre = raudio.preprocess_wav(wav, source_sr=RATE)
        if len(pre) < int(0.1 * RATE):  # VAD found (almost) no voice: keep the normalised clip
            pre = raudio.normalize_volume(wav, raudio.audio_norm_target_dBFS, increase_only=True)
        if not np.isfinite(pre).all():
            raise SkipItem("audio could not be normalised (non-finite samples)", "corrupt")
        wav_slices, mel_slices = resemblyzer.VoiceEncoder.compute_partial_slices(
            len(pre), self.rate, self.min_coverage)
        if wav_slices[-1].stop >= len(pre):
            pre = np.pad(pre, (0, wav_slices[-1].stop - len(pre)))
        mel = raudio.wav_to_mel_spectrogram(pre)
        if len(mel_slices) > self.max_partials:
            pick = np.linspace(0, len(mel_slices) - 1, self.max_partials).round().astype(int)
            mel_slices = [mel_slices[i] for i in pick]
        return np.stack([mel[s] for s in mel_slices]).astype(np.float32)

    def encode(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        net = self._load()
        counts = [len(b) for b in batch]
        before = torch.get_num_threads()
        if self.threads:  # see ``threads`` in the class doc
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                partial = net(torch.from_numpy(np.concatenate(batch))).numpy()
        finally:
            torch.set_num_threads(before)
        return {"embedding": mean_of_parts(partial, counts)}


register("resemblyzer", ResemblyzerEncoder)
