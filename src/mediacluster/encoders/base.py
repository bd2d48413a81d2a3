"""What every encoder provides.

An encoder turns decoded items into vectors. It is split in two so that decoding and
preprocessing (``prepare``, runs in worker threads, must be thread-safe) overlap with inference
(``encode``, runs in the main thread on a batch).
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Encoder(ABC):
    #: registry name, e.g. "efficientnet-lite0" or "clip"
    name: str = ""
    #: "image" or "audio": which loader feeds it
    media: str = "image"
    #: output dimension of the main vector
    dim: int = 0

    @property
    def id(self) -> str:
        """Identifies the outputs: two encoders with equal ids give equal vectors.

        The embedding cache keys vectors by (content hash, id), so anything that changes the
        numbers (weights, preprocessing, model name) must change it.
        """
        return f"{self.name}@{self.version}"

    @property
    @abstractmethod
    def version(self) -> str: ...

    @classmethod
    def writes(cls, version: str) -> bool | None:
        """Whether this package still writes vectors under ``version`` (the part of an id after
        "@", as the embedding cache holds it), with some settings: False for an older version
        of the family's code, whose cached rows no run reads again (``mediacluster cache``
        marks them stale); None where that cannot be told without loading a model (a CLIP or
        CLAP checkpoint's fingerprint). A family whose code changes its numbers overrides it."""
        return None

    @abstractmethod
    def prepare(self, path: str) -> Any:
        """Decode and preprocess one file into the model's input (thread-safe).

        Raises ``mediacluster.ingest.SkipItem`` with a human reason when the file is unusable.
        """

    def prepare_bytes(self, data: bytes, name: str = "") -> Any:
        """``prepare`` for a file's content held in memory (an upload), same checks and result.

        This default writes the bytes to a private temporary file (suffix taken from ``name``,
        which loaders may use to pick a decoder) and prepares that; image encoders override it
        to decode from memory. Raises ``SkipItem`` like ``prepare``.
        """
        suffix = os.path.splitext(os.path.basename(name))[1][:16] if name else ""
        fd, path = tempfile.mkstemp(prefix="mediacluster-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self.prepare(path)
        finally:
            os.unlink(path)

    @abstractmethod
    def encode(self, batch: list[Any]) -> dict[str, np.ndarray]:
        """Run the model on prepared inputs.

        Returns ``{"embedding": (n, dim) float32, ...extras}``; extras (such as
        ``imagenet_probs``) are stored and passed on to later stages.
        """

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Text vectors in the same space as images (CLIP-like encoders only)."""
        raise NotImplementedError(f"encoder {self.name!r} has no text tower")

    @property
    def has_text(self) -> bool:
        return False

    def info(self) -> dict:
        return {"name": self.name, "id": self.id, "media": self.media, "dim": self.dim}


def mean_of_parts(parts: np.ndarray, counts, normalize: bool = True) -> np.ndarray:
    """Each item's embedding from the embeddings of its parts (a clip's windows or partials):
    ``parts`` holds every item's rows in order, ``counts`` how many rows each item has; their
    mean (float32), scaled to unit length when ``normalize``."""
    from ..data import l2_normalize

    out = np.zeros((len(counts), parts.shape[1]), np.float32)
    start = 0
    for i, c in enumerate(counts):
        v = parts[start:start + c].mean(axis=0)
        out[i] = l2_normalize(v) if normalize else v
        start += c
    return out
