"""Encoders by name.

``get_encoder("efficientnet-lite0")`` or ``get_encoder("clip:openai/clip-vit-base-patch32")``:
the part before ``:`` picks the family, the rest is passed to it as ``model``.
Adding an encoder is one module that calls ``register``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import ParameterError
from .base import Encoder

_REGISTRY: dict[str, Callable[..., Encoder]] = {}
# family name -> module that registers it (imported lazily: torch / transformers are heavy)
_LAZY = {
    "efficientnet-lite0": "mediacluster.encoders.efficientnet",
    "efficientnet-lite0-int8": "mediacluster.encoders.efficientnet_int8",
    "clip": "mediacluster.encoders.clip",
    # audio (media = "audio"); birdnet is opt-in: its model is CC BY-NC-SA 4.0 (non-commercial)
    "mfcc": "mediacluster.encoders.audio_mfcc",
    "resemblyzer": "mediacluster.encoders.audio_resemblyzer",
    "birdnet": "mediacluster.encoders.audio_birdnet",
    "clap": "mediacluster.encoders.audio_clap",
}

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_AUDIO_ENCODER = "mfcc"
DEFAULT_ENCODERS = {"image": DEFAULT_IMAGE_ENCODER, "audio": DEFAULT_AUDIO_ENCODER}


def register(name: str, factory: Callable[..., Encoder], module: str | None = None) -> None:
    _REGISTRY[name] = factory
    if module:
        _LAZY.setdefault(name, module)


def available() -> list[str]:
    return sorted(set(_REGISTRY) | set(_LAZY))


def get_encoder(spec: str = DEFAULT_IMAGE_ENCODER, **kwargs) -> Encoder:
    family, _, model = spec.partition(":")
    if family not in _REGISTRY and family in _LAZY:
        importlib.import_module(_LAZY[family])
    if family not in _REGISTRY:
        raise ParameterError(f"unknown encoder {family!r}; available: {', '.join(available())}")
    if model:
        kwargs["model"] = model
    return _REGISTRY[family](**kwargs)


__all__ = ["Encoder", "register", "get_encoder", "available", "DEFAULT_IMAGE_ENCODER",
           "DEFAULT_AUDIO_ENCODER", "DEFAULT_ENCODERS"]
