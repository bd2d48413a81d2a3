"""The service's inbox: the uploads it could not place, kept for a person and the next clustering.

``mediacluster serve RUN --keep-uploads DIR`` keeps, of the items it answers (``/v1/assign`` and
``/v1/similar``), those a rule picks (``--keep``: ``novel``, the default: a kind the collection
lacks; ``uncertain``: membership probability below ``--keep-below``, so also every noise or
outlier answer; ``junk``: answered in a cluster marked junk; ``all``). What DIR holds:

- ``DIR/files/<name>--<hash16><ext>``: each kept upload's bytes, once per content (BLAKE2b-128,
  the package's content hash), written atomically (``fileio.atomic_path``: a hidden temporary
  file, fsync, rename), named after the uploader's file name made safe (``inbox.clean_name``:
  its last component, no control characters, no leading dot, bounded; ``<hash><ext>`` without
  one) and the extension of the format the bytes are in (``inbox.sniff_extension``): a hostile
  name (``../../x.jpg``, 200 characters, undecodable bytes) is data, never a path. So
  ``DIR/files`` is a collection like any folder: ``mediacluster cluster DIR/files`` reads it.
- ``DIR/inbox.sqlite``: the tables of ``mediacluster.inbox`` (the store and its lifecycle:
  pending, reviewed, taken by a clustering, purged): one row per kept item in the append-only
  ``uploads`` (time, model version, route, input kind, why it was kept, the answer, the client's
  file name as sent, the client's own id for the item (``item_ids``), size, content hash, stored
  file), one per content in ``stored``. SQLite in
  WAL mode with a busy timeout, as the studio's edit log: the worker processes of ``--workers N``
  each write through their own connection, one transaction per item, and none waits for
  another's reader.

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
from ..inbox import (
    DB_NAME,
    FILES,
    open_db,
    sniff_extension,
    stored_file,
    summary,
    text,
    write_transaction,
)

__all__ = ["DB_NAME", "FILES", "KEEP_KINDS", "Inbox", "KeepRule", "open_db", "sniff_extension"]

log = logging.getLogger(__name__)

KEEP_KINDS = ("novel", "uncertain", "junk", "all")
#: the default of ``--keep-below``: "uncertain" is a membership probability below this
KEEP_BELOW = 0.5
#: bytes of uploads waiting for the writer thread, at most (the rest is skipped: "backlog")
MAX_PENDING_BYTES = 256 << 20
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
        if it.data is not None:  # named after the uploader's name, made safe (inbox.clean_name)
            rel = stored_file(h, sniff_extension(it.data, it.filename, it.input), it.filename)
        con = self._con
        with write_transaction(con):  # a ROLLBACK in it ends it before the return
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
                "probability, novelty, novel, duplicate_of, filename, size, hash, file, pid, item_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (it.time, it.version, it.route, it.input, it.reason, a.get("cluster"), text(a.get("name")),
                 a.get("status"), a.get("probability"), a.get("novelty"), int(bool(a.get("novel"))),
                 None if dup is None else json.dumps(dup), text(it.filename), len(raw), h, rel, os.getpid(),
                 text(a.get("item_id"))))
        self.on_event("kept", it.input)

    def counts(self) -> dict[str, int] | None:
        """Contents per state (``inbox.summary``: pending, reviewed, clustered), read now from the
        shared table (other workers, ``mediacluster inbox`` and ``cluster`` change it); None when
        it cannot be read (logged once)."""
        try:
            return summary(self.root)["contents"]
        except (OSError, sqlite3.Error) as e:
            if "counts" not in self._warned:
                self._warned.add("counts")
                log.warning("inbox %s: cannot read its counts for /metrics (%s)", self.root, e)
            return None

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
