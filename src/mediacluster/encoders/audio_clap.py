"""CLAP (contrastive language-audio pretraining) through ``transformers``, for users with weights.

``--encoder clap:laion/clap-htsat-unfused`` (downloads from the Hugging Face hub when online) or
``--encoder clap:/path/to/local/checkpoint`` (a folder written by ``save_pretrained`` holding the
``ClapModel`` weights and its feature extractor; a tokenizer is optional and enables
``encode_text``). Offline (``HF_HUB_OFFLINE=1``) only local folders or the hub cache are used.
Weights are loaded as safetensors only (``use_safetensors=True``: no pickles).
Licence: that of the checkpoint you choose (LAION's CLAP checkpoints are Apache-2.0 / CC0 data).

Per clip: resampled to the feature extractor's rate (48 kHz), mono, cut into windows of its
``max_length_s`` (10 s; a partial last window kept when at least half full, a short clip
handled by the extractor's own repeat-padding), at most ``max_windows`` per clip, spread over it (a
recording over 300 s is read as 10 excerpts of 30 s spread over it, ``ingest.audio.load_audio``:
three windows each); the projected,
L2-normalised audio embeddings of the windows are averaged and re-normalised.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..data import l2_normalize
from ..ingest.audio import MAX_SECONDS, load_audio, windows
from . import register
from .base import Encoder, mean_of_parts
from .clip import (  # local files first, clear errors
    _load_pretrained,
    _weights_fingerprint,
    check_model_type,
    load_tokenizer,
    local_model,
    text_usable,
)

DEFAULT_MODEL = "laion/clap-htsat-unfused"


class CLAPEncoder(Encoder):
    """``clap:<hub id or local folder>``: CLAP audio embeddings (text tower for naming)."""

    name = "clap"
    media = "audio"

    def __init__(self, model: str = DEFAULT_MODEL, max_seconds: float = MAX_SECONDS,
                 max_windows: int = 12, threads: int | None = None):
        self.model = local_model(model or DEFAULT_MODEL)
        self.max_seconds = max_seconds
        self.max_windows = max_windows
        self.threads = threads
        self._lock = threading.Lock()
        self._model = None
        self._fe = None
        self._tok = None
        self.dim = 0

    @property
    def version(self) -> str:
        """The model and its window count; a local folder also by its weights and feature
        extractor (``clip._weights_fingerprint``: retrained weights saved into the same folder
        are another encoder, whose vectors the cache must not mix with the old ones)."""
        local = Path(self.model)
        if local.is_dir():
            return f"{self.model}#{_weights_fingerprint(local)}-w{self.max_windows}"
        return f"{self.model}-w{self.max_windows}"

    @property
    def spec(self) -> str:
        """``family:model`` with a local folder's absolute path: what ``run.json`` and a saved
        model record, for ``get_encoder`` to load the same folder from any working directory."""
        return f"{self.name}:{self.model}"

    def _feature_extractor(self):
        with self._lock:
            if self._fe is None:
                from transformers import ClapFeatureExtractor

                check_model_type(self.model, "clap", "clap")
                self._fe = _load_pretrained(ClapFeatureExtractor, self.model)
        return self._fe

    def _load(self):
        fe = self._feature_extractor()
        with self._lock:
            if self._model is None:
                import torch
                from transformers import ClapModel

                if self.threads:
                    torch.set_num_threads(self.threads)
                m = _load_pretrained(ClapModel, self.model, use_safetensors=True)
                m.eval()
                self.dim = int(m.config.projection_dim)
                self._model = m
        return self._model, fe

    def prepare(self, path: str):
        fe = self._feature_extractor()
        sr = int(fe.sampling_rate)
        wav, _ = load_audio(path, sr=sr, max_seconds=self.max_seconds)
        length = int(fe.nb_max_samples)
        if len(wav) <= length:
            segs = [wav]
        else:
            segs = list(windows(wav, length, min_fill=0.5, max_windows=self.max_windows))
        feats = fe(segs, sampling_rate=sr, return_tensors="np")
        return feats["input_features"].astype(np.float32), np.asarray(feats["is_longer"]).reshape(-1)

    def encode(self, batch) -> dict[str, np.ndarray]:
        import torch

        model, _ = self._load()
        counts = [len(f) for f, _ in batch]
        x = torch.from_numpy(np.concatenate([f for f, _ in batch]))
        longer = torch.from_numpy(np.concatenate([b for _, b in batch]).astype(bool)).reshape(-1, 1)
        with torch.inference_mode():
            out = model.get_audio_features(input_features=x, is_longer=longer)
            z = out.pooler_output if hasattr(out, "pooler_output") else out
            z = z.float().numpy()
        return {"embedding": mean_of_parts(z, counts)}

    @property
    def has_text(self) -> bool:
        """A text tower with a tokenizer (``clip.has_tokenizer``): zero-shot names."""
        return text_usable(self.model)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        model, _ = self._load()
        with self._lock:
            if self._tok is None:
                self._tok = load_tokenizer(self.model)
        enc = self._tok(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = model.get_text_features(**enc)
            z = out.pooler_output if hasattr(out, "pooler_output") else out
        z = z.float().numpy()
        return l2_normalize(z)


register("clap", CLAPEncoder)
