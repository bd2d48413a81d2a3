"""Encoders by name.

``get_encoder("efficientnet-lite0")`` or ``get_encoder("clip:openai/clip-vit-base-patch32")``:
the part before ``:`` picks the family, the rest is passed to it as ``model``.
Adding an encoder is one module that calls ``register``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import InputError, ParameterError
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


def writes_id(encoder_id: str) -> bool | None:
    """Whether this package still writes vectors under ``encoder_id`` (``family@version``, as
    the embedding cache holds it) with some settings (``Encoder.writes``): False for an older
    version of its family's code (``mfcc@...-v2`` after v3), None where it cannot be told
    (a family not registered here, or one whose version needs its model loaded)."""
    family, sep, version = encoder_id.partition("@")
    if not sep:
        return None
    try:
        if family not in _REGISTRY and family in _LAZY:
            importlib.import_module(_LAZY[family])
    except ImportError:
        return None
    writes = getattr(_REGISTRY.get(family), "writes", None)
    return writes(version) if callable(writes) else None


def encoder_for(encoder, media: str, where: str, advice: str) -> Encoder:
    """``encoder`` (a name, an ``Encoder``, or None: ``DEFAULT_ENCODERS[media]``) as an encoder
    of ``media`` files; one of the other media would skip every file, so it is refused naming
    ``where`` (what holds the files) and ``advice`` (what to do, in the caller's terms)."""
    enc = encoder if encoder is not None else DEFAULT_ENCODERS[media]
    enc = get_encoder(enc) if isinstance(enc, str) else enc
    if enc.media != media:
        raise InputError(f"encoder {enc.name!r} reads {enc.media} files but {where} holds {media} files "
                         f"({advice})")
    return enc


__all__ = ["Encoder", "register", "get_encoder", "encoder_for", "writes_id", "available", "DEFAULT_IMAGE_ENCODER",
           "DEFAULT_AUDIO_ENCODER", "DEFAULT_ENCODERS"]
