"""What every encoder provides.

An encoder turns decoded items into vectors. It is split in two so that decoding and
preprocessing (``prepare``, runs in worker threads, must be thread-safe) overlap with inference
(``encode``, runs in the main thread on a batch).
"""

from __future__ import annotations

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

    @abstractmethod
    def prepare(self, path: str) -> Any:
        """Decode and preprocess one file into the model's input (thread-safe).

        Raises ``mediacluster.ingest.SkipItem`` with a human reason when the file is unusable.
        """

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
