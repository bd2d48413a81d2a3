"""Run an encoder over many files: decode in worker threads while the model runs.

``embed_paths`` is the engine; the embedding cache (``mediacluster.store``) sits in front of it
(``embed_collection_cached``) so that only files not yet embedded reach it, and each finished
batch is committed to the store before the next one is handed out.

Threads: ``workers`` decoding threads (PIL releases the GIL while decoding and resizing) feed a
bounded window of prepared items; ``encoder.concurrency`` batches are encoded at once in their
own threads (ONNX Runtime calls release the GIL), and results come back in input order.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..data import Embeddings, Skipped, nonfinite_rows
from ..encoders import get_encoder
from ..encoders.base import Encoder
from ..errors import MediaclusterError
from ..fileio import first_compile_pending
from ..ingest import SkipItem
from ..ingest.images import decoding
from ..progress import progress_bar
from .store import cache_error, changed_since, failure_kind, open_store

log = logging.getLogger(__name__)


#: the reason a file rewritten or replaced while it was embedded is skipped (not remembered: the
#: next run reads it as it is then)
CHANGED = "file changed while it was read (the next run reads it as it is then)"
#: an item whose vector holds NaN or infinity (an encoder's failure on an odd input, e.g. a
#: vector of zeros normalised): skipped, never stored in the cache nor fitted
NONFINITE = "the encoder gave NaN or infinity for it"
#: a vector the cache held for a file that is not finite (written before this check, or damaged)
NONFINITE_CACHED = ("its vector in the embedding cache holds NaN or infinity (removed from the cache: the "
                    "next run embeds it again)")


def _finite_only(idx: list[int], out: dict, skipped: list) -> tuple[list[int], dict, list]:
    """One encoded batch without its items whose vector is not finite (:data:`NONFINITE`, in
    ``skipped``; not the content's own failure: tried again next run)."""
    bad = nonfinite_rows(out["embedding"]) if idx and "embedding" in out else ()
    if not len(bad):
        return idx, out, skipped
    keep = np.ones(len(idx), bool)
    keep[bad] = False
    skipped = sorted([*skipped, *((idx[b], NONFINITE, False) for b in bad)])
    return ([i for i, k in zip(idx, keep) if k], {k: np.asarray(v)[keep] for k, v in out.items()},
            skipped)


def default_workers() -> int:
    """Decoding threads: 2 on 2 cores (measured best; see benchmarks/RESULTS.md), at most 8."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(2, min(8, n))


def _prepare(encoder: Encoder, path: str):
    """(prepared input, None, False), or (None, reason, lasting): ``lasting`` when the file's
    content is the cause (``SkipItem.lasting``), never for out of memory or a loader bug."""
    try:
        with decoding():  # decoded pixels count against the process-wide budget until prepared
            return encoder.prepare(path), None, False
    except SkipItem as e:
        return None, str(e), e.lasting
    except MemoryError:
        return None, "out of memory while decoding", False
    except MediaclusterError:  # the encoder itself cannot work (e.g. its model cannot be loaded): every
        raise                  # file would fail the same way, so stop and say why
    except Exception as e:  # a loader bug on one file must not cost the run
        return None, f"unexpected error while decoding: {type(e).__name__}: {e}", False


def read_finite(store, hashes: list[str], encoder_id: str) -> tuple[np.ndarray, dict, np.ndarray]:
    """The cache's vectors and extras of ``hashes`` (in order), read back after embedding (the
    local and the Ray path), without those whose vector is not finite (stored before the
    check, or damaged): their positions come back third, and they leave the cache, so the next
    run embeds them again (:data:`NONFINITE_CACHED`)."""
    vectors, extras = store.get(hashes, encoder_id)
    bad = nonfinite_rows(vectors)
    if len(bad):
        store.forget_vectors({hashes[r] for r in bad}, encoder_id)
        ok = np.ones(len(hashes), bool)
        ok[bad] = False
        vectors, extras = vectors[ok], {k: v[ok] for k, v in extras.items()}
    return vectors, extras, bad


def iter_batches(
    paths: list[str],
    encoder: Encoder,
    batch_size: int = 16,
    workers: int | None = None,
    prefetch: int | None = None,
) -> Iterator[tuple[list[int], dict[str, np.ndarray], list[tuple[int, str, bool]]]]:
    """Yield ``(indices, outputs, skipped)`` per batch, in input order.

    Decoding of the next batches runs in a thread pool while the current batches are encoded.
    ``skipped`` holds ``(index, reason, lasting)`` for files of this batch that could not be
    decoded (``lasting``: the content is the cause, ``ingest.SkipItem.lasting``).
    ``prefetch``: how many items may be decoded ahead (default: enough for the batches being
    encoded plus two more).
    """
    workers = workers or default_workers()
    conc = max(1, int(getattr(encoder, "concurrency", 1) or 1))
    window = prefetch or max(batch_size * (conc + 2), workers * 4)
    n = len(paths)
    decode = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    infer = ThreadPoolExecutor(max_workers=conc, thread_name_prefix="encode") if conc > 1 else None
    futures: dict[int, Future] = {}
    pending: deque[tuple[list[int], Future | dict, list[tuple[int, str, bool]]]] = deque()
    next_submit = 0

    def fill():
        nonlocal next_submit
        while next_submit < n and len(futures) < window:
            futures[next_submit] = decode.submit(_prepare, encoder, paths[next_submit])
            next_submit += 1

    try:
        fill()
        start = 0
        while start < n or pending:
            if start < n:
                stop = min(n, start + batch_size)
                idx, inputs, skipped = [], [], []
                for i in range(start, stop):
                    x, reason, lasting = futures.pop(i).result()
                    if reason is None:
                        idx.append(i)
                        inputs.append(x)
                    else:
                        skipped.append((i, reason, lasting))
                    fill()
                start = stop
                if not inputs:
                    out: Future | dict = {}
                elif infer is not None:
                    out = infer.submit(encoder.encode, inputs)
                else:
                    out = encoder.encode(inputs)
                pending.append((idx, out, skipped))
                if len(pending) < conc and start < n:
                    continue
            idx, out, skipped = pending.popleft()
            yield _finite_only(idx, out.result() if isinstance(out, Future) else out, skipped)
    finally:
        decode.shutdown(wait=True, cancel_futures=True)
        if infer is not None:
            infer.shutdown(wait=True, cancel_futures=True)


def embed_paths(
    paths: list[str],
    encoder: Encoder,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
    on_batch: Callable[[list[int], dict[str, np.ndarray]], None] | None = None,
    keep: bool = True,
    on_skipped: Callable[[list[Skipped]], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Skipped], np.ndarray]:
    """Embed ``paths``; returns (vectors, extras, skipped, kept_index).

    ``kept_index`` gives, for each row of ``vectors``, its position in ``paths``.
    ``on_batch(indices, outputs)`` is called after each batch (the cache uses it to persist
    work as it is done, so an interrupted run loses at most the batches in flight), and
    ``on_skipped(skipped)`` with the batch's files that could not be decoded, when there are
    any (the cache remembers their content's own failures as they come).
    ``keep=False`` does not gather the outputs (vectors come back empty), for callers that
    read them from the store afterwards.
    """
    chunks: dict[str, list[np.ndarray]] = {}
    kept: list[int] = []
    skipped: list[Skipped] = []
    unit = "clip" if getattr(encoder, "media", "image") == "audio" else "img"
    with progress_bar(total=len(paths), desc=f"embed ({encoder.name})", unit=unit,
                      disable=not progress or not paths) as bar:
        for idx, outputs, bad in iter_batches(paths, encoder, batch_size, workers):
            batch_bad = [Skipped(paths[i], reason, lasting=lasting) for i, reason, lasting in bad]
            skipped.extend(batch_bad)
            if batch_bad and on_skipped is not None:
                on_skipped(batch_bad)
            if idx:
                kept.extend(idx)
                if on_batch is not None:
                    on_batch(idx, outputs)
                if keep:
                    for k, v in outputs.items():
                        chunks.setdefault(k, []).append(v)
            bar.update(len(idx) + len(bad))
    if kept and keep:
        out = {k: np.concatenate(v) for k, v in chunks.items()}
    else:
        out = {"embedding": np.zeros((0, encoder.dim), np.float32)}
    vectors = out.pop("embedding")
    return vectors, out, skipped, np.asarray(kept, dtype=np.int64)


def embed_collection_cached(
    collection,
    encoder: str | Encoder = "efficientnet-lite0",
    cache_dir=None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: bool = True,
):
    """Embed a collection's files through the embedding cache, skipping (and listing) bad ones.

    Files are hashed (``mediacluster.store``); only content not yet stored for this encoder's
    id is decoded and encoded, each batch committed as it finishes, so an interrupted run
    resumes where it stopped. Identical files are embedded once. ``cache_dir``: folder of the
    store (None: the user cache, ``$MEDIACLUSTER_CACHE`` or ``~/.cache/mediacluster``).
    The returned vectors and extras are read back from the store. ``timings`` gets the seconds
    spent hashing, encoding and reading, and ``cache_stats`` the counts.
    """
    enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
    store = open_store(cache_dir)
    try:
        with store:
            return _embed_through(store, collection, enc, batch_size, workers, progress)
    except sqlite3.Error as e:  # full disk, read-only or damaged cache: the user's to fix
        raise cache_error(e, store.path) from e


def _embed_through(store, collection, enc, batch_size, workers, progress):
    paths = [str(p) for p in collection.paths]
    timings: dict[str, float] = {}
    t = time.perf_counter()
    hashes, unreadable, stats = store.hash_files(paths, workers=max(4, workers or 0),
                                                 progress=progress and len(paths) > 2000, return_stats=True)
    timings["embed.hash"] = time.perf_counter() - t
    t = time.perf_counter()
    todo_hashes = store.missing([h for h in hashes if h is not None], enc.id)
    # content that failed the same way before (truncated, not an image, ...): not decoded again
    fkind = failure_kind(enc.id, getattr(enc, "media", "image"))
    known_bad = store.failures(todo_hashes, fkind) if todo_hashes else {}
    if known_bad:
        todo_hashes = [h for h in todo_hashes if h not in known_bad]
    first_path: dict[str, str] = {}
    first_stat: dict[str, os.stat_result] = {}  # taken before the file was hashed
    for p, h, st in zip(paths, hashes, stats):
        if h is not None and h not in first_path:
            first_path[h], first_stat[h] = p, st
    todo_paths = [first_path[h] for h in todo_hashes]
    n_unique = len(first_path)
    if progress:
        known = (f", {len(known_bad)} known from an earlier run not to decode (not read again; "
                 "--retry-bad tries them)") if known_bad else ""
        # audio clips are decoded and resampled through librosa, whose numba code compiles on first
        # use with a cache: the first batch then stands still for 10-20 s (FSDD: 17 s), said here
        d = first_compile_pending("librosa") if todo_hashes and getattr(enc, "media", "image") == "audio" else None
        first = f"; the first clips with this cache also compile librosa's code, once (10-20 s; kept in {d})" if d else ""
        print(f"embedding cache {store.path}: {n_unique - len(todo_hashes) - len(known_bad)} of {n_unique} "
              f"distinct files already embedded, {len(todo_hashes)} to embed{known}{first}", file=sys.stderr)

    # a file rewritten or replaced since it was hashed: what was decoded is not the hashed
    # content, so it is stored under no hash (neither vector nor failure) and the file skipped
    changed: dict[str, str] = {}
    dropped: list[int] = []  # encoded, then not stored: changed

    def unchanged(h: str) -> bool:
        if changed_since(first_path[h], first_stat[h]):
            changed[h] = CHANGED
            return False
        return True

    def commit(idx: list[int], outputs: dict[str, np.ndarray]) -> None:
        keep = [unchanged(todo_hashes[i]) for i in idx]
        if not all(keep):
            dropped.append(keep.count(False))
            outputs = {k: np.asarray(v)[keep] for k, v in outputs.items()}
            idx = [i for i, k in zip(idx, keep) if k]
        if idx:
            store.put([todo_hashes[i] for i in idx], enc.id, outputs)

    path_to_hash = dict(zip(todo_paths, todo_hashes))
    lasting: list[tuple[str, str]] = []

    def remember(bad_batch: list[Skipped]) -> None:
        # only the content's own failures (out of memory or a loader bug is tried again), per
        # batch as the vectors are, so an interrupted run does not decode them again either
        mine = [(path_to_hash[s.path], s.reason) for s in bad_batch if s.lasting]
        mine = [(h, r) for h, r in mine if unchanged(h)]
        if mine:
            store.remember_failures(mine, fkind)
            lasting.extend(mine)

    _, _, bad, kept = embed_paths(todo_paths, enc, batch_size, workers, progress,
                                  on_batch=commit, keep=False, on_skipped=remember)
    timings["embed.encode"] = time.perf_counter() - t
    bad_hash: dict[str, str] = dict(known_bad)
    for s in bad:
        bad_hash[path_to_hash[s.path]] = s.reason
    bad_hash.update(changed)
    if lasting:  # those of another decoder version, once no version sharing the cache used them for a while
        store.prune_failures()
    lasting_hashes = set(known_bad).union(h for h, _ in lasting)
    skipped = list(collection.skipped)
    keep_idx: list[int] = []
    for i, (p, h) in enumerate(zip(paths, hashes)):
        if h is None:
            skipped.append(Skipped(p, unreadable.get(i, "cannot read file")))
        elif h in bad_hash:
            skipped.append(Skipped(p, bad_hash[h], lasting=h in lasting_hashes))
        else:
            keep_idx.append(i)
    t = time.perf_counter()
    vectors, extras, bad_rows = read_finite(store, [hashes[i] for i in keep_idx], enc.id)
    if len(bad_rows):
        skipped.extend(Skipped(paths[keep_idx[r]], NONFINITE_CACHED) for r in bad_rows)
        gone = set(bad_rows.tolist())
        keep_idx = [i for r, i in enumerate(keep_idx) if r not in gone]
    timings["embed.read"] = time.perf_counter() - t
    if not keep_idx:
        vectors = np.zeros((0, enc.dim), np.float32)
    emb = Embeddings(
        ids=[collection.ids[i] for i in keep_idx],
        vectors=vectors,
        encoder=enc.name,
        encoder_version=enc.id,
        paths=[paths[i] for i in keep_idx],
        labels=None if collection.labels is None else [collection.labels[i] for i in keep_idx],
        extras=extras,
        skipped=skipped,
        timings=timings,
        root=collection.root,
    )
    emb.content_hashes = [hashes[i] for i in keep_idx]  # the cache's hash: exact duplicates for free
    emb.cache_stats = {"items": len(paths), "distinct": n_unique,
                       "cached": n_unique - len(todo_hashes) - len(known_bad),
                       "encoded": int(len(kept)) - sum(dropped), "skipped": len(skipped) - len(collection.skipped),
                       "decoded": len(todo_hashes), "known_bad": len(known_bad)}
    st = emb.cache_stats  # one sentence, not a dict: it is printed on every command that embeds
    log.info("embedding: %d items (%d distinct): %d from the cache, %d encoded, %d skipped",
             st["items"], st["distinct"], st["cached"], st["encoded"], st["skipped"])
    return emb
