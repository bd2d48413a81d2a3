"""The service's inbox: the uploads it could not place, kept for a person and the next clustering.

``mediacluster serve RUN --keep-uploads DIR`` keeps, of the items it answers (``/v1/assign`` and
``/v1/similar``), those a rule picks (``--keep``: ``novel``, the default: a kind the collection
lacks; ``uncertain``: membership probability below ``--keep-below``, so also every noise or
outlier answer; ``junk``: answered in a cluster marked junk; ``all``). What DIR holds:

- ``DIR/files/<content hash><ext>``: each kept upload's bytes, once per content (BLAKE2b-128,
  the package's content hash), written atomically (``fileio.atomic_path``: a hidden temporary
  file, fsync, rename). The extension is the one of the format the bytes are in (sniffed: Pillow
  for images, the magic bytes for audio; the client's extension only when the sniffing finds
  nothing and it is one the collection reads), never the client's file name: a hostile name
  (``../../x.jpg``, 200 characters, undecodable bytes) is data, not a path. So ``DIR/files`` is a
  collection like any folder: ``mediacluster cluster DIR/files`` reads it.
- ``DIR/inbox.sqlite``: an append-only table ``uploads``, one row per kept item: time (UTC),
  model version, route, input kind, why it was kept, the answer (cluster, name, status,
  probability, novelty, novel, duplicate_of as JSON), the client's file name, size, content hash
  and the stored file (relative to DIR); a table ``stored`` (one row per content: file, size, and
  for a vector posted as JSON its float32 bytes, since a vector is no file) and a view ``contents``
  (per content: file, size, how many uploads had it, first and last seen). SQLite in WAL mode
  with a busy timeout, as the studio's edit log: the worker processes of ``--workers N`` each
  write through their own connection, one transaction per item, and none waits for another's
  reader.

Never at a request's cost: the handler only checks the rule (microseconds) and hands the item
to this process's one writer thread; hashing, sniffing and writing happen after the answer is
sent. What waits is bounded (``MAX_PENDING_BYTES``: beyond it an item is skipped, reason
``backlog``). ``--keep-max-mb`` bounds the stored bytes: a new content that would pass it is
skipped (reason ``full``; a content already stored still gets its row), said once in the log and
in ``/metrics`` (``mediacluster_inbox_full`` 1). A write that fails (disk full, permissions, a
file in the way) is logged once per process and counted (reason ``error``); the answer was
already given.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, hash_bytes

log = logging.getLogger(__name__)

KEEP_KINDS = ("novel", "uncertain", "junk", "all")
#: the default of ``--keep-below``: "uncertain" is a membership probability below this
KEEP_BELOW = 0.5
#: bytes of uploads waiting for the writer thread, at most (the rest is skipped: "backlog")
MAX_PENDING_BYTES = 256 << 20
DB_NAME = "inbox.sqlite"
FILES = "files"

_DDL = [
    """CREATE TABLE IF NOT EXISTS stored (
        hash TEXT PRIMARY KEY, file TEXT, size INTEGER NOT NULL, vector BLOB)""",
    """CREATE TABLE IF NOT EXISTS uploads (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, model_version TEXT,
        route TEXT, input TEXT NOT NULL, reason TEXT NOT NULL,
        cluster INTEGER, name TEXT, status TEXT, probability REAL, novelty REAL, novel INTEGER,
        duplicate_of TEXT, filename TEXT, size INTEGER NOT NULL, hash TEXT NOT NULL, file TEXT,
        pid INTEGER)""",
    "CREATE INDEX IF NOT EXISTS uploads_hash ON uploads(hash)",
    """CREATE VIEW IF NOT EXISTS contents AS
        SELECT s.hash AS hash, s.file AS file, s.size AS size, COUNT(u.id) AS count,
               MIN(u.time) AS first_seen, MAX(u.time) AS last_seen
        FROM stored s LEFT JOIN uploads u ON u.hash = s.hash GROUP BY s.hash""",
]

_PIL_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif",
            "MPO": ".jpg"}


@dataclass(frozen=True)
class KeepRule:
    """Which answered items are kept (``--keep``, ``--keep-below``, ``--keep-novelty``)."""

    kinds: frozenset = frozenset({"novel"})
    below: float = KEEP_BELOW
    novelty: float | None = None  # "novel" also keeps answers whose novelty is at least this

    def reason(self, answer: dict) -> str | None:
        """Why ``answer`` is kept (the first of novel, junk, uncertain, all that holds), or None."""
        k = self.kinds
        score = answer.get("novelty")
        if "novel" in k and (answer.get("novel") or (
                self.novelty is not None and score is not None and float(score) >= self.novelty)):
            return "novel"
        if "junk" in k and answer.get("status") == "junk":
            return "junk"
        if "uncertain" in k and float(answer.get("probability") or 0.0) < self.below:
            return "uncertain"
        if "all" in k:
            return "all"
        return None


def open_db(root: str | os.PathLike) -> sqlite3.Connection:
    """The inbox table of ``root`` (created with its folder if new). Raises OSError /
    sqlite3.Error when it cannot be."""
    root = Path(root)
    (root / FILES).mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(root / DB_NAME), timeout=30.0, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA busy_timeout=30000")  # before WAL: several workers open it at once
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _DDL:
            con.execute(stmt)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return con


def sniff_extension(data: bytes, filename: str | None, media: str) -> str:
    """The file extension of the format ``data`` is in (see the module docstring)."""
    if media == "audio":
        head = data[:12]
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            return ".wav"
        if head[:4] == b"fLaC":
            return ".flac"
        if head[:4] == b"OggS":
            return ".ogg"
        if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return ".aiff"
        if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
            return ".mp3"
    else:
        try:
            from PIL import Image  # lazily: only a served image model keeps images

            with Image.open(io.BytesIO(data)) as im:  # reads the header only
                ext = _PIL_EXT.get(im.format or "")
            if ext:
                return ext
        except Exception:  # noqa: BLE001 - an unknown format falls back to the name below
            pass
    from ..ingest.sources import MEDIA_EXTENSIONS

    suffix = os.path.splitext(filename or "")[1].lower()
    return suffix if suffix in MEDIA_EXTENSIONS.get(media, ()) and suffix.isascii() else ".bin"


def _text(s: str | None) -> str | None:
    """A client's file name as storable text (lone surrogates escaped)."""
    return None if s is None else s.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class _Item:
    time: str
    version: str
    route: str
    input: str
    reason: str
    answer: dict
    data: bytes | None  # an upload's bytes
    vector: np.ndarray | None  # a vector posted as JSON
    filename: str | None

    @property
    def nbytes(self) -> int:
        return len(self.data) if self.data is not None else int(self.vector.nbytes)


class Inbox:
    """The uploads one service process keeps (see the module docstring). ``on_event(kind,
    label)`` is told of each ``("kept", input)``, ``("skipped", reason)`` and ``("full", "")``
    (metrics)."""

    def __init__(self, root: str | os.PathLike, rule: KeepRule, max_bytes: int | None = None,
                 on_event: Callable[[str, str], None] | None = None):
        self.root = Path(root)
        self.rule = rule
        self.max_bytes = max_bytes
        self.on_event = on_event or (lambda kind, label: None)
        self._con = open_db(self.root)
        self._queue: collections.deque[_Item] = collections.deque()
        self._pending = 0
        self._cv = threading.Condition()
        self._closed = False
        self._busy = False
        self._warned: set[str] = set()
        self.full = False
        self._thread = threading.Thread(target=self._work, name="inbox-writer", daemon=True)
        self._thread.start()

    # -- the request's side (the event loop: cheap) ------------------------------------------
    def offer(self, version: str, route: str, media: str, answers: list[dict],
              datas: list[bytes] | None = None, vectors: np.ndarray | None = None) -> int:
        """Hand the items of one answered request whose answer the rule picks to the writer;
        returns how many were picked. Each answer handed over gets ``kept``: why (the rule's
        reason), so the client knows what waits for review and what was placed."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        picked = []
        for i, a in enumerate(answers):
            why = self.rule.reason(a)
            if why is None:
                continue
            picked.append(_Item(now, version, route, media, why, a,
                                datas[i] if datas is not None else None,
                                vectors[i].copy() if vectors is not None else None, a.get("filename")))
        if not picked:
            return 0
        with self._cv:
            for it in picked:
                if self._closed or self._pending + it.nbytes > MAX_PENDING_BYTES:
                    self._skip("backlog", "the inbox writer is behind: uploads are skipped, not kept")
                    continue
                if not self.full:  # once full, new contents are skipped by the writer
                    it.answer["kept"] = it.reason  # (set before the writer thread can see it)
                self._pending += it.nbytes
                self._queue.append(it)
            self._cv.notify()
        return len(picked)

    # -- the writer thread -------------------------------------------------------------------
    def _skip(self, reason: str, message: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("inbox %s: %s (said once; counted in mediacluster_inbox_skipped{reason=%r})",
                        self.root, message, reason)
        self.on_event("skipped", reason)

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                it = self._queue.popleft()
                self._busy = True
            try:
                self._write(it)
            except Exception as e:  # noqa: BLE001 - a failed write never stops the writer
                self._skip("error", f"cannot keep an upload: {type(e).__name__}: {e}")
            finally:
                with self._cv:
                    self._pending -= it.nbytes
                    self._busy = False
                    self._cv.notify_all()

    def _write(self, it: _Item) -> None:
        raw = it.data if it.data is not None else np.ascontiguousarray(it.vector, dtype=np.float32).tobytes()
        h = hash_bytes(raw)
        rel = None
        if it.data is not None:
            rel = f"{FILES}/{h}{sniff_extension(it.data, it.filename, it.input)}"
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            row = con.execute("SELECT file FROM stored WHERE hash = ?", (h,)).fetchone()
            if row is None:
                total = con.execute("SELECT total(size) FROM stored").fetchone()[0]
                if self.max_bytes is not None and total + len(raw) > self.max_bytes:
                    con.execute("ROLLBACK")
                    if not self.full:
                        self.full = True
                        self.on_event("full", "")
                    self._skip("full", f"--keep-max-mb reached ({total / 2**20:.1f} MiB kept): new "
                               "uploads are no longer kept; the service keeps answering")
                    return
                if rel is not None:
                    target = self.root / rel
                    if not target.exists():
                        with atomic_path(target) as tmp:
                            Path(tmp).write_bytes(raw)
                con.execute("INSERT INTO stored (hash, file, size, vector) VALUES (?, ?, ?, ?)",
                            (h, rel, len(raw), None if rel is not None else raw))
            else:
                rel = row[0]
            a = it.answer
            dup = a.get("duplicate_of")
            con.execute(
                "INSERT INTO uploads (time, model_version, route, input, reason, cluster, name, status, "
                "probability, novelty, novel, duplicate_of, filename, size, hash, file, pid) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (it.time, it.version, it.route, it.input, it.reason, a.get("cluster"), _text(a.get("name")),
                 a.get("status"), a.get("probability"), a.get("novelty"), int(bool(a.get("novel"))),
                 None if dup is None else json.dumps(dup), _text(it.filename), len(raw), h, rel, os.getpid()))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        self.on_event("kept", it.input)

    # -- lifetime ----------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every offered item is written (or skipped); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer and close the table."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._con.close()
