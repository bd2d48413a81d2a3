"""CLIP through Hugging Face ``transformers``: image vectors and text vectors in one space.

``get_encoder("clip:openai/clip-vit-base-patch32")`` or ``get_encoder("clip:/path/to/dir")``
(a folder written by ``save_pretrained`` holding the model, tokenizer and image processor).
Vectors are L2-normalised, so cosine similarity is a dot product; ``encode_text`` gives text
vectors for naming and zero-shot tags.

Offline first: the model is looked up in the local Hugging Face cache before anything else, and
the network is tried only if it is not there and ``HF_HUB_OFFLINE`` is not set.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from ..ingest import load_image
from . import register
from .base import Encoder

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
log = logging.getLogger(__name__)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes")


def _load_pretrained(cls, model: str, **kw):
    """``cls.from_pretrained`` from local files first; the hub only if allowed and needed. A model
    that cannot be loaded (no such folder, not in the local cache and no network, a malformed
    name) is a ``ParameterError`` naming it, not a crash."""
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
        raise ParameterError(f"encoder: model folder {model} does not exist (a local folder written by "
                             "save_pretrained, or a Hugging Face hub name)", "encoder")
    try:
        try:
            return cls.from_pretrained(model, local_files_only=True, **kw)
        except OSError:
            if Path(model).exists() or _offline():
                raise
        return cls.from_pretrained(model, **kw)
    except (OSError, ValueError) as e:  # transformers / huggingface_hub: OSError, HFValidationError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ParameterError(
            f"encoder: cannot load {cls.__name__} from {model!r} ({first}); give a local folder written "
            "by save_pretrained, or a Hugging Face hub name that is in the local cache (or reachable)",
            "encoder") from None


def local_model(model: str) -> str:
    """``model`` as the encoder keeps it: a local folder (``./model``, ``~/models/clip``, a bare
    ``model`` that is a folder here) as its absolute path, so the encoder's id, ``run.json`` and
    a saved model name that folder from any working directory, and two folders that share a
    name never share cached vectors; a hub name as given."""
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local.resolve())
    return model


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model", "vocab.txt")


def has_tokenizer(model: str) -> bool:
    """Whether ``model`` can embed text: a local folder only with a tokenizer's files in it
    (without them ``transformers`` builds an empty tokenizer that gives every text the same
    vector, so every cluster would be named alike); a hub name is assumed to have one."""
    local = Path(model)
    return not local.is_dir() or any((local / f).exists() for f in TOKENIZER_FILES)


def check_model_type(model: str, expected: str, family: str) -> None:
    """Refuse a checkpoint of another kind before loading it: ``transformers`` loads a CLAP
    folder as a CLIP model with every weight newly random (a warning table, then vectors of
    noise under a CLIP id in the cache)."""
    from transformers import AutoConfig

    kind = getattr(_load_pretrained(AutoConfig, model), "model_type", None)
    if kind != expected:
        hint = {"clip": "--encoder clip:", "clap": "--encoder clap:"}.get(kind, "an encoder for it")
        raise ParameterError(f"encoder: {model} holds a {kind!r} model, not {expected!r}, so the {family} "
                             f"encoder cannot use it (use {hint}{model} if that is what it is)", "encoder")


def _weights_fingerprint(folder: Path) -> str:
    """Cheap identity of a local model folder: config bytes + weight files' names and sizes."""
    h = hashlib.blake2b(digest_size=8)
    cfg = folder / "config.json"
    if cfg.exists():
        h.update(cfg.read_bytes())
    for p in sorted(folder.iterdir()):
        if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5"):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for name in ("preprocessor_config.json", "processor_config.json"):
        if (folder / name).exists():
            h.update((folder / name).read_bytes())
    return h.hexdigest()


class ClipEncoder(Encoder):
    """CLIP image tower (``embedding``: normalised image vectors) plus ``encode_text``.

    ``model``: a hub name (``openai/clip-vit-base-patch32``) or a local folder.
    ``threads``: PyTorch intra-op threads (default: all cores).
    """

    name = "clip"
    media = "image"

    def __init__(self, model: str = DEFAULT_MODEL, threads: int | None = None):
        self.model = local_model(model or DEFAULT_MODEL)
        self.threads = threads
        self._model = None
        self._processor = None
        self._tokenizer = None
        self._fingerprint = None
        self._dim = None
        self._lock = threading.Lock()

    # -- loading ----------------------------------------------------------------------------
    def _load(self):
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                import torch
                from transformers import CLIPModel

                try:  # transformers >= 5: the PIL processor by its own name (no torchvision)
                    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
                except ImportError:
                    from transformers import CLIPImageProcessor

                if self.threads:
                    torch.set_num_threads(self.threads)
                check_model_type(self.model, "clip", "clip")
                model = _load_pretrained(CLIPModel, self.model)
                model.eval()
                self._processor = _load_pretrained(CLIPImageProcessor, self.model)
                _check_image_size(self._processor, model.config, self.model)
                local = Path(self.model)
                if local.is_dir():
                    self._fingerprint = _weights_fingerprint(local)
                else:
                    commit = getattr(model.config, "_commit_hash", None)
                    self._fingerprint = commit or hashlib.blake2b(
                        json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode(),
                        digest_size=8).hexdigest()
                self._dim = int(model.config.projection_dim)
                self._model = model
        return self._model

    def _load_tokenizer(self):
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = load_tokenizer(self.model)
        return self._tokenizer

    @property
    def dim(self) -> int:  # type: ignore[override]
        self._load()
        return self._dim

    @property
    def version(self) -> str:
        self._load()
        size = getattr(self._processor, "crop_size", None) or getattr(self._processor, "size", None)
        return f"{self.model}#{self._fingerprint}#crop{_size_str(size)}"

    @property
    def spec(self) -> str:
        """``family:model`` with a local folder's absolute path: what ``run.json`` and a saved
        model record, for ``get_encoder`` to load the same folder from any working directory."""
        return f"{self.name}:{self.model}"

    @property
    def has_text(self) -> bool:
        """A text tower with a tokenizer (:func:`has_tokenizer`): zero-shot names, word search."""
        return text_usable(self.model)

    # -- the Encoder interface ----------------------------------------------------------------
    def prepare(self, path) -> np.ndarray:
        self._load()
        im = load_image(path, draft_size=2 * _short_side(self._processor))
        px = self._processor(images=im, return_tensors="np")["pixel_values"][0]
        return np.ascontiguousarray(px, dtype=np.float32)

    def prepare_bytes(self, data: bytes, name: str = "") -> np.ndarray:
        return self.prepare(io.BytesIO(data))

    def encode(self, batch: list[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        model = self._load()
        x = torch.from_numpy(np.stack(batch))
        with torch.inference_mode():
            out = model.get_image_features(pixel_values=x)
            feats = out if isinstance(out, torch.Tensor) else out.pooler_output
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return {"embedding": feats.numpy().astype(np.float32, copy=False)}

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        model = self._load()
        tok = self._load_tokenizer()
        max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))
        enc = tok(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode():
            out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            feats = out if isinstance(out, torch.Tensor) else out.pooler_output
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.numpy().astype(np.float32, copy=False)

    def info(self) -> dict:
        d = super().info()
        d["model"] = self.model
        return d


_warned: set[str] = set()


def text_usable(model: str) -> bool:
    """Whether ``model`` (CLIP or CLAP) has its tokenizer files, so its text tower can be used;
    said once per model when not (:func:`_warn_no_tokenizer`)."""
    if not has_tokenizer(model):
        _warn_no_tokenizer(model)
        return False
    return True


def load_tokenizer(model: str):
    """``model``'s tokenizer (CLIP or CLAP); a ``ParameterError`` naming the files it lacks."""
    from transformers import AutoTokenizer

    if not has_tokenizer(model):
        raise ParameterError(f"encoder: {model} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...), "
                             "so it cannot embed text; save the tokenizer there with save_pretrained", "encoder")
    return _load_pretrained(AutoTokenizer, model)


def _warn_no_tokenizer(model: str) -> None:
    if model not in _warned:
        _warned.add(model)
        log.warning("%s has no tokenizer files (%s, ...): its clusters are not named zero-shot and the "
                    "studio cannot search it by words; save the tokenizer there with save_pretrained",
                    model, ", ".join(TOKENIZER_FILES[:2]))


def _check_image_size(processor, config, model: str) -> None:
    """The processor's output size against the vision tower's ``image_size``: a mismatch (a
    processor saved for another checkpoint) fails every batch inside the model, so it is refused
    once, naming both, when the model loads."""
    crop = _size_vals(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", True) else {}
    want = getattr(getattr(config, "vision_config", None), "image_size", None)
    got = (crop.get("height"), crop.get("width"))
    if want and None not in got and got != (want, want):
        raise ParameterError(f"encoder: {model}: the image processor makes {got[0]}x{got[1]} images but the "
                             f"model takes {want}x{want} (preprocessor_config.json's crop_size and config.json's "
                             "vision_config.image_size must agree)", "encoder")


def _size_vals(size) -> dict[str, int]:
    """A processor's size setting (int, dict or transformers' SizeDict) as a plain dict."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"shortest_edge": size}
    keys = ("shortest_edge", "longest_edge", "height", "width")
    if isinstance(size, dict):
        return {k: int(v) for k, v in size.items() if isinstance(v, int)}
    return {k: int(getattr(size, k)) for k in keys if isinstance(getattr(size, k, None), int)}


def _size_str(size) -> str:
    vals = _size_vals(size)
    return "x".join(f"{k}{vals[k]}" for k in sorted(vals))


def _short_side(processor) -> int:
    vals = _size_vals(getattr(processor, "size", None))
    return int(vals.get("shortest_edge") or min(vals.values(), default=224))


register("clip", ClipEncoder)
