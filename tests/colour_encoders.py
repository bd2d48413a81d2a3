"""Two small real encoders for the tests: an image's mean RGB, as is or scaled to unit length."""

from __future__ import annotations

import numpy as np

from mediacluster.encoders import Encoder
from mediacluster.ingest import load_image


class MeanColour(Encoder):
    """Mean RGB of the image: a real (if weak) encoder, enough to show the registry."""

    name, dim = "mean-colour", 3

    @property
    def version(self):
        return "1"

    def prepare(self, path):
        return np.asarray(load_image(path), np.float32).mean((0, 1))

    def encode(self, batch):
        return {"embedding": np.stack(batch)}


class UnitColour(MeanColour):
    """Mean RGB of the image scaled to unit length (a black image: 0 / 0, not finite)."""

    name = "unit-colour"

    def encode(self, batch):
        x = np.stack(batch)
        with np.errstate(invalid="ignore"):
            return {"embedding": x / np.linalg.norm(x, axis=1, keepdims=True)}
