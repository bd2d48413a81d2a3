"""Per-image signatures for duplicate finding: content hash, perceptual hash, colour thumbnail.

One pass over the files computes, for each image:

* the **content hash** (BLAKE2b-128 of the bytes, ``mediacluster.fileio.hash_file``, the same key
  the embedding cache uses), which finds byte-identical copies;
* a **perceptual hash** from ``imagehash`` (pHash by default, see ``HASHES``) of the image and of
  its mirror image, packed into bytes (a 64-bit hash is 8 bytes), so a left-right flipped repost
  is found by comparing one image's hash with the other's mirror hash;
* a **colour thumbnail** (``THUMB`` x ``THUMB`` RGB, area-averaged over the whole image), used to
  check a hash match pixel by pixel (same picture, or only the same layout in other colours?).

Images are decoded by the package's safe loader (``mediacluster.ingest.load_image``: size and
pixel caps against decompression bombs, broken files refused with a reason); a file that cannot
be used is reported with its reason and never stops the pass. Decoding runs in a thread pool
(PIL releases the GIL while decoding and resizing) with a progress bar (rate and ETA).

With a ``store`` (the embedding cache, ``embed.EmbeddingStore``), each decoded image's hashes,
thumbnail and size are kept by its content hash (``EmbeddingStore.put_derived``, kind
``signature_kind``: the hash, its size, the thumbnail and draft sides, ``SIGNATURE_VERSION`` and
imagehash's version, so a change of any of them recomputes), and a later run decodes only new
content. An entry of the wrong length (a damaged cache) is ignored with a warning and
recomputed. A file whose own bytes cannot be decoded is remembered as failing
(``EmbeddingStore.remember_failures``) and not decoded again; other failures are tried again.
Both are kept every ``SAVE_EVERY`` decoded files, one transaction each, as the embedding path
keeps its batches: a pass that is killed or interrupted keeps what it learned.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

from ..errors import ParameterError

#: Side of the colour thumbnail kept per image (16 x 16 x 3 bytes = 768 bytes).
THUMB = 16
#: JPEG decoding may shrink by DCT scaling down to this side (hashes work at 8-32 px).
DRAFT = 256
#: Version of the cached signatures: raise it when decoding, hashing or the thumbnail change.
SIGNATURE_VERSION = 1
#: signatures and failures are kept in the store every this many decoded files (one transaction;
#: ~0.8 KB a signature): a killed pass loses at most that much work
SAVE_EVERY = 64


def _imagehash_functions() -> dict[str, Callable]:
    import imagehash  # lazy: pulls scipy.fftpack and PyWavelets

    return {
        "phash": imagehash.phash,
        "dhash": imagehash.dhash,
        "ahash": imagehash.average_hash,
        "whash": imagehash.whash,
    }


#: The perceptual hashes on offer (all from ``imagehash``); compared in benchmarks/duplicates.py.
HASHES = ("phash", "dhash", "ahash", "whash")


def hash_image(im: Image.Image, kind: str = "phash", hash_size: int = 8) -> np.ndarray:
    """Packed bits (``hash_size**2 / 8`` uint8) of the ``kind`` perceptual hash of ``im``."""
    try:
        fn = _imagehash_functions()[kind]
    except KeyError:
        raise ParameterError(f"unknown perceptual hash {kind!r}; choose from {', '.join(HASHES)}") from None
    return np.packbits(np.asarray(fn(im, hash_size=hash_size).hash, dtype=bool).ravel())


def thumbnail(im: Image.Image, side: int = THUMB) -> np.ndarray:
    """``side`` x ``side`` x 3 uint8 area average of the whole image (aspect ratio not kept)."""
    return np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.uint8)


@dataclass
class Signatures:
    """Signatures of n images, aligned with the input; rows of skipped items are zeros.

    ``ok[i]`` is False for a file that could not be used; ``skipped`` maps its index to the
    reason. ``content`` holds hex content hashes (None where unknown). Only ``hashes`` is
    required: without ``mirror`` flips are not looked for, without ``thumbs`` a hash match is
    not checked pixel by pixel (e.g. hashes computed elsewhere).
    """

    content: list[str | None]
    hashes: np.ndarray                  # (n, nbytes) uint8, perceptual hash of the image
    mirror: np.ndarray | None = None    # (n, nbytes) uint8, hash of the mirrored image
    thumbs: np.ndarray | None = None    # (n, THUMB, THUMB, 3) uint8
    sizes: np.ndarray | None = None     # (n, 2) int32 width, height as decoded (after JPEG draft)
    ok: np.ndarray | None = None        # (n,) bool; None: all usable
    skipped: dict[int, str] = field(default_factory=dict)
    kind: str = "phash"
    hash_size: int = 8
    #: files this pass decoded (the others: signatures read from the store, or content the
    #: store remembers as failing, whose reason is in ``skipped`` all the same)
    decoded: int = 0

    def __len__(self) -> int:
        return len(self.hashes)

    def usable(self) -> np.ndarray:
        return np.ones(len(self), bool) if self.ok is None else np.asarray(self.ok, bool)

    def take(self, rows) -> Signatures:
        """The signatures of ``rows`` (indices), in that order (``skipped`` renumbered)."""
        rows = np.asarray(rows, np.int64)
        at = {int(i): k for k, i in enumerate(rows)}

        def pick(a):
            return None if a is None else np.asarray(a)[rows]
        return Signatures(content=[self.content[i] for i in rows], hashes=self.hashes[rows],
                          mirror=pick(self.mirror), thumbs=pick(self.thumbs), sizes=pick(self.sizes),
                          ok=pick(self.ok), skipped={at[i]: why for i, why in self.skipped.items() if i in at},
                          kind=self.kind, hash_size=self.hash_size, decoded=self.decoded)


def signature_kind(kind: str = "phash", hash_size: int = 8) -> str:
    """The store kind of cached signatures: everything their bytes depend on."""
    import imagehash

    return (f"dups.signature/v{SIGNATURE_VERSION}/{kind}/{hash_size}/thumb{THUMB}/draft{DRAFT}"
            f"/imagehash-{getattr(imagehash, '__version__', '?')}")


def is_current_signature_kind(kind: str) -> bool:
    """Whether this code reads signatures of store kind ``kind`` (with some hash and size):
    False for another ``SIGNATURE_VERSION``, thumbnail or draft side, or imagehash version."""
    import imagehash

    head, tail = f"dups.signature/v{SIGNATURE_VERSION}/", f"/thumb{THUMB}/draft{DRAFT}/imagehash-{getattr(imagehash, '__version__', '?')}"
    if not (kind.startswith(head) and kind.endswith(tail)):
        return False
    parts = kind[len(head):-len(tail)].split("/")
    return len(parts) == 2 and parts[0] in HASHES and parts[1].isdigit()


def _pack(h: np.ndarray, m: np.ndarray, th: np.ndarray, size) -> bytes:
    return b"".join((h.tobytes(), m.tobytes(), np.ascontiguousarray(th, np.uint8).tobytes(),
                     np.asarray(size, "<i4").tobytes()))


def _unpack(blob: bytes, nbytes: int):
    """(hash, mirror, thumbnail, size) from ``_pack``'s bytes; None if the length is wrong."""
    nt = THUMB * THUMB * 3
    if len(blob) != 2 * nbytes + nt + 8:
        return None
    a = np.frombuffer(blob, np.uint8)
    return (a[:nbytes], a[nbytes:2 * nbytes], a[2 * nbytes:2 * nbytes + nt].reshape(THUMB, THUMB, 3),
            np.frombuffer(blob[2 * nbytes + nt:], "<i4"))


def _one(path: str, kind: str, hash_size: int, content: bool, on_decoded=None):
    """(content hash, hash, mirror hash, thumbnail, size, reason, lasting); ``lasting``: the
    reason is the content's own (``SkipItem.lasting``), remembered by the store; the content hash is kept
    even when the image cannot be decoded (identical broken files are still exact copies).
    ``on_decoded(im)`` sees the decoded image first (its failure is its own: the signature
    is computed all the same)."""
    from ..fileio import hash_file
    from ..ingest import SkipItem, load_image

    digest = None
    try:
        if content:
            digest = hash_file(path)
        im = load_image(path, draft_size=DRAFT)
        if on_decoded is not None:
            try:
                on_decoded(im)
            except Exception:  # e.g. out of memory keeping a copy: the verifier decodes it itself
                pass
        h = hash_image(im, kind, hash_size)
        m = hash_image(ImageOps.mirror(im), kind, hash_size)
        return digest, h, m, thumbnail(im), im.size, None, False
    except SkipItem as e:
        return digest, None, None, None, None, str(e), e.lasting
    except MemoryError:
        return digest, None, None, None, None, "image too large: out of memory while decoding", False
    except OSError as e:  # hash_file on a missing or unreadable file
        return None, None, None, None, None, f"cannot read file: {e.strerror or e}", False
    except Exception as e:  # a decoder or hashing bug on one odd file must not cost the run
        return digest, None, None, None, None, f"unexpected error while hashing: {type(e).__name__}: {e}", False


def compute_signatures(
    paths: Sequence[str | os.PathLike],
    kind: str = "phash",
    hash_size: int = 8,
    content: bool = True,
    workers: int | None = None,
    progress: bool = False,
    store=None,
    content_hashes: Sequence[str | None] | None = None,
    on_decoded: Callable[[int, Image.Image, int], object] | None = None,
) -> Signatures:
    """Content hash, perceptual hash (+ mirror) and thumbnail of every file in ``paths``.

    ``content=False`` skips the content hash (e.g. when the embedding cache already has it).
    ``workers``: decoding threads (default: ``mediacluster.embed.default_workers()``).
    ``store``: an ``embed.EmbeddingStore`` whose cached signatures are used (by content hash)
    and which keeps the new ones; ``content_hashes``: the files' known content hashes (else
    the store hashes them, by its fast path). ``on_decoded(index, image, draft_size)`` is
    called (in the decoding threads) with each image this pass decodes (not those whose
    signature came from the store), as ``ingest.load_image(draft_size=)`` gave it, so a later
    step can keep what it needs without decoding the file again (the duplicate finder's
    geometric check: ``verify.GeometricVerifier.offer``).
    """
    from ..embed.engine import CHANGED, default_workers
    from ..embed.store import changed_since, failure_kind
    from ..progress import threaded_imap

    if kind not in HASHES:
        raise ParameterError(f"unknown perceptual hash {kind!r}; choose from {', '.join(HASHES)}")
    if hash_size < 2 or (hash_size * hash_size) % 8:
        raise ParameterError(f"hash_size must be >= 2 with hash_size**2 a multiple of 8, got {hash_size}")
    paths = [os.fspath(p) for p in paths]
    n = len(paths)
    nbytes = hash_size * hash_size // 8
    sig = Signatures(
        content=[None] * n,
        hashes=np.zeros((n, nbytes), np.uint8),
        mirror=np.zeros((n, nbytes), np.uint8),
        thumbs=np.zeros((n, THUMB, THUMB, 3), np.uint8),
        sizes=np.zeros((n, 2), np.int32),
        ok=np.zeros(n, bool),
        kind=kind,
        hash_size=hash_size,
    )
    workers = workers or default_workers()
    known: list[str | None] = [None] * n
    stats = None  # of the files hashed through the store, taken before: a file changed since is not stored
    if content_hashes is not None:
        if len(content_hashes) != n:
            raise ParameterError(f"{len(content_hashes)} content hashes for {n} paths")
        known = [None if c is None else str(c) for c in content_hashes]
    elif store is not None:
        known, _, stats = store_call(store, lambda: store.hash_files(paths, workers=max(4, workers),
                                                                      return_stats=True), (known, {}, None))
    skind = signature_kind(kind, hash_size)
    fkind = failure_kind(skind)  # content that failed to decode before: not decoded again
    cached = {} if store is None else store_call(
        store, lambda: store.get_derived([c for c in known if c is not None], skind), {})
    failed = {} if store is None else store_call(
        store, lambda: store.failures([c for c in known if c is not None and c not in cached], fkind), {})
    todo, bad = [], []
    for i, c in enumerate(known):
        if c is not None and c in failed:
            sig.content[i] = c
            sig.skipped[i] = failed[c]
            continue
        blob = cached.get(c) if c is not None else None
        got = None if blob is None else _unpack(blob, nbytes)
        if got is None:
            if blob is not None:
                bad.append(c)
            todo.append(i)
            continue
        sig.content[i] = c
        sig.hashes[i], sig.mirror[i], sig.thumbs[i], sig.sizes[i] = got
        sig.ok[i] = True
    if bad:
        warnings.warn(f"signature cache {getattr(store, 'path', store)}: {len(bad)} damaged entr"
                      f"{'y' if len(bad) == 1 else 'ies'} ignored and recomputed (e.g. content {bad[0]})",
                      RuntimeWarning, stacklevel=2)
    fresh: list[tuple[str, bytes]] = []
    lasting: list[tuple[str, str]] = []
    def one(i: int):
        hook = None if on_decoded is None else (lambda im: on_decoded(i, im, DRAFT))
        return _one(paths[i], kind, hash_size, content and known[i] is None, hook)

    def save() -> None:  # what was learned since the last save, in one transaction each
        if fresh:
            store_call(store, lambda: store.put_derived(fresh, skind), None)
        if lasting:
            store_call(store, lambda: store.remember_failures(lasting, fkind), None)
        fresh.clear()
        lasting.clear()

    # the files read from the store, or remembered as failing, count as done on the bar
    with closing(threaded_imap(one, todo, workers, "hash images", "img", progress, chunksize=16,
                               done=n - len(todo), name="phash")) as results:
        try:
            for n_done, (i, (digest, h, m, th, size, err, kept)) in enumerate(zip(todo, results), 1):
                sig.content[i] = known[i] if known[i] is not None else digest
                if stats is not None and known[i] is not None and changed_since(paths[i], stats[i]):
                    # rewritten or replaced since it was hashed: what was decoded is not that content
                    sig.content[i], sig.skipped[i] = None, CHANGED
                    continue
                if err is not None:
                    sig.skipped[i] = err
                    if kept and store is not None and sig.content[i] is not None:
                        lasting.append((sig.content[i], err))
                else:
                    sig.hashes[i], sig.mirror[i], sig.thumbs[i] = h, m, th
                    sig.sizes[i] = size
                    sig.ok[i] = True
                    if store is not None and sig.content[i] is not None:
                        fresh.append((sig.content[i], _pack(h, m, th, size)))
                if n_done % SAVE_EVERY == 0:
                    save()
        finally:  # also when interrupted: what the finished files taught is kept
            save()
    sig.decoded = len(todo)
    return sig


def store_call(store, fn, fallback):
    """``fn()`` on the cache; a cache that cannot be read or written (damaged, read-only, full)
    costs only the time it would have saved: a warning, then ``fallback``."""
    try:
        return fn()
    except (sqlite3.Error, OSError) as e:
        warnings.warn(f"signature cache {getattr(store, 'path', store)}: {e}; computing without it",
                      RuntimeWarning, stacklevel=3)
        return fallback


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between packed hashes (uint8, last axis), broadcasting over leading axes."""
    x = np.bitwise_xor(np.asarray(a, np.uint8), np.asarray(b, np.uint8))
    if hasattr(np, "bitwise_count"):  # numpy >= 2: popcount, ~20x faster than unpacking bits
        return np.bitwise_count(x).sum(-1, dtype=np.int32)
    return np.unpackbits(x, axis=-1).sum(-1, dtype=np.int32)


__all__ = ["HASHES", "THUMB", "SIGNATURE_VERSION", "signature_kind", "is_current_signature_kind", "store_call", "Signatures", "compute_signatures", "hash_image", "thumbnail", "hamming"]
