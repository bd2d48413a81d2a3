"""Embedding: every usable item of a collection to a vector, through the shared cache.

``embed_collection(collection)`` is the entry point: precomputed vectors pass through, files
are hashed and only content not yet in the embedding cache (``embed.store``, shared by every run
on the machine) is decoded and encoded (``embed.engine``: decoding threads overlapped with
inference), batch by batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from ..data import Collection, Embeddings
from ..encoders import DEFAULT_ENCODERS, encoder_for
from ..errors import ParameterError
from .engine import embed_collection_cached, embed_paths, iter_batches
from .store import EmbeddingStore

__all__ = ["embed_collection", "embed_collection_cached", "embed_paths", "iter_batches", "EmbeddingStore"]


def embed_collection(
    collection: Collection,
    encoder=None,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
) -> Embeddings:
    """Vectors for every usable item of ``collection`` (precomputed vectors pass through).

    ``encoder``: a name from ``mediacluster.encoders`` or an ``Encoder``; None: the default for
    the collection's media (``encoders.DEFAULT_ENCODERS``: efficientnet-lite0 for images, mfcc
    for audio). An encoder of the other media is refused (it would skip every file).
    ``cache_dir``: the embedding cache folder (None: the user cache, see ``fileio.cache_root``).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size must be a positive integer, got {batch_size!r}", "batch_size")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ParameterError(f"workers must be a positive integer, got {workers!r}", "workers")
    if collection.vectors is not None:
        return Embeddings(
            ids=list(collection.ids), vectors=collection.vectors, encoder="precomputed",
            labels=collection.labels, skipped=list(collection.skipped),
            paths=None if collection.paths is None else list(collection.paths), root=collection.root,
        )
    media = collection.media
    other = "audio" if media == "image" else "image"
    enc = encoder_for(encoder, media, "the collection", f"choose an {media} encoder, e.g. "
                      f"{DEFAULT_ENCODERS[media]!r}, or collect(..., media={other!r})")
    return embed_collection_cached(
        collection, encoder=enc, cache_dir=cache_dir, batch_size=batch_size,
        workers=workers, progress=progress,
    )
