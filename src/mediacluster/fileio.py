r"""Files: atomic writes (a temporary file in the same folder, fsync, rename), the one
content hash of the package (BLAKE2b-128 of a file's bytes; the embedding cache keys vectors
by it, duplicate detection groups exact copies by it), and the text form of file names.

**File names that are not UTF-8.** On Linux a file name is bytes; Python holds the bytes that
are not valid UTF-8 as surrogate escapes (``"bad\udcff.jpg"``, as ``os.listdir`` gives them),
and such a file is read, hashed and embedded like any other. Every text file mediacluster
writes (CSV, Parquet, JSON, HTML) is valid UTF-8, so such a name is written in *escaped form*
(:func:`path_to_text`): each undecodable byte as ``\xNN`` and each backslash doubled.

* Tables (:func:`write_table`): a row holding such a name gets ``escaped = true`` and *every*
  text cell of that row is in escaped form; :func:`read_table` reverses it exactly. Tables
  without such names are unchanged (no ``escaped`` column).
* JSON (:func:`write_json`): such a string is written in escaped form; where the exact name
  matters the entry says ``"escaped": true`` (``run.json``'s skipped list).
* Terminal output and the HTML report show the escaped form.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

from .errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


#: what to do about a write a full disk or file-size quota refused, where SQLite says only
#: "database or disk is full" (ENOSPC) or "disk I/O error" (EFBIG)
DISK_FULL_HINT = "the disk or your file-size quota may be full; free some space"


def sqlite_refused(e: BaseException | str) -> str | None:
    """Whether SQLite's error ``e`` (or its message) is a write the disk refused: ``"full"`` (its
    words for ENOSPC, "database or disk is full", and for EFBIG, a file-size quota, "disk I/O
    error"), ``"readonly"`` (a file or mount that cannot be written now), else None (a locked
    database, a damaged file, a statement it refuses: not the disk)."""
    msg = str(e)
    if "full" in msg or "disk I/O" in msg:
        return "full"
    return "readonly" if "readonly" in msg else None


_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)
_IN_THE_WAY = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


def _causes(e: BaseException):
    """``e``, then its ``__cause__`` / ``__context__`` chain (each once: a cycle ends it)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _os_refusal(e: OSError) -> str | None:
    """:func:`refusal`'s reading of one OSError by its errno (``"full"``: also numpy's short
    write, which has none)."""
    if e.errno in _FULL or (e.errno is None and "requested and" in str(e)):
        return "full"
    if e.errno in _DENIED:
        return "readonly"
    return "in_the_way" if e.errno in _IN_THE_WAY else None


def refusal(e: BaseException) -> str | None:
    """Why a write failed, read from ``e`` and its causes (an :class:`OutputError` raised
    ``from`` the OSError or SQLite error): ``"full"`` (ENOSPC, EDQUOT, EFBIG, a short write;
    SQLite's words for them), ``"readonly"`` (a read-only file system, folder or file: EROFS,
    EACCES, EPERM; SQLite's "readonly"), ``"in_the_way"`` (a file where a folder goes, or the
    reverse), else None. For an answer that depends on the cause: the web apps' status code
    (a full disk is 507 Insufficient Storage, a read-only run folder is not)."""
    import sqlite3

    for cause in _causes(e):
        if isinstance(cause, sqlite3.Error):
            why = sqlite_refused(cause)
        elif isinstance(cause, OSError):
            why = _os_refusal(cause)
        else:
            continue
        if why is not None:
            return why
    return None


#: what :func:`output_error` tells a user to do, by :func:`_os_refusal`'s reading
_OUTPUT_HINT = {"full": "the disk or your file-size quota is full; free some space or write elsewhere",
                "readonly": "choose a folder you can write to",
                "in_the_way": "a file is in the way of a folder"}


def output_error(e: OSError, path) -> OutputError:
    """An OSError met while writing ``path``, as the user's problem it is (exit 2): a full disk,
    a read-only folder, a file where a folder should be."""
    if isinstance(e, OutputError):
        return e
    why = e.strerror or str(e) or type(e).__name__
    hint = ("a folder is where the file goes; move it away" if e.errno == errno.EISDIR
            else _OUTPUT_HINT.get(_os_refusal(e)))
    if hint:
        why = f"{why} ({hint})"
    return OutputError(f"cannot write {path}: {why}")


def _temp_name(name: str, suffix: str) -> dict:
    """``mkstemp``'s prefix and suffix for a temporary file beside ``name``: ``.NAME.XXXXXXXX`` +
    the suffix, with NAME cut to 100 bytes and a suffix over 32 bytes left out, so it fits the
    file system's 255 whatever the length of a name that itself fits (a 250-byte --out was
    "File name too long"), cut between characters (a UTF-8 character cut in two made a
    temporary name that is not UTF-8 text, in listings and messages)."""
    cut = name
    while len(os.fsencode(cut)) > 100:
        cut = cut[:-1]
    return {"prefix": f".{cut}.", "suffix": suffix if len(os.fsencode(suffix)) <= 32 else ""}


#: :func:`_temp_name`'s names as mkstemp completes them: ``.NAME.`` + 8 random characters + the suffix
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]{1,10})?")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is one :func:`atomic_path` / :func:`atomic_write` gives the temporary
    file it writes before the rename (what a killed writer leaves): for a folder whose own
    files never start with a dot (the inbox's ``files/``) to clear them."""
    return name.startswith(".") and _TEMPORARY.fullmatch(name) is not None


def full_disk(e: BaseException) -> OutputError | None:
    """An error that a full disk (or file-size quota) caused somewhere we write without
    :func:`atomic_path`, e.g. numba saving compiled code into its cache while umap-learn is
    imported, as the user's problem it is: the :class:`OutputError` to report (naming the file,
    or numba's cache folder), else None. For the CLI's last word on an error that is no
    :class:`~.errors.MediaclusterError` (a full disk was an "internal error (a bug)")."""
    import traceback

    for cause in _causes(e):
        if isinstance(cause, OSError) and cause.errno in _FULL:
            where = cause.filename
            if where is None and any("numba" in f.filename and "caching" in f.filename
                                     for f in traceback.extract_tb(cause.__traceback__)):
                where = f"numba's code cache {os.environ.get('NUMBA_CACHE_DIR') or '(its default folder)'}"
            return output_error(cause, where or "a file")
    return None


def check_writable(path: str | os.PathLike) -> None:
    """An :class:`OutputError` naming ``path`` now when a file cannot be written there (a
    read-only folder or file system): for a command that would otherwise compute for minutes and
    fail at its last step. Writes and removes one empty temporary file beside ``path`` (a check
    that trusts no permission bits: root, ACLs and read-only mounts answer as a write does); its
    folder is made when missing, as the write would make it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(**_temp_name(path.name, ""), dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise output_error(e, path) from e


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 minus the umask),
    not the 0600 of a temporary file, so a shared run folder stays readable by its group.
    An OSError while writing (full disk, read-only folder) becomes an :class:`OutputError`
    naming ``path``; the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(**_temp_name(path.name, suffix or path.suffix), dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise output_error(e, path) from e
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except OutputError:
            raise
        except OSError as e:
            if isinstance(e, FileNotFoundError) and e.filename not in (None, tmp, str(path)):
                raise  # not a write failure: something the caller read is missing
            raise output_error(e, path) from e
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ------------------------------------------------------------------------------------------
# the file lock
# ------------------------------------------------------------------------------------------
class LockBusy(Exception):
    """:func:`flocked` with ``wait=False`` found the lock held: ``holder`` is the note its
    holder wrote into the lock file (empty when none)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


@contextmanager
def flocked(path: str | os.PathLike, *, wait: bool = True, note: str | None = None,
            folder: bool = False, opened: Callable[[OSError], Exception] | None = None):
    """An exclusive ``flock`` on ``path`` while inside: the one file lock of the package (the
    run folder's writer lock, ``rundir.run_lock``; the ONNX export cache; a model store's
    ``LATEST``), so other processes, and this process's other threads, are kept out.

    ``path`` is a lock file, made (with its folder) when missing; ``folder=True``: an existing
    folder locked itself, no lock file in it (a file system that locks no folder, NFS's
    ``EBADF``, leaves it unlocked). ``wait=False`` fails at once with :class:`LockBusy` when
    another holds it; ``note`` is written into the lock file while held (who holds it) and
    cleared on release. ``opened`` makes the error raised when ``path`` cannot be opened
    (default: the ``OSError`` itself)."""
    import fcntl

    try:
        if folder:
            fd = os.open(path, os.O_RDONLY)
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if opened is None:
            raise
        raise opened(e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(os.pread(fd, 512, 0).decode("utf-8", "replace").strip()) from None
        except OSError:
            if not folder:
                raise
        if note is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        try:
            yield
        finally:
            if note is not None:
                os.ftruncate(fd, 0)
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# the text form of file names
# ------------------------------------------------------------------------------------------
ESCAPED = "escaped"  # the table column that marks rows written in escaped form

#: An empty file in a folder of pictures or clips mediacluster made from a collection (the
#: thumbnails of a ``dups`` page or a report, ``report.thumbs.cached_files``): a folder scan
#: passes over such a folder, as over a run folder, so an ``--out`` inside the collection never
#: adds its own thumbnails to the collection the next time it is read.
MADE_HERE = ".mediacluster-made"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (the writer of a temporary folder named after it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def needs_escape(p: str) -> bool:
    """True when ``p`` cannot be written as UTF-8 (it holds surrogate-escaped bytes)."""
    try:
        p.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def path_to_text(p: str, force: bool = False) -> str:
    """A file name as valid UTF-8 text: unchanged when it already is (unless ``force``);
    otherwise every undecodable byte as ``\\xNN`` and every backslash doubled (reversed by
    :func:`path_from_text`)."""
    if not force and not needs_escape(p):
        return p
    out = []
    for ch in p:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif 0xD800 <= o <= 0xDFFF:  # a lone surrogate that is not an escaped byte
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def path_from_text(t: str) -> str:
    """Inverse of :func:`path_to_text` for a text that was escaped."""
    out, i = [], 0
    while i < len(t):
        ch = t[i]
        if ch == "\\" and i + 1 < len(t):
            nxt = t[i + 1]
            if nxt == "\\":
                out.append("\\")
                i += 2
                continue
            if nxt == "x" and i + 3 < len(t):
                try:
                    out.append(chr(0xDC00 + int(t[i + 2:i + 4], 16)))
                    i += 4
                    continue
                except ValueError:
                    pass
            if nxt == "u" and i + 5 < len(t):
                try:
                    out.append(chr(int(t[i + 2:i + 6], 16)))
                    i += 6
                    continue
                except ValueError:
                    pass
        out.append(ch)
        i += 1
    return "".join(out)


def display_text(value) -> str:
    """A value as valid UTF-8 text for people (a report, a message): escaped form if needed."""
    return path_to_text(str(value))


def _text_columns(df) -> list:
    return [c for c in df.columns if df[c].dtype == object or str(df[c].dtype) in ("str", "string")]


def escape_table(df):
    """``df`` with every row that holds a non-UTF-8 text cell in escaped form and marked
    ``escaped = true`` (see the module docstring); ``df`` itself when there is none."""
    import pandas as pd

    cols = [c for c in _text_columns(df) if c != ESCAPED]
    flags = np.zeros(len(df), dtype=bool)
    for c in cols:
        if df[c].dtype == object:
            flags |= np.fromiter((isinstance(v, str) and needs_escape(v) for v in df[c]), bool, len(df))
    if not flags.any():
        return df
    out = df.copy()
    for c in cols:
        out[c] = pd.Series([path_to_text(v, force=True) if f and isinstance(v, str) else v
                            for v, f in zip(df[c].tolist(), flags)], index=df.index, dtype=object)
    out[ESCAPED] = flags | (df[ESCAPED].fillna(False).astype(bool).to_numpy() if ESCAPED in df else False)
    return out


def unescape_table(df, drop: bool = False):
    """Reverse :func:`escape_table` (text cells of rows marked ``escaped``); ``drop`` removes the
    ``escaped`` column."""
    import pandas as pd

    if ESCAPED not in df:
        return df
    flags = df[ESCAPED].fillna(False).astype(bool).to_numpy()
    if flags.any():
        df = df.copy()
        for c in _text_columns(df):
            if c == ESCAPED:
                continue
            df[c] = pd.Series([path_from_text(v) if f and isinstance(v, str) else v
                               for v, f in zip(df[c].tolist(), flags)], index=df.index, dtype=object)
    return df.drop(columns=ESCAPED) if drop else df


def text_series(values, index=None):
    """A pandas column of strings that may hold surrogate-escaped bytes (object dtype: pandas'
    Arrow-backed string type cannot hold them)."""
    import pandas as pd

    return pd.Series(list(values), index=index, dtype=object)


def _json_safe(o):
    if isinstance(o, str):
        return path_to_text(o)
    if isinstance(o, dict):
        return {_json_safe(k) if isinstance(k, str) else k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_json_safe(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set | frozenset):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_text(obj, indent: int | None = 2, **kw) -> str:
    """``obj`` as JSON text that is valid UTF-8: strings holding non-UTF-8 file names in escaped
    form (see the module docstring); numpy values and paths converted."""
    kw = {"indent": indent, "default": _json_default, "ensure_ascii": False, "allow_nan": False, **kw}
    text = json.dumps(obj, **kw)
    if needs_escape(text):
        text = json.dumps(_json_safe(json.loads(text)), **kw)
    return text


def write_text(path, text: str) -> None:
    """``text`` (UTF-8) into ``path``, atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path, obj, indent: int = 2) -> None:
    write_text(path, json_text(obj, indent=indent) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_YAML_LOADER = None


def read_yaml(stream):
    """``yaml.safe_load`` of ``stream`` (text or a file), refusing a key given twice in one
    mapping: PyYAML keeps the last silently, so a ``names.yaml`` template's empty ``3:`` below a
    person's ``3: cats`` dropped the name, and a tag mapping's, a config's or a search space's
    second entry replaced the first unsaid. Raised as yaml's ``ConstructorError`` (a
    ``YAMLError``: every caller's message names the file, ``errors.yaml_problem`` the line).
    Keys are compared as read (``3`` and ``03``, YAML 1.1's octal 3, are one key); a key that a
    merge (``<<: *base``) brings in may be given again, as YAML allows."""
    global _YAML_LOADER
    import yaml

    if _YAML_LOADER is None:
        class UniqueKeyLoader(yaml.SafeLoader):
            def construct_mapping(self, node, deep=False):
                if isinstance(node, yaml.MappingNode):
                    seen: dict = {}
                    for key_node, _ in node.value:
                        if key_node.tag == "tag:yaml.org,2002:merge":
                            continue
                        key = self.construct_object(key_node, deep=deep)
                        try:
                            first = seen.setdefault(key, key_node.start_mark)
                        except TypeError:  # unhashable: SafeLoader refuses it below
                            continue
                        if first is not key_node.start_mark:
                            raise yaml.constructor.ConstructorError(
                                None, None, f"found the key {key!r} a second time (first on line "
                                f"{first.line + 1}); give each key once", key_node.start_mark)
                return super().construct_mapping(node, deep=deep)

        _YAML_LOADER = UniqueKeyLoader
    return yaml.load(stream, Loader=_YAML_LOADER)  # noqa: S506 - a SafeLoader


def write_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)


def write_table(path, df) -> None:
    """Write a pandas DataFrame as Parquet or CSV (by suffix), atomically; rows holding file
    names that are not UTF-8 are written in escaped form (:func:`escape_table`)."""
    path = Path(path)
    df = escape_table(df)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # Python's open: any file name
        if path.suffix in (".parquet", ".pq"):
            df.to_parquet(f, index=False)
        else:
            df.to_csv(f, index=False, encoding="utf-8")


def read_table(path, columns=None, unescape: bool = True, **csv_kw):
    """A table written by :func:`write_table`, escaped rows restored (Parquet by suffix, else
    CSV/TSV). The file is opened by Python, so any file name works (pyarrow's own paths must
    be UTF-8); ``columns`` keeps those that exist (plus ``escaped``)."""
    import pandas as pd

    path = Path(path)
    with open(path, "rb") as f:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = _read_parquet(f, columns)
        else:
            kw = {**({"sep": "\t"} if path.suffix.lower() == ".tsv" else {}), **csv_kw}
            try:
                df = pd.read_csv(f, **kw)
            except UnicodeEncodeError:  # raw non-UTF-8 names (surrogateescape): object columns
                f.seek(0)
                df = numeric_columns(pd.read_csv(f, **{**kw, "dtype": object}), kw.get("dtype"))
            if columns is not None:
                df = df[[c for c in df.columns if c in columns or c == ESCAPED]]
    return unescape_table(df) if unescape else df


def _read_parquet(f, columns):
    """A Parquet table from an open Python file, read and decoded on the calling thread.

    Not ``pd.read_parquet`` / ``pq.read_table``: their dataset scanner reads a Python file on
    pyarrow's IO threads and tears the scan down on a worker thread after the call has
    returned. The last reference to a buffer of Python bytes then dies on that thread, which
    needs the GIL; if the interpreter is finalising by then (a command reading its run folder
    just before it exits) the thread is ended inside a C++ destructor and the process aborts
    with "terminate called without an active exception" after all its work is done
    (apache/arrow#34314, #39862). Decoding on one thread costs little at run-folder sizes
    (see benchmarks/RESULTS.md, "exit abort")."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f, pre_buffer=False)  # pre-buffering reads on the IO threads
    if columns is not None:
        have = set(pf.schema_arrow.names)
        columns = [c for c in columns if c in have] + ([ESCAPED] if ESCAPED in have else [])
    table = pf.read(columns=columns, use_threads=False, use_pandas_metadata=True)
    del pf  # the reader and every Python buffer it holds are freed here, on this thread
    return table.to_pandas()  # as pd.read_parquet converts it (pyarrow >= 19, which pyproject asks for)


def numeric_columns(df, dtype=None):
    """Columns read as text that are all numbers become numbers (unless a dtype was asked)."""
    import pandas as pd

    if dtype is not None:
        return df
    for c in df.columns:
        try:
            df[c] = pd.to_numeric(df[c])
        except (ValueError, TypeError):
            pass
    return df


def hash_file(path: str | os.PathLike) -> str:
    """BLAKE2b-128 hex digest of a file's bytes (chunked reads): the package's content hash."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def hash_files(paths: Sequence[str | os.PathLike], workers: int = 4,
                progress: bool = False) -> tuple[list[str | None], dict[int, str]]:
    """:func:`hash_file` of every one of ``paths``, read by ``workers`` threads: the hashes, in
    order (None where a file cannot be read), and ``{index: reason}`` for those. The one threaded
    hashing: the embedding cache (``EmbeddingStore.hash_files``) reads through it the files it
    has no record of, ``DuplicateFinder`` the audio clips it groups by their bytes."""
    from .progress import threaded_map  # tqdm: kept off every command's import path (--help)

    def one(path):
        try:
            return hash_file(path), None
        except OSError as e:
            return None, f"cannot read file: {e.strerror or e}"

    done = threaded_map(one, paths, workers, desc="hash files", unit="file", progress=progress, chunksize=64)
    return [h for h, _ in done], {i: err for i, (_, err) in enumerate(done) if err is not None}


def hash_bytes(data: bytes) -> str:
    """The same digest as :func:`hash_file`, of bytes in memory (an upload)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def cache_root() -> Path:
    """The user cache shared by every run on the machine: ``$MEDIACLUSTER_CACHE``, else
    ``$XDG_CACHE_HOME/mediacluster``, else ``~/.cache/mediacluster``."""
    env = os.environ.get("MEDIACLUSTER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mediacluster"


def folder_usage(root) -> list[dict]:
    """The entries of folder ``root`` (none if it is missing), each ``{"name", "folder",
    "bytes", "files"}``: a folder's size and file count are those of everything under it (links
    not followed); by name."""
    out = []
    root = Path(root)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        size = files = 0
        try:
            if e.is_dir(follow_symlinks=False):
                for dirpath, _dirs, names in os.walk(e.path):
                    for n in names:
                        with suppress(OSError):
                            size += os.lstat(os.path.join(dirpath, n)).st_size
                            files += 1
            else:
                size, files = e.stat(follow_symlinks=False).st_size, 1
        except OSError:
            continue
        out.append({"name": e.name, "folder": e.is_dir(follow_symlinks=False), "bytes": size, "files": files})
    return out


def setup_numba_cache() -> None:
    """Persist numba's compiled code (umap-learn / pynndescent use ``cache=True``) under the user
    cache, so a new process does not pay the JIT again. Takes effect for modules imported after
    it; an explicit ``NUMBA_CACHE_DIR`` wins."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        d = cache_root() / "numba"
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            return  # an unwritable cache only costs compile time
        os.environ["NUMBA_CACHE_DIR"] = str(d)


def first_compile_pending(package: str) -> str | None:
    """The folder numba keeps ``package``'s (``umap``, ``librosa``) compiled code in when it has
    none there yet (the first use with this cache pays that, once: 10-30 s); else None.

    That is ``NUMBA_CACHE_DIR``; where that folder cannot be written, numba silently keeps the
    code in the first of its own places it can write (the ``__pycache__`` folders of the package's
    own tree, then its user cache), so that place is the one named (a note naming the unwritable
    folder was untrue).
    """
    d = os.environ.get("NUMBA_CACHE_DIR")
    if not d or not Path(d).is_dir():
        return None
    if _can_write_in(d):
        return None if any(Path(d).glob(f"{package}_*")) else d
    place = _numba_own_place(package)
    if place is None:
        return None
    # in the package's own tree, numba keeps each module's code in its folder's __pycache__
    root = Path(place).parent if Path(place).name == "__pycache__" else Path(place)
    return None if any(root.rglob("*.nbi")) else str(root)


def _can_write_in(folder: str) -> bool:
    """Whether a file can be made in ``folder``, tried as numba tries it (permission bits say
    nothing to root or on a read-only mount)."""
    import tempfile

    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _numba_own_place(package: str) -> str | None:
    """The folder numba keeps the compiled code of ``package``'s modules in when
    ``NUMBA_CACHE_DIR`` cannot be written: the first of numba's cache locators that accepts the
    package's source file (it makes the folder, as numba would); None when none does or numba
    or the package is missing."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
        from numba.core.caching import CacheImpl
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None

    def probe():  # a locator reads only the line number of the function it is given
        pass

    for locator in getattr(CacheImpl, "_locator_classes", ()):
        if locator.__name__.lstrip("_") == "UserProvidedCacheLocator":
            # NUMBA_CACHE_DIR's own locator (the folder this is asked about because it cannot be
            # written); it reads numba's config as it was when numba was first imported, which
            # in a longer process (a test session) may be another folder than the one set now
            continue
        try:
            found = locator.from_function(probe, spec.origin)
        except Exception:  # numba's internals differ between versions: then say nothing
            return None
        if found is not None:
            return found.get_cache_path()
    return None


def release_pages(arr) -> None:
    """Hand back to the kernel the pages of a memory-mapped array (``np.load(mmap_mode="r")``)
    that this process has read: they stay in the page cache and are mapped again when read, but
    a file read through once (the duplicate search over a run's vectors) no longer counts as
    this process's resident memory for the rest of the job. No-op for anything else."""
    import mmap

    m = getattr(arr, "_mmap", None)  # numpy.memmap keeps its mmap.mmap object here
    if isinstance(m, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        m.madvise(mmap.MADV_DONTNEED)
