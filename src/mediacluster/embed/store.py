"""The embedding cache: vectors keyed by (file content hash, encoder id), safe to kill.

Design (and why):

* **Key = content, not path.** A vector belongs to the bytes of a file and to the encoder that
  made it (``Encoder.id`` = name + weights + preprocessing version). Renamed, moved or copied
  files with the same bytes are found again; an edited file gets a new key.
* **One SQLite file in WAL mode, one transaction per batch.** A batch's vectors and extras are
  committed together; SQLite's journal makes each commit all-or-nothing, so ``kill -9`` (or
  Ctrl-C) at any instant leaves the store as it was after the last commit: nothing committed is
  lost and nothing is half-written. ``synchronous=NORMAL`` in WAL mode is durable against a
  process crash (only a power cut may lose the last commits, still without corruption). SQLite
  also serialises writers across processes (file locks, ``busy_timeout``), so two runs on the
  same cache cannot corrupt it; at worst both embed the same new file and the second write wins
  (``writes`` counts such re-writes). Append-only shards + an atomic index would need the same
  guarantees written by hand; SQLite is in the standard library and well tested at this.
  (WAL needs a local filesystem: shared memory does not work on NFS.)
* **Extras** (e.g. ``imagenet_probs``) are stored per (hash, encoder, name); arrays whose name
  ends in ``probs`` as float16 (probabilities need no more), everything else as float32.
  The vectors a run returns are always read back from the store, so a cached and a fresh run
  give the same numbers bit for bit.
* **Hashing** is BLAKE2b-128 of the whole file, read in chunks by ``hashlib.file_digest`` in a
  thread pool (files are small next to decoding them). The content hash is the truth; a fast
  path skips re-reading a file whose (path, size, mtime_ns, ctime_ns, inode) are unchanged since
  it was hashed, the assumption ``make``, ``rsync`` and git's index rely on. Any write to a file
  changes its ctime (even ``cp -p`` / ``touch -r`` that restore mtime), and entries whose
  timestamps were younger than 2 s when hashed are not trusted (git's "racily clean" rule), so
  a same-size rewrite within one timestamp tick cannot slip through. ``verify=True`` hashes
  everything. A caller that decodes a file after hashing it checks, by the same rule, that the
  file is still the one hashed (``hash_files(return_stats=True)``, :func:`changed_since`) before
  it stores what it decoded under that hash (the embedding, the duplicate finder's signatures).
* **Derived data** other than vectors (``get_derived`` / ``put_derived``): bytes by (key, kind),
  where the key is a content hash (or several joined, e.g. a pair's verdict) and the kind names
  what was computed *and its version* (e.g. the duplicate finder's perceptual signatures,
  ``duplicates.hashing.signature_kind``), so a change of how it is computed is a new kind and
  old entries are never read. The same transactions and file as the vectors: atomic, safe to
  kill and safe with concurrent runs. The table is created on open (``IF NOT EXISTS``): caches
  written before simply have no derived data yet. The kinds present are listed in a small table
  of their own (filled on open from the entries of a cache written before it existed), so
  ``prune_derived`` can drop the kinds no current code reads (an old hashing version: they
  would otherwise stay forever) without scanning the entries unless there is one to drop.
* **Failures** (``failures`` / ``remember_failures`` / ``forget_failures``): a file whose own
  bytes cannot be used (truncated, not an image, empty, a decompression bomb, ...:
  ``ingest.SkipItem.lasting``) is remembered with its reason as derived data by content hash,
  of a kind named by :func:`failure_kind` (what decoded it, e.g. an encoder's id, and the
  versions of the decoding code and libraries), so a re-run lists it as skipped with the same
  reason without reading it again; an edited file has another hash and is tried again, and so
  is every file after an upgrade of the decoder. Failures of the machine, not the file (out of
  memory, an unreadable or missing file, an interrupted run) are never remembered.
  ``--retry-bad`` forgets only those of the files the command reads: within
  :func:`retrying_failures` every ``failures`` lookup forgets what it was asked for (once per
  content and kind) instead of answering it, so the files are decoded again and those still
  failing remembered anew; the failures of other collections sharing the cache are kept.
  ``forget_failures()`` without keys drops them all.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..fileio import cache_root, hash_file, hash_files, output_error, sqlite_refused

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
DB_NAME = "embeddings.sqlite"
_CHUNK = 500  # host parameters per IN (...) query
_RACY_S = 2.0
#: a cache written before pages were given back (``auto_vacuum`` off) is rewritten whole
#: (``VACUUM``, which also makes it incremental) only when a prune freed at least this share of
#: its pages: the rewrite costs ~0.45 s per 100 MB of cache and as much temporary disk
#: (benchmarks/RESULTS.md, "The duplicate cache's housekeeping"), and one version's signatures
#: are ~9% of a cache that also holds the photos' vectors (45% of a ``--no-embed`` one); a
#: smaller freed share is left to be reused by later writes
VACUUM_SHARE = 0.25
#: a stale kind of derived data (another hashing, check or decoder version's) is dropped only once
#: nobody read or wrote it for this long: another mediacluster version sharing the cache (for
#: which this version's kinds are the stale ones) keeps its entries while it is used. Keeping them
#: costs ~0.8 KB per photo (a signature; a verdict or a failure is a few bytes), losing them a
#: first run's work again (~2 CPU ms per photo): benchmarks/RESULTS.md, "The duplicate cache's
#: housekeeping"
STALE_IDLE_DAYS = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vectors (
    hash TEXT NOT NULL, encoder TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    writes INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL,
    PRIMARY KEY (hash, encoder)
);
CREATE TABLE IF NOT EXISTS extras (
    hash TEXT NOT NULL, encoder TEXT NOT NULL, name TEXT NOT NULL, dtype TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (hash, encoder, name)
);
CREATE TABLE IF NOT EXISTS derived (
    key TEXT NOT NULL, kind TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (key, kind)
);
CREATE TABLE IF NOT EXISTS derived_kinds (kind TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS derived_used (kind TEXT PRIMARY KEY, used REAL NOT NULL);
"""


#: bumped when the decoding rules change so that a file refused before may now be read (or be
#: refused with another reason: a limit such as ``ingest.images.MAX_PIXELS`` / ``MAX_FILE_BYTES``
#: or ``ingest.audio.MAX_SECONDS`` / ``SILENCE_DBFS``, a reason's words): every remembered
#: failure is then tried again (2: stereo clips whose channels cancel are read, no longer silent;
#: 3: JPEGs past Pillow's decompression-bomb limit are read reduced, TIFFs cut short called truncated)
FAILURE_VERSION = 3
#: the kinds of remembered failures start with this (``failure_kind``)
FAILED = "failed/"


@functools.cache
def _decoder(media: str) -> str:
    """The library that decodes ``media``, with its version (looked up once per process: every
    failure kind names it, and ``stale_failure_kind`` asks for both media per kind)."""
    from importlib import metadata

    if media == "audio":
        import soundfile

        return f"libsndfile-{getattr(soundfile, '__libsndfile_version__', '?')}"
    try:
        return f"pillow-{metadata.version('pillow')}"
    except metadata.PackageNotFoundError:
        return "pillow-?"


def failure_kind(reader: str, media: str = "image") -> str:
    """The store kind of failures remembered for ``reader`` (what decoded the files: an
    encoder's id, the duplicate finder's signature kind): with :data:`FAILURE_VERSION` and the
    version of the library that decodes ``media`` (Pillow for images, libsndfile for audio), so
    a file refused by one version is tried again by another."""
    return f"{FAILED}v{FAILURE_VERSION}/{_decoder(media)}/{reader}"


def stale_failure_kind(kind: str) -> bool:
    """Whether ``kind`` holds failures no current code reads (another :data:`FAILURE_VERSION`
    or decoder version), for ``EmbeddingStore.prune_derived``; other kinds are left alone."""
    if not kind.startswith(FAILED):
        return False
    return not any(kind.startswith(f"{FAILED}v{FAILURE_VERSION}/{_decoder(m)}/") for m in ("image", "audio"))


class Retry:
    """What a :func:`retrying_failures` block forgot: ``forgotten`` remembered failures (by
    content and kind), ``asked`` the (kind, content) pairs looked up in it."""

    def __init__(self):
        self.forgotten = 0
        self.asked: set[tuple[str, str]] = set()


_RETRY: contextvars.ContextVar[Retry | None] = contextvars.ContextVar("mediacluster_retry_failures", default=None)


@contextlib.contextmanager
def retrying_failures():
    """Within: the failures a run looks up (``EmbeddingStore.failures``: the local and Ray
    embedding paths, the duplicate finder's signature pass) are forgotten instead of answered,
    so those files are decoded again, and only those (``--retry-bad``: the failures of files
    this command does not read, e.g. another folder's sharing the cache, stay remembered). Each
    (content, kind) is forgotten once per block: a failure remembered again by this run is
    answered as usual by a later lookup in it. Yields the :class:`Retry` count. Follows the
    calling thread's context (the lookups are made by the thread that runs the command)."""
    retry = Retry()
    token = _RETRY.set(retry)
    try:
        yield retry
    finally:
        _RETRY.reset(token)


_NOTE_USE = ("INSERT INTO derived_used VALUES (?, ?) ON CONFLICT(kind) DO UPDATE SET "
             "used=max(used, excluded.used)")


def _stat_all(paths: Sequence[str]) -> tuple[list[os.stat_result | None], dict[int, str]]:
    stats: list[os.stat_result | None] = [None] * len(paths)
    errors: dict[int, str] = {}
    for i, p in enumerate(paths):
        try:
            stats[i] = os.stat(p)
        except OSError as e:
            errors[i] = f"cannot read file: {e.strerror or e}"
    return stats, errors


def changed_since(path: str, before: os.stat_result | None) -> bool:
    """Whether ``path`` is no longer the file whose ``os.stat`` was ``before`` (size, mtime_ns,
    ctime_ns, inode: the fast path's rule; any write changes the ctime), or is gone. A file
    replaced or rewritten between its hashing and its decoding must not leave what was read of
    the new bytes (a vector, a failure) under the old bytes' hash."""
    if before is None:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return True
    return ((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            != (before.st_size, before.st_mtime_ns, before.st_ctime_ns, before.st_ino))


def _chunks(seq: Sequence, n: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _path_key(p: str):
    """The ``files`` table's key for a path: the text itself, or, for a name that is not valid
    UTF-8 (undecodable bytes held as surrogate escapes, as ``os.listdir`` gives them), its raw
    bytes as a BLOB. SQLite keeps BLOBs apart from TEXT, so the key is exact and cannot collide
    with any text path, and caches written before keep their keys."""
    try:
        p.encode("utf-8")
        return p
    except UnicodeEncodeError:
        return os.fsencode(p)


def _path_of_key(k) -> str:
    return os.fsdecode(k) if isinstance(k, bytes) else k


def cache_error(e: BaseException, path) -> OutputError:
    """A failure of the embedding cache (full disk, read-only or damaged file) in words, with
    what to do (exit 2, not a traceback)."""
    if isinstance(e, OutputError):
        return e
    if isinstance(e, OSError):
        return output_error(e, path)
    msg = str(e)
    hint = "choose another --cache-dir"
    if sqlite_refused(msg) == "full":  # SQLite's words for ENOSPC / for EFBIG (a file-size quota)
        hint = ("the disk or your file-size quota may be full: free some space or " + hint
                + "; what was embedded is kept, the same command goes on from there")
    elif "readonly" in msg or "unable to open" in msg:
        hint = "make it writable or " + hint
    elif "not a database" in msg or "malformed" in msg:
        hint = "it is damaged: delete it (it is only a cache) or " + hint
    return OutputError(f"embedding cache {path}: {msg}; {hint}")


def check_place(path: str | os.PathLike) -> None:
    """An :class:`OutputError` naming what is in the way when the cache file ``path`` cannot
    be made because of something a person put there: a folder where the file goes, or a file
    where its folder goes. That is a mistake to fix, not a cache nobody may write: the
    commands that embed refuse it as ``mediacluster cache`` does, before any work, instead of
    running on a temporary cache (``open_store``) with a warning about permissions."""
    path = Path(path)
    if path.is_dir():
        what = f"{path} is a folder, not the cache's file"
    elif path.parent.exists() and not path.parent.is_dir():
        what = f"{path.parent} is a file, not the folder of the cache {path}"
    else:
        return
    raise OutputError(f"{what}: no command can make the embedding cache there; move it away or give "
                      "another --cache-dir")


def cannot_write(e: OutputError) -> bool:
    """Whether the cache failed to open because its place cannot be written (a read-only folder,
    file or file system; a HOME nobody may write into), not because it is damaged or full."""
    cause = e.__cause__
    if isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return True
    return isinstance(cause, sqlite3.Error) and any(w in str(cause) for w in ("readonly", "unable to open"))


def open_store(location: str | os.PathLike | None = None, timeout: float = 120.0) -> EmbeddingStore:
    """The embedding cache at ``location`` (see :class:`EmbeddingStore`); where it cannot be
    written, a store in a temporary folder that :meth:`EmbeddingStore.close` removes, with a
    warning naming the cache: the run works (every file embedded, nothing kept for the next
    one) instead of ending before any work. A damaged or full cache stays an error, and so
    does a folder or file in the cache's place (:func:`check_place`)."""
    try:
        return EmbeddingStore(location, timeout)
    except OutputError as e:
        if not cannot_write(e):
            raise
        tmp = Path(tempfile.mkdtemp(prefix="mediacluster-cache-"))
        log.warning("%s; this run embeds without it (nothing is kept for the next run)", e)
        try:
            store = EmbeddingStore(tmp, timeout)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        store.temporary = tmp
        return store


def default_store_path() -> Path:
    return cache_root() / DB_NAME


def _set_wal(con: sqlite3.Connection, timeout: float) -> str:
    """Switch to WAL, retrying: SQLite answers "database is locked" to a journal-mode change
    while another process opens the same new file, without calling the busy handler."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class EmbeddingStore:
    """Vectors (and extras) by (content hash, encoder id) in one SQLite file.

    ``location`` is a folder (the store is ``location/embeddings.sqlite``) or a file path; None
    means the user cache (``$MEDIACLUSTER_CACHE`` or ``~/.cache/mediacluster``).

    >>> store = EmbeddingStore(tmp_dir)                                   # doctest: +SKIP
    >>> hashes, errors = store.hash_files(paths)                          # doctest: +SKIP
    >>> missing = store.missing(hashes, encoder.id)                       # doctest: +SKIP
    >>> store.put(batch_hashes, encoder.id, encoder.encode(batch))        # doctest: +SKIP
    >>> vectors, extras = store.get(hashes, encoder.id)                   # doctest: +SKIP
    """

    def __init__(self, location: str | os.PathLike | None = None, timeout: float = 120.0,
                 read_only: bool = False):
        if location is None:
            path = default_store_path()
        else:
            path = Path(location)
            if path.suffix not in (".sqlite", ".db", ".sqlite3"):
                path = path / DB_NAME
        self.path = path
        self._lock = threading.Lock()
        self._con = None
        self.temporary: Path | None = None  # a stand-in's folder (:func:`open_store`), removed on close
        check_place(path)
        try:
            if read_only:
                self._open_read_only(path, timeout)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._open(path, timeout)
        except (sqlite3.Error, OSError) as e:
            self.close()
            raise cache_error(e, path) from e

    def _open(self, path: Path, timeout: float) -> None:
        # a Path, not str(path): sqlite3 then encodes it like the OS does (any file name)
        self._con = sqlite3.connect(path, timeout=timeout, check_same_thread=False,
                                    isolation_level=None)
        con = self._con
        self._used: set[str] = set()  # derived kinds whose use this connection has recorded
        con.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        # a new file gives freed pages back on request (``reclaim``); an older one keeps the mode
        # it has until it is rewritten (VACUUM), which then also switches it
        con.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = _set_wal(con, timeout)
        if str(mode).lower() != "wal":  # e.g. a filesystem without shared memory
            raise OutputError(f"embedding cache {path}: cannot use WAL journal (got {mode!r}); "
                              "put the cache on a local filesystem (--cache-dir)")
        con.execute("PRAGMA synchronous=NORMAL")
        with self._tx():
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    con.execute(stmt)
            if (con.execute("SELECT 1 FROM derived_kinds LIMIT 1").fetchone() is None
                    and con.execute("SELECT 1 FROM derived LIMIT 1").fetchone() is not None):
                # entries written before the kinds were listed: list them once
                con.execute("INSERT OR IGNORE INTO derived_kinds SELECT DISTINCT kind FROM derived")
            row = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                con.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise OutputError(f"embedding cache {path} has schema {row[0]}, this mediacluster "
                                  f"uses {SCHEMA_VERSION}; choose another --cache-dir")

    def _open_read_only(self, path: Path, timeout: float) -> None:
        """Open an existing cache for reading only (``read_only=True``: a listing of a cache in a
        read-only place, where the writable open's WAL switch and schema fail): SQLite's
        ``mode=ro``, which still needs the WAL's ``-shm`` beside the file (it makes one when the
        folder can be written); where it cannot, ``immutable=1`` (no -shm, no locks), taken
        only when no write-ahead log holds pages the file lacks (those would be unseen). Nothing
        is made or changed; every write raises ``sqlite3.OperationalError``."""
        import urllib.parse

        if not path.is_file():
            raise OutputError(f"no embedding cache at {path}")
        uri = "file:" + urllib.parse.quote(os.fsencode(path.absolute()))
        wal = Path(f"{path}-wal")
        tries = ["mode=ro"]
        if not (wal.exists() and wal.stat().st_size > 0):
            tries.append("mode=ro&immutable=1")
        for i, query in enumerate(tries):
            con = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=timeout, check_same_thread=False,
                                  isolation_level=None)
            try:
                row = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            except sqlite3.OperationalError as e:
                con.close()
                if i + 1 < len(tries) and ("unable to open" in str(e) or "readonly" in str(e)):
                    continue
                raise
            break
        self._con = con
        self._used = set()
        if row is not None and row[0] != SCHEMA_VERSION:
            raise OutputError(f"embedding cache {path} has schema {row[0]}, this mediacluster "
                              f"uses {SCHEMA_VERSION}; choose another --cache-dir")

    # -- plumbing -------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store):
            self.store = store

        def __enter__(self):
            self.store._lock.acquire()
            try:
                self.store._con.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._con

        def __exit__(self, et, ev, tb):
            try:
                self.store._con.execute("COMMIT" if et is None else "ROLLBACK")
            finally:
                self.store._lock.release()

    def _tx(self):
        return EmbeddingStore._Tx(self)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
            if getattr(self, "temporary", None) is not None:  # :func:`open_store`'s stand-in
                shutil.rmtree(self.temporary, ignore_errors=True)
                self.temporary = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- hashing --------------------------------------------------------------------------
    def hash_files(self, paths: Sequence[str], workers: int = 4, verify: bool = False,
                   progress: bool = False, return_stats: bool = False):
        """Content hashes of ``paths`` (None where unreadable) and ``{index: reason}`` errors;
        with ``return_stats``, also the ``os.stat`` of each taken before it was hashed (None
        where it failed), for a caller that reads the files later and must know whether they
        changed since (:func:`changed_since`).

        Files whose (size, mtime_ns, ctime_ns, inode) match what was recorded take the recorded
        hash without being read (unless ``verify``).
        """
        paths = [os.path.abspath(p) for p in paths]  # fast-path records are by absolute path
        hashes, stats, errors = (self.known_hashes(paths) if not verify else
                                 ([None] * len(paths), *_stat_all(paths)))
        todo = [i for i in range(len(paths)) if hashes[i] is None and i not in errors]
        if todo:
            now = time.time()
            read, failed = hash_files([paths[i] for i in todo], workers=workers, progress=progress)
            fresh = []
            for k, i in enumerate(todo):
                if k in failed:
                    errors[i] = failed[k]
                    continue
                hashes[i] = read[k]
                fresh.append((paths[i], stats[i], read[k]))
            self.record_hashes(fresh, now)
        return (hashes, errors, stats) if return_stats else (hashes, errors)

    def known_hashes(self, paths: Sequence[str]) -> tuple[list[str | None], list[os.stat_result | None],
                                                           dict[int, str]]:
        """The recorded hashes of ``paths`` whose (size, mtime_ns, ctime_ns, inode) are unchanged
        (None for the others: nothing is read), the ``os.stat`` of each (None where it failed)
        and ``{index: reason}`` for those. For a caller whose workers read the files themselves
        (the Ray executor), which then records what they found (:meth:`record_hashes`)."""
        paths = [os.path.abspath(p) for p in paths]
        stats, errors = _stat_all(paths)
        known: dict[str, tuple] = {}
        with self._lock:
            for chunk in _chunks(paths):
                q = ",".join("?" * len(chunk))
                for row in self._con.execute(
                        f"SELECT path, size, mtime_ns, ctime_ns, ino, hash FROM files WHERE path IN ({q})",
                        [_path_key(p) for p in chunk]):
                    known[_path_of_key(row[0])] = row[1:]
        hashes: list[str | None] = [None] * len(paths)
        for i, p in enumerate(paths):
            st, k = stats[i], known.get(p)
            if st is not None and k is not None and k[:4] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
                hashes[i] = k[4]
        return hashes, stats, errors

    def record_hashes(self, items: Iterable[tuple[str, os.stat_result, str]], hashed_after: float) -> None:
        """Record ``(path, stat, hash)``: ``stat`` taken before the bytes were hashed, at or
        before ``hashed_after`` (a ``time.time()``). A file whose timestamps are younger than
        2 s at that time is not recorded (git's "racily clean" rule), and one written after its
        stat was taken no longer matches it: neither is ever taken from the record."""
        fresh = [(_path_key(os.path.abspath(p)), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, h)
                 for p, st, h in items if max(st.st_mtime, st.st_ctime) < hashed_after - _RACY_S]
        for chunk in _chunks(fresh, 5000):
            with self._tx() as con:
                con.executemany(
                    "INSERT INTO files VALUES (?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET "
                    "size=excluded.size, mtime_ns=excluded.mtime_ns, ctime_ns=excluded.ctime_ns, "
                    "ino=excluded.ino, hash=excluded.hash", chunk)

    # -- vectors --------------------------------------------------------------------------
    def contains(self, hashes: Iterable[str], encoder: str) -> set[str]:
        """The subset of ``hashes`` stored for ``encoder``."""
        hashes = list(dict.fromkeys(hashes))
        found: set[str] = set()
        with self._lock:
            for chunk in _chunks(hashes):
                q = ",".join("?" * len(chunk))
                found.update(r[0] for r in self._con.execute(
                    f"SELECT hash FROM vectors WHERE encoder=? AND hash IN ({q})", [encoder, *chunk]))
        return found

    def missing(self, hashes: Iterable[str], encoder: str) -> list[str]:
        """Distinct ``hashes`` not yet stored for ``encoder``, in first-seen order."""
        hashes = list(dict.fromkeys(hashes))
        have = self.contains(hashes, encoder)
        return [h for h in hashes if h not in have]

    def put(self, hashes: Sequence[str], encoder: str, outputs: dict[str, np.ndarray]) -> None:
        """Store one batch in one transaction (all of it or nothing)."""
        vec = np.ascontiguousarray(outputs["embedding"], dtype=np.float32)
        if len(vec) != len(hashes):
            raise ValueError(f"{len(hashes)} hashes but {len(vec)} vectors")
        extras = {}
        for name, arr in outputs.items():
            if name == "embedding":
                continue
            dt = np.float16 if name.endswith("probs") else np.float32
            extras[name] = (np.dtype(dt).str, np.ascontiguousarray(arr, dtype=dt))
        now = time.time()
        with self._tx() as con:
            con.executemany(
                "INSERT INTO vectors (hash, encoder, dim, vector, writes, created) VALUES (?,?,?,?,1,?) "
                "ON CONFLICT(hash, encoder) DO UPDATE SET vector=excluded.vector, dim=excluded.dim, "
                "writes=writes+1",
                [(h, encoder, vec.shape[1], vec[i].tobytes(), now) for i, h in enumerate(hashes)])
            for name, (dt, arr) in extras.items():
                con.executemany(
                    "INSERT INTO extras VALUES (?,?,?,?,?) ON CONFLICT(hash, encoder, name) "
                    "DO UPDATE SET dtype=excluded.dtype, data=excluded.data",
                    [(h, encoder, name, dt, arr[i].tobytes()) for i, h in enumerate(hashes)])

    def get(self, hashes: Sequence[str], encoder: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Vectors (n, d) float32 and extras (float32) for ``hashes``, in order (repeats allowed).

        Raises ``KeyError`` if one is missing.
        """
        uniq = list(dict.fromkeys(hashes))
        vecs: dict[str, bytes] = {}
        ext: dict[str, dict[str, tuple[str, bytes]]] = {}
        dim = None
        with self._lock:
            for chunk in _chunks(uniq):
                q = ",".join("?" * len(chunk))
                for h, d, blob in self._con.execute(
                        f"SELECT hash, dim, vector FROM vectors WHERE encoder=? AND hash IN ({q})",
                        [encoder, *chunk]):
                    vecs[h] = blob
                    dim = d
                for h, name, dt, blob in self._con.execute(
                        f"SELECT hash, name, dtype, data FROM extras WHERE encoder=? AND hash IN ({q})",
                        [encoder, *chunk]):
                    ext.setdefault(name, {})[h] = (dt, blob)
        miss = [h for h in uniq if h not in vecs]
        if miss:
            raise KeyError(f"{len(miss)} item(s) not in the store for {encoder}, e.g. {miss[0]}")
        if not hashes:
            return np.zeros((0, 0), np.float32), {}
        out = np.empty((len(hashes), dim), np.float32)
        for i, h in enumerate(hashes):
            out[i] = np.frombuffer(vecs[h], np.float32)
        extras = {}
        for name, rows in ext.items():
            if len(rows) != len(uniq):  # an extra missing for some items: leave it out entirely
                continue
            first = next(iter(rows.values()))
            width = len(np.frombuffer(first[1], np.dtype(first[0])))
            arr = np.empty((len(hashes), width), np.float32)
            for i, h in enumerate(hashes):
                dt, blob = rows[h]
                arr[i] = np.frombuffer(blob, np.dtype(dt))
            extras[name] = arr
        return out, extras

    # -- derived data (per content, not per encoder) --------------------------------------
    def get_derived(self, keys: Iterable[str], kind: str) -> dict[str, bytes]:
        """The stored ``kind`` bytes of those ``keys`` that have them."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, bytes] = {}
        with self._lock:
            for chunk in _chunks(keys):
                q = ",".join("?" * len(chunk))
                out.update((k, bytes(d)) for k, d in self._con.execute(
                    f"SELECT key, data FROM derived WHERE kind=? AND key IN ({q})", [kind, *chunk]))
        self._note_use(kind)
        return out

    def _note_use(self, kind: str) -> None:
        """Record that ``kind`` was read now (once per connection): ``prune_derived(idle_s=)``
        keeps a kind in use. Best effort: a read-only or busy cache is still read."""
        if kind in self._used:
            return
        self._used.add(kind)
        try:
            with self._tx() as con:
                con.execute(_NOTE_USE, (kind, time.time()))
        except sqlite3.Error:
            pass

    def put_derived(self, items: Iterable[tuple[str, bytes]], kind: str) -> None:
        """Store ``(key, bytes)`` pairs of ``kind`` (replacing any), 5,000 per transaction."""
        items = list(items)
        for chunk in _chunks(items, 5000):
            with self._tx() as con:
                con.execute("INSERT OR IGNORE INTO derived_kinds VALUES (?)", (kind,))
                con.execute(_NOTE_USE, (kind, time.time()))
                con.executemany("INSERT INTO derived VALUES (?,?,?) ON CONFLICT(key, kind) "
                                "DO UPDATE SET data=excluded.data", [(k, kind, d) for k, d in chunk])

    # -- failures (derived data of kind ``failure_kind(...)``) ------------------------------
    def failures(self, hashes: Iterable[str], kind: str) -> dict[str, str]:
        """{hash: reason} of those ``hashes`` remembered as failing for ``kind``
        (:func:`failure_kind`). Within :func:`retrying_failures`, those not yet asked for in
        the block are forgotten first (so not in the answer)."""
        retry = _RETRY.get()
        if retry is not None:
            hashes = list(dict.fromkeys(hashes))
            new = [h for h in hashes if (kind, h) not in retry.asked]
            if new:
                retry.forgotten += self.forget_failures(new, kind)
                retry.asked.update((kind, h) for h in new)
        return {h: d.decode("utf-8", "surrogateescape") for h, d in self.get_derived(hashes, kind).items()}

    def remember_failures(self, items: Iterable[tuple[str, str]], kind: str) -> None:
        """Remember ``(hash, reason)`` pairs: content that fails the same way on every run
        (``ingest.SkipItem.lasting``; never a failure of the machine)."""
        self.put_derived([(h, r.encode("utf-8", "surrogateescape")) for h, r in items], kind)

    def prune_failures(self) -> dict[str, int]:
        """Drop the remembered failures of another decoder version (:func:`stale_failure_kind`)
        that nobody used for :data:`STALE_IDLE_DAYS`; {kind: entries deleted}."""
        return self.prune_derived(stale_failure_kind, idle_s=STALE_IDLE_DAYS * 86400.0)

    def forget_failures(self, keys: Iterable[str] | None = None, kind: str | None = None) -> int:
        """Forget remembered failures: the next run decodes those files again (and remembers
        those still failing). ``keys``: only those contents' (of ``kind``, else of every failure
        kind; ``--retry-bad`` forgets a command's own files' this way, :func:`retrying_failures`);
        None: every one in the cache. Returns how many were forgotten."""
        like = FAILED + "%"  # (no LIKE wildcard in FAILED)
        if keys is not None:
            keys, n = list(dict.fromkeys(keys)), 0
            which, arg = ("kind=?", kind) if kind is not None else ("kind LIKE ?", like)
            for chunk in _chunks(keys):
                with self._tx() as con:
                    n += con.execute(f"DELETE FROM derived WHERE {which} AND key IN ({','.join('?' * len(chunk))})",
                                     [arg, *chunk]).rowcount
            return n  # a few bytes each: the pages are reused by the failures remembered again
        with self._tx() as con:
            n = con.execute("DELETE FROM derived WHERE kind LIKE ?", (like,)).rowcount
            con.execute("DELETE FROM derived_kinds WHERE kind LIKE ?", (like,))
            con.execute("DELETE FROM derived_used WHERE kind LIKE ?", (like,))
        if n:
            self.reclaim()
        return n

    def derived_kinds(self) -> list[str]:
        """The kinds of derived data the store holds."""
        with self._lock:
            return [k for (k,) in self._con.execute("SELECT kind FROM derived_kinds ORDER BY kind")]

    def prune_derived(self, stale, idle_s: float = 0.0) -> dict[str, int]:
        """Delete every entry of the kinds for which ``stale(kind)`` is true (kinds no current
        code reads) and that nobody read or wrote for ``idle_s`` seconds, in one transaction:
        all of them or none (safe to kill), and safe with a run using the store at the same time
        (it waits, or it wrote before and loses only stale entries; a stale kind written again
        later is dropped the next time). ``idle_s`` keeps the kinds of another version of the
        code sharing the cache while that version uses them (each read or write records the
        time, once per connection; a kind whose use was never recorded, e.g. one written by
        code older than the record, is taken as used at its first sight). Returns
        {kind: entries deleted}. The pages freed are then given back to the file system
        (:meth:`reclaim`)."""
        now = time.time()
        with self._tx() as con:
            kinds = [k for (k,) in con.execute("SELECT kind FROM derived_kinds")]
            used = dict(con.execute("SELECT kind, used FROM derived_used"))
            out = {}
            for k in kinds:
                if not stale(k):
                    continue
                if idle_s > 0 and now - used.get(k, now) < idle_s:
                    if k not in used:  # first seen: its idle time starts now
                        con.execute(_NOTE_USE, (k, now))
                    continue
                out[k] = con.execute("DELETE FROM derived WHERE kind=?", (k,)).rowcount
                con.execute("DELETE FROM derived_kinds WHERE kind=?", (k,))
            # uses recorded of kinds with no entries (pruned, e.g. by older code): nothing to keep
            con.execute("DELETE FROM derived_used WHERE kind NOT IN (SELECT kind FROM derived_kinds)")
        if any(out.values()):
            self.reclaim()
        return out

    def reclaim(self, vacuum_share: float = VACUUM_SHARE) -> int:
        """Give the cache's free pages back to the file system; the bytes the file shrank by.

        A cache created with ``auto_vacuum=INCREMENTAL`` (every cache created by this code)
        moves its last pages into the free ones and truncates (``PRAGMA incremental_vacuum``: its
        cost is that of the pages moved). An older cache is rewritten whole (``VACUUM``, which
        also switches it to incremental) only when at least ``vacuum_share`` of its pages are
        free: the rewrite costs time and disk in proportion to the whole file, and freed pages are
        reused by later writes anyway. The write-ahead log is then checkpointed and truncated
        (when no reader holds it). Best effort: a busy, read-only or full cache is left as it
        is (0)."""
        def size():
            return sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal"))
                       if os.path.exists(p))

        with self._lock:
            con = self._con
            try:
                free = con.execute("PRAGMA freelist_count").fetchone()[0]
                total = con.execute("PRAGMA page_count").fetchone()[0]
                if free == 0:
                    return 0
                before = size()
                if con.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
                    # executescript steps it to its end (execute would move one page)
                    con.executescript("PRAGMA incremental_vacuum;")
                elif free >= vacuum_share * total:
                    con.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    con.execute("VACUUM")
                else:
                    return 0
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                return 0
        return max(before - size(), 0)

    # -- inspection -----------------------------------------------------------------------
    def stats(self, encoder: str | None = None) -> dict:
        """Counts: ``vectors`` stored, ``rewrites`` (vectors written more than once), ``files``."""
        where, args = ("WHERE encoder=?", [encoder]) if encoder else ("", [])
        with self._lock:
            n, rewrites = self._con.execute(
                f"SELECT COUNT(*), COALESCE(SUM(writes - 1), 0) FROM vectors {where}", args).fetchone()
            files = self._con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            encoders = [r[0] for r in self._con.execute("SELECT DISTINCT encoder FROM vectors")]
        return {"vectors": int(n), "rewrites": int(rewrites), "files": int(files), "encoders": encoders}

    def summary(self) -> dict:
        """What the store holds, for ``mediacluster cache``: ``path``; ``bytes`` (the file and
        its write-ahead log) and ``free_bytes`` (pages freed and not yet given back);
        ``encoders``: per encoder id its ``vectors``, ``dim``, ``bytes`` (vectors and extras) and
        ``extras`` names; ``files``: the path -> content records (what lets an unchanged file
        skip hashing); ``derived``: per kind (duplicate signatures, verdicts, remembered decode
        failures) its ``entries``, ``bytes``, ``used`` (last recorded use, epoch seconds, or
        None) and ``failures`` (True for remembered failures). Reads every row's header once:
        ~2 s for 80,000 vectors of 1,280 dimensions."""
        with self._lock:
            con = self._con
            # dim, not length(vector): the header column, without reading the blob's pages
            enc = con.execute("SELECT encoder, COUNT(*), MAX(dim), SUM(dim) FROM vectors "
                              "GROUP BY encoder").fetchall()
            ext = con.execute("SELECT encoder, name, SUM(LENGTH(data)) FROM extras "
                              "GROUP BY encoder, name").fetchall()
            der = con.execute("SELECT kind, COUNT(*), SUM(LENGTH(data)) FROM derived GROUP BY kind").fetchall()
            used = dict(con.execute("SELECT kind, used FROM derived_used"))
            files = con.execute("SELECT COUNT(*) FROM files").fetchone()[0]
            page = con.execute("PRAGMA page_size").fetchone()[0]
            free = con.execute("PRAGMA freelist_count").fetchone()[0] * page
        extras: dict[str, dict[str, int]] = {}
        for e, name, b in ext:
            extras.setdefault(e, {})[name] = int(b or 0)
        encoders = [{"encoder": e, "vectors": int(n), "dim": int(d),
                     "bytes": int(s) * 4 + sum(extras.get(e, {}).values()),  # float32 vectors
                     "extras": sorted(extras.get(e, {}))} for e, n, d, s in enc]
        derived = [{"kind": k, "entries": int(n), "bytes": int(b or 0), "used": used.get(k),
                    "failures": k.startswith(FAILED)} for k, n, b in der]
        size = sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if os.path.exists(p))
        return {"path": str(self.path), "bytes": int(size), "free_bytes": int(free),
                "encoders": sorted(encoders, key=lambda r: -r["bytes"]), "files": int(files),
                "derived": sorted(derived, key=lambda r: -r["bytes"])}

    def held_for(self, paths: Sequence[str], encoders: Sequence[str] | None = None) -> dict:
        """How much of the files ``paths`` the store already holds, reading none of them:
        ``files``; ``known``: those recorded and unchanged since (a run does not hash them again);
        ``to_hash`` / ``to_hash_bytes``: the others that exist (a run hashes them: reads them
        whole); ``unreadable``: those that cannot be looked at (missing, no permission);
        ``encoders``: encoder id -> how many of the known files have its vectors (what a run with
        that encoder does not embed again; the unknown ones may have them too, by content), of
        ``encoders`` (default every encoder the store holds vectors of: a scan of the vectors)."""
        hashes, stats, errors = self.known_hashes(paths)
        known = [h for h in hashes if h is not None]
        to_hash = [st for h, st in zip(hashes, stats) if h is None and st is not None]
        if encoders is not None:
            ids = list(encoders)
        else:
            with self._lock:
                ids = [e for (e,) in self._con.execute("SELECT DISTINCT encoder FROM vectors")]
        held = {}
        for e in ids:
            have = self.contains(known, e)
            held[e] = sum(h in have for h in known)
        return {"files": len(hashes), "known": len(known), "to_hash": len(to_hash),
                "to_hash_bytes": int(sum(st.st_size for st in to_hash)), "unreadable": len(errors),
                "encoders": held}

    def forget_vectors(self, hashes: Iterable[str], encoder: str) -> int:
        """Delete the vectors and extras of ``hashes`` for ``encoder`` (one transaction): the
        next run embeds those contents again. Returns how many vectors went."""
        hashes = list(hashes)
        n = 0
        with self._tx() as con:
            for chunk in _chunks(hashes):
                q = ",".join("?" * len(chunk))
                n += con.execute(f"DELETE FROM vectors WHERE encoder=? AND hash IN ({q})", [encoder, *chunk]).rowcount
                con.execute(f"DELETE FROM extras WHERE encoder=? AND hash IN ({q})", [encoder, *chunk])
        return n

    def forget_encoder(self, encoder: str) -> dict[str, int]:
        """Delete every vector and extra of ``encoder`` (an id as :meth:`summary` lists it) and
        the decode failures remembered for it, in one transaction, then give the pages back
        (:meth:`reclaim`). The next run with that encoder embeds its files again. Returns
        ``{"vectors": n, "extras": n, "failures": n}``."""
        with self._tx() as con:
            out = {"vectors": con.execute("DELETE FROM vectors WHERE encoder=?", (encoder,)).rowcount,
                   "extras": con.execute("DELETE FROM extras WHERE encoder=?", (encoder,)).rowcount}
            kinds = [k for (k,) in con.execute("SELECT kind FROM derived_kinds")
                     if k.startswith(FAILED) and k.endswith("/" + encoder)]
            out["failures"] = 0
            for k in kinds:
                out["failures"] += con.execute("DELETE FROM derived WHERE kind=?", (k,)).rowcount
                con.execute("DELETE FROM derived_kinds WHERE kind=?", (k,))
                con.execute("DELETE FROM derived_used WHERE kind=?", (k,))
        if any(out.values()):
            self.reclaim()
        return out

    def forget_missing_files(self) -> int:
        """Delete the path -> content records of files that are no longer there (moved,
        deleted, or on a disk not mounted now: such a file is only hashed again when it is
        next read). The vectors stay: they are keyed by content. Returns how many went."""
        with self._lock:
            keys = [k for (k,) in self._con.execute("SELECT path FROM files")]
        gone = [k for k in keys if not os.path.lexists(_path_of_key(k))]  # a key: text or raw bytes
        n = 0
        for chunk in _chunks(gone):
            with self._tx() as con:
                n += con.execute(f"DELETE FROM files WHERE path IN ({','.join('?' * len(chunk))})",
                                 chunk).rowcount
        if n:
            self.reclaim()
        return n

    def writes(self, encoder: str) -> dict[str, int]:
        """hash -> how many times its vector was written (1 unless embedded more than once)."""
        with self._lock:
            return dict(self._con.execute("SELECT hash, writes FROM vectors WHERE encoder=?", (encoder,)))

    def integrity_check(self) -> str:
        with self._lock:
            return self._con.execute("PRAGMA integrity_check").fetchone()[0]


__all__ = ["EmbeddingStore", "hash_file", "default_store_path", "failure_kind", "stale_failure_kind", "FAILURE_VERSION",
           "STALE_IDLE_DAYS", "retrying_failures"]
