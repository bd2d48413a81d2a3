"""The inbox's store: the uploads a service kept (``serve --keep-uploads DIR``), and their life
after that: pending, reviewed by a person, taken into a clustering, purged.

What ``DIR`` holds (written by ``serve.inbox.Inbox``, one writer thread per service process):

- ``DIR/files/<name>--<hash16><ext>``: each kept upload's bytes, once per content
  (BLAKE2b-128, the package's content hash; ``<hash16>`` its first 16 hex digits), ``<name>``
  the uploader's file name made safe (:func:`clean_name`: its last path component, without
  control or format characters, leading dots or its extension, at most :data:`MAX_NAME`
  characters), so a person, the studio and the exports of a run that clusters the folder see
  the name the uploader gave; ``<hash><ext>`` (the whole hash) when the upload came without a
  usable name. The extension is the one of the format the bytes are in (:func:`sniff_extension`).
- ``DIR/inbox.sqlite`` (SQLite, WAL, a busy timeout: the service's worker processes, ``mediacluster
  inbox`` and ``cluster`` write to it together, one short transaction each): ``uploads``
  (append-only, one row per kept item: time, model version, route, input kind, reason, the
  answer, the client's file name as sent, size, content hash, stored file, pid), ``stored`` (one
  row per content: file, size, a posted vector's float32 bytes), ``reviewed`` (one row per
  content that left the pending set: when, how (:data:`REVIEWED`: a person marked it,
  :data:`CLUSTERED`: a ``cluster`` run read its file), the run id) and the view ``contents``.

**The lifecycle**, per content (the same bytes uploaded again are the same item): *pending* until
a person marks it reviewed (:func:`mark`, ``mediacluster inbox DIR --mark-reviewed``) or a
``cluster`` run reads its file (:func:`take`, called by ``workflow.cluster_folder`` for every
file of the collection that lies in an inbox's ``files/``, also through a link, as README's
``ln -s inbox/files photos/inbox`` makes); a content a clustering took stays *clustered* (its
file is part of that collection now). :func:`purge` removes the contents of the given states
whose last upload is older than a retention, rows and files in one transaction, so a service
writing at the same time either finds the content gone and stores it anew (pending again) or
finds it whole. :func:`summary` counts them (``/metrics``: ``mediacluster_inbox_contents``),
:func:`listing` lists them.
"""

from __future__ import annotations

import errno
import io
import os
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

DB_NAME = "inbox.sqlite"
FILES = "files"
#: where ``purge`` moves the files of the contents it removes until their rows' removal is committed
PURGING = ".purging"
#: how a content left the pending set: a person looked at it
REVIEWED = "reviewed"
#: how a content left the pending set: a ``cluster`` run read its file
CLUSTERED = "clustered"
PENDING = "pending"
STATES = (PENDING, REVIEWED, CLUSTERED)
#: characters of an uploader's file name kept in the stored file's name (and 150 UTF-8 bytes:
#: with the hash and extension the name stays under the 255 bytes a file system allows)
MAX_NAME = 80
_MAX_NAME_BYTES = 150

_DDL = [
    """CREATE TABLE IF NOT EXISTS stored (
        hash TEXT PRIMARY KEY, file TEXT, size INTEGER NOT NULL, vector BLOB)""",
    """CREATE TABLE IF NOT EXISTS uploads (
        id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, model_version TEXT,
        route TEXT, input TEXT NOT NULL, reason TEXT NOT NULL,
        cluster INTEGER, name TEXT, status TEXT, probability REAL, novelty REAL, novel INTEGER,
        duplicate_of TEXT, filename TEXT, size INTEGER NOT NULL, hash TEXT NOT NULL, file TEXT,
        pid INTEGER, item_id TEXT)""",
    "CREATE INDEX IF NOT EXISTS uploads_hash ON uploads(hash)",
    """CREATE VIEW IF NOT EXISTS contents AS
        SELECT s.hash AS hash, s.file AS file, s.size AS size, COUNT(u.id) AS count,
               MIN(u.time) AS first_seen, MAX(u.time) AS last_seen
        FROM stored s LEFT JOIN uploads u ON u.hash = s.hash GROUP BY s.hash""",
    """CREATE TABLE IF NOT EXISTS reviewed (
        hash TEXT PRIMARY KEY, how TEXT NOT NULL, time TEXT NOT NULL, run TEXT)""",
    "CREATE INDEX IF NOT EXISTS stored_file ON stored(file)",  # a stored file -> its content (take, mark)
]
#: columns added to ``uploads`` after its first version: an inbox written before gains them on open
_ADDED = {"item_id": "TEXT"}
#: indexes on the added columns (made after the columns are there)
_DDL_ADDED = ["CREATE INDEX IF NOT EXISTS uploads_item_id ON uploads(item_id)"]  # an uploader's id -> content
#: characters of an uploader's own id for an item (``/v1/assign``'s ``item_ids``) at most
MAX_ITEM_ID = 256

_PIL_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif",
            "MPO": ".jpg", "AVIF": ".avif"}


def now() -> str:
    """The inbox's time stamps: UTC, to the second, ISO 8601 (sorts as text)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def open_db(root: str | os.PathLike) -> sqlite3.Connection:
    """The inbox table of ``root`` (created with its folder if new; an inbox made before the
    ``reviewed`` table or ``uploads.item_id`` gains them, in the one transaction that makes the
    schema). Raises OSError / sqlite3.Error when it cannot be."""
    root = Path(root)
    (root / FILES).mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(root / DB_NAME), timeout=30.0, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA busy_timeout=30000")  # before WAL: several workers open it at once
    con.execute("PRAGMA journal_mode=WAL")
    with write_transaction(con):
        for stmt in _DDL:
            con.execute(stmt)
        have = {r[1] for r in con.execute("PRAGMA table_info(uploads)")}
        for col, kind in _ADDED.items():
            if col not in have:  # an inbox written before the column: rows before it have NULL
                con.execute(f"ALTER TABLE uploads ADD COLUMN {col} {kind}")
        for stmt in _DDL_ADDED:
            con.execute(stmt)
        _restore_purged(root, con)
    return con


def _restore_purged(root: Path, con: sqlite3.Connection) -> None:
    """What a killed writer left: the files a purge moved aside (``PURGING``) before removing
    their rows, removed where their content's rows are gone (the purge committed), put back
    where the rows are still there (it was killed, or failed, before its commit: the
    transaction rolled back, so never a row without its file); and the temporary file of a
    stored file the service's writer was writing (``fileio.atomic_path``'s hidden ``.NAME.XXXXXXXX``
    in ``files/``, where a stored file's name never starts with a dot: ``clean_name``), which
    nothing else would ever remove. Under the write lock, which a purge running elsewhere holds
    from moving its first file to its commit and the service's writer from its temporary file
    to its row: ``open_db``'s schema transaction and the purge itself."""
    from .fileio import is_temporary_name

    try:
        with os.scandir(root / FILES) as it:
            for e in it:
                if is_temporary_name(e.name) and e.is_file(follow_symlinks=False):
                    os.unlink(e.path)
    except FileNotFoundError:
        pass
    trash = root / PURGING
    if not trash.is_dir():
        return
    for p in trash.iterdir():
        rel = f"{FILES}/{p.name}"
        if con.execute("SELECT 1 FROM stored WHERE file = ?", (rel,)).fetchone() and not (root / rel).exists():
            os.replace(p, root / rel)
        else:
            p.unlink()
    trash.rmdir()


def _current(con: sqlite3.Connection) -> bool:
    """Whether the inbox behind ``con`` has this version's schema (nothing to add on open)."""
    if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'reviewed'").fetchone():
        return False
    return set(_ADDED) <= {r[1] for r in con.execute("PRAGMA table_info(uploads)")}


@contextmanager
def write_transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on the inbox (``BEGIN IMMEDIATE``: the write lock taken at once, so
    service workers, ``mark`` and ``purge`` wait for each other): committed when the block ends
    (unless the block ended it itself, e.g. a ``ROLLBACK`` before returning), rolled back on
    any exception, the commit's own included."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        if con.in_transaction:
            con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise


def _existing(root: str | os.PathLike, write: bool = True) -> sqlite3.Connection:
    """``open_db`` of an inbox that must exist already (a command's argument): an
    ``InputError`` naming the folder otherwise. ``write=False``: a plain connection (no schema
    transaction) when the inbox has this version's schema already and no killed purge left
    files to put back (a reader: ``/metrics``, ``GET /v1/inbox``)."""
    from .errors import InputError

    if not (Path(root) / DB_NAME).is_file():
        raise InputError(f"{root}: not an inbox (no {DB_NAME}); give the folder `serve --keep-uploads` wrote")
    if not write and not (Path(root) / PURGING).exists():
        con = sqlite3.connect(str(Path(root) / DB_NAME), timeout=30.0, isolation_level=None,
                              check_same_thread=False)
        con.execute("PRAGMA busy_timeout=30000")
        if _current(con):
            return con
        con.close()
    return open_db(root)


def sniff_extension(data: bytes, filename: str | None, media: str) -> str:
    """The file extension of the format ``data`` is in: Pillow for images, the magic bytes for
    audio; the client's extension only when the sniffing finds nothing and it is one the
    collection reads; else ``.bin``."""
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
    from .ingest.sources import MEDIA_EXTENSIONS

    suffix = os.path.splitext(filename or "")[1].lower()
    return suffix if suffix in MEDIA_EXTENSIONS.get(media, ()) and suffix.isascii() else ".bin"


def text(s: str | None) -> str | None:
    """A client's file name as storable text (lone surrogates escaped)."""
    return None if s is None else s.encode("utf-8", "backslashreplace").decode("utf-8")


def clean_name(name: str | None) -> str | None:
    """An uploader's file name made safe to show and to put in a file's name: its last path
    component (``/`` and ``\\`` both separate), without control, format (e.g. a right-to-left
    override) or unassigned characters, undecodable bytes as U+FFFD, spaces collapsed, no leading or trailing dots or spaces
    (a leading dot would hide the file from a folder scan), at most :data:`MAX_NAME` characters
    (the extension kept). None when nothing is left."""
    if not name:
        return None
    s = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    # undecodable bytes (lone surrogates) shown as the replacement character, as a viewer would
    s = "".join("\ufffd" if unicodedata.category(ch) == "Cs" else ch for ch in s)
    s = "".join(ch for ch in s if unicodedata.category(ch)[0] != "C")
    s = " ".join(s.split()).strip(" .")
    if not s:
        return None
    stem, ext = os.path.splitext(s)
    if len(ext) > 10 or not ext[1:].isalnum():
        stem, ext = s, ""
    while stem and (len(stem) + len(ext) > MAX_NAME or len((stem + ext).encode("utf-8")) > _MAX_NAME_BYTES):
        stem = stem[:-1]
    s = (stem.rstrip(" .") + ext) if stem.rstrip(" .") else ""
    return s or None


def stored_file(h: str, ext: str, filename: str | None) -> str:
    """Where a content is stored, relative to the inbox: ``files/<clean name>--<hash16><ext>``,
    or ``files/<hash><ext>`` without a usable name (see the module doc)."""
    name = clean_name(filename)
    stem = os.path.splitext(name)[0].rstrip(" .") if name else ""
    return f"{FILES}/{stem}--{h[:16]}{ext}" if stem else f"{FILES}/{h}{ext}"


def holds_file(root: str | os.PathLike, name: str) -> bool:
    """Whether the inbox's table holds a stored file ``files/<name>`` (a reader's connection):
    the one lookup that lets ``GET /v1/inbox/files/{name}`` serve only what the writer made."""
    con = _existing(root, write=False)
    try:
        return con.execute("SELECT 1 FROM stored WHERE file = ?", (f"{FILES}/{name}",)).fetchone() is not None
    finally:
        con.close()


# -- the lifecycle -----------------------------------------------------------------------------

_STATE_SQL = f"COALESCE(r.how, '{PENDING}')"


def summary(root: str | os.PathLike, con: sqlite3.Connection | None = None) -> dict:
    """Counts of an inbox: ``contents`` per state (pending, reviewed, clustered), ``uploads``
    (rows), ``bytes`` stored, ``pending_uploads`` (rows of pending contents), the oldest pending
    upload's time."""
    own = con is None
    con = _existing(root, write=False) if own else con
    try:
        per = dict.fromkeys(STATES, 0)
        for state, n in con.execute(f"SELECT {_STATE_SQL}, COUNT(*) FROM stored s "
                                    "LEFT JOIN reviewed r ON r.hash = s.hash GROUP BY 1"):
            per[state] = int(n)
        uploads, size = con.execute("SELECT COUNT(*), (SELECT total(size) FROM stored) FROM uploads").fetchone()
        pend, oldest = con.execute("SELECT COUNT(*), MIN(u.time) FROM uploads u LEFT JOIN reviewed r "
                                   "ON r.hash = u.hash WHERE r.hash IS NULL").fetchone()
    finally:
        if own:
            con.close()
    return {"contents": per, "uploads": int(uploads), "bytes": int(size or 0), "pending_uploads": int(pend),
            "oldest_pending": oldest}


def listing(root: str | os.PathLike, state: str = PENDING, limit: int | None = None,
            after: int | None = None) -> list[dict]:
    """The contents of an inbox in ``state`` (one of :data:`STATES`, or ``"all"``), in the order
    they first came: ``seq`` (the id of its first upload row: the order, and the page cursor:
    ``after=seq`` of a page's last row lists the ones after it, a list a person marks meanwhile
    skips nothing), ``hash``, ``file`` (relative to the inbox; None for a posted vector),
    ``name`` (the uploader's file name made safe, :func:`clean_name`, of its first upload that
    had one), ``names`` (every distinct one), ``ids`` (every distinct id the uploaders gave it,
    ``/v1/assign``'s ``item_ids``), ``size``, ``count`` (uploads), ``first_seen``,
    ``last_seen``, the last upload's ``reason``, ``input``, ``answer`` (cluster, name, status,
    probability, novelty, novel, model_version), ``state``, ``how`` / ``when`` / ``run``, and
    ``missing`` (its stored file is not in the inbox: deleted by hand; False for a vector).
    (A content is listed by its upload rows: the writer adds its first one with it, ``purge``
    removes them together.)"""
    if state != "all" and state not in STATES:
        from .errors import ParameterError

        raise ParameterError(f"state must be one of {', '.join(STATES)} or all, got {state!r}")
    con = _existing(root, write=False)
    con.row_factory = sqlite3.Row
    try:
        # the page's contents first: the uploads in id order from the cursor on, each that is its
        # content's first (the uploads_hash index says), until the page is full; then the
        # details of those rows only. A page costs what it reads, at any depth of the list
        q = (f"SELECT u.id AS first_id, u.hash, {_STATE_SQL} AS state, r.time AS state_time, r.run AS run, "
             "s.file, s.size FROM uploads u JOIN stored s ON s.hash = u.hash LEFT JOIN reviewed r ON r.hash = u.hash "
             "WHERE u.id > ? AND NOT EXISTS (SELECT 1 FROM uploads p WHERE p.hash = u.hash AND p.id < u.id) "
             + ("" if state == "all" else f"AND {_STATE_SQL} = ? ")
             + "ORDER BY u.id" + (f" LIMIT {int(limit)}" if limit is not None else ""))
        args = (int(after or 0),) + (() if state == "all" else (state,))
        rows = [dict(r) for r in con.execute(q, args)]
        out = []
        for r in rows:
            names, ids, times, last = [], [], [], None
            for uid, t, fn, item in con.execute("SELECT id, time, filename, item_id FROM uploads WHERE hash = ? "
                                                "ORDER BY id", (r["hash"],)):
                c = clean_name(fn)
                if c and c not in names:
                    names.append(c)
                if item is not None and item not in ids:
                    ids.append(item)
                times.append(t)
                last = uid
            answer = con.execute("SELECT reason, input, cluster, name, status, probability, novelty, novel, "
                                 "model_version FROM uploads WHERE id = ?", (last,)).fetchone()
            answer = dict(answer) if answer is not None else {}
            out.append({"seq": r["first_id"], "hash": r["hash"], "file": r["file"],
                        "name": names[0] if names else None, "names": names, "ids": ids, "size": r["size"],
                        "count": len(times), "first_seen": min(times, default=None),
                        "last_seen": max(times, default=None), "reason": answer.pop("reason", None),
                        "input": answer.pop("input", None), "answer": answer, "state": r["state"],
                        "when": r["state_time"], "run": r["run"],
                        "missing": r["file"] is not None and not (Path(root) / r["file"]).is_file()})
    finally:
        con.close()
    return out


def _resolve(con: sqlite3.Connection, keys: Iterable[str]) -> list[tuple[str, list[str]]]:
    """Each key with the contents it names (none: an unknown key): a content hash, a stored file
    relative to the inbox or by its name, an id an uploader gave (``item_ids``: every content
    uploaded with it), or 8+ leading hex digits of one content's hash."""
    out = []
    for raw in keys:
        raw = str(raw)
        k = raw.strip()
        row = con.execute("SELECT hash FROM stored WHERE hash = ?", (k,)).fetchall() or con.execute(
            "SELECT hash FROM stored WHERE file IN (?, ?)", (k, f"{FILES}/{os.path.basename(k)}")).fetchall()
        if not row and raw:  # an uploader's id, as given: the contents uploaded with it, in the order they came
            row = con.execute("SELECT hash FROM uploads WHERE item_id = ? GROUP BY hash ORDER BY MIN(id)",
                              (raw,)).fetchall()
            if row:
                out.append((raw, [h for (h,) in row]))
                continue
        if not row and len(k) >= 8 and all(c in "0123456789abcdef" for c in k):
            row = con.execute("SELECT hash FROM stored WHERE hash LIKE ?", (k + "%",)).fetchall()
        out.append((raw, [row[0][0]] if len(row) == 1 else []))  # the key as given
    return out


def mark(root: str | os.PathLike, keys: Iterable[str] | None = None, how: str = REVIEWED,
         run: str | None = None, con: sqlite3.Connection | None = None, detail: bool = False) -> dict:
    """Take contents out of the pending set: those ``keys`` name (see :func:`_resolve`), or
    every pending one (None), in one transaction. ``how``: :data:`REVIEWED` (a person) leaves a
    content a clustering took as it is; :data:`CLUSTERED` (``run``: the run's id) marks it so
    whatever it was. Returns ``{"marked": n, "unknown": [keys naming no content]}``; marking
    again what is marked changes nothing. ``detail`` (with ``keys``): also ``keys``, per key in
    order ``{"key", "result", "state", "hashes"}``: result ``marked`` (a content of it left the
    pending set now), ``already`` (none was pending: ``state`` says where they are; a key
    repeated, or naming what an earlier key marked, is ``already``) or ``unknown``."""
    if how not in (REVIEWED, CLUSTERED):
        raise ValueError(f"how must be {REVIEWED!r} or {CLUSTERED!r}")
    own = con is None
    con = _existing(root) if own else con
    per = []
    try:
        with write_transaction(con):
            if keys is None:
                resolved = [(None, [h for (h,) in con.execute(
                    "SELECT s.hash FROM stored s LEFT JOIN reviewed r ON r.hash = s.hash WHERE r.hash IS NULL")])]
            else:
                resolved = _resolve(con, keys)
            t = now()
            before = con.total_changes

            def write(hashes: list[str]) -> None:
                if how == CLUSTERED:
                    con.executemany("INSERT INTO reviewed (hash, how, time, run) VALUES (?, ?, ?, ?) ON CONFLICT(hash) "
                                    "DO UPDATE SET how = excluded.how, time = excluded.time, run = excluded.run "
                                    "WHERE reviewed.how != excluded.how OR reviewed.run IS NOT excluded.run",
                                    [(h, how, t, run) for h in hashes])
                else:
                    con.executemany("INSERT OR IGNORE INTO reviewed (hash, how, time, run) VALUES (?, ?, ?, ?)",
                                    [(h, how, t, run) for h in hashes])

            if not (detail and keys is not None):  # one statement for them all (take: thousands)
                write([h for _, hashes in resolved for h in hashes])
            else:
                for k, hashes in resolved:
                    n0 = con.total_changes
                    write(hashes)
                    states = sorted({s for (s,) in con.execute(
                        f"SELECT how FROM reviewed WHERE hash IN ({','.join('?' * len(hashes))})", hashes)})
                    per.append({"key": k, "result": "unknown" if not hashes else
                                "marked" if con.total_changes > n0 else "already",
                                "state": "/".join(states) or None, "hashes": hashes})
            n = con.total_changes - before
            unknown = [k for k, hashes in resolved if k is not None and not hashes]
    finally:
        if own:
            con.close()
    out = {"marked": int(n), "unknown": unknown}
    if detail and keys is not None:
        out["keys"] = per
    return out


def inbox_of(path: str | os.PathLike, _seen: dict | None = None) -> tuple[Path, str] | None:
    """``(inbox folder, stored file relative to it)`` when ``path`` is a file in an inbox's
    ``files/`` (also through links: the folder is resolved), else None. ``_seen`` caches the
    folders already resolved."""
    folder, base = os.path.split(os.fspath(path))
    seen = {} if _seen is None else _seen
    if folder not in seen:
        real = Path(os.path.realpath(folder))
        seen[folder] = real.parent if real.name == FILES and (real.parent / DB_NAME).is_file() else None
    root = seen[folder]
    return None if root is None else (root, f"{FILES}/{base}")


def take(paths: Iterable[str | None], run: str | None) -> dict[str, int]:
    """A clustering read these files: the contents of every inbox among them leave its pending
    set as :data:`CLUSTERED` by ``run`` (see :func:`mark`). Returns, per inbox folder, how many
    of its contents the run took. A file in no inbox costs one cached folder look-up; an
    inbox that cannot be written is skipped with a warning (the run is made)."""
    import logging

    seen: dict = {}
    by_root: dict[Path, list[str]] = {}
    for p in paths:
        if isinstance(p, str | os.PathLike) and p:  # a run of vectors: None or NaN, no file
            hit = inbox_of(p, seen)
            if hit is not None:
                by_root.setdefault(hit[0], []).append(hit[1])
    out = {}
    for root, files in by_root.items():
        try:
            con = open_db(root)
            try:
                hashes = []
                for s in range(0, len(files), 500):
                    part = files[s:s + 500]
                    hashes += [h for (h,) in con.execute(
                        f"SELECT hash FROM stored WHERE file IN ({','.join('?' * len(part))})", part)]
                mark(root, hashes, how=CLUSTERED, run=run, con=con)
            finally:
                con.close()
            out[str(root)] = len(hashes)
        except (OSError, sqlite3.Error) as e:
            logging.getLogger(__name__).warning("the inbox %s: cannot mark the files this run took (%s); "
                                                "they stay pending", root, e)
    return out


def purge(root: str | os.PathLike, older_than_days: float, states: Iterable[str] = (REVIEWED,)) -> dict:
    """Remove the contents in ``states`` whose last upload is ``older_than_days`` old or more (the
    inbox's times are whole seconds; 0: every one of them, to this second):
    their rows (uploads, stored, reviewed) and their files, in one transaction (the files are
    removed before it commits, so a service writing meanwhile waits and then stores a new upload
    of the same content anew). Returns ``{"contents", "uploads", "bytes", "states"}`` removed, and
    ``not_removed``: ``{"file", "error"}`` of each file that could not be removed (its content
    keeps its rows; the others are purged).
    A content a clustering took (:data:`CLUSTERED`) is part of that collection: purge it only
    when the collection holds its own copy."""
    from .errors import ParameterError

    states = tuple(dict.fromkeys(states))
    if not states or any(s not in STATES for s in states):
        raise ParameterError(f"purge states must be among {', '.join(STATES)}, got {', '.join(states) or 'none'}")
    if not older_than_days >= 0:
        raise ParameterError(f"the retention must be a number of days >= 0, got {older_than_days}")
    cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - float(older_than_days) * 86400))
    root = Path(root)
    con = _existing(root)
    try:
        with write_transaction(con):
            rows = con.execute(
                f"SELECT s.hash, s.file, s.size FROM stored s LEFT JOIN reviewed r ON r.hash = s.hash "
                f"WHERE {_STATE_SQL} IN ({','.join('?' * len(states))}) AND COALESCE((SELECT MAX(u.time) "
                "FROM uploads u WHERE u.hash = s.hash), '') <= ?", (*states, cutoff)).fetchall()
            n_up, gone, kept = 0, [], []
            trash = root / PURGING
            for h, f, size in rows:
                if f:  # the file first: a content whose file stays keeps its rows (never a row without its file)
                    try:  # moved aside, removed once the rows' removal is committed (_restore_purged)
                        if (root / f).is_dir():
                            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(root / f))
                        trash.mkdir(exist_ok=True)
                        os.replace(root / f, trash / Path(f).name)
                    except FileNotFoundError:
                        pass
                    except OSError as e:  # a folder in its place, a read-only disk: the others go on
                        kept.append({"file": f, "error": e.strerror or str(e)})
                        continue
                n_up += con.execute("DELETE FROM uploads WHERE hash = ?", (h,)).rowcount
                con.execute("DELETE FROM stored WHERE hash = ?", (h,))
                con.execute("DELETE FROM reviewed WHERE hash = ?", (h,))
                gone.append(size)
    finally:
        try:  # committed: the files go; rolled back (an error): they are put back
            with write_transaction(con):
                _restore_purged(root, con)
        finally:
            con.close()
    return {"contents": len(gone), "uploads": int(n_up), "bytes": int(sum(gone)),
            "states": list(states), "older_than": cutoff, "not_removed": kept}


__all__ = ["CLUSTERED", "DB_NAME", "FILES", "MAX_ITEM_ID", "PENDING", "REVIEWED", "STATES", "clean_name", "inbox_of", "listing",
           "mark", "open_db", "purge", "sniff_extension", "stored_file", "summary", "take", "text",
           "write_transaction"]
