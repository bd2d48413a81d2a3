"""The studio's edit log: an append-only SQLite table of timestamped events, one per edit.

``RunDir.edits()`` hands out an :class:`EditLog` for ``RUN/edits.sqlite``. Events are never
changed or deleted (triggers refuse UPDATE and DELETE); an undo is itself an event. The curated
state is derived from the events by :class:`mediacluster.studio.state.CuratedState`.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so a commit is on disk
(fsync) before :meth:`EditLog.append` returns; an edit the studio acknowledged survives a kill
of the server at any instant. Writers take SQLite's write lock (``BEGIN IMMEDIATE``) for the
read-validate-insert step, so two studio processes on one run serialise their edits.

The log records the run it belongs to (``meta.run_id``): opening it for another run fails with
a message (item numbers in the events are rows of that run).

Each event keeps who made it: ``client``, the id a page (or the command line, a carry) sends,
and ``user``, the name a person gave (the page's "your name" box, ``studio --user``), "" when
none was given. A log written before names were kept gets the ``user`` column on open (every
earlier event ""); the readers of older versions select their columns by name and read it as
before.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import OutputError, RunDirError

SCHEMA = "mediacluster-edits"
SCHEMA_VERSION = 1
#: the longest name a person can give (the page's "your name" box, ``studio --user``)
MAX_USER = 64


def user_name(text: str) -> str:
    """A person's name as the log keeps it: control characters dropped, white space collapsed,
    at most :data:`MAX_USER` characters ("" for none)."""
    text = "".join(ch for ch in str(text) if ch.isprintable() or ch.isspace())
    return " ".join(text.split())[:MAX_USER]

_DDL = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        ts      REAL NOT NULL,
        kind    TEXT NOT NULL,
        client  TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL,
        user    TEXT NOT NULL DEFAULT '')""",
    """CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the edit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the edit log is append-only'); END""",
]


@dataclass(frozen=True)
class Event:
    seq: int
    ts: float
    kind: str
    payload: dict = field(default_factory=dict)
    client: str = ""
    user: str = ""

    def to_dict(self) -> dict:
        return {"seq": self.seq, "ts": self.ts, "kind": self.kind, "client": self.client,
                "user": self.user, "payload": self.payload}


class EditLog:
    """Append-only events of one run (see the module docstring). Thread-safe."""

    def __init__(self, path: str | Path, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            with self._transaction():
                for stmt in _DDL:  # one by one: executescript would commit the transaction
                    self._conn.execute(stmt)
                if "user" not in {r[1] for r in self._conn.execute("PRAGMA table_info(events)")}:
                    # a log written before names were kept (ADD COLUMN rewrites no row)
                    self._conn.execute("ALTER TABLE events ADD COLUMN user TEXT NOT NULL DEFAULT ''")
                meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
                if not meta:
                    self._conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("schema", SCHEMA), ("schema_version", str(SCHEMA_VERSION)),
                        ("run_id", run_id), ("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))])
        except sqlite3.DatabaseError as e:
            if not os.access(self.path.parent, os.W_OK):
                raise RunDirError(f"the edit log {self.path} cannot be written: {self.path.parent} is "
                                  "not writable (the studio keeps every edit in the run folder)") from None
            raise RunDirError(f"{self.path} is not a readable edit log ({e}); move it aside to "
                              "start over") from None
        if meta:
            if meta.get("schema") != SCHEMA:
                raise RunDirError(f"{self.path} is not a mediacluster edit log")
            if meta.get("schema_version") != str(SCHEMA_VERSION):
                raise RunDirError(f"{self.path} has edit-log version {meta.get('schema_version')}; "
                                  f"this mediacluster reads version {SCHEMA_VERSION}")
            if meta.get("run_id") != run_id:
                raise RunDirError(f"{self.path} holds the edits of run {meta.get('run_id')}, not of "
                                  f"this run ({run_id}); its item numbers would not match")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def _transaction(self):
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:  # SQLite rolled it back itself (a full disk): nothing open
                        pass
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as e:
                raise self._write_error(e) from e

    def _write_error(self, e: sqlite3.OperationalError) -> Exception:
        """A write the disk refused (full, a file-size quota, read-only now) as the user's
        problem it is, naming the log: the edit is not recorded, the ones before it are safe.
        "database is locked" (another process past the busy timeout) stays as it is, and so does
        any other error (a statement SQLite refuses, "no such column": a bug, not the disk)."""
        from ..fileio import DISK_FULL_HINT, sqlite_refused

        refused = sqlite_refused(e)
        if refused is None:
            return e
        msg = f"{e} ({DISK_FULL_HINT if refused == 'full' else 'the run folder is read-only now'})"
        return OutputError(f"cannot write {self.path}: {msg}; this edit was not recorded, the edits "
                           "before it are safe")

    @contextmanager
    def writing(self):
        """Hold the log's write lock: read what others appended (:meth:`events`), decide, then
        :meth:`insert`; committed (on disk) when the block ends without an error."""
        with self._transaction():
            yield self

    def insert(self, kind: str, payload: dict, client: str = "", user: str = "") -> Event:
        """Append one event (inside :meth:`writing`)."""
        ts = time.time()
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        user = user_name(user or "")
        cur = self._conn.execute("INSERT INTO events (ts, kind, client, payload, user) VALUES (?, ?, ?, ?, ?)",
                                 (ts, kind, client or "", text, user))
        return Event(int(cur.lastrowid), ts, kind, payload, client or "", user)

    def append(self, kind: str, payload: dict, client: str = "", user: str = "") -> Event:
        """Append one event and commit it."""
        with self.writing():
            return self.insert(kind, payload, client, user)

    # -- reading -----------------------------------------------------------------------------
    def events(self, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events with ``seq > since``, oldest first."""
        q = "SELECT seq, ts, kind, client, payload, user FROM events WHERE seq > ? ORDER BY seq"
        args: tuple = (int(since),)
        if limit is not None:
            q += " LIMIT ?"
            args += (int(limit),)
        with self._lock:
            rows = self._conn.execute(q, args).fetchall()
        return [Event(int(s), float(t), k, json.loads(p), c, u) for s, t, k, c, p, u in rows]

    def last_seq(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
