"""Run an encoder over many files: decode in worker threads while the model runs.

``embed_paths`` is the engine; the embedding cache (``mediacluster.store``) sits in front of it
so that only files not yet embedded reach it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .collection import Skipped
from .encoders.base import Encoder
from .ingest import SkipItem
from .progress import progress_bar


def _prepare(encoder: Encoder, path: str):
    try:
        return encoder.prepare(path), None
    except SkipItem as e:
        return None, str(e)
    except MemoryError:
        return None, "out of memory while decoding"
    except Exception as e:  # a loader bug on one file must not cost the run
        return None, f"unexpected error while decoding: {type(e).__name__}: {e}"


def iter_batches(
    paths: list[str],
    encoder: Encoder,
    batch_size: int = 16,
    workers: int | None = None,
) -> Iterator[tuple[list[int], dict[str, np.ndarray], list[tuple[int, str]]]]:
    """Yield ``(indices, outputs, skipped)`` per batch, in input order.

    Decoding of the next batches runs in a thread pool while the current batch is encoded.
    ``skipped`` holds ``(index, reason)`` for files of this batch that could not be decoded.
    """
    workers = workers or max(1, min(4, (os.cpu_count() or 2)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        # keep a bounded window of decode futures ahead of the model
        window = max(batch_size * 4, workers * 2)
        futures: dict[int, object] = {}
        next_submit = 0
        n = len(paths)

        def fill():
            nonlocal next_submit
            while next_submit < n and len(futures) < window:
                futures[next_submit] = pool.submit(_prepare, encoder, paths[next_submit])
                next_submit += 1

        fill()
        start = 0
        while start < n:
            stop = min(n, start + batch_size)
            idx, inputs, skipped = [], [], []
            for i in range(start, stop):
                x, reason = futures.pop(i).result()
                if reason is None:
                    idx.append(i)
                    inputs.append(x)
                else:
                    skipped.append((i, reason))
                fill()
            outputs = encoder.encode(inputs) if inputs else {}
            yield idx, outputs, skipped
            start = stop


def embed_paths(
    paths: list[str],
    encoder: Encoder,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
    on_batch: Callable[[list[int], dict[str, np.ndarray]], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Skipped], np.ndarray]:
    """Embed ``paths``; returns (vectors, extras, skipped, kept_index).

    ``kept_index`` gives, for each row of ``vectors``, its position in ``paths``.
    ``on_batch(indices, outputs)`` is called after each batch (the cache uses it to persist
    work as it is done, so an interrupted run loses at most one batch).
    """
    t0 = time.perf_counter()
    chunks: dict[str, list[np.ndarray]] = {}
    kept: list[int] = []
    skipped: list[Skipped] = []
    with progress_bar(total=len(paths), desc=f"embed ({encoder.name})", unit="img", disable=not progress) as bar:
        for idx, outputs, bad in iter_batches(paths, encoder, batch_size, workers):
            for i, reason in bad:
                skipped.append(Skipped(paths[i], reason))
            if idx:
                kept.extend(idx)
                for k, v in outputs.items():
                    chunks.setdefault(k, []).append(v)
                if on_batch is not None:
                    on_batch(idx, outputs)
            bar.update(len(idx) + len(bad))
    if kept:
        out = {k: np.concatenate(v) for k, v in chunks.items()}
    else:
        out = {"embedding": np.zeros((0, encoder.dim), np.float32)}
    vectors = out.pop("embedding")
    _ = time.perf_counter() - t0
    return vectors, out, skipped, np.asarray(kept, dtype=np.int64)


def embed_collection_cached(
    collection,
    encoder: str | Encoder = "efficientnet-lite0",
    cache_dir=None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
):
    """Embed a collection's files, skipping (and listing) the unusable ones.

    TODO(store): look vectors up in / write them to ``mediacluster.store`` keyed by
    (content hash, encoder id) so re-runs embed only new files.
    """
    from .collection import Embeddings
    from .encoders import get_encoder

    enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
    paths = list(collection.paths)
    vectors, extras, skipped, kept = embed_paths(paths, enc, batch_size, workers, progress)
    return Embeddings(
        ids=[collection.ids[i] for i in kept],
        vectors=vectors,
        encoder=enc.name,
        encoder_version=enc.id,
        paths=[paths[i] for i in kept],
        labels=None if collection.labels is None else [collection.labels[i] for i in kept],
        extras=extras,
        skipped=list(collection.skipped) + skipped,
    )
