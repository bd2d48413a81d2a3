"""``Tagger``: a saved tag model plus the encoder it was trained with, for new files.

>>> from mediacluster.tags import Tagger
>>> tagger = Tagger.load("model/")                          # doctest: +SKIP
>>> tagger.suggest(["photo.jpg"])                            # doctest: +SKIP
[{'item': 'photo.jpg', 'tags': [{'tag': 'animal', 'confidence': 0.97}], 'top': ...}]

``suggest`` accepts file paths (decoded and encoded here, one model call per batch), folders
and manifests (their media files, found as ``cluster`` finds them), files of vectors (``.npy``,
``.npz``, a table with a vector column: the only input a model trained on vectors takes), or an
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


PRECOMPUTED = ("this tag model was trained on precomputed vectors (it names no encoder to read files with): "
               "give vectors from the encoder that made its training vectors, a .npy / .npz file or a table "
               "with a vector column (in Python: an (n, d) array), not media files or folders")


def _one_media_file(source) -> bool:
    """Whether ``source`` names one media file (by its extension), not a folder, a manifest or vectors."""
    from ..ingest.sources import MEDIA_EXTENSIONS

    p = Path(source)
    return not p.is_dir() and p.suffix.lower() in set().union(*MEDIA_EXTENSIONS.values())


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
                raise InputError(PRECOMPUTED)
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
        if not isinstance(items, np.ndarray):
            sources = [items] if isinstance(items, str | Path) else list(items)
            if not all(_one_media_file(s) for s in sources):
                return self._suggest_sources(sources, top_k, tta, alternatives)
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

    def _suggest_sources(self, sources: list, top_k: int, tta: bool, alternatives: int) -> list[dict]:
        """:meth:`suggest` for a mix of media files, folders / manifests (their media files, as
        ``ingest.collect`` finds them for ``cluster``) and vectors files (their rows, named by
        their paths or ``FILE#id``), in the order given. A source that cannot be read is one
        skipped item with its reason; the others go on."""
        from ..ingest import collect

        precomputed = not self.encoder_name or self.encoder_name == "precomputed"
        out: list[dict] = []
        files: list[str] = []

        def flush():
            if files:
                out.extend(self.suggest(list(files), top_k=top_k, tta=tta, alternatives=alternatives))
                files.clear()

        for src in sources:
            if _one_media_file(src):
                if precomputed:
                    raise InputError(f"{src}: {PRECOMPUTED}")
                files.append(str(src))
                continue
            flush()
            try:
                coll = collect(src, media=getattr(self.encoder, "media", "image") if not precomputed else "image")
            except InputError as e:
                out.append({"item": str(src), "tags": [], "skipped": str(e)})
                continue
            if coll.vectors is None and precomputed:
                raise InputError(f"{src}: {PRECOMPUTED}")
            if coll.vectors is not None:
                names = [p or f"{src}#{i}" for p, i in zip(coll.paths or [None] * len(coll), coll.ids)]
                res = self.suggest(np.asarray(coll.vectors), top_k=top_k, alternatives=alternatives)
                for r, name in zip(res, names):
                    r["item"] = name
                out.extend(res)
            elif len(coll):
                out.extend(self.suggest(list(coll.paths), top_k=top_k, tta=tta, alternatives=alternatives))
            out.extend({"item": str(k.path), "tags": [], "skipped": str(k.reason)} for k in coll.skipped)
            if not len(coll) and not coll.skipped:
                out.append({"item": str(src), "tags": [], "skipped": "no media files in it"})
        flush()
        return out
