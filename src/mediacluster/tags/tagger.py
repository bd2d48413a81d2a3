"""``Tagger``: a saved tag model plus the encoder it was trained with, for new files.

>>> from mediacluster.tags import Tagger
>>> tagger = Tagger.load("model/")                          # doctest: +SKIP
>>> tagger.suggest(["photo.jpg"])                            # doctest: +SKIP
[{'item': 'photo.jpg', 'tags': [{'tag': 'animal', 'confidence': 0.97}], 'top': ...}]

``suggest`` accepts file paths (decoded and encoded here, one model call per batch) or an
(n, d) array of vectors from the same encoder. With ``tta=True`` each image is also encoded
horizontally flipped and the two probability vectors are averaged (thresholds were chosen on
un-augmented validation vectors, so TTA is off by default; the benchmark measures both).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..ingest import SkipItem
from .model import TOP_K, TagClassifier


def _flip(x: np.ndarray) -> np.ndarray:
    """Horizontal flip of a prepared image: (H, W, C) channels-last or (C, H, W)."""
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4):
        return np.ascontiguousarray(x[:, ::-1, :])
    if x.ndim == 3:
        return np.ascontiguousarray(x[:, :, ::-1])
    raise InputError(f"cannot flip a prepared input of shape {x.shape}")


class Tagger:
    """A ``TagClassifier`` and the name of the encoder whose vectors it reads."""

    def __init__(self, classifier: TagClassifier, encoder: str | None = "efficientnet-lite0",
                 encoder_id: str | None = None, info: dict | None = None):
        self.classifier = classifier
        self.encoder_name = encoder
        self.encoder_id = encoder_id
        self.info = info or {}
        self._encoder = None

    # -- persistence ----------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        return self.classifier.save(folder, extra={
            "encoder": {"name": self.encoder_name, "id": self.encoder_id}, "info": self.info})

    @classmethod
    def load(cls, folder: str | Path) -> Tagger:
        from ..fileio import read_json

        clf = TagClassifier.load(folder)
        d = read_json(Path(folder) / "model.json")
        enc = d.get("encoder") or {}
        return cls(clf, encoder=enc.get("name"), encoder_id=enc.get("id"), info=d.get("info") or {})

    # -- encoding -------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            if not self.encoder_name or self.encoder_name == "precomputed":
                raise InputError("this tag model was trained on precomputed vectors; pass vectors, not files")
            from ..encoders import get_encoder

            enc = get_encoder(self.encoder_name)
            if self.encoder_id and enc.id != self.encoder_id:
                raise InputError(f"the model was trained on {self.encoder_id} vectors but the installed "
                                 f"encoder is {enc.id}; retrain the tag model")
            self._encoder = enc
        return self._encoder

    def warm_up(self) -> Tagger:
        """Load the encoder and run it once (first calls pay model loading / graph setup)."""
        enc = self.encoder
        import PIL.Image

        im = PIL.Image.new("RGB", (256, 256), (127, 127, 127))
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "warm.png")
            im.save(p)
            enc.encode([enc.prepare(p)])
        return self

    def proba_paths(self, paths: list[str], tta: bool = False, batch_size: int = 32):
        """Probabilities for files: ``(proba (m, k), kept indices, skipped [(path, reason)])``."""
        enc = self.encoder
        k = len(self.classifier.classes_)
        probs, kept, skipped = [], [], []
        for start in range(0, len(paths), batch_size):
            batch, idx = [], []
            for i in range(start, min(len(paths), start + batch_size)):
                try:
                    batch.append(enc.prepare(str(paths[i])))
                    idx.append(i)
                except SkipItem as e:
                    skipped.append((str(paths[i]), str(e)))
            if not batch:
                continue
            p = self.classifier.predict_proba(enc.encode(batch)["embedding"])
            if tta:
                pf = self.classifier.predict_proba(enc.encode([_flip(x) for x in batch])["embedding"])
                p = (p + pf) / 2
            probs.append(p)
            kept.extend(idx)
        proba = np.concatenate(probs) if probs else np.zeros((0, k))
        return proba, np.asarray(kept, dtype=np.int64), skipped

    # -- suggestions ----------------------------------------------------------------------
    def suggest(self, items, top_k: int = 1, tta: bool = False, alternatives: int = 3) -> list[dict]:
        """Suggested tags per item: ``{"item", "tags": [{"tag", "confidence"}], "top": [...]}``.

        ``tags`` is empty when no tag clears its threshold (the tagger abstains); ``top`` lists
        the ``alternatives`` most probable labels for people reviewing abstentions. Items that
        cannot be decoded get ``"skipped": reason``.
        """
        TOP_K.check(top_k, "top_k")  # before any file is read
        if isinstance(items, np.ndarray):
            names = [str(i) for i in range(len(items))] if items.ndim == 2 else ["0"]
            proba = self.classifier.predict_proba(items)
            kept = np.arange(len(proba))
            skipped: list[tuple[str, str]] = []
        else:
            names = [str(p) for p in ([items] if isinstance(items, str | Path) else items)]
            proba, kept, skipped = self.proba_paths(names, tta=tta)
        sugg = self.classifier.suggest_proba(proba, top_k=top_k)
        out: list[dict] = [{"item": n} for n in names]
        classes = self.classifier.classes_
        for row, i, s in zip(proba, kept, sugg):
            top = np.argsort(-row)[:alternatives]
            out[i]["tags"] = [{"tag": t, "confidence": round(c, 4)} for t, c in s]
            out[i]["top"] = [{"label": str(classes[j]), "probability": round(float(row[j]), 4)} for j in top]
        reasons = dict(skipped)
        for d in out:
            if "tags" not in d:
                d["tags"] = []
                d["skipped"] = reasons.get(d["item"], "not processed")
        return out
